/*
 * pg_store.c - a PostgreSQL connection as a store: opening it from a connection string (the
 * schema created or migrated by pg_schema.c), storage/sql.h on pg_stmt.c's statements,
 * transactions, named savepoints with SQLite's meaning, and closing. The message bodies are
 * pg_body.c's.
 *
 * A statement of the table files is the same text on both backends: pg_stmt.c rewrites ?N to $N
 * and prepares it on the server once per session. Errors keep the store's codes (pg_conn.c maps
 * SQLSTATEs), and the store's error text is the connection's, copied by store_fail.
 *
 * A lost connection (the server restarted, the network failed) makes every call fail at once.
 * It is reconnected at the next store_begin, or at the next statement run outside any
 * transaction: never inside one, where the statements before the loss are gone with it and only
 * the caller (the writer's batch) knows what to do again.
 *
 * What it does not do: hold SQL of the table files, or run on an event loop: every call here
 * waits for the server (storage/postgres/pg_conn.h says where they run).
 */
#include "storage/postgres/pg_store_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "storage/postgres/pg_schema.h"

int pg_store_failed(struct pg_store *ps, const char *what, int rc)
{
    snprintf(ps->base.errmsg, sizeof(ps->base.errmsg), "%s: %s", what, pg_conn_errmsg(ps->conn));
    return rc;
}

/* When a connection of this process last (re)connected, monotonic ms: the server is back then,
 * and another connection still waiting out its backoff (each reader thread has its own) tries
 * at once instead of failing its jobs for up to PG_RECONNECT_MAX_MS more. */
static _Atomic int64_t g_reconnected_ms;

/*
 * Reconnects a lost connection when no transaction of the caller's can be lost by it. While the
 * server stays away, attempts are spaced by a backoff doubling from PG_RECONNECT_MIN_MS to
 * PG_RECONNECT_MAX_MS: a call in between fails at once without touching the network, so a
 * thread that is handed job after job (the writer, a reader) answers them with STORE_ERR quickly
 * instead of dialling the server for each, and never waits longer than one connect_timeout. The
 * wait is cut short once another connection of this process has reconnected since this one's
 * last failed attempt.
 */
static int revive(struct pg_store *ps)
{
    if (!pg_conn_is_lost(ps->conn) || ps->explicit_txn || ps->conn->n_sp > 0)
        return STORE_OK;
    int64_t now = clock_monotonic_ms();
    bool server_back =
        atomic_load_explicit(&g_reconnected_ms, memory_order_relaxed) > ps->failed_ms;
    if (ps->next_try_ms != 0 && now < ps->next_try_ms && !server_back) {
        snprintf(ps->base.errmsg, sizeof(ps->base.errmsg),
                 "reconnect: server unreachable, next attempt in %lld ms: %.300s",
                 (long long)(ps->next_try_ms - now), pg_conn_errmsg(ps->conn));
        return STORE_ERR;
    }
    if (pg_conn_reconnect(ps->conn) != STORE_OK) {
        ps->backoff_ms = ps->backoff_ms == 0 ? PG_RECONNECT_MIN_MS : ps->backoff_ms * 2;
        if (ps->backoff_ms > PG_RECONNECT_MAX_MS)
            ps->backoff_ms = PG_RECONNECT_MAX_MS;
        ps->failed_ms = clock_monotonic_ms();
        ps->next_try_ms = ps->failed_ms + ps->backoff_ms;
        char esc[PG_ERRMSG_BYTES];
        log_escape(esc, sizeof(esc), pg_conn_errmsg(ps->conn), strlen(pg_conn_errmsg(ps->conn)));
        log_warn("postgresql", 0, "event=reconnect-failed retry_ms=%lld error=%s",
                 (long long)ps->backoff_ms, esc);
        return pg_store_failed(ps, "reconnect", STORE_ERR);
    }
    log_info("postgresql", 0, "event=reconnected backend_pid=%d", pg_conn_backend_pid(ps->conn));
    ps->next_try_ms = 0;
    ps->backoff_ms = 0;
    ps->failed_ms = 0;
    atomic_store_explicit(&g_reconnected_ms, clock_monotonic_ms(), memory_order_relaxed);
    return STORE_OK;
}

/* Whether a statement that failed on its first execution may run once more on a new
 * connection: the connection was found lost, no transaction or savepoint of the caller's was on
 * it, and the statement is a plain SELECT, which changed nothing. A connection that was idle
 * while the server restarted fails its first statement this way; the read that asked is better
 * served by the server that is back than failed. A write is never run twice: it may have been
 * done before the connection went. */
