/*
 * store_internal.h - shared by the files of storage/ only: what every backend's store has in
 * common, the statement interface (sql.h) and the few calls each backend provides beside it (the
 * message body, transactions). Nothing outside storage/ includes this, and nothing in it names a
 * type of a database library: the table files (domains.c, users.c, ... queue.c, mailbox.c) are
 * written on this header alone, so every backend runs them unchanged.
 *
 * Backends live in folders of their own: storage/sqlite/ and storage/postgres/. Each embeds
 * struct store as the first part of its own connection struct, struct sql_stmt as the first part
 * of its statement and struct store_body_reader as the first part of its body reader, and
 * recovers its own with container_of. storage/backend.c routes every call of sql.h and of the
 * "provided by each backend" part below to the backend named by the store's (or statement's) tag.
 */
#ifndef POSTERN_STORE_INTERNAL_H
#define POSTERN_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/sql.h"
#include "storage/store.h"

#define STORE_ERRMSG_BYTES 512

/* Which database a store talks to; chosen by store_open from what it is given. */
enum store_backend {
    STORE_BACKEND_SQLITE = 1, /* a file path: storage/sqlite/ */
    STORE_BACKEND_POSTGRES =
        2, /* a libpq connection string (store_is_postgres): storage/postgres/ */
};

/* The part of a statement every backend's statement begins with: what sql_bind_*, sql_step and
 * the column calls dispatch on, since they are not given the store. */
struct sql_stmt {
    enum store_backend backend;
};

/* The part of a body reader every backend's reader begins with. */
struct store_body_reader {
    enum store_backend backend; /* what store_body_read and _close dispatch on: s may be NULL */
    /* borrowed: the store it reads from, which receives its error texts; NULL between two
     * threads' jobs (store_body_rebind) */
    struct store *s;
};

struct store {
    enum store_backend backend;
    bool created;    /* store_open created the database (a new file, or the schema in PostgreSQL) */
    char path[1024]; /* the SQLite file; for PostgreSQL the connection string (never printed) */
    char errmsg[STORE_ERRMSG_BYTES]; /* the last failure, for store_errmsg */
    bool commit_unknown; /* the last COMMIT lost its connection on the way (store_commit_unknown) */
    /* The database's uidl_tag (table meta) once storage/mailbox.c has read and checked it; "" until
     * then. Written by the migration that made the database and never changed, so it is read once
     * per connection and not once per delivered message. */
    char uidl_tag[33];
};

/* ---- provided by each backend ---- */

/* The backends' doors, for store_open and store_close (storage/store.c). */
int sqlite_store_open(const char *path, int version, struct store **out, char *err, size_t errlen);
void sqlite_store_close(struct store *s);
int pg_store_open(const char *conninfo, int version, struct store **out, char *err, size_t errlen);
void pg_store_close(struct store *s);

/*
 * Each call below, and each of sql.h's sql_* calls, exists once per backend under the backend's
 * prefix (sqlite_sql_prepare, pg_sql_prepare; sqlite_body_create, pg_body_create; ...), declared
 * in storage/backends.h; storage/backend.c defines the names used here and in sql.h, which pick
 * one by the tag. The table files call only the unprefixed names.
 */

/* The connection's own text for its last failure (what store_fail appends). */
const char *store_backend_errmsg(struct store *s);
/* Whether a transaction is open on the connection. An I/O error or a failed COMMIT may have
 * rolled one back without being asked: store_rollback and store_sp_undo look here first. */
bool store_in_transaction(struct store *s);

/*
 * Writing a message body (storage/mailbox.c: every stored message, notices included).
 * store_body_create inserts the messages row (struct store_message_row) with room for a body of
 * exactly size_bytes and gives its id; store_body_write then appends, in order, until size_bytes
 * have been written. Inside the caller's savepoint: a failure anywhere leaves the row for the
 * caller's undo. One body at a time per store; a body with size 0 needs no write.
 */
struct store_message_row {
    const char *sender;
    int64_t size_bytes;
    int64_t received_ms;
    const char *quarantine; /* NULL: not quarantined */
    const char *dsn_envid;  /* RFC 3461 ENVID as the client sent it; NULL when not given */
    int64_t dsn_ret;        /* RFC 3461 RET: 0 not given, 1 FULL, 2 HDRS (queue.h) */
};
int store_body_create(struct store *s, const struct store_message_row *m, int64_t *id_out);
int store_body_write(struct store *s, const void *p, size_t n);
/* Ends the body begun by store_body_create: STORE_OK once all size_bytes are written and stored,
 * else its first failure. Always call it, also after a failure, so the store is ready for the
 * next body; abandon (the caller failed on its own side, as reading a spool file) closes it
 * without touching the error text and returns STORE_ERR. */
int store_body_finish(struct store *s, bool abandon);
/* The largest body the store can hold, in bytes. */
uint64_t store_body_max_bytes(struct store *s);
/* The first up to max bytes of message message_id's body (all of it when shorter), malloc'd into
 * *out for the caller to free (not NULL on success, even for an empty body), their count in
 * *len_out. Read on the store's own connection, so it sees the caller's open transaction. */
int store_body_read_head(struct store *s, int64_t message_id, size_t max, unsigned char **out,
                         size_t *len_out);

/* Opens a body reader (store.h: store_body_read). lookup_sql (a string literal: it keys the
 * statement caches) returns (message id, size) of the body to read given key1 as ?1 and, when it
 * has a second parameter, key2 as ?2; no row means "gone". what and owner (string literals; owner
 * NULL when key2 is not used) name the keys in error texts: "mailbox entry 5 of user 3" is what
 * "mailbox entry", owner "user". */
int store_body_reader_open(struct store *s, const char *lookup_sql, int64_t key1, int64_t key2,
                           const char *what, const char *owner, int64_t hold_ms,
                           struct store_body_reader **reader_out, int64_t *size_out);

/* The condition under which the node bound at param (a parameter such as "?2") may record the
 * result of its attempt on a queue row (storage/queue.c, storage/queue_notice.c): no other node
 * has claimed the row since this node did. A node that stalled past its lease may find its
 * claim taken over (queue.h, "Several nodes"); its late result must then neither end nor
 * settle the other node's claim. A row never claimed by a node (claimed_by NULL) is anyone's. */
#define QUEUE_SETTLED_BY(param) "(claimed_by IS NULL OR claimed_by = " param ")"

#endif
