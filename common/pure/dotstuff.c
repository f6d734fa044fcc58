/*
 * dotstuff.c - streaming dot-stuffing encoder for POP3 RETR/TOP and outbound SMTP DATA; see
 * dotstuff.h for the contract.
 *
 * Each input octet that needs more than one output octet (a stuffed dot, a line end) is first
 * decided into a few pending octets and then written as far as the output allows; the octets
 * inside a line are copied straight through, together with the line's CRLF when it is canonical
 * and fits (the common case: a stored body is canonical, so a line that needs no stuffing costs
 * one memcpy). So the output bound can fall anywhere, even inside a CRLF, and the encoder picks
 * up exactly there on the next call.
 */
#include "common/pure/dotstuff.h"

#include <string.h>

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static void push(struct dotstuff *ds, const char *s, size_t n)
{
    /* Only called with pending empty; at most 5 octets (CRLF "." CRLF). */
    memcpy(ds->pending + ds->pending_len, s, n);
    ds->pending_len += n;
}

/* Writes pending octets into out[*o..out_cap); true if none are left. */
static bool flush(struct dotstuff *ds, unsigned char *out, size_t out_cap, size_t *o)
{
    size_t k = min_size(ds->pending_len - ds->pending_off, out_cap - *o);
    if (k > 0) {
        memcpy(out + *o, ds->pending + ds->pending_off, k);
        ds->pending_off += k;
        *o += k;
        ds->out_bytes += k;
    }
    if (ds->pending_off < ds->pending_len)
        return false;
    ds->pending_off = 0;
    ds->pending_len = 0;
    return true;
}

/* The first CR or LF in in[from..lim), or lim. Two memchr passes rather than one loop over the
 * octets: a body is mostly line text, and this copy is the whole cost of RETR's encoding. */
static size_t line_text_end(const unsigned char *in, size_t from, size_t lim)
{
    if (from >= lim)
        return lim;
    const unsigned char *cr = memchr(in + from, '\r', lim - from);
    size_t end = cr != NULL ? (size_t)(cr - in) : lim;
    const unsigned char *lf = end > from ? memchr(in + from, '\n', end - from) : NULL;
    return lf != NULL ? (size_t)(lf - in) : end;
}

/* A line end was sent: the line counting behind TOP. */
static void line_ended(struct dotstuff *ds)
{
    bool was_empty = ds->line_start;
    ds->line_start = true;
    ds->lines++;
    if (!ds->top)
        return;
    if (!ds->in_body) {
        /* RFC 5322 2.1: the first empty line ends the header section. */
        if (was_empty) {
            ds->in_body = true;
            ds->enough = ds->body_lines_left == 0;
        }
        return;
    }
    if (ds->body_lines_left > 0)
        ds->body_lines_left--;
    ds->enough = ds->body_lines_left == 0;
}

void dotstuff_init(struct dotstuff *ds)
{
    memset(ds, 0, sizeof(*ds));
    ds->line_start = true;
}

void dotstuff_init_top(struct dotstuff *ds, uint64_t body_lines)
{
    dotstuff_init(ds);
    ds->top = true;
    ds->body_lines_left = body_lines;
}

size_t dotstuff_encode(struct dotstuff *ds, const unsigned char *in, size_t in_len,
                       size_t *in_used_out, unsigned char *out, size_t out_cap)
{
    size_t i = 0, o = 0;
    if (ds->finishing || out_cap == 0) {
        *in_used_out = 0;
        return 0;
    }
    /* Each turn writes pending octets first; stop when they do not all fit (out is full). */
    while (flush(ds, out, out_cap, &o) && i < in_len) {
        if (ds->enough) {
            /* TOP has all it wants: the rest of the body is read and dropped. */
            i = in_len;
            break;
        }
        unsigned char c = in[i];
        if (ds->after_cr) {
            ds->after_cr = false;
            if (c == '\n') {
                /* The CRLF was sent when the CR came. */
                i++;
                continue;
            }
            /* That CR was bare; it is already sent as CRLF (dotstuff.h). */
            ds->bare_count++;
        }
        if (c == '\r' || c == '\n') {
            push(ds, "\r\n", 2);
            ds->after_cr = c == '\r';
            if (c == '\n')
                ds->bare_count++;
            i++;
            line_ended(ds);
        } else if (ds->line_start && c == '.') {
            /* RFC 5321 4.5.2, RFC 1939 3: a line starting with "." gets one more. */
            push(ds, "..", 2);
            ds->stuffed_count++;
            ds->line_start = false;
            i++;
        } else {
            if (o == out_cap)
                break;
            ds->line_start = false;
            /* The line's text, then, while they fit and need nothing done, whole canonical lines
             * (text and CRLF) each in one copy, without going round the outer loop. */
            for (;;) {
                size_t lim = min_size(in_len, i + (out_cap - o));
                size_t j = line_text_end(in, i + 1, lim);
                size_t k = j - i;
                bool crlf =
                    j + 1 < in_len && in[j] == '\r' && in[j + 1] == '\n' && k + 2 <= out_cap - o;
                if (crlf)
                    k += 2;
                memcpy(out + o, in + i, k);
                o += k;
                ds->out_bytes += k;
                i += k;
                if (!crlf)
                    break;
                line_ended(ds);
                /* A dot to stuff, an empty line (TOP's header end) or a bare line end, TOP's
                 * last line, or a full buffer: the outer loop decides. */
                if (ds->enough || i >= in_len || o == out_cap || in[i] == '.' || in[i] == '\r' ||
                    in[i] == '\n')
                    break;
                ds->line_start = false;
            }
        }
    }
    ds->in_bytes += i;
    *in_used_out = i;
    return o;
}

size_t dotstuff_finish(struct dotstuff *ds, unsigned char *out, size_t out_cap)
{
    size_t o = 0;
    if (!ds->finishing) {
        /* Whatever was pending from the body goes first. */
        if (!flush(ds, out, out_cap, &o))
            return o;
        ds->finishing = true;
        if (ds->after_cr && !ds->enough)
            ds->bare_count++; /* the body ended in a CR with no LF after it */
        ds->after_cr = false;
        /*
         * A final line without its line end gets one, so the "." is a line of its own. A CR at
         * the very end was already sent as CRLF (after_cr), so line_start is true then.
         */
        if (!ds->line_start) {
            push(ds, "\r\n.\r\n", 5);
            ds->lines++;
        } else {
            push(ds, ".\r\n", 3);
        }
    }
    flush(ds, out, out_cap, &o);
    return o;
}

bool dotstuff_is_done(const struct dotstuff *ds)
{
    return ds->finishing && ds->pending_len == 0;
}

bool dotstuff_has_enough(const struct dotstuff *ds)
{
    return ds->enough;
}
