/*
 * test_config.c - unit tests for common/config.c: every default, every key with its accepted
 * forms, every error message compared as an exact string (unknown section, also an empty one;
 * unknown key; key outside a section; duplicate key; bad value with each kind of reason; syntax
 * errors; line too long; cannot open; the cross-key checks), warnings, comments and line
 * endings, relative path resolution (strings and a real file in a temporary folder), cfg_print
 * output loading back to an identical struct, and inih's global options being restored.
 *
 * Most cases use cfg_load_string with the name "t.conf" and base folder "/base"; a few write a
 * temporary file to test what only a file can show (NUL bytes, a folder, realpath).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/pure/duration.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define S  DURATION_MS_PER_SECOND
#define MI DURATION_MS_PER_MINUTE
#define H  DURATION_MS_PER_HOUR
#define D  DURATION_MS_PER_DAY

/* What config.c should pick when hostname is empty: the same rule, written independently. */
static void expected_hostname(char *buf, size_t len)
{
    char name[256];
    if (gethostname(name, sizeof(name)) != 0)
        name[0] = '\0';
    name[sizeof(name) - 1] = '\0';
    /* Only the common case is rebuilt here; a test host with an odd name gets "localhost". */
    bool ok = name[0] != '\0' && strlen(name) <= 253;
    for (const char *p = name; ok && *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.'))
            ok = false;
    }
    snprintf(buf, len, "%s", ok ? name : "localhost");
}

static void must_load(struct cfg *cfg, const char *text)
{
    char err[512] = "";
    if (cfg_load_string(cfg, text, "t.conf", "/base", err, sizeof(err)) != 0)
        fail_msg("cfg_load_string failed on:\n%s\nerror: %s", text, err);
}

static void listen_text(const struct cfg_listen_list *list, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < list->count; i++) {
        char one[96];
        cfg_listen_format(&list->addrs[i], one, sizeof(one));
        used += (size_t)snprintf(buf + used, len - used, "%s%s%s", i ? "," : "", one,
                                 list->addrs[i].proxy ? " proxy" : "");
    }
}

static void cidrs_text(const struct cfg_cidr_list *list, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < list->count; i++) {
        char one[CIDR_STRLEN];
        cidr_format(&list->nets[i], one, sizeof(one));
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "," : "", one);
    }
}

/* ---- defaults ---------------------------------------------------------------------------- */

static void check_defaults(const struct cfg *cfg, const char *want_database)
{
    char host[256], text[512];

    expected_hostname(host, sizeof(host));
    assert_string_equal(cfg->server.hostname, host);
    assert_string_equal(cfg->server.database, want_database);
    assert_string_equal(cfg->server.user, "");
    assert_int_equal(cfg->server.log_level, LOG_LEVEL_INFO);
    assert_false(cfg->server.transcript);
    assert_int_equal(cfg->server.max_connections, 1000);
    assert_int_equal(cfg->server.max_connections_per_ip, 20);
    assert_int_equal(cfg->server.workers, 0);
    assert_int_equal(cfg->server.metrics.count, 0); /* off unless configured */

    listen_text(&cfg->smtp.listen, text, sizeof(text));
    assert_string_equal(text, "127.0.0.1:2525");
    listen_text(&cfg->smtp.submission, text, sizeof(text));
    assert_string_equal(text, "127.0.0.1:2587");
    listen_text(&cfg->smtp.submissions, text, sizeof(text));
    assert_string_equal(text, "127.0.0.1:2465");
    assert_int_equal(cfg->smtp.listen.count, 1);
    assert_string_equal(cfg->smtp.listen.addrs[0].host, "127.0.0.1");
    assert_int_equal(cfg->smtp.listen.addrs[0].port, 2525);
    assert_int_equal(cfg->smtp.max_message_size_bytes, 25 * 1024 * 1024);
    assert_int_equal(cfg->smtp.min_free_space_bytes, 50 * 1024 * 1024); /* "auto": twice that */
    assert_int_equal(cfg->smtp.max_recipients, 100);
    assert_false(cfg->smtp.plaintext_auth);
    assert_int_equal(cfg->smtp.timeout_ms, 5 * MI);
    assert_int_equal(cfg->smtp.soft_error_limit, 10);
    assert_int_equal(cfg->smtp.hard_error_limit, 20);
    assert_int_equal(cfg->smtp.error_delay_ms, S);

    listen_text(&cfg->pop3.listen, text, sizeof(text));
    assert_string_equal(text, "127.0.0.1:1110");
    listen_text(&cfg->pop3.pop3s, text, sizeof(text));
    assert_string_equal(text, "127.0.0.1:1995");
    assert_false(cfg->pop3.plaintext_auth);
    assert_int_equal(cfg->pop3.timeout_ms, 10 * MI);

    assert_string_equal(cfg->tls.certificate, "");
    assert_string_equal(cfg->tls.key, "");
    assert_false(cfg_has_tls(cfg));

    assert_int_equal(cfg->relay.window_ms, 30 * MI);
    assert_int_equal(cfg->relay.window_ipv6_prefix, 128);
    assert_int_equal(cfg->relay.window_max_recipients, 100);
    assert_int_equal(cfg->relay.sender_check, CFG_SENDER_CHECK_DOMAIN);
    assert_int_equal(cfg->relay.denied_style, CFG_DENIED_STYLE_SENDMAIL);
    assert_string_equal(cfg->relay.smarthost.host, "");
    assert_int_equal(cfg->relay.smarthost.port, 0);
    assert_string_equal(cfg->relay.smarthost_user, "");
    assert_string_equal(cfg->relay.smarthost_password_file, "");
    assert_string_equal(cfg->relay.dns_server.host, "");
    assert_int_equal(cfg->relay.dns_server.port, 0);
    assert_int_equal(cfg->relay.outbound_port, 25);
    assert_int_equal(cfg->relay.max_age_ms, 5 * D);
    assert_int_equal(cfg->relay.delay_notice_ms, 4 * H);
    assert_int_equal(cfg->warning_count, 0);
}

static void test_defaults(void **state)
{
    struct cfg cfg;
    (void)state;

    assert_int_equal(cfg_init_defaults(&cfg), 0);
    check_defaults(&cfg, "postern.db"); /* no file: relative to the current folder */
    cfg_free(&cfg);

    /* An empty file changes nothing but where the database lives. */
    must_load(&cfg, "");
    check_defaults(&cfg, "/base/postern.db");
    cfg_free(&cfg);

    /* Only comments and blank lines, and sections with no keys. */
    must_load(&cfg,
              "; nothing\n# still nothing\n\n   \n[server]\n[smtp]\n[pop3]\n[tls]\n[relay]\n");
    check_defaults(&cfg, "/base/postern.db");
    cfg_free(&cfg);
}

/* ---- every key, every accepted form ------------------------------------------------------ */

enum kind { K_STR, K_BOOL, K_UINT, K_U16, K_U64, K_ENUM, K_LISTEN, K_HOSTPORT, K_CIDRS };

struct ok_case {
    const char *section;
    const char *key;
    const char *value;
    enum kind kind;
    size_t offset;
    uint64_t want_u;    /* K_BOOL K_UINT K_U16 K_U64 K_ENUM, K_HOSTPORT port */
    const char *want_s; /* K_STR, K_LISTEN (comma-joined cfg_listen_format, " proxy" marks),
                           K_HOSTPORT host, K_CIDRS (comma-joined cidr_format) */
    const char *also;   /* extra lines for the same section, or NULL */
};

#define OFF(field) offsetof(struct cfg, field)

