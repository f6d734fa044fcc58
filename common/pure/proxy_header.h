/*
 * proxy_header.h - the PROXY protocol header a load balancer sends before anything else on a
 * connection it relays, version 1 (one text line) and version 2 (binary), as HAProxy's
 * specification (doc/proxy-protocol.txt of the HAProxy sources) defines them.
 *
 * The parser is incremental in the simplest way: it is given every octet received so far and
 * answers "need more", "invalid" or "done, the header took N octets"; what follows those octets
 * belongs to the protocol (SMTP, POP3 or a TLS ClientHello). It refuses as early as it can: the
 * first octets that cannot begin a header, a version 1 line without its CRLF within 107 octets,
 * a version 2 length above PROXY_V2_MAX_LEN_BYTES. Version 2 TLVs are skipped, not read.
 *
 * What it does not do: decide who may send a header (the listener checks [server] proxy_from
 * before a single octet is read), read sockets, or keep state between calls. Pure code: no
 * I/O, no allocation, safe from any thread.
 */
#ifndef POSTERN_PROXY_HEADER_H
#define POSTERN_PROXY_HEADER_H

#include <stddef.h>
#include <stdint.h>

#include "common/pure/cidr.h"

/* Version 1: the longest line a receiver must take, CRLF included ("PROXY UNKNOWN" with two
 * full IPv6 addresses and two five-digit ports: specification 2.1). */
#define PROXY_V1_MAX_BYTES 107
/* Version 2: the fixed part (signature, version and command, family, length). */
#define PROXY_V2_FIXED_BYTES 16
/*
 * Version 2: the most address and TLV octets accepted after the fixed part. The specification
 * lets the length field say up to 65535; the addresses take at most 216 (two AF_UNIX paths) and
 * the TLVs balancers send in practice (ALPN, authority, a unique id of at most 128 octets, TLS
 * version, cipher and client certificate name, a cloud endpoint id) a few hundred, so 2 KiB
 * leaves room for all of them while bounding what a connection may make us hold.
 */
#define PROXY_V2_MAX_LEN_BYTES 2048
/* The most octets a complete header can take, of either version. */
#define PROXY_HEADER_MAX_BYTES (PROXY_V2_FIXED_BYTES + PROXY_V2_MAX_LEN_BYTES)

enum proxy_status {
    PROXY_NEED_MORE, /* a valid beginning so far: read more */
    PROXY_DONE,      /* a complete, valid header */
    PROXY_INVALID,   /* not a header, or a broken one: the connection must be dropped */
};

/* What a complete header says about the client. */
enum proxy_kind {
    /* src and dst hold the client's and the balancer's front addresses (TCP over IPv4/IPv6). */
    PROXY_KIND_PROXIED,
    /* Version 2 LOCAL: the balancer itself connected (a health check). */
    PROXY_KIND_LOCAL,
    /* Version 1 UNKNOWN: the balancer could not say. */
    PROXY_KIND_UNKNOWN,
    /* Version 2 PROXY with a family or transport that is not TCP (UNSPEC, UDP, AF_UNIX): the
     * specification lets a receiver fall back to the real endpoints, which we do. */
    PROXY_KIND_UNSPEC,
};

struct proxy_header {
    unsigned version; /* 1 or 2 */
    enum proxy_kind kind;
    /* PROXY_KIND_PROXIED only (zeroed otherwise). An IPv4-mapped IPv6 address is IPv4, as
     * everywhere in postern (cidr.h). */
    struct ip_addr src, dst;
    uint16_t src_port, dst_port;
    size_t header_bytes; /* octets the header took, from the first one received */
};

/*
 * Parses the start of a connection's input: p holds the n octets received so far (n may be 0).
 * PROXY_DONE fills *out; PROXY_INVALID sets *why_out (if not NULL) to a short static reason
 * such as "v2 bad family" for the log. Octets past the header are never looked at, so a caller
 * may pass everything it has.
 */
enum proxy_status proxy_header_parse(const unsigned char *p, size_t n, struct proxy_header *out,
                                     const char **why_out);

/* "proxied", "local", "unknown", "unspec": for the log. */
const char *proxy_kind_name(enum proxy_kind kind);

#endif
