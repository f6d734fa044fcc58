/*
 * pop3_maildrop.h - the maildrop of a logged-in POP3 session (server/pop3/pop3_maildrop.c) as its
 * one caller, server/pop3/pop3_session.c, sees it. The dependency runs one way: the session calls
 * in, and the maildrop answers only through what these functions return (a result and, for an
 * error, the reply text) and through the done callback the session hands over with the UPDATE
 * writer job. The maildrop never sees the session.
 *
 * Reads (storage/reader.h): the snapshot at login, the opening of a body for RETR or TOP and each
 * chunk of it are reader jobs. Inline (SQLite) they finish inside the call, as plain reads did;
 * with reader threads the call says PENDING, reading stays paused, and the maildrop reports the
 * outcome later through the session's read callback (pop3_md_read_fn). The session holds a
 * reference to itself and to the connection while a read is out, which is what lets the
 * maildrop's job outlive a closed connection: the maildrop frees what a late read brought in.
 *
 * Who does what: the session owns the state machine, the command table, every error reply and the
 * error count, its timers (the stalled-reader timer included: pop3_maildrop_pump says when to arm
 * it) and its own lifetime. The maildrop owns the lock on the user's maildrop, the snapshot and the
 * deletion marks, the TRANSACTION commands' answers, the output pump of multi-line answers, and the
 * UPDATE job's work.
 */
#ifndef POSTERN_POP3_MAILDROP_H
#define POSTERN_POP3_MAILDROP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/address.h"
#include "common/pure/dotstuff.h"
#include "common/pure/fault.h"
#include "server/net/conn.h"
#include "storage/mailbox.h"
#include "storage/reader.h"
#include "storage/store.h"
#include "storage/writer.h"

/* An error reply as the maildrop writes it, without CRLF. */
#define POP3_MD_REPLY_MAX_BYTES 128

/* What a TRANSACTION command asks of the session. */
enum pop3_md_result {
    POP3_MD_OK = 0, /* answered (the positive reply is out) */
    POP3_MD_ERROR,  /* the reply is an error reply: send it as one (counted) */
    POP3_MD_STREAM, /* a multi-line answer started (reading is paused): pump it */
    /* A read is out (reading is paused): the result comes through the read callback. */
    POP3_MD_PENDING,
};

/* What pop3_maildrop_pump() did. */
enum pop3_pump {
    POP3_PUMP_IDLE = 0, /* nothing to send (or the connection is closing) */
    POP3_PUMP_WAIT,     /* output is backed up: on_drain pumps again; arm the stalled timer */
    POP3_PUMP_DONE,     /* the answer is complete and reading resumed: stop the stalled timer */
    POP3_PUMP_FAILED,   /* a body could not be read after "+OK": abort the connection */
    POP3_PUMP_CUT,      /* fault injection cut the body (cut below): close, flushing what went */
    POP3_PUMP_READING,  /* a chunk read is out: the read callback says when to pump again */
};

/* What pop3_maildrop_open() found. */
enum pop3_md_open {
    POP3_MD_OPENED = 0,   /* locked, snapshot taken */
    POP3_MD_IN_USE,       /* another session of this process holds the lock (logged) */
    POP3_MD_NO_MEMORY,    /* nothing is held */
    POP3_MD_STORE_ERROR,  /* the snapshot failed (logged); nothing is held */
    POP3_MD_OPEN_PENDING, /* the snapshot is being read: the result comes through the callback */
};

/* Which read a read callback reports on. */
enum pop3_md_read {
    POP3_MD_READ_OPEN,  /* the login's snapshot: result is an enum pop3_md_open */
    POP3_MD_READ_BODY,  /* RETR/TOP: result is an enum pop3_md_result, reply its error reply */
    POP3_MD_READ_CHUNK, /* a chunk of the body arrived: pump again (result unused) */
};

/*
 * A read that answered PENDING is over (threaded reads only), on the loop thread. Called exactly
 * once per PENDING, also after pop3_maildrop_stop (the maildrop has then already dropped what
 * the read brought; the session only releases what it held for it).
 */
