/*
 * metrics_http.c - the [server] metrics endpoint (metrics_http.h): listening sockets, one
 * request per client, the answer, the close.
 *
 * A client's request head is gathered into a fixed buffer of METRICS_HTTP_REQUEST_MAX_BYTES;
 * once the blank line that ends it has arrived, reading stops, the request line alone is looked
 * at (headers are ignored: nothing a scraper can send changes the answer), one response is
 * written and the connection is closed from the write callback. The exposition is made at that
 * moment, from the counters and from two counts read through this loop's reader
 * (storage/reader.h): inline, at once; with reader threads the answer waits for them, the read
 * holding the client as one more of its references.
 *
 * What it does not do: know the metrics (metrics.c) or their format (metrics_text.c).
 */
#include "server/metrics/metrics_http.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "server/metrics/metrics.h"
#include "common/util.h"
#include "storage/reader.h"
#include "storage/store.h"

struct client {
    struct metrics_http *h;     /* borrowed: the owner */
    struct client *prev, *next; /* the owner's list */
    uv_tcp_t tcp;
    uv_timer_t timer; /* METRICS_HTTP_TIMEOUT_MS from the accept */
    uv_write_t wr;
    uv_shutdown_t sd;
    bool draining;    /* answered and shut down: what still arrives is read and dropped */
    int handles_open; /* references: tcp and timer not yet closed, and the gauges' read if out */
    struct reader_job gauges; /* the two counts */
    struct metrics_gauges g;  /* gauges' result */
    bool closing;
    char *resp; /* owned: the response being written */
    size_t len; /* octets of req received */
    char req[METRICS_HTTP_REQUEST_MAX_BYTES];
};

struct metrics_http {
    uv_loop_t *loop;
    struct reader *reads;                 /* borrowed: the loop's */
    uv_tcp_t servers[2 * CFG_LISTEN_MAX]; /* one per address, and the IPv4 retry of "*" */
    size_t nservers;                      /* initialised entries of servers */
    size_t servers_open;                  /* not yet closed */
    struct client *clients;
    size_t nclients;
    bool stopping;
};

static void maybe_free(struct metrics_http *h)
{
    if (h->stopping && h->servers_open == 0 && h->nclients == 0)
        free(h);
}

/* Drops one of c's references (head of struct client): the last frees it. */
static void client_unref(struct client *c)
{
    if (--c->handles_open > 0)
        return;
    struct metrics_http *h = c->h;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->nclients--;
    free(c->resp);
    free(c);
    maybe_free(h);
}

static void on_client_closed(uv_handle_t *handle)
{
    client_unref(handle->data);
}

static void client_close(struct client *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_timeout(uv_timer_t *t)
{
    client_close(t->data);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct client *c = req->data;
    if (c->closing)
        return;
    c->draining = true;
    c->len = 0;
    if (status != 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        client_close(c);
}

/*
 * The answer is out: send FIN, then read until the client closes (or the timer fires) before
 * closing. Closing at once with unread input (a head too large, a body) would make the kernel
 * send RST, and an RST can destroy the answer before the client has read it.
 */
static void on_written(uv_write_t *req, int status)
{
    struct client *c = req->data;
    if (c->closing)
        return;
    c->sd.data = c;
    if (status != 0 || uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        client_close(c);
}

/* Sends status and body (body_len octets, may be 0), then closes. */
static void respond(struct client *c, const char *status, const char *extra, const char *type,
                    const char *body, size_t body_len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     status, type, body_len, extra);
    if (n < 0 || (size_t)n >= sizeof(head) || (c->resp = malloc((size_t)n + body_len)) == NULL) {
        client_close(c);
        return;
    }
    memcpy(c->resp, head, (size_t)n);
    if (body_len > 0)
        memcpy(c->resp + n, body, body_len);
    uv_buf_t b = uv_buf_init(c->resp, (unsigned)((size_t)n + body_len));
    c->wr.data = c;
    int rc = uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc != 0)
        client_close(c); /* a failed uv_write never calls on_written */
}

static void respond_error(struct client *c, const char *status, const char *extra)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%s\n", status);
    respond(c, status, extra, "text/plain; charset=utf-8", body, (size_t)n);
}

