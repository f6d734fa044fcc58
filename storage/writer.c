/*
 * writer.c - see writer.h: the writer thread and its group commit.
 *
 * One mutex (the core's) guards the pending list (submitted, not yet taken) and, in every
 * handle, the completed list (run and committed or failed, done not yet called) and the count of
 * jobs in flight. The thread takes the whole pending list at once, runs it with the mutex
 * released, then appends each job to the completed list of the handle it came from and pokes
 * each of those loops once with uv_async_send. A loop's async callback takes its whole completed
 * list (uv_async coalesces sends, so one callback may stand for several batches) and calls each
 * done with the mutex released, which is what lets a done callback submit again. No lock is ever
 * held while SQL runs or a callback is called.
 *
 * Wake-ups, both ways, are paid per batch, not per job: a submit signals the condition variable
 * only when the thread is asleep on it (a running thread looks at pending again before sleeping),
 * and a batch costs one uv_async_send per loop that has jobs in it.
 *
 * Shutdown: an attached handle is detached on its own loop once its sessions are gone; it closes
 * its uv_async when the last job it submitted has been delivered, and the thread sends to it only
 * under the mutex, after appending a job, so it never sends to a closed handle. writer_stop on the
 * first handle sets stopping (submit refuses from then on), the thread drains pending and exits,
 * writer_stop joins it and calls the first loop's remaining done callbacks itself; only then is
 * its uv_async closed.
 *
 * What it does not do: split a batch that fails to commit into smaller ones. A failed COMMIT is
 * retried whole a few times (a lock held by an admin command, a transient I/O error, PostgreSQL's
 * connection lost before the COMMIT and reconnected), then every job of the batch gets STORE_ERR.
 * A COMMIT whose outcome is unknown (the connection lost during it) is not retried: its jobs get
 * STORE_ERR at once, and a client that tries again may store its message twice, never lose it.
 */
#include "storage/writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "storage/spool.h"
#include "storage/store.h"

/* Attempts per batch before its jobs fail. Each BEGIN IMMEDIATE already waits up to
 * STORE_BUSY_TIMEOUT_MS for a lock, so three attempts stay well inside the 10 minutes an SMTP
 * client waits for the reply to end-of-data (RFC 5321 4.5.3.2.6). */
#define WRITER_BATCH_ATTEMPTS 3
/* Pause before attempt n+1: n times this (a full disk or an I/O hiccup may clear). */
#define WRITER_RETRY_PAUSE_MS 100
/* batch_attempt's answer when the COMMIT's outcome is unknown: not attempted again. */
#define WRITER_BATCH_UNKNOWN 1

/* The thread and what it shares with every handle. */
struct writer_core {
    struct store *store; /* owned by the thread from pthread_create on; it closes it on exit */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* signalled when a job is queued to an idle thread, or at stop */

    /* Guarded by mu, and so is every handle's completed list and in_flight count. */
    struct writer_job *pending_head, *pending_tail;
    bool sleeping; /* the thread waits on wake: only then does a submit signal it */
    bool stopping;
    struct writer_stats stats;
    _Atomic(writer_batch_fn) observer; /* writer_set_batch_observer; NULL: none */
};

/* One loop's handle (writer.h). The first handle owns the core and frees it. */
struct writer {
    struct writer_core *core; /* owned by the first handle, borrowed by attached ones */
    uv_loop_t *loop;          /* borrowed; touched on the loop thread only */
    uv_async_t async;         /* owned; closed by writer_stop / writer_detach, freed in its cb */
    bool first;               /* made by writer_start: owns the core and the thread */

    /* Guarded by core->mu. */
    struct writer_job *completed_head, *completed_tail;
    size_t in_flight; /* submitted through this handle, done not yet called */

    /* Loop thread only. */
    bool stop_called; /* writer_stop or writer_detach ran (guards a second call from a done) */
    bool async_closed;
};

/* A mutex or condition variable that fails with default attributes means memory corruption or a
 * programming error (EINVAL, EDEADLK); there is nothing sane to carry on with. */
