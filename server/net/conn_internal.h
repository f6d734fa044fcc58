/*
 * conn_internal.h - what conn.c (life and close path), conn_io.c (reading, writing, TLS switch),
 * conn_proxy.c (the PROXY header) and conn_transcript.c share: the connection and set structs
 * and the functions each calls in another. Private to those files; everyone else uses conn.h.
 * Shared functions carry a double underscore (conn__), as libuv marks its internal names, so they
 * are never mistaken for the public API.
 */
#ifndef POSTERN_CONN_INTERNAL_H
#define POSTERN_CONN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>
#include <uv.h>

#include "common/pure/buf.h"
#include "common/pure/cidr.h"
#include "server/net/conn.h"

/* TLS plaintext decrypted per call, and ciphertext moved to the output queue per call. */
#define CONN_TLS_BUF_BYTES (16 * 1024)
/*
 * The stash holds at most one read (when a turn ends in the middle of it) plus what the line
 * reader held when data mode started (at most the largest line and slack).
 */
#define CONN_STASH_MAX_BYTES (2 * CONN_READ_BUF_BYTES)
/* Room for TLS record framing on top of CONN_OUTPUT_MAX_BYTES of plaintext. */
#define CONN_OUTQ_TLS_SLACK_BYTES (64 * 1024)

enum conn_state {
    CONN_CONNECTING, /* outbound, connect in progress */
    CONN_OPEN,
    CONN_FLUSHING,  /* conn_close: waiting for queued output to drain */
    CONN_LINGERING, /* FIN sent: discarding input until the client's FIN */
    CONN_CLOSED,    /* uv_close called on both handles */
};

struct conn_set {
    uv_loop_t *loop;       /* borrowed */
    const struct cfg *cfg; /* borrowed, for the sessions */
    void *app;             /* borrowed, for the sessions */
    bool transcript;
    struct conn *all_first; /* every connection not yet freed (doubly linked) */
    size_t count;
    struct conn *ready_first, *ready_last; /* connections waiting for their next turn */
    size_t ready_count;
    uv_idle_t ready_idle;
    bool idle_active;
    bool shutting_down;
    void (*shutdown_done)(void *arg);
    void *shutdown_arg;
    bool shutdown_done_pending; /* call shutdown_done from the idle callback */
    bool free_requested;
    bool released; /* uv_close called on ready_idle; freed in its callback */
    /* Shared scratch: only ever used inside one callback on the loop thread. */
    unsigned char read_buf[CONN_READ_BUF_BYTES];
    unsigned char plain_buf[CONN_TLS_BUF_BYTES];
    unsigned char cipher_buf[CONN_TLS_BUF_BYTES];
};

struct conn {
    /* libuv: the handles' data point here. */
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout in OPEN, then the flush and linger bounds */
    union {
        uv_connect_t connect;   /* outbound, before anything else happens */
        uv_shutdown_t shutdown; /* after the last write */
    } req;
    /* The one write in flight has its uv_write_t on the heap, freed in its callback: an idle
     * connection does not carry its 192 bytes. */
    size_t write_len;

    struct conn_set *set;             /* borrowed: the owner */
    struct conn *all_prev, *all_next; /* in set->all_first */
    struct conn *ready_prev, *ready_next;
    bool on_ready_list;
    const struct conn_handler *handler; /* borrowed (static) */
    void *session;                      /* the handler's; conn never frees it */

    enum conn_state state;
    enum conn_service service;
    bool outbound;
    bool callbacks_on;     /* handler callbacks may run (on_open ran or connect started) */
    bool close_notified;   /* on_close ran */
    bool keep_at_shutdown; /* conn_keep_at_shutdown: a graceful stop leaves it to its owner */
    unsigned refs;         /* 1 for the open handles + one per conn_ref */
    unsigned handles_open;

    /* input */
    struct linereader lr; /* owned; allocated only while it holds something (lr_live) */
    bool lr_live;
    size_t max_line_bytes;
    size_t largest_line_bytes;
    struct buf stash;           /* owned: received, not yet handed over; older than chunk */
    const unsigned char *chunk; /* borrowed during a pump: unprocessed part of this read */
    size_t chunk_len;
    bool slice_from_stash; /* the slice being processed came from the stash */
    unsigned in_pump;      /* nesting depth of conn__pump(); writes are flushed at its end */
    bool reading;          /* uv_read_start is active */
    bool mode_data;
    bool paused;
    bool eof;         /* the client sent FIN (or TLS close_notify) */
    bool backlog;     /* the last pump stopped before the input ran dry */
    bool output_full; /* stopped reading: too much output unsent */
    bool mask_next;   /* transcript: log the next line as "***" */
    /* Transcript: message bodies are counted, never logged (conn_body_begin, data mode). */
    bool body_out; /* between conn_body_begin and conn_body_end */
    uint64_t body_out_octets, body_out_lines;
    uint64_t body_in_octets, body_in_lines; /* data mode: since it was switched on */
    bool want_drain;

