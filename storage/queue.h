/*
 * queue.h - the outbound queue as the queue runner sees it: claiming due entries, recording the
 * result of an attempt (delivered, deferred, failed with a bounce), crash-safe claims, flushing,
 * and reading the body of a queued message. The admin views (store_queue_list, store_queue_drop)
 * are declared in store.h with the other admin functions.
 *
 * One queue row is one remote recipient of one stored message (storage/mailbox.h, store_deliver).
 * A row is deleted only when its recipient's server accepted the message (250 to the end of
 * data) or when it is bounced; the message body goes with its last row (schema triggers).
 *
 * Who calls what:
 *   - Everything that changes rows (claim, delivered, defer, fail, release, release_stale, flush)
 *     runs on the writer thread in a writer job (storage/writer.h), or in an admin command. Each
 *     takes its own nested savepoint, so a call that fails leaves nothing of itself behind and the
 *     caller's transaction goes on. A writer job's run may be called twice (a retried COMMIT);
 *     these functions keep no state outside the database and reset their outputs, so that is safe.
 *   - store_queue_next_due and the body reader run on the loop thread (its read connection; the
 *     reader borrows a pooled read-only one, storage/sqlite/body_reader.c).
 *
 * Claims and crash safety. A claim is a lease: claim_due sets claimed_ms = now and claimed_by =
 * the claiming node ([server] node) on the rows it hands out, and no other claim, of this node or
 * another, returns them until claimed_ms + lease_ms has passed or the claiming node is no longer
 * alive (below, "Several nodes"). The runner ends every claim with exactly one of delivered,
 * defer, fail or release. At startup, before the first claim, serve
 * calls store_queue_release_stale for its own node: a claim of that node left in the database
 * then belongs to an attempt that died with the node's previous process (a name is held by one
 * live process at a time, storage/nodes.c), and its entry becomes due at once. So:
 *   - never lost: a row is deleted only after the remote's 250 (delivered) or together with the
 *     bounce that reports it (fail), in one transaction; an attempt that never finished leaves its
 *     row claimed, and the row is tried again after a restart (or once the lease runs out);
 *   - at most twice: the only moment at which a crash makes us send a message the remote already
 *     has is after the remote's 250 to the end of data and before the COMMIT of
 *     store_queue_delivered (a few milliseconds plus one fsync). Before the 250 the remote has not
 *     taken responsibility (RFC 5321 4.1.1.4, 6.1), so a retry is the first delivery; after the
 *     commit the row is gone. Each crash inside that window adds one copy (RFC 1047 describes the
 *     same window on the remote side: a 250 lost on the way back). The runner must therefore
 *     record a 250 promptly and never batch it behind the next attempt. It also never throws
 *     away a reply that may be a 250: once the end of data is sent, neither a graceful stop nor
 *     the attempt deadline cancels the attempt (the reply is awaited, bounded, and recorded;
 *     server/outbound/smtp_client.h), and an end of data that gets no reply is deferred, not
 *     sent to another host in the same attempt; only a reply to the end of data delivers.
 *   - the lease must be longer than any attempt: the runner gives up an attempt (a hard deadline
 *     over the whole SMTP transaction) well before STORE_QUEUE_LEASE_MS, or a second claim could
 *     start a concurrent second attempt while the first still runs.
 *
 * Several nodes. Several serve processes (nodes) may share a database. Each releases only its
 * own claims at its start. A node is alive while its row in the nodes table has a lease that
 * has not run out (storage/nodes.c; renewed every third of NODE_LEASE_MS, server/node.h), and
 * its claims are taken by no other node before their own lease (STORE_QUEUE_LEASE_MS), which
 * stays the bound for a live node's long attempt. A claim whose node is not alive (its lease
 * ran out, or it has no row: it left, or was removed) is free to the next claim at once, so the
 * entries of a node that died mid-delivery go to another node within the node's lease (90 s),
 * not the claim's hour. The claim that takes over counts the attempt that never ended and says
 * so in last_error, as release_stale does for a node's own claims at its start. A claim without
 * a node (made before schema 12) keeps the time rule alone.
 *   A node that only stalled past its lease (stopped, swapped out, cut off from the database
 * for longer than the lease; a database outage longer than the lease makes every node look
 * dead to the first claim after it) is live again at its next renewal, but an entry another
 * node took over meanwhile is that node's now, and the stalled node's attempt may still be
 * running. Then the message may go twice, never zero times (at least once, as above), and the
 * late result must not spoil the claim of the node that has the entry now: release, defer and
 * fail act only on entries that no other node has claimed since (claimed_by is still the
 * node's, or NULL), each in the statement that tests it (on PostgreSQL a takeover committing
 * at the same moment is either seen or waits), and find another node's entry "gone"
 * (STORE_NOT_FOUND, or left out), so that node's attempt decides. delivered alone deletes
 * whoever holds the entry: a 250 to the end of data is final whoever got it (RFC 5321 6.1),
 * and keeping the row could only send another copy; the other node's result then finds the
 * entry gone, which every result call already takes as "dropped meanwhile". Left open: if the
 * stalled node itself claims the entry again (due again after the other node's attempt) while
 * its old attempt still runs, the old attempt's result applies to the new claim, which has the
 * same name; at worst one more copy or one deferral too many, never a loss.
 *
 * Retries and bouncing. A transient failure (4xx, a lost connection, a DNS timeout) is recorded
 * by store_queue_defer, which counts the attempt and sets the next one by the backoff schedule
 * (store_queue_backoff_ms, the one place it is defined). When the entry is older than relay.max_age
 * defer says so and keeps the claim: the runner then bounces it with store_queue_fail (Status
 * 5.4.7). A permanent failure (5xx, a null MX) goes straight to store_queue_fail (in
 * storage/queue_notice.c). store_queue_fail builds the RFC 3464 bounce (common/pure/dsn.h) from
 * the original (its headers, or all of it for RET=FULL), stores it with the null sender for the
 * original sender (their mailbox here when the sender is a local user, else a new queue row) and
 * deletes the failed entries, all in one savepoint. It is also the one place that enforces "a
 * bounce is never bounced": an entry whose sender is the null sender is removed without a bounce
 * (RFC 5321 6.1, RFC 3464 2.4.3); every other notice goes through store_notice, which refuses
 * the null sender the same way.
 *
 * Flush. `postern queue flush` (another process) makes every unclaimed entry due now, then
 * announces it (store_announce, STORE_CHANNEL_QUEUE). On PostgreSQL every serving node listens
 * on that channel (store_listener_start, from server/outbound/queue_runner.c) and its runner
 * claims at once, whichever node the flush was run on. The rescan stays the bound where nothing
 * is heard: each node's runner looks at the database at least every STORE_QUEUE_RESCAN_MS, which
 * is how the nodes on one SQLite file (no notifications) and a node whose listener is
 * reconnecting see the flush.
 *
 * Times are milliseconds since the Unix epoch.
 */
