/*
 * queue.c - the outbound queue: one row per remote recipient of a stored message. The admin views
 * (store.h: list, drop) and the runner's side (queue.h: claims, results, bounces, flush, reading a
 * queued body). See queue.h for the claim and crash-safety rules.
 *
 * What it does not do: SMTP, DNS, timers or concurrency limits (server/outbound/queue_runner.c),
 * permanent failures and delivery status notifications (storage/queue_notice.c), or the text of
 * a notice (common/pure/dsn.c).
 */
#include "storage/queue.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/store_internal.h"

/* The claims array starts with room for this many entries and doubles. */
#define QUEUE_CLAIMS_FIRST 16
/* What release_stale records as the error of an attempt that died with the process. */
#define QUEUE_INTERRUPTED_TEXT "attempt interrupted: postern stopped before it finished"

/* ---- the retry schedule ---- */

#define MINUTE_MS ((int64_t)60 * 1000)

int64_t store_queue_backoff_ms(int64_t attempts)
{
    /* Quick retries first (greylisting usually lets the second or third attempt through after
     * 1-15 minutes), then slower, capped at 4h so a server that comes back is not left waiting
     * for days. */
    static const int64_t schedule_ms[] = {
        1 * MINUTE_MS,  5 * MINUTE_MS,   15 * MINUTE_MS,  30 * MINUTE_MS,
        60 * MINUTE_MS, 120 * MINUTE_MS, 240 * MINUTE_MS,
    };
    const size_t n = sizeof(schedule_ms) / sizeof(schedule_ms[0]);
    if (attempts < 1)
        return schedule_ms[0];
    if ((uint64_t)attempts > n)
        return schedule_ms[n - 1];
    return schedule_ms[attempts - 1];
}

bool store_queue_is_expired(int64_t created_ms, int64_t now_ms, int64_t max_age_ms)
{
    /* created + max_age <= now, written so that neither side can overflow. */
    if (max_age_ms <= 0)
        return true;
    if (now_ms < created_ms)
        return false; /* the clock went back: not expired by a negative age */
    /* The difference of two int64 values always fits a uint64. */
    return (uint64_t)now_ms - (uint64_t)created_ms >= (uint64_t)max_age_ms;
}

/* Each call below is atomic inside whatever the caller has open: its own savepoint, named after
 * this file (storage/sql.h: store_sp_begin). */
#define SP_NAME "queue"

static int fail_text(struct store *s, int status, const char *what)
{
    snprintf(s->errmsg, sizeof(s->errmsg), "%s", what);
    return status;
}

/* Runs st (its ?1 bound to each id in turn; any other parameters already bound) once per id,
 * adding up the rows it changed. */
static int each_id(struct store *s, struct sql_stmt *st, const int64_t *ids, size_t n,
                   const char *what, size_t *changed_out)
{
    size_t changed = 0;
    int status = STORE_OK;
    for (size_t i = 0; status == STORE_OK && i < n; i++) {
        sql_bind_i64(st, 1, ids[i]);
        status = store_step_done(s, st, what);
        if (status == STORE_OK)
            changed += (size_t)sql_changes(st);
    }
    if (changed_out != NULL)
        *changed_out = changed;
    return status;
}

/* ---- admin views ---- */

int store_queue_count(struct store *s, int64_t *count_out)
{
    /* count(*) walks the smallest index (queue_due), never the rows. */
    struct sql_stmt *st = sql_prepare(s, "SELECT count(*) FROM queue");
    if (st == NULL)
        return STORE_ERR;
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW)
        *count_out = sql_col_i64(st, 0);
    else
        status = store_fail(s, "count queue");
    sql_reset(st);
    return status;
}

int store_queue_list(struct store *s, store_queue_fn fn, void *ctx)
{
    struct sql_stmt *st = sql_prepare(
        s, "SELECT q.id, q.sender, q.recipient, q.created_ms, q.next_attempt_ms, q.attempts,"
           " q.last_error, m.quarantine FROM queue q JOIN messages m ON m.id = q.message_id"
           " ORDER BY q.next_attempt_ms, q.id");
    if (st == NULL)
        return STORE_ERR;
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct store_queue_entry q = {
            .id = sql_col_i64(st, 0),
            .sender = sql_col_text(st, 1),
            .recipient = sql_col_text(st, 2),
            .created_ms = sql_col_i64(st, 3),
            .next_attempt_ms = sql_col_i64(st, 4),
            .attempts = sql_col_i64(st, 5),
            .last_error = sql_col_text(st, 6),
            .quarantine = sql_col_text(st, 7),
        };
        if (fn(ctx, &q) != 0)
            break;
    }
    return store_rows_end(s, st, rc, "list queue");
}

