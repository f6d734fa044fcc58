/*
 * queue_runner.c - claims due queue entries and delivers them (see queue_runner.h).
 *
 * Pieces:
 *   - the runner: a timer, the claim job (one at a time), the list of attempts in flight;
 *   - a delivery: one attempt for one message and one recipient domain. It routes (smarthost
 *     or MX lookup), then walks addresses with one smtp_client at a time, copying each
 *     recipient's result back as it is decided, and ends with one writer job that records
 *     everything (delivered, deferred, bounced) in one savepoint per call;
 *   - release jobs: claims handed back unused (over a concurrency limit, or at stop).
 *
 * Ownership: the runner owns its deliveries (a list) and their smtp_client handles until the
 * client reports; the writer borrows the embedded jobs between submit and done. A delivery is
 * freed when its job is done and its deadline timer closed; the runner is freed when its handles
 * are closed and queue_runner_free was called.
 */
#include "server/outbound/queue_runner.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/error.h"
#include "common/pure/dsn.h"
#include "common/log.h"
#include "server/app.h"
#include "server/net/conn.h"
#include "server/net/dns.h"
#include "server/outbound/smtp_client.h"
#include "server/net/tls.h"
#include "storage/queue.h"
#include "storage/store.h"
#include "storage/writer.h"

#define RELAY_TEXT_BYTES (DNS_HOST_MAX_BYTES + 64)

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum delivery_phase {
    PH_ROUTING = 0, /* DNS and SMTP */
    PH_RECORDING,   /* the result job is with the writer */
    PH_RELEASING,   /* stopped: the release job is with the writer */
};

struct delivery {
    struct queue_runner *r; /* borrowed */
    struct delivery *next;  /* in r->active */
    enum delivery_phase phase;
    int64_t message_id;
    int64_t created_ms;
    char *sender; /* owned */
    char *domain; /* owned */
    size_t n;
    int64_t *ids;                    /* owned, n */
    int64_t *attempts;               /* owned, n: failed attempts before this one */
    char **addresses;                /* owned, n */
    struct smtp_client_rcpt *rcpts;  /* owned, n: the final result per recipient */
    char (*relay)[RELAY_TEXT_BYTES]; /* owned, n: where it was decided */
    char (*dsn)[DSN_STATUS_BYTES];   /* owned, n: own-text status ("" = from the reply) */

    /* routing */
    struct dns_query *q;
    struct dns_target *targets; /* owned */
    size_t n_targets, target_i;
    bool implicit_mx;
    uint16_t port;
    struct sockaddr_storage *addrs; /* owned */
    size_t n_addrs, addr_i, tried;
    bool no_tls;    /* retrying the current address without STARTTLS */
    bool smarthost; /* routed to relay.smarthost (AUTH there when credentials are set) */
    struct smtp_client *client;
    struct smtp_client_rcpt *cur; /* owned, n: the recipients handed to the current client */
    size_t *cur_idx;              /* owned, n */
    size_t n_cur;
    char cur_relay[RELAY_TEXT_BYTES];
    /* the last host-level failure, for recipients nobody decided */
    char last_error[SMTP_REPLY_TEXT_MAX_BYTES];
    int last_code;
    char last_relay[RELAY_TEXT_BYTES];
    /* a permanent routing failure (null MX, no such domain): bounce the undecided */
    bool perm;
    char perm_dsn[DSN_STATUS_BYTES];

    uv_timer_t deadline;
    bool timer_open; /* initialised and not yet closed */
    bool job_busy;   /* job is with the writer */

    /* the result job (run may be called twice: every output is recomputed) */
    struct writer_job job;
    int64_t now_ms;
    int64_t max_age_ms;
    const char *hostname;                                          /* borrowed from cfg */
    bool *expired;                                                 /* owned, n */
    int64_t *scratch_ids;                                          /* owned, n */
    struct dsn_recipient *fail;                                    /* owned, n */
    char (*errtext)[SMTP_REPLY_TEXT_MAX_BYTES + RELAY_TEXT_BYTES]; /* owned, n */
    enum store_bounce_route route;
    int job_rc;
};

struct release_job {
    struct writer_job job;
    struct queue_runner *r;
    int64_t *ids; /* owned */
    size_t n;
};

struct queue_runner {
    uv_loop_t *loop;
    struct app *app;        /* borrowed */
    struct conn_set *conns; /* borrowed */
    struct dns *dns;        /* owned */
    struct tls_ctx *tls;    /* owned reference: client context for STARTTLS */
    uv_timer_t timer;
    bool timer_open;
    size_t handles_open; /* the timer and every delivery's deadline timer */
    bool freeing;        /* queue_runner_free was called: free when the handles are closed */

    struct delivery *active;
    size_t n_active;
    size_t jobs;  /* writer jobs submitted and not yet done (the deliveries' included) */
    bool started; /* stale claims released */
    bool stopping;
    void (*stop_done)(void *);
    void *stop_arg;

