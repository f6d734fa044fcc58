/*
 * pg_listener.c - store_listener_start on PostgreSQL (storage/store.h): one thread with one
 * connection of its own that LISTENs on a channel, waits in poll() on the connection's socket and
 * a wake-up eventfd, and calls the caller's function when notifications arrive and after each
 * (re)connection. It reconnects a lost connection with the writer's backoff.
 *
 * Why a thread and not the loop: opening a connection with libpq (PQconnectdbParams, PQreset)
 * blocks for as long as the server takes to answer, up to connect_timeout; on a thread of its own
 * that wait never touches an event loop, and the loop hears of a notification only through the
 * caller's function (uv_async_send). While connected the thread sleeps in poll() and costs
 * nothing.
 *
 * Ownership: the struct store_listener belongs to whoever started it. Its connection and its
 * outage flag belong to the thread from pthread_create until the thread ends (store_listener_stop
 * joins it, then frees the rest); the only field both threads touch after the start is the stop
 * flag, an atomic, with the eventfd that wakes the thread to look at it.
 *
 * What it does not do: read the notifications' payloads (an announcement is a hint: the caller
 * looks at the database), or run any statement but the LISTEN.
 */
#include "storage/postgres/pg_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/backends.h"

struct store_listener {
    char *conninfo; /* owned */
    char channel[PG_NOTIFY_CHANNEL_BYTES];
    store_listener_fn fn; /* borrowed, with arg: called on the thread */
    void *arg;
    int wake_fd;          /* owned: an eventfd written once, by store_listener_stop */
    atomic_bool stopping; /* set by store_listener_stop before it writes wake_fd */
    pthread_t thread;
    struct pg_conn *conn; /* owned by the thread while it runs; NULL until its first connection */
    bool down;            /* an outage was logged and its end is not yet */
};

static bool stopping(struct store_listener *l)
{
    return atomic_load(&l->stopping);
}

/* Sleeps up to ms (-1: for ever) or until stop; with sock >= 0, also until it is readable (or
 * in error: the read that follows says which). True when sock is the reason to wake. */
