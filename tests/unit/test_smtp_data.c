/*
 * test_smtp_data.c - unit tests for common/pure/smtp_data.c, the DATA end-of-data scanner.
 *
 * The scanning cases live in one table (input, limit, expected status, octets used, stored content
 * and counters) and each case is replayed whole, split at every position into two feeds, split at
 * every pair of positions into three, and one byte at a time: TCP may cut the stream anywhere and
 * the result must not change. Every replay also checks the invariants: the content holds no bare
 * CR or LF, is empty or ends in CRLF, never passes the limit, the block never grows past
 * reserve + limit, and the counters agree with the content. Separate tests cover the prefix,
 * handing the block over, reuse, line statistics and a 20 MiB message in 64 KiB chunks. The
 * spilling tests replay the same table with tiny in-memory parts (the spilled octets followed by
 * the block's must be the same content, whatever the cuts), a spill function that fails, and the
 * 20 MiB message with a 128 KiB in-memory part. Raw content (BDAT) is checked cut once at every
 * position: dots kept, no end marker, bare CR and LF made CRLF, a final CRLF added when missing.
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

#include "common/pure/smtp_data.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define S(lit)       lit, sizeof(lit) - 1

/* Small on purpose, so the prefix tests also see the "longer than the reserve" path. */
#define TEST_RESERVE_BYTES 16
#define TEST_MAX_BYTES     4096

/* ---- the table ---- */

struct data_case {
    const char *name;
    size_t max;
    const char *in;
    size_t in_len;
    enum smtp_data_status want_status;
    size_t want_used;
    const char *want_body; /* the content as stored (for TOO_BIG: as it would have been) */
    size_t want_body_len;
    uint64_t want_bare_lf, want_bare_cr, want_unstuffed;
};

#define MORE    SMTP_DATA_MORE
#define DONE    SMTP_DATA_DONE
#define TOO_BIG SMTP_DATA_DONE_TOO_BIG
#define M       TEST_MAX_BYTES

