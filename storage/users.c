/*
 * users.c - mailbox users and their argon2id password hashes (crypto_pwhash_str strings; the
 * hashing itself is common/password.c). Addresses arrive normalised ("local@domain", lower case).
 */
#include "storage/store_internal.h"

#include <stdio.h>
#include <string.h>

int store_user_add(struct store *s, const char *address, const char *domain,
                   const char *password_hash)
{
    sqlite3_stmt *st =
        store_prepare(s, "INSERT INTO users(address, domain_id, password_hash, created_ms)"
                         " SELECT ?1, id, ?3, ?4 FROM domains WHERE name = ?2");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, password_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, store_now_ms());
    int status = store_step_done(s, st, "add user");
    if (status == STORE_OK && sqlite3_changes(s->db) == 0) {
        snprintf(s->errmsg, sizeof(s->errmsg), "%s is not a local domain", domain);
        status = STORE_NO_DOMAIN;
    }
    return status;
}

int store_user_set_password(struct store *s, const char *address, const char *password_hash)
{
    sqlite3_stmt *st = store_prepare(s, "UPDATE users SET password_hash = ?2 WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, password_hash, -1, SQLITE_STATIC);
    return store_step_changed(s, st, "set password");
}

int store_user_del(struct store *s, const char *address)
{
    /* The user's mailbox entries go with it (ON DELETE CASCADE) and the triggers drop message
     * bodies nobody else refers to. */
    sqlite3_stmt *st = store_prepare(s, "DELETE FROM users WHERE address = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    return store_step_changed(s, st, "delete user");
}

int store_user_list(struct store *s, const char *domain_or_null, store_user_fn fn, void *ctx)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT u.id, u.address, u.created_ms,"
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
    return store_rows_end(s, st, rc, "list users");
}

int store_user_get(struct store *s, const char *address, int64_t *id_out, char *hash_out,
                   size_t hashlen)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT id, password_hash FROM users WHERE address = ?1");
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
    store_reset(st);
    return status;
}
