/*
 * smtp_auth.c - AUTH in the SMTP server session (RFC 4954, SASL PLAIN and LOGIN): the command's
 * checks, the exchange of common/pure/sasl.c, the password check handed to server/auth/auth.c
 * (argon2id in the threadpool, with reading paused meanwhile) and the answer, which for a
 * failure may wait on the session's timer (auth.c says how long; the session waits, not the
 * auth module). Every AUTH that does not end in 235 logs one event=auth line with a reason and
 * the user as the client gave it, escaped; never a password.
 *
 * What it does not do: own the session or its timer (smtp_session.c does: smtp_internal.h is
 * the boundary), decide whether a password is right (auth.c), or keep anything of its own: its
 * state is the session's sasl, auth_req and failure counters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "common/pure/command.h"
#include "server/app.h"
#include "server/metrics/metrics.h"
#include "server/smtp/smtp_internal.h"
#include "server/smtp/smtp_session.h"

/* ---- the answer to a failed verification -------------------------------------------------- */

void smtp_auth_failure_answer(struct smtp_session *s)
{
    if (s->auth_too_many) {
        /* RFC 4954 4 allows closing after repeated failures; say why first. */
        conn_reply(s->conn, "535 5.7.8 Authentication credentials invalid\r\n");
        conn_reply(s->conn, "421 4.7.0 %s Error: too many authentication failures\r\n",
                   conn_cfg(s->conn)->server.hostname);
        conn_close(s->conn, "too-many-auth-failures");
        return;
    }
    smtp_reply_error(s, "535 5.7.8 Authentication credentials invalid");
    if (!conn_is_closing(s->conn))
        conn_resume_reading(s->conn);
}

/* Answers the failure after delay_ms (auth.h: the session waits, not the auth module); at once
 * when there is no timer. */
static void auth_failure_later(struct smtp_session *s, uint64_t delay_ms)
{
    if (smtp_session_delay_answer(s, delay_ms) != 0)
        smtp_auth_failure_answer(s);
}

bool smtp_auth_offered(const struct smtp_session *s)
{
    return conn_is_tls(s->conn) || conn_cfg(s->conn)->smtp.plaintext_auth;
}

/* Every AUTH that does not succeed logs one event=auth line: its reason and the user as the
 * client gave it ("" when it gave none). */
static void auth_log_fail(struct smtp_session *s, const char *result, const char *reason,
                          const char *user)
{
    char esc[SASL_USER_MAX_BYTES * 4 + 8];
    log_escape(esc, sizeof(esc), user, strlen(user));
    log_info("smtp", conn_sid(s->conn), "event=auth result=%s reason=%s user=%s", result, reason,
             esc);
    metrics_auth(METRICS_PROTO_SMTP, s->auth_mech, false, strcmp(result, "fail") != 0);
}

bool smtp_auth_active(const struct smtp_session *s)
{
    return sasl_is_active(s->sasl);
}

void smtp_auth_drop(struct smtp_session *s)
{
    sasl_free(&s->sasl);
}

static void sasl_finish(struct smtp_session *s)
{
    smtp_auth_drop(s);
    conn_set_max_line(s->conn, SMTP_COMMAND_LINE_MAX_BYTES);
}

/* The verification's answer (the request is over; a failure may wait for the delay timer). */
static void auth_answer(struct smtp_session *s, const struct auth_result *r)
{
    char user[SASL_USER_MAX_BYTES * 4 + 8];
    log_escape(user, sizeof(user), r->user, strlen(r->user));
    metrics_auth(METRICS_PROTO_SMTP, s->auth_mech, r->ok, r->temporary);
    /* The identity is kept at its length (at most an address). Out of memory for it, the login
     * cannot stand: answered as any temporary failure. */
    if (r->ok && (s->auth_user = strndup(r->user, ADDRESS_STRLEN - 1)) != NULL) {
        log_info("smtp", conn_sid(s->conn), "event=auth result=ok user=%s cached=%s", user,
                 r->cached ? "yes" : "no");
        conn_reply(s->conn, "235 2.7.0 Authentication successful\r\n");
        conn_resume_reading(s->conn);
        return;
    }
    if (r->ok || r->temporary) {
        log_warn("smtp", conn_sid(s->conn), "event=auth result=error reason=%s user=%s",
                 r->ok ? "out-of-memory" : "temporary", user);
        smtp_reply_error(s, "454 4.7.0 Temporary authentication failure");
        if (!conn_is_closing(s->conn))
            conn_resume_reading(s->conn);
        return;
    }
    s->auth_failures++;
    s->auth_too_many = r->too_many || s->auth_failures >= SMTP_MAX_AUTH_FAILURES;
    log_info("smtp", conn_sid(s->conn),
             "event=auth result=fail reason=invalid-credentials user=%s failures=%u", user,
             s->auth_failures);
    if (r->delay_ms > 0)
        auth_failure_later(s, r->delay_ms);
    else
        smtp_auth_failure_answer(s);
}