#ifndef POSTERN_QUEUE_H
#define POSTERN_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/dsn.h"
#include "common/pure/smtp_parse.h"
#include "storage/store.h"

/* How long a claim holds. Far longer than any attempt may last (the runner's hard deadline per
 * SMTP transaction must stay well below it); only an attempt lost without a crash (a bug) waits
 * this long to be retried. A crash is covered sooner: by store_queue_release_stale at the
 * node's restart, or by another node once the dead node's lease ran out ("Several nodes"). */
#define STORE_QUEUE_LEASE_MS (60 * 60 * 1000)
/* The runner looks for due entries at least this often, so that `postern queue flush` and rows
 * added by other processes take effect within it. */
#define STORE_QUEUE_RESCAN_MS 5000
/* last_error is cut to this many octets: a few lines of a remote reply (RFC 5321 4.5.3.1.5). */
#define STORE_QUEUE_ERROR_MAX_BYTES 1000

/* ---- the retry schedule (pure) ---- */

/*
 * The wait after the attempts-th failed attempt: 1m, 5m, 15m, 30m, 1h, 2h, 4h, then 4h each
 * time. No jitter: the schedule is per entry and entries arrive spread out already; a flush
 * that makes thousands due at once is spread by the runner's concurrency limits instead.
 */
int64_t store_queue_backoff_ms(int64_t attempts);
/* Whether an entry created at created_ms has been queued for max_age_ms or more at now_ms. */
bool store_queue_is_expired(int64_t created_ms, int64_t now_ms, int64_t max_age_ms);

