/*
 * reader.c - see reader.h: a loop's handle for reads, inline or on a pool of reader threads.
 *
 * Inline mode is one indirect call on the loop's own connection: no lock, no list, no thread.
 *
 * Threaded mode. One mutex (the pool's) guards the pending list (submitted, not yet taken) and,
 * in every handle, the completed list (run, done not yet called) and the count of jobs in
 * flight. A thread takes one job at a time (reads are independent: there is nothing to batch,
 * and one slow read must not hold up the ones behind it while another thread is idle), runs it
 * with the mutex released on its own connection, then appends it to its handle's completed list
 * and pokes that loop with uv_async_send. The loop's async callback takes its whole completed
 * list (libuv coalesces sends, so one callback may stand for many finished jobs) and calls each
 * done with the mutex released, so a done may submit again. No lock is held while SQL runs or a
 * callback is called.
 *
 * A submit signals the condition variable only when a thread sleeps on it; a running thread
 * looks at pending again before it sleeps.
 *
 * A handle's uv_async keeps its loop alive only while jobs submitted through it are out: it is
 * unreferenced when idle (uv_unref), so a loop with nothing else to do ends as it did before
 * the reader existed, and referenced from the first submit to the last delivery. in_flight
 * changes on the loop thread only (submit, deliver), which is what makes that exact.
 *
 * Shutdown follows the writer's (storage/writer.c): an attached handle is detached on its own
 * loop once its sessions are gone and closes its uv_async when the last job it submitted has
 * been delivered; a thread sends to a handle only under the mutex, right after appending to it,
 * so never to a closed one. reader_stop on the first handle sets stopping (submit refuses from
 * then on), the threads run what is still pending and exit, reader_stop joins them and calls
 * the first loop's remaining done callbacks itself; only then is its uv_async closed.
 */
#include "storage/reader.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "storage/store.h"

/* The pool: threaded mode only. */
struct reader_pool {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* a job was queued while a thread slept, or stop began */
    pthread_t threads[READER_THREADS_MAX];
    struct store *stores[READER_THREADS_MAX]; /* thread i owns stores[i] and closes it on exit */
    unsigned nthreads;                        /* started */

    /* Guarded by mu, and so is every handle's completed list and in_flight count. */
    struct reader_job *pending_head, *pending_tail;
    unsigned sleeping; /* threads waiting on wake */
    bool stopping;
};

/* What a thread is started with. */
struct reader_thread_arg {
    struct reader_pool *pool;
    unsigned index;
};

/* One loop's handle. The first handle owns the pool and frees it. */
struct reader {
    struct reader_pool *pool; /* NULL in inline mode; owned by the first handle */
    struct store *store;      /* inline mode: the loop's connection, borrowed */
    uv_loop_t *loop;          /* borrowed */
    uv_async_t async;         /* threaded mode: owned, freed in its close callback */
    bool first;

    /* Guarded by pool->mu. */
    struct reader_job *completed_head, *completed_tail;
    size_t in_flight; /* submitted through this handle, done not yet called */

    /* Loop thread only. */
    bool stop_called;
    bool async_closed;
    struct reader_thread_arg args[READER_THREADS_MAX]; /* first handle, threaded: per thread */
};

/* A mutex or condition variable failing with default attributes means memory corruption or a
 * programming error; there is nothing sane to carry on with. */
static void must(int rc, const char *what)
{
    if (rc != 0) {
        log_error("reader", 0, "event=pthread-failed call=%s errno=%d", what, rc);
        abort();
    }
}

static void pool_lock(struct reader_pool *p)
{
    must(pthread_mutex_lock(&p->mu), "pthread_mutex_lock");
}

static void pool_unlock(struct reader_pool *p)
{
    must(pthread_mutex_unlock(&p->mu), "pthread_mutex_unlock");
}

/* Runs a job in one read transaction (store.h: store_read_group_begin). A group that cannot
 * begin still runs the job, statement by statement; one that cannot end is logged and the
 * job's own status stands, since what it read was read. */
static int run_job(struct store *st, struct reader_job *j)
{
    bool grouped = store_read_group_begin(st) == STORE_OK;
    int status = j->run(st, j);
    if (grouped && store_read_group_end(st) != STORE_OK)
        log_warn("reader", 0, "event=read-group-failed error=\"%s\"", store_errmsg(st));
    return status;
}