/* On a reader thread, or inline on the loop: c->g only. */
static int gauges_run(struct store *st, struct reader_job *job)
{
    struct client *c = container_of(job, struct client, gauges);
    int rc = store_window_count_open(st, store_now_ms(), &c->g.windows_open);
    if (rc == STORE_OK)
        rc = store_queue_count(st, &c->g.queue_depth);
    if (rc != STORE_OK)
        log_warn("metrics", 0, "event=store-error error=\"%s\"", store_errmsg(st));
    return rc;
}

static void answer(struct client *c, int status)
{
    c->g.have_store = status == STORE_OK; /* without, the counters are still worth having */
    struct metrics_text t;
    metrics_text_init(&t);
    if (metrics_format(&c->g, &t) != 0)
        respond_error(c, "500 Internal Server Error", "");
    else
        respond(c, "200 OK", "", "text/plain; version=0.0.4; charset=utf-8", t.data, t.len);
    metrics_text_free(&t);
}

static void gauges_done(struct reader_job *job, int status)
{
    struct client *c = container_of(job, struct client, gauges);
    if (!c->closing)
        answer(c, status);
    client_unref(c); /* the read's reference */
}

static void scrape(struct client *c)
{
    c->g = (struct metrics_gauges){0};
    c->gauges.run = gauges_run;
    c->gauges.done = gauges_done;
    int st;
    if (reader_submit(c->h->reads, &c->gauges, &st) == READER_PENDING)
        c->handles_open++; /* held until gauges_done, whatever closes meanwhile */
    else
        answer(c, st);
}

/* The head is complete (NUL-terminated in c->req): only the request line matters. */
static void handle(struct client *c)
{
    char *line_end = strpbrk(c->req, "\r\n");
    *line_end = '\0';
    char *sp1 = strchr(c->req, ' ');
    char *sp2 = sp1 != NULL ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
        strchr(sp2 + 1, ' ') != NULL) {
        respond_error(c, "400 Bad Request", "");
        return;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    const char *target = sp1 + 1;
    size_t path_len = strcspn(target, "?");
    bool is_metrics = path_len == 8 && strncmp(target, "/metrics", 8) == 0;
    if (strcmp(c->req, "GET") != 0)
        respond_error(c, "405 Method Not Allowed", "Allow: GET\r\n");
    else if (!is_metrics)
        respond_error(c, "404 Not Found", "");
    else
        scrape(c);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct client *c = handle->data;
    /* One octet kept for the NUL that handle() relies on. */
    *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - 1 - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        client_close(c); /* EOF or error (before the head was complete, or while draining) */
        return;
    }
    if (c->draining) {
        c->len = 0;
        return;
    }
    c->len += (size_t)nread;
    c->req[c->len] = '\0';
    bool done = strstr(c->req, "\r\n\r\n") != NULL || strstr(c->req, "\n\n") != NULL;
    /* A NUL in the head cannot be part of a request; strstr would also stop at it. */
    if (memchr(c->req, '\0', c->len) != NULL) {
        uv_read_stop(s);
        respond_error(c, "400 Bad Request", "");
        return;
    }
    if (!done && c->len < sizeof(c->req) - 1)
        return;
    uv_read_stop(s);
    if (!done)
        respond_error(c, "431 Request Header Fields Too Large", "");
    else
        handle(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct metrics_http *h = server->data;
    if (status < 0 || h->stopping)
        return;
    struct client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return; /* the client waits in the backlog; the next accept may find memory */
    c->h = h;
    int rc = uv_tcp_init(h->loop, &c->tcp);
    if (rc != 0) {
        free(c);
        return;
    }
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 1;
    c->next = h->clients;
    if (h->clients != NULL)
        h->clients->prev = c;
    h->clients = c;
    h->nclients++;
    if ((rc = uv_timer_init(h->loop, &c->timer)) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
        return;
    }
    c->handles_open = 2;
    if ((rc = uv_accept(server, (uv_stream_t *)&c->tcp)) != 0 ||
        h->nclients > METRICS_HTTP_MAX_CLIENTS ||
        (rc = uv_timer_start(&c->timer, on_timeout, METRICS_HTTP_TIMEOUT_MS, 0)) != 0 ||
        (rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) != 0)
        client_close(c);
}

