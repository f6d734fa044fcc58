/*
 * admin.c - see admin.h. Input is validated and normalised here (common/pure/address.c,
 * common/pure/cidr.c, common/pure/duration.c) before it reaches the store, so the store only ever
 * holds canonical names: a domain in lower case without its trailing dot, "local@domain" addresses,
 * networks with their host bits cleared.
 */
#include "server/cli/admin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "common/config.h"
#include "common/pure/duration.h"
#include "common/password.h"
#include "server/relay/relay_facts.h"
#include "common/pure/relay_policy.h"
#include "storage/queue.h"
#include "storage/store.h"

static void say_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("postern: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void format_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld", (long long)ms);
}

/* Opens the configured database, printing the reason on failure. */
static struct store *open_store(const struct cfg *cfg)
{
    struct store *s = NULL;
    char err[600];
    if (store_open(cfg->server.database, &s, err, sizeof(err)) != STORE_OK) {
        say_error("%s", err);
        return NULL;
    }
    return s;
}

/* Maps a store status to an exit code, printing what went wrong. */
static int store_result(struct store *s, int status, const char *negative_msg)
{
    switch (status) {
    case STORE_OK:
        return ADMIN_OK;
    case STORE_EXISTS:
    case STORE_NOT_FOUND:
    case STORE_NO_DOMAIN:
    case STORE_IN_USE:
        say_error("%s", negative_msg);
        return ADMIN_NEGATIVE;
    default:
        say_error("database error: %s", store_errmsg(s));
        return ADMIN_RUNTIME;
    }
}

/*
 * Options of the form --name VALUE or --name=VALUE, anywhere after the action. Positional
 * arguments are collected in order. Returns -1 (after saying why) on an unknown option or a
 * missing value.
 */
struct opt {
    const char *name; /* without the dashes */
    const char *value;
};

static int parse_args(int argc, char **argv, struct opt *opts, size_t nopts, const char **pos,
                      size_t maxpos, size_t *npos)
{
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            struct opt *o = NULL;
            for (size_t k = 0; k < nopts; k++) {
                if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0)
                    o = &opts[k];
            }
            if (o == NULL) {
                say_error("unknown option %.*s", (int)(nlen + 2), a);
                return -1;
            }
            if (o->value != NULL) {
                say_error("option --%s given twice", o->name);
                return -1;
            }
            if (eq != NULL) {
                o->value = eq + 1;
            } else if (i + 1 < argc) {
                o->value = argv[++i];
            } else {
                say_error("option --%s needs a value", o->name);
                return -1;
            }
            continue;
        }
        if (*npos == maxpos) {
            say_error("unexpected argument \"%s\"", a);
            return -1;
        }
        pos[(*npos)++] = a;
    }
    return 0;
}

/* The action word and exactly `want` positional arguments after it. */
static int need_args(int argc, char **argv, const char *usage, size_t want, const char **pos)
{
    size_t n = 0;
    if (parse_args(argc, argv, NULL, 0, pos, want, &n) != 0 || n != want) {
        if (n != want)
            say_error("usage: %s", usage);
        return -1;
    }
    return 0;
}

/* The index of the action word argv[1] in actions (NULL-terminated), or -1 after printing the
 * usage. */
static int pick_action(int argc, char **argv, const char *usage, const char *const *actions)
{
    if (argc < 2) {
        say_error("usage: %s", usage);
        return -1;
    }
    for (int i = 0; actions[i] != NULL; i++) {
        if (strcmp(argv[1], actions[i]) == 0)
            return i;
    }
    say_error("unknown action \"%s\"; usage: %s", argv[1], usage);
    return -1;
}

/* ---------------------------------------------------------------- domain */

static int print_domain(void *ctx, const struct store_domain *d)
{
    char when[32];
    format_time(d->created_ms, when, sizeof(when));
    printf("%s users=%lld added=%s\n", d->name, (long long)d->users, when);
    return 0;
}

static int normalize_domain_arg(const char *in, char *out, size_t outlen)
{
    const char *why = NULL;
    if (domain_normalize(in, out, outlen, &why) != 0) {
        say_error("invalid domain \"%s\": %s", in, why ? why : "bad syntax");
        return -1;
    }
    return 0;
}