static void must(int rc, const char *what)
{
    if (rc != 0) {
        log_error("writer", 0, "event=pthread-failed call=%s errno=%d", what, rc);
        abort();
    }
}

static void core_lock(struct writer_core *c)
{
    must(pthread_mutex_lock(&c->mu), "pthread_mutex_lock");
}

static void core_unlock(struct writer_core *c)
{
    must(pthread_mutex_unlock(&c->mu), "pthread_mutex_unlock");
}

static void pause_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    /* EINTR only shortens the pause; the attempt count still bounds the retries. */
    (void)nanosleep(&ts, NULL);
}

/* Logs the store's last error under event, escaped (it may quote SQL or a path). */
static void log_store_error(enum log_level level, struct writer_core *w, const char *event,
                            int attempt)
{
    const char *msg = store_errmsg(w->store);
    char esc[512];
    log_escape(esc, sizeof(esc), msg, strlen(msg));
    log_emit(level, "writer", 0, "event=%s attempt=%d error=%s", event, attempt, esc);
}

/*
 * One attempt at the batch: BEGIN IMMEDIATE, every job in its own savepoint, COMMIT. Returns 0
 * when committed (each job's status set), WRITER_BATCH_UNKNOWN when the COMMIT's outcome is
 * unknown (PostgreSQL's connection lost during it), or STORE_ERR after rolling everything back.
 */
static int batch_attempt(struct writer_core *w, struct writer_job *batch, int attempt)
{
    struct store *st = w->store;
    if (store_begin(st) != STORE_OK) {
        log_store_error(LOG_LEVEL_WARN, w, "begin-failed", attempt);
        return STORE_ERR;
    }
    const char *event = "commit-failed";
    for (struct writer_job *j = batch; j != NULL; j = j->next) {
        if (store_savepoint(st) != STORE_OK) {
            event = "savepoint-failed";
            goto fail;
        }
        int rc = j->run(st, j);
        if (rc < 0) {
            /* Undoes this job only: the batch goes on without it. */
            if (store_savepoint_rollback(st) != STORE_OK) {
                event = "savepoint-rollback-failed";
                goto fail;
            }
            j->status = rc;
        } else {
            if (store_savepoint_release(st) != STORE_OK) {
                event = "savepoint-release-failed";
                goto fail;
            }
            j->status = 0;
        }
    }
    if (store_commit(st) == STORE_OK)
        return 0;
    if (store_commit_unknown(st)) {
        /* The server may hold the batch already: doing it again could answer 250 for a
         * message stored twice, or fail on rows the first COMMIT wrote. Every job fails
         * instead and its client tries again (docs/postgresql.md: at-least-once here). */
        log_store_error(LOG_LEVEL_WARN, w, "commit-unknown", attempt);
        return WRITER_BATCH_UNKNOWN;
    }
fail:
    log_store_error(LOG_LEVEL_WARN, w, event, attempt);
    /* store_rollback is a no-op when SQLite already rolled back (failed COMMIT, I/O error). */
    if (store_rollback(st) != STORE_OK)
        log_store_error(LOG_LEVEL_WARN, w, "rollback-failed", attempt);
    return STORE_ERR;
}

/* Runs the batch to its end: committed, or given up with STORE_ERR in every job. Counts into
 * *stats (the thread's own copy of this batch's numbers). */