    /* the claim job */
    struct writer_job claim_job;
    bool claim_busy;
    struct store_queue_claims claims;
    char **skip; /* owned copies, n_skip */
    size_t n_skip;
    int claim_rc;
    struct writer_job start_job;
    size_t released_stale;
};

static void claim_now(struct queue_runner *r);
static void on_timer(uv_timer_t *t);
static void try_addr(struct delivery *d);
static void next_target(struct delivery *d);

/* ---- the runner's lifetime ----------------------------------------------------------------- */

static void runner_maybe_free(struct queue_runner *r)
{
    if (!r->freeing || r->handles_open > 0 || r->jobs > 0 || r->active != NULL)
        return;
    tls_ctx_unref(&r->tls);
    store_queue_claims_free(&r->claims);
    free(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct queue_runner *r = h->data;
    r->handles_open--;
    runner_maybe_free(r);
}

static void check_stopped(struct queue_runner *r)
{
    if (!r->stopping || r->jobs > 0 || r->active != NULL)
        return;
    if (r->stop_done != NULL) {
        void (*done)(void *) = r->stop_done;
        r->stop_done = NULL;
        done(r->stop_arg);
    }
    runner_maybe_free(r);
}

static int submit(struct queue_runner *r, struct writer_job *job)
{
    if (r->app->writer == NULL || writer_submit(r->app->writer, job) != 0)
        return -1;
    r->jobs++;
    return 0;
}

/* ---- releasing claims ---------------------------------------------------------------------- */

static int release_run(struct store *st, struct writer_job *job)
{
    struct release_job *rj = CONTAINER_OF(job, struct release_job, job);
    return store_queue_release(st, rj->ids, rj->n);
}

static void release_done(struct writer_job *job, int status)
{
    struct release_job *rj = CONTAINER_OF(job, struct release_job, job);
    struct queue_runner *r = rj->r;
    if (status != 0)
        log_warn("queue", 0, "event=release-failed entries=%zu status=%d error=\"%s\"", rj->n,
                 status, postern_strerror(status));
    free(rj->ids);
    free(rj);
    r->jobs--;
    check_stopped(r);
}

/* Hands claims back (their entries are due again at once). Takes ownership of ids. */
static void release_ids(struct queue_runner *r, int64_t *ids, size_t n)
{
    if (n == 0) {
        free(ids);
        return;
    }
    struct release_job *rj = calloc(1, sizeof(*rj));
    if (rj == NULL) {
        free(ids);
        log_warn("queue", 0, "event=release-failed entries=%zu error=\"out of memory\"", n);
        return; /* the lease runs out, or the next start releases them */
    }
    rj->job.run = release_run;
    rj->job.done = release_done;
    rj->r = r;
    rj->ids = ids;
    rj->n = n;
    if (submit(r, &rj->job) != 0) {
        log_warn("queue", 0, "event=release-failed entries=%zu error=\"writer stopped\"", n);
        free(rj->ids);
        free(rj);
    }
}

/* ---- deliveries ---------------------------------------------------------------------------- */

static void delivery_free(struct delivery *d)
{
    if (d == NULL)
        return;
    if (d->addresses != NULL)
        for (size_t i = 0; i < d->n; i++)
            free(d->addresses[i]);
    free(d->addresses);
    free(d->sender);
    free(d->domain);
    free(d->ids);
    free(d->attempts);
    free(d->rcpts);
    free(d->relay);
    free(d->dsn);
    free(d->targets);
    free(d->addrs);
    free(d->cur);
    free(d->cur_idx);
    free(d->expired);
    free(d->scratch_ids);
    free(d->fail);
    free(d->errtext);
    free(d);
}

static void delivery_unlink(struct delivery *d)
{
    struct queue_runner *r = d->r;
    for (struct delivery **pp = &r->active; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            r->n_active--;
            return;
        }
    }
}

static void on_deadline_closed(uv_handle_t *h)
{
    struct delivery *d = h->data;
    struct queue_runner *r = d->r;
    r->handles_open--;
    delivery_free(d);
    /* check_stopped ends in runner_maybe_free, which may free r: r is not touched after it
     * (freeing implies stopping, so nothing is missed when check_stopped returns early). */
    check_stopped(r);
}

/* The delivery is finished with the writer: unlink it and close its timer (frees it). */
static void delivery_end(struct delivery *d)
{
    delivery_unlink(d);
    if (d->timer_open) {
        d->timer_open = false;
        uv_timer_stop(&d->deadline);
        uv_close((uv_handle_t *)&d->deadline, on_deadline_closed);
        return;
    }
    struct queue_runner *r = d->r;
    delivery_free(d);
    check_stopped(r);
}

static size_t domain_active(const struct queue_runner *r, const char *domain)
{
    size_t k = 0;
    for (const struct delivery *d = r->active; d != NULL; d = d->next)
        if (strcmp(d->domain, domain) == 0)
            k++;
    return k;
}

