/*
 * conn.h - one TCP connection: socket, TLS filter, line reader, output queue, timers, close path.
 *
 * The connection layer, shared by the SMTP and POP3 sessions (accepted connections)
 * and the outbound SMTP client (conn_connect). A protocol plugs in as a struct conn_handler and
 * sees complete lines (line mode) or raw chunks (data mode); it answers with conn_write/conn_reply
 * and never learns whether TLS is on, how the bytes were split by the network, or when the socket
 * is readable. What this module does not do: parse commands, decide policy, bind or accept
 * (server/net/listener.c), or log anything beyond the connection events below.
 *
 * Events logged with the connection's sid (sub=proto): connected, tls, tls-failed,
 * starttls-discarded, proxy-failed, refused (a proxied client over the per-client limit),
 * disconnected (reason, duration_ms, bytes_in, bytes_out, lines); with
 * transcript on, recv (every line received, or "***" after conn_mask_next_line) and send (every
 * line sent), each masked where the handler's transcript_visible hook says; a message body is
 * never logged, only summed up (send-body, recv-body: octets and lines).
 *
 * Ownership and lifetime:
 *   - A struct conn_set owns every connection made on one loop, a shared read buffer (the loop is
 *     one thread, so one buffer serves every read callback) and the "ready list" that gives
 *     connections with input left over their next turn.
 *   - A struct conn is owned by its set. It is never freed by its user: conn_close() (graceful:
 *     queued output is flushed first, bounded in time) or conn_abort() (now) start the one close
 *     path; the memory is freed in the libuv close callback, after every reference taken with
 *     conn_ref() was dropped.
 *   - handler->on_close(c, reason) runs exactly once for every connection that conn_accept or
 *     conn_connect returned, when closing starts (also when the connect or the TLS setup failed
 *     before on_open ran: then conn_session(c) is still NULL). After it returns no other handler
 *     callback runs, conn_session() is NULL, and every conn_* call on c is a harmless no-op
 *     (writes are dropped). The session frees itself there unless it has asynchronous work in
 *     flight.
 *   - Asynchronous work (argon2 in the threadpool, a writer job) holds a reference: conn_ref(c)
 *     before submitting, and in the completion `if (!conn_is_closing(c)) answer...;
 *     conn_unref(&c);`. The reference keeps the struct conn valid (never the session: a session
 *     that has work in flight when on_close runs marks itself closed and frees itself when the
 *     work completes). So a result for a closed connection never touches freed memory.
 *
 * Reading: at most CONN_LINES_PER_TURN lines (or data chunks) are handed over per loop iteration;
 * the rest waits in the connection and gets the next turn after other connections' I/O was
 * polled, so one pipelining client cannot starve the others. Reading from the socket stops
 * (uv_read_stop) while input is waiting, while the session paused reading, and while more than
 * CONN_OUTPUT_HIGH_BYTES of output are unsent (a client that pipelines and never reads); it
 * resumes when the output drains below half of that.
 *
 * PROXY protocol (conn_proxy.c): on a listener marked proxy the connection first waits, at
 * most CONN_PROXY_HEADER_MS, for the header a load balancer sends (the listener has already
 * checked that the peer is in [server] proxy_from). Until it is complete and valid nothing else
 * happens: no TLS, no on_open, no greeting (SMTP and POP3 servers speak first, and the
 * specification forbids processing before the header). A valid header replaces the peer address
 * and port with the client's, so every conn_peer_* call, every log line and the session see the
 * client and never the balancer (LOCAL and UNKNOWN headers keep the balancer's, as the
 * specification asks). A broken, missing or late header aborts the connection, logged as
 * event=proxy-failed with the reason.
 *
 * Threading: everything here runs on the loop thread, conn_ref/conn_unref included: take the
 * reference before handing work to another thread, drop it in the completion back on the loop.
 */
