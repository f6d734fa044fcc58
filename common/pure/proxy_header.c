/*
 * proxy_header.c - parses the PROXY protocol header, versions 1 and 2; see proxy_header.h for
 * the contract. Section numbers below are those of HAProxy's doc/proxy-protocol.txt.
 *
 * Strictness: the specification says any sequence that does not exactly match must abort the
 * connection (2.1), so nothing is guessed: single spaces only, no leading zeros in ports or
 * IPv4 octets (no octal confusion), a CRLF and never a bare CR or LF, the version 2 version
 * nibble 2 and command 0 or 1 only, family and transport nibbles within their registries.
 */
#include "common/pure/proxy_header.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>

/* 2.2: the twelve octets that open a version 2 header (a NUL at the fifth). */
static const unsigned char v2_signature[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                               0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_prefix[] = "PROXY ";
#define V1_PREFIX_BYTES (sizeof(v1_prefix) - 1)

/* 2.2: the low nibble of the 13th octet. */
enum { V2_CMD_LOCAL = 0x0, V2_CMD_PROXY = 0x1 };
/* 2.2: the 14th octet, family in the high nibble, transport in the low one. */
enum { V2_FAM_UNSPEC = 0x0, V2_FAM_INET = 0x1, V2_FAM_INET6 = 0x2, V2_FAM_UNIX = 0x3 };
enum { V2_TRANSPORT_UNSPEC = 0x0, V2_TRANSPORT_STREAM = 0x1, V2_TRANSPORT_DGRAM = 0x2 };
/* 2.2: the address block of each family (two addresses, then two ports for IP). */
#define V2_INET_ADDR_BYTES  12
#define V2_INET6_ADDR_BYTES 36
#define V2_UNIX_ADDR_BYTES  216

static enum proxy_status invalid(const char **why_out, const char *why)
{
    if (why_out != NULL)
        *why_out = why;
    return PROXY_INVALID;
}

const char *proxy_kind_name(enum proxy_kind kind)
{
    switch (kind) {
    case PROXY_KIND_PROXIED:
        return "proxied";
    case PROXY_KIND_LOCAL:
        return "local";
    case PROXY_KIND_UNKNOWN:
        return "unknown";
    case PROXY_KIND_UNSPEC:
        return "unspec";
    }
    return "?";
}

/* ---- version 1 ----------------------------------------------------------------------------- */

/* A port: 1 to 5 decimal digits, no leading zero (a lone "0" is allowed), at most 65535. */
static bool v1_port(const char *s, size_t len, uint16_t *out)
{
    if (len == 0 || len > 5 || (len > 1 && s[0] == '0'))
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/*
 * An address of the announced family. inet_pton(AF_INET) takes exactly four decimal octets
 * without leading zeros, which is the form 2.1 asks; an IPv6 text must hold a colon, so a TCP6
 * line cannot carry an IPv4 address nor the reverse.
 */
static bool v1_addr(const char *s, size_t len, int family, struct ip_addr *out)
{
    char text[INET6_ADDRSTRLEN];
    unsigned char raw[sizeof(struct in6_addr)];
    if (len == 0 || len >= sizeof(text))
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    if (inet_pton(family, text, raw) != 1)
        return false;
    return ip_parse(text, out) == 0;
}

/* The line between "PROXY " and the CRLF (len octets at s), split at single spaces. */
static enum proxy_status v1_fields(const char *s, size_t len, struct proxy_header *out,
                                   const char **why_out)
{
    /* 2.1: after UNKNOWN the receiver ignores anything up to the CRLF. */
    if (len >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (len == 7 || s[7] == ' ')) {
        out->kind = PROXY_KIND_UNKNOWN;
        return PROXY_DONE;
    }
    const char *field[5];
    size_t flen[5];
    size_t count = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != ' ')
            continue;
        if (count == 5)
            return invalid(why_out, "v1 too many fields");
        field[count] = s + start;
        flen[count] = i - start;
        count++;
        start = i + 1;
    }
    int family;
    if (flen[0] == 4 && memcmp(field[0], "TCP4", 4) == 0)
        family = AF_INET;
    else if (flen[0] == 4 && memcmp(field[0], "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return invalid(why_out, "v1 bad protocol");
    if (count != 5)
        return invalid(why_out, "v1 wrong number of fields");
    for (size_t i = 1; i < count; i++) {
        if (flen[i] == 0)
            return invalid(why_out, "v1 empty field");
    }
    if (!v1_addr(field[1], flen[1], family, &out->src) ||
        !v1_addr(field[2], flen[2], family, &out->dst))
        return invalid(why_out, "v1 bad address");
    if (!v1_port(field[3], flen[3], &out->src_port) || !v1_port(field[4], flen[4], &out->dst_port))
        return invalid(why_out, "v1 bad port");
    out->kind = PROXY_KIND_PROXIED;
    return PROXY_DONE;
}

static enum proxy_status parse_v1(const unsigned char *p, size_t n, struct proxy_header *out,
                                  const char **why_out)
{
    size_t have = n < V1_PREFIX_BYTES ? n : V1_PREFIX_BYTES;
    if (memcmp(p, v1_prefix, have) != 0)
        return invalid(why_out, "not a PROXY header");
    if (n < V1_PREFIX_BYTES)
        return PROXY_NEED_MORE;
    size_t limit = n < PROXY_V1_MAX_BYTES ? n : PROXY_V1_MAX_BYTES;
    for (size_t i = V1_PREFIX_BYTES; i < limit; i++) {
        unsigned char ch = p[i];
        if (ch == '\r') {
            /* The LF too must be within the first 107 octets. */
            if (i + 1 >= PROXY_V1_MAX_BYTES)
                return invalid(why_out, "v1 no CRLF within 107 bytes");
            if (i + 1 == n)
                return PROXY_NEED_MORE;
            if (p[i + 1] != '\n')
                return invalid(why_out, "v1 bare CR");
            out->version = 1;
            out->header_bytes = i + 2;
            return v1_fields((const char *)p + V1_PREFIX_BYTES, i - V1_PREFIX_BYTES, out, why_out);
        }
        /* 2.1: US-ASCII text, and a lone LF never ends the line. */
        if (ch == '\n')
            return invalid(why_out, "v1 bare LF");
        if (ch < 0x20 || ch > 0x7e)
            return invalid(why_out, "v1 not printable ASCII");
    }
    if (n >= PROXY_V1_MAX_BYTES)
        return invalid(why_out, "v1 no CRLF within 107 bytes");
    return PROXY_NEED_MORE;
}

/* ---- version 2 ----------------------------------------------------------------------------- */

static uint16_t be16(const unsigned char *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

/* The source and destination of a TCP header, from the address block at a. */
static void v2_inet(const unsigned char *a, int family, struct proxy_header *out)
{
    if (family == AF_INET) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        memcpy(&sin.sin_addr, a, 4);
        (void)ip_from_sockaddr((const struct sockaddr *)&sin, &out->src);
        memcpy(&sin.sin_addr, a + 4, 4);
        (void)ip_from_sockaddr((const struct sockaddr *)&sin, &out->dst);
        out->src_port = be16(a + 8);
        out->dst_port = be16(a + 10);
        return;
    }
    /* Through a socket address, so an IPv4-mapped source becomes IPv4 as it would if the
     * client had connected to us directly on a dual-stack socket. */
    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    memcpy(&sin6.sin6_addr, a, 16);
    (void)ip_from_sockaddr((const struct sockaddr *)&sin6, &out->src);
    memcpy(&sin6.sin6_addr, a + 16, 16);
    (void)ip_from_sockaddr((const struct sockaddr *)&sin6, &out->dst);
    out->src_port = be16(a + 32);
    out->dst_port = be16(a + 34);
}

static enum proxy_status parse_v2(const unsigned char *p, size_t n, struct proxy_header *out,
                                  const char **why_out)
{
    size_t have = n < sizeof(v2_signature) ? n : sizeof(v2_signature);
    if (memcmp(p, v2_signature, have) != 0)
        return invalid(why_out, "not a PROXY header");
    /* Each octet of the fixed part is judged as soon as it arrives. */
    if (n > 12) {
        if (p[12] >> 4 != 2)
            return invalid(why_out, "v2 bad version");
        if ((p[12] & 0x0f) != V2_CMD_LOCAL && (p[12] & 0x0f) != V2_CMD_PROXY)
            return invalid(why_out, "v2 bad command");
    }
    bool local = n > 12 && (p[12] & 0x0f) == V2_CMD_LOCAL;
    /* 2.2: with LOCAL the family is ignored, so only PROXY checks it. */
    if (n > 13 && !local) {
        if (p[13] >> 4 > V2_FAM_UNIX)
            return invalid(why_out, "v2 bad family");
        if ((p[13] & 0x0f) > V2_TRANSPORT_DGRAM)
            return invalid(why_out, "v2 bad transport");
    }
    if (n < PROXY_V2_FIXED_BYTES)
        return PROXY_NEED_MORE;
    size_t len = be16(p + 14);
    if (len > PROXY_V2_MAX_LEN_BYTES)
        return invalid(why_out, "v2 header too long");
    unsigned family = p[13] >> 4;
    unsigned transport = p[13] & 0x0f;
    size_t need = 0;
    if (!local && transport != V2_TRANSPORT_UNSPEC) {
        if (family == V2_FAM_INET)
            need = V2_INET_ADDR_BYTES;
        else if (family == V2_FAM_INET6)
            need = V2_INET6_ADDR_BYTES;
        else if (family == V2_FAM_UNIX)
            need = V2_UNIX_ADDR_BYTES;
    }
    /* The length covers the addresses and any TLVs after them; less than the addresses is a
     * lie about the family, and the octets after it would be misread as the protocol's. */
    if (len < need)
        return invalid(why_out, "v2 length shorter than its addresses");
    if (n < PROXY_V2_FIXED_BYTES + len)
        return PROXY_NEED_MORE;
    out->version = 2;
    out->header_bytes = PROXY_V2_FIXED_BYTES + len;
    if (local) {
        out->kind = PROXY_KIND_LOCAL;
        return PROXY_DONE;
    }
    if (transport == V2_TRANSPORT_STREAM && (family == V2_FAM_INET || family == V2_FAM_INET6)) {
        v2_inet(p + PROXY_V2_FIXED_BYTES, family == V2_FAM_INET ? AF_INET : AF_INET6, out);
        out->kind = PROXY_KIND_PROXIED;
        return PROXY_DONE;
    }
    /* 2.2: a receiver need not support the other combinations if it falls back to UNSPEC. */
    out->kind = PROXY_KIND_UNSPEC;
    return PROXY_DONE;
}

enum proxy_status proxy_header_parse(const unsigned char *p, size_t n, struct proxy_header *out,
                                     const char **why_out)
{
    memset(out, 0, sizeof(*out));
    if (n == 0)
        return PROXY_NEED_MORE;
    enum proxy_status st;
    if (p[0] == v2_signature[0])
        st = parse_v2(p, n, out, why_out);
    else if (p[0] == (unsigned char)v1_prefix[0])
        st = parse_v1(p, n, out, why_out);
    else
        return invalid(why_out, "not a PROXY header");
    if (st != PROXY_DONE)
        memset(out, 0, sizeof(*out));
    return st;
}
