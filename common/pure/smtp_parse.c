/*
 * smtp_parse.c - see smtp_parse.h: MAIL/RCPT arguments and ESMTP parameters (DSN's included) in,
 * trace headers out. Pure functions only.
 */
#include "common/pure/smtp_parse.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/pure/date.h"

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

const char *smtp_parse_strerror(int code)
{
    switch (code) {
    case SMTP_PARSE_OK:
        return "smtp argument: ok";
    case SMTP_PARSE_SYNTAX:
        return "smtp argument: syntax error";
    case SMTP_PARSE_BAD_ADDRESS:
        return "smtp argument: bad address";
    case SMTP_PARSE_BAD_PARAM:
        return "smtp argument: bad parameter";
    case SMTP_PARSE_UNKNOWN_PARAM:
        return "smtp argument: unknown parameter";
    }
    return "smtp argument: not an smtp_parse code";
}

int smtp_parse_path_arg(const char *args, const char *keyword, struct address *addr_out,
                        enum address_path_kind *kind_out, const char **params_out,
                        const char **why_out)
{
    size_t klen = strlen(keyword);
    memset(addr_out, 0, sizeof(*addr_out));
    *kind_out = ADDRESS_PATH_NULL;
    *params_out = "";
    if (why_out != NULL)
        *why_out = "syntax";
    if (strncasecmp(args, keyword, klen) != 0)
        return SMTP_PARSE_SYNTAX;
    const char *p = args + klen;
    while (*p == ' ')
        p++;
    if (*p != '<')
        return SMTP_PARSE_SYNTAX;
    size_t consumed = 0;
    const char *why = NULL;
    /* UTF-8 is parsed always; whether it is allowed is the session's call (smtp_parse.h). */
    if (address_parse_path_flags(p, strlen(p), ADDRESS_ALLOW_UTF8, addr_out, kind_out, &consumed,
                                 &why) != 0) {
        if (why_out != NULL)
            *why_out = why != NULL ? why : "bad address";
        return SMTP_PARSE_BAD_ADDRESS;
    }
    p += consumed;
    if (*p != '\0' && *p != ' ') {
        if (why_out != NULL)
            *why_out = "text after the path";
        memset(addr_out, 0, sizeof(*addr_out));
        *kind_out = ADDRESS_PATH_NULL;
        return SMTP_PARSE_SYNTAX;
    }
    while (*p == ' ')
        p++;
    *params_out = p;
    return SMTP_PARSE_OK;
}

/*
 * The next "keyword[=value]" of params (RFC 5321 4.1.2: esmtp-keyword = (ALPHA / DIGIT)
 * *(ALPHA / DIGIT / "-"); esmtp-value = 1*(%d33-60 / %d62-126)). Sets the views and advances
 * *pp past the parameter and its spaces. 1 when one was found, 0 at the end, -1 on bad syntax.
 */
static int next_param(const char **pp, const char **key, size_t *klen, const char **val,
                      size_t *vlen)
{
    const char *p = *pp;
    if (*p == '\0')
        return 0;
    *key = p;
    if (!is_alnum(*p))
        return -1;
    while (is_alnum(*p) || *p == '-')
        p++;
    *klen = (size_t)(p - *key);
    *val = NULL;
    *vlen = 0;
    if (*p == '=') {
        p++;
        *val = p;
        while (*p >= 33 && *p <= 126 && *p != '=')
            p++;
        *vlen = (size_t)(p - *val);
        if (*vlen == 0)
            return -1;
    }
    if (*p != '\0' && *p != ' ')
        return -1;
    while (*p == ' ')
        p++;
    *pp = p;
    return 1;
}

static bool key_is(const char *key, size_t klen, const char *name)
{
    return strlen(name) == klen && strncasecmp(key, name, klen) == 0;
}

static bool value_is(const char *val, size_t vlen, const char *name)
{
    return val != NULL && strlen(name) == vlen && strncasecmp(val, name, vlen) == 0;
}

static bool is_upper_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

bool smtp_xtext_is_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            if (i + 2 >= len || !is_upper_hex(s[i + 1]) || !is_upper_hex(s[i + 2]))
                return false;
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return false;
        }
    }
    return true;
}

