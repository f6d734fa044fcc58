/*
 * smtp_client.c - one outbound SMTP transaction (see smtp_client.h for the contract).
 *
 * The transaction is a chain of states, one per reply the client waits for. Without PIPELINING
 * the command for a state is sent when the state is entered; with it, MAIL, every RCPT and DATA
 * go out together (RFC 2920 3.1: DATA is the last command of the group) and the replies are
 * taken in order, through the very same states. A reply to MAIL that refuses the sender decides
 * every recipient; the pipelined RCPT and DATA replies that follow are read and ignored.
 *
 * CHUNKING (RFC 3030): when the server offers it together with PIPELINING, no DATA is sent. Once
 * the RCPT replies accepted someone, the body goes out as it is read from the store, each read
 * as one "BDAT n" chunk (no dot-stuffing: the stored body has canonical CRLF line ends), then
 * "BDAT 0 LAST", all without waiting. The chunks' "250" replies are counted off as they come; a
 * chunk refused with 4xx/5xx decides the accepted recipients (the server will not deliver, RFC
 * 3030 2) and the client quits. The reply to the LAST chunk is what the reply to the final dot
 * is for DATA: the only reply that delivers. Without PIPELINING, BDAT would mean a round trip
 * per chunk, so DATA is used.
 *
 * The smarthost credentials and the AUTH PLAIN line are in smtp_client_creds.c.
 *
 * Ownership: the struct smtp_client is owned by itself from smtp_client_start on, and freed in
 * the connection's on_close. The caller's recipient array is borrowed only until done runs;
 * after that (the QUIT phase) the client touches nothing of the caller's.
 */
#include "server/outbound/smtp_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <uv.h>

#include "common/error.h"
#include "common/pure/address.h"
#include "common/pure/buf.h"
#include "common/pure/command.h"
#include "common/pure/dotstuff.h"
#include "common/log.h"
#include "server/net/conn.h"
#include "server/outbound/smtp_client_facts.h"
#include "common/pure/utf8.h"
#include "storage/queue.h"
#include "storage/store.h"

/* ---- one transaction ----------------------------------------------------------------------- */

enum client_state {
    ST_CONNECTING = 0,
    ST_GREETING,
    ST_EHLO,
    ST_HELO,
    ST_STARTTLS,
    ST_HANDSHAKE,
    ST_AUTH,
    ST_MAIL,
    ST_RCPT,
    ST_DATA,
    ST_BODY,      /* streaming the body: the end of data is not sent yet, so no reply may come */
    ST_DOT,       /* the end of data was sent: only its reply decides, and it must not be lost */
    ST_EMPTY_DOT, /* pipelined DATA got 354 with no recipient accepted: "." alone was sent */
    ST_QUIT,      /* done has run; waiting for 221 or the close */
};

struct smtp_client {
    struct conn *conn; /* borrowed from the set; NULL once closed */
    enum client_state state;
    bool reported;        /* done has run (or was cancelled): the caller's data is off limits */
    bool cancelled;       /* smtp_client_cancel: done never runs */
    bool stopping;        /* the server is stopping (on_shutdown): no waiting for the 221 */
    uint64_t dot_sent_ms; /* loop time the end of data was queued (ST_DOT) */

    /* copies of the parameters */
    char *remote_host;
    char *helo_name;
    char *sender;
    struct smtp_client_rcpt *rcpts; /* borrowed until reported */
    size_t n_rcpts;
    struct store *store;
    int64_t message_id;
    void (*done)(void *arg, const struct smtp_client_result *res);
    void *arg;

    /* what the body scan found */
    uint64_t size_bytes;  /* what is sent: the stored size less a Return-Path line */
    uint64_t strip_bytes; /* the Return-Path line's octets at the start, 0 if none */
    bool has_8bit;
    bool needs_smtputf8; /* a UTF-8 envelope, or UTF-8 headers received under SMTPUTF8 */

