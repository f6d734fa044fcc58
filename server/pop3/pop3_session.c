/*
 * pop3_session.c - the POP3 server session (RFC 1939) on top of server/net/conn.c: the command
 * table and dispatcher, CAPA (RFC 2449), STLS (RFC 2595), UTF8 (RFC 6856), the AUTHORIZATION state
 * (USER/PASS, RFC 1939 7; AUTH PLAIN and LOGIN with initial response, RFC 5034), the maildrop lock
 * ([IN-USE]), the POP-before-SMTP relay window, and the close path.
 *
 * Logging in: the password is checked by server/auth/auth.c (argon2id in the threadpool, a cache of
 * successes, throttling). While a check, a failure delay or the window's writer job is pending the
 * session pauses reading, so pipelined commands wait their turn. A failure gets the same
 * "-ERR [AUTH]" whether the user exists or not, after auth's growing delay; the connection is
 * closed after POP3_MAX_AUTH_FAILURES of them (or at once when auth says the client is over its
 * limit). A success takes the maildrop lock, the snapshot, and then opens the relay window for
 * relay.window in a writer job; "+OK" goes out only after that commit, so the very next SMTP
 * command from the address sees the window. When that write fails (a full disk) the login still
 * succeeds, without a window: users must be able to fetch and delete the mail that fills the
 * disk, and the SMTP side refuses new mail meanwhile (server/disk_reserve.h). While the session
 * stays in TRANSACTION the window is renewed every POP3_WINDOW_RENEW_MAX_MS (or relay.window / 2 if
 * shorter), and once more at close, so it stays open while connected and counts down from the end;
 * an expiry is always finite, so a crash never leaves an open relay behind. relay.window = 0: no
 * window at all. A renewal that finds the account deleted or its password changed since the login
 * (pop3_window.h) ends the session: a revoked password cannot keep a window open by keeping a
 * session alive.
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
 * connected, the UPDATE job, an AUTH
 * verification (until it answers or on_close cancels it) and the closing of each uv timer hold
 * one each, and their completions look at ref.closed before touching the connection. Only this
 * file frees the session (session_release), when the last reference goes.
 */
#include "server/pop3/pop3_session.h"

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

enum pop3_state {
    POP3_STATE_AUTHORIZATION = 0,
    POP3_STATE_TRANSACTION,
    POP3_STATE_UPDATE,
};

struct pop3_session {
    struct conn *conn; /* borrowed; valid while !ref.closed (and while a conn_ref is held) */
    struct app *app;   /* borrowed: cfg, reads, writer, auth */
    struct session_ref ref;
    enum pop3_state state;
    unsigned errors;        /* error replies, for POP3_MAX_ERRORS */
    unsigned auth_failures; /* failed logins on this connection, for POP3_MAX_AUTH_FAILURES */
    uint64_t commands;

    /* AUTHORIZATION */
    bool have_user; /* USER was accepted; PASS may follow */
    char user[SASL_USER_MAX_BYTES + 1];
    const char *mech;              /* "USER", "PLAIN", "LOGIN": for the logs */
    struct sasl sasl;              /* AUTH exchange in progress when sasl_is_active() */
    struct auth_request *auth_req; /* borrowed from auth until done runs or we cancel */
    bool fail_close;               /* after the delayed failure answer: close */
    uv_timer_t timer;              /* failure delay (AUTHORIZATION) or stalled reader (RETR) */
    bool timer_open;
    uv_timer_t renew_timer; /* TRANSACTION: keeps the relay window open */
    bool renew_open;
    struct pop3_window_job login_job; /* with the writer from login_begin to login_window_done */

    /* TRANSACTION */
    char address[ADDRESS_STRLEN]; /* the logged-in user, "" before */
    int64_t user_id;
    char user_hash[PASSWORD_HASH_BYTES]; /* the stored hash the login matched */
    bool window_opened;                  /* a window for window_key was opened by this session */
    char window_key[CIDR_STRLEN];
    struct pop3_maildrop md;  /* owned: lock, snapshot, marks, output pump (pop3_maildrop.c) */
    struct fault_conn *fault; /* owned; NULL unless [server] faults = yes */
};

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

