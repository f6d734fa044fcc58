/*
 * fuzz_smtp_reply.c - libFuzzer target for common/pure/smtp_reply.c: what a remote SMTP server
 * sends the outbound client.
 *
 * Input layout: byte 0 picks the mode (bit 0: EHLO lines instead of reply lines), the rest is
 * split at LF into lines, each copied into a heap buffer of exactly its length with no NUL after
 * it, so ASan reports any read past the line. Reply lines go to smtp_reply_feed, restarting
 * after each complete reply; each complete reply's text goes to smtp_reply_enhanced. EHLO lines
 * go to smtp_ehlo_parse_line.
 *
 * Checked: a refused line leaves the reply untouched; an accepted one is what RFC 5321 4.2 calls
 * a reply line, MORE exactly for "NNN-"; the code is the first line's and stays in 200..599; the
 * kept text is NUL-ended within its buffer and starts with the first line as received. The
 * enhanced code is a well-formed RFC 3463 code whose class (2, 4 or 5) follows the reply code.
 * EHLO: the keywords the client relies on are recognised in any case, and a SIZE argument of
 * plain digits is read as its value. Violations trap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/pure/smtp_reply.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* Many lines add little: a reply's text is capped at SMTP_REPLY_TEXT_MAX_BYTES anyway. */
#define MAX_LINES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "c.s.d": class 2, 4 or 5, then 1-3 digits twice (RFC 3463 2), and nothing after it. */
static bool is_enhanced_code(const char *s)
{
    if (s[0] != '2' && s[0] != '4' && s[0] != '5')
        return false;
    size_t i = 1;
    for (int part = 0; part < 2; part++) {
        if (s[i] != '.')
            return false;
        i++;
        size_t digits = 0;
        while (is_digit(s[i])) {
            i++;
            digits++;
        }
        if (digits == 0 || digits > 3)
            return false;
    }
    return s[i] == '\0';
}

static void check_enhanced(const struct smtp_reply *r)
{
    char out[DSN_STATUS_BYTES];
    memset(out, 'x', sizeof(out));
    smtp_reply_enhanced(r->code, r->text, out);
    CHECK(memchr(out, '\0', sizeof(out)) != NULL);
    CHECK(is_enhanced_code(out));
    /* 2xx and 3xx are success (class 2), 4xx and 5xx their own class (RFC 3463 3.1). */
    int cls = r->code / 100;
    CHECK(out[0] == (cls == 3 ? '2' : (char)('0' + cls)));
    /* A well-formed code right after "NNN " or "NNN-" is taken as it is. */
    size_t n = r->len > 4 ? strcspn(r->text + 4, " \n") : 0;
    if (n > 0 && r->text[4] == (char)('0' + cls) && n < DSN_STATUS_BYTES) {
        char given[DSN_STATUS_BYTES];
        memcpy(given, r->text + 4, n);
        given[n] = '\0';
        if (is_enhanced_code(given))
            CHECK(strcmp(given, out) == 0);
    }
}

static void feed_reply(struct smtp_reply *r, const char *line, size_t len)
{
    struct smtp_reply before = *r;
    int got = smtp_reply_feed(r, line, len);
    bool shape = len >= 3 && line[0] >= '2' && line[0] <= '5' && is_digit(line[1]) &&
                 is_digit(line[2]) && (len == 3 || line[3] == ' ' || line[3] == '-');
    if (!shape) {
        CHECK(got == SMTP_REPLY_BAD);
        CHECK(memcmp(&before, r, sizeof(before)) == 0);
        return;
    }
    CHECK(got == (len > 3 && line[3] == '-' ? SMTP_REPLY_MORE : SMTP_REPLY_DONE));
    CHECK(r->lines == before.lines + 1);
    CHECK(r->code >= 200 && r->code <= 599);
    if (before.lines == 0) {
        CHECK(r->code == (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
        size_t k = len < sizeof(r->text) - 1 ? len : sizeof(r->text) - 1;
        CHECK(r->len == k && memcmp(r->text, line, k) == 0);
    } else {
        CHECK(r->code == before.code);
        CHECK(r->len >= before.len && memcmp(r->text, before.text, before.len) == 0);
    }
    CHECK(r->len < sizeof(r->text) && r->text[r->len] == '\0');
    if (got == SMTP_REPLY_DONE) {
        check_enhanced(r);
        smtp_reply_reset(r);
    }
}

static void feed_ehlo(struct smtp_ehlo_caps *caps, const char *line, size_t len)
{
    struct smtp_ehlo_caps before = *caps;
    smtp_ehlo_parse_line(caps, line, len);
    /* Flags only ever get set. */
    CHECK(!before.pipelining || caps->pipelining);
    CHECK(!before.starttls || caps->starttls);
    CHECK(!before.eightbitmime || caps->eightbitmime);
    CHECK(!before.size || caps->size);
    CHECK(!before.auth_plain || caps->auth_plain);
    if (len == 10 && strncasecmp(line, "PIPELINING", 10) == 0)
        CHECK(caps->pipelining);
    if (len == 8 && strncasecmp(line, "STARTTLS", 8) == 0)
        CHECK(caps->starttls);
    if (len == 8 && strncasecmp(line, "8BITMIME", 8) == 0)
        CHECK(caps->eightbitmime);
    if (len == 10 && strncasecmp(line, "AUTH PLAIN", 10) == 0)
        CHECK(caps->auth_plain);
    if (len >= 4 && strncasecmp(line, "SIZE", 4) == 0 && (len == 4 || line[4] == ' ')) {
        CHECK(caps->size);
        /* "SIZE <digits>": up to 18 digits cannot overflow and must be read exactly. */
        size_t digits = 0;
        uint64_t v = 0;
        while (5 + digits < len && is_digit(line[5 + digits]) && digits < 19) {
            v = v * 10 + (uint64_t)(line[5 + digits] - '0');
            digits++;
        }
        if (digits > 0 && digits <= 18 && 5 + digits == len)
            CHECK(caps->size_max_bytes == v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool ehlo = data[0] & 1;
    const uint8_t *p = data + 1;
    size_t left = size - 1;

    struct smtp_reply r;
    smtp_reply_reset(&r);
    struct smtp_ehlo_caps caps;
    memset(&caps, 0, sizeof(caps));

    for (size_t count = 0; count < MAX_LINES && left > 0; count++) {
        const uint8_t *lf = memchr(p, '\n', left);
        size_t n = lf != NULL ? (size_t)(lf - p) : left;
        char *line = malloc(n > 0 ? n : 1);
        if (line == NULL)
            return 0;
        memcpy(line, p, n);
        if (ehlo)
            feed_ehlo(&caps, line, n);
        else
            feed_reply(&r, line, n);
        free(line);
        if (lf == NULL)
            break;
        p = lf + 1;
        left -= n + 1;
    }
    /* A reply cut off mid-way still has a usable code. */
    if (!ehlo && r.lines > 0)
        check_enhanced(&r);
    return 0;
}
