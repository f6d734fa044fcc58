/*
 * fault.h - fault injection at run time: the rules a server with [server] faults = yes loaded
 * from the database, and the hooks the SMTP and POP3 sessions call at each named point
 * (common/pure/fault.h lists them). With faults off a session gets no struct fault_conn (NULL)
 * and every hook returns FAULT_PASS at once.
 *
 * The rule set is one per process, shared by every loop under a mutex. It is reloaded when the
 * table changed (storage/faults.h: its version is max(id) and count(*)): checked at every
 * connection's start and, for long sessions, at a hook at most once a second. So a rule added
 * with `postern fault add` applies to the next connection. How often each rule was reached and
 * fired is counted here, in memory, by rule id: a reload keeps the counts of the rules that
 * stay, a restart starts them again (and so does deleting a rule and adding it again, which
 * gives it a new id). Rules fire in id order; the first one that fires at a point wins.
 *
 * What the hooks do: see enum fault_action. A delay pauses reading and keeps a copy of the
 * line on a uv timer; when it runs out the session's resume callback gets the point and the
 * line back and runs them as if just received (that point's rules are skipped once). Replies
 * and drops do not count against the session's error limits; an SMTP reply with code 421 closes
 * the connection after it, as RFC 5321 3.8 has it. Every firing is logged as
 * event=fault rule=ID point=NAME action=NAME.
 */
#ifndef POSTERN_SERVER_FAULT_H
#define POSTERN_SERVER_FAULT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/pure/fault.h"

struct conn;
struct fault_conn;

/* Whatever a hook did, the session does one of three things. */
enum fault_verdict {
    FAULT_PASS = 0, /* nothing fired (or drop-body armed its cut): go on as usual */
    FAULT_TAKEN,    /* the fault answered, dropped or stalled: the command does not run */
    FAULT_HELD,     /* delayed: resume runs it later; do nothing now */
};

/* Runs a delayed point again: p and the line (NULL, 0 for connect and smtp.eod) as held. */
typedef void (*fault_resume_fn)(void *session, enum fault_point p, const char *line, size_t len);

/*
 * At a session's start, on the loop thread of c: NULL when faults are off (or on failure, which
 * is logged: the session then runs without faults). session is borrowed and handed to resume;
 * the session frees the result with fault_conn_free in its on_close, which cancels a delay.
 */
struct fault_conn *fault_conn_new(struct conn *c, fault_resume_fn resume, void *session);
void fault_conn_free(struct fault_conn **f);

/* A point without a command: smtp.connect, smtp.eod, pop3.connect. */
enum fault_verdict fault_at(struct fault_conn *f, enum fault_point p,
                            const struct fault_facts *facts);

/* An SMTP command that passed the dispatcher's lookup: verb and args as split, line whole. The
 * recipient (RCPT) or sender (MAIL) is read from args; sender is the transaction's otherwise. */
enum fault_verdict fault_smtp_command(struct fault_conn *f, const char *verb, const char *args,
                                      const char *line, size_t len, const char *user,
                                      const char *sender);

/* A POP3 command allowed in the session's state. A drop-body rule arms *cut and passes. */
enum fault_verdict fault_pop3_command(struct fault_conn *f, const char *verb, const char *line,
                                      size_t len, const char *user, struct fault_cut *cut);

#endif
