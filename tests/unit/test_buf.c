/*
 * test_buf.c - unit tests for common/pure/buf.c: struct buf, struct outq and the line reader.
 *
 * The line reader cases live in one table (input, limit, expected events, expected leftover) and
 * each case is replayed whole, split at every byte position into two feeds, in fixed 3-byte
 * pieces and one byte at a time: the result must not depend on how TCP cut the stream. Every
 * replay also checks the byte accounting and the memory bound. Events are rendered as a string so
 * a failure prints got and want side by side: "L:text|" a CRLF line, "l:text|" a bare-LF line,
 * "T|" too long, "B|" bad line (NUL).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/buf.h"

#define ARRAY_LEN(a)     (sizeof(a) / sizeof((a)[0]))
#define EVENTS_MAX_BYTES 4096

/* ---- harness ---- */

struct replay {
    char events[EVENTS_MAX_BYTES]; /* rendered events */
    size_t events_len;
    uint64_t fed_bytes;  /* octets the reader accepted */
    uint64_t line_bytes; /* octets of LINE and BAD_LINE results, terminators included */
    size_t too_long;     /* TOO_LONG results */
};

static void render(struct replay *r, const char *s, size_t n)
{
    assert_true(r->events_len + n < sizeof(r->events));
    memcpy(r->events + r->events_len, s, n);
    r->events_len += n;
    r->events[r->events_len] = '\0';
}

/* Calls linereader_next() until NEED_MORE, rendering and checking each result. */
static void drain(struct linereader *lr, struct replay *r)
{
    /* Bounded: each LINE/BAD_LINE/TOO_LONG consumes at least one buffered octet. */
    for (size_t guard = 0; guard <= lr->in.limit_bytes + 1; guard++) {
        struct linereader_line line;
        enum linereader_status st = linereader_next(lr, &line);
        switch (st) {
        case LINEREADER_NEED_MORE:
            assert_null(line.data);
            return;
        case LINEREADER_LINE:
            assert_non_null(line.data);
            assert_true(line.len + (line.bare_lf ? 1 : 2) <= lr->max_line_bytes);
            assert_null(memchr(line.data, '\n', line.len));
            assert_int_equal(line.data[line.len], '\0');
            assert_int_equal(strlen(line.data), line.len);
            render(r, line.bare_lf ? "l:" : "L:", 2);
            render(r, line.data, line.len);
            render(r, "|", 1);
            r->line_bytes += line.len + (line.bare_lf ? 1 : 2);
            break;
        case LINEREADER_BAD_LINE:
            assert_non_null(memchr(line.data, '\0', line.len));
            render(r, "B|", 2);
            r->line_bytes += line.len + (line.bare_lf ? 1 : 2);
            break;
        case LINEREADER_TOO_LONG:
            assert_int_equal(line.len, lr->max_line_bytes);
            render(r, "T|", 2);
            r->too_long++;
            break;
        default:
            fail_msg("unknown status %d", (int)st);
        }
    }
    fail_msg("linereader_next() never returned NEED_MORE");
}

/* Every accepted octet is in a result, was skipped, or is still buffered. */
static void check_accounting(const struct linereader *lr, const struct replay *r)
{
    assert_int_equal(r->fed_bytes,
                     r->line_bytes + lr->skipped_bytes + (uint64_t)linereader_buffered(lr));
    assert_int_equal(r->too_long, lr->too_long_count);
}

/*
 * Feeds src[0..n) as the caller in conn.c would: offer, drain, offer the rest again. After a
 * drain the reader must take at least one octet, otherwise the caller would spin.
 */
static void feed_piece(struct linereader *lr, struct replay *r, const char *src, size_t n)
{
    size_t off = 0;
    size_t cap_before = lr->in.cap;
    for (size_t guard = 0; off < n; guard++) {
        assert_true(guard <= n);
        size_t k = linereader_feed(lr, src + off, n - off);
        assert_true(k > 0);
        assert_true(k <= n - off);
        off += k;
        r->fed_bytes += k;
        assert_true(linereader_buffered(lr) <= lr->max_line_bytes + LINEREADER_SLACK_BYTES);
        drain(lr, r);
        check_accounting(lr, r);
    }
    /* The reader never allocates after init. */
    assert_int_equal(lr->in.cap, cap_before);
}

