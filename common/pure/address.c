/*
 * address.c - see address.h. A hand-written recursive-descent parser over (pointer, length):
 * every read is guarded by the cursor's end, never by a NUL, because the SMTP server hands in
 * the command buffer as it is. Errors carry short static reasons that the server puts into its
 * 501/553 replies and the CLI prints, so they are worded for people.
 *
 * Nothing here allocates but libidn2, which turns an internationalised domain into its A-label
 * (IDNA 2008, RFC 5891) and whose result is freed before the call returns; the other buffers
 * are the fixed fields of struct address and small locals sized from the RFC limits.
 */
#include "common/pure/address.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <idn2.h>

#include "common/pure/utf8.h"

/* Octets of "postmaster", the one mailbox that may appear without a domain (RFC 5321 4.5.1). */
#define POSTMASTER_BYTES 10
/* Octets of the "IPv6:" tag of an IPv6 address literal (RFC 5321 4.1.3). */
#define IPV6_TAG_BYTES 5
/*
 * Longest address-literal content worth looking at: "IPv6:" and the longest IPv6 text
 * (INET6_ADDRSTRLEN - 1 = 45 octets, "ffff:...:255.255.255.255").
 */
#define LITERAL_CONTENT_MAX_BYTES (IPV6_TAG_BYTES + INET6_ADDRSTRLEN - 1)
/* A Mailbox inside a Path leaves room for "<" and ">" (RFC 5321 4.5.3.1.3). */
#define MAILBOX_MAX_BYTES (ADDRESS_PATH_MAX_BYTES - 2)

struct cursor {
    const char *s;
    size_t end;     /* first octet that must not be read */
    size_t pos;     /* next octet; on error, where parsing stopped */
    unsigned flags; /* ADDRESS_ALLOW_UTF8 or 0 */
    bool utf8_seen; /* a UTF-8 sequence was accepted (struct address's is_utf8) */
};

const char address_why_needs_smtputf8[] = "non-ASCII address without SMTPUTF8";
static const char WHY_BAD_UTF8[] = "invalid UTF-8 in address";

/* The octet that ends a mailbox: '>' inside a path, none (the end of the input) otherwise. */
#define END_OF_PATH  '>'
#define END_OF_INPUT (-1)

/* True when the cursor is at the end of the input or at the mailbox's terminator. */
static bool at_mailbox_end(const struct cursor *c, int terminator)
{
    return c->pos >= c->end || (unsigned char)c->s[c->pos] == terminator;
}

static bool at(const struct cursor *c, char ch)
{
    return c->pos < c->end && c->s[c->pos] == ch;
}

static bool is_alpha(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_digit(unsigned char ch)
{
    return ch >= '0' && ch <= '9';
}

static char to_lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

/* RFC 5322 3.2.3 atext. */
static bool is_atext(unsigned char ch)
{
    if (is_alpha(ch) || is_digit(ch))
        return true;
    return ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL;
}

/*
 * The reason for an octet that may never appear in an address, or otherwise when the octet is
 * merely out of place. Control characters get their own reasons so the log and the reply say
 * what really happened (a bare CR is an attack or a broken client, not a typo).
 */
static const char *octet_reason(unsigned char ch, const char *otherwise)
{
    if (ch == '\0')
        return "NUL in address";
    if (ch == '\r' || ch == '\n')
        return "CR or LF in address";
    if (ch < 32 || ch == 127)
        return "control character in address";
    if (ch >= 128)
        return address_why_needs_smtputf8;
    return otherwise;
}

/*
 * Checks the domain name s[0..n) (LDH labels, RFC 1035 2.3.1 as relaxed by RFC 1123 2.1 to
 * allow a leading digit) and, if out is not NULL, writes it lower-cased without its one
 * optional trailing dot. Validation is complete before anything is written.
 */
static int check_domain(const char *s, size_t n, char *out, size_t outlen, const char **why)
{
    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0) {
        *why = "empty domain";
        return -1;
    }
    if (n > DNS_NAME_MAX_BYTES) {
        *why = "domain too long";
        return -1;
    }
    size_t label_start = 0;
    bool label_all_digits = true;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            size_t label_len = i - label_start;
            if (label_len == 0) {
                *why = "empty label in domain";
                return -1;
            }
            if (s[i - 1] == '-') {
                *why = "domain label ends with a hyphen";
                return -1;
            }
            if (i == n && label_all_digits) {
                *why = "last domain label is all digits (write an IP address as [192.0.2.1])";
                return -1;
            }
            label_start = i + 1;
            label_all_digits = true;
            continue;
        }
        unsigned char ch = (unsigned char)s[i];
        if (ch == '-') {
            if (i == label_start) {
                *why = "domain label starts with a hyphen";
                return -1;
            }
        } else if (!is_alpha(ch) && !is_digit(ch)) {
            *why = octet_reason(ch, "bad character in domain");
            return -1;
        }
        if (!is_digit(ch))
            label_all_digits = false;
        if (i - label_start >= DNS_LABEL_MAX_BYTES) {
            *why = "domain label too long";
            return -1;
        }
    }
    if (out == NULL)
        return 0;
    if (outlen <= n) {
        *why = "domain too long for the buffer";
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = to_lower(s[i]);
    out[n] = '\0';
    return 0;
}

