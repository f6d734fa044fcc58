/*
 * test_tls.c - server/net/tls.c driven entirely in memory: a server tls_conn and a client tls_conn
 * (or a raw OpenSSL client, where the test needs a peer our own code refuses to be) exchange
 * ciphertext through a bounded pump. No sockets, no event loop.
 *
 * Covered: self-signed certificate generation; context errors (missing, garbage and mismatched
 * files); TLS 1.3 and forced TLS 1.2 handshakes with ciphertext delivered in pieces of 1 byte and
 * up; TLS 1.0/1.1, non-ECDHE and CBC TLS 1.2 clients refused; renegotiation refused; a TLS 1.3
 * KeyUpdate handled both ways; data both ways up to 1 MiB; writes queued before the handshake
 * (never sent in the clear); garbage, plaintext SMTP and corrupted records -> TLS_ERROR with a
 * message and a clean OpenSSL error queue; close_notify both ways; a reload while an old
 * connection lives on; SNI; and the memory an idle connection holds.
 *
 * Every OpenSSL allocation goes through counting hooks installed first thing in main(), tagged
 * with the side (server or client) that was being driven, so the idle-memory test measures one
 * connection and nothing else. Run under POSTERN_SANITIZE=ON for leaks and use-after-free.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "server/net/tls.h"

/* Every loop in this file is bounded by one of these. */
#define PUMP_MAX_ROUNDS  200000
#define RAW_MAX_ROUNDS   1000
#define GARBAGE_SEEDS    300
#define GARBAGE_MAX_FEED 64

#define ONE_MIB        (1024 * 1024)
#define IDLE_MAX_BYTES (64 * 1024) /* DESIGN target per idle TLS connection */
/*
 * What we measure is 14-18 KiB; keeping OpenSSL's record buffers (no SSL_MODE_RELEASE_BUFFERS)
 * or our own drained queues would add 32 KiB or more, so this tighter bound catches that.
 */
#define IDLE_EXPECTED_MAX_BYTES (32 * 1024)
#define HOST_A                  "mx.example.test"
#define HOST_B                  "other.example.test"
#define SELFSIGNED_MIN_DAYS     3649 /* 10 years less the hour of backdating, rounded down */

/* --- allocation accounting -------------------------------------------------------------------- */

enum tag { TAG_OTHER = 0, TAG_SERVER, TAG_CLIENT, TAG_COUNT };

union alloc_head {
    struct {
        size_t size;
        int tag;
    } h;
    max_align_t align;
};

static long long live_bytes[TAG_COUNT];
static int current_tag = TAG_OTHER;

static void *count_malloc(size_t num, const char *file, int line)
{
    union alloc_head *h = malloc(sizeof(*h) + num);

    (void)file;
    (void)line;
    if (h == NULL)
        return NULL;
    h->h.size = num;
    h->h.tag = current_tag;
    live_bytes[current_tag] += (long long)num;
    return h + 1;
}

static void count_free(void *ptr, const char *file, int line)
{
    union alloc_head *h;

    (void)file;
    (void)line;
    if (ptr == NULL)
        return;
    h = (union alloc_head *)ptr - 1;
    live_bytes[h->h.tag] -= (long long)h->h.size;
    free(h);
}

static void *count_realloc(void *ptr, size_t num, const char *file, int line)
{
    union alloc_head *h, *grown;
    size_t old;

    if (ptr == NULL)
        return count_malloc(num, file, line);
    if (num == 0) {
        count_free(ptr, file, line);
        return NULL;
    }
    h = (union alloc_head *)ptr - 1;
    old = h->h.size;
    grown = realloc(h, sizeof(*grown) + num);
    if (grown == NULL)
        return NULL;
    live_bytes[grown->h.tag] += (long long)num - (long long)old;
    grown->h.size = num;
    return grown + 1;
}

static bool hooks_installed;

/* --- fixture: a temporary directory with two self-signed certificates ------------------------- */

struct fixture {
    char dir[64];
    char cert_a[128], key_a[128];
    char cert_b[128], key_b[128];
    char garbage[128];
};

static struct fixture fx;

static void path_in(char *dst, size_t len, const char *name)
{
    int n = snprintf(dst, len, "%s/%s", fx.dir, name);

    assert_true(n > 0 && (size_t)n < len);
}

