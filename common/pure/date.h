/*
 * date.h - a time in milliseconds since the Unix epoch, written out as text. Two forms:
 *   - date_rfc5322: the RFC 5322 3.3 date-time of mail headers (Received, Date, the
 *     Arrival-Date and Last-Attempt-Date of a bounce), "Thu, 29 Feb 2024 23:59:59 +0000";
 *   - date_iso8601: the RFC 3339 UTC timestamp of logs and the admin CLI, "2024-02-29T23:59:59Z".
 *
 * Always UTC, always English day and month names: the locale and the TZ variable change nothing.
 * Pure (no clock is read: the caller passes the time), no allocation; milliseconds are cut, not
 * rounded, so a time and the second it falls in print the same.
 */
#ifndef POSTERN_DATE_H
#define POSTERN_DATE_H

#include <stddef.h>
#include <stdint.h>

/* "Thu, 29 Feb 2024 23:59:59 +0000" and its NUL. */
#define DATE_RFC5322_BYTES 32
/* "2024-02-29T23:59:59Z" and its NUL, or the millisecond count it falls back to (20 digits). */
#define DATE_ISO8601_BYTES 24

/*
 * Writes the RFC 5322 date-time of time_ms into buf and returns buf. A header must always carry
 * a valid date, so a time the grammar cannot express (before 1970 here, whose negative values
 * only a broken clock gives, or after the year 9999, which has no four-digit year) is written as
 * the epoch. A buf shorter than DATE_RFC5322_BYTES gets a cut string.
 */
char *date_rfc5322(int64_t time_ms, char *buf, size_t len);

/*
 * Writes the RFC 3339 UTC timestamp of time_ms into buf and returns buf. What cannot be
 * converted (a year past 9999) is written as the plain millisecond count instead, so the reader
 * still sees the value. A buf shorter than DATE_ISO8601_BYTES gets a cut string.
 */
char *date_iso8601(int64_t time_ms, char *buf, size_t len);

#endif
