/*
 * pop3_internal.h - what the two halves of the POP3 server session share, and nothing else
 * includes: the session struct and its states, and the few calls each half makes into the
 * other. pop3_session.c owns the session (its lifetime, the dispatcher, the error limit, the
 * relay window's renewals, the close path and the session's timers) and every command but the
 * login's; pop3_auth.c holds the AUTHORIZATION state's login: USER/PASS, AUTH, the verification
 * in server/auth/auth.c, the delayed answer to a failure, and the login itself (the maildrop
 * lock, the snapshot and the relay window's opening). TRANSACTION and UPDATE are
 * pop3_maildrop.c's (pop3_maildrop.h), which neither calls back.
 */
#ifndef POSTERN_POP3_INTERNAL_H
#define POSTERN_POP3_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/pure/cidr.h"
#include "common/pure/sasl.h"
#include "server/auth/auth.h"
#include "server/fault/fault.h"
#include "server/net/session_ref.h"
#include "server/pop3/pop3_maildrop.h"
#include "server/pop3/pop3_session.h"
#include "server/pop3/pop3_window.h"
#include "storage/store.h"

enum pop3_state {
    POP3_STATE_AUTHORIZATION = 0,
    POP3_STATE_TRANSACTION,
    POP3_STATE_UPDATE,
};

struct pop3_session {
    struct conn *conn; /* borrowed; valid while !ref.closed (and while a conn_ref is held) */
    struct app *app;   /* borrowed: cfg, reads, writer, auth */
    struct session_ref ref;
    enum pop3_state state;
    unsigned errors;        /* error replies, for POP3_MAX_ERRORS */
    unsigned auth_failures; /* failed logins on this connection, for POP3_MAX_AUTH_FAILURES */
    uint64_t commands;

    /* AUTHORIZATION */
    bool have_user; /* USER was accepted; PASS may follow */
    char user[SASL_USER_MAX_BYTES + 1];
    const char *mech; /* "USER", "PLAIN", "LOGIN": for the logs */
    /* owned: the AUTH exchange (1.3 KiB, a password inside), allocated by AUTH and wiped and
     * freed when the exchange ends (pop3_auth_drop) and at close; NULL outside one. */
    struct sasl *sasl;
    struct auth_request *auth_req; /* borrowed from auth until done runs or we cancel */
    bool fail_close;               /* after the delayed failure answer: close */
    uv_timer_t timer;              /* failure delay (AUTHORIZATION) or stalled reader (RETR) */
    bool timer_open;
    uv_timer_t renew_timer; /* TRANSACTION: keeps the relay window open */
    bool renew_open;
    struct pop3_window_job login_job; /* with the writer from login_begin to login_window_done */

    /* TRANSACTION */
    char address[ADDRESS_STRLEN]; /* the logged-in user, "" before */
    int64_t user_id;
    char user_hash[PASSWORD_HASH_BYTES]; /* the stored hash the login matched */
    bool window_opened;                  /* a window for window_key was opened by this session */
    char window_key[CIDR_STRLEN];
    struct pop3_maildrop md;  /* owned: lock, snapshot, marks, output pump (pop3_maildrop.c) */
    struct fault_conn *fault; /* owned; NULL unless [server] faults = yes */
};

/* ---- pop3_session.c, for pop3_auth.c ----------------------------------------------------- */

void pop3_enter_state(struct pop3_session *s, enum pop3_state st);
/* An error reply (fmt without CRLF), counted for POP3_MAX_ERRORS. */
__attribute__((format(printf, 2, 3))) void pop3_reply_error(struct pop3_session *s, const char *fmt,
                                                            ...);
/* Drops one reference (server/net/session_ref.h): the last one frees the session. */
void pop3_session_release(struct pop3_session *s);
/* The session's timer: the failure delay in AUTHORIZATION, the stalled reader in TRANSACTION. */
void pop3_on_session_timer(uv_timer_t *t);
/* The renewal timer of the relay window, started by a login that opened one. */
void pop3_on_renew_timer(uv_timer_t *t);
/* A maildrop read answered PENDING: hold the session and the connection until its callback. */
void pop3_hold_for_read(struct pop3_session *s);
/* The maildrop's read callback (pop3_md_read_fn): carries on, then drops what was held. */
void pop3_maildrop_read_done(void *ctx, enum pop3_md_read what, int result, const char *reply);

/* ---- pop3_auth.c, for pop3_session.c ----------------------------------------------------- */

/* Whether USER/PASS and AUTH may be used now: over TLS, or pop3.plaintext_auth. */
bool pop3_auth_allowed(const struct pop3_session *s);
/* Forgets a USER and an AUTH exchange, and the SASL line length. */
void pop3_auth_reset(struct pop3_session *s);
/* Whether an AUTH exchange is running (the next line is its answer). */
bool pop3_auth_active(const struct pop3_session *s);
/* Wipes (sodium_memzero) and frees the SASL exchange state, if any. */
void pop3_auth_drop(struct pop3_session *s);
void pop3_cmd_user(struct pop3_session *s, const char *args);
void pop3_cmd_pass(struct pop3_session *s, const char *args);
void pop3_cmd_auth(struct pop3_session *s, const char *args);
/* A client's line while an AUTH exchange is active. */
void pop3_auth_sasl_line(struct pop3_session *s, const char *line, size_t len);
/* The failure delay is over: "-ERR [AUTH]", and the close after too many failures. */
void pop3_auth_failure_answer(struct pop3_session *s);
/* The login's snapshot is taken (or failed): the window, then the answer. */
void pop3_login_opened(struct pop3_session *s, enum pop3_md_open r);

#endif
