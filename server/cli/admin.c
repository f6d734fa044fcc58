/*
 * admin.c - see admin.h. One constant table (commands[] at the end) names every command line
 * action: its words, the positional arguments and options it takes, the usage line printed when
 * they are wrong, a check function that validates and normalises the input, and a run function
 * that acts. One dispatcher (admin_run) reads the table, so the argument rules and their error
 * texts are written once. Input is validated and normalised before any database is opened
 * (common/pure/address.c, common/pure/cidr.c, common/pure/duration.c), so bad input exits 2 even
 * when the database is unavailable and the store only ever holds canonical names: a domain in
 * lower case without its trailing dot, "local@domain" addresses, networks with their host bits
 * cleared. What each action does to the store is in storage/; the relay decision itself is
 * common/pure/relay_policy.c. The window and queue commands' functions are in window_queue.c,
 * dkim's in dkim.c and fault's in fault.c (admin_internal.h).
 */
#include "server/cli/admin.h"
#include "server/cli/admin_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/conninfo.h"
#include "common/config.h"
#include "common/password.h"
#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "common/pure/date.h"
#include "common/pure/duration.h"
#include "common/pure/relay_policy.h"
#include "server/cli/password_input.h"
#include "server/net/tls.h"
#include "server/outbound/smtp_client.h"
#include "server/relay/relay_facts.h"
#include "server/selftest/selftest.h"
#include "server/serve.h"
#include "storage/queue.h"
#include "storage/store.h"

static const char *const opt_names[OPT_COUNT] = {
    "ip",    "user",  "from",  "to",    "for",         "selector", "algorithm", "bits",
    "reply", "delay", "after", "times", "probability", "seed",     "msg"};

void admin_say_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("postern: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/*
 * Ends a listing: an empty one says so on stderr, as postqueue says "Mail queue is empty", so a
 * person sees why nothing came; stdout stays empty, so a script reading it sees no rows.
 */
void admin_say_if_empty(int rc, size_t rows, const char *what)
{
    if (rc == ADMIN_OK && rows == 0)
        admin_say_error("%s", what);
}

/* Maps a store status to an exit code, printing what went wrong. */
int admin_store_result(struct store *s, int status, const char *negative_msg)
{
    switch (status) {
    case STORE_OK:
        return ADMIN_OK;
    case STORE_EXISTS:
    case STORE_NOT_FOUND:
    case STORE_NO_DOMAIN:
    case STORE_IN_USE:
        admin_say_error("%s", negative_msg);
        return ADMIN_NEGATIVE;
    default:
        admin_say_error("database error: %s", store_errmsg(s));
        return ADMIN_RUNTIME;
    }
}

/*
 * Options of the form --name VALUE or --name=VALUE, anywhere after the action; only those in
 * `allowed` (an OPT_BIT mask) are known. Positional arguments are collected in order, at most
 * max_pos (never above ARGS_MAX_POS). Returns -1 on an unknown option, a repeated one, a missing
 * value or a positional argument too many, after saying which, followed by the usage line.
 */
static int parse_args(int argc, char **argv, const char *usage, unsigned allowed, size_t max_pos,
                      struct args *a)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) == 0 && arg[2] != '\0') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            int o = -1;
            for (int k = 0; k < OPT_COUNT; k++) {
                if ((allowed & OPT_BIT(k)) && strlen(opt_names[k]) == nlen &&
                    strncmp(opt_names[k], name, nlen) == 0)
                    o = k;
            }
            if (o < 0) {
                admin_say_error("unknown option %.*s; usage: %s", (int)(nlen + 2), arg, usage);
                return -1;
            }
            if (a->opt[o] != NULL) {
                admin_say_error("option --%s given twice; usage: %s", opt_names[o], usage);
                return -1;
            }
            if (eq != NULL) {
                a->opt[o] = eq + 1;
            } else if (i + 1 < argc) {
                a->opt[o] = argv[++i];
            } else {
                admin_say_error("option --%s needs a value; usage: %s", opt_names[o], usage);
                return -1;
            }
            continue;
        }
        if (a->npos == max_pos) {
            admin_say_error("unexpected argument \"%s\"; usage: %s", arg, usage);
            return -1;
        }
        a->pos[a->npos++] = arg;
    }
    return 0;
}

/* ---------------------------------------------------------------- checks */

