/*
 * pop3_maildrop.c - the POP3 TRANSACTION and UPDATE states (RFC 1939 5, 6, 7): STAT, LIST, UIDL,
 * RETR, TOP, DELE, RSET and QUIT's deletions, over the snapshot taken at login.
 *
 * Message numbers and sizes come from the snapshot (storage/mailbox.h), so they stay stable for
 * the whole session; a size is the exact octet count of the stored body, which is canonical CRLF
 * and not dot-stuffed, i.e. exactly what RETR sends before stuffing. DELE only marks; RSET
 * unmarks; QUIT enters UPDATE and deletes the marked entries in one writer job, answering after
 * the commit. A connection that drops deletes nothing.
 *
 * Multi-line answers that can be large (RETR, TOP, and LIST/UIDL of a big maildrop) go through
 * one output pump: it writes until the connection's unsent output passes CONN_OUTPUT_HIGH_BYTES,
 * then asks for on_drain and returns, so a slow reader is held by backpressure and memory stays
 * bounded (a body is read POP3_BODY_CHUNK_BYTES at a time from its own reader, never whole).
 * Reading is paused meanwhile, so pipelined commands wait for the end of the answer; since the
 * connection's idle timer is off while paused, the session's own timer aborts a reader that takes
 * nothing for pop3.timeout.
 *
 * What it does not do: logging in, the lock, the window (pop3_session.c); SQL (storage/).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "server/pop3/pop3_internal.h"
#include "common/pure/pop3_parse.h"
#include "storage/store.h"

/* Body octets read per store_body_read call. */
#define POP3_BODY_CHUNK_BYTES (32 * 1024)
/* The pump's output buffer: a body chunk can grow at most to twice its size when stuffed. */
#define POP3_OUT_BUF_BYTES (2 * POP3_BODY_CHUNK_BYTES + 16)
/* A LIST/UIDL line: "n " + a uidl or a size + CRLF. */
#define POP3_LIST_LINE_MAX_BYTES (24 + STORE_UIDL_MAX_CHARS + 2)

int pop3_maildrop_load(struct pop3_session *s, struct store_mail_entry *entries, size_t count)
{
    s->entries = entries;
    s->count = count;
    s->deleted = count > 0 ? calloc(count, sizeof(*s->deleted)) : NULL;
    if (count > 0 && s->deleted == NULL) {
        pop3_maildrop_free(s);
        return -1;
    }
    s->deleted_count = 0;
    s->deleted_bytes = 0;
    s->total_bytes = 0;
    for (size_t i = 0; i < count; i++)
        s->total_bytes += entries[i].size;
    return 0;
}

static void stream_stop(struct pop3_session *s)
{
    store_body_close(&s->reader);
    free(s->in_buf);
    free(s->out_buf);
    s->in_buf = NULL;
    s->out_buf = NULL;
    s->stream = POP3_STREAM_NONE;
    if (s->timer_open)
        uv_timer_stop(&s->timer);
}

void pop3_maildrop_free(struct pop3_session *s)
{
    stream_stop(s);
    free(s->entries);
    free(s->deleted);
    s->entries = NULL;
    s->deleted = NULL;
    s->count = 0;
}

/* The message msg (RFC 1939 "msg"), or NULL after an error reply: out of range, or marked as
 * deleted. *index_out is its index in the snapshot. */
static const struct store_mail_entry *find_message(struct pop3_session *s, uint64_t msg,
                                                   size_t *index_out)
{
    if (msg == 0 || msg > s->count) {
        pop3_reply_error(s, "-ERR No such message");
        return NULL;
    }
    size_t i = (size_t)msg - 1;
    if (s->deleted[i]) {
        pop3_reply_error(s, "-ERR Message %" PRIu64 " already deleted", msg);
        return NULL;
    }
    *index_out = i;
    return &s->entries[i];
}

/* ---- the output pump ----------------------------------------------------------------------- */

static void stream_end(struct pop3_session *s)
{
    if (s->stream == POP3_STREAM_BODY)
        log_info("pop3", conn_sid(s->conn), "event=retr msg=%" PRIu64 " top=%s octets=%llu",
                 s->stream_msg, s->stream_top ? "yes" : "no", (unsigned long long)s->ds.out_bytes);
    stream_stop(s);
    conn_resume_reading(s->conn);
}

