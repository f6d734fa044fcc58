/*
 * test_writer.c - the writer thread against a real database file in a temporary directory:
 * group commit under several producer threads, a failing job inside a batch, data visible to
 * another connection when done runs, shutdown with jobs queued, submit after stop, a submit from
 * a done callback, a batch whose COMMIT fails, and two loops sharing one batch (each job's done
 * on the loop it was submitted from).
 *
 * Jobs insert into a scratch table through store_exec_for_tests(); the checks read the database
 * through a connection of their own. The tests run on SQLite, then on PostgreSQL when there is a
 * server (store_fixture.h). A gate job (its run blocks until the test opens it) holds the
 * writer thread so that the jobs submitted meanwhile are guaranteed to form one batch. Every loop
 * run is bounded by a watchdog timer, every wait by a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "common/log.h"
#include "common/util.h"
#include "storage/spool.h"
#include "storage/store.h"
#include "storage/writer.h"
#include "tests/unit/store_fixture.h"

#define WATCHDOG_MS     60000
#define GATE_TIMEOUT_MS 30000

struct fixture {
    char dir[64];
    char db_path[1024];
    uv_loop_t loop;
    uv_timer_t watchdog;
    bool timed_out;
    struct writer *w;
    struct writer *w_raw; /* the same writer, kept after writer_stop NULLs w (valid until close) */
    int done_count;       /* done callbacks so far, all jobs of the test */
    bool check_on_disk;   /* done looks the job's row up through its own connection */
};

struct test_job {
    struct writer_job job;
    struct fixture *fx;
    int key;      /* row key inserted into scratch; 0 inserts nothing */
    int run_rc;   /* what run returns after inserting */
    bool orphan;  /* also insert a row breaking a deferred foreign key: COMMIT fails */
    int producer; /* many-producers test: which thread, and the order within it */
    int seq;
    int done_calls;
    int done_status;
    int on_disk; /* -1 not checked; else 1/0: the row was/was not readable when done ran */
    struct test_job *next_in_chain; /* submitted from this job's done */
    int chain_submit_rc;
};

/* ---- the database ---- */

static int row_count(const char *path, const char *sql)
{
    return (int)store_test_query_i64(path, sql);
}

static int scratch_has(const char *path, int key)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM scratch WHERE k = %d AND v = 'job-%d'", key,
             key);
    return row_count(path, sql);
}

/* ---- jobs ---- */

static int insert_run(struct store *st, struct writer_job *job)
{
    struct test_job *t = container_of(job, struct test_job, job);
    char sql[128];
    if (t->key != 0) {
        snprintf(sql, sizeof(sql), "INSERT INTO scratch(k, v) VALUES (%d, 'job-%d')", t->key,
                 t->key);
        if (store_exec_for_tests(st, sql) != STORE_OK)
            return STORE_ERR;
    }
    if (t->orphan) {
        snprintf(sql, sizeof(sql), "INSERT INTO orphans(id, parent) VALUES (%d, 999999)", t->key);
        if (store_exec_for_tests(st, sql) != STORE_OK)
            return STORE_ERR;
    }
    return t->run_rc;
}

static void insert_done(struct writer_job *job, int status)
{
    struct test_job *t = container_of(job, struct test_job, job);
    struct fixture *fx = t->fx;
    t->done_calls++;
    t->done_status = status;
    fx->done_count++;
    if (fx->check_on_disk && t->key != 0)
        t->on_disk = scratch_has(fx->db_path, t->key);
    if (t->next_in_chain != NULL)
        t->chain_submit_rc = writer_submit(fx->w_raw, &t->next_in_chain->job);
}

static void job_init(struct test_job *t, struct fixture *fx, int key, int run_rc)
{
    memset(t, 0, sizeof(*t));
    t->job.run = insert_run;
    t->job.done = insert_done;
    t->fx = fx;
    t->key = key;
    t->run_rc = run_rc;
    t->on_disk = -1;
    t->chain_submit_rc = 1; /* neither 0 nor -1: "not tried" */
}

