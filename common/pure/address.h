/*
 * address.h - RFC 5321 mailboxes, paths and domains: parsing and normalisation.
 *
 * One parser for the whole program: the admin CLI (user addresses, local domains), the SMTP
 * server (MAIL FROM:<...>, RCPT TO:<...>) and `postern relay-check` all read addresses here, so
 * the relay policy always sees the same thing for the same input. The grammar is RFC 5321 4.1.2
 * (Path, Mailbox, Local-part, Domain, address-literal) with atext from RFC 5322 3.2.3.
 *
 * What it keeps as received: the local part, exactly as it was sent (Dot-string, or
 * Quoted-string with its quotes and backslashes). A quoted local part may hold '@', '%' or '!'
 * ("user@elsewhere"@relay, "user%elsewhere"@relay) and an unquoted one may hold '%' and '!'
 * (user%elsewhere@relay, elsewhere!user@relay): all legal syntax, all parsed, none rewritten.
 * The percent hack and bang paths are the relay policy's business: to this module they are
 * just characters of the local part.
 *
 * What it normalises: the domain (ASCII lower case, one trailing dot removed) and address
 * literals (canonical inet_ntop text; an IPv4-mapped IPv6 literal becomes the IPv4 literal,
 * as in common/pure/cidr.h).
 *
 * Internationalised addresses (RFC 6531 3.3, RFC 6532 3.2): with ADDRESS_ALLOW_UTF8 a local part
 * may hold UTF-8 (kept as sent) and a domain may be written with U-labels; such a domain is
 * stored as its lower-case A-label (IDNA 2008 through libidn2), so user@bücher.example and
 * user@xn--bcher-kva.example are the same address to everyone after the parser. The UTF-8 is
 * checked strictly (common/pure/utf8.h). Without the flag every 8-bit octet is refused with
 * address_why_needs_smtputf8, which the SMTP server answers with 553 5.6.7 (RFC 6531 3.7.4.1).
 *
 * What it refuses: NUL, CR, LF and other control characters anywhere; 8-bit octets without
 * ADDRESS_ALLOW_UTF8, and invalid UTF-8 with it; over-long parts (RFC 5321 4.5.3.1);
 * General-address-literals ("[tag:...]", RFC 5321 4.1.3), which nobody uses for mail; a domain
 * whose last label is all digits (a bare IP address such as user@192.0.2.1 must be written as the
 * literal user@[192.0.2.1]).
 *
 * Source routes ("<@relay1,@relay2:user@domain>") are accepted and ignored, as RFC 5321 4.1.2
 * and appendix C allow: only the final mailbox counts.
 *
 * Every function is pure (no I/O, no state; libidn2 allocates and is freed at once) and never
 * reads past the length it was given, so it may be fed the raw command buffer.
 */
#ifndef POSTERN_ADDRESS_H
#define POSTERN_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/pure/cidr.h"
#include "common/limits.h"

/* The length limits (ADDRESS_LOCAL_MAX_BYTES, ADDRESS_DOMAIN_MAX_BYTES, ADDRESS_PATH_MAX_BYTES,
 * DNS_NAME_MAX_BYTES, DNS_LABEL_MAX_BYTES) are in common/limits.h. */
/* Room for address_format's "local@domain" and its NUL, whatever the address. */
#define ADDRESS_STRLEN (ADDRESS_LOCAL_MAX_BYTES * 2 + 3 + ADDRESS_DOMAIN_MAX_BYTES + 1)

struct address {
    /*
     * As received: a Dot-string, or a Quoted-string kept with its quotes and backslashes (so up
     * to 64 content octets, each possibly escaped, plus two quotes and the NUL). Empty for the
     * null path.
     */
    char local[ADDRESS_LOCAL_MAX_BYTES * 2 + 3];
    /*
     * Normalised: lower case, no trailing dot; or an address literal in canonical form,
     * "[192.0.2.1]" or "[IPv6:2001:db8::1]". Empty for the null path and for <Postmaster>.
     */
    char domain[ADDRESS_DOMAIN_MAX_BYTES + 1];
    bool domain_is_literal;
    bool local_is_quoted;
    /* Sent with UTF-8 in the local part or the domain: needs SMTPUTF8 (RFC 6531 3.4). */
    bool is_utf8;
};

/* Parse flag: UTF-8 local parts and domains are allowed (the client asked for SMTPUTF8). */
#define ADDRESS_ALLOW_UTF8 1u

/* The reason (compare the pointer) given for an 8-bit octet when UTF-8 is not allowed. */
extern const char address_why_needs_smtputf8[];

/*
 * Checks and normalises a domain name given as a C string (DNS names, DKIM, config). LDH labels
 * (letters, digits, hyphen) of 1..63 octets that neither start nor end with a hyphen, at least one
 * label, at most 253 octets without the trailing dot; lower-cases; removes one trailing dot.
 * Refuses "", ".", "a..b", ".a", "a..", "-a.b", "a_b.c", and a last label of digits only (an IP
 * address written bare: "192.0.2.1"). Returns 0, or -1 with *why_out (if why_out is not NULL) set
 * to a short static reason, and out set to "" when outlen > 0; -1 too when outlen is too small.
 */
int domain_normalize(const char *in, char *out, size_t outlen, const char **why_out);
/*
 * domain_normalize with flags: with ADDRESS_ALLOW_UTF8 (the CLI's `domain add`) a domain with
 * U-labels ("bücher.example") is taken in strict UTF-8 and becomes its A-label
 * ("xn--bcher-kva.example"), which is then judged as an ASCII domain.
 */
int domain_normalize_flags(const char *in, unsigned flags, char *out, size_t outlen,
                           const char **why_out);

