/*
 * config.h - the whole configuration of postern in one struct.
 *
 * config.c reads an INI file with inih into struct cfg. Every parameter is declared once, in
 * one constant table in config_table.c (section, key, type, field, default text, bounds), so
 * parsing, defaults, range checks and cfg_print() can never disagree. Field names are the INI
 * keys, with the unit appended: durations are uint64_t milliseconds (`_ms`), sizes uint64_t
 * bytes (`_bytes`). This module only reads and checks text; it opens no socket, resolves no
 * name and looks up no user (serve.c does that with the values given here).
 *
 * File syntax (stricter than inih alone, on purpose):
 *   - `key = value`, `[section]`, comments starting with `;` or `#` on their own line or after
 *     whitespace at the end of a line (`timeout = 5m ; idle limit`). `key: value` and
 *     multi-line (indented continuation) values are syntax errors. A value cannot start with
 *     `;` or `#` (`key =#x`): cfg_print would write it back as a comment.
 *   - Section and key names are lower case and exact. Keys before the first [section], unknown
 *     sections (even empty ones), unknown keys, a key given twice in a file and lines longer
 *     than CFG_LINE_MAX_BYTES are errors. Every error stops the load: nothing half-read is used.
 *   - Booleans: yes/no, true/false, on/off, 1/0 (printed as yes/no).
 *   - Relative paths (database, tls certificate and key, smarthost_password_file) resolve
 *     against the folder of the config file, including the default database "postern.db".
 *     A database that is a PostgreSQL connection string (common/pure/conninfo.h: it starts
 *     with postgresql:// or postgres://, or is key=value pairs) is kept as written, and
 *     `config check` prints it with its password masked.
 * Error texts (err of cfg_load*), one line, no trailing newline:
 *   FILE:LINE: unknown section [NAME]
 *   FILE:LINE: unknown key "KEY" in [SECTION]
 *   FILE:LINE: key "KEY" outside any [section]
 *   FILE:LINE: duplicate key "KEY" in [SECTION] (first set on line N)
 *   FILE:LINE: bad value "VALUE" for KEY in [SECTION]: REASON
 *   FILE:LINE: line too long (limit 8192 bytes)
 *   FILE:LINE: syntax error
 *   FILE: cannot open: STRERROR
 *   FILE: [tls] certificate and key must be set together
 *   FILE: [relay] smarthost_user and smarthost_password_file must be set together
 *   FILE: [relay] smarthost_user is set but smarthost is not
 *   FILE: ADDR is in both [S1] K1 and [S2] K2        (one address:port on two listeners)
 *   FILE: [S] K: ADDR is marked proxy but [server] proxy_from is empty
 *
 * Not thread-safe: inih's options are process-wide variables that cfg_load* sets (and restores)
 * around each parse. Load the configuration from one thread, before starting others.
 */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/pure/cidr.h"

/* Longest accepted line, without its line ending; longer is an error, never truncation. Room
 * for a PATH_MAX (4096) path and its key, so whatever cfg_print writes loads back. */
#define CFG_LINE_MAX_BYTES 8192
/* The longest PostgreSQL connection string [server] database takes, with its NUL: what the store
 * keeps of it (storage/store_internal.h, struct store). */
#define CFG_DATABASE_CONNINFO_MAX_BYTES 1024
/* Addresses per listen key; more is a config error. */
#define CFG_LISTEN_MAX 8
/* Networks per CIDR list key ([server] proxy_from); more is a config error. */
#define CFG_CIDRS_MAX         32
#define CFG_WARNINGS_MAX      8
#define CFG_WARNING_MAX_BYTES 256

/*
 * One listening address. host is "*" (every address, IPv4 and IPv6: the server decides how
 * to bind), or a numeric IPv4 or IPv6 address in canonical inet_ntop form without brackets
 * ("127.0.0.1", "::1", "0.0.0.0"). port is 1..65535. proxy: written "ADDRESS:PORT proxy" (the
 * SMTP and POP3 listen keys only): every connection must open with a PROXY protocol header
 * from a balancer in [server] proxy_from.
 */
struct cfg_listen {
    char host[64];
    uint16_t port;
    bool proxy;
};

/* A comma-separated listen key; count 0 means the service is disabled (empty value). */
struct cfg_listen_list {
    struct cfg_listen addrs[CFG_LISTEN_MAX];
    size_t count;
};

/* A comma-separated list of networks ("10.0.0.0/8, 2001:db8::/32"); count 0 when empty. */
struct cfg_cidr_list {
    struct cidr nets[CFG_CIDRS_MAX];
    size_t count;
};

/*
 * smarthost (a domain name, an IPv4 address or an IPv6 address without brackets; default port
 * 25) or dns_server (numeric IPv4 or IPv6 only; default port 53). host "" means not set, and
 * then port is 0.
 */
struct cfg_hostport {
    char host[HOSTNAME_BUF_BYTES];
    uint16_t port;
};

enum cfg_sender_check {
    CFG_SENDER_CHECK_OFF = 0,
    CFG_SENDER_CHECK_DOMAIN,
    CFG_SENDER_CHECK_ADDRESS,
};

enum cfg_milter_default {
    CFG_MILTER_TEMPFAIL = 0, /* 4xx: the client tries again later (Postfix's default) */
    CFG_MILTER_ACCEPT,       /* go on without that milter */
};

enum cfg_denied_style {
    CFG_DENIED_STYLE_SENDMAIL = 0,
    CFG_DENIED_STYLE_QMAIL,
};

/*
 * Every string is owned by the struct (heap, freed by cfg_free) and is never NULL after a
 * successful cfg_init_defaults/cfg_load*: "" means "not set".
 */
