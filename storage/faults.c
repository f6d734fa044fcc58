/*
 * faults.c - the faults table (schema 8): see faults.h. One statement per function; nothing
 * here interprets a rule.
 */
#include "storage/faults.h"

#include "storage/sqlite/legacy.h"

int store_fault_add(struct store *s, const struct fault_spec *spec, int64_t now_ms, int64_t *id_out)
{
    sqlite3_stmt *st = legacy_prepare(
        s, "INSERT INTO faults(point, action, client, user, sender, recipient, reply, delay_ms,"
           " after_bytes, times, ppm, seed, created_ms, message)"
           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
    if (st == NULL)
        return STORE_ERR;
    const char *texts[] = {spec->point,  spec->action,    spec->client, spec->user,
                           spec->sender, spec->recipient, spec->reply};
    for (int i = 0; i < 7; i++)
        sqlite3_bind_text(st, i + 1, texts[i] ? texts[i] : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, spec->delay_ms);
    sqlite3_bind_int64(st, 9, spec->after_bytes);
    sqlite3_bind_int64(st, 10, spec->times);
    sqlite3_bind_int64(st, 11, spec->ppm);
    sqlite3_bind_int64(st, 12, spec->seed);
    sqlite3_bind_int64(st, 13, now_ms);
    sqlite3_bind_int64(st, 14, spec->message);
    int rc = legacy_step_done(s, st, "add fault");
    if (rc == STORE_OK)
        *id_out = sqlite3_last_insert_rowid(sqlite_of(s)->db);
    return rc;
}

int store_fault_del(struct store *s, int64_t id)
{
    sqlite3_stmt *st = legacy_prepare(s, "DELETE FROM faults WHERE id = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    return legacy_step_changed(s, st, "delete fault");
}

static const char *text_col(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t != NULL ? t : "";
}

int store_fault_list(struct store *s, store_fault_fn fn, void *ctx)
{
    sqlite3_stmt *st = legacy_prepare(
        s, "SELECT id, point, action, client, user, sender, recipient, reply, delay_ms,"
           " after_bytes, times, ppm, seed, message FROM faults ORDER BY id");
    if (st == NULL)
        return STORE_ERR;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct fault_spec spec = {
            .point = text_col(st, 1),
            .action = text_col(st, 2),
            .client = text_col(st, 3),
            .user = text_col(st, 4),
            .sender = text_col(st, 5),
            .recipient = text_col(st, 6),
            .reply = text_col(st, 7),
            .delay_ms = sqlite3_column_int64(st, 8),
            .after_bytes = sqlite3_column_int64(st, 9),
            .times = sqlite3_column_int64(st, 10),
            .ppm = sqlite3_column_int64(st, 11),
            .seed = sqlite3_column_int64(st, 12),
            .message = sqlite3_column_int64(st, 13),
        };
        if (fn(ctx, sqlite3_column_int64(st, 0), &spec) != 0)
            break;
    }
    return legacy_rows_end(s, st, rc, "list faults");
}

int store_fault_version(struct store *s, int64_t *max_id_out, int64_t *count_out)
{
    sqlite3_stmt *st = legacy_prepare(s, "SELECT coalesce(max(id), 0), count(*) FROM faults");
    if (st == NULL)
        return STORE_ERR;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *max_id_out = sqlite3_column_int64(st, 0);
        *count_out = sqlite3_column_int64(st, 1);
    }
    int status = rc == SQLITE_ROW ? STORE_OK : store_fail(s, "fault version");
    legacy_reset(st);
    return status;
}
