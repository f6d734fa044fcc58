/*
 * sasl.c - see sasl.h.
 */
#include "common/pure/sasl.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

enum sasl_state {
    SASL_STATE_IDLE = 0,
    SASL_STATE_PLAIN_RESPONSE, /* sent the empty challenge, waiting for the PLAIN message */
    SASL_STATE_LOGIN_USER,     /* sent "Username:" */
    SASL_STATE_LOGIN_PASSWORD, /* sent "Password:" */
    SASL_STATE_FINISHED,       /* a terminal status was reported */
};

enum sasl_mech {
    SASL_MECH_NONE = 0,
    SASL_MECH_PLAIN,
    SASL_MECH_LOGIN,
};

/* draft-murchison-sasl-login 2: the server's prompts, "Username:" and "Password:" in base64. */
static const char login_user_challenge[] = "VXNlcm5hbWU6";
static const char login_password_challenge[] = "UGFzc3dvcmQ6";

/* The largest decoded client message: PLAIN at every cap (see SASL_LINE_MAX_BYTES). */
#define SASL_DECODED_MAX_BYTES                                                                     \
    (SASL_USER_MAX_BYTES + 1 + SASL_USER_MAX_BYTES + 1 + PASSWORD_MAX_BYTES)

_Static_assert(SASL_LINE_MAX_BYTES >= (SASL_DECODED_MAX_BYTES + 2) / 3 * 4,
               "SASL_LINE_MAX_BYTES must hold the largest PLAIN message in base64");

const char *sasl_status_name(enum sasl_status st)
{
    switch (st) {
    case SASL_CHALLENGE:
        return "challenge";
    case SASL_DONE:
        return "done";
    case SASL_CANCELLED:
        return "cancelled";
    case SASL_MALFORMED:
        return "malformed";
    case SASL_UNSUPPORTED_MECH:
        return "unsupported-mechanism";
    case SASL_AUTHZID_REFUSED:
        return "authzid-refused";
    }
    return "?";
}

void sasl_reset(struct sasl *s)
{
    if (s != NULL)
        sodium_memzero(s, sizeof(*s));
}

void sasl_free(struct sasl **s)
{
    if (*s == NULL)
        return;
    sasl_reset(*s);
    free(*s);
    *s = NULL;
}

bool sasl_is_active(const struct sasl *s)
{
    return s != NULL &&
           (s->state == SASL_STATE_PLAIN_RESPONSE || s->state == SASL_STATE_LOGIN_USER ||
            s->state == SASL_STATE_LOGIN_PASSWORD);
}

/* Ends the exchange with a terminal status. Anything but DONE wipes what was collected, the
 * password first; the identity given so far is copied to the step for the caller's log. */
static enum sasl_status sasl_finish(struct sasl *s, enum sasl_status st, struct sasl_step *step)
{
    memset(step, 0, sizeof(*step));
    step->status = st;
    if (st == SASL_DONE) {
        s->state = SASL_STATE_FINISHED;
        step->user = s->user;
        step->user_len = s->user_len;
        step->password = s->password;
        step->password_len = s->password_len;
    } else {
        memcpy(step->user_given, s->user, s->user_len);
        step->user_given[s->user_len] = '\0';
        sasl_reset(s);
        s->state = SASL_STATE_FINISHED;
    }
    return st;
}

static enum sasl_status sasl_challenge(struct sasl *s, enum sasl_state next, const char *text,
                                       struct sasl_step *step)
{
    memset(step, 0, sizeof(*step));
    s->state = next;
    step->status = SASL_CHALLENGE;
    step->challenge = text;
    return SASL_CHALLENGE;
}

/*
 * Decodes strict base64 (RFC 4648 4, with padding: what RFC 4954 4 and RFC 5034 4 require) into
 * out. Refused: characters outside the alphabet (whitespace included), missing or extra padding,
 * non-zero bits in the last character (non-canonical), results over outlen. "=" alone is the
 * empty response (RFC 4954 4); the empty line decodes to nothing too. Returns 0 or -1.
 */
static int b64_decode(const char *in, size_t inlen, unsigned char *out, size_t outlen,
                      size_t *len_out)
{
    *len_out = 0;
    if (inlen == 1 && in[0] == '=')
        return 0;
    if (inlen == 0)
        return 0;
    /* libsodium reads exactly inlen octets; with b64_end NULL, trailing junk fails. */
    if (sodium_base642bin(out, outlen, in, inlen, NULL, len_out, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        sodium_memzero(out, outlen);
        *len_out = 0;
        return -1;
    }
    return 0;
}

/* ASCII case-insensitive equality of two octet strings. */
static bool ascii_case_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return false;
    }
    return true;
}

static int set_user(struct sasl *s, const unsigned char *p, size_t n)
{
    if (n == 0 || n > SASL_USER_MAX_BYTES || memchr(p, '\0', n) != NULL)
        return -1;
    memcpy(s->user, p, n);
    s->user[n] = '\0';
    s->user_len = n;
    return 0;
}

