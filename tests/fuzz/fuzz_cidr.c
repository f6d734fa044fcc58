/*
 * fuzz_cidr.c - libFuzzer target for common/pure/cidr.c.
 *
 * The input, NUL-terminated, goes to ip_parse and cidr_parse; on success the invariants are
 * checked: the formatted value parses back to the same value, a network has no host bits and
 * contains its own address, an IPv4-mapped result never survives as IPv6, window keys are
 * stable within a network. The first 16 input bytes are also used as a raw IPv6 socket address
 * to check that ip_from_sockaddr agrees with ip_parse of its own text. Any broken property
 * aborts, which libFuzzer reports as a crash.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/cidr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void check_ip(const struct ip_addr *ip)
{
    if (ip->family != AF_INET && ip->family != AF_INET6)
        abort();
    if (ip->family == AF_INET6 && memcmp(ip->bytes, v4_mapped_prefix, 12) == 0)
        abort(); /* mapped addresses must have been canonicalised */
    char text[INET6_ADDRSTRLEN];
    ip_format(ip, text, sizeof(text));
    struct ip_addr again;
    if (ip_parse(text, &again) != 0 || !ip_equal(ip, &again))
        abort();
}

static void fuzz_ip(const char *s, unsigned prefix_byte)
{
    struct ip_addr ip;
    if (ip_parse(s, &ip) != 0)
        return;
    check_ip(&ip);

    /* The window key of an address is the same for every address of its window. */
    unsigned prefix = prefix_byte % 130;
    char key[CIDR_STRLEN];
    ip_window_key(&ip, prefix, key, sizeof(key));
    if (ip.family == AF_INET6 && prefix < 128) {
        struct cidr net;
        if (cidr_parse(key, &net, NULL) != 0 || net.prefix != prefix || !cidr_contains(&net, &ip))
            abort();
        char key_of_net[CIDR_STRLEN];
        ip_window_key(&net.net, prefix, key_of_net, sizeof(key_of_net));
        if (strcmp(key, key_of_net) != 0)
            abort();
    } else {
        struct ip_addr from_key;
        if (ip_parse(key, &from_key) != 0 || !ip_equal(&ip, &from_key))
            abort();
    }
}

static void fuzz_cidr(const char *s)
{
    struct cidr c;
    const char *why = NULL;
    if (cidr_parse(s, &c, &why) != 0) {
        if (why == NULL || c.net.family != 0)
            abort();
        return;
    }
    check_ip(&c.net);
    unsigned bits = c.net.family == AF_INET ? 32 : 128;
    if (c.prefix > bits)
        abort();
    struct ip_addr masked = c.net;
    ip_mask(&masked, c.prefix);
    if (!ip_equal(&masked, &c.net))
        abort(); /* host bits must be clear */
    if (!cidr_contains(&c, &c.net))
        abort();

    char text[CIDR_STRLEN];
    cidr_format(&c, text, sizeof(text));
    struct cidr again;
    if (cidr_parse(text, &again, &why) != 0 || !ip_equal(&again.net, &c.net) ||
        again.prefix != c.prefix) {
        fprintf(stderr, "cidr round trip failed for \"%s\"\n", text);
        abort();
    }

    /* The last address of the network is inside; flipping the bit just above the prefix
     * moves an address outside. */
    struct ip_addr last = c.net;
    for (unsigned b = c.prefix; b < bits; b++)
        last.bytes[b / 8] |= (uint8_t)(0x80u >> (b % 8));
    if (!cidr_contains(&c, &last))
        abort();
    if (c.prefix > 0) {
        struct ip_addr outside = c.net;
        unsigned b = c.prefix - 1;
        outside.bytes[b / 8] ^= (uint8_t)(0x80u >> (b % 8));
        if (cidr_contains(&c, &outside))
            abort();
    }
}

static void fuzz_sockaddr(const uint8_t *data, size_t size)
{
    if (size < 16)
        return;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    memcpy(&sin6.sin6_addr, data, 16);
    memcpy(&ss, &sin6, sizeof(sin6));
    struct ip_addr ip;
    if (ip_from_sockaddr((const struct sockaddr *)&ss, &ip) != 0)
        abort();
    check_ip(&ip);
    bool mapped = memcmp(data, v4_mapped_prefix, 12) == 0;
    if (mapped != (ip.family == AF_INET))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Both parsers take C strings; longer inputs only exercise the same early refusals. */
    if (size > 256)
        return 0;
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    fuzz_ip(s, size > 0 ? data[0] : 0);
    fuzz_cidr(s);
    free(s);
    fuzz_sockaddr(data, size);
    return 0;
}
