/*
 * test_reader.c - the reader (storage/reader.h) against a real database file in a temporary
 * directory, in both modes: inline (the job runs at once on the loop's store, READER_DONE, no
 * done), threaded (READER_PENDING, done exactly once on the submitting loop's thread, the run on
 * another thread with its own connection), many jobs and a submit from a done, two loops each
 * getting its own jobs back, and shutdown with jobs still queued behind a blocked thread (each
 * done still called once, submits refused afterwards).
 *
 * Jobs look a domain up (store_domain_is_local), so each run really reads the file. A gate job
 * holds a reader thread until the test opens the gate, so jobs submitted meanwhile are known to
 * be queued. Every loop run is bounded by a watchdog timer, every wait by a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

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
#include "storage/reader.h"
#include "storage/store.h"
#include "store_fixture.h"

#define WATCHDOG_MS     60000
#define GATE_TIMEOUT_MS 30000
#define MANY_JOBS       200

struct fixture {
    char dir[64];
    char db_path[128];
    struct store *loop_store; /* the loop's own connection, for inline mode */
    uv_loop_t loop;
    uv_timer_t watchdog;
    bool timed_out;
    int done_count;
};

/* The gate: a job whose run waits until the test opens it (bounded). */
static atomic_bool gate_open;
static atomic_bool gate_entered;

struct test_job {
    struct reader_job job;
    struct fixture *fx;
    uv_loop_t *expect_loop; /* done must run while this loop runs */
    uv_loop_t **running;    /* the loop the test is running now */
    const char *domain;
    bool gate;
    bool local; /* run's result */
    struct store *run_store;
    pthread_t run_thread;
    int done_calls;
    int done_status;
    bool done_on_expected_loop;
    pthread_t done_thread;
    struct test_job *then; /* submitted from this job's done */
    int then_outcome;
};

static uv_loop_t *running_loop;
static struct reader *chain_reader; /* where a done submits its job's then */

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int job_run(struct store *st, struct reader_job *job)
{
    struct test_job *t = container_of(job, struct test_job, job);
    t->run_store = st;
    t->run_thread = pthread_self();
    if (t->gate) {
        atomic_store(&gate_entered, true);
        for (int i = 0; i < GATE_TIMEOUT_MS && !atomic_load(&gate_open); i++)
            sleep_ms(1);
    }
    return store_domain_is_local(st, t->domain, &t->local);
}

static void job_done(struct reader_job *job, int status);

static void job_init(struct test_job *t, struct fixture *fx, const char *domain)
{
    memset(t, 0, sizeof(*t));
    t->job.run = job_run;
    t->job.done = job_done;
    t->fx = fx;
    t->domain = domain;
    t->expect_loop = &fx->loop;
    t->then_outcome = -1;
}

static void job_done(struct reader_job *job, int status)
{
    struct test_job *t = container_of(job, struct test_job, job);
    t->done_calls++;
    t->done_status = status;
    t->done_thread = pthread_self();
    t->done_on_expected_loop = running_loop == t->expect_loop;
    t->fx->done_count++;
    if (t->then != NULL) {
        int st = 0;
        /* Through the handle the test keeps: a job's owner is private to reader.c. */
        t->then_outcome = reader_submit(chain_reader, &t->then->job, &st);
    }
}

static void on_watchdog(uv_timer_t *t)
{
    struct fixture *fx = t->data;
    fx->timed_out = true;
    uv_stop(t->loop);
}

