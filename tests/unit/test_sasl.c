/*
 * test_sasl.c - common/pure/sasl.c: SASL PLAIN and LOGIN decoding tables (valid messages, authzid
 * rules, missing NULs, empty and over-long parts, strict base64, "=" and "*").
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

#include <sodium.h>

#include "common/pure/sasl.h"

static char *b64(const void *bin, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(cap);
    assert_non_null(out);
    sodium_bin2base64(out, cap, bin, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

/* Builds a string of n copies of c. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

struct plain_case {
    const char *name;
    const char *zid; /* authzid, authcid and passwd; NULL parts are left out with their NUL */
    size_t zid_len;
    const char *cid;
    size_t cid_len;
    const char *pw;
    size_t pw_len;
    enum sasl_status want;
};

/* Assembles zid NUL cid NUL pw (parts given as NULL are omitted, with their separator). */
static size_t plain_raw(const struct plain_case *c, char *out)
{
    size_t n = 0;
    if (c->zid != NULL) {
        memcpy(out + n, c->zid, c->zid_len);
        n += c->zid_len;
        out[n++] = '\0';
    }
    if (c->cid != NULL) {
        memcpy(out + n, c->cid, c->cid_len);
        n += c->cid_len;
        out[n++] = '\0';
    }
    if (c->pw != NULL) {
        memcpy(out + n, c->pw, c->pw_len);
        n += c->pw_len;
    }
    return n;
}

static void check_done(const struct sasl_step *st, const char *user, size_t ulen, const char *pw,
                       size_t pwlen)
{
    assert_int_equal(st->status, SASL_DONE);
    assert_int_equal(st->user_len, ulen);
    assert_memory_equal(st->user, user, ulen);
    assert_int_equal(st->user[ulen], '\0');
    assert_int_equal(st->password_len, pwlen);
    assert_memory_equal(st->password, pw, pwlen);
}

static void test_sasl_plain_messages(void **state)
{
    (void)state;
    char *u255 = repeat('u', 255), *u256 = repeat('u', 256);
    char *p1024 = repeat('p', PASSWORD_MAX_BYTES), *p1025 = repeat('p', PASSWORD_MAX_BYTES + 1);
    const struct plain_case cases[] = {
        {"no authzid", "", 0, "alice", 5, "pw", 2, SASL_DONE},
        {"authzid = authcid", "alice", 5, "alice", 5, "pw", 2, SASL_DONE},
        {"authzid other case", "ALICE@X.TEST", 12, "alice@x.test", 12, "pw", 2, SASL_DONE},
        {"authzid other user", "bob", 3, "alice", 5, "pw", 2, SASL_AUTHZID_REFUSED},
        {"authzid prefix", "alic", 4, "alice", 5, "pw", 2, SASL_AUTHZID_REFUSED},
        {"one NUL only", NULL, 0, "alice", 5, "pw", 2, SASL_MALFORMED},
        {"no NUL", NULL, 0, NULL, 0, "alicepw", 7, SASL_MALFORMED},
        {"empty authcid", "", 0, "", 0, "pw", 2, SASL_MALFORMED},
        {"empty passwd", "", 0, "alice", 5, "", 0, SASL_MALFORMED},
        {"NUL in passwd", "", 0, "alice", 5, "p\0w", 3, SASL_MALFORMED},
        {"passwd with spaces, CR", "", 0, "alice", 5, "a b\rc", 5, SASL_DONE},
        {"authcid 255", "", 0, u255, 255, "pw", 2, SASL_DONE},
        {"authcid 256", "", 0, u256, 256, "pw", 2, SASL_MALFORMED},
        {"authzid 256", u256, 256, u255, 255, "pw", 2, SASL_MALFORMED},
        {"passwd max", u255, 255, u255, 255, p1024, PASSWORD_MAX_BYTES, SASL_DONE},
        {"passwd over max", "", 0, "alice", 5, p1025, PASSWORD_MAX_BYTES + 1, SASL_MALFORMED},
    };
    static char raw[4096];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct plain_case *c = &cases[i];
        size_t n = plain_raw(c, raw);
        char *enc = b64(raw, n);
        for (int as_initial = 0; as_initial < 2; as_initial++) {
            struct sasl s;
            struct sasl_step st;
            enum sasl_status got;
            if (as_initial) {
                got = sasl_start(&s, "PLAIN", 5, enc, strlen(enc), &st);
            } else {
                assert_int_equal(sasl_start(&s, "PLAIN", 5, NULL, 0, &st), SASL_CHALLENGE);
                assert_string_equal(st.challenge, "");
                assert_true(sasl_is_active(&s));
                got = sasl_step(&s, enc, strlen(enc), &st);
            }
            if (got != c->want || st.status != c->want)
                fail_msg("%s (initial=%d): got %s, want %s", c->name, as_initial,
                         sasl_status_name(got), sasl_status_name(c->want));
            assert_false(sasl_is_active(&s));
            if (c->want == SASL_DONE) {
                check_done(&st, c->cid, c->cid_len, c->pw, c->pw_len);
            } else {
                assert_int_equal(s.password_len, 0);
                /* The identity refused stays in the step for the log, and no password. */
                if (c->want == SASL_AUTHZID_REFUSED)
                    assert_string_equal(st.user_given, c->cid);
                assert_null(strstr(st.user_given, "pw"));
            }
            sasl_reset(&s);
        }
        free(enc);
    }
    free(u255);
    free(u256);
    free(p1024);
    free(p1025);
}

