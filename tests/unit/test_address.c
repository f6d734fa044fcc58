/*
 * test_address.c - unit tests for common/pure/address.c: domains, mailboxes, local-user
 * normalisation and the users-table key (mixed case, quoted local parts), paths (null,
 * Postmaster, source routes, ESMTP parameters after the path), formatting round trips, address
 * literals and the IP-literal and host-name predicates, including every form nmap's
 * smtp-open-relay script sends.
 *
 * Every parse call goes through a copy of the input in a malloc'd buffer of exactly the input's
 * length, with no NUL after it, so that under ASan a read past the given length fails the test.
 * Table rows carry their input with an explicit length (IN("...")) so that NULs can be tested.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/address.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
/* A string literal with its exact length, embedded NULs included. */
#define IN(s) s, sizeof(s) - 1

/* nmap's smtp-open-relay defaults: domain, the server's own name, and the server's address. */
#define NMAP_DOMAIN "nmap.scanme.org"
#define SRVNAME     "mail.example.test"
#define SRVIP       "192.0.2.25"

static char *exact_copy(const char *s, size_t len)
{
    char *p = malloc(len > 0 ? len : 1);
    assert_non_null(p);
    memcpy(p, s, len);
    return p;
}

static int parse_exact(const char *s, size_t len, struct address *out, const char **why)
{
    char *copy = exact_copy(s, len);
    int rc = address_parse(copy, len, out, why);
    free(copy);
    return rc;
}

static int parse_path_exact(const char *s, size_t len, struct address *out,
                            enum address_path_kind *kind, size_t *consumed, const char **why)
{
    char *copy = exact_copy(s, len);
    int rc = address_parse_path(copy, len, out, kind, consumed, why);
    free(copy);
    return rc;
}

/* Printable rendering of a test input for failure messages (NULs and controls as \xNN). */
static const char *show(const char *s, size_t len)
{
    static char buf[1024];
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < sizeof(buf); i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 32 && ch < 127)
            buf[o++] = (char)ch;
        else
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\\x%02x", ch);
    }
    buf[o] = '\0';
    return buf;
}

static void repeat(char *dst, char ch, size_t n)
{
    memset(dst, ch, n);
    dst[n] = '\0';
}

/* ---- domain_normalize -------------------------------------------------------------------- */

struct domain_ok_case {
    const char *in;
    const char *want;
};

static const struct domain_ok_case domain_ok_cases[] = {
    {"example.org", "example.org"},
    {"Example.ORG", "example.org"},
    {"example.org.", "example.org"}, /* one trailing dot removed */
    {"EXAMPLE.ORG.", "example.org"},
    {"localhost", "localhost"},
    {"a", "a"},
    {"a-b.c", "a-b.c"},
    {"a--b.c", "a--b.c"},
    {"xn--bcher-kva.example", "xn--bcher-kva.example"},
    {"1example.org", "1example.org"}, /* RFC 1123 2.1: a label may start with a digit */
    {"123.example.org", "123.example.org"},
    {"example.123a", "example.123a"},
    {"a.b.c.d.e.f", "a.b.c.d.e.f"},
    {"MiXeD-CaSe9.Example", "mixed-case9.example"},
};

static void test_domain_normalize_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(domain_ok_cases); i++) {
        const struct domain_ok_case *tc = &domain_ok_cases[i];
        char out[ADDRESS_DOMAIN_MAX_BYTES + 1];
        const char *why = "unset";
        if (domain_normalize(tc->in, out, sizeof(out), &why) != 0)
            fail_msg("domain_normalize(\"%s\"): got error \"%s\", want \"%s\"", tc->in, why,
                     tc->want);
        if (strcmp(out, tc->want) != 0)
            fail_msg("domain_normalize(\"%s\"): got \"%s\", want \"%s\"", tc->in, out, tc->want);
        /* Idempotent. */
        char again[ADDRESS_DOMAIN_MAX_BYTES + 1];
        assert_int_equal(domain_normalize(out, again, sizeof(again), &why), 0);
        assert_string_equal(again, out);
    }
}

struct domain_bad_case {
    const char *in;
    const char *why;
};

static const struct domain_bad_case domain_bad_cases[] = {
    {"", "empty domain"},
    {".", "empty domain"},
    {"..", "empty label"},
    {"a..b", "empty label"},
    {".a", "empty label"},
    {"a..", "empty label"}, /* only ONE trailing dot goes */
    {"-a.b", "starts with a hyphen"},
    {"a.-b", "starts with a hyphen"},
    {"a-.b", "ends with a hyphen"},
    {"a.b-", "ends with a hyphen"},
    {"-", "starts with a hyphen"},
    {"a_b.c", "bad character"},
    {"a b.c", "bad character"},
    {"a.b ", "bad character"},
    {" a.b", "bad character"},
    {"exa@mple.org", "bad character"},
    {"[192.0.2.1]", "bad character"},
    {"example.org/", "bad character"},
    {"192.0.2.1", "all digits"},
    {"192.0.2.1.", "all digits"},
    {"example.123", "all digits"},
    {"1", "all digits"},
    {"a\tb.c", "control character"},
    {"example.org\n", "CR or LF"},
    {"example.org\r", "CR or LF"},
    {"ex\x7fmple.org", "control character"},
    {"b\xc3\xbc"
     "cher.example",
     "SMTPUTF8"},
};

static void test_domain_normalize_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(domain_bad_cases); i++) {
        const struct domain_bad_case *tc = &domain_bad_cases[i];
        char out[ADDRESS_DOMAIN_MAX_BYTES + 1];
        memset(out, 'x', sizeof(out));
        const char *why = NULL;
        if (domain_normalize(tc->in, out, sizeof(out), &why) == 0)
            fail_msg("domain_normalize(\"%s\"): got success \"%s\", want error \"%s\"",
                     show(tc->in, strlen(tc->in)), out, tc->why);
        if (why == NULL || strstr(why, tc->why) == NULL)
            fail_msg("domain_normalize(\"%s\"): got reason \"%s\", want one with \"%s\"",
                     show(tc->in, strlen(tc->in)), why ? why : "(null)", tc->why);
        assert_string_equal(out, "");
    }
    char out[16];
    assert_int_equal(domain_normalize(NULL, out, sizeof(out), NULL), -1);
    assert_int_equal(domain_normalize("example.org", NULL, 0, NULL), -1);
}

static void test_domain_normalize_limits(void **state)
{
    (void)state;
    char in[400];
    char out[ADDRESS_DOMAIN_MAX_BYTES + 1];
    const char *why = NULL;

    /* A 63-octet label is fine, 64 is not (RFC 1035 2.3.4). */
    repeat(in, 'a', 63);
    strcat(in, ".example");
    assert_int_equal(domain_normalize(in, out, sizeof(out), &why), 0);
    repeat(in, 'a', 64);
    strcat(in, ".example");
    assert_int_equal(domain_normalize(in, out, sizeof(out), &why), -1);
    assert_non_null(strstr(why, "label too long"));
    repeat(in, 'a', 64);
    assert_int_equal(domain_normalize(in, out, sizeof(out), &why), -1);

    /* 253 octets of text (four labels: 63+1+63+1+63+1+61) is the longest name. */
    repeat(in, 'a', 63);
    strcat(in, ".");
    memset(in + 64, 'b', 63);
    in[127] = '.';
    memset(in + 128, 'c', 63);
    in[191] = '.';
    memset(in + 192, 'd', 61);
    in[253] = '\0';
    assert_int_equal(strlen(in), 253);
    assert_int_equal(domain_normalize(in, out, sizeof(out), &why), 0);
    assert_int_equal(strlen(out), 253);
    strcat(in, "."); /* 254 with the trailing dot: still 253 of name */
    assert_int_equal(domain_normalize(in, out, sizeof(out), &why), 0);
    assert_int_equal(strlen(out), 253);
    in[253] = 'd'; /* 254 octets of name */
    in[254] = '\0';
    assert_int_equal(domain_normalize(in, out, sizeof(out), &why), -1);
    assert_non_null(strstr(why, "too long"));
    /* Much longer input is cut off without being read to its end and refused. */
    memset(in, 'a', sizeof(in) - 1);
    in[sizeof(in) - 1] = '\0';
    assert_int_equal(domain_normalize(in, out, sizeof(out), &why), -1);

    /* Output buffer too small. */
    char tiny[5];
    assert_int_equal(domain_normalize("example.org", tiny, sizeof(tiny), &why), -1);
    assert_string_equal(tiny, "");
    char exact[12];
    assert_int_equal(domain_normalize("Example.ORG.", exact, sizeof(exact), &why), 0);
    assert_string_equal(exact, "example.org");
}

