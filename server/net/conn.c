/*
 * conn.c - a connection's life: the set, accepting and connecting, the ready list that gives
 * connections their next turn, timers, references, the one close path, and the accessors. See
 * conn.h for the contract. Reading, writing and TLS switching are in conn_io.c, the transcript's
 * formatting in conn_transcript.c; conn_internal.h holds the structs the three share.
 *
 * Close path: OPEN -> FLUSHING (conn_close: reading stops, queued output drains, TLS close_notify)
 * -> LINGERING (FIN sent, input drained until the client's FIN, so unread input does not turn into
 * a RST that destroys our last reply) -> CLOSED (uv_close on both handles) -> freed when both close
 * callbacks ran and no conn_ref is left. Every stage has a timer bound; conn_abort jumps to
 * CLOSED. handler->on_close runs once, when leaving OPEN.
 */
#include "server/net/conn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "common/log.h"
#include "common/pure/cidr.h"
#include "server/metrics/metrics.h"
#include "server/net/conn_internal.h"
#include "server/net/tls.h"

const char *conn_service_name(enum conn_service service)
{
    switch (service) {
    case CONN_SERVICE_SMTP_MX:
        return "smtp";
    case CONN_SERVICE_SMTP_SUBMISSION:
        return "submission";
    case CONN_SERVICE_SMTP_SUBMISSIONS:
        return "submissions";
    case CONN_SERVICE_POP3:
        return "pop3";
    case CONN_SERVICE_POP3S:
        return "pop3s";
    case CONN_SERVICE_OUTBOUND:
        return "outbound";
    }
    return "?";
}

static void set_reason(struct conn *c, const char *reason)
{
    snprintf(c->reason, sizeof(c->reason), "%s", reason != NULL ? reason : "unknown");
}

void conn__reason_with_uv(char *buf, size_t len, const char *what, int uv_err)
{
    snprintf(buf, len, "%s: %s", what, uv_strerror(uv_err));
}

static void stop_timer(struct conn *c)
{
    if (c->handles_open > 0)
        uv_timer_stop(&c->timer);
}

static void on_timer(uv_timer_t *t);

/* The connection's one timer, for whatever bound the state needs; a failure is only logged. */
void conn__start_timer(struct conn *c, uint64_t ms)
{
    int rc = uv_timer_start(&c->timer, on_timer, ms, 0);
    if (rc != 0)
        log_warn(c->handler->proto, c->sid, "event=timer-failed error=\"%s\"", uv_strerror(rc));
}

/* The idle timer runs in OPEN/CONNECTING, unless paused or no timeout is set. */
void conn__arm_idle(struct conn *c)
{
    if (c->proxy != NULL)
        return; /* the header's own bound runs (conn_proxy.c) */
    if ((c->state == CONN_OPEN || c->state == CONN_CONNECTING) && c->timeout_ms > 0 && !c->paused)
        conn__start_timer(c, c->timeout_ms);
    else if (c->state == CONN_OPEN || c->state == CONN_CONNECTING)
        stop_timer(c);
}

/* ---- the ready list ------------------------------------------------------------------------ */

static void on_ready_idle(uv_idle_t *h);

void conn__ready_remove(struct conn *c)
{
    struct conn_set *set = c->set;
    if (!c->on_ready_list)
        return;
    if (c->ready_prev != NULL)
        c->ready_prev->ready_next = c->ready_next;
    else
        set->ready_first = c->ready_next;
    if (c->ready_next != NULL)
        c->ready_next->ready_prev = c->ready_prev;
    else
        set->ready_last = c->ready_prev;
    c->ready_prev = c->ready_next = NULL;
    c->on_ready_list = false;
    set->ready_count--;
}

static void idle_start(struct conn_set *set)
{
    if (set->idle_active)
        return;
    int rc = uv_idle_start(&set->ready_idle, on_ready_idle);
    if (rc == 0)
        set->idle_active = true;
    else
        log_error("conn", 0, "event=idle-failed error=\"%s\"", uv_strerror(rc));
}

void conn__ready_add(struct conn *c)
{
    struct conn_set *set = c->set;
    if (c->on_ready_list || c->state != CONN_OPEN)
        return;
    c->ready_prev = set->ready_last;
    c->ready_next = NULL;
    if (set->ready_last != NULL)
        set->ready_last->ready_next = c;
    else
        set->ready_first = c;
    set->ready_last = c;
    c->on_ready_list = true;
    set->ready_count++;
    idle_start(set);
}

