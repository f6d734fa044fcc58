/*
 * reader.h - a loop's handle for reads from the store: every lookup a session makes (users,
 * relay facts, mailbox snapshots, message bodies) is a job that may complete now or later.
 *
 * Two modes, chosen once at reader_start and the same for every handle:
 *
 *   inline    (threads = 0, the default with SQLite): reader_submit runs the job at once on the
 *             calling loop's own read connection and returns READER_DONE with its status. No
 *             thread hop, no lock, no allocation: a local SQLite read takes microseconds, and
 *             this is exactly what the call sites did before jobs existed.
 *   threaded  (threads > 0): a small pool of reader threads, each with its own connection,
 *             takes jobs in submission order; reader_submit returns READER_PENDING and the job's
 *             done runs later on the submitting loop (one uv_async per handle, woken per batch of
 *             finished jobs, as with the writer). This is for a store whose reads are network
 *             round trips, which must never run on a loop. With SQLite it is only switched on by
 *             tests (POSTERN_TEST_READER_THREADS, reader_test_threads) so that every pending path
 *             of every call site runs under the whole e2e suite.
 *
 * A call site handles both outcomes with one continuation:
 *
 *     int st;
 *     if (reader_submit(r, &x->job, &st) == READER_DONE)
 *         continue_x(x, st);     // inline, or refused: done will never be called
 *     else
 *         pause until done;      // done calls continue_x(x, status) on this loop, once
 *
 * Several loops: a struct reader is one loop's handle. reader_start makes the first handle (and
 * the pool in threaded mode); reader_attach gives another loop its own handle, whose jobs' done
 * callbacks run on that loop. In inline mode each handle runs jobs on the store it was given.
 *
 * What it does not do: it knows no SQL and nothing of sessions; the run functions (storage/
 * calls made by the call sites) do the work. A run must only read: it may run on any reader
 * thread, concurrently with other runs and with the writer. It never touches a loop except
 * with uv_async_send.
 *
 * Ownership: a struct reader_job is owned by the submitter, normally embedded in a bigger struct
 * (container_of, common/util.h); the reader borrows it from a READER_PENDING submit until done
 * is called and never touches it afterwards, so done may free it or submit it again. What run
 * writes into the job (results) is read by the loop only in done, after the hand-back, which
 * the pool's mutex orders.
 */
#ifndef POSTERN_READER_H
#define POSTERN_READER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

struct store;
struct reader;
struct reader_job;

/* reader_submit's outcome. */
enum reader_outcome {
    READER_DONE = 0,    /* finished now (or refused): *status_out holds the result, no done */
    READER_PENDING = 1, /* done will be called later on the submitting loop, exactly once */
};

/* The most reader threads a pool may have. Each holds a database connection. */
#define READER_THREADS_MAX 16

/*
 * Runs with a store connection of its own for the duration of the call: on the loop thread in
 * inline mode, on a reader thread in threaded mode. Returns 0 or a negative code (STORE_*).
 */
typedef int (*reader_run_fn)(struct store *st, struct reader_job *job);
/*
 * Threaded mode only: runs on the submitting loop's thread, exactly once per READER_PENDING
 * submit, with run's result, or STORE_ERR when the job could not be run.
 */
typedef void (*reader_done_fn)(struct reader_job *job, int status);

struct reader_job {
    reader_run_fn run;
    reader_done_fn done;
    /* private to reader.c */
    struct reader_job *next;
    struct reader *owner; /* the handle it was submitted through: its done runs on that loop */
    int status;
};

/*
 * The first handle, on loop. threads = 0: inline mode, jobs run on loop_store (borrowed; it
 * must outlive the handle and be used by loop's thread only). threads = 1..READER_THREADS_MAX:
 * threaded mode; each thread opens db_path (store_open) now, so a bad path is reported here;
 * loop_store is not used and may be NULL. Call on the loop thread. 0, or -1 with err set and
 * *out NULL.
 */
int reader_start(uv_loop_t *loop, const char *db_path, unsigned threads, struct store *loop_store,
                 struct reader **out, char *err, size_t errlen);
/*
 * A handle for another loop, in first's mode: inline jobs run on loop_store (borrowed, as
 * above); threaded ones on first's pool, their done on loop. Call before loop runs (from any
 * thread) or on loop's own thread. 0, or -1 with err set and *out NULL.
 */
int reader_attach(struct reader *first, uv_loop_t *loop, struct store *loop_store,
                  struct reader **out, char *err, size_t errlen);
/*
 * Runs job now (inline: READER_DONE, *status_out = run's result) or queues it (threaded:
 * READER_PENDING). READER_DONE with *status_out = STORE_ERR, and no done, when r or job is NULL
 * or after reader_stop began. Loop thread of r; also from inside a done callback.
 */
int reader_submit(struct reader *r, struct reader_job *job, int *status_out);
/* True in inline mode: a submit through r never returns READER_PENDING. */
bool reader_is_inline(const struct reader *r);
/*
 * On an attached handle's loop thread: no more submissions through it; once every job it
 * submitted has had its done called, its uv_async is closed (the loop must run on to finish
 * the close). Sets *r to NULL; NULL is a no-op. Every attached handle must be detached, and
 * its loop run to its end, before reader_stop is called on the first handle.
 */
void reader_detach(struct reader **r);
/*
 * On the first handle: refuses new jobs, lets the threads finish every job already queued,
 * joins them (they close their connections), delivers the first loop's remaining done
 * callbacks, closes the uv_async (the loop must run once more) and sets *r to NULL. Call on the
 * loop thread, from a done callback too. NULL is a no-op.
 */
void reader_stop(struct reader **r);
/*
 * POSTERN_TEST_READER_THREADS=N (1..READER_THREADS_MAX): tests ask for threaded reads on a
 * SQLite store, so the pending path of every call site is exercised; 0 when unset or invalid.
 * Never set in production: serve warns when it is.
 */
unsigned reader_test_threads(void);

#endif
