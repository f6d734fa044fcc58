/*
 * queue_runner.c - the runner (see queue_runner.h): its timer, the wake-up from the queue
 * channel's listener (a flush on any node), the claim job (one at a time), grouping the claimed
 * entries into deliveries of one message and one recipient domain within the concurrency limits,
 * the list of deliveries in flight with their deadline timers, claims handed back unused (over a
 * limit, or at stop), and start and stop.
 *
 * What a delivery does is elsewhere: routing and connecting in queue_route.c, its result and
 * the job that records it in queue_attempt.c (queue_runner_internal.h says who touches what).
 *
 * Ownership: the runner owns its deliveries (a list) and, through them, their smtp_client
 * handles until the client reports; the writer borrows the embedded jobs between submit and
 * done. A delivery is freed when its job is done and its deadline timer closed; the runner is
 * freed when its handles are closed and queue_runner_free was called. The listener (and its
 * thread) is the runner's from listen_start to queue_runner_free, which joins it before closing
 * the uv_async it wakes.
 */
#include "server/outbound/queue_runner.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "server/app.h"
#include "server/net/dns.h"
#include "server/net/tls.h"
#include "server/outbound/queue_runner_internal.h"
#include "storage/queue.h"
#include "storage/store.h"
#include "storage/writer.h"

struct release_job {
    struct writer_job job;
    struct queue_runner *r;
    int64_t *ids; /* owned */
    size_t n;
};

static void claim_now(struct queue_runner *r);
static void on_timer(uv_timer_t *t);

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

int queue_runner_submit(struct queue_runner *r, struct writer_job *job)
{
    if (r->app->writer == NULL || writer_submit(r->app->writer, job) != 0)
        return -1;
    r->jobs++;
    return 0;
}

/* ---- releasing claims ---------------------------------------------------------------------- */

static int release_run(struct store *st, struct writer_job *job)
{
    struct release_job *rj = container_of(job, struct release_job, job);
    return store_queue_release(st, rj->r->app->cfg->server.node, rj->ids, rj->n);
}

static void release_done(struct writer_job *job, int status)
{
    struct release_job *rj = container_of(job, struct release_job, job);
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
    if (queue_runner_submit(r, &rj->job) != 0) {
        log_warn("queue", 0, "event=release-failed entries=%zu error=\"writer stopped\"", n);
        free(rj->ids);
        free(rj);
    }
}

/* ---- deliveries in flight ------------------------------------------------------------------ */

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
    queue_attempt_free(d);
    /* check_stopped ends in runner_maybe_free, which may free r: r is not touched after it
     * (freeing implies stopping, so nothing is missed when check_stopped returns early). */
    check_stopped(r);
}

void queue_runner_delivery_end(struct delivery *d)
{
    delivery_unlink(d);
    if (d->timer_open) {
        d->timer_open = false;
        uv_timer_stop(&d->deadline);
        uv_close((uv_handle_t *)&d->deadline, on_deadline_closed);
        return;
    }
    struct queue_runner *r = d->r;
    queue_attempt_free(d);
    check_stopped(r);
}

void queue_runner_recorded(struct delivery *d)
{
    struct queue_runner *r = d->r;
    r->jobs--;
    /* Read before the delivery ends: ending it may free a runner that is stopping. */
    bool kick = !r->stopping;
    queue_runner_delivery_end(d);
    if (kick)
        claim_now(r);
}

static void on_deadline(uv_timer_t *t)
{
    struct delivery *d = t->data;
    if (d->phase == PH_ROUTING)
        queue_route_deadline(d);
}

/* Starts a delivery just claimed: its deadline, then routing. */
static void delivery_start(struct queue_runner *r, struct delivery *d)
{
    d->next = r->active;
    r->active = d;
    r->n_active++;
    if (uv_timer_init(r->loop, &d->deadline) == 0) {
        d->deadline.data = d;
        d->timer_open = true;
        r->handles_open++;
        uv_timer_start(&d->deadline, on_deadline, r->attempt_deadline_ms, 0);
    }
    queue_route_start(d);
}

