/*
 * smtp_session.h - the SMTP server session (RFC 5321) as a connection handler.
 *
 * One handler serves the relay/MX port, submission (RFC 6409: AUTH before MAIL) and submissions
 * (RFC 8314: implicit TLS); the session asks conn_service() which one a connection came in on.
 * The implementation is split over smtp_session.c (the session, its state machine and lifetime,
 * the dispatcher and error limits, EHLO, STARTTLS and the simple commands), smtp_auth.c (AUTH),
 * the two sharing smtp_internal.h, and smtp_tx.c (the transaction behind MAIL, RCPT and DATA,
 * and delivery), which the session calls through smtp_tx.h; the pure helpers are in
 * common/pure/smtp_parse.c and common/pure/command.c.
 */
#ifndef POSTERN_SMTP_SESSION_H
#define POSTERN_SMTP_SESSION_H

#include "server/net/conn.h"

/* Failed AUTH attempts per connection before 421 and close (auth.c also blocks per client). */
#define SMTP_MAX_AUTH_FAILURES 3

extern const struct conn_handler smtp_session_handler;

#endif