static void arm_stall_timer(struct pop3_session *s)
{
    pop3_timer_start(s, s->app->cfg->pop3.timeout_ms);
}

void pop3_stream_stalled(struct pop3_session *s)
{
    if (s->stream != POP3_STREAM_NONE)
        conn_abort(s->conn, "timeout: reader stalled");
}

/* LIST/UIDL: a batch of lines; true when the listing is complete. */
static bool pump_listing(struct pop3_session *s)
{
    size_t used = 0;
    while (s->stream_next < s->count && used + POP3_LIST_LINE_MAX_BYTES <= POP3_OUT_BUF_BYTES) {
        size_t i = s->stream_next++;
        if (s->deleted[i])
            continue;
        int k;
        if (s->stream == POP3_STREAM_LIST)
            k = snprintf((char *)s->out_buf + used, POP3_OUT_BUF_BYTES - used, "%zu %lld\r\n",
                         i + 1, (long long)s->entries[i].size);
        else
            k = snprintf((char *)s->out_buf + used, POP3_OUT_BUF_BYTES - used, "%zu %s\r\n", i + 1,
                         s->entries[i].uidl);
        if (k > 0)
            used += (size_t)k;
    }
    bool done = s->stream_next >= s->count;
    if (done && used + 3 <= POP3_OUT_BUF_BYTES) {
        memcpy(s->out_buf + used, ".\r\n", 3);
        used += 3;
    } else {
        done = false;
    }
    conn_write(s->conn, s->out_buf, used);
    return done;
}

/* RETR/TOP: one step; 1 when the body and its terminator are out, 0 to go on, -1 on failure. */
static int pump_body(struct pop3_session *s)
{
    if (s->in_off == s->in_len && !s->in_eof && !dotstuff_has_enough(&s->ds)) {
        size_t n = 0;
        int rc = store_body_read(s->reader, s->in_buf, POP3_BODY_CHUNK_BYTES, &n);
        if (rc != STORE_OK) {
            log_error("pop3", conn_sid(s->conn), "event=retr-failed msg=%" PRIu64 " error=\"%s\"",
                      s->stream_msg, store_errmsg(s->app->reads));
            return -1;
        }
        s->in_off = 0;
        s->in_len = n;
        if (n < POP3_BODY_CHUNK_BYTES)
            s->in_eof = true;
        if (s->in_eof)
            store_body_close(&s->reader); /* no snapshot held while the tail goes out */
    }
    if (s->in_off < s->in_len && !dotstuff_has_enough(&s->ds)) {
        size_t used = 0;
        size_t k = dotstuff_encode(&s->ds, s->in_buf + s->in_off, s->in_len - s->in_off, &used,
                                   s->out_buf, POP3_OUT_BUF_BYTES);
        s->in_off += used;
        conn_write(s->conn, s->out_buf, k);
        return 0;
    }
    if (s->in_eof || dotstuff_has_enough(&s->ds)) {
        size_t k = dotstuff_finish(&s->ds, s->out_buf, POP3_OUT_BUF_BYTES);
        conn_write(s->conn, s->out_buf, k);
        return dotstuff_is_done(&s->ds) ? 1 : 0;
    }
    return 0;
}

void pop3_stream_pump(struct pop3_session *s)
{
    struct conn *c = s->conn;
    while (s->stream != POP3_STREAM_NONE && !conn_is_closing(c)) {
        struct conn_stats st;
        conn_get_stats(c, &st);
        if (st.output_bytes >= CONN_OUTPUT_HIGH_BYTES) {
            /* Backpressure: wait until the client has read half of it. */
            conn_want_drain(c);
            arm_stall_timer(s);
            return;
        }
        if (s->stream == POP3_STREAM_BODY) {
            int rc = pump_body(s);
            if (rc < 0) {
                /* "+OK" is already out: the answer cannot turn into -ERR any more. */
                stream_stop(s);
                conn_abort(c, "retr-failed");
                return;
            }
            if (rc > 0)
                stream_end(s);
        } else if (pump_listing(s)) {
            stream_end(s);
        }
    }
}

static int stream_start(struct pop3_session *s, enum pop3_stream kind)
{
    s->out_buf = malloc(POP3_OUT_BUF_BYTES);
    if (s->out_buf == NULL)
        return -1;
    s->stream = kind;
    s->stream_next = 0;
    conn_pause_reading(s->conn);
    return 0;
}

/* ---- commands ------------------------------------------------------------------------------ */