typedef void (*pop3_md_read_fn)(void *ctx, enum pop3_md_read what, int result, const char *reply);

/* The one reader job of a maildrop: at most one read is out at a time. */
struct pop3_md_read_job {
    struct reader_job job; /* with the reader from a PENDING submit until its done ran */
    enum pop3_md_read what;
    bool threaded; /* on a reader thread: the body reader is rebound around each read */
    int64_t user_id;
    int64_t entry_id;                 /* BODY */
    uint64_t msg;                     /* BODY: the message number, for the answer and logs */
    bool top;                         /* BODY: TOP rather than RETR */
    uint64_t top_lines;               /* BODY: TOP's n */
    struct store_mail_entry *entries; /* OPEN's result, owned until taken */
    size_t count;
    struct store_body_reader *body; /* BODY's result, owned until taken */
    int64_t size;
    size_t n;        /* CHUNK: octets read into the maildrop's in_buf */
    char error[256]; /* the store's message when the read failed */
};

/* What the output pump is sending (multi-line answers that may pass the output bound). */
enum pop3_stream {
    POP3_STREAM_NONE = 0,
    POP3_STREAM_LIST, /* LIST without argument */
    POP3_STREAM_UIDL, /* UIDL without argument */
    POP3_STREAM_BODY, /* RETR or TOP: a body through the dot-stuffing encoder */
};

/* UPDATE is over and answered, on the loop thread. */
typedef void (*pop3_md_update_fn)(void *ctx);

/* UPDATE (RFC 1939 6): the marked entries, deleted in one writer job. */
struct pop3_update_job {
    struct writer_job job; /* with the writer until its done ran */
    int64_t user_id;
    int64_t *ids; /* owned; NULL when n is 0 */
    size_t n;
    size_t deleted;
    bool release_lock; /* also delete the lock's row (node, session) */
    const char *node;  /* borrowed from the config */
    int64_t session;
    pop3_md_update_fn done; /* the session's, with ctx */
    void *ctx;
};

/* Embedded in the session, which zeroes it once; the fields are pop3_maildrop.c's alone. */
struct pop3_maildrop {
    struct conn *conn;       /* borrowed while open */
    struct reader *reads;    /* borrowed while open: the loop's reader */
    pop3_md_read_fn on_read; /* the session's, with read_ctx */
    void *read_ctx;
    struct pop3_md_read_job rj;
    bool read_out;    /* rj is with the reader (PENDING): nothing it uses may be freed */
    bool read_failed; /* the last chunk could not be read */
    bool locked;      /* holds the maildrop lock for user_id (this process's entry) */
    bool db_locked;   /* and its database row, taken by the login job */
    int64_t user_id;
    int64_t session;                  /* the session's id: the lock's owner token */
    struct writer *writer;            /* borrowed: the release job goes through it */
    const char *node;                 /* borrowed from the config */
    char address[ADDRESS_STRLEN];     /* the user's, for the logs */
    struct store_mail_entry *entries; /* owned snapshot, message n is entries[n - 1] */
    bool *deleted;                    /* owned, one per entry */
    size_t count;
    size_t deleted_count;
    int64_t total_bytes;   /* every entry */
    int64_t deleted_bytes; /* marked entries */
    struct pop3_update_job update;

    /* the output pump */
    enum pop3_stream stream;
    size_t stream_next;               /* LIST/UIDL: next index */
    uint64_t stream_msg;              /* RETR/TOP: message number, for the log */
    bool stream_top;                  /* TOP rather than RETR */
    struct store_body_reader *reader; /* owned while streaming a body */
    struct dotstuff ds;
    unsigned char *in_buf; /* owned while streaming a body */
    size_t in_off, in_len;
    bool in_eof;
    unsigned char *out_buf; /* owned while streaming */
    /* Armed by fault injection (server/fault/fault.h) before RETR or TOP runs; disarmed when the
     * answer ends, or by the session when the command did not stream. */
    struct fault_cut cut;
};

