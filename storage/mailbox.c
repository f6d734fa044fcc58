/*
 * mailbox.c - see mailbox.h: storing accepted messages (body once, mailbox entries, queue rows),
 * the POP3 maildrop snapshot, streaming a body, and deletions.
 *
 * A body is written in place, part after part, through the store's body calls
 * (store_internal.h: store_body_create, store_body_write; on SQLite a blob filled where it lies,
 * storage/sqlite/body_write.c), never assembled in memory: a message in three parts (mailbox.h:
 * prefix, spool file, body) goes into one body of the total size; the spool file is read in
 * MAILBOX_SPOOL_CHUNK_BYTES pieces into one buffer, so the writer's memory does not grow with the
 * message either. Every octet written also passes through a small scanner that records the
 * message's facts (message_facts: an octet above 127, a leading Return-Path line), inserted after
 * the body: the outbound client reads those instead of the whole body. Cost on the writer thread,
 * which holds up every other session's commit meanwhile: one copy of the message into the database
 * pages, plus the scan, which is one OR per octet once past the first line.
 *
 * What it does not do: decide who is local (the session does), run the queue, or log.
 */
#include "storage/mailbox.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <time.h>

#include "storage/queue.h"
#include "storage/spool.h"
#include "storage/store_internal.h"

/* The uidl_tag in table meta: 16 hex digits as made by migration 4; anything else is refused. */
#define MAILBOX_TAG_MAX_CHARS 32
/* A snapshot array starts with room for this many entries and doubles. */
#define MAILBOX_SNAPSHOT_FIRST 64

/* Each call below is atomic inside whatever the caller has open: its own savepoint, named after
 * this file (storage/sql.h: store_sp_begin). */
#define SP_NAME "mailbox"

/* ---- delivery ---- */

static uint64_t delivery_len(const struct store_delivery *d)
{
    return (uint64_t)d->prefix_len + d->spool_len + (uint64_t)d->body_len;
}

/* What store_deliver records about the message as it writes it (mailbox.h, message_facts). */
struct body_facts {
    uint64_t pos;               /* octets seen */
    unsigned char ored;         /* every octet OR-ed together: bit 7 is "has 8-bit octets" */
    bool first_line_open;       /* still inside the first line */
    bool is_return_path;        /* the first line starts with "Return-Path:" (any case) */
    uint64_t return_path_bytes; /* that line's octets, its CRLF included, once complete */
    bool in_headers;            /* before the empty line that ends the header section */
    uint64_t line_bytes;        /* octets of the current header line, CR not counted */
    unsigned char header_ored;  /* the header section's octets OR-ed together */
};

/* The header section (RFC 5322 2.1) ends at the first empty line: scanned octet by octet, which
 * is a few kilobytes; the whole body is OR-ed for eightbit besides. */
static void facts_headers(struct body_facts *f, const unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i < n && f->in_headers; i++) {
        f->header_ored |= p[i];
        if (p[i] == '\n') {
            if (f->line_bytes == 0)
                f->in_headers = false;
            f->line_bytes = 0;
        } else if (p[i] != '\r') {
            f->line_bytes++;
        }
    }
}

static void facts_feed(struct body_facts *f, const unsigned char *p, size_t n)
{
    static const char rp[] = "Return-Path:";
    const size_t rp_len = sizeof(rp) - 1;
    size_t i = 0;
    for (; i < n && f->first_line_open; i++) {
        uint64_t at = f->pos + i;
        unsigned char ch = p[i];
        f->ored |= ch;
        if (at < rp_len) {
            if (tolower(ch) != tolower((unsigned char)rp[at]))
                f->first_line_open = false;
            else if (at == rp_len - 1)
                f->is_return_path = true;
        } else if (ch == '\n') {
            f->first_line_open = false;
            if (f->is_return_path)
                f->return_path_bytes = at + 1;
        }
    }
    if (f->in_headers)
        facts_headers(f, p, n);
    unsigned char acc = 0;
    for (size_t j = i; j < n; j++)
        acc |= p[j];
    f->ored |= acc;
    f->pos += n;
}

/* Appends p[0..n) to the body being written, noting its facts on the way. */
static int write_part(struct store *s, const unsigned char *p, size_t n, struct body_facts *f)
{
    facts_feed(f, p, n);
    return store_body_write(s, p, n);
}