static bool retry_once(const struct pg_stmt *st)
{
    const struct pg_store *ps = st->conn->owner;
    if (ps == NULL || !pg_conn_is_lost(st->conn) || ps->explicit_txn || st->conn->n_sp > 0)
        return false;
    const char *p = st->sql;
    while (*p == ' ' || *p == '\n')
        p++;
    return strncmp(p, "SELECT ", 7) == 0;
}

int pg_store_open(const char *conninfo, int version, struct store **out, char *err, size_t errlen)
{
    *out = NULL;
    struct pg_store *ps = calloc(1, sizeof(*ps));
    if (ps == NULL) {
        snprintf(err, errlen, "postgresql: out of memory");
        return STORE_ERR;
    }
    struct store *s = &ps->base;
    s->backend = STORE_BACKEND_POSTGRES;
    if (strlen(conninfo) >= sizeof(s->path)) {
        snprintf(err, errlen, "postgresql: connection string longer than %zu bytes",
                 sizeof(s->path) - 1);
        free(ps);
        return STORE_ERR;
    }
    snprintf(s->path, sizeof(s->path), "%s", conninfo);
    int status = pg_conn_open(conninfo, &ps->conn, err, errlen);
    if (status != STORE_OK) {
        free(ps);
        return status;
    }
    ps->conn->owner = ps;
    int before = 0;
    if (version > 0) {
        status = pg_schema_version(ps->conn, &before);
        if (status == STORE_OK)
            status = pg_schema_ensure(ps->conn);
    }
    if (status != STORE_OK) {
        snprintf(err, errlen, "postgresql: %s", pg_conn_errmsg(ps->conn));
        pg_store_close(s);
        return status;
    }
    s->created = version > 0 && before == 0;
    *out = s;
    return STORE_OK;
}

void pg_store_close(struct store *s)
{
    struct pg_store *ps = pg_store_of(s);
    pg_body_reset(ps);
    pg_conn_close(&ps->conn);
    free(ps);
}

/* ---- storage/sql.h ---- */

static struct pg_stmt *stmt_of(struct sql_stmt *st)
{
    return container_of(st, struct pg_stmt, base);
}

struct sql_stmt *pg_sql_prepare(struct store *s, const char *sql)
{
    struct pg_store *ps = pg_store_of(s);
    if (revive(ps) != STORE_OK)
        return NULL;
    struct pg_stmt *st = pg_prepare(ps->conn, sql);
    if (st == NULL) {
        pg_store_failed(ps, "prepare", STORE_ERR);
        return NULL;
    }
    return &st->base;
}

/* A failed bind is kept by the statement and reported by its next step (pg_conn.h). */
void pg_sql_bind_i64(struct sql_stmt *st, int idx, int64_t v)
{
    (void)pg_bind_i64(stmt_of(st), idx, v);
}

void pg_sql_bind_text(struct sql_stmt *st, int idx, const char *v)
{
    (void)pg_bind_text(stmt_of(st), idx, v, -1);
}

void pg_sql_bind_blob(struct sql_stmt *st, int idx, const void *p, size_t len)
{
    (void)pg_bind_blob(stmt_of(st), idx, p, len);
}

void pg_sql_bind_null(struct sql_stmt *st, int idx)
{
    (void)pg_bind_null(stmt_of(st), idx);
}

int pg_sql_step(struct sql_stmt *sst)
{
    struct pg_stmt *st = stmt_of(sst);
    bool first = st->res == NULL;
    int rc = pg_step(st);
    if (rc < 0 && first && retry_once(st) && revive(st->conn->owner) == STORE_OK) {
        log_info("postgresql", 0, "event=read-retried reason=connection-lost");
        rc = pg_step(st);
    }
    if (rc == PG_ROW)
        return SQL_ROW;
    if (rc == PG_DONE)
        return SQL_DONE;
    return rc;
}

int64_t pg_sql_col_i64(struct sql_stmt *st, int col)
{
    return pg_col_i64(stmt_of(st), col);
}

const char *pg_sql_col_text(struct sql_stmt *st, int col)
{
    return pg_col_text(stmt_of(st), col);
}

const void *pg_sql_col_blob(struct sql_stmt *st, int col, size_t *len_out)
{
    return pg_col_blob(stmt_of(st), col, len_out);
}

bool pg_sql_col_null(struct sql_stmt *st, int col)
{
    return pg_col_is_null(stmt_of(st), col);
}

/* The connection's count, as SQLite's sqlite3_changes: the table files ask after store_step_done,
 * which has reset the statement and dropped its own result. */
int64_t pg_sql_changes(struct sql_stmt *st)
{
    return pg_conn_changes(stmt_of(st)->conn);
}

void pg_sql_reset(struct sql_stmt *st)
{
    pg_reset(stmt_of(st));
}

