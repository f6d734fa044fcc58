/*
 * fuzz_buf.c - libFuzzer target for the line reader in common/pure/buf.c.
 *
 * Input layout: byte 0 picks the line limit, byte 1 how far above it the reader's largest limit
 * lies, byte 2 the mode, bytes 3..10 a cycle of piece sizes; the rest is the byte stream, fed in
 * those pieces the way conn.c would (offer, drain with linereader_next(), offer the remainder).
 *
 * Plain mode (mode bit 0 clear) replays the whole stream through a simple reference splitter and
 * requires the reader to report exactly the same sequence of lines, bad lines and too-long lines
 * (so a too-long line is reported once, its tail never returned, and cutting the stream
 * differently changes nothing). Operations mode (bit 0 set) also changes the limit, takes the
 * buffered bytes and discards between pieces, and checks only invariants. Both modes check after
 * every call: returned lines fit the limit, hold no LF (and no NUL for LINE), the buffer stays
 * bounded and never reallocates, and every accepted octet is accounted for. Violations trap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/buf.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define HEADER_BYTES 11
#define PIECE_SLOTS  8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One expected result from the reference splitter. */
struct ref_event {
    enum linereader_status status;
    size_t off; /* LINE/BAD_LINE: where the line starts in the stream */
    size_t len;
    bool bare_lf;
};

struct ref {
    struct ref_event *events; /* owned */
    size_t count;
    size_t next;          /* next event the reader must produce */
    size_t left_buffered; /* octets the reader must still hold at the end */
    bool left_skipping;   /* whether it must still be skipping */
};

/*
 * The specification, written the obvious way over the whole stream: a line is acceptable when its
 * LF is among its first max octets; a stretch of max octets without LF is one too-long line,
 * dropped through its LF.
 */
static int ref_build(struct ref *ref, const uint8_t *s, size_t n, size_t max)
{
    memset(ref, 0, sizeof(*ref));
    /* At most one event per LF plus one for an unterminated too-long line. */
    ref->events = calloc(n + 1, sizeof(*ref->events));
    if (ref->events == NULL)
        return -1;
    size_t pos = 0;
    while (pos < n) {
        const uint8_t *lf = memchr(s + pos, '\n', n - pos);
        size_t lf_at = lf != NULL ? (size_t)(lf - s) : n;
        struct ref_event *ev = &ref->events[ref->count];
        if (lf != NULL && lf_at - pos < max) {
            size_t len = lf_at - pos;
            ev->bare_lf = true;
            if (len > 0 && s[lf_at - 1] == '\r') {
                len--;
                ev->bare_lf = false;
            }
            ev->status = memchr(s + pos, '\0', len) != NULL ? LINEREADER_BAD_LINE : LINEREADER_LINE;
            ev->off = pos;
            ev->len = len;
            ref->count++;
            pos = lf_at + 1;
        } else if (n - pos >= max) {
            ev->status = LINEREADER_TOO_LONG;
            ref->count++;
            if (lf == NULL) {
                ref->left_skipping = true;
                pos = n;
            } else {
                pos = lf_at + 1;
            }
        } else {
            ref->left_buffered = n - pos;
            break;
        }
    }
    return 0;
}

struct run {
    struct linereader lr;
    bool ops_mode;
    const uint8_t *stream;
    size_t stream_len;
    struct ref ref;
    uint64_t fed;      /* octets accepted */
    uint64_t in_lines; /* octets of LINE/BAD_LINE results with terminators */
    uint64_t removed;  /* octets taken or discarded */
    uint64_t too_long; /* TOO_LONG results */
    size_t cap;        /* the reader's allocation, which must never change */
};

static void check_accounting(const struct run *r)
{
    CHECK(r->fed == r->in_lines + r->lr.skipped_bytes + r->removed + linereader_buffered(&r->lr));
    CHECK(r->too_long == r->lr.too_long_count);
    CHECK(linereader_buffered(&r->lr) <= r->lr.largest_line_bytes + LINEREADER_SLACK_BYTES);
    CHECK(r->lr.in.cap == r->cap);
    /* While skipping, nothing is stored. */
    CHECK(!linereader_is_skipping(&r->lr) || linereader_buffered(&r->lr) == 0);
}

static void check_against_ref(struct run *r, enum linereader_status st,
                              const struct linereader_line *line)
{
    if (r->ops_mode)
        return;
    CHECK(r->ref.next < r->ref.count);
    const struct ref_event *ev = &r->ref.events[r->ref.next++];
    CHECK(st == ev->status);
    if (st == LINEREADER_TOO_LONG)
        return;
    CHECK(line->len == ev->len);
    CHECK(line->bare_lf == ev->bare_lf);
    CHECK(memcmp(line->data, r->stream + ev->off, ev->len) == 0);
}

