/*
 * mailbox.h - accepted messages and the POP3 maildrop: storing a message once for all its
 * recipients, listing a user's mailbox, reading a body in chunks, applying deletions.
 *
 * Who calls what, on which connection:
 *   - store_deliver and store_mailbox_delete change the database: they run in a writer job
 *     (storage/writer.h) on the writer's connection, inside the batch transaction. Each also takes
 *     its own nested savepoint, so a call that fails leaves nothing of itself behind and the
 *     caller's transaction goes on intact; outside any transaction each call is atomic by itself.
 *   - store_mailbox_snapshot runs on the loop thread's read connection (one SELECT: one
 *     consistent view).
 *   - store_message_open/read/close stream a body on the loop thread through a read-only
 *     connection lent by the store's pool (see "Reading a body" below).
 *
 * What it does not do: dot-stuffing, headers, sizes in lines (the body is stored exactly as POP3
 * serves it: CRLF line ends, headers included, not dot-stuffed), the POP3 lock (one session per
 * maildrop is the session's business), or running the outbound queue (only its rows are created
 * here).
 *
 * Why the body is not stored dot-stuffed, nor with a "no line starts with a dot" flag that would
 * let RETR send it with one memcpy: the encoder (common/pure/dotstuff.c) copies each canonical
 * line with one memcpy after two memchr, about 2.4 instructions an octet: about a quarter of the
 * server's instructions for a 4 KB RETR, a few microseconds of its wall time (callgrind and
 * scripts/bench pop3). Saving that would take a schema migration that scans or rewrites every
 * stored body, and a second way to make the wire form that only dot-free bodies would exercise;
 * a stuffed copy would also make the stored length differ from the size LIST reports. One
 * encoder for every reader is worth more than those microseconds.
 *
 * UIDL (RFC 1939 section 7: unique within the maildrop, persistent across sessions, 1-70
 * characters in 0x21-0x7E) is "<tag>.<entry id>.<received_ms>", e.g.
 * "3f9a0c1d2e4b5a69.42.1717171717171", at most 16+1+19+1+20 = 57 characters:
 *   - entry id: the mailbox row id, AUTOINCREMENT, so never reused within one database, not even
 *     after the newest entry is deleted;
 *   - tag: 64 random bits made once per database (table meta, key 'uidl_tag', schema version 4),
 *     so a database recreated from scratch, whose ids start again at 1, does not hand a client
 *     UIDLs it remembers from the old one;
 *   - received_ms: covers the case the tag cannot, a database restored from a backup (same tag,
 *     ids after the backup handed out again, but at a later time).
 */
#ifndef POSTERN_MAILBOX_H
#define POSTERN_MAILBOX_H

#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"
#include "common/pure/dsn.h"
#include "storage/store.h"

/* Spool octets store_deliver reads and writes at a time (its one buffer, on the writer thread). */
#define MAILBOX_SPOOL_CHUNK_BYTES (256 * 1024)
/* How long a body reader keeps one read snapshot open between calls (see below). */
#define STORE_MESSAGE_HOLD_MS 5000

/* ---- delivery (writer thread) ---- */

struct store_delivery {
    const char *sender; /* reverse-path, "" for the null sender (NULL is taken as "") */
    /*
     * The whole message as it will be served (CRLF line ends, not dot-stuffed, headers included)
     * is, in this order: prefix[0..prefix_len), then spool_len octets of the spool file spool_fd
     * (storage/spool.h) from its offset 0, then body[0..body_len). Any part may be empty
     * (spool_len 0: no spool file, spool_fd is not looked at). All borrowed for the call only:
     * the memory parts are written into the database in place, the spool file is read in chunks
     * of MAILBOX_SPOOL_CHUNK_BYTES, so the writer never holds a whole message.
     */
    const unsigned char *prefix;
    size_t prefix_len;
    int spool_fd;
    uint64_t spool_len;
    const unsigned char *body;
    size_t body_len;
    /* Local recipients as user ids; a user listed twice gets one entry. An id that is not a user
     * fails the whole delivery with STORE_NOT_FOUND. */
    const int64_t *local_user_ids;
    size_t n_local;
    /* Remote recipients, normalised "local@domain"; one queue row each (a recipient listed twice
     * gets one). The row's domain is the part after the last '@'. */
    const char *const *remote_rcpts;
    size_t n_remote;
    int64_t received_ms;
    /* The client said SMTPUTF8 (RFC 6531): with 8-bit octets in the header section the message
     * is recorded as needing SMTPUTF8 to be relayed (message_facts.smtputf8). */
    bool smtputf8;
    /* A milter's quarantine reason (stored in messages.quarantine), or NULL. */
    const char *quarantine;
    /*
     * DSN (RFC 3461; the values of common/pure/smtp_parse.h). ENVID as sent (xtext) or NULL, and
     * RET, stored with the message; per remote recipient (each array n_remote long, or NULL when
     * no recipient gave one) NOTIFY bits and ORCPT as sent (NULL entries: none), stored with its
     * queue row. A recipient listed twice keeps its first parameters.
     */
    const char *dsn_envid;
    int dsn_ret;
    const unsigned *remote_notify;
    const char *const *remote_orcpt;
    /*
     * The local recipients that asked for NOTIFY=SUCCESS (address and ORCPT set; the rest of each
     * entry is ignored): a "delivered" notice (storage/queue.h, store_notice) for them goes to the
     * sender in the same savepoint, so it exists exactly when the delivery does. Never for the null
     * sender. hostname is the reporting MTA.
     */
    const struct dsn_recipient *delivered;
    size_t n_delivered;
    const char *hostname;
    /* Set on success. A writer job whose COMMIT is retried runs again and sets it again, so read
     * it in the done callback, not in run. */
    int64_t message_id_out;
};

