/*
 * smtp_session.h - the SMTP server session (RFC 5321) as a connection handler.
 *
 * One handler serves the relay/MX port, submission (RFC 6409: AUTH before MAIL) and submissions
 * (RFC 8314: implicit TLS); the session asks conn_service() which one a connection came in on.
 * The implementation is split over smtp_session.c (state machine, dispatcher, EHLO, AUTH,
 * STARTTLS and the simple commands) and smtp_tx.c (MAIL, RCPT, DATA, delivery), with the pure
 * helpers in smtp_parse.c.
 */
#ifndef POSTERN_SMTP_SESSION_H
#define POSTERN_SMTP_SESSION_H

#include "server/net/conn.h"

/* Error replies (4xx/5xx, relay refusals included) after which the session says 421 and closes:
 * a client that keeps being refused is probing, not sending mail. */
#define SMTP_MAX_ERRORS 10

extern const struct conn_handler smtp_session_handler;

#endif