int admin_check_domain(const struct args *a, struct input *in)
{
    const char *why = NULL;
    /* A U-label domain is stored as its A-label, the one form the users table knows. */
    if (domain_normalize_flags(a->pos[0], ADDRESS_ALLOW_UTF8, in->domain, sizeof(in->domain),
                               &why) != 0) {
        admin_say_error("invalid domain \"%s\": %s", a->pos[0], why ? why : "bad syntax");
        return -1;
    }
    in->has_domain = true;
    return 0;
}

/* user list [DOMAIN]: the domain is an optional filter. */
static int check_domain_filter(const struct args *a, struct input *in)
{
    return a->npos == 0 ? 0 : admin_check_domain(a, in);
}

static int check_address(const struct args *a, struct input *in)
{
    const char *why = NULL;
    if (address_normalize(a->pos[0], in->address, sizeof(in->address), &why) != 0) {
        admin_say_error("invalid address \"%s\": %s", a->pos[0], why ? why : "bad syntax");
        return -1;
    }
    snprintf(in->domain, sizeof(in->domain), "%s", strrchr(in->address, '@') + 1);
    in->has_domain = true;
    return 0;
}

static int check_network(const struct args *a, struct input *in)
{
    const char *why = NULL;
    if (cidr_parse(a->pos[0], &in->net, &why) != 0) {
        admin_say_error("invalid network \"%s\": %s", a->pos[0], why ? why : "bad syntax");
        return -1;
    }
    cidr_format(&in->net, in->key, sizeof(in->key));
    return 0;
}

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
    } else if (address_parse_path_flags(path, (size_t)n, ADDRESS_ALLOW_UTF8, out, kind_out,
                                        &consumed, &why) == 0 &&
               consumed != (size_t)n) {
        why = "junk after the address";
    }
    if (why != NULL) {
        admin_say_error("invalid --%s address \"%s\": %s", opt, in, why);
        return -1;
    }
    return 0;
}

