/*
 * metrics.c - the process-wide counters (metrics.h) and the exposition they make.
 *
 * One static struct of atomics, counted into from every thread with relaxed ordering, read with
 * relaxed loads when scraped. A scrape is therefore not a snapshot of one instant: each number is
 * exact, but two numbers may be a few events apart. Histograms are made consistent with
 * themselves by deriving +Inf and _count from the buckets they print (metrics_text.h).
 *
 * What it does not do: know how to reach the store or the network (metrics_http.c).
 */
#include "server/metrics/metrics.h"

#include <stdatomic.h>
#include <strings.h>
#include <string.h>

#include "common/pure/relay_policy.h"
#include "server/net/conn.h"

#define METRICS_SERVICES (CONN_SERVICE_OUTBOUND + 1)
#define METRICS_REASONS  (RELAY_REASON_BAD_RECIPIENT + 1)
#define METRICS_MECHS    (METRICS_MECH_OTHER + 1)
#define METRICS_PROTOS   (METRICS_PROTO_POP3 + 1)
#define N_ELEMS(a)       (sizeof(a) / sizeof((a)[0]))

/* Why a MAIL, RCPT or DATA was refused, by its reply's enhanced status code (RFC 3463). A prefix
 * of the reply is matched first ("553 5.7.1" is a sender the user does not own, other 5.7.1 is
 * relaying denied), then the enhanced code alone. */
static const struct refusal {
    const char *match;
    const char *reason;
} refusals[] = {
    {"553 5.7.1", "sender-not-owned"},
    {"5.7.1", "relay-denied"},
    {"5.7.0", "auth-required"},
    {"5.1.1", "unknown-user"},
    {"5.1.3", "bad-recipient"},
    {"5.1.7", "bad-sender"},
    {"5.3.4", "too-big"},
    {"4.5.3", "too-many-recipients"},
    {"4.3.1", "no-storage"},
    {"4.3.0", "temporary-failure"},
};
#define METRICS_REFUSALS (N_ELEMS(refusals) + 1) /* the last one is "other" */

static const char *const mech_names[METRICS_MECHS] = {"none", "plain", "login", "user", "other"};
static const char *const proto_names[METRICS_PROTOS] = {"smtp", "pop3"};
static const char *const outcome_names[] = {"sent", "deferred", "bounced"};

/*
 * Writer batches, in jobs: powers of two up to the most a busy server gathers into one commit;
 * a busy server sits in the upper buckets, an idle one at 1.
 */
static const uint64_t batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
/*
 * Writer batch time, BEGIN to COMMIT, in nanoseconds (printed as seconds): from 0.5 ms, a small
 * commit on a fast disk with synchronous=NORMAL, through the 1-10 ms of an fsync on ordinary
 * storage, to 10 s, where a batch only gets by waiting on a lock (busy_timeout) or a failing disk.
 */
