/*
 * pop3_maildrop.c - the maildrop of a logged-in POP3 session: the lock (one session per
 * maildrop), the snapshot taken at login, and the TRANSACTION and UPDATE work over it (RFC 1939
 * 5, 6, 7): STAT, LIST, UIDL, RETR, TOP, DELE, RSET and QUIT's deletions.
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
 * nothing for pop3.timeout (the pump's result says when to arm it).
 *
 * Reads go through the loop's reader (storage/reader.h), one job at a time: the snapshot, the
 * opening of a body and each chunk of it. Inline they run inside the call, so the SQLite path is
 * the plain read it always was plus one indirect call; with reader threads the command or the
 * pump answers PENDING and read_done carries on from the same continuation on the loop. While a
 * job is out nothing it touches (the body reader, in_buf) is freed: a stop leaves them to
 * read_done, which frees them once it sees the connection gone.
 *
 * The maildrop lock (one session per maildrop across every node) is a database row
 * (storage/nodes.c) plus this process's set of holders (pop3_lock.c): pop3_maildrop_lock takes
 * the local entry, the login's writer job the row; UPDATE releases the row in its own commit, and
 * any other end of the session in a job of its own.
 *
 * It owns the struct pop3_maildrop and its entry in the lock set. It does not own the session:
 * pop3_session.c calls in through pop3_maildrop.h, sends the error replies handed back, and keeps
 * itself alive while the UPDATE job is out. Nor does it check passwords, open the relay window
 * (pop3_session.c) or hold SQL (storage/).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdarg.h>

#include "common/log.h"
#include "common/util.h"
#include "common/pure/pop3_parse.h"
#include "server/pop3/pop3_lock.h"
#include "server/pop3/pop3_maildrop.h"
#include "storage/store.h"

/* "message" or "messages", to go with a count of n: "1 messages" reads as a wrong count. */
static const char *messages(size_t n)
{
    return n == 1 ? "message" : "messages";
}

/* Body octets read per store_body_read call. */
#define POP3_BODY_CHUNK_BYTES (32 * 1024)
/* The pump's output buffer: a body chunk can grow at most to twice its size when stuffed. */
#define POP3_OUT_BUF_BYTES (2 * POP3_BODY_CHUNK_BYTES + 16)
/* A LIST/UIDL line: "n " + a uidl or a size + CRLF. */
#define POP3_LIST_LINE_MAX_BYTES (24 + POP3_UIDL_MAX_BYTES + 2)

/* Writes an error reply and returns POP3_MD_ERROR, so a refusal is one line. */
static __attribute__((format(printf, 2, 3))) enum pop3_md_result
refuse(char reply[POP3_MD_REPLY_MAX_BYTES], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reply, POP3_MD_REPLY_MAX_BYTES, fmt, ap);
    va_end(ap);
    return POP3_MD_ERROR;
}

/* ---- open and close ------------------------------------------------------------------------ */

static void stream_stop(struct pop3_maildrop *md)
{
    if (md->stream == POP3_STREAM_BODY && md->conn != NULL)
        conn_body_end(md->conn);
    if (md->read_out) {
        /* A chunk read is out and uses the body reader and in_buf: read_done frees them. */
        md->stream = POP3_STREAM_NONE;
        md->cut = (struct fault_cut){0};
        return;
    }
    store_body_close(&md->reader);
    free(md->in_buf);
    free(md->out_buf);
    md->in_buf = NULL;
    md->out_buf = NULL;
    md->stream = POP3_STREAM_NONE;
    md->cut = (struct fault_cut){0};
}

void pop3_maildrop_stop(struct pop3_maildrop *md)
{
    stream_stop(md);
    free(md->entries);
    free(md->deleted);
    md->entries = NULL;
    md->deleted = NULL;
    md->count = 0;
    md->conn = NULL;
}

/* The session is over for the maildrop: another session may take it. The database row goes in
 * a job of its own unless the UPDATE job released it already (released_in_db). */
static void maildrop_unlock(struct pop3_maildrop *md, bool released_in_db)
{
    if (!md->locked)
        return;
    if (md->db_locked && !released_in_db)
        pop3_lock_release(md->writer, md->node, md->user_id, md->session);
    else
        pop3_lock_local_release(md->user_id, md->session);
    md->locked = false;
    md->db_locked = false;
}

