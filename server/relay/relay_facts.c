/*
 * relay_facts.c - see relay_facts.h: relay_gather() reads the store and the configuration and
 * fills struct relay_facts. It decides nothing; common/pure/relay_policy.c does, and
 * relay_rcpt_lookup() only asks it, so that one RCPT's reads can run as one job.
 */
#include "server/relay/relay_facts.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/password.h"
#include "storage/store.h"

/* ---------------------------------------------------------------- gathering */

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
    /* A quoted local part has no users-table key: it is never a user (address_user_key). */
    char user_key[ADDRESS_STRLEN];
    if (f->rcpt_domain_is_local && address_user_key(rcpt, user_key, sizeof(user_key)) == 0) {
        /* store_user_get has no "exists only" form; the hash is read and dropped. The id is
         * kept for relay_rcpt_lookup, which then needs no second lookup. */
        char hash[PASSWORD_HASH_BYTES];
        st = store_user_get(s, user_key, &scratch->rcpt_user_id, hash, sizeof(hash));
        if (st == STORE_OK)
            f->rcpt_mailbox_exists = true;
        else if (st != STORE_NOT_FOUND)
            return st;
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

/* ---------------------------------------------------------------- one RCPT */

/* The postmaster of domain_or_null's domain, else of the first local domain (smtp_tx.c). */
static int postmaster_user(struct store *s, const char *domain_or_null, int64_t *id_out)
{
    if (domain_or_null != NULL && domain_or_null[0] != '\0') {
        int st = store_user_first(s, domain_or_null, id_out);
        if (st != STORE_NOT_FOUND)
            return st;
    }
    return store_user_first(s, NULL, id_out);
}

int relay_rcpt_lookup(struct store *s, struct relay_rcpt_lookup *l)
{
    l->user_id = 0;
    l->decided = false;
    l->error[0] = '\0';
    int st =
        relay_gather(s, l->cfg, &l->ip, l->auth_user[0] != '\0' ? l->auth_user : NULL, &l->sender,
                     l->sender_kind, &l->rcpt, l->rcpt_kind, l->now_ms, &l->scratch, &l->facts);
    if (st == STORE_OK) {
        relay_decide(&l->facts, &l->decision);
        l->decided = true;
        if (l->decision.verdict == RELAY_ALLOW &&
            l->decision.reason == RELAY_REASON_LOCAL_MAILBOX) {
            /* The policy allows local-mailbox only for a user relay_gather found, in the same
             * read (reader jobs run in one snapshot): its id is the one to deliver to. */
            if (l->facts.rcpt_mailbox_exists)
                l->user_id = l->scratch.rcpt_user_id;
            else
                st = STORE_NOT_FOUND;
        } else if (l->decision.verdict == RELAY_ALLOW &&
                   l->decision.reason == RELAY_REASON_POSTMASTER) {
            st = postmaster_user(s, l->rcpt_kind == ADDRESS_PATH_MAILBOX ? l->rcpt.domain : NULL,
                                 &l->user_id);
        }
    }
    if (st != STORE_OK && !(st == STORE_NOT_FOUND && l->decided))
        snprintf(l->error, sizeof(l->error), "%s", store_errmsg(s));
    return st;
}