struct cfg {
    struct {
        char *hostname; /* default: gethostname(), "localhost" if that is unusable */
        /* This process's name among the nodes sharing the database (storage/nodes.c): in queue
         * claims, maildrop locks and logs. Default: the host name, as for hostname. */
        char *node;
        char *database; /* a SQLite path, or a PostgreSQL connection string (conninfo.h) */
        char *user;     /* "" = do not drop privileges */
        enum log_level log_level;
        bool transcript;
        bool faults;              /* fault injection (server/fault/fault.h): off unless yes */
        unsigned max_connections; /* 1..1000000 */
        unsigned max_connections_per_ip; /* 1..1000000 */
        unsigned workers;                /* event loops, 1..64; 0 = one per online core */
        struct cfg_listen_list metrics;  /* the Prometheus endpoint; count 0 = off */
        /* The balancers allowed to send a PROXY protocol header, to the listen addresses marked
         * proxy; a marked address with this list empty is a config error. */
        struct cfg_cidr_list proxy_from;
    } server;
    struct {
        struct cfg_listen_list listen;
        struct cfg_listen_list submission;
        struct cfg_listen_list submissions;
        uint64_t max_message_size_bytes; /* 1K..512M */
        /* Free space the database's file system keeps: below it new mail is refused (452);
         * 0 = no reserve. "auto" (the default) is twice max_message_size. */
        uint64_t min_free_space_bytes;
        unsigned max_recipients; /* 1..100000; below 100 warns (RFC 5321 4.5.3.1.8) */
        bool plaintext_auth;
        uint64_t timeout_ms;       /* 1s..1d */
        unsigned soft_error_limit; /* 1..1000; after this many errors each reply waits */
        unsigned hard_error_limit; /* soft_error_limit..1000; then 421 and close */
        uint64_t error_delay_ms;   /* 0..1m: the wait past the soft limit */
    } smtp;
    struct {
        struct cfg_listen_list listen;
        struct cfg_listen_list pop3s;
        bool plaintext_auth;
        uint64_t timeout_ms; /* 1s..1d */
    } pop3;
    struct {
        char *certificate; /* path; "" = no TLS at all */
        char *key;         /* path; set exactly when certificate is */
    } tls;
    struct {
        uint64_t window_ms;             /* 0 (no POP-before-SMTP) .. 365d */
        unsigned window_ipv6_prefix;    /* 32..128 */
        unsigned window_max_recipients; /* 1..1000000 */
        enum cfg_sender_check sender_check;
        enum cfg_denied_style denied_style;
        struct cfg_hostport smarthost;
        char *smarthost_user;          /* "" = no AUTH at the smarthost */
        char *smarthost_password_file; /* path; set exactly when smarthost_user is */
        struct cfg_hostport dns_server;
        uint16_t outbound_port; /* 1..65535 */
        uint64_t max_age_ms;    /* 1s..365d */
        /* 0..365d: a queued message still undelivered this long gets one delay notice (RFC
         * 3461 Action: delayed) for each recipient that did not refuse it; 0 = never */
        uint64_t delay_notice_ms;
    } relay;
    struct {
        char *mx;            /* milters for the MX port, in order; "" = none */
        char *submission;    /* milters for the submission ports (587, 465); "" = none */
        uint64_t timeout_ms; /* 1s..1h: one step's wait for a milter's answer */
        enum cfg_milter_default default_action; /* when a milter is down, slow or confused */
    } milter;
    /* Allowed but doubtful values, "FILE:LINE: text", for the caller to log or print. */
    char warnings[CFG_WARNINGS_MAX][CFG_WARNING_MAX_BYTES];
    size_t warning_count;
};

/*
 * Sets every default, with no file: relative paths stay relative to the current folder.
 * *cfg is overwritten without freeing (it must not hold strings still to be freed).
 * 0, or -1 when out of memory (then *cfg holds nothing to free).
 */
int cfg_init_defaults(struct cfg *cfg);

/*
 * Defaults, then the file at path. 0 on success. -1 on any error, with the message (see the
 * list above) in err; then *cfg holds nothing to free, and cfg_free is still safe.
 * *cfg is overwritten without freeing, as for cfg_init_defaults.
 */
int cfg_load(struct cfg *cfg, const char *path, char *err, size_t errlen);

/*
 * Like cfg_load on a NUL-terminated text; errors name name_for_errors as FILE. Relative paths
 * resolve against base_dir, or stay as written when base_dir is NULL.
 */
int cfg_load_string(struct cfg *cfg, const char *text, const char *name_for_errors,
                    const char *base_dir, char *err, size_t errlen);

/*
 * Writes the effective configuration as an INI file that cfg_load accepts back and that gives
 * an identical struct: every section and key in table order, canonical values ("30m", "25M",
 * "yes"/"no", absolute paths when they were resolved). 0, or -1 when a write failed. The
 * smarthost password is never in struct cfg (only its file's path: serve.c reads the file at
 * start), so it cannot be printed.
 */
int cfg_print(const struct cfg *cfg, FILE *out);

/* Frees the strings and sets them to NULL; safe to call twice and on a zeroed struct. */
void cfg_free(struct cfg *cfg);

/* True when certificate and key are set: STARTTLS/STLS and the implicit-TLS ports are on. */
bool cfg_has_tls(const struct cfg *cfg);

/* "127.0.0.1:2525", "[::1]:2525" or "*:25" into buf (cut at len-1 bytes); without the proxy
 * marker: this is the socket's name. */
void cfg_listen_format(const struct cfg_listen *addr, char *buf, size_t len);

/* True when ip lies in one of the networks of list. */
bool cfg_cidr_list_contains(const struct cfg_cidr_list *list, const struct ip_addr *ip);

#endif
