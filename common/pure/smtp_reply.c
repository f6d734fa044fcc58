/*
 * smtp_reply.c - see smtp_reply.h.
 */
#include "common/pure/smtp_reply.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void smtp_reply_reset(struct smtp_reply *r)
{
    r->code = 0;
    r->lines = 0;
    r->len = 0;
    r->text[0] = '\0';
}

int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
    if (len < 3 || line[0] < '2' || line[0] > '5' || !isdigit((unsigned char)line[1]) ||
        !isdigit((unsigned char)line[2]))
        return SMTP_REPLY_BAD;
    if (len > 3 && line[3] != ' ' && line[3] != '-')
        return SMTP_REPLY_BAD;
    if (r->lines == 0)
        r->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    /* Keep what fits, lines joined by LF; a cut reply keeps its code and first lines. */
    size_t room = sizeof(r->text) - 1 - r->len;
    size_t sep = r->lines > 0 ? 1 : 0;
    if (room > sep) {
        if (sep)
            r->text[r->len++] = '\n';
        size_t k = len < room - sep ? len : room - sep;
        memcpy(r->text + r->len, line, k);
        r->len += k;
        r->text[r->len] = '\0';
    }
    r->lines++;
    return len > 3 && line[3] == '-' ? SMTP_REPLY_MORE : SMTP_REPLY_DONE;
}

/* Reads "c.ddd.ddd" at p; returns its length or 0. The class is 2, 4 or 5 (RFC 3463 3.1): a
 * "3.x.y" after a 3xx reply is no enhanced code. */
static size_t enhanced_len(const char *p)
{
    size_t i = 0;
    if (p[i] != '2' && p[i] != '4' && p[i] != '5')
        return 0;
    i++;
    for (int part = 0; part < 2; part++) {
        if (p[i] != '.')
            return 0;
        i++;
        size_t digits = 0;
        while (isdigit((unsigned char)p[i]) && digits < 3) {
            i++;
            digits++;
        }
        if (digits == 0)
            return 0;
    }
    if (p[i] != '\0' && p[i] != ' ' && p[i] != '\n')
        return 0;
    return i;
}

void smtp_reply_enhanced(int code, const char *text, char out[DSN_STATUS_BYTES])
{
    int cls = code / 100;
    /* The class must match the code's (RFC 3463 2: 2, 4 or 5, as the reply's first digit). */
    if (text != NULL && strlen(text) > 4 && text[4] == (char)('0' + cls)) {
        size_t n = enhanced_len(text + 4);
        if (n > 0 && n < DSN_STATUS_BYTES) {
            memcpy(out, text + 4, n);
            out[n] = '\0';
            return;
        }
    }
    if (cls < 2 || cls > 5 || cls == 3)
        cls = cls == 3 ? 2 : 4;
    snprintf(out, DSN_STATUS_BYTES, "%d.0.0", cls);
}

static bool keyword_is(const char *text, size_t len, const char *kw, size_t *arg_off)
{
    size_t k = strlen(kw);
    if (len < k || strncasecmp(text, kw, k) != 0)
        return false;
    if (len > k && text[k] != ' ')
        return false;
    *arg_off = len > k ? k + 1 : len;
    return true;
}

void smtp_ehlo_parse_line(struct smtp_ehlo_caps *caps, const char *text, size_t len)
{
    size_t arg;
    if (keyword_is(text, len, "PIPELINING", &arg)) {
        caps->pipelining = true;
    } else if (keyword_is(text, len, "STARTTLS", &arg)) {
        caps->starttls = true;
    } else if (keyword_is(text, len, "AUTH", &arg)) {
        /* "AUTH LOGIN PLAIN CRAM-MD5": mechanisms separated by spaces (RFC 4954 3). */
        size_t i = arg;
        while (i < len) {
            size_t start = i;
            while (i < len && text[i] != ' ')
                i++;
            if (i - start == 5 && strncasecmp(text + start, "PLAIN", 5) == 0)
                caps->auth_plain = true;
            while (i < len && text[i] == ' ')
                i++;
        }
    } else if (keyword_is(text, len, "8BITMIME", &arg)) {
        caps->eightbitmime = true;
    } else if (keyword_is(text, len, "CHUNKING", &arg)) {
        caps->chunking = true;
    } else if (keyword_is(text, len, "SMTPUTF8", &arg)) {
        caps->smtputf8 = true;
    } else if (keyword_is(text, len, "DSN", &arg)) {
        caps->dsn = true;
    } else if (keyword_is(text, len, "SIZE", &arg)) {
        caps->size = true;
        uint64_t v = 0;
        size_t i = arg;
        bool ok = i < len;
        for (; i < len && text[i] != ' '; i++) {
            if (!isdigit((unsigned char)text[i]) || v > (UINT64_MAX - 9) / 10) {
                ok = false;
                break;
            }
            v = v * 10 + (uint64_t)(text[i] - '0');
        }
        caps->size_max_bytes = ok ? v : 0; /* "SIZE" alone or garbage: no fixed limit */
    }
}
