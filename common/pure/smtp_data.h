/*
 * smtp_data.h - the SMTP DATA scanner: raw octets after "354" in, end of data found, message
 * content out (dot-unstuffed, line ends made canonical), with a size limit and statistics.
 *
 * Pure and incremental: no sockets, no libuv, no logging. server/net/conn.c hands over the octets
 * the line reader had buffered behind "DATA" (linereader_take_buffered) and then every socket
 * chunk, in whatever pieces TCP produced; the result never depends on where the pieces were cut.
 * smtp_data_feed() returns how many octets it used, and stops exactly after the LF of the final
 * CRLF "." CRLF, so pipelined commands behind the dot (RFC 2920) go back to the line reader.
 * It does not reply, log, write to the database or add headers; the session does that with the
 * status and counters found here.
 *
 * The rules, in two layers, applied in this order:
 *
 * 1. Protocol layer (RFC 5321). A line is what RFC 5321 calls a line: octets up to and including
 *    CRLF. Bare LF and bare CR are not line ends here (RFC 5321 2.3.8 and 4.1.1.4: "<LF>.<LF>"
 *    "MUST NOT be treated as equivalent to <CRLF>.<CRLF>"). Data starts as if right after a CRLF.
 *      - End of data is only the line "." CRLF at such a line start: the octets CRLF "." CRLF, or
 *        "." CRLF as the very first line (an empty message). Nothing else ends the data: not
 *        "\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r\n.\r\r\n", nor "abc.\r\n" (the dot
 *        does not start a line). That is the whole SMTP smuggling defence on the receiving side
 *        (the 2023 attacks; CVE-2023-51764/51765/51766): a stored message can only end where
 *        every RFC-conforming server would also see the end.
 *      - Transparency (RFC 5321 4.5.2): a line that starts with "." loses that first ".".
 *        "..x" CRLF is stored as ".x" CRLF, ".." CRLF as "." CRLF. This also holds for a line
 *        such as "." LF "x" CRLF: it starts with "." and has more octets, so the "." goes.
 * 2. Content layer. The content so decoded is stored with canonical line ends: every bare LF and
 *    every bare CR becomes CRLF (a CR LF pair stays one CRLF; "\r\r\n" is a bare CR and a CRLF,
 *    so two line ends). So nothing stored holds a lone CR or LF that a downstream server could
 *    read as a line end, and POP3 and the outbound client (common/pure/dotstuff.h) always send
 *    canonical, dot-stuffed lines.
 *
 * Consequences, deliberate and tested:
 *   - A "." after a bare LF or bare CR is not at a line start, so it is neither an end nor a
 *     stuffing dot: "a\n.\nb\r\n" is stored as "a\r\n.\r\nb\r\n", with the content line ".".
 *     When POP3 or SMTP later sends it, it is stuffed to ".." and so harmless.
 *   - Unstuffing looks only at real line starts. (Treating a bare LF as a line start for
 *     unstuffing but not for the end would use two different ideas of "line" in one scanner, and
 *     would turn "x\n.\r\n" into an empty line, i.e. a header/body boundary that the client never
 *     sent.) The only change this scanner ever makes inside a line is the bare CR/LF replacement.
 *   - The stored content is either empty (the message ".\r\n") or ends with CRLF: the CRLF that
 *     starts the terminator ends the last line and belongs to the content.
 *
 * Size (RFC 5321 4.5.3.1.10, RFC 1870): max_bytes limits the content as stored (unstuffed,
 * canonical line ends; the prefix below not included). Once the content would pass it, the buffer
 * is freed at once and nothing more is kept, but scanning goes on to the end of data, which is
 * then reported as SMTP_DATA_DONE_TOO_BIG (answer 552 5.3.4 once). Long lines are counted, never
 * refused (RFC 5321 4.5.3.1.6 says 1000 octets, many real clients send more).
 *
 * Memory (spilling): by default the whole content is kept in one block, up to max_bytes. With
 * smtp_data_set_spill() the block holds at most memory_bytes of content: whenever the next octets
 * would not fit, the content kept so far is handed, in order, to the caller's spill function (which
 * writes it to a spool file, say) and the block starts over empty. So a transaction's memory is
 * bounded by memory_bytes whatever max_bytes is, and the message is "the spilled octets, then what
 * is left in the block" (smtp_data_spilled_bytes, smtp_data_body). The scanner itself still does
 * no I/O: the spill function does, and a failure it returns is latched, the rest of the data is
 * scanned and dropped, and the end is SMTP_DATA_DONE_SPILL_FAILED (smtp_data_spill_error says
 * why). The cut points between spilled pieces are wherever the block filled up: they never change
 * the result, because the scanner's state (a pending "." or CR) lives outside the block.
 *
 * Headers the session adds (Received, Return-Path) go in front of the content without copying it:
 * smtp_data_init() reserves prefix_reserve_bytes of headroom before the content, and
 * smtp_data_set_prefix() writes the headers there, so smtp_data_message() is one contiguous
 * block. A prefix longer than the reserve still works, at the price of one copy of the content.
 *
 * Raw content (BDAT, RFC 3030): after smtp_data_set_raw() the protocol layer is off. The octets
 * are the content as is, with no transparency dots to remove and no end-of-data marker: the
 * caller knows where the content ends (it counted the chunk sizes) and says so with
 * smtp_data_finish(). The content layer stays: bare CR and bare LF become CRLF exactly as for
 * DATA, so a message is stored the same way whichever verb carried it, and nothing stored holds a
 * lone CR or LF that a later hop could read as a line end (without BINARYMIME, which postern does
 * not offer, BDAT content is 7bit or 8bitmime text, whose lines end in CRLF: RFC 3030 3). The cut
 * points between chunks change nothing, as the cut points between reads do not for DATA. A last
 * line without its CRLF gets one at the finish, so the stored content keeps the form above
 * (empty, or ending in CRLF) that POP3 and the outbound client rely on.
 *
 * Ownership: struct smtp_data is embedded by its owner (the SMTP transaction) and owns one heap
 * block (headroom + content), released by smtp_data_free() or smtp_data_reset(), or handed over
 * with smtp_data_take(). Pointers it returns are borrowed and valid until the next call that
 * changes it. A session that drops the connection mid-data just calls smtp_data_free(): nothing
 * half-received is ever handed out.
 */
