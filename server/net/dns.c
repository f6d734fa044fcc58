/*
 * dns.c - c-ares driven by the libuv loop: MX and A/AAAA lookups for outbound delivery.
 *
 * How c-ares and libuv meet: c-ares reports each socket it wants watched through the socket
 * state callback; this file keeps one uv_poll handle per such socket and feeds readiness back
 * with ares_process_fd(). Retransmissions and timeouts are c-ares's own: after every call into
 * c-ares one uv_timer is re-armed from ares_timeout(), and when it fires ares_process_fd() with
 * no socket lets c-ares expire what is due.
 *
 * How results reach the caller: c-ares calls back from inside ares_query() (errors found before
 * sending), from inside ares_process_fd() and from inside ares_destroy(). None of those is a
 * safe place to run the caller's code (the caller may start lookups, cancel them or free the
 * resolver, and c-ares is not reentrant), nor is the lookup call itself (the caller has not seen
 * the query handle yet). So a c-ares callback only records the outcome in the query and puts the
 * query on the ready list; an idle handle hands the ready list out on the next loop turn. Literal
 * addresses and bad names take the same path, so every callback runs on a later loop turn, from one
 * place.
 *
 * Ownership: struct dns owns the channel, the timer, the idle handle, the poll handles and every
 * query until it is delivered or dropped. A query is referenced by c-ares (ares_pending > 0) or
 * by the ready list, never by both; it is freed after its callback, or, when cancelled, as soon
 * as c-ares has let go of it. struct dns itself is freed in the last libuv close callback after
 * dns_free.
 *
 * What it does not do: decide what an answer means (dns_answer.c: MX ordering and shuffling,
 * the implicit and the null MX, which failure wins for an address), parse DNS messages (c-ares
 * does), cache, or talk to anything but the configured or system resolver.
 */
#include "server/net/dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <sodium.h>

#include "common/pure/address.h"
#include "common/log.h"
#include "common/util.h"
#include "server/net/dns_answer.h"

/* RFC 1035 3.2.2 and 3.2.4, RFC 3596 2.1. */
#define DNS_CLASS_IN  1
#define DNS_TYPE_A    1
#define DNS_TYPE_MX   15
#define DNS_TYPE_AAAA 28

#define DNS_TIMEOUT_MS_MAX 60000
#define DNS_TRIES_MAX      10

/* A socket c-ares asked us to watch. Owned by struct dns; freed in its close callback. */
struct dns_poll {
    uv_poll_t poll;
    struct dns *d; /* borrowed */
    ares_socket_t fd;
    struct dns_poll *next;
};

struct dns {
    uv_loop_t *loop;              /* borrowed */
    ares_channel channel;         /* owned; NULL once destroyed */
    uv_timer_t ares_timer;        /* c-ares's next timeout */
    uv_idle_t ready_idle;         /* active while the ready list is not empty: hands it out */
    struct dns_poll *polls;       /* owned: the sockets being watched (not those closing) */
    struct dns_query *ready_head; /* owned: finished, callback not yet run; FIFO */
    struct dns_query *ready_tail;
    size_t ready_count;
    size_t handles_open; /* libuv handles not yet closed; d is freed when it drops to 0 */
    bool closing;        /* dns_free ran */
};

enum dns_kind {
    DNS_KIND_MX,
    DNS_KIND_ADDR,
};

struct dns_query {
    struct dns *d; /* borrowed */
    enum dns_kind kind;
    dns_mx_cb *mx_cb;
    dns_addr_cb *addr_cb;
    void *ctx;                     /* borrowed, the caller's */
    bool cancelled;                /* dns_cancel: free without calling back */
    unsigned ares_pending;         /* c-ares queries for this lookup whose callback has not run */
    struct dns_query *ready_next;  /* on d's ready list */
    char name[HOSTNAME_BUF_BYTES]; /* normalised; "" for a literal or a bad name */
    uint16_t port;

