/*
 * worker.c - see worker.h: one extra event loop on its own thread.
 *
 * The first loop talks to a worker only through its control uv_async and three requests guarded
 * by the worker's mutex: stop, abort, and a new TLS context. The worker talks back only through
 * on_exit, called from its own thread after its loop has ended. Everything else the worker owns
 * (loop, connections, listeners, read store, verifier, writer handle) is touched on its thread
 * only, once worker_start has handed it over (pthread_create orders the set-up before it).
 *
 * Stop, on the worker's thread: stop accepting (its listening sockets close), tell every session
 * (conn_set_shutdown: 421 4.3.2 / -ERR, flush, close, bounded), then free the listeners and the
 * set, close the verifier, detach the writer handle (it closes once the jobs this loop submitted
 * have been delivered) and close the control handle; the loop then has nothing left and ends.
 */
#include "server/worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"
#include "server/app.h"
#include "server/auth/auth.h"
#include "server/net/conn.h"
#include "server/net/listener.h"
#include "server/net/tls.h"
#include "server/pop3/pop3_session.h"
#include "server/smtp/smtp_session.h"
#include "storage/reader.h"
#include "storage/store.h"
#include "storage/writer.h"

struct worker {
    unsigned index;
    uv_loop_t loop;
    bool loop_open;
    pthread_t thread;
    bool started;
    atomic_bool exited;
    void (*on_exit)(void *arg);
    void *on_exit_arg;

    /* The worker's thread only, once started. */
    struct store *reads;            /* owned */
    struct writer *writer;          /* owned handle (attached) */
    struct reader *reader;          /* owned handle (attached) */
    struct conn_set *conns;         /* owned */
    struct listener_set *listeners; /* owned */
    uv_async_t control;
    bool control_open;
    bool stopping;
    struct app app; /* what this loop's sessions borrow; points into the fields above */

    /* Requests from the first loop, guarded by mu. */
    pthread_mutex_t mu;
    bool stop_asked;
    bool abort_asked;
    struct tls_ctx *new_tls; /* owned reference, NULL: nothing new */
    bool control_closing;    /* uv_close was called on control: nobody may send to it now */
};

/* A mutex that fails with default attributes means a programming error: nothing sane to do. */
static void must(int rc, const char *what)
{
    if (rc != 0) {
        log_error("serve", 0, "event=pthread-failed call=%s errno=%d", what, rc);
        abort();
    }
}

/* The last step of a stop: every connection of this loop is gone. */
static void on_connections_closed(void *arg)
{
    struct worker *w = arg;
    listener_set_free(&w->listeners);
    conn_set_free(&w->conns);
    auth_free(&w->app.auth);
    w->app.writer = NULL;
    writer_detach(&w->writer); /* closes once this loop's jobs are delivered */
    w->app.reader = NULL;
    reader_detach(&w->reader); /* likewise */
    if (w->control_open) {
        w->control_open = false;
        /* Under the mutex: ask() sends only while this is false, so no send can reach the
         * handle once its close has begun (libuv forbids that). */
        must(pthread_mutex_lock(&w->mu), "pthread_mutex_lock");
        w->control_closing = true;
        uv_close((uv_handle_t *)&w->control, NULL);
        must(pthread_mutex_unlock(&w->mu), "pthread_mutex_unlock");
    }
}

static void begin_stop(struct worker *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    log_info("serve", 0, "event=worker-stopping worker=%u connections=%zu", w->index,
             w->conns != NULL ? conn_set_count(w->conns) : (size_t)0);
    if (w->listeners != NULL)
        listener_set_stop(w->listeners);
    if (w->conns != NULL)
        conn_set_shutdown(w->conns, on_connections_closed, w);
    else
        on_connections_closed(w);
}

static void on_control(uv_async_t *h)
{
    struct worker *w = h->data;
    must(pthread_mutex_lock(&w->mu), "pthread_mutex_lock");
    bool stop = w->stop_asked, abort_now = w->abort_asked;
    struct tls_ctx *tls = w->new_tls;
    w->new_tls = NULL;
    w->abort_asked = false;
    must(pthread_mutex_unlock(&w->mu), "pthread_mutex_unlock");
    if (tls != NULL) {
        if (!w->stopping && w->listeners != NULL)
            listener_set_tls(w->listeners, tls);
        tls_ctx_unref(&tls);
    }
    if (stop)
        begin_stop(w);
    if (abort_now && w->conns != NULL && conn_set_count(w->conns) > 0) {
        log_info("serve", 0, "event=worker-stopping-now worker=%u connections=%zu", w->index,
                 conn_set_count(w->conns));
        conn_set_abort_all(w->conns, "shutdown");
    }
}

/* Closes what is open and runs the loop to its end; on the calling thread. */
static void teardown(struct worker *w)
{
    if (w->loop_open) {
        begin_stop(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&w->loop) != 0)
            log_warn("serve", 0, "event=loop-close-failed worker=%u", w->index);
        w->loop_open = false;
    }
    store_close(&w->reads);
    tls_ctx_unref(&w->new_tls);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    teardown(w);
    atomic_store(&w->exited, true);
    w->on_exit(w->on_exit_arg); /* last touch of anything shared: serve.c may join us now */
    return NULL;
}

