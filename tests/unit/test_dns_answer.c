/*
 * test_dns_answer.c - server/net/dns_answer.c without a resolver: answers built by hand in
 * RFC 1035 4.1 wire format go straight to dns_answer_mx and dns_answer_a/aaaa, and c-ares
 * statuses straight to dns_answer_addr. A table covers MX order by preference, one target per
 * host at its best preference, normalised names, invalid hosts ignored, the implicit MX (no
 * record, CNAME only), the null MX, the cap of DNS_MX_TARGETS_MAX, malformed answers and each
 * failure status; a loop shows equal preferences come out in every order. test_dns.c covers the
 * same answers end to end through a fake DNS server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <sodium.h>

#include "server/net/dns_answer.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define T_A     1
#define T_CNAME 5
#define T_MX    15
#define T_AAAA  28

#define MSG_MAX 4096
#define RRS_MAX 48

/* One answer record; the owner is the question's name. */
struct rec {
    uint16_t type;
    uint16_t preference; /* T_MX */
    const char *data;    /* the host (T_MX, T_CNAME) or the address (T_A, T_AAAA) */
};

struct msg {
    uint8_t b[MSG_MAX];
    size_t len;
};

static void put8(struct msg *m, uint8_t v)
{
    assert_true(m->len < MSG_MAX);
    m->b[m->len++] = v;
}

static void put16(struct msg *m, uint16_t v)
{
    put8(m, (uint8_t)(v >> 8));
    put8(m, (uint8_t)v);
}

/* name as labels; "." is the root. */
static void put_name(struct msg *m, const char *name)
{
    for (const char *p = name; *p != '\0' && strcmp(p, ".") != 0;) {
        size_t l = strcspn(p, ".");
        assert_true(l > 0 && l <= 63);
        put8(m, (uint8_t)l);
        for (size_t i = 0; i < l; i++)
            put8(m, (uint8_t)p[i]);
        p += l;
        if (*p == '.')
            p++;
    }
    put8(m, 0);
}

/* A response to (qname, qtype) holding recs as its answer section. */
static void build(struct msg *m, const char *qname, uint16_t qtype, const struct rec *recs,
                  size_t n)
{
    m->len = 0;
    put16(m, 0x1234);
    put16(m, 0x8180); /* response, RD, RA, NOERROR */
    put16(m, 1);
    put16(m, (uint16_t)n);
    put16(m, 0);
    put16(m, 0);
    put_name(m, qname);
    put16(m, qtype);
    put16(m, 1);
    for (size_t i = 0; i < n; i++) {
        put16(m, 0xC00C); /* the question's name, RFC 1035 4.1.4 */
        put16(m, recs[i].type);
        put16(m, 1);
        put16(m, 0);
        put16(m, 300);
        size_t rdlen_at = m->len;
        put16(m, 0);
        if (recs[i].type == T_MX) {
            put16(m, recs[i].preference);
            put_name(m, recs[i].data);
        } else if (recs[i].type == T_CNAME) {
            put_name(m, recs[i].data);
        } else {
            uint8_t addr[16];
            int family = recs[i].type == T_A ? AF_INET : AF_INET6;
            assert_int_equal(inet_pton(family, recs[i].data, addr), 1);
            for (size_t k = 0; k < (recs[i].type == T_A ? 4u : 16u); k++)
                put8(m, addr[k]);
        }
        uint16_t rdlen = (uint16_t)(m->len - rdlen_at - 2);
        m->b[rdlen_at] = (uint8_t)(rdlen >> 8);
        m->b[rdlen_at + 1] = (uint8_t)rdlen;
    }
}

