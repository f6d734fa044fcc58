/*
 * buf.h - byte buffers and the line reader: the pure, socket-free half of the connection layer.
 *
 * Three small types, none of which knows about sockets, libuv or TLS, so they can be unit-tested
 * and fuzzed on their own (server/net/conn.c wires them to the socket):
 *
 *   struct buf         a growable byte buffer with a hard cap: append at the end, consume from
 *                      the front, compact to reuse the space already consumed.
 *   struct outq        the output queue: replies are appended while at most one write is in
 *                      flight; the bytes handed to uv_write stay put until the write completes.
 *   struct linereader  line mode of the reader: bytes in, one complete line at a time out, with
 *                      a hard limit per line. Data mode (SMTP DATA) takes the
 *                      reader's buffered bytes with linereader_take_buffered() and then streams
 *                      socket bytes to the DATA scanner directly; the scanner is not here.
 *
 * Ownership: every struct is embedded by its owner (usually struct conn) and holds one owned heap
 * block, released by the matching *_free(), which leaves the struct zeroed so a second *_free() is
 * harmless. Pointers handed out (lines, buffered bytes, write data) are borrowed views into that
 * block; each call documents how long its view stays valid. Nothing here logs: the caller knows
 * the session and logs with its id.
 *
 * Errors: fallible calls return 0 or a negative errno value (-ENOMEM, -ENOBUFS, -EINVAL);
 * strerror(-rc) describes it.
 */
#ifndef POSTERN_BUF_H
#define POSTERN_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"

/* ---- Line limits, in octets, each counting the line's terminator. ---- */

/* The protocols' line limits (SMTP_LINE_MAX_BYTES and the rest) are in common/limits.h. */

/* The smallest usable limit: one octet of command plus CRLF. */
#define LINEREADER_MIN_LINE_BYTES 3
/*
 * Bytes the reader may hold beyond one maximal line. Not needed for correctness (a reader of
 * exactly max octets never deadlocks); it lets a few pipelined short commands behind a long one
 * arrive in the same feed call instead of one compaction each.
 */
#define LINEREADER_SLACK_BYTES 128

/* ---- struct buf ---- */

/*
 * Unread bytes are data[off..len). All fields are readable; change them only through buf_*().
 */
struct buf {
    unsigned char *data; /* owned; NULL until the first allocation */
    size_t off;          /* first unread byte */
    size_t len;          /* end of the stored bytes; off <= len <= cap */
    size_t cap;          /* bytes allocated at data */
    size_t limit_bytes;  /* cap never grows past this */
};

/* Empty buffer that may grow to limit_bytes; allocates nothing yet. */
void buf_init(struct buf *b, size_t limit_bytes);
/* Releases the data and zeroes *b (limit included); safe on a zeroed or already-freed buf. */
void buf_free(struct buf *b);
/* Allocates so that at least cap_bytes fit without further allocation: 0, -ENOBUFS past the
 * limit, -ENOMEM. */
int buf_reserve(struct buf *b, size_t cap_bytes);
/* Appends all n bytes or none: 0, -ENOBUFS when the unread bytes would pass the limit, -ENOMEM.
 * May compact or reallocate, so earlier pointers into the buffer become invalid. */
int buf_append(struct buf *b, const void *src, size_t n);
/* Drops the first n unread bytes (n must not exceed buf_unread()); the memory is reused later. */
void buf_consume(struct buf *b, size_t n);
/* Moves the unread bytes to the front of the allocation, so all free space is at the end. */
void buf_compact(struct buf *b);
/* Drops every unread byte, keeping the allocation. */
void buf_clear(struct buf *b);
/* Number of unread bytes. */
size_t buf_unread(const struct buf *b);
/* The unread bytes (borrowed, valid until the next call that changes b); NULL if none. */
unsigned char *buf_unread_data(const struct buf *b);
/* How many more bytes buf_append() could take before hitting the limit. */
size_t buf_room(const struct buf *b);

/* ---- struct outq: queued output with at most one write in flight ---- */

/*
 * Appends go to `pending`; outq_write_begin() swaps `pending` and `in_flight` so the bytes given
 * to uv_write never move while libuv holds them, and later appends do not disturb them. Both
 * allocations are kept and reused, so a steady connection allocates nothing per reply.
 */
struct outq {
    struct buf pending;   /* owned: queued, not yet handed to a write */
    struct buf in_flight; /* owned: handed to the writer, stable until outq_write_done() */
    bool writing;         /* a write is in flight */
    size_t limit_bytes;   /* pending + in flight never exceeds this */
};

/* Empty queue holding at most limit_bytes unsent; allocates nothing yet. */
void outq_init(struct outq *q, size_t limit_bytes);
/* Releases both buffers and zeroes *q. The caller must not free while a write is in flight. */
void outq_free(struct outq *q);
/* Queues all n bytes or none: 0, -ENOBUFS past the limit (the connection should be closed), or
 * -ENOMEM. Allowed while a write is in flight. */
int outq_append(struct outq *q, const void *src, size_t n);
/* Bytes queued or in flight: the backpressure measure (stop reading while this is large). */
size_t outq_unsent_bytes(const struct outq *q);
bool outq_is_writing(const struct outq *q);
/*
 * Starts a write if none is in flight and bytes are pending: returns their number and sets
 * *data_out to them (borrowed, unchanged until outq_write_done()). Returns 0 and sets *data_out to
 * NULL otherwise, in which case there is nothing to write now.
 */
