/*
 * store.c - what every backend's store shares: choosing the backend at open, the status texts,
 * the statement helpers of sql.h (stepping to the end, row loops, ids from RETURNING), commit and
 * rollback, and the named savepoints. See store.h for the threading rules.
 *
 * What it does not do: talk to a database library. Everything here is written on sql.h and the
 * few backend calls of store_internal.h; the SQLite side is storage/sqlite/, the PostgreSQL side
 * storage/postgres/, and storage/backend.c routes each call to one of them.
 */
#include "storage/backends.h"

#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/pure/conninfo.h"

int64_t store_now_ms(void)
{
    return clock_wall_ms();
}

const char *store_strerror(int code)
{
    switch (code) {
    case STORE_OK:
        return "store: ok";
    case STORE_ERR:
        return "store: database failure";
    case STORE_EXISTS:
        return "store: already exists";
    case STORE_NOT_FOUND:
        return "store: no such row";
    case STORE_NO_DOMAIN:
        return "store: not a local domain";
    case STORE_IN_USE:
        return "store: still in use";
    case STORE_TOO_NEW:
        return "store: database schema is newer than this program";
    }
    return "store: not a store code";
}

const char *store_errmsg(const struct store *s)
{
    return s->errmsg;
}

/* ---- opening and closing: the one place that picks a backend ---- */

bool store_is_postgres(const char *database)
{
    return conninfo_is_postgres(database);
}

int store_open(const char *path, struct store **out, char *err, size_t errlen)
{
    return store_open_at_version(path, STORE_SCHEMA_VERSION, out, err, errlen);
}

int store_open_at_version(const char *path, int version, struct store **out, char *err,
                          size_t errlen)
{
    if (store_is_postgres(path))
        return pg_store_open(path, version, out, err, errlen);
    return sqlite_store_open(path, version, out, err, errlen);
}

bool store_created(const struct store *s)
{
    return s->created;
}

void store_close(struct store **sp)
{
    struct store *s = *sp;
    if (s == NULL)
        return;
    switch (s->backend) {
    case STORE_BACKEND_SQLITE:
        sqlite_store_close(s);
        break;
    case STORE_BACKEND_POSTGRES:
        pg_store_close(s);
        break;
    }
    *sp = NULL;
}

/* ---- statement helpers ---- */

int store_fail(struct store *s, const char *what)
{
    snprintf(s->errmsg, sizeof(s->errmsg), "%s: %s", what, store_backend_errmsg(s));
    return STORE_ERR;
}

int store_step_done(struct store *s, struct sql_stmt *st, const char *what)
{
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc != SQL_DONE && rc != SQL_ROW) {
        status = rc;
        store_fail(s, what);
    }
    sql_reset(st);
    return status;
}

int store_step_changed(struct store *s, struct sql_stmt *st, const char *what)
{
    int status = store_step_done(s, st, what);
    if (status == STORE_OK && sql_changes(st) == 0)
        status = STORE_NOT_FOUND;
    return status;
}

int store_step_id(struct store *s, struct sql_stmt *st, const char *what, int64_t *id_out)
{
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        *id_out = sql_col_i64(st, 0);
        /* One row inserted, one returned: the next step ends the statement. */
        rc = sql_step(st);
    } else if (rc == SQL_DONE) {
        status = STORE_NOT_FOUND;
    }
    if (rc != SQL_DONE) {
        status = rc < 0 ? rc : STORE_ERR;
        store_fail(s, what);
    }
    sql_reset(st);
    return status;
}

int store_rows_end(struct store *s, struct sql_stmt *st, int rc, const char *what)
{
    int status = (rc == SQL_ROW || rc == SQL_DONE) ? STORE_OK : store_fail(s, what);
    sql_reset(st);
    return status;
}

int store_announce(struct store *s, const char *channel)
{
    switch (s->backend) {
    case STORE_BACKEND_SQLITE:
        /* SQLite cannot tell another process anything: the nodes on the file find the change
         * at their next rescan (STORE_QUEUE_RESCAN_MS), which is the bound queue.h promises,
         * and store_can_listen says so to whoever would listen. */
        return STORE_OK;
    case STORE_BACKEND_POSTGRES:
        return pg_store_announce(s, channel);
    }
    snprintf(s->errmsg, sizeof(s->errmsg), "announce: unknown backend");
    return STORE_ERR;
}

bool store_can_listen(const char *database)
{
    return store_is_postgres(database);
}

