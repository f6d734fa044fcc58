/*
 * fuzz_sasl.c - libFuzzer target for the SASL state machine in server/auth/auth.c.
 *
 * Input layout: pieces separated by LF. Byte 0 picks whether piece 1 is an initial response
 * (bit 0) and whether the mechanism name is taken from a list of known spellings (bit 1, then
 * byte 1 picks which) or is piece 0 verbatim. The remaining pieces are client lines fed to
 * sasl_step() while an exchange is active. Every piece is copied into a heap buffer of exactly
 * its length, so ASan catches a read past it.
 *
 * Checked after every call: the returned status equals step.status and is one the call may
 * return; a challenge is one of the three the mechanisms send; DONE comes with a non-empty,
 * NUL-free, capped user and password that are also what the client actually sent (re-derived
 * here from the decoded PLAIN message or LOGIN lines); the exchange is active exactly while a
 * challenge is outstanding; a failed exchange keeps no password; and sasl_reset() leaves only
 * zero bytes. Violations trap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "common/pure/sasl.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_PIECES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const mech_names[] = {"PLAIN", "plain", "LOGIN", "Login", "CRAM-MD5", ""};

static bool is_known_challenge(const char *c)
{
    return strcmp(c, "") == 0 || strcmp(c, "VXNlcm5hbWU6") == 0 || strcmp(c, "UGFzc3dvcmQ6") == 0;
}

/* Strict decode of a client line as the module should do it; -1 when it is not base64. */
static int decode(const char *p, size_t n, unsigned char *out, size_t cap, size_t *len_out)
{
    *len_out = 0;
    if (n == 0 || (n == 1 && p[0] == '='))
        return 0;
    return sodium_base642bin(out, cap, p, n, NULL, len_out, NULL, sodium_base64_VARIANT_ORIGINAL) ==
                   0
               ? 0
               : -1;
}

static void check_step(const struct sasl *s, enum sasl_status got, const struct sasl_step *st)
{
    CHECK(got == st->status);
    CHECK(sasl_is_active(s) == (got == SASL_CHALLENGE));
    switch (got) {
    case SASL_CHALLENGE:
        CHECK(st->challenge != NULL && is_known_challenge(st->challenge));
        break;
    case SASL_DONE:
        CHECK(st->user != NULL && st->password != NULL);
        CHECK(st->user_len > 0 && st->user_len <= SASL_USER_MAX_BYTES);
        CHECK(st->password_len > 0 && st->password_len <= PASSWORD_MAX_BYTES);
        CHECK(memchr(st->user, '\0', st->user_len) == NULL);
        CHECK(memchr(st->password, '\0', st->password_len) == NULL);
        CHECK(st->user[st->user_len] == '\0' && st->password[st->password_len] == '\0');
        break;
    case SASL_CANCELLED:
    case SASL_MALFORMED:
    case SASL_UNSUPPORTED_MECH:
    case SASL_AUTHZID_REFUSED:
        CHECK(s->password_len == 0 && s->user_len == 0);
        break;
    default:
        CHECK(false);
    }
}

/* DONE must report exactly what the client sent. */
static void check_plain_done(const char *line, size_t n, const struct sasl_step *st)
{
    static unsigned char raw[4096];
    size_t len = 0;
    CHECK(decode(line, n, raw, sizeof(raw), &len) == 0);
    const unsigned char *nul1 = memchr(raw, '\0', len);
    CHECK(nul1 != NULL);
    size_t zlen = (size_t)(nul1 - raw);
    CHECK(zlen == 0 || zlen == st->user_len);
    CHECK(len == zlen + 1 + st->user_len + 1 + st->password_len);
    CHECK(memcmp(nul1 + 1, st->user, st->user_len) == 0);
    CHECK(nul1[1 + st->user_len] == '\0');
    CHECK(memcmp(nul1 + 2 + st->user_len, st->password, st->password_len) == 0);
}

