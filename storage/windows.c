/*
 * windows.c - POP-before-SMTP relay windows and the login history behind them. A window is keyed
 * by ip_window_key() (an IPv4 address, or an IPv6 network of relay.window_ipv6_prefix). Every
 * lookup compares expires_ms with the caller's clock itself: purging old rows is housekeeping and
 * never what makes a window close.
 *
 * The relayed count belongs to the address, not to whoever logged in last: a login or renewal
 * while the window is open only moves its expiry, so two accounts taking turns from one address
 * cannot reset it. Only a window that has expired (or was closed, which deletes the row) starts
 * again from 0. The count is taken by store_window_take_relay, whose one UPDATE both checks the
 * limit and counts, so sessions running in parallel cannot overshoot it.
 */
#include "storage/store_internal.h"

#include <stdio.h>
#include <string.h>

int store_window_open(struct store *s, const char *key, const char *user, int64_t now_ms,
                      int64_t duration_ms)
{
    struct sql_stmt *st =
        sql_prepare(s, "INSERT INTO windows(ip_key, \"user\", opened_ms, expires_ms, relayed)"
                       " VALUES (?1, ?2, ?3, ?4, 0)"
                       " ON CONFLICT(ip_key) DO UPDATE SET"
                       "  relayed = CASE WHEN windows.expires_ms > excluded.opened_ms"
                       "   THEN windows.relayed ELSE 0 END,"
                       "  \"user\" = excluded.\"user\", opened_ms = excluded.opened_ms,"
                       "  expires_ms = excluded.expires_ms");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, key);
    sql_bind_text(st, 2, user);
    sql_bind_i64(st, 3, now_ms);
    sql_bind_i64(st, 4, now_ms + duration_ms);
    return store_step_done(s, st, "open window");
}

int store_pop_login_record(struct store *s, const char *key, const char *user, int64_t at_ms)
{
    struct sql_stmt *st =
        sql_prepare(s, "INSERT INTO pop_logins(ip_key, \"user\", at_ms) VALUES (?1, ?2, ?3)");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, key);
    sql_bind_text(st, 2, user);
    sql_bind_i64(st, 3, at_ms);
    return store_step_done(s, st, "record login");
}

int store_window_login(struct store *s, const char *key, const char *user, int64_t now_ms,
                       int64_t duration_ms, bool *failed_out)
{
    *failed_out = false;
    if (store_sp_begin(s, "window_login") != STORE_OK)
        return STORE_ERR;
    int rc = store_window_open(s, key, user, now_ms, duration_ms);
    if (rc == STORE_OK)
        rc = store_pop_login_record(s, key, user, now_ms);
    if (rc == STORE_OK)
        rc = store_sp_release(s, "window_login");
    if (rc == STORE_OK)
        return STORE_OK;
    if (store_sp_undo(s, "window_login") != STORE_OK)
        return STORE_ERR;
    *failed_out = true;
    return STORE_OK;
}

int store_window_close(struct store *s, const char *key)
{
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM windows WHERE ip_key = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, key);
    return store_step_changed(s, st, "close window");
}

int store_window_list(struct store *s, int64_t now_ms, store_window_fn fn, void *ctx)
{
    struct sql_stmt *st =
        sql_prepare(s, "SELECT ip_key, \"user\", opened_ms, expires_ms, relayed FROM windows"
                       " WHERE expires_ms > ?1 ORDER BY opened_ms, ip_key");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, now_ms);
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct store_window w = {
            .key = sql_col_text(st, 0),
            .user = sql_col_text(st, 1),
            .opened_ms = sql_col_i64(st, 2),
            .expires_ms = sql_col_i64(st, 3),
            .relayed = sql_col_i64(st, 4),
        };
        if (fn(ctx, &w) != 0)
            break;
    }
    return store_rows_end(s, st, rc, "list windows");
}

int store_window_lookup(struct store *s, const char *key, int64_t now_ms, char *user_out,
                        size_t userlen, int64_t *expires_out, int64_t *relayed_out)
{
    struct sql_stmt *st =
        sql_prepare(s, "SELECT \"user\", expires_ms, relayed FROM windows WHERE ip_key = ?1"
                       " AND expires_ms > ?2");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, key);
    sql_bind_i64(st, 2, now_ms);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        snprintf(user_out, userlen, "%s", sql_col_text(st, 0));
        *expires_out = sql_col_i64(st, 1);
        *relayed_out = sql_col_i64(st, 2);
    } else if (rc == SQL_DONE) {
        status = STORE_NOT_FOUND;
    } else {
        status = store_fail(s, "look up window");
    }
    sql_reset(st);
    return status;
}

int store_window_take_relay(struct store *s, const char *key, int64_t now_ms, int64_t max)
{
    struct sql_stmt *st =
        sql_prepare(s, "UPDATE windows SET relayed = relayed + 1"
                       " WHERE ip_key = ?1 AND expires_ms > ?2 AND relayed >= 0 AND relayed < ?3");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, key);
    sql_bind_i64(st, 2, now_ms);
    sql_bind_i64(st, 3, max);
    return store_step_changed(s, st, "count relayed");
}

int store_window_purge(struct store *s, int64_t now_ms)
{
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM windows WHERE expires_ms <= ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, now_ms);
    return store_step_done(s, st, "purge windows");
}

/* The windows table only holds windows that are open or expired since the last purge (every
 * HOUSEKEEPING interval), so this scan stays as small as the set of roaming clients. */
int store_window_count_open(struct store *s, int64_t now_ms, int64_t *count_out)
{
    struct sql_stmt *st = sql_prepare(s, "SELECT count(*) FROM windows WHERE expires_ms > ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, now_ms);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW)
        *count_out = sql_col_i64(st, 0);
    else
        status = store_fail(s, "count windows");
    sql_reset(st);
    return status;
}