static void auth_done(void *ctx, const struct auth_result *r)
{
    struct smtp_session *s = ctx;
    s->auth_req = NULL;
    auth_answer(s, r);
    smtp_session_release(s); /* the last one when the answer closed the connection */
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
        session_ref_take(&s->ref);
        s->auth_req = auth_verify(app->auth, app->reader, conn_peer_ip(s->conn), step->user,
                                  step->password, step->password_len, auth_done, s);
        if (s->auth_req == NULL) {
            auth_log_fail(s, "error", "temporary", step->user);
            sasl_finish(s);
            smtp_session_release(s); /* never the last: the connection holds one */
            conn_resume_reading(s->conn);
            smtp_reply_error(s, "454 4.7.0 Temporary authentication failure");
            return;
        }
        sasl_finish(s);
        return;
    }
    case SASL_CANCELLED:
    case SASL_UNSUPPORTED_MECH:
    case SASL_AUTHZID_REFUSED:
    case SASL_MALFORMED:
    default:
        auth_log_fail(s, "fail", sasl_status_name(step->status), step->user_given);
        sasl_finish(s);
        smtp_reply_error(s, "%s",
                         step->status == SASL_CANCELLED ? "501 5.7.0 Authentication cancelled"
                         : step->status == SASL_UNSUPPORTED_MECH
                             ? "504 5.5.4 Unrecognized authentication mechanism"
                         : step->status == SASL_AUTHZID_REFUSED
                             ? "535 5.7.8 Authentication credentials invalid"
                             : "501 5.5.2 Cannot decode response");
        return;
    }
}

/* Why AUTH cannot start now (a reason for the log, *reply the answer), or NULL when it can. */
static const char *auth_refusal(const struct smtp_session *s, const char *args, const char **reply)
{
    if (!s->esmtp) {
        *reply = "503 5.5.1 Error: send EHLO first";
        return "no-ehlo";
    }
    if (s->auth_user != NULL) {
        *reply = "503 5.5.1 Error: already authenticated";
        return "already-authenticated";
    }
    if (s->state != SMTP_STATE_READY) {
        *reply = "503 5.5.1 Error: MAIL transaction in progress";
        return "in-transaction";
    }
    if (!smtp_auth_offered(s)) {
        *reply = "538 5.7.11 Encryption required for requested authentication mechanism";
        return "encryption-required";
    }
    if (args[0] == '\0') {
        *reply = "501 5.5.4 Syntax: AUTH mechanism [initial-response]";
        return "syntax";
    }
    return NULL;
}

void smtp_cmd_auth(struct smtp_session *s, const char *args)
{
    const char *reply = NULL;
    s->auth_mech = (unsigned char)metrics_auth_mech(args);
    const char *reason = auth_refusal(s, args, &reply);
    if (reason != NULL) {
        auth_log_fail(s, "fail", reason, "");
        smtp_reply_error(s, "%s", reply);
        return;
    }
    struct command_auth_args a;
    command_split_auth(args, &a);
    /* The exchange's state lives only while it runs: an idle session does not carry it. */
    if (s->sasl == NULL && (s->sasl = calloc(1, sizeof(*s->sasl))) == NULL) {
        auth_log_fail(s, "error", "temporary", "");
        smtp_reply_error(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
    struct sasl_step step;
    sasl_start(s->sasl, a.mech, a.mech_len, a.initial, a.initial_len, &step);
    sasl_result(s, &step);
}

/* The transcript already masked the line. */
void smtp_auth_continue(struct smtp_session *s, const char *line, size_t len)
{
    struct sasl_step step;
    sasl_step(s->sasl, line, len, &step);
    sasl_result(s, &step);
}

void smtp_auth_bad_line(struct smtp_session *s, enum linereader_status why)
{
    /* RFC 4954 4: a response over the limit fails the exchange. */
    auth_log_fail(s, "fail", why == LINEREADER_TOO_LONG ? "line-too-long" : "malformed",
                  s->sasl->user);
    sasl_finish(s);
    smtp_reply_error(s, why == LINEREADER_TOO_LONG
                            ? "500 5.5.6 Authentication Exchange line is too long"
                            : "501 5.5.2 Cannot decode response");
}

bool smtp_auth_cancel(struct smtp_session *s)
{
    if (s->auth_req == NULL)
        return false;
    auth_cancel(s->auth_req);
    s->auth_req = NULL;
    return true;
}
