/*
 * dotstuff.h - the sending side of SMTP/POP3 transparency: a stored message body in, the octets
 * to put on the wire out, dot-stuffed and ended with the "." line.
 *
 * Used by POP3 RETR and TOP (RFC 1939 3: "byte-stuffed" multi-line responses ending in CRLF "."
 * CRLF) and by the outbound SMTP client after "354" (RFC 5321 4.5.2: a line starting with "." is
 * sent with one more "."). The reverse is common/pure/smtp_data.h; scanning what this encoder
 * writes gives back the body exactly.
 *
 * Streaming and bounded: the body arrives in arbitrary chunks (e.g. from sqlite3_blob_read) and
 * the caller gives an output buffer of any size, so a 25 MiB body never needs a second 25 MiB
 * buffer. The encoder may stop in the middle of a chunk when the output is full and carry on at
 * the next call; a CR at the end of one chunk and its LF at the start of the next are handled.
 *
 * Line ends: stored bodies are canonical (CRLF only, smtp_data.h), but the encoder does not rely
 * on it: a bare LF or bare CR in the input is sent as CRLF, like the scanner would store it, so
 * nothing it writes can contain a lone CR or LF, or a CRLF "." CRLF before the real end, whatever
 * it is given (the sending half of the SMTP smuggling defence).
 *
 * TOP (RFC 1939 7): the header section, the blank line that ends it, and the first n lines of the
 * body; n = 0 gives headers and blank line only. A body line is a line of the stored body (after
 * the line-end rule above). A message without a blank line is all header: it is sent whole, and
 * no blank line is invented. Once the requested lines are out, dotstuff_has_enough() turns true
 * and further input is accepted and ignored, so the caller can stop reading the body.
 *
 * What it does not do: no I/O, no allocation, no logging. The whole state is the struct, which
 * the caller embeds; there is nothing to free.
 *
 * Use:
 *     dotstuff_init(&ds);                        // or dotstuff_init_top(&ds, n)
 *     for each body chunk (in, len):
 *         while (len > 0 && !dotstuff_has_enough(&ds)) {
 *             size_t used, k = dotstuff_encode(&ds, in, len, &used, out, sizeof(out));
 *             send(out, k); in += used; len -= used;
 *         }
 *     while (!dotstuff_is_done(&ds))
 *         send(out, dotstuff_finish(&ds, out, sizeof(out)));
 */
#ifndef POSTERN_DOTSTUFF_H
#define POSTERN_DOTSTUFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The most octets one body of in_len octets can become, terminator included: every input octet
 * gives at most two (".." at a line start, CRLF for a bare CR or LF), plus CRLF "." CRLF.
 */
#define DOTSTUFF_MAX_OUT_BYTES(in_len) (2 * (in_len) + 5)

/* Fields are readable (the counters are for logs and tests); change them only via dotstuff_*(). */
struct dotstuff {
    /* private state */
    unsigned char pending[8]; /* octets decided but not yet written (at most 5) */
    size_t pending_off;       /* next pending octet to write */
    size_t pending_len;       /* end of the pending octets */
    bool line_start;          /* the next input octet starts an output line */
    bool after_cr;            /* the last input octet was CR (already sent as CRLF) */
    bool top;                 /* TOP mode: stop after body_lines_left body lines */
    bool in_body;             /* TOP: the blank line after the headers has been sent */
    bool enough;              /* TOP: everything wanted is out; the rest of the input is ignored */
    bool finishing;           /* dotstuff_finish() was called */
    uint64_t body_lines_left; /* TOP: body lines still to send */

    /* statistics */
    uint64_t in_bytes;      /* input octets used (ignored TOP input included) */
    uint64_t out_bytes;     /* octets written, terminator included */
    uint64_t stuffed_count; /* dots added */
    uint64_t bare_count;    /* bare CRs and LFs sent as CRLF (0 for a stored body) */
    uint64_t lines;         /* lines sent, the terminator not included */
};

/* Whole body: RETR, or DATA in the outbound client. */
void dotstuff_init(struct dotstuff *ds);
/* POP3 TOP: headers, the blank line, and the first body_lines lines of the body. */
void dotstuff_init_top(struct dotstuff *ds, uint64_t body_lines);
/*
 * Encodes from in[0..in_len) into out[0..out_cap). Returns the octets written and sets
 * *in_used_out to the input octets used. On return either all input was used or out is full
 * (return value == out_cap), so a caller looping on it always progresses when out_cap > 0 (with
 * out_cap 0 it uses nothing). In TOP mode, once dotstuff_has_enough(), all input is used and
 * nothing is written. After dotstuff_finish() it uses and writes nothing.
 */
size_t dotstuff_encode(struct dotstuff *ds, const unsigned char *in, size_t in_len,
                       size_t *in_used_out, unsigned char *out, size_t out_cap);
/*
 * After the last input: writes the end, i.e. CRLF if the last line had no line end (and the
 * body was not empty) and then "." CRLF. Returns the octets written (at most out_cap); call again
 * while !dotstuff_is_done() (seven octets of room always suffice for one call).
 */
size_t dotstuff_finish(struct dotstuff *ds, unsigned char *out, size_t out_cap);
/* True once dotstuff_finish() has written the whole terminator. */
bool dotstuff_is_done(const struct dotstuff *ds);
/* TOP: the requested lines are out, the caller may stop reading the body. Never for RETR. */
bool dotstuff_has_enough(const struct dotstuff *ds);

#endif
