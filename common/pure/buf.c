/*
 * buf.c - byte buffer, output queue and line reader; see buf.h for the contract.
 *
 * Pure code: no sockets, no libuv, no logging, no allocation after init except when a struct buf
 * or struct outq grows towards its limit. The line reader allocates its one buffer in
 * linereader_init() and never again. It does not know about SMTP or POP3 beyond the limits named
 * in buf.h; what a line means is the session's business.
 */
#include "common/pure/buf.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* First allocation of a growing buffer: one typical reply or command, not one byte at a time. */
#define BUF_FIRST_CAP_BYTES 256

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---- struct buf ---- */

void buf_init(struct buf *b, size_t limit_bytes)
{
    memset(b, 0, sizeof(*b));
    b->limit_bytes = limit_bytes;
}

void buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

int buf_reserve(struct buf *b, size_t cap_bytes)
{
    if (cap_bytes <= b->cap)
        return 0;
    if (cap_bytes > b->limit_bytes)
        return -ENOBUFS;
    /* Double, so that a buffer filled by small appends reallocates only log(limit) times. */
    size_t new_cap = b->cap > SIZE_MAX / 2 ? SIZE_MAX : b->cap * 2;
    if (new_cap < BUF_FIRST_CAP_BYTES)
        new_cap = BUF_FIRST_CAP_BYTES;
    if (new_cap < cap_bytes)
        new_cap = cap_bytes;
    if (new_cap > b->limit_bytes)
        new_cap = b->limit_bytes;
    unsigned char *p = realloc(b->data, new_cap);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = new_cap;
    return 0;
}