static void batch_run(struct writer_core *w, struct writer_job *batch, struct writer_stats *stats)
{
    int64_t start_ms = clock_monotonic_ms();
    uint64_t start_ns = clock_monotonic_ns();
    uint64_t n = 0;
    for (struct writer_job *j = batch; j != NULL; j = j->next)
        n++;

    int attempt = 1;
    int rc = STORE_ERR;
    for (; attempt <= WRITER_BATCH_ATTEMPTS; attempt++) {
        rc = batch_attempt(w, batch, attempt);
        if (rc == 0)
            break;
        stats->commit_failures++;
        if (rc == WRITER_BATCH_UNKNOWN)
            break;
        if (attempt < WRITER_BATCH_ATTEMPTS)
            pause_ms((int64_t)attempt * WRITER_RETRY_PAUSE_MS);
    }
    uint64_t failed = 0;
    for (struct writer_job *j = batch; j != NULL; j = j->next) {
        if (rc != 0)
            j->status = STORE_ERR;
        else if (j->status < 0)
            failed++;
    }
    int64_t ms = clock_monotonic_ms() - start_ms;
    writer_batch_fn observe = atomic_load_explicit(&w->observer, memory_order_relaxed);
    if (observe != NULL)
        observe(n, clock_monotonic_ns() - start_ns);
    if (rc != 0) {
        if (attempt > WRITER_BATCH_ATTEMPTS)
            attempt = WRITER_BATCH_ATTEMPTS;
        stats->batches_failed++;
        log_error("writer", 0, "event=batch-failed jobs=%llu attempts=%d ms=%lld",
                  (unsigned long long)n, attempt, (long long)ms);
    }
    stats->batches = 1;
    stats->jobs = n;
    stats->jobs_failed = failed;
    stats->max_batch_jobs = n;
    stats->busy_ms = (uint64_t)(ms > 0 ? ms : 0);
    log_debug("writer", 0, "event=batch jobs=%llu failed=%llu attempts=%d ms=%lld",
              (unsigned long long)n, (unsigned long long)failed, attempt, (long long)ms);
}

/*
 * Hands a finished batch to the handles its jobs came from, keeping each handle's order, and
 * wakes each of those loops once. Called with c->mu held: a handle is only closed once its
 * in_flight count, which it lowers under the same lock after taking its list, reaches zero, so
 * it cannot be closed between our append and our send.
 */
static void batch_hand_back(struct writer_job *batch)
{
    /* Handles touched by this batch, in order of first appearance; a batch rarely spans more
     * loops than there are workers, and a longer tail just means a second pass below. */
    struct writer *touched[64];
    size_t ntouched = 0;
    bool overflow = false;
    for (struct writer_job *j = batch, *next; j != NULL; j = next) {
        next = j->next;
        j->next = NULL;
        struct writer *w = j->owner;
        if (w->completed_tail != NULL)
            w->completed_tail->next = j;
        else
            w->completed_head = j;
        w->completed_tail = j;
        bool seen = false;
        for (size_t i = 0; i < ntouched && !seen; i++)
            seen = touched[i] == w;
        if (!seen) {
            if (ntouched < sizeof(touched) / sizeof(touched[0]))
                touched[ntouched++] = w;
            else
                overflow = true;
        }
        if (overflow) {
            int rc = uv_async_send(&w->async); /* coalesced by libuv: an extra send is harmless */
            if (rc != 0)
                log_error("writer", 0, "event=async-send-failed error=%s", uv_err_name(rc));
        }
    }
    for (size_t i = 0; i < ntouched; i++) {
        int rc = uv_async_send(&touched[i]->async);
        if (rc != 0)
            log_error("writer", 0, "event=async-send-failed error=%s", uv_err_name(rc));
    }
}

static void *writer_main(void *arg)
{
    struct writer_core *c = arg;
    core_lock(c);
    for (;;) {
        while (c->pending_head == NULL && !c->stopping) {
            c->sleeping = true;
            must(pthread_cond_wait(&c->wake, &c->mu), "pthread_cond_wait");
            c->sleeping = false;
        }
        if (c->pending_head == NULL)
            break; /* stopping, and everything submitted has been run */
        struct writer_job *batch = c->pending_head;
        c->pending_head = c->pending_tail = NULL;
        core_unlock(c);

        struct writer_stats b = {0};
        batch_run(c, batch, &b);

        core_lock(c);
        c->stats.batches += b.batches;
        c->stats.jobs += b.jobs;
        c->stats.jobs_failed += b.jobs_failed;
        if (b.max_batch_jobs > c->stats.max_batch_jobs)
            c->stats.max_batch_jobs = b.max_batch_jobs;
        c->stats.commit_failures += b.commit_failures;
        c->stats.batches_failed += b.batches_failed;
        c->stats.busy_ms += b.busy_ms;
        /* The only thing this thread does to a loop. A handle stays open until its jobs are
         * delivered (attached) or until writer_stop has joined this thread (the first). */
        batch_hand_back(batch);
    }
    core_unlock(c);
    store_close(&c->store);
    return NULL;
}