void pop3_maildrop_close(struct pop3_maildrop *md)
{
    pop3_maildrop_stop(md);
    maildrop_unlock(md, false);
}

/* ---- reads ------------------------------------------------------------------------------- */

/* On a reader thread, or on the loop inline. Only rj and, for a chunk, the body reader and
 * in_buf are touched: the loop leaves them alone while the job is out. */
static int read_run(struct store *st, struct reader_job *job)
{
    struct pop3_md_read_job *rj = container_of(job, struct pop3_md_read_job, job);
    struct pop3_maildrop *md = container_of(rj, struct pop3_maildrop, rj);
    int rc = STORE_ERR;
    switch (rj->what) {
    case POP3_MD_READ_OPEN:
        rc = store_mailbox_snapshot(st, rj->user_id, &rj->entries, &rj->count);
        break;
    case POP3_MD_READ_BODY:
        rc = store_message_open(st, rj->user_id, rj->entry_id, STORE_MESSAGE_HOLD_MS, &rj->body,
                                &rj->size);
        if (rc == STORE_OK && rj->threaded)
            store_body_rebind(rj->body, NULL); /* the next chunk may run on another thread */
        break;
    case POP3_MD_READ_CHUNK:
        if (rj->threaded)
            store_body_rebind(md->reader, st);
        rc = store_body_read(md->reader, md->in_buf, POP3_BODY_CHUNK_BYTES, &rj->n);
        if (rj->threaded)
            store_body_rebind(md->reader, NULL);
        break;
    }
    if (rc != STORE_OK)
        snprintf(rj->error, sizeof(rj->error), "%s", store_errmsg(st));
    return rc;
}

static void read_done(struct reader_job *job, int status);

/* Submits md->rj (what and its inputs set): READER_DONE with *status_out, or READER_PENDING
 * with reading paused and read_out set. */
static int read_submit(struct pop3_maildrop *md, int *status_out)
{
    md->rj.job.run = read_run;
    md->rj.job.done = read_done;
    md->rj.threaded = !reader_is_inline(md->reads);
    md->rj.error[0] = '\0';
    int outcome = reader_submit(md->reads, &md->rj.job, status_out);
    if (outcome == READER_PENDING) {
        md->read_out = true;
        conn_pause_reading(md->conn);
    }
    return outcome;
}

static enum pop3_md_open snapshot_taken(struct pop3_maildrop *md, int status);
static enum pop3_md_result body_opened(struct pop3_maildrop *md, int status,
                                       char reply[POP3_MD_REPLY_MAX_BYTES]);
static void chunk_read(struct pop3_maildrop *md, int status);

/* A PENDING read is back, on the loop. The connection may have gone meanwhile (md->conn is
 * NULL after pop3_maildrop_stop): then what the read brought is freed here and the session is
 * told only so that it releases what it held. */
static void read_done(struct reader_job *job, int status)
{
    struct pop3_md_read_job *rj = container_of(job, struct pop3_md_read_job, job);
    struct pop3_maildrop *md = container_of(rj, struct pop3_maildrop, rj);
    md->read_out = false;
    char reply[POP3_MD_REPLY_MAX_BYTES] = "";
    int result = 0;
    if (md->conn == NULL) {
        free(rj->entries);
        rj->entries = NULL;
        store_body_close(&rj->body);
        stream_stop(md); /* what the stop left to us: the body reader and the buffers */
    } else if (rj->what == POP3_MD_READ_OPEN) {
        result = (int)snapshot_taken(md, status);
    } else if (rj->what == POP3_MD_READ_BODY) {
        result = (int)body_opened(md, status, reply);
        if (result == POP3_MD_OK || result == POP3_MD_ERROR)
            conn_resume_reading(md->conn); /* nothing streams: the next command may come */
    } else {
        chunk_read(md, status);
    }
    md->on_read(md->read_ctx, rj->what, result, reply);
}

/* ---- open ---------------------------------------------------------------------------------- */

