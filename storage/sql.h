/*
 * sql.h - the one statement interface the table files of storage/ use, whatever the database
 * behind the store: prepare a statement, bind its parameters, step it, read its columns. Nothing
 * outside storage/ includes this but its unit test (tests/unit/test_sql.c, which any backend must
 * pass); nothing in it names a type of a database library.
 *
 * The rules a backend relies on, so that the same table file runs on each:
 * - SQL text is a string literal. Statements are cached by its address, per connection, so a hot
 *   path (RCPT lookups, window checks) prepares once; the cache owns every struct sql_stmt.
 * - Parameters are numbered ?1..?N in the text and bound after each sql_prepare (which clears the
 *   previous bindings); a reset keeps them, so a loop may rebind only the parameter that changes.
 *   Text and blob parameters are borrowed, not copied: the caller keeps them alive until the
 *   statement is reset or stepped again.
 * - A new row's id comes back from its INSERT's `RETURNING id`, a row like any other. Such an
 *   INSERT inserts at most one row, and its text ends in exactly " RETURNING id" (the SQLite
 *   backend answers that row itself, sqlite_sql.c).
 * - Column values (text, blob) are borrowed from the statement until its next step or reset.
 * - The SQL itself sticks to what SQLite and PostgreSQL both run: "user" quoted (a reserved word
 *   in PostgreSQL), ON CONFLICT rather than INSERT OR IGNORE/REPLACE, standard functions. A
 *   statement that cannot be written so says why beside it.
 *
 * Implemented by storage/sqlite/sqlite_sql.c and storage/postgres/pg_store.c; storage/backend.c
 * routes each call by the backend tag of the store or statement (store_internal.h).
 */
#ifndef POSTERN_SQL_H
#define POSTERN_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct sql_stmt; /* opaque, owned by the store's statement cache */

/* What sql_step returns besides a STORE_* error code (those are negative). */
enum sql_step_result {
    SQL_ROW = 1,  /* a row is ready: read it with sql_col_* */
    SQL_DONE = 2, /* the statement has run to its end */
};

/* The statement for sql (a string literal), reset and with no parameters bound. NULL on failure,
 * with the reason recorded in the store's error text (store_errmsg). A backend whose server parses
 * the statement (PostgreSQL) may accept it here and refuse it at its first sql_step. */
struct sql_stmt *sql_prepare(struct store *s, const char *sql);

void sql_bind_i64(struct sql_stmt *st, int idx, int64_t v);
/* v is NUL-terminated and borrowed until the statement is reset or stepped again. */
void sql_bind_text(struct sql_stmt *st, int idx, const char *v);
/* p[0..len) is borrowed as for sql_bind_text. */
void sql_bind_blob(struct sql_stmt *st, int idx, const void *p, size_t len);
void sql_bind_null(struct sql_stmt *st, int idx);

/* SQL_ROW, SQL_DONE, or a STORE_* error: STORE_EXISTS for a unique-key violation, STORE_IN_USE
 * for a foreign key still referenced, STORE_ERR for anything else. After an error the reason is
 * the connection's (store_fail records it under a context word); reset the statement next. */
int sql_step(struct sql_stmt *st);

/* Columns of the current row, numbered from 0. */
int64_t sql_col_i64(struct sql_stmt *st, int col);
const char *sql_col_text(struct sql_stmt *st, int col); /* NULL for NULL */
const void *sql_col_blob(struct sql_stmt *st, int col, size_t *len_out);
bool sql_col_null(struct sql_stmt *st, int col);

/* Rows changed by the last completed step (an INSERT, UPDATE or DELETE run to SQL_DONE), not
 * counting what triggers or cascades changed. Ask before stepping another statement. */
int64_t sql_changes(struct sql_stmt *st);
/* Ends the statement's current run: releases what it holds (read snapshot, borrowed values). */
void sql_reset(struct sql_stmt *st);

/* ---- helpers on the statements, the same for every backend (storage/store.c) ---- */

/* Records the connection's last error under a context word ("what: reason"); returns STORE_ERR. */
int store_fail(struct store *s, const char *what);
/* Steps a statement that returns no rows to its end and resets it: STORE_OK, or the error of
 * sql_step (recorded under what). */
int store_step_done(struct store *s, struct sql_stmt *st, const char *what);
/* store_step_done for a statement that must change a row (UPDATE or DELETE by key): STORE_NOT_FOUND
 * when it changed none, so "no such row" is told apart from success. */
int store_step_changed(struct store *s, struct sql_stmt *st, const char *what);
/* Steps an INSERT ... RETURNING id to its end: *id_out is the new row's id. STORE_NOT_FOUND when
 * the statement inserted nothing (an INSERT ... SELECT whose SELECT found no row). */
int store_step_id(struct store *s, struct sql_stmt *st, const char *what, int64_t *id_out);
/* Ends a row loop: rc is the last sql_step result (a callback may have stopped it at a row).
 * Resets the statement; STORE_OK, or STORE_ERR with the error recorded under `what`. */
int store_rows_end(struct store *s, struct sql_stmt *st, int rc, const char *what);
/* Runs SQL text of one or more statements without parameters or rows (DDL, transaction verbs). */
int store_exec(struct store *s, const char *sql);
/* store_exec for one statement run again and again whose text is made at run time (a savepoint's
 * "RELEASE mailbox"): SQLite keeps it prepared and finds it again by its text, instead of parsing
 * it on every call. */
int store_exec_kept(struct store *s, const char *sql);

/*
 * Named savepoints: the one way a storage/ function makes its own changes atomic inside whatever
 * the caller has open (the writer's batch transaction and per-job savepoint, or nothing: then the
 * savepoint is the transaction). name is a string literal of letters and underscores, one per
 * caller family ("mailbox", "queue", "job"), so that releasing an inner savepoint can never
 * release an outer one with the same name by mistake.
 *   store_sp_begin    SAVEPOINT name
 *   store_sp_release  RELEASE name: keeps the changes (they commit with the outer transaction)
 *   store_sp_undo     ROLLBACK TO name, then RELEASE name: drops the changes since begin
 * store_sp_undo is called after a failure and keeps that failure's text in the error text, so the
 * caller reports why it failed rather than how the cleanup went; if the cleanup fails too, its
 * reason is appended. It returns STORE_OK once the savepoint is gone, STORE_ERR when it could not
 * be rolled back, including when an error (I/O error, disk full) already rolled back the whole
 * transaction and no savepoint is left: a batch must then stop, not carry on in autocommit.
 * They are written for SQLite, where a SAVEPOINT outside a transaction opens one and its RELEASE
 * commits it; a backend where SAVEPOINT needs an open transaction (PostgreSQL) opens one there.
 */
int store_sp_begin(struct store *s, const char *name);
int store_sp_release(struct store *s, const char *name);
int store_sp_undo(struct store *s, const char *name);

#endif
