/*
 * smtp_tx.h - the SMTP mail transaction (server/smtp/smtp_tx.c) as its one caller,
 * server/smtp/smtp_session.c, sees it. The dependency runs one way: the session calls in, and the
 * transaction answers only through what these functions return (a result and the reply text) and
 * through the done callback the session hands over with a writer job. The transaction never sees
 * the session: what it needs to know of the client comes in a struct smtp_tx_client.
 *
 * Who does what: the session owns the state machine (which verb is valid when, and the state each
 * answer leads to), sends every reply, counts the errors, and keeps itself alive while a writer
 * job is out. The transaction owns the sender, the recipients and the message, the relay verdict
 * for each recipient, the trace headers, and the writer jobs' work (store calls).
 */
#ifndef POSTERN_SMTP_TX_H
#define POSTERN_SMTP_TX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/address.h"
#include "common/pure/buf.h"
#include "common/pure/cidr.h"
#include "common/pure/relay_policy.h"
#include "common/pure/smtp_data.h"
#include "common/pure/smtp_parse.h"
#include "server/net/conn.h"
#include "server/relay/relay_facts.h"
#include "server/smtp/smtp_dkim.h"
#include "storage/mailbox.h"
#include "storage/reader.h"
#include "storage/writer.h"

/* "<sid hex>.<n>": the queue id in "250 2.0.0 Ok: queued as ID" and the Received header. */
#define SMTP_QUEUE_ID_MAX_BYTES 40
/* Room for the relay identity stamped into the Received header. */
#define SMTP_IDENTITY_MAX_BYTES (ADDRESS_STRLEN + 64)
/*
 * Message content a transaction keeps in memory; the rest spills into a spool file as it arrives
 * (storage/spool.h). 100 sessions in DATA at once hold at most 100 times this, however large their
 * messages; a message up to this size never touches a spool file.
 */
#define SMTP_TX_MEMORY_BYTES (128 * 1024)
/* A reply as the transaction writes it, without CRLF: what fits one SMTP reply line. */
#define SMTP_TX_REPLY_MAX_BYTES (SMTP_REPLY_LINE_MAX_BYTES - 2)
/* A milter's quarantine reason is kept up to this long, NUL included (longer is cut). */
#define SMTP_TX_QUARANTINE_MAX_BYTES 256

/* What a call asks of the session. */
enum smtp_tx_result {
    SMTP_TX_OK = 0, /* the reply is the positive answer: send it, move to the next state */
    SMTP_TX_ERROR,  /* the reply is an error reply (4xx/5xx): send it as one (counted, logged) */
    SMTP_TX_SOFT,   /* the reply refuses but is no error (RFC 5321 4.5.3.1.10's 452): send it */
    SMTP_TX_JOB,    /* a writer job is ready: pause and hand it over with smtp_tx_submit() */
    SMTP_TX_MORE,   /* smtp_tx_feed(): the message goes on; nothing to answer yet */
    /* A read is out on a reader thread (storage/reader.h): pause and hold on, exactly as for a
     * submitted job; the done given to smtp_tx_new calls back, and smtp_tx_job_result answers. */
    SMTP_TX_WAIT,
};

/* What the session knows of its client, borrowed for the length of one call. */
struct smtp_tx_client {
    struct conn *conn;
    const char *auth_user; /* normalised AUTH identity; "" before AUTH */
    const char *helo;      /* sanitised EHLO/HELO argument */
    bool esmtp;            /* the client said EHLO */
};

/* The writer's answer, on the loop thread: status as the job's store call returned it. */
typedef void (*smtp_tx_done_fn)(void *ctx, int status);

/* What the writer job is doing (one job at a time: the session pauses reading). */
enum smtp_job_kind {
    SMTP_JOB_NONE = 0,
    SMTP_JOB_DELIVER,      /* store_deliver: the message of the transaction */
    SMTP_JOB_COUNT_WINDOW, /* store_window_take_relay for a recipient allowed on a window */
    SMTP_JOB_RCPT_READ,    /* a reader job: RCPT's facts and user (relay_rcpt_lookup) */
    SMTP_JOB_DKIM_READ,    /* a reader job: the From domain and its keys (smtp_dkim_prepare) */
};

/* The refusal a full window gets, prepared before the count job goes out (smtp_tx.c). */
struct smtp_window_refusal {
    char reply[SMTP_REPLY_LINE_MAX_BYTES];
    char log[RELAY_LOG_MAX_BYTES];
};

/* A recipient's DSN parameters (RFC 3461 4.1, 4.2), kept beside local_ids and remote. */
struct smtp_tx_rcpt_dsn {
    unsigned notify; /* SMTP_NOTIFY_* bits; 0 when not given */
    char *orcpt;     /* owned: ORCPT as sent, NULL when not given */
    char *address;   /* owned: the RCPT address, kept only for a local NOTIFY=SUCCESS */
};