enum pop3_md_open pop3_maildrop_lock(struct pop3_maildrop *md, const struct pop3_md_owner *o)
{
    int held = pop3_lock_local_take(o->user_id, o->session);
    if (held > 0) {
        log_info("pop3", (uint64_t)o->session, "event=login-refused user=%s reason=in-use here=yes",
                 o->address);
        return POP3_MD_IN_USE;
    }
    if (held < 0)
        return POP3_MD_NO_MEMORY;
    md->locked = true;
    md->db_locked = false;
    md->user_id = o->user_id;
    md->session = o->session;
    md->writer = o->writer;
    md->node = o->node;
    snprintf(md->address, sizeof(md->address), "%s", o->address);
    return POP3_MD_OPENED;
}

bool pop3_maildrop_lock_lost(const struct pop3_maildrop *md)
{
    return md->db_locked && pop3_lock_local_is_lost(md->user_id, md->session);
}

void pop3_maildrop_locked_in_db(struct pop3_maildrop *md)
{
    if (!md->locked)
        return;
    md->db_locked = true;
    pop3_lock_local_in_db(md->user_id, md->session);
}

enum pop3_md_open pop3_maildrop_open(struct pop3_maildrop *md, struct conn *c,
                                     struct reader *reader, pop3_md_read_fn on_read, void *ctx)
{
    md->conn = c;
    md->reads = reader;
    md->on_read = on_read;
    md->read_ctx = ctx;
    /* RFC 1939 8: the snapshot fixes message numbers and sizes for the whole session. It is
     * read once the lock's row is held, so that the deletions of a session of another node that
     * held it before have committed. */
    md->rj.what = POP3_MD_READ_OPEN;
    md->rj.user_id = md->user_id;
    md->rj.entries = NULL;
    md->rj.count = 0;
    int status;
    if (read_submit(md, &status) == READER_PENDING)
        return POP3_MD_OPEN_PENDING;
    return snapshot_taken(md, status);
}

/* The snapshot read is over: the maildrop is open, or closed again. */
static enum pop3_md_open snapshot_taken(struct pop3_maildrop *md, int status)
{
    struct store_mail_entry *entries = md->rj.entries;
    size_t count = md->rj.count;
    md->rj.entries = NULL;
    if (status != STORE_OK) {
        log_error("pop3", conn_sid(md->conn), "event=snapshot-failed user=%s error=\"%s\"",
                  md->address, md->rj.error);
        free(entries);
        pop3_maildrop_close(md);
        return POP3_MD_STORE_ERROR;
    }
    md->entries = entries;
    md->count = count;
    md->deleted = count > 0 ? calloc(count, sizeof(*md->deleted)) : NULL;
    if (count > 0 && md->deleted == NULL) {
        pop3_maildrop_close(md);
        return POP3_MD_NO_MEMORY;
    }
    md->deleted_count = 0;
    md->deleted_bytes = 0;
    md->total_bytes = 0;
    for (size_t i = 0; i < count; i++)
        md->total_bytes += entries[i].size;
    return POP3_MD_OPENED;
}

size_t pop3_maildrop_messages(const struct pop3_maildrop *md)
{
    return md->count;
}

int64_t pop3_maildrop_octets(const struct pop3_maildrop *md)
{
    return md->total_bytes;
}

size_t pop3_maildrop_marked(const struct pop3_maildrop *md)
{
    return md->deleted_count;
}

bool pop3_maildrop_is_streaming(const struct pop3_maildrop *md)
{
    return md->stream != POP3_STREAM_NONE;
}

/* The message msg (RFC 1939 "msg"), or NULL with the error reply written: out of range, or
 * marked as deleted. *index_out is its index in the snapshot. */
static const struct store_mail_entry *find_message(struct pop3_maildrop *md, uint64_t msg,
                                                   size_t *index_out,
                                                   char reply[POP3_MD_REPLY_MAX_BYTES])
{
    if (msg == 0 || msg > md->count) {
        refuse(reply, "-ERR No such message");
        return NULL;
    }
    size_t i = (size_t)msg - 1;
    if (md->deleted[i]) {
        refuse(reply, "-ERR Message %" PRIu64 " already deleted", msg);
        return NULL;
    }
    *index_out = i;
    return &md->entries[i];
}

/* ---- the output pump ----------------------------------------------------------------------- */

static void stream_end(struct pop3_maildrop *md)
{
    if (md->stream == POP3_STREAM_BODY)
        log_info("pop3", conn_sid(md->conn), "event=retr msg=%" PRIu64 " top=%s octets=%llu",
                 md->stream_msg, md->stream_top ? "yes" : "no",
                 (unsigned long long)md->ds.out_bytes);
    stream_stop(md);
    conn_resume_reading(md->conn);
}

