/*
 * metrics_text.h - the Prometheus text exposition format (version 0.0.4), written into a growable
 * buffer: HELP and TYPE lines, samples with escaped label values, histograms.
 *
 * Pure: no I/O, no globals, so the unit tests check its output byte for byte. It does not know
 * which metrics exist (metrics.c does). Label names and metric names come from the program and
 * are trusted; label values are escaped as the format asks (backslash, double quote and line feed
 * become \\, \" and \n), and so is HELP text (backslash and line feed).
 *
 * Ownership: a struct metrics_text owns its buffer; metrics_text_free() releases it. A failed
 * append (-ENOMEM) latches: later appends do nothing and metrics_text_status() reports it, so a
 * formatter checks once at the end.
 */
#ifndef POSTERN_METRICS_TEXT_H
#define POSTERN_METRICS_TEXT_H

#include <stddef.h>
#include <stdint.h>

struct metrics_text {
    char *data; /* owned; NUL-terminated when len > 0 */
    size_t len;
    size_t cap;
    int status; /* 0, or -ENOMEM once an append failed */
};

/* Label pairs of one sample: names[i]="values[i]"; n may be 0. */
struct metrics_labels {
    const char *const *names;
    const char *const *values;
    size_t n;
};

void metrics_text_init(struct metrics_text *t);
void metrics_text_free(struct metrics_text *t);
int metrics_text_status(const struct metrics_text *t);
void metrics_text_append(struct metrics_text *t, const char *s, size_t n);
void metrics_text_printf(struct metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A label value, escaped. */
void metrics_text_escaped(struct metrics_text *t, const char *value);

/* "# HELP name text" and "# TYPE name type" (type: counter, gauge, histogram). */
void metrics_text_header(struct metrics_text *t, const char *name, const char *type,
                         const char *help);
/* One sample line: name{labels} value. */
void metrics_text_sample(struct metrics_text *t, const char *name, const struct metrics_labels *l,
                         uint64_t value);
void metrics_text_sample_signed(struct metrics_text *t, const char *name,
                                const struct metrics_labels *l, int64_t value);

/*
 * A histogram without labels: name_bucket{le="B"} for each upper bound (in the unit of bounds
 * and sum, scaled by 1/scale when printed: bounds in nanoseconds with scale 1e9 print seconds),
 * then le="+Inf", name_sum and name_count. counts[i] is the number of observations in bucket i
 * alone (counts has nbounds + 1 entries: the last is above every bound); the printed buckets are
 * cumulative and +Inf and _count are their total.
 */
void metrics_text_histogram(struct metrics_text *t, const char *name, const char *help,
                            const uint64_t *bounds, size_t nbounds, const uint64_t *counts,
                            uint64_t sum, double scale);

#endif