    /* The outcome: set before the query goes on the ready list. */
    enum dns_status status;
    char error[DNS_ERROR_MAX_BYTES];
    /* DNS_KIND_MX */
    struct dns_target *targets; /* owned */
    size_t target_count;
    bool is_implicit;
    /* DNS_KIND_ADDR: each family's c-ares status and addresses, combined by dns_answer_addr() */
    int v4_status;
    int v6_status;
    struct in_addr v4[DNS_ADDRS_PER_FAMILY_MAX];
    struct in6_addr v6[DNS_ADDRS_PER_FAMILY_MAX];
    size_t v4_count;
    size_t v6_count;
};

const char *dns_status_name(enum dns_status status)
{
    switch (status) {
    case DNS_OK:
        return "ok";
    case DNS_NXDOMAIN:
        return "nxdomain";
    case DNS_NODATA:
        return "nodata";
    case DNS_NULL_MX:
        return "null-mx";
    case DNS_TEMPFAIL:
        return "tempfail";
    case DNS_CANCELLED:
        return "cancelled";
    case DNS_BADNAME:
        return "badname";
    }
    return "unknown";
}

/* ---- queries and the ready list ---- */

static void query_set(struct dns_query *q, enum dns_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void query_set(struct dns_query *q, enum dns_status status, const char *fmt, ...)
{
    va_list ap;
    q->status = status;
    va_start(ap, fmt);
    vsnprintf(q->error, sizeof q->error, fmt, ap);
    va_end(ap);
}

static void query_free(struct dns_query *q)
{
    free(q->targets);
    free(q);
}

static void ready_idle_cb(uv_idle_t *h);

/* Queues a finished query for its callback; while closing, dns_free drains the list itself. */
static void ready_push(struct dns_query *q)
{
    struct dns *d = q->d;
    q->ready_next = NULL;
    if (d->ready_tail != NULL)
        d->ready_tail->ready_next = q;
    else
        d->ready_head = q;
    d->ready_tail = q;
    d->ready_count++;
    if (!d->closing && !uv_is_active((uv_handle_t *)&d->ready_idle)) {
        int rc = uv_idle_start(&d->ready_idle, ready_idle_cb);
        if (rc < 0)
            log_error("dns", 0, "event=idle-failed error=\"%s\"", uv_strerror(rc));
    }
}

static struct dns_query *ready_pop(struct dns *d)
{
    struct dns_query *q = d->ready_head;
    if (q == NULL)
        return NULL;
    d->ready_head = q->ready_next;
    if (d->ready_head == NULL)
        d->ready_tail = NULL;
    d->ready_count--;
    q->ready_next = NULL;
    return q;
}

/* The addresses of an ADDR query as sockaddrs: IPv4 first (see dns.h). NULL when out of memory. */
static struct sockaddr_storage *addr_build(const struct dns_query *q, size_t *count_out)
{
    size_t n = q->v4_count + q->v6_count;
    struct sockaddr_storage *addrs = calloc(n, sizeof *addrs);
    *count_out = 0;
    if (addrs == NULL)
        return NULL;
    for (size_t i = 0; i < q->v4_count; i++) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&addrs[i];
        sin->sin_family = AF_INET;
        sin->sin_port = htons(q->port);
        sin->sin_addr = q->v4[i];
    }
    for (size_t i = 0; i < q->v6_count; i++) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addrs[q->v4_count + i];
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(q->port);
        sin6->sin6_addr = q->v6[i];
    }
    *count_out = n;
    return addrs;
}

/* Runs the callback of a finished query (unless cancelled) and frees it. */
static void query_deliver(struct dns_query *q)
{
    if (q->cancelled) {
        query_free(q);
        return;
    }
    if (q->kind == DNS_KIND_MX) {
        struct dns_mx_result r = {.status = q->status};
        if (r.status == DNS_OK) {
            r.targets = q->targets;
            r.count = q->target_count;
            r.is_implicit = q->is_implicit;
        }
        memcpy(r.error, q->error, sizeof r.error);
        log_debug("dns", 0, "event=result type=MX name=%s status=%s count=%zu implicit=%s",
                  q->name[0] != '\0' ? q->name : "-", dns_status_name(r.status), r.count,
                  r.is_implicit ? "yes" : "no");
        q->mx_cb(q->ctx, &r);
    } else {
        struct dns_addr_result r = {.status = q->status};
        if (r.status == DNS_OK) {
            r.addrs = addr_build(q, &r.count);
            if (r.addrs == NULL)
                query_set(q, DNS_TEMPFAIL, "out of memory");
        }
        r.status = q->status;
        memcpy(r.error, q->error, sizeof r.error);
        log_debug("dns", 0, "event=result type=A/AAAA name=%s status=%s count=%zu",
                  q->name[0] != '\0' ? q->name : "-", dns_status_name(r.status), r.count);
        q->addr_cb(q->ctx, &r);
        free(r.addrs);
    }
    query_free(q);
}

