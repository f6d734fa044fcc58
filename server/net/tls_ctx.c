/*
 * tls_ctx.c - TLS contexts: loading the server's certificate and key, the client's settings, the
 * version cap, the reference count that lets a SIGHUP reload build a new context while
 * connections on the old one finish, and writing a self-signed certificate for a first start.
 * Also the error messages both halves of the module write. What it does not do: anything per
 * connection (tls.c), decide when to reload (server/serve.c), or verify a peer's certificate.
 *
 * Ownership: a tls_ctx owns its SSL_CTX; its creator and every tls_conn made from it hold one
 * reference each, and the last tls_ctx_unref frees it, on whatever thread that happens.
 */
#include "server/net/tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/pure/address.h"
#include "server/net/tls_internal.h"

/*
 * TLS 1.2 suites for the server: ECDHE only (forward secrecy) with an AEAD cipher. TLS 1.3 suites
 * are OpenSSL's defaults, which are all of that kind already. The client keeps OpenSSL's default
 * TLS 1.2 list: it is opportunistic (RFC 7435 section 3), so an older cipher a remote MX insists
 * on is still better than falling back to plaintext.
 */
#define TLS_SERVER_CIPHERS_TLS12 "ECDHE+AESGCM:ECDHE+CHACHA20"

/* Self-signed certificates: 10 years, and valid from an hour ago to survive clock skew. */
#define TLS_SELFSIGNED_DAYS         3650
#define TLS_SELFSIGNED_BACKDATE_SEC 3600

/* --- messages ------------------------------------------------------------------------------- */

void tls__set_msg(char *err, size_t errlen, const char *fmt, ...)
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
void tls__set_openssl_msg(char *err, size_t errlen, const char *what, const char *fallback)
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

/* The reason of the oldest queued OpenSSL error ("no start line"), and an empty queue. */
static const char *first_reason(void)
{
    const char *r = ERR_reason_error_string(ERR_peek_error());
    ERR_clear_error();
    return r != NULL ? r : "unknown error";
}

/* True when the newest queued OpenSSL error says a key does not match its certificate. */
static bool key_mismatch(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
}

/* 0 when path opens for reading; -1 with "tls: <what> <path>: <errno text>" otherwise. */
static int file_readable(const char *path, const char *what, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        tls__set_msg(err, errlen, "tls: %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    if (fclose(fp) != 0) {
        tls__set_msg(err, errlen, "tls: %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    return 0;
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

    if (cert_path == NULL || cert_path[0] == '\0' || key_path == NULL || key_path[0] == '\0') {
        tls__set_msg(err, errlen, "tls: certificate and key paths must both be set");
        return NULL;
    }
    ERR_clear_error();
    c = SSL_CTX_new(TLS_server_method());
    if (c == NULL) {
        tls__set_openssl_msg(err, errlen, "tls: cannot create server context", "out of memory");
        return NULL;
    }
    if (ctx_common(c) != 0 || SSL_CTX_set_cipher_list(c, TLS_SERVER_CIPHERS_TLS12) != 1 ||
        SSL_CTX_set_num_tickets(c, 0) != 1) {
        tls__set_openssl_msg(err, errlen, "tls: cannot configure server context", "unknown error");
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);

    /*
     * Each failure is one line naming the file, for an operator reading `config check` or a
     * failed start: opening is tried first so a missing or unreadable file says so with errno,
     * and OpenSSL's error chain is cut down to its first reason. Loading the key already
     * compares it with the certificate, so a mismatch can show up there or in the check.
     */
    if (file_readable(cert_path, "certificate", err, errlen) != 0 ||
        file_readable(key_path, "key", err, errlen) != 0) {
        SSL_CTX_free(c);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(c, cert_path) != 1) {
        tls__set_msg(err, errlen, "tls: certificate %s: not a PEM certificate (%s)", cert_path,
                     first_reason());
        SSL_CTX_free(c);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(c, key_path, SSL_FILETYPE_PEM) != 1 && !key_mismatch()) {
        tls__set_msg(err, errlen, "tls: key %s: not a PEM private key (%s)", key_path,
                     first_reason());
        SSL_CTX_free(c);
        return NULL;
    }
    if (key_mismatch() || SSL_CTX_check_private_key(c) != 1) {
        ERR_clear_error();
        tls__set_msg(err, errlen, "tls: key %s does not match the certificate %s", key_path,
                     cert_path);
        SSL_CTX_free(c);
        return NULL;
    }
    ERR_clear_error();
    ctx = ctx_alloc(c, true);
    if (ctx == NULL) {
        tls__set_msg(err, errlen, "tls: out of memory");
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
        tls__set_openssl_msg(err, errlen, "tls: cannot create client context", "out of memory");
        return NULL;
    }
    if (ctx_common(c) != 0) {
        tls__set_openssl_msg(err, errlen, "tls: cannot configure client context", "unknown error");
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
        tls__set_msg(err, errlen, "tls: out of memory");
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
        tls__set_msg(err, errlen, "tls: unknown protocol version %d", (int)max_version);
        return -1;
    }
    ERR_clear_error();
    if (SSL_CTX_set_max_proto_version(ctx->ssl_ctx, v) != 1) {
        tls__set_openssl_msg(err, errlen, "tls: cannot set the highest version", "refused");
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
        tls__set_msg(err, errlen, "tls: out of memory");
        return -1;
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, suffix, sizeof(suffix));
    fd = mkstemp(tmp);
    if (fd < 0) {
        tls__set_msg(err, errlen, "tls: cannot create %s: %s", tmp, strerror(errno));
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
        tls__set_openssl_msg(err, errlen, what, "unknown error");
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
    tls__set_msg(err, errlen, "tls: cannot write %s: %s", path, strerror(saved));
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
        tls__set_msg(err, errlen, "tls: cannot rename %s: %s", key_tmp, strerror(errno));
        goto out;
    }
    OPENSSL_free(key_tmp);
    key_tmp = NULL;
    if (rename(cert_tmp, cert_path) != 0) {
        tls__set_msg(err, errlen, "tls: cannot rename %s: %s", cert_tmp, strerror(errno));
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
        tls__set_msg(err, errlen, "tls: certificate and key paths must both be set");
        return -1;
    }
    if (strcmp(cert_path, key_path) == 0) {
        tls__set_msg(err, errlen, "tls: certificate and key must be different files");
        return -1;
    }
    if (!domain_is_hostname(hostname)) {
        tls__set_msg(err, errlen, "tls: not a DNS host name: \"%.64s\"", hostname ? hostname : "");
        return -1;
    }
    ERR_clear_error();
    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (pkey == NULL) {
        tls__set_openssl_msg(err, errlen, "tls: cannot generate a key", "unknown error");
        return -1;
    }
    x = make_cert(pkey, hostname);
    if (x == NULL) {
        tls__set_openssl_msg(err, errlen, "tls: cannot build the certificate", "unknown error");
        EVP_PKEY_free(pkey);
        return -1;
    }
    rc = write_pair(cert_path, x, key_path, pkey, err, errlen);
    X509_free(x);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}