    /* smarthost AUTH: the whole "AUTH PLAIN ...\r\n" line (owned, wiped on free), or NULL */
    char *auth_line;
    size_t auth_line_len;
    bool tls_heard; /* a reply arrived under TLS: the handshake surely succeeded */

    struct smtp_ehlo_caps caps;
    bool esmtp; /* EHLO was accepted */
    bool pipelined;
    bool bdat;                /* the body goes out in BDAT chunks (head comment) */
    size_t chunks_unanswered; /* BDAT chunks (not the LAST) whose reply is still to come */
    bool mail_failed;         /* MAIL was refused: the recipients are decided already */
    size_t rcpt_i;            /* the RCPT whose reply comes next */
    size_t accepted;          /* recipients with 250 at RCPT */
    bool *rcpt_ok;            /* owned: per recipient, accepted at RCPT */
    struct smtp_reply reply;

    /* body streaming */
    struct store_body_reader *reader;
    struct dotstuff ds;
    unsigned char in[SMTP_CLIENT_CHUNK_BYTES];
    size_t in_off, in_len;
    uint64_t skip_left; /* Return-Path octets still to skip */
    bool body_eof;
    unsigned char out[2 * SMTP_CLIENT_CHUNK_BYTES + 8];
};

static void client_free(struct smtp_client *sc)
{
    if (sc == NULL)
        return;
    store_body_close(&sc->reader);
    if (sc->auth_line != NULL) {
        sodium_memzero(sc->auth_line, sc->auth_line_len + 1);
        free(sc->auth_line);
    }
    free(sc->rcpt_ok);
    free(sc->remote_host);
    free(sc->helo_name);
    free(sc->sender);
    free(sc);
}

/* SIZE=, BODY= and the Return-Path to drop (server/outbound/smtp_client_facts.h). */
static int body_facts(struct smtp_client *sc)
{
    struct smtp_client_facts f;
    int rc = smtp_client_facts_get(sc->store, sc->message_id, sc->in, sizeof(sc->in), &f);
    if (rc != STORE_OK)
        return rc;
    sc->has_8bit = f.has_8bit;
    /* RFC 6531 3.7.5: the envelope needs SMTPUTF8 when an address has UTF-8 left after the
     * domains became A-labels, i.e. in a local part. */
    sc->needs_smtputf8 = f.utf8_headers || utf8_has_8bit(sc->sender, strlen(sc->sender));
    for (size_t i = 0; i < sc->n_rcpts; i++) {
        const char *a = sc->rcpts[i].address;
        sc->needs_smtputf8 = sc->needs_smtputf8 || utf8_has_8bit(a, strlen(a));
    }
    sc->strip_bytes = f.strip_bytes;
    sc->size_bytes = f.size_bytes;
    return STORE_OK;
}

static void report(struct smtp_client *sc, struct smtp_client_result *res)
{
    if (sc->reported)
        return;
    sc->reported = true;
    if (!sc->cancelled)
        sc->done(sc->arg, res);
    sc->rcpts = NULL;
}

static void dot_unanswered(struct smtp_client *sc, const char *why);

/*
 * A host-level failure: undecided recipients stay PENDING, the connection goes. After the end of
 * data our own failure (code 0: a timeout, a malformed reply) leaves the outcome unknown instead
 * (dot_unanswered); a 421 there is the server's refusal and stays a host failure.
 */
