/*
 * smtp_session.c - the SMTP server session (RFC 5321) on top of server/conn.c.
 *
 * What it does now: the greeting, EHLO/HELO, NOOP, RSET, QUIT and STARTTLS (RFC 3207), the
 * replies for overlong and NUL-carrying lines, the idle timeout, the shutdown notice, the busy
 * reply, dropping HTTP requests at once, and 421 after SMTP_MAX_ERRORS error replies. Every other
 * verb gets "502 5.5.1 Command not implemented": honest until the mail transaction (MAIL, RCPT,
 * DATA, AUTH) arrives with the SMTP issue, which extends the command table below.
 *
 * What it does not do: read sockets, buffer lines, speak TLS or time anything; conn.c does, and
 * this file only sees whole lines. Nothing here blocks.
 *
 * Ownership: a struct smtp_session is created in on_open, hangs off the connection
 * (conn_set_session) and is freed in on_close; it borrows its struct conn until then.
 */
#include "server/smtp_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/log.h"

/* Longest verb we look up; anything longer is unknown without a table search. */
#define SMTP_VERB_MAX_BYTES 16

enum smtp_state {
    SMTP_STATE_GREETED = 0, /* greeting sent; no EHLO/HELO yet (or forgotten at STARTTLS) */
    SMTP_STATE_READY,       /* after EHLO/HELO */
};

struct smtp_session {
    struct conn *conn; /* borrowed; the session is freed when it closes */
    enum smtp_state state;
    bool esmtp;        /* the client said EHLO */
    unsigned errors;   /* error replies so far (RFC 5321 leaves the limit to us) */
    uint64_t commands; /* commands dispatched */
};

/*
 * Flags of a command table row. ENDS_GROUP: RFC 2920 3.1 - the client must wait for this reply
 * before sending more (EHLO, STARTTLS, QUIT; later DATA and AUTH), so input already waiting
 * behind it is a pipelining error, logged at debug level. After STARTTLS conn.c discards it.
 */
#define SMTP_CMD_ENDS_GROUP 0x1u

struct smtp_command {
    const char *verb;
    void (*run)(struct smtp_session *s, const char *args);
    unsigned flags;
};

static const char *state_name(enum smtp_state st)
{
    return st == SMTP_STATE_GREETED ? "greeted" : "ready";
}

static void enter_state(struct smtp_session *s, enum smtp_state st)
{
    if (s->state != st)
        log_debug("smtp", conn_sid(s->conn), "event=state from=%s to=%s", state_name(s->state),
                  state_name(st));
    s->state = st;
}

static const char *hostname(const struct smtp_session *s)
{
    return conn_cfg(s->conn)->server.hostname;
}

/* An error reply: counted, and the SMTP_MAX_ERRORS-th one ends the session with 421. */
static void reply_error(struct smtp_session *s, const char *text)
{
    conn_reply(s->conn, "%s\r\n", text);
    if (++s->errors >= SMTP_MAX_ERRORS) {
        conn_reply(s->conn, "421 4.7.0 Too many errors\r\n");
        conn_close(s->conn, "too-many-errors");
    }
}

/* ---- commands ------------------------------------------------------------------------------ */

static bool has_args(const char *args)
{
    return args[0] != '\0';
}

static void cmd_ehlo(struct smtp_session *s, const char *args)
{
    if (!has_args(args)) {
        reply_error(s, "501 5.5.4 Syntax: EHLO hostname");
        return;
    }
    /* RFC 5321 4.1.4: EHLO also resets the transaction, as RSET would (none exists yet). */
    s->esmtp = true;
    enter_state(s, SMTP_STATE_READY);
    const char *ext[4];
    size_t n = 0;
    ext[n++] = "PIPELINING";          /* RFC 2920 */
    ext[n++] = "ENHANCEDSTATUSCODES"; /* RFC 2034 */
    if (conn_can_starttls(s->conn))
        ext[n++] = "STARTTLS"; /* RFC 3207: only before TLS is on */
    conn_reply(s->conn, "250-%s\r\n", hostname(s));
    for (size_t i = 0; i < n; i++)
        conn_reply(s->conn, "250%c%s\r\n", i + 1 == n ? ' ' : '-', ext[i]);
}

