/*
 * dns.h - asynchronous MX and address lookups for outbound delivery: c-ares on the libuv loop.
 *
 * One struct dns per server, on the loop thread. c-ares tells this module which sockets it wants
 * watched (ARES_OPT_SOCK_STATE_CB); each becomes a uv_poll handle, and one uv_timer re-armed from
 * ares_timeout() drives c-ares's own retransmissions and timeouts. So DNS never blocks the loop
 * and never needs a thread: everything runs on the loop thread.
 *
 * What it does (dns.c drives c-ares; dns_answer.c decides what an answer means):
 *   - dns_lookup_mx: the MX set of a mail domain, as the list of hosts to try (RFC 5321 5.1):
 *     by preference, in random order among equal preferences; the implicit MX when the domain
 *     has no MX records; null MX (RFC 7505) and NXDOMAIN as permanent answers.
 *   - dns_lookup_addr: the A and AAAA records of a host (both queried in parallel), or a literal
 *     IP address as it is.
 * What it does not do: cache (every lookup goes to the resolver, which caches), DNSSEC or DANE,
 * search domains or ndots (every name is absolute: "example.org" is never tried as
 * "example.org.localdomain"), /etc/hosts (MX hosts and smarthosts are looked up in DNS, like
 * Postfix's default smtp_host_lookup = dns; only "localhost" is special, RFC 6761 6.3), decide
 * whether a lookup result is worth a retry (the queue runner does: see enum dns_status), or skip
 * MX hosts that are this server itself (RFC 5321 5.1 last paragraph: the caller knows its own
 * names and addresses).
 *
 * Names: a domain or host must be an LDH name (letters, digits, hyphen; labels of 1..63 octets
 * not starting or ending with '-'; at most 253 octets; one trailing dot allowed, and not all
 * digits in the last label: common/pure/address.h domain_normalize). Anything else, including
 * underscores, IP addresses given to dns_lookup_mx and address literals "[192.0.2.1]", gets
 * DNS_BADNAME without a query. MX hosts in an answer are checked the same way; a record whose
 * host fails the check (an IP address, a name with an underscore) is ignored.
 *
 * Callbacks: every lookup that returned a query handle calls its callback exactly once, unless
 * it was cancelled with dns_cancel (then never). The callback always runs from the loop, never
 * from inside dns_lookup_* (even for a literal IP or a bad name, which complete on the next loop
 * iteration) and never from inside c-ares (results are queued and handed out by a uv_idle handle,
 * so a callback may call any dns_* function, dns_free included). The result and everything it
 * points to are borrowed: valid during the callback only.
 *
 * Timeouts: c-ares's own, 2000 ms for the first try and doubled for each further one, 2 tries
 * (DNS_TIMEOUT_MS, DNS_TRIES): a dead resolver costs about 6 s per lookup, then DNS_TEMPFAIL.
 *
 * Threading: loop thread only.
 */
#ifndef POSTERN_DNS_H
#define POSTERN_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "common/config.h"

/* The first try's timeout; c-ares doubles it for every further round of tries. */
#define DNS_TIMEOUT_MS 2000
#define DNS_TRIES      2
/*
 * MX hosts kept from one answer (the best preferences). Postfix tries at most 5 addresses per
 * delivery by default (smtp_mx_address_limit); 32 hosts is far more than any delivery attempt
 * uses and bounds the memory one hostile answer can cost.
 */
#define DNS_MX_TARGETS_MAX 32
/* Addresses kept per family from one answer, in answer order. */
#define DNS_ADDRS_PER_FAMILY_MAX 16
#define DNS_ERROR_MAX_BYTES      128

struct dns;
struct dns_query;

enum dns_status {
    DNS_OK = 0,
    DNS_NXDOMAIN,  /* the name does not exist (RCODE 3): permanent */
    DNS_NODATA,    /* the name exists, with no record of the type asked: permanent */
    DNS_NULL_MX,   /* the domain accepts no mail (RFC 7505): permanent */
    DNS_TEMPFAIL,  /* SERVFAIL, REFUSED, timeout, network error, malformed answer: retry later */
    DNS_CANCELLED, /* dns_free ran with the lookup outstanding */
    DNS_BADNAME,   /* not a valid name (see "Names"): permanent, no query was sent */
};

/* "ok", "nxdomain", "nodata", "null-mx", "tempfail", "cancelled", "badname": for log lines. */
const char *dns_status_name(enum dns_status status);

/* One MX host, in the order to try. host is lower case, without a trailing dot. */
struct dns_target {
    char host[HOSTNAME_BUF_BYTES];
    uint16_t preference;
};

/*
 * status DNS_OK: count >= 1 targets. is_implicit: the domain has no MX records, and the one
 * target is the domain itself with preference 0 (RFC 5321 5.1); its address lookup decides
 * (NXDOMAIN or NODATA there is a permanent failure too). Other statuses: no targets, error
 * says why in one line (for a log line or a bounce).
 */