/* LIST/UIDL: a batch of lines; true when the listing is complete. */
static bool pump_listing(struct pop3_maildrop *md)
{
    size_t used = 0;
    while (md->stream_next < md->count && used + POP3_LIST_LINE_MAX_BYTES <= POP3_OUT_BUF_BYTES) {
        size_t i = md->stream_next++;
        if (md->deleted[i])
            continue;
        int k;
        if (md->stream == POP3_STREAM_LIST)
            k = snprintf((char *)md->out_buf + used, POP3_OUT_BUF_BYTES - used, "%zu %lld\r\n",
                         i + 1, (long long)md->entries[i].size);
        else
            k = snprintf((char *)md->out_buf + used, POP3_OUT_BUF_BYTES - used, "%zu %s\r\n", i + 1,
                         md->entries[i].uidl);
        if (k > 0)
            used += (size_t)k;
    }
    bool done = md->stream_next >= md->count;
    if (done && used + 3 <= POP3_OUT_BUF_BYTES) {
        memcpy(md->out_buf + used, ".\r\n", 3);
        used += 3;
    } else {
        done = false;
    }
    conn_write(md->conn, md->out_buf, used);
    return done;
}

/* Sends k octets of out_buf, or with a fault injection cut armed (pop3_maildrop.h) only those
 * up to the cut: false then, after stopping the stream. */
static bool body_write(struct pop3_maildrop *md, size_t k)
{
    if (md->cut.armed && k > md->cut.after_bytes) {
        conn_write(md->conn, md->out_buf, (size_t)md->cut.after_bytes);
        stream_stop(md);
        return false;
    }
    if (md->cut.armed)
        md->cut.after_bytes -= k;
    conn_write(md->conn, md->out_buf, k);
    return true;
}

/* A chunk read is over: in_buf holds n octets, or read_failed says why not. */
static void chunk_read(struct pop3_maildrop *md, int status)
{
    if (status != STORE_OK) {
        log_error("pop3", conn_sid(md->conn), "event=retr-failed msg=%" PRIu64 " error=\"%s\"",
                  md->stream_msg, md->rj.error);
        md->read_failed = true;
        return;
    }
    size_t n = md->rj.n;
    md->in_off = 0;
    md->in_len = n;
    if (n < POP3_BODY_CHUNK_BYTES)
        md->in_eof = true;
    if (md->in_eof)
        store_body_close(&md->reader); /* no snapshot held while the tail goes out */
}

/* RETR/TOP: one step; 1 when the body and its terminator are out, 0 to go on, -1 on failure,
 * -2 when a fault injection cut stopped it, -3 when a chunk read is out (PENDING). */
static int pump_body(struct pop3_maildrop *md)
{
    if (md->read_failed)
        return -1;
    if (md->in_off == md->in_len && !md->in_eof && !dotstuff_has_enough(&md->ds)) {
        md->rj.what = POP3_MD_READ_CHUNK;
        md->rj.n = 0;
        int status;
        if (read_submit(md, &status) == READER_PENDING)
            return -3;
        chunk_read(md, status);
        if (md->read_failed)
            return -1;
    }
    if (md->in_off < md->in_len && !dotstuff_has_enough(&md->ds)) {
        size_t used = 0;
        size_t k = dotstuff_encode(&md->ds, md->in_buf + md->in_off, md->in_len - md->in_off, &used,
                                   md->out_buf, POP3_OUT_BUF_BYTES);
        md->in_off += used;
        return body_write(md, k) ? 0 : -2;
    }
    if (md->in_eof || dotstuff_has_enough(&md->ds)) {
        size_t k = dotstuff_finish(&md->ds, md->out_buf, POP3_OUT_BUF_BYTES);
        if (!body_write(md, k))
            return -2;
        return dotstuff_is_done(&md->ds) ? 1 : 0;
    }
    return 0;
}

