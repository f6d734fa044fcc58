/*
 * smtp_data.c - the SMTP DATA end-of-data scanner; see smtp_data.h for the rules and the contract.
 *
 * A byte-at-a-time state machine with a fast path for the octets inside a line. Every CR is
 * written out as CRLF the moment it arrives, whether or not an LF follows (a bare CR becomes CRLF
 * too), so the scanner never holds back content: the only octets it keeps pending are a "." at a
 * line start and a CR after it, which may turn out to be the terminator. No allocation happens
 * except growing the one content block, geometrically and never past the limit (max_bytes, or
 * memory_bytes when spilling: then a full block is handed to the spill function and refilled).
 * Raw content (BDAT) never enters the dot states: a line start is then just the middle of a line.
 */
#include "common/pure/smtp_data.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* First allocation for content: a typical small message without reallocating. */
#define SMTP_DATA_FIRST_CAP_BYTES 16384

/*
 * Where the scanner is. "Line start" means a real one: the start of the data or right after a
 * CRLF (smtp_data.h, protocol layer); a bare LF or CR leads to MID, not to LINE_START.
 */
enum scan_state {
    SCAN_LINE_START = 0, /* at a line start: a "." here is special */
    SCAN_DOT,            /* "." at a line start seen, nothing written for it yet */
    SCAN_DOT_CR,         /* "." CR at a line start seen: LF now ends the data */
    SCAN_MID,            /* inside a line, previous octet not CR */
    SCAN_CR,             /* a CR was seen (and written as CRLF): an LF now just completes it */
    SCAN_DONE,           /* end of data seen; result is final */
};

/* Drops the content kept so far: past the limit or out of memory, nothing is kept. */
static void drop_content(struct smtp_data *d)
{
    free(d->block);
    d->block = NULL;
    d->block_cap = 0;
    d->stored_bytes = 0;
    d->prefix_bytes = 0;
}

/* Makes room for `more` content octets; need <= reserve + max_bytes is checked by the caller. */
static int grow(struct smtp_data *d, size_t more)
{
    size_t need = d->head_bytes + d->stored_bytes + more;
    if (need <= d->block_cap)
        return 0;
    size_t keep =
        d->spill_fn != NULL && d->memory_bytes < d->max_bytes ? d->memory_bytes : d->max_bytes;
    size_t limit = d->head_bytes + keep;
    /* Doubling: log2(max / first) reallocations, and glibc moves big blocks with mremap. */
    size_t cap = d->block_cap != 0 ? d->block_cap * 2 : d->head_bytes + SMTP_DATA_FIRST_CAP_BYTES;
    if (cap < need)
        cap = need;
    if (cap > limit)
        cap = limit;
    unsigned char *p = realloc(d->block, cap);
    if (p == NULL)
        return -ENOMEM;
    d->block = p;
    d->block_cap = cap;
    return 0;
}

/* Hands the block's content to the spill function and empties the block. 0, or -1 (latched). */
static int spill_out(struct smtp_data *d)
{
    int rc = d->spill_fn(d->spill_ctx, d->block + d->head_bytes, d->stored_bytes);
    if (rc != 0) {
        d->spill_error = rc < 0 ? rc : -EIO;
        drop_content(d);
        return -1;
    }
    d->spilled_bytes += d->stored_bytes;
    d->stored_bytes = 0;
    return 0;
}

/* emit_text with spilling on: fills the block up to memory_bytes, spilling it whenever full. */
static void emit_spilling(struct smtp_data *d, const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (d->stored_bytes >= d->memory_bytes && spill_out(d) != 0)
            return;
        size_t k = d->memory_bytes - d->stored_bytes;
        if (k > n)
            k = n;
        if (grow(d, k) != 0) {
            d->no_memory = true;
            drop_content(d);
            return;
        }
        memcpy(d->block + d->head_bytes + d->stored_bytes, p, k);
        d->stored_bytes += k;
        p += k;
        n -= k;
    }
}

/* Appends content octets (no CR or LF among them), or only counts them once nothing is kept. */
static void emit_text(struct smtp_data *d, const unsigned char *p, size_t n)
{
    d->content_bytes += n;
    d->line_bytes += n;
    if (d->too_big || d->no_memory || d->spill_error != 0)
        return;
    if (d->content_bytes > d->max_bytes) {
        d->too_big = true;
        drop_content(d);
        return;
    }
    if (d->spill_fn != NULL) {
        emit_spilling(d, p, n);
        return;
    }
    if (grow(d, n) != 0) {
        d->no_memory = true;
        drop_content(d);
        return;
    }
    memcpy(d->block + d->head_bytes + d->stored_bytes, p, n);
    d->stored_bytes += n;
}

