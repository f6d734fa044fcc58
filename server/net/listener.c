/*
 * listener.c - listening sockets, accepting, and the connection limits; see listener.h.
 *
 * The sockets are made here with socket/bind/listen and watched with uv_poll, and connections are
 * accepted with accept4, rather than through uv_listen: libuv's accept loop calls back with an
 * error and immediately tries again, so a persistent error would spin, and it offers no way to
 * stop accepting for a while. Here an EMFILE just pauses the watchers. The accepted descriptor
 * goes to conn_accept(), which wraps it in a uv_tcp_t.
 *
 * Per-client counts live in server/net/ip_limit.c, which counts an IPv6 client per /64.
 *
 * Several loops: each loop has its own listener set with its own sockets on the same addresses
 * (SO_REUSEPORT: the kernel spreads new connections over them), but the counts are one struct
 * limits shared by every set made with a peer, under a mutex (ip_limit.c itself is not
 * thread-safe). A connection's place is reserved (checked and counted in one locked step) before
 * conn_accept, so two loops accepting at the same moment cannot both take the last place; a
 * failed conn_accept gives it back.
 */
#define _GNU_SOURCE /* accept4 */
#include "server/net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "common/pure/cidr.h"
#include "common/config.h"
#include "common/log.h"
#include "server/net/ip_limit.h"
#include "server/net/tls.h"

struct listener {
    struct listener_set *ls; /* borrowed: the owner */
    uv_poll_t poll;
    int fd; /* owned; -1 once closed */
    bool poll_open;
    enum conn_service service;
    const struct conn_handler *handler; /* borrowed (static) */
    bool implicit_tls;
    bool proxy;    /* marked proxy: peers from [server] proxy_from only, a PROXY header first */
    char name[80]; /* "127.0.0.1:2525" */
};

/* The connection counts every loop's set shares; total and per_ip are guarded by mu. */
struct limits {
    pthread_mutex_t mu;
    atomic_uint refs;       /* sets using it; the last one frees it */
    size_t total;           /* accepted connections not yet freed, every loop */
    struct ip_limit per_ip; /* connections per client (IPv6: per /64) */
};

struct listener_set {
    uv_loop_t *loop;
    struct conn_set *conns; /* borrowed */
    const struct cfg *cfg;  /* borrowed */
    struct tls_ctx *tls;    /* owned reference, NULL: no TLS */
    struct listener *items; /* owned array */
    size_t count;
    uv_timer_t pause_timer;
    bool timer_open;
    bool paused;
    bool stopped;
    bool free_requested;
    unsigned handles_open;
    size_t inbound;     /* accepted here (this loop) and not yet freed */
    struct limits *lim; /* one reference: the counts shared with the peers */
    /* Refusal log rate limit. */
    uint64_t refusal_window_ms;
    unsigned refusals_logged;
    unsigned refusals_suppressed;
};

/* ---- the shared counts --------------------------------------------------------------------- */

/* A mutex that fails with default attributes means a programming error: nothing sane to do. */
static void limits_lock(struct limits *lim)
{
    int rc = pthread_mutex_lock(&lim->mu);
    if (rc != 0) {
        log_error("serve", 0, "event=pthread-failed call=pthread_mutex_lock errno=%d", rc);
        abort();
    }
}

static void limits_unlock(struct limits *lim)
{
    int rc = pthread_mutex_unlock(&lim->mu);
    if (rc != 0) {
        log_error("serve", 0, "event=pthread-failed call=pthread_mutex_unlock errno=%d", rc);
        abort();
    }
}

static struct limits *limits_new(void)
{
    struct limits *lim = calloc(1, sizeof(*lim));
    if (lim == NULL)
        return NULL;
    if (pthread_mutex_init(&lim->mu, NULL) != 0) {
        free(lim);
        return NULL;
    }
    atomic_store(&lim->refs, 1);
    ip_limit_init(&lim->per_ip);
    return lim;
}

static void limits_unref(struct limits **limp)
{
    struct limits *lim = *limp;
    *limp = NULL;
    if (lim == NULL || atomic_fetch_sub(&lim->refs, 1) != 1)
        return;
    ip_limit_clear(&lim->per_ip);
    (void)pthread_mutex_destroy(&lim->mu); /* the last reference: nobody holds it */
    free(lim);
}

/*
 * Out of memory for the per-client table: this connection counts only globally; ip_limit_dec
 * of a client without an entry is a no-op, so the counts stay consistent.
 */
