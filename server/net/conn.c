/*
 * conn.c - one TCP connection: socket, TLS filter, line reader, output queue, timers, close path.
 * See conn.h for the contract; this comment explains how it is put together.
 *
 * Input path. libuv reads into the set's shared buffer (one loop thread: a read callback always
 * finishes with the buffer before the next read). Plaintext bytes are the "chunk"; with TLS the
 * ciphertext is fed to the TLS filter at once and the chunk is whatever plaintext it gives back,
 * decrypted into a second shared buffer on demand. The pump hands input to the session in order:
 * the line reader's buffered octets, then the stash (input kept from an earlier turn), then the
 * chunk, then fresh TLS plaintext. When it has to stop early (CONN_LINES_PER_TURN used, the
 * session paused, too much output unsent) the rest of the chunk is copied into the stash, because
 * the shared buffers are reused by the next read; reading stops until the stash is empty again,
 * which bounds it by one read. A connection that used its turn goes on the set's ready list and
 * continues from a uv_idle callback, after the loop has polled everyone else's sockets.
 *
 * Output path. conn_write queues into a struct outq (through the TLS filter when it is on); at
 * most one uv_write is in flight and everything queued meanwhile goes out in the next one, so a
 * turn of pipelined commands costs one write. Inside the pump writes are only queued and flushed
 * once at its end.
 *
 * Close path: OPEN -> FLUSHING (conn_close: reading stops, queued output drains, TLS close_notify)
 * -> LINGERING (FIN sent, input drained until the client's FIN, so unread input does not turn into
 * a RST that destroys our last reply) -> CLOSED (uv_close on both handles) -> freed when both close
 * callbacks ran and no conn_ref is left. Every stage has a timer bound; conn_abort jumps to
 * CLOSED. handler->on_close runs once, when leaving OPEN.
 *
 * Memory: an idle connection keeps its struct (about 1.3 KiB with the libuv handles), small output
 * buffers and, with TLS, the tls_conn (about 14 KiB). The line reader's buffer (largest line +
 * 128 octets: 12.4 KiB for SMTP, whose AUTH lines may reach 12288) is allocated when input arrives
 * and released ("parked") whenever it holds nothing, which is the normal state of a client waiting
 * for a reply, and the output buffers are dropped when they grew large and drained.
 */
#include "server/net/conn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "common/pure/cidr.h"
#include "common/log.h"
#include "server/net/tls.h"

/* TLS plaintext decrypted per call, and ciphertext moved to the output queue per call. */
#define CONN_TLS_BUF_BYTES (16 * 1024)
/*
 * The stash holds at most one read (when a turn ends in the middle of it) plus what the line
 * reader held when data mode started (at most the largest line and slack).
 */
#define CONN_STASH_MAX_BYTES (2 * CONN_READ_BUF_BYTES)
/* Room for TLS record framing on top of CONN_OUTPUT_MAX_BYTES of plaintext. */
#define CONN_OUTQ_TLS_SLACK_BYTES (64 * 1024)
/* Output buffers larger than this are released once drained, so a burst does not stay resident. */
#define CONN_OUTQ_KEEP_BYTES (4 * 1024)
/* Transcript: a reply longer than this per line is cut in the log (log_escape adds "..."). */
#define CONN_TRANSCRIPT_LINE_BYTES 600

enum conn_state {
    CONN_CONNECTING, /* outbound, connect in progress */
    CONN_OPEN,
    CONN_FLUSHING,  /* conn_close: waiting for queued output to drain */
    CONN_LINGERING, /* FIN sent: discarding input until the client's FIN */
    CONN_CLOSED,    /* uv_close called on both handles */
};

struct conn_set {
    uv_loop_t *loop;       /* borrowed */
    const struct cfg *cfg; /* borrowed, for the sessions */
    void *app;             /* borrowed, for the sessions */
    bool transcript;
    struct conn *all_first; /* every connection not yet freed (doubly linked) */
    size_t count;
    struct conn *ready_first, *ready_last; /* connections waiting for their next turn */
    size_t ready_count;
    uv_idle_t ready_idle;
    bool idle_active;
    bool shutting_down;
    void (*shutdown_done)(void *arg);
    void *shutdown_arg;
    bool shutdown_done_pending; /* call shutdown_done from the idle callback */
    bool free_requested;
    bool released; /* uv_close called on ready_idle; freed in its callback */
    /* Shared scratch: only ever used inside one callback on the loop thread. */
    unsigned char read_buf[CONN_READ_BUF_BYTES];
    unsigned char plain_buf[CONN_TLS_BUF_BYTES];
    unsigned char cipher_buf[CONN_TLS_BUF_BYTES];
};

