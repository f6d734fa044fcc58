/*
 * selftest_enum.c - user enumeration: does the server tell a stranger which mailboxes exist?
 *   - enum-vrfy / enum-expn: the same command for a name that likely exists (postmaster, which
 *     RFC 5321 4.5.1 requires) and for a random one. Different reply codes are a FAIL; the same
 *     code with different text (the name itself aside) a WARN; the same answer, or a refusal of
 *     the command, a PASS.
 *   - enum-pop3: a login with a random user and a wrong password against one with a real user
 *     (--user, else postmaster@DOMAIN) and a wrong password; any difference in the USER or the
 *     PASS answer (the name aside) is a FAIL. It costs the server two counted failures from
 *     this client, which a throttling server delays: that is expected.
 * No check here sends a right password or a message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/selftest/selftest.h"

/* A name nobody has: random enough that two runs never collide with a real mailbox. */
static void random_name(char *out, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long v = (unsigned long)ts.tv_nsec ^ ((unsigned long)getpid() << 16);
    snprintf(out, len, "nx%08lx", v & 0xffffffffUL);
}

/* Replaces every occurrence of name in text with "NAME", so two replies can be compared. */
static void mask(const char *text, const char *name, char *out, size_t len)
{
    size_t o = 0, nl = strlen(name);
    for (const char *s = text; *s != '\0' && o + 5 < len;) {
        if (nl > 0 && strncmp(s, name, nl) == 0) {
            memcpy(out + o, "NAME", 4);
            o += 4;
            s += nl;
        } else {
            out[o++] = *s++;
        }
    }
    out[o] = '\0';
}

static const char *local_domain(const struct selftest *st)
{
    return st->domain[0] != '\0' ? st->domain : st->server_name;
}

static void smtp_compare(struct selftest *st, const struct selftest_target *t, const char *verb)
{
    char name[64], nobody[32];
    snprintf(name, sizeof(name), "enum-%s:%s", verb, t->name);
    for (char *c = name; *c != '\0'; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    random_name(nobody, sizeof(nobody));
    struct probe p;
    struct probe_reply known, unknown;
    if (selftest_smtp_open(st, t, &p, NULL) != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", p.err);
        return;
    }
    if (probe_smtp_cmd(&p, &known, "%s postmaster", verb) != 0 ||
        probe_smtp_cmd(&p, &unknown, "%s %s", verb, nobody) != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", p.err);
        probe_close(&p);
        return;
    }
    char a[PROBE_REPLY_MAX_BYTES], b[PROBE_REPLY_MAX_BYTES];
    mask(known.text, "postmaster", a, sizeof(a));
    mask(unknown.text, nobody, b, sizeof(b));
    enum selftest_verdict v = known.code != unknown.code ? SELFTEST_FAIL
                              : strcmp(a, b) != 0        ? SELFTEST_WARN
                                                         : SELFTEST_PASS;
    selftest_reportf(st, v, name, "%s postmaster -> %s; %s %s -> %s", verb, known.text, verb,
                     nobody, unknown.text);
    struct probe_reply r;
    (void)probe_smtp_cmd(&p, &r, "QUIT");
    probe_close(&p);
}

/* One failed login; the USER and PASS answers with the name masked. 0 or -1 (p->err). */
static int failed_login(struct selftest *st, const struct selftest_target *t, const char *user,
                        char *user_out, char *pass_out, size_t len, char *err, size_t err_len)
{
    struct probe p;
    struct probe_reply r;
    if (selftest_pop3_open(st, t, &p, true) != 0) {
        snprintf(err, err_len, "%s", p.err);
        return -1;
    }
    int rc = -1;
    if (probe_pop3_cmd(&p, &r, "USER %s", user) != 0)
        goto out;
    mask(r.text, user, user_out, len);
    pass_out[0] = '\0';
    if (r.code == 1) {
        char wrong[40];
        random_name(wrong, sizeof(wrong));
        if (probe_pop3_cmd(&p, &r, "PASS wrong-%s", wrong) != 0)
            goto out;
        mask(r.text, user, pass_out, len);
    }
    rc = 0;
    (void)probe_pop3_cmd(&p, &r, "QUIT");
out:
    if (rc != 0)
        snprintf(err, err_len, "%s", p.err);
    probe_close(&p);
    return rc;
}

static void pop3_compare(struct selftest *st)
{
    const struct selftest_target *t = st->t[ST_POP3S].present ? &st->t[ST_POP3S] : &st->t[ST_POP3];
    if (!t->present)
        return;
    const char *check = "enum-pop3";
    char nobody[32], stranger[300], known[400];
    random_name(nobody, sizeof(nobody));
    snprintf(stranger, sizeof(stranger), "%s@%s", nobody, local_domain(st));
    if (st->user[0] != '\0')
        snprintf(known, sizeof(known), "%s", st->user);
    else
        snprintf(known, sizeof(known), "postmaster@%s", local_domain(st));
    char ku[PROBE_REPLY_MAX_BYTES], kp[PROBE_REPLY_MAX_BYTES];
    char su[PROBE_REPLY_MAX_BYTES], sp[PROBE_REPLY_MAX_BYTES], err[PROBE_ERR_MAX_BYTES];
    if (failed_login(st, t, known, ku, kp, sizeof(ku), err, sizeof(err)) != 0 ||
        failed_login(st, t, stranger, su, sp, sizeof(su), err, sizeof(err)) != 0) {
        selftest_reportf(st, SELFTEST_WARN, check, "not tested: %s", err);
        return;
    }
    bool same = strcmp(ku, su) == 0 && strcmp(kp, sp) == 0;
    selftest_reportf(st, same ? SELFTEST_PASS : SELFTEST_FAIL, check,
                     "wrong password for %s -> %s%s%s; for %s -> %s%s%s", known, ku,
                     kp[0] ? " / " : "", kp, stranger, su, sp[0] ? " / " : "", sp);
}

void selftest_enum(struct selftest *st)
{
    if (st->t[ST_SMTP].present) {
        smtp_compare(st, &st->t[ST_SMTP], "VRFY");
        smtp_compare(st, &st->t[ST_SMTP], "EXPN");
    }
    pop3_compare(st);
}
