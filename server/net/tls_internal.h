/*
 * tls_internal.h - what tls.c (the per-connection filter) and tls_ctx.c (contexts and
 * certificates) share: the context struct and the error-message helpers. Private to those two
 * files; everyone else uses tls.h.
 */
#ifndef POSTERN_TLS_INTERNAL_H
#define POSTERN_TLS_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct tls_ctx {
    atomic_int refs;  /* one per holder: the creator, and every tls_conn made from it */
    SSL_CTX *ssl_ctx; /* owned */
    bool is_server;
};

/* vsnprintf into err (nothing when err is NULL or errlen 0). */
void tls__set_msg(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Writes "<what>: <every queued OpenSSL error, oldest first>" into err, or "<what>: <fallback>"
 * when the queue is empty, and always leaves the queue empty (this thread's queue is shared by
 * every connection it serves).
 */
void tls__set_openssl_msg(char *err, size_t errlen, const char *what, const char *fallback);

#endif