struct conn {
    /* libuv: the handles' data point here. */
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout in OPEN, then the flush and linger bounds */
    union {
        uv_connect_t connect;   /* outbound, before anything else happens */
        uv_shutdown_t shutdown; /* after the last write */
    } req;
    uv_write_t write_req; /* the one write in flight */
    size_t write_len;

    struct conn_set *set;             /* borrowed: the owner */
    struct conn *all_prev, *all_next; /* in set->all_first */
    struct conn *ready_prev, *ready_next;
    bool on_ready_list;
    const struct conn_handler *handler; /* borrowed (static) */
    void *session;                      /* the handler's; conn never frees it */

    enum conn_state state;
    enum conn_service service;
    bool outbound;
    bool callbacks_on;   /* handler callbacks may run (on_open ran or connect started) */
    bool close_notified; /* on_close ran */
    unsigned refs;       /* 1 for the open handles + one per conn_ref */
    unsigned handles_open;

    /* input */
    struct linereader lr; /* owned; allocated only while it holds something (lr_live) */
    bool lr_live;
    size_t max_line_bytes;
    size_t largest_line_bytes;
    struct buf stash;           /* owned: received, not yet handed over; older than chunk */
    const unsigned char *chunk; /* borrowed during a pump: unprocessed part of this read */
    size_t chunk_len;
    bool slice_from_stash; /* the slice being processed came from the stash */
    unsigned in_pump;      /* nesting depth of pump(); writes are flushed at its end */
    bool reading;          /* uv_read_start is active */
    bool mode_data;
    bool paused;
    bool eof;         /* the client sent FIN (or TLS close_notify) */
    bool backlog;     /* the last pump stopped before the input ran dry */
    bool output_full; /* stopped reading: too much output unsent */
    bool mask_next;   /* transcript: log the next line as "***" */
    bool want_drain;

    /* output */
    struct outq outq; /* owned: bytes for the socket (ciphertext with TLS) */

    /* TLS */
    struct tls_ctx *tls_ctx; /* owned reference; NULL: TLS impossible */
    struct tls_conn *tls;    /* owned; NULL until TLS starts */
    bool tls_ready;          /* handshake done and reported */
    bool implicit_tls;
    char *sni; /* owned, outbound only */

    /* identity and accounting */
    uint64_t sid;
    struct ip_addr peer;
    char peer_text[INET6_ADDRSTRLEN];
    uint16_t peer_port;
    uint64_t timeout_ms;
    uint64_t started_ms;
    uint64_t bytes_in, bytes_out, lines_in, bad_lines;
    char reason[CONN_REASON_MAX_BYTES];
    void (*on_free)(void *arg, const struct ip_addr *peer);
    void *on_free_arg;
};

static void pump(struct conn *c, const unsigned char *chunk, size_t len);
static void flush(struct conn *c);
static void finish_close(struct conn *c);
static void update_reading(struct conn *c);
static void ready_add(struct conn *c);

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

/* ---- small helpers ------------------------------------------------------------------------- */

static size_t unsent_bytes(const struct conn *c)
{
    size_t n = outq_unsent_bytes(&c->outq);
    if (c->tls != NULL)
        n += tls_pending_ciphertext(c->tls);
    return n;
}

static void set_reason(struct conn *c, const char *reason)
{
    snprintf(c->reason, sizeof(c->reason), "%s", reason != NULL ? reason : "unknown");
}

static void reason_with_uv(char *buf, size_t len, const char *what, int uv_err)
{
    snprintf(buf, len, "%s: %s", what, uv_strerror(uv_err));
}

static void stop_timer(struct conn *c)
{
    if (c->handles_open > 0)
        uv_timer_stop(&c->timer);
}

static void on_timer(uv_timer_t *t);

static void start_timer(struct conn *c, uint64_t ms)
{
    int rc = uv_timer_start(&c->timer, on_timer, ms, 0);
    if (rc != 0)
        log_warn(c->handler->proto, c->sid, "event=timer-failed error=\"%s\"", uv_strerror(rc));
}

