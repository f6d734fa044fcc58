/*
 * test_proxy_header.c - unit tests for common/pure/proxy_header.c: version 1 lines and version 2
 * binary headers that must parse (IPv4, IPv6, IPv4-mapped, LOCAL, UNKNOWN, UNSPEC fallbacks,
 * TLVs skipped, the longest lines), every prefix of each of them asking for more, the octets
 * after a header left alone, and the headers that must be refused (bad signature, version,
 * command, family, transport, a length shorter than the addresses or over the cap, a line
 * without CRLF within 107 octets, bare CR or LF, leading zeros, wrong families, junk).
 *
 * Every table row names itself in the failure message ("got X, want Y").
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "common/pure/proxy_header.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                      0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* A version 2 header: the signature, ver_cmd, fam, then len octets of block. */
static size_t v2(unsigned char *out, unsigned ver_cmd, unsigned fam, const unsigned char *block,
                 size_t len)
{
    memcpy(out, sig, 12);
    out[12] = (unsigned char)ver_cmd;
    out[13] = (unsigned char)fam;
    out[14] = (unsigned char)(len >> 8);
    out[15] = (unsigned char)(len & 0xff);
    if (len > 0 && block != NULL)
        memcpy(out + 16, block, len);
    else if (len > 0)
        memset(out + 16, 0xab, len);
    return 16 + len;
}

static const unsigned char inet_block[12] = {192, 0, 2,    1, 198, 51,
                                             100, 2, 0xdc, 4, 0,   25}; /* :56324 -> :25 */

static void inet6_block(unsigned char *b, const char *src, const char *dst, uint16_t sp,
                        uint16_t dp)
{
    assert_int_equal(inet_pton(AF_INET6, src, b), 1);
    assert_int_equal(inet_pton(AF_INET6, dst, b + 16), 1);
    b[32] = (unsigned char)(sp >> 8);
    b[33] = (unsigned char)sp;
    b[34] = (unsigned char)(dp >> 8);
    b[35] = (unsigned char)dp;
}

struct ok_case {
    const char *name;
    unsigned char bytes[PROXY_HEADER_MAX_BYTES + 64];
    size_t len;    /* octets given to the parser */
    size_t header; /* octets the header must take */
    unsigned version;
    enum proxy_kind kind;
    const char *src, *dst; /* NULL unless PROXIED */
    uint16_t sport, dport;
};

static size_t text(struct ok_case *c, const char *s)
{
    c->len = strlen(s);
    memcpy(c->bytes, s, c->len);
    return c->len;
}

/* The cases are built at run time (binary headers), into a static table. */
static struct ok_case ok_cases[20];
static size_t ok_count;

static struct ok_case *add(const char *name, unsigned version, enum proxy_kind kind)
{
    struct ok_case *c = &ok_cases[ok_count++];
    memset(c, 0, sizeof(*c));
    c->name = name;
    c->version = version;
    c->kind = kind;
    return c;
}

