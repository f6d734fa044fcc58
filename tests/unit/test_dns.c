/*
 * test_dns.c - server/net/dns.c against a fake DNS server on 127.0.0.1, on the same libuv loop.
 *
 * The fake server answers UDP (and TCP, for the truncation fallback) on one free port from a
 * table keyed by (name, type): records built by hand in RFC 1035 4.1 wire format, or an rcode
 * (NXDOMAIN, SERVFAIL, REFUSED), or silence (timeouts), or a broken answer. Names not in the
 * table are NXDOMAIN, except h<N>.many.test, which has the A record 127.1.N/256.N%256 (100
 * concurrent lookups, each checked against its own answer). The tests cover MX ordering and
 * shuffling, the implicit MX, null MX, every failure status, A+AAAA combination, literals,
 * localhost, bad names, cancellation, dns_free with lookups in flight, and that no callback ever
 * runs inside a dns_lookup_* call. Nothing talks to anything but 127.0.0.1.
 *
 * Every loop run is bounded by a watchdog timer; teardown proves that no libuv handle is left
 * (uv_loop_close returns 0) and ASan proves that nothing leaked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "common/log.h"
#include "common/util.h"
#include "server/net/dns.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define WATCHDOG_MS  20000
/* The resolver of most tests: quick enough when something is dropped by mistake. */
#define TEST_TIMEOUT_MS 500
#define TEST_TRIES      2

/* ---- the fake DNS server ---- */

#define T_A     1
#define T_CNAME 5
#define T_MX    15
#define T_AAAA  28

enum fake_action {
    FAKE_ANSWER,   /* the records below (none: NOERROR with an empty answer, NODATA) */
    FAKE_NXDOMAIN, /* rcode 3 */
    FAKE_SERVFAIL, /* rcode 2 */
    FAKE_REFUSED,  /* rcode 5 */
    FAKE_DROP,     /* no answer at all */
    FAKE_GARBAGE,  /* one answer record whose RDLENGTH runs past the end of the message */
    FAKE_SHORT,    /* ANCOUNT 1 and nothing after the question */
    FAKE_TRUNCATE, /* over UDP: TC bit and no records; over TCP: the records */
};

struct fake_rr {
    uint16_t type;       /* 0 ends the list */
    const char *owner;   /* NULL: the name asked (written as a pointer to the question) */
    uint16_t preference; /* MX */
    const char *data;    /* MX/CNAME: a host ("." is the root); A/AAAA: the address as text */
};

struct fake_entry {
    const char *qname;
    uint16_t qtype;
    enum fake_action action;
    struct fake_rr rrs[5];
};

static const struct fake_entry fake_zone[] = {
    {"order.test",
     T_MX,
     FAKE_ANSWER,
     {{T_MX, NULL, 20, "b.order.test"},
      {T_MX, NULL, 10, "A.Order.Test"},
      {T_MX, NULL, 30, "c.order.test"}}},
    {"equal.test",
     T_MX,
     FAKE_ANSWER,
     {{T_MX, NULL, 10, "x.equal.test"},
      {T_MX, NULL, 5, "first.equal.test"},
      {T_MX, NULL, 10, "y.equal.test"}}},
    {"nomx.test", T_MX, FAKE_ANSWER, {{0}}},
    {"cname.test", T_MX, FAKE_ANSWER, {{T_CNAME, NULL, 0, "elsewhere.test"}}},
    {"nullmx.test", T_MX, FAKE_ANSWER, {{T_MX, NULL, 0, "."}}},
    {"mixednull.test",
     T_MX,
     FAKE_ANSWER,
     {{T_MX, NULL, 0, "."}, {T_MX, NULL, 10, "real.mixednull.test"}}},
    {"badtargets.test",
     T_MX,
     FAKE_ANSWER,
     {{T_MX, NULL, 5, "192.0.2.1"},
      {T_MX, NULL, 6, "bad_name.test"},
      {T_MX, NULL, 20, "good.badtargets.test"},
      {T_MX, NULL, 10, "GOOD.badtargets.test"}}},
    {"allbad.test", T_MX, FAKE_ANSWER, {{T_MX, NULL, 5, "192.0.2.1"}}},
    {"servfail.test", T_MX, FAKE_SERVFAIL, {{0}}},
    {"refused.test", T_MX, FAKE_REFUSED, {{0}}},
    {"drop.test", T_MX, FAKE_DROP, {{0}}},
    {"garbage.test", T_MX, FAKE_GARBAGE, {{0}}},
    {"short.test", T_MX, FAKE_SHORT, {{0}}},
    {"big.test",
     T_MX,
     FAKE_TRUNCATE,
     {{T_MX, NULL, 20, "mx2.big.test"}, {T_MX, NULL, 10, "mx1.big.test"}}},

    {"host.test", T_A, FAKE_ANSWER, {{T_A, NULL, 0, "127.0.0.2"}, {T_A, NULL, 0, "127.0.0.3"}}},
    {"host.test", T_AAAA, FAKE_ANSWER, {{T_AAAA, NULL, 0, "::2"}}},
    {"v4only.test", T_A, FAKE_ANSWER, {{T_A, NULL, 0, "127.0.0.4"}}},
    {"v4only.test", T_AAAA, FAKE_ANSWER, {{0}}},
    {"v6only.test", T_A, FAKE_ANSWER, {{0}}},
    {"v6only.test", T_AAAA, FAKE_ANSWER, {{T_AAAA, NULL, 0, "2001:db8::6"}}},
    {"noaddr.test", T_A, FAKE_ANSWER, {{0}}},
    {"noaddr.test", T_AAAA, FAKE_ANSWER, {{0}}},
    {"halfbroken.test", T_A, FAKE_ANSWER, {{T_A, NULL, 0, "127.0.0.5"}}},
    {"halfbroken.test", T_AAAA, FAKE_SERVFAIL, {{0}}},
    {"v6broken.test", T_A, FAKE_ANSWER, {{0}}},
    {"v6broken.test", T_AAAA, FAKE_SERVFAIL, {{0}}},
    {"alias.test",
     T_A,
     FAKE_ANSWER,
     {{T_CNAME, NULL, 0, "host.test"}, {T_A, "host.test", 0, "127.0.0.2"}}},
    {"alias.test", T_AAAA, FAKE_ANSWER, {{T_CNAME, NULL, 0, "host.test"}}},
    {"drop.test", T_A, FAKE_DROP, {{0}}},
    {"drop.test", T_AAAA, FAKE_DROP, {{0}}},
};

#define FAKE_MSG_MAX 4096