static int check_relay(const struct args *a, struct input *in)
{
    const char *ip = a->opt[OPT_IP], *user = a->opt[OPT_USER];
    if (ip_parse(ip, &in->ip) != 0) {
        admin_say_error("invalid IP address \"%s\"", ip);
        return -1;
    }
    if (user != NULL) {
        const char *why = NULL;
        if (address_normalize(user, in->user, sizeof(in->user), &why) != 0) {
            admin_say_error("invalid --user address \"%s\": %s", user,
                            why != NULL ? why : "bad syntax");
            return -1;
        }
    }
    if (parse_path_arg("from", a->opt[OPT_FROM], &in->sender, &in->sender_kind) != 0 ||
        parse_path_arg("to", a->opt[OPT_TO], &in->rcpt, &in->rcpt_kind) != 0)
        return -1;
    if (in->sender_kind == ADDRESS_PATH_POSTMASTER) {
        admin_say_error("invalid --from address \"%s\": <Postmaster> is a recipient only (RFC 5321 "
                        "4.5.1); give an address with a domain",
                        a->opt[OPT_FROM]);
        return -1;
    }
    if (in->rcpt_kind == ADDRESS_PATH_NULL) {
        admin_say_error("invalid --to address \"%s\": the null path is not a recipient",
                        a->opt[OPT_TO]);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- serve and config */

static int run_serve(struct store *s, const struct args *a, const struct input *in)
{
    return serve_main(a->cfg, a->config_path);
}

static int run_config_check(struct store *s, const struct args *a, const struct input *in)
{
    for (size_t i = 0; i < a->cfg->warning_count; i++)
        fprintf(stderr, "postern: warning: %s\n", a->cfg->warnings[i]);
    /* The files serve loads at start, loaded the same way, so that a check that passes means
     * serve can start. */
    struct tls_ctx *tls;
    struct smtp_client_creds *creds;
    bool tls_failed;
    char err[1200];
    if (serve_load_files(a->cfg, &tls, &creds, &tls_failed, err, sizeof(err)) != 0) {
        admin_say_error("%s", err);
        return ADMIN_USAGE;
    }
    tls_ctx_unref(&tls);
    smtp_client_creds_free(&creds);
    if (cfg_print(a->cfg, stdout) != 0) {
        admin_say_error("cannot write the configuration: %s", strerror(errno));
        return ADMIN_RUNTIME;
    }
    return ADMIN_OK;
}

/* ---------------------------------------------------------------- domain */

static int print_domain(void *ctx, const struct store_domain *d)
{
    ++*(size_t *)ctx;
    char when[32];
    date_iso8601(d->created_ms, when, sizeof(when));
    printf("%s users=%lld added=%s\n", d->name, (long long)d->users, when);
    return 0;
}

static int run_domain_list(struct store *s, const struct args *a, const struct input *in)
{
    size_t rows = 0;
    int rc = admin_store_result(s, store_domain_list(s, print_domain, &rows), "");
    admin_say_if_empty(rc, rows, "no local domains");
    return rc;
}

static int run_domain_add(struct store *s, const struct args *a, const struct input *in)
{
    char msg[400];
    snprintf(msg, sizeof(msg), "domain %s already exists", in->domain);
    int rc = admin_store_result(s, store_domain_add(s, in->domain), msg);
    if (rc == ADMIN_OK)
        printf("added domain %s\n", in->domain);
    return rc;
}

static int run_domain_del(struct store *s, const struct args *a, const struct input *in)
{
    char msg[400];
    int st = store_domain_del(s, in->domain);
    if (st == STORE_IN_USE)
        snprintf(msg, sizeof(msg), "domain %s still has users; delete them first", in->domain);
    else
        snprintf(msg, sizeof(msg), "no such domain: %s", in->domain);
    int rc = admin_store_result(s, st, msg);
    if (rc == ADMIN_OK)
        printf("deleted domain %s\n", in->domain);
    return rc;
}

/* ---------------------------------------------------------------- user */

static int print_user(void *ctx, const struct store_user *u)
{
    ++*(size_t *)ctx;
    char when[32];
    date_iso8601(u->created_ms, when, sizeof(when));
    printf("%s messages=%lld bytes=%lld added=%s\n", u->address, (long long)u->messages,
           (long long)u->bytes, when);
    return 0;
}

static int run_user_list(struct store *s, const struct args *a, const struct input *in)
{
    const char *domain = in->has_domain ? in->domain : NULL;
    size_t rows = 0;
    int rc = admin_store_result(s, store_user_list(s, domain, print_user, &rows), "");
    if (rc == ADMIN_OK && rows == 0 && domain != NULL)
        admin_say_error("no users in %s", domain);
    else
        admin_say_if_empty(rc, rows, "no users");
    return rc;
}

static int run_user_del(struct store *s, const struct args *a, const struct input *in)
{
    char msg[600];
    snprintf(msg, sizeof(msg), "no such user: %s", in->address);
    int rc = admin_store_result(s, store_user_del(s, in->address), msg);
    if (rc == ADMIN_OK)
        printf("deleted user %s\n", in->address);
    return rc;
}

/* user add and user passwd: both ask for a password, after checking what they can first so a
 * typo does not cost a prompt. */
static int set_user(struct store *s, const struct input *in, bool is_add)
{
    const char *addr = in->address, *domain = in->domain;
    char msg[600];
    int rc = ADMIN_OK;
    int64_t id;
    char old[PASSWORD_HASH_BYTES];
    bool local = false;
    int st = store_user_get(s, addr, &id, old, sizeof(old));
    if (st == STORE_OK && is_add) {
        snprintf(msg, sizeof(msg), "user %s already exists", addr);
        rc = admin_store_result(s, STORE_EXISTS, msg);
    } else if (st == STORE_NOT_FOUND && !is_add) {
        snprintf(msg, sizeof(msg), "no such user: %s", addr);
        rc = admin_store_result(s, st, msg);
    } else if (st != STORE_OK && st != STORE_NOT_FOUND) {
        rc = admin_store_result(s, st, "");
    } else if (is_add && (st = store_domain_is_local(s, domain, &local)) != STORE_OK) {
        rc = admin_store_result(s, st, "");
    } else if (is_add && !local) {
        snprintf(msg, sizeof(msg), "%s is not a local domain; add it with: postern domain add %s",
                 domain, domain);
        rc = admin_store_result(s, STORE_NO_DOMAIN, msg);
    }
    if (rc != ADMIN_OK)
        return rc;
    char hash[PASSWORD_HASH_BYTES], why[PASSWORD_INPUT_WHY_BYTES];
    if (password_input_hash(stdin, hash, why, sizeof(why)) != 0) {
        admin_say_error("%s", why);
        return ADMIN_USAGE;
    }
    if (is_add) {
        snprintf(msg, sizeof(msg), "cannot add %s: already exists or domain is gone", addr);
        rc = admin_store_result(s, store_user_add(s, addr, domain, hash), msg);
    } else {
        snprintf(msg, sizeof(msg), "no such user: %s", addr);
        rc = admin_store_result(s, store_user_set_password(s, addr, hash), msg);
    }
    if (rc == ADMIN_OK)
        printf("%s user %s\n", is_add ? "added" : "changed password of", addr);
    return rc;
}

static int run_user_add(struct store *s, const struct args *a, const struct input *in)
{
    return set_user(s, in, true);
}

static int run_user_passwd(struct store *s, const struct args *a, const struct input *in)
{
    return set_user(s, in, false);
}

/* ---------------------------------------------------------------- network */

static int print_network(void *ctx, const struct store_network *n)
{
    ++*(size_t *)ctx;
    char when[32];
    date_iso8601(n->created_ms, when, sizeof(when));
    printf("%s added=%s\n", n->cidr, when);
    return 0;
}

static int run_network_list(struct store *s, const struct args *a, const struct input *in)
{
    size_t rows = 0;
    int rc = admin_store_result(s, store_network_list(s, print_network, &rows), "");
    admin_say_if_empty(rc, rows, "no trusted networks");
    return rc;
}

static int run_network_add(struct store *s, const struct args *a, const struct input *in)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "network %s already exists", in->key);
    int rc = admin_store_result(s, store_network_add(s, &in->net), msg);
    if (rc == ADMIN_OK)
        printf("added network %s\n", in->key);
    return rc;
}