static void pop3_enter_state(struct pop3_session *s, enum pop3_state st)
{
    if (s->state != st)
        log_debug("pop3", conn_sid(s->conn), "event=state from=%s to=%s", state_name(s->state),
                  state_name(st));
    s->state = st;
}

static __attribute__((format(printf, 2, 3))) void pop3_reply_error(struct pop3_session *s,
                                                                   const char *fmt, ...)
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

static bool auth_allowed(const struct pop3_session *s)
{
    return conn_is_tls(s->conn) || s->app->cfg->pop3.plaintext_auth;
}

/* RFC 2595 4 / RFC 3206 [AUTH]: refused before TLS, pointing at STLS. */
static void refuse_plaintext(struct pop3_session *s)
{
    if (conn_can_starttls(s->conn))
        pop3_reply_error(s, "-ERR [AUTH] Plaintext authentication is disabled: use STLS first");
    else
        pop3_reply_error(s, "-ERR [AUTH] Plaintext authentication is disabled: use POP3S");
}

static void session_free(struct pop3_session *s)
{
    pop3_maildrop_close(&s->md);
    sasl_reset(&s->sasl);
    sodium_memzero(s->user, sizeof(s->user));
    sodium_memzero(s->user_hash, sizeof(s->user_hash));
    free(s);
}

/* Drops one reference (server/net/session_ref.h): the last one frees the session, here and
 * nowhere else. */
static void session_release(struct pop3_session *s)
{
    if (session_ref_drop(&s->ref))
        session_free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    session_release(h->data);
}

static void auth_reset(struct pop3_session *s)
{
    s->have_user = false;
    sodium_memzero(s->user, sizeof(s->user));
    sasl_reset(&s->sasl);
    conn_set_max_line(s->conn, POP3_LINE_MAX_BYTES);
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
    session_release(s);
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
        session_release(s); /* never the last: the connection holds one */
        conn_unref(&c);
    }
}

static void on_renew_timer(uv_timer_t *t)
{
    struct pop3_session *s = t->data;
    if (!s->ref.closed && s->state == POP3_STATE_TRANSACTION)
        window_renew(s);
}

/* ---- logging in -------------------------------------------------------------------------- */

static void login_finish(struct pop3_session *s)
{
    pop3_enter_state(s, POP3_STATE_TRANSACTION);
    if (s->window_opened && s->renew_open) {
        uint64_t every = pop3_window_renew_every_ms(s->app->cfg->relay.window_ms);
        int rc = uv_timer_start(&s->renew_timer, on_renew_timer, every, every);
        if (rc != 0)
            log_warn("pop3", conn_sid(s->conn), "event=window-timer-failed error=\"%s\"",
                     uv_strerror(rc));
    }
    log_info("pop3", conn_sid(s->conn),
             "event=login user=%s ip=%s mech=%s messages=%zu octets=%lld", s->address,
             conn_peer_text(s->conn), s->mech, pop3_maildrop_messages(&s->md),
             (long long)pop3_maildrop_octets(&s->md));
    size_t n = pop3_maildrop_messages(&s->md);
    conn_reply(s->conn, "+OK Logged in: maildrop has %zu message%s (%lld octets)\r\n", n,
               n == 1 ? "" : "s", (long long)pop3_maildrop_octets(&s->md));
    conn_resume_reading(s->conn);
}

/* Back to AUTHORIZATION after a login that got through the password but not further. */
static void login_undo(struct pop3_session *s)
{
    pop3_maildrop_close(&s->md);
    s->address[0] = '\0';
    sodium_memzero(s->user_hash, sizeof(s->user_hash));
}