/* Feeds input cut at the ascending positions cuts[0..ncuts). */
static void replay_cuts(struct linereader *lr, struct replay *r, const char *in, size_t n,
                        const size_t *cuts, size_t ncuts)
{
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        feed_piece(lr, r, in + from, to - from);
        from = to;
    }
}

/* ---- struct buf ---- */

static void test_buf_append_consume(void **state)
{
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_unread(&b), 0);
    assert_null(buf_unread_data(&b));
    assert_int_equal(buf_room(&b), 8);

    assert_int_equal(buf_append(&b, "abcde", 5), 0);
    assert_int_equal(buf_unread(&b), 5);
    assert_memory_equal(buf_unread_data(&b), "abcde", 5);
    assert_true(b.cap >= 5 && b.cap <= 8);

    /* All or nothing: 4 more would pass the limit, and the content stays as it was. */
    assert_int_equal(buf_append(&b, "fghi", 4), -ENOBUFS);
    assert_int_equal(buf_unread(&b), 5);
    assert_memory_equal(buf_unread_data(&b), "abcde", 5);

    buf_consume(&b, 3);
    assert_int_equal(buf_unread(&b), 2);
    assert_memory_equal(buf_unread_data(&b), "de", 2);
    assert_int_equal(buf_room(&b), 6);

    /* Needs the consumed space again: compaction, no growth past the limit. */
    assert_int_equal(buf_append(&b, "fghijk", 6), 0);
    assert_memory_equal(buf_unread_data(&b), "defghijk", 8);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.cap, 8);
    assert_int_equal(buf_room(&b), 0);

    buf_consume(&b, 8);
    assert_int_equal(buf_unread(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);

    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    buf_free(&b); /* a second free is harmless */
}

static void test_buf_compact_clear_reserve(void **state)
{
    struct buf b;
    buf_init(&b, 1024);
    assert_int_equal(buf_reserve(&b, 2048), -ENOBUFS);
    assert_int_equal(buf_reserve(&b, 100), 0);
    assert_true(b.cap >= 100 && b.cap <= 1024);
    size_t cap = b.cap;
    assert_int_equal(buf_reserve(&b, 10), 0);
    assert_int_equal(b.cap, cap);

    assert_int_equal(buf_append(&b, "0123456789", 10), 0);
    buf_consume(&b, 4);
    buf_compact(&b);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "456789", 6);

    buf_clear(&b);
    assert_int_equal(buf_unread(&b), 0);
    assert_int_equal(b.cap, cap);

    /* Growth by many small appends ends exactly at the limit. */
    for (size_t i = 0; i < 1024; i++)
        assert_int_equal(buf_append(&b, "x", 1), 0);
    assert_int_equal(buf_append(&b, "x", 1), -ENOBUFS);
    assert_int_equal(b.cap, 1024);
    buf_free(&b);
}

/* ---- struct outq ---- */

static void test_outq_write_cycle(void **state)
{
    struct outq q;
    const unsigned char *p = (const unsigned char *)"junk";
    outq_init(&q, 64);

    assert_int_equal(outq_write_begin(&q, &p), 0);
    assert_null(p);
    assert_false(outq_is_writing(&q));

    assert_int_equal(outq_append(&q, "250 OK\r\n", 8), 0);
    assert_int_equal(outq_unsent_bytes(&q), 8);
    size_t n = outq_write_begin(&q, &p);
    assert_int_equal(n, 8);
    assert_memory_equal(p, "250 OK\r\n", 8);
    assert_true(outq_is_writing(&q));

    /* Replies queued during the write do not touch the bytes libuv holds. */
    const unsigned char *in_flight = p;
    for (int i = 0; i < 5; i++)
        assert_int_equal(outq_append(&q, "354 go\r\n", 8), 0);
    assert_ptr_equal(in_flight, p);
    assert_memory_equal(in_flight, "250 OK\r\n", 8);
    assert_int_equal(outq_unsent_bytes(&q), 48);

    /* One write at a time. */
    const unsigned char *p2 = NULL;
    assert_int_equal(outq_write_begin(&q, &p2), 0);
    assert_null(p2);

    outq_write_done(&q);
    assert_false(outq_is_writing(&q));
    assert_int_equal(outq_unsent_bytes(&q), 40);
    n = outq_write_begin(&q, &p);
    assert_int_equal(n, 40);
    assert_memory_equal(p, "354 go\r\n354 go\r\n354 go\r\n354 go\r\n354 go\r\n", 40);
    outq_write_done(&q);
    assert_int_equal(outq_unsent_bytes(&q), 0);
    assert_int_equal(outq_write_begin(&q, &p), 0);
    outq_free(&q);
    assert_null(q.pending.data);
    assert_null(q.in_flight.data);
}

