/*
 * smtp_parse.h - the pure pieces of the SMTP server session: the arguments of MAIL and RCPT
 * (RFC 5321 4.1.1.2, 4.1.1.3, 4.1.2) with their ESMTP parameters (SIZE of RFC 1870, BODY of RFC
 * 6152, AUTH of RFC 4954 5, SMTPUTF8 of RFC 6531 3.4, DSN's RET, ENVID, NOTIFY and ORCPT of RFC
 * 3461 4.1-4.4), xtext (RFC 3461 4), and the trace headers the session puts in
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

/* RFC 3461 4.4: ENVID is at most 100 characters; 4.2: ORCPT at most 500. Both are kept as the
 * client sent them (xtext), so that they can be passed on verbatim. */
#define SMTP_DSN_ENVID_MAX_BYTES 100
#define SMTP_DSN_ORCPT_MAX_BYTES 500

/* RET (RFC 3461 4.3): what a failure notice returns of the message. */
enum smtp_dsn_ret {
    SMTP_DSN_RET_NONE = 0, /* not given: headers only, as postern always did */
    SMTP_DSN_RET_FULL = 1,
    SMTP_DSN_RET_HDRS = 2,
};

/* NOTIFY (RFC 3461 4.1) as bits; 0 when the parameter was not given. NEVER is never combined. */
#define SMTP_NOTIFY_SUCCESS 1u
#define SMTP_NOTIFY_FAILURE 2u
#define SMTP_NOTIFY_DELAY   4u
#define SMTP_NOTIFY_NEVER   8u

/* The ESMTP parameters of MAIL FROM that postern offers. */
struct smtp_mail_params {
    bool has_size;
    uint64_t size_bytes;   /* SIZE=n (RFC 1870): the client's estimate */
    bool body_8bit;        /* BODY=8BITMIME (RFC 6152); BODY=7BIT leaves it false */
    bool has_auth;         /* AUTH=... (RFC 4954 5): accepted and ignored (we trust no one's) */
    bool smtputf8;         /* SMTPUTF8 (RFC 6531 3.4): UTF-8 addresses and headers may follow */
    enum smtp_dsn_ret ret; /* RET=FULL|HDRS */
    char envid[SMTP_DSN_ENVID_MAX_BYTES + 1]; /* ENVID=xtext as sent; "" when not given */
};

/* The ESMTP parameters of RCPT TO that postern offers (DSN, RFC 3461 4.1, 4.2). */
struct smtp_rcpt_params {
    unsigned notify;                          /* SMTP_NOTIFY_* bits; 0: not given */
    char orcpt[SMTP_DSN_ORCPT_MAX_BYTES + 1]; /* ORCPT=addr-type;xtext as sent; "" if none */
};

/*
 * Parses "KEY=VALUE KEY ..." (RFC 5321 4.1.2 Mail-parameters; keywords any case, each at most
 * once). SIZE, BODY, SMTPUTF8, AUTH, RET and ENVID are known; anything else is
 * SMTP_PARSE_UNKNOWN_PARAM, a malformed or repeated parameter SMTP_PARSE_BAD_PARAM. *why_out (may
 * be NULL) names the problem. A malformed parameter is reported before an unknown one that
 * follows it, and the first problem wins.
 */
int smtp_parse_mail_params(const char *params, struct smtp_mail_params *out, const char **why_out);
/*
 * The parameters of RCPT TO: NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE and DELAY (any
 * order, each once); ORCPT=addr-type;xtext (addr-type an atom such as rfc822 or RFC 6533's
 * utf-8). "" is OK; anything else as for smtp_parse_mail_params.
 */
int smtp_parse_rcpt_params(const char *params, struct smtp_rcpt_params *out, const char **why_out);

/* Whether s[0..len) is xtext (RFC 3461 4): octets 33-126 except '+' and '=', and "+HH" with two
 * upper-case hex digits. The empty string is xtext. */
bool smtp_xtext_is_valid(const char *s, size_t len);
/*
 * Decodes xtext s into out (outlen > 0, NUL-terminated, cut to fit). Returns the decoded length,
 * or -1 when s is not xtext (out is "" then). Decoded octets may be anything, NUL included: the
 * caller decides what it can show.
 */
int smtp_xtext_decode(const char *s, char *out, size_t outlen);

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
