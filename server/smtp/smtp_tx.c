/*
 * smtp_tx.c - the SMTP mail transaction: MAIL (sender, ESMTP parameters), RCPT (the relay decision
 * of common/pure/relay_policy.c on facts gathered by server/relay/relay_facts.c, recipient limits,
 * local recipients resolved to user ids), DATA (the scanner of common/pure/smtp_data.c in data
 * mode), BDAT chunks (RFC 3030: the same scanner on raw content, so both verbs end in the same
 * spool file, signer and delivery) and delivery (trace headers, then store_deliver in one writer
 * job; the session says "250 2.0.0 Ok: queued as ID" only once that commit is durable).
 *
 * Memory per transaction is bounded: the scanner keeps at most SMTP_TX_MEMORY_BYTES of content
 * and spills the rest, as it arrives, into a nameless spool file (storage/spool.h; a page-cache
 * write on the loop thread, one in-memory part at a time). The delivery job hands store_deliver
 * three parts, the trace headers, the spool file and the in-memory tail, and the writer copies
 * them into the message row; no mailbox or queue row exists before that commit, and closing the
 * spool file (RSET, a refusal, a dropped connection, the job's end) is all the cleanup there is.
 *
 * DSN (RFC 3461): RET and ENVID come with MAIL (smtp_parse.c), NOTIFY and ORCPT with each RCPT
 * and are kept beside the recipient (smtp_tx_rcpt.c); all of them go into store_deliver, which
 * stores them with the message and its queue rows and answers a local NOTIFY=SUCCESS in the same
 * transaction (storage/queue.h says who gets which notice).
 *
 * It makes and frees the struct smtp_tx (smtp_tx_new at MAIL, smtp_tx_free when the transaction
 * ends; the session holds the one pointer), owns what hangs off it, and the writer jobs' work. It
 * does not own the session: server/smtp/smtp_session.c calls in through smtp_tx.h, checks the SMTP
 * state before each call, and sends the reply this file hands back (smtp_tx.h says what each result
 * asks of it). Nor does it decide relaying (relay_decide does, and this file only carries out the
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
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/password.h"
#include "common/util.h"
#include "common/pure/relay_policy.h"
#include "server/app.h"
#include "server/metrics/metrics.h"
#include "server/net/tls.h"
#include "server/relay/relay_facts.h"
#include "server/smtp/smtp_tx.h"
#include "storage/spool.h"
#include "storage/store.h"

/* Writes the reply and returns result, so a refusal is one line: return answer(...). */
static __attribute__((format(printf, 3, 4))) enum smtp_tx_result
answer(char reply[SMTP_TX_REPLY_MAX_BYTES], enum smtp_tx_result result, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reply, SMTP_TX_REPLY_MAX_BYTES, fmt, ap);
    va_end(ap);
    return result;
}

/*
 * 555 naming the parameters the client sent: at most 64 octets of them, each one that is not
 * printable ASCII shown as '?'. The line reader splits at LF only, so a parameter may hold a bare
 * CR or an 8-bit octet; echoed as is, a CR would break the reply line (RFC 5321 4.2: a reply is
 * text ending in CRLF, and nothing else may end it).
 */