static void log_table_full(const struct ip_addr *ip)
{
    char text[INET6_ADDRSTRLEN];
    ip_format(ip, text, sizeof(text));
    log_warn("serve", 0, "event=iptable-full ip=%s", text);
}

/*
 * Checks both limits for ip and counts the connection in one locked step. 0 (counted), or 1
 * (over the global limit) or 2 (over the per-client limit), nothing counted. per_ip false: the
 * global limit only (a proxy listener, whose peer is the balancer: the client's place is taken
 * by limits_reserve_client once its PROXY header names it).
 */
static int limits_reserve(struct limits *lim, const struct cfg *cfg, const struct ip_addr *ip,
                          bool per_ip)
{
    int rc = 0;
    bool table_full = false;
    limits_lock(lim);
    if (lim->total >= cfg->server.max_connections) {
        rc = 1;
    } else if (per_ip && ip_limit_count(&lim->per_ip, ip) >= cfg->server.max_connections_per_ip) {
        rc = 2;
    } else {
        lim->total++;
        table_full = per_ip && ip_limit_inc(&lim->per_ip, ip) != 0;
    }
    limits_unlock(lim);
    if (table_full)
        log_table_full(ip);
    return rc;
}

/* The per-client place of a connection already counted globally. 0, or 2 when over. */
static int limits_reserve_client(struct limits *lim, const struct cfg *cfg,
                                 const struct ip_addr *ip)
{
    int rc = 0;
    bool table_full = false;
    limits_lock(lim);
    if (ip_limit_count(&lim->per_ip, ip) >= cfg->server.max_connections_per_ip)
        rc = 2;
    else
        table_full = ip_limit_inc(&lim->per_ip, ip) != 0;
    limits_unlock(lim);
    if (table_full)
        log_table_full(ip);
    return rc;
}