static const char *status_word(const struct delivery *d, size_t i)
{
    if (d->rcpts[i].status == SMTP_RCPT_SENT)
        return "sent";
    if (d->rcpts[i].status == SMTP_RCPT_BOUNCE || d->expired[i])
        return "bounced";
    return "deferred";
}

static void log_results(const struct delivery *d)
{
    for (size_t i = 0; i < d->n; i++) {
        char esc_to[400], esc_reply[600], dsn[DSN_STATUS_BYTES];
        const struct smtp_client_rcpt *rc = &d->rcpts[i];
        if (d->expired[i])
            snprintf(dsn, sizeof(dsn), "5.4.7");
        else if (d->dsn[i][0] != '\0')
            snprintf(dsn, sizeof(dsn), "%s", d->dsn[i]);
        else
            smtp_reply_enhanced(rc->code, rc->reply, dsn);
        log_info("queue", 0,
                 "event=delivery id=%" PRId64 " msg=%" PRId64
                 " to=%s relay=%s status=%s dsn=%s attempts=%" PRId64 " reply=%s",
                 d->ids[i], d->message_id,
                 log_escape(esc_to, sizeof(esc_to), d->addresses[i], strlen(d->addresses[i])),
                 d->relay[i][0] != '\0' ? d->relay[i] : "none", status_word(d, i), dsn,
                 d->attempts[i] + 1,
                 log_escape(esc_reply, sizeof(esc_reply), rc->reply, strlen(rc->reply)));
    }
}

/* Writer thread: record every recipient's result. */
static int record_run(struct store *st, struct writer_job *job)
{
    struct delivery *d = CONTAINER_OF(job, struct delivery, job);
    size_t n_ids = 0;
    d->route = STORE_BOUNCE_NONE;
    for (size_t i = 0; i < d->n; i++) {
        d->expired[i] = false;
        if (d->rcpts[i].status == SMTP_RCPT_SENT)
            d->scratch_ids[n_ids++] = d->ids[i];
    }
    int rc = STORE_OK;
    if (n_ids > 0 && (rc = store_queue_delivered(st, d->scratch_ids, n_ids, NULL)) != STORE_OK)
        return rc;
    n_ids = 0;
    for (size_t i = 0; i < d->n; i++) {
        const struct smtp_client_rcpt *rc_i = &d->rcpts[i];
        if (rc_i->status == SMTP_RCPT_DEFER) {
            snprintf(d->errtext[i], sizeof(d->errtext[i]), "%s: %s",
                     d->relay[i][0] != '\0' ? d->relay[i] : d->domain, rc_i->reply);
            bool expired = false;
            rc =
                store_queue_defer(st, d->ids[i], d->now_ms, d->max_age_ms, d->errtext[i], &expired);
            if (rc == STORE_NOT_FOUND)
                continue;
            if (rc != STORE_OK)
                return rc;
            d->expired[i] = expired;
        }
        if (rc_i->status == SMTP_RCPT_BOUNCE || d->expired[i]) {
            /* relay[i] is "host[ip]:port"; Remote-MTA wants the host only. */
            char *host = d->errtext[i];
            snprintf(host, sizeof(d->errtext[i]), "%s", d->relay[i]);
            char *br = strchr(host, '[');
            if (br != NULL)
                *br = '\0';
            d->scratch_ids[n_ids] = d->ids[i];
            d->fail[n_ids] = (struct dsn_recipient){
                .address = d->addresses[i],
                .remote_mta = rc_i->code != 0 ? host : NULL,
                .reply_code = rc_i->code,
                .reply = rc_i->reply,
                .status = d->expired[i] || d->dsn[i][0] == '\0' ? NULL : d->dsn[i],
                .last_attempt_ms = d->now_ms,
                .expired = d->expired[i],
            };
            n_ids++;
        }
    }
    if (n_ids > 0) {
        struct store_queue_failure f = {
            .hostname = d->hostname,
            .now_ms = d->now_ms,
            .ids = d->scratch_ids,
            .rcpts = d->fail,
            .n = n_ids,
        };
        rc = store_queue_fail(st, &f);
        if (rc != STORE_OK && rc != STORE_NOT_FOUND)
            return rc;
        d->route = f.route_out;
    }
    return 0;
}

static const char *route_name(enum store_bounce_route route)
{
    switch (route) {
    case STORE_BOUNCE_NONE:
        return "none";
    case STORE_BOUNCE_LOCAL:
        return "local";
    case STORE_BOUNCE_QUEUED:
        return "queued";
    case STORE_BOUNCE_NULL_SENDER:
        return "null-sender-dropped";
    case STORE_BOUNCE_NO_MAILBOX:
        return "no-mailbox";
    case STORE_BOUNCE_BAD_SENDER:
        return "bad-sender";
    }
    return "?";
}

