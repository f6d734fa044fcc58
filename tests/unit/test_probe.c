/*
 * test_probe.c - unit tests for server/selftest/probe.c, the selftest's client: SMTP replies
 * over several lines and several segments, a reply that is not SMTP, a POP3 body with
 * byte-stuffing, a server that says nothing (the read gives up at the probe's timeout instead of
 * hanging), a server that closes, and the evidence escaping. The server side is a plain socket
 * on 127.0.0.1 that the test writes to by hand; no TLS here (the e2e tests cover it).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/selftest/probe.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

struct pair {
    struct probe p;
    int server; /* the accepted side, written to by the test */
};

/* Connects a probe to a fresh listener on loopback and accepts it. */
static void pair_open(struct pair *x)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    assert_int_equal(probe_connect(&x->p, "127.0.0.1", ntohs(a.sin_port)), 0);
    x->server = accept(l, NULL, NULL);
    assert_true(x->server >= 0);
    close(l);
}

static void pair_close(struct pair *x)
{
    probe_close(&x->p);
    probe_close(&x->p); /* safe to repeat */
    if (x->server >= 0)
        close(x->server);
}

static void say(struct pair *x, const char *text)
{
    assert_int_equal(write(x->server, text, strlen(text)), (ssize_t)strlen(text));
}

static void test_smtp_reply_multiline(void **state)
{
    (void)state;
    struct pair x;
    pair_open(&x);
    struct probe_reply r;
    say(&x, "250-mail.example.test\r\n250-PIPE");
    say(&x, "LINING\r\n250 STARTTLS\r\n220 next\r\n");
    assert_int_equal(probe_smtp_reply(&x.p, &r), 0);
    assert_int_equal(r.code, 250);
    assert_string_equal(r.text, "250-mail.example.test\n250-PIPELINING\n250 STARTTLS");
    assert_int_equal(probe_smtp_reply(&x.p, &r), 0); /* the rest stays buffered */
    assert_int_equal(r.code, 220);
    assert_false(probe_has_input(&x.p, 50));
    pair_close(&x);
}

static void test_smtp_command_and_garbage(void **state)
{
    (void)state;
    struct pair x;
    pair_open(&x);
    struct probe_reply r;
    say(&x, "hello there\r\n");
    assert_int_equal(probe_smtp_cmd(&x.p, &r, "NOOP"), -1);
    assert_non_null(strstr(x.p.err, "not an SMTP reply"));
    char got[16] = {0};
    assert_int_equal(read(x.server, got, sizeof(got) - 1), 6);
    assert_string_equal(got, "NOOP\r\n");
    pair_close(&x);
}

static void test_pop3_lines_and_body(void **state)
{
    (void)state;
    struct pair x;
    pair_open(&x);
    struct probe_reply r;
    char body[256];
    say(&x, "+OK ready\r\n-ERR [AUTH] no\r\n+OK 2 lines\r\nSubject: x\r\n..dot\r\n.\r\nbad\r\n");
    assert_int_equal(probe_pop3_line(&x.p, &r), 0);
    assert_int_equal(r.code, 1);
    assert_int_equal(probe_pop3_line(&x.p, &r), 0);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.text, "-ERR [AUTH] no");
    assert_int_equal(probe_pop3_line(&x.p, &r), 0);
    assert_int_equal(probe_pop3_multiline(&x.p, body, sizeof(body)), 0);
    assert_string_equal(body, "Subject: x\n.dot\n");
    assert_int_equal(probe_pop3_line(&x.p, &r), 0);
    assert_int_equal(r.code, 2);
    pair_close(&x);
}

/* A server that never answers costs one timeout, and a half line does not count as a line. */
static void test_silence_times_out(void **state)
{
    (void)state;
    struct pair x;
    pair_open(&x);
    x.p.timeout_ms = 200;
    struct probe_reply r;
    say(&x, "250 no line end");
    assert_int_equal(probe_smtp_reply(&x.p, &r), -1);
    assert_non_null(strstr(x.p.err, "no answer within 200 ms"));
    pair_close(&x);
}

static void test_close_is_an_error(void **state)
{
    (void)state;
    struct pair x;
    pair_open(&x);
    struct probe_reply r;
    close(x.server);
    x.server = -1;
    assert_int_equal(probe_pop3_line(&x.p, &r), -1);
    assert_non_null(strstr(x.p.err, "closed"));
    pair_close(&x);
}

static void test_connect_refused(void **state)
{
    (void)state;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    close(l); /* bound, never listening: the port is closed */
    struct probe p;
    assert_int_equal(probe_connect(&p, "127.0.0.1", ntohs(a.sin_port)), -1);
    assert_non_null(strstr(p.err, "connect"));
    probe_close(&p);
}

struct escape_case {
    const char *in;
    size_t out_len;
    const char *want;
};

static const struct escape_case escapes[] = {
    {"250 Ok", 64, "250 Ok"},
    {"a\r\nb", 64, "a\\r\\nb"},
    {"tab\there\\", 64, "tab\\x09here\\\\"},
    {"\x7f\xff", 64, "\\x7f\\xff"},
    {"0123456789abcdef", 12, "01234567..."},
    {"", 8, ""},
};

static void test_escape(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(escapes); i++) {
        char out[64];
        probe_escape(escapes[i].in, strlen(escapes[i].in), out, escapes[i].out_len);
        if (strcmp(out, escapes[i].want) != 0)
            fail_msg("escape(\"%s\", %zu): got \"%s\", want \"%s\"", escapes[i].in,
                     escapes[i].out_len, out, escapes[i].want);
        assert_true(strlen(out) < escapes[i].out_len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smtp_reply_multiline),
        cmocka_unit_test(test_smtp_command_and_garbage),
        cmocka_unit_test(test_pop3_lines_and_body),
        cmocka_unit_test(test_silence_times_out),
        cmocka_unit_test(test_close_is_an_error),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
