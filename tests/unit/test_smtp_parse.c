/*
 * test_smtp_parse.c - common/pure/smtp_parse.c: MAIL/RCPT arguments (keyword, the lenient space,
 * source routes, <Postmaster>, text after the path), ESMTP parameters (SIZE, BODY, AUTH, unknown,
 * repeated, malformed), HELO sanitising, the RFC 3848 with-types, the date, and the trace headers
 * byte for byte. Table-driven; every failure names its row and says "got X, want Y".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/pure/smtp_parse.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void check_int(const char *row, const char *what, long long got, long long want)
{
    if (got != want) {
        print_error("%s: %s: got %lld, want %lld\n", row, what, got, want);
        fail();
    }
}

static void check_str(const char *row, const char *what, const char *got, const char *want)
{
    if (strcmp(got, want) != 0) {
        print_error("%s: %s: got \"%s\", want \"%s\"\n", row, what, got, want);
        fail();
    }
}

struct path_case {
    const char *args;
    const char *keyword;
    int status;
    enum address_path_kind kind;
    const char *formatted; /* address_format of the result */
    const char *params;
};

static const struct path_case path_cases[] = {
    {"FROM:<a@example.test>", "FROM:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX, "a@example.test", ""},
    {"from:<a@Example.TEST.>", "FROM:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX, "a@example.test", ""},
    {"FROM: <a@example.test>", "FROM:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX, "a@example.test", ""},
    {"FROM:<>", "FROM:", SMTP_PARSE_OK, ADDRESS_PATH_NULL, "", ""},
    {"FROM:<> SIZE=10 BODY=8BITMIME", "FROM:", SMTP_PARSE_OK, ADDRESS_PATH_NULL, "",
     "SIZE=10 BODY=8BITMIME"},
    {"FROM:<a@b.test>   SIZE=10", "FROM:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX, "a@b.test",
     "SIZE=10"},
    {"TO:<@r1.test,@[192.0.2.1]:u@x.test>", "TO:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX, "u@x.test",
     ""},
    {"TO:<postmaster>", "TO:", SMTP_PARSE_OK, ADDRESS_PATH_POSTMASTER, "postmaster", ""},
    {"To:<\"a@b\"@x.test>", "TO:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX, "\"a@b\"@x.test", ""},
    {"TO:<a@b.test> ", "TO:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX, "a@b.test", ""},
    {"TO:<a@b.test>X", "TO:", SMTP_PARSE_SYNTAX, ADDRESS_PATH_NULL, "", ""},
    {"TO:a@b.test", "TO:", SMTP_PARSE_SYNTAX, ADDRESS_PATH_NULL, "", ""},
    {"FROM:<a@b.test>", "TO:", SMTP_PARSE_SYNTAX, ADDRESS_PATH_NULL, "", ""},
    {"TO", "TO:", SMTP_PARSE_SYNTAX, ADDRESS_PATH_NULL, "", ""},
    {"", "FROM:", SMTP_PARSE_SYNTAX, ADDRESS_PATH_NULL, "", ""},
    {"TO:<a@b@c.test>", "TO:", SMTP_PARSE_BAD_ADDRESS, ADDRESS_PATH_NULL, "", ""},
    {"TO:<a@b.test", "TO:", SMTP_PARSE_BAD_ADDRESS, ADDRESS_PATH_NULL, "", ""},
    {"TO:<a@b..test>", "TO:", SMTP_PARSE_BAD_ADDRESS, ADDRESS_PATH_NULL, "", ""},
    /* UTF-8 is parsed (the session decides whether SMTPUTF8 allows it); the domain is an
     * A-label from then on. Invalid UTF-8 is a bad address. */
    {"TO:<a@\xc3\xa9.test>", "TO:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX, "a@xn--9ca.test", ""},
    {"FROM:<j\xc3\xb6rg@x.test> SMTPUTF8", "FROM:", SMTP_PARSE_OK, ADDRESS_PATH_MAILBOX,
     "j\xc3\xb6rg@x.test", "SMTPUTF8"},
    {"TO:<a\xc0\xaf@x.test>", "TO:", SMTP_PARSE_BAD_ADDRESS, ADDRESS_PATH_NULL, "", ""},
};

static void test_path_arg(void **state)
{
    for (size_t i = 0; i < COUNT(path_cases); i++) {
        const struct path_case *pc = &path_cases[i];
        char row[96];
        snprintf(row, sizeof(row), "path row %zu (%s)", i, pc->args);
        struct address a;
        enum address_path_kind kind;
        const char *params = NULL, *why = NULL;
        int st = smtp_parse_path_arg(pc->args, pc->keyword, &a, &kind, &params, &why);
        check_int(row, "status", st, pc->status);
        check_int(row, "kind", kind, pc->kind);
        char buf[ADDRESS_STRLEN];
        address_format(&a, buf, sizeof(buf));
        check_str(row, "address", buf, pc->formatted);
        check_str(row, "params", params, pc->params);
        if (st != SMTP_PARSE_OK && why == NULL)
            fail_msg("%s: no reason", row);
    }
}

struct mail_param_case {
    const char *params;
    int status;
    bool has_size;
    uint64_t size;
    bool body_8bit;
    bool has_auth;
};

static const struct mail_param_case mail_param_cases[] = {
    {"", SMTP_PARSE_OK, false, 0, false, false},
    {"SIZE=0", SMTP_PARSE_OK, true, 0, false, false},
    {"size=12345 body=8bitmime", SMTP_PARSE_OK, true, 12345, true, false},
    {"BODY=7BIT", SMTP_PARSE_OK, false, 0, false, false},
    {"AUTH=<> SIZE=1", SMTP_PARSE_OK, true, 1, false, true},
    {"AUTH=alice+40example.test", SMTP_PARSE_OK, false, 0, false, true},
    {"SIZE=10000000000000000000", SMTP_PARSE_OK, true, 10000000000000000000ULL, false, false},
    {"SIZE=99999999999999999999", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"SIZE=999999999999999999999", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"SIZE=", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"SIZE", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"SIZE=12a", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"SIZE=-1", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"SIZE=1 SIZE=2", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"BODY=BINARYMIME", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"BODY=7BIT BODY=7BIT", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"AUTH", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"smtputf8 SIZE=5", SMTP_PARSE_OK, true, 5, false, false},
    {"SMTPUTF8=yes", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"SMTPUTF8 smtputf8", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"XRET=HDRS", SMTP_PARSE_UNKNOWN_PARAM, false, 0, false, false},
    {"-X=1", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"X=a=b", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
    {"X=\xff", SMTP_PARSE_BAD_PARAM, false, 0, false, false},
};

static void test_mail_params(void **state)
{
    for (size_t i = 0; i < COUNT(mail_param_cases); i++) {
        const struct mail_param_case *pc = &mail_param_cases[i];
        char row[96];
        snprintf(row, sizeof(row), "mail params row %zu (%s)", i, pc->params);
        struct smtp_mail_params p;
        const char *why = NULL;
        int st = smtp_parse_mail_params(pc->params, &p, &why);
        check_int(row, "status", st, pc->status);
        if (st != SMTP_PARSE_OK) {
            if (why == NULL)
                fail_msg("%s: no reason", row);
            continue;
        }
        check_int(row, "has_size", p.has_size, pc->has_size);
        if (p.size_bytes != pc->size)
            fail_msg("%s: size got %llu want %llu", row, (unsigned long long)p.size_bytes,
                     (unsigned long long)pc->size);
        check_int(row, "body_8bit", p.body_8bit, pc->body_8bit);
        check_int(row, "has_auth", p.has_auth, pc->has_auth);
        check_int(row, "smtputf8", p.smtputf8, strncasecmp(pc->params, "SMTPUTF8", 8) == 0);
    }
}

/* A string of n copies of c after prefix, in a static buffer (one use per table row). */
static const char *repeat(char *buf, const char *prefix, char c, size_t n)
{
    size_t k = strlen(prefix);
    memcpy(buf, prefix, k);
    memset(buf + k, c, n);
    buf[k + n] = '\0';
    return buf;
}

/* RET and ENVID (RFC 3461 4.3, 4.4). */
static void test_mail_dsn_params(void **state)
{
    (void)state;
    static char envid100[128], envid101[128];
    const struct {
        const char *params;
        int status;
        enum smtp_dsn_ret ret;
        const char *envid;
    } cases[] = {
        {"RET=FULL", SMTP_PARSE_OK, SMTP_DSN_RET_FULL, ""},
        {"ret=hdrs", SMTP_PARSE_OK, SMTP_DSN_RET_HDRS, ""},
        {"ENVID=QQ314159", SMTP_PARSE_OK, SMTP_DSN_RET_NONE, "QQ314159"},
        {"RET=HDRS ENVID=a+2Bb SIZE=10", SMTP_PARSE_OK, SMTP_DSN_RET_HDRS, "a+2Bb"},
        {repeat(envid100, "ENVID=", 'x', 100), SMTP_PARSE_OK, SMTP_DSN_RET_NONE, envid100 + 6},
        {repeat(envid101, "ENVID=", 'x', 101), SMTP_PARSE_BAD_PARAM, 0, ""},
        {"RET=BODY", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"RET", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"RET=FULL RET=FULL", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"RET=FULL RET=HDRS", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ENVID=a ENVID=a", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ENVID", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ENVID=a+2b", SMTP_PARSE_BAD_PARAM, 0, ""}, /* hex must be upper case */
        {"ENVID=a+2", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ENVID=a+", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ENVID=a+ZZ", SMTP_PARSE_BAD_PARAM, 0, ""},
        /* A malformed DSN parameter is named even when an unknown one follows. */
        {"RET=X FOO=1", SMTP_PARSE_BAD_PARAM, 0, ""},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        char row[96];
        snprintf(row, sizeof(row), "mail dsn row %zu", i);
        struct smtp_mail_params p;
        const char *why = NULL;
        int st = smtp_parse_mail_params(cases[i].params, &p, &why);
        check_int(row, "status", st, cases[i].status);
        if (st != SMTP_PARSE_OK) {
            if (why == NULL)
                fail_msg("%s: no reason", row);
            continue;
        }
        check_int(row, "ret", p.ret, cases[i].ret);
        check_str(row, "envid", p.envid, cases[i].envid);
    }
}

static void test_rcpt_params(void **state)
{
    (void)state;
    static char orcpt500[600], orcpt501[600];
    repeat(orcpt500, "ORCPT=rfc822;", 'a', 500 - 7);
    repeat(orcpt501, "ORCPT=rfc822;", 'a', 501 - 7);
    const struct {
        const char *params;
        int status;
        unsigned notify;
        const char *orcpt;
    } cases[] = {
        {"", SMTP_PARSE_OK, 0, ""},
        {"NOTIFY=NEVER", SMTP_PARSE_OK, SMTP_NOTIFY_NEVER, ""},
        {"NOTIFY=SUCCESS", SMTP_PARSE_OK, SMTP_NOTIFY_SUCCESS, ""},
        {"notify=delay,failure", SMTP_PARSE_OK, SMTP_NOTIFY_DELAY | SMTP_NOTIFY_FAILURE, ""},
        {"NOTIFY=SUCCESS,FAILURE,DELAY", SMTP_PARSE_OK, 7, ""},
        {"ORCPT=rfc822;a@b", SMTP_PARSE_OK, 0, "rfc822;a@b"},
        {"ORCPT=rfc822;a+2Bb@c NOTIFY=FAILURE", SMTP_PARSE_OK, SMTP_NOTIFY_FAILURE,
         "rfc822;a+2Bb@c"},
        {"ORCPT=utf-8;j\\x{F6}rg@x.test", SMTP_PARSE_OK, 0, "utf-8;j\\x{F6}rg@x.test"},
        {orcpt500, SMTP_PARSE_OK, 0, orcpt500 + 6},
        {orcpt501, SMTP_PARSE_BAD_PARAM, 0, ""},
        {"NOTIFY=NEVER,SUCCESS", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"NOTIFY=SUCCESS,NEVER", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"NOTIFY=SUCCESS,SUCCESS", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"NOTIFY=SUCCESS,", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"NOTIFY=,SUCCESS", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"NOTIFY=SOMETIMES", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"NOTIFY", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"NOTIFY=FAILURE NOTIFY=FAILURE", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ORCPT=rfc822;a ORCPT=rfc822;a", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ORCPT=a@b", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ORCPT=rfc822;", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ORCPT=;a@b", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ORCPT=rfc822;a+4", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"ORCPT=rf(c;a", SMTP_PARSE_BAD_PARAM, 0, ""},
        {"FOO=1", SMTP_PARSE_UNKNOWN_PARAM, 0, ""},
        {"NOTIFY=NEVER FOO", SMTP_PARSE_UNKNOWN_PARAM, 0, ""},
        {"=x", SMTP_PARSE_BAD_PARAM, 0, ""},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        char row[64];
        snprintf(row, sizeof(row), "rcpt params row %zu", i);
        struct smtp_rcpt_params p;
        const char *why = NULL;
        int st = smtp_parse_rcpt_params(cases[i].params, &p, &why);
        check_int(row, "status", st, cases[i].status);
        if (st != SMTP_PARSE_OK) {
            if (why == NULL)
                fail_msg("%s: no reason", row);
            continue;
        }
        check_int(row, "notify", p.notify, cases[i].notify);
        check_str(row, "orcpt", p.orcpt, cases[i].orcpt);
    }
}

static void test_xtext(void **state)
{
    (void)state;
    const struct {
        const char *in;
        int len;
        const char *out;
    } cases[] = {
        {"", 0, ""},     {"abc", 3, "abc"}, {"a+2Bb+3Dc", 5, "a+b=c"},
        {"+40", 1, "@"}, {"a+2b", -1, ""},  {"a=b", -1, ""},
        {"a b", -1, ""}, {"+", -1, ""},     {"+4", -1, ""},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        char row[64], out[32];
        snprintf(row, sizeof(row), "xtext row %zu", i);
        check_int(row, "length", smtp_xtext_decode(cases[i].in, out, sizeof(out)), cases[i].len);
        check_str(row, "decoded", out, cases[i].out);
        check_int(row, "valid", smtp_xtext_is_valid(cases[i].in, strlen(cases[i].in)),
                  cases[i].len >= 0);
    }
}

static void test_helo_sanitize(void **state)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"client.example.test", "client.example.test"},
        {"[192.0.2.1]", "[192.0.2.1]"},
        {"[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"},
        {"a b(c)\\d\r\ne;f", "a?b?c??d??e?f"},
        {"\x01\x7f\xc3\xa9", "????"},
        {"", ""},
    };
    char out[ADDRESS_DOMAIN_MAX_BYTES + 1];
    for (size_t i = 0; i < COUNT(cases); i++) {
        char row[64];
        snprintf(row, sizeof(row), "helo row %zu", i);
        check_str(row, "sanitised", smtp_helo_sanitize(cases[i].in, out, sizeof(out)),
                  cases[i].want);
    }
    /* Cut at ADDRESS_DOMAIN_MAX_BYTES, and at a small buffer. */
    char longin[600];
    memset(longin, 'a', sizeof(longin) - 1);
    longin[sizeof(longin) - 1] = '\0';
    check_int("helo long", "length",
              (long long)strlen(smtp_helo_sanitize(longin, out, sizeof(out))),
              ADDRESS_DOMAIN_MAX_BYTES);
    char small[4];
    check_str("helo small", "cut", smtp_helo_sanitize("abcdef", small, sizeof(small)), "abc");
}

static void test_with_type(void **state)
{
    check_str("with", "HELO", smtp_with_type(false, false, false), "SMTP");
    check_str("with", "EHLO", smtp_with_type(true, false, false), "ESMTP");
    check_str("with", "TLS", smtp_with_type(true, true, false), "ESMTPS");
    check_str("with", "AUTH", smtp_with_type(true, false, true), "ESMTPA");
    check_str("with", "both", smtp_with_type(true, true, true), "ESMTPSA");
}

static void test_trace_headers(void **state)
{
    struct smtp_received r = {
        .helo = "laptop(evil)",
        .peer_ip = "192.0.2.7",
        .hostname = "mail.example.test",
        .with = "ESMTPSA",
        .id = "00ab.1",
        .tls = "TLSv1.3 TLS_AES_256_GCM_SHA384",
        .identity = "authenticated as alice@example.test",
        .time_ms = 0,
    };
    char buf[SMTP_TRACE_MAX_BYTES];
    int n = smtp_trace_headers(&r, "alice@example.test", buf, sizeof(buf));
    const char *want = "Return-Path: <alice@example.test>\r\n"
                       "Received: from laptop?evil? ([192.0.2.7])\r\n"
                       "\tby mail.example.test (postern) with ESMTPSA id 00ab.1\r\n"
                       "\t(TLSv1.3 TLS_AES_256_GCM_SHA384)\r\n"
                       "\t(authenticated as alice@example.test);\r\n"
                       "\tThu, 01 Jan 1970 00:00:00 +0000\r\n";
    check_str("trace full", "text", buf, want);
    check_int("trace full", "length", n, (long long)strlen(want));

    /* No TLS, no identity, no Return-Path, an IPv6 peer, comment text made safe. */
    r.helo = "";
    r.peer_ip = "2001:db8::1";
    r.with = "ESMTP";
    r.tls = NULL;
    r.identity = NULL;
    n = smtp_trace_headers(&r, NULL, buf, sizeof(buf));
    check_str("trace bare", "text", buf,
              "Received: from unknown ([IPv6:2001:db8::1])\r\n"
              "\tby mail.example.test (postern) with ESMTP id 00ab.1;\r\n"
              "\tThu, 01 Jan 1970 00:00:00 +0000\r\n");
    r.identity = "trusted network (x)\r\nBcc: y";
    n = smtp_trace_headers(&r, "", buf, sizeof(buf));
    if (strstr(buf, "\t(trusted network ?x???Bcc: y);\r\n") == NULL ||
        strncmp(buf, "Return-Path: <>\r\n", 17) != 0)
        fail_msg("trace unsafe: got \"%s\"", buf);
    /* Too small a buffer: -1, never a cut header. */
    check_int("trace small", "result", smtp_trace_headers(&r, NULL, buf, 40), -1);
    check_int("trace small", "result0", smtp_trace_headers(&r, NULL, buf, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_arg),        cmocka_unit_test(test_mail_params),
        cmocka_unit_test(test_rcpt_params),     cmocka_unit_test(test_helo_sanitize),
        cmocka_unit_test(test_mail_dsn_params), cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_with_type),       cmocka_unit_test(test_trace_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
