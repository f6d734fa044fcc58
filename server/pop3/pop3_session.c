/*
 * pop3_session.c - the POP3 server session (RFC 1939) on top of server/net/conn.c: the command
 * table and dispatcher, CAPA (RFC 2449), STLS (RFC 2595), UTF8 (RFC 6856), QUIT and NOOP, the
 * error limit, the POP-before-SMTP relay window's renewals, and the close path. The
 * AUTHORIZATION state's login (USER/PASS, AUTH, the password check, the delayed failure answer,
 * the maildrop lock and the window's opening) is pop3_auth.c's; pop3_internal.h is what the two
 * share.
 *
 * Logging in (pop3_auth.c): the password is checked by server/auth/auth.c (argon2id in the
 * threadpool, a cache of successes, throttling). While a check, a failure delay or the window's
 * writer job is pending the session pauses reading, so pipelined commands wait their turn. A
 * failure gets the same "-ERR [AUTH]" whether the user exists or not, after auth's growing delay;
 * the connection is closed after POP3_MAX_AUTH_FAILURES of them (or at once when auth says the
 * client is over its limit). A success takes the maildrop lock (this process's entry, then its
 * database row, which holds across every node sharing the database) and opens the relay window
 * for relay.window in one writer job, then reads the snapshot; "+OK" goes out only after that
 * commit, so the very next SMTP command from the address sees the window, on any node. When that
 * write fails (a full disk) the login still succeeds, without a window: users must be able to fetch
 * and delete the mail that fills the disk, and the SMTP side refuses new mail meanwhile
 * (server/disk_reserve.h). While the session stays in TRANSACTION the window is renewed every
 * POP3_WINDOW_RENEW_MAX_MS (or relay.window / 2 if shorter), and once more at close, so it stays
 * open while connected and counts down from the end; an expiry is always finite, so a crash never
 * leaves an open relay behind. relay.window = 0: no window at all. A renewal that finds the account
 * deleted or its password changed since the login (pop3_window.h) ends the session: a revoked
 * password cannot keep a window open by keeping a session alive.
 *
 * What it does not do: sockets, line buffering, TLS, idle timers (conn.c); password checks
 * (auth.c); the maildrop lock, the TRANSACTION commands' answers and UPDATE's deletions
 * (pop3_maildrop.c, which this file calls through pop3_maildrop.h and which never calls back
 * here); SQL (storage/).
 *
 * An HTTP request line (command_is_http_request) ends the connection at once, unanswered, as in
 * the SMTP session: a browser or a cross-protocol probe, never a mail client.
 *
 * Transcript: the session masks the line after USER and every SASL response; conn.c itself masks
 * the argument of PASS and an AUTH command's initial response.
 *
 * Fault injection (server/fault/fault.h) hooks in before the greeting and in the dispatcher
 * before a command runs; a drop-body rule arms the maildrop's cut. Off, each hook returns at once.
 *
 * Ownership: a struct pop3_session is created in on_open, hangs off its connection and lives by
 * the reference count of server/net/session_ref.h, the same rule as the SMTP session's: the
 * connection holds one reference until on_close; the login's window job, a renewal made while
 * connected, the UPDATE job, a maildrop read out on a reader thread, an AUTH
 * verification (until it answers or on_close cancels it) and the closing of each uv timer hold
 * one each, and their completions look at ref.closed before touching the connection. Only this
 * file frees the session (pop3_session_release), when the last reference goes.
 */
#include "server/pop3/pop3_session.h"

#include "server/pop3/pop3_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "common/config.h"
#include "common/log.h"
#include "common/pure/cidr.h"
#include "common/pure/command.h"
#include "common/pure/pop3_parse.h"
#include "common/pure/sasl.h"
#include "server/app.h"
#include "server/auth/auth.h"
#include "server/fault/fault.h"
#include "server/metrics/metrics.h"
#include "server/net/session_ref.h"
#include "server/pop3/pop3_maildrop.h"
#include "server/pop3/pop3_window.h"
#include "storage/store.h"