/* Loop thread: calls done for everything completed so far for this handle. The list is taken
 * whole and the lock dropped first, so done may submit, and no field of w is read after a done
 * ran (a done may call writer_stop or writer_detach, which free w on a later loop turn). */
static void writer_deliver(struct writer *w)
{
    struct writer_core *c = w->core;
    core_lock(c);
    struct writer_job *list = w->completed_head;
    w->completed_head = w->completed_tail = NULL;
    for (struct writer_job *j = list; j != NULL; j = j->next)
        w->in_flight--;
    core_unlock(c);
    while (list != NULL) {
        struct writer_job *j = list;
        list = j->next;
        j->next = NULL;
        j->done(j, j->status);
    }
}

static void core_free(struct writer_core *c)
{
    must(pthread_cond_destroy(&c->wake), "pthread_cond_destroy");
    must(pthread_mutex_destroy(&c->mu), "pthread_mutex_destroy");
    free(c);
}

static void writer_close_cb(uv_handle_t *handle)
{
    struct writer *w = handle->data;
    if (w->first)
        core_free(w->core);
    free(w);
}

/* A detached handle closes once nothing it submitted is outstanding. Loop thread. */
static void maybe_close_detached(struct writer *w)
{
    if (w->first || !w->stop_called || w->async_closed)
        return;
    core_lock(w->core);
    bool idle = w->in_flight == 0;
    core_unlock(w->core);
    if (!idle)
        return;
    w->async_closed = true;
    uv_close((uv_handle_t *)&w->async, writer_close_cb);
}

static void writer_async_cb(uv_async_t *handle)
{
    struct writer *w = handle->data;
    writer_deliver(w);
    /* w is still valid: a done that stopped or detached it only started the close, and the
     * memory goes in the close callback on a later loop turn. */
    if (!w->first)
        maybe_close_detached(w);
}

/* Sets stopping and joins the thread, which first runs every job still pending. */
static void writer_join(struct writer_core *c)
{
    core_lock(c);
    c->stopping = true;
    must(pthread_cond_signal(&c->wake), "pthread_cond_signal");
    core_unlock(c);
    must(pthread_join(c->thread, NULL), "pthread_join");
}