static void on_ready_idle(uv_idle_t *h)
{
    struct conn_set *set = h->data;
    /*
     * Only the connections queued before this call get a turn now; one that uses up its turn
     * again is queued behind them for the next iteration, after the loop polled for I/O.
     */
    size_t n = set->ready_count;
    while (n-- > 0 && set->ready_first != NULL) {
        struct conn *c = set->ready_first;
        conn__ready_remove(c);
        conn__pump(c, NULL, 0);
    }
    if (set->shutdown_done_pending && set->count == 0) {
        set->shutdown_done_pending = false;
        if (set->shutdown_done != NULL)
            set->shutdown_done(set->shutdown_arg);
    }
    if (set->ready_first == NULL && !set->shutdown_done_pending && set->idle_active) {
        uv_idle_stop(&set->ready_idle);
        set->idle_active = false;
    }
}

/* ---- freeing ------------------------------------------------------------------------------- */

static void on_set_idle_closed(uv_handle_t *h)
{
    free(h->data);
}

static void set_release(struct conn_set *set)
{
    if (set->released)
        return;
    set->released = true;
    uv_close((uv_handle_t *)&set->ready_idle, on_set_idle_closed);
}

static void conn_free(struct conn *c)
{
    struct conn_set *set = c->set;
    if (c->on_free != NULL)
        c->on_free(c->on_free_arg, c->client_counted ? &c->peer : NULL);
    metrics_conn_freed((int)c->service);
    linereader_free(&c->lr);
    buf_free(&c->stash);
    conn__proxy_free(c);
    outq_free(&c->outq);
    tls_conn_free(&c->tls);
    tls_ctx_unref(&c->tls_ctx);
    free(c->sni);
    if (c->all_prev != NULL)
        c->all_prev->all_next = c->all_next;
    else
        set->all_first = c->all_next;
    if (c->all_next != NULL)
        c->all_next->all_prev = c->all_prev;
    set->count--;
    free(c);
    if (set->count > 0)
        return;
    if (set->shutdown_done_pending) {
        set->shutdown_done_pending = false;
        if (set->shutdown_done != NULL)
            set->shutdown_done(set->shutdown_arg); /* may call conn_set_free */
    }
    if (set->free_requested && set->count == 0 && !set->shutdown_done_pending)
        set_release(set);
}

static void release_ref(struct conn *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    if (c->callbacks_on && c->set->transcript)
        conn__transcript_unfinished(c);
    if (c->callbacks_on) {
        char esc[CONN_REASON_MAX_BYTES + 16];
        log_escape(esc, sizeof(esc), c->reason, strlen(c->reason));
        log_info(c->handler->proto, c->sid,
                 "event=disconnected reason=%s duration_ms=%" PRIu64 " bytes_in=%" PRIu64
                 " bytes_out=%" PRIu64 " lines=%" PRIu64,
                 esc, uv_now(c->set->loop) - c->started_ms, c->bytes_in, c->bytes_out, c->lines_in);
    }
    release_ref(c);
}

/* ---- closing ------------------------------------------------------------------------------- */

static void notify_close(struct conn *c)
{
    if (c->close_notified)
        return;
    c->close_notified = true;
    if (c->callbacks_on && c->handler->on_close != NULL)
        c->handler->on_close(c, c->reason);
    c->session = NULL;
}

void conn__finish_close(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    conn__ready_remove(c);
    c->reading = false;
    uv_timer_stop(&c->timer);
    /* Pending writes get their callbacks (UV_ECANCELED) before the close callback. */
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

void conn_abort(struct conn *c, const char *reason)
{
    if (c == NULL || c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_OPEN || c->state == CONN_CONNECTING)
        set_reason(c, reason);
    notify_close(c);
    conn__finish_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state != CONN_LINGERING)
        return;
    if (status < 0 || c->eof) {
        conn__finish_close(c);
        return;
    }
    conn__update_reading(c); /* drain and discard until the client's FIN */
}

static void start_linger(struct conn *c)
{
    c->state = CONN_LINGERING;
    c->req.shutdown.data = c;
    int rc = uv_shutdown(&c->req.shutdown, (uv_stream_t *)&c->tcp, on_shutdown);
    if (rc != 0) {
        conn__finish_close(c);
        return;
    }
    conn__start_timer(c, CONN_LINGER_MS);
}

