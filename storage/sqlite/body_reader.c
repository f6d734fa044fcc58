/*
 * body_reader.c - streams a message body out of the SQLite store in caller-sized chunks without
 * holding it whole, through a small pool of read-only connections that the store keeps: the
 * SQLite side of store_body_reader_open (storage/store_internal.h). One reader serves
 * the POP3 maildrop (a mailbox entry, storage/mailbox.c) and the outbound queue (a queued message,
 * storage/queue.c); they differ only in the statement that finds the message and checks it is
 * still theirs.
 *
 * Why a blob handle kept between calls: a freshly opened blob handle reaches offset X by walking
 * the body's overflow-page chain from the start, so reopening per 64 KiB chunk makes reading a
 * 20 MiB body O(n^2) (about 0.5 s of CPU, measured), while one handle kept open reads it in about
 * 4 ms. A handle holds a read transaction, and on the store's own connection that would freeze
 * every other session's view of the database, so a handle lives on a separate read-only
 * connection, and is dropped once it is older than hold_ms: a slow client pins the WAL for at
 * most hold_ms at a time. Each reopen runs the lookup again, so a message deleted meanwhile ends
 * the read with STORE_NOT_FOUND, never with the bytes of another message (message ids are never
 * reused).
 *
 * Why a pool: opening a connection parses the whole schema (about 50 us and most of the cost of a
 * small RETR, measured), and so does preparing its lookup. So the store keeps up to
 * STORE_READ_POOL_MAX idle read-only connections, each with its statements prepared once, and a
 * reader borrows one only while it holds a blob handle: from the attach to the end of the body,
 * the end of hold_ms, a failure or the close. A body that fits in the caller's buffer (a 4 KB
 * message read 32 KiB at a time) is read in one call, and its connection is back in the pool, its
 * snapshot released, before that call returns. When the pool is empty a reader opens a connection
 * of its own, and a connection given back to a full pool is closed: the pool bounds the idle
 * connections (memory), never the readers. An idle pooled connection holds no transaction (every
 * statement is reset after its step), so it pins nothing.
 *
 * Threads: a reader is used by one thread at a time. With reader threads (storage/reader.h) the
 * chunks of one body are read by jobs that may land on different threads, one after the other;
 * each job rebinds the reader to its own thread's store for the read (store_body_rebind) and
 * unbinds it after, so the pool and the error text it touches are always the running thread's.
 * The connection it holds meanwhile travels with it: a SQLite connection may be used by several
 * threads as long as never by two at once. Closed unbound, it closes that connection itself.
 *
 * What it does not do: know what a body is for (dot-stuffing is common/pure/dotstuff.c), or write.
 */
#include "storage/sqlite/sqlite_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/clock.h"

/* Page cache of a pooled connection (KiB when negative): a body is read once. */
#define READ_CONN_CACHE_PRAGMA "PRAGMA cache_size = -64"
/* Asked when a blob cannot be opened: is the message still there? */
#define MESSAGE_EXISTS_SQL "SELECT 1 FROM messages WHERE id = ?1"

struct sqlite_body_reader {
    struct store_body_reader base; /* first: base.s lends the connection, receives error texts */
    struct sqlite_read_conn *rc;   /* borrowed from s's pool while blob is open, else NULL */
    sqlite3_blob *blob;            /* owned; NULL while no snapshot is held */
    sqlite3_stmt *lookup;          /* borrowed from rc, left on its row while blob is open */
    const char *lookup_sql;        /* borrowed: a string literal, the key of rc's statement cache */
    int64_t key1, key2;            /* bound to ?1 and ?2 of lookup */
    const char *what, *owner;      /* borrowed literals naming key1 and key2 in error texts */
    int64_t message_id;            /* 0 until the first attach */
    int64_t size_bytes;
    int64_t offset_bytes;   /* next byte to hand out */
    int64_t hold_ms;        /* longest a blob handle is kept */
    int64_t blob_opened_ms; /* monotonic, when blob was opened */
    bool failed;            /* a read failed: only close is allowed */
};

