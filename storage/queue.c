/*
 * queue.c - the outbound queue: one row per remote recipient of a stored message. The runner's
 * claim and result functions arrive with outbound delivery; here are the admin views.
 */
#include "storage/store_internal.h"

int store_queue_list(struct store *s, store_queue_fn fn, void *ctx)
{
    sqlite3_stmt *st = store_prepare(
        s, "SELECT id, sender, recipient, created_ms, next_attempt_ms, attempts, last_error"
           " FROM queue ORDER BY next_attempt_ms, id");
    if (st == NULL)
        return STORE_ERR;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_queue_entry q = {
            .id = sqlite3_column_int64(st, 0),
            .sender = (const char *)sqlite3_column_text(st, 1),
            .recipient = (const char *)sqlite3_column_text(st, 2),
            .created_ms = sqlite3_column_int64(st, 3),
            .next_attempt_ms = sqlite3_column_int64(st, 4),
            .attempts = sqlite3_column_int64(st, 5),
            .last_error = (const char *)sqlite3_column_text(st, 6),
        };
        if (fn(ctx, &q) != 0)
            break;
    }
    return store_rows_end(s, st, rc, "list queue");
}

int store_queue_drop(struct store *s, int64_t id)
{
    /* The queue_release trigger drops the message body if nothing else refers to it. */
    sqlite3_stmt *st = store_prepare(s, "DELETE FROM queue WHERE id = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    int status = store_step_done(s, st, "drop queue entry");
    if (status == STORE_OK && sqlite3_changes(s->db) == 0)
        status = STORE_NOT_FOUND;
    return status;
}
