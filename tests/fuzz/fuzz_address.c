/*
 * fuzz_address.c - libFuzzer target for common/pure/address.c.
 *
 * Feeds arbitrary bytes to address_parse_path and address_parse, with and without
 * ADDRESS_ALLOW_UTF8, from a malloc'd buffer of exactly the input's size with no NUL after it, so
 * that ASan reports any read past len. On success it checks the contract: a path ends in '>'
 * within the input and within 256 octets, what address_format writes parses again (inside "<"
 * ">" for paths) to the same result, the domain is ASCII (an A-label, never a U-label), the local
 * part is strictly valid UTF-8, and without the flag nothing 8-bit got through.
 * domain_normalize and address_normalize, which take C strings, get a NUL-terminated copy and
 * must be idempotent. Any broken property aborts, which libFuzzer reports as a crash.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/pure/address.h"
#include "common/pure/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same(const struct address *a, const struct address *b)
{
    return strcmp(a->local, b->local) == 0 && strcmp(a->domain, b->domain) == 0 &&
           a->local_is_quoted == b->local_is_quoted && a->domain_is_literal == b->domain_is_literal;
}

/* The UTF-8 contract of a parsed address (see the head comment). */
static void check_utf8(const struct address *a, unsigned flags)
{
    size_t nl = strlen(a->local), nd = strlen(a->domain);
    if (utf8_has_8bit(a->domain, nd) || !utf8_valid(a->local, nl))
        abort();
    if (flags == 0 && (a->is_utf8 || utf8_has_8bit(a->local, nl)))
        abort();
    if (utf8_has_8bit(a->local, nl) && !a->is_utf8)
        abort();
}

/* Parses s (copied to an exact-size buffer) as a mailbox. */
static int parse_exact(const char *s, size_t len, unsigned flags, struct address *out,
                       const char **why)
{
    char *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, s, len);
    int rc = address_parse_flags(copy, len, flags, out, why);
    free(copy);
    return rc;
}

static void check_mailbox_round_trip(const struct address *a, unsigned flags)
{
    char text[ADDRESS_STRLEN];
    address_format(a, text, sizeof(text));
    struct address again;
    const char *why = NULL;
    if (parse_exact(text, strlen(text), flags, &again, &why) != 0 || !same(a, &again)) {
        fprintf(stderr, "mailbox round trip failed for \"%s\": %s\n", text, why ? why : "differs");
        abort();
    }
}

static void fuzz_path(const char *buf, size_t size, unsigned flags)
{
    struct address a;
    enum address_path_kind kind;
    size_t consumed;
    const char *why = NULL;
    if (address_parse_path_flags(buf, size, flags, &a, &kind, &consumed, &why) != 0) {
        if (why == NULL || consumed != 0 || a.local[0] != '\0' || a.domain[0] != '\0')
            abort();
        return;
    }
    if (consumed < 2 || consumed > size || consumed > ADDRESS_PATH_MAX_BYTES || buf[0] != '<' ||
        buf[consumed - 1] != '>')
        abort();
    if (kind == ADDRESS_PATH_NULL && (a.local[0] != '\0' || a.domain[0] != '\0'))
        abort();
    if (kind == ADDRESS_PATH_POSTMASTER &&
        (strcasecmp(a.local, "postmaster") != 0 || a.domain[0] != '\0'))
        abort();
    if (kind == ADDRESS_PATH_MAILBOX && (a.local[0] == '\0' || a.domain[0] == '\0'))
        abort();
    check_utf8(&a, flags);

    char text[ADDRESS_STRLEN];
    address_format(&a, text, sizeof(text));
    char wrapped[ADDRESS_STRLEN + 2];
    int n = snprintf(wrapped, sizeof(wrapped), "<%s>", text);
    if (n < 0 || (size_t)n >= sizeof(wrapped))
        abort();
    char *copy = malloc((size_t)n);
    if (copy == NULL)
        abort();
    memcpy(copy, wrapped, (size_t)n);
    struct address again;
    enum address_path_kind kind_again;
    size_t consumed_again;
    int rc = address_parse_path_flags(copy, (size_t)n, flags, &again, &kind_again, &consumed_again,
                                      &why);
    free(copy);
    if (rc != 0 || kind_again != kind || consumed_again != (size_t)n || !same(&a, &again)) {
        fprintf(stderr, "path round trip failed for \"%s\": %s\n", wrapped,
                rc != 0 ? why : "differs");
        abort();
    }
    if (kind == ADDRESS_PATH_MAILBOX) {
        check_mailbox_round_trip(&a, flags);
        struct ip_addr ip;
        if ((address_literal_ip(&a, &ip) == 0) != a.domain_is_literal)
            abort();
    }
}

static void fuzz_mailbox(const char *buf, size_t size, unsigned flags)
{
    struct address a;
    const char *why = NULL;
    if (address_parse_flags(buf, size, flags, &a, &why) != 0) {
        if (why == NULL || a.local[0] != '\0' || a.domain[0] != '\0')
            abort();
        return;
    }
    if (a.local[0] == '\0' || a.domain[0] == '\0')
        abort();
    check_utf8(&a, flags);
    check_mailbox_round_trip(&a, flags);
}

static void fuzz_c_string_functions(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';

    char out[ADDRESS_STRLEN];
    char again[ADDRESS_STRLEN];
    const char *why = NULL;
    if (domain_normalize(s, out, sizeof(out), &why) == 0) {
        if (domain_normalize(out, again, sizeof(again), &why) != 0 || strcmp(out, again) != 0)
            abort();
    }
    if (address_normalize(s, out, sizeof(out), &why) == 0) {
        if (address_normalize(out, again, sizeof(again), &why) != 0 || strcmp(out, again) != 0)
            abort();
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly size bytes, no terminator: an over-read is a heap-buffer-overflow under ASan. */
    char *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    for (unsigned flags = 0; flags <= ADDRESS_ALLOW_UTF8; flags += ADDRESS_ALLOW_UTF8) {
        fuzz_path(buf, size, flags);
        fuzz_mailbox(buf, size, flags);
    }
    /* The same bytes as a path body: most inputs do not start with '<'. */
    if (size > 0 && size < 512) {
        char *wrapped = malloc(size + 1);
        if (wrapped != NULL) {
            wrapped[0] = '<';
            memcpy(wrapped + 1, data, size);
            fuzz_path(wrapped, size + 1, 0);
            fuzz_path(wrapped, size + 1, ADDRESS_ALLOW_UTF8);
            free(wrapped);
        }
    }
    free(buf);
    fuzz_c_string_functions(data, size);
    return 0;
}