static void *reader_main(void *arg)
{
    struct reader_thread_arg *a = arg;
    struct reader_pool *p = a->pool;
    struct store *st = p->stores[a->index];
    pool_lock(p);
    for (;;) {
        while (p->pending_head == NULL && !p->stopping) {
            p->sleeping++;
            must(pthread_cond_wait(&p->wake, &p->mu), "pthread_cond_wait");
            p->sleeping--;
        }
        struct reader_job *j = p->pending_head;
        if (j == NULL)
            break; /* stopping, and everything submitted has been taken */
        p->pending_head = j->next;
        if (p->pending_head == NULL)
            p->pending_tail = NULL;
        pool_unlock(p);

        j->next = NULL;
        j->status = run_job(st, j);

        pool_lock(p);
        struct reader *r = j->owner;
        if (r->completed_tail != NULL)
            r->completed_tail->next = j;
        else
            r->completed_head = j;
        r->completed_tail = j;
        /* Under the mutex: the handle closes only once in_flight, which it lowers under the
         * same lock after taking its list, reaches zero, so it is open for this send. */
        int rc = uv_async_send(&r->async);
        if (rc != 0)
            log_error("reader", 0, "event=async-send-failed error=%s", uv_err_name(rc));
    }
    pool_unlock(p);
    store_close(&p->stores[a->index]);
    return NULL;
}

/* Loop thread: calls done for everything completed so far for r. The list is taken whole and
 * the lock dropped first, so done may submit; no field of r is read after a done ran. */
static void reader_deliver(struct reader *r)
{
    struct reader_pool *p = r->pool;
    pool_lock(p);
    struct reader_job *list = r->completed_head;
    r->completed_head = r->completed_tail = NULL;
    for (struct reader_job *j = list; j != NULL; j = j->next)
        r->in_flight--;
    bool idle = r->in_flight == 0 && list != NULL;
    pool_unlock(p);
    if (idle)
        uv_unref((uv_handle_t *)&r->async);
    while (list != NULL) {
        struct reader_job *j = list;
        list = j->next;
        j->next = NULL;
        j->done(j, j->status);
    }
}

static void pool_free(struct reader_pool *p)
{
    for (unsigned i = 0; i < READER_THREADS_MAX; i++)
        store_close(&p->stores[i]); /* those of threads never started */
    must(pthread_cond_destroy(&p->wake), "pthread_cond_destroy");
    must(pthread_mutex_destroy(&p->mu), "pthread_mutex_destroy");
    free(p);
}

static void reader_close_cb(uv_handle_t *handle)
{
    struct reader *r = handle->data;
    if (r->first)
        pool_free(r->pool);
    free(r);
}

/* A detached threaded handle closes once nothing it submitted is outstanding. Loop thread. */
static void maybe_close_detached(struct reader *r)
{
    if (r->first || !r->stop_called || r->async_closed)
        return;
    pool_lock(r->pool);
    bool idle = r->in_flight == 0;
    pool_unlock(r->pool);
    if (!idle)
        return;
    r->async_closed = true;
    uv_close((uv_handle_t *)&r->async, reader_close_cb);
}

static void reader_async_cb(uv_async_t *handle)
{
    struct reader *r = handle->data;
    reader_deliver(r);
    /* r is still valid: a done that stopped or detached it only began the close. */
    if (!r->first)
        maybe_close_detached(r);
}

/* Sets stopping and joins every thread, which first run every job still pending. */
static void pool_join(struct reader_pool *p)
{
    pool_lock(p);
    p->stopping = true;
    must(pthread_cond_broadcast(&p->wake), "pthread_cond_broadcast");
    pool_unlock(p);
    for (unsigned i = 0; i < p->nthreads; i++)
        must(pthread_join(p->threads[i], NULL), "pthread_join");
    p->nthreads = 0;
}

/* The pool with its connections open and its threads running; NULL with err set. */
static struct reader_pool *pool_new(struct reader *first, const char *db_path, unsigned threads,
                                    char *err, size_t errlen)
{
    struct reader_pool *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "reader: out of memory");
        return NULL;
    }
    int rc = pthread_mutex_init(&p->mu, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "reader: pthread_mutex_init: %s", strerror(rc));
        free(p);
        return NULL;
    }
    if ((rc = pthread_cond_init(&p->wake, NULL)) != 0) {
        snprintf(err, errlen, "reader: pthread_cond_init: %s", strerror(rc));
        must(pthread_mutex_destroy(&p->mu), "pthread_mutex_destroy");
        free(p);
        return NULL;
    }
    /* Opened here so a bad path is the caller's error; each then belongs to its thread. */
    for (unsigned i = 0; i < threads; i++) {
        if (store_open(db_path, &p->stores[i], err, errlen) != STORE_OK) {
            pool_free(p);
            return NULL;
        }
    }
    /* Reader threads block every signal: libuv handles them on the first loop. */
    sigset_t all, old;
    sigfillset(&all);
    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0) {
        snprintf(err, errlen, "reader: pthread_sigmask: %s", strerror(rc));
        pool_free(p);
        return NULL;
    }
    for (unsigned i = 0; i < threads && rc == 0; i++) {
        first->args[i].pool = p;
        first->args[i].index = i;
        rc = pthread_create(&p->threads[i], NULL, reader_main, &first->args[i]);
        if (rc == 0)
            p->nthreads++;
    }
    must(pthread_sigmask(SIG_SETMASK, &old, NULL), "pthread_sigmask");
    if (rc != 0) {
        snprintf(err, errlen, "reader: cannot start thread: %s", strerror(rc));
        pool_join(p);
        pool_free(p);
        return NULL;
    }
    return p;
}