/* FLUSHING and nothing left to send: go on to LINGERING. */
void conn__maybe_flushed(struct conn *c)
{
    if (c->state == CONN_FLUSHING && !outq_is_writing(&c->outq) && conn__unsent_bytes(c) == 0)
        start_linger(c);
}

void conn_close(struct conn *c, const char *reason)
{
    if (c == NULL)
        return;
    if (c->state == CONN_CONNECTING) {
        conn_abort(c, reason);
        return;
    }
    if (c->state != CONN_OPEN)
        return;
    set_reason(c, reason);
    c->state = CONN_FLUSHING;
    conn__ready_remove(c);
    conn__update_reading(c);
    notify_close(c);
    if (c->tls != NULL)
        (void)tls_shutdown(c->tls); /* close_notify after the queued replies; failure: just close */
    conn__start_timer(c, CONN_CLOSE_FLUSH_MS);
    conn__flush(c);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    switch (c->state) {
    case CONN_CONNECTING:
        conn_abort(c, "connect-timeout");
        break;
    case CONN_OPEN:
        if (c->proxy != NULL) {
            conn__proxy_fail(c, "no complete header in time");
            break;
        }
        log_debug(c->handler->proto, c->sid, "event=timeout after_ms=%" PRIu64, c->timeout_ms);
        if (c->handler->on_timeout != NULL)
            c->handler->on_timeout(c);
        conn_close(c, "timeout");
        break;
    case CONN_FLUSHING:
        log_info(c->handler->proto, c->sid, "event=flush-timeout unsent=%zu",
                 conn__unsent_bytes(c));
        conn__finish_close(c);
        break;
    case CONN_LINGERING:
        conn__finish_close(c);
        break;
    case CONN_CLOSED:
        break;
    }
}

/* ---- the set ------------------------------------------------------------------------------- */

int conn_set_new(uv_loop_t *loop, const struct cfg *cfg, void *app, bool transcript,
                 struct conn_set **out)
{
    *out = NULL;
    if (sodium_init() < 0)
        return -EIO;
    struct conn_set *set = calloc(1, sizeof(*set));
    if (set == NULL)
        return -ENOMEM;
    set->loop = loop;
    set->cfg = cfg;
    set->app = app;
    set->transcript = transcript;
    int rc = uv_idle_init(loop, &set->ready_idle);
    if (rc != 0) {
        free(set);
        return rc;
    }
    set->ready_idle.data = set;
    *out = set;
    return 0;
}

void conn_set_shutdown(struct conn_set *set, void (*done)(void *arg), void *arg)
{
    set->shutting_down = true;
    set->shutdown_done = done;
    set->shutdown_arg = arg;
    set->shutdown_done_pending = true;
    struct conn *next;
    for (struct conn *c = set->all_first; c != NULL; c = next) {
        next = c->all_next; /* closing never frees synchronously, so next stays valid */
        if (c->state == CONN_CONNECTING || (c->state == CONN_OPEN && c->proxy != NULL)) {
            conn_abort(c, "shutdown"); /* no session yet to say goodbye */
        } else if (c->state == CONN_OPEN) {
            if (c->handler->on_shutdown != NULL)
                c->handler->on_shutdown(c);
            /* A kept connection closes on its own, within the bound its owner documents. */
            if (!c->keep_at_shutdown)
                conn_close(c, "shutdown");
        }
    }
    if (set->count == 0)
        idle_start(set); /* done runs from the idle callback, not from inside this call */
}

void conn_set_abort_all(struct conn_set *set, const char *reason)
{
    struct conn *next;
    for (struct conn *c = set->all_first; c != NULL; c = next) {
        next = c->all_next;
        conn_abort(c, reason);
    }
}

size_t conn_set_count(const struct conn_set *set)
{
    return set->count;
}

uv_loop_t *conn_set_loop(const struct conn_set *set)
{
    return set->loop;
}

uv_loop_t *conn_loop(const struct conn *c)
{
    return c->set->loop;
}

void conn_set_free(struct conn_set **setp)
{
    struct conn_set *set = *setp;
    if (set == NULL)
        return;
    *setp = NULL;
    set->free_requested = true;
    set->shutdown_done_pending = false;
    if (set->idle_active) {
        uv_idle_stop(&set->ready_idle);
        set->idle_active = false;
    }
    conn_set_abort_all(set, "shutdown");
    if (set->count == 0)
        set_release(set);
    /* Otherwise conn_free releases it with the last connection. */
}

/* ---- making connections -------------------------------------------------------------------- */