static void record_done(struct writer_job *job, int status)
{
    struct delivery *d = CONTAINER_OF(job, struct delivery, job);
    struct queue_runner *r = d->r;
    d->job_busy = false;
    r->jobs--;
    if (status != 0) {
        /* Nothing was written: the claims stay until the lease runs out or the next start. */
        log_error("queue", 0,
                  "event=record-failed msg=%" PRId64
                  " domain=%s entries=%zu status=%d error=\"%s\"",
                  d->message_id, d->domain, d->n, status, postern_strerror(status));
    } else {
        log_results(d);
        if (d->route != STORE_BOUNCE_NONE)
            log_info("queue", 0, "event=bounce msg=%" PRId64 " route=%s", d->message_id,
                     route_name(d->route));
    }
    delivery_end(d);
    if (!r->stopping)
        claim_now(r);
}

/* Every recipient has its result (or gets one now): hand them to the writer. */
static void delivery_finish(struct delivery *d)
{
    struct queue_runner *r = d->r;
    for (size_t i = 0; i < d->n; i++) {
        struct smtp_client_rcpt *rc = &d->rcpts[i];
        if (rc->status != SMTP_RCPT_PENDING)
            continue;
        rc->status = d->perm ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER;
        rc->code = d->last_code;
        snprintf(rc->reply, sizeof(rc->reply), "%s",
                 d->last_error[0] != '\0' ? d->last_error : "no host could be reached");
        snprintf(d->relay[i], sizeof(d->relay[i]), "%s", d->last_relay);
        if (d->perm)
            snprintf(d->dsn[i], sizeof(d->dsn[i]), "%s", d->perm_dsn);
        else if (d->last_code == 0 && d->dsn[i][0] == '\0')
            snprintf(d->dsn[i], sizeof(d->dsn[i]), "4.4.1"); /* no answer from the host */
    }
    if (d->timer_open)
        uv_timer_stop(&d->deadline);
    d->phase = PH_RECORDING;
    d->now_ms = store_now_ms();
    d->max_age_ms = (int64_t)r->app->cfg->relay.max_age_ms;
    d->hostname = r->app->cfg->server.hostname;
    d->job.run = record_run;
    d->job.done = record_done;
    if (submit(r, &d->job) != 0) {
        log_error("queue", 0, "event=record-failed msg=%" PRId64 " error=\"writer stopped\"",
                  d->message_id);
        delivery_end(d);
        return;
    }
    d->job_busy = true;
}

/* A routing failure for every undecided recipient (nothing to connect to). */
static void route_failed(struct delivery *d, bool perm, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void route_failed(struct delivery *d, bool perm, const char *dsn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->last_error, sizeof(d->last_error), fmt, ap);
    va_end(ap);
    d->last_code = 0;
    d->last_relay[0] = '\0';
    d->perm = perm;
    snprintf(d->perm_dsn, sizeof(d->perm_dsn), "%s", dsn);
    if (!perm) {
        for (size_t i = 0; i < d->n; i++)
            if (d->rcpts[i].status == SMTP_RCPT_PENDING)
                snprintf(d->dsn[i], sizeof(d->dsn[i]), "%s", dsn);
    }
    delivery_finish(d);
}

static void format_relay(char *out, size_t len, const char *host, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
    }
    snprintf(out, len, "%s[%s]:%u", host, ip, (unsigned)port);
}

static void on_client_done(void *arg, const struct smtp_client_result *res)
{
    struct delivery *d = arg;
    d->client = NULL;
    for (size_t j = 0; j < d->n_cur; j++) {
        if (d->cur[j].status == SMTP_RCPT_PENDING)
            continue;
        size_t i = d->cur_idx[j];
        d->rcpts[i] = d->cur[j];
        d->rcpts[i].address = d->addresses[i];
        snprintf(d->relay[i], sizeof(d->relay[i]), "%s", d->cur_relay);
        snprintf(d->dsn[i], sizeof(d->dsn[i]), "%s", d->cur[j].dsn);
    }
    if (d->r->stopping)
        return; /* queue_runner_stop took over */
    if (res->tls_failed && !d->no_tls && d->r->app->smarthost_creds == NULL) {
        /* RFC 7435: opportunistic TLS that fails is retried in the clear (never with smarthost
         * credentials: the client then reports no tls_failed, and this is a safety net). */
        log_info("queue", 0, "event=tls-fallback msg=%" PRId64 " relay=%s", d->message_id,
                 d->cur_relay);
        d->no_tls = true;
        try_addr(d);
        return;
    }
    if (res->host_failed) {
        snprintf(d->last_error, sizeof(d->last_error), "%s", res->error);
        d->last_code = res->code;
        snprintf(d->last_relay, sizeof(d->last_relay), "%s", d->cur_relay);
        char esc[400];
        log_info("queue", 0, "event=host-failed msg=%" PRId64 " relay=%s error=%s", d->message_id,
                 d->cur_relay, log_escape(esc, sizeof(esc), res->error, strlen(res->error)));
        d->addr_i++;
        d->no_tls = false;
        try_addr(d);
        return;
    }
    delivery_finish(d);
}

