/*
 * backend.c - routes each call of storage/sql.h and of the per-backend part of
 * storage/store_internal.h to the backend of the store it is made on: the tag in struct store,
 * or in struct sql_stmt for the calls given only a statement, or in the reader's store. SQLite
 * is tested first, so its calls pay one predictable branch and a direct call.
 *
 * What it does not do: anything else. Choosing the backend is store_open's (storage/store.c); the
 * calls themselves are the backends' (storage/backends.h).
 */
#include "storage/backends.h"

#define IS_SQLITE(tag) ((tag) == STORE_BACKEND_SQLITE)

struct sql_stmt *sql_prepare(struct store *s, const char *sql)
{
    return IS_SQLITE(s->backend) ? sqlite_sql_prepare(s, sql) : pg_sql_prepare(s, sql);
}

void sql_bind_i64(struct sql_stmt *st, int idx, int64_t v)
{
    if (IS_SQLITE(st->backend))
        sqlite_sql_bind_i64(st, idx, v);
    else
        pg_sql_bind_i64(st, idx, v);
}

void sql_bind_text(struct sql_stmt *st, int idx, const char *v)
{
    if (IS_SQLITE(st->backend))
        sqlite_sql_bind_text(st, idx, v);
    else
        pg_sql_bind_text(st, idx, v);
}

void sql_bind_blob(struct sql_stmt *st, int idx, const void *p, size_t len)
{
    if (IS_SQLITE(st->backend))
        sqlite_sql_bind_blob(st, idx, p, len);
    else
        pg_sql_bind_blob(st, idx, p, len);
}

void sql_bind_null(struct sql_stmt *st, int idx)
{
    if (IS_SQLITE(st->backend))
        sqlite_sql_bind_null(st, idx);
    else
        pg_sql_bind_null(st, idx);
}

int sql_step(struct sql_stmt *st)
{
    return IS_SQLITE(st->backend) ? sqlite_sql_step(st) : pg_sql_step(st);
}

int64_t sql_col_i64(struct sql_stmt *st, int col)
{
    return IS_SQLITE(st->backend) ? sqlite_sql_col_i64(st, col) : pg_sql_col_i64(st, col);
}

const char *sql_col_text(struct sql_stmt *st, int col)
{
    return IS_SQLITE(st->backend) ? sqlite_sql_col_text(st, col) : pg_sql_col_text(st, col);
}

const void *sql_col_blob(struct sql_stmt *st, int col, size_t *len_out)
{
    return IS_SQLITE(st->backend) ? sqlite_sql_col_blob(st, col, len_out)
                                  : pg_sql_col_blob(st, col, len_out);
}

bool sql_col_null(struct sql_stmt *st, int col)
{
    return IS_SQLITE(st->backend) ? sqlite_sql_col_null(st, col) : pg_sql_col_null(st, col);
}

int64_t sql_changes(struct sql_stmt *st)
{
    return IS_SQLITE(st->backend) ? sqlite_sql_changes(st) : pg_sql_changes(st);
}

int store_exec(struct store *s, const char *sql)
{
    return IS_SQLITE(s->backend) ? sqlite_store_exec(s, sql) : pg_store_exec(s, sql);
}

int store_exec_kept(struct store *s, const char *sql)
{
    return IS_SQLITE(s->backend) ? sqlite_store_exec_kept(s, sql) : pg_store_exec(s, sql);
}

const char *store_backend_errmsg(struct store *s)
{
    return IS_SQLITE(s->backend) ? sqlite_store_errmsg(s) : pg_store_errmsg(s);
}

bool store_in_transaction(struct store *s)
{
    return IS_SQLITE(s->backend) ? sqlite_store_in_transaction(s) : pg_store_in_transaction(s);
}

int store_begin(struct store *s)
{
    return IS_SQLITE(s->backend) ? sqlite_store_begin(s) : pg_store_begin(s);
}

int store_schema_version(struct store *s)
{
    return IS_SQLITE(s->backend) ? sqlite_store_schema_version(s) : pg_store_schema_version(s);
}

uint64_t store_body_max_bytes(struct store *s)
{
    return IS_SQLITE(s->backend) ? sqlite_body_max_bytes(s) : pg_body_max_bytes(s);
}

int store_body_create(struct store *s, const struct store_message_row *m, int64_t *id_out)
{
    return IS_SQLITE(s->backend) ? sqlite_body_create(s, m, id_out) : pg_body_create(s, m, id_out);
}

int store_body_write(struct store *s, const void *p, size_t n)
{
    return IS_SQLITE(s->backend) ? sqlite_body_write(s, p, n) : pg_body_write(s, p, n);
}

int store_body_finish(struct store *s, bool abandon)
{
    return IS_SQLITE(s->backend) ? sqlite_body_finish(s, abandon) : pg_body_finish(s, abandon);
}

int store_body_read_head(struct store *s, int64_t message_id, size_t max, unsigned char **out,
                         size_t *len_out)
{
    return IS_SQLITE(s->backend) ? sqlite_body_read_head(s, message_id, max, out, len_out)
                                 : pg_body_read_head(s, message_id, max, out, len_out);
}

int store_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                           const char *what, const char *owner, int64_t hold_ms,
                           struct store_body_reader **reader_out, int64_t *size_out)
{
    return IS_SQLITE(s->backend) ? sqlite_body_reader_open(s, lookup_sql, key1, key2, what, owner,
                                                           hold_ms, reader_out, size_out)
                                 : pg_body_reader_open(s, lookup_sql, key1, key2, what, owner,
                                                       hold_ms, reader_out, size_out);
}

int store_body_read(struct store_body_reader *r, void *buf, size_t cap, size_t *n_out)
{
    return IS_SQLITE(r->backend) ? sqlite_body_read(r, buf, cap, n_out)
                                 : pg_body_read(r, buf, cap, n_out);
}

/* The same for both backends: a reader holds no statement of its store between reads (SQLite's
 * keeps a pooled connection of its own, PostgreSQL's only bytes fetched ahead). */
void store_body_rebind(struct store_body_reader *r, struct store *s)
{
    r->s = s;
}

void sql_reset(struct sql_stmt *st)
{
    if (st == NULL)
        return;
    if (IS_SQLITE(st->backend))
        sqlite_sql_reset(st);
    else
        pg_sql_reset(st);
}

void store_body_close(struct store_body_reader **rp)
{
    struct store_body_reader *r = *rp;
    if (r == NULL)
        return;
    if (IS_SQLITE(r->backend))
        sqlite_body_close(r);
    else
        pg_body_close(r);
    *rp = NULL;
}

void store_read_pool_stats(const struct store *s, size_t *idle_out, uint64_t *opened_out)
{
    if (IS_SQLITE(s->backend)) {
        sqlite_read_pool_stats(s, idle_out, opened_out);
        return;
    }
    /* PostgreSQL readers read on the store's own connection: there is no pool. */
    *idle_out = 0;
    *opened_out = 0;
}
