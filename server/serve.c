/*
 * serve.c - `postern serve`: opens the store (a read connection for the loop thread), starts the
 * writer thread, loads the TLS context, binds the listeners (listener.c), drops root, installs
 * the signal handlers and runs the libuv loop. Connections and sessions are conn.c,
 * smtp_session.c and pop3_session.c.
 *
 * Start order and why:
 *   1. store and writer: the database is opened (and created 0600, with its -wal and -shm files
 *      of the same mode) while still root, so the dropped process never needs to create a file
 *      beside it. Before that, an existing database, -wal or -shm that others may read or write
 *      stops the start (exit 3, one line naming the file and the chmod); group access is warned
 *      about in the log;
 *   2. TLS context: the key is often readable by root only; so is the smarthost password file
 *      ([relay] smarthost_password_file), read here too (once: a SIGHUP does not re-read it);
 *   3. listeners: ports below 1024 need root;
 *   4. privilege drop ([server] user, only when running as root): the database file, its -wal
 *      and -shm files and its -spool directory are chowned to the user first, so they stay
 *      writable (the connections opened in step 1 stay open for the life of the process; the
 *      chown also keeps admin commands run as that user and a later start working). initgroups,
 *      setgid, setuid, each checked, then a check that root cannot be regained. A user that does
 *      not exist is a configuration error: exit 2 before anything is bound. Started as a non-root
 *      user, `user` must name that user or is ignored with a warning (there is nothing to drop).
 *   After the drop a SIGHUP reload reads the certificate and key as the user: keep them readable
 *   by it, or the reload fails (logged; the old context stays in use).
 *
 * Loops ([server] workers, docs/threads.md): this file runs the first loop, which alone handles
 * signals, the housekeeping timer, the queue runner and owns the writer thread; each further loop
 * is a struct worker (server/worker.c) with its own thread, listeners (SO_REUSEPORT), sessions,
 * read connection, writer handle and verifier. They are all made in step 3, before the drop, and
 * their threads start last. workers = 1 makes no worker and no SO_REUSEPORT: one loop, as ever.
 *
 * Shutdown (SIGTERM, SIGINT): stop the housekeeping timer, close the listening sockets, tell every
 * session (421 4.3.2 / -ERR), flush their output (bounded by conn.c: CONN_CLOSE_FLUSH_MS plus
 * CONN_LINGER_MS, so a client that never reads is cut off); every worker is told through its
 * uv_async and does the same on its own loop. Once the first loop's connections are gone and
 * every worker's thread has ended (each says so through one uv_async here), the threads are
 * joined, then the writer is drained (every job already handed over is committed and its callback
 * delivered), every handle closed, exit 0. Outbound attempts are abandoned and their claims
 * released, except one that has sent its end of data: its reply is awaited for up to
 * SMTP_CLIENT_SHUTDOWN_DOT_WAIT_MS (60 s) and recorded (queue_runner.h), so a stop can take that
 * long. A second signal aborts the remaining connections of every loop at once (such an attempt
 * is then deferred, not released). SIGHUP reloads the certificate and key for every loop: new
 * connections get the new context, open ones keep theirs. A
 * service manager hears of each (server/notify.h): ready once everything above is up, reloading
 * and ready again around a SIGHUP, stopping at the first SIGTERM or SIGINT.
 *
 * Exit codes: 0 after a clean stop; 2 for a [server] user that does not exist; 3 when the
 * database (or one open to others), the TLS files, the smarthost password file, a listening
 * address, the loop or the privilege drop fail (with one line on stderr such as "postern: cannot
 * listen on 127.0.0.1:2525 (smtp): address already in use").
 */
#include "server/serve.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/pure/conninfo.h"
#include "common/password.h"
#include "common/util.h"
#include "server/app.h"
#include "server/auth/auth.h"
#include "server/disk_reserve.h"
#include "server/smtp/dkim_cache.h"
#include "server/metrics/metrics.h"
#include "server/net/conn.h"
#include "server/metrics/metrics_http.h"
#include "server/net/listener.h"
#include "server/node.h"
#include "server/notify.h"
#include "server/pop3/pop3_session.h"
#include "server/outbound/queue_runner.h" /* outbound delivery */
#include "server/outbound/smtp_client.h"  /* smarthost credentials */
#include "server/smtp/smtp_session.h"
#include "server/net/tls.h"
#include "server/worker.h"
#include "storage/reader.h"
#include "storage/spool.h"
#include "storage/store.h"
#include "storage/writer.h"