/* The store failed to give the message's body (rc is a STORE_* code): log it as such and defer
 * every undecided recipient with a local-error status (RFC 3463 4.3.0). */
static void store_failed(struct delivery *d, int rc)
{
    const char *detail = store_errmsg(d->r->app->reads);
    char esc[400];
    log_error("queue", 0, "event=store-failed msg=%" PRId64 " error=\"%s\" detail=%s",
              d->message_id, postern_strerror(rc),
              log_escape(esc, sizeof(esc), detail, strlen(detail)));
    route_failed(d, false, "4.3.0", "message %" PRId64 " cannot be read from the store (%s: %s)",
                 d->message_id, postern_strerror(rc), detail);
}

/* Connects to the current address of the current target, or moves on. */
static void try_addr(struct delivery *d)
{
    struct queue_runner *r = d->r;
    for (;;) {
        d->n_cur = 0;
        for (size_t i = 0; i < d->n; i++) {
            if (d->rcpts[i].status != SMTP_RCPT_PENDING)
                continue;
            d->cur[d->n_cur] = (struct smtp_client_rcpt){.address = d->addresses[i]};
            d->cur_idx[d->n_cur++] = i;
        }
        if (d->n_cur == 0) {
            delivery_finish(d);
            return;
        }
        if (d->addr_i >= d->n_addrs) {
            d->target_i++;
            next_target(d);
            return;
        }
        if (d->tried >= QUEUE_RUNNER_ADDRS_PER_ATTEMPT) {
            delivery_finish(d);
            return;
        }
        d->tried++;
        const char *host = d->targets[d->target_i].host;
        const struct sockaddr *sa = (const struct sockaddr *)&d->addrs[d->addr_i];
        format_relay(d->cur_relay, sizeof(d->cur_relay), host, sa);
        struct smtp_client_params p = {
            .conns = r->conns,
            .addr = sa,
            .remote_host = host,
            .tls_ctx = d->no_tls ? NULL : r->tls,
            /* Only the smarthost route authenticates; MX hosts never see the credentials. */
            .creds = d->smarthost ? r->app->smarthost_creds : NULL,
            .helo_name = r->app->cfg->server.hostname,
            .sender = d->sender,
            .rcpts = d->cur,
            .n_rcpts = d->n_cur,
            .store = r->app->reads,
            .message_id = d->message_id,
            .done = on_client_done,
            .arg = d,
        };
        int rc = smtp_client_start(&p, &d->client);
        if (rc == 0)
            return;
        if (rc == STORE_NOT_FOUND) {
            /* Dropped by an admin meanwhile: recording finds nothing left to change. */
            snprintf(d->last_error, sizeof(d->last_error), "the message is no longer queued");
            d->last_code = 0;
            delivery_finish(d);
            return;
        }
        if (postern_err_is_store(rc)) {
            /* The body could not be read: our store failed, not the host, and every other
             * address would fail alike. Defer now, in the store's words. */
            store_failed(d, rc);
            return;
        }
        snprintf(d->last_error, sizeof(d->last_error), "%s: cannot connect (%s)", d->cur_relay,
                 postern_strerror(rc));
        d->last_code = 0;
        snprintf(d->last_relay, sizeof(d->last_relay), "%s", d->cur_relay);
        d->addr_i++;
        d->no_tls = false;
    }
}

static void on_addr(void *ctx, const struct dns_addr_result *res)
{
    struct delivery *d = ctx;
    d->q = NULL;
    const char *host = d->targets[d->target_i].host;
    if (res->status == DNS_OK) {
        free(d->addrs);
        d->addrs = malloc(res->count * sizeof(*d->addrs));
        if (d->addrs == NULL) {
            d->n_addrs = 0;
            route_failed(d, false, "4.3.0", "out of memory");
            return;
        }
        memcpy(d->addrs, res->addrs, res->count * sizeof(*d->addrs));
        d->n_addrs = res->count;
        d->addr_i = 0;
        d->no_tls = false;
        try_addr(d);
        return;
    }
    bool perm =
        res->status == DNS_NXDOMAIN || res->status == DNS_NODATA || res->status == DNS_BADNAME;
    if (d->implicit_mx && perm) {
        /* RFC 5321 5.1: the domain itself has no address either. */
        route_failed(d, true, "5.1.2", "%s: no MX and no address record (%s)", host, res->error);
        return;
    }
    snprintf(d->last_error, sizeof(d->last_error), "%s: address lookup failed (%s)", host,
             res->error);
    d->last_code = 0;
    snprintf(d->last_relay, sizeof(d->last_relay), "%s", host);
    d->target_i++;
    next_target(d);
}

static void next_target(struct delivery *d)
{
    if (d->target_i >= d->n_targets || d->tried >= QUEUE_RUNNER_ADDRS_PER_ATTEMPT) {
        delivery_finish(d); /* the undecided are deferred with the last error */
        return;
    }
    d->q = dns_lookup_addr(d->r->dns, d->targets[d->target_i].host, d->port, on_addr, d);
    if (d->q == NULL)
        route_failed(d, false, "4.3.0", "cannot start a DNS lookup");
}

