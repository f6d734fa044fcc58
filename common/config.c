/*
 * config.c - load, check and print the configuration (config.h has the contract).
 *
 * Every parameter is one row of params[] below: section, key, type, where it lives in struct
 * cfg, its default as text, its bounds. Defaults are applied by feeding the default text through
 * the same setter as a file value, so a default can never be out of its own range, and
 * cfg_print() walks the same rows, so `config check` shows every effective value (Postfix
 * declares its parameters the same way; OpenSMTPD's FILE:LINE errors are the model for ours).
 *
 * inih splits "key = value" and strips comments; everything else is ours. inih calls its
 * handler only for key lines and does not pass line numbers in Debian's build, so we feed it
 * through our own line reader (ini_parse_stream). The reader counts lines, refuses over-long
 * lines and NUL bytes instead of letting them be cut, and checks [section] headers itself, so
 * an unknown section is an error even when it holds no key. The first error stops the parse.
 * This file does not bind, resolve or look anything up: values are checked for form only.
 */
#include "common/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/pure/duration.h"

enum param_type {
    P_HOSTNAME, /* char *, a domain name; "" means the host's own name */
    P_USER,     /* char *, a login name or "" */
    P_SASLNAME, /* char *, a SASL authentication identity or "" */
    P_PATH,     /* char *, resolved against the config file's folder */
    P_BOOL,     /* bool */
    P_UINT,     /* unsigned, min..max */
    P_PORT,     /* uint16_t, min..max */
    P_DURATION, /* uint64_t ms, min..max */
    P_SIZE,     /* uint64_t bytes, min..max */
    P_ENUM,     /* an enum (int-sized), one of names */
    P_LISTEN,   /* struct cfg_listen_list */
    P_HOSTPORT, /* struct cfg_hostport, host is a name or an address */
    P_IPPORT,   /* struct cfg_hostport, host is a numeric address */
};

struct enum_name {
    const char *name;
    int value;
};

struct param {
    const char *section;
    const char *key;
    enum param_type type;
    size_t offset; /* of the field in struct cfg */
    const char *default_text;
    uint64_t min, max;             /* P_UINT, P_PORT, P_DURATION, P_SIZE */
    const struct enum_name *names; /* P_ENUM, ends with a NULL name */
    uint64_t warn_below;           /* P_UINT: a value below this is allowed with a warning */
    const char *warn_text;
    uint16_t default_port; /* P_HOSTPORT, P_IPPORT */
};

/* Enum fields are written through an int; make sure that is their size. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_sender_check) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_denied_style) == sizeof(int), "enum size");

static const struct enum_name log_level_names[] = {
    {"debug", LOG_LEVEL_DEBUG},
    {"info", LOG_LEVEL_INFO},
    {"warn", LOG_LEVEL_WARN},
    {"error", LOG_LEVEL_ERROR},
    {NULL, 0},
};
static const struct enum_name sender_check_names[] = {
    {"off", CFG_SENDER_CHECK_OFF},
    {"domain", CFG_SENDER_CHECK_DOMAIN},
    {"address", CFG_SENDER_CHECK_ADDRESS},
    {NULL, 0},
};
static const struct enum_name denied_style_names[] = {
    {"sendmail", CFG_DENIED_STYLE_SENDMAIL},
    {"qmail", CFG_DENIED_STYLE_QMAIL},
    {NULL, 0},
};

#define PARAM(sec, k, t, field, def, ...)                                                          \
    {                                                                                              \
        .section = (sec), .key = (k), .type = (t), .offset = offsetof(struct cfg, field),          \
        .default_text = (def), __VA_ARGS__                                                         \
    }

/*
 * The one list of parameters, in the order of INTERFACE.md and of cfg_print(). Bounds:
 * - Counts stop at a million, far beyond what one process can keep open: a mistyped extra
 *   digit is refused instead of silently meaning "no limit".
 * - max_message_size stops at 512M: one message is one SQLite blob, SQLite's default limit is
 *   10^9 bytes (SQLITE_MAX_LENGTH), and normalising bare LF to CRLF can double the stored size.
 * - window_ipv6_prefix starts at /32, the smallest block a registry allocates to an ISP
 *   (RIR policy): a wider window would open relaying to many unrelated networks at once.
 * - timeouts start at 1s so tests can run fast; RFC 5321 4.5.3.2 and RFC 1939 3 ask for
 *   at least 5m and 10m in production, which are the defaults.
 */
