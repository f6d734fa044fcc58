/*
 * pop3_session.c - the POP3 server session (RFC 1939) on top of server/net/conn.c: the command
 * table and dispatcher, CAPA (RFC 2449), STLS (RFC 2595), the AUTHORIZATION state (USER/PASS, RFC
 * 1939 7; AUTH PLAIN and LOGIN with initial response, RFC 5034), the maildrop lock ([IN-USE]), the
 * POP-before-SMTP relay window, and the close path.
 *
 * Logging in: the password is checked by server/auth/auth.c (argon2id in the threadpool, a cache of
 * successes, throttling). While a check, a failure delay or the window's writer job is pending the
 * session pauses reading, so pipelined commands wait their turn. A failure gets the same
 * "-ERR [AUTH]" whether the user exists or not, after auth's growing delay; the connection is
 * closed after POP3_MAX_AUTH_FAILURES of them (or at once when auth says the client is over its
 * limit). A success takes the maildrop lock, the snapshot, and then opens the relay window for
 * relay.window in a writer job; "+OK" goes out only after that commit, so the very next SMTP
 * command from the address sees the window. While the session stays in TRANSACTION the window is
 * renewed every POP3_WINDOW_RENEW_MAX_MS (or relay.window / 2 if shorter), and once more at
 * close, so it stays open while connected and counts down from the end; an expiry is always
 * finite, so a crash never leaves an open relay behind. relay.window = 0: no window at all.
 *
 * What it does not do: sockets, line buffering, TLS, idle timers (conn.c); password checks
 * (auth.c); the TRANSACTION commands and UPDATE (pop3_maildrop.c); SQL (storage/).
 *
 * Transcript: the session masks the line after USER and every SASL response; conn.c itself masks
 * the argument of PASS and an AUTH command's initial response.
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
#include "server/pop3/pop3_internal.h"
#include "common/pure/pop3_parse.h"
#include "storage/store.h"

/* Renewal interval of an open window while the session is connected: at most this, and at most
 * half the window, so a crash leaves the window open for no longer than relay.window. */
#define POP3_WINDOW_RENEW_MAX_MS (5 * 60 * 1000)
#define POP3_WINDOW_RENEW_MIN_MS 1000
/* RFC 5034 4: SASL responses are not bound by the 255-octet command limit. */
#define POP3_SASL_LINE_MAX_BYTES (SASL_LINE_MAX_BYTES + 2)

struct pop3_command {
    const char *verb;
    void (*run)(struct pop3_session *s, const char *args);
    unsigned states; /* POP3_IN_* mask where the command is valid */
};

/* ---- the maildrop lock ------------------------------------------------------------------- */

/*
 * One session per maildrop (RFC 1939 8, RFC 2449 8.1.1 [IN-USE]): the user ids of the sessions
 * that hold their maildrop, in this process (one loop thread, so no mutex). The set is small (one
 * entry per logged-in POP3 session) and scanned linearly; it is freed when it empties, so nothing
 * is left at exit.
 * XXX(pop3): linear; a hash set if tens of thousands of concurrent POP3 sessions ever matter.
 */
static struct {
    int64_t *ids;
    size_t n;
    size_t cap;
} pop3_locks;

static bool lock_is_held(int64_t user_id)
{
    for (size_t i = 0; i < pop3_locks.n; i++)
        if (pop3_locks.ids[i] == user_id)
            return true;
    return false;
}

/* 0, or -1 (out of memory). The caller checked lock_is_held() first. */
static int lock_take(int64_t user_id)
{
    if (pop3_locks.n == pop3_locks.cap) {
        size_t cap = pop3_locks.cap == 0 ? 16 : pop3_locks.cap * 2;
        int64_t *ids = realloc(pop3_locks.ids, cap * sizeof(*ids));
        if (ids == NULL)
            return -1;
        pop3_locks.ids = ids;
        pop3_locks.cap = cap;
    }
    pop3_locks.ids[pop3_locks.n++] = user_id;
    return 0;
}

static void lock_release(int64_t user_id)
{
    for (size_t i = 0; i < pop3_locks.n; i++) {
        if (pop3_locks.ids[i] == user_id) {
            pop3_locks.ids[i] = pop3_locks.ids[--pop3_locks.n];
            break;
        }
    }
    if (pop3_locks.n == 0) {
        free(pop3_locks.ids);
        pop3_locks.ids = NULL;
        pop3_locks.cap = 0;
    }
}

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
    if (s->locked)
        lock_release(s->user_id);
    pop3_maildrop_free(s);
    sasl_reset(&s->sasl);
    sodium_memzero(s->user, sizeof(s->user));
    free(s);
}