size_t outq_write_begin(struct outq *q, const unsigned char **data_out);
/* The write started by outq_write_begin() finished (success or not): its bytes are dropped. */
void outq_write_done(struct outq *q);

/* ---- struct linereader: line mode ---- */

enum linereader_status {
    LINEREADER_LINE,      /* *line_out holds one line */
    LINEREADER_NEED_MORE, /* no complete line buffered: feed more */
    LINEREADER_TOO_LONG,  /* a line passed the limit; it is being skipped up to its LF */
    LINEREADER_BAD_LINE,  /* a line held a NUL octet; it is void (answer an error) */
};

struct linereader_line {
    /*
     * Borrowed, valid until the next call on the reader. For LINE: the line without its
     * terminator, followed by a NUL (it holds no other NUL, so it is also a C string). For
     * BAD_LINE and TOO_LONG: the start of the refused line, not NUL-terminated, for logging only
     * (pass it through log_escape()).
     */
    const char *data;
    size_t len;   /* octets at data, terminator excluded */
    bool bare_lf; /* LINE or BAD_LINE ended in LF without CR (accepted; the caller may log) */
};

/*
 * Invariants: feed() stops accepting once max_line_bytes + LINEREADER_SLACK_BYTES octets are
 * held, and the buffer never grows past largest_line_bytes + LINEREADER_SLACK_BYTES; a line is
 * returned only once its terminator has arrived; every accepted octet ends up in exactly one of:
 * a LINE or BAD_LINE with its terminator, skipped_bytes, linereader_take_buffered(),
 * linereader_discard(), or still buffered. Fields are readable (the statistics are meant to be);
 * change them only through linereader_*().
 */
struct linereader {
    struct buf in;             /* owned, allocated once at init, never grown */
    size_t max_line_bytes;     /* current limit, terminator included */
    size_t largest_line_bytes; /* the highest limit linereader_set_max() accepts */
    size_t scanned_bytes;      /* unread bytes already searched for LF without success */
    bool skipping;             /* inside an overlong line, dropping octets up to its LF */
    uint64_t skipped_bytes;    /* statistics: octets dropped as parts of overlong lines */
    uint64_t too_long_count;   /* statistics: TOO_LONG results */
};

/*
 * Allocates the one buffer the reader will ever use, sized for largest_line_bytes plus slack, and
 * starts with the limit max_line_bytes. 0, -EINVAL (max below LINEREADER_MIN_LINE_BYTES or above
 * largest), or -ENOMEM. An SMTP server session passes (SMTP_LINE_MAX_BYTES,
 * SMTP_AUTH_LINE_MAX_BYTES) so AUTH can raise the limit without allocating.
 */
int linereader_init(struct linereader *lr, size_t max_line_bytes, size_t largest_line_bytes);
/* Releases the buffer and zeroes *lr; safe twice. */
void linereader_free(struct linereader *lr);
/*
 * Changes the limit for the lines not yet returned (set it between lines, e.g. raise it before an
 * AUTH continuation line and lower it after). 0 or -EINVAL outside
 * [LINEREADER_MIN_LINE_BYTES, largest_line_bytes].
 */
int linereader_set_max(struct linereader *lr, size_t max_line_bytes);
/*
 * Offers n octets; returns how many it accepted (0..n). The caller keeps the rest and offers them
 * again after linereader_next() has returned lines, which is the back-pressure point. After
 * linereader_next() returns NEED_MORE the reader always accepts at least one octet. While
 * skipping an overlong line it accepts and drops everything up to and including the LF without
 * storing it, so an endless line costs no memory. Invalidates any line handed out before.
 */
size_t linereader_feed(struct linereader *lr, const void *src, size_t n);
/*
 * Returns the next event. A line ends at LF; the CR of a CRLF is removed. The limit counts the
 * octets of the line as received, terminator included. A line that cannot end within the limit
 * is reported TOO_LONG once, as soon as that is known, and everything up to and including its LF
 * is dropped, even across many feeds, so its tail is never taken as a command. line_out is set
 * for LINE, BAD_LINE and TOO_LONG.
 */
enum linereader_status linereader_next(struct linereader *lr, struct linereader_line *line_out);
/*
 * Switch to data mode: returns the number of octets buffered after the last returned line and
 * points *data_out at them (borrowed, valid until the next call on the reader; NULL when 0),
 * and forgets them, so nothing is lost or seen twice. Call it right after the line that starts
 * data mode (SMTP DATA or BDAT); pipelined bytes behind that line belong to the message. A skip
 * in progress is abandoned: from here on the caller interprets the bytes.
 */
size_t linereader_take_buffered(struct linereader *lr, const unsigned char **data_out);
/*
 * Drops everything buffered and any skip in progress; returns the octets dropped. STARTTLS uses
 * it: plaintext pipelined behind the command must never be read as if it came over TLS
 * (CVE-2011-0411, RFC 3207 4.2).
 */
size_t linereader_discard(struct linereader *lr);
/* Octets buffered but not yet returned (STARTTLS refuses or discards when this is not 0). */
size_t linereader_buffered(const struct linereader *lr);
/* True while the rest of an overlong line is being dropped. */
bool linereader_is_skipping(const struct linereader *lr);

#endif
