/*
 * smtp_session.c - the SMTP server session (RFC 5321) on top of server/net/conn.c: the state
 * machine, the command table and its dispatcher, and the commands that need no more than a reply
 * (EHLO, HELO, NOOP, RSET, QUIT, HELP, VRFY, EXPN, STARTTLS, AUTH). The mail transaction (MAIL,
 * RCPT, DATA, delivery through the writer) is in smtp_tx.c; both share server/smtp/smtp_internal.h.
 *
 * What it does not do: read sockets, buffer lines, speak TLS or time anything but the delayed
 * answer to a failed AUTH; conn.c does, and this file only sees whole lines. Nothing here blocks:
 * password checks run in the threadpool (server/auth/auth.c), writes in the writer thread.
 *
 * Replies: every 2xx/4xx/5xx reply carries an RFC 3463 enhanced status code (RFC 2034), except
 * where RFC 2034 3 leaves it out: the 220 greeting and the EHLO/HELO 250 lines. Intermediate 334
 * and 354 replies have no class for one. The qmail-style relay refusal (INTERFACE.md) keeps
 * qmail's text, whose code sits at the end: "(#5.7.1)".
 *
 * Ownership: a struct smtp_session is created in on_open, hangs off the connection
 * (conn_set_session) and is freed in on_close, unless a writer job is in flight: then it marks
 * itself closed and the job's done callback frees it (conn.h). An AUTH verification in flight is
 * cancelled and the delay timer closed in on_close, so neither calls back into a freed session.
 */
#include "server/smtp/smtp_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/log.h"
#include "server/app.h"
#include "server/smtp/smtp_internal.h"

/* Longest verb we look up; anything longer is unknown without a table search. */
#define SMTP_VERB_MAX_BYTES 16