/* ---- address_parse ----------------------------------------------------------------------- */

struct mailbox_ok_case {
    const char *in;
    size_t len;
    const char *local;
    const char *domain;
    bool quoted;
    bool literal;
};

static const struct mailbox_ok_case mailbox_ok_cases[] = {
    {IN("user@example.org"), "user", "example.org", false, false},
    {IN("User.Name@Example.ORG"), "User.Name", "example.org", false, false}, /* local kept */
    {IN("user@example.org."), "user", "example.org", false, false},
    {IN("user@localhost"), "user", "localhost", false, false},
    {IN("postmaster@example.org"), "postmaster", "example.org", false, false},
    {IN("a@b"), "a", "b", false, false},
    {IN("first.middle.last@example.org"), "first.middle.last", "example.org", false, false},
    {IN("a!#$%&'*+-/=?^_`{|}~z@example.org"), "a!#$%&'*+-/=?^_`{|}~z", "example.org", false, false},
    {IN("user+tag@example.org"), "user+tag", "example.org", false, false},
    /* Relay probes: legal syntax, parsed, not rewritten. */
    {IN("relaytest%" NMAP_DOMAIN "@[" SRVIP "]"), "relaytest%" NMAP_DOMAIN, "[" SRVIP "]", false,
     true},
    {IN("relaytest%" NMAP_DOMAIN "@" SRVNAME), "relaytest%" NMAP_DOMAIN, SRVNAME, false, false},
    {IN(NMAP_DOMAIN "!relaytest@[" SRVIP "]"), NMAP_DOMAIN "!relaytest", "[" SRVIP "]", false,
     true},
    {IN(NMAP_DOMAIN "!relaytest@" SRVNAME), NMAP_DOMAIN "!relaytest", SRVNAME, false, false},
    {IN("\"relaytest@" NMAP_DOMAIN "\"@[" SRVIP "]"), "\"relaytest@" NMAP_DOMAIN "\"",
     "[" SRVIP "]", true, true},
    {IN("\"relaytest%" NMAP_DOMAIN "\"@" SRVNAME), "\"relaytest%" NMAP_DOMAIN "\"", SRVNAME, true,
     false},
    {IN("\"a!b\"@example.org"), "\"a!b\"", "example.org", true, false},
    /* Quoted strings: spaces, escapes, specials, kept exactly as sent. */
    {IN("\"a b\"@example.org"), "\"a b\"", "example.org", true, false},
    {IN("\"user\"@example.org"), "\"user\"", "example.org", true, false},
    {IN("\"a\\\"b\"@example.org"), "\"a\\\"b\"", "example.org", true, false},
    {IN("\"a\\\\b\"@example.org"), "\"a\\\\b\"", "example.org", true, false},
    {IN("\"\\a\"@example.org"), "\"\\a\"", "example.org", true, false},
    {IN("\"\\ \"@example.org"), "\"\\ \"", "example.org", true, false},
    {IN("\"a..b.\"@example.org"), "\"a..b.\"", "example.org", true, false},
    {IN("\"<>()[]:;,@\"@example.org"), "\"<>()[]:;,@\"", "example.org", true, false},
    {IN("\"~\"@example.org"), "\"~\"", "example.org", true, false},
    /* Address literals, canonicalised. */
    {IN("user@[127.0.0.1]"), "user", "[127.0.0.1]", false, true},
    {IN("user@[0.0.0.0]"), "user", "[0.0.0.0]", false, true},
    {IN("user@[IPv6:2001:DB8::1]"), "user", "[IPv6:2001:db8::1]", false, true},
    {IN("user@[ipv6:::1]"), "user", "[IPv6:::1]", false, true},
    {IN("user@[IPV6:2001:db8:0:0:0:0:0:1]"), "user", "[IPv6:2001:db8::1]", false, true},
    {IN("user@[IPv6:::ffff:127.0.0.1]"), "user", "[127.0.0.1]", false, true},
    {IN("user@[IPv6:1::2:3:4:5:6:7]"), "user", "[IPv6:1:0:2:3:4:5:6:7]", false, true},
    {IN("user@[IPv6:::102:304]"), "user", "[IPv6:::1.2.3.4]", false, true},
    {IN("user@[IPv6:2001:db8::192.0.2.1]"), "user", "[IPv6:2001:db8::c000:201]", false, true},
};

static void check_address(const char *what, const char *in, size_t len, const struct address *a,
                          const char *local, const char *domain, bool quoted, bool literal)
{
    if (strcmp(a->local, local) != 0 || strcmp(a->domain, domain) != 0 ||
        a->local_is_quoted != quoted || a->domain_is_literal != literal)
        fail_msg("%s(\"%s\"): got local \"%s\" domain \"%s\" quoted %d literal %d, "
                 "want local \"%s\" domain \"%s\" quoted %d literal %d",
                 what, show(in, len), a->local, a->domain, a->local_is_quoted, a->domain_is_literal,
                 local, domain, quoted, literal);
}

static bool address_same(const struct address *a, const struct address *b)
{
    return strcmp(a->local, b->local) == 0 && strcmp(a->domain, b->domain) == 0 &&
           a->local_is_quoted == b->local_is_quoted && a->domain_is_literal == b->domain_is_literal;
}

static void test_address_parse_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(mailbox_ok_cases); i++) {
        const struct mailbox_ok_case *tc = &mailbox_ok_cases[i];
        struct address a;
        const char *why = "unset";
        if (parse_exact(tc->in, tc->len, &a, &why) != 0)
            fail_msg("address_parse(\"%s\"): got error \"%s\"", show(tc->in, tc->len), why);
        check_address("address_parse", tc->in, tc->len, &a, tc->local, tc->domain, tc->quoted,
                      tc->literal);

        /* Round trip: format, parse again, same result. */
        char text[ADDRESS_STRLEN];
        address_format(&a, text, sizeof(text));
        struct address again;
        if (parse_exact(text, strlen(text), &again, &why) != 0)
            fail_msg("address_parse(\"%s\") (formatted from \"%s\"): got error \"%s\"", text,
                     show(tc->in, tc->len), why);
        if (!address_same(&a, &again))
            fail_msg("round trip of \"%s\" through \"%s\" changed it", show(tc->in, tc->len), text);
    }
}

struct mailbox_bad_case {
    const char *in;
    size_t len;
    const char *why;
};

