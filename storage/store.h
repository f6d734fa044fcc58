/*
 * store.h - the store: opening, migrations, and the functions the rest of postern uses to read
 * and change it. All SQL lives in storage/; callers never see a statement, nor which database
 * runs it (SQLite, storage/sqlite/, or PostgreSQL, storage/postgres/; storage/store_internal.h
 * is the seam between the table files and the backends).
 *
 * A struct store is one database connection with its prepared statements. It is used by one
 * thread at a time: the loop thread has its own (reads), the writer thread its own (writes), and
 * each admin command opens one. On SQLite, WAL lets the readers run beside the writer, and
 * synchronous=FULL makes a COMMIT durable before it returns, which is what "250 Ok: queued"
 * promises.
 *
 * Times are milliseconds since the Unix epoch (int64_t, "_ms").
 */
#ifndef POSTERN_STORE_H
#define POSTERN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* The schema version this binary writes; older databases are migrated at open. */
#define STORE_SCHEMA_VERSION 12
/* How long a statement waits for a lock held by another connection or process. */
#define STORE_BUSY_TIMEOUT_MS 10000

/* The store's codes have their own range, apart from errno and libuv codes (common/error.h):
 * a store failure can never be taken for a connection error. */
enum store_status {
    STORE_OK = 0,
    STORE_ERR = POSTERN_ERR_STORE_BASE - 1, /* SQLite or I/O failure; store_errmsg() says which */
    STORE_EXISTS = POSTERN_ERR_STORE_BASE - 2,    /* unique key already present */
    STORE_NOT_FOUND = POSTERN_ERR_STORE_BASE - 3, /* no such row */
    STORE_NO_DOMAIN = POSTERN_ERR_STORE_BASE - 4, /* a user's domain is not a local domain */
    STORE_IN_USE = POSTERN_ERR_STORE_BASE - 5,    /* still referenced (a domain that has users) */
    STORE_TOO_NEW = POSTERN_ERR_STORE_BASE - 6,   /* database schema is newer than this binary */
};

/* A short static name for a STORE_* code ("store: no such row"); for another code, a text
 * saying it is not a store code. store_errmsg() has the detail of the last failure. */
const char *store_strerror(int code);

struct store;

/* Whether database names a PostgreSQL database rather than a SQLite file: a libpq connection
 * string as common/pure/conninfo.h defines it (postgresql://..., postgres://..., or key=value
 * pairs such as "host=db1 dbname=mail"). Anything else is a SQLite file path. */
bool store_is_postgres(const char *database);

/* Opens (creating if missing) and migrates to STORE_SCHEMA_VERSION: path is a SQLite file, or a
 * PostgreSQL connection string (store_is_postgres). On failure *out is NULL and err holds one
 * line naming the file (never a connection string: it may hold a password) and the reason. */
int store_open(const char *path, struct store **out, char *err, size_t errlen);
/* Opens without migrating; for tests of migrations only. */
int store_open_at_version(const char *path, int version, struct store **out, char *err,
                          size_t errlen);
void store_close(struct store **s);
/* This connection's store_open created the database file (it did not exist before). */
bool store_created(const struct store *s);

/*
 * Who else may touch the database (storage/sqlite/db_files.c). A new database is created 0600, and
 * SQLite gives its -wal and -shm files the same mode; one created by an older postern, by hand or
 * under another umask may be open to others. Execute bits do not count.
 */
enum store_exposure {
    STORE_PRIVATE = 0,    /* only the owner can read or write */
    STORE_EXPOSED_GROUP,  /* the group can read or write, others cannot */
    STORE_EXPOSED_OTHERS, /* anybody on the machine can read or write */
};
struct store_exposure_report {
    enum store_exposure exposure; /* the worst of the three files */
    char file[1100];              /* the file that shows it; "" when private */
    unsigned mode;                /* its permission bits */
};
/* Looks at path, path-wal and path-shm (those that exist). STORE_OK, or STORE_ERR with err set
 * when one cannot be examined for another reason than not existing. */