static const struct ok_case ok_cases[] = {
    {"server", "hostname", "mail.example.test", K_STR, OFF(server.hostname), 0, "mail.example.test",
     NULL},
    {"server", "hostname", "localhost", K_STR, OFF(server.hostname), 0, "localhost", NULL},
    {"server", "node", "mx-2.example.test", K_STR, OFF(server.node), 0, "mx-2.example.test", NULL},
    {"server", "node", "a", K_STR, OFF(server.node), 0, "a", NULL},
    {"server", "hostname", "a-1.b2.example", K_STR, OFF(server.hostname), 0, "a-1.b2.example",
     NULL},
    {"server", "database", "data/p.db", K_STR, OFF(server.database), 0, "/base/data/p.db", NULL},
    {"server", "database", "/var/lib/postern/p.db", K_STR, OFF(server.database), 0,
     "/var/lib/postern/p.db", NULL},
    {"server", "database", "../p.db", K_STR, OFF(server.database), 0, "/base/../p.db", NULL},
    /* A PostgreSQL connection string is kept as written, never resolved against /base. */
    {"server", "database", "postgresql://postern@db1/mail", K_STR, OFF(server.database), 0,
     "postgresql://postern@db1/mail", NULL},
    {"server", "database", "postgres://db1:5433/mail?sslmode=require", K_STR, OFF(server.database),
     0, "postgres://db1:5433/mail?sslmode=require", NULL},
    {"server", "database", "host=db1 dbname=mail user=postern", K_STR, OFF(server.database), 0,
     "host=db1 dbname=mail user=postern", NULL},
    {"server", "database", "./host=x", K_STR, OFF(server.database), 0, "/base/./host=x", NULL},
    {"server", "user", "postern", K_STR, OFF(server.user), 0, "postern", NULL},
    {"server", "user", "", K_STR, OFF(server.user), 0, "", NULL},
    {"server", "user", "mail_user.1", K_STR, OFF(server.user), 0, "mail_user.1", NULL},
    {"server", "log_level", "debug", K_ENUM, OFF(server.log_level), LOG_LEVEL_DEBUG, NULL, NULL},
    {"server", "log_level", "info", K_ENUM, OFF(server.log_level), LOG_LEVEL_INFO, NULL, NULL},
    {"server", "log_level", "warn", K_ENUM, OFF(server.log_level), LOG_LEVEL_WARN, NULL, NULL},
    {"server", "log_level", "error", K_ENUM, OFF(server.log_level), LOG_LEVEL_ERROR, NULL, NULL},
    {"server", "transcript", "yes", K_BOOL, OFF(server.transcript), 1, NULL, NULL},
    {"server", "transcript", "true", K_BOOL, OFF(server.transcript), 1, NULL, NULL},
    {"server", "transcript", "on", K_BOOL, OFF(server.transcript), 1, NULL, NULL},
    {"server", "transcript", "1", K_BOOL, OFF(server.transcript), 1, NULL, NULL},
    {"server", "transcript", "YES", K_BOOL, OFF(server.transcript), 1, NULL, NULL},
    {"server", "transcript", "no", K_BOOL, OFF(server.transcript), 0, NULL, NULL},
    {"server", "transcript", "false", K_BOOL, OFF(server.transcript), 0, NULL, NULL},
    {"server", "transcript", "off", K_BOOL, OFF(server.transcript), 0, NULL, NULL},
    {"server", "transcript", "0", K_BOOL, OFF(server.transcript), 0, NULL, NULL},
    {"server", "faults", "yes", K_BOOL, OFF(server.faults), 1, NULL, NULL},
    {"server", "faults", "no", K_BOOL, OFF(server.faults), 0, NULL, NULL},
    {"server", "max_connections", "1", K_UINT, OFF(server.max_connections), 1, NULL, NULL},
    {"server", "max_connections", "1000000", K_UINT, OFF(server.max_connections), 1000000, NULL,
     NULL},
    {"server", "max_connections_per_ip", "5", K_UINT, OFF(server.max_connections_per_ip), 5, NULL,
     NULL},
    {"server", "workers", "2", K_UINT, OFF(server.workers), 2, NULL, NULL},
    {"server", "metrics", "127.0.0.1:9154", K_LISTEN, OFF(server.metrics), 0, "127.0.0.1:9154",
     NULL},
    {"server", "metrics", "", K_LISTEN, OFF(server.metrics), 0, "", NULL},
    {"server", "proxy_from", "10.0.0.0/8, 2001:db8::/32", K_CIDRS, OFF(server.proxy_from), 0,
     "10.0.0.0/8,2001:db8::/32", NULL},
    {"server", "proxy_from", "192.0.2.7,::ffff:198.51.100.0/120", K_CIDRS, OFF(server.proxy_from),
     0, "192.0.2.7/32,198.51.100.0/24", NULL},
    {"server", "proxy_from", "", K_CIDRS, OFF(server.proxy_from), 0, "", NULL},
    {"smtp", "listen", "10.0.0.5:25 proxy, 127.0.0.1:25", K_LISTEN, OFF(smtp.listen), 0,
     "10.0.0.5:25 proxy,127.0.0.1:25", "[server]\nproxy_from = 10.0.0.0/24\n"},
    {"smtp", "submissions", "[::1]:465  proxy", K_LISTEN, OFF(smtp.submissions), 0,
     "[::1]:465 proxy", "[server]\nproxy_from = ::1\n"},
    {"pop3", "listen", "*:110 proxy", K_LISTEN, OFF(pop3.listen), 0, "*:110 proxy",
     "[server]\nproxy_from = 10.0.0.0/24\n"},

    {"smtp", "listen", "127.0.0.1:25", K_LISTEN, OFF(smtp.listen), 0, "127.0.0.1:25", NULL},
    {"smtp", "listen", "127.0.0.1:25, [::1]:25", K_LISTEN, OFF(smtp.listen), 0,
     "127.0.0.1:25,[::1]:25", NULL},
    {"smtp", "listen", "127.0.0.1:25,[::1]:25", K_LISTEN, OFF(smtp.listen), 0,
     "127.0.0.1:25,[::1]:25", NULL},
    {"smtp", "listen", "*:25", K_LISTEN, OFF(smtp.listen), 0, "*:25", NULL},
    {"smtp", "listen", "0.0.0.0:25", K_LISTEN, OFF(smtp.listen), 0, "0.0.0.0:25", NULL},
    {"smtp", "listen", "[::]:25", K_LISTEN, OFF(smtp.listen), 0, "[::]:25", NULL},
    {"smtp", "listen", "[0:0::0001]:65535", K_LISTEN, OFF(smtp.listen), 0, "[::1]:65535", NULL},
    {"smtp", "listen", "", K_LISTEN, OFF(smtp.listen), 0, "", NULL},
    {"smtp", "listen",
     "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5,127.0.0.1:6,"
     "127.0.0.1:7,127.0.0.1:8",
     K_LISTEN, OFF(smtp.listen), 0,
     "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5,127.0.0.1:6,127.0.0.1:7,"
     "127.0.0.1:8",
     NULL},
    {"smtp", "listen", "127.0.0.1:25,127.0.0.2:25", K_LISTEN, OFF(smtp.listen), 0,
     "127.0.0.1:25,127.0.0.2:25", NULL},
    {"smtp", "submission", "127.0.0.1:587", K_LISTEN, OFF(smtp.submission), 0, "127.0.0.1:587",
     NULL},
    {"smtp", "submission", "", K_LISTEN, OFF(smtp.submission), 0, "", NULL},
    {"smtp", "submissions", "[::1]:465", K_LISTEN, OFF(smtp.submissions), 0, "[::1]:465", NULL},
    {"smtp", "min_free_space", "auto", K_U64, OFF(smtp.min_free_space_bytes), 2048, NULL,
     "max_message_size = 1K\n"},
    {"smtp", "min_free_space", "0", K_U64, OFF(smtp.min_free_space_bytes), 0, NULL, NULL},
    {"smtp", "min_free_space", "1G", K_U64, OFF(smtp.min_free_space_bytes), 1073741824, NULL, NULL},
    {"smtp", "max_message_size", "1K", K_U64, OFF(smtp.max_message_size_bytes), 1024, NULL, NULL},
    {"smtp", "max_message_size", "1024", K_U64, OFF(smtp.max_message_size_bytes), 1024, NULL, NULL},
    {"smtp", "max_message_size", "10M", K_U64, OFF(smtp.max_message_size_bytes), 10485760, NULL,
     NULL},
    {"smtp", "max_message_size", "512M", K_U64, OFF(smtp.max_message_size_bytes), 536870912, NULL,
     NULL},
    {"smtp", "max_recipients", "1000", K_UINT, OFF(smtp.max_recipients), 1000, NULL, NULL},
    {"smtp", "max_recipients", "100", K_UINT, OFF(smtp.max_recipients), 100, NULL, NULL},
    {"smtp", "plaintext_auth", "yes", K_BOOL, OFF(smtp.plaintext_auth), 1, NULL, NULL},
    {"smtp", "timeout", "1s", K_U64, OFF(smtp.timeout_ms), S, NULL, NULL},
    {"smtp", "timeout", "90", K_U64, OFF(smtp.timeout_ms), 90 * S, NULL, NULL},
    {"smtp", "timeout", "1d", K_U64, OFF(smtp.timeout_ms), D, NULL, NULL},
    {"smtp", "timeout", "1h30m", K_U64, OFF(smtp.timeout_ms), 90 * MI, NULL, NULL},
    {"smtp", "soft_error_limit", "5", K_UINT, OFF(smtp.soft_error_limit), 5, NULL, NULL},
    {"smtp", "hard_error_limit", "1000", K_UINT, OFF(smtp.hard_error_limit), 1000, NULL, NULL},
    {"smtp", "error_delay", "0", K_U64, OFF(smtp.error_delay_ms), 0, NULL, NULL},
    {"smtp", "error_delay", "250ms", K_U64, OFF(smtp.error_delay_ms), 250, NULL, NULL},

    {"pop3", "listen", "[::1]:110", K_LISTEN, OFF(pop3.listen), 0, "[::1]:110", NULL},
    {"pop3", "pop3s", "*:995", K_LISTEN, OFF(pop3.pop3s), 0, "*:995", NULL},
    {"pop3", "pop3s", "", K_LISTEN, OFF(pop3.pop3s), 0, "", NULL},
    {"pop3", "plaintext_auth", "on", K_BOOL, OFF(pop3.plaintext_auth), 1, NULL, NULL},
    {"pop3", "timeout", "20m", K_U64, OFF(pop3.timeout_ms), 20 * MI, NULL, NULL},

    {"tls", "certificate", "cert.pem", K_STR, OFF(tls.certificate), 0, "/base/cert.pem",
     "key = key.pem\n"},
    {"tls", "key", "/etc/ssl/k.pem", K_STR, OFF(tls.key), 0, "/etc/ssl/k.pem",
     "certificate = c.pem\n"},

    {"relay", "window", "0", K_U64, OFF(relay.window_ms), 0, NULL, NULL},
    {"relay", "window", "1h", K_U64, OFF(relay.window_ms), H, NULL, NULL},
    {"relay", "window", "365d", K_U64, OFF(relay.window_ms), 365 * D, NULL, NULL},
    {"relay", "window_ipv6_prefix", "32", K_UINT, OFF(relay.window_ipv6_prefix), 32, NULL, NULL},
    {"relay", "window_ipv6_prefix", "64", K_UINT, OFF(relay.window_ipv6_prefix), 64, NULL, NULL},
    {"relay", "window_ipv6_prefix", "128", K_UINT, OFF(relay.window_ipv6_prefix), 128, NULL, NULL},
    {"relay", "window_max_recipients", "5", K_UINT, OFF(relay.window_max_recipients), 5, NULL,
     NULL},
    {"relay", "sender_check", "off", K_ENUM, OFF(relay.sender_check), CFG_SENDER_CHECK_OFF, NULL,
     NULL},
    {"relay", "sender_check", "domain", K_ENUM, OFF(relay.sender_check), CFG_SENDER_CHECK_DOMAIN,
     NULL, NULL},
    {"relay", "sender_check", "address", K_ENUM, OFF(relay.sender_check), CFG_SENDER_CHECK_ADDRESS,
     NULL, NULL},
    {"relay", "denied_style", "qmail", K_ENUM, OFF(relay.denied_style), CFG_DENIED_STYLE_QMAIL,
     NULL, NULL},
    {"relay", "denied_style", "sendmail", K_ENUM, OFF(relay.denied_style),
     CFG_DENIED_STYLE_SENDMAIL, NULL, NULL},
    {"relay", "smarthost", "relay.example.net", K_HOSTPORT, OFF(relay.smarthost), 25,
     "relay.example.net", NULL},
    {"relay", "smarthost", "relay.example.net:587", K_HOSTPORT, OFF(relay.smarthost), 587,
     "relay.example.net", NULL},
    {"relay", "smarthost", "192.0.2.1:2525", K_HOSTPORT, OFF(relay.smarthost), 2525, "192.0.2.1",
     NULL},
    {"relay", "smarthost", "[2001:db8::1]:26", K_HOSTPORT, OFF(relay.smarthost), 26, "2001:db8::1",
     NULL},
    {"relay", "smarthost", "[::1]", K_HOSTPORT, OFF(relay.smarthost), 25, "::1", NULL},
    {"relay", "smarthost", "2001:db8::1", K_HOSTPORT, OFF(relay.smarthost), 25, "2001:db8::1",
     NULL},
    {"relay", "smarthost", "", K_HOSTPORT, OFF(relay.smarthost), 0, "", NULL},
    {"relay", "smarthost_user", "relay-user", K_STR, OFF(relay.smarthost_user), 0, "relay-user",
     "smarthost = relay.example.net:587\nsmarthost_password_file = pw\n"},
    {"relay", "smarthost_user", "alice@example.test", K_STR, OFF(relay.smarthost_user), 0,
     "alice@example.test", "smarthost = relay.example.net\nsmarthost_password_file = /etc/pw\n"},
    {"relay", "smarthost_user", "caf\xc3\xa9 user", K_STR, OFF(relay.smarthost_user), 0,
     "caf\xc3\xa9 user", "smarthost = relay.example.net\nsmarthost_password_file = pw\n"},
    {"relay", "smarthost_user", "", K_STR, OFF(relay.smarthost_user), 0, "", NULL},
    {"relay", "smarthost_password_file", "secret/pw", K_STR, OFF(relay.smarthost_password_file), 0,
     "/base/secret/pw", "smarthost = relay.example.net\nsmarthost_user = u\n"},
    {"relay", "smarthost_password_file", "/etc/postern/pw", K_STR,
     OFF(relay.smarthost_password_file), 0, "/etc/postern/pw",
     "smarthost = relay.example.net\nsmarthost_user = u\n"},
    {"relay", "smarthost_password_file", "", K_STR, OFF(relay.smarthost_password_file), 0, "",
     NULL},
    {"relay", "dns_server", "127.0.0.1", K_HOSTPORT, OFF(relay.dns_server), 53, "127.0.0.1", NULL},
    {"relay", "dns_server", "127.0.0.1:5353", K_HOSTPORT, OFF(relay.dns_server), 5353, "127.0.0.1",
     NULL},
    {"relay", "dns_server", "[::1]:5353", K_HOSTPORT, OFF(relay.dns_server), 5353, "::1", NULL},
    {"relay", "dns_server", "::1", K_HOSTPORT, OFF(relay.dns_server), 53, "::1", NULL},
    {"relay", "outbound_port", "1", K_U16, OFF(relay.outbound_port), 1, NULL, NULL},
    {"relay", "outbound_port", "65535", K_U16, OFF(relay.outbound_port), 65535, NULL, NULL},
    {"relay", "outbound_port", "2525", K_U16, OFF(relay.outbound_port), 2525, NULL, NULL},
    {"relay", "max_age", "1s", K_U64, OFF(relay.max_age_ms), S, NULL, NULL},
    {"relay", "max_age", "2h", K_U64, OFF(relay.max_age_ms), 2 * H, NULL, NULL},
    {"relay", "delay_notice", "0", K_U64, OFF(relay.delay_notice_ms), 0, NULL, NULL},
    {"relay", "delay_notice", "2s", K_U64, OFF(relay.delay_notice_ms), 2 * S, NULL, NULL},
    {"milter", "mx", "inet:127.0.0.1:11332, unix:/run/opendkim/opendkim.sock", K_STR,
     OFF(milter.mx), 0, "inet:127.0.0.1:11332, unix:/run/opendkim/opendkim.sock", NULL},
    {"milter", "mx", "inet:[::1]:11332", K_STR, OFF(milter.mx), 0, "inet:[::1]:11332", NULL},
    {"milter", "submission", "inet:localhost:8891", K_STR, OFF(milter.submission), 0,
     "inet:localhost:8891", NULL},
    {"milter", "timeout", "1s", K_U64, OFF(milter.timeout_ms), S, NULL, NULL},
    {"milter", "default_action", "accept", K_ENUM, OFF(milter.default_action), CFG_MILTER_ACCEPT,
     NULL, NULL},
    {"milter", "default_action", "tempfail", K_ENUM, OFF(milter.default_action),
     CFG_MILTER_TEMPFAIL, NULL, NULL},
};