#ifndef POSTERN_CONN_H
#define POSTERN_CONN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "common/pure/buf.h"

struct cfg;
struct conn;
struct conn_set;
struct ip_addr;
struct tls_ctx;

/* Bytes read from the socket per read callback (the set's shared buffer). */
#define CONN_READ_BUF_BYTES (64 * 1024)
/* Lines (or data chunks) handed to the session per connection per loop iteration. */
#define CONN_LINES_PER_TURN 32
/*
 * Unsent output above which reading stops; it restarts below half of it. A pipelining client
 * that never reads fills this quickly with replies; 64 KiB is a few hundred SMTP replies.
 */
#define CONN_OUTPUT_HIGH_BYTES (64 * 1024)
/* Output that may ever be queued; a write past it aborts the connection ("output-overflow").
 * Sessions that send more than this (POP3 RETR of a large message) stream it with on_drain. */
#define CONN_OUTPUT_MAX_BYTES (1024 * 1024)
/* conn_close(): how long queued output may take to drain before the connection is aborted. */
#define CONN_CLOSE_FLUSH_MS 2000
/* After the last reply was flushed and FIN sent: how long unread client input is drained, so
 * the kernel does not answer it with a RST that could destroy the reply in flight. */
#define CONN_LINGER_MS 1000
/*
 * How long a connection on a proxy listener may take to send its PROXY header. A balancer sends
 * it with the connection, at once; the specification asks a receiver that times out to wait at
 * least 3 seconds so that one lost segment and its retransmission still make it.
 */
#define CONN_PROXY_HEADER_MS 5000
/* Room for a close reason ("read-error: connection reset by peer" and the like). */
#define CONN_REASON_MAX_BYTES 80

/* The service a connection belongs to: the port it came in on, or outbound. */
enum conn_service {
    CONN_SERVICE_SMTP_MX = 0,      /* [smtp] listen: relay/MX port (25) */
    CONN_SERVICE_SMTP_SUBMISSION,  /* [smtp] submission (587, RFC 6409) */
    CONN_SERVICE_SMTP_SUBMISSIONS, /* [smtp] submissions (465, implicit TLS, RFC 8314) */
    CONN_SERVICE_POP3,             /* [pop3] listen (110) */
    CONN_SERVICE_POP3S,            /* [pop3] pop3s (995, implicit TLS) */
    CONN_SERVICE_OUTBOUND,         /* made by conn_connect() */
};

/* "smtp", "submission", "submissions", "pop3", "pop3s", "outbound": the config key names. */
const char *conn_service_name(enum conn_service service);

/*
 * One per protocol (a static const table in the session file). Every callback runs on the loop
 * thread with c open (not closing), except on_close. A callback may call any conn_* function on
 * c, including conn_close/conn_abort (then no further callback runs for this connection except
 * on_close, which conn_close itself calls).
 */