struct line_case {
    const char *name;
    const char *line;
    bool initial; /* as the initial response (else after the empty challenge) */
    enum sasl_status want;
};

static void test_sasl_plain_encoding(void **state)
{
    (void)state;
    /* "\0a\0pw" is AGEAcHc= ; "\0alice\0pw" is AGFsaWNlAHB3 */
    const struct line_case cases[] = {
        {"valid, padded", "AGEAcHc=", true, SASL_DONE},
        {"valid, no padding needed", "AGFsaWNlAHB3", false, SASL_DONE},
        {"= means empty: invalid for PLAIN", "=", true, SASL_MALFORMED},
        {"empty line", "", false, SASL_MALFORMED},
        {"* cancels a response", "*", false, SASL_CANCELLED},
        {"* as initial response is not base64", "*", true, SASL_MALFORMED},
        {"missing padding", "AGEAcHc", true, SASL_MALFORMED},
        {"extra padding", "AGEAcHc==", true, SASL_MALFORMED},
        {"padding in the middle", "AG=AcHc=", true, SASL_MALFORMED},
        {"non-canonical last bits", "AGEAcHd=", true, SASL_MALFORMED},
        {"leading space", " AGFsaWNlAHB3", true, SASL_MALFORMED},
        {"inner space", "AGFsaWNl AHB3", false, SASL_MALFORMED},
        {"trailing CR", "AGFsaWNlAHB3\r", false, SASL_MALFORMED},
        {"trailing LF", "AGFsaWNlAHB3\n", true, SASL_MALFORMED},
        {"url-safe alphabet", "AGEAc-_=", true, SASL_MALFORMED},
        {"bad character", "AGEA!Hc=", true, SASL_MALFORMED},
        {"one character", "A", false, SASL_MALFORMED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct line_case *c = &cases[i];
        struct sasl s;
        struct sasl_step st;
        enum sasl_status got;
        if (c->initial) {
            got = sasl_start(&s, "PLAIN", 5, c->line, strlen(c->line), &st);
        } else {
            assert_int_equal(sasl_start(&s, "PLAIN", 5, NULL, 0, &st), SASL_CHALLENGE);
            got = sasl_step(&s, c->line, strlen(c->line), &st);
        }
        if (got != c->want)
            fail_msg("%s: got %s, want %s", c->name, sasl_status_name(got),
                     sasl_status_name(c->want));
        assert_false(sasl_is_active(&s));
        sasl_reset(&s);
    }

    /* Over SASL_LINE_MAX_BYTES: refused whatever it holds. */
    char *big = repeat('A', SASL_LINE_MAX_BYTES + 4);
    struct sasl s;
    struct sasl_step st;
    assert_int_equal(sasl_start(&s, "PLAIN", 5, big, strlen(big), &st), SASL_MALFORMED);
    free(big);

    /* The length is honoured: what follows it is never read. */
    const char *padded = "AGEAcHc=GARBAGE";
    assert_int_equal(sasl_start(&s, "PLAIN", 5, padded, 8, &st), SASL_DONE);
    check_done(&st, "a", 1, "pw", 2);
    sasl_reset(&s);
}

static void test_sasl_login(void **state)
{
    (void)state;
    struct sasl s;
    struct sasl_step st;

    /* Without an initial response: Username:, then Password:. */
    assert_int_equal(sasl_start(&s, "LOGIN", 5, NULL, 0, &st), SASL_CHALLENGE);
    assert_string_equal(st.challenge, "VXNlcm5hbWU6");
    assert_true(sasl_is_active(&s));
    char *u = b64("alice@example.test", 18);
    assert_int_equal(sasl_step(&s, u, strlen(u), &st), SASL_CHALLENGE);
    assert_string_equal(st.challenge, "UGFzc3dvcmQ6");
    char *p = b64("s3cret", 6);
    assert_int_equal(sasl_step(&s, p, strlen(p), &st), SASL_DONE);
    check_done(&st, "alice@example.test", 18, "s3cret", 6);
    assert_false(sasl_is_active(&s));
    /* Finished: another line is misuse. */
    assert_int_equal(sasl_step(&s, p, strlen(p), &st), SASL_MALFORMED);

    /* The initial response carries the user name. */
    assert_int_equal(sasl_start(&s, "login", 5, u, strlen(u), &st), SASL_CHALLENGE);
    assert_string_equal(st.challenge, "UGFzc3dvcmQ6");
    assert_int_equal(sasl_step(&s, p, strlen(p), &st), SASL_DONE);
    check_done(&st, "alice@example.test", 18, "s3cret", 6);

    /* "*" cancels at either prompt, and what was collected is wiped. */
    assert_int_equal(sasl_start(&s, "LOGIN", 5, NULL, 0, &st), SASL_CHALLENGE);
    assert_int_equal(sasl_step(&s, "*", 1, &st), SASL_CANCELLED);
    assert_int_equal(sasl_start(&s, "LOGIN", 5, u, strlen(u), &st), SASL_CHALLENGE);
    assert_int_equal(sasl_step(&s, "*", 1, &st), SASL_CANCELLED);
    assert_int_equal(s.user_len, 0);
    assert_int_equal(s.user[0], '\0');
    /* The step keeps a copy of the user name for the log. */
    assert_string_equal(st.user_given, "alice@example.test");
    assert_int_equal(sasl_start(&s, "LOGIN", 5, NULL, 0, &st), SASL_CHALLENGE);
    assert_int_equal(sasl_step(&s, "*", 1, &st), SASL_CANCELLED);
    assert_string_equal(st.user_given, "");

    struct {
        const char *name;
        const void *user;
        size_t ulen;
        const void *pw;
        size_t pwlen;
        enum sasl_status want;
    } cases[] = {
        {"empty user", "", 0, "pw", 2, SASL_MALFORMED},
        {"NUL in user", "a\0b", 3, "pw", 2, SASL_MALFORMED},
        {"empty password", "alice", 5, "", 0, SASL_MALFORMED},
        {"NUL in password", "alice", 5, "p\0w", 3, SASL_MALFORMED},
        {"user 255", NULL, 255, "pw", 2, SASL_DONE},
        {"user 256", NULL, 256, "pw", 2, SASL_MALFORMED},
        {"password max", "alice", 5, NULL, PASSWORD_MAX_BYTES, SASL_DONE},
        {"password over max", "alice", 5, NULL, PASSWORD_MAX_BYTES + 1, SASL_MALFORMED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *ubuf = cases[i].user == NULL ? repeat('u', cases[i].ulen) : NULL;
        char *pbuf = cases[i].pw == NULL ? repeat('p', cases[i].pwlen) : NULL;
        const void *uv = ubuf != NULL ? ubuf : cases[i].user;
        const void *pv = pbuf != NULL ? pbuf : cases[i].pw;
        char *ue = b64(uv, cases[i].ulen), *pe = b64(pv, cases[i].pwlen);
        enum sasl_status got = sasl_start(&s, "LOGIN", 5, NULL, 0, &st);
        assert_int_equal(got, SASL_CHALLENGE);
        got = sasl_step(&s, ue, strlen(ue), &st);
        if (got == SASL_CHALLENGE)
            got = sasl_step(&s, pe, strlen(pe), &st);
        if (got != cases[i].want)
            fail_msg("%s: got %s, want %s", cases[i].name, sasl_status_name(got),
                     sasl_status_name(cases[i].want));
        if (got == SASL_DONE)
            check_done(&st, uv, cases[i].ulen, pv, cases[i].pwlen);
        /* As an initial response too, for the user name. */
        got = sasl_start(&s, "LOGIN", 5, ue, strlen(ue), &st);
        assert_int_equal(got, cases[i].ulen > 0 && cases[i].ulen <= SASL_USER_MAX_BYTES &&
                                      memchr(uv, '\0', cases[i].ulen) == NULL
                                  ? SASL_CHALLENGE
                                  : SASL_MALFORMED);
        free(ue);
        free(pe);
        free(ubuf);
        free(pbuf);
    }

    /* "=" as the initial response is an empty user name. */
    assert_int_equal(sasl_start(&s, "LOGIN", 5, "=", 1, &st), SASL_MALFORMED);
    /* Bad base64 at either prompt. */
    assert_int_equal(sasl_start(&s, "LOGIN", 5, NULL, 0, &st), SASL_CHALLENGE);
    assert_int_equal(sasl_step(&s, "YWxpY2U", 7, &st), SASL_MALFORMED);
    assert_int_equal(sasl_start(&s, "LOGIN", 5, u, strlen(u), &st), SASL_CHALLENGE);
    assert_int_equal(sasl_step(&s, "czNjcmV0 ", 9, &st), SASL_MALFORMED);
    free(u);
    free(p);
    sasl_reset(&s);
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

static void test_sasl_mechanisms_and_wiping(void **state)
{
    (void)state;
    struct {
        const char *mech;
        size_t len;
        enum sasl_status want;
    } cases[] = {
        {"PLAIN", 5, SASL_CHALLENGE},          {"plain", 5, SASL_CHALLENGE},
        {"PlAiN", 5, SASL_CHALLENGE},          {"LOGIN", 5, SASL_CHALLENGE},
        {"Login", 5, SASL_CHALLENGE},          {"PLAINX", 5, SASL_CHALLENGE}, /* length honoured */
        {"PLAINX", 6, SASL_UNSUPPORTED_MECH},  {"PLAI", 4, SASL_UNSUPPORTED_MECH},
        {"", 0, SASL_UNSUPPORTED_MECH},        {"CRAM-MD5", 8, SASL_UNSUPPORTED_MECH},
        {"XOAUTH2", 7, SASL_UNSUPPORTED_MECH}, {"PLAIN\0", 6, SASL_UNSUPPORTED_MECH},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sasl s;
        struct sasl_step st;
        enum sasl_status got = sasl_start(&s, cases[i].mech, cases[i].len, NULL, 0, &st);
        if (got != cases[i].want)
            fail_msg("mech %s/%zu: got %s", cases[i].mech, cases[i].len, sasl_status_name(got));
        assert_int_equal(sasl_is_active(&s), got == SASL_CHALLENGE);
    }
    assert_string_equal(SASL_MECHANISMS, "PLAIN LOGIN");

    /* A step without an exchange is misuse, not a crash. */
    struct sasl s;
    struct sasl_step st;
    memset(&s, 0, sizeof(s));
    assert_int_equal(sasl_step(&s, "AGEAcHc=", 8, &st), SASL_MALFORMED);

    /* DONE keeps the password until reset; reset wipes every byte. */
    assert_int_equal(sasl_start(&s, "PLAIN", 5, "AGEAcHc=", 8, &st), SASL_DONE);
    assert_string_equal(s.password, "pw");
    sasl_reset(&s);
    assert_true(all_zero(&s, sizeof(s)));
    assert_false(sasl_is_active(&s));

    /* A failure after the user name was taken wipes it too. */
    char *u = b64("alice", 5);
    assert_int_equal(sasl_start(&s, "LOGIN", 5, u, strlen(u), &st), SASL_CHALLENGE);
    assert_string_equal(s.user, "alice");
    assert_int_equal(sasl_step(&s, "!", 1, &st), SASL_MALFORMED);
    assert_true(all_zero(s.user, sizeof(s.user)));
    free(u);

    assert_string_equal(sasl_status_name(SASL_CANCELLED), "cancelled");
    assert_string_equal(sasl_status_name(SASL_UNSUPPORTED_MECH), "unsupported-mechanism");
}

/* sasl_free: a heap exchange in the middle of a LOGIN is freed and its pointer cleared (the
 * sanitizer build sees a leak or a double free); NULL is nothing. */
static void test_sasl_free(void **state)
{
    (void)state;
    struct sasl *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    struct sasl_step st;
    assert_int_equal(sasl_start(s, "LOGIN", 5, NULL, 0, &st), SASL_CHALLENGE);
    assert_true(sasl_is_active(s));
    sasl_free(&s);
    assert_null(s);
    assert_false(sasl_is_active(s));
    sasl_free(&s);
    assert_null(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sasl_free),
        cmocka_unit_test(test_sasl_plain_messages),
        cmocka_unit_test(test_sasl_plain_encoding),
        cmocka_unit_test(test_sasl_login),
        cmocka_unit_test(test_sasl_mechanisms_and_wiping),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