/* Runs fx->loop until *count reaches want or the watchdog fires. */
static void run_until(struct fixture *fx, uv_loop_t *loop, int *count, int want)
{
    running_loop = loop;
    while (*count < want && !fx->timed_out) {
        uv_run(loop, UV_RUN_ONCE);
    }
    running_loop = NULL;
    assert_false(fx->timed_out);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/postern-reader-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->db_path, sizeof(fx->db_path), "%s/db", fx->dir);
    fx->loop_store = open_ok(fx->db_path);
    assert_int_equal(store_domain_add(fx->loop_store, "here.example"), STORE_OK);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(uv_timer_init(&fx->loop, &fx->watchdog), 0);
    fx->watchdog.data = fx;
    assert_int_equal(uv_timer_start(&fx->watchdog, on_watchdog, WATCHDOG_MS, 0), 0);
    uv_unref((uv_handle_t *)&fx->watchdog);
    atomic_store(&gate_open, false);
    atomic_store(&gate_entered, false);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    uv_close((uv_handle_t *)&fx->watchdog, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    store_close(&fx->loop_store);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

static struct reader *start(struct fixture *fx, unsigned threads)
{
    char err[512] = "";
    struct reader *r = NULL;
    if (reader_start(&fx->loop, fx->db_path, threads, fx->loop_store, &r, err, sizeof(err)) != 0)
        fail_msg("reader_start: %s", err);
    return r;
}

/* Inline: the job runs during the submit, on the loop's own store; done is never called. */
static void test_inline_runs_now(void **state)
{
    struct fixture *fx = *state;
    struct reader *r = start(fx, 0);
    assert_true(reader_is_inline(r));
    struct test_job a, b;
    job_init(&a, fx, "here.example");
    job_init(&b, fx, "elsewhere.example");
    int st = 1;
    assert_int_equal(reader_submit(r, &a.job, &st), READER_DONE);
    assert_int_equal(st, STORE_OK);
    assert_true(a.local);
    assert_ptr_equal(a.run_store, fx->loop_store);
    assert_true(pthread_equal(a.run_thread, pthread_self()));
    assert_int_equal(reader_submit(r, &b.job, &st), READER_DONE);
    assert_int_equal(st, STORE_OK);
    assert_false(b.local);
    reader_stop(&r);
    assert_null(r);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(a.done_calls + b.done_calls, 0);
}

/* Threaded: pending, then done once on the loop's thread, with the run on another connection
 * and another thread. */
static void test_threaded_done_once_on_loop(void **state)
{
    struct fixture *fx = *state;
    struct reader *r = start(fx, 2);
    assert_false(reader_is_inline(r));
    struct test_job a, b;
    job_init(&a, fx, "here.example");
    job_init(&b, fx, "elsewhere.example");
    int st = 1;
    assert_int_equal(reader_submit(r, &a.job, &st), READER_PENDING);
    assert_int_equal(reader_submit(r, &b.job, &st), READER_PENDING);
    run_until(fx, &fx->loop, &fx->done_count, 2);
    assert_int_equal(a.done_calls, 1);
    assert_int_equal(b.done_calls, 1);
    assert_int_equal(a.done_status, STORE_OK);
    assert_int_equal(b.done_status, STORE_OK);
    assert_true(a.local);
    assert_false(b.local);
    assert_true(a.done_on_expected_loop);
    assert_true(pthread_equal(a.done_thread, pthread_self()));
    assert_false(pthread_equal(a.run_thread, pthread_self()));
    assert_non_null(a.run_store);
    assert_ptr_not_equal(a.run_store, fx->loop_store);
    /* Let a few more turns pass: nothing is delivered twice. */
    for (int i = 0; i < 5; i++)
        uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(a.done_calls, 1);
    reader_stop(&r);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.done_calls, 1);
    assert_int_equal(b.done_calls, 1);
}

/* Many jobs over several threads, and a submit from inside a done: each done exactly once. */
static void test_threaded_many_and_chain(void **state)
{
    struct fixture *fx = *state;
    struct reader *r = start(fx, 3);
    chain_reader = r;
    struct test_job *jobs = calloc(MANY_JOBS + 1, sizeof(*jobs));
    assert_non_null(jobs);
    for (int i = 0; i <= MANY_JOBS; i++)
        job_init(&jobs[i], fx, (i % 2) ? "here.example" : "other.example");
    jobs[0].then = &jobs[MANY_JOBS];
    int st = 0;
    for (int i = 0; i < MANY_JOBS; i++)
        assert_int_equal(reader_submit(r, &jobs[i].job, &st), READER_PENDING);
    run_until(fx, &fx->loop, &fx->done_count, MANY_JOBS + 1);
    assert_int_equal(jobs[0].then_outcome, READER_PENDING);
    for (int i = 0; i <= MANY_JOBS; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].done_status, STORE_OK);
        assert_int_equal(jobs[i].local, (i % 2) == 1);
    }
    reader_stop(&r);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->done_count, MANY_JOBS + 1);
    chain_reader = NULL;
    free(jobs);
}

