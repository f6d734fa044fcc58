/*
 * test_conn.c - server/net/conn.c over real sockets on 127.0.0.1, with a real libuv loop, all in
 * this one thread: the test's client sockets are non-blocking and every wait alternates one loop
 * iteration (UV_RUN_NOWAIT) with reading the clients, under a deadline.
 *
 * A recording handler stands in for a protocol: it logs every line, bad line, data chunk and
 * callback into a struct rec per connection, answers "OK <line>" (or a padded numbered reply of a
 * chosen size), and acts on a few verbs: WAIT pauses reading, STARTTLS starts TLS, DATA enters
 * data mode until a line ".", QUIT closes, LONG raises the line limit, MASK masks the next line.
 *
 * Covered: lines split at every position, byte by byte, and many lines in one write (at most
 * CONN_LINES_PER_TURN per loop iteration, and a second client is served in between); overlong
 * lines answered once and their tails never executed, also across writes; NUL lines; raising
 * the limit; data mode entered and left inside one packet; backpressure (a client that pipelines
 * and never reads: reading stops, the queued output stays bounded, and then every reply arrives
 * in order); pause/resume with pipelined input kept, also input arriving while paused; the close
 * path (QUIT, client gone, half-close, abort, conn_ref keeping a closed connection's memory,
 * on_close exactly once); the idle timeout; shutdown with the notice, and bounded for a client
 * that never reads; STARTTLS with plaintext injected in the same packet (discarded) and in a later
 * packet (TLS fails, never executed); implicit TLS with the greeting held until the handshake;
 * an outbound conn_connect doing STARTTLS as a client against a server conn; and the transcript
 * with masking; an idle connection holding no buffer. Under POSTERN_SANITIZE=ON, ASan checks every
 * close path for leaks and use-after-free, and uv_loop_close() at the end of each test proves no
 * handle was left open.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "common/clock.h"
#include "common/pure/buf.h"
#include "server/net/conn.h"
#include "server/net/tls.h"

#define MAX_RECS        8
#define MAX_CLIENTS     8
#define TEST_LINE_MAX   64  /* the recording handler's limit */
#define TEST_LINE_LARGE 256 /* what LONG raises it to */
#define WAIT_MS         5000
#define SETTLE_MS       150 /* "nothing more happens": how long we watch */

/* ---- the recording handler ------------------------------------------------------------------ */

struct rec {
    bool used;
    struct conn *conn; /* NULL after on_close */
    char *log;         /* "L:line\n", "B:too-long\n", "B:nul\n", "D:<data>\n" ... */
    size_t log_len, log_cap;
    unsigned lines;
    unsigned bad;
    unsigned opens, closes, tls_ready, timeouts, shutdowns;
    char reason[CONN_REASON_MAX_BYTES];
    char data[4096]; /* data mode: what arrived so far */
    size_t data_len;
    uint64_t first_seq, last_seq; /* global sequence numbers of the first and last line */
    unsigned max_lines_per_iter;
    unsigned lines_this_iter;
    uint64_t iter_seen;
    bool secret_next; /* MASK: the next line is a secret, not echoed */
};

static struct {
    uv_loop_t loop;
    struct conn_set *set;
    int listen_fd;
    uint16_t port;
    struct rec recs[MAX_RECS];
    size_t nrecs;
    struct client *clients[MAX_CLIENTS];
    size_t nclients;
    uint64_t iteration;
    uint64_t seq;
    size_t reply_bytes; /* 0: "OK <line>"; otherwise a numbered reply of this size */
    bool greet;
    struct tls_ctx *server_tls, *client_tls;
    char tmpdir[64];
    int shutdown_done_calls;
} env;

static void rec_log(struct rec *r, const char *prefix, const char *data, size_t len)
{
    size_t need = r->log_len + strlen(prefix) + len + 2;
    if (need > r->log_cap) {
        size_t cap = r->log_cap ? r->log_cap * 2 : 1024;
        while (cap < need)
            cap *= 2;
        r->log = realloc(r->log, cap);
        assert_non_null(r->log);
        r->log_cap = cap;
    }
    memcpy(r->log + r->log_len, prefix, strlen(prefix));
    r->log_len += strlen(prefix);
    memcpy(r->log + r->log_len, data, len);
    r->log_len += len;
    r->log[r->log_len++] = '\n';
    r->log[r->log_len] = '\0';
}

static const char *rec_text(const struct rec *r)
{
    return r->log != NULL ? r->log : "";
}

static void h_open(struct conn *c)
{
    assert_true(env.nrecs < MAX_RECS);
    struct rec *r = &env.recs[env.nrecs++];
    r->used = true;
    r->conn = c;
    r->opens++;
    conn_set_session(c, r);
    if (env.greet)
        conn_write(c, "220 hi\r\n", 8);
}

static void reply_for(struct conn *c, struct rec *r, const char *line)
{
    if (env.reply_bytes == 0) {
        conn_reply(c, "OK %s\r\n", line);
        return;
    }
    char *buf = malloc(env.reply_bytes);
    assert_non_null(buf);
    int n = snprintf(buf, env.reply_bytes, "R%06u ", r->lines - 1);
    memset(buf + n, 'x', env.reply_bytes - (size_t)n - 2);
    memcpy(buf + env.reply_bytes - 2, "\r\n", 2);
    conn_write(c, buf, env.reply_bytes);
    free(buf);
}

