/*
 * fuzz_smtp_data.c - libFuzzer target for the DATA scanner (common/pure/smtp_data.c) and the
 * dot-stuffing encoder (common/pure/dotstuff.c).
 *
 * Input layout: byte 0 picks max_bytes, bytes 1..4 a cycle of piece sizes for the scanner, byte 5
 * the encoder's output buffer size, byte 6 the TOP line count; the rest is the stream that
 * follows "354", to which "\r\n.\r\n" is appended so that every run reaches an end.
 *
 * Checks (a violation traps):
 *   - the scanner, fed in the chosen pieces and fed in one call, agrees with a reference written
 *     the obvious way over the whole stream (find the first CRLF "." CRLF counting the start as a
 *     line start; split the content at CRLF; drop a leading "."; replace each remaining CR and LF
 *     with CRLF): same status, octets used, content and counters;
 *   - fed in pieces with spilling on (an in-memory part of 1..16 octets, byte 5), the spilled
 *     octets followed by those kept in memory are the reference's content, and the block never
 *     grows past the in-memory part;
 *   - the octets used never pass the stream; the content never passes max_bytes, holds no bare
 *     CR or LF, is empty or ends in CRLF; the block stays within reserve + max;
 *   - the stored content, dot-stuffed in pieces with a small output buffer and scanned again,
 *     comes back exactly, ending exactly at the encoder's terminator;
 *   - the raw stream as BDAT content (smtp_data_set_raw), fed in the chosen pieces, with and
 *     without spilling, and finished: the normalised raw stream (every CR, LF and CRLF made
 *     CRLF, a final line end added), or TOO_BIG when that passes max_bytes;
 *   - the raw stream itself, dot-stuffed, has no bare CR or LF and no early end, and scans back
 *     to its normalised form; a TOP of it scans back to a prefix of that, ending at a line end.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/dotstuff.h"
#include "common/pure/smtp_data.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define HEADER_BYTES  7
#define PIECE_SLOTS   4
#define RESERVE_BYTES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct bytes {
    unsigned char *p; /* owned */
    size_t len;
};

static void put(struct bytes *b, const void *src, size_t n)
{
    unsigned char *p = realloc(b->p, b->len + n + 1);
    CHECK(p != NULL);
    if (n > 0)
        memcpy(p + b->len, src, n);
    b->p = p;
    b->len += n;
}

/* ---- the reference ---- */

struct ref {
    bool done;
    size_t used;
    struct bytes body;
    uint64_t bare_lf, bare_cr, unstuffed;
};

static void ref_scan(const unsigned char *s, size_t n, struct ref *r)
{
    memset(r, 0, sizeof(*r));
    /* The end: ".\r\n" at the start, or the first "\r\n.\r\n". */
    size_t content_len = 0;
    if (n >= 3 && memcmp(s, ".\r\n", 3) == 0) {
        r->done = true;
        r->used = 3;
    } else {
        for (size_t k = 0; k + 5 <= n; k++) {
            if (memcmp(s + k, "\r\n.\r\n", 5) == 0) {
                r->done = true;
                r->used = k + 5;
                content_len = k + 2;
                break;
            }
        }
    }
    if (!r->done)
        return;
    /* Lines end at CRLF; the content ends in CRLF. */
    size_t start = 0;
    while (start < content_len) {
        size_t end = start;
        while (!(s[end] == '\r' && s[end + 1] == '\n'))
            end++;
        size_t i = start;
        if (s[i] == '.' && i < end) {
            i++;
            r->unstuffed++;
        }
        for (; i < end; i++) {
            if (s[i] == '\r' || s[i] == '\n') {
                if (s[i] == '\r')
                    r->bare_cr++;
                else
                    r->bare_lf++;
                put(&r->body, "\r\n", 2);
            } else {
                put(&r->body, s + i, 1);
            }
        }
        put(&r->body, "\r\n", 2);
        start = end + 2;
    }
}

/* ---- helpers ---- */

static void check_canonical(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r')
            CHECK(i + 1 < n && p[i + 1] == '\n');
        if (p[i] == '\n')
            CHECK(i > 0 && p[i - 1] == '\r');
    }
}

struct scan {
    enum smtp_data_status status;
    size_t used;
    struct smtp_data d;
};

