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

/* Statements one pooled connection keeps prepared: the two lookups (mailbox entry, queued
 * message) and the "is it still there" check. */
#define STORE_READ_CONN_STMTS 4

/* A pooled read-only connection (body_reader.c). */
struct store_read_conn {
    sqlite3 *db; /* owned */
    struct {
        const char *sql;    /* borrowed: a string literal */
        sqlite3_stmt *stmt; /* owned */
    } stmts[STORE_READ_CONN_STMTS];
    struct store_read_conn *next; /* the pool's idle list */
};

struct store {
    sqlite3 *db;  /* owned */
    bool created; /* store_open created the database file */
    char path[1024];
    char errmsg[STORE_ERRMSG_BYTES];
    struct {
        const char *sql;    /* borrowed: a string literal */
        sqlite3_stmt *stmt; /* owned */
    } cache[STORE_STMT_CACHE];
    struct {
        struct store_read_conn *idle; /* owned: a list of n_idle connections */
        size_t n_idle;
        uint64_t opened; /* connections ever opened for readers, for tests */
    } read_pool;
};

/* A reset statement for sql (a string literal), bindings cleared. The caller steps it and then
 * calls store_reset(). On failure records the error and returns NULL. */
sqlite3_stmt *store_prepare(struct store *s, const char *sql);
void store_reset(sqlite3_stmt *st);
/* Records sqlite3_errmsg under a context word and returns STORE_ERR. */
int store_fail(struct store *s, const char *what);
/* Maps the result of a modifying step: SQLITE_DONE -> STORE_OK, constraint -> STORE_EXISTS. */
int store_step_done(struct store *s, sqlite3_stmt *st, const char *what);
/* store_step_done for a statement that must change a row (UPDATE or DELETE by key): STORE_NOT_FOUND
 * when it changed none, so "no such row" is told apart from success. */
int store_step_changed(struct store *s, sqlite3_stmt *st, const char *what);
int store_exec(struct store *s, const char *sql);
/* Creates path with mode 0600 unless it exists (db_files.c); *created_out says whether it did.
 * STORE_OK, or STORE_ERR with one line ("cannot create: <reason>") in err. */
int store_file_create_private(const char *path, bool *created_out, char *err, size_t errlen);
/* Ends a row loop: rc is the last sqlite3_step result (a callback may have stopped it at a row).
 * Resets the statement; STORE_OK, or STORE_ERR with the error recorded under `what`. */
int store_rows_end(struct store *s, sqlite3_stmt *st, int rc, const char *what);

/*
 * Named savepoints: the one way a storage/ function makes its own changes atomic inside whatever
 * the caller has open (the writer's batch transaction and per-job savepoint, or nothing: then the
 * savepoint is the transaction). name is a string literal of letters and underscores, one per
 * caller family ("mailbox", "queue", "job"), so that releasing an inner savepoint can never
 * release an outer one with the same name by mistake.
 *   store_sp_begin    SAVEPOINT name
 *   store_sp_release  RELEASE name: keeps the changes (they commit with the outer transaction)
 *   store_sp_undo     ROLLBACK TO name, then RELEASE name: drops the changes since begin
 * store_sp_undo is called after a failure and keeps that failure's text in s->errmsg, so the
 * caller reports why it failed rather than how the cleanup went; if the cleanup fails too, its
 * reason is appended. It returns STORE_OK once the savepoint is gone, STORE_ERR when it could not
 * be rolled back, including when an error (I/O error, disk full) already rolled back the whole
 * transaction and no savepoint is left: a batch must then stop, not carry on in autocommit.
 */
int store_sp_begin(struct store *s, const char *name);
int store_sp_release(struct store *s, const char *name);
int store_sp_undo(struct store *s, const char *name);

/* Opens a body reader (body_reader.c). lookup_sql (a string literal: it keys the pooled
 * connections' statement caches) returns (message id, size) of the body to read given key1 as ?1
 * and, when it has a second parameter, key2 as ?2; no row means "gone". what and owner (string
 * literals; owner NULL when key2 is not used) name the keys in error texts: "mailbox entry 5 of
 * user 3" is what "mailbox entry", owner "user". */
int store_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                           const char *what, const char *owner, int64_t hold_ms,
                           struct store_body_reader **reader_out, int64_t *size_out);
/* Closes the idle pooled connections (store_close). Every reader must be closed before. */
void store_read_pool_free(struct store *s);

#endif