static bool wait_for(struct store_listener *l, int sock, int ms)
{
    struct pollfd fds[2] = {{.fd = l->wake_fd, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
    int rc = poll(fds, sock >= 0 ? 2 : 1, ms);
    if (rc < 0) {
        if (errno != EINTR) {
            /* Never expected (EFAULT, EINVAL, ENOMEM); do not spin on it. */
            log_error("postgresql", 0, "event=listener-poll-failed errno=%d", errno);
            usleep(PG_RECONNECT_MIN_MS * 1000);
        }
        return false;
    }
    return rc > 0 && sock >= 0 && fds[1].revents != 0;
}

static void log_error_text(enum log_level level, const char *event, const char *channel,
                           const char *why)
{
    char esc[PG_ERRMSG_BYTES * 2];
    log_escape(esc, sizeof(esc), why, strlen(why));
    log_emit(level, "postgresql", 0, "event=%s channel=%s error=%s", event, channel, esc);
}

/* Opens the connection and LISTENs, or reconnects the lost one (which LISTENs again:
 * pg_conn_reconnect). STORE_OK, or STORE_ERR with the reason in why. */
static int connect_once(struct store_listener *l, char *why, size_t whylen)
{
    if (l->conn != NULL) {
        if (pg_conn_reconnect(l->conn) == STORE_OK)
            return STORE_OK;
        snprintf(why, whylen, "%s", pg_conn_errmsg(l->conn));
        return STORE_ERR;
    }
    char err[PG_ERRMSG_BYTES + 32];
    if (pg_conn_open_as(l->conninfo, PG_LISTENER_APPLICATION_NAME, &l->conn, err, sizeof(err)) !=
        STORE_OK) {
        snprintf(why, whylen, "%s", err);
        return STORE_ERR;
    }
    if (pg_listen(l->conn, l->channel) != STORE_OK) {
        snprintf(why, whylen, "%s", pg_conn_errmsg(l->conn));
        pg_conn_close(&l->conn); /* opened afresh at the next attempt */
        return STORE_ERR;
    }
    return STORE_OK;
}

/* Connected and listening: waits for notifications until the connection is lost or stop. */
static void listen_until_lost(struct store_listener *l)
{
    while (!stopping(l)) {
        int sock = pg_conn_socket(l->conn);
        int rc = 0;
        if (sock >= 0) {
            if (!wait_for(l, sock, -1))
                continue;
            /* Everything the socket holds now: one call for all of it. */
            struct pg_notification n;
            bool heard = false;
            while ((rc = pg_notify_take(l->conn, &n)) == 1)
                heard = true;
            if (heard && !stopping(l))
                l->fn(l->arg, STORE_LISTENER_HEARD);
        }
        if (sock < 0 || rc != 0) {
            log_error_text(LOG_LEVEL_WARN, "listener-lost", l->channel, pg_conn_errmsg(l->conn));
            l->down = true;
            return;
        }
    }
}

static void *listener_main(void *p)
{
    struct store_listener *l = p;
    int64_t backoff_ms = 0;
    char why[PG_ERRMSG_BYTES + 32];
    while (!stopping(l)) {
        if (connect_once(l, why, sizeof(why)) != STORE_OK) {
            if (!l->down)
                log_error_text(LOG_LEVEL_WARN, "listener-down", l->channel, why);
            l->down = true;
            backoff_ms = backoff_ms == 0 ? PG_RECONNECT_MIN_MS : backoff_ms * 2;
            if (backoff_ms > PG_RECONNECT_MAX_MS)
                backoff_ms = PG_RECONNECT_MAX_MS;
            wait_for(l, -1, (int)backoff_ms);
            continue;
        }
        backoff_ms = 0;
        log_info("postgresql", 0, "event=%s channel=%s backend_pid=%d",
                 l->down ? "listener-reconnected" : "listener-connected", l->channel,
                 pg_conn_backend_pid(l->conn));
        l->down = false;
        if (!stopping(l))
            l->fn(l->arg, STORE_LISTENER_CONNECTED);
        listen_until_lost(l);
    }
    pg_conn_close(&l->conn);
    return NULL;
}

int pg_listener_start(const char *conninfo, const char *channel, store_listener_fn fn, void *arg,
                      struct store_listener **out, char *err, size_t errlen)
{
    *out = NULL;
    size_t len = strlen(channel);
    if (len == 0 || len >= PG_NOTIFY_CHANNEL_BYTES) {
        snprintf(err, errlen, "listen: channel name of %zu bytes (1 to %d)", len,
                 PG_NOTIFY_CHANNEL_BYTES - 1);
        return STORE_ERR;
    }
    struct store_listener *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->conninfo = strdup(conninfo)) == NULL) {
        free(l);
        snprintf(err, errlen, "listen: out of memory");
        return STORE_ERR;
    }
    memcpy(l->channel, channel, len + 1);
    l->fn = fn;
    l->arg = arg;
    atomic_init(&l->stopping, false);
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->wake_fd < 0) {
        snprintf(err, errlen, "listen: eventfd: %s", strerror(errno));
        free(l->conninfo);
        free(l);
        return STORE_ERR;
    }
    /* Signals belong to the first loop: the thread starts with all of them blocked. */
    sigset_t all, old;
    sigfillset(&all);
    int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc == 0) {
        rc = pthread_create(&l->thread, NULL, listener_main, l);
        int restored = pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (restored != 0)
            log_error("postgresql", 0, "event=pthread-failed call=pthread_sigmask errno=%d",
                      restored);
    }
    if (rc != 0) {
        snprintf(err, errlen, "listen: cannot start the thread: %s", strerror(rc));
        close(l->wake_fd);
        free(l->conninfo);
        free(l);
        return STORE_ERR;
    }
    *out = l;
    return STORE_OK;
}

void pg_listener_stop(struct store_listener **lp)
{
    struct store_listener *l = *lp;
    if (l == NULL)
        return;
    *lp = NULL;
    atomic_store(&l->stopping, true);
    uint64_t one = 1;
    ssize_t n;
    do
        n = write(l->wake_fd, &one, sizeof(one));
    while (n < 0 && errno == EINTR);
    /* An eventfd refuses a write only when its counter would overflow, which one write cannot
     * do; the thread would still see the flag at its next wake-up. */
    if (n < 0)
        log_error("postgresql", 0, "event=listener-wake-failed errno=%d", errno);
    int rc = pthread_join(l->thread, NULL);
    if (rc != 0)
        log_error("postgresql", 0, "event=pthread-failed call=pthread_join errno=%d", rc);
    close(l->wake_fd);
    free(l->conninfo);
    free(l);
}
