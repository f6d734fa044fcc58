/*
 * metrics_http.h - the [server] metrics endpoint: a minimal HTTP/1.1 server on the first event
 * loop that answers GET /metrics with the Prometheus text format (metrics.h).
 *
 * Why its own small uv_tcp server and not a service of the listeners: a scrape is not a mail
 * session. It needs none of what the listeners and struct conn give a session (TLS, the line
 * reader, per-address limits, SO_REUSEPORT across loops, the session logs), and the counters are
 * process-wide, so one loop answering is enough. Being apart, it also cannot take a place in
 * max_connections from a mail client, or be taken down by them.
 *
 * The protocol, kept to what a scraper sends: one request per connection, answered with
 * "Connection: close". GET /metrics (a query string is ignored) gets 200 with
 * "Content-Type: text/plain; version=0.0.4; charset=utf-8" and Content-Length; another path 404;
 * another method 405 with "Allow: GET"; a request line that is not HTTP 400; a request head over
 * METRICS_HTTP_REQUEST_MAX_BYTES 431. A request body is never read. A client that has not
 * finished its request head within METRICS_HTTP_TIMEOUT_MS is disconnected, as is the whole
 * exchange past that time; more than METRICS_HTTP_MAX_CLIENTS at once are disconnected at accept.
 *
 * What it does not do: authenticate (bind it to loopback or a monitoring network), TLS, keep-alive.
 *
 * Ownership: the struct owns its listening sockets and its clients; reads (the loop's reader,
 * for the gauges) is borrowed and must outlive metrics_http_stop's completion: a scrape whose
 * read is out keeps its client, and so the struct, until that read's done.
 */
#ifndef POSTERN_METRICS_HTTP_H
#define POSTERN_METRICS_HTTP_H

#include <stddef.h>
#include <uv.h>

struct cfg_listen_list;
struct metrics_http;
struct reader;

/* A scraper's request is a line and a few headers; 8 KiB is what common servers allow a head. */
#define METRICS_HTTP_REQUEST_MAX_BYTES 8192
/* Prometheus' default scrape timeout is 10 s: a client slower than that is not a scraper. */
#define METRICS_HTTP_TIMEOUT_MS 10000
/* Scrapers at once: a handful of Prometheus servers; more is a mistake or an attack. */
#define METRICS_HTTP_MAX_CLIENTS 16

/* Listens on every address of addrs (count > 0). On failure nothing stays open and err holds one
 * line such as "cannot listen on 127.0.0.1:9154 (metrics): address already in use". 0, or a
 * negative libuv code. */
int metrics_http_start(uv_loop_t *loop, const struct cfg_listen_list *addrs, struct reader *reads,
                       struct metrics_http **out, char *err, size_t errlen);
/* Closes the listening sockets and every client; the memory goes once the handles are closed
 * (the loop must run). Sets *hp to NULL; NULL is a no-op. */
void metrics_http_stop(struct metrics_http **hp);

#endif
