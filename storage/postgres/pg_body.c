/*
 * pg_body.c - message bodies in PostgreSQL: writing one (store_body_create, _write, _finish of
 * storage/store_internal.h), reading its first bytes back (store_body_read_head) and streaming
 * it out in chunks (store_body_reader_open, store_body_read).
 *
 * Writing: the row's id is taken from its sequence at create, so the caller has it at once as
 * with SQLite, and the bytes are gathered into parts of PG_BODY_PART_BYTES. The first part goes
 * in with the row itself (one INSERT, the body one bytea parameter sent in binary), so a body of
 * up to a part (nearly all mail) costs the sequence and one INSERT; each further part is
 * appended (body || part). An append rewrites the stored value, so a body of n parts costs about
 * n*n/2 parts written on the server: for the largest bodies a few rewrites, against holding a
 * whole 25 MB message in the writer's memory. Nothing of it is visible before the caller's
 * transaction commits, as with SQLite.
 *
 * Reading: the body column is stored EXTERNAL (uncompressed, pg_schema.c), so
 * substring(body FROM off FOR n) fetches only the TOAST chunks of that range. A reader runs on
 * the store's own connection (the thread that owns the store, never a loop), reads ahead
 * PG_READ_AHEAD_BYTES per round trip, and asks again by message id each time: a message deleted
 * meanwhile ends the read with STORE_NOT_FOUND, never with another message's bytes (ids are never
 * reused). As with SQLite, the lookup (is it still the caller's: the mailbox entry, the queue
 * entry) is run again once hold_ms has passed since it last was.
 *
 * What it does not do: decide what a body holds (storage/mailbox.c), or pool connections: every
 * reader of a store reads on its one connection, one statement at a time.
 */
#include "storage/postgres/pg_store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

/* Body bytes gathered before they are sent: bounds the writer's memory per body. */
#define PG_BODY_PART_BYTES (8u * 1024 * 1024)
/* Bytes a reader fetches per round trip: a 64 KiB-chunk POP3 RETR of a typical message is one. */
#define PG_READ_AHEAD_BYTES (256u * 1024)
/* A bytea is at most 1 GB; keep a margin for its header. */
#define PG_BODY_MAX_BYTES (1000u * 1000 * 1000)

static const char sql_next_id[] = "SELECT nextval(pg_get_serial_sequence('messages', 'id'))";
static const char sql_insert[] =
    "INSERT INTO messages(id, sender, size, received_ms, body, quarantine, dsn_envid, dsn_ret)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
static const char sql_append[] = "UPDATE messages SET body = body || ?2 WHERE id = ?1";
static const char sql_chunk[] =
    "SELECT substring(body FROM CAST(?2 AS INTEGER) FOR CAST(?3 AS INTEGER)), size"
    " FROM messages WHERE id = ?1";

uint64_t pg_body_max_bytes(struct store *s)
{
    (void)s;
    return PG_BODY_MAX_BYTES;
}

void pg_body_reset(struct pg_store *ps)
{
    free((char *)ps->body.row.sender);
    free((char *)ps->body.row.quarantine);
    free((char *)ps->body.row.dsn_envid);
    free(ps->body.part);
    memset(&ps->body, 0, sizeof(ps->body));
}

static int body_fail(struct pg_store *ps, const char *why)
{
    snprintf(ps->base.errmsg, sizeof(ps->base.errmsg), "deliver: %s", why);
    return STORE_ERR;
}

static char *dup_or_null(const char *s, bool *ok)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *ok = false;
    return d;
}

