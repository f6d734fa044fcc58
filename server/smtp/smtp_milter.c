/*
 * smtp_milter.c - where the SMTP session asks its milters (server/milter/milter.h): at connect
 * (before the greeting), after HELO/EHLO, MAIL and RCPT were accepted by postern's own checks
 * (before their positive reply), and at end of data (before the delivery job, so that every
 * verdict and modification is applied before the durable 250). Reading is paused while the
 * milters think; the session's reference count is untouched, because closing the session frees
 * the milters first and a step in flight then never answers.
 *
 * Verdicts: reject and tempfail answer the command with the milter's text (or 550 5.7.1 /
 * 451 4.7.1); at connect the greeting itself is the refusal and the session ends. A recipient
 * refused is taken back out of the transaction. Discard at MAIL, RCPT or end of message accepts
 * the message and stores nothing (logged as event=message-discarded). The DATA command's own
 * step is sent at end of data, just before the headers, as the milters see the message whole.
 *
 * What the steps need between a command and its answer (struct smtp_milter: the RCPT line, the
 * split MAIL/RCPT arguments, about 2 KiB) is allocated at connect and only when the service has
 * milters: an idle session without them carries a NULL pointer.
 */
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/pure/milter.h"
#include "server/milter/milter.h"
#include "server/smtp/smtp_internal.h"

/* Arguments of MAIL or RCPT a milter is shown: the path and a few parameters. */
#define SMTP_MILTER_ARGS_MAX 8

struct smtp_milter {
    struct milter_session *ms;                   /* owned */
    enum milter_step step;                       /* the envelope step being asked */
    void (*next_ok)(struct smtp_session *s);     /* the positive reply, once they agree */
    struct smtp_tx_rcpt_mark mark;               /* RCPT: what to take back on refusal */
    bool discard;                                /* a milter said discard: store nothing */
    char rcpt_args[SMTP_COMMAND_LINE_MAX_BYTES]; /* the RCPT being answered */
    char args[SMTP_COMMAND_LINE_MAX_BYTES];      /* MAIL/RCPT split for the milters */
    const char *argv[SMTP_MILTER_ARGS_MAX];      /* into args */
};

static bool is_submission(const struct smtp_session *s)
{
    enum conn_service svc = conn_service(s->conn);
    return svc == CONN_SERVICE_SMTP_SUBMISSION || svc == CONN_SERVICE_SMTP_SUBMISSIONS;
}

/* Pauses reading for a step; its done resumes it. */
static void step_begin(struct smtp_session *s)
{
    conn_pause_reading(s->conn);
}

static void step_end(struct smtp_session *s)
{
    if (!s->ref.closed && !conn_is_closing(s->conn))
        conn_resume_reading(s->conn);
}

/* ---- connect ---- */

static void connect_done(void *ctx, const struct milter_verdict *v)
{
    struct smtp_session *s = ctx;
    if (s->ref.closed)
        return; /* not reached: on_close frees the milters first */
    const struct cfg *cfg = conn_cfg(s->conn);
    if (v->kind == MILTER_V_REJECT || v->kind == MILTER_V_TEMPFAIL) {
        /* RFC 5321 3.1: a 554 greeting refuses the session; 421 says "not now". */
        conn_reply(s->conn, "%s %s\r\n", v->kind == MILTER_V_REJECT ? "554 5.7.1" : "421 4.7.1",
                   cfg->server.hostname);
        conn_close(s->conn, "milter-refused");
        return;
    }
    conn_reply(s->conn, "220 %s ESMTP postern\r\n", cfg->server.hostname);
    step_end(s);
}