/* Ends the current content line with CRLF, whatever ended it in the input. */
static void emit_line_end(struct smtp_data *d)
{
    static const unsigned char crlf[2] = {'\r', '\n'};
    emit_text(d, crlf, sizeof(crlf));
    d->lines++;
    if (d->line_bytes > d->longest_line_bytes)
        d->longest_line_bytes = d->line_bytes;
    if (d->line_bytes > SMTP_TEXT_LINE_MAX_BYTES)
        d->long_lines++;
    d->line_bytes = 0;
}

static enum smtp_data_status final_status(const struct smtp_data *d)
{
    /* Too big wins over out of memory: 552 is permanent, and a retry would fail the same way. */
    if (d->too_big)
        return SMTP_DATA_DONE_TOO_BIG;
    if (d->spill_error != 0)
        return SMTP_DATA_DONE_SPILL_FAILED;
    if (d->no_memory)
        return SMTP_DATA_DONE_NO_MEMORY;
    return SMTP_DATA_DONE;
}

int smtp_data_init(struct smtp_data *d, size_t max_bytes, size_t prefix_reserve_bytes)
{
    memset(d, 0, sizeof(*d));
    d->state = SCAN_LINE_START;
    /* Keeps reserve + max and the doubling in grow() clear of overflow. */
    if (max_bytes > SIZE_MAX / 4 || prefix_reserve_bytes > SIZE_MAX / 4)
        return -EINVAL;
    d->max_bytes = max_bytes;
    d->prefix_reserve_bytes = prefix_reserve_bytes;
    d->head_bytes = prefix_reserve_bytes;
    return 0;
}

int smtp_data_set_spill(struct smtp_data *d, size_t memory_bytes, smtp_data_spill_fn fn, void *ctx)
{
    if (memory_bytes == 0 || fn == NULL || d->content_bytes != 0 || d->state != SCAN_LINE_START)
        return -EINVAL;
    d->spill_fn = fn;
    d->spill_ctx = ctx;
    d->memory_bytes = memory_bytes;
    return 0;
}

int smtp_data_set_raw(struct smtp_data *d)
{
    if (d->content_bytes != 0 || d->state != SCAN_LINE_START)
        return -EINVAL;
    d->raw = true;
    return 0;
}

enum smtp_data_status smtp_data_finish(struct smtp_data *d)
{
    if (!d->raw)
        return SMTP_DATA_DONE_NO_MEMORY;
    if (d->state == SCAN_DONE)
        return d->result;
    /* A CR was written as CRLF when it came, so only a line with octets after its last line end
     * lacks one. */
    if (d->state == SCAN_MID && d->line_bytes > 0)
        emit_line_end(d);
    if (d->state == SCAN_CR)
        d->bare_cr_count++; /* the last octet: no LF can follow it any more */
    d->state = SCAN_DONE;
    d->result = final_status(d);
    return d->result;
}

enum smtp_data_status smtp_data_status_so_far(const struct smtp_data *d)
{
    return final_status(d);
}

uint64_t smtp_data_spilled_bytes(const struct smtp_data *d)
{
    return d->spilled_bytes;
}

int smtp_data_spill_error(const struct smtp_data *d)
{
    return d->spill_error;
}

void smtp_data_free(struct smtp_data *d)
{
    free(d->block);
    memset(d, 0, sizeof(*d));
}

void smtp_data_reset(struct smtp_data *d)
{
    size_t max_bytes = d->max_bytes;
    size_t reserve = d->prefix_reserve_bytes;
    smtp_data_spill_fn fn = d->spill_fn;
    void *ctx = d->spill_ctx;
    size_t memory_bytes = d->memory_bytes;
    bool raw = d->raw;
    smtp_data_free(d);
    /* The limits were accepted before, so this cannot fail. */
    (void)smtp_data_init(d, max_bytes, reserve);
    if (fn != NULL)
        (void)smtp_data_set_spill(d, memory_bytes, fn, ctx);
    d->raw = raw;
}