int worker_new(const struct worker_params *p, struct worker **out, char *err, size_t errlen)
{
    *out = NULL;
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "worker %u: out of memory", p->index);
        return -ENOMEM;
    }
    w->index = p->index;
    w->on_exit = p->on_exit;
    w->on_exit_arg = p->on_exit_arg;
    int rc = pthread_mutex_init(&w->mu, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "worker %u: pthread_mutex_init: %s", p->index, strerror(rc));
        free(w);
        return -rc;
    }
    if ((rc = uv_loop_init(&w->loop)) != 0) {
        snprintf(err, errlen, "worker %u: cannot make a loop: %s", p->index, uv_strerror(rc));
        goto fail;
    }
    w->loop_open = true;
    char why[1024];
    /* A loop's own read connection is SQLite's only: on PostgreSQL reads run on the reader's
     * threads (serve.c), never on a loop. */
    if (!store_is_postgres(p->cfg->server.database) &&
        store_open(p->cfg->server.database, &w->reads, why, sizeof(why)) != STORE_OK) {
        snprintf(err, errlen, "worker %u: %s", p->index, why);
        rc = -EIO;
        goto fail;
    }
    if (writer_attach(p->writer, &w->loop, &w->writer, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "worker %u: %s", p->index, why);
        rc = -EIO;
        goto fail;
    }
    if (reader_attach(p->reader, &w->loop, w->reads, &w->reader, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "worker %u: %s", p->index, why);
        rc = -EIO;
        goto fail;
    }
    if ((rc = auth_new_peer(&w->loop, p->auth, &w->app.auth)) != 0) {
        snprintf(err, errlen, "worker %u: cannot set up password checks", p->index);
        goto fail;
    }
    w->app.cfg = p->cfg;
    w->app.reads = w->reads;
    w->app.writer = w->writer;
    w->app.reader = w->reader;
    w->app.smarthost_creds = p->smarthost;
    w->app.disk = p->disk;
    w->app.dkim = p->dkim;
    rc = conn_set_new(&w->loop, p->cfg, &w->app, p->cfg->server.transcript, &w->conns);
    if (rc != 0) {
        snprintf(err, errlen, "worker %u: cannot set up connections: %s", p->index,
                 uv_strerror(rc));
        goto fail;
    }
    if ((rc = uv_async_init(&w->loop, &w->control, on_control)) != 0) {
        snprintf(err, errlen, "worker %u: uv_async_init: %s", p->index, uv_strerror(rc));
        goto fail;
    }
    w->control.data = w;
    w->control_open = true;
    rc = listener_set_new(w->conns, p->cfg, &smtp_session_handler, &pop3_session_handler, p->tls,
                          p->listeners, true, &w->listeners, err, errlen);
    if (rc != 0)
        goto fail;
    *out = w;
    return 0;

fail:
    teardown(w);
    must(pthread_mutex_destroy(&w->mu), "pthread_mutex_destroy");
    free(w);
    return rc != 0 ? rc : -EIO;
}

int worker_start(struct worker *w)
{
    /* Signals are the first loop's business (libuv's handlers there): none lands here. */
    sigset_t all, old;
    sigfillset(&all);
    int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0)
        return rc;
    rc = pthread_create(&w->thread, NULL, worker_main, w);
    must(pthread_sigmask(SIG_SETMASK, &old, NULL), "pthread_sigmask");
    if (rc == 0)
        w->started = true;
    return rc;
}

static void ask(struct worker *w, bool stop, bool abort_now, struct tls_ctx *tls)
{
    must(pthread_mutex_lock(&w->mu), "pthread_mutex_lock");
    w->stop_asked = w->stop_asked || stop;
    w->abort_asked = w->abort_asked || abort_now;
    if (tls != NULL) {
        tls_ctx_unref(&w->new_tls); /* a reload not yet seen is superseded */
        w->new_tls = tls_ctx_ref(tls);
    }
    /* Sent under the mutex, and only while the handle is not closing (on_connections_closed).
     * A worker that is stopping already needs no more telling, except to abort, which it gets
     * as long as its connections are still open (the handle closes only after them). */
    if (w->started && !w->control_closing) {
        int rc = uv_async_send(&w->control);
        if (rc != 0)
            log_error("serve", 0, "event=async-send-failed worker=%u error=%s", w->index,
                      uv_err_name(rc));
    }
    must(pthread_mutex_unlock(&w->mu), "pthread_mutex_unlock");
}

void worker_stop(struct worker *w, bool abort_now)
{
    ask(w, true, abort_now, NULL);
}

void worker_reload(struct worker *w, struct tls_ctx *tls)
{
    if (tls != NULL)
        ask(w, false, false, tls);
}

bool worker_started(struct worker *w)
{
    return w->started;
}

bool worker_exited(struct worker *w)
{
    return atomic_load(&w->exited);
}

void worker_free(struct worker **wp)
{
    struct worker *w = *wp;
    if (w == NULL)
        return;
    *wp = NULL;
    if (w->started)
        must(pthread_join(w->thread, NULL), "pthread_join");
    else
        teardown(w);
    must(pthread_mutex_destroy(&w->mu), "pthread_mutex_destroy");
    free(w);
}
