/*
 * smtp_internal.h - what the two halves of the SMTP server session share, and nothing else
 * includes: the session struct and its states, and the few calls each half makes into the
 * other. smtp_session.c owns the session (its lifetime, state machine, dispatcher, error limits
 * and its one timer) and every command but AUTH; smtp_auth.c holds AUTH (RFC 4954): the SASL
 * exchange, the verification in server/auth/auth.c and the answers, delayed or not, to it.
 * smtp_bdat.c holds BDAT (RFC 3030): the command and the chunks' octets in data mode.
 * smtp_milter.c asks the milters (server/milter/milter.h) at connect, HELO, MAIL, RCPT and end
 * of message; what it keeps is behind one pointer, NULL when the service has no milters.
 * The transaction (smtp_tx.h) is none of theirs: the session calls it.
 */
#ifndef POSTERN_SMTP_INTERNAL_H
#define POSTERN_SMTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/pure/sasl.h"
#include "server/auth/auth.h"
#include "server/fault/fault.h"
#include "server/net/session_ref.h"
#include "server/smtp/smtp_tx.h"

struct smtp_milter;

enum smtp_state {
    SMTP_STATE_GREETED = 0, /* greeting sent; no EHLO/HELO yet (or forgotten at STARTTLS) */
    SMTP_STATE_READY,       /* after EHLO/HELO, no transaction */
    SMTP_STATE_MAIL,        /* MAIL accepted, no recipient yet */
    SMTP_STATE_RCPT,        /* at least one recipient accepted */
    SMTP_STATE_DATA,        /* after 354: the connection is in data mode */
    SMTP_STATE_BUSY,        /* end of data seen: the writer is storing the message */
    SMTP_STATE_BDAT,        /* BDAT chunks taken, the LAST one not yet (smtp_bdat.c) */
};

/* What the octets of the BDAT chunk being read (in data mode) are for. */
enum smtp_chunk {
    SMTP_CHUNK_NONE = 0, /* no chunk: data mode, if on, is DATA's */
    SMTP_CHUNK_STORE,    /* content of the transaction */
    SMTP_CHUNK_SKIP,     /* the BDAT was refused: read and dropped, so none is run as a command */
};

struct smtp_session {
    struct conn *conn; /* borrowed; valid while !ref.closed (and while a conn_ref is held) */
    struct session_ref ref;
    enum smtp_state state;
    bool esmtp; /* the client said EHLO */
    /* owned: the EHLO/HELO argument, sanitised for the header; NULL before (smtp_session_helo
     * says "" then). On the heap at its length: most names are short, the limit is 255. */
    char *helo;
    /* owned: the normalised AUTH identity; NULL before AUTH (smtp_session_auth_user says "") */
    char *auth_user;
    char verb[16];           /* the command being answered, for event=rejected */
    unsigned errors;         /* error replies so far */
    char *held;              /* owned: the command waiting out error_delay */
    size_t held_len;         /* its length, without the NUL */
    unsigned auth_failures;  /* failed AUTH attempts on this connection */
    bool auth_too_many;      /* the pending AUTH failure ends the session */
    unsigned char auth_mech; /* the last AUTH's enum metrics_mech */
    uint64_t commands;       /* commands dispatched */
    unsigned transactions;   /* messages handed to the writer (queue id suffix) */
    struct sasl *sasl;       /* owned: the running SASL exchange (1.3 KiB); NULL outside one */
    struct auth_request *auth_req; /* in flight (holds a reference); cancelled at close */
    /* owned: a failed AUTH's answer, or held's run; made at its first use (delay_timer_get), so
     * that a session that never waits carries only the pointer, and closed at close */
    uv_timer_t *delay_timer;
    /* owned: the mail transaction (smtp_tx.c), allocated at MAIL and freed when it ends
     * (smtp_session_tx_reset); NULL in GREETED and READY. */
    struct smtp_tx *tx;
    struct fault_conn *fault; /* owned; NULL unless [server] faults = yes */
    enum smtp_chunk chunk;    /* the BDAT chunk being read, if any */
    uint64_t chunk_left;      /* its octets still to come */
    uint64_t chunk_size;      /* its size, for "250 2.0.0 N octets received" */
    bool chunk_last;          /* it is the LAST one */
    /* owned: the milters and what their steps need (smtp_milter.c); NULL when the service has
     * none, so that an idle session without milters carries only this pointer. */
    struct smtp_milter *milter;
};