void pop3_release(struct pop3_session *s)
{
    if (s->pending > 0)
        s->pending--;
    if (s->closed && s->pending == 0)
        session_free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    pop3_release(h->data);
}

static void auth_reset(struct pop3_session *s)
{
    s->have_user = false;
    sodium_memzero(s->user, sizeof(s->user));
    sasl_reset(&s->sasl);
    conn_set_max_line(s->conn, POP3_LINE_MAX_BYTES);
}

/* ---- the relay window -------------------------------------------------------------------- */

static int window_run(struct store *st, struct writer_job *job)
{
    struct pop3_window_job *w = (struct pop3_window_job *)job;
    int rc = store_window_open(st, w->key, w->user, w->now_ms, w->duration_ms);
    if (rc == STORE_OK && w->is_login)
        rc = store_pop_login_record(st, w->key, w->user, w->now_ms);
    return rc;
}

static void log_window(uint64_t sid, const struct pop3_window_job *w, const char *ip,
                       const char *event)
{
    log_info("pop3", sid, "event=%s ip=%s key=%s user=%s expires=%lld", event, ip, w->key, w->user,
             (long long)(w->now_ms + w->duration_ms));
}

static void renew_done(struct writer_job *job, int status)
{
    struct pop3_window_job *w = (struct pop3_window_job *)job;
    if (status != 0)
        log_warn("pop3", 0, "event=window-renew-failed key=%s user=%s status=%d", w->key, w->user,
                 status);
    free(w);
}

/* Renews the session's window from now (a job owning itself: the session may go meanwhile). */
static void window_renew(struct pop3_session *s)
{
    uint64_t window_ms = s->app->cfg->relay.window_ms;
    if (!s->window_opened || window_ms == 0 || s->app->writer == NULL)
        return;
    struct pop3_window_job *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        log_warn("pop3", 0, "event=window-renew-failed key=%s error=\"out of memory\"",
                 s->window_key);
        return;
    }
    w->job.run = window_run;
    w->job.done = renew_done;
    snprintf(w->key, sizeof(w->key), "%s", s->window_key);
    snprintf(w->user, sizeof(w->user), "%s", s->address);
    w->now_ms = store_now_ms();
    w->duration_ms = (int64_t)window_ms;
    if (writer_submit(s->app->writer, &w->job) != 0) {
        log_warn("pop3", 0, "event=window-renew-failed key=%s error=\"writer stopped\"", w->key);
        free(w);
    }
}

static void on_renew_timer(uv_timer_t *t)
{
    struct pop3_session *s = t->data;
    if (!s->closed && s->state == POP3_STATE_TRANSACTION)
        window_renew(s);
}

/* ---- logging in -------------------------------------------------------------------------- */

static void login_finish(struct pop3_session *s)
{
    pop3_enter_state(s, POP3_STATE_TRANSACTION);
    uint64_t window_ms = s->app->cfg->relay.window_ms;
    if (s->window_opened && s->renew_open) {
        uint64_t every = window_ms / 2;
        if (every > POP3_WINDOW_RENEW_MAX_MS)
            every = POP3_WINDOW_RENEW_MAX_MS;
        if (every < POP3_WINDOW_RENEW_MIN_MS)
            every = POP3_WINDOW_RENEW_MIN_MS;
        int rc = uv_timer_start(&s->renew_timer, on_renew_timer, every, every);
        if (rc != 0)
            log_warn("pop3", conn_sid(s->conn), "event=window-timer-failed error=\"%s\"",
                     uv_strerror(rc));
    }
    log_info("pop3", conn_sid(s->conn),
             "event=login user=%s ip=%s mech=%s messages=%zu octets=%lld", s->address,
             conn_peer_text(s->conn), s->mech, s->count, (long long)s->total_bytes);
    conn_reply(s->conn, "+OK Logged in: maildrop has %zu messages (%lld octets)\r\n", s->count,
               (long long)s->total_bytes);
    conn_resume_reading(s->conn);
}

/* Back to AUTHORIZATION after a login that got through the password but not further. */
static void login_undo(struct pop3_session *s)
{
    pop3_maildrop_free(s);
    if (s->locked) {
        lock_release(s->user_id);
        s->locked = false;
    }
    s->user_id = 0;
    s->address[0] = '\0';
}

