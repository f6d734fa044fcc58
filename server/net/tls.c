/*
 * tls.c - OpenSSL as an in-memory filter between the socket and the line reader: one tls_conn per
 * connection. Contexts (certificates, keys, versions, ciphers) and self-signed certificates are
 * made in tls_ctx.c.
 *
 * What it does: holds one SSL object per connection and two byte queues around it. Ciphertext the
 * connection layer read from the socket is appended to `in`; OpenSSL pulls records from `in` and
 * pushes records it wants sent onto `out`; the connection layer takes `out` and writes it. Both
 * queues are plain heap buffers behind a small custom BIO (one BIO object serves as SSL's read and
 * write BIO). Unlike a BIO pair the queues have no fixed size, so writing a 1 MiB reply is one
 * call; unlike BIO_s_mem they are freed as soon as they drain, so an idle connection holds only
 * the SSL object and its session (with SSL_MODE_RELEASE_BUFFERS, OpenSSL frees its record buffers
 * too). The connection layer bounds `out` by reading tls_pending_ciphertext() and stopping reads.
 *
 * What it does not do: sockets, timers, logging, certificate verification, or deciding when TLS
 * starts; those belong to server/net/conn.c and the sessions above it. It also does not report a
 * socket EOF that arrived without close_notify: the connection layer sees that itself.
 *
 * Ownership: a tls_conn owns its SSL (which owns the BIO), its queues and one reference to its
 * tls_ctx. The BIO_METHOD is process-wide (created once; BIO_get_new_index() hands out fewer than
 * 128 indices per process, so one per context would run out after enough SIGHUP reloads).
 *
 * All memory here goes through OPENSSL_malloc and friends, so OpenSSL's allocation hooks see a
 * connection's whole footprint. The unit test measures it: an idle connection after a 64 KiB burst
 * holds about 14 KiB on the server side and 18 KiB on the client side (which keeps the peer's
 * certificate), against a target of 64 KiB.
 */
#include "server/net/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/pure/address.h"
#include "server/net/tls_internal.h"

/* Smallest allocation for a byte queue; most TLS records carrying SMTP replies are smaller. */
#define TLS_QUEUE_MIN_BYTES 1024

/* A FIFO of bytes: data[off .. off+len) is queued; the buffer is freed whenever it drains. */
struct tls_queue {
    unsigned char *data; /* owned, NULL when empty */
    size_t off;
    size_t len;
    size_t cap;
};

struct tls_conn {
    struct tls_ctx *ctx;    /* owned reference */
    SSL *ssl;               /* owned; owns the BIO, whose data pointer is this struct */
    struct tls_queue in;    /* ciphertext fed by the caller, not yet consumed by OpenSSL */
    struct tls_queue out;   /* ciphertext produced by OpenSSL, not yet taken by the caller */
    struct tls_queue plain; /* plaintext written before the handshake completed */
    bool handshake_done;
    bool failed;      /* sticky: every later read returns TLS_ERROR */
    bool peer_closed; /* close_notify received: every later read returns TLS_CLOSED */
    bool shut_sent;   /* our close_notify queued (or there was nothing to close) */
    char err[TLS_ERR_MAX_BYTES];
};

/* --- byte queues ---------------------------------------------------------------------------- */

static void queue_release(struct tls_queue *q, bool cleanse)
{
    if (q->data != NULL) {
        if (cleanse)
            OPENSSL_clear_free(q->data, q->cap);
        else
            OPENSSL_free(q->data);
    }
    q->data = NULL;
    q->off = 0;
    q->len = 0;
    q->cap = 0;
}

