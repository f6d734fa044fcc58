/*
 * smtp_reply.h - what the outbound SMTP client reads from a remote server: reply lines (RFC 5321
 * 4.2), their enhanced status codes (RFC 3463) and the extensions an EHLO reply offers. Pure: no
 * I/O, no allocation; server/outbound/smtp_client.c feeds it the lines the connection read, and
 * tests/fuzz feeds it anything.
 */
#ifndef POSTERN_SMTP_REPLY_H
#define POSTERN_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/dsn.h"

/* The text kept of one reply, all its lines (joined by LF): enough for a log line and a bounce
 * (DSN_DIAGNOSTIC_MAX_BYTES cuts there anyway); a longer reply is cut, its code is kept. */
#define SMTP_REPLY_TEXT_MAX_BYTES 1024

enum smtp_reply_status {
    SMTP_REPLY_MORE = 0, /* a continuation line ("250-..."): more lines follow */
    SMTP_REPLY_DONE = 1, /* the last line ("250 ..." or "250"): the reply is complete */
    SMTP_REPLY_BAD = -1, /* not a reply line (RFC 5321 4.2: three digits, then SP, "-" or end) */
};

/*
 * One reply being read, possibly over several lines (RFC 5321 4.2.1). code is the first line's;
 * a continuation with another code is taken as part of the same reply (RFC 5321 4.2.1 says
 * the codes should be equal; a few servers differ, and the first line decides).
 */
struct smtp_reply {
    int code;                             /* 200..599; 0 before the first line */
    size_t lines;                         /* lines of this reply so far */
    size_t len;                           /* of text */
    char text[SMTP_REPLY_TEXT_MAX_BYTES]; /* the lines as received, joined by LF, NUL-ended */
};

void smtp_reply_reset(struct smtp_reply *r);
/*
 * Adds one line (without CRLF) to r, which the caller resets before the first line of every
 * reply. Returns SMTP_REPLY_MORE, SMTP_REPLY_DONE or SMTP_REPLY_BAD (r is unchanged then).
 */
int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);
/*
 * The enhanced status code of a reply (RFC 3463, RFC 2034): "x.y.z" right after the code on the
 * first line when its class (2, 4 or 5) matches the code's first digit, else "2.0.0" (2xx and
 * 3xx), "4.0.0" or "5.0.0" by the code. out has DSN_STATUS_BYTES.
 */
void smtp_reply_enhanced(int code, const char *text, char out[DSN_STATUS_BYTES]);

/* What a server's EHLO reply offers (only what the client uses). */
struct smtp_ehlo_caps {
    bool pipelining;         /* RFC 2920 */
    bool starttls;           /* RFC 3207 */
    bool eightbitmime;       /* RFC 6152 */
    bool size;               /* RFC 1870 */
    bool chunking;           /* RFC 3030: BDAT */
    bool auth_plain;         /* RFC 4954: AUTH, with PLAIN among its mechanisms */
    bool smtputf8;           /* RFC 6531 */
    bool dsn;                /* RFC 3461: RET, ENVID, NOTIFY and ORCPT are passed on */
    uint64_t size_max_bytes; /* SIZE's argument; 0 = no fixed limit given */
};

/*
 * One line of an EHLO reply after the code and separator ("PIPELINING", "SIZE 1000000"); the
 * caller skips the first line (the server's name). Keywords are case-insensitive (RFC 5321
 * 4.1.1.1); unknown ones and malformed SIZE arguments are ignored.
 */
void smtp_ehlo_parse_line(struct smtp_ehlo_caps *caps, const char *text, size_t len);

#endif