/* The login's window job is done; it held a reference to the session and the connection. */
static void login_window_done(void *ctx, int status)
{
    struct pop3_session *s = ctx;
    const struct pop3_window_job *w = &s->login_job;
    struct conn *c = s->conn;
    if (s->ref.closed) {
        /* The client went while the window was being opened: it stays open for relay.window
         * (the countdown from the login), as after any session's end. */
        if (status == 0)
            pop3_window_log(0, w, "-", "window-opened");
        conn_unref(&c);
        session_release(s);
        return;
    }
    if (status == STORE_NOT_FOUND) {
        /* STORE_NOT_FOUND: deleted or given a new password while the login was under way. */
        log_warn("pop3", conn_sid(c), "event=window-failed key=%s user=%s status=%d", w->key,
                 w->user, status);
        login_undo(s);
        conn_reply(c, "-ERR [AUTH] Authentication failed\r\n");
        conn_resume_reading(c);
    } else if (status != 0) {
        /* A full disk must not lock the user out of the mail whose deletion frees it: the
         * login goes on without a relay window (and without its login record). */
        log_warn("pop3", conn_sid(c),
                 "event=window-failed key=%s user=%s status=%d login=without-window", w->key,
                 w->user, status);
        login_finish(s);
    } else {
        s->window_opened = true;
        pop3_window_log(conn_sid(c), w, conn_peer_text(c), "window-opened");
        login_finish(s);
    }
    conn_unref(&c);
    session_release(s);
}

/* The password was right: lock, snapshot, window, then +OK. Reading is paused. */
static void login_begin(struct pop3_session *s, int64_t user_id, const char *address,
                        const char *hash)
{
    struct conn *c = s->conn;
    switch (pop3_maildrop_open(&s->md, c, s->app->reads, user_id, address)) {
    case POP3_MD_OPENED:
        break;
    case POP3_MD_IN_USE:
        conn_reply(c, "-ERR [IN-USE] Maildrop is locked by another session\r\n");
        conn_resume_reading(c);
        return;
    case POP3_MD_STORE_ERROR:
        conn_reply(c, "-ERR [SYS/TEMP] Cannot open the maildrop, try again later\r\n");
        conn_resume_reading(c);
        return;
    case POP3_MD_NO_MEMORY:
    default:
        conn_reply(c, "-ERR [SYS/TEMP] Out of memory\r\n");
        conn_resume_reading(c);
        return;
    }
    snprintf(s->address, sizeof(s->address), "%s", address);
    s->user_id = user_id;
    snprintf(s->user_hash, sizeof(s->user_hash), "%s", hash);

    uint64_t window_ms = s->app->cfg->relay.window_ms;
    if (window_ms == 0) {
        login_finish(s); /* POP-before-SMTP is off */
        return;
    }
    ip_window_key(conn_peer_ip(c), s->app->cfg->relay.window_ipv6_prefix, s->window_key,
                  sizeof(s->window_key));
    conn_ref(c);
    session_ref_take(&s->ref);
    struct pop3_window_user u = {.address = address, .id = user_id, .hash = hash};
    if (pop3_window_open(&s->login_job, s->app->writer, s->window_key, &u, window_ms,
                         login_window_done, s) != 0) {
        session_release(s); /* never the last: the connection holds one */
        conn_unref(&c);
        login_undo(s);
        conn_reply(s->conn, "-ERR [SYS/TEMP] Cannot log in now, try again later\r\n");
        conn_resume_reading(s->conn);
    }
}

static void on_session_timer(uv_timer_t *t)
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
    conn_reply(s->conn, "-ERR [AUTH] Authentication failed\r\n");
    if (s->fail_close || s->auth_failures >= POP3_MAX_AUTH_FAILURES) {
        conn_reply(s->conn, "-ERR Too many authentication failures\r\n");
        conn_close(s->conn, "auth-failures");
        return;
    }
    conn_resume_reading(s->conn);
}

