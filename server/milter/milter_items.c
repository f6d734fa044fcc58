/*
 * milter_items.c - the messages each step sends a milter, made one at a time into the session's
 * encoding buffer when it is that message's turn (so a long body is never encoded at once), with
 * the negotiated "skip" and "no reply" flags that apply to it. The end-of-message step reads the
 * message where it is: the header section once, up front (milter_item_message_begin), the body
 * chunk by chunk from the spool file and then memory, the same content the DKIM signer hashes.
 * Reading the spool file is a page-cache read on the loop thread, as writing it is.
 *
 * Positions of the end-of-message step, per milter: 0 the DATA macros, 1 DATA, then one per
 * header, end of headers, one per body chunk, the end-of-message macros, end of body.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/milter/milter_internal.h"
#include "storage/spool.h"

/* Reads msg[off..off+n) into buf: the spool file's part first, then memory. 0 or -1. */
int milter_message_read(const struct milter_message *msg, uint64_t off, uint8_t *buf, size_t n)
{
    while (n > 0) {
        if (off < msg->spool_len) {
            uint64_t left = msg->spool_len - off;
            size_t k = left < n ? (size_t)left : n;
            if (spool_file_read_at(msg->spool_fd, buf, k, off) != 0)
                return -1;
            buf += k;
            off += k;
            n -= k;
            continue;
        }
        uint64_t moff = off - msg->spool_len;
        if (moff + n > msg->mem_len)
            return -1;
        memcpy(buf, msg->mem + moff, n);
        return 0;
    }
    return 0;
}

/* The end of the line starting at p[i] (after its LF), or len when it has no LF. */
static size_t line_end(const unsigned char *p, size_t i, size_t len)
{
    const unsigned char *lf = memchr(p + i, '\n', len - i);
    return lf != NULL ? (size_t)(lf - p) + 1 : len;
}

static bool is_field_name_char(unsigned char c)
{
    return c > ' ' && c < 0x7f && c != ':';
}

int milter_item_message_begin(struct milter_session *ms, const struct milter_message *msg)
{
    free(ms->hdrs);
    free(ms->hv);
    ms->hdrs = NULL;
    ms->hv = NULL;
    ms->n_hv = 0;
    ms->msg = *msg;
    ms->total = msg->spool_len + msg->mem_len;
    size_t hlen =
        ms->total < MILTER_HEADERS_MAX_BYTES ? (size_t)ms->total : MILTER_HEADERS_MAX_BYTES;
    ms->hdrs = malloc(hlen + 1);
    if (ms->hdrs == NULL || milter_message_read(msg, 0, ms->hdrs, hlen) != 0)
        return -1;
    ms->hdrs_len = hlen;
    const unsigned char *p = ms->hdrs;
    size_t cap = 0, i = 0;
    /* RFC 5322 2.2: name ":" value, continued on lines starting with white space; the section
     * ends at an empty line, or at a line that is neither (the body starts there). */
    while (i < hlen) {
        size_t e = line_end(p, i, hlen);
        if (e == hlen && e - i > 0 && p[e - 1] != '\n' && hlen < ms->total)
            return -1; /* the section goes on past what was read */
        if (p[i] == '\r' || p[i] == '\n') {
            i = e;
            break;
        }
        if ((p[i] == ' ' || p[i] == '\t') && ms->n_hv > 0) {
            struct milter_hdr *h = &ms->hv[ms->n_hv - 1];
            h->value_len = e - h->value_off;
            i = e;
            continue;
        }
        size_t j = i;
        while (j < e && is_field_name_char(p[j]))
            j++;
        if (j == i || j >= e || p[j] != ':')
            break;
        if (ms->n_hv == cap) {
            cap = cap ? cap * 2 : 32;
            struct milter_hdr *hv = realloc(ms->hv, cap * sizeof(*hv));
            if (hv == NULL)
                return -1;
            ms->hv = hv;
        }
        size_t v = j + 1;
        while (v < e && (p[v] == ' ' || p[v] == '\t'))
            v++;
        ms->hv[ms->n_hv++] = (struct milter_hdr){i, j - i, v, e - v};
        i = e;
    }
    if (i == hlen && hlen < ms->total)
        return -1; /* a header section longer than MILTER_HEADERS_MAX_BYTES */
    ms->body_off = i;
    return 0;
}