static const uint64_t commit_bounds[] = {
    500000,    1000000,   2500000,   5000000,    10000000,   25000000,   50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

static struct {
    atomic_uint_fast64_t accepted[METRICS_SERVICES][2]; /* [service][implicit TLS] */
    atomic_int_fast64_t open[METRICS_SERVICES];
    atomic_uint_fast64_t tls[METRICS_SERVICES];
    atomic_uint_fast64_t bytes_in[METRICS_SERVICES];
    atomic_uint_fast64_t bytes_out[METRICS_SERVICES];
    atomic_uint_fast64_t messages_accepted;
    atomic_uint_fast64_t refused[METRICS_REFUSALS];
    atomic_uint_fast64_t relay[METRICS_REASONS];
    atomic_uint_fast64_t auth_ok[METRICS_PROTOS][METRICS_MECHS];
    atomic_uint_fast64_t auth_fail[METRICS_PROTOS][METRICS_MECHS];
    atomic_uint_fast64_t deliveries[N_ELEMS(outcome_names)];
    atomic_uint_fast64_t batch[N_ELEMS(batch_bounds) + 1];
    atomic_uint_fast64_t batch_jobs_sum;
    atomic_uint_fast64_t commit[N_ELEMS(commit_bounds) + 1];
    atomic_uint_fast64_t commit_ns_sum;
} m;

static void add(atomic_uint_fast64_t *a, uint64_t n)
{
    atomic_fetch_add_explicit(a, n, memory_order_relaxed);
}

static uint64_t get(atomic_uint_fast64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

static bool service_ok(int service)
{
    return service >= 0 && service < METRICS_SERVICES;
}

void metrics_conn_created(int service)
{
    if (service_ok(service))
        atomic_fetch_add_explicit(&m.open[service], 1, memory_order_relaxed);
}

void metrics_conn_freed(int service)
{
    if (service_ok(service))
        atomic_fetch_sub_explicit(&m.open[service], 1, memory_order_relaxed);
}

void metrics_conn_accepted(int service, bool implicit_tls)
{
    if (service_ok(service) && service != CONN_SERVICE_OUTBOUND)
        add(&m.accepted[service][implicit_tls ? 1 : 0], 1);
}

void metrics_tls_handshake(int service)
{
    if (service_ok(service))
        add(&m.tls[service], 1);
}

void metrics_bytes_in(int service, uint64_t n)
{
    if (service_ok(service))
        add(&m.bytes_in[service], n);
}

void metrics_bytes_out(int service, uint64_t n)
{
    if (service_ok(service))
        add(&m.bytes_out[service], n);
}

const char *metrics_refusal_reason(const char *reply)
{
    /* "DDD X.Y.Z": a 4xx or 5xx with an enhanced code; 5.5.x is syntax or sequence, not a
     * refusal of the mail. */
    if (reply == NULL || (reply[0] != '4' && reply[0] != '5') || strlen(reply) < 9 ||
        reply[3] != ' ' || reply[5] != '.')
        return NULL;
    if (strncmp(reply + 4, "5.5.", 4) == 0)
        return NULL;
    for (size_t i = 0; i < N_ELEMS(refusals); i++) {
        const char *want = refusals[i].match;
        size_t n = strlen(want);
        const char *at = n > 5 ? reply : reply + 4;
        if (strncmp(at, want, n) == 0 && (at[n] == ' ' || at[n] == '\0'))
            return refusals[i].reason;
    }
    return "other";
}

void metrics_smtp_refused(const char *verb, const char *reply)
{
    if (strcasecmp(verb, "MAIL") != 0 && strcasecmp(verb, "RCPT") != 0 &&
        strcasecmp(verb, "DATA") != 0 && strcasecmp(verb, "BDAT") != 0)
        return;
    const char *reason = metrics_refusal_reason(reply);
    if (reason == NULL)
        return;
    size_t i = 0;
    while (i < N_ELEMS(refusals) && strcmp(refusals[i].reason, reason) != 0)
        i++;
    add(&m.refused[i], 1); /* i == N_ELEMS(refusals): "other" */
}

void metrics_smtp_accepted(void)
{
    add(&m.messages_accepted, 1);
}

void metrics_relay_decision(int reason)
{
    if (reason >= 0 && reason < METRICS_REASONS)
        add(&m.relay[reason], 1);
}

enum metrics_mech metrics_auth_mech(const char *name)
{
    if (name == NULL || name[0] == '\0' || name[0] == ' ')
        return METRICS_MECH_NONE;
    size_t n = strcspn(name, " ");
    if (n == 5 && strncasecmp(name, "PLAIN", 5) == 0)
        return METRICS_MECH_PLAIN;
    if (n == 5 && strncasecmp(name, "LOGIN", 5) == 0)
        return METRICS_MECH_LOGIN;
    if (n == 4 && strncasecmp(name, "USER", 4) == 0)
        return METRICS_MECH_USER;
    return METRICS_MECH_OTHER;
}

void metrics_auth(enum metrics_proto proto, int mech, bool ok, bool temporary)
{
    if ((int)proto < 0 || proto >= METRICS_PROTOS || mech < 0 || mech >= METRICS_MECHS || temporary)
        return;
    add(ok ? &m.auth_ok[proto][mech] : &m.auth_fail[proto][mech], 1);
}

void metrics_delivery(const char *outcome)
{
    for (size_t i = 0; i < N_ELEMS(outcome_names); i++)
        if (strcmp(outcome, outcome_names[i]) == 0)
            add(&m.deliveries[i], 1);
}

static void observe(atomic_uint_fast64_t *buckets, const uint64_t *bounds, size_t n, uint64_t v)
{
    size_t i = 0;
    while (i < n && v > bounds[i])
        i++;
    add(&buckets[i], 1);
}

void metrics_writer_batch(uint64_t jobs, uint64_t ns)
{
    observe(m.batch, batch_bounds, N_ELEMS(batch_bounds), jobs);
    add(&m.batch_jobs_sum, jobs);
    observe(m.commit, commit_bounds, N_ELEMS(commit_bounds), ns);
    add(&m.commit_ns_sum, ns);
}

void metrics_reset_for_tests(void)
{
    memset(&m, 0, sizeof(m)); /* atomics of integer type: all-zero bits are zero */
}

/* ---- the exposition ------------------------------------------------------------------------ */

static const char *const service_label[] = {"service"};
static const char *const service_tls_labels[] = {"service", "tls"};

static void per_service(struct metrics_text *t, const char *name, const char *help,
                        atomic_uint_fast64_t *v, bool outbound)
{
    metrics_text_header(t, name, "counter", help);
    for (int s = 0; s < METRICS_SERVICES; s++) {
        if (s == CONN_SERVICE_OUTBOUND && !outbound)
            continue;
        const char *values[] = {conn_service_name(s)};
        metrics_text_sample(t, name, &(struct metrics_labels){service_label, values, 1},
                            get(&v[s]));
    }
}

static void connections(struct metrics_text *t)
{
    metrics_text_header(t, "postern_connections_accepted_total", "counter",
                        "Connections accepted, by service and whether TLS starts at once.");
    for (int s = 0; s < CONN_SERVICE_OUTBOUND; s++)
        for (int tls = 0; tls < 2; tls++) {
            const char *values[] = {conn_service_name(s), tls ? "yes" : "no"};
            metrics_text_sample(t, "postern_connections_accepted_total",
                                &(struct metrics_labels){service_tls_labels, values, 2},
                                get(&m.accepted[s][tls]));
        }
    metrics_text_header(t, "postern_connections_open", "gauge",
                        "Connections open now, by service (outbound: to other servers).");
    for (int s = 0; s < METRICS_SERVICES; s++) {
        const char *values[] = {conn_service_name(s)};
        metrics_text_sample_signed(t, "postern_connections_open",
                                   &(struct metrics_labels){service_label, values, 1},
                                   atomic_load_explicit(&m.open[s], memory_order_relaxed));
    }
    per_service(t, "postern_tls_handshakes_total",
                "TLS handshakes completed (implicit TLS, STARTTLS, STLS), by service.", m.tls,
                true);
    per_service(t, "postern_received_bytes_total", "Octets read from the network, by service.",
                m.bytes_in, true);
    per_service(t, "postern_sent_bytes_total", "Octets written to the network, by service.",
                m.bytes_out, true);
}

static void smtp(struct metrics_text *t)
{
    static const char *const reason_label[] = {"reason"};
    static const char *const relay_labels[] = {"decision", "reason"};
    metrics_text_header(t, "postern_smtp_messages_accepted_total", "counter",
                        "Messages accepted and stored (250 after the end of data).");
    metrics_text_sample(t, "postern_smtp_messages_accepted_total", NULL, get(&m.messages_accepted));
    metrics_text_header(
        t, "postern_smtp_refusals_total", "counter",
        "Refused MAIL, RCPT, DATA and BDAT commands, by the reason their reply gives.");
    for (size_t i = 0; i < METRICS_REFUSALS; i++) {
        const char *values[] = {i < N_ELEMS(refusals) ? refusals[i].reason : "other"};
        metrics_text_sample(t, "postern_smtp_refusals_total",
                            &(struct metrics_labels){reason_label, values, 1}, get(&m.refused[i]));
    }
    metrics_text_header(t, "postern_relay_decisions_total", "counter",
                        "Relay policy decisions on RCPT, by decision and reason.");
    for (int r = 0; r < METRICS_REASONS; r++) {
        bool allow = r == RELAY_REASON_LOCAL_MAILBOX || r == RELAY_REASON_POSTMASTER ||
                     r == RELAY_REASON_TRUSTED_NETWORK || r == RELAY_REASON_AUTH ||
                     r == RELAY_REASON_POP_WINDOW;
        const char *values[] = {allow ? "allow" : "deny", relay_reason_name(r)};
        metrics_text_sample(t, "postern_relay_decisions_total",
                            &(struct metrics_labels){relay_labels, values, 2}, get(&m.relay[r]));
    }
}

static void auth(struct metrics_text *t)
{
    static const char *const names[] = {"protocol", "mechanism"};
    for (int ok = 1; ok >= 0; ok--) {
        const char *name = ok ? "postern_auth_successes_total" : "postern_auth_failures_total";
        metrics_text_header(t, name, "counter",
                            ok ? "Logins that succeeded, by protocol and mechanism."
                               : "Logins that failed (wrong password, malformed or cancelled "
                                 "exchange, refused before a check), by protocol and mechanism.");
        for (int p = 0; p < METRICS_PROTOS; p++)
            for (int k = 0; k < METRICS_MECHS; k++) {
                /* SMTP has no USER; POP3 names its mechanism before any check. */
                bool smtp_only = k == METRICS_MECH_NONE || k == METRICS_MECH_OTHER;
                if ((p == METRICS_PROTO_SMTP && k == METRICS_MECH_USER) ||
                    (p == METRICS_PROTO_POP3 && smtp_only))
                    continue;
                const char *values[] = {proto_names[p], mech_names[k]};
                metrics_text_sample(t, name, &(struct metrics_labels){names, values, 2},
                                    ok ? get(&m.auth_ok[p][k]) : get(&m.auth_fail[p][k]));
            }
    }
}

static void store_gauges(struct metrics_text *t, const struct metrics_gauges *g)
{
    static const char *const outcome_label[] = {"outcome"};
    metrics_text_header(t, "postern_deliveries_total", "counter",
                        "Outbound delivery attempts' results, one per recipient.");
    for (size_t i = 0; i < N_ELEMS(outcome_names); i++) {
        const char *values[] = {outcome_names[i]};
        metrics_text_sample(t, "postern_deliveries_total",
                            &(struct metrics_labels){outcome_label, values, 1},
                            get(&m.deliveries[i]));
    }
    if (!g->have_store)
        return;
    metrics_text_header(t, "postern_relay_windows_open", "gauge",
                        "POP-before-SMTP relay windows open now.");
    metrics_text_sample_signed(t, "postern_relay_windows_open", NULL, g->windows_open);
    metrics_text_header(t, "postern_queue_depth", "gauge",
                        "Outbound queue entries waiting, one per recipient.");
    metrics_text_sample_signed(t, "postern_queue_depth", NULL, g->queue_depth);
}

static void writer(struct metrics_text *t)
{
    uint64_t counts[N_ELEMS(commit_bounds) + 1];
    for (size_t i = 0; i < N_ELEMS(batch_bounds) + 1; i++)
        counts[i] = get(&m.batch[i]);
    metrics_text_histogram(t, "postern_writer_batch_jobs",
                           "Jobs committed together in one writer transaction.", batch_bounds,
                           N_ELEMS(batch_bounds), counts, get(&m.batch_jobs_sum), 1.0);
    for (size_t i = 0; i < N_ELEMS(commit_bounds) + 1; i++)
        counts[i] = get(&m.commit[i]);
    metrics_text_histogram(t, "postern_writer_commit_seconds",
                           "Time a writer batch takes from BEGIN to COMMIT, its jobs included.",
                           commit_bounds, N_ELEMS(commit_bounds), counts, get(&m.commit_ns_sum),
                           1e9);
}

int metrics_format(const struct metrics_gauges *g, struct metrics_text *out)
{
    connections(out);
    smtp(out);
    auth(out);
    store_gauges(out, g);
    writer(out);
    return metrics_text_status(out);
}
