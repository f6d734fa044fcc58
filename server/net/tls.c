/*
 * tls.c - OpenSSL as an in-memory filter between the socket and the line reader.
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
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/pure/address.h"

/*
 * TLS 1.2 suites for the server: ECDHE only (forward secrecy) with an AEAD cipher. TLS 1.3 suites
 * are OpenSSL's defaults, which are all of that kind already. The client keeps OpenSSL's default
 * TLS 1.2 list: it is opportunistic (RFC 7435 section 3), so an older cipher a remote MX insists
 * on is still better than falling back to plaintext.
 */
#define TLS_SERVER_CIPHERS_TLS12 "ECDHE+AESGCM:ECDHE+CHACHA20"

/* Smallest allocation for a byte queue; most TLS records carrying SMTP replies are smaller. */
#define TLS_QUEUE_MIN_BYTES 1024

/* Self-signed certificates: 10 years, and valid from an hour ago to survive clock skew. */
#define TLS_SELFSIGNED_DAYS         3650
#define TLS_SELFSIGNED_BACKDATE_SEC 3600

struct tls_ctx {
    atomic_int refs;  /* one per holder: the creator, and every tls_conn made from it */
    SSL_CTX *ssl_ctx; /* owned */
    bool is_server;
};

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

/* --- messages ------------------------------------------------------------------------------- */

static void set_msg(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/*
 * Writes "<what>: <every queued OpenSSL error, oldest first>" into err, or "<what>: <fallback>"
 * when the queue is empty, and always leaves the queue empty (this thread's queue is shared by
 * every connection it serves).
 */
static void set_openssl_msg(char *err, size_t errlen, const char *what, const char *fallback)
{
    char one[256];
    size_t used;
    unsigned long e;
    const char *data;
    int flags;
    bool any = false;

    if (err == NULL || errlen == 0) {
        ERR_clear_error();
        return;
    }
    snprintf(err, errlen, "%s:", what);
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        ERR_error_string_n(e, one, sizeof(one));
        used = strlen(err);
        if (used + 1 >= errlen)
            continue; /* keep draining the queue even when the message is full */
        if ((flags & ERR_TXT_STRING) && data != NULL && data[0] != '\0')
            snprintf(err + used, errlen - used, "%s %s (%s)", any ? ";" : "", one, data);
        else
            snprintf(err + used, errlen - used, "%s %s", any ? ";" : "", one);
        any = true;
    }
    if (!any) {
        used = strlen(err);
        snprintf(err + used, errlen - used, " %s", fallback);
    }
    ERR_clear_error();
}

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

/* --- contexts ------------------------------------------------------------------------------- */

static struct tls_ctx *ctx_alloc(SSL_CTX *ssl_ctx, bool is_server)
{
    struct tls_ctx *ctx = OPENSSL_zalloc(sizeof(*ctx));

    if (ctx == NULL)
        return NULL;
    atomic_init(&ctx->refs, 1);
    ctx->ssl_ctx = ssl_ctx;
    ctx->is_server = is_server;
    return ctx;
}

/* Settings both sides share: versions, no renegotiation, no compression, small idle footprint. */
static int ctx_common(SSL_CTX *c)
{
    if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1)
        return -1;
    /*
     * Renegotiation (TLS 1.2) is a CPU-exhaustion lever for a client and has no use in SMTP or
     * POP3; compression is CRIME. RELEASE_BUFFERS frees the ~34 KiB of record buffers whenever a
     * connection is idle, which is most of the time for a mail session.
     */
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    /*
     * No session cache and no tickets: a resumed handshake saves about a millisecond of ECDHE and
     * signing, but a cache costs memory per client and tickets cost a ticket key to keep and
     * rotate (and a key shared across reloads to be useful at all). Mail clients reconnect
     * minutes apart, and a SIGHUP reload builds a new context, which would empty any cache anyway.
     */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    return 0;
}

