/*
 * dsn.h - builds a delivery status notification: a complete RFC 5322 message that is an RFC 3464
 * DSN (multipart/report; report-type=delivery-status, RFC 6522) for one original message and one
 * or more of its recipients, all with the same action: failed (a bounce), delayed (still being
 * retried), delivered (to a local mailbox) or relayed (to a next hop that sends no notices of its
 * own); RFC 3461 says when each is asked for, and storage/queue.c decides.
 *
 * The message has three parts: a text/plain explanation for a person (which recipients, what
 * happened, the remote reply), a message/delivery-status part with the per-message and
 * per-recipient fields of RFC 3464 section 2 (Original-Envelope-Id from ENVID and
 * Original-Recipient from ORCPT, RFC 3461 4.2 and 4.4, when the sender gave them), and the
 * original: its header section only as text/rfc822-headers, or, for a failure whose sender asked
 * RET=FULL (RFC 3461 4.3), the whole message as message/rfc822 when it is 7-bit with short lines
 * (a 7-bit report can carry nothing else; otherwise the headers go, as when RET=HDRS).
 *
 * What it guarantees: CRLF line ends everywhere; no line longer than 998 octets (RFC 5322 2.1.1;
 * fields are folded at 78 columns where they have spaces, and cut where they do not); the whole
 * message is 7-bit (text from remote servers is escaped, an original header section with 8-bit
 * octets, control characters or overlong lines is sent quoted-printable), so any next hop can
 * take it without 8BITMIME; a random boundary that occurs nowhere in the content.
 *
 * What it does not do: decide whether to send a notice (a null-sender message never gets one:
 * that is enforced by storage/queue.c, and dsn_build refuses an empty sender), send or store
 * anything. It is pure apart from the random Message-ID and boundary (libsodium's randombytes).
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
/* RET=FULL returns a message up to this size whole; a larger one has its headers returned. The
 * notice is built in memory on the writer thread, so this bounds what one notice costs there
 * (Postfix's bounce_size_limit is 50 kB for the same reason). */
#define DSN_RETURN_FULL_MAX_BYTES (1024 * 1024)

/* RFC 3464 2.3.3: what happened to the recipients of one notice. */
enum dsn_action {
    DSN_ACTION_FAILED = 0, /* a bounce: Status class 5 */
    DSN_ACTION_DELAYED,    /* still being retried: Status class 4 */
    DSN_ACTION_DELIVERED,  /* in the recipient's mailbox: Status 2.0.0 */
    DSN_ACTION_RELAYED,    /* passed to a next hop that does not offer DSN: Status 2.0.0 */
};

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
    /* The ORCPT parameter as the client sent it ("rfc822;a+2Bb@example.test"), or NULL: echoed
     * as Original-Recipient (xtext decoded when that gives printable ASCII). */
    const char *orcpt;
};

struct dsn_info {
    const char *hostname; /* the reporting MTA: From: MAILER-DAEMON@hostname, Message-ID */
    const char *sender;   /* the original envelope sender: To:; "" or NULL is refused */
    int64_t arrival_ms;   /* when the original message was received (Arrival-Date) */
    int64_t now_ms;       /* Date: */
    /* Prepend "Return-Path: <>": set when the bounce is delivered to a local mailbox (final
     * delivery adds it, RFC 5321 4.4), not when it is queued for another server. */
    bool return_path;
    enum dsn_action action; /* of every recipient of this notice */
    /* The ENVID parameter as the client sent it (xtext), or NULL: Original-Envelope-Id. */
    const char *envid;
    /* RET=FULL and orig is the whole message: a failure returns it whole when it can (head
     * comment). Otherwise only the header section of orig is used. */
    bool return_full;
    const struct dsn_recipient *rcpts;
    size_t n_rcpts; /* at least 1 */
};

/*
 * The Status field for a failed r into out: 5.4.7 when r->expired; otherwise r->status, or the
 * enhanced code at the start of the reply's first line (after "NNN " or "NNN-") when
 * r->reply_code is not 0, or 5.0.0 when neither is a well-formed RFC 3463 code. A failure is
 * permanent, so a 2.x.x or 4.x.x code is reported with class 5 ("4.2.2" becomes "5.2.2").
 */
void dsn_status(const struct dsn_recipient *r, char out[DSN_STATUS_BYTES]);
/* The same for any action: a delay gets class 4 ("4.0.0" without a code; expired does not
 * apply), delivered and relayed "2.0.0". */
void dsn_status_for(enum dsn_action action, const struct dsn_recipient *r,
                    char out[DSN_STATUS_BYTES]);

/*
 * The length of msg's header section: up to and including the line end of its last header line
 * (so the empty line that ends it is not counted); all of msg when it has no empty line; 0 when
 * msg starts with an empty line. At most DSN_ORIG_HEADERS_MAX_BYTES, cut after a line end.
 */
size_t dsn_header_length(const unsigned char *msg, size_t len);

/*
 * Builds the notice for info about the original message orig (orig_len octets, the whole message
 * or at least its header section; see return_full) into a malloc'd buffer: *out
 * (the caller frees it) and *out_len. Returns DSN_OK or a negative enum dsn_status_code (then *out
 * is NULL).
 */
int dsn_build(const struct dsn_info *info, const unsigned char *orig, size_t orig_len,
              unsigned char **out, size_t *out_len);

#endif