int pg_body_create(struct store *s, const struct store_message_row *m, int64_t *id_out)
{
    struct pg_store *ps = pg_store_of(s);
    if (ps->body.active)
        return body_fail(ps, "a body is already being written");
    if (m->size_bytes < 0 || (uint64_t)m->size_bytes > PG_BODY_MAX_BYTES) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: a body of %lld bytes cannot be stored",
                 (long long)m->size_bytes);
        return STORE_ERR;
    }
    struct sql_stmt *st = sql_prepare(s, sql_next_id);
    if (st == NULL)
        return STORE_ERR;
    int rc = sql_step(st);
    int64_t id = rc == SQL_ROW ? sql_col_i64(st, 0) : 0;
    int status = rc == SQL_ROW ? STORE_OK : store_fail(s, "deliver: message id");
    sql_reset(st);
    if (status != STORE_OK)
        return status;
    size_t cap =
        (uint64_t)m->size_bytes < PG_BODY_PART_BYTES ? (size_t)m->size_bytes : PG_BODY_PART_BYTES;
    bool ok = true;
    ps->body.row = *m;
    ps->body.row.sender = dup_or_null(m->sender != NULL ? m->sender : "", &ok);
    ps->body.row.quarantine = dup_or_null(m->quarantine, &ok);
    ps->body.row.dsn_envid = dup_or_null(m->dsn_envid, &ok);
    ps->body.part = malloc(cap > 0 ? cap : 1);
    if (!ok || ps->body.part == NULL) {
        pg_body_reset(ps);
        return body_fail(ps, "out of memory for the body");
    }
    ps->body.active = true;
    ps->body.status = STORE_OK;
    ps->body.id = id;
    ps->body.size_bytes = (uint64_t)m->size_bytes;
    *id_out = id;
    return STORE_OK;
}

/* Sends the gathered part: with the row when it is the first, else appended to it. */
static int send_part(struct pg_store *ps)
{
    struct store *s = &ps->base;
    struct sql_stmt *st = sql_prepare(s, ps->body.inserted ? sql_append : sql_insert);
    if (st == NULL)
        return STORE_ERR;
    const struct store_message_row *m = &ps->body.row;
    sql_bind_i64(st, 1, ps->body.id);
    if (ps->body.inserted) {
        sql_bind_blob(st, 2, ps->body.part, ps->body.part_len);
    } else {
        sql_bind_text(st, 2, m->sender);
        sql_bind_i64(st, 3, m->size_bytes);
        sql_bind_i64(st, 4, m->received_ms);
        sql_bind_blob(st, 5, ps->body.part, ps->body.part_len);
        if (m->quarantine != NULL)
            sql_bind_text(st, 6, m->quarantine);
        else
            sql_bind_null(st, 6);
        if (m->dsn_envid != NULL)
            sql_bind_text(st, 7, m->dsn_envid);
        else
            sql_bind_null(st, 7);
        sql_bind_i64(st, 8, m->dsn_ret);
    }
    int status = store_step_done(
        s, st, ps->body.inserted ? "deliver: append body" : "deliver: insert message");
    if (status != STORE_OK)
        return status;
    ps->body.inserted = true;
    ps->body.sent_bytes += ps->body.part_len;
    ps->body.part_len = 0;
    return STORE_OK;
}

int pg_body_write(struct store *s, const void *p, size_t n)
{
    struct pg_store *ps = pg_store_of(s);
    if (ps->body.status != STORE_OK)
        return ps->body.status;
    if (n == 0)
        return STORE_OK;
    uint64_t written = ps->body.sent_bytes + ps->body.part_len;
    if (!ps->body.active || n > ps->body.size_bytes - written) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: body longer than its %llu bytes",
                 (unsigned long long)ps->body.size_bytes);
        ps->body.status = STORE_ERR;
        return STORE_ERR;
    }
    const unsigned char *q = p;
    size_t cap =
        ps->body.size_bytes < PG_BODY_PART_BYTES ? (size_t)ps->body.size_bytes : PG_BODY_PART_BYTES;
    while (n > 0) {
        size_t k = cap - ps->body.part_len;
        if (k > n)
            k = n;
        memcpy(ps->body.part + ps->body.part_len, q, k);
        ps->body.part_len += k;
        q += k;
        n -= k;
        if (ps->body.part_len == cap && n > 0) {
            int status = send_part(ps);
            if (status != STORE_OK) {
                ps->body.status = status;
                return status;
            }
        }
    }
    return STORE_OK;
}

