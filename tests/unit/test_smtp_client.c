/*
 * test_smtp_client.c - the pure pieces of the outbound SMTP client: multi-line reply parsing
 * (RFC 5321 4.2), enhanced status codes (RFC 3463) and EHLO keywords. The transaction itself runs
 * against a loopback sink in tests/e2e/test_outbound.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/smtp_client.h"

struct reply_case {
    const char *name;
    const char *lines[6]; /* NULL-terminated */
    int want_last;        /* status of the last line fed */
    int want_code;
    size_t want_lines;
    const char *want_text;
};

static const struct reply_case reply_cases[] = {
    {"single", {"250 ok", NULL}, SMTP_REPLY_DONE, 250, 1, "250 ok"},
    {"code only", {"354", NULL}, SMTP_REPLY_DONE, 354, 1, "354"},
    {"multi",
     {"250-mx.test", "250-PIPELINING", "250 SIZE 100", NULL},
     SMTP_REPLY_DONE,
     250,
     3,
     "250-mx.test\n250-PIPELINING\n250 SIZE 100"},
    {"continuation", {"451-wait", NULL}, SMTP_REPLY_MORE, 451, 1, "451-wait"},
    {"first code wins", {"550-a", "551 b", NULL}, SMTP_REPLY_DONE, 550, 2, "550-a\n551 b"},
    {"bad letters", {"OK fine", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
    {"bad separator", {"250x", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
    {"bad class", {"650 no", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
    {"too short", {"25", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
    {"empty", {"", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
};

static void test_reply_feed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
        const struct reply_case *c = &reply_cases[i];
        struct smtp_reply r;
        smtp_reply_reset(&r);
        int st = SMTP_REPLY_BAD;
        for (size_t k = 0; c->lines[k] != NULL; k++)
            st = smtp_reply_feed(&r, c->lines[k], strlen(c->lines[k]));
        if (st != c->want_last || r.code != c->want_code || r.lines != c->want_lines ||
            strcmp(r.text, c->want_text) != 0)
            fail_msg("%s: got status %d code %d lines %zu text \"%s\"", c->name, st, r.code,
                     r.lines, r.text);
    }
}

/* A reply longer than the buffer keeps its code and is cut, NUL-terminated. */
static void test_reply_long_is_cut(void **state)
{
    (void)state;
    struct smtp_reply r;
    smtp_reply_reset(&r);
    char line[500];
    memset(line, 'x', sizeof(line));
    memcpy(line, "250-", 4);
    for (int i = 0; i < 10; i++)
        assert_int_equal(smtp_reply_feed(&r, line, sizeof(line)), SMTP_REPLY_MORE);
    assert_int_equal(smtp_reply_feed(&r, "250 end", 7), SMTP_REPLY_DONE);
    assert_int_equal(r.code, 250);
    assert_int_equal(r.lines, 11);
    assert_int_equal(r.len, sizeof(r.text) - 1);
    assert_int_equal(strlen(r.text), sizeof(r.text) - 1);
}

struct enhanced_case {
    int code;
    const char *text;
    const char *want;
};

static const struct enhanced_case enhanced_cases[] = {
    {550, "550 5.1.1 no such user", "5.1.1"},
    {451, "451 4.3.0 try later", "4.3.0"},
    {250, "250 2.0.0 Ok", "2.0.0"},
    {550, "550 no such user", "5.0.0"},
    {451, "451 try later", "4.0.0"},
    {250, "250 ok", "2.0.0"},
    {354, "354 go ahead", "2.0.0"},
    {550, "550 4.1.1 class mismatch", "5.0.0"},
    {552, "552 5.3.4", "5.3.4"},
    {550, "550-5.7.1 first line\n550 5.7.1 second", "5.7.1"},
    {550, "550 5.1.10x", "5.0.0"},
    {553, "553 5.123.456 long parts", "5.123.456"},
    {0, "our own text", "4.0.0"},
};

static void test_reply_enhanced(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(enhanced_cases) / sizeof(enhanced_cases[0]); i++) {
        const struct enhanced_case *c = &enhanced_cases[i];
        char out[DSN_STATUS_BYTES];
        smtp_reply_enhanced(c->code, c->text, out);
        if (strcmp(out, c->want) != 0)
            fail_msg("%d \"%s\": got %s, want %s", c->code, c->text, out, c->want);
    }
}

struct ehlo_case {
    const char *line;
    bool pipelining, starttls, eightbitmime, size;
    uint64_t size_max;
};

static const struct ehlo_case ehlo_cases[] = {
    {"PIPELINING", true, false, false, false, 0},
    {"pipelining", true, false, false, false, 0},
    {"STARTTLS", false, true, false, false, 0},
    {"8BITMIME", false, false, true, false, 0},
    {"SIZE 35882577", false, false, false, true, 35882577},
    {"SIZE", false, false, false, true, 0},
    {"SIZE abc", false, false, false, true, 0},
    {"SIZE 99999999999999999999999", false, false, false, true, 0},
    {"PIPELININGX", false, false, false, false, 0},
    {"STARTTLSv2", false, false, false, false, 0},
    {"AUTH PLAIN LOGIN", false, false, false, false, 0},
    {"", false, false, false, false, 0},
};

static void test_ehlo_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ehlo_cases) / sizeof(ehlo_cases[0]); i++) {
        const struct ehlo_case *c = &ehlo_cases[i];
        struct smtp_ehlo_caps caps = {0};
        smtp_ehlo_parse_line(&caps, c->line, strlen(c->line));
        if (caps.pipelining != c->pipelining || caps.starttls != c->starttls ||
            caps.eightbitmime != c->eightbitmime || caps.size != c->size ||
            caps.size_max_bytes != c->size_max)
            fail_msg("\"%s\": got p=%d t=%d 8=%d s=%d max=%llu", c->line, caps.pipelining,
                     caps.starttls, caps.eightbitmime, caps.size,
                     (unsigned long long)caps.size_max_bytes);
    }
}

/* Keywords accumulate over the lines of one reply. */
static void test_ehlo_accumulates(void **state)
{
    (void)state;
    static const char *const lines[] = {"PIPELINING", "SIZE 1000", "ENHANCEDSTATUSCODES",
                                        "8BITMIME", "STARTTLS"};
    struct smtp_ehlo_caps caps = {0};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        smtp_ehlo_parse_line(&caps, lines[i], strlen(lines[i]));
    assert_true(caps.pipelining);
    assert_true(caps.starttls);
    assert_true(caps.eightbitmime);
    assert_true(caps.size);
    assert_int_equal(caps.size_max_bytes, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_feed),       cmocka_unit_test(test_reply_long_is_cut),
        cmocka_unit_test(test_reply_enhanced),   cmocka_unit_test(test_ehlo_parse),
        cmocka_unit_test(test_ehlo_accumulates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