static size_t domain_active(const struct queue_runner *r, const char *domain)
{
    size_t k = 0;
    for (const struct delivery *d = r->active; d != NULL; d = d->next)
        if (strcmp(d->domain, domain) == 0)
            k++;
    return k;
}

/* ---- claiming ------------------------------------------------------------------------------ */

static void schedule(struct queue_runner *r, uint64_t delay_ms)
{
    if (r->stopping || !r->timer_open)
        return;
    uv_timer_start(&r->timer, on_timer, delay_ms, 0);
}

/* On a reader thread, or inline on the loop: next_due only. */
static int next_due_run(struct store *st, struct reader_job *job)
{
    struct queue_runner *r = container_of(job, struct queue_runner, next_due_job);
    r->next_due = INT64_MAX;
    return store_queue_next_due(st, &r->next_due);
}

/* The next due entry is known (or not: then the rescan interval): arm the timer. */
static void next_due_known(struct queue_runner *r, int status)
{
    uint64_t delay = r->rescan_ms;
    int64_t due = r->next_due;
    if (status == STORE_OK && due != INT64_MAX) {
        int64_t now = store_now_ms();
        /* Due now but not claimed: its domain is at its limit; a finishing attempt kicks us. */
        if (due > now && (uint64_t)(due - now) < r->rescan_ms)
            delay = (uint64_t)(due - now);
    }
    schedule(r, delay);
}

static void next_due_done(struct reader_job *job, int status)
{
    struct queue_runner *r = container_of(job, struct queue_runner, next_due_job);
    r->next_due_out = false;
    r->jobs--;
    if (!r->stopping)
        next_due_known(r, status);
    check_stopped(r); /* may free r: not touched after */
}

/* When to look again: the next due entry's time, read through the loop's reader (with reader
 * threads the timer is armed when the read is back; one such read at a time). */
static void schedule_next(struct queue_runner *r)
{
    if (r->n_active >= QUEUE_RUNNER_MAX_ATTEMPTS) {
        schedule(r, r->rescan_ms);
        return;
    }
    if (r->next_due_out)
        return; /* its done arms the timer */
    r->next_due_job.run = next_due_run;
    r->next_due_job.done = next_due_done;
    int status;
    if (reader_submit(r->app->reader, &r->next_due_job, &status) == READER_PENDING) {
        r->next_due_out = true;
        r->jobs++; /* counted with the writer jobs: a stop waits for it */
        return;
    }
    next_due_known(r, status);
}