static int group_setup(void **state)
{
    char err[TLS_ERR_MAX_BYTES] = "";
    const char *tmpdir = getenv("TMPDIR");
    FILE *f;

    (void)state;
    snprintf(fx.dir, sizeof(fx.dir), "%s/postern-tls-XXXXXX",
             tmpdir != NULL && strlen(tmpdir) < 32 ? tmpdir : "/tmp");
    if (mkdtemp(fx.dir) == NULL)
        return -1;
    path_in(fx.cert_a, sizeof(fx.cert_a), "a.crt");
    path_in(fx.key_a, sizeof(fx.key_a), "a.key");
    path_in(fx.cert_b, sizeof(fx.cert_b), "b.crt");
    path_in(fx.key_b, sizeof(fx.key_b), "b.key");
    path_in(fx.garbage, sizeof(fx.garbage), "garbage.pem");
    if (tls_make_self_signed(fx.cert_a, fx.key_a, HOST_A, err, sizeof(err)) != 0 ||
        tls_make_self_signed(fx.cert_b, fx.key_b, HOST_B, err, sizeof(err)) != 0) {
        print_error("tls_make_self_signed: %s\n", err);
        return -1;
    }
    f = fopen(fx.garbage, "w");
    if (f == NULL)
        return -1;
    fputs("this is not PEM\n", f);
    if (fclose(f) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    DIR *d;
    struct dirent *de;
    char path[sizeof(fx.dir) + sizeof(de->d_name) + 2];

    (void)state;
    d = opendir(fx.dir);
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", fx.dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    return rmdir(fx.dir);
}

/* --- two tls_conns talking through memory ------------------------------------------------------
 */

struct side {
    const char *name;
    struct tls_conn *t;
    int tag;
    unsigned char *recv; /* plaintext received */
    size_t recv_len, recv_cap;
    enum tls_status last;
    unsigned char *sent; /* every ciphertext byte this side produced, when capture is on */
    size_t sent_len, sent_cap;
    bool capture;
};

static void side_init(struct side *s, const char *name, int tag, size_t recv_cap)
{
    memset(s, 0, sizeof(*s));
    s->name = name;
    s->tag = tag;
    s->recv_cap = recv_cap;
    s->recv = malloc(recv_cap);
    assert_non_null(s->recv);
    s->last = TLS_WANT_MORE;
}

static void side_done(struct side *s)
{
    current_tag = s->tag;
    tls_conn_free(&s->t);
    current_tag = TAG_OTHER;
    assert_null(s->t);
    free(s->recv);
    free(s->sent);
    memset(s, 0, sizeof(*s));
}

static void append_sent(struct side *s, const unsigned char *p, size_t n)
{
    if (!s->capture)
        return;
    if (s->sent_len + n > s->sent_cap) {
        size_t cap = s->sent_cap ? s->sent_cap * 2 : 4096;

        while (cap < s->sent_len + n)
            cap *= 2;
        s->sent = realloc(s->sent, cap);
        assert_non_null(s->sent);
        s->sent_cap = cap;
    }
    memcpy(s->sent + s->sent_len, p, n);
    s->sent_len += n;
}

/* Reads plaintext from s until it stops saying TLS_OK; returns true if anything arrived. */
static bool side_read(struct side *s)
{
    unsigned char buf[4096];
    size_t n;
    bool got = false;
    int i;

    current_tag = s->tag;
    for (i = 0; i < PUMP_MAX_ROUNDS; i++) {
        s->last = tls_read_plaintext(s->t, buf, sizeof(buf), &n);
        if (s->last != TLS_OK)
            break;
        assert_true(n > 0 && n <= sizeof(buf));
        if (s->recv_len + n > s->recv_cap)
            fail_msg("%s received more than %zu bytes", s->name, s->recv_cap);
        memcpy(s->recv + s->recv_len, buf, n);
        s->recv_len += n;
        got = true;
    }
    current_tag = TAG_OTHER;
    return got;
}

/* Moves up to chunk bytes of src's ciphertext into dst, then lets dst read. */
static bool move(struct side *src, struct side *dst, size_t chunk)
{
    unsigned char buf[8192];
    size_t want, n;

    current_tag = src->tag;
    want = tls_pending_ciphertext(src->t);
    if (want > chunk)
        want = chunk;
    if (want > sizeof(buf))
        want = sizeof(buf);
    n = tls_take_ciphertext(src->t, buf, want);
    current_tag = TAG_OTHER;
    assert_int_equal(n, want);
    if (n == 0)
        return false;
    append_sent(src, buf, n);
    current_tag = dst->tag;
    assert_int_equal(tls_feed_ciphertext(dst->t, buf, n), 0);
    current_tag = TAG_OTHER;
    side_read(dst);
    return true;
}

/* Shuttles ciphertext both ways, chunk bytes at a time, until neither side has anything to say. */
static void pump(struct side *a, struct side *b, size_t chunk)
{
    int i;

    side_read(a);
    side_read(b);
    for (i = 0; i < PUMP_MAX_ROUNDS; i++) {
        bool moved = move(a, b, chunk);

        moved = move(b, a, chunk) || moved;
        if (!moved)
            return;
    }
    fail_msg("pump did not settle after %d rounds", PUMP_MAX_ROUNDS);
}

static struct tls_ctx *server_ctx(const char *cert, const char *key)
{
    char err[TLS_ERR_MAX_BYTES] = "";
    struct tls_ctx *ctx = tls_ctx_new_server(cert, key, err, sizeof(err));

    if (ctx == NULL)
        fail_msg("tls_ctx_new_server: %s", err);
    return ctx;
}

static struct tls_ctx *client_ctx(void)
{
    char err[TLS_ERR_MAX_BYTES] = "";
    struct tls_ctx *ctx = tls_ctx_new_client(err, sizeof(err));

    if (ctx == NULL)
        fail_msg("tls_ctx_new_client: %s", err);
    return ctx;
}

static void open_pair(struct side *srv, struct side *cli, struct tls_ctx *sctx,
                      struct tls_ctx *cctx, const char *sni, size_t recv_cap)
{
    char err[TLS_ERR_MAX_BYTES] = "";

    side_init(srv, "server", TAG_SERVER, recv_cap);
    side_init(cli, "client", TAG_CLIENT, recv_cap);
    current_tag = TAG_SERVER;
    srv->t = tls_conn_new_server(sctx, err, sizeof(err));
    current_tag = TAG_CLIENT;
    if (srv->t != NULL)
        cli->t = tls_conn_new_client(cctx, sni, err, sizeof(err));
    current_tag = TAG_OTHER;
    if (srv->t == NULL || cli->t == NULL)
        fail_msg("tls_conn_new: %s", err);
}

static void assert_both_done(struct side *srv, struct side *cli, const char *want_version)
{
    char d1[TLS_DESCRIBE_MAX_BYTES], d2[TLS_DESCRIBE_MAX_BYTES];

    if (!tls_handshake_done(srv->t) || !tls_handshake_done(cli->t))
        fail_msg("handshake not done: server=%d (%s) client=%d (%s)", tls_handshake_done(srv->t),
                 tls_last_error(srv->t), tls_handshake_done(cli->t), tls_last_error(cli->t));
    tls_describe(srv->t, d1, sizeof(d1));
    tls_describe(cli->t, d2, sizeof(d2));
    assert_string_equal(d1, d2);
    if (strncmp(d1, want_version, strlen(want_version)) != 0 || d1[strlen(want_version)] != ' ')
        fail_msg("describe: got \"%s\", want \"%s <cipher>\"", d1, want_version);
    assert_int_equal(srv->last, TLS_WANT_MORE);
    assert_int_equal(cli->last, TLS_WANT_MORE);
    assert_int_equal(ERR_peek_error(), 0);
}

static void write_all(struct side *s, const void *data, size_t len)
{
    current_tag = s->tag;
    if (tls_write_plaintext(s->t, data, len) != 0)
        fail_msg("%s: write failed: %s", s->name, tls_last_error(s->t));
    current_tag = TAG_OTHER;
}

static bool contains(const unsigned char *hay, size_t hay_len, const char *needle)
{
    size_t n = strlen(needle), i;

    for (i = 0; n <= hay_len && i <= hay_len - n; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return true;
    return false;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL)
        fail_msg("got \"%s\", want it to contain \"%s\"", hay, needle);
}

/* Leftover "name.tmp.XXXXXX" files in the fixture directory. */
static int count_tmp_files(void)
{
    DIR *d = opendir(fx.dir);
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".tmp.") != NULL)
            n++;
    closedir(d);
    return n;
}

/* --- self-signed certificates -------------------------------------------------------------------
 */