void pop3_cmd_stat(struct pop3_session *s, const char *args)
{
    if (args[0] != '\0') {
        pop3_reply_error(s, "-ERR Syntax: STAT");
        return;
    }
    /* RFC 1939 5: messages marked as deleted are not counted. */
    conn_reply(s->conn, "+OK %zu %lld\r\n", s->count - s->deleted_count,
               (long long)(s->total_bytes - s->deleted_bytes));
}

/* LIST and UIDL share their shape: one line for "n", or a listing. */
static void listing(struct pop3_session *s, const char *args, enum pop3_stream kind)
{
    const char *syntax = kind == POP3_STREAM_LIST ? "LIST [msg]" : "UIDL [msg]";
    if (args[0] != '\0') {
        uint64_t v[POP3_ARGS_MAX];
        unsigned n;
        size_t i;
        if (pop3_parse_numbers(args, 1, 1, v, &n) != 0) {
            pop3_reply_error(s, "-ERR Syntax: %s", syntax);
            return;
        }
        const struct store_mail_entry *e = find_message(s, v[0], &i);
        if (e == NULL)
            return;
        if (kind == POP3_STREAM_LIST)
            conn_reply(s->conn, "+OK %zu %lld\r\n", i + 1, (long long)e->size);
        else
            conn_reply(s->conn, "+OK %zu %s\r\n", i + 1, e->uidl);
        return;
    }
    if (stream_start(s, kind) != 0) {
        pop3_reply_error(s, "-ERR [SYS/TEMP] Out of memory");
        return;
    }
    if (kind == POP3_STREAM_LIST)
        conn_reply(s->conn, "+OK %zu messages (%lld octets)\r\n", s->count - s->deleted_count,
                   (long long)(s->total_bytes - s->deleted_bytes));
    else
        conn_reply(s->conn, "+OK Unique-ID listing follows\r\n");
    pop3_stream_pump(s);
}

void pop3_cmd_list(struct pop3_session *s, const char *args)
{
    listing(s, args, POP3_STREAM_LIST);
}

void pop3_cmd_uidl(struct pop3_session *s, const char *args)
{
    listing(s, args, POP3_STREAM_UIDL);
}

/* RETR msg, or TOP msg n (top_lines >= 0). */
static void send_body(struct pop3_session *s, uint64_t msg, bool top, uint64_t top_lines)
{
    size_t i;
    const struct store_mail_entry *e = find_message(s, msg, &i);
    if (e == NULL)
        return;
    int64_t size = 0;
    int rc = store_message_open(s->app->reads, s->user_id, e->id, STORE_MESSAGE_HOLD_MS, &s->reader,
                                &size);
    if (rc == STORE_NOT_FOUND) {
        /* Removed by an administrator meanwhile (the lock keeps other sessions out). */
        pop3_reply_error(s, "-ERR [SYS/PERM] Message %" PRIu64 " is no longer available", msg);
        return;
    }
    if (rc != STORE_OK) {
        log_error("pop3", conn_sid(s->conn), "event=retr-failed msg=%" PRIu64 " error=\"%s\"", msg,
                  store_errmsg(s->app->reads));
        pop3_reply_error(s, "-ERR [SYS/TEMP] Cannot read the message now");
        return;
    }
    s->in_buf = malloc(POP3_BODY_CHUNK_BYTES);
    if (s->in_buf == NULL || stream_start(s, POP3_STREAM_BODY) != 0) {
        stream_stop(s);
        pop3_reply_error(s, "-ERR [SYS/TEMP] Out of memory");
        return;
    }
    s->in_off = s->in_len = 0;
    s->in_eof = false;
    s->stream_msg = msg;
    s->stream_top = top;
    if (top) {
        dotstuff_init_top(&s->ds, top_lines);
        conn_reply(s->conn, "+OK Top of message follows\r\n");
    } else {
        dotstuff_init(&s->ds);
        /* RFC 1939 7: the size given is the message's, before byte-stuffing. */
        conn_reply(s->conn, "+OK %lld octets\r\n", (long long)size);
    }
    pop3_stream_pump(s);
}

void pop3_cmd_retr(struct pop3_session *s, const char *args)
{
    uint64_t v[POP3_ARGS_MAX];
    unsigned n;
    if (pop3_parse_numbers(args, 1, 1, v, &n) != 0) {
        pop3_reply_error(s, "-ERR Syntax: RETR msg");
        return;
    }
    send_body(s, v[0], false, 0);
}