#ifndef POSTERN_SMTP_DATA_H
#define POSTERN_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"

/*
 * A headroom that fits what the session prepends: a Received header (RFC 5321 4.4: two domains
 * of at most 255 octets, an address literal, ids, a date, folded) and Return-Path (a path of at
 * most 256 octets, RFC 5321 4.5.3.1.3) stay well below this.
 */
#define SMTP_DATA_PREFIX_RESERVE_BYTES 2048

enum smtp_data_status {
    SMTP_DATA_MORE,           /* all octets used, the end of data not seen yet: feed more */
    SMTP_DATA_DONE,           /* end of data; smtp_data_body() holds the whole content */
    SMTP_DATA_DONE_TOO_BIG,   /* end of data; the content passed max_bytes, nothing was kept */
    SMTP_DATA_DONE_NO_MEMORY, /* end of data; an allocation failed, nothing was kept (452 4.3.1) */
    SMTP_DATA_DONE_SPILL_FAILED, /* end of data; the spill function failed, nothing more kept */
};

/*
 * Takes content octets p[0..n) that leave memory (smtp_data_set_spill), in order; called from
 * inside smtp_data_feed. Returns 0, or a negative errno code (latched, see above).
 */
typedef int (*smtp_data_spill_fn)(void *ctx, const unsigned char *p, size_t n);

/*
 * Fields are readable (the counters are meant for logs and tests); change them only through
 * smtp_data_*(). Counters describe the content as it would be stored even past max_bytes.
 */
struct smtp_data {
    /* limits, from init */
    size_t max_bytes;            /* content limit */
    size_t prefix_reserve_bytes; /* headroom kept in front of the content */

    /* output: the message is block[head_bytes - prefix_bytes .. head_bytes + stored_bytes) */
    unsigned char *block; /* owned; NULL until the first octet of content or a prefix */
    size_t block_cap;     /* allocated; at most head_bytes + max_bytes */
    size_t head_bytes;    /* where the content starts: the reserve, or a longer prefix's length */
    size_t stored_bytes;  /* content octets in block */
    size_t prefix_bytes;  /* prefix octets in front of the content */

    /* spilling (smtp_data_set_spill); spill_fn NULL: everything stays in the block */
    smtp_data_spill_fn spill_fn; /* borrowed, with spill_ctx */
    void *spill_ctx;
    size_t memory_bytes;    /* most content octets kept in the block at once */
    uint64_t spilled_bytes; /* content octets handed to spill_fn, in front of the block's */
    int spill_error;        /* latched: what spill_fn returned, 0 if it never failed */

    /* scanner state, private */
    int state;
    enum smtp_data_status result; /* meaningful once the end of data was seen */
    bool too_big;                 /* latched: the content passed max_bytes */
    bool no_memory;               /* latched: an allocation failed */
    bool raw;                     /* smtp_data_set_raw: no dots, no end marker (BDAT) */
    uint64_t line_bytes;          /* octets of the current stored line so far */

    /* statistics */
    uint64_t received_bytes;     /* octets used by feed(), terminator included */
    uint64_t content_bytes;      /* content octets, counted on after max_bytes is passed */
    uint64_t lines;              /* content lines (CRLFs in the content) */
    uint64_t bare_lf_count;      /* bare LFs replaced with CRLF */
    uint64_t bare_cr_count;      /* bare CRs replaced with CRLF */
    uint64_t unstuffed_count;    /* leading dots removed (RFC 5321 4.5.2) */
    uint64_t longest_line_bytes; /* longest content line, CRLF included, stuffing dot not */
    uint64_t long_lines;         /* content lines above SMTP_TEXT_LINE_MAX_BYTES */
};

