/*
 * test_cidr.c - unit tests for common/pure/cidr.c: address parsing and canonicalisation (text and
 * sockaddr, IPv4-mapped included), masking, network parsing with every rejection, containment
 * at the edges of a network, formatting round trips and relay-window keys.
 *
 * Every table row names itself in the failure message ("got X, want Y"), so a failing row can
 * be found without a debugger.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "common/pure/cidr.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void format_ip(const struct ip_addr *ip, char *buf, size_t len)
{
    ip_format(ip, buf, len);
}

static struct ip_addr must_ip(const char *s)
{
    struct ip_addr ip;
    if (ip_parse(s, &ip) != 0)
        fail_msg("test setup: ip_parse(\"%s\") failed", s);
    return ip;
}

static struct cidr must_cidr(const char *s)
{
    struct cidr c;
    const char *why = NULL;
    if (cidr_parse(s, &c, &why) != 0)
        fail_msg("test setup: cidr_parse(\"%s\") failed: %s", s, why);
    return c;
}

/* ---- ip_parse ---------------------------------------------------------------------------- */

struct ip_ok_case {
    const char *in;
    int family;
    const char *want;
};

static const struct ip_ok_case ip_ok_cases[] = {
    {"192.0.2.1", AF_INET, "192.0.2.1"},
    {"0.0.0.0", AF_INET, "0.0.0.0"},
    {"255.255.255.255", AF_INET, "255.255.255.255"},
    {"127.0.0.1", AF_INET, "127.0.0.1"},
    {"::", AF_INET6, "::"},
    {"::1", AF_INET6, "::1"},
    {"2001:DB8::1", AF_INET6, "2001:db8::1"},
    {"2001:0db8:0000:0000:0000:0000:0000:0001", AF_INET6, "2001:db8::1"},
    {"fe80::1:2:3:4", AF_INET6, "fe80::1:2:3:4"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", AF_INET6,
     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
    /* IPv4-mapped (RFC 4291 2.5.5.2) is the IPv4 address, in every spelling. */
    {"::ffff:192.0.2.1", AF_INET, "192.0.2.1"},
    {"::FFFF:192.0.2.1", AF_INET, "192.0.2.1"},
    {"::ffff:c000:201", AF_INET, "192.0.2.1"},
    {"0:0:0:0:0:ffff:c000:0201", AF_INET, "192.0.2.1"},
    {"::ffff:0.0.0.0", AF_INET, "0.0.0.0"},
    /* Other IPv4-embedding forms are different hosts and stay IPv6. */
    {"::192.0.2.1", AF_INET6, "::192.0.2.1"},
    {"64:ff9b::192.0.2.1", AF_INET6, "64:ff9b::c000:201"},
    {"::fffe:192.0.2.1", AF_INET6, "::fffe:c000:201"},
    {"1::ffff:192.0.2.1", AF_INET6, "1::ffff:c000:201"},
};

static void test_ip_parse_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(ip_ok_cases); i++) {
        const struct ip_ok_case *tc = &ip_ok_cases[i];
        struct ip_addr ip;
        if (ip_parse(tc->in, &ip) != 0)
            fail_msg("ip_parse(\"%s\"): got error, want %s", tc->in, tc->want);
        char text[INET6_ADDRSTRLEN];
        format_ip(&ip, text, sizeof(text));
        if (ip.family != tc->family || strcmp(text, tc->want) != 0)
            fail_msg("ip_parse(\"%s\"): got family %d \"%s\", want family %d \"%s\"", tc->in,
                     ip.family, text, tc->family, tc->want);
    }
}

static void test_ip_parse_bytes(void **state)
{
    (void)state;
    struct ip_addr ip = must_ip("::ffff:192.0.2.1");
    const uint8_t want[16] = {192, 0, 2, 1};
    assert_int_equal(ip.family, AF_INET);
    assert_memory_equal(ip.bytes, want, sizeof(want));

    ip = must_ip("2001:db8::ff");
    const uint8_t want6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff};
    assert_int_equal(ip.family, AF_INET6);
    assert_memory_equal(ip.bytes, want6, sizeof(want6));
}