/* Copies the spool part into the body through one buffer. */
static int write_spool(struct store *s, const struct store_delivery *d, struct body_facts *f)
{
    size_t cap =
        d->spool_len < MAILBOX_SPOOL_CHUNK_BYTES ? (size_t)d->spool_len : MAILBOX_SPOOL_CHUNK_BYTES;
    unsigned char *buf = malloc(cap);
    if (buf == NULL) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: out of memory for the spool buffer");
        return STORE_ERR;
    }
    int status = STORE_OK;
    for (uint64_t done = 0; status == STORE_OK && done < d->spool_len;) {
        size_t k = d->spool_len - done < cap ? (size_t)(d->spool_len - done) : cap;
        int rc = spool_file_read_at(d->spool_fd, buf, k, done);
        if (rc != 0) {
            snprintf(s->errmsg, sizeof(s->errmsg), "deliver: read spool file: %s", strerror(-rc));
            status = STORE_ERR;
            break;
        }
        status = write_part(s, buf, k, f);
        done += k;
    }
    free(buf);
    return status;
}

static int insert_facts(struct store *s, int64_t message_id, const struct body_facts *f,
                        bool smtputf8)
{
    struct sql_stmt *st = sql_prepare(s, "INSERT INTO message_facts(message_id, eightbit,"
                                         " return_path_bytes, smtputf8) VALUES (?1, ?2, ?3, ?4)");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, message_id);
    sql_bind_i64(st, 2, (f->ored & 0x80) != 0);
    sql_bind_i64(st, 3, (int64_t)f->return_path_bytes);
    sql_bind_i64(st, 4, smtputf8 && (f->header_ored & 0x80) != 0);
    return store_step_done(s, st, "deliver: insert message facts");
}

static int check_delivery(struct store *s, const struct store_delivery *d)
{
    if (d->n_local == 0 && d->n_remote == 0) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: no recipients");
        return STORE_ERR;
    }
    if ((d->body == NULL && d->body_len > 0) || (d->prefix == NULL && d->prefix_len > 0) ||
        (d->spool_len > 0 && d->spool_fd < 0) || (d->n_local > 0 && d->local_user_ids == NULL) ||
        (d->n_remote > 0 && d->remote_rcpts == NULL)) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: missing body or recipient array");
        return STORE_ERR;
    }
    /* Each part checked first, so that their sum cannot wrap. */
    uint64_t limit = store_body_max_bytes(s);
    uint64_t len = delivery_len(d);
    if (d->spool_len > limit || d->body_len > limit || d->prefix_len > limit || len > limit) {
        snprintf(s->errmsg, sizeof(s->errmsg),
                 "deliver: message of %llu bytes exceeds the limit of %llu",
                 (unsigned long long)len, (unsigned long long)limit);
        return STORE_ERR;
    }
    for (size_t i = 0; i < d->n_remote; i++) {
        const char *r = d->remote_rcpts[i];
        const char *at = r != NULL ? strrchr(r, '@') : NULL;
        if (at == NULL || at == r || at[1] == '\0') {
            snprintf(s->errmsg, sizeof(s->errmsg),
                     "deliver: remote recipient %zu is not local@domain", i);
            return STORE_ERR;
        }
    }
    return STORE_OK;
}

/* Reads the per-database UIDL tag and checks it is usable in a UIDL; remembered in the store. */
static int read_uidl_tag(struct store *s, char *tag_out, size_t taglen)
{
    _Static_assert(sizeof(s->uidl_tag) == MAILBOX_TAG_MAX_CHARS + 1, "the tag's cache fits a tag");
    if (s->uidl_tag[0] != '\0' && strlen(s->uidl_tag) < taglen) {
        memcpy(tag_out, s->uidl_tag, strlen(s->uidl_tag) + 1);
        return STORE_OK;
    }
    struct sql_stmt *st = sql_prepare(s, "SELECT value FROM meta WHERE key = 'uidl_tag'");
    if (st == NULL)
        return STORE_ERR;
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        const unsigned char *v = (const unsigned char *)sql_col_text(st, 0);
        size_t len = v != NULL ? strlen((const char *)v) : 0;
        bool ok = len > 0 && len <= MAILBOX_TAG_MAX_CHARS && len < taglen;
        for (size_t i = 0; ok && i < len; i++)
            ok = v[i] >= 0x21 && v[i] <= 0x7e && v[i] != '.';
        if (ok) {
            memcpy(tag_out, v, len + 1);
            memcpy(s->uidl_tag, v, len + 1);
        } else {
            snprintf(s->errmsg, sizeof(s->errmsg), "deliver: meta uidl_tag is unusable");
            status = STORE_ERR;
        }
    } else if (rc == SQL_DONE) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: meta uidl_tag is missing");
        status = STORE_ERR;
    } else {
        status = store_fail(s, "read uidl tag");
    }
    sql_reset(st);
    return status;
}

