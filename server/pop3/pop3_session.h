/*
 * pop3_session.h - the POP3 server session (RFC 1939, RFC 2449, RFC 2595) as a connection
 * handler, for the pop3 and pop3s services.
 *
 * The commands of RFC 1939 (USER, PASS, QUIT, STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL),
 * CAPA with RESP-CODES and AUTH-RESP-CODE (RFC 2449, RFC 3206), STLS (RFC 2595) and AUTH PLAIN /
 * LOGIN (RFC 5034). APOP is not offered: it needs a plaintext-equivalent secret on the server,
 * and postern keeps only argon2id hashes. A successful login opens the POP-before-SMTP relay
 * window for the client's address (relay.window). The implementation is split over
 * pop3_session.c (the session, its lifetime, the dispatcher) and pop3_auth.c (login), which call
 * pop3_maildrop.c (the lock, the snapshot, TRANSACTION, UPDATE) and pop3_window.c (the relay
 * window's writer jobs), with the pure helpers in common/pure/pop3_parse.c and
 * common/pure/command.c.
 */
#ifndef POSTERN_POP3_SESSION_H
#define POSTERN_POP3_SESSION_H

#include "server/net/conn.h"

/* Error replies after which the session says -ERR and closes. */
#define POP3_MAX_ERRORS 10
/* Failed logins (USER/PASS or AUTH) after which the connection is closed; auth.c's growing delay
 * and per-client limit do the rest across connections. */
#define POP3_MAX_AUTH_FAILURES 3

extern const struct conn_handler pop3_session_handler;

#endif
