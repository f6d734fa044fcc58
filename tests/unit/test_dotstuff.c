/*
 * test_dotstuff.c - unit tests for common/pure/dotstuff.c, the dot-stuffing encoder (RETR, TOP,
 * DATA).
 *
 * Two tables give the exact wire form for whole bodies and for TOP; every case is replayed with
 * the input cut at every position, one byte at a time, and with output buffers of 1 to 7 octets
 * and a large one, so a bound falling inside a CRLF or a ".." is exercised. A round-trip test then
 * runs many generated bodies through the encoder and back through common/pure/smtp_data.c (the
 * receiving side), cut in many ways, and requires the original body back, the exact octet count
 * used, and a wire form with no bare CR or LF and no early end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/dotstuff.h"
#include "common/pure/smtp_data.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define S(lit)       lit, sizeof(lit) - 1

/* Output sizes every case is replayed with; the last one never fills. */
static const size_t out_caps[] = {1, 2, 3, 4, 5, 6, 7, 4096};

/* ---- harness ---- */

struct sink {
    unsigned char *data; /* owned */
    size_t len, cap;
};

static void sink_put(struct sink *s, const unsigned char *p, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = (s->len + n) * 2 + 64;
        unsigned char *d = realloc(s->data, cap);
        assert_non_null(d);
        s->data = d;
        s->cap = cap;
    }
    if (n > 0)
        memcpy(s->data + s->len, p, n);
    s->len += n;
}

/*
 * Encodes in[0..n), cut at cuts[0..ncuts), with an output buffer of out_cap octets, the way a
 * caller would; stops feeding a TOP encoder once it has enough. Appends the wire form to *out.
 */
static void encode_cuts(struct dotstuff *ds, const unsigned char *in, size_t n, const size_t *cuts,
                        size_t ncuts, size_t out_cap, struct sink *out)
{
    unsigned char buf[4096];
    assert_true(out_cap <= sizeof(buf));
    size_t from = 0;
    for (size_t c = 0; c <= ncuts && !dotstuff_has_enough(ds); c++) {
        size_t to = c < ncuts ? cuts[c] : n;
        const unsigned char *p = in + from;
        size_t left = to - from;
        /* Each turn uses all input or fills the output; bounded by 2 * octets + slack. */
        for (size_t guard = 0; left > 0 && !dotstuff_has_enough(ds); guard++) {
            assert_true(guard <= 2 * (to - from) + 8);
            size_t used = 99999;
            size_t k = dotstuff_encode(ds, p, left, &used, buf, out_cap);
            assert_true(used <= left);
            assert_true(k == out_cap || used == left);
            assert_true(k > 0 || used > 0);
            sink_put(out, buf, k);
            p += used;
            left -= used;
        }
        from = to;
    }
    for (size_t guard = 0; !dotstuff_is_done(ds); guard++) {
        assert_true(guard <= 16);
        size_t k = dotstuff_finish(ds, buf, out_cap);
        assert_true(k <= out_cap);
        sink_put(out, buf, k);
    }
    /* Finished: nothing more comes out. */
    size_t used = 99;
    assert_int_equal(dotstuff_encode(ds, in, n, &used, buf, out_cap), 0);
    assert_int_equal(used, 0);
    assert_int_equal(dotstuff_finish(ds, buf, out_cap), 0);
    assert_int_equal(ds->out_bytes, out->len);
}

/* The wire form ends in CRLF "." CRLF (or is ".\r\n"), and holds no bare CR or LF. */
static void check_wire(const unsigned char *p, size_t n)
{
    assert_true(n >= 3);
    assert_memory_equal(p + n - 3, ".\r\n", 3);
    assert_true(n == 3 || (p[n - 5] == '\r' && p[n - 4] == '\n'));
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r')
            assert_true(i + 1 < n && p[i + 1] == '\n');
        if (p[i] == '\n')
            assert_true(i > 0 && p[i - 1] == '\r');
    }
}

struct stuff_case {
    const char *name;
    bool top;
    uint64_t top_lines;
    const char *in;
    size_t in_len;
    const char *want;
    size_t want_len;
    uint64_t want_stuffed;
};

