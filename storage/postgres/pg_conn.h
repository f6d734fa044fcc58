/*
 * pg_conn.h - one PostgreSQL connection (libpq) and its statements, for storage/ only: what the
 * PostgreSQL backend of the storage statement interface is built on. Nothing outside storage/
 * includes this.
 *
 * A struct pg_conn is one server session, used by one thread at a time, like a SQLite
 * connection. Every call that talks to the server blocks until the server answers (at most
 * PG_STATEMENT_TIMEOUT_MS for a statement), so these calls run on the writer thread or a reader
 * thread, never on an event loop. The one exception is pg_notify_take, which only reads what the
 * socket already holds (libpq's sockets are non-blocking) and may run where a poll on
 * pg_conn_socket said it is readable.
 *
 * Statements are the SQL text of the storage code, with parameters written ?1 .. ?N as SQLite
 * takes them. pg_prepare caches them by the address of that text (always a string literal), and
 * each is rewritten to PostgreSQL's $1 .. $N once and prepared on the server (a named prepared
 * statement) at its first step. Parameters go as text, bytea in binary; results come back as text
 * and are parsed here, so a caller reads a bigint, a count(*), a sum() or a boolean alike with
 * pg_col_i64. Each step runs the statement to completion and keeps the whole result, so another
 * statement may run on the connection while the caller is still reading the rows of this one
 * (as the storage code does with SQLite).
 *
 * Failures return the store's codes (storage/store.h): STORE_EXISTS for a unique violation
 * (SQLSTATE 23505), STORE_IN_USE for a foreign key violation (23503, as SQLite's RESTRICT is
 * reported), STORE_ERR for the rest, with the reason in pg_conn_errmsg. When the connection
 * itself is gone (the server restarted, the backend was terminated, the network failed),
 * pg_conn_is_lost says so, every later call fails at once, and the caller decides when to call
 * pg_conn_reconnect: whatever transaction was open is lost, so only the caller knows what must be
 * done again.
 *
 * A PostgreSQL transaction in which a statement failed accepts nothing more until it is rolled
 * back, to a savepoint or entirely (SQLite carries on after a failed statement). Storage code that
 * tries something that may fail inside a transaction wraps it in a named savepoint and undoes it.
 */
#ifndef POSTERN_PG_CONN_H
#define POSTERN_PG_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"

/* The oldest server accepted: 13 is the oldest still supported upstream when this was written,
 * and has what the schema uses (identity columns, DROP DATABASE ... WITH (FORCE) in the tests). */
#define PG_MIN_SERVER_VERSION 130000
/* A statement running longer than this is cancelled by the server and fails: a lock held by a
 * stuck node or a server in trouble must not hold the writer forever. It is far above what a
 * write of the largest message takes. */
#define PG_STATEMENT_TIMEOUT_MS 60000
/* The backoff between attempts to reconnect a lost connection (pg_store.c): the first retry
 * after 250 ms, doubling up to 5 s, so a server back from a restart is found within 5 s. */
#define PG_RECONNECT_MIN_MS 250
#define PG_RECONNECT_MAX_MS 5000
/* What a connection calls itself on the server (pg_stat_activity.application_name). */
#define PG_APPLICATION_NAME "postern"
/* ... and a node's listening connection (pg_listener.c, store_listener_start). */
#define PG_LISTENER_APPLICATION_NAME "postern listener"
/* How long opening a connection may take, unless the connection string says otherwise. */
#define PG_CONNECT_TIMEOUT_S 10
/* Distinct statements one connection keeps prepared (the storage code has fewer than 128). */
#define PG_STMT_CACHE 128
/* Parameters one statement may have (?1 .. ?PG_MAX_PARAMS). */
#define PG_MAX_PARAMS 32
/* Channels one connection may listen on; enough for the queue and the windows. */
#define PG_LISTEN_MAX 8
/* A notification's payload is at most 8000 bytes (PostgreSQL's limit), its channel an
 * identifier of at most 63. */
#define PG_NOTIFY_PAYLOAD_BYTES 8001
#define PG_NOTIFY_CHANNEL_BYTES 64
#define PG_ERRMSG_BYTES         512