/*
 * One mail transaction: allocated by the session at MAIL (smtp_tx_new), freed (smtp_tx_free) at
 * RSET, EHLO/HELO, STARTTLS, the end of DATA or BDAT LAST, a refused MAIL and the session's end,
 * as OpenSMTPD's smtp_tx is: an idle session holds only a NULL pointer instead of these 3.0 KiB.
 * The session owns the pointer; the fields are smtp_tx.c's alone.
 */
struct smtp_tx {
    enum address_path_kind sender_kind;
    struct address sender;
    char sender_text[ADDRESS_STRLEN]; /* address_format(sender): "" for <> */
    struct smtp_mail_params params;
    int64_t *local_ids; /* owned: distinct local user ids */
    size_t n_local, cap_local;
    char (*remote)[ADDRESS_STRLEN]; /* owned: distinct remote recipients, "local@domain" */
    size_t n_remote, cap_remote;
    /* owned: the DSN parameters of local_ids[i] and remote[i] (same counts and capacities) */
    struct smtp_tx_rcpt_dsn *local_dsn, *remote_dsn;
    /* COUNT_WINDOW: the DSN parameters of pending_rcpt (owned strings) */
    struct smtp_tx_rcpt_dsn pending_dsn;
    size_t n_rcpts; /* RCPTs answered 250, duplicates included (max_recipients counts these) */
    char first_rcpt[ADDRESS_STRLEN]; /* for the log */
    /* The identity the first relayed recipient rested on (Received header), or "". */
    char identity[SMTP_IDENTITY_MAX_BYTES];
    struct smtp_data data; /* owned: the DATA scanner and the in-memory part of the message */
    /* The spool file of the content beyond SMTP_TX_MEMORY_BYTES: opened at the first spill,
     * closed (and so gone: it has no name) by smtp_tx_clear or when the message is refused. */
    int spool_fd;        /* owned while spooling */
    bool spooling;       /* spool_fd is open */
    const char *db_path; /* borrowed from the configuration: where the spool directory is */
    uint64_t sid;        /* the session's id, for the log */
    /* The writer job: prepared by a call that returned SMTP_TX_JOB, out after smtp_tx_submit(). */
    struct writer_job job; /* embedded; with the writer until its done ran */
    enum smtp_job_kind job_kind;
    smtp_tx_done_fn done; /* the session's, with done_ctx */
    void *done_ctx;
    char pending_rcpt[ADDRESS_STRLEN]; /* COUNT_WINDOW: the recipient waiting for its 250 */
    /* RCPT's reads (relay_rcpt_lookup) as a reader job; owned, made at the first RCPT and kept
     * for the transaction's others. With reader threads the job is out while the session
     * waits (SMTP_TX_WAIT); inline it runs inside smtp_tx_rcpt. */
    struct reader_job rcpt_job;
    struct smtp_rcpt_read *lookup;
    char window_key[CIDR_STRLEN]; /* COUNT_WINDOW */
    unsigned window_max;          /* COUNT_WINDOW: relay.window_max_recipients */
    /* COUNT_WINDOW: owned, the answer (and its event=relay line) if the writer does not count
     * the recipient. On the heap, only while such a job is out: every idle session carries a
     * struct smtp_tx, and these 2 KiB would be most of it. */
    struct smtp_window_refusal *window_refusal;
    unsigned char *block;             /* DELIVER: owned, taken from data */
    unsigned char *trace;             /* DELIVER: owned, the trace headers (stored first) */
    const char **remote_ptrs;         /* DELIVER: owned array pointing into remote */
    unsigned *remote_notify;          /* DELIVER: owned, n_remote: NOTIFY of each */
    const char **remote_orcpt;        /* DELIVER: owned array pointing into remote_dsn */
    struct dsn_recipient *delivered;  /* DELIVER: owned, local NOTIFY=SUCCESS recipients */
    size_t n_delivered;               /* DELIVER */
    struct store_delivery delivery;   /* DELIVER */
    char id[SMTP_QUEUE_ID_MAX_BYTES]; /* DELIVER: the queue id */
    uint64_t message_bytes;           /* DELIVER: the stored size (headers included) */
    /* Signing and the submission fix-ups of a relayed message (smtp_dkim.h): fed from DATA on,
     * prepared at end of data, signed in the threadpool before the DELIVER job is submitted,
     * which then stores prefix (trace + what was added) in front instead of trace. On the heap,
     * so that a session that never relays does not carry the signer's buffers. */
    struct smtp_dkim *dkim; /* owned; NULL unless signing started */
    /* DKIM_READ: smtp_dkim_prepare as a reader job, and what it borrows for it */
    struct reader_job dkim_job;
    struct dkim_cache *dkim_cache; /* the server's (thread-safe); NULL: nothing is signed */
    const char *dkim_hostname;     /* the configuration's */
    unsigned char *prefix;         /* DELIVER: owned; NULL when nothing was added */
    uv_work_t sign_req;            /* DELIVER: the threadpool request while signing */
    struct conn *sign_conn;        /* DELIVER, while signing: borrowed (the session holds a ref) */
    /* The milters' end of message (smtp_tx_milter.c): the content was taken from the scanner
     * before delivery (block + block_off, block_len), and what they decided. */
    bool taken;
    size_t block_off, block_len;
    uint64_t spilled; /* the spool file's length, read before the take (which forgets it) */
    char *quarantine; /* owned: the first milter's quarantine reason; NULL when none, so that a
                       * transaction without one carries only the pointer */
    struct smtp_milter_lookup *mlookup; /* owned: smtp_tx_milter_lookup's, NULL before */
};