static void check_stuff_case(const struct stuff_case *c, const size_t *cuts, size_t ncuts,
                             size_t out_cap, const char *how)
{
    struct dotstuff ds;
    struct sink out = {NULL, 0, 0};
    if (c->top)
        dotstuff_init_top(&ds, c->top_lines);
    else
        dotstuff_init(&ds);
    encode_cuts(&ds, (const unsigned char *)c->in, c->in_len, cuts, ncuts, out_cap, &out);
    if (out.len != c->want_len || memcmp(out.data, c->want, out.len) != 0) {
        char got[512];
        size_t k = out.len < sizeof(got) - 1 ? out.len : sizeof(got) - 1;
        memcpy(got, out.data, k);
        got[k] = '\0';
        fail_msg("case \"%s\" %s out_cap %zu: got %zu octets \"%s\", want %zu", c->name, how,
                 out_cap, out.len, got, c->want_len);
    }
    check_wire(out.data, out.len);
    assert_int_equal(ds.stuffed_count, c->want_stuffed);
    free(out.data);
}

static void replay_all(const struct stuff_case *cases, size_t ncases)
{
    for (size_t i = 0; i < ncases; i++) {
        const struct stuff_case *c = &cases[i];
        size_t *ones = malloc((c->in_len + 1) * sizeof(*ones));
        assert_non_null(ones);
        for (size_t k = 0; k < c->in_len; k++)
            ones[k] = k + 1;
        for (size_t oc = 0; oc < ARRAY_LEN(out_caps); oc++) {
            check_stuff_case(c, NULL, 0, out_caps[oc], "whole");
            for (size_t at = 0; at <= c->in_len; at++) {
                char how[32];
                snprintf(how, sizeof(how), "split at %zu", at);
                check_stuff_case(c, &at, 1, out_caps[oc], how);
            }
            check_stuff_case(c, ones, c->in_len, out_caps[oc], "one byte at a time");
        }
        free(ones);
    }
}

/* ---- whole bodies (RETR, DATA) ---- */

static const struct stuff_case body_cases[] = {
    {"empty", false, 0, S(""), S(".\r\n"), 0},
    {"one line", false, 0, S("a\r\n"), S("a\r\n.\r\n"), 0},
    {"no final CRLF", false, 0, S("a"), S("a\r\n.\r\n"), 0},
    {"no final CRLF after lines", false, 0, S("a\r\nbc"), S("a\r\nbc\r\n.\r\n"), 0},
    {"empty line", false, 0, S("\r\n"), S("\r\n.\r\n"), 0},
    {"dot line", false, 0, S(".\r\n"), S("..\r\n.\r\n"), 1},
    {"dot lines", false, 0, S("a\r\n.b\r\n..\r\nc.\r\n."),
     S("a\r\n..b\r\n...\r\nc.\r\n..\r\n.\r\n"), 3},
    {"dot inside lines only", false, 0, S("a.b\r\n a.\r\n"), S("a.b\r\n a.\r\n.\r\n"), 0},
    {"headers and body", false, 0, S("Subject: x\r\n\r\n.hi\r\n"),
     S("Subject: x\r\n\r\n..hi\r\n.\r\n"), 1},
    {"bare LF made CRLF", false, 0, S("a\n.\nb"), S("a\r\n..\r\nb\r\n.\r\n"), 1},
    {"bare CR made CRLF", false, 0, S("a\r.\rb"), S("a\r\n..\r\nb\r\n.\r\n"), 1},
    {"CR CR LF", false, 0, S("a\r\r\n"), S("a\r\n\r\n.\r\n"), 0},
    {"final bare CR", false, 0, S("a\r"), S("a\r\n.\r\n"), 0},
    {"LF CR", false, 0, S("\n\r"), S("\r\n\r\n.\r\n"), 0},
    {"8-bit and NUL", false, 0, S("\x00\xff\r\n.\x00\r\n"), S("\x00\xff\r\n..\x00\r\n.\r\n"), 1},
    {"looks like an end", false, 0, S("a\r\n.\r\nMAIL FROM:<x>\r\n"),
     S("a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"), 1},
};

static void test_body_cases(void **state)
{
    replay_all(body_cases, ARRAY_LEN(body_cases));
}

/* ---- TOP (RFC 1939 7) ---- */

#define TOP_MSG "H: 1\r\nH: 2\r\n\r\nb1\r\n.b2\r\nb3\r\n"