/* A header's value without its last line ending; the CRLFs of folding stay (libmilter's way). */
static size_t value_len(const unsigned char *v, size_t len)
{
    if (len > 0 && v[len - 1] == '\n')
        len--;
    if (len > 0 && v[len - 1] == '\r')
        len--;
    return len;
}

static size_t body_chunks(const struct milter_session *ms)
{
    uint64_t body = ms->total - ms->body_off;
    return (size_t)((body + MILTER_CHUNK_MAX - 1) / MILTER_CHUNK_MAX);
}

size_t milter_item_skip_body(const struct milter_session *ms)
{
    return 2 + ms->n_hv + 1 + body_chunks(ms);
}

static void item_set(struct milter_item *it, struct milter_conn *m, enum milter_step step,
                     size_t len)
{
    it->step = step;
    it->step_sent = milter_step_sent(m->protocol, step);
    it->answered = milter_step_answered(m->protocol, step);
    it->data = m->ms->ebuf;
    it->len = len;
}

/* Macros for the message that follows (not answered), sent when that message is. */
static int macros(struct milter_session *ms, struct milter_conn *m, struct milter_item *it,
                  enum milter_step step, char cmd, const struct milter_macro *mac, size_t n)
{
    size_t len = milter_enc_macro(ms->ebuf, MILTER_HEADER_LEN + MILTER_FRAME_LEN_MAX, cmd, mac, n);
    if (len == 0)
        return -1;
    item_set(it, m, step, len);
    it->answered = false;
    return 1;
}

static int message_item(struct milter_session *ms, struct milter_conn *m, size_t pos,
                        struct milter_item *it)
{
    const size_t cap = MILTER_HEADER_LEN + MILTER_FRAME_LEN_MAX;
    uint8_t *b = ms->ebuf;
    size_t nh = ms->n_hv, nb = body_chunks(ms);
    if (pos == 0) {
        struct milter_macro mac[] = {{"i", ms->queue_id}};
        return macros(ms, m, it, MILTER_STEP_DATA, MILTER_CMD_DATA, mac, 1);
    }
    if (pos == 1) {
        item_set(it, m, MILTER_STEP_DATA, milter_enc_empty(b, cap, MILTER_CMD_DATA));
        return 1;
    }
    pos -= 2;
    if (pos < nh) {
        const struct milter_hdr *h = &ms->hv[pos];
        char name[1000];
        if (h->name_len >= sizeof(name))
            return -1;
        memcpy(name, ms->hdrs + h->name_off, h->name_len);
        name[h->name_len] = '\0';
        size_t vl = value_len(ms->hdrs + h->value_off, h->value_len);
        char *value = malloc(vl + 1);
        if (value == NULL)
            return -1;
        memcpy(value, ms->hdrs + h->value_off, vl);
        value[vl] = '\0';
        /* A NUL inside a value would end it early; the milter sees what a C reader would. */
        size_t len = milter_enc_header(b, cap, name, value);
        free(value);
        if (len == 0)
            return -1;
        item_set(it, m, MILTER_STEP_HEADER, len);
        return 1;
    }
    pos -= nh;
    if (pos == 0) {
        item_set(it, m, MILTER_STEP_EOH, milter_enc_empty(b, cap, MILTER_CMD_EOH));
        return 1;
    }
    pos -= 1;
    if (pos < nb) {
        uint64_t off = ms->body_off + (uint64_t)pos * MILTER_CHUNK_MAX;
        uint64_t left = ms->total - off;
        size_t n = left < MILTER_CHUNK_MAX ? (size_t)left : MILTER_CHUNK_MAX;
        /* Encoded in place: the frame header, then the chunk read straight behind it. */
        if (milter_message_read(&ms->msg, off, b + MILTER_HEADER_LEN + 1, n) != 0)
            return -1;
        uint32_t flen = (uint32_t)n + 1;
        b[0] = (uint8_t)(flen >> 24);
        b[1] = (uint8_t)(flen >> 16);
        b[2] = (uint8_t)(flen >> 8);
        b[3] = (uint8_t)flen;
        b[4] = MILTER_CMD_BODY;
        item_set(it, m, MILTER_STEP_BODY, MILTER_HEADER_LEN + 1 + n);
        return 1;
    }
    pos -= nb;
    if (pos == 0) {
        struct milter_macro mac[] = {{"i", ms->queue_id}};
        int rc = macros(ms, m, it, MILTER_STEP_EOM, MILTER_CMD_BODYEOB, mac, 1);
        return rc;
    }
    if (pos == 1) {
        item_set(it, m, MILTER_STEP_EOM, milter_enc_empty(b, cap, MILTER_CMD_BODYEOB));
        return 1;
    }
    return 0;
}

