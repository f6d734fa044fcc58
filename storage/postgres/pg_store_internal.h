/*
 * pg_store_internal.h - the PostgreSQL backend's store, shared by pg_store.c (the connection, the
 * statements of storage/sql.h, transactions) and pg_body.c (message bodies): one struct pg_conn
 * behind the backend-neutral struct store, and the body being written.
 */
#ifndef POSTERN_PG_STORE_INTERNAL_H
#define POSTERN_PG_STORE_INTERNAL_H

#include "common/util.h"
#include "storage/backends.h"
#include "storage/postgres/pg_internal.h"

struct pg_store {
    struct store base;    /* first: what the table files hold */
    struct pg_conn *conn; /* owned */
    /* A transaction opened by store_begin (BEGIN) and not yet ended by COMMIT or ROLLBACK: a
     * lost connection is then not reconnected behind the caller's back (pg_store.c). */
    bool explicit_txn;
    /* Reconnection backoff (pg_store.c): no attempt before next_try_ms after a failed one, the
     * wait doubling from PG_RECONNECT_MIN_MS to PG_RECONNECT_MAX_MS; 0 while connected. */
    int64_t next_try_ms;
    int64_t backoff_ms;
    int64_t failed_ms; /* when its last attempt failed (monotonic), 0 when none */
    /* The body store_body_create began (pg_body.c). */
    struct {
        bool active;                  /* between store_body_create and store_body_finish */
        int status;                   /* the first failure of this body, else STORE_OK */
        int64_t id;                   /* the messages row's id, taken from its sequence at create */
        bool inserted;                /* the row is in (its first part written) */
        struct store_message_row row; /* text fields owned copies until the row is in */
        uint64_t size_bytes;          /* the body's announced length */
        uint64_t sent_bytes;          /* written to the server */
        unsigned char *part;          /* owned: bytes not yet sent, at most PG_BODY_PART_BYTES */
        size_t part_len;
    } body;
};

static inline struct pg_store *pg_store_of(struct store *s)
{
    return container_of(s, struct pg_store, base);
}

/* Copies the connection's last failure into the store's error text under what; returns rc. */
int pg_store_failed(struct pg_store *ps, const char *what, int rc);
/* Frees what a body being written holds (pg_body.c). */
void pg_body_reset(struct pg_store *ps);

#endif
