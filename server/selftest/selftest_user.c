/*
 * selftest_user.c - the checks that need a real account (--user ADDRESS --password-file F):
 *   - window-opens: a POP3 login (RFC 1939, over TLS where offered) opens the POP-before-SMTP
 *     window of this client, so an RCPT to a .invalid address is now accepted. The RCPT is
 *     withdrawn with RSET: nothing is relayed.
 *   - window-cap: the window accepts at most relay.window_max_recipients (--window-cap)
 *     recipients; the probe sends RCPTs only up to one past the cap, never DATA, and stops at
 *     the first refusal. More accepted than the cap is a FAIL.
 *   - smuggling:<variant>: one message to the user's own mailbox whose body holds a bare-LF or
 *     bare-CR end-of-data look-alike followed by a second SMTP transaction. Counted over POP3
 *     afterwards: two messages for one send is a FAIL (SMTP smuggling, 2023). The probe deletes
 *     the messages it finds (each carries a run-unique X-Selftest header).
 *   - window-closes: relay.window (--window) after the last POP3 session ended, the same RCPT is
 *     refused again. A window longer than --max-wait is not waited for (WARN).
 * These run last (selftest.c), since the login opens a window for this client.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/pure/duration.h"
#include "server/selftest/selftest.h"

/* The window check waits this much past the window's end, for clocks and a busy writer. */
#define WINDOW_SLACK_MS 1500
/* RCPTs per transaction in the cap check: under the RFC 5321 4.5.3.1.8 minimum of 100, so a
 * server's per-message limit never stands in for its window cap. */
#define CAP_RCPTS_PER_TX 50
/* How long to keep reading after the end of a smuggling message, for replies to a second one. */
#define SMUGGLE_DRAIN_MS 1000

struct user_run {
    struct selftest *st;
    const struct selftest_target *pop3;
    char token[32];      /* this run's mark in every message it sends */
    long baseline;       /* messages in the mailbox at the first login */
    struct timespec end; /* when the last POP3 session ended */
};

static int64_t elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* Logs in over POP3, under TLS only: an audit must not put the password on the wire in the
 * clear, even where the server would take it. 0, or -1 with the reason in why. */
static int pop3_login(struct user_run *u, struct probe *p, char *why, size_t why_len)
{
    struct probe_reply r = {.code = -1};
    if (selftest_pop3_open(u->st, u->pop3, p, true) != 0) {
        snprintf(why, why_len, "%s", p->err);
        return -1;
    }
    if (probe_pop3_cmd(p, &r, "USER %s", u->st->user) != 0 || r.code != 1 ||
        probe_pop3_cmd(p, &r, "PASS %s", u->st->password) != 0 || r.code != 1) {
        snprintf(why, why_len, "login as %.100s: %.120s", u->st->user,
                 r.code >= 0 ? r.text : p->err);
        probe_close(p);
        return -1;
    }
    return 0;
}

static void pop3_quit(struct user_run *u, struct probe *p)
{
    struct probe_reply r;
    (void)probe_pop3_cmd(p, &r, "QUIT");
    probe_close(p);
    clock_gettime(CLOCK_MONOTONIC, &u->end);
}

static long pop3_stat(struct probe *p)
{
    struct probe_reply r;
    if (probe_pop3_cmd(p, &r, "STAT") != 0 || r.code != 1)
        return -1;
    return strtol(r.text + 3, NULL, 10);
}

