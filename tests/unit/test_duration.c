/*
 * test_duration.c - unit tests for common/pure/duration.c: every accepted duration and size form,
 * every rejection (empty, signs, spaces, junk, order of units, overflow by one), canonical
 * formatting, truncation of the output buffer, and round trips over edge values and a bounded
 * pseudo-random sweep. Rows name themselves in failure messages ("got X, want Y").
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/pure/duration.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define S  DURATION_MS_PER_SECOND
#define MI DURATION_MS_PER_MINUTE
#define H  DURATION_MS_PER_HOUR
#define D  DURATION_MS_PER_DAY

/* UINT64_MAX ms is 213503982334 days and 51951615 ms. */
#define MAX_DAYS 213503982334ULL

struct u64_case {
    const char *in;
    uint64_t want;
};

/* ---- duration_parse ---------------------------------------------------------------------- */

static const struct u64_case duration_ok[] = {
    {"0", 0},
    {"90", 90 * S}, /* a plain number is seconds */
    {"007", 7 * S},
    {"90s", 90 * S},
    {"30m", 30 * MI},
    {"2h", 2 * H},
    {"5d", 5 * D},
    {"500ms", 500},
    {"1ms", 1},
    {"0s", 0},
    {"0ms", 0},
    {"0d", 0},
    {"1h30m", H + 30 * MI},
    {"1s500ms", 1500},
    {"1d2h3m4s5ms", D + 2 * H + 3 * MI + 4 * S + 5},
    {"1d5ms", D + 5},
    {"2h0m", 2 * H},
    {"100000m", 100000 * MI},
    {"18446744073709551615ms", UINT64_MAX},
    {"18446744073709551s", 18446744073709551000ULL},
    {"213503982334d14h", MAX_DAYS *D + 14 * H},
    {"213503982334d51951615ms", UINT64_MAX},
};

static void test_duration_parse_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(duration_ok); i++) {
        uint64_t got = 12345;
        if (duration_parse(duration_ok[i].in, &got) != 0)
            fail_msg("duration_parse(\"%s\") failed, want %llu", duration_ok[i].in,
                     (unsigned long long)duration_ok[i].want);
        if (got != duration_ok[i].want)
            fail_msg("duration_parse(\"%s\"): got %llu, want %llu", duration_ok[i].in,
                     (unsigned long long)got, (unsigned long long)duration_ok[i].want);
    }
}

static const char *const duration_bad[] = {
    "",
    " 5s",
    "5s ",
    "5 s",
    "1h 30m",
    "\t5m",
    "5m\n",
    "-5s",
    "+5s",
    "-0",
    "5x",
    "5w",
    "1y",
    "s",
    "m5",
    "ms",
    "5S",
    "5M",
    "5H",
    "5D",
    "5Ms",
    "1h30",  /* a bare number after a unit */
    "30m1h", /* units out of order */
    "1m1m",  /* a unit twice */
    "1s1s",
    "5ms5s",
    "1h1d",
    "5.5s",
    "0x10",
    "1e3",
    "5mss",
    "5sm",
    "1_000s",
    "18446744073709551616", /* seconds digits overflow */
    "18446744073709552",    /* fits digits, * 1000 overflows */
    "18446744073709552s",
    "18446744073709551616ms",
    "213503982335d",
    "213503982334d15h",        /* the sum overflows */
    "213503982334d51951616ms", /* the sum overflows by one */
    "99999999999999999999999999999ms",
};

static void test_duration_parse_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(duration_bad); i++) {
        uint64_t got = 777;
        int rc = duration_parse(duration_bad[i], &got);
        if (rc != -1)
            fail_msg("duration_parse(\"%s\"): got rc %d (value %llu), want -1", duration_bad[i], rc,
                     (unsigned long long)got);
        if (got != 777)
            fail_msg("duration_parse(\"%s\") wrote %llu on failure", duration_bad[i],
                     (unsigned long long)got);
    }
    uint64_t got = 1;
    assert_int_equal(duration_parse(NULL, &got), -1);
    assert_int_equal(got, 1);
}

/* ---- duration_format --------------------------------------------------------------------- */

struct format_case {
    uint64_t in;
    const char *want;
};