static int run_network_del(struct store *s, const struct args *a, const struct input *in)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "no such network: %s", in->key);
    int rc = admin_store_result(s, store_network_del(s, &in->net), msg);
    if (rc == ADMIN_OK)
        printf("deleted network %s\n", in->key);
    return rc;
}

/* ---------------------------------------------------------------- relay-check */

/* The relay decision as the server would take it now: 0 allowed, 1 refused. */
static int run_relay_check(struct store *s, const struct args *a, const struct input *in)
{
    const char *user = in->user[0] != '\0' ? in->user : NULL;
    if (user != NULL) {
        int64_t id;
        char hash[PASSWORD_HASH_BYTES];
        int st = store_user_get(s, user, &id, hash, sizeof(hash));
        if (st == STORE_NOT_FOUND) {
            admin_say_error("no such user: %s", user);
            return ADMIN_NEGATIVE;
        }
        if (st != STORE_OK) {
            admin_say_error("database error: %s", store_errmsg(s));
            return ADMIN_RUNTIME;
        }
    }
    struct relay_scratch scratch;
    struct relay_facts facts;
    if (relay_gather(s, a->cfg, &in->ip, user, &in->sender, in->sender_kind, &in->rcpt,
                     in->rcpt_kind, store_now_ms(), &scratch, &facts) != STORE_OK) {
        admin_say_error("database error: %s", store_errmsg(s));
        return ADMIN_RUNTIME;
    }
    struct relay_decision d;
    char line[RELAY_LOG_MAX_BYTES];
    relay_decide(&facts, &d);
    relay_format_log(&facts, &d, line, sizeof(line));
    if (printf("%s\n%s\n", d.reply, line) < 0 || fflush(stdout) != 0) {
        admin_say_error("cannot write the answer");
        return ADMIN_RUNTIME;
    }
    return d.verdict == RELAY_ALLOW ? ADMIN_OK : ADMIN_NEGATIVE;
}

/* ---------------------------------------------------------------- selftest */

/* Its many options are its own (server/selftest/selftest.c); so are its exit codes. */
static int run_selftest(struct store *s, const struct args *a, const struct input *in)
{
    return selftest_main(a->cfg, a->argc, a->argv);
}

/* ---------------------------------------------------------------- the table */

/*
 * One row per action. A row whose action is NULL is a command without an action word
 * (relay-check, serve). The rows of one command share its usage line, printed when the action
 * is missing or unknown or too few arguments are given. check runs before any database is
 * opened; run gets the store when the row says `store`, NULL otherwise.
 */
struct command {
    const char *name;
    const char *action;
    int (*check)(const struct args *a, struct input *in); /* NULL: nothing to check */
    int (*run)(struct store *s, const struct args *a, const struct input *in);
    const char *usage;
    unsigned char min_pos, max_pos; /* positional arguments after the action word */
    unsigned opts;                  /* OPT_BIT mask of the options it takes */
    unsigned required;              /* the options it cannot do without */
    bool store;
};