static void login_window_done(struct writer_job *job, int status)
{
    struct pop3_window_job *w = (struct pop3_window_job *)job;
    struct pop3_session *s = w->s;
    struct conn *c = s->conn;
    if (s->closed) {
        /* The client went while the window was being opened: it stays open for relay.window
         * (the countdown from the login), as after any session's end. */
        if (status == 0)
            log_window(0, w, "-", "window-opened");
        conn_unref(&c);
        pop3_release(s);
        return;
    }
    if (status != 0) {
        log_warn("pop3", conn_sid(c), "event=window-failed key=%s user=%s status=%d", w->key,
                 w->user, status);
        login_undo(s);
        conn_reply(c, "-ERR [SYS/TEMP] Cannot log in now, try again later\r\n");
        conn_resume_reading(c);
    } else {
        s->window_opened = true;
        log_window(conn_sid(c), w, conn_peer_text(c), "window-opened");
        login_finish(s);
    }
    conn_unref(&c);
    pop3_release(s);
}

/* The password was right: lock, snapshot, window, then +OK. Reading is paused. */
static void login_begin(struct pop3_session *s, int64_t user_id, const char *address)
{
    struct conn *c = s->conn;
    if (lock_is_held(user_id)) {
        log_info("pop3", conn_sid(c), "event=login-refused user=%s reason=in-use", address);
        conn_reply(c, "-ERR [IN-USE] Maildrop is locked by another session\r\n");
        conn_resume_reading(c);
        return;
    }
    if (lock_take(user_id) != 0) {
        conn_reply(c, "-ERR [SYS/TEMP] Out of memory\r\n");
        conn_resume_reading(c);
        return;
    }
    s->locked = true;
    s->user_id = user_id;
    snprintf(s->address, sizeof(s->address), "%s", address);

    /* RFC 1939 8: the snapshot fixes message numbers and sizes for the whole session. */
    struct store_mail_entry *entries = NULL;
    size_t count = 0;
    if (store_mailbox_snapshot(s->app->reads, user_id, &entries, &count) != STORE_OK) {
        log_error("pop3", conn_sid(c), "event=snapshot-failed user=%s error=\"%s\"", address,
                  store_errmsg(s->app->reads));
        login_undo(s);
        conn_reply(c, "-ERR [SYS/TEMP] Cannot open the maildrop, try again later\r\n");
        conn_resume_reading(c);
        return;
    }
    if (pop3_maildrop_load(s, entries, count) != 0) {
        login_undo(s);
        conn_reply(c, "-ERR [SYS/TEMP] Out of memory\r\n");
        conn_resume_reading(c);
        return;
    }

    uint64_t window_ms = s->app->cfg->relay.window_ms;
    if (window_ms == 0) {
        login_finish(s); /* POP-before-SMTP is off */
        return;
    }
    struct pop3_window_job *w = &s->login_job;
    memset(w, 0, sizeof(*w));
    w->job.run = window_run;
    w->job.done = login_window_done;
    w->s = s;
    ip_window_key(conn_peer_ip(c), s->app->cfg->relay.window_ipv6_prefix, w->key, sizeof(w->key));
    snprintf(s->window_key, sizeof(s->window_key), "%s", w->key);
    snprintf(w->user, sizeof(w->user), "%s", address);
    w->now_ms = store_now_ms();
    w->duration_ms = (int64_t)window_ms;
    w->is_login = true;
    conn_ref(c);
    s->pending++;
    if (writer_submit(s->app->writer, &w->job) != 0) {
        s->pending--;
        conn_unref(&c);
        login_undo(s);
        conn_reply(s->conn, "-ERR [SYS/TEMP] Cannot log in now, try again later\r\n");
        conn_resume_reading(s->conn);
    }
}