static const struct format_case duration_formats[] = {
    {0, "0"},
    {1, "1ms"},
    {999, "999ms"},
    {S, "1s"},
    {1500, "1500ms"}, /* shorter than 1s500ms */
    {90 * S, "90s"},  /* shorter than 1m30s */
    {30 * MI, "30m"},
    {H + 30 * MI, "90m"}, /* shorter than 1h30m */
    {2 * H, "2h"},
    {5 * D, "5d"},
    {D, "1d"},
    {D + S, "1d1s"},       /* shorter than 86401s */
    {D + 90 * S, "1d90s"}, /* shorter than 1d1m30s */
    {H + S, "1h1s"},
    {2 * H - S, "7199s"},  /* shorter than 1h59m59s */
    {26 * H, "26h"},       /* shorter than 1d2h */
    {D + H + MI, "25h1m"}, /* ties with 1501m: the larger leading unit wins */
    {10 * D + 1, "10d1ms"},
    {60 * D, "60d"},
    {365 * D, "365d"},
    {10 * S, "10s"},
    {60 * S, "1m"},
    {3600 * S, "1h"},
};

static void test_duration_format(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(duration_formats); i++) {
        char buf[DURATION_FORMAT_MAX_BYTES];
        duration_format(duration_formats[i].in, buf, sizeof(buf));
        if (strcmp(buf, duration_formats[i].want) != 0)
            fail_msg("duration_format(%llu): got \"%s\", want \"%s\"",
                     (unsigned long long)duration_formats[i].in, buf, duration_formats[i].want);
    }
}

static void test_duration_format_truncates(void **state)
{
    char buf[8];
    (void)state;

    memset(buf, 'x', sizeof(buf));
    duration_format(1500, buf, 3);
    assert_string_equal(buf, "15");
    assert_int_equal(buf[3], 'x');

    memset(buf, 'x', sizeof(buf));
    duration_format(1500, buf, 0);
    assert_int_equal(buf[0], 'x');

    duration_format(UINT64_MAX, buf, 1);
    assert_string_equal(buf, "");
}

/* The greedy "largest units first" text; the canonical one must never be longer. */
static void greedy_text(uint64_t ms, char *buf, size_t len)
{
    static const struct {
        const char *name;
        uint64_t f;
    } units[] = {{"d", D}, {"h", H}, {"m", MI}, {"s", S}, {"ms", 1}};
    size_t used = 0;
    buf[0] = '\0';
    if (ms == 0) {
        snprintf(buf, len, "0");
        return;
    }
    for (size_t i = 0; i < COUNT(units); i++) {
        if (ms >= units[i].f) {
            used += (size_t)snprintf(buf + used, len - used, "%llu%s",
                                     (unsigned long long)(ms / units[i].f), units[i].name);
            ms %= units[i].f;
        }
    }
}

static void check_duration_round_trip(uint64_t ms)
{
    char buf[DURATION_FORMAT_MAX_BYTES], again[DURATION_FORMAT_MAX_BYTES];
    char greedy[64], plain_ms[64];
    uint64_t back = ~ms;

    duration_format(ms, buf, sizeof(buf));
    if (duration_parse(buf, &back) != 0 || back != ms)
        fail_msg("round trip of %llu: formatted \"%s\", parsed back %llu", (unsigned long long)ms,
                 buf, (unsigned long long)back);
    duration_format(back, again, sizeof(again));
    if (strcmp(buf, again) != 0)
        fail_msg("format not canonical for %llu: \"%s\" then \"%s\"", (unsigned long long)ms, buf,
                 again);
    greedy_text(ms, greedy, sizeof(greedy));
    snprintf(plain_ms, sizeof(plain_ms), "%llums", (unsigned long long)ms);
    if (strlen(buf) > strlen(greedy) || (ms != 0 && strlen(buf) > strlen(plain_ms)))
        fail_msg("format of %llu not shortest: \"%s\" vs \"%s\" / \"%s\"", (unsigned long long)ms,
                 buf, greedy, plain_ms);
}

static void test_duration_round_trip(void **state)
{
    static const uint64_t edges[] = {
        0,
        1,
        999,
        S,
        S + 1,
        MI - 1,
        MI,
        MI + 1,
        H - 1,
        H,
        H + 1,
        D - 1,
        D,
        D + 1,
        7 * D,
        365 * D,
        UINT64_MAX,
        UINT64_MAX - 1,
        MAX_DAYS * D,
        MAX_DAYS * D - 1,
        UINT64_MAX / 2,
        1ULL << 63,
        (1ULL << 32) - 1,
        1ULL << 32,
    };
    (void)state;
    for (size_t i = 0; i < COUNT(edges); i++)
        check_duration_round_trip(edges[i]);
    /* A bounded sweep: an LCG walks values of every magnitude. */
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        unsigned shift = (unsigned)(x >> 58); /* 0..63 */
        check_duration_round_trip(x >> shift);
        check_duration_round_trip((x >> shift) / S * S);   /* whole seconds */
        check_duration_round_trip((x >> shift) / MI * MI); /* whole minutes */
    }
}

/* ---- size_parse / size_format ------------------------------------------------------------ */