static const struct mailbox_bad_case mailbox_bad_cases[] = {
    {IN(""), "empty address"},
    {IN("user"), "missing '@'"},
    {IN("user.name"), "missing '@'"},
    {IN("@example.org"), "empty local part"},
    {IN("user@"), "empty domain"},
    {IN("user@."), "empty domain"},
    {IN("user@example.org@relay.example"), "more than one '@'"},
    {IN("user@@example.org"), "more than one '@'"},
    {IN("a..b@example.org"), "two dots"},
    {IN(".a@example.org"), "starts with a dot"},
    {IN("a.@example.org"), "ends with a dot"},
    {IN(".@example.org"), "starts with a dot"},
    {IN("a b@example.org"), "bad character in local part"},
    {IN(" user@example.org"), "bad character in local part"},
    {IN("user @example.org"), "bad character in local part"},
    {IN("us(er)@example.org"), "bad character in local part"},
    {IN("us\"er\"@example.org"), "bad character in local part"},
    {IN("us[er@example.org"), "bad character in local part"},
    {IN("<user@example.org>"), "bad character in local part"},
    {IN("user@example.org>"), "bad character in domain"},
    {IN("user@exa mple.org"), "bad character in domain"},
    {IN("user@example.org "), "bad character in domain"},
    {IN("user@example_.org"), "bad character in domain"},
    {IN("user@-example.org"), "starts with a hyphen"},
    {IN("user@example-.org"), "ends with a hyphen"},
    {IN("user@example..org"), "empty label"},
    {IN("user@example.org.."), "empty label"},
    {IN("user@.example.org"), "empty label"},
    {IN("user@192.0.2.1"), "all digits"},
    {IN("user@127.0.0.1"), "all digits"},
    /* nmap relay probes that are not mailboxes at all. */
    {IN("\"relaytest@" NMAP_DOMAIN "\""), "missing '@'"},
    {IN("\"relaytest%" NMAP_DOMAIN "\""), "missing '@'"},
    {IN(NMAP_DOMAIN "!relaytest"), "missing '@'"},
    {IN("relaytest@" NMAP_DOMAIN "@[" SRVIP "]"), "more than one '@'"},
    {IN("relaytest@" NMAP_DOMAIN "@" SRVNAME), "more than one '@'"},
    {IN("@" SRVNAME ":relaytest@" NMAP_DOMAIN), "empty local part"}, /* routes only in paths */
    /* Quoted strings. */
    {IN("\"unterminated@example.org"), "unterminated quoted"},
    {IN("\"a\\"), "unterminated quoted"},
    {IN("\"a\"b@example.org"), "junk after quoted"},
    {IN("\"a\".b@example.org"), "junk after quoted"},
    {IN("\"\"@example.org"), "empty local part"},
    {IN("\"a\tb\"@example.org"), "control character"},
    {IN("\"a\\\tb\"@example.org"), "control character"}, /* quoted-pair is %d32-126 only */
    {IN("\"a\\\x7f\"@example.org"), "control character"},
    {IN("\"a\rb\"@example.org"), "CR or LF"},
    {IN("\"a\\\nb\"@example.org"), "CR or LF"},
    {IN("\"a\0b\"@example.org"), "NUL"},
    {IN("\"j\xc3\xb6rg\"@example.org"), "SMTPUTF8"},
    /* Address literals. */
    {IN("user@[127.0.0.1"), "unterminated address literal"},
    {IN("user@[127.0.0.1]x"), "junk after address literal"},
    {IN("user@[127.0.0.1]."), "junk after address literal"},
    {IN("user@[127.0.0.1]]"), "junk after address literal"},
    {IN("user@[127.0.0.1]\r\n"), "CR or LF"},
    {IN("user@[]"), "bad IPv4 address literal"},
    {IN("user@[256.0.0.1]"), "bad IPv4 address literal"},
    {IN("user@[127.1]"), "bad IPv4 address literal"},
    {IN("user@[127.000.0.1]"), "bad IPv4 address literal"},
    {IN("user@[localhost]"), "bad IPv4 address literal"},
    {IN("user@[ 127.0.0.1]"), "bad character in address literal"},
    {IN("user@[[127.0.0.1]]"), "bad character in address literal"},
    {IN("user@[127.0.0.1\\]]"), "bad character in address literal"},
    {IN("user@[IPv6:1.2.3.4]"), "bad IPv6 address literal"},
    {IN("user@[IPv6:]"), "bad IPv6 address literal"},
    {IN("user@[IPv6:fe80::1%eth0]"), "bad IPv6 address literal"},
    {IN("user@[IPv6:1::2::3]"), "bad IPv6 address literal"},
    {IN("user@[::1]"), "general address literal"}, /* the "IPv6:" tag is required */
    {IN("user@[x-tag:stuff]"), "general address literal"},
    {IN("user@[IPv4:127.0.0.1]"), "general address literal"},
    {IN("user@[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:ffff]"), "bad address literal"},
    /* Octets that never belong in an address. */
    {IN("us\0er@example.org"), "NUL"},
    {IN("user@exam\0ple.org"), "NUL"},
    {IN("user@example.org\0"), "NUL"},
    {IN("user\r@example.org"), "CR or LF"},
    {IN("user@example.org\r\n"), "CR or LF"},
    {IN("user@exa\nmple.org"), "CR or LF"},
    {IN("user\t@example.org"), "control character"},
    {IN("user\x7f@example.org"), "control character"},
    {IN("user@example.org\x1b"), "control character"},
    {IN("j\xc3\xb6rg@example.org"), "SMTPUTF8"},
    {IN("user@b\xc3\xbc"
        "cher.example"),
     "SMTPUTF8"},
    {IN("user@[127.0.0.\xff]"), "SMTPUTF8"},
};

static void test_address_parse_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(mailbox_bad_cases); i++) {
        const struct mailbox_bad_case *tc = &mailbox_bad_cases[i];
        struct address a;
        memset(&a, 'x', sizeof(a));
        const char *why = NULL;
        if (parse_exact(tc->in, tc->len, &a, &why) == 0)
            fail_msg("address_parse(\"%s\"): got success (\"%s\" @ \"%s\"), want error \"%s\"",
                     show(tc->in, tc->len), a.local, a.domain, tc->why);
        if (why == NULL || strstr(why, tc->why) == NULL)
            fail_msg("address_parse(\"%s\"): got reason \"%s\", want one with \"%s\"",
                     show(tc->in, tc->len), why ? why : "(null)", tc->why);
        if (a.local[0] != '\0' || a.domain[0] != '\0' || a.local_is_quoted || a.domain_is_literal)
            fail_msg("address_parse(\"%s\"): output not cleared on error", show(tc->in, tc->len));
    }
    struct address a;
    assert_int_equal(address_parse(NULL, 0, &a, NULL), -1);
}

static void test_address_parse_respects_len(void **state)
{
    (void)state;
    struct address a;
    const char *why = NULL;
    /* Only the first len octets count, whatever follows in memory. */
    const char *s = "user@example.orgXYZ";
    assert_int_equal(parse_exact(s, 16, &a, &why), 0);
    assert_string_equal(a.domain, "example.org");
    assert_int_equal(parse_exact(s, 7, &a, &why), 0);
    assert_string_equal(a.domain, "ex");
    assert_int_equal(parse_exact(s, 5, &a, &why), -1);
    assert_string_equal(why, "empty domain");
    assert_int_equal(parse_exact(s, 4, &a, &why), -1);
    assert_string_equal(why, "missing '@'");
    assert_int_equal(parse_exact("\"quoted\"@x.y", 3, &a, &why), -1);
    assert_string_equal(why, "unterminated quoted local part");
    assert_int_equal(parse_exact("u@[127.0.0.1]", 9, &a, &why), -1);
    assert_string_equal(why, "unterminated address literal");
}

