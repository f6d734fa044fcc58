/*
 * config_table.c - the parameter table: every configuration key is one row here, with its
 * section, its type, where it lives in struct cfg, its default as text and its bounds. Nothing
 * else declares a key: config.c looks keys up here, applies the defaults from here and frees by
 * type from here; config_print.c walks the rows for `config check` (Postfix declares its
 * parameters the same way). This file holds data and the two lookups, no parsing.
 */
#include <stddef.h>
#include <string.h>

#include "common/config_internal.h"
#include "common/pure/duration.h"

/* Enum fields are written through an int; make sure that is their size. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_sender_check) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_denied_style) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_milter_default) == sizeof(int), "enum size");

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
static const struct enum_name milter_default_names[] = {
    {"tempfail", CFG_MILTER_TEMPFAIL},
    {"accept", CFG_MILTER_ACCEPT},
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
 * The one list of parameters, in the order cfg_print() shows them. Bounds:
 * - Counts stop at a million, far beyond what one process can keep open: a mistyped extra
 *   digit is refused instead of silently meaning "no limit".
 * - max_message_size stops at 512M: one message is one SQLite blob, SQLite's default limit is
 *   10^9 bytes (SQLITE_MAX_LENGTH), and normalising bare LF to CRLF can double the stored size.
 * - min_free_space "auto" is twice max_message_size, as Postfix's queue_minfree advises: room
 *   for a message being received and one more, so a full disk refuses mail with a 4xx while
 *   POP3 logins and deletions, which free space, still have room to write.
 * - window_ipv6_prefix starts at /32, the smallest block a registry allocates to an ISP
 *   (RIR policy): a wider window would open relaying to many unrelated networks at once.
 * - timeouts start at 1s so tests can run fast; RFC 5321 4.5.3.2 and RFC 1939 3 ask for
 *   at least 5m and 10m in production, which are the defaults.
 * - the SMTP error limits follow Postfix (smtpd_soft_error_limit 10, smtpd_hard_error_limit 20,
 *   smtpd_error_sleep_time 1s): enough room for a relay probe such as nmap's smtp-open-relay
 *   (16 refused recipients in one session) to finish, while a client that only collects errors
 *   is slowed, then cut off. error_delay stops at a minute, well below smtp.timeout's floor.
 */
const struct param cfg_params[] = {
    PARAM("server", "hostname", P_HOSTNAME, server.hostname, ""),
    PARAM("server", "node", P_HOSTNAME, server.node, ""),
    PARAM("server", "database", P_DATABASE, server.database, "postern.db"),
    PARAM("server", "user", P_USER, server.user, ""),
    PARAM("server", "log_level", P_ENUM, server.log_level, "info", .names = log_level_names),
    PARAM("server", "transcript", P_BOOL, server.transcript, "no"),
    PARAM("server", "faults", P_BOOL, server.faults, "no",
          .warn_text = "turns fault injection on: clients meet the failures `postern fault list` "
                       "shows, on purpose; never in production"),
    PARAM("server", "max_connections", P_UINT, server.max_connections, "1000", .min = 1,
          .max = 1000000),
    PARAM("server", "max_connections_per_ip", P_UINT, server.max_connections_per_ip, "20", .min = 1,
          .max = 1000000),
    /* 0: one event loop per online core (server/serve.c asks sysconf when it starts). */
    PARAM("server", "workers", P_UINT, server.workers, "0", .min = 0, .max = 64),
    /* The Prometheus endpoint (server/metrics/metrics_http.h): off unless set; it has no
     * authentication, so it belongs on loopback or a monitoring network. */
    PARAM("server", "metrics", P_LISTEN, server.metrics, ""),
    /* PROXY protocol (server/net/conn_proxy.c): who may say where a connection comes from. */
    PARAM("server", "proxy_from", P_CIDRS, server.proxy_from, ""),

    PARAM("smtp", "listen", P_LISTEN, smtp.listen, "127.0.0.1:2525", .proxy_marker = true),
    PARAM("smtp", "submission", P_LISTEN, smtp.submission, "127.0.0.1:2587", .proxy_marker = true),
    PARAM("smtp", "submissions", P_LISTEN, smtp.submissions, "127.0.0.1:2465",
          .proxy_marker = true),
    PARAM("smtp", "max_message_size", P_SIZE, smtp.max_message_size_bytes, "25M",
          .min = SIZE_KIB_BYTES, .max = 512 * SIZE_MIB_BYTES),
    PARAM("smtp", "min_free_space", P_SIZE, smtp.min_free_space_bytes, "auto", .min = 0,
          .max = 1024 * SIZE_GIB_BYTES, .derived_word = "auto"),
    PARAM("smtp", "max_recipients", P_UINT, smtp.max_recipients, "100", .min = 1, .max = 100000,
          .warn_below = 100,
          .warn_text = "is below 100, the number RFC 5321 4.5.3.1.8 says a server must accept"),
    PARAM("smtp", "plaintext_auth", P_BOOL, smtp.plaintext_auth, "no"),
    PARAM("smtp", "timeout", P_DURATION, smtp.timeout_ms, "5m", .min = DURATION_MS_PER_SECOND,
          .max = DURATION_MS_PER_DAY),
    PARAM("smtp", "soft_error_limit", P_UINT, smtp.soft_error_limit, "10", .min = 1, .max = 1000),
    PARAM("smtp", "hard_error_limit", P_UINT, smtp.hard_error_limit, "20", .min = 1, .max = 1000),
    PARAM("smtp", "error_delay", P_DURATION, smtp.error_delay_ms, "1s", .min = 0,
          .max = DURATION_MS_PER_MINUTE),

    PARAM("pop3", "listen", P_LISTEN, pop3.listen, "127.0.0.1:1110", .proxy_marker = true),
    PARAM("pop3", "pop3s", P_LISTEN, pop3.pop3s, "127.0.0.1:1995", .proxy_marker = true),
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
    PARAM("relay", "delay_notice", P_DURATION, relay.delay_notice_ms, "4h", .min = 0,
          .max = 365 * DURATION_MS_PER_DAY),

    PARAM("milter", "mx", P_MILTERS, milter.mx, ""),
    PARAM("milter", "submission", P_MILTERS, milter.submission, ""),
    PARAM("milter", "timeout", P_DURATION, milter.timeout_ms, "30s", .min = DURATION_MS_PER_SECOND,
          .max = DURATION_MS_PER_HOUR),
    PARAM("milter", "default_action", P_ENUM, milter.default_action, "tempfail",
          .names = milter_default_names),
};
const size_t cfg_param_count = sizeof(cfg_params) / sizeof(cfg_params[0]);

_Static_assert(sizeof(cfg_params) / sizeof(cfg_params[0]) <= CFG_PARAMS_MAX,
               "raise CFG_PARAMS_MAX in config_internal.h");

const struct param *cfg_param_find(const char *section, const char *key, size_t *index_out)
{
    for (size_t i = 0; i < cfg_param_count; i++) {
        if (strcmp(cfg_params[i].section, section) == 0 && strcmp(cfg_params[i].key, key) == 0) {
            *index_out = i;
            return &cfg_params[i];
        }
    }
    return NULL;
}

const char *cfg_section_find(const char *name)
{
    for (size_t i = 0; i < cfg_param_count; i++) {
        if (strcmp(cfg_params[i].section, name) == 0)
            return cfg_params[i].section;
    }
    return NULL;
}