/* "mailbox entry 5 of user 3": made only for an error text, never on the way of a read. */
#define READER_NAME_BYTES 96
static const char *reader_name(const struct sqlite_body_reader *r, char *buf)
{
    if (r->owner != NULL)
        snprintf(buf, READER_NAME_BYTES, "%s %lld of %s %lld", r->what, (long long)r->key1,
                 r->owner, (long long)r->key2);
    else
        snprintf(buf, READER_NAME_BYTES, "%s %lld", r->what, (long long)r->key1);
    return buf;
}

/* ---- the pool ---- */

static void read_conn_free(struct sqlite_read_conn *rc)
{
    if (rc == NULL)
        return;
    for (size_t i = 0; i < STORE_READ_CONN_STMTS; i++)
        sqlite3_finalize(rc->stmts[i].stmt);
    /* Only unfinalized statements make close fail, and there are none left. */
    if (rc->db != NULL && sqlite3_close(rc->db) != SQLITE_OK)
        sqlite3_close_v2(rc->db);
    free(rc);
}

/* An idle connection from the pool, or a new one; NULL with s->errmsg set on failure. */
static struct sqlite_read_conn *pool_take(const struct sqlite_body_reader *r)
{
    struct store *s = r->base.s;
    struct sqlite_store *ls = sqlite_of(s);
    char name[READER_NAME_BYTES];
    struct sqlite_read_conn *rc = ls->read_pool.idle;
    if (rc != NULL) {
        ls->read_pool.idle = rc->next;
        ls->read_pool.n_idle--;
        rc->next = NULL;
        return rc;
    }
    rc = calloc(1, sizeof(*rc));
    if (rc == NULL) {
        snprintf(s->errmsg, sizeof(s->errmsg), "read %s: out of memory", reader_name(r, name));
        return NULL;
    }
    /* Read-only, no CREATE: the database exists (s is open on it), and this must never write. */
    const char *doing = "open the database to read";
    int ok = sqlite3_open_v2(s->path, &rc->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) ==
             SQLITE_OK;
    if (ok) {
        doing = "set up a read connection for";
        sqlite3_extended_result_codes(rc->db, 1);
        ok = sqlite3_busy_timeout(rc->db, STORE_BUSY_TIMEOUT_MS) == SQLITE_OK &&
             sqlite3_exec(rc->db, READ_CONN_CACHE_PRAGMA, NULL, NULL, NULL) == SQLITE_OK;
    }
    if (!ok) {
        snprintf(s->errmsg, sizeof(s->errmsg), "%s %s: %s", doing, reader_name(r, name),
                 rc->db != NULL ? sqlite3_errmsg(rc->db) : "out of memory");
        read_conn_free(rc);
        return NULL;
    }
    ls->read_pool.opened++;
    return rc;
}

/* Gives rc back: kept while the pool has room and rc is sound, else closed. s is NULL for a
 * reader between two threads' jobs (store_body_rebind): then there is no pool to give it to. */
static void pool_give(struct store *s, struct sqlite_read_conn *rc, bool sound)
{
    struct sqlite_store *ls = s != NULL ? sqlite_of(s) : NULL;
    if (rc == NULL)
        return;
    if (ls == NULL || !sound || ls->read_pool.n_idle >= STORE_READ_POOL_MAX) {
        read_conn_free(rc);
        return;
    }
    rc->next = ls->read_pool.idle;
    ls->read_pool.idle = rc;
    ls->read_pool.n_idle++;
}

void sqlite_read_pool_free(struct sqlite_store *ls)
{
    while (ls->read_pool.idle != NULL) {
        struct sqlite_read_conn *rc = ls->read_pool.idle;
        ls->read_pool.idle = rc->next;
        read_conn_free(rc);
    }
    ls->read_pool.n_idle = 0;
}

void sqlite_read_pool_stats(const struct store *s, size_t *idle_out, uint64_t *opened_out)
{
    const struct sqlite_store *ls = container_of(s, const struct sqlite_store, base);
    *idle_out = ls->read_pool.n_idle;
    *opened_out = ls->read_pool.opened;
}

