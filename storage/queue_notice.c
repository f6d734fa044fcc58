/*
 * queue_notice.c - delivery status notifications (RFC 3461, RFC 3464) as the store keeps them:
 * which recipients of a message get which notice (storage/queue.h, "Delivery status
 * notifications"), where a notice goes (the sender's mailbox here, or a queue row with the null
 * sender for the sender's server), and the permanent failure of queue entries, which removes
 * them with their bounce in one savepoint.
 *
 * What it does not do: write the notice (common/pure/dsn.c builds it from what is read here),
 * claim or retry entries (storage/queue.c), or decide what happened to a recipient (the queue
 * runner and the SMTP session say so).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/address.h"
#include "storage/mailbox.h"
#include "storage/queue.h"
#include "storage/store_internal.h"

/* Each call below is atomic inside whatever the caller has open: its own savepoint. */
#define SP_NAME "notice"

static int fail_text(struct store *s, int status, const char *what)
{
    snprintf(s->errmsg, sizeof(s->errmsg), "%s", what);
    return status;
}

/* One queue entry as a failure or a notice needs it. */
struct entry_row {
    int64_t message_id;
    int64_t created_ms;
    char *sender; /* owned */
    unsigned notify;
    char *orcpt;     /* owned, NULL when not given */
    char *recipient; /* owned */
    bool delay_notified;
};

static void entry_row_free(struct entry_row *e)
{
    free(e->sender);
    free(e->orcpt);
    free(e->recipient);
    memset(e, 0, sizeof(*e));
}

/* Entry id; STORE_NOT_FOUND when it is gone. */
static int read_entry(struct store *s, int64_t id, struct entry_row *out)
{
    memset(out, 0, sizeof(*out));
    struct sql_stmt *st = sql_prepare(s, "SELECT message_id, created_ms, sender, dsn_notify,"
                                         " dsn_orcpt, recipient, delay_notified FROM queue"
                                         " WHERE id = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, id);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        out->message_id = sql_col_i64(st, 0);
        out->created_ms = sql_col_i64(st, 1);
        const char *sender = sql_col_text(st, 2);
        out->notify = (unsigned)sql_col_i64(st, 3);
        const char *orcpt = sql_col_text(st, 4);
        const char *rcpt = sql_col_text(st, 5);
        out->delay_notified = sql_col_i64(st, 6) != 0;
        out->sender = strdup(sender != NULL ? sender : "");
        out->recipient = strdup(rcpt != NULL ? rcpt : "");
        out->orcpt = orcpt != NULL ? strdup(orcpt) : NULL;
        if (out->sender == NULL || out->recipient == NULL || (orcpt != NULL && out->orcpt == NULL))
            status = fail_text(s, STORE_ERR, "queue entry: out of memory");
    } else if (rc == SQL_DONE) {
        status = STORE_NOT_FOUND;
    }
    int end = store_rows_end(s, st, rc, "read queue entry");
    if (status != STORE_OK || end != STORE_OK)
        entry_row_free(out);
    return status != STORE_OK ? status : end;
}