struct conn_handler {
    const char *proto;         /* log subsystem: "smtp" | "pop3" | "smtp-out" */
    size_t max_line_bytes;     /* initial line limit, terminator included (e.g. 512) */
    size_t largest_line_bytes; /* highest limit conn_set_max_line may set (e.g. 12288) */
    /* Connected (accepted, or outbound connect done): create the session, send the greeting. On
     * an implicit-TLS port the greeting is held by the TLS layer until the handshake is done. */
    void (*on_open)(struct conn *c);
    /* One complete line, terminator removed, NUL-terminated, without NUL inside (borrowed,
     * valid during the call). */
    void (*on_line)(struct conn *c, const char *line, size_t len);
    /* LINEREADER_TOO_LONG (the line is skipped up to its LF) or LINEREADER_BAD_LINE (NUL). */
    void (*on_bad_line)(struct conn *c, enum linereader_status why);
    /* Data mode: n > 0 octets. Returns how many it consumed; fewer than n only if it switched
     * back to line mode (the rest is read as lines) or paused reading (the rest is offered again
     * after conn_resume_reading). May be NULL for a protocol without data mode. */
    size_t (*on_data)(struct conn *c, const unsigned char *p, size_t n);
    /* TLS handshake completed (implicit TLS or after conn_starttls): forget what was learned
     * before (RFC 3207 4.2). May be NULL. */
    void (*on_tls_ready)(struct conn *c);
    /* Idle timeout: queue the protocol's timeout reply; the connection is closed afterwards.
     * May be NULL. */
    void (*on_timeout)(struct conn *c);
    /* The server is stopping: queue 421 4.3.2 / -ERR; the connection is closed afterwards. May be
     * NULL. */
    void (*on_shutdown)(struct conn *c);
    /* Output dropped below CONN_OUTPUT_HIGH_BYTES / 2 after conn_want_drain(): stream more. May
     * be NULL. */
    void (*on_drain)(struct conn *c);
    /* Closing starts (exactly once): free or detach the session. reason: "quit", "timeout",
     * "client-closed", "shutdown", "read-error: ...", ... */
    void (*on_close)(struct conn *c, const char *reason);
    /* Over a connection limit (listener.c sends it in plaintext ports before closing). per_ip:
     * the per-address limit, otherwise the global one. Writes a NUL-terminated reply with its
     * CRLF into buf. May be NULL (then the connection is just closed). */
    void (*busy_reply)(const struct cfg *cfg, bool per_ip, char *buf, size_t len);
    /* Transcript (transcript on): how many leading bytes of a line may be logged; the rest is
     * logged as " ***". Which lines carry secrets (a password, a SASL response) is the protocol's
     * knowledge, so the protocol says where they start. outgoing: a line this side sends (a
     * reply; on an outbound connection, a command). May be NULL:
     * every line is logged whole. Lines after conn_mask_next_line() are masked without asking. */
    size_t (*transcript_visible)(const char *line, size_t len, bool outgoing);
};

/* How a connection starts (conn_accept, conn_connect). Everything is copied or referenced. */
struct conn_params {
    const struct conn_handler *handler; /* borrowed; must outlive the connection (static) */
    enum conn_service service;
    const char *listener_name; /* for the connected event: "127.0.0.1:2525"; may be NULL */
    struct tls_ctx *tls_ctx;   /* server context (accepted) or client context (outbound) for
                                  implicit TLS or conn_starttls; NULL: no TLS. A reference is
                                  taken. */
    bool implicit_tls;         /* start TLS at once (submissions, pop3s) */
    bool proxy_protocol;       /* accepted only: a PROXY header comes first (see the top) */
    const char *sni_hostname;  /* outbound only: server name indication (copied); may be NULL */
    /* Called once when the struct conn is freed (listener.c: the counts). counted: the address
     * a per-client place was taken for (at accept, or by on_client), NULL if none was. May be
     * NULL. */
    void (*on_free)(void *arg, const struct ip_addr *counted);
    /* proxy_protocol only: the header named the client (or kept the balancer's address): take a
     * per-client place for it. 0, or nonzero when it is over the per-client limit (then the
     * handler's busy reply on a plaintext port, and the connection is closed). May be NULL. */
    int (*on_client)(void *arg, const struct ip_addr *client);
    void *on_free_arg; /* for on_free and on_client */
};

/* ---- the set ------------------------------------------------------------------------------- */

/*
 * A set for one loop. cfg and app are borrowed and handed to sessions (conn_cfg, conn_app);
 * transcript turns the recv/send events on. 0, or a negative errno / libuv code (-ENOMEM,
 * libsodium failure -EIO).
 */
int conn_set_new(uv_loop_t *loop, const struct cfg *cfg, void *app, bool transcript,
                 struct conn_set **out);
