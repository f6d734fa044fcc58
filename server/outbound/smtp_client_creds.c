/*
 * smtp_client_creds.c - the smarthost credentials (see smtp_client.h, "smarthost credentials"):
 * reading the password file once at start, and building the AUTH PLAIN line from them.
 *
 * It does no network I/O and knows nothing of the transaction: smtp_client.c copies the finished
 * line at smtp_client_start and wipes its copy when freed. The password lives in a struct
 * smtp_client_creds (owned by serve.c) and in stack buffers that are wiped before they go out of
 * scope; nothing here logs it.
 */
#include "server/outbound/smtp_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* ---- credentials ----------------------------------------------------------------- */

struct smtp_client_creds {
    char *user;     /* owned */
    char *password; /* owned, wiped on free; password_len octets and a NUL */
    size_t password_len;
};

void smtp_client_creds_free(struct smtp_client_creds **cp)
{
    struct smtp_client_creds *c = *cp;
    if (c == NULL)
        return;
    *cp = NULL;
    if (c->password != NULL) {
        sodium_memzero(c->password, c->password_len + 1);
        free(c->password);
    }
    free(c->user);
    free(c);
}

int smtp_client_creds_load(const char *user, const char *password_file,
                           struct smtp_client_creds **out, char *err, size_t errlen)
{
    *out = NULL;
    /* One byte more than allowed, the line ending and a NUL: a longer line is detected. */
    char line[PASSWORD_MAX_BYTES + 4];
    FILE *fp = fopen(password_file, "r");
    if (fp == NULL) {
        snprintf(err, errlen, "%s: cannot open the smarthost password file: %s", password_file,
                 strerror(errno));
        return -1;
    }
    size_t n = fread(line, 1, sizeof(line) - 1, fp);
    int read_errno = ferror(fp) ? errno : 0;
    if (fclose(fp) != 0 && read_errno == 0)
        read_errno = errno;
    int rc = -1;
    if (read_errno != 0) {
        snprintf(err, errlen, "%s: cannot read the smarthost password file: %s", password_file,
                 strerror(read_errno));
        goto out;
    }
    line[n] = '\0';
    char *lf = memchr(line, '\n', n);
    size_t len = lf != NULL ? (size_t)(lf - line) : n;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (memchr(line, '\0', len) != NULL) {
        snprintf(err, errlen, "%s: the smarthost password holds a NUL octet", password_file);
        goto out;
    }
    if (len == 0) {
        snprintf(err, errlen, "%s: the first line (the smarthost password) is empty",
                 password_file);
        goto out;
    }
    if (len > PASSWORD_MAX_BYTES) {
        snprintf(err, errlen, "%s: the smarthost password is longer than %d bytes", password_file,
                 PASSWORD_MAX_BYTES);
        goto out;
    }
    struct smtp_client_creds *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    c->user = strdup(user);
    c->password = malloc(len + 1);
    if (c->user == NULL || c->password == NULL) {
        smtp_client_creds_free(&c);
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memcpy(c->password, line, len);
    c->password[len] = '\0';
    c->password_len = len;
    *out = c;
    rc = 0;
out:
    sodium_memzero(line, sizeof(line));
    return rc;
}

int smtp_client_auth_line(const char *user, const char *password, size_t password_len, char *out,
                          size_t outlen)
{
    static const char head[] = "AUTH PLAIN ";
    size_t ulen = strlen(user);
    if (ulen > SASL_USER_MAX_BYTES || password_len > PASSWORD_MAX_BYTES)
        goto too_long;
    /* RFC 4616 2: message = [authzid] NUL authcid NUL passwd; no authzid: act as ourselves. */
    unsigned char msg[2 + SASL_USER_MAX_BYTES + PASSWORD_MAX_BYTES];
    size_t mlen = 0;
    msg[mlen++] = '\0';
    memcpy(msg + mlen, user, ulen);
    mlen += ulen;
    msg[mlen++] = '\0';
    memcpy(msg + mlen, password, password_len);
    mlen += password_len;
    size_t b64_bytes = sodium_base64_ENCODED_LEN(mlen, sodium_base64_VARIANT_ORIGINAL);
    /* b64_bytes counts its NUL; the line adds the head and CRLF. */
    if (outlen < sizeof(head) - 1 + b64_bytes + 2) {
        sodium_memzero(msg, sizeof(msg));
        goto too_long;
    }
    memcpy(out, head, sizeof(head) - 1);
    sodium_bin2base64(out + sizeof(head) - 1, b64_bytes, msg, mlen, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(msg, sizeof(msg));
    size_t len = sizeof(head) - 1 + b64_bytes - 1;
    memcpy(out + len, "\r\n", 3);
    return (int)(len + 2);
too_long:
    if (outlen > 0)
        sodium_memzero(out, outlen);
    return -1;
}

int smtp_client_creds_auth_line(const struct smtp_client_creds *c, char *out, size_t outlen)
{
    return smtp_client_auth_line(c->user, c->password, c->password_len, out, outlen);
}