/* Bit masks of states for the command table. */
#define POP3_IN_AUTHORIZATION (1u << POP3_STATE_AUTHORIZATION)
#define POP3_IN_TRANSACTION   (1u << POP3_STATE_TRANSACTION)

/* ---- small helpers ----------------------------------------------------------------------- */

static const char *state_name(enum pop3_state st)
{
    switch (st) {
    case POP3_STATE_AUTHORIZATION:
        return "authorization";
    case POP3_STATE_TRANSACTION:
        return "transaction";
    case POP3_STATE_UPDATE:
        return "update";
    }
    return "?";
}

void pop3_enter_state(struct pop3_session *s, enum pop3_state st)
{
    if (s->state != st)
        log_debug("pop3", conn_sid(s->conn), "event=state from=%s to=%s", state_name(s->state),
                  state_name(st));
    s->state = st;
}

void pop3_reply_error(struct pop3_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vreply(s->conn, fmt, ap);
    va_end(ap);
    conn_write(s->conn, "\r\n", 2);
    if (++s->errors >= POP3_MAX_ERRORS) {
        conn_reply(s->conn, "-ERR Too many errors\r\n");
        conn_close(s->conn, "too-many-errors");
    }
}

static void session_free(struct pop3_session *s)
{
    pop3_maildrop_close(&s->md);
    pop3_auth_drop(s);
    sodium_memzero(s->user, sizeof(s->user));
    sodium_memzero(s->user_hash, sizeof(s->user_hash));
    free(s);
}

/* Drops one reference (server/net/session_ref.h): the last one frees the session, here and
 * nowhere else. */
void pop3_session_release(struct pop3_session *s)
{
    if (session_ref_drop(&s->ref))
        session_free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    pop3_session_release(h->data);
}

/* ---- the relay window -------------------------------------------------------------------- */

/*
 * A renewal found the account deleted or its password changed since this session logged in: no
 * more renewals, and the session ends. Mid-RETR an -ERR would land inside the multi-line answer,
 * so then the connection just closes. UPDATE (after QUIT) is left to finish.
 */
static void end_revoked(struct pop3_session *s)
{
    s->window_opened = false;
    if (s->state != POP3_STATE_TRANSACTION)
        return;
    if (!pop3_maildrop_is_streaming(&s->md))
        conn_reply(s->conn, "-ERR [AUTH] Account deleted or password changed: log in again\r\n");
    conn_close(s->conn, "account-revoked");
}

/* A renewal made while connected is done; it held a reference to the session and the
 * connection. */
static void renew_done(void *ctx, int status)
{
    struct pop3_session *s = ctx;
    struct conn *c = s->conn;
    if (status == STORE_NOT_FOUND && !s->ref.closed)
        end_revoked(s);
    conn_unref(&c);
    pop3_session_release(s);
}

/* Renews the session's window from now. At close nobody waits for the answer: the job owns
 * itself. */
static void window_renew(struct pop3_session *s)
{
    uint64_t window_ms = s->app->cfg->relay.window_ms;
    if (!s->window_opened || window_ms == 0 || s->app->writer == NULL)
        return;
    struct pop3_window_user u = {.address = s->address, .id = s->user_id, .hash = s->user_hash};
    if (s->ref.closed) {
        pop3_window_renew(s->app->writer, s->window_key, &u, window_ms, NULL, NULL);
        return;
    }
    struct conn *c = s->conn;
    conn_ref(c);
    session_ref_take(&s->ref);
    if (pop3_window_renew(s->app->writer, s->window_key, &u, window_ms, renew_done, s) != 0) {
        pop3_session_release(s); /* never the last: the connection holds one */
        conn_unref(&c);
    }
}

void pop3_on_renew_timer(uv_timer_t *t)
{
    struct pop3_session *s = t->data;
    if (!s->ref.closed && s->state == POP3_STATE_TRANSACTION)
        window_renew(s);
}

