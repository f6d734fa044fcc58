/*
 * smtp_client_internal.h - what the two halves of one outbound SMTP transaction share, and
 * nothing else includes: the client struct and its states, and the few calls each half makes
 * into the other. smtp_client.c owns the client (its start, its one connection's handler, the
 * reply state machine, the recipients' results, and the free in on_close); smtp_client_body.c
 * streams the body once the server waits for it: DATA's octets with dot-stuffing, or BDAT
 * chunks (RFC 3030), pumped under the connection's output backpressure, and the replies to the
 * chunks that are not the LAST one.
 */
#ifndef POSTERN_SMTP_CLIENT_INTERNAL_H
#define POSTERN_SMTP_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/dotstuff.h"
#include "common/pure/smtp_parse.h"
#include "server/outbound/smtp_client.h"
#include "server/outbound/smtp_client_facts.h"
#include "server/net/conn.h"
#include "storage/reader.h"
#include "storage/store.h"

enum client_state {
    ST_CONNECTING = 0,
    ST_GREETING,
    ST_EHLO,
    ST_HELO,
    ST_STARTTLS,
    ST_HANDSHAKE,
    ST_AUTH,
    ST_MAIL,
    ST_RCPT,
    ST_DATA,
    ST_BODY,      /* streaming the body: the end of data is not sent yet, so no reply may come */
    ST_DOT,       /* the end of data was sent: only its reply decides, and it must not be lost */
    ST_EMPTY_DOT, /* pipelined DATA got 354 with no recipient accepted: "." alone was sent */
    ST_QUIT,      /* done has run; waiting for 221 or the close */
};

struct smtp_client {
    struct conn *conn; /* borrowed from the set; NULL once closed */
    enum client_state state;
    bool reported;        /* done has run (or was cancelled): the caller's data is off limits */
    bool cancelled;       /* smtp_client_cancel: done never runs */
    bool stopping;        /* the server is stopping (on_shutdown): no waiting for the 221 */
    uint64_t dot_sent_ms; /* loop time the end of data was queued (ST_DOT) */

    /* copies of the parameters */
    char *remote_host;
    char *helo_name;
    char *sender;
    struct smtp_client_rcpt *rcpts; /* borrowed until reported */
    size_t n_rcpts;
    struct reader *reads; /* borrowed: the loop's */
    int64_t message_id;
    void (*done)(void *arg, const struct smtp_client_result *res);
    void *arg;

    /* what the body scan found */
    uint64_t size_bytes;  /* what is sent: the stored size less a Return-Path line */
    uint64_t strip_bytes; /* the Return-Path line's octets at the start, 0 if none */
    bool has_8bit;
    bool needs_smtputf8; /* a UTF-8 envelope, or UTF-8 headers received under SMTPUTF8 */
    int dsn_ret;         /* RET and ENVID as received (RFC 3461), sent on when DSN is offered */
    char dsn_envid[SMTP_DSN_ENVID_MAX_BYTES + 1];

    /* smarthost AUTH: the whole "AUTH PLAIN ...\r\n" line (owned, wiped on free), or NULL */
    char *auth_line;
    size_t auth_line_len;
    bool tls_heard; /* a reply arrived under TLS: the handshake surely succeeded */

    struct smtp_ehlo_caps caps;
    bool esmtp; /* EHLO was accepted */
    bool pipelined;
    bool bdat;                /* the body goes out in BDAT chunks (head comment) */
    size_t chunks_unanswered; /* BDAT chunks (not the LAST) whose reply is still to come */
    bool mail_failed;         /* MAIL was refused: the recipients are decided already */
    size_t rcpt_i;            /* the RCPT whose reply comes next */
    size_t accepted;          /* recipients with 250 at RCPT */
    bool *rcpt_ok;            /* owned: per recipient, accepted at RCPT */
    struct smtp_reply reply;

    /* the one read out at a time (storage/reader.h), smtp_client_body.c's */
    struct reader_job rj;
    enum { SC_READ_FACTS, SC_READ_OPEN, SC_READ_CHUNK } read_what;
    bool read_threaded;    /* on a reader thread: the body reader is rebound around each read */
    bool read_out;         /* rj is with the reader: what it uses stays allocated */
    bool free_after_read;  /* the connection closed meanwhile: the read's done frees */
    bool close_after_read; /* the body was given up meanwhile: the read's done closes it */
    struct smtp_client_facts facts;   /* SC_READ_FACTS' result */
    struct store_body_reader *opened; /* SC_READ_OPEN's result */
    size_t read_n;                    /* SC_READ_CHUNK's result */
    char read_error[256];             /* the store's words when a read failed */
    /* kept from smtp_client_start for the connection made after the facts */
    struct conn_set *conns;
    struct sockaddr_storage addr;
    struct tls_ctx *tls_ctx; /* borrowed (the runner's): not used once cancelled */

    /* body streaming */
    struct store_body_reader *reader;
    struct dotstuff ds;
    unsigned char in[SMTP_CLIENT_CHUNK_BYTES];
    size_t in_off, in_len;
    uint64_t skip_left; /* Return-Path octets still to skip */
    bool body_eof;
    bool body_open;     /* opened and conn_body_begin said: streaming until the end or a stop */
    int body_failed_rc; /* a chunk read that was out failed: the next pump gives up */
    unsigned char out[2 * SMTP_CLIENT_CHUNK_BYTES + 8];
};

/* ---- smtp_client.c, for smtp_client_body.c ----------------------------------------------- */

/* Runs done once (unless cancelled); after it the caller's data is off limits. */
void smtp_client_report(struct smtp_client *sc, struct smtp_client_result *res);
/* A host-level failure: undecided recipients stay PENDING, the connection goes. */
void smtp_client_host_failure(struct smtp_client *sc, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Recipients accepted at RCPT take the data's result. */
void smtp_client_decide_accepted(struct smtp_client *sc, enum smtp_rcpt_status st, int code,
                                 const char *text);
/* Every recipient is decided: report, then QUIT. */
void smtp_client_finish(struct smtp_client *sc);

/* ---- smtp_client_body.c, for smtp_client.c ----------------------------------------------- */

/* The server waits for the body (354, or the RCPT replies before BDAT): open it and start. */
void smtp_client_start_body(struct smtp_client *sc);
/* More of the body, until the output is over CONN_OUTPUT_HIGH_BYTES or the end is sent. */
void smtp_client_pump_body(struct smtp_client *sc);
/* A reply to a BDAT chunk that was not the LAST one. */
void smtp_client_on_chunk_reply(struct smtp_client *sc, int code, const char *text);
/* Submits sc->rj for read_what: READER_DONE with *status_out, or READER_PENDING (read_out set;
 * smtp_client_read_back is called from its done). */
int smtp_client_read(struct smtp_client *sc, int *status_out);
/* Closes the body reader now, or after the chunk read that uses it is back. */
void smtp_client_body_close(struct smtp_client *sc);

/* ---- smtp_client.c, for smtp_client_body.c's reads ---------------------------------------- */

/* The facts read is over (status): connect, or report the store's failure. */
void smtp_client_facts_back(struct smtp_client *sc, int status);
/* The client is finished with (closed, or never connected): free it. */
void smtp_client_free(struct smtp_client *sc);

#endif
