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
 * The body itself (DATA with dot-stuffing, BDAT chunks, pumped under backpressure) is streamed by
 * smtp_client_body.c; smtp_client_internal.h is what the two share. The smarthost credentials
 * and the AUTH PLAIN line are in smtp_client_creds.c.
 *
 * Ownership: the struct smtp_client is owned by itself from smtp_client_start on, and freed in
 * the connection's on_close, or, when a read is out then (reader threads), in that read's done;
 * a client whose facts read fails or that is cancelled before it connected is freed there too. The
 * caller's recipient array is borrowed only until done runs; after that (the QUIT phase) the client
 * touches nothing of the caller's.
 */
#include "server/outbound/smtp_client.h"

#include "server/outbound/smtp_client_internal.h"

#include <errno.h>
#include <netinet/in.h>
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

void smtp_client_free(struct smtp_client *sc)
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

/* SIZE=, BODY= and the Return-Path to drop (server/outbound/smtp_client_facts.h), read. */
static void take_facts(struct smtp_client *sc)
{
    const struct smtp_client_facts f = sc->facts;
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
    sc->dsn_ret = f.dsn_ret;
    snprintf(sc->dsn_envid, sizeof(sc->dsn_envid), "%s", f.dsn_envid);
}

static const struct conn_handler client_handler;

/* The facts are in: make the connection. 0 or a negative errno/libuv code. */
static int client_connect(struct smtp_client *sc)
{
    take_facts(sc);
    struct conn_params cp = {
        .handler = &client_handler,
        .service = CONN_SERVICE_OUTBOUND,
        .tls_ctx = sc->tls_ctx,
        .sni_hostname = sc->remote_host[0] != '\0' && !domain_is_ip_literal(sc->remote_host)
                            ? sc->remote_host
                            : NULL,
    };
    struct conn *c = NULL;
    int rc = conn_connect(sc->conns, (const struct sockaddr *)&sc->addr, &cp, &c);
    if (rc != 0)
        return rc;
    sc->conn = c;
    sc->state = ST_CONNECTING;
    conn_set_session(c, sc);
    return 0;
}

void smtp_client_facts_back(struct smtp_client *sc, int status)
{
    if (sc->cancelled) {
        smtp_client_free(sc);
        return;
    }
    int rc = status;
    struct smtp_client_result res = {.store_rc = status};
    if (rc == STORE_OK) {
        rc = client_connect(sc);
        if (rc == 0)
            return;
        /* As a start that cannot connect: a host-level failure at this address. */
        res = (struct smtp_client_result){.host_failed = true};
        snprintf(res.error, sizeof(res.error), "%s: cannot connect (%s)", sc->remote_host,
                 postern_strerror(rc));
    } else {
        snprintf(res.error, sizeof(res.error), "%s", sc->read_error);
    }
    smtp_client_report(sc, &res);
    smtp_client_free(sc);
}

void smtp_client_report(struct smtp_client *sc, struct smtp_client_result *res)
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
void smtp_client_host_failure(struct smtp_client *sc, int code, const char *fmt, ...)
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
        smtp_client_report(sc, &res);
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
void smtp_client_finish(struct smtp_client *sc)
{
    struct smtp_client_result res = {.used_tls = conn_is_tls(sc->conn)};
    smtp_client_report(sc, &res);
    sc->state = ST_QUIT;
    conn_keep_at_shutdown(sc->conn, false);
    conn_set_timeout(sc->conn, SMTP_CLIENT_COMMAND_TIMEOUT_MS);
    conn_write(sc->conn, "QUIT\r\n", 6);
    if (sc->stopping)
        conn_close(sc->conn, "shutdown");
}