/* Expired windows are dropped this often; lookups check expiry themselves, so this only keeps
 * the table small. */
#define HOUSEKEEPING_INTERVAL_MS (60 * 1000)
/* Reader threads on PostgreSQL, each with its own connection. A read is a round trip of well
 * under a millisecond on a local network, so a few threads serve thousands of sessions; more
 * would cost the server a backend process each and gain little, since the writer, not the reads,
 * bounds what a node accepts. */
#define SERVE_PG_READER_THREADS 4

/* Descriptors kept beyond max_connections: listeners, the database, the writer, logs. */
#define SERVE_SPARE_FDS 64
/* Upper bound when the hard RLIMIT_NOFILE is unlimited (Linux refuses more than nr_open). */
#define SERVE_NOFILE_CAP (1024 * 1024)
/* [server] workers: its upper bound, also when counting cores. */
#define SERVE_MAX_WORKERS 64

struct server {
    uv_loop_t loop;
    struct cfg *cfg;                /* borrowed from main */
    const char *config_path;        /* borrowed; NULL with built-in defaults */
    struct store *reads;            /* owned: the loop thread's read connection */
    struct writer *writer;          /* owned */
    struct reader *reader;          /* owned: the first handle (storage/reader.h) */
    struct tls_ctx *tls;            /* owned reference; NULL without [tls] */
    struct conn_set *conns;         /* owned */
    struct listener_set *listeners; /* owned */
    struct metrics_http *metrics;   /* owned; NULL without [server] metrics */
    struct queue_runner *runner;    /* owned: outbound delivery */
    uv_signal_t signals[3];         /* SIGTERM, SIGINT, SIGHUP */
    size_t signals_open;            /* initialised (and not yet closed) entries of signals */
    uv_timer_t housekeeping;
    bool housekeeping_open;
    uv_timer_t lease; /* renews the node's name and POP3 locks (server/node.h) */
    bool lease_open;
    bool node_started; /* the name is ours: give it up at the stop */
    struct writer_job purge_job;
    bool purge_busy; /* purge_job is with the writer */
    bool stopping;
    struct disk_reserve disk; /* app.disk borrows it */
    /* owned; NULL without [relay] smarthost_user; app.smarthost_creds borrows it */
    struct smtp_client_creds *smarthost_creds;
    struct app app; /* what sessions borrow (app.h); points into the fields above */

    /* Loops 1..nworkers-1 (worker.c); loop 0 is this struct's. */
    unsigned nloops;                           /* [server] workers, resolved: 1..64 */
    struct worker *workers[SERVE_MAX_WORKERS]; /* owned; [0] unused */
    uv_async_t workers_async;                  /* a worker's thread ended */
    bool workers_async_open;
    bool main_closed; /* this loop's connections are all gone */
};

/* [server] workers, 0 meaning one loop per online core. */
static unsigned resolve_loops(const struct cfg *cfg)
{
    long n = cfg->server.workers;
    if (n == 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n < 1)
            n = 1;
    }
    return n > SERVE_MAX_WORKERS ? SERVE_MAX_WORKERS : (unsigned)n;
}

static int purge_run(struct store *st, struct writer_job *job)
{
    return store_window_purge(st, store_now_ms());
}

static void purge_done(struct writer_job *job, int status)
{
    struct server *srv = container_of(job, struct server, purge_job);
    srv->purge_busy = false;
    if (status != 0)
        log_warn("store", 0, "event=purge-failed status=%d error=\"%s\"", status,
                 postern_strerror(status));
}

static void on_housekeeping(uv_timer_t *t)
{
    struct server *srv = t->data;
    if (srv->purge_busy || srv->stopping)
        return;
    srv->purge_job.run = purge_run;
    srv->purge_job.done = purge_done;
    if (writer_submit(srv->writer, &srv->purge_job) == 0)
        srv->purge_busy = true;
}

static void on_lease(uv_timer_t *t)
{
    struct server *srv = t->data;
    if (srv->writer != NULL)
        node_renew(srv->writer, srv->cfg->server.node);
}