static void test_selfsigned_files(void **state)
{
    struct stat st;
    FILE *f;
    X509 *x;
    EVP_PKEY *k;
    int days = 0, secs = 0;

    (void)state;
    assert_int_equal(stat(fx.key_a, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(fx.cert_a, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);

    f = fopen(fx.cert_a, "r");
    assert_non_null(f);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    f = fopen(fx.key_a, "r");
    assert_non_null(f);
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);

    assert_int_equal(X509_check_host(x, HOST_A, 0, 0, NULL), 1); /* subjectAltName */
    assert_int_equal(X509_check_host(x, HOST_B, 0, 0, NULL), 0);
    assert_int_equal(X509_check_private_key(x, k), 1); /* pair matches */
    assert_int_equal(X509_self_signed(x, 1), 1);       /* signature checks out */
    assert_int_equal(X509_check_purpose(x, X509_PURPOSE_SSL_SERVER, 0), 1);
    assert_int_equal(EVP_PKEY_get_base_id(k), EVP_PKEY_EC);
    assert_int_equal(X509_cmp_current_time(X509_get0_notBefore(x)), -1);
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)),
                     1);
    if (days < SELFSIGNED_MIN_DAYS)
        fail_msg("validity %d days, want at least %d", days, SELFSIGNED_MIN_DAYS);
    X509_free(x);
    EVP_PKEY_free(k);
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_selfsigned_refusals(void **state)
{
    char long_name[300];
    char missing_dir[192];
    const struct {
        const char *name;
        const char *cert, *key, *host;
        const char *want; /* substring of err */
    } cases[] = {
        {"empty host", fx.cert_b, fx.key_b, "", "not a DNS host name"},
        {"comma injection", fx.cert_b, fx.key_b, "a.test,DNS:evil.test", "not a DNS host name"},
        {"space", fx.cert_b, fx.key_b, "a test", "not a DNS host name"},
        {"empty label", fx.cert_b, fx.key_b, "a..test", "not a DNS host name"},
        {"leading dot", fx.cert_b, fx.key_b, ".a.test", "not a DNS host name"},
        {"trailing dot", fx.cert_b, fx.key_b, "a.test.", "not a DNS host name"},
        {"too long", fx.cert_b, fx.key_b, long_name, "not a DNS host name"},
        {"same file", fx.cert_b, fx.cert_b, HOST_B, "different files"},
        {"no directory", missing_dir, fx.key_b, HOST_B, "cannot"},
    };
    char err[TLS_ERR_MAX_BYTES];
    struct tls_ctx *ctx;
    size_t i;

    (void)state;
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    snprintf(missing_dir, sizeof(missing_dir), "%s/no/such/dir/x.crt", fx.dir);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        if (tls_make_self_signed(cases[i].cert, cases[i].key, cases[i].host, err, sizeof(err)) !=
            -1)
            fail_msg("case %s: accepted", cases[i].name);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %s: err \"%s\", want \"%s\"", cases[i].name, err, cases[i].want);
        assert_int_equal(ERR_peek_error(), 0);
    }
    /* The refusals above must not have clobbered the fixture's B pair, nor left temp files. */
    ctx = server_ctx(fx.cert_b, fx.key_b);
    assert_non_null(ctx);
    tls_ctx_unref(&ctx);
    assert_int_equal(count_tmp_files(), 0);
}