static void on_server_closed(uv_handle_t *handle)
{
    struct metrics_http *h = handle->data;
    h->servers_open--;
    maybe_free(h);
}

/* The socket address of one listen entry; "*" is every address, IPv6 and IPv4 if it can. */
static int listen_one(struct metrics_http *h, const struct cfg_listen *a, char *err, size_t errlen)
{
    char name[96];
    cfg_listen_format(a, name, sizeof(name));
    struct sockaddr_storage ss;
    bool any = strcmp(a->host, "*") == 0;
    const char *host = any ? "::" : a->host;
    int rc = uv_ip4_addr(host, a->port, (struct sockaddr_in *)&ss);
    if (rc != 0)
        rc = uv_ip6_addr(host, a->port, (struct sockaddr_in6 *)&ss);
    uv_tcp_t *t = &h->servers[h->nservers];
    if (rc == 0 && (rc = uv_tcp_init(h->loop, t)) == 0) {
        t->data = h;
        h->nservers++;
        h->servers_open++;
        rc = uv_tcp_bind(t, (const struct sockaddr *)&ss, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)t, METRICS_HTTP_MAX_CLIENTS, on_connection);
        if (rc != 0 && any &&
            (rc = uv_ip4_addr("0.0.0.0", a->port, (struct sockaddr_in *)&ss)) == 0) {
            /* No IPv6 here: reopen as IPv4 only. */
            uv_close((uv_handle_t *)t, on_server_closed);
            t = &h->servers[h->nservers];
            if ((rc = uv_tcp_init(h->loop, t)) == 0) {
                t->data = h;
                h->nservers++;
                h->servers_open++;
                if ((rc = uv_tcp_bind(t, (const struct sockaddr *)&ss, 0)) == 0)
                    rc = uv_listen((uv_stream_t *)t, METRICS_HTTP_MAX_CLIENTS, on_connection);
            }
        }
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s (metrics): %s", name, uv_strerror(rc));
        return rc;
    }
    log_info("serve", 0, "event=listening address=%s service=metrics tls=no", name);
    return 0;
}

int metrics_http_start(uv_loop_t *loop, const struct cfg_listen_list *addrs, struct reader *reads,
                       struct metrics_http **out, char *err, size_t errlen)
{
    *out = NULL;
    struct metrics_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, errlen, "cannot listen (metrics): out of memory");
        return UV_ENOMEM;
    }
    h->loop = loop;
    h->reads = reads;
    for (size_t i = 0; i < addrs->count; i++) {
        int rc = listen_one(h, &addrs->addrs[i], err, errlen);
        if (rc != 0) {
            metrics_http_stop(&h);
            return rc;
        }
    }
    *out = h;
    return 0;
}

void metrics_http_stop(struct metrics_http **hp)
{
    struct metrics_http *h = *hp;
    if (h == NULL)
        return;
    *hp = NULL;
    h->stopping = true;
    for (size_t i = 0; i < h->nservers; i++)
        if (!uv_is_closing((uv_handle_t *)&h->servers[i]))
            uv_close((uv_handle_t *)&h->servers[i], on_server_closed);
    for (struct client *c = h->clients; c != NULL; c = c->next)
        client_close(c);
    maybe_free(h);
}