static const char *const ip_bad_cases[] = {
    "",           "1.2.3",           "1.2.3.4.5",
    "256.0.0.1",  "1.2.3.256",       "01.2.3.4", /* no octal */
    "1.2.3.04",                                  /* no leading zeros */
    "0x7f.0.0.1",                                /* no hex */
    "127.1",                                     /* no short forms */
    "2130706433",                                /* no plain integers */
    " 1.2.3.4",   "1.2.3.4 ",        "1.2.3.4\n",
    "1.2.3.4/32", "localhost",       "example.org",
    "[::1]",      "fe80::1%eth0", /* no zone ids */
    "1::2::3",    "12345::",         "1:2:3:4:5:6:7:8:9",
    ":1::",       "::ffff:01.2.3.4", "::g",
};

static void test_ip_parse_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(ip_bad_cases); i++) {
        struct ip_addr ip;
        memset(&ip, 0xa5, sizeof(ip));
        if (ip_parse(ip_bad_cases[i], &ip) == 0)
            fail_msg("ip_parse(\"%s\"): got success, want error", ip_bad_cases[i]);
        assert_int_equal(ip.family, 0);
    }
    struct ip_addr ip;
    assert_int_equal(ip_parse(NULL, &ip), -1);
}

/* ---- ip_from_sockaddr -------------------------------------------------------------------- */

static void test_ip_from_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    char text[INET6_ADDRSTRLEN];
    struct ip_addr ip;

    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(25)};
    assert_int_equal(inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr), 1);
    memcpy(&ss, &sin, sizeof(sin));
    assert_int_equal(ip_from_sockaddr((struct sockaddr *)&ss, &ip), 0);
    format_ip(&ip, text, sizeof(text));
    assert_int_equal(ip.family, AF_INET);
    assert_string_equal(text, "192.0.2.7");
    assert_true(ip_equal(&ip, &(struct ip_addr){0}) == false);
    struct ip_addr parsed = must_ip("192.0.2.7");
    assert_true(ip_equal(&ip, &parsed));

    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(25)};
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", &sin6.sin6_addr), 1);
    memcpy(&ss, &sin6, sizeof(sin6));
    assert_int_equal(ip_from_sockaddr((struct sockaddr *)&ss, &ip), 0);
    format_ip(&ip, text, sizeof(text));
    assert_int_equal(ip.family, AF_INET6);
    assert_string_equal(text, "2001:db8::7");

    /* A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d: it must come out IPv4. */
    assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.7", &sin6.sin6_addr), 1);
    memcpy(&ss, &sin6, sizeof(sin6));
    assert_int_equal(ip_from_sockaddr((struct sockaddr *)&ss, &ip), 0);
    format_ip(&ip, text, sizeof(text));
    assert_int_equal(ip.family, AF_INET);
    assert_string_equal(text, "192.0.2.7");
    assert_true(ip_equal(&ip, &parsed));
    struct cidr net = must_cidr("192.0.2.0/24");
    assert_true(cidr_contains(&net, &ip));

    memset(&ss, 0, sizeof(ss));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(&ss, &sun, sizeof(sun));
    assert_int_equal(ip_from_sockaddr((struct sockaddr *)&ss, &ip), -1);
    assert_int_equal(ip.family, 0);
    assert_int_equal(ip_from_sockaddr(NULL, &ip), -1);
}

/* ---- ip_equal ---------------------------------------------------------------------------- */

struct equal_case {
    const char *a;
    const char *b;
    bool want;
};

static const struct equal_case equal_cases[] = {
    {"192.0.2.1", "192.0.2.1", true},
    {"192.0.2.1", "192.0.2.2", false},
    {"192.0.2.1", "::ffff:192.0.2.1", true},
    {"192.0.2.1", "::192.0.2.1", false},
    {"2001:db8::1", "2001:DB8:0:0::1", true},
    {"2001:db8::1", "2001:db8::2", false},
    {"0.0.0.0", "::", false},
    {"::", "::", true},
};

static void test_ip_equal(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(equal_cases); i++) {
        const struct equal_case *tc = &equal_cases[i];
        struct ip_addr a = must_ip(tc->a);
        struct ip_addr b = must_ip(tc->b);
        if (ip_equal(&a, &b) != tc->want || ip_equal(&b, &a) != tc->want)
            fail_msg("ip_equal(%s, %s): got %d, want %d", tc->a, tc->b, !tc->want, tc->want);
    }
    struct ip_addr zero_a = {0};
    struct ip_addr zero_b = {0};
    assert_false(ip_equal(&zero_a, &zero_b)); /* no family: never equal */
}

/* ---- ip_mask ----------------------------------------------------------------------------- */

struct mask_case {
    const char *in;
    unsigned prefix;
    const char *want;
};