/* ---- smtp_session.c ---- */

/* An error reply (4xx/5xx, without CRLF): sent, logged as event=rejected, counted against the
 * error limits. */
__attribute__((format(printf, 2, 3))) void smtp_reply_error(struct smtp_session *s, const char *fmt,
                                                            ...);
/* The EHLO/HELO name and the AUTH identity, "" when there is none. */
const char *smtp_session_helo(const struct smtp_session *s);
const char *smtp_session_auth_user(const struct smtp_session *s);
/* Drops one reference (server/net/session_ref.h); the last one frees the session. */
void smtp_session_release(struct smtp_session *s);
/* Runs smtp_auth_failure_answer after delay_ms on the session's timer. -1 when there is no
 * timer (the caller answers at once then). */
int smtp_session_delay_answer(struct smtp_session *s, uint64_t delay_ms);

/* Moves to st, logging the change at debug level. */
void smtp_session_enter_state(struct smtp_session *s, enum smtp_state st);
/* Drops the transaction (RSET semantics), telling the milters; back to READY if the state was
 * past it. */
void smtp_session_tx_reset(struct smtp_session *s);
/* The whole message is in: hands it to the writer; the answer comes after the commit. */
void smtp_session_deliver(struct smtp_session *s);
/* True (and the 452 4.3.1 sent) while the disk reserve refuses new mail. */
bool smtp_session_refused_for_space(struct smtp_session *s);

/* ---- smtp_bdat.c ---- */

/* The BDAT command (the dispatcher's table row). */
void smtp_cmd_bdat(struct smtp_session *s, const char *args);
/* Data mode while s->chunk is not NONE: octets of the chunk; returns how many were taken (the
 * rest, after the chunk's last octet, goes back to the line reader). */
size_t smtp_bdat_data(struct smtp_session *s, const unsigned char *p, size_t n);

/* ---- smtp_milter.c: each returns false when there are no milters (the caller goes on) ---- */

/* At open: the milters' connect step, which sends the greeting. */
bool smtp_milter_connect(struct smtp_session *s);
/* After postern accepted HELO/EHLO, MAIL or RCPT: next_ok sends the positive reply if the
 * milters agree; otherwise their refusal is sent (and a refused recipient taken back). */
bool smtp_milter_helo(struct smtp_session *s, void (*next_ok)(struct smtp_session *s));
bool smtp_milter_mail(struct smtp_session *s, const char *args,
                      void (*next_ok)(struct smtp_session *s));
/* Before postern's RCPT checks: remembers the arguments and what to take back (the checks may
 * finish in a writer job, after the command line is gone). Nothing without milters. */
void smtp_milter_rcpt_begin(struct smtp_session *s, const char *args);
/* RCPT accepted by postern: the remembered arguments shown to the milters. */
bool smtp_milter_rcpt(struct smtp_session *s, void (*next_ok)(struct smtp_session *s));
/* End of data: the milters' verdict, their changes applied, then smtp_session_deliver. */
bool smtp_milter_message(struct smtp_session *s);
/* The transaction ended without a message. */
void smtp_milter_abort(struct smtp_session *s);
/* At close. */
void smtp_milter_free(struct smtp_session *s);

/* ---- smtp_auth.c ---- */

/* AUTH is offered under TLS, or in plaintext when smtp.plaintext_auth says so. */
bool smtp_auth_offered(const struct smtp_session *s);
/* The AUTH command (the dispatcher's table row). */
void smtp_cmd_auth(struct smtp_session *s, const char *args);
/* A line answering a 334 challenge, while sasl_is_active(). */
void smtp_auth_continue(struct smtp_session *s, const char *line, size_t len);
/* Whether an AUTH exchange is running (the next line is its answer). */
bool smtp_auth_active(const struct smtp_session *s);
/* Wipes and frees the SASL exchange state, if any (at the exchange's end and at close). */
void smtp_auth_drop(struct smtp_session *s);
/* A line the reader refused (overlong, NUL) while sasl_is_active(): fails the exchange. */
void smtp_auth_bad_line(struct smtp_session *s, enum linereader_status why);
/* The answer to a failed verification, from the session's timer or at once. */
void smtp_auth_failure_answer(struct smtp_session *s);
/* At close: cancels a verification in flight. True when one was cancelled: its done never
 * runs, so its reference is the caller's to drop, with the others, in one call. */
bool smtp_auth_cancel(struct smtp_session *s);

#endif