struct fake_conn {
    uv_tcp_t tcp;
    struct fake_dns *f;
    struct fake_conn *next;
    uint8_t buf[FAKE_MSG_MAX + 2];
    size_t len;
};

struct fake_dns {
    uv_loop_t *loop;
    uv_udp_t udp;
    uv_tcp_t tcp;
    uint16_t port;
    uint8_t rbuf[FAKE_MSG_MAX];
    unsigned queries_udp;
    unsigned queries_tcp;
    unsigned hits[ARRAY_LEN(fake_zone)]; /* queries per table entry, UDP and TCP */
    unsigned unknown;                    /* names not in the table (answered NXDOMAIN) */
    char last_qname[256];
    struct fake_conn *conns;
    int handles_open;
};

struct fake_send {
    uv_udp_send_t req;
    uv_write_t wreq;
    size_t len;
    uint8_t data[FAKE_MSG_MAX + 2];
};

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Writes name as labels ("." or "" is the root). false when it does not fit. */
static bool put_name(uint8_t *out, size_t cap, size_t *off, const char *name)
{
    const char *p = name;
    while (*p != '\0' && strcmp(p, ".") != 0) {
        const char *dot = strchr(p, '.');
        size_t l = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (l == 0 || l > 63 || *off + 1 + l > cap)
            return false;
        out[(*off)++] = (uint8_t)l;
        memcpy(out + *off, p, l);
        *off += l;
        p += l;
        if (*p == '.')
            p++;
    }
    if (*off + 1 > cap)
        return false;
    out[(*off)++] = 0;
    return true;
}

static bool put_rr(uint8_t *out, size_t cap, size_t *off, const struct fake_rr *rr)
{
    size_t rdlen_at;
    if (rr->owner == NULL) {
        if (*off + 2 > cap)
            return false;
        put16(out + *off, 0xC00C); /* pointer to the question's name, RFC 1035 4.1.4 */
        *off += 2;
    } else if (!put_name(out, cap, off, rr->owner)) {
        return false;
    }
    if (*off + 10 > cap)
        return false;
    put16(out + *off, rr->type);
    put16(out + *off + 2, 1);   /* IN */
    put16(out + *off + 4, 0);   /* TTL, high half */
    put16(out + *off + 6, 300); /* TTL, low half */
    rdlen_at = *off + 8;
    *off += 10;
    switch (rr->type) {
    case T_A:
        if (*off + 4 > cap || inet_pton(AF_INET, rr->data, out + *off) != 1)
            return false;
        *off += 4;
        break;
    case T_AAAA:
        if (*off + 16 > cap || inet_pton(AF_INET6, rr->data, out + *off) != 1)
            return false;
        *off += 16;
        break;
    case T_MX:
        if (*off + 2 > cap)
            return false;
        put16(out + *off, rr->preference);
        *off += 2;
        if (!put_name(out, cap, off, rr->data))
            return false;
        break;
    case T_CNAME:
        if (!put_name(out, cap, off, rr->data))
            return false;
        break;
    default:
        return false;
    }
    put16(out + rdlen_at, (uint16_t)(*off - rdlen_at - 2));
    return true;
}

/* The answer to one query message, or 0 for no answer. */
static size_t fake_answer(struct fake_dns *f, const uint8_t *q, size_t qlen, uint8_t *out,
                          size_t cap, bool tcp)
{
    char name[256];
    size_t nlen = 0, off = 12, qend;
    uint16_t qtype;
    const struct fake_entry *e = NULL;
    struct fake_rr dynamic[2] = {{0}};
    const struct fake_rr *rrs = NULL;
    enum fake_action action = FAKE_NXDOMAIN;
    unsigned rcode = 0, ancount = 0, n;
    bool tc = false;
    char addr[32];

    if (qlen < 12 || q[4] != 0 || q[5] != 1 || (q[2] & 0x80) != 0)
        return 0;
    while (off < qlen && q[off] != 0) {
        size_t l = q[off];
        if (l > 63 || off + 1 + l > qlen || nlen + l + 2 > sizeof name)
            return 0;
        if (nlen > 0)
            name[nlen++] = '.';
        memcpy(name + nlen, q + off + 1, l);
        nlen += l;
        off += 1 + l;
    }
    name[nlen] = '\0';
    if (off + 5 > qlen)
        return 0;
    off++;
    qtype = (uint16_t)(q[off] << 8 | q[off + 1]);
    qend = off + 4;
    snprintf(f->last_qname, sizeof f->last_qname, "%s", name);

    for (size_t i = 0; i < ARRAY_LEN(fake_zone); i++) {
        if (strcasecmp(fake_zone[i].qname, name) == 0 && fake_zone[i].qtype == qtype) {
            e = &fake_zone[i];
            f->hits[i]++;
            break;
        }
    }
    if (e != NULL) {
        action = e->action;
        rrs = e->rrs;
    } else if (sscanf(name, "h%u.many.test", &n) == 1 && n < 65536) {
        action = FAKE_ANSWER;
        if (qtype == T_A) {
            snprintf(addr, sizeof addr, "127.1.%u.%u", n / 256, n % 256);
            dynamic[0] = (struct fake_rr){T_A, NULL, 0, addr};
        }
        rrs = dynamic;
    } else {
        f->unknown++;
    }

    switch (action) {
    case FAKE_DROP:
        return 0;
    case FAKE_NXDOMAIN:
        rcode = 3;
        break;
    case FAKE_SERVFAIL:
        rcode = 2;
        break;
    case FAKE_REFUSED:
        rcode = 5;
        break;
    case FAKE_TRUNCATE:
        tc = !tcp;
        break;
    default:
        break;
    }
    if (qend > cap)
        return 0;
    memset(out, 0, 12);
    out[0] = q[0];
    out[1] = q[1];
    out[2] = (uint8_t)(0x80 | 0x04 | (q[2] & 0x01) | (tc ? 0x02 : 0)); /* QR AA RD TC */
    out[3] = (uint8_t)(0x80 | rcode);                                  /* RA, RCODE */
    put16(out + 4, 1);
    memcpy(out + 12, q + 12, qend - 12);
    off = qend;

    if (action == FAKE_GARBAGE) {
        const uint8_t rr[] = {0xC0, 0x0C, 0, T_MX, 0, 1, 0, 0, 1, 44, 0, 40, 0, 10, 3};
        memcpy(out + off, rr, sizeof rr);
        off += sizeof rr;
        put16(out + 6, 1);
        return off;
    }
    if (action == FAKE_SHORT) {
        put16(out + 6, 1);
        return off;
    }
    if ((action == FAKE_ANSWER || action == FAKE_TRUNCATE) && !tc && rrs != NULL) {
        for (size_t i = 0; i < 5 && rrs[i].type != 0; i++) {
            if (!put_rr(out, cap, &off, &rrs[i]))
                return 0;
            ancount++;
        }
    }
    put16(out + 6, (uint16_t)ancount);
    return off;
}

