/*
 * node.h - this serve process as one node of several on a database: taking its name at start
 * ([server] node, storage/nodes.c), the lease that says it lives, and its renewal, which also
 * renews the POP3 maildrop locks its sessions hold (server/pop3/pop3_lock.h).
 *
 * Per node: the name, its queue claims, its POP3 sessions' locks, its loops and writer thread.
 * Shared through the database: everything else (users, mailboxes, windows, the queue).
 */
#ifndef POSTERN_NODE_H
#define POSTERN_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"
#include "storage/writer.h"

/* How long a node's name and its POP3 locks hold without a renewal: a node that died frees its
 * users' maildrops after at most this long. Three renewals fit in it, so one slow or failed
 * commit does not lose a lock. */
#define NODE_LEASE_MS       (90 * 1000)
#define NODE_RENEW_EVERY_MS (NODE_LEASE_MS / 3)

/* NODE_LEASE_MS, or POSTERN_TEST_NODE_LEASE_MS (tests only: a short lease, 300 ms to
 * NODE_LEASE_MS, logged as a warning at start). */
int64_t node_lease_ms(void);
/* A third of node_lease_ms(). */
uint64_t node_renew_every_ms(void);

/*
 * At start, on s (synchronously: nothing is served yet): takes the name, refusing it while
 * another live process has it (-1, err says who and what to do); a holder on this host whose pid
 * no longer exists is dead, and its name is taken over at once. Then drops the name's leftover
 * POP3 locks. 0 or -1.
 */
int node_start(struct store *s, const char *node, char *err, size_t errlen);
/* At a clean stop, on s: gives the name up. */
void node_stop(struct store *s, const char *node);
/* Renews the node's lease and its sessions' POP3 locks, in one writer job that owns itself. */
void node_renew(struct writer *w, const char *node);

#endif
