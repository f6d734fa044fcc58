/*
 * fuzz_proxy_header.c - libFuzzer target for common/pure/proxy_header.c.
 *
 * The input is the start of a connection. Properties checked: a refusal always names its
 * reason; "need more" only while fewer octets than the largest header were given; a complete
 * header never claims more octets than it was given nor more than PROXY_HEADER_MAX_BYTES, parses
 * the same from exactly its own octets (what follows is never looked at), and is only a
 * beginning one octet earlier; a proxied header carries IPv4 or IPv6 addresses of one
 * canonical family (no IPv4-mapped IPv6), other kinds carry none. Any broken property aborts,
 * which libFuzzer reports as a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/proxy_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void check_addr(const struct ip_addr *ip)
{
    if (ip->family != AF_INET && ip->family != AF_INET6)
        abort();
    if (ip->family == AF_INET6 && memcmp(ip->bytes, v4_mapped_prefix, 12) == 0)
        abort();
}

static int same_addr(const struct ip_addr *a, const struct ip_addr *b)
{
    return a->family == b->family && memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > PROXY_HEADER_MAX_BYTES + 64)
        return 0;
    struct proxy_header h;
    const char *why = NULL;
    enum proxy_status st = proxy_header_parse(data, size, &h, &why);
    switch (st) {
    case PROXY_INVALID:
        if (why == NULL || why[0] == '\0')
            abort();
        return 0;
    case PROXY_NEED_MORE:
        if (size >= PROXY_HEADER_MAX_BYTES)
            abort();
        return 0;
    case PROXY_DONE:
        break;
    default:
        abort();
    }
    if (h.header_bytes == 0 || h.header_bytes > size || h.header_bytes > PROXY_HEADER_MAX_BYTES)
        abort();
    if (h.version != 1 && h.version != 2)
        abort();
    if (h.version == 1 && h.header_bytes > PROXY_V1_MAX_BYTES)
        abort();
    if (h.kind == PROXY_KIND_PROXIED) {
        check_addr(&h.src);
        check_addr(&h.dst);
    } else if (h.src.family != 0 || h.dst.family != 0 || h.src_port != 0 || h.dst_port != 0) {
        abort();
    }
    /* Exactly its own octets: the same header. */
    struct proxy_header again;
    if (proxy_header_parse(data, h.header_bytes, &again, &why) != PROXY_DONE ||
        again.header_bytes != h.header_bytes || again.version != h.version ||
        again.kind != h.kind || !same_addr(&again.src, &h.src) || !same_addr(&again.dst, &h.dst) ||
        again.src_port != h.src_port || again.dst_port != h.dst_port)
        abort();
    /* One octet short: still a valid beginning. */
    if (proxy_header_parse(data, h.header_bytes - 1, &again, &why) != PROXY_NEED_MORE)
        abort();
    return 0;
}
