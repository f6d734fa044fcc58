/*
 * smtp_client.h - one outbound SMTP transaction on one connection: the client side of RFC 5321
 * for the queue runner, on the shared connection layer (server/net/conn.h, CONN_SERVICE_OUTBOUND).
 *
 * What it does: connects to one address, reads the greeting, says EHLO (HELO when EHLO is
 * refused with 5xx), switches to TLS when the server offers STARTTLS (opportunistic, RFC 7435:
 * the certificate is not verified), sends MAIL FROM with SIZE= (RFC 1870) and BODY=8BITMIME
 * (RFC 6152) when offered, the RCPTs and DATA (all in one go when PIPELINING is offered, RFC
 * 2920), streams the stored body dot-stuffed (common/pure/dotstuff.h) with backpressure, and
 * reports one result per recipient: sent (250 to the end of data), deferred (4xx) or bounced (5xx).
 *
 * Smarthost AUTH (params.creds set): STARTTLS becomes required. Without STARTTLS in the EHLO
 * reply, with STARTTLS refused or a failed handshake, the credentials are never sent and the
 * attempt is a host failure ("smarthost requires TLS for AUTH: ..."; a failed handshake is not
 * flagged tls_failed, so the runner does not retry in the clear). After TLS and the second EHLO,
 * AUTH PLAIN must be offered (RFC 4954 4); "AUTH PLAIN <initial response>" is sent and 235 is
 * expected. Any other reply defers every recipient with that reply (a 535 included: a wrong
 * password is our configuration's fault, and must not bounce every sender's mail).
 *
 * What it does not do: choose the address (the runner resolves MX hosts and walks them), retry,
 * touch the queue, verify certificates (so AUTH over TLS protects the password from passive
 * eavesdroppers only, as every opportunistic-TLS MTA's default does), or AUTH mechanisms other
 * than PLAIN.
 *
 * DSN (RFC 3461): to a server that offers it, MAIL carries the RET and ENVID and each RCPT the
 * NOTIFY and ORCPT the message came with, as they came; each recipient says whether they went
 * (dsn_passed), so that the runner can send a "relayed" notice where they did not.
 *
 * SMTPUTF8 (RFC 6531): a message whose envelope has a UTF-8 local part, or whose UTF-8 headers
 * came in under SMTPUTF8 (smtp_client_facts.h), is sent with MAIL FROM:<...> SMTPUTF8 to a server
 * that offers it; to one that does not, every recipient is bounced with 5.6.7 "non-ASCII
 * addresses not permitted for that recipient" (RFC 6531 3.7.5) and nothing is sent.
 *
 * Result timing: done runs once, as soon as the outcome is known, and in particular right after
 * the 250 to the end of data, before QUIT: the queue must record a delivery promptly (queue.h,
 * "at most twice"). The client then says QUIT and closes on its own and frees itself; the caller
 * must forget the handle when done runs.
 *
 * A host-level failure (no connection, a greeting other than 220, 421 at any point, a malformed
 * reply, a lost connection or a timeout before the end of data was sent, a failed TLS handshake,
 * any reply while the body is still being sent) is reported with host_failed: nothing is decided
 * for the recipients still open (their status stays SMTP_RCPT_PENDING) and the runner tries the
 * next address. Recipients refused at RCPT keep their result.
 *
 * The end of data. Only the reply to the final "." (sent after the whole body) decides the
 * accepted recipients; 250 there is the one thing that makes them SMTP_RCPT_SENT. A reply that
 * arrives while the body is still streaming (RFC 5321 4.1.1.4: the server replies after the end
 * of data, never before) is a protocol violation, whatever its code: a 2xx cannot mean delivery
 * of a message whose end the server never saw, and a 4xx/5xx we cannot trust must not bounce
 * the sender's mail. It is a host failure, and the connection is cut before the end of data,
 * so the server has nothing to deliver. Once the end of data is sent, the outcome is the
 * server's: a timeout, a malformed reply or a lost connection then defers the accepted
 * recipients with status 4.4.2 and a text saying the message may have been delivered (RFC
 * 1047), never hands them to the next address (that would be a second copy within one
 * attempt). Such a client must not be cancelled (smtp_client_awaits_dot_reply), and at a
 * graceful stop its connection stays open (conn_keep_at_shutdown) until the reply comes or
 * SMTP_CLIENT_SHUTDOWN_DOT_WAIT_MS pass, whichever is first.
 *
 * 8-bit bodies: BODY=8BITMIME is declared when the body has an octet above 127 and the server
 * offers 8BITMIME. When it does not offer it, the body is sent as it is anyway (what Postfix does
 * by default; downgrading to quoted-printable would change the signed bytes, and bouncing would
 * punish the sender for the receiver's age).
 *
 * A body that cannot be read from the store once DATA was accepted defers the accepted
 * recipients with a text naming the store, and is not a host failure either.
 *
 * Return-Path: a first line of the stored body that starts with "Return-Path:" (added by a final
 * delivery, RFC 5321 4.4) is not sent: a relay must not add one.
 *
 * Timeouts (RFC 5321 4.5.3.2): 5 min for the greeting, EHLO, MAIL, RCPT; 2 min for the DATA
 * command; 3 min per data block; 10 min for the reply to the final dot. The runner adds a hard
 * deadline over the whole attempt (queue_runner.h), which does not cut the wait for the reply to
 * the final dot short.
 *
 * Reads (storage/reader.h): the body's facts, its opening and each chunk are jobs on the loop's
 * reader. Inline (SQLite) they finish inside the call, as plain reads did; with reader threads
 * the client waits for each (connecting after the facts, writing after each chunk), and a
 * store failure found after smtp_client_start returned comes through done (store_rc).
 *
 * Threading: loop thread only.
 */
