/*
 * body_write.c - a message body into SQLite in place (store_internal.h: store_body_create, _write,
 * _finish), and the first bytes of a stored body read back on the store's own connection
 * (store_body_read_head, for the headers a bounce quotes).
 *
 * Bodies go in with a zeroblob placeholder that is then filled through sqlite3_blob_write: SQLite
 * writes the caller's buffer straight into the database pages. Binding the buffer instead, even
 * with SQLITE_STATIC, makes SQLite assemble the whole row in one allocation first, a second copy
 * of the body: measured for a 20 MiB body, SQLite's memory high water is about 22 MiB bound and
 * about 2 MiB (the page cache) with the zeroblob.
 *
 * What it does not do: decide what a body holds or scan it (storage/mailbox.c does both), or
 * stream a body out to a client (body_reader.c).
 */
#include "storage/sqlite/sqlite_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* Body bytes per sqlite3_blob_write call (its length and offset are ints). */
#define BODY_WRITE_CHUNK_BYTES (1024 * 1024)

uint64_t sqlite_body_max_bytes(struct store *s)
{
    /* SQLITE_LIMIT_LENGTH caps a blob (1e9 by default); sqlite3_blob_write offsets are ints. */
    int limit = sqlite3_limit(sqlite_of(s)->db, SQLITE_LIMIT_LENGTH, -1);
    return limit < INT_MAX ? (uint64_t)limit : (uint64_t)INT_MAX;
}

int sqlite_body_create(struct store *s, const struct store_message_row *m, int64_t *id_out)
{
    struct sqlite_store *ls = sqlite_of(s);
    if (ls->body.active) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: a body is already being written");
        return STORE_ERR;
    }
    if (m->size_bytes < 0 || (uint64_t)m->size_bytes > store_body_max_bytes(s)) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: a body of %lld bytes cannot be stored",
                 (long long)m->size_bytes);
        return STORE_ERR;
    }
    /* zeroblob() is SQLite's: the room the blob handle below fills. */
    struct sql_stmt *st =
        sql_prepare(s, "INSERT INTO messages(sender, size, received_ms, body, quarantine,"
                       " dsn_envid, dsn_ret) VALUES (?1, ?2, ?3, zeroblob(?2), ?4, ?5, ?6)"
                       " RETURNING id");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, m->sender != NULL ? m->sender : "");
    sql_bind_i64(st, 2, m->size_bytes);
    sql_bind_i64(st, 3, m->received_ms);
    if (m->quarantine != NULL)
        sql_bind_text(st, 4, m->quarantine);
    else
        sql_bind_null(st, 4);
    if (m->dsn_envid != NULL)
        sql_bind_text(st, 5, m->dsn_envid);
    else
        sql_bind_null(st, 5);
    sql_bind_i64(st, 6, m->dsn_ret);
    int64_t id = 0;
    int status = store_step_id(s, st, "deliver: insert message", &id);
    if (status == STORE_NOT_FOUND)
        status = STORE_ERR; /* a VALUES insert always inserts */
    if (status != STORE_OK)
        return status;
    if (m->size_bytes > 0 &&
        sqlite3_blob_open(ls->db, "main", "messages", "body", id, 1, &ls->body.blob) != SQLITE_OK) {
        status = store_fail(s, "deliver: open body");
        (void)sqlite3_blob_close(ls->body.blob); /* a failed open may still hand out a handle */
        ls->body.blob = NULL;
        return status;
    }
    ls->body.active = true;
    ls->body.status = STORE_OK;
    ls->body.off_bytes = 0;
    ls->body.size_bytes = (uint64_t)m->size_bytes;
    *id_out = id;
    return STORE_OK;
}

int sqlite_body_write(struct store *s, const void *p, size_t n)
{
    struct sqlite_store *ls = sqlite_of(s);
    if (ls->body.status != STORE_OK)
        return ls->body.status;
    if (n == 0)
        return STORE_OK;
    if (ls->body.blob == NULL || n > ls->body.size_bytes - ls->body.off_bytes) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: body longer than its %llu bytes",
                 (unsigned long long)ls->body.size_bytes);
        ls->body.status = STORE_ERR;
        return STORE_ERR;
    }
    const unsigned char *q = p;
    for (size_t done = 0; done < n;) {
        size_t k = n - done;
        if (k > BODY_WRITE_CHUNK_BYTES)
            k = BODY_WRITE_CHUNK_BYTES;
        /* Both fit an int: the size is at most store_body_max_bytes. */
        if (sqlite3_blob_write(ls->body.blob, q + done, (int)k, (int)ls->body.off_bytes) !=
            SQLITE_OK) {
            ls->body.status = store_fail(s, "deliver: write body");
            return STORE_ERR;
        }
        done += k;
        ls->body.off_bytes += k;
    }
    return STORE_OK;
}

int sqlite_body_finish(struct store *s, bool abandon)
{
    struct sqlite_store *ls = sqlite_of(s);
    if (abandon) {
        /* The caller failed and keeps its own error text; its savepoint undo drops the row. */
        (void)sqlite3_blob_close(ls->body.blob);
        ls->body.blob = NULL;
        ls->body.active = false;
        ls->body.status = STORE_OK;
        return STORE_ERR;
    }
    int status = ls->body.status;
    if (status == STORE_OK && ls->body.off_bytes != ls->body.size_bytes) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: body of %llu bytes given %llu",
                 (unsigned long long)ls->body.size_bytes, (unsigned long long)ls->body.off_bytes);
        status = STORE_ERR;
    }
    if (ls->body.blob != NULL && sqlite3_blob_close(ls->body.blob) != SQLITE_OK &&
        status == STORE_OK)
        status = store_fail(s, "deliver: close body");
    ls->body.blob = NULL;
    ls->body.active = false;
    ls->body.status = STORE_OK;
    return status;
}

int sqlite_body_read_head(struct store *s, int64_t message_id, size_t max, unsigned char **out,
                          size_t *len_out)
{
    struct sqlite_store *ls = sqlite_of(s);
    *out = NULL;
    *len_out = 0;
    sqlite3_blob *blob = NULL;
    if (sqlite3_blob_open(ls->db, "main", "messages", "body", message_id, 0, &blob) != SQLITE_OK) {
        snprintf(s->errmsg, sizeof(s->errmsg), "open the body of message %lld: %s",
                 (long long)message_id, sqlite3_errmsg(ls->db));
        (void)sqlite3_blob_close(blob); /* a failed open may still hand out a handle */
        return STORE_ERR;
    }
    int size = sqlite3_blob_bytes(blob);
    size_t n = size < 0 ? 0 : (size_t)size;
    if (n > max)
        n = max;
    unsigned char *buf = malloc(n > 0 ? n : 1);
    int status = STORE_OK;
    if (buf == NULL) {
        snprintf(s->errmsg, sizeof(s->errmsg), "read the body of message %lld: out of memory",
                 (long long)message_id);
        status = STORE_ERR;
    } else if (n > 0 && sqlite3_blob_read(blob, buf, (int)n, 0) != SQLITE_OK) {
        /* n fits an int: it is at most the blob's size, an int. */
        snprintf(s->errmsg, sizeof(s->errmsg), "read the body of message %lld: %s",
                 (long long)message_id, sqlite3_errmsg(ls->db));
        status = STORE_ERR;
    }
    /* A read-only handle loses nothing on close. */
    (void)sqlite3_blob_close(blob);
    if (status != STORE_OK) {
        free(buf);
        return status;
    }
    *out = buf;
    *len_out = n;
    return STORE_OK;
}
