/*
 * writer.c - see writer.h: the writer thread and its group commit.
 *
 * Two lists, both guarded by one mutex: pending (submitted, not yet taken) and completed (run and
 * committed or failed, done not yet called). The thread takes the whole pending list at once, runs
 * it with the mutex released, appends it to completed and pokes the loop with uv_async_send. The
 * loop's async callback takes the whole completed list (uv_async coalesces sends, so one callback
 * may stand for several batches) and calls each done with the mutex released, which is what lets
 * a done callback submit again. No lock is ever held while SQL runs or a callback is called.
 *
 * Shutdown: writer_stop sets stopping (submit refuses from then on), the thread drains pending
 * and exits, writer_stop joins it and calls the remaining done callbacks itself; only then is the
 * uv_async closed, so the thread can never send to a closed handle.
 *
 * What it does not do: split a batch that fails to commit into smaller ones. A failed COMMIT is
 * retried whole a few times (a lock held by an admin command, a transient I/O error), then every
 * job of the batch gets STORE_ERR.
 */
#include "storage/writer.h"

#include <pthread.h>
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

struct writer {
    uv_loop_t *loop;     /* borrowed; touched on the loop thread only */
    uv_async_t async;    /* owned; closed by writer_stop, the struct is freed in its close cb */
    struct store *store; /* owned by the thread from pthread_create on; it closes it on exit */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* signalled when a job is queued or stopping is set */

    /* Guarded by mu. */
    struct writer_job *pending_head, *pending_tail;
    struct writer_job *completed_head, *completed_tail;
    bool stopping;
    struct writer_stats stats;

    bool stop_called; /* loop thread only: writer_stop ran (guards a second call from a done) */
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

static void writer_lock(struct writer *w)
{
    must(pthread_mutex_lock(&w->mu), "pthread_mutex_lock");
}

static void writer_unlock(struct writer *w)
{
    must(pthread_mutex_unlock(&w->mu), "pthread_mutex_unlock");
}

static void pause_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    /* EINTR only shortens the pause; the attempt count still bounds the retries. */
    (void)nanosleep(&ts, NULL);
}

/* Logs the store's last error under event, escaped (it may quote SQL or a path). */
static void log_store_error(enum log_level level, struct writer *w, const char *event, int attempt)
{
    const char *msg = store_errmsg(w->store);
    char esc[512];
    log_escape(esc, sizeof(esc), msg, strlen(msg));
    log_emit(level, "writer", 0, "event=%s attempt=%d error=%s", event, attempt, esc);
}

/*
 * One attempt at the batch: BEGIN IMMEDIATE, every job in its own savepoint, COMMIT. Returns 0
 * when committed (each job's status set) or STORE_ERR after rolling everything back.
 */
static int batch_attempt(struct writer *w, struct writer_job *batch, int attempt)
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
fail:
    log_store_error(LOG_LEVEL_WARN, w, event, attempt);
    /* store_rollback is a no-op when SQLite already rolled back (failed COMMIT, I/O error). */
    if (store_rollback(st) != STORE_OK)
        log_store_error(LOG_LEVEL_WARN, w, "rollback-failed", attempt);
    return STORE_ERR;
}

/* Runs the batch to its end: committed, or given up with STORE_ERR in every job. Counts into
 * *stats (the thread's own copy of this batch's numbers). */