/* ---- claiming (writer thread) ---- */

struct store_queue_claim {
    int64_t id;
    int64_t message_id;
    int64_t created_ms; /* when the message was received: the max_age clock */
    int64_t attempts;   /* failed attempts so far, a claim taken over counted */
    const char *sender; /* "" for the null sender; these three point into text */
    const char *recipient;
    const char *domain;     /* the recipient's domain, as stored */
    unsigned notify;        /* DSN NOTIFY bits (SMTP_NOTIFY_*), 0 when not given */
    const char *orcpt;      /* DSN ORCPT as received, "" when not given; in text too */
    bool taken_over;        /* the entry was still claimed: a claim that never ended, taken over */
    const char *taken_from; /* then the node that had it ("" for none, or not taken); in text */
    char *text;             /* owned: the five strings above, NUL-separated */
};

struct store_queue_claims {
    struct store_queue_claim *v; /* owned; n entries */
    size_t n;
};

/* Frees what a claims struct holds and empties it (it can be filled again). */
void store_queue_claims_free(struct store_queue_claims *c);

/*
 * Claims up to limit due entries (next_attempt_ms <= now_ms; not claimed, claimed at or before
 * now_ms - lease_ms, or claimed by a node whose nodes row is missing or has expires_ms <= now_ms)
 * for node (not NULL) whose domain is not one of skip_domains (the domains already at the runner's
 * per-domain limit; NULL when n_skip is 0), sets their claimed_ms to now_ms and returns them in
 * *out (emptied first), ordered by domain, then message, then id: the entries the runner sends
 * in one SMTP transaction (one message, one domain) come together, and one domain's messages
 * come together. An entry that was still claimed (taken over: its lease, or its node's, ran out)
 * has its attempt counted (attempts + 1, in the row and in the claim; last_error names both
 * nodes) and taken_over set.
 *
 * Which entries: the groups (message, domain) of the earliest due entries, each with all of its
 * due entries, up to limit in all (a group larger than limit is cut; the rest comes with the next
 * claim). Returns STORE_OK (also with nothing due: out->n == 0) or STORE_ERR.
 */
int store_queue_claim_due(struct store *s, const char *node, int64_t now_ms, int64_t lease_ms,
                          size_t limit, const char *const *skip_domains, size_t n_skip,
                          struct store_queue_claims *out);

/*
 * Gives node's claims back without counting an attempt (the runner is stopping, or could not
 * start the attempt): the entries are due again at once. Unknown ids, and entries another node
 * has claimed since ("Several nodes"), are ignored.
 */
int store_queue_release(struct store *s, const char *node, const int64_t *ids, size_t n);

/*
 * At node's start: every claim node made at or before now_ms is an attempt that never finished
 * (the process that had the name before is gone: store_node_claim). Counts the attempt
 * (attempts + 1, last_error says it was interrupted), makes the entry due at now_ms and unclaims
 * it. Claims without a node (made before schema 12, when one process had the database) count as
 * this node's. Other nodes' claims are left to their lease. *released_out (may be NULL) is how
 * many.
 */
int store_queue_release_stale(struct store *s, const char *node, int64_t now_ms,
                              size_t *released_out);

/* ---- results (writer thread) ---- */

/*
 * The remote accepted these entries (250 to the end of data, each of them accepted at RCPT):
 * deletes them; the body goes with the last reference. Ids already gone are ignored;
 * *deleted_out (may be NULL) is how many rows went. Takes no node: the entries go even when
 * another node has taken the claim over meanwhile (see "Several nodes" for why).
 */
int store_queue_delivered(struct store *s, const int64_t *ids, size_t n, size_t *deleted_out);