static void send_mail(struct smtp_client *sc)
{
    /* Room for every parameter: SIZE, BODY, SMTPUTF8, RET and a 100-character ENVID. */
    char params[96 + SMTP_DSN_ENVID_MAX_BYTES] = "";
    size_t used = 0;
    if (sc->caps.size)
        used += (size_t)snprintf(params + used, sizeof(params) - used, " SIZE=%llu",
                                 (unsigned long long)sc->size_bytes);
    if (sc->caps.eightbitmime && sc->has_8bit)
        used += (size_t)snprintf(params + used, sizeof(params) - used, " BODY=8BITMIME");
    /* start_transaction has made sure the server offers it. */
    if (sc->needs_smtputf8)
        used += (size_t)snprintf(params + used, sizeof(params) - used, " SMTPUTF8");
    /* RFC 3461 5.2.1: to a server that offers DSN, the parameters go on as they came. */
    if (sc->caps.dsn && sc->dsn_ret != SMTP_DSN_RET_NONE)
        used += (size_t)snprintf(params + used, sizeof(params) - used, " RET=%s",
                                 sc->dsn_ret == SMTP_DSN_RET_FULL ? "FULL" : "HDRS");
    if (sc->caps.dsn && sc->dsn_envid[0] != '\0')
        snprintf(params + used, sizeof(params) - used, " ENVID=%s", sc->dsn_envid);
    conn_reply(sc->conn, "MAIL FROM:<%s>%s\r\n", sc->sender, params);
}

static void send_rcpt(struct smtp_client *sc, size_t i)
{
    struct smtp_client_rcpt *r = &sc->rcpts[i];
    char notify[48] = "";
    /* The one place a recipient learns whether its DSN request went on: the runner sends a
     * "relayed" notice itself only when it did not (RFC 3461 5.2.2). */
    r->dsn_passed = sc->caps.dsn;
    if (sc->caps.dsn && r->notify != 0) {
        if (r->notify & SMTP_NOTIFY_NEVER)
            snprintf(notify, sizeof(notify), " NOTIFY=NEVER");
        else
            snprintf(notify, sizeof(notify), " NOTIFY=%s%s%s%s%s",
                     r->notify & SMTP_NOTIFY_SUCCESS ? "SUCCESS" : "",
                     (r->notify & SMTP_NOTIFY_SUCCESS) && (r->notify & 6u) ? "," : "",
                     r->notify & SMTP_NOTIFY_FAILURE ? "FAILURE" : "",
                     (r->notify & SMTP_NOTIFY_FAILURE) && (r->notify & SMTP_NOTIFY_DELAY) ? ","
                                                                                          : "",
                     r->notify & SMTP_NOTIFY_DELAY ? "DELAY" : "");
    }
    bool orcpt = sc->caps.dsn && r->orcpt != NULL && r->orcpt[0] != '\0';
    conn_reply(sc->conn, "RCPT TO:<%s>%s%s%s\r\n", r->address, notify, orcpt ? " ORCPT=" : "",
               orcpt ? r->orcpt : "");
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
        smtp_client_finish(sc);
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
        smtp_client_finish(sc);
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
            smtp_client_host_failure(sc, 0,
                                     "%s: smarthost requires TLS for AUTH: STARTTLS not offered",
                                     sc->remote_host);
            return;
        }
        if (!sc->caps.auth_plain) {
            smtp_client_host_failure(
                sc, 0, "%s: smarthost does not offer AUTH PLAIN after STARTTLS", sc->remote_host);
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
    smtp_client_finish(sc);
}

/* Recipients accepted at RCPT take the data's result. */
void smtp_client_decide_accepted(struct smtp_client *sc, enum smtp_rcpt_status st, int code,
                                 const char *text)
{
    for (size_t i = 0; i < sc->n_rcpts; i++)
        if (sc->rcpt_ok[i] && sc->rcpts[i].status == SMTP_RCPT_PENDING)
            set_rcpt_own(&sc->rcpts[i], st, code, text, code == 0 ? "4.3.0" : "");
}

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
    smtp_client_report(sc, &res);
}

