/*
 * smtp_client_body.c - the body of one outbound SMTP transaction: read from the store
 * (store_queue_body_open, less a Return-Path line at the start) and written as DATA's octets
 * with dot-stuffing (common/pure/dotstuff.c) and the final dot, or, when the server offers
 * CHUNKING with PIPELINING, as one "BDAT n" chunk per read and "BDAT 0 LAST" (RFC 3030), all
 * pumped while the connection's output stays under CONN_OUTPUT_HIGH_BYTES and resumed from its
 * drain callback. The replies to the BDAT chunks that are not the LAST one are counted off
 * here too; a refused chunk decides the accepted recipients.
 *
 * The reads (storage/reader.h) are here too, one out at a time: the facts smtp_client_start
 * asks for, the body's opening and each chunk. Inline they finish inside smtp_client_read; with
 * reader threads the client waits, and read_done carries on. While one is out, what it uses (the
 * body reader, in[]) stays allocated: a close leaves the freeing to read_done.
 *
 * What it does not do: own the client or its connection (smtp_client.c does, and frees it:
 * smtp_client_internal.h is the boundary), read any other reply, or decide a recipient by the
 * reply to the end of data (smtp_client.c's ST_DOT).
 */
#include <stdio.h>

#include <uv.h>

#include "common/error.h"
#include "common/util.h"
#include "server/net/conn.h"
#include "server/outbound/smtp_client_internal.h"
#include "storage/queue.h"

/* ---- reads ---------------------------------------------------------------------------------- */

/* On a reader thread, or inline on the loop: sc's read fields, the body reader and in[] only. */
static int read_run(struct store *st, struct reader_job *job)
{
    struct smtp_client *sc = container_of(job, struct smtp_client, rj);
    int rc = STORE_ERR;
    switch (sc->read_what) {
    case SC_READ_FACTS:
        rc = smtp_client_facts_get(st, sc->message_id, sc->in, sizeof(sc->in), &sc->facts);
        break;
    case SC_READ_OPEN: {
        int64_t size = 0;
        rc =
            store_queue_body_open(st, sc->message_id, SMTP_CLIENT_BODY_HOLD_MS, &sc->opened, &size);
        if (rc == STORE_OK && sc->read_threaded)
            store_body_rebind(sc->opened, NULL); /* the next chunk may run on another thread */
        break;
    }
    case SC_READ_CHUNK:
        if (sc->read_threaded)
            store_body_rebind(sc->reader, st);
        rc = store_body_read(sc->reader, sc->in, sizeof(sc->in), &sc->read_n);
        if (sc->read_threaded)
            store_body_rebind(sc->reader, NULL);
        break;
    }
    if (rc != STORE_OK)
        snprintf(sc->read_error, sizeof(sc->read_error), "%s", store_errmsg(st));
    return rc;
}

static void body_opened(struct smtp_client *sc, int rc);
static void chunk_back(struct smtp_client *sc, int rc);

/* A read that was out is back, on the loop. */
static void read_done(struct reader_job *job, int status)
{
    struct smtp_client *sc = container_of(job, struct smtp_client, rj);
    sc->read_out = false;
    if (sc->close_after_read) {
        sc->close_after_read = false;
        store_body_close(&sc->reader);
    }
    if (sc->free_after_read) {
        store_body_close(&sc->opened);
        smtp_client_free(sc);
        return;
    }
    switch (sc->read_what) {
    case SC_READ_FACTS:
        smtp_client_facts_back(sc, status);
        break;
    case SC_READ_OPEN:
        body_opened(sc, status);
        break;
    case SC_READ_CHUNK:
        if (sc->state != ST_BODY) {
            store_body_close(&sc->reader); /* given up meanwhile (a refused chunk) */
            break;
        }
        chunk_back(sc, status);
        if (sc->conn != NULL && sc->state == ST_BODY)
            smtp_client_pump_body(sc);
        break;
    }
}

int smtp_client_read(struct smtp_client *sc, int *status_out)
{
    sc->rj.run = read_run;
    sc->rj.done = read_done;
    sc->read_threaded = !reader_is_inline(sc->reads);
    sc->read_error[0] = '\0';
    int outcome = reader_submit(sc->reads, &sc->rj, status_out);
    if (outcome == READER_PENDING)
        sc->read_out = true;
    else if (*status_out != STORE_OK && sc->read_error[0] == '\0')
        snprintf(sc->read_error, sizeof(sc->read_error), "%s", store_strerror(*status_out));
    return outcome;
}

void smtp_client_body_close(struct smtp_client *sc)
{
    if (sc->read_out && sc->read_what == SC_READ_CHUNK)
        sc->close_after_read = true;
    else
        store_body_close(&sc->reader);
}

/*
 * The store could not give the body once the server was waiting for it (rc is a STORE_* code):
 * every accepted recipient is deferred with a text that names the store, and the connection is
 * aborted before the final dot, so nothing is delivered. This is not a host failure: another
 * address would fail the same way.
 */
static void body_failed(struct smtp_client *sc, int rc, const char *close_reason)
{
    char text[SMTP_REPLY_TEXT_MAX_BYTES];
    if (rc == STORE_NOT_FOUND)
        snprintf(text, sizeof(text), "the message left the queue during delivery");
    else
        snprintf(text, sizeof(text), "the message cannot be read from the store (%s: %s)",
                 postern_strerror(rc), sc->read_error);
    smtp_client_decide_accepted(sc, SMTP_RCPT_DEFER, 0, text);
    struct smtp_client_result res = {0};
    smtp_client_report(sc, &res);
    conn_abort(sc->conn, close_reason);
}

