/*
 * milter.h - the milters of one SMTP session: one connection per configured milter, opened when
 * the session starts (as Postfix does), each step of the session (connect, HELO, MAIL, RCPT, end
 * of message with its headers and body) sent to the milters in the order of the list, and their
 * verdict handed back through a callback on the loop thread. Nothing here blocks the loop.
 *
 * Who does what: server/smtp/ owns the session and decides what a verdict means for the client;
 * this module owns the sockets, the timer and the modifications a milter asked for at end of
 * message (a list the transaction applies before it stores the message). The wire format is
 * common/pure/milter.c's. When a milter is down, slow or breaks the protocol, [milter]
 * default_action decides: tempfail (the step answers 4xx) or accept (the milter is left out for
 * the rest of the session); the outage is logged once, and its end once.
 */
#ifndef POSTERN_SERVER_MILTER_H
#define POSTERN_SERVER_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/config.h"
#include "common/pure/milter.h"

enum milter_verdict_kind {
    MILTER_V_CONTINUE = 0, /* go on (every milter said continue or accept) */
    MILTER_V_REJECT,       /* 5xx: reply holds the text */
    MILTER_V_TEMPFAIL,     /* 4xx: reply holds the text */
    MILTER_V_DISCARD,      /* say 250, store nothing */
};

/* An SMTP reply line without CRLF: what a verdict answers the client with. */
#define MILTER_REPLY_MAX_BYTES 510

struct milter_verdict {
    enum milter_verdict_kind kind;
    char reply[MILTER_REPLY_MAX_BYTES]; /* REJECT and TEMPFAIL: the full reply line */
};

/* One modification a milter asked for at end of message: a copy of its reply's fields. */
struct milter_mod {
    enum milter_reply_kind kind;
    uint32_t index;
    char *name;          /* owned; header name, or NULL */
    char *value;         /* owned; header value, address, quarantine reason, or NULL */
    unsigned char *body; /* owned; REPLBODY chunk */
    size_t body_len;
};

/* What end of message reads: the message as stored so far (spool file, then memory). */
struct milter_message {
    int spool_fd;             /* -1 when nothing was spilled */
    uint64_t spool_len;       /* octets in the spool file, from offset 0 */
    const unsigned char *mem; /* the rest, in memory (borrowed) */
    size_t mem_len;
};

/* What the connect step and the macros tell a milter about the client. */
struct milter_client_info {
    const char *hostname;  /* server.hostname ("j") */
    const char *daemon;    /* "{daemon_name}": the service, "smtp" or "submission" */
    const char *peer_ip;   /* "{client_addr}" */
    const char *peer_name; /* "{client_name}": "[ip]" without a reverse lookup */
    uint16_t peer_port;
    bool ipv6;
};

struct milter_session;
typedef void (*milter_done_fn)(void *ctx, const struct milter_verdict *v);

/* NULL when the service has no milters (or out of memory: then also NULL, logged). sid for the
 * log. The loop and cfg are borrowed and outlive the session. */
struct milter_session *milter_session_new(uv_loop_t *loop, const struct cfg *cfg, bool submission,
                                          uint64_t sid);
/* Closes the connections (QUIT first when idle); a step in flight never calls its done. */
void milter_session_free(struct milter_session **msp);

/*
 * The steps. Each returns at once; done runs once, later or before the call returns, with the
 * verdict. Macros sent with each step come from the strings given; NULL leaves one out. args of
 * MAIL and RCPT: the address in angle brackets, then the ESMTP parameters.
 */
void milter_step_connect(struct milter_session *ms, const struct milter_client_info *ci,
                         milter_done_fn done, void *ctx);
void milter_step_helo(struct milter_session *ms, const char *helo, const char *tls_version,
                      const char *auth_user, milter_done_fn done, void *ctx);
void milter_step_mail(struct milter_session *ms, const char *const *args, size_t n,
                      milter_done_fn done, void *ctx);
void milter_step_rcpt(struct milter_session *ms, const char *const *args, size_t n,
                      milter_done_fn done, void *ctx);
/* DATA, the headers, end of headers, the body in chunks and end of message. The message must
 * stay as it is until done has run. queue_id is the "i" macro. */
void milter_step_message(struct milter_session *ms, const struct milter_message *msg,
                         const char *queue_id, milter_done_fn done, void *ctx);
/* The transaction ended without a message (RSET, a refusal): ABORT to those in one. */
void milter_abort(struct milter_session *ms);

/* The modifications of the last end of message, in the order they came; cleared by
 * milter_abort and by the next message. */
const struct milter_mod *milter_mods(const struct milter_session *ms, size_t *n);

/*
 * The message of the last end of message with the milters' header changes and new body
 * applied (milter_edit.c): 1 and a new buffer the caller owns in *out, 0 when no milter changed
 * the content (nothing in *out), -1 when out of memory or the message could not be read.
 */
int milter_message_edit(struct milter_session *ms, unsigned char **out, size_t *out_len);

#endif
