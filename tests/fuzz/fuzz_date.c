/*
 * fuzz_date.c - libFuzzer target for common/pure/date.c.
 *
 * Input layout: 8 bytes, a little-endian int64 time in milliseconds (any value, negative and
 * huge ones included), then one byte for the size of a second, short buffer. Both formatters
 * write into heap buffers of exactly the size given, so ASan reports any write past them.
 *
 * Checked: within 1970..9999 the ISO 8601 text has its exact shape and reads back (timegm) to
 * the second the time falls in, and the RFC 5322 text has its exact shape and names the same
 * date, weekday and time of day; outside that range the RFC 5322 text is the epoch and the ISO
 * text is the plain millisecond count. A short buffer gets the same text cut, NUL-ended.
 * Violations trap.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/pure/date.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* 9999-12-31T23:59:59.999Z, the last millisecond with a four-digit year. */
#define LAST_MS INT64_C(253402300799999)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A short buffer of exactly len bytes must hold full cut at len - 1. */
static void check_cut(char *(*fmt)(int64_t, char *, size_t), int64_t t, const char *full,
                      size_t len)
{
    char *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL)
        return;
    CHECK(fmt(t, buf, len) == buf);
    if (len > 0) {
        size_t want = strlen(full) < len - 1 ? strlen(full) : len - 1;
        CHECK(strlen(buf) == want && memcmp(buf, full, want) == 0);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (size < 8)
        return 0;
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--)
        u = (u << 8) | data[i];
    int64_t t = (int64_t)u;
    size_t short_len = size > 8 ? data[8] % (DATE_RFC5322_BYTES + 4) : 0;

    char *rfc = malloc(DATE_RFC5322_BYTES);
    char *iso = malloc(DATE_ISO8601_BYTES);
    if (rfc == NULL || iso == NULL)
        goto out;
    CHECK(date_rfc5322(t, rfc, DATE_RFC5322_BYTES) == rfc);
    CHECK(date_iso8601(t, iso, DATE_ISO8601_BYTES) == iso);
    CHECK(strlen(rfc) == DATE_RFC5322_BYTES - 1);

    if (t >= 0 && t <= LAST_MS) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        char z = 0;
        CHECK(strlen(iso) == 20);
        CHECK(sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z) == 7 &&
              z == 'Z');
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        struct tm norm = tm;
        CHECK((int64_t)timegm(&norm) == t / 1000);
        char want[64];
        snprintf(want, sizeof(want), "%s, %02d %s %04d %02d:%02d:%02d +0000", days[norm.tm_wday],
                 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        CHECK(strcmp(rfc, want) == 0);
    } else {
        char want[32];
        snprintf(want, sizeof(want), "%" PRId64, t);
        CHECK(strcmp(iso, want) == 0);
        CHECK(strcmp(rfc, "Thu, 01 Jan 1970 00:00:00 +0000") == 0);
    }

    check_cut(date_rfc5322, t, rfc, short_len);
    check_cut(date_iso8601, t, iso, short_len);
out:
    free(rfc);
    free(iso);
    return 0;
}