/*
 * Graceful stop: every open connection gets handler->on_shutdown and then conn_close("shutdown"),
 * except one marked with conn_keep_at_shutdown, which its owner closes on its own. done(arg) runs
 * once the set is empty (at once, from a later loop iteration, if it already is). Bounded:
 * CONN_CLOSE_FLUSH_MS + CONN_LINGER_MS, or the bound the owner of a kept connection keeps (an
 * outbound client awaiting the reply to its end of data: smtp_client.h) if that is longer.
 */
void conn_set_shutdown(struct conn_set *set, void (*done)(void *arg), void *arg);
/* Aborts every open connection at once (a second SIGTERM). */
void conn_set_abort_all(struct conn_set *set, const char *reason);
/* Connections not yet freed (closing ones included: they still hold a socket). */
size_t conn_set_count(const struct conn_set *set);
uv_loop_t *conn_set_loop(const struct conn_set *set);
/*
 * Aborts what is still open, and frees the set once its last connection is gone (the loop must
 * run on to finish the close callbacks). Sets *setp to NULL. NULL is a no-op.
 */
void conn_set_free(struct conn_set **setp);

/* ---- making connections -------------------------------------------------------------------- */

/*
 * Takes over fd, a connected TCP socket from accept() (it is closed on failure too), and calls
 * handler->on_open. 0 and *out (borrowed: owned by the set), or a negative errno/libuv code
 * (-ECANCELED once conn_set_shutdown or conn_set_free was called).
 */
int conn_accept(struct conn_set *set, int fd, const struct conn_params *params, struct conn **out);
/*
 * Outbound: connects to addr (AF_INET/AF_INET6). on_open runs when connected; a failed connect
 * calls on_close(c, "connect-failed: REASON") without on_open. 0 and *out, or a negative code
 * (then no callback runs).
 */
int conn_connect(struct conn_set *set, const struct sockaddr *addr,
                 const struct conn_params *params, struct conn **out);

/* ---- the session's API --------------------------------------------------------------------- */

/* Queues len bytes (the caller writes the CRLFs). 0, or -1 when closing (dropped) or when the
 * output limit was hit (the connection is then aborted with reason "output-overflow"). */
