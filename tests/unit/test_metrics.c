/*
 * test_metrics.c - unit tests for server/metrics/: the text format's escaping of label values and
 * HELP text, sample lines, histogram lines (cumulative buckets, +Inf equal to _count, scaled
 * bounds and sum), the reason a refusal is counted under, mechanism names, and counters moving
 * in the whole exposition. Compared byte for byte, table-driven where there are cases.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/pure/relay_policy.h"
#include "server/metrics/metrics.h"
#include "server/net/conn.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void test_label_escaping(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"plain", "plain"},
        {"back\\slash", "back\\\\slash"},
        {"say \"hi\"", "say \\\"hi\\\""},
        {"two\nlines", "two\\nlines"},
        {"", ""},
        {"\\\"\n", "\\\\\\\"\\n"},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        struct metrics_text t;
        metrics_text_init(&t);
        metrics_text_escaped(&t, cases[i].in);
        assert_int_equal(metrics_text_status(&t), 0);
        if (strcmp(t.len > 0 ? t.data : "", cases[i].want) != 0)
            fail_msg("escape(%s): got %s, want %s", cases[i].in, t.len > 0 ? t.data : "",
                     cases[i].want);
        metrics_text_free(&t);
    }
}

static void test_sample_and_header(void **state)
{
    struct metrics_text t;
    metrics_text_init(&t);
    static const char *const names[] = {"service", "note"};
    static const char *const values[] = {"smtp", "a\"b"};
    metrics_text_header(&t, "x_total", "counter", "Back\\slash and\nnewline, \"quotes\" kept.");
    metrics_text_sample(&t, "x_total", &(struct metrics_labels){names, values, 2}, 42);
    metrics_text_sample(&t, "x_total", NULL, 0);
    metrics_text_sample_signed(&t, "g", NULL, -3);
    assert_int_equal(metrics_text_status(&t), 0);
    assert_string_equal(t.data, "# HELP x_total Back\\\\slash and\\nnewline, \"quotes\" kept.\n"
                                "# TYPE x_total counter\n"
                                "x_total{service=\"smtp\",note=\"a\\\"b\"} 42\n"
                                "x_total 0\n"
                                "g -3\n");
    metrics_text_free(&t);
}

static void test_histogram_lines(void **state)
{
    struct metrics_text t;
    metrics_text_init(&t);
    static const uint64_t bounds[] = {500000, 1000000, 2500000}; /* ns */
    static const uint64_t counts[] = {3, 0, 2, 1};               /* the last: above 2.5 ms */
    metrics_text_histogram(&t, "h_seconds", "Help.", bounds, COUNT(bounds), counts, 7500000, 1e9);
    assert_int_equal(metrics_text_status(&t), 0);
    assert_string_equal(t.data, "# HELP h_seconds Help.\n"
                                "# TYPE h_seconds histogram\n"
                                "h_seconds_bucket{le=\"0.0005\"} 3\n"
                                "h_seconds_bucket{le=\"0.001\"} 3\n"
                                "h_seconds_bucket{le=\"0.0025\"} 5\n"
                                "h_seconds_bucket{le=\"+Inf\"} 6\n"
                                "h_seconds_sum 0.0075\n"
                                "h_seconds_count 6\n");
    metrics_text_free(&t);
}

