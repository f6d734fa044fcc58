/*
 * milter.c - see milter.h. Every length read from a milter is checked against what is left of
 * the payload before it is used; a string counts only when its NUL is inside the payload.
 */
#include "common/pure/milter.h"

#include <string.h>

/* ---- encoding ---- */

/* A message under construction in out[0..cap); ok turns false once something does not fit. */
struct enc {
    uint8_t *out;
    size_t cap, len;
    bool ok;
};

static void put(struct enc *e, const void *p, size_t n)
{
    if (!e->ok || n > e->cap - e->len) {
        e->ok = false;
        return;
    }
    if (n > 0)
        memcpy(e->out + e->len, p, n);
    e->len += n;
}

static void put_u32(struct enc *e, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(e, b, 4);
}

static void put_str(struct enc *e, const char *s)
{
    put(e, s, strlen(s) + 1);
}

/* Leaves room for the length and writes the command octet. */
static struct enc enc_begin(uint8_t *out, size_t cap, char cmd)
{
    struct enc e = {out, cap, 0, true};
    put_u32(&e, 0);
    uint8_t c = (uint8_t)cmd;
    put(&e, &c, 1);
    return e;
}

/* Fills in the length; 0 when the message did not fit or is longer than a frame may be. */
static size_t enc_end(struct enc *e)
{
    if (!e->ok || e->len - MILTER_HEADER_LEN > MILTER_FRAME_LEN_MAX)
        return 0;
    uint32_t n = (uint32_t)(e->len - MILTER_HEADER_LEN);
    e->out[0] = (uint8_t)(n >> 24);
    e->out[1] = (uint8_t)(n >> 16);
    e->out[2] = (uint8_t)(n >> 8);
    e->out[3] = (uint8_t)n;
    return e->len;
}

size_t milter_enc_optneg(uint8_t *out, size_t cap, uint32_t version, uint32_t actions,
                         uint32_t protocol)
{
    struct enc e = enc_begin(out, cap, MILTER_CMD_OPTNEG);
    put_u32(&e, version);
    put_u32(&e, actions);
    put_u32(&e, protocol);
    return enc_end(&e);
}

size_t milter_enc_macro(uint8_t *out, size_t cap, char cmd, const struct milter_macro *m, size_t n)
{
    struct enc e = enc_begin(out, cap, MILTER_CMD_MACRO);
    uint8_t c = (uint8_t)cmd;
    put(&e, &c, 1);
    for (size_t i = 0; i < n; i++) {
        if (m[i].name == NULL || m[i].value == NULL || m[i].name[0] == '\0')
            continue;
        put_str(&e, m[i].name);
        put_str(&e, m[i].value);
    }
    return enc_end(&e);
}

size_t milter_enc_connect(uint8_t *out, size_t cap, const char *hostname, char family,
                          uint16_t port, const char *address)
{
    if (family != MILTER_FAMILY_UNKNOWN && family != MILTER_FAMILY_UNIX &&
        family != MILTER_FAMILY_INET && family != MILTER_FAMILY_INET6)
        return 0;
    struct enc e = enc_begin(out, cap, MILTER_CMD_CONNECT);
    put_str(&e, hostname);
    uint8_t f = (uint8_t)family;
    put(&e, &f, 1);
    if (family != MILTER_FAMILY_UNKNOWN) {
        uint8_t p[2] = {(uint8_t)(port >> 8), (uint8_t)port};
        put(&e, p, 2);
        put_str(&e, address);
    }
    return enc_end(&e);
}

size_t milter_enc_helo(uint8_t *out, size_t cap, const char *helo)
{
    struct enc e = enc_begin(out, cap, MILTER_CMD_HELO);
    put_str(&e, helo);
    return enc_end(&e);
}

size_t milter_enc_args(uint8_t *out, size_t cap, char cmd, const char *const *args, size_t n)
{
    if ((cmd != MILTER_CMD_MAIL && cmd != MILTER_CMD_RCPT) || n == 0)
        return 0;
    struct enc e = enc_begin(out, cap, cmd);
    for (size_t i = 0; i < n; i++)
        put_str(&e, args[i]);
    return enc_end(&e);
}