static const char *state_name(enum smtp_state st)
{
    static const char *const names[] = {"greeted", "ready", "mail", "rcpt", "data", "busy"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

void smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
    if (s->state != st)
        log_debug("smtp", conn_sid(s->conn), "event=state from=%s to=%s", state_name(s->state),
                  state_name(st));
    s->state = st;
}

const char *smtp_hostname(const struct smtp_session *s)
{
    return conn_cfg(s->conn)->server.hostname;
}

/*
 * An error reply (4xx/5xx): logged as event=rejected with its code and the command, counted,
 * and the SMTP_MAX_ERRORS-th one ends the session with 421.
 */
void smtp_reply_error(struct smtp_session *s, const char *fmt, ...)
{
    char line[SMTP_REPLY_LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    conn_reply(s->conn, "%s\r\n", line);
    char esc[SMTP_REPLY_LINE_MAX_BYTES];
    log_escape(esc, sizeof(esc), line, strlen(line));
    log_info("smtp", conn_sid(s->conn), "event=rejected code=%.3s command=%s reply=%s", line,
             s->verb, esc);
    if (++s->errors >= SMTP_MAX_ERRORS && !conn_is_closing(s->conn)) {
        conn_reply(s->conn, "421 4.7.0 %s Error: too many errors\r\n", smtp_hostname(s));
        conn_close(s->conn, "too-many-errors");
    }
}

bool smtp_has_args(const char *args)
{
    return args[0] != '\0';
}

/* ---- the delayed timer for failed AUTH -------------------------------------------------- */

static void timer_close_cb(uv_handle_t *h)
{
    free(h->data);
}

/* Closes the delay timer, if any; its callback never runs afterwards. */
static void timer_drop(struct smtp_session *s)
{
    if (s->delay_timer == NULL)
        return;
    struct smtp_delay_timer *t = s->delay_timer;
    s->delay_timer = NULL;
    t->s = NULL;
    uv_timer_stop(&t->h);
    uv_close((uv_handle_t *)&t->h, timer_close_cb);
}

static void auth_failure_answer(struct smtp_session *s)
{
    if (s->auth_too_many) {
        /* RFC 4954 4 allows closing after repeated failures; say why first. */
        conn_reply(s->conn, "535 5.7.8 Authentication credentials invalid\r\n");
        conn_reply(s->conn, "421 4.7.0 %s Error: too many authentication failures\r\n",
                   smtp_hostname(s));
        conn_close(s->conn, "too-many-auth-failures");
        return;
    }
    smtp_reply_error(s, "535 5.7.8 Authentication credentials invalid");
    if (!conn_is_closing(s->conn))
        conn_resume_reading(s->conn);
}

static void delay_timer_cb(uv_timer_t *h)
{
    struct smtp_delay_timer *t = h->data;
    struct smtp_session *s = t->s;
    if (s == NULL)
        return;
    timer_drop(s);
    auth_failure_answer(s);
}

/* Answers the failure after delay_ms (auth.h: the session waits, not the auth module). */
static void auth_failure_later(struct smtp_session *s, uint64_t delay_ms)
{
    struct smtp_delay_timer *t = calloc(1, sizeof(*t));
    if (t == NULL || uv_timer_init(conn_loop(s->conn), &t->h) != 0) {
        free(t);
        auth_failure_answer(s);
        return;
    }
    t->s = s;
    t->h.data = t;
    s->delay_timer = t;
    if (uv_timer_start(&t->h, delay_timer_cb, delay_ms, 0) != 0) {
        timer_drop(s);
        auth_failure_answer(s);
    }
}

/* ---- AUTH (RFC 4954) ------------------------------------------------------------------------ */

/* AUTH is offered under TLS, or in plaintext when smtp.plaintext_auth says so. */
bool smtp_auth_offered(const struct smtp_session *s)
{
    return conn_is_tls(s->conn) || conn_cfg(s->conn)->smtp.plaintext_auth;
}

static void sasl_finish(struct smtp_session *s)
{
    sasl_reset(&s->sasl);
    conn_set_max_line(s->conn, SMTP_LINE_MAX_BYTES);
}

static void auth_done(void *ctx, const struct auth_result *r)
{
    struct smtp_session *s = ctx;
    s->auth_req = NULL;
    char user[ADDRESS_STRLEN * 2];
    log_escape(user, sizeof(user), r->user, strlen(r->user));
    if (r->ok) {
        snprintf(s->auth_user, sizeof(s->auth_user), "%s", r->user);
        log_info("smtp", conn_sid(s->conn), "event=auth result=ok user=%s cached=%s", user,
                 r->cached ? "yes" : "no");
        conn_reply(s->conn, "235 2.7.0 Authentication successful\r\n");
        conn_resume_reading(s->conn);
        return;
    }
    if (r->temporary) {
        log_warn("smtp", conn_sid(s->conn), "event=auth result=error user=%s", user);
        smtp_reply_error(s, "454 4.7.0 Temporary authentication failure");
        if (!conn_is_closing(s->conn))
            conn_resume_reading(s->conn);
        return;
    }
    s->auth_failures++;
    s->auth_too_many = r->too_many || s->auth_failures >= SMTP_MAX_AUTH_FAILURES;
    log_info("smtp", conn_sid(s->conn), "event=auth result=fail user=%s failures=%u", user,
             s->auth_failures);
    if (r->delay_ms > 0)
        auth_failure_later(s, r->delay_ms);
    else
        auth_failure_answer(s);
}

/* A SASL step's result: challenge, verification, or the error reply. */
static void sasl_result(struct smtp_session *s, const struct sasl_step *step)
{
    switch (step->status) {
    case SASL_CHALLENGE:
        conn_set_max_line(s->conn, SMTP_AUTH_LINE_MAX_BYTES);
        conn_mask_next_line(s->conn);
        conn_reply(s->conn, "334 %s\r\n", step->challenge);
        return;
    case SASL_DONE: {
        struct app *app = conn_app(s->conn);
        conn_pause_reading(s->conn);
        s->auth_req = auth_verify(app->auth, app->reads, conn_peer_ip(s->conn), step->user,
                                  step->password, step->password_len, auth_done, s);
        sasl_finish(s);
        if (s->auth_req == NULL) {
            conn_resume_reading(s->conn);
            smtp_reply_error(s, "454 4.7.0 Temporary authentication failure");
        }
        return;
    }
    case SASL_CANCELLED:
        sasl_finish(s);
        smtp_reply_error(s, "501 5.7.0 Authentication cancelled");
        return;
    case SASL_UNSUPPORTED_MECH:
        sasl_finish(s);
        smtp_reply_error(s, "504 5.5.4 Unrecognized authentication mechanism");
        return;
    case SASL_AUTHZID_REFUSED:
        sasl_finish(s);
        smtp_reply_error(s, "535 5.7.8 Authentication credentials invalid");
        return;
    case SASL_MALFORMED:
    default:
        sasl_finish(s);
        smtp_reply_error(s, "501 5.5.2 Cannot decode response");
        return;
    }
}

static void cmd_auth(struct smtp_session *s, const char *args)
{
    if (!s->esmtp) {
        smtp_reply_error(s, "503 5.5.1 Error: send EHLO first");
        return;
    }
    if (s->auth_user[0] != '\0') {
        smtp_reply_error(s, "503 5.5.1 Error: already authenticated");
        return;
    }
    if (s->state != SMTP_STATE_READY) {
        smtp_reply_error(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    if (!smtp_auth_offered(s)) {
        smtp_reply_error(s, "538 5.7.11 Encryption required for requested authentication "
                            "mechanism");
        return;
    }
    if (!smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        return;
    }
    size_t mlen = strcspn(args, " ");
    const char *initial = NULL;
    size_t ilen = 0;
    if (args[mlen] == ' ') {
        initial = args + mlen + 1;
        ilen = strlen(initial);
    }
    struct sasl_step step;
    sasl_start(&s->sasl, args, mlen, initial, ilen, &step);
    sasl_result(s, &step);
}

/* A line answering a 334 challenge (the transcript already masked it). */
static void auth_continue(struct smtp_session *s, const char *line, size_t len)
{
    struct sasl_step step;
    sasl_step(&s->sasl, line, len, &step);
    sasl_result(s, &step);
}

/* ---- commands ------------------------------------------------------------------------------ */

static void forget_client(struct smtp_session *s)
{
    smtp_tx_reset(s);
    s->esmtp = false;
    s->helo[0] = '\0';
}

static void cmd_ehlo(struct smtp_session *s, const char *args)
{
    if (!smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: EHLO hostname");
        return;
    }
    /* RFC 5321 4.1.4: EHLO also resets the transaction, as RSET would. */
    smtp_tx_reset(s);
    s->esmtp = true;
    smtp_helo_sanitize(args, s->helo, sizeof(s->helo));
    smtp_enter_state(s, SMTP_STATE_READY);
    char esc[SMTP_HELO_MAX_BYTES + 16];
    log_info("smtp", conn_sid(s->conn), "event=helo verb=EHLO name=%s",
             log_escape(esc, sizeof(esc), args, strlen(args)));
    const struct cfg *cfg = conn_cfg(s->conn);
    char size[48];
    snprintf(size, sizeof(size), "SIZE %llu", (unsigned long long)cfg->smtp.max_message_size_bytes);
    const char *ext[8];
    size_t n = 0;
    ext[n++] = "PIPELINING";          /* RFC 2920 */
    ext[n++] = size;                  /* RFC 1870 */
    ext[n++] = "8BITMIME";            /* RFC 6152 */
    ext[n++] = "ENHANCEDSTATUSCODES"; /* RFC 2034 */
    if (conn_can_starttls(s->conn))
        ext[n++] = "STARTTLS"; /* RFC 3207: only before TLS is on */
    if (smtp_auth_offered(s) && s->auth_user[0] == '\0')
        ext[n++] = "AUTH " SASL_MECHANISMS; /* RFC 4954 */
    /* SMTPUTF8 (RFC 6531) is not offered: common/pure/address.c refuses 8-bit addresses. */
    conn_reply(s->conn, "250-%s\r\n", smtp_hostname(s));
    for (size_t i = 0; i < n; i++)
        conn_reply(s->conn, "250%c%s\r\n", i + 1 == n ? ' ' : '-', ext[i]);
}

static void cmd_helo(struct smtp_session *s, const char *args)
{
    if (!smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    smtp_tx_reset(s);
    s->esmtp = false;
    smtp_helo_sanitize(args, s->helo, sizeof(s->helo));
    smtp_enter_state(s, SMTP_STATE_READY);
    char esc[SMTP_HELO_MAX_BYTES + 16];
    log_info("smtp", conn_sid(s->conn), "event=helo verb=HELO name=%s",
             log_escape(esc, sizeof(esc), args, strlen(args)));
    conn_reply(s->conn, "250 %s\r\n", smtp_hostname(s));
}

static void cmd_noop(struct smtp_session *s, const char *args)
{
    /* RFC 5321 4.1.1.9: a parameter may be given and is ignored. */
    conn_reply(s->conn, "250 2.0.0 Ok\r\n");
}

static void cmd_rset(struct smtp_session *s, const char *args)
{
    if (smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: RSET");
        return;
    }
    smtp_tx_reset(s);
    conn_reply(s->conn, "250 2.0.0 Ok\r\n");
}

static void cmd_quit(struct smtp_session *s, const char *args)
{
    conn_reply(s->conn, "221 2.0.0 Bye\r\n");
    conn_close(s->conn, "quit");
}

static void cmd_help(struct smtp_session *s, const char *args)
{
    conn_reply(s->conn, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY "
                        "STARTTLS AUTH; see RFC 5321\r\n");
}

static void cmd_vrfy(struct smtp_session *s, const char *args)
{
    if (!smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: VRFY address");
        return;
    }
    /* RFC 5321 3.5.3: 252 says neither yes nor no, so VRFY never reveals whether a user exists. */
    conn_reply(s->conn,
               "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
}

static void cmd_expn(struct smtp_session *s, const char *args)
{
    /* RFC 5321 3.5.2 allows refusing EXPN; postern has no lists to expand anyway. */
    smtp_reply_error(s, "502 5.5.1 EXPN not available");
}

static void cmd_starttls(struct smtp_session *s, const char *args)
{
    if (conn_is_tls(s->conn)) {
        smtp_reply_error(s, "554 5.5.1 Error: TLS already active");
        return;
    }
    if (!conn_can_starttls(s->conn)) {
        smtp_reply_error(s, "502 5.5.1 Command not implemented");
        return;
    }
    if (smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    /* RFC 3207 4.2: what was learned before TLS is forgotten; after AUTH or inside a
     * transaction there is something that must not be forgotten silently, so refuse. */
    if (s->auth_user[0] != '\0' || s->state >= SMTP_STATE_MAIL) {
        smtp_reply_error(s, "503 5.5.1 Error: STARTTLS not allowed now");
        return;
    }
    conn_reply(s->conn, "220 2.0.0 Ready to start TLS\r\n");
    if (conn_starttls(s->conn) != 0)
        conn_abort(s->conn, "tls-error: setup");
}

/*
 * The command table (STYLE.md 2). ENDS_GROUP: RFC 2920 3.1 - the client must wait for this reply
 * before sending more (EHLO, HELO, STARTTLS, AUTH, DATA, QUIT), so input already waiting behind it
 * is a pipelining error, logged at debug level. After STARTTLS conn.c discards it.
 */
#define SMTP_CMD_ENDS_GROUP 0x1u

struct smtp_command {
    const char *verb;
    void (*run)(struct smtp_session *s, const char *args);
    unsigned flags;
};

static const struct smtp_command smtp_commands[] = {
    {"EHLO", cmd_ehlo, SMTP_CMD_ENDS_GROUP},
    {"HELO", cmd_helo, SMTP_CMD_ENDS_GROUP},
    {"MAIL", smtp_cmd_mail, 0},
    {"RCPT", smtp_cmd_rcpt, 0},
    {"DATA", smtp_cmd_data, SMTP_CMD_ENDS_GROUP},
    {"RSET", cmd_rset, 0},
    {"NOOP", cmd_noop, 0},
    {"QUIT", cmd_quit, SMTP_CMD_ENDS_GROUP},
    {"HELP", cmd_help, 0},
    {"VRFY", cmd_vrfy, 0},
    {"EXPN", cmd_expn, 0},
    {"STARTTLS", cmd_starttls, SMTP_CMD_ENDS_GROUP},
    {"AUTH", cmd_auth, SMTP_CMD_ENDS_GROUP},
};

static const struct smtp_command *find_command(const char *verb, size_t len)
{
    for (size_t i = 0; i < sizeof(smtp_commands) / sizeof(smtp_commands[0]); i++) {
        const struct smtp_command *cmd = &smtp_commands[i];
        if (strlen(cmd->verb) == len && strncasecmp(cmd->verb, verb, len) == 0)
            return cmd;
    }
    return NULL;
}

/*
 * "GET / HTTP/1.1" and friends: a browser or a proxy-abuse probe, never a mail client. Answering
 * would only help cross-protocol tricks, so the connection is dropped (Postfix does the same).
 */
static bool is_http_request(const char *line, size_t len)
{
    static const char *const methods[] = {"GET",     "POST",    "HEAD",  "PUT",  "DELETE",
                                          "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    const char *sp = memchr(line, ' ', len);
    if (sp == NULL)
        return false;
    size_t mlen = (size_t)(sp - line);
    bool method = false;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]) && !method; i++)
        method = strlen(methods[i]) == mlen && strncasecmp(methods[i], line, mlen) == 0;
    if (!method)
        return false;
    const char *last = strrchr(line, ' '); /* line is NUL-terminated without NUL inside */
    return strncasecmp(last + 1, "HTTP/", 5) == 0;
}

/* ---- handler callbacks --------------------------------------------------------------------- */

static void smtp_on_open(struct conn *c)
{
    struct smtp_session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        conn_abort(c, "out of memory");
        return;
    }
    s->conn = c;
    s->state = SMTP_STATE_GREETED;
    snprintf(s->verb, sizeof(s->verb), "-");
    conn_set_session(c, s);
    const struct cfg *cfg = conn_cfg(c);
    conn_set_timeout(c, cfg->smtp.timeout_ms);
    /* RFC 5321 4.2: the greeting starts with our domain. On 465 the TLS layer holds it until
     * the handshake is done. */
    conn_reply(c, "220 %s ESMTP postern\r\n", cfg->server.hostname);
}

static void smtp_on_line(struct conn *c, const char *line, size_t len)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return;
    if (sasl_is_active(&s->sasl)) {
        auth_continue(s, line, len);
        return;
    }
    if (is_http_request(line, len)) {
        log_info("smtp", conn_sid(c), "event=http-request");
        conn_abort(c, "http-request");
        return;
    }
    size_t vlen = strcspn(line, " ");
    const char *args = line + vlen;
    while (*args == ' ')
        args++;
    const struct smtp_command *cmd = vlen <= SMTP_VERB_MAX_BYTES ? find_command(line, vlen) : NULL;
    s->commands++;
    if (cmd == NULL) {
        snprintf(s->verb, sizeof(s->verb), "unknown");
        smtp_reply_error(s, "500 5.5.2 Error: command not recognized");
        return;
    }
    snprintf(s->verb, sizeof(s->verb), "%s", cmd->verb);
    if (cmd->flags & SMTP_CMD_ENDS_GROUP) {
        struct conn_stats st;
        conn_get_stats(c, &st);
        if (st.input_bytes > 0)
            log_debug("smtp", conn_sid(c), "event=pipelining-violation command=%s", cmd->verb);
    }
    cmd->run(s, args);
}

static void smtp_on_bad_line(struct conn *c, enum linereader_status why)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return;
    if (sasl_is_active(&s->sasl)) {
        /* RFC 4954 4: a response over the limit fails the exchange. */
        sasl_finish(s);
        smtp_reply_error(s, why == LINEREADER_TOO_LONG
                                ? "500 5.5.6 Authentication Exchange line is too long"
                                : "501 5.5.2 Cannot decode response");
        return;
    }
    /* RFC 5321 4.5.3.1.4 (line limit) and 4.2.4; the rest of an overlong line is skipped. */
    snprintf(s->verb, sizeof(s->verb), "bad-line");
    smtp_reply_error(s, why == LINEREADER_TOO_LONG ? "500 5.5.0 Line too long"
                                                   : "500 5.5.2 Syntax error");
}

static void smtp_on_tls_ready(struct conn *c)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return;
    /* RFC 3207 4.2: forget everything learned from the client before TLS, EHLO included. */
    forget_client(s);
    smtp_enter_state(s, SMTP_STATE_GREETED);
}

static void smtp_on_timeout(struct conn *c)
{
    /* RFC 5321 4.5.3.2: the server may close after its timeout; say why first. */
    conn_reply(c, "421 4.4.2 %s Error: timeout exceeded\r\n", conn_cfg(c)->server.hostname);
}

static void smtp_on_shutdown(struct conn *c)
{
    conn_reply(c, "421 4.3.2 %s Service shutting down\r\n", conn_cfg(c)->server.hostname);
}

void smtp_session_free(struct smtp_session *s)
{
    smtp_tx_free(s);
    sasl_reset(&s->sasl);
    free(s);
}

static void smtp_on_close(struct conn *c, const char *reason)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return;
    log_debug("smtp", conn_sid(c), "event=session-end commands=%llu errors=%u",
              (unsigned long long)s->commands, s->errors);
    timer_drop(s);
    if (s->auth_req != NULL) {
        auth_cancel(s->auth_req);
        s->auth_req = NULL;
    }
    conn_set_session(c, NULL);
    if (s->job_busy) {
        /* The writer still holds the job (and a connection reference): its done frees us. */
        s->closed = true;
        return;
    }
    smtp_session_free(s);
}

static void smtp_busy_reply(const struct cfg *cfg, bool per_ip, char *buf, size_t len)
{
    snprintf(buf, len, "421 4.7.0 %s Error: too many connections%s\r\n", cfg->server.hostname,
             per_ip ? " from your address" : "");
}

const struct conn_handler smtp_session_handler = {
    .proto = "smtp",
    .max_line_bytes = SMTP_LINE_MAX_BYTES,
    .largest_line_bytes = SMTP_AUTH_LINE_MAX_BYTES,
    .on_open = smtp_on_open,
    .on_line = smtp_on_line,
    .on_bad_line = smtp_on_bad_line,
    .on_data = smtp_on_data,
    .on_tls_ready = smtp_on_tls_ready,
    .on_timeout = smtp_on_timeout,
    .on_shutdown = smtp_on_shutdown,
    .on_drain = NULL,
    .on_close = smtp_on_close,
    .busy_reply = smtp_busy_reply,
};
