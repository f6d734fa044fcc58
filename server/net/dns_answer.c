/*
 * dns_answer.c - see dns_answer.h. c-ares's ares_parse_*_reply read the DNS messages (so there is
 * no fuzz target here); this file decides what the records mean for delivery. It owns nothing
 * past a call but the MX targets it hands to the caller.
 */
#include "server/net/dns_answer.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <sodium.h>

#include "common/log.h"
#include "common/pure/address.h"

static enum dns_status set_error(char error[DNS_ERROR_MAX_BYTES], enum dns_status status,
                                 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static enum dns_status set_error(char error[DNS_ERROR_MAX_BYTES], enum dns_status status,
                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, DNS_ERROR_MAX_BYTES, fmt, ap);
    va_end(ap);
    return status;
}

static const char *ares_reason(int status)
{
    switch (status) {
    case ARES_ESERVFAIL:
        return "server failure (SERVFAIL)";
    case ARES_EREFUSED:
        return "query refused (REFUSED)";
    case ARES_EFORMERR:
        return "query rejected as malformed (FORMERR)";
    case ARES_ENOTIMP:
        return "query type not implemented (NOTIMP)";
    case ARES_ETIMEOUT:
        return "timed out";
    case ARES_ECONNREFUSED:
        /* c-ares 1.18 also ends with this code when every try got SERVFAIL or REFUSED (it
         * skips to the next server on those, RFC 1035 7.2, and keeps no rcode). */
        return "no usable answer from the resolver (unreachable, SERVFAIL or REFUSED)";
    case ARES_EBADRESP:
        return "malformed answer";
    case ARES_ENOMEM:
        return "out of memory";
    default:
        return ares_strerror(status);
    }
}

enum dns_status dns_answer_failure(const char *what, int ares_status,
                                   char error[DNS_ERROR_MAX_BYTES])
{
    if (ares_status == ARES_EDESTRUCTION || ares_status == ARES_ECANCELLED)
        return set_error(error, DNS_CANCELLED, "cancelled: resolver shut down");
    if (ares_status == ARES_ENOTFOUND)
        return set_error(error, DNS_NXDOMAIN, "no such domain (NXDOMAIN)");
    if (ares_status == ARES_EBADNAME)
        return set_error(error, DNS_BADNAME, "not a valid name");
    return set_error(error, DNS_TEMPFAIL, "%s lookup: %s", what, ares_reason(ares_status));
}

/* RFC 5321 5.1: no MX records, so the domain itself is the one host, "with preference 0". */
static void mx_set_implicit(const char *name, struct dns_mx_result *out)
{
    out->targets = calloc(1, sizeof *out->targets);
    if (out->targets == NULL) {
        out->status = set_error(out->error, DNS_TEMPFAIL, "out of memory");
        return;
    }
    snprintf(out->targets[0].host, sizeof out->targets[0].host, "%s", name);
    out->targets[0].preference = 0;
    out->count = 1;
    out->is_implicit = true;
    out->status = set_error(out->error, DNS_OK, "no MX records: implicit MX");
}

struct mx_candidate {
    const struct ares_mx_reply *rr; /* borrowed from the parsed answer */
    uint16_t preference;
    uint32_t shuffle; /* random: the order among equal preferences */
    size_t index;     /* answer order: makes the sort a total order */
};

static int mx_candidate_cmp(const void *a, const void *b)
{
    const struct mx_candidate *x = a;
    const struct mx_candidate *y = b;
    if (x->preference != y->preference)
        return x->preference < y->preference ? -1 : 1;
    if (x->shuffle != y->shuffle)
        return x->shuffle < y->shuffle ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index ? 1 : 0);
}

/* The root name "." (c-ares expands it to ""): the host of a null MX, RFC 7505 3. */
static bool is_root(const char *host)
{
    return host[0] == '\0' || strcmp(host, ".") == 0;
}

/*
 * Turns the MX records into targets: valid hosts only, by preference, shuffled among equal
 * preferences (RFC 5321 5.1: "the SMTP client SHOULD randomize them"), each host once (at its
 * best preference), at most DNS_MX_TARGETS_MAX.
 */
