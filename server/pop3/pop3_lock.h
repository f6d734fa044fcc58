/*
 * pop3_lock.h - this node's side of the POP3 maildrop lock (one session per maildrop, RFC 1939 8,
 * [IN-USE] of RFC 2449 8.1.1). The truth is the database's pop3_locks row (storage/nodes.c),
 * taken in the login's writer job (server/pop3/pop3_window.c), renewed with the node's lease
 * (server/node.c) and released when the session ends. This module keeps the set of this
 * process's sessions that hold a lock, shared by every loop: a second login here for the same
 * user is refused without a database round trip, and the renewal job learns which rows to renew.
 *
 * It owns the set; the sessions own their entries (one per session, taken at login, released
 * at its end). It does not decide when to lock (pop3_auth.c, pop3_maildrop.c do).
 */
#ifndef POSTERN_POP3_LOCK_H
#define POSTERN_POP3_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/writer.h"

/* One lock this process holds in the database. */
struct pop3_lock_ref {
    int64_t user_id;
    int64_t session; /* the session's id (conn_sid) */
};

/* 0: taken here for session; 1: another session of this process holds user_id; -1: out of
 * memory. Thread-safe. */
int pop3_lock_local_take(int64_t user_id, int64_t session);
/* The login job took the database row too: renewals include it from now on. */
void pop3_lock_local_in_db(int64_t user_id, int64_t session);
/* A renewal found the row taken over by a session of another node (this node stalled past its
 * lease): the session must end. */
void pop3_lock_local_lost(int64_t user_id, int64_t session);
bool pop3_lock_local_is_lost(int64_t user_id, int64_t session);
/* Forgets session's entry (no database work). */
void pop3_lock_local_release(int64_t user_id, int64_t session);
/* A copy of the locks held in the database, for the renewal job; *out (owned by the caller,
 * free()) is NULL when n is 0. 0 or -1 (out of memory). */
int pop3_lock_snapshot(struct pop3_lock_ref **out, size_t *n_out);
/* Forgets the entry and deletes the row in a writer job that owns itself (failures logged: the
 * row then expires with its lease, since nothing renews it any more). */
void pop3_lock_release(struct writer *w, const char *node, int64_t user_id, int64_t session);

#endif