/* rc's statement for sql (a string literal), prepared on first use and reset; NULL on failure. */
static sqlite3_stmt *read_conn_stmt(struct sqlite_read_conn *rc, const char *sql)
{
    size_t i = 0;
    while (i < STORE_READ_CONN_STMTS && rc->stmts[i].sql != NULL && rc->stmts[i].sql != sql)
        i++;
    if (i == STORE_READ_CONN_STMTS)
        i = STORE_READ_CONN_STMTS - 1; /* more statements than ever used: reuse the last slot */
    if (rc->stmts[i].sql == sql)
        return rc->stmts[i].stmt;
    sqlite3_finalize(rc->stmts[i].stmt);
    rc->stmts[i].sql = NULL;
    rc->stmts[i].stmt = NULL;
    if (sqlite3_prepare_v3(rc->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &rc->stmts[i].stmt, NULL) !=
        SQLITE_OK)
        return NULL;
    rc->stmts[i].sql = sql;
    return rc->stmts[i].stmt;
}

/* ---- the reader ---- */

static int reader_fail(struct sqlite_body_reader *r, const char *doing)
{
    char name[READER_NAME_BYTES];
    snprintf(r->base.s->errmsg, sizeof(r->base.s->errmsg), "%s %s: %s", doing, reader_name(r, name),
             r->rc != NULL ? sqlite3_errmsg(r->rc->db) : "no connection");
    return STORE_ERR;
}

static int reader_gone(struct sqlite_body_reader *r)
{
    char name[READER_NAME_BYTES];
    snprintf(r->base.s->errmsg, sizeof(r->base.s->errmsg), "%s is gone", reader_name(r, name));
    return STORE_NOT_FOUND;
}

/* Drops the snapshot and lends the connection back; sound is false after a SQLite failure. */
static void reader_detach(struct sqlite_body_reader *r, bool sound)
{
    /* Closing a read-only handle cannot lose anything; its result is only about the handle. */
    (void)sqlite3_blob_close(r->blob);
    r->blob = NULL;
    /* The lookup's result is already known; resetting it ends the read transaction. */
    if (r->lookup != NULL)
        sqlite3_reset(r->lookup);
    r->lookup = NULL;
    pool_give(r->base.s, r->rc, sound);
    r->rc = NULL;
}

/* After a failed blob open: is the message gone (STORE_NOT_FOUND) or did SQLite fail? */
static int reader_why_no_blob(struct sqlite_body_reader *r, int64_t message_id)
{
    int status = reader_fail(r, "open the body of");
    sqlite3_stmt *st = read_conn_stmt(r->rc, MESSAGE_EXISTS_SQL);
    if (st != NULL) {
        sqlite3_bind_int64(st, 1, message_id);
        if (sqlite3_step(st) == SQLITE_DONE)
            status = reader_gone(r);
        sqlite3_reset(st);
    }
    return status;
}

/* Borrows a connection, runs the lookup again (the message must still be there, the same one
 * with the same size) and opens a fresh blob handle: a new read snapshot. The lookup is left on
 * its row until the detach, so the blob is opened in the lookup's read transaction: one snapshot
 * for both (nothing can be deleted between them), and one transaction start rather than two. On
 * failure the connection is given back. */
static int reader_attach(struct sqlite_body_reader *r)
{
    r->rc = pool_take(r);
    if (r->rc == NULL)
        return STORE_ERR;
    sqlite3_stmt *lookup = read_conn_stmt(r->rc, r->lookup_sql);
    r->lookup = lookup;
    if (lookup == NULL) {
        int status = reader_fail(r, "prepare the lookup of");
        reader_detach(r, false);
        return status;
    }
    sqlite3_bind_int64(lookup, 1, r->key1);
    if (sqlite3_bind_parameter_count(lookup) >= 2)
        sqlite3_bind_int64(lookup, 2, r->key2);
    int rc = sqlite3_step(lookup);
    int64_t message_id = rc == SQLITE_ROW ? sqlite3_column_int64(lookup, 0) : 0;
    int64_t size = rc == SQLITE_ROW ? sqlite3_column_int64(lookup, 1) : 0;
    int status = STORE_OK;
    if (rc == SQLITE_DONE)
        status = reader_gone(r);
    else if (rc != SQLITE_ROW)
        status = reader_fail(r, "look up");
    else if (r->message_id != 0 && (message_id != r->message_id || size != r->size_bytes))
        status = reader_gone(r); /* cannot happen (bodies never change); never mix bodies */
    else if (sqlite3_blob_open(r->rc->db, "main", "messages", "body", message_id, 0, &r->blob) !=
             SQLITE_OK) {
        (void)sqlite3_blob_close(r->blob); /* a failed open may still hand out a handle */
        r->blob = NULL;
        status = reader_why_no_blob(r, message_id);
    } else if (sqlite3_blob_bytes(r->blob) != size) {
        char name[READER_NAME_BYTES];
        snprintf(r->base.s->errmsg, sizeof(r->base.s->errmsg),
                 "%s: size %lld but the body has another length", reader_name(r, name),
                 (long long)size);
        status = STORE_ERR;
    }
    if (status != STORE_OK) {
        reader_detach(r, status == STORE_NOT_FOUND);
        return status;
    }
    r->message_id = message_id;
    r->size_bytes = size;
    r->blob_opened_ms = clock_monotonic_ms();
    return STORE_OK;
}