/* A job whose run blocks the writer thread until the test opens it. */
struct gate {
    struct test_job t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered;
    bool open;
};

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int gate_run(struct store *st, struct writer_job *job)
{
    struct gate *g = container_of(job, struct gate, t.job);
    struct timespec deadline;
    deadline_in(&deadline, GATE_TIMEOUT_MS);
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open && rc == 0)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &deadline);
    pthread_mutex_unlock(&g->mu);
    return rc == 0 ? 0 : -99; /* -99: the test never opened the gate */
}

static void gate_init(struct gate *g, struct fixture *fx)
{
    job_init(&g->t, fx, 0, 0);
    g->t.job.run = gate_run;
    assert_int_equal(pthread_mutex_init(&g->mu, NULL), 0);
    assert_int_equal(pthread_cond_init(&g->cv, NULL), 0);
    g->entered = g->open = false;
}

static void gate_destroy(struct gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

/* Submits the gate and returns once the writer thread is inside its run. */
static void gate_submit_and_wait(struct gate *g, struct writer *w)
{
    assert_int_equal(writer_submit(w, &g->t.job), 0);
    struct timespec deadline;
    deadline_in(&deadline, GATE_TIMEOUT_MS);
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    while (!g->entered && rc == 0)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &deadline);
    bool entered = g->entered;
    pthread_mutex_unlock(&g->mu);
    assert_true(entered);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* ---- fixture ---- */

static void watchdog_cb(uv_timer_t *timer)
{
    struct fixture *fx = timer->data;
    fx->timed_out = true;
}

/* Runs the loop until *count reaches target, at most WATCHDOG_MS. */
static void run_until(struct fixture *fx, const int *count, int target)
{
    fx->timed_out = false;
    assert_int_equal(uv_timer_start(&fx->watchdog, watchdog_cb, WATCHDOG_MS, 0), 0);
    while (*count < target && !fx->timed_out)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(uv_timer_stop(&fx->watchdog), 0);
    assert_false(fx->timed_out);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/postern-writer-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    store_test_db_new(fx->db_path, sizeof(fx->db_path), fx->dir, "db.sqlite");

    struct store *st = NULL;
    char err[256];
    assert_int_equal(store_open(fx->db_path, &st, err, sizeof(err)), STORE_OK);
    assert_int_equal(
        store_exec_for_tests(st, "CREATE TABLE scratch (k INTEGER PRIMARY KEY, v TEXT NOT NULL);"
                                 "CREATE TABLE parents (id INTEGER PRIMARY KEY);"
                                 "CREATE TABLE orphans (id INTEGER PRIMARY KEY,"
                                 " parent INTEGER NOT NULL REFERENCES parents(id)"
                                 " DEFERRABLE INITIALLY DEFERRED);"),
        STORE_OK);
    store_close(&st);

    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(uv_timer_init(&fx->loop, &fx->watchdog), 0);
    fx->watchdog.data = fx;
    assert_int_equal(writer_start(&fx->loop, fx->db_path, &fx->w, err, sizeof(err)), 0);
    assert_non_null(fx->w);
    fx->w_raw = fx->w;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    writer_stop(&fx->w);
    assert_null(fx->w);
    uv_close((uv_handle_t *)&fx->watchdog, NULL);
    /* Finishes both closes (the writer's async frees the writer); nothing else is active. */
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    store_test_db_remove_files(fx->db_path);
    char spool[1100];
    assert_int_equal(spool_dir_path(fx->db_path, spool, sizeof(spool)), 0);
    assert_int_equal(rmdir(spool), 0); /* writer_start made it; no spool file is left in it */
    store_test_db_drop();
    assert_int_equal(rmdir(fx->dir), 0);
    free(fx);
    return 0;
}

/* ---- (1) many producers: every done once, FIFO per producer, batches really group ---- */

#define PRODUCERS         4
#define JOBS_PER_PRODUCER 5000
#define JOBS_TOTAL        (PRODUCERS * JOBS_PER_PRODUCER)

struct producer {
    pthread_t thread;
    struct writer *w;
    struct test_job *jobs; /* this producer's slice */
    atomic_int submit_failures;
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < JOBS_PER_PRODUCER; i++) {
        if (writer_submit(p->w, &p->jobs[i].job) != 0)
            atomic_fetch_add(&p->submit_failures, 1);
    }
    return NULL;
}

