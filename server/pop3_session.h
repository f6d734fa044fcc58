/*
 * pop3_session.h - the POP3 server session (RFC 1939, RFC 2449, RFC 2595) as a connection
 * handler, for the pop3 and pop3s services.
 */
#ifndef POSTERN_POP3_SESSION_H
#define POSTERN_POP3_SESSION_H

#include "server/conn.h"

/* Error replies after which the session says -ERR and closes. */
#define POP3_MAX_ERRORS 10

extern const struct conn_handler pop3_session_handler;

#endif