static void test_address_parse_limits(void **state)
{
    (void)state;
    char in[600];
    struct address a;
    const char *why = NULL;

    /* Local part: 64 octets (RFC 5321 4.5.3.1.1). */
    repeat(in, 'l', 64);
    strcat(in, "@example.org");
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), 0);
    assert_int_equal(strlen(a.local), 64);
    repeat(in, 'l', 65);
    strcat(in, "@example.org");
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), -1);
    assert_string_equal(why, "local part too long");

    /* Quoted: 64 octets of content, each escaped, fit; 65 do not. */
    in[0] = '"';
    for (size_t i = 0; i < 64; i++) {
        in[1 + 2 * i] = '\\';
        in[2 + 2 * i] = '"';
    }
    strcpy(in + 129, "\"@example.org");
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), 0);
    assert_int_equal(strlen(a.local), 130);
    assert_true(a.local_is_quoted);
    in[129] = '\\';
    in[130] = 'x';
    strcpy(in + 131, "\"@example.org");
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), -1);
    assert_string_equal(why, "local part too long");
    in[0] = '"';
    repeat(in + 1, 'q', 65);
    strcat(in, "\"@example.org");
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), -1);
    assert_string_equal(why, "local part too long");

    /* Whole mailbox: 254 octets (a 256-octet path less its brackets). */
    repeat(in, 'l', 64);
    strcat(in, "@");
    char *d = in + strlen(in);
    /* 189 octets of domain: 63 + 1 + 63 + 1 + 61. */
    memset(d, 'a', 63);
    d[63] = '.';
    memset(d + 64, 'b', 63);
    d[127] = '.';
    memset(d + 128, 'c', 61);
    d[189] = '\0';
    assert_int_equal(strlen(in), 254);
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), 0);
    strcat(in, "c");
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), -1);
    assert_string_equal(why, "address too long");

    /*
     * Domain: with the shortest local part the mailbox limit allows 252 octets, one less than a
     * domain name may have (so the 253 limit of domain_normalize is never the one met here).
     */
    strcpy(in, "u@");
    d = in + 2;
    for (int label = 0; label < 3; label++) {
        memset(d + label * 64, (char)('a' + label), 63);
        d[label * 64 + 63] = '.';
    }
    memset(d + 192, 'd', 60);
    d[252] = '\0';
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), 0);
    assert_int_equal(strlen(a.domain), 252);
    strcat(in, "d");
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), -1);
    assert_string_equal(why, "address too long");
    /* With a trailing dot the wire form is one octet longer than the stored one. */
    d[252] = '.';
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), -1);
    assert_string_equal(why, "address too long");
    d[251] = '.';
    d[252] = '\0';
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), 0);
    assert_int_equal(strlen(a.domain), 251);

    /* A 64-octet label. */
    strcpy(in, "u@");
    repeat(in + 2, 'a', 64);
    strcat(in, ".example");
    assert_int_equal(parse_exact(in, strlen(in), &a, &why), -1);
    assert_string_equal(why, "domain label too long");
}

/* domain_normalize_flags with UTF-8: U-labels become their A-label (IDNA 2008), so both
 * spellings are one domain; bad UTF-8 and what IDNA refuses stay refused. */
static void test_domain_normalize_utf8(void **state)
{
    (void)state;
    static const struct domain_ok_case ok[] = {
        {"b\xc3\xbc"
         "cher.example",
         "xn--bcher-kva.example"},
        {"B\xc3\x9c"
         "CHER.Example.",
         "xn--bcher-kva.example"},
        {"xn--bcher-kva.example", "xn--bcher-kva.example"},
        {"Example.ORG", "example.org"},
    };
    for (size_t i = 0; i < COUNT(ok); i++) {
        char out[ADDRESS_DOMAIN_MAX_BYTES + 1];
        const char *why = "unset";
        if (domain_normalize_flags(ok[i].in, ADDRESS_ALLOW_UTF8, out, sizeof(out), &why) != 0)
            fail_msg("case %zu: error \"%s\"", i, why);
        assert_string_equal(out, ok[i].want);
    }
    static const struct domain_bad_case bad[] = {
        {"b\xc3"
         "cher.example",
         "invalid UTF-8"},
        {"b\xc3\xbc"
         "_cher.example",
         "bad character"},
        {"b\xc3\xbc"
         "cher.123",
         "all digits"},
        {"b\xc3\xbc\n.example", "CR or LF"},
    };
    for (size_t i = 0; i < COUNT(bad); i++) {
        char out[ADDRESS_DOMAIN_MAX_BYTES + 1];
        const char *why = "unset";
        if (domain_normalize_flags(bad[i].in, ADDRESS_ALLOW_UTF8, out, sizeof(out), &why) == 0 ||
            strstr(why, bad[i].why) == NULL)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, why, bad[i].why);
        assert_string_equal(out, "");
    }
}

/* ---- UTF-8 addresses (RFC 6531 3.3) ------------------------------------------------------ */

struct utf8_case {
    const char *in; /* a path */
    size_t len;
    const char *want; /* address_format of the result, or NULL: refused */
    const char *why;  /* for a refusal: a substring of the reason */
};

static const struct utf8_case utf8_cases[] = {
    {IN("<j\xc3\xb6rg@example.org>"), "j\xc3\xb6rg@example.org", NULL},
    {IN("<\"j\xc3\xb6 rg\"@example.org>"), "\"j\xc3\xb6 rg\"@example.org", NULL},
    {IN("<user@b\xc3\xbc"
        "cher.example>"),
     "user@xn--bcher-kva.example", NULL},
    {IN("<user@B\xc3\x9c"
        "CHER.example>"),
     "user@xn--bcher-kva.example", NULL},
    {IN("<user@fa\xc3\x9f.example>"), "user@xn--fa-hia.example", NULL},
    {IN("<@r\xc3\xa9lai.example:user@example.org>"), "user@example.org", NULL},
    {IN("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>"),
     "\xe7\x94\xa8\xe6\x88\xb7@xn--fsqu00a.xn--4rr70v", NULL},
    {IN("<\xf0\x9f\x98\x80@example.org>"), "\xf0\x9f\x98\x80@example.org", NULL},
    /* Strict UTF-8: overlong, surrogate, above U+10FFFF, C1, stray and truncated octets. */
    {IN("<a\xc0\xaf@example.org>"), NULL, "invalid UTF-8"},
    {IN("<a\xe0\x80\xaf@example.org>"), NULL, "invalid UTF-8"},
    {IN("<a\xed\xa0\x80@example.org>"), NULL, "invalid UTF-8"},
    {IN("<a\xf4\x90\x80\x80@example.org>"), NULL, "invalid UTF-8"},
    {IN("<a\xc2\x85@example.org>"), NULL, "invalid UTF-8"},
    {IN("<a\x80@example.org>"), NULL, "invalid UTF-8"},
    {IN("<a\xc3@example.org>"), NULL, "invalid UTF-8"},
    {IN("<user@b\xc3\xbc\xc0\xaf"
        "cher.example>"),
     NULL, "invalid UTF-8"},
    {IN("<\"a\\\xc3\xb6\"@example.org>"), NULL, "SMTPUTF8"},
    /* Controls stay refused, UTF-8 or not. */
    {IN("<j\xc3\xb6rg\r@example.org>"), NULL, "CR or LF"},
    {IN("<user@b\xc3\xbc\x01"
        "cher.example>"),
     NULL, "control character"},
    /* The tricks: still one '@', still no bare IP, still no junk. */
    {IN("<j\xc3\xb6rg@b\xc3\xbc"
        "cher.example@other.example>"),
     NULL, "more than one '@'"},
    {IN("<user@\xc3\xbc.123>"), NULL, "all digits"},
    /* 64 octets of local part, counted in octets not characters (33 x two octets). */
    {IN("<\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6"
        "\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6"
        "\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6\xc3\xb6"
        "\xc3\xb6\xc3\xb6\xc3\xb6@example.org>"),
     NULL, "local part too long"},
};