static const struct mask_case mask_cases[] = {
    {"192.0.2.255", 32, "192.0.2.255"},
    {"192.0.2.255", 40, "192.0.2.255"},
    {"192.0.2.255", 24, "192.0.2.0"},
    {"192.0.3.255", 23, "192.0.2.0"},
    {"192.0.2.255", 25, "192.0.2.128"},
    {"192.0.2.255", 31, "192.0.2.254"},
    {"255.255.255.255", 1, "128.0.0.0"},
    {"255.255.255.255", 0, "0.0.0.0"},
    {"2001:db8:1:2:ffff:ffff:ffff:ffff", 128, "2001:db8:1:2:ffff:ffff:ffff:ffff"},
    {"2001:db8:1:2:ffff:ffff:ffff:ffff", 200, "2001:db8:1:2:ffff:ffff:ffff:ffff"},
    {"2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::"},
    {"2001:db8:1:2:ffff:ffff:ffff:ffff", 65, "2001:db8:1:2:8000::"},
    {"2001:db8:1:2:ffff:ffff:ffff:ffff", 127, "2001:db8:1:2:ffff:ffff:ffff:fffe"},
    {"2001:db8:ffff::", 36, "2001:db8:f000::"},
    {"ffff::1", 0, "::"},
};

static void test_ip_mask(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(mask_cases); i++) {
        const struct mask_case *tc = &mask_cases[i];
        struct ip_addr ip = must_ip(tc->in);
        ip_mask(&ip, tc->prefix);
        char text[INET6_ADDRSTRLEN];
        format_ip(&ip, text, sizeof(text));
        if (strcmp(text, tc->want) != 0)
            fail_msg("ip_mask(%s, %u): got %s, want %s", tc->in, tc->prefix, text, tc->want);
    }
}

/* ---- cidr_parse -------------------------------------------------------------------------- */

struct cidr_ok_case {
    const char *in;
    int family;
    unsigned prefix;
    const char *want;
};

static const struct cidr_ok_case cidr_ok_cases[] = {
    {"192.0.2.0/24", AF_INET, 24, "192.0.2.0/24"},
    {"192.0.2.7/24", AF_INET, 24, "192.0.2.0/24"}, /* host bits cleared */
    {"192.0.2.7", AF_INET, 32, "192.0.2.7/32"},    /* bare address: one host */
    {"192.0.2.7/32", AF_INET, 32, "192.0.2.7/32"},
    {"0.0.0.0/0", AF_INET, 0, "0.0.0.0/0"},
    {"10.1.2.3/0", AF_INET, 0, "0.0.0.0/0"},
    {"192.0.3.255/23", AF_INET, 23, "192.0.2.0/23"},
    {"10.255.255.255/9", AF_INET, 9, "10.128.0.0/9"},
    {"127.0.0.0/8", AF_INET, 8, "127.0.0.0/8"},
    {"2001:db8::/32", AF_INET6, 32, "2001:db8::/32"},
    {"2001:DB8:1:2:ffff::/65", AF_INET6, 65, "2001:db8:1:2:8000::/65"},
    {"2001:db8::1", AF_INET6, 128, "2001:db8::1/128"},
    {"2001:db8::1/128", AF_INET6, 128, "2001:db8::1/128"},
    {"2001:db8:abcd:1234::1/48", AF_INET6, 48, "2001:db8:abcd::/48"},
    {"::/0", AF_INET6, 0, "::/0"},
    {"::1/128", AF_INET6, 128, "::1/128"},
    {"fe80::/10", AF_INET6, 10, "fe80::/10"},
    /* IPv4-mapped networks are IPv4 networks, the prefix shortened by 96. */
    {"::ffff:192.0.2.0/120", AF_INET, 24, "192.0.2.0/24"},
    {"::ffff:192.0.2.1", AF_INET, 32, "192.0.2.1/32"},
    {"::ffff:192.0.2.77/127", AF_INET, 31, "192.0.2.76/31"},
    {"::ffff:0.0.0.0/96", AF_INET, 0, "0.0.0.0/0"},
    {"::ffff:c000:200/119", AF_INET, 23, "192.0.2.0/23"},
    /* IPv4-compatible stays IPv6. */
    {"::192.0.2.0/120", AF_INET6, 120, "::192.0.2.0/120"},
};