static void cmd_helo(struct smtp_session *s, const char *args)
{
    if (!has_args(args)) {
        reply_error(s, "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    s->esmtp = false;
    enter_state(s, SMTP_STATE_READY);
    conn_reply(s->conn, "250 %s\r\n", hostname(s));
}

static void cmd_noop(struct smtp_session *s, const char *args)
{
    /* RFC 5321 4.1.1.9: a parameter may be given and is ignored. */
    conn_reply(s->conn, "250 2.0.0 Ok\r\n");
}

static void cmd_rset(struct smtp_session *s, const char *args)
{
    if (has_args(args)) {
        reply_error(s, "501 5.5.4 Syntax: RSET");
        return;
    }
    conn_reply(s->conn, "250 2.0.0 Ok\r\n");
}

static void cmd_quit(struct smtp_session *s, const char *args)
{
    conn_reply(s->conn, "221 2.0.0 Bye\r\n");
    conn_close(s->conn, "quit");
}

static void cmd_starttls(struct smtp_session *s, const char *args)
{
    if (conn_is_tls(s->conn)) {
        reply_error(s, "554 5.5.1 Error: TLS already active");
        return;
    }
    if (!conn_can_starttls(s->conn)) {
        reply_error(s, "502 5.5.1 Command not implemented");
        return;
    }
    if (has_args(args)) {
        reply_error(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    conn_reply(s->conn, "220 2.0.0 Ready to start TLS\r\n");
    if (conn_starttls(s->conn) != 0)
        conn_abort(s->conn, "tls-error: setup");
}

/* The command table (STYLE.md 2). The SMTP issue adds MAIL, RCPT, DATA, AUTH, VRFY, ... */
static const struct smtp_command smtp_commands[] = {
    {"EHLO", cmd_ehlo, SMTP_CMD_ENDS_GROUP},
    {"HELO", cmd_helo, SMTP_CMD_ENDS_GROUP},
    {"NOOP", cmd_noop, 0},
    {"RSET", cmd_rset, 0},
    {"QUIT", cmd_quit, SMTP_CMD_ENDS_GROUP},
    {"STARTTLS", cmd_starttls, SMTP_CMD_ENDS_GROUP},
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
        method = strlen(methods[i]) == mlen && memcmp(methods[i], line, mlen) == 0;
    if (!method)
        return false;
    const char *last = strrchr(line, ' '); /* line is NUL-terminated without NUL inside */
    return strncmp(last + 1, "HTTP/", 5) == 0;
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
        reply_error(s, "502 5.5.1 Command not implemented");
        return;
    }
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
    /* RFC 5321 4.5.3.1.4 (line limit) and 4.2.4; the rest of an overlong line is skipped. */
    reply_error(s,
                why == LINEREADER_TOO_LONG ? "500 5.5.0 Line too long" : "500 5.5.2 Syntax error");
}

static void smtp_on_tls_ready(struct conn *c)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return;
    /* RFC 3207 4.2: forget everything learned from the client before TLS, EHLO included. */
    s->esmtp = false;
    enter_state(s, SMTP_STATE_GREETED);
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

static void smtp_on_close(struct conn *c, const char *reason)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return;
    log_debug("smtp", conn_sid(c), "event=session-end commands=%llu errors=%u",
              (unsigned long long)s->commands, s->errors);
    free(s);
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
    .on_data = NULL,
    .on_tls_ready = smtp_on_tls_ready,
    .on_timeout = smtp_on_timeout,
    .on_shutdown = smtp_on_shutdown,
    .on_drain = NULL,
    .on_close = smtp_on_close,
    .busy_reply = smtp_busy_reply,
};
