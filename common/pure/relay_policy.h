/*
 * relay_policy.h - the relay decision (README.md, "The relay rules"; docs/architecture.md, "Where
 * each relay rule lives"): facts in, verdict, reason and reply text out.
 *
 * relay_decide() is pure: no I/O, no store, no clock, no logging, no allocation. Whatever it
 * depends on is in struct relay_facts, gathered by the caller (server/relay/relay_facts.c does it
 * from the store for the SMTP session and for `postern relay-check`, so both take the same decision
 * for the same facts). It does not count relayed recipients either: the caller bumps the
 * window's count when a recipient is accepted with reason RELAY_REASON_POP_WINDOW.
 *
 * The rules, in the order they are applied:
 *  1. Local recipients, accepted from any client and with any sender (no sender check: this is
 *     inbound mail):
 *     - RCPT TO:<Postmaster> (no domain, any case): always accepted (RFC 5321 4.5.1), reason
 *       postmaster.
 *     - a recipient in a local domain whose mailbox exists: reason local-mailbox, 250.
 *     - postmaster@<local domain> (Dot-string "postmaster" in any case) without such a user:
 *       accepted all the same (RFC 5321 4.5.1 requires postmaster for every domain we accept
 *       mail for), reason postmaster.
 *     - any other recipient in a local domain: refused, reason unknown-user,
 *       "550 5.1.1 <rcpt>: Recipient address rejected: User unknown".
 *     The decision does not say where postmaster mail goes: for RELAY_REASON_POSTMASTER the
 *     caller delivers to its postmaster mailbox (a configured or the first admin user of that
 *     domain, or of the server's own domain for the domainless <Postmaster>). relay_decide only
 *     promises that the recipient is acceptable.
 *  2. Every other recipient is relayed only on one of these grounds, tried in this order:
 *     - the client IP is in a trusted network: reason trusted-network, no sender check (the
 *       network is trusted as a whole; there is no user to own a sender);
 *     - SMTP AUTH succeeded in this session: reason auth, sender check against auth_user. When
 *       AUTH succeeded, a window for the same IP is not consulted: the session said who it is;
 *     - an unexpired POP-before-SMTP window exists for the client's window key: reason
 *       pop-window, sender check against window_user; refused with reason window-limit (and the
 *       refusal text below) once window_relayed >= window_max_recipients, before the sender
 *       check;
 *     otherwise refused, reason not-authorized, in the configured style:
 *       sendmail: "550 5.7.1 <rcpt>... Relaying denied"
 *       qmail:    "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
 *  3. Sender check (sender_check = off | domain | address) for a relay that rests on a user
 *     (auth or pop-window). On failure, reason sender-not-owned:
 *       "553 5.7.1 <sender>: Sender address rejected: not owned by user <user>"
 *     - domain: the MAIL FROM domain equals the user's domain (ASCII case-insensitive; a
 *       subdomain is a different domain: a@sub.example.test is not example.test's).
 *     - address: also the local part equals the user's, case-insensitively (postern lower-cases
 *       its users' local parts); a quoted sender local part never matches.
 *     - the null sender <> is allowed under every mode: it claims nobody's address, and bounces
 *       and notifications must be able to leave. (The log says sender_check=null-sender.)
 *     - a window opened by hand without --user has no owner to check against: it relays with
 *       reason pop-window and the log says sender_check=no-user.
 *     - a user with no '@' (never a postern user) owns no domain, so every non-null sender fails.
 *
 * Address tricks (rule 4 of the task): the decision only ever sees the parsed address (the
 * final mailbox of a source route, a normalised domain, the local part exactly as sent). The
 * percent hack (user%remote@local), bang paths (remote!user@local) and quoted local parts
 * holding '@' ("user@remote"@local) are local parts of a local domain: they are delivered
 * locally if (and only if) such a mailbox exists, otherwise refused with 550 5.1.1; postern
 * never rewrites them into a remote address, so none can become a relay. A quoted local part
 * never matches a user, since postern's users are Dot-strings (address_normalize refuses quotes).
 * An address literal (user@[192.0.2.1], user@[IPv6:::1]) is never local, even when it names
 * the server itself: postern keeps no mailboxes on literals, and treating one as local would
 * let a literal side-step the domain list; so literals fall under rule 2. relay_decide enforces
 * both itself (rcpt_domain_is_local and rcpt_mailbox_exists are ignored for a literal, and
 * rcpt_mailbox_exists for a quoted local part), whatever the caller says. Local domains match
 * by equality only: evil-example.test and example.test.evil are simply not local.
 */
