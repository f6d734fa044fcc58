/*
 * selftest_relay.c - the open-relay checks: every MAIL/RCPT combination of nmap's
 * smtp-open-relay script, then the address tricks that have turned servers into relays (percent
 * hack, bang path, source route, quoted "@", IP literal, trailing dot, the local domain as a
 * suffix of a remote one). Each probe is its own session on the MX port, from this client,
 * which must have no relay right of its own: a 2xx to RCPT is a FAIL. The probe answers every
 * RCPT with RSET and never sends DATA, so even an open relay receives no message; the remote
 * parts are in the reserved .invalid domain besides. What counts as the local domain is
 * --domain, the --user's domain, or else the name in the greeting (selftest.c).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "server/selftest/selftest.h"

#define R SELFTEST_REMOTE_DOMAIN

/* What a probe's address may name: the placeholders are filled in per session. */
enum part { P_NONE, P_REMOTE, P_SERVER, P_IP, P_LOCAL };

/* One probe: a format with up to two placeholders ("%s"), and what fills them. */
struct relay_probe {
    const char *check;
    const char *from_fmt;
    enum part from_part;
    const char *to_fmt;
    enum part to_parts[2];
};

/*
 * nmap scripts/smtp-open-relay.nse, its 16 combinations in order, with the script's external
 * domain replaced by .invalid. SERVER is the name from the greeting, IP the server's address as
 * a literal.
 */
static const struct relay_probe probes[] = {
    {"relay:nmap-01", "<>", P_NONE, "<relaytest@" R ">", {P_NONE, P_NONE}},
    {"relay:nmap-02", "<antispam@" R ">", P_NONE, "<relaytest@" R ">", {P_NONE, P_NONE}},
    {"relay:nmap-03", "<antispam@%s>", P_SERVER, "<relaytest@" R ">", {P_NONE, P_NONE}},
    {"relay:nmap-04", "<antispam@%s>", P_IP, "<relaytest@" R ">", {P_NONE, P_NONE}},
    {"relay:nmap-05", "<antispam@%s>", P_IP, "<relaytest%%" R "@%s>", {P_IP, P_NONE}},
    {"relay:nmap-06", "<antispam@%s>", P_IP, "<relaytest%%" R "@%s>", {P_SERVER, P_NONE}},
    {"relay:nmap-07", "<antispam@%s>", P_IP, "<\"relaytest@" R "\">", {P_NONE, P_NONE}},
    {"relay:nmap-08", "<antispam@%s>", P_IP, "<\"relaytest%%" R "\">", {P_NONE, P_NONE}},
    {"relay:nmap-09", "<antispam@%s>", P_IP, "<relaytest@" R "@%s>", {P_IP, P_NONE}},
    {"relay:nmap-10", "<antispam@%s>", P_IP, "<\"relaytest@" R "\"@%s>", {P_IP, P_NONE}},
    {"relay:nmap-11", "<antispam@%s>", P_IP, "<relaytest@" R "@%s>", {P_SERVER, P_NONE}},
    {"relay:nmap-12", "<antispam@%s>", P_IP, "<@%s:relaytest@" R ">", {P_IP, P_NONE}},
    {"relay:nmap-13", "<antispam@%s>", P_IP, "<@%s:relaytest@" R ">", {P_SERVER, P_NONE}},
    {"relay:nmap-14", "<antispam@%s>", P_IP, "<" R "!relaytest>", {P_NONE, P_NONE}},
    {"relay:nmap-15", "<antispam@%s>", P_IP, "<" R "!relaytest@%s>", {P_IP, P_NONE}},
    {"relay:nmap-16", "<antispam@%s>", P_IP, "<" R "!relaytest@%s>", {P_SERVER, P_NONE}},
    /* The tricks, each against the local domain where it names one. */
    {"relay:percent-hack", "<antispam@" R ">", P_NONE, "<relaytest%%" R "@%s>", {P_LOCAL, P_NONE}},
    {"relay:bang-path", "<antispam@" R ">", P_NONE, "<" R "!relaytest@%s>", {P_LOCAL, P_NONE}},
    {"relay:source-route", "<antispam@" R ">", P_NONE, "<@%s:relaytest@" R ">", {P_LOCAL, P_NONE}},
    {"relay:quoted-at", "<antispam@" R ">", P_NONE, "<\"relaytest@" R "\"@%s>", {P_LOCAL, P_NONE}},
    {"relay:ip-literal", "<antispam@" R ">", P_NONE, "<relaytest@[192.0.2.1]>", {P_NONE, P_NONE}},
    {"relay:trailing-dot", "<antispam@" R ">", P_NONE, "<relaytest@" R ".>", {P_NONE, P_NONE}},
    {"relay:local-domain-suffix",
     "<antispam@" R ">",
     P_NONE,
     "<relaytest@%s." R ">",
     {P_LOCAL, P_NONE}},
};