int milter_item_make(struct milter_session *ms, struct milter_conn *m, size_t pos,
                     struct milter_item *it)
{
    const size_t cap = MILTER_HEADER_LEN + MILTER_FRAME_LEN_MAX;
    uint8_t *b = ms->ebuf;
    size_t len = 0;
    switch (ms->step) {
    case MILTER_STEP_CONNECT: {
        if (pos == 0) {
            struct milter_macro mac[] = {{"j", ms->hostname},
                                         {"{daemon_name}", ms->daemon},
                                         {"{client_addr}", ms->peer_ip},
                                         {"{client_name}", ms->peer_name}};
            return macros(ms, m, it, MILTER_STEP_CONNECT, MILTER_CMD_CONNECT, mac, 4);
        }
        if (pos > 1)
            return 0;
        len = milter_enc_connect(b, cap, ms->peer_name,
                                 ms->ipv6 ? MILTER_FAMILY_INET6 : MILTER_FAMILY_INET, ms->peer_port,
                                 ms->peer_ip);
        break;
    }
    case MILTER_STEP_HELO: {
        if (pos == 0) {
            struct milter_macro mac[] = {
                {"{tls_version}", ms->tls_version[0] ? ms->tls_version : NULL}};
            return macros(ms, m, it, MILTER_STEP_HELO, MILTER_CMD_HELO, mac, 1);
        }
        if (pos > 1)
            return 0;
        len = milter_enc_helo(b, cap, ms->helo);
        break;
    }
    case MILTER_STEP_MAIL:
    case MILTER_STEP_RCPT: {
        bool mail = ms->step == MILTER_STEP_MAIL;
        if (pos == 0) {
            struct milter_macro mac[] = {
                {mail ? "{mail_addr}" : "{rcpt_addr}", mail ? ms->mail_addr : ms->rcpt_addr},
                {"{auth_authen}", mail && ms->auth_user[0] ? ms->auth_user : NULL},
                {"{tls_version}", mail && ms->tls_version[0] ? ms->tls_version : NULL}};
            return macros(ms, m, it, ms->step, mail ? MILTER_CMD_MAIL : MILTER_CMD_RCPT, mac, 3);
        }
        if (pos > 1)
            return 0;
        len =
            milter_enc_args(b, cap, mail ? MILTER_CMD_MAIL : MILTER_CMD_RCPT, ms->args, ms->n_args);
        break;
    }
    case MILTER_STEP_EOM:
        return message_item(ms, m, pos, it);
    default:
        return 0;
    }
    if (len == 0)
        return -1;
    item_set(it, m, ms->step, len);
    return 1;
}
