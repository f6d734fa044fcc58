/*
 * pop3_session.c - the POP3 server session (RFC 1939) on top of server/conn.c.
 *
 * What it does now: the greeting, CAPA (RFC 2449), QUIT, STLS (RFC 2595), the replies for overlong
 * and NUL-carrying lines, autologout, the shutdown notice and the busy reply, and -ERR with a
 * close after POP3_MAX_ERRORS errors. The AUTHORIZATION state is all there is yet: USER/PASS,
 * AUTH, and the TRANSACTION commands (STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL) arrive with
 * the POP3 issue, which extends the command table below; until then they get "-ERR Command not
 * implemented" (NOOP exists but only in TRANSACTION, so it gets the wrong-state reply).
 *
 * What it does not do: sockets, line buffering, TLS, timers (conn.c).
 *
 * Ownership: a struct pop3_session is created in on_open, hangs off the connection and is freed
 * in on_close.
 */
#include "server/pop3_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/log.h"

/* RFC 2449 3: keywords are at most 40 octets (RFC 1939 ones are 3 or 4). */
#define POP3_VERB_MAX_BYTES 40

enum pop3_state {
    POP3_STATE_AUTHORIZATION = 0,
    POP3_STATE_TRANSACTION,
    POP3_STATE_UPDATE,
};

/* Bit masks of states for the command table. */
#define POP3_IN_AUTHORIZATION (1u << POP3_STATE_AUTHORIZATION)
#define POP3_IN_TRANSACTION   (1u << POP3_STATE_TRANSACTION)

struct pop3_session {
    struct conn *conn; /* borrowed; the session is freed when it closes */
    enum pop3_state state;
    unsigned errors;
    uint64_t commands;
};

struct pop3_command {
    const char *verb;
    void (*run)(struct pop3_session *s, const char *args);
    unsigned states; /* POP3_IN_* mask where the command is valid */
};

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

static void enter_state(struct pop3_session *s, enum pop3_state st)
{
    if (s->state != st)
        log_debug("pop3", conn_sid(s->conn), "event=state from=%s to=%s", state_name(s->state),
                  state_name(st));
    s->state = st;
}

static void reply_error(struct pop3_session *s, const char *text)
{
    conn_reply(s->conn, "%s\r\n", text);
    if (++s->errors >= POP3_MAX_ERRORS) {
        conn_reply(s->conn, "-ERR Too many errors\r\n");
        conn_close(s->conn, "too-many-errors");
    }
}

/* ---- commands ------------------------------------------------------------------------------ */

static void cmd_capa(struct pop3_session *s, const char *args)
{
    conn_reply(s->conn, "+OK Capability list follows\r\n");
    /* RFC 2595 4: STLS only where it may be used: before login, TLS not on yet. */
    if (s->state == POP3_STATE_AUTHORIZATION && conn_can_starttls(s->conn))
        conn_reply(s->conn, "STLS\r\n");
    conn_reply(s->conn, "PIPELINING\r\nIMPLEMENTATION postern\r\n.\r\n");
}

static void cmd_quit(struct pop3_session *s, const char *args)
{
    /* In TRANSACTION the POP3 issue enters UPDATE here and applies the deletions first. */
    conn_reply(s->conn, "+OK Bye\r\n");
    conn_close(s->conn, "quit");
}

static void cmd_noop(struct pop3_session *s, const char *args)
{
    conn_reply(s->conn, "+OK\r\n");
}

static void cmd_stls(struct pop3_session *s, const char *args)
{
    if (conn_is_tls(s->conn)) {
        reply_error(s, "-ERR Command not permitted when TLS active");
        return;
    }
    if (!conn_can_starttls(s->conn)) {
        reply_error(s, "-ERR Command not implemented");
        return;
    }
    if (args[0] != '\0') {
        reply_error(s, "-ERR Syntax error: STLS takes no argument");
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
    {"NOOP", cmd_noop, POP3_IN_TRANSACTION},
    {"STLS", cmd_stls, POP3_IN_AUTHORIZATION},
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
    s->state = POP3_STATE_AUTHORIZATION;
    conn_set_session(c, s);
    /* RFC 1939 3: the autologout timer is at least 10 minutes; the config enforces >= 1s for
     * tests and warns below the RFC. */
    conn_set_timeout(c, conn_cfg(c)->pop3.timeout_ms);
    conn_reply(c, "+OK postern ready.\r\n");
}

static void pop3_on_line(struct conn *c, const char *line, size_t len)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    size_t vlen = strcspn(line, " ");
    const char *args = line + vlen;
    if (*args == ' ')
        args++; /* RFC 1939 3: keyword and arguments are separated by one space */
    const struct pop3_command *cmd = vlen <= POP3_VERB_MAX_BYTES ? find_command(line, vlen) : NULL;
    s->commands++;
    if (cmd == NULL) {
        reply_error(s, "-ERR Command not implemented");
        return;
    }
    if ((cmd->states & (1u << s->state)) == 0) {
        reply_error(s, "-ERR Command not valid in this state");
        return;
    }
    cmd->run(s, args);
}

static void pop3_on_bad_line(struct conn *c, enum linereader_status why)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    /* RFC 2449 4: commands are at most 255 octets; the rest of a longer line is skipped. */
    reply_error(s, why == LINEREADER_TOO_LONG ? "-ERR Line too long" : "-ERR Syntax error");
}

static void pop3_on_tls_ready(struct conn *c)
{
    struct pop3_session *s = conn_session(c);
    if (s == NULL)
        return;
    /* RFC 2595 4: nothing learned before TLS carries over; AUTHORIZATION holds nothing yet. */
    enter_state(s, POP3_STATE_AUTHORIZATION);
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
    /* A dropped connection deletes nothing (RFC 1939 6): no UPDATE state here. */
    log_debug("pop3", conn_sid(c), "event=session-end commands=%llu errors=%u",
              (unsigned long long)s->commands, s->errors);
    free(s);
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
    .largest_line_bytes = POP3_LINE_MAX_BYTES,
    .on_open = pop3_on_open,
    .on_line = pop3_on_line,
    .on_bad_line = pop3_on_bad_line,
    .on_data = NULL,
    .on_tls_ready = pop3_on_tls_ready,
    .on_timeout = pop3_on_timeout,
    .on_shutdown = pop3_on_shutdown,
    .on_drain = NULL,
    .on_close = pop3_on_close,
    .busy_reply = pop3_busy_reply,
};
