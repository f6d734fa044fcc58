/*
 * backends.h - the calls each backend provides, under its own prefix: sqlite_ (storage/sqlite/)
 * and pg_ (storage/postgres/). Each has the meaning of the unprefixed call of storage/sql.h or
 * storage/store_internal.h; storage/backend.c is the only caller and picks one by the store's
 * tag. Nothing but storage/backend.c and the backends' own files includes this.
 */
#ifndef POSTERN_BACKENDS_H
#define POSTERN_BACKENDS_H

#include "storage/store_internal.h"

/* ---- SQLite: storage/sqlite/ ---- */
struct sql_stmt *sqlite_sql_prepare(struct store *s, const char *sql);
void sqlite_sql_bind_i64(struct sql_stmt *st, int idx, int64_t v);
void sqlite_sql_bind_text(struct sql_stmt *st, int idx, const char *v);
void sqlite_sql_bind_blob(struct sql_stmt *st, int idx, const void *p, size_t len);
void sqlite_sql_bind_null(struct sql_stmt *st, int idx);
int sqlite_sql_step(struct sql_stmt *st);
int64_t sqlite_sql_col_i64(struct sql_stmt *st, int col);
const char *sqlite_sql_col_text(struct sql_stmt *st, int col);
const void *sqlite_sql_col_blob(struct sql_stmt *st, int col, size_t *len_out);
bool sqlite_sql_col_null(struct sql_stmt *st, int col);
int64_t sqlite_sql_changes(struct sql_stmt *st);
void sqlite_sql_reset(struct sql_stmt *st);
int sqlite_store_exec(struct store *s, const char *sql);
int sqlite_store_exec_kept(struct store *s, const char *sql);
const char *sqlite_store_errmsg(struct store *s);
bool sqlite_store_in_transaction(struct store *s);
int sqlite_store_begin(struct store *s);
int sqlite_store_schema_version(struct store *s);
uint64_t sqlite_body_max_bytes(struct store *s);
int sqlite_body_create(struct store *s, const struct store_message_row *m, int64_t *id_out);
int sqlite_body_write(struct store *s, const void *p, size_t n);
int sqlite_body_finish(struct store *s, bool abandon);
int sqlite_body_read_head(struct store *s, int64_t message_id, size_t max, unsigned char **out,
                          size_t *len_out);
int sqlite_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                            const char *what, const char *owner, int64_t hold_ms,
                            struct store_body_reader **reader_out, int64_t *size_out);
int sqlite_body_read(struct store_body_reader *r, void *buf, size_t cap, size_t *n_out);
void sqlite_body_close(struct store_body_reader *r);
void sqlite_read_pool_stats(const struct store *s, size_t *idle_out, uint64_t *opened_out);

/* ---- PostgreSQL: storage/postgres/ ---- */
struct sql_stmt *pg_sql_prepare(struct store *s, const char *sql);
void pg_sql_bind_i64(struct sql_stmt *st, int idx, int64_t v);
void pg_sql_bind_text(struct sql_stmt *st, int idx, const char *v);
void pg_sql_bind_blob(struct sql_stmt *st, int idx, const void *p, size_t len);
void pg_sql_bind_null(struct sql_stmt *st, int idx);
int pg_sql_step(struct sql_stmt *st);
int64_t pg_sql_col_i64(struct sql_stmt *st, int col);
const char *pg_sql_col_text(struct sql_stmt *st, int col);
const void *pg_sql_col_blob(struct sql_stmt *st, int col, size_t *len_out);
bool pg_sql_col_null(struct sql_stmt *st, int col);
int64_t pg_sql_changes(struct sql_stmt *st);
void pg_sql_reset(struct sql_stmt *st);
int pg_store_exec(struct store *s, const char *sql);
const char *pg_store_errmsg(struct store *s);
int pg_store_announce(struct store *s, const char *channel);
int pg_listener_start(const char *conninfo, const char *channel, store_listener_fn fn, void *arg,
                      struct store_listener **out, char *err, size_t errlen);
void pg_listener_stop(struct store_listener **l);
bool pg_store_in_transaction(struct store *s);
int pg_store_begin(struct store *s);
int pg_store_schema_version(struct store *s);
uint64_t pg_body_max_bytes(struct store *s);
int pg_body_create(struct store *s, const struct store_message_row *m, int64_t *id_out);
int pg_body_write(struct store *s, const void *p, size_t n);
int pg_body_finish(struct store *s, bool abandon);
int pg_body_read_head(struct store *s, int64_t message_id, size_t max, unsigned char **out,
                      size_t *len_out);
int pg_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                        const char *what, const char *owner, int64_t hold_ms,
                        struct store_body_reader **reader_out, int64_t *size_out);
int pg_body_read(struct store_body_reader *r, void *buf, size_t cap, size_t *n_out);
void pg_body_close(struct store_body_reader *r);
/* Named savepoints with SQLite's meaning (pg_conn.h: pg_sp_begin), the store's error text kept
 * as store_sp_undo promises. */
int pg_store_sp_begin(struct store *s, const char *name);
int pg_store_sp_release(struct store *s, const char *name);
int pg_store_sp_undo(struct store *s, const char *name);

#endif