static void host_failure(struct smtp_client *sc, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void host_failure(struct smtp_client *sc, int code, const char *fmt, ...)
{
    struct smtp_client_result res = {.host_failed = true, .code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res.error, sizeof(res.error), fmt, ap);
    va_end(ap);
    if (sc->conn != NULL)
        res.used_tls = conn_is_tls(sc->conn);
    if (sc->state == ST_DOT && code == 0)
        dot_unanswered(sc, res.error);
    else
        report(sc, &res);
    if (sc->state == ST_BODY) {
        /* Anything written now would be read as body text: cut the connection before the end
         * of data, so the server discards the message (RFC 5321 4.1.1.4). */
        conn_abort(sc->conn, "host-failure");
        return;
    }
    if (sc->conn != NULL && !conn_is_closing(sc->conn)) {
        sc->state = ST_QUIT;
        conn_write(sc->conn, "QUIT\r\n", 6);
        conn_close(sc->conn, "host-failure");
    }
}

static void set_rcpt_own(struct smtp_client_rcpt *r, enum smtp_rcpt_status st, int code,
                         const char *text, const char *dsn)
{
    r->status = st;
    r->code = code;
    snprintf(r->reply, sizeof(r->reply), "%s", text);
    snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
}

static void set_rcpt(struct smtp_client_rcpt *r, enum smtp_rcpt_status st, int code,
                     const char *text)
{
    set_rcpt_own(r, st, code, text, "");
}

/* Every recipient is decided: report, then QUIT (and close at once when the server stops). */
static void finish(struct smtp_client *sc)
{
    struct smtp_client_result res = {.used_tls = conn_is_tls(sc->conn)};
    report(sc, &res);
    sc->state = ST_QUIT;
    conn_keep_at_shutdown(sc->conn, false);
    conn_set_timeout(sc->conn, SMTP_CLIENT_COMMAND_TIMEOUT_MS);
    conn_write(sc->conn, "QUIT\r\n", 6);
    if (sc->stopping)
        conn_close(sc->conn, "shutdown");
}

static void send_mail(struct smtp_client *sc)
{
    char params[64] = "";
    size_t used = 0;
    if (sc->caps.size)
        used += (size_t)snprintf(params + used, sizeof(params) - used, " SIZE=%llu",
                                 (unsigned long long)sc->size_bytes);
    if (sc->caps.eightbitmime && sc->has_8bit)
        used += (size_t)snprintf(params + used, sizeof(params) - used, " BODY=8BITMIME");
    /* start_transaction has made sure the server offers it. */
    if (sc->needs_smtputf8)
        snprintf(params + used, sizeof(params) - used, " SMTPUTF8");
    conn_reply(sc->conn, "MAIL FROM:<%s>%s\r\n", sc->sender, params);
}

static void send_rcpt(struct smtp_client *sc, size_t i)
{
    conn_reply(sc->conn, "RCPT TO:<%s>\r\n", sc->rcpts[i].address);
}

/* After EHLO/HELO (and TLS): the transaction proper. */
static void start_transaction(struct smtp_client *sc)
{
    if (sc->caps.size && sc->caps.size_max_bytes > 0 && sc->size_bytes > sc->caps.size_max_bytes) {
        /* RFC 1870 6: the server declared a fixed limit; sending would only get 552. */
        char text[160];
        snprintf(text, sizeof(text),
                 "message size %llu exceeds the fixed limit %llu of %s (RFC 1870)",
                 (unsigned long long)sc->size_bytes, (unsigned long long)sc->caps.size_max_bytes,
                 sc->remote_host);
        for (size_t i = 0; i < sc->n_rcpts; i++)
            if (sc->rcpts[i].status == SMTP_RCPT_PENDING)
                set_rcpt_own(&sc->rcpts[i], SMTP_RCPT_BOUNCE, 0, text, "5.3.4");
        finish(sc);
        return;
    }
    if (sc->needs_smtputf8 && !sc->caps.smtputf8) {
        /* RFC 6531 3.7.5: not sent, and not downgraded (the addresses have no ASCII form). */
        char text[160];
        snprintf(text, sizeof(text),
                 "non-ASCII addresses not permitted for that recipient: %s does not offer "
                 "SMTPUTF8 (RFC 6531)",
                 sc->remote_host);
        for (size_t i = 0; i < sc->n_rcpts; i++)
            if (sc->rcpts[i].status == SMTP_RCPT_PENDING)
                set_rcpt_own(&sc->rcpts[i], SMTP_RCPT_BOUNCE, 0, text, "5.6.7");
        finish(sc);
        return;
    }
    sc->pipelined = sc->caps.pipelining;
    sc->bdat = sc->caps.pipelining && sc->caps.chunking;
    sc->chunks_unanswered = 0;
    sc->state = ST_MAIL;
    sc->rcpt_i = 0;
    sc->accepted = 0;
    conn_set_timeout(sc->conn, SMTP_CLIENT_COMMAND_TIMEOUT_MS);
    send_mail(sc);
    if (sc->pipelined) {
        for (size_t i = 0; i < sc->n_rcpts; i++)
            send_rcpt(sc, i);
        if (!sc->bdat)
            conn_write(sc->conn, "DATA\r\n", 6);
    }
}

static void after_ehlo(struct smtp_client *sc)
{
    if (sc->caps.starttls && !conn_is_tls(sc->conn) && conn_can_starttls(sc->conn)) {
        sc->state = ST_STARTTLS;
        conn_write(sc->conn, "STARTTLS\r\n", 10);
        return;
    }
    if (sc->auth_line != NULL) {
        /* Credentials never go out in the clear: no TLS, no AUTH, no transaction. */
        if (!conn_is_tls(sc->conn)) {
            host_failure(sc, 0, "%s: smarthost requires TLS for AUTH: STARTTLS not offered",
                         sc->remote_host);
            return;
        }
        if (!sc->caps.auth_plain) {
            host_failure(sc, 0, "%s: smarthost does not offer AUTH PLAIN after STARTTLS",
                         sc->remote_host);
            return;
        }
        sc->state = ST_AUTH;
        conn_write(sc->conn, sc->auth_line, sc->auth_line_len);
        return;
    }
    start_transaction(sc);
}

/*
 * The smarthost refused our credentials (535 5.7.8, RFC 4954 6) or AUTH failed otherwise. Every
 * recipient is deferred, never bounced, whatever the class: a wrong or expired password is this
 * server's configuration error, and bouncing would return every user's mail until someone fixes
 * it; deferred mail goes out on a later attempt once the password is right (or bounces at
 * max_age like any other deferral). The status keeps the reply's detail in class 4.
 */
static void auth_failed(struct smtp_client *sc, int code, const char *text)
{
    char dsn[DSN_STATUS_BYTES];
    smtp_reply_enhanced(code, text, dsn);
    dsn[0] = '4';
    for (size_t i = 0; i < sc->n_rcpts; i++)
        if (sc->rcpts[i].status == SMTP_RCPT_PENDING)
            set_rcpt_own(&sc->rcpts[i], SMTP_RCPT_DEFER, code, text, dsn);
    finish(sc);
}

/* Recipients accepted at RCPT take the data's result. */
static void decide_accepted(struct smtp_client *sc, enum smtp_rcpt_status st, int code,
                            const char *text)
{
    for (size_t i = 0; i < sc->n_rcpts; i++)
        if (sc->rcpt_ok[i] && sc->rcpts[i].status == SMTP_RCPT_PENDING)
            set_rcpt_own(&sc->rcpts[i], st, code, text, code == 0 ? "4.3.0" : "");
}

static void pump_body(struct smtp_client *sc);

/*
 * The end of data was sent and no usable reply came: the server may have the message (RFC 1047).
 * Deferred, not left to the next address: a second copy at once breaks "at most twice" (queue.h).
 */
static void dot_unanswered(struct smtp_client *sc, const char *why)
{
    char text[SMTP_REPLY_TEXT_MAX_BYTES];
    snprintf(text, sizeof(text),
             "%s: no reply to the end of data (%s); the message may have been delivered",
             sc->remote_host, why);
    /* RFC 3463 4.4.2: bad connection. */
    for (size_t i = 0; i < sc->n_rcpts; i++)
        if (sc->rcpt_ok[i] && sc->rcpts[i].status == SMTP_RCPT_PENDING)
            set_rcpt_own(&sc->rcpts[i], SMTP_RCPT_DEFER, 0, text, "4.4.2");
    struct smtp_client_result res = {.used_tls = sc->conn != NULL && conn_is_tls(sc->conn)};
    report(sc, &res);
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
                 postern_strerror(rc), store_errmsg(sc->store));
    decide_accepted(sc, SMTP_RCPT_DEFER, 0, text);
    struct smtp_client_result res = {0};
    report(sc, &res);
    conn_abort(sc->conn, close_reason);
}