/* Who locks a maildrop: the user, and the session of this node that will hold it. */
struct pop3_md_owner {
    int64_t user_id;
    const char *address; /* the user's, for the logs */
    int64_t session;     /* conn_sid of the session */
    struct writer *writer;
    const char *node; /* [server] node; borrowed for the session's life */
};
/* The password was right: takes this process's entry of the lock on the user's maildrop (one
 * session per maildrop, RFC 1939 8): POP3_MD_OPENED, POP3_MD_IN_USE when a session here holds
 * it, or POP3_MD_NO_MEMORY. The database row is the login job's (pop3_window.h); once it is
 * taken, say so with pop3_maildrop_locked_in_db. */
enum pop3_md_open pop3_maildrop_lock(struct pop3_maildrop *md, const struct pop3_md_owner *o);
void pop3_maildrop_locked_in_db(struct pop3_maildrop *md);
/* The lock's row went to a session of another node (server/node.c found it at a renewal). */
bool pop3_maildrop_lock_lost(const struct pop3_maildrop *md);
/* With the lock held: the snapshot, read through reader. on_read(ctx) is called for every read
 * that answered PENDING, this one and those of later commands. A failed snapshot releases the
 * lock. */
enum pop3_md_open pop3_maildrop_open(struct pop3_maildrop *md, struct conn *c,
                                     struct reader *reader, pop3_md_read_fn on_read, void *ctx);
/* The connection went (on_close): stops streaming and frees the snapshot (a read still out
 * frees its own results when it comes back). The lock stays until pop3_maildrop_close(), so no
 * new session reads the maildrop while UPDATE may still run. */
void pop3_maildrop_stop(struct pop3_maildrop *md);
/* Stops, and releases the lock. Safe when not open, and twice. Not the UPDATE job: that one ends
 * in its done. */
void pop3_maildrop_close(struct pop3_maildrop *md);

size_t pop3_maildrop_messages(const struct pop3_maildrop *md);
int64_t pop3_maildrop_octets(const struct pop3_maildrop *md);
/* Entries marked as deleted. */
size_t pop3_maildrop_marked(const struct pop3_maildrop *md);
bool pop3_maildrop_is_streaming(const struct pop3_maildrop *md);

/* The TRANSACTION commands (RFC 1939 5, 7); args as the command table hands them over. */
typedef enum pop3_md_result (*pop3_md_command_fn)(struct pop3_maildrop *md, const char *args,
                                                  char reply[POP3_MD_REPLY_MAX_BYTES]);
enum pop3_md_result pop3_maildrop_stat(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES]);
enum pop3_md_result pop3_maildrop_list(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES]);
enum pop3_md_result pop3_maildrop_uidl(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES]);
enum pop3_md_result pop3_maildrop_retr(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES]);
enum pop3_md_result pop3_maildrop_top(struct pop3_maildrop *md, const char *args,
                                      char reply[POP3_MD_REPLY_MAX_BYTES]);
enum pop3_md_result pop3_maildrop_dele(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES]);
enum pop3_md_result pop3_maildrop_rset(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES]);

/* More of the current multi-line answer (after a STREAM result, and from on_drain). */
enum pop3_pump pop3_maildrop_pump(struct pop3_maildrop *md);

/*
 * QUIT in TRANSACTION, the session in UPDATE (RFC 1939 6). The marked entries are deleted and the
 * lock's database row released in one writer job, and the answer goes out after the commit, then
 * the close: 1, and done(ctx) runs once, later, after that answer. With nothing marked and no row
 * to release: "+OK Bye" and the close at once, 0. 0 too when the job could not start (answered
 * with -ERR and closed): done never runs then.
 */
int pop3_maildrop_quit(struct pop3_maildrop *md, struct writer *w, pop3_md_update_fn done,
                       void *ctx);

#endif