static int last_seq[PRODUCERS];
static int order_errors;

static void ordered_done(struct writer_job *job, int status)
{
    struct test_job *t = container_of(job, struct test_job, job);
    if (t->seq <= last_seq[t->producer])
        order_errors++;
    last_seq[t->producer] = t->seq;
    insert_done(job, status);
}

static void test_many_producers_group_commit(void **state)
{
    struct fixture *fx = *state;
    struct test_job *jobs = calloc(JOBS_TOTAL, sizeof(*jobs));
    assert_non_null(jobs);
    struct producer producers[PRODUCERS];
    order_errors = 0;
    for (int p = 0; p < PRODUCERS; p++) {
        last_seq[p] = -1;
        for (int i = 0; i < JOBS_PER_PRODUCER; i++) {
            struct test_job *t = &jobs[p * JOBS_PER_PRODUCER + i];
            job_init(t, fx, p * JOBS_PER_PRODUCER + i + 1, 0);
            t->job.done = ordered_done;
            t->producer = p;
            t->seq = i;
        }
        producers[p].w = fx->w;
        producers[p].jobs = &jobs[p * JOBS_PER_PRODUCER];
        atomic_init(&producers[p].submit_failures, 0);
    }
    for (int p = 0; p < PRODUCERS; p++)
        assert_int_equal(pthread_create(&producers[p].thread, NULL, producer_main, &producers[p]),
                         0);
    run_until(fx, &fx->done_count, JOBS_TOTAL);
    for (int p = 0; p < PRODUCERS; p++) {
        assert_int_equal(pthread_join(producers[p].thread, NULL), 0);
        assert_int_equal(atomic_load(&producers[p].submit_failures), 0);
    }

    assert_int_equal(fx->done_count, JOBS_TOTAL);
    assert_int_equal(order_errors, 0);
    for (int i = 0; i < JOBS_TOTAL; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].done_status, 0);
    }
    assert_int_equal(row_count(fx->db_path, "SELECT count(*) FROM scratch"), JOBS_TOTAL);

    struct writer_stats s;
    writer_stats(fx->w, &s);
    print_message("writer: %llu jobs in %llu batches, largest %llu, %llu ms in batches\n",
                  (unsigned long long)s.jobs, (unsigned long long)s.batches,
                  (unsigned long long)s.max_batch_jobs, (unsigned long long)s.busy_ms);
    assert_int_equal(s.jobs, JOBS_TOTAL);
    assert_int_equal(s.jobs_failed, 0);
    assert_int_equal(s.commit_failures, 0);
    assert_int_equal(s.batches_failed, 0);
    assert_true(s.batches >= 1);
    assert_true(s.batches < JOBS_TOTAL / 2);
    assert_true(s.max_batch_jobs > 1);
    free(jobs);
}

/* ---- (2) a failing job inside a batch; (3) data readable from done ---- */

#define BATCH_MAX 4

static const struct {
    const char *name;
    int n;
    int run_rc[BATCH_MAX];
} batch_cases[] = {
    {"middle fails", 3, {0, -7, 0}},
    {"first fails", 3, {-2, 0, 0}},
    {"last fails", 3, {0, 0, STORE_ERR}},
    {"two fail", 4, {-3, 0, -9, 0}},
    {"all fail", 2, {-5, -6}},
    {"none fails", 4, {0, 0, 0, 0}},
};