static void start_body(struct smtp_client *sc)
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
    pump_body(sc);
}

static void pump_body(struct smtp_client *sc)
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

/* One complete reply in the current state. */
/* A reply to a BDAT chunk that was not the LAST one (head comment). */
static void on_chunk_reply(struct smtp_client *sc, int code, const char *text)
{
    sc->chunks_unanswered--;
    if (code / 100 == 2)
        return;
    if (code == 421) {
        host_failure(sc, code, "%s", text); /* RFC 5321 3.8: as for any other command */
        return;
    }
    decide_accepted(sc, code / 100 == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code, text);
    if (sc->state == ST_BODY) {
        /* Whole chunks only were queued, so the server reads QUIT as a command. */
        store_body_close(&sc->reader);
        conn_body_end(sc->conn);
    }
    finish(sc);
}

static void on_reply(struct smtp_client *sc, int code, const char *text)
{
    int cls = code / 100;
    if (sc->bdat && sc->chunks_unanswered > 0 && (sc->state == ST_BODY || sc->state == ST_DOT)) {
        on_chunk_reply(sc, code, text);
        return;
    }
    if (sc->state == ST_BODY) {
        /* RFC 5321 4.1.1.4: the server replies after the end of data, which we have not sent:
         * this reply can neither deliver nor bounce (smtp_client.h, "The end of data"). */
        host_failure(sc, code, "%s replied before the end of data (protocol violation): %s",
                     sc->remote_host, text);
        return;
    }
    if (code == 421 && sc->state != ST_QUIT) {
        /* RFC 5321 3.8: the server is closing the channel. Recipients accepted at RCPT are
         * still PENDING (only the end of data decides them): they go to the next host. */
        host_failure(sc, code, "%s", text);
        return;
    }
    switch (sc->state) {
    case ST_GREETING:
        if (code != 220) {
            host_failure(sc, code, "%s", text);
            return;
        }
        sc->state = ST_EHLO;
        conn_reply(sc->conn, "EHLO %s\r\n", sc->helo_name);
        return;
    case ST_EHLO:
        if (cls == 2) {
            sc->esmtp = true;
            after_ehlo(sc);
        } else if (cls == 5) {
            sc->state = ST_HELO; /* RFC 5321 3.2: a server that predates EHLO */
            conn_reply(sc->conn, "HELO %s\r\n", sc->helo_name);
        } else {
            host_failure(sc, code, "%s", text);
        }
        return;
    case ST_HELO:
        if (cls != 2) {
            host_failure(sc, code, "%s", text);
            return;
        }
        if (sc->auth_line != NULL) {
            /* HELO has neither STARTTLS nor AUTH; going on unauthenticated would only get
             * "530 authentication required", a 5xx that would bounce. */
            host_failure(sc, 0, "%s: smarthost requires TLS for AUTH: EHLO refused",
                         sc->remote_host);
            return;
        }
        memset(&sc->caps, 0, sizeof(sc->caps));
        start_transaction(sc);
        return;
    case ST_STARTTLS:
        if (code == 220) {
            sc->state = ST_HANDSHAKE;
            if (conn_starttls(sc->conn) != 0)
                host_failure(sc, 0, "cannot start TLS");
            return;
        }
        if (sc->auth_line != NULL) {
            host_failure(sc, code, "%s: smarthost requires TLS for AUTH: STARTTLS refused: %s",
                         sc->remote_host, text);
            return;
        }
        start_transaction(sc); /* opportunistic: go on in plaintext (RFC 7435) */
        return;
    case ST_AUTH:
        if (code == 235) {
            start_transaction(sc);
            return;
        }
        auth_failed(sc, code, text);
        return;
    case ST_HANDSHAKE:
        /* Nothing may arrive before the handshake is done. */
        host_failure(sc, code, "reply during the TLS handshake: %s", text);
        return;
    case ST_MAIL:
        if (cls != 2) {
            sc->mail_failed = true;
            for (size_t i = 0; i < sc->n_rcpts; i++)
                if (sc->rcpts[i].status == SMTP_RCPT_PENDING)
                    set_rcpt(&sc->rcpts[i], cls == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code,
                             text);
            if (!sc->pipelined) {
                finish(sc);
                return;
            }
        }
        sc->state = ST_RCPT;
        sc->rcpt_i = 0;
        if (!sc->pipelined)
            send_rcpt(sc, 0);
        return;
    case ST_RCPT: {
        size_t i = sc->rcpt_i++;
        if (!sc->mail_failed) {
            if (cls == 2) {
                sc->rcpt_ok[i] = true;
                sc->accepted++;
            } else {
                set_rcpt(&sc->rcpts[i], cls == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code, text);
            }
        }
        if (sc->rcpt_i < sc->n_rcpts) {
            if (!sc->pipelined)
                send_rcpt(sc, sc->rcpt_i);
            return;
        }
        if ((!sc->pipelined || sc->bdat) && (sc->accepted == 0 || sc->mail_failed)) {
            finish(sc);
            return;
        }
        if (sc->bdat) {
            start_body(sc);
            return;
        }
        sc->state = ST_DATA;
        conn_set_timeout(sc->conn, SMTP_CLIENT_DATA_INIT_TIMEOUT_MS);
        if (!sc->pipelined)
            conn_write(sc->conn, "DATA\r\n", 6);
        return;
    }
    case ST_DATA:
        if (code == 354) {
            if (sc->accepted == 0 || sc->mail_failed) {
                /* RFC 2920 3.1: the server took DATA with no valid recipient; end it empty. */
                sc->state = ST_EMPTY_DOT;
                conn_write(sc->conn, ".\r\n", 3);
                return;
            }
            start_body(sc);
            return;
        }
        if (sc->accepted > 0 && !sc->mail_failed)
            decide_accepted(sc, cls == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code, text);
        finish(sc);
        return;
    case ST_DOT:
        /* The reply to the end of data: the only reply that delivers. */
        if (cls == 2)
            decide_accepted(sc, SMTP_RCPT_SENT, code, text);
        else
            decide_accepted(sc, cls == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code, text);
        finish(sc);
        return;
    case ST_EMPTY_DOT:
        finish(sc);
        return;
    case ST_QUIT:
        conn_close(sc->conn, "quit");
        return;
    case ST_CONNECTING:
    case ST_BODY: /* answered above */
        return;
    }
}