int store_listener_start(const char *database, const char *channel, store_listener_fn fn, void *arg,
                         struct store_listener **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!store_can_listen(database)) {
        snprintf(err, errlen, "listen: SQLite cannot tell other processes anything");
        return STORE_ERR;
    }
    return pg_listener_start(database, channel, fn, arg, out, err, errlen);
}

void store_listener_stop(struct store_listener **l)
{
    pg_listener_stop(l);
}

int store_exec_for_tests(struct store *s, const char *sql)
{
    return store_exec(s, sql);
}

/* ---- transactions and savepoints ---- */

int store_commit(struct store *s)
{
    s->commit_unknown = false;
    return store_exec_kept(s, "COMMIT");
}

bool store_commit_unknown(const struct store *s)
{
    return s->commit_unknown;
}

int store_rollback(struct store *s)
{
    /* A failed COMMIT or an I/O error may already have rolled back. */
    if (!store_in_transaction(s))
        return STORE_OK;
    return store_exec(s, "ROLLBACK");
}

/* Runs one statement without parameters or rows through the statement cache. */
static int step_cached(struct store *s, const char *sql, const char *what)
{
    struct sql_stmt *st = sql_prepare(s, sql);
    if (st == NULL)
        return STORE_ERR;
    return store_step_done(s, st, what);
}

int store_read_group_begin(struct store *s)
{
    if (s->backend != STORE_BACKEND_SQLITE)
        return STORE_OK;
    return step_cached(s, "BEGIN DEFERRED", "begin a group of reads");
}

int store_read_group_end(struct store *s)
{
    if (s->backend != STORE_BACKEND_SQLITE || !store_in_transaction(s))
        return STORE_OK;
    if (step_cached(s, "COMMIT", "end a group of reads") == STORE_OK)
        return STORE_OK;
    (void)store_rollback(s);
    return STORE_ERR;
}

/* Longest savepoint statement: "ROLLBACK TO " and a short name. */
#define STORE_SP_SQL_BYTES 64

/* Runs verb followed by the savepoint's name ("RELEASE mailbox"). */
static int sp_exec(struct store *s, const char *verb, const char *name)
{
    char sql[STORE_SP_SQL_BYTES];
    int n = snprintf(sql, sizeof(sql), "%s %s", verb, name);
    if (n < 0 || (size_t)n >= sizeof(sql)) {
        snprintf(s->errmsg, sizeof(s->errmsg), "savepoint name too long: %.32s", name);
        return STORE_ERR;
    }
    return store_exec_kept(s, sql);
}

/* On PostgreSQL a SAVEPOINT needs an open transaction: its backend keeps SQLite's meaning (a
 * savepoint outside a transaction opens one, and its release commits it) by tracking them. */
int store_sp_begin(struct store *s, const char *name)
{
    if (s->backend == STORE_BACKEND_POSTGRES)
        return pg_store_sp_begin(s, name);
    return sp_exec(s, "SAVEPOINT", name);
}

int store_sp_release(struct store *s, const char *name)
{
    if (s->backend == STORE_BACKEND_POSTGRES)
        return pg_store_sp_release(s, name);
    return sp_exec(s, "RELEASE", name);
}

int store_sp_undo(struct store *s, const char *name)
{
    if (s->backend == STORE_BACKEND_POSTGRES)
        return pg_store_sp_undo(s, name);
    char why[STORE_ERRMSG_BYTES];
    memcpy(why, s->errmsg, sizeof(why));
    /* No transaction left: the database rolled everything back itself, savepoint included. */
    if (!store_in_transaction(s))
        return STORE_ERR;
    int status = sp_exec(s, "ROLLBACK TO", name);
    if (status == STORE_OK)
        status = sp_exec(s, "RELEASE", name);
    if (status == STORE_OK) {
        memcpy(s->errmsg, why, sizeof(why));
        return STORE_OK;
    }
    char cleanup[STORE_ERRMSG_BYTES];
    memcpy(cleanup, s->errmsg, sizeof(cleanup));
    snprintf(s->errmsg, sizeof(s->errmsg), "%.300s (undo failed: %.180s)", why, cleanup);
    return STORE_ERR;
}

/* The writer's savepoint around each job of a batch. */
int store_savepoint(struct store *s)
{
    return store_sp_begin(s, "job");
}

int store_savepoint_release(struct store *s)
{
    return store_sp_release(s, "job");
}

int store_savepoint_rollback(struct store *s)
{
    return store_sp_undo(s, "job");
}