static void test_cidr_parse_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(cidr_ok_cases); i++) {
        const struct cidr_ok_case *tc = &cidr_ok_cases[i];
        struct cidr c;
        const char *why = "unset";
        if (cidr_parse(tc->in, &c, &why) != 0)
            fail_msg("cidr_parse(\"%s\"): got error \"%s\", want %s", tc->in, why, tc->want);
        char text[CIDR_STRLEN];
        cidr_format(&c, text, sizeof(text));
        if (c.net.family != tc->family || c.prefix != tc->prefix || strcmp(text, tc->want) != 0)
            fail_msg("cidr_parse(\"%s\"): got family %d /%u \"%s\", want family %d /%u \"%s\"",
                     tc->in, c.net.family, c.prefix, text, tc->family, tc->prefix, tc->want);

        /* Round trip: the formatted network parses to exactly the same value. */
        struct cidr again;
        if (cidr_parse(text, &again, &why) != 0)
            fail_msg("cidr_parse(\"%s\") (formatted from \"%s\"): got error \"%s\"", text, tc->in,
                     why);
        if (!ip_equal(&again.net, &c.net) || again.prefix != c.prefix)
            fail_msg("round trip of \"%s\" through \"%s\" changed the network", tc->in, text);
        /* The network contains its own first address. */
        if (!cidr_contains(&c, &c.net))
            fail_msg("cidr_contains(%s, its own network address): got false", text);
    }
}

struct cidr_bad_case {
    const char *in;
    const char *why; /* substring of the reason */
};

static const struct cidr_bad_case cidr_bad_cases[] = {
    {"", "empty"},
    {"/24", "address missing"},
    {"192.0.2.0/", "prefix missing"},
    {"2001:db8::/", "prefix missing"},
    {"192.0.2.0/+24", "not a decimal"},
    {"192.0.2.0/-1", "not a decimal"},
    {"192.0.2.0/2a", "not a decimal"},
    {"192.0.2.0/0x18", "not a decimal"},
    {"192.0.2.0/24x", "not a decimal"},
    {"192.0.2.0/24/1", "not a decimal"},
    {"192.0.2.0/24.0", "not a decimal"},
    {"192.0.2.0/024", "leading zero"},
    {"192.0.2.0/00", "leading zero"},
    {"192.0.2.0/33", "out of range"},
    {"192.0.2.0/99", "out of range"},
    {"192.0.2.0/1000", "out of range"},
    {"192.0.2.0/4294967320", "out of range"}, /* 2^32 + 24 must not wrap to 24 */
    {"2001:db8::/129", "out of range"},
    {"::ffff:192.0.2.0/129", "out of range"},
    {"::ffff:192.0.2.0/95", "at least 96"},
    {"::ffff:192.0.2.0/0", "at least 96"},
    {"192.0.2.0/24 ", "whitespace"},
    {" 192.0.2.0/24", "whitespace"},
    {"192.0.2.0 /24", "whitespace"},
    {"192.0.2.0/ 24", "whitespace"},
    {"192.0.2.0\t/24", "whitespace"},
    {"192.0.2.0/24\n", "whitespace"},
    {"192.0.2/24", "bad address"},
    {"192.0.2.0.0/24", "bad address"},
    {"256.0.2.0/24", "bad address"},
    {"example.org/24", "bad address"},
    {"example.org", "bad address"},
    {"2001:db8::g/32", "bad address"},
    {"fe80::1%eth0/64", "bad address"},
    {"[2001:db8::]/32", "bad address"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:1/24", "bad address"}, /* over-long */
};

static void test_cidr_parse_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(cidr_bad_cases); i++) {
        const struct cidr_bad_case *tc = &cidr_bad_cases[i];
        struct cidr c;
        memset(&c, 0xa5, sizeof(c));
        const char *why = NULL;
        if (cidr_parse(tc->in, &c, &why) == 0)
            fail_msg("cidr_parse(\"%s\"): got success, want error \"%s\"", tc->in, tc->why);
        if (why == NULL || strstr(why, tc->why) == NULL)
            fail_msg("cidr_parse(\"%s\"): got reason \"%s\", want one with \"%s\"", tc->in,
                     why ? why : "(null)", tc->why);
        if (c.net.family != 0 || c.prefix != 0)
            fail_msg("cidr_parse(\"%s\"): output not zeroed on error", tc->in);
    }
    struct cidr c;
    assert_int_equal(cidr_parse(NULL, &c, NULL), -1); /* why_out may be NULL */
    assert_int_equal(cidr_parse("nonsense", &c, NULL), -1);
}

/* ---- cidr_contains ----------------------------------------------------------------------- */

struct contains_case {
    const char *net;
    const char *ip;
    bool want;
};

