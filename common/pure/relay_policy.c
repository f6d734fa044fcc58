/*
 * relay_policy.c - see relay_policy.h. The rules are a chain of early returns in the order the
 * header gives them, so the first ground that applies is the reason reported. Nothing here
 * reads a clock, the store or the configuration file: change a fact and the decision changes,
 * nothing else can.
 *
 * Reply texts are the ones README.md ("The relay rules") promises, byte for byte. Addresses in
 * replies come from the parser (printable ASCII only, CR and LF impossible), so they can go into a
 * reply as they are; in the log they are escaped all the same, as all client text is.
 */
#include "common/pure/relay_policy.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/pure/date.h"

/* "postmaster", the one local part every mail domain must accept (RFC 5321 4.5.1). */
static const char POSTMASTER_LOCAL[] = "postmaster";

static void set(struct relay_decision *out, enum relay_verdict verdict, enum relay_reason reason,
                int code, const char *identity)
{
    out->verdict = verdict;
    out->reason = reason;
    out->code = code;
    out->identity = identity;
}

static void reply(struct relay_decision *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reply(struct relay_decision *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out->reply, sizeof(out->reply), fmt, ap);
    va_end(ap);
    if (n < 0)
        out->reply[0] = '\0';
}

/* "local@domain" (or just the local part, or "" for the null path) as address_format writes it. */
static void format_path(enum address_path_kind kind, const struct address *a, char *buf, size_t len)
{
    if (kind == ADDRESS_PATH_NULL || a == NULL)
        buf[0] = '\0';
    else
        address_format(a, buf, len);
}

/* The part of a user's address after its last '@', or NULL when there is none. */
static const char *user_domain(const char *user)
{
    const char *at = strrchr(user, '@');
    return at != NULL ? at + 1 : NULL;
}

/*
 * True when the sender may be used by user under mode. The null sender and mode off always
 * pass; <Postmaster> (no domain, never a legal MAIL FROM) never does.
 */
static bool sender_is_owned(enum cfg_sender_check mode, enum address_path_kind kind,
                            const struct address *sender, const char *user)
{
    if (mode == CFG_SENDER_CHECK_OFF || kind == ADDRESS_PATH_NULL)
        return true;
    if (kind != ADDRESS_PATH_MAILBOX || sender == NULL || sender->domain_is_literal)
        return false;
    const char *domain = user_domain(user);
    if (domain == NULL || strcasecmp(sender->domain, domain) != 0)
        return false;
    if (mode == CFG_SENDER_CHECK_DOMAIN)
        return true;
    /* address: the sender's users-table key is the user's (none for a quoted local part). */
    char key[ADDRESS_STRLEN];
    return address_user_key(sender, key, sizeof(key)) == 0 && strcasecmp(key, user) == 0;
}

/* Rule 2's refusal, in the configured style. */
static void deny_relay(const struct relay_facts *f, const char *rcpt_text, enum relay_reason reason,
                       const char *identity, struct relay_decision *out)
{
    if (f->denied_style == CFG_DENIED_STYLE_QMAIL) {
        set(out, RELAY_DENY, reason, 553, identity);
        reply(out, "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)");
    } else {
        set(out, RELAY_DENY, reason, 550, identity);
        reply(out, "550 5.7.1 <%s>... Relaying denied", rcpt_text);
    }
}

/* Rule 3 for a relay resting on user, granted with reason when the sender passes. */
static void relay_as_user(const struct relay_facts *f, const char *user, enum relay_reason reason,
                          struct relay_decision *out)
{
    if (!sender_is_owned(f->sender_check, f->sender_kind, f->sender, user)) {
        char sender_text[ADDRESS_STRLEN];
        format_path(f->sender_kind, f->sender, sender_text, sizeof(sender_text));
        set(out, RELAY_DENY, RELAY_REASON_SENDER_NOT_OWNED, 553, user);
        reply(out, "553 5.7.1 <%s>: Sender address rejected: not owned by user <%s>", sender_text,
              user);
        return;
    }
    set(out, RELAY_ALLOW, reason, 250, user);
    reply(out, "250 2.1.5 Ok");
}