static void ready_idle_cb(uv_idle_t *h)
{
    struct dns *d = container_of(h, struct dns, ready_idle);
    /*
     * Only the queries ready when the turn started: one queued by a callback (a literal looked
     * up from a callback) waits for the next loop turn, after I/O was polled, so callbacks that
     * keep starting lookups cannot keep the loop here.
     */
    size_t n = d->ready_count;
    while (n-- > 0 && !d->closing) {
        struct dns_query *q = ready_pop(d);
        if (q == NULL)
            break;
        query_deliver(q);
    }
    if (!d->closing && d->ready_head == NULL)
        uv_idle_stop(&d->ready_idle);
}

/* ---- c-ares <-> libuv ---- */

static void ares_timer_cb(uv_timer_t *t);

/* After every call into c-ares: its next timeout may have changed. */
static void ares_timer_rearm(struct dns *d)
{
    struct timeval tv;
    struct timeval *next;
    uint64_t ms;
    int rc;

    if (d->closing)
        return;
    next = ares_timeout(d->channel, NULL, &tv);
    if (next == NULL) { /* no query in flight */
        uv_timer_stop(&d->ares_timer);
        return;
    }
    /*
     * Rounded up, and counted from now rather than from the loop's cached time (a callback may
     * have run for a while): firing early would only find nothing due and spin.
     */
    uv_update_time(d->loop);
    ms = (uint64_t)next->tv_sec * 1000u + ((uint64_t)next->tv_usec + 999u) / 1000u;
    rc = uv_timer_start(&d->ares_timer, ares_timer_cb, ms, 0);
    if (rc < 0)
        log_error("dns", 0, "event=timer-failed error=\"%s\"", uv_strerror(rc));
}

static void ares_timer_cb(uv_timer_t *t)
{
    struct dns *d = container_of(t, struct dns, ares_timer);
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    ares_timer_rearm(d);
}

static void handle_closed(struct dns *d)
{
    d->handles_open--;
    if (d->closing && d->handles_open == 0)
        free(d);
}

static void handle_closed_cb(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void poll_closed(uv_handle_t *h)
{
    struct dns_poll *p = container_of((uv_poll_t *)h, struct dns_poll, poll);
    struct dns *d = p->d;
    free(p);
    handle_closed(d);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct dns_poll *p = container_of(h, struct dns_poll, poll);
    struct dns *d = p->d;
    ares_socket_t rfd = ARES_SOCKET_BAD;
    ares_socket_t wfd = ARES_SOCKET_BAD;

    if (status < 0) {
        /* An error on the socket: let c-ares read and write it to find out and fail over. */
        rfd = p->fd;
        wfd = p->fd;
    } else {
        if (events & UV_READABLE)
            rfd = p->fd;
        if (events & UV_WRITABLE)
            wfd = p->fd;
    }
    /* May close this very handle (sock_state_cb): p is not used after this line. */
    ares_process_fd(d->channel, rfd, wfd);
    ares_timer_rearm(d);
}

static void poll_close(struct dns_poll *p)
{
    uv_close((uv_handle_t *)&p->poll, poll_closed);
}

/*
 * c-ares: start, change or stop watching fd. The poll handle is stopped and leaves the list
 * before c-ares closes the descriptor (c-ares closes it right after this returns), so a new
 * socket that reuses the number gets a handle of its own.
 */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct dns_poll **pp = &d->polls;
    struct dns_poll *p;
    int rc;

    while (*pp != NULL && (*pp)->fd != fd)
        pp = &(*pp)->next;
    p = *pp;

    if (!readable && !writable) {
        if (p != NULL) {
            *pp = p->next;
            poll_close(p);
        }
        return;
    }
    if (p == NULL) {
        p = calloc(1, sizeof *p);
        if (p == NULL) {
            /* The query times out through ares_timer: slow, but it ends. */
            log_error("dns", 0, "event=poll-failed error=\"out of memory\"");
            return;
        }
        rc = uv_poll_init_socket(d->loop, &p->poll, fd);
        if (rc < 0) {
            log_error("dns", 0, "event=poll-failed error=\"%s\"", uv_strerror(rc));
            free(p);
            return;
        }
        p->d = d;
        p->fd = fd;
        p->next = d->polls;
        d->polls = p;
        d->handles_open++;
    }
    rc = uv_poll_start(&p->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                       poll_cb);
    if (rc < 0)
        log_error("dns", 0, "event=poll-failed error=\"%s\"", uv_strerror(rc));
}