/* Cases whose end is never found use all input and report MORE; their body is not checked. */
static const struct data_case data_cases[] = {
    /* plain messages */
    {"simple", M, S("Subject: x\r\n\r\nhello\r\n.\r\n"), DONE, 24, S("Subject: x\r\n\r\nhello\r\n"),
     0, 0, 0},
    {"empty message", M, S(".\r\n"), DONE, 3, S(""), 0, 0, 0},
    {"empty message, QUIT behind", M, S(".\r\nQUIT\r\n"), DONE, 3, S(""), 0, 0, 0},
    {"CRLF.CRLF at the very start", M, S("\r\n.\r\n"), DONE, 5, S("\r\n"), 0, 0, 0},
    {"pipelined QUIT", M, S("a\r\n.\r\nQUIT\r\n"), DONE, 6, S("a\r\n"), 0, 0, 0},
    {"pipelined MAIL and a second dot", M, S("a\r\n.\r\nMAIL FROM:<x@y>\r\n.\r\n"), DONE, 6,
     S("a\r\n"), 0, 0, 0},
    {"blank lines kept", M, S("\r\n\r\na\r\n\r\n.\r\n"), DONE, 12, S("\r\n\r\na\r\n\r\n"), 0, 0, 0},
    /* transparency, RFC 5321 4.5.2 */
    {"stuffed lines", M, S("..x\r\n..\r\n...\r\n.\r\n"), DONE, 17, S(".x\r\n.\r\n..\r\n"), 0, 0, 3},
    {"stuffed first line", M, S("..\r\n.\r\n"), DONE, 7, S(".\r\n"), 0, 0, 1},
    {"dot inside a line", M, S("a.b\r\na.\r\n. x\r\n.\r\n"), DONE, 17, S("a.b\r\na.\r\n x\r\n"), 0,
     0, 1},
    {"abc.CRLF is no end", M, S("abc.\r\n"), MORE, 6, S(""), 0, 0, 0},
    {"abc.CRLF then the end", M, S("abc.\r\n.\r\n"), DONE, 9, S("abc.\r\n"), 0, 0, 0},
    {"dot space CRLF is no end", M, S("x\r\n. \r\n"), MORE, 7, S(""), 0, 0, 0},
    {"dot dot CRLF is no end", M, S("x\r\n..\r\n"), MORE, 7, S(""), 0, 0, 0},
    {"no CRLF before the dot", M, S("."), MORE, 1, S(""), 0, 0, 0},
    {"dot CR at the start waits", M, S(".\r"), MORE, 2, S(""), 0, 0, 0},
    /* smuggling variants: never an end */
    {"LF.LF", M, S("a\n.\n"), MORE, 4, S(""), 0, 0, 0},
    {"CRLF.LF", M, S("a\r\n.\n"), MORE, 5, S(""), 0, 0, 0},
    {"LF.CRLF", M, S("a\n.\r\n"), MORE, 5, S(""), 0, 0, 0},
    {"CR.CR", M, S("a\r.\r"), MORE, 4, S(""), 0, 0, 0},
    {"CRLF.CR", M, S("a\r\n.\rb"), MORE, 6, S(""), 0, 0, 0},
    {"CRLF.CRCRLF", M, S("a\r\n.\r\r\n"), MORE, 7, S(""), 0, 0, 0},
    {"LF.LF at the start", M, S("\n.\n"), MORE, 3, S(""), 0, 0, 0},
    {"dot LF at the start", M, S(".\n"), MORE, 2, S(""), 0, 0, 0},
    {"CR.CRLF", M, S("a\r.\r\n"), MORE, 5, S(""), 0, 0, 0},
    /* ... and what is stored when the real end follows */
    {"LF.LF stored as a dot line", M, S("a\n.\nb\r\n.\r\n"), DONE, 10, S("a\r\n.\r\nb\r\n"), 2, 0,
     0},
    {"CRLF.LF: dot removed, bare LF", M, S("a\r\n.\nb\r\n.\r\n"), DONE, 11, S("a\r\n\r\nb\r\n"), 1,
     0, 1},
    {"LF.CRLF stored as a dot line", M, S("a\n.\r\nb\r\n.\r\n"), DONE, 11, S("a\r\n.\r\nb\r\n"), 1,
     0, 0},
    {"CR.CR stored as a dot line", M, S("a\r.\rb\r\n.\r\n"), DONE, 10, S("a\r\n.\r\nb\r\n"), 0, 2,
     0},
    {"CRLF.CR: dot removed, bare CR", M, S("a\r\n.\rb\r\n.\r\n"), DONE, 11, S("a\r\n\r\nb\r\n"), 0,
     1, 1},
    {"CRLF.CRCRLF", M, S("a\r\n.\r\r\n.\r\n"), DONE, 10, S("a\r\n\r\n\r\n"), 0, 1, 1},
    {"LF.LF then dot after LF is no end", M, S("\n.\n.\r\n.\r\n"), DONE, 9, S("\r\n.\r\n.\r\n"), 2,
     0, 0},
    {"LF.CRLF.CRLF ends after the CRLF", M, S("a\n.\r\n.\r\nQUIT\r\n"), DONE, 8, S("a\r\n.\r\n"), 1,
     0, 0},
    {"smuggled commands stay content", M,
     S("x\n.\nMAIL FROM:<e@v>\nRCPT TO:<u@d>\nDATA\n..z\r\n.\r\n"), DONE, 47,
     S("x\r\n.\r\nMAIL FROM:<e@v>\r\nRCPT TO:<u@d>\r\nDATA\r\n..z\r\n"), 5, 0, 0},
    {"bare LF before CRLF.CRLF", M, S("a\n\r\n.\r\n"), DONE, 7, S("a\r\n\r\n"), 1, 0, 0},
    {"CR CR LF . CRLF is an end", M, S("a\r\r\n.\r\n"), DONE, 7, S("a\r\n\r\n"), 0, 1, 0},
    /* bare CR and LF inside lines */
    {"bare CR inside", M, S("a\rb\r\n.\r\n"), DONE, 8, S("a\r\nb\r\n"), 0, 1, 0},
    {"bare LF inside", M, S("a\nb\r\n.\r\n"), DONE, 8, S("a\r\nb\r\n"), 1, 0, 0},
    {"LF CR", M, S("a\n\rb\r\n.\r\n"), DONE, 9, S("a\r\n\r\nb\r\n"), 1, 1, 0},
    {"many bare", M, S("\r\r\n\n\n\r\r\r\n.\r\n"), DONE, 12, S("\r\n\r\n\r\n\r\n\r\n\r\n\r\n"), 2,
     3, 0},
    /* octets preserved */
    {"8-bit and NUL", M, S("\x00\xff\x80.\x00\r\n\xc3\xa9\r\n.\r\n"), DONE, 14,
     S("\x00\xff\x80.\x00\r\n\xc3\xa9\r\n"), 0, 0, 0},
    {"stuffed NUL line", M, S(".\0\r\n.\r\n"), DONE, 7, S("\0\r\n"), 0, 0, 1},
    {"tab and DEL", M, S("\t\x7f\r\n.\r\n"), DONE, 7, S("\t\x7f\r\n"), 0, 0, 0},
    /* size limit: the content as stored counts */
    {"exactly max", 5, S("abc\r\n.\r\n"), DONE, 8, S("abc\r\n"), 0, 0, 0},
    {"max + 1", 5, S("abcd\r\n.\r\nQUIT\r\n"), TOO_BIG, 9, S("abcd\r\n"), 0, 0, 0},
    {"far over max", 5, S("abcdefghij\r\n..\r\nklm\r\n.\r\nRSET\r\n"), TOO_BIG, 24,
     S("abcdefghij\r\n.\r\nklm\r\n"), 0, 0, 1},
    {"max 0, empty message", 0, S(".\r\n"), DONE, 3, S(""), 0, 0, 0},
    {"max 0, one empty line", 0, S("\r\n.\r\n"), TOO_BIG, 5, S("\r\n"), 0, 0, 0},
    {"stuffing dot not counted", 5, S("..ab\r\n.\r\n"), DONE, 9, S(".ab\r\n"), 0, 0, 1},
    {"stuffing dot not counted, over", 4, S("..ab\r\n.\r\n"), TOO_BIG, 9, S(".ab\r\n"), 0, 0, 1},
    {"bare LF counts as CRLF", 6, S("ab\n\r\n.\r\n"), DONE, 8, S("ab\r\n\r\n"), 1, 0, 0},
    {"bare LF counts as CRLF, over", 5, S("ab\n\r\n.\r\n"), TOO_BIG, 8, S("ab\r\n\r\n"), 1, 0, 0},
    {"over max, no end yet", 2, S("abc\r\n"), MORE, 5, S(""), 0, 0, 0},
};

