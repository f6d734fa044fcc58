/*
 * node.c - this serve process as a node (node.h): its name at start and stop, and the lease
 * renewal job. The SQL is storage/nodes.c's; the set of locks to renew is
 * server/pop3/pop3_lock.c's. Called by server/serve.c alone: at start before anything is
 * served, from a timer on the first loop, and at the stop.
 *
 * Why one renewal per node and not per session or per loop: a node lives or dies as a whole (one
 * process, one writer thread), so one job every NODE_RENEW_EVERY_MS renews the node's row and,
 * with one prepared statement stepped once per lock, every lock its sessions hold; a session
 * that ended is no longer in the set, so a row whose release failed is not renewed and runs out.
 */
#include "server/node.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "server/pop3/pop3_lock.h"

#define NODE_TEST_LEASE_MIN_MS 300

int64_t node_lease_ms(void)
{
    const char *v = getenv("POSTERN_TEST_NODE_LEASE_MS");
    if (v != NULL && v[0] != '\0') {
        char *end = NULL;
        long long ms = strtoll(v, &end, 10);
        if (*end == '\0' && ms >= NODE_TEST_LEASE_MIN_MS && ms <= NODE_LEASE_MS)
            return ms;
    }
    return NODE_LEASE_MS;
}

uint64_t node_renew_every_ms(void)
{
    return (uint64_t)(node_lease_ms() / 3);
}

static void host_name(char *buf, size_t len)
{
    if (gethostname(buf, len) != 0)
        snprintf(buf, len, "localhost");
    buf[len - 1] = '\0'; /* POSIX leaves a cut name unterminated */
}

/* The holder is a process of this host that no longer exists. */
static bool holder_dead(const struct store_node_holder *h, const char *host)
{
    if (strcmp(h->host, host) != 0 || h->pid <= 0 || h->pid == (int64_t)getpid())
        return false;
    return kill((pid_t)h->pid, 0) != 0 && errno == ESRCH;
}

int node_start(struct store *s, const char *node, char *err, size_t errlen)
{
    char host[STORE_NODE_NAME_MAX_BYTES + 1];
    host_name(host, sizeof(host));
    int64_t pid = (int64_t)getpid();
    int64_t lease = node_lease_ms();
    if (lease != NODE_LEASE_MS)
        log_warn("node", 0, "event=test-lease ms=%lld", (long long)lease);
    struct store_node_holder h;
    int64_t now = store_now_ms();
    int rc = store_node_claim(s, node, host, pid, now, lease, false, &h);
    if (rc == STORE_IN_USE && holder_dead(&h, host)) {
        log_info("node", 0, "event=takeover node=%s old_pid=%lld", node, (long long)h.pid);
        rc = store_node_claim(s, node, host, pid, now, lease, true, &h);
    }
    if (rc == STORE_IN_USE) {
        snprintf(err, errlen,
                 "node name \"%s\" is held by pid %lld on %s for another %lld ms: give each "
                 "serve process on one database its own [server] node",
                 node, (long long)h.pid, h.host, (long long)(h.expires_ms - now));
        return -1;
    }
    size_t dropped = 0;
    if (rc == STORE_OK)
        rc = store_pop3_lock_drop_node(s, node, &dropped);
    if (rc != STORE_OK) {
        snprintf(err, errlen, "cannot take the node name \"%s\": %s", node, store_errmsg(s));
        return -1;
    }
    log_info("node", 0,
             "event=node-started node=%s host=%s pid=%lld lease_ms=%lld locks_dropped=%zu", node,
             host, (long long)pid, (long long)lease, dropped);
    return 0;
}

void node_stop(struct store *s, const char *node)
{
    char host[STORE_NODE_NAME_MAX_BYTES + 1];
    host_name(host, sizeof(host));
    if (store_node_leave(s, node, host, (int64_t)getpid()) != STORE_OK)
        log_warn("node", 0, "event=leave-failed node=%s error=\"%s\"", node, store_errmsg(s));
}

/* ---- the renewal job ---- */

struct renew_job {
    struct writer_job job;
    char node[STORE_NODE_NAME_MAX_BYTES + 1];
    int64_t pid;
    int64_t lease_ms;
    struct pop3_lock_ref *locks; /* owned */
    size_t n;
    bool *lost;     /* owned, n: the lock was not ours any more */
    bool node_lost; /* another process has the name */
};

static int renew_run(struct store *st, struct writer_job *job)
{
    struct renew_job *r = (struct renew_job *)job;
    int64_t now = store_now_ms();
    int rc = store_node_renew(st, r->node, r->pid, now, r->lease_ms);
    r->node_lost = rc == STORE_NOT_FOUND;
    if (rc != STORE_OK && rc != STORE_NOT_FOUND)
        return rc;
    for (size_t i = 0; i < r->n; i++) {
        rc = store_pop3_lock_renew(st, r->locks[i].user_id, r->node, r->locks[i].session, now,
                                   r->lease_ms);
        r->lost[i] = rc == STORE_NOT_FOUND;
        if (rc != STORE_OK && rc != STORE_NOT_FOUND)
            return rc;
    }
    return STORE_OK;
}

static void renew_done(struct writer_job *job, int status)
{
    struct renew_job *r = (struct renew_job *)job;
    if (status != 0) {
        log_warn("node", 0, "event=renew-failed node=%s status=%d error=\"%s\"", r->node, status,
                 postern_strerror(status));
    } else {
        if (r->node_lost)
            log_error("node", 0, "event=node-name-lost node=%s", r->node);
        /* A lost lock: this node stalled past its lease and a session of another node took
         * the maildrop over. The session here ends at its next command (pop3_session.c). */
        for (size_t i = 0; i < r->n; i++) {
            if (!r->lost[i])
                continue;
            log_warn("pop3", (uint64_t)r->locks[i].session, "event=lock-lost user_id=%lld node=%s",
                     (long long)r->locks[i].user_id, r->node);
            pop3_lock_local_lost(r->locks[i].user_id, r->locks[i].session);
        }
    }
    free(r->locks);
    free(r->lost);
    free(r);
}

void node_renew(struct writer *w, const char *node)
{
    struct renew_job *r = calloc(1, sizeof(*r));
    if (r == NULL || pop3_lock_snapshot(&r->locks, &r->n) != 0 ||
        (r->n > 0 && (r->lost = calloc(r->n, sizeof(*r->lost))) == NULL)) {
        log_warn("node", 0, "event=renew-failed node=%s error=\"out of memory\"", node);
        if (r != NULL) {
            free(r->locks);
            free(r);
        }
        return;
    }
    r->job.run = renew_run;
    r->job.done = renew_done;
    snprintf(r->node, sizeof(r->node), "%s", node);
    r->pid = (int64_t)getpid();
    r->lease_ms = node_lease_ms();
    if (writer_submit(w, &r->job) != 0) {
        free(r->locks);
        free(r->lost);
        free(r);
    }
}