static void test_outq_limit(void **state)
{
    /* The limit covers pending and in-flight together. */
    static const struct {
        size_t append_bytes;
        bool begin_write_after;
        int want_rc;
        size_t want_unsent;
    } steps[] = {
        {10, true, 0, 10},        {7, false, -ENOBUFS, 10}, {6, false, 0, 16},
        {1, false, -ENOBUFS, 16}, {0, false, 0, 16},
    };
    struct outq q;
    const unsigned char *p;
    char fill[16];
    memset(fill, 'r', sizeof(fill));
    outq_init(&q, 16);
    for (size_t i = 0; i < ARRAY_LEN(steps); i++) {
        assert_int_equal(outq_append(&q, fill, steps[i].append_bytes), steps[i].want_rc);
        if (steps[i].begin_write_after)
            assert_int_equal(outq_write_begin(&q, &p), steps[i].append_bytes);
        assert_int_equal(outq_unsent_bytes(&q), steps[i].want_unsent);
    }
    outq_write_done(&q);
    assert_int_equal(outq_unsent_bytes(&q), 6);
    assert_int_equal(outq_append(&q, fill, 10), 0);
    outq_free(&q);
}

/* ---- line reader: limits ---- */

static void test_limits_match_rfcs(void **state)
{
    assert_int_equal(SMTP_LINE_MAX_BYTES, 512);                  /* RFC 5321 4.5.3.1.4 */
    assert_int_equal(SMTP_REPLY_LINE_MAX_BYTES, 512);            /* RFC 5321 4.5.3.1.5 */
    assert_int_equal(POP3_LINE_MAX_BYTES, 255);                  /* RFC 2449 4 */
    assert_true(SMTP_AUTH_LINE_MAX_BYTES > SMTP_LINE_MAX_BYTES); /* RFC 4954 4 */
}

