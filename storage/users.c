/*
 * users.c - mailbox users and their argon2id password hashes (crypto_pwhash_str strings; the
 * hashing itself is common/password.c). Addresses arrive normalised ("local@domain", lower case).
 *
 * Revocation: deleting a user or changing a password closes the relay windows opened under that
 * user, in the same transaction, so a stolen password stops relaying the moment it is revoked.
 * A POP3 session logged in before the change finds out through store_user_unchanged() when it
 * next renews its window (server/pop3/pop3_session.c).
 */
#include "storage/store_internal.h"

#include <stdio.h>
#include <string.h>

int store_user_add(struct store *s, const char *address, const char *domain,
                   const char *password_hash)
{
    struct sql_stmt *st =
        sql_prepare(s, "INSERT INTO users(address, domain_id, password_hash, created_ms)"
                       " SELECT ?1, id, ?3, ?4 FROM domains WHERE name = ?2");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, address);
    sql_bind_text(st, 2, domain);
    sql_bind_text(st, 3, password_hash);
    sql_bind_i64(st, 4, store_now_ms());
    int status = store_step_changed(s, st, "add user");
    if (status == STORE_NOT_FOUND) {
        snprintf(s->errmsg, sizeof(s->errmsg), "%s is not a local domain", domain);
        status = STORE_NO_DOMAIN;
    }
    return status;
}

/* The second half of a revocation: the windows opened under address. */
static int close_windows_of(struct store *s, const char *address)
{
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM windows WHERE \"user\" = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, address);
    return store_step_done(s, st, "close windows");
}

/*
 * Runs the change (st, already bound) and closes the user's windows as one unit: a savepoint,
 * which is a transaction of its own when the caller has none and nests inside the caller's
 * otherwise. STORE_NOT_FOUND (nothing changed) when the user does not exist.
 */
static int revoke(struct store *s, struct sql_stmt *st, const char *address, const char *what)
{
    if (store_sp_begin(s, "revoke") != STORE_OK)
        return STORE_ERR;
    int status = store_step_changed(s, st, what);
    if (status == STORE_OK)
        status = close_windows_of(s, address);
    if (status == STORE_OK)
        status = store_sp_release(s, "revoke"); /* the commit, when the caller has none open */
    if (status != STORE_OK)
        (void)store_sp_undo(s, "revoke"); /* keeps the failure's text */
    return status;
}

int store_user_set_password(struct store *s, const char *address, const char *password_hash)
{
    struct sql_stmt *st = sql_prepare(s, "UPDATE users SET password_hash = ?2 WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, address);
    sql_bind_text(st, 2, password_hash);
    return revoke(s, st, address, "set password");
}

int store_user_del(struct store *s, const char *address)
{
    /* The user's mailbox entries go with it (ON DELETE CASCADE) and the triggers drop message
     * bodies nobody else refers to. */
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM users WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, address);
    return revoke(s, st, address, "delete user");
}

int store_user_unchanged(struct store *s, int64_t id, const char *password_hash)
{
    struct sql_stmt *st =
        sql_prepare(s, "SELECT 1 FROM users WHERE id = ?1 AND password_hash = ?2");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, id);
    sql_bind_text(st, 2, password_hash);
    int rc = sql_step(st);
    int status = rc == SQL_ROW    ? STORE_OK
                 : rc == SQL_DONE ? STORE_NOT_FOUND
                                  : store_fail(s, "check user");
    sql_reset(st);
    return status;
}

int store_user_list(struct store *s, const char *domain_or_null, store_user_fn fn, void *ctx)
{
    struct sql_stmt *st =
        sql_prepare(s, "SELECT u.id, u.address, u.created_ms,"
                       " (SELECT count(*) FROM mailbox m WHERE m.user_id = u.id),"
                       " (SELECT coalesce(sum(m.size), 0) FROM mailbox m WHERE m.user_id = u.id)"
                       " FROM users u JOIN domains d ON d.id = u.domain_id"
                       " WHERE CAST(?1 AS TEXT) IS NULL OR d.name = ?1"
                       " ORDER BY d.name, u.address");
    if (st == NULL)
        return STORE_ERR;
    if (domain_or_null != NULL)
        sql_bind_text(st, 1, domain_or_null);
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct store_user u = {
            .id = sql_col_i64(st, 0),
            .address = sql_col_text(st, 1),
            .created_ms = sql_col_i64(st, 2),
            .messages = sql_col_i64(st, 3),
            .bytes = sql_col_i64(st, 4),
        };
        if (fn(ctx, &u) != 0)
            break;
    }
    return store_rows_end(s, st, rc, "list users");
}

int store_user_first(struct store *s, const char *domain_or_null, int64_t *id_out)
{
    /* Two statements rather than "?1 IS NULL OR", each with one plan: the domain by its
     * name, then its first user on the users_domain_address index; or the domains in name order,
     * each asking that index for its first user, until one has any. */
    struct sql_stmt *st =
        domain_or_null != NULL
            ? sql_prepare(s, "SELECT u.id FROM domains d JOIN users u ON u.domain_id = d.id"
                             " WHERE d.name = ?1 ORDER BY u.address LIMIT 1")
            : sql_prepare(s,
                          "SELECT first FROM (SELECT d.name AS name, (SELECT u.id FROM users u"
                          "  WHERE u.domain_id = d.id ORDER BY u.address LIMIT 1) AS first"
                          "  FROM domains d) AS f WHERE first IS NOT NULL ORDER BY name LIMIT 1");
    if (st == NULL)
        return STORE_ERR;
    if (domain_or_null != NULL)
        sql_bind_text(st, 1, domain_or_null);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW)
        *id_out = sql_col_i64(st, 0);
    else if (rc == SQL_DONE)
        status = STORE_NOT_FOUND;
    else
        status = store_fail(s, "first user");
    sql_reset(st);
    return status;
}

int store_user_get(struct store *s, const char *address, int64_t *id_out, char *hash_out,
                   size_t hashlen)
{
    struct sql_stmt *st = sql_prepare(s, "SELECT id, password_hash FROM users WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, address);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW) {
        *id_out = sql_col_i64(st, 0);
        const char *h = sql_col_text(st, 1);
        if (h == NULL || strlen(h) >= hashlen) {
            snprintf(s->errmsg, sizeof(s->errmsg), "stored hash of %s is unusable", address);
            status = STORE_ERR;
        } else {
            memcpy(hash_out, h, strlen(h) + 1);
        }
    } else if (rc == SQL_DONE) {
        status = STORE_NOT_FOUND;
    } else {
        status = store_fail(s, "look up user");
    }
    sql_reset(st);
    return status;
}