/* The idle timer runs in OPEN/CONNECTING, unless paused or no timeout is set. */
static void arm_idle(struct conn *c)
{
    if ((c->state == CONN_OPEN || c->state == CONN_CONNECTING) && c->timeout_ms > 0 && !c->paused)
        start_timer(c, c->timeout_ms);
    else if (c->state == CONN_OPEN || c->state == CONN_CONNECTING)
        stop_timer(c);
}

/* ---- transcript ---------------------------------------------------------------------------- */

size_t conn_transcript_words(const char *line, size_t len, size_t words)
{
    size_t i = 0;
    for (size_t w = 0; w < words && i < len; w++) {
        while (i < len && line[i] == ' ')
            i++;
        while (i < len && line[i] != ' ')
            i++;
    }
    return i;
}

/* How much of line the handler lets the transcript show (all of it without a hook). */
static size_t transcript_visible(const struct conn *c, const char *line, size_t len, bool outgoing)
{
    if (c->handler->transcript_visible == NULL)
        return len;
    size_t visible = c->handler->transcript_visible(line, len, outgoing);
    return visible < len ? visible : len;
}

/* line as one log field; past the first `visible` bytes it is masked as " ***". */
static void transcript_escape(char *esc, size_t esclen, const char *line, size_t len,
                              size_t visible)
{
    if (visible >= len) {
        log_escape(esc, esclen, line, len);
        return;
    }
    char head[CONN_TRANSCRIPT_LINE_BYTES / 2];
    /* log_escape quotes text with a space ("AUTH PLAIN"); the quotes are added here. */
    log_escape(head, sizeof(head), line, visible);
    size_t hlen = strlen(head);
    bool quoted = hlen >= 2 && head[0] == '"' && head[hlen - 1] == '"';
    snprintf(esc, esclen, "\"%.*s ***\"", (int)(quoted ? hlen - 2 : hlen),
             quoted ? head + 1 : head);
}

/* Logs every line of data (split at LF, CR dropped) as event=send, masked as the handler says. */
static void transcript_send(struct conn *c, const unsigned char *data, size_t len)
{
    char esc[CONN_TRANSCRIPT_LINE_BYTES];
    size_t i = 0;
    while (i < len) {
        const unsigned char *lf = memchr(data + i, '\n', len - i);
        size_t end = lf != NULL ? (size_t)(lf - data) : len;
        size_t n = end - i;
        if (n > 0 && data[i + n - 1] == '\r')
            n--;
        const char *line = (const char *)data + i;
        size_t visible = transcript_visible(c, line, n, true);
        transcript_escape(esc, sizeof(esc), line, n, visible);
        log_info(c->handler->proto, c->sid, "event=send line=%s", esc);
        i = lf != NULL ? end + 1 : len;
    }
}

static void transcript_recv(struct conn *c, const char *event, const char *line, size_t len)
{
    char esc[CONN_TRANSCRIPT_LINE_BYTES];
    if (c->mask_next)
        snprintf(esc, sizeof(esc), "\"***\"");
    else
        transcript_escape(esc, sizeof(esc), line, len, transcript_visible(c, line, len, false));
    log_info(c->handler->proto, c->sid, "event=%s line=%s", event, esc);
}

/* ---- the ready list ------------------------------------------------------------------------ */

static void on_ready_idle(uv_idle_t *h);

static void ready_remove(struct conn *c)
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

static void ready_add(struct conn *c)
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
        ready_remove(c);
        pump(c, NULL, 0);
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
        c->on_free(c->on_free_arg, &c->peer);
    linereader_free(&c->lr);
    buf_free(&c->stash);
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

static void finish_close(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    ready_remove(c);
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
    finish_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state != CONN_LINGERING)
        return;
    if (status < 0 || c->eof) {
        finish_close(c);
        return;
    }
    update_reading(c); /* drain and discard until the client's FIN */
}

static void start_linger(struct conn *c)
{
    c->state = CONN_LINGERING;
    c->req.shutdown.data = c;
    int rc = uv_shutdown(&c->req.shutdown, (uv_stream_t *)&c->tcp, on_shutdown);
    if (rc != 0) {
        finish_close(c);
        return;
    }
    start_timer(c, CONN_LINGER_MS);
}