static void test_init_rejects_bad_limits(void **state)
{
    static const struct {
        size_t max, largest;
        int want_rc;
    } cases[] = {
        {SMTP_LINE_MAX_BYTES, SMTP_AUTH_LINE_MAX_BYTES, 0},
        {POP3_LINE_MAX_BYTES, POP3_LINE_MAX_BYTES, 0},
        {LINEREADER_MIN_LINE_BYTES, LINEREADER_MIN_LINE_BYTES, 0},
        {LINEREADER_MIN_LINE_BYTES - 1, 16, -EINVAL},
        {0, 16, -EINVAL},
        {32, 16, -EINVAL},
        {16, SIZE_MAX, -EINVAL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct linereader lr;
        int rc = linereader_init(&lr, cases[i].max, cases[i].largest);
        assert_int_equal(rc, cases[i].want_rc);
        if (rc == 0) {
            assert_int_equal(lr.max_line_bytes, cases[i].max);
            assert_int_equal(lr.in.cap, cases[i].largest + LINEREADER_SLACK_BYTES);
        } else {
            assert_null(lr.in.data);
        }
        linereader_free(&lr);
        assert_null(lr.in.data);
        linereader_free(&lr);
    }
}

/* ---- line reader: the table ---- */

#define S(lit) lit, sizeof(lit) - 1

struct line_case {
    const char *name;
    size_t max;
    const char *in;
    size_t in_len;
    const char *want;     /* rendered events */
    size_t want_buffered; /* octets left in the reader */
    bool want_skipping;
};

/* 14 octets + CRLF and 15 octets + LF are exactly 16; one more is too long. */
#define L14 "abcdefghijklmn"
#define L15 "abcdefghijklmno"
#define X20 "xxxxxxxxxxxxxxxxxxxx"
#define X40 X20 X20

static const struct line_case line_cases[] = {
    {"one line", 16, S("NOOP\r\n"), "L:NOOP|", 0, false},
    {"pipelined", 16, S("EHLO a\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n"),
     "L:EHLO a|L:MAIL FROM:<a>|L:RCPT TO:<b>|L:DATA|", 0, false},
    {"empty lines", 16, S("\r\n\n\r\n"), "L:|l:|L:|", 0, false},
    {"bare LF", 16, S("NOOP\nQUIT\r\n"), "l:NOOP|L:QUIT|", 0, false},
    {"CR inside is data", 16, S("NO\rOP\r\n"), "L:NO\rOP|", 0, false},
    {"CR CR LF keeps one CR", 16, S("NOOP\r\r\n"), "L:NOOP\r|", 0, false},
    {"CR without LF waits", 16, S("NOOP\r"), "", 5, false},
    {"lone CR then line", 16, S("\rQUIT\r\n"), "L:\rQUIT|", 0, false},
    {"partial line waits", 16, S("QUIT\r\nNOO"), "L:QUIT|", 3, false},
    {"NUL voids the line", 16, S("NO\0OP\r\nQUIT\r\n"), "B|L:QUIT|", 0, false},
    {"NUL before CRLF", 16, S("NOOP\0\r\n"), "B|", 0, false},
    {"NUL alone, bare LF", 16, S("\0\nRSET\r\n"), "B|L:RSET|", 0, false},
    {"exactly max", 16, S(L14 "\r\nQUIT\r\n"), "L:" L14 "|L:QUIT|", 0, false},
    {"exactly max, bare LF", 16, S(L15 "\n"), "l:" L15 "|", 0, false},
    {"max+1", 16, S(L15 "\r\nQUIT\r\n"), "T|L:QUIT|", 0, false},
    {"max+1, bare LF", 16, S(L15 "p\nQUIT\r\n"), "T|L:QUIT|", 0, false},
    {"max octets, no LF yet", 16, S(L15 "\r"), "T|", 0, true},
    {"tail is not a command", 16, S("abcdefghijklmnopqrstuvwxyzQUIT\r\nRSET\r\n"), "T|L:RSET|", 0,
     false},
    {"tail holds CRLF-less command", 16, S(X20 "QUIT\rQUIT\nNOOP\r\n"), "T|L:NOOP|", 0, false},
    {"two long lines", 16, S(X20 "\r\n" X40 "\nHELO\r\n"), "T|T|L:HELO|", 0, false},
    {"long line with NUL", 16, S("xx\0" X20 "\r\nNOOP\r\n"), "T|L:NOOP|", 0, false},
    {"long line still open", 16, S(X40), "T|", 0, true},
    {"long line then partial", 16, S(X40 "\r\nQU"), "T|", 2, false},
    {"smallest limit", 3, S("a\r\nb\nab\nabc\r\nc\r\n"), "L:a|l:b|l:ab|T|L:c|", 0, false},
    {"POP3 limit", POP3_LINE_MAX_BYTES, S("USER alice\r\nPASS secret\r\nSTAT\r\n"),
     "L:USER alice|L:PASS secret|L:STAT|", 0, false},
};

static void check_case(const struct line_case *c, const size_t *cuts, size_t ncuts, const char *how)
{
    struct linereader lr;
    struct replay r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(linereader_init(&lr, c->max, c->max), 0);
    replay_cuts(&lr, &r, c->in, c->in_len, cuts, ncuts);
    if (strcmp(r.events, c->want) != 0 || linereader_buffered(&lr) != c->want_buffered ||
        linereader_is_skipping(&lr) != c->want_skipping)
        fail_msg("case \"%s\" fed %s: got \"%s\" buffered=%zu skipping=%d, want \"%s\" "
                 "buffered=%zu skipping=%d",
                 c->name, how, r.events, linereader_buffered(&lr), linereader_is_skipping(&lr),
                 c->want, c->want_buffered, c->want_skipping);
    check_accounting(&lr, &r);
    linereader_free(&lr);
}

static void test_lines_whole(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(line_cases); i++)
        check_case(&line_cases[i], NULL, 0, "whole");
}

static void test_lines_split_in_two(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(line_cases); i++) {
        for (size_t at = 0; at <= line_cases[i].in_len; at++) {
            char how[32];
            snprintf(how, sizeof(how), "split at %zu", at);
            check_case(&line_cases[i], &at, 1, how);
        }
    }
}

static void test_lines_split_in_three(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(line_cases); i++) {
        size_t n = line_cases[i].in_len;
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                size_t cuts[2] = {a, b};
                char how[48];
                snprintf(how, sizeof(how), "split at %zu and %zu", a, b);
                check_case(&line_cases[i], cuts, 2, how);
            }
        }
    }
}