static int setup(void **state)
{
    (void)state;
    if (sodium_init() < 0 || ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ares_library_cleanup();
    return 0;
}

/* ---- dns_answer_mx --------------------------------------------------------------------- */

struct mx_case {
    const char *label;
    int ares_status;
    struct rec recs[8];
    size_t nrecs;
    bool truncate; /* cut the answer in the middle of its last record */
    enum dns_status want;
    const char *want_hosts; /* "host/pref host/pref", in order */
    bool want_implicit;
    const char *want_error;
};

static const struct mx_case mx_cases[] = {
    {"by preference",
     ARES_SUCCESS,
     {{T_MX, 20, "b.example.test"}, {T_MX, 10, "a.example.test"}, {T_MX, 30, "c.example.test"}},
     3,
     false,
     DNS_OK,
     "a.example.test/10 b.example.test/20 c.example.test/30",
     false,
     "3 MX hosts"},
    {"one host once, at its best preference",
     ARES_SUCCESS,
     {{T_MX, 20, "a.example.test"}, {T_MX, 15, "b.example.test"}, {T_MX, 10, "A.Example.TEST"}},
     3,
     false,
     DNS_OK,
     "a.example.test/10 b.example.test/15",
     false,
     "2 MX hosts"},
    {"invalid hosts ignored",
     ARES_SUCCESS,
     {{T_MX, 10, "192.0.2.1"}, {T_MX, 20, "_under.example.test"}, {T_MX, 30, "ok.example.test"}},
     3,
     false,
     DNS_OK,
     "ok.example.test/30",
     false,
     "1 MX host"},
    {"only invalid hosts",
     ARES_SUCCESS,
     {{T_MX, 10, "192.0.2.1"}},
     1,
     false,
     DNS_TEMPFAIL,
     "",
     false,
     "MX lookup: no MX host is a valid name"},
    {"null MX",
     ARES_SUCCESS,
     {{T_MX, 0, "."}},
     1,
     false,
     DNS_NULL_MX,
     "",
     false,
     "domain accepts no mail (null MX, RFC 7505)"},
    {"root next to a real host",
     ARES_SUCCESS,
     {{T_MX, 0, "."}, {T_MX, 10, "mx.example.test"}},
     2,
     false,
     DNS_OK,
     "mx.example.test/10",
     false,
     "1 MX host"},
    {"no record: implicit MX",
     ARES_ENODATA,
     {{0}},
     0,
     false,
     DNS_OK,
     "example.test/0",
     true,
     "no MX records: implicit MX"},
    {"CNAME only: implicit MX",
     ARES_SUCCESS,
     {{T_CNAME, 0, "alias.example.test"}},
     1,
     false,
     DNS_OK,
     "example.test/0",
     true,
     "no MX records: implicit MX"},
    {"malformed answer",
     ARES_SUCCESS,
     {{T_MX, 10, "mx.example.test"}},
     1,
     true,
     DNS_TEMPFAIL,
     "",
     false,
     "MX lookup: malformed answer"},
    {"NXDOMAIN",
     ARES_ENOTFOUND,
     {{0}},
     0,
     false,
     DNS_NXDOMAIN,
     "",
     false,
     "no such domain (NXDOMAIN)"},
    {"timeout", ARES_ETIMEOUT, {{0}}, 0, false, DNS_TEMPFAIL, "", false, "MX lookup: timed out"},
    {"SERVFAIL",
     ARES_ESERVFAIL,
     {{0}},
     0,
     false,
     DNS_TEMPFAIL,
     "",
     false,
     "MX lookup: server failure (SERVFAIL)"},
    {"resolver shut down",
     ARES_EDESTRUCTION,
     {{0}},
     0,
     false,
     DNS_CANCELLED,
     "",
     false,
     "cancelled: resolver shut down"},
};

static void hosts_text(const struct dns_mx_result *r, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->count && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s/%u", i > 0 ? " " : "",
                                 r->targets[i].host, (unsigned)r->targets[i].preference);
}

static void test_mx_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(mx_cases); i++) {
        const struct mx_case *c = &mx_cases[i];
        struct msg m;
        struct dns_mx_result r;
        char hosts[1024];
        build(&m, "example.test", T_MX, c->recs, c->nrecs);
        if (c->truncate)
            m.len -= 3;
        dns_answer_mx("example.test", c->ares_status, m.b, (int)m.len, &r);
        hosts_text(&r, hosts, sizeof(hosts));
        if (r.status != c->want || strcmp(hosts, c->want_hosts) != 0 ||
            r.is_implicit != c->want_implicit || strcmp(r.error, c->want_error) != 0)
            fail_msg("%s: got %s \"%s\" implicit=%d \"%s\", want %s \"%s\" implicit=%d \"%s\"",
                     c->label, dns_status_name(r.status), hosts, r.is_implicit, r.error,
                     dns_status_name(c->want), c->want_hosts, c->want_implicit, c->want_error);
        if (r.status != DNS_OK)
            assert_null(r.targets);
        free(r.targets);
    }
}

/* RFC 5321 5.1: equal preferences in random order; the better preference always first. */
static void test_mx_equal_preferences_shuffled(void **state)
{
    (void)state;
    static const struct rec recs[] = {
        {T_MX, 20, "c.example.test"},
        {T_MX, 10, "a1.example.test"},
        {T_MX, 10, "a2.example.test"},
        {T_MX, 10, "a3.example.test"},
    };
    unsigned first[3] = {0};
    struct msg m;
    build(&m, "example.test", T_MX, recs, COUNT(recs));
    for (int run = 0; run < 300; run++) {
        struct dns_mx_result r;
        dns_answer_mx("example.test", ARES_SUCCESS, m.b, (int)m.len, &r);
        assert_int_equal(r.status, DNS_OK);
        assert_int_equal(r.count, 4);
        assert_string_equal(r.targets[3].host, "c.example.test");
        for (size_t k = 0; k < 3; k++)
            assert_int_equal(r.targets[k].preference, 10);
        first[r.targets[0].host[1] - '1']++;
        free(r.targets);
    }
    /* Each of three hosts comes first about 100 times; 0 would mean no shuffle. */
    for (size_t k = 0; k < 3; k++) {
        if (first[k] == 0)
            fail_msg("a%zu.example.test never came first in 300 runs", k + 1);
    }
}

