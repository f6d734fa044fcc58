/*
 * relay_check.c - see relay_check.h. Two parts: relay_gather(), which reads the store and fills
 * the facts, and the `postern relay-check` command, which parses its options the way the SMTP
 * server parses MAIL FROM and RCPT TO (common/address.c, after adding the angle brackets), then
 * gathers, decides and prints. The decision itself is server/relay_policy.c's alone.
 */
#include "server/relay_check.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/password.h"
#include "server/admin.h"
#include "storage/store.h"

/* ---------------------------------------------------------------- gathering */

/*
 * The users-table key for a Dot-string recipient in a local domain: its local part in lower
 * case (the form address_normalize gives users), "@", its already normalised domain. -1 when it
 * does not fit (it always does: both parts are bounded by the parser).
 */
static int mailbox_key(const struct address *a, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s@%s", a->local, a->domain);
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    for (char *p = out; *p != '@'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    return 0;
}

int relay_gather(struct store *s, const struct cfg *cfg, const struct ip_addr *ip,
                 const char *auth_user, const struct address *sender,
                 enum address_path_kind sender_kind, const struct address *rcpt,
                 enum address_path_kind rcpt_kind, int64_t now_ms, struct relay_scratch *scratch,
                 struct relay_facts *facts_out)
{
    struct relay_facts *f = facts_out;
    memset(f, 0, sizeof(*f));
    memset(scratch, 0, sizeof(*scratch));
    f->client_ip = ip;
    f->auth_user = auth_user;
    f->sender_kind = sender_kind;
    f->sender = sender;
    f->rcpt_kind = rcpt_kind;
    f->rcpt = rcpt;
    f->sender_check = cfg->relay.sender_check;
    f->denied_style = cfg->relay.denied_style;
    f->window_max_recipients = cfg->relay.window_max_recipients;
    f->window_user = scratch->window_user;

    int st;
    if (rcpt_kind == ADDRESS_PATH_MAILBOX && rcpt != NULL && !rcpt->domain_is_literal) {
        st = store_domain_is_local(s, rcpt->domain, &f->rcpt_domain_is_local);
        if (st != STORE_OK)
            return st;
    }
    if (f->rcpt_domain_is_local && !rcpt->local_is_quoted) {
        char key[ADDRESS_STRLEN];
        int64_t id;
        /* store_user_get has no "exists only" form; the hash is read and dropped. */
        char hash[PASSWORD_HASH_BYTES];
        if (mailbox_key(rcpt, key, sizeof(key)) == 0) {
            st = store_user_get(s, key, &id, hash, sizeof(hash));
            if (st == STORE_OK)
                f->rcpt_mailbox_exists = true;
            else if (st != STORE_NOT_FOUND)
                return st;
        }
    }

    bool trusted = false;
    st = store_network_match(s, ip, &trusted, scratch->trusted_network,
                             sizeof(scratch->trusted_network));
    if (st != STORE_OK)
        return st;
    f->trusted_network = trusted ? scratch->trusted_network : NULL;

    char key[CIDR_STRLEN];
    ip_window_key(ip, cfg->relay.window_ipv6_prefix, key, sizeof(key));
    st = store_window_lookup(s, key, now_ms, scratch->window_user, sizeof(scratch->window_user),
                             &f->window_expires_ms, &f->window_relayed);
    if (st == STORE_OK) {
        f->window_open = true;
    } else if (st == STORE_NOT_FOUND) {
        scratch->window_user[0] = '\0';
        f->window_expires_ms = 0;
        f->window_relayed = 0;
    } else {
        return st;
    }
    return STORE_OK;
}

/* ---------------------------------------------------------------- postern relay-check */

static const char USAGE[] = "postern relay-check --ip IP [--user ADDRESS] --from ADDR --to ADDR";

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

enum opt_index { OPT_IP, OPT_USER, OPT_FROM, OPT_TO, OPT_COUNT };

static const char *const OPT_NAMES[OPT_COUNT] = {"ip", "user", "from", "to"};

/* --name VALUE or --name=VALUE, each known option at most once, no positional arguments. */
static int parse_options(int argc, char **argv, const char *values[OPT_COUNT])
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            say_error("unexpected argument \"%s\"; usage: %s", a, USAGE);
            return -1;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        int k = 0;
        while (k < OPT_COUNT &&
               !(strlen(OPT_NAMES[k]) == nlen && strncmp(OPT_NAMES[k], name, nlen) == 0))
            k++;
        if (k == OPT_COUNT) {
            say_error("unknown option %.*s; usage: %s", (int)(nlen + 2), a, USAGE);
            return -1;
        }
        if (values[k] != NULL) {
            say_error("option --%s given twice", OPT_NAMES[k]);
            return -1;
        }
        if (eq != NULL) {
            values[k] = eq + 1;
        } else if (i + 1 < argc) {
            values[k] = argv[++i];
        } else {
            say_error("option --%s needs a value", OPT_NAMES[k]);
            return -1;
        }
    }
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

int relay_check_main(const struct cfg *cfg, int argc, char **argv)
{
    const char *values[OPT_COUNT] = {NULL, NULL, NULL, NULL};
    if (parse_options(argc - 1, argv + 1, values) != 0)
        return ADMIN_USAGE;
    for (int k = 0; k < OPT_COUNT; k++) {
        if (k != OPT_USER && values[k] == NULL) {
            say_error("missing --%s; usage: %s", OPT_NAMES[k], USAGE);
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