bool smtp_milter_connect(struct smtp_session *s)
{
    struct conn *c = s->conn;
    struct milter_session *ms =
        milter_session_new(conn_loop(c), conn_cfg(c), is_submission(s), conn_sid(c));
    if (ms == NULL)
        return false;
    s->milter = calloc(1, sizeof(*s->milter));
    if (s->milter == NULL) {
        /* Going on without the milters would let unfiltered mail in. */
        milter_session_free(&ms);
        log_error("milter", conn_sid(c), "event=milter-session-failed reason=no-memory");
        conn_reply(c, "421 4.3.0 %s Error: insufficient system resources\r\n",
                   conn_cfg(c)->server.hostname);
        conn_close(c, "no-memory");
        return true;
    }
    s->milter->ms = ms;
    char name[80];
    snprintf(name, sizeof(name), "[%s]", conn_peer_text(c));
    struct milter_client_info ci = {
        .hostname = conn_cfg(c)->server.hostname,
        .daemon = conn_service_name(conn_service(c)),
        .peer_ip = conn_peer_text(c),
        .peer_name = name,
        .peer_port = conn_peer_port(c),
        .ipv6 = conn_peer_ip(c)->family == AF_INET6,
    };
    step_begin(s);
    milter_step_connect(s->milter->ms, &ci, connect_done, s);
    return true;
}

/* ---- HELO, MAIL, RCPT ---- */

/* The verdict of an envelope step: the positive reply (s->milter->next_ok), or the
 * milter's refusal. */
static void envelope_done(void *ctx, const struct milter_verdict *v)
{
    struct smtp_session *s = ctx;
    if (s->ref.closed)
        return; /* not reached: on_close frees the milters first */
    switch (v->kind) {
    case MILTER_V_DISCARD:
        s->milter->discard = true; /* the client hears the positive reply all the same */
        s->milter->next_ok(s);
        break;
    case MILTER_V_CONTINUE:
        s->milter->next_ok(s);
        break;
    default:
        if (s->milter->step == MILTER_STEP_RCPT)
            smtp_tx_rcpt_undo(s->tx, &s->milter->mark);
        else if (s->milter->step == MILTER_STEP_MAIL)
            smtp_session_tx_reset(s);
        else if (s->state == SMTP_STATE_READY)
            s->state = SMTP_STATE_GREETED; /* HELO refused: as if it was never said */
        smtp_reply_error(s, "%s", v->reply);
        break;
    }
    step_end(s);
}

bool smtp_milter_helo(struct smtp_session *s, void (*next_ok)(struct smtp_session *s))
{
    if (s->milter == NULL)
        return false;
    char tls[128] = "";
    if (conn_is_tls(s->conn) && conn_tls_describe(s->conn, tls, sizeof(tls)) != NULL)
        tls[strcspn(tls, " ")] = '\0';
    s->milter->step = MILTER_STEP_HELO;
    s->milter->next_ok = next_ok;
    step_begin(s);
    milter_step_helo(s->milter->ms, smtp_session_helo(s), tls, smtp_session_auth_user(s),
                     envelope_done, s);
    return true;
}

/* Splits "FROM:<a@b> SIZE=1" into "<a@b>", "SIZE=1" (postern's parser accepted it already). */
static size_t split_args(struct smtp_milter *m, const char *args)
{
    const char *p = strchr(args, ':');
    p = p != NULL ? p + 1 : args;
    while (*p == ' ')
        p++;
    snprintf(m->args, sizeof(m->args), "%s", p);
    size_t n = 0;
    char *q = m->args;
    while (*q != '\0' && n < SMTP_MILTER_ARGS_MAX) {
        m->argv[n++] = q;
        q += strcspn(q, " ");
        while (*q == ' ')
            *q++ = '\0';
    }
    return n;
}

static bool envelope(struct smtp_session *s, bool mail, const char *args,
                     void (*next_ok)(struct smtp_session *s))
{
    struct smtp_milter *m = s->milter;
    size_t n = split_args(m, args);
    if (n == 0)
        return false;
    m->step = mail ? MILTER_STEP_MAIL : MILTER_STEP_RCPT;
    m->next_ok = next_ok;
    step_begin(s);
    if (mail)
        milter_step_mail(m->ms, m->argv, n, envelope_done, s);
    else
        milter_step_rcpt(m->ms, m->argv, n, envelope_done, s);
    return true;
}

bool smtp_milter_mail(struct smtp_session *s, const char *args,
                      void (*next_ok)(struct smtp_session *s))
{
    return s->milter != NULL && envelope(s, true, args, next_ok);
}

void smtp_milter_rcpt_begin(struct smtp_session *s, const char *args)
{
    if (s->milter == NULL)
        return;
    snprintf(s->milter->rcpt_args, sizeof(s->milter->rcpt_args), "%s", args);
    smtp_tx_rcpt_mark(s->tx, &s->milter->mark);
}