static const char serve_usage[] = "postern serve";
static const char config_usage[] = "postern config check";
static const char domain_usage[] = "postern domain add|del DOMAIN | postern domain list";
static const char user_usage[] = "postern user add|del|passwd ADDRESS | postern user list [DOMAIN]";
static const char network_usage[] = "postern network add|del CIDR | postern network list";
static const char window_usage[] = "postern window list | postern window open IP [--user ADDRESS] "
                                   "[--for DURATION] | postern window close IP";
static const char queue_usage[] =
    "postern queue list | postern queue flush | postern queue drop ID";
static const char selftest_usage[] = "postern selftest [--host H --smtp PORT ...] [--user "
                                     "ADDRESS --password-file F]";
static const char dkim_usage[] =
    "postern dkim keygen DOMAIN [--selector NAME] [--algorithm ed25519|rsa] [--bits 2048] | "
    "postern dkim list | postern dkim show DOMAIN [--selector NAME] | "
    "postern dkim del DOMAIN --selector NAME";
static const char relay_usage[] =
    "postern relay-check --ip IP [--user ADDRESS] --from ADDR --to ADDR";

#define RELAY_OPTS (OPT_BIT(OPT_IP) | OPT_BIT(OPT_USER) | OPT_BIT(OPT_FROM) | OPT_BIT(OPT_TO))

