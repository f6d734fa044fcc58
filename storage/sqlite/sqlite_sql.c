/*
 * sqlite_sql.c - storage/sql.h on SQLite (as the sqlite_sql_* calls of storage/backends.h): the
 * statement cache of a connection, binding, stepping, columns, and the connection's error text and
 * transaction state for the backend-neutral helpers of storage/store.c.
 *
 * A struct sql_stmt is a slot of the connection's cache (sqlite_internal.h): no allocation per
 * statement run, and a cache hit is one reset. Text and blobs are bound SQLITE_STATIC, which is
 * sql.h's "borrowed until reset or the next step": SQLite reads them only while stepping, and
 * sql_prepare clears the bindings before the slot is used again.
 *
 * `INSERT ... RETURNING id`, the portable way sql.h gets a new row's id, is run without its
 * RETURNING clause, and the one row it returns is made from sqlite3_last_insert_rowid. SQLite
 * runs a RETURNING clause through an ephemeral table built for each run, which made a delivery
 * (two such INSERTs) about a quarter more instructions under callgrind; without it the INSERT
 * costs what it did before sql.h. The answer is the same because each of these statements
 * inserts at most one row (sql.h asks so): a row inserted (sqlite3_changes 1) is that row's id,
 * none inserted (an INSERT ... SELECT that selected nothing) is no row.
 *
 * What it does not do: open or close connections (sqlite_store.c), or hold SQL of its own.
 */
#include "storage/sqlite/sqlite_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The clause sql_prepare takes off an INSERT (see above). */
static const char returning_id[] = " RETURNING id";
#define RETURNING_ID_LEN (sizeof(returning_id) - 1)

struct sql_stmt *sqlite_sql_prepare(struct store *s, const char *sql)
{
    struct sqlite_store *ls = sqlite_of(s);
    size_t free_slot = STORE_STMT_CACHE;
    for (size_t i = 0; i < STORE_STMT_CACHE; i++) {
        if (ls->cache[i].sql == sql && !ls->cache[i].kept) {
            sqlite3_stmt *st = ls->cache[i].stmt;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            ls->cache[i].bind_rc = SQLITE_OK;
            ls->cache[i].id_row = false;
            return &ls->cache[i].base;
        }
        if (ls->cache[i].sql == NULL && free_slot == STORE_STMT_CACHE)
            free_slot = i;
    }
    size_t len = strlen(sql);
    bool returning = len > RETURNING_ID_LEN &&
                     memcmp(sql + len - RETURNING_ID_LEN, returning_id, RETURNING_ID_LEN) == 0;
    if (returning)
        len -= RETURNING_ID_LEN;
    sqlite3_stmt *st = NULL;
    if (len > INT_MAX || sqlite3_prepare_v3(ls->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &st,
                                            NULL) != SQLITE_OK) {
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
    ls->cache[free_slot] = (struct sqlite_stmt){.base = {.backend = STORE_BACKEND_SQLITE},
                                                .sql = sql,
                                                .stmt = st,
                                                .conn = ls,
                                                .returning_id = returning};
    return &ls->cache[free_slot].base;
}

int sqlite_store_exec_kept(struct store *s, const char *sql)
{
    struct sqlite_store *ls = sqlite_of(s);
    sqlite3_stmt *st = NULL;
    size_t free_slot = STORE_STMT_CACHE, kept = 0;
    for (size_t i = 0; i < STORE_STMT_CACHE && st == NULL; i++) {
        if (ls->cache[i].kept && strcmp(ls->cache[i].sql, sql) == 0)
            st = ls->cache[i].stmt;
        else if (ls->cache[i].sql == NULL && free_slot == STORE_STMT_CACHE)
            free_slot = i;
        kept += ls->cache[i].kept;
    }
    if (st == NULL) {
        /* At most STORE_STMT_KEPT of the cache's slots, so the literals always find room. */
        bool room = free_slot < STORE_STMT_CACHE && kept < STORE_STMT_KEPT;
        char *copy = room ? strdup(sql) : NULL;
        if (copy == NULL)
            return sqlite_store_exec(s, sql); /* no room to keep it: parsed this once */
        if (sqlite3_prepare_v3(ls->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
            SQLITE_OK) {
            free(copy);
            snprintf(s->errmsg, sizeof(s->errmsg), "%s", sqlite3_errmsg(ls->db));
            return STORE_ERR;
        }
        ls->cache[free_slot] = (struct sqlite_stmt){.base = {.backend = STORE_BACKEND_SQLITE},
                                                    .sql = copy,
                                                    .kept = true,
                                                    .stmt = st,
                                                    .conn = ls};
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        continue;
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        snprintf(s->errmsg, sizeof(s->errmsg), "%s", sqlite3_errmsg(ls->db)); /* as store_exec */
        return STORE_ERR;
    }
    return STORE_OK;
}

void sqlite_stmt_cache_free(struct sqlite_store *ls)
{
    for (size_t i = 0; i < STORE_STMT_CACHE; i++) {
        sqlite3_finalize(ls->cache[i].stmt);
        if (ls->cache[i].kept)
            free((char *)ls->cache[i].sql);
        ls->cache[i] = (struct sqlite_stmt){0};
    }
}

/* A failed bind (a parameter number out of range, a value past SQLite's length limit) is kept
 * for sql_step, which then refuses to run the statement with that parameter left NULL. */
static void bound(struct sqlite_stmt *st, int rc)
{
    if (rc != SQLITE_OK && st->bind_rc == SQLITE_OK)
        st->bind_rc = rc;
}

void sqlite_sql_bind_i64(struct sql_stmt *base, int idx, int64_t v)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    bound(st, sqlite3_bind_int64(st->stmt, idx, v));
}

void sqlite_sql_bind_text(struct sql_stmt *base, int idx, const char *v)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    bound(st, sqlite3_bind_text(st->stmt, idx, v, -1, SQLITE_STATIC));
}