int reader_start(uv_loop_t *loop, const char *db_path, unsigned threads, struct store *loop_store,
                 struct reader **out, char *err, size_t errlen)
{
    *out = NULL;
    if (loop == NULL || threads > READER_THREADS_MAX || (threads == 0 && loop_store == NULL) ||
        (threads > 0 && db_path == NULL)) {
        snprintf(err, errlen, "reader: no loop, or no store for inline reads, or %u threads",
                 threads);
        return -1;
    }
    struct reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "reader: out of memory");
        return -1;
    }
    r->loop = loop;
    r->first = true;
    if (threads == 0) {
        r->store = loop_store;
        *out = r;
        return 0;
    }
    r->pool = pool_new(r, db_path, threads, err, errlen);
    if (r->pool == NULL) {
        free(r);
        return -1;
    }
    /* After the threads exist, so its failure needs no loop turn to undo: nothing was
     * submitted yet, so no thread can send. */
    int rc = uv_async_init(loop, &r->async, reader_async_cb);
    if (rc != 0) {
        snprintf(err, errlen, "reader: uv_async_init: %s", uv_strerror(rc));
        pool_join(r->pool);
        pool_free(r->pool);
        free(r);
        return -1;
    }
    r->async.data = r;
    uv_unref((uv_handle_t *)&r->async); /* idle */
    *out = r;
    return 0;
}

int reader_attach(struct reader *first, uv_loop_t *loop, struct store *loop_store,
                  struct reader **out, char *err, size_t errlen)
{
    *out = NULL;
    if (first == NULL || !first->first || loop == NULL ||
        (first->pool == NULL && loop_store == NULL)) {
        snprintf(err, errlen, "reader: attach needs the first handle, a loop and its store");
        return -1;
    }
    struct reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "reader: out of memory");
        return -1;
    }
    r->loop = loop;
    if (first->pool == NULL) {
        r->store = loop_store;
        *out = r;
        return 0;
    }
    r->pool = first->pool;
    int rc = uv_async_init(loop, &r->async, reader_async_cb);
    if (rc != 0) {
        snprintf(err, errlen, "reader: uv_async_init: %s", uv_strerror(rc));
        free(r);
        return -1;
    }
    r->async.data = r;
    uv_unref((uv_handle_t *)&r->async); /* idle */
    *out = r;
    return 0;
}

int reader_submit(struct reader *r, struct reader_job *job, int *status_out)
{
    if (r == NULL || job == NULL || job->run == NULL) {
        *status_out = STORE_ERR;
        return READER_DONE;
    }
    if (r->pool == NULL) {
        *status_out = run_job(r->store, job);
        return READER_DONE;
    }
    struct reader_pool *p = r->pool;
    if (job->done == NULL) {
        *status_out = STORE_ERR;
        return READER_DONE;
    }
    job->next = NULL;
    job->owner = r;
    job->status = 0;
    pool_lock(p);
    if (p->stopping || r->stop_called) {
        pool_unlock(p);
        *status_out = STORE_ERR;
        return READER_DONE;
    }
    if (p->pending_tail != NULL)
        p->pending_tail->next = job;
    else
        p->pending_head = job;
    p->pending_tail = job;
    bool was_idle = r->in_flight++ == 0;
    bool wake = p->sleeping > 0;
    pool_unlock(p);
    if (was_idle)
        uv_ref((uv_handle_t *)&r->async); /* the loop must live until done is called */
    if (wake)
        must(pthread_cond_signal(&p->wake), "pthread_cond_signal");
    return READER_PENDING;
}

bool reader_is_inline(const struct reader *r)
{
    return r != NULL && r->pool == NULL;
}

void reader_detach(struct reader **rp)
{
    struct reader *r = *rp;
    if (r == NULL)
        return;
    *rp = NULL;
    if (r->first || r->stop_called)
        return;
    r->stop_called = true;
    if (r->pool == NULL) {
        free(r); /* inline: nothing can be outstanding */
        return;
    }
    maybe_close_detached(r);
}

void reader_stop(struct reader **rp)
{
    struct reader *r = *rp;
    if (r == NULL || r->stop_called)
        return;
    if (!r->first) {
        reader_detach(rp);
        return;
    }
    r->stop_called = true;
    *rp = NULL;
    if (r->pool == NULL) {
        free(r);
        return;
    }
    pool_join(r->pool);
    reader_deliver(r);
    r->async_closed = true;
    uv_close((uv_handle_t *)&r->async, reader_close_cb);
}

unsigned reader_test_threads(void)
{
    const char *v = getenv("POSTERN_TEST_READER_THREADS");
    if (v == NULL || *v == '\0')
        return 0;
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 10);
    if (*end != '\0' || n > READER_THREADS_MAX)
        return 0;
    return (unsigned)n;
}