static void test_address_utf8(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(utf8_cases); i++) {
        const struct utf8_case *tc = &utf8_cases[i];
        struct address a;
        enum address_path_kind kind;
        size_t consumed = 0;
        const char *why = "unset";
        int rc = address_parse_path_flags(tc->in, tc->len, ADDRESS_ALLOW_UTF8, &a, &kind, &consumed,
                                          &why);
        if (tc->want == NULL) {
            if (rc == 0 || strstr(why, tc->why) == NULL)
                fail_msg("case %zu: rc %d why \"%s\", want \"%s\"", i, rc, why, tc->why);
            continue;
        }
        if (rc != 0)
            fail_msg("case %zu: error \"%s\"", i, why);
        char text[ADDRESS_STRLEN];
        address_format(&a, text, sizeof(text));
        if (strcmp(text, tc->want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, text, tc->want);
        assert_int_equal(consumed, tc->len);
        /* Without the flag the same path is refused as needing SMTPUTF8 (RFC 6531 3.7.4.1). */
        assert_int_equal(address_parse_path(tc->in, tc->len, &a, &kind, &consumed, &why), -1);
        assert_ptr_equal(why, address_why_needs_smtputf8);
        /* What address_format wrote parses back with the flag. */
        char path[ADDRESS_STRLEN + 2];
        snprintf(path, sizeof(path), "<%s>", text);
        assert_int_equal(address_parse_path_flags(path, strlen(path), ADDRESS_ALLOW_UTF8, &a, &kind,
                                                  &consumed, &why),
                         0);
    }
}

/* The users-table key: ASCII letters fold, UTF-8 stays, the domain is its A-label, so the
 * U-label and A-label spellings of one mailbox give one key. */
static void test_address_user_key_utf8(void **state)
{
    (void)state;
    static const char *const spellings[] = {
        "<J\xc3\x96rg@B\xc3\xbc"
        "cher.Example>",
        "<j\xc3\x96rg@xn--bcher-kva.example>",
        "<J\xc3\x96RG@XN--BCHER-KVA.EXAMPLE.>",
    };
    for (size_t i = 0; i < COUNT(spellings); i++) {
        struct address a;
        enum address_path_kind kind;
        size_t consumed = 0;
        const char *why = NULL;
        assert_int_equal(address_parse_path_flags(spellings[i], strlen(spellings[i]),
                                                  ADDRESS_ALLOW_UTF8, &a, &kind, &consumed, &why),
                         0);
        char key[ADDRESS_STRLEN];
        assert_int_equal(address_user_key(&a, key, sizeof(key)), 0);
        /* U+00D6 is not folded to U+00F6: only ASCII case is the server's to ignore. */
        assert_string_equal(key, "j\xc3\x96rg@xn--bcher-kva.example");
    }
}

/* ---- address_normalize ------------------------------------------------------------------- */

static const struct domain_ok_case normalize_ok_cases[] = {
    {"user@example.org", "user@example.org"},
    {"User@Example.ORG", "user@example.org"},
    {"USER@EXAMPLE.ORG.", "user@example.org"},
    {"First.Last+Tag@Mail.Example.ORG", "first.last+tag@mail.example.org"},
    {"o'brien@example.org", "o'brien@example.org"},
    {"postmaster@localhost", "postmaster@localhost"},
    /* UTF-8 local part kept as sent except ASCII case; the domain becomes its A-label. */
    {"J\xc3\xb6rg@B\xc3\xbc"
     "cher.example",
     "j\xc3\xb6rg@xn--bcher-kva.example"},
    {"\xc3\x96mer@xn--bcher-kva.example", "\xc3\x96mer@xn--bcher-kva.example"},
};

static void test_address_normalize_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(normalize_ok_cases); i++) {
        const struct domain_ok_case *tc = &normalize_ok_cases[i];
        char out[ADDRESS_STRLEN];
        const char *why = "unset";
        if (address_normalize(tc->in, out, sizeof(out), &why) != 0)
            fail_msg("address_normalize(\"%s\"): got error \"%s\"", tc->in, why);
        if (strcmp(out, tc->want) != 0)
            fail_msg("address_normalize(\"%s\"): got \"%s\", want \"%s\"", tc->in, out, tc->want);
        char again[ADDRESS_STRLEN];
        assert_int_equal(address_normalize(out, again, sizeof(again), &why), 0);
        assert_string_equal(again, out);
    }
}

static const struct domain_bad_case normalize_bad_cases[] = {
    {"", "empty address"},
    {"user", "missing '@'"},
    {"@example.org", "empty local part"},
    {"\"user\"@example.org", "quoted local part"},
    {"\"a b\"@example.org", "quoted local part"},
    {"user@[127.0.0.1]", "address literal"},
    {"user@[IPv6:::1]", "address literal"},
    {"user@192.0.2.1", "all digits"},
    {"user@example.org@other.example", "more than one '@'"},
    {"user@example.org ", "bad character in domain"},
    {" user@example.org", "bad character in local part"},
    {"user@example.org\n", "CR or LF"},
    {"j\xc3\xb6rg@example.org\xff", "invalid UTF-8"},
    {"<user@example.org>", "bad character in local part"},
};

static void test_address_normalize_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(normalize_bad_cases); i++) {
        const struct domain_bad_case *tc = &normalize_bad_cases[i];
        char out[ADDRESS_STRLEN];
        memset(out, 'x', sizeof(out));
        const char *why = NULL;
        if (address_normalize(tc->in, out, sizeof(out), &why) == 0)
            fail_msg("address_normalize(\"%s\"): got success \"%s\", want error \"%s\"",
                     show(tc->in, strlen(tc->in)), out, tc->why);
        if (why == NULL || strstr(why, tc->why) == NULL)
            fail_msg("address_normalize(\"%s\"): got reason \"%s\", want one with \"%s\"",
                     show(tc->in, strlen(tc->in)), why ? why : "(null)", tc->why);
        assert_string_equal(out, "");
    }
    char small[8];
    const char *why = NULL;
    assert_int_equal(address_normalize("user@example.org", small, sizeof(small), &why), -1);
    assert_non_null(strstr(why, "buffer"));
    assert_string_equal(small, "");
    char exact[17];
    assert_int_equal(address_normalize("User@Example.org", exact, sizeof(exact), &why), 0);
    assert_string_equal(exact, "user@example.org");
    assert_int_equal(address_normalize(NULL, exact, sizeof(exact), NULL), -1);
}

/* ---- address_parse_path ------------------------------------------------------------------ */

struct path_ok_case {
    const char *in;
    size_t len;
    enum address_path_kind kind;
    const char *local;
    const char *domain;
    bool quoted;
    bool literal;
    size_t consumed;
};

#define MBOX ADDRESS_PATH_MAILBOX

