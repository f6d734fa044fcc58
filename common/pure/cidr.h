/*
 * cidr.h - IP addresses and networks: parsing, formatting, containment, window keys.
 *
 * This is what the relay rules stand on (trusted networks, POP-before-SMTP windows), so every
 * address goes through one canonical form: an IPv4 address is always family AF_INET, including
 * one written or received as IPv4-mapped IPv6 ("::ffff:192.0.2.1", RFC 4291 2.5.5.2). That way
 * an IPv4 client on a dual-stack socket matches an IPv4 network, and two spellings of one client
 * never give two different window keys. Other IPv6 forms that embed IPv4 (IPv4-compatible
 * "::192.0.2.1", NAT64 "64:ff9b::/96") are plain IPv6 here: they are not the same host.
 *
 * Parsing is numeric only (inet_pton): no host names, no zone ids ("fe80::1%eth0"), no
 * whitespace, no legacy IPv4 forms (octal "010.0.0.1", short "10.1"). The module does no I/O
 * and keeps no state; every function is safe from any thread.
 *
 * It does not decide policy: which networks are trusted and how long a window lasts belong to
 * the configuration, storage/ and common/pure/relay_policy.c.
 */
#ifndef POSTERN_CIDR_H
#define POSTERN_CIDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* INET6_ADDRSTRLEN (46, with the NUL) plus "/128". */
#define CIDR_STRLEN (INET6_ADDRSTRLEN + 4)

struct ip_addr {
    int family;        /* AF_INET or AF_INET6 */
    uint8_t bytes[16]; /* network order; IPv4 in bytes[0..3], bytes[4..15] zero */
};

struct cidr {
    struct ip_addr net; /* host bits always zero */
    unsigned prefix;    /* 0..32 for AF_INET, 0..128 for AF_INET6 */
};

/*
 * Parses a numeric IPv4 or IPv6 address (the whole string, nothing else). IPv4-mapped IPv6 is
 * canonicalised to IPv4. Returns 0, or -1 (and *out is zeroed) when s is not an address.
 */
int ip_parse(const char *s, struct ip_addr *out);

/*
 * Takes the address out of an AF_INET or AF_INET6 socket address (the port is ignored), with
 * IPv4-mapped IPv6 canonicalised to IPv4. Returns 0, or -1 for any other family or NULL.
 */
int ip_from_sockaddr(const struct sockaddr *sa, struct ip_addr *out);

/*
 * Writes the canonical text (inet_ntop: "192.0.2.1", "2001:db8::1"). len should be at least
 * INET6_ADDRSTRLEN; a shorter buffer gets a truncated, still NUL-terminated string. An address
 * of an unknown family is written as "?".
 */
void ip_format(const struct ip_addr *ip, char *buf, size_t len);

/* True when both have the same family and the same address bytes for that family. */
bool ip_equal(const struct ip_addr *a, const struct ip_addr *b);

/* Zeroes every bit past the first prefix bits. A prefix at or past the family's width is a no-op.
 */
void ip_mask(struct ip_addr *ip, unsigned prefix);

/*
 * Parses "ADDRESS/PREFIX" or a bare ADDRESS (one host: /32 or /128).
 *   - "::ffff:192.0.2.0/120" becomes 192.0.2.0/24; an IPv4-mapped address with a prefix below
 *     96 is refused, since such a network would reach outside the mapped range while never
 *     matching the IPv4 clients it seems to name.
 *   - Host bits set ("192.0.2.7/24") are cleared and the network is accepted (192.0.2.0/24).
 *   - Refused: empty input, a bad address, "/" with no prefix, a prefix that is not plain
 *     decimal digits (sign, space, hex, leading zero as in "/024"), a prefix over 32 (IPv4) or
 *     128 (IPv6), whitespace anywhere, trailing junk.
 * Returns 0, or -1 with *why_out (if why_out is not NULL) set to a short static reason such as
 * "prefix out of range"; on error *out is zeroed.
 */
int cidr_parse(const char *s, struct cidr *out, const char **why_out);

/* "192.0.2.0/24", "2001:db8::/32"; len should be at least CIDR_STRLEN (truncates otherwise). */
void cidr_format(const struct cidr *c, char *buf, size_t len);

/*
 * True when ip lies inside c. The families must be equal: an IPv4 client never matches an IPv6
 * network (not even ::/0) and the reverse; a client that connected as ::ffff:a.b.c.d is IPv4
 * already, because ip_parse and ip_from_sockaddr canonicalise it.
 */
bool cidr_contains(const struct cidr *c, const struct ip_addr *ip);

/*
 * The key of a POP-before-SMTP relay window, as text. IPv4: the address ("192.0.2.7"). IPv6:
 * the network of ipv6_prefix bits around the address ("2001:db8:1:2::/64"); with a prefix of
 * 128 or more just the address ("2001:db8::7"), since a /128 is one host. IPv6 clients usually
 * own a whole /64 and may change the low bits between the POP3 login and the SMTP session.
 * len should be at least CIDR_STRLEN. An address of an unknown family gives "?".
 */
void ip_window_key(const struct ip_addr *ip, unsigned ipv6_prefix, char *buf, size_t len);

/*
 * IPv6 clients are usually given a whole /64 (RFC 4291 2.5.4, RFC 7421) and may use any address
 * in it, changing it at will (RFC 8981), so a limit that counts clients counts an IPv6 /64 as one.
 */
#define IP_CLIENT_IPV6_PREFIX 64

/*
 * The key under which a client is counted by per-client limits: an IPv4 address as it is, an
 * IPv6 address's /64 network (IP_CLIENT_IPV6_PREFIX), so rotating the low 64 bits gains nothing.
 * An address of an unknown family is returned unchanged.
 */
struct ip_addr ip_client_key(const struct ip_addr *ip);

#endif