/*
 * A domain that arrived in UTF-8 (RFC 6531 3.3: sub-domain =/ U-label): checked strictly, then
 * turned into its A-label by libidn2 (NFC first, then non-transitional processing as IDNA 2008
 * wants, so "faß.example" is xn--fa-hia.example and not fass.example) and checked as an LDH name.
 * The result is what every comparison, lookup and relay decision sees, so "bücher.example" and
 * "xn--bcher-kva.example" are one domain.
 */
static int domain_to_a_label(const char *s, size_t n, char *out, size_t outlen, const char **why)
{
    if (n > 0 && s[n - 1] == '.')
        n--;
    char text[ADDRESS_PATH_MAX_BYTES + 1];
    if (n == 0 || n >= sizeof(text)) {
        *why = n == 0 ? "empty domain" : "domain too long";
        return -1;
    }
    /* libidn2 forgives empty labels ("a..b", a second trailing dot); the LDH rule does not. */
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && (i == 0 || i + 1 == n || s[i + 1] == '.')) {
            *why = "empty label in domain";
            return -1;
        }
    }
    memcpy(text, s, n);
    text[n] = '\0';
    char *ascii = NULL;
    if (idn2_to_ascii_8z(text, &ascii, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK) {
        /* libidn2 may leave *output untouched on error; it is NULL then. */
        idn2_free(ascii);
        *why = "bad internationalised domain";
        return -1;
    }
    int rc = check_domain(ascii, strlen(ascii), out, outlen, why);
    idn2_free(ascii);
    return rc;
}

/*
 * The domain s[0..n): LDH (check_domain) when it is ASCII; when it has 8-bit octets, strict
 * UTF-8 turned into its A-label if flags allow UTF-8, else the SMTPUTF8 refusal.
 */
static int domain_text(const char *s, size_t n, unsigned flags, char *out, size_t outlen,
                       const char **why)
{
    if (!utf8_has_8bit(s, n))
        return check_domain(s, n, out, outlen, why);
    if ((flags & ADDRESS_ALLOW_UTF8) == 0) {
        *why = address_why_needs_smtputf8;
        return -1;
    }
    if (!utf8_valid(s, n)) {
        *why = WHY_BAD_UTF8;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *reason = octet_reason((unsigned char)s[i], NULL);
        if ((unsigned char)s[i] < 128 && reason != NULL) {
            *why = reason;
            return -1;
        }
    }
    char scratch[ADDRESS_DOMAIN_MAX_BYTES + 1];
    if (out == NULL) {
        out = scratch;
        outlen = sizeof(scratch);
    }
    return domain_to_a_label(s, n, out, outlen, why);
}