struct dns_mx_result {
    enum dns_status status;
    struct dns_target *targets;
    size_t count;
    bool is_implicit;
    char error[DNS_ERROR_MAX_BYTES];
};

/*
 * status DNS_OK: count >= 1 addresses, each with the port of the lookup: the IPv4 addresses
 * first, then IPv6, each family in answer order. IPv4 first because mail over IPv6 is still
 * refused by many receivers that want a PTR and SPF for the sender's IPv6 address, and many
 * hosts (test setups, containers) have no IPv6 route at all; RFC 6724 sorting is not worth it
 * for a client that tries every address in turn. Both families are queried: when one answers
 * and the other fails, the addresses found are used (status DNS_OK); with no address at all,
 * NXDOMAIN wins over a failure (the name does not exist, whatever the type, RFC 8020), then a
 * failure (DNS_TEMPFAIL), then DNS_NODATA.
 */
struct dns_addr_result {
    enum dns_status status;
    struct sockaddr_storage *addrs;
    size_t count;
    char error[DNS_ERROR_MAX_BYTES];
};

typedef void dns_mx_cb(void *ctx, const struct dns_mx_result *r);
typedef void dns_addr_cb(void *ctx, const struct dns_addr_result *r);

/*
 * A resolver on loop. server_or_empty: the resolver to ask (struct cfg relay.dns_server: a
 * numeric IPv4 or IPv6 address, port 0 meaning 53), or NULL or host "" for the system's
 * configuration (/etc/resolv.conf). Returns 0 and *out, or -1 with a one-line message in err.
 */
int dns_new(uv_loop_t *loop, const struct cfg_hostport *server_or_empty, struct dns **out,
            char *err, size_t errlen);

/* The same with another first-try timeout (1..60000 ms) and number of tries (1..10): tests. */
int dns_new_with_timeout(uv_loop_t *loop, const struct cfg_hostport *server_or_empty,
                         unsigned timeout_ms, unsigned tries, struct dns **out, char *err,
                         size_t errlen);

/*
 * Cancels every outstanding lookup: each callback not cancelled with dns_cancel runs once with
 * DNS_CANCELLED, before dns_free returns (so the callers' contexts may be freed right after).
 * Lookups started from those callbacks are refused (NULL). Sets *d to NULL; the memory is
 * released by libuv close callbacks, so run the loop once more before uv_loop_close. NULL and
 * *d == NULL are no-ops; calling it from a callback is allowed.
 */
void dns_free(struct dns **d);

/*
 * Looks up the MX hosts of domain (see "Names"; the domain is absolute). cb(ctx, result) runs
 * once, later (see "Callbacks"). Statuses:
 *   DNS_OK        targets by preference, random among equal preferences; the implicit MX
 *                 (is_implicit) when the domain exists with no MX record
 *   DNS_NULL_MX   a null MX: every MX record has the host "." (RFC 7505 3: "0 ." as the only
 *                 record; "." next to real hosts is ignored, since nothing can be sent there)
 *   DNS_NXDOMAIN  the domain does not exist
 *   DNS_TEMPFAIL  resolver failure or timeout; also MX records none of whose hosts is a valid name
 *   DNS_BADNAME   domain is not a valid name
 *   DNS_CANCELLED dns_free
 * Returns the query, valid until its callback returns or until dns_cancel, or NULL (cb never
 * runs) when d is NULL or being freed, cb is NULL, or memory ran out.
 */
struct dns_query *dns_lookup_mx(struct dns *d, const char *domain, dns_mx_cb *cb, void *ctx);

/*
 * Looks up the addresses of host for a connection to port. A numeric IPv4 or IPv6 address
 * (without brackets; ::ffff:a.b.c.d becomes a.b.c.d) is the answer itself, and "localhost" and
 * names under ".localhost" are 127.0.0.1 and ::1 (RFC 6761 6.3); neither asks the resolver.
 * Statuses: DNS_OK, DNS_NXDOMAIN, DNS_NODATA, DNS_TEMPFAIL, DNS_BADNAME, DNS_CANCELLED, as for
 * dns_lookup_mx. Returns as dns_lookup_mx does.
 */
struct dns_query *dns_lookup_addr(struct dns *d, const char *host, uint16_t port, dns_addr_cb *cb,
                                  void *ctx);

/*
 * Drops a lookup: its callback will not run, and q must not be used again. Memory is reclaimed
 * when the resolver's answer or timeout comes in (at the latest by dns_free). For use when the
 * caller's context goes away; NULL is a no-op. Not for a query whose callback already returned.
 */
void dns_cancel(struct dns_query *q);

#endif