size_t milter_enc_header(uint8_t *out, size_t cap, const char *name, const char *value)
{
    if (name[0] == '\0')
        return 0;
    struct enc e = enc_begin(out, cap, MILTER_CMD_HEADER);
    put_str(&e, name);
    put_str(&e, value);
    return enc_end(&e);
}

size_t milter_enc_body(uint8_t *out, size_t cap, const uint8_t *chunk, size_t len)
{
    if (len > MILTER_CHUNK_MAX)
        return 0;
    struct enc e = enc_begin(out, cap, MILTER_CMD_BODY);
    put(&e, chunk, len);
    return enc_end(&e);
}

size_t milter_enc_empty(uint8_t *out, size_t cap, char cmd)
{
    switch (cmd) {
    case MILTER_CMD_DATA:
    case MILTER_CMD_EOH:
    case MILTER_CMD_BODYEOB:
    case MILTER_CMD_ABORT:
    case MILTER_CMD_QUIT:
    case MILTER_CMD_QUIT_NC:
        break;
    default:
        return 0;
    }
    struct enc e = enc_begin(out, cap, cmd);
    return enc_end(&e);
}

/* ---- framing and decoding ---- */

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int milter_frame(const uint8_t *in, size_t n, uint8_t *cmd, const uint8_t **payload, size_t *len,
                 size_t *used)
{
    if (n < MILTER_HEADER_LEN)
        return MILTER_FRAME_MORE;
    uint32_t flen = get_u32(in);
    if (flen == 0 || flen > MILTER_FRAME_LEN_MAX)
        return MILTER_FRAME_BAD;
    if (n - MILTER_HEADER_LEN < flen)
        return MILTER_FRAME_MORE;
    *cmd = in[MILTER_HEADER_LEN];
    *payload = in + MILTER_HEADER_LEN + 1;
    *len = flen - 1;
    *used = MILTER_HEADER_LEN + flen;
    return MILTER_FRAME_OK;
}

/* A reader over one payload; ok turns false at the first field that is not there. */
struct dec {
    const uint8_t *p;
    size_t len, off;
    bool ok;
};

static uint32_t take_u32(struct dec *d)
{
    if (!d->ok || d->len - d->off < 4) {
        d->ok = false;
        return 0;
    }
    uint32_t v = get_u32(d->p + d->off);
    d->off += 4;
    return v;
}

/* A NUL-ended string starting at the cursor, or NULL when its NUL is not in the payload. */
static const char *take_str(struct dec *d)
{
    if (!d->ok)
        return NULL;
    const uint8_t *start = d->p + d->off;
    const uint8_t *nul = memchr(start, '\0', d->len - d->off);
    if (nul == NULL) {
        d->ok = false;
        return NULL;
    }
    d->off += (size_t)(nul - start) + 1;
    return (const char *)start;
}

static bool at_end(const struct dec *d)
{
    return d->ok && d->off == d->len;
}

int milter_replycode(const char *text)
{
    if ((text[0] != '4' && text[0] != '5') || text[1] < '0' || text[1] > '9' || text[2] < '0' ||
        text[2] > '9')
        return 0;
    if (text[3] != '\0' && text[3] != ' ' && text[3] != '-')
        return 0;
    /* The text goes to the client: no control octet but the CRLF between lines. */
    for (const char *s = text; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\r' && s[1] == '\n') {
            s++;
            continue;
        }
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
}

static int decode_optneg(struct dec *d, struct milter_reply *r)
{
    r->version = take_u32(d);
    r->actions = take_u32(d);
    r->protocol = take_u32(d);
    if (!d->ok)
        return -1;
    /* Version 6 may follow with the macros the milter wants, per stage. */
    while (d->off < d->len) {
        uint32_t stage = take_u32(d);
        const char *list = take_str(d);
        if (!d->ok || stage >= MILTER_STAGE_COUNT)
            return -1;
        r->symlist[stage] = list;
    }
    return 0;
}