void pop3_on_session_timer(uv_timer_t *t)
{
    struct pop3_session *s = t->data;
    if (s->ref.closed)
        return;
    if (s->state == POP3_STATE_TRANSACTION) {
        /* The stalled-reader timer (pump): the client took nothing for pop3.timeout. */
        if (pop3_maildrop_is_streaming(&s->md))
            conn_abort(s->conn, "timeout: reader stalled");
        return;
    }
    pop3_auth_failure_answer(s); /* the failure delay (pop3_auth.c) */
}

/* More of a multi-line answer; the session's timer watches a reader that takes nothing. */
static void pump(struct pop3_session *s)
{
    switch (pop3_maildrop_pump(&s->md)) {
    case POP3_PUMP_WAIT:
        if (s->timer_open)
            uv_timer_start(&s->timer, pop3_on_session_timer, s->app->cfg->pop3.timeout_ms, 0);
        return;
    case POP3_PUMP_DONE:
        if (s->timer_open)
            uv_timer_stop(&s->timer);
        return;
    case POP3_PUMP_FAILED:
        if (s->timer_open)
            uv_timer_stop(&s->timer);
        conn_abort(s->conn, "retr-failed");
        return;
    case POP3_PUMP_CUT:
        if (s->timer_open)
            uv_timer_stop(&s->timer);
        conn_close(s->conn, "fault-drop-body");
        return;
    case POP3_PUMP_READING:
        pop3_hold_for_read(s);
        return;
    case POP3_PUMP_IDLE:
        return;
    }
}

/* A TRANSACTION command's answer from pop3_maildrop.c. */
static void maildrop_answer(struct pop3_session *s, enum pop3_md_result r, const char *reply)
{
    if (r == POP3_MD_PENDING) {
        pop3_hold_for_read(s); /* the answer comes through pop3_maildrop_read_done */
        return;
    }
    if (r != POP3_MD_STREAM)
        s->md.cut = (struct fault_cut){0}; /* nothing streams: nothing to cut */
    if (r == POP3_MD_ERROR)
        pop3_reply_error(s, "%s", reply);
    else if (r == POP3_MD_STREAM)
        pump(s);
}

void pop3_hold_for_read(struct pop3_session *s)
{
    conn_ref(s->conn);
    session_ref_take(&s->ref);
}

void pop3_maildrop_read_done(void *ctx, enum pop3_md_read what, int result, const char *reply)
{
    struct pop3_session *s = ctx;
    struct conn *c = s->conn;
    if (!s->ref.closed) {
        switch (what) {
        case POP3_MD_READ_OPEN:
            pop3_login_opened(s, (enum pop3_md_open)result);
            break;
        case POP3_MD_READ_BODY:
            maildrop_answer(s, (enum pop3_md_result)result, reply);
            break;
        case POP3_MD_READ_CHUNK:
            pump(s);
            break;
        }
    }
    conn_unref(&c);
    pop3_session_release(s);
}

/* ---- commands valid in several states ------------------------------------------------------ */