static const struct param params[] = {
    PARAM("server", "hostname", P_HOSTNAME, server.hostname, ""),
    PARAM("server", "database", P_PATH, server.database, "postern.db"),
    PARAM("server", "user", P_USER, server.user, ""),
    PARAM("server", "log_level", P_ENUM, server.log_level, "info", .names = log_level_names),
    PARAM("server", "transcript", P_BOOL, server.transcript, "no"),
    PARAM("server", "max_connections", P_UINT, server.max_connections, "1000", .min = 1,
          .max = 1000000),
    PARAM("server", "max_connections_per_ip", P_UINT, server.max_connections_per_ip, "20", .min = 1,
          .max = 1000000),

    PARAM("smtp", "listen", P_LISTEN, smtp.listen, "127.0.0.1:2525"),
    PARAM("smtp", "submission", P_LISTEN, smtp.submission, "127.0.0.1:2587"),
    PARAM("smtp", "submissions", P_LISTEN, smtp.submissions, "127.0.0.1:2465"),
    PARAM("smtp", "max_message_size", P_SIZE, smtp.max_message_size_bytes, "25M",
          .min = SIZE_KIB_BYTES, .max = 512 * SIZE_MIB_BYTES),
    PARAM("smtp", "max_recipients", P_UINT, smtp.max_recipients, "100", .min = 1, .max = 100000,
          .warn_below = 100,
          .warn_text = "is below 100, the number RFC 5321 4.5.3.1.8 says a server must accept"),
    PARAM("smtp", "plaintext_auth", P_BOOL, smtp.plaintext_auth, "no"),
    PARAM("smtp", "timeout", P_DURATION, smtp.timeout_ms, "5m", .min = DURATION_MS_PER_SECOND,
          .max = DURATION_MS_PER_DAY),

    PARAM("pop3", "listen", P_LISTEN, pop3.listen, "127.0.0.1:1110"),
    PARAM("pop3", "pop3s", P_LISTEN, pop3.pop3s, "127.0.0.1:1995"),
    PARAM("pop3", "plaintext_auth", P_BOOL, pop3.plaintext_auth, "no"),
    PARAM("pop3", "timeout", P_DURATION, pop3.timeout_ms, "10m", .min = DURATION_MS_PER_SECOND,
          .max = DURATION_MS_PER_DAY),

    PARAM("tls", "certificate", P_PATH, tls.certificate, ""),
    PARAM("tls", "key", P_PATH, tls.key, ""),

    PARAM("relay", "window", P_DURATION, relay.window_ms, "30m", .min = 0,
          .max = 365 * DURATION_MS_PER_DAY),
    PARAM("relay", "window_ipv6_prefix", P_UINT, relay.window_ipv6_prefix, "128", .min = 32,
          .max = 128),
    PARAM("relay", "window_max_recipients", P_UINT, relay.window_max_recipients, "100", .min = 1,
          .max = 1000000),
    PARAM("relay", "sender_check", P_ENUM, relay.sender_check, "domain",
          .names = sender_check_names),
    PARAM("relay", "denied_style", P_ENUM, relay.denied_style, "sendmail",
          .names = denied_style_names),
    PARAM("relay", "smarthost", P_HOSTPORT, relay.smarthost, "", .default_port = 25),
    PARAM("relay", "smarthost_user", P_SASLNAME, relay.smarthost_user, ""),
    PARAM("relay", "smarthost_password_file", P_PATH, relay.smarthost_password_file, ""),
    PARAM("relay", "dns_server", P_IPPORT, relay.dns_server, "", .default_port = 53),
    PARAM("relay", "outbound_port", P_PORT, relay.outbound_port, "25", .min = 1, .max = 65535),
    PARAM("relay", "max_age", P_DURATION, relay.max_age_ms, "5d", .min = DURATION_MS_PER_SECOND,
          .max = 365 * DURATION_MS_PER_DAY),
};
#define PARAM_COUNT (sizeof(params) / sizeof(params[0]))

