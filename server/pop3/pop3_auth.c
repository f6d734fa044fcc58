/*
 * pop3_auth.c - logging in to the POP3 server session, the AUTHORIZATION state: USER/PASS
 * (RFC 1939 7), AUTH PLAIN and LOGIN with initial response (RFC 5034) through the exchange of
 * common/pure/sasl.c, the password check handed to server/auth/auth.c (argon2id in the
 * threadpool, with reading paused meanwhile), the answer to it, which for a failure waits out
 * auth's delay on the session's timer, and a success's login: the maildrop lock (this process's
 * entry, then its database row and the relay window's opening in one writer job), the snapshot,
 * then "+OK".
 *
 * What it does not do: own the session, its timers or its references (pop3_session.c does, and
 * alone frees it: pop3_internal.h is the boundary), decide whether a password is right (auth.c),
 * renew the relay window (pop3_session.c) or answer TRANSACTION commands (pop3_maildrop.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "common/config.h"
#include "common/log.h"
#include "common/pure/command.h"
#include "server/app.h"
#include "server/metrics/metrics.h"
#include "server/node.h"
#include "server/pop3/pop3_internal.h"

bool pop3_auth_allowed(const struct pop3_session *s)
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

bool pop3_auth_active(const struct pop3_session *s)
{
    return sasl_is_active(s->sasl);
}

void pop3_auth_drop(struct pop3_session *s)
{
    sasl_free(&s->sasl);
}

void pop3_auth_reset(struct pop3_session *s)
{
    s->have_user = false;
    sodium_memzero(s->user, sizeof(s->user));
    pop3_auth_drop(s);
    conn_set_max_line(s->conn, POP3_LINE_MAX_BYTES);
}

/* ---- logging in -------------------------------------------------------------------------- */