static void check_ok_case(const struct ok_case *c, const struct cfg *cfg)
{
    const char *f = (const char *)cfg + c->offset;
    uint64_t got_u = 0;
    char got_s[1024] = "";

    switch (c->kind) {
    case K_STR:
        snprintf(got_s, sizeof(got_s), "%s", *(char *const *)(const void *)f);
        break;
    case K_BOOL:
        got_u = *(const bool *)(const void *)f;
        break;
    case K_UINT:
        got_u = *(const unsigned *)(const void *)f;
        break;
    case K_U16:
        got_u = *(const uint16_t *)(const void *)f;
        break;
    case K_U64:
        got_u = *(const uint64_t *)(const void *)f;
        break;
    case K_ENUM:
        got_u = (uint64_t) * (const int *)(const void *)f;
        break;
    case K_LISTEN:
        listen_text((const struct cfg_listen_list *)(const void *)f, got_s, sizeof(got_s));
        break;
    case K_HOSTPORT: {
        const struct cfg_hostport *hp = (const void *)f;
        snprintf(got_s, sizeof(got_s), "%s", hp->host);
        got_u = hp->port;
        break;
    }
    case K_CIDRS:
        cidrs_text((const struct cfg_cidr_list *)(const void *)f, got_s, sizeof(got_s));
        break;
    }
    if (c->kind == K_STR || c->kind == K_LISTEN || c->kind == K_HOSTPORT || c->kind == K_CIDRS) {
        if (strcmp(got_s, c->want_s) != 0)
            fail_msg("[%s] %s = %s: got \"%s\", want \"%s\"", c->section, c->key, c->value, got_s,
                     c->want_s);
    }
    if (c->kind != K_STR && c->kind != K_LISTEN && c->kind != K_CIDRS && got_u != c->want_u)
        fail_msg("[%s] %s = %s: got %llu, want %llu", c->section, c->key, c->value,
                 (unsigned long long)got_u, (unsigned long long)c->want_u);
}

static void test_every_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(ok_cases); i++) {
        const struct ok_case *c = &ok_cases[i];
        char text[1024];
        struct cfg cfg;
        snprintf(text, sizeof(text), "[%s]\n%s = %s\n%s", c->section, c->key, c->value,
                 c->also ? c->also : "");
        must_load(&cfg, text);
        check_ok_case(c, &cfg);
        cfg_free(&cfg);
    }
}

/* `config check` prints the effective database, with a connection string's password masked. */
static void test_print_masks_database_password(void **state)
{
    (void)state;
    static const struct {
        const char *value, *want;
    } cases[] = {
        {"host=db1 password=sekret dbname=mail", "database = host=db1 password=*** dbname=mail"},
        {"host=db1 password = 'se cret' dbname=mail",
         "database = host=db1 password = *** dbname=mail"},
        {"postgresql://postern:sekret@db1/mail", "database = postgresql://postern:***@db1/mail"},
        {"postgresql://db1/mail?password=sekret&sslmode=require",
         "database = postgresql://db1/mail?password=***&sslmode=require"},
        {"postgresql://postern@db1/mail", "database = postgresql://postern@db1/mail"},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        char text[256];
        snprintf(text, sizeof(text), "[server]\ndatabase = %s\n", cases[i].value);
        struct cfg cfg;
        must_load(&cfg, text);
        char *out = NULL;
        size_t outlen = 0;
        FILE *fp = open_memstream(&out, &outlen);
        assert_non_null(fp);
        assert_int_equal(cfg_print(&cfg, fp), 0);
        assert_int_equal(fclose(fp), 0);
        if (strstr(out, cases[i].want) == NULL)
            fail_msg("%s: printed\n%s", cases[i].value, out);
        assert_null(strstr(out, "sekret"));
        assert_null(strstr(out, "se cret"));
        free(out);
        cfg_free(&cfg);
    }
}

/* Every key cfg_print writes must have at least one row above: a new key needs a test. */
static void test_every_key_is_covered(void **state)
{
    struct cfg cfg;
    char *out = NULL;
    size_t outlen = 0;
    size_t keys = 0;
    (void)state;

    assert_int_equal(cfg_init_defaults(&cfg), 0);
    FILE *fp = open_memstream(&out, &outlen);
    assert_non_null(fp);
    assert_int_equal(cfg_print(&cfg, fp), 0);
    assert_int_equal(fclose(fp), 0);
    cfg_free(&cfg);

    char section[32] = "";
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char key[64];
        if (sscanf(line, "[%31[^]]]", section) == 1)
            continue;
        if (sscanf(line, "%63[a-z0-9_] =", key) != 1)
            continue;
        bool found = false;
        for (size_t i = 0; i < COUNT(ok_cases) && !found; i++)
            found = strcmp(ok_cases[i].section, section) == 0 && strcmp(ok_cases[i].key, key) == 0;
        if (!found)
            fail_msg("[%s] %s has no row in ok_cases", section, key);
        keys++;
    }
    free(out);
    /* Every key of common/config_table.c: README.md's, the smarthost credentials, min_free_space,
     * the SMTP error limits, server.faults, server.workers, server.metrics, server.proxy_from,
     * relay.delay_notice and the milters included. */
    assert_int_equal(keys, 45);
}

