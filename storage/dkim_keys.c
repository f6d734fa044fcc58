/*
 * dkim_keys.c - the DKIM keys of local domains (schema version 5): adding, deleting, listing.
 * Keys arrive made and checked (common/pure/dkim_key.c); this file only stores their text. The
 * private key leaves the database only for a caller that asks for it by name (with_private).
 */
#include "storage/store_internal.h"

int store_dkim_key_add(struct store *s, const char *domain, const char *selector,
                       const char *algorithm, const char *private_key, const char *public_key)
{
    bool local = false;
    int rc = store_domain_is_local(s, domain, &local);
    if (rc != STORE_OK)
        return rc;
    if (!local)
        return STORE_NO_DOMAIN;
    struct sql_stmt *st = sql_prepare(
        s, "INSERT INTO dkim_keys(domain_id, selector, algorithm, private_key, public_key,"
           " created_ms) SELECT id, ?2, ?3, ?4, ?5, ?6 FROM domains WHERE name = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, domain);
    sql_bind_text(st, 2, selector);
    sql_bind_text(st, 3, algorithm);
    sql_bind_text(st, 4, private_key);
    sql_bind_text(st, 5, public_key);
    sql_bind_i64(st, 6, store_now_ms());
    /* The domain may have gone between the check and the insert: then nothing is inserted. */
    rc = store_step_changed(s, st, "add dkim key");
    return rc == STORE_NOT_FOUND ? STORE_NO_DOMAIN : rc;
}

int store_dkim_key_del(struct store *s, const char *domain, const char *selector)
{
    struct sql_stmt *st =
        sql_prepare(s, "DELETE FROM dkim_keys WHERE selector = ?2"
                       " AND domain_id = (SELECT id FROM domains WHERE name = ?1)");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, domain);
    sql_bind_text(st, 2, selector);
    return store_step_changed(s, st, "delete dkim key");
}

int store_dkim_key_list(struct store *s, const char *domain_or_null, bool with_private,
                        store_dkim_key_fn fn, void *ctx)
{
    struct sql_stmt *st = sql_prepare(
        s, "SELECT d.name, k.selector, k.algorithm, k.private_key, k.public_key, k.created_ms"
           " FROM dkim_keys k JOIN domains d ON d.id = k.domain_id"
           " WHERE CAST(?1 AS TEXT) IS NULL OR d.name = ?1 ORDER BY d.name, k.algorithm");
    if (st == NULL)
        return STORE_ERR;
    if (domain_or_null != NULL)
        sql_bind_text(st, 1, domain_or_null);
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct store_dkim_key k = {
            .domain = sql_col_text(st, 0),
            .selector = sql_col_text(st, 1),
            .algorithm = sql_col_text(st, 2),
            .private_key = with_private ? sql_col_text(st, 3) : NULL,
            .public_key = sql_col_text(st, 4),
            .created_ms = sql_col_i64(st, 5),
        };
        if (k.domain == NULL || k.selector == NULL || k.algorithm == NULL || k.public_key == NULL ||
            (with_private && k.private_key == NULL)) {
            rc = STORE_ERR; /* the columns are NOT NULL: no text means out of memory */
            break;
        }
        if (fn(ctx, &k) != 0)
            break;
    }
    return store_rows_end(s, st, rc, "list dkim keys");
}