static void lease_close(struct server *srv)
{
    if (!srv->lease_open)
        return;
    srv->lease_open = false;
    uv_timer_stop(&srv->lease);
    uv_close((uv_handle_t *)&srv->lease, NULL);
}

/* The queue runner has stopped: no attempt of this node is in flight any more, so nothing
 * needs the node alive in the others' eyes (storage/queue.h, "Several nodes"). */
static void on_runner_stopped(void *arg)
{
    lease_close(arg);
}

/* The last step of a stop: every connection of every loop is gone and every worker joined. */
static void finish_stop(struct server *srv)
{
    for (size_t i = 0; i < srv->signals_open; i++)
        uv_close((uv_handle_t *)&srv->signals[i], NULL);
    srv->signals_open = 0;
    listener_set_free(&srv->listeners);
    conn_set_free(&srv->conns);
    /* No session is left to cancel a check: outstanding ones finish and are dropped. */
    auth_free(&srv->app.auth);
    lease_close(srv); /* normally closed when the runner stopped; a runner never made leaves it */
    /* Every job already handed to the writer is committed and answered before we go. */
    srv->app.writer = NULL;
    writer_stop(&srv->writer);
    /* Every worker detached its handle and ended: the reader threads can go. */
    srv->app.reader = NULL;
    reader_stop(&srv->reader);
    queue_runner_free(&srv->runner); /* after writer_stop delivered its last callbacks */
}

/* Finishes the stop once this loop is done and every started worker has ended. */
static void maybe_finish_stop(struct server *srv)
{
    if (!srv->main_closed)
        return;
    for (unsigned i = 1; i < srv->nloops; i++)
        if (srv->workers[i] != NULL && !worker_exited(srv->workers[i]))
            return;
    for (unsigned i = 1; i < srv->nloops; i++)
        worker_free(&srv->workers[i]); /* joins: their loops have ended */
    if (srv->workers_async_open) {
        srv->workers_async_open = false;
        uv_close((uv_handle_t *)&srv->workers_async, NULL);
    }
    finish_stop(srv);
}

static void on_connections_closed(void *arg)
{
    struct server *srv = arg;
    srv->main_closed = true;
    maybe_finish_stop(srv);
}

static void on_worker_exited(uv_async_t *h)
{
    maybe_finish_stop(h->data);
}

/* On a worker's thread, its last act: wake the first loop. */
static void worker_exit_notify(void *arg)
{
    struct server *srv = arg;
    int rc = uv_async_send(&srv->workers_async);
    if (rc != 0)
        log_error("serve", 0, "event=async-send-failed error=%s", uv_err_name(rc));
}

/* Tells every worker to stop (or to abort now); one never started is torn down here. */
static void stop_workers(struct server *srv, bool abort_now)
{
    for (unsigned i = 1; i < srv->nloops; i++) {
        struct worker *w = srv->workers[i];
        if (w == NULL)
            continue;
        if (!worker_started(w))
            worker_free(&srv->workers[i]);
        else
            worker_stop(w, abort_now);
    }
}

/* Open connections of every loop: this loop's (outbound ones included) and the other loops'
 * accepted ones, from the shared counts. */
static size_t connections_everywhere(const struct server *srv)
{
    size_t n = srv->conns != NULL ? conn_set_count(srv->conns) : 0;
    if (srv->listeners != NULL)
        n +=
            listener_set_connections_all(srv->listeners) - listener_set_connections(srv->listeners);
    return n;
}

