/*
 * pop3_lock.c - the set of this process's POP3 sessions that hold a maildrop lock, and the job
 * that releases a lock's row (pop3_lock.h). Sessions of every event loop share the set, so it is
 * guarded by a mutex, and checking and taking are one step. It is small (one entry per
 * logged-in POP3 session) and scanned linearly; it is freed when it empties, so nothing is left
 * at exit.
 * XXX(pop3): linear; a hash set if tens of thousands of concurrent POP3 sessions ever matter.
 */
#include "server/pop3/pop3_lock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "storage/store.h"

struct entry {
    int64_t user_id;
    int64_t session;
    bool in_db; /* the database row is taken: renew it */
    bool lost;  /* a renewal found the row taken over */
};

/* Whether any lock was ever lost in this process: until then a session's check costs no lock. */
static atomic_bool lost_any;

static struct {
    pthread_mutex_t mu;
    struct entry *v;
    size_t n;
    size_t cap;
} locks = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* A static mutex that fails to lock means memory corruption: nothing sane to carry on with. */
static void set_lock(void)
{
    if (pthread_mutex_lock(&locks.mu) != 0)
        abort();
}

static void set_unlock(void)
{
    if (pthread_mutex_unlock(&locks.mu) != 0)
        abort();
}

int pop3_lock_local_take(int64_t user_id, int64_t session)
{
    int rc = 0;
    set_lock();
    for (size_t i = 0; i < locks.n && rc == 0; i++)
        if (locks.v[i].user_id == user_id)
            rc = 1;
    if (rc == 0 && locks.n == locks.cap) {
        size_t cap = locks.cap == 0 ? 16 : locks.cap * 2;
        struct entry *v = realloc(locks.v, cap * sizeof(*v));
        if (v == NULL) {
            rc = -1;
        } else {
            locks.v = v;
            locks.cap = cap;
        }
    }
    if (rc == 0)
        locks.v[locks.n++] = (struct entry){.user_id = user_id, .session = session};
    set_unlock();
    return rc;
}

void pop3_lock_local_in_db(int64_t user_id, int64_t session)
{
    set_lock();
    for (size_t i = 0; i < locks.n; i++)
        if (locks.v[i].user_id == user_id && locks.v[i].session == session)
            locks.v[i].in_db = true;
    set_unlock();
}

void pop3_lock_local_lost(int64_t user_id, int64_t session)
{
    set_lock();
    for (size_t i = 0; i < locks.n; i++) {
        if (locks.v[i].user_id == user_id && locks.v[i].session == session) {
            locks.v[i].lost = true;
            locks.v[i].in_db = false; /* nothing left to renew */
            atomic_store(&lost_any, true);
        }
    }
    set_unlock();
}

bool pop3_lock_local_is_lost(int64_t user_id, int64_t session)
{
    if (!atomic_load(&lost_any))
        return false;
    bool lost = false;
    set_lock();
    for (size_t i = 0; i < locks.n; i++)
        if (locks.v[i].user_id == user_id && locks.v[i].session == session)
            lost = locks.v[i].lost;
    set_unlock();
    return lost;
}

void pop3_lock_local_release(int64_t user_id, int64_t session)
{
    set_lock();
    for (size_t i = 0; i < locks.n; i++) {
        if (locks.v[i].user_id == user_id && locks.v[i].session == session) {
            locks.v[i] = locks.v[--locks.n];
            break;
        }
    }
    if (locks.n == 0) {
        free(locks.v);
        locks.v = NULL;
        locks.cap = 0;
    }
    set_unlock();
}

int pop3_lock_snapshot(struct pop3_lock_ref **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    int rc = 0;
    set_lock();
    if (locks.n > 0) {
        struct pop3_lock_ref *v = malloc(locks.n * sizeof(*v));
        if (v == NULL) {
            rc = -1;
        } else {
            size_t n = 0;
            for (size_t i = 0; i < locks.n; i++)
                if (locks.v[i].in_db)
                    v[n++] = (struct pop3_lock_ref){locks.v[i].user_id, locks.v[i].session};
            *out = v;
            *n_out = n;
        }
    }
    set_unlock();
    return rc;
}

/* ---- the release job ---- */

struct release_job {
    struct writer_job job;
    char node[STORE_NODE_NAME_MAX_BYTES + 1];
    int64_t user_id;
    int64_t session;
};

static int release_run(struct store *st, struct writer_job *job)
{
    struct release_job *r = (struct release_job *)job;
    return store_pop3_lock_release(st, r->user_id, r->node, r->session);
}

static void release_done(struct writer_job *job, int status)
{
    struct release_job *r = (struct release_job *)job;
    if (status != 0)
        log_warn("pop3", 0, "event=lock-release-failed user_id=%lld status=%d lease=runs-out",
                 (long long)r->user_id, status);
    free(r);
}

void pop3_lock_release(struct writer *w, const char *node, int64_t user_id, int64_t session)
{
    pop3_lock_local_release(user_id, session);
    struct release_job *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        log_warn("pop3", 0, "event=lock-release-failed user_id=%lld error=\"out of memory\"",
                 (long long)user_id);
        return;
    }
    r->job.run = release_run;
    r->job.done = release_done;
    snprintf(r->node, sizeof(r->node), "%s", node);
    r->user_id = user_id;
    r->session = session;
    if (w == NULL || writer_submit(w, &r->job) != 0) {
        log_warn("pop3", 0, "event=lock-release-failed user_id=%lld error=\"writer stopped\"",
                 (long long)user_id);
        free(r);
    }
}