/* ---- harness ---- */

struct result {
    enum smtp_data_status status;
    size_t used;
};

static size_t count_crlf(const unsigned char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n')
            k++;
    return k;
}

/* Content invariants: canonical line ends only, empty or ending in CRLF. */
static void check_canonical(const unsigned char *p, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
            fail_msg("case \"%s\": bare CR at %zu", name, i);
        if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
            fail_msg("case \"%s\": bare LF at %zu", name, i);
    }
    if (n > 0 && (n < 2 || p[n - 2] != '\r' || p[n - 1] != '\n'))
        fail_msg("case \"%s\": content does not end in CRLF", name);
}

/*
 * Feeds in[0..n) cut at the ascending positions cuts[0..ncuts), stopping at the end of data as
 * the connection would, and returns the status and the octets used.
 */
static struct result feed_cuts(struct smtp_data *d, const char *in, size_t n, const size_t *cuts,
                               size_t ncuts)
{
    struct result r = {SMTP_DATA_MORE, 0};
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        size_t k = smtp_data_feed(d, (const unsigned char *)in + from, to - from, &r.status);
        assert_true(k <= to - from);
        r.used += k;
        if (r.status != SMTP_DATA_MORE) {
            assert_true(smtp_data_is_done(d));
            /* A feed after the end uses nothing and repeats the status. */
            enum smtp_data_status again = SMTP_DATA_MORE;
            assert_int_equal(smtp_data_feed(d, (const unsigned char *)in, n, &again), 0);
            assert_int_equal(again, r.status);
            return r;
        }
        assert_int_equal(k, to - from);
        assert_false(smtp_data_is_done(d));
        from = to;
    }
    return r;
}

static void check_case(const struct data_case *c, const size_t *cuts, size_t ncuts, const char *how)
{
    struct smtp_data d;
    assert_int_equal(smtp_data_init(&d, c->max, TEST_RESERVE_BYTES), 0);
    struct result r = feed_cuts(&d, c->in, c->in_len, cuts, ncuts);
    if (r.status != c->want_status || r.used != c->want_used)
        fail_msg("case \"%s\" fed %s: got status %s used %zu, want %s used %zu", c->name, how,
                 smtp_data_status_name(r.status), r.used, smtp_data_status_name(c->want_status),
                 c->want_used);
    assert_int_equal(d.received_bytes, r.used);
    assert_true(d.block_cap <= TEST_RESERVE_BYTES + c->max);

    size_t len = 99;
    const unsigned char *body = smtp_data_body(&d, &len);
    if (c->want_status == SMTP_DATA_DONE) {
        if (len != c->want_body_len || (len > 0 && memcmp(body, c->want_body, len) != 0))
            fail_msg("case \"%s\" fed %s: body of %zu octets differs (want %zu)", c->name, how, len,
                     c->want_body_len);
        check_canonical(body, len, c->name);
        assert_true(len <= c->max);
    } else {
        assert_null(body);
        assert_int_equal(len, 0);
    }
    if (c->want_status != SMTP_DATA_MORE) {
        /* Counters describe the content even when nothing was kept. */
        assert_int_equal(d.content_bytes, c->want_body_len);
        assert_int_equal(d.lines,
                         count_crlf((const unsigned char *)c->want_body, c->want_body_len));
        if (d.bare_lf_count != c->want_bare_lf || d.bare_cr_count != c->want_bare_cr ||
            d.unstuffed_count != c->want_unstuffed)
            fail_msg("case \"%s\" fed %s: bare_lf %llu bare_cr %llu unstuffed %llu, want %llu "
                     "%llu %llu",
                     c->name, how, (unsigned long long)d.bare_lf_count,
                     (unsigned long long)d.bare_cr_count, (unsigned long long)d.unstuffed_count,
                     (unsigned long long)c->want_bare_lf, (unsigned long long)c->want_bare_cr,
                     (unsigned long long)c->want_unstuffed);
    }
    if (c->want_status == SMTP_DATA_DONE_TOO_BIG) {
        /* Nothing half-received is kept. */
        assert_null(d.block);
        assert_int_equal(d.stored_bytes, 0);
        assert_true(d.content_bytes > c->max);
    }
    smtp_data_free(&d);
    assert_null(d.block);
}

static void test_cases_whole(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(data_cases); i++)
        check_case(&data_cases[i], NULL, 0, "whole");
}

static void test_cases_split_in_two(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(data_cases); i++) {
        for (size_t at = 0; at <= data_cases[i].in_len; at++) {
            char how[32];
            snprintf(how, sizeof(how), "split at %zu", at);
            check_case(&data_cases[i], &at, 1, how);
        }
    }
}

static void test_cases_split_in_three(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(data_cases); i++) {
        size_t n = data_cases[i].in_len;
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                size_t cuts[2] = {a, b};
                char how[48];
                snprintf(how, sizeof(how), "split at %zu and %zu", a, b);
                check_case(&data_cases[i], cuts, 2, how);
            }
        }
    }
}

