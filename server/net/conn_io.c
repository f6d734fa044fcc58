/*
 * conn_io.c - a connection's bytes: reading from the socket into the line reader or the
 * session's data callback, backpressure, queued writes, and switching TLS on. What it does not
 * do: open or close connections or own timers (conn.c), format the transcript
 * (conn_transcript.c).
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
 * Memory: an idle connection keeps its struct (about 1.2 KiB with the libuv handles) and, with
 * TLS, the tls_conn (about 14 KiB); no buffer. The line reader's buffer (largest line + 128
 * octets: 12.4 KiB for SMTP, whose AUTH lines may reach 12288) is allocated when input arrives and
 * released ("parked") whenever it holds nothing, which is the normal state of a client waiting
 * for a reply. The output buffers are released whenever the last write completed and nothing is
 * queued: a reply costs one small allocation, which is cheaper than every idle connection keeping
 * its last reply's buffers. A stream (POP3 RETR, with on_drain) refills the queue before it
 * drains, so it keeps its buffers while it runs.
 */
#include "server/net/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/metrics/metrics.h"
#include "server/net/conn_internal.h"
#include "server/net/tls.h"

/* ---- output -------------------------------------------------------------------------------- */

size_t conn__unsent_bytes(const struct conn *c)
{
    size_t n = outq_unsent_bytes(&c->outq);
    if (c->tls != NULL)
        n += tls_pending_ciphertext(c->tls);
    return n;
}

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
    size_t unsent = conn__unsent_bytes(c);
    if (!c->output_full && unsent > CONN_OUTPUT_HIGH_BYTES) {
        c->output_full = true;
        conn__update_reading(c);
    } else if (c->output_full && unsent < CONN_OUTPUT_HIGH_BYTES / 2) {
        c->output_full = false;
        if (c->backlog && !c->paused)
            conn__ready_add(c); /* input is waiting; the pump resumes reading when it runs dry */
        conn__update_reading(c);
    }
}

/* Releases the output buffers once everything went out (see "Memory" at the top). */
static void trim_output(struct conn *c)
{
    if (outq_is_writing(&c->outq) || outq_unsent_bytes(&c->outq) > 0)
        return;
    if (c->outq.pending.cap + c->outq.in_flight.cap == 0)
        return;
    size_t limit = c->outq.limit_bytes;
    outq_free(&c->outq);
    outq_init(&c->outq, limit);
}

/* Counts bytes that reached the socket. */
static void count_out(struct conn *c, size_t n)
{
    c->bytes_out += n;
    metrics_bytes_out((int)c->service, n);
}

/*
 * Hands the queued output to the socket. First straight away with uv_try_write: a reply is
 * short and the socket's buffer has room, so it is usually all taken at once, with no write
 * request, no callback on a later loop turn and no change to the poll set (a uv_write that
 * completes still makes libuv re-register the socket with epoll when it stops watching for
 * writability). What the kernel does not take goes through uv_write, whose callback continues.
 * While a handler waits for on_drain (a body being streamed) the write goes through uv_write
 * only, because that callback is what calls on_drain.
 */