static void fake_handle_closed(uv_handle_t *h)
{
    struct fake_dns *f = h->data;
    f->handles_open--;
}

static void fake_send_done(uv_udp_send_t *req, int status)
{
    free(container_of(req, struct fake_send, req));
}

static void fake_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fake_dns *f = h->data;
    buf->base = (char *)f->rbuf;
    buf->len = sizeof f->rbuf;
}

static void fake_udp_recv(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf,
                          const struct sockaddr *from, unsigned flags)
{
    struct fake_dns *f = udp->data;
    struct fake_send *s;
    uv_buf_t b;

    if (nread <= 0 || from == NULL)
        return;
    f->queries_udp++;
    s = malloc(sizeof *s);
    assert_non_null(s);
    s->len = fake_answer(f, (const uint8_t *)buf->base, (size_t)nread, s->data, 512, false);
    if (s->len == 0) {
        free(s);
        return;
    }
    b = uv_buf_init((char *)s->data, (unsigned)s->len);
    assert_int_equal(uv_udp_send(&s->req, udp, &b, 1, from, fake_send_done), 0);
}

static void fake_conn_closed(uv_handle_t *h)
{
    struct fake_conn *c = h->data;
    struct fake_dns *f = c->f;
    for (struct fake_conn **pp = &f->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    free(c);
    f->handles_open--;
}

static void fake_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fake_conn *c = h->data;
    buf->base = (char *)c->buf + c->len;
    buf->len = sizeof c->buf - c->len;
}

static void fake_write_done(uv_write_t *req, int status)
{
    free(container_of(req, struct fake_send, wreq));
}

/* RFC 1035 4.2.2: over TCP every message is preceded by its length in two octets. */
static void fake_conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct fake_conn *c = stream->data;
    if (nread < 0 || c->len + (size_t)nread > sizeof c->buf) {
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, fake_conn_closed);
        return;
    }
    c->len += (size_t)nread;
    while (c->len >= 2) {
        size_t mlen = (size_t)c->buf[0] << 8 | c->buf[1];
        struct fake_send *s;
        uv_buf_t b;
        if (c->len < 2 + mlen)
            break;
        c->f->queries_tcp++;
        s = malloc(sizeof *s);
        assert_non_null(s);
        s->len = fake_answer(c->f, c->buf + 2, mlen, s->data + 2, FAKE_MSG_MAX, true);
        memmove(c->buf, c->buf + 2 + mlen, c->len - 2 - mlen);
        c->len -= 2 + mlen;
        if (s->len == 0) {
            free(s);
            continue;
        }
        put16(s->data, (uint16_t)s->len);
        b = uv_buf_init((char *)s->data, (unsigned)s->len + 2);
        assert_int_equal(uv_write(&s->wreq, stream, &b, 1, fake_write_done), 0);
    }
}

static void fake_tcp_accept(uv_stream_t *server, int status)
{
    struct fake_dns *f = server->data;
    struct fake_conn *c;
    if (status < 0)
        return;
    c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->f = f;
    assert_int_equal(uv_tcp_init(f->loop, &c->tcp), 0);
    c->tcp.data = c;
    c->next = f->conns;
    f->conns = c;
    f->handles_open++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, fake_conn_alloc, fake_conn_read) != 0)
        uv_close((uv_handle_t *)&c->tcp, fake_conn_closed);
}

/* Binds UDP to a free port on 127.0.0.1, and TCP to the same port (a few tries if taken). */
static void fake_start(struct fake_dns *f, uv_loop_t *loop)
{
    memset(f, 0, sizeof *f);
    f->loop = loop;
    for (int attempt = 0; attempt < 20 && f->port == 0; attempt++) {
        struct sockaddr_in sin;
        struct sockaddr_storage ss;
        int len = sizeof ss;

        assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sin), 0);
        assert_int_equal(uv_udp_init(loop, &f->udp), 0);
        f->udp.data = f;
        f->handles_open++;
        assert_int_equal(uv_udp_bind(&f->udp, (const struct sockaddr *)&sin, 0), 0);
        assert_int_equal(uv_udp_getsockname(&f->udp, (struct sockaddr *)&ss, &len), 0);
        sin.sin_port = ((struct sockaddr_in *)&ss)->sin_port;

        assert_int_equal(uv_tcp_init(loop, &f->tcp), 0);
        f->tcp.data = f;
        f->handles_open++;
        if (uv_tcp_bind(&f->tcp, (const struct sockaddr *)&sin, 0) == 0 &&
            uv_listen((uv_stream_t *)&f->tcp, 16, fake_tcp_accept) == 0) {
            f->port = ntohs(sin.sin_port);
            break;
        }
        uv_close((uv_handle_t *)&f->udp, fake_handle_closed);
        uv_close((uv_handle_t *)&f->tcp, fake_handle_closed);
        while (f->handles_open > 0)
            uv_run(loop, UV_RUN_NOWAIT);
    }
    assert_int_not_equal(f->port, 0);
    assert_int_equal(uv_udp_recv_start(&f->udp, fake_alloc, fake_udp_recv), 0);
}

static void fake_stop(struct fake_dns *f)
{
    uv_close((uv_handle_t *)&f->udp, fake_handle_closed);
    uv_close((uv_handle_t *)&f->tcp, fake_handle_closed);
    for (struct fake_conn *c = f->conns; c != NULL; c = c->next)
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, fake_conn_closed);
}

static unsigned fake_hits(const struct fake_dns *f, const char *qname, uint16_t qtype)
{
    for (size_t i = 0; i < ARRAY_LEN(fake_zone); i++)
        if (strcmp(fake_zone[i].qname, qname) == 0 && fake_zone[i].qtype == qtype)
            return f->hits[i];
    fail_msg("%s/%u is not in the fake zone", qname, qtype);
    return 0;
}

/* ---- fixture ---- */

struct fixture {
    uv_loop_t loop;
    struct fake_dns fake;
    struct dns *dns;
    uv_timer_t watchdog;
    bool timed_out;
};

/* Callbacks so far (all captures), and whether a dns_lookup_* call is on the stack. */
static int g_done;
static bool g_in_lookup;
static int g_called_inside_lookup;

