/*
 * selftest.c - see selftest.h. This file reads the command line (its own options: the admin
 * table hands it the words after "selftest" untouched), picks the targets (the configuration's
 * listeners, or --host and the port flags), prints the report lines and the summary, and holds
 * the session openers the check families share. The checks themselves are in selftest_relay.c,
 * selftest_tls.c, selftest_enum.c and selftest_user.c.
 *
 * Exit codes: 0 no FAIL, 1 at least one FAIL, 2 bad usage, 3 no listener could be reached.
 */
#include "server/selftest/selftest.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/pure/duration.h"

static const char usage_text[] =
    "postern selftest [--host H --smtp PORT --submission PORT --submissions PORT --pop3 PORT "
    "--pop3s PORT] [--domain D] [--user ADDRESS --password-file F] [--window DURATION] "
    "[--window-cap N] [--max-wait DURATION]";

/* How long the window check may sit waiting for a window to close before it gives up with a
 * WARN; a production window (30 minutes and more) is not worth waiting for by default. */
#define SELFTEST_MAX_WAIT_DEFAULT_MS (60 * 1000)

/* Evidence longer than this is cut: one check, one screen line or two. */
#define EVIDENCE_MAX_BYTES 160

static const char *const verdict_names[] = {"PASS", "WARN", "FAIL"};

void selftest_report(struct selftest *st, enum selftest_verdict v, const char *check,
                     const char *evidence)
{
    char esc[EVIDENCE_MAX_BYTES + 4];
    probe_escape(evidence, strlen(evidence), esc, sizeof(esc));
    fprintf(st->out, "%s  %-34s  %s\n", verdict_names[v], check, esc);
    fflush(st->out);
    st->counts[v]++;
}

