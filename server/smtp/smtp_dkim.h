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
 *   smtp_dkim_prepare on the loop, right after: Message-ID and Date when missing (RFC 6409
 *                    8.2, 8.3), whether the message is signed (From a local domain with a key),
 *                    and references to the domain's parsed keys (server/smtp/dkim_cache.h);
 *   smtp_dkim_sign   never in the writer job, where every microsecond holds up every other
 *                    session's group commit. With an RSA key, in the libuv threadpool
 *                    (server/smtp/smtp_tx.c queues it): an RSA-2048 signature costs about a
 *                    quarter of a millisecond of CPU, which on the loop would stall every
 *                    session of the loop. With ed25519 keys only (smtp_dkim_is_cheap), on the
 *                    loop: the signature and the header hash take some 40 microseconds, less
 *                    than the threadpool's hand-over there and back costs the session in
 *                    latency (scripts/bench smtp dkim measured 0.84 of the unsigned rate
 *                    through the pool, 0.99 on the loop). It needs only what prepare left (the
 *                    header section, the body hash, the keys), so nothing else of the
 *                    transaction is touched meanwhile. One DKIM-Signature per key; what prepare
 *                    and sign add goes in front of the stored message after the trace headers,
 *                    so what is stored is what goes out, on every retry.
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

#include "server/smtp/dkim_cache.h"

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
    /* Set by smtp_dkim_prepare on the loop; smtp_dkim_sign (threadpool) then owns them until
     * its after-work callback runs on the loop. */
    bool prepared;
    int64_t time_s;                                           /* t= */
    struct dkim_cached_key *keys[DKIM_CACHE_KEYS_PER_DOMAIN]; /* references, released by sign */
    size_t n_keys;
    char *added; /* owned: the fields to store after the trace headers */
    size_t added_len;
    char outcome[SMTP_DKIM_OUTCOME_MAX_BYTES];
};

void smtp_dkim_start(struct smtp_dkim *d);
void smtp_dkim_feed(struct smtp_dkim *d, const unsigned char *p, size_t n);
void smtp_dkim_end(struct smtp_dkim *d);
/*
 * The fix-ups into d->added, and the keys to sign with: a reader job's work
 * (server/smtp/smtp_tx.c), so on the loop inline or on a reader thread, touching d and the
 * thread-safe cache only. reads is the running thread's store, cache the process's key cache (NULL:
 * nothing is signed), hostname server.hostname (for the Message-ID), id the queue id, now_ms the
 * wall clock (Date, t=). True when smtp_dkim_sign has work; otherwise d->outcome says why not. A
 * failure leaves the message unsigned with the reason, never undelivered.
 */
bool smtp_dkim_prepare(struct smtp_dkim *d, struct store *reads, struct dkim_cache *cache,
                       const char *hostname, const char *id, int64_t now_ms);
/* Whether signing is cheap enough for the loop: no key to sign with is RSA. */
bool smtp_dkim_is_cheap(const struct smtp_dkim *d);
/* Any thread, with d left alone meanwhile: the signatures in front of d->added, the outcome into
 * d->outcome, the key references released. */
void smtp_dkim_sign(struct smtp_dkim *d);
/* Frees what d owns and zeroes it. */
void smtp_dkim_clear(struct smtp_dkim *d);

#endif
