/*
 * smtp_session.c - the SMTP server session (RFC 5321) on top of server/net/conn.c: the session
 * struct's life (declared in smtp_internal.h), its state machine, the command table and
 * dispatcher, the error limits, the commands that need no more than a reply (EHLO, HELO, NOOP,
 * RSET, QUIT, HELP, VRFY, EXPN, STARTTLS) and the state checks of MAIL, RCPT and DATA. AUTH is
 * smtp_auth.c's and BDAT smtp_bdat.c's, reached through smtp_internal.h. The transaction behind
 * MAIL, RCPT and DATA is smtp_tx.c's: this file calls it through smtp_tx.h and sends the replies it
 * hands back; smtp_tx.c never calls here.
 *
 * What it does not do: read sockets, buffer lines, speak TLS or time anything but its one
 * timer (the delayed answer to a failed AUTH, or a command held back past the soft error
 * limit); conn.c does, and this file only sees whole lines. Nothing here blocks:
 * password checks run in the threadpool (server/auth/auth.c), writes in the writer thread.
 *
 * Replies: every 2xx/4xx/5xx reply carries an RFC 3463 enhanced status code (RFC 2034), except
 * where RFC 2034 3 leaves it out: the 220 greeting and the EHLO/HELO 250 lines. Intermediate 334
 * and 354 replies have no class for one. The qmail-style relay refusal keeps qmail's text, whose
 * code sits at the end: "(#5.7.1)".
 *
 * Errors (Postfix's smtpd_soft_error_limit and smtpd_hard_error_limit): every error reply is
 * counted. From smtp.soft_error_limit errors on, each command waits smtp.error_delay before it
 * runs (reading paused, the loop free), so its reply comes that much later; once
 * smtp.hard_error_limit errors are reached, the next command is answered 421 and the session
 * ends. The room between the two lets a relay probe that sends many refused recipients in one
 * session (nmap's smtp-open-relay sends 16) hear every answer.
 *
 * Fault injection (server/fault/fault.h) hooks in at three places: before the greeting, in the
 * dispatcher before a command runs, and at the end of data; with [server] faults = no the
 * session has no fault_conn and each hook returns at once.
 *
 * Ownership: a struct smtp_session is created in on_open, hangs off the connection
 * (conn_set_session) and lives by the reference count of server/net/session_ref.h, the same rule
 * as the POP3 session's: the connection holds one reference until on_close; a writer job, an AUTH
 * verification (until it answers or on_close cancels it) and the closing of the delay timer's
 * handle hold one each. Only this file frees the session (smtp_session_release), when the last
 * reference goes.
 */
#include "server/smtp/smtp_session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "common/pure/command.h"
#include "server/app.h"
#include "server/disk_reserve.h"
#include "server/metrics/metrics.h"
#include "server/smtp/smtp_internal.h"