/*
 * Ready to scan one message of at most max_bytes of content, keeping prefix_reserve_bytes of
 * headroom for smtp_data_set_prefix(). Allocates nothing yet (the content buffer grows as content
 * arrives). 0, or -EINVAL when the two together are absurdly large (above SIZE_MAX / 2).
 */
int smtp_data_init(struct smtp_data *d, size_t max_bytes, size_t prefix_reserve_bytes);
/*
 * After init, before the first octet: keep at most memory_bytes (> 0) of content in memory and
 * hand the rest to fn(ctx, ...) as it comes (head comment). 0, or -EINVAL (memory_bytes 0, fn
 * NULL, or content already fed). Reset keeps the setting; free drops it.
 */
int smtp_data_set_spill(struct smtp_data *d, size_t memory_bytes, smtp_data_spill_fn fn, void *ctx);
/*
 * After init, before the first octet: the content is raw (BDAT, head comment). 0, or -EINVAL
 * (content already fed). Reset keeps the setting; free drops it.
 */
int smtp_data_set_raw(struct smtp_data *d);
/*
 * Raw content only: the caller's end of the content. Ends an unterminated last line with CRLF
 * and returns the DONE* status, as smtp_data_feed does at the end of data (and repeats it once
 * done). SMTP_DATA_DONE_NO_MEMORY when the content is not raw (nothing changes then).
 */
enum smtp_data_status smtp_data_finish(struct smtp_data *d);
/*
 * What the end would report if it came now: SMTP_DATA_DONE while nothing has failed, else the
 * latched failure (too big, spill failed, no memory). Lets a BDAT chunk be refused as soon as the
 * content it brought passed the limit, before the last chunk.
 */
enum smtp_data_status smtp_data_status_so_far(const struct smtp_data *d);
/* Content octets handed to the spill function so far (they come before smtp_data_body's). */
uint64_t smtp_data_spilled_bytes(const struct smtp_data *d);
/* The spill function's failure (a negative errno code), or 0. */
int smtp_data_spill_error(const struct smtp_data *d);
/* Releases the block and zeroes *d (limits included); safe on a zeroed or already freed one. */
void smtp_data_free(struct smtp_data *d);
/* Releases the block and starts over for the next message with the same limits. */
void smtp_data_reset(struct smtp_data *d);
/*
 * Scans p[0..n). Returns the octets used and sets *status_out. MORE: all n were used. DONE*: the
 * end of data was found; the return value counts up to and including its final LF, and the rest
 * of p belongs to the command reader. Once done, further calls use nothing and repeat the status
 * until smtp_data_reset(). n may be 0.
 */
size_t smtp_data_feed(struct smtp_data *d, const unsigned char *p, size_t n,
                      enum smtp_data_status *status_out);
/* True once the end of data was seen (whatever the result). */
bool smtp_data_is_done(const struct smtp_data *d);
/*
 * After SMTP_DATA_DONE: the content kept in memory (borrowed), *len_out octets: the whole content
 * (empty or ending in CRLF, no bare CR or LF), or, when some was spilled, the rest after the
 * spilled octets (possibly empty). NULL with *len_out 0 in every other state, and possibly for an
 * empty message.
 */
const unsigned char *smtp_data_body(const struct smtp_data *d, size_t *len_out);
/*
 * After SMTP_DATA_DONE: puts hdr[0..len) in front of the content (replacing an earlier prefix).
 * hdr should be complete header lines ending in CRLF. Copies only hdr when len fits the reserve,
 * else moves the content once. 0, -EINVAL (not DONE, or content was spilled: the front of the
 * content is no longer here, so the caller writes its headers in front of the spilled octets
 * itself), -ENOMEM.
 */
int smtp_data_set_prefix(struct smtp_data *d, const void *hdr, size_t len);
/* After SMTP_DATA_DONE: prefix + content (borrowed), as smtp_data_body() otherwise. */
const unsigned char *smtp_data_message(const struct smtp_data *d, size_t *len_out);
/*
 * After SMTP_DATA_DONE: hands the block over to the caller, who must free() it (the writer job
 * can own it while the session goes on to the next transaction). The message (prefix + content)
 * is at (*block_out)[*offset_out .. *offset_out + *len_out). *block_out may be NULL for an empty
 * message. The scanner is reset. 0 or -EINVAL (not DONE; nothing changes).
 */
int smtp_data_take(struct smtp_data *d, unsigned char **block_out, size_t *offset_out,
                   size_t *len_out);
/* A short constant name for a status, for logs. */
const char *smtp_data_status_name(enum smtp_data_status st);

#endif