/* ---- c-ares callbacks: the answer's meaning is dns_answer.c's ---- */

static void mx_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    struct dns_mx_result r;

    q->ares_pending--;
    if (q->cancelled) {
        query_free(q);
        return;
    }
    dns_answer_mx(q->name, status, abuf, alen, &r);
    q->status = r.status;
    memcpy(q->error, r.error, sizeof q->error);
    q->targets = r.targets;
    q->target_count = r.count;
    q->is_implicit = r.is_implicit;
    ready_push(q);
}

/* Once both families have answered, the combined outcome goes to the ready list. */
static void addr_part_done(struct dns_query *q)
{
    if (q->ares_pending > 0)
        return;
    if (q->cancelled) {
        query_free(q);
        return;
    }
    q->status = dns_answer_addr(q->v4_status, q->v6_status, q->v4_count + q->v6_count, q->error);
    ready_push(q);
}

static void a_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;

    q->ares_pending--;
    if (!q->cancelled)
        q->v4_status = dns_answer_a(status, abuf, alen, q->v4, &q->v4_count);
    addr_part_done(q);
}

static void aaaa_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;

    q->ares_pending--;
    if (!q->cancelled)
        q->v6_status = dns_answer_aaaa(status, abuf, alen, q->v6, &q->v6_count);
    addr_part_done(q);
}

/* ---- the public functions ---- */

static struct dns_query *query_new(struct dns *d, enum dns_kind kind, void *ctx)
{
    struct dns_query *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->d = d;
    q->kind = kind;
    q->ctx = ctx;
    q->v4_status = ARES_ENODATA;
    q->v6_status = ARES_ENODATA;
    return q;
}

struct dns_query *dns_lookup_mx(struct dns *d, const char *domain, dns_mx_cb *cb, void *ctx)
{
    struct dns_query *q;
    const char *why = "empty";

    if (d == NULL || d->closing || cb == NULL)
        return NULL;
    q = query_new(d, DNS_KIND_MX, ctx);
    if (q == NULL)
        return NULL;
    q->mx_cb = cb;
    if (domain == NULL || domain_normalize(domain, q->name, sizeof q->name, &why) != 0) {
        q->name[0] = '\0';
        query_set(q, DNS_BADNAME, "not a valid domain name: %s", why);
        ready_push(q);
        return q;
    }
    q->ares_pending = 1;
    /* ares_query, not ares_search: the name is asked as it is, with no search domain. */
    ares_query(d->channel, q->name, DNS_CLASS_IN, DNS_TYPE_MX, mx_answer, q);
    ares_timer_rearm(d);
    return q;
}

/* RFC 6761 6.3: "localhost." and names under it are the loopback addresses. */
static bool is_localhost(const char *name)
{
    static const char suffix[] = ".localhost";
    size_t len = strlen(name);
    return strcmp(name, "localhost") == 0 ||
           (len > sizeof suffix - 1 && strcmp(name + len - (sizeof suffix - 1), suffix) == 0);
}