/* FLUSHING and nothing left to send: go on to LINGERING. */
static void maybe_flushed(struct conn *c)
{
    if (c->state == CONN_FLUSHING && !outq_is_writing(&c->outq) && unsent_bytes(c) == 0)
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
    ready_remove(c);
    update_reading(c);
    notify_close(c);
    if (c->tls != NULL)
        (void)tls_shutdown(c->tls); /* close_notify after the queued replies; failure: just close */
    start_timer(c, CONN_CLOSE_FLUSH_MS);
    flush(c);
}

/* ---- output -------------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status);

/* Moves the TLS filter's ciphertext into the output queue. 0, or -1 (the conn was aborted). */
static int drain_tls_output(struct conn *c)
{
    while (c->tls != NULL && tls_pending_ciphertext(c->tls) > 0) {
        size_t n = tls_take_ciphertext(c->tls, c->set->cipher_buf, sizeof(c->set->cipher_buf));
        int rc = outq_append(&c->outq, c->set->cipher_buf, n);
        if (rc != 0) {
            conn_abort(c, rc == -ENOBUFS ? "output-overflow" : "out of memory");
            return -1;
        }
    }
    return 0;
}

static void check_output_pressure(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    size_t unsent = unsent_bytes(c);
    if (!c->output_full && unsent > CONN_OUTPUT_HIGH_BYTES) {
        c->output_full = true;
        update_reading(c);
    } else if (c->output_full && unsent < CONN_OUTPUT_HIGH_BYTES / 2) {
        c->output_full = false;
        if (c->backlog && !c->paused)
            ready_add(c); /* input is waiting; the pump resumes reading when it runs dry */
        update_reading(c);
    }
}

/* Releases large output buffers once everything went out (see "Memory" at the top). */
static void trim_output(struct conn *c)
{
    if (outq_is_writing(&c->outq) || outq_unsent_bytes(&c->outq) > 0)
        return;
    if (c->outq.pending.cap + c->outq.in_flight.cap <= CONN_OUTQ_KEEP_BYTES)
        return;
    size_t limit = c->outq.limit_bytes;
    outq_free(&c->outq);
    outq_init(&c->outq, limit);
}