static void scan(struct scan *sc, const unsigned char *s, size_t n, size_t max,
                 const uint8_t *pieces)
{
    CHECK(smtp_data_init(&sc->d, max, RESERVE_BYTES) == 0);
    sc->status = SMTP_DATA_MORE;
    sc->used = 0;
    size_t off = 0;
    for (size_t i = 0; off < n; i++) {
        CHECK(i <= n);
        size_t piece = pieces == NULL ? n : (size_t)pieces[i % PIECE_SLOTS] + 1;
        if (piece > n - off)
            piece = n - off;
        size_t k = smtp_data_feed(&sc->d, s + off, piece, &sc->status);
        CHECK(k <= piece);
        sc->used += k;
        CHECK(sc->d.block_cap <= RESERVE_BYTES + max);
        if (sc->status != SMTP_DATA_MORE)
            break;
        CHECK(k == piece);
        off += piece;
    }
}

static void check_scan(struct scan *sc, const struct ref *r, size_t max)
{
    CHECK(sc->status != SMTP_DATA_MORE);
    CHECK(sc->status != SMTP_DATA_DONE_NO_MEMORY);
    CHECK(r->done);
    CHECK(sc->used == r->used);
    CHECK(sc->d.received_bytes == r->used);
    CHECK(sc->d.content_bytes == r->body.len);
    CHECK(sc->d.bare_lf_count == r->bare_lf);
    CHECK(sc->d.bare_cr_count == r->bare_cr);
    CHECK(sc->d.unstuffed_count == r->unstuffed);
    size_t len;
    const unsigned char *body = smtp_data_body(&sc->d, &len);
    if (r->body.len > max) {
        CHECK(sc->status == SMTP_DATA_DONE_TOO_BIG);
        CHECK(body == NULL && len == 0 && sc->d.block == NULL);
        return;
    }
    CHECK(sc->status == SMTP_DATA_DONE);
    CHECK(len == r->body.len);
    CHECK(len == 0 || memcmp(body, r->body.p, len) == 0);
    check_canonical(body, len);
    CHECK(len == 0 || (len >= 2 && body[len - 2] == '\r' && body[len - 1] == '\n'));
}

static int spill_to_bytes(void *ctx, const unsigned char *p, size_t n)
{
    CHECK(n > 0);
    put(ctx, p, n);
    return 0;
}

/* Scans in pieces with an in-memory part of mem octets: spilled + kept is the content. */
static void check_spilling(const unsigned char *s, size_t n, size_t max, const uint8_t *pieces,
                           size_t mem, const struct ref *r)
{
    struct bytes spilled = {NULL, 0};
    struct smtp_data d;
    CHECK(smtp_data_init(&d, max, 0) == 0);
    CHECK(smtp_data_set_spill(&d, mem, spill_to_bytes, &spilled) == 0);
    enum smtp_data_status st = SMTP_DATA_MORE;
    size_t off = 0;
    for (size_t i = 0; off < n && st == SMTP_DATA_MORE; i++) {
        size_t piece = (size_t)pieces[i % PIECE_SLOTS] + 1;
        if (piece > n - off)
            piece = n - off;
        smtp_data_feed(&d, s + off, piece, &st);
        CHECK(d.block_cap <= mem);
        off += piece;
    }
    CHECK(st == (r->body.len > max ? SMTP_DATA_DONE_TOO_BIG : SMTP_DATA_DONE));
    if (st == SMTP_DATA_DONE) {
        size_t len;
        const unsigned char *body = smtp_data_body(&d, &len);
        CHECK(smtp_data_spilled_bytes(&d) == spilled.len);
        CHECK(spilled.len + len == r->body.len);
        CHECK(spilled.len == 0 || memcmp(spilled.p, r->body.p, spilled.len) == 0);
        CHECK(len == 0 || memcmp(body, r->body.p + spilled.len, len) == 0);
    }
    smtp_data_free(&d);
    free(spilled.p);
}

static struct bytes normalise(const unsigned char *p, size_t n);

