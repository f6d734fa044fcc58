/*
 * store_internal.h - shared by the files of storage/ only: the connection and statement helpers.
 * Nothing outside storage/ includes this.
 */
#ifndef POSTERN_STORE_INTERNAL_H
#define POSTERN_STORE_INTERNAL_H

#include <sqlite3.h>

#include "storage/store.h"

#define STORE_ERRMSG_BYTES 512

/* Prepared statements are cached by the address of their SQL text, which is always a string
 * literal in storage/, so the hot paths (RCPT lookups, window checks) prepare once. */
#define STORE_STMT_CACHE 128

struct store {
    sqlite3 *db; /* owned */
    char path[1024];
    char errmsg[STORE_ERRMSG_BYTES];
    struct {
        const char *sql;    /* borrowed: a string literal */
        sqlite3_stmt *stmt; /* owned */
    } cache[STORE_STMT_CACHE];
};

/* A reset statement for sql (a string literal), bindings cleared. The caller steps it and then
 * calls store_reset(). On failure records the error and returns NULL. */
sqlite3_stmt *store_prepare(struct store *s, const char *sql);
void store_reset(sqlite3_stmt *st);
/* Records sqlite3_errmsg under a context word and returns STORE_ERR. */
int store_fail(struct store *s, const char *what);
/* Maps the result of a modifying step: SQLITE_DONE -> STORE_OK, constraint -> STORE_EXISTS. */
int store_step_done(struct store *s, sqlite3_stmt *st, const char *what);
int store_exec(struct store *s, const char *sql);
/* Ends a row loop: rc is the last sqlite3_step result (a callback may have stopped it at a row).
 * Resets the statement; STORE_OK, or STORE_ERR with the error recorded under `what`. */
int store_rows_end(struct store *s, sqlite3_stmt *st, int rc, const char *what);

/* Opens a body reader (body_reader.c). lookup_sql returns (message id, size) of the body to read
 * given key1 as ?1 and, when it has a second parameter, key2 as ?2; no row means "gone". what
 * names it in error texts ("mailbox entry 5 of user 3"). */
int store_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                           const char *what, int64_t hold_ms, struct store_body_reader **reader_out,
                           int64_t *size_out);

#endif