/* The milters' recipient changes' reads (smtp_tx_milter.c): a reader job and what it carries. */
struct smtp_milter_lookup {
    struct reader_job job;
    size_t n;               /* = the mods' count: one slot each */
    struct address *addrs;  /* owned: the mod's address, parsed and copied on the loop */
    bool *is_rcpt;          /* owned: the mod adds or deletes a recipient with a valid address */
    int64_t *ids;           /* owned: its local user, 0 when none (the job's result) */
    unsigned char *content; /* owned until smtp_tx_apply_milters takes it */
    size_t content_len;
    smtp_tx_done_fn done; /* the session's, with ctx */
    void *ctx;
};

/* RCPT's reads (relay_rcpt_lookup) and the RCPT's own parameters, kept across them. */
struct smtp_rcpt_read {
    struct relay_rcpt_lookup relay;
    struct smtp_rcpt_params params;
};

/* A new, empty transaction (zeroed), or NULL when out of memory. done(ctx) is where a read or
 * job out for it calls back (kept across smtp_tx_clear; smtp_tx_submit may set it again). */
struct smtp_tx *smtp_tx_new(smtp_tx_done_fn done, void *ctx);
/* Frees what the transaction owns and the transaction itself, and sets *txp to NULL (RSET, the
 * end of a transaction, the session's end). NULL or *txp NULL: a no-op. Not while a writer job is
 * out. */
void smtp_tx_free(struct smtp_tx **txp);
/* Drops what the transaction holds and zeroes it, keeping the struct (a new MAIL in the same
 * allocation). Not while a writer job is out. */
void smtp_tx_clear(struct smtp_tx *tx);
/* Starts the signer over (smtp_dkim_start), allocating it when the transaction has none yet.
 * 0, or -1 when out of memory. */
int smtp_tx_dkim_start(struct smtp_tx *tx);

/* MAIL FROM, in the session's READY state: the submission ports' AUTH requirement, the sender,
 * its parameters. OK or ERROR. */
