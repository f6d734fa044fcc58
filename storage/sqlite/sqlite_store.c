/*
 * sqlite_store.c - a SQLite connection as a store: opening the file (created 0600 first,
 * db_files.c), its pragmas (WAL, synchronous=FULL, foreign keys, busy timeout), the migrations of
 * schema.c recorded in PRAGMA user_version, BEGIN IMMEDIATE, and closing. See store.h for the
 * threading rules.
 *
 * What it does not do: run statements for the table files (sqlite_sql.c) or stream bodies
 * (body_reader.c, body_write.c).
 */
#include "storage/sqlite/sqlite_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "storage/sqlite/schema.h"

_Static_assert(SCHEMA_VERSION == STORE_SCHEMA_VERSION, "store.h and schema.h agree");

/* SQLite's BEGIN takes the write lock at the first write; IMMEDIATE takes it at once, so a batch
 * that will write never fails half-way on a lock another connection took meanwhile. */
int sqlite_store_begin(struct store *s)
{
    return store_exec_kept(s, "BEGIN IMMEDIATE");
}

static int read_user_version(struct sqlite_store *ls, int *version_out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ls->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return store_fail(&ls->base, "read schema version");
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return store_fail(&ls->base, "read schema version");
    }
    *version_out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return STORE_OK;
}

int sqlite_store_schema_version(struct store *s)
{
    int v = -1;
    if (read_user_version(sqlite_of(s), &v) != STORE_OK)
        return -1;
    return v;
}

/* Applies the migrations up to target, one transaction each. The version is read again inside
 * the write lock, so two processes opening a fresh database at once migrate it once. */
static int migrate(struct sqlite_store *ls, int target)
{
    struct store *s = &ls->base;
    for (;;) {
        if (store_begin(s) != STORE_OK)
            return STORE_ERR;
        int v = 0;
        if (read_user_version(ls, &v) != STORE_OK) {
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

int sqlite_store_open(const char *path, int version, struct store **out, char *err, size_t errlen)
{
    *out = NULL;
    struct sqlite_store *ls = calloc(1, sizeof(*ls));
    if (ls == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return STORE_ERR;
    }
    struct store *s = &ls->base;
    s->backend = STORE_BACKEND_SQLITE;
    snprintf(s->path, sizeof(s->path), "%s", path);
    /* Created 0600 before SQLite sees it: SQLite would create it 0644 under the usual umask,
     * and its -wal and -shm files take the database file's mode. */
    if (store_file_create_private(path, &s->created, s->errmsg, sizeof(s->errmsg)) != STORE_OK) {
        snprintf(err, errlen, "%s: %s", path, s->errmsg);
        sqlite_store_close(s);
        return STORE_ERR;
    }
    int rc = sqlite3_open_v2(
        path, &ls->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    int status = STORE_OK;
    if (rc != SQLITE_OK) {
        snprintf(s->errmsg, sizeof(s->errmsg), "cannot open: %s",
                 ls->db ? sqlite3_errmsg(ls->db) : sqlite3_errstr(rc));
        status = STORE_ERR;
    }
    /* WAL: readers never block the writer. synchronous=FULL: a COMMIT is on disk when it
     * returns (the promise behind "250 Ok"). The busy timeout covers admin commands and the
     * server writing at the same moment. */
    if (status == STORE_OK) {
        sqlite3_extended_result_codes(ls->db, 1);
        if (sqlite3_busy_timeout(ls->db, STORE_BUSY_TIMEOUT_MS) != SQLITE_OK)
            status = store_fail(s, "busy timeout");
    }
    if (status == STORE_OK)
        status = store_exec(s, "PRAGMA journal_mode = WAL");
    if (status == STORE_OK)
        status = store_exec(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                               " PRAGMA secure_delete = OFF; PRAGMA trusted_schema = OFF");
    if (status == STORE_OK && version > 0)
        status = migrate(ls, version);
    if (status != STORE_OK) {
        snprintf(err, errlen, "%s: %s", path, s->errmsg);
        sqlite_store_close(s);
        return status;
    }
    *out = s;
    return STORE_OK;
}

void sqlite_store_close(struct store *s)
{
    struct sqlite_store *ls = sqlite_of(s);
    sqlite_read_pool_free(ls);
    sqlite_stmt_cache_free(ls);
    /* An unfinished body's blob handle would keep the connection open. */
    if (ls->body.blob != NULL)
        (void)sqlite3_blob_close(ls->body.blob);
    if (ls->db != NULL && sqlite3_close(ls->db) != SQLITE_OK) {
        /* Only an unfinalized statement keeps it open; all of ours are finalized above. */
        sqlite3_close_v2(ls->db);
    }
    free(ls);
}