enum pop3_pump pop3_maildrop_pump(struct pop3_maildrop *md)
{
    struct conn *c = md->conn;
    if (md->read_out)
        return POP3_PUMP_IDLE; /* a chunk is on its way: its read callback pumps again */
    while (md->stream != POP3_STREAM_NONE && !conn_is_closing(c)) {
        struct conn_stats st;
        conn_get_stats(c, &st);
        if (st.output_bytes >= CONN_OUTPUT_HIGH_BYTES) {
            /* Backpressure: wait until the client has read half of it. */
            conn_want_drain(c);
            return POP3_PUMP_WAIT;
        }
        if (md->stream == POP3_STREAM_BODY) {
            int rc = pump_body(md);
            if (rc == -3)
                return POP3_PUMP_READING;
            if (rc == -2)
                return POP3_PUMP_CUT;
            if (rc < 0) {
                /* "+OK" is already out: the answer cannot turn into -ERR any more. */
                stream_stop(md);
                return POP3_PUMP_FAILED;
            }
            if (rc > 0) {
                stream_end(md);
                return POP3_PUMP_DONE;
            }
        } else if (pump_listing(md)) {
            stream_end(md);
            return POP3_PUMP_DONE;
        }
    }
    return POP3_PUMP_IDLE;
}

static int stream_start(struct pop3_maildrop *md, enum pop3_stream kind)
{
    md->out_buf = malloc(POP3_OUT_BUF_BYTES);
    if (md->out_buf == NULL)
        return -1;
    md->stream = kind;
    md->stream_next = 0;
    conn_pause_reading(md->conn);
    return 0;
}

/* ---- commands ------------------------------------------------------------------------------ */

enum pop3_md_result pop3_maildrop_stat(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES])
{
    if (args[0] != '\0')
        return refuse(reply, "-ERR Syntax: STAT");
    /* RFC 1939 5: messages marked as deleted are not counted. */
    conn_reply(md->conn, "+OK %zu %lld\r\n", md->count - md->deleted_count,
               (long long)(md->total_bytes - md->deleted_bytes));
    return POP3_MD_OK;
}

/* LIST and UIDL share their shape: one line for "n", or a listing. */
static enum pop3_md_result listing(struct pop3_maildrop *md, const char *args,
                                   enum pop3_stream kind, char reply[POP3_MD_REPLY_MAX_BYTES])
{
    const char *syntax = kind == POP3_STREAM_LIST ? "LIST [msg]" : "UIDL [msg]";
    if (args[0] != '\0') {
        uint64_t v[POP3_ARGS_MAX];
        unsigned n;
        size_t i;
        if (pop3_parse_numbers(args, 1, 1, v, &n) != 0)
            return refuse(reply, "-ERR Syntax: %s", syntax);
        const struct store_mail_entry *e = find_message(md, v[0], &i, reply);
        if (e == NULL)
            return POP3_MD_ERROR;
        if (kind == POP3_STREAM_LIST)
            conn_reply(md->conn, "+OK %zu %lld\r\n", i + 1, (long long)e->size);
        else
            conn_reply(md->conn, "+OK %zu %s\r\n", i + 1, e->uidl);
        return POP3_MD_OK;
    }
    if (stream_start(md, kind) != 0)
        return refuse(reply, "-ERR [SYS/TEMP] Out of memory");
    if (kind == POP3_STREAM_LIST)
        conn_reply(md->conn, "+OK %zu %s (%lld octets)\r\n", md->count - md->deleted_count,
                   messages(md->count - md->deleted_count),
                   (long long)(md->total_bytes - md->deleted_bytes));
    else
        conn_reply(md->conn, "+OK Unique-ID listing follows\r\n");
    return POP3_MD_STREAM;
}

enum pop3_md_result pop3_maildrop_list(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES])
{
    return listing(md, args, POP3_STREAM_LIST, reply);
}

enum pop3_md_result pop3_maildrop_uidl(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES])
{
    return listing(md, args, POP3_STREAM_UIDL, reply);
}

/* RETR msg, or TOP msg n (top_lines >= 0). */
static enum pop3_md_result send_body(struct pop3_maildrop *md, uint64_t msg, bool top,
                                     uint64_t top_lines, char reply[POP3_MD_REPLY_MAX_BYTES])
{
    size_t i;
    const struct store_mail_entry *e = find_message(md, msg, &i, reply);
    if (e == NULL)
        return POP3_MD_ERROR;
    md->rj.what = POP3_MD_READ_BODY;
    md->rj.user_id = md->user_id;
    md->rj.entry_id = e->id;
    md->rj.msg = msg;
    md->rj.top = top;
    md->rj.top_lines = top_lines;
    md->rj.body = NULL;
    md->rj.size = 0;
    int status;
    if (read_submit(md, &status) == READER_PENDING)
        return POP3_MD_PENDING;
    return body_opened(md, status, reply);
}