static void cmd_capa(struct pop3_session *s, const char *args)
{
    struct conn *c = s->conn;
    bool authz = s->state == POP3_STATE_AUTHORIZATION;
    conn_reply(c, "+OK Capability list follows\r\nTOP\r\nUIDL\r\n");
    /* RFC 2449 6.8 and 6.3: USER and SASL only where they can be used. */
    if (authz && pop3_auth_allowed(s))
        conn_reply(c, "USER\r\nSASL %s\r\n", SASL_MECHANISMS);
    conn_reply(c, "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
    /* RFC 6856 2: "USER" says user names may be UTF-8 (address.c takes them, the domain as
     * either label form). Listed in both states, as RFC 2449 wants CAPA to be the same. */
    conn_reply(c, "UTF8 USER\r\n");
    /* RFC 2595 4: STLS only where it may be used: before login, TLS not on yet. */
    if (authz && conn_can_starttls(c))
        conn_reply(c, "STLS\r\n");
    conn_reply(c, "IMPLEMENTATION postern\r\n.\r\n");
}

/* UPDATE is over (its answer is out, or it never started): drop what it held. */
static void update_done(void *ctx)
{
    struct pop3_session *s = ctx;
    struct conn *c = s->conn;
    conn_unref(&c);
    pop3_session_release(s);
}

static void cmd_quit(struct pop3_session *s, const char *args)
{
    if (s->state == POP3_STATE_TRANSACTION) {
        /* UPDATE (RFC 1939 6) holds the session and the connection until it has answered. */
        pop3_enter_state(s, POP3_STATE_UPDATE);
        conn_ref(s->conn);
        session_ref_take(&s->ref);
        if (pop3_maildrop_quit(&s->md, s->app->writer, update_done, s) == 0)
            update_done(s);
        return;
    }
    conn_reply(s->conn, "+OK Bye\r\n");
    conn_close(s->conn, "quit");
}

static void cmd_noop(struct pop3_session *s, const char *args)
{
    if (args[0] != '\0') {
        pop3_reply_error(s, "-ERR Syntax: NOOP takes no argument");
        return;
    }
    conn_reply(s->conn, "+OK\r\n");
}

/*
 * RFC 6856 2: the client says it understands UTF-8 headers. Messages are always given out as they
 * were received (SMTPUTF8 mail included), never downgraded, so nothing changes but the answer; the
 * command is valid only in AUTHORIZATION, as the RFC says.
 */
static void cmd_utf8(struct pop3_session *s, const char *args)
{
    if (args[0] != '\0') {
        pop3_reply_error(s, "-ERR Syntax error: UTF8 takes no argument");
        return;
    }
    conn_reply(s->conn, "+OK UTF8 enabled\r\n");
}

static void cmd_stls(struct pop3_session *s, const char *args)
{
    if (conn_is_tls(s->conn)) {
        pop3_reply_error(s, "-ERR Command not permitted when TLS active");
        return;
    }
    if (!conn_can_starttls(s->conn)) {
        pop3_reply_error(s, "-ERR Command not implemented");
        return;
    }
    if (args[0] != '\0') {
        pop3_reply_error(s, "-ERR Syntax error: STLS takes no argument");
        return;
    }
    conn_reply(s->conn, "+OK Begin TLS negotiation\r\n");
    if (conn_starttls(s->conn) != 0)
        conn_abort(s->conn, "tls-error: setup");
}

/*
 * The command table: verb, states where it is valid, and the handler: run for the session's own
 * commands, md for the TRANSACTION commands, which pop3_maildrop.c answers.
 */
struct pop3_command {
    struct command cmd; /* first: common/pure/command.c finds rows by it */
    void (*run)(struct pop3_session *s, const char *args);
    pop3_md_command_fn md;
};

static const struct pop3_command pop3_commands[] = {
    {{"CAPA", POP3_IN_AUTHORIZATION | POP3_IN_TRANSACTION, 0}, cmd_capa, NULL},
    {{"QUIT", POP3_IN_AUTHORIZATION | POP3_IN_TRANSACTION, 0}, cmd_quit, NULL},
    {{"STLS", POP3_IN_AUTHORIZATION, 0}, cmd_stls, NULL},
    {{"UTF8", POP3_IN_AUTHORIZATION, 0}, cmd_utf8, NULL},
    {{"USER", POP3_IN_AUTHORIZATION, 0}, pop3_cmd_user, NULL},
    {{"PASS", POP3_IN_AUTHORIZATION, 0}, pop3_cmd_pass, NULL},
    {{"AUTH", POP3_IN_AUTHORIZATION, 0}, pop3_cmd_auth, NULL},
    {{"STAT", POP3_IN_TRANSACTION, 0}, NULL, pop3_maildrop_stat},
    {{"LIST", POP3_IN_TRANSACTION, 0}, NULL, pop3_maildrop_list},
    {{"RETR", POP3_IN_TRANSACTION, 0}, NULL, pop3_maildrop_retr},
    {{"DELE", POP3_IN_TRANSACTION, 0}, NULL, pop3_maildrop_dele},
    {{"NOOP", POP3_IN_TRANSACTION, 0}, cmd_noop, NULL},
    {{"RSET", POP3_IN_TRANSACTION, 0}, NULL, pop3_maildrop_rset},
    {{"TOP", POP3_IN_TRANSACTION, 0}, NULL, pop3_maildrop_top},
    {{"UIDL", POP3_IN_TRANSACTION, 0}, NULL, pop3_maildrop_uidl},
};

/* ---- handler callbacks --------------------------------------------------------------------- */

static void dispatch(struct pop3_session *s, const char *line, size_t len);

/* A point that fault injection delayed (server/fault/fault.h), run now. */
static void fault_resume(void *arg, enum fault_point p, const char *line, size_t len)
{
    struct pop3_session *s = arg;
    session_ref_take(&s->ref);
    if (p == FAULT_POP3_CONNECT)
        conn_reply(s->conn, "+OK postern ready.\r\n");
    else
        dispatch(s, line, len);
    pop3_session_release(s);
}

static void pop3_on_open(struct conn *c)
{
    struct pop3_session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        conn_abort(c, "out of memory");
        return;
    }
    s->conn = c;
    s->app = conn_app(c);
    session_ref_init(&s->ref);
    s->state = POP3_STATE_AUTHORIZATION;
    s->mech = "USER";
    conn_set_session(c, s);
    if (uv_timer_init(conn_loop(c), &s->timer) == 0) {
        s->timer.data = s;
        s->timer_open = true;
    }
    if (uv_timer_init(conn_loop(c), &s->renew_timer) == 0) {
        s->renew_timer.data = s;
        s->renew_open = true;
    }
    /* RFC 1939 3: the autologout timer is at least 10 minutes; the config enforces >= 1s for
     * tests and warns below the RFC. */
    conn_set_timeout(c, s->app->cfg->pop3.timeout_ms);
    s->fault = fault_conn_new(c, fault_resume, s);
    if (fault_at(s->fault, FAULT_POP3_CONNECT, &(struct fault_facts){0}) == FAULT_PASS)
        conn_reply(c, "+OK postern ready.\r\n");
}

