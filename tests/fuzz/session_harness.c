/*
 * session_harness.c - the server and the client of the session fuzz targets (session_harness.h
 * says what an input means and why the connection is loopback TCP).
 *
 * The server: built once per process on a database in a fresh temporary folder (under /dev/shm
 * when it exists, so the writer's fsyncs cost nothing), with the account of session_harness.h,
 * 127.0.0.2/32 as trusted network, plaintext logins allowed, hour-long timeouts and a 1 ms
 * smtp.error_delay (a real one, 1 s a command past the soft error limit, would make most inputs
 * slow; 1 ms still runs the delay's timer); logging is cut down to errors. It is never torn down:
 * libFuzzer exits the process, an atexit handler removes the folder, and what the globals still
 * reach is not a leak.
 *
 * The client: a non-blocking socket watched by a uv_poll on the server's own loop, so one thread
 * runs both sides and every wait is the loop's (no sleeping, no wall-clock deadline).
 */
#include "session_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"
#include "common/password.h"
#include "common/pure/cidr.h"
#include "server/app.h"
#include "server/auth/auth.h"
#include "storage/reader.h"
#include "storage/spool.h"
#include "storage/store.h"
#include "storage/writer.h"

/* The client's address, by the two low bits of the option byte. */
static const char *const client_addrs[4] = {
    "127.0.0.3", /* untrusted */
    "127.0.0.2", /* in the trusted network */
    "127.0.0.4", /* untrusted, with a POP-before-SMTP window of the seeded user */
    "127.0.0.3",
};
#define TRUSTED_NET "127.0.0.2/32"
#define WINDOW_ADDR "127.0.0.4"

static const char config_text[] = "[server]\n"
                                  "hostname = mx.example.test\n"
                                  "log_level = error\n"
                                  "[smtp]\n"
                                  "plaintext_auth = yes\n"
                                  "timeout = 1h\n"
                                  "max_message_size = 2K\n"
                                  "error_delay = 1ms\n"
                                  "[pop3]\n"
                                  "plaintext_auth = yes\n"
                                  "timeout = 1h\n"
                                  "[relay]\n"
                                  "window = 1h\n";

static struct {
    bool ready;
    char dir[64];
    char db[128];
    uv_loop_t loop;
    struct cfg cfg;
    struct store *reads;
    struct writer *writer;
    struct conn_set *set;
    struct app app;
    int listen_fd;
    struct sockaddr_in listen_addr;
    int64_t user_id;
} h;

/* One input's client side. */
struct client {
    int fd;
    uv_poll_t poll;
    bool poll_closed;
    struct conn *conn; /* a reference is held until the client saw the end */
    bool freed;        /* on_free ran: the server side is gone */
    const unsigned char *in;
    size_t in_len, sent, chunk;
    bool shut;   /* our FIN was sent */
    bool eof;    /* the server's FIN (or RST) was read */
    bool reset;  /* it was a RST */
    bool want_w; /* waiting for POLLOUT */
    unsigned char *out;
    size_t out_len, out_cap;
};

static void remove_dir(void)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char path[160];
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(path, sizeof(path), "%s%s", h.db, suffixes[i]);
        (void)unlink(path);
    }
    /* The SMTP spool directory (storage/spool.h) holds no named file once every input ended. */
    snprintf(path, sizeof(path), "%s%s", h.db, SPOOL_DIR_SUFFIX);
    (void)rmdir(path);
    (void)rmdir(h.dir);
}

static void die(const char *what)
{
    fprintf(stderr, "session harness: %s (errno: %s)\n", what, strerror(errno));
    remove_dir();
    abort();
}

void harness_require(int cond, const char *what, const unsigned char *out, size_t len)
{
    if (cond)
        return;
    fprintf(stderr, "session harness: %s; the server sent %zu octets:\n", what, len);
    fwrite(out, 1, len, stderr);
    fputc('\n', stderr);
    remove_dir();
    abort();
}

/* ---- building the server ------------------------------------------------------------------- */

static void setup_store(void)
{
    char err[512];
    if (store_open(h.db, &h.reads, err, sizeof(err)) != STORE_OK)
        die(err);
    char hash[PASSWORD_HASH_BYTES];
    struct cidr net;
    if (store_domain_add(h.reads, HARNESS_DOMAIN) != STORE_OK ||
        password_hash(HARNESS_PASSWORD, strlen(HARNESS_PASSWORD), hash) != 0 ||
        store_user_add(h.reads, HARNESS_USER, HARNESS_DOMAIN, hash) != STORE_OK ||
        cidr_parse(TRUSTED_NET, &net, NULL) != 0 || store_network_add(h.reads, &net) != STORE_OK ||
        store_user_get(h.reads, HARNESS_USER, &h.user_id, hash, sizeof(hash)) != STORE_OK)
        die("cannot seed the database");
}

static void setup_listener(void)
{
    h.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h.listen_fd < 0)
        die("socket");
    memset(&h.listen_addr, 0, sizeof(h.listen_addr));
    h.listen_addr.sin_family = AF_INET;
    h.listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(h.listen_addr);
    if (bind(h.listen_fd, (struct sockaddr *)&h.listen_addr, sizeof(h.listen_addr)) != 0 ||
        listen(h.listen_fd, 8) != 0 ||
        getsockname(h.listen_fd, (struct sockaddr *)&h.listen_addr, &alen) != 0)
        die("cannot listen on 127.0.0.1");
}