static int queue_append(struct tls_queue *q, const void *src, size_t n)
{
    size_t want;
    unsigned char *grown;

    if (n == 0)
        return 0;
    if (n > SIZE_MAX / 2 - q->len)
        return -1;
    if (q->off + q->len + n > q->cap && q->off > 0) {
        memmove(q->data, q->data + q->off, q->len);
        q->off = 0;
    }
    if (q->len + n > q->cap) {
        want = q->cap > 0 ? q->cap : TLS_QUEUE_MIN_BYTES;
        while (want < q->len + n)
            want *= 2;
        grown = OPENSSL_realloc(q->data, want);
        if (grown == NULL)
            return -1;
        q->data = grown;
        q->cap = want;
    }
    memcpy(q->data + q->off + q->len, src, n);
    q->len += n;
    return 0;
}

static size_t queue_take(struct tls_queue *q, void *dst, size_t cap, bool cleanse)
{
    size_t n = q->len < cap ? q->len : cap;

    if (n == 0)
        return 0;
    memcpy(dst, q->data + q->off, n);
    q->off += n;
    q->len -= n;
    if (q->len == 0)
        queue_release(q, cleanse); /* an idle connection keeps no buffers */
    return n;
}

/* --- the BIO between SSL and the queues ----------------------------------------------------- */

static int bio_write_ex(BIO *b, const char *data, size_t len, size_t *written)
{
    struct tls_conn *t = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    *written = 0;
    if (t == NULL || queue_append(&t->out, data, len) != 0)
        return 0; /* no retry flag: SSL reports a fatal error */
    *written = len;
    return 1;
}

static int bio_read_ex(BIO *b, char *buf, size_t cap, size_t *readbytes)
{
    struct tls_conn *t = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    *readbytes = 0;
    if (t == NULL)
        return 0;
    if (t->in.len == 0) {
        BIO_set_retry_read(b); /* SSL_ERROR_WANT_READ: wait for the next socket read */
        return 0;
    }
    *readbytes = queue_take(&t->in, buf, cap, false);
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct tls_conn *t = BIO_get_data(b);

    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* the caller flushes; OpenSSL fails the handshake if this says 0 */
    case BIO_CTRL_PENDING:
        return t != NULL ? (long)t->in.len : 0;
    case BIO_CTRL_WPENDING:
        return t != NULL ? (long)t->out.len : 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int bio_destroy(BIO *b)
{
    BIO_set_data(b, NULL); /* the tls_conn is freed by its owner, not by the BIO */
    return 1;
}

static pthread_once_t bio_method_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *bio_method; /* process-wide, never freed (see the head comment) */

static void bio_method_init(void)
{
    int index = BIO_get_new_index();
    BIO_METHOD *m;

    if (index == -1)
        return;
    m = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "postern tls queue");
    if (m == NULL)
        return;
    if (BIO_meth_set_write_ex(m, bio_write_ex) != 1 || BIO_meth_set_read_ex(m, bio_read_ex) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1 || BIO_meth_set_create(m, bio_create) != 1 ||
        BIO_meth_set_destroy(m, bio_destroy) != 1) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

static const BIO_METHOD *get_bio_method(void)
{
    if (pthread_once(&bio_method_once, bio_method_init) != 0)
        return NULL;
    return bio_method;
}

/* --- connections ---------------------------------------------------------------------------- */

static struct tls_conn *conn_new(struct tls_ctx *ctx, char *err, size_t errlen)
{
    const BIO_METHOD *method = get_bio_method();
    struct tls_conn *t;
    BIO *bio;

    if (method == NULL) {
        tls__set_msg(err, errlen, "tls: cannot create the BIO method");
        return NULL;
    }
    t = OPENSSL_zalloc(sizeof(*t));
    if (t == NULL) {
        tls__set_msg(err, errlen, "tls: out of memory");
        return NULL;
    }
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl_ctx);
    bio = t->ssl != NULL ? BIO_new(method) : NULL;
    if (bio == NULL) {
        tls__set_openssl_msg(err, errlen, "tls: cannot create connection", "out of memory");
        SSL_free(t->ssl);
        OPENSSL_free(t);
        return NULL;
    }
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio); /* one reference, used for both directions; SSL owns it */
    t->ctx = tls_ctx_ref(ctx);
    return t;
}

struct tls_conn *tls_conn_new_server(struct tls_ctx *ctx, char *err, size_t errlen)
{
    struct tls_conn *t;