int store_queue_drop(struct store *s, int64_t id)
{
    /* The queue_release trigger drops the message body if nothing else refers to it. */
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM queue WHERE id = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, id);
    return store_step_changed(s, st, "drop queue entry");
}

/* ---- claiming ---- */

void store_queue_claims_free(struct store_queue_claims *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].text);
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

/* A JSON array of the strings (for json_each in the claim's domain filter); malloc'd, NULL when
 * out of memory. */
static char *json_string_array(const char *const *v, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(v[i]);
        if (len > (SIZE_MAX - cap) / 6 - 4)
            return NULL;
        cap += 6 * len + 3; /* worst case: every octet as \u00XX, quotes, comma */
    }
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t k = 0;
    out[k++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            out[k++] = ',';
        out[k++] = '"';
        for (const unsigned char *p = (const unsigned char *)v[i]; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\') {
                out[k++] = '\\';
                out[k++] = (char)*p;
            } else if (*p < 0x20) {
                k += (size_t)snprintf(out + k, cap - k, "\\u%04x", *p);
            } else {
                out[k++] = (char)*p;
            }
        }
        out[k++] = '"';
    }
    out[k++] = ']';
    out[k] = '\0';
    return out;
}

/* Copies the five strings of a claim into one allocation. */
static int claim_fill(struct store_queue_claim *c, const char *sender, const char *rcpt,
                      const char *domain, const char *orcpt, const char *taken_from)
{
    const char *from[] = {sender, rcpt, domain, orcpt, taken_from};
    const char **to[] = {&c->sender, &c->recipient, &c->domain, &c->orcpt, &c->taken_from};
    size_t len[5], total = 0;
    for (size_t i = 0; i < 5; i++) {
        len[i] = strlen(from[i]);
        total += len[i] + 1;
    }
    c->text = malloc(total);
    if (c->text == NULL)
        return -1;
    char *p = c->text;
    for (size_t i = 0; i < 5; i++) {
        memcpy(p, from[i], len[i] + 1);
        *to[i] = p;
        p += len[i] + 1;
    }
    return 0;
}