/* State of one load: where the text comes from, where we are, and the first error. */
struct parse {
    struct cfg *cfg;
    const char *name;     /* FILE in messages; borrowed */
    const char *base_dir; /* for relative paths, or NULL; borrowed */
    FILE *fp;             /* source: a file, or ... */
    const char *text;     /* ... a string (read position); borrowed */
    int read_errno;       /* set when reading fp failed */
    unsigned line;
    const char *section;            /* a params[].section, or NULL before the first header */
    unsigned set_line[PARAM_COUNT]; /* line where each key was set; 0 = not in the file */
    bool failed;
    char *err;
    size_t errlen;
};

/* Text from the file quoted in a message is cut to this many bytes, then "...". */
#define QUOTE_MAX_BYTES 200

/* s, or its first QUOTE_MAX_BYTES bytes and "..." in buf (QUOTE_MAX_BYTES + 4 bytes). */
static const char *quote_cut(const char *s, char buf[QUOTE_MAX_BYTES + 4])
{
    if (strlen(s) <= QUOTE_MAX_BYTES)
        return s;
    memcpy(buf, s, QUOTE_MAX_BYTES);
    memcpy(buf + QUOTE_MAX_BYTES, "...", 4);
    return buf;
}

/* Records the first error only: "NAME:LINE: message", or "NAME: message" when line is 0. */
static void fail(struct parse *ps, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct parse *ps, unsigned line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (ps->failed)
        return;
    ps->failed = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ps->err == NULL || ps->errlen == 0)
        return;
    if (line > 0)
        snprintf(ps->err, ps->errlen, "%s:%u: %s", ps->name, line, msg);
    else
        snprintf(ps->err, ps->errlen, "%s: %s", ps->name, msg);
}

static void *field_of(struct cfg *cfg, const struct param *p)
{
    return (char *)cfg + p->offset;
}

static const void *cfield_of(const struct cfg *cfg, const struct param *p)
{
    return (const char *)cfg + p->offset;
}

