/*
 * dsn.c - see dsn.h: the RFC 3464 notice builder (failed, delayed, delivered, relayed).
 *
 * Everything that comes from outside (the remote reply, addresses, the configured hostname) is
 * made 7-bit before it goes into a header or a delivery-status field: printable ASCII is kept,
 * runs of CR, LF and TAB become one space (a multi-line reply reads as one line), any other octet
 * becomes "\xHH". The original header section is copied as it is when it is already 7-bit with
 * short lines, and quoted-printable (RFC 2045 6.7) otherwise, so the bounce never needs 8BITMIME.
 *
 * What it does not do: choose where the bounce goes, or whether (storage/queue.c).
 */
#include "common/pure/dsn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/pure/date.h"
#include "common/pure/smtp_parse.h"

/* Continuation lines of the human-readable text are indented by this. */
#define DSN_TEXT_INDENT "    "
/* 128 random bits, in hex, make the boundary and the Message-ID unguessable. */
#define DSN_RANDOM_BYTES 16
/* A boundary that is found in the content is drawn again; twice in a row is already 2^-128. */
#define DSN_BOUNDARY_TRIES 4
/* An address in the text part is cut here (RFC 5321 4.5.3.1.3: a path is at most 256 octets), so
 * the line that starts with it stays far below MESSAGE_LINE_MAX_BYTES. */
#define DSN_ADDRESS_MAX_BYTES 512

/* ---- an output buffer that remembers an allocation failure ---- */

struct obuf {
    unsigned char *p; /* owned */
    size_t len;
    size_t cap;
    bool failed;
};

static void ob_put(struct obuf *b, const void *src, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (n > SIZE_MAX - b->len - 1) {
        b->failed = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        unsigned char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    b->p[b->len] = '\0'; /* so a finished buffer can be read as a C string */
}

static void ob_str(struct obuf *b, const char *s)
{
    ob_put(b, s, strlen(s));
}

static void ob_printf(struct obuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ob_printf(struct obuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->failed = true; /* only short, fixed-shape text goes through here */
        return;
    }
    ob_put(b, tmp, (size_t)n);
}

static void ob_free(struct obuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- making outside text 7-bit ---- */

static bool is_space_octet(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Appends text (NULL counts as "") to b as one line of printable ASCII: CR, LF, TAB and space runs
 * become one space, leading and trailing ones go, other octets outside 0x20-0x7E become "\xHH".
 * At most max octets are added; a cut text ends in "...".
 */
static void ob_escaped(struct obuf *b, const char *text, size_t max)
{
    if (text == NULL)
        return;
    size_t added = 0;
    bool pending_space = false;
    for (const unsigned char *s = (const unsigned char *)text; *s != '\0'; s++) {
        if (is_space_octet(*s)) {
            pending_space = added > 0;
            continue;
        }
        char tok[8];
        size_t n;
        if (*s >= 0x20 && *s < 0x7f) {
            tok[0] = (char)*s;
            n = 1;
        } else {
            n = (size_t)snprintf(tok, sizeof(tok), "\\x%02X", *s);
        }
        if (added + (pending_space ? 1 : 0) + n + 3 > max) {
            ob_str(b, "...");
            return;
        }
        if (pending_space) {
            ob_put(b, " ", 1);
            added++;
            pending_space = false;
        }
        ob_put(b, tok, n);
        added += n;
    }
}

/* A malloc'd escaped copy of text, or NULL when out of memory. */
static char *escaped_copy(const char *text, size_t max)
{
    struct obuf b = {0};
    ob_escaped(&b, text, max);
    if (b.failed) {
        ob_free(&b);
        return NULL;
    }
    if (b.p == NULL)
        return calloc(1, 1);
    return (char *)b.p;
}

static bool is_printable_ascii(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    }
    return true;
}

/* The hostname with anything but letters, digits and ".-_[]:" dropped; "localhost" if nothing
 * is left. */
static void clean_hostname(const char *in, char out[ADDRESS_DOMAIN_MAX_BYTES + 1])
{
    size_t n = 0;
    for (const char *s = in; *s != '\0' && n < ADDRESS_DOMAIN_MAX_BYTES; s++) {
        char c = *s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr(".-_[]:", c) != NULL)
            out[n++] = c;
    }
    out[n] = '\0';
    if (n == 0)
        snprintf(out, ADDRESS_DOMAIN_MAX_BYTES + 1, "localhost");
}

/*
 * Decodes one UTF-8 sequence at s (len > 0 octets left); sets *cp and returns its length, or
 * returns 1 with *cp = U+FFFD for an invalid, overlong or surrogate sequence.
 */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
    static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t n = s[0] < 0x80             ? 1
               : (s[0] & 0xe0) == 0xc0 ? 2
               : (s[0] & 0xf0) == 0xe0 ? 3
               : (s[0] & 0xf8) == 0xf0 ? 4
                                       : 0;
    *cp = 0xfffd;
    if (n == 0 || n > len)
        return 1;
    uint32_t v = n == 1 ? s[0] : (uint32_t)(s[0] & (0x7f >> n));
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 1;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min_for_len[n] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 1;
    *cp = v;
    return n;
}