/* Inserts the message row, writes its body part after part, and records its facts. */
static int insert_message(struct store *s, const struct store_delivery *d, int64_t *id_out)
{
    const struct store_message_row row = {
        .sender = d->sender,
        .size_bytes = (int64_t)delivery_len(d), /* at most store_body_max_bytes (checked) */
        .received_ms = d->received_ms,
        .quarantine = d->quarantine,
        .dsn_envid = d->dsn_envid != NULL && d->dsn_envid[0] != '\0' ? d->dsn_envid : NULL,
        .dsn_ret = d->dsn_ret,
    };
    int64_t id = 0;
    int status = store_body_create(s, &row, &id);
    if (status != STORE_OK)
        return status;
    struct body_facts facts = {.first_line_open = true, .in_headers = true};
    status = write_part(s, d->prefix, d->prefix_len, &facts);
    if (status == STORE_OK && d->spool_len > 0)
        status = write_spool(s, d, &facts);
    if (status == STORE_OK)
        status = write_part(s, d->body, d->body_len, &facts);
    int end = store_body_finish(s, status != STORE_OK);
    if (status == STORE_OK)
        status = end;
    if (status == STORE_OK)
        status = insert_facts(s, id, &facts, d->smtputf8);
    if (status != STORE_OK)
        return status;
    *id_out = id;
    return STORE_OK;
}

/* One mailbox entry for user_id unless the user already has one for this message, with its UIDL
 * ("<tag>.<entry id>.<received ms>", mailbox.h) made in the same statement: the entry's id is
 * taken explicitly as the table's next one (SQLite: its AUTOINCREMENT counter in sqlite_sequence,
 * which only this writer moves while its transaction is open; PostgreSQL: nextval of the
 * identity's sequence), so no second statement has to write the UIDL once the id is known. On
 * SQLite the largest id present counts too, so a counter row that is missing or behind (a table
 * filled by hand) cannot hand out an id in use. Each
 * backend has its own text for that one expression, the rest is the same. ?5 is "<tag>." and ?6
 * ".<received ms>". */
static const char entry_sql[] =
    "INSERT INTO mailbox(id, user_id, message_id, uidl, size, added_ms)"
    " SELECT n.id, ?1, ?2, CAST(?5 AS TEXT) || CAST(n.id AS TEXT) || CAST(?6 AS TEXT), ?3, ?4"
    " FROM (SELECT max(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'), 0),"
    " COALESCE((SELECT max(id) FROM mailbox), 0)) + 1 AS id) AS n"
    " WHERE NOT EXISTS (SELECT 1 FROM mailbox WHERE message_id = ?2 AND user_id = ?1)"
    " RETURNING id";
static const char entry_sql_pg[] =
    "INSERT INTO mailbox(id, user_id, message_id, uidl, size, added_ms)"
    " SELECT n.id, ?1, ?2, CAST(?5 AS TEXT) || CAST(n.id AS TEXT) || CAST(?6 AS TEXT), ?3, ?4"
    " FROM (SELECT nextval(pg_get_serial_sequence('mailbox', 'id'))"
    " AS id) AS n"
    " WHERE NOT EXISTS (SELECT 1 FROM mailbox WHERE message_id = ?2 AND user_id = ?1)"
    " RETURNING id";