static void build_ok_cases(void)
{
    ok_count = 0;
    struct ok_case *c;

    c = add("v1 tcp4", 1, PROXY_KIND_PROXIED);
    c->header = text(c, "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n");
    c->src = "192.0.2.1", c->dst = "198.51.100.2", c->sport = 56324, c->dport = 25;

    c = add("v1 tcp6", 1, PROXY_KIND_PROXIED);
    c->header = text(c, "PROXY TCP6 2001:db8::1 2001:DB8::2 0 65535\r\n");
    c->src = "2001:db8::1", c->dst = "2001:db8::2", c->sport = 0, c->dport = 65535;

    c = add("v1 tcp6 v4-mapped source is IPv4", 1, PROXY_KIND_PROXIED);
    c->header = text(c, "PROXY TCP6 ::ffff:192.0.2.9 2001:db8::2 1 110\r\n");
    c->src = "192.0.2.9", c->dst = "2001:db8::2", c->sport = 1, c->dport = 110;

    c = add("v1 tcp6 longest addresses (104 octets)", 1, PROXY_KIND_PROXIED);
    c->header = text(c, "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n");
    assert_int_equal(c->header, 104);
    c->src = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    c->dst = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", c->sport = 65535, c->dport = 65535;

    c = add("v1 unknown short", 1, PROXY_KIND_UNKNOWN);
    c->header = text(c, "PROXY UNKNOWN\r\n");

    c = add("v1 unknown longest (107 octets)", 1, PROXY_KIND_UNKNOWN);
    c->header = text(c, "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
    assert_int_equal(c->header, PROXY_V1_MAX_BYTES);

    c = add("v1 then the protocol's octets", 1, PROXY_KIND_PROXIED);
    c->header = strlen("PROXY TCP4 10.0.0.1 10.0.0.2 1000 25\r\n");
    text(c, "PROXY TCP4 10.0.0.1 10.0.0.2 1000 25\r\nEHLO client\r\n");
    c->src = "10.0.0.1", c->dst = "10.0.0.2", c->sport = 1000, c->dport = 25;

    c = add("v2 tcp4", 2, PROXY_KIND_PROXIED);
    c->header = c->len = v2(c->bytes, 0x21, 0x11, inet_block, sizeof(inet_block));
    c->src = "192.0.2.1", c->dst = "198.51.100.2", c->sport = 56324, c->dport = 25;

    c = add("v2 tcp6", 2, PROXY_KIND_PROXIED);
    {
        unsigned char b[36];
        inet6_block(b, "2001:db8::7", "2001:db8::25", 40000, 995);
        c->header = c->len = v2(c->bytes, 0x21, 0x21, b, sizeof(b));
    }
    c->src = "2001:db8::7", c->dst = "2001:db8::25", c->sport = 40000, c->dport = 995;

    c = add("v2 tcp6 v4-mapped source is IPv4", 2, PROXY_KIND_PROXIED);
    {
        unsigned char b[36];
        inet6_block(b, "::ffff:203.0.113.5", "2001:db8::25", 7, 25);
        c->header = c->len = v2(c->bytes, 0x21, 0x21, b, sizeof(b));
    }
    c->src = "203.0.113.5", c->dst = "2001:db8::25", c->sport = 7, c->dport = 25;

    c = add("v2 tcp4 with TLVs skipped", 2, PROXY_KIND_PROXIED);
    {
        unsigned char b[12 + 3 + 5 + 3 + 128];
        memcpy(b, inet_block, 12);
        b[12] = 0x01, b[13] = 0, b[14] = 5; /* PP2_TYPE_ALPN "smtp\0" */
        memcpy(b + 15, "smtp", 5);
        b[20] = 0x05, b[21] = 0, b[22] = 128; /* PP2_TYPE_UNIQUE_ID, 128 octets */
        memset(b + 23, 0x5a, 128);
        c->header = c->len = v2(c->bytes, 0x21, 0x11, b, sizeof(b));
    }
    c->src = "192.0.2.1", c->dst = "198.51.100.2", c->sport = 56324, c->dport = 25;

    c = add("v2 local, no addresses", 2, PROXY_KIND_LOCAL);
    c->header = c->len = v2(c->bytes, 0x20, 0x00, NULL, 0);

    c = add("v2 local with an address block skipped", 2, PROXY_KIND_LOCAL);
    c->header = c->len = v2(c->bytes, 0x20, 0x11, inet_block, sizeof(inet_block));

    c = add("v2 local ignores even a bad family", 2, PROXY_KIND_LOCAL);
    c->header = c->len = v2(c->bytes, 0x20, 0xff, NULL, 0);

    c = add("v2 proxy unspec", 2, PROXY_KIND_UNSPEC);
    c->header = c->len = v2(c->bytes, 0x21, 0x00, NULL, 0);

    c = add("v2 proxy udp4 falls back", 2, PROXY_KIND_UNSPEC);
    c->header = c->len = v2(c->bytes, 0x21, 0x12, inet_block, sizeof(inet_block));

    c = add("v2 proxy unix stream falls back", 2, PROXY_KIND_UNSPEC);
    c->header = c->len = v2(c->bytes, 0x21, 0x31, NULL, 216);

    c = add("v2 longest accepted", 2, PROXY_KIND_PROXIED);
    {
        unsigned char b[PROXY_V2_MAX_LEN_BYTES];
        memset(b, 0x04, sizeof(b)); /* PP2_TYPE_NOOP padding after the addresses */
        memcpy(b, inet_block, 12);
        c->header = c->len = v2(c->bytes, 0x21, 0x11, b, sizeof(b));
    }
    c->src = "192.0.2.1", c->dst = "198.51.100.2", c->sport = 56324, c->dport = 25;

    c = add("v2 then a TLS ClientHello", 2, PROXY_KIND_PROXIED);
    c->header = v2(c->bytes, 0x21, 0x11, inet_block, sizeof(inet_block));
    memcpy(c->bytes + c->header, "\x16\x03\x01\x02\x00\x01", 6);
    c->len = c->header + 6;
    c->src = "192.0.2.1", c->dst = "198.51.100.2", c->sport = 56324, c->dport = 25;

    assert_true(ok_count <= COUNT(ok_cases));
}

static void check_ip(const char *name, const char *what, const struct ip_addr *got,
                     const char *want)
{
    struct ip_addr w;
    if (ip_parse(want, &w) != 0)
        fail_msg("%s: test setup: bad address %s", name, want);
    if (!ip_equal(got, &w)) {
        char g[INET6_ADDRSTRLEN];
        ip_format(got, g, sizeof(g));
        fail_msg("%s: %s got %s, want %s", name, what, g, want);
    }
}

static void test_valid(void **state)
{
    (void)state;
    build_ok_cases();
    for (size_t i = 0; i < ok_count; i++) {
        const struct ok_case *c = &ok_cases[i];
        struct proxy_header h;
        const char *why = NULL;
        enum proxy_status st = proxy_header_parse(c->bytes, c->len, &h, &why);
        if (st != PROXY_DONE)
            fail_msg("%s: got status %d (%s), want DONE", c->name, st, why ? why : "-");
        if (h.header_bytes != c->header)
            fail_msg("%s: header_bytes got %zu, want %zu", c->name, h.header_bytes, c->header);
        if (h.version != c->version)
            fail_msg("%s: version got %u, want %u", c->name, h.version, c->version);
        if (h.kind != c->kind)
            fail_msg("%s: kind got %s, want %s", c->name, proxy_kind_name(h.kind),
                     proxy_kind_name(c->kind));
        if (c->src != NULL) {
            check_ip(c->name, "src", &h.src, c->src);
            check_ip(c->name, "dst", &h.dst, c->dst);
            if (h.src_port != c->sport || h.dst_port != c->dport)
                fail_msg("%s: ports got %u/%u, want %u/%u", c->name, h.src_port, h.dst_port,
                         c->sport, c->dport);
        } else if (h.src.family != 0 || h.src_port != 0) {
            fail_msg("%s: addresses set for kind %s", c->name, proxy_kind_name(h.kind));
        }
    }
}

/* Truncated: every proper prefix of a valid header is a valid beginning, never DONE or INVALID
 * (a balancer's header may arrive split over several reads). */
static void test_every_prefix_needs_more(void **state)
{
    (void)state;
    build_ok_cases();
    for (size_t i = 0; i < ok_count; i++) {
        const struct ok_case *c = &ok_cases[i];
        for (size_t k = 0; k < c->header; k++) {
            struct proxy_header h;
            const char *why = NULL;
            enum proxy_status st = proxy_header_parse(c->bytes, k, &h, &why);
            if (st != PROXY_NEED_MORE)
                fail_msg("%s: prefix of %zu octets got status %d (%s), want NEED_MORE", c->name, k,
                         st, why ? why : "-");
            if (h.header_bytes != 0)
                fail_msg("%s: prefix of %zu octets left header_bytes set", c->name, k);
        }
    }
}

struct bad_case {
    const char *name;
    unsigned char bytes[PROXY_HEADER_MAX_BYTES + 64];
    size_t len;
    const char *why; /* the reason the parser must give */
};

static struct bad_case bad_cases[40];
static size_t bad_count;

static struct bad_case *bad(const char *name, const char *why)
{
    struct bad_case *c = &bad_cases[bad_count++];
    memset(c, 0, sizeof(*c));
    c->name = name;
    c->why = why;
    return c;
}

static void bad_text(const char *name, const char *s, const char *why)
{
    struct bad_case *c = bad(name, why);
    c->len = strlen(s);
    memcpy(c->bytes, s, c->len);
}

static void build_bad_cases(void)
{
    bad_count = 0;
    struct bad_case *c;

    bad_text("smtp command instead", "EHLO client.example\r\n", "not a PROXY header");
    bad_text("http instead", "GET / HTTP/1.0\r\n", "not a PROXY header");
    bad_text("lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY header");
    bad_text("PROXY without its space", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY header");
    bad_text("v1 unknown protocol", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "v1 bad protocol");
    bad_text("v1 UNKNOWNX", "PROXY UNKNOWNX\r\n", "v1 bad protocol");
    bad_text("v1 empty line", "PROXY \r\n", "v1 bad protocol");
    bad_text("v1 double space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "v1 too many fields");
    bad_text("v1 empty field", "PROXY TCP4 1.2.3.4  1 2\r\n", "v1 empty field");
    bad_text("v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1 too many fields");
    bad_text("v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "v1 wrong number of fields");
    bad_text("v1 tcp4 with IPv6", "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "v1 bad address");
    bad_text("v1 tcp6 with IPv4", "PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n", "v1 bad address");
    bad_text("v1 octal-looking octet", "PROXY TCP4 192.000.2.1 5.6.7.8 1 2\r\n", "v1 bad address");
    bad_text("v1 host name", "PROXY TCP4 client.example 5.6.7.8 1 2\r\n", "v1 bad address");
    bad_text("v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n", "v1 bad port");
    bad_text("v1 port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "v1 bad port");
    bad_text("v1 port sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "v1 bad port");
    bad_text("v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1 bare LF");
    bad_text("v1 bare CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "v1 bare CR");
    bad_text("v1 tab", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", "v1 not printable ASCII");
    c = bad("v1 NUL inside", "v1 not printable ASCII");
    memcpy(c->bytes, "PROXY TCP4 1.2.3.4\0", 19);
    c->len = 19;
    c = bad("v1 oversize: no CRLF within 107 octets", "v1 no CRLF within 107 bytes");
    c->len = PROXY_V1_MAX_BYTES;
    memcpy(c->bytes, "PROXY UNKNOWN ", 14);
    memset(c->bytes + 14, 'x', c->len - 14);
    c = bad("v1 oversize: CRLF at 108", "v1 no CRLF within 107 bytes");
    memcpy(c->bytes, "PROXY UNKNOWN ", 14);
    memset(c->bytes + 14, 'x', 106 - 14);
    memcpy(c->bytes + 106, "\r\n", 2);
    c->len = 108;

    c = bad("v2 bad signature", "not a PROXY header");
    c->len = v2(c->bytes, 0x21, 0x11, inet_block, 12);
    c->bytes[7] = 'q';
    c = bad("v2 bad version 1", "v2 bad version");
    c->len = v2(c->bytes, 0x11, 0x11, inet_block, 12);
    c = bad("v2 bad version judged at octet 13", "v2 bad version");
    v2(c->bytes, 0x31, 0x11, inet_block, 12);
    c->len = 13;
    c = bad("v2 bad command 2", "v2 bad command");
    c->len = v2(c->bytes, 0x22, 0x11, inet_block, 12);
    c = bad("v2 bad family 4", "v2 bad family");
    c->len = v2(c->bytes, 0x21, 0x41, inet_block, 12);
    c = bad("v2 bad family judged at octet 14", "v2 bad family");
    v2(c->bytes, 0x21, 0xf1, inet_block, 12);
    c->len = 14;
    c = bad("v2 bad transport 3", "v2 bad transport");
    c->len = v2(c->bytes, 0x21, 0x13, inet_block, 12);
    c = bad("v2 length mismatch inet", "v2 length shorter than its addresses");
    c->len = v2(c->bytes, 0x21, 0x11, inet_block, 8);
    c = bad("v2 length mismatch inet6", "v2 length shorter than its addresses");
    c->len = v2(c->bytes, 0x21, 0x21, NULL, 12);
    c = bad("v2 length mismatch unix", "v2 length shorter than its addresses");
    c->len = v2(c->bytes, 0x21, 0x31, NULL, 200);
    c = bad("v2 length mismatch judged before the block arrives",
            "v2 length shorter than its addresses");
    v2(c->bytes, 0x21, 0x11, NULL, 4);
    c->len = 16;
    c = bad("v2 oversize", "v2 header too long");
    v2(c->bytes, 0x21, 0x11, NULL, PROXY_V2_MAX_LEN_BYTES + 1);
    c->len = 16; /* refused from the fixed part alone */
    c = bad("v2 oversize 65535", "v2 header too long");
    v2(c->bytes, 0x21, 0x11, NULL, 0);
    c->bytes[14] = 0xff, c->bytes[15] = 0xff;
    c->len = 16;

    assert_true(bad_count <= COUNT(bad_cases));
}

static void test_invalid(void **state)
{
    (void)state;
    build_bad_cases();
    for (size_t i = 0; i < bad_count; i++) {
        const struct bad_case *c = &bad_cases[i];
        struct proxy_header h;
        const char *why = NULL;
        enum proxy_status st = proxy_header_parse(c->bytes, c->len, &h, &why);
        if (st != PROXY_INVALID)
            fail_msg("%s: got status %d, want INVALID (%s)", c->name, st, c->why);
        if (why == NULL || strcmp(why, c->why) != 0)
            fail_msg("%s: reason got \"%s\", want \"%s\"", c->name, why ? why : "(null)", c->why);
        if (h.header_bytes != 0 || h.version != 0)
            fail_msg("%s: an invalid header left fields set", c->name);
    }
}

/* A refusal comes as early as the octets allow: one wrong octet is enough. */
static void test_refused_early(void **state)
{
    (void)state;
    struct proxy_header h;
    const char *why = NULL;
    assert_int_equal(proxy_header_parse((const unsigned char *)"E", 1, &h, &why), PROXY_INVALID);
    assert_int_equal(proxy_header_parse((const unsigned char *)"PROXx", 5, &h, &why),
                     PROXY_INVALID);
    assert_int_equal(proxy_header_parse(sig, 5, &h, &why), PROXY_NEED_MORE);
    unsigned char almost[5] = {0x0d, 0x0a, 0x0d, 0x0a, 0x01};
    assert_int_equal(proxy_header_parse(almost, 5, &h, &why), PROXY_INVALID);
    assert_int_equal(proxy_header_parse(NULL, 0, &h, &why), PROXY_NEED_MORE);
}

static void test_kind_names(void **state)
{
    (void)state;
    assert_string_equal(proxy_kind_name(PROXY_KIND_PROXIED), "proxied");
    assert_string_equal(proxy_kind_name(PROXY_KIND_LOCAL), "local");
    assert_string_equal(proxy_kind_name(PROXY_KIND_UNKNOWN), "unknown");
    assert_string_equal(proxy_kind_name(PROXY_KIND_UNSPEC), "unspec");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),      cmocka_unit_test(test_every_prefix_needs_more),
        cmocka_unit_test(test_invalid),    cmocka_unit_test(test_refused_early),
        cmocka_unit_test(test_kind_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