/* An SMTP session on the MX port with MAIL FROM the user; 0 or -1 (p->err). */
static int smtp_as_user(struct user_run *u, struct probe *p)
{
    struct probe_reply r;
    if (selftest_smtp_open(u->st, &u->st->t[ST_SMTP], p, NULL) != 0)
        return -1;
    if (probe_smtp_cmd(p, &r, "MAIL FROM:<%s>", u->st->user) != 0)
        return -1;
    if (r.code != 250) {
        snprintf(p->err, sizeof(p->err), "MAIL FROM:<%.100s> -> %.120s", u->st->user, r.text);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- window and cap */

static void window_opens_and_cap(struct user_run *u)
{
    struct selftest *st = u->st;
    struct probe p;
    struct probe_reply r;
    if (smtp_as_user(u, &p) != 0) {
        selftest_reportf(st, SELFTEST_WARN, "window-opens", "not tested: %s", p.err);
        probe_close(&p);
        return;
    }
    if (probe_smtp_cmd(&p, &r, "RCPT TO:<window-1@" SELFTEST_REMOTE_DOMAIN ">") != 0) {
        selftest_reportf(st, SELFTEST_WARN, "window-opens", "not tested: %s", p.err);
        probe_close(&p);
        return;
    }
    if (r.code / 100 != 2) {
        /* No window: right for a server without POP-before-SMTP, wrong for one with it. */
        enum selftest_verdict v = st->window_ms > 0 ? SELFTEST_FAIL : SELFTEST_WARN;
        selftest_reportf(st, v, "window-opens", "after a POP3 login, RCPT -> %s", r.text);
        probe_close(&p);
        return;
    }
    selftest_reportf(st, SELFTEST_PASS, "window-opens", "after a POP3 login, RCPT -> %s", r.text);
    if (st->window_cap < 0) {
        selftest_report(st, SELFTEST_WARN, "window-cap",
                        "not tested: cap unknown (--window-cap N)");
        goto out;
    }
    long accepted = 1;
    for (long n = 2; n <= st->window_cap + 1; n++) {
        if ((n - 1) % CAP_RCPTS_PER_TX == 0) {
            if (probe_smtp_cmd(&p, &r, "RSET") != 0 ||
                probe_smtp_cmd(&p, &r, "MAIL FROM:<%s>", st->user) != 0 || r.code != 250) {
                selftest_reportf(st, SELFTEST_WARN, "window-cap", "not tested: %s", p.err);
                goto out;
            }
        }
        if (probe_smtp_cmd(&p, &r, "RCPT TO:<window-%ld@" SELFTEST_REMOTE_DOMAIN ">", n) != 0) {
            selftest_reportf(st, SELFTEST_WARN, "window-cap", "not tested: %s", p.err);
            goto out;
        }
        if (r.code / 100 != 2)
            break;
        accepted = n;
    }
    if (accepted > st->window_cap)
        selftest_reportf(st, SELFTEST_FAIL, "window-cap",
                         "RCPT %ld accepted past the cap of %lld: %s", accepted,
                         (long long)st->window_cap, r.text);
    else if (accepted < st->window_cap)
        selftest_reportf(st, SELFTEST_WARN, "window-cap",
                         "refused at RCPT %ld, before the cap "
                         "of %lld (window used before?): %s",
                         accepted + 1, (long long)st->window_cap, r.text);
    else
        selftest_reportf(st, SELFTEST_PASS, "window-cap", "RCPT %ld (cap %lld) -> %s", accepted + 1,
                         (long long)st->window_cap, r.text);
out:
    (void)probe_smtp_cmd(&p, &r, "RSET");
    (void)probe_smtp_cmd(&p, &r, "QUIT");
    probe_close(&p);
}

static void window_closes(struct user_run *u)
{
    struct selftest *st = u->st;
    const char *check = "window-closes";
    if (st->window_ms < 0) {
        selftest_report(st, SELFTEST_WARN, check, "not tested: window unknown (--window DURATION)");
        return;
    }
    if (st->window_ms == 0)
        return; /* no window at all: window-opens said so */
    char w[32], m[32];
    duration_format((uint64_t)st->window_ms, w, sizeof(w));
    duration_format((uint64_t)st->max_wait_ms, m, sizeof(m));
    int64_t wait = st->window_ms + WINDOW_SLACK_MS - elapsed_ms(&u->end);
    if (wait > st->max_wait_ms) {
        selftest_reportf(st, SELFTEST_WARN, check,
                         "not waited: the window is %s, over "
                         "--max-wait %s",
                         w, m);
        return;
    }
    if (wait > 0) {
        struct timespec ts = {.tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    struct probe p;
    struct probe_reply r;
    if (smtp_as_user(u, &p) != 0 ||
        probe_smtp_cmd(&p, &r, "RCPT TO:<window-closed@" SELFTEST_REMOTE_DOMAIN ">") != 0) {
        selftest_reportf(st, SELFTEST_WARN, check, "not tested: %s", p.err);
        probe_close(&p);
        return;
    }
    selftest_reportf(st, r.code / 100 == 2 ? SELFTEST_FAIL : SELFTEST_PASS, check,
                     "%s after the last POP3 session, RCPT -> %s", w, r.text);
    (void)probe_smtp_cmd(&p, &r, "RSET");
    (void)probe_smtp_cmd(&p, &r, "QUIT");
    probe_close(&p);
}

/* ---------------------------------------------------------------- smuggling */

struct variant {
    const char *name;
    const char *eod; /* the end-of-data look-alike */
};

static const struct variant variants[] = {
    {"lf.lf", "\n.\n"},     {"cr.cr", "\r.\r"},     {"lf.crlf", "\n.\r\n"},
    {"cr.crlf", "\r.\r\n"}, {"crlf.cr", "\r\n.\r"}, {"crlf.lf", "\r\n.\n"},
};

#define VARIANT_COUNT (sizeof(variants) / sizeof(variants[0]))

/* Sends the message; the evidence of what the server answered goes to said. 0 sent (whatever
 * the answer), -1 not tested (p->err). */
static int smuggle_send(struct user_run *u, const struct variant *v, size_t i, char *said,
                        size_t said_len)
{
    struct probe p;
    struct probe_reply r;
    const char *user = u->st->user;
    if (smtp_as_user(u, &p) != 0 || probe_smtp_cmd(&p, &r, "RCPT TO:<%s>", user) != 0 ||
        r.code / 100 != 2 || probe_smtp_cmd(&p, &r, "DATA") != 0 || r.code != 354) {
        if (p.err[0] == '\0')
            snprintf(p.err, sizeof(p.err), "%.200s", r.text);
        snprintf(said, said_len, "%s", p.err);
        probe_close(&p);
        return -1;
    }
    char body[2048];
    int n = snprintf(body, sizeof(body),
                     "X-Selftest: %s-%zu\r\nSubject: postern selftest, smuggling %s\r\n\r\n"
                     "first message%s"
                     "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                     "X-Selftest: %s-%zu-smuggled\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
                     "\r\n.\r\n",
                     u->token, i, v->name, v->eod, user, user, u->token, i);
    if (n < 0 || (size_t)n >= sizeof(body) || probe_send(&p, body, (size_t)n) != 0 ||
        probe_smtp_reply(&p, &r) != 0) {
        snprintf(said, said_len, "%s", p.err);
        probe_close(&p);
        return -1;
    }
    size_t used = (size_t)snprintf(said, said_len, "end of data -> %s", r.text);
    /* A server that ended the message early answers the smuggled commands too. */
    while (used < said_len && probe_has_input(&p, SMUGGLE_DRAIN_MS) &&
           probe_smtp_reply(&p, &r) == 0)
        used += (size_t)snprintf(said + used, said_len - used, "; then %s", r.text);
    (void)probe_smtp_cmd(&p, &r, "QUIT");
    probe_close(&p);
    return 0;
}

/* Counts this variant's messages in the mailbox and deletes them; -1 when the count failed. */
static long smuggle_count(struct user_run *u, size_t i, char *why, size_t why_len)
{
    struct probe p;
    struct probe_reply r;
    if (pop3_login(u, &p, why, why_len) != 0)
        return -1;
    long n = pop3_stat(&p), found = 0;
    char mark[64], head[8192];
    snprintf(mark, sizeof(mark), "X-Selftest: %s-%zu", u->token, i);
    for (long k = u->baseline + 1; k <= n; k++) {
        if (probe_pop3_cmd(&p, &r, "TOP %ld 0", k) != 0 || r.code != 1 ||
            probe_pop3_multiline(&p, head, sizeof(head)) != 0)
            break;
        if (strstr(head, mark) == NULL)
            continue;
        found++;
        if (probe_pop3_cmd(&p, &r, "DELE %ld", k) != 0)
            break;
    }
    pop3_quit(u, &p);
    return found;
}

static void smuggling(struct user_run *u)
{
    for (size_t i = 0; i < VARIANT_COUNT; i++) {
        char check[64], said[1024], why[PROBE_ERR_MAX_BYTES + 64];
        snprintf(check, sizeof(check), "smuggling:%s", variants[i].name);
        if (smuggle_send(u, &variants[i], i, said, sizeof(said)) != 0) {
            selftest_reportf(u->st, SELFTEST_WARN, check, "not tested: %s", said);
            continue;
        }
        long found = smuggle_count(u, i, why, sizeof(why));
        if (found < 0)
            selftest_reportf(u->st, SELFTEST_WARN, check, "not counted: %s; %s", why, said);
        else if (found > 1)
            selftest_reportf(u->st, SELFTEST_FAIL, check, "%ld messages from one send; %s", found,
                             said);
        else
            selftest_reportf(u->st, SELFTEST_PASS, check, "%ld message from one send; %s", found,
                             said);
    }
}

void selftest_user(struct selftest *st)
{
    if (st->user[0] == '\0')
        return;
    struct user_run u = {.st = st};
    u.pop3 = st->t[ST_POP3S].present ? &st->t[ST_POP3S] : &st->t[ST_POP3];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(u.token, sizeof(u.token), "%lx%05lx", (unsigned long)ts.tv_sec,
             (unsigned long)(ts.tv_nsec / 1000) & 0xfffff);
    static const char *const checks[] = {"window-opens", "window-cap", "smuggling",
                                         "window-closes"};
    char why[PROBE_ERR_MAX_BYTES + 64];
    struct probe p;
    if (!u.pop3->present || !st->t[ST_SMTP].present) {
        for (size_t i = 0; i < 4; i++)
            selftest_report(st, SELFTEST_WARN, checks[i],
                            "not tested: needs an SMTP and a "
                            "POP3 port");
        return;
    }
    if (pop3_login(&u, &p, why, sizeof(why)) != 0) {
        for (size_t i = 0; i < 4; i++)
            selftest_reportf(st, SELFTEST_WARN, checks[i], "not tested: %s", why);
        return;
    }
    u.baseline = pop3_stat(&p);
    pop3_quit(&u, &p);
    if (u.baseline < 0)
        u.baseline = 0;
    window_opens_and_cap(&u);
    smuggling(&u);
    window_closes(&u);
}