static void setup(void)
{
    /* Before anything hashes: the cheap argon2id limits (common/password.h). */
    if (setenv("POSTERN_TEST_FAST_HASH", "1", 1) != 0)
        die("setenv");
    signal(SIGPIPE, SIG_IGN);
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(h.dir, sizeof(h.dir), "%s/postern-fuzz-XXXXXX", base);
    if (mkdtemp(h.dir) == NULL)
        die("mkdtemp");
    snprintf(h.db, sizeof(h.db), "%s/fuzz.db", h.dir);
    atexit(remove_dir);
    __sanitizer_set_death_callback(remove_dir); /* a finding ends the process without atexit */

    char err[512];
    if (cfg_load_string(&h.cfg, config_text, "fuzz", NULL, err, sizeof(err)) != 0)
        die(err);
    log_set_level(h.cfg.server.log_level);
    if (password_init() != 0 || uv_loop_init(&h.loop) != 0)
        die("init");
    setup_store();
    if (writer_start(&h.loop, h.db, &h.writer, err, sizeof(err)) != 0)
        die(err);
    /* Inline reads, as the server runs them on SQLite (storage/reader.h). */
    if (reader_start(&h.loop, h.db, 0, h.reads, &h.app.reader, err, sizeof(err)) != 0)
        die(err);
    if (auth_new(&h.loop, &h.app.auth) != 0)
        die("auth_new");
    auth_cap_delay_for_tests(h.app.auth, 1);
    h.app.cfg = &h.cfg;
    h.app.reads = h.reads;
    h.app.writer = h.writer;
    if (conn_set_new(&h.loop, &h.cfg, &h.app, false, &h.set) != 0)
        die("conn_set_new");
    setup_listener();
    h.ready = true;
}

/* ---- resetting the database between inputs -------------------------------------------------- */

struct reset_job {
    struct writer_job job; /* first: the writer hands this back */
    const struct harness_target *target;
    bool done;
    int status;
};

static int reset_run(struct store *st, struct writer_job *job)
{
    struct reset_job *r = (struct reset_job *)job;
    int rc = store_exec_for_tests(st, "DELETE FROM mailbox; DELETE FROM queue;"
                                      " DELETE FROM windows; DELETE FROM pop_logins;");
    struct ip_addr ip;
    char key[CIDR_STRLEN];
    if (rc == STORE_OK && ip_parse(WINDOW_ADDR, &ip) == 0) {
        ip_window_key(&ip, h.cfg.relay.window_ipv6_prefix, key, sizeof(key));
        rc = store_window_open(st, key, HARNESS_USER, store_now_ms(),
                               (int64_t)h.cfg.relay.window_ms);
    }
    if (rc == STORE_OK && r->target->seed != NULL)
        rc = r->target->seed(st, h.user_id);
    return rc;
}

static void reset_done(struct writer_job *job, int status)
{
    struct reset_job *r = (struct reset_job *)job;
    r->done = true;
    r->status = status;
}

static void reset_state(const struct harness_target *t)
{
    struct reset_job r = {.job = {.run = reset_run, .done = reset_done}, .target = t};
    if (writer_submit(h.writer, &r.job) != 0)
        die("writer_submit");
    while (!r.done)
        uv_run(&h.loop, UV_RUN_ONCE);
    if (r.status != 0)
        die("cannot reset the database");
    /* Forget failure counts and cached logins, so no input depends on the ones before it. */
    auth_advance_clock_for_tests(h.app.auth, AUTH_THROTTLE_WINDOW_MS + AUTH_CACHE_TTL_MS);
}

/* ---- the client ---------------------------------------------------------------------------- */

static void on_conn_free(void *arg, const struct ip_addr *peer)
{
    struct client *cl = arg;
    cl->freed = true;
}