int store_file_exposure(const char *path, struct store_exposure_report *out, char *err,
                        size_t errlen);
/* One line for the operator: which file, open to whom, its mode, and the chmod that fixes it. */
void store_exposure_format(const struct store_exposure_report *r, char *buf, size_t len);
/* The reason for the last failure on this connection. */
const char *store_errmsg(const struct store *s);
int store_schema_version(struct store *s);
int64_t store_now_ms(void);

/* Runs raw SQL; for unit tests only (server code calls named functions). */
int store_exec_for_tests(struct store *s, const char *sql);

/* Transactions for batching (the writer uses these; one admin command is one statement). */
int store_begin(struct store *s);
int store_commit(struct store *s);
int store_rollback(struct store *s);
/* Whether the last store_commit failed without knowing if the server committed: PostgreSQL's
 * connection was lost while the COMMIT was on its way. The caller must neither report success
 * nor redo the work as if nothing had been written; the writer fails the batch's jobs, and a
 * client that tries again may then store a message twice (at-least-once), never lose it.
 * Always false on SQLite, whose COMMIT either returns or leaves the file as it was. */
bool store_commit_unknown(const struct store *s);
int store_savepoint(struct store *s);
int store_savepoint_release(struct store *s);
int store_savepoint_rollback(struct store *s);
/*
 * A group of reads in one read transaction (storage/reader.c runs each reader job in one). On
 * SQLite each statement outside a transaction takes and drops the shared lock and checks the
 * write-ahead log again; a job of several lookups pays that once instead, and its lookups all
 * see one snapshot of the database. begin: a deferred BEGIN (no lock until the first read);
 * end: its COMMIT, or a ROLLBACK when that fails (a statement left unfinished). Nothing in the
 * group may write. On PostgreSQL both do nothing and return STORE_OK: each statement is a round
 * trip there, and two more per job would cost more than they save.
 */
int store_read_group_begin(struct store *s);
int store_read_group_end(struct store *s);

/*
 * Streaming a stored message body (storage/sqlite/body_reader.c): opened by store_message_open
 * (mailbox.h) or store_queue_body_open (queue.h). Copies the next up to cap bytes into buf and
 * sets *n_out (< cap only at the end; 0 once the whole body has been read). STORE_NOT_FOUND when
 * what was being read has been deleted meanwhile, STORE_ERR on a SQLite failure; after a failure
 * the reader can only be closed. Use a reader on the thread that opened it.
 */
struct store_body_reader;
int store_body_read(struct store_body_reader *r, void *buf, size_t cap, size_t *n_out);
void store_body_close(struct store_body_reader **r);
/*
 * Moves r to the store s (another thread's connection, body_reader.c): its next reads borrow
 * and give back connections through s's pool and leave their error text in s. NULL unbinds it
 * between two jobs on different threads: it may then only be rebound or closed (a close
 * unbound closes the connection it holds rather than pooling it). Never while another thread
 * uses r or s.
 */
void store_body_rebind(struct store_body_reader *r, struct store *s);
/* Idle read-only connections a store keeps for body readers: at most this many (up to about 150 KiB
 * each once warm: the schema and a 64 KiB page cache). A reader that finds none idle opens its
 * own, and one given back to a full pool is closed, so this bounds memory, never readers. */
#define STORE_READ_POOL_MAX 4
/* For unit tests: the read-only connections the store keeps idle for readers now, and how many
 * it has opened for them since store_open (body_reader.c). */
void store_read_pool_stats(const struct store *s, size_t *idle_out, uint64_t *opened_out);

/* Row callbacks for list functions: return 0 to go on, non-zero to stop. */

/* ---- domains (storage/domains.c) ---- */
struct store_domain {
    const char *name;
    int64_t created_ms;
    int64_t users;
};
typedef int (*store_domain_fn)(void *ctx, const struct store_domain *d);
int store_domain_add(struct store *s, const char *name);
int store_domain_del(struct store *s, const char *name); /* STORE_IN_USE while it has users */
int store_domain_list(struct store *s, store_domain_fn fn, void *ctx);
int store_domain_is_local(struct store *s, const char *name, bool *local_out);