static int hex_value(char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

int smtp_xtext_decode(const char *s, char *out, size_t outlen)
{
    size_t len = strlen(s);
    out[0] = '\0';
    if (!smtp_xtext_is_valid(s, len))
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < outlen; i++) {
        if (s[i] == '+') {
            out[n++] = (char)(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            out[n++] = s[i];
        }
    }
    out[n] = '\0';
    return (int)n;
}

/* RET=FULL|HDRS (RFC 3461 4.3). */
static bool parse_ret(const char *val, size_t vlen, enum smtp_dsn_ret *out)
{
    if (value_is(val, vlen, "FULL"))
        *out = SMTP_DSN_RET_FULL;
    else if (value_is(val, vlen, "HDRS"))
        *out = SMTP_DSN_RET_HDRS;
    else
        return false;
    return true;
}

/* Copies an xtext value of at most max octets into out (max + 1 octets); false if it is not. */
static bool copy_xtext(const char *val, size_t vlen, size_t max, char *out)
{
    if (val == NULL || vlen > max || !smtp_xtext_is_valid(val, vlen))
        return false;
    memcpy(out, val, vlen);
    out[vlen] = '\0';
    return true;
}

int smtp_parse_mail_params(const char *params, struct smtp_mail_params *out, const char **why_out)
{
    memset(out, 0, sizeof(*out));
    bool seen_body = false, seen_envid = false;
    const char *why = NULL;
    int status = SMTP_PARSE_OK;
    const char *p = params;
    const char *key, *val;
    size_t klen, vlen;
    int rc;
    /* Bounded: every round consumes at least one octet of a NUL-terminated line. */
    while (status == SMTP_PARSE_OK && (rc = next_param(&p, &key, &klen, &val, &vlen)) != 0) {
        if (rc < 0) {
            status = SMTP_PARSE_BAD_PARAM;
            why = "bad parameter syntax";
        } else if (key_is(key, klen, "SIZE")) {
            uint64_t n = 0;
            bool ok = val != NULL && !out->has_size && vlen <= SMTP_SIZE_MAX_DIGITS;
            for (size_t i = 0; ok && i < vlen; i++) {
                if (val[i] < '0' || val[i] > '9' || n > (UINT64_MAX - 9) / 10)
                    ok = false;
                else
                    n = n * 10 + (uint64_t)(val[i] - '0');
            }
            if (!ok) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "bad SIZE";
            }
            out->has_size = true;
            out->size_bytes = n;
        } else if (key_is(key, klen, "BODY")) {
            if (seen_body || !(value_is(val, vlen, "7BIT") || value_is(val, vlen, "8BITMIME"))) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "bad BODY";
            }
            seen_body = true;
            out->body_8bit = value_is(val, vlen, "8BITMIME");
        } else if (key_is(key, klen, "SMTPUTF8")) {
            /* RFC 6531 3.4: no value. */
            if (out->smtputf8 || val != NULL) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "bad SMTPUTF8";
            }
            out->smtputf8 = true;
        } else if (key_is(key, klen, "AUTH")) {
            /* RFC 4954 5: xtext, "<>" when unknown; we never pass it on, so it is ignored. */
            if (out->has_auth || val == NULL) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "bad AUTH";
            }
            out->has_auth = true;
        } else if (key_is(key, klen, "RET")) {
            if (out->ret != SMTP_DSN_RET_NONE) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "duplicate RET";
            } else if (!parse_ret(val, vlen, &out->ret)) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "RET must be FULL or HDRS";
            }
        } else if (key_is(key, klen, "ENVID")) {
            if (seen_envid) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "duplicate ENVID";
            } else if (!copy_xtext(val, vlen, SMTP_DSN_ENVID_MAX_BYTES, out->envid)) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "ENVID must be xtext of at most 100 characters";
            }
            seen_envid = true;
        } else {
            status = SMTP_PARSE_UNKNOWN_PARAM;
            why = "parameter not recognized";
        }
    }
    if (why_out != NULL)
        *why_out = why;
    return status;
}

/* NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE and DELAY, each once (RFC 3461 4.1). */
static bool parse_notify(const char *val, size_t vlen, unsigned *out)
{
    if (val == NULL)
        return false;
    if (value_is(val, vlen, "NEVER")) {
        *out = SMTP_NOTIFY_NEVER;
        return true;
    }
    unsigned bits = 0;
    size_t i = 0;
    while (i <= vlen) {
        size_t j = i;
        while (j < vlen && val[j] != ',')
            j++;
        unsigned bit = value_is(val + i, j - i, "SUCCESS")   ? SMTP_NOTIFY_SUCCESS
                       : value_is(val + i, j - i, "FAILURE") ? SMTP_NOTIFY_FAILURE
                       : value_is(val + i, j - i, "DELAY")   ? SMTP_NOTIFY_DELAY
                                                             : 0;
        if (bit == 0 || (bits & bit) != 0)
            return false;
        bits |= bit;
        i = j + 1;
    }
    *out = bits;
    return true;
}

/* ORCPT=addr-type;xtext (RFC 3461 4.2): addr-type is an atom (RFC 5322 atext without the
 * specials that are not xtext); the address at least one octet of xtext. */
static bool orcpt_is_valid(const char *val, size_t vlen)
{
    if (val == NULL || vlen > SMTP_DSN_ORCPT_MAX_BYTES)
        return false;
    const char *semi = memchr(val, ';', vlen);
    if (semi == NULL || semi == val || (size_t)(semi - val) + 1 >= vlen)
        return false;
    for (const char *t = val; t < semi; t++) {
        if (!is_alnum(*t) && *t != '-' && *t != '_' && *t != '.')
            return false;
    }
    size_t alen = vlen - (size_t)(semi - val) - 1;
    return smtp_xtext_is_valid(semi + 1, alen);
}