/*
 * An address for Final-Recipient: "rfc822; addr" when it is printable ASCII, else RFC 6533's
 * "utf-8; " utf-8-addr-xtext: QCHARs as they are, every other code point as "\x{HEX}".
 */
static void ob_address_field(struct obuf *b, const char *addr)
{
    if (is_printable_ascii(addr)) {
        ob_str(b, "rfc822; ");
        ob_str(b, addr);
        return;
    }
    ob_str(b, "utf-8; ");
    const unsigned char *s = (const unsigned char *)addr;
    size_t len = strlen(addr);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += utf8_decode(s + i, len - i, &cp);
        /* RFC 6533 3: QCHAR = %x21-2a / %x2c-3c / %x3e-5b / %x5d-7e */
        if (cp >= 0x21 && cp <= 0x7e && cp != '+' && cp != '=' && cp != '\\') {
            char c = (char)cp;
            ob_put(b, &c, 1);
        } else {
            ob_printf(b, "\\x{%02X}", (unsigned)cp);
        }
    }
}

/* ---- folding ---- */

/*
 * Writes first + value + CRLF, where value (NULL counts as "") is one line of printable ASCII with
 * single spaces (what ob_escaped makes). A line is broken before a space when it would pass
 * MESSAGE_FOLD_COLUMN, and the next line starts with indent: for a header field indent is " ", so
 * the break is RFC 5322 folding (CRLF before the space) and unfolding gives the value back. A word
 * that alone would pass MESSAGE_LINE_MAX_BYTES is cut there (no other way to keep the limit).
 */
static void ob_folded(struct obuf *b, const char *first, const char *value, const char *indent)
{
    size_t indent_len = strlen(indent);
    ob_str(b, first);
    size_t col = strlen(first);
    bool line_has_word = false;
    const char *p = value != NULL ? value : "";
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        size_t wlen = strcspn(p, " ");
        if (line_has_word) {
            if (col + 1 + wlen > MESSAGE_FOLD_COLUMN) {
                ob_str(b, "\r\n");
                ob_str(b, indent);
                col = indent_len;
            } else {
                ob_put(b, " ", 1);
                col++;
            }
        }
        while (wlen > 0) {
            if (col >= MESSAGE_LINE_MAX_BYTES) {
                ob_str(b, "\r\n");
                ob_str(b, indent);
                col = indent_len;
            }
            size_t room = MESSAGE_LINE_MAX_BYTES - col;
            size_t n = wlen < room ? wlen : room;
            ob_put(b, p, n);
            p += n;
            wlen -= n;
            col += n;
        }
        line_has_word = true;
    }
    ob_str(b, "\r\n");
}

/* ---- dates and status codes ---- */

/* Length of an RFC 3463 status code at s ("c.s.d": class 2, 4 or 5, then 1-3 digits twice) that
 * ends at a space or the end of the text; 0 when there is none. */
