/*
 * legacy.h - for the move to storage/sql.h only: the sqlite3 statement helpers the table files
 * used before the seam, kept for the files not converted yet. The last converted file removes it.
 */
#ifndef POSTERN_SQLITE_LEGACY_H
#define POSTERN_SQLITE_LEGACY_H

#include "storage/sqlite/sqlite_internal.h"

static inline sqlite3_stmt *legacy_prepare(struct store *s, const char *sql)
{
    struct sql_stmt *st = sql_prepare(s, sql);
    return st != NULL ? st->stmt : NULL;
}

static inline void legacy_reset(sqlite3_stmt *st)
{
    if (st != NULL)
        sqlite3_reset(st);
}

static inline int legacy_step_done(struct store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int ext = sqlite3_extended_errcode(sqlite_of(s)->db);
    int status = STORE_OK;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
            status = STORE_EXISTS;
        else if (ext == SQLITE_CONSTRAINT_FOREIGNKEY || ext == SQLITE_CONSTRAINT_TRIGGER)
            status = STORE_IN_USE;
        else
            status = STORE_ERR;
        store_fail(s, what);
    }
    sqlite3_reset(st);
    return status;
}

static inline int legacy_step_changed(struct store *s, sqlite3_stmt *st, const char *what)
{
    int status = legacy_step_done(s, st, what);
    if (status == STORE_OK && sqlite3_changes(sqlite_of(s)->db) == 0)
        status = STORE_NOT_FOUND;
    return status;
}

static inline int legacy_rows_end(struct store *s, sqlite3_stmt *st, int rc, const char *what)
{
    int status = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? STORE_OK : store_fail(s, what);
    sqlite3_reset(st);
    return status;
}

#endif