static void c_open(struct conn *c)
{
    struct smtp_client *sc = conn_session(c);
    sc->state = ST_GREETING;
    conn_set_timeout(c, SMTP_CLIENT_INITIAL_TIMEOUT_MS);
}

static void c_line(struct conn *c, const char *line, size_t len)
{
    struct smtp_client *sc = conn_session(c);
    if (conn_is_tls(c))
        sc->tls_heard = true;
    int st = smtp_reply_feed(&sc->reply, line, len);
    if (st == SMTP_REPLY_BAD) {
        char esc[200];
        host_failure(sc, 0, "malformed reply from %s: %s", sc->remote_host,
                     log_escape(esc, sizeof(esc), line, len));
        return;
    }
    if (st == SMTP_REPLY_MORE) {
        if (sc->state == ST_EHLO && sc->reply.lines > 1 && len > 4)
            smtp_ehlo_parse_line(&sc->caps, line + 4, len - 4);
        return;
    }
    if (sc->state == ST_EHLO && sc->reply.lines > 1 && len > 4)
        smtp_ehlo_parse_line(&sc->caps, line + 4, len - 4);
    char text[SMTP_REPLY_TEXT_MAX_BYTES];
    memcpy(text, sc->reply.text, sc->reply.len + 1);
    int code = sc->reply.code;
    smtp_reply_reset(&sc->reply);
    on_reply(sc, code, text);
}