/*
 * Stores the message once (messages.size = prefix_len + spool_len + body_len; its facts, 8-bit
 * octets and the length of a leading Return-Path line, in message_facts), one mailbox entry per
 * distinct local user and one queue row per distinct remote recipient (next attempt = received_ms),
 * in the caller's transaction. At least one recipient is required. Returns STORE_OK,
 * STORE_NOT_FOUND (a local user id does not exist), or STORE_ERR (bad argument, body too large for
 * the database, SQLite failure; store_errmsg says which). On failure nothing of this delivery is
 * left.
 */
int store_deliver(struct store *s, struct store_delivery *d);

/* ---- the maildrop (loop thread) ---- */

struct store_mail_entry {
    int64_t id;   /* mailbox entry id: what RETR/DELE refer to and store_mailbox_delete takes */
    int64_t size; /* exact octets of the body as served (RFC 1939 LIST) */
    char uidl[POP3_UIDL_MAX_BYTES + 1];
    int64_t message_id;
};

/*
 * The user's entries in id order (oldest first) into a malloc'd array the caller frees; an empty
 * mailbox gives *entries_out == NULL and *count_out == 0. One statement, so one consistent view.
 */
int store_mailbox_snapshot(struct store *s, int64_t user_id, struct store_mail_entry **entries_out,
                           size_t *count_out);

/*
 * Reading a body: a reader streams one mailbox entry's body in caller-sized chunks without ever
 * holding it whole. It costs no connection, statement or thread hop of its own: the store (s)
 * keeps a few idle read-only connections with the lookups prepared (storage/sqlite/body_reader.c),
 * and a reader borrows one only while it holds a blob handle. Memory: up to about 150 KiB per
 * pooled connection (a 64 KiB page cache, the schema), at most STORE_READ_POOL_MAX of them idle,
 * plus one more per reader in the middle of a large body beyond that, plus the caller's buffer.
 *
 * Why a blob handle kept between calls rather than "reopen the blob per chunk": a freshly opened
 * blob handle reaches offset X by walking the body's overflow-page chain from the start, so
 * reading a 20 MiB body in 64 KiB chunks that way costs about 0.5 s of CPU (measured, 4 KiB pages;
 * the walk is O(X), the whole read O(n^2)), while one handle kept open reads it in about 4 ms. But
 * a handle kept open holds a read transaction, and on the loop's shared connection that would
 * freeze the view of every other session (a POP3 login's relay window invisible to SMTP, new mail
 * invisible to the next login) for as long as any RETR runs. So the handle lives on a pooled
 * connection, is kept between calls, and is dropped and reopened once it is older than hold_ms: a
 * slow client pins the WAL (delays checkpoints) for at most hold_ms at a time, and pays one chain
 * walk per hold_ms. hold_ms = 0 reopens per call (no snapshot is ever held between calls). The
 * handle and its connection are also given back as soon as the end of the body has been read, so
 * a body that fits in one read (a 4 KB message) is read and released in that one call.
 *
 * If the entry or its message is deleted meanwhile (an admin deleting the user; the POP3 lock
 * prevents the rest), reads inside the current snapshot still return the right bytes, and the
 * next reopen fails cleanly with STORE_NOT_FOUND: never bytes of anything else (message ids are
 * never reused).
 */
/*
 * Opens a reader on entry `entry_id`, which must belong to user_id (else STORE_NOT_FOUND), and
 * sets *size_out to the body size. s is borrowed: it lends the connection, receives the error
 * text of this reader's failures (store_errmsg), and must outlive the reader. Use the reader on
 * the thread that uses s.
 */
int store_message_open(struct store *s, int64_t user_id, int64_t entry_id, int64_t hold_ms,
                       struct store_body_reader **reader_out, int64_t *size_out);
/* Read and close it with store_body_read and store_body_close (store.h). */

/* ---- deletions (writer thread) ---- */

/*
 * Deletes those of entry_ids that belong to user_id (an id of another user, an unknown id or a
 * repeated id is ignored) and sets *deleted_out to how many entries went. Message bodies nobody
 * refers to any more (no mailbox entry, no queue row) go with them (schema triggers).
 */
int store_mailbox_delete(struct store *s, int64_t user_id, const int64_t *entry_ids, size_t n,
                         size_t *deleted_out);

#endif