int writer_start(uv_loop_t *loop, const char *db_path, struct writer **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    if (loop == NULL || db_path == NULL) {
        snprintf(err, errlen, "writer: no loop or database path");
        return -1;
    }
    struct writer *w = calloc(1, sizeof(*w));
    struct writer_core *c = calloc(1, sizeof(*c));
    if (w == NULL || c == NULL) {
        free(w);
        free(c);
        snprintf(err, errlen, "writer: out of memory");
        return -1;
    }
    w->core = c;
    w->loop = loop;
    w->first = true;
    int rc = pthread_mutex_init(&c->mu, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "writer: pthread_mutex_init: %s", strerror(rc));
        free(c);
        free(w);
        return -1;
    }
    rc = pthread_cond_init(&c->wake, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "writer: pthread_cond_init: %s", strerror(rc));
        must(pthread_mutex_destroy(&c->mu), "pthread_mutex_destroy");
        free(c);
        free(w);
        return -1;
    }
    /* Opened here so a bad path is reported to the caller; the connection then belongs to the
     * thread (pthread_create orders this before anything the thread does). */
    if (store_open(db_path, &c->store, err, errlen) != STORE_OK) {
        core_free(c);
        free(w);
        return -1;
    }
    /* The writer is what reads spool files into the database, so it readies their directory,
     * and at start, before any session runs, removes what a crash left there (storage/spool.h). */
    if (spool_dir_prepare(db_path, err, errlen) != 0) {
        store_close(&c->store);
        core_free(c);
        free(w);
        return -1;
    }

    /* The thread blocks every signal, so signals (handled by libuv on the loop) never land on
     * it and interrupt a write. */
    sigset_t all, old;
    sigfillset(&all);
    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc == 0) {
        rc = pthread_create(&c->thread, NULL, writer_main, c);
        must(pthread_sigmask(SIG_SETMASK, &old, NULL), "pthread_sigmask");
    }
    if (rc != 0) {
        snprintf(err, errlen, "writer: cannot start thread: %s", strerror(rc));
        store_close(&c->store);
        core_free(c);
        free(w);
        return -1;
    }

    /* Initialised after the thread exists so its failure needs no loop turn to undo: the thread
     * cannot send before a job was submitted, and nothing can submit before we return. */
    rc = uv_async_init(loop, &w->async, writer_async_cb);
    if (rc != 0) {
        snprintf(err, errlen, "writer: uv_async_init: %s", uv_strerror(rc));
        writer_join(c);
        core_free(c);
        free(w);
        return -1;
    }
    w->async.data = w;
    *out = w;
    return 0;
}

int writer_attach(struct writer *first, uv_loop_t *loop, struct writer **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    if (first == NULL || !first->first || loop == NULL) {
        snprintf(err, errlen, "writer: attach needs the first handle and a loop");
        return -1;
    }
    struct writer *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "writer: out of memory");
        return -1;
    }
    w->core = first->core;
    w->loop = loop;
    int rc = uv_async_init(loop, &w->async, writer_async_cb);
    if (rc != 0) {
        snprintf(err, errlen, "writer: uv_async_init: %s", uv_strerror(rc));
        free(w);
        return -1;
    }
    w->async.data = w;
    *out = w;
    return 0;
}

void writer_detach(struct writer **wp)
{
    struct writer *w = *wp;
    if (w == NULL)
        return;
    *wp = NULL;
    if (w->first || w->stop_called)
        return;
    w->stop_called = true;
    maybe_close_detached(w);
}

int writer_submit(struct writer *w, struct writer_job *job)
{
    if (w == NULL || job == NULL || job->run == NULL || job->done == NULL)
        return -1;
    struct writer_core *c = w->core;
    job->next = NULL;
    job->owner = w;
    job->status = 0;
    core_lock(c);
    if (c->stopping) {
        core_unlock(c);
        return -1;
    }
    if (c->pending_tail != NULL)
        c->pending_tail->next = job;
    else
        c->pending_head = job;
    c->pending_tail = job;
    w->in_flight++;
    /* Only a sleeping thread needs a wake-up: a running one looks at pending again before it
     * sleeps. Signalling a busy thread would cost a futex call per job for nothing. */
    bool wake = c->sleeping;
    c->sleeping = false; /* one signal is enough for every job queued before it wakes */
    core_unlock(c);
    if (wake)
        must(pthread_cond_signal(&c->wake), "pthread_cond_signal");
    return 0;
}

void writer_stop(struct writer **wp)
{
    struct writer *w = *wp;
    if (w == NULL || w->stop_called)
        return;
    if (!w->first) {
        writer_detach(wp);
        return;
    }
    w->stop_called = true;
    *wp = NULL;
    writer_join(w->core);
    writer_deliver(w);
    w->async_closed = true;
    uv_close((uv_handle_t *)&w->async, writer_close_cb);
}

void writer_stats(struct writer *w, struct writer_stats *stats_out)
{
    core_lock(w->core);
    *stats_out = w->core->stats;
    core_unlock(w->core);
}

void writer_set_batch_observer(struct writer *w, writer_batch_fn fn)
{
    if (w != NULL)
        atomic_store_explicit(&w->core->observer, fn, memory_order_relaxed);
}