void selftest_reportf(struct selftest *st, enum selftest_verdict v, const char *check,
                      const char *fmt, ...)
{
    char text[2 * PROBE_REPLY_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    selftest_report(st, v, check, text);
}

bool selftest_ehlo_has(const struct probe_reply *ehlo, const char *keyword)
{
    size_t kl = strlen(keyword);
    for (const char *l = ehlo->text; l != NULL && *l != '\0';) {
        /* Each line is "250-KEYWORD ..." or "250 KEYWORD ...". */
        if (strlen(l) > 4 && strncasecmp(l + 4, keyword, kl) == 0 &&
            (l[4 + kl] == '\0' || l[4 + kl] == ' ' || l[4 + kl] == '\n' || l[4 + kl] == '='))
            return true;
        l = strchr(l, '\n');
        if (l != NULL)
            l++;
    }
    return false;
}

int selftest_smtp_open(struct selftest *st, const struct selftest_target *t, struct probe *p,
                       struct probe_reply *ehlo_out)
{
    struct probe_reply r;
    if (probe_connect(p, t->host, t->port) != 0)
        return -1;
    st->reached = true;
    if (t->implicit_tls) {
        struct probe_tls_opts o = {0};
        if (probe_starttls(p, &o) != 0)
            goto fail;
    }
    if (probe_smtp_reply(p, &r) != 0)
        goto fail;
    if (r.code != 220) {
        snprintf(p->err, sizeof(p->err), "greeting: %.200s", r.text);
        goto fail;
    }
    if (st->server_name[0] == '\0') {
        /* RFC 5321 4.2: "220 domain ..."; the name is the first word after the code. */
        size_t n = strcspn(r.text + 4, " \n");
        if (n > 0 && n < sizeof(st->server_name))
            snprintf(st->server_name, sizeof(st->server_name), "%.*s", (int)n, r.text + 4);
    }
    if (probe_smtp_cmd(p, &r, "EHLO selftest.invalid") != 0)
        goto fail;
    if (r.code != 250) {
        snprintf(p->err, sizeof(p->err), "EHLO: %.200s", r.text);
        goto fail;
    }
    if (ehlo_out != NULL)
        *ehlo_out = r;
    return 0;
fail:
    probe_close(p);
    return -1;
}

int selftest_smtp_starttls(struct probe *p, struct probe_reply *ehlo_out)
{
    struct probe_reply r;
    if (probe_smtp_cmd(p, &r, "STARTTLS") != 0)
        return -1;
    if (r.code != 220) {
        snprintf(p->err, sizeof(p->err), "STARTTLS: %.200s", r.text);
        return -1;
    }
    struct probe_tls_opts o = {0};
    if (probe_starttls(p, &o) != 0)
        return -1;
    if (probe_smtp_cmd(p, &r, "EHLO selftest.invalid") != 0)
        return -1;
    if (r.code != 250) {
        snprintf(p->err, sizeof(p->err), "EHLO after STARTTLS: %.200s", r.text);
        return -1;
    }
    if (ehlo_out != NULL)
        *ehlo_out = r;
    return 0;
}

int selftest_pop3_open(struct selftest *st, const struct selftest_target *t, struct probe *p,
                       bool want_tls)
{
    struct probe_reply r;
    if (probe_connect(p, t->host, t->port) != 0)
        return -1;
    st->reached = true;
    struct probe_tls_opts o = {0};
    if (t->implicit_tls && probe_starttls(p, &o) != 0)
        goto fail;
    if (probe_pop3_line(p, &r) != 0)
        goto fail;
    if (r.code != 1) {
        snprintf(p->err, sizeof(p->err), "greeting: %.200s", r.text);
        goto fail;
    }
    if (want_tls && !t->implicit_tls) {
        if (probe_pop3_cmd(p, &r, "STLS") != 0)
            goto fail;
        if (r.code != 1) {
            snprintf(p->err, sizeof(p->err), "STLS: %.200s", r.text);
            goto fail;
        }
        if (probe_starttls(p, &o) != 0)
            goto fail;
    }
    return 0;
fail:
    probe_close(p);
    return -1;
}

/* ---------------------------------------------------------------- command line */

static int parse_port(const char *s, uint16_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* A configured listener, as a client reaches it: a wildcard address means this host. */
static void target_from_cfg(struct selftest_target *t, const struct cfg_listen_list *l)
{
    if (l->count == 0)
        return;
    const char *h = l->addrs[0].host;
    if (strcmp(h, "0.0.0.0") == 0 || h[0] == '\0' || strcmp(h, "*") == 0)
        h = "127.0.0.1";
    else if (strcmp(h, "::") == 0)
        h = "::1";
    snprintf(t->host, sizeof(t->host), "%s", h);
    t->port = l->addrs[0].port;
    t->present = true;
}

static int read_password(struct selftest *st, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "postern: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fgets(st->password, sizeof(st->password), f) == NULL)
        st->password[0] = '\0';
    fclose(f);
    st->password[strcspn(st->password, "\r\n")] = '\0';
    if (st->password[0] == '\0') {
        fprintf(stderr, "postern: %s holds no password\n", path);
        return -1;
    }
    return 0;
}

/* The named options of the command; each takes a value. */
enum sopt {
    S_HOST,
    S_SMTP,
    S_SUBMISSION,
    S_SUBMISSIONS,
    S_POP3,
    S_POP3S,
    S_DOMAIN,
    S_USER,
    S_PASSWORD_FILE,
    S_WINDOW,
    S_WINDOW_CAP,
    S_MAX_WAIT,
    S_COUNT
};

/* The port options are in the order of the targets, so S_SMTP + i is the flag of target i. */
_Static_assert(S_POP3S - S_SMTP == ST_POP3S - ST_SMTP && ST_SMTP == 0, "port flags");

static const char *const sopt_names[S_COUNT] = {
    "host",   "smtp", "submission",    "submissions", "pop3",       "pop3s",
    "domain", "user", "password-file", "window",      "window-cap", "max-wait"};

static int parse_options(int argc, char **argv, const char *val[S_COUNT])
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "postern: unexpected argument \"%s\"; usage: %s\n", a, usage_text);
            return -1;
        }
        const char *eq = strchr(a + 2, '=');
        size_t nl = eq != NULL ? (size_t)(eq - a - 2) : strlen(a + 2);
        int k = -1;
        for (int j = 0; j < S_COUNT; j++) {
            if (strlen(sopt_names[j]) == nl && strncmp(sopt_names[j], a + 2, nl) == 0)
                k = j;
        }
        if (k < 0) {
            fprintf(stderr, "postern: unknown option %.*s; usage: %s\n", (int)nl + 2, a,
                    usage_text);
            return -1;
        }
        if (eq == NULL && i + 1 >= argc) {
            fprintf(stderr, "postern: option --%s needs a value; usage: %s\n", sopt_names[k],
                    usage_text);
            return -1;
        }
        if (val[k] != NULL) {
            fprintf(stderr, "postern: option --%s given twice; usage: %s\n", sopt_names[k],
                    usage_text);
            return -1;
        }
        val[k] = eq != NULL ? eq + 1 : argv[++i];
    }
    return 0;
}