static void watchdog_cb(uv_timer_t *t)
{
    struct fixture *fx = t->data;
    fx->timed_out = true;
    uv_stop(t->loop);
}

/* Runs the loop until *count reaches want, or fails after WATCHDOG_MS. */
static void run_until(struct fixture *fx, const int *count, int want)
{
    fx->timed_out = false;
    assert_int_equal(uv_timer_start(&fx->watchdog, watchdog_cb, WATCHDOG_MS, 0), 0);
    while (*count < want && !fx->timed_out)
        uv_run(&fx->loop, UV_RUN_ONCE);
    uv_timer_stop(&fx->watchdog);
    assert_false(fx->timed_out);
}

static void run_for_cb(uv_timer_t *t)
{
    int *fired = t->data;
    (*fired)++;
}

/* Runs the loop for ms milliseconds (answers still in flight arrive meanwhile). */
static void run_for(struct fixture *fx, uint64_t ms)
{
    int fired = 0;
    uv_timer_t t;
    assert_int_equal(uv_timer_init(&fx->loop, &t), 0);
    t.data = &fired;
    assert_int_equal(uv_timer_start(&t, run_for_cb, ms, 0), 0);
    run_until(fx, &fired, 1);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT); /* t is on the stack: finish closing it here */
}

static struct dns *new_dns(struct fixture *fx, uint16_t port, unsigned timeout_ms, unsigned tries)
{
    struct cfg_hostport server;
    struct dns *d = NULL;
    char err[256] = "";
    memset(&server, 0, sizeof server);
    snprintf(server.host, sizeof server.host, "127.0.0.1");
    server.port = port;
    if (dns_new_with_timeout(&fx->loop, &server, timeout_ms, tries, &d, err, sizeof err) != 0)
        fail_msg("dns_new: %s", err);
    assert_non_null(d);
    return d;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(uv_timer_init(&fx->loop, &fx->watchdog), 0);
    fx->watchdog.data = fx;
    fake_start(&fx->fake, &fx->loop);
    fx->dns = new_dns(fx, fx->fake.port, TEST_TIMEOUT_MS, TEST_TRIES);
    g_done = 0;
    g_in_lookup = false;
    g_called_inside_lookup = 0;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    dns_free(&fx->dns);
    fake_stop(&fx->fake);
    uv_close((uv_handle_t *)&fx->watchdog, NULL);
    for (int i = 0; i < 100 && uv_loop_alive(&fx->loop); i++)
        uv_run(&fx->loop, UV_RUN_NOWAIT);
    /* Every handle closed: dns_free released its timers and polls. */
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    assert_int_equal(g_called_inside_lookup, 0);
    free(fx);
    return 0;
}

/* ---- capturing results ---- */

struct mx_capture {
    int calls;
    enum dns_status status;
    bool is_implicit;
    size_t count;
    struct dns_target targets[DNS_MX_TARGETS_MAX];
    char error[DNS_ERROR_MAX_BYTES];
    /* what the callback does besides recording */
    struct dns **free_dns;        /* dns_free(free_dns) */
    struct dns *relookup_on;      /* dns_lookup_mx on it; the handle goes to relookup_q */
    struct dns_query *relookup_q; /* (void *)1 until tried */
    struct dns_query *cancel_q;   /* dns_cancel(cancel_q) */
};

struct addr_capture {
    int calls;
    enum dns_status status;
    size_t count;
    struct sockaddr_storage addrs[2 * DNS_ADDRS_PER_FAMILY_MAX];
    char error[DNS_ERROR_MAX_BYTES];
    struct dns **free_dns;
    struct dns_query *cancel_q;
    /* dns_lookup_addr(chain_dns, "127.0.0.1", ...) into chain_capture */
    struct dns *chain_dns;
    struct addr_capture *chain_capture;
    int chain_calls_after; /* chain_capture->calls right after that lookup returned */
};

static void mx_capture_cb(void *ctx, const struct dns_mx_result *r);
static void addr_capture_cb(void *ctx, const struct dns_addr_result *r);

static void mx_capture_cb(void *ctx, const struct dns_mx_result *r)
{
    struct mx_capture *c = ctx;
    if (g_in_lookup)
        g_called_inside_lookup++;
    c->calls++;
    c->status = r->status;
    c->is_implicit = r->is_implicit;
    c->count = r->count;
    assert_true(r->count <= DNS_MX_TARGETS_MAX);
    assert_true(r->count == 0 || r->targets != NULL);
    if (r->count > 0)
        memcpy(c->targets, r->targets, r->count * sizeof r->targets[0]);
    snprintf(c->error, sizeof c->error, "%s", r->error);
    g_done++;
    if (c->relookup_on != NULL)
        c->relookup_q = dns_lookup_mx(c->relookup_on, "order.test", mx_capture_cb, c);
    if (c->cancel_q != NULL)
        dns_cancel(c->cancel_q);
    if (c->free_dns != NULL)
        dns_free(c->free_dns);
}

static void addr_capture_cb(void *ctx, const struct dns_addr_result *r)
{
    struct addr_capture *c = ctx;
    if (g_in_lookup)
        g_called_inside_lookup++;
    c->calls++;
    c->status = r->status;
    c->count = r->count;
    assert_true(r->count <= ARRAY_LEN(c->addrs));
    assert_true(r->count == 0 || r->addrs != NULL);
    if (r->count > 0)
        memcpy(c->addrs, r->addrs, r->count * sizeof r->addrs[0]);
    snprintf(c->error, sizeof c->error, "%s", r->error);
    g_done++;
    if (c->chain_dns != NULL) {
        assert_non_null(
            dns_lookup_addr(c->chain_dns, "127.0.0.1", 25, addr_capture_cb, c->chain_capture));
        c->chain_calls_after = c->chain_capture->calls;
    }
    if (c->cancel_q != NULL)
        dns_cancel(c->cancel_q);
    if (c->free_dns != NULL)
        dns_free(c->free_dns);
}

static struct dns_query *start_mx(struct dns *d, const char *domain, struct mx_capture *c)
{
    struct dns_query *q;
    g_in_lookup = true;
    q = dns_lookup_mx(d, domain, mx_capture_cb, c);
    g_in_lookup = false;
    return q;
}

static struct dns_query *start_addr(struct dns *d, const char *host, uint16_t port,
                                    struct addr_capture *c)
{
    struct dns_query *q;
    g_in_lookup = true;
    q = dns_lookup_addr(d, host, port, addr_capture_cb, c);
    g_in_lookup = false;
    return q;
}

