/*
 * test_date.c - common/pure/date.c: both forms against a table of instants (the epoch, a leap
 * day, the last millisecond of a second and of a year, the last four-digit year), the fallbacks
 * for times the grammars cannot express, short buffers, and indifference to TZ and the locale.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/pure/date.h"

/* 9999-12-31T23:59:59Z, the last second with a four-digit year. */
#define LAST_SECOND_MS 253402300799000LL

struct date_case {
    const char *name;
    int64_t time_ms;
    const char *rfc5322;
    const char *iso8601;
};

static const struct date_case cases[] = {
    {"epoch", 0, "Thu, 01 Jan 1970 00:00:00 +0000", "1970-01-01T00:00:00Z"},
    {"leap day, last ms of its second", 1709251199999LL, "Thu, 29 Feb 2024 23:59:59 +0000",
     "2024-02-29T23:59:59Z"},
    {"a Tuesday", 1717502400000LL, "Tue, 04 Jun 2024 12:00:00 +0000", "2024-06-04T12:00:00Z"},
    {"last ms of a year", 1735689599999LL, "Tue, 31 Dec 2024 23:59:59 +0000",
     "2024-12-31T23:59:59Z"},
    {"single-digit day and month", 1741251661000LL, "Thu, 06 Mar 2025 09:01:01 +0000",
     "2025-03-06T09:01:01Z"},
    {"last four-digit year", LAST_SECOND_MS, "Fri, 31 Dec 9999 23:59:59 +0000",
     "9999-12-31T23:59:59Z"},
    /* Not expressible: a header still gets a valid date, a log line the raw value. */
    {"year 10000", LAST_SECOND_MS + 1000, "Thu, 01 Jan 1970 00:00:00 +0000", "253402300800000"},
    {"before the epoch", -1000, "Thu, 01 Jan 1970 00:00:00 +0000", "-1000"},
    {"most negative", INT64_MIN, "Thu, 01 Jan 1970 00:00:00 +0000", "-9223372036854775808"},
    {"largest", INT64_MAX, "Thu, 01 Jan 1970 00:00:00 +0000", "9223372036854775807"},
};

static void check_cases(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct date_case *c = &cases[i];
        char buf[DATE_RFC5322_BYTES];
        char iso[DATE_ISO8601_BYTES];
        if (strcmp(date_rfc5322(c->time_ms, buf, sizeof(buf)), c->rfc5322) != 0)
            fail_msg("%s: rfc5322 got \"%s\", want \"%s\"", c->name, buf, c->rfc5322);
        if (strcmp(date_iso8601(c->time_ms, iso, sizeof(iso)), c->iso8601) != 0)
            fail_msg("%s: iso8601 got \"%s\", want \"%s\"", c->name, iso, c->iso8601);
    }
}

static void test_table(void **state)
{
    (void)state;
    check_cases();
}

/* The buffer sizes in date.h are exact: one octet less cuts the text. */
static void test_buffer_sizes(void **state)
{
    (void)state;
    char buf[DATE_RFC5322_BYTES];
    assert_int_equal(strlen(date_rfc5322(0, buf, sizeof(buf))), DATE_RFC5322_BYTES - 1);
    assert_int_equal(strlen(date_rfc5322(0, buf, sizeof(buf) - 1)), DATE_RFC5322_BYTES - 2);
    char iso[DATE_ISO8601_BYTES];
    assert_int_equal(strlen(date_iso8601(INT64_MIN, iso, sizeof(iso))), DATE_ISO8601_BYTES - 4);
    assert_null(date_rfc5322(0, NULL, 0));
    assert_ptr_equal(date_iso8601(0, iso, 0), iso);
}

/* UTC and English whatever the environment says. */
static void test_tz_and_locale_change_nothing(void **state)
{
    (void)state;
    assert_int_equal(setenv("TZ", "America/New_York", 1), 0);
    tzset();
    (void)setlocale(LC_ALL, "de_DE.UTF-8"); /* may be missing: then "C" stays, still a check */
    check_cases();
    (void)setlocale(LC_ALL, "C");
    assert_int_equal(unsetenv("TZ"), 0);
    tzset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_buffer_sizes),
        cmocka_unit_test(test_tz_and_locale_change_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