static void test_cases_byte_at_a_time(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(data_cases); i++) {
        size_t n = data_cases[i].in_len;
        size_t *cuts = malloc((n + 1) * sizeof(*cuts));
        assert_non_null(cuts);
        for (size_t k = 0; k < n; k++)
            cuts[k] = k + 1;
        check_case(&data_cases[i], cuts, n, "one byte at a time");
        free(cuts);
    }
}

/* ---- the rest of the API ---- */

static void test_init_limits(void **state)
{
    struct smtp_data d;
    assert_int_equal(smtp_data_init(&d, SIZE_MAX, 0), -EINVAL);
    smtp_data_free(&d);
    assert_int_equal(smtp_data_init(&d, 10, SIZE_MAX / 2), -EINVAL);
    smtp_data_free(&d);
    assert_int_equal(smtp_data_init(&d, 25u << 20, SMTP_DATA_PREFIX_RESERVE_BYTES), 0);
    /* Nothing is allocated before content arrives. */
    assert_null(d.block);
    assert_int_equal(d.max_bytes, 25u << 20);
    smtp_data_free(&d);
    /* A second free is harmless. */
    smtp_data_free(&d);
    assert_int_equal(SMTP_TEXT_LINE_MAX_BYTES, 1000); /* RFC 5321 4.5.3.1.6 */
}

static void test_not_done_gives_nothing(void **state)
{
    struct smtp_data d;
    enum smtp_data_status st;
    unsigned char *block = (unsigned char *)"x";
    size_t off = 7, len = 7;
    assert_int_equal(smtp_data_init(&d, 100, 8), 0);
    assert_int_equal(smtp_data_feed(&d, (const unsigned char *)"abc\r\n", 5, &st), 5);
    assert_int_equal(st, SMTP_DATA_MORE);
    assert_int_equal(smtp_data_feed(&d, NULL, 0, &st), 0);
    assert_int_equal(st, SMTP_DATA_MORE);
    assert_null(smtp_data_body(&d, &len));
    assert_int_equal(len, 0);
    assert_null(smtp_data_message(&d, &len));
    assert_int_equal(smtp_data_set_prefix(&d, "H: v\r\n", 6), -EINVAL);
    assert_int_equal(smtp_data_take(&d, &block, &off, &len), -EINVAL);
    assert_int_equal(d.stored_bytes, 5); /* take changed nothing */
    smtp_data_free(&d);

    /* Nor after TOO_BIG. */
    assert_int_equal(smtp_data_init(&d, 2, 8), 0);
    assert_int_equal(smtp_data_feed(&d, (const unsigned char *)"abc\r\n.\r\n", 8, &st), 8);
    assert_int_equal(st, SMTP_DATA_DONE_TOO_BIG);
    assert_null(smtp_data_body(&d, &len));
    assert_int_equal(smtp_data_set_prefix(&d, "H: v\r\n", 6), -EINVAL);
    assert_int_equal(smtp_data_take(&d, &block, &off, &len), -EINVAL);
    smtp_data_free(&d);
}

static void feed_all(struct smtp_data *d, const char *s, size_t n, size_t want_used,
                     enum smtp_data_status want)
{
    enum smtp_data_status st;
    assert_int_equal(smtp_data_feed(d, (const unsigned char *)s, n, &st), want_used);
    assert_int_equal(st, want);
}

static void test_prefix(void **state)
{
    static const struct {
        const char *prefix;
        size_t reserve;
    } cases[] = {
        {"", 16},
        {"Return-Path: <a@b>\r\n", 64},
        {"Return-Path: <a@b>\r\n", 21},                               /* one octet spare */
        {"Return-Path: <a@b>\r\n", 20},                               /* exactly */
        {"Return-Path: <a@b>\r\nReceived: from x by y; Mon\r\n", 20}, /* longer: one copy */
        {"Received: from client.example by mx.example\r\n", 0},       /* no reserve */
    };
    static const char body[] = "Subject: s\r\n\r\n.hi\r\n";
    static const char in[] = "Subject: s\r\n\r\n..hi\r\n.\r\nQUIT\r\n";
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct smtp_data d;
        size_t plen = strlen(cases[i].prefix), blen = sizeof(body) - 1, len;
        assert_int_equal(smtp_data_init(&d, 1000, cases[i].reserve), 0);
        feed_all(&d, in, sizeof(in) - 1, sizeof(in) - 1 - 6, SMTP_DATA_DONE);
        const unsigned char *b = smtp_data_body(&d, &len);
        assert_int_equal(len, blen);
        assert_memory_equal(b, body, blen);

        /* A first prefix, then the real one replacing it. */
        assert_int_equal(smtp_data_set_prefix(&d, "X: 1\r\n", 6), 0);
        assert_int_equal(smtp_data_set_prefix(&d, cases[i].prefix, plen), 0);
        const unsigned char *m = smtp_data_message(&d, &len);
        assert_int_equal(len, plen + blen);
        assert_memory_equal(m, cases[i].prefix, plen);
        assert_memory_equal(m + plen, body, blen);
        /* The body alone is still there, right behind the prefix: no copy in between. */
        b = smtp_data_body(&d, &len);
        assert_int_equal(len, blen);
        assert_ptr_equal(b, m + plen);
        if (plen <= cases[i].reserve && plen > 0)
            assert_int_equal(m - d.block, cases[i].reserve - plen);

        /* Hand the block over: the caller frees it, the scanner is fresh. */
        unsigned char *block = NULL;
        size_t off = 0;
        assert_int_equal(smtp_data_take(&d, &block, &off, &len), 0);
        assert_non_null(block);
        assert_int_equal(len, plen + blen);
        assert_memory_equal(block + off, cases[i].prefix, plen);
        assert_memory_equal(block + off + plen, body, blen);
        assert_null(d.block);
        assert_false(smtp_data_is_done(&d));
        assert_int_equal(d.received_bytes, 0);
        free(block);

        /* The same struct takes the next message. */
        feed_all(&d, "b\r\n.\r\n", 6, 6, SMTP_DATA_DONE);
        b = smtp_data_body(&d, &len);
        assert_int_equal(len, 3);
        assert_memory_equal(b, "b\r\n", 3);
        smtp_data_free(&d);
    }
}