static void test_failing_job_in_batch(void **state)
{
    struct fixture *fx = *state;
    fx->check_on_disk = true;
    log_set_level(LOG_LEVEL_DEBUG); /* exercises the per-batch line */
    int key = 100;
    int expected_done = 0;
    struct writer_stats before, after;
    for (size_t c = 0; c < sizeof(batch_cases) / sizeof(batch_cases[0]); c++) {
        print_message("case: %s\n", batch_cases[c].name);
        writer_stats(fx->w, &before);
        struct gate g;
        gate_init(&g, fx);
        gate_submit_and_wait(&g, fx->w);
        struct test_job jobs[BATCH_MAX];
        int n = batch_cases[c].n;
        for (int i = 0; i < n; i++) {
            job_init(&jobs[i], fx, ++key, batch_cases[c].run_rc[i]);
            assert_int_equal(writer_submit(fx->w, &jobs[i].job), 0);
        }
        gate_open(&g);
        expected_done += n + 1;
        run_until(fx, &fx->done_count, expected_done);
        gate_destroy(&g);

        assert_int_equal(g.t.done_calls, 1);
        assert_int_equal(g.t.done_status, 0);
        for (int i = 0; i < n; i++) {
            int want = batch_cases[c].run_rc[i];
            assert_int_equal(jobs[i].done_calls, 1);
            assert_int_equal(jobs[i].done_status, want);
            /* (3): readable through another connection when done ran, exactly when it succeeded */
            assert_int_equal(jobs[i].on_disk, want == 0 ? 1 : 0);
            assert_int_equal(scratch_has(fx->db_path, jobs[i].key), want == 0 ? 1 : 0);
        }
        writer_stats(fx->w, &after);
        /* The gate alone, then the case's jobs as one batch. */
        assert_int_equal(after.batches - before.batches, 2);
        assert_int_equal(after.jobs - before.jobs, (uint64_t)n + 1);
        assert_true(after.max_batch_jobs >= (uint64_t)n);
        assert_int_equal(after.commit_failures, 0);
    }
    log_set_level(LOG_LEVEL_INFO);
}

/* (3) also for jobs that do not share a batch: one at a time, each checked in its done. */
static void test_durable_when_done(void **state)
{
    struct fixture *fx = *state;
    fx->check_on_disk = true;
    struct test_job jobs[5];
    for (int i = 0; i < 5; i++) {
        job_init(&jobs[i], fx, 500 + i, 0);
        assert_int_equal(writer_submit(fx->w, &jobs[i].job), 0);
        run_until(fx, &fx->done_count, i + 1);
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].done_status, 0);
        assert_int_equal(jobs[i].on_disk, 1);
    }
}

/* ---- (4) stop with jobs queued; (5) submit after stop ---- */

struct opener {
    pthread_t thread;
    struct gate *g;
};

static void *opener_main(void *arg)
{
    struct opener *o = arg;
    /* Long enough that writer_stop is already waiting in pthread_join; if the machine is slow the
     * test still holds, it only covers less. */
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
    nanosleep(&pause, NULL);
    gate_open(o->g);
    return NULL;
}

#define QUEUED_AT_STOP 100

static void test_stop_delivers_queued(void **state)
{
    struct fixture *fx = *state;
    struct gate g;
    gate_init(&g, fx);
    gate_submit_and_wait(&g, fx->w);
    struct test_job jobs[QUEUED_AT_STOP];
    for (int i = 0; i < QUEUED_AT_STOP; i++) {
        job_init(&jobs[i], fx, 1000 + i, i == 50 ? -4 : 0);
        assert_int_equal(writer_submit(fx->w, &jobs[i].job), 0);
    }
    struct opener o = {.g = &g};
    assert_int_equal(pthread_create(&o.thread, NULL, opener_main, &o), 0);
    /* The loop has not run: every done below is delivered by writer_stop itself. */
    assert_int_equal(fx->done_count, 0);
    writer_stop(&fx->w);
    assert_null(fx->w);
    assert_int_equal(pthread_join(o.thread, NULL), 0);
    gate_destroy(&g);

    assert_int_equal(fx->done_count, QUEUED_AT_STOP + 1);
    assert_int_equal(g.t.done_calls, 1);
    assert_int_equal(g.t.done_status, 0);
    for (int i = 0; i < QUEUED_AT_STOP; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].done_status, i == 50 ? -4 : 0);
    }
    assert_int_equal(row_count(fx->db_path, "SELECT count(*) FROM scratch"), QUEUED_AT_STOP - 1);
    assert_int_equal(scratch_has(fx->db_path, 1050), 0);
    /* A second stop is a no-op. */
    writer_stop(&fx->w);
}