static int insert_entry(struct store *s, const struct store_delivery *d, int64_t message_id,
                        int64_t user_id, const char *tag)
{
    char head[MAILBOX_TAG_MAX_CHARS + 2], tail[24];
    int hn = snprintf(head, sizeof(head), "%s.", tag);
    int tn = snprintf(tail, sizeof(tail), ".%lld", (long long)d->received_ms);
    /* The whole UIDL: the tag, the longest id and the longest time must fit POP3's 70. */
    if (hn < 0 || (size_t)hn >= sizeof(head) || tn < 0 || (size_t)tn >= sizeof(tail) ||
        (size_t)hn + 20 + (size_t)tn > POP3_UIDL_MAX_BYTES) {
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: uidl too long");
        return STORE_ERR;
    }
    struct sql_stmt *st =
        sql_prepare(s, s->backend == STORE_BACKEND_POSTGRES ? entry_sql_pg : entry_sql);
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, user_id);
    sql_bind_i64(st, 2, message_id);
    sql_bind_i64(st, 3, (int64_t)delivery_len(d));
    sql_bind_i64(st, 4, d->received_ms);
    sql_bind_text(st, 5, head);
    sql_bind_text(st, 6, tail);
    int64_t entry_id = 0;
    int status = store_step_id(s, st, "deliver: insert mailbox entry", &entry_id);
    if (status == STORE_IN_USE) {
        /* users(id) is the only foreign key a new entry can break: the message was just made. */
        snprintf(s->errmsg, sizeof(s->errmsg), "deliver: no user with id %lld", (long long)user_id);
        return STORE_NOT_FOUND;
    }
    if (status == STORE_NOT_FOUND)
        return STORE_OK; /* a repeated user: nothing inserted */
    return status;
}

static int insert_queue_row(struct store *s, const struct store_delivery *d, int64_t message_id,
                            size_t i)
{
    const char *rcpt = d->remote_rcpts[i];
    struct sql_stmt *st = sql_prepare(
        s, "INSERT INTO queue(message_id, sender, recipient, domain, created_ms, next_attempt_ms,"
           " dsn_notify, dsn_orcpt)"
           " SELECT ?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7 WHERE NOT EXISTS"
           " (SELECT 1 FROM queue WHERE message_id = ?1 AND recipient = ?3)");
    if (st == NULL)
        return STORE_ERR;
    const char *orcpt = d->remote_orcpt != NULL ? d->remote_orcpt[i] : NULL;
    sql_bind_i64(st, 6, d->remote_notify != NULL ? (int64_t)d->remote_notify[i] : 0);
    if (orcpt != NULL && orcpt[0] != '\0')
        sql_bind_text(st, 7, orcpt);
    else
        sql_bind_null(st, 7);
    sql_bind_i64(st, 1, message_id);
    sql_bind_text(st, 2, d->sender != NULL ? d->sender : "");
    sql_bind_text(st, 3, rcpt);
    sql_bind_text(st, 4, strrchr(rcpt, '@') + 1);
    sql_bind_i64(st, 5, d->received_ms);
    return store_step_done(s, st, "deliver: insert queue row");
}

int store_deliver(struct store *s, struct store_delivery *d)
{
    int status = check_delivery(s, d);
    char tag[MAILBOX_TAG_MAX_CHARS + 1] = "";
    if (status == STORE_OK && d->n_local > 0)
        status = read_uidl_tag(s, tag, sizeof(tag));
    if (status != STORE_OK)
        return status;
    if (store_sp_begin(s, SP_NAME) != STORE_OK)
        return STORE_ERR;
    int64_t message_id = 0;
    status = insert_message(s, d, &message_id);
    for (size_t i = 0; status == STORE_OK && i < d->n_local; i++)
        status = insert_entry(s, d, message_id, d->local_user_ids[i], tag);
    for (size_t i = 0; status == STORE_OK && i < d->n_remote; i++)
        status = insert_queue_row(s, d, message_id, i);
    /* RFC 3461: a local recipient's NOTIFY=SUCCESS is answered once the mailbox has the message,
     * which is this savepoint's release: stored together, they exist together. */
    if (status == STORE_OK && d->n_delivered > 0 && d->sender != NULL && d->sender[0] != '\0') {
        struct store_notice n = {
            .hostname = d->hostname != NULL ? d->hostname : "localhost",
            .now_ms = d->received_ms,
            .message_id = message_id,
            .action = DSN_ACTION_DELIVERED,
            .rcpts = d->delivered,
            .n = d->n_delivered,
        };
        status = store_notice(s, &n);
    }
    if (status == STORE_OK)
        status = store_sp_release(s, SP_NAME);
    if (status != STORE_OK) {
        (void)store_sp_undo(s, SP_NAME);
        return status;
    }
    d->message_id_out = message_id;
    return STORE_OK;
}