static void shutdown_server(struct server *srv, const char *why)
{
    if (srv->stopping) {
        size_t open = connections_everywhere(srv);
        if (open > 0) {
            log_info("serve", 0, "event=stopping-now reason=%s connections=%zu", why, open);
            if (srv->conns != NULL)
                conn_set_abort_all(srv->conns, "shutdown");
        }
        stop_workers(srv, true);
        return;
    }
    srv->stopping = true;
    log_info("serve", 0, "event=stopping reason=%s connections=%zu", why,
             connections_everywhere(srv));
    if (srv->housekeeping_open) {
        srv->housekeeping_open = false;
        uv_timer_stop(&srv->housekeeping);
        uv_close((uv_handle_t *)&srv->housekeeping, NULL);
    }
    if (srv->listeners != NULL)
        listener_set_stop(srv->listeners); /* no new clients while the others are told */
    metrics_http_stop(&srv->metrics);
    /* Outbound delivery: no new claims; attempts in flight are abandoned and their claims released,
     * except those awaiting the reply to their end of data (queue_runner.h). Those may take longer
     * than what is left of the node's lease, and another node takes the claims of a node whose
     * lease ran out: so the lease is renewed until the runner has stopped, and only then let go
     * (the sessions still closing keep their POP3 locks to the end of the lease at worst). */
    if (srv->runner != NULL)
        queue_runner_stop(srv->runner, on_runner_stopped, srv);
    else
        lease_close(srv);
    stop_workers(srv, false);
    if (srv->conns != NULL)
        conn_set_shutdown(srv->conns, on_connections_closed, srv);
    else
        on_connections_closed(srv);
}