static void test_submit_after_stop_fails(void **state)
{
    struct fixture *fx = *state;
    struct test_job bad;
    job_init(&bad, fx, 1, 0);
    bad.job.run = NULL;
    assert_int_equal(writer_submit(fx->w, &bad.job), -1);
    assert_int_equal(writer_submit(fx->w, NULL), -1);

    /* A's done runs inside writer_stop, after stop began, and tries to submit B. */
    struct test_job a, b;
    job_init(&a, fx, 2000, 0);
    job_init(&b, fx, 2001, 0);
    a.next_in_chain = &b;
    assert_int_equal(writer_submit(fx->w, &a.job), 0);
    writer_stop(&fx->w);
    assert_int_equal(a.done_calls, 1);
    assert_int_equal(a.done_status, 0);
    assert_int_equal(a.chain_submit_rc, -1);
    assert_int_equal(b.done_calls, 0);
    assert_int_equal(scratch_has(fx->db_path, 2001), 0);
    assert_int_equal(writer_submit(fx->w, &b.job), -1); /* w is NULL now */
    /* Let the close finish before the loop runs again in teardown: no callback may appear. */
    assert_int_equal(uv_run(&fx->loop, UV_RUN_NOWAIT),
                     0); /* the idle watchdog keeps nothing alive */
    assert_int_equal(b.done_calls, 0);
    assert_int_equal(fx->done_count, 1);
}

/* ---- (6) a job submitted from a done callback ---- */

#define CHAIN_LEN 10

static void test_submit_from_done(void **state)
{
    struct fixture *fx = *state;
    fx->check_on_disk = true;
    struct test_job jobs[CHAIN_LEN];
    for (int i = 0; i < CHAIN_LEN; i++)
        job_init(&jobs[i], fx, 3000 + i, 0);
    for (int i = 0; i + 1 < CHAIN_LEN; i++)
        jobs[i].next_in_chain = &jobs[i + 1];
    assert_int_equal(writer_submit(fx->w, &jobs[0].job), 0);
    run_until(fx, &fx->done_count, CHAIN_LEN);
    for (int i = 0; i < CHAIN_LEN; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].done_status, 0);
        assert_int_equal(jobs[i].on_disk, 1);
        if (i + 1 < CHAIN_LEN)
            assert_int_equal(jobs[i].chain_submit_rc, 0);
    }
    /* Resubmitting the same job struct from its own done is allowed too. */
    struct test_job again;
    job_init(&again, fx, 0, 0);
    again.next_in_chain = &again;
    assert_int_equal(writer_submit(fx->w, &again.job), 0);
    run_until(fx, &again.done_calls, 3);
    again.next_in_chain = NULL;
    /* The third submission may still be in flight; let it finish. */
    run_until(fx, &again.done_calls, 4);
    assert_int_equal(again.done_calls, 4);
    assert_int_equal(again.done_status, 0);
}

/* ---- a COMMIT that fails: every job of the batch gets STORE_ERR, then the writer recovers ---- */

static void test_commit_failure_fails_batch(void **state)
{
    struct fixture *fx = *state;
    struct gate g;
    gate_init(&g, fx);
    gate_submit_and_wait(&g, fx->w);
    struct test_job jobs[3];
    for (int i = 0; i < 3; i++) {
        job_init(&jobs[i], fx, 4000 + i, 0);
        assert_int_equal(writer_submit(fx->w, &jobs[i].job), 0);
    }
    /* Releases its savepoint fine; the deferred foreign key only fails at COMMIT. */
    jobs[1].orphan = true;
    gate_open(&g);
    run_until(fx, &fx->done_count, 4);
    gate_destroy(&g);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].done_status, STORE_ERR);
        assert_int_equal(scratch_has(fx->db_path, jobs[i].key), 0);
    }
    assert_int_equal(row_count(fx->db_path, "SELECT count(*) FROM orphans"), 0);
    struct writer_stats s;
    writer_stats(fx->w, &s);
    assert_int_equal(s.commit_failures, 3);
    assert_int_equal(s.batches_failed, 1);
    assert_int_equal(s.jobs, 4);

    struct test_job after;
    job_init(&after, fx, 4100, 0);
    assert_int_equal(writer_submit(fx->w, &after.job), 0);
    run_until(fx, &fx->done_count, 5);
    assert_int_equal(after.done_status, 0);
    assert_int_equal(scratch_has(fx->db_path, 4100), 1);
}

