/*
 * smtp_session.h - the SMTP server session (RFC 5321) as a connection handler.
 *
 * One handler serves the relay/MX port, submission and submissions; the session asks
 * conn_service() which one a connection came in on.
 */
#ifndef POSTERN_SMTP_SESSION_H
#define POSTERN_SMTP_SESSION_H

#include "server/conn.h"

/* Consecutive-or-not error replies after which the session says 421 and closes. */
#define SMTP_MAX_ERRORS 10

extern const struct conn_handler smtp_session_handler;

#endif