/*
 * A transient failure of node's claim of entry id at now_ms: attempts + 1, last_error = error (cut
 * to STORE_QUEUE_ERROR_MAX_BYTES; say what failed and the remote reply with its code, e.g.
 * "mx.example.net: 451 4.3.0 try later"), next attempt now_ms + store_queue_backoff_ms(attempts).
 * Sets *expired_out to whether the entry is now max_age_ms old or older
 * (store_queue_is_expired): then the claim is kept, and the caller bounces it with
 * store_queue_fail (expired = true) in the same or the next job; otherwise the claim ends.
 * STORE_NOT_FOUND, with nothing changed, when the entry is gone (dropped by an admin meanwhile)
 * or another node has claimed it since ("Several nodes").
 */
int store_queue_defer(struct store *s, const char *node, int64_t id, int64_t now_ms,
                      int64_t max_age_ms, const char *error, bool *expired_out);

enum store_bounce_route {
    STORE_BOUNCE_NONE = 0,    /* nothing was done (no entry of ids was left) */
    STORE_BOUNCE_LOCAL,       /* stored in the sender's mailbox here (with Return-Path: <>) */
    STORE_BOUNCE_QUEUED,      /* queued for the sender's server, with the null sender */
    STORE_BOUNCE_NULL_SENDER, /* the original had the null sender: never bounced */
    STORE_BOUNCE_NO_MAILBOX,  /* the sender's domain is local but no such user: nowhere to go */
    STORE_BOUNCE_BAD_SENDER,  /* the sender is not local@domain: nowhere to go */
    STORE_BOUNCE_NOT_ASKED,   /* NOTIFY (RFC 3461) asked for no failure notice */
};

/*
 * Delivery status notifications (RFC 3461, common/pure/dsn.h). Who gets which:
 *   - failed (store_queue_fail): as always, unless the entry's NOTIFY was given without FAILURE
 *     (NEVER included): then it is removed without one. RET=FULL returns the whole message
 *     (up to DSN_RETURN_FULL_MAX_BYTES), RET=HDRS or none its headers.
 *   - delayed (store_queue_delay_notice): once per entry, when an attempt is deferred and the
 *     entry is relay.delay_notice old, if its NOTIFY has DELAY or was not given (no NOTIFY
 *     counts as FAILURE,DELAY, as RFC 3461 asks).
 *   - relayed (store_notice from the runner): the next hop took it without offering DSN and
 *     NOTIFY had SUCCESS. With DSN offered the parameters went on, and that hop reports.
 *   - delivered (store_notice from store_deliver): a local recipient with NOTIFY=SUCCESS.
 * Never for a message with the null sender; a notice itself has the null sender. ENVID and
 * ORCPT are echoed (Original-Envelope-Id, Original-Recipient).
 */
struct store_notice {
    const char *hostname; /* the reporting MTA */
    int64_t now_ms;
    int64_t message_id; /* the original: sender, arrival, ENVID, RET and body come from it */
    enum dsn_action action;
    const struct dsn_recipient *rcpts; /* n, at least 1 */
    size_t n;
    /* Set by store_notice. */
    enum store_bounce_route route_out;
    int64_t notice_message_id_out; /* 0 when none was stored */
};

/*
 * Builds the notice and stores it (in the sender's mailbox here, or queued with the null sender
 * for the sender's server; enum store_bounce_route), in its own savepoint. A null sender, an
 * unusable sender or a local domain without that user is STORE_OK with nothing stored
 * (route_out says which). STORE_NOT_FOUND when the message is gone, STORE_ERR on failure.
 */
int store_notice(struct store *s, struct store_notice *n);

/*
 * After store_queue_defer of entry id (not expired): when the entry is delay_ms old or older at
 * now_ms (delay_ms 0: never), has not had its delay notice, and asked for one (see above), stores
 * a delayed notice with why (address and ORCPT are taken from the entry) and marks the entry.
 * *sent_out says whether a notice was stored. STORE_NOT_FOUND when the entry is gone.
 */
