/*
 * body_reader.c - streams a message body out of the store in caller-sized chunks without holding
 * it whole. One reader serves the POP3 maildrop (a mailbox entry, storage/mailbox.c) and the
 * outbound queue (a queued message, storage/queue.c); they differ only in the statement that
 * finds the message and checks it is still theirs.
 *
 * Why a private read-only connection and a blob handle kept between calls: a freshly opened
 * blob handle reaches offset X by walking the body's overflow-page chain from the start, so
 * reopening per 64 KiB chunk makes reading a 20 MiB body O(n^2) (about 0.5 s of CPU, measured),
 * while one handle kept open reads it in about 4 ms. A handle holds a read transaction, and on
 * the loop's shared connection that would freeze every other session's view of the database, so
 * each reader opens its own connection (about 50 us) and drops its handle once it is older than
 * hold_ms: a slow client pins the WAL for at most hold_ms at a time. Each reopen runs the lookup
 * again, so a message deleted meanwhile ends the read with STORE_NOT_FOUND, never with the bytes
 * of another message (message ids are never reused).
 */
#include "storage/store_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/clock.h"

/* Page cache of a reader's private connection (KiB when negative): a body is read once. */
#define BODY_READER_CACHE_PRAGMA "PRAGMA cache_size = -64"

struct store_body_reader {
    struct store *s;      /* borrowed: the path came from it, errors are recorded in it */
    sqlite3 *db;          /* owned: private read-only connection */
    sqlite3_stmt *lookup; /* owned: (message id, size) of what is being read, or no row */
    sqlite3_blob *blob;   /* owned; NULL while no snapshot is held */
    int64_t key1, key2;   /* bound to ?1 and ?2 of lookup */
    char what[96];        /* "mailbox entry 5 of user 3", for error texts */
    int64_t message_id;   /* 0 until the first attach */
    int64_t size_bytes;
    int64_t offset_bytes;   /* next byte to hand out */
    int64_t hold_ms;        /* longest a blob handle is kept */
    int64_t blob_opened_ms; /* monotonic, when blob was opened */
    bool failed;            /* a read failed: only close is allowed */
};

static int reader_fail(struct store_body_reader *r, const char *doing)
{
    snprintf(r->s->errmsg, sizeof(r->s->errmsg), "%s %s: %s", doing, r->what,
             r->db ? sqlite3_errmsg(r->db) : "out of memory");
    return STORE_ERR;
}

static int reader_gone(struct store_body_reader *r)
{
    snprintf(r->s->errmsg, sizeof(r->s->errmsg), "%s is gone", r->what);
    return STORE_NOT_FOUND;
}

static void reader_drop_blob(struct store_body_reader *r)
{
    /* Closing a read-only handle cannot lose anything; its result is only about the handle. */
    (void)sqlite3_blob_close(r->blob);
    r->blob = NULL;
}

/* Runs the lookup again (the message must still be there, the same one with the same size) and
 * opens a fresh blob handle: a new read snapshot. */
static int reader_attach(struct store_body_reader *r)
{
    sqlite3_reset(r->lookup);
    sqlite3_bind_int64(r->lookup, 1, r->key1);
    if (sqlite3_bind_parameter_count(r->lookup) >= 2)
        sqlite3_bind_int64(r->lookup, 2, r->key2);
    int rc = sqlite3_step(r->lookup);
    int64_t message_id = rc == SQLITE_ROW ? sqlite3_column_int64(r->lookup, 0) : 0;
    int64_t size = rc == SQLITE_ROW ? sqlite3_column_int64(r->lookup, 1) : 0;
    sqlite3_reset(r->lookup);
    if (rc == SQLITE_DONE)
        return reader_gone(r);
    if (rc != SQLITE_ROW)
        return reader_fail(r, "look up");
    if (r->message_id != 0 && (message_id != r->message_id || size != r->size_bytes))
        return reader_gone(r); /* cannot happen (bodies never change); never mix bodies */

    if (sqlite3_blob_open(r->db, "main", "messages", "body", message_id, 0, &r->blob) !=
        SQLITE_OK) {
        int status = reader_fail(r, "open the body of");
        reader_drop_blob(r);
        /* It was there a moment ago: the message may have gone between the two reads. */
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(r->db, "SELECT 1 FROM messages WHERE id = ?1", -1, &st, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_int64(st, 1, message_id);
            if (sqlite3_step(st) == SQLITE_DONE)
                status = reader_gone(r);
        }
        sqlite3_finalize(st);
        return status;
    }
    if (sqlite3_blob_bytes(r->blob) != size) {
        reader_drop_blob(r);
        snprintf(r->s->errmsg, sizeof(r->s->errmsg),
                 "%s: size %lld but the body has another length", r->what, (long long)size);
        return STORE_ERR;
    }
    r->message_id = message_id;
    r->size_bytes = size;
    r->blob_opened_ms = clock_monotonic_ms();
    return STORE_OK;
}