    /* output */
    struct outq outq; /* owned: bytes for the socket (ciphertext with TLS) */

    /* TLS */
    struct tls_ctx *tls_ctx; /* owned reference; NULL: TLS impossible */
    struct tls_conn *tls;    /* owned; NULL until TLS starts */
    bool tls_ready;          /* handshake done and reported */
    bool implicit_tls;
    char *sni; /* owned, outbound only */

    /* identity and accounting */
    uint64_t sid;
    struct ip_addr peer;
    char peer_text[INET6_ADDRSTRLEN];
    uint16_t peer_port;
    uint64_t timeout_ms;
    uint64_t started_ms;
    uint64_t bytes_in, bytes_out, lines_in, bad_lines;
    char reason[CONN_REASON_MAX_BYTES];
    void (*on_free)(void *arg, const struct ip_addr *counted);
    void *on_free_arg;
    bool client_counted; /* a per-client place is held for peer (given back by on_free) */
    /* Owned; set exactly while a PROXY header is awaited (conn_proxy.c), when nothing else
     * happens on the connection. */
    struct conn_proxy *proxy;
};

/*
 * What a connection on a proxy listener needs until its PROXY header is read, on the heap and
 * freed once the header is judged, so that no other connection carries it.
 */
struct conn_proxy {
    struct buf in;             /* owned: the header's octets so far, when it came in pieces */
    const char *listener_name; /* borrowed from the listener, which outlives its connections */
    int (*on_client)(void *arg, const struct ip_addr *client); /* conn_params.on_client */
};

/* ---- conn.c -------------------------------------------------------------------------------- */

/* buf = "what: <libuv message>", a close reason. */
void conn__reason_with_uv(char *buf, size_t len, const char *what, int uv_err);
/* The idle timer runs in OPEN/CONNECTING, unless paused or no timeout is set. */
void conn__arm_idle(struct conn *c);
/* The connection's one timer, for whatever bound the state needs; a failure is only logged. */
void conn__start_timer(struct conn *c, uint64_t ms);
/* The ready list: connections with input left over, continued from the set's uv_idle. */
void conn__ready_add(struct conn *c);
void conn__ready_remove(struct conn *c);
/* CLOSED: uv_close on both handles (conn_abort's second half, and the end of lingering). */
void conn__finish_close(struct conn *c);
/* FLUSHING and nothing left to send: go on to LINGERING. */
void conn__maybe_flushed(struct conn *c);
/* The connection starts for the session: the connected event (with via, the PROXY part, "" for
 * none), TLS for an implicit-TLS port, reading, on_open and the greeting. */
void conn__start(struct conn *c, const char *listener_name, const char *via);

/* ---- conn_proxy.c -------------------------------------------------------------------------- */

/* Accepted on a proxy listener: wait for the header (reading, the header timer). on_client:
 * conn_params.on_client. Out of memory aborts the connection. */
void conn__proxy_begin(struct conn *c, const char *listener_name,
                       int (*on_client)(void *arg, const struct ip_addr *client));
/* Frees c->proxy (conn_free, and once the header is judged); NULL is a no-op. */
void conn__proxy_free(struct conn *c);
/* Octets read while waiting (plaintext: nothing else runs before the header). */
void conn__proxy_input(struct conn *c, const unsigned char *data, size_t n);
/* No header: abort with "proxy-error: why" after logging event=proxy-failed. */
void conn__proxy_fail(struct conn *c, const char *why);

/* ---- conn_io.c ----------------------------------------------------------------------------- */

/* Output queued and not yet written, TLS ciphertext included. */
size_t conn__unsent_bytes(const struct conn *c);
/* Starts the one uv_write if none is in flight; then checks backpressure and the close path. */
void conn__flush(struct conn *c);
/* Hands input to the session for one turn; chunk (may be NULL) is borrowed from a read. */
void conn__pump(struct conn *c, const unsigned char *chunk, size_t len);
/* Starts or stops reading the socket as the state, backpressure and pause demand. */
void conn__update_reading(struct conn *c);
/* Creates the tls_conn (server or client side). 0 or -ENOMEM (logged as tls-failed). */
int conn__start_tls(struct conn *c);

/* ---- conn_transcript.c --------------------------------------------------------------------- */

/* Logs data (a conn_write) line by line as event=send; inside a body it only counts it. */
void conn__transcript_send(struct conn *c, const unsigned char *data, size_t len);
/* Logs one received line as event (recv, recv-too-long, recv-bad-line). */
void conn__transcript_recv(struct conn *c, const char *event, const char *line, size_t len);
/* Data mode: counts the octets on_data took; with ended (on_data left data mode) logs the
 * summary. conn__transcript_data_in_end logs it when data mode ends outside on_data. */
void conn__transcript_data_in(struct conn *c, const unsigned char *data, size_t len, bool ended);
void conn__transcript_data_in_end(struct conn *c, bool complete);
/* At close: the summary of a body still being sent or received, marked complete=no. */
void conn__transcript_unfinished(struct conn *c);

#endif
