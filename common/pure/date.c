/*
 * date.c - see date.h. gmtime_r does the calendar; the names are spelled here rather than by
 * strftime's %a and %b, which follow the locale, while RFC 5322 3.3 wants English.
 */
#include "common/pure/date.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

/* The last year with four digits, as both grammars require. */
#define DATE_YEAR_MAX 9999

/* Breaks time_ms down into UTC; false when it is negative or beyond DATE_YEAR_MAX. */
static bool to_utc(int64_t time_ms, struct tm *tm)
{
    if (time_ms < 0)
        return false;
    time_t t = (time_t)(time_ms / 1000);
    if (gmtime_r(&t, tm) == NULL)
        return false;
    return tm->tm_year + 1900 <= DATE_YEAR_MAX && tm->tm_wday >= 0 && tm->tm_wday <= 6 &&
           tm->tm_mon >= 0 && tm->tm_mon <= 11;
}

char *date_rfc5322(int64_t time_ms, char *buf, size_t len)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (buf == NULL || len == 0)
        return buf;
    struct tm tm;
    if (!to_utc(time_ms, &tm) && !to_utc(0, &tm)) {
        snprintf(buf, len, "Thu, 01 Jan 1970 00:00:00 +0000");
        return buf;
    }
    snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

char *date_iso8601(int64_t time_ms, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return buf;
    struct tm tm;
    if (!to_utc(time_ms, &tm)) {
        snprintf(buf, len, "%" PRId64, time_ms);
        return buf;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}