static size_t status_code_len(const char *s)
{
    if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t digits = 0;
        while (s[i] >= '0' && s[i] <= '9' && digits < 4) {
            i++;
            digits++;
        }
        if (digits == 0 || digits > 3)
            return 0;
        if (part == 0) {
            if (s[i] != '.')
                return 0;
            i++;
        }
    }
    if (s[i] != '\0' && !is_space_octet((unsigned char)s[i]))
        return 0;
    return i;
}

void dsn_status_for(enum dsn_action action, const struct dsn_recipient *r,
                    char out[DSN_STATUS_BYTES])
{
    if (action == DSN_ACTION_DELIVERED || action == DSN_ACTION_RELAYED) {
        /* RFC 3463 X.0.0: success, nothing more to say. */
        snprintf(out, DSN_STATUS_BYTES, "2.0.0");
        return;
    }
    char cls = action == DSN_ACTION_DELAYED ? '4' : '5';
    if (r->expired && action == DSN_ACTION_FAILED) {
        /* RFC 3463 X.4.7 "delivery time expired", final: class 5. */
        snprintf(out, DSN_STATUS_BYTES, "5.4.7");
        return;
    }
    const char *code = NULL;
    size_t len = status_code_len(r->status);
    if (len > 0) {
        code = r->status;
    } else if (r->reply_code != 0 && r->reply != NULL) {
        /* "550 5.1.1 text" or "550-5.1.1 text": the code follows the reply code and one
         * separator (RFC 2034 4). */
        const char *s = r->reply;
        if (s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' &&
            s[2] <= '9' && (s[3] == ' ' || s[3] == '-')) {
            len = status_code_len(s + 4);
            if (len > 0)
                code = s + 4;
        }
    }
    if (code == NULL) {
        snprintf(out, DSN_STATUS_BYTES, "%c.0.0", cls);
        return;
    }
    /* A failure is permanent and a delay transient, whatever class the last reply had. */
    snprintf(out, DSN_STATUS_BYTES, "%c%.*s", cls, (int)(len - 1), code + 1);
}

void dsn_status(const struct dsn_recipient *r, char out[DSN_STATUS_BYTES])
{
    dsn_status_for(DSN_ACTION_FAILED, r, out);
}

/* ---- the original header section ---- */

size_t dsn_header_length(const unsigned char *msg, size_t len)
{
    size_t end = 0;
    size_t i = 0;
    while (i < len) {
        const unsigned char *nl = memchr(msg + i, '\n', len - i);
        size_t line_end = nl != NULL ? (size_t)(nl - msg) + 1 : len;
        size_t content = line_end - i;
        if (nl != NULL) {
            content--;
            if (content > 0 && msg[line_end - 2] == '\r')
                content--;
        }
        if (content == 0 && nl != NULL)
            break; /* the empty line that ends the header section */
        if (line_end > DSN_ORIG_HEADERS_MAX_BYTES)
            break;
        end = line_end;
        i = line_end;
    }
    return end;
}

/* Calls fn for each line of text (len octets): the line without its LF or CRLF. A last line
 * without a line end counts too. */
struct line {
    const unsigned char *p;
    size_t len;
};

static bool next_line(const unsigned char *text, size_t len, size_t *pos, struct line *out)
{
    if (*pos >= len)
        return false;
    const unsigned char *start = text + *pos;
    const unsigned char *nl = memchr(start, '\n', len - *pos);
    size_t n = nl != NULL ? (size_t)(nl - start) : len - *pos;
    *pos += n + (nl != NULL ? 1 : 0);
    if (nl != NULL && n > 0 && start[n - 1] == '\r')
        n--;
    out->p = start;
    out->len = n;
    return true;
}

/* Whether the header section can go as 7bit: no octet outside TAB and 0x20-0x7E (a CR left inside
 * a line counts as one), no line over MESSAGE_LINE_MAX_BYTES. */
static bool headers_are_7bit(const unsigned char *h, size_t len)
{
    size_t pos = 0;
    struct line l;
    while (next_line(h, len, &pos, &l)) {
        if (l.len > MESSAGE_LINE_MAX_BYTES)
            return false;
        for (size_t i = 0; i < l.len; i++) {
            if (l.p[i] != '\t' && (l.p[i] < 0x20 || l.p[i] > 0x7e))
                return false;
        }
    }
    return true;
}

