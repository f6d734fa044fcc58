/*
 * test_ip_limit.c - unit tests for server/net/ip_limit.c, the per-client connection counts
 * behind max_connections_per_ip, with made-up addresses: an IPv6 client rotating addresses in
 * its /64 is one client, a neighbouring /64 is another, IPv4 addresses count one by one, entries
 * vanish at zero, and the table keeps its counts while it grows.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "server/net/ip_limit.h"

static struct ip_addr ip(const char *s)
{
    struct ip_addr a;
    assert_int_equal(ip_parse(s, &a), 0);
    return a;
}

static int setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

static void test_ipv6_counts_per_64(void **state)
{
    (void)state;
    struct ip_limit t;
    ip_limit_init(&t);
    struct ip_addr a = ip("2001:db8:1:2::1"), b = ip("2001:db8:1:2:ffff:1:2:3");
    struct ip_addr c = ip("2001:db8:1:2:dead:beef::9"), other = ip("2001:db8:1:3::1");
    assert_int_equal(ip_limit_inc(&t, &a), 0);
    assert_int_equal(ip_limit_inc(&t, &b), 0);
    /* Three addresses of one /64 are one client with two connections so far. */
    assert_int_equal(ip_limit_count(&t, &c), 2);
    assert_int_equal(ip_limit_entries(&t), 1);
    assert_int_equal(ip_limit_count(&t, &other), 0);
    assert_int_equal(ip_limit_inc(&t, &other), 0);
    assert_int_equal(ip_limit_entries(&t), 2);
    /* Closing from any address of the /64 gives back one. */
    ip_limit_dec(&t, &c);
    assert_int_equal(ip_limit_count(&t, &a), 1);
    ip_limit_dec(&t, &a);
    assert_int_equal(ip_limit_count(&t, &b), 0);
    assert_int_equal(ip_limit_entries(&t), 1);
    ip_limit_dec(&t, &other);
    assert_int_equal(ip_limit_entries(&t), 0);
    ip_limit_clear(&t);
}

static void test_ipv4_counts_per_address(void **state)
{
    (void)state;
    struct ip_limit t;
    ip_limit_init(&t);
    struct ip_addr a = ip("192.0.2.1"), b = ip("192.0.2.2"), mapped = ip("::ffff:192.0.2.1");
    assert_int_equal(ip_limit_inc(&t, &a), 0);
    assert_int_equal(ip_limit_inc(&t, &mapped), 0);
    assert_int_equal(ip_limit_count(&t, &a), 2);
    assert_int_equal(ip_limit_count(&t, &b), 0);
    /* A dec for a client never counted changes nothing. */
    ip_limit_dec(&t, &b);
    assert_int_equal(ip_limit_count(&t, &a), 2);
    ip_limit_clear(&t);
    assert_int_equal(ip_limit_count(&t, &a), 0);
}

/* Many clients: the table grows several times and every count survives the rehash. */
static void test_growth_keeps_counts(void **state)
{
    (void)state;
    struct ip_limit t;
    ip_limit_init(&t);
    char text[64];
    for (unsigned i = 0; i < 1000; i++) {
        snprintf(text, sizeof(text), "2001:db8:%x:%x::%x", i / 256, i % 256, i + 1);
        struct ip_addr a = ip(text);
        for (unsigned k = 0; k <= i % 3; k++)
            assert_int_equal(ip_limit_inc(&t, &a), 0);
    }
    assert_int_equal(ip_limit_entries(&t), 1000);
    for (unsigned i = 0; i < 1000; i++) {
        snprintf(text, sizeof(text), "2001:db8:%x:%x:1:2:3:4", i / 256, i % 256);
        struct ip_addr a = ip(text);
        if (ip_limit_count(&t, &a) != i % 3 + 1)
            fail_msg("client %u: got %u, want %u", i, ip_limit_count(&t, &a), i % 3 + 1);
    }
    ip_limit_clear(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv6_counts_per_64),
        cmocka_unit_test(test_ipv4_counts_per_address),
        cmocka_unit_test(test_growth_keeps_counts),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