static const struct path_ok_case path_ok_cases[] = {
    {IN("<>"), ADDRESS_PATH_NULL, "", "", false, false, 2},
    {IN("<> SIZE=100"), ADDRESS_PATH_NULL, "", "", false, false, 2},
    {IN("<>>"), ADDRESS_PATH_NULL, "", "", false, false, 2}, /* the rest is the caller's */
    {IN("<Postmaster>"), ADDRESS_PATH_POSTMASTER, "Postmaster", "", false, false, 12},
    {IN("<POSTMASTER>"), ADDRESS_PATH_POSTMASTER, "POSTMASTER", "", false, false, 12},
    {IN("<postMaster> NOTIFY=NEVER"), ADDRESS_PATH_POSTMASTER, "postMaster", "", false, false, 12},
    {IN("<postmaster@example.org>"), MBOX, "postmaster", "example.org", false, false, 24},
    {IN("<user@example.org>"), MBOX, "user", "example.org", false, false, 18},
    {IN("<user@example.org> SIZE=100 BODY=8BITMIME"), MBOX, "user", "example.org", false, false,
     18},
    {IN("<user@example.org>x"), MBOX, "user", "example.org", false, false, 18},
    {IN("<User@EXAMPLE.Org.>"), MBOX, "User", "example.org", false, false, 19},
    {IN("<\"a>b\"@example.org>"), MBOX, "\"a>b\"", "example.org", true, false, 19},
    {IN("<\"a b\"@example.org> SIZE=1"), MBOX, "\"a b\"", "example.org", true, false, 19},
    {IN("<user@[IPv6:::1]>"), MBOX, "user", "[IPv6:::1]", false, true, 17},
    {IN("<user@[127.0.0.1]> SIZE=1"), MBOX, "user", "[127.0.0.1]", false, true, 18},
    /* Source routes: accepted, ignored (RFC 5321 4.1.2, appendix C). */
    {IN("<@relay.example:user@example.org>"), MBOX, "user", "example.org", false, false, 33},
    {IN("<@a.example,@b.example:user@example.org>"), MBOX, "user", "example.org", false, false, 40},
    {IN("<@[192.0.2.1]:user@example.org>"), MBOX, "user", "example.org", false, false, 31},
    {IN("<@[IPv6:2001:db8::1],@b.example.:user@[192.0.2.2]>"), MBOX, "user", "[192.0.2.2]", false,
     true, 50},
    /* Every form nmap's smtp-open-relay sends in MAIL FROM and RCPT TO that is a path. */
    {IN("<antispam@" NMAP_DOMAIN ">"), MBOX, "antispam", NMAP_DOMAIN, false, false, 26},
    {IN("<antispam@" SRVNAME ">"), MBOX, "antispam", SRVNAME, false, false, 28},
    {IN("<antispam@[" SRVIP "]>"), MBOX, "antispam", "[" SRVIP "]", false, true, 23},
    {IN("<relaytest@" NMAP_DOMAIN ">"), MBOX, "relaytest", NMAP_DOMAIN, false, false, 27},
    {IN("<relaytest%" NMAP_DOMAIN "@[" SRVIP "]>"), MBOX, "relaytest%" NMAP_DOMAIN, "[" SRVIP "]",
     false, true, 40},
    {IN("<relaytest%" NMAP_DOMAIN "@" SRVNAME ">"), MBOX, "relaytest%" NMAP_DOMAIN, SRVNAME, false,
     false, 45},
    {IN("<\"relaytest@" NMAP_DOMAIN "\"@[" SRVIP "]>"), MBOX, "\"relaytest@" NMAP_DOMAIN "\"",
     "[" SRVIP "]", true, true, 42},
    {IN("<@[" SRVIP "]:relaytest@" NMAP_DOMAIN ">"), MBOX, "relaytest", NMAP_DOMAIN, false, false,
     41},
    {IN("<@" SRVNAME ":relaytest@" NMAP_DOMAIN ">"), MBOX, "relaytest", NMAP_DOMAIN, false, false,
     46},
    {IN("<" NMAP_DOMAIN "!relaytest@[" SRVIP "]>"), MBOX, NMAP_DOMAIN "!relaytest", "[" SRVIP "]",
     false, true, 40},
    {IN("<" NMAP_DOMAIN "!relaytest@" SRVNAME ">"), MBOX, NMAP_DOMAIN "!relaytest", SRVNAME, false,
     false, 45},
};

static void test_address_parse_path_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(path_ok_cases); i++) {
        const struct path_ok_case *tc = &path_ok_cases[i];
        struct address a;
        enum address_path_kind kind = (enum address_path_kind) - 1;
        size_t consumed = 0;
        const char *why = "unset";
        if (parse_path_exact(tc->in, tc->len, &a, &kind, &consumed, &why) != 0)
            fail_msg("address_parse_path(\"%s\"): got error \"%s\"", show(tc->in, tc->len), why);
        if (kind != tc->kind || consumed != tc->consumed)
            fail_msg("address_parse_path(\"%s\"): got kind %d consumed %zu, want kind %d "
                     "consumed %zu",
                     show(tc->in, tc->len), kind, consumed, tc->kind, tc->consumed);
        check_address("address_parse_path", tc->in, tc->len, &a, tc->local, tc->domain, tc->quoted,
                      tc->literal);

        /* Round trip: "<" format ">" parses to the same kind and address, route dropped. */
        char text[ADDRESS_STRLEN];
        address_format(&a, text, sizeof(text));
        char wrapped[ADDRESS_STRLEN + 2];
        snprintf(wrapped, sizeof(wrapped), "<%s>", text);
        struct address again;
        enum address_path_kind kind_again;
        size_t consumed_again;
        if (parse_path_exact(wrapped, strlen(wrapped), &again, &kind_again, &consumed_again,
                             &why) != 0)
            fail_msg("address_parse_path(\"%s\") (formatted from \"%s\"): got error \"%s\"",
                     wrapped, show(tc->in, tc->len), why);
        if (kind_again != kind || consumed_again != strlen(wrapped) || !address_same(&a, &again))
            fail_msg("round trip of \"%s\" through \"%s\" changed it", show(tc->in, tc->len),
                     wrapped);
    }
}

static const struct mailbox_bad_case path_bad_cases[] = {
    {IN(""), "empty path"},
    {IN("user@example.org"), "must start with '<'"},
    {IN(" <user@example.org>"), "must start with '<'"},
    {IN(":<user@example.org>"), "must start with '<'"},
    {IN("<"), "missing mailbox"},
    {IN("<user@example.org"), "missing '>'"},
    {IN("<user@example.org SIZE=1"), "bad character in domain"},
    {IN("<user>"), "missing '@'"},
    {IN("<user@>"), "empty domain"},
    {IN("<@example.org>"), "source route without a mailbox"},
    {IN("<@relay.example:>"), "missing mailbox"},
    {IN("<@relay.example:"), "missing mailbox"},
    {IN("<@relay.example"), "missing '>'"},
    {IN("<@relay.example,user@example.org>"), "bad source route"},
    {IN("<@relay.example,>"), "bad source route"},
    {IN("<@:user@example.org>"), "empty domain"},
    {IN("<@relay_1.example:user@example.org>"), "bad character in domain"},
    {IN("<@relay.example;user@example.org>"), "bad character in domain"},
    {IN("<@[1.2.3]:user@example.org>"), "bad IPv4 address literal"},
    {IN("<relay.example:user@example.org>"), "bad character in local part"},
    {IN("<<user@example.org>>"), "bad character in local part"},
    {IN("< user@example.org>"), "bad character in local part"},
    {IN("<user@example.org >"), "bad character in domain"},
    {IN("<user @example.org>"), "bad character in local part"},
    {IN("<user@[127.0.0.1] >"), "junk after address literal"},
    {IN("<user@[127.0.0.1]"), "missing '>'"},
    {IN("<\"user>"), "unterminated quoted"},
    {IN("<\"\">"), "empty local part"},
    {IN("<@relay.example:@example.org>"), "empty local part"},
    {IN("<Postmaster@>"), "empty domain"},
    {IN("<Postmaster >"), "bad character in local part"},
    {IN("<Postmasters>"), "missing '@'"},
    {IN("<Postmaste>"), "missing '@'"},
    {IN("<Postmaster"), "missing '@'"},
    {IN("<@relay.example:Postmaster>"), "missing '@'"},
    {IN("<\"Postmaster\">"), "missing '@'"},
    /* nmap relay probes that are not valid paths. */
    {IN("<\"relaytest@" NMAP_DOMAIN "\">"), "missing '@'"},
    {IN("<\"relaytest%" NMAP_DOMAIN "\">"), "missing '@'"},
    {IN("<relaytest@" NMAP_DOMAIN "@[" SRVIP "]>"), "more than one '@'"},
    {IN("<relaytest@" NMAP_DOMAIN "@" SRVNAME ">"), "more than one '@'"},
    {IN("<" NMAP_DOMAIN "!relaytest>"), "missing '@'"},
    /* Octets that never belong. */
    {IN("<user@example.org\r\n>"), "CR or LF"},
    {IN("<user\r\n@example.org>"), "CR or LF"},
    {IN("<user@example.org\0>"), "NUL"},
    {IN("<\0>"), "NUL"},
    {IN("<@rel\0ay:user@example.org>"), "NUL"},
    {IN("<user@exa\tmple.org>"), "control character"},
    {IN("<j\xc3\xb6rg@example.org>"), "SMTPUTF8"},
    {IN("<user@b\xc3\xbc"
        "cher.example>"),
     "SMTPUTF8"},
};

