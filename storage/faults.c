/*
 * faults.c - the faults table (schema 8): see faults.h. One statement per function; nothing
 * here interprets a rule.
 */
#include "storage/faults.h"

#include "storage/store_internal.h"

int store_fault_add(struct store *s, const struct fault_spec *spec, int64_t now_ms, int64_t *id_out)
{
    struct sql_stmt *st = sql_prepare(
        s, "INSERT INTO faults(point, action, client, \"user\", sender, recipient, reply, delay_ms,"
           " after_bytes, times, ppm, seed, created_ms, message)"
           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) RETURNING id");
    if (st == NULL)
        return STORE_ERR;
    const char *texts[] = {spec->point,  spec->action,    spec->client, spec->user,
                           spec->sender, spec->recipient, spec->reply};
    for (int i = 0; i < 7; i++)
        sql_bind_text(st, i + 1, texts[i] ? texts[i] : "");
    sql_bind_i64(st, 8, spec->delay_ms);
    sql_bind_i64(st, 9, spec->after_bytes);
    sql_bind_i64(st, 10, spec->times);
    sql_bind_i64(st, 11, spec->ppm);
    sql_bind_i64(st, 12, spec->seed);
    sql_bind_i64(st, 13, now_ms);
    sql_bind_i64(st, 14, spec->message);
    return store_step_id(s, st, "add fault", id_out);
}

int store_fault_del(struct store *s, int64_t id)
{
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM faults WHERE id = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, id);
    return store_step_changed(s, st, "delete fault");
}

static const char *text_col(struct sql_stmt *st, int i)
{
    const char *t = sql_col_text(st, i);
    return t != NULL ? t : "";
}

int store_fault_list(struct store *s, store_fault_fn fn, void *ctx)
{
    struct sql_stmt *st = sql_prepare(
        s, "SELECT id, point, action, client, \"user\", sender, recipient, reply, delay_ms,"
           " after_bytes, times, ppm, seed, message FROM faults ORDER BY id");
    if (st == NULL)
        return STORE_ERR;
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct fault_spec spec = {
            .point = text_col(st, 1),
            .action = text_col(st, 2),
            .client = text_col(st, 3),
            .user = text_col(st, 4),
            .sender = text_col(st, 5),
            .recipient = text_col(st, 6),
            .reply = text_col(st, 7),
            .delay_ms = sql_col_i64(st, 8),
            .after_bytes = sql_col_i64(st, 9),
            .times = sql_col_i64(st, 10),
            .ppm = sql_col_i64(st, 11),
            .seed = sql_col_i64(st, 12),
            .message = sql_col_i64(st, 13),
        };
        if (fn(ctx, sql_col_i64(st, 0), &spec) != 0)
            break;
    }
    return store_rows_end(s, st, rc, "list faults");
}

int store_fault_version(struct store *s, int64_t *max_id_out, int64_t *count_out)
{
    struct sql_stmt *st = sql_prepare(s, "SELECT coalesce(max(id), 0), count(*) FROM faults");
    if (st == NULL)
        return STORE_ERR;
    int rc = sql_step(st);
    if (rc == SQL_ROW) {
        *max_id_out = sql_col_i64(st, 0);
        *count_out = sql_col_i64(st, 1);
    }
    int status = rc == SQL_ROW ? STORE_OK : store_fail(s, "fault version");
    sql_reset(st);
    return status;
}