/* One MX lookup, run to its callback. */
static void lookup_mx(struct fixture *fx, struct dns *d, const char *domain, struct mx_capture *c)
{
    int want = g_done + 1;
    memset(c, 0, sizeof *c);
    assert_non_null(start_mx(d, domain, c));
    assert_int_equal(c->calls, 0);
    run_until(fx, &g_done, want);
    assert_int_equal(c->calls, 1);
}

static void lookup_addr(struct fixture *fx, struct dns *d, const char *host, uint16_t port,
                        struct addr_capture *c)
{
    int want = g_done + 1;
    memset(c, 0, sizeof *c);
    assert_non_null(start_addr(d, host, port, c));
    assert_int_equal(c->calls, 0);
    run_until(fx, &g_done, want);
    assert_int_equal(c->calls, 1);
}

/* "127.0.0.1" or "::1", and checks the port. */
static const char *addr_text(const struct sockaddr_storage *ss, uint16_t port, char *buf,
                             size_t len)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        assert_int_equal(ntohs(sin->sin_port), port);
        assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf, (socklen_t)len));
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        assert_int_equal(ss->ss_family, AF_INET6);
        assert_int_equal(ntohs(sin6->sin6_port), port);
        assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, (socklen_t)len));
    }
    return buf;
}

/* ---- MX ---- */

struct mx_case {
    const char *domain;
    enum dns_status status;
    bool is_implicit;
    size_t count;
    const char *hosts[3];
    uint16_t prefs[3];
    const char *error_part; /* a substring of the error text, or NULL */
};

static const struct mx_case mx_cases[] = {
    {"order.test",
     DNS_OK,
     false,
     3,
     {"a.order.test", "b.order.test", "c.order.test"},
     {10, 20, 30},
     NULL},
    /* Upper case and one trailing dot are the same domain. */
    {"ORDER.Test.",
     DNS_OK,
     false,
     3,
     {"a.order.test", "b.order.test", "c.order.test"},
     {10, 20, 30},
     NULL},
    /* NODATA: the implicit MX, RFC 5321 5.1. */
    {"nomx.test", DNS_OK, true, 1, {"nomx.test"}, {0}, "implicit"},
    /* A CNAME and no MX behind it: still no MX. */
    {"cname.test", DNS_OK, true, 1, {"cname.test"}, {0}, NULL},
    {"nullmx.test", DNS_NULL_MX, false, 0, {NULL}, {0}, "null MX"},
    /* "." next to a real host is ignored. */
    {"mixednull.test", DNS_OK, false, 1, {"real.mixednull.test"}, {10}, NULL},
    /* An IP address and an underscore name are dropped; a host listed twice counts once. */
    {"badtargets.test", DNS_OK, false, 1, {"good.badtargets.test"}, {10}, NULL},
    {"allbad.test", DNS_TEMPFAIL, false, 0, {NULL}, {0}, "valid name"},
    {"nx.test", DNS_NXDOMAIN, false, 0, {NULL}, {0}, "NXDOMAIN"},
    /* c-ares 1.18 keeps no rcode after the last try: "unreachable, SERVFAIL or REFUSED". */
    {"servfail.test", DNS_TEMPFAIL, false, 0, {NULL}, {0}, "SERVFAIL"},
    {"refused.test", DNS_TEMPFAIL, false, 0, {NULL}, {0}, "REFUSED"},
    {"garbage.test", DNS_TEMPFAIL, false, 0, {NULL}, {0}, "malformed"},
    {"short.test", DNS_TEMPFAIL, false, 0, {NULL}, {0}, NULL},
    /* TC over UDP: c-ares asks again over TCP and gets the whole answer. */
    {"big.test", DNS_OK, false, 2, {"mx1.big.test", "mx2.big.test"}, {10, 20}, NULL},
};

static void test_mx_table(void **state)
{
    struct fixture *fx = *state;
    for (size_t i = 0; i < ARRAY_LEN(mx_cases); i++) {
        const struct mx_case *tc = &mx_cases[i];
        struct mx_capture c;
        char want_qname[64];

        lookup_mx(fx, fx->dns, tc->domain, &c);
        if (c.status != tc->status)
            fail_msg("%s: got status %s (%s), want %s", tc->domain, dns_status_name(c.status),
                     c.error, dns_status_name(tc->status));
        assert_int_equal(c.is_implicit, tc->is_implicit);
        if (c.count != tc->count)
            fail_msg("%s: got %zu targets, want %zu", tc->domain, c.count, tc->count);
        for (size_t j = 0; j < tc->count; j++) {
            if (strcmp(c.targets[j].host, tc->hosts[j]) != 0 ||
                c.targets[j].preference != tc->prefs[j])
                fail_msg("%s: target %zu is %s/%u, want %s/%u", tc->domain, j, c.targets[j].host,
                         c.targets[j].preference, tc->hosts[j], tc->prefs[j]);
        }
        assert_true(c.error[0] != '\0');
        if (tc->error_part != NULL && strstr(c.error, tc->error_part) == NULL)
            fail_msg("%s: error \"%s\" lacks \"%s\"", tc->domain, c.error, tc->error_part);
        /* The name asked is the domain itself: no search domain appended, no trailing dot. */
        snprintf(want_qname, sizeof want_qname, "%s", tc->domain);
        if (want_qname[strlen(want_qname) - 1] == '.')
            want_qname[strlen(want_qname) - 1] = '\0';
        assert_int_equal(strcasecmp(fx->fake.last_qname, want_qname), 0);
    }
    assert_true(fx->fake.queries_tcp >= 1);                      /* big.test */
    assert_int_equal(fake_hits(&fx->fake, "big.test", T_MX), 2); /* once per transport */
    /* SERVFAIL is tried again (TEST_TRIES), NXDOMAIN is final. */
    assert_int_equal(fake_hits(&fx->fake, "servfail.test", T_MX), TEST_TRIES);
}