static void mx_select(const char *name, const struct ares_mx_reply *head, struct dns_mx_result *out)
{
    size_t total = 0, usable = 0, roots = 0, n = 0;
    struct mx_candidate *cands;
    char host[HOSTNAME_BUF_BYTES];

    for (const struct ares_mx_reply *rr = head; rr != NULL; rr = rr->next)
        total++;
    cands = calloc(total, sizeof *cands);
    if (cands == NULL) {
        out->status = set_error(out->error, DNS_TEMPFAIL, "out of memory");
        return;
    }
    for (const struct ares_mx_reply *rr = head; rr != NULL; rr = rr->next, n++) {
        if (is_root(rr->host)) {
            roots++;
            continue;
        }
        /* An address or an underscore name is not a mail host (RFC 5321 5.1: names, not
         * literals); skip it rather than connect somewhere the domain did not mean. */
        if (domain_normalize(rr->host, host, sizeof host, NULL) != 0)
            continue;
        cands[usable].rr = rr;
        cands[usable].preference = rr->priority;
        cands[usable].shuffle = randombytes_random();
        cands[usable].index = n;
        usable++;
    }
    if (usable == 0) {
        if (roots > 0)
            out->status =
                set_error(out->error, DNS_NULL_MX, "domain accepts no mail (null MX, RFC 7505)");
        else
            out->status =
                set_error(out->error, DNS_TEMPFAIL, "MX lookup: no MX host is a valid name");
        free(cands);
        return;
    }
    if (usable < total - roots)
        log_debug("dns", 0, "event=mx-ignored name=%s count=%zu", name, total - roots - usable);
    qsort(cands, usable, sizeof *cands, mx_candidate_cmp);

    out->targets =
        calloc(usable < DNS_MX_TARGETS_MAX ? usable : DNS_MX_TARGETS_MAX, sizeof *out->targets);
    if (out->targets == NULL) {
        free(cands);
        out->status = set_error(out->error, DNS_TEMPFAIL, "out of memory");
        return;
    }
    for (size_t i = 0; i < usable && out->count < DNS_MX_TARGETS_MAX; i++) {
        bool seen = false;
        if (domain_normalize(cands[i].rr->host, host, sizeof host, NULL) != 0)
            continue; /* cannot happen: checked above */
        for (size_t j = 0; j < out->count && !seen; j++)
            seen = strcmp(out->targets[j].host, host) == 0;
        if (seen)
            continue;
        memcpy(out->targets[out->count].host, host, sizeof host);
        out->targets[out->count].preference = cands[i].preference;
        out->count++;
    }
    free(cands);
    out->status =
        set_error(out->error, DNS_OK, "%zu MX host%s", out->count, out->count == 1 ? "" : "s");
}

void dns_answer_mx(const char *name, int ares_status, const unsigned char *abuf, int alen,
                   struct dns_mx_result *out)
{
    struct ares_mx_reply *mx = NULL;
    int status = ares_status;

    memset(out, 0, sizeof *out);
    if (status == ARES_ENODATA) {
        mx_set_implicit(name, out);
    } else if (status != ARES_SUCCESS) {
        out->status = dns_answer_failure("MX", status, out->error);
    } else {
        status = ares_parse_mx_reply(abuf, alen, &mx);
        /* An answer of CNAMEs only parses to no MX record: NODATA for the alias's target. */
        if (status == ARES_ENODATA || (status == ARES_SUCCESS && mx == NULL))
            mx_set_implicit(name, out);
        else if (status != ARES_SUCCESS)
            out->status = set_error(out->error, DNS_TEMPFAIL, "MX lookup: %s", ares_reason(status));
        else
            mx_select(name, mx, out);
        if (mx != NULL)
            ares_free_data(mx);
    }
    if (out->status != DNS_OK) {
        free(out->targets);
        out->targets = NULL;
        out->count = 0;
        out->is_implicit = false;
    }
}

int dns_answer_a(int ares_status, const unsigned char *abuf, int alen,
                 struct in_addr out[DNS_ADDRS_PER_FAMILY_MAX], size_t *count_out)
{
    struct ares_addrttl ttls[DNS_ADDRS_PER_FAMILY_MAX];
    int n = DNS_ADDRS_PER_FAMILY_MAX;
    int status = ares_status;

    *count_out = 0;
    if (status != ARES_SUCCESS)
        return status;
    /* Follows a CNAME chain within the answer; only the final name's addresses count. */
    status = ares_parse_a_reply(abuf, alen, NULL, ttls, &n);
    if (status == ARES_SUCCESS && n == 0)
        status = ARES_ENODATA;
    for (int i = 0; status == ARES_SUCCESS && i < n; i++)
        out[(*count_out)++] = ttls[i].ipaddr;
    return status;
}

int dns_answer_aaaa(int ares_status, const unsigned char *abuf, int alen,
                    struct in6_addr out[DNS_ADDRS_PER_FAMILY_MAX], size_t *count_out)
{
    struct ares_addr6ttl ttls[DNS_ADDRS_PER_FAMILY_MAX];
    int n = DNS_ADDRS_PER_FAMILY_MAX;
    int status = ares_status;

    *count_out = 0;
    if (status != ARES_SUCCESS)
        return status;
    status = ares_parse_aaaa_reply(abuf, alen, NULL, ttls, &n);
    if (status == ARES_SUCCESS && n == 0)
        status = ARES_ENODATA;
    for (int i = 0; status == ARES_SUCCESS && i < n; i++)
        memcpy(&out[(*count_out)++], &ttls[i].ip6addr, sizeof out[0]);
    return status;
}

enum dns_status dns_answer_addr(int v4_status, int v6_status, size_t count,
                                char error[DNS_ERROR_MAX_BYTES])
{
    int failed;

    if (count > 0)
        return set_error(error, DNS_OK, "%zu address%s", count, count == 1 ? "" : "es");
    if (v4_status == ARES_EDESTRUCTION || v6_status == ARES_EDESTRUCTION)
        return dns_answer_failure("A", ARES_EDESTRUCTION, error);
    if (v4_status == ARES_ENOTFOUND || v6_status == ARES_ENOTFOUND)
        return dns_answer_failure("A", ARES_ENOTFOUND, error);
    if (v4_status == ARES_ENODATA && v6_status == ARES_ENODATA)
        return set_error(error, DNS_NODATA, "no A or AAAA records");
    failed = v4_status != ARES_ENODATA ? v4_status : v6_status;
    return dns_answer_failure(failed == v4_status ? "A" : "AAAA", failed, error);
}