/* ---- users (storage/users.c) ---- */
struct store_user {
    int64_t id;
    const char *address;
    int64_t created_ms;
    int64_t messages;
    int64_t bytes;
};
typedef int (*store_user_fn)(void *ctx, const struct store_user *u);
int store_user_add(struct store *s, const char *address, const char *domain,
                   const char *password_hash);
/* Both revoke: the windows opened under address (store_window_open's user) are closed in the
 * same transaction as the change. */
int store_user_set_password(struct store *s, const char *address, const char *password_hash);
int store_user_del(struct store *s, const char *address);
/* STORE_OK while user id still exists with exactly this hash string; STORE_NOT_FOUND once it was
 * deleted or its password changed (every new hash has a new salt, so even the same password
 * gives another string). */
int store_user_unchanged(struct store *s, int64_t id, const char *password_hash);
int store_user_list(struct store *s, const char *domain_or_null, store_user_fn fn, void *ctx);
/*
 * The id of the first user in store_user_list order (domain name, then address) of
 * domain_or_null, or of all users when it is NULL: where postmaster mail goes. One indexed
 * lookup (LIMIT 1) without the listing's per-user sums, so a client may ask for it with every
 * RCPT. STORE_NOT_FOUND when there is no such user.
 */
int store_user_first(struct store *s, const char *domain_or_null, int64_t *id_out);
/* Copies the argon2id hash string into hash_out (>= 128 bytes) and the id into *id_out. */
int store_user_get(struct store *s, const char *address, int64_t *id_out, char *hash_out,
                   size_t hashlen);

/* ---- trusted networks (storage/networks.c) ---- */
struct cidr;
struct ip_addr;
struct store_network {
    const char *cidr; /* canonical text */
    int64_t created_ms;
};
typedef int (*store_network_fn)(void *ctx, const struct store_network *n);
int store_network_add(struct store *s, const struct cidr *c);
int store_network_del(struct store *s, const struct cidr *c);
int store_network_list(struct store *s, store_network_fn fn, void *ctx);
/* The first trusted network holding ip, as text into match_out ("" and false when none). */
int store_network_match(struct store *s, const struct ip_addr *ip, bool *trusted_out,
                        char *match_out, size_t matchlen);

/* ---- POP-before-SMTP windows (storage/windows.c) ---- */
struct store_window {
    const char *key; /* ip_window_key(): an IPv4 address or an IPv6 network */
    const char *user;
    int64_t opened_ms;
    int64_t expires_ms;
    int64_t relayed; /* recipients relayed through this window */
};
typedef int (*store_window_fn)(void *ctx, const struct store_window *w);
/* Opens or renews: opened = now, expires = now + duration, user = user. A window still open
 * keeps its relayed count whoever renews it; one that had expired starts again from 0. */
int store_window_open(struct store *s, const char *key, const char *user, int64_t now_ms,
                      int64_t duration_ms);
/* Adds a successful POP3 login to the history (pop_logins); renewals and windows opened by hand
 * are not logins. */
int store_pop_login_record(struct store *s, const char *key, const char *user, int64_t at_ms);
/* At a POP3 login: store_window_open and store_pop_login_record in a savepoint of their own.
 * When they fail (a full disk) they are undone and *failed_out is set, and it is STORE_OK: the
 * caller's other changes stand. STORE_ERR only when even the undo failed (the transaction is
 * gone). */
int store_window_login(struct store *s, const char *key, const char *user, int64_t now_ms,
                       int64_t duration_ms, bool *failed_out);
int store_window_close(struct store *s, const char *key);
/* Only windows with expires > now_ms. */
int store_window_list(struct store *s, int64_t now_ms, store_window_fn fn, void *ctx);
/* The open window for key at now_ms; STORE_NOT_FOUND when none or expired. user_out >= 256. */
int store_window_lookup(struct store *s, const char *key, int64_t now_ms, char *user_out,
                        size_t userlen, int64_t *expires_out, int64_t *relayed_out);