static int set_password(struct sasl *s, const unsigned char *p, size_t n)
{
    if (n == 0 || n > PASSWORD_MAX_BYTES || memchr(p, '\0', n) != NULL)
        return -1;
    memcpy(s->password, p, n);
    s->password[n] = '\0';
    s->password_len = n;
    return 0;
}

/*
 * RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd, each part free of NUL, authcid
 * and passwd non-empty. An authzid other than the authcid would ask to act as somebody else
 * (proxy authorization), which postern does not offer; the same name in another ASCII case is
 * the same user, since user addresses are kept lower-cased.
 */
static enum sasl_status plain_message(struct sasl *s, const char *line, size_t len,
                                      struct sasl_step *step)
{
    unsigned char buf[SASL_DECODED_MAX_BYTES];
    size_t n = 0;
    enum sasl_status st = SASL_MALFORMED;
    if (len > SASL_LINE_MAX_BYTES || b64_decode(line, len, buf, sizeof(buf), &n) != 0)
        goto out;
    const unsigned char *nul1 = memchr(buf, '\0', n);
    if (nul1 == NULL)
        goto out;
    size_t zlen = (size_t)(nul1 - buf);
    const unsigned char *authcid = nul1 + 1;
    const unsigned char *nul2 = memchr(authcid, '\0', n - zlen - 1);
    if (nul2 == NULL)
        goto out;
    size_t clen = (size_t)(nul2 - authcid);
    const unsigned char *pw = nul2 + 1;
    size_t pwlen = n - zlen - 1 - clen - 1;
    if (zlen > SASL_USER_MAX_BYTES || set_user(s, authcid, clen) != 0 ||
        set_password(s, pw, pwlen) != 0)
        goto out;
    if (zlen > 0 && !ascii_case_equal((const char *)buf, zlen, s->user, s->user_len)) {
        st = SASL_AUTHZID_REFUSED;
        goto out;
    }
    st = SASL_DONE;
out:
    sodium_memzero(buf, sizeof(buf));
    return sasl_finish(s, st, step);
}

/* draft-murchison-sasl-login: each answer is one base64 value, the user name, then the
 * password. */
static enum sasl_status login_answer(struct sasl *s, const char *line, size_t len,
                                     struct sasl_step *step)
{
    unsigned char buf[PASSWORD_MAX_BYTES];
    size_t n = 0;
    enum sasl_status st = SASL_MALFORMED;
    if (len > SASL_LINE_MAX_BYTES || b64_decode(line, len, buf, sizeof(buf), &n) != 0)
        goto fail;
    if (s->state == SASL_STATE_LOGIN_USER) {
        if (set_user(s, buf, n) != 0)
            goto fail;
        sodium_memzero(buf, sizeof(buf));
        return sasl_challenge(s, SASL_STATE_LOGIN_PASSWORD, login_password_challenge, step);
    }
    if (set_password(s, buf, n) != 0)
        goto fail;
    st = SASL_DONE;
fail:
    sodium_memzero(buf, sizeof(buf));
    return sasl_finish(s, st, step);
}

enum sasl_status sasl_start(struct sasl *s, const char *mech, size_t mech_len, const char *initial,
                            size_t initial_len, struct sasl_step *step_out)
{
    sasl_reset(s);
    if (mech != NULL && ascii_case_equal(mech, mech_len, "PLAIN", 5)) {
        s->mech = SASL_MECH_PLAIN;
        if (initial == NULL)
            return sasl_challenge(s, SASL_STATE_PLAIN_RESPONSE, "", step_out);
        return plain_message(s, initial, initial_len, step_out);
    }
    if (mech != NULL && ascii_case_equal(mech, mech_len, "LOGIN", 5)) {
        s->mech = SASL_MECH_LOGIN;
        if (initial == NULL)
            return sasl_challenge(s, SASL_STATE_LOGIN_USER, login_user_challenge, step_out);
        /* An initial response carries the user name (draft-murchison-sasl-login 2). */
        s->state = SASL_STATE_LOGIN_USER;
        return login_answer(s, initial, initial_len, step_out);
    }
    return sasl_finish(s, SASL_UNSUPPORTED_MECH, step_out);
}

enum sasl_status sasl_step(struct sasl *s, const char *line, size_t len, struct sasl_step *step_out)
{
    if (!sasl_is_active(s) || line == NULL)
        return sasl_finish(s, SASL_MALFORMED, step_out);
    /* RFC 4954 4 and RFC 5034 4: a line of "*" cancels the exchange. */
    if (len == 1 && line[0] == '*')
        return sasl_finish(s, SASL_CANCELLED, step_out);
    if (s->state == SASL_STATE_PLAIN_RESPONSE)
        return plain_message(s, line, len, step_out);
    return login_answer(s, line, len, step_out);
}
