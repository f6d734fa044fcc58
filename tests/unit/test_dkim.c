/*
 * test_dkim.c - unit tests for common/pure/dkim.c and dkim_key.c: relaxed canonicalisation
 * against the worked example of RFC 6376 3.4.5, the body hash fed in every cut, and the signed
 * message of RFC 8463 appendix A: its body hash, its two signatures verifying with the published
 * keys, and our signer reproducing both b= values from the published private keys (ed25519 and
 * RSASSA-PKCS1-v1_5 are deterministic). Then our own signatures: folded at 78 columns, h= as
 * chosen, verifying with the public key keygen printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "common/pure/dkim.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define S(lit)       lit, sizeof(lit) - 1

/* ---- RFC 8463 appendix A, transcribed ---- */

static const char rfc8463_ed_seed[] = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
static const char rfc8463_ed_public[] = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
static const char rfc8463_rsa_private[] =
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIICXQIBAAKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi\n"
    "Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM\n"
    "KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB\n"
    "AoGAH0cxOhFZDgzXWhDhnAJDw5s4roOXN4OhjiXa8W7Y3rhX3FJqmJSPuC8N9vQm\n"
    "6SVbaLAE4SG5mLMueHlh4KXffEpuLEiNp9Ss3O4YfLiQpbRqE7Tm5SxKjvvQoZZe\n"
    "zHorimOaChRL2it47iuWxzxSiRMv4c+j70GiWdxXnxe4UoECQQDzJB/0U58W7RZy\n"
    "6enGVj2kWF732CoWFZWzi1FicudrBFoy63QwcowpoCazKtvZGMNlPWnC7x/6o8Gc\n"
    "uSe0ga2xAkEA8C7PipPm1/1fTRQvj1o/dDmZp243044ZNyxjg+/OPN0oWCbXIGxy\n"
    "WvmZbXriOWoSALJTjExEgraHEgnXssuk7QJBALl5ICsYMu6hMxO73gnfNayNgPxd\n"
    "WFV6Z7ULnKyV7HSVYF0hgYOHjeYe9gaMtiJYoo0zGN+L3AAtNP9huqkWlzECQE1a\n"
    "licIeVlo1e+qJ6Mgqr0Q7Aa7falZ448ccbSFYEPD6oFxiOl9Y9se9iYHZKKfIcst\n"
    "o7DUw1/hz2Ck4N5JrgUCQQCyKveNvjzkkd8HjYs0SwM0fPjK16//5qDZ2UiDGnOe\n"
    "uEzxBDAr518Z8VFbR41in3W4Y3yCDgQlLlcETrS+zYcL\n"
    "-----END RSA PRIVATE KEY-----\n";
static const char rfc8463_rsa_public[] =
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/"
    "J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzB"
    "fO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
static const char rfc8463_header[] =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n";
static const char rfc8463_body[] = "Hi.\r\n"
                                   "\r\n"
                                   "We lost the game.  Are you hungry yet?\r\n"
                                   "\r\n"
                                   "Joe.\r\n";
static const char rfc8463_bh[] = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=";
static const char rfc8463_h[] =
    "from : to :\r\n subject : date : message-id : from : subject : date";