static void h_line(struct conn *c, const char *line, size_t len)
{
    struct rec *r = conn_session(c);
    assert_non_null(r);
    assert_int_equal(strlen(line), len);
    r->lines++;
    r->last_seq = ++env.seq;
    if (r->first_seq == 0)
        r->first_seq = r->last_seq;
    if (r->iter_seen != env.iteration) {
        r->iter_seen = env.iteration;
        r->lines_this_iter = 0;
    }
    if (++r->lines_this_iter > r->max_lines_per_iter)
        r->max_lines_per_iter = r->lines_this_iter;
    if (env.reply_bytes == 0)
        rec_log(r, "L:", line, len);
    if (strcmp(line, "WAIT") == 0) {
        conn_pause_reading(c);
    } else if (strcmp(line, "STARTTLS") == 0) {
        conn_write(c, "220 go\r\n", 8);
        assert_int_equal(conn_starttls(c), 0);
    } else if (strcmp(line, "DATA") == 0) {
        conn_write(c, "354 go\r\n", 8);
        r->data_len = 0;
        conn_set_mode_data(c, true);
    } else if (strcmp(line, "QUIT") == 0) {
        conn_write(c, "221 bye\r\n", 9);
        conn_close(c, "quit");
    } else if (strcmp(line, "LONG") == 0) {
        assert_int_equal(conn_set_max_line(c, TEST_LINE_LARGE), 0);
        conn_write(c, "OK LONG\r\n", 9);
    } else if (strcmp(line, "MASK") == 0) {
        conn_mask_next_line(c);
        r->secret_next = true;
        conn_write(c, "334 go\r\n", 8);
    } else if (r->secret_next) {
        r->secret_next = false;
        conn_write(c, "235 ok\r\n", 8);
    } else {
        reply_for(c, r, line);
    }
}

static void h_bad_line(struct conn *c, enum linereader_status why)
{
    struct rec *r = conn_session(c);
    r->bad++;
    rec_log(r, "B:", why == LINEREADER_TOO_LONG ? "too-long" : "nul",
            why == LINEREADER_TOO_LONG ? 8 : 3);
    conn_write(c, "500 bad\r\n", 9);
}

/* Data ends with a line "." (CRLF.CRLF, or ".\r\n" right at the start). */
static size_t h_data(struct conn *c, const unsigned char *p, size_t n)
{
    struct rec *r = conn_session(c);
    size_t before = r->data_len;
    size_t room = sizeof(r->data) - 1 - r->data_len;
    size_t take = n < room ? n : room;
    memcpy(r->data + r->data_len, p, take);
    r->data_len += take;
    r->data[r->data_len] = '\0';
    const char *end = NULL;
    size_t end_len = 0;
    if (strncmp(r->data, ".\r\n", 3) == 0) {
        end = r->data;
        end_len = 3;
    } else if ((end = strstr(r->data, "\r\n.\r\n")) != NULL) {
        end_len = 5;
    }
    if (end == NULL)
        return take;
    size_t total_end = (size_t)(end - r->data) + end_len; /* through the terminator */
    size_t consumed = total_end - before;
    size_t body = end_len == 3 ? 0 : (size_t)(end - r->data) + 2;
    rec_log(r, "D:", r->data, body);
    r->data_len = 0;
    conn_set_mode_data(c, false);
    conn_reply(c, "250 data %zu\r\n", body);
    return consumed;
}

static void h_tls_ready(struct conn *c)
{
    struct rec *r = conn_session(c);
    r->tls_ready++;
    rec_log(r, "T:", "ready", 5);
}

static void h_timeout(struct conn *c)
{
    struct rec *r = conn_session(c);
    r->timeouts++;
    conn_write(c, "421 timeout\r\n", 13);
}

static void h_shutdown(struct conn *c)
{
    struct rec *r = conn_session(c);
    r->shutdowns++;
    conn_write(c, "421 shutdown\r\n", 14);
}

static void h_close(struct conn *c, const char *reason)
{
    struct rec *r = conn_session(c);
    if (r == NULL)
        return; /* the TLS setup failed before on_open */
    r->closes++;
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
    r->conn = NULL;
}

/* The test protocol's secret: "SECRET word" received, and its echo "OK SECRET word" sent. */
static size_t h_transcript_visible(const char *line, size_t len, bool outgoing)
{
    if (!outgoing && len >= 7 && strncmp(line, "SECRET ", 7) == 0)
        return 6; /* "SECRET" */
    if (outgoing && len >= 10 && strncmp(line, "OK SECRET ", 10) == 0)
        return 9; /* "OK SECRET" */
    return len;
}

static const struct conn_handler test_handler = {
    .proto = "test",
    .max_line_bytes = TEST_LINE_MAX,
    .largest_line_bytes = TEST_LINE_LARGE,
    .on_open = h_open,
    .on_line = h_line,
    .on_bad_line = h_bad_line,
    .on_data = h_data,
    .on_tls_ready = h_tls_ready,
    .on_timeout = h_timeout,
    .on_shutdown = h_shutdown,
    .on_close = h_close,
    .transcript_visible = h_transcript_visible,
};

/* ---- test clients: plain sockets, optionally with a tls.c client filter --------------------- */

struct client {
    int fd;
    unsigned char *in;
    size_t in_len, in_cap;
    struct tls_conn *tls;
    bool eof;
    bool reading; /* pump reads it; false: a client that never reads */
};

static uint64_t now_ms(void)
{
    return (uint64_t)clock_monotonic_ms();
}

static void client_append(struct client *cl, const void *p, size_t n)
{
    if (cl->in_len + n + 1 > cl->in_cap) {
        size_t cap = cl->in_cap ? cl->in_cap : 4096;
        while (cap < cl->in_len + n + 1)
            cap *= 2;
        cl->in = realloc(cl->in, cap);
        assert_non_null(cl->in);
        cl->in_cap = cap;
    }
    memcpy(cl->in + cl->in_len, p, n);
    cl->in_len += n;
    cl->in[cl->in_len] = '\0';
}

static void step(void);

