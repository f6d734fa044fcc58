/*
 * tls.h - TLS as a filter: ciphertext in, plaintext out; plaintext in, ciphertext out.
 *
 * This module wraps OpenSSL for both sides of a connection (the SMTP/POP3 server and the outbound
 * SMTP client) without knowing anything about sockets, libuv or the protocols above. The
 * connection layer (server/net/conn.c) feeds it what the socket read, asks it for plaintext to hand
 * to the line reader, gives it replies to encrypt, and writes whatever ciphertext it produced. It
 * does no I/O, no logging and no certificate verification (the client side is opportunistic, RFC
 * 7435).
 *
 * Two objects:
 *   struct tls_ctx   configuration shared by many connections (certificate, key, versions,
 *                    ciphers). Reference-counted, so a SIGHUP reload can build a new one for new
 *                    connections while connections on the old one keep it alive until they close.
 *   struct tls_conn  one connection's TLS state plus its in/out byte queues. Owns one reference
 *                    to its tls_ctx.
 *
 * The rule for the caller: after EVERY call on a tls_conn (feed, read, write, shutdown, and
 * tls_conn_new_client) check tls_pending_ciphertext() and send what is there. Reading produces
 * output, not only writing: the handshake is driven from tls_read_plaintext(), and a read may
 * queue an alert or the answer to a close_notify. Writing, in turn, can need input first: a reply
 * written before the handshake finished is held until a later read completes it, and leaves
 * from inside that read (and a write may carry a TLS 1.3 KeyUpdate the peer asked for). Postfix's
 * tlsproxy keeps the same rule for the same reasons. "Want more" never means anything but "wait
 * for the next read from the socket".
 *
 * Threading: a tls_conn belongs to one thread (the loop). tls_ctx references may be taken and
 * dropped from any thread. OpenSSL's error queue is per thread; every function here clears it
 * before and after its OpenSSL calls, so one connection's error never shows up in another's.
 */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct tls_ctx;
struct tls_conn;

/* Room for any message this module writes into an err buffer or keeps in tls_last_error(). */
#define TLS_ERR_MAX_BYTES 256

/* Room for tls_describe(): "TLSv1.3 TLS_CHACHA20_POLY1305_SHA256" and the like. */
#define TLS_DESCRIBE_MAX_BYTES 96

/* Protocol versions a context may be capped at (see tls_ctx_limit_version). */
enum tls_version {
    TLS_VERSION_1_2 = 0,
    TLS_VERSION_1_3,
};

/* What tls_read_plaintext() found. */
enum tls_status {
    TLS_ERROR = -1,    /* fatal: handshake failure, bad record, protocol violation; see
                          tls_last_error(). Send the pending ciphertext (an alert), then close. */
    TLS_OK = 0,        /* *n_out > 0 bytes of application data were returned */
    TLS_WANT_MORE = 1, /* nothing to return until more ciphertext is fed */
    TLS_CLOSED = 2,    /* the peer sent close_notify; our own close_notify is already queued */
};

/* --- contexts ------------------------------------------------------------------------------- */

/*
 * A server context from a PEM certificate chain (leaf first) and a PEM private key. TLS 1.2 and
 * 1.3 only; for TLS 1.2 only ECDHE key exchange with AEAD ciphers; no renegotiation, no
 * compression, no session cache and no session tickets (see tls.c for why). Returns NULL with a
 * readable message in err (naming the file and OpenSSL's reason) when a file is missing or bad or
 * the key does not match the certificate. The caller owns the one reference returned.
 */
struct tls_ctx *tls_ctx_new_server(const char *cert_path, const char *key_path, char *err,
                                   size_t errlen);

/*
 * A client context for opportunistic STARTTLS (RFC 7435): TLS 1.2 and 1.3, the peer's certificate
 * is NOT verified, SNI is set per connection. Returns NULL with a message in err on failure.
 */
struct tls_ctx *tls_ctx_new_client(char *err, size_t errlen);

/*
 * Caps the highest protocol version ctx negotiates (by default TLS 1.3). Affects connections
 * created afterwards; call it before the context is shared (it is not safe against a concurrent
 * tls_conn_new_*). The tests use it to force TLS 1.2; it could also back a config knob for a
 * peer with a broken TLS 1.3 stack. 0, or -1 with a message in err.
 */
int tls_ctx_limit_version(struct tls_ctx *ctx, enum tls_version max_version, char *err,
                          size_t errlen);