int smtp_parse_rcpt_params(const char *params, struct smtp_rcpt_params *out, const char **why_out)
{
    memset(out, 0, sizeof(*out));
    const char *why = NULL;
    int status = SMTP_PARSE_OK;
    const char *p = params;
    const char *key, *val;
    size_t klen, vlen;
    int rc;
    bool seen_orcpt = false;
    while (status == SMTP_PARSE_OK && (rc = next_param(&p, &key, &klen, &val, &vlen)) != 0) {
        if (rc < 0) {
            status = SMTP_PARSE_BAD_PARAM;
            why = "bad parameter syntax";
        } else if (key_is(key, klen, "NOTIFY")) {
            if (out->notify != 0) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "duplicate NOTIFY";
            } else if (!parse_notify(val, vlen, &out->notify)) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY";
            }
        } else if (key_is(key, klen, "ORCPT")) {
            if (seen_orcpt) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "duplicate ORCPT";
            } else if (!orcpt_is_valid(val, vlen)) {
                status = SMTP_PARSE_BAD_PARAM;
                why = "ORCPT must be addr-type;xtext of at most 500 characters";
            } else {
                memcpy(out->orcpt, val, vlen);
                out->orcpt[vlen] = '\0';
            }
            seen_orcpt = true;
        } else {
            status = SMTP_PARSE_UNKNOWN_PARAM;
            why = "parameter not recognized";
        }
    }
    if (why_out != NULL)
        *why_out = why;
    return status;
}

char *smtp_helo_sanitize(const char *in, char *out, size_t outlen)
{
    size_t max = outlen - 1 < ADDRESS_DOMAIN_MAX_BYTES ? outlen - 1 : ADDRESS_DOMAIN_MAX_BYTES;
    size_t n = 0;
    for (; in[n] != '\0' && n < max; n++) {
        char c = in[n];
        bool ok =
            is_alnum(c) || c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
        out[n] = ok ? c : '?';
    }
    out[n] = '\0';
    return out;
}

const char *smtp_with_type(bool esmtp, bool tls, bool auth)
{
    if (!esmtp)
        return "SMTP";
    if (tls)
        return auth ? "ESMTPSA" : "ESMTPS";
    return auth ? "ESMTPA" : "ESMTP";
}

/* Comment text (RFC 5322 3.2.2 ctext) made safe: printable ASCII without ( ) \ ; max octets. */
static void comment_sanitize(const char *in, char *out, size_t max)
{
    size_t n = 0;
    for (; in[n] != '\0' && n < max; n++) {
        char c = in[n];
        out[n] = (c >= 32 && c <= 126 && c != '(' && c != ')' && c != '\\') ? c : '?';
    }
    out[n] = '\0';
}

int smtp_trace_headers(const struct smtp_received *r, const char *return_path, char *buf,
                       size_t len)
{
    char helo[ADDRESS_DOMAIN_MAX_BYTES + 1];
    char tls[128];
    char identity[ADDRESS_STRLEN + 64];
    char date[DATE_RFC5322_BYTES];
    smtp_helo_sanitize(r->helo != NULL ? r->helo : "", helo, sizeof(helo));
    comment_sanitize(r->tls != NULL ? r->tls : "", tls, sizeof(tls) - 1);
    comment_sanitize(r->identity != NULL ? r->identity : "", identity, sizeof(identity) - 1);
    date_rfc5322(r->time_ms, date, sizeof(date));
    bool v6 = strchr(r->peer_ip, ':') != NULL;

    size_t off = 0;
    int n;
#define TRACE_PUT(...)                                                                             \
    do {                                                                                           \
        n = snprintf(buf + off, len - off, __VA_ARGS__);                                           \
        if (n < 0 || (size_t)n >= len - off)                                                       \
            return -1;                                                                             \
        off += (size_t)n;                                                                          \
    } while (0)
    if (len == 0)
        return -1;
    if (return_path != NULL)
        TRACE_PUT("Return-Path: <%s>\r\n", return_path);
    TRACE_PUT("Received: from %s ([%s%s])\r\n", helo[0] != '\0' ? helo : "unknown",
              v6 ? "IPv6:" : "", r->peer_ip);
    TRACE_PUT("\tby %s (postern) with %s id %s", r->hostname, r->with, r->id);
    if (tls[0] != '\0')
        TRACE_PUT("\r\n\t(%s)", tls);
    if (identity[0] != '\0')
        TRACE_PUT("\r\n\t(%s)", identity);
    TRACE_PUT(";\r\n\t%s\r\n", date);
#undef TRACE_PUT
    return (int)off;
}
