/*
 * metrics.h - the process-wide counters behind [server] metrics, and their text.
 *
 * Every counter lives in one static struct of C11 atomics. The event loops ([server] workers),
 * the writer thread and the threadpool all count into it with relaxed increments: a counter is a
 * tally, never a synchronisation point, so no ordering is needed, and the increments cost about
 * as much as an ordinary add. Each call site is one line; the calls never fail and never block.
 * Counting goes on whether or not the endpoint is configured: the cost is too small to switch.
 *
 * metrics_format() turns the counters, plus the gauges the caller read from the store at scrape
 * time, into the Prometheus text exposition format, version 0.0.4. Names follow Prometheus
 * conventions: postern_ prefix, _total for counters, base units (seconds, bytes), lower-case
 * label values. A histogram keeps one atomic per bucket (not cumulative) and derives the
 * cumulative buckets, +Inf and _count from the same reading, so that +Inf always equals _count
 * even while other threads go on counting.
 *
 * What it does not do: serve HTTP (metrics_http.c), or read the store (the caller passes the
 * gauges in). The text helpers (escaping, the growable buffer, histogram lines) are in
 * metrics_text.h.
 */
#ifndef POSTERN_METRICS_H
#define POSTERN_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/metrics/metrics_text.h"

enum metrics_proto {
    METRICS_PROTO_SMTP = 0,
    METRICS_PROTO_POP3,
};

/* Mechanisms an auth is counted under; "none" is an AUTH refused before it named one. */
enum metrics_mech {
    METRICS_MECH_NONE = 0,
    METRICS_MECH_PLAIN,
    METRICS_MECH_LOGIN,
    METRICS_MECH_USER, /* POP3 USER/PASS */
    METRICS_MECH_OTHER,
};

/* Connections. service is an enum conn_service (server/net/conn.h). */
void metrics_conn_created(int service);
void metrics_conn_freed(int service);
/* Accepted and open: counted per service and whether TLS starts at once (implicit TLS).
 * Outbound connections are not "accepted" and are not counted here. */
void metrics_conn_accepted(int service, bool implicit_tls);
void metrics_tls_handshake(int service);
void metrics_bytes_in(int service, uint64_t n);
void metrics_bytes_out(int service, uint64_t n);

/* SMTP. A reply that refuses a MAIL, RCPT, DATA (or its end of data) or BDAT is counted by the
 * reason its enhanced status code (RFC 3463) gives; other errors (syntax, sequence, AUTH) are
 * not refusals of mail and are not counted. verb is the command being answered ("MAIL", "RCPT",
 * "DATA", "BDAT"). */
void metrics_smtp_refused(const char *verb, const char *reply);
void metrics_smtp_accepted(void);
/* The reason a refusal is counted under, or NULL for a reply that is not a refusal of mail. */
const char *metrics_refusal_reason(const char *reply);
/* Every relay_decide() a session makes; reason is an enum relay_reason. */
void metrics_relay_decision(int reason);

/* Authentication. mech from metrics_auth_mech(): the first word of an AUTH argument, or a
 * mechanism name. A temporary failure (the database failed, so the password was never judged)
 * is neither success nor failure. */
enum metrics_mech metrics_auth_mech(const char *name);
void metrics_auth(enum metrics_proto proto, int mech, bool ok, bool temporary);

/* Outbound: one recipient's result, "sent", "deferred" or "bounced" (anything else: ignored). */
void metrics_delivery(const char *outcome);

/* The writer's batch observer (storage/writer.h): set by serve.c, called on the writer thread. */
void metrics_writer_batch(uint64_t jobs, uint64_t ns);

/* Read from the store when scraped; have_store false leaves them out (the store failed). */
struct metrics_gauges {
    bool have_store;
    int64_t windows_open; /* POP-before-SMTP windows not yet expired */
    int64_t queue_depth;  /* outbound queue entries (one per recipient) */
};

/* Appends the whole exposition to out. 0, or -ENOMEM (out holds part of it). */
int metrics_format(const struct metrics_gauges *g, struct metrics_text *out);

/* Every counter back to zero: for tests only (the server never resets). */
void metrics_reset_for_tests(void);

#endif