/* BDAT: raw content in pieces (spilling when mem > 0), then the caller's end. */
static void check_raw(const unsigned char *s, size_t n, size_t max, const uint8_t *pieces,
                      size_t mem)
{
    struct bytes want = normalise(s, n);
    struct bytes spilled = {NULL, 0};
    struct smtp_data d;
    CHECK(smtp_data_init(&d, max, RESERVE_BYTES) == 0);
    if (mem > 0)
        CHECK(smtp_data_set_spill(&d, mem, spill_to_bytes, &spilled) == 0);
    CHECK(smtp_data_set_raw(&d) == 0);
    size_t off = 0;
    for (size_t i = 0; off < n; i++) {
        size_t piece = (size_t)pieces[i % PIECE_SLOTS] + 1;
        if (piece > n - off)
            piece = n - off;
        enum smtp_data_status st;
        CHECK(smtp_data_feed(&d, s + off, piece, &st) == piece);
        CHECK(st == SMTP_DATA_MORE);
        off += piece;
    }
    enum smtp_data_status st = smtp_data_finish(&d);
    CHECK(smtp_data_finish(&d) == st);
    CHECK(d.content_bytes == want.len);
    if (want.len > max) {
        CHECK(st == SMTP_DATA_DONE_TOO_BIG);
    } else {
        CHECK(st == SMTP_DATA_DONE);
        size_t len;
        const unsigned char *body = smtp_data_body(&d, &len);
        CHECK(spilled.len + len == want.len);
        CHECK(spilled.len == 0 || memcmp(spilled.p, want.p, spilled.len) == 0);
        CHECK(len == 0 || memcmp(body, want.p + spilled.len, len) == 0);
    }
    smtp_data_free(&d);
    free(spilled.p);
    free(want.p);
}

/* Dot-stuffs in[0..n) in pieces of `piece` octets into an output buffer of out_cap octets. */
static void stuff(struct dotstuff *ds, const unsigned char *in, size_t n, size_t piece,
                  size_t out_cap, struct bytes *wire)
{
    unsigned char buf[256];
    CHECK(out_cap >= 1 && out_cap <= sizeof(buf));
    size_t off = 0;
    for (size_t guard = 0; off < n && !dotstuff_has_enough(ds); guard++) {
        CHECK(guard <= 2 * n + 8);
        size_t left = n - off < piece ? n - off : piece;
        size_t used;
        size_t k = dotstuff_encode(ds, in + off, left, &used, buf, out_cap);
        CHECK(used <= left);
        CHECK(k == out_cap || used == left);
        put(wire, buf, k);
        off += used;
    }
    for (size_t guard = 0; !dotstuff_is_done(ds); guard++) {
        CHECK(guard <= 8);
        put(wire, buf, dotstuff_finish(ds, buf, out_cap));
    }
    CHECK(ds->out_bytes == wire->len);
}

/* The encoder's output: canonical, and its first end (counting the start) is its last line. */
static void check_wire(const struct bytes *w)
{
    CHECK(w->len >= 3);
    check_canonical(w->p, w->len);
    if (w->len == 3) {
        CHECK(memcmp(w->p, ".\r\n", 3) == 0);
        return;
    }
    CHECK(memcmp(w->p, ".\r\n", 3) != 0);
    for (size_t k = 0; k + 5 <= w->len; k++)
        if (memcmp(w->p + k, "\r\n.\r\n", 5) == 0)
            CHECK(k + 5 == w->len);
    CHECK(memcmp(w->p + w->len - 5, "\r\n.\r\n", 5) == 0);
}

/* Scans the encoder's output back; returns the content (caller frees). */
static struct bytes scan_back(const struct bytes *wire, const uint8_t *pieces)
{
    struct scan sc;
    scan(&sc, wire->p, wire->len, SIZE_MAX / 8, pieces);
    CHECK(sc.status == SMTP_DATA_DONE);
    CHECK(sc.used == wire->len);
    CHECK(sc.d.bare_cr_count == 0 && sc.d.bare_lf_count == 0);
    size_t len;
    const unsigned char *body = smtp_data_body(&sc.d, &len);
    struct bytes out = {NULL, 0};
    put(&out, body, len);
    smtp_data_free(&sc.d);
    return out;
}

/* Every CR, LF and CRLF made CRLF; a final line end added: what the scanner keeps of a stuffed
 * body. */