static int setup(struct selftest *st, const struct cfg *cfg, const char *val[S_COUNT])
{
    static const char *const names[ST_TARGETS] = {"smtp", "submission", "submissions", "pop3",
                                                  "pop3s"};
    for (int i = 0; i < ST_TARGETS; i++) {
        st->t[i].name = names[i];
        st->t[i].proto = i < ST_POP3 ? SELFTEST_SMTP : SELFTEST_POP3;
        st->t[i].implicit_tls = i == ST_SUBMISSIONS || i == ST_POP3S;
    }
    bool flags = val[S_HOST] != NULL;
    for (int i = 0; i < ST_TARGETS; i++)
        flags = flags || val[S_SMTP + i] != NULL;
    if (flags) {
        /* Aimed by hand: only the ports given, at --host (this host by default). */
        const char *host = val[S_HOST] != NULL ? val[S_HOST] : "127.0.0.1";
        for (int i = 0; i < ST_TARGETS; i++) {
            if (val[S_SMTP + i] == NULL)
                continue;
            if (parse_port(val[S_SMTP + i], &st->t[i].port) != 0) {
                fprintf(stderr, "postern: invalid port \"%s\" for --%s\n", val[S_SMTP + i],
                        names[i]);
                return -1;
            }
            snprintf(st->t[i].host, sizeof(st->t[i].host), "%s", host);
            st->t[i].present = true;
        }
        st->window_ms = -1;
        st->window_cap = -1;
    } else {
        target_from_cfg(&st->t[ST_SMTP], &cfg->smtp.listen);
        target_from_cfg(&st->t[ST_SUBMISSION], &cfg->smtp.submission);
        target_from_cfg(&st->t[ST_SUBMISSIONS], &cfg->smtp.submissions);
        target_from_cfg(&st->t[ST_POP3], &cfg->pop3.listen);
        target_from_cfg(&st->t[ST_POP3S], &cfg->pop3.pop3s);
        st->window_ms = (int64_t)cfg->relay.window_ms;
        st->window_cap = cfg->relay.window_max_recipients;
    }
    uint64_t ms;
    if (val[S_WINDOW] != NULL) {
        if (duration_parse(val[S_WINDOW], &ms) != 0) {
            fprintf(stderr, "postern: invalid duration \"%s\" for --window\n", val[S_WINDOW]);
            return -1;
        }
        st->window_ms = (int64_t)ms;
    }
    st->max_wait_ms = SELFTEST_MAX_WAIT_DEFAULT_MS;
    if (val[S_MAX_WAIT] != NULL) {
        if (duration_parse(val[S_MAX_WAIT], &ms) != 0) {
            fprintf(stderr, "postern: invalid duration \"%s\" for --max-wait\n", val[S_MAX_WAIT]);
            return -1;
        }
        st->max_wait_ms = (int64_t)ms;
    }
    if (val[S_WINDOW_CAP] != NULL) {
        char *end;
        errno = 0;
        long long v = strtoll(val[S_WINDOW_CAP], &end, 10);
        if (errno != 0 || *end != '\0' || v < 1 || v > 1000000) {
            fprintf(stderr, "postern: invalid --window-cap \"%s\"\n", val[S_WINDOW_CAP]);
            return -1;
        }
        st->window_cap = v;
    }
    if ((val[S_USER] == NULL) != (val[S_PASSWORD_FILE] == NULL)) {
        fprintf(stderr, "postern: --user and --password-file go together; usage: %s\n", usage_text);
        return -1;
    }
    if (val[S_USER] != NULL) {
        const char *at = strrchr(val[S_USER], '@');
        if (at == NULL || at == val[S_USER] || at[1] == '\0' ||
            strlen(val[S_USER]) >= sizeof(st->user)) {
            fprintf(stderr, "postern: invalid address \"%s\" for --user\n", val[S_USER]);
            return -1;
        }
        snprintf(st->user, sizeof(st->user), "%s", val[S_USER]);
        if (read_password(st, val[S_PASSWORD_FILE]) != 0)
            return -1;
        /* A user's own domain is local by definition: the best guess at the local domain. */
        snprintf(st->domain, sizeof(st->domain), "%s", at + 1);
    }
    if (val[S_DOMAIN] != NULL)
        snprintf(st->domain, sizeof(st->domain), "%s", val[S_DOMAIN]);
    bool any = false;
    for (int i = 0; i < ST_TARGETS; i++)
        any = any || st->t[i].present;
    if (!any) {
        fprintf(stderr, "postern: nothing to test: no listener configured or given; usage: %s\n",
                usage_text);
        return -1;
    }
    return 0;
}

int selftest_main(const struct cfg *cfg, int argc, char **argv)
{
    const char *val[S_COUNT] = {0};
    if (parse_options(argc, argv, val) != 0)
        return 2;
    struct selftest *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        fputs("postern: out of memory\n", stderr);
        return 3;
    }
    st->out = stdout;
    if (setup(st, cfg, val) != 0) {
        free(st);
        return 2;
    }
    /* The relay probes first: the user checks open a window for this client's address. */
    selftest_relay(st);
    selftest_tls(st);
    selftest_enum(st);
    selftest_user(st);
    int rc;
    if (!st->reached) {
        fprintf(st->out, "summary: no listener could be reached\n");
        rc = 3;
    } else {
        fprintf(st->out, "summary: %u PASS, %u WARN, %u FAIL\n", st->counts[SELFTEST_PASS],
                st->counts[SELFTEST_WARN], st->counts[SELFTEST_FAIL]);
        rc = st->counts[SELFTEST_FAIL] > 0 ? 1 : 0;
    }
    fflush(st->out);
    explicit_bzero(st->password, sizeof(st->password));
    free(st);
    return rc;
}
