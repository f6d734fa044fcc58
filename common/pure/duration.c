/*
 * duration.c - strict parsing and canonical formatting of durations and sizes.
 *
 * See duration.h for the grammar. Parsing never allocates and never trusts strtoull (it accepts
 * signs, spaces and "0x"); digits are read by hand with an explicit overflow check. Formatting
 * searches the handful of unit combinations for the shortest text, so that `config check`
 * prints what a person would write and the fuzzer can check format(parse(x)) round-trips.
 */
#include "common/pure/duration.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct unit {
    const char *name;
    uint64_t factor;
};

/* Largest first: a duration's units must appear in this order, each at most once. */
static const struct unit duration_units[] = {
    {"d", DURATION_MS_PER_DAY},
    {"h", DURATION_MS_PER_HOUR},
    {"m", DURATION_MS_PER_MINUTE},
    {"s", DURATION_MS_PER_SECOND},
    {"ms", 1},
};
#define DURATION_UNIT_COUNT (sizeof(duration_units) / sizeof(duration_units[0]))

static const struct unit size_units[] = {
    {"G", SIZE_GIB_BYTES},
    {"M", SIZE_MIB_BYTES},
    {"K", SIZE_KIB_BYTES},
};
#define SIZE_UNIT_COUNT (sizeof(size_units) / sizeof(size_units[0]))

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads one or more digits at *p into *n_out and advances *p; -1 on no digit or overflow. */
static int read_number(const char **p, uint64_t *n_out)
{
    const char *s = *p;
    uint64_t n = 0;

    if (!is_digit(*s))
        return -1;
    for (; is_digit(*s); s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *p = s;
    *n_out = n;
    return 0;
}

/* *acc += n * factor, or -1 when either step leaves uint64_t. */
static int add_scaled(uint64_t *acc, uint64_t n, uint64_t factor)
{
    if (factor != 0 && n > UINT64_MAX / factor)
        return -1;
    uint64_t v = n * factor;
    if (*acc > UINT64_MAX - v)
        return -1;
    *acc += v;
    return 0;
}

/* Index into duration_units of the unit starting at s (longest match, so "ms" is not "m"). */
static int match_duration_unit(const char *s, size_t *len_out)
{
    int best = -1;
    size_t best_len = 0;

    for (size_t i = 0; i < DURATION_UNIT_COUNT; i++) {
        size_t n = strlen(duration_units[i].name);
        if (n > best_len && strncmp(s, duration_units[i].name, n) == 0) {
            best = (int)i;
            best_len = n;
        }
    }
    *len_out = best_len;
    return best;
}

int duration_parse(const char *s, uint64_t *ms_out)
{
    const char *p = s;
    uint64_t total = 0;
    uint64_t n;
    int last_unit = -1;

    if (s == NULL || *s == '\0')
        return -1;
    if (read_number(&p, &n) < 0)
        return -1;
    if (*p == '\0') {
        /* A plain number means seconds ("0" included). */
        if (add_scaled(&total, n, DURATION_MS_PER_SECOND) < 0)
            return -1;
        *ms_out = total;
        return 0;
    }
    for (;;) {
        size_t ulen;
        int u = match_duration_unit(p, &ulen);
        if (u < 0 || u <= last_unit)
            return -1; /* unknown unit, or units not in strictly decreasing order */
        if (add_scaled(&total, n, duration_units[u].factor) < 0)
            return -1;
        last_unit = u;
        p += ulen;
        if (*p == '\0')
            break;
        /* Another NUMBER UNIT pair must follow; "1h30" (no unit) is refused here. */
        if (read_number(&p, &n) < 0 || *p == '\0')
            return -1;
    }
    *ms_out = total;
    return 0;
}

int size_parse(const char *s, uint64_t *bytes_out)
{
    const char *p = s;
    uint64_t n;
    uint64_t total = 0;
    uint64_t factor = 1;

    if (s == NULL || read_number(&p, &n) < 0)
        return -1;
    if (*p != '\0') {
        size_t i;
        for (i = 0; i < SIZE_UNIT_COUNT; i++) {
            char upper = size_units[i].name[0];
            if (*p == upper || *p == (char)(upper - 'A' + 'a'))
                break;
        }
        if (i == SIZE_UNIT_COUNT || p[1] != '\0')
            return -1;
        factor = size_units[i].factor;
    }
    if (add_scaled(&total, n, factor) < 0)
        return -1;
    *bytes_out = total;
    return 0;
}

/* One way to write a duration: its text and what ranks it. */
struct spelling {
    char text[DURATION_FORMAT_MAX_BYTES];
    size_t len;
    bool tidy;      /* no part after the first reaches the next larger unit ("61m" does) */
    size_t leading; /* index of the first unit; smaller is a larger unit */
};

/*
 * Writes ms (> 0) with exactly the units whose bits are set in mask, each taking as much as it
 * can in turn; -1 when that leaves a unit at 0 or a remainder, i.e. the set cannot spell ms.
 */
static int spell(uint64_t ms, unsigned mask, struct spelling *out)
{
    bool first = true;

    out->len = 0;
    out->tidy = true;
    for (size_t i = 0; i < DURATION_UNIT_COUNT; i++) {
        if ((mask & (1u << i)) == 0)
            continue;
        uint64_t n = ms / duration_units[i].factor;
        if (n == 0)
            return -1;
        ms %= duration_units[i].factor;
        if (first)
            out->leading = i;
        else if (n >= duration_units[i - 1].factor / duration_units[i].factor)
            out->tidy = false;
        first = false;
        int w = snprintf(out->text + out->len, sizeof(out->text) - out->len, "%llu%s",
                         (unsigned long long)n, duration_units[i].name);
        if (w < 0 || (size_t)w >= sizeof(out->text) - out->len)
            return -1; /* cannot happen: the longest spelling is under 30 bytes */
        out->len += (size_t)w;
    }
    return ms == 0 ? 0 : -1;
}

/*
 * The canonical text of ms > 0: the shortest spelling; at equal length a tidy one ("25h1m"
 * before "1d61m"); then the larger leading unit ("25h1m" before "1501m"). Each unit set is
 * tried with greedy counts (giving a unit less than it can take never shortens the text, as
 * the next unit down needs at least 24 times as much), five units give 31 sets.
 */
static void format_best(uint64_t ms, char out[DURATION_FORMAT_MAX_BYTES])
{
    struct spelling best, cand;
    bool have = false;

    for (unsigned mask = 1; mask < (1u << DURATION_UNIT_COUNT); mask++) {
        if (spell(ms, mask, &cand) < 0)
            continue;
        if (have) {
            if (cand.len != best.len) {
                if (cand.len > best.len)
                    continue;
            } else if (cand.tidy != best.tidy) {
                if (!cand.tidy)
                    continue;
            } else if (cand.leading >= best.leading) {
                continue;
            }
        }
        best = cand;
        have = true;
    }
    /* The set {ms} alone always spells ms, so have is true here. */
    memcpy(out, best.text, sizeof(best.text));
}

void duration_format(uint64_t ms, char *buf, size_t len)
{
    char text[DURATION_FORMAT_MAX_BYTES];

    if (len == 0)
        return;
    if (ms == 0)
        snprintf(text, sizeof(text), "0");
    else
        format_best(ms, text);
    snprintf(buf, len, "%s", text);
}

void size_format(uint64_t bytes, char *buf, size_t len)
{
    if (len == 0)
        return;
    for (size_t i = 0; bytes != 0 && i < SIZE_UNIT_COUNT; i++) {
        if (bytes % size_units[i].factor == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(bytes / size_units[i].factor),
                     size_units[i].name);
            return;
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long)bytes);
}