static void c_bad_line(struct conn *c, enum linereader_status why)
{
    struct smtp_client *sc = conn_session(c);
    host_failure(sc, 0, "%s sent a reply line that is too long or holds NUL", sc->remote_host);
    (void)why;
}

static void c_tls_ready(struct conn *c)
{
    struct smtp_client *sc = conn_session(c);
    /* RFC 3207 4.2: forget what was learned before TLS and ask again. */
    memset(&sc->caps, 0, sizeof(sc->caps));
    sc->state = ST_EHLO;
    conn_reply(c, "EHLO %s\r\n", sc->helo_name);
}

static void c_drain(struct conn *c)
{
    struct smtp_client *sc = conn_session(c);
    if (sc->state == ST_BODY)
        pump_body(sc);
}

static void c_timeout(struct conn *c)
{
    struct smtp_client *sc = conn_session(c);
    host_failure(sc, 0, "%s waiting for %s",
                 sc->state == ST_DOT && sc->stopping ? "timeout at shutdown" : "timeout",
                 sc->remote_host);
}

/* The server is stopping. After the end of data the connection is kept open and the reply
 * awaited, for at most SMTP_CLIENT_SHUTDOWN_DOT_WAIT_MS more; before it, it just closes. */
static void c_shutdown(struct conn *c)
{
    struct smtp_client *sc = conn_session(c);
    if (sc == NULL)
        return;
    sc->stopping = true;
    if (sc->state != ST_DOT)
        return;
    uint64_t waited = uv_now(conn_loop(c)) - sc->dot_sent_ms;
    uint64_t wait_ms =
        waited < SMTP_CLIENT_FINAL_DOT_TIMEOUT_MS ? SMTP_CLIENT_FINAL_DOT_TIMEOUT_MS - waited : 1;
    if (wait_ms > SMTP_CLIENT_SHUTDOWN_DOT_WAIT_MS)
        wait_ms = SMTP_CLIENT_SHUTDOWN_DOT_WAIT_MS;
    conn_set_timeout(c, wait_ms);
    log_info("smtp-out", 0, "event=awaiting-end-of-data host=%s max_wait_ms=%llu", sc->remote_host,
             (unsigned long long)wait_ms);
}