static const struct stuff_case top_cases[] = {
    {"n = 0", true, 0, S(TOP_MSG), S("H: 1\r\nH: 2\r\n\r\n.\r\n"), 0},
    {"n = 1", true, 1, S(TOP_MSG), S("H: 1\r\nH: 2\r\n\r\nb1\r\n.\r\n"), 0},
    {"n = 2, stuffed", true, 2, S(TOP_MSG), S("H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\n.\r\n"), 1},
    {"n = body", true, 3, S(TOP_MSG), S("H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\nb3\r\n.\r\n"), 1},
    {"n > body", true, 100, S(TOP_MSG), S("H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\nb3\r\n.\r\n"), 1},
    {"headers only", true, 0, S("H: 1\r\nH: 2\r\n"), S("H: 1\r\nH: 2\r\n.\r\n"), 0},
    {"headers only, n = 5", true, 5, S("H: 1\r\nH: 2\r\n"), S("H: 1\r\nH: 2\r\n.\r\n"), 0},
    {"headers only, no final CRLF", true, 0, S("H: 1"), S("H: 1\r\n.\r\n"), 0},
    {"empty message", true, 0, S(""), S(".\r\n"), 0},
    {"no headers, n = 0", true, 0, S("\r\nbody\r\n"), S("\r\n.\r\n"), 0},
    {"no headers, n = 1", true, 1, S("\r\nbody\r\n"), S("\r\nbody\r\n.\r\n"), 0},
    {"blank body lines count", true, 2, S("H\r\n\r\n\r\n\r\nx\r\n"), S("H\r\n\r\n\r\n\r\n.\r\n"),
     0},
    {"last body line without CRLF", true, 3, S("H\r\n\r\na\r\nb"), S("H\r\n\r\na\r\nb\r\n.\r\n"),
     0},
    {"rest ignored, even a smuggled end", true, 0, S("H\r\n\r\n.\r\n\n.\n"), S("H\r\n\r\n.\r\n"),
     0},
    {"bare LF headers", true, 1, S("H: 1\nH: 2\n\nb1\nb2\n"), S("H: 1\r\nH: 2\r\n\r\nb1\r\n.\r\n"),
     0},
};

static void test_top_cases(void **state)
{
    replay_all(top_cases, ARRAY_LEN(top_cases));
}

static void test_top_has_enough(void **state)
{
    /* Once the lines are out, input is taken and dropped, so the caller may stop reading. */
    struct dotstuff ds;
    unsigned char out[64];
    size_t used;
    dotstuff_init_top(&ds, 1);
    assert_false(dotstuff_has_enough(&ds));
    size_t k = dotstuff_encode(&ds, (const unsigned char *)"H\r\n\r\nb1\r\nb2\r\n", 13, &used, out,
                               sizeof(out));
    assert_int_equal(used, 13);
    assert_int_equal(k, 9);
    assert_memory_equal(out, "H\r\n\r\nb1\r\n", 9);
    assert_true(dotstuff_has_enough(&ds));
    k = dotstuff_encode(&ds, (const unsigned char *)"more\r\n", 6, &used, out, sizeof(out));
    assert_int_equal(k, 0);
    assert_int_equal(used, 6);
    assert_int_equal(dotstuff_finish(&ds, out, sizeof(out)), 3);
    assert_true(dotstuff_is_done(&ds));

    /* A whole-body encoder never has enough. */
    dotstuff_init(&ds);
    k = dotstuff_encode(&ds, (const unsigned char *)"H\r\n\r\n", 5, &used, out, sizeof(out));
    assert_int_equal(k, 5);
    assert_false(dotstuff_has_enough(&ds));
}

static void test_bounds_and_counters(void **state)
{
    /* Worst case for the size bound: every octet doubles. */
    static const char worst[] = "\n.\n.\n.\r.";
    struct dotstuff ds;
    struct sink out = {NULL, 0, 0};
    dotstuff_init(&ds);
    encode_cuts(&ds, (const unsigned char *)worst, sizeof(worst) - 1, NULL, 0, 4096, &out);
    assert_true(out.len <= DOTSTUFF_MAX_OUT_BYTES(sizeof(worst) - 1));
    assert_int_equal(out.len, 2 * (sizeof(worst) - 1) + 2 + 3);
    assert_int_equal(ds.in_bytes, sizeof(worst) - 1);
    assert_int_equal(ds.stuffed_count, 4);
    assert_int_equal(ds.bare_count, 4);
    assert_int_equal(ds.lines, 5);
    free(out.data);

    /* Zero output room: nothing used, nothing written. */
    unsigned char b[1];
    size_t used = 99;
    dotstuff_init(&ds);
    assert_int_equal(dotstuff_encode(&ds, (const unsigned char *)"abc", 3, &used, b, 0), 0);
    assert_int_equal(used, 0);
    assert_int_equal(dotstuff_encode(&ds, (const unsigned char *)"\r\n.", 3, &used, b, 0), 0);
    assert_int_equal(used, 0);
    assert_int_equal(ds.in_bytes, 0);
}

/* ---- round trip through the receiving side ---- */

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/*
 * A body from an alphabet rich in what matters: dots, CR, LF, NUL, 8-bit. canonical: only CRLF
 * line ends, ending in CRLF (or empty), like every stored body.
 */
