/*
 * nodes.c - what several serve processes (nodes) on one database need to agree on: each node's
 * name and lease (the nodes table), and the POP3 maildrop lock (pop3_locks: one session per
 * maildrop across every node, RFC 1939 8). The queue's claims carry the node's name too, and
 * the claim of a node whose row is gone or whose lease ran out is free to the other nodes; that
 * is storage/queue.c's (it reads this table in its claim).
 *
 * A node's name is [server] node. The nodes row says which process has the name (host, pid) and
 * until when (expires_ms), renewed with the node's POP3 locks; a second process that asks for a
 * name whose lease is still running is refused, so two live processes never share one, and the
 * queue claims and locks a node releases at its start are its own. Deciding whether the holder
 * of a running lease is in fact dead (the same host, a pid that no longer exists) is the
 * caller's: nothing here knows of processes.
 *
 * A maildrop lock is a lease too: a row (user, node, session, expires_ms) taken at login in the
 * login's writer job, renewed by its node while the session lives, deleted when the session
 * ends. A row whose lease ran out is free to the next login (its node died or lost touch), and so
 * is a row of the asking node itself: the node keeps its own set of the sessions that hold locks
 * (server/pop3/pop3_lock.c), so a row of its own that no session there holds is a leftover.
 * Every comparison with the clock happens here, against the caller's now_ms; the nodes' clocks
 * must agree to within a small part of the lease.
 */
#include "storage/store_internal.h"

#include <stdio.h>
#include <string.h>

/* Who holds name now, into *out (found false when nobody). */
static int read_holder(struct store *s, const char *name, struct store_node_holder *out)
{
    memset(out, 0, sizeof(*out));
    struct sql_stmt *st = sql_prepare(s, "SELECT host, pid, expires_ms FROM nodes WHERE name = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, name);
    int rc = sql_step(st);
    if (rc == SQL_ROW) {
        const char *h = sql_col_text(st, 0);
        snprintf(out->host, sizeof(out->host), "%s", h != NULL ? h : "");
        out->pid = sql_col_i64(st, 1);
        out->expires_ms = sql_col_i64(st, 2);
        out->found = true;
    }
    return store_rows_end(s, st, rc, "read node");
}

int store_node_claim(struct store *s, const char *name, const char *host, int64_t pid,
                     int64_t now_ms, int64_t lease_ms, bool force, struct store_node_holder *out)
{
    memset(out, 0, sizeof(*out));
    /* One statement decides and takes, as for the maildrop lock: two processes starting at once
     * under one name cannot both win. The row is free when its lease ran out, when it is this
     * very process's (asked again), or when the caller found its holder dead (force). */
    struct sql_stmt *st = sql_prepare(
        s, "INSERT INTO nodes(name, host, pid, started_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)"
           " ON CONFLICT(name) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
           "  started_ms = excluded.started_ms, expires_ms = excluded.expires_ms"
           " WHERE nodes.expires_ms <= ?4 OR (nodes.host = ?2 AND nodes.pid = ?3) OR ?6 = 1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, name);
    sql_bind_text(st, 2, host);
    sql_bind_i64(st, 3, pid);
    sql_bind_i64(st, 4, now_ms);
    sql_bind_i64(st, 5, now_ms + lease_ms);
    sql_bind_i64(st, 6, force ? 1 : 0);
    int status = store_step_done(s, st, "claim node");
    if (status != STORE_OK || sql_changes(st) > 0)
        return status;
    status = read_holder(s, name, out);
    return status == STORE_OK ? STORE_IN_USE : status;
}

int store_node_leave(struct store *s, const char *name, const char *host, int64_t pid)
{
    struct sql_stmt *st =
        sql_prepare(s, "DELETE FROM nodes WHERE name = ?1 AND host = ?2 AND pid = ?3");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, name);
    sql_bind_text(st, 2, host);
    sql_bind_i64(st, 3, pid);
    return store_step_done(s, st, "leave node");
}

int store_node_renew(struct store *s, const char *name, int64_t pid, int64_t now_ms,
                     int64_t lease_ms)
{
    struct sql_stmt *st =
        sql_prepare(s, "UPDATE nodes SET expires_ms = ?3 WHERE name = ?1 AND pid = ?2");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, name);
    sql_bind_i64(st, 2, pid);
    sql_bind_i64(st, 3, now_ms + lease_ms);
    return store_step_changed(s, st, "renew node");
}

