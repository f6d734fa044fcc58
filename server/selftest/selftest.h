/*
 * selftest.h - `postern selftest`: checks a running mail server from the outside, as an auditor
 * would, and prints one line per check, "PASS|WARN|FAIL  CHECK  evidence", then a summary.
 * selftest.c reads the command line and the targets and runs the check families in an order
 * that matters: the relay probes run first, from a client that has no POP-before-SMTP window,
 * and only then may the user checks (selftest_user.c) log in and open one. The checks speak
 * plain SMTP and POP3 and know nothing of postern, so they audit any server; the probes go only
 * to the named host, never send a message anywhere but the given user's own mailbox, and use
 * the reserved .invalid domain (RFC 2606 2) for every remote recipient.
 */
#ifndef POSTERN_SELFTEST_H
#define POSTERN_SELFTEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "server/selftest/probe.h"

struct cfg;

/* The remote domain of every relay probe: reserved, so nothing can be delivered there. */
#define SELFTEST_REMOTE_DOMAIN "selftest.invalid"

enum selftest_verdict { SELFTEST_PASS, SELFTEST_WARN, SELFTEST_FAIL };

enum selftest_proto { SELFTEST_SMTP, SELFTEST_POP3 };

/* One listener under test. */
struct selftest_target {
    const char *name; /* "smtp", "submission", "submissions", "pop3", "pop3s" */
    enum selftest_proto proto;
    bool implicit_tls;
    bool present; /* false: not configured or not given, skipped */
    char host[256];
    uint16_t port;
};

enum { ST_SMTP, ST_SUBMISSION, ST_SUBMISSIONS, ST_POP3, ST_POP3S, ST_TARGETS };

struct selftest {
    struct selftest_target t[ST_TARGETS];
    char domain[256];      /* the local domain of the probes; "" until learnt */
    char server_name[256]; /* the name in the SMTP greeting */
    char user[320];        /* --user; "" without */
    char password[512];    /* from --password-file */
    int64_t window_ms;     /* relay.window, or --window; -1 unknown */
    int64_t window_cap;    /* relay.window_max_recipients, or --window-cap; -1 unknown */
    int64_t max_wait_ms;   /* the longest the window check may wait for a window to close */
    bool reached;          /* some listener answered */
    unsigned counts[3];    /* per verdict */
    FILE *out;
};

/* Runs the command; argv starts after the word "selftest". Returns the exit code. */
int selftest_main(const struct cfg *cfg, int argc, char **argv);

/* Prints one check line; the evidence is escaped and cut to one screen line. */
void selftest_report(struct selftest *st, enum selftest_verdict v, const char *check,
                     const char *evidence);
void selftest_reportf(struct selftest *st, enum selftest_verdict v, const char *check,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Opens an SMTP session on the target: connect, implicit TLS when the target has it, greeting
 * (must be 220) and EHLO (must be 250; its reply in ehlo_out when not NULL). Returns 0, or -1
 * with the reason in p->err (the probe is closed then).
 */
int selftest_smtp_open(struct selftest *st, const struct selftest_target *t, struct probe *p,
                       struct probe_reply *ehlo_out);

/* STARTTLS on an open SMTP session, then EHLO again; 0 or -1 (p->err says why). */
int selftest_smtp_starttls(struct probe *p, struct probe_reply *ehlo_out);

/* Opens a POP3 session: connect, implicit TLS when the target has it, greeting (+OK), and STLS
 * when want_tls on a plaintext port; 0 or -1 (p->err says why; the probe is closed then). */
int selftest_pop3_open(struct selftest *st, const struct selftest_target *t, struct probe *p,
                       bool want_tls);

/* Whether an EHLO reply lists the keyword (case-insensitive, at the start of a line). */
bool selftest_ehlo_has(const struct probe_reply *ehlo, const char *keyword);

/* The check families, one file each. */
void selftest_relay(struct selftest *st);
void selftest_tls(struct selftest *st);
void selftest_enum(struct selftest *st);
void selftest_user(struct selftest *st);

#endif
