/*
 * selftest_tls.c - the checks about TLS and what may happen before it:
 *   - auth-before-tls: AUTH offered in EHLO or accepted (334/235) on a plaintext SMTP port;
 *     USER or AUTH accepted before STLS on POP3. The probe never sends a credential: it stops
 *     at the server's first "go on" (and cancels it with "*", RFC 4954 4 / RFC 5034 4).
 *   - starttls-injection (CVE-2011-0411 and its relatives): "STARTTLS\r\nNOOP\r\n" (POP3:
 *     "STLS\r\nCAPA\r\n") in one packet; a reply arriving inside TLS means the server ran
 *     plaintext that came before the handshake (RFC 3207 4.2: it must be discarded).
 *   - tls-old-version: a handshake offering at most TLS 1.1 must fail (RFC 8996).
 *   - tls-no-forward-secrecy: a TLS 1.2 handshake offering only RSA key exchange must fail
 *     (RFC 9325 4.1: ECDHE or DHE).
 * The version and cipher checks run on every TLS port, implicit and STARTTLS/STLS alike.
 */
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

#include "server/selftest/selftest.h"

/* How long to wait, after the handshake, for a reply to the injected command. A server that
 * runs it answers at once; the wait only has to cover a loaded loopback. */
#define INJECTION_WAIT_MS 1500

static void check_name(char *out, size_t len, const char *check, const struct selftest_target *t)
{
    snprintf(out, len, "%s:%s", check, t->name);
}

/* ---------------------------------------------------------------- auth before TLS */

static void smtp_auth_before_tls(struct selftest *st, const struct selftest_target *t)
{
    char name[64];
    check_name(name, sizeof(name), "auth-before-tls", t);
    struct probe p;
    struct probe_reply ehlo, r;
    if (selftest_smtp_open(st, t, &p, &ehlo) != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", p.err);
        return;
    }
    if (selftest_ehlo_has(&ehlo, "AUTH")) {
        const char *line = strstr(ehlo.text, "AUTH");
        selftest_reportf(st, SELFTEST_FAIL, name, "EHLO offers AUTH in plaintext: %.*s",
                         (int)strcspn(line, "\n"), line);
        goto out;
    }
    if (probe_smtp_cmd(&p, &r, "AUTH PLAIN") != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: AUTH PLAIN: %s", p.err);
        goto out;
    }
    if (r.code == 334 || r.code == 235) {
        selftest_reportf(st, SELFTEST_FAIL, name, "AUTH PLAIN in plaintext -> %s", r.text);
        if (r.code == 334)
            (void)probe_smtp_cmd(&p, &r, "*");
        goto out;
    }
    selftest_reportf(st, SELFTEST_PASS, name, "AUTH PLAIN in plaintext -> %s", r.text);
    (void)probe_smtp_cmd(&p, &r, "QUIT");
out:
    probe_close(&p);
}

static void pop3_auth_before_tls(struct selftest *st, const struct selftest_target *t)
{
    char name[64];
    check_name(name, sizeof(name), "auth-before-tls", t);
    struct probe p;
    struct probe_reply r;
    if (selftest_pop3_open(st, t, &p, false) != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", p.err);
        return;
    }
    if (probe_pop3_cmd(&p, &r, "USER selftest@" SELFTEST_REMOTE_DOMAIN) != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: USER: %s", p.err);
        goto out;
    }
    if (r.code == 1) {
        selftest_reportf(st, SELFTEST_FAIL, name, "USER in plaintext -> %s", r.text);
        goto out;
    }
    char user_reply[PROBE_REPLY_MAX_BYTES];
    snprintf(user_reply, sizeof(user_reply), "%s", r.text);
    if (probe_pop3_cmd(&p, &r, "AUTH PLAIN") != 0) {
        /* Some servers close after a refused USER; the USER answer is the evidence then. */
        selftest_reportf(st, SELFTEST_PASS, name, "USER in plaintext -> %s", user_reply);
        goto out;
    }
    if (strncmp(r.text, "+ ", 2) == 0 || strcmp(r.text, "+") == 0 || r.code == 1) {
        selftest_reportf(st, SELFTEST_FAIL, name, "AUTH PLAIN in plaintext -> %s", r.text);
        (void)probe_pop3_cmd(&p, &r, "*");
        goto out;
    }
    selftest_reportf(st, SELFTEST_PASS, name, "USER in plaintext -> %s; AUTH PLAIN -> %s",
                     user_reply, r.text);
    (void)probe_pop3_cmd(&p, &r, "QUIT");
out:
    probe_close(&p);
}

/* ---------------------------------------------------------------- command injection */