int store_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                           const char *what, int64_t hold_ms, struct store_body_reader **reader_out,
                           int64_t *size_out)
{
    *reader_out = NULL;
    struct store_body_reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(s->errmsg, sizeof(s->errmsg), "open %s: out of memory", what);
        return STORE_ERR;
    }
    r->s = s;
    r->key1 = key1;
    r->key2 = key2;
    r->hold_ms = hold_ms < 0 ? 0 : hold_ms;
    snprintf(r->what, sizeof(r->what), "%s", what);
    int status = STORE_OK;
    /* Read-only, no CREATE: the database exists (s is open on it), and this must never write. */
    if (sqlite3_open_v2(s->path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        status = reader_fail(r, "open the database to read");
    if (status == STORE_OK) {
        sqlite3_extended_result_codes(r->db, 1);
        if (sqlite3_busy_timeout(r->db, STORE_BUSY_TIMEOUT_MS) != SQLITE_OK ||
            sqlite3_exec(r->db, BODY_READER_CACHE_PRAGMA, NULL, NULL, NULL) != SQLITE_OK)
            status = reader_fail(r, "set up a reader for");
    }
    if (status == STORE_OK &&
        sqlite3_prepare_v2(r->db, lookup_sql, -1, &r->lookup, NULL) != SQLITE_OK)
        status = reader_fail(r, "prepare the lookup of");
    if (status == STORE_OK)
        status = reader_attach(r);
    if (status != STORE_OK) {
        store_body_close(&r);
        return status;
    }
    if (r->hold_ms == 0 || r->size_bytes == 0)
        reader_drop_blob(r);
    if (size_out != NULL)
        *size_out = r->size_bytes;
    *reader_out = r;
    return STORE_OK;
}

int store_body_read(struct store_body_reader *r, void *buf, size_t cap, size_t *n_out)
{
    *n_out = 0;
    if (r->failed) {
        snprintf(r->s->errmsg, sizeof(r->s->errmsg), "read %s: reader already failed", r->what);
        return STORE_ERR;
    }
    if (r->offset_bytes >= r->size_bytes || cap == 0)
        return STORE_OK;
    if (r->blob != NULL && clock_monotonic_ms() - r->blob_opened_ms >= r->hold_ms)
        reader_drop_blob(r); /* let the WAL move on; the next line takes a fresh snapshot */
    int status = r->blob == NULL ? reader_attach(r) : STORE_OK;
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
        }
    }
    if (r->blob != NULL &&
        (status != STORE_OK || r->hold_ms == 0 || r->offset_bytes >= r->size_bytes))
        reader_drop_blob(r);
    if (status != STORE_OK)
        r->failed = true;
    return status;
}

void store_body_close(struct store_body_reader **rp)
{
    struct store_body_reader *r = *rp;
    if (r == NULL)
        return;
    reader_drop_blob(r);
    sqlite3_finalize(r->lookup);
    /* Only unfinalized statements make close fail, and there are none left. */
    if (r->db != NULL && sqlite3_close(r->db) != SQLITE_OK)
        sqlite3_close_v2(r->db);
    free(r);
    *rp = NULL;
}
