/*
 * smtp_tx.c - the SMTP mail transaction: MAIL (sender, ESMTP parameters, the submission ports'
 * AUTH requirement), RCPT (the relay decision of common/pure/relay_policy.c on facts gathered by
 * server/relay/relay_facts.c, recipient limits, local recipients resolved to user ids), DATA (the
 * scanner of common/pure/smtp_data.c in data mode) and delivery (trace headers, then store_deliver
 * in one writer job; "250 2.0.0 Ok: queued as ID" only once that commit is durable).
 *
 * What it does not do: decide relaying (relay_decide does, and this file only carries out the
 * verdict), touch SQL (storage/ does, through the read store and the writer), or send anything
 * outbound (queue rows are what it leaves for the queue runner).
 *
 * Where mail for the postmaster goes (RFC 5321 4.5.1): postmaster@DOMAIN for a local DOMAIN is
 * the user postmaster@DOMAIN when it exists (relay_decide accepts that as an ordinary mailbox);
 * otherwise the first user of DOMAIN in address order; otherwise the first user of the first
 * local domain (domain name order, then address). The domainless <Postmaster> goes straight to
 * that last one. With no user at all the recipient is refused with 550 5.1.1.
 *
 * Return-Path (RFC 5321 4.4) is stored in front of the Received header when the message has local
 * recipients. The body is stored once and shared with the queue rows of remote recipients, so the
 * outbound client must drop a leading Return-Path line before sending (RFC 5321 4.4: a relaying
 * SMTP server must not add one, and a stale one must not travel on).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/log.h"
#include "common/password.h"
#include "common/util.h"
#include "server/app.h"
#include "server/relay/relay_facts.h"
#include "common/pure/relay_policy.h"
#include "server/smtp/smtp_internal.h"
#include "server/net/tls.h"
#include "storage/store.h"

/* ---- transaction bookkeeping ----------------------------------------------------------------- */

static void tx_clear(struct smtp_tx *tx)
{
    free(tx->local_ids);
    free(tx->remote);
    free(tx->block);
    free(tx->remote_ptrs);
    smtp_data_free(&tx->data);
    memset(tx, 0, sizeof(*tx));
}

void smtp_tx_reset(struct smtp_session *s)
{
    tx_clear(&s->tx);
    if (s->state > SMTP_STATE_READY)
        smtp_enter_state(s, SMTP_STATE_READY);
}

void smtp_tx_free(struct smtp_session *s)
{
    tx_clear(&s->tx);
}