static enum smtp_tx_result unsupported_option(char reply[SMTP_TX_REPLY_MAX_BYTES],
                                              const char *params)
{
    char shown[65];
    size_t n = 0;
    for (; n < sizeof(shown) - 1 && params[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)params[n];
        shown[n] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    shown[n] = '\0';
    return answer(reply, SMTP_TX_ERROR, "555 5.5.4 Unsupported option: %s", shown);
}

/* ---- transaction bookkeeping ----------------------------------------------------------------- */

void smtp_tx_clear(struct smtp_tx *tx)
{
    smtp_tx_done_fn done = tx->done;
    void *done_ctx = tx->done_ctx;
    free(tx->lookup);
    smtp_tx_milter_lookup_free(tx);
    smtp_tx_truncate(tx, 0, 0);
    smtp_tx_rcpt_dsn_free(&tx->pending_dsn);
    free(tx->local_dsn);
    free(tx->remote_dsn);
    free(tx->remote_notify);
    free(tx->remote_orcpt);
    free(tx->delivered);
    free(tx->local_ids);
    free(tx->remote);
    free(tx->block);
    free(tx->trace);
    free(tx->remote_ptrs);
    free(tx->prefix);
    free(tx->window_refusal);
    free(tx->quarantine);
    if (tx->dkim != NULL)
        smtp_dkim_clear(tx->dkim);
    free(tx->dkim);
    smtp_data_free(&tx->data);
    if (tx->spooling)
        (void)close(tx->spool_fd); /* nameless: closing it is deleting it, nothing to lose */
    memset(tx, 0, sizeof(*tx));
    tx->done = done;
    tx->done_ctx = done_ctx;
}

struct smtp_tx *smtp_tx_new(smtp_tx_done_fn done, void *ctx)
{
    struct smtp_tx *tx = calloc(1, sizeof(struct smtp_tx));
    if (tx != NULL) {
        tx->done = done;
        tx->done_ctx = ctx;
    }
    return tx;
}

void smtp_tx_free(struct smtp_tx **txp)
{
    if (txp == NULL || *txp == NULL)
        return;
    smtp_tx_clear(*txp);
    free(*txp);
    *txp = NULL;
}

/* Drops the spool file of a refused message at once, so its disk space goes back now. */
static void spool_drop(struct smtp_tx *tx)
{
    if (tx->spooling)
        (void)close(tx->spool_fd);
    tx->spooling = false;
    tx->spool_fd = -1;
}

/* The scanner's spill function: content beyond the in-memory part goes to the spool file. */
static int tx_spill(void *ctx, const unsigned char *p, size_t n)
{
    struct smtp_tx *tx = ctx;
    /* Content leaves memory here in order, so the signer sees all of it once (smtp_dkim.h). */
    if (tx->dkim != NULL)
        smtp_dkim_feed(tx->dkim, p, n);
    if (!tx->spooling) {
        int fd = spool_file_open(tx->db_path);
        if (fd < 0)
            return fd;
        tx->spool_fd = fd;
        tx->spooling = true;
    }
    return spool_file_append(tx->spool_fd, p, n);
}

/* A recipient was accepted: count it; the session answers and enters its RCPT state. */
static enum smtp_tx_result rcpt_accepted(struct smtp_tx *tx, const char *rcpt,
                                         char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    if (tx->n_rcpts++ == 0)
        snprintf(tx->first_rcpt, sizeof(tx->first_rcpt), "%s", rcpt);
    return answer(reply, SMTP_TX_OK, "250 2.1.5 Ok");
}

/* ---- MAIL ---------------------------------------------------------------------------------- */

static bool is_submission(struct conn *c)
{
    enum conn_service svc = conn_service(c);
    return svc == CONN_SERVICE_SMTP_SUBMISSION || svc == CONN_SERVICE_SMTP_SUBMISSIONS;
}

enum smtp_tx_result smtp_tx_mail(struct smtp_tx *tx, const struct smtp_tx_client *cl,
                                 const char *args, char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    struct conn *c = cl->conn;
    /* RFC 6409 4.3 (and RFC 8314 for 465): submission requires authentication. Where AUTH is
     * only offered after STARTTLS and TLS has not started, the step the client is missing is
     * STARTTLS (RFC 3207 4, Postfix's words). */
    if (is_submission(c) && cl->auth_user[0] == '\0') {
        if (conn_can_starttls(c) && !conn_cfg(c)->smtp.plaintext_auth)
            return answer(reply, SMTP_TX_ERROR, "530 5.7.0 Must issue a STARTTLS command first");
        return answer(reply, SMTP_TX_ERROR, "530 5.7.0 Authentication required");
    }
    smtp_tx_clear(tx);
    const char *params = NULL, *why = NULL;
    int rc = smtp_parse_path_arg(args, "FROM:", &tx->sender, &tx->sender_kind, &params, &why);
    if (rc == SMTP_PARSE_SYNTAX)
        return answer(reply, SMTP_TX_ERROR, "501 5.5.4 Syntax: MAIL FROM:<address>");
    if (rc != SMTP_PARSE_OK)
        return answer(reply, SMTP_TX_ERROR, "501 5.1.7 Bad sender address syntax (%s)", why);
    /* RFC 5321 4.5.1 names <Postmaster> as a recipient only. */
    if (tx->sender_kind == ADDRESS_PATH_POSTMASTER) {
        smtp_tx_clear(tx);
        return answer(reply, SMTP_TX_ERROR, "501 5.1.7 Bad sender address syntax");
    }
    rc = smtp_parse_mail_params(params, &tx->params, &why);
    if (rc != SMTP_PARSE_OK) {
        if (rc == SMTP_PARSE_UNKNOWN_PARAM)
            unsupported_option(reply, params);
        else
            answer(reply, SMTP_TX_ERROR, "501 5.5.4 Bad MAIL parameter (%s)", why);
        smtp_tx_clear(tx);
        return SMTP_TX_ERROR;
    }
    /* RFC 6531 3.7.4.1: a UTF-8 reverse-path needs the SMTPUTF8 parameter. */
    if (tx->sender.is_utf8 && !tx->params.smtputf8) {
        smtp_tx_clear(tx);
        return answer(reply, SMTP_TX_ERROR,
                      "553 5.6.7 Non-ASCII addresses not permitted for that sender");
    }
    uint64_t max = conn_cfg(c)->smtp.max_message_size_bytes;
    /* RFC 1870 6: a declared size above the limit is refused at MAIL already. */
    if (tx->params.has_size && tx->params.size_bytes > max) {
        smtp_tx_clear(tx);
        return answer(reply, SMTP_TX_ERROR,
                      "552 5.3.4 Message size exceeds fixed maximum message size");
    }
    address_format(&tx->sender, tx->sender_text, sizeof(tx->sender_text));
    return answer(reply, SMTP_TX_OK, "250 2.1.0 Ok");
}

/* ---- RCPT ---------------------------------------------------------------------------------- */

/* Where postmaster mail goes (head comment): two indexed lookups at most. 0 with *id_out,
 * STORE_NOT_FOUND, or STORE_ERR. */
static void set_identity(struct smtp_tx *tx, struct conn *c, const struct relay_facts *f,
                         const struct relay_decision *d)
{
    if (tx->identity[0] != '\0')
        return;
    if (d->reason == RELAY_REASON_TRUSTED_NETWORK)
        snprintf(tx->identity, sizeof(tx->identity), "trusted network %s", f->trusted_network);
    else if (d->reason == RELAY_REASON_POP_WINDOW)
        snprintf(tx->identity, sizeof(tx->identity), "POP-before-SMTP window of %s",
                 f->window_user != NULL && f->window_user[0] != '\0' ? f->window_user
                                                                     : conn_peer_text(c));
}

/*
 * A recipient allowed on a window is counted against it before the answer (smtp_tx_job_result
 * answers): the writer's one conditional UPDATE (store_window_take_relay) both checks
 * window_max_recipients and counts, so the count read here is only a hint, and parallel
 * sessions from one address, or pipelined RCPTs, cannot overshoot the limit. Should the writer
 * find the window full, expired or closed, the answer is the refusal a full window gets, made
 * ready here with its log line.
 */
static int window_count_prepare(struct smtp_tx *tx, struct conn *c, const struct relay_facts *f,
                                const char *rcpt_text)
{
    const struct cfg *cfg = conn_cfg(c);
    free(tx->window_refusal);
    tx->window_refusal = malloc(sizeof(*tx->window_refusal));
    if (tx->window_refusal == NULL)
        return -1;
    snprintf(tx->pending_rcpt, sizeof(tx->pending_rcpt), "%s", rcpt_text);
    ip_window_key(conn_peer_ip(c), cfg->relay.window_ipv6_prefix, tx->window_key,
                  sizeof(tx->window_key));
    tx->window_max = cfg->relay.window_max_recipients;
    struct relay_facts full = *f;
    full.window_relayed = (int64_t)full.window_max_recipients;
    struct relay_decision limit;
    relay_decide(&full, &limit);
    snprintf(tx->window_refusal->reply, sizeof(tx->window_refusal->reply), "%s", limit.reply);
    relay_format_log(&full, &limit, tx->window_refusal->log, sizeof(tx->window_refusal->log));
    tx->job_kind = SMTP_JOB_COUNT_WINDOW;
    return 0;
}

static enum smtp_tx_result rcpt_temp_failure(struct conn *c, const char *what,
                                             char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    log_warn("smtp", conn_sid(c), "event=store-error what=\"%s\"", what);
    return answer(reply, SMTP_TX_ERROR, "451 4.3.0 Error: temporary failure, try again later");
}

static enum smtp_tx_result rcpt_decided(struct smtp_tx *tx, struct conn *c, int st,
                                        char reply[SMTP_TX_REPLY_MAX_BYTES]);

/* On a reader thread, or inline on the loop: the lookup only, which the loop leaves alone. */
static int rcpt_run(struct store *st, struct reader_job *job)
{
    struct smtp_tx *tx = container_of(job, struct smtp_tx, rcpt_job);
    return relay_rcpt_lookup(st, &tx->lookup->relay);
}

static void rcpt_done(struct reader_job *job, int status)
{
    struct smtp_tx *tx = container_of(job, struct smtp_tx, rcpt_job);
    tx->done(tx->done_ctx, status);
}

enum smtp_tx_result smtp_tx_rcpt(struct smtp_tx *tx, const struct smtp_tx_client *cl,
                                 const char *args, char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    struct conn *c = cl->conn;
    struct address rcpt;
    enum address_path_kind kind;
    const char *params = NULL, *why = NULL;
    int rc = smtp_parse_path_arg(args, "TO:", &rcpt, &kind, &params, &why);
    if (rc == SMTP_PARSE_SYNTAX)
        return answer(reply, SMTP_TX_ERROR, "501 5.5.4 Syntax: RCPT TO:<address>");
    if (rc != SMTP_PARSE_OK)
        return answer(reply, SMTP_TX_ERROR, "501 5.1.3 Bad recipient address syntax (%s)", why);
    /* RFC 6531 3.7.4.1: a UTF-8 forward-path only in a transaction that said SMTPUTF8. */
    if (rcpt.is_utf8 && !tx->params.smtputf8)
        return answer(reply, SMTP_TX_ERROR,
                      "553 5.6.7 Non-ASCII addresses not permitted for that recipient");
    struct smtp_rcpt_params rp;
    rc = smtp_parse_rcpt_params(params, &rp, &why);
    if (rc != SMTP_PARSE_OK) {
        if (rc == SMTP_PARSE_UNKNOWN_PARAM)
            return unsupported_option(reply, params);
        return answer(reply, SMTP_TX_ERROR, "501 5.5.4 Bad RCPT parameter (%s)", why);
    }
    const struct cfg *cfg = conn_cfg(c);
    /* RFC 5321 4.5.3.1.10: 452 asks the client to send the rest in another transaction. Not
     * counted as an error: the client is doing nothing wrong. */
    if (tx->n_rcpts >= cfg->smtp.max_recipients)
        return answer(reply, SMTP_TX_SOFT, "452 4.5.3 Too many recipients");
    /* The reads (facts, decision, the user) are one job: inline it runs now, on reader threads
     * the session waits and smtp_tx_job_result carries on with rcpt_decided. */
    if (tx->lookup == NULL && (tx->lookup = malloc(sizeof(*tx->lookup))) == NULL)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    tx->lookup->params = rp;
    struct relay_rcpt_lookup *l = &tx->lookup->relay;
    l->cfg = cfg;
    l->ip = *conn_peer_ip(c);
    snprintf(l->auth_user, sizeof(l->auth_user), "%s", cl->auth_user);
    l->sender = tx->sender;
    l->sender_kind = tx->sender_kind;
    l->rcpt = rcpt;
    l->rcpt_kind = kind;
    l->now_ms = store_now_ms();
    tx->rcpt_job.run = rcpt_run;
    tx->rcpt_job.done = rcpt_done;
    int st;
    if (reader_submit(((struct app *)conn_app(c))->reader, &tx->rcpt_job, &st) == READER_PENDING) {
        tx->job_kind = SMTP_JOB_RCPT_READ;
        return SMTP_TX_WAIT;
    }
    return rcpt_decided(tx, c, st, reply);
}

/* RCPT's reads are over (status as relay_rcpt_lookup returned it): carry out the decision. */
static enum smtp_tx_result rcpt_decided(struct smtp_tx *tx, struct conn *c, int st,
                                        char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    struct relay_rcpt_lookup *l = &tx->lookup->relay;
    const struct smtp_rcpt_params *rp = &tx->lookup->params;
    if (!l->decided)
        return rcpt_temp_failure(c, l->error, reply);
    /* Still the session's: facts and decision point into l, which the transaction owns. */
    const struct relay_facts *facts = &l->facts;
    const struct relay_decision *d = &l->decision;
    metrics_relay_decision((int)d->reason);
    char logline[RELAY_LOG_MAX_BYTES];
    relay_format_log(facts, d, logline, sizeof(logline));
    log_info("smtp", conn_sid(c), "event=relay %s", logline);
    if (d->verdict != RELAY_ALLOW)
        return answer(reply, SMTP_TX_ERROR, "%s", d->reply);

    char text[ADDRESS_STRLEN];
    address_format(&l->rcpt, text, sizeof(text));
    int64_t id = l->user_id;
    switch (d->reason) {
    case RELAY_REASON_LOCAL_MAILBOX:
    case RELAY_REASON_POSTMASTER:
        /* The mailbox deleted between the two reads, or no user at all to take the
         * postmaster's mail: as if it never existed. */
        if (st == STORE_NOT_FOUND)
            return answer(reply, SMTP_TX_ERROR,
                          "550 5.1.1 <%s>: Recipient address rejected: User unknown", text);
        if (st != STORE_OK)
            return rcpt_temp_failure(c, l->error, reply);
        break;
    case RELAY_REASON_POP_WINDOW:
        set_identity(tx, c, facts, d);
        smtp_tx_rcpt_dsn_free(&tx->pending_dsn);
        if (window_count_prepare(tx, c, facts, text) != 0 ||
            smtp_tx_rcpt_dsn_set(&tx->pending_dsn, rp, NULL) != 0)
            return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
        return SMTP_TX_JOB;
    default: /* trusted-network, auth */
        set_identity(tx, c, facts, d);
        if (smtp_tx_add_remote_dsn(tx, text, rp) != 0)
            return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
        return rcpt_accepted(tx, text, reply);
    }
    if (smtp_tx_add_local_dsn(tx, id, rp, text) != 0)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    return rcpt_accepted(tx, text, reply);
}

/* ---- DATA ---------------------------------------------------------------------------------- */

/* Readies the scanner for DATA or, raw, for BDAT chunks (common/pure/smtp_data.h). */
static int data_begin(struct smtp_tx *tx, struct conn *c, bool raw)
{
    const struct cfg *cfg = conn_cfg(c);
    /* No headroom: the trace headers travel as a part of their own (smtp_tx_deliver). */
    if (smtp_data_init(&tx->data, (size_t)cfg->smtp.max_message_size_bytes, 0) != 0 ||
        smtp_data_set_spill(&tx->data, SMTP_TX_MEMORY_BYTES, tx_spill, tx) != 0 ||
        (raw && smtp_data_set_raw(&tx->data) != 0))
        return -1;
    tx->db_path = cfg->server.database;
    tx->sid = conn_sid(c);
    /* Remote recipients come only from an authorised client: the message is relayed, so it is
     * signed and fixed up; local deliveries are not. */
    if (tx->n_remote > 0 && smtp_tx_dkim_start(tx) != 0)
        return -1;
    return 0;
}

int smtp_tx_dkim_start(struct smtp_tx *tx)
{
    if (tx->dkim == NULL && (tx->dkim = calloc(1, sizeof(*tx->dkim))) == NULL)
        return -1;
    smtp_dkim_start(tx->dkim); /* drops what an earlier start collected */
    return 0;
}

enum smtp_tx_result smtp_tx_data(struct smtp_tx *tx, struct conn *c,
                                 char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    if (data_begin(tx, c, false) != 0)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    return answer(reply, SMTP_TX_OK, "354 End data with <CR><LF>.<CR><LF>");
}

/* The scanner's end (or, for a BDAT chunk, its state so far) as an answer: OK, or ERROR with the
 * spool file dropped. */
static enum smtp_tx_result data_outcome(struct smtp_tx *tx, enum smtp_data_status st,
                                        char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    if (st != SMTP_DATA_DONE)
        spool_drop(tx);
    if (st == SMTP_DATA_DONE_SPILL_FAILED) {
        int err = smtp_data_spill_error(&tx->data);
        log_warn("smtp", tx->sid, "event=spool-error error=\"%s\"", strerror(-err));
        if (err == -ENOSPC || err == -EDQUOT)
            return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
        return answer(reply, SMTP_TX_ERROR,
                      "451 4.3.0 Error: could not spool the message, try again later");
    }
    /* RFC 1870 6.2 / RFC 5321 4.5.3.1.10: nothing was kept. */
    if (st == SMTP_DATA_DONE_TOO_BIG)
        return answer(reply, SMTP_TX_ERROR,
                      "552 5.3.4 Message size exceeds fixed maximum message size");
    if (st != SMTP_DATA_DONE)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    return SMTP_TX_OK;
}

enum smtp_tx_result smtp_tx_feed(struct smtp_tx *tx, const unsigned char *p, size_t n,
                                 size_t *used_out, char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    enum smtp_data_status st;
    *used_out = smtp_data_feed(&tx->data, p, n, &st);
    if (st == SMTP_DATA_MORE)
        return SMTP_TX_MORE;
    return data_outcome(tx, st, reply);
}

/* ---- BDAT (RFC 3030) ----------------------------------------------------------------------- */

enum smtp_tx_result smtp_tx_bdat_begin(struct smtp_tx *tx, struct conn *c,
                                       char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    if (data_begin(tx, c, true) != 0)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    return SMTP_TX_OK;
}

void smtp_tx_bdat_feed(struct smtp_tx *tx, const unsigned char *p, size_t n)
{
    enum smtp_data_status st;
    /* Raw content has no end marker: every octet is used (smtp_data.h). */
    (void)smtp_data_feed(&tx->data, p, n, &st);
}

enum smtp_tx_result smtp_tx_bdat_chunk_end(struct smtp_tx *tx, bool last,
                                           char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    if (last)
        return data_outcome(tx, smtp_data_finish(&tx->data), reply);
    return data_outcome(tx, smtp_data_status_so_far(&tx->data), reply);
}

static void log_message(struct smtp_tx *tx, struct conn *c)
{
    char from[ADDRESS_STRLEN * 2], to[ADDRESS_STRLEN * 2];
    char quarantine[SMTP_TX_QUARANTINE_MAX_BYTES * 2] = "";
    if (tx->quarantine != NULL)
        log_escape(quarantine, sizeof(quarantine), tx->quarantine, strlen(tx->quarantine));
    log_escape(from, sizeof(from), tx->sender_text, strlen(tx->sender_text));
    log_escape(to, sizeof(to), tx->first_rcpt, strlen(tx->first_rcpt));
    metrics_smtp_accepted(); /* every stored message passes here once */
    bool signing = tx->dkim != NULL && tx->dkim->on;
    log_info("smtp", conn_sid(c),
             "event=message id=%s message=%lld size=%llu from=<%s> to=<%s> rcpts=%zu local=%zu "
             "queued=%zu%s%s%s%s",
             tx->id, (long long)tx->delivery.message_id_out, (unsigned long long)tx->message_bytes,
             from, to, tx->n_rcpts, tx->n_local, tx->n_remote, signing ? " dkim=" : "",
             signing ? tx->dkim->outcome : "", tx->quarantine != NULL ? " quarantine=" : "",
             quarantine);
}

static enum smtp_tx_result deliver_ready(struct smtp_tx *tx, char reply[SMTP_TX_REPLY_MAX_BYTES]);

/* On a reader thread, or inline on the loop: *tx->dkim and the thread-safe key cache only; the
 * loop leaves the transaction alone meanwhile (the session waits). */
static int dkim_run(struct store *st, struct reader_job *job)
{
    struct smtp_tx *tx = container_of(job, struct smtp_tx, dkim_job);
    (void)smtp_dkim_prepare(tx->dkim, st, tx->dkim_cache, tx->dkim_hostname, tx->id,
                            tx->delivery.received_ms);
    return 0;
}

static void dkim_done(struct reader_job *job, int status)
{
    struct smtp_tx *tx = container_of(job, struct smtp_tx, dkim_job);
    tx->done(tx->done_ctx, status);
}

enum smtp_tx_result smtp_tx_deliver(struct smtp_tx *tx, const struct smtp_tx_client *cl,
                                    unsigned seq, char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    struct conn *c = cl->conn;
    bool authed = cl->auth_user[0] != '\0';
    snprintf(tx->id, sizeof(tx->id), "%016llx.%u", (unsigned long long)conn_sid(c), seq);
    char tls[TLS_DESCRIBE_MAX_BYTES];
    char identity[SMTP_IDENTITY_MAX_BYTES];
    if (authed)
        snprintf(identity, sizeof(identity), "authenticated as %s", cl->auth_user);
    else
        snprintf(identity, sizeof(identity), "%s", tx->identity);
    int64_t now = store_now_ms();
    struct smtp_received r = {
        .helo = cl->helo,
        .peer_ip = conn_peer_text(c),
        .hostname = conn_cfg(c)->server.hostname,
        .with = smtp_with_type(cl->esmtp, conn_is_tls(c), authed),
        .id = tx->id,
        .tls = conn_is_tls(c) ? conn_tls_describe(c, tls, sizeof(tls)) : NULL,
        .identity = identity[0] != '\0' ? identity : NULL,
        .time_ms = now,
    };
    char trace[SMTP_TRACE_MAX_BYTES];
    int tlen =
        smtp_trace_headers(&r, tx->n_local > 0 ? tx->sender_text : NULL, trace, sizeof(trace));
    if (tlen <= 0)
        return answer(reply, SMTP_TX_ERROR, "451 4.3.0 Error: could not prepare the message");
    tx->trace = malloc((size_t)tlen);
    if (tx->trace == NULL)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    memcpy(tx->trace, trace, (size_t)tlen);
    /* The message is trace + spilled content + the in-memory tail (store_delivery's parts). */
    uint64_t spilled = !tx->spooling ? 0
                       : tx->taken   ? tx->spilled
                                     : smtp_data_spilled_bytes(&tx->data);
    size_t off = tx->block_off, len = tx->block_len;
    if (!tx->taken && smtp_data_take(&tx->data, &tx->block, &off, &len) != 0)
        return answer(reply, SMTP_TX_ERROR, "451 4.3.0 Error: could not prepare the message");
    tx->message_bytes = (uint64_t)tlen + spilled + len;
    tx->delivery = (struct store_delivery){
        .sender = tx->sender_text,
        .prefix = tx->trace,
        .prefix_len = (size_t)tlen,
        .spool_fd = tx->spooling ? tx->spool_fd : -1,
        .spool_len = spilled,
        .body = tx->block != NULL ? tx->block + off : (const unsigned char *)"",
        .body_len = len,
        .local_user_ids = tx->local_ids,
        .n_local = tx->n_local,
        .n_remote = tx->n_remote,
        .received_ms = now,
        .smtputf8 = tx->params.smtputf8,
        .quarantine = tx->quarantine,
        .dsn_envid = tx->params.envid[0] != '\0' ? tx->params.envid : NULL,
        .dsn_ret = (int)tx->params.ret,
        .hostname = conn_cfg(c)->server.hostname,
    };
    if (tx->dkim != NULL) {
        if (tx->block != NULL)
            smtp_dkim_feed(tx->dkim, tx->block + off, len);
        smtp_dkim_end(tx->dkim);
        /* The signing keys' reads (is the From domain local, its keys) are a reader job:
         * inline now, or the session waits and smtp_tx_job_result carries on. */
        const struct app *app = conn_app(c);
        tx->dkim_cache = app != NULL ? app->dkim : NULL;
        tx->dkim_hostname = conn_cfg(c)->server.hostname;
        tx->dkim_job.run = dkim_run;
        tx->dkim_job.done = dkim_done;
        int st;
        if (app == NULL || app->reader == NULL)
            (void)smtp_dkim_prepare(tx->dkim, NULL, NULL, tx->dkim_hostname, tx->id, now);
        else if (reader_submit(app->reader, &tx->dkim_job, &st) == READER_PENDING) {
            tx->job_kind = SMTP_JOB_DKIM_READ;
            return SMTP_TX_WAIT;
        }
    }
    return deliver_ready(tx, reply);
}

/* The message is ready but for its recipients' arrays (addresses, DSN parameters): the writer
 * job. */
static enum smtp_tx_result deliver_ready(struct smtp_tx *tx, char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    tx->remote_ptrs = calloc(tx->n_remote + 1, sizeof(*tx->remote_ptrs));
    if (tx->remote_ptrs == NULL)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    for (size_t i = 0; i < tx->n_remote; i++)
        tx->remote_ptrs[i] = tx->remote[i];
    if (smtp_tx_dsn_prepare(tx) != 0)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    tx->delivery.remote_rcpts = tx->remote_ptrs;
    tx->delivery.remote_notify = tx->remote_notify;
    tx->delivery.remote_orcpt = tx->remote_orcpt;
    tx->delivery.delivered = tx->delivered;
    tx->delivery.n_delivered = tx->n_delivered;
    tx->job_kind = SMTP_JOB_DELIVER;
    return SMTP_TX_JOB;
}

/* ---- the writer job ------------------------------------------------------------------------ */

/* On the writer thread: the store call of the job (the loop thread leaves tx alone meanwhile). */
static int job_run(struct store *st, struct writer_job *job)
{
    struct smtp_tx *tx = container_of(job, struct smtp_tx, job);
    if (tx->job_kind == SMTP_JOB_DELIVER)
        return store_deliver(st, &tx->delivery);
    return store_window_take_relay(st, tx->window_key, store_now_ms(), tx->window_max);
}

static void job_done(struct writer_job *job, int status)
{
    struct smtp_tx *tx = container_of(job, struct smtp_tx, job);
    tx->done(tx->done_ctx, status);
}

/* On the loop: what signing and the fix-ups added goes after the trace headers. */
static void attach_added(struct smtp_tx *tx)
{
    struct smtp_dkim *d = tx->dkim;
    if (d == NULL || d->added_len == 0 || tx->prefix != NULL)
        return;
    size_t tlen = tx->delivery.prefix_len;
    tx->prefix = malloc(tlen + d->added_len);
    if (tx->prefix == NULL) {
        snprintf(d->outcome, sizeof(d->outcome), "none reason=no-memory");
        return;
    }
    memcpy(tx->prefix, tx->trace, tlen);
    memcpy(tx->prefix + tlen, d->added, d->added_len);
    tx->delivery.prefix = tx->prefix;
    tx->delivery.prefix_len = tlen + d->added_len;
    tx->message_bytes += d->added_len;
}

/* In the threadpool: only *tx->dkim is touched (smtp_dkim.h), and the loop leaves the whole
 * transaction alone until sign_done (the session is paused, waiting for done). Only queued when
 * tx->dkim has keys, so it is not NULL here. */
static void sign_work(uv_work_t *req)
{
    struct smtp_tx *tx = container_of(req, struct smtp_tx, sign_req);
    smtp_dkim_sign(tx->dkim);
}

/* Back on the loop: the signed message goes to the writer, as an unsigned one does at once. The
 * writer is looked up now, not at submission: it is the server's, and the connection (which the
 * session holds a reference to until done) keeps the server's resources alive. */
static void sign_done(uv_work_t *req, int status)
{
    (void)status; /* UV_ECANCELED only for uv_cancel, which nothing calls */
    struct smtp_tx *tx = container_of(req, struct smtp_tx, sign_req);
    attach_added(tx);
    const struct app *app = conn_app(tx->sign_conn);
    struct writer *w = app != NULL ? app->writer : NULL;
    tx->sign_conn = NULL;
    if (w == NULL || writer_submit(w, &tx->job) != 0)
        tx->done(tx->done_ctx, STORE_ERR); /* answered 451, as a failed commit would be */
}

enum smtp_tx_result smtp_tx_submit(struct smtp_tx *tx, struct conn *c, struct writer *w,
                                   smtp_tx_done_fn done, void *ctx,
                                   char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    tx->job.run = job_run;
    tx->job.done = job_done;
    tx->done = done;
    tx->done_ctx = ctx;
    /*
     * A message with an RSA key to sign with goes to the threadpool first (a quarter of a
     * millisecond of CPU would stall the loop); ed25519 alone is signed here, since its 40
     * microseconds cost the loop less than the hop costs the session (smtp_dkim.h).
     */
    struct smtp_dkim *d = tx->job_kind == SMTP_JOB_DELIVER ? tx->dkim : NULL;
    if (d != NULL && smtp_dkim_is_cheap(d))
        smtp_dkim_sign(d);
    if (d != NULL && d->n_keys > 0 && w != NULL) {
        tx->sign_conn = c;
        if (uv_queue_work(conn_loop(c), &tx->sign_req, sign_work, sign_done) == 0)
            return SMTP_TX_JOB;
        tx->sign_conn = NULL;
        smtp_dkim_sign(d); /* cannot happen (libuv refuses only a NULL work_cb) */
    }
    if (tx->job_kind == SMTP_JOB_DELIVER)
        attach_added(tx);
    if (w != NULL && writer_submit(w, &tx->job) == 0)
        return SMTP_TX_JOB;
    enum smtp_job_kind kind = tx->job_kind;
    tx->job_kind = SMTP_JOB_NONE;
    if (kind == SMTP_JOB_DELIVER)
        return answer(reply, SMTP_TX_ERROR,
                      "451 4.3.0 Error: could not store the message, try again later");
    return rcpt_temp_failure(c, "writer unavailable", reply);
}

enum smtp_tx_result smtp_tx_job_result(struct smtp_tx *tx, struct conn *c, int status,
                                       char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    enum smtp_job_kind kind = tx->job_kind;
    tx->job_kind = SMTP_JOB_NONE;
    if (kind == SMTP_JOB_RCPT_READ)
        return rcpt_decided(tx, c, status, reply);
    if (kind == SMTP_JOB_DKIM_READ)
        return deliver_ready(tx, reply); /* the outcome of the keys' reads is in tx->dkim */
    if (kind == SMTP_JOB_DELIVER) {
        if (status == 0) {
            log_message(tx, c);
            /* Only now: the writer's COMMIT returned, so the message is on disk (writer.h). */
            return answer(reply, SMTP_TX_OK, "250 2.0.0 Ok: queued as %s", tx->id);
        }
        log_warn("smtp", conn_sid(c), "event=store-error what=deliver id=%s status=%d", tx->id,
                 status);
        return answer(reply, SMTP_TX_ERROR,
                      "451 4.3.0 Error: could not store the message, try again later");
    }
    struct smtp_window_refusal *refusal = tx->window_refusal;
    tx->window_refusal = NULL; /* this answer is its last use */
    if (status == STORE_NOT_FOUND && refusal != NULL) {
        log_info("smtp", conn_sid(c), "event=relay %s", refusal->log);
        metrics_relay_decision(RELAY_REASON_WINDOW_LIMIT);
        enum smtp_tx_result r = answer(reply, SMTP_TX_ERROR, "%s", refusal->reply);
        free(refusal);
        return r;
    }
    free(refusal);
    if (status != 0)
        return rcpt_temp_failure(c, "count relayed recipient", reply);
    struct smtp_rcpt_params rp = {.notify = tx->pending_dsn.notify};
    if (tx->pending_dsn.orcpt != NULL)
        snprintf(rp.orcpt, sizeof(rp.orcpt), "%s", tx->pending_dsn.orcpt);
    smtp_tx_rcpt_dsn_free(&tx->pending_dsn);
    if (smtp_tx_add_remote_dsn(tx, tx->pending_rcpt, &rp) != 0)
        return answer(reply, SMTP_TX_ERROR, "452 4.3.1 Insufficient system storage");
    return rcpt_accepted(tx, tx->pending_rcpt, reply);
}

void smtp_tx_job_orphaned(struct smtp_tx *tx, struct conn *c, int status)
{
    if (tx->job_kind == SMTP_JOB_DELIVER && status == 0)
        log_message(tx, c); /* stored, though the client will not hear it */
    tx->job_kind = SMTP_JOB_NONE;
}