int buf_append(struct buf *b, const void *src, size_t n)
{
    if (n == 0)
        return 0;
    if (n > buf_room(b))
        return -ENOBUFS;
    if (b->cap - b->len < n) {
        buf_compact(b);
        if (b->cap - b->len < n) {
            int rc = buf_reserve(b, b->len + n);
            if (rc != 0)
                return rc;
        }
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    size_t unread = buf_unread(b);
    assert(n <= unread);
    if (n > unread)
        n = unread;
    b->off += n;
    /* Empty again: start over at the front, which makes compaction unnecessary most of the time. */
    if (b->off == b->len)
        b->off = b->len = 0;
}

void buf_compact(struct buf *b)
{
    if (b->off == 0)
        return;
    size_t unread = buf_unread(b);
    if (unread > 0)
        memmove(b->data, b->data + b->off, unread);
    b->off = 0;
    b->len = unread;
}

void buf_clear(struct buf *b)
{
    b->off = b->len = 0;
}

size_t buf_unread(const struct buf *b)
{
    return b->len - b->off;
}

unsigned char *buf_unread_data(const struct buf *b)
{
    return b->len > b->off ? b->data + b->off : NULL;
}

size_t buf_room(const struct buf *b)
{
    size_t unread = buf_unread(b);
    return b->limit_bytes > unread ? b->limit_bytes - unread : 0;
}

/* ---- struct outq ---- */

void outq_init(struct outq *q, size_t limit_bytes)
{
    memset(q, 0, sizeof(*q));
    /* Each half may hold everything; outq_append() enforces the limit on the sum. */
    buf_init(&q->pending, limit_bytes);
    buf_init(&q->in_flight, limit_bytes);
    q->limit_bytes = limit_bytes;
}

void outq_free(struct outq *q)
{
    assert(!q->writing);
    buf_free(&q->pending);
    buf_free(&q->in_flight);
    memset(q, 0, sizeof(*q));
}

int outq_append(struct outq *q, const void *src, size_t n)
{
    size_t unsent = outq_unsent_bytes(q);
    if (n > q->limit_bytes - min_size(unsent, q->limit_bytes))
        return -ENOBUFS;
    return buf_append(&q->pending, src, n);
}

size_t outq_unsent_bytes(const struct outq *q)
{
    return buf_unread(&q->pending) + buf_unread(&q->in_flight);
}

bool outq_is_writing(const struct outq *q)
{
    return q->writing;
}

size_t outq_write_begin(struct outq *q, const unsigned char **data_out)
{
    *data_out = NULL;
    if (q->writing || buf_unread(&q->pending) == 0)
        return 0;
    /* Swap rather than copy: the old in-flight allocation (empty now) becomes the new pending. */
    struct buf tmp = q->in_flight;
    q->in_flight = q->pending;
    q->pending = tmp;
    buf_clear(&q->pending);
    q->writing = true;
    *data_out = buf_unread_data(&q->in_flight);
    return buf_unread(&q->in_flight);
}

void outq_write_done(struct outq *q)
{
    assert(q->writing);
    buf_clear(&q->in_flight);
    q->writing = false;
}

/* ---- struct linereader ---- */

int linereader_init(struct linereader *lr, size_t max_line_bytes, size_t largest_line_bytes)
{
    memset(lr, 0, sizeof(*lr));
    if (max_line_bytes < LINEREADER_MIN_LINE_BYTES || max_line_bytes > largest_line_bytes ||
        largest_line_bytes > SIZE_MAX - LINEREADER_SLACK_BYTES)
        return -EINVAL;
    size_t cap = largest_line_bytes + LINEREADER_SLACK_BYTES;
    buf_init(&lr->in, cap);
    int rc = buf_reserve(&lr->in, cap);
    if (rc != 0) {
        buf_free(&lr->in);
        return rc;
    }
    lr->max_line_bytes = max_line_bytes;
    lr->largest_line_bytes = largest_line_bytes;
    return 0;
}

void linereader_free(struct linereader *lr)
{
    buf_free(&lr->in);
    memset(lr, 0, sizeof(*lr));
}

int linereader_set_max(struct linereader *lr, size_t max_line_bytes)
{
    if (max_line_bytes < LINEREADER_MIN_LINE_BYTES || max_line_bytes > lr->largest_line_bytes)
        return -EINVAL;
    lr->max_line_bytes = max_line_bytes;
    return 0;
}

size_t linereader_feed(struct linereader *lr, const void *src, size_t n)
{
    const unsigned char *p = src;
    size_t taken = 0;

    if (n == 0)
        return 0;
    if (lr->skipping) {
        /*
         * The rest of an overlong line: it was refused once already, and none of it may reach
         * the protocol as a command, so drop it here without storing it. This is
         * what keeps an endless line from costing memory.
         */
        const unsigned char *lf = memchr(p, '\n', n);
        if (lf == NULL) {
            lr->skipped_bytes += n;
            return n;
        }
        taken = (size_t)(lf - p) + 1;
        lr->skipped_bytes += taken;
        lr->skipping = false;
    }

    size_t hold = lr->max_line_bytes + LINEREADER_SLACK_BYTES;
    size_t unread = buf_unread(&lr->in);
    if (unread >= hold || taken == n)
        return taken;
    size_t want = min_size(n - taken, hold - unread);
    /* Cannot fail: hold <= the capacity reserved at init, so this never allocates. */
    if (buf_append(&lr->in, p + taken, want) != 0)
        return taken;
    return taken + want;
}

enum linereader_status linereader_next(struct linereader *lr, struct linereader_line *line_out)
{
    line_out->data = NULL;
    line_out->len = 0;
    line_out->bare_lf = false;

    /* While skipping, feed() stores nothing, so there is nothing to return. */
    size_t unread = buf_unread(&lr->in);
    if (lr->skipping || unread == 0) {
        lr->scanned_bytes = 0;
        return LINEREADER_NEED_MORE;
    }
    unsigned char *p = buf_unread_data(&lr->in);

    /* An acceptable line has its LF within the first max octets; search no further. */
    size_t limit = min_size(unread, lr->max_line_bytes);
    size_t start = min_size(lr->scanned_bytes, limit);
    const unsigned char *lf = start < limit ? memchr(p + start, '\n', limit - start) : NULL;
    if (lf != NULL) {
        size_t lf_off = (size_t)(lf - p);
        size_t len = lf_off;
        /*
         * CRLF ends a line, and so does a bare LF: RFC 5321 2.3.8 forbids bare LF, but being
         * liberal on command lines costs nothing and helps hand-typed sessions; the flag lets the
         * caller log it. (DATA is different and is not read here.) A CR elsewhere is data; the
         * command parser will reject it as a syntax error.
         */
        bool bare_lf = true;
        if (len > 0 && p[len - 1] == '\r') {
            len--;
            bare_lf = false;
        }
        buf_consume(&lr->in, lf_off + 1);
        lr->scanned_bytes = 0;
        line_out->data = (const char *)p;
        line_out->len = len;
        line_out->bare_lf = bare_lf;
        /* A NUL would cut the command short for any C string function: the line is void. */
        if (memchr(p, '\0', len) != NULL)
            return LINEREADER_BAD_LINE;
        /* The terminator was consumed, so its first octet can carry the NUL. */
        p[len] = '\0';
        return LINEREADER_LINE;
    }
    if (unread < lr->max_line_bytes) {
        lr->scanned_bytes = unread;
        return LINEREADER_NEED_MORE;
    }

    /*
     * Max octets and no LF: the line is too long whatever comes next. Report it now, once, and
     * drop it through its LF. If the LF is not buffered yet, feed() drops the rest as it comes:
     * the tail must never be executed as a command (the classic way to smuggle a command past
     * a filter that only looked at the start of the line).
     */
    const unsigned char *tail_lf = unread > limit ? memchr(p + limit, '\n', unread - limit) : NULL;
    size_t drop = tail_lf != NULL ? (size_t)(tail_lf - p) + 1 : unread;
    buf_consume(&lr->in, drop);
    lr->skipping = tail_lf == NULL;
    lr->scanned_bytes = 0;
    lr->skipped_bytes += drop;
    lr->too_long_count++;
    line_out->data = (const char *)p;
    line_out->len = limit;
    return LINEREADER_TOO_LONG;
}

size_t linereader_take_buffered(struct linereader *lr, const unsigned char **data_out)
{
    size_t n = buf_unread(&lr->in);
    /* The bytes stay where they are until the next feed(), so the pointer outlives consume. */
    *data_out = buf_unread_data(&lr->in);
    buf_consume(&lr->in, n);
    lr->scanned_bytes = 0;
    lr->skipping = false;
    return n;
}

size_t linereader_discard(struct linereader *lr)
{
    size_t n = buf_unread(&lr->in);
    buf_clear(&lr->in);
    lr->scanned_bytes = 0;
    lr->skipping = false;
    return n;
}

size_t linereader_buffered(const struct linereader *lr)
{
    return buf_unread(&lr->in);
}

bool linereader_is_skipping(const struct linereader *lr)
{
    return lr->skipping;
}