/*
 * Counts one relayed recipient against the window for key, if the window is open at now_ms and
 * has relayed fewer than max: the check and the count are one statement, so parallel sessions
 * cannot overshoot max. STORE_OK when counted; STORE_NOT_FOUND when not (the window is full,
 * expired or gone): the recipient must then be refused.
 */
int store_window_take_relay(struct store *s, const char *key, int64_t now_ms, int64_t max);
/* Housekeeping only: lookups check expiry themselves. */
int store_window_purge(struct store *s, int64_t now_ms);
/* Windows not expired at now_ms (the metrics gauge). */
int store_window_count_open(struct store *s, int64_t now_ms, int64_t *count_out);

/* ---- nodes and the POP3 maildrop lock (storage/nodes.c) ---- */
/* Longest node name ([server] node, a host name). */
#define STORE_NODE_NAME_MAX_BYTES 255
/* Who held a node's name when store_node_claim looked. */
struct store_node_holder {
    bool found;
    char host[STORE_NODE_NAME_MAX_BYTES + 1];
    int64_t pid;
    int64_t expires_ms;
};
/*
 * Takes the name for the process (host, pid) with a lease until now_ms + lease_ms. STORE_IN_USE,
 * with the holder in *out, when another process's lease of that name is still running (nothing
 * is changed then); force takes it all the same (the caller found that process dead).
 */
int store_node_claim(struct store *s, const char *name, const char *host, int64_t pid,
                     int64_t now_ms, int64_t lease_ms, bool force, struct store_node_holder *out);
/* Moves the lease of name (held by pid) to now_ms + lease_ms; STORE_NOT_FOUND when another
 * process has taken the name meanwhile. */
int store_node_renew(struct store *s, const char *name, int64_t pid, int64_t now_ms,
                     int64_t lease_ms);
/* Gives the name up at a clean stop (only when (host, pid) still holds it). */
int store_node_leave(struct store *s, const char *name, const char *host, int64_t pid);
/*
 * Takes user_id's maildrop lock for session of node until now_ms + lease_ms, when nobody holds
 * it, its lease ran out, or node itself holds it (a leftover: see nodes.c). STORE_IN_USE when a
 * live session of another node holds it; nothing is changed then.
 */
int store_pop3_lock_take(struct store *s, int64_t user_id, const char *node, int64_t session,
                         int64_t now_ms, int64_t lease_ms);
/* Moves the lease of the lock (user_id, node, session) to now_ms + lease_ms; STORE_NOT_FOUND
 * when that session no longer holds it (released, or taken over after its lease ran out). */
int store_pop3_lock_renew(struct store *s, int64_t user_id, const char *node, int64_t session,
                          int64_t now_ms, int64_t lease_ms);
/* Releases the lock if (node, session) holds it; STORE_OK either way. */
int store_pop3_lock_release(struct store *s, int64_t user_id, const char *node, int64_t session);
/* At a node's start: its locks are leftovers of its previous run. *dropped_out may be NULL. */
int store_pop3_lock_drop_node(struct store *s, const char *node, size_t *dropped_out);
/* Who holds user_id's lock (lease running or not); STORE_NOT_FOUND when nobody. For tests and
 * diagnostics. */
int store_pop3_lock_holder(struct store *s, int64_t user_id, char *node_out, size_t nodelen,
                           int64_t *session_out, int64_t *expires_out);

/* ---- telling every node (storage/store.c) ---- */
/* The channel `postern queue flush` announces itself on. */
#define STORE_CHANNEL_QUEUE "postern_queue"
/*
 * Tells every node listening on channel that something changed, when the caller's transaction
 * commits (at once outside one). A hint only, never the truth: a listener rescans the database.
 * A backend without notifications (SQLite) does nothing and returns STORE_OK: its nodes rely on
 * their periodic rescans. PostgreSQL: NOTIFY (storage/postgres/pg_conn.h, pg_notify).
 */