static void ob_headers_7bit(struct obuf *b, const unsigned char *h, size_t len)
{
    size_t pos = 0;
    struct line l;
    while (next_line(h, len, &pos, &l)) {
        ob_put(b, l.p, l.len);
        ob_str(b, "\r\n");
    }
}

/* RFC 2045 6.7: quoted-printable, each line of h a hard line break (CRLF), soft breaks ("=" CRLF)
 * keep encoded lines at MIME_QP_LINE_MAX_BYTES. */
static void ob_headers_qp(struct obuf *b, const unsigned char *h, size_t len)
{
    size_t pos = 0;
    struct line l;
    while (next_line(h, len, &pos, &l)) {
        size_t col = 0;
        for (size_t i = 0; i < l.len; i++) {
            unsigned char c = l.p[i];
            bool last = i + 1 == l.len;
            char tok[4];
            size_t n;
            if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last)) {
                tok[0] = (char)c;
                n = 1;
            } else {
                n = (size_t)snprintf(tok, sizeof(tok), "=%02X", c);
            }
            /* Room for the token and, unless this ends the line, a soft break's "=". */
            if (col + n + (last ? 0 : 1) > MIME_QP_LINE_MAX_BYTES) {
                ob_str(b, "=\r\n");
                col = 0;
            }
            ob_put(b, tok, n);
            col += n;
        }
        ob_str(b, "\r\n");
    }
}

/* ---- the message ---- */

