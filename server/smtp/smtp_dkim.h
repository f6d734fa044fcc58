/*
 * smtp_dkim.h - DKIM signing and the submission fix-ups of a relayed message, for the
 * transaction (server/smtp/smtp_tx.c), which owns the struct and calls in at three points:
 *
 *   smtp_dkim_start  at DATA, when the message has remote recipients (only an authorised client,
 *                    AUTH, window or trusted network, can have given any);
 *   smtp_dkim_feed   with the content in order as it arrives (what the scanner spills, then the
 *                    in-memory tail at the end): the header section is kept (up to
 *                    SMTP_DKIM_HEADER_MAX_BYTES), the body only hashed, so a large body is never
 *                    held for signing;
 *   smtp_dkim_end    at end of data, on the loop: the body hash and the From domain;
 *   smtp_dkim_sign   in the delivery's writer job, off the loop (an RSA signature costs about a
 *                    millisecond): Message-ID and Date when missing (RFC 6409 8.2, 8.3), then one
 *                    DKIM-Signature per key of the From domain (common/pure/dkim.h), read with
 *                    the writer's store. What it adds goes in front of the stored message after
 *                    the trace headers, so what is stored is what goes out, on every retry.
 *
 * Local deliveries are not signed: a message without remote recipients never starts. It does not
 * log; smtp_tx.c logs the outcome (smtp_dkim_outcome) on the event=message line.
 */
#ifndef POSTERN_SMTP_DKIM_H
#define POSTERN_SMTP_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/dkim.h"

struct store;

/* Header sections are a few KiB; RFC 5322 sets no bound, so one over this is relayed unsigned
 * (reason=header-too-big) rather than held in memory beside the 128 KiB of the transaction. */
#define SMTP_DKIM_HEADER_MAX_BYTES (64 * 1024)
/* "signed d=<domain> s=<selector>,<selector>" or "none reason=<token>". */
#define SMTP_DKIM_OUTCOME_MAX_BYTES 480

struct smtp_dkim {
    bool on;         /* started: the message is relayed */
    bool in_body;    /* the blank line after the header section has been seen */
    bool line_start; /* header mode: the next octet starts a line */
    bool blank_cr;   /* header mode: a CR at a line start, not yet kept */
    bool too_big;    /* the header section passed SMTP_DKIM_HEADER_MAX_BYTES */
    char *hdr;       /* owned: the header section, each field with its CRLF */
    size_t hdr_len, hdr_cap;
    struct dkim_body body;
    uint8_t body_hash[DKIM_HASH_BYTES];
    int from_rc; /* dkim_from_domain's result at the end */
    char from_domain[256];
    /* Set by smtp_dkim_sign (writer thread), read on the loop after the job's done. */
    bool signed_once; /* a retried job reuses what the first run made */
    char *added;      /* owned: the fields to store after the trace headers */
    size_t added_len;
    char outcome[SMTP_DKIM_OUTCOME_MAX_BYTES];
};

void smtp_dkim_start(struct smtp_dkim *d);
void smtp_dkim_feed(struct smtp_dkim *d, const unsigned char *p, size_t n);
void smtp_dkim_end(struct smtp_dkim *d);
/*
 * On the writer thread: fix-ups and signatures into d->added, the outcome into d->outcome. st is
 * the writer's store; hostname is server.hostname (for the Message-ID); id is the queue id. A
 * failure to sign leaves the message unsigned with the reason, never undelivered; 0, or
 * DKIM_ERR_NO_MEMORY when not even that could be recorded.
 */
int smtp_dkim_sign(struct smtp_dkim *d, struct store *st, const char *hostname, const char *id,
                   int64_t now_ms);
/* Frees what d owns and zeroes it. */
void smtp_dkim_clear(struct smtp_dkim *d);

#endif