static const char *state_name(enum smtp_state st)
{
    static const char *const names[] = {"greeted", "ready", "mail", "rcpt", "data", "busy", "bdat"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

void smtp_session_enter_state(struct smtp_session *s, enum smtp_state st)
{
    if (s->state != st)
        log_debug("smtp", conn_sid(s->conn), "event=state from=%s to=%s", state_name(s->state),
                  state_name(st));
    s->state = st;
}

static const char *smtp_hostname(const struct smtp_session *s)
{
    return conn_cfg(s->conn)->server.hostname;
}

/* An error reply (4xx/5xx): logged as event=rejected with its code and the command, and
 * counted against the error limits (head comment). */
void smtp_reply_error(struct smtp_session *s, const char *fmt, ...)
{
    char line[SMTP_REPLY_LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    conn_reply(s->conn, "%s\r\n", line);
    metrics_smtp_refused(s->verb, line); /* counts refusals of mail only (metrics.h) */
    char esc[SMTP_REPLY_LINE_MAX_BYTES];
    log_escape(esc, sizeof(esc), line, strlen(line));
    log_info("smtp", conn_sid(s->conn), "event=rejected code=%.3s command=%s reply=%s", line,
             s->verb, esc);
    s->errors++;
}

/* Past the hard error limit whatever the client sends next ends the session: true then. */
static bool smtp_hard_limit(struct smtp_session *s)
{
    if (s->errors < conn_cfg(s->conn)->smtp.hard_error_limit || conn_is_closing(s->conn))
        return false;
    conn_reply(s->conn, "421 4.7.0 %s Error: too many errors\r\n", smtp_hostname(s));
    conn_close(s->conn, "too-many-errors");
    return true;
}

static bool smtp_has_args(const char *args)
{
    return args[0] != '\0';
}

/* ---- lifetime (server/net/session_ref.h) -------------------------------------------------- */

static void session_free(struct smtp_session *s)
{
    smtp_milter_free(s);
    smtp_tx_free(&s->tx);
    smtp_auth_drop(s);
    free(s->held);
    free(s->helo);
    free(s->auth_user);
    free(s);
}

const char *smtp_session_helo(const struct smtp_session *s)
{
    return s->helo != NULL ? s->helo : "";
}

const char *smtp_session_auth_user(const struct smtp_session *s)
{
    return s->auth_user != NULL ? s->auth_user : "";
}

/* Drops one reference: the last one frees the session, here and nowhere else. */
void smtp_session_release(struct smtp_session *s)
{
    if (session_ref_drop(&s->ref))
        session_free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct smtp_session *s = h->data;
    free(h);
    smtp_session_release(s);
}

static void dispatch(struct smtp_session *s, const char *line, size_t len);

/* The one timer: a held command's turn, or else a failed AUTH's answer (they never overlap:
 * reading is paused while either waits). */
static void delay_timer_cb(uv_timer_t *h)
{
    struct smtp_session *s = h->data;
    if (s->ref.closed)
        return;
    if (s->held == NULL) {
        smtp_auth_failure_answer(s);
        return;
    }
    char *line = s->held;
    s->held = NULL;
    session_ref_take(&s->ref);
    /* Resuming takes effect on the next turn, after this line ran (which may pause again). */
    conn_resume_reading(s->conn);
    dispatch(s, line, s->held_len);
    free(line);
    smtp_session_release(s);
}

/* The delay timer, made at its first use; NULL when it cannot be (out of memory, closed). */
static uv_timer_t *delay_timer_get(struct smtp_session *s)
{
    if (s->delay_timer != NULL || s->ref.closed)
        return s->delay_timer;
    uv_timer_t *t = malloc(sizeof(*t));
    if (t == NULL)
        return NULL;
    if (uv_timer_init(conn_loop(s->conn), t) != 0) {
        free(t); /* uv_timer_init fails before the handle is registered: nothing to close */
        return NULL;
    }
    t->data = s;
    s->delay_timer = t;
    return t;
}

int smtp_session_delay_answer(struct smtp_session *s, uint64_t delay_ms)
{
    uv_timer_t *t = delay_timer_get(s);
    if (t == NULL || uv_timer_start(t, delay_timer_cb, delay_ms, 0) != 0)
        return -1;
    return 0;
}

/* From the soft error limit on, a command waits error_delay before it runs (head comment): true
 * when line was held for delay_timer_cb. Without memory or a timer it runs at once. */
static bool hold(struct smtp_session *s, const char *line, size_t len)
{
    const struct cfg *cfg = conn_cfg(s->conn);
    if (s->errors < cfg->smtp.soft_error_limit || s->errors >= cfg->smtp.hard_error_limit ||
        cfg->smtp.error_delay_ms == 0)
        return false;
    uv_timer_t *t = delay_timer_get(s);
    if (t == NULL)
        return false;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return false;
    memcpy(copy, line, len);
    copy[len] = '\0';
    if (uv_timer_start(t, delay_timer_cb, cfg->smtp.error_delay_ms, 0) != 0) {
        free(copy);
        return false;
    }
    s->held = copy;
    s->held_len = len;
    conn_pause_reading(s->conn);
    return true;
}

/* ---- the transaction: MAIL, RCPT, DATA (smtp_tx.c does the work) ------------------------- */

/* Drops the transaction (RSET semantics) and frees it, so that a session between transactions
 * holds none; the state goes back to READY if it was past it. Not while a writer job is out
 * (reading is paused then). */
void smtp_session_tx_reset(struct smtp_session *s)
{
    if (s->state > SMTP_STATE_READY)
        smtp_milter_abort(s);
    smtp_tx_free(&s->tx);
    if (s->state > SMTP_STATE_READY)
        smtp_session_enter_state(s, SMTP_STATE_READY);
}

/* What the transaction may know of the client, for one call. */
static struct smtp_tx_client tx_client(const struct smtp_session *s)
{
    return (struct smtp_tx_client){s->conn, smtp_session_auth_user(s), smtp_session_helo(s),
                                   s->esmtp};
}

static void job_submit(struct smtp_session *s);
static void job_wait(struct smtp_session *s);
static void job_done(void *ctx, int status);

/* Carries out what smtp_tx.c answered (smtp_tx.h); next is the state a positive answer leads to. */
static void tx_answer(struct smtp_session *s, enum smtp_tx_result r, const char *reply,
                      enum smtp_state next)
{
    switch (r) {
    case SMTP_TX_OK:
        smtp_session_enter_state(s, next);
        conn_reply(s->conn, "%s\r\n", reply);
        return;
    case SMTP_TX_ERROR:
        smtp_reply_error(s, "%s", reply);
        return;
    case SMTP_TX_SOFT:
        metrics_smtp_refused(s->verb, reply);
        conn_reply(s->conn, "%s\r\n", reply);
        return;
    case SMTP_TX_JOB:
        job_submit(s);
        return;
    case SMTP_TX_WAIT:
        job_wait(s);
        return;
    case SMTP_TX_MORE: /* not an answer to a command */
        return;
    }
}

static void rcpt_ok(struct smtp_session *s)
{
    smtp_session_enter_state(s, SMTP_STATE_RCPT);
    conn_reply(s->conn, "250 2.1.5 Ok\r\n");
}

/* A recipient postern accepted is shown to the milters before its 250 (smtp_milter.c). */
static void rcpt_answer(struct smtp_session *s, enum smtp_tx_result r, const char *reply)
{
    if (r == SMTP_TX_OK && smtp_milter_rcpt(s, rcpt_ok))
        return;
    tx_answer(s, r, reply, SMTP_STATE_RCPT);
}

/* The answer of the writer, or of the reader for a read that was out (SMTP_TX_WAIT). The job
 * held a reference to the session and one to the connection. Reading resumes first: that takes
 * effect on the next turn, and an answer that starts other work (a recipient's window count
 * after its read, a milter's RCPT step) pauses it again. */
static void job_done(void *ctx, int status)
{
    struct smtp_session *s = ctx;
    struct conn *c = s->conn;
    char reply[SMTP_TX_REPLY_MAX_BYTES];
    if (!s->ref.closed && !conn_is_closing(c))
        conn_resume_reading(c);
    if (s->ref.closed) {
        smtp_tx_job_orphaned(s->tx, c, status);
    } else if (s->state == SMTP_STATE_BUSY) {
        enum smtp_tx_result r = smtp_tx_job_result(s->tx, c, status, reply);
        if (r == SMTP_TX_JOB) {
            job_submit(s); /* the message, once the reads for its signing are done */
        } else {
            if (r == SMTP_TX_OK)
                conn_reply(c, "%s\r\n", reply);
            else
                smtp_reply_error(s, "%s", reply);
            smtp_session_tx_reset(s);
        }
    } else {
        rcpt_answer(s, smtp_tx_job_result(s->tx, c, status, reply), reply);
    }
    conn_unref(&c);
    smtp_session_release(s);
}

/* A read is out for the transaction (SMTP_TX_WAIT): reading paused and the same references as
 * a writer job's, until job_done. */
static void job_wait(struct smtp_session *s)
{
    struct conn *c = s->conn;
    conn_pause_reading(c);
    conn_ref(c);
    session_ref_take(&s->ref);
}

/* Hands the transaction's job to the writer with reading paused, holding a reference to the
 * session and one to the connection until job_done. */
static void job_submit(struct smtp_session *s)
{
    char reply[SMTP_TX_REPLY_MAX_BYTES];
    struct conn *c = s->conn;
    conn_pause_reading(c);
    conn_ref(c);
    session_ref_take(&s->ref);
    if (smtp_tx_submit(s->tx, c, ((struct app *)conn_app(c))->writer, job_done, s, reply) ==
        SMTP_TX_JOB)
        return;
    smtp_session_release(s); /* never the last: the connection holds one */
    conn_unref(&c);
    conn_resume_reading(s->conn);
    smtp_reply_error(s, "%s", reply);
    if (s->state == SMTP_STATE_BUSY)
        smtp_session_tx_reset(s);
}

/*
 * The free-space reserve (server/disk_reserve.h): while the database's disk is nearly full, new
 * mail waits with a 4xx, so that POP3 logins and deletions, which free space, can still write.
 * RFC 3463 4.3.1: mail system full.
 */
bool smtp_session_refused_for_space(struct smtp_session *s)
{
    const struct app *app = conn_app(s->conn);
    if (app == NULL || !disk_reserve_is_low(app->disk, clock_monotonic_ms()))
        return false;
    smtp_reply_error(s, "452 4.3.1 Insufficient system storage");
    return true;
}

static void mail_ok(struct smtp_session *s)
{
    smtp_session_enter_state(s, SMTP_STATE_MAIL);
    conn_reply(s->conn, "250 2.1.0 Ok\r\n");
}

static void cmd_mail(struct smtp_session *s, const char *args)
{
    if (s->state == SMTP_STATE_GREETED) {
        smtp_reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->state != SMTP_STATE_READY) {
        smtp_reply_error(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (smtp_session_refused_for_space(s))
        return;
    /* The transaction exists from here to its end (smtp_session_tx_reset). RFC 3463 4.3.1: out
     * of memory is the mail system's own resource running short, as for RCPT. */
    smtp_tx_free(&s->tx); /* none in READY; this only keeps a slip from leaking */
    s->tx = smtp_tx_new(job_done, s);
    if (s->tx == NULL) {
        smtp_reply_error(s, "452 4.3.1 Insufficient system storage");
        return;
    }
    char reply[SMTP_TX_REPLY_MAX_BYTES];
    struct smtp_tx_client cl = tx_client(s);
    enum smtp_tx_result r = smtp_tx_mail(s->tx, &cl, args, reply);
    if (r != SMTP_TX_OK)
        smtp_tx_free(&s->tx); /* refused: no transaction started */
    else if (smtp_milter_mail(s, args, mail_ok))
        return;
    tx_answer(s, r, reply, SMTP_STATE_MAIL);
}

/* RCPT or DATA without a transaction: which command is missing. */
static void reply_need_mail(struct smtp_session *s)
{
    smtp_reply_error(s, s->state == SMTP_STATE_GREETED ? "503 5.5.1 Error: send HELO/EHLO first"
                                                       : "503 5.5.1 Error: need MAIL command");
}

static void cmd_rcpt(struct smtp_session *s, const char *args)
{
    if (s->state < SMTP_STATE_MAIL) {
        reply_need_mail(s);
        return;
    }
    if (s->state == SMTP_STATE_BDAT) {
        /* RFC 3030 2: the recipients are all given before the first chunk. */
        smtp_reply_error(s, "503 5.5.1 Error: RCPT after BDAT");
        return;
    }
    char reply[SMTP_TX_REPLY_MAX_BYTES];
    struct smtp_tx_client cl = tx_client(s);
    smtp_milter_rcpt_begin(s, args);
    rcpt_answer(s, smtp_tx_rcpt(s->tx, &cl, args, reply), reply);
}

static void cmd_data(struct smtp_session *s, const char *args)
{
    if (s->state < SMTP_STATE_MAIL) {
        reply_need_mail(s);
        return;
    }
    if (s->state == SMTP_STATE_BDAT) {
        /* RFC 3030 3: one transaction uses BDAT or DATA, never both. */
        smtp_reply_error(s, "503 5.5.1 Error: DATA after BDAT");
        return;
    }
    if (s->state == SMTP_STATE_MAIL) {
        /* RFC 2920 3.1: a pipelined DATA after refused recipients gets 554 (or 503). */
        smtp_reply_error(s, "554 5.5.1 Error: no valid recipients");
        return;
    }
    if (smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (smtp_session_refused_for_space(s))
        return;
    char reply[SMTP_TX_REPLY_MAX_BYTES];
    enum smtp_tx_result r = smtp_tx_data(s->tx, s->conn, reply);
    tx_answer(s, r, reply, SMTP_STATE_DATA);
    if (r == SMTP_TX_OK)
        conn_set_mode_data(s->conn, true);
}

/* End of data with the whole content: the transaction prepares the delivery, the writer stores
 * it, and job_done answers. */
void smtp_session_deliver(struct smtp_session *s)
{
    enum fault_verdict v = fault_at(
        s->fault, FAULT_SMTP_EOD,
        &(struct fault_facts){.user = smtp_session_auth_user(s), .sender = s->tx->sender_text});
    if (v == FAULT_TAKEN)
        smtp_session_tx_reset(s);
    if (v != FAULT_PASS)
        return;
    char reply[SMTP_TX_REPLY_MAX_BYTES];
    struct smtp_tx_client cl = tx_client(s);
    enum smtp_tx_result r = smtp_tx_deliver(s->tx, &cl, ++s->transactions, reply);
    if (r != SMTP_TX_JOB && r != SMTP_TX_WAIT) {
        smtp_reply_error(s, "%s", reply);
        smtp_session_tx_reset(s);
        return;
    }
    smtp_session_enter_state(s, SMTP_STATE_BUSY);
    if (r == SMTP_TX_WAIT)
        job_wait(s); /* the signing keys' reads: job_done submits the message after */
    else
        job_submit(s);
}

/* ---- the other commands -------------------------------------------------------------------- */

static void forget_client(struct smtp_session *s)
{
    smtp_session_tx_reset(s);
    s->esmtp = false;
    free(s->helo);
    s->helo = NULL;
}

static void ehlo_ok(struct smtp_session *s);

/*
 * Keeps the sanitised EHLO/HELO name, at its length. 0, or -1 when out of memory: then the
 * session ends with 421 (RFC 5321 3.8: the answer to any command when the server must close),
 * because without the name it could not write the Received header it promises.
 */
static int set_helo(struct smtp_session *s, const char *args)
{
    char name[ADDRESS_DOMAIN_MAX_BYTES + 1];
    smtp_helo_sanitize(args, name, sizeof(name));
    char *copy = strdup(name);
    if (copy == NULL) {
        conn_reply(s->conn, "421 4.3.0 %s Error: out of memory, closing\r\n", smtp_hostname(s));
        conn_close(s->conn, "out of memory");
        return -1;
    }
    free(s->helo);
    s->helo = copy;
    return 0;
}

static void cmd_ehlo(struct smtp_session *s, const char *args)
{
    if (!smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: EHLO hostname");
        return;
    }
    /* RFC 5321 4.1.4: EHLO also resets the transaction, as RSET would. */
    smtp_session_tx_reset(s);
    if (set_helo(s, args) != 0)
        return;
    s->esmtp = true;
    smtp_session_enter_state(s, SMTP_STATE_READY);
    char esc[ADDRESS_DOMAIN_MAX_BYTES + 16];
    log_info("smtp", conn_sid(s->conn), "event=helo verb=EHLO name=%s",
             log_escape(esc, sizeof(esc), args, strlen(args)));
    if (!smtp_milter_helo(s, ehlo_ok))
        ehlo_ok(s);
}

/* The EHLO reply: the extensions offered. */
static void ehlo_ok(struct smtp_session *s)
{
    const struct cfg *cfg = conn_cfg(s->conn);
    char size[48];
    snprintf(size, sizeof(size), "SIZE %llu", (unsigned long long)cfg->smtp.max_message_size_bytes);
    const char *ext[12];
    size_t n = 0;
    ext[n++] = "PIPELINING";          /* RFC 2920 */
    ext[n++] = size;                  /* RFC 1870 */
    ext[n++] = "8BITMIME";            /* RFC 6152 */
    ext[n++] = "ENHANCEDSTATUSCODES"; /* RFC 2034 */
    /* RFC 3030. BINARYMIME is not offered: stored messages have canonical CRLF line ends,
     * which binary content would not survive, and the outbound side could not pass it on to a
     * next hop without it. */
    ext[n++] = "CHUNKING";
    ext[n++] = "SMTPUTF8"; /* RFC 6531: UTF-8 addresses, common/pure/address.c */
    ext[n++] = "DSN";      /* RFC 3461: NOTIFY, ORCPT, RET, ENVID (smtp_tx.c, storage/queue.h) */
    if (conn_can_starttls(s->conn))
        ext[n++] = "STARTTLS"; /* RFC 3207: only before TLS is on */
    if (smtp_auth_offered(s) && s->auth_user == NULL)
        ext[n++] = "AUTH " SASL_MECHANISMS; /* RFC 4954 */
    conn_reply(s->conn, "250-%s\r\n", smtp_hostname(s));
    for (size_t i = 0; i < n; i++)
        conn_reply(s->conn, "250%c%s\r\n", i + 1 == n ? ' ' : '-', ext[i]);
}

static void helo_ok(struct smtp_session *s)
{
    conn_reply(s->conn, "250 %s\r\n", smtp_hostname(s));
}

static void cmd_helo(struct smtp_session *s, const char *args)
{
    if (!smtp_has_args(args)) {
        smtp_reply_error(s, "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    smtp_session_tx_reset(s);
    if (set_helo(s, args) != 0)
        return;
    s->esmtp = false;
    smtp_session_enter_state(s, SMTP_STATE_READY);
    char esc[ADDRESS_DOMAIN_MAX_BYTES + 16];
    log_info("smtp", conn_sid(s->conn), "event=helo verb=HELO name=%s",
             log_escape(esc, sizeof(esc), args, strlen(args)));
    if (!smtp_milter_helo(s, helo_ok))
        helo_ok(s);
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
    smtp_session_tx_reset(s);
    conn_reply(s->conn, "250 2.0.0 Ok\r\n");
}

static void cmd_quit(struct smtp_session *s, const char *args)
{
    conn_reply(s->conn, "221 2.0.0 Bye\r\n");
    conn_close(s->conn, "quit");
}

static void cmd_help(struct smtp_session *s, const char *args)
{
    conn_reply(s->conn,
               "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY "
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
    if (s->auth_user != NULL || s->state >= SMTP_STATE_MAIL) {
        smtp_reply_error(s, "503 5.5.1 Error: STARTTLS not allowed now");
        return;
    }
    conn_reply(s->conn, "220 2.0.0 Ready to start TLS\r\n");
    if (conn_starttls(s->conn) != 0)
        conn_abort(s->conn, "tls-error: setup");
}

/*
 * The command table. ENDS_GROUP: RFC 2920 3.1 - the client must wait for this reply before
 * sending more (EHLO, HELO, STARTTLS, AUTH, DATA, QUIT), so input already waiting behind it is a
 * pipelining error, logged at debug level. After STARTTLS conn.c discards it. Every verb is valid
 * in every state as far as the table goes: each answers a wrong state with its own 503 text.
 */
#define SMTP_CMD_ENDS_GROUP 0x1u

struct smtp_command {
    struct command cmd; /* first: common/pure/command.c finds rows by it */
    void (*run)(struct smtp_session *s, const char *args);
};

static const struct smtp_command smtp_commands[] = {
    {{"EHLO", COMMAND_ANY_STATE, SMTP_CMD_ENDS_GROUP}, cmd_ehlo},
    {{"HELO", COMMAND_ANY_STATE, SMTP_CMD_ENDS_GROUP}, cmd_helo},
    {{"MAIL", COMMAND_ANY_STATE, 0}, cmd_mail},
    {{"RCPT", COMMAND_ANY_STATE, 0}, cmd_rcpt},
    {{"DATA", COMMAND_ANY_STATE, SMTP_CMD_ENDS_GROUP}, cmd_data},
    {{"BDAT", COMMAND_ANY_STATE, 0}, smtp_cmd_bdat}, /* RFC 3030 2: may be pipelined */
    {{"RSET", COMMAND_ANY_STATE, 0}, cmd_rset},
    {{"NOOP", COMMAND_ANY_STATE, 0}, cmd_noop},
    {{"QUIT", COMMAND_ANY_STATE, SMTP_CMD_ENDS_GROUP}, cmd_quit},
    {{"HELP", COMMAND_ANY_STATE, 0}, cmd_help},
    {{"VRFY", COMMAND_ANY_STATE, 0}, cmd_vrfy},
    {{"EXPN", COMMAND_ANY_STATE, 0}, cmd_expn},
    {{"STARTTLS", COMMAND_ANY_STATE, SMTP_CMD_ENDS_GROUP}, cmd_starttls},
    {{"AUTH", COMMAND_ANY_STATE, SMTP_CMD_ENDS_GROUP}, smtp_cmd_auth},
};

static const struct smtp_command *find_command(const char *verb, size_t len)
{
    return (const struct smtp_command *)(const void *)command_find(
        smtp_commands, sizeof(smtp_commands) / sizeof(smtp_commands[0]), sizeof(smtp_commands[0]),
        verb, len);
}

/* ---- handler callbacks --------------------------------------------------------------------- */

static void greet(struct conn *c)
{
    /* With milters the greeting waits for their connect step, which sends it. */
    struct smtp_session *s = conn_session(c);
    if (s != NULL && smtp_milter_connect(s))
        return;
    /* RFC 5321 4.2: the greeting starts with our domain. On 465 the TLS layer holds it until
     * the handshake is done. */
    conn_reply(c, "220 %s ESMTP postern\r\n", conn_cfg(c)->server.hostname);
}

/* A point that fault injection delayed (server/fault/fault.h), run now. */
static void fault_resume(void *arg, enum fault_point p, const char *line, size_t len)
{
    struct smtp_session *s = arg;
    session_ref_take(&s->ref);
    if (p == FAULT_SMTP_CONNECT)
        greet(s->conn);
    else if (p == FAULT_SMTP_EOD)
        smtp_session_deliver(s);
    else
        dispatch(s, line, len);
    smtp_session_release(s);
}

static void smtp_on_open(struct conn *c)
{
    struct smtp_session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        conn_abort(c, "out of memory");
        return;
    }
    s->conn = c;
    session_ref_init(&s->ref);
    s->state = SMTP_STATE_GREETED;
    snprintf(s->verb, sizeof(s->verb), "-");
    conn_set_session(c, s);
    const struct cfg *cfg = conn_cfg(c);
    conn_set_timeout(c, cfg->smtp.timeout_ms);
    s->fault = fault_conn_new(c, fault_resume, s);
    if (fault_at(s->fault, FAULT_SMTP_CONNECT, &(struct fault_facts){0}) == FAULT_PASS)
        greet(c);
}

/* One line: a SASL answer or a command. */
static void dispatch(struct smtp_session *s, const char *line, size_t len)
{
    struct conn *c = s->conn;
    if (smtp_hard_limit(s))
        return;
    if (smtp_auth_active(s)) {
        smtp_auth_continue(s, line, len);
        return;
    }
    if (command_is_http_request(line, len)) {
        log_info("smtp", conn_sid(c), "event=http-request");
        conn_abort(c, "http-request");
        return;
    }
    size_t vlen = strcspn(line, " ");
    const char *args = line + vlen;
    while (*args == ' ')
        args++;
    const struct smtp_command *cmd = find_command(line, vlen);
    s->commands++;
    if (cmd == NULL) {
        snprintf(s->verb, sizeof(s->verb), "unknown");
        smtp_reply_error(s, "500 5.5.2 Error: command not recognized");
        return;
    }
    snprintf(s->verb, sizeof(s->verb), "%s", cmd->cmd.verb);
    if (cmd->cmd.flags & SMTP_CMD_ENDS_GROUP) {
        struct conn_stats st;
        conn_get_stats(c, &st);
        if (st.input_bytes > 0)
            log_debug("smtp", conn_sid(c), "event=pipelining-violation command=%s", cmd->cmd.verb);
    }
    if (fault_smtp_command(s->fault, cmd->cmd.verb, args, line, len, smtp_session_auth_user(s),
                           s->tx != NULL ? s->tx->sender_text : "") != FAULT_PASS)
        return;
    cmd->run(s, args);
}

/*
 * The conn callbacks that run commands hold a reference while they do: a reply that closes the
 * connection (QUIT, or past the hard error limit) runs on_close inside them, and they must still be
 * able to finish with the session.
 */
static void smtp_on_line(struct conn *c, const char *line, size_t len)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return;
    session_ref_take(&s->ref);
    if (!hold(s, line, len))
        dispatch(s, line, len);
    smtp_session_release(s);
}

/* Message octets in data mode (smtp_tx_feed), or a BDAT chunk's (smtp_bdat.c); the end of the
 * message is delivered. */
static size_t smtp_on_data(struct conn *c, const unsigned char *p, size_t n)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return n;
    if (s->chunk != SMTP_CHUNK_NONE)
        return smtp_bdat_data(s, p, n);
    char reply[SMTP_TX_REPLY_MAX_BYTES];
    size_t used = 0;
    enum smtp_tx_result r = smtp_tx_feed(s->tx, p, n, &used, reply);
    if (r == SMTP_TX_MORE)
        return used;
    /* The rest (pipelined commands after the dot, RFC 2920) goes back to the line reader. */
    conn_set_mode_data(c, false);
    session_ref_take(&s->ref);
    if (r == SMTP_TX_OK) {
        if (!smtp_milter_message(s))
            smtp_session_deliver(s);
    } else {
        smtp_reply_error(s, "%s", reply);
        smtp_session_tx_reset(s);
    }
    smtp_session_release(s);
    return used;
}

static void smtp_on_bad_line(struct conn *c, enum linereader_status why)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return;
    if (smtp_hard_limit(s))
        return;
    if (smtp_auth_active(s)) {
        smtp_auth_bad_line(s, why);
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
    smtp_session_enter_state(s, SMTP_STATE_GREETED);
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
    s->ref.closed = true;
    conn_set_session(c, NULL);
    /* The milters go now: a step in flight must not answer a connection that is gone. */
    smtp_milter_free(s);
    fault_conn_free(&s->fault);
    unsigned drops = 1; /* the connection's */
    if (smtp_auth_cancel(s))
        drops++; /* the cancelled verification's */
    if (s->delay_timer != NULL) {
        session_ref_take(&s->ref); /* until the handle is closed; its callback frees it */
        uv_close((uv_handle_t *)s->delay_timer, on_handle_closed);
        s->delay_timer = NULL;
    }
    /* A writer job still out keeps its reference: its done frees the session if it is last. */
    if (session_ref_drop_n(&s->ref, drops))
        session_free(s);
}

static void smtp_busy_reply(const struct cfg *cfg, bool per_ip, char *buf, size_t len)
{
    snprintf(buf, len, "421 4.7.0 %s Error: too many connections%s\r\n", cfg->server.hostname,
             per_ip ? " from your address" : "");
}

const struct conn_handler smtp_session_handler = {
    .proto = "smtp",
    .max_line_bytes = SMTP_COMMAND_LINE_MAX_BYTES,
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
    .transcript_visible = command_transcript_visible,
};
