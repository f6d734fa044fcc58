/*
 * smtp_internal.h - what server/smtp/smtp_session.c (state machine, dispatcher, EHLO/AUTH/STARTTLS
 * and the other simple commands) and server/smtp/smtp_tx.c (MAIL, RCPT, DATA, delivery) share: the
 * session and transaction structs (STYLE.md 1) and the few functions each calls in the other.
 * Private to those two files.
 */
#ifndef POSTERN_SMTP_INTERNAL_H
#define POSTERN_SMTP_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "server/auth/auth.h"
#include "server/net/conn.h"
#include "common/pure/smtp_data.h"
#include "common/pure/smtp_parse.h"
#include "storage/mailbox.h"
#include "storage/writer.h"

/* Failed AUTH attempts per connection before 421 and close (auth.c also blocks per client). */
#define SMTP_MAX_AUTH_FAILURES 3
/* "<sid hex>.<n>": the queue id in "250 2.0.0 Ok: queued as ID" and the Received header. */
#define SMTP_QUEUE_ID_MAX_BYTES 40
/* Room for the relay identity stamped into the Received header. */
#define SMTP_IDENTITY_MAX_BYTES (ADDRESS_STRLEN + 64)

enum smtp_state {
    SMTP_STATE_GREETED = 0, /* greeting sent; no EHLO/HELO yet (or forgotten at STARTTLS) */
    SMTP_STATE_READY,       /* after EHLO/HELO, no transaction */
    SMTP_STATE_MAIL,        /* MAIL accepted, no recipient yet */
    SMTP_STATE_RCPT,        /* at least one recipient accepted */
    SMTP_STATE_DATA,        /* after 354: the connection is in data mode */
    SMTP_STATE_BUSY,        /* end of data seen: the writer is storing the message */
};

/* A pending AUTH failure answer (auth.h: the session waits delay_ms). Owned by the session;
 * freed in the timer's close callback. */
struct smtp_delay_timer {
    uv_timer_t h;
    struct smtp_session *s; /* borrowed; NULL once the session dropped the timer */
};

/* What the writer job is doing for the session (one job at a time: reading is paused). */
enum smtp_job_kind {
    SMTP_JOB_NONE = 0,
    SMTP_JOB_DELIVER,      /* store_deliver: the message of the transaction */
    SMTP_JOB_COUNT_WINDOW, /* store_window_count_relayed for a recipient accepted on a window */
};

/* One mail transaction: created at MAIL, dropped at RSET, EHLO/HELO, STARTTLS or end of DATA. */
struct smtp_tx {
    enum address_path_kind sender_kind;
    struct address sender;
    char sender_text[ADDRESS_STRLEN]; /* address_format(sender): "" for <> */
    struct smtp_mail_params params;
    int64_t *local_ids; /* owned: distinct local user ids */
    size_t n_local, cap_local;
    char (*remote)[ADDRESS_STRLEN]; /* owned: distinct remote recipients, "local@domain" */
    size_t n_remote, cap_remote;
    size_t n_rcpts; /* RCPTs answered 250, duplicates included (max_recipients counts these) */
    char first_rcpt[ADDRESS_STRLEN]; /* for the log */
    /* The identity the first relayed recipient rested on (Received header), or "". */
    char identity[SMTP_IDENTITY_MAX_BYTES];
    struct smtp_data data; /* owned: the DATA scanner and the message block */
    bool data_ready;       /* data was initialised */
    /* While a writer job is out (reading paused). */
    char pending_rcpt[ADDRESS_STRLEN]; /* COUNT_WINDOW: the recipient waiting for its 250 */
    char window_key[CIDR_STRLEN];      /* COUNT_WINDOW */
    unsigned char *block;              /* DELIVER: owned, taken from data */
    const char **remote_ptrs;          /* DELIVER: owned array pointing into remote */
    struct store_delivery delivery;    /* DELIVER */
    char id[SMTP_QUEUE_ID_MAX_BYTES];  /* DELIVER: the queue id */
    uint64_t message_bytes;            /* DELIVER: the stored size (headers included) */
};

struct smtp_session {
    struct conn *conn; /* borrowed; the session is freed when it closes (or its job is done) */
    enum smtp_state state;
    bool esmtp;                           /* the client said EHLO */
    char helo[SMTP_HELO_MAX_BYTES + 1];   /* EHLO/HELO argument, sanitised for the header */
    char auth_user[ADDRESS_STRLEN];       /* normalised AUTH identity; "" before AUTH */
    char verb[16];                        /* the command being answered, for event=rejected */
    unsigned errors;                      /* error replies so far */
    unsigned auth_failures;               /* failed AUTH attempts on this connection */
    bool auth_too_many;                   /* the pending AUTH failure ends the session */
    uint64_t commands;                    /* commands dispatched */
    unsigned transactions;                /* messages handed to the writer (queue id suffix) */
    struct sasl sasl;                     /* owned: the running SASL exchange */
    struct auth_request *auth_req;        /* in flight; cancelled at close */
    struct smtp_delay_timer *delay_timer; /* owned; NULL when no failure answer is waiting */
    struct writer_job job;                /* embedded; with the writer while job_busy */
    enum smtp_job_kind job_kind;
    bool job_busy;
    bool closed; /* on_close ran while job_busy: the job's done frees the session */
    struct smtp_tx tx;
};

/* smtp_session.c */
void smtp_enter_state(struct smtp_session *s, enum smtp_state st);
const char *smtp_hostname(const struct smtp_session *s);
void smtp_reply_error(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
bool smtp_has_args(const char *args);
bool smtp_auth_offered(const struct smtp_session *s);
void smtp_session_free(struct smtp_session *s);

/* smtp_tx.c */
void smtp_cmd_mail(struct smtp_session *s, const char *args);
void smtp_cmd_rcpt(struct smtp_session *s, const char *args);
void smtp_cmd_data(struct smtp_session *s, const char *args);
size_t smtp_on_data(struct conn *c, const unsigned char *p, size_t n);
/* Drops the transaction (RSET semantics); the state goes back to READY if it was past it. Not
 * while a writer job is out (the session is paused then). */
void smtp_tx_reset(struct smtp_session *s);
/* Frees what the transaction owns (at session end). */
void smtp_tx_free(struct smtp_session *s);

#endif