/* RFC 5321 5.1: equal preferences in random order; the lower preference always first. */
static void test_mx_equal_preferences_shuffled(void **state)
{
    struct fixture *fx = *state;
    enum { N = 200 };
    struct mx_capture *c = calloc(N, sizeof *c);
    int xy = 0, yx = 0;

    assert_non_null(c);
    for (int i = 0; i < N; i++)
        assert_non_null(start_mx(fx->dns, "equal.test", &c[i]));
    run_until(fx, &g_done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(c[i].calls, 1);
        assert_int_equal(c[i].status, DNS_OK);
        assert_int_equal(c[i].count, 3);
        assert_string_equal(c[i].targets[0].host, "first.equal.test");
        assert_int_equal(c[i].targets[0].preference, 5);
        assert_int_equal(c[i].targets[1].preference, 10);
        assert_int_equal(c[i].targets[2].preference, 10);
        if (strcmp(c[i].targets[1].host, "x.equal.test") == 0) {
            assert_string_equal(c[i].targets[2].host, "y.equal.test");
            xy++;
        } else {
            assert_string_equal(c[i].targets[1].host, "y.equal.test");
            assert_string_equal(c[i].targets[2].host, "x.equal.test");
            yx++;
        }
    }
    /* Each order has probability 1/2: both missing in 200 draws is 2^-199. */
    assert_true(xy > 0);
    assert_true(yx > 0);
    assert_int_equal(xy + yx, N);
    free(c);
}

static void test_mx_timeout(void **state)
{
    struct fixture *fx = *state;
    struct dns *quick = new_dns(fx, fx->fake.port, 100, 1);
    struct mx_capture c;
    uint64_t t0 = uv_hrtime(), elapsed_ms;

    lookup_mx(fx, quick, "drop.test", &c);
    elapsed_ms = (uv_hrtime() - t0) / 1000000u;
    assert_int_equal(c.status, DNS_TEMPFAIL);
    assert_non_null(strstr(c.error, "timed out"));
    assert_true(elapsed_ms >= 90);
    assert_true(elapsed_ms < 5000);
    assert_int_equal(fake_hits(&fx->fake, "drop.test", T_MX), 1);
    dns_free(&quick);
    assert_null(quick);

    /* Two tries: the query is sent twice (50 ms, then 100 ms), then TEMPFAIL. */
    quick = new_dns(fx, fx->fake.port, 50, 2);
    lookup_mx(fx, quick, "drop.test", &c);
    assert_int_equal(c.status, DNS_TEMPFAIL);
    assert_int_equal(fake_hits(&fx->fake, "drop.test", T_MX), 3);
    dns_free(&quick);
}

/* Nothing listens on the resolver's port: a failure, soon. */
static void test_resolver_down(void **state)
{
    struct fixture *fx = *state;
    uv_udp_t probe;
    struct sockaddr_in sin;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uint16_t port;
    struct dns *dead;
    struct mx_capture c;
    struct addr_capture a;

    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sin), 0);
    assert_int_equal(uv_udp_init(&fx->loop, &probe), 0);
    assert_int_equal(uv_udp_bind(&probe, (const struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_udp_getsockname(&probe, (struct sockaddr *)&ss, &len), 0);
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);

    dead = new_dns(fx, port, 200, 1);
    lookup_mx(fx, dead, "order.test", &c);
    assert_int_equal(c.status, DNS_TEMPFAIL);
    assert_int_equal(c.count, 0);
    lookup_addr(fx, dead, "host.test", 25, &a);
    assert_int_equal(a.status, DNS_TEMPFAIL);
    assert_int_equal(a.count, 0);
    dns_free(&dead);
}

/* ---- A and AAAA ---- */

struct addr_case {
    const char *host;
    enum dns_status status;
    size_t count;
    const char *addrs[3]; /* in the order given: IPv4 first */
    bool asks;            /* goes to the resolver */
};

static const struct addr_case addr_cases[] = {
    {"host.test", DNS_OK, 3, {"127.0.0.2", "127.0.0.3", "::2"}, true},
    {"HOST.test.", DNS_OK, 3, {"127.0.0.2", "127.0.0.3", "::2"}, true},
    {"v4only.test", DNS_OK, 1, {"127.0.0.4"}, true},
    {"v6only.test", DNS_OK, 1, {"2001:db8::6"}, true},
    {"noaddr.test", DNS_NODATA, 0, {NULL}, true},
    {"nx.test", DNS_NXDOMAIN, 0, {NULL}, true},
    /* One family answers, the other fails: what was found is used. */
    {"halfbroken.test", DNS_OK, 1, {"127.0.0.5"}, true},
    /* No address, and one family failed: the answer is not known. */
    {"v6broken.test", DNS_TEMPFAIL, 0, {NULL}, true},
    /* A CNAME chain inside the answer is followed; a CNAME alone is no address. */
    {"alias.test", DNS_OK, 1, {"127.0.0.2"}, true},
    /* Literals and localhost (RFC 6761 6.3) are answered without a query. */
    {"127.0.0.1", DNS_OK, 1, {"127.0.0.1"}, false},
    {"::1", DNS_OK, 1, {"::1"}, false},
    {"2001:db8::25", DNS_OK, 1, {"2001:db8::25"}, false},
    {"::ffff:127.0.0.9", DNS_OK, 1, {"127.0.0.9"}, false},
    {"localhost", DNS_OK, 2, {"127.0.0.1", "::1"}, false},
    {"LocalHost.", DNS_OK, 2, {"127.0.0.1", "::1"}, false},
    {"smtp.localhost", DNS_OK, 2, {"127.0.0.1", "::1"}, false},
};

static void test_addr_table(void **state)
{
    struct fixture *fx = *state;
    for (size_t i = 0; i < ARRAY_LEN(addr_cases); i++) {
        const struct addr_case *tc = &addr_cases[i];
        unsigned before = fx->fake.queries_udp;
        struct addr_capture c;
        char buf[INET6_ADDRSTRLEN];

        lookup_addr(fx, fx->dns, tc->host, 2525, &c);
        if (c.status != tc->status)
            fail_msg("%s: got status %s (%s), want %s", tc->host, dns_status_name(c.status),
                     c.error, dns_status_name(tc->status));
        if (c.count != tc->count)
            fail_msg("%s: got %zu addresses, want %zu", tc->host, c.count, tc->count);
        for (size_t j = 0; j < tc->count; j++) {
            addr_text(&c.addrs[j], 2525, buf, sizeof buf);
            if (strcmp(buf, tc->addrs[j]) != 0)
                fail_msg("%s: address %zu is %s, want %s", tc->host, j, buf, tc->addrs[j]);
        }
        assert_true(c.error[0] != '\0');
        /* A and AAAA: two queries (more when SERVFAIL is tried again); literals: none. */
        if (tc->asks)
            assert_true(fx->fake.queries_udp >= before + 2);
        else
            assert_int_equal(fx->fake.queries_udp, before);
    }
}

