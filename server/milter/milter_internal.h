/*
 * milter_internal.h - what the files of server/milter/ share and nothing else includes: the
 * session and connection structs, milter.c's step runner and reply handling, milter_conn.c's
 * sockets and timer, milter_items.c's messages of each step. milter.h is the contract for
 * everyone else.
 */
#ifndef POSTERN_MILTER_INTERNAL_H
#define POSTERN_MILTER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "server/milter/milter.h"

/* The header section read at end of message: a larger one fails the step (default_action). */
#define MILTER_HEADERS_MAX_BYTES (1024 * 1024)

enum milter_conn_state {
    MILTER_IDLE = 0,    /* not connected yet: the first step that needs it connects */
    MILTER_CONNECTING,  /* uv connect in flight */
    MILTER_NEGOTIATING, /* OPTNEG sent, its answer awaited */
    MILTER_READY,       /* negotiated */
    MILTER_DEAD,        /* failed: left out for the rest of the session */
};

struct milter_conn {
    struct milter_session *ms; /* the owner */
    struct milter_spec spec;
    char name[MILTER_PATH_MAX + 264]; /* "inet:127.0.0.1:11332" or "unix:/path", for the log */
    enum milter_conn_state state;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    bool handle_open; /* u was initialised and is not closing */
    uv_connect_t connect_req;
    uint8_t *rbuf; /* owned: received, not yet framed */
    size_t rlen, rcap;
    uint32_t actions, protocol; /* negotiated */
    bool accepted_session;      /* ACCEPT at connect or HELO: no more steps this session */
    bool accepted_message;      /* ACCEPT from MAIL on: no more steps this transaction */
    bool in_message;            /* between MAIL and end of message: ABORT means something */
};

/* One header of the message, as offsets into the session's header copy. */
struct milter_hdr {
    size_t name_off, name_len, value_off, value_len;
};

struct milter_session {
    uv_loop_t *loop;       /* borrowed */
    const struct cfg *cfg; /* borrowed */
    uint64_t sid;
    struct milter_conn m[MILTER_LIST_MAX];
    size_t n;
    uv_timer_t timer;
    bool timer_open;
    unsigned pending_closes; /* handles still closing; the memory goes when this reaches 0 */
    bool freeing;            /* milter_session_free ran */
    /* The step in progress. */
    enum milter_step step;
    size_t cur, pos; /* the milter being served, and its next message */
    bool busy;
    struct milter_conn *waiting; /* whose answer is awaited, or NULL */
    enum milter_step waiting_step;
    milter_done_fn done;
    void *done_ctx;
    struct milter_verdict verdict;
    bool tempfail; /* a milter failed and default_action is tempfail */
    /* What the steps send (copies: a step may wait for a connect first). */
    char hostname[256], daemon[16], peer_ip[64], peer_name[80];
    uint16_t peer_port;
    bool ipv6;
    char helo[256], tls_version[32], auth_user[256], queue_id[64];
    char mail_addr[320], rcpt_addr[320];
    const char *const *args; /* MAIL, RCPT: borrowed for the step */
    size_t n_args;
    /* The message of the end-of-message step. */
    struct milter_message msg;
    uint64_t total, body_off;
    unsigned char *hdrs; /* owned: the header section */
    size_t hdrs_len;
    struct milter_hdr *hv; /* owned */
    size_t n_hv;
    uint8_t *ebuf; /* owned: one encoded message, MILTER_HEADER_LEN + MILTER_FRAME_LEN_MAX */
    struct milter_mod *mods; /* owned */
    size_t n_mods, cap_mods;
};

/* One message of a step, encoded into ms->ebuf. */
struct milter_item {
    enum milter_step step; /* whose "skip" and "no reply" flags apply */
    bool step_sent;        /* the milter wants this step */
    bool answered;         /* an answer follows */
    const uint8_t *data;
    size_t len;
};

/* milter.c */
void milter_run(struct milter_session *ms);
void milter_on_reply(struct milter_session *ms, struct milter_conn *m, uint8_t cmd,
                     const uint8_t *payload, size_t len);
void milter_on_timeout(struct milter_session *ms);
void milter_on_error(struct milter_session *ms, struct milter_conn *m, const char *why);
void milter_mods_clear(struct milter_session *ms);
const char *milter_step_name(enum milter_step step);

/* milter_conn.c */
int milter_conn_open(struct milter_session *ms, struct milter_conn *m);
int milter_conn_write(struct milter_session *ms, struct milter_conn *m, const uint8_t *p, size_t n);
void milter_conn_close(struct milter_session *ms, struct milter_conn *m);
void milter_timer_start(struct milter_session *ms);
void milter_timer_stop(struct milter_session *ms);

/* milter_items.c: 1 and *it, 0 when the milter has had the whole step, -1 on failure. */
int milter_item_make(struct milter_session *ms, struct milter_conn *m, size_t pos,
                     struct milter_item *it);
/* Reads the header section of msg. 0 or -1. */
int milter_item_message_begin(struct milter_session *ms, const struct milter_message *msg);
/* Reads msg[off..off+n) into buf: the spool file's part first, then memory. 0 or -1. */
int milter_message_read(const struct milter_message *msg, uint64_t off, uint8_t *buf, size_t n);
/* The position after the last body chunk (SKIP). */
size_t milter_item_skip_body(const struct milter_session *ms);

#endif
