/*
 * duration.h - parse and format the durations ("30m", "1h30m") and sizes ("25M") of the
 * configuration file and the command line.
 *
 * Durations are counted in milliseconds and sizes in bytes, both as uint64_t. The grammar is
 * strict on purpose: a typo in a config file must be an error, never a different value. These
 * functions only convert text; they know nothing about which range a given setting allows
 * (common/config.c checks that).
 *
 * Duration grammar: "0", a plain integer (seconds, so "90" is 90s), or one or more
 * NUMBER UNIT pairs with the units in strictly decreasing order, each at most once:
 *   d (day = 86400 s), h, m (minute), s, ms     e.g. "5d", "2h", "1h30m", "1s500ms"
 * Units are lower case ("5M" is not a duration). Rejected: empty text, any sign, any space
 * (inside or around), a bare number after a unit ("1h30"), units out of order or repeated
 * ("30m1h", "1m1m"), unknown units ("1w", "1y"), and any value above UINT64_MAX ms.
 *
 * Size grammar: NUMBER with an optional suffix K, M or G (either case), each 1024-based:
 * "100" is 100 bytes, "512K" = 524288, "25M" = 26214400, "1G" = 1073741824. Deliberately NOT
 * accepted: "25MB", "25MiB", "25 M", "1.5M", "1T": "MB" means 10^6 to some readers and 2^20 to
 * others, and refusing it is kinder than guessing.
 */
#ifndef POSTERN_DURATION_H
#define POSTERN_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Large enough for every string duration_format() and size_format() can produce, with NUL. */
#define DURATION_FORMAT_MAX_BYTES 32
#define SIZE_FORMAT_MAX_BYTES     32

#define DURATION_MS_PER_SECOND 1000ULL
#define DURATION_MS_PER_MINUTE (60ULL * DURATION_MS_PER_SECOND)
#define DURATION_MS_PER_HOUR   (60ULL * DURATION_MS_PER_MINUTE)
#define DURATION_MS_PER_DAY    (24ULL * DURATION_MS_PER_HOUR)

#define SIZE_KIB_BYTES 1024ULL
#define SIZE_MIB_BYTES (1024ULL * SIZE_KIB_BYTES)
#define SIZE_GIB_BYTES (1024ULL * SIZE_MIB_BYTES)

/* 0 and *ms_out set when s is a duration as described above; -1 (and *ms_out untouched) else. */
int duration_parse(const char *s, uint64_t *ms_out);

/* 0 and *bytes_out set when s is a size as described above; -1 (and *bytes_out untouched) else. */
int size_parse(const char *s, uint64_t *bytes_out);

/*
 * Writes the shortest text that duration_parse() turns back into ms: "0", "30m", "90s",
 * "90m", "1500ms", "1d1s". Among texts of equal length, one where no later part reaches the
 * next larger unit wins ("25h1m" over "1d61m"), then the larger leading unit ("25h1m" over
 * "1501m"), so each value has exactly one text. Output is cut to len-1 bytes when buf is
 * smaller than DURATION_FORMAT_MAX_BYTES; len 0 writes nothing.
 */
void duration_format(uint64_t ms, char *buf, size_t len);

/* Writes "25M", "512K", "1G" when the size is an exact multiple of that unit, else the byte
 * count ("1536", "0"); the largest exact unit wins. Cut like duration_format(). */
void size_format(uint64_t bytes, char *buf, size_t len);

#endif