static void on_mx(void *ctx, const struct dns_mx_result *res)
{
    struct delivery *d = ctx;
    d->q = NULL;
    switch (res->status) {
    case DNS_OK:
        break;
    case DNS_NULL_MX:
        route_failed(d, true, "5.1.10", "%s: the domain accepts no mail (null MX, RFC 7505)",
                     d->domain);
        return;
    case DNS_NXDOMAIN:
    case DNS_BADNAME:
        route_failed(d, true, "5.1.2", "%s: %s", d->domain, res->error);
        return;
    default:
        route_failed(d, false, "4.4.3", "%s: MX lookup failed (%s)", d->domain, res->error);
        return;
    }
    d->targets = malloc(res->count * sizeof(*d->targets));
    if (d->targets == NULL) {
        route_failed(d, false, "4.3.0", "out of memory");
        return;
    }
    memcpy(d->targets, res->targets, res->count * sizeof(*d->targets));
    d->n_targets = res->count;
    d->implicit_mx = res->is_implicit;
    d->target_i = 0;
    next_target(d);
}

static void on_deadline(uv_timer_t *t)
{
    struct delivery *d = t->data;
    if (d->phase != PH_ROUTING)
        return;
    log_warn("queue", 0, "event=attempt-deadline msg=%" PRId64 " domain=%s", d->message_id,
             d->domain);
    dns_cancel(d->q);
    d->q = NULL;
    smtp_client_cancel(&d->client);
    route_failed(d, false, "4.4.7", "the delivery attempt took too long");
}

static void delivery_start(struct delivery *d)
{
    struct queue_runner *r = d->r;
    const struct cfg *cfg = r->app->cfg;
    if (uv_timer_init(r->loop, &d->deadline) == 0) {
        d->deadline.data = d;
        d->timer_open = true;
        r->handles_open++;
        uv_timer_start(&d->deadline, on_deadline, QUEUE_RUNNER_ATTEMPT_DEADLINE_MS, 0);
    }
    if (cfg->relay.smarthost.host[0] != '\0') {
        d->targets = calloc(1, sizeof(*d->targets));
        if (d->targets == NULL) {
            route_failed(d, false, "4.3.0", "out of memory");
            return;
        }
        snprintf(d->targets[0].host, sizeof(d->targets[0].host), "%s", cfg->relay.smarthost.host);
        d->n_targets = 1;
        d->smarthost = true;
        d->port = cfg->relay.smarthost.port != 0 ? cfg->relay.smarthost.port : 25;
        next_target(d);
        return;
    }
    d->port = cfg->relay.outbound_port;
    d->q = dns_lookup_mx(r->dns, d->domain, on_mx, d);
    if (d->q == NULL)
        route_failed(d, false, "4.3.0", "cannot start a DNS lookup");
}

/* A delivery for claims[from..to) (one message, one domain). NULL when out of memory. */
static struct delivery *delivery_new(struct queue_runner *r, const struct store_queue_claims *cl,
                                     size_t from, size_t to)
{
    struct delivery *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    size_t n = to - from;
    d->r = r;
    d->n = n;
    d->message_id = cl->v[from].message_id;
    d->created_ms = cl->v[from].created_ms;
    d->sender = strdup(cl->v[from].sender);
    d->domain = strdup(cl->v[from].domain);
    d->ids = calloc(n, sizeof(*d->ids));
    d->attempts = calloc(n, sizeof(*d->attempts));
    d->addresses = calloc(n, sizeof(*d->addresses));
    d->rcpts = calloc(n, sizeof(*d->rcpts));
    d->relay = calloc(n, sizeof(*d->relay));
    d->dsn = calloc(n, sizeof(*d->dsn));
    d->cur = calloc(n, sizeof(*d->cur));
    d->cur_idx = calloc(n, sizeof(*d->cur_idx));
    d->expired = calloc(n, sizeof(*d->expired));
    d->scratch_ids = calloc(n, sizeof(*d->scratch_ids));
    d->fail = calloc(n, sizeof(*d->fail));
    d->errtext = calloc(n, sizeof(*d->errtext));
    if (d->sender == NULL || d->domain == NULL || d->ids == NULL || d->attempts == NULL ||
        d->addresses == NULL || d->rcpts == NULL || d->relay == NULL || d->dsn == NULL ||
        d->cur == NULL || d->cur_idx == NULL || d->expired == NULL || d->scratch_ids == NULL ||
        d->fail == NULL || d->errtext == NULL) {
        delivery_free(d);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_queue_claim *c = &cl->v[from + i];
        d->ids[i] = c->id;
        d->attempts[i] = c->attempts;
        if ((d->addresses[i] = strdup(c->recipient)) == NULL) {
            delivery_free(d);
            return NULL;
        }
        d->rcpts[i].address = d->addresses[i];
    }
    return d;
}

