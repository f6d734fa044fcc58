/*
 * queue_attempt.c - the bookkeeping of one delivery (one message, one recipient domain, one
 * attempt): allocating it from its claims, giving the recipients nobody decided their result
 * (the last host's error, or a routing failure), and the writer job that records every result
 * (delivered, deferred on the backoff schedule, bounced with a DSN) in one savepoint, with one log
 * line per recipient once it is durable.
 *
 * It does not route or connect (queue_route.c) or keep the list of deliveries (queue_runner.c);
 * see queue_runner_internal.h for who touches what. The record job's run may be called twice
 * (the writer retries a batch): every output is recomputed from the recipients' results.
 */
#include "server/outbound/queue_runner_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "server/app.h"
#include "server/metrics/metrics.h"

void queue_attempt_free(struct delivery *d)
{
    if (d == NULL)
        return;
    if (d->addresses != NULL)
        for (size_t i = 0; i < d->n; i++)
            free(d->addresses[i]);
    free(d->addresses);
    if (d->orcpts != NULL)
        for (size_t i = 0; i < d->n; i++)
            free(d->orcpts[i]);
    free(d->orcpts);
    free(d->notify);
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
        metrics_delivery(status_word(d, i));
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

/* host[ip]:port (relay[i]) cut to the host for Remote-MTA, in buf. */
static const char *remote_host(const struct delivery *d, size_t i, char *buf, size_t len)
{
    snprintf(buf, len, "%s", d->relay[i]);
    char *br = strchr(buf, '[');
    if (br != NULL)
        *br = '\0';
    return buf;
}

/*
 * RFC 3461 5.2.2: a recipient that asked for NOTIFY=SUCCESS and went to a server that does not
 * offer DSN gets a "relayed" notice from us, since nobody further on will send one. Stored before
 * the entries are deleted: the notice quotes the original, whose body goes with its last entry.
 */
static int relayed_notices(struct store *st, struct delivery *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++) {
        const struct smtp_client_rcpt *rc_i = &d->rcpts[i];
        if (rc_i->status != SMTP_RCPT_SENT || rc_i->dsn_passed ||
            (d->notify[i] & SMTP_NOTIFY_SUCCESS) == 0)
            continue;
        d->fail[n++] = (struct dsn_recipient){
            .address = d->addresses[i],
            .remote_mta = remote_host(d, i, d->errtext[i], sizeof(d->errtext[i])),
            .reply_code = rc_i->code,
            .reply = rc_i->reply,
            .last_attempt_ms = d->now_ms,
            .orcpt = d->orcpts[i],
        };
    }
    if (n == 0)
        return STORE_OK;
    struct store_notice nt = {
        .hostname = d->hostname,
        .now_ms = d->now_ms,
        .message_id = d->message_id,
        .action = DSN_ACTION_RELAYED,
        .rcpts = d->fail,
        .n = n,
    };
    int rc = store_notice(st, &nt);
    if (rc == STORE_OK && nt.notice_message_id_out != 0)
        d->n_relayed = n;
    return rc == STORE_NOT_FOUND ? STORE_OK : rc;
}