struct tls_ctx *tls_ctx_new_server(const char *cert_path, const char *key_path, char *err,
                                   size_t errlen)
{
    SSL_CTX *c;
    struct tls_ctx *ctx;
    char what[TLS_ERR_MAX_BYTES];

    if (cert_path == NULL || cert_path[0] == '\0' || key_path == NULL || key_path[0] == '\0') {
        set_msg(err, errlen, "tls: certificate and key paths must both be set");
        return NULL;
    }
    ERR_clear_error();
    c = SSL_CTX_new(TLS_server_method());
    if (c == NULL) {
        set_openssl_msg(err, errlen, "tls: cannot create server context", "out of memory");
        return NULL;
    }
    if (ctx_common(c) != 0 || SSL_CTX_set_cipher_list(c, TLS_SERVER_CIPHERS_TLS12) != 1 ||
        SSL_CTX_set_num_tickets(c, 0) != 1) {
        set_openssl_msg(err, errlen, "tls: cannot configure server context", "unknown error");
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);

    if (SSL_CTX_use_certificate_chain_file(c, cert_path) != 1) {
        snprintf(what, sizeof(what), "tls: certificate %s", cert_path);
        set_openssl_msg(err, errlen, what, "cannot load");
        SSL_CTX_free(c);
        return NULL;
    }
    /* This also refuses a key that does not match the certificate ("key values mismatch"). */
    if (SSL_CTX_use_PrivateKey_file(c, key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c) != 1) {
        snprintf(what, sizeof(what), "tls: key %s", key_path);
        set_openssl_msg(err, errlen, what, "does not match the certificate");
        SSL_CTX_free(c);
        return NULL;
    }
    ERR_clear_error();
    ctx = ctx_alloc(c, true);
    if (ctx == NULL) {
        set_msg(err, errlen, "tls: out of memory");
        SSL_CTX_free(c);
    }
    return ctx;
}

struct tls_ctx *tls_ctx_new_client(char *err, size_t errlen)
{
    SSL_CTX *c;
    struct tls_ctx *ctx;

    ERR_clear_error();
    c = SSL_CTX_new(TLS_client_method());
    if (c == NULL) {
        set_openssl_msg(err, errlen, "tls: cannot create client context", "out of memory");
        return NULL;
    }
    if (ctx_common(c) != 0) {
        set_openssl_msg(err, errlen, "tls: cannot configure client context", "unknown error");
        SSL_CTX_free(c);
        return NULL;
    }
    /*
     * RFC 7435: opportunistic security. Any certificate is accepted; an unauthenticated
     * encrypted channel still beats plaintext, and refusing would push delivery back to it.
     */
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    ERR_clear_error();
    ctx = ctx_alloc(c, false);
    if (ctx == NULL) {
        set_msg(err, errlen, "tls: out of memory");
        SSL_CTX_free(c);
    }
    return ctx;
}

int tls_ctx_limit_version(struct tls_ctx *ctx, enum tls_version max_version, char *err,
                          size_t errlen)
{
    int v;

    switch (max_version) {
    case TLS_VERSION_1_2:
        v = TLS1_2_VERSION;
        break;
    case TLS_VERSION_1_3:
        v = TLS1_3_VERSION;
        break;
    default:
        set_msg(err, errlen, "tls: unknown protocol version %d", (int)max_version);
        return -1;
    }
    ERR_clear_error();
    if (SSL_CTX_set_max_proto_version(ctx->ssl_ctx, v) != 1) {
        set_openssl_msg(err, errlen, "tls: cannot set the highest version", "refused");
        return -1;
    }
    return 0;
}

struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx)
{
    atomic_fetch_add(&ctx->refs, 1);
    return ctx;
}

void tls_ctx_unref(struct tls_ctx **ctxp)
{
    struct tls_ctx *ctx;

    if (ctxp == NULL || *ctxp == NULL)
        return;
    ctx = *ctxp;
    *ctxp = NULL;
    if (atomic_fetch_sub(&ctx->refs, 1) != 1)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    OPENSSL_free(ctx);
}

/* --- connections ---------------------------------------------------------------------------- */

static struct tls_conn *conn_new(struct tls_ctx *ctx, char *err, size_t errlen)
{
    const BIO_METHOD *method = get_bio_method();
    struct tls_conn *t;
    BIO *bio;