static void hex_random(char *out, size_t nbytes)
{
    unsigned char raw[DSN_RANDOM_BYTES];
    randombytes_buf(raw, nbytes);
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

/* What the text part says first, by action. */
static const char *text_intro(enum dsn_action action, bool whole)
{
    switch (action) {
    case DSN_ACTION_DELAYED:
        return "Your message could not be delivered yet to one or more\r\n"
               "recipients. The mail system will keep trying; you do not need\r\n"
               "to send it again, and you will be told if it gives up. The\r\n"
               "headers of your message are attached below.\r\n";
    case DSN_ACTION_DELIVERED:
        return "Your message was delivered to the mailbox of the recipients\r\n"
               "below, as you asked. The headers of your message are attached\r\n"
               "below.\r\n";
    case DSN_ACTION_RELAYED:
        return "Your message was passed on to the recipients' mail system,\r\n"
               "which does not send delivery notices: you asked for one, and\r\n"
               "this is the last one you will get. The headers of your message\r\n"
               "are attached below.\r\n";
    case DSN_ACTION_FAILED:
        break;
    }
    return whole ? "I'm sorry to have to inform you that your message could not\r\n"
                   "be delivered to one or more recipients. Your message is\r\n"
                   "attached below.\r\n"
                 : "I'm sorry to have to inform you that your message could not\r\n"
                   "be delivered to one or more recipients. The headers of your\r\n"
                   "message are attached below.\r\n";
}

/* The explanation for a person: what happened to each recipient, in a few wrapped lines. */
static int ob_text_part(struct obuf *b, const struct dsn_info *info, const char *host, bool whole)
{
    ob_printf(b, "This is the mail system at host %s.\r\n\r\n", host);
    ob_str(b, text_intro(info->action, whole));
    ob_str(b, "\r\n"
              "For further assistance, please send mail to the postmaster.\r\n"
              "\r\n"
              "                   The mail system\r\n"
              "\r\n");
    for (size_t i = 0; i < info->n_rcpts; i++) {
        const struct dsn_recipient *r = &info->rcpts[i];
        struct obuf v = {0};
        if (r->expired)
            ob_str(&v, "delivery time expired; the last attempt failed: ");
        if (r->remote_mta != NULL && r->remote_mta[0] != '\0') {
            ob_str(&v, "host ");
            ob_escaped(&v, r->remote_mta, ADDRESS_DOMAIN_MAX_BYTES);
            ob_str(&v, " said: ");
        }
        /* A reply of blanks alone escapes to nothing: it is no reason either. */
        size_t before = v.len;
        ob_escaped(&v, r->reply, DSN_DIAGNOSTIC_MAX_BYTES);
        if (v.len == before)
            ob_str(&v, info->action == DSN_ACTION_DELIVERED ? "delivered to mailbox"
                       : info->action == DSN_ACTION_RELAYED ? "relayed"
                                                            : "no reason was recorded");
        struct obuf first = {0};
        ob_str(&first, "<");
        ob_escaped(&first, r->address, DSN_ADDRESS_MAX_BYTES);
        ob_str(&first, ">: ");
        bool failed = v.failed || first.failed;
        if (!failed)
            ob_folded(b, (const char *)first.p, (const char *)v.p, DSN_TEXT_INDENT);
        ob_free(&v);
        ob_free(&first);
        if (failed)
            return DSN_ERR_NO_MEMORY;
    }
    return DSN_OK;
}

/*
 * A field whose value came as xtext (ENVID, the address of ORCPT): decoded when that gives
 * printable ASCII, so a person reads what the sender wrote; else the xtext itself, which is 7-bit
 * and says the same to a program. Folded like every field.
 */
static void ob_xtext_field(struct obuf *b, const char *first, const char *xtext)
{
    char decoded[SMTP_DSN_ORCPT_MAX_BYTES + 1];
    int n = smtp_xtext_decode(xtext, decoded, sizeof(decoded));
    bool plain = n > 0 && (size_t)n == strlen(decoded) && is_printable_ascii(decoded);
    struct obuf v = {0};
    ob_escaped(&v, plain ? decoded : xtext, SMTP_DSN_ORCPT_MAX_BYTES + 8);
    if (!v.failed && v.p != NULL)
        ob_folded(b, first, (const char *)v.p, " ");
    else if (v.failed)
        b->failed = true;
    ob_free(&v);
}

/* RFC 3464 2.2 and 2.3: per-message fields, then one group of per-recipient fields each. */
static int ob_status_part(struct obuf *b, const struct dsn_info *info, const char *host)
{
    static const char *const action_names[] = {"failed", "delayed", "delivered", "relayed"};
    char date[DATE_RFC5322_BYTES];
    /* RFC 3464 2.2.1: first of the per-message fields. */
    if (info->envid != NULL && info->envid[0] != '\0')
        ob_xtext_field(b, "Original-Envelope-Id: ", info->envid);
    ob_printf(b, "Reporting-MTA: dns; %s\r\n", host);
    if (info->arrival_ms > 0) {
        date_rfc5322(info->arrival_ms, date, sizeof(date));
        ob_printf(b, "Arrival-Date: %s\r\n", date);
    }
    for (size_t i = 0; i < info->n_rcpts; i++) {
        const struct dsn_recipient *r = &info->rcpts[i];
        ob_str(b, "\r\n");
        /* RFC 3464 2.3.1: addr-type "; " address, before Final-Recipient. */
        const char *semi = r->orcpt != NULL ? strchr(r->orcpt, ';') : NULL;
        if (semi != NULL) {
            char first[64];
            int tl = (int)(semi - r->orcpt);
            /* The addr-type is an atom (RFC 3461 4.2); anything else is not written. */
            bool atom = tl > 0 && tl < 40;
            for (int k = 0; atom && k < tl; k++) {
                char c = r->orcpt[k];
                atom = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '-' || c == '_' || c == '.';
            }
            if (atom) {
                snprintf(first, sizeof(first), "Original-Recipient: %.*s; ", tl, r->orcpt);
                ob_xtext_field(b, first, semi + 1);
            }
        }
        struct obuf v = {0};
        ob_address_field(&v, r->address);
        if (!v.failed)
            ob_folded(b, "Final-Recipient: ", (const char *)v.p, " ");
        ob_free(&v);
        char status[DSN_STATUS_BYTES];
        dsn_status_for(info->action, r, status);
        ob_printf(b, "Action: %s\r\nStatus: %s\r\n", action_names[info->action], status);
        if (r->remote_mta != NULL && r->remote_mta[0] != '\0') {
            char mta[ADDRESS_DOMAIN_MAX_BYTES + 1];
            clean_hostname(r->remote_mta, mta);
            ob_printf(b, "Remote-MTA: dns; %s\r\n", mta);
        }
        char *diag = escaped_copy(r->reply, DSN_DIAGNOSTIC_MAX_BYTES);
        if (diag == NULL)
            return DSN_ERR_NO_MEMORY;
        if (diag[0] != '\0')
            ob_folded(
                b, r->reply_code != 0 ? "Diagnostic-Code: smtp; " : "Diagnostic-Code: X-Postern; ",
                diag, " ");
        free(diag);
        if (r->last_attempt_ms > 0) {
            date_rfc5322(r->last_attempt_ms, date, sizeof(date));
            ob_printf(b, "Last-Attempt-Date: %s\r\n", date);
        }
        if (v.failed)
            return DSN_ERR_NO_MEMORY;
    }
    return DSN_OK;
}

/* Writes the whole message with the given boundary. */
static int assemble(struct obuf *b, const struct dsn_info *info, const char *host,
                    const char *boundary, const unsigned char *headers, size_t headers_len,
                    bool whole)
{
    static const char *const subjects[] = {
        "Undelivered Mail Returned to Sender",
        "Delayed Mail (still being retried)",
        "Successful Mail Delivery Report",
        "Successful Mail Delivery Report",
    };
    char date[DATE_RFC5322_BYTES];
    char id[2 * DSN_RANDOM_BYTES + 1];
    hex_random(id, DSN_RANDOM_BYTES);
    date_rfc5322(info->now_ms, date, sizeof(date));

    if (info->return_path)
        ob_str(b, "Return-Path: <>\r\n");
    ob_printf(b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
    if (is_printable_ascii(info->sender) && strlen(info->sender) < MESSAGE_LINE_MAX_BYTES - 8) {
        ob_str(b, "To: <");
        ob_str(b, info->sender);
        ob_str(b, ">\r\n");
    } else {
        /* An SMTPUTF8 sender cannot be written in a 7-bit header; the envelope still reaches
         * it. RFC 5322 3.4 group syntax for "nobody named here". */
        ob_str(b, "To: undisclosed-recipients:;\r\n");
    }
    ob_printf(b, "Subject: %s\r\n", subjects[info->action]);
    ob_printf(b, "Date: %s\r\n", date);
    ob_printf(b, "Message-ID: <%s.%lld@%s>\r\n", id, (long long)info->now_ms, host);
    /* RFC 3834 5: automatic responders should not answer this. */
    ob_str(b, "Auto-Submitted: auto-replied\r\n");
    ob_str(b, "MIME-Version: 1.0\r\n");
    ob_printf(b,
              "Content-Type: multipart/report; report-type=delivery-status;\r\n"
              "\tboundary=\"%s\"\r\n",
              boundary);
    ob_str(b, "Content-Transfer-Encoding: 7bit\r\n\r\n");
    ob_str(b, "This is a MIME-encapsulated message.\r\n");

    ob_printf(b, "\r\n--%s\r\n", boundary);
    ob_str(b, "Content-Description: Notification\r\n"
              "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    int status = ob_text_part(b, info, host, whole);

    ob_printf(b, "\r\n--%s\r\n", boundary);
    ob_str(b, "Content-Description: Delivery report\r\n"
              "Content-Type: message/delivery-status\r\n\r\n");
    if (status == DSN_OK)
        status = ob_status_part(b, info, host);

    ob_printf(b, "\r\n--%s\r\n", boundary);
    bool undelivered = info->action == DSN_ACTION_FAILED || info->action == DSN_ACTION_DELAYED;
    if (whole) {
        /* RFC 3461 4.3 RET=FULL; the caller checked it is 7-bit with short lines. */
        ob_str(b, "Content-Description: Undelivered Message\r\n"
                  "Content-Type: message/rfc822\r\n\r\n");
        ob_headers_7bit(b, headers, headers_len);
    } else if (headers_are_7bit(headers, headers_len)) {
        ob_str(b, undelivered ? "Content-Description: Undelivered Message Headers\r\n"
                              : "Content-Description: Message Headers\r\n");
        ob_str(b, "Content-Type: text/rfc822-headers\r\n");
        ob_str(b, "\r\n");
        ob_headers_7bit(b, headers, headers_len);
    } else {
        ob_str(b, undelivered ? "Content-Description: Undelivered Message Headers\r\n"
                              : "Content-Description: Message Headers\r\n");
        ob_str(b, "Content-Type: text/rfc822-headers\r\n");
        ob_str(b, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        ob_headers_qp(b, headers, headers_len);
    }
    ob_printf(b, "\r\n--%s--\r\n", boundary);
    if (status == DSN_OK && b->failed)
        status = DSN_ERR_NO_MEMORY;
    return status;
}

/* How often needle occurs in hay (memmem is a GNU extension). */
static size_t count_occurrences(const unsigned char *hay, size_t len, const char *needle)
{
    size_t n = 0, nlen = strlen(needle);
    if (nlen == 0)
        return 0;
    for (size_t i = 0; i + nlen <= len;) {
        const unsigned char *first = memchr(hay + i, needle[0], len - i - nlen + 1);
        if (first == NULL)
            break;
        i = (size_t)(first - hay);
        if (memcmp(first, needle, nlen) == 0) {
            n++;
            i += nlen;
        } else {
            i++;
        }
    }
    return n;
}

const char *dsn_strerror(int code)
{
    switch (code) {
    case DSN_OK:
        return "bounce: ok";
    case DSN_ERR_INVALID:
        return "bounce: a required field is missing";
    case DSN_ERR_NO_MEMORY:
        return "bounce: out of memory";
    case DSN_ERR_RANDOM:
        return "bounce: no random numbers";
    }
    return "bounce: not a dsn code";
}

int dsn_build(const struct dsn_info *info, const unsigned char *orig, size_t orig_len,
              unsigned char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (info == NULL || info->hostname == NULL || info->sender == NULL || info->sender[0] == '\0' ||
        info->rcpts == NULL || info->n_rcpts == 0 || (orig == NULL && orig_len > 0) ||
        (unsigned)info->action > DSN_ACTION_RELAYED)
        return DSN_ERR_INVALID;
    for (size_t i = 0; i < info->n_rcpts; i++) {
        if (info->rcpts[i].address == NULL || info->rcpts[i].address[0] == '\0')
            return DSN_ERR_INVALID;
    }
    if (sodium_init() < 0)
        return DSN_ERR_RANDOM;
    char host[ADDRESS_DOMAIN_MAX_BYTES + 1];
    clean_hostname(info->hostname, host);
    size_t headers_len = orig != NULL ? dsn_header_length(orig, orig_len) : 0;
    /* RET=FULL: the whole message, when a 7-bit report can carry it as it is. */
    bool whole = info->action == DSN_ACTION_FAILED && info->return_full && orig_len > 0 &&
                 orig_len <= DSN_RETURN_FULL_MAX_BYTES && headers_are_7bit(orig, orig_len);
    if (whole)
        headers_len = orig_len;

    for (int attempt = 0; attempt < DSN_BOUNDARY_TRIES; attempt++) {
        char boundary[16 + 2 * DSN_RANDOM_BYTES + 1];
        memcpy(boundary, "=_postern_", 11);
        hex_random(boundary + 10, DSN_RANDOM_BYTES);
        struct obuf b = {0};
        int status = assemble(&b, info, host, boundary, orig, headers_len, whole);
        if (status != DSN_OK) {
            ob_free(&b);
            return status;
        }
        /* Once in the Content-Type parameter and in four delimiter lines, nowhere else. */
        if (count_occurrences(b.p, b.len, boundary) == 5) {
            *out = b.p;
            *out_len = b.len;
            return DSN_OK;
        }
        ob_free(&b);
    }
    return DSN_ERR_RANDOM;
}