/* counted: the address whose per-client place is given back, NULL when none was taken. */
static void limits_release(struct limits *lim, const struct ip_addr *counted)
{
    limits_lock(lim);
    if (counted != NULL)
        ip_limit_dec(&lim->per_ip, counted);
    lim->total--;
    limits_unlock(lim);
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static void maybe_release(struct listener_set *ls)
{
    if (!ls->free_requested || ls->handles_open > 0 || ls->inbound > 0)
        return;
    limits_unref(&ls->lim);
    tls_ctx_unref(&ls->tls);
    free(ls->items);
    free(ls);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct listener_set *ls = h->data;
    ls->handles_open--;
    maybe_release(ls);
}

static void on_poll_closed(uv_handle_t *h)
{
    struct listener *l = h->data;
    struct listener_set *ls = l->ls;
    ls->handles_open--;
    maybe_release(ls);
}

static void on_conn_free(void *arg, const struct ip_addr *counted)
{
    struct listener_set *ls = arg;
    limits_release(ls->lim, counted);
    ls->inbound--;
    maybe_release(ls);
}

/* A PROXY header named the client (conn_proxy.c): its per-client place, or nonzero when over. */
static int on_conn_client(void *arg, const struct ip_addr *client)
{
    struct listener_set *ls = arg;
    return limits_reserve_client(ls->lim, ls->cfg, client);
}

/* ---- accepting ----------------------------------------------------------------------------- */

static void on_acceptable(uv_poll_t *h, int status, int events);

static void on_pause_over(uv_timer_t *t)
{
    struct listener_set *ls = t->data;
    ls->paused = false;
    if (ls->stopped)
        return;
    for (size_t i = 0; i < ls->count; i++) {
        struct listener *l = &ls->items[i];
        if (l->poll_open && uv_poll_start(&l->poll, UV_READABLE, on_acceptable) != 0)
            log_error("serve", 0, "event=accept-resume-failed listener=%s", l->name);
    }
}

static void start_pause(struct listener_set *ls, int err)
{
    if (ls->paused || ls->stopped)
        return;
    log_warn("serve", 0, "event=accept-paused error=\"%s\" pause_ms=%d connections=%zu",
             strerror(err), LISTENER_PAUSE_MS, ls->inbound);
    for (size_t i = 0; i < ls->count; i++)
        if (ls->items[i].poll_open)
            uv_poll_stop(&ls->items[i].poll);
    ls->paused = true;
    int rc = uv_timer_start(&ls->pause_timer, on_pause_over, LISTENER_PAUSE_MS, 0);
    if (rc != 0) {
        /* Without the timer we would never resume: resume at once and risk a busy loop. */
        log_error("serve", 0, "event=timer-failed error=\"%s\"", uv_strerror(rc));
        on_pause_over(&ls->pause_timer);
    }
}

static void log_refusal(struct listener_set *ls, const struct listener *l, const char *ip,
                        const char *reason)
{
    uint64_t now = uv_now(ls->loop);
    if (now - ls->refusal_window_ms >= 1000) {
        if (ls->refusals_suppressed > 0)
            log_info("serve", 0, "event=refused-suppressed count=%u", ls->refusals_suppressed);
        ls->refusal_window_ms = now;
        ls->refusals_logged = 0;
        ls->refusals_suppressed = 0;
    }
    if (ls->refusals_logged >= LISTENER_REFUSALS_LOGGED_PER_SECOND) {
        ls->refusals_suppressed++;
        return;
    }
    ls->refusals_logged++;
    log_info("serve", 0, "event=refused reason=%s ip=%s listener=%s service=%s connections=%zu",
             reason, ip, l->name, conn_service_name(l->service), ls->inbound);
}

/* Over a limit: the busy reply on a plaintext port, then close; no struct conn is made. */
static void refuse(struct listener *l, int fd, const struct ip_addr *ip, bool per_ip)
{
    struct listener_set *ls = l->ls;
    char text[INET6_ADDRSTRLEN];
    ip_format(ip, text, sizeof(text));
    if (!l->implicit_tls && l->handler->busy_reply != NULL) {
        char reply[256];
        l->handler->busy_reply(ls->cfg, per_ip, reply, sizeof(reply));
        /* A fresh socket's send buffer takes a short reply whole; if not, the client loses it. */
        ssize_t w = send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    close(fd);
    log_refusal(ls, l, text, per_ip ? "too-many-connections-from-ip" : "too-many-connections");
}

/*
 * A peer outside [server] proxy_from on a proxy listener: whatever it would send, a header from
 * it must not be believed, and without one the listener has nothing to offer it. Closed
 * without a word: it may not even speak the protocol of the port.
 */
static void refuse_proxy(struct listener *l, int fd, const struct ip_addr *ip)
{
    char text[INET6_ADDRSTRLEN];
    ip_format(ip, text, sizeof(text));
    close(fd);
    log_refusal(l->ls, l, text, "proxy-not-allowed");
}

static void accepted(struct listener *l, int fd, const struct sockaddr *sa)
{
    struct listener_set *ls = l->ls;
    struct ip_addr ip;
    if (ip_from_sockaddr(sa, &ip) != 0) {
        close(fd);
        return;
    }
    if (l->proxy && !cfg_cidr_list_contains(&ls->cfg->server.proxy_from, &ip)) {
        refuse_proxy(l, fd, &ip);
        return;
    }
    int over = limits_reserve(ls->lim, ls->cfg, &ip, !l->proxy);
    if (over != 0) {
        refuse(l, fd, &ip, over == 2);
        return;
    }
    struct conn_params p = {
        .handler = l->handler,
        .service = l->service,
        .listener_name = l->name,
        .tls_ctx = ls->tls,
        .implicit_tls = l->implicit_tls,
        .proxy_protocol = l->proxy,
        .on_free = on_conn_free,
        .on_client = on_conn_client,
        .on_free_arg = ls,
    };
    struct conn *c;
    int rc = conn_accept(ls->conns, fd, &p, &c);
    if (rc != 0) {
        /* A failed conn_accept never calls on_free: give the reserved place back here. */
        limits_release(ls->lim, l->proxy ? NULL : &ip);
        if (rc == UV_ENOTCONN) {
            /* The peer reset the connection before it was looked at: nothing failed here. A
             * balancer's TCP health check does this at every interval (HAProxy connects, sends
             * its PROXY header with check-send-proxy, and resets at once), so it is no warning. */
            char text[INET6_ADDRSTRLEN];
            ip_format(&ip, text, sizeof(text));
            log_info("serve", 0, "event=accept-gone listener=%s ip=%s", l->name, text);
            return;
        }
        log_warn("serve", 0, "event=accept-failed listener=%s error=\"%s\"", l->name,
                 uv_strerror(rc));
        return;
    }
    /* on_conn_free runs later, from a close callback, never inside conn_accept. */
    ls->inbound++;
}

static void on_acceptable(uv_poll_t *h, int status, int events)
{
    struct listener *l = h->data;
    struct listener_set *ls = l->ls;
    if (status < 0) {
        log_error("serve", 0, "event=accept-error listener=%s error=\"%s\"", l->name,
                  uv_strerror(status));
        start_pause(ls, -status);
        return;
    }
    for (int i = 0; i < LISTENER_ACCEPT_BATCH && !ls->stopped && !ls->paused; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            accepted(l, fd, (struct sockaddr *)&ss);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        /* The connection died in the backlog, or (Linux) a network error was passed on. */
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case EHOSTUNREACH:
        case ENETUNREACH:
        case EOPNOTSUPP:
            continue;
        default:
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM, or something unexpected: do not spin on it. */
            start_pause(ls, errno);
            return;
        }
    }
}

/* ---- binding ------------------------------------------------------------------------------- */

/* A listening socket for addr, or -errno. */
static int open_socket(const struct cfg_listen *addr, bool reuseport)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int family;
    bool any = strcmp(addr->host, "*") == 0;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (any || strchr(addr->host, ':') != NULL) {
        family = AF_INET6;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(addr->port);
        if (!any && inet_pton(AF_INET6, addr->host, &s6->sin6_addr) != 1)
            return -EINVAL;
        if (any)
            s6->sin6_addr = in6addr_any;
        sslen = sizeof(*s6);
    } else {
        family = AF_INET;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(addr->port);
        if (inet_pton(AF_INET, addr->host, &s4->sin_addr) != 1)
            return -EINVAL;
        sslen = sizeof(*s4);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 && any && errno == EAFNOSUPPORT) {
        /* No IPv6 on this host: "*" is then every IPv4 address. */
        memset(&ss, 0, sizeof(ss));
        s4->sin_family = AF_INET;
        s4->sin_port = htons(addr->port);
        s4->sin_addr.s_addr = htonl(INADDR_ANY);
        sslen = sizeof(*s4);
        family = AF_INET;
        fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    }
    if (fd < 0)
        return -errno;
    int on = 1;
    /* A restarted server binds again while old connections sit in TIME_WAIT. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0)
        goto fail;
    /* Several loops: one socket per loop on the same address, and the kernel spreads new
     * connections over them. Only then: without it a second server on the same port fails to
     * bind, as it should. */
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)
        goto fail;
    if (family == AF_INET6) {
        /* "*": one socket for both families; an explicit IPv6 address: IPv6 only. */
        int v6only = any ? 0 : 1;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) != 0)
            goto fail;
    }
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, LISTENER_BACKLOG) != 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