static uint64_t new_sid(void)
{
    uint64_t sid = 0;
    while (sid == 0)
        randombytes_buf(&sid, sizeof(sid));
    return sid;
}

/* Allocates and links a connection with its two handles initialised; NULL on failure. */
static struct conn *conn_alloc(struct conn_set *set, const struct conn_params *p, int *rc_out)
{
    if (set->shutting_down || set->free_requested) {
        *rc_out = -ECANCELED; /* the set is stopping: no new connections */
        return NULL;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        *rc_out = -ENOMEM;
        return NULL;
    }
    c->set = set;
    c->handler = p->handler;
    c->service = p->service;
    metrics_conn_created((int)c->service); /* conn_free counts it out, on every path */
    c->sid = new_sid();
    c->refs = 1;
    c->started_ms = uv_now(set->loop);
    c->max_line_bytes = p->handler->max_line_bytes;
    c->largest_line_bytes = p->handler->largest_line_bytes;
    c->on_free = p->on_free;
    c->on_free_arg = p->on_free_arg;
    c->implicit_tls = p->implicit_tls;
    snprintf(c->reason, sizeof(c->reason), "unknown");
    snprintf(c->peer_text, sizeof(c->peer_text), "?");
    buf_init(&c->stash, CONN_STASH_MAX_BYTES);
    outq_init(&c->outq, CONN_OUTPUT_MAX_BYTES + CONN_OUTQ_TLS_SLACK_BYTES);
    int rc = uv_tcp_init(set->loop, &c->tcp);
    if (rc != 0) {
        free(c);
        *rc_out = rc;
        return NULL;
    }
    rc = uv_timer_init(set->loop, &c->timer);
    if (rc != 0) {
        /* The tcp handle is initialised: it must be closed, and c freed in its callback. */
        c->tcp.data = c;
        c->handles_open = 1;
        c->state = CONN_CLOSED;
        c->on_free = NULL;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        set->count++;
        c->all_next = set->all_first;
        if (set->all_first != NULL)
            set->all_first->all_prev = c;
        set->all_first = c;
        *rc_out = rc;
        return NULL;
    }
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    if (p->tls_ctx != NULL)
        c->tls_ctx = tls_ctx_ref(p->tls_ctx);
    c->all_next = set->all_first;
    if (set->all_first != NULL)
        set->all_first->all_prev = c;
    set->all_first = c;
    set->count++;
    *rc_out = 0;
    return c;
}

/* Connected (accepted or outbound): the PROXY header first where asked (proxy: the params of a
 * proxy listener, else NULL), then conn__start. */
static void conn_opened(struct conn *c, const char *listener_name, const struct conn_params *proxy)
{
    c->state = CONN_OPEN;
    metrics_conn_accepted((int)c->service, c->implicit_tls);
    uv_tcp_nodelay(&c->tcp, 1); /* replies are coalesced here already; Nagle only adds delay */
    if (proxy != NULL)
        conn__proxy_begin(c, listener_name, proxy->on_client);
    else
        conn__start(c, listener_name, "");
}

void conn__start(struct conn *c, const char *listener_name, const char *via)
{
    log_info(c->handler->proto, c->sid, "event=connected ip=%s port=%u listener=%s service=%s%s",
             c->peer_text, (unsigned)c->peer_port, listener_name != NULL ? listener_name : "-",
             conn_service_name(c->service), via);
    if (c->implicit_tls && conn__start_tls(c) != 0) {
        conn_abort(c, "tls-error: setup");
        return;
    }
    conn__update_reading(c);
    if (c->state != CONN_OPEN)
        return;
    conn__arm_idle(c);
    if (c->handler->on_open != NULL)
        c->handler->on_open(c);
    conn__flush(c);
}

static void set_peer(struct conn *c, const struct sockaddr *sa)
{
    if (ip_from_sockaddr(sa, &c->peer) == 0) {
        ip_format(&c->peer, c->peer_text, sizeof(c->peer_text));
        if (sa->sa_family == AF_INET)
            c->peer_port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
        else if (sa->sa_family == AF_INET6)
            c->peer_port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    }
}