static void test_address_parse_path_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(path_bad_cases); i++) {
        const struct mailbox_bad_case *tc = &path_bad_cases[i];
        struct address a;
        memset(&a, 'x', sizeof(a));
        enum address_path_kind kind = ADDRESS_PATH_MAILBOX;
        size_t consumed = 99;
        const char *why = NULL;
        if (parse_path_exact(tc->in, tc->len, &a, &kind, &consumed, &why) == 0)
            fail_msg("address_parse_path(\"%s\"): got success (\"%s\" @ \"%s\"), want error "
                     "\"%s\"",
                     show(tc->in, tc->len), a.local, a.domain, tc->why);
        if (why == NULL || strstr(why, tc->why) == NULL)
            fail_msg("address_parse_path(\"%s\"): got reason \"%s\", want one with \"%s\"",
                     show(tc->in, tc->len), why ? why : "(null)", tc->why);
        if (consumed != 0 || kind != ADDRESS_PATH_NULL || a.local[0] != '\0' || a.domain[0] != '\0')
            fail_msg("address_parse_path(\"%s\"): outputs not cleared on error",
                     show(tc->in, tc->len));
    }
}

static void test_address_parse_path_limits(void **state)
{
    (void)state;
    char in[1200];
    struct address a;
    enum address_path_kind kind;
    size_t consumed;
    const char *why = NULL;

    /* Exactly 256 octets: "<" + 64 + "@" + 189 + ">". */
    strcpy(in, "<");
    repeat(in + 1, 'l', 64);
    strcat(in, "@");
    char *d = in + strlen(in);
    memset(d, 'a', 63);
    d[63] = '.';
    memset(d + 64, 'b', 63);
    d[127] = '.';
    memset(d + 128, 'c', 61);
    strcpy(d + 189, ">");
    assert_int_equal(strlen(in), ADDRESS_PATH_MAX_BYTES);
    assert_int_equal(parse_path_exact(in, strlen(in), &a, &kind, &consumed, &why), 0);
    assert_int_equal(consumed, ADDRESS_PATH_MAX_BYTES);
    /* ...followed by parameters, which are the caller's. */
    strcat(in, " SIZE=1");
    assert_int_equal(parse_path_exact(in, strlen(in), &a, &kind, &consumed, &why), 0);
    assert_int_equal(consumed, ADDRESS_PATH_MAX_BYTES);
    /* One octet more is too long. */
    strcpy(d + 189, "c>");
    assert_int_equal(parse_path_exact(in, strlen(in), &a, &kind, &consumed, &why), -1);
    assert_string_equal(why, "path too long");

    /* A long source route counts toward the 256 octets and is cut off there. */
    strcpy(in, "<");
    for (int hop = 0; hop < 8; hop++) {
        strcat(in, hop == 0 ? "@" : ",@");
        size_t n = strlen(in);
        repeat(in + n, (char)('a' + hop), 60);
        strcat(in, ".example");
    }
    strcat(in, ":user@example.org>");
    assert_true(strlen(in) > ADDRESS_PATH_MAX_BYTES);
    assert_int_equal(parse_path_exact(in, strlen(in), &a, &kind, &consumed, &why), -1);
    assert_string_equal(why, "path too long");
    assert_int_equal(consumed, 0);

    /* No '>' within 256 octets of a long local part: too long rather than a syntax error. */
    strcpy(in, "<");
    repeat(in + 1, 'l', 1000);
    assert_int_equal(parse_path_exact(in, strlen(in), &a, &kind, &consumed, &why), -1);
    assert_string_equal(why, "local part too long");

    /* A short path with a long tail of parameters is fine. */
    strcpy(in, "<a@b.example> ");
    size_t n = strlen(in);
    repeat(in + n, 'P', 1000);
    assert_int_equal(parse_path_exact(in, strlen(in), &a, &kind, &consumed, &why), 0);
    assert_int_equal(consumed, 13);
}

/* ---- address_format and address_literal_ip ----------------------------------------------- */

static void test_address_format(void **state)
{
    (void)state;
    struct address a;
    enum address_path_kind kind;
    size_t consumed;
    const char *why = NULL;
    char text[ADDRESS_STRLEN];

    assert_int_equal(parse_path_exact(IN("<>"), &a, &kind, &consumed, &why), 0);
    memset(text, 'x', sizeof(text));
    address_format(&a, text, sizeof(text));
    assert_string_equal(text, "");

    assert_int_equal(parse_path_exact(IN("<PostMaster>"), &a, &kind, &consumed, &why), 0);
    address_format(&a, text, sizeof(text));
    assert_string_equal(text, "PostMaster");

    assert_int_equal(parse_exact(IN("\"a b\"@Example.ORG"), &a, &why), 0);
    address_format(&a, text, sizeof(text));
    assert_string_equal(text, "\"a b\"@example.org");

    assert_int_equal(parse_exact(IN("x@[IPv6:2001:DB8::1]"), &a, &why), 0);
    address_format(&a, text, sizeof(text));
    assert_string_equal(text, "x@[IPv6:2001:db8::1]");

    /* A short buffer truncates and stays terminated. */
    char small[6];
    address_format(&a, small, sizeof(small));
    assert_string_equal(small, "x@[IP");
}

static void test_address_literal_ip(void **state)
{
    (void)state;
    struct address a;
    struct ip_addr ip;
    char text[INET6_ADDRSTRLEN];
    const char *why = NULL;

    assert_int_equal(parse_exact(IN("u@[192.0.2.1]"), &a, &why), 0);
    assert_int_equal(address_literal_ip(&a, &ip), 0);
    ip_format(&ip, text, sizeof(text));
    assert_int_equal(ip.family, AF_INET);
    assert_string_equal(text, "192.0.2.1");

    assert_int_equal(parse_exact(IN("u@[IPv6:2001:DB8::1]"), &a, &why), 0);
    assert_int_equal(address_literal_ip(&a, &ip), 0);
    ip_format(&ip, text, sizeof(text));
    assert_int_equal(ip.family, AF_INET6);
    assert_string_equal(text, "2001:db8::1");

    /* A mapped literal is the IPv4 address, like a mapped client address. */
    assert_int_equal(parse_exact(IN("u@[IPv6:::ffff:192.0.2.1]"), &a, &why), 0);
    assert_int_equal(address_literal_ip(&a, &ip), 0);
    struct ip_addr want;
    assert_int_equal(ip_parse("192.0.2.1", &want), 0);
    assert_true(ip_equal(&ip, &want));

    assert_int_equal(parse_exact(IN("u@example.org"), &a, &why), 0);
    assert_int_equal(address_literal_ip(&a, &ip), -1);
    assert_int_equal(ip.family, 0);
}

/* ---- address_user_key: the one users-table key ------------------------------------------- */

struct user_key_case {
    const char *in; /* a path, as MAIL FROM and RCPT TO give it */
    size_t len;
    const char *want; /* NULL: never a user */
};