/* The signature fields with the b= value taken out, as a verifier hashes them. */
static const char rfc8463_ed_field[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=";
static const char rfc8463_ed_b[] =
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";
static const char rfc8463_rsa_field[] =
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    " date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=";
static const char rfc8463_rsa_b[] = "F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3"
                                    "DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz"
                                    "dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=";

/* ---- helpers ---- */

static size_t unbase64(const char *b64, unsigned char *out, size_t cap)
{
    size_t n = 0;
    assert_int_equal(sodium_base642bin(out, cap, b64, strlen(b64), " \t\r\n", &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    return n;
}

static void body_hash_b64(const char *body, size_t len, size_t cut, char *out, size_t cap)
{
    struct dkim_body b;
    uint8_t h[DKIM_HASH_BYTES];
    dkim_body_init(&b);
    for (size_t off = 0; off < len;) {
        size_t n = cut == 0 || len - off < cut ? len - off : cut;
        dkim_body_update(&b, body + off, n);
        off += n;
    }
    dkim_body_final(&b, h);
    sodium_bin2base64(out, cap, h, sizeof(h), sodium_base64_VARIANT_ORIGINAL);
}

static void sha256_b64(const char *s, size_t len, char *out, size_t cap)
{
    uint8_t h[DKIM_HASH_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)s, len);
    sodium_bin2base64(out, cap, h, sizeof(h), sodium_base64_VARIANT_ORIGINAL);
}

static bool verify_ed25519(const char *pk_b64, const uint8_t hash[DKIM_HASH_BYTES],
                           const char *b_b64)
{
    unsigned char pk[64], sig[128];
    assert_int_equal(unbase64(pk_b64, pk, sizeof(pk)), crypto_sign_PUBLICKEYBYTES);
    size_t n = unbase64(b_b64, sig, sizeof(sig));
    return n == crypto_sign_BYTES &&
           crypto_sign_verify_detached(sig, hash, DKIM_HASH_BYTES, pk) == 0;
}

static bool verify_rsa(const char *pk_b64, const uint8_t hash[DKIM_HASH_BYTES], const char *b_b64)
{
    unsigned char der[1024], sig[1024];
    size_t der_len = unbase64(pk_b64, der, sizeof(der));
    size_t sig_len = unbase64(b_b64, sig, sizeof(sig));
    const unsigned char *p = der;
    EVP_PKEY *key = d2i_PUBKEY(NULL, &p, (long)der_len);
    assert_non_null(key);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
    assert_non_null(ctx);
    bool ok = EVP_PKEY_verify_init(ctx) == 1 &&
              EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
              EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
              EVP_PKEY_verify(ctx, sig, sig_len, hash, DKIM_HASH_BYTES) == 1;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(key);
    return ok;
}

/* ---- RFC 6376 3.4.5 ---- */

static void test_rfc6376_header_example(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"A: X\r\n", "a:X\r\n"},
        {"B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n"},
        /* and more: case, runs, a value of white space only, a fold right after the colon */
        {"SUBJECT:\t  Is   dinner\r\n ready?  \r\n", "subject:Is dinner ready?\r\n"},
        {"X-Empty:   \r\n", "x-empty:\r\n"},
        {"To:\r\n  a@b.example\r\n", "to:a@b.example\r\n"},
    };
    char out[128];
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int n = dkim_canon_header(cases[i].in, strlen(cases[i].in), true, out, sizeof(out));
        assert_true(n >= 0);
        out[n] = '\0';
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, out, cases[i].want);
    }
    assert_int_equal(dkim_canon_header(S("no colon\r\n"), true, out, sizeof(out)),
                     DKIM_ERR_BAD_FIELD);
    assert_int_equal(dkim_canon_header(S("A: X\r\n"), true, out, 4), DKIM_ERR_BAD_ARGUMENT);
    /* Without CRLF: the signature field's form in the header hash. */
    int n = dkim_canon_header(S("A: X\r\n"), false, out, sizeof(out));
    assert_int_equal(n, 3);
    assert_memory_equal(out, "a:X", 3);
}

static void test_body_canonicalisation(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {" C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n"}, /* RFC 6376 3.4.5 */
        {"", ""},
        {"\r\n", ""},
        {"\r\n\r\n \t\r\n", ""},
        {"x", "x\r\n"},
        {"x\r\n\r\ny \r\n\r\n", "x\r\n\r\ny\r\n"},
        {"a\rb\r\n", "a\rb\r\n"},
        {"a\nb\r\n", "a\nb\r\n"},
        {"a\r", "a\r\r\n"},
        {"\xe9t\xe9  \xe9t\xe9\r\n", "\xe9t\xe9 \xe9t\xe9\r\n"},
        {"..\r\n.\r\n", "..\r\n.\r\n"},
        /* runs long enough for the bulk path, ending in white space, CR and the chunk end */
        {"0123456789abcdefghijklmnopqrstuvwxyzABCDEF \t x\r\n\r\n",
         "0123456789abcdefghijklmnopqrstuvwxyzABCDEF x\r\n"},
        {"0123456789abcdefghijklmnopqrstuvwxyzABCDEF\r\n \r\n0123456789abcdefghijklmnopqrstuvwxyz",
         "0123456789abcdefghijklmnopqrstuvwxyzABCDEF\r\n\r\n0123456789abcdefghijklmnopqrstuvwxyz\r"
         "\n"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char want[64], got[64];
        sha256_b64(cases[i].want, strlen(cases[i].want), want, sizeof(want));
        for (size_t cut = 0; cut <= strlen(cases[i].in); cut++) {
            body_hash_b64(cases[i].in, strlen(cases[i].in), cut, got, sizeof(got));
            if (strcmp(got, want) != 0)
                fail_msg("case %zu cut %zu: got %s, want %s", i, cut, got, want);
        }
    }
}