static const struct contains_case contains_cases[] = {
    {"192.0.2.0/24", "192.0.2.0", true},    /* first */
    {"192.0.2.0/24", "192.0.2.255", true},  /* last */
    {"192.0.2.0/24", "192.0.3.0", false},   /* one past */
    {"192.0.2.0/24", "192.0.1.255", false}, /* one before */
    {"192.0.2.0/23", "192.0.2.0", true},
    {"192.0.2.0/23", "192.0.3.255", true},
    {"192.0.2.0/23", "192.0.4.0", false},
    {"192.0.2.0/23", "192.0.1.255", false},
    {"192.0.2.128/25", "192.0.2.127", false},
    {"192.0.2.128/25", "192.0.2.128", true},
    {"192.0.2.7/32", "192.0.2.7", true},
    {"192.0.2.7/32", "192.0.2.8", false},
    {"192.0.2.7/32", "192.0.2.6", false},
    {"192.0.2.7/31", "192.0.2.6", true},
    {"0.0.0.0/0", "0.0.0.0", true},
    {"0.0.0.0/0", "255.255.255.255", true},
    {"0.0.0.0/0", "::1", false}, /* families never mix */
    {"0.0.0.0/0", "2001:db8::1", false},
    {"127.0.0.0/8", "127.255.255.255", true},
    {"127.0.0.0/8", "128.0.0.0", false},
    {"192.0.2.0/24", "::ffff:192.0.2.5", true}, /* mapped client is IPv4 */
    {"192.0.2.0/24", "::ffff:192.0.3.5", false},
    {"192.0.2.0/24", "::192.0.2.5", false},      /* IPv4-compatible is IPv6 */
    {"::ffff:192.0.2.0/120", "192.0.2.9", true}, /* mapped network is IPv4 */
    {"::ffff:192.0.2.0/120", "::ffff:192.0.2.9", true},
    {"::ffff:192.0.2.0/120", "192.0.3.9", false},
    {"2001:db8::/32", "2001:db8::", true},
    {"2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true},
    {"2001:db8::/32", "2001:db9::", false},
    {"2001:db8::/32", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", false},
    {"2001:db8:1:2::/65", "2001:db8:1:2::", true},
    {"2001:db8:1:2::/65", "2001:db8:1:2:7fff:ffff:ffff:ffff", true},
    {"2001:db8:1:2::/65", "2001:db8:1:2:8000::", false},
    {"2001:db8:1:2::/65", "2001:db8:1:1:ffff:ffff:ffff:ffff", false},
    {"2001:db8::1/128", "2001:db8::1", true},
    {"2001:db8::1/128", "2001:db8::2", false},
    {"2001:db8::1/128", "2001:db8::", false},
    {"::/0", "2001:db8::1", true},
    {"::/0", "::", true},
    {"::/0", "192.0.2.1", false},        /* ::/0 is all of IPv6, not all addresses */
    {"::/0", "::ffff:192.0.2.1", false}, /* ...and a mapped client is IPv4 */
    {"::/96", "::192.0.2.1", true},
    {"::/96", "192.0.2.1", false},
};

static void test_cidr_contains(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(contains_cases); i++) {
        const struct contains_case *tc = &contains_cases[i];
        struct cidr c = must_cidr(tc->net);
        struct ip_addr ip = must_ip(tc->ip);
        bool got = cidr_contains(&c, &ip);
        if (got != tc->want)
            fail_msg("cidr_contains(%s, %s): got %d, want %d", tc->net, tc->ip, got, tc->want);
    }
}

static void test_cidr_contains_hand_built(void **state)
{
    (void)state;
    /* A struct built by hand with host bits set, or with a silly prefix, must not misbehave. */
    struct cidr c = {.net = must_ip("192.0.2.77"), .prefix = 24};
    struct ip_addr in = must_ip("192.0.2.1");
    struct ip_addr out = must_ip("192.0.3.1");
    assert_true(cidr_contains(&c, &in));
    assert_false(cidr_contains(&c, &out));
    c.prefix = 33;
    assert_false(cidr_contains(&c, &in));
    struct cidr empty = {0};
    assert_false(cidr_contains(&empty, &in));
}

/* ---- formatting -------------------------------------------------------------------------- */

static void test_format_limits(void **state)
{
    (void)state;
    char text[CIDR_STRLEN];
    struct cidr c = must_cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
    cidr_format(&c, text, sizeof(text));
    assert_string_equal(text, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");

    /* A dotted IPv4 tail outside the mapped range is written as hex groups again. */
    c = must_cidr("1:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128");
    cidr_format(&c, text, sizeof(text));
    assert_string_equal(text, "1:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");

    /* A short buffer truncates and stays terminated. */
    char small[5];
    memset(small, 'x', sizeof(small));
    struct ip_addr ip = must_ip("192.0.2.1");
    ip_format(&ip, small, sizeof(small));
    assert_string_equal(small, "192.");
    cidr_format(&c, small, sizeof(small));
    assert_string_equal(small, "1:ff");

    struct ip_addr bogus = {0};
    ip_format(&bogus, text, sizeof(text));
    assert_string_equal(text, "?");
}

/* ---- ip_window_key ----------------------------------------------------------------------- */

struct window_case {
    const char *ip;
    unsigned prefix;
    const char *want;
};

static const struct window_case window_cases[] = {
    {"192.0.2.7", 64, "192.0.2.7"},
    {"192.0.2.7", 128, "192.0.2.7"},
    {"192.0.2.7", 0, "192.0.2.7"},         /* the IPv6 prefix never applies to IPv4 */
    {"::ffff:192.0.2.7", 64, "192.0.2.7"}, /* mapped client: its IPv4 key */
    {"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
    {"2001:db8:1:2:ffff:4:5:6", 64, "2001:db8:1:2::/64"},
    {"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"},
    {"2001:db8:1:2:3:4:5:6", 200, "2001:db8:1:2:3:4:5:6"},
    {"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
    {"2001:db8:1:2ff:3:4:5:6", 56, "2001:db8:1:200::/56"},
    {"2001:db8:1:2:ffff:4:5:6", 65, "2001:db8:1:2:8000::/65"},
    {"2001:db8:1:2:3:4:5:6", 127, "2001:db8:1:2:3:4:5:6/127"},
    {"2001:db8:1:2:3:4:5:7", 127, "2001:db8:1:2:3:4:5:6/127"},
    {"2001:db8::1", 0, "::/0"},
};

static void test_ip_window_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(window_cases); i++) {
        const struct window_case *tc = &window_cases[i];
        struct ip_addr ip = must_ip(tc->ip);
        char key[CIDR_STRLEN];
        ip_window_key(&ip, tc->prefix, key, sizeof(key));
        if (strcmp(key, tc->want) != 0)
            fail_msg("ip_window_key(%s, %u): got %s, want %s", tc->ip, tc->prefix, key, tc->want);
    }
    /* Two addresses of one /64 share a key; the key is also a valid network. */
    struct ip_addr a = must_ip("2001:db8:1:2::a");
    struct ip_addr b = must_ip("2001:db8:1:2:ffff:ffff:ffff:ffff");
    char ka[CIDR_STRLEN];
    char kb[CIDR_STRLEN];
    ip_window_key(&a, 64, ka, sizeof(ka));
    ip_window_key(&b, 64, kb, sizeof(kb));
    assert_string_equal(ka, kb);
    struct cidr net = must_cidr(ka);
    assert_true(cidr_contains(&net, &a));
    assert_true(cidr_contains(&net, &b));
}

/* Per-client limits: an IPv4 address is its own key, an IPv6 address counts as its /64. */
static void test_ip_client_key(void **state)
{
    (void)state;
    static const struct {
        const char *ip, *want;
    } cases[] = {
        {"192.0.2.7", "192.0.2.7"},
        {"::ffff:192.0.2.7", "192.0.2.7"},
        {"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
        {"2001:db8:1:2::1", "2001:db8:1:2::"},
        {"2001:db8:1:3::1", "2001:db8:1:3::"},
        {"::1", "::"},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        struct ip_addr ip = must_ip(cases[i].ip);
        struct ip_addr key = ip_client_key(&ip);
        char got[CIDR_STRLEN];
        format_ip(&key, got, sizeof(got));
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("ip_client_key(%s): got %s, want %s", cases[i].ip, got, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip_parse_ok),   cmocka_unit_test(test_ip_parse_bytes),
        cmocka_unit_test(test_ip_parse_bad),  cmocka_unit_test(test_ip_from_sockaddr),
        cmocka_unit_test(test_ip_equal),      cmocka_unit_test(test_ip_mask),
        cmocka_unit_test(test_cidr_parse_ok), cmocka_unit_test(test_cidr_parse_bad),
        cmocka_unit_test(test_cidr_contains), cmocka_unit_test(test_cidr_contains_hand_built),
        cmocka_unit_test(test_format_limits), cmocka_unit_test(test_ip_window_key),
        cmocka_unit_test(test_ip_client_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