/* Appends one row of the claim query to out. */
static int claims_push(struct store *s, struct store_queue_claims *out, size_t *cap,
                       struct sql_stmt *st)
{
    if (out->n == *cap) {
        size_t ncap = *cap == 0 ? QUEUE_CLAIMS_FIRST : *cap * 2;
        struct store_queue_claim *nv =
            ncap > SIZE_MAX / sizeof(*nv) ? NULL : realloc(out->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return fail_text(s, STORE_ERR, "claim queue entries: out of memory");
        out->v = nv;
        *cap = ncap;
    }
    struct store_queue_claim *c = &out->v[out->n];
    memset(c, 0, sizeof(*c));
    c->id = sql_col_i64(st, 0);
    c->message_id = sql_col_i64(st, 1);
    const char *sender = sql_col_text(st, 2);
    const char *rcpt = sql_col_text(st, 3);
    const char *domain = sql_col_text(st, 4);
    c->created_ms = sql_col_i64(st, 5);
    c->attempts = sql_col_i64(st, 6);
    c->notify = (unsigned)sql_col_i64(st, 7);
    const char *orcpt = sql_col_text(st, 8);
    /* A claim that had not ended: the attempt it stood for counts (see claim_due). */
    c->taken_over = sql_col_i64(st, 9) != 0;
    const char *from = c->taken_over ? sql_col_text(st, 10) : "";
    if (c->taken_over && c->attempts < INT64_MAX)
        c->attempts++;
    if (claim_fill(c, sender != NULL ? sender : "", rcpt != NULL ? rcpt : "",
                   domain != NULL ? domain : "", orcpt != NULL ? orcpt : "",
                   from != NULL ? from : "") != 0)
        return fail_text(s, STORE_ERR, "claim queue entries: out of memory");
    out->n++;
    return STORE_OK;
}

/* Whether a row of table t (a name and a dot) is free to claim at ?1 (now): not claimed (never,
 * or its claim ended), claimed at or before ?2 (the claim's own lease ran out), or claimed by a
 * node that is not alive: no nodes row under its name (it left, or was removed), or one whose
 * lease ended at or before now (it died, or stalled past its lease: queue.h, "Several nodes").
 * A claim without a node (made before schema 12) keeps the time rule alone. The first test
 * keeps the common case (an unclaimed row) free of the nodes lookup; a claimed row of the due
 * range (the few in flight) costs one probe of the nodes table's primary key. */
#define QUEUE_CLAIMABLE(t)                                                                         \
    "(" t "claimed_ms IS NULL OR " t "claimed_ms <= ?2 OR (" t "claimed_by IS NOT NULL"            \
    " AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = " t "claimed_by"                        \
    " AND n.expires_ms > ?1)))"

/* The rows that claim_due hands out; see queue.h for which. ?1 now, ?2 the newest claim time that
 * counts as expired, ?3 the limit, ?4 a JSON array of domains to skip. `pick` is the groups of
 * the first ?3 due entries in due order (the queue_due index); the outer query completes each
 * group with its other due entries (the queue_message index). The last two columns say whether
 * the row was still claimed (a claim taken over) and by whom. Not portable: standard SQL has no
 * way to pass a list as one parameter, so each backend has its own text, the same but for that
 * (SQLite's json_each, PostgreSQL's json_array_elements_text) and, on PostgreSQL, FOR UPDATE OF q
 * SKIP LOCKED: several nodes claim at once there, and a row another node is claiming right now
 * is left to it rather than waited for (its lease is written before that node commits). The
 * PostgreSQL text changes nothing else, and both take the claim rule from QUEUE_CLAIMABLE, so
 * that a change to the claim is made to both alike. */
static const char claim_sql[] =
    "WITH pick AS (SELECT DISTINCT message_id, domain FROM"
    "  (SELECT message_id, domain FROM queue"
    "   WHERE next_attempt_ms <= ?1 AND " QUEUE_CLAIMABLE(
        "queue.") "     AND domain NOT IN (SELECT value FROM json_each(?4))"
                  "   ORDER BY next_attempt_ms, id LIMIT ?3))"
                  " SELECT q.id, q.message_id, q.sender, q.recipient, q.domain, q.created_ms, "
                  "q.attempts,"
                  " q.dsn_notify, q.dsn_orcpt, q.claimed_ms IS NOT NULL, q.claimed_by"
                  " FROM queue q JOIN pick p ON q.message_id = p.message_id AND q.domain = p.domain"
                  " WHERE q.next_attempt_ms <= ?1 AND " QUEUE_CLAIMABLE(
                      "q.") " ORDER BY q.domain, q.message_id, q.id LIMIT ?3";
static const char claim_sql_pg[] =
    "WITH pick AS (SELECT DISTINCT message_id, domain FROM"
    "  (SELECT message_id, domain FROM queue"
    "   WHERE next_attempt_ms <= ?1 AND " QUEUE_CLAIMABLE(
        "queue.") "     AND domain NOT IN (SELECT json_array_elements_text(CAST(?4 AS json)))"
                  "   ORDER BY next_attempt_ms, id LIMIT ?3) AS due)"
                  " SELECT q.id, q.message_id, q.sender, q.recipient, q.domain, q.created_ms, "
                  "q.attempts,"
                  " q.dsn_notify, q.dsn_orcpt, q.claimed_ms IS NOT NULL, q.claimed_by"
                  " FROM queue q JOIN pick p ON q.message_id = p.message_id AND q.domain = p.domain"
                  " WHERE q.next_attempt_ms <= ?1 AND " QUEUE_CLAIMABLE(
                      "q.") " ORDER BY q.domain, q.message_id, q.id LIMIT ?3 FOR UPDATE OF q SKIP "
                            "LOCKED";

/* Writes one claim. A row still claimed is a claim taken over: the attempt it stood for never
 * ended here, so it counts and says so in last_error, as store_queue_release_stale does for a
 * node's own claims at its start (an entry that kills every node trying it is not retried at
 * full speed unseen). Every expression reads the row as it was before this UPDATE. */
static const char claim_write_sql[] =
    "UPDATE queue SET claimed_ms = ?2, claimed_by = ?3,"
    " attempts = CASE WHEN claimed_ms IS NULL THEN attempts ELSE attempts + 1 END,"
    " last_error = CASE WHEN claimed_ms IS NULL THEN last_error"
    "  ELSE 'attempt interrupted: node ' || COALESCE(claimed_by, '(none)') ||"
    "  ' did not finish it; node ' || ?3 || ' took its claim over' END"
    " WHERE id = ?1";

int store_queue_claim_due(struct store *s, const char *node, int64_t now_ms, int64_t lease_ms,
                          size_t limit, const char *const *skip_domains, size_t n_skip,
                          struct store_queue_claims *out)
{
    store_queue_claims_free(out);
    if (limit == 0)
        return STORE_OK;
    if (n_skip > 0 && skip_domains == NULL)
        return fail_text(s, STORE_ERR, "claim queue entries: no skip list");
    char *skip = json_string_array(skip_domains, n_skip);
    if (skip == NULL)
        return fail_text(s, STORE_ERR, "claim queue entries: out of memory");
    if (lease_ms < 0)
        lease_ms = 0;
    int64_t stale_ms = now_ms >= INT64_MIN + lease_ms ? now_ms - lease_ms : INT64_MIN;
    if (store_sp_begin(s, SP_NAME) != STORE_OK) {
        free(skip);
        return STORE_ERR;
    }
    int status = STORE_OK;
    struct sql_stmt *st =
        sql_prepare(s, s->backend == STORE_BACKEND_POSTGRES ? claim_sql_pg : claim_sql);
    if (st == NULL)
        status = STORE_ERR;
    if (status == STORE_OK) {
        sql_bind_i64(st, 1, now_ms);
        sql_bind_i64(st, 2, stale_ms);
        sql_bind_i64(st, 3, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
        sql_bind_text(st, 4, skip);
        size_t cap = 0;
        int rc;
        while ((rc = sql_step(st)) == SQL_ROW) {
            status = claims_push(s, out, &cap, st);
            if (status != STORE_OK)
                break;
        }
        int end = store_rows_end(s, st, rc, "claim queue entries");
        if (status == STORE_OK)
            status = end;
    }
    free(skip);
    if (status == STORE_OK && out->n > 0) {
        st = sql_prepare(s, claim_write_sql);
        if (st == NULL)
            status = STORE_ERR;
        for (size_t i = 0; status == STORE_OK && i < out->n; i++) {
            sql_bind_i64(st, 1, out->v[i].id);
            sql_bind_i64(st, 2, now_ms);
            sql_bind_text(st, 3, node);
            status = store_step_done(s, st, "claim queue entry");
        }
    }
    if (status == STORE_OK)
        status = store_sp_release(s, SP_NAME);
    if (status != STORE_OK) {
        (void)store_sp_undo(s, SP_NAME);
        store_queue_claims_free(out);
    }
    return status;
}

int store_queue_release(struct store *s, const char *node, const int64_t *ids, size_t n)
{
    if (n == 0)
        return STORE_OK;
    if (ids == NULL || node == NULL)
        return fail_text(s, STORE_ERR, "release queue entries: no id array or node");
    /* Another node's claim (this one stalled and it was taken over) is not ours to end. */
    struct sql_stmt *st = sql_prepare(s, "UPDATE queue SET claimed_ms = NULL WHERE id = ?1"
                                         " AND " QUEUE_SETTLED_BY("?2"));
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 2, node);
    if (store_sp_begin(s, SP_NAME) != STORE_OK)
        return STORE_ERR;
    int status = each_id(s, st, ids, n, "release queue entry", NULL);
    if (status == STORE_OK)
        status = store_sp_release(s, SP_NAME);
    if (status != STORE_OK)
        (void)store_sp_undo(s, SP_NAME);
    return status;
}

int store_queue_release_stale(struct store *s, const char *node, int64_t now_ms,
                              size_t *released_out)
{
    if (released_out != NULL)
        *released_out = 0;
    /* The attempt counts (it was made, and a message that crashes the server each time must not
     * be retried at full speed forever without anyone seeing it in `queue list`), but the entry
     * is due at once: the restart itself is no reason to wait. */
    struct sql_stmt *st = sql_prepare(
        s, "UPDATE queue SET claimed_ms = NULL, attempts = attempts + 1,"
           " last_error = '" QUEUE_INTERRUPTED_TEXT "',"
           " next_attempt_ms = CASE WHEN next_attempt_ms < ?1 THEN next_attempt_ms ELSE ?1 END"
           " WHERE claimed_ms IS NOT NULL AND claimed_ms <= ?1"
           "  AND (claimed_by = ?2 OR claimed_by IS NULL)");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, now_ms);
    sql_bind_text(st, 2, node);
    int status = store_step_done(s, st, "release stale claims");
    if (status == STORE_OK && released_out != NULL)
        *released_out = (size_t)sql_changes(st);
    return status;
}