static void client_read(struct client *cl)
{
    while (!cl->eof) {
        if (cl->out_cap - cl->out_len < 4096) {
            size_t cap = cl->out_cap ? cl->out_cap * 2 : 16384;
            unsigned char *p = realloc(cl->out, cap);
            if (p == NULL)
                die("out of memory");
            cl->out = p;
            cl->out_cap = cap;
        }
        ssize_t n = recv(cl->fd, cl->out + cl->out_len, cl->out_cap - cl->out_len, 0);
        if (n > 0) {
            cl->out_len += (size_t)n;
        } else if (n == 0) {
            cl->eof = true;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else if (errno != EINTR) {
            cl->eof = true;
            cl->reset = true;
        }
    }
}

/* Sends the next chunk once the server has read everything sent so far; FIN after the last. */
static void client_write(struct client *cl)
{
    cl->want_w = false;
    if (cl->shut)
        return;
    bool closing = cl->conn == NULL || conn_is_closing(cl->conn);
    if (!closing && cl->sent < cl->in_len) {
        struct conn_stats st;
        conn_get_stats(cl->conn, &st);
        if (cl->chunk > 0 && st.bytes_in < cl->sent)
            return; /* the server has not read the last chunk yet */
        size_t n = cl->in_len - cl->sent;
        size_t end = cl->chunk > 0 ? (cl->sent / cl->chunk + 1) * cl->chunk : cl->in_len;
        if (end < cl->in_len)
            n = end - cl->sent;
        ssize_t w = send(cl->fd, cl->in + cl->sent, n, MSG_NOSIGNAL);
        if (w > 0) {
            cl->sent += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            cl->want_w = true; /* try again when the socket is writable */
            return;
        } else if (w < 0) {
            closing = true; /* the server is gone: stop sending */
        }
    }
    if (closing || cl->sent == cl->in_len) {
        (void)shutdown(cl->fd, SHUT_WR);
        cl->shut = true;
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    /* Nothing to do here: the driver loop looks at the socket after every iteration. */
}

static void on_poll_closed(uv_handle_t *handle)
{
    struct client *cl = handle->data;
    cl->poll_closed = true;
}

static void update_poll(struct client *cl)
{
    int events = (cl->eof ? 0 : UV_READABLE) | (cl->want_w ? UV_WRITABLE : 0);
    if (events == 0)
        uv_poll_stop(&cl->poll);
    else if (uv_poll_start(&cl->poll, events, on_poll) != 0)
        die("uv_poll_start");
}

static int client_connect(const char *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in src = {.sin_family = AF_INET};
    /*
     * The client sends its FIN first, so its side of each connection ends in TIME_WAIT for a
     * minute. A port chosen at bind() must be free of those, and a few hundred inputs a second
     * would run out of ports; with the choice left to connect() (IP_BIND_ADDRESS_NO_PORT) the
     * kernel may reuse a TIME_WAIT port for a new loopback connection (tcp_tw_reuse).
     */
    int one = 1;
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) != 0)
        die("IP_BIND_ADDRESS_NO_PORT");
    if (inet_pton(AF_INET, addr, &src.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0)
        die("cannot bind the client to its 127.0.0.x address");
    /* Small chunks must not wait for the server's delayed ACK (Nagle): 40 ms each. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        die("TCP_NODELAY");
    /*
     * Non-blocking from the start: libFuzzer's SIGALRM (its -timeout check) may interrupt any
     * call, and an interrupted blocking connect() goes on in the background with no way to wait
     * for it but poll().
     */
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        die("O_NONBLOCK");
    if (connect(fd, (struct sockaddr *)&h.listen_addr, sizeof(h.listen_addr)) != 0) {
        if (errno != EINPROGRESS && errno != EINTR)
            die("connect");
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t elen = sizeof(err);
        while (poll(&pfd, 1, -1) < 0) {
            if (errno != EINTR)
                die("poll");
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0) {
            errno = err;
            die("connect");
        }
    }
    return fd;
}

void harness_run(const struct harness_target *t, const uint8_t *data, size_t size)
{
    if (!h.ready)
        setup();
    if (size == 0)
        return;
    reset_state(t);

    struct client cl = {.in = data + 1, .in_len = size - 1, .chunk = data[0] >> 3};
    cl.fd = client_connect(client_addrs[data[0] & 3]);
    int sfd;
    while ((sfd = accept(h.listen_fd, NULL, NULL)) < 0) {
        if (errno != EINTR)
            die("accept");
    }
    struct conn_params params = {
        .handler = t->handler,
        .service = t->services[(data[0] >> 2) & 1],
        .listener_name = "fuzz",
        .on_free = on_conn_free,
        .on_free_arg = &cl,
    };
    struct conn *c = NULL;
    if (conn_accept(h.set, sfd, &params, &c) != 0)
        die("conn_accept");
    conn_ref(c);
    cl.conn = c;
    if (uv_poll_init(&h.loop, &cl.poll, cl.fd) != 0)
        die("uv_poll_init");
    cl.poll.data = &cl;

    while (!(cl.eof && cl.freed)) {
        client_read(&cl);
        client_write(&cl);
        if (cl.eof && cl.conn != NULL)
            conn_unref(&cl.conn); /* the server closed; let it free the connection */
        if (cl.eof && cl.freed)
            break;
        update_poll(&cl);
        uv_run(&h.loop, UV_RUN_ONCE);
    }
    uv_poll_stop(&cl.poll);
    uv_close((uv_handle_t *)&cl.poll, on_poll_closed);
    while (!cl.poll_closed)
        uv_run(&h.loop, UV_RUN_ONCE);
    close(cl.fd);
    /* Close callbacks of the session's own timers run in this iteration at the latest. */
    uv_run(&h.loop, UV_RUN_NOWAIT);

    if (getenv("POSTERN_FUZZ_SHOW") != NULL) /* for writing seeds: what the server answered */
        fprintf(stderr, "--- %zu octets%s:\n%.*s\n", cl.out_len, cl.reset ? " (reset)" : "",
                (int)cl.out_len, (const char *)cl.out);
    if (t->check != NULL && !cl.reset)
        t->check(cl.out, cl.out_len);
    free(cl.out);
}