static void test_addr_timeout(void **state)
{
    struct fixture *fx = *state;
    struct dns *quick = new_dns(fx, fx->fake.port, 100, 1);
    struct addr_capture c;

    lookup_addr(fx, quick, "drop.test", 25, &c);
    assert_int_equal(c.status, DNS_TEMPFAIL);
    assert_non_null(strstr(c.error, "timed out"));
    assert_int_equal(fake_hits(&fx->fake, "drop.test", T_A), 1);
    assert_int_equal(fake_hits(&fx->fake, "drop.test", T_AAAA), 1);
    dns_free(&quick);
}

/* 100 lookups at once, each answered with its own address. */
static void test_addr_concurrent(void **state)
{
    struct fixture *fx = *state;
    enum { N = 100 };
    struct addr_capture *c = calloc(N, sizeof *c);
    char name[64], want[32], buf[INET6_ADDRSTRLEN];

    assert_non_null(c);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "h%d.many.test", i + 300);
        assert_non_null(start_addr(fx->dns, name, 25, &c[i]));
    }
    run_until(fx, &g_done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(c[i].calls, 1);
        if (c[i].status != DNS_OK)
            fail_msg("lookup %d: %s (%s)", i, dns_status_name(c[i].status), c[i].error);
        assert_int_equal(c[i].count, 1);
        snprintf(want, sizeof want, "127.1.%d.%d", (i + 300) / 256, (i + 300) % 256);
        assert_string_equal(addr_text(&c[i].addrs[0], 25, buf, sizeof buf), want);
    }
    assert_int_equal(fx->fake.queries_udp, 2 * N);
    free(c);
}

/* ---- names ---- */

static const char *const bad_names[] = {
    "",
    ".",
    "a..b.test",
    ".a.test",
    "-a.test",
    "a-.test",
    "under_score.test",
    "exa mple.test",
    "tab\t.test",
    "new\nline.test",
    "caf\xc3\xa9.test",
    "a.test..",
    "1.2.3",
    "[192.0.2.1]",
    "[::1]",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", /* label of 64 */
};

static void test_bad_names(void **state)
{
    struct fixture *fx = *state;
    char long_name[300];
    struct mx_capture c;
    struct addr_capture a;

    /* 254 octets of text: one too many (RFC 1035 3.1 via address.h). */
    memset(long_name, 0, sizeof long_name);
    for (size_t i = 0; i + 2 <= 254; i += 2)
        memcpy(long_name + i, "a.", 2);
    long_name[253] = 'b';
    assert_int_equal(strlen(long_name), 254);

    for (size_t i = 0; i <= ARRAY_LEN(bad_names); i++) {
        const char *name = i < ARRAY_LEN(bad_names) ? bad_names[i] : long_name;
        lookup_mx(fx, fx->dns, name, &c);
        if (c.status != DNS_BADNAME)
            fail_msg("MX \"%s\": got %s", name, dns_status_name(c.status));
        assert_int_equal(c.count, 0);
        assert_non_null(strstr(c.error, "not a valid"));
        lookup_addr(fx, fx->dns, name, 25, &a);
        if (a.status != DNS_BADNAME)
            fail_msg("A \"%s\": got %s", name, dns_status_name(a.status));
        assert_int_equal(a.count, 0);
    }
    /* An IP address is a host, never a mail domain. */
    lookup_mx(fx, fx->dns, "192.0.2.1", &c);
    assert_int_equal(c.status, DNS_BADNAME);
    lookup_mx(fx, fx->dns, NULL, &c);
    assert_int_equal(c.status, DNS_BADNAME);
    lookup_addr(fx, fx->dns, NULL, 25, &a);
    assert_int_equal(a.status, DNS_BADNAME);
    /* 253 octets are fine (the fake answers NXDOMAIN). */
    long_name[253] = '\0';
    lookup_mx(fx, fx->dns, long_name, &c);
    assert_int_equal(c.status, DNS_NXDOMAIN);
    assert_int_equal(fx->fake.queries_udp, 1);
    assert_int_equal(fx->fake.unknown, 1);

    /* Refused outright: no handle, and no callback ever. */
    assert_null(dns_lookup_mx(NULL, "order.test", mx_capture_cb, &c));
    assert_null(dns_lookup_mx(fx->dns, "order.test", NULL, &c));
    assert_null(dns_lookup_addr(NULL, "host.test", 25, addr_capture_cb, &a));
    assert_null(dns_lookup_addr(fx->dns, "host.test", 25, NULL, &a));
}

/* A literal is answered without a query, but never from inside the lookup call. */
static void test_literal_is_asynchronous(void **state)
{
    struct fixture *fx = *state;
    struct addr_capture a, b;

    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    /* a's callback looks up another literal: that one waits for the next loop turn too. */
    a.chain_dns = fx->dns;
    a.chain_capture = &b;
    assert_non_null(start_addr(fx->dns, "192.0.2.25", 587, &a));
    assert_int_equal(a.calls, 0);
    run_until(fx, &g_done, 2);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.chain_calls_after, 0);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.status, DNS_OK);
    assert_int_equal(fx->fake.queries_udp, 0);
}

/* ---- cancel ---- */

static void test_cancel_before_answer(void **state)
{
    struct fixture *fx = *state;
    struct mx_capture c1, c2;
    struct addr_capture a1, a2, lit;
    struct dns_query *q;

    memset(&c1, 0, sizeof c1);
    memset(&a1, 0, sizeof a1);
    memset(&lit, 0, sizeof lit);

    /* Sent, then cancelled before the answer can arrive: the answer is dropped. */
    q = start_mx(fx->dns, "order.test", &c1);
    assert_non_null(q);
    dns_cancel(q);
    q = start_addr(fx->dns, "host.test", 25, &a1); /* two c-ares queries in flight */
    assert_non_null(q);
    dns_cancel(q);
    q = start_addr(fx->dns, "127.0.0.1", 25, &lit); /* already answered, not yet delivered */
    assert_non_null(q);
    dns_cancel(q);
    dns_cancel(NULL);

    /* Lookups after them complete; by then the cancelled answers have come in too. */
    lookup_mx(fx, fx->dns, "order.test", &c2);
    assert_int_equal(c2.status, DNS_OK);
    lookup_addr(fx, fx->dns, "host.test", 25, &a2);
    assert_int_equal(a2.status, DNS_OK);
    run_for(fx, 50);
    assert_int_equal(fake_hits(&fx->fake, "order.test", T_MX), 2);
    assert_int_equal(fake_hits(&fx->fake, "host.test", T_A), 2);
    assert_int_equal(c1.calls, 0);
    assert_int_equal(a1.calls, 0);
    assert_int_equal(lit.calls, 0);
    assert_int_equal(g_done, 2);
}