    if (method == NULL) {
        set_msg(err, errlen, "tls: cannot create the BIO method");
        return NULL;
    }
    t = OPENSSL_zalloc(sizeof(*t));
    if (t == NULL) {
        set_msg(err, errlen, "tls: out of memory");
        return NULL;
    }
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl_ctx);
    bio = t->ssl != NULL ? BIO_new(method) : NULL;
    if (bio == NULL) {
        set_openssl_msg(err, errlen, "tls: cannot create connection", "out of memory");
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
        set_msg(err, errlen, "tls: a server connection needs a server context");
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
        set_msg(err, errlen, "tls: a client connection needs a client context");
        return NULL;
    }
    t = conn_new(ctx, err, errlen);
    if (t == NULL)
        return NULL;
    SSL_set_connect_state(t->ssl);
    ERR_clear_error();
    if (sni_hostname != NULL && sni_hostname[0] != '\0' && !domain_is_ip_literal(sni_hostname) &&
        SSL_set_tlsext_host_name(t->ssl, sni_hostname) != 1) {
        set_openssl_msg(err, errlen, "tls: cannot set server name", "refused");
        tls_conn_free(&t);
        return NULL;
    }
    /* Queue the ClientHello now, so the caller's "send what is pending" rule starts the talk. */
    r = SSL_do_handshake(t->ssl);
    if (r != 1 && SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) {
        set_openssl_msg(err, errlen, "tls: cannot start the handshake", "unknown error");
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
        set_msg(t->err, sizeof(t->err), "tls: out of memory");
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
    set_openssl_msg(t->err, sizeof(t->err), what, fallback);
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
        set_msg(t->err, sizeof(t->err), "tls: read into an empty buffer");
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
            set_msg(t->err, sizeof(t->err), "tls: write after close");
        return -1;
    }
    if (len == 0)
        return 0;
    if (!t->handshake_done) {
        /* Held, never sent in the clear; conn_handshake() sends it the moment TLS is up. */
        if (queue_append(&t->plain, data, len) != 0) {
            set_msg(t->err, sizeof(t->err), "tls: out of memory");
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

/* --- self-signed certificates --------------------------------------------------------------- */

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    int ok;

    if (ext == NULL)
        return -1;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

/*
 * subjectAltName DNS:hostname, built as a structure rather than from the "DNS:..." config
 * syntax, so no character of hostname is ever parsed as syntax.
 */
static int add_san(X509 *x, const char *hostname)
{
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    int rc = -1;

    if (names == NULL || gn == NULL || ia5 == NULL)
        goto out;
    if (ASN1_STRING_set(ia5, hostname, (int)strlen(hostname)) != 1)
        goto out;
    GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
    ia5 = NULL;
    if (sk_GENERAL_NAME_push(names, gn) == 0)
        goto out;
    gn = NULL;
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1)
        rc = 0;
out:
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(names);
    return rc;
}

static X509 *make_cert(EVP_PKEY *pkey, const char *hostname)
{
    X509 *x = X509_new();
    X509_NAME *name;
    X509V3_CTX v3;
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    bool ok = false;

    if (x == NULL)
        return NULL;
    /* RFC 5280 4.1.2.2: a positive serial of at most 20 octets; random, as CAs do. */
    if (RAND_bytes(serial, (int)sizeof(serial)) != 1)
        goto out;
    serial[0] &= 0x7f;
    serial[0] |= 0x01; /* never zero, never negative */
    bn = BN_bin2bn(serial, (int)sizeof(serial), NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto out;
    if (X509_set_version(x, X509_VERSION_3) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -TLS_SELFSIGNED_BACKDATE_SEC) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), TLS_SELFSIGNED_DAYS, 0, NULL) == NULL ||
        X509_set_pubkey(x, pkey) != 1)
        goto out;
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)hostname, -1,
                                   -1, 0) != 1 ||
        X509_set_issuer_name(x, name) != 1)
        goto out;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") != 0 ||
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth") != 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") != 0 || add_san(x, hostname) != 0)
        goto out;
    if (X509_sign(x, pkey, EVP_sha256()) <= 0)
        goto out;
    ok = true;
out:
    BN_free(bn);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

enum pem_kind { PEM_KIND_CERT, PEM_KIND_KEY };

/*
 * Writes one PEM object to a new temporary file beside path (created 0600 by mkstemp, then
 * chmod'ed to mode) and fsyncs it. On success *tmp_out names the file (OPENSSL_free it); the
 * caller renames it into place. On failure nothing is left behind.
 */