static void test_lines_single_bytes(void **state)
{
    size_t cuts[128];
    for (size_t i = 0; i < ARRAY_LEN(line_cases); i++) {
        size_t n = line_cases[i].in_len;
        assert_true(n <= ARRAY_LEN(cuts));
        for (size_t k = 0; k < n; k++)
            cuts[k] = k + 1;
        check_case(&line_cases[i], cuts, n, "one byte at a time");
    }
}

/* ---- line reader: long input, back-pressure ---- */

static void test_one_mib_line_bounded(void **state)
{
    enum { PIECE = 4096, TOTAL = 1024 * 1024 };
    static char piece[PIECE];
    struct linereader lr;
    struct replay r;
    memset(&r, 0, sizeof(r));
    memset(piece, 'A', sizeof(piece));
    /* "QUIT\r\n" inside the long line must be skipped with it, wherever it falls. */
    memcpy(piece + 100, "QUIT\r", 5);
    assert_int_equal(linereader_init(&lr, SMTP_LINE_MAX_BYTES, SMTP_AUTH_LINE_MAX_BYTES), 0);
    size_t cap = lr.in.cap;
    for (size_t sent = 0; sent < TOTAL; sent += PIECE) {
        feed_piece(&lr, &r, piece, PIECE);
        assert_true(linereader_buffered(&lr) <= SMTP_LINE_MAX_BYTES + LINEREADER_SLACK_BYTES);
        assert_int_equal(lr.in.cap, cap);
    }
    assert_string_equal(r.events, "T|");
    assert_true(linereader_is_skipping(&lr));
    feed_piece(&lr, &r, S("\r\nNOOP\r\n"));
    assert_string_equal(r.events, "T|L:NOOP|");
    assert_int_equal(lr.too_long_count, 1);
    assert_int_equal(lr.skipped_bytes, TOTAL + 2);
    assert_int_equal(linereader_buffered(&lr), 0);
    check_accounting(&lr, &r);
    linereader_free(&lr);
}

static void test_feed_takes_what_fits(void **state)
{
    enum { LINES = 200 };
    static char in[LINES * 6];
    struct linereader lr;
    struct linereader_line line;
    for (size_t i = 0; i < LINES; i++)
        memcpy(in + i * 6, "NOOP\r\n", 6);
    assert_int_equal(linereader_init(&lr, SMTP_LINE_MAX_BYTES, SMTP_AUTH_LINE_MAX_BYTES), 0);

    /* The reader holds one maximal line plus slack, not its whole (AUTH-sized) allocation. */
    size_t k = linereader_feed(&lr, in, sizeof(in));
    assert_int_equal(k, SMTP_LINE_MAX_BYTES + LINEREADER_SLACK_BYTES);
    /* Full: nothing more until lines are taken out. */
    assert_int_equal(linereader_feed(&lr, in + k, sizeof(in) - k), 0);

    size_t off = k, lines = 0;
    for (size_t guard = 0; guard < 2 * LINES; guard++) {
        enum linereader_status st = linereader_next(&lr, &line);
        if (st == LINEREADER_NEED_MORE) {
            if (off == sizeof(in))
                break;
            size_t got = linereader_feed(&lr, in + off, sizeof(in) - off);
            assert_true(got > 0);
            off += got;
            continue;
        }
        assert_int_equal(st, LINEREADER_LINE);
        assert_string_equal(line.data, "NOOP");
        lines++;
    }
    assert_int_equal(lines, LINES);
    assert_int_equal(off, sizeof(in));
    assert_int_equal(linereader_buffered(&lr), 0);
    linereader_free(&lr);
}

/* ---- line reader: changing the limit ---- */

