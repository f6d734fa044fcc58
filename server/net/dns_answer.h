/*
 * dns_answer.h - what a resolver's answer means for postern, with no socket, loop or query state:
 * c-ares's status and the answer bytes in; a dns_status, a one-line reason and the MX targets or
 * addresses out. dns.c asks c-ares and calls these from its query callbacks; the results' meaning
 * (orders, which failure wins) is documented in dns.h and decided here.
 *
 * MX (RFC 5321 5.1, RFC 7505): targets by preference, shuffled among equal preferences, each host
 * once at its best preference, at most DNS_MX_TARGETS_MAX; hosts that are not LDH names are
 * ignored; no MX record gives the implicit MX; only "." hosts give the null MX.
 *
 * The shuffle uses libsodium's randombytes_random(): sodium_init must have run.
 */
#ifndef POSTERN_DNS_ANSWER_H
#define POSTERN_DNS_ANSWER_H

#include <netinet/in.h>
#include <stddef.h>

#include "server/net/dns.h"

/*
 * The MX lookup of name (normalised, as asked) ended with ares_status and, on ARES_SUCCESS, the
 * answer abuf (alen bytes). Fills every field of out; out->targets is owned by the caller (free
 * it), NULL unless status is DNS_OK.
 */
void dns_answer_mx(const char *name, int ares_status, const unsigned char *abuf, int alen,
                   struct dns_mx_result *out);

/*
 * The A (dns_answer_a) or AAAA (dns_answer_aaaa) half of an address lookup: the addresses of the
 * name at the end of any CNAME chain in the answer, at most DNS_ADDRS_PER_FAMILY_MAX, in answer
 * order, into out and *count_out. Returns the half's c-ares status: ARES_SUCCESS with at least
 * one address, ARES_ENODATA with none, or ares_status or the parse error as it is.
 */
int dns_answer_a(int ares_status, const unsigned char *abuf, int alen,
                 struct in_addr out[DNS_ADDRS_PER_FAMILY_MAX], size_t *count_out);
int dns_answer_aaaa(int ares_status, const unsigned char *abuf, int alen,
                    struct in6_addr out[DNS_ADDRS_PER_FAMILY_MAX], size_t *count_out);

/*
 * Both halves have ended with v4_status and v6_status, with count addresses in all: the combined
 * status and its reason in error (DNS_ERROR_MAX_BYTES). Any address makes it DNS_OK; with none,
 * a shut-down resolver gives DNS_CANCELLED, then NXDOMAIN wins (RFC 8020), then a failure
 * (DNS_TEMPFAIL), then DNS_NODATA.
 */
enum dns_status dns_answer_addr(int v4_status, int v6_status, size_t count,
                                char error[DNS_ERROR_MAX_BYTES]);

/*
 * A lookup that c-ares ended without an answer to parse (what: "MX", "A", "AAAA"): cancelled,
 * NXDOMAIN, a bad name, or DNS_TEMPFAIL with the reason, into error (DNS_ERROR_MAX_BYTES).
 */
enum dns_status dns_answer_failure(const char *what, int ares_status,
                                   char error[DNS_ERROR_MAX_BYTES]);

#endif
