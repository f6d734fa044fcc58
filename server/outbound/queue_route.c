/*
 * queue_route.c - routes one delivery and walks its addresses: relay.smarthost, else the
 * domain's MX hosts (dns.h; RFC 5321 5.1, with the implicit MX when there is none), each host's
 * addresses in turn, one smtp_client at a time, at most QUEUE_RUNNER_ADDRS_PER_ATTEMPT of them.
 * Each recipient's result is copied back as the client decides it; a host-level failure moves on
 * to the next address, a failed STARTTLS handshake retries the same address without TLS (RFC
 * 7435; never with smarthost credentials).
 *
 * A failure to read the message from the store is not a host's failure: it defers the attempt at
 * once with the store's own words (common/error.h says how the two kinds of codes are told
 * apart). It does not record results or keep the list of deliveries (queue_attempt.c,
 * queue_runner.c).
 */
#include "server/outbound/queue_runner_internal.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "server/app.h"

static void try_addr(struct delivery *d);
static void next_target(struct delivery *d);
static void body_unreadable(struct delivery *d, int rc, const char *detail);

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
    if (res->store_rc != 0) {
        body_unreadable(d, res->store_rc, res->error); /* no host was tried */
        return;
    }
    for (size_t j = 0; j < d->n_cur; j++) {
        if (d->cur[j].status == SMTP_RCPT_PENDING)
            continue;
        size_t i = d->cur_idx[j];
        d->rcpts[i] = d->cur[j];
        d->rcpts[i].address = d->addresses[i];
        snprintf(d->relay[i], sizeof(d->relay[i]), "%s", d->cur_relay);
        snprintf(d->dsn[i], sizeof(d->dsn[i]), "%s", d->cur[j].dsn);
    }
    if (d->r->stopping) {
        /* queue_runner_stop let only a client that had sent the end of data finish: record
         * what it learnt, and try no other address now. */
        if (res->host_failed) {
            snprintf(d->last_error, sizeof(d->last_error), "%s", res->error);
            d->last_code = res->code;
            snprintf(d->last_relay, sizeof(d->last_relay), "%s", d->cur_relay);
        }
        queue_attempt_finish(d);
        return;
    }
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
    queue_attempt_finish(d);
}

/* The store failed to give the message's body (rc is a STORE_* code, detail the store's words):
 * log it as such and defer every undecided recipient with a local-error status (RFC 3463
 * 4.3.0). */
static void store_failed(struct delivery *d, int rc, const char *detail)
{
    char esc[400];
    log_error("queue", 0, "event=store-failed msg=%" PRId64 " error=\"%s\" detail=%s",
              d->message_id, postern_strerror(rc),
              log_escape(esc, sizeof(esc), detail, strlen(detail)));
    queue_attempt_failed(d, false, "4.3.0",
                         "message %" PRId64 " cannot be read from the store (%s: %s)",
                         d->message_id, postern_strerror(rc), detail);
}

/* The client could not read the message (rc a STORE_* code): at its start, or later through its
 * done with reader threads. */
static void body_unreadable(struct delivery *d, int rc, const char *detail)
{
    if (rc == STORE_NOT_FOUND) {
        /* Dropped by an admin meanwhile: recording finds nothing left to change. */
        snprintf(d->last_error, sizeof(d->last_error), "the message is no longer queued");
        d->last_code = 0;
        queue_attempt_finish(d);
        return;
    }
    /* Our store failed, not the host, and every other address would fail alike. Defer now, in
     * the store's words. */
    store_failed(d, rc, detail);
}