/* Where a notice to sender goes; *user_id_out is set for STORE_BOUNCE_LOCAL. */
static int route_bounce(struct store *s, const char *sender, enum store_bounce_route *route_out,
                        int64_t *user_id_out)
{
    if (sender[0] == '\0') {
        *route_out = STORE_BOUNCE_NULL_SENDER;
        return STORE_OK;
    }
    /* The sender as address_format wrote it at MAIL FROM, so it parses (UTF-8 included, as
     * SMTPUTF8 allowed it); if not, it is no use. */
    struct address a;
    if (address_parse_flags(sender, strlen(sender), ADDRESS_ALLOW_UTF8, &a, NULL) != 0) {
        *route_out = STORE_BOUNCE_BAD_SENDER;
        return STORE_OK;
    }
    bool local = false;
    int status = a.domain_is_literal ? STORE_OK : store_domain_is_local(s, a.domain, &local);
    if (status != STORE_OK || !local) {
        if (status == STORE_OK)
            *route_out = STORE_BOUNCE_QUEUED;
        return status;
    }
    /* Looked up by the users-table key RCPT TO uses; a quoted local part is never a user. */
    char key[ADDRESS_STRLEN];
    if (address_user_key(&a, key, sizeof(key)) != 0) {
        *route_out = STORE_BOUNCE_NO_MAILBOX;
        return STORE_OK;
    }
    struct sql_stmt *st = sql_prepare(s, "SELECT id FROM users WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, key);
    int rc = sql_step(st);
    if (rc == SQL_ROW) {
        *user_id_out = sql_col_i64(st, 0);
        *route_out = STORE_BOUNCE_LOCAL;
    } else {
        *route_out = STORE_BOUNCE_NO_MAILBOX;
    }
    return store_rows_end(s, st, rc, "notice: look up sender");
}

/*
 * The first octets of the body, at most max: DSN_ORIG_HEADERS_MAX_BYTES + 1 is enough for its
 * header section (dsn_header_length never needs more; the one more lets it see that a line goes
 * on past the cap); RET=FULL reads the whole body when it is small enough to be returned.
 */
static int read_body(struct store *s, int64_t message_id, size_t max, unsigned char **out,
                     size_t *len_out)
{
    return store_body_read_head(s, message_id, max, out, len_out);
}

/* What a notice needs of the original message row. */
struct message_row {
    char *sender; /* owned */
    char *envid;  /* owned, NULL when not given */
    int64_t received_ms;
    int64_t size;
    int ret;
};

static int read_message(struct store *s, int64_t message_id, struct message_row *out)
{
    memset(out, 0, sizeof(*out));
    struct sql_stmt *st = sql_prepare(s, "SELECT sender, received_ms, size, dsn_ret, dsn_envid"
                                         " FROM messages WHERE id = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, message_id);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        const char *sender = sql_col_text(st, 0);
        out->received_ms = sql_col_i64(st, 1);
        out->size = sql_col_i64(st, 2);
        out->ret = (int)sql_col_i64(st, 3);
        const char *envid = sql_col_text(st, 4);
        out->sender = strdup(sender != NULL ? sender : "");
        out->envid = envid != NULL ? strdup(envid) : NULL;
        if (out->sender == NULL || (envid != NULL && out->envid == NULL))
            status = fail_text(s, STORE_ERR, "notice: out of memory");
    } else if (rc == SQL_DONE) {
        status = fail_text(s, STORE_NOT_FOUND, "notice: the original message is gone");
    }
    int end = store_rows_end(s, st, rc, "notice: read message");
    if (status != STORE_OK || end != STORE_OK) {
        free(out->sender);
        free(out->envid);
        memset(out, 0, sizeof(*out));
    }
    return status != STORE_OK ? status : end;
}

/* Builds the notice for n->rcpts of message m and stores it for the sender by route. */
static int notice_build_store(struct store *s, struct store_notice *n, const struct message_row *m,
                              int64_t user_id)
{
    /* RFC 3461 4.3: only a failure returns the whole message, and only when asked to. */
    bool full = n->action == DSN_ACTION_FAILED && m->ret == SMTP_DSN_RET_FULL &&
                m->size <= DSN_RETURN_FULL_MAX_BYTES;
    unsigned char *orig = NULL;
    size_t orig_len = 0;
    int status = read_body(s, n->message_id,
                           full ? DSN_RETURN_FULL_MAX_BYTES : DSN_ORIG_HEADERS_MAX_BYTES + 1, &orig,
                           &orig_len);
    unsigned char *dsn = NULL;
    size_t dsn_len = 0;
    if (status == STORE_OK) {
        struct dsn_info info = {
            .hostname = n->hostname,
            .sender = m->sender,
            .arrival_ms = m->received_ms,
            .now_ms = n->now_ms,
            .return_path = n->route_out == STORE_BOUNCE_LOCAL,
            .rcpts = n->rcpts,
            .n_rcpts = n->n,
            .action = n->action,
            .envid = m->envid,
            .return_full = full,
        };
        int rc = dsn_build(&info, orig, orig_len, &dsn, &dsn_len);
        if (rc != DSN_OK) {
            snprintf(s->errmsg, sizeof(s->errmsg), "notice: building it failed (%s)",
                     dsn_strerror(rc));
            status = STORE_ERR;
        }
    }
    if (status == STORE_OK) {
        const char *remote[1] = {m->sender};
        struct store_delivery d = {
            .sender = "", /* the null sender: a notice is never answered (RFC 5321 6.1) */
            .body = dsn,
            .body_len = dsn_len,
            .local_user_ids = &user_id,
            .n_local = n->route_out == STORE_BOUNCE_LOCAL ? 1 : 0,
            .remote_rcpts = remote,
            .n_remote = n->route_out == STORE_BOUNCE_QUEUED ? 1 : 0,
            .received_ms = n->now_ms,
        };
        status = store_deliver(s, &d);
        if (status == STORE_OK)
            n->notice_message_id_out = d.message_id_out;
    }
    free(dsn);
    free(orig);
    return status;
}

int store_notice(struct store *s, struct store_notice *n)
{
    n->route_out = STORE_BOUNCE_NONE;
    n->notice_message_id_out = 0;
    if (n->n == 0 || n->rcpts == NULL || n->hostname == NULL)
        return fail_text(s, STORE_ERR, "notice: no recipients or hostname");
    struct message_row m;
    int status = read_message(s, n->message_id, &m);
    if (status != STORE_OK)
        return status;
    if (store_sp_begin(s, SP_NAME) != STORE_OK) {
        free(m.sender);
        free(m.envid);
        return STORE_ERR;
    }
    int64_t user_id = 0;
    enum store_bounce_route route = STORE_BOUNCE_NONE;
    status = route_bounce(s, m.sender, &route, &user_id);
    n->route_out = route;
    if (status == STORE_OK && (route == STORE_BOUNCE_LOCAL || route == STORE_BOUNCE_QUEUED))
        status = notice_build_store(s, n, &m, user_id);
    if (status == STORE_OK)
        status = store_sp_release(s, SP_NAME);
    if (status != STORE_OK) {
        (void)store_sp_undo(s, SP_NAME);
        n->route_out = STORE_BOUNCE_NONE;
        n->notice_message_id_out = 0;
    }
    free(m.sender);
    free(m.envid);
    return status;
}

/* RFC 3461 4.1: NOTIFY given without FAILURE (NEVER included) asks for no failure notice; no
 * NOTIFY at all counts as FAILURE,DELAY. */
static bool wants(unsigned notify, unsigned bit)
{
    return notify == 0 ? (bit & (SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY)) != 0
                       : (notify & bit) != 0;
}

int store_queue_delay_notice(struct store *s, int64_t id, int64_t now_ms, int64_t delay_ms,
                             const char *hostname, const struct dsn_recipient *why, bool *sent_out)
{
    *sent_out = false;
    struct entry_row e;
    int status = read_entry(s, id, &e);
    if (status != STORE_OK)
        return status;
    if (delay_ms <= 0 || e.delay_notified || !wants(e.notify, SMTP_NOTIFY_DELAY) ||
        e.sender[0] == '\0' || !store_queue_is_expired(e.created_ms, now_ms, delay_ms)) {
        entry_row_free(&e);
        return STORE_OK;
    }
    if (store_sp_begin(s, SP_NAME) != STORE_OK) {
        entry_row_free(&e);
        return STORE_ERR;
    }
    struct dsn_recipient r = why != NULL ? *why : (struct dsn_recipient){0};
    r.address = e.recipient;
    r.orcpt = e.orcpt;
    r.expired = false;
    struct store_notice n = {
        .hostname = hostname,
        .now_ms = now_ms,
        .message_id = e.message_id,
        .action = DSN_ACTION_DELAYED,
        .rcpts = &r,
        .n = 1,
    };
    status = store_notice(s, &n);
    if (status == STORE_OK) {
        /* Marked whether or not the notice could be routed: it is tried once (RFC 3461 asks
         * for one delay notice, not one per attempt). */
        struct sql_stmt *st = sql_prepare(s, "UPDATE queue SET delay_notified = 1 WHERE id = ?1");
        status = st == NULL ? STORE_ERR : STORE_OK;
        if (st != NULL) {
            sql_bind_i64(st, 1, id);
            status = store_step_done(s, st, "mark delay notice");
        }
    }
    if (status == STORE_OK)
        status = store_sp_release(s, SP_NAME);
    if (status != STORE_OK)
        (void)store_sp_undo(s, SP_NAME);
    else
        *sent_out = n.notice_message_id_out != 0;
    entry_row_free(&e);
    return status;
}

/* Whether entry id is still node's to settle (QUEUE_SETTLED_BY): STORE_OK with the row locked
 * to the end of the transaction, or STORE_NOT_FOUND when it is gone or another node's now. The
 * UPDATE changes nothing: it is the portable way to test a row and lock it in one statement, so
 * that on PostgreSQL a takeover that commits first is seen, and one that comes later waits for
 * this transaction and then finds the row gone. */
static int hold_entry(struct store *s, int64_t id, const char *node)
{
    struct sql_stmt *st = sql_prepare(s, "UPDATE queue SET claimed_by = claimed_by WHERE id = ?1"
                                         " AND " QUEUE_SETTLED_BY("?2"));
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, id);
    sql_bind_text(st, 2, node);
    return store_step_changed(s, st, "fail: hold queue entry");
}

