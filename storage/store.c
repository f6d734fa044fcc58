/*
 * store.c - opening the database, its pragmas and migrations, transactions, and the small
 * statement helpers the other storage/ files share. See store.h for the threading rules.
 */
#include "storage/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "storage/schema.h"

_Static_assert(SCHEMA_VERSION == STORE_SCHEMA_VERSION, "store.h and schema.h agree");

int64_t store_now_ms(void)
{
    return clock_wall_ms();
}

int store_fail(struct store *s, const char *what)
{
    snprintf(s->errmsg, sizeof(s->errmsg), "%s: %s", what, sqlite3_errmsg(s->db));
    return STORE_ERR;
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

sqlite3_stmt *store_prepare(struct store *s, const char *sql)
{
    size_t free_slot = STORE_STMT_CACHE;
    for (size_t i = 0; i < STORE_STMT_CACHE; i++) {
        if (s->cache[i].sql == sql) {
            sqlite3_stmt *st = s->cache[i].stmt;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return st;
        }
        if (s->cache[i].sql == NULL && free_slot == STORE_STMT_CACHE)
            free_slot = i;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        store_fail(s, "prepare");
        return NULL;
    }
    if (free_slot == STORE_STMT_CACHE) {
        /* storage/ has more distinct statements than the cache holds. Evicting one could
         * finalize a statement a caller is still stepping, so refuse instead: raise the size. */
        sqlite3_finalize(st);
        snprintf(s->errmsg, sizeof(s->errmsg), "statement cache full (%d): raise STORE_STMT_CACHE",
                 STORE_STMT_CACHE);
        return NULL;
    }
    s->cache[free_slot].sql = sql;
    s->cache[free_slot].stmt = st;
    return st;
}

void store_reset(sqlite3_stmt *st)
{
    if (st != NULL)
        sqlite3_reset(st);
}

int store_step_done(struct store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int ext = sqlite3_extended_errcode(s->db);
    int status = STORE_OK;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
            status = STORE_EXISTS;
        else if (ext == SQLITE_CONSTRAINT_FOREIGNKEY || ext == SQLITE_CONSTRAINT_TRIGGER)
            /* ON DELETE RESTRICT reports itself as a trigger constraint. */
            status = STORE_IN_USE;
        else
            status = STORE_ERR;
        store_fail(s, what);
    }
    sqlite3_reset(st);
    return status;
}

int store_step_changed(struct store *s, sqlite3_stmt *st, const char *what)
{
    int status = store_step_done(s, st, what);
    if (status == STORE_OK && sqlite3_changes(s->db) == 0)
        status = STORE_NOT_FOUND;
    return status;
}

int store_rows_end(struct store *s, sqlite3_stmt *st, int rc, const char *what)
{
    int status = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? STORE_OK : store_fail(s, what);
    sqlite3_reset(st);
    return status;
}

int store_exec(struct store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(s->errmsg, sizeof(s->errmsg), "%s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return STORE_ERR;
    }
    return STORE_OK;
}

int store_exec_for_tests(struct store *s, const char *sql)
{
    return store_exec(s, sql);
}

int store_begin(struct store *s)
{
    return store_exec(s, "BEGIN IMMEDIATE");
}

int store_commit(struct store *s)
{
    return store_exec(s, "COMMIT");
}

int store_rollback(struct store *s)
{
    /* A failed COMMIT or an I/O error may already have rolled back. */
    if (sqlite3_get_autocommit(s->db))
        return STORE_OK;
    return store_exec(s, "ROLLBACK");
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
    return store_exec(s, sql);
}

int store_sp_begin(struct store *s, const char *name)
{
    return sp_exec(s, "SAVEPOINT", name);
}

int store_sp_release(struct store *s, const char *name)
{
    return sp_exec(s, "RELEASE", name);
}

int store_sp_undo(struct store *s, const char *name)
{
    char why[STORE_ERRMSG_BYTES];
    memcpy(why, s->errmsg, sizeof(why));
    /* No transaction left: SQLite rolled everything back itself, savepoint included. */
    if (sqlite3_get_autocommit(s->db))
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

static int read_user_version(struct store *s, int *version_out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return store_fail(s, "read schema version");
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return store_fail(s, "read schema version");
    }
    *version_out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return STORE_OK;
}