void sqlite_sql_bind_blob(struct sql_stmt *base, int idx, const void *p, size_t len)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    bound(st, sqlite3_bind_blob64(st->stmt, idx, p, len, SQLITE_STATIC));
}

void sqlite_sql_bind_null(struct sql_stmt *base, int idx)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    bound(st, sqlite3_bind_null(st->stmt, idx));
}

int sqlite_sql_step(struct sql_stmt *base)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    if (st->bind_rc != SQLITE_OK)
        return STORE_ERR; /* the connection's error text is the bind's */
    if (st->id_row) {
        st->id_row = false; /* the one row has been read: the end */
        return SQL_DONE;
    }
    int rc = sqlite3_step(st->stmt);
    if (rc == SQLITE_ROW)
        return SQL_ROW;
    if (rc == SQLITE_DONE) {
        if (st->returning_id && sqlite3_changes(st->conn->db) > 0) {
            st->id = sqlite3_last_insert_rowid(st->conn->db);
            st->id_row = true;
            return SQL_ROW;
        }
        return SQL_DONE;
    }
    switch (sqlite3_extended_errcode(st->conn->db)) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return STORE_EXISTS;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
    case SQLITE_CONSTRAINT_TRIGGER:
        /* ON DELETE RESTRICT reports itself as a trigger constraint. */
        return STORE_IN_USE;
    default:
        return STORE_ERR;
    }
}

int64_t sqlite_sql_col_i64(struct sql_stmt *base, int col)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    if (st->id_row)
        return col == 0 ? st->id : 0;
    return sqlite3_column_int64(st->stmt, col);
}

const char *sqlite_sql_col_text(struct sql_stmt *base, int col)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    return (const char *)sqlite3_column_text(st->stmt, col);
}

const void *sqlite_sql_col_blob(struct sql_stmt *base, int col, size_t *len_out)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    /* The blob first, then its length: the order SQLite documents for a stable answer. */
    const void *p = sqlite3_column_blob(st->stmt, col);
    int n = sqlite3_column_bytes(st->stmt, col);
    *len_out = n > 0 ? (size_t)n : 0;
    return p;
}

bool sqlite_sql_col_null(struct sql_stmt *base, int col)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    return sqlite3_column_type(st->stmt, col) == SQLITE_NULL;
}

int64_t sqlite_sql_changes(struct sql_stmt *base)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    return sqlite3_changes(st->conn->db);
}

void sqlite_sql_reset(struct sql_stmt *base)
{
    struct sqlite_stmt *st = sqlite_stmt_of(base);
    st->id_row = false;
    sqlite3_reset(st->stmt);
}

int sqlite_store_exec(struct store *s, const char *sql)
{
    struct sqlite_store *ls = sqlite_of(s);
    char *msg = NULL;
    if (sqlite3_exec(ls->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(s->errmsg, sizeof(s->errmsg), "%s", msg ? msg : sqlite3_errmsg(ls->db));
        sqlite3_free(msg);
        return STORE_ERR;
    }
    return STORE_OK;
}

const char *sqlite_store_errmsg(struct store *s)
{
    return sqlite3_errmsg(sqlite_of(s)->db);
}

bool sqlite_store_in_transaction(struct store *s)
{
    return !sqlite3_get_autocommit(sqlite_of(s)->db);
}