static const struct command commands[] = {
    /* name, action, check, run, usage, min_pos, max_pos, opts, required, store */
    {"serve", NULL, NULL, run_serve, serve_usage, 0, 0, 0, 0, false},
    {"config", "check", NULL, run_config_check, config_usage, 0, 0, 0, 0, false},
    {"domain", "list", NULL, run_domain_list, domain_usage, 0, 0, 0, 0, true},
    {"domain", "add", admin_check_domain, run_domain_add, domain_usage, 1, 1, 0, 0, true},
    {"domain", "del", admin_check_domain, run_domain_del, domain_usage, 1, 1, 0, 0, true},
    {"user", "list", check_domain_filter, run_user_list, user_usage, 0, 1, 0, 0, true},
    {"user", "add", check_address, run_user_add, user_usage, 1, 1, 0, 0, true},
    {"user", "del", check_address, run_user_del, user_usage, 1, 1, 0, 0, true},
    {"user", "passwd", check_address, run_user_passwd, user_usage, 1, 1, 0, 0, true},
    {"network", "list", NULL, run_network_list, network_usage, 0, 0, 0, 0, true},
    {"network", "add", check_network, run_network_add, network_usage, 1, 1, 0, 0, true},
    {"network", "del", check_network, run_network_del, network_usage, 1, 1, 0, 0, true},
    {"window", "list", NULL, window_run_list, window_usage, 0, 0, 0, 0, true},
    {"window", "open", window_check_open, window_run_open, window_usage, 1, 1,
     OPT_BIT(OPT_USER) | OPT_BIT(OPT_FOR), 0, true},
    {"window", "close", window_check_ip, window_run_close, window_usage, 1, 1, 0, 0, true},
    {"queue", "list", NULL, queue_run_list, queue_usage, 0, 0, 0, 0, true},
    {"queue", "flush", NULL, queue_run_flush, queue_usage, 0, 0, 0, 0, true},
    {"queue", "drop", queue_check_id, queue_run_drop, queue_usage, 1, 1, 0, 0, true},
    {"dkim", "keygen", dkim_check_keygen, dkim_run_keygen, dkim_usage, 1, 1,
     OPT_BIT(OPT_SELECTOR) | OPT_BIT(OPT_ALGORITHM) | OPT_BIT(OPT_BITS), 0, true},
    {"dkim", "list", NULL, dkim_run_list, dkim_usage, 0, 0, 0, 0, true},
    {"dkim", "show", dkim_check_show, dkim_run_show, dkim_usage, 1, 1, OPT_BIT(OPT_SELECTOR), 0,
     true},
    {"dkim", "del", dkim_check_del, dkim_run_del, dkim_usage, 1, 1, OPT_BIT(OPT_SELECTOR),
     OPT_BIT(OPT_SELECTOR), true},
    {"relay-check", NULL, check_relay, run_relay_check, relay_usage, 0, 0, RELAY_OPTS,
     RELAY_OPTS & ~OPT_BIT(OPT_USER), true},
    {"selftest", NULL, NULL, run_selftest, selftest_usage, 0, ARGS_OWN_OPTIONS, 0, 0, false},
    {"fault", "list", NULL, run_fault_list, fault_usage, 0, 0, 0, 0, true},
    {"fault", "add", check_fault_add, run_fault_add, fault_usage, 2, 2, FAULT_ADD_OPTS, 0, true},
    {"fault", "del", check_fault_id, run_fault_del, fault_usage, 1, 1, 0, 0, true},
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

bool admin_is_command(const char *name)
{
    for (size_t i = 0; i < COMMAND_COUNT; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return true;
    }
    return false;
}

/* The row for argv[0] and, when the command has actions, argv[1]; NULL after printing the
 * usage when the action is missing or unknown. */
static const struct command *find_command(int argc, char **argv)
{
    const char *usage = NULL;
    for (size_t i = 0; i < COMMAND_COUNT; i++) {
        const struct command *c = &commands[i];
        if (strcmp(c->name, argv[0]) != 0)
            continue;
        if (c->action == NULL || (argc >= 2 && strcmp(c->action, argv[1]) == 0))
            return c;
        usage = c->usage;
    }
    if (argc < 2)
        admin_say_error("usage: %s", usage);
    else
        admin_say_error("unknown action \"%s\"; usage: %s", argv[1], usage);
    return NULL;
}

/*
 * An admin command still runs on a database others can read (the operator may be about to fix
 * it, or to read it back up); it warns with the fix. `serve` refuses instead (server/serve.c).
 */
static void warn_if_exposed(const char *db)
{
    struct store_exposure_report r;
    char err[1200], line[2600];
    if (store_file_exposure(db, &r, err, sizeof(err)) != STORE_OK || r.exposure == STORE_PRIVATE)
        return; /* an unreadable path is store_open's to report */
    store_exposure_format(&r, line, sizeof(line));
    admin_say_error("warning: %s", line);
}

/* A command that finds no database creates one: say where, since without -c and without
 * ./postern.conf that is ./postern.db in whatever folder the command ran from. */
static void say_created(const char *db, const char *config_path)
{
    if (store_is_postgres(db)) {
        char shown[CFG_DATABASE_CONNINFO_MAX_BYTES];
        conninfo_mask(db, shown, sizeof(shown));
        admin_say_error("created postern's tables in the PostgreSQL database %s", shown);
        return;
    }
    char abs[PATH_MAX];
    const char *shown = realpath(db, abs) != NULL ? abs : db;
    if (config_path == NULL)
        admin_say_error("created a new database %s (no -c FILE and no ./postern.conf: built-in "
                        "defaults)",
                        shown);
    else
        admin_say_error("created a new database %s", shown);
}

int admin_run(struct cfg *cfg, const char *config_path, int argc, char **argv)
{
    const struct command *c = find_command(argc, argv);
    if (c == NULL)
        return ADMIN_USAGE;
    int skip = c->action != NULL ? 2 : 1;
    struct args a = {
        .cfg = cfg, .config_path = config_path, .argc = argc - skip, .argv = argv + skip};
    if (c->max_pos != ARGS_OWN_OPTIONS &&
        parse_args(argc - skip, argv + skip, c->usage, c->opts, c->max_pos, &a) != 0)
        return ADMIN_USAGE;
    for (int k = 0; k < OPT_COUNT; k++) {
        if ((c->required & OPT_BIT(k)) && a.opt[k] == NULL) {
            admin_say_error("missing --%s; usage: %s", opt_names[k], c->usage);
            return ADMIN_USAGE;
        }
    }
    if (a.npos < c->min_pos) {
        admin_say_error("usage: %s", c->usage);
        return ADMIN_USAGE;
    }
    struct input in;
    memset(&in, 0, sizeof(in));
    if (c->check != NULL && c->check(&a, &in) != 0)
        return ADMIN_USAGE;
    struct store *s = NULL;
    if (c->store) {
        char err[600];
        warn_if_exposed(cfg->server.database);
        if (store_open(cfg->server.database, &s, err, sizeof(err)) != STORE_OK) {
            admin_say_error("%s", err);
            return ADMIN_RUNTIME;
        }
        if (store_created(s))
            say_created(cfg->server.database, config_path);
    }
    int rc = c->run(s, &a, &in);
    store_close(&s);
    return rc;
}