enum smtp_tx_result smtp_tx_mail(struct smtp_tx *tx, const struct smtp_tx_client *cl,
                                 const char *args, char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* RCPT TO after MAIL: the relay verdict, the recipient limit, local users. OK (the recipient is
 * in), ERROR, SOFT, or JOB (a window recipient is counted first: its answer comes from
 * smtp_tx_job_result()). */
enum smtp_tx_result smtp_tx_rcpt(struct smtp_tx *tx, const struct smtp_tx_client *cl,
                                 const char *args, char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* DATA with recipients: readies the scanner. OK (the reply is the 354) or ERROR. */
enum smtp_tx_result smtp_tx_data(struct smtp_tx *tx, struct conn *c,
                                 char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* Message octets in data mode; *used_out is how many were taken (the rest are pipelined
 * commands after the dot). MORE, ERROR (the message is refused; clear the transaction) or OK
 * (the whole message is in: call smtp_tx_deliver()). */
enum smtp_tx_result smtp_tx_feed(struct smtp_tx *tx, const unsigned char *p, size_t n,
                                 size_t *used_out, char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* BDAT's first chunk, with recipients: readies the scanner for raw content (no dots, no end
 * marker; bare CR and LF made CRLF as for DATA). OK (no reply: the chunk's answer comes at its
 * end) or ERROR. */
enum smtp_tx_result smtp_tx_bdat_begin(struct smtp_tx *tx, struct conn *c,
                                       char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* Octets of a BDAT chunk, all taken. */
void smtp_tx_bdat_feed(struct smtp_tx *tx, const unsigned char *p, size_t n);
/* A chunk's octets are all in. OK (last: the whole message is in, call smtp_tx_deliver(); not
 * last: the session says how many octets it got) or ERROR (the message is refused, too big say:
 * clear the transaction). */
enum smtp_tx_result smtp_tx_bdat_chunk_end(struct smtp_tx *tx, bool last,
                                           char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* End of data: trace headers in front, the delivery prepared under queue id "<sid>.<seq>". JOB,
 * or ERROR (clear the transaction). */
enum smtp_tx_result smtp_tx_deliver(struct smtp_tx *tx, const struct smtp_tx_client *cl,
                                    unsigned seq, char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* Hands the prepared job to w (NULL: no writer); done(ctx, status) runs once, later, on the loop
 * thread. JOB when it was handed over, or ERROR with the reply when not (done never runs). */
enum smtp_tx_result smtp_tx_submit(struct smtp_tx *tx, struct conn *c, struct writer *w,
                                   smtp_tx_done_fn done, void *ctx,
                                   char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* The job's status turned into the answer that was waiting (from done, connection open). After
 * a delivery OK or ERROR (clear the transaction either way); after a window count as for RCPT. */
enum smtp_tx_result smtp_tx_job_result(struct smtp_tx *tx, struct conn *c, int status,
                                       char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* The job finished after the client went: logs a message that was stored all the same. */
void smtp_tx_job_orphaned(struct smtp_tx *tx, struct conn *c, int status);

/* ---- the milters (smtp_tx_milter.c) ---- */

struct milter_message;
struct milter_mod;

/* What RCPT added, to be taken back when a milter refuses the recipient. */
struct smtp_tx_rcpt_mark {
    size_t n_local, n_remote, n_rcpts;
};
void smtp_tx_rcpt_mark(const struct smtp_tx *tx, struct smtp_tx_rcpt_mark *mark);
void smtp_tx_rcpt_undo(struct smtp_tx *tx, const struct smtp_tx_rcpt_mark *mark);
/* Takes the whole message from the scanner so the milters can read it (view). 0 or -1. */
int smtp_tx_take_message(struct smtp_tx *tx, struct milter_message *view);
/*
 * First of the milters' end of message: reads which of the recipients mods add or delete are
 * local users, as one reader job. content, when not NULL, is the whole new message (owned by the
 * transaction from here, kept for smtp_tx_apply_milters). READER_DONE: apply now; READER_PENDING:
 * done(ctx, status) runs later on the loop, then apply; -1: out of memory (content freed).
 */
int smtp_tx_milter_lookup(struct smtp_tx *tx, struct conn *c, const struct milter_mod *mods,
                          size_t n, unsigned char *content, size_t content_len,
                          smtp_tx_done_fn done, void *ctx);
/* Frees what smtp_tx_milter_lookup kept (smtp_tx_clear calls it). */
void smtp_tx_milter_lookup_free(struct smtp_tx *tx);
/* Applies the milters' modifications (the same mods as the lookup's): envelope, quarantine, and
 * (with the new content the lookup kept) the message. 0, or -1 with the reply. */
int smtp_tx_apply_milters(struct smtp_tx *tx, struct conn *c, const struct milter_mod *mods,
                          size_t n, char reply[SMTP_TX_REPLY_MAX_BYTES]);
/* Shared with smtp_tx_milter.c: add a recipient once (0, or -1 when out of memory); one a
 * milter adds has no DSN parameters. */
int smtp_tx_add_local(struct smtp_tx *tx, int64_t id);
int smtp_tx_add_remote(struct smtp_tx *tx, const char *rcpt);
/* Drop recipient i, or every recipient from n on, with its DSN parameters. */
void smtp_tx_drop_local(struct smtp_tx *tx, size_t i);
void smtp_tx_drop_remote(struct smtp_tx *tx, size_t i);
void smtp_tx_truncate(struct smtp_tx *tx, size_t n_local, size_t n_remote);

/* ---- the recipients and their DSN parameters (smtp_tx_rcpt.c), for smtp_tx.c ---- */

/* Add a recipient once with the DSN parameters of its RCPT (p NULL: none); a local one keeps
 * address only when it asked for NOTIFY=SUCCESS. 0, or -1 when out of memory. */
int smtp_tx_add_local_dsn(struct smtp_tx *tx, int64_t id, const struct smtp_rcpt_params *p,
                          const char *address);
int smtp_tx_add_remote_dsn(struct smtp_tx *tx, const char *rcpt, const struct smtp_rcpt_params *p);
/* Copies p into *d (address as for smtp_tx_add_local_dsn, NULL for a remote one); 0 or -1. */
int smtp_tx_rcpt_dsn_set(struct smtp_tx_rcpt_dsn *d, const struct smtp_rcpt_params *p,
                         const char *address);
/* Frees what *d holds and zeroes it. */
void smtp_tx_rcpt_dsn_free(struct smtp_tx_rcpt_dsn *d);
/* End of data: remote_notify, remote_orcpt and delivered for store_deliver. 0 or -1. */
int smtp_tx_dsn_prepare(struct smtp_tx *tx);

#endif
