/*
 * smtp_parse.h - the pure pieces of the SMTP server session: the arguments of MAIL and RCPT
 * (RFC 5321 4.1.1.2, 4.1.1.3, 4.1.2) with their ESMTP parameters (SIZE of RFC 1870, BODY of RFC
 * 6152, AUTH of RFC 4954 5, SMTPUTF8 of RFC 6531 3.4), and the trace headers the session puts in
 * front of a message (Received of RFC 5321 4.4 with the RFC 3848 "with" types, Return-Path of RFC
 * 5321 4.4).
 *
 * No I/O, no allocation, no clock (the time is an argument), no logging: the session
 * (server/smtp/smtp_session.c) turns the results into replies. Addresses themselves are parsed by
 * common/pure/address.c; this module only finds where the path starts and what follows it.
 */
#ifndef POSTERN_SMTP_PARSE_H
#define POSTERN_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/pure/address.h"

/* Results of the parsers below (0 is success), in their own range (common/error.h). */
enum smtp_parse_status {
    SMTP_PARSE_OK = 0,
    /* no "FROM:" / "TO:", or no "<" path: 501 5.5.4 */
    SMTP_PARSE_SYNTAX = POSTERN_ERR_SMTP_PARSE_BASE - 1,
    /* the path does not parse: 501 5.1.7 / 5.1.3 */
    SMTP_PARSE_BAD_ADDRESS = POSTERN_ERR_SMTP_PARSE_BASE - 2,
    /* a parameter's syntax or value is wrong: 501 5.5.4 */
    SMTP_PARSE_BAD_PARAM = POSTERN_ERR_SMTP_PARSE_BASE - 3,
    /* a parameter we do not offer: 555 5.5.4 (RFC 5321 4.1.1.11) */
    SMTP_PARSE_UNKNOWN_PARAM = POSTERN_ERR_SMTP_PARSE_BASE - 4,
};

/* A short static name for an SMTP_PARSE_* code ("smtp argument: syntax error"). */
const char *smtp_parse_strerror(int code);

/* Room for a Received header plus Return-Path: fits smtp_data's reserve. */
#define SMTP_TRACE_MAX_BYTES 2048

/*
 * Parses the argument of MAIL ("FROM:<path> params") or RCPT ("TO:<path> params"): keyword is
 * "FROM:" or "TO:" (matched case-insensitively). Spaces between the colon and "<" are accepted,
 * although RFC 5321 has none: many clients send "MAIL FROM: <a@b>", and Postfix and sendmail take
 * it. *params_out points at what follows the path (spaces skipped; "" when nothing does); the
 * text after '>' must be empty or start with a space. The path is parsed with UTF-8 allowed
 * (ADDRESS_ALLOW_UTF8): SMTPUTF8 comes after the path in MAIL, so the session checks
 * addr_out->is_utf8 against the transaction's SMTPUTF8 itself (553 5.6.7, RFC 6531 3.7.4.1).
 * Returns an smtp_parse_status; *why_out (may be NULL) gets a short reason for BAD_ADDRESS.
 */
int smtp_parse_path_arg(const char *args, const char *keyword, struct address *addr_out,
                        enum address_path_kind *kind_out, const char **params_out,
                        const char **why_out);

/* The ESMTP parameters of MAIL FROM that postern offers. */
struct smtp_mail_params {
    bool has_size;
    uint64_t size_bytes; /* SIZE=n (RFC 1870): the client's estimate */
    bool body_8bit;      /* BODY=8BITMIME (RFC 6152); BODY=7BIT leaves it false */
    bool has_auth;       /* AUTH=... (RFC 4954 5): accepted and ignored (we trust no one's) */
    bool smtputf8;       /* SMTPUTF8 (RFC 6531 3.4): UTF-8 addresses and headers may follow */
};

/*
 * Parses "KEY=VALUE KEY ..." (RFC 5321 4.1.2 Mail-parameters; keywords any case, each at most
 * once). SIZE, BODY, SMTPUTF8 and AUTH are known; anything else is SMTP_PARSE_UNKNOWN_PARAM, a
 * malformed or repeated parameter SMTP_PARSE_BAD_PARAM. *why_out (may be NULL) names the problem.
 */
int smtp_parse_mail_params(const char *params, struct smtp_mail_params *out, const char **why_out);
/* RCPT TO takes no parameters here (DSN's NOTIFY/ORCPT are not offered): "" is OK, a
 * well-formed parameter is UNKNOWN_PARAM, anything else BAD_PARAM. */
int smtp_parse_rcpt_params(const char *params, const char **why_out);

/*
 * The HELO/EHLO argument made safe for a header: at most ADDRESS_DOMAIN_MAX_BYTES octets of
 * letters, digits and ".-_:[]"; every other octet (spaces, parentheses, control characters, 8-bit
 * octets) becomes '?'. outlen must be at least 2. Returns out.
 */
char *smtp_helo_sanitize(const char *in, char *out, size_t outlen);

/* RFC 3848 with-type: SMTP (HELO), ESMTP, ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA (both). A session
 * that said HELO has no AUTH or STARTTLS (both are EHLO extensions), so HELO is always SMTP. */
const char *smtp_with_type(bool esmtp, bool tls, bool auth);

/* What goes into the Received header; every string is borrowed. */
struct smtp_received {
    const char *helo;     /* the client's HELO/EHLO argument as sent (sanitised here) */
    const char *peer_ip;  /* "192.0.2.1" or "2001:db8::1" */
    const char *hostname; /* server.hostname */
    const char *with;     /* smtp_with_type() */
    const char *id;       /* the message's queue id */
    const char *tls;      /* conn_tls_describe() text, or NULL without TLS */
    const char *identity; /* "authenticated as alice@example.test" and the like, or NULL */
    int64_t time_ms;
};

/*
 * Writes the trace headers: "Return-Path: <sender>" when return_path is not NULL (the sender as
 * formatted by address_format, "" for the null path), then the Received header, folded:
 *   Received: from HELO ([IP])
 *   \tby HOSTNAME (postern) with ESMTPSA id ID
 *   \t(TLSv1.3 TLS_AES_256_GCM_SHA384)
 *   \t(authenticated as alice@example.test);
 *   \tTue, 01 Jan 2024 00:00:00 +0000
 * IPv6 peers appear as [IPv6:...]. Comment texts are made safe (no parentheses, backslashes or
 * non-printable octets). Returns the length written (without the NUL), or -1 when len is too
 * small (SMTP_TRACE_MAX_BYTES always suffices).
 */
int smtp_trace_headers(const struct smtp_received *r, const char *return_path, char *buf,
                       size_t len);

#endif