#ifndef POSTERN_RELAY_POLICY_H
#define POSTERN_RELAY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "common/config.h"
#include "common/limits.h"

/* Room for relay_format_log's line with every field at its longest, escaped. */
#define RELAY_LOG_MAX_BYTES 1536

/* Everything the decision depends on. Every pointer is borrowed from the caller. */
struct relay_facts {
    const struct ip_addr *client_ip;
    const char *auth_user;       /* SMTP AUTH identity of this session, or NULL */
    const char *trusted_network; /* the trusted network holding client_ip, as text, or NULL */
    bool window_open;            /* unexpired POP-before-SMTP window for the client's key */
    const char *window_user;     /* its user; "" for a window opened by hand without --user */
    int64_t window_expires_ms;   /* meaningful only when window_open */
    int64_t window_relayed;      /* recipients relayed through the window so far */
    enum address_path_kind sender_kind; /* MAIL FROM */
    const struct address *sender;
    enum address_path_kind rcpt_kind; /* RCPT TO */
    const struct address *rcpt;
    bool rcpt_domain_is_local; /* rcpt domain is one of ours (never true for a literal) */
    bool rcpt_mailbox_exists;  /* a user with exactly that normalised address exists */
    /* configuration ([relay]) */
    enum cfg_sender_check sender_check;
    enum cfg_denied_style denied_style;
    unsigned window_max_recipients;
};

enum relay_verdict {
    RELAY_ALLOW,
    RELAY_DENY,
};

enum relay_reason {
    RELAY_REASON_LOCAL_MAILBOX,    /* allow: local domain, the mailbox exists */
    RELAY_REASON_POSTMASTER,       /* allow: <Postmaster> or postmaster@<local domain> */
    RELAY_REASON_UNKNOWN_USER,     /* deny 550 5.1.1: local domain, no such mailbox */
    RELAY_REASON_TRUSTED_NETWORK,  /* allow: the client is in a trusted network */
    RELAY_REASON_AUTH,             /* allow: SMTP AUTH in this session, sender check passed */
    RELAY_REASON_POP_WINDOW,       /* allow: POP-before-SMTP window, sender check passed */
    RELAY_REASON_WINDOW_LIMIT,     /* deny: the window has relayed window_max_recipients */
    RELAY_REASON_NOT_AUTHORIZED,   /* deny: remote recipient and no ground to relay */
    RELAY_REASON_SENDER_NOT_OWNED, /* deny 553 5.7.1: MAIL FROM is not the user's */
    RELAY_REASON_BAD_RECIPIENT,    /* deny 501 5.1.3: the null path as a recipient */
};

struct relay_decision {
    enum relay_verdict verdict;
    enum relay_reason reason;
    int code; /* the reply code: 250, 501, 550 or 553 */
    /* The full reply line without CRLF: a code, a space and text. The longest here, two
     * addresses and fixed text, stays below SMTP_REPLY_LINE_MAX_BYTES. */
    char reply[SMTP_REPLY_LINE_MAX_BYTES];
    /*
     * The user the decision rests on or was checked against, borrowed from the facts
     * (auth_user or window_user), or NULL: set for auth, pop-window (unless the window has no
     * user), window-limit (the window's user, if any) and sender-not-owned.
     */
    const char *identity;
};

void relay_decide(const struct relay_facts *f, struct relay_decision *out);

/*
 * Stable names for logs, tests and scripts: "local-mailbox", "postmaster", "unknown-user",
 * "trusted-network", "auth", "pop-window", "window-limit", "not-authorized",
 * "sender-not-owned", "bad-recipient"; "?" for a value outside the enum.
 */
const char *relay_reason_name(enum relay_reason r);

/*
 * One line per decision, fields in this order, each only when it applies:
 *   relay=allow|deny reason=NAME ip=IP from=<SENDER> to=<RCPT>
 *   user=IDENTITY                      (when d->identity is set)
 *   network=CIDR                       (reason trusted-network)
 *   expires=YYYY-MM-DDTHH:MM:SSZ relayed=N/MAX   (when the window was consulted: pop-window,
 *                                       window-limit, or sender-not-owned on a window)
 *   sender_check=off|domain|address|null-sender|no-user   (when a relay rested on a user or a
 *                                       window: which check passed or failed, or why none ran)
 * The reply code is not repeated: the reply line says it. Addresses and users are escaped with
 * log_escape (they come from the client). Pure as well: the time is formatted from
 * window_expires_ms, not read from a clock. Truncates to len.
 */
void relay_format_log(const struct relay_facts *f, const struct relay_decision *d, char *buf,
                      size_t len);

#endif
