/*
 * users.c - mailbox users and their argon2id password hashes (crypto_pwhash_str strings; the
 * hashing itself is common/password.c). Addresses arrive normalised ("local@domain", lower case).
 *
 * Revocation: deleting a user or changing a password closes the relay windows opened under that
 * user, in the same transaction, so a stolen password stops relaying the moment it is revoked.
 * A POP3 session logged in before the change finds out through store_user_unchanged() when it
 * next renews its window (server/pop3/pop3_session.c).
 */
#include "storage/sqlite/legacy.h"

#include <stdio.h>
#include <string.h>

int store_user_add(struct store *s, const char *address, const char *domain,
                   const char *password_hash)
{
    sqlite3_stmt *st =
        legacy_prepare(s, "INSERT INTO users(address, domain_id, password_hash, created_ms)"
                          " SELECT ?1, id, ?3, ?4 FROM domains WHERE name = ?2");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, password_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, store_now_ms());
    int status = legacy_step_done(s, st, "add user");
    if (status == STORE_OK && sqlite3_changes(sqlite_of(s)->db) == 0) {
        snprintf(s->errmsg, sizeof(s->errmsg), "%s is not a local domain", domain);
        status = STORE_NO_DOMAIN;
    }
    return status;
}

/* The second half of a revocation: the windows opened under address. */
static int close_windows_of(struct store *s, const char *address)
{
    sqlite3_stmt *st = legacy_prepare(s, "DELETE FROM windows WHERE user = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    return legacy_step_done(s, st, "close windows");
}

/*
 * Runs the change (st, already bound) and closes the user's windows as one unit: a savepoint,
 * which is a transaction of its own when the caller has none and nests inside the caller's
 * otherwise. STORE_NOT_FOUND (nothing changed) when the user does not exist.
 */
static int revoke(struct store *s, sqlite3_stmt *st, const char *address, const char *what)
{
    if (store_exec(s, "SAVEPOINT revoke") != STORE_OK)
        return STORE_ERR;
    int status = legacy_step_changed(s, st, what);
    if (status == STORE_OK)
        status = close_windows_of(s, address);
    if (status == STORE_OK && store_exec(s, "RELEASE revoke") == STORE_OK)
        return STORE_OK;
    if (status == STORE_OK)
        status = STORE_ERR; /* RELEASE (the commit) failed */
    char why[STORE_ERRMSG_BYTES];
    snprintf(why, sizeof(why), "%s", s->errmsg);
    if (!sqlite3_get_autocommit(sqlite_of(s)->db))
        store_exec(s, "ROLLBACK TO revoke; RELEASE revoke");
    snprintf(s->errmsg, sizeof(s->errmsg), "%s", why);
    return status;
}

int store_user_set_password(struct store *s, const char *address, const char *password_hash)
{
    sqlite3_stmt *st = legacy_prepare(s, "UPDATE users SET password_hash = ?2 WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, password_hash, -1, SQLITE_STATIC);
    return revoke(s, st, address, "set password");
}

int store_user_del(struct store *s, const char *address)
{
    /* The user's mailbox entries go with it (ON DELETE CASCADE) and the triggers drop message
     * bodies nobody else refers to. */
    sqlite3_stmt *st = legacy_prepare(s, "DELETE FROM users WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    return revoke(s, st, address, "delete user");
}

int store_user_unchanged(struct store *s, int64_t id, const char *password_hash)
{
    sqlite3_stmt *st =
        legacy_prepare(s, "SELECT 1 FROM users WHERE id = ?1 AND password_hash = ?2");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, password_hash, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int status = rc == SQLITE_ROW    ? STORE_OK
                 : rc == SQLITE_DONE ? STORE_NOT_FOUND
                                     : store_fail(s, "check user");
    legacy_reset(st);
    return status;
}

int store_user_list(struct store *s, const char *domain_or_null, store_user_fn fn, void *ctx)
{
    sqlite3_stmt *st =
        legacy_prepare(s, "SELECT u.id, u.address, u.created_ms,"
                          " (SELECT count(*) FROM mailbox m WHERE m.user_id = u.id),"
                          " (SELECT coalesce(sum(m.size), 0) FROM mailbox m WHERE m.user_id = u.id)"
                          " FROM users u JOIN domains d ON d.id = u.domain_id"
                          " WHERE ?1 IS NULL OR d.name = ?1 ORDER BY d.name, u.address");
    if (st == NULL)
        return STORE_ERR;
    if (domain_or_null != NULL)
        sqlite3_bind_text(st, 1, domain_or_null, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_user u = {
            .id = sqlite3_column_int64(st, 0),
            .address = (const char *)sqlite3_column_text(st, 1),
            .created_ms = sqlite3_column_int64(st, 2),
            .messages = sqlite3_column_int64(st, 3),
            .bytes = sqlite3_column_int64(st, 4),
        };
        if (fn(ctx, &u) != 0)
            break;
    }
    return legacy_rows_end(s, st, rc, "list users");
}

int store_user_first(struct store *s, const char *domain_or_null, int64_t *id_out)
{
    /* Two statements rather than "?1 IS NULL OR", each with one plan: the domain by its
     * name, then its first user on the users_domain_address index; or the domains in name order,
     * each asking that index for its first user, until one has any. */
    sqlite3_stmt *st =
        domain_or_null != NULL
            ? legacy_prepare(s, "SELECT u.id FROM domains d JOIN users u ON u.domain_id = d.id"
                                " WHERE d.name = ?1 ORDER BY u.address LIMIT 1")
            : legacy_prepare(s, "SELECT (SELECT u.id FROM users u WHERE u.domain_id = d.id"
                                "  ORDER BY u.address LIMIT 1) AS first FROM domains d"
                                " WHERE first IS NOT NULL ORDER BY d.name LIMIT 1");
    if (st == NULL)
        return STORE_ERR;
    if (domain_or_null != NULL)
        sqlite3_bind_text(st, 1, domain_or_null, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int status = STORE_OK;
    if (rc == SQLITE_ROW)
        *id_out = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        status = STORE_NOT_FOUND;
    else
        status = store_fail(s, "first user");
    legacy_reset(st);
    return status;
}

int store_user_get(struct store *s, const char *address, int64_t *id_out, char *hash_out,
                   size_t hashlen)
{
    sqlite3_stmt *st = legacy_prepare(s, "SELECT id, password_hash FROM users WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int status = STORE_OK;
    if (rc == SQLITE_ROW) {
        *id_out = sqlite3_column_int64(st, 0);
        const char *h = (const char *)sqlite3_column_text(st, 1);
        if (h == NULL || strlen(h) >= hashlen) {
            snprintf(s->errmsg, sizeof(s->errmsg), "stored hash of %s is unusable", address);
            status = STORE_ERR;
        } else {
            memcpy(hash_out, h, strlen(h) + 1);
        }
    } else if (rc == SQLITE_DONE) {
        status = STORE_NOT_FOUND;
    } else {
        status = store_fail(s, "look up user");
    }
    legacy_reset(st);
    return status;
}