/* More of a multi-line answer; the session's timer watches a reader that takes nothing. */
static void pump(struct pop3_session *s)
{
    switch (pop3_maildrop_pump(&s->md)) {
    case POP3_PUMP_WAIT:
        if (s->timer_open)
            uv_timer_start(&s->timer, on_session_timer, s->app->cfg->pop3.timeout_ms, 0);
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
    case POP3_PUMP_IDLE:
        return;
    }
}

/* A TRANSACTION command's answer from pop3_maildrop.c. */
static void maildrop_answer(struct pop3_session *s, enum pop3_md_result r, const char *reply)
{
    if (r != POP3_MD_STREAM)
        s->md.cut = (struct fault_cut){0}; /* nothing streams: nothing to cut */
    if (r == POP3_MD_ERROR)
        pop3_reply_error(s, "%s", reply);
    else if (r == POP3_MD_STREAM)
        pump(s);
}

/* The verification's answer (the request is over). */
static void auth_answer(struct pop3_session *s, const struct auth_result *r)
{
    struct conn *c = s->conn;
    log_info("pop3", conn_sid(c), "event=auth mech=%s result=%s user=%s ip=%s cached=%s", s->mech,
             r->ok          ? "ok"
             : r->temporary ? "error"
                            : "fail",
             r->user[0] ? r->user : "-", conn_peer_text(c), r->cached ? "yes" : "no");
    metrics_auth(METRICS_PROTO_POP3, metrics_auth_mech(s->mech), r->ok, r->temporary);
    if (r->temporary) {
        conn_reply(c, "-ERR [SYS/TEMP] Cannot check the password now, try again later\r\n");
        conn_resume_reading(c);
        return;
    }
    if (!r->ok) {
        s->auth_failures++;
        s->fail_close = r->too_many;
        int rc = s->timer_open ? uv_timer_start(&s->timer, on_session_timer, r->delay_ms, 0) : -1;
        if (rc != 0)
            on_session_timer(&s->timer); /* no timer: answer now rather than never */
        return;
    }
    login_begin(s, r->user_id, r->user, r->hash);
}

static void auth_done(void *ctx, const struct auth_result *r)
{
    struct pop3_session *s = ctx;
    s->auth_req = NULL; /* freed by auth before this call */
    auth_answer(s, r);
    session_release(s); /* the request's reference */
}

/* Hands user/password to auth; reading stays paused until the answer is out. */
static void verify(struct pop3_session *s, const char *user, const char *password, size_t pwlen)
{
    conn_pause_reading(s->conn);
    session_ref_take(&s->ref);
    s->auth_req = auth_verify(s->app->auth, s->app->reads, conn_peer_ip(s->conn), user, password,
                              pwlen, auth_done, s);
    if (s->auth_req == NULL) {
        session_release(s); /* never the last: the connection holds one */
        conn_reply(s->conn, "-ERR [SYS/TEMP] Cannot check the password now, try again later\r\n");
        conn_resume_reading(s->conn);
    }
}

/* ---- AUTHORIZATION commands -------------------------------------------------------------- */

static void cmd_user(struct pop3_session *s, const char *args)
{
    if (!auth_allowed(s)) {
        refuse_plaintext(s);
        return;
    }
    size_t n = strlen(args);
    if (n == 0 || n > SASL_USER_MAX_BYTES) {
        pop3_reply_error(s, "-ERR Syntax: USER name");
        return;
    }
    memcpy(s->user, args, n + 1);
    s->have_user = true;
    /* RFC 1939 7: the next command is normally PASS; keep it out of the transcript. */
    conn_mask_next_line(s->conn);
    conn_reply(s->conn, "+OK Send your password\r\n");
}

static void cmd_pass(struct pop3_session *s, const char *args)
{
    if (!auth_allowed(s)) {
        refuse_plaintext(s);
        return;
    }
    if (!s->have_user) {
        pop3_reply_error(s, "-ERR Send USER first");
        return;
    }
    /* RFC 1939 7: PASS has exactly one argument, so spaces belong to the password. */
    char user[sizeof(s->user)];
    memcpy(user, s->user, sizeof(user));
    s->have_user = false;
    s->mech = "USER";
    verify(s, user, args, strlen(args));
    sodium_memzero(user, sizeof(user));
}