int admin_domain(const struct cfg *cfg, int argc, char **argv)
{
    static const char usage[] = "postern domain add|del DOMAIN | postern domain list";
    static const char *const actions[] = {"list", "add", "del", NULL};
    int act = pick_action(argc, argv, usage, actions);
    if (act < 0)
        return ADMIN_USAGE;
    bool is_list = act == 0;
    bool is_add = act == 1;
    const char *pos[1] = {NULL};
    char name[ADDRESS_DOMAIN_MAX_BYTES + 1];
    if (need_args(argc - 2, argv + 2, usage, is_list ? 0 : 1, pos) != 0)
        return ADMIN_USAGE;
    if (!is_list && normalize_domain_arg(pos[0], name, sizeof(name)) != 0)
        return ADMIN_USAGE;

    struct store *s = open_store(cfg);
    if (s == NULL)
        return ADMIN_RUNTIME;
    int rc;
    char msg[400];
    if (is_list) {
        rc = store_result(s, store_domain_list(s, print_domain, NULL), "");
    } else if (is_add) {
        snprintf(msg, sizeof(msg), "domain %s already exists", name);
        rc = store_result(s, store_domain_add(s, name), msg);
        if (rc == ADMIN_OK)
            printf("added domain %s\n", name);
    } else {
        int st = store_domain_del(s, name);
        if (st == STORE_IN_USE)
            snprintf(msg, sizeof(msg), "domain %s still has users; delete them first", name);
        else
            snprintf(msg, sizeof(msg), "no such domain: %s", name);
        rc = store_result(s, st, msg);
        if (rc == ADMIN_OK)
            printf("deleted domain %s\n", name);
    }
    store_close(&s);
    return rc;
}

/* ---------------------------------------------------------------- user */

static int normalize_address_arg(const char *in, char *out, size_t outlen)
{
    const char *why = NULL;
    if (address_normalize(in, out, outlen, &why) != 0) {
        say_error("invalid address \"%s\": %s", in, why ? why : "bad syntax");
        return -1;
    }
    return 0;
}

/* Reads one line without its line ending; returns its length or -1 (EOF, error, too long). */
static long read_line(FILE *f, char *buf, size_t cap)
{
    if (fgets(buf, (int)cap, f) == NULL)
        return -1;
    size_t n = strlen(buf);
    bool complete = n > 0 && buf[n - 1] == '\n';
    if (!complete && !feof(f))
        return -1; /* longer than cap */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return (long)n;
}

/* Prompts on the terminal with echo off. Echo goes off before the prompt is shown: TCSAFLUSH
 * discards typed-ahead input, so switching after the prompt could drop an answer typed quickly. */
static long prompt_password(FILE *tty, const char *prompt, char *buf, size_t cap)
{
    struct termios old, quiet;
    int fd = fileno(tty);
    bool restore = tcgetattr(fd, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0)
            restore = false;
    }
    fputs(prompt, stderr);
    fflush(stderr);
    long n = read_line(tty, buf, cap);
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &old);
    return n;
}

/*
 * The new password: the first line of standard input when it is not a terminal, otherwise
 * asked twice on the terminal without echo. Returns 0 with the hash in hash_out.
 */