/* The body's opening is over: +OK and the stream started, or the error reply written. */
static enum pop3_md_result body_opened(struct pop3_maildrop *md, int status,
                                       char reply[POP3_MD_REPLY_MAX_BYTES])
{
    uint64_t msg = md->rj.msg;
    bool top = md->rj.top;
    int64_t size = md->rj.size;
    md->reader = md->rj.body;
    md->rj.body = NULL;
    /* Removed by an administrator meanwhile (the lock keeps other sessions out). */
    if (status == STORE_NOT_FOUND)
        return refuse(reply, "-ERR [SYS/PERM] Message %" PRIu64 " is no longer available", msg);
    if (status != STORE_OK) {
        log_error("pop3", conn_sid(md->conn), "event=retr-failed msg=%" PRIu64 " error=\"%s\"", msg,
                  md->rj.error);
        return refuse(reply, "-ERR [SYS/TEMP] Cannot read the message now");
    }
    md->read_failed = false;
    md->in_buf = malloc(POP3_BODY_CHUNK_BYTES);
    if (md->in_buf == NULL || stream_start(md, POP3_STREAM_BODY) != 0) {
        stream_stop(md);
        return refuse(reply, "-ERR [SYS/TEMP] Out of memory");
    }
    md->in_off = md->in_len = 0;
    md->in_eof = false;
    md->stream_msg = msg;
    md->stream_top = top;
    if (top) {
        dotstuff_init_top(&md->ds, md->rj.top_lines);
        conn_reply(md->conn, "+OK Top of message follows\r\n");
    } else {
        dotstuff_init(&md->ds);
        /* RFC 1939 7: the size given is the message's, before byte-stuffing. */
        conn_reply(md->conn, "+OK %lld octets\r\n", (long long)size);
    }
    /* The transcript logs the message as one summary line, not its content. */
    conn_body_begin(md->conn);
    return POP3_MD_STREAM;
}

enum pop3_md_result pop3_maildrop_retr(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES])
{
    uint64_t v[POP3_ARGS_MAX];
    unsigned n;
    if (pop3_parse_numbers(args, 1, 1, v, &n) != 0)
        return refuse(reply, "-ERR Syntax: RETR msg");
    return send_body(md, v[0], false, 0, reply);
}

enum pop3_md_result pop3_maildrop_top(struct pop3_maildrop *md, const char *args,
                                      char reply[POP3_MD_REPLY_MAX_BYTES])
{
    uint64_t v[POP3_ARGS_MAX];
    unsigned n;
    if (pop3_parse_numbers(args, 2, 2, v, &n) != 0)
        return refuse(reply, "-ERR Syntax: TOP msg n");
    return send_body(md, v[0], true, v[1], reply);
}

enum pop3_md_result pop3_maildrop_dele(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES])
{
    uint64_t v[POP3_ARGS_MAX];
    unsigned n;
    size_t i;
    if (pop3_parse_numbers(args, 1, 1, v, &n) != 0)
        return refuse(reply, "-ERR Syntax: DELE msg");
    const struct store_mail_entry *e = find_message(md, v[0], &i, reply);
    if (e == NULL)
        return POP3_MD_ERROR;
    md->deleted[i] = true;
    md->deleted_count++;
    md->deleted_bytes += e->size;
    conn_reply(md->conn, "+OK Message %zu deleted\r\n", i + 1);
    return POP3_MD_OK;
}

enum pop3_md_result pop3_maildrop_rset(struct pop3_maildrop *md, const char *args,
                                       char reply[POP3_MD_REPLY_MAX_BYTES])
{
    if (args[0] != '\0')
        return refuse(reply, "-ERR Syntax: RSET");
    if (md->count > 0)
        memset(md->deleted, 0, md->count * sizeof(*md->deleted));
    md->deleted_count = 0;
    md->deleted_bytes = 0;
    conn_reply(md->conn, "+OK Maildrop has %zu %s (%lld octets)\r\n", md->count,
               messages(md->count), (long long)md->total_bytes);
    return POP3_MD_OK;
}