/*
 * Parses exactly one Mailbox (RFC 5321 4.1.2: Local-part "@" ( Domain / address-literal ))
 * from s[0..len), which need not be NUL-terminated; every octet must belong to the mailbox.
 * Returns 0, or -1 with *why_out set to a short static reason; on error *out is zeroed.
 */
int address_parse(const char *s, size_t len, struct address *out, const char **why_out);
/* address_parse with flags (ADDRESS_ALLOW_UTF8 or 0; address_parse passes 0). */
int address_parse_flags(const char *s, size_t len, unsigned flags, struct address *out,
                        const char **why_out);

/*
 * The users-table key of a parsed address: the one rule every lookup of a local user goes by
 * (RCPT TO, the relay facts, a bounce to a local sender, the sender check, AUTH and the CLI via
 * address_normalize). RFC 5321 2.4 lets a server treat local parts as case-sensitive, but
 * postern's users are Dot-strings matched case-insensitively, and domains are case-insensitive
 * anyway (RFC 1035 2.3.3), so the key is "local@domain" with both parts in ASCII lower case:
 * "Alice.Smith@Example.ORG" -> "alice.smith@example.org". A quoted local part is never a user,
 * even when its content would be a Dot-string ("alice"@example.org is not alice@example.org: the
 * CLI refuses to create such a user, so no lookup may find one either); an address literal and
 * an address without a domain (the null path, <Postmaster>) are never users. Returns 0, or -1 with
 * out set to "" (when outlen > 0) for those and when outlen is too small (ADDRESS_STRLEN always
 * fits).
 */
int address_user_key(const struct address *a, char *out, size_t outlen);

/*
 * For local users (the CLI's `user add` and lookups by address): parses the C string in as a
 * Mailbox (UTF-8 allowed), then requires a Dot-string local part (no quotes) and a real domain (no
 * address literal), and writes its address_user_key. Returns 0, or -1 with *why_out set; -1 too
 * when outlen is too small.
 */
int address_normalize(const char *in, char *out, size_t outlen, const char **why_out);

enum address_path_kind {
    ADDRESS_PATH_NULL,       /* "<>": the null reverse-path (RFC 5321 4.5.5) */
    ADDRESS_PATH_MAILBOX,    /* "<local@domain>", possibly after a source route */
    ADDRESS_PATH_POSTMASTER, /* "<Postmaster>" in any case, no domain (RFC 5321 4.5.1) */
};

/*
 * Parses a path as in MAIL FROM:<...> and RCPT TO:<...>. s[0..len) must start with '<'; the
 * path ends at its '>' and whatever follows (" SIZE=123", the end of the line) is left to the
 * caller: *consumed_out is the number of octets up to and including the '>'. The function does
 * not skip a space before '<' (RFC 5321 has none; being lenient there is the caller's choice)
 * and does not judge where a kind is allowed: the caller refuses a null path in RCPT TO and
 * <Postmaster> in MAIL FROM.
 *   "<>"                       -> ADDRESS_PATH_NULL, *out empty
 *   "<user@example.org>"       -> ADDRESS_PATH_MAILBOX
 *   "<@a.example,@b.example:user@example.org>" -> ADDRESS_PATH_MAILBOX, the route dropped
 *   "<Postmaster>"             -> ADDRESS_PATH_POSTMASTER, out->local as sent, domain empty
 * Route hops may be domains or address literals (RFC 5321 allows only domains there, but they
 * are ignored anyway and literals are what relay probes send). The whole path, route included,
 * is at most ADDRESS_PATH_MAX_BYTES. Returns 0, or -1 with *why_out set; on error *out is zeroed,
 * *kind_out is ADDRESS_PATH_NULL and *consumed_out is 0.
 */
int address_parse_path(const char *s, size_t len, struct address *out,
                       enum address_path_kind *kind_out, size_t *consumed_out,
                       const char **why_out);
/* address_parse_path with flags (ADDRESS_ALLOW_UTF8 or 0; address_parse_path passes 0). */
int address_parse_path_flags(const char *s, size_t len, unsigned flags, struct address *out,
                             enum address_path_kind *kind_out, size_t *consumed_out,
                             const char **why_out);

/*
 * Writes "local@domain"; just the local part when the domain is empty (<Postmaster>); the empty
 * string for the null path. len should be ADDRESS_STRLEN (truncates otherwise). The result
 * parses back (with address_parse, or inside "<" ">" with address_parse_path) to the same
 * struct address.
 */
void address_format(const struct address *a, char *buf, size_t len);

/*
 * The IP address of an address-literal domain ("[192.0.2.1]", "[IPv6:2001:db8::1]"), for the
 * relay policy's "is this literal one of my addresses" check. Returns 0, or -1 when the domain
 * is not a literal.
 */
int address_literal_ip(const struct address *a, struct ip_addr *out);

/*
 * Whether host names a machine by its IP address rather than by a name: a bare IPv4 or IPv6
 * address ("192.0.2.1", "2001:db8::1", as a configured smarthost or an A record gives it) or an
 * RFC 5321 4.1.3 address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"). Such a host has no name
 * to put in TLS server name indication (RFC 6066 3: "Literal IPv4 and IPv6 addresses are not
 * permitted in HostName") or to look up. NULL and "" are not literals.
 */
bool domain_is_ip_literal(const char *host);

/*
 * Whether s is a host name as written in the configuration (server.hostname, the smarthost) and
 * in a certificate: the rule of domain_normalize (LDH labels of 1..63 octets, no hyphen at either
 * end of a label, RFC 1123 2.1 leading digits allowed, at most 253 octets, a last label not all
 * digits) with no trailing dot, since a host name in a greeting or a certificate is written
 * without one. Case is not judged: "Mail.Example.ORG" is a host name.
 */
bool domain_is_hostname(const char *s);

#endif