    if (ctx == NULL || !ctx->is_server) {
        tls__set_msg(err, errlen, "tls: a server connection needs a server context");
        return NULL;
    }
    t = conn_new(ctx, err, errlen);
    if (t != NULL)
        SSL_set_accept_state(t->ssl);
    return t;
}

struct tls_conn *tls_conn_new_client(struct tls_ctx *ctx, const char *sni_hostname, char *err,
                                     size_t errlen)
{
    struct tls_conn *t;
    int r;

    if (ctx == NULL || ctx->is_server) {
        tls__set_msg(err, errlen, "tls: a client connection needs a client context");
        return NULL;
    }
    t = conn_new(ctx, err, errlen);
    if (t == NULL)
        return NULL;
    SSL_set_connect_state(t->ssl);
    ERR_clear_error();
    if (sni_hostname != NULL && sni_hostname[0] != '\0' && !domain_is_ip_literal(sni_hostname) &&
        SSL_set_tlsext_host_name(t->ssl, sni_hostname) != 1) {
        tls__set_openssl_msg(err, errlen, "tls: cannot set server name", "refused");
        tls_conn_free(&t);
        return NULL;
    }
    /* Queue the ClientHello now, so the caller's "send what is pending" rule starts the talk. */
    r = SSL_do_handshake(t->ssl);
    if (r != 1 && SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) {
        tls__set_openssl_msg(err, errlen, "tls: cannot start the handshake", "unknown error");
        tls_conn_free(&t);
        return NULL;
    }
    ERR_clear_error();
    return t;
}

void tls_conn_free(struct tls_conn **tp)
{
    struct tls_conn *t;

    if (tp == NULL || *tp == NULL)
        return;
    t = *tp;
    *tp = NULL;
    SSL_free(t->ssl); /* frees the BIO too; bio_destroy does not touch t */
    queue_release(&t->in, false);
    queue_release(&t->out, false);
    queue_release(&t->plain, true);
    tls_ctx_unref(&t->ctx); /* last: the SSL held its own SSL_CTX reference anyway */
    OPENSSL_free(t);
}

int tls_feed_ciphertext(struct tls_conn *t, const void *data, size_t len)
{
    if (t->failed || t->peer_closed)
        return 0; /* OpenSSL will never read it: do not let it pile up */
    if (queue_append(&t->in, data, len) != 0) {
        tls__set_msg(t->err, sizeof(t->err), "tls: out of memory");
        return -1;
    }
    return 0;
}

/* Latches the error: the message is kept and every later read says TLS_ERROR. */
static enum tls_status conn_fail(struct tls_conn *t, const char *what, int ssl_error)
{
    const char *fallback;

    switch (ssl_error) {
    case SSL_ERROR_SYSCALL:
        fallback = "out of memory";
        break;
    case SSL_ERROR_SSL:
        fallback = "protocol error";
        break;
    default:
        fallback = "unexpected state";
        break;
    }
    t->failed = true;
    tls__set_openssl_msg(t->err, sizeof(t->err), what, fallback);
    queue_release(&t->plain, true);
    return TLS_ERROR;
}

/*
 * Encrypts all of data. Our BIO accepts every write, so SSL_write_ex either takes everything
 * (records of up to 16 KiB each) or fails; it cannot want to write. It cannot want to read either,
 * because renegotiation is off and TLS 1.3 post-handshake messages never block a write.
 */
static int ssl_write_all(struct tls_conn *t, const unsigned char *data, size_t len)
{
    size_t written = 0;
    int r;

    ERR_clear_error();
    r = SSL_write_ex(t->ssl, data, len, &written);
    if (r != 1 || written != len) {
        conn_fail(t, "tls: write", SSL_get_error(t->ssl, r));
        return -1;
    }
    return 0;
}