/* ---- the connection ---- */

int pg_store_exec(struct store *s, const char *sql)
{
    struct pg_store *ps = pg_store_of(s);
    /* COMMIT and ROLLBACK end store_begin's transaction, whatever they return: a failed COMMIT
     * has rolled it back. */
    bool ends = strcmp(sql, "COMMIT") == 0 || strcmp(sql, "ROLLBACK") == 0;
    bool was_lost = pg_conn_is_lost(ps->conn);
    int status = pg_exec(ps->conn, sql);
    if (ends)
        ps->explicit_txn = false;
    /* A COMMIT sent on a live connection that then lost it may have committed or not: the
     * server may have flushed the WAL before the connection went. Only a connection already
     * lost before it (nothing sent) is known to have committed nothing. */
    bool unknown =
        status != STORE_OK && strcmp(sql, "COMMIT") == 0 && !was_lost && pg_conn_is_lost(ps->conn);
    if (unknown)
        s->commit_unknown = true;
    if (status != STORE_OK)
        snprintf(s->errmsg, sizeof(s->errmsg), "%.400s%s", pg_conn_errmsg(ps->conn),
                 unknown ? " [commit outcome unknown]" : "");
    return status;
}

/* NOTIFY: sent when the caller's transaction commits, or at once outside one; every node's
 * listening connection hears it (storage/postgres/pg_conn.h, pg_notify). */
int pg_store_announce(struct store *s, const char *channel)
{
    struct pg_store *ps = pg_store_of(s);
    int rc = revive(ps);
    if (rc != STORE_OK)
        return rc;
    rc = pg_notify(ps->conn, channel, "");
    return rc == STORE_OK ? STORE_OK : pg_store_failed(ps, "announce", rc);
}

const char *pg_store_errmsg(struct store *s)
{
    return pg_conn_errmsg(pg_store_of(s)->conn);
}

bool pg_store_in_transaction(struct store *s)
{
    return pg_conn_in_transaction(pg_store_of(s)->conn);
}

/* READ COMMITTED, PostgreSQL's default: each statement sees what committed before it, which is
 * what the storage code's statements expect (SQLite's writer sees the same, being the only one).
 * Rows a statement must own against other nodes are locked by that statement (the queue claim's
 * FOR UPDATE SKIP LOCKED, the message row in the release trigger). */
int pg_store_begin(struct store *s)
{
    struct pg_store *ps = pg_store_of(s);
    ps->explicit_txn = false;
    if (revive(ps) != STORE_OK)
        return STORE_ERR;
    int status = pg_store_exec(s, "BEGIN");
    if (status == STORE_OK)
        ps->explicit_txn = true;
    return status;
}

int pg_store_schema_version(struct store *s)
{
    int v = -1;
    if (pg_schema_version(pg_store_of(s)->conn, &v) != STORE_OK)
        return -1;
    return v;
}

/* ---- savepoints ---- */

int pg_store_sp_begin(struct store *s, const char *name)
{
    struct pg_store *ps = pg_store_of(s);
    if (revive(ps) != STORE_OK)
        return STORE_ERR;
    int status = pg_sp_begin(ps->conn, name);
    if (status != STORE_OK)
        snprintf(s->errmsg, sizeof(s->errmsg), "%s", pg_conn_errmsg(ps->conn));
    return status;
}

int pg_store_sp_release(struct store *s, const char *name)
{
    struct pg_store *ps = pg_store_of(s);
    int status = pg_sp_release(ps->conn, name);
    if (status != STORE_OK)
        snprintf(s->errmsg, sizeof(s->errmsg), "%s", pg_conn_errmsg(ps->conn));
    return status;
}

int pg_store_sp_undo(struct store *s, const char *name)
{
    struct pg_store *ps = pg_store_of(s);
    char why[STORE_ERRMSG_BYTES];
    memcpy(why, s->errmsg, sizeof(why));
    int status = pg_sp_undo(ps->conn, name);
    if (status == STORE_OK) {
        memcpy(s->errmsg, why, sizeof(why));
        return STORE_OK;
    }
    char cleanup[PG_ERRMSG_BYTES];
    snprintf(cleanup, sizeof(cleanup), "%s", pg_conn_errmsg(ps->conn));
    /* pg_sp_undo keeps the connection's own text of the first failure when nothing could be
     * undone; say what the caller recorded, and the connection's reason when it adds one. */
    if (strstr(why, cleanup) != NULL)
        snprintf(s->errmsg, sizeof(s->errmsg), "%s", why);
    else
        snprintf(s->errmsg, sizeof(s->errmsg), "%.300s (undo failed: %.180s)", why, cleanup);
    return STORE_ERR;
}