static int get_password_hash(char hash_out[PASSWORD_HASH_BYTES])
{
    char pw[PASSWORD_MAX_BYTES + 2], again[PASSWORD_MAX_BYTES + 2];
    long n;
    int rc = -1;
    if (!isatty(STDIN_FILENO)) {
        n = read_line(stdin, pw, sizeof(pw));
        if (n < 0) {
            say_error("no password on standard input (expected one line of at most %d bytes)",
                      PASSWORD_MAX_BYTES);
            goto out;
        }
    } else {
        n = prompt_password(stdin, "Password: ", pw, sizeof(pw));
        long m = n < 0 ? -1 : prompt_password(stdin, "Again: ", again, sizeof(again));
        if (n < 0 || m < 0) {
            say_error("no password given");
            goto out;
        }
        if (n != m || sodium_memcmp(pw, again, (size_t)n) != 0) {
            say_error("the passwords do not match");
            goto out;
        }
    }
    if (n == 0) {
        say_error("empty password refused");
        goto out;
    }
    if (password_hash(pw, (size_t)n, hash_out) != 0) {
        say_error("cannot hash the password (out of memory?)");
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(pw, sizeof(pw));
    sodium_memzero(again, sizeof(again));
    return rc;
}

static int print_user(void *ctx, const struct store_user *u)
{
    char when[32];
    format_time(u->created_ms, when, sizeof(when));
    printf("%s messages=%lld bytes=%lld added=%s\n", u->address, (long long)u->messages,
           (long long)u->bytes, when);
    return 0;
}

int admin_user(const struct cfg *cfg, int argc, char **argv)
{
    static const char usage[] = "postern user add|del|passwd ADDRESS | postern user list [DOMAIN]";
    static const char *const actions[] = {"list", "add", "del", "passwd", NULL};
    int act = pick_action(argc, argv, usage, actions);
    if (act < 0)
        return ADMIN_USAGE;
    bool is_list = act == 0;
    bool is_add = act == 1;
    bool is_del = act == 2;
    bool is_passwd = act == 3;
    const char *pos[1] = {NULL};
    size_t npos = 0;
    char addr[ADDRESS_PATH_MAX_BYTES + 1], domain[ADDRESS_DOMAIN_MAX_BYTES + 1];
    if (is_list) {
        if (parse_args(argc - 2, argv + 2, NULL, 0, pos, 1, &npos) != 0)
            return ADMIN_USAGE;
        if (npos == 1 && normalize_domain_arg(pos[0], domain, sizeof(domain)) != 0)
            return ADMIN_USAGE;
    } else {
        if (need_args(argc - 2, argv + 2, usage, 1, pos) != 0)
            return ADMIN_USAGE;
        if (normalize_address_arg(pos[0], addr, sizeof(addr)) != 0)
            return ADMIN_USAGE;
        snprintf(domain, sizeof(domain), "%s", strrchr(addr, '@') + 1);
    }

    struct store *s = open_store(cfg);
    if (s == NULL)
        return ADMIN_RUNTIME;
    int rc = ADMIN_OK;
    char msg[600];
    if (is_list) {
        rc = store_result(s, store_user_list(s, npos ? domain : NULL, print_user, NULL), "");
    } else if (is_del) {
        snprintf(msg, sizeof(msg), "no such user: %s", addr);
        rc = store_result(s, store_user_del(s, addr), msg);
        if (rc == ADMIN_OK)
            printf("deleted user %s\n", addr);
    } else {
        /* Check before asking for a password, so a typo does not cost a prompt. */
        int64_t id;
        char old[PASSWORD_HASH_BYTES];
        bool local = false;
        int st = store_user_get(s, addr, &id, old, sizeof(old));
        if (st == STORE_OK && is_add) {
            snprintf(msg, sizeof(msg), "user %s already exists", addr);
            rc = store_result(s, STORE_EXISTS, msg);
        } else if (st == STORE_NOT_FOUND && is_passwd) {
            snprintf(msg, sizeof(msg), "no such user: %s", addr);
            rc = store_result(s, st, msg);
        } else if (st != STORE_OK && st != STORE_NOT_FOUND) {
            rc = store_result(s, st, "");
        } else if (is_add && (st = store_domain_is_local(s, domain, &local)) != STORE_OK) {
            rc = store_result(s, st, "");
        } else if (is_add && !local) {
            snprintf(msg, sizeof(msg),
                     "%s is not a local domain; add it with: postern domain add %s", domain,
                     domain);
            rc = store_result(s, STORE_NO_DOMAIN, msg);
        }
        char hash[PASSWORD_HASH_BYTES];
        if (rc == ADMIN_OK && get_password_hash(hash) != 0)
            rc = ADMIN_USAGE;
        if (rc == ADMIN_OK) {
            if (is_add) {
                snprintf(msg, sizeof(msg), "cannot add %s: already exists or domain is gone", addr);
                rc = store_result(s, store_user_add(s, addr, domain, hash), msg);
            } else {
                snprintf(msg, sizeof(msg), "no such user: %s", addr);
                rc = store_result(s, store_user_set_password(s, addr, hash), msg);
            }
            if (rc == ADMIN_OK)
                printf("%s user %s\n", is_add ? "added" : "changed password of", addr);
        }
    }
    store_close(&s);
    return rc;
}

/* ---------------------------------------------------------------- network */

static int print_network(void *ctx, const struct store_network *n)
{
    char when[32];
    format_time(n->created_ms, when, sizeof(when));
    printf("%s added=%s\n", n->cidr, when);
    return 0;
}

int admin_network(const struct cfg *cfg, int argc, char **argv)
{
    static const char usage[] = "postern network add|del CIDR | postern network list";
    static const char *const actions[] = {"list", "add", "del", NULL};
    int act = pick_action(argc, argv, usage, actions);
    if (act < 0)
        return ADMIN_USAGE;
    bool is_list = act == 0;
    bool is_add = act == 1;
    const char *pos[1] = {NULL};
    if (need_args(argc - 2, argv + 2, usage, is_list ? 0 : 1, pos) != 0)
        return ADMIN_USAGE;
    struct cidr c;
    char text[CIDR_STRLEN];
    if (!is_list) {
        const char *why = NULL;
        if (cidr_parse(pos[0], &c, &why) != 0) {
            say_error("invalid network \"%s\": %s", pos[0], why ? why : "bad syntax");
            return ADMIN_USAGE;
        }
        cidr_format(&c, text, sizeof(text));
    }
    struct store *s = open_store(cfg);
    if (s == NULL)
        return ADMIN_RUNTIME;
    int rc;
    char msg[200];
    if (is_list) {
        rc = store_result(s, store_network_list(s, print_network, NULL), "");
    } else if (is_add) {
        snprintf(msg, sizeof(msg), "network %s already exists", text);
        rc = store_result(s, store_network_add(s, &c), msg);
        if (rc == ADMIN_OK)
            printf("added network %s\n", text);
    } else {
        snprintf(msg, sizeof(msg), "no such network: %s", text);
        rc = store_result(s, store_network_del(s, &c), msg);
        if (rc == ADMIN_OK)
            printf("deleted network %s\n", text);
    }
    store_close(&s);
    return rc;
}

/* ---------------------------------------------------------------- window */

static int print_window(void *ctx, const struct store_window *w)
{
    char opened[32], expires[32];
    format_time(w->opened_ms, opened, sizeof(opened));
    format_time(w->expires_ms, expires, sizeof(expires));
    printf("%s user=%s opened=%s expires=%s relayed=%lld\n", w->key, w->user[0] ? w->user : "-",
           opened, expires, (long long)w->relayed);
    return 0;
}

int admin_window(const struct cfg *cfg, int argc, char **argv)
{
    static const char usage[] = "postern window list | postern window open IP [--user ADDRESS] "
                                "[--for DURATION] | postern window close IP";
    static const char *const actions[] = {"list", "open", "close", NULL};
    int act = pick_action(argc, argv, usage, actions);
    if (act < 0)
        return ADMIN_USAGE;
    bool is_list = act == 0;
    bool is_open = act == 1;
    bool is_close = act == 2;
    struct opt opts[] = {{"user", NULL}, {"for", NULL}};
    const char *pos[1] = {NULL};
    size_t npos = 0;
    if (parse_args(argc - 2, argv + 2, opts, is_open ? 2 : 0, pos, 1, &npos) != 0)
        return ADMIN_USAGE;
    if (npos != (is_list ? 0u : 1u)) {
        say_error("usage: %s", usage);
        return ADMIN_USAGE;
    }
    char key[CIDR_STRLEN] = "";
    char user[ADDRESS_PATH_MAX_BYTES + 1] = "";
    uint64_t duration_ms = cfg->relay.window_ms;
    if (!is_list) {
        struct ip_addr ip;
        if (ip_parse(pos[0], &ip) != 0) {
            say_error("invalid IP address \"%s\"", pos[0]);
            return ADMIN_USAGE;
        }
        ip_window_key(&ip, cfg->relay.window_ipv6_prefix, key, sizeof(key));
    }
    if (is_open) {
        if (opts[0].value != NULL && normalize_address_arg(opts[0].value, user, sizeof(user)) != 0)
            return ADMIN_USAGE;
        if (opts[1].value != NULL && duration_parse(opts[1].value, &duration_ms) != 0) {
            say_error("invalid duration \"%s\" (expected e.g. 90s, 30m, 2h)", opts[1].value);
            return ADMIN_USAGE;
        }
        if (duration_ms == 0) {
            say_error("a window needs a duration above 0 (relay.window is 0; give --for)");
            return ADMIN_USAGE;
        }
        if (duration_ms > (uint64_t)INT64_MAX / 2) {
            say_error("duration \"%s\" is too long", opts[1].value);
            return ADMIN_USAGE;
        }
    }

    struct store *s = open_store(cfg);
    if (s == NULL)
        return ADMIN_RUNTIME;
    int rc = ADMIN_OK;
    char msg[600];
    int64_t now = store_now_ms();
    if (is_list) {
        rc = store_result(s, store_window_list(s, now, print_window, NULL), "");
    } else if (is_close) {
        snprintf(msg, sizeof(msg), "no window for %s", key);
        rc = store_result(s, store_window_close(s, key), msg);
        if (rc == ADMIN_OK)
            printf("closed window %s\n", key);
    } else {
        if (user[0] != '\0') {
            int64_t id;
            char hash[PASSWORD_HASH_BYTES];
            snprintf(msg, sizeof(msg), "no such user: %s", user);
            rc = store_result(s, store_user_get(s, user, &id, hash, sizeof(hash)), msg);
        }
        if (rc == ADMIN_OK)
            rc = store_result(s, store_window_open(s, key, user, now, (int64_t)duration_ms), "");
        if (rc == ADMIN_OK) {
            char expires[32], d[32];
            format_time(now + (int64_t)duration_ms, expires, sizeof(expires));
            duration_format(duration_ms, d, sizeof(d));
            printf("opened window %s user=%s for=%s expires=%s\n", key, user[0] ? user : "-", d,
                   expires);
        }
    }
    store_close(&s);
    return rc;
}

/* ---------------------------------------------------------------- queue */

static int print_queue_entry(void *ctx, const struct store_queue_entry *q)
{
    char next[32];
    char err[300];
    format_time(q->next_attempt_ms, next, sizeof(next));
    log_escape(err, sizeof(err), q->last_error, strlen(q->last_error));
    printf("%lld %s %s attempts=%lld next=%s error=%s\n", (long long)q->id,
           q->sender[0] ? q->sender : "<>", q->recipient, (long long)q->attempts, next, err);
    return 0;
}

int admin_queue(const struct cfg *cfg, int argc, char **argv)
{
    static const char usage[] = "postern queue list | postern queue flush | postern queue drop ID";
    static const char *const actions[] = {"list", "flush", "drop", NULL};
    int act = pick_action(argc, argv, usage, actions);
    if (act < 0)
        return ADMIN_USAGE;
    bool is_list = act == 0;
    bool is_flush = act == 1;
    bool is_drop = act == 2;
    const char *pos[1] = {NULL};
    if (need_args(argc - 2, argv + 2, usage, is_drop ? 1 : 0, pos) != 0)
        return ADMIN_USAGE;
    long long id = 0;
    if (is_drop) {
        char *end = NULL;
        errno = 0;
        id = strtoll(pos[0], &end, 10);
        if (errno != 0 || end == pos[0] || *end != '\0' || id <= 0 || pos[0][0] == '+') {
            say_error("invalid queue id \"%s\" (expected a number from queue list)", pos[0]);
            return ADMIN_USAGE;
        }
    }
    struct store *s = open_store(cfg);
    if (s == NULL)
        return ADMIN_RUNTIME;
    int rc;
    char msg[100];
    if (is_list) {
        rc = store_result(s, store_queue_list(s, print_queue_entry, NULL), "");
    } else if (is_flush) {
        /* The running server sees the change at its next scan (queue.h, STORE_QUEUE_RESCAN_MS):
         * the database is the only channel between the two processes. */
        size_t due = 0;
        rc = store_result(s, store_queue_flush(s, store_now_ms(), &due), "");
        if (rc == ADMIN_OK)
            printf("flushed: %zu queue entries due now\n", due);
    } else {
        snprintf(msg, sizeof(msg), "no such queue entry: %lld", id);
        rc = store_result(s, store_queue_drop(s, id), msg);
        if (rc == ADMIN_OK)
            printf("dropped queue entry %lld\n", id);
    }
    store_close(&s);
    return rc;
}

/* ---------------------------------------------------------------- config */

int admin_config(const struct cfg *cfg, int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "check") != 0) {
        say_error("usage: postern config check");
        return ADMIN_USAGE;
    }
    for (size_t i = 0; i < cfg->warning_count; i++)
        fprintf(stderr, "postern: warning: %s\n", cfg->warnings[i]);
    if (cfg_print(cfg, stdout) != 0) {
        say_error("cannot write the configuration: %s", strerror(errno));
        return ADMIN_RUNTIME;
    }
    return ADMIN_OK;
}