/* ---- UPDATE -------------------------------------------------------------------------------- */

/* On the writer thread. */
static int update_run(struct store *st, struct writer_job *job)
{
    struct pop3_update_job *u = (struct pop3_update_job *)job;
    u->deleted = 0;
    int rc = u->n > 0 ? store_mailbox_delete(st, u->user_id, u->ids, u->n, &u->deleted) : STORE_OK;
    /* The lock goes with the deletions, in the same commit: whoever logs in next, on any node,
     * finds the maildrop free and the messages gone together. */
    if (rc == STORE_OK && u->release_lock)
        rc = store_pop3_lock_release(st, u->user_id, u->node, u->session);
    return rc;
}

/* The answer to QUIT once UPDATE is over, unless the client went (md->conn is NULL then). */
static void update_answer(struct pop3_maildrop *md, int status, size_t deleted, size_t asked)
{
    uint64_t sid = md->conn != NULL ? conn_sid(md->conn) : 0;
    if (status == 0)
        log_info("pop3", sid, "event=update user=%s deleted=%zu", md->address, deleted);
    else
        log_error("pop3", sid, "event=update-failed user=%s status=%d", md->address, status);
    /* Released before the answer goes out: a client that logs in again as soon as it reads
     * it must find the maildrop free, even when its new connection is served by another loop
     * or another node while this one is still closing. */
    maildrop_unlock(md, status == 0);
    if (md->conn != NULL) {
        if (status == 0 && asked == 0)
            conn_reply(md->conn, "+OK Bye\r\n");
        else if (status == 0)
            conn_reply(md->conn, "+OK Bye: %zu %s deleted\r\n", deleted, messages(deleted));
        else if (asked == 0)
            conn_reply(md->conn, "+OK Bye\r\n"); /* nothing to delete; the lease frees the lock */
        else
            conn_reply(md->conn, "-ERR [SYS/TEMP] Messages could not be deleted; none were\r\n");
        conn_close(md->conn, "quit");
    }
}

static void update_done(struct writer_job *job, int status)
{
    struct pop3_update_job *u = (struct pop3_update_job *)job;
    struct pop3_maildrop *md = container_of(u, struct pop3_maildrop, update);
    update_answer(md, status, u->deleted, u->n);
    free(u->ids);
    u->ids = NULL;
    u->done(u->ctx);
}

/* Nothing could be deleted, and the client hears so at once. */
static int update_refused(struct pop3_maildrop *md)
{
    maildrop_unlock(md, false);
    conn_reply(md->conn, "-ERR [SYS/TEMP] Messages could not be deleted; none were\r\n");
    conn_close(md->conn, "quit");
    return 0;
}

int pop3_maildrop_quit(struct pop3_maildrop *md, struct writer *w, pop3_md_update_fn done,
                       void *ctx)
{
    struct conn *c = md->conn;
    if (md->deleted_count == 0 && !md->db_locked) {
        log_info("pop3", conn_sid(c), "event=update user=%s deleted=0", md->address);
        maildrop_unlock(md, false); /* before the answer, as in update_answer */
        conn_reply(c, "+OK Bye\r\n");
        conn_close(c, "quit");
        return 0;
    }
    struct pop3_update_job *u = &md->update;
    memset(u, 0, sizeof(*u));
    if (md->deleted_count > 0) {
        u->ids = malloc(md->deleted_count * sizeof(*u->ids));
        if (u->ids == NULL)
            return update_refused(md);
    }
    for (size_t i = 0; i < md->count; i++)
        if (md->deleted[i])
            u->ids[u->n++] = md->entries[i].id;
    u->job.run = update_run;
    u->job.done = update_done;
    u->user_id = md->user_id;
    u->release_lock = md->db_locked;
    u->node = md->node;
    u->session = md->session;
    u->done = done;
    u->ctx = ctx;
    /* Nothing is read meanwhile: the answer comes after the commit, then the close. */
    conn_pause_reading(c);
    if (w == NULL || writer_submit(w, &u->job) != 0) {
        free(u->ids);
        u->ids = NULL;
        return update_refused(md);
    }
    return 1;
}