int pg_body_finish(struct store *s, bool abandon)
{
    struct pg_store *ps = pg_store_of(s);
    if (abandon) {
        /* The caller keeps its own error text; its savepoint undo drops the row if it is in. */
        pg_body_reset(ps);
        return STORE_ERR;
    }
    int status = ps->body.active ? ps->body.status : STORE_ERR;
    if (!ps->body.active)
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: no body is being written");
    uint64_t written = ps->body.sent_bytes + ps->body.part_len;
    if (status == STORE_OK && written != ps->body.size_bytes) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: body of %llu bytes given %llu",
                 (unsigned long long)ps->body.size_bytes, (unsigned long long)written);
        status = STORE_ERR;
    }
    /* The last part, or the row with an empty body. */
    if (status == STORE_OK && (ps->body.part_len > 0 || !ps->body.inserted))
        status = send_part(ps);
    pg_body_reset(ps);
    return status;
}

int pg_body_read_head(struct store *s, int64_t message_id, size_t max, unsigned char **out,
                      size_t *len_out)
{
    *out = NULL;
    *len_out = 0;
    struct sql_stmt *st = sql_prepare(s, sql_chunk);
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, message_id);
    sql_bind_i64(st, 2, 1);
    sql_bind_i64(st, 3, max > PG_BODY_MAX_BYTES ? PG_BODY_MAX_BYTES : (int64_t)max);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        size_t n = 0;
        const void *p = sql_col_blob(st, 0, &n);
        unsigned char *buf = malloc(n > 0 ? n : 1);
        if (buf == NULL || (p == NULL && n > 0)) {
            free(buf);
            snprintf(s->errmsg, sizeof(s->errmsg), "read the body of message %lld: out of memory",
                     (long long)message_id);
            status = STORE_ERR;
        } else {
            if (n > 0)
                memcpy(buf, p, n);
            *out = buf;
            *len_out = n;
        }
    } else if (rc == SQL_DONE) {
        snprintf(s->errmsg, sizeof(s->errmsg), "open the body of message %lld: no such message",
                 (long long)message_id);
        status = STORE_ERR;
    } else {
        status = store_fail(s, "read the body of a message");
    }
    sql_reset(st);
    return status;
}

/* ---- the reader ---- */

/* The parameters of a statement's text: a lookup has the key and maybe its owner. */
static int stmt_params(struct sql_stmt *st)
{
    return container_of(st, struct pg_stmt, base)->nparams;
}

struct pg_body_reader {
    struct store_body_reader base; /* first: base.s is the store read from */
    const char *lookup_sql;        /* borrowed: a string literal */
    int64_t key1, key2;            /* bound to ?1 and ?2 of lookup_sql */
    const char *what, *owner;      /* borrowed literals naming the keys in error texts */
    int64_t message_id;
    int64_t size_bytes;
    int64_t offset_bytes; /* next byte handed out */
    int64_t hold_ms;      /* how long a lookup is trusted */
    int64_t looked_up_ms; /* monotonic, when the lookup last ran */
    unsigned char *ahead; /* owned: bytes fetched, not yet handed out */
    size_t ahead_len, ahead_off;
    bool failed;
};

static int reader_gone(struct pg_body_reader *r)
{
    struct store *s = r->base.s;
    if (r->owner != NULL)
        snprintf(s->errmsg, sizeof(s->errmsg), "%s %lld of %s %lld is gone", r->what,
                 (long long)r->key1, r->owner, (long long)r->key2);
    else
        snprintf(s->errmsg, sizeof(s->errmsg), "%s %lld is gone", r->what, (long long)r->key1);
    return STORE_NOT_FOUND;
}

/* Runs the lookup: the message must still be there and the caller's, the same one. */
static int reader_lookup(struct pg_body_reader *r)
{
    struct store *s = r->base.s;
    struct sql_stmt *st = sql_prepare(s, r->lookup_sql);
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, r->key1);
    if (stmt_params(st) >= 2)
        sql_bind_i64(st, 2, r->key2);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        int64_t id = sql_col_i64(st, 0);
        int64_t size = sql_col_i64(st, 1);
        if (r->message_id != 0 && (id != r->message_id || size != r->size_bytes))
            status = reader_gone(r); /* cannot happen (bodies never change); never mix bodies */
        r->message_id = id;
        r->size_bytes = size;
    } else if (rc == SQL_DONE) {
        status = reader_gone(r);
    } else {
        status = store_fail(s, "look up a body");
    }
    sql_reset(st);
    r->looked_up_ms = clock_monotonic_ms();
    return status;
}