/* One line: a SASL answer or a command. */
static void dispatch(struct pop3_session *s, const char *line, size_t len)
{
    if (pop3_auth_active(s)) {
        pop3_auth_sasl_line(s, line, len);
        return;
    }
    if (command_is_http_request(line, len)) {
        log_info("pop3", conn_sid(s->conn), "event=http-request");
        conn_abort(s->conn, "http-request");
        return;
    }
    s->commands++;
    struct pop3_cmdline cl;
    const struct pop3_command *cmd = NULL;
    if (pop3_parse_line(line, &cl) == 0)
        cmd = (const struct pop3_command *)(const void *)command_find(
            pop3_commands, sizeof(pop3_commands) / sizeof(pop3_commands[0]),
            sizeof(pop3_commands[0]), cl.verb, cl.verb_len);
    if (cmd == NULL) {
        pop3_reply_error(s, "-ERR Command not implemented");
        return;
    }
    if (!command_is_allowed(&cmd->cmd, s->state)) {
        pop3_reply_error(s, "-ERR Command not valid in this state");
        return;
    }
    /* This node stalled past its lease and a session of another node took the maildrop over:
     * it is that session's now. This one ends without UPDATE (RFC 1939 8: one session per
     * maildrop), so its marks delete nothing. */
    if (s->state == POP3_STATE_TRANSACTION && pop3_maildrop_lock_lost(&s->md)) {
        log_warn("pop3", conn_sid(s->conn), "event=session-lock-lost user=%s", s->address);
        conn_reply(s->conn, "-ERR [IN-USE] Maildrop lock lost to another session\r\n");
        conn_close(s->conn, "lock-lost");
        return;
    }
    if (fault_pop3_command(s->fault, cmd->cmd.verb, line, len, s->address[0] ? s->address : s->user,
                           &s->md.cut) != FAULT_PASS)
        return;
    if (cmd->md != NULL) {
        char reply[POP3_MD_REPLY_MAX_BYTES];
        maildrop_answer(s, cmd->md(&s->md, cl.args, reply), reply);
        return;
    }
    cmd->run(s, cl.args);
}