/* SIGHUP: a new TLS context from the same files; on failure the old one stays. */
static void reload(struct server *srv)
{
    if (!cfg_has_tls(srv->cfg)) {
        log_info("serve", 0, "event=reload tls=none");
        return;
    }
    char err[TLS_ERR_MAX_BYTES * 2];
    struct tls_ctx *fresh =
        tls_ctx_new_server(srv->cfg->tls.certificate, srv->cfg->tls.key, err, sizeof(err));
    if (fresh == NULL) {
        char esc[sizeof(err) + 32];
        log_error("serve", 0, "event=reload tls=failed error=%s",
                  log_escape(esc, sizeof(esc), err, strlen(err)));
        return;
    }
    if (srv->listeners != NULL)
        listener_set_tls(srv->listeners, fresh);
    for (unsigned i = 1; i < srv->nloops; i++)
        if (srv->workers[i] != NULL)
            worker_reload(srv->workers[i], fresh);
    tls_ctx_unref(&srv->tls);
    srv->tls = fresh;
    log_info("serve", 0, "event=reload tls=ok");
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *srv = h->data;
    if (signum == SIGHUP) {
        log_info("serve", 0, "event=reload signal=HUP");
        if (!srv->stopping) {
            notify_reloading();
            reload(srv);
            notify_ready();
        }
        return;
    }
    if (!srv->stopping)
        notify_stopping();
    shutdown_server(srv, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int start_signal(struct server *srv, int signum)
{
    uv_signal_t *h = &srv->signals[srv->signals_open];
    int rc = uv_signal_init(&srv->loop, h);
    if (rc == 0) {
        srv->signals_open++; /* initialised: must be closed, even if starting it fails */
        h->data = srv;
        rc = uv_signal_start(h, on_signal, signum);
    }
    if (rc != 0)
        log_error("serve", 0, "event=signal-failed signal=%d error=\"%s\"", signum,
                  uv_strerror(rc));
    return rc;
}

/* One line on stderr for the operator (README.md, "Commands": exit codes), plus the log line. */
static void fail_line(const char *event, const char *msg)
{
    char esc[1400];
    log_error("serve", 0, "event=%s error=%s", event,
              log_escape(esc, sizeof(esc), msg, strlen(msg)));
    fprintf(stderr, "postern: %s\n", msg);
}

/* Raises the descriptor limit to the hard limit: each connection needs one. */
static void raise_fd_limit(const struct cfg *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY ? SERVE_NOFILE_CAP : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = old;
    }
    if ((rlim_t)cfg->server.max_connections + SERVE_SPARE_FDS > rl.rlim_cur)
        log_warn("serve", 0,
                 "event=warning text=\"max_connections=%u but only %llu file descriptors: "
                 "accepting pauses when they run out\"",
                 cfg->server.max_connections, (unsigned long long)rl.rlim_cur);
}

/*
 * A database others can read gives away every password hash and message: refuse to serve it
 * (exit 3) until the operator runs the chmod the line names. Group access is only warned about:
 * a deliberate group (backups, say) is the operator's call. 0, or -1 after saying why on stderr.
 */
static int check_database_modes(const char *db)
{
    struct store_exposure_report r;
    char err[1200], line[2600];
    if (store_file_exposure(db, &r, err, sizeof(err)) != STORE_OK) {
        fail_line("start-failed", err);
        return -1;
    }
    if (r.exposure == STORE_PRIVATE)
        return 0;
    store_exposure_format(&r, line, sizeof(line));
    if (r.exposure == STORE_EXPOSED_OTHERS) {
        fail_line("database-exposed", line);
        return -1;
    }
    char esc[sizeof(line) + 64];
    log_warn("serve", 0, "event=warning text=%s", log_escape(esc, sizeof(esc), line, strlen(line)));
    return 0;
}

/* chown one database file if it exists. 0 or -1 with err set. */
static int chown_if_exists(const char *path, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    if (chown(path, uid, gid) == 0 || errno == ENOENT)
        return 0;
    snprintf(err, errlen, "cannot chown %.900s: %s", path, strerror(errno));
    return -1;
}

/*
 * See the head comment. Returns 0, 2 (no such user) or 3 (a call failed), with the message in err.
 */
static int drop_privileges(const struct cfg *cfg, char *err, size_t errlen)
{
    const char *user = cfg->server.user;
    if (user[0] == '\0') {
        if (geteuid() == 0)
            log_warn("serve", 0,
                     "event=warning text=\"running as root: set [server] user to "
                     "drop privileges after binding\"");
        return 0;
    }
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        if (errno != 0)
            snprintf(err, errlen, "cannot look up user \"%s\": %s", user, strerror(errno));
        else
            snprintf(err, errlen, "no such user \"%s\" ([server] user)", user);
        return errno != 0 ? 3 : 2;
    }
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    if (geteuid() != 0) {
        if (geteuid() != uid)
            log_warn("serve", 0,
                     "event=warning text=\"not started as root: [server] user=%s "
                     "ignored, running as uid %ld\"",
                     user, (long)geteuid());
        return 0;
    }
    if (uid == 0) {
        log_warn("serve", 0, "event=warning text=\"[server] user=%s is root: nothing dropped\"",
                 user);
        return 0;
    }
    const char *db = cfg->server.database;
    if (store_is_postgres(db)) {
        /* No database file here: only the spool directory is this process's to write. */
        char spool[PATH_MAX];
        if (spool_dir_path(db, spool, sizeof(spool)) != 0) {
            snprintf(err, errlen, "spool directory path too long");
            return 3;
        }
        if (chown_if_exists(spool, uid, gid, err, errlen) != 0)
            return 3;
        db = NULL;
    }
    size_t dblen = db != NULL ? strlen(db) : 0;
    char *side = malloc(dblen + 16); /* room for the longest suffix below */
    if (side == NULL) {
        snprintf(err, errlen, "out of memory");
        return 3;
    }
    int rc = db != NULL ? chown_if_exists(db, uid, gid, err, errlen) : 0;
    /* "-spool" is the spool directory (storage/spool.h): the dropped process creates its files. */
    static const char *const suffixes[] = {"-wal", "-shm", "-journal", "-spool"};
    for (size_t i = 0; db != NULL && rc == 0 && i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(side, dblen + 16, "%s%s", db, suffixes[i]);
        rc = chown_if_exists(side, uid, gid, err, errlen);
    }
    free(side);
    if (rc != 0)
        return 3;
    if (initgroups(pw->pw_name, gid) != 0) {
        snprintf(err, errlen, "initgroups(%s): %s", user, strerror(errno));
        return 3;
    }
    if (setgid(gid) != 0) {
        snprintf(err, errlen, "setgid(%ld): %s", (long)gid, strerror(errno));
        return 3;
    }
    if (setuid(uid) != 0) {
        snprintf(err, errlen, "setuid(%ld): %s", (long)uid, strerror(errno));
        return 3;
    }
    /* glibc applies setuid to every thread (the writer is running); make sure it stuck. */
    if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid ||
        setuid(0) == 0) {
        snprintf(err, errlen, "privilege drop to %s did not take effect", user);
        return 3;
    }
    log_info("serve", 0, "event=privileges-dropped user=%s uid=%ld gid=%ld", user, (long)uid,
             (long)gid);
    return 0;
}