static void close_listener(struct listener *l)
{
    if (l->poll_open) {
        l->poll_open = false;
        uv_close((uv_handle_t *)&l->poll, on_poll_closed);
    }
    if (l->fd >= 0) {
        close(l->fd); /* uv_close stopped the watcher already, so this is safe now */
        l->fd = -1;
    }
}

struct service_spec {
    const char *key; /* config key, for messages */
    enum conn_service service;
    bool is_pop3;
    bool implicit_tls;
};

static const struct service_spec services[] = {
    {"smtp", CONN_SERVICE_SMTP_MX, false, false},
    {"submission", CONN_SERVICE_SMTP_SUBMISSION, false, false},
    {"submissions", CONN_SERVICE_SMTP_SUBMISSIONS, false, true},
    {"pop3", CONN_SERVICE_POP3, true, false},
    {"pop3s", CONN_SERVICE_POP3S, true, true},
};

static const struct cfg_listen_list *service_addrs(const struct cfg *cfg, enum conn_service s)
{
    switch (s) {
    case CONN_SERVICE_SMTP_MX:
        return &cfg->smtp.listen;
    case CONN_SERVICE_SMTP_SUBMISSION:
        return &cfg->smtp.submission;
    case CONN_SERVICE_SMTP_SUBMISSIONS:
        return &cfg->smtp.submissions;
    case CONN_SERVICE_POP3:
        return &cfg->pop3.listen;
    case CONN_SERVICE_POP3S:
        return &cfg->pop3.pop3s;
    case CONN_SERVICE_OUTBOUND:
        break;
    }
    return NULL;
}