/* What a step returns besides the STORE_* failures: positive, so never taken for one. */
enum pg_step_result {
    PG_ROW = 1,  /* a row is there to be read with pg_col_* */
    PG_DONE = 2, /* the statement ran to its end; no (more) rows */
};

struct pg_conn;
struct pg_stmt;

/*
 * True when database names a PostgreSQL server rather than a SQLite file: a URI
 * (postgresql://... or postgres://...) or a libpq key=value string (starting with a keyword
 * and "=", like "host=db1 dbname=mail"). A file path that looks like key=value is written
 * ./name.
 */
bool pg_conninfo_is_pg(const char *database);

/*
 * Connects, checks the server's version (>= PG_MIN_SERVER_VERSION) and sets the session up:
 * synchronous_commit on (a COMMIT returns once it is durable, what "250" promises), the statement
 * timeout, UTF-8, application_name "postern" unless the connection string names another. On
 * failure *out is NULL and err holds one line (never the password).
 */
int pg_conn_open(const char *conninfo, struct pg_conn **out, char *err, size_t errlen);
/* pg_conn_open with application_name name instead of PG_APPLICATION_NAME (again unless the
 * connection string names one): a connection with a role of its own, such as a node's listener,
 * is then told apart in pg_stat_activity. */
int pg_conn_open_as(const char *conninfo, const char *name, struct pg_conn **out, char *err,
                    size_t errlen);
void pg_conn_close(struct pg_conn **c);
const char *pg_conn_errmsg(const struct pg_conn *c);
/* The SQLSTATE of the last failure ("23505"), "" when it had none (a lost connection). */
const char *pg_conn_sqlstate(const struct pg_conn *c);
/* The connection to the server is gone; only pg_conn_reconnect or pg_conn_close help. */
bool pg_conn_is_lost(const struct pg_conn *c);
/*
 * Connects again with the same parameters (PQreset), sets the session up again and listens
 * again on the channels of pg_listen; statements are prepared again at their next step, and
 * pg_conn_socket may have changed. STORE_OK, or STORE_ERR (still lost) with the reason.
 */
int pg_conn_reconnect(struct pg_conn *c);
/* The server's version as a number (150004 for 15.4). */
int pg_conn_server_version(const struct pg_conn *c);
/* The server process serving this connection (pg_backend_pid()). */
int pg_conn_backend_pid(const struct pg_conn *c);
/* Inside a transaction (BEGIN seen, no COMMIT or ROLLBACK yet), failed or not. */
bool pg_conn_in_transaction(const struct pg_conn *c);
/* Rows inserted, updated or deleted by the last such statement run on this connection. */
int64_t pg_conn_changes(const struct pg_conn *c);

/* Runs sql, one or more statements without parameters (BEGIN, COMMIT, SAVEPOINT name, DDL),
 * discarding any rows. STORE_OK or a STORE_* failure. */
int pg_exec(struct pg_conn *c, const char *sql);

/*
 * The statement for sql (a string literal: its address is the cache key), its result and
 * bindings cleared. NULL when the text cannot be used (a bare "?", a parameter above
 * PG_MAX_PARAMS), the cache is full or memory is short; pg_conn_errmsg says which. Nothing is
 * sent to the server until the first step. The statement belongs to the connection.
 */
struct pg_stmt *pg_prepare(struct pg_conn *c, const char *sql);
/* Bind ?idx (1-based). Text and blobs are borrowed until the next step; text must not contain a
 * NUL byte (PostgreSQL text cannot). len < 0: text is NUL-terminated; else the first len bytes
 * (copied). A parameter never bound is NULL. A failed bind (no such parameter, a NUL in text)
 * returns STORE_ERR and also makes the next step fail with its reason, so a caller that does not
 * look at what a bind returns never runs the statement with a parameter missing. */
int pg_bind_i64(struct pg_stmt *st, int idx, int64_t v);
int pg_bind_text(struct pg_stmt *st, int idx, const char *text, int len);
int pg_bind_blob(struct pg_stmt *st, int idx, const void *data, size_t len);
int pg_bind_null(struct pg_stmt *st, int idx);
/* The first step runs the statement; each step after moves to the next row. PG_ROW, PG_DONE or
 * a STORE_* failure. */