static void test_set_max_between_lines(void **state)
{
    /* Each step: optionally set a new limit, feed, expect these events since the last step. */
    static const struct {
        size_t set_max; /* 0: leave as is */
        int want_rc;
        const char *in;
        size_t in_len;
        const char *want;
    } steps[] = {
        {0, 0, S(X20 "\r\n"), "T|"},
        {64, 0, S(X20 "\r\n"), "L:" X20 "|"},
        {16, 0, S(X20 "\r\n"), "T|"},
        /* Refused changes leave the limit at 16. */
        {LINEREADER_MIN_LINE_BYTES - 1, -EINVAL, S(X20 "\r\n"), "T|"},
        {65, -EINVAL, S(X20 "\r\n"), "T|"},
        {64, 0, S(X40 "\r\n"), "L:" X40 "|"},
        /* A partial line is judged by the limit in force when it completes. */
        {0, 0, S(X20), ""},
        {16, 0, S("\r\n"), "T|"},
        {64, 0, S(X40 X40 "\r\nNOOP\r\n"), "T|L:NOOP|"},
    };
    struct linereader lr;
    struct replay r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(linereader_init(&lr, 16, 64), 0);
    for (size_t i = 0; i < ARRAY_LEN(steps); i++) {
        if (steps[i].set_max != 0)
            assert_int_equal(linereader_set_max(&lr, steps[i].set_max), steps[i].want_rc);
        size_t before = r.events_len;
        feed_piece(&lr, &r, steps[i].in, steps[i].in_len);
        if (strcmp(r.events + before, steps[i].want) != 0)
            fail_msg("step %zu: got \"%s\", want \"%s\"", i, r.events + before, steps[i].want);
    }
    check_accounting(&lr, &r);
    linereader_free(&lr);
}

/* ---- line reader: switching to data mode, STARTTLS ---- */

static void test_take_buffered(void **state)
{
    static const struct {
        const char *name;
        const char *in;
        size_t in_len;
        size_t lines_first; /* LINE results to take before switching */
        const char *want_line;
        const char *want_taken;
        size_t want_taken_len;
    } cases[] = {
        {"nothing behind DATA", S("DATA\r\n"), 1, "DATA", "", 0},
        {"pipelined body", S("DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"), 1, "DATA",
         S("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")},
        {"partial line behind", S("DATA\r\nSub"), 1, "DATA", S("Sub")},
        {"bare LF DATA", S("DATA\nX\r\n"), 1, "DATA", S("X\r\n")},
        {"after two lines", S("RCPT TO:<a>\r\nDATA\r\n\0bin\n"), 2, "DATA", S("\0bin\n")},
        {"before any line", S("abc\r\n"), 0, "", S("abc\r\n")},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct linereader lr;
        struct linereader_line line;
        const unsigned char *p = (const unsigned char *)"junk";
        assert_int_equal(linereader_init(&lr, SMTP_LINE_MAX_BYTES, SMTP_LINE_MAX_BYTES), 0);
        assert_int_equal(linereader_feed(&lr, cases[i].in, cases[i].in_len), cases[i].in_len);
        for (size_t k = 0; k < cases[i].lines_first; k++)
            assert_int_equal(linereader_next(&lr, &line), LINEREADER_LINE);
        if (cases[i].lines_first > 0)
            assert_string_equal(line.data, cases[i].want_line);
        assert_int_equal(linereader_buffered(&lr), cases[i].want_taken_len);
        size_t n = linereader_take_buffered(&lr, &p);
        if (n != cases[i].want_taken_len)
            fail_msg("case \"%s\": took %zu, want %zu", cases[i].name, n, cases[i].want_taken_len);
        if (n == 0)
            assert_null(p);
        else
            assert_memory_equal(p, cases[i].want_taken, n);
        /* Drained: nothing is returned twice. */
        assert_int_equal(linereader_buffered(&lr), 0);
        assert_int_equal(linereader_next(&lr, &line), LINEREADER_NEED_MORE);
        assert_int_equal(linereader_take_buffered(&lr, &p), 0);
        /* Back to line mode after the message. */
        assert_int_equal(linereader_feed(&lr, S("NOOP\r\n")), 6);
        assert_int_equal(linereader_next(&lr, &line), LINEREADER_LINE);
        assert_string_equal(line.data, "NOOP");
        linereader_free(&lr);
    }
}

static void test_take_buffered_with_backpressure(void **state)
{
    /* More body behind DATA than the reader holds: taken + kept by the caller == the body. */
    enum { BODY = 2000 };
    static char in[6 + BODY];
    static char body_seen[BODY];
    struct linereader lr;
    struct linereader_line line;
    const unsigned char *p;
    memcpy(in, "DATA\r\n", 6);
    for (size_t i = 0; i < BODY; i++)
        in[6 + i] = (char)('a' + i % 26);
    assert_int_equal(linereader_init(&lr, SMTP_LINE_MAX_BYTES, SMTP_LINE_MAX_BYTES), 0);
    size_t k = linereader_feed(&lr, in, sizeof(in));
    assert_true(k < sizeof(in));
    assert_int_equal(linereader_next(&lr, &line), LINEREADER_LINE);
    assert_string_equal(line.data, "DATA");
    size_t n = linereader_take_buffered(&lr, &p);
    assert_int_equal(n, k - 6);
    memcpy(body_seen, p, n);
    /* The caller hands in[k..] to the DATA scanner directly. */
    memcpy(body_seen + n, in + k, sizeof(in) - k);
    assert_int_equal(n + (sizeof(in) - k), BODY);
    assert_memory_equal(body_seen, in + 6, BODY);
    linereader_free(&lr);
}