/* ---- results ---- */

int store_queue_delivered(struct store *s, const int64_t *ids, size_t n, size_t *deleted_out)
{
    if (deleted_out != NULL)
        *deleted_out = 0;
    if (n == 0)
        return STORE_OK;
    if (ids == NULL)
        return fail_text(s, STORE_ERR, "delivered: no id array");
    /* The queue_release trigger drops the body with its last reference. */
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM queue WHERE id = ?1");
    if (st == NULL)
        return STORE_ERR;
    if (store_sp_begin(s, SP_NAME) != STORE_OK)
        return STORE_ERR;
    size_t deleted = 0;
    int status = each_id(s, st, ids, n, "delete delivered queue entry", &deleted);
    if (status == STORE_OK)
        status = store_sp_release(s, SP_NAME);
    if (status != STORE_OK) {
        (void)store_sp_undo(s, SP_NAME);
        return status;
    }
    if (deleted_out != NULL)
        *deleted_out = deleted;
    return STORE_OK;
}

int store_queue_defer(struct store *s, const char *node, int64_t id, int64_t now_ms,
                      int64_t max_age_ms, const char *error, bool *expired_out)
{
    *expired_out = false;
    if (node == NULL)
        return fail_text(s, STORE_ERR, "defer: no node");
    struct sql_stmt *st = sql_prepare(s, "SELECT created_ms, attempts FROM queue WHERE id = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, id);
    int rc = sql_step(st);
    int64_t created_ms = rc == SQL_ROW ? sql_col_i64(st, 0) : 0;
    int64_t attempts = rc == SQL_ROW ? sql_col_i64(st, 1) : 0;
    int status = store_rows_end(s, st, rc, "defer: read queue entry");
    if (status != STORE_OK)
        return status;
    if (rc == SQL_DONE) {
        snprintf(s->errmsg, sizeof(s->errmsg), "defer: no queue entry %lld", (long long)id);
        return STORE_NOT_FOUND;
    }
    if (attempts < INT64_MAX)
        attempts++;
    bool expired = store_queue_is_expired(created_ms, now_ms, max_age_ms);
    int64_t wait_ms = store_queue_backoff_ms(attempts);
    int64_t next_ms = now_ms <= INT64_MAX - wait_ms ? now_ms + wait_ms : INT64_MAX;
    if (error == NULL)
        error = "";
    /* Cut to its cap in a copy: sql.h binds NUL-terminated text. */
    char error_text[STORE_QUEUE_ERROR_MAX_BYTES + 1];
    size_t elen = strlen(error);
    if (elen > STORE_QUEUE_ERROR_MAX_BYTES)
        elen = STORE_QUEUE_ERROR_MAX_BYTES;
    memcpy(error_text, error, elen);
    error_text[elen] = '\0';

    /* An expired entry stays claimed: the caller bounces it next (queue.h). The condition on
     * the node is in this one statement, so that a takeover that commits between the read
     * above and here (PostgreSQL) is seen: the UPDATE waits for that row and then finds it
     * another node's. */
    st = sql_prepare(s, "UPDATE queue SET attempts = ?2, last_error = ?3, next_attempt_ms = ?4,"
                        " claimed_ms = CASE WHEN ?5 = 1 THEN claimed_ms ELSE NULL END"
                        " WHERE id = ?1 AND " QUEUE_SETTLED_BY("?6"));
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, id);
    sql_bind_i64(st, 2, attempts);
    sql_bind_text(st, 3, error_text);
    sql_bind_i64(st, 4, next_ms);
    sql_bind_i64(st, 5, expired ? 1 : 0);
    sql_bind_text(st, 6, node);
    status = store_step_done(s, st, "defer queue entry");
    if (status != STORE_OK)
        return status;
    if (sql_changes(st) == 0) {
        snprintf(s->errmsg, sizeof(s->errmsg),
                 "defer: queue entry %lld is claimed by another node now", (long long)id);
        return STORE_NOT_FOUND;
    }
    *expired_out = expired;
    return STORE_OK;
}

