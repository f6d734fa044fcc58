/*
 * domains.c - local domains: mail for them is delivered here. Names arrive normalised
 * (common/pure/address.c domain_normalize), so equality is plain string equality.
 */
#include "storage/store_internal.h"

int store_domain_add(struct store *s, const char *name)
{
    struct sql_stmt *st = sql_prepare(s, "INSERT INTO domains(name, created_ms) VALUES (?1, ?2)");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, name);
    sql_bind_i64(st, 2, store_now_ms());
    return store_step_done(s, st, "add domain");
}

int store_domain_del(struct store *s, const char *name)
{
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM domains WHERE name = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, name);
    return store_step_changed(s, st, "delete domain");
}

int store_domain_list(struct store *s, store_domain_fn fn, void *ctx)
{
    struct sql_stmt *st = sql_prepare(
        s, "SELECT d.name, d.created_ms, (SELECT count(*) FROM users u WHERE u.domain_id = d.id)"
           " FROM domains d ORDER BY d.name");
    if (st == NULL)
        return STORE_ERR;
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct store_domain d = {
            .name = sql_col_text(st, 0),
            .created_ms = sql_col_i64(st, 1),
            .users = sql_col_i64(st, 2),
        };
        if (fn(ctx, &d) != 0)
            break;
    }
    return store_rows_end(s, st, rc, "list domains");
}

int store_domain_is_local(struct store *s, const char *name, bool *local_out)
{
    struct sql_stmt *st = sql_prepare(s, "SELECT 1 FROM domains WHERE name = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, name);
    int rc = sql_step(st);
    int status = STORE_OK;
    if (rc == SQL_ROW)
        *local_out = true;
    else if (rc == SQL_DONE)
        *local_out = false;
    else
        status = store_fail(s, "look up domain");
    sql_reset(st);
    return status;
}