static void test_take_buffered_ends_skip(void **state)
{
    struct linereader lr;
    struct linereader_line line;
    const unsigned char *p;
    assert_int_equal(linereader_init(&lr, 16, 16), 0);
    assert_int_equal(linereader_feed(&lr, S(X20)), 20);
    assert_int_equal(linereader_next(&lr, &line), LINEREADER_TOO_LONG);
    assert_true(linereader_is_skipping(&lr));
    assert_int_equal(linereader_take_buffered(&lr, &p), 0);
    assert_false(linereader_is_skipping(&lr));
    assert_int_equal(linereader_feed(&lr, S("abc\r\n")), 5);
    assert_int_equal(linereader_next(&lr, &line), LINEREADER_LINE);
    assert_string_equal(line.data, "abc");
    linereader_free(&lr);
}

static void test_discard(void **state)
{
    static const struct {
        const char *name;
        const char *before;
        size_t before_len;
        const char *want_first; /* rendered events before the discard */
        size_t want_discarded;
    } cases[] = {
        /* CVE-2011-0411: the MAIL behind STARTTLS must never run inside TLS. */
        {"pipelined after STARTTLS", S("STARTTLS\r\nMAIL FROM:<evil>\r\n"), "L:STARTTLS|", 18},
        {"partial after STLS", S("STLS\r\nUSER x"), "L:STLS|", 6},
        {"nothing behind", S("STARTTLS\r\n"), "L:STARTTLS|", 0},
        {"while skipping", S("STARTTLS\r\n" X40), "L:STARTTLS|T|", 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct linereader lr;
        struct replay r;
        struct linereader_line line;
        memset(&r, 0, sizeof(r));
        assert_int_equal(linereader_init(&lr, 32, 32), 0);
        /* Only the first line is handled before the switch; the rest must stay buffered. */
        assert_int_equal(linereader_feed(&lr, cases[i].before, cases[i].before_len),
                         cases[i].before_len);
        assert_int_equal(linereader_next(&lr, &line), LINEREADER_LINE);
        render(&r, "L:", 2);
        render(&r, line.data, line.len);
        render(&r, "|", 1);
        if (linereader_buffered(&lr) >= 32)
            drain(&lr, &r);
        assert_string_equal(r.events, cases[i].want_first);
        assert_int_equal(linereader_buffered(&lr), cases[i].want_discarded);
        assert_int_equal(linereader_discard(&lr), cases[i].want_discarded);
        assert_int_equal(linereader_buffered(&lr), 0);
        assert_false(linereader_is_skipping(&lr));
        assert_int_equal(linereader_next(&lr, &line), LINEREADER_NEED_MORE);
        /* The first line after the handshake is read normally. */
        assert_int_equal(linereader_feed(&lr, S("EHLO x\r\n")), 8);
        assert_int_equal(linereader_next(&lr, &line), LINEREADER_LINE);
        assert_string_equal(line.data, "EHLO x");
        linereader_free(&lr);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_consume),
        cmocka_unit_test(test_buf_compact_clear_reserve),
        cmocka_unit_test(test_outq_write_cycle),
        cmocka_unit_test(test_outq_limit),
        cmocka_unit_test(test_limits_match_rfcs),
        cmocka_unit_test(test_init_rejects_bad_limits),
        cmocka_unit_test(test_lines_whole),
        cmocka_unit_test(test_lines_split_in_two),
        cmocka_unit_test(test_lines_split_in_three),
        cmocka_unit_test(test_lines_single_bytes),
        cmocka_unit_test(test_one_mib_line_bounded),
        cmocka_unit_test(test_feed_takes_what_fits),
        cmocka_unit_test(test_set_max_between_lines),
        cmocka_unit_test(test_take_buffered),
        cmocka_unit_test(test_take_buffered_with_backpressure),
        cmocka_unit_test(test_take_buffered_ends_skip),
        cmocka_unit_test(test_discard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