/* Opens the gate after a while, from another thread, so reader_stop finds jobs queued. */
static void *open_gate_later(void *arg)
{
    (void)arg;
    sleep_ms(50);
    atomic_store(&gate_open, true);
    return NULL;
}

/* Stop with jobs in flight: the thread is held by the gate, three jobs wait behind it;
 * reader_stop lets them run, delivers every done once, and refuses later submits. */
static void test_stop_with_jobs_in_flight(void **state)
{
    struct fixture *fx = *state;
    struct reader *r = start(fx, 1);
    struct reader *keep = r;
    struct test_job g, q[3];
    job_init(&g, fx, "here.example");
    g.gate = true;
    int st = 0;
    assert_int_equal(reader_submit(r, &g.job, &st), READER_PENDING);
    for (int i = 0; i < GATE_TIMEOUT_MS && !atomic_load(&gate_entered); i++)
        sleep_ms(1);
    assert_true(atomic_load(&gate_entered));
    for (int i = 0; i < 3; i++) {
        job_init(&q[i], fx, "here.example");
        assert_int_equal(reader_submit(r, &q[i].job, &st), READER_PENDING);
    }
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, open_gate_later, NULL), 0);
    running_loop = &fx->loop; /* reader_stop delivers on this loop's thread */
    reader_stop(&r);
    running_loop = NULL;
    assert_null(r);
    assert_int_equal(pthread_join(opener, NULL), 0);
    assert_int_equal(g.done_calls, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(q[i].done_calls, 1);
        assert_int_equal(q[i].done_status, STORE_OK);
        assert_true(q[i].local);
    }
    uv_run(&fx->loop, UV_RUN_DEFAULT); /* the close; the handle is freed then */
    assert_int_equal(fx->done_count, 4);
    (void)keep;
}

/* After stop began, a submit is refused as READER_DONE with STORE_ERR and no done. */
static void test_submit_after_stop_refused(void **state)
{
    struct fixture *fx = *state;
    struct reader *r = start(fx, 1);
    chain_reader = r;
    struct test_job a, b;
    job_init(&a, fx, "here.example");
    job_init(&b, fx, "here.example");
    a.then = &b;
    int st = 0;
    assert_int_equal(reader_submit(r, &a.job, &st), READER_PENDING);
    /* Stopped before a's done runs: the done runs inside reader_stop, and its submit of b is
     * refused there. */
    running_loop = &fx->loop;
    reader_stop(&r);
    running_loop = NULL;
    assert_int_equal(a.done_calls, 1);
    assert_int_equal(a.then_outcome, READER_DONE);
    assert_int_equal(b.done_calls, 0);
    assert_null(b.run_store);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(b.done_calls, 0);
    chain_reader = NULL;
    st = 0;
    assert_int_equal(reader_submit(NULL, &b.job, &st), READER_DONE);
    assert_int_equal(st, STORE_ERR);
}

/* Two loops on one pool: each job's done runs on the loop it was submitted from, and a
 * detached handle with a job out closes only after delivering it. */
