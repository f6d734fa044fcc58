/*
 * config_value.c - one configuration value from its text: the syntax of each parameter type
 * (names, numbers with bounds, durations, sizes, enums, listen lists, network lists, host:port)
 * and the reason
 * text when it is wrong. It checks form only: nothing is bound, resolved or looked up, and
 * cross-key rules and file positions are config.c's. The parameter rows come from
 * config_table.c; formatting a value back is config_print.c's.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/config_internal.h"
#include "common/pure/address.h"
#include "common/pure/conninfo.h"
#include "common/pure/duration.h"
#include "common/pure/milter.h"

static bool is_ascii_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_ascii_alnum(char c)
{
    return is_ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Digits only (no sign, no space, no "0x"), within uint64_t. */
static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t n = 0;

    if (!is_ascii_digit(*s))
        return -1;
    for (; *s != '\0'; s++) {
        if (!is_ascii_digit(*s))
            return -1;
        uint64_t d = (uint64_t)(*s - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *out = n;
    return 0;
}

/* A port number 1..65535 written as digits. */
static int parse_port(const char *s, uint16_t *out)
{
    uint64_t n;

    if (parse_u64(s, &n) < 0 || n < 1 || n > 65535)
        return -1;
    *out = (uint16_t)n;
    return 0;
}

/* A portable login name (POSIX 3.437 portable filename characters, not starting with '-'). */
static bool is_user_name(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > 32 || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_ascii_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    }
    return true;
}

/*
 * A SASL authentication identity (RFC 4616 2: UTF-8 without NUL): "" (no AUTH), or up to
 * SASL_USER_MAX_BYTES octets without ASCII control characters. Octets above 127 pass as they
 * are (UTF-8 is not checked: the smarthost decides). inih has already trimmed the ends.
 */