int milter_decode_reply(uint8_t cmd, const uint8_t *payload, size_t len, struct milter_reply *r)
{
    memset(r, 0, sizeof(*r));
    struct dec d = {payload, len, 0, true};
    r->kind = (enum milter_reply_kind)cmd;
    switch (cmd) {
    case MILTER_R_ACCEPT:
    case MILTER_R_CONTINUE:
    case MILTER_R_DISCARD:
    case MILTER_R_REJECT:
    case MILTER_R_TEMPFAIL:
    case MILTER_R_PROGRESS:
    case MILTER_R_SKIP:
    case MILTER_R_SHUTDOWN:
    case MILTER_R_CONN_FAIL:
        break;
    case MILTER_R_REPLYCODE:
        r->text = take_str(&d);
        if (r->text != NULL && milter_replycode(r->text) == 0)
            return -1;
        break;
    case MILTER_R_QUARANTINE:
        r->text = take_str(&d);
        break;
    case MILTER_R_ADDHEADER:
        r->name = take_str(&d);
        r->value = take_str(&d);
        break;
    case MILTER_R_INSHEADER:
    case MILTER_R_CHGHEADER:
        r->index = take_u32(&d);
        r->name = take_str(&d);
        r->value = take_str(&d);
        break;
    case MILTER_R_ADDRCPT:
    case MILTER_R_DELRCPT:
        r->addr = take_str(&d);
        break;
    case MILTER_R_ADDRCPT_PAR:
    case MILTER_R_CHGFROM:
        r->addr = take_str(&d);
        /* The parameters are optional: libmilter leaves them out when there are none. */
        if (d.ok && d.off < d.len)
            r->args = take_str(&d);
        break;
    case MILTER_R_REPLBODY:
        r->body = payload;
        r->body_len = len;
        d.off = len;
        break;
    case MILTER_R_SETSYMLIST:
        r->stage = take_u32(&d);
        r->text = take_str(&d);
        if (d.ok && r->stage >= MILTER_STAGE_COUNT)
            return -1;
        break;
    case MILTER_R_OPTNEG:
        return decode_optneg(&d, r);
    default:
        return -1;
    }
    if (!at_end(&d))
        return -1;
    if (r->name != NULL && r->name[0] == '\0')
        return -1;
    return 0;
}

int milter_negotiate(const struct milter_reply *r, uint32_t offer_actions, uint32_t offer_protocol)
{
    if (r->kind != MILTER_R_OPTNEG || r->version < MILTER_VERSION_MIN ||
        r->version > MILTER_VERSION)
        return -1;
    if ((r->actions & ~offer_actions) != 0 || (r->protocol & ~offer_protocol) != 0)
        return -1;
    return 0;
}

/* The "no such step" and "no reply" flag of each step; 0 where the protocol has none. */
static const struct {
    uint32_t skip, noreply;
} step_flags[] = {
    [MILTER_STEP_CONNECT] = {MILTER_P_NOCONNECT, MILTER_P_NR_CONN},
    [MILTER_STEP_HELO] = {MILTER_P_NOHELO, MILTER_P_NR_HELO},
    [MILTER_STEP_MAIL] = {MILTER_P_NOMAIL, MILTER_P_NR_MAIL},
    [MILTER_STEP_RCPT] = {MILTER_P_NORCPT, MILTER_P_NR_RCPT},
    [MILTER_STEP_DATA] = {MILTER_P_NODATA, MILTER_P_NR_DATA},
    [MILTER_STEP_HEADER] = {MILTER_P_NOHDRS, MILTER_P_NR_HDR},
    [MILTER_STEP_EOH] = {MILTER_P_NOEOH, MILTER_P_NR_EOH},
    [MILTER_STEP_BODY] = {MILTER_P_NOBODY, MILTER_P_NR_BODY},
    [MILTER_STEP_EOM] = {0, 0},
};

bool milter_step_sent(uint32_t protocol, enum milter_step step)
{
    return (protocol & step_flags[step].skip) == 0;
}

bool milter_step_answered(uint32_t protocol, enum milter_step step)
{
    return (protocol & step_flags[step].noreply) == 0;
}