static void test_two_loops(void **state)
{
    struct fixture *fx = *state;
    struct reader *r = start(fx, 2);
    uv_loop_t loop2;
    assert_int_equal(uv_loop_init(&loop2), 0);
    char err[256] = "";
    struct reader *r2 = NULL;
    assert_int_equal(reader_attach(r, &loop2, NULL, &r2, err, sizeof(err)), 0);
    struct test_job a, b;
    job_init(&a, fx, "here.example");
    job_init(&b, fx, "here.example");
    b.expect_loop = &loop2;
    int st = 0;
    assert_int_equal(reader_submit(r, &a.job, &st), READER_PENDING);
    assert_int_equal(reader_submit(r2, &b.job, &st), READER_PENDING);
    reader_detach(&r2); /* b is still out: the handle waits for it */
    assert_null(r2);
    /* Only loop2 runs: b comes back there, a cannot (its loop is not running). */
    running_loop = &loop2;
    for (int i = 0; i < 100000 && b.done_calls == 0; i++) {
        uv_run(&loop2, UV_RUN_NOWAIT);
        if (b.done_calls == 0)
            sleep_ms(1);
    }
    running_loop = NULL;
    assert_int_equal(b.done_calls, 1);
    assert_true(b.done_on_expected_loop);
    assert_int_equal(a.done_calls, 0);
    uv_run(&loop2, UV_RUN_DEFAULT); /* the detached handle closes */
    assert_int_equal(uv_loop_close(&loop2), 0);
    run_until(fx, &fx->loop, &a.done_calls, 1);
    assert_true(a.done_on_expected_loop);
    reader_stop(&r);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.done_calls, 1);
    assert_int_equal(b.done_calls, 1);
}

/* Inline handles attached to other loops run on the store they were given. */
static void test_inline_attach_uses_its_store(void **state)
{
    struct fixture *fx = *state;
    struct reader *r = start(fx, 0);
    struct store *other = open_ok(fx->db_path);
    uv_loop_t loop2;
    assert_int_equal(uv_loop_init(&loop2), 0);
    char err[256] = "";
    struct reader *r2 = NULL;
    assert_int_equal(reader_attach(r, &loop2, NULL, &r2, err, sizeof(err)), -1);
    assert_null(r2);
    assert_int_equal(reader_attach(r, &loop2, other, &r2, err, sizeof(err)), 0);
    struct test_job a;
    job_init(&a, fx, "here.example");
    int st = 1;
    assert_int_equal(reader_submit(r2, &a.job, &st), READER_DONE);
    assert_int_equal(st, STORE_OK);
    assert_ptr_equal(a.run_store, other);
    reader_detach(&r2);
    reader_stop(&r);
    assert_int_equal(uv_loop_close(&loop2), 0);
    store_close(&other);
}

static void test_bad_arguments(void **state)
{
    struct fixture *fx = *state;
    char err[256] = "";
    struct reader *r = (struct reader *)1;
    assert_int_equal(reader_start(&fx->loop, fx->db_path, 0, NULL, &r, err, sizeof(err)), -1);
    assert_null(r);
    assert_int_equal(
        reader_start(&fx->loop, fx->db_path, READER_THREADS_MAX + 1, NULL, &r, err, sizeof(err)),
        -1);
    assert_int_equal(
        reader_start(&fx->loop, "/nonexistent-dir/x/db", 1, NULL, &r, err, sizeof(err)), -1);
    assert_null(r);
    assert_true(strlen(err) > 0);
}

static void test_env_switch(void **state)
{
    (void)state;
    assert_int_equal(unsetenv("POSTERN_TEST_READER_THREADS"), 0);
    assert_int_equal(reader_test_threads(), 0);
    assert_int_equal(setenv("POSTERN_TEST_READER_THREADS", "2", 1), 0);
    assert_int_equal(reader_test_threads(), 2);
    assert_int_equal(setenv("POSTERN_TEST_READER_THREADS", "x", 1), 0);
    assert_int_equal(reader_test_threads(), 0);
    assert_int_equal(setenv("POSTERN_TEST_READER_THREADS", "99", 1), 0);
    assert_int_equal(reader_test_threads(), 0);
    assert_int_equal(unsetenv("POSTERN_TEST_READER_THREADS"), 0);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_inline_runs_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threaded_done_once_on_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threaded_many_and_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_jobs_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_after_stop_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_loops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_attach_uses_its_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test(test_env_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