static bool is_sasl_name(const char *s)
{
    size_t len = strlen(s);

    if (len > SASL_USER_MAX_BYTES)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

/* Canonical inet_ntop text of a numeric IPv4 or IPv6 address s into host (hostlen bytes). */
static int parse_ip(const char *s, char *host, size_t hostlen)
{
    unsigned char addr[sizeof(struct in6_addr)];
    int family = strchr(s, ':') != NULL ? AF_INET6 : AF_INET;

    if (inet_pton(family, s, addr) != 1)
        return -1;
    if (inet_ntop(family, addr, host, (socklen_t)hostlen) == NULL)
        return -1;
    return 0;
}

static const char listen_hint[] =
    "expected ADDRESS:PORT such as 127.0.0.1:2525, [::1]:2525 or *:25";

/* One listen entry: "[v6]:port", "v4:port" or "*:port". */
static int parse_listen(const char *item, struct cfg_listen *out, char *reason, size_t rlen)
{
    char host[128];
    const char *port;
    struct cfg_listen addr = {{0}, 0, false};

    if (item[0] == '[') {
        const char *close = strchr(item, ']');
        if (close == NULL || close[1] != ':') {
            snprintf(reason, rlen, "%s", listen_hint);
            return -1;
        }
        size_t n = (size_t)(close - item - 1);
        if (n >= sizeof(host) || n == 0 || memchr(item + 1, ':', n) == NULL) {
            snprintf(reason, rlen, "%s", listen_hint);
            return -1;
        }
        memcpy(host, item + 1, n);
        host[n] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(item, ':');
        if (colon == NULL || colon == item) {
            snprintf(reason, rlen, "%s", listen_hint);
            return -1;
        }
        size_t n = (size_t)(colon - item);
        if (memchr(item, ':', n) != NULL) {
            snprintf(reason, rlen, "write IPv6 addresses in brackets, such as [::1]:2525");
            return -1;
        }
        if (n >= sizeof(host)) {
            snprintf(reason, rlen, "host must be a numeric IPv4 or IPv6 address or *");
            return -1;
        }
        memcpy(host, item, n);
        host[n] = '\0';
        port = colon + 1;
    }
    if (strcmp(host, "*") == 0 && item[0] != '[') {
        snprintf(addr.host, sizeof(addr.host), "*");
    } else if (parse_ip(host, addr.host, sizeof(addr.host)) < 0 ||
               (item[0] == '[') != (strchr(host, ':') != NULL)) {
        snprintf(reason, rlen, "host must be a numeric IPv4 or IPv6 address or *");
        return -1;
    }
    if (parse_port(port, &addr.port) < 0) {
        snprintf(reason, rlen, "port must be between 1 and 65535");
        return -1;
    }
    *out = addr;
    return 0;
}

bool cfg_listen_equal(const struct cfg_listen *a, const struct cfg_listen *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

void cfg_listen_format(const struct cfg_listen *addr, char *buf, size_t len)
{
    if (len == 0)
        return;
    if (strchr(addr->host, ':') != NULL)
        snprintf(buf, len, "[%s]:%u", addr->host, (unsigned)addr->port);
    else
        snprintf(buf, len, "%s:%u", addr->host, (unsigned)addr->port);
}

/*
 * The words after an address in a listen entry (rest, blanks trimmed): only "proxy", and only
 * where marker_ok. Another address is the common mistake, so it gets its own hint.
 */
static int parse_listen_marker(const char *rest, bool marker_ok, struct cfg_listen *addr,
                               char *reason, size_t rlen)
{
    if (strcmp(rest, "proxy") != 0) {
        if (strchr(rest, ':') != NULL)
            snprintf(reason, rlen, "separate addresses with commas");
        else
            snprintf(reason, rlen, "unknown word \"%.40s\" after an address (only proxy)", rest);
        return -1;
    }
    if (!marker_ok) {
        snprintf(reason, rlen, "proxy is only for the [smtp] and [pop3] listen addresses");
        return -1;
    }
    addr->proxy = true;
    return 0;
}

/*
 * The next entry of a comma-separated list: *pp points at it (NULL once the list is done);
 * the entry, blanks trimmed, goes to item (cap bytes) and *pp moves past its comma. 1 with an
 * entry, 0 at the end, -1 with reason for an empty entry or one of cap bytes or more (hint).
 */
static int list_next(const char **pp, char *item, size_t cap, const char *hint, char *reason,
                     size_t rlen)
{
    const char *p = *pp;
    if (p == NULL)
        return 0;
    const char *comma = strchr(p, ',');
    size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
    *pp = comma != NULL ? comma + 1 : NULL;
    while (n > 0 && cfg_is_blank(*p)) {
        p++;
        n--;
    }
    while (n > 0 && cfg_is_blank(p[n - 1]))
        n--;
    if (n == 0) {
        snprintf(reason, rlen, "empty entry in the list");
        return -1;
    }
    if (n >= cap) {
        snprintf(reason, rlen, "%s", hint);
        return -1;
    }
    memcpy(item, p, n);
    item[n] = '\0';
    return 1;
}

/* "a, b proxy, c" into out; "" is an empty list (the service is off). */
static int parse_listen_list(const char *value, bool marker_ok, struct cfg_listen_list *out,
                             char *reason, size_t rlen)
{
    struct cfg_listen_list list;
    const char *p = *value != '\0' ? value : NULL;
    char item[160];
    int more;

    memset(&list, 0, sizeof(list));
    while ((more = list_next(&p, item, sizeof(item), listen_hint, reason, rlen)) > 0) {
        struct cfg_listen addr;
        char *rest = strpbrk(item, " \t");
        if (rest != NULL) {
            *rest++ = '\0';
            while (cfg_is_blank(*rest))
                rest++;
        }
        if (list.count == CFG_LISTEN_MAX) {
            snprintf(reason, rlen, "at most %d addresses", CFG_LISTEN_MAX);
            return -1;
        }
        if (parse_listen(item, &addr, reason, rlen) < 0)
            return -1;
        if (rest != NULL && parse_listen_marker(rest, marker_ok, &addr, reason, rlen) < 0)
            return -1;
        for (size_t i = 0; i < list.count; i++) {
            if (cfg_listen_equal(&list.addrs[i], &addr)) {
                char text[96];
                cfg_listen_format(&addr, text, sizeof(text));
                snprintf(reason, rlen, "%s is listed twice", text);
                return -1;
            }
        }
        list.addrs[list.count++] = addr;
    }
    if (more < 0)
        return -1;
    *out = list;
    return 0;
}

/* "10.0.0.0/8, 2001:db8::/32" into out (cidr_parse per entry); "" is an empty list. */
static int parse_cidr_list(const char *value, struct cfg_cidr_list *out, char *reason, size_t rlen)
{
    struct cfg_cidr_list list;
    const char *p = *value != '\0' ? value : NULL;
    char item[CIDR_STRLEN + 8];
    int more;

    memset(&list, 0, sizeof(list));
    while ((more = list_next(&p, item, sizeof(item),
                             "expected networks such as 10.0.0.0/8, 2001:db8::/32", reason, rlen)) >
           0) {
        struct cidr net;
        const char *why = NULL;
        if (cidr_parse(item, &net, &why) != 0) {
            snprintf(reason, rlen, "\"%s\": %s", item, why);
            return -1;
        }
        for (size_t i = 0; i < list.count; i++) {
            if (list.nets[i].prefix == net.prefix && ip_equal(&list.nets[i].net, &net.net)) {
                char text[CIDR_STRLEN];
                cidr_format(&net, text, sizeof(text));
                snprintf(reason, rlen, "%s is listed twice", text);
                return -1;
            }
        }
        if (list.count == CFG_CIDRS_MAX) {
            snprintf(reason, rlen, "at most %d networks", CFG_CIDRS_MAX);
            return -1;
        }
        list.nets[list.count++] = net;
    }
    if (more < 0)
        return -1;
    *out = list;
    return 0;
}

bool cfg_cidr_list_contains(const struct cfg_cidr_list *list, const struct ip_addr *ip)
{
    for (size_t i = 0; i < list->count; i++) {
        if (cidr_contains(&list->nets[i], ip))
            return true;
    }
    return false;
}

/*
 * smarthost / dns_server: "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address.
 * numeric_only refuses names (dns_server must not need DNS to be found).
 */
static int parse_hostport(const char *value, bool numeric_only, uint16_t default_port,
                          struct cfg_hostport *out, char *reason, size_t rlen)
{
    struct cfg_hostport hp;
    char host[HOSTNAME_BUF_BYTES];
    const char *port = NULL;
    const char *hint = numeric_only ? "expected IP[:PORT] such as 127.0.0.1:5353 or [::1]:53"
                                    : "expected HOST[:PORT] such as relay.example.net:587";
    unsigned char addr6[sizeof(struct in6_addr)];

    memset(&hp, 0, sizeof(hp));
    if (*value == '\0') {
        *out = hp;
        return 0;
    }
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        size_t n = close != NULL ? (size_t)(close - value - 1) : 0;
        if (close == NULL || n == 0 || n >= sizeof(host) || (close[1] != '\0' && close[1] != ':')) {
            snprintf(reason, rlen, "%s", hint);
            return -1;
        }
        memcpy(host, value + 1, n);
        host[n] = '\0';
        if (inet_pton(AF_INET6, host, addr6) != 1) {
            snprintf(reason, rlen, "%s", hint);
            return -1;
        }
        if (close[1] == ':')
            port = close + 2;
    } else if (inet_pton(AF_INET6, value, addr6) == 1) {
        snprintf(host, sizeof(host), "%s", value);
    } else {
        const char *colon = strchr(value, ':');
        size_t n = colon != NULL ? (size_t)(colon - value) : strlen(value);
        if (n == 0 || n >= sizeof(host)) {
            snprintf(reason, rlen, "%s", hint);
            return -1;
        }
        memcpy(host, value, n);
        host[n] = '\0';
        if (colon != NULL)
            port = colon + 1;
    }
    if (parse_ip(host, hp.host, sizeof(hp.host)) < 0) {
        if (numeric_only || strchr(host, ':') != NULL || !domain_is_hostname(host)) {
            snprintf(reason, rlen, "%s", hint);
            return -1;
        }
        snprintf(hp.host, sizeof(hp.host), "%s", host);
    }
    hp.port = default_port;
    if (port != NULL && parse_port(port, &hp.port) < 0) {
        snprintf(reason, rlen, "port must be between 1 and 65535");
        return -1;
    }
    *out = hp;
    return 0;
}

/* The host's own name when it is a usable domain name, else "localhost". */
static void default_hostname(char *buf, size_t len)
{
    char name[HOSTNAME_BUF_BYTES];

    if (gethostname(name, sizeof(name)) == 0) {
        name[sizeof(name) - 1] = '\0'; /* POSIX leaves a cut name unterminated */
        if (domain_is_hostname(name)) {
            snprintf(buf, len, "%s", name);
            return;
        }
    }
    snprintf(buf, len, "localhost");
}

/* Relative paths are joined to base_dir; "" stays "" (not set). Returns heap or NULL. */
static char *resolve_path(const char *base_dir, const char *value)
{
    if (value[0] == '\0' || value[0] == '/' || base_dir == NULL || base_dir[0] == '\0')
        return strdup(value);
    size_t blen = strlen(base_dir);
    const char *sep = base_dir[blen - 1] == '/' ? "" : "/";
    size_t len = blen + strlen(sep) + strlen(value) + 1;
    char *path = malloc(len);
    if (path == NULL)
        return NULL;
    snprintf(path, len, "%s%s%s", base_dir, sep, value);
    return path;
}

/* Replaces the heap string at *slot with a copy of value (already checked). */
static int set_string(char **slot, char *copy, char *reason, size_t rlen)
{
    if (copy == NULL) {
        snprintf(reason, rlen, "out of memory");
        return -1;
    }
    free(*slot);
    *slot = copy;
    return 0;
}

/* A path resolved against the config file's folder, at most PATH_MAX - 1 bytes. */
static int set_path(void *field, const char *base_dir, const char *value, char *reason, size_t rlen)
{
    char *path = resolve_path(base_dir, value);
    if (path != NULL && strlen(path) >= PATH_MAX) {
        free(path);
        snprintf(reason, rlen, "path longer than %d bytes", PATH_MAX - 1);
        return -1;
    }
    return set_string(field, path, reason, rlen);
}

static void range_text(const struct param *p, uint64_t v, char *buf, size_t len)
{
    if (p->type == P_DURATION)
        duration_format(v, buf, len);
    else if (p->type == P_SIZE)
        size_format(v, buf, len);
    else
        snprintf(buf, len, "%llu", (unsigned long long)v);
}

static int check_range(const struct param *p, uint64_t v, char *reason, size_t rlen)
{
    char lo[DURATION_FORMAT_MAX_BYTES], hi[DURATION_FORMAT_MAX_BYTES];

    if (v >= p->min && v <= p->max)
        return 0;
    range_text(p, p->min, lo, sizeof(lo));
    range_text(p, p->max, hi, sizeof(hi));
    snprintf(reason, rlen, "must be between %s and %s", lo, hi);
    return -1;
}

int cfg_param_set(struct cfg *cfg, const struct param *p, const char *base_dir, const char *value,
                  char *reason, size_t rlen)
{
    void *field = cfg_field(cfg, p);
    uint64_t v;

    switch (p->type) {
    case P_HOSTNAME: {
        char name[HOSTNAME_BUF_BYTES];
        if (value[0] == '\0') {
            default_hostname(name, sizeof(name));
        } else if (domain_is_hostname(value)) {
            snprintf(name, sizeof(name), "%s", value);
        } else {
            snprintf(reason, rlen, "expected a domain name such as mail.example.test");
            return -1;
        }
        return set_string(field, strdup(name), reason, rlen);
    }
    case P_USER:
        if (value[0] != '\0' && !is_user_name(value)) {
            snprintf(reason, rlen, "expected a user name (letters, digits, '.', '_', '-')");
            return -1;
        }
        return set_string(field, strdup(value), reason, rlen);
    case P_SASLNAME:
        if (!is_sasl_name(value)) {
            snprintf(reason, rlen,
                     "expected a user name of at most %d bytes without control "
                     "characters",
                     SASL_USER_MAX_BYTES);
            return -1;
        }
        return set_string(field, strdup(value), reason, rlen);
    case P_MILTERS: {
        struct milter_spec specs[MILTER_LIST_MAX];
        size_t n;
        const char *why = NULL;
        if (milter_spec_parse(value, specs, &n, &why) != 0) {
            snprintf(reason, rlen, "%s", why);
            return -1;
        }
        return set_string(field, strdup(value), reason, rlen);
    }
    case P_DATABASE:
        /* A connection string is not a path: resolving it against the config folder would make
         * "host=db1 dbname=mail" a file name. Its length is the store's limit (store_internal.h);
         * libpq judges the rest when connecting. */
        if (conninfo_is_postgres(value)) {
            if (strlen(value) >= CFG_DATABASE_CONNINFO_MAX_BYTES) {
                snprintf(reason, rlen, "connection string longer than %d bytes",
                         CFG_DATABASE_CONNINFO_MAX_BYTES - 1);
                return -1;
            }
            return set_string(field, strdup(value), reason, rlen);
        }
        return set_path(field, base_dir, value, reason, rlen); /* a SQLite file */
    case P_PATH:
        return set_path(field, base_dir, value, reason, rlen);
    case P_BOOL: {
        static const char *const yes[] = {"yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
            if (strcasecmp(value, yes[i]) == 0) {
                *(bool *)field = true;
                return 0;
            }
            if (strcasecmp(value, no[i]) == 0) {
                *(bool *)field = false;
                return 0;
            }
        }
        snprintf(reason, rlen, "expected yes or no");
        return -1;
    }
    case P_UINT:
    case P_PORT:
        if (parse_u64(value, &v) < 0) {
            snprintf(reason, rlen, "expected a whole number");
            return -1;
        }
        if (check_range(p, v, reason, rlen) < 0)
            return -1;
        if (p->type == P_UINT)
            *(unsigned *)field = (unsigned)v;
        else
            *(uint16_t *)field = (uint16_t)v;
        return 0;
    case P_DURATION:
        if (duration_parse(value, &v) < 0) {
            snprintf(reason, rlen, "expected a duration such as 30s, 5m, 2h");
            return -1;
        }
        if (check_range(p, v, reason, rlen) < 0)
            return -1;
        *(uint64_t *)field = v;
        return 0;
    case P_SIZE:
        if (p->derived_word != NULL && strcmp(value, p->derived_word) == 0) {
            *(uint64_t *)field = CFG_SIZE_DERIVED;
            return 0;
        }
        if (size_parse(value, &v) < 0) {
            snprintf(reason, rlen, "expected a size such as 512K, 25M, 1G");
            return -1;
        }
        if (check_range(p, v, reason, rlen) < 0)
            return -1;
        *(uint64_t *)field = v;
        return 0;
    case P_ENUM: {
        size_t used = 0;
        for (const struct enum_name *e = p->names; e->name != NULL; e++) {
            if (strcmp(value, e->name) == 0) {
                *(int *)field = e->value;
                return 0;
            }
        }
        used = (size_t)snprintf(reason, rlen, "expected one of:");
        for (const struct enum_name *e = p->names; e->name != NULL && used < rlen; e++) {
            int n =
                snprintf(reason + used, rlen - used, "%s %s", e == p->names ? "" : ",", e->name);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        /* "expected one of: off, domain, address" */
        return -1;
    }
    case P_LISTEN:
        return parse_listen_list(value, p->proxy_marker, field, reason, rlen);
    case P_CIDRS:
        return parse_cidr_list(value, field, reason, rlen);
    case P_HOSTPORT:
    case P_IPPORT:
        return parse_hostport(value, p->type == P_IPPORT, p->default_port, field, reason, rlen);
    }
    snprintf(reason, rlen, "internal error: unknown type");
    return -1;
}