bool milter_reply_allowed(enum milter_reply_kind kind, enum milter_step step, uint32_t actions)
{
    uint32_t need = 0;
    switch (kind) {
    case MILTER_R_ACCEPT:
    case MILTER_R_CONTINUE:
    case MILTER_R_DISCARD:
    case MILTER_R_REJECT:
    case MILTER_R_TEMPFAIL:
    case MILTER_R_REPLYCODE:
        return true;
    case MILTER_R_SKIP:
        return step == MILTER_STEP_BODY;
    case MILTER_R_PROGRESS:
        return step == MILTER_STEP_EOM;
    case MILTER_R_ADDHEADER:
        need = MILTER_ACT_ADDHDRS;
        break;
    case MILTER_R_INSHEADER:
    case MILTER_R_CHGHEADER:
        need = MILTER_ACT_CHGHDRS;
        break;
    case MILTER_R_REPLBODY:
        need = MILTER_ACT_CHGBODY;
        break;
    case MILTER_R_ADDRCPT:
        need = MILTER_ACT_ADDRCPT;
        break;
    case MILTER_R_ADDRCPT_PAR:
        need = MILTER_ACT_ADDRCPT_PAR;
        break;
    case MILTER_R_DELRCPT:
        need = MILTER_ACT_DELRCPT;
        break;
    case MILTER_R_CHGFROM:
        need = MILTER_ACT_CHGFROM;
        break;
    case MILTER_R_QUARANTINE:
        need = MILTER_ACT_QUARANTINE;
        break;
    default:
        return false;
    }
    return step == MILTER_STEP_EOM && (actions & need) != 0;
}

/* ---- the list of milters ---- */

static int spec_one(const char *item, size_t len, struct milter_spec *sp, const char **why)
{
    memset(sp, 0, sizeof(*sp));
    if (len > 5 && memcmp(item, "unix:", 5) == 0) {
        size_t plen = len - 5;
        if (item[5] != '/' || plen >= sizeof(sp->path)) {
            *why = "a unix: milter needs an absolute path of at most 107 bytes";
            return -1;
        }
        sp->is_unix = true;
        memcpy(sp->path, item + 5, plen);
        return 0;
    }
    if (len <= 5 || memcmp(item, "inet:", 5) != 0) {
        *why = "expected inet:HOST:PORT or unix:/path";
        return -1;
    }
    const char *h = item + 5;
    const char *end = item + len;
    const char *colon = NULL;
    for (const char *q = end; q > h; q--)
        if (q[-1] == ':') {
            colon = q - 1;
            break;
        }
    if (colon == NULL || colon == h || colon + 1 == end) {
        *why = "an inet: milter needs HOST:PORT";
        return -1;
    }
    const char *hs = h, *he = colon;
    if (*hs == '[' && he[-1] == ']') {
        hs++;
        he--;
    }
    unsigned long port = 0;
    for (const char *q = colon + 1; q < end; q++) {
        if (*q < '0' || *q > '9' || port > 65535) {
            *why = "the port of an inet: milter is a number from 1 to 65535";
            return -1;
        }
        port = port * 10 + (unsigned long)(*q - '0');
    }
    if (port == 0 || port > 65535 || he <= hs || (size_t)(he - hs) >= sizeof(sp->host)) {
        *why = "an inet: milter needs a host and a port from 1 to 65535";
        return -1;
    }
    for (const char *q = hs; q < he; q++)
        if ((unsigned char)*q <= ' ' || *q == ',' || (unsigned char)*q >= 0x7f) {
            *why = "the host of an inet: milter has a character a host name cannot have";
            return -1;
        }
    memcpy(sp->host, hs, (size_t)(he - hs));
    sp->port = (uint16_t)port;
    return 0;
}

int milter_spec_parse(const char *text, struct milter_spec out[MILTER_LIST_MAX], size_t *n,
                      const char **why)
{
    *n = 0;
    const char *p = text;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);
        const char *s = p, *e = end;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e == s) {
            *why = "an empty item in the list";
            return -1;
        }
        if (*n == MILTER_LIST_MAX) {
            *why = "more than 8 milters";
            return -1;
        }
        if (spec_one(s, (size_t)(e - s), &out[*n], why) != 0)
            return -1;
        (*n)++;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}
