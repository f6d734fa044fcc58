/*
 * worker.h - one extra event loop on its own thread, serving its share of the connections when
 * [server] workers is above 1. serve.c owns the first loop (signals, the queue runner, the
 * housekeeping timer, the writer thread) and one struct worker for each further loop.
 *
 * A worker has what a loop needs to serve sessions on its own: its listening sockets on every
 * configured address (SO_REUSEPORT, so the kernel spreads new connections over the loops), its
 * connection set, its own read connection to the store (SQLite connections are per thread), its
 * own handle on the one writer thread (writer_attach: done callbacks come back to this loop), its
 * own handle for reads (reader_attach: inline on its connection, or on the shared reader threads),
 * and
 * its own password verifier sharing the first loop's cache and throttles (auth_new_peer). The
 * connection limits are shared with the first loop's listener set. It has no DNS channel and no
 * queue runner: only the first loop delivers mail out.
 *
 * What it does not do: handle signals or decide when to stop or reload; serve.c tells it, from
 * the first loop, through a uv_async (worker_stop, worker_reload).
 *
 * Life: worker_new on the main thread while still root (ports below 1024), before the privilege
 * drop; worker_start once everything is set up; worker_stop from the first loop; the thread then
 * answers 421 / -ERR to its sessions, flushes and closes them, lets its writer jobs finish, ends
 * its loop and calls on_exit (from its own thread); worker_free joins it. A worker that was never
 * started is torn down by worker_free on the calling thread.
 */
#ifndef POSTERN_WORKER_H
#define POSTERN_WORKER_H

#include <stdbool.h>
#include <stddef.h>

struct auth;
struct cfg;
struct disk_reserve;
struct dkim_cache;
struct listener_set;
struct reader;
struct smtp_client_creds;
struct tls_ctx;
struct worker;
struct writer;

struct worker_params {
    unsigned index;                            /* 1, 2, ...: for the logs */
    const struct cfg *cfg;                     /* borrowed; outlives the worker */
    struct writer *writer;                     /* the first handle, to attach to */
    struct reader *reader;                     /* the first handle, to attach to */
    struct auth *auth;                         /* the first verifier, whose tables are shared */
    struct listener_set *listeners;            /* the first loop's set, whose counts are shared */
    struct tls_ctx *tls;                       /* referenced; NULL: no TLS */
    const struct smtp_client_creds *smarthost; /* borrowed; may be NULL */
    struct disk_reserve *disk;                 /* borrowed, thread-safe; may be NULL */
    struct dkim_cache *dkim;                   /* borrowed, thread-safe; may be NULL */
    void (*on_exit)(void *arg);                /* called on the worker's thread at its end */
    void *on_exit_arg;
};

/*
 * Sets up the loop, the store connection, the writer handle, the verifier, the connection set
 * and the listeners (bound now). 0, or a negative code with err holding one line (nothing is left
 * open then) and *out NULL.
 */
int worker_new(const struct worker_params *p, struct worker **out, char *err, size_t errlen);
/* Starts the thread (every signal blocked on it). 0 or a positive errno. */
int worker_start(struct worker *w);
/* Any thread: graceful stop (abort = false), or abort every remaining connection now (a second
 * signal). A started worker ends and calls on_exit; asking twice is harmless. */
void worker_stop(struct worker *w, bool abort);
/* Any thread: new connections of this worker use tls from now on (a reference is taken). */
void worker_reload(struct worker *w, struct tls_ctx *tls);
/* True once worker_start succeeded. */
bool worker_started(struct worker *w);
/* True once the started thread has ended its loop (on_exit is being or was called). */
bool worker_exited(struct worker *w);
/* Joins a started worker (call after it exited) or tears down one never started; frees it and
 * sets *w to NULL. NULL is a no-op. */
void worker_free(struct worker **w);

#endif
