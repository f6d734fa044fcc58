/*
 * test_relay_policy.c - the golden table of common/pure/relay_policy.c: every rule of README.md
 * "The relay rule" and their combinations, with the exact reply texts; the sender check in each
 * mode against matching, foreign, null, case-varied and subdomain senders; the address tricks
 * relay probes use (nmap's smtp-open-relay forms among them), each parsed by the real parser
 * (common/pure/address.c) first, refused for an unauthenticated outside client and accepted only on
 * a proper ground otherwise; and the log line for a few decisions, byte for byte.
 *
 * The store is replaced by a small fixed directory (local domains and users) with the lookup
 * rules server/relay/relay_facts.c applies: a literal is never local, a quoted local part never a
 * user, a Dot-string is looked up in lower case. A few rows then lie as a buggy caller would, to
 * show that relay_decide holds those two rules itself.
 *
 * Every failure names its row and says "got X, want Y".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "common/config.h"
#include "common/pure/relay_policy.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the directory the table runs against ------------------------------------------------ */

static const char *const local_domains[] = {"example.test", "local.test"};
static const char *const local_users[] = {
    "alice@example.test", "bob@example.test", "postmaster@local.test",
    "odd%name@example.test", /* '%' is atext: a real mailbox, so local delivery, not a relay */
};

static bool is_local_domain(const struct address *a)
{
    if (a->domain_is_literal)
        return false;
    for (size_t i = 0; i < COUNT(local_domains); i++) {
        if (strcmp(a->domain, local_domains[i]) == 0)
            return true;
    }
    return false;
}