/* Fetches the next bytes from offset_bytes into ahead. */
static int reader_fetch(struct pg_body_reader *r)
{
    struct store *s = r->base.s;
    int64_t want = r->size_bytes - r->offset_bytes;
    if (want > PG_READ_AHEAD_BYTES)
        want = PG_READ_AHEAD_BYTES;
    struct sql_stmt *st = sql_prepare(s, sql_chunk);
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, r->message_id);
    sql_bind_i64(st, 2, r->offset_bytes + 1); /* substring counts from 1 */
    sql_bind_i64(st, 3, want);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        size_t n = 0;
        const void *p = sql_col_blob(st, 0, &n);
        if ((int64_t)n != want || sql_col_i64(st, 1) != r->size_bytes) {
            snprintf(s->errmsg, sizeof(s->errmsg),
                     "%s %lld: the body has another length than its size %lld", r->what,
                     (long long)r->key1, (long long)r->size_bytes);
            status = STORE_ERR;
        } else {
            memcpy(r->ahead, p, n);
            r->ahead_len = n;
            r->ahead_off = 0;
        }
    } else if (rc == SQL_DONE) {
        status = reader_gone(r);
    } else {
        status = store_fail(s, "read a body");
    }
    sql_reset(st);
    return status;
}

int pg_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                        const char *what, const char *owner, int64_t hold_ms,
                        struct store_body_reader **reader_out, int64_t *size_out)
{
    *reader_out = NULL;
    struct pg_body_reader *r = calloc(1, sizeof(*r));
    if (r != NULL)
        r->ahead = malloc(PG_READ_AHEAD_BYTES);
    if (r == NULL || r->ahead == NULL) {
        free(r);
        snprintf(s->errmsg, sizeof(s->errmsg), "open %s %lld: out of memory", what,
                 (long long)key1);
        return STORE_ERR;
    }
    r->base.backend = STORE_BACKEND_POSTGRES;
    r->base.s = s;
    r->lookup_sql = lookup_sql;
    r->key1 = key1;
    r->key2 = key2;
    r->what = what;
    r->owner = owner;
    r->hold_ms = hold_ms < 0 ? 0 : hold_ms;
    int status = reader_lookup(r);
    if (status != STORE_OK) {
        free(r->ahead);
        free(r);
        return status;
    }
    if (size_out != NULL)
        *size_out = r->size_bytes;
    *reader_out = &r->base;
    return STORE_OK;
}

int pg_body_read(struct store_body_reader *base, void *buf, size_t cap, size_t *n_out)
{
    struct pg_body_reader *r = container_of(base, struct pg_body_reader, base);
    struct store *s = base->s;
    *n_out = 0;
    if (r->failed) {
        snprintf(s->errmsg, sizeof(s->errmsg), "read %s %lld: reader already failed", r->what,
                 (long long)r->key1);
        return STORE_ERR;
    }
    int status = STORE_OK;
    unsigned char *out = buf;
    size_t done = 0;
    /* As SQLite's reader reopens its blob: the lookup again once hold_ms has passed, so with
     * hold_ms 0 at every call, even when the bytes asked for were fetched ahead already. */
    if (r->offset_bytes < r->size_bytes && cap > 0 &&
        clock_monotonic_ms() - r->looked_up_ms >= r->hold_ms)
        status = reader_lookup(r);
    while (status == STORE_OK && done < cap && r->offset_bytes < r->size_bytes) {
        if (r->ahead_off == r->ahead_len) {
            status = reader_fetch(r);
            if (status != STORE_OK)
                break;
        }
        size_t k = r->ahead_len - r->ahead_off;
        if (k > cap - done)
            k = cap - done;
        memcpy(out + done, r->ahead + r->ahead_off, k);
        r->ahead_off += k;
        r->offset_bytes += (int64_t)k;
        done += k;
    }
    if (status != STORE_OK) {
        r->failed = true;
        return status;
    }
    *n_out = done;
    return STORE_OK;
}

void pg_body_close(struct store_body_reader *base)
{
    struct pg_body_reader *r = container_of(base, struct pg_body_reader, base);
    free(r->ahead);
    free(r);
}