/* Runs the handshake as far as the queued ciphertext allows; flushes held plaintext once done. */
static enum tls_status conn_handshake(struct tls_conn *t)
{
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(t->ssl);
    if (r != 1) {
        e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            return TLS_WANT_MORE;
        }
        return conn_fail(t, "tls: handshake", e);
    }
    t->handshake_done = true;
    if (t->plain.len > 0) {
        if (ssl_write_all(t, t->plain.data + t->plain.off, t->plain.len) != 0)
            return TLS_ERROR;
        queue_release(&t->plain, true);
    }
    return TLS_OK;
}

enum tls_status tls_read_plaintext(struct tls_conn *t, void *buf, size_t cap, size_t *n_out)
{
    enum tls_status st;
    size_t n = 0;
    int r, e;

    *n_out = 0;
    if (t->failed)
        return TLS_ERROR;
    if (t->peer_closed)
        return TLS_CLOSED;
    if (cap == 0) {
        t->failed = true;
        tls__set_msg(t->err, sizeof(t->err), "tls: read into an empty buffer");
        return TLS_ERROR;
    }
    if (!t->handshake_done) {
        st = conn_handshake(t);
        if (st != TLS_OK)
            return st;
    }
    ERR_clear_error();
    r = SSL_read_ex(t->ssl, buf, cap, &n);
    if (r == 1) {
        *n_out = n;
        return TLS_OK;
    }
    e = SSL_get_error(t->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        ERR_clear_error();
        return TLS_WANT_MORE;
    case SSL_ERROR_ZERO_RETURN:
        /* Answer the peer's close_notify with ours, so the caller just drains and closes. */
        t->peer_closed = true;
        if (!t->shut_sent) {
            ERR_clear_error();
            (void)SSL_shutdown(t->ssl);
            t->shut_sent = true;
        }
        ERR_clear_error();
        return TLS_CLOSED;
    default:
        return conn_fail(t, "tls: read", e);
    }
}

int tls_write_plaintext(struct tls_conn *t, const void *data, size_t len)
{
    if (t->failed || t->shut_sent || t->peer_closed) {
        if (!t->failed)
            tls__set_msg(t->err, sizeof(t->err), "tls: write after close");
        return -1;
    }
    if (len == 0)
        return 0;
    if (!t->handshake_done) {
        /* Held, never sent in the clear; conn_handshake() sends it the moment TLS is up. */
        if (queue_append(&t->plain, data, len) != 0) {
            tls__set_msg(t->err, sizeof(t->err), "tls: out of memory");
            return -1;
        }
        return 0;
    }
    return ssl_write_all(t, data, len);
}

size_t tls_pending_ciphertext(const struct tls_conn *t)
{
    return t->out.len;
}

size_t tls_take_ciphertext(struct tls_conn *t, void *buf, size_t cap)
{
    return queue_take(&t->out, buf, cap, false);
}

int tls_shutdown(struct tls_conn *t)
{
    int r, e;

    if (t->failed)
        return -1;
    if (t->shut_sent)
        return 0;
    t->shut_sent = true;
    if (!t->handshake_done) {
        queue_release(&t->plain, true);
        return 0;
    }
    ERR_clear_error();
    r = SSL_shutdown(t->ssl); /* 0: ours sent, theirs not yet seen; 1: both done */
    if (r < 0) {
        e = SSL_get_error(t->ssl, r);
        conn_fail(t, "tls: shutdown", e);
        return -1;
    }
    ERR_clear_error();
    return 0;
}

bool tls_handshake_done(const struct tls_conn *t)
{
    return t->handshake_done;
}

char *tls_describe(const struct tls_conn *t, char *buf, size_t len)
{
    const SSL_CIPHER *cipher;

    if (len == 0)
        return buf;
    cipher = t->handshake_done ? SSL_get_current_cipher(t->ssl) : NULL;
    if (cipher == NULL)
        snprintf(buf, len, "none");
    else
        snprintf(buf, len, "%s %s", SSL_get_version(t->ssl), SSL_CIPHER_get_name(cipher));
    return buf;
}

const char *tls_last_error(const struct tls_conn *t)
{
    return t->err;
}