void smtp_client_start_body(struct smtp_client *sc)
{
    /* ST_BODY from now: no reply may come until the end of data, opened or not yet. */
    sc->state = ST_BODY;
    sc->read_what = SC_READ_OPEN;
    sc->opened = NULL;
    int rc;
    if (smtp_client_read(sc, &rc) == READER_PENDING)
        return; /* read_done calls body_opened */
    body_opened(sc, rc);
}

static void body_opened(struct smtp_client *sc, int rc)
{
    sc->reader = sc->opened;
    sc->opened = NULL;
    if (sc->state != ST_BODY || sc->conn == NULL) {
        store_body_close(&sc->reader); /* decided meanwhile (a host failure) */
        return;
    }
    if (rc != STORE_OK) {
        /* Dropped meanwhile, or unreadable: abort without the final dot, so nothing is
         * delivered. Either way it is our store's doing, not the host's. */
        body_failed(sc, rc, rc == STORE_NOT_FOUND ? "body-gone" : "body-read-failed");
        return;
    }
    dotstuff_init(&sc->ds);
    sc->in_off = sc->in_len = 0;
    sc->skip_left = sc->strip_bytes;
    sc->body_eof = false;
    sc->body_open = true;
    conn_body_begin(sc->conn); /* the transcript sums the message up, never logs it */
    smtp_client_pump_body(sc);
}

/* A chunk read is over: in[] holds read_n octets, or the body failed. */
static void chunk_back(struct smtp_client *sc, int rc)
{
    if (rc != STORE_OK) {
        sc->body_failed_rc = rc;
        return;
    }
    size_t n = sc->read_n;
    sc->in_off = 0;
    sc->in_len = n;
    if (n == 0)
        sc->body_eof = true;
    if (sc->skip_left > 0) {
        size_t k = sc->skip_left < n ? (size_t)sc->skip_left : n;
        sc->in_off = k;
        sc->skip_left -= k;
    }
}

void smtp_client_pump_body(struct smtp_client *sc)
{
    struct conn *c = sc->conn;
    if (sc->read_out || !sc->body_open)
        return; /* the read's done pumps again */
    if (sc->body_failed_rc != 0) {
        body_failed(sc, sc->body_failed_rc, "body-read-failed");
        return;
    }
    conn_set_timeout(c, SMTP_CLIENT_DATA_BLOCK_TIMEOUT_MS); /* progress re-arms it */
    for (;;) {
        struct conn_stats st;
        conn_get_stats(c, &st);
        if (st.output_bytes >= CONN_OUTPUT_HIGH_BYTES) {
            conn_want_drain(c);
            return;
        }
        if (sc->in_off == sc->in_len && !sc->body_eof) {
            sc->read_what = SC_READ_CHUNK;
            sc->read_n = 0;
            int rc;
            if (smtp_client_read(sc, &rc) == READER_PENDING)
                return; /* read_done pumps again */
            chunk_back(sc, rc);
            if (rc != STORE_OK) {
                body_failed(sc, rc, "body-read-failed");
                return;
            }
        }
        if (sc->in_off < sc->in_len && sc->bdat) {
            /* RFC 3030 2: exactly n octets follow the command, as they are. */
            size_t n = sc->in_len - sc->in_off;
            char cmd[40];
            int k = snprintf(cmd, sizeof(cmd), "BDAT %zu\r\n", n);
            if (conn_write(c, cmd, (size_t)k) != 0 || conn_write(c, sc->in + sc->in_off, n) != 0)
                return; /* closing: on_close reports */
            sc->in_off = sc->in_len;
            sc->chunks_unanswered++;
        } else if (sc->in_off < sc->in_len) {
            size_t used = 0;
            size_t k = dotstuff_encode(&sc->ds, sc->in + sc->in_off, sc->in_len - sc->in_off, &used,
                                       sc->out, sizeof(sc->out));
            sc->in_off += used;
            if (k > 0 && conn_write(c, sc->out, k) != 0)
                return; /* closing: on_close reports */
        } else if (sc->body_eof) {
            if (sc->bdat && conn_write(c, "BDAT 0 LAST\r\n", 13) != 0)
                return;
            while (!sc->bdat && !dotstuff_is_done(&sc->ds)) {
                size_t k = dotstuff_finish(&sc->ds, sc->out, sizeof(sc->out));
                if (conn_write(c, sc->out, k) != 0)
                    return;
            }
            store_body_close(&sc->reader);
            sc->body_open = false;
            conn_body_end(c);
            sc->state = ST_DOT;
            sc->dot_sent_ms = uv_now(conn_loop(c));
            conn_set_timeout(c, SMTP_CLIENT_FINAL_DOT_TIMEOUT_MS);
            /* From here the server may have the message: a graceful stop must wait for the
             * reply rather than drop it (c_shutdown bounds the wait). */
            conn_keep_at_shutdown(c, true);
            return;
        }
    }
}

/* A reply to a BDAT chunk that was not the LAST one (head comment). */
void smtp_client_on_chunk_reply(struct smtp_client *sc, int code, const char *text)
{
    sc->chunks_unanswered--;
    if (code / 100 == 2)
        return;
    if (code == 421) {
        smtp_client_host_failure(sc, code, "%s", text); /* RFC 5321 3.8: as for any other command */
        return;
    }
    smtp_client_decide_accepted(sc, code / 100 == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code,
                                text);
    if (sc->state == ST_BODY) {
        /* Whole chunks only were queued, so the server reads QUIT as a command. */
        smtp_client_body_close(sc);
        if (sc->body_open)
            conn_body_end(sc->conn);
        sc->body_open = false;
    }
    smtp_client_finish(sc);
}
