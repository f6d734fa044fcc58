/*
 * writer.h - the writer thread: every change the server makes to the database goes through here,
 * as a job, and is made durable by group commit.
 *
 * One thread owns the write connection. When woken it takes every job waiting at that moment
 * (FIFO order kept), runs them in one transaction (BEGIN IMMEDIATE; per job SAVEPOINT, run,
 * RELEASE or ROLLBACK TO), COMMITs once, and then hands the batch back to the loop each job came
 * from through that loop's uv_async (one send per loop per batch), where each job's done callback
 * runs. So many sessions share one fsync, and "done" always means "on disk" (WAL,
 * synchronous=FULL): SMTP may answer 250 to end-of-data from there.
 *
 * Several loops: a struct writer is one loop's handle on the one thread. writer_start makes the
 * thread and the first handle (the owner's loop); writer_attach gives another loop its own handle
 * on the same thread, so its jobs join the same batches and their done callbacks run on that
 * loop. A job's done always runs on the loop whose handle it was submitted through.
 *
 * What it does not do: it knows no SQL of its own and nothing about messages or sessions; the run
 * functions (storage/ code) do the work. It never touches the loop except with uv_async_send.
 *
 * Ownership: a struct writer_job is owned by the submitter, normally embedded in a bigger struct
 * (container_of, common/util.h); the writer borrows it from writer_submit until done is called, and
 * never touches it afterwards, so done may free it or submit it again.
 */
#ifndef POSTERN_WRITER_H
#define POSTERN_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct store;
struct writer;
struct writer_job;

/*
 * Runs on the writer thread inside a savepoint of the current batch transaction. Returns 0, or a
 * negative code: then only this job's savepoint is rolled back and the rest of the batch commits.
 * If the batch's COMMIT fails and is retried, run is called again on a clean transaction (its
 * earlier changes were rolled back), so it must keep no side effects outside the database.
 */
typedef int (*writer_run_fn)(struct store *st, struct writer_job *job);
/*
 * Runs on the loop thread, exactly once per submitted job, after the batch's COMMIT returned (so
 * the job's data is durable: WAL + synchronous=FULL), with status 0, the job's own negative code,
 * or STORE_ERR when the commit itself failed (then nothing of the job was written).
 */
typedef void (*writer_done_fn)(struct writer_job *job, int status);

struct writer_job {
    writer_run_fn run;
    writer_done_fn done;
    /* private to writer.c */
    struct writer_job *next;
    struct writer *owner; /* the handle it was submitted through: its done runs on that loop */
    int status;
};

/* Counters since writer_start, for logs and benchmarks. */
struct writer_stats {
    uint64_t batches;         /* batches finished, committed or given up */
    uint64_t jobs;            /* jobs finished (their done is called or about to be) */
    uint64_t jobs_failed;     /* jobs whose own run returned a negative code */
    uint64_t max_batch_jobs;  /* the largest batch */
    uint64_t commit_failures; /* failed attempts: BEGIN, a savepoint or COMMIT failed */
    uint64_t batches_failed;  /* batches given up after every attempt: all jobs got STORE_ERR */
    uint64_t busy_ms;         /* time spent running batches, BEGIN to COMMIT, retries included */
};

/*
 * Told after every batch, on the writer thread: how many jobs it held and how long it took in
 * nanoseconds (BEGIN to COMMIT, retries included). For metrics; it must be quick and
 * thread-safe. storage/ knows nothing of what the caller does with it.
 */
typedef void (*writer_batch_fn)(uint64_t jobs, uint64_t ns);

/*
 * Opens db_path (store_open: created and migrated if needed), hands the connection to a new thread
 * and sets up the uv_async on loop. Call on the loop thread. On failure returns -1, *out is NULL,
 * err holds one line, and nothing is left to close.
 */
int writer_start(uv_loop_t *loop, const char *db_path, struct writer **out, char *err,
                 size_t errlen);
/*
 * A handle for another loop on the thread that first (from writer_start) owns: jobs submitted
 * through it are batched with everybody's, and their done callbacks run on loop. Call it before
 * loop runs (from any thread) or on loop's own thread. 0, or -1 with err set and *out NULL.
 */
int writer_attach(struct writer *first, uv_loop_t *loop, struct writer **out, char *err,
                  size_t errlen);
/*
 * On the attached handle's loop thread: no more submissions through it are expected; once every
 * job submitted through it has had its done called, its uv_async is closed (the loop must run on
 * to finish the close; the handle is freed in the close callback). Sets *w to NULL; NULL is a
 * no-op. Every attached handle must be detached, and its loop run to its end, before writer_stop
 * is called on the first handle.
 */
void writer_detach(struct writer **w);
/*
 * Queues job (run and done set; the private fields are overwritten). Thread-safe, many producers,
 * also from inside a done callback. Returns -1, and done will never be called, when w or the job is
 * NULL or after writer_stop began.
 */
int writer_submit(struct writer *w, struct writer_job *job);
/*
 * On the first handle (writer_start's): stops accepting, lets the thread finish every job already
 * submitted, joins it, delivers every remaining done callback, closes the uv_async (the caller's
 * loop must run once more to finish the close; the struct is freed in the close callback) and sets
 * *w to NULL. Call on the loop thread; calling it from a done callback is allowed. Does nothing
 * when *w is NULL.
 */
void writer_stop(struct writer **w);
/* Sets the batch observer (NULL: none); any thread, at any time. */
void writer_set_batch_observer(struct writer *w, writer_batch_fn fn);
/* A consistent copy of the counters. Any thread. */
void writer_stats(struct writer *w, struct writer_stats *stats_out);

#endif