static void check_login_value(const char *line, size_t n, const char *v, size_t vlen)
{
    static unsigned char raw[4096];
    size_t len = 0;
    CHECK(decode(line, n, raw, sizeof(raw), &len) == 0);
    CHECK(len == vlen && memcmp(raw, v, vlen) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    uint8_t pick = data[1];
    const uint8_t *p = data + 2;
    size_t left = size - 2;

    /* Split into pieces, each copied to its own exact-size buffer. */
    char *piece[MAX_PIECES];
    size_t plen[MAX_PIECES];
    size_t count = 0;
    while (count < MAX_PIECES) {
        const uint8_t *lf = memchr(p, '\n', left);
        size_t n = lf != NULL ? (size_t)(lf - p) : left;
        piece[count] = malloc(n > 0 ? n : 1);
        if (piece[count] == NULL)
            break;
        memcpy(piece[count], p, n);
        plen[count] = n;
        count++;
        if (lf == NULL)
            break;
        p = lf + 1;
        left -= n + 1;
    }

    struct sasl s;
    struct sasl_step st;
    size_t next = 0;
    const char *mech;
    size_t mech_len;
    if (flags & 2) {
        mech = mech_names[pick % (sizeof(mech_names) / sizeof(mech_names[0]))];
        mech_len = strlen(mech);
    } else {
        if (next >= count)
            goto out;
        mech = piece[next];
        mech_len = plen[next];
        next++;
    }
    bool plain = mech_len == 5 && strncasecmp(mech, "PLAIN", 5) == 0;
    bool login = mech_len == 5 && strncasecmp(mech, "LOGIN", 5) == 0;

    const char *ir = NULL;
    size_t ir_len = 0;
    if ((flags & 1) && next < count) {
        ir = piece[next];
        ir_len = plen[next];
        next++;
    }
    enum sasl_status got = sasl_start(&s, mech, mech_len, ir, ir_len, &st);
    check_step(&s, got, &st);
    CHECK((got == SASL_UNSUPPORTED_MECH) == (!plain && !login));
    if (ir == NULL && (plain || login))
        CHECK(got == SASL_CHALLENGE);
    if (got == SASL_DONE) {
        CHECK(plain); /* LOGIN always needs a second line */
        check_plain_done(ir, ir_len, &st);
    }

    /* LOGIN: the line that carried the user name, to check DONE against. */
    const char *user_line = login ? ir : NULL;
    size_t user_line_len = ir_len;
    for (size_t steps = 0; got == SASL_CHALLENGE && next < count; steps++) {
        CHECK(steps < 3);
        const char *line = piece[next];
        size_t n = plen[next];
        next++;
        bool asked_user = strcmp(st.challenge, "VXNlcm5hbWU6") == 0;
        got = sasl_step(&s, line, n, &st);
        check_step(&s, got, &st);
        if (n == 1 && line[0] == '*')
            CHECK(got == SASL_CANCELLED);
        if (asked_user && got == SASL_CHALLENGE) {
            user_line = line;
            user_line_len = n;
        }
        if (got == SASL_DONE && plain)
            check_plain_done(line, n, &st);
        if (got == SASL_DONE && login) {
            CHECK(user_line != NULL);
            check_login_value(user_line, user_line_len, st.user, st.user_len);
            check_login_value(line, n, st.password, st.password_len);
        }
    }
    /* Any further line after the end is misuse, refused. */
    if (got != SASL_CHALLENGE && next < count) {
        got = sasl_step(&s, piece[next], plen[next], &st);
        CHECK(got == SASL_MALFORMED);
    }

    sasl_reset(&s);
    const unsigned char *b = (const unsigned char *)&s;
    for (size_t i = 0; i < sizeof(s); i++)
        CHECK(b[i] == 0);
out:
    for (size_t i = 0; i < count; i++)
        free(piece[i]);
    return 0;
}