/* ---------------------------------------------------------------- relay-check */

/*
 * An address given on the command line, read as the server reads a path: "" and "<>" are the
 * null path; anything without a leading '<' gets the brackets added. The whole argument must be
 * the path (nothing after the '>').
 */
static int parse_path_arg(const char *opt, const char *in, struct address *out,
                          enum address_path_kind *kind_out)
{
    char path[ADDRESS_PATH_MAX_BYTES + 3];
    size_t in_len = strnlen(in, sizeof(path));
    int n = in[0] == '<' ? snprintf(path, sizeof(path), "%s", in)
                         : snprintf(path, sizeof(path), "<%s>", in);
    const char *why = NULL;
    size_t consumed = 0;
    if (n < 0 || (size_t)n >= sizeof(path) || in_len >= sizeof(path)) {
        why = "path too long";
    } else if (address_parse_path(path, (size_t)n, out, kind_out, &consumed, &why) == 0 &&
               consumed != (size_t)n) {
        why = "junk after the address";
    }
    if (why != NULL) {
        say_error("invalid --%s address \"%s\": %s", opt, in, why);
        return -1;
    }
    return 0;
}

int admin_relay_check(const struct cfg *cfg, int argc, char **argv)
{
    static const char usage[] =
        "postern relay-check --ip IP [--user ADDRESS] --from ADDR --to ADDR";
    enum { OPT_IP, OPT_USER, OPT_FROM, OPT_TO };
    struct opt opts[] = {{"ip", NULL}, {"user", NULL}, {"from", NULL}, {"to", NULL}};
    size_t npos = 0;
    if (parse_args(argc - 1, argv + 1, opts, 4, NULL, 0, &npos) != 0)
        return ADMIN_USAGE;
    const char *values[4];
    for (int k = 0; k < 4; k++) {
        values[k] = opts[k].value;
        if (k != OPT_USER && values[k] == NULL) {
            say_error("missing --%s; usage: %s", opts[k].name, usage);
            return ADMIN_USAGE;
        }
    }

    struct ip_addr ip;
    if (ip_parse(values[OPT_IP], &ip) != 0) {
        say_error("invalid IP address \"%s\"", values[OPT_IP]);
        return ADMIN_USAGE;
    }
    char user[ADDRESS_STRLEN] = "";
    if (values[OPT_USER] != NULL) {
        const char *why = NULL;
        if (address_normalize(values[OPT_USER], user, sizeof(user), &why) != 0) {
            say_error("invalid --user address \"%s\": %s", values[OPT_USER],
                      why != NULL ? why : "bad syntax");
            return ADMIN_USAGE;
        }
    }
    struct address sender, rcpt;
    enum address_path_kind sender_kind, rcpt_kind;
    if (parse_path_arg("from", values[OPT_FROM], &sender, &sender_kind) != 0 ||
        parse_path_arg("to", values[OPT_TO], &rcpt, &rcpt_kind) != 0)
        return ADMIN_USAGE;
    if (sender_kind == ADDRESS_PATH_POSTMASTER) {
        say_error("invalid --from address \"%s\": <Postmaster> is a recipient only (RFC 5321 "
                  "4.5.1); give an address with a domain",
                  values[OPT_FROM]);
        return ADMIN_USAGE;
    }
    if (rcpt_kind == ADDRESS_PATH_NULL) {
        say_error("invalid --to address \"%s\": the null path is not a recipient", values[OPT_TO]);
        return ADMIN_USAGE;
    }

    struct store *s = NULL;
    char err[600];
    if (store_open(cfg->server.database, &s, err, sizeof(err)) != STORE_OK) {
        say_error("%s", err);
        return ADMIN_RUNTIME;
    }
    int rc = ADMIN_OK;
    if (user[0] != '\0') {
        int64_t id;
        char hash[PASSWORD_HASH_BYTES];
        int st = store_user_get(s, user, &id, hash, sizeof(hash));
        if (st == STORE_NOT_FOUND) {
            say_error("no such user: %s", user);
            rc = ADMIN_NEGATIVE;
        } else if (st != STORE_OK) {
            say_error("database error: %s", store_errmsg(s));
            rc = ADMIN_RUNTIME;
        }
    }
    struct relay_scratch scratch;
    struct relay_facts facts;
    if (rc == ADMIN_OK &&
        relay_gather(s, cfg, &ip, user[0] != '\0' ? user : NULL, &sender, sender_kind, &rcpt,
                     rcpt_kind, store_now_ms(), &scratch, &facts) != STORE_OK) {
        say_error("database error: %s", store_errmsg(s));
        rc = ADMIN_RUNTIME;
    }
    if (rc == ADMIN_OK) {
        struct relay_decision d;
        char line[RELAY_LOG_MAX_BYTES];
        relay_decide(&facts, &d);
        relay_format_log(&facts, &d, line, sizeof(line));
        if (printf("%s\n%s\n", d.reply, line) < 0 || fflush(stdout) != 0) {
            say_error("cannot write the answer");
            rc = ADMIN_RUNTIME;
        } else {
            rc = d.verdict == RELAY_ALLOW ? ADMIN_OK : ADMIN_NEGATIVE;
        }
    }
    store_close(&s);
    return rc;
}