static void test_body_of_many_blank_lines_then_text(void **state)
{
    (void)state;
    /* Blank lines are counted, not kept: a million of them cost no memory, and they are
     * written once text follows. */
    struct dkim_body b;
    dkim_body_init(&b);
    for (int i = 0; i < 1000000; i++)
        dkim_body_update(&b, "  \r\n", 4);
    dkim_body_update(&b, "end\r\n", 5);
    uint8_t got[DKIM_HASH_BYTES];
    dkim_body_final(&b, got);
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    for (int i = 0; i < 1000000; i++)
        crypto_hash_sha256_update(&st, (const unsigned char *)"\r\n", 2);
    crypto_hash_sha256_update(&st, (const unsigned char *)"end\r\n", 5);
    uint8_t want[DKIM_HASH_BYTES];
    crypto_hash_sha256_final(&st, want);
    assert_memory_equal(got, want, sizeof(want));
}

/* ---- RFC 8463 appendix A ---- */

static void test_rfc8463_body_hash(void **state)
{
    (void)state;
    char got[64];
    for (size_t cut = 0; cut < sizeof(rfc8463_body); cut++) {
        body_hash_b64(rfc8463_body, strlen(rfc8463_body), cut, got, sizeof(got));
        assert_string_equal(got, rfc8463_bh);
    }
}

static void test_rfc8463_signatures_verify(void **state)
{
    (void)state;
    uint8_t h[DKIM_HASH_BYTES];
    assert_int_equal(dkim_header_hash(S(rfc8463_header), rfc8463_h, S(rfc8463_ed_field), h), 0);
    assert_true(verify_ed25519(rfc8463_ed_public, h, rfc8463_ed_b));
    assert_int_equal(dkim_header_hash(S(rfc8463_header), rfc8463_h, S(rfc8463_rsa_field), h), 0);
    assert_true(verify_rsa(rfc8463_rsa_public, h, rfc8463_rsa_b));
    /* A changed header field breaks it. */
    static const char changed[] =
        "From: Joe SixPack <joe@football.example.com>\r\n"
        "To: Suzie Q <suzie@shopping.example.net>\r\n"
        "Subject: Is lunch ready?\r\n"
        "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
        "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n";
    assert_int_equal(dkim_header_hash(S(changed), rfc8463_h, S(rfc8463_rsa_field), h), 0);
    assert_false(verify_rsa(rfc8463_rsa_public, h, rfc8463_rsa_b));
}

static void test_rfc8463_signer_reproduces_b(void **state)
{
    (void)state;
    uint8_t h[DKIM_HASH_BYTES];
    char b[1024];
    struct dkim_key *k = NULL;
    assert_int_equal(dkim_key_load(DKIM_ED25519, rfc8463_ed_seed, &k), 0);
    assert_int_equal(dkim_header_hash(S(rfc8463_header), rfc8463_h, S(rfc8463_ed_field), h), 0);
    assert_int_equal(dkim_sign_hash(k, h, b, sizeof(b)), 0);
    assert_string_equal(b, rfc8463_ed_b);
    dkim_key_free(&k);
    assert_null(k);
    assert_int_equal(dkim_key_load(DKIM_RSA, rfc8463_rsa_private, &k), 0);
    assert_int_equal(dkim_header_hash(S(rfc8463_header), rfc8463_h, S(rfc8463_rsa_field), h), 0);
    assert_int_equal(dkim_sign_hash(k, h, b, sizeof(b)), 0);
    assert_string_equal(b, rfc8463_rsa_b);
    dkim_key_free(&k);
}

/* ---- our signatures ---- */

/* Takes a DKIM-Signature field apart as a verifier does: the field with the b= value removed,
 * the h= list and the b= value (white space dropped). */
static void split_signature(const char *field, char *empty_b, char *h, char *b)
{
    const char *bp = strstr(field, " b=");
    if (bp == NULL)
        bp = strstr(field, "\tb=");
    assert_non_null(bp);
    size_t n = (size_t)(bp - field) + 3;
    memcpy(empty_b, field, n);
    empty_b[n] = '\0';
    size_t k = 0;
    for (const char *p = bp + 3; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            b[k++] = *p;
    b[k] = '\0';
    const char *hp = strstr(field, "h=");
    assert_non_null(hp);
    const char *end = strchr(hp, ';');
    memcpy(h, hp + 2, (size_t)(end - hp - 2));
    h[end - hp - 2] = '\0';
}

static void check_lines(const char *field)
{
    assert_true(strncmp(field, "DKIM-Signature: v=1; a=", 23) == 0);
    size_t len = strlen(field);
    assert_true(len > 2 && strcmp(field + len - 2, "\r\n") == 0);
    for (const char *p = field; *p;) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        if ((size_t)(e - p) > DKIM_FOLD_COLUMNS)
            fail_msg("line of %zu octets: %.*s", (size_t)(e - p), (int)(e - p), p);
        p = e + 2;
        if (*p != '\0')
            assert_true(*p == '\t');
    }
}