/* A job whose insert arms a deferred constraint trigger that terminates the writer's own server
 * session while the COMMIT runs: the connection is lost during COMMIT. */
static int doomed_run(struct store *st, struct writer_job *job)
{
    struct test_job *t = container_of(job, struct test_job, job);
    char sql[128];
    snprintf(sql, sizeof(sql), "INSERT INTO scratch(k, v) VALUES (%d, 'job-%d')", t->key, t->key);
    if (store_exec_for_tests(st, sql) != STORE_OK)
        return STORE_ERR;
    return store_exec_for_tests(st, "INSERT INTO doomed(id) VALUES (1)");
}

/* A COMMIT whose connection is lost on the way has an unknown outcome: every job of the batch
 * fails, and the batch is not run again (which could store it twice and answer success); the
 * next batch reconnects. PostgreSQL only: SQLite's COMMIT has no connection to lose. */
static void test_commit_lost_not_retried(void **state)
{
    struct fixture *fx = *state;
    if (!store_test_on_pg) {
        print_message("[  SKIPPED ] on SQLite: no connection to lose during COMMIT\n");
        skip();
    }
    struct store *st = open_ok(fx->db_path);
    assert_int_equal(store_exec_for_tests(
                         st, "CREATE TABLE doomed (id INTEGER);"
                             " CREATE FUNCTION doom() RETURNS trigger LANGUAGE plpgsql AS"
                             " 'BEGIN PERFORM pg_terminate_backend(pg_backend_pid());"
                             " PERFORM pg_sleep(5); RETURN NULL; END';"
                             " CREATE CONSTRAINT TRIGGER doom AFTER INSERT ON doomed"
                             " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION doom()"),
                     STORE_OK);
    store_close(&st);

    struct gate g;
    gate_init(&g, fx);
    gate_submit_and_wait(&g, fx->w);
    struct test_job jobs[2];
    job_init(&jobs[0], fx, 4200, 0);
    job_init(&jobs[1], fx, 4201, 0);
    jobs[1].job.run = doomed_run;
    for (int i = 0; i < 2; i++)
        assert_int_equal(writer_submit(fx->w, &jobs[i].job), 0);
    gate_open(&g);
    run_until(fx, &fx->done_count, 3);
    gate_destroy(&g);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].done_status, STORE_ERR);
    }
    struct writer_stats s;
    writer_stats(fx->w, &s);
    assert_int_equal(s.commit_failures, 1);
    assert_int_equal(s.batches_failed, 1);
    /* The session died before its COMMIT finished: here the server rolled back. */
    assert_int_equal(scratch_has(fx->db_path, 4200), 0);

    struct test_job after;
    job_init(&after, fx, 4300, 0);
    assert_int_equal(writer_submit(fx->w, &after.job), 0);
    run_until(fx, &fx->done_count, 4);
    assert_int_equal(after.done_status, 0);
    assert_int_equal(scratch_has(fx->db_path, 4300), 1);
}

/* ---- start errors ---- */

/* ---- two loops: one batch, each done on its own loop, detach then stop ---- */

struct second_loop {
    uv_loop_t loop;
    uv_async_t quit; /* the test asks the loop to detach its handle and end */
    struct writer *w;
    pthread_t thread;
    atomic_int done_count;
    atomic_int wrong_thread;
};

struct loop_job {
    struct test_job t;
    struct second_loop *sl; /* NULL: submitted through the first loop's handle */
    pthread_t expect;       /* the thread its done must run on */
};

static void loop_job_done(struct writer_job *job, int status)
{
    struct loop_job *lj = container_of(job, struct loop_job, t.job);
    if (!pthread_equal(pthread_self(), lj->expect)) {
        if (lj->sl != NULL)
            atomic_fetch_add(&lj->sl->wrong_thread, 1);
        else
            lj->t.done_status = -1000;
    }
    lj->t.done_calls++;
    if (lj->t.done_status != -1000)
        lj->t.done_status = status;
    if (lj->sl != NULL)
        atomic_fetch_add(&lj->sl->done_count, 1);
    else
        lj->t.fx->done_count++;
}