static void batch_run(struct writer *w, struct writer_job *batch, struct writer_stats *stats)
{
    int64_t start_ms = clock_monotonic_ms();
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
    if (rc != 0) {
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

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    writer_lock(w);
    for (;;) {
        while (w->pending_head == NULL && !w->stopping)
            must(pthread_cond_wait(&w->wake, &w->mu), "pthread_cond_wait");
        if (w->pending_head == NULL)
            break; /* stopping, and everything submitted has been run */
        struct writer_job *batch = w->pending_head;
        struct writer_job *batch_tail = w->pending_tail;
        w->pending_head = w->pending_tail = NULL;
        writer_unlock(w);

        struct writer_stats b = {0};
        batch_run(w, batch, &b);

        writer_lock(w);
        if (w->completed_tail != NULL)
            w->completed_tail->next = batch;
        else
            w->completed_head = batch;
        w->completed_tail = batch_tail;
        w->stats.batches += b.batches;
        w->stats.jobs += b.jobs;
        w->stats.jobs_failed += b.jobs_failed;
        if (b.max_batch_jobs > w->stats.max_batch_jobs)
            w->stats.max_batch_jobs = b.max_batch_jobs;
        w->stats.commit_failures += b.commit_failures;
        w->stats.batches_failed += b.batches_failed;
        w->stats.busy_ms += b.busy_ms;
        writer_unlock(w);

        /* The only thing this thread does to the loop. The handle stays open until writer_stop
         * has joined this thread. */
        int rc = uv_async_send(&w->async);
        if (rc != 0)
            log_error("writer", 0, "event=async-send-failed error=%s", uv_err_name(rc));
        writer_lock(w);
    }
    writer_unlock(w);
    store_close(&w->store);
    return NULL;
}

/* Loop thread: calls done for everything completed so far. The list is taken whole and the lock
 * dropped first, so done may submit, and no field of w is read after a done ran (a done may call
 * writer_stop, which frees w on the next loop turn). */
static void writer_deliver(struct writer *w)
{
    writer_lock(w);
    struct writer_job *list = w->completed_head;
    w->completed_head = w->completed_tail = NULL;
    writer_unlock(w);
    while (list != NULL) {
        struct writer_job *j = list;
        list = j->next;
        j->next = NULL;
        j->done(j, j->status);
    }
}

static void writer_async_cb(uv_async_t *handle)
{
    writer_deliver(handle->data);
}

static void writer_free(struct writer *w)
{
    must(pthread_cond_destroy(&w->wake), "pthread_cond_destroy");
    must(pthread_mutex_destroy(&w->mu), "pthread_mutex_destroy");
    free(w);
}

static void writer_close_cb(uv_handle_t *handle)
{
    writer_free(handle->data);
}

/* Sets stopping and joins the thread, which first runs every job still pending. */
static void writer_join(struct writer *w)
{
    writer_lock(w);
    w->stopping = true;
    must(pthread_cond_signal(&w->wake), "pthread_cond_signal");
    writer_unlock(w);
    must(pthread_join(w->thread, NULL), "pthread_join");
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
    if (w == NULL) {
        snprintf(err, errlen, "writer: out of memory");
        return -1;
    }
    w->loop = loop;
    int rc = pthread_mutex_init(&w->mu, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "writer: pthread_mutex_init: %s", strerror(rc));
        free(w);
        return -1;
    }
    rc = pthread_cond_init(&w->wake, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "writer: pthread_cond_init: %s", strerror(rc));
        must(pthread_mutex_destroy(&w->mu), "pthread_mutex_destroy");
        free(w);
        return -1;
    }
    /* Opened here so a bad path is reported to the caller; the connection then belongs to the
     * thread (pthread_create orders this before anything the thread does). */
    if (store_open(db_path, &w->store, err, errlen) != STORE_OK) {
        writer_free(w);
        return -1;
    }
    /* The writer is what reads spool files into the database, so it readies their directory,
     * and at start, before any session runs, removes what a crash left there (storage/spool.h). */
    if (spool_dir_prepare(db_path, err, errlen) != 0) {
        writer_free(w);
        return -1;
    }

    /* The thread blocks every signal, so signals (handled by libuv on the loop) never land on
     * it and interrupt a write. */
    sigset_t all, old;
    sigfillset(&all);
    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc == 0) {
        rc = pthread_create(&w->thread, NULL, writer_main, w);
        must(pthread_sigmask(SIG_SETMASK, &old, NULL), "pthread_sigmask");
    }
    if (rc != 0) {
        snprintf(err, errlen, "writer: cannot start thread: %s", strerror(rc));
        store_close(&w->store);
        writer_free(w);
        return -1;
    }

    /* Initialised after the thread exists so its failure needs no loop turn to undo: the thread
     * cannot send before a job was submitted, and nothing can submit before we return. */
    rc = uv_async_init(loop, &w->async, writer_async_cb);
    if (rc != 0) {
        snprintf(err, errlen, "writer: uv_async_init: %s", uv_strerror(rc));
        writer_join(w);
        writer_free(w);
        return -1;
    }
    w->async.data = w;
    *out = w;
    return 0;
}

int writer_submit(struct writer *w, struct writer_job *job)
{
    if (w == NULL || job == NULL || job->run == NULL || job->done == NULL)
        return -1;
    job->next = NULL;
    job->status = 0;
    writer_lock(w);
    if (w->stopping) {
        writer_unlock(w);
        return -1;
    }
    if (w->pending_tail != NULL) {
        w->pending_tail->next = job;
    } else {
        w->pending_head = job;
        /* Only an empty list needs a wake-up: otherwise the thread is running a batch and looks
         * at pending again before it sleeps. */
        must(pthread_cond_signal(&w->wake), "pthread_cond_signal");
    }
    w->pending_tail = job;
    writer_unlock(w);
    return 0;
}

void writer_stop(struct writer **wp)
{
    struct writer *w = *wp;
    if (w == NULL || w->stop_called)
        return;
    w->stop_called = true;
    *wp = NULL;
    writer_join(w);
    writer_deliver(w);
    uv_close((uv_handle_t *)&w->async, writer_close_cb);
}

void writer_stats(struct writer *w, struct writer_stats *stats_out)
{
    writer_lock(w);
    *stats_out = w->stats;
    writer_unlock(w);
}
