/*
 * fuzz_smtp_parse.c - libFuzzer target for common/pure/smtp_parse.c: the MAIL/RCPT argument parser,
 * the ESMTP parameter parsers and the HELO sanitiser, fed the text a client can send (one
 * NUL-terminated command argument, as conn.c hands it over: no CR, LF or NUL inside).
 *
 * Checks: nothing crashes or reads past the string (ASan); a parsed path's params point inside
 * the input; a parsed mailbox formats and parses again to the same address; the sanitised HELO
 * holds only the allowed characters and fits its buffer. Violations trap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/address.h"
#include "common/pure/smtp_parse.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static void check_path(const char *text, const char *keyword)
{
    struct address a;
    enum address_path_kind kind;
    const char *params = NULL, *why = NULL;
    if (smtp_parse_path_arg(text, keyword, &a, &kind, &params, &why) != SMTP_PARSE_OK)
        return;
    CHECK(params != NULL && params >= text && params <= text + strlen(text));
    struct smtp_mail_params mp;
    if (smtp_parse_mail_params(params, &mp, &why) == SMTP_PARSE_OK) {
        /* What is kept is what RFC 3461 4.4 allows, and it is passed on verbatim. */
        CHECK(strlen(mp.envid) <= SMTP_DSN_ENVID_MAX_BYTES);
        CHECK(smtp_xtext_is_valid(mp.envid, strlen(mp.envid)));
        char decoded[SMTP_DSN_ENVID_MAX_BYTES + 1];
        CHECK(smtp_xtext_decode(mp.envid, decoded, sizeof(decoded)) >= 0);
    }
    struct smtp_rcpt_params rp;
    if (smtp_parse_rcpt_params(params, &rp, &why) == SMTP_PARSE_OK) {
        CHECK(strlen(rp.orcpt) <= SMTP_DSN_ORCPT_MAX_BYTES);
        /* NEVER stands alone (RFC 3461 4.1). */
        CHECK((rp.notify & SMTP_NOTIFY_NEVER) == 0 || rp.notify == SMTP_NOTIFY_NEVER);
        CHECK(rp.orcpt[0] == '\0' || strchr(rp.orcpt, ';') != NULL);
    }
    if (kind != ADDRESS_PATH_MAILBOX)
        return;
    char formatted[ADDRESS_STRLEN + 2];
    address_format(&a, formatted, sizeof(formatted));
    struct address again;
    /* The path parser reads UTF-8 whether or not the client said SMTPUTF8 (the session decides
     * afterwards), so the round trip must allow it too. */
    CHECK(address_parse_flags(formatted, strlen(formatted), ADDRESS_ALLOW_UTF8, &again, &why) == 0);
    CHECK(strcmp(again.local, a.local) == 0 && strcmp(again.domain, a.domain) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    /* conn.c never hands over a line holding NUL, CR or LF. */
    size_t n = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] != 0 && data[i] != '\r' && data[i] != '\n')
            text[n++] = (char)data[i];
    }
    text[n] = '\0';
    check_path(text, "FROM:");
    check_path(text, "TO:");

    char helo[ADDRESS_DOMAIN_MAX_BYTES + 1];
    smtp_helo_sanitize(text, helo, sizeof(helo));
    size_t hlen = strlen(helo);
    CHECK(hlen < sizeof(helo));
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)helo[i];
        CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(".-_:[]?", c) != NULL);
    }
    free(text);
    return 0;
}