/* One complete reply in the current state. */
static void on_reply(struct smtp_client *sc, int code, const char *text)
{
    int cls = code / 100;
    if (sc->bdat && sc->chunks_unanswered > 0 && (sc->state == ST_BODY || sc->state == ST_DOT)) {
        smtp_client_on_chunk_reply(sc, code, text);
        return;
    }
    if (sc->state == ST_BODY) {
        /* RFC 5321 4.1.1.4: the server replies after the end of data, which we have not sent:
         * this reply can neither deliver nor bounce (smtp_client.h, "The end of data"). */
        smtp_client_host_failure(sc, code,
                                 "%s replied before the end of data (protocol violation): %s",
                                 sc->remote_host, text);
        return;
    }
    if (code == 421 && sc->state != ST_QUIT) {
        /* RFC 5321 3.8: the server is closing the channel. Recipients accepted at RCPT are
         * still PENDING (only the end of data decides them): they go to the next host. */
        smtp_client_host_failure(sc, code, "%s", text);
        return;
    }
    switch (sc->state) {
    case ST_GREETING:
        if (code != 220) {
            smtp_client_host_failure(sc, code, "%s", text);
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
            smtp_client_host_failure(sc, code, "%s", text);
        }
        return;
    case ST_HELO:
        if (cls != 2) {
            smtp_client_host_failure(sc, code, "%s", text);
            return;
        }
        if (sc->auth_line != NULL) {
            /* HELO has neither STARTTLS nor AUTH; going on unauthenticated would only get
             * "530 authentication required", a 5xx that would bounce. */
            smtp_client_host_failure(sc, 0, "%s: smarthost requires TLS for AUTH: EHLO refused",
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
                smtp_client_host_failure(sc, 0, "cannot start TLS");
            return;
        }
        if (sc->auth_line != NULL) {
            smtp_client_host_failure(sc, code,
                                     "%s: smarthost requires TLS for AUTH: STARTTLS refused: %s",
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
        smtp_client_host_failure(sc, code, "reply during the TLS handshake: %s", text);
        return;
    case ST_MAIL:
        if (cls != 2) {
            sc->mail_failed = true;
            for (size_t i = 0; i < sc->n_rcpts; i++)
                if (sc->rcpts[i].status == SMTP_RCPT_PENDING)
                    set_rcpt(&sc->rcpts[i], cls == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code,
                             text);
            if (!sc->pipelined) {
                smtp_client_finish(sc);
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
            smtp_client_finish(sc);
            return;
        }
        if (sc->bdat) {
            smtp_client_start_body(sc);
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
            smtp_client_start_body(sc);
            return;
        }
        if (sc->accepted > 0 && !sc->mail_failed)
            smtp_client_decide_accepted(sc, cls == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code,
                                        text);
        smtp_client_finish(sc);
        return;
    case ST_DOT:
        /* The reply to the end of data: the only reply that delivers. */
        if (cls == 2)
            smtp_client_decide_accepted(sc, SMTP_RCPT_SENT, code, text);
        else
            smtp_client_decide_accepted(sc, cls == 5 ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code,
                                        text);
        smtp_client_finish(sc);
        return;
    case ST_EMPTY_DOT:
        smtp_client_finish(sc);
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
        smtp_client_host_failure(sc, 0, "malformed reply from %s: %s", sc->remote_host,
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
    smtp_client_host_failure(sc, 0, "%s sent a reply line that is too long or holds NUL",
                             sc->remote_host);
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
        smtp_client_pump_body(sc);
}

static void c_timeout(struct conn *c)
{
    struct smtp_client *sc = conn_session(c);
    smtp_client_host_failure(
        sc, 0, "%s waiting for %s",
        sc->state == ST_DOT && sc->stopping ? "timeout at shutdown" : "timeout", sc->remote_host);
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
        smtp_client_report(sc, &res);
    }
    sc->conn = NULL;
    if (sc->read_out)
        sc->free_after_read = true; /* the read uses sc: its done frees */
    else
        smtp_client_free(sc);
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
        smtp_client_free(sc);
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
            smtp_client_free(sc);
            return -ENOMEM;
        }
    }
    sc->rcpts = p->rcpts;
    sc->n_rcpts = p->n_rcpts;
    sc->reads = p->reads;
    sc->message_id = p->message_id;
    sc->conns = p->conns;
    sc->tls_ctx = p->tls_ctx;
    socklen_t alen =
        p->addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memcpy(&sc->addr, p->addr, alen);
    sc->done = p->done;
    sc->arg = p->arg;
    smtp_reply_reset(&sc->reply);
    for (size_t i = 0; i < sc->n_rcpts; i++)
        set_rcpt(&sc->rcpts[i], SMTP_RCPT_PENDING, 0, "");
    sc->read_what = SC_READ_FACTS;
    int rc;
    if (smtp_client_read(sc, &rc) == READER_PENDING) {
        *out = sc; /* smtp_client_facts_back connects, or reports the store's failure */
        return 0;
    }
    if (rc == STORE_OK)
        rc = client_connect(sc);
    else if (p->store_error != NULL && p->store_error_len > 0)
        snprintf(p->store_error, p->store_error_len, "%s", sc->read_error);
    if (rc != 0) {
        smtp_client_free(sc);
        return rc;
    }
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
    /* Else the facts read is still out (nothing else comes before the connection): its done
     * sees cancelled and frees sc. */
}