int domain_normalize(const char *in, char *out, size_t outlen, const char **why_out)
{
    return domain_normalize_flags(in, 0, out, outlen, why_out);
}

int domain_normalize_flags(const char *in, unsigned flags, char *out, size_t outlen,
                           const char **why_out)
{
    const char *why_local = NULL;
    const char **why = why_out != NULL ? why_out : &why_local;
    if (out == NULL || outlen == 0) {
        *why = "no output buffer";
        return -1;
    }
    if (in == NULL) {
        out[0] = '\0';
        *why = "empty domain";
        return -1;
    }
    /* Anything past the longest mailbox is too long, whatever its A-label would be. */
    size_t n = strnlen(in, MAILBOX_MAX_BYTES + 1);
    if (n > MAILBOX_MAX_BYTES) {
        out[0] = '\0';
        *why = "domain too long";
        return -1;
    }
    if (domain_text(in, n, flags, out, outlen, why) != 0) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

/*
 * An address literal starting at the '[' under the cursor (RFC 5321 4.1.3). Writes the
 * canonical form into out ("[192.0.2.1]" or "[IPv6:2001:db8::1]"), an IPv4-mapped IPv6 literal
 * becoming the IPv4 one, so that equal addresses compare equal as strings.
 */
static int parse_literal(struct cursor *c, char *out, size_t outlen, const char **why)
{
    size_t start = c->pos + 1;
    size_t i = start;
    for (; i < c->end && c->s[i] != ']'; i++) {
        unsigned char ch = (unsigned char)c->s[i];
        const char *reason = octet_reason(ch, NULL);
        if (reason == NULL && (ch == '[' || ch == '\\' || ch == ' '))
            reason = "bad character in address literal";
        if (reason == NULL && i - start >= LITERAL_CONTENT_MAX_BYTES)
            reason = "bad address literal";
        if (reason != NULL) {
            c->pos = i;
            *why = reason;
            return -1;
        }
    }
    if (i >= c->end) {
        c->pos = i;
        *why = "unterminated address literal";
        return -1;
    }
    size_t content_len = i - start;
    char text[LITERAL_CONTENT_MAX_BYTES + 1];
    memcpy(text, c->s + start, content_len);
    text[content_len] = '\0';

    struct ip_addr ip;
    if (content_len >= IPV6_TAG_BYTES && strncasecmp(text, "IPv6:", IPV6_TAG_BYTES) == 0) {
        /* ip_parse picks the family from ':', so insist on one: "[IPv6:192.0.2.1]" is bad. */
        const char *v6 = text + IPV6_TAG_BYTES;
        if (strchr(v6, ':') == NULL || ip_parse(v6, &ip) != 0) {
            c->pos = start;
            *why = "bad IPv6 address literal";
            return -1;
        }
    } else if (strchr(text, ':') != NULL) {
        c->pos = start;
        *why = "general address literals are not supported";
        return -1;
    } else if (ip_parse(text, &ip) != 0) {
        c->pos = start;
        *why = "bad IPv4 address literal";
        return -1;
    }
    char ip_text[INET6_ADDRSTRLEN];
    ip_format(&ip, ip_text, sizeof(ip_text));
    int written = snprintf(out, outlen, "[%s%s]", ip.family == AF_INET6 ? "IPv6:" : "", ip_text);
    if (written < 0 || (size_t)written >= outlen) {
        *why = "address literal too long";
        return -1;
    }
    c->pos = i + 1;
    return 0;
}

/* A Quoted-string local part, kept with its quotes and backslashes (RFC 5321 4.1.2). */
static int parse_quoted_local(struct cursor *c, struct address *out, const char **why)
{
    size_t start = c->pos;
    size_t content_bytes = 0;
    size_t i = start + 1;
    for (;;) {
        if (i >= c->end) {
            c->pos = i;
            *why = "unterminated quoted local part";
            return -1;
        }
        unsigned char ch = (unsigned char)c->s[i];
        if (ch == '"')
            break;
        /* RFC 6531 3.3: qtextSMTP =/ UTF8-non-ascii (never after a backslash). */
        if (ch >= 128 && (c->flags & ADDRESS_ALLOW_UTF8) != 0) {
            size_t step = utf8_sequence_len((const unsigned char *)c->s + i, c->end - i);
            if (step == 0 || content_bytes + step > ADDRESS_LOCAL_MAX_BYTES) {
                c->pos = i;
                *why = step == 0 ? WHY_BAD_UTF8 : "local part too long";
                return -1;
            }
            c->utf8_seen = true;
            content_bytes += step;
            i += step;
            continue;
        }
        if (ch == '\\') {
            /* quoted-pairSMTP = "\" %d32-126 */
            i++;
            if (i >= c->end) {
                c->pos = i;
                *why = "unterminated quoted local part";
                return -1;
            }
            ch = (unsigned char)c->s[i];
        }
        const char *reason = octet_reason(ch, NULL);
        if (reason != NULL) {
            c->pos = i;
            *why = reason;
            return -1;
        }
        /* Everything left in %d32-126 is qtextSMTP or the target of a quoted pair. */
        content_bytes++;
        if (content_bytes > ADDRESS_LOCAL_MAX_BYTES) {
            c->pos = i;
            *why = "local part too long";
            return -1;
        }
        i++;
    }
    if (content_bytes == 0) {
        c->pos = start;
        *why = "empty local part";
        return -1;
    }
    size_t wire_len = i + 1 - start;
    /* At most 64 content octets, each escaped, plus two quotes: always fits. */
    if (wire_len >= sizeof(out->local)) {
        c->pos = start;
        *why = "local part too long";
        return -1;
    }
    memcpy(out->local, c->s + start, wire_len);
    out->local[wire_len] = '\0';
    out->local_is_quoted = true;
    c->pos = i + 1;
    return 0;
}

/* A Dot-string local part: Atom *("." Atom). Stops at the first octet that is not atext or '.'. */
static int parse_dot_local(struct cursor *c, int terminator, struct address *out, const char **why)
{
    size_t start = c->pos;
    size_t i = start;
    size_t step = 1;
    for (; i < c->end; i += step) {
        unsigned char ch = (unsigned char)c->s[i];
        step = 1;
        if (ch >= 128 && (c->flags & ADDRESS_ALLOW_UTF8) != 0) {
            /* RFC 6531 3.3: atext =/ UTF8-non-ascii. */
            step = utf8_sequence_len((const unsigned char *)c->s + i, c->end - i);
            if (step == 0) {
                c->pos = i;
                *why = WHY_BAD_UTF8;
                return -1;
            }
            c->utf8_seen = true;
        } else if (!is_atext(ch) && ch != '.') {
            break;
        }
        if (i + step - start > ADDRESS_LOCAL_MAX_BYTES) {
            c->pos = i;
            *why = "local part too long";
            return -1;
        }
        if (c->s[i] == '.') {
            const char *reason = NULL;
            if (i == start)
                reason = "local part starts with a dot";
            else if (c->s[i - 1] == '.')
                reason = "two dots in a row in local part";
            if (reason != NULL) {
                c->pos = i;
                *why = reason;
                return -1;
            }
        }
    }
    size_t n = i - start;
    if (n == 0) {
        c->pos = i;
        if (at(c, '@'))
            *why = "empty local part";
        else if (at_mailbox_end(c, terminator))
            *why = "missing mailbox";
        else
            *why = octet_reason((unsigned char)c->s[i], "bad character in local part");
        return -1;
    }
    if (c->s[i - 1] == '.') {
        c->pos = i - 1;
        *why = "local part ends with a dot";
        return -1;
    }
    memcpy(out->local, c->s + start, n);
    out->local[n] = '\0';
    out->local_is_quoted = false;
    c->pos = i;
    return 0;
}

/*
 * One Mailbox (RFC 5321 4.1.2). In a path (terminator '>') the mailbox ends at the '>', which
 * is left under the cursor; otherwise it must run to the end of the input.
 */
static int parse_mailbox(struct cursor *c, int terminator, struct address *out, const char **why)
{
    int rc =
        at(c, '"') ? parse_quoted_local(c, out, why) : parse_dot_local(c, terminator, out, why);
    if (rc != 0)
        return -1;
    if (!at(c, '@')) {
        if (at_mailbox_end(c, terminator))
            *why = "missing '@'";
        else if (out->local_is_quoted)
            *why = octet_reason((unsigned char)c->s[c->pos], "junk after quoted local part");
        else
            *why = octet_reason((unsigned char)c->s[c->pos], "bad character in local part");
        return -1;
    }
    c->pos++;

    if (at(c, '[')) {
        if (parse_literal(c, out->domain, sizeof(out->domain), why) != 0)
            return -1;
        if (!at_mailbox_end(c, terminator)) {
            *why = octet_reason((unsigned char)c->s[c->pos], "junk after address literal");
            return -1;
        }
        out->domain_is_literal = true;
        return 0;
    }

    size_t start = c->pos;
    size_t i = start;
    for (; i < c->end && (unsigned char)c->s[i] != terminator; i++) {
        /* Said here rather than as "bad character in domain": user@elsewhere@relay is a probe. */
        if (c->s[i] == '@') {
            c->pos = i;
            *why = "more than one '@'";
            return -1;
        }
    }
    if (utf8_has_8bit(c->s + start, i - start) && (c->flags & ADDRESS_ALLOW_UTF8) != 0)
        c->utf8_seen = true;
    if (domain_text(c->s + start, i - start, c->flags, out->domain, sizeof(out->domain), why) !=
        0) {
        c->pos = start;
        return -1;
    }
    out->domain_is_literal = false;
    c->pos = i;
    return 0;
}

/*
 * The 256-octet path limit (RFC 5321 4.5.3.1.3) leaves 254 for the mailbox. The input is
 * checked against it; this checks the normalised form too, so that whatever address_format
 * writes always parses again. Today normalising never lengthens a mailbox that much (a
 * canonical IPv6 literal may grow by an octet, "::102:304" is written "::1.2.3.4", but a
 * literal is short), so this is a guard, not a rule users meet.
 */
static int check_mailbox_length(const struct address *a, const char **why)
{
    if (strlen(a->local) + 1 + strlen(a->domain) > MAILBOX_MAX_BYTES) {
        *why = "address too long";
        return -1;
    }
    return 0;
}

int address_parse(const char *s, size_t len, struct address *out, const char **why_out)
{
    return address_parse_flags(s, len, 0, out, why_out);
}

int address_parse_flags(const char *s, size_t len, unsigned flags, struct address *out,
                        const char **why_out)
{
    const char *why_local = NULL;
    const char **why = why_out != NULL ? why_out : &why_local;
    memset(out, 0, sizeof(*out));
    if (s == NULL || len == 0) {
        *why = "empty address";
        return -1;
    }
    if (len > MAILBOX_MAX_BYTES) {
        *why = "address too long";
        return -1;
    }
    struct cursor c = {.s = s, .end = len, .pos = 0, .flags = flags};
    if (parse_mailbox(&c, END_OF_INPUT, out, why) != 0 || check_mailbox_length(out, why) != 0) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    if (c.pos != c.end) {
        *why = octet_reason((unsigned char)s[c.pos], "junk after address");
        memset(out, 0, sizeof(*out));
        return -1;
    }
    out->is_utf8 = c.utf8_seen;
    return 0;
}

int address_normalize(const char *in, char *out, size_t outlen, const char **why_out)
{
    const char *why_local = NULL;
    const char **why = why_out != NULL ? why_out : &why_local;
    if (out == NULL || outlen == 0) {
        *why = "no output buffer";
        return -1;
    }
    out[0] = '\0';
    if (in == NULL) {
        *why = "empty address";
        return -1;
    }
    struct address a;
    /* One past the limit is enough for address_parse to say "too long". */
    if (address_parse_flags(in, strnlen(in, MAILBOX_MAX_BYTES + 1), ADDRESS_ALLOW_UTF8, &a, why) !=
        0)
        return -1;
    if (a.local_is_quoted) {
        *why = "quoted local part not allowed for a local user";
        return -1;
    }
    if (a.domain_is_literal) {
        *why = "address literal not allowed for a local user";
        return -1;
    }
    if (address_user_key(&a, out, outlen) != 0) {
        *why = "address too long for the buffer";
        return -1;
    }
    return 0;
}

int address_user_key(const struct address *a, char *out, size_t outlen)
{
    if (out == NULL || outlen == 0)
        return -1;
    out[0] = '\0';
    /* A quoted local part is never a user and a literal never a local domain (see address.h). */
    if (a == NULL || a->local_is_quoted || a->domain_is_literal || a->local[0] == '\0' ||
        a->domain[0] == '\0')
        return -1;
    int written = snprintf(out, outlen, "%s@%s", a->local, a->domain);
    if (written < 0 || (size_t)written >= outlen) {
        out[0] = '\0';
        return -1;
    }
    /*
     * ASCII letters only: RFC 6531 3.3 leaves the case of a UTF-8 local part to the server, and
     * Unicode case folding depends on the locale (Turkish dotted I) and on the Unicode version,
     * so a key folded that way could change under an upgrade. The domain is already its
     * lower-case A-label.
     */
    for (char *p = out; *p != '\0'; p++)
        *p = to_lower(*p);
    return 0;
}

/* A source route hop after its '@': a domain or an address literal, checked and dropped. */
static int parse_route_hop(struct cursor *c, const char **why)
{
    if (at(c, '[')) {
        char scratch[ADDRESS_DOMAIN_MAX_BYTES + 1];
        return parse_literal(c, scratch, sizeof(scratch), why);
    }
    size_t start = c->pos;
    size_t i = start;
    while (i < c->end && c->s[i] != ',' && c->s[i] != ':' && c->s[i] != '>')
        i++;
    if (domain_text(c->s + start, i - start, c->flags, NULL, 0, why) != 0) {
        c->pos = start;
        return -1;
    }
    c->pos = i;
    return 0;
}

/* A-d-l ":" (RFC 5321 4.1.2): "@" hop *( "," "@" hop ) ":". */
static int skip_source_route(struct cursor *c, const char **why)
{
    for (;;) {
        if (!at(c, '@')) {
            *why = "bad source route";
            return -1;
        }
        c->pos++;
        if (parse_route_hop(c, why) != 0)
            return -1;
        if (at(c, ',')) {
            c->pos++;
            continue;
        }
        if (at(c, ':')) {
            c->pos++;
            return 0;
        }
        if (c->pos >= c->end)
            *why = "missing '>'";
        else if (c->s[c->pos] == '>')
            *why = "source route without a mailbox";
        else
            *why = octet_reason((unsigned char)c->s[c->pos], "bad source route");
        return -1;
    }
}

static bool is_postmaster(const struct cursor *c)
{
    return c->end - c->pos > POSTMASTER_BYTES &&
           strncasecmp(c->s + c->pos, "postmaster", POSTMASTER_BYTES) == 0 &&
           c->s[c->pos + POSTMASTER_BYTES] == '>';
}

static int parse_path_inner(struct cursor *c, struct address *out, enum address_path_kind *kind,
                            const char **why)
{
    if (!at(c, '<')) {
        *why = "path must start with '<'";
        return -1;
    }
    c->pos++;
    if (at(c, '>')) {
        c->pos++;
        *kind = ADDRESS_PATH_NULL;
        return 0;
    }
    if (is_postmaster(c)) {
        memcpy(out->local, c->s + c->pos, POSTMASTER_BYTES);
        out->local[POSTMASTER_BYTES] = '\0';
        c->pos += POSTMASTER_BYTES + 1;
        *kind = ADDRESS_PATH_POSTMASTER;
        return 0;
    }
    /* RFC 5321 appendix C: a route may be ignored; the mailbox after ':' is what counts. */
    if (at(c, '@') && skip_source_route(c, why) != 0)
        return -1;
    if (parse_mailbox(c, END_OF_PATH, out, why) != 0 || check_mailbox_length(out, why) != 0)
        return -1;
    if (!at(c, '>')) {
        *why = "missing '>'";
        return -1;
    }
    c->pos++;
    *kind = ADDRESS_PATH_MAILBOX;
    return 0;
}

int address_parse_path(const char *s, size_t len, struct address *out,
                       enum address_path_kind *kind_out, size_t *consumed_out, const char **why_out)
{
    return address_parse_path_flags(s, len, 0, out, kind_out, consumed_out, why_out);
}

int address_parse_path_flags(const char *s, size_t len, unsigned flags, struct address *out,
                             enum address_path_kind *kind_out, size_t *consumed_out,
                             const char **why_out)
{
    const char *why_local = NULL;
    const char **why = why_out != NULL ? why_out : &why_local;
    memset(out, 0, sizeof(*out));
    *kind_out = ADDRESS_PATH_NULL;
    *consumed_out = 0;
    if (s == NULL || len == 0) {
        *why = "empty path";
        return -1;
    }
    /*
     * Never look past the longest legal path: a client that sends 500 octets of route gets
     * "too long" after 256 of them, whatever follows.
     */
    size_t end = len < ADDRESS_PATH_MAX_BYTES ? len : ADDRESS_PATH_MAX_BYTES;
    struct cursor c = {.s = s, .end = end, .pos = 0, .flags = flags};
    enum address_path_kind kind = ADDRESS_PATH_NULL;
    if (parse_path_inner(&c, out, &kind, why) != 0) {
        if (c.pos >= c.end && len > end)
            *why = "path too long";
        memset(out, 0, sizeof(*out));
        return -1;
    }
    out->is_utf8 = c.utf8_seen;
    *kind_out = kind;
    *consumed_out = c.pos;
    return 0;
}

void address_format(const struct address *a, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return;
    if (a->domain[0] == '\0')
        snprintf(buf, len, "%s", a->local);
    else
        snprintf(buf, len, "%s@%s", a->local, a->domain);
}

int address_literal_ip(const struct address *a, struct ip_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (!a->domain_is_literal)
        return -1;
    size_t n = strnlen(a->domain, sizeof(a->domain));
    if (n < 2 || a->domain[0] != '[' || a->domain[n - 1] != ']')
        return -1;
    char text[LITERAL_CONTENT_MAX_BYTES + 1];
    size_t content_len = n - 2;
    if (content_len > LITERAL_CONTENT_MAX_BYTES)
        return -1;
    memcpy(text, a->domain + 1, content_len);
    text[content_len] = '\0';
    const char *ip_text = text;
    if (strncasecmp(text, "IPv6:", IPV6_TAG_BYTES) == 0)
        ip_text = text + IPV6_TAG_BYTES;
    return ip_parse(ip_text, out);
}

bool domain_is_ip_literal(const char *host)
{
    if (host == NULL || host[0] == '\0')
        return false;
    struct ip_addr ip;
    if (host[0] != '[')
        return ip_parse(host, &ip) == 0;
    size_t n = strnlen(host, ADDRESS_DOMAIN_MAX_BYTES + 1);
    struct cursor c = {.s = host, .end = n, .pos = 0};
    char canonical[ADDRESS_DOMAIN_MAX_BYTES + 1];
    const char *why = NULL;
    return parse_literal(&c, canonical, sizeof(canonical), &why) == 0 && c.pos == n;
}

bool domain_is_hostname(const char *s)
{
    if (s == NULL)
        return false;
    /* One past the limit is enough for check_domain to say "too long". */
    size_t n = strnlen(s, DNS_NAME_MAX_BYTES + 1);
    const char *why = NULL;
    return n > 0 && s[n - 1] != '.' && s[n] == '\0' && check_domain(s, n, NULL, 0, &why) == 0;
}