void relay_decide(const struct relay_facts *f, struct relay_decision *out)
{
    memset(out, 0, sizeof(*out));
    char rcpt_text[ADDRESS_STRLEN];
    format_path(f->rcpt_kind, f->rcpt, rcpt_text, sizeof(rcpt_text));

    /* RCPT TO:<> is a syntax error (RFC 5321 4.1.1.3); the session refuses it before asking. */
    if (f->rcpt_kind == ADDRESS_PATH_NULL || f->rcpt == NULL) {
        set(out, RELAY_DENY, RELAY_REASON_BAD_RECIPIENT, 501, NULL);
        reply(out, "501 5.1.3 Bad recipient address syntax");
        return;
    }

    /* Rule 1: local recipients. */
    if (f->rcpt_kind == ADDRESS_PATH_POSTMASTER) {
        set(out, RELAY_ALLOW, RELAY_REASON_POSTMASTER, 250, NULL);
        reply(out, "250 2.1.5 Ok");
        return;
    }
    /* A literal is never local and a quoted local part never a user, whatever the caller says. */
    bool local = f->rcpt_domain_is_local && !f->rcpt->domain_is_literal;
    if (local) {
        bool dot_string = !f->rcpt->local_is_quoted;
        if (dot_string && f->rcpt_mailbox_exists) {
            set(out, RELAY_ALLOW, RELAY_REASON_LOCAL_MAILBOX, 250, NULL);
            reply(out, "250 2.1.5 Ok");
        } else if (dot_string && strcasecmp(f->rcpt->local, POSTMASTER_LOCAL) == 0) {
            set(out, RELAY_ALLOW, RELAY_REASON_POSTMASTER, 250, NULL);
            reply(out, "250 2.1.5 Ok");
        } else {
            set(out, RELAY_DENY, RELAY_REASON_UNKNOWN_USER, 550, NULL);
            reply(out, "550 5.1.1 <%s>: Recipient address rejected: User unknown", rcpt_text);
        }
        return;
    }

    /* Rule 2: relaying, on the first ground that applies. */
    if (f->trusted_network != NULL) {
        set(out, RELAY_ALLOW, RELAY_REASON_TRUSTED_NETWORK, 250, NULL);
        reply(out, "250 2.1.5 Ok");
        return;
    }
    if (f->auth_user != NULL) {
        relay_as_user(f, f->auth_user, RELAY_REASON_AUTH, out);
        return;
    }
    if (f->window_open) {
        const char *user =
            f->window_user != NULL && f->window_user[0] != '\0' ? f->window_user : NULL;
        /* A negative count is no count postern wrote: treat the window as spent, not unlimited. */
        if (f->window_relayed < 0 || f->window_relayed >= (int64_t)f->window_max_recipients) {
            deny_relay(f, rcpt_text, RELAY_REASON_WINDOW_LIMIT, user, out);
            return;
        }
        if (user == NULL) {
            /* Opened by hand without --user: nobody to own a sender, so nothing to check. */
            set(out, RELAY_ALLOW, RELAY_REASON_POP_WINDOW, 250, NULL);
            reply(out, "250 2.1.5 Ok");
            return;
        }
        relay_as_user(f, user, RELAY_REASON_POP_WINDOW, out);
        return;
    }
    deny_relay(f, rcpt_text, RELAY_REASON_NOT_AUTHORIZED, NULL, out);
}

const char *relay_reason_name(enum relay_reason r)
{
    switch (r) {
    case RELAY_REASON_LOCAL_MAILBOX:
        return "local-mailbox";
    case RELAY_REASON_POSTMASTER:
        return "postmaster";
    case RELAY_REASON_UNKNOWN_USER:
        return "unknown-user";
    case RELAY_REASON_TRUSTED_NETWORK:
        return "trusted-network";
    case RELAY_REASON_AUTH:
        return "auth";
    case RELAY_REASON_POP_WINDOW:
        return "pop-window";
    case RELAY_REASON_WINDOW_LIMIT:
        return "window-limit";
    case RELAY_REASON_NOT_AUTHORIZED:
        return "not-authorized";
    case RELAY_REASON_SENDER_NOT_OWNED:
        return "sender-not-owned";
    case RELAY_REASON_BAD_RECIPIENT:
        return "bad-recipient";
    }
    return "?";
}