void pop3_cmd_top(struct pop3_session *s, const char *args)
{
    uint64_t v[POP3_ARGS_MAX];
    unsigned n;
    if (pop3_parse_numbers(args, 2, 2, v, &n) != 0) {
        pop3_reply_error(s, "-ERR Syntax: TOP msg n");
        return;
    }
    send_body(s, v[0], true, v[1]);
}

void pop3_cmd_dele(struct pop3_session *s, const char *args)
{
    uint64_t v[POP3_ARGS_MAX];
    unsigned n;
    size_t i;
    if (pop3_parse_numbers(args, 1, 1, v, &n) != 0) {
        pop3_reply_error(s, "-ERR Syntax: DELE msg");
        return;
    }
    const struct store_mail_entry *e = find_message(s, v[0], &i);
    if (e == NULL)
        return;
    s->deleted[i] = true;
    s->deleted_count++;
    s->deleted_bytes += e->size;
    conn_reply(s->conn, "+OK Message %zu deleted\r\n", i + 1);
}

void pop3_cmd_rset(struct pop3_session *s, const char *args)
{
    if (args[0] != '\0') {
        pop3_reply_error(s, "-ERR Syntax: RSET");
        return;
    }
    if (s->count > 0)
        memset(s->deleted, 0, s->count * sizeof(*s->deleted));
    s->deleted_count = 0;
    s->deleted_bytes = 0;
    conn_reply(s->conn, "+OK Maildrop has %zu messages (%lld octets)\r\n", s->count,
               (long long)s->total_bytes);
}

/* ---- UPDATE -------------------------------------------------------------------------------- */

static int update_run(struct store *st, struct writer_job *job)
{
    struct pop3_update_job *u = (struct pop3_update_job *)job;
    return store_mailbox_delete(st, u->user_id, u->ids, u->n, &u->deleted);
}

static void update_done(struct writer_job *job, int status)
{
    struct pop3_update_job *u = (struct pop3_update_job *)job;
    struct pop3_session *s = u->s;
    struct conn *c = s->conn;
    uint64_t sid = s->closed ? 0 : conn_sid(c);
    if (status == 0)
        log_info("pop3", sid, "event=update user=%s deleted=%zu", s->address, u->deleted);
    else
        log_error("pop3", sid, "event=update-failed user=%s status=%d", s->address, status);
    if (!s->closed) {
        if (status == 0)
            conn_reply(c, "+OK Bye: %zu messages deleted\r\n", u->deleted);
        else
            conn_reply(c, "-ERR [SYS/TEMP] Messages could not be deleted; none were\r\n");
        conn_close(c, "quit");
    }
    free(u->ids);
    u->ids = NULL;
    conn_unref(&c);
    pop3_release(s);
}

void pop3_maildrop_quit(struct pop3_session *s)
{
    pop3_enter_state(s, POP3_STATE_UPDATE);
    if (s->deleted_count == 0) {
        log_info("pop3", conn_sid(s->conn), "event=update user=%s deleted=0", s->address);
        conn_reply(s->conn, "+OK Bye\r\n");
        conn_close(s->conn, "quit");
        return;
    }
    struct pop3_update_job *u = &s->update_job;
    memset(u, 0, sizeof(*u));
    u->ids = malloc(s->deleted_count * sizeof(*u->ids));
    if (u->ids == NULL) {
        conn_reply(s->conn, "-ERR [SYS/TEMP] Messages could not be deleted; none were\r\n");
        conn_close(s->conn, "quit");
        return;
    }
    for (size_t i = 0; i < s->count; i++)
        if (s->deleted[i])
            u->ids[u->n++] = s->entries[i].id;
    u->job.run = update_run;
    u->job.done = update_done;
    u->s = s;
    u->user_id = s->user_id;
    /* Nothing is read meanwhile: the answer comes after the commit, then the close. */
    conn_pause_reading(s->conn);
    conn_ref(s->conn);
    s->pending++;
    if (writer_submit(s->app->writer, &u->job) != 0) {
        s->pending--;
        struct conn *c = s->conn;
        conn_unref(&c);
        free(u->ids);
        u->ids = NULL;
        conn_reply(s->conn, "-ERR [SYS/TEMP] Messages could not be deleted; none were\r\n");
        conn_close(s->conn, "quit");
    }
}