static int claim_run(struct store *st, struct writer_job *job)
{
    struct queue_runner *r = container_of(job, struct queue_runner, claim_job);
    /* Only the job's own fields are read here (the loop changes the rest meanwhile): the
     * concurrency limits are applied at done. */
    return store_queue_claim_due(st, r->app->cfg->server.node, store_now_ms(), r->lease_ms,
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
    struct queue_runner *r = container_of(job, struct queue_runner, claim_job);
    r->claim_busy = false;
    r->jobs--;
    free_skip(r);
    /* Woken while this claim was out: what woke us may have committed after it looked. */
    bool again = r->claim_again && !r->stopping;
    r->claim_again = false;
    struct store_queue_claims *cl = &r->claims;
    if (status != 0) {
        log_error("queue", 0, "event=claim-failed status=%d error=\"%s\"", status,
                  postern_strerror(status));
        store_queue_claims_free(cl);
        if (again)
            claim_now(r);
        else
            schedule(r, r->rescan_ms);
        check_stopped(r);
        return;
    }
    /* A claim that never ended, taken over (its node's lease or its own ran out): said once
     * here, as release_stale's count is at a start; its attempt is counted (storage/queue.h). */
    for (size_t i = 0; i < cl->n; i++)
        if (cl->v[i].taken_over)
            log_warn(
                "queue", 0,
                "event=claim-taken-over id=%" PRId64 " msg=%" PRId64 " from=%s attempts=%" PRId64,
                cl->v[i].id, cl->v[i].message_id,
                cl->v[i].taken_from[0] != '\0' ? cl->v[i].taken_from : "none", cl->v[i].attempts);
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
            d = queue_attempt_new(r, cl, i, j);
        if (d == NULL) {
            for (size_t k = i; k < j && excess != NULL; k++)
                excess[n_excess++] = cl->v[k].id;
        } else {
            delivery_start(r, d);
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
    if (again || (got == QUEUE_RUNNER_CLAIM_ENTRIES && r->n_active < QUEUE_RUNNER_MAX_ATTEMPTS &&
                  n_excess == 0))
        claim_now(r);
    else
        schedule_next(r);
}

static void claim_now(struct queue_runner *r)
{
    if (r->claim_busy || r->stopping || !r->started)
        return;
    if (r->n_active >= QUEUE_RUNNER_MAX_ATTEMPTS) {
        schedule(r, r->rescan_ms);
        return;
    }
    /* Domains at their limit are left out of the claim. The copies belong to the job. */
    size_t n_skip = 0;
    for (const struct delivery *d = r->active; d != NULL; d = d->next)
        n_skip++;
    if (n_skip > 0) {
        r->skip = calloc(n_skip, sizeof(*r->skip));
        if (r->skip == NULL) {
            schedule(r, r->rescan_ms);
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
                schedule(r, r->rescan_ms);
                return;
            }
            r->n_skip++;
        }
    }
    r->claim_job.run = claim_run;
    r->claim_job.done = claim_done;
    if (queue_runner_submit(r, &r->claim_job) != 0) {
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

/* ---- hearing a flush from any node --------------------------------------------------------- */

/* On the loop: the listener heard the queue channel, or (re)connected and may have missed it.
 * uv_async_send coalesces wake-ups, and a claim already out is followed by another: however many
 * flushes were announced, the runner claims once more after the last. */
static void on_wake(uv_async_t *h)
{
    struct queue_runner *r = h->data;
    if (r->stopping)
        return;
    if (r->claim_busy)
        r->claim_again = true;
    else
        claim_now(r);
}

/* On the listener's thread (store.h, store_listener_start): only the wake-up crosses. */
static void on_heard(void *arg, enum store_listener_event event)
{
    struct queue_runner *r = arg;
    (void)event;
    int rc = uv_async_send(&r->wake);
    if (rc != 0)
        log_error("queue", 0, "event=async-send-failed error=%s", uv_err_name(rc));
}

/* Listens for flushes on a backend that can (store_can_listen). Without it the runner still
 * finds a flush at its next rescan, so a failure here is logged and the node serves on. */
static void listen_start(struct queue_runner *r)
{
    const char *db = r->app->cfg->server.database;
    if (!store_can_listen(db))
        return;
    int rc = uv_async_init(r->loop, &r->wake, on_wake);
    if (rc != 0) {
        log_error("queue", 0, "event=listener-failed error=\"%s\"", uv_strerror(rc));
        return;
    }
    r->wake.data = r;
    r->wake_open = true;
    r->handles_open++;
    /* A wake-up is a hint: it must not keep the loop running once everything else has ended. */
    uv_unref((uv_handle_t *)&r->wake);
    char err[256];
    if (store_listener_start(db, STORE_CHANNEL_QUEUE, on_heard, r, &r->listener, err,
                             sizeof(err)) != STORE_OK) {
        char esc[512];
        log_error("queue", 0, "event=listener-failed error=%s",
                  log_escape(esc, sizeof(esc), err, strlen(err)));
    }
}

/* At the end: no wake-up can come once the listener's thread is joined. */
static void listen_stop(struct queue_runner *r)
{
    store_listener_stop(&r->listener);
    if (r->wake_open) {
        r->wake_open = false;
        uv_close((uv_handle_t *)&r->wake, on_handle_closed);
    }
}

static int start_run(struct store *st, struct writer_job *job)
{
    struct queue_runner *r = container_of(job, struct queue_runner, start_job);
    return store_queue_release_stale(st, r->app->cfg->server.node, store_now_ms(),
                                     &r->released_stale);
}

static void start_done(struct writer_job *job, int status)
{
    struct queue_runner *r = container_of(job, struct queue_runner, start_job);
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

/* The milliseconds of the test switch name (queue_runner.h) when it is set to a number in
 * [min, max], with a warning (event) saying so; otherwise dflt. */
static uint64_t test_ms(const char *name, const char *event, uint64_t min, uint64_t max,
                        uint64_t dflt)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0')
        return dflt;
    char *end = NULL;
    unsigned long long ms = strtoull(v, &end, 10);
    if (*end != '\0' || ms < min || ms > max)
        return dflt;
    log_warn("queue", 0, "event=%s ms=%llu", event, ms);
    return ms;
}

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
    r->attempt_deadline_ms =
        test_ms("POSTERN_TEST_ATTEMPT_DEADLINE_MS", "test-attempt-deadline", 1,
                QUEUE_RUNNER_ATTEMPT_DEADLINE_MS, QUEUE_RUNNER_ATTEMPT_DEADLINE_MS);
    /* A shorter lease for tests of a node that died mid-delivery, still longer than an attempt
     * may last, so that it never lets a second attempt start beside a live first one. */
    r->lease_ms =
        (int64_t)test_ms("POSTERN_TEST_QUEUE_LEASE_MS", "test-queue-lease",
                         r->attempt_deadline_ms + 1, STORE_QUEUE_LEASE_MS, STORE_QUEUE_LEASE_MS);
    /* A long rescan for tests that must see a flush arrive by notification, not by rescan. */
    r->rescan_ms = test_ms("POSTERN_TEST_QUEUE_RESCAN_MS", "test-queue-rescan", 1,
                           QUEUE_RUNNER_TEST_RESCAN_MAX_MS, STORE_QUEUE_RESCAN_MS);
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
    uv_timer_start(&r->timer, on_timer, r->rescan_ms, 0);
    r->start_job.run = start_run;
    r->start_job.done = start_done;
    if (queue_runner_submit(r, &r->start_job) != 0) {
        snprintf(err, errlen, "cannot reach the writer");
        r->freeing = true;
        r->timer_open = false;
        uv_close((uv_handle_t *)&r->timer, on_handle_closed);
        dns_free(&r->dns);
        return -1;
    }
    listen_start(r);
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
    size_t abandoned = 0, awaiting = 0;
    for (struct delivery *d = r->active, *next; d != NULL; d = next) {
        next = d->next;
        if (d->phase != PH_ROUTING)
            continue; /* its result is being recorded */
        if (smtp_client_awaits_dot_reply(d->client)) {
            /* The end of data is sent: releasing the claim as "not delivered" could send the
             * message twice. The client waits for the reply (bounded, smtp_client.h) and its
             * result is recorded like any other. */
            awaiting++;
            continue;
        }
        queue_route_cancel(d);
        d->phase = PH_RELEASING;
        int64_t *ids = malloc(d->n * sizeof(*ids));
        if (ids != NULL) {
            memcpy(ids, d->ids, d->n * sizeof(*ids));
            release_ids(r, ids, d->n);
        }
        abandoned++;
        queue_runner_delivery_end(d);
    }
    dns_free(&r->dns);
    log_info("queue", 0, "event=runner-stopping abandoned=%zu awaiting=%zu recording=%zu",
             abandoned, awaiting, r->n_active - awaiting);
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
    listen_stop(r);
    runner_maybe_free(r);
}