/* An existing, too-open key file is replaced by one with mode 0600; a second run overwrites. */
static void test_selfsigned_overwrite(void **state)
{
    char cert[128], key[128], err[TLS_ERR_MAX_BYTES] = "";
    struct tls_ctx *ctx;
    struct stat st;
    FILE *f;
    int round;

    (void)state;
    path_in(cert, sizeof(cert), "c.crt");
    path_in(key, sizeof(key), "c.key");
    f = fopen(key, "w");
    assert_non_null(f);
    fputs("old\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(key, 0644), 0);
    for (round = 0; round < 2; round++) {
        if (tls_make_self_signed(cert, key, "c.example.test", err, sizeof(err)) != 0)
            fail_msg("round %d: %s", round, err);
        assert_int_equal(stat(key, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        ctx = server_ctx(cert, key);
        tls_ctx_unref(&ctx);
    }
    assert_int_equal(count_tmp_files(), 0);
    assert_int_equal(unlink(cert), 0);
    assert_int_equal(unlink(key), 0);
}

/* --- contexts -----------------------------------------------------------------------------------
 */

static void test_ctx_errors(void **state)
{
    char missing[192];
    const struct {
        const char *name;
        const char *cert, *key;
        const char *want[2]; /* substrings of err */
    } cases[] = {
        {"missing cert", missing, fx.key_a, {"certificate", "No such file"}},
        {"missing key", fx.cert_a, missing, {"key", "No such file"}},
        {"mismatched key", fx.cert_a, fx.key_b, {"key", "does not match the certificate"}},
        {"garbage cert", fx.garbage, fx.key_a, {"certificate", "no start line"}},
        {"garbage key", fx.cert_a, fx.garbage, {"key", "garbage.pem"}},
        {"cert as key", fx.cert_a, fx.cert_a, {"key", "a.crt"}},
        {"empty paths", "", "", {"paths", "set"}},
    };
    char err[TLS_ERR_MAX_BYTES];
    size_t i, j;

    (void)state;
    snprintf(missing, sizeof(missing), "%s/missing.pem", fx.dir);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_ctx *ctx;

        err[0] = '\0';
        ctx = tls_ctx_new_server(cases[i].cert, cases[i].key, err, sizeof(err));
        if (ctx != NULL) {
            tls_ctx_unref(&ctx);
            fail_msg("case %s: accepted", cases[i].name);
        }
        for (j = 0; j < 2; j++)
            if (strstr(err, cases[i].want[j]) == NULL)
                fail_msg("case %s: err \"%s\", want \"%s\"", cases[i].name, err, cases[i].want[j]);
        /* One failure must not leave errors behind for the next OpenSSL user on this thread. */
        assert_int_equal(ERR_peek_error(), 0);
    }
}

static void test_conn_wrong_ctx_kind(void **state)
{
    struct tls_ctx *s = server_ctx(fx.cert_a, fx.key_a);
    struct tls_ctx *c = client_ctx();
    char err[TLS_ERR_MAX_BYTES] = "";

    (void)state;
    assert_null(tls_conn_new_server(c, err, sizeof(err)));
    assert_contains(err, "server context");
    assert_null(tls_conn_new_client(s, HOST_A, err, sizeof(err)));
    assert_contains(err, "client context");
    tls_ctx_unref(&s);
    tls_ctx_unref(&c);
    assert_null(s);
    assert_null(c);
    tls_ctx_unref(&s); /* NULL is a no-op */
}

/* --- handshakes
 * ----------------------------------------------------------------------------------- */

static void exchange_lines(struct side *srv, struct side *cli, size_t chunk)
{
    static const char greet[] = "220 mx.example.test ESMTP\r\n";
    static const char ehlo[] = "EHLO client.example.test\r\n";

    srv->recv_len = 0;
    cli->recv_len = 0;
    write_all(srv, greet, strlen(greet));
    pump(srv, cli, chunk);
    write_all(cli, ehlo, strlen(ehlo));
    pump(srv, cli, chunk);
    assert_int_equal(cli->recv_len, strlen(greet));
    assert_memory_equal(cli->recv, greet, strlen(greet));
    assert_int_equal(srv->recv_len, strlen(ehlo));
    assert_memory_equal(srv->recv, ehlo, strlen(ehlo));
}

static void test_handshake_versions(void **state)
{
    const struct {
        const char *name;
        bool cap_client_12, cap_server_12;
        size_t chunk;
        const char *want_version;
        const char *want_cipher_prefix;
    } cases[] = {
        {"tls13 whole", false, false, SIZE_MAX, "TLSv1.3", "TLSv1.3 TLS_"},
        {"tls13 1-byte", false, false, 1, "TLSv1.3", "TLSv1.3 TLS_"},
        {"tls13 7-byte", false, false, 7, "TLSv1.3", "TLSv1.3 TLS_"},
        {"tls13 100-byte", false, false, 100, "TLSv1.3", "TLSv1.3 TLS_"},
        {"tls12 client cap", true, false, SIZE_MAX, "TLSv1.2", "TLSv1.2 ECDHE-ECDSA-"},
        {"tls12 client cap 3-byte", true, false, 3, "TLSv1.2", "TLSv1.2 ECDHE-ECDSA-"},
        {"tls12 server cap", false, true, SIZE_MAX, "TLSv1.2", "TLSv1.2 ECDHE-ECDSA-"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[TLS_ERR_MAX_BYTES] = "", d[TLS_DESCRIBE_MAX_BYTES];
        struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
        struct tls_ctx *cctx = client_ctx();
        struct side srv, cli;

        if (cases[i].cap_client_12)
            assert_int_equal(tls_ctx_limit_version(cctx, TLS_VERSION_1_2, err, sizeof(err)), 0);
        if (cases[i].cap_server_12)
            assert_int_equal(tls_ctx_limit_version(sctx, TLS_VERSION_1_2, err, sizeof(err)), 0);
        open_pair(&srv, &cli, sctx, cctx, HOST_A, 4096);
        assert_false(tls_handshake_done(srv.t));
        assert_string_equal(tls_describe(srv.t, d, sizeof(d)), "none");
        /* The ClientHello is queued by tls_conn_new_client itself. */
        assert_true(tls_pending_ciphertext(cli.t) > 0);
        assert_int_equal(tls_pending_ciphertext(srv.t), 0);

        pump(&srv, &cli, cases[i].chunk);
        assert_both_done(&srv, &cli, cases[i].want_version);
        tls_describe(srv.t, d, sizeof(d));
        if (strncmp(d, cases[i].want_cipher_prefix, strlen(cases[i].want_cipher_prefix)) != 0)
            fail_msg("case %s: describe \"%s\", want prefix \"%s\"", cases[i].name, d,
                     cases[i].want_cipher_prefix);
        exchange_lines(&srv, &cli, cases[i].chunk);
        assert_string_equal(tls_last_error(srv.t), "");
        assert_string_equal(tls_last_error(cli.t), "");

        side_done(&srv);
        side_done(&cli);
        tls_ctx_unref(&sctx);
        tls_ctx_unref(&cctx);
    }
}

/*
 * A raw OpenSSL client with memory BIOs, for peers that tls.c itself refuses to be (TLS 1.1,
 * ciphers without ECDHE) and for things our client never does (renegotiate, request a key
 * update).
 */
struct raw_peer {
    SSL_CTX *c;
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    bool failed;
    char err[TLS_ERR_MAX_BYTES];
    unsigned char recv[256];
    size_t recv_len;
};

static void raw_open(struct raw_peer *p, int version, const char *ciphers)
{
    memset(p, 0, sizeof(*p));
    p->c = SSL_CTX_new(TLS_client_method());
    assert_non_null(p->c);
    SSL_CTX_set_security_level(p->c, 0);
    assert_int_equal(SSL_CTX_set_min_proto_version(p->c, version), 1);
    assert_int_equal(SSL_CTX_set_max_proto_version(p->c, version), 1);
    assert_int_equal(SSL_CTX_set_cipher_list(p->c, ciphers), 1);
    p->ssl = SSL_new(p->c);
    p->rbio = BIO_new(BIO_s_mem());
    p->wbio = BIO_new(BIO_s_mem());
    assert_non_null(p->ssl);
    assert_non_null(p->rbio);
    assert_non_null(p->wbio);
    SSL_set_bio(p->ssl, p->rbio, p->wbio);
    SSL_set_connect_state(p->ssl);
}

static void raw_close(struct raw_peer *p)
{
    SSL_free(p->ssl);
    SSL_CTX_free(p->c);
    ERR_clear_error();
    memset(p, 0, sizeof(*p));
}

/* Lets the raw client process what it has received: handshake, alerts, key updates, data. */
static void raw_step(struct raw_peer *p)
{
    size_t n = 0;
    int r, e;

    if (p->failed)
        return;
    if (!SSL_is_init_finished(p->ssl))
        r = SSL_do_handshake(p->ssl);
    else
        r = SSL_read_ex(p->ssl, p->recv + p->recv_len, sizeof(p->recv) - p->recv_len, &n);
    if (r == 1) {
        p->recv_len += n;
    } else if ((e = SSL_get_error(p->ssl, r)) != SSL_ERROR_WANT_READ) {
        p->failed = true;
        ERR_error_string_n(ERR_peek_error(), p->err, sizeof(p->err));
        if (e == SSL_ERROR_ZERO_RETURN)
            snprintf(p->err, sizeof(p->err), "close_notify");
    }
    ERR_clear_error();
}

/* Shuttles bytes between the raw client and t until quiet; returns t's last read status. */
static enum tls_status raw_pump(struct raw_peer *p, struct tls_conn *t, unsigned char *got,
                                size_t cap, size_t *got_len)
{
    enum tls_status st = TLS_WANT_MORE;
    unsigned char buf[8192];
    size_t n;
    int i, r;

    for (i = 0; i < RAW_MAX_ROUNDS; i++) {
        bool moved = false;

        raw_step(p);
        while ((r = BIO_read(p->wbio, buf, sizeof(buf))) > 0) {
            assert_int_equal(tls_feed_ciphertext(t, buf, (size_t)r), 0);
            moved = true;
        }
        while ((st = tls_read_plaintext(t, got + *got_len, cap - *got_len, &n)) == TLS_OK)
            *got_len += n;
        while ((n = tls_take_ciphertext(t, buf, sizeof(buf))) > 0) {
            assert_int_equal(BIO_write(p->rbio, buf, (int)n), (int)n);
            moved = true;
        }
        if (!moved)
            return st;
    }
    fail_msg("raw pump did not settle after %d rounds", RAW_MAX_ROUNDS);
    return TLS_ERROR;
}

static void test_refused_clients(void **state)
{
    const struct {
        const char *name;
        int version;
        const char *ciphers;
        enum tls_status want;
        const char *want_err;
    } cases[] = {
        {"tls1.1", TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0", TLS_ERROR, "unsupported protocol"},
        {"tls1.0", TLS1_VERSION, "DEFAULT:@SECLEVEL=0", TLS_ERROR, "unsupported protocol"},
        {"tls1.2 rsa kx", TLS1_2_VERSION, "AES128-GCM-SHA256:@SECLEVEL=0", TLS_ERROR,
         "no shared cipher"},
        {"tls1.2 cbc", TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0", TLS_ERROR,
         "no shared cipher"},
        /* Control: the same harness does succeed with an acceptable client. */
        {"tls1.2 ecdhe gcm", TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", TLS_WANT_MORE, ""},
    };
    struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[TLS_ERR_MAX_BYTES] = "";
        struct tls_conn *t = tls_conn_new_server(sctx, err, sizeof(err));
        struct raw_peer p;
        unsigned char got[64];
        size_t got_len = 0;
        enum tls_status st;

        assert_non_null(t);
        raw_open(&p, cases[i].version, cases[i].ciphers);
        st = raw_pump(&p, t, got, sizeof(got), &got_len);
        if (st != cases[i].want)
            fail_msg("case %s: status %d, want %d (err \"%s\")", cases[i].name, st, cases[i].want,
                     tls_last_error(t));
        if (strstr(tls_last_error(t), cases[i].want_err) == NULL)
            fail_msg("case %s: err \"%s\", want \"%s\"", cases[i].name, tls_last_error(t),
                     cases[i].want_err);
        if (cases[i].want == TLS_ERROR && !p.failed)
            fail_msg("case %s: the client never saw the refusal", cases[i].name);
        if (cases[i].want != TLS_ERROR && !tls_handshake_done(t))
            fail_msg("case %s: control handshake did not complete", cases[i].name);
        assert_int_equal(got_len, 0);
        assert_int_equal(ERR_peek_error(), 0);
        raw_close(&p);
        tls_conn_free(&t);
    }
    tls_ctx_unref(&sctx);
}

/*
 * A TLS 1.2 client asking for a second handshake is turned down. (OpenSSL 3 servers refuse
 * client-initiated renegotiation by default as well; SSL_OP_NO_RENEGOTIATION makes sure of it
 * whatever the system configuration says, and also stops our client obeying a HelloRequest.)
 */
static void test_renegotiation_refused(void **state)
{
    struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
    char err[TLS_ERR_MAX_BYTES] = "";
    struct tls_conn *t = tls_conn_new_server(sctx, err, sizeof(err));
    struct raw_peer p;
    unsigned char got[64];
    size_t got_len = 0;

    (void)state;
    assert_non_null(t);
    raw_open(&p, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_int_equal(raw_pump(&p, t, got, sizeof(got), &got_len), TLS_WANT_MORE);
    assert_true(tls_handshake_done(t));
    assert_false(p.failed);

    assert_int_equal(SSL_renegotiate(p.ssl), 1);
    assert_int_equal(SSL_do_handshake(p.ssl), -1); /* sends the new ClientHello, waits */
    ERR_clear_error();
    raw_pump(&p, t, got, sizeof(got), &got_len);
    if (!p.failed || strstr(p.err, "no renegotiation") == NULL)
        fail_msg("client: failed=%d err \"%s\", want \"no renegotiation\"", p.failed, p.err);
    assert_int_equal(got_len, 0);
    assert_int_equal(ERR_peek_error(), 0);
    raw_close(&p);
    tls_conn_free(&t);
    tls_ctx_unref(&sctx);
}

/* Counts whole TLS records in buf (5-byte header plus its length). */
static int count_records(const unsigned char *buf, size_t len)
{
    size_t off = 0;
    int n = 0;

    while (off + 5 <= len) {
        off += 5 + ((size_t)buf[off + 3] << 8 | buf[off + 4]);
        n++;
    }
    return off == len ? n : -1;
}

/*
 * A TLS 1.3 KeyUpdate with update_requested: the server takes it inside tls_read_plaintext()
 * and (OpenSSL sends its answer with the next write) the reply goes out as an extra record
 * ahead of the data, which the client still decrypts: both directions changed keys cleanly.
 */
static void test_key_update(void **state)
{
    static const char noop[] = "NOOP\r\n";
    static const char ok[] = "250 2.0.0 OK\r\n";
    struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
    char err[TLS_ERR_MAX_BYTES] = "";
    struct tls_conn *t = tls_conn_new_server(sctx, err, sizeof(err));
    struct raw_peer p;
    unsigned char got[64], buf[4096];
    size_t got_len = 0, n = 0, len;
    int r;

    (void)state;
    assert_non_null(t);
    raw_open(&p, TLS1_3_VERSION, "DEFAULT");
    assert_int_equal(raw_pump(&p, t, got, sizeof(got), &got_len), TLS_WANT_MORE);
    assert_true(tls_handshake_done(t));
    assert_int_equal(tls_pending_ciphertext(t), 0);

    assert_int_equal(SSL_key_update(p.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(SSL_write_ex(p.ssl, noop, strlen(noop), &n), 1);
    while ((r = BIO_read(p.wbio, buf, sizeof(buf))) > 0)
        assert_int_equal(tls_feed_ciphertext(t, buf, (size_t)r), 0);
    assert_int_equal(tls_read_plaintext(t, got, sizeof(got), &got_len), TLS_OK);
    assert_int_equal(got_len, strlen(noop));
    assert_memory_equal(got, noop, strlen(noop));
    assert_int_equal(tls_read_plaintext(t, got, sizeof(got), &n), TLS_WANT_MORE);

    assert_int_equal(tls_write_plaintext(t, ok, strlen(ok)), 0);
    len = tls_take_ciphertext(t, buf, sizeof(buf));
    assert_int_equal(tls_pending_ciphertext(t), 0);
    assert_int_equal(count_records(buf, len), 2); /* KeyUpdate, then the reply */
    assert_int_equal(BIO_write(p.rbio, buf, (int)len), (int)len);
    raw_step(&p);
    if (p.failed)
        fail_msg("client failed: %s", p.err);
    assert_int_equal(p.recv_len, strlen(ok));
    assert_memory_equal(p.recv, ok, strlen(ok));

    /* And the server still reads what the client sends under its new keys. */
    assert_int_equal(SSL_write_ex(p.ssl, noop, strlen(noop), &n), 1);
    got_len = 0;
    assert_int_equal(raw_pump(&p, t, got, sizeof(got), &got_len), TLS_WANT_MORE);
    assert_int_equal(got_len, strlen(noop));
    raw_close(&p);
    tls_conn_free(&t);
    tls_ctx_unref(&sctx);
}

/* --- application data
 * ----------------------------------------------------------------------------- */

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    size_t i;

    for (i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
}

static void test_one_mib_both_ways(void **state)
{
    const size_t write_chunks[] = {ONE_MIB, 16384, 4093, 1000};
    size_t i, off;

    (void)state;
    for (i = 0; i < sizeof(write_chunks) / sizeof(write_chunks[0]); i++) {
        struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
        struct tls_ctx *cctx = client_ctx();
        unsigned char *up = malloc(ONE_MIB), *down = malloc(ONE_MIB);
        struct side srv, cli;

        assert_non_null(up);
        assert_non_null(down);
        fill_pattern(up, ONE_MIB, 1 + (unsigned)i);
        fill_pattern(down, ONE_MIB, 100 + (unsigned)i);
        open_pair(&srv, &cli, sctx, cctx, HOST_A, ONE_MIB);
        pump(&srv, &cli, SIZE_MAX);
        assert_both_done(&srv, &cli, "TLSv1.3");

        for (off = 0; off < ONE_MIB; off += write_chunks[i]) {
            size_t n = ONE_MIB - off < write_chunks[i] ? ONE_MIB - off : write_chunks[i];

            write_all(&cli, up + off, n);
            write_all(&srv, down + off, n);
            /* Deliver in odd-sized pieces so records straddle feeds. */
            pump(&srv, &cli, 5000);
        }
        assert_int_equal(srv.recv_len, ONE_MIB);
        assert_int_equal(cli.recv_len, ONE_MIB);
        assert_memory_equal(srv.recv, up, ONE_MIB);
        assert_memory_equal(cli.recv, down, ONE_MIB);
        assert_int_equal(tls_pending_ciphertext(srv.t), 0);
        assert_int_equal(tls_pending_ciphertext(cli.t), 0);

        side_done(&srv);
        side_done(&cli);
        tls_ctx_unref(&sctx);
        tls_ctx_unref(&cctx);
        free(up);
        free(down);
    }
}

static void test_write_before_handshake(void **state)
{
    static const char greet[] = "220 secret-greeting ready\r\n";
    static const char part1[] = "EHLO early-bird";
    static const char part2[] = ".example.test\r\n";
    struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
    struct tls_ctx *cctx = client_ctx();
    struct side srv, cli;

    (void)state;
    open_pair(&srv, &cli, sctx, cctx, HOST_A, 4096);
    srv.capture = true;
    cli.capture = true;
    /* Both write before a single handshake byte has moved. */
    write_all(&srv, greet, strlen(greet));
    write_all(&cli, part1, strlen(part1));
    assert_int_equal(tls_pending_ciphertext(srv.t), 0); /* held, not sent in the clear */
    write_all(&cli, part2, strlen(part2));
    pump(&srv, &cli, 64);

    assert_both_done(&srv, &cli, "TLSv1.3");
    assert_int_equal(cli.recv_len, strlen(greet));
    assert_memory_equal(cli.recv, greet, strlen(greet));
    assert_int_equal(srv.recv_len, strlen(part1) + strlen(part2));
    assert_memory_equal(srv.recv, part1, strlen(part1));
    assert_memory_equal(srv.recv + strlen(part1), part2, strlen(part2));
    /* Nothing written by either side ever crossed the wire as plaintext. */
    assert_true(srv.sent_len > 0 && cli.sent_len > 0);
    assert_false(contains(srv.sent, srv.sent_len, "secret-greeting"));
    assert_false(contains(cli.sent, cli.sent_len, "early-bird"));

    side_done(&srv);
    side_done(&cli);
    tls_ctx_unref(&sctx);
    tls_ctx_unref(&cctx);
}

/* --- bad input
 * ------------------------------------------------------------------------------------ */

static void assert_error_latched(struct tls_conn *t, const char *want)
{
    unsigned char buf[64];
    size_t n = 99;

    assert_int_equal(tls_feed_ciphertext(t, "more", 4), 0); /* discarded */
    assert_int_equal(tls_read_plaintext(t, buf, sizeof(buf), &n), TLS_ERROR);
    assert_int_equal(n, 0);
    assert_contains(tls_last_error(t), want);
    assert_int_equal(tls_write_plaintext(t, "x", 1), -1);
    assert_int_equal(tls_shutdown(t), -1);
    assert_contains(tls_last_error(t), want); /* later calls keep the first reason */
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_garbage_to_server(void **state)
{
    static const unsigned char zeros[32];
    static const unsigned char bad_version[] = {0x16, 0x09, 0x09, 0x00, 0x10, 1, 2, 3};
    static const unsigned char too_long[] = {0x16, 0x03, 0x01, 0xff, 0xff};
    static const unsigned char alert_first[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28};
    const struct {
        const char *name;
        const void *data;
        size_t len;
        const char *want;
    } cases[] = {
        {"plaintext EHLO", "EHLO x\r\n", 8, "tls: handshake"},
        {"http", "GET / HTTP/1.0\r\n\r\n", 18, "http request"},
        {"zeros", zeros, sizeof(zeros), "tls: handshake"},
        {"bad record version", bad_version, sizeof(bad_version), "wrong version number"},
        {"oversized record", too_long, sizeof(too_long), "tls: handshake"},
        {"alert first", alert_first, sizeof(alert_first), "tls: handshake"},
    };
    struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
    unsigned char buf[256];
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[TLS_ERR_MAX_BYTES] = "";
        struct tls_conn *t = tls_conn_new_server(sctx, err, sizeof(err));
        enum tls_status st;

        assert_non_null(t);
        assert_int_equal(tls_feed_ciphertext(t, cases[i].data, cases[i].len), 0);
        st = tls_read_plaintext(t, buf, sizeof(buf), &n);
        if (st != TLS_ERROR)
            fail_msg("case %s: status %d, want TLS_ERROR", cases[i].name, st);
        if (strstr(tls_last_error(t), cases[i].want) == NULL)
            fail_msg("case %s: err \"%s\", want \"%s\"", cases[i].name, tls_last_error(t),
                     cases[i].want);
        assert_false(tls_handshake_done(t));
        assert_error_latched(t, cases[i].want);
        tls_conn_free(&t);
        assert_null(t);
    }
    tls_ctx_unref(&sctx);
}

/* Deterministic random bytes: every seed must end in TLS_ERROR within a bounded feed, never OK. */
static void test_random_bytes_to_server(void **state)
{
    struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
    unsigned char junk[512], buf[256];
    unsigned seed;
    int errors = 0;

    (void)state;
    for (seed = 0; seed < GARBAGE_SEEDS; seed++) {
        char err[TLS_ERR_MAX_BYTES] = "";
        struct tls_conn *t = tls_conn_new_server(sctx, err, sizeof(err));
        enum tls_status st = TLS_WANT_MORE;
        size_t n;
        int feed;

        assert_non_null(t);
        for (feed = 0; feed < GARBAGE_MAX_FEED && st == TLS_WANT_MORE; feed++) {
            size_t len = 1 + (seed * 37 + (unsigned)feed * 11) % sizeof(junk);

            fill_pattern(junk, len, seed * 1000 + (unsigned)feed);
            assert_int_equal(tls_feed_ciphertext(t, junk, len), 0);
            st = tls_read_plaintext(t, buf, sizeof(buf), &n);
        }
        if (st != TLS_ERROR)
            fail_msg("seed %u: status %d after %d feeds, want TLS_ERROR", seed, st, feed);
        assert_true(tls_last_error(t)[0] != '\0');
        assert_int_equal(ERR_peek_error(), 0);
        errors++;
        tls_conn_free(&t);
    }
    assert_int_equal(errors, GARBAGE_SEEDS);
    tls_ctx_unref(&sctx);
}

static void test_corrupt_record(void **state)
{
    static const char line[] = "MAIL FROM:<a@example.test>\r\n";
    const struct {
        const char *name;
        long where; /* byte to flip: >= 0 from the start of the record, < 0 from its end */
        const char *want;
    } cases[] = {
        {"content type", 0, "tls: read"},
        {"length", 4, "tls: read"},
        {"first encrypted byte", 5, "bad record mac"},
        {"middle", 20, "bad record mac"},
        {"auth tag", -1, "bad record mac"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
        struct tls_ctx *cctx = client_ctx();
        struct side srv, cli;
        unsigned char rec[512], buf[256];
        size_t len, pos, n;
        enum tls_status st;

        open_pair(&srv, &cli, sctx, cctx, HOST_A, 4096);
        pump(&srv, &cli, SIZE_MAX);
        assert_both_done(&srv, &cli, "TLSv1.3");
        write_all(&cli, line, strlen(line));
        len = tls_take_ciphertext(cli.t, rec, sizeof(rec));
        assert_true(len > 5 + strlen(line) && len < sizeof(rec));
        assert_int_equal(rec[0], 0x17); /* one application_data record */
        assert_int_equal(((size_t)rec[3] << 8 | rec[4]) + 5, len);
        pos = cases[i].where >= 0 ? (size_t)cases[i].where : len - (size_t)(-cases[i].where);
        rec[pos] ^= 0x40;
        assert_int_equal(tls_feed_ciphertext(srv.t, rec, len), 0);
        st = tls_read_plaintext(srv.t, buf, sizeof(buf), &n);
        if (st == TLS_WANT_MORE && cases[i].where == 4) {
            /* A longer length field waits for bytes that never come; add junk to trip it. */
            memset(rec, 0xee, sizeof(rec));
            for (int k = 0; k < 64 && st == TLS_WANT_MORE; k++) {
                assert_int_equal(tls_feed_ciphertext(srv.t, rec, sizeof(rec)), 0);
                st = tls_read_plaintext(srv.t, buf, sizeof(buf), &n);
            }
        }
        if (st != TLS_ERROR)
            fail_msg("case %s: status %d, want TLS_ERROR", cases[i].name, st);
        if (strstr(tls_last_error(srv.t), cases[i].want) == NULL)
            fail_msg("case %s: err \"%s\", want \"%s\"", cases[i].name, tls_last_error(srv.t),
                     cases[i].want);
        assert_error_latched(srv.t, cases[i].want);
        /*
         * The failing side queued an alert for its peer. TLS 1.3 encrypts it, so its record
         * shows the outer type application_data (23), not alert (21) (RFC 8446 5.2).
         */
        assert_true(tls_pending_ciphertext(srv.t) >= 7);
        len = tls_take_ciphertext(srv.t, rec, sizeof(rec));
        assert_int_equal(rec[0], 0x17);
        assert_int_equal(tls_feed_ciphertext(cli.t, rec, len), 0);
        assert_int_equal(tls_read_plaintext(cli.t, buf, sizeof(buf), &n), TLS_ERROR);
        assert_contains(tls_last_error(cli.t), "alert");

        side_done(&srv);
        side_done(&cli);
        tls_ctx_unref(&sctx);
        tls_ctx_unref(&cctx);
    }
}

/* --- closing ------------------------------------------------------------------------------------
 */

static void test_shutdown(void **state)
{
    static const char bye[] = "221 2.0.0 Bye\r\n";
    const struct {
        const char *name;
        bool server_closes; /* else the client sends close_notify first */
        enum tls_version max_version;
    } cases[] = {
        {"server first tls13", true, TLS_VERSION_1_3},
        {"client first tls13", false, TLS_VERSION_1_3},
        {"server first tls12", true, TLS_VERSION_1_2},
        {"client first tls12", false, TLS_VERSION_1_2},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[TLS_ERR_MAX_BYTES] = "";
        struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
        struct tls_ctx *cctx = client_ctx();
        struct side srv, cli;
        struct side *closer, *other;

        assert_int_equal(tls_ctx_limit_version(cctx, cases[i].max_version, err, sizeof(err)), 0);
        open_pair(&srv, &cli, sctx, cctx, HOST_A, 4096);
        pump(&srv, &cli, SIZE_MAX);
        assert_both_done(&srv, &cli,
                         cases[i].max_version == TLS_VERSION_1_2 ? "TLSv1.2" : "TLSv1.3");
        closer = cases[i].server_closes ? &srv : &cli;
        other = cases[i].server_closes ? &cli : &srv;

        /* Data written before the close_notify still arrives, and arrives first. */
        write_all(closer, bye, strlen(bye));
        assert_int_equal(tls_shutdown(closer->t), 0);
        assert_int_equal(tls_shutdown(closer->t), 0); /* idempotent */
        assert_int_equal(tls_write_plaintext(closer->t, "x", 1), -1);
        assert_contains(tls_last_error(closer->t), "after close");
        pump(&srv, &cli, SIZE_MAX);

        if (other->recv_len != strlen(bye) || memcmp(other->recv, bye, strlen(bye)) != 0)
            fail_msg("case %s: data before close_notify lost", cases[i].name);
        if (other->last != TLS_CLOSED)
            fail_msg("case %s: receiver status %d, want TLS_CLOSED", cases[i].name, other->last);
        /* The receiver answered with its own close_notify automatically. */
        if (closer->last != TLS_CLOSED)
            fail_msg("case %s: closer status %d, want TLS_CLOSED", cases[i].name, closer->last);
        assert_int_equal(tls_write_plaintext(other->t, "x", 1), -1);
        side_read(other);
        assert_int_equal(other->last, TLS_CLOSED); /* latched */
        assert_int_equal(ERR_peek_error(), 0);

        side_done(&srv);
        side_done(&cli);
        tls_ctx_unref(&sctx);
        tls_ctx_unref(&cctx);
    }
}

static void test_shutdown_before_handshake(void **state)
{
    struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
    struct tls_ctx *cctx = client_ctx();
    struct side srv, cli;

    (void)state;
    open_pair(&srv, &cli, sctx, cctx, HOST_A, 4096);
    write_all(&srv, "held", 4);
    assert_int_equal(tls_shutdown(srv.t), 0);
    assert_int_equal(tls_pending_ciphertext(srv.t), 0); /* nothing to close politely */
    assert_int_equal(tls_write_plaintext(srv.t, "x", 1), -1);
    pump(&srv, &cli, SIZE_MAX);
    assert_int_equal(cli.recv_len, 0); /* the held write was dropped, not sent */
    side_done(&srv);
    side_done(&cli);
    tls_ctx_unref(&sctx);
    tls_ctx_unref(&cctx);
}

/* --- reload
 * --------------------------------------------------------------------------------------- */

static void test_reload_keeps_old_ctx_alive(void **state)
{
    static const char before[] = "before reload\r\n";
    static const char after[] = "after reload\r\n";
    struct tls_ctx *live = server_ctx(fx.cert_a, fx.key_a); /* what serve.c would hold */
    struct tls_ctx *cctx = client_ctx();
    struct side old_srv, old_cli, new_srv, new_cli;

    (void)state;
    open_pair(&old_srv, &old_cli, live, cctx, HOST_A, 4096);
    pump(&old_srv, &old_cli, SIZE_MAX);
    assert_both_done(&old_srv, &old_cli, "TLSv1.3");
    write_all(&old_cli, before, strlen(before));
    pump(&old_srv, &old_cli, SIZE_MAX);

    /* SIGHUP: build the new context, then drop the server's reference to the old one. */
    struct tls_ctx *old = live;
    live = server_ctx(fx.cert_b, fx.key_b);
    tls_ctx_unref(&old);
    assert_null(old);

    open_pair(&new_srv, &new_cli, live, cctx, HOST_B, 4096);
    pump(&new_srv, &new_cli, SIZE_MAX);
    assert_both_done(&new_srv, &new_cli, "TLSv1.3");

    /* The old connection still works on a context nobody but it references. */
    write_all(&old_cli, after, strlen(after));
    write_all(&old_srv, after, strlen(after));
    pump(&old_srv, &old_cli, SIZE_MAX);
    assert_int_equal(old_srv.recv_len, strlen(before) + strlen(after));
    assert_memory_equal(old_srv.recv + strlen(before), after, strlen(after));
    assert_int_equal(old_cli.recv_len, strlen(after));
    assert_memory_equal(old_cli.recv, after, strlen(after));
    exchange_lines(&new_srv, &new_cli, SIZE_MAX);

    side_done(&old_srv); /* frees the old context; ASan checks nothing touches it after */
    side_done(&old_cli);
    exchange_lines(&new_srv, &new_cli, 1); /* unaffected */
    side_done(&new_srv);
    side_done(&new_cli);
    tls_ctx_unref(&live);
    tls_ctx_unref(&cctx);
}

/* --- SNI
 * -------------------------------------------------------------------------------------------- */

static void test_sni(void **state)
{
    const struct {
        const char *sni;
        const char *look_for;
        bool want_present;
    } cases[] = {
        {"mx1.example.test", "mx1.example.test", true},
        {"192.0.2.7", "192.0.2.7", false}, /* RFC 6066: no IP literals */
        {"2001:db8::25", "2001:db8::25", false},
        {NULL, "example.test", false},
    };
    struct tls_ctx *cctx = client_ctx();
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[TLS_ERR_MAX_BYTES] = "";
        struct tls_conn *t = tls_conn_new_client(cctx, cases[i].sni, err, sizeof(err));
        unsigned char hello[4096];
        size_t n;

        assert_non_null(t);
        n = tls_take_ciphertext(t, hello, sizeof(hello));
        assert_true(n > 5 && n < sizeof(hello));
        assert_int_equal(hello[0], 0x16); /* a handshake record: the ClientHello */
        if (contains(hello, n, cases[i].look_for) != cases[i].want_present)
            fail_msg("sni %s: present=%d, want %d", cases[i].sni ? cases[i].sni : "(null)",
                     !cases[i].want_present, cases[i].want_present);
        tls_conn_free(&t);
    }
    tls_ctx_unref(&cctx);
}

/* --- memory
 * --------------------------------------------------------------------------------------- */

static void test_idle_memory(void **state)
{
    const enum tls_version versions[] = {TLS_VERSION_1_3, TLS_VERSION_1_2};
    size_t v;

    (void)state;
    if (!hooks_installed)
        fail_msg("allocation hooks were not installed; cannot measure");
    for (v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
        char err[TLS_ERR_MAX_BYTES] = "";
        struct tls_ctx *sctx = server_ctx(fx.cert_a, fx.key_a);
        struct tls_ctx *cctx = client_ctx();
        unsigned char *big = malloc(64 * 1024);
        struct side srv, cli;
        long long base_srv, base_cli, idle_srv, idle_cli;

        assert_non_null(big);
        fill_pattern(big, 64 * 1024, 7);
        assert_int_equal(tls_ctx_limit_version(cctx, versions[v], err, sizeof(err)), 0);
        base_srv = live_bytes[TAG_SERVER];
        base_cli = live_bytes[TAG_CLIENT];
        open_pair(&srv, &cli, sctx, cctx, HOST_A, 128 * 1024);
        pump(&srv, &cli, SIZE_MAX);
        assert_both_done(&srv, &cli, versions[v] == TLS_VERSION_1_2 ? "TLSv1.2" : "TLSv1.3");
        /* A burst of traffic first, so grown buffers would show if they were kept. */
        write_all(&srv, big, 64 * 1024);
        write_all(&cli, big, 64 * 1024);
        pump(&srv, &cli, 3000);
        assert_int_equal(srv.recv_len, 64 * 1024);

        idle_srv = live_bytes[TAG_SERVER] - base_srv;
        idle_cli = live_bytes[TAG_CLIENT] - base_cli;
        print_message("idle %s: server conn %lld bytes, client conn %lld bytes\n",
                      versions[v] == TLS_VERSION_1_2 ? "TLSv1.2" : "TLSv1.3", idle_srv, idle_cli);
        assert_true(idle_srv > 0); /* the hooks really saw the connection */
        if (idle_srv >= IDLE_EXPECTED_MAX_BYTES || idle_cli >= IDLE_EXPECTED_MAX_BYTES)
            fail_msg("idle connection too big: server %lld, client %lld, limit %d (target %d)",
                     idle_srv, idle_cli, IDLE_EXPECTED_MAX_BYTES, IDLE_MAX_BYTES);

        side_done(&srv);
        side_done(&cli);
        /* Freeing a connection returns everything it took (the context is counted elsewhere). */
        assert_int_equal(live_bytes[TAG_SERVER], base_srv);
        assert_int_equal(live_bytes[TAG_CLIENT], base_cli);
        tls_ctx_unref(&sctx);
        tls_ctx_unref(&cctx);
        free(big);
    }
}

int main(void)
{
    /* Must come before anything makes OpenSSL allocate. */
    hooks_installed = CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) == 1;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selfsigned_files),
        cmocka_unit_test(test_selfsigned_refusals),
        cmocka_unit_test(test_selfsigned_overwrite),
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_conn_wrong_ctx_kind),
        cmocka_unit_test(test_handshake_versions),
        cmocka_unit_test(test_refused_clients),
        cmocka_unit_test(test_renegotiation_refused),
        cmocka_unit_test(test_key_update),
        cmocka_unit_test(test_one_mib_both_ways),
        cmocka_unit_test(test_write_before_handshake),
        cmocka_unit_test(test_garbage_to_server),
        cmocka_unit_test(test_random_bytes_to_server),
        cmocka_unit_test(test_corrupt_record),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_shutdown_before_handshake),
        cmocka_unit_test(test_reload_keeps_old_ctx_alive),
        cmocka_unit_test(test_sni),
        cmocka_unit_test(test_idle_memory),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
