/*
 * pop3_internal.h - what the two halves of the POP3 session share: the session struct and the
 * few functions one half calls in the other. Not a public interface: only pop3_session.c (the
 * dispatcher, AUTHORIZATION, the lock, the relay window, the close path) and pop3_maildrop.c
 * (TRANSACTION and UPDATE: the snapshot, deletion marks, listings, RETR/TOP streaming) include it.
 *
 * Ownership: a struct pop3_session is created in on_open and hangs off its connection. on_close
 * marks it closed; it is freed once nothing refers to it any more (pending == 0): an outstanding
 * writer job (login window, UPDATE) or a uv timer not yet closed keeps it alive, and their
 * completions look at `closed` before touching the connection.
 */
#ifndef POSTERN_POP3_INTERNAL_H
#define POSTERN_POP3_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "common/pure/dotstuff.h"
#include "server/app.h"
#include "server/auth/auth.h"
#include "server/net/conn.h"
#include "storage/mailbox.h"
#include "storage/writer.h"

enum pop3_state {
    POP3_STATE_AUTHORIZATION = 0,
    POP3_STATE_TRANSACTION,
    POP3_STATE_UPDATE,
};

/* What the output pump is sending (multi-line answers that may pass the output bound). */
enum pop3_stream {
    POP3_STREAM_NONE = 0,
    POP3_STREAM_LIST, /* LIST without argument */
    POP3_STREAM_UIDL, /* UIDL without argument */
    POP3_STREAM_BODY, /* RETR or TOP: a body through the dot-stuffing encoder */
};

/* A writer job that opens or renews the relay window. s is NULL for a job that owns itself
 * (renewals: freed in its done); otherwise the login of session s waits for it. */
struct pop3_window_job {
    struct writer_job job;
    struct pop3_session *s;
    char key[CIDR_STRLEN];
    char user[ADDRESS_STRLEN];
    int64_t now_ms;
    int64_t duration_ms;
    bool is_login; /* also record the login in the history (not for renewals) */
};

/* UPDATE (RFC 1939 6): the marked entries, deleted in one writer job. */
struct pop3_update_job {
    struct writer_job job;
    struct pop3_session *s; /* kept alive by pending until done */
    int64_t user_id;
    int64_t *ids; /* owned */
    size_t n;
    size_t deleted;
};

struct pop3_session {
    struct conn *conn; /* borrowed; valid while !closed (and while a conn_ref is held) */
    struct app *app;   /* borrowed: cfg, reads, writer, auth */
    enum pop3_state state;
    unsigned errors;        /* error replies, for POP3_MAX_ERRORS */
    unsigned auth_failures; /* failed logins on this connection, for POP3_MAX_AUTH_FAILURES */
    uint64_t commands;
    bool closed;      /* on_close ran: never touch conn again except to unref */
    unsigned pending; /* async completions and handle closes still to come */

    /* AUTHORIZATION */
    bool have_user; /* USER was accepted; PASS may follow */
    char user[SASL_USER_MAX_BYTES + 1];
    const char *mech;              /* "USER", "PLAIN", "LOGIN": for the logs */
    struct sasl sasl;              /* AUTH exchange in progress when sasl_is_active() */
    struct auth_request *auth_req; /* borrowed from auth until done runs or we cancel */
    bool fail_close;               /* after the delayed failure answer: close */
    uv_timer_t timer;              /* failure delay (AUTHORIZATION) or stalled reader (RETR) */
    bool timer_open;
    uv_timer_t renew_timer; /* TRANSACTION: keeps the relay window open */
    bool renew_open;
    struct pop3_window_job login_job;

    /* TRANSACTION */
    bool locked;     /* holds the maildrop lock for user_id */
    int64_t user_id; /* 0 before login */
    char address[ADDRESS_STRLEN];
    bool window_opened; /* a window for window_key was opened by this session */
    char window_key[CIDR_STRLEN];
    struct store_mail_entry *entries; /* owned snapshot, message n is entries[n - 1] */
    bool *deleted;                    /* owned, one per entry */
    size_t count;
    size_t deleted_count;
    int64_t total_bytes;   /* every entry */
    int64_t deleted_bytes; /* marked entries */
    struct pop3_update_job update_job;

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
};

/* Bit masks of states for the command table. */
#define POP3_IN_AUTHORIZATION (1u << POP3_STATE_AUTHORIZATION)
#define POP3_IN_TRANSACTION   (1u << POP3_STATE_TRANSACTION)

/* pop3_session.c */
void pop3_reply_error(struct pop3_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pop3_enter_state(struct pop3_session *s, enum pop3_state st);
/* A completion for s is done: frees s when it was the last thing keeping a closed session. */
void pop3_release(struct pop3_session *s);
/* (Re)starts the session timer: in TRANSACTION its expiry means a stalled reader. */
void pop3_timer_start(struct pop3_session *s, uint64_t ms);

/* pop3_maildrop.c: the TRANSACTION commands; args as in the command table. */
void pop3_cmd_stat(struct pop3_session *s, const char *args);
void pop3_cmd_list(struct pop3_session *s, const char *args);
void pop3_cmd_uidl(struct pop3_session *s, const char *args);
void pop3_cmd_retr(struct pop3_session *s, const char *args);
void pop3_cmd_top(struct pop3_session *s, const char *args);
void pop3_cmd_dele(struct pop3_session *s, const char *args);
void pop3_cmd_rset(struct pop3_session *s, const char *args);
/* QUIT in TRANSACTION: UPDATE, the deletions in one writer job, the answer after the commit. */
void pop3_maildrop_quit(struct pop3_session *s);
/* Takes ownership of the snapshot (freed on failure too). 0, or -1 when out of memory. */
int pop3_maildrop_load(struct pop3_session *s, struct store_mail_entry *entries, size_t count);
/* on_drain: more of the current multi-line answer. */
void pop3_stream_pump(struct pop3_session *s);
/* The stalled-reader timer fired. */
void pop3_stream_stalled(struct pop3_session *s);
/* Closing: stop streaming, free the snapshot. */
void pop3_maildrop_free(struct pop3_session *s);

#endif
