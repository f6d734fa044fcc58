/*
 * pop3_window.c - the POP3 session's relay window jobs (pop3_window.h): open at login (the
 * maildrop lock's row, window row and login history in one writer job, so a login costs one
 * commit), renew while connected and once at close, each only while
 * the account is as the login found it. It holds no
 * state of its own and knows nothing of the session or the connection; SQL is storage/'s.
 */
#include "server/pop3/pop3_window.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/log.h"
#include "storage/store.h"

/* Renewal interval of an open window while the session is connected: at most this, and at most
 * half the window, so a crash leaves the window open for no longer than relay.window. */
#define POP3_WINDOW_RENEW_MAX_MS (5 * 60 * 1000)
#define POP3_WINDOW_RENEW_MIN_MS 1000

/* On the writer thread. */
static int window_run(struct store *st, struct writer_job *job)
{
    struct pop3_window_job *w = (struct pop3_window_job *)job;
    w->window_failed = false; /* run again after a failed COMMIT */
    int rc = store_user_unchanged(st, w->user_id, w->hash);
    if (!w->is_login) {
        if (rc == STORE_OK)
            rc = store_window_open(st, w->key, w->user, w->now_ms, w->duration_ms);
        return rc;
    }
    if (rc == STORE_OK)
        rc = store_pop3_lock_take(st, w->user_id, w->node, w->session, w->now_ms, w->lease_ms);
    if (rc != STORE_OK || !w->with_window)
        return rc;
    /* The lock stands without the window: see login_window_done in pop3_auth.c. */
    return store_window_login(st, w->key, w->user, w->now_ms, w->duration_ms, &w->window_failed);
}

void pop3_window_log(uint64_t sid, const struct pop3_window_job *w, const char *ip,
                     const char *event)
{
    log_info("pop3", sid, "event=%s ip=%s key=%s user=%s expires=%lld", event, ip, w->key, w->user,
             (long long)(w->now_ms + w->duration_ms));
}

static void fill(struct pop3_window_job *w, const char *key, const struct pop3_window_user *u,
                 uint64_t window_ms)
{
    w->job.run = window_run;
    snprintf(w->key, sizeof(w->key), "%s", key);
    snprintf(w->user, sizeof(w->user), "%s", u->address);
    w->user_id = u->id;
    snprintf(w->hash, sizeof(w->hash), "%s", u->hash);
    w->now_ms = store_now_ms();
    w->duration_ms = (int64_t)window_ms;
}

static void login_done(struct writer_job *job, int status)
{
    struct pop3_window_job *w = (struct pop3_window_job *)job;
    w->done(w->ctx, status);
}

int pop3_window_open(struct pop3_window_job *w, struct writer *wr, const char *key,
                     const struct pop3_window_user *u, uint64_t window_ms,
                     const struct pop3_window_lock *lock, pop3_window_done_fn done, void *ctx)
{
    memset(w, 0, sizeof(*w));
    fill(w, key, u, window_ms);
    w->job.done = login_done;
    w->is_login = true;
    w->with_window = window_ms > 0;
    snprintf(w->node, sizeof(w->node), "%s", lock->node);
    w->session = lock->session;
    w->lease_ms = lock->lease_ms;
    w->done = done;
    w->ctx = ctx;
    return writer_submit(wr, &w->job) != 0 ? -1 : 0;
}

static void renew_done(struct writer_job *job, int status)
{
    struct pop3_window_job *w = (struct pop3_window_job *)job;
    if (status == STORE_NOT_FOUND)
        log_info("pop3", 0,
                 "event=window-revoked key=%s user=%s reason=account-deleted-or-password-changed",
                 w->key, w->user);
    else if (status != 0)
        log_warn("pop3", 0, "event=window-renew-failed key=%s user=%s status=%d", w->key, w->user,
                 status);
    if (w->done != NULL)
        w->done(w->ctx, status);
    sodium_memzero(w->hash, sizeof(w->hash));
    free(w);
}

int pop3_window_renew(struct writer *wr, const char *key, const struct pop3_window_user *u,
                      uint64_t window_ms, pop3_window_done_fn done, void *ctx)
{
    struct pop3_window_job *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        log_warn("pop3", 0, "event=window-renew-failed key=%s error=\"out of memory\"", key);
        return -1;
    }
    fill(w, key, u, window_ms);
    w->job.done = renew_done;
    w->done = done;
    w->ctx = ctx;
    if (writer_submit(wr, &w->job) != 0) {
        log_warn("pop3", 0, "event=window-renew-failed key=%s error=\"writer stopped\"", w->key);
        sodium_memzero(w->hash, sizeof(w->hash));
        free(w);
        return -1;
    }
    return 0;
}

uint64_t pop3_window_renew_every_ms(uint64_t window_ms)
{
    uint64_t every = window_ms / 2;
    if (every > POP3_WINDOW_RENEW_MAX_MS)
        every = POP3_WINDOW_RENEW_MAX_MS;
    if (every < POP3_WINDOW_RENEW_MIN_MS)
        every = POP3_WINDOW_RENEW_MIN_MS;
    return every;
}