static bool mailbox_exists(const struct address *a)
{
    if (!is_local_domain(a) || a->local_is_quoted)
        return false;
    char key[ADDRESS_STRLEN];
    snprintf(key, sizeof(key), "%s@%s", a->local, a->domain);
    for (char *p = key; *p != '@'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    for (size_t i = 0; i < COUNT(local_users); i++) {
        if (strcmp(key, local_users[i]) == 0)
            return true;
    }
    return false;
}

static void must_path(const char *row, const char *text, struct address *a,
                      enum address_path_kind *kind)
{
    size_t consumed = 0;
    const char *why = NULL;
    if (address_parse_path(text, strlen(text), a, kind, &consumed, &why) != 0)
        fail_msg("%s: test setup: address_parse_path(\"%s\") failed: %s", row, text, why);
    if (consumed != strlen(text))
        fail_msg("%s: test setup: \"%s\" has junk after the path", row, text);
}

static struct ip_addr must_ip(const char *s)
{
    struct ip_addr ip;
    if (ip_parse(s, &ip) != 0)
        fail_msg("test setup: ip_parse(\"%s\") failed", s);
    return ip;
}

/* ---- the golden table -------------------------------------------------------------------- */

#define OUTSIDE               "203.0.113.9"
#define OK                    "250 2.1.5 Ok"
#define SENDMAIL_DENIED(rcpt) "550 5.7.1 <" rcpt ">... Relaying denied"
#define QMAIL_DENIED          "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
#define UNKNOWN(rcpt)         "550 5.1.1 <" rcpt ">: Recipient address rejected: User unknown"
#define NOT_OWNED(sender, user)                                                                    \
    "553 5.7.1 <" sender ">: Sender address rejected: not owned by user <" user ">"

struct policy_case {
    const char *name;
    const char *auth;    /* SMTP AUTH user, or NULL */
    const char *network; /* the trusted network the client is in, or NULL */
    const char *window;  /* NULL: no open window; "": opened by hand without a user; a user */
    int64_t relayed;     /* recipients relayed through the window */
    unsigned max;        /* window_max_recipients; 0 means the default, 100 */
    const char *from;    /* MAIL FROM path; NULL means "<someone@remote.test>" */
    const char *to;      /* RCPT TO path */
    const char *check;   /* "off" | "domain" | "address"; NULL means the default, domain */
    bool qmail;          /* denied_style = qmail (default sendmail) */
    bool lie_local;      /* the caller claims the domain is local */
    bool lie_exists;     /* the caller claims the mailbox exists */
    /* want */
    const char *verdict; /* "allow" | "deny" */
    const char *reason;
    const char *reply;
    const char *identity; /* NULL for none */
};

static const struct policy_case policy_cases[] = {
    /* ---- rule 1: local recipients, from anyone ---- */
    {"local mailbox from outside", .to = "<alice@example.test>", .verdict = "allow",
     .reason = "local-mailbox", .reply = OK},
    {"local mailbox, case and trailing dot normalised", .to = "<ALICE@Example.TEST.>",
     .verdict = "allow", .reason = "local-mailbox", .reply = OK},
    {"local mailbox, second domain", .to = "<postmaster@local.test>", .verdict = "allow",
     .reason = "local-mailbox", .reply = OK},
    {"local mailbox with a null sender", .from = "<>", .to = "<bob@example.test>",
     .verdict = "allow", .reason = "local-mailbox", .reply = OK},
    {"local mailbox, spoofed local sender from outside: inbound, no check",
     .from = "<bob@example.test>", .to = "<alice@example.test>", .check = "address",
     .verdict = "allow", .reason = "local-mailbox", .reply = OK},
    {"unknown local user", .to = "<carol@example.test>", .verdict = "deny",
     .reason = "unknown-user", .reply = UNKNOWN("carol@example.test")},
    {"unknown local user, reply keeps the local part as sent", .to = "<Carol@EXAMPLE.test>",
     .verdict = "deny", .reason = "unknown-user", .reply = UNKNOWN("Carol@example.test")},
    {"unknown local user from a trusted network", .network = "192.0.2.0/24",
     .to = "<carol@example.test>", .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("carol@example.test")},
    {"unknown local user with auth", .auth = "alice@example.test", .to = "<carol@example.test>",
     .verdict = "deny", .reason = "unknown-user", .reply = UNKNOWN("carol@example.test")},
    {"unknown local user, qmail style changes nothing", .qmail = true, .to = "<carol@example.test>",
     .verdict = "deny", .reason = "unknown-user", .reply = UNKNOWN("carol@example.test")},
    {"a real mailbox with '%' in its name", .to = "<odd%name@example.test>", .verdict = "allow",
     .reason = "local-mailbox", .reply = OK},

    /* ---- postmaster ---- */
    {"<Postmaster>", .to = "<Postmaster>", .verdict = "allow", .reason = "postmaster", .reply = OK},
    {"<POSTMASTER>", .to = "<POSTMASTER>", .verdict = "allow", .reason = "postmaster", .reply = OK},
    {"<postmaster> with qmail style", .qmail = true, .to = "<postmaster>", .verdict = "allow",
     .reason = "postmaster", .reply = OK},
    {"postmaster@local domain without a user", .to = "<postmaster@example.test>",
     .verdict = "allow", .reason = "postmaster", .reply = OK},
    {"PostMaster@Example.Test. without a user", .to = "<PostMaster@Example.Test.>",
     .verdict = "allow", .reason = "postmaster", .reply = OK},
    {"postmaster@local domain with a user is that mailbox", .to = "<postmaster@local.test>",
     .verdict = "allow", .reason = "local-mailbox", .reply = OK},
    {"quoted postmaster is no user (quoted never matches)", .to = "<\"postmaster\"@example.test>",
     .verdict = "deny", .reason = "unknown-user", .reply = UNKNOWN("\"postmaster\"@example.test")},
    {"postmaster@remote is a relay", .to = "<postmaster@remote.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("postmaster@remote.test")},
    {"postmaster@[literal] is a relay", .to = "<postmaster@[127.0.0.1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("postmaster@[127.0.0.1]")},
    {"postmaster@subdomain is a relay", .to = "<postmaster@sub.example.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("postmaster@sub.example.test")},

    /* ---- rule 2: remote recipients ---- */
    {"remote from outside, sendmail", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("x@remote.test")},
    {"remote from outside, qmail", .qmail = true, .to = "<x@remote.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = QMAIL_DENIED},
    {"remote from outside, null sender", .from = "<>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("x@remote.test")},
    {"remote from outside, local sender", .from = "<alice@example.test>", .to = "<x@remote.test>",
     .verdict = "deny", .reason = "not-authorized", .reply = SENDMAIL_DENIED("x@remote.test")},
    {"remote, trusted network", .network = "192.0.2.0/24", .to = "<x@remote.test>",
     .verdict = "allow", .reason = "trusted-network", .reply = OK},
    {"remote, trusted network, spoofed sender: no check", .network = "192.0.2.0/24",
     .from = "<ceo@bank.test>", .to = "<x@remote.test>", .check = "address", .verdict = "allow",
     .reason = "trusted-network", .reply = OK},
    {"remote, trusted network wins over auth", .network = "192.0.2.0/24",
     .auth = "alice@example.test", .from = "<ceo@bank.test>", .to = "<x@remote.test>",
     .verdict = "allow", .reason = "trusted-network", .reply = OK},
    {"remote, auth", .auth = "alice@example.test", .from = "<alice@example.test>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "auth", .reply = OK,
     .identity = "alice@example.test"},
    {"remote, auth, qmail style", .auth = "alice@example.test", .qmail = true,
     .from = "<alice@example.test>", .to = "<x@remote.test>", .verdict = "allow", .reason = "auth",
     .reply = OK, .identity = "alice@example.test"},
    {"remote, window", .window = "alice@example.test", .from = "<alice@example.test>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "pop-window", .reply = OK,
     .identity = "alice@example.test"},
    {"remote, window just below the limit", .window = "alice@example.test", .relayed = 99,
     .from = "<alice@example.test>", .to = "<x@remote.test>", .verdict = "allow",
     .reason = "pop-window", .reply = OK, .identity = "alice@example.test"},
    {"remote, window at the limit, sendmail", .window = "alice@example.test", .relayed = 100,
     .from = "<alice@example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "window-limit", .reply = SENDMAIL_DENIED("x@remote.test"),
     .identity = "alice@example.test"},
    {"remote, window past the limit, qmail", .window = "alice@example.test", .relayed = 3, .max = 2,
     .qmail = true, .from = "<alice@example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "window-limit", .reply = QMAIL_DENIED, .identity = "alice@example.test"},
    {"remote, window at a limit of 2", .window = "alice@example.test", .relayed = 2, .max = 2,
     .from = "<alice@example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "window-limit", .reply = SENDMAIL_DENIED("x@remote.test"),
     .identity = "alice@example.test"},
    {"remote, window at the limit, checked before the sender", .window = "alice@example.test",
     .relayed = 100, .from = "<ceo@bank.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "window-limit", .reply = SENDMAIL_DENIED("x@remote.test"),
     .identity = "alice@example.test"},
    {"remote, window at the limit, trusted network still relays", .network = "192.0.2.0/24",
     .window = "alice@example.test", .relayed = 100, .to = "<x@remote.test>", .verdict = "allow",
     .reason = "trusted-network", .reply = OK},
    {"remote, window at the limit, auth still relays", .auth = "alice@example.test",
     .window = "alice@example.test", .relayed = 100, .from = "<alice@example.test>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "auth", .reply = OK,
     .identity = "alice@example.test"},
    {"remote, window at the limit, local mail still accepted", .window = "alice@example.test",
     .relayed = 100, .to = "<bob@example.test>", .verdict = "allow", .reason = "local-mailbox",
     .reply = OK},
    {"remote, window without a user: no sender to check", .window = "", .from = "<ceo@bank.test>",
     .to = "<x@remote.test>", .check = "address", .verdict = "allow", .reason = "pop-window",
     .reply = OK},
    {"remote, window without a user at the limit", .window = "", .relayed = 100,
     .to = "<x@remote.test>", .verdict = "deny", .reason = "window-limit",
     .reply = SENDMAIL_DENIED("x@remote.test")},
    {"remote, auth decides, not another user's window", .auth = "alice@example.test",
     .window = "bob@example.test", .from = "<bob@other.test>", .to = "<x@remote.test>",
     .verdict = "deny", .reason = "sender-not-owned",
     .reply = NOT_OWNED("bob@other.test", "alice@example.test"), .identity = "alice@example.test"},
    {"remote, null recipient", .to = "<>", .verdict = "deny", .reason = "bad-recipient",
     .reply = "501 5.1.3 Bad recipient address syntax"},

    /* ---- rule 3: sender check, auth ---- */
    {"auth, domain: same domain, other user", .auth = "alice@example.test",
     .from = "<bob@example.test>", .to = "<x@remote.test>", .verdict = "allow", .reason = "auth",
     .reply = OK, .identity = "alice@example.test"},
    {"auth, domain: case variants", .auth = "alice@example.test", .from = "<Bob@EXAMPLE.Test.>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "auth", .reply = OK,
     .identity = "alice@example.test"},
    {"auth, domain: foreign domain", .auth = "alice@example.test", .from = "<ceo@bank.test>",
     .to = "<x@remote.test>", .verdict = "deny", .reason = "sender-not-owned",
     .reply = NOT_OWNED("ceo@bank.test", "alice@example.test"), .identity = "alice@example.test"},
    {"auth, domain: subdomain is another domain", .auth = "alice@example.test",
     .from = "<a@sub.example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("a@sub.example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, domain: suffix is another domain", .auth = "alice@example.test",
     .from = "<a@evil-example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("a@evil-example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, domain: the user's other local domain", .auth = "alice@example.test",
     .from = "<alice@local.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("alice@local.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, domain: address literal sender", .auth = "alice@example.test",
     .from = "<alice@[192.0.2.1]>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("alice@[192.0.2.1]", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, domain: null sender", .auth = "alice@example.test", .from = "<>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "auth", .reply = OK,
     .identity = "alice@example.test"},
    {"auth, domain: foreign sender, qmail style keeps the 553 5.7.1 text",
     .auth = "alice@example.test", .qmail = true, .from = "<ceo@bank.test>",
     .to = "<x@remote.test>", .verdict = "deny", .reason = "sender-not-owned",
     .reply = NOT_OWNED("ceo@bank.test", "alice@example.test"), .identity = "alice@example.test"},
    {"auth, address: own address", .auth = "alice@example.test", .check = "address",
     .from = "<alice@example.test>", .to = "<x@remote.test>", .verdict = "allow", .reason = "auth",
     .reply = OK, .identity = "alice@example.test"},
    {"auth, address: own address in capitals", .auth = "alice@example.test", .check = "address",
     .from = "<ALICE@Example.TEST>", .to = "<x@remote.test>", .verdict = "allow", .reason = "auth",
     .reply = OK, .identity = "alice@example.test"},
    {"auth, address: same domain, other user", .auth = "alice@example.test", .check = "address",
     .from = "<bob@example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("bob@example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, address: prefix of the local part", .auth = "alice@example.test", .check = "address",
     .from = "<alic@example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("alic@example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, address: longer local part", .auth = "alice@example.test", .check = "address",
     .from = "<alice2@example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("alice2@example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, address: quoted own local part never matches", .auth = "alice@example.test",
     .check = "address", .from = "<\"alice\"@example.test>", .to = "<x@remote.test>",
     .verdict = "deny", .reason = "sender-not-owned",
     .reply = NOT_OWNED("\"alice\"@example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, address: own local part in a subdomain", .auth = "alice@example.test",
     .check = "address", .from = "<alice@sub.example.test>", .to = "<x@remote.test>",
     .verdict = "deny", .reason = "sender-not-owned",
     .reply = NOT_OWNED("alice@sub.example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, address: own local part elsewhere", .auth = "alice@example.test", .check = "address",
     .from = "<alice@bank.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("alice@bank.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"auth, address: null sender", .auth = "alice@example.test", .check = "address", .from = "<>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "auth", .reply = OK,
     .identity = "alice@example.test"},
    {"auth, off: foreign sender", .auth = "alice@example.test", .check = "off",
     .from = "<ceo@bank.test>", .to = "<x@remote.test>", .verdict = "allow", .reason = "auth",
     .reply = OK, .identity = "alice@example.test"},
    {"auth, off: null sender", .auth = "alice@example.test", .check = "off", .from = "<>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "auth", .reply = OK,
     .identity = "alice@example.test"},

    /* ---- rule 3: sender check, window ---- */
    {"window, domain: same domain", .window = "alice@example.test", .from = "<bob@example.test>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "pop-window", .reply = OK,
     .identity = "alice@example.test"},
    {"window, domain: foreign domain", .window = "alice@example.test", .from = "<ceo@bank.test>",
     .to = "<x@remote.test>", .verdict = "deny", .reason = "sender-not-owned",
     .reply = NOT_OWNED("ceo@bank.test", "alice@example.test"), .identity = "alice@example.test"},
    {"window, domain: subdomain", .window = "alice@example.test", .from = "<a@sub.example.test>",
     .to = "<x@remote.test>", .verdict = "deny", .reason = "sender-not-owned",
     .reply = NOT_OWNED("a@sub.example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"window, domain: null sender", .window = "alice@example.test", .from = "<>",
     .to = "<x@remote.test>", .verdict = "allow", .reason = "pop-window", .reply = OK,
     .identity = "alice@example.test"},
    {"window, address: own address, case variant", .window = "alice@example.test",
     .check = "address", .from = "<Alice@example.TEST>", .to = "<x@remote.test>",
     .verdict = "allow", .reason = "pop-window", .reply = OK, .identity = "alice@example.test"},
    {"window, address: other user", .window = "alice@example.test", .check = "address",
     .from = "<bob@example.test>", .to = "<x@remote.test>", .verdict = "deny",
     .reason = "sender-not-owned", .reply = NOT_OWNED("bob@example.test", "alice@example.test"),
     .identity = "alice@example.test"},
    {"window, address: null sender", .window = "alice@example.test", .check = "address",
     .from = "<>", .to = "<x@remote.test>", .verdict = "allow", .reason = "pop-window", .reply = OK,
     .identity = "alice@example.test"},
    {"window, off: foreign sender", .window = "alice@example.test", .check = "off",
     .from = "<ceo@bank.test>", .to = "<x@remote.test>", .verdict = "allow", .reason = "pop-window",
     .reply = OK, .identity = "alice@example.test"},

    /* ---- address tricks: local-domain forms stay local and fail the mailbox lookup ---- */
    {"percent hack in a local domain", .to = "<user%remote.test@example.test>", .verdict = "deny",
     .reason = "unknown-user", .reply = UNKNOWN("user%remote.test@example.test")},
    {"percent hack naming a local user", .to = "<alice%remote.test@example.test>",
     .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("alice%remote.test@example.test")},
    {"percent hack from a trusted network is still no relay", .network = "192.0.2.0/24",
     .to = "<user%remote.test@example.test>", .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("user%remote.test@example.test")},
    {"percent hack with auth is still no relay", .auth = "alice@example.test",
     .from = "<alice@example.test>", .to = "<user%remote.test@example.test>", .verdict = "deny",
     .reason = "unknown-user", .reply = UNKNOWN("user%remote.test@example.test")},
    {"bang path in a local domain", .to = "<remote.test!user@example.test>", .verdict = "deny",
     .reason = "unknown-user", .reply = UNKNOWN("remote.test!user@example.test")},
    {"bang path naming a local user", .to = "<remote.test!alice@example.test>", .verdict = "deny",
     .reason = "unknown-user", .reply = UNKNOWN("remote.test!alice@example.test")},
    {"quoted local part holding '@'", .to = "<\"user@remote.test\"@example.test>",
     .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("\"user@remote.test\"@example.test")},
    {"quoted local part holding '%'", .to = "<\"user%remote.test\"@example.test>",
     .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("\"user%remote.test\"@example.test")},
    {"quoted local user name is no user", .to = "<\"alice\"@example.test>", .verdict = "deny",
     .reason = "unknown-user", .reply = UNKNOWN("\"alice\"@example.test")},
    {"quoted local part holding '@', trusted network", .network = "192.0.2.0/24",
     .to = "<\"user@remote.test\"@example.test>", .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("\"user@remote.test\"@example.test")},
    {"source route through a local domain: the final mailbox counts",
     .to = "<@example.test:user@remote.test>", .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("user@remote.test")},
    {"source route through a literal", .to = "<@[127.0.0.1]:user@remote.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("user@remote.test")},
    {"source route through two hops", .to = "<@example.test,@local.test:user@remote.test>",
     .verdict = "deny", .reason = "not-authorized", .reply = SENDMAIL_DENIED("user@remote.test")},
    {"source route ending in a local mailbox", .to = "<@remote.test:alice@example.test>",
     .verdict = "allow", .reason = "local-mailbox", .reply = OK},
    {"source route, trusted network relays the final mailbox", .network = "192.0.2.0/24",
     .to = "<@example.test:user@remote.test>", .verdict = "allow", .reason = "trusted-network",
     .reply = OK},
    {"local domain as a suffix", .to = "<alice@evil-example.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("alice@evil-example.test")},
    {"local domain as a prefix", .to = "<alice@example.test.evil>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("alice@example.test.evil")},
    {"subdomain of a local domain", .to = "<alice@sub.example.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("alice@sub.example.test")},

    /* ---- address tricks: literals are never local ---- */
    {"literal: the server's own IPv4 address", .to = "<user@[127.0.0.1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("user@[127.0.0.1]")},
    {"literal: naming a local user", .to = "<alice@[127.0.0.1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("alice@[127.0.0.1]")},
    {"literal: IPv6 loopback", .to = "<user@[IPv6:::1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("user@[IPv6:::1]")},
    {"literal: IPv4-mapped IPv6 becomes IPv4", .to = "<user@[IPv6:::ffff:127.0.0.1]>",
     .verdict = "deny", .reason = "not-authorized", .reply = SENDMAIL_DENIED("user@[127.0.0.1]")},
    {"literal: qmail style", .qmail = true, .to = "<user@[IPv6:::1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = QMAIL_DENIED},
    {"literal: percent hack", .to = "<user%remote.test@[127.0.0.1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("user%remote.test@[127.0.0.1]")},
    {"literal: quoted '@'", .to = "<\"user@remote.test\"@[127.0.0.1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("\"user@remote.test\"@[127.0.0.1]")},
    {"literal: bang path", .to = "<remote.test!user@[127.0.0.1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("remote.test!user@[127.0.0.1]")},
    {"literal: with a null sender", .from = "<>", .to = "<user@[192.0.2.1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("user@[192.0.2.1]")},
    {"literal: sender is a literal too", .from = "<antispam@[127.0.0.1]>",
     .to = "<user@[127.0.0.1]>", .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("user@[127.0.0.1]")},
    {"literal: trusted network may relay to it", .network = "192.0.2.0/24",
     .to = "<user@[127.0.0.1]>", .verdict = "allow", .reason = "trusted-network", .reply = OK},
    {"literal: auth may relay to it", .auth = "alice@example.test", .from = "<alice@example.test>",
     .to = "<user@[IPv6:::1]>", .verdict = "allow", .reason = "auth", .reply = OK,
     .identity = "alice@example.test"},
    {"literal: window may relay to it", .window = "alice@example.test",
     .from = "<alice@example.test>", .to = "<user%remote.test@[127.0.0.1]>", .verdict = "allow",
     .reason = "pop-window", .reply = OK, .identity = "alice@example.test"},

    /* ---- nmap smtp-open-relay probes that parse (the rest: test_parser_refuses_tricks) ---- */
    {"nmap 1: <> to remote", .from = "<>", .to = "<relaytest@nmap.scanme.test>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("relaytest@nmap.scanme.test")},
    {"nmap 2: literal sender to remote", .from = "<antispam@[127.0.0.1]>",
     .to = "<relaytest@nmap.scanme.test>", .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("relaytest@nmap.scanme.test")},
    {"nmap 3: local sender to remote", .from = "<antispam@example.test>",
     .to = "<relaytest@nmap.scanme.test>", .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("relaytest@nmap.scanme.test")},
    {"nmap 4: percent hack at the literal", .to = "<relaytest%nmap.scanme.test@[127.0.0.1]>",
     .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("relaytest%nmap.scanme.test@[127.0.0.1]")},
    {"nmap 5: percent hack at the domain", .to = "<relaytest%nmap.scanme.test@example.test>",
     .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("relaytest%nmap.scanme.test@example.test")},
    {"nmap 6: quoted '@' at the literal", .to = "<\"relaytest@nmap.scanme.test\"@[127.0.0.1]>",
     .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("\"relaytest@nmap.scanme.test\"@[127.0.0.1]")},
    {"nmap 7: quoted '@' at the domain", .to = "<\"relaytest@nmap.scanme.test\"@example.test>",
     .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("\"relaytest@nmap.scanme.test\"@example.test")},
    {"nmap 8: source route via the literal", .to = "<@[127.0.0.1]:relaytest@nmap.scanme.test>",
     .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("relaytest@nmap.scanme.test")},
    {"nmap 9: source route via the domain", .to = "<@example.test:relaytest@nmap.scanme.test>",
     .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("relaytest@nmap.scanme.test")},
    {"nmap 10: bang path at the domain", .to = "<nmap.scanme.test!relaytest@example.test>",
     .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("nmap.scanme.test!relaytest@example.test")},
    {"nmap 11: bang path at the literal", .to = "<nmap.scanme.test!relaytest@[127.0.0.1]>",
     .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("nmap.scanme.test!relaytest@[127.0.0.1]")},
    {"nmap 12: IPv6 literal", .to = "<relaytest@[IPv6:::1]>", .verdict = "deny",
     .reason = "not-authorized", .reply = SENDMAIL_DENIED("relaytest@[IPv6:::1]")},

    /* ---- a caller that lies: relay_decide keeps its two rules itself ---- */
    {"caller says a literal is local", .lie_local = true, .lie_exists = true,
     .to = "<alice@[127.0.0.1]>", .verdict = "deny", .reason = "not-authorized",
     .reply = SENDMAIL_DENIED("alice@[127.0.0.1]")},
    {"caller says a quoted local part exists", .lie_exists = true,
     .to = "<\"user@remote.test\"@example.test>", .verdict = "deny", .reason = "unknown-user",
     .reply = UNKNOWN("\"user@remote.test\"@example.test")},
};

static enum cfg_sender_check check_mode(const struct policy_case *tc)
{
    if (tc->check == NULL || strcmp(tc->check, "domain") == 0)
        return CFG_SENDER_CHECK_DOMAIN;
    if (strcmp(tc->check, "address") == 0)
        return CFG_SENDER_CHECK_ADDRESS;
    if (strcmp(tc->check, "off") == 0)
        return CFG_SENDER_CHECK_OFF;
    fail_msg("%s: test setup: bad check \"%s\"", tc->name, tc->check);
    return CFG_SENDER_CHECK_DOMAIN;
}

static void test_golden_table(void **state)
{
    (void)state;
    struct ip_addr ip = must_ip(OUTSIDE);
    for (size_t i = 0; i < COUNT(policy_cases); i++) {
        const struct policy_case *tc = &policy_cases[i];
        struct address sender, rcpt;
        enum address_path_kind sender_kind, rcpt_kind;
        must_path(tc->name, tc->from != NULL ? tc->from : "<someone@remote.test>", &sender,
                  &sender_kind);
        must_path(tc->name, tc->to, &rcpt, &rcpt_kind);
        struct relay_facts f = {
            .client_ip = &ip,
            .auth_user = tc->auth,
            .trusted_network = tc->network,
            .window_open = tc->window != NULL,
            .window_user = tc->window != NULL ? tc->window : "",
            .window_expires_ms = 1700000000000,
            .window_relayed = tc->relayed,
            .sender_kind = sender_kind,
            .sender = &sender,
            .rcpt_kind = rcpt_kind,
            .rcpt = &rcpt,
            .rcpt_domain_is_local = tc->lie_local || is_local_domain(&rcpt),
            .rcpt_mailbox_exists = tc->lie_exists || mailbox_exists(&rcpt),
            .sender_check = check_mode(tc),
            .denied_style = tc->qmail ? CFG_DENIED_STYLE_QMAIL : CFG_DENIED_STYLE_SENDMAIL,
            .window_max_recipients = tc->max != 0 ? tc->max : 100,
        };
        struct relay_decision d;
        memset(&d, 0x5a, sizeof(d));
        relay_decide(&f, &d);

        const char *verdict = d.verdict == RELAY_ALLOW ? "allow" : "deny";
        const char *reason = relay_reason_name(d.reason);
        if (strcmp(verdict, tc->verdict) != 0 || strcmp(reason, tc->reason) != 0)
            fail_msg("%s: got %s/%s, want %s/%s (reply \"%s\")", tc->name, verdict, reason,
                     tc->verdict, tc->reason, d.reply);
        if (strcmp(d.reply, tc->reply) != 0)
            fail_msg("%s: got reply \"%s\", want \"%s\"", tc->name, d.reply, tc->reply);
        if (d.code != atoi(tc->reply))
            fail_msg("%s: got code %d, want %d", tc->name, d.code, atoi(tc->reply));
        if ((d.code == 250) != (d.verdict == RELAY_ALLOW))
            fail_msg("%s: got code %d with verdict %s", tc->name, d.code, verdict);
        const char *id = d.identity != NULL ? d.identity : "(none)";
        const char *want_id = tc->identity != NULL ? tc->identity : "(none)";
        if (strcmp(id, want_id) != 0)
            fail_msg("%s: got identity %s, want %s", tc->name, id, want_id);
    }
}

/*
 * Every nmap probe that is not a single RFC 5321 mailbox is refused by the parser already, so
 * it never reaches the policy (the session answers 501).
 */
static const char *const parser_refuses[] = {
    "<\"relaytest@nmap.scanme.test\">",          /* no domain at all */
    "<\"relaytest%nmap.scanme.test\">",          /* ditto */
    "<relaytest@nmap.scanme.test@[127.0.0.1]>",  /* two '@' */
    "<relaytest@nmap.scanme.test@example.test>", /* two '@' */
    "<nmap.scanme.test!relaytest>",              /* bang path without a domain */
    "<relaytest%nmap.scanme.test>",              /* percent hack without a domain */
    "<user@127.0.0.1>",                          /* a bare IP is no domain */
    "<user@[127.0.0.1]@example.test>",           /* junk after a literal */
    "<user@example.test@remote.test>",           /* two '@' */
    "<@example.test:\"user@remote.test\">",      /* route to a mailbox without a domain */
    "<user@[IPv6:::1]:other@remote.test>",       /* no route after a mailbox */
    "<user@[tag:remote.test]>",                  /* general address literal */
    "<user@remote.test\r\n@example.test>",       /* CR LF inside */
};

static void test_parser_refuses_tricks(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(parser_refuses); i++) {
        struct address a;
        enum address_path_kind kind;
        size_t consumed = 0;
        const char *why = NULL;
        const char *s = parser_refuses[i];
        int rc = address_parse_path(s, strlen(s), &a, &kind, &consumed, &why);
        if (rc == 0 && consumed == strlen(s))
            fail_msg("address_parse_path(\"%s\"): got local \"%s\" domain \"%s\", want an error", s,
                     a.local, a.domain);
    }
}

/* ---- reason names ------------------------------------------------------------------------ */

static void test_reason_names(void **state)
{
    (void)state;
    static const struct {
        enum relay_reason r;
        const char *want;
    } names[] = {
        {RELAY_REASON_LOCAL_MAILBOX, "local-mailbox"},
        {RELAY_REASON_POSTMASTER, "postmaster"},
        {RELAY_REASON_UNKNOWN_USER, "unknown-user"},
        {RELAY_REASON_TRUSTED_NETWORK, "trusted-network"},
        {RELAY_REASON_AUTH, "auth"},
        {RELAY_REASON_POP_WINDOW, "pop-window"},
        {RELAY_REASON_WINDOW_LIMIT, "window-limit"},
        {RELAY_REASON_NOT_AUTHORIZED, "not-authorized"},
        {RELAY_REASON_SENDER_NOT_OWNED, "sender-not-owned"},
        {RELAY_REASON_BAD_RECIPIENT, "bad-recipient"},
    };
    for (size_t i = 0; i < COUNT(names); i++) {
        const char *got = relay_reason_name(names[i].r);
        if (strcmp(got, names[i].want) != 0)
            fail_msg("relay_reason_name(%d): got %s, want %s", (int)names[i].r, got, names[i].want);
    }
    assert_string_equal(relay_reason_name((enum relay_reason)999), "?");
}

/* ---- the log line ------------------------------------------------------------------------ */

struct log_case {
    const char *name;
    const char *ip;
    const char *auth;
    const char *network;
    const char *window; /* as in policy_case */
    int64_t relayed;
    const char *from;
    const char *to;
    const char *check;
    bool local;  /* rcpt domain is local */
    bool exists; /* rcpt mailbox exists */
    const char *want;
};

static const struct log_case log_cases[] = {
    {"not authorized", OUTSIDE, .from = "<a@b.test>", .to = "<x@remote.test>",
     .want = "relay=deny reason=not-authorized ip=203.0.113.9 from=<a@b.test> "
             "to=<x@remote.test>"},
    {"local mailbox, IPv6 client, null sender", "2001:DB8::7", .from = "<>",
     .to = "<alice@example.test>", .local = true, .exists = true,
     .want = "relay=allow reason=local-mailbox ip=2001:db8::7 from=<> "
             "to=<alice@example.test>"},
    {"unknown user, quoted local part escaped", OUTSIDE, .from = "<a@b.test>",
     .to = "<\"a b\"@example.test>", .local = true,
     .want = "relay=deny reason=unknown-user ip=203.0.113.9 from=<a@b.test> "
             "to=\"<\\\"a b\\\"@example.test>\""},
    {"trusted network, v4-mapped client", "::ffff:192.0.2.7", .network = "192.0.2.0/24",
     .from = "<a@b.test>", .to = "<x@remote.test>",
     .want = "relay=allow reason=trusted-network ip=192.0.2.7 from=<a@b.test> "
             "to=<x@remote.test> network=192.0.2.0/24"},
    {"auth, domain check", OUTSIDE, .auth = "alice@example.test", .from = "<bob@example.test>",
     .to = "<x@remote.test>",
     .want = "relay=allow reason=auth ip=203.0.113.9 from=<bob@example.test> "
             "to=<x@remote.test> user=alice@example.test sender_check=domain"},
    {"auth, null sender", OUTSIDE, .auth = "alice@example.test", .from = "<>",
     .to = "<x@remote.test>", .check = "address",
     .want = "relay=allow reason=auth ip=203.0.113.9 from=<> to=<x@remote.test> "
             "user=alice@example.test sender_check=null-sender"},
    {"auth, sender not owned", OUTSIDE, .auth = "alice@example.test", .from = "<ceo@bank.test>",
     .to = "<x@remote.test>", .check = "address",
     .want = "relay=deny reason=sender-not-owned ip=203.0.113.9 from=<ceo@bank.test> "
             "to=<x@remote.test> user=alice@example.test sender_check=address"},
    {"window", OUTSIDE, .window = "alice@example.test", .relayed = 7,
     .from = "<alice@example.test>", .to = "<x@remote.test>",
     .want = "relay=allow reason=pop-window ip=203.0.113.9 from=<alice@example.test> "
             "to=<x@remote.test> user=alice@example.test expires=2023-11-14T22:13:20Z "
             "relayed=7/100 sender_check=domain"},
    {"window, sender not owned", OUTSIDE, .window = "alice@example.test", .from = "<ceo@bank.test>",
     .to = "<x@remote.test>",
     .want = "relay=deny reason=sender-not-owned ip=203.0.113.9 from=<ceo@bank.test> "
             "to=<x@remote.test> user=alice@example.test expires=2023-11-14T22:13:20Z "
             "relayed=0/100 sender_check=domain"},
    {"window without a user", OUTSIDE, .window = "", .from = "<ceo@bank.test>",
     .to = "<x@remote.test>",
     .want = "relay=allow reason=pop-window ip=203.0.113.9 from=<ceo@bank.test> "
             "to=<x@remote.test> expires=2023-11-14T22:13:20Z relayed=0/100 "
             "sender_check=no-user"},
    {"window at the limit", OUTSIDE, .window = "alice@example.test", .relayed = 100,
     .from = "<alice@example.test>", .to = "<x@remote.test>",
     .want = "relay=deny reason=window-limit ip=203.0.113.9 from=<alice@example.test> "
             "to=<x@remote.test> user=alice@example.test expires=2023-11-14T22:13:20Z "
             "relayed=100/100"},
    {"window under auth is not shown", OUTSIDE, .auth = "bob@example.test",
     .window = "alice@example.test", .from = "<bob@example.test>", .to = "<x@remote.test>",
     .check = "off",
     .want = "relay=allow reason=auth ip=203.0.113.9 from=<bob@example.test> "
             "to=<x@remote.test> user=bob@example.test sender_check=off"},
    {"postmaster", OUTSIDE, .from = "<a@b.test>", .to = "<Postmaster>",
     .want = "relay=allow reason=postmaster ip=203.0.113.9 from=<a@b.test> "
             "to=<Postmaster>"},
    {"'=' in an address is quoted", OUTSIDE, .from = "<a=b@b.test>", .to = "<x@remote.test>",
     .want = "relay=deny reason=not-authorized ip=203.0.113.9 from=\"<a=b@b.test>\" "
             "to=<x@remote.test>"},
};

static void decide_for_log(const struct log_case *tc, struct ip_addr *ip, struct address *sender,
                           struct address *rcpt, struct relay_facts *f, struct relay_decision *d)
{
    enum address_path_kind sender_kind, rcpt_kind;
    *ip = must_ip(tc->ip);
    must_path(tc->name, tc->from, sender, &sender_kind);
    must_path(tc->name, tc->to, rcpt, &rcpt_kind);
    enum cfg_sender_check mode = CFG_SENDER_CHECK_DOMAIN;
    if (tc->check != NULL && strcmp(tc->check, "address") == 0)
        mode = CFG_SENDER_CHECK_ADDRESS;
    else if (tc->check != NULL && strcmp(tc->check, "off") == 0)
        mode = CFG_SENDER_CHECK_OFF;
    *f = (struct relay_facts){
        .client_ip = ip,
        .auth_user = tc->auth,
        .trusted_network = tc->network,
        .window_open = tc->window != NULL,
        .window_user = tc->window != NULL ? tc->window : "",
        .window_expires_ms = 1700000000000, /* 2023-11-14T22:13:20Z */
        .window_relayed = tc->relayed,
        .sender_kind = sender_kind,
        .sender = sender,
        .rcpt_kind = rcpt_kind,
        .rcpt = rcpt,
        .rcpt_domain_is_local = tc->local,
        .rcpt_mailbox_exists = tc->exists,
        .sender_check = mode,
        .denied_style = CFG_DENIED_STYLE_SENDMAIL,
        .window_max_recipients = 100,
    };
    relay_decide(f, d);
}

static void test_log_line(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(log_cases); i++) {
        const struct log_case *tc = &log_cases[i];
        struct ip_addr ip;
        struct address sender, rcpt;
        struct relay_facts f;
        struct relay_decision d;
        decide_for_log(tc, &ip, &sender, &rcpt, &f, &d);
        char line[RELAY_LOG_MAX_BYTES];
        relay_format_log(&f, &d, line, sizeof(line));
        if (strcmp(line, tc->want) != 0)
            fail_msg("%s:\n got  %s\n want %s", tc->name, line, tc->want);
    }
}

static void test_log_line_truncates(void **state)
{
    (void)state;
    const struct log_case *tc = &log_cases[0];
    struct ip_addr ip;
    struct address sender, rcpt;
    struct relay_facts f;
    struct relay_decision d;
    decide_for_log(tc, &ip, &sender, &rcpt, &f, &d);
    char line[20];
    memset(line, 'x', sizeof(line));
    relay_format_log(&f, &d, line, sizeof(line));
    assert_int_equal(strlen(line), sizeof(line) - 1);
    assert_memory_equal(line, tc->want, sizeof(line) - 1);

    /* The longest addresses the parser takes still fit a full line. */
    char to[ADDRESS_PATH_MAX_BYTES + 1];
    char local[65], domain[181];
    memset(local, 'l', 64);
    local[64] = '\0';
    /* 64 + 1 + 180 octets and the brackets: within the 256-octet path (RFC 5321 4.5.3.1.3). */
    for (size_t k = 0; k < sizeof(domain) - 1; k++)
        domain[k] = (k % 50 == 49) ? '.' : 'd';
    domain[sizeof(domain) - 1] = '\0';
    snprintf(to, sizeof(to), "<%s@%s>", local, domain);
    struct relay_facts g = f;
    enum address_path_kind kind;
    must_path("long", to, &rcpt, &kind);
    g.rcpt = &rcpt;
    g.sender = &rcpt;
    g.auth_user = "alice@example.test";
    g.sender_check = CFG_SENDER_CHECK_OFF;
    relay_decide(&g, &d);
    assert_string_equal(relay_reason_name(d.reason), "auth");
    char big[RELAY_LOG_MAX_BYTES];
    relay_format_log(&g, &d, big, sizeof(big));
    assert_non_null(strstr(big, " sender_check=off"));
    assert_true(strlen(big) < sizeof(big) - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_table),       cmocka_unit_test(test_parser_refuses_tricks),
        cmocka_unit_test(test_reason_names),       cmocka_unit_test(test_log_line),
        cmocka_unit_test(test_log_line_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
