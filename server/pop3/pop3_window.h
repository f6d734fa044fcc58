/*
 * pop3_window.h - the POP-before-SMTP relay window as the POP3 session opens and renews it: the
 * writer jobs that write the window row (and, at login, the maildrop lock's row and the login
 * history row), and the renewal interval. server/pop3/pop3_session.c is the one caller and decides
 * when; this module never calls it, and reports a login's result only through the done callback it
 * is handed.
 *
 * Ownership: a login job is embedded in the session, which stays alive until done ran. A renewal
 * job owns itself and frees itself in its done, so a session may end while its renewal is out.
 *
 * Revocation: every job first checks, on the writer thread, that the user still exists with the
 * password hash the login matched (store_user_unchanged). When not (`user del`, `user passwd`:
 * those close the user's windows themselves), the job writes nothing and done gets
 * STORE_NOT_FOUND, so a session cannot keep a revoked account's window open.
 */
#ifndef POSTERN_POP3_WINDOW_H
#define POSTERN_POP3_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#include "common/pure/address.h"
#include "common/password.h"
#include "common/pure/cidr.h"
#include "storage/store.h"
#include "storage/writer.h"

/* A job's answer, on the loop thread: 0 when the window is open (and, at login, the login
 * recorded); STORE_NOT_FOUND when the account was revoked meanwhile; another negative code when
 * the store failed. */
typedef void (*pop3_window_done_fn)(void *ctx, int status);

/* Whose window: the user as the login found it. */
struct pop3_window_user {
    const char *address;
    int64_t id;
    const char *hash; /* the stored hash string the password matched */
};

struct pop3_window_job {
    struct writer_job job;
    char key[CIDR_STRLEN];     /* ip_window_key() of the client */
    char user[ADDRESS_STRLEN]; /* the logged-in user */
    int64_t user_id;
    char hash[PASSWORD_HASH_BYTES]; /* the hash the login matched; still the stored one? */
    int64_t now_ms;
    int64_t duration_ms;
    bool is_login; /* also record the login in the history (not for renewals) */
    /* At login, the job takes the maildrop lock's row first (storage/nodes.c); the window is
     * written only when with_window, in a savepoint of its own: a window that cannot be
     * written (a full disk) leaves the lock taken and sets window_failed. */
    bool with_window;
    bool window_failed;
    char node[STORE_NODE_NAME_MAX_BYTES + 1];
    int64_t session;
    int64_t lease_ms;
    pop3_window_done_fn done; /* with ctx; NULL for a renewal nobody waits for */
    void *ctx;
};

/* The maildrop lock a login takes in its job. */
struct pop3_window_lock {
    const char *node;
    int64_t session;
    int64_t lease_ms;
};
/* The login's writer job: takes the maildrop lock (STORE_IN_USE when a live session of another
 * node holds it: then nothing is written), then, when window_ms > 0, opens the window for key
 * and records the login. 0, and done(ctx, status) runs once, later; or -1 (the writer refused
 * it), and done never runs. */
int pop3_window_open(struct pop3_window_job *j, struct writer *w, const char *key,
                     const struct pop3_window_user *u, uint64_t window_ms,
                     const struct pop3_window_lock *lock, pop3_window_done_fn done, void *ctx);
/* Renews the window for key from now, in a job that owns itself. Failures and revocations are
 * logged. 0, and done(ctx, status) runs once, later, when done is not NULL; or -1 (out of memory,
 * or the writer refused it: logged), and done never runs. */
int pop3_window_renew(struct writer *w, const char *key, const struct pop3_window_user *u,
                      uint64_t window_ms, pop3_window_done_fn done, void *ctx);
/* The interval between renewals while the session stays in TRANSACTION. */
uint64_t pop3_window_renew_every_ms(uint64_t window_ms);
/* Logs event=EVENT for the window of j. */
void pop3_window_log(uint64_t sid, const struct pop3_window_job *j, const char *ip,
                     const char *event);

#endif