static void drain(struct run *r)
{
    /* Each non-NEED_MORE result consumes at least one buffered octet, so this ends. */
    for (size_t guard = 0;; guard++) {
        CHECK(guard <= r->cap + 1);
        struct linereader_line line;
        size_t buffered_before = linereader_buffered(&r->lr);
        size_t max = r->lr.max_line_bytes;
        enum linereader_status st = linereader_next(&r->lr, &line);
        switch (st) {
        case LINEREADER_NEED_MORE:
            CHECK(line.data == NULL && line.len == 0);
            CHECK(linereader_is_skipping(&r->lr) || buffered_before < max);
            CHECK(linereader_buffered(&r->lr) == buffered_before);
            check_accounting(r);
            return;
        case LINEREADER_LINE:
        case LINEREADER_BAD_LINE: {
            if (st == LINEREADER_LINE) {
                CHECK(line.data[line.len] == '\0');
                CHECK(memchr(line.data, '\0', line.len) == NULL);
            }
            size_t term = line.bare_lf ? 1 : 2;
            CHECK(line.data != NULL);
            CHECK(line.len + term <= max);
            CHECK(memchr(line.data, '\n', line.len) == NULL);
            CHECK(st == LINEREADER_LINE || memchr(line.data, '\0', line.len) != NULL);
            CHECK(buffered_before - linereader_buffered(&r->lr) == line.len + term);
            r->in_lines += line.len + term;
            break;
        }
        case LINEREADER_TOO_LONG:
            CHECK(buffered_before >= max);
            CHECK(line.len == max);
            CHECK(memchr(line.data, '\n', line.len) == NULL);
            r->too_long++;
            break;
        default:
            CHECK(false);
        }
        check_against_ref(r, st, &line);
        check_accounting(r);
    }
}

/* Between pieces in operations mode: one of several things conn.c may do, chosen by sel. */
static void operate(struct run *r, uint8_t sel)
{
    const unsigned char *p = NULL;
    size_t n, before = linereader_buffered(&r->lr);
    switch (sel % 8) {
    case 0: /* AUTH raises the limit; a bad value must be refused and change nothing */
        if (linereader_set_max(&r->lr, LINEREADER_MIN_LINE_BYTES + sel) == 0)
            CHECK(r->lr.max_line_bytes == LINEREADER_MIN_LINE_BYTES + (size_t)sel);
        else
            CHECK(LINEREADER_MIN_LINE_BYTES + (size_t)sel > r->lr.largest_line_bytes);
        break;
    case 1:
        CHECK(linereader_set_max(&r->lr, r->lr.largest_line_bytes) == 0);
        break;
    case 2: /* DATA */
        n = linereader_take_buffered(&r->lr, &p);
        CHECK(n == before);
        CHECK((n == 0) == (p == NULL));
        r->removed += n;
        CHECK(!linereader_is_skipping(&r->lr));
        break;
    case 3: /* STARTTLS */
        n = linereader_discard(&r->lr);
        CHECK(n == before);
        r->removed += n;
        CHECK(!linereader_is_skipping(&r->lr));
        break;
    default:
        break;
    }
    CHECK(r->lr.max_line_bytes >= LINEREADER_MIN_LINE_BYTES);
    CHECK(r->lr.max_line_bytes <= r->lr.largest_line_bytes);
    check_accounting(r);
    /* conn.c keeps calling linereader_next() after a change; a lower limit may end a line here. */
    drain(r);
}

static void feed_piece(struct run *r, const uint8_t *src, size_t n)
{
    size_t off = 0;
    for (size_t guard = 0; off < n; guard++) {
        CHECK(guard <= n);
        size_t k = linereader_feed(&r->lr, src + off, n - off);
        /* A drained reader always takes something, or the caller would spin. */
        CHECK(k > 0 && k <= n - off);
        off += k;
        r->fed += k;
        CHECK(linereader_buffered(&r->lr) <= r->lr.max_line_bytes + LINEREADER_SLACK_BYTES ||
              r->ops_mode);
        check_accounting(r);
        drain(r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER_BYTES)
        return 0;
    struct run r;
    memset(&r, 0, sizeof(r));
    size_t max = LINEREADER_MIN_LINE_BYTES + data[0];
    size_t largest = max + data[1];
    r.ops_mode = (data[2] & 1) != 0;
    const uint8_t *pieces = data + 3;
    r.stream = data + HEADER_BYTES;
    r.stream_len = size - HEADER_BYTES;

    if (linereader_init(&r.lr, max, largest) != 0)
        return 0;
    r.cap = r.lr.in.cap;
    CHECK(r.cap == largest + LINEREADER_SLACK_BYTES);
    if (!r.ops_mode && ref_build(&r.ref, r.stream, r.stream_len, max) != 0) {
        linereader_free(&r.lr);
        return 0;
    }

    size_t pos = 0;
    for (size_t i = 0; pos < r.stream_len; i++) {
        uint8_t sel = pieces[i % PIECE_SLOTS];
        /* 1..255 octets, or a big read now and then, as from a 64 KiB libuv buffer. */
        size_t piece = sel == 0 ? 4096 : sel;
        if (piece > r.stream_len - pos)
            piece = r.stream_len - pos;
        feed_piece(&r, r.stream + pos, piece);
        pos += piece;
        if (r.ops_mode)
            operate(&r, (uint8_t)(sel ^ data[2]));
    }
    CHECK(r.fed == r.stream_len);
    check_accounting(&r);

    if (!r.ops_mode) {
        CHECK(r.ref.next == r.ref.count);
        CHECK(linereader_buffered(&r.lr) == r.ref.left_buffered);
        CHECK(linereader_is_skipping(&r.lr) == r.ref.left_skipping);
        free(r.ref.events);
    }
    linereader_free(&r.lr);
    return 0;
}