int conn_accept(struct conn_set *set, int fd, const struct conn_params *params, struct conn **out)
{
    int rc;
    *out = NULL;
    struct conn *c = conn_alloc(set, params, &rc);
    if (c == NULL) {
        close(fd);
        return rc;
    }
    rc = uv_tcp_open(&c->tcp, fd);
    if (rc != 0) {
        close(fd); /* not owned by the handle yet */
        c->on_free = NULL;
        conn_abort(c, "accept failed");
        return rc;
    }
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    rc = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen);
    if (rc != 0) {
        c->on_free = NULL;
        conn_abort(c, "accept failed");
        return rc;
    }
    set_peer(c, (struct sockaddr *)&ss);
    /* Counted at accept against the peer, unless a PROXY header is to name the client. */
    c->client_counted = !params->proxy_protocol;
    c->callbacks_on = true;
    *out = c;
    conn_opened(c, params->listener_name, params->proxy_protocol ? params : NULL);
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state != CONN_CONNECTING)
        return; /* aborted meanwhile; the close callback follows */
    if (status < 0) {
        char why[CONN_REASON_MAX_BYTES];
        conn__reason_with_uv(why, sizeof(why), "connect-failed", status);
        log_info(c->handler->proto, c->sid, "event=connect-failed ip=%s port=%u error=\"%s\"",
                 c->peer_text, (unsigned)c->peer_port, uv_strerror(status));
        conn_abort(c, why);
        return;
    }
    conn_opened(c, NULL, NULL);
}

int conn_connect(struct conn_set *set, const struct sockaddr *addr,
                 const struct conn_params *params, struct conn **out)
{
    int rc;
    *out = NULL;
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
        return -EAFNOSUPPORT;
    struct conn *c = conn_alloc(set, params, &rc);
    if (c == NULL)
        return rc;
    c->outbound = true;
    c->state = CONN_CONNECTING;
    set_peer(c, addr);
    if (params->sni_hostname != NULL && (c->sni = strdup(params->sni_hostname)) == NULL) {
        conn_abort(c, "out of memory");
        return -ENOMEM;
    }
    c->req.connect.data = c;
    rc = uv_tcp_connect(&c->req.connect, &c->tcp, addr, on_connect);
    if (rc != 0) {
        conn_abort(c, "connect-failed");
        return rc;
    }
    c->callbacks_on = true;
    *out = c;
    return 0;
}

/* ---- the session's API: timeout and references ----------------------------------------------- */

void conn_set_timeout(struct conn *c, uint64_t timeout_ms)
{
    if (c == NULL)
        return;
    c->timeout_ms = timeout_ms;
    conn__arm_idle(c);
}

void conn_ref(struct conn *c)
{
    c->refs++;
}

void conn_unref(struct conn **cp)
{
    struct conn *c = *cp;
    if (c == NULL)
        return;
    *cp = NULL;
    release_ref(c);
}

bool conn_is_closing(const struct conn *c)
{
    return c == NULL || (c->state != CONN_OPEN && c->state != CONN_CONNECTING);
}

/* ---- accessors ----------------------------------------------------------------------------- */

void *conn_session(const struct conn *c)
{
    return c->session;
}

void conn_set_session(struct conn *c, void *session)
{
    c->session = session;
}

uint64_t conn_sid(const struct conn *c)
{
    return c->sid;
}

const char *conn_proto(const struct conn *c)
{
    return c->handler->proto;
}

enum conn_service conn_service(const struct conn *c)
{
    return c->service;
}

const struct ip_addr *conn_peer_ip(const struct conn *c)
{
    return &c->peer;
}

const char *conn_peer_text(const struct conn *c)
{
    return c->peer_text;
}

uint16_t conn_peer_port(const struct conn *c)
{
    return c->peer_port;
}

const struct cfg *conn_cfg(const struct conn *c)
{
    return c->set->cfg;
}

void *conn_app(const struct conn *c)
{
    return c->set->app;
}

bool conn_transcript(const struct conn *c)
{
    return c->set->transcript;
}

void conn_get_stats(const struct conn *c, struct conn_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->bytes_in = c->bytes_in;
    out->bytes_out = c->bytes_out;
    out->lines_in = c->lines_in;
    out->bad_lines = c->bad_lines;
    out->output_bytes = conn__unsent_bytes(c);
    out->input_bytes =
        buf_unread(&c->stash) + c->chunk_len + (c->lr_live ? linereader_buffered(&c->lr) : 0);
    out->reading = c->reading;
    out->held_bytes = c->outq.pending.cap + c->outq.in_flight.cap + c->stash.cap +
                      (c->lr_live ? c->lr.in.cap : 0);
}

void conn_keep_at_shutdown(struct conn *c, bool keep)
{
    if (c != NULL)
        c->keep_at_shutdown = keep;
}