static const char *sender_check_name(enum cfg_sender_check mode)
{
    switch (mode) {
    case CFG_SENDER_CHECK_OFF:
        return "off";
    case CFG_SENDER_CHECK_DOMAIN:
        return "domain";
    case CFG_SENDER_CHECK_ADDRESS:
        return "address";
    }
    return "?";
}

/* Appends to buf at *used, keeping it NUL-terminated; a line that does not fit is cut. */
static void append(char *buf, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
    if (*used >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *used, len - *used, fmt, ap);
    va_end(ap);
    if (n < 0)
        buf[*used] = '\0';
    else
        *used = (size_t)n >= len - *used ? len : *used + (size_t)n;
}

/* "<path>", escaped for a log field. */
static void escape_path(enum address_path_kind kind, const struct address *a, char *buf, size_t len)
{
    char text[ADDRESS_STRLEN + 2];
    char plain[ADDRESS_STRLEN];
    format_path(kind, a, plain, sizeof(plain));
    snprintf(text, sizeof(text), "<%s>", plain);
    log_escape(buf, len, text, strlen(text));
}

void relay_format_log(const struct relay_facts *f, const struct relay_decision *d, char *buf,
                      size_t len)
{
    if (buf == NULL || len == 0)
        return;
    buf[0] = '\0';
    size_t used = 0;
    /* Parsed addresses are printable ASCII, so escaping at most doubles them ('"', '\\'). */
    char ip[INET6_ADDRSTRLEN], from[ADDRESS_STRLEN * 2 + 8], to[ADDRESS_STRLEN * 2 + 8];
    if (f->client_ip != NULL)
        ip_format(f->client_ip, ip, sizeof(ip));
    else
        snprintf(ip, sizeof(ip), "-");
    escape_path(f->sender_kind, f->sender, from, sizeof(from));
    escape_path(f->rcpt_kind, f->rcpt, to, sizeof(to));
    append(buf, len, &used, "relay=%s reason=%s ip=%s from=%s to=%s",
           d->verdict == RELAY_ALLOW ? "allow" : "deny", relay_reason_name(d->reason), ip, from,
           to);

    if (d->identity != NULL) {
        char user[ADDRESS_STRLEN * 2 + 8];
        log_escape(user, sizeof(user), d->identity, strlen(d->identity));
        append(buf, len, &used, " user=%s", user);
    }
    if (d->reason == RELAY_REASON_TRUSTED_NETWORK && f->trusted_network != NULL) {
        char net[CIDR_STRLEN * 2 + 8];
        log_escape(net, sizeof(net), f->trusted_network, strlen(f->trusted_network));
        append(buf, len, &used, " network=%s", net);
    }

    /* Which ground the decision stood on once it got past the local-recipient rules. */
    bool on_auth = f->auth_user != NULL && f->trusted_network == NULL;
    bool on_window = !on_auth && f->trusted_network == NULL && f->window_open;
    bool window_consulted = on_window && (d->reason == RELAY_REASON_POP_WINDOW ||
                                          d->reason == RELAY_REASON_WINDOW_LIMIT ||
                                          d->reason == RELAY_REASON_SENDER_NOT_OWNED);
    if (window_consulted) {
        char when[32];
        date_iso8601(f->window_expires_ms, when, sizeof(when));
        append(buf, len, &used, " expires=%s relayed=%" PRId64 "/%u", when, f->window_relayed,
               f->window_max_recipients);
    }

    bool user_checked = d->reason == RELAY_REASON_AUTH || d->reason == RELAY_REASON_POP_WINDOW ||
                        d->reason == RELAY_REASON_SENDER_NOT_OWNED;
    if (user_checked) {
        const char *what = sender_check_name(f->sender_check);
        if (d->identity == NULL)
            what = "no-user";
        else if (f->sender_check != CFG_SENDER_CHECK_OFF && f->sender_kind == ADDRESS_PATH_NULL)
            what = "null-sender";
        append(buf, len, &used, " sender_check=%s", what);
    }
}