int listener_set_new(struct conn_set *conns, const struct cfg *cfg, const struct conn_handler *smtp,
                     const struct conn_handler *pop3, struct tls_ctx *tls,
                     struct listener_set *peer, bool reuseport, struct listener_set **out,
                     char *err, size_t errlen)
{
    *out = NULL;
    if (sodium_init() < 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return -EIO;
    }
    size_t total = 0;
    for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
        total += service_addrs(cfg, services[i].service)->count;
    struct listener_set *ls = calloc(1, sizeof(*ls));
    struct listener *items = calloc(total > 0 ? total : 1, sizeof(*items));
    if (ls == NULL || items == NULL) {
        free(ls);
        free(items);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ls->loop = conn_set_loop(conns);
    ls->conns = conns;
    ls->cfg = cfg;
    ls->items = items;
    if (peer != NULL) {
        ls->lim = peer->lim;
        atomic_fetch_add(&ls->lim->refs, 1);
    } else if ((ls->lim = limits_new()) == NULL) {
        free(items);
        free(ls);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = uv_timer_init(ls->loop, &ls->pause_timer);
    if (rc != 0) {
        limits_unref(&ls->lim);
        free(items);
        free(ls);
        snprintf(err, errlen, "cannot create a timer: %s", uv_strerror(rc));
        return rc;
    }
    ls->pause_timer.data = ls;
    ls->timer_open = true;
    ls->handles_open = 1;
    if (tls != NULL)
        ls->tls = tls_ctx_ref(tls);

    bool skipped_tls = false;
    for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
        const struct service_spec *sp = &services[i];
        const struct cfg_listen_list *list = service_addrs(cfg, sp->service);
        if (sp->implicit_tls && tls == NULL) {
            skipped_tls = skipped_tls || list->count > 0;
            continue;
        }
        for (size_t j = 0; j < list->count; j++) {
            struct listener *l = &ls->items[ls->count];
            l->ls = ls;
            l->fd = -1;
            l->service = sp->service;
            l->handler = sp->is_pop3 ? pop3 : smtp;
            l->implicit_tls = sp->implicit_tls;
            l->proxy = list->addrs[j].proxy;
            cfg_listen_format(&list->addrs[j], l->name, sizeof(l->name));
            int fd = open_socket(&list->addrs[j], reuseport);
            if (fd < 0) {
                snprintf(err, errlen, "cannot listen on %s (%s): %s", l->name, sp->key,
                         uv_strerror(fd)); /* libuv codes are negated errno values on Unix */
                rc = fd;
                goto fail;
            }
            l->fd = fd;
            ls->count++;
            rc = uv_poll_init_socket(ls->loop, &l->poll, fd);
            if (rc != 0) {
                snprintf(err, errlen, "cannot listen on %s (%s): %s", l->name, sp->key,
                         uv_strerror(rc));
                goto fail;
            }
            l->poll.data = l;
            l->poll_open = true;
            ls->handles_open++;
            rc = uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
            if (rc != 0) {
                snprintf(err, errlen, "cannot listen on %s (%s): %s", l->name, sp->key,
                         uv_strerror(rc));
                goto fail;
            }
            log_info("serve", 0, "event=listening address=%s service=%s tls=%s proxy=%s", l->name,
                     sp->key, sp->implicit_tls ? "implicit" : (tls != NULL ? "starttls" : "no"),
                     l->proxy ? "yes" : "no");
        }
    }
    if (skipped_tls && peer == NULL) /* said once, by the first loop's set */
        log_warn("serve", 0,
                 "event=warning text=\"no [tls] certificate and key: STARTTLS and STLS are off, "
                 "and the submissions and pop3s listeners are not started\"");
    *out = ls;
    return 0;

fail:
    listener_set_free(&ls);
    return rc;
}

void listener_set_tls(struct listener_set *ls, struct tls_ctx *tls)
{
    if (tls == NULL)
        return;
    tls_ctx_unref(&ls->tls);
    ls->tls = tls_ctx_ref(tls);
}

void listener_set_stop(struct listener_set *ls)
{
    if (ls->stopped)
        return;
    ls->stopped = true;
    for (size_t i = 0; i < ls->count; i++)
        close_listener(&ls->items[i]);
    if (ls->timer_open) {
        ls->timer_open = false;
        uv_close((uv_handle_t *)&ls->pause_timer, on_timer_closed);
    }
}

void listener_set_free(struct listener_set **lsp)
{
    struct listener_set *ls = *lsp;
    if (ls == NULL)
        return;
    *lsp = NULL;
    listener_set_stop(ls);
    ls->free_requested = true;
    maybe_release(ls);
}

size_t listener_set_sockets(const struct listener_set *ls)
{
    size_t n = 0;
    for (size_t i = 0; i < ls->count; i++)
        n += ls->items[i].fd >= 0;
    return n;
}

size_t listener_set_connections(const struct listener_set *ls)
{
    return ls->inbound;
}

size_t listener_set_connections_all(const struct listener_set *ls)
{
    limits_lock(ls->lim);
    size_t n = ls->lim->total;
    limits_unlock(ls->lim);
    return n;
}

unsigned listener_set_connections_from(const struct listener_set *ls, const struct ip_addr *ip)
{
    limits_lock(ls->lim);
    unsigned n = ip_limit_count(&ls->lim->per_ip, ip);
    limits_unlock(ls->lim);
    return n;
}