static void sign_and_verify(enum dkim_alg alg, unsigned bits, const char *hdr, const char *want_h)
{
    char *priv = NULL, *pub = NULL, *field = NULL;
    assert_int_equal(dkim_keygen(alg, bits, &priv, &pub), 0);
    struct dkim_key *k = NULL;
    assert_int_equal(dkim_key_load(alg, priv, &k), 0);
    uint8_t bh[DKIM_HASH_BYTES], h[DKIM_HASH_BYTES];
    crypto_hash_sha256(bh, (const unsigned char *)"", 0);
    assert_int_equal(
        dkim_sign(k, "example.test", "postern20261204", 1733300000, hdr, strlen(hdr), bh, &field),
        0);
    check_lines(field);
    assert_non_null(strstr(field, alg == DKIM_RSA ? "a=rsa-sha256;" : "a=ed25519-sha256;"));
    assert_non_null(strstr(field, "c=relaxed/relaxed;"));
    assert_non_null(strstr(field, "d=example.test;"));
    assert_non_null(strstr(field, "s=postern20261204;"));
    assert_non_null(strstr(field, "t=1733300000;"));
    assert_non_null(strstr(field, "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;"));
    char empty_b[4096], hl[2048], b[2048], unfolded[2048];
    split_signature(field, empty_b, hl, b);
    size_t u = 0;
    for (const char *p = hl; *p; p++)
        if (*p != '\r' && *p != '\n' && *p != '\t' && *p != ' ')
            unfolded[u++] = *p;
    unfolded[u] = '\0';
    assert_string_equal(unfolded, want_h);
    assert_int_equal(dkim_header_hash(hdr, strlen(hdr), hl, empty_b, strlen(empty_b), h), 0);
    assert_true(alg == DKIM_RSA ? verify_rsa(pub, h, b) : verify_ed25519(pub, h, b));
    /* A From added above the signed one is taken by the over-signing entry and breaks it. */
    char added[4096];
    snprintf(added, sizeof(added), "From: mallory@evil.example\r\n%s", hdr);
    assert_int_equal(dkim_header_hash(added, strlen(added), hl, empty_b, strlen(empty_b), h), 0);
    assert_false(alg == DKIM_RSA ? verify_rsa(pub, h, b) : verify_ed25519(pub, h, b));
    free(field);
    free(priv);
    free(pub);
    dkim_key_free(&k);
}

static void test_sign_ed25519_and_rsa(void **state)
{
    (void)state;
    static const char hdr[] = "Received: from x by y; Fri, 4 Dec 2026 10:00:00 +0000\r\n"
                              "From: Alice <alice@example.test>\r\n"
                              "To: bob@remote.example,\r\n\tcarol@remote.example\r\n"
                              "To: dave@remote.example\r\n"
                              "Subject: hello  \r\n"
                              "X-Mailer: test\r\n";
    sign_and_verify(DKIM_ED25519, 0, hdr, "from:from:subject:to:to");
    sign_and_verify(DKIM_RSA, 2048, hdr, "from:from:subject:to:to");
}

static void test_choose_headers(void **state)
{
    (void)state;
    char out[2048];
    assert_int_equal(dkim_choose_headers(S("To: a@b\r\nSubject: x\r\n"), out, sizeof(out)),
                     DKIM_ERR_NO_FROM);
    int n = dkim_choose_headers(
        S("from: a@b\r\nMessage-ID: <1@b>\r\nDate: x\r\nReceived: y\r\nCc: z\r\n"), out,
        sizeof(out));
    assert_true(n > 0);
    assert_string_equal(out, "from:from:date:cc:message-id");
    char many[4096] = "From: a@b\r\n";
    for (int i = 0; i < DKIM_SIGNED_FIELDS_MAX; i++)
        strcat(many, "To: c@d\r\n");
    assert_int_equal(dkim_choose_headers(many, strlen(many), out, sizeof(out)), DKIM_ERR_TOO_MANY);
}