static void test_prefix_on_empty_message(void **state)
{
    struct smtp_data d;
    size_t len = 99, off = 99;
    unsigned char *block = NULL;
    assert_int_equal(smtp_data_init(&d, 1000, 32), 0);
    feed_all(&d, ".\r\n", 3, 3, SMTP_DATA_DONE);
    assert_null(smtp_data_body(&d, &len));
    assert_int_equal(len, 0);
    assert_int_equal(smtp_data_set_prefix(&d, "Return-Path: <>\r\n", 17), 0);
    const unsigned char *m = smtp_data_message(&d, &len);
    assert_int_equal(len, 17);
    assert_memory_equal(m, "Return-Path: <>\r\n", 17);
    smtp_data_free(&d);

    /* Taking an empty message without prefix hands over nothing. */
    assert_int_equal(smtp_data_init(&d, 1000, 32), 0);
    feed_all(&d, ".\r\n", 3, 3, SMTP_DATA_DONE);
    assert_int_equal(smtp_data_take(&d, &block, &off, &len), 0);
    assert_null(block);
    assert_int_equal(off, 0);
    assert_int_equal(len, 0);
    smtp_data_free(&d);
}

static void test_reset(void **state)
{
    struct smtp_data d;
    size_t len;
    assert_int_equal(smtp_data_init(&d, 10, 4), 0);
    feed_all(&d, "0123456789ab\r\n.\r\n", 17, 17, SMTP_DATA_DONE_TOO_BIG);
    smtp_data_reset(&d);
    assert_int_equal(d.max_bytes, 10);
    assert_int_equal(d.prefix_reserve_bytes, 4);
    assert_int_equal(d.content_bytes, 0);
    /* Mid-message reset (RSET cannot happen there, but a dropped connection can). */
    feed_all(&d, "abc\r\n..", 7, 7, SMTP_DATA_MORE);
    smtp_data_reset(&d);
    assert_null(d.block);
    feed_all(&d, "x\r\n.\r\n", 6, 6, SMTP_DATA_DONE);
    const unsigned char *b = smtp_data_body(&d, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(b, "x\r\n", 3);
    smtp_data_free(&d);
}

static void test_line_statistics(void **state)
{
    /* Lines of 1000 and 1001 octets with CRLF; a stuffed line whose dot is not counted. */
    static const struct {
        size_t text_bytes; /* octets before the line end, stuffing dot excluded */
        bool stuffed;
        const char *eol;
        uint64_t want_longest, want_long;
    } cases[] = {
        {998, false, "\r\n", 1000, 0}, {999, false, "\r\n", 1001, 1},
        {998, true, "\r\n", 1000, 0},  {999, true, "\r\n", 1001, 1},
        {999, false, "\n", 1001, 1},   {5000, false, "\r\n", 5002, 1},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t n = 0;
        char *in = malloc(cases[i].text_bytes + 32);
        assert_non_null(in);
        n += (size_t)sprintf(in, "short\r\n");
        if (cases[i].stuffed) {
            in[n++] = '.';
            in[n++] = '.';
            memset(in + n, 'x', cases[i].text_bytes - 1);
            n += cases[i].text_bytes - 1;
        } else {
            memset(in + n, 'x', cases[i].text_bytes);
            n += cases[i].text_bytes;
        }
        n += (size_t)sprintf(in + n, "%s\r\n.\r\n", cases[i].eol);

        struct smtp_data d;
        assert_int_equal(smtp_data_init(&d, 10000, 0), 0);
        feed_all(&d, in, n, n, SMTP_DATA_DONE);
        assert_int_equal(d.longest_line_bytes, cases[i].want_longest);
        assert_int_equal(d.long_lines, cases[i].want_long);
        /* "short", the long line, and the empty line before the end. */
        assert_int_equal(d.lines, 3);
        smtp_data_free(&d);
        free(in);
    }
}

static void test_status_names(void **state)
{
    assert_string_equal(smtp_data_status_name(SMTP_DATA_MORE), "more");
    assert_string_equal(smtp_data_status_name(SMTP_DATA_DONE), "done");
    assert_string_equal(smtp_data_status_name(SMTP_DATA_DONE_TOO_BIG), "too-big");
    assert_string_equal(smtp_data_status_name(SMTP_DATA_DONE_NO_MEMORY), "no-memory");
    assert_string_equal(smtp_data_status_name(SMTP_DATA_DONE_SPILL_FAILED), "spill-failed");
}

/* ---- spilling ---- */

/* A spill function's sink: what left memory, in order; fail_after calls succeed, then -ENOSPC. */
struct sink {
    unsigned char *p;
    size_t len, cap;
    size_t calls;
    size_t fail_after; /* 0: never fails */
};

static int sink_spill(void *ctx, const unsigned char *p, size_t n)
{
    struct sink *k = ctx;
    assert_true(n > 0);
    if (k->fail_after != 0 && k->calls >= k->fail_after)
        return -ENOSPC;
    k->calls++;
    if (k->len + n > k->cap) {
        size_t cap = (k->len + n) * 2;
        unsigned char *q = realloc(k->p, cap);
        assert_non_null(q);
        k->p = q;
        k->cap = cap;
    }
    memcpy(k->p + k->len, p, n);
    k->len += n;
    return 0;
}

/* Replays case c with cuts and an in-memory part of mem octets; spilled + kept == content. */
static void check_case_spilling(const struct data_case *c, size_t mem, const size_t *cuts,
                                size_t ncuts)
{
    struct smtp_data d;
    struct sink k = {0};
    assert_int_equal(smtp_data_init(&d, c->max, TEST_RESERVE_BYTES), 0);
    assert_int_equal(smtp_data_set_spill(&d, mem, sink_spill, &k), 0);
    struct result r = feed_cuts(&d, c->in, c->in_len, cuts, ncuts);
    if (r.status != c->want_status || r.used != c->want_used)
        fail_msg("case \"%s\" spilling at %zu: got status %s used %zu", c->name, mem,
                 smtp_data_status_name(r.status), r.used);
    assert_true(d.block_cap <= TEST_RESERVE_BYTES + mem);
    assert_int_equal(smtp_data_spilled_bytes(&d), k.len);
    if (c->want_status == SMTP_DATA_DONE) {
        size_t len = 0;
        const unsigned char *body = smtp_data_body(&d, &len);
        assert_true(len <= mem);
        if (k.len + len != c->want_body_len ||
            (k.len > 0 && memcmp(k.p, c->want_body, k.len) != 0) ||
            (len > 0 && memcmp(body, c->want_body + k.len, len) != 0))
            fail_msg("case \"%s\" spilling at %zu: content differs", c->name, mem);
        /* Spilled content has no place for a prefix in front of it. */
        if (k.len > 0)
            assert_int_equal(smtp_data_set_prefix(&d, "X: y\r\n", 6), -EINVAL);
    }
    smtp_data_free(&d);
    free(k.p);
}

static void test_cases_spilling(void **state)
{
    static const size_t mems[] = {1, 2, 3, 7, 64};
    for (size_t i = 0; i < ARRAY_LEN(data_cases); i++) {
        for (size_t m = 0; m < ARRAY_LEN(mems); m++) {
            check_case_spilling(&data_cases[i], mems[m], NULL, 0);
            for (size_t at = 0; at <= data_cases[i].in_len; at++)
                check_case_spilling(&data_cases[i], mems[m], &at, 1);
        }
    }
}

static void test_spill_failure(void **state)
{
    struct smtp_data d;
    struct sink k = {.fail_after = 1};
    assert_int_equal(smtp_data_init(&d, 1000, 0), 0);
    assert_int_equal(smtp_data_set_spill(&d, 4, sink_spill, &k), 0);
    enum smtp_data_status st;
    static const char in[] = "abcdefghijklmnop\r\n.\r\nQUIT\r\n";
    size_t used = smtp_data_feed(&d, (const unsigned char *)in, sizeof(in) - 1, &st);
    assert_int_equal(st, SMTP_DATA_DONE_SPILL_FAILED);
    assert_int_equal(used, sizeof(in) - 1 - 6); /* the end is still found */
    assert_int_equal(smtp_data_spill_error(&d), -ENOSPC);
    assert_null(d.block);
    size_t len = 9;
    assert_null(smtp_data_body(&d, &len));
    assert_int_equal(len, 0);
    /* Too big wins: permanent, where a spill failure is temporary. */
    smtp_data_reset(&d);
    k.calls = 0;
    assert_int_equal(d.memory_bytes, 4); /* reset keeps the spill setting */
    d.max_bytes = 10;
    smtp_data_feed(&d, (const unsigned char *)in, sizeof(in) - 1, &st);
    assert_int_equal(st, SMTP_DATA_DONE_TOO_BIG);
    smtp_data_free(&d);
    free(k.p);
    /* Refused once content was fed, or without a function or a size. */
    assert_int_equal(smtp_data_init(&d, 1000, 0), 0);
    assert_int_equal(smtp_data_set_spill(&d, 0, sink_spill, &k), -EINVAL);
    assert_int_equal(smtp_data_set_spill(&d, 4, NULL, &k), -EINVAL);
    smtp_data_feed(&d, (const unsigned char *)"a", 1, &st);
    assert_int_equal(smtp_data_set_spill(&d, 4, sink_spill, &k), -EINVAL);
    smtp_data_free(&d);
}

/* ---- a big message ---- */

#define BIG_CONTENT_BYTES (20u << 20)
#define BIG_CHUNK_BYTES   (64u << 10)

/* xorshift64: deterministic content, so a failure reproduces. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/*
 * Builds about BIG_CONTENT_BYTES of content (lines of 0..199 octets of any value but CR and LF,
 * one in eight starting with "."), its stuffed wire form, the terminator and "QUIT\r\n".
 */
static void build_big(unsigned char **wire_out, size_t *wire_len_out, unsigned char **body_out,
                      size_t *body_len_out)
{
    size_t cap = BIG_CONTENT_BYTES + BIG_CONTENT_BYTES / 4;
    unsigned char *wire = malloc(cap), *body = malloc(cap);
    assert_non_null(wire);
    assert_non_null(body);
    size_t w = 0, b = 0;
    uint64_t seed = 0x9e3779b97f4a7c15u;
    while (b < BIG_CONTENT_BYTES) {
        size_t len = (size_t)(next_rand(&seed) % 200);
        size_t line = b;
        if (next_rand(&seed) % 8 == 0)
            body[b++] = '.';
        for (size_t k = 0; k < len; k++) {
            unsigned char c = (unsigned char)next_rand(&seed);
            body[b++] = c == '\r' || c == '\n' ? '.' : c;
        }
        /* RFC 5321 4.5.2: stuff every line that starts with ".", whatever put it there. */
        if (b > line && body[line] == '.')
            wire[w++] = '.';
        memcpy(wire + w, body + line, b - line);
        w += b - line;
        memcpy(wire + w, "\r\n", 2);
        memcpy(body + b, "\r\n", 2);
        w += 2;
        b += 2;
    }
    memcpy(wire + w, ".\r\nQUIT\r\n", 9);
    w += 9;
    assert_true(w <= cap);
    *wire_out = wire;
    *wire_len_out = w;
    *body_out = body;
    *body_len_out = b;
}

static void test_big_message(void **state)
{
    unsigned char *wire, *body;
    size_t wire_len, body_len;
    build_big(&wire, &wire_len, &body, &body_len);

    static const struct {
        size_t max;
        enum smtp_data_status want;
    } limits[] = {
        {25u << 20, SMTP_DATA_DONE},
        {BIG_CONTENT_BYTES - 1, SMTP_DATA_DONE_TOO_BIG}, /* the content is at least 20 MiB */
    };
    for (size_t li = 0; li < ARRAY_LEN(limits); li++) {
        struct smtp_data d;
        assert_int_equal(smtp_data_init(&d, limits[li].max, SMTP_DATA_PREFIX_RESERVE_BYTES), 0);
        size_t used = 0, off = 0;
        enum smtp_data_status st = SMTP_DATA_MORE;
        for (size_t guard = 0; off < wire_len && st == SMTP_DATA_MORE; guard++) {
            assert_true(guard <= wire_len / BIG_CHUNK_BYTES + 1);
            size_t n = wire_len - off < BIG_CHUNK_BYTES ? wire_len - off : BIG_CHUNK_BYTES;
            used += smtp_data_feed(&d, wire + off, n, &st);
            off += n;
        }
        assert_int_equal(st, limits[li].want);
        assert_int_equal(used, wire_len - 6); /* QUIT\r\n is left */
        assert_int_equal(d.content_bytes, body_len);
        assert_int_equal(d.lines, count_crlf(body, body_len));
        assert_true(d.block_cap <= SMTP_DATA_PREFIX_RESERVE_BYTES + limits[li].max);
        size_t len;
        const unsigned char *b = smtp_data_body(&d, &len);
        if (st == SMTP_DATA_DONE) {
            assert_int_equal(len, body_len);
            assert_true(memcmp(b, body, len) == 0);
            assert_int_equal(d.bare_lf_count + d.bare_cr_count, 0);
        } else {
            assert_null(b);
            assert_null(d.block);
        }
        smtp_data_free(&d);
    }
    free(wire);
    free(body);
}

/* The 20 MiB message with a 128 KiB in-memory part, in 64 KiB feeds. */
static void test_big_message_spilling(void **state)
{
    unsigned char *wire, *body;
    size_t wire_len, body_len;
    build_big(&wire, &wire_len, &body, &body_len);
    const size_t mem = 128u << 10;
    struct smtp_data d;
    struct sink k = {0};
    assert_int_equal(smtp_data_init(&d, 25u << 20, 0), 0);
    assert_int_equal(smtp_data_set_spill(&d, mem, sink_spill, &k), 0);
    enum smtp_data_status st = SMTP_DATA_MORE;
    size_t used = 0;
    for (size_t off = 0; off < wire_len && st == SMTP_DATA_MORE; off += BIG_CHUNK_BYTES) {
        size_t n = wire_len - off < BIG_CHUNK_BYTES ? wire_len - off : BIG_CHUNK_BYTES;
        used += smtp_data_feed(&d, wire + off, n, &st);
    }
    assert_int_equal(st, SMTP_DATA_DONE);
    assert_int_equal(used, wire_len - 6);
    assert_true(d.block_cap <= mem);
    size_t len;
    const unsigned char *b = smtp_data_body(&d, &len);
    assert_int_equal(k.len + len, body_len);
    assert_true(memcmp(k.p, body, k.len) == 0);
    assert_true(memcmp(b, body + k.len, len) == 0);
    assert_true(k.len >= body_len - mem);
    smtp_data_free(&d);
    free(k.p);
    free(wire);
    free(body);
}

/* ---- raw content (BDAT) ---- */

struct raw_case {
    const char *in;
    size_t in_len;
    const char *want;
    size_t want_len;
    uint64_t bare_lf, bare_cr;
};

static const struct raw_case raw_cases[] = {
    {S(""), S(""), 0, 0},
    {S("a\r\n"), S("a\r\n"), 0, 0},
    {S(".\r\n"), S(".\r\n"), 0, 0},
    {S("..x\r\n.\r\n\r\n.\r\n"), S("..x\r\n.\r\n\r\n.\r\n"), 0, 0},
    {S("no line end"), S("no line end\r\n"), 0, 0},
    {S("a\nb\rc\r\r\nd"), S("a\r\nb\r\nc\r\n\r\nd\r\n"), 1, 2},
    {S("ends in CR\r"), S("ends in CR\r\n"), 0, 1},
    {S("\x00\x80\xff.\r\n"), S("\x00\x80\xff.\r\n"), 0, 0},
};

/* Fed whole, and cut once at every position (two BDAT chunks), then finished. */
static void test_raw_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(raw_cases); i++) {
        const struct raw_case *rc = &raw_cases[i];
        for (size_t cut = 0; cut <= rc->in_len; cut++) {
            struct smtp_data d;
            assert_int_equal(smtp_data_init(&d, TEST_MAX_BYTES, TEST_RESERVE_BYTES), 0);
            assert_int_equal(smtp_data_set_raw(&d), 0);
            enum smtp_data_status st;
            assert_int_equal(smtp_data_feed(&d, (const unsigned char *)rc->in, cut, &st), cut);
            assert_int_equal(st, SMTP_DATA_MORE);
            assert_int_equal(smtp_data_status_so_far(&d), SMTP_DATA_DONE);
            assert_int_equal(
                smtp_data_feed(&d, (const unsigned char *)rc->in + cut, rc->in_len - cut, &st),
                rc->in_len - cut);
            assert_int_equal(st, SMTP_DATA_MORE);
            assert_int_equal(smtp_data_finish(&d), SMTP_DATA_DONE);
            assert_int_equal(smtp_data_finish(&d), SMTP_DATA_DONE);
            size_t len;
            const unsigned char *b = smtp_data_body(&d, &len);
            assert_int_equal(len, rc->want_len);
            assert_true(len == 0 || memcmp(b, rc->want, len) == 0);
            assert_int_equal(d.bare_lf_count, rc->bare_lf);
            assert_int_equal(d.bare_cr_count, rc->bare_cr);
            assert_int_equal(d.unstuffed_count, 0);
            smtp_data_free(&d);
        }
    }
}

