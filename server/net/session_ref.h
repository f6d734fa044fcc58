/*
 * session_ref.h - the one lifetime rule of every session that waits on asynchronous work (the
 * SMTP and POP3 server sessions): a reference count with a closed flag.
 *
 * A session starts with one reference, the connection's. Every asynchronous request that will
 * call back into the session (a writer job, a uv handle being closed, an AUTH verification until
 * it answers or is cancelled) takes one more before it starts and drops it when it has called
 * back for the last time. on_close sets closed, so callbacks that still arrive know the
 * connection is gone, and drops the connection's reference. Whoever drops the last one frees the
 * session, and only through the session's own file: session_ref_drop() only says when.
 *
 * Why one idiom: the alternative ("busy" flags per kind of work, each completion asking whether it
 * is the last) needs every new kind of work to learn about every other; a count does not.
 * The struct conn has its own references (conn_ref) for the same requests; this count is the
 * session's, never the connection's.
 */
#ifndef POSTERN_SESSION_REF_H
#define POSTERN_SESSION_REF_H

#include <stdbool.h>

struct session_ref {
    unsigned count; /* the connection's reference (until on_close) plus one per request out */
    bool closed;    /* on_close ran: never touch the connection again except to unref it */
};

/* A new session: one reference, the connection's. */
static inline void session_ref_init(struct session_ref *r)
{
    r->count = 1;
    r->closed = false;
}

static inline void session_ref_take(struct session_ref *r)
{
    r->count++;
}

/* Drops one reference; true when it was the last and the caller must free the session now. */
static inline bool session_ref_drop(struct session_ref *r)
{
    return --r->count == 0;
}

/* Drops n references at once (a close path that gives up several): true when none is left. One
 * call instead of n keeps the session untouched after the drop that may free it. */
static inline bool session_ref_drop_n(struct session_ref *r, unsigned n)
{
    r->count -= n;
    return r->count == 0;
}

#endif