int serve_load_files(const struct cfg *cfg, struct tls_ctx **tls_out,
                     struct smtp_client_creds **creds_out, bool *tls_failed_out, char *err,
                     size_t errlen)
{
    *tls_out = NULL;
    *creds_out = NULL;
    *tls_failed_out = false;
    if (cfg_has_tls(cfg)) {
        *tls_out = tls_ctx_new_server(cfg->tls.certificate, cfg->tls.key, err, errlen);
        if (*tls_out == NULL) {
            *tls_failed_out = true;
            return -1;
        }
    }
    if (cfg->relay.smarthost_user[0] != '\0') {
        /* Read once, here, while still root: the file may be readable by root only. A SIGHUP
         * does not re-read it; a new password needs a restart. */
        if (smtp_client_creds_load(cfg->relay.smarthost_user, cfg->relay.smarthost_password_file,
                                   creds_out, err, errlen) != 0) {
            tls_ctx_unref(tls_out);
            return -1;
        }
    }
    return 0;
}

/* Gives the node's name up at the end. The loop has ended, so waiting on the database blocks
 * nobody: on the loop's own connection (SQLite), or on one opened for it (PostgreSQL, where no
 * loop holds a connection). A failure only costs the next start the lease's wait. */
static void node_stop_on(struct store *reads, const struct cfg *cfg)
{
    struct store *own = NULL;
    char err[512];
    if (reads == NULL && store_open(cfg->server.database, &own, err, sizeof(err)) != STORE_OK) {
        log_warn("node", 0, "event=leave-failed node=%s error=\"%s\"", cfg->server.node, err);
        return;
    }
    node_stop(reads != NULL ? reads : own, cfg->server.node);
    store_close(&own);
}