static void on_session_timer(uv_timer_t *t)
{
    struct pop3_session *s = t->data;
    if (s->closed)
        return;
    if (s->state == POP3_STATE_TRANSACTION) {
        pop3_stream_stalled(s);
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

void pop3_timer_start(struct pop3_session *s, uint64_t ms)
{
    if (s->timer_open)
        uv_timer_start(&s->timer, on_session_timer, ms, 0);
}

static void auth_done(void *ctx, const struct auth_result *r)
{
    struct pop3_session *s = ctx;
    s->auth_req = NULL; /* freed by auth before this call */
    struct conn *c = s->conn;
    log_info("pop3", conn_sid(c), "event=auth mech=%s result=%s user=%s ip=%s cached=%s", s->mech,
             r->ok          ? "ok"
             : r->temporary ? "error"
                            : "fail",
             r->user[0] ? r->user : "-", conn_peer_text(c), r->cached ? "yes" : "no");
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
    login_begin(s, r->user_id, r->user);
}

/* Hands user/password to auth; reading stays paused until the answer is out. */
static void verify(struct pop3_session *s, const char *user, const char *password, size_t pwlen)
{
    conn_pause_reading(s->conn);
    s->auth_req = auth_verify(s->app->auth, s->app->reads, conn_peer_ip(s->conn), user, password,
                              pwlen, auth_done, s);
    if (s->auth_req == NULL) {
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
    size_t mlen = strcspn(args, " ");
    const char *initial = NULL;
    size_t ilen = 0;
    if (args[mlen] == ' ') {
        initial = args + mlen + 1;
        ilen = strlen(initial);
    }
    s->have_user = false;
    s->mech = strncasecmp(args, "PLAIN", mlen) == 0 && mlen == 5 ? "PLAIN" : "LOGIN";
    struct sasl_step step;
    enum sasl_status st = sasl_start(&s->sasl, args, mlen, initial, ilen, &step);
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
    /* RFC 2595 4: STLS only where it may be used: before login, TLS not on yet. */
    if (authz && conn_can_starttls(c))
        conn_reply(c, "STLS\r\n");
    conn_reply(c, "IMPLEMENTATION postern\r\n.\r\n");
}

static void cmd_quit(struct pop3_session *s, const char *args)
{
    if (s->state == POP3_STATE_TRANSACTION) {
        pop3_maildrop_quit(s);
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

/* The command table (STYLE.md 2): verb, handler, states where it is valid. */
static const struct pop3_command pop3_commands[] = {
    {"CAPA", cmd_capa, POP3_IN_AUTHORIZATION | POP3_IN_TRANSACTION},
    {"QUIT", cmd_quit, POP3_IN_AUTHORIZATION | POP3_IN_TRANSACTION},
    {"STLS", cmd_stls, POP3_IN_AUTHORIZATION},
    {"USER", cmd_user, POP3_IN_AUTHORIZATION},
    {"PASS", cmd_pass, POP3_IN_AUTHORIZATION},
    {"AUTH", cmd_auth, POP3_IN_AUTHORIZATION},
    {"STAT", pop3_cmd_stat, POP3_IN_TRANSACTION},
    {"LIST", pop3_cmd_list, POP3_IN_TRANSACTION},
    {"RETR", pop3_cmd_retr, POP3_IN_TRANSACTION},
    {"DELE", pop3_cmd_dele, POP3_IN_TRANSACTION},
    {"NOOP", cmd_noop, POP3_IN_TRANSACTION},
    {"RSET", pop3_cmd_rset, POP3_IN_TRANSACTION},
    {"TOP", pop3_cmd_top, POP3_IN_TRANSACTION},
    {"UIDL", pop3_cmd_uidl, POP3_IN_TRANSACTION},
};

static const struct pop3_command *find_command(const char *verb, size_t len)
{
    for (size_t i = 0; i < sizeof(pop3_commands) / sizeof(pop3_commands[0]); i++) {
        const struct pop3_command *cmd = &pop3_commands[i];
        if (strlen(cmd->verb) == len && strncasecmp(cmd->verb, verb, len) == 0)
            return cmd;
    }
    return NULL;
}

/* ---- handler callbacks --------------------------------------------------------------------- */

static void pop3_on_open(struct conn *c)
{
    struct pop3_session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        conn_abort(c, "out of memory");
        return;
    }
    s->conn = c;
    s->app = conn_app(c);
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
    conn_reply(c, "+OK postern ready.\r\n");
}

static void pop3_on_line(struct conn *c, const char *line, size_t len)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    if (sasl_is_active(&s->sasl)) {
        sasl_line(s, line, len);
        return;
    }
    s->commands++;
    struct pop3_cmdline cl;
    const struct pop3_command *cmd = NULL;
    if (pop3_parse_line(line, &cl) == 0)
        cmd = find_command(cl.verb, cl.verb_len);
    if (cmd == NULL) {
        pop3_reply_error(s, "-ERR Command not implemented");
        return;
    }
    if ((cmd->states & (1u << s->state)) == 0) {
        pop3_reply_error(s, "-ERR Command not valid in this state");
        return;
    }
    cmd->run(s, cl.args);
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
        pop3_stream_pump(s);
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
    s->closed = true;
    if (s->auth_req != NULL) {
        auth_cancel(s->auth_req);
        s->auth_req = NULL;
    }
    /* The window counts down from the end of the session. */
    window_renew(s);
    pop3_maildrop_free(s);
    s->pending++; /* held while the handles below close */
    if (s->timer_open) {
        s->timer_open = false;
        s->pending++;
        uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    }
    if (s->renew_open) {
        s->renew_open = false;
        s->pending++;
        uv_close((uv_handle_t *)&s->renew_timer, on_handle_closed);
    }
    pop3_release(s);
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
};