static void second_quit_cb(uv_async_t *h)
{
    struct second_loop *sl = h->data;
    writer_detach(&sl->w);
    uv_close((uv_handle_t *)&sl->quit, NULL);
}

static void *second_main(void *arg)
{
    struct second_loop *sl = arg;
    uv_run(&sl->loop, UV_RUN_DEFAULT); /* ends once quit and the writer handle are closed */
    return NULL;
}

static void test_two_loops_one_batch(void **state)
{
    struct fixture *fx = *state;
    struct second_loop *sl = calloc(1, sizeof(*sl));
    assert_non_null(sl);
    char err[256];
    assert_int_equal(uv_loop_init(&sl->loop), 0);
    assert_int_equal(uv_async_init(&sl->loop, &sl->quit, second_quit_cb), 0);
    sl->quit.data = sl;
    assert_int_equal(writer_attach(fx->w, &sl->loop, &sl->w, err, sizeof(err)), 0);
    struct writer *wb = sl->w; /* valid until the second loop detaches it */
    assert_int_equal(pthread_create(&sl->thread, NULL, second_main, sl), 0);

    enum { PER_LOOP = 20 };
    struct loop_job jobs[2 * PER_LOOP];
    struct writer_stats before, after;
    writer_stats(fx->w, &before);
    struct gate g;
    gate_init(&g, fx);
    gate_submit_and_wait(&g, fx->w);
    for (int i = 0; i < 2 * PER_LOOP; i++) {
        struct loop_job *lj = &jobs[i];
        job_init(&lj->t, fx, 500 + i, 0);
        lj->t.job.done = loop_job_done;
        bool second = i % 2 == 1; /* interleaved: the batch mixes both loops */
        lj->sl = second ? sl : NULL;
        lj->expect = second ? sl->thread : pthread_self();
        assert_int_equal(writer_submit(second ? wb : fx->w, &lj->t.job), 0);
    }
    gate_open(&g);
    run_until(fx, &fx->done_count, PER_LOOP + 1);
    for (int spin = 0; atomic_load(&sl->done_count) < PER_LOOP && spin < 30000; spin++)
        usleep(1000);
    gate_destroy(&g);
    assert_int_equal(atomic_load(&sl->done_count), PER_LOOP);
    assert_int_equal(atomic_load(&sl->wrong_thread), 0);
    for (int i = 0; i < 2 * PER_LOOP; i++) {
        assert_int_equal(jobs[i].t.done_calls, 1);
        assert_int_equal(jobs[i].t.done_status, 0);
        assert_int_equal(scratch_has(fx->db_path, jobs[i].t.key), 1);
    }
    writer_stats(fx->w, &after);
    /* The gate alone, then the forty jobs of both loops as one batch. */
    assert_int_equal(after.batches - before.batches, 2);
    assert_true(after.max_batch_jobs >= 2 * PER_LOOP);

    /* The second loop detaches and ends; the first handle is stopped by the teardown. */
    assert_int_equal(uv_async_send(&sl->quit), 0);
    assert_int_equal(pthread_join(sl->thread, NULL), 0);
    assert_int_equal(uv_loop_close(&sl->loop), 0);
    free(sl);
}

static void test_start_bad_path(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct writer *w = (struct writer *)&loop; /* must be reset to NULL */
    char err[256] = "";
    assert_int_equal(
        writer_start(&loop, "/nonexistent-postern-dir/db.sqlite", &w, err, sizeof(err)), -1);
    assert_null(w);
    assert_non_null(strstr(err, "/nonexistent-postern-dir/db.sqlite"));
    /* Nothing was left on the loop. */
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_producers_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_job_in_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_when_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_delivers_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_after_stop_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_from_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_failure_fails_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_lost_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_loops_one_batch, setup, teardown),
        cmocka_unit_test(test_start_bad_path),
    };
    return STORE_TEST_RUN(tests);
}