/* ---- claiming ------------------------------------------------------------------------------ */

static void schedule(struct queue_runner *r, uint64_t delay_ms)
{
    if (r->stopping || !r->timer_open)
        return;
    uv_timer_start(&r->timer, on_timer, delay_ms, 0);
}

static void schedule_next(struct queue_runner *r)
{
    uint64_t delay = STORE_QUEUE_RESCAN_MS;
    int64_t due = INT64_MAX;
    if (r->n_active < QUEUE_RUNNER_MAX_ATTEMPTS &&
        store_queue_next_due(r->app->reads, &due) == STORE_OK && due != INT64_MAX) {
        int64_t now = store_now_ms();
        /* Due now but not claimed: its domain is at its limit; a finishing attempt kicks us. */
        if (due > now && due - now < STORE_QUEUE_RESCAN_MS)
            delay = (uint64_t)(due - now);
    }
    schedule(r, delay);
}

static int claim_run(struct store *st, struct writer_job *job)
{
    struct queue_runner *r = CONTAINER_OF(job, struct queue_runner, claim_job);
    /* Only the job's own fields are read here (the loop changes the rest meanwhile): the
     * concurrency limits are applied at done. */
    return store_queue_claim_due(st, store_now_ms(), STORE_QUEUE_LEASE_MS,
                                 QUEUE_RUNNER_CLAIM_ENTRIES, (const char *const *)r->skip,
                                 r->n_skip, &r->claims);
}

static void free_skip(struct queue_runner *r)
{
    for (size_t i = 0; i < r->n_skip; i++)
        free(r->skip[i]);
    free(r->skip);
    r->skip = NULL;
    r->n_skip = 0;
}

static void claim_done(struct writer_job *job, int status)
{
    struct queue_runner *r = CONTAINER_OF(job, struct queue_runner, claim_job);
    r->claim_busy = false;
    r->jobs--;
    free_skip(r);
    struct store_queue_claims *cl = &r->claims;
    if (status != 0) {
        log_error("queue", 0, "event=claim-failed status=%d error=\"%s\"", status,
                  postern_strerror(status));
        store_queue_claims_free(cl);
        schedule(r, STORE_QUEUE_RESCAN_MS);
        check_stopped(r);
        return;
    }
    int64_t *excess = calloc(cl->n > 0 ? cl->n : 1, sizeof(*excess));
    size_t n_excess = 0;
    size_t got = cl->n;
    for (size_t i = 0; i < cl->n;) {
        size_t j = i + 1;
        while (j < cl->n && cl->v[j].message_id == cl->v[i].message_id &&
               strcmp(cl->v[j].domain, cl->v[i].domain) == 0)
            j++;
        struct delivery *d = NULL;
        if (!r->stopping && r->n_active < QUEUE_RUNNER_MAX_ATTEMPTS &&
            domain_active(r, cl->v[i].domain) < QUEUE_RUNNER_MAX_PER_DOMAIN)
            d = delivery_new(r, cl, i, j);
        if (d == NULL) {
            for (size_t k = i; k < j && excess != NULL; k++)
                excess[n_excess++] = cl->v[k].id;
        } else {
            d->next = r->active;
            r->active = d;
            r->n_active++;
            delivery_start(d);
        }
        i = j;
    }
    store_queue_claims_free(cl);
    if (excess != NULL)
        release_ids(r, excess, n_excess); /* takes excess */
    if (r->stopping) {
        check_stopped(r);
        return;
    }
    if (got == QUEUE_RUNNER_CLAIM_ENTRIES && r->n_active < QUEUE_RUNNER_MAX_ATTEMPTS &&
        n_excess == 0)
        claim_now(r);
    else
        schedule_next(r);
}

static void claim_now(struct queue_runner *r)
{
    if (r->claim_busy || r->stopping || !r->started)
        return;
    if (r->n_active >= QUEUE_RUNNER_MAX_ATTEMPTS) {
        schedule(r, STORE_QUEUE_RESCAN_MS);
        return;
    }
    /* Domains at their limit are left out of the claim. The copies belong to the job. */
    size_t n_skip = 0;
    for (const struct delivery *d = r->active; d != NULL; d = d->next)
        n_skip++;
    if (n_skip > 0) {
        r->skip = calloc(n_skip, sizeof(*r->skip));
        if (r->skip == NULL) {
            schedule(r, STORE_QUEUE_RESCAN_MS);
            return;
        }
        for (const struct delivery *d = r->active; d != NULL; d = d->next) {
            if (domain_active(r, d->domain) < QUEUE_RUNNER_MAX_PER_DOMAIN)
                continue;
            bool dup = false;
            for (size_t i = 0; i < r->n_skip && !dup; i++)
                dup = strcmp(r->skip[i], d->domain) == 0;
            if (dup)
                continue;
            if ((r->skip[r->n_skip] = strdup(d->domain)) == NULL) {
                free_skip(r);
                schedule(r, STORE_QUEUE_RESCAN_MS);
                return;
            }
            r->n_skip++;
        }
    }
    r->claim_job.run = claim_run;
    r->claim_job.done = claim_done;
    if (submit(r, &r->claim_job) != 0) {
        free_skip(r);
        return;
    }
    r->claim_busy = true;
    if (r->timer_open)
        uv_timer_stop(&r->timer);
}