int store_queue_fail(struct store *s, struct store_queue_failure *f)
{
    f->route_out = STORE_BOUNCE_NONE;
    f->bounce_message_id_out = 0;
    f->removed_out = 0;
    if (f->n == 0 || f->ids == NULL || f->rcpts == NULL || f->hostname == NULL || f->node == NULL)
        return fail_text(s, STORE_ERR, "fail: no entries, recipients, hostname or node");
    bool *keep = calloc(f->n, sizeof(*keep));
    struct dsn_recipient *rcpts = calloc(f->n, sizeof(*rcpts));
    char **orcpts = calloc(f->n, sizeof(*orcpts));
    if (keep == NULL || rcpts == NULL || orcpts == NULL) {
        free(keep);
        free(rcpts);
        free(orcpts);
        return fail_text(s, STORE_ERR, "fail: out of memory");
    }
    if (store_sp_begin(s, SP_NAME) != STORE_OK) {
        free(keep);
        free(rcpts);
        free(orcpts);
        return STORE_ERR;
    }
    int status = STORE_OK;
    size_t n_keep = 0, n_notice = 0;
    int64_t message_id = 0;
    bool null_sender = false;
    for (size_t i = 0; status == STORE_OK && i < f->n; i++) {
        struct entry_row e;
        int rc = hold_entry(s, f->ids[i], f->node);
        if (rc == STORE_OK)
            rc = read_entry(s, f->ids[i], &e);
        if (rc == STORE_NOT_FOUND)
            continue; /* dropped meanwhile, or another node's: not bounced here */
        if (rc != STORE_OK) {
            status = rc;
            break;
        }
        if (n_keep == 0) {
            message_id = e.message_id;
            null_sender = e.sender[0] == '\0';
        } else if (e.message_id != message_id) {
            entry_row_free(&e);
            status = fail_text(s, STORE_ERR, "fail: entries of more than one message");
            break;
        }
        keep[i] = true;
        n_keep++;
        if (wants(e.notify, SMTP_NOTIFY_FAILURE)) {
            rcpts[n_notice] = f->rcpts[i];
            rcpts[n_notice].orcpt = e.orcpt;
            orcpts[n_notice++] = e.orcpt; /* owned here from now */
            e.orcpt = NULL;
        }
        entry_row_free(&e);
    }
    if (status == STORE_OK && n_keep == 0)
        status = fail_text(s, STORE_NOT_FOUND, "fail: none of the entries is left");

    if (status == STORE_OK && null_sender) {
        f->route_out = STORE_BOUNCE_NULL_SENDER; /* a bounce is never bounced */
    } else if (status == STORE_OK && n_notice == 0) {
        f->route_out = STORE_BOUNCE_NOT_ASKED;
    } else if (status == STORE_OK) {
        struct store_notice n = {
            .hostname = f->hostname,
            .now_ms = f->now_ms,
            .message_id = message_id,
            .action = DSN_ACTION_FAILED,
            .rcpts = rcpts,
            .n = n_notice,
        };
        status = store_notice(s, &n);
        f->route_out = n.route_out;
        f->bounce_message_id_out = n.notice_message_id_out;
    }

    /* Deleted after the bounce is stored: the body the bounce quotes goes with the last row. */
    size_t removed = 0;
    if (status == STORE_OK) {
        struct sql_stmt *st = sql_prepare(s, "DELETE FROM queue WHERE id = ?1");
        if (st == NULL)
            status = STORE_ERR;
        for (size_t i = 0; status == STORE_OK && i < f->n; i++) {
            if (!keep[i])
                continue;
            sql_bind_i64(st, 1, f->ids[i]);
            status = store_step_done(s, st, "fail: delete queue entry");
            if (status == STORE_OK)
                removed += (size_t)sql_changes(st);
        }
    }
    if (status == STORE_OK)
        status = store_sp_release(s, SP_NAME);
    if (status != STORE_OK) {
        (void)store_sp_undo(s, SP_NAME);
        f->route_out = STORE_BOUNCE_NONE;
        f->bounce_message_id_out = 0;
    } else {
        f->removed_out = removed;
    }
    for (size_t i = 0; i < n_notice; i++)
        free(orcpts[i]);
    free(orcpts);
    free(rcpts);
    free(keep);
    return status;
}