static size_t gen_body(uint64_t *seed, unsigned char *p, size_t max, bool canonical)
{
    static const unsigned char alphabet[] = {'.', '.', '.', 'a', ' ', '\0', 0xff, '\r', '\n'};
    size_t n = (size_t)(next_rand(seed) % (max + 1));
    size_t len = 0;
    for (size_t i = 0; i < n && len + 2 <= max; i++) {
        unsigned char c = alphabet[next_rand(seed) % sizeof(alphabet)];
        if (canonical && (c == '\r' || c == '\n')) {
            p[len++] = '\r';
            p[len++] = '\n';
        } else {
            p[len++] = c;
        }
    }
    if (canonical && len > 0 && !(len >= 2 && p[len - 2] == '\r' && p[len - 1] == '\n')) {
        if (len + 2 > max)
            len = max - 2;
        /* Do not split a CRLF when cutting back. */
        if (len > 0 && p[len - 1] == '\r')
            len--;
        p[len++] = '\r';
        p[len++] = '\n';
    }
    return len;
}

/* What the scanner stores for a body sent by the encoder: every line end made CRLF. */
static size_t normalise(const unsigned char *p, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' || p[i] == '\n') {
            out[o++] = '\r';
            out[o++] = '\n';
            if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
                i++;
        } else {
            out[o++] = p[i];
        }
    }
    if (o > 0 && !(o >= 2 && out[o - 2] == '\r' && out[o - 1] == '\n')) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    return o;
}

/* Scans wire (followed by a pipelined command) in pieces of `piece` octets; checks the result. */
static void scan_back(const struct sink *wire, size_t piece, const unsigned char *want,
                      size_t want_len)
{
    struct smtp_data d;
    assert_int_equal(smtp_data_init(&d, 1 << 20, 0), 0);
    struct sink in = {NULL, 0, 0};
    sink_put(&in, wire->data, wire->len);
    sink_put(&in, (const unsigned char *)"QUIT\r\n", 6);
    enum smtp_data_status st = SMTP_DATA_MORE;
    size_t used = 0, off = 0;
    for (size_t guard = 0; off < in.len && st == SMTP_DATA_MORE; guard++) {
        assert_true(guard <= in.len);
        size_t n = in.len - off < piece ? in.len - off : piece;
        used += smtp_data_feed(&d, in.data + off, n, &st);
        off += n;
    }
    assert_int_equal(st, SMTP_DATA_DONE);
    /* The end is exactly where the encoder put it: not earlier. */
    assert_int_equal(used, wire->len);
    size_t len;
    const unsigned char *body = smtp_data_body(&d, &len);
    assert_int_equal(len, want_len);
    if (len > 0)
        assert_memory_equal(body, want, len);
    assert_int_equal(d.bare_lf_count + d.bare_cr_count, 0);
    smtp_data_free(&d);
    free(in.data);
}

#define RT_BODY_MAX_BYTES 48
#define RT_BODIES         600

static void test_round_trip(void **state)
{
    uint64_t seed = 0x2545f4914f6cdd1du;
    unsigned char body[RT_BODY_MAX_BYTES], want[2 * RT_BODY_MAX_BYTES + 2];
    for (size_t i = 0; i < RT_BODIES; i++) {
        bool canonical = i % 3 != 0;
        size_t n = gen_body(&seed, body, sizeof(body), canonical);
        size_t want_len = normalise(body, n, want);
        if (canonical) {
            /* A stored body comes back exactly. */
            assert_int_equal(want_len, n);
            assert_true(n == 0 || memcmp(want, body, n) == 0);
        }
        size_t out_cap = out_caps[i % ARRAY_LEN(out_caps)];
        /* Every cut of the input into two pieces, and one byte at a time. */
        for (size_t at = 0; at <= n + 1; at++) {
            struct dotstuff ds;
            struct sink wire = {NULL, 0, 0};
            dotstuff_init(&ds);
            if (at <= n) {
                encode_cuts(&ds, body, n, &at, 1, out_cap, &wire);
            } else {
                size_t ones[RT_BODY_MAX_BYTES];
                for (size_t k = 0; k < n; k++)
                    ones[k] = k + 1;
                encode_cuts(&ds, body, n, ones, n, out_cap, &wire);
            }
            check_wire(wire.data, wire.len);
            assert_true(wire.len <= DOTSTUFF_MAX_OUT_BYTES(n));
            scan_back(&wire, 1 + at % 7, want, want_len);
            if (at == 0)
                scan_back(&wire, wire.len + 6, want, want_len);
            free(wire.data);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_cases),     cmocka_unit_test(test_top_cases),
        cmocka_unit_test(test_top_has_enough), cmocka_unit_test(test_bounds_and_counters),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