static const struct u64_case size_ok[] = {
    {"0", 0},
    {"100", 100},
    {"1024", 1024},
    {"512K", 512 * SIZE_KIB_BYTES},
    {"512k", 512 * SIZE_KIB_BYTES},
    {"25M", 25 * SIZE_MIB_BYTES},
    {"25m", 25 * SIZE_MIB_BYTES},
    {"1G", SIZE_GIB_BYTES},
    {"1g", SIZE_GIB_BYTES},
    {"0K", 0},
    {"17179869183G", 17179869183ULL * SIZE_GIB_BYTES},
    {"18446744073709551615", UINT64_MAX},
    {"0025M", 25 * SIZE_MIB_BYTES},
};

static void test_size_parse_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(size_ok); i++) {
        uint64_t got = 12345;
        if (size_parse(size_ok[i].in, &got) != 0)
            fail_msg("size_parse(\"%s\") failed", size_ok[i].in);
        if (got != size_ok[i].want)
            fail_msg("size_parse(\"%s\"): got %llu, want %llu", size_ok[i].in,
                     (unsigned long long)got, (unsigned long long)size_ok[i].want);
    }
}

static const char *const size_bad[] = {
    "",
    "25MB",
    "25MiB",
    "25KB",
    "25mb",
    "25B",
    "25 M",
    " 25M",
    "25M ",
    "1.5M",
    "1T",
    "1P",
    "-1",
    "+1",
    "M",
    "K5",
    "25MM",
    "25MK",
    "0x10",
    "1e6",
    "1,000",
    "17179869184G",
    "18014398509481984M",
    "18446744073709551616",
    "18446744073709551616K",
};

static void test_size_parse_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(size_bad); i++) {
        uint64_t got = 777;
        int rc = size_parse(size_bad[i], &got);
        if (rc != -1)
            fail_msg("size_parse(\"%s\"): got rc %d (value %llu), want -1", size_bad[i], rc,
                     (unsigned long long)got);
        if (got != 777)
            fail_msg("size_parse(\"%s\") wrote %llu on failure", size_bad[i],
                     (unsigned long long)got);
    }
    uint64_t got = 1;
    assert_int_equal(size_parse(NULL, &got), -1);
}

static const struct format_case size_formats[] = {
    {0, "0"},
    {1, "1"},
    {1023, "1023"},
    {1024, "1K"},
    {1536, "1536"},
    {512 * SIZE_KIB_BYTES, "512K"},
    {25 * SIZE_MIB_BYTES, "25M"},
    {SIZE_MIB_BYTES + SIZE_KIB_BYTES, "1025K"},
    {SIZE_GIB_BYTES, "1G"},
    {3 * SIZE_GIB_BYTES / 2, "1536M"},
    {1024 * SIZE_GIB_BYTES, "1024G"},
    {UINT64_MAX, "18446744073709551615"},
};

static void test_size_format(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(size_formats); i++) {
        char buf[SIZE_FORMAT_MAX_BYTES];
        size_format(size_formats[i].in, buf, sizeof(buf));
        if (strcmp(buf, size_formats[i].want) != 0)
            fail_msg("size_format(%llu): got \"%s\", want \"%s\"",
                     (unsigned long long)size_formats[i].in, buf, size_formats[i].want);
    }
    char small[4];
    memset(small, 'x', sizeof(small));
    size_format(25 * SIZE_MIB_BYTES + 1, small, 3);
    assert_string_equal(small, "26");
    size_format(1, small, 0);
    assert_int_equal(small[0], '2');
}

static void test_size_round_trip(void **state)
{
    (void)state;
    uint64_t x = 12345;
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        unsigned shift = (unsigned)(x >> 58);
        uint64_t vals[] = {x >> shift, (x >> shift) << 10, (x >> shift) << 20, (x >> shift) << 30};
        for (size_t j = 0; j < COUNT(vals); j++) {
            char buf[SIZE_FORMAT_MAX_BYTES];
            uint64_t back = ~vals[j];
            size_format(vals[j], buf, sizeof(buf));
            if (size_parse(buf, &back) != 0 || back != vals[j])
                fail_msg("size round trip of %llu: \"%s\" -> %llu", (unsigned long long)vals[j],
                         buf, (unsigned long long)back);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_parse_ok),
        cmocka_unit_test(test_duration_parse_bad),
        cmocka_unit_test(test_duration_format),
        cmocka_unit_test(test_duration_format_truncates),
        cmocka_unit_test(test_duration_round_trip),
        cmocka_unit_test(test_size_parse_ok),
        cmocka_unit_test(test_size_parse_bad),
        cmocka_unit_test(test_size_format),
        cmocka_unit_test(test_size_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