/* Writer thread: record every recipient's result. */
static int record_run(struct store *st, struct writer_job *job)
{
    struct delivery *d = container_of(job, struct delivery, job);
    size_t n_ids = 0;
    d->route = STORE_BOUNCE_NONE;
    d->n_relayed = d->n_delayed = 0;
    for (size_t i = 0; i < d->n; i++) {
        d->expired[i] = false;
        if (d->rcpts[i].status == SMTP_RCPT_SENT)
            d->scratch_ids[n_ids++] = d->ids[i];
    }
    int rc = relayed_notices(st, d);
    if (rc != STORE_OK)
        return rc;
    if (n_ids > 0 && (rc = store_queue_delivered(st, d->scratch_ids, n_ids, NULL)) != STORE_OK)
        return rc;
    n_ids = 0;
    for (size_t i = 0; i < d->n; i++) {
        const struct smtp_client_rcpt *rc_i = &d->rcpts[i];
        if (rc_i->status == SMTP_RCPT_DEFER) {
            snprintf(d->errtext[i], sizeof(d->errtext[i]), "%s: %s",
                     d->relay[i][0] != '\0' ? d->relay[i] : d->domain, rc_i->reply);
            bool expired = false;
            rc = store_queue_defer(st, d->node, d->ids[i], d->now_ms, d->max_age_ms, d->errtext[i],
                                   &expired);
            if (rc == STORE_NOT_FOUND)
                continue; /* gone, or another node's since (queue.h): that node's attempt decides */
            if (rc != STORE_OK)
                return rc;
            d->expired[i] = expired;
            if (!expired) {
                char host[RELAY_TEXT_BYTES];
                struct dsn_recipient why = {
                    .remote_mta = rc_i->code != 0 ? remote_host(d, i, host, sizeof(host)) : NULL,
                    .reply_code = rc_i->code,
                    .reply = rc_i->reply,
                    .status = d->dsn[i][0] == '\0' ? NULL : d->dsn[i],
                    .last_attempt_ms = d->now_ms,
                };
                bool sent = false;
                rc = store_queue_delay_notice(st, d->ids[i], d->now_ms, d->delay_notice_ms,
                                              d->hostname, &why, &sent);
                if (rc != STORE_OK && rc != STORE_NOT_FOUND)
                    return rc;
                d->n_delayed += sent ? 1 : 0;
            }
        }
        if (rc_i->status == SMTP_RCPT_BOUNCE || d->expired[i]) {
            /* relay[i] is "host[ip]:port"; Remote-MTA wants the host only. */
            const char *host = remote_host(d, i, d->errtext[i], sizeof(d->errtext[i]));
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
            .node = d->node,
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
    case STORE_BOUNCE_NOT_ASKED:
        return "not-asked";
    }
    return "?";
}

static void record_done(struct writer_job *job, int status)
{
    struct delivery *d = container_of(job, struct delivery, job);
    d->job_busy = false;
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
        if (d->n_relayed > 0)
            log_info("queue", 0, "event=notice msg=%" PRId64 " action=relayed rcpts=%zu",
                     d->message_id, d->n_relayed);
        if (d->n_delayed > 0)
            log_info("queue", 0, "event=notice msg=%" PRId64 " action=delayed rcpts=%zu",
                     d->message_id, d->n_delayed);
    }
    queue_runner_recorded(d);
}

void queue_attempt_finish(struct delivery *d)
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
    d->delay_notice_ms = (int64_t)r->app->cfg->relay.delay_notice_ms;
    d->hostname = r->app->cfg->server.hostname;
    d->node = r->app->cfg->server.node;
    d->job.run = record_run;
    d->job.done = record_done;
    if (queue_runner_submit(r, &d->job) != 0) {
        log_error("queue", 0, "event=record-failed msg=%" PRId64 " error=\"writer stopped\"",
                  d->message_id);
        queue_runner_delivery_end(d);
        return;
    }
    d->job_busy = true;
}

void queue_attempt_failed(struct delivery *d, bool perm, const char *dsn, const char *fmt, ...)
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
    queue_attempt_finish(d);
}

struct delivery *queue_attempt_new(struct queue_runner *r, const struct store_queue_claims *cl,
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
    d->notify = calloc(n, sizeof(*d->notify));
    d->orcpts = calloc(n, sizeof(*d->orcpts));
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
        d->addresses == NULL || d->notify == NULL || d->orcpts == NULL || d->rcpts == NULL ||
        d->relay == NULL || d->dsn == NULL || d->cur == NULL || d->cur_idx == NULL ||
        d->expired == NULL || d->scratch_ids == NULL || d->fail == NULL || d->errtext == NULL) {
        queue_attempt_free(d);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_queue_claim *c = &cl->v[from + i];
        d->ids[i] = c->id;
        d->attempts[i] = c->attempts;
        d->notify[i] = c->notify;
        if ((d->addresses[i] = strdup(c->recipient)) == NULL ||
            (d->orcpts[i] = strdup(c->orcpt != NULL ? c->orcpt : "")) == NULL) {
            queue_attempt_free(d);
            return NULL;
        }
        d->rcpts[i].address = d->addresses[i];
    }
    return d;
}