/* ---- the POP3 maildrop lock ---- */

int store_pop3_lock_take(struct store *s, int64_t user_id, const char *node, int64_t session,
                         int64_t now_ms, int64_t lease_ms)
{
    /* One statement decides and takes, so two nodes asking at once cannot both win: the second
     * waits for the first's row (a unique key) and then finds it live. */
    struct sql_stmt *st = sql_prepare(
        s, "INSERT INTO pop3_locks(user_id, node, session, expires_ms) VALUES (?1, ?2, ?3, ?4)"
           " ON CONFLICT(user_id) DO UPDATE SET node = excluded.node,"
           "  session = excluded.session, expires_ms = excluded.expires_ms"
           " WHERE pop3_locks.expires_ms <= ?5 OR pop3_locks.node = ?2");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, user_id);
    sql_bind_text(st, 2, node);
    sql_bind_i64(st, 3, session);
    sql_bind_i64(st, 4, now_ms + lease_ms);
    sql_bind_i64(st, 5, now_ms);
    int status = store_step_done(s, st, "take maildrop lock");
    if (status == STORE_OK && sql_changes(st) == 0)
        status = STORE_IN_USE;
    return status;
}

int store_pop3_lock_renew(struct store *s, int64_t user_id, const char *node, int64_t session,
                          int64_t now_ms, int64_t lease_ms)
{
    struct sql_stmt *st = sql_prepare(s, "UPDATE pop3_locks SET expires_ms = ?4"
                                         " WHERE user_id = ?1 AND node = ?2 AND session = ?3");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, user_id);
    sql_bind_text(st, 2, node);
    sql_bind_i64(st, 3, session);
    sql_bind_i64(st, 4, now_ms + lease_ms);
    return store_step_changed(s, st, "renew maildrop lock");
}

int store_pop3_lock_release(struct store *s, int64_t user_id, const char *node, int64_t session)
{
    struct sql_stmt *st =
        sql_prepare(s, "DELETE FROM pop3_locks WHERE user_id = ?1 AND node = ?2 AND session = ?3");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, user_id);
    sql_bind_text(st, 2, node);
    sql_bind_i64(st, 3, session);
    return store_step_done(s, st, "release maildrop lock");
}

int store_pop3_lock_drop_node(struct store *s, const char *node, size_t *dropped_out)
{
    if (dropped_out != NULL)
        *dropped_out = 0;
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM pop3_locks WHERE node = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, node);
    int status = store_step_done(s, st, "drop the node's maildrop locks");
    if (status == STORE_OK && dropped_out != NULL)
        *dropped_out = (size_t)sql_changes(st);
    return status;
}

int store_pop3_lock_holder(struct store *s, int64_t user_id, char *node_out, size_t nodelen,
                           int64_t *session_out, int64_t *expires_out)
{
    struct sql_stmt *st =
        sql_prepare(s, "SELECT node, session, expires_ms FROM pop3_locks WHERE user_id = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, user_id);
    int rc = sql_step(st);
    bool found = rc == SQL_ROW;
    if (found) {
        const char *n = sql_col_text(st, 0);
        snprintf(node_out, nodelen, "%s", n != NULL ? n : "");
        *session_out = sql_col_i64(st, 1);
        *expires_out = sql_col_i64(st, 2);
    }
    int status = store_rows_end(s, st, rc, "read maildrop lock");
    if (status == STORE_OK && !found)
        status = STORE_NOT_FOUND;
    return status;
}