static void test_from_domain(void **state)
{
    (void)state;
    static const struct {
        const char *hdr;
        int rc;
        const char *domain;
    } cases[] = {
        {"From: alice@Example.TEST\r\n", 0, "example.test"},
        {"From: \"Doe, Alice\" <alice@example.test.>\r\n", 0, "example.test"},
        {"From: Alice (work, really) <alice@example.test>\r\n", 0, "example.test"},
        {"From: alice@example.test (Alice <x@evil.example>)\r\n", 0, "example.test"},
        {"FROM :\r\n Alice\r\n <alice@example.test>\r\n", 0, "example.test"},
        {"From: \"a@evil.example\"@example.test\r\n", 0, "example.test"},
        {"To: bob@example.test\r\n", DKIM_ERR_NO_FROM, NULL},
        {"From: a@example.test\r\nFrom: b@example.test\r\n", DKIM_ERR_MANY_FROM, NULL},
        {"From: a@example.test, b@example.test\r\n", DKIM_ERR_MANY_FROM, NULL},
        {"From: <a@example.test> <b@example.test>\r\n", DKIM_ERR_MANY_FROM, NULL},
        {"From: undisclosed:;\r\n", DKIM_ERR_BAD_FROM, NULL},
        {"From: alice\r\n", DKIM_ERR_BAD_FROM, NULL},
        {"From: alice@[192.0.2.1]\r\n", DKIM_ERR_BAD_FROM, NULL},
        {"From: <>\r\n", DKIM_ERR_BAD_FROM, NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char out[256] = "";
        int rc = dkim_from_domain(cases[i].hdr, strlen(cases[i].hdr), out, sizeof(out));
        if (rc != cases[i].rc)
            fail_msg("case %zu (%s): got %d, want %d", i, cases[i].hdr, rc, cases[i].rc);
        if (rc == 0)
            assert_string_equal(out, cases[i].domain);
    }
}

static void test_bottom_up_instances(void **state)
{
    (void)state;
    /* h=to:to signs the last To first (RFC 6376 5.4.2); a third listing adds nothing. */
    static const char hdr[] = "To: one\r\nFrom: f\r\nTo: two\r\n";
    uint8_t got[DKIM_HASH_BYTES], want[DKIM_HASH_BYTES];
    assert_int_equal(dkim_header_hash(S(hdr), "to:To : to", S("X: y"), got), 0);
    static const char input[] = "to:two\r\nto:one\r\nx:y";
    crypto_hash_sha256(want, (const unsigned char *)input, sizeof(input) - 1);
    assert_memory_equal(got, want, sizeof(want));
}

static void test_keys(void **state)
{
    (void)state;
    struct dkim_key *k = NULL;
    assert_int_equal(dkim_key_load(DKIM_ED25519, "not base64!", &k), DKIM_ERR_BAD_KEY);
    assert_int_equal(dkim_key_load(DKIM_ED25519, "AAAA", &k), DKIM_ERR_BAD_KEY);
    assert_int_equal(dkim_key_load(DKIM_RSA, "-----BEGIN NOTHING-----\n", &k), DKIM_ERR_BAD_KEY);
    assert_null(k);
    char *priv = NULL, *pub = NULL;
    assert_int_equal(dkim_keygen(DKIM_RSA, 512, &priv, &pub), DKIM_ERR_BAD_ARGUMENT);
    assert_null(priv);
    assert_int_equal(dkim_keygen(DKIM_ED25519, 0, &priv, &pub), 0);
    assert_int_equal(strlen(pub), 44);
    assert_int_equal(strlen(priv), 44);
    free(priv);
    free(pub);
    enum dkim_alg a;
    assert_int_equal(dkim_alg_parse("rsa", &a), 0);
    assert_int_equal(a, DKIM_RSA);
    assert_int_equal(dkim_alg_parse("RSA", &a), -1);
    assert_string_equal(dkim_alg_name(DKIM_ED25519), "ed25519");
    uint8_t bh[DKIM_HASH_BYTES] = {0};
    char *field = NULL;
    assert_int_equal(dkim_key_load(DKIM_ED25519, rfc8463_ed_seed, &k), 0);
    assert_int_equal(dkim_sign(k, "exa;mple.test", "s", 1, S("From: a@b\r\n"), bh, &field),
                     DKIM_ERR_BAD_ARGUMENT);
    assert_int_equal(dkim_sign(k, "example.test", "s\r\nX: y", 1, S("From: a@b\r\n"), bh, &field),
                     DKIM_ERR_BAD_ARGUMENT);
    assert_null(field);
    dkim_key_free(&k);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc6376_header_example),
        cmocka_unit_test(test_body_canonicalisation),
        cmocka_unit_test(test_body_of_many_blank_lines_then_text),
        cmocka_unit_test(test_rfc8463_body_hash),
        cmocka_unit_test(test_rfc8463_signatures_verify),
        cmocka_unit_test(test_rfc8463_signer_reproduces_b),
        cmocka_unit_test(test_sign_ed25519_and_rsa),
        cmocka_unit_test(test_choose_headers),
        cmocka_unit_test(test_from_domain),
        cmocka_unit_test(test_bottom_up_instances),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