static const struct user_key_case user_key_cases[] = {
    {IN("<alice@example.org>"), "alice@example.org"},
    /* Local part and domain both fold to ASCII lower case, whatever case was sent. */
    {IN("<Alice.Smith@Example.ORG>"), "alice.smith@example.org"},
    {IN("<ALICE@EXAMPLE.ORG.>"), "alice@example.org"},
    {IN("<@relay.example:Bob@Example.org>"), "bob@example.org"},
    /* Other atext is kept as it is: only A-Z fold. */
    {IN("<Bob+Tag_X{1}@example.org>"), "bob+tag_x{1}@example.org"},
    {IN("<user%Other.Example@example.org>"), "user%other.example@example.org"},
    {IN("<postmaster@Example.org>"), "postmaster@example.org"},
    /* A quoted local part is never a user, even when its content is a plain Dot-string. */
    {IN("<\"alice\"@example.org>"), NULL},
    {IN("<\"Alice\"@example.org>"), NULL},
    {IN("<\"alice@remote.example\"@example.org>"), NULL},
    {IN("<\"A B\"@Example.org>"), NULL},
    /* No domain of its own, or a literal: never a user either. */
    {IN("<alice@[192.0.2.1]>"), NULL},
    {IN("<Alice@[IPv6:2001:db8::1]>"), NULL},
    {IN("<Postmaster>"), NULL},
    {IN("<>"), NULL},
};

static void test_address_user_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(user_key_cases); i++) {
        const struct user_key_case *tc = &user_key_cases[i];
        struct address a;
        enum address_path_kind kind;
        size_t consumed;
        const char *why = NULL;
        char *copy = exact_copy(tc->in, tc->len);
        int rc = address_parse_path(copy, tc->len, &a, &kind, &consumed, &why);
        free(copy);
        if (rc != 0)
            fail_msg("%s: does not parse (%s)", show(tc->in, tc->len), why);
        char key[ADDRESS_STRLEN] = "junk";
        rc = address_user_key(&a, key, sizeof(key));
        if (tc->want == NULL) {
            if (rc != -1 || key[0] != '\0')
                fail_msg("%s: got key \"%s\", want none", show(tc->in, tc->len), key);
            continue;
        }
        if (rc != 0 || strcmp(key, tc->want) != 0)
            fail_msg("%s: got %d \"%s\", want \"%s\"", show(tc->in, tc->len), rc, key, tc->want);
        /* The CLI creates users through address_normalize: the same key, so lookups find them. */
        char formatted[ADDRESS_STRLEN], normalized[ADDRESS_STRLEN];
        address_format(&a, formatted, sizeof(formatted));
        assert_int_equal(address_normalize(formatted, normalized, sizeof(normalized), &why), 0);
        assert_string_equal(normalized, key);
    }
    /* Too small a buffer: no key rather than a cut one; "a@b.c" needs 6 octets. */
    struct address a;
    const char *why = NULL;
    assert_int_equal(parse_exact(IN("A@B.c"), &a, &why), 0);
    char small[5] = "junk";
    assert_int_equal(address_user_key(&a, small, sizeof(small)), -1);
    assert_string_equal(small, "");
    char exact[6];
    assert_int_equal(address_user_key(&a, exact, sizeof(exact)), 0);
    assert_string_equal(exact, "a@b.c");
    assert_int_equal(address_user_key(&a, NULL, 0), -1);
}

/* ---- domain_is_ip_literal and domain_is_hostname ----------------------------------------- */

static void test_domain_is_ip_literal(void **state)
{
    (void)state;
    static const struct {
        const char *host;
        bool want;
    } cases[] = {
        {"192.0.2.1", true},
        {"2001:db8::1", true},
        {"::ffff:192.0.2.1", true},
        {"[192.0.2.1]", true},
        {"[IPv6:2001:db8::1]", true},
        {"[ipv6:::1]", true},
        {"mail.example.org", false},
        {"localhost", false},
        {"192.0.2", false},
        {"192.0.2.1.example", false},
        {"1.2.3.4 ", false},
        {"[192.0.2.1", false},
        {"[192.0.2.1]x", false},
        {"[mail.example.org]", false},
        {"[IPv6:192.0.2.1]", false},
        {"[tag:anything]", false},
        {"[]", false},
        {"", false},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        if (domain_is_ip_literal(cases[i].host) != cases[i].want)
            fail_msg("domain_is_ip_literal(\"%s\"): got %d", cases[i].host, !cases[i].want);
    }
    assert_false(domain_is_ip_literal(NULL));
}

static void test_domain_is_hostname(void **state)
{
    (void)state;
    char label63[64], label64[65], long253[254], long254[255];
    memset(label63, 'a', 63);
    label63[63] = '\0';
    memset(label64, 'a', 64);
    label64[64] = '\0';
    /* 63 + "." + 63 + "." + 63 + "." + 61 = 253 octets. */
    snprintf(long253, sizeof(long253), "%s.%s.%s.%.61s", label63, label63, label63, label63);
    snprintf(long254, sizeof(long254), "%s.%s.%s.%.62s", label63, label63, label63, label63);
    assert_int_equal(strlen(long253), 253);
    assert_int_equal(strlen(long254), 254);
    static const struct {
        const char *host;
        bool want;
    } cases[] = {
        {"mail.example.org", true},
        {"Mail.Example.ORG", true},
        {"localhost", true},
        {"3com.example", true}, /* RFC 1123 2.1: a label may start with a digit */
        {"a-b.example", true},
        {"x", true},
        {"mail.example.org.", false}, /* written without the root's dot */
        {"", false},
        {".", false},
        {".example.org", false},
        {"a..example", false},
        {"-a.example", false},
        {"a-.example", false},
        {"a_b.example", false},
        {"a b.example", false},
        {"192.0.2.1", false}, /* an IP address is not a host name */
        {"example.123", false},
        {"[192.0.2.1]", false},
        {"caf\xc3\xa9.example", false},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        if (domain_is_hostname(cases[i].host) != cases[i].want)
            fail_msg("domain_is_hostname(\"%s\"): got %d", cases[i].host, !cases[i].want);
        /* The same rule as domain_normalize, but for the trailing dot. */
        char out[ADDRESS_DOMAIN_MAX_BYTES + 1];
        size_t n = strlen(cases[i].host);
        bool dotted = n > 0 && cases[i].host[n - 1] == '.';
        if (!dotted)
            assert_int_equal(domain_normalize(cases[i].host, out, sizeof(out), NULL) == 0,
                             cases[i].want);
    }
    assert_true(domain_is_hostname(label63));
    assert_false(domain_is_hostname(label64));
    assert_true(domain_is_hostname(long253));
    assert_false(domain_is_hostname(long254));
    assert_false(domain_is_hostname(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_normalize_ok),
        cmocka_unit_test(test_domain_normalize_bad),
        cmocka_unit_test(test_domain_normalize_limits),
        cmocka_unit_test(test_address_parse_ok),
        cmocka_unit_test(test_address_parse_bad),
        cmocka_unit_test(test_address_parse_respects_len),
        cmocka_unit_test(test_address_parse_limits),
        cmocka_unit_test(test_domain_normalize_utf8),
        cmocka_unit_test(test_address_utf8),
        cmocka_unit_test(test_address_user_key_utf8),
        cmocka_unit_test(test_address_normalize_ok),
        cmocka_unit_test(test_address_normalize_bad),
        cmocka_unit_test(test_address_parse_path_ok),
        cmocka_unit_test(test_address_parse_path_bad),
        cmocka_unit_test(test_address_parse_path_limits),
        cmocka_unit_test(test_address_format),
        cmocka_unit_test(test_address_literal_ip),
        cmocka_unit_test(test_address_user_key),
        cmocka_unit_test(test_domain_is_ip_literal),
        cmocka_unit_test(test_domain_is_hostname),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
