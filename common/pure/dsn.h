/*
 * dsn.h - builds a bounce: a complete RFC 5322 message that is an RFC 3464 delivery status
 * notification (multipart/report; report-type=delivery-status, RFC 6522) for one original
 * message and one or more of its recipients that failed for good.
 *
 * The message has three parts: a text/plain explanation for a person (which recipients failed,
 * why, the remote reply), a message/delivery-status part with the per-message and per-recipient
 * fields of RFC 3464 section 2, and a text/rfc822-headers part with the original message's header
 * section only (never its body: a bounce must not carry the content back out, and headers are all
 * a sender needs to recognise the message).
 *
 * What it guarantees: CRLF line ends everywhere; no line longer than 998 octets (RFC 5322 2.1.1;
 * fields are folded at 78 columns where they have spaces, and cut where they do not); the whole
 * message is 7-bit (text from remote servers is escaped, an original header section with 8-bit
 * octets, control characters or overlong lines is sent quoted-printable), so any next hop can
 * take it without 8BITMIME; a random boundary that occurs nowhere in the content.
 *
 * What it does not do: decide whether to bounce (a null-sender message is never bounced: that is
 * enforced by storage/queue.c, and dsn_build refuses an empty sender), send or store anything,
 * "delayed" warnings (Action: delayed), ENVID/ORCPT (RFC 3461) fields. It is pure apart from the
 * random Message-ID and boundary (libsodium's randombytes).
 */
#ifndef POSTERN_DSN_H
#define POSTERN_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/limits.h"

/* In their own range (common/error.h). */
enum dsn_status_code {
    DSN_OK = 0,
    /* a required field is missing (hostname, sender, recipients) */
    DSN_ERR_INVALID = POSTERN_ERR_DSN_BASE - 1,
    DSN_ERR_NO_MEMORY = POSTERN_ERR_DSN_BASE - 2,
    /* libsodium could not be initialised for the random ids */
    DSN_ERR_RANDOM = POSTERN_ERR_DSN_BASE - 3,
};

/* A short static name for a DSN_ERR_* code ("bounce: out of memory"). */
const char *dsn_strerror(int code);

/* At most this much of the original header section is returned (cut at a line end): enough for
 * any real header section, and it keeps a bounce small whatever the original was. */
#define DSN_ORIG_HEADERS_MAX_BYTES (64 * 1024)
/* A remote reply (or our own diagnostic) is cut to this many octets after escaping. RFC 5321
 * 4.5.3.1.5 allows 512 octets per reply line; a few lines of a multi-line reply fit. */
#define DSN_DIAGNOSTIC_MAX_BYTES 2000
/* "5.1.10" and its NUL fit in 8; RFC 3463 allows 1-3 digits per part: "5.123.456" is 10. */
#define DSN_STATUS_BYTES 12

struct dsn_recipient {
    const char *address; /* the final recipient, "local@domain"; required */
    /*
     * The host whose reply this is (for Remote-MTA), NULL or "" when no host replied (DNS
     * failure, every MX refused the connection).
     */
    const char *remote_mta;
    /*
     * The SMTP reply code of the remote's answer (550), or 0 when reply is our own text
     * ("connection refused", "domain has a null MX"). Non-zero makes Diagnostic-Code
     * "smtp; <reply>", zero makes it "X-Postern; <reply>".
     */
    int reply_code;
    /* The reply as received, lines separated by CRLF or LF, any octets (escaped here); or our own
     * diagnostic. NULL counts as "". */
    const char *reply;
    /* The enhanced status to report (RFC 3463 "c.s.d"), or NULL: then taken from the reply's own
     * enhanced code, else 5.0.0. See dsn_status(). */
    const char *status;
    int64_t last_attempt_ms; /* 0: not attempted; no Last-Attempt-Date then */
    bool expired;            /* given up after relay.max_age: Status 5.4.7 */
};

struct dsn_info {
    const char *hostname; /* the reporting MTA: From: MAILER-DAEMON@hostname, Message-ID */
    const char *sender;   /* the original envelope sender: To:; "" or NULL is refused */
    int64_t arrival_ms;   /* when the original message was received (Arrival-Date) */
    int64_t now_ms;       /* Date: */
    /* Prepend "Return-Path: <>": set when the bounce is delivered to a local mailbox (final
     * delivery adds it, RFC 5321 4.4), not when it is queued for another server. */
    bool return_path;
    const struct dsn_recipient *rcpts;
    size_t n_rcpts; /* at least 1 */
};

/*
 * The Status field for r into out: 5.4.7 when r->expired; otherwise r->status, or the enhanced
 * code at the start of the reply's first line (after "NNN " or "NNN-") when r->reply_code is not
 * 0, or 5.0.0 when neither is a well-formed RFC 3463 code. A failure is permanent, so a 2.x.x or
 * 4.x.x code is reported with class 5 ("4.2.2" becomes "5.2.2").
 */
void dsn_status(const struct dsn_recipient *r, char out[DSN_STATUS_BYTES]);

/*
 * The length of msg's header section: up to and including the line end of its last header line
 * (so the empty line that ends it is not counted); all of msg when it has no empty line; 0 when
 * msg starts with an empty line. At most DSN_ORIG_HEADERS_MAX_BYTES, cut after a line end.
 */
size_t dsn_header_length(const unsigned char *msg, size_t len);

/*
 * Builds the bounce for info about the original message orig (orig_len octets, the whole message
 * or at least its header section; only the header section is used) into a malloc'd buffer: *out
 * (the caller frees it) and *out_len. Returns DSN_OK or a negative enum dsn_status_code (then *out
 * is NULL).
 */
int dsn_build(const struct dsn_info *info, const unsigned char *orig, size_t orig_len,
              unsigned char **out, size_t *out_len);

#endif