/* Turns a SASL step into the reply or the verification. */
static void sasl_continue(struct pop3_session *s, enum sasl_status st, const struct sasl_step *step)
{
    switch (st) {
    case SASL_CHALLENGE:
        /* RFC 5034 4: "+ " and the base64 challenge; the answer may be longer than 255. */
        conn_set_max_line(s->conn, POP3_SASL_LINE_MAX_BYTES);
        conn_mask_next_line(s->conn);
        conn_reply(s->conn, "+ %s\r\n", step->challenge);
        return;
    case SASL_DONE:
        conn_set_max_line(s->conn, POP3_LINE_MAX_BYTES);
        verify(s, step->user, step->password, step->password_len);
        sasl_reset(&s->sasl);
        return;
    case SASL_CANCELLED:
        auth_reset(s);
        pop3_reply_error(s, "-ERR Authentication cancelled");
        return;
    case SASL_UNSUPPORTED_MECH:
        auth_reset(s);
        pop3_reply_error(s, "-ERR Unrecognized authentication type");
        return;
    case SASL_AUTHZID_REFUSED:
        auth_reset(s);
        pop3_reply_error(s, "-ERR [AUTH] Authorization identity refused");
        return;
    case SASL_MALFORMED:
        break;
    }
    auth_reset(s);
    pop3_reply_error(s, "-ERR Malformed authentication data");
}

static void cmd_auth(struct pop3_session *s, const char *args)
{
    if (args[0] == '\0') {
        /* Not in RFC 5034, but widely probed by clients (RFC 1734 era): list the mechanisms. */
        if (auth_allowed(s))
            conn_reply(s->conn, "+OK Mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n");
        else
            refuse_plaintext(s);
        return;
    }
    if (!auth_allowed(s)) {
        refuse_plaintext(s);
        return;
    }
    struct command_auth_args a;
    command_split_auth(args, &a);
    s->have_user = false;
    s->mech = strncasecmp(a.mech, "PLAIN", a.mech_len) == 0 && a.mech_len == 5 ? "PLAIN" : "LOGIN";
    struct sasl_step step;
    enum sasl_status st = sasl_start(&s->sasl, a.mech, a.mech_len, a.initial, a.initial_len, &step);
    sasl_continue(s, st, &step);
}

static void sasl_line(struct pop3_session *s, const char *line, size_t len)
{
    struct sasl_step step;
    enum sasl_status st = sasl_step(&s->sasl, line, len, &step);
    sasl_continue(s, st, &step);
}

/* ---- commands valid in several states ------------------------------------------------------ */

static void cmd_capa(struct pop3_session *s, const char *args)
{
    struct conn *c = s->conn;
    bool authz = s->state == POP3_STATE_AUTHORIZATION;
    conn_reply(c, "+OK Capability list follows\r\nTOP\r\nUIDL\r\n");
    /* RFC 2449 6.8 and 6.3: USER and SASL only where they can be used. */
    if (authz && auth_allowed(s))
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
    session_release(s);
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
    {{"USER", POP3_IN_AUTHORIZATION, 0}, cmd_user, NULL},
    {{"PASS", POP3_IN_AUTHORIZATION, 0}, cmd_pass, NULL},
    {{"AUTH", POP3_IN_AUTHORIZATION, 0}, cmd_auth, NULL},
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
    session_release(s);
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
    if (sasl_is_active(&s->sasl)) {
        sasl_line(s, line, len);
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
    session_release(s);
}

static void pop3_on_bad_line(struct conn *c, enum linereader_status why)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    if (sasl_is_active(&s->sasl)) {
        auth_reset(s);
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
    auth_reset(s);
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
        session_release(s);
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
    session_release(s);
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