int store_announce(struct store *s, const char *channel);

/*
 * Hearing those announcements: a listener is a thread of its own with a connection of its own
 * (storage/postgres/pg_listener.c) that listens on one channel and calls fn(arg, event) on that
 * thread:
 *   STORE_LISTENER_CONNECTED  after each (re)connection, the first included, once it listens:
 *                             whatever was announced while it did not was missed, so the
 *                             caller should look at the database as if it had heard something;
 *   STORE_LISTENER_HEARD      for announcements heard (several arriving together may be one call).
 * fn must be quick and safe to call from another thread (uv_async_send is both). A lost
 * connection is reconnected by the thread with the writer's backoff (PG_RECONNECT_MIN_MS doubling
 * to PG_RECONNECT_MAX_MS), logged once when it is lost and once when it listens again. The
 * listener never blocks its caller on the network: start only creates the thread, which makes
 * the first connection.
 *
 * Only a backend that can announce can listen: store_can_listen says whether database's can
 * (PostgreSQL: yes; SQLite: no, and store_listener_start refuses it with STORE_ERR; its nodes rely
 * on their rescans, STORE_QUEUE_RESCAN_MS).
 */
enum store_listener_event {
    STORE_LISTENER_CONNECTED = 1,
    STORE_LISTENER_HEARD,
};
struct store_listener;
typedef void (*store_listener_fn)(void *arg, enum store_listener_event event);
bool store_can_listen(const char *database);
/* STORE_OK and *out, or STORE_ERR with one line in err (SQLite, no memory, no thread). */
int store_listener_start(const char *database, const char *channel, store_listener_fn fn, void *arg,
                         struct store_listener **out, char *err, size_t errlen);
/* Stops the thread (it ends at once unless it is opening a connection: then when that attempt
 * ends, within the connection's connect_timeout), closes its connection and frees it; fn is not
 * called after this returns. NULL is a no-op. */
void store_listener_stop(struct store_listener **l);

/* ---- DKIM signing keys (storage/dkim_keys.c) ---- */
struct store_dkim_key {
    const char *domain;
    const char *selector;
    const char *algorithm;   /* "ed25519" or "rsa" (dkim_alg_name) */
    const char *private_key; /* NULL unless the listing asked for it */
    const char *public_key;  /* the p= value of the DNS record */
    int64_t created_ms;
};
typedef int (*store_dkim_key_fn)(void *ctx, const struct store_dkim_key *k);
/* STORE_NO_DOMAIN when domain is not local; STORE_EXISTS when the domain already has a key of
 * this algorithm or with this selector (list first to say which). */
int store_dkim_key_add(struct store *s, const char *domain, const char *selector,
                       const char *algorithm, const char *private_key, const char *public_key);
int store_dkim_key_del(struct store *s, const char *domain, const char *selector);
/* By domain then algorithm (ed25519 first); domain_or_null filters; with_private fills
 * private_key, which only the signer and nothing that prints should ask for. */
int store_dkim_key_list(struct store *s, const char *domain_or_null, bool with_private,
                        store_dkim_key_fn fn, void *ctx);

/* ---- outbound queue (storage/queue.c): admin views; the runner's side is storage/queue.h ---- */
struct store_queue_entry {
    int64_t id;
    const char *sender;
    const char *recipient;
    int64_t created_ms;
    int64_t next_attempt_ms;
    int64_t attempts;
    const char *last_error; /* "" when none */
    const char *quarantine; /* a milter's quarantine reason, or NULL */
};
typedef int (*store_queue_fn)(void *ctx, const struct store_queue_entry *q);
int store_queue_list(struct store *s, store_queue_fn fn, void *ctx);
/* Queue entries, claimed or waiting (the metrics gauge): counted on the queue_due index. */
int store_queue_count(struct store *s, int64_t *count_out);
int store_queue_drop(struct store *s, int64_t id);

#endif