static void send_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t deadline = now_ms() + WAIT_MS;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            continue;
        }
        assert_true(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        assert_true(now_ms() < deadline);
        step();
    }
}

static void client_flush_tls(struct client *cl)
{
    unsigned char tmp[16384];
    while (cl->tls != NULL && tls_pending_ciphertext(cl->tls) > 0) {
        size_t n = tls_take_ciphertext(cl->tls, tmp, sizeof(tmp));
        send_all(cl->fd, tmp, n);
    }
}

static void client_pump(struct client *cl)
{
    unsigned char tmp[65536];
    if (!cl->reading || cl->fd < 0)
        return;
    for (;;) {
        ssize_t n = recv(cl->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (n > 0) {
            if (cl->tls != NULL)
                assert_int_equal(tls_feed_ciphertext(cl->tls, tmp, (size_t)n), 0);
            else
                client_append(cl, tmp, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            cl->eof = true;
        break;
    }
    if (cl->tls != NULL) {
        size_t got;
        while (tls_read_plaintext(cl->tls, tmp, sizeof(tmp), &got) == TLS_OK)
            client_append(cl, tmp, got);
        client_flush_tls(cl);
    }
}

/* One loop iteration, then every client reads what arrived. */
static void step(void)
{
    env.iteration++;
    uv_run(&env.loop, UV_RUN_NOWAIT);
    for (size_t i = 0; i < env.nclients; i++)
        client_pump(env.clients[i]);
    usleep(200);
}

#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        uint64_t deadline_ = now_ms() + WAIT_MS;                                                   \
        while (!(cond) && now_ms() < deadline_)                                                    \
            step();                                                                                \
        assert_true(cond);                                                                         \
    } while (0)

static void run_for(uint64_t ms)
{
    uint64_t deadline = now_ms() + ms;
    while (now_ms() < deadline)
        step();
}

static void client_send(struct client *cl, const void *data, size_t len)
{
    if (cl->tls != NULL) {
        assert_int_equal(tls_write_plaintext(cl->tls, data, len), 0);
        client_flush_tls(cl);
    } else {
        send_all(cl->fd, data, len);
    }
}

static void client_sends(struct client *cl, const char *s)
{
    client_send(cl, s, strlen(s));
}

static bool client_has(const struct client *cl, const char *needle)
{
    return cl->in != NULL && strstr((const char *)cl->in, needle) != NULL;
}

/* Starts the client side of TLS over the socket (after "220 go"); input so far is kept. */
static void client_start_tls(struct client *cl)
{
    char err[TLS_ERR_MAX_BYTES];
    cl->tls = tls_conn_new_client(env.client_tls, "mail.example.test", err, sizeof(err));
    assert_non_null(cl->tls);
    client_flush_tls(cl);
}

static void client_close(struct client *cl)
{
    if (cl->fd >= 0)
        close(cl->fd);
    cl->fd = -1;
}

/*
 * A connected client and the server-side conn for it (accepted by the test, handed to
 * conn_accept). small_buffers shrinks both kernel buffers so backpressure shows quickly.
 */
static struct client *open_client_ex(bool small_buffers, bool implicit_tls, struct conn **conn_out)
{
    assert_true(env.nclients < MAX_CLIENTS);
    struct client *cl = calloc(1, sizeof(*cl));
    assert_non_null(cl);
    cl->reading = true;
    cl->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(cl->fd >= 0);
    int small = 4096;
    if (small_buffers)
        assert_int_equal(setsockopt(cl->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(env.port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(cl->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    int sfd = accept(env.listen_fd, NULL, NULL);
    assert_true(sfd >= 0);
    if (small_buffers)
        assert_int_equal(setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    struct conn_params p = {
        .handler = &test_handler,
        .service = CONN_SERVICE_SMTP_MX,
        .listener_name = "test",
        .tls_ctx = env.server_tls,
        .implicit_tls = implicit_tls,
    };
    struct conn *c = NULL;
    assert_int_equal(conn_accept(env.set, sfd, &p, &c), 0);
    assert_non_null(c);
    if (conn_out != NULL)
        *conn_out = c;
    env.clients[env.nclients++] = cl;
    return cl;
}

static struct rec *rec_of(struct conn *c)
{
    return conn_session(c);
}

/* ---- fixtures ------------------------------------------------------------------------------- */

static int setup(void **state)
{
    memset(&env, 0, sizeof(env));
    assert_int_equal(uv_loop_init(&env.loop), 0);
    assert_int_equal(conn_set_new(&env.loop, NULL, NULL, false, &env.set), 0);
    env.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(env.listen_fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(env.listen_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(env.listen_fd, 16), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(env.listen_fd, (struct sockaddr *)&sin, &len), 0);
    env.port = ntohs(sin.sin_port);
    return 0;
}

static int teardown(void **state)
{
    for (size_t i = 0; i < env.nclients; i++)
        client_close(env.clients[i]);
    conn_set_free(&env.set);
    for (int i = 0; i < 1000; i++)
        uv_run(&env.loop, UV_RUN_NOWAIT);
    /* Every handle closed: nothing leaked on any close path. */
    assert_int_equal(uv_loop_close(&env.loop), 0);
    close(env.listen_fd);
    for (size_t i = 0; i < env.nclients; i++) {
        tls_conn_free(&env.clients[i]->tls);
        free(env.clients[i]->in);
        free(env.clients[i]);
    }
    for (size_t i = 0; i < MAX_RECS; i++)
        free(env.recs[i].log);
    tls_ctx_unref(&env.server_tls);
    tls_ctx_unref(&env.client_tls);
    if (env.tmpdir[0] != '\0') {
        char path[128];
        snprintf(path, sizeof(path), "%s/cert.pem", env.tmpdir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/key.pem", env.tmpdir);
        unlink(path);
        rmdir(env.tmpdir);
    }
    return 0;
}

static int setup_tls(void **state)
{
    setup(state);
    snprintf(env.tmpdir, sizeof(env.tmpdir), "/tmp/test_conn.XXXXXX");
    assert_non_null(mkdtemp(env.tmpdir));
    char cert[128], key[128], err[TLS_ERR_MAX_BYTES];
    snprintf(cert, sizeof(cert), "%s/cert.pem", env.tmpdir);
    snprintf(key, sizeof(key), "%s/key.pem", env.tmpdir);
    assert_int_equal(tls_make_self_signed(cert, key, "mail.example.test", err, sizeof(err)), 0);
    env.server_tls = tls_ctx_new_server(cert, key, err, sizeof(err));
    assert_non_null(env.server_tls);
    env.client_tls = tls_ctx_new_client(err, sizeof(err));
    assert_non_null(env.client_tls);
    return 0;
}

/* ---- lines ---------------------------------------------------------------------------------- */

static const char three_lines[] = "AAA\r\nBB\r\nC\r\n";
static const char three_logged[] = "L:AAA\nL:BB\nL:C\n";

static void test_split_every_position(void **state)
{
    size_t len = strlen(three_lines);
    for (size_t k = 1; k < len; k++) {
        struct conn *c;
        struct client *cl = open_client_ex(false, false, &c);
        struct rec *r = rec_of(c);
        client_send(cl, three_lines, k);
        run_for(5);
        client_send(cl, three_lines + k, len - k);
        WAIT_FOR(r->lines == 3);
        assert_string_equal(rec_text(r), three_logged);
        WAIT_FOR(client_has(cl, "OK C\r\n"));
        assert_string_equal((char *)cl->in, "OK AAA\r\nOK BB\r\nOK C\r\n");
        client_close(cl);
        WAIT_FOR(r->closes == 1);
        assert_string_equal(r->reason, "client-closed");
        /* Reuse the slots: this loop makes more connections than MAX_RECS. */
        WAIT_FOR(conn_set_count(env.set) == 0);
        free(r->log);
        memset(r, 0, sizeof(*r));
        env.nrecs--;
        free(cl->in);
        free(cl);
        env.nclients--;
    }
}

static void test_byte_by_byte(void **state)
{
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    const char *msg = "HELLO there\r\nbare lf\nNOOP\r\n";
    for (size_t i = 0; msg[i] != '\0'; i++) {
        client_send(cl, msg + i, 1);
        step();
    }
    WAIT_FOR(rec_of(c)->lines == 3);
    assert_string_equal(rec_text(rec_of(c)), "L:HELLO there\nL:bare lf\nL:NOOP\n");
}

/* What the connection holds now (struct conn_stats.held_bytes). */
static size_t held_bytes(struct conn *c)
{
    struct conn_stats st;
    conn_get_stats(c, &st);
    return st.held_bytes;
}

/* An idle connection holds no buffer: the line reader parks when it is empty and the output
 * queue is released once its last write completed, after a small reply and after a large one. */
static void test_idle_holds_no_buffers(void **state)
{
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    client_sends(cl, "HELLO\r\n");
    WAIT_FOR(cl->in_len == strlen("OK HELLO\r\n"));
    WAIT_FOR(held_bytes(c) == 0);
    env.reply_bytes = 48 * 1024;
    client_sends(cl, "BIG\r\n");
    WAIT_FOR(cl->in_len == strlen("OK HELLO\r\n") + 48 * 1024);
    WAIT_FOR(held_bytes(c) == 0);
    assert_int_equal(rec_of(c)->lines, 2);
}

/* A reply the socket can take goes out inside conn_reply (uv_try_write): nothing is left queued
 * or held for a later loop turn, and the client gets it. */
static void test_reply_written_at_once(void **state)
{
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    client_sends(cl, "HELLO\r\n");
    WAIT_FOR(cl->in_len == strlen("OK HELLO\r\n"));
    WAIT_FOR(held_bytes(c) == 0);
    assert_int_equal(conn_reply(c, "NOW %d\r\n", 1), 0);
    struct conn_stats st;
    conn_get_stats(c, &st);
    assert_int_equal(st.output_bytes, 0);
    assert_int_equal(st.held_bytes, 0);
    WAIT_FOR(client_has(cl, "NOW 1\r\n"));
}

static void test_many_lines_one_write_and_fairness(void **state)
{
    enum { N = 1000 };
    struct conn *ca, *cb;
    struct client *a = open_client_ex(false, false, &ca);
    struct client *b = open_client_ex(false, false, &cb);
    char *msg = malloc(N * 8 + 1);
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(msg + len, "L%04d\r\n", i);
    client_send(a, msg, len);
    client_sends(b, "ME TOO\r\n");
    WAIT_FOR(rec_of(ca)->lines == N && rec_of(cb)->lines == 1);
    /* In order, none lost. */
    struct rec *ra = rec_of(ca);
    const char *p = rec_text(ra);
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "L:L%04d\n", i);
        assert_memory_equal(p, want, strlen(want));
        p += strlen(want);
    }
    /* One turn per loop iteration, and B was served long before A was done. */
    assert_true(ra->max_lines_per_iter <= CONN_LINES_PER_TURN);
    assert_true(rec_of(cb)->first_seq < ra->first_seq + 4 * CONN_LINES_PER_TURN);
    WAIT_FOR(a->in_len == (size_t)N * 10); /* "OK L0000\r\n" each */
    free(msg);
}

static void test_overlong_and_nul(void **state)
{
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    struct rec *r = rec_of(c);
    char big[300];
    memset(big, 'x', 200);
    memcpy(big + 200, "\r\nNEXT\r\n", 9);
    client_sends(cl, big);
    WAIT_FOR(r->lines == 1);
    assert_string_equal(rec_text(r), "B:too-long\nL:NEXT\n");

    /* The tail of an overlong line arrives in later writes and is never taken as a command. */
    memset(big, 'y', 100);
    big[100] = '\0';
    client_sends(cl, big);
    run_for(20);
    client_sends(cl, "QUIT-NOT-A-COMMAND");
    run_for(20);
    client_sends(cl, big);
    client_sends(cl, "\r\nAFTER\r\n");
    client_send(cl, "A\0B\r\nEND\r\n", 10);
    WAIT_FOR(r->lines == 3);
    assert_string_equal(rec_text(r), "B:too-long\nL:NEXT\nB:too-long\nL:AFTER\nB:nul\nL:END\n");
    WAIT_FOR(client_has(cl, "OK END\r\n"));
    assert_string_equal((char *)cl->in, "500 bad\r\nOK NEXT\r\n500 bad\r\nOK AFTER\r\n"
                                        "500 bad\r\nOK END\r\n");
    struct conn_stats st;
    conn_get_stats(c, &st);
    assert_int_equal(st.bad_lines, 3);
    assert_int_equal(st.lines_in, 3);

    /* A raised limit takes the same 200 octets as one line. */
    client_sends(cl, "LONG\r\n");
    memset(big, 'z', 200);
    memcpy(big + 200, "\r\n", 3);
    client_sends(cl, big);
    WAIT_FOR(r->lines == 5);
    assert_int_equal(r->bad, 3);
    WAIT_FOR(client_has(cl, "OK zzzz"));
}

static void test_data_mode(void **state)
{
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    struct rec *r = rec_of(c);
    /* Data mode entered and left within one packet: nothing lost, nothing seen twice. */
    client_sends(cl, "DATA\r\nhello\r\nworld\r\n.\r\nNOOP\r\n");
    WAIT_FOR(r->lines == 2);
    assert_string_equal(rec_text(r), "L:DATA\nD:hello\r\nworld\r\n\nL:NOOP\n");
    WAIT_FOR(client_has(cl, "OK NOOP\r\n"));
    assert_string_equal((char *)cl->in, "354 go\r\n250 data 14\r\nOK NOOP\r\n");

    /* The same byte by byte. */
    const char *msg = "DATA\r\nab\r\n.\r\nX\r\n";
    for (size_t i = 0; msg[i] != '\0'; i++) {
        client_send(cl, msg + i, 1);
        step();
    }
    WAIT_FOR(r->lines == 4);
    assert_string_equal(rec_text(r),
                        "L:DATA\nD:hello\r\nworld\r\n\nL:NOOP\nL:DATA\nD:ab\r\n\nL:X\n");
}

/* ---- backpressure, pause ------------------------------------------------------------------- */

static void test_backpressure(void **state)
{
    enum { N = 3000, REPLY = 4000 };
    env.reply_bytes = REPLY;
    struct conn *c;
    struct client *cl = open_client_ex(true, false, &c);
    struct rec *r = rec_of(c);
    cl->reading = false; /* pipelines everything and never reads */
    char *msg = malloc(N * 8 + 1);
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(msg + len, "L%04d\r\n", i);
    client_send(cl, msg, len);
    free(msg);

    /* The server answers until its output passes the bound, then stops reading. */
    struct conn_stats st;
    uint64_t deadline = now_ms() + WAIT_MS;
    do {
        step();
        conn_get_stats(c, &st);
        assert_true(st.output_bytes <= CONN_OUTPUT_HIGH_BYTES + CONN_LINES_PER_TURN * REPLY);
    } while (st.reading && now_ms() < deadline);
    assert_false(st.reading);
    unsigned answered = r->lines;
    run_for(SETTLE_MS);
    conn_get_stats(c, &st);
    assert_false(st.reading);
    assert_int_equal(r->lines, answered); /* nothing more while nobody reads */
    assert_true(answered < N);
    assert_true(st.output_bytes > CONN_OUTPUT_HIGH_BYTES);
    assert_true(st.output_bytes <= CONN_OUTPUT_HIGH_BYTES + CONN_LINES_PER_TURN * REPLY);

    /* Now the client reads: every reply arrives, in order. */
    cl->reading = true;
    uint64_t until = now_ms() + 4 * WAIT_MS;
    while (cl->in_len < (size_t)N * REPLY && now_ms() < until)
        step();
    assert_int_equal(cl->in_len, (size_t)N * REPLY);
    for (unsigned i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "R%06u ", i);
        assert_memory_equal(cl->in + (size_t)i * REPLY, want, strlen(want));
        assert_memory_equal(cl->in + (size_t)(i + 1) * REPLY - 2, "\r\n", 2);
    }
    assert_int_equal(r->lines, N);
    conn_get_stats(c, &st);
    assert_true(st.reading);
}

static void test_pause_resume(void **state)
{
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    struct rec *r = rec_of(c);
    client_sends(cl, "WAIT\r\nA\r\nB\r\n");
    WAIT_FOR(r->lines == 1);
    run_for(SETTLE_MS);
    assert_int_equal(r->lines, 1);
    assert_true(conn_is_paused(c));
    struct conn_stats st;
    conn_get_stats(c, &st);
    assert_false(st.reading);
    assert_int_equal(st.input_bytes, 6); /* "A\r\nB\r\n" waits, not lost */
    /* More input while paused stays in the kernel. */
    client_sends(cl, "C\r\nWAIT\r\nD\r\n");
    run_for(SETTLE_MS);
    assert_int_equal(r->lines, 1);

    conn_resume_reading(c);
    WAIT_FOR(r->lines == 5);
    run_for(SETTLE_MS);
    assert_int_equal(r->lines, 5); /* paused again at the second WAIT */
    assert_string_equal(rec_text(r), "L:WAIT\nL:A\nL:B\nL:C\nL:WAIT\n");
    conn_resume_reading(c);
    WAIT_FOR(r->lines == 6);
    WAIT_FOR(client_has(cl, "OK D\r\n"));
    assert_string_equal((char *)cl->in, "OK A\r\nOK B\r\nOK C\r\nOK D\r\n");
    /* No idle timeout fires while paused is tested by test_timeout. */
}

/* A pause with nothing waiting keeps the socket registered (no epoll change per pause); input
 * that then arrives is read once into the stash and stops reading, and none of it is handed over
 * before the resume. */
static void test_pause_keeps_reading_until_input(void **state)
{
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    struct rec *r = rec_of(c);
    client_sends(cl, "WAIT\r\n");
    WAIT_FOR(r->lines == 1);
    run_for(SETTLE_MS);
    assert_true(conn_is_paused(c));
    struct conn_stats st;
    conn_get_stats(c, &st);
    assert_true(st.reading);
    assert_int_equal(st.input_bytes, 0);
    client_sends(cl, "E\r\nF\r\n");
    run_for(SETTLE_MS);
    conn_get_stats(c, &st);
    assert_false(st.reading);
    assert_int_equal(st.input_bytes, 6);
    assert_int_equal(r->lines, 1);
    conn_resume_reading(c);
    WAIT_FOR(r->lines == 3);
    assert_string_equal(rec_text(r), "L:WAIT\nL:E\nL:F\n");
    WAIT_FOR(client_has(cl, "OK F\r\n"));
    conn_get_stats(c, &st);
    assert_true(st.reading);
}

/* ---- closing -------------------------------------------------------------------------------- */

static void test_close_paths(void **state)
{
    /* QUIT: the reply arrives, then EOF; on_close once with the reason. */
    struct conn *c1;
    struct client *q = open_client_ex(false, false, &c1);
    struct rec *r1 = rec_of(c1);
    client_sends(q, "QUIT\r\nIGNORED\r\n");
    WAIT_FOR(q->eof);
    assert_string_equal((char *)q->in, "221 bye\r\n");
    assert_int_equal(r1->closes, 1);
    assert_string_equal(r1->reason, "quit");
    assert_string_equal(rec_text(r1), "L:QUIT\n");

    /* The client vanishes in the middle of a line. */
    struct conn *c2;
    struct client *v = open_client_ex(false, false, &c2);
    struct rec *r2 = rec_of(c2);
    client_sends(v, "HALF A LI");
    run_for(20);
    client_close(v);
    WAIT_FOR(r2->closes == 1);
    assert_string_equal(r2->reason, "client-closed");
    assert_int_equal(r2->lines, 0);

    /* Half-close: the reply to what was sent still arrives. */
    struct conn *c3;
    struct client *h = open_client_ex(false, false, &c3);
    struct rec *r3 = rec_of(c3);
    client_sends(h, "LAST\r\n");
    assert_int_equal(shutdown(h->fd, SHUT_WR), 0);
    WAIT_FOR(h->eof);
    assert_string_equal((char *)h->in, "OK LAST\r\n");
    assert_int_equal(r3->closes, 1);
    assert_string_equal(r3->reason, "client-closed");

    /* Abort with a reference held: the memory stays until the last unref. */
    struct conn *c4;
    struct client *a = open_client_ex(false, false, &c4);
    struct rec *r4 = rec_of(c4);
    conn_ref(c4);
    conn_abort(c4, "test-abort");
    assert_int_equal(r4->closes, 1);
    assert_true(conn_is_closing(c4));
    assert_null(conn_session(c4));
    /* Everything on a closing connection is a harmless no-op. */
    assert_int_equal(conn_write(c4, "x", 1), -1);
    conn_close(c4, "again");
    conn_abort(c4, "again");
    conn_pause_reading(c4);
    conn_resume_reading(c4);
    conn_set_mode_data(c4, true);
    assert_int_equal(conn_starttls(c4), -ENOTCONN);
    WAIT_FOR(a->eof);
    WAIT_FOR(conn_set_count(env.set) == 1); /* only c4, kept by the reference */
    assert_int_equal(r4->closes, 1);
    assert_string_equal(r4->reason, "test-abort");
    assert_true(conn_is_closing(c4));
    conn_unref(&c4);
    assert_null(c4);
    assert_int_equal(conn_set_count(env.set), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(env.recs[i].closes, 1);
}

static void test_timeout(void **state)
{
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    struct rec *r = rec_of(c);
    conn_set_timeout(c, 100);
    /* Activity restarts the timer. */
    for (int i = 0; i < 4; i++) {
        run_for(60);
        client_sends(cl, "NOOP\r\n");
    }
    assert_int_equal(r->timeouts, 0);
    /* Paused: the server is busy, not the client; no timeout. */
    client_sends(cl, "WAIT\r\n");
    run_for(300);
    assert_int_equal(r->timeouts, 0);
    conn_resume_reading(c);
    WAIT_FOR(cl->eof);
    assert_int_equal(r->timeouts, 1);
    assert_string_equal(r->reason, "timeout");
    assert_true(client_has(cl, "421 timeout\r\n"));
}

static void on_shutdown_done(void *arg)
{
    env.shutdown_done_calls++;
}

static void test_shutdown(void **state)
{
    struct conn *c1, *c2;
    struct client *a = open_client_ex(false, false, &c1);
    struct client *b = open_client_ex(false, false, &c2);
    client_sends(a, "NOOP\r\n");
    WAIT_FOR(client_has(a, "OK NOOP\r\n"));
    conn_set_shutdown(env.set, on_shutdown_done, NULL);
    WAIT_FOR(a->eof && b->eof && env.shutdown_done_calls == 1);
    assert_string_equal((char *)a->in, "OK NOOP\r\n421 shutdown\r\n");
    assert_string_equal((char *)b->in, "421 shutdown\r\n");
    assert_int_equal(env.recs[0].shutdowns, 1);
    assert_string_equal(env.recs[1].reason, "shutdown");
    assert_int_equal(conn_set_count(env.set), 0);
    run_for(20);
    assert_int_equal(env.shutdown_done_calls, 1);
}

static void test_shutdown_bounded(void **state)
{
    env.reply_bytes = 8000;
    struct conn *c;
    struct client *cl = open_client_ex(true, false, &c);
    cl->reading = false;
    char msg[400 * 6 + 1];
    size_t len = 0;
    for (int i = 0; i < 400; i++)
        len += (size_t)sprintf(msg + len, "L%03d\r\n", i);
    client_send(cl, msg, len);
    run_for(SETTLE_MS);
    uint64_t start = now_ms();
    conn_set_shutdown(env.set, on_shutdown_done, NULL);
    uint64_t deadline = start + CONN_CLOSE_FLUSH_MS + CONN_LINGER_MS + 2000;
    while (env.shutdown_done_calls == 0 && now_ms() < deadline)
        step();
    assert_int_equal(env.shutdown_done_calls, 1);
    assert_true(now_ms() - start >= CONN_CLOSE_FLUSH_MS - 100); /* it did wait for the flush */
    assert_string_equal(env.recs[0].reason, "shutdown");
}

/* ---- TLS ------------------------------------------------------------------------------------ */

static void test_starttls_discards_injection(void **state)
{
    env.greet = true;
    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    struct rec *r = rec_of(c);
    WAIT_FOR(client_has(cl, "220 hi\r\n"));
    assert_true(conn_can_starttls(c));
    /* The classic CVE-2011-0411 probe: a command pipelined behind STARTTLS in one packet. */
    client_sends(cl, "STARTTLS\r\nINJECTED\r\n");
    WAIT_FOR(client_has(cl, "220 go\r\n"));
    run_for(20);
    assert_string_equal((char *)cl->in, "220 hi\r\n220 go\r\n");
    assert_true(conn_is_tls(c));
    assert_false(conn_can_starttls(c));
    cl->in_len = 0;
    client_start_tls(cl);
    WAIT_FOR(r->tls_ready == 1);
    client_sends(cl, "AFTER\r\n");
    WAIT_FOR(client_has(cl, "OK AFTER\r\n"));
    assert_string_equal(rec_text(r), "L:STARTTLS\nT:ready\nL:AFTER\n");
    char desc[TLS_DESCRIBE_MAX_BYTES];
    assert_non_null(strstr(conn_tls_describe(c, desc, sizeof(desc)), "TLSv1."));
    assert_int_equal(conn_starttls(c), -EALREADY);

    /* Injection in a later packet, before the client's handshake: TLS fails, never executed. */
    struct conn *c2;
    struct client *cl2 = open_client_ex(false, false, &c2);
    struct rec *r2 = rec_of(c2);
    client_sends(cl2, "STARTTLS\r\n");
    WAIT_FOR(client_has(cl2, "220 go\r\n"));
    client_sends(cl2, "INJECTED\r\n");
    WAIT_FOR(r2->closes == 1);
    assert_string_equal(r2->reason, "tls-error");
    assert_string_equal(rec_text(r2), "L:STARTTLS\n");
}

static void test_starttls_unavailable(void **state)
{
    struct conn *c;
    open_client_ex(false, false, &c);
    assert_false(conn_can_starttls(c));
    assert_int_equal(conn_starttls(c), -ENOTSUP);
}

static void test_implicit_tls(void **state)
{
    env.greet = true;
    struct conn *c;
    struct client *cl = open_client_ex(false, true, &c);
    struct rec *r = rec_of(c);
    run_for(50);
    assert_int_equal(cl->in_len, 0); /* the greeting is not sent in the clear */
    client_start_tls(cl);
    WAIT_FOR(client_has(cl, "220 hi\r\n"));
    assert_int_equal(r->tls_ready, 1);
    client_sends(cl, "PING\r\nQUIT\r\n");
    WAIT_FOR(cl->eof);
    assert_string_equal((char *)cl->in, "220 hi\r\nOK PING\r\n221 bye\r\n");
    assert_string_equal(r->reason, "quit");

    /* Garbage on an implicit-TLS connection: closed, nothing delivered. */
    struct conn *c2;
    struct client *g = open_client_ex(false, true, &c2);
    struct rec *r2 = rec_of(c2);
    client_sends(g, "EHLO plain\r\nNOOP\r\n");
    WAIT_FOR(r2->closes == 1);
    assert_string_equal(r2->reason, "tls-error");
    assert_int_equal(r2->lines, 0);
}

/* An outbound connection (conn_connect) speaking STARTTLS as the client. */
struct outbound {
    int step;
    unsigned closes;
    char reason[CONN_REASON_MAX_BYTES];
    char replies[512];
};
static struct outbound out_state;

static void o_open(struct conn *c)
{
    conn_set_session(c, &out_state);
    conn_write(c, "STARTTLS\r\n", 10);
}

static void o_line(struct conn *c, const char *line, size_t len)
{
    size_t used = strlen(out_state.replies);
    snprintf(out_state.replies + used, sizeof(out_state.replies) - used, "%s|", line);
    if (strcmp(line, "220 go") == 0) {
        assert_int_equal(conn_starttls(c), 0);
    } else if (strcmp(line, "OK AFTER") == 0) {
        conn_write(c, "QUIT\r\n", 6);
    }
}

static void o_tls_ready(struct conn *c)
{
    conn_write(c, "AFTER\r\n", 7);
}

static void o_close(struct conn *c, const char *reason)
{
    out_state.closes++;
    snprintf(out_state.reason, sizeof(out_state.reason), "%s", reason);
}

static const struct conn_handler out_handler = {
    .proto = "test-out",
    .max_line_bytes = SMTP_REPLY_LINE_MAX_BYTES,
    .largest_line_bytes = SMTP_REPLY_LINE_MAX_BYTES,
    .on_open = o_open,
    .on_line = o_line,
    .on_tls_ready = o_tls_ready,
    .on_close = o_close,
};

static void test_outbound_starttls(void **state)
{
    memset(&out_state, 0, sizeof(out_state));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(env.port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct conn_params p = {
        .handler = &out_handler,
        .service = CONN_SERVICE_OUTBOUND,
        .tls_ctx = env.client_tls,
        .sni_hostname = "mail.example.test",
    };
    struct conn *oc;
    assert_int_equal(conn_connect(env.set, (struct sockaddr *)&sin, &p, &oc), 0);
    assert_int_equal(conn_service(oc), CONN_SERVICE_OUTBOUND);
    /* Accept the server side once the connection is in the backlog. */
    int sfd = -1;
    uint64_t deadline = now_ms() + WAIT_MS;
    assert_int_equal(fcntl(env.listen_fd, F_SETFL, O_NONBLOCK), 0);
    while (sfd < 0 && now_ms() < deadline) {
        step();
        sfd = accept(env.listen_fd, NULL, NULL);
    }
    assert_true(sfd >= 0);
    struct conn_params sp = {
        .handler = &test_handler, .service = CONN_SERVICE_SMTP_MX, .tls_ctx = env.server_tls};
    struct conn *sc;
    assert_int_equal(conn_accept(env.set, sfd, &sp, &sc), 0);
    struct rec *r = rec_of(sc);
    WAIT_FOR(out_state.closes == 1 && r->closes == 1);
    assert_string_equal(out_state.replies, "220 go|OK AFTER|221 bye|");
    assert_string_equal(rec_text(r), "L:STARTTLS\nT:ready\nL:AFTER\nL:QUIT\n");
    assert_string_equal(r->reason, "quit");
    assert_string_equal(out_state.reason, "client-closed");

    /* A refused connect reports through on_close, without on_open. */
    memset(&out_state, 0, sizeof(out_state));
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in free_addr = {.sin_family = AF_INET};
    free_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(probe, (struct sockaddr *)&free_addr, sizeof(free_addr)), 0);
    socklen_t alen = sizeof(free_addr);
    assert_int_equal(getsockname(probe, (struct sockaddr *)&free_addr, &alen), 0);
    close(probe); /* bound, never listened: connecting there is refused */
    assert_int_equal(conn_connect(env.set, (struct sockaddr *)&free_addr, &p, &oc), 0);
    WAIT_FOR(out_state.closes == 1);
    assert_non_null(strstr(out_state.reason, "connect-failed"));
    assert_string_equal(out_state.replies, "");
}

/* ---- transcript ----------------------------------------------------------------------------- */

static void test_transcript_masks(void **state)
{
    conn_set_free(&env.set);
    for (int i = 0; i < 10; i++)
        uv_run(&env.loop, UV_RUN_NOWAIT);
    assert_int_equal(conn_set_new(&env.loop, NULL, NULL, true, &env.set), 0);
    char path[] = "/tmp/test_conn_log.XXXXXX";
    int logfd = mkstemp(path);
    assert_true(logfd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(logfd, STDERR_FILENO) >= 0);

    struct conn *c;
    struct client *cl = open_client_ex(false, false, &c);
    client_sends(cl, "NOOP x=1\r\nMASK\r\nc2VjcmV0\r\nSECRET  aHVzaA==\r\n"
                     "AUTH PLAIN dmVyYg==\r\nAFTER\r\n");
    WAIT_FOR(client_has(cl, "OK AFTER\r\n"));
    client_close(cl);
    WAIT_FOR(conn_set_count(env.set) == 0);

    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    char text[8192];
    ssize_t n = pread(logfd, text, sizeof(text) - 1, 0);
    assert_true(n > 0);
    text[n] = '\0';
    close(logfd);
    unlink(path);
    assert_non_null(strstr(text, "event=connected ip=127.0.0.1 port="));
    assert_non_null(strstr(text, "event=recv line=\"NOOP x=1\"\n"));
    assert_non_null(strstr(text, "event=send line=\"OK NOOP x=1\"\n"));
    assert_non_null(strstr(text, "event=recv line=\"***\"\n"));
    assert_non_null(strstr(text, "event=recv line=AFTER\n"));
    assert_null(strstr(text, "c2VjcmV0")); /* neither received nor echoed in the clear */
    /* The handler's hook masks its protocol's secret in both directions... */
    assert_non_null(strstr(text, "event=recv line=\"SECRET ***\"\n"));
    assert_non_null(strstr(text, "event=send line=\"OK SECRET ***\"\n"));
    assert_null(strstr(text, "aHVzaA=="));
    /* ...and conn.c itself knows no verb: what the hook lets through is logged whole. */
    assert_non_null(strstr(text, "event=recv line=\"AUTH PLAIN dmVyYg==\"\n"));
    assert_non_null(strstr(text, "event=disconnected reason=client-closed duration_ms="));
    assert_non_null(strstr(text, " lines=6\n"));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_every_position, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_by_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_written_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_lines_one_write_and_fairness, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_holds_no_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlong_and_nul, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_keeps_reading_until_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_starttls_discards_injection, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(test_starttls_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_implicit_tls, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(test_outbound_starttls, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(test_transcript_masks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
