/*
 * milter_conn.c - the sockets and the timer of server/milter/: a session's milters created from
 * the configured list, a connection opened (TCP or a Unix socket), written (each message copied
 * into its own write request, so nothing the caller holds must outlive the call), read (frames
 * cut by common/pure/milter.c's milter_frame, handed to milter.c one at a time) and closed; the
 * one timer of the session. It decides nothing: failures go to milter_on_error.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/milter/milter_internal.h"

/* ---- creation and the end ---- */

struct milter_session *milter_session_new(uv_loop_t *loop, const struct cfg *cfg, bool submission,
                                          uint64_t sid)
{
    const char *list = submission ? cfg->milter.submission : cfg->milter.mx;
    struct milter_spec specs[MILTER_LIST_MAX];
    size_t n = 0;
    const char *why = NULL;
    if (list == NULL || list[0] == '\0' || milter_spec_parse(list, specs, &n, &why) != 0 || n == 0)
        return NULL;
    struct milter_session *ms = calloc(1, sizeof(*ms));
    uint8_t *ebuf = malloc(MILTER_HEADER_LEN + MILTER_FRAME_LEN_MAX);
    if (ms == NULL || ebuf == NULL || uv_timer_init(loop, &ms->timer) != 0) {
        log_warn("milter", sid, "event=milter-error reason=\"out of memory\"");
        free(ms);
        free(ebuf);
        return NULL;
    }
    ms->timer.data = ms;
    ms->timer_open = true;
    ms->ebuf = ebuf;
    ms->loop = loop;
    ms->cfg = cfg;
    ms->sid = sid;
    ms->n = n;
    for (size_t i = 0; i < n; i++) {
        struct milter_conn *m = &ms->m[i];
        m->ms = ms;
        m->spec = specs[i];
        if (specs[i].is_unix)
            snprintf(m->name, sizeof(m->name), "unix:%s", specs[i].path);
        else
            snprintf(m->name, sizeof(m->name), "inet:%s:%u", specs[i].host,
                     (unsigned)specs[i].port);
    }
    return ms;
}

static void session_memory_free(struct milter_session *ms)
{
    for (size_t i = 0; i < ms->n; i++)
        free(ms->m[i].rbuf);
    milter_mods_clear(ms);
    free(ms->mods);
    free(ms->hdrs);
    free(ms->hv);
    free(ms->ebuf);
    free(ms);
}

static void close_done(struct milter_session *ms)
{
    if (--ms->pending_closes == 0 && ms->freeing)
        session_memory_free(ms);
}

/* The timer's data is the session. */
static void on_closed(uv_handle_t *h)
{
    close_done(h->data);
}

/* A milter's stream's data is its struct milter_conn. */
static void on_conn_closed(uv_handle_t *h)
{
    struct milter_conn *m = h->data;
    close_done(m->ms);
}

void milter_session_free(struct milter_session **msp)
{
    struct milter_session *ms = *msp;
    *msp = NULL;
    if (ms == NULL)
        return;
    ms->freeing = true;
    ms->done = NULL;
    ms->busy = false;
    ms->waiting = NULL;
    uint8_t quit[8];
    size_t qlen = milter_enc_empty(quit, sizeof(quit), MILTER_CMD_QUIT);
    for (size_t i = 0; i < ms->n; i++) {
        struct milter_conn *m = &ms->m[i];
        if (m->state == MILTER_READY)
            (void)milter_conn_write(ms, m, quit, qlen);
        milter_conn_close(ms, m);
    }
    if (ms->timer_open) {
        ms->timer_open = false;
        ms->pending_closes++;
        uv_close((uv_handle_t *)&ms->timer, on_closed);
    }
    if (ms->pending_closes == 0)
        session_memory_free(ms);
}

void milter_conn_close(struct milter_session *ms, struct milter_conn *m)
{
    if (!m->handle_open)
        return;
    m->handle_open = false;
    ms->pending_closes++;
    /* A pending write or connect is cancelled by the close; their callbacks see the error. */
    uv_close(&m->u.handle, on_conn_closed);
}

/* ---- the timer ---- */

static void on_timer(uv_timer_t *t)
{
    milter_on_timeout(t->data);
}

void milter_timer_start(struct milter_session *ms)
{
    if (ms->timer_open)
        (void)uv_timer_start(&ms->timer, on_timer, ms->cfg->milter.timeout_ms, 0);
}