#ifndef POSTERN_SMTP_CLIENT_H
#define POSTERN_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/pure/dsn.h"
#include "common/pure/smtp_reply.h"

struct conn_set;
struct reader;
struct tls_ctx;

/* RFC 5321 4.5.3.2. */
#define SMTP_CLIENT_INITIAL_TIMEOUT_MS    (5 * 60 * 1000)
#define SMTP_CLIENT_COMMAND_TIMEOUT_MS    (5 * 60 * 1000)
#define SMTP_CLIENT_DATA_INIT_TIMEOUT_MS  (2 * 60 * 1000)
#define SMTP_CLIENT_DATA_BLOCK_TIMEOUT_MS (3 * 60 * 1000)
#define SMTP_CLIENT_FINAL_DOT_TIMEOUT_MS  (10 * 60 * 1000)
/*
 * At a graceful stop (SIGTERM), how long the reply to an end of data already sent is still
 * awaited (at most; the final-dot timeout still applies). Long enough for a server that scans
 * the message before it answers, and below the 90 s a service manager such as systemd gives a
 * service to stop before it kills it (DefaultTimeoutStopSec): a kill would lose the reply.
 */
#define SMTP_CLIENT_SHUTDOWN_DOT_WAIT_MS (60 * 1000)
/* Body octets read from the store per read. */
#define SMTP_CLIENT_CHUNK_BYTES (16 * 1024)
/* How long the body reader may keep its blob open between reads (storage/queue.h). */
#define SMTP_CLIENT_BODY_HOLD_MS 1000

/* ---- smarthost credentials (smtp_client_creds.c) ---- */

/* "AUTH PLAIN " and the base64 of NUL user NUL password (RFC 4616 2), with CRLF and NUL. */
#define SMTP_CLIENT_AUTH_LINE_MAX_BYTES                                                            \
    (16 + 4 * ((2 + SASL_USER_MAX_BYTES + PASSWORD_MAX_BYTES + 2) / 3))

/*
 * Credentials for AUTH PLAIN at the smarthost: one owner (serve.c), read once at start (before
 * the privilege drop, so the file may be readable by root only; a SIGHUP does not re-read it).
 * The secret lives only here and in each client's copy of its AUTH line; both are wiped with
 * sodium_memzero when freed.
 */
struct smtp_client_creds;

/*
 * Reads the password file's first line (LF or CRLF ended, or the whole file without one). user
 * is the authentication identity (copied). 0 and *out, or -1 with one line naming the file in
 * err: it cannot be opened or read, its first line is empty or longer than
 * PASSWORD_MAX_BYTES, or holds NUL; or memory.
 */
int smtp_client_creds_load(const char *user, const char *password_file,
                           struct smtp_client_creds **out, char *err, size_t errlen);
/* Wipes and frees; *c is set to NULL. NULL is a no-op. */
void smtp_client_creds_free(struct smtp_client_creds **c);
/*
 * The line "AUTH PLAIN <base64 of NUL user NUL password>\r\n" (RFC 4954 4 initial response,
 * RFC 4616 2 message with an empty authzid) into out (outlen >= SMTP_CLIENT_AUTH_LINE_MAX_BYTES is
 * always enough). Returns its length, or -1 when it does not fit (out is wiped then).
 */
