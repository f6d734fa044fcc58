/*
 * metrics_text.c - the Prometheus text exposition format, version 0.0.4 (metrics_text.h).
 *
 * It appends text to a growable buffer and nothing else: which metrics exist, and where their
 * numbers come from, is metrics.c's business.
 */
#include "server/metrics/metrics_text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first allocation: a scrape is a few kilobytes, so it rarely grows past this. */
#define METRICS_TEXT_FIRST_BYTES 8192

void metrics_text_init(struct metrics_text *t)
{
    *t = (struct metrics_text){0};
}

void metrics_text_free(struct metrics_text *t)
{
    free(t->data);
    *t = (struct metrics_text){0};
}

int metrics_text_status(const struct metrics_text *t)
{
    return t->status;
}

/* Room for n more octets and a NUL. */
static int reserve(struct metrics_text *t, size_t n)
{
    if (t->status != 0)
        return t->status;
    if (n > SIZE_MAX / 2 - t->len) {
        t->status = -ENOMEM;
        return t->status;
    }
    size_t need = t->len + n + 1;
    if (need <= t->cap)
        return 0;
    size_t cap = t->cap > 0 ? t->cap : METRICS_TEXT_FIRST_BYTES;
    while (cap < need)
        cap *= 2;
    char *p = realloc(t->data, cap);
    if (p == NULL) {
        t->status = -ENOMEM;
        return t->status;
    }
    t->data = p;
    t->cap = cap;
    return 0;
}

void metrics_text_append(struct metrics_text *t, const char *s, size_t n)
{
    if (reserve(t, n) != 0)
        return;
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

void metrics_text_printf(struct metrics_text *t, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        /* Every line the formatter prints is far shorter: a longer one is a bug, not data. */
        if (t->status == 0)
            t->status = -ENOMEM;
        return;
    }
    metrics_text_append(t, line, (size_t)n);
}

/* Label values and HELP text share the escapes; only values escape the double quote. */
static void escaped(struct metrics_text *t, const char *s, int quote)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\\')
            metrics_text_append(t, "\\\\", 2);
        else if (*p == '\n')
            metrics_text_append(t, "\\n", 2);
        else if (*p == '"' && quote)
            metrics_text_append(t, "\\\"", 2);
        else
            metrics_text_append(t, p, 1);
    }
}

void metrics_text_escaped(struct metrics_text *t, const char *value)
{
    escaped(t, value, 1);
}

void metrics_text_header(struct metrics_text *t, const char *name, const char *type,
                         const char *help)
{
    metrics_text_printf(t, "# HELP %s ", name);
    escaped(t, help, 0);
    metrics_text_printf(t, "\n# TYPE %s %s\n", name, type);
}

static void labels(struct metrics_text *t, const struct metrics_labels *l)
{
    if (l == NULL || l->n == 0)
        return;
    metrics_text_append(t, "{", 1);
    for (size_t i = 0; i < l->n; i++) {
        metrics_text_printf(t, "%s%s=\"", i > 0 ? "," : "", l->names[i]);
        metrics_text_escaped(t, l->values[i]);
        metrics_text_append(t, "\"", 1);
    }
    metrics_text_append(t, "}", 1);
}

void metrics_text_sample(struct metrics_text *t, const char *name, const struct metrics_labels *l,
                         uint64_t value)
{
    metrics_text_append(t, name, strlen(name));
    labels(t, l);
    metrics_text_printf(t, " %llu\n", (unsigned long long)value);
}

void metrics_text_sample_signed(struct metrics_text *t, const char *name,
                                const struct metrics_labels *l, int64_t value)
{
    metrics_text_append(t, name, strlen(name));
    labels(t, l);
    metrics_text_printf(t, " %lld\n", (long long)value);
}

void metrics_text_histogram(struct metrics_text *t, const char *name, const char *help,
                            const uint64_t *bounds, size_t nbounds, const uint64_t *counts,
                            uint64_t sum, double scale)
{
    metrics_text_header(t, name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < nbounds; i++) {
        cumulative += counts[i];
        /* %.9g prints 0.0005 and 64 as such: the bounds are round in their unit. */
        metrics_text_printf(t, "%s_bucket{le=\"%.9g\"} %llu\n", name, (double)bounds[i] / scale,
                            (unsigned long long)cumulative);
    }
    cumulative += counts[nbounds];
    metrics_text_printf(t, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cumulative);
    metrics_text_printf(t, "%s_sum %.9g\n", name, (double)sum / scale);
    metrics_text_printf(t, "%s_count %llu\n", name, (unsigned long long)cumulative);
}