/* ---- the maildrop ---- */

int store_mailbox_snapshot(struct store *s, int64_t user_id, struct store_mail_entry **entries_out,
                           size_t *count_out)
{
    *entries_out = NULL;
    *count_out = 0;
    /* mailbox_user (user_id, id) gives the order without a sort. */
    struct sql_stmt *st = sql_prepare(s, "SELECT id, size, uidl, message_id FROM mailbox"
                                         " WHERE user_id = ?1 ORDER BY id");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, user_id);
    struct store_mail_entry *v = NULL;
    size_t n = 0, cap = 0;
    int status = STORE_OK;
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        if (n == cap) {
            size_t ncap = cap == 0 ? MAILBOX_SNAPSHOT_FIRST : cap * 2;
            struct store_mail_entry *nv =
                ncap > SIZE_MAX / sizeof(*nv) ? NULL : realloc(v, ncap * sizeof(*nv));
            if (nv == NULL) {
                snprintf(s->errmsg, sizeof(s->errmsg), "mailbox snapshot: out of memory");
                status = STORE_ERR;
                break;
            }
            v = nv;
            cap = ncap;
        }
        struct store_mail_entry *e = &v[n];
        e->id = sql_col_i64(st, 0);
        e->size = sql_col_i64(st, 1);
        const char *u = sql_col_text(st, 2);
        size_t ulen = u != NULL ? strlen(u) : 0;
        if (ulen < 1 || ulen > POP3_UIDL_MAX_BYTES) {
            /* Truncating could make two entries alike: refuse instead. */
            snprintf(s->errmsg, sizeof(s->errmsg), "mailbox snapshot: entry %lld has a bad uidl",
                     (long long)e->id);
            status = STORE_ERR;
            break;
        }
        memcpy(e->uidl, u, ulen);
        e->uidl[ulen] = '\0';
        e->message_id = sql_col_i64(st, 3);
        n++;
    }
    int end = store_rows_end(s, st, rc, "mailbox snapshot");
    if (status == STORE_OK)
        status = end;
    if (status != STORE_OK) {
        free(v);
        return status;
    }
    *entries_out = v;
    *count_out = n;
    return STORE_OK;
}

/* ---- reading a body ---- */

int store_message_open(struct store *s, int64_t user_id, int64_t entry_id, int64_t hold_ms,
                       struct store_body_reader **reader_out, int64_t *size_out)
{
    return store_body_reader_open(s,
                                  "SELECT message_id, size FROM mailbox WHERE id = ?1 AND "
                                  "user_id = ?2",
                                  entry_id, user_id, "mailbox entry", "user", hold_ms, reader_out,
                                  size_out);
}

/* ---- deletions ---- */

int store_mailbox_delete(struct store *s, int64_t user_id, const int64_t *entry_ids, size_t n,
                         size_t *deleted_out)
{
    *deleted_out = 0;
    if (n == 0)
        return STORE_OK;
    if (entry_ids == NULL) {
        snprintf(s->errmsg, sizeof(s->errmsg), "mailbox delete: no id array");
        return STORE_ERR;
    }
    if (store_sp_begin(s, SP_NAME) != STORE_OK)
        return STORE_ERR;
    /* The user_id condition is what keeps one user from deleting another's mail. */
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM mailbox WHERE id = ?1 AND user_id = ?2");
    int status = st != NULL ? STORE_OK : STORE_ERR;
    size_t deleted = 0;
    for (size_t i = 0; status == STORE_OK && i < n; i++) {
        sql_bind_i64(st, 1, entry_ids[i]);
        sql_bind_i64(st, 2, user_id);
        status = store_step_done(s, st, "mailbox delete");
        /* Direct changes only: the trigger's message deletions are not counted. */
        if (status == STORE_OK)
            deleted += (size_t)sql_changes(st);
    }
    if (status == STORE_OK)
        status = store_sp_release(s, SP_NAME);
    if (status != STORE_OK) {
        (void)store_sp_undo(s, SP_NAME);
        return status;
    }
    *deleted_out = deleted;
    return STORE_OK;
}