/* Adds a local user id once. 0, or -1 when out of memory. */
static int tx_add_local(struct smtp_tx *tx, int64_t id)
{
    for (size_t i = 0; i < tx->n_local; i++) {
        if (tx->local_ids[i] == id)
            return 0;
    }
    if (tx->n_local == tx->cap_local) {
        size_t cap = tx->cap_local ? tx->cap_local * 2 : 8;
        int64_t *p = realloc(tx->local_ids, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        tx->local_ids = p;
        tx->cap_local = cap;
    }
    tx->local_ids[tx->n_local++] = id;
    return 0;
}

/* Adds a remote recipient once. 0, or -1 when out of memory. */
static int tx_add_remote(struct smtp_tx *tx, const char *rcpt)
{
    for (size_t i = 0; i < tx->n_remote; i++) {
        if (strcmp(tx->remote[i], rcpt) == 0)
            return 0;
    }
    if (tx->n_remote == tx->cap_remote) {
        size_t cap = tx->cap_remote ? tx->cap_remote * 2 : 8;
        char(*p)[ADDRESS_STRLEN] = realloc(tx->remote, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        tx->remote = p;
        tx->cap_remote = cap;
    }
    snprintf(tx->remote[tx->n_remote++], ADDRESS_STRLEN, "%s", rcpt);
    return 0;
}

/* A recipient was accepted: count it and answer. */
static void rcpt_accepted(struct smtp_session *s, const char *rcpt)
{
    struct smtp_tx *tx = &s->tx;
    if (tx->n_rcpts++ == 0)
        snprintf(tx->first_rcpt, sizeof(tx->first_rcpt), "%s", rcpt);
    smtp_enter_state(s, SMTP_STATE_RCPT);
    conn_reply(s->conn, "250 2.1.5 Ok\r\n");
}

/* ---- MAIL ---------------------------------------------------------------------------------- */

static bool is_submission(const struct smtp_session *s)
{
    enum conn_service svc = conn_service(s->conn);
    return svc == CONN_SERVICE_SMTP_SUBMISSION || svc == CONN_SERVICE_SMTP_SUBMISSIONS;
}

void smtp_cmd_mail(struct smtp_session *s, const char *args)
{
    if (s->state == SMTP_STATE_GREETED) {
        smtp_reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->state != SMTP_STATE_READY) {
        smtp_reply_error(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    /* RFC 6409 4.3 (and RFC 8314 for 465): submission requires authentication. */
    if (is_submission(s) && s->auth_user[0] == '\0') {
        smtp_reply_error(s, "530 5.7.0 Authentication required");
        return;
    }
    struct smtp_tx *tx = &s->tx;
    tx_clear(tx);
    const char *params = NULL, *why = NULL;
    int rc = smtp_parse_path_arg(args, "FROM:", &tx->sender, &tx->sender_kind, &params, &why);
    if (rc == SMTP_PARSE_SYNTAX) {
        smtp_reply_error(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    if (rc != SMTP_PARSE_OK) {
        smtp_reply_error(s, "501 5.1.7 Bad sender address syntax (%s)", why);
        return;
    }
    /* RFC 5321 4.5.1 names <Postmaster> as a recipient only. */
    if (tx->sender_kind == ADDRESS_PATH_POSTMASTER) {
        smtp_reply_error(s, "501 5.1.7 Bad sender address syntax");
        tx_clear(tx);
        return;
    }
    rc = smtp_parse_mail_params(params, &tx->params, &why);
    if (rc != SMTP_PARSE_OK) {
        if (rc == SMTP_PARSE_UNKNOWN_PARAM)
            smtp_reply_error(s, "555 5.5.4 Unsupported option: %.64s", params);
        else
            smtp_reply_error(s, "501 5.5.4 Bad MAIL parameter (%s)", why);
        tx_clear(tx);
        return;
    }
    uint64_t max = conn_cfg(s->conn)->smtp.max_message_size_bytes;
    /* RFC 1870 6: a declared size above the limit is refused at MAIL already. */
    if (tx->params.has_size && tx->params.size_bytes > max) {
        smtp_reply_error(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        tx_clear(tx);
        return;
    }
    address_format(&tx->sender, tx->sender_text, sizeof(tx->sender_text));
    smtp_enter_state(s, SMTP_STATE_MAIL);
    conn_reply(s->conn, "250 2.1.0 Ok\r\n");
}

/* ---- RCPT ---------------------------------------------------------------------------------- */

struct first_user {
    bool found;
    int64_t id;
};

static int first_user_cb(void *ctx, const struct store_user *u)
{
    struct first_user *f = ctx;
    f->found = true;
    f->id = u->id;
    return 1;
}

/* Where postmaster mail goes (head comment). 0 with *id_out, STORE_NOT_FOUND, or STORE_ERR. */
static int postmaster_user(struct store *reads, const char *domain_or_null, int64_t *id_out)
{
    struct first_user f = {0};
    int st;
    if (domain_or_null != NULL && domain_or_null[0] != '\0') {
        st = store_user_list(reads, domain_or_null, first_user_cb, &f);
        if (st != STORE_OK)
            return st;
    }
    if (!f.found) {
        st = store_user_list(reads, NULL, first_user_cb, &f);
        if (st != STORE_OK)
            return st;
    }
    if (!f.found)
        return STORE_NOT_FOUND;
    *id_out = f.id;
    return STORE_OK;
}

static void set_identity(struct smtp_session *s, const struct relay_facts *f,
                         const struct relay_decision *d)
{
    struct smtp_tx *tx = &s->tx;
    if (tx->identity[0] != '\0')
        return;
    if (d->reason == RELAY_REASON_TRUSTED_NETWORK)
        snprintf(tx->identity, sizeof(tx->identity), "trusted network %s", f->trusted_network);
    else if (d->reason == RELAY_REASON_POP_WINDOW)
        snprintf(tx->identity, sizeof(tx->identity), "POP-before-SMTP window of %s",
                 f->window_user != NULL && f->window_user[0] != '\0' ? f->window_user
                                                                     : conn_peer_text(s->conn));
}

static int job_count_run(struct store *st, struct writer_job *job)
{
    struct smtp_session *s = container_of(job, struct smtp_session, job);
    return store_window_count_relayed(st, s->tx.window_key, 1);
}

static void job_done(struct writer_job *job, int status);

/* Hands the session's job to the writer with reading paused. 0, or -1 (nothing was handed). */
static int job_submit(struct smtp_session *s, enum smtp_job_kind kind, writer_run_fn run)
{
    struct app *app = conn_app(s->conn);
    s->job.run = run;
    s->job.done = job_done;
    s->job_kind = kind;
    conn_pause_reading(s->conn);
    conn_ref(s->conn);
    s->job_busy = true;
    if (app->writer == NULL || writer_submit(app->writer, &s->job) != 0) {
        s->job_busy = false;
        s->job_kind = SMTP_JOB_NONE;
        struct conn *c = s->conn;
        conn_unref(&c);
        conn_resume_reading(s->conn);
        return -1;
    }
    return 0;
}

static void rcpt_temp_failure(struct smtp_session *s, const char *what)
{
    log_warn("smtp", conn_sid(s->conn), "event=store-error what=\"%s\"", what);
    smtp_reply_error(s, "451 4.3.0 Error: temporary failure, try again later");
}

void smtp_cmd_rcpt(struct smtp_session *s, const char *args)
{
    if (s->state < SMTP_STATE_MAIL) {
        smtp_reply_error(s, s->state == SMTP_STATE_GREETED ? "503 5.5.1 Error: send HELO/EHLO first"
                                                           : "503 5.5.1 Error: need MAIL command");
        return;
    }
    struct smtp_tx *tx = &s->tx;
    struct address rcpt;
    enum address_path_kind kind;
    const char *params = NULL, *why = NULL;
    int rc = smtp_parse_path_arg(args, "TO:", &rcpt, &kind, &params, &why);
    if (rc == SMTP_PARSE_SYNTAX) {
        smtp_reply_error(s, "501 5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (rc != SMTP_PARSE_OK) {
        smtp_reply_error(s, "501 5.1.3 Bad recipient address syntax (%s)", why);
        return;
    }
    rc = smtp_parse_rcpt_params(params, &why);
    if (rc != SMTP_PARSE_OK) {
        if (rc == SMTP_PARSE_UNKNOWN_PARAM)
            smtp_reply_error(s, "555 5.5.4 Unsupported option: %.64s", params);
        else
            smtp_reply_error(s, "501 5.5.4 Bad RCPT parameter (%s)", why);
        return;
    }
    const struct cfg *cfg = conn_cfg(s->conn);
    /* RFC 5321 4.5.3.1.10: 452 asks the client to send the rest in another transaction. Not
     * counted as an error: the client is doing nothing wrong. */
    if (tx->n_rcpts >= cfg->smtp.max_recipients) {
        conn_reply(s->conn, "452 4.5.3 Too many recipients\r\n");
        return;
    }
    struct app *app = conn_app(s->conn);
    struct relay_scratch scratch;
    struct relay_facts facts;
    int st = relay_gather(app->reads, cfg, conn_peer_ip(s->conn),
                          s->auth_user[0] != '\0' ? s->auth_user : NULL, &tx->sender,
                          tx->sender_kind, &rcpt, kind, store_now_ms(), &scratch, &facts);
    if (st != STORE_OK) {
        rcpt_temp_failure(s, store_errmsg(app->reads));
        return;
    }
    struct relay_decision d;
    relay_decide(&facts, &d);
    char logline[RELAY_LOG_MAX_BYTES];
    relay_format_log(&facts, &d, logline, sizeof(logline));
    log_info("smtp", conn_sid(s->conn), "event=relay %s", logline);
    if (d.verdict != RELAY_ALLOW) {
        smtp_reply_error(s, "%s", d.reply);
        return;
    }

    char text[ADDRESS_STRLEN];
    address_format(&rcpt, text, sizeof(text));
    int64_t id = 0;
    switch (d.reason) {
    case RELAY_REASON_LOCAL_MAILBOX: {
        char key[ADDRESS_STRLEN];
        char hash[PASSWORD_HASH_BYTES];
        /* The policy allows LOCAL_MAILBOX only for a key it found, so no key means no user. */
        st = address_user_key(&rcpt, key, sizeof(key)) == 0
                 ? store_user_get(app->reads, key, &id, hash, sizeof(hash))
                 : STORE_NOT_FOUND;
        if (st != STORE_OK) {
            /* Deleted between the two reads: as if it never existed. */
            if (st == STORE_NOT_FOUND)
                smtp_reply_error(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown",
                                 text);
            else
                rcpt_temp_failure(s, store_errmsg(app->reads));
            return;
        }
        break;
    }
    case RELAY_REASON_POSTMASTER:
        st = postmaster_user(app->reads, kind == ADDRESS_PATH_MAILBOX ? rcpt.domain : NULL, &id);
        if (st == STORE_NOT_FOUND) {
            smtp_reply_error(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", text);
            return;
        }
        if (st != STORE_OK) {
            rcpt_temp_failure(s, store_errmsg(app->reads));
            return;
        }
        break;
    case RELAY_REASON_POP_WINDOW:
        /* Count it against the window before answering, so a pipelined run of RCPTs sees the
         * count go up and the window_max_recipients limit holds (rcpt_counted answers). */
        set_identity(s, &facts, &d);
        snprintf(tx->pending_rcpt, sizeof(tx->pending_rcpt), "%s", text);
        ip_window_key(conn_peer_ip(s->conn), cfg->relay.window_ipv6_prefix, tx->window_key,
                      sizeof(tx->window_key));
        if (job_submit(s, SMTP_JOB_COUNT_WINDOW, job_count_run) != 0)
            rcpt_temp_failure(s, "writer unavailable");
        return;
    default: /* trusted-network, auth */
        set_identity(s, &facts, &d);
        if (tx_add_remote(tx, text) != 0) {
            smtp_reply_error(s, "452 4.3.1 Insufficient system storage");
            return;
        }
        rcpt_accepted(s, text);
        return;
    }
    if (tx_add_local(tx, id) != 0) {
        smtp_reply_error(s, "452 4.3.1 Insufficient system storage");
        return;
    }
    rcpt_accepted(s, text);
}

static void rcpt_counted(struct smtp_session *s, int status)
{
    struct smtp_tx *tx = &s->tx;
    if (status != 0) {
        rcpt_temp_failure(s, "count relayed recipient");
        return;
    }
    if (tx_add_remote(tx, tx->pending_rcpt) != 0) {
        smtp_reply_error(s, "452 4.3.1 Insufficient system storage");
        return;
    }
    rcpt_accepted(s, tx->pending_rcpt);
}

/* ---- DATA ---------------------------------------------------------------------------------- */

void smtp_cmd_data(struct smtp_session *s, const char *args)
{
    if (s->state == SMTP_STATE_GREETED || s->state == SMTP_STATE_READY) {
        smtp_reply_error(s, s->state == SMTP_STATE_GREETED ? "503 5.5.1 Error: send HELO/EHLO first"
                                                           : "503 5.5.1 Error: need MAIL command");
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
    struct smtp_tx *tx = &s->tx;
    const struct cfg *cfg = conn_cfg(s->conn);
    if (smtp_data_init(&tx->data, (size_t)cfg->smtp.max_message_size_bytes,
                       SMTP_DATA_PREFIX_RESERVE_BYTES) != 0) {
        smtp_reply_error(s, "452 4.3.1 Insufficient system storage");
        return;
    }
    tx->data_ready = true;
    smtp_enter_state(s, SMTP_STATE_DATA);
    conn_reply(s->conn, "354 End data with <CR><LF>.<CR><LF>\r\n");
    conn_set_mode_data(s->conn, true);
}

static int job_deliver_run(struct store *st, struct writer_job *job)
{
    struct smtp_session *s = container_of(job, struct smtp_session, job);
    return store_deliver(st, &s->tx.delivery);
}

static void log_message(struct smtp_session *s)
{
    struct smtp_tx *tx = &s->tx;
    char from[ADDRESS_STRLEN * 2], to[ADDRESS_STRLEN * 2];
    log_escape(from, sizeof(from), tx->sender_text, strlen(tx->sender_text));
    log_escape(to, sizeof(to), tx->first_rcpt, strlen(tx->first_rcpt));
    log_info("smtp", conn_sid(s->conn),
             "event=message id=%s message=%lld size=%llu from=<%s> to=<%s> rcpts=%zu local=%zu "
             "queued=%zu",
             tx->id, (long long)tx->delivery.message_id_out, (unsigned long long)tx->message_bytes,
             from, to, tx->n_rcpts, tx->n_local, tx->n_remote);
}

/* End of data with the whole content: headers in front, then one writer job. */
static void deliver(struct smtp_session *s)
{
    struct smtp_tx *tx = &s->tx;
    struct conn *c = s->conn;
    snprintf(tx->id, sizeof(tx->id), "%016llx.%u", (unsigned long long)conn_sid(c),
             ++s->transactions);
    char tls[TLS_DESCRIBE_MAX_BYTES];
    char identity[SMTP_IDENTITY_MAX_BYTES];
    if (s->auth_user[0] != '\0')
        snprintf(identity, sizeof(identity), "authenticated as %s", s->auth_user);
    else
        snprintf(identity, sizeof(identity), "%s", tx->identity);
    int64_t now = store_now_ms();
    struct smtp_received r = {
        .helo = s->helo,
        .peer_ip = conn_peer_text(c),
        .hostname = smtp_hostname(s),
        .with = smtp_with_type(s->esmtp, conn_is_tls(c), s->auth_user[0] != '\0'),
        .id = tx->id,
        .tls = conn_is_tls(c) ? conn_tls_describe(c, tls, sizeof(tls)) : NULL,
        .identity = identity[0] != '\0' ? identity : NULL,
        .time_ms = now,
    };
    char trace[SMTP_TRACE_MAX_BYTES];
    int tlen =
        smtp_trace_headers(&r, tx->n_local > 0 ? tx->sender_text : NULL, trace, sizeof(trace));
    size_t off = 0, len = 0;
    if (tlen < 0 || smtp_data_set_prefix(&tx->data, trace, (size_t)tlen) != 0 ||
        smtp_data_take(&tx->data, &tx->block, &off, &len) != 0) {
        smtp_reply_error(s, "451 4.3.0 Error: could not prepare the message");
        smtp_tx_reset(s);
        return;
    }
    tx->remote_ptrs = calloc(tx->n_remote + 1, sizeof(*tx->remote_ptrs));
    if (tx->remote_ptrs == NULL) {
        smtp_reply_error(s, "452 4.3.1 Insufficient system storage");
        smtp_tx_reset(s);
        return;
    }
    for (size_t i = 0; i < tx->n_remote; i++)
        tx->remote_ptrs[i] = tx->remote[i];
    tx->message_bytes = len;
    tx->delivery = (struct store_delivery){
        .sender = tx->sender_text,
        .body = tx->block != NULL ? tx->block + off : (const unsigned char *)"",
        .body_len = len,
        .local_user_ids = tx->local_ids,
        .n_local = tx->n_local,
        .remote_rcpts = tx->remote_ptrs,
        .n_remote = tx->n_remote,
        .received_ms = now,
    };
    smtp_enter_state(s, SMTP_STATE_BUSY);
    if (job_submit(s, SMTP_JOB_DELIVER, job_deliver_run) != 0) {
        smtp_reply_error(s, "451 4.3.0 Error: could not store the message, try again later");
        smtp_tx_reset(s);
    }
}

static void delivered(struct smtp_session *s, int status)
{
    struct smtp_tx *tx = &s->tx;
    if (status == 0) {
        log_message(s);
        /* Only now: the writer's COMMIT returned, so the message is on disk (writer.h). */
        conn_reply(s->conn, "250 2.0.0 Ok: queued as %s\r\n", tx->id);
    } else {
        log_warn("smtp", conn_sid(s->conn), "event=store-error what=deliver id=%s status=%d",
                 tx->id, status);
        smtp_reply_error(s, "451 4.3.0 Error: could not store the message, try again later");
    }
    smtp_tx_reset(s);
}

size_t smtp_on_data(struct conn *c, const unsigned char *p, size_t n)
{
    struct smtp_session *s = conn_session(c);
    if (s == NULL)
        return n;
    enum smtp_data_status st;
    size_t used = smtp_data_feed(&s->tx.data, p, n, &st);
    if (st == SMTP_DATA_MORE)
        return used;
    /* The rest (pipelined commands after the dot, RFC 2920) goes back to the line reader. */
    conn_set_mode_data(c, false);
    if (st == SMTP_DATA_DONE_TOO_BIG) {
        /* RFC 1870 6.2 / RFC 5321 4.5.3.1.10: nothing was kept. */
        smtp_reply_error(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        smtp_tx_reset(s);
    } else if (st != SMTP_DATA_DONE) {
        smtp_reply_error(s, "452 4.3.1 Insufficient system storage");
        smtp_tx_reset(s);
    } else {
        deliver(s);
    }
    return used;
}

/* ---- the writer's answer ------------------------------------------------------------------- */

static void job_done(struct writer_job *job, int status)
{
    struct smtp_session *s = container_of(job, struct smtp_session, job);
    struct conn *c = s->conn;
    enum smtp_job_kind kind = s->job_kind;
    s->job_busy = false;
    s->job_kind = SMTP_JOB_NONE;
    if (s->closed) {
        if (kind == SMTP_JOB_DELIVER && status == 0)
            log_message(s); /* stored, though the client will not hear it */
        smtp_session_free(s);
        conn_unref(&c);
        return;
    }
    if (kind == SMTP_JOB_DELIVER)
        delivered(s, status);
    else
        rcpt_counted(s, status);
    if (!conn_is_closing(c))
        conn_resume_reading(c);
    conn_unref(&c);
}