static void test_refusal_reasons(void **state)
{
    static const struct {
        const char *reply, *want; /* want NULL: not a refusal of mail */
    } cases[] = {
        {"550 5.7.1 <x@remote.test>... Relaying denied", "relay-denied"},
        {"553 5.7.1 <a@b>: Sender address rejected: not owned by user <c@d>", "sender-not-owned"},
        {"550 5.1.1 <a@b>: Recipient address rejected: User unknown", "unknown-user"},
        {"552 5.3.4 Message size exceeds fixed maximum message size", "too-big"},
        {"452 4.5.3 Too many recipients", "too-many-recipients"},
        {"452 4.3.1 Insufficient system storage", "no-storage"},
        {"451 4.3.0 Error: temporary failure, try again later", "temporary-failure"},
        {"530 5.7.0 Authentication required", "auth-required"},
        {"501 5.1.3 Bad recipient address syntax", "bad-recipient"},
        {"501 5.1.7 Bad sender address syntax", "bad-sender"},
        {"451 4.7.1 injected", "other"},
        {"501 5.5.4 Syntax: MAIL FROM:<address>", NULL},
        {"503 5.5.1 Error: need MAIL command", NULL},
        {"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", NULL},
        {"250 2.1.5 Ok", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        const char *got = metrics_refusal_reason(cases[i].reply);
        if ((got == NULL) != (cases[i].want == NULL) ||
            (got != NULL && strcmp(got, cases[i].want) != 0))
            fail_msg("%s: got %s, want %s", cases[i].reply, got ? got : "NULL",
                     cases[i].want ? cases[i].want : "NULL");
    }
}

static void test_auth_mech(void **state)
{
    assert_int_equal(metrics_auth_mech("PLAIN dGVzdA=="), METRICS_MECH_PLAIN);
    assert_int_equal(metrics_auth_mech("login"), METRICS_MECH_LOGIN);
    assert_int_equal(metrics_auth_mech("USER"), METRICS_MECH_USER);
    assert_int_equal(metrics_auth_mech("CRAM-MD5"), METRICS_MECH_OTHER);
    assert_int_equal(metrics_auth_mech("PLAINX"), METRICS_MECH_OTHER);
    assert_int_equal(metrics_auth_mech(""), METRICS_MECH_NONE);
    assert_int_equal(metrics_auth_mech(NULL), METRICS_MECH_NONE);
}

/* The exposition has this exact line, or the test fails. */
static void expect_line(const char *text, const char *line)
{
    char want[256];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (strstr(text, want) == NULL)
        fail_msg("no line \"%s\" in:\n%s", line, text);
}

static void test_counters_in_exposition(void **state)
{
    metrics_reset_for_tests();
    metrics_conn_created(CONN_SERVICE_SMTP_MX);
    metrics_conn_accepted(CONN_SERVICE_SMTP_MX, false);
    metrics_conn_created(CONN_SERVICE_POP3S);
    metrics_conn_accepted(CONN_SERVICE_POP3S, true);
    metrics_conn_freed(CONN_SERVICE_POP3S);
    metrics_conn_accepted(CONN_SERVICE_OUTBOUND, false); /* not counted as accepted */
    metrics_bytes_in(CONN_SERVICE_SMTP_MX, 100);
    metrics_bytes_out(CONN_SERVICE_SMTP_MX, 7);
    metrics_smtp_refused("RCPT", "550 5.7.1 <x@y>... Relaying denied");
    metrics_smtp_refused("rcpt", "550 5.1.1 <x@y>: Recipient address rejected: User unknown");
    metrics_smtp_refused("AUTH", "535 5.7.8 Authentication credentials invalid"); /* not mail */
    metrics_smtp_refused("EHLO", "550 5.7.1 no"); /* not a transaction command */
    metrics_smtp_refused("BDAT", "552 5.3.4 Message size exceeds fixed maximum message size");
    metrics_smtp_accepted();
    metrics_relay_decision(RELAY_REASON_NOT_AUTHORIZED);
    metrics_relay_decision(RELAY_REASON_POP_WINDOW);
    metrics_auth(METRICS_PROTO_SMTP, METRICS_MECH_PLAIN, false, false);
    metrics_auth(METRICS_PROTO_SMTP, METRICS_MECH_PLAIN, false, true); /* temporary: neither */
    metrics_auth(METRICS_PROTO_POP3, METRICS_MECH_USER, true, false);
    metrics_delivery("sent");
    metrics_delivery("bounced");
    metrics_delivery("nonsense");
    metrics_writer_batch(3, 700000);
    metrics_writer_batch(300, 20000000000ull);

    struct metrics_text t;
    metrics_text_init(&t);
    struct metrics_gauges g = {.have_store = true, .windows_open = 2, .queue_depth = 5};
    assert_int_equal(metrics_format(&g, &t), 0);
    expect_line(t.data, "postern_connections_accepted_total{service=\"smtp\",tls=\"no\"} 1");
    expect_line(t.data, "postern_connections_accepted_total{service=\"pop3s\",tls=\"yes\"} 1");
    expect_line(t.data, "postern_connections_open{service=\"smtp\"} 1");
    expect_line(t.data, "postern_connections_open{service=\"pop3s\"} 0");
    expect_line(t.data, "postern_received_bytes_total{service=\"smtp\"} 100");
    expect_line(t.data, "postern_sent_bytes_total{service=\"smtp\"} 7");
    expect_line(t.data, "postern_smtp_refusals_total{reason=\"relay-denied\"} 1");
    expect_line(t.data, "postern_smtp_refusals_total{reason=\"unknown-user\"} 1");
    expect_line(t.data, "postern_smtp_refusals_total{reason=\"too-big\"} 1");
    expect_line(t.data, "postern_smtp_refusals_total{reason=\"other\"} 0");
    expect_line(t.data, "postern_smtp_messages_accepted_total 1");
    expect_line(t.data,
                "postern_relay_decisions_total{decision=\"deny\",reason=\"not-authorized\"} 1");
    expect_line(t.data,
                "postern_relay_decisions_total{decision=\"allow\",reason=\"pop-window\"} 1");
    expect_line(t.data, "postern_auth_failures_total{protocol=\"smtp\",mechanism=\"plain\"} 1");
    expect_line(t.data, "postern_auth_successes_total{protocol=\"pop3\",mechanism=\"user\"} 1");
    expect_line(t.data, "postern_deliveries_total{outcome=\"sent\"} 1");
    expect_line(t.data, "postern_deliveries_total{outcome=\"bounced\"} 1");
    expect_line(t.data, "postern_deliveries_total{outcome=\"deferred\"} 0");
    expect_line(t.data, "postern_relay_windows_open 2");
    expect_line(t.data, "postern_queue_depth 5");
    expect_line(t.data, "postern_writer_batch_jobs_bucket{le=\"2\"} 0");
    expect_line(t.data, "postern_writer_batch_jobs_bucket{le=\"4\"} 1");
    expect_line(t.data, "postern_writer_batch_jobs_bucket{le=\"256\"} 1");
    expect_line(t.data, "postern_writer_batch_jobs_bucket{le=\"+Inf\"} 2");
    expect_line(t.data, "postern_writer_batch_jobs_sum 303");
    expect_line(t.data, "postern_writer_commit_seconds_bucket{le=\"0.001\"} 1");
    expect_line(t.data, "postern_writer_commit_seconds_bucket{le=\"10\"} 1");
    expect_line(t.data, "postern_writer_commit_seconds_count 2");
    metrics_text_free(&t);

    /* Without the store's numbers the gauges are left out, not reported as 0. */
    metrics_text_init(&t);
    g.have_store = false;
    assert_int_equal(metrics_format(&g, &t), 0);
    assert_null(strstr(t.data, "postern_queue_depth"));
    metrics_text_free(&t);
    metrics_reset_for_tests();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escaping),  cmocka_unit_test(test_sample_and_header),
        cmocka_unit_test(test_histogram_lines), cmocka_unit_test(test_refusal_reasons),
        cmocka_unit_test(test_auth_mech),       cmocka_unit_test(test_counters_in_exposition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