static void c_close(struct conn *c, const char *reason)
{
    struct smtp_client *sc = conn_session(c);
    if (sc == NULL)
        return;
    conn_set_session(c, NULL);
    if (!sc->reported && sc->state == ST_DOT) {
        char why[CONN_REASON_MAX_BYTES + 32];
        snprintf(why, sizeof(why), "connection lost: %s", reason);
        dot_unanswered(sc, why);
    }
    if (!sc->reported) {
        struct smtp_client_result res = {.host_failed = true};
        /* A handshake that fails, or TLS that breaks right after it (with TLS 1.3 a server
         * that refuses our certificate-less handshake says so only after its Finished). */
        if (sc->state == ST_HANDSHAKE || strncmp(reason, "tls-error", 9) == 0)
            res.tls_failed = true;
        /* With TLS 1.3 a server refusing the handshake may say so only after our Finished,
         * when we have sent EHLO already: no reply under TLS yet means the handshake failed. */
        if (res.tls_failed && sc->auth_line != NULL) {
            /* AUTH needs TLS: no retry in the clear (the runner would retry on tls_failed). */
            res.tls_failed = false;
            snprintf(res.error, sizeof(res.error), "%s: smarthost requires TLS for AUTH: %s (%s)",
                     sc->remote_host,
                     sc->state == ST_HANDSHAKE || !sc->tls_heard ? "TLS handshake failed"
                                                                 : "TLS failed",
                     reason);
        } else if (sc->state == ST_CONNECTING)
            snprintf(res.error, sizeof(res.error), "%s: %s", sc->remote_host, reason);
        else
            snprintf(res.error, sizeof(res.error), "%s: connection lost (%s)", sc->remote_host,
                     reason);
        report(sc, &res);
    }
    sc->conn = NULL;
    client_free(sc);
}

