/*
 * relay_facts.h - the facts behind a relay decision, gathered from the store and the
 * configuration. The decision itself is common/pure/relay_policy.c's; the `postern relay-check`
 * command (server/cli/admin.c) and the SMTP session both gather here and decide there.
 *
 * relay_gather() is the one place that turns (client IP, AUTH identity, MAIL FROM, RCPT TO,
 * time) into struct relay_facts for common/pure/relay_policy.c: the SMTP session calls it for every
 * RCPT and `postern relay-check` calls it once, so both decide from the same facts. It reads the
 * store (local domains, users, trusted networks, windows) and writes nothing; counting a relayed
 * recipient against its window is the caller's job.
 *
 * How each fact is found:
 *  - rcpt_domain_is_local: the recipient's normalised domain is in the domains table (equality
 *    only). An address literal is never looked up and never local (see relay_policy.h).
 *  - rcpt_mailbox_exists: only in a local domain and only for a Dot-string local part: the user
 *    keyed address_user_key(rcpt) exists ("local@domain" in lower case, common/pure/address.h).
 *    A quoted local part has no key and is never looked up: postern's users are Dot-strings, so
 *    "user@remote"@local can only ever be "User unknown".
 *  - trusted_network: the first trusted network (longest prefix first) holding the IP.
 *  - window: the unexpired window for ip_window_key(ip, relay.window_ipv6_prefix). Windows
 *    opened by hand count even when relay.window is 0 (that key only stops POP3 logins from
 *    opening them).
 */
#ifndef POSTERN_RELAY_FACTS_H
#define POSTERN_RELAY_FACTS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "common/pure/relay_policy.h"

struct cfg;
struct store;

/* Caller-owned room for the strings relay_facts points to; keep it as long as the facts. */
struct relay_scratch {
    char trusted_network[CIDR_STRLEN];
    char window_user[ADDRESS_STRLEN]; /* store_window_lookup wants at least 256 */
    int64_t rcpt_user_id;             /* the recipient's user when facts.rcpt_mailbox_exists */
};

/*
 * Fills *facts_out for (ip, auth_user, sender, rcpt) from the store and cfg at now_ms. ip,
 * auth_user (NULL: no AUTH in this session), sender and rcpt are borrowed by the facts, as is
 * *scratch. Returns 0, or a STORE_* error (store_errmsg says which); *facts_out is then
 * incomplete and must not be decided on.
 */
int relay_gather(struct store *s, const struct cfg *cfg, const struct ip_addr *ip,
                 const char *auth_user, const struct address *sender,
                 enum address_path_kind sender_kind, const struct address *rcpt,
                 enum address_path_kind rcpt_kind, int64_t now_ms, struct relay_scratch *scratch,
                 struct relay_facts *facts_out);

/*
 * One RCPT's whole read, in a form a reader job can carry to another thread (storage/reader.h):
 * its inputs are copies, so nothing of the session is touched while it runs. The caller fills
 * the inputs; relay_rcpt_lookup gathers the facts, decides (relay_decide), and for a decision
 * that delivers locally finds the user it goes to: the mailbox's own for local-mailbox, the
 * postmaster's (RFC 5321 4.5.1, as server/smtp/smtp_tx.c's head comment orders them) for
 * postmaster. The facts and the decision point into the struct itself.
 */
struct relay_rcpt_lookup {
    /* in */
    const struct cfg *cfg; /* borrowed: read-only, the server's */
    struct ip_addr ip;
    char auth_user[ADDRESS_STRLEN]; /* "" before AUTH */
    struct address sender;
    enum address_path_kind sender_kind;
    struct address rcpt;
    enum address_path_kind rcpt_kind;
    int64_t now_ms;
    /* out */
    struct relay_scratch scratch;
    struct relay_facts facts;
    struct relay_decision decision;
    bool decided;    /* the facts were gathered and decision made */
    int64_t user_id; /* local-mailbox and postmaster: where it goes */
    char error[256]; /* the store's words after a failure */
};

/*
 * Runs l on s (any thread with its own connection). STORE_OK: decided, and user_id set when the
 * decision delivers locally; STORE_NOT_FOUND with decided: that user does not exist (deleted
 * between the two reads, or no postmaster at all): "User unknown"; any other outcome is a
 * failure, l->error says which, and nothing may be decided on l.
 */
int relay_rcpt_lookup(struct store *s, struct relay_rcpt_lookup *l);

#endif