static void on_timer(uv_timer_t *t)
{
    claim_now(t->data);
}

static int start_run(struct store *st, struct writer_job *job)
{
    struct queue_runner *r = CONTAINER_OF(job, struct queue_runner, start_job);
    return store_queue_release_stale(st, store_now_ms(), &r->released_stale);
}

static void start_done(struct writer_job *job, int status)
{
    struct queue_runner *r = CONTAINER_OF(job, struct queue_runner, start_job);
    r->jobs--;
    if (status != 0)
        log_error("queue", 0, "event=release-stale-failed status=%d error=\"%s\"", status,
                  postern_strerror(status));
    else if (r->released_stale > 0)
        log_info("queue", 0, "event=released-stale entries=%zu", r->released_stale);
    r->started = true;
    if (r->stopping) {
        check_stopped(r);
        return;
    }
    claim_now(r);
}

/* ---- public -------------------------------------------------------------------------------- */

int queue_runner_new(uv_loop_t *loop, struct app *app, struct conn_set *conns,
                     struct queue_runner **out, char *err, size_t errlen)
{
    *out = NULL;
    struct queue_runner *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->loop = loop;
    r->app = app;
    r->conns = conns;
    char why[256];
    r->tls = tls_ctx_new_client(why, sizeof(why));
    if (r->tls == NULL) {
        snprintf(err, errlen, "cannot set up outbound TLS: %s", why);
        free(r);
        return -1;
    }
    if (dns_new(loop, &app->cfg->relay.dns_server, &r->dns, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "cannot set up DNS: %s", why);
        tls_ctx_unref(&r->tls);
        free(r);
        return -1;
    }
    int rc = uv_timer_init(loop, &r->timer);
    if (rc != 0) {
        snprintf(err, errlen, "cannot set up the queue timer: %s", uv_strerror(rc));
        dns_free(&r->dns);
        tls_ctx_unref(&r->tls);
        free(r); /* XXX: dns handles close later; they do not point into r */
        return -1;
    }
    r->timer.data = r;
    r->timer_open = true;
    r->handles_open = 1;
    uv_timer_start(&r->timer, on_timer, STORE_QUEUE_RESCAN_MS, 0);
    r->start_job.run = start_run;
    r->start_job.done = start_done;
    if (submit(r, &r->start_job) != 0) {
        snprintf(err, errlen, "cannot reach the writer");
        r->freeing = true;
        r->timer_open = false;
        uv_close((uv_handle_t *)&r->timer, on_handle_closed);
        dns_free(&r->dns);
        return -1;
    }
    log_info("queue", 0, "event=runner-started route=%s auth=%s max_attempts=%d max_per_domain=%d",
             app->cfg->relay.smarthost.host[0] != '\0' ? "smarthost" : "mx",
             app->smarthost_creds != NULL ? "plain" : "none", QUEUE_RUNNER_MAX_ATTEMPTS,
             QUEUE_RUNNER_MAX_PER_DOMAIN);
    *out = r;
    return 0;
}

void queue_runner_stop(struct queue_runner *r, void (*done)(void *), void *arg)
{
    if (r == NULL || r->stopping)
        return;
    r->stopping = true;
    r->stop_done = done;
    r->stop_arg = arg;
    if (r->timer_open) {
        r->timer_open = false;
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    }
    size_t abandoned = 0;
    for (struct delivery *d = r->active, *next; d != NULL; d = next) {
        next = d->next;
        if (d->phase != PH_ROUTING)
            continue; /* its result is being recorded */
        dns_cancel(d->q);
        d->q = NULL;
        smtp_client_cancel(&d->client);
        d->phase = PH_RELEASING;
        int64_t *ids = malloc(d->n * sizeof(*ids));
        if (ids != NULL) {
            memcpy(ids, d->ids, d->n * sizeof(*ids));
            release_ids(r, ids, d->n);
        }
        abandoned++;
        delivery_end(d);
    }
    dns_free(&r->dns);
    log_info("queue", 0, "event=runner-stopping abandoned=%zu recording=%zu", abandoned,
             r->n_active);
    check_stopped(r);
}

void queue_runner_free(struct queue_runner **rp)
{
    struct queue_runner *r = *rp;
    if (r == NULL)
        return;
    *rp = NULL;
    if (!r->stopping)
        queue_runner_stop(r, NULL, NULL);
    r->stop_done = NULL;
    r->freeing = true;
    runner_maybe_free(r);
}
