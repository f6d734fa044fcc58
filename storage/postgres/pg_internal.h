/*
 * pg_internal.h - shared by storage/postgres/ only: the connection and statement structs, and the
 * error helpers pg_stmt.c takes from pg_conn.c.
 */
#ifndef POSTERN_PG_INTERNAL_H
#define POSTERN_PG_INTERNAL_H

#include <libpq-fe.h>

#include "storage/postgres/pg_conn.h"
#include "storage/store_internal.h"

/* Type OIDs fixed by PostgreSQL's catalog (pg_type.dat) and the same on every server. libpq does
 * not export them: they come with the server's headers, which a client does not need. */
#define PG_OID_BOOL  16
#define PG_OID_BYTEA 17

/* How one parameter is bound. */
enum pg_bind_kind {
    PG_BIND_NULL = 0,
    PG_BIND_I64,
    PG_BIND_TEXT,
    PG_BIND_BLOB,
};

/* Nested named savepoints one connection tracks: the writer's job and a table file's own. */
#define PG_SP_DEPTH 8

/* Room for INT64_MIN in decimal and its NUL. */
#define PG_I64_TEXT_BYTES 24

struct pg_stmt {
    struct sql_stmt base; /* first: what storage/sql.h hands the table files (pg_store.c) */
    struct pg_conn *conn; /* borrowed: the connection that owns this statement */
    const char *sql;      /* borrowed: the caller's string literal, the cache key */
    char *pg_sql;         /* owned: sql with $N for ?N */
    int nparams;          /* the highest N of the text */
    int slot;             /* its place in the connection's cache; names it on the server */
    /* The connection generation it was prepared in (0: never): a reconnect starts a new
     * generation, and the server has forgotten it. */
    uint64_t prepared_gen;
    /* Parameters it was prepared with as bytea: a blob bound to one of them is sent in binary;
     * a blob bound to another makes it prepared again with that one added. */
    uint32_t bytea_mask;
    struct {
        enum pg_bind_kind kind;
        const char *value; /* borrowed text or blob, or num, or owned */
        int length;        /* of a blob (binary format); unused for text */
        char *owned;       /* owned: a copy of text bound with a length */
        char num[PG_I64_TEXT_BYTES];
    } params[PG_MAX_PARAMS];
    /* The first binding that failed since pg_prepare, reported by the next step: the statement
     * interface's binds return nothing, so a failure must not be lost between bind and step. */
    char bind_error[160];
    PGresult *res;   /* owned: the result of the last execution; NULL before one */
    int64_t changes; /* rows its last execution inserted, updated or deleted */
    int row;         /* the current row of res */
    struct pg_blob {
        unsigned char *data; /* owned (PQfreemem): the current row's decoded bytea */
        size_t len;
    } * blobs; /* owned: one per column of res, filled when read */
    int n_blobs;
};

struct pg_conn {
    PGconn *pq;          /* owned */
    void *owner;         /* borrowed: what owns this connection (pg_store.c's store), or NULL */
    bool lost;           /* the server connection is gone; see pg_conn_reconnect */
    uint64_t generation; /* one more at each successful (re)connection */
    int64_t changes;     /* rows changed by the last INSERT, UPDATE or DELETE */
    char errmsg[PG_ERRMSG_BYTES];
    char sqlstate[6];
    struct pg_stmt *stmts[PG_STMT_CACHE]; /* owned: allocated at first use */
    char *listen[PG_LISTEN_MAX];          /* owned: channels to listen on again after reconnect */
    size_t n_listen;
    /* The savepoints of pg_sp_begin still open, innermost last (borrowed names: string
     * literals), and whether the first of them opened the transaction (see pg_sp_begin). */
    const char *sp_names[PG_SP_DEPTH];
    size_t n_sp;
    bool sp_opened_transaction;
};

/* Records a failure of res (NULL when libpq returned none) under what and maps it to a STORE_*
 * code; notes a lost connection. */
int pg_fail(struct pg_conn *c, const PGresult *res, const char *what);
/* Records a failure that is ours, not the server's, and returns STORE_ERR. */
int pg_fail_msg(struct pg_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* STORE_OK, or STORE_ERR when the connection is known lost. */
int pg_usable(struct pg_conn *c);
/* Notes the rows an INSERT, UPDATE or DELETE changed (other commands leave the count alone, as
 * sqlite3_changes does). */
void pg_note_changes(struct pg_conn *c, const PGresult *res);
/* The rows an INSERT, UPDATE, DELETE or MERGE result says it changed; -1 for other commands. */
int64_t pg_cmd_changes(const PGresult *res);
/* Frees the statements (pg_conn_close). */
void pg_stmt_free_all(struct pg_conn *c);

#endif