/* A callback cancels another lookup still in flight; dns_free later does not call it either. */
static void test_cancel_from_callback(void **state)
{
    struct fixture *fx = *state;
    struct mx_capture slow;
    struct addr_capture first;

    memset(&slow, 0, sizeof slow);
    memset(&first, 0, sizeof first);
    first.cancel_q = start_mx(fx->dns, "drop.test", &slow);
    assert_non_null(first.cancel_q);
    assert_non_null(start_addr(fx->dns, "127.0.0.1", 25, &first));
    run_until(fx, &g_done, 1);
    assert_int_equal(first.calls, 1);
    dns_free(&fx->dns);
    assert_int_equal(slow.calls, 0);
}

/* ---- dns_free ---- */

static void test_free_with_lookups_outstanding(void **state)
{
    struct fixture *fx = *state;
    struct dns *raw = fx->dns;
    struct mx_capture m1, m2, m3, bad;
    struct addr_capture a1, lit;
    struct dns_query *q;

    memset(&m1, 0, sizeof m1);
    memset(&m2, 0, sizeof m2);
    memset(&m3, 0, sizeof m3);
    memset(&bad, 0, sizeof bad);
    memset(&a1, 0, sizeof a1);
    memset(&lit, 0, sizeof lit);

    assert_non_null(start_mx(fx->dns, "drop.test", &m1));
    assert_non_null(start_mx(fx->dns, "order.test", &m2)); /* answer on its way */
    assert_non_null(start_addr(fx->dns, "drop.test", 25, &a1));
    assert_non_null(start_addr(fx->dns, "::1", 25, &lit));
    assert_non_null(start_mx(fx->dns, "bad_name.test", &bad));
    q = start_mx(fx->dns, "drop.test", &m3);
    assert_non_null(q);
    dns_cancel(q);
    /* A lookup from a CANCELLED callback is refused. */
    m1.relookup_on = raw;
    m1.relookup_q = (struct dns_query *)&m1;

    dns_free(&fx->dns);
    assert_null(fx->dns);
    /* Every callback ran once, inside dns_free, with CANCELLED; the cancelled one did not. */
    assert_int_equal(g_done, 5);
    assert_int_equal(m1.calls, 1);
    assert_int_equal(m1.status, DNS_CANCELLED);
    assert_null(m1.relookup_q);
    assert_int_equal(m2.calls, 1);
    assert_int_equal(m2.status, DNS_CANCELLED);
    assert_int_equal(m2.count, 0);
    assert_int_equal(a1.calls, 1);
    assert_int_equal(a1.status, DNS_CANCELLED);
    assert_int_equal(lit.calls, 1);
    assert_int_equal(lit.status, DNS_CANCELLED);
    assert_int_equal(lit.count, 0);
    assert_int_equal(bad.calls, 1);
    assert_int_equal(bad.status, DNS_CANCELLED);
    assert_int_equal(m3.calls, 0);
    assert_null(dns_lookup_mx(fx->dns, "order.test", mx_capture_cb, &m1));

    /* Nothing more happens afterwards: answers to the old sockets go nowhere. */
    run_for(fx, 100);
    assert_int_equal(g_done, 5);
    dns_free(&fx->dns); /* NULL: a no-op */
    dns_free(NULL);
}

/* dns_free from inside a callback: the lookups still waiting are cancelled, once each. */
static void test_free_from_callback(void **state)
{
    struct fixture *fx = *state;
    struct addr_capture first, second;
    struct mx_capture slow;

    memset(&first, 0, sizeof first);
    memset(&second, 0, sizeof second);
    memset(&slow, 0, sizeof slow);
    first.free_dns = &fx->dns;
    assert_non_null(start_mx(fx->dns, "drop.test", &slow));
    assert_non_null(start_addr(fx->dns, "127.0.0.1", 25, &first));
    assert_non_null(start_addr(fx->dns, "127.0.0.2", 25, &second));
    run_until(fx, &g_done, 1);
    assert_null(fx->dns);
    assert_int_equal(first.calls, 1);
    assert_int_equal(first.status, DNS_OK);
    assert_int_equal(second.calls, 1);
    assert_int_equal(second.status, DNS_CANCELLED);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.status, DNS_CANCELLED);
    run_for(fx, 50);
    assert_int_equal(g_done, 3);
}

/* ---- setup errors and names of statuses ---- */

static void test_new_errors(void **state)
{
    struct fixture *fx = *state;
    struct cfg_hostport server;
    struct dns *d = (struct dns *)&server;
    char err[256];

    memset(&server, 0, sizeof server);
    snprintf(server.host, sizeof server.host, "resolver.example");
    server.port = 53;
    assert_int_equal(dns_new(&fx->loop, &server, &d, err, sizeof err), -1);
    assert_null(d);
    assert_non_null(strstr(err, "dns_server"));

    snprintf(server.host, sizeof server.host, "127.0.0.1");
    assert_int_equal(dns_new_with_timeout(&fx->loop, &server, 0, 2, &d, err, sizeof err), -1);
    assert_null(d);
    assert_int_equal(dns_new_with_timeout(&fx->loop, &server, 100, 0, &d, err, sizeof err), -1);
    assert_null(d);

    /* IPv6 server syntax, and the system configuration (no query is made). */
    snprintf(server.host, sizeof server.host, "::1");
    server.port = 0;
    assert_int_equal(dns_new(&fx->loop, &server, &d, err, sizeof err), 0);
    assert_non_null(d);
    dns_free(&d);
    assert_int_equal(dns_new(&fx->loop, NULL, &d, err, sizeof err), 0);
    assert_non_null(d);
    dns_free(&d);
    server.host[0] = '\0';
    assert_int_equal(dns_new(&fx->loop, &server, &d, err, sizeof err), 0);
    dns_free(&d);
}

static void test_status_names(void **state)
{
    static const struct {
        enum dns_status status;
        const char *name;
    } cases[] = {
        {DNS_OK, "ok"},           {DNS_NXDOMAIN, "nxdomain"}, {DNS_NODATA, "nodata"},
        {DNS_NULL_MX, "null-mx"}, {DNS_TEMPFAIL, "tempfail"}, {DNS_CANCELLED, "cancelled"},
        {DNS_BADNAME, "badname"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        assert_string_equal(dns_status_name(cases[i].status), cases[i].name);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mx_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mx_equal_preferences_shuffled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mx_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolver_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_literal_is_asynchronous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_before_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_lookups_outstanding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_errors, setup, teardown),
        cmocka_unit_test(test_status_names),
    };
    log_set_level(LOG_LEVEL_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
