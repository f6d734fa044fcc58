/*
 * smtp_client_body.c - the body of one outbound SMTP transaction: read from the store
 * (store_queue_body_open, less a Return-Path line at the start) and written as DATA's octets
 * with dot-stuffing (common/pure/dotstuff.c) and the final dot, or, when the server offers
 * CHUNKING with PIPELINING, as one "BDAT n" chunk per read and "BDAT 0 LAST" (RFC 3030), all
 * pumped while the connection's output stays under CONN_OUTPUT_HIGH_BYTES and resumed from its
 * drain callback. The replies to the BDAT chunks that are not the LAST one are counted off
 * here too; a refused chunk decides the accepted recipients.
 *
 * What it does not do: own the client or its connection (smtp_client.c does, and frees it:
 * smtp_client_internal.h is the boundary), read any other reply, or decide a recipient by the
 * reply to the end of data (smtp_client.c's ST_DOT).
 */
#include <stdio.h>

#include <uv.h>

#include "common/error.h"
#include "server/net/conn.h"
#include "server/outbound/smtp_client_internal.h"
#include "storage/queue.h"

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
                 postern_strerror(rc), store_errmsg(sc->store));
    smtp_client_decide_accepted(sc, SMTP_RCPT_DEFER, 0, text);
    struct smtp_client_result res = {0};
    smtp_client_report(sc, &res);
    conn_abort(sc->conn, close_reason);
}

void smtp_client_start_body(struct smtp_client *sc)
{
    int64_t size = 0;
    int rc = store_queue_body_open(sc->store, sc->message_id, SMTP_CLIENT_BODY_HOLD_MS, &sc->reader,
                                   &size);
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
    sc->state = ST_BODY;
    conn_body_begin(sc->conn); /* the transcript sums the message up, never logs it */
    smtp_client_pump_body(sc);
}

void smtp_client_pump_body(struct smtp_client *sc)
{
    struct conn *c = sc->conn;
    conn_set_timeout(c, SMTP_CLIENT_DATA_BLOCK_TIMEOUT_MS); /* progress re-arms it */
    for (;;) {
        struct conn_stats st;
        conn_get_stats(c, &st);
        if (st.output_bytes >= CONN_OUTPUT_HIGH_BYTES) {
            conn_want_drain(c);
            return;
        }
        if (sc->in_off == sc->in_len && !sc->body_eof) {
            size_t n = 0;
            int rc = store_body_read(sc->reader, sc->in, sizeof(sc->in), &n);
            if (rc != STORE_OK) {
                body_failed(sc, rc, "body-read-failed");
                return;
            }
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
        store_body_close(&sc->reader);
        conn_body_end(sc->conn);
    }
    smtp_client_finish(sc);
}