/* ---- errors, exact text ------------------------------------------------------------------ */

struct err_case {
    const char *text;
    const char *want;
};

#define COMMENT_REASON                                                                             \
    "a value cannot start with ';' or '#' (written back, it would read as a comment)"

static const struct err_case err_cases[] = {
    /* milters */
    {"[milter]\nmx = tcp:1.2.3.4:5\n",
     "t.conf:2: bad value \"tcp:1.2.3.4:5\" for mx in [milter]: expected inet:HOST:PORT or "
     "unix:/path"},
    {"[milter]\nmx = inet:127.0.0.1:0\n",
     "t.conf:2: bad value \"inet:127.0.0.1:0\" for mx in [milter]: an inet: milter needs a host "
     "and a port from 1 to 65535"},
    {"[milter]\nmx = unix:relative.sock\n",
     "t.conf:2: bad value \"unix:relative.sock\" for mx in [milter]: a unix: milter needs an "
     "absolute path of at most 107 bytes"},
    {"[milter]\nsubmission = inet:127.0.0.1:1,,inet:127.0.0.1:2\n",
     "t.conf:2: bad value \"inet:127.0.0.1:1,,inet:127.0.0.1:2\" for submission in [milter]: an "
     "empty item in the list"},
    /* structure */
    {"[smtpp]\n", "t.conf:1: unknown section [smtpp]"},
    {"[server]\n[bogus]\n[smtp]\n", "t.conf:2: unknown section [bogus]"}, /* empty section */
    {"[server]\nuser =\n[bogus]\n", "t.conf:3: unknown section [bogus]"},
    {"[]\n", "t.conf:1: unknown section []"},
    {"[SMTP]\n", "t.conf:1: unknown section [SMTP]"},
    {"[smtp]\nlisen = 127.0.0.1:25\n", "t.conf:2: unknown key \"lisen\" in [smtp]"},
    {"[smtp]\nListen = 127.0.0.1:25\n", "t.conf:2: unknown key \"Listen\" in [smtp]"},
    {"[pop3]\nsubmission = 127.0.0.1:587\n", "t.conf:2: unknown key \"submission\" in [pop3]"},
    {"[relay]\nmax recipients = 5\n", "t.conf:2: unknown key \"max recipients\" in [relay]"},
    {"timeout = 5m\n", "t.conf:1: key \"timeout\" outside any [section]"},
    {"\n; c\ntimeout = 5m\n[smtp]\n", "t.conf:3: key \"timeout\" outside any [section]"},
    {"[smtp]\ntimeout = 1m\ntimeout = 2m\n",
     "t.conf:3: duplicate key \"timeout\" in [smtp] (first set on line 2)"},
    {"[smtp]\ntimeout = 1m\n[pop3]\n[smtp]\n\ntimeout = 1m\n",
     "t.conf:6: duplicate key \"timeout\" in [smtp] (first set on line 2)"},
    {"[smtp\n", "t.conf:1: syntax error"},
    {"[smtp] junk\n", "t.conf:1: syntax error"},
    {"[smtp]\njust some words\n", "t.conf:2: syntax error"},
    {"[smtp]\ntimeout: 5m\n", "t.conf:2: syntax error"},
    {"[smtp]\n= 5m\n", "t.conf:2: syntax error"},
    {"[smtp]\ntimeout = 5m\n  6m\n", "t.conf:3: syntax error"}, /* no continuation lines */
    {"[smtp]\ntimeout ; = 5m\n", "t.conf:2: syntax error"},
    /* the first error wins */
    {"[smtp]\ntimeout = x\n[bogus]\n",
     "t.conf:2: bad value \"x\" for timeout in [smtp]: expected a duration such as 30s, 5m, 2h"},
    {"[bogus]\n[smtp]\ntimeout = x\n", "t.conf:1: unknown section [bogus]"},

    /* bad values, one per reason */
    {"[server]\nhostname = mail_example.test\n",
     "t.conf:2: bad value \"mail_example.test\" for hostname in [server]: expected a domain name "
     "such as mail.example.test"},
    {"[server]\nhostname = 192.0.2.1\n",
     "t.conf:2: bad value \"192.0.2.1\" for hostname in [server]: expected a domain name such as "
     "mail.example.test"},
    {"[server]\nhostname = -mail.example\n",
     "t.conf:2: bad value \"-mail.example\" for hostname in [server]: expected a domain name such "
     "as mail.example.test"},
    {"[server]\nhostname = mail..example\n",
     "t.conf:2: bad value \"mail..example\" for hostname in [server]: expected a domain name such "
     "as mail.example.test"},
    {"[server]\nuser = bad user\n",
     "t.conf:2: bad value \"bad user\" for user in [server]: expected a user name (letters, "
     "digits, '.', '_', '-')"},
    {"[server]\nlog_level = verbose\n",
     "t.conf:2: bad value \"verbose\" for log_level in [server]: expected one of: debug, info, "
     "warn, error"},
    {"[server]\ntranscript = maybe\n",
     "t.conf:2: bad value \"maybe\" for transcript in [server]: expected yes or no"},
    {"[server]\ntranscript =\n",
     "t.conf:2: bad value \"\" for transcript in [server]: expected yes or no"},
    {"[server]\nmax_connections = 0\n",
     "t.conf:2: bad value \"0\" for max_connections in [server]: must be between 1 and 1000000"},
    {"[server]\nmax_connections = 1000001\n",
     "t.conf:2: bad value \"1000001\" for max_connections in [server]: must be between 1 and "
     "1000000"},
    {"[server]\nmax_connections = -1\n",
     "t.conf:2: bad value \"-1\" for max_connections in [server]: expected a whole number"},
    {"[server]\nmax_connections = 1e3\n",
     "t.conf:2: bad value \"1e3\" for max_connections in [server]: expected a whole number"},
    {"[server]\nmax_connections_per_ip = 99999999999999999999999\n",
     "t.conf:2: bad value \"99999999999999999999999\" for max_connections_per_ip in [server]: "
     "expected a whole number"},
    {"[smtp]\nlisten = 127.0.0.1\n",
     "t.conf:2: bad value \"127.0.0.1\" for listen in [smtp]: expected ADDRESS:PORT such as "
     "127.0.0.1:2525, [::1]:2525 or *:25"},
    {"[smtp]\nlisten = :25\n", "t.conf:2: bad value \":25\" for listen in [smtp]: expected "
                               "ADDRESS:PORT such as 127.0.0.1:2525, [::1]:2525 or *:25"},
    {"[smtp]\nlisten = localhost:25\n",
     "t.conf:2: bad value \"localhost:25\" for listen in [smtp]: host must be a numeric IPv4 or "
     "IPv6 address or *"},
    {"[smtp]\nlisten = 127.0.0.256:25\n",
     "t.conf:2: bad value \"127.0.0.256:25\" for listen in [smtp]: host must be a numeric IPv4 or "
     "IPv6 address or *"},
    {"[smtp]\nlisten = ::1:25\n",
     "t.conf:2: bad value \"::1:25\" for listen in [smtp]: write IPv6 addresses in brackets, such "
     "as [::1]:2525"},
    {"[smtp]\nlisten = [::1]25\n",
     "t.conf:2: bad value \"[::1]25\" for listen in [smtp]: expected ADDRESS:PORT such as "
     "127.0.0.1:2525, [::1]:2525 or *:25"},
    {"[smtp]\nlisten = [127.0.0.1]:25\n",
     "t.conf:2: bad value \"[127.0.0.1]:25\" for listen in [smtp]: expected ADDRESS:PORT such as "
     "127.0.0.1:2525, [::1]:2525 or *:25"},
    {"[smtp]\nlisten = 127.0.0.1:0\n",
     "t.conf:2: bad value \"127.0.0.1:0\" for listen in [smtp]: port must be between 1 and "
     "65535"},
    {"[smtp]\nlisten = 127.0.0.1:65536\n",
     "t.conf:2: bad value \"127.0.0.1:65536\" for listen in [smtp]: port must be between 1 and "
     "65535"},
    {"[smtp]\nlisten = *:smtp\n",
     "t.conf:2: bad value \"*:smtp\" for listen in [smtp]: port must be between 1 and 65535"},
    {"[smtp]\nlisten = 127.0.0.1:25, 127.0.0.1:25\n",
     "t.conf:2: bad value \"127.0.0.1:25, 127.0.0.1:25\" for listen in [smtp]: 127.0.0.1:25 is "
     "listed twice"},
    {"[smtp]\nlisten = 127.0.0.1:25,,127.0.0.1:26\n",
     "t.conf:2: bad value \"127.0.0.1:25,,127.0.0.1:26\" for listen in [smtp]: empty entry in the "
     "list"},
    {"[smtp]\nlisten = 127.0.0.1:25,\n",
     "t.conf:2: bad value \"127.0.0.1:25,\" for listen in [smtp]: empty entry in the list"},
    {"[smtp]\nlisten = 127.0.0.1:25 127.0.0.1:26\n",
     "t.conf:2: bad value \"127.0.0.1:25 127.0.0.1:26\" for listen in [smtp]: separate addresses "
     "with commas"},
    {"[smtp]\nlisten = 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5,127.0.0.1:6,"
     "127.0.0.1:7,127.0.0.1:8,127.0.0.1:9\n",
     "t.conf:2: bad value \"127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5,"
     "127.0.0.1:6,127.0.0.1:7,127.0.0.1:8,127.0.0.1:9\" for listen in [smtp]: at most 8 "
     "addresses"},
    {"[smtp]\nmax_message_size = 25MB\n",
     "t.conf:2: bad value \"25MB\" for max_message_size in [smtp]: expected a size such as 512K, "
     "25M, 1G"},
    {"[smtp]\nmin_free_space = some\n",
     "t.conf:2: bad value \"some\" for min_free_space in [smtp]: expected a size such as 512K, "
     "25M, 1G"},
    {"[smtp]\nmin_free_space = 1025G\n",
     "t.conf:2: bad value \"1025G\" for min_free_space in [smtp]: must be between 0 and 1024G"},
    {"[smtp]\nmax_message_size = 1023\n",
     "t.conf:2: bad value \"1023\" for max_message_size in [smtp]: must be between 1K and 512M"},
    {"[smtp]\nmax_message_size = 1G\n",
     "t.conf:2: bad value \"1G\" for max_message_size in [smtp]: must be between 1K and 512M"},
    {"[smtp]\nmax_recipients = 0\n",
     "t.conf:2: bad value \"0\" for max_recipients in [smtp]: must be between 1 and 100000"},
    {"[smtp]\ntimeout = 0\n",
     "t.conf:2: bad value \"0\" for timeout in [smtp]: must be between 1s and 1d"},
    {"[smtp]\ntimeout = 999ms\n",
     "t.conf:2: bad value \"999ms\" for timeout in [smtp]: must be between 1s and 1d"},
    {"[smtp]\ntimeout = 5 m\n",
     "t.conf:2: bad value \"5 m\" for timeout in [smtp]: expected a duration such as 30s, 5m, 2h"},
    {"[smtp]\nplaintext_auth = ja\n",
     "t.conf:2: bad value \"ja\" for plaintext_auth in [smtp]: expected yes or no"},
    {"[pop3]\ntimeout = 2d\n",
     "t.conf:2: bad value \"2d\" for timeout in [pop3]: must be between 1s and 1d"},
    {"[pop3]\npop3s = 127.0.0.1\n",
     "t.conf:2: bad value \"127.0.0.1\" for pop3s in [pop3]: expected ADDRESS:PORT such as "
     "127.0.0.1:2525, [::1]:2525 or *:25"},
    {"[relay]\nwindow = -1\n",
     "t.conf:2: bad value \"-1\" for window in [relay]: expected a duration such as 30s, 5m, 2h"},
    {"[relay]\nwindow = 366d\n",
     "t.conf:2: bad value \"366d\" for window in [relay]: must be between 0 and 365d"},
    {"[relay]\nwindow_ipv6_prefix = 31\n",
     "t.conf:2: bad value \"31\" for window_ipv6_prefix in [relay]: must be between 32 and 128"},
    {"[relay]\nwindow_ipv6_prefix = 129\n",
     "t.conf:2: bad value \"129\" for window_ipv6_prefix in [relay]: must be between 32 and 128"},
    {"[relay]\nwindow_max_recipients = 0\n",
     "t.conf:2: bad value \"0\" for window_max_recipients in [relay]: must be between 1 and "
     "1000000"},
    {"[relay]\nsender_check = strict\n",
     "t.conf:2: bad value \"strict\" for sender_check in [relay]: expected one of: off, domain, "
     "address"},
    {"[relay]\ndenied_style = postfix\n",
     "t.conf:2: bad value \"postfix\" for denied_style in [relay]: expected one of: sendmail, "
     "qmail"},
    {"[relay]\nsmarthost = relay..example.net\n",
     "t.conf:2: bad value \"relay..example.net\" for smarthost in [relay]: expected HOST[:PORT] "
     "such as relay.example.net:587"},
    {"[relay]\nsmarthost = [::1\n",
     "t.conf:2: bad value \"[::1\" for smarthost in [relay]: expected HOST[:PORT] such as "
     "relay.example.net:587"},
    {"[relay]\nsmarthost = relay.example.net:0\n",
     "t.conf:2: bad value \"relay.example.net:0\" for smarthost in [relay]: port must be between "
     "1 and 65535"},
    {"[relay]\nsmarthost = relay.example.net:25:26\n",
     "t.conf:2: bad value \"relay.example.net:25:26\" for smarthost in [relay]: port must be "
     "between 1 and 65535"},
    {"[relay]\ndns_server = dns.example.net\n",
     "t.conf:2: bad value \"dns.example.net\" for dns_server in [relay]: expected IP[:PORT] such "
     "as 127.0.0.1:5353 or [::1]:53"},
    {"[relay]\ndns_server = 127.0.0.1:99999\n",
     "t.conf:2: bad value \"127.0.0.1:99999\" for dns_server in [relay]: port must be between 1 "
     "and 65535"},
    {"[relay]\noutbound_port = 0\n",
     "t.conf:2: bad value \"0\" for outbound_port in [relay]: must be between 1 and 65535"},
    {"[relay]\noutbound_port = 65536\n",
     "t.conf:2: bad value \"65536\" for outbound_port in [relay]: must be between 1 and 65535"},
    {"[relay]\nmax_age = 0\n",
     "t.conf:2: bad value \"0\" for max_age in [relay]: must be between 1s and 365d"},

    {"[relay]\nsmarthost = r.example.net\nsmarthost_password_file = pw\nsmarthost_user = a\x01b\n",
     "t.conf:4: bad value \"a\x01b\" for smarthost_user in [relay]: expected a user name of at "
     "most 255 bytes without control characters"},

    {"[relay]\nsmarthost_user = "
     "12345678901234567890123456789012345678901234567890123456789012345678901234567890"
     "12345678901234567890123456789012345678901234567890123456789012345678901234567890"
     "12345678901234567890123456789012345678901234567890123456789012345678901234567890"
     "1234567890123456\n",
     "t.conf:2: bad value \""
     "12345678901234567890123456789012345678901234567890123456789012345678901234567890"
     "12345678901234567890123456789012345678901234567890123456789012345678901234567890"
     "1234567890123456789012345678901234567890..."
     "\" for smarthost_user in [relay]: expected a user name of at most 255 bytes without "
     "control characters"},

    /* across keys */
    {"[relay]\nsmarthost = r.example.net\nsmarthost_user = u\n",
     "t.conf: [relay] smarthost_user and smarthost_password_file must be set together"},
    {"[relay]\nsmarthost = r.example.net\nsmarthost_password_file = pw\n",
     "t.conf: [relay] smarthost_user and smarthost_password_file must be set together"},
    {"[relay]\nsmarthost_user = u\nsmarthost_password_file = pw\n",
     "t.conf: [relay] smarthost_user is set but smarthost is not"},
    /* A comment character glued to "=" would be part of the value, and cfg_print would write it
     * back as a comment (found by tests/fuzz/fuzz_config.c). */
    {"[relay]\nsmarthost = r.example.net\nsmarthost_user =#u\nsmarthost_password_file = pw\n",
     "t.conf:3: bad value \"#u\" for smarthost_user in [relay]: " COMMENT_REASON},
    {"[server]\ndatabase =;db\n",
     "t.conf:2: bad value \";db\" for database in [server]: " COMMENT_REASON},
    {"[smtp]\nsoft_error_limit = 21\n",
     "t.conf: [smtp] hard_error_limit (20) must be at least soft_error_limit (21)"},
    {"[smtp]\nhard_error_limit = 3\nsoft_error_limit = 4\n",
     "t.conf: [smtp] hard_error_limit (3) must be at least soft_error_limit (4)"},
    {"[tls]\ncertificate = c.pem\n", "t.conf: [tls] certificate and key must be set together"},
    {"[smtp]\nlisten = 127.0.0.1:25, 10.0.0.5:25 proxy\n",
     "t.conf: [smtp] listen: 10.0.0.5:25 is marked proxy but [server] proxy_from is empty"},
    {"[pop3]\npop3s = [::1]:995 proxy\n",
     "t.conf: [pop3] pop3s: [::1]:995 is marked proxy but [server] proxy_from is empty"},
    {"[server]\nmetrics = 127.0.0.1:9154 proxy\nproxy_from = 10.0.0.1\n",
     "t.conf:2: bad value \"127.0.0.1:9154 proxy\" for metrics in [server]: proxy is only for the "
     "[smtp] and [pop3] listen addresses"},
    {"[smtp]\nlisten = 127.0.0.1:25 prxy\n",
     "t.conf:2: bad value \"127.0.0.1:25 prxy\" for listen in [smtp]: unknown word \"prxy\" "
     "after an address (only proxy)"},
    {"[smtp]\nlisten = 127.0.0.1:25 proxy, 127.0.0.1:25\n",
     "t.conf:2: bad value \"127.0.0.1:25 proxy, 127.0.0.1:25\" for listen in [smtp]: "
     "127.0.0.1:25 is listed twice"},
    {"[server]\nproxy_from = 10.0.0.0/33\n",
     "t.conf:2: bad value \"10.0.0.0/33\" for proxy_from in [server]: \"10.0.0.0/33\": prefix "
     "out of range"},
    {"[server]\nproxy_from = balancer.example\n",
     "t.conf:2: bad value \"balancer.example\" for proxy_from in [server]: \"balancer.example\": "
     "bad address"},
    {"[server]\nproxy_from = 10.0.0.0/8,,10.1.0.0/16\n",
     "t.conf:2: bad value \"10.0.0.0/8,,10.1.0.0/16\" for proxy_from in [server]: empty entry in "
     "the list"},
    {"[server]\nproxy_from = 10.0.0.1/8, 10.0.0.0/8\n",
     "t.conf:2: bad value \"10.0.0.1/8, 10.0.0.0/8\" for proxy_from in [server]: 10.0.0.0/8 is "
     "listed twice"},
    {"[tls]\nkey = k.pem\n", "t.conf: [tls] certificate and key must be set together"},
    {"[pop3]\nlisten = 127.0.0.1:2525\n",
     "t.conf: 127.0.0.1:2525 is in both [smtp] listen and [pop3] listen"},
    {"[smtp]\nsubmissions = [::1]:1, 127.0.0.1:2587\n",
     "t.conf: 127.0.0.1:2587 is in both [smtp] submission and [smtp] submissions"},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(err_cases); i++) {
        struct cfg cfg;
        char err[1024];
        memset(err, 'x', sizeof(err));
        err[sizeof(err) - 1] = '\0';
        int rc = cfg_load_string(&cfg, err_cases[i].text, "t.conf", "/base", err, sizeof(err));
        if (rc != -1)
            fail_msg("no error for:\n%s", err_cases[i].text);
        if (strcmp(err, err_cases[i].want) != 0)
            fail_msg("for:\n%s\ngot:  %s\nwant: %s", err_cases[i].text, err, err_cases[i].want);
        /* A failed load leaves nothing to free, and cfg_free stays safe. */
        assert_null(cfg.server.hostname);
        assert_null(cfg.server.database);
        assert_null(cfg.tls.certificate);
        cfg_free(&cfg);
        cfg_free(&cfg);
    }
}