/*
 * The transcript's mask: our "AUTH PLAIN initial-response" (RFC 4954 4, the smarthost's
 * credentials) keeps the verb and the mechanism. The rule is the server sessions' one
 * (command.h), applied in both directions: here our commands are the lines sent, and a server's
 * reply starts with its code, so the rule never masks one.
 */
static size_t c_transcript_visible(const char *line, size_t len, bool outgoing)
{
    (void)outgoing;
    return command_transcript_visible(line, len, false);
}

static const struct conn_handler client_handler = {
    .proto = "smtp-out",
    .max_line_bytes = SMTP_REPLY_LINE_MAX_BYTES,
    .largest_line_bytes = SMTP_REPLY_LINE_MAX_BYTES,
    .on_open = c_open,
    .on_line = c_line,
    .on_bad_line = c_bad_line,
    .on_tls_ready = c_tls_ready,
    .on_timeout = c_timeout,
    .on_shutdown = c_shutdown,
    .on_drain = c_drain,
    .on_close = c_close,
    .transcript_visible = c_transcript_visible,
};

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

int smtp_client_start(const struct smtp_client_params *p, struct smtp_client **out)
{
    *out = NULL;
    if (p->n_rcpts == 0 || p->done == NULL)
        return -EINVAL;
    struct smtp_client *sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return -ENOMEM;
    sc->remote_host = dup_or_empty(p->remote_host);
    sc->helo_name = dup_or_empty(p->helo_name);
    sc->sender = dup_or_empty(p->sender);
    sc->rcpt_ok = calloc(p->n_rcpts, sizeof(*sc->rcpt_ok));
    if (sc->remote_host == NULL || sc->helo_name == NULL || sc->sender == NULL ||
        sc->rcpt_ok == NULL) {
        client_free(sc);
        return -ENOMEM;
    }
    if (p->creds != NULL) {
        char line[SMTP_CLIENT_AUTH_LINE_MAX_BYTES];
        int n = smtp_client_creds_auth_line(p->creds, line, sizeof(line));
        if (n > 0 && (sc->auth_line = malloc((size_t)n + 1)) != NULL) {
            memcpy(sc->auth_line, line, (size_t)n + 1);
            sc->auth_line_len = (size_t)n;
        }
        sodium_memzero(line, sizeof(line));
        if (sc->auth_line == NULL) {
            client_free(sc);
            return -ENOMEM;
        }
    }
    sc->rcpts = p->rcpts;
    sc->n_rcpts = p->n_rcpts;
    sc->store = p->store;
    sc->message_id = p->message_id;
    sc->done = p->done;
    sc->arg = p->arg;
    smtp_reply_reset(&sc->reply);
    for (size_t i = 0; i < sc->n_rcpts; i++)
        set_rcpt(&sc->rcpts[i], SMTP_RCPT_PENDING, 0, "");
    int rc = body_facts(sc);
    if (rc != STORE_OK) {
        client_free(sc);
        return rc;
    }
    struct conn_params cp = {
        .handler = &client_handler,
        .service = CONN_SERVICE_OUTBOUND,
        .tls_ctx = p->tls_ctx,
        .sni_hostname = sc->remote_host[0] != '\0' && !domain_is_ip_literal(sc->remote_host)
                            ? sc->remote_host
                            : NULL,
    };
    struct conn *c = NULL;
    rc = conn_connect(p->conns, p->addr, &cp, &c);
    if (rc != 0) {
        client_free(sc);
        return rc;
    }
    sc->conn = c;
    sc->state = ST_CONNECTING;
    conn_set_session(c, sc);
    *out = sc;
    return 0;
}

bool smtp_client_awaits_dot_reply(const struct smtp_client *c)
{
    return c != NULL && !c->reported && c->state == ST_DOT;
}

void smtp_client_cancel(struct smtp_client **cp)
{
    struct smtp_client *sc = *cp;
    *cp = NULL;
    if (sc == NULL || sc->reported)
        return;
    sc->cancelled = true;
    sc->reported = true;
    sc->rcpts = NULL;
    if (sc->conn != NULL)
        conn_abort(sc->conn, "cancelled"); /* c_close frees sc */
}