int serve_main(struct cfg *cfg, const char *config_path)
{
    struct server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        log_error("serve", 0, "event=start-failed error=\"out of memory\"");
        return 3;
    }
    srv->cfg = cfg;
    srv->config_path = config_path;
    int exit_code = 3;
    char err[1200];
    int rc = uv_loop_init(&srv->loop);
    if (rc != 0) {
        log_error("serve", 0, "event=start-failed error=\"%s\"", uv_strerror(rc));
        free(srv);
        return 3;
    }
    /* A peer closing its socket must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < cfg->warning_count; i++)
        log_warn("config", 0, "event=warning text=\"%s\"", cfg->warnings[i]);
    if (password_fast_for_tests())
        log_warn("serve", 0,
                 "event=insecure-hash text=\"POSTERN_TEST_FAST_HASH=1: new "
                 "password hashes use test-only cheap argon2id limits\"");
    raise_fd_limit(cfg);

    /* The files first: a configuration serve cannot start with leaves the database untouched. */
    bool tls_failed = false;
    if (serve_load_files(cfg, &srv->tls, &srv->smarthost_creds, &tls_failed, err, sizeof(err)) !=
        0) {
        fail_line(tls_failed ? "tls-failed" : "start-failed", err);
        goto out;
    }
    srv->app.smarthost_creds = srv->smarthost_creds;
    if (check_database_modes(cfg->server.database) != 0)
        goto out;
    /* The disk that fills is the database's, or for PostgreSQL (on another machine, or under its
     * own administration) the spool directory's: what this node writes itself. */
    char spool[PATH_MAX];
    if (store_is_postgres(cfg->server.database) &&
        spool_dir_path(cfg->server.database, spool, sizeof(spool)) == 0)
        disk_reserve_init(&srv->disk, spool, cfg->smtp.min_free_space_bytes);
    else
        disk_reserve_init(&srv->disk, cfg->server.database, cfg->smtp.min_free_space_bytes);
    srv->app.disk = &srv->disk;
    /* PostgreSQL: no loop holds a connection (its reads are network round trips); the reader
     * threads below and the writer have their own. */
    bool pg = store_is_postgres(cfg->server.database);
    if (!pg && store_open(cfg->server.database, &srv->reads, err, sizeof(err)) != STORE_OK) {
        log_error("store", 0, "event=open-failed error=\"%s\"", err);
        goto out;
    }
    /* Before the writer's first job: the queue claims and POP3 locks it releases at start must
     * be this process's name's alone. */
    struct store *own = NULL;
    if (srv->reads == NULL &&
        store_open(cfg->server.database, &own, err, sizeof(err)) != STORE_OK) {
        log_error("store", 0, "event=open-failed error=\"%s\"", err);
        goto out;
    }
    int started =
        node_start(srv->reads != NULL ? srv->reads : own, cfg->server.node, err, sizeof(err));
    store_close(&own);
    if (started != 0) {
        fail_line("start-failed", err);
        goto out;
    }
    srv->node_started = true;
    if (writer_start(&srv->loop, cfg->server.database, &srv->writer, err, sizeof(err)) != 0) {
        log_error("store", 0, "event=writer-failed error=\"%s\"", err);
        goto out;
    }
    writer_set_batch_observer(srv->writer, metrics_writer_batch); /* the batch histograms */
    /* Reads run inline on this loop's connection: SQLite answers in microseconds. The threaded
     * mode is for a store whose reads cross a network, PostgreSQL's; tests force it on SQLite
     * (reader.h). */
    unsigned reader_threads = reader_test_threads();
    if (pg && reader_threads == 0) {
        reader_threads = SERVE_PG_READER_THREADS;
        log_info("serve", 0, "event=reader-threads threads=%u backend=postgresql", reader_threads);
    } else if (reader_threads > 0)
        log_warn("serve", 0,
                 "event=test-reader-threads threads=%u text=\"POSTERN_TEST_READER_THREADS: "
                 "reads run on test-only reader threads\"",
                 reader_threads);
    if (reader_start(&srv->loop, cfg->server.database, reader_threads, srv->reads, &srv->reader,
                     err, sizeof(err)) != 0) {
        log_error("store", 0, "event=reader-failed error=\"%s\"", err);
        goto out_stop;
    }
    if ((rc = auth_new(&srv->loop, &srv->app.auth)) != 0) {
        fail_line("start-failed", "cannot set up password checks");
        goto out_stop;
    }
    if (dkim_cache_new(&srv->app.dkim) != 0) {
        fail_line("start-failed", "cannot set up the DKIM key cache");
        goto out_stop;
    }
    srv->app.cfg = cfg;
    srv->app.reads = srv->reads;
    srv->app.writer = srv->writer;
    srv->app.reader = srv->reader;
    rc = conn_set_new(&srv->loop, cfg, &srv->app, cfg->server.transcript, &srv->conns);
    if (rc != 0) {
        snprintf(err, sizeof(err), "cannot set up connections: %s", uv_strerror(rc));
        fail_line("start-failed", err);
        goto out_stop;
    }
    srv->nloops = resolve_loops(cfg);
    rc = listener_set_new(srv->conns, cfg, &smtp_session_handler, &pop3_session_handler, srv->tls,
                          NULL, srv->nloops > 1, &srv->listeners, err, sizeof(err));
    if (rc != 0) {
        fail_line("listen-failed", err);
        goto out_stop;
    }
    /* The counters are process-wide: the first loop answers scrapes for every loop. */
    if (cfg->server.metrics.count > 0 &&
        metrics_http_start(&srv->loop, &cfg->server.metrics, srv->reader, &srv->metrics, err,
                           sizeof(err)) != 0) {
        fail_line("listen-failed", err);
        goto out_stop;
    }
    if (srv->nloops > 1) {
        if ((rc = uv_async_init(&srv->loop, &srv->workers_async, on_worker_exited)) != 0) {
            log_error("serve", 0, "event=start-failed error=\"%s\"", uv_strerror(rc));
            goto out_stop;
        }
        srv->workers_async.data = srv;
        srv->workers_async_open = true;
    }
    for (unsigned i = 1; i < srv->nloops; i++) {
        struct worker_params wp = {
            .index = i,
            .cfg = cfg,
            .writer = srv->writer,
            .reader = srv->reader,
            .auth = srv->app.auth,
            .listeners = srv->listeners,
            .tls = srv->tls,
            .smarthost = srv->smarthost_creds,
            .disk = srv->app.disk,
            .dkim = srv->app.dkim,
            .on_exit = worker_exit_notify,
            .on_exit_arg = srv,
        };
        if (worker_new(&wp, &srv->workers[i], err, sizeof(err)) != 0) {
            fail_line("listen-failed", err);
            goto out_stop;
        }
    }
    int drop = drop_privileges(cfg, err, sizeof(err));
    if (drop != 0) {
        fail_line("privilege-drop-failed", err);
        exit_code = drop;
        goto out_stop;
    }
    if (start_signal(srv, SIGTERM) != 0 || start_signal(srv, SIGINT) != 0 ||
        start_signal(srv, SIGHUP) != 0)
        goto out_stop;
    if ((rc = uv_timer_init(&srv->loop, &srv->housekeeping)) != 0) {
        log_error("serve", 0, "event=start-failed error=\"%s\"", uv_strerror(rc));
        goto out_stop;
    }
    srv->housekeeping.data = srv;
    srv->housekeeping_open = true;
    if ((rc = uv_timer_start(&srv->housekeeping, on_housekeeping, HOUSEKEEPING_INTERVAL_MS,
                             HOUSEKEEPING_INTERVAL_MS)) != 0) {
        log_error("serve", 0, "event=start-failed error=\"%s\"", uv_strerror(rc));
        goto out_stop;
    }
    if ((rc = uv_timer_init(&srv->loop, &srv->lease)) != 0) {
        log_error("serve", 0, "event=start-failed error=\"%s\"", uv_strerror(rc));
        goto out_stop;
    }
    srv->lease.data = srv;
    srv->lease_open = true;
    uint64_t every = node_renew_every_ms();
    if ((rc = uv_timer_start(&srv->lease, on_lease, every, every)) != 0) {
        log_error("serve", 0, "event=start-failed error=\"%s\"", uv_strerror(rc));
        goto out_stop;
    }
    /* Outbound delivery, once the writer and the connection set exist. */
    if (queue_runner_new(&srv->loop, &srv->app, srv->conns, &srv->runner, err, sizeof(err)) != 0) {
        fail_line("start-failed", err);
        goto out_stop;
    }

    for (unsigned i = 1; i < srv->nloops; i++) {
        if ((rc = worker_start(srv->workers[i])) != 0) {
            snprintf(err, sizeof(err), "cannot start worker %u: %s", i, strerror(rc));
            fail_line("start-failed", err);
            goto out_stop;
        }
    }

    char shown_db[CFG_DATABASE_CONNINFO_MAX_BYTES], esc_db[2 * CFG_DATABASE_CONNINFO_MAX_BYTES];
    conninfo_mask(cfg->server.database, shown_db, sizeof(shown_db)); /* never a password */
    log_info("serve", 0,
             "event=ready version=%s node=%s database=%s config=\"%s\" pid=%ld listeners=%zu "
             "tls=%s workers=%u",
             POSTERN_VERSION, cfg->server.node,
             log_escape(esc_db, sizeof(esc_db), shown_db, strlen(shown_db)),
             config_path ? config_path : "(defaults)", (long)getpid(),
             listener_set_sockets(srv->listeners), srv->tls != NULL ? "yes" : "no", srv->nloops);
    notify_ready(); /* the service manager (server/notify.h): every listener is bound */
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    exit_code = 0;
    goto out;

out_stop:
    /* Start failed after some handles exist: close them the same way a stop does. */
    shutdown_server(srv, "start-failed");
    uv_run(&srv->loop, UV_RUN_DEFAULT);
out:
    if (srv->writer != NULL) {
        writer_stop(&srv->writer);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
    }
    if (srv->reader != NULL) {
        reader_stop(&srv->reader);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
    }
    tls_ctx_unref(&srv->tls);
    if (srv->app.auth != NULL) {
        auth_free(&srv->app.auth);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
    }
    if (srv->node_started)
        node_stop_on(srv->reads, cfg);
    store_close(&srv->reads);
    /* The loop ran to its end and every worker was joined before: nothing looks keys up now
     * (a signer's own references would outlive the cache anyway). */
    dkim_cache_free(&srv->app.dkim);
    /* The runner and its clients are gone (the loop ran to its end): nothing borrows it now. */
    srv->app.smarthost_creds = NULL;
    smtp_client_creds_free(&srv->smarthost_creds);
    if (uv_loop_close(&srv->loop) != 0)
        log_warn("serve", 0, "event=loop-close-failed text=\"handles still open\"");
    else if (exit_code == 0)
        log_info("serve", 0, "event=stopped");
    free(srv);
    return exit_code;
}