bool smtp_milter_rcpt(struct smtp_session *s, void (*next_ok)(struct smtp_session *s))
{
    return s->milter != NULL && envelope(s, false, s->milter->rcpt_args, next_ok);
}

/* ---- end of message ---- */

/* The milters' changes applied, then the delivery as without them. */
static void apply_and_deliver(struct smtp_session *s)
{
    char reply[SMTP_TX_REPLY_MAX_BYTES] = "";
    size_t nmods = 0;
    const struct milter_mod *mods = milter_mods(s->milter->ms, &nmods);
    if (smtp_tx_apply_milters(s->tx, s->conn, mods, nmods, reply) != 0) {
        smtp_reply_error(
            s, "%s", reply[0] != '\0' ? reply : "451 4.3.0 Error: could not prepare the message");
        smtp_session_tx_reset(s);
    } else {
        smtp_session_deliver(s);
    }
}

/* The recipients' reads of smtp_tx_milter_lookup are back (reader threads). The lookup held a
 * reference to the session and one to the connection. */
static void lookup_done(void *ctx, int status)
{
    struct smtp_session *s = ctx;
    struct conn *c = s->conn;
    (void)status; /* a failed read left the addresses remote, as local_user says */
    if (!s->ref.closed) {
        apply_and_deliver(s);
        step_end(s);
    }
    conn_unref(&c);
    smtp_session_release(s);
}

static void message_done(void *ctx, const struct milter_verdict *v)
{
    struct smtp_session *s = ctx;
    if (s->ref.closed)
        return; /* not reached: on_close frees the milters first */
    if (v->kind == MILTER_V_REJECT || v->kind == MILTER_V_TEMPFAIL) {
        smtp_reply_error(s, "%s", v->reply);
        smtp_session_tx_reset(s);
    } else if (v->kind == MILTER_V_DISCARD) {
        log_info("smtp", conn_sid(s->conn), "event=message-discarded id=%016llx.%u",
                 (unsigned long long)conn_sid(s->conn), ++s->transactions);
        conn_reply(s->conn, "250 2.0.0 Ok: queued as %016llx.%u\r\n",
                   (unsigned long long)conn_sid(s->conn), s->transactions);
        smtp_session_tx_reset(s);
    } else {
        unsigned char *content = NULL;
        size_t len = 0;
        size_t nmods = 0;
        const struct milter_mod *mods = milter_mods(s->milter->ms, &nmods);
        int r =
            milter_message_edit(s->milter->ms, &content, &len) < 0
                ? -1
                : smtp_tx_milter_lookup(s->tx, s->conn, mods, nmods, content, len, lookup_done, s);
        if (r == READER_PENDING) {
            /* Reading stays paused: lookup_done applies, delivers and ends the step. */
            conn_ref(s->conn);
            session_ref_take(&s->ref);
            return;
        }
        if (r == READER_DONE)
            apply_and_deliver(s);
        else {
            smtp_reply_error(s, "451 4.3.0 Error: could not prepare the message");
            smtp_session_tx_reset(s);
        }
    }
    step_end(s);
}

bool smtp_milter_message(struct smtp_session *s)
{
    if (s->milter == NULL)
        return false;
    if (s->milter->discard) {
        struct milter_verdict v = {.kind = MILTER_V_DISCARD};
        message_done(s, &v);
        return true;
    }
    struct milter_message view;
    if (smtp_tx_take_message(s->tx, &view) != 0)
        return false; /* smtp_tx_deliver reports the same failure */
    char id[64];
    snprintf(id, sizeof(id), "%016llx.%u", (unsigned long long)conn_sid(s->conn),
             s->transactions + 1);
    step_begin(s);
    milter_step_message(s->milter->ms, &view, id, message_done, s);
    return true;
}

void smtp_milter_abort(struct smtp_session *s)
{
    if (s->milter == NULL)
        return;
    s->milter->discard = false;
    milter_abort(s->milter->ms);
}

void smtp_milter_free(struct smtp_session *s)
{
    if (s->milter == NULL)
        return;
    milter_session_free(&s->milter->ms);
    free(s->milter);
    s->milter = NULL;
}