int sqlite_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                            const char *what, const char *owner, int64_t hold_ms,
                            struct store_body_reader **reader_out, int64_t *size_out)
{
    *reader_out = NULL;
    struct sqlite_body_reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(s->errmsg, sizeof(s->errmsg), "open %s %lld: out of memory", what,
                 (long long)key1);
        return STORE_ERR;
    }
    r->base.backend = STORE_BACKEND_SQLITE;
    r->base.s = s;
    r->lookup_sql = lookup_sql;
    r->key1 = key1;
    r->key2 = key2;
    r->hold_ms = hold_ms < 0 ? 0 : hold_ms;
    r->what = what;
    r->owner = owner;
    int status = reader_attach(r);
    if (status != STORE_OK) {
        free(r);
        return status;
    }
    if (r->hold_ms == 0 || r->size_bytes == 0)
        reader_detach(r, true);
    if (size_out != NULL)
        *size_out = r->size_bytes;
    *reader_out = &r->base;
    return STORE_OK;
}

int sqlite_body_read(struct store_body_reader *base, void *buf, size_t cap, size_t *n_out)
{
    struct sqlite_body_reader *r = container_of(base, struct sqlite_body_reader, base);
    *n_out = 0;
    if (r->failed) {
        char name[READER_NAME_BYTES];
        snprintf(r->base.s->errmsg, sizeof(r->base.s->errmsg), "read %s: reader already failed",
                 reader_name(r, name));
        return STORE_ERR;
    }
    if (r->offset_bytes >= r->size_bytes || cap == 0)
        return STORE_OK;
    if (r->blob != NULL && clock_monotonic_ms() - r->blob_opened_ms >= r->hold_ms)
        reader_detach(r, true); /* let the WAL move on; the next line takes a fresh snapshot */
    int status = r->blob == NULL ? reader_attach(r) : STORE_OK;
    bool sound = true;
    if (status == STORE_OK) {
        uint64_t left = (uint64_t)(r->size_bytes - r->offset_bytes); /* > 0 here */
        size_t n = cap > left ? (size_t)left : cap;
        if (n > INT_MAX)
            n = INT_MAX;
        /* The offset fits an int: size equals sqlite3_blob_bytes (checked on attach), an int. */
        int rc = sqlite3_blob_read(r->blob, buf, (int)n, (int)r->offset_bytes);
        if (rc == SQLITE_OK) {
            r->offset_bytes += (int64_t)n;
            *n_out = n;
        } else if (rc == SQLITE_ABORT) {
            status = reader_gone(r); /* the row changed under this connection's handle */
        } else {
            status = reader_fail(r, "read");
            sound = false;
        }
    }
    /* The whole body read (in one call for a small one), a failure, or no holding at all: the
     * snapshot and the connection go back at once. */
    if (r->blob != NULL &&
        (status != STORE_OK || r->hold_ms == 0 || r->offset_bytes >= r->size_bytes))
        reader_detach(r, sound);
    if (status != STORE_OK)
        r->failed = true;
    return status;
}

void sqlite_body_close(struct store_body_reader *base)
{
    struct sqlite_body_reader *r = container_of(base, struct sqlite_body_reader, base);
    reader_detach(r, !r->failed);
    free(r);
}