static void flush(struct conn *c)
{
    if (c->state == CONN_CLOSED || c->state == CONN_CONNECTING)
        return;
    if (drain_tls_output(c) != 0)
        return;
    if (!outq_is_writing(&c->outq)) {
        const unsigned char *data;
        size_t n = outq_write_begin(&c->outq, &data);
        if (n > 0) {
            uv_buf_t b = uv_buf_init((char *)data, (unsigned int)n);
            c->write_req.data = c;
            c->write_len = n;
            int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
            if (rc != 0) {
                char why[CONN_REASON_MAX_BYTES];
                outq_write_done(&c->outq);
                reason_with_uv(why, sizeof(why), "write-error", rc);
                conn_abort(c, why);
                return;
            }
        }
    }
    check_output_pressure(c);
    maybe_flushed(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    outq_write_done(&c->outq);
    if (status == 0)
        c->bytes_out += c->write_len;
    if (c->state == CONN_CLOSED)
        return; /* cancelled by the close; the close callback follows */
    if (status < 0) {
        char why[CONN_REASON_MAX_BYTES];
        reason_with_uv(why, sizeof(why), "write-error", status);
        conn_abort(c, why);
        return;
    }
    flush(c);
    if (c->state != CONN_OPEN)
        return;
    if (c->want_drain && unsent_bytes(c) < CONN_OUTPUT_HIGH_BYTES / 2) {
        c->want_drain = false;
        if (c->handler->on_drain != NULL) {
            c->handler->on_drain(c);
            flush(c);
        }
    }
    trim_output(c);
}

int conn_write(struct conn *c, const void *data, size_t len)
{
    if (c == NULL || (c->state != CONN_OPEN && c->state != CONN_CONNECTING))
        return -1;
    if (len == 0)
        return 0;
    if (c->set->transcript)
        transcript_send(c, data, len);
    if (len > CONN_OUTPUT_MAX_BYTES || unsent_bytes(c) > CONN_OUTPUT_MAX_BYTES - len) {
        conn_abort(c, "output-overflow");
        return -1;
    }
    int rc;
    if (c->tls != NULL) {
        rc = tls_write_plaintext(c->tls, data, len);
        if (rc != 0) {
            conn_abort(c, "tls-error: write");
            return -1;
        }
    } else {
        rc = outq_append(&c->outq, data, len);
        if (rc != 0) {
            conn_abort(c, rc == -ENOBUFS ? "output-overflow" : "out of memory");
            return -1;
        }
    }
    if (c->in_pump == 0)
        flush(c);
    return c->state == CONN_CLOSED ? -1 : 0;
}

int conn_vreply(struct conn *c, const char *fmt, va_list ap)
{
    char small[1024];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    int rc;
    if (n < 0) {
        rc = -1;
    } else if ((size_t)n < sizeof(small)) {
        rc = conn_write(c, small, (size_t)n);
    } else {
        char *big = malloc((size_t)n + 1);
        if (big == NULL) {
            conn_abort(c, "out of memory");
            rc = -1;
        } else {
            vsnprintf(big, (size_t)n + 1, fmt, ap2);
            rc = conn_write(c, big, (size_t)n);
            free(big);
        }
    }
    va_end(ap2);
    return rc;
}

int conn_reply(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = conn_vreply(c, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- input --------------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    buf->base = (char *)c->set->read_buf;
    buf->len = sizeof(c->set->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void update_reading(struct conn *c)
{
    bool want;
    if (c->state == CONN_LINGERING)
        want = true;
    else
        want = c->state == CONN_OPEN && !c->paused && !c->eof && !c->output_full && !c->backlog &&
               buf_unread(&c->stash) == 0;
    if (want && !c->reading) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (rc != 0) {
            char why[CONN_REASON_MAX_BYTES];
            reason_with_uv(why, sizeof(why), "read-error", rc);
            conn_abort(c, why);
            return;
        }
        c->reading = true;
    } else if (!want && c->reading && c->state != CONN_CLOSED) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static int lr_unpark(struct conn *c)
{
    int rc = linereader_init(&c->lr, c->max_line_bytes, c->largest_line_bytes);
    if (rc == 0)
        c->lr_live = true;
    return rc;
}

/* Releases the reader's buffer while it holds nothing (see "Memory" at the top). */
static void lr_park(struct conn *c)
{
    if (c->lr_live && linereader_buffered(&c->lr) == 0 && !linereader_is_skipping(&c->lr)) {
        linereader_free(&c->lr);
        c->lr_live = false;
    }
}

static void tls_check_ready(struct conn *c)
{
    if (c->tls == NULL || c->tls_ready || !tls_handshake_done(c->tls))
        return;
    c->tls_ready = true;
    char desc[TLS_DESCRIBE_MAX_BYTES];
    tls_describe(c->tls, desc, sizeof(desc));
    char *space = strchr(desc, ' ');
    const char *cipher = "?";
    if (space != NULL) {
        *space = '\0';
        cipher = space + 1;
    }
    log_info(c->handler->proto, c->sid, "event=tls proto=%s cipher=%s", desc, cipher);
    if (c->handler->on_tls_ready != NULL)
        c->handler->on_tls_ready(c);
}

/*
 * The next piece of input in order: stash, current chunk, fresh TLS plaintext. Returns false when
 * there is none (or the connection left OPEN on the way, e.g. a TLS error).
 */
static bool input_slice(struct conn *c, const unsigned char **p, size_t *n)
{
    if (buf_unread(&c->stash) > 0) {
        *p = buf_unread_data(&c->stash);
        *n = buf_unread(&c->stash);
        c->slice_from_stash = true;
        return true;
    }
    c->slice_from_stash = false;
    if (c->chunk_len > 0) {
        *p = c->chunk;
        *n = c->chunk_len;
        return true;
    }
    if (c->tls == NULL)
        return false;
    size_t got = 0;
    enum tls_status st =
        tls_read_plaintext(c->tls, c->set->plain_buf, sizeof(c->set->plain_buf), &got);
    tls_check_ready(c);
    if (c->state != CONN_OPEN)
        return false;
    switch (st) {
    case TLS_OK:
        c->chunk = c->set->plain_buf;
        c->chunk_len = got;
        *p = c->chunk;
        *n = got;
        return got > 0;
    case TLS_WANT_MORE:
        return false;
    case TLS_CLOSED:
        c->eof = true;
        return false;
    case TLS_ERROR: {
        char esc[TLS_ERR_MAX_BYTES + 16];
        const char *e = tls_last_error(c->tls);
        log_info(c->handler->proto, c->sid, "event=tls-failed error=%s",
                 log_escape(esc, sizeof(esc), e, strlen(e)));
        conn_close(c, "tls-error"); /* sends the alert OpenSSL queued */
        return false;
    }
    }
    return false;
}

static void input_consume(struct conn *c, size_t k)
{
    if (c->slice_from_stash) {
        size_t have = buf_unread(&c->stash);
        buf_consume(&c->stash, k < have ? k : have);
        if (buf_unread(&c->stash) == 0) {
            buf_free(&c->stash); /* an idle connection keeps no input buffer */
            buf_init(&c->stash, CONN_STASH_MAX_BYTES);
        }
    } else {
        if (k > c->chunk_len)
            k = c->chunk_len;
        c->chunk += k;
        c->chunk_len -= k;
    }
}

static void deliver_line(struct conn *c, enum linereader_status st,
                         const struct linereader_line *line)
{
    if (st == LINEREADER_LINE) {
        c->lines_in++;
        if (c->set->transcript)
            transcript_recv(c, "recv", line->data, line->len);
        c->mask_next = false;
        c->handler->on_line(c, line->data, line->len);
        return;
    }
    c->bad_lines++;
    if (c->set->transcript)
        transcript_recv(c, st == LINEREADER_TOO_LONG ? "recv-too-long" : "recv-bad-line",
                        line->data, line->len);
    c->mask_next = false;
    if (c->handler->on_bad_line != NULL)
        c->handler->on_bad_line(c, st);
}

/*
 * Hands input to the session: lines, or chunks in data mode, for at most one turn. chunk (may be
 * NULL) is the part of a plaintext read not seen yet; it is borrowed from the shared buffer, so
 * what is left of it at the end is copied into the stash.
 */
static void pump(struct conn *c, const unsigned char *chunk, size_t len)
{
    if (c->state != CONN_OPEN)
        return;
    c->in_pump++;
    c->chunk = chunk;
    c->chunk_len = len;
    unsigned budget = CONN_LINES_PER_TURN;
    bool dry = false;
    while (c->state == CONN_OPEN && !c->paused) {
        if (unsent_bytes(c) > CONN_OUTPUT_HIGH_BYTES) {
            c->output_full = true;
            break;
        }
        if (budget == 0)
            break;
        const unsigned char *p;
        size_t n;
        if (!c->mode_data) {
            if (c->lr_live) {
                struct linereader_line line;
                enum linereader_status st = linereader_next(&c->lr, &line);
                if (st != LINEREADER_NEED_MORE) {
                    budget--;
                    deliver_line(c, st, &line);
                    continue;
                }
            }
            if (!input_slice(c, &p, &n)) {
                dry = true;
                break;
            }
            if (!c->lr_live && lr_unpark(c) != 0) {
                conn_abort(c, "out of memory");
                break;
            }
            size_t k = linereader_feed(&c->lr, p, n);
            input_consume(c, k);
            if (k == 0)
                break; /* cannot happen after NEED_MORE (buf.h); never spin on it */
        } else {
            if (!input_slice(c, &p, &n)) {
                dry = true;
                break;
            }
            budget--;
            size_t k = c->handler->on_data != NULL ? c->handler->on_data(c, p, n) : n;
            if (k > n)
                k = n;
            input_consume(c, k);
            if (k < n && c->mode_data && !c->paused && c->state == CONN_OPEN) {
                conn_abort(c, "internal: on_data kept input");
                break;
            }
        }
    }
    if (c->chunk_len > 0 && c->state == CONN_OPEN) {
        int rc = buf_append(&c->stash, c->chunk, c->chunk_len);
        if (rc != 0)
            conn_abort(c, "out of memory");
    }
    c->chunk = NULL;
    c->chunk_len = 0;
    c->in_pump--;
    if (c->state == CONN_OPEN) {
        c->backlog = !dry;
        if (dry && c->eof) {
            conn_close(c, "client-closed");
        } else if (dry) {
            lr_park(c);
        } else if (!c->paused && !c->output_full) {
            ready_add(c); /* the turn is used up: continue after everyone else's I/O */
        }
    }
    flush(c);
    if (c->state == CONN_OPEN)
        update_reading(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0)
        return;
    if (c->state == CONN_LINGERING) {
        if (nread < 0)
            finish_close(c); /* the client's FIN (or an error): done */
        return;              /* input after our last reply is dropped unread */
    }
    if (c->state != CONN_OPEN)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            c->eof = true;
            update_reading(c);
            pump(c, NULL, 0); /* handle what is still buffered, then close */
            return;
        }
        char why[CONN_REASON_MAX_BYTES];
        reason_with_uv(why, sizeof(why), "read-error", (int)nread);
        conn_abort(c, why);
        return;
    }
    c->bytes_in += (uint64_t)nread;
    arm_idle(c);
    if (c->tls != NULL) {
        if (tls_feed_ciphertext(c->tls, buf->base, (size_t)nread) != 0) {
            conn_abort(c, "out of memory");
            return;
        }
        pump(c, NULL, 0);
    } else {
        pump(c, (const unsigned char *)buf->base, (size_t)nread);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    switch (c->state) {
    case CONN_CONNECTING:
        conn_abort(c, "connect-timeout");
        break;
    case CONN_OPEN:
        log_debug(c->handler->proto, c->sid, "event=timeout after_ms=%" PRIu64, c->timeout_ms);
        if (c->handler->on_timeout != NULL)
            c->handler->on_timeout(c);
        conn_close(c, "timeout");
        break;
    case CONN_FLUSHING:
        log_info(c->handler->proto, c->sid, "event=flush-timeout unsent=%zu", unsent_bytes(c));
        finish_close(c);
        break;
    case CONN_LINGERING:
        finish_close(c);
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
        if (c->state == CONN_CONNECTING) {
            conn_abort(c, "shutdown");
        } else if (c->state == CONN_OPEN) {
            if (c->handler->on_shutdown != NULL)
                c->handler->on_shutdown(c);
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

static int start_tls(struct conn *c)
{
    char err[TLS_ERR_MAX_BYTES];
    if (c->outbound)
        c->tls = tls_conn_new_client(c->tls_ctx, c->sni, err, sizeof(err));
    else
        c->tls = tls_conn_new_server(c->tls_ctx, err, sizeof(err));
    if (c->tls == NULL) {
        log_warn(c->handler->proto, c->sid, "event=tls-failed error=\"%s\"", err);
        return -ENOMEM;
    }
    return 0;
}

/* Connected (accepted or outbound): TLS, reading, the greeting. */
static void conn_opened(struct conn *c, const char *listener_name)
{
    log_info(c->handler->proto, c->sid, "event=connected ip=%s port=%u listener=%s service=%s",
             c->peer_text, (unsigned)c->peer_port, listener_name != NULL ? listener_name : "-",
             conn_service_name(c->service));
    c->state = CONN_OPEN;
    uv_tcp_nodelay(&c->tcp, 1); /* replies are coalesced here already; Nagle only adds delay */
    if (c->implicit_tls && start_tls(c) != 0) {
        conn_abort(c, "tls-error: setup");
        return;
    }
    update_reading(c);
    if (c->state != CONN_OPEN)
        return;
    arm_idle(c);
    if (c->handler->on_open != NULL)
        c->handler->on_open(c);
    flush(c);
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
    c->callbacks_on = true;
    *out = c;
    conn_opened(c, params->listener_name);
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state != CONN_CONNECTING)
        return; /* aborted meanwhile; the close callback follows */
    if (status < 0) {
        char why[CONN_REASON_MAX_BYTES];
        reason_with_uv(why, sizeof(why), "connect-failed", status);
        log_info(c->handler->proto, c->sid, "event=connect-failed ip=%s port=%u error=\"%s\"",
                 c->peer_text, (unsigned)c->peer_port, uv_strerror(status));
        conn_abort(c, why);
        return;
    }
    conn_opened(c, NULL);
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

/* ---- the session's API --------------------------------------------------------------------- */

int conn_starttls(struct conn *c)
{
    if (c == NULL || c->state != CONN_OPEN)
        return -ENOTCONN;
    if (c->tls != NULL)
        return -EALREADY;
    if (c->tls_ctx == NULL)
        return -ENOTSUP;
    if (c->mode_data)
        return -EINVAL;
    /*
     * CVE-2011-0411: whatever arrived after the STARTTLS line was sent in plaintext before the
     * client could have seen our 220; executing it after the handshake would let a man in the
     * middle inject commands into the protected session. Drop it all (RFC 3207 4.2).
     */
    size_t dropped = c->chunk_len + buf_unread(&c->stash);
    if (c->lr_live)
        dropped += linereader_discard(&c->lr);
    c->chunk_len = 0;
    buf_free(&c->stash);
    buf_init(&c->stash, CONN_STASH_MAX_BYTES);
    if (dropped > 0)
        log_info(c->handler->proto, c->sid, "event=starttls-discarded bytes=%zu", dropped);
    if (start_tls(c) != 0)
        return -ENOMEM;
    if (c->in_pump == 0)
        flush(c); /* the outbound side's ClientHello */
    return 0;
}

bool conn_can_starttls(const struct conn *c)
{
    return c != NULL && c->tls_ctx != NULL && c->tls == NULL;
}

bool conn_is_tls(const struct conn *c)
{
    return c != NULL && c->tls != NULL;
}

char *conn_tls_describe(const struct conn *c, char *buf, size_t len)
{
    if (c == NULL || c->tls == NULL) {
        if (len > 0)
            snprintf(buf, len, "none");
        return buf;
    }
    return tls_describe(c->tls, buf, len);
}

void conn_set_mode_data(struct conn *c, bool on)
{
    if (c == NULL || c->state != CONN_OPEN || c->mode_data == on)
        return;
    if (on && c->lr_live) {
        /* The octets behind the current line belong to the data: they go in front of the stash. */
        const unsigned char *p;
        size_t n = linereader_take_buffered(&c->lr, &p);
        if (n > 0) {
            struct buf joined;
            buf_init(&joined, CONN_STASH_MAX_BYTES);
            if (buf_append(&joined, p, n) != 0 ||
                buf_append(&joined, buf_unread_data(&c->stash), buf_unread(&c->stash)) != 0) {
                buf_free(&joined);
                conn_abort(c, "out of memory");
                return;
            }
            buf_free(&c->stash);
            c->stash = joined;
        }
    }
    c->mode_data = on;
    if (c->in_pump == 0)
        ready_add(c);
}

bool conn_is_mode_data(const struct conn *c)
{
    return c != NULL && c->mode_data;
}

void conn_set_timeout(struct conn *c, uint64_t timeout_ms)
{
    if (c == NULL)
        return;
    c->timeout_ms = timeout_ms;
    arm_idle(c);
}

int conn_set_max_line(struct conn *c, size_t max_line_bytes)
{
    if (c == NULL || max_line_bytes < LINEREADER_MIN_LINE_BYTES ||
        max_line_bytes > c->largest_line_bytes)
        return -EINVAL;
    c->max_line_bytes = max_line_bytes;
    if (c->lr_live)
        return linereader_set_max(&c->lr, max_line_bytes);
    return 0;
}

void conn_pause_reading(struct conn *c)
{
    if (c == NULL || c->state != CONN_OPEN || c->paused)
        return;
    c->paused = true;
    ready_remove(c);
    arm_idle(c); /* the server is busy, not the client: no idle timeout meanwhile */
    if (c->in_pump == 0)
        update_reading(c);
}

void conn_resume_reading(struct conn *c)
{
    if (c == NULL || c->state != CONN_OPEN || !c->paused)
        return;
    c->paused = false;
    arm_idle(c);
    /* Lines may be waiting in the reader: the next turn hands them over, or resumes reading. */
    ready_add(c);
}

bool conn_is_paused(const struct conn *c)
{
    return c != NULL && c->paused;
}

void conn_mask_next_line(struct conn *c)
{
    if (c != NULL)
        c->mask_next = true;
}

void conn_want_drain(struct conn *c)
{
    if (c == NULL || c->state != CONN_OPEN)
        return;
    c->want_drain = true;
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
    out->output_bytes = unsent_bytes(c);
    out->input_bytes =
        buf_unread(&c->stash) + c->chunk_len + (c->lr_live ? linereader_buffered(&c->lr) : 0);
    out->reading = c->reading;
}