static struct bytes normalise(const unsigned char *p, size_t n)
{
    struct bytes out = {NULL, 0};
    put(&out, "", 0);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' || p[i] == '\n') {
            put(&out, "\r\n", 2);
            if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
                i++;
        } else {
            put(&out, p + i, 1);
        }
    }
    if (out.len > 0 && !(out.len >= 2 && out.p[out.len - 1] == '\n'))
        put(&out, "\r\n", 2);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER_BYTES)
        return 0;
    size_t max = data[0] == 0xff ? SIZE_MAX / 8 : (size_t)data[0] * 3;
    const uint8_t *pieces = data + 1;
    size_t out_cap = (size_t)(data[5] % 64) + 1;
    uint64_t top_lines = data[6] % 8;
    const unsigned char *raw = data + HEADER_BYTES;
    size_t raw_len = size - HEADER_BYTES;

    struct bytes stream = {NULL, 0};
    put(&stream, raw, raw_len);
    put(&stream, "\r\n.\r\n", 5);

    struct ref r;
    ref_scan(stream.p, stream.len, &r);

    /* Chunked and one-shot both match the reference, hence each other. */
    struct scan chunked, whole;
    scan(&chunked, stream.p, stream.len, max, pieces);
    check_scan(&chunked, &r, max);
    scan(&whole, stream.p, stream.len, max, NULL);
    check_scan(&whole, &r, max);
    CHECK(chunked.d.lines == whole.d.lines);
    CHECK(chunked.d.longest_line_bytes == whole.d.longest_line_bytes);
    CHECK(chunked.d.long_lines == whole.d.long_lines);
    check_spilling(stream.p, stream.len, max, pieces, (size_t)(data[5] % 16) + 1, &r);

    check_raw(raw, raw_len, max, pieces, 0);
    check_raw(raw, raw_len, max, pieces, (size_t)(data[5] % 16) + 1);

    /* The stored body survives stuffing and scanning exactly. */
    if (chunked.status == SMTP_DATA_DONE) {
        size_t len;
        const unsigned char *body = smtp_data_body(&chunked.d, &len);
        struct dotstuff ds;
        struct bytes wire = {NULL, 0};
        dotstuff_init(&ds);
        stuff(&ds, body, len, (size_t)pieces[0] + 1, out_cap, &wire);
        check_wire(&wire);
        CHECK(wire.len <= DOTSTUFF_MAX_OUT_BYTES(len));
        CHECK(ds.bare_count == 0);
        struct bytes back = scan_back(&wire, pieces);
        CHECK(back.len == len && (len == 0 || memcmp(back.p, body, len) == 0));
        free(back.p);
        free(wire.p);
    }
    smtp_data_free(&chunked.d);
    smtp_data_free(&whole.d);

    /* Any octets at all, stuffed, are safe on the wire and scan back normalised. */
    struct dotstuff ds;
    struct bytes wire = {NULL, 0};
    dotstuff_init(&ds);
    stuff(&ds, raw, raw_len, (size_t)pieces[1] + 1, out_cap, &wire);
    check_wire(&wire);
    CHECK(wire.len <= DOTSTUFF_MAX_OUT_BYTES(raw_len));
    struct bytes norm = normalise(raw, raw_len);
    struct bytes back = scan_back(&wire, pieces);
    CHECK(back.len == norm.len && (back.len == 0 || memcmp(back.p, norm.p, back.len) == 0));

    /* TOP of it: a prefix of the whole, cut at a line end. */
    struct bytes top_wire = {NULL, 0};
    dotstuff_init_top(&ds, top_lines);
    stuff(&ds, raw, raw_len, (size_t)pieces[2] + 1, out_cap, &top_wire);
    check_wire(&top_wire);
    struct bytes top_back = scan_back(&top_wire, pieces);
    CHECK(top_back.len <= back.len);
    CHECK(top_back.len == 0 || memcmp(top_back.p, back.p, top_back.len) == 0);
    CHECK(top_back.len == 0 || top_back.p[top_back.len - 1] == '\n');

    free(top_back.p);
    free(top_wire.p);
    free(back.p);
    free(norm.p);
    free(wire.p);
    free(r.body.p);
    free(stream.p);
    return 0;
}