/* A literal address or localhost: the answer without a query. false when host is neither. */
static bool addr_fill_local(struct dns_query *q, const char *host)
{
    struct ip_addr ip;

    /* ip_parse makes ::ffff:192.0.2.1 the IPv4 address it stands for (common/pure/cidr.h). */
    if (ip_parse(host, &ip) == 0 && ip.family == AF_INET) {
        memcpy(&q->v4[0], ip.bytes, sizeof(q->v4[0]));
        q->v4_count = 1;
    } else if (ip.family == AF_INET6) {
        memcpy(&q->v6[0], ip.bytes, sizeof(q->v6[0]));
        q->v6_count = 1;
    } else if (is_localhost(q->name)) {
        q->v4[0].s_addr = htonl(INADDR_LOOPBACK);
        q->v4_count = 1;
        q->v6[0] = in6addr_loopback;
        q->v6_count = 1;
    } else {
        return false;
    }
    query_set(q, DNS_OK, "literal");
    return true;
}

struct dns_query *dns_lookup_addr(struct dns *d, const char *host, uint16_t port, dns_addr_cb *cb,
                                  void *ctx)
{
    struct dns_query *q;
    const char *why = "empty";

    if (d == NULL || d->closing || cb == NULL)
        return NULL;
    q = query_new(d, DNS_KIND_ADDR, ctx);
    if (q == NULL)
        return NULL;
    q->addr_cb = cb;
    q->port = port;
    if (host != NULL && addr_fill_local(q, host)) {
        ready_push(q);
        return q;
    }
    if (host == NULL || domain_normalize(host, q->name, sizeof q->name, &why) != 0) {
        q->name[0] = '\0';
        query_set(q, DNS_BADNAME, "not a valid host name: %s", why);
        ready_push(q);
        return q;
    }
    if (addr_fill_local(q, q->name)) { /* "LocalHost." normalised */
        ready_push(q);
        return q;
    }
    /* Both counted first: either call may complete at once (c-ares fails some synchronously). */
    q->ares_pending = 2;
    ares_query(d->channel, q->name, DNS_CLASS_IN, DNS_TYPE_A, a_answer, q);
    ares_query(d->channel, q->name, DNS_CLASS_IN, DNS_TYPE_AAAA, aaaa_answer, q);
    ares_timer_rearm(d);
    return q;
}

void dns_cancel(struct dns_query *q)
{
    if (q == NULL)
        return;
    /*
     * c-ares 1.18 cannot cancel one query: the query stays in flight and is freed, without a
     * callback, when c-ares lets go of it (answer, timeout or ares_destroy), or when the ready
     * list reaches it.
     */
    q->cancelled = true;
    q->mx_cb = NULL;
    q->addr_cb = NULL;
    q->ctx = NULL;
}

static int server_node(const struct cfg_hostport *server, struct ares_addr_port_node *node)
{
    memset(node, 0, sizeof *node);
    if (inet_pton(AF_INET, server->host, &node->addr.addr4) == 1) {
        node->family = AF_INET;
    } else {
        struct in6_addr v6;
        if (inet_pton(AF_INET6, server->host, &v6) != 1)
            return -1;
        node->family = AF_INET6;
        memcpy(&node->addr.addr6, &v6, sizeof v6);
    }
    node->udp_port = server->port != 0 ? server->port : 53;
    node->tcp_port = node->udp_port;
    return 0;
}