/* Past the limit the chunk can be refused at once; finish says so too. Not raw: no finish. */
static void test_raw_limit_and_misuse(void **state)
{
    (void)state;
    struct smtp_data d;
    assert_int_equal(smtp_data_init(&d, 8, 0), 0);
    assert_int_equal(smtp_data_set_raw(&d), 0);
    enum smtp_data_status st;
    smtp_data_feed(&d, (const unsigned char *)"1234567", 7, &st);
    assert_int_equal(smtp_data_status_so_far(&d), SMTP_DATA_DONE);
    smtp_data_feed(&d, (const unsigned char *)"89", 2, &st);
    assert_int_equal(st, SMTP_DATA_MORE);
    assert_int_equal(smtp_data_status_so_far(&d), SMTP_DATA_DONE_TOO_BIG);
    assert_null(d.block);
    assert_int_equal(smtp_data_finish(&d), SMTP_DATA_DONE_TOO_BIG);
    smtp_data_reset(&d);
    assert_true(d.raw);
    smtp_data_free(&d);

    assert_int_equal(smtp_data_init(&d, 8, 0), 0);
    assert_int_equal(smtp_data_finish(&d), SMTP_DATA_DONE_NO_MEMORY);
    assert_false(smtp_data_is_done(&d));
    smtp_data_feed(&d, (const unsigned char *)"x", 1, &st);
    assert_int_equal(smtp_data_set_raw(&d), -EINVAL);
    smtp_data_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_whole),
        cmocka_unit_test(test_cases_split_in_two),
        cmocka_unit_test(test_cases_split_in_three),
        cmocka_unit_test(test_cases_byte_at_a_time),
        cmocka_unit_test(test_init_limits),
        cmocka_unit_test(test_not_done_gives_nothing),
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_prefix_on_empty_message),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_line_statistics),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_big_message),
        cmocka_unit_test(test_cases_spilling),
        cmocka_unit_test(test_spill_failure),
        cmocka_unit_test(test_big_message_spilling),
        cmocka_unit_test(test_raw_cases),
        cmocka_unit_test(test_raw_limit_and_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