static bool is_ascii_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_ascii_alnum(char c)
{
    return is_ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
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

/*
 * RFC 1035 2.3.1 preferred name syntax (with RFC 1123 2.1 leading digits): labels of 1..63
 * letters, digits and inner hyphens, 253 octets in all, no trailing dot. A last label of
 * digits only is refused, so a mistyped IPv4 address is not taken for a name.
 */
static bool is_hostname(const char *s)
{
    size_t len = strlen(s);
    size_t label = 0;
    bool label_all_digits = true;

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char c = s[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            if (c == '\0' && label_all_digits)
                return false;
            label = 0;
            label_all_digits = true;
            continue;
        }
        if (!is_ascii_alnum(c) && c != '-')
            return false;
        if (c == '-' && label == 0)
            return false;
        if (!is_ascii_digit(c))
            label_all_digits = false;
        label++;
    }
    return true;
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
 * CFG_SASLNAME_MAX_BYTES octets without ASCII control characters. Octets above 127 pass as they
 * are (UTF-8 is not checked: the smarthost decides). inih has already trimmed the ends.
 */
static bool is_sasl_name(const char *s)
{
    size_t len = strlen(s);

    if (len > CFG_SASLNAME_MAX_BYTES)
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
    struct cfg_listen addr = {{0}, 0};

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

static bool listen_equal(const struct cfg_listen *a, const struct cfg_listen *b)
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

/* "a, b, c" into out; "" is an empty list (the service is off). */
static int parse_listen_list(const char *value, struct cfg_listen_list *out, char *reason,
                             size_t rlen)
{
    struct cfg_listen_list list;
    const char *p = value;

    memset(&list, 0, sizeof(list));
    if (*value == '\0') {
        *out = list;
        return 0;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char item[160];
        struct cfg_listen addr;

        while (n > 0 && is_blank(*p)) {
            p++;
            n--;
        }
        while (n > 0 && is_blank(p[n - 1]))
            n--;
        if (n == 0) {
            snprintf(reason, rlen, "empty entry in the list");
            return -1;
        }
        if (n >= sizeof(item)) {
            snprintf(reason, rlen, "%s", listen_hint);
            return -1;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        if (strpbrk(item, " \t") != NULL) {
            snprintf(reason, rlen, "separate addresses with commas");
            return -1;
        }
        if (list.count == CFG_LISTEN_MAX) {
            snprintf(reason, rlen, "at most %d addresses", CFG_LISTEN_MAX);
            return -1;
        }
        if (parse_listen(item, &addr, reason, rlen) < 0)
            return -1;
        for (size_t i = 0; i < list.count; i++) {
            if (listen_equal(&list.addrs[i], &addr)) {
                char text[96];
                cfg_listen_format(&addr, text, sizeof(text));
                snprintf(reason, rlen, "%s is listed twice", text);
                return -1;
            }
        }
        list.addrs[list.count++] = addr;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    *out = list;
    return 0;
}

/*
 * smarthost / dns_server: "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address.
 * numeric_only refuses names (dns_server must not need DNS to be found).
 */
static int parse_hostport(const char *value, bool numeric_only, uint16_t default_port,
                          struct cfg_hostport *out, char *reason, size_t rlen)
{
    struct cfg_hostport hp;
    char host[CFG_HOST_MAX_BYTES];
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
        if (numeric_only || strchr(host, ':') != NULL || !is_hostname(host)) {
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

static void hostport_format(const struct cfg_hostport *hp, char *buf, size_t len)
{
    if (hp->host[0] == '\0')
        snprintf(buf, len, "%s", "");
    else if (strchr(hp->host, ':') != NULL)
        snprintf(buf, len, "[%s]:%u", hp->host, (unsigned)hp->port);
    else
        snprintf(buf, len, "%s:%u", hp->host, (unsigned)hp->port);
}

/* The host's own name when it is a usable domain name, else "localhost". */
static void default_hostname(char *buf, size_t len)
{
    char name[CFG_HOST_MAX_BYTES];

    if (gethostname(name, sizeof(name)) == 0) {
        name[sizeof(name) - 1] = '\0'; /* POSIX leaves a cut name unterminated */
        if (is_hostname(name)) {
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

/* Parses value for p into the cfg; on error, reason says why and the cfg is unchanged. */
static int set_param(struct parse *ps, const struct param *p, const char *value, char *reason,
                     size_t rlen)
{
    void *field = field_of(ps->cfg, p);
    uint64_t v;

    switch (p->type) {
    case P_HOSTNAME: {
        char name[CFG_HOST_MAX_BYTES];
        if (value[0] == '\0') {
            default_hostname(name, sizeof(name));
        } else if (is_hostname(value)) {
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
                     CFG_SASLNAME_MAX_BYTES);
            return -1;
        }
        return set_string(field, strdup(value), reason, rlen);
    case P_PATH: {
        char *path = resolve_path(ps->base_dir, value);
        if (path != NULL && strlen(path) >= PATH_MAX) {
            free(path);
            snprintf(reason, rlen, "path longer than %d bytes", PATH_MAX - 1);
            return -1;
        }
        return set_string(field, path, reason, rlen);
    }
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
        return parse_listen_list(value, field, reason, rlen);
    case P_HOSTPORT:
    case P_IPPORT:
        return parse_hostport(value, p->type == P_IPPORT, p->default_port, field, reason, rlen);
    }
    snprintf(reason, rlen, "internal error: unknown type");
    return -1;
}

/* Canonical text of p's value; the same text set_param accepts back. */
static void format_param(const struct cfg *cfg, const struct param *p, char *buf, size_t len)
{
    const void *field = cfield_of(cfg, p);

    buf[0] = '\0';
    switch (p->type) {
    case P_HOSTNAME:
    case P_USER:
    case P_SASLNAME:
    case P_PATH: {
        const char *s = *(char *const *)field;
        snprintf(buf, len, "%s", s != NULL ? s : "");
        break;
    }
    case P_BOOL:
        snprintf(buf, len, "%s", *(const bool *)field ? "yes" : "no");
        break;
    case P_UINT:
        snprintf(buf, len, "%u", *(const unsigned *)field);
        break;
    case P_PORT:
        snprintf(buf, len, "%u", (unsigned)*(const uint16_t *)field);
        break;
    case P_DURATION:
        duration_format(*(const uint64_t *)field, buf, len);
        break;
    case P_SIZE:
        size_format(*(const uint64_t *)field, buf, len);
        break;
    case P_ENUM:
        for (const struct enum_name *e = p->names; e->name != NULL; e++) {
            if (*(const int *)field == e->value) {
                snprintf(buf, len, "%s", e->name);
                break;
            }
        }
        break;
    case P_LISTEN: {
        const struct cfg_listen_list *list = field;
        size_t used = 0;
        for (size_t i = 0; i < list->count && used < len; i++) {
            char text[96];
            cfg_listen_format(&list->addrs[i], text, sizeof(text));
            int n = snprintf(buf + used, len - used, "%s%s", i > 0 ? ", " : "", text);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        break;
    }
    case P_HOSTPORT:
    case P_IPPORT:
        hostport_format(field, buf, len);
        break;
    }
}

static void add_warning(struct parse *ps, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_warning(struct parse *ps, unsigned line, const char *fmt, ...)
{
    struct cfg *cfg = ps->cfg;
    va_list ap;

    if (cfg->warning_count == CFG_WARNINGS_MAX)
        return;
    char *slot = cfg->warnings[cfg->warning_count++];
    int n = snprintf(slot, CFG_WARNING_MAX_BYTES, "%s:%u: ", ps->name, line);
    if (n < 0 || n >= CFG_WARNING_MAX_BYTES)
        return; /* a name this long leaves no room: the cut prefix is all we can say */
    va_start(ap, fmt);
    vsnprintf(slot + n, CFG_WARNING_MAX_BYTES - (size_t)n, fmt, ap);
    va_end(ap);
}

static const struct param *find_param(const char *section, const char *key, size_t *index_out)
{
    for (size_t i = 0; i < PARAM_COUNT; i++) {
        if (strcmp(params[i].section, section) == 0 && strcmp(params[i].key, key) == 0) {
            *index_out = i;
            return &params[i];
        }
    }
    return NULL;
}

/* The params[].section string equal to name, or NULL when no parameter lives there. */
static const char *find_section(const char *name)
{
    for (size_t i = 0; i < PARAM_COUNT; i++) {
        if (strcmp(params[i].section, name) == 0)
            return params[i].section;
    }
    return NULL;
}

/* inih calls this for each "key = value" line, right after our reader returned that line. */
static int ini_handler_cb(void *user, const char *ini_section, const char *key, const char *value)
{
    struct parse *ps = user;
    const struct param *p;
    size_t index;
    char reason[256];
    char kbuf[QUOTE_MAX_BYTES + 4], vbuf[QUOTE_MAX_BYTES + 4];

    (void)ini_section; /* ours is ps->section, checked by the reader */
    if (ps->failed)
        return 0;
    if (key[0] == '\0') {
        fail(ps, ps->line, "syntax error");
        return 0;
    }
    if (ps->section == NULL) {
        fail(ps, ps->line, "key \"%s\" outside any [section]", quote_cut(key, kbuf));
        return 0;
    }
    p = find_param(ps->section, key, &index);
    if (p == NULL) {
        fail(ps, ps->line, "unknown key \"%s\" in [%s]", quote_cut(key, kbuf), ps->section);
        return 0;
    }
    if (ps->set_line[index] != 0) {
        fail(ps, ps->line, "duplicate key \"%s\" in [%s] (first set on line %u)", key, ps->section,
             ps->set_line[index]);
        return 0;
    }
    if (set_param(ps, p, value, reason, sizeof(reason)) < 0) {
        fail(ps, ps->line, "bad value \"%s\" for %s in [%s]: %s", quote_cut(value, vbuf), key,
             ps->section, reason);
        return 0;
    }
    ps->set_line[index] = ps->line;
    if (p->type == P_UINT && *(const unsigned *)field_of(ps->cfg, p) < p->warn_below)
        add_warning(ps, ps->line, "%s = %s in [%s] %s", key, value, ps->section, p->warn_text);
    return 1;
}

static int src_getc(struct parse *ps)
{
    if (ps->fp != NULL) {
        int c = getc(ps->fp);
        if (c == EOF && ferror(ps->fp))
            ps->read_errno = errno != 0 ? errno : EIO;
        return c;
    }
    if (*ps->text == '\0')
        return EOF;
    return (unsigned char)*ps->text++;
}

/* Checks a "[name]" line (s points at '['); sets ps->section or fails. */
static void check_section_line(struct parse *ps, const char *s)
{
    const char *close = strchr(s, ']');
    const char *after;
    char name[64];
    size_t n;

    if (close == NULL) {
        fail(ps, ps->line, "syntax error");
        return;
    }
    for (after = close + 1; is_blank(*after) || *after == '\n'; after++)
        ;
    if (*after != '\0' && *after != ';' && *after != '#') {
        fail(ps, ps->line, "syntax error");
        return;
    }
    s++;
    while (s < close && is_blank(*s))
        s++;
    while (close > s && is_blank(close[-1]))
        close--;
    n = (size_t)(close - s);
    if (n >= sizeof(name))
        n = sizeof(name) - 1; /* only for the message: no known name is this long */
    memcpy(name, s, n);
    name[n] = '\0';
    ps->section = find_section(name);
    if (ps->section == NULL)
        fail(ps, ps->line, "unknown section [%s]", name);
}

/*
 * inih's fgets-like reader. Hands out one whole line per call, and is where line numbers,
 * line length, NUL bytes and section headers are checked (inih would cut a long line, stop at
 * a NUL, and never tell us about a header). Returning NULL ends the parse: at end of input,
 * and after the first error so that a later line cannot replace it.
 */
static char *ini_reader_cb(char *buf, int num, void *stream)
{
    struct parse *ps = stream;
    size_t cap = (size_t)num - 2; /* room for '\n' and NUL */
    size_t n = 0, len = 0;
    bool any = false, nul = false, cr = false;
    int c;

    if (ps->failed)
        return NULL;
    if (num < CFG_LINE_MAX_BYTES + 3) {
        fail(ps, 0, "internal error: inih line buffer of %d bytes", num);
        return NULL;
    }
    while ((c = src_getc(ps)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        if (c == '\0')
            nul = true;
        /* A CR counts as part of the line until we know it ends it (CRLF). */
        if (cr)
            len++;
        cr = c == '\r';
        if (!cr)
            len++;
        if (n < cap)
            buf[n++] = (char)c;
    }
    if (ps->read_errno != 0) {
        fail(ps, 0, "cannot read: %s", strerror(ps->read_errno));
        return NULL;
    }
    if (!any)
        return NULL;
    ps->line++;
    if (len > CFG_LINE_MAX_BYTES) {
        fail(ps, ps->line, "line too long (limit %d bytes)", CFG_LINE_MAX_BYTES);
        return NULL;
    }
    if (nul) {
        fail(ps, ps->line, "syntax error");
        return NULL;
    }
    buf[n++] = '\n';
    buf[n] = '\0';

    /* A UTF-8 byte order mark before the first line is allowed and dropped. */
    if (ps->line == 1 && strncmp(buf, "\xEF\xBB\xBF", 3) == 0)
        memmove(buf, buf + 3, n - 3 + 1);

    const char *s = buf;
    while (is_blank(*s))
        s++;
    if (*s == '\n' || *s == ';' || *s == '#')
        return buf;
    if (*s == '[') {
        check_section_line(ps, s);
        return ps->failed ? NULL : buf;
    }
    /* "key: value" is inih's concession to Python; we keep one syntax. */
    const char *eq = strchr(s, '=');
    const char *colon = strchr(s, ':');
    if (eq == NULL || (colon != NULL && colon < eq) || eq == s) {
        fail(ps, ps->line, "syntax error");
        return NULL;
    }
    return buf;
}

/* inih's options are process-wide; set ours for one parse and put the old ones back. */
struct ini_options {
    bool allow_multiline, allow_bom, allow_inline_comments, stop_on_first_error, allow_no_value;
    bool use_stack;
    int max_line;
    char *start_comment_prefixes, *inline_comment_prefixes;
};

static void ini_options_save(struct ini_options *o)
{
    o->allow_multiline = ini_allow_multiline;
    o->allow_bom = ini_allow_bom;
    o->allow_inline_comments = ini_allow_inline_comments;
    o->stop_on_first_error = ini_stop_on_first_error;
    o->allow_no_value = ini_allow_no_value;
    o->use_stack = ini_use_stack;
    o->max_line = ini_max_line;
    o->start_comment_prefixes = ini_start_comment_prefixes;
    o->inline_comment_prefixes = ini_inline_comment_prefixes;
}

static void ini_options_restore(const struct ini_options *o)
{
    ini_allow_multiline = o->allow_multiline;
    ini_allow_bom = o->allow_bom;
    ini_allow_inline_comments = o->allow_inline_comments;
    ini_stop_on_first_error = o->stop_on_first_error;
    ini_allow_no_value = o->allow_no_value;
    ini_use_stack = o->use_stack;
    ini_max_line = o->max_line;
    ini_start_comment_prefixes = o->start_comment_prefixes;
    ini_inline_comment_prefixes = o->inline_comment_prefixes;
}

static void ini_options_ours(void)
{
    static char comment_prefixes[] = ";#";

    ini_allow_multiline = false; /* "key = a" + "  b" would silently be "a\nb" */
    ini_allow_bom = false;       /* the reader drops it */
    ini_allow_inline_comments = true;
    ini_inline_comment_prefixes = comment_prefixes;
    ini_start_comment_prefixes = comment_prefixes;
    ini_stop_on_first_error = true;
    ini_allow_no_value = false;
    /* The stack buffer is exactly ini_max_line bytes: line, CR LF and NUL (ini.h). */
    ini_use_stack = true;
    ini_max_line = CFG_LINE_MAX_BYTES + 3;
}

static int apply_defaults(struct parse *ps)
{
    char reason[256];

    for (size_t i = 0; i < PARAM_COUNT; i++) {
        if (set_param(ps, &params[i], params[i].default_text, reason, sizeof(reason)) < 0) {
            fail(ps, 0, "default of %s in [%s]: %s", params[i].key, params[i].section, reason);
            return -1;
        }
    }
    return 0;
}

/* Checks that involve more than one key. */
static void check_cross(struct parse *ps)
{
    const struct cfg *cfg = ps->cfg;

    if ((cfg->tls.certificate[0] == '\0') != (cfg->tls.key[0] == '\0')) {
        fail(ps, 0, "[tls] certificate and key must be set together");
        return;
    }
    /* Smarthost AUTH needs both halves, and a smarthost to send them to. */
    if ((cfg->relay.smarthost_user[0] == '\0') != (cfg->relay.smarthost_password_file[0] == '\0')) {
        fail(ps, 0, "[relay] smarthost_user and smarthost_password_file must be set together");
        return;
    }
    if (cfg->relay.smarthost_user[0] != '\0' && cfg->relay.smarthost.host[0] == '\0') {
        fail(ps, 0, "[relay] smarthost_user is set but smarthost is not");
        return;
    }
    /* The same address:port on two listeners would fail at bind time; say it now. */
    for (size_t i = 0; i < PARAM_COUNT; i++) {
        if (params[i].type != P_LISTEN)
            continue;
        const struct cfg_listen_list *a = cfield_of(cfg, &params[i]);
        for (size_t j = i + 1; j < PARAM_COUNT; j++) {
            if (params[j].type != P_LISTEN)
                continue;
            const struct cfg_listen_list *b = cfield_of(cfg, &params[j]);
            for (size_t x = 0; x < a->count; x++) {
                for (size_t y = 0; y < b->count; y++) {
                    if (!listen_equal(&a->addrs[x], &b->addrs[y]))
                        continue;
                    char text[96];
                    cfg_listen_format(&a->addrs[x], text, sizeof(text));
                    fail(ps, 0, "%s is in both [%s] %s and [%s] %s", text, params[i].section,
                         params[i].key, params[j].section, params[j].key);
                    return;
                }
            }
        }
    }
}

/* Defaults, then the source in ps (if any), then the cross checks. */
static int load(struct parse *ps)
{
    struct cfg *cfg = ps->cfg;

    memset(cfg, 0, sizeof(*cfg));
    if (ps->err != NULL && ps->errlen > 0)
        ps->err[0] = '\0';
    if (apply_defaults(ps) == 0 && (ps->fp != NULL || ps->text != NULL)) {
        struct ini_options saved;
        ini_options_save(&saved);
        ini_options_ours();
        int r = ini_parse_stream(ini_reader_cb, ps, ini_handler_cb, ps);
        ini_options_restore(&saved);
        if (r > 0)
            fail(ps, (unsigned)r, "syntax error"); /* one inih found; ignored if we have one */
        else if (r < 0)
            fail(ps, 0, "out of memory");
    }
    if (!ps->failed)
        check_cross(ps);
    if (ps->failed) {
        cfg_free(cfg);
        memset(cfg, 0, sizeof(*cfg));
        return -1;
    }
    return 0;
}

int cfg_init_defaults(struct cfg *cfg)
{
    struct parse ps;

    memset(&ps, 0, sizeof(ps));
    ps.cfg = cfg;
    ps.name = "(defaults)";
    return load(&ps);
}

int cfg_load_string(struct cfg *cfg, const char *text, const char *name_for_errors,
                    const char *base_dir, char *err, size_t errlen)
{
    struct parse ps;

    memset(&ps, 0, sizeof(ps));
    ps.cfg = cfg;
    ps.name = name_for_errors != NULL ? name_for_errors : "(string)";
    ps.base_dir = base_dir;
    ps.text = text != NULL ? text : "";
    ps.err = err;
    ps.errlen = errlen;
    return load(&ps);
}

int cfg_load(struct cfg *cfg, const char *path, char *err, size_t errlen)
{
    struct parse ps;
    char *copy = NULL;
    char *base_dir = NULL;
    int rc = -1;

    memset(&ps, 0, sizeof(ps));
    memset(cfg, 0, sizeof(*cfg));
    ps.cfg = cfg;
    ps.name = path;
    ps.err = err;
    ps.errlen = errlen;
    ps.fp = fopen(path, "r");
    if (ps.fp == NULL) {
        fail(&ps, 0, "cannot open: %s", strerror(errno));
        return -1;
    }
    /* Resolve the folder now: relative paths must not depend on a later chdir. */
    copy = strdup(path);
    if (copy == NULL) {
        fail(&ps, 0, "out of memory");
        goto out;
    }
    base_dir = realpath(dirname(copy), NULL);
    if (base_dir == NULL) {
        fail(&ps, 0, "cannot open: %s", strerror(errno));
        goto out;
    }
    ps.base_dir = base_dir;
    rc = load(&ps);
out:
    if (fclose(ps.fp) != 0 && rc == 0) {
        fail(&ps, 0, "cannot read: %s", strerror(errno));
        cfg_free(cfg);
        memset(cfg, 0, sizeof(*cfg));
        rc = -1;
    }
    free(base_dir);
    free(copy);
    return rc;
}

int cfg_print(const struct cfg *cfg, FILE *out)
{
    const char *section = NULL;
    char value[CFG_LINE_MAX_BYTES];

    for (size_t i = 0; i < PARAM_COUNT; i++) {
        const struct param *p = &params[i];
        if (section == NULL || strcmp(section, p->section) != 0) {
            if (fprintf(out, "%s[%s]\n", section != NULL ? "\n" : "", p->section) < 0)
                return -1;
            section = p->section;
        }
        format_param(cfg, p, value, sizeof(value));
        if (fprintf(out, "%s =%s%s\n", p->key, value[0] != '\0' ? " " : "", value) < 0)
            return -1;
    }
    return fflush(out) == 0 ? 0 : -1;
}

void cfg_free(struct cfg *cfg)
{
    for (size_t i = 0; i < PARAM_COUNT; i++) {
        const struct param *p = &params[i];
        if (p->type == P_HOSTNAME || p->type == P_USER || p->type == P_SASLNAME ||
            p->type == P_PATH) {
            char **slot = field_of(cfg, p);
            free(*slot);
            *slot = NULL;
        }
    }
}

bool cfg_has_tls(const struct cfg *cfg)
{
    return cfg->tls.certificate != NULL && cfg->tls.certificate[0] != '\0' &&
           cfg->tls.key != NULL && cfg->tls.key[0] != '\0';
}