static void injection(struct selftest *st, const struct selftest_target *t)
{
    char name[64];
    check_name(name, sizeof(name), "starttls-injection", t);
    bool smtp = t->proto == SELFTEST_SMTP;
    struct probe p;
    struct probe_reply r;
    int rc = smtp ? selftest_smtp_open(st, t, &p, &r) : selftest_pop3_open(st, t, &p, false);
    if (rc != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", p.err);
        return;
    }
    if (smtp && !selftest_ehlo_has(&r, "STARTTLS")) {
        selftest_report(st, SELFTEST_WARN, name, "not tested: EHLO does not offer STARTTLS");
        goto out;
    }
    /* The two commands in one write, so they arrive in one segment, before any handshake. */
    const char *pair = smtp ? "STARTTLS\r\nNOOP\r\n" : "STLS\r\nCAPA\r\n";
    if (probe_send(&p, pair, strlen(pair)) != 0 ||
        (smtp ? probe_smtp_reply(&p, &r) : probe_pop3_line(&p, &r)) != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", p.err);
        goto out;
    }
    if (smtp ? r.code != 220 : r.code != 1) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s -> %s",
                         smtp ? "STARTTLS" : "STLS", r.text);
        goto out;
    }
    if (p.in_len > 0) {
        /* A plaintext answer to the second command before the handshake: not the injection
         * (it ran outside TLS), but a server that reads on after STARTTLS. */
        selftest_reportf(st, SELFTEST_WARN, name, "plaintext after the %s reply: %.*s",
                         smtp ? "220" : "+OK", (int)p.in_len, p.in);
        goto out;
    }
    struct probe_tls_opts o = {0};
    if (probe_starttls(&p, &o) != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", p.err);
        goto out;
    }
    if (probe_has_input(&p, INJECTION_WAIT_MS)) {
        selftest_reportf(st, SELFTEST_FAIL, name,
                         "%s sent before the handshake was answered inside TLS: %.*s",
                         smtp ? "NOOP" : "CAPA", (int)p.in_len, p.in);
        goto out;
    }
    selftest_reportf(st, SELFTEST_PASS, name,
                     "no answer to the pipelined %s within %d ms of "
                     "the handshake",
                     smtp ? "NOOP" : "CAPA", INJECTION_WAIT_MS);
out:
    probe_close(&p);
}

/* ---------------------------------------------------------------- versions and ciphers */

/* A session on t up to the point where TLS starts (for STARTTLS ports: after the 220/+OK);
 * 0, 1 when the port offers no TLS (note in why), -1 on failure (p->err). */
static int reach_tls(struct selftest *st, const struct selftest_target *t, struct probe *p,
                     char *why, size_t why_len)
{
    if (t->implicit_tls) {
        if (probe_connect(p, t->host, t->port) != 0)
            return -1;
        st->reached = true;
        return 0;
    }
    struct probe_reply r;
    if (t->proto == SELFTEST_SMTP) {
        if (selftest_smtp_open(st, t, p, &r) != 0)
            return -1;
        if (!selftest_ehlo_has(&r, "STARTTLS")) {
            snprintf(why, why_len, "EHLO does not offer STARTTLS");
            return 1;
        }
        if (probe_smtp_cmd(p, &r, "STARTTLS") != 0)
            return -1;
        if (r.code != 220) {
            snprintf(why, why_len, "STARTTLS -> %.200s", r.text);
            return 1;
        }
        return 0;
    }
    if (selftest_pop3_open(st, t, p, false) != 0)
        return -1;
    if (probe_pop3_cmd(p, &r, "STLS") != 0)
        return -1;
    if (r.code != 1) {
        snprintf(why, why_len, "STLS -> %.200s", r.text);
        return 1;
    }
    return 0;
}

/* One handshake with the given offer. want_refused: the check passes when it fails. Returns
 * false when the port has no TLS at all (the caller stops there). */
static bool handshake_check(struct selftest *st, const struct selftest_target *t, const char *check,
                            const struct probe_tls_opts *o, bool want_refused)
{
    char name[64], why[PROBE_REPLY_MAX_BYTES], desc[128];
    check_name(name, sizeof(name), check, t);
    struct probe p;
    memset(&p, 0, sizeof(p));
    p.fd = -1;
    int rc = reach_tls(st, t, &p, why, sizeof(why));
    if (rc != 0) {
        selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", rc > 0 ? why : p.err);
        probe_close(&p);
        return rc < 0;
    }
    if (probe_starttls(&p, o) != 0) {
        if (strstr(p.err, "cannot offer") != NULL)
            selftest_reportf(st, SELFTEST_WARN, name, "not tested: %s", p.err);
        else
            selftest_reportf(st, want_refused ? SELFTEST_PASS : SELFTEST_FAIL, name,
                             "handshake refused: %s", p.err);
    } else {
        probe_tls_describe(&p, desc, sizeof(desc));
        selftest_reportf(st, want_refused ? SELFTEST_FAIL : SELFTEST_PASS, name,
                         "handshake accepted: %s", desc);
    }
    probe_close(&p);
    return true;
}

static void tls_port(struct selftest *st, const struct selftest_target *t)
{
    const struct probe_tls_opts modern = {0};
    if (!handshake_check(st, t, "tls-handshake", &modern, false))
        return;
    const struct probe_tls_opts old = {.min_version = TLS1_VERSION, .max_version = TLS1_1_VERSION};
    handshake_check(st, t, "tls-old-version", &old, true);
    /* "kRSA": every cipher whose key exchange is RSA encryption, so no forward secrecy. */
    const struct probe_tls_opts rsa = {
        .min_version = TLS1_2_VERSION, .max_version = TLS1_2_VERSION, .ciphers = "kRSA"};
    handshake_check(st, t, "tls-no-forward-secrecy", &rsa, true);
}

void selftest_tls(struct selftest *st)
{
    static const int smtp_plain[] = {ST_SMTP, ST_SUBMISSION};
    for (size_t i = 0; i < 2; i++) {
        if (st->t[smtp_plain[i]].present)
            smtp_auth_before_tls(st, &st->t[smtp_plain[i]]);
    }
    if (st->t[ST_POP3].present)
        pop3_auth_before_tls(st, &st->t[ST_POP3]);
    static const int starttls[] = {ST_SMTP, ST_SUBMISSION, ST_POP3};
    for (size_t i = 0; i < 3; i++) {
        if (st->t[starttls[i]].present)
            injection(st, &st->t[starttls[i]]);
    }
    for (int i = 0; i < ST_TARGETS; i++) {
        if (st->t[i].present)
            tls_port(st, &st->t[i]);
    }
}