void conn__flush(struct conn *c)
{
    if (c->state == CONN_CLOSED || c->state == CONN_CONNECTING)
        return;
    if (drain_tls_output(c) != 0)
        return;
    if (!outq_is_writing(&c->outq)) {
        const unsigned char *data;
        size_t n = outq_write_begin(&c->outq, &data);
        size_t sent = 0;
        if (n > 0 && !c->want_drain) {
            uv_buf_t b = uv_buf_init((char *)data, (unsigned int)n);
            int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
            if (rc < 0 && rc != UV_EAGAIN) {
                char why[CONN_REASON_MAX_BYTES];
                outq_write_done(&c->outq);
                conn__reason_with_uv(why, sizeof(why), "write-error", rc);
                conn_abort(c, why);
                return;
            }
            sent = rc > 0 ? (size_t)rc : 0;
            if (sent > 0)
                count_out(c, sent);
            if (sent == n) {
                outq_write_done(&c->outq);
                trim_output(c);
            }
        }
        if (n > sent) {
            uv_buf_t b = uv_buf_init((char *)data + sent, (unsigned int)(n - sent));
            uv_write_t *req = malloc(sizeof(*req)); /* freed by on_write */
            if (req == NULL) {
                outq_write_done(&c->outq);
                conn_abort(c, "out of memory");
                return;
            }
            req->data = c;
            c->write_len = n - sent;
            int rc = uv_write(req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
            if (rc != 0) {
                char why[CONN_REASON_MAX_BYTES];
                free(req); /* a failed uv_write never calls on_write */
                outq_write_done(&c->outq);
                conn__reason_with_uv(why, sizeof(why), "write-error", rc);
                conn_abort(c, why);
                return;
            }
        }
    }
    check_output_pressure(c);
    conn__maybe_flushed(c);
}

static void on_write(uv_write_t *req, int status)
{
    /* libuv calls this before the handle's close callback, cancelled writes included, so c is
     * still there. */
    struct conn *c = req->data;
    free(req);
    outq_write_done(&c->outq);
    if (status == 0)
        count_out(c, c->write_len);
    if (c->state == CONN_CLOSED)
        return; /* cancelled by the close; the close callback follows */
    if (status < 0) {
        char why[CONN_REASON_MAX_BYTES];
        conn__reason_with_uv(why, sizeof(why), "write-error", status);
        conn_abort(c, why);
        return;
    }
    conn__flush(c);
    if (c->state != CONN_OPEN)
        return;
    if (c->want_drain && conn__unsent_bytes(c) < CONN_OUTPUT_HIGH_BYTES / 2) {
        c->want_drain = false;
        if (c->handler->on_drain != NULL) {
            c->handler->on_drain(c);
            conn__flush(c);
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
        conn__transcript_send(c, data, len);
    if (len > CONN_OUTPUT_MAX_BYTES || conn__unsent_bytes(c) > CONN_OUTPUT_MAX_BYTES - len) {
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
        conn__flush(c);
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

void conn__update_reading(struct conn *c)
{
    bool want;
    /* A pause (the session waits for the store, a password check or a delay) leaves a socket
     * that is being read registered: what arrives meanwhile is read once into the stash (the
     * pump hands nothing over while paused), and the stash, no longer empty, stops reading
     * then. Stopping at every pause would cost two epoll_ctl calls per pause, since libuv
     * forgets the registration when nothing is watched, for input that usually does not come;
     * a client that does send meanwhile still has at most one read's worth held here. */
    if (c->state == CONN_LINGERING)
        want = true;
    else
        want = c->state == CONN_OPEN && (!c->paused || c->reading) && !c->eof && !c->output_full &&
               !c->backlog && buf_unread(&c->stash) == 0;
    if (want && !c->reading) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (rc != 0) {
            char why[CONN_REASON_MAX_BYTES];
            conn__reason_with_uv(why, sizeof(why), "read-error", rc);
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
    metrics_tls_handshake((int)c->service);
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
            conn__transcript_recv(c, "recv", line->data, line->len);
        c->mask_next = false;
        c->handler->on_line(c, line->data, line->len);
        return;
    }
    c->bad_lines++;
    if (c->set->transcript)
        conn__transcript_recv(c, st == LINEREADER_TOO_LONG ? "recv-too-long" : "recv-bad-line",
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
void conn__pump(struct conn *c, const unsigned char *chunk, size_t len)
{
    if (c->state != CONN_OPEN)
        return;
    c->in_pump++;
    c->chunk = chunk;
    c->chunk_len = len;
    unsigned budget = CONN_LINES_PER_TURN;
    bool dry = false;
    while (c->state == CONN_OPEN && !c->paused) {
        if (conn__unsent_bytes(c) > CONN_OUTPUT_HIGH_BYTES) {
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
            if (c->set->transcript)
                conn__transcript_data_in(c, p, k, !c->mode_data);
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
        /* Paused, the loop above stopped before looking for input: backlog then says whether
         * any is held here, which is what stops reading (conn__update_reading) until resumed. */
        if (c->paused)
            c->backlog =
                buf_unread(&c->stash) > 0 || (c->lr_live && linereader_buffered(&c->lr) > 0);
        if (dry && c->eof) {
            conn_close(c, "client-closed");
        } else if (dry) {
            lr_park(c);
        } else if (!c->paused && !c->output_full) {
            conn__ready_add(c); /* the turn is used up: continue after everyone else's I/O */
        }
    }
    conn__flush(c);
    if (c->state == CONN_OPEN)
        conn__update_reading(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0)
        return;
    if (c->state == CONN_LINGERING) {
        if (nread < 0)
            conn__finish_close(c); /* the client's FIN (or an error): done */
        return;                    /* input after our last reply is dropped unread */
    }
    if (c->state != CONN_OPEN)
        return;
    if (nread < 0 && c->proxy != NULL) {
        conn__proxy_fail(c, nread == UV_EOF ? "closed before a complete header" : "read error");
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF) {
            c->eof = true;
            conn__update_reading(c);
            conn__pump(c, NULL, 0); /* handle what is still buffered, then close */
            return;
        }
        char why[CONN_REASON_MAX_BYTES];
        conn__reason_with_uv(why, sizeof(why), "read-error", (int)nread);
        conn_abort(c, why);
        return;
    }
    c->bytes_in += (uint64_t)nread;
    metrics_bytes_in((int)c->service, (uint64_t)nread);
    if (c->proxy != NULL) {
        conn__proxy_input(c, (const unsigned char *)buf->base, (size_t)nread);
        return;
    }
    conn__arm_idle(c);
    if (c->tls != NULL) {
        if (tls_feed_ciphertext(c->tls, buf->base, (size_t)nread) != 0) {
            conn_abort(c, "out of memory");
            return;
        }
        conn__pump(c, NULL, 0);
    } else {
        conn__pump(c, (const unsigned char *)buf->base, (size_t)nread);
    }
}

int conn__start_tls(struct conn *c)
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
    if (conn__start_tls(c) != 0)
        return -ENOMEM;
    if (c->in_pump == 0)
        conn__flush(c); /* the outbound side's ClientHello */
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
    /* Switched off from on_data, the pump sums up after counting that last chunk. */
    if (!on && c->set->transcript && c->in_pump == 0)
        conn__transcript_data_in_end(c, true);
    c->mode_data = on;
    if (c->in_pump == 0)
        conn__ready_add(c);
}

bool conn_is_mode_data(const struct conn *c)
{
    return c != NULL && c->mode_data;
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
    conn__ready_remove(c);
    conn__arm_idle(c); /* the server is busy, not the client: no idle timeout meanwhile */
    if (c->in_pump == 0)
        conn__update_reading(c);
}

void conn_resume_reading(struct conn *c)
{
    if (c == NULL || c->state != CONN_OPEN || !c->paused)
        return;
    c->paused = false;
    conn__arm_idle(c);
    /* Lines may be waiting in the reader: the next turn hands them over, or resumes reading. */
    conn__ready_add(c);
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