#define PROBE_COUNT (sizeof(probes) / sizeof(probes[0]))

/* The server's address as an address literal (RFC 5321 4.1.3), from the connected socket. */
static void peer_literal(const struct probe *p, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "127.0.0.1";
    if (getpeername(p->fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
            snprintf(out, len, "[IPv6:%s]", ip);
            return;
        }
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
    }
    snprintf(out, len, "[%s]", ip);
}

static const char *part_text(const struct selftest *st, enum part part, const char *literal)
{
    switch (part) {
    case P_REMOTE:
        return R;
    case P_SERVER:
        return st->server_name[0] != '\0' ? st->server_name : "localhost";
    case P_IP:
        return literal;
    case P_LOCAL:
        return st->domain[0] != '\0' ? st->domain : part_text(st, P_SERVER, literal);
    case P_NONE:
        break;
    }
    return "";
}

/* Formats a path with at most two placeholders; the formats above are all literal. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void fill_path(char *out, size_t len, const char *fmt, const char *a, const char *b)
{
    snprintf(out, len, fmt, a, b);
}
#pragma GCC diagnostic pop

static void run_probe(struct selftest *st, const struct selftest_target *t,
                      const struct relay_probe *rp)
{
    struct probe p;
    struct probe_reply r;
    if (selftest_smtp_open(st, t, &p, NULL) != 0) {
        selftest_reportf(st, SELFTEST_WARN, rp->check, "not tested: %s", p.err);
        return;
    }
    char literal[64], from[300], to[600];
    peer_literal(&p, literal, sizeof(literal));
    fill_path(from, sizeof(from), rp->from_fmt, part_text(st, rp->from_part, literal), "");
    fill_path(to, sizeof(to), rp->to_fmt, part_text(st, rp->to_parts[0], literal),
              part_text(st, rp->to_parts[1], literal));
    if (probe_smtp_cmd(&p, &r, "MAIL FROM:%s", from) != 0) {
        selftest_reportf(st, SELFTEST_WARN, rp->check, "not tested: MAIL FROM:%s: %s", from, p.err);
        goto out;
    }
    if (r.code / 100 != 2) {
        selftest_reportf(st, SELFTEST_PASS, rp->check, "MAIL FROM:%s -> %s", from, r.text);
        goto out;
    }
    if (probe_smtp_cmd(&p, &r, "RCPT TO:%s", to) != 0) {
        selftest_reportf(st, SELFTEST_WARN, rp->check, "not tested: RCPT TO:%s: %s", to, p.err);
        goto out;
    }
    selftest_reportf(st, r.code / 100 == 2 ? SELFTEST_FAIL : SELFTEST_PASS, rp->check,
                     "RCPT TO:%s -> %s", to, r.text);
    /* Never DATA: an accepted recipient is withdrawn at once. */
    struct probe_reply ignored;
    if (probe_smtp_cmd(&p, &ignored, "RSET") == 0)
        (void)probe_smtp_cmd(&p, &ignored, "QUIT");
out:
    probe_close(&p);
}

void selftest_relay(struct selftest *st)
{
    const struct selftest_target *t = &st->t[ST_SMTP];
    if (!t->present)
        return;
    for (size_t i = 0; i < PROBE_COUNT; i++)
        run_probe(st, t, &probes[i]);
}
