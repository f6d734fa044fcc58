/*
 * sqlite_internal.h - the SQLite backend's own types, shared by the files of storage/sqlite/ only:
 * the connection (struct sqlite_store, which embeds the backend-neutral struct store), its
 * statement cache, the pool of read-only connections for body readers, and the body being
 * written. The table files never see this header: they talk to storage/sql.h.
 */
#ifndef POSTERN_SQLITE_INTERNAL_H
#define POSTERN_SQLITE_INTERNAL_H

#include <sqlite3.h>

#include "common/util.h"
#include "storage/backends.h"

/* Prepared statements are cached by the address of their SQL text, which is always a string
 * literal in storage/, so the hot paths (RCPT lookups, window checks) prepare once. */
#define STORE_STMT_CACHE 128
/* Of those slots, at most this many hold statements kept by their text (store_exec_kept: the
 * transaction verbs and each savepoint name's SAVEPOINT, RELEASE and ROLLBACK TO). */
#define STORE_STMT_KEPT 40

/* Statements one pooled connection keeps prepared: the two lookups (mailbox entry, queued
 * message) and the "is it still there" check. */
#define STORE_READ_CONN_STMTS 4

/* A cached statement: what sql.h calls a struct sql_stmt (its base). Lives in its store's cache
 * for the life of the connection, so a pointer to it stays valid. */
struct sqlite_stmt {
    struct sql_stmt base; /* first: what the table files hold */
    const char *sql; /* the cache key; NULL: slot free. Borrowed (a string literal, found by its
                      * address), or owned when `kept` (store_exec_kept's copy, found by text) */
    bool kept;
    sqlite3_stmt *stmt;        /* owned */
    struct sqlite_store *conn; /* borrowed: the connection the statement belongs to */
    int bind_rc;               /* the first failed bind since sql_prepare, else SQLITE_OK */
    /* An INSERT whose text ends in " RETURNING id", prepared without that clause: sql_step
     * answers its row from sqlite3_last_insert_rowid (sqlite_sql.c says why). */
    bool returning_id;
    bool id_row; /* that row is the current one: sql_col_i64 answers id */
    int64_t id;  /* the new row's id while id_row */
};

/* A pooled read-only connection (body_reader.c). */
struct sqlite_read_conn {
    sqlite3 *db; /* owned */
    struct {
        const char *sql;    /* borrowed: a string literal */
        sqlite3_stmt *stmt; /* owned */
    } stmts[STORE_READ_CONN_STMTS];
    struct sqlite_read_conn *next; /* the pool's idle list */
};

struct sqlite_store {
    struct store base; /* first: what the table files hold */
    sqlite3 *db;       /* owned */
    struct sqlite_stmt cache[STORE_STMT_CACHE];
    struct {
        struct sqlite_read_conn *idle; /* owned: a list of n_idle connections */
        size_t n_idle;
        uint64_t opened; /* connections ever opened for readers, for tests */
    } read_pool;
    /* The body store_body_create began (body_write.c); blob is NULL when none is open. */
    struct {
        sqlite3_blob *blob;  /* owned while a body is being written */
        uint64_t off_bytes;  /* where the next write goes */
        uint64_t size_bytes; /* the blob's length */
        int status;          /* the first failure of this body, else STORE_OK */
        bool active;         /* between store_body_create and store_body_finish */
    } body;
};

static inline struct sqlite_store *sqlite_of(struct store *s)
{
    return container_of(s, struct sqlite_store, base);
}

static inline struct sqlite_stmt *sqlite_stmt_of(struct sql_stmt *st)
{
    return container_of(st, struct sqlite_stmt, base);
}

/* Finalizes every cached statement (sqlite_sql.c). */
void sqlite_stmt_cache_free(struct sqlite_store *ls);
/* Closes the idle pooled connections (body_reader.c). Every reader must be closed before. */
void sqlite_read_pool_free(struct sqlite_store *ls);
/* Creates path with mode 0600 unless it exists (db_files.c); *created_out says whether it did.
 * STORE_OK, or STORE_ERR with one line ("cannot create: <reason>") in err. */
int store_file_create_private(const char *path, bool *created_out, char *err, size_t errlen);

#endif