size_t smtp_data_feed(struct smtp_data *d, const unsigned char *p, size_t n,
                      enum smtp_data_status *status_out)
{
    size_t i = 0;
    if (d->state == SCAN_DONE) {
        *status_out = d->result;
        return 0;
    }
    /*
     * Each case either consumes p[i] or moves to SCAN_MID without consuming it; SCAN_MID always
     * consumes, so the loop ends.
     */
    while (i < n) {
        unsigned char c = p[i];
        switch (d->state) {
        case SCAN_LINE_START:
            if (c == '.' && !d->raw) {
                d->state = SCAN_DOT;
                i++;
            } else {
                d->state = SCAN_MID;
            }
            break;
        case SCAN_DOT:
            if (c == '\r') {
                d->state = SCAN_DOT_CR;
                i++;
            } else {
                /* A line starting with "." and more: the "." was stuffing (RFC 5321 4.5.2). */
                d->unstuffed_count++;
                d->state = SCAN_MID;
            }
            break;
        case SCAN_DOT_CR:
            if (c == '\n') {
                /* CRLF "." CRLF: the end. The first CRLF was already written as content. */
                i++;
                d->received_bytes += i;
                d->state = SCAN_DONE;
                d->result = final_status(d);
                *status_out = d->result;
                return i;
            }
            /* "." then a bare CR: the dot was stuffing, the CR is content (made CRLF). */
            d->unstuffed_count++;
            d->bare_cr_count++;
            emit_line_end(d);
            d->state = SCAN_MID;
            break;
        case SCAN_CR:
            if (c == '\n') {
                /* The CRLF was written when the CR came; this LF starts a real line. */
                d->state = SCAN_LINE_START;
                i++;
            } else {
                d->bare_cr_count++;
                d->state = SCAN_MID;
            }
            break;
        case SCAN_MID:
            if (c == '\r') {
                emit_line_end(d);
                d->state = SCAN_CR;
                i++;
            } else if (c == '\n') {
                /* Bare LF: a content line end, but not a line start for "." (smtp_data.h). */
                d->bare_lf_count++;
                emit_line_end(d);
                i++;
            } else {
                size_t j = i + 1;
                while (j < n && p[j] != '\r' && p[j] != '\n')
                    j++;
                emit_text(d, p + i, j - i);
                i = j;
            }
            break;
        default:
            /* SCAN_DONE is handled above; nothing else exists. */
            *status_out = d->result;
            return i;
        }
    }
    d->received_bytes += n;
    *status_out = SMTP_DATA_MORE;
    return n;
}

bool smtp_data_is_done(const struct smtp_data *d)
{
    return d->state == SCAN_DONE;
}

static bool has_message(const struct smtp_data *d)
{
    return d->state == SCAN_DONE && d->result == SMTP_DATA_DONE;
}

const unsigned char *smtp_data_body(const struct smtp_data *d, size_t *len_out)
{
    if (!has_message(d) || d->block == NULL) {
        *len_out = 0;
        return NULL;
    }
    *len_out = d->stored_bytes;
    return d->block + d->head_bytes;
}

int smtp_data_set_prefix(struct smtp_data *d, const void *hdr, size_t len)
{
    if (!has_message(d) || d->spilled_bytes > 0)
        return -EINVAL;
    if (len <= d->head_bytes) {
        if (d->block == NULL && len > 0) {
            /* An empty message has no block yet. */
            d->block = malloc(d->head_bytes);
            if (d->block == NULL)
                return -ENOMEM;
            d->block_cap = d->head_bytes;
        }
        if (len > 0)
            memcpy(d->block + d->head_bytes - len, hdr, len);
        d->prefix_bytes = len;
        return 0;
    }
    /* Longer than the reserve: a new block whose reserve fits, and one copy of the content. */
    if (len > SIZE_MAX / 2 - d->stored_bytes)
        return -ENOMEM;
    size_t cap = len + d->stored_bytes;
    unsigned char *p = malloc(cap);
    if (p == NULL)
        return -ENOMEM;
    memcpy(p, hdr, len);
    if (d->stored_bytes > 0)
        memcpy(p + len, d->block + d->head_bytes, d->stored_bytes);
    free(d->block);
    d->block = p;
    d->block_cap = cap;
    d->head_bytes = len;
    d->prefix_bytes = len;
    return 0;
}

const unsigned char *smtp_data_message(const struct smtp_data *d, size_t *len_out)
{
    if (!has_message(d) || d->block == NULL) {
        *len_out = 0;
        return NULL;
    }
    *len_out = d->prefix_bytes + d->stored_bytes;
    return d->block + d->head_bytes - d->prefix_bytes;
}

int smtp_data_take(struct smtp_data *d, unsigned char **block_out, size_t *offset_out,
                   size_t *len_out)
{
    if (!has_message(d))
        return -EINVAL;
    *block_out = d->block;
    *offset_out = d->block != NULL ? d->head_bytes - d->prefix_bytes : 0;
    *len_out = d->block != NULL ? d->prefix_bytes + d->stored_bytes : 0;
    d->block = NULL;
    d->block_cap = 0;
    smtp_data_reset(d);
    return 0;
}

const char *smtp_data_status_name(enum smtp_data_status st)
{
    switch (st) {
    case SMTP_DATA_MORE:
        return "more";
    case SMTP_DATA_DONE:
        return "done";
    case SMTP_DATA_DONE_TOO_BIG:
        return "too-big";
    case SMTP_DATA_DONE_NO_MEMORY:
        return "no-memory";
    case SMTP_DATA_DONE_SPILL_FAILED:
        return "spill-failed";
    }
    return "unknown";
}
