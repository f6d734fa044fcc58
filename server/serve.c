/*
 * serve.c - `postern serve`: opens the store (a read connection for the loop thread), starts the
 * writer thread, installs the signal handlers and runs the libuv loop. The listeners and sessions
 * plug in here (conn.c, smtp_session.c, pop3_session.c).
 *
 * Shutdown (SIGTERM, SIGINT): stop the housekeeping timer and signal handlers, drain the writer
 * (every job already handed over is committed and its callback delivered), close every handle,
 * let the loop finish its close callbacks, exit 0. SIGHUP reloads what can be reloaded without
 * dropping sessions (certificates, with the TLS layer).
 */
#include "server/serve.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"
#include "common/password.h"
#include "storage/store.h"
#include "storage/writer.h"

/* Expired windows are dropped this often; lookups check expiry themselves, so this only keeps
 * the table small. */
#define HOUSEKEEPING_INTERVAL_MS (60 * 1000)

struct server {
    uv_loop_t loop;
    struct cfg *cfg;         /* borrowed from main */
    const char *config_path; /* borrowed; NULL with built-in defaults */
    struct store *reads;     /* owned: the loop thread's read connection */
    struct writer *writer;   /* owned */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t housekeeping;
    struct writer_job purge_job;
    bool purge_busy; /* purge_job is with the writer */
    bool stopping;
};

static int purge_run(struct store *st, struct writer_job *job)
{
    return store_window_purge(st, store_now_ms());
}

static void purge_done(struct writer_job *job, int status)
{
    struct server *srv = (struct server *)((char *)job - offsetof(struct server, purge_job));
    srv->purge_busy = false;
    if (status != 0)
        log_warn("store", 0, "event=purge-failed status=%d", status);
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

static void shutdown_server(struct server *srv, const char *why)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    log_info("serve", 0, "event=stopping reason=%s", why);
    uv_timer_stop(&srv->housekeeping);
    uv_close((uv_handle_t *)&srv->housekeeping, NULL);
    uv_close((uv_handle_t *)&srv->sigterm, NULL);
    uv_close((uv_handle_t *)&srv->sigint, NULL);
    uv_close((uv_handle_t *)&srv->sighup, NULL);
    /* Every job already handed to the writer is committed and answered before we go. */
    writer_stop(&srv->writer);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *srv = h->data;
    if (signum == SIGHUP) {
        log_info("serve", 0, "event=reload signal=HUP");
        return;
    }
    shutdown_server(srv, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int start_signal(struct server *srv, uv_signal_t *h, int signum)
{
    int rc = uv_signal_init(&srv->loop, h);
    if (rc == 0) {
        h->data = srv;
        rc = uv_signal_start(h, on_signal, signum);
    }
    if (rc != 0)
        log_error("serve", 0, "event=signal-failed signal=%d error=\"%s\"", signum,
                  uv_strerror(rc));
    return rc;
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

    if (store_open(cfg->server.database, &srv->reads, err, sizeof(err)) != STORE_OK) {
        log_error("store", 0, "event=open-failed error=\"%s\"", err);
        goto out;
    }
    if (writer_start(&srv->loop, cfg->server.database, &srv->writer, err, sizeof(err)) != 0) {
        log_error("store", 0, "event=writer-failed error=\"%s\"", err);
        goto out;
    }
    if (start_signal(srv, &srv->sigterm, SIGTERM) != 0 ||
        start_signal(srv, &srv->sigint, SIGINT) != 0 ||
        start_signal(srv, &srv->sighup, SIGHUP) != 0)
        goto out_stop;
    if ((rc = uv_timer_init(&srv->loop, &srv->housekeeping)) != 0 ||
        (srv->housekeeping.data = srv,
         rc = uv_timer_start(&srv->housekeeping, on_housekeeping, HOUSEKEEPING_INTERVAL_MS,
                             HOUSEKEEPING_INTERVAL_MS)) != 0) {
        log_error("serve", 0, "event=start-failed error=\"%s\"", uv_strerror(rc));
        goto out_stop;
    }

    log_info("serve", 0, "event=ready version=%s database=\"%s\" config=\"%s\" pid=%ld",
             POSTERN_VERSION, cfg->server.database, config_path ? config_path : "(defaults)",
             (long)getpid());
    rc = uv_run(&srv->loop, UV_RUN_DEFAULT);
    exit_code = 0;
    goto out;

out_stop:
    shutdown_server(srv, "start-failed");
    uv_run(&srv->loop, UV_RUN_DEFAULT);
out:
    if (srv->writer != NULL) {
        writer_stop(&srv->writer);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
    }
    store_close(&srv->reads);
    if (uv_loop_close(&srv->loop) != 0)
        log_warn("serve", 0, "event=loop-close-failed text=\"handles still open\"");
    else if (exit_code == 0)
        log_info("serve", 0, "event=stopped");
    free(srv);
    return exit_code;
}
