/*
 * sasl.h - one SASL exchange (PLAIN, RFC 4616; LOGIN, draft-murchison-sasl-login) as a small state
 * machine: pure (no I/O, no allocation, no clock). It decodes base64 client lines and hands out the
 * challenges to send; it knows nothing of users, stores or reply codes. The SMTP and POP3 sessions
 * turn its steps into "334 ..." / "+ ...", "501 5.7.0" / "-ERR" and so on, and hand the user and
 * password it yields to server/auth/auth.h for verification.
 */
#ifndef POSTERN_SASL_H
#define POSTERN_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/limits.h"
#include "common/password.h"

/* What EHLO (RFC 4954 3) and CAPA SASL (RFC 5034 5) advertise. */
#define SASL_MECHANISMS "PLAIN LOGIN"

/* SASL_USER_MAX_BYTES and SASL_LINE_MAX_BYTES, the identity and line caps, are in
 * common/limits.h. */

enum sasl_status {
    SASL_CHALLENGE = 1,    /* send step.challenge ("334 " / "+ " then the text), read a line */
    SASL_DONE,             /* step.user / step.password are ready for auth_verify() */
    SASL_CANCELLED,        /* the client sent "*": RFC 4954 "501 5.7.0", RFC 5034 -ERR */
    SASL_MALFORMED,        /* bad base64, bad PLAIN message, empty or over-long part, misuse */
    SASL_UNSUPPORTED_MECH, /* RFC 4954 "504 5.5.4"; RFC 5034 -ERR */
    SASL_AUTHZID_REFUSED,  /* PLAIN authzid names somebody else: no proxy authorization */
};

struct sasl_step {
    enum sasl_status status;
    /* SASL_CHALLENGE: base64 text to send, static; "" for PLAIN's empty challenge. */
    const char *challenge;
    /* SASL_DONE: borrowed from the struct sasl, valid until sasl_reset(). user is
     * NUL-terminated; password is NUL-terminated too, but use password_len. Neither holds NUL,
     * neither is empty. */
    const char *user;
    size_t user_len;
    const char *password;
    size_t password_len;
    /* CANCELLED, MALFORMED, AUTHZID_REFUSED: the identity (authcid) the client had given before
     * the exchange failed, for the log, or "" when none; a copy, since the struct sasl is wiped
     * then. Never the password. */
    char user_given[SASL_USER_MAX_BYTES + 1];
};

struct sasl {
    int state; /* private: where the exchange stands */
    int mech;  /* private: which mechanism */
    size_t user_len;
    size_t password_len;
    char user[SASL_USER_MAX_BYTES + 1];
    char password[PASSWORD_MAX_BYTES + 1]; /* wiped by sasl_reset() */
};

/*
 * Starts an exchange on s (which is reset first). mech[0..mech_len) is the mechanism name, any
 * case. initial[0..initial_len) is the initial response (RFC 4954 4, RFC 5034 4), or
 * initial == NULL when there was none; "=" means an empty one. Neither needs a NUL; nothing past
 * the lengths is read. Returns step_out->status: CHALLENGE, DONE, MALFORMED, AUTHZID_REFUSED or
 * UNSUPPORTED_MECH.
 */
enum sasl_status sasl_start(struct sasl *s, const char *mech, size_t mech_len, const char *initial,
                            size_t initial_len, struct sasl_step *step_out);
/*
 * Feeds the client's answer to the last challenge: line[0..len), without CRLF. "*" cancels.
 * Returns step_out->status: CHALLENGE, DONE, CANCELLED, MALFORMED or AUTHZID_REFUSED. Called
 * when no challenge is outstanding it returns MALFORMED.
 */
enum sasl_status sasl_step(struct sasl *s, const char *line, size_t len,
                           struct sasl_step *step_out);
/* True while a challenge is outstanding: the next client line belongs to sasl_step(). */
bool sasl_is_active(const struct sasl *s);
/* Wipes everything, password included; s is then idle. Call after auth_verify() copied them. */
void sasl_reset(struct sasl *s);
/* For a struct sasl on the heap (a session keeps one only while an exchange runs): wipes it as
 * sasl_reset does, frees it and sets *s to NULL; nothing when *s is NULL. */
void sasl_free(struct sasl **s);
/* A short static name for logs: "challenge", "done", "cancelled", ... */
const char *sasl_status_name(enum sasl_status st);

#endif