int store_schema_version(struct store *s)
{
    int v = -1;
    if (read_user_version(s, &v) != STORE_OK)
        return -1;
    return v;
}

/* Applies the migrations up to target, one transaction each. The version is read again inside
 * the write lock, so two processes opening a fresh database at once migrate it once. */
static int migrate(struct store *s, int target)
{
    for (;;) {
        if (store_begin(s) != STORE_OK)
            return STORE_ERR;
        int v = 0;
        if (read_user_version(s, &v) != STORE_OK) {
            store_rollback(s);
            return STORE_ERR;
        }
        if (v > SCHEMA_VERSION) {
            store_rollback(s);
            snprintf(s->errmsg, sizeof(s->errmsg),
                     "database schema version %d is newer than this postern knows (%d)", v,
                     SCHEMA_VERSION);
            return STORE_TOO_NEW;
        }
        if (v >= target) {
            store_rollback(s);
            return STORE_OK;
        }
        char pragma[64];
        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
        if (store_exec(s, schema_migration(v + 1)) != STORE_OK ||
            store_exec(s, pragma) != STORE_OK || store_commit(s) != STORE_OK) {
            char why[STORE_ERRMSG_BYTES];
            snprintf(why, sizeof(why), "%s", s->errmsg);
            store_rollback(s);
            snprintf(s->errmsg, sizeof(s->errmsg), "migration to schema version %d: %.400s", v + 1,
                     why);
            return STORE_ERR;
        }
    }
}

static int open_at(const char *path, int version, struct store **out, char *err, size_t errlen)
{
    *out = NULL;
    struct store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return STORE_ERR;
    }
    snprintf(s->path, sizeof(s->path), "%s", path);
    /* Created 0600 before SQLite sees it: SQLite would create it 0644 under the usual umask,
     * and its -wal and -shm files take the database file's mode. */
    if (store_file_create_private(path, &s->created, s->errmsg, sizeof(s->errmsg)) != STORE_OK) {
        snprintf(err, errlen, "%s: %s", path, s->errmsg);
        store_close(&s);
        return STORE_ERR;
    }
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    int status = STORE_OK;
    if (rc != SQLITE_OK) {
        snprintf(s->errmsg, sizeof(s->errmsg), "cannot open: %s",
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        status = STORE_ERR;
    }
    /* WAL: readers never block the writer. synchronous=FULL: a COMMIT is on disk when it
     * returns (the promise behind "250 Ok"). The busy timeout covers admin commands and the
     * server writing at the same moment. */
    if (status == STORE_OK) {
        sqlite3_extended_result_codes(s->db, 1);
        if (sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS) != SQLITE_OK)
            status = store_fail(s, "busy timeout");
    }
    if (status == STORE_OK)
        status = store_exec(s, "PRAGMA journal_mode = WAL");
    if (status == STORE_OK)
        status = store_exec(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                               " PRAGMA secure_delete = OFF; PRAGMA trusted_schema = OFF");
    if (status == STORE_OK && version > 0)
        status = migrate(s, version);
    if (status != STORE_OK) {
        snprintf(err, errlen, "%s: %s", path, s->errmsg);
        store_close(&s);
        return status;
    }
    *out = s;
    return STORE_OK;
}

int store_open(const char *path, struct store **out, char *err, size_t errlen)
{
    return open_at(path, SCHEMA_VERSION, out, err, errlen);
}

int store_open_at_version(const char *path, int version, struct store **out, char *err,
                          size_t errlen)
{
    return open_at(path, version, out, err, errlen);
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
    store_read_pool_free(s);
    for (size_t i = 0; i < STORE_STMT_CACHE; i++)
        sqlite3_finalize(s->cache[i].stmt);
    if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK) {
        /* Only an unfinalized statement keeps it open; all of ours are finalized above. */
        sqlite3_close_v2(s->db);
    }
    free(s);
    *sp = NULL;
}