void milter_timer_stop(struct milter_session *ms)
{
    if (ms->timer_open)
        (void)uv_timer_stop(&ms->timer);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct milter_conn *m = h->data;
    (void)suggested;
    size_t want = 64 * 1024;
    if (m->rcap - m->rlen < want) {
        size_t cap = m->rlen + want;
        uint8_t *p = realloc(m->rbuf, cap);
        if (p == NULL) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        m->rbuf = p;
        m->rcap = cap;
    }
    *buf = uv_buf_init((char *)m->rbuf + m->rlen, (unsigned)(m->rcap - m->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct milter_conn *m = s->data;
    struct milter_session *ms = m->ms;
    (void)buf;
    if (nread == 0 || ms->freeing)
        return;
    if (nread < 0) {
        milter_on_error(ms, m, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        return;
    }
    m->rlen += (size_t)nread;
    size_t off = 0;
    /* A milter answers one message at a time, but PROGRESS and the modifications come in a
     * row; each frame is handled before the next, and a failure stops the loop. */
    while (m->handle_open && off < m->rlen) {
        uint8_t cmd;
        const uint8_t *payload;
        size_t len, used;
        int st = milter_frame(m->rbuf + off, m->rlen - off, &cmd, &payload, &len, &used);
        if (st == MILTER_FRAME_MORE)
            break;
        if (st == MILTER_FRAME_BAD) {
            milter_on_error(ms, m, "frame length out of bounds");
            return;
        }
        off += used;
        milter_on_reply(ms, m, cmd, payload, len);
        if (ms->freeing)
            return;
    }
    if (!m->handle_open) {
        m->rlen = 0;
        return;
    }
    memmove(m->rbuf, m->rbuf + off, m->rlen - off);
    m->rlen -= off;
}

/* ---- connecting ---- */

static void on_connect(uv_connect_t *req, int status)
{
    struct milter_conn *m = req->data;
    struct milter_session *ms = m->ms;
    if (ms->freeing || !m->handle_open)
        return;
    if (status != 0) {
        milter_on_error(ms, m, uv_strerror(status));
        return;
    }
    int rc = uv_read_start(&m->u.stream, on_alloc, on_read);
    uint8_t buf[32];
    size_t len =
        milter_enc_optneg(buf, sizeof(buf), MILTER_VERSION, MILTER_ACT_ALL & ~0u, MILTER_P_OFFER);
    if (rc != 0 || milter_conn_write(ms, m, buf, len) != 0) {
        milter_on_error(ms, m, "could not start the conversation");
        return;
    }
    m->state = MILTER_NEGOTIATING;
    milter_timer_start(ms);
}

int milter_conn_open(struct milter_session *ms, struct milter_conn *m)
{
    m->connect_req.data = m;
    if (m->spec.is_unix) {
        if (uv_pipe_init(ms->loop, &m->u.pipe, 0) != 0)
            return -1;
        m->u.handle.data = m;
        m->handle_open = true;
        m->state = MILTER_CONNECTING;
        uv_pipe_connect(&m->connect_req, &m->u.pipe, m->spec.path, on_connect);
        return 0;
    }
    struct sockaddr_storage ss;
    const char *host = strcmp(m->spec.host, "localhost") == 0 ? "127.0.0.1" : m->spec.host;
    if (uv_ip4_addr(host, m->spec.port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, m->spec.port, (struct sockaddr_in6 *)&ss) != 0)
        return -1;
    if (uv_tcp_init(ms->loop, &m->u.tcp) != 0)
        return -1;
    m->u.handle.data = m;
    m->handle_open = true;
    (void)uv_tcp_nodelay(&m->u.tcp, 1);
    if (uv_tcp_connect(&m->connect_req, &m->u.tcp, (const struct sockaddr *)&ss, on_connect) != 0) {
        milter_conn_close(ms, m);
        return -1;
    }
    m->state = MILTER_CONNECTING;
    return 0;
}

/* ---- writing ---- */

struct wreq {
    uv_write_t req;
    uint8_t data[]; /* the message, owned by the request */
};

static void on_write(uv_write_t *req, int status)
{
    struct milter_conn *m = req->data;
    free(req);
    if (status == 0 || status == UV_ECANCELED)
        return;
    if (!m->ms->freeing && m->handle_open)
        milter_on_error(m->ms, m, uv_strerror(status));
}

int milter_conn_write(struct milter_session *ms, struct milter_conn *m, const uint8_t *p, size_t n)
{
    (void)ms;
    if (!m->handle_open || n == 0)
        return -1;
    struct wreq *w = malloc(sizeof(*w) + n);
    if (w == NULL)
        return -1;
    memcpy(w->data, p, n);
    w->req.data = m;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    if (uv_write(&w->req, &m->u.stream, &b, 1, on_write) != 0) {
        free(w);
        return -1;
    }
    return 0;
}