/* ---- flush ---- */

int store_queue_flush(struct store *s, int64_t now_ms, size_t *due_out)
{
    if (due_out != NULL)
        *due_out = 0;
    struct sql_stmt *st = sql_prepare(s, "UPDATE queue SET next_attempt_ms = ?1"
                                         " WHERE next_attempt_ms > ?1 AND claimed_ms IS NULL");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, now_ms);
    int status = store_step_done(s, st, "flush queue");
    if (status != STORE_OK)
        return status;
    /* Counted before the announcement: a runner that hears it claims at once, and the count
     * would miss what it took. */
    if (due_out != NULL) {
        st = sql_prepare(s, "SELECT count(*) FROM queue WHERE next_attempt_ms <= ?1"
                            " AND claimed_ms IS NULL");
        if (st == NULL)
            return STORE_ERR;
        sql_bind_i64(st, 1, now_ms);
        int rc = sql_step(st);
        if (rc == SQL_ROW)
            *due_out = (size_t)sql_col_i64(st, 0);
        status = store_rows_end(s, st, rc, "count due queue entries");
        if (status != STORE_OK)
            return status;
    }
    /* Every node's runner, not only the one that rescans first (queue.h, Flush). */
    return store_announce(s, STORE_CHANNEL_QUEUE);
}