int dns_new_with_timeout(uv_loop_t *loop, const struct cfg_hostport *server_or_empty,
                         unsigned timeout_ms, unsigned tries, struct dns **out, char *err,
                         size_t errlen)
{
    struct ares_addr_port_node node;
    struct ares_options opts;
    bool have_server = server_or_empty != NULL && server_or_empty->host[0] != '\0';
    struct dns *d;
    int rc;

    *out = NULL;
    if (timeout_ms < 1 || timeout_ms > DNS_TIMEOUT_MS_MAX || tries < 1 || tries > DNS_TRIES_MAX) {
        snprintf(err, errlen, "dns: timeout %u ms or tries %u out of range", timeout_ms, tries);
        return -1;
    }
    if (have_server && server_node(server_or_empty, &node) != 0) {
        snprintf(err, errlen, "dns_server: \"%.64s\" is not a numeric IPv4 or IPv6 address",
                 server_or_empty->host);
        return -1;
    }
    if (sodium_init() < 0) { /* randombytes_random() for the MX shuffle */
        snprintf(err, errlen, "dns: libsodium initialisation failed");
        return -1;
    }
    rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "dns: c-ares initialisation failed: %s", ares_strerror(rc));
        return -1;
    }
    d = calloc(1, sizeof *d);
    if (d == NULL) {
        ares_library_cleanup();
        snprintf(err, errlen, "dns: out of memory");
        return -1;
    }
    d->loop = loop;

    memset(&opts, 0, sizeof opts);
    /* NOSEARCH: names are absolute. NOALIASES: no HOSTALIASES file from the environment. */
    opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    opts.timeout = (int)timeout_ms;
    opts.tries = (int)tries;
    opts.sock_state_cb = sock_state_cb;
    opts.sock_state_cb_data = d;
    rc = ares_init_options(&d->channel, &opts,
                           ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                               ARES_OPT_SOCK_STATE_CB);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "dns: cannot set up the resolver: %s", ares_strerror(rc));
        free(d);
        ares_library_cleanup();
        return -1;
    }
    if (have_server) {
        rc = ares_set_servers_ports(d->channel, &node);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "dns_server: cannot use it: %s", ares_strerror(rc));
            ares_destroy(d->channel);
            free(d);
            ares_library_cleanup();
            return -1;
        }
    }
    /* uv_timer_init and uv_idle_init cannot fail in libuv 1.44, but the contract says int. */
    rc = uv_timer_init(loop, &d->ares_timer);
    if (rc == 0) {
        d->ares_timer.data = d;
        d->handles_open++;
        rc = uv_idle_init(loop, &d->ready_idle);
        if (rc == 0) {
            d->ready_idle.data = d;
            d->handles_open++;
        }
    }
    if (rc < 0) {
        snprintf(err, errlen, "dns: libuv handle: %s", uv_strerror(rc));
        if (d->handles_open == 0) {
            ares_destroy(d->channel);
            free(d);
            ares_library_cleanup();
        } else {
            dns_free(&d); /* frees in the close callback */
        }
        return -1;
    }
    if (have_server)
        log_debug("dns", 0, "event=resolver server=%s port=%u", server_or_empty->host,
                  (unsigned)node.udp_port);
    *out = d;
    return 0;
}

int dns_new(uv_loop_t *loop, const struct cfg_hostport *server_or_empty, struct dns **out,
            char *err, size_t errlen)
{
    return dns_new_with_timeout(loop, server_or_empty, DNS_TIMEOUT_MS, DNS_TRIES, out, err, errlen);
}

void dns_free(struct dns **dp)
{
    struct dns *d;
    struct dns_query *q;

    if (dp == NULL || *dp == NULL)
        return;
    d = *dp;
    *dp = NULL;
    if (d->closing)
        return;
    d->closing = true;

    /*
     * Every query still in c-ares is called back with ARES_EDESTRUCTION and lands on the ready
     * list (or is freed, if cancelled); every socket is reported closed, which closes its poll.
     */
    ares_destroy(d->channel);
    d->channel = NULL;
    ares_library_cleanup();
    while (d->polls != NULL) { /* none expected: c-ares reported every socket closed */
        struct dns_poll *p = d->polls;
        d->polls = p->next;
        poll_close(p);
    }

    /* A callback may cancel another query (it is then dropped here) but start none (closing). */
    while ((q = ready_pop(d)) != NULL) {
        if (!q->cancelled && q->status != DNS_CANCELLED) {
            free(q->targets);
            q->targets = NULL;
            q->target_count = 0;
            q->v4_count = 0;
            q->v6_count = 0;
            query_set(q, DNS_CANCELLED, "cancelled: resolver shut down");
        }
        query_deliver(q);
    }

    /* handles_open counts exactly the initialised timer, idle and polls; d is freed at zero. */
    if (d->handles_open == 0) {
        free(d);
        return;
    }
    if (d->ready_idle.data == d)
        uv_close((uv_handle_t *)&d->ready_idle, handle_closed_cb);
    if (d->ares_timer.data == d)
        uv_close((uv_handle_t *)&d->ares_timer, handle_closed_cb);
}