/* Takes one more reference; returns ctx for convenience. */
struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx);

/* Drops the reference *ctxp holds and sets *ctxp to NULL; the last one frees. NULL is a no-op. */
void tls_ctx_unref(struct tls_ctx **ctxp);

/* --- connections ---------------------------------------------------------------------------- */

/*
 * The server side of one connection (implicit TLS, or after STARTTLS/STLS once the 220/+OK has
 * been flushed). Takes its own reference to ctx. Returns NULL with a message in err on failure
 * (out of memory, or ctx is a client context).
 */
struct tls_conn *tls_conn_new_server(struct tls_ctx *ctx, char *err, size_t errlen);

/*
 * The client side of one connection. sni_hostname (may be NULL) is sent as server name
 * indication unless it is an IP literal (RFC 6066 section 3 forbids those). The ClientHello is
 * queued at once: send tls_pending_ciphertext() right after this returns. NULL with a message in
 * err on failure.
 */
struct tls_conn *tls_conn_new_client(struct tls_ctx *ctx, const char *sni_hostname, char *err,
                                     size_t errlen);

/* Frees *tp (no close_notify is sent; call tls_shutdown() first for that) and sets it to NULL. */
void tls_conn_free(struct tls_conn **tp);

/*
 * Hands over len bytes read from the socket (copied). Bytes fed after TLS_ERROR or TLS_CLOSED are
 * discarded. 0, or -1 when out of memory.
 */
int tls_feed_ciphertext(struct tls_conn *t, const void *data, size_t len);

/*
 * Decrypts application data into buf (cap > 0 bytes). Drives the handshake as needed and, once
 * it completes, sends anything queued by tls_write_plaintext(). Call it until it stops returning
 * TLS_OK. Plaintext is never returned before the handshake has completed. Once TLS_ERROR or
 * TLS_CLOSED has been returned, every later call returns the same.
 */
enum tls_status tls_read_plaintext(struct tls_conn *t, void *buf, size_t cap, size_t *n_out);

/*
 * Encrypts len bytes of application data. Before the handshake completes the bytes are held in
 * this tls_conn and sent, in order, as soon as it does, so a caller can write a reply without
 * caring whether TLS is up yet. Nothing is ever sent in the clear. 0, or -1 after an error, after
 * tls_shutdown() or a close_notify from the peer, or when out of memory.
 */
int tls_write_plaintext(struct tls_conn *t, const void *data, size_t len);

/* Ciphertext bytes waiting to be written to the socket. */
size_t tls_pending_ciphertext(const struct tls_conn *t);

/* Moves up to cap bytes of pending ciphertext into buf; returns how many were moved. */
size_t tls_take_ciphertext(struct tls_conn *t, void *buf, size_t cap);

/*
 * Queues a close_notify alert (take it with tls_take_ciphertext) after any plaintext already
 * written. Later writes fail. Before the handshake has completed there is nothing to close
 * politely: nothing is queued, and it still returns 0. 0, or -1 with tls_last_error() set.
 */
int tls_shutdown(struct tls_conn *t);

/* True once the handshake has completed (and stays true after a later close or error). */
bool tls_handshake_done(const struct tls_conn *t);

/*
 * "TLSv1.3 TLS_AES_256_GCM_SHA384": protocol and cipher, for the "tls" log event and the Received
 * header (RFC 3848 only needs to know TLS is on). "none" before the handshake completes. Writes at
 * most len-1 bytes plus a NUL (TLS_DESCRIBE_MAX_BYTES is always enough); returns buf.
 */
char *tls_describe(const struct tls_conn *t, char *buf, size_t len);

/* The message for the last TLS_ERROR or failed call, "" if there was none. Owned by t. */
const char *tls_last_error(const struct tls_conn *t);

/* --- certificates --------------------------------------------------------------------------- */

/*
 * Writes a self-signed certificate (EC P-256, SHA-256, CN and subjectAltName DNS:hostname,
 * serverAuth, valid for 10 years from now) to cert_path and its private key (PKCS#8 PEM, mode 0600)
 * to key_path. Each file is written under a temporary name and renamed into place, so a reader
 * never sees half a file. hostname must be a DNS name: letters, digits, '-', '.', at most 253
 * octets (RFC 1035 2.3.4). 0, or -1 with a message in err.
 */
int tls_make_self_signed(const char *cert_path, const char *key_path, const char *hostname,
                         char *err, size_t errlen);

#endif