int smtp_client_auth_line(const char *user, const char *password, size_t password_len, char *out,
                          size_t outlen);
/* smtp_client_auth_line for loaded credentials. */
int smtp_client_creds_auth_line(const struct smtp_client_creds *c, char *out, size_t outlen);

/* ---- one transaction ---- */

enum smtp_rcpt_status {
    SMTP_RCPT_PENDING = 0, /* not decided at this host (host-level failure): try elsewhere */
    SMTP_RCPT_SENT,        /* the server took it: 250 to the end of data */
    SMTP_RCPT_DEFER,       /* 4xx at RCPT or for the data: retry later */
    SMTP_RCPT_BOUNCE,      /* 5xx at MAIL, RCPT or for the data: permanent */
};

struct smtp_client_rcpt {
    const char *address;                   /* borrowed: "local@domain" */
    enum smtp_rcpt_status status;          /* set by the client */
    int code;                              /* the deciding reply's code; 0 for our own text */
    char reply[SMTP_REPLY_TEXT_MAX_BYTES]; /* that reply, or our own text */
    char dsn[DSN_STATUS_BYTES];            /* with our own text (code 0): its status; else "" */
    unsigned notify;   /* DSN NOTIFY bits as received (0: none), passed on when DSN is offered */
    const char *orcpt; /* borrowed: DSN ORCPT as received, or NULL / "" */
    bool dsn_passed;   /* set by the client: the server offered DSN, the parameters went on */
};

struct smtp_client_result {
    bool host_failed; /* see the head comment; the recipients still PENDING were not decided */
    bool tls_failed;  /* TLS failed (handshake or a TLS error): retry this host without it */
    bool used_tls;
    int code;                              /* host_failed: the reply that failed, or 0 */
    char error[SMTP_REPLY_TEXT_MAX_BYTES]; /* host_failed: the reply, or our own text */
    /* A STORE_* code: the facts read that smtp_client_start began failed later (reader
     * threads). No host was tried, every recipient is still PENDING, and error holds the
     * store's words. 0 otherwise. */
    int store_rc;
};

struct smtp_client_params {
    struct conn_set *conns;      /* borrowed */
    const struct sockaddr *addr; /* copied */
    const char *remote_host;     /* for SNI (unless an IP address) and errors (copied) */
    struct tls_ctx *tls_ctx;     /* client context for STARTTLS; NULL: never STARTTLS */
    /* borrowed, only during smtp_client_start; NULL: no AUTH. Set: TLS and AUTH are required */
    const struct smtp_client_creds *creds;
    const char *helo_name;          /* our hostname for EHLO (copied) */
    const char *sender;             /* "" for the null sender (copied) */
    struct smtp_client_rcpt *rcpts; /* borrowed until done runs; statuses are written there */
    size_t n_rcpts;                 /* at least 1 */
    struct reader *reads;           /* borrowed: the loop's, for the body and its facts */
    int64_t message_id;
    /* Where the store's words go when smtp_client_start returns a STORE_* code; may be NULL. */
    char *store_error;
    size_t store_error_len;
    void (*done)(void *arg, const struct smtp_client_result *res);
    void *arg;
};

struct smtp_client;

/*
 * Starts the transaction: looks up the body's size, 8-bit octets and Return-Path line (recorded at
 * acceptance) and connects. 0 and *out, then done runs exactly once, later, unless
 * smtp_client_cancel is called first. Or a negative code, then done never runs and *out is NULL;
 * the code tells whose failure it was (common/error.h): a STORE_* code when the body could not be
 * read (STORE_NOT_FOUND: it left the queue; p->store_error has the detail), which says nothing
 * about the host, or an errno or libuv code when memory ran out or the connection could not be
 * started. With reader threads the facts come later: 0 is returned at once, and a store failure
 * then comes through done with store_rc set.
 */
int smtp_client_start(const struct smtp_client_params *p, struct smtp_client **out);
/*
 * True when the end of data was sent and its reply has not come: the server may hold the
 * message now, so the transaction must be let finish (done runs with the reply, or with a
 * deferral when none comes in time; see "The end of data" above), not cancelled.
 */
bool smtp_client_awaits_dot_reply(const struct smtp_client *c);
/*
 * Abandons a transaction whose done has not run: the connection is aborted, done never runs, and
 * *c is set to NULL. Only for a client that is not smtp_client_awaits_dot_reply: then no end of
 * data was sent, so nothing was delivered by it.
 */
void smtp_client_cancel(struct smtp_client **c);

#endif