static void login_finish(struct pop3_session *s)
{
    pop3_enter_state(s, POP3_STATE_TRANSACTION);
    if (s->window_opened && s->renew_open) {
        uint64_t every = pop3_window_renew_every_ms(s->app->cfg->relay.window_ms);
        int rc = uv_timer_start(&s->renew_timer, pop3_on_renew_timer, every, every);
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

/* The lock is held (in the database, or here only when the login job could not write): the
 * snapshot, then +OK (pop3_login_opened, at once or from the read's callback). A window the job
 * opened stays open if the snapshot then fails: the password was right. */
static void login_open(struct pop3_session *s)
{
    enum pop3_md_open r =
        pop3_maildrop_open(&s->md, s->conn, s->app->reader, pop3_maildrop_read_done, s);
    if (r == POP3_MD_OPEN_PENDING)
        pop3_hold_for_read(s); /* pop3_login_opened runs from the read's callback */
    else
        pop3_login_opened(s, r);
}

/* The login's job is done (pop3_window.h: the lock's row, and the window when relay.window is
 * set); it held a reference to the session and the connection. */
static void login_window_done(void *ctx, int status)
{
    struct pop3_session *s = ctx;
    const struct pop3_window_job *w = &s->login_job;
    struct conn *c = s->conn;
    if (status == 0)
        pop3_maildrop_locked_in_db(&s->md);
    if (s->ref.closed) {
        /* The client went while the login was under way: the window stays open for
         * relay.window (the countdown from the login), as after any session's end; the lock
         * goes with the session (session_free). */
        if (status == 0 && w->with_window && !w->window_failed)
            pop3_window_log(0, w, "-", "window-opened");
        conn_unref(&c);
        pop3_session_release(s);
        return;
    }
    if (status == STORE_IN_USE) {
        log_info("pop3", conn_sid(c), "event=login-refused user=%s reason=in-use here=no",
                 s->address);
        login_undo(s);
        conn_reply(c, "-ERR [IN-USE] Maildrop is locked by another session\r\n");
        conn_resume_reading(c);
    } else if (status == STORE_NOT_FOUND) {
        /* STORE_NOT_FOUND: deleted or given a new password while the login was under way. */
        log_warn("pop3", conn_sid(c), "event=window-failed key=%s user=%s status=%d", w->key,
                 w->user, status);
        login_undo(s);
        conn_reply(c, "-ERR [AUTH] Authentication failed\r\n");
        conn_resume_reading(c);
    } else if (status != 0) {
        /* A full disk must not lock the user out of the mail whose deletion frees it: the
         * login goes on without a relay window (and without its login record), and with the
         * lock held by this process only.
         * XXX(node): another node may then open the same maildrop too; deletions are by entry
         * id, so neither session can delete more than its client asked for. */
        log_warn("pop3", conn_sid(c),
                 "event=window-failed key=%s user=%s status=%d login=without-window lock=local",
                 w->key, w->user, status);
        login_open(s);
    } else if (w->with_window && w->window_failed) {
        log_warn("pop3", conn_sid(c), "event=window-failed key=%s user=%s login=without-window",
                 w->key, w->user);
        login_open(s);
    } else {
        if (w->with_window) {
            s->window_opened = true;
            pop3_window_log(conn_sid(c), w, conn_peer_text(c), "window-opened");
        }
        login_open(s);
    }
    conn_unref(&c);
    pop3_session_release(s);
}

/* The password was right: the lock here, then the login job (the lock's row and the window, one
 * commit), then the snapshot and +OK. Reading is paused. The user is remembered now
 * (login_undo forgets it). */
static void login_begin(struct pop3_session *s, int64_t user_id, const char *address,
                        const char *hash)
{
    struct conn *c = s->conn;
    const struct cfg *cfg = s->app->cfg;
    struct pop3_md_owner o = {
        .user_id = user_id,
        .address = address,
        .session = (int64_t)conn_sid(c),
        .writer = s->app->writer,
        .node = cfg->server.node,
    };
    switch (pop3_maildrop_lock(&s->md, &o)) {
    case POP3_MD_OPENED:
        break;
    case POP3_MD_IN_USE:
        /* Held by a session of this process: no need to ask the database. */
        conn_reply(c, "-ERR [IN-USE] Maildrop is locked by another session\r\n");
        conn_resume_reading(c);
        return;
    case POP3_MD_STORE_ERROR:
    case POP3_MD_OPEN_PENDING:
    case POP3_MD_NO_MEMORY:
    default:
        conn_reply(c, "-ERR [SYS/TEMP] Out of memory\r\n");
        conn_resume_reading(c);
        return;
    }
    snprintf(s->address, sizeof(s->address), "%s", address);
    s->user_id = user_id;
    snprintf(s->user_hash, sizeof(s->user_hash), "%s", hash);

    uint64_t window_ms = cfg->relay.window_ms;
    s->window_key[0] = '\0';
    if (window_ms > 0)
        ip_window_key(conn_peer_ip(c), cfg->relay.window_ipv6_prefix, s->window_key,
                      sizeof(s->window_key));
    conn_ref(c);
    session_ref_take(&s->ref);
    struct pop3_window_user u = {.address = s->address, .id = user_id, .hash = s->user_hash};
    struct pop3_window_lock lock = {
        .node = cfg->server.node, .session = o.session, .lease_ms = node_lease_ms()};
    if (pop3_window_open(&s->login_job, s->app->writer, s->window_key, &u, window_ms, &lock,
                         login_window_done, s) != 0) {
        pop3_session_release(s); /* never the last: the connection holds one */
        conn_unref(&c);
        login_undo(s);
        conn_reply(s->conn, "-ERR [SYS/TEMP] Cannot log in now, try again later\r\n");
        conn_resume_reading(s->conn);
    }
}

void pop3_login_opened(struct pop3_session *s, enum pop3_md_open r)
{
    struct conn *c = s->conn;
    switch (r) {
    case POP3_MD_OPENED:
        login_finish(s);
        return;
    case POP3_MD_STORE_ERROR:
        login_undo(s);
        conn_reply(c, "-ERR [SYS/TEMP] Cannot open the maildrop, try again later\r\n");
        break;
    case POP3_MD_IN_USE:
    case POP3_MD_OPEN_PENDING:
    case POP3_MD_NO_MEMORY:
    default:
        login_undo(s);
        conn_reply(c, "-ERR [SYS/TEMP] Out of memory\r\n");
        break;
    }
    conn_resume_reading(c);
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
        int rc =
            s->timer_open ? uv_timer_start(&s->timer, pop3_on_session_timer, r->delay_ms, 0) : -1;
        if (rc != 0)
            pop3_on_session_timer(&s->timer); /* no timer: answer now rather than never */
        return;
    }
    login_begin(s, r->user_id, r->user, r->hash);
}

static void auth_done(void *ctx, const struct auth_result *r)
{
    struct pop3_session *s = ctx;
    s->auth_req = NULL; /* freed by auth before this call */
    auth_answer(s, r);
    pop3_session_release(s); /* the request's reference */
}

/* Hands user/password to auth; reading stays paused until the answer is out. */
static void verify(struct pop3_session *s, const char *user, const char *password, size_t pwlen)
{
    conn_pause_reading(s->conn);
    session_ref_take(&s->ref);
    s->auth_req = auth_verify(s->app->auth, s->app->reader, conn_peer_ip(s->conn), user, password,
                              pwlen, auth_done, s);
    if (s->auth_req == NULL) {
        pop3_session_release(s); /* never the last: the connection holds one */
        conn_reply(s->conn, "-ERR [SYS/TEMP] Cannot check the password now, try again later\r\n");
        conn_resume_reading(s->conn);
    }
}

/* ---- AUTHORIZATION commands -------------------------------------------------------------- */

void pop3_cmd_user(struct pop3_session *s, const char *args)
{
    if (!pop3_auth_allowed(s)) {
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

void pop3_cmd_pass(struct pop3_session *s, const char *args)
{
    if (!pop3_auth_allowed(s)) {
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
        pop3_auth_drop(s); /* step pointed into it: dropped only after verify copied them */
        return;
    case SASL_CANCELLED:
        pop3_auth_reset(s);
        pop3_reply_error(s, "-ERR Authentication cancelled");
        return;
    case SASL_UNSUPPORTED_MECH:
        pop3_auth_reset(s);
        pop3_reply_error(s, "-ERR Unrecognized authentication type");
        return;
    case SASL_AUTHZID_REFUSED:
        pop3_auth_reset(s);
        pop3_reply_error(s, "-ERR [AUTH] Authorization identity refused");
        return;
    case SASL_MALFORMED:
        break;
    }
    pop3_auth_reset(s);
    pop3_reply_error(s, "-ERR Malformed authentication data");
}

void pop3_cmd_auth(struct pop3_session *s, const char *args)
{
    if (args[0] == '\0') {
        /* Not in RFC 5034, but widely probed by clients (RFC 1734 era): list the mechanisms. */
        if (pop3_auth_allowed(s))
            conn_reply(s->conn, "+OK Mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n");
        else
            refuse_plaintext(s);
        return;
    }
    if (!pop3_auth_allowed(s)) {
        refuse_plaintext(s);
        return;
    }
    struct command_auth_args a;
    command_split_auth(args, &a);
    s->have_user = false;
    s->mech = strncasecmp(a.mech, "PLAIN", a.mech_len) == 0 && a.mech_len == 5 ? "PLAIN" : "LOGIN";
    /* The exchange's state lives on the heap only while it runs (pop3_internal.h). RFC 3206
     * SYS/TEMP: a passing problem of the server, not of the client's credentials. */
    if (s->sasl == NULL && (s->sasl = calloc(1, sizeof(*s->sasl))) == NULL) {
        pop3_reply_error(s, "-ERR [SYS/TEMP] Out of memory, try again later");
        return;
    }
    struct sasl_step step;
    enum sasl_status st = sasl_start(s->sasl, a.mech, a.mech_len, a.initial, a.initial_len, &step);
    sasl_continue(s, st, &step);
}

void pop3_auth_sasl_line(struct pop3_session *s, const char *line, size_t len)
{
    struct sasl_step step;
    enum sasl_status st = sasl_step(s->sasl, line, len, &step);
    sasl_continue(s, st, &step);
}

/* ---- the delayed answer to a failed verification ------------------------------------------ */

/* The session's timer ran out the failure delay (or there was no timer): answer, and close after
 * too many failures. */
void pop3_auth_failure_answer(struct pop3_session *s)
{
    conn_reply(s->conn, "-ERR [AUTH] Authentication failed\r\n");
    if (s->fail_close || s->auth_failures >= POP3_MAX_AUTH_FAILURES) {
        conn_reply(s->conn, "-ERR Too many authentication failures\r\n");
        conn_close(s->conn, "auth-failures");
        return;
    }
    conn_resume_reading(s->conn);
}
