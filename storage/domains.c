/*
 * domains.c - local domains: mail for them is delivered here. Names arrive normalised
 * (common/pure/address.c domain_normalize), so equality is plain string equality.
 */
#include "storage/sqlite/legacy.h"

int store_domain_add(struct store *s, const char *name)
{
    sqlite3_stmt *st = legacy_prepare(s, "INSERT INTO domains(name, created_ms) VALUES (?1, ?2)");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, store_now_ms());
    return legacy_step_done(s, st, "add domain");
}

int store_domain_del(struct store *s, const char *name)
{
    sqlite3_stmt *st = legacy_prepare(s, "DELETE FROM domains WHERE name = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    return legacy_step_changed(s, st, "delete domain");
}

int store_domain_list(struct store *s, store_domain_fn fn, void *ctx)
{
    sqlite3_stmt *st = legacy_prepare(
        s, "SELECT d.name, d.created_ms, (SELECT count(*) FROM users u WHERE u.domain_id = d.id)"
           " FROM domains d ORDER BY d.name");
    if (st == NULL)
        return STORE_ERR;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_domain d = {
            .name = (const char *)sqlite3_column_text(st, 0),
            .created_ms = sqlite3_column_int64(st, 1),
            .users = sqlite3_column_int64(st, 2),
        };
        if (fn(ctx, &d) != 0)
            break;
    }
    return legacy_rows_end(s, st, rc, "list domains");
}

int store_domain_is_local(struct store *s, const char *name, bool *local_out)
{
    sqlite3_stmt *st = legacy_prepare(s, "SELECT 1 FROM domains WHERE name = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int status = STORE_OK;
    if (rc == SQLITE_ROW)
        *local_out = true;
    else if (rc == SQLITE_DONE)
        *local_out = false;
    else
        status = store_fail(s, "look up domain");
    legacy_reset(st);
    return status;
}