/* The example of the brief, at its line 12. */
static void test_error_line_number(void **state)
{
    struct cfg cfg;
    char err[256];
    (void)state;

    const char *text = "; postern.conf\n"
                       "[server]\n"
                       "hostname = mail.example.test\n"
                       "\n"
                       "# comment\n"
                       "max_connections = 10\n"
                       "\r\n"
                       "[smtp]\n"
                       "listen = 127.0.0.1:25 ; MX\n"
                       "max_recipients = 100\n"
                       "    \n"
                       "lisen = 127.0.0.1:26\n";
    assert_int_equal(cfg_load_string(&cfg, text, "postern.conf", NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "postern.conf:12: unknown key \"lisen\" in [smtp]");

    /* A short err buffer is cut, never overrun. */
    char small[12];
    memset(small, 'x', sizeof(small));
    assert_int_equal(cfg_load_string(&cfg, text, "postern.conf", NULL, small, 8), -1);
    assert_string_equal(small, "postern");
    assert_int_equal(small[8], 'x');
    /* And no err buffer at all is allowed. */
    assert_int_equal(cfg_load_string(&cfg, text, "postern.conf", NULL, NULL, 0), -1);
}

/* ---- line length --------------------------------------------------------------------------- */

static char *text_with_line(size_t len, const char *prefix, const char *ending)
{
    size_t plen = strlen(prefix);
    char *t = malloc(plen + len + 64);
    assert_non_null(t);
    strcpy(t, prefix);
    t[plen] = ';';
    memset(t + plen + 1, 'x', len - 1);
    strcpy(t + plen + len, ending);
    strcat(t, "[smtp]\ntimeout = 7s\n");
    return t;
}

static void test_long_lines(void **state)
{
    struct cfg cfg;
    char err[512];
    char want[128];
    (void)state;

    /* Exactly the limit passes, with LF, CRLF, or at the end of the text. */
    static const char *const endings[] = {"\n", "\r\n"};
    for (size_t i = 0; i < COUNT(endings); i++) {
        char *t = text_with_line(CFG_LINE_MAX_BYTES, "[server]\n", endings[i]);
        if (cfg_load_string(&cfg, t, "t.conf", NULL, err, sizeof(err)) != 0)
            fail_msg("line of %d bytes refused: %s", CFG_LINE_MAX_BYTES, err);
        assert_int_equal(cfg.smtp.timeout_ms, 7 * S);
        cfg_free(&cfg);
        free(t);
    }
    /* One more byte is an error naming the line, not a silent cut. */
    snprintf(want, sizeof(want), "t.conf:2: line too long (limit %d bytes)", CFG_LINE_MAX_BYTES);
    for (size_t i = 0; i < COUNT(endings); i++) {
        char *t = text_with_line(CFG_LINE_MAX_BYTES + 1, "[server]\n", endings[i]);
        assert_int_equal(cfg_load_string(&cfg, t, "t.conf", NULL, err, sizeof(err)), -1);
        assert_string_equal(err, want);
        free(t);
    }
    /* A long value too: "key = " plus enough to pass the limit. */
    size_t n = CFG_LINE_MAX_BYTES + 100;
    char *t = malloc(n + 64);
    assert_non_null(t);
    strcpy(t, "[server]\nuser = ");
    memset(t + strlen(t), 'a', n);
    t[16 + n] = '\0';
    assert_int_equal(cfg_load_string(&cfg, t, "t.conf", NULL, err, sizeof(err)), -1);
    assert_string_equal(err, want);
    free(t);

    /* A path too long for the system. */
    n = PATH_MAX + 10;
    t = malloc(n + 64);
    assert_non_null(t);
    strcpy(t, "[server]\ndatabase = /");
    memset(t + strlen(t), 'a', n - 1);
    t[21 + n - 1] = '\0';
    assert_int_equal(cfg_load_string(&cfg, t, "t.conf", NULL, err, sizeof(err)), -1);
    /* The value is quoted by its first 200 bytes only, then "...". */
    char big_want[512];
    char aaa[200];
    memset(aaa, 'a', sizeof(aaa));
    snprintf(big_want, sizeof(big_want),
             "t.conf:2: bad value \"/%.199s...\" for database in [server]: path longer than %d "
             "bytes",
             aaa, PATH_MAX - 1);
    assert_string_equal(err, big_want);
    free(t);
}

/* ---- comments, line endings, spacing ----------------------------------------------------- */

static void test_comments_and_spacing(void **state)
{
    struct cfg cfg;
    (void)state;

    must_load(&cfg, "\xEF\xBB\xBF; a BOM before the first line is fine\r\n"
                    "[smtp] ; comment after a header\r\n"
                    "timeout = 90s ; idle limit\r\n"
                    "max_recipients = 200 # hash comment\r\n"
                    "  plaintext_auth=yes\r\n"
                    "\tmax_message_size\t=\t10M\t\r\n"
                    "# whole-line comment\r\n"
                    "; another\r\n"
                    "[ pop3 ]\r\n"
                    "listen = ; empty: disabled\r\n"
                    "[relay]\n"
                    "smarthost = relay.example.net:587 ;comment\n");
    assert_int_equal(cfg.smtp.timeout_ms, 90 * S);
    assert_int_equal(cfg.smtp.max_recipients, 200);
    assert_true(cfg.smtp.plaintext_auth);
    assert_int_equal(cfg.smtp.max_message_size_bytes, 10 * 1024 * 1024);
    assert_int_equal(cfg.pop3.listen.count, 0);
    assert_int_equal(cfg.pop3.pop3s.count, 1);
    assert_int_equal(cfg.relay.smarthost.port, 587);
    cfg_free(&cfg);

    /* ";no" glued to the value is part of it, and makes the port bad. */
    char err[256];
    assert_int_equal(cfg_load_string(&cfg, "[relay]\nsmarthost = relay.example.net:587;no\n",
                                     "t.conf", NULL, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "t.conf:2: bad value \"relay.example.net:587;no\" for smarthost in "
                             "[relay]: port must be between 1 and 65535");

    /* A last line without a newline still counts. */
    must_load(&cfg, "[smtp]\ntimeout = 42s");
    assert_int_equal(cfg.smtp.timeout_ms, 42 * S);
    cfg_free(&cfg);
}

static void test_bare_cr_line_is_one_line(void **state)
{
    struct cfg cfg;
    char err[256];
    (void)state;
    /* A lone CR does not end a line (only LF does): the text is one line, and a syntax error. */
    assert_int_equal(
        cfg_load_string(&cfg, "[smtp]\rtimeout = 5m\n", "t.conf", NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "t.conf:1: syntax error");
}

/* ---- warnings ---------------------------------------------------------------------------- */

static void test_warnings(void **state)
{
    struct cfg cfg;
    (void)state;

    must_load(&cfg, "[smtp]\n\nmax_recipients = 50\n");
    assert_int_equal(cfg.smtp.max_recipients, 50);
    assert_int_equal(cfg.warning_count, 1);
    assert_string_equal(cfg.warnings[0], "t.conf:3: max_recipients = 50 in [smtp] is below 100, "
                                         "the number RFC 5321 4.5.3.1.8 says a server must accept");
    cfg_free(&cfg);

    must_load(&cfg, "[smtp]\nmax_recipients = 100\n");
    assert_int_equal(cfg.warning_count, 0);
    cfg_free(&cfg);

    must_load(&cfg, "[smtp]\nmax_recipients = 99\n[relay]\nwindow_max_recipients = 1\n");
    assert_int_equal(cfg.warning_count, 1); /* only max_recipients carries the RFC minimum */
    cfg_free(&cfg);
    /* Fault injection warns whenever it is on, and only then. */
    must_load(&cfg, "[server]\nfaults = yes\n");
    assert_int_equal(cfg.warning_count, 1);
    assert_non_null(strstr(cfg.warnings[0], "t.conf:2: faults = yes in [server] turns fault "
                                            "injection on"));
    cfg_free(&cfg);
    must_load(&cfg, "[server]\nfaults = no\n");
    assert_int_equal(cfg.warning_count, 0);
    cfg_free(&cfg);
}

/* ---- paths ------------------------------------------------------------------------------- */

struct path_case {
    const char *base;
    const char *value;
    const char *want;
};

static const struct path_case path_cases[] = {
    {"/etc/postern", "db/p.db", "/etc/postern/db/p.db"},
    {"/etc/postern/", "p.db", "/etc/postern/p.db"},
    {"/", "p.db", "/p.db"},
    {"/etc/postern", "/var/p.db", "/var/p.db"},
    {NULL, "p.db", "p.db"},
    {NULL, "/var/p.db", "/var/p.db"},
    {"", "p.db", "p.db"},
};

static void test_relative_paths(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(path_cases); i++) {
        const struct path_case *c = &path_cases[i];
        char text[256], err[256];
        struct cfg cfg;
        snprintf(text, sizeof(text), "[server]\ndatabase = %s\n[tls]\ncertificate = %s\nkey = %s\n",
                 c->value, c->value, c->value);
        if (cfg_load_string(&cfg, text, "t.conf", c->base, err, sizeof(err)) != 0)
            fail_msg("%s", err);
        assert_string_equal(cfg.server.database, c->want);
        assert_string_equal(cfg.tls.certificate, c->want);
        assert_string_equal(cfg.tls.key, c->want);
        assert_true(cfg_has_tls(&cfg));
        cfg_free(&cfg);
    }
    /* The default database follows the base folder too; an empty certificate stays empty. */
    struct cfg cfg;
    char err[256];
    assert_int_equal(cfg_load_string(&cfg, "", "t.conf", "/srv/mail", err, sizeof(err)), 0);
    assert_string_equal(cfg.server.database, "/srv/mail/postern.db");
    assert_string_equal(cfg.tls.certificate, "");
    cfg_free(&cfg);
}

/* A temporary folder with a config file in it; removed by the caller. */
struct tmp {
    char dir[PATH_MAX];
    char file[PATH_MAX + 32];
};

static void tmp_write(struct tmp *t, const char *content, size_t len)
{
    char templ[] = "/tmp/postern-test-config-XXXXXX";
    assert_non_null(mkdtemp(templ));
    snprintf(t->dir, sizeof(t->dir), "%s", templ);
    snprintf(t->file, sizeof(t->file), "%s/postern.conf", t->dir);
    FILE *fp = fopen(t->file, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(content, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void tmp_remove(struct tmp *t)
{
    assert_int_equal(unlink(t->file), 0);
    assert_int_equal(rmdir(t->dir), 0);
}

static void test_file(void **state)
{
    struct tmp t;
    struct cfg cfg;
    char err[512], want[2 * PATH_MAX];
    (void)state;

    const char text[] = "[server]\ndatabase = data/p.db\n[tls]\ncertificate = c.pem\nkey = "
                        "/etc/k.pem\n[smtp]\ntimeout = 2m\n";
    tmp_write(&t, text, strlen(text));
    char *real = realpath(t.dir, NULL);
    assert_non_null(real);

    if (cfg_load(&cfg, t.file, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    snprintf(want, sizeof(want), "%s/data/p.db", real);
    assert_string_equal(cfg.server.database, want);
    snprintf(want, sizeof(want), "%s/c.pem", real);
    assert_string_equal(cfg.tls.certificate, want);
    assert_string_equal(cfg.tls.key, "/etc/k.pem");
    assert_int_equal(cfg.smtp.timeout_ms, 2 * MI);
    cfg_free(&cfg);

    /* Loaded through a relative name, paths still come out absolute. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(t.dir), 0);
    int rc = cfg_load(&cfg, "postern.conf", err, sizeof(err));
    assert_int_equal(chdir(cwd), 0);
    if (rc != 0)
        fail_msg("%s", err);
    snprintf(want, sizeof(want), "%s/data/p.db", real);
    assert_string_equal(cfg.server.database, want);
    cfg_free(&cfg);
    tmp_remove(&t);

    /* Errors name the file as given. */
    const char bad[] = "[smtp]\ntimeout = 5m\nbogus = 1\n";
    tmp_write(&t, bad, strlen(bad));
    assert_int_equal(cfg_load(&cfg, t.file, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:3: unknown key \"bogus\" in [smtp]", t.file);
    assert_string_equal(err, want);
    tmp_remove(&t);

    /* A NUL byte would cut the line in inih; here it is an error on its line. */
    const char nul[] = "[smtp]\ntimeout = 5m\0 junk\n";
    tmp_write(&t, nul, sizeof(nul) - 1);
    assert_int_equal(cfg_load(&cfg, t.file, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:2: syntax error", t.file);
    assert_string_equal(err, want);
    tmp_remove(&t);

    /* The default database lives beside the file. */
    tmp_write(&t, "", 0);
    assert_int_equal(cfg_load(&cfg, t.file, err, sizeof(err)), 0);
    free(real);
    real = realpath(t.dir, NULL);
    snprintf(want, sizeof(want), "%s/postern.db", real);
    assert_string_equal(cfg.server.database, want);
    cfg_free(&cfg);

    /* A folder is not a config file. */
    assert_int_equal(cfg_load(&cfg, t.dir, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: cannot read: %s", t.dir, strerror(EISDIR));
    assert_string_equal(err, want);
    tmp_remove(&t);
    free(real);
}

static void test_cannot_open(void **state)
{
    struct cfg cfg;
    char err[256], want[256];
    (void)state;

    assert_int_equal(cfg_load(&cfg, "/nonexistent-postern/postern.conf", err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "/nonexistent-postern/postern.conf: cannot open: %s",
             strerror(ENOENT));
    assert_string_equal(err, want);
    assert_null(cfg.server.database);
    cfg_free(&cfg);
}

/* ---- cfg_print round trip ---------------------------------------------------------------- */

static void assert_listen_equal(const struct cfg_listen_list *a, const struct cfg_listen_list *b)
{
    assert_int_equal(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        assert_string_equal(a->addrs[i].host, b->addrs[i].host);
        assert_int_equal(a->addrs[i].port, b->addrs[i].port);
        assert_int_equal(a->addrs[i].proxy, b->addrs[i].proxy);
    }
}

static void assert_cidrs_equal(const struct cfg_cidr_list *a, const struct cfg_cidr_list *b)
{
    assert_int_equal(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        assert_true(ip_equal(&a->nets[i].net, &b->nets[i].net));
        assert_int_equal(a->nets[i].prefix, b->nets[i].prefix);
    }
}

static void assert_cfg_equal(const struct cfg *a, const struct cfg *b)
{
    assert_string_equal(a->server.hostname, b->server.hostname);
    assert_string_equal(a->server.database, b->server.database);
    assert_string_equal(a->server.user, b->server.user);
    assert_int_equal(a->server.log_level, b->server.log_level);
    assert_int_equal(a->server.transcript, b->server.transcript);
    assert_int_equal(a->server.max_connections, b->server.max_connections);
    assert_int_equal(a->server.max_connections_per_ip, b->server.max_connections_per_ip);
    assert_int_equal(a->server.workers, b->server.workers);
    assert_listen_equal(&a->server.metrics, &b->server.metrics);
    assert_cidrs_equal(&a->server.proxy_from, &b->server.proxy_from);
    assert_listen_equal(&a->smtp.listen, &b->smtp.listen);
    assert_listen_equal(&a->smtp.submission, &b->smtp.submission);
    assert_listen_equal(&a->smtp.submissions, &b->smtp.submissions);
    assert_int_equal(a->smtp.max_message_size_bytes, b->smtp.max_message_size_bytes);
    assert_int_equal(a->smtp.min_free_space_bytes, b->smtp.min_free_space_bytes);
    assert_int_equal(a->smtp.max_recipients, b->smtp.max_recipients);
    assert_int_equal(a->smtp.plaintext_auth, b->smtp.plaintext_auth);
    assert_int_equal(a->smtp.timeout_ms, b->smtp.timeout_ms);
    assert_int_equal(a->smtp.soft_error_limit, b->smtp.soft_error_limit);
    assert_int_equal(a->smtp.hard_error_limit, b->smtp.hard_error_limit);
    assert_int_equal(a->smtp.error_delay_ms, b->smtp.error_delay_ms);
    assert_listen_equal(&a->pop3.listen, &b->pop3.listen);
    assert_listen_equal(&a->pop3.pop3s, &b->pop3.pop3s);
    assert_int_equal(a->pop3.plaintext_auth, b->pop3.plaintext_auth);
    assert_int_equal(a->pop3.timeout_ms, b->pop3.timeout_ms);
    assert_string_equal(a->tls.certificate, b->tls.certificate);
    assert_string_equal(a->tls.key, b->tls.key);
    assert_int_equal(a->relay.window_ms, b->relay.window_ms);
    assert_int_equal(a->relay.window_ipv6_prefix, b->relay.window_ipv6_prefix);
    assert_int_equal(a->relay.window_max_recipients, b->relay.window_max_recipients);
    assert_int_equal(a->relay.sender_check, b->relay.sender_check);
    assert_int_equal(a->relay.denied_style, b->relay.denied_style);
    assert_string_equal(a->relay.smarthost.host, b->relay.smarthost.host);
    assert_int_equal(a->relay.smarthost.port, b->relay.smarthost.port);
    assert_string_equal(a->relay.smarthost_user, b->relay.smarthost_user);
    assert_string_equal(a->relay.smarthost_password_file, b->relay.smarthost_password_file);
    assert_string_equal(a->relay.dns_server.host, b->relay.dns_server.host);
    assert_int_equal(a->relay.dns_server.port, b->relay.dns_server.port);
    assert_int_equal(a->relay.outbound_port, b->relay.outbound_port);
    assert_int_equal(a->relay.max_age_ms, b->relay.max_age_ms);
}

static char *print_to_string(const struct cfg *cfg)
{
    char *out = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    assert_non_null(fp);
    assert_int_equal(cfg_print(cfg, fp), 0);
    assert_int_equal(fclose(fp), 0);
    return out;
}

static void check_print_round_trip(const struct cfg *cfg)
{
    struct cfg again;
    char err[512];
    char *text = print_to_string(cfg);

    if (cfg_load_string(&again, text, "printed", NULL, err, sizeof(err)) != 0)
        fail_msg("printed config does not load: %s\n%s", err, text);
    assert_cfg_equal(cfg, &again);
    char *text2 = print_to_string(&again);
    assert_string_equal(text, text2);
    cfg_free(&again);
    free(text);
    free(text2);
}

static void test_print_round_trip(void **state)
{
    struct cfg cfg;
    (void)state;

    assert_int_equal(cfg_init_defaults(&cfg), 0);
    check_print_round_trip(&cfg);
    cfg_free(&cfg);

    must_load(&cfg, "[server]\n"
                    "hostname = mx.example.org\n"
                    "database = d/p.db\n"
                    "user = mail\n"
                    "log_level = debug\n"
                    "transcript = on\n"
                    "max_connections = 7\n"
                    "max_connections_per_ip = 3\n"
                    "proxy_from = 10.0.0.0/8, 2001:db8::1\n"
                    "[smtp]\n"
                    "listen = *:25 proxy, [0::1]:2525, 0.0.0.0:26\n"
                    "submission =\n"
                    "submissions = [::]:465\n"
                    "max_message_size = 1536\n"
                    "max_recipients = 50\n"
                    "plaintext_auth = 1\n"
                    "timeout = 1h30m\n"
                    "[pop3]\n"
                    "listen = 127.0.0.2:110\n"
                    "pop3s =\n"
                    "plaintext_auth = true\n"
                    "timeout = 1h1s\n"
                    "[tls]\n"
                    "certificate = c.pem\n"
                    "key = k.pem\n"
                    "[relay]\n"
                    "window = 0\n"
                    "window_ipv6_prefix = 64\n"
                    "window_max_recipients = 9\n"
                    "sender_check = address\n"
                    "denied_style = qmail\n"
                    "smarthost = 2001:db8::25\n"
                    "smarthost_user = relay user@example.org\n"
                    "smarthost_password_file = secrets/relay.pw\n"
                    "dns_server = [::1]:5353\n"
                    "outbound_port = 2525\n"
                    "max_age = 1500ms\n");
    check_print_round_trip(&cfg);

    /* Spot-check the canonical text. */
    char *text = print_to_string(&cfg);
    static const char *const lines[] = {
        "[server]\nhostname = mx.example.org\n",
        "database = /base/d/p.db\nuser = mail\n",
        "log_level = debug\ntranscript = yes\n",
        "proxy_from = 10.0.0.0/8, 2001:db8::1/128\n",
        "\n[smtp]\nlisten = *:25 proxy, [::1]:2525, 0.0.0.0:26\nsubmission =\n"
        "submissions = [::]:465\n",
        "max_message_size = 1536\nmin_free_space = 3K\nmax_recipients = 50\n"
        "plaintext_auth = yes\ntimeout = 90m\n",
        "timeout = 1h1s\n",
        "certificate = /base/c.pem\nkey = /base/k.pem\n",
        "window = 0\n",
        ("smarthost = [2001:db8::25]:25\nsmarthost_user = relay user@example.org\n"
         "smarthost_password_file = /base/secrets/relay.pw\ndns_server = [::1]:5353\n"
         "outbound_port = 2525\nmax_age = 1500ms\n"),
    };
    for (size_t i = 0; i < COUNT(lines); i++) {
        if (strstr(text, lines[i]) == NULL)
            fail_msg("printed config lacks:\n%s\n--- got:\n%s", lines[i], text);
    }
    free(text);
    cfg_free(&cfg);

    /* Every accepted row of the key table round-trips as well. */
    for (size_t i = 0; i < COUNT(ok_cases); i++) {
        char snippet[1024];
        snprintf(snippet, sizeof(snippet), "[%s]\n%s = %s\n%s", ok_cases[i].section,
                 ok_cases[i].key, ok_cases[i].value, ok_cases[i].also ? ok_cases[i].also : "");
        must_load(&cfg, snippet);
        check_print_round_trip(&cfg);
        cfg_free(&cfg);
    }
}

/* ---- the documented example ------------------------------------------------------------ */

/* The example configuration users were given from the start (README.md, "Configuration", shows
 * the same keys and defaults), verbatim: it must load and mean the defaults. */
static const char interface_example[] =
    "[server]\n"
    "hostname = mail.example.test      ; greeting, Received, Message-ID; default: the host's name\n"
    "database = postern.db             ; relative paths resolve against the config file's folder\n"
    "user =                            ; when started as root: drop to this user after binding\n"
    "log_level = info                  ; debug | info | warn | error\n"
    "transcript = no                   ; yes: log every command and reply (secrets masked)\n"
    "max_connections = 1000\n"
    "max_connections_per_ip = 20\n"
    "\n"
    "[smtp]\n"
    "listen = 127.0.0.1:2525           ; the MX / relay port (25 in production); comma-separated "
    "list;\n"
    "                                  ; empty disables; IPv6 as [::1]:2525\n"
    "submission = 127.0.0.1:2587       ; RFC 6409, AUTH required\n"
    "submissions = 127.0.0.1:2465      ; RFC 8314, implicit TLS\n"
    "max_message_size = 25M\n"
    "max_recipients = 100\n"
    "plaintext_auth = no               ; yes: AUTH offered before TLS too\n"
    "timeout = 5m                      ; idle limit per command (RFC 5321 4.5.3.2 asks at least "
    "5m)\n"
    "\n"
    "[pop3]\n"
    "listen = 127.0.0.1:1110\n"
    "pop3s = 127.0.0.1:1995\n"
    "plaintext_auth = no               ; yes: USER/PASS and AUTH accepted before STLS\n"
    "timeout = 10m                     ; autologout (RFC 1939 asks at least 10m)\n"
    "\n"
    "[tls]\n"
    "certificate =                     ; PEM chain; empty: no STARTTLS/STLS and no TLS ports\n"
    "key =\n"
    "\n"
    "[relay]\n"
    "window = 30m                      ; POP-before-SMTP window after a POP3 login; 0 disables\n"
    "window_ipv6_prefix = 128          ; IPv6 windows cover this prefix of the client address\n"
    "window_max_recipients = 100       ; a window stops relaying after this many recipients\n"
    "sender_check = domain             ; off | domain | address (anti-spoofing for relaying "
    "clients)\n"
    "denied_style = sendmail           ; sendmail | qmail\n"
    "smarthost =                       ; host:port: all non-local mail goes there instead of MX\n"
    "dns_server =                      ; ip[:port]: resolver for MX lookups (tests)\n"
    "outbound_port = 25                ; port used on MX hosts (tests)\n"
    "max_age = 5d                      ; then a bounce\n";

static void test_interface_example(void **state)
{
    struct cfg cfg, defaults;
    char err[256];
    (void)state;

    if (cfg_load_string(&cfg, interface_example, "postern.conf", "/base", err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg_load_string(&defaults, "[server]\nhostname = mail.example.test\n",
                                     "t.conf", "/base", err, sizeof(err)),
                     0);
    assert_string_equal(cfg.server.hostname, "mail.example.test");
    assert_string_equal(cfg.server.database, "/base/postern.db");
    assert_int_equal(cfg.warning_count, 0);
    assert_cfg_equal(&cfg, &defaults);
    cfg_free(&cfg);
    cfg_free(&defaults);
}

/* ---- small helpers and inih's globals ---------------------------------------------------- */

static void test_listen_format(void **state)
{
    struct cfg_listen a = {"127.0.0.1", 25, false}, b = {"::1", 2525, false}, c = {"*", 1, false};
    char buf[64];
    (void)state;

    cfg_listen_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.1:25");
    cfg_listen_format(&b, buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:2525");
    cfg_listen_format(&c, buf, sizeof(buf));
    assert_string_equal(buf, "*:1");
    cfg_listen_format(&b, buf, 4);
    assert_string_equal(buf, "[::");
}

static void test_free_twice_and_zeroed(void **state)
{
    struct cfg cfg;
    (void)state;

    memset(&cfg, 0, sizeof(cfg));
    cfg_free(&cfg);
    assert_int_equal(cfg_init_defaults(&cfg), 0);
    cfg_free(&cfg);
    assert_null(cfg.server.hostname);
    assert_null(cfg.server.database);
    assert_null(cfg.server.user);
    assert_null(cfg.tls.certificate);
    assert_null(cfg.tls.key);
    cfg_free(&cfg);
    assert_false(cfg_has_tls(&cfg));
}

static void test_inih_options_restored(void **state)
{
    struct cfg cfg;
    (void)state;

    bool multiline = ini_allow_multiline;
    bool inline_comments = ini_allow_inline_comments;
    bool stop = ini_stop_on_first_error;
    int max_line = ini_max_line;
    char *prefixes = ini_inline_comment_prefixes;

    must_load(&cfg, "[smtp]\ntimeout = 1m\n");
    cfg_free(&cfg);
    char err[64];
    assert_int_equal(cfg_load_string(&cfg, "[x]\n", "t.conf", NULL, err, sizeof(err)), -1);

    assert_int_equal(ini_allow_multiline, multiline);
    assert_int_equal(ini_allow_inline_comments, inline_comments);
    assert_int_equal(ini_stop_on_first_error, stop);
    assert_int_equal(ini_max_line, max_line);
    assert_ptr_equal(ini_inline_comment_prefixes, prefixes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_every_key_is_covered),
        cmocka_unit_test(test_print_masks_database_password),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_line_number),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_comments_and_spacing),
        cmocka_unit_test(test_bare_cr_line_is_one_line),
        cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_cannot_open),
        cmocka_unit_test(test_print_round_trip),
        cmocka_unit_test(test_interface_example),
        cmocka_unit_test(test_listen_format),
        cmocka_unit_test(test_free_twice_and_zeroed),
        cmocka_unit_test(test_inih_options_restored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
