/*
 * queue_runner.h - outbound delivery: takes due entries from the queue and delivers them.
 *
 * What it does: claims due entries through the writer (storage/queue.h), groups them into
 * attempts of one message for one recipient domain, routes each attempt (relay.smarthost, else
 * the domain's MX hosts through server/net/dns.h, on relay.outbound_port), runs one SMTP
 * transaction per address tried (server/outbound/smtp_client.h) until the recipients are decided or
 * the addresses are used up, and records the result: delivered, deferred on the backoff schedule,
 * or bounced (a permanent failure, or a deferral past relay.max_age) with an RFC 3464 DSN built by
 * store_queue_fail. It logs one line per recipient and attempt:
 *     event=delivery id=QUEUE_ID msg=MESSAGE_ID to=RCPT relay=host[ip]:port status=sent|deferred|
 *     bounced dsn=x.y.z attempts=N reply="..."
 * and, for an entry whose claim it took over from a node that did not finish (queue.h, "Several
 * nodes"; the interrupted attempt is counted in N):
 *     event=claim-taken-over id=QUEUE_ID msg=MESSAGE_ID from=NODE|none attempts=N
 *
 * Crash safety (queue.h): the first job after start releases stale claims (an attempt that died
 * with the previous process is due at once), a 250 to the end of data is recorded by a job
 * submitted from the very callback that saw it, and an attempt has a hard deadline
 * (QUEUE_RUNNER_ATTEMPT_DEADLINE_MS) well below the claim's lease.
 *
 * Routing: MX hosts by preference (random among equals, dns.h), each host's addresses in turn
 * (IPv4 first), at most QUEUE_RUNNER_ADDRS_PER_ATTEMPT addresses per attempt. Refused or lost
 * connections, a greeting other than 220, a 421, and a failed STARTTLS handshake move on (after
 * a failed handshake the same address is tried once more without TLS, RFC 7435). All addresses
 * failing is a deferral with the last error. Null MX (RFC 7505) and a domain that does not exist
 * bounce (5.1.10, 5.1.2); a DNS failure or timeout defers (4.4.3).
 *
 * Smarthost AUTH: with app->smarthost_creds set, the smarthost route requires STARTTLS and AUTH
 * PLAIN (smtp_client.h); a failed handshake is then not retried in the clear, and refused
 * credentials defer (never bounce). MX routes never authenticate.
 *
 * Not done: skipping MX hosts that are this server (RFC 5321 5.1 loop detection; a loop ends at
 * the remote's hop count), DANE/MTA-STS, AUTH mechanisms other than PLAIN.
 *
 * Concurrency: at most QUEUE_RUNNER_MAX_ATTEMPTS attempts at once, QUEUE_RUNNER_MAX_PER_DOMAIN
 * per recipient domain (constants, not config keys, for now). Entries claimed beyond them are
 * released at once.
 *
 * When it claims: at start, when an attempt ends, at the time the next entry is due, at least
 * every STORE_QUEUE_RESCAN_MS (rows added by another process, a flush on SQLite), and at once
 * when a flush is announced on the queue channel by any node (`postern queue flush`): on a
 * backend that can listen (store_can_listen: PostgreSQL) the runner keeps a listener
 * (store_listener_start, its own thread and connection) whose wake-ups reach the loop through a
 * uv_async; several coalesce into one claim, and one arriving while a claim is out makes another
 * right after it. The listener also wakes it after each reconnection, for a flush announced
 * while it was not listening.
 *
 * Threading and ownership: loop thread only, but for the listener's thread, which only sends
 * the wake-up. The runner borrows app (cfg, reads, writer) and conns; both must outlive it. Stop
 * it before conn_set_shutdown and writer_stop; free it after writer_stop (which delivers the last
 * job callbacks): the free stops the listener (joins its thread, closes its connection).
 */
#ifndef POSTERN_QUEUE_RUNNER_H
#define POSTERN_QUEUE_RUNNER_H

#include <stddef.h>

#include <uv.h>

struct app;
struct conn_set;
struct queue_runner;

#define QUEUE_RUNNER_MAX_ATTEMPTS   20
#define QUEUE_RUNNER_MAX_PER_DOMAIN 4
/* Entries claimed at most per claim. */
#define QUEUE_RUNNER_CLAIM_ENTRIES 100
/* Addresses (connections) tried at most in one attempt (Postfix: smtp_mx_address_limit 5). */
#define QUEUE_RUNNER_ADDRS_PER_ATTEMPT 10
/*
 * Hard limit on one attempt, far below STORE_QUEUE_LEASE_MS (1 h): the longest single wait is
 * the 10 min for the reply to the final dot (RFC 5321 4.5.3.2.6). An attempt whose end of data
 * was sent when the deadline passes is let finish (cancelling it would drop a reply that may
 * be a 250): its final-dot timeout bounds it, so no attempt lasts longer than 40 min. Tests may
 * shorten it with the environment variable POSTERN_TEST_ATTEMPT_DEADLINE_MS (milliseconds; serve
 * logs a warning when it is set), and the claims' lease with POSTERN_TEST_QUEUE_LEASE_MS (taken
 * only when longer than the attempt deadline).
 */
#define QUEUE_RUNNER_ATTEMPT_DEADLINE_MS (30 * 60 * 1000)
/*
 * The runner looks for due entries every STORE_QUEUE_RESCAN_MS (storage/queue.h); tests that
 * must tell a flush heard by notification from one found by a rescan set another interval with
 * POSTERN_TEST_QUEUE_RESCAN_MS (milliseconds, 1 to this; serve logs a warning when it is set).
 */
#define QUEUE_RUNNER_TEST_RESCAN_MAX_MS (24 * 60 * 60 * 1000)

/*
 * Creates the runner and starts it: the first job releases stale claims, then claiming begins.
 * 0 and *out, or -1 with one line in err (nothing to free then).
 */
int queue_runner_new(uv_loop_t *loop, struct app *app, struct conn_set *conns,
                     struct queue_runner **out, char *err, size_t errlen);
/*
 * Graceful stop: no more claims; attempts in flight are abandoned (their connections aborted
 * before any end of data, so nothing is delivered twice by it) and their claims released; a
 * result already being recorded is let finish. An attempt whose end of data was sent is not
 * abandoned: its client awaits the reply (at most SMTP_CLIENT_SHUTDOWN_DOT_WAIT_MS once the
 * connections are told to stop) and the result is recorded (delivered on a 250; deferred, never
 * released, when no reply comes, as the server may have the message). done(arg) (may be NULL)
 * runs once nothing is left with the writer. Call once.
 */
void queue_runner_stop(struct queue_runner *r, void (*done)(void *), void *arg);
/*
 * Frees the runner (stopping it first if needed) and stops its listener: waits for the
 * listener's thread, which ends at once unless it is opening a connection (then within the
 * connection's connect_timeout, as the writer's own reconnection at writer_stop). Call after
 * writer_stop, so that every job callback has run; the loop must run on to finish closing its
 * handles. NULL is a no-op.
 */
void queue_runner_free(struct queue_runner **rp);

#endif