int store_queue_next_due(struct store *s, int64_t *due_ms_out)
{
    *due_ms_out = INT64_MAX;
    /* The queue_due index gives the order; claimed rows (a few in flight) are stepped over. */
    struct sql_stmt *st =
        sql_prepare(s, "SELECT next_attempt_ms FROM queue WHERE claimed_ms IS NULL"
                       " ORDER BY next_attempt_ms LIMIT 1");
    if (st == NULL)
        return STORE_ERR;
    int rc = sql_step(st);
    if (rc == SQL_ROW)
        *due_ms_out = sql_col_i64(st, 0);
    return store_rows_end(s, st, rc, "next due queue entry");
}

/* ---- reading a queued body ---- */

int store_queue_body_open(struct store *s, int64_t message_id, int64_t hold_ms,
                          struct store_body_reader **reader_out, int64_t *size_out)
{
    return store_body_reader_open(s,
                                  "SELECT id, size FROM messages WHERE id = ?1"
                                  " AND EXISTS (SELECT 1 FROM queue WHERE message_id = ?1)",
                                  message_id, 0, "queued message", NULL, hold_ms, reader_out,
                                  size_out);
}

int store_queue_message_facts(struct store *s, int64_t message_id, struct store_message_facts *out)
{
    *out = (struct store_message_facts){0};
    struct sql_stmt *st = sql_prepare(
        s, "SELECT m.size, f.eightbit, f.return_path_bytes, f.smtputf8, m.dsn_ret, m.dsn_envid"
           " FROM messages m"
           " LEFT JOIN message_facts f ON f.message_id = m.id WHERE m.id = ?1"
           " AND EXISTS (SELECT 1 FROM queue WHERE message_id = ?1)");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, message_id);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        out->size_bytes = sql_col_i64(st, 0);
        out->known = !sql_col_null(st, 1);
        out->eightbit = out->known && sql_col_i64(st, 1) != 0;
        out->return_path_bytes = out->known ? sql_col_i64(st, 2) : 0;
        out->smtputf8 = out->known && sql_col_i64(st, 3) != 0;
        out->dsn_ret = (int)sql_col_i64(st, 4);
        const char *envid = sql_col_text(st, 5);
        snprintf(out->dsn_envid, sizeof(out->dsn_envid), "%s", envid != NULL ? envid : "");
        if (out->return_path_bytes < 0 || out->return_path_bytes > out->size_bytes) {
            snprintf(s->errmsg, sizeof(s->errmsg), "message %lld: bad facts",
                     (long long)message_id);
            status = STORE_ERR;
        }
    } else if (rc == SQL_DONE) {
        snprintf(s->errmsg, sizeof(s->errmsg), "queued message %lld is gone",
                 (long long)message_id);
        status = STORE_NOT_FOUND;
    } else {
        status = store_fail(s, "read message facts");
    }
    sql_reset(st);
    return status;
}