int pg_step(struct pg_stmt *st);
/* The current row's columns (0-based). A NULL reads as 0, NULL and an empty blob. What these
 * return is valid until the next step or reset of the statement. */
int pg_col_count(const struct pg_stmt *st);
bool pg_col_is_null(const struct pg_stmt *st, int col);
/* Integers, and booleans as 0 or 1. A value that is not one reads as 0, with the reason in
 * pg_conn_errmsg; pg_col_i64_checked reports it as STORE_ERR instead. */
int64_t pg_col_i64(struct pg_stmt *st, int col);
int pg_col_i64_checked(struct pg_stmt *st, int col, int64_t *out);
const char *pg_col_text(const struct pg_stmt *st, int col);
/* A bytea column decoded; another column's text as it is. NULL with *len_out 0 for NULL, and
 * on a decoding failure (out of memory), with the reason in pg_conn_errmsg. */
const void *pg_col_blob(struct pg_stmt *st, int col, size_t *len_out);
/* Rows inserted, updated or deleted by the statement's last execution (not by triggers or
 * cascades it set off); 0 for a statement that changes none. */
int64_t pg_changes(const struct pg_stmt *st);
/* Drops the result, keeps the bindings: the next step runs the statement again. */
void pg_reset(struct pg_stmt *st);

/*
 * Named savepoints with SQLite's meaning, which the storage code is written for: a savepoint
 * taken outside a transaction opens one (PostgreSQL refuses SAVEPOINT there), and releasing it
 * commits that transaction. name is a string literal of letters and underscores.
 *   pg_sp_begin    SAVEPOINT name, after BEGIN when no transaction is open
 *   pg_sp_release  RELEASE name (and the savepoints after it); COMMIT when it opened the
 *                  transaction
 *   pg_sp_undo     ROLLBACK TO name, RELEASE name; ROLLBACK when it opened the transaction.
 *                  Called after a failure, it keeps that failure's text in pg_conn_errmsg (the
 *                  cleanup's reason appended when the cleanup fails too); STORE_ERR when nothing
 *                  could be rolled back, including when no transaction is left.
 */
int pg_sp_begin(struct pg_conn *c, const char *name);
int pg_sp_release(struct pg_conn *c, const char *name);
int pg_sp_undo(struct pg_conn *c, const char *name);

/* ---- LISTEN/NOTIFY ---- */
struct pg_notification {
    char channel[PG_NOTIFY_CHANNEL_BYTES];
    char payload[PG_NOTIFY_PAYLOAD_BYTES];
    int sender_pid; /* the backend that sent it (pg_conn_backend_pid of the sender) */
};
/* LISTEN on channel (an identifier of at most 63 bytes), remembered for pg_conn_reconnect. */
int pg_listen(struct pg_conn *c, const char *channel);
/* pg_notify(channel, payload): delivered to the listeners when this transaction commits, or at
 * once outside a transaction. */
int pg_notify(struct pg_conn *c, const char *channel, const char *payload);
/* The socket to poll for readability while listening; -1 when there is none (lost). */
int pg_conn_socket(const struct pg_conn *c);
/* Reads what the socket holds, without blocking, and takes one notification: 1 when *out holds
 * one, 0 when none is waiting, STORE_ERR when the connection is lost. A payload longer than the
 * buffer is cut (PostgreSQL's own limit makes that impossible). */
int pg_notify_take(struct pg_conn *c, struct pg_notification *out);

/* ---- pure helpers, exposed for their unit tests ---- */
/*
 * Rewrites SQLite-style ?N parameters to $N, leaving quoted strings, quoted identifiers and
 * comments as they are. *out is malloc'd (the caller frees it), *nparams_out the highest N.
 * STORE_ERR with why (>= 128 bytes) on a bare "?", ?0, an N above PG_MAX_PARAMS, an unterminated
 * quote, or no memory.
 */
int pg_sql_rewrite(const char *sql, char **out, int *nparams_out, char *why, size_t whylen);
/* Parses a result's text as a 64-bit integer: decimal digits with an optional sign, and a
 * fraction cut toward zero (a numeric "12.0"). STORE_ERR on anything else or an overflow. */
int pg_parse_i64(const char *text, int64_t *out);

#endif