/* Connects to the current address of the current target, or moves on. */
static void try_addr(struct delivery *d)
{
    struct queue_runner *r = d->r;
    char store_error[256] = "";
    for (;;) {
        d->n_cur = 0;
        for (size_t i = 0; i < d->n; i++) {
            if (d->rcpts[i].status != SMTP_RCPT_PENDING)
                continue;
            d->cur[d->n_cur] = (struct smtp_client_rcpt){
                .address = d->addresses[i],
                .notify = d->notify[i],
                .orcpt = d->orcpts[i],
            };
            d->cur_idx[d->n_cur++] = i;
        }
        if (d->n_cur == 0) {
            queue_attempt_finish(d);
            return;
        }
        if (d->addr_i >= d->n_addrs) {
            d->target_i++;
            next_target(d);
            return;
        }
        if (d->tried >= QUEUE_RUNNER_ADDRS_PER_ATTEMPT) {
            queue_attempt_finish(d);
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
            .reads = r->app->reader,
            .message_id = d->message_id,
            .store_error = store_error,
            .store_error_len = sizeof(store_error),
            .done = on_client_done,
            .arg = d,
        };
        int rc = smtp_client_start(&p, &d->client);
        if (rc == 0)
            return;
        if (postern_err_is_store(rc)) {
            body_unreadable(d, rc, store_error);
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
            queue_attempt_failed(d, false, "4.3.0", "out of memory");
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
        queue_attempt_failed(d, true, "5.1.2", "%s: no MX and no address record (%s)", host,
                             res->error);
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
        queue_attempt_finish(d); /* the undecided are deferred with the last error */
        return;
    }
    d->q = dns_lookup_addr(d->r->dns, d->targets[d->target_i].host, d->port, on_addr, d);
    if (d->q == NULL)
        queue_attempt_failed(d, false, "4.3.0", "cannot start a DNS lookup");
}

static void on_mx(void *ctx, const struct dns_mx_result *res)
{
    struct delivery *d = ctx;
    d->q = NULL;
    switch (res->status) {
    case DNS_OK:
        break;
    case DNS_NULL_MX:
        queue_attempt_failed(d, true, "5.1.10",
                             "%s: the domain accepts no mail (null MX, RFC 7505)", d->domain);
        return;
    case DNS_NXDOMAIN:
    case DNS_BADNAME:
        queue_attempt_failed(d, true, "5.1.2", "%s: %s", d->domain, res->error);
        return;
    default:
        queue_attempt_failed(d, false, "4.4.3", "%s: MX lookup failed (%s)", d->domain, res->error);
        return;
    }
    d->targets = malloc(res->count * sizeof(*d->targets));
    if (d->targets == NULL) {
        queue_attempt_failed(d, false, "4.3.0", "out of memory");
        return;
    }
    memcpy(d->targets, res->targets, res->count * sizeof(*d->targets));
    d->n_targets = res->count;
    d->implicit_mx = res->is_implicit;
    d->target_i = 0;
    next_target(d);
}

void queue_route_cancel(struct delivery *d)
{
    dns_cancel(d->q);
    d->q = NULL;
    smtp_client_cancel(&d->client);
}

void queue_route_deadline(struct delivery *d)
{
    if (smtp_client_awaits_dot_reply(d->client)) {
        /* The server may hold the message already: cancelling would drop its reply and send it
         * again later. The client's own final-dot timeout ends the wait. */
        log_warn("queue", 0,
                 "event=attempt-deadline msg=%" PRId64 " domain=%s awaiting=end-of-data-reply",
                 d->message_id, d->domain);
        return;
    }
    log_warn("queue", 0, "event=attempt-deadline msg=%" PRId64 " domain=%s", d->message_id,
             d->domain);
    queue_route_cancel(d);
    queue_attempt_failed(d, false, "4.4.7", "the delivery attempt took too long");
}

void queue_route_start(struct delivery *d)
{
    struct queue_runner *r = d->r;
    const struct cfg *cfg = r->app->cfg;
    if (cfg->relay.smarthost.host[0] != '\0') {
        d->targets = calloc(1, sizeof(*d->targets));
        if (d->targets == NULL) {
            queue_attempt_failed(d, false, "4.3.0", "out of memory");
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
        queue_attempt_failed(d, false, "4.3.0", "cannot start a DNS lookup");
}