/* Holds a reference while the line runs: a reply that closes the connection (the tenth error,
 * say) runs on_close inside it, and the handler must still be able to finish. */
static void pop3_on_line(struct conn *c, const char *line, size_t len)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    session_ref_take(&s->ref);
    dispatch(s, line, len);
    pop3_session_release(s);
}

static void pop3_on_bad_line(struct conn *c, enum linereader_status why)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    if (pop3_auth_active(s)) {
        pop3_auth_reset(s);
        pop3_reply_error(s, "-ERR Malformed authentication data");
        return;
    }
    /* RFC 2449 4: commands are at most 255 octets; the rest of a longer line is skipped. */
    pop3_reply_error(s, why == LINEREADER_TOO_LONG ? "-ERR Line too long" : "-ERR Syntax error");
}

static void pop3_on_tls_ready(struct conn *c)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    /* RFC 2595 4: nothing learned before TLS carries over (a USER given in plaintext). */
    pop3_auth_reset(s);
    pop3_enter_state(s, POP3_STATE_AUTHORIZATION);
}

static void pop3_on_drain(struct conn *c)
{
    struct pop3_session *s = conn_session(c);
    if (s != NULL)
        pump(s);
}

static void pop3_on_timeout(struct conn *c)
{
    conn_reply(c, "-ERR Autologout; idle for too long\r\n");
}

static void pop3_on_shutdown(struct conn *c)
{
    conn_reply(c, "-ERR Server shutting down\r\n");
}

static void pop3_on_close(struct conn *c, const char *reason)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    /* A dropped connection deletes nothing (RFC 1939 6): UPDATE only starts from QUIT. */
    log_debug("pop3", conn_sid(c), "event=session-end commands=%llu errors=%u",
              (unsigned long long)s->commands, s->errors);
    s->ref.closed = true;
    fault_conn_free(&s->fault);
    if (s->auth_req != NULL) {
        auth_cancel(s->auth_req); /* its done never runs: drop its reference here */
        s->auth_req = NULL;
        pop3_session_release(s);
    }
    /* The window counts down from the end of the session. */
    window_renew(s);
    pop3_maildrop_stop(&s->md);
    if (s->timer_open) {
        s->timer_open = false;
        session_ref_take(&s->ref); /* until the handle is closed */
        uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    }
    if (s->renew_open) {
        s->renew_open = false;
        session_ref_take(&s->ref);
        uv_close((uv_handle_t *)&s->renew_timer, on_handle_closed);
    }
    /* A writer job still out keeps its reference: its done frees the session if it is last. */
    pop3_session_release(s);
}

static void pop3_busy_reply(const struct cfg *cfg, bool per_ip, char *buf, size_t len)
{
    /* RFC 3206 4: [SYS/TEMP] is a temporary problem on our side; try again later. */
    snprintf(buf, len, "-ERR [SYS/TEMP] Too many connections%s\r\n",
             per_ip ? " from your address" : "");
}

const struct conn_handler pop3_session_handler = {
    .proto = "pop3",
    .max_line_bytes = POP3_LINE_MAX_BYTES,
    .largest_line_bytes = POP3_SASL_LINE_MAX_BYTES,
    .on_open = pop3_on_open,
    .on_line = pop3_on_line,
    .on_bad_line = pop3_on_bad_line,
    .on_data = NULL,
    .on_tls_ready = pop3_on_tls_ready,
    .on_timeout = pop3_on_timeout,
    .on_shutdown = pop3_on_shutdown,
    .on_drain = pop3_on_drain,
    .on_close = pop3_on_close,
    .busy_reply = pop3_busy_reply,
    .transcript_visible = command_transcript_visible,
};