/* One hostile answer costs at most DNS_MX_TARGETS_MAX targets, the best preferences. */
static void test_mx_cap(void **state)
{
    (void)state;
    static struct rec recs[RRS_MAX];
    static char names[RRS_MAX][32];
    struct msg m;
    struct dns_mx_result r;
    for (size_t i = 0; i < RRS_MAX; i++) {
        snprintf(names[i], sizeof(names[i]), "mx%zu.example.test", i);
        recs[i] = (struct rec){T_MX, (uint16_t)(RRS_MAX - i), names[i]};
    }
    build(&m, "example.test", T_MX, recs, RRS_MAX);
    dns_answer_mx("example.test", ARES_SUCCESS, m.b, (int)m.len, &r);
    assert_int_equal(r.status, DNS_OK);
    assert_int_equal(r.count, DNS_MX_TARGETS_MAX);
    assert_int_equal(r.targets[0].preference, 1);
    assert_int_equal(r.targets[DNS_MX_TARGETS_MAX - 1].preference, DNS_MX_TARGETS_MAX);
    free(r.targets);
}

/* ---- dns_answer_a, dns_answer_aaaa ----------------------------------------------------- */

static void test_address_halves(void **state)
{
    (void)state;
    static const struct rec a_recs[] = {{T_A, 0, "192.0.2.1"}, {T_A, 0, "192.0.2.2"}};
    static const struct rec aaaa_recs[] = {{T_AAAA, 0, "2001:db8::1"}};
    struct in_addr v4[DNS_ADDRS_PER_FAMILY_MAX];
    struct in6_addr v6[DNS_ADDRS_PER_FAMILY_MAX];
    char text[INET6_ADDRSTRLEN];
    size_t n = 99;
    struct msg m;

    build(&m, "h.example.test", T_A, a_recs, COUNT(a_recs));
    assert_int_equal(dns_answer_a(ARES_SUCCESS, m.b, (int)m.len, v4, &n), ARES_SUCCESS);
    assert_int_equal(n, 2);
    assert_string_equal(inet_ntop(AF_INET, &v4[1], text, sizeof(text)), "192.0.2.2");

    build(&m, "h.example.test", T_AAAA, aaaa_recs, COUNT(aaaa_recs));
    assert_int_equal(dns_answer_aaaa(ARES_SUCCESS, m.b, (int)m.len, v6, &n), ARES_SUCCESS);
    assert_int_equal(n, 1);
    assert_string_equal(inet_ntop(AF_INET6, &v6[0], text, sizeof(text)), "2001:db8::1");

    /* An empty answer section is NODATA; a failed query's status passes through. */
    build(&m, "h.example.test", T_A, NULL, 0);
    assert_int_equal(dns_answer_a(ARES_SUCCESS, m.b, (int)m.len, v4, &n), ARES_ENODATA);
    assert_int_equal(n, 0);
    assert_int_equal(dns_answer_aaaa(ARES_ETIMEOUT, NULL, 0, v6, &n), ARES_ETIMEOUT);
    assert_int_equal(n, 0);
}

/* ---- dns_answer_addr ------------------------------------------------------------------- */

struct addr_case {
    int v4, v6;
    size_t count;
    enum dns_status want;
    const char *want_error;
};

static const struct addr_case addr_cases[] = {
    {ARES_SUCCESS, ARES_ETIMEOUT, 1, DNS_OK, "1 address"},
    {ARES_SUCCESS, ARES_SUCCESS, 3, DNS_OK, "3 addresses"},
    {ARES_EDESTRUCTION, ARES_ENOTFOUND, 0, DNS_CANCELLED, "cancelled: resolver shut down"},
    {ARES_ETIMEOUT, ARES_ENOTFOUND, 0, DNS_NXDOMAIN, "no such domain (NXDOMAIN)"},
    {ARES_ENODATA, ARES_ENODATA, 0, DNS_NODATA, "no A or AAAA records"},
    {ARES_ETIMEOUT, ARES_ENODATA, 0, DNS_TEMPFAIL, "A lookup: timed out"},
    {ARES_ENODATA, ARES_ESERVFAIL, 0, DNS_TEMPFAIL, "AAAA lookup: server failure (SERVFAIL)"},
    {ARES_EREFUSED, ARES_ETIMEOUT, 0, DNS_TEMPFAIL, "A lookup: query refused (REFUSED)"},
};

static void test_addr_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(addr_cases); i++) {
        const struct addr_case *c = &addr_cases[i];
        char error[DNS_ERROR_MAX_BYTES];
        enum dns_status got = dns_answer_addr(c->v4, c->v6, c->count, error);
        if (got != c->want || strcmp(error, c->want_error) != 0)
            fail_msg("row %zu: got %s \"%s\", want %s \"%s\"", i, dns_status_name(got), error,
                     dns_status_name(c->want), c->want_error);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_table),   cmocka_unit_test(test_mx_equal_preferences_shuffled),
        cmocka_unit_test(test_mx_cap),     cmocka_unit_test(test_address_halves),
        cmocka_unit_test(test_addr_table),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