static int write_pem_tmp(const char *path, mode_t mode, enum pem_kind kind, void *obj,
                         char **tmp_out, char *err, size_t errlen)
{
    static const char suffix[] = ".tmp.XXXXXX";
    size_t n = strlen(path);
    char *tmp = OPENSSL_malloc(n + sizeof(suffix));
    FILE *f = NULL;
    int fd, ok, saved;

    *tmp_out = NULL;
    if (tmp == NULL) {
        set_msg(err, errlen, "tls: out of memory");
        return -1;
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, suffix, sizeof(suffix));
    fd = mkstemp(tmp);
    if (fd < 0) {
        set_msg(err, errlen, "tls: cannot create %s: %s", tmp, strerror(errno));
        OPENSSL_free(tmp);
        return -1;
    }
    if (fchmod(fd, mode) != 0 || (f = fdopen(fd, "w")) == NULL) {
        saved = errno;
        close(fd);
        goto fail_errno;
    }
    ERR_clear_error();
    if (kind == PEM_KIND_CERT)
        ok = PEM_write_X509(f, obj);
    else
        ok = PEM_write_PrivateKey(f, obj, NULL, NULL, 0, NULL, NULL);
    if (ok != 1) {
        char what[TLS_ERR_MAX_BYTES];

        snprintf(what, sizeof(what), "tls: cannot write %s", path);
        set_openssl_msg(err, errlen, what, "unknown error");
        fclose(f);
        unlink(tmp);
        OPENSSL_free(tmp);
        return -1;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        saved = errno;
        fclose(f);
        goto fail_errno;
    }
    if (fclose(f) != 0) {
        saved = errno;
        goto fail_errno;
    }
    *tmp_out = tmp;
    return 0;

fail_errno:
    set_msg(err, errlen, "tls: cannot write %s: %s", path, strerror(saved));
    unlink(tmp);
    OPENSSL_free(tmp);
    return -1;
}

/*
 * Both files are complete on disk before either is renamed into place, so a failure (a full
 * disk, a missing directory) never leaves a new key beside an old certificate.
 */
static int write_pair(const char *cert_path, X509 *x, const char *key_path, EVP_PKEY *pkey,
                      char *err, size_t errlen)
{
    char *key_tmp = NULL, *cert_tmp = NULL;
    int rc = -1;

    if (write_pem_tmp(key_path, 0600, PEM_KIND_KEY, pkey, &key_tmp, err, errlen) != 0 ||
        write_pem_tmp(cert_path, 0644, PEM_KIND_CERT, x, &cert_tmp, err, errlen) != 0)
        goto out;
    if (rename(key_tmp, key_path) != 0) {
        set_msg(err, errlen, "tls: cannot rename %s: %s", key_tmp, strerror(errno));
        goto out;
    }
    OPENSSL_free(key_tmp);
    key_tmp = NULL;
    if (rename(cert_tmp, cert_path) != 0) {
        set_msg(err, errlen, "tls: cannot rename %s: %s", cert_tmp, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (key_tmp != NULL)
        unlink(key_tmp);
    if (cert_tmp != NULL && rc != 0)
        unlink(cert_tmp);
    OPENSSL_free(key_tmp);
    OPENSSL_free(cert_tmp);
    return rc;
}

int tls_make_self_signed(const char *cert_path, const char *key_path, const char *hostname,
                         char *err, size_t errlen)
{
    EVP_PKEY *pkey;
    X509 *x;
    int rc;

    if (cert_path == NULL || cert_path[0] == '\0' || key_path == NULL || key_path[0] == '\0') {
        set_msg(err, errlen, "tls: certificate and key paths must both be set");
        return -1;
    }
    if (strcmp(cert_path, key_path) == 0) {
        set_msg(err, errlen, "tls: certificate and key must be different files");
        return -1;
    }
    if (!domain_is_hostname(hostname)) {
        set_msg(err, errlen, "tls: not a DNS host name: \"%.64s\"", hostname ? hostname : "");
        return -1;
    }
    ERR_clear_error();
    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (pkey == NULL) {
        set_openssl_msg(err, errlen, "tls: cannot generate a key", "unknown error");
        return -1;
    }
    x = make_cert(pkey, hostname);
    if (x == NULL) {
        set_openssl_msg(err, errlen, "tls: cannot build the certificate", "unknown error");
        EVP_PKEY_free(pkey);
        return -1;
    }
    rc = write_pair(cert_path, x, key_path, pkey, err, errlen);
    X509_free(x);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}