int store_queue_delay_notice(struct store *s, int64_t id, int64_t now_ms, int64_t delay_ms,
                             const char *hostname, const struct dsn_recipient *why, bool *sent_out);

struct store_queue_failure {
    const char *hostname; /* the reporting MTA: From: MAILER-DAEMON@hostname */
    const char *node;     /* the node whose claim failed ([server] node) */
    int64_t now_ms;
    /* The entries that failed for good, all of one message; rcpts[i] describes ids[i] (address,
     * remote host and reply, expired; see common/pure/dsn.h). */
    const int64_t *ids;
    const struct dsn_recipient *rcpts;
    size_t n;
    /* Set by store_queue_fail, also on a repeated run; read them in the writer job's done. */
    enum store_bounce_route route_out;
    int64_t bounce_message_id_out; /* the stored bounce, 0 when none was stored */
    size_t removed_out;            /* entries deleted */
};

/*
 * Permanent failure (or expiry) of f->ids: in one savepoint, builds and stores the bounce for the
 * entries still present (see enum store_bounce_route for where it goes; the original's headers
 * come from the stored body) and deletes them. Entries already gone, or claimed by another node
 * than f->node since ("Several nodes"), are left out of the bounce; STORE_NOT_FOUND when none is
 * left. STORE_ERR (nothing changed) when the ids belong to more
 * than one message, or on a SQLite or memory failure.
 */
int store_queue_fail(struct store *s, struct store_queue_failure *f);

/* ---- flush (admin command or writer thread) ---- */

/*
 * Makes every unclaimed entry due at now_ms (entries being tried right now keep their claim:
 * their attempt decides). *due_out (may be NULL) is how many entries are due at now_ms after it.
 */
int store_queue_flush(struct store *s, int64_t now_ms, size_t *due_out);

/* ---- for the runner's timer (loop thread) ---- */

/*
 * The next_attempt_ms of the earliest unclaimed entry (possibly in the past: due now), or
 * INT64_MAX when there is none. Expired leases and the claims of nodes that are no longer alive
 * are not looked at; the periodic rescan finds them.
 */
int store_queue_next_due(struct store *s, int64_t *due_ms_out);

/* ---- reading a queued message's body (loop thread) ---- */

/*
 * Streams the body of message message_id, as stored (CRLF line ends, not dot-stuffed: the SMTP
 * client stuffs it), in caller-sized chunks, with the same design as the mailbox reader
 * (storage/mailbox.h, "Reading a body"): a read-only connection borrowed from s's pool, a blob
 * handle kept for at most hold_ms between calls. The message must still be referred to by a queue
 * row; once none is left (every entry dropped or done) the next reopen fails with STORE_NOT_FOUND,
 * never with the bytes of another message (message ids are never reused). s is borrowed: it lends
 * the connection, receives the error text, and must outlive the reader.
 */
int store_queue_body_open(struct store *s, int64_t message_id, int64_t hold_ms,
                          struct store_body_reader **reader_out, int64_t *size_out);
/* Read and close it with store_body_read and store_body_close (store.h). */

/* What store_deliver recorded about a message when it was stored (schema version 5). */
struct store_message_facts {
    int64_t size_bytes;        /* the stored size, headers included */
    bool known;                /* false for a message stored before the facts were recorded */
    bool eightbit;             /* an octet above 127 somewhere (BODY=8BITMIME) */
    int64_t return_path_bytes; /* a leading Return-Path line's octets, CRLF included, or 0 */
    bool smtputf8;             /* UTF-8 headers sent under SMTPUTF8 (schema 9) */
    int dsn_ret;               /* RET (enum smtp_dsn_ret), SMTP_DSN_RET_NONE when not given */
    char dsn_envid[SMTP_DSN_ENVID_MAX_BYTES + 1]; /* ENVID as received, "" when not given */
};
/*
 * The facts of queued message message_id, one indexed lookup on s (the loop's read connection):
 * what the outbound client needs before MAIL without reading the body. STORE_NOT_FOUND when no
 * queue row refers to it any more.
 */
int store_queue_message_facts(struct store *s, int64_t message_id, struct store_message_facts *out);

#endif
