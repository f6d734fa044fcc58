/*
 * cidr.c - see cidr.h. Pure functions over fixed-size values: no allocation, no I/O.
 *
 * Canonicalisation happens at the two doors where addresses come in (ip_parse and
 * ip_from_sockaddr, and cidr_parse through ip_parse's helper), so everything past them can
 * compare families and bytes directly.
 */
#include "common/pure/cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* Octets 0..9 zero, 10..11 0xff: RFC 4291 2.5.5.2 IPv4-mapped IPv6 address. */
static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

#define V4_MAPPED_PREFIX_BITS 96

static unsigned family_bits(int family)
{
    if (family == AF_INET)
        return 32;
    if (family == AF_INET6)
        return 128;
    return 0;
}

static bool is_v4_mapped(const struct ip_addr *ip)
{
    return ip->family == AF_INET6 &&
           memcmp(ip->bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

/* Turns an IPv4-mapped IPv6 address into the IPv4 address it stands for. */
static void canonicalise(struct ip_addr *ip)
{
    if (!is_v4_mapped(ip))
        return;
    uint8_t v4[4];
    memcpy(v4, ip->bytes + 12, sizeof(v4));
    memset(ip, 0, sizeof(*ip));
    ip->family = AF_INET;
    memcpy(ip->bytes, v4, sizeof(v4));
}

/* Parses without canonicalising, so cidr_parse can adjust the prefix of a mapped network. */
static int parse_raw(const char *s, struct ip_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL || *s == '\0')
        return -1;
    /* inet_pton wants the whole string to be the address, which rules out junk and spaces. */
    int family = strchr(s, ':') != NULL ? AF_INET6 : AF_INET;
    if (inet_pton(family, s, out->bytes) != 1) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    out->family = family;
    return 0;
}

int ip_parse(const char *s, struct ip_addr *out)
{
    if (parse_raw(s, out) != 0)
        return -1;
    canonicalise(out);
    return 0;
}

int ip_from_sockaddr(const struct sockaddr *sa, struct ip_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (sa == NULL)
        return -1;
    /* memcpy instead of casts: the caller's storage need not be aligned for the larger type. */
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, sa, sizeof(sin));
        out->family = AF_INET;
        memcpy(out->bytes, &sin.sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, sa, sizeof(sin6));
        out->family = AF_INET6;
        memcpy(out->bytes, &sin6.sin6_addr, 16);
        canonicalise(out);
        return 0;
    }
    return -1;
}

void ip_format(const struct ip_addr *ip, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return;
    char text[INET6_ADDRSTRLEN];
    if (family_bits(ip->family) == 0 ||
        inet_ntop(ip->family, ip->bytes, text, sizeof(text)) == NULL) {
        snprintf(buf, len, "?");
        return;
    }
    snprintf(buf, len, "%s", text);
}

bool ip_equal(const struct ip_addr *a, const struct ip_addr *b)
{
    unsigned bits = family_bits(a->family);
    if (bits == 0 || a->family != b->family)
        return false;
    return memcmp(a->bytes, b->bytes, bits / 8) == 0;
}

void ip_mask(struct ip_addr *ip, unsigned prefix)
{
    unsigned bits = family_bits(ip->family);
    if (prefix >= bits)
        return;
    size_t full = prefix / 8;
    unsigned rest = prefix % 8;
    if (rest != 0) {
        ip->bytes[full] &= (uint8_t)(0xffu << (8 - rest));
        full++;
    }
    memset(ip->bytes + full, 0, sizeof(ip->bytes) - full);
}

struct ip_addr ip_client_key(const struct ip_addr *ip)
{
    struct ip_addr key = *ip;
    if (key.family == AF_INET6)
        ip_mask(&key, IP_CLIENT_IPV6_PREFIX);
    return key;
}

/* Only "0" or [1-9][0-9]{0,2}: no sign, no spaces, no leading zeros, nothing after. */
static int parse_prefix(const char *s, unsigned *out, const char **why)
{
    if (*s == '\0') {
        *why = "prefix missing after '/'";
        return -1;
    }
    unsigned value = 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if (s[n] < '0' || s[n] > '9') {
            *why = "prefix is not a decimal number";
            return -1;
        }
        if (n == 3) {
            *why = "prefix out of range";
            return -1;
        }
        value = value * 10 + (unsigned)(s[n] - '0');
    }
    if (n > 1 && s[0] == '0') {
        *why = "prefix has a leading zero";
        return -1;
    }
    *out = value;
    return 0;
}

int cidr_parse(const char *s, struct cidr *out, const char **why_out)
{
    const char *why_local = NULL;
    const char **why = why_out != NULL ? why_out : &why_local;
    memset(out, 0, sizeof(*out));
    if (s == NULL || *s == '\0') {
        *why = "empty network";
        return -1;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '\v' || *p == '\f') {
            *why = "whitespace in network";
            return -1;
        }
    }

    /* The longest address text is INET6_ADDRSTRLEN - 1 octets; anything longer is not one. */
    char addr_text[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t addr_len = slash != NULL ? (size_t)(slash - s) : strlen(s);
    if (addr_len == 0) {
        *why = "address missing before '/'";
        return -1;
    }
    if (addr_len >= sizeof(addr_text)) {
        *why = "bad address";
        return -1;
    }
    memcpy(addr_text, s, addr_len);
    addr_text[addr_len] = '\0';

    struct ip_addr addr;
    if (parse_raw(addr_text, &addr) != 0) {
        *why = "bad address";
        return -1;
    }
    unsigned bits = family_bits(addr.family);
    unsigned prefix = bits;
    if (slash != NULL) {
        if (parse_prefix(slash + 1, &prefix, why) != 0)
            return -1;
        if (prefix > bits) {
            *why = "prefix out of range";
            return -1;
        }
    }

    if (is_v4_mapped(&addr)) {
        if (prefix < V4_MAPPED_PREFIX_BITS) {
            *why = "IPv4-mapped network needs a prefix of at least 96";
            return -1;
        }
        canonicalise(&addr);
        prefix -= V4_MAPPED_PREFIX_BITS;
    }
    ip_mask(&addr, prefix);
    out->net = addr;
    out->prefix = prefix;
    return 0;
}

void cidr_format(const struct cidr *c, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return;
    char text[INET6_ADDRSTRLEN];
    ip_format(&c->net, text, sizeof(text));
    snprintf(buf, len, "%s/%u", text, c->prefix);
}

bool cidr_contains(const struct cidr *c, const struct ip_addr *ip)
{
    unsigned bits = family_bits(c->net.family);
    if (bits == 0 || ip->family != c->net.family || c->prefix > bits)
        return false;
    struct ip_addr masked = *ip;
    ip_mask(&masked, c->prefix);
    struct ip_addr net = c->net;
    /* Mask the network too, so a hand-built struct cidr with host bits set still works. */
    ip_mask(&net, c->prefix);
    return ip_equal(&masked, &net);
}

void ip_window_key(const struct ip_addr *ip, unsigned ipv6_prefix, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return;
    if (ip->family != AF_INET6 || ipv6_prefix >= 128) {
        ip_format(ip, buf, len);
        return;
    }
    struct cidr net = {.net = *ip, .prefix = ipv6_prefix};
    ip_mask(&net.net, ipv6_prefix);
    cidr_format(&net, buf, len);
}