int conn_write(struct conn *c, const void *data, size_t len);
/* printf into the output queue; the caller writes the CRLF. Same result as conn_write. */
int conn_reply(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int conn_vreply(struct conn *c, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Graceful close: stop reading, flush what is queued (TLS: then close_notify), FIN, close. The
 * first reason wins. Calls handler->on_close before returning. */
void conn_close(struct conn *c, const char *reason);
/* Immediate close: queued output is dropped. Calls handler->on_close before returning. */
void conn_abort(struct conn *c, const char *reason);

/*
 * Switches TLS on for everything after this point. Call it from on_line right after queueing the
 * 220/+OK (which still goes out in plaintext). Any input received after the command line and not
 * yet handed over is discarded: plaintext pipelined behind STARTTLS must never be read as if it
 * came over TLS (CVE-2011-0411, RFC 3207 4.2). The outbound side calls it after reading the
 * server's 220 and starts its handshake at once. on_tls_ready runs when the handshake is done.
 * 0, -ENOTSUP (no TLS context), -EALREADY (TLS already on), -EINVAL (data mode), -ENOTCONN
 * (closing), -ENOMEM.
 */
int conn_starttls(struct conn *c);
/* True when conn_starttls would work now (a context is there and TLS is not on yet). */
bool conn_can_starttls(const struct conn *c);
/* True when TLS is on (handshake possibly still running). */
bool conn_is_tls(const struct conn *c);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384", or "none". buf of TLS_DESCRIBE_MAX_BYTES; returns buf. */
char *conn_tls_describe(const struct conn *c, char *buf, size_t len);

/*
 * Data mode on: the octets received after the current line go to on_data instead of the line
 * reader (nothing is lost or seen twice). Off: back to lines, starting with what on_data did not
 * consume.
 */
void conn_set_mode_data(struct conn *c, bool on);
bool conn_is_mode_data(const struct conn *c);
/* Idle timeout from now on, restarted by every read; 0 = none. */
void conn_set_timeout(struct conn *c, uint64_t timeout_ms);
/*
 * keep: a graceful stop (conn_set_shutdown) calls on_shutdown but does not close c, because the
 * session is waiting for something it must not lose (an outbound client's reply to its end of
 * data); the session closes it itself, within a bound of its own. conn_set_abort_all and
 * conn_set_free still abort it. Off by default.
 */
void conn_keep_at_shutdown(struct conn *c, bool keep);
/* Line limit for the lines not yet handed over (e.g. SMTP_AUTH_LINE_MAX_BYTES for an AUTH
 * continuation). 0 or -EINVAL outside [LINEREADER_MIN_LINE_BYTES, largest_line_bytes]. */
int conn_set_max_line(struct conn *c, size_t max_line_bytes);
/*
 * Stop handing over input (the session waits for an asynchronous result). Input already received
 * stays buffered, nothing is lost; the socket is not read meanwhile and the idle timer is off.
 * Takes effect after the current callback returns. Resume hands over the rest from the next loop
 * iteration. Not nested: one pause, one resume.
 */
void conn_pause_reading(struct conn *c);
void conn_resume_reading(struct conn *c);
bool conn_is_paused(const struct conn *c);
/* The transcript logs the next line received as line="***" (AUTH payloads, PASS arguments). */
void conn_mask_next_line(struct conn *c);
/*
 * A message body goes out (RETR, TOP, the outbound client's DATA): until conn_body_end,
 * conn_write sends as always but the transcript only counts the octets and lines, and
 * conn_body_end logs them as one event=send-body line. A body ended by a closing connection, or
 * not ended before the close, is logged with complete=no. Received data (data mode) is counted the
 * same way by itself (event=recv-body when data mode ends). Not nested; a second begin is a no-op.
 */
void conn_body_begin(struct conn *c);
void conn_body_end(struct conn *c);
/* Ask for one on_drain call once the unsent output is below CONN_OUTPUT_HIGH_BYTES / 2. */
void conn_want_drain(struct conn *c);

/* References for asynchronous work (see the head comment). */
void conn_ref(struct conn *c);
void conn_unref(struct conn **cp);
/* True once closing started (conn_close/conn_abort or an error): stop using c except to unref. */
bool conn_is_closing(const struct conn *c);

/* ---- accessors ----------------------------------------------------------------------------- */

void *conn_session(const struct conn *c);
void conn_set_session(struct conn *c, void *session);
uint64_t conn_sid(const struct conn *c);
const char *conn_proto(const struct conn *c);
enum conn_service conn_service(const struct conn *c);
const struct ip_addr *conn_peer_ip(const struct conn *c);
const char *conn_peer_text(const struct conn *c); /* "192.0.2.1" */
uint16_t conn_peer_port(const struct conn *c);
const struct cfg *conn_cfg(const struct conn *c);
void *conn_app(const struct conn *c);
/* The loop the connection runs on (for a session's own timers). */
uv_loop_t *conn_loop(const struct conn *c);
bool conn_transcript(const struct conn *c);

/* Statistics and test hooks. */
struct conn_stats {
    uint64_t bytes_in;   /* from the socket (ciphertext with TLS) */
    uint64_t bytes_out;  /* to the socket */
    uint64_t lines_in;   /* lines handed to on_line */
    uint64_t bad_lines;  /* TOO_LONG and BAD_LINE events */
    size_t output_bytes; /* queued, not yet written */
    size_t input_bytes;  /* received, not yet handed over */
    bool reading;        /* the socket is being read */
    size_t held_bytes;   /* heap buffers the connection holds now (output queue, line reader,
                            stash), unread or not: 0 for an idle plaintext connection */
};
void conn_get_stats(const struct conn *c, struct conn_stats *out);

#endif
