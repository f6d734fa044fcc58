/*
 * dkim.c - see dkim.h: canonicalisation, the body hash, the choice of h=, the header hash input
 * and the DKIM-Signature field. Keys and the signature primitive are in dkim_key.c. Everything
 * here is computation on borrowed input; the one thing it allocates is the field dkim_sign
 * returns (and scratch it frees before returning).
 */
#include "common/pure/dkim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/pure/address.h"

const char *dkim_strerror(int code)
{
    switch (code) {
    case DKIM_ERR_NO_FROM:
        return "dkim: no From field";
    case DKIM_ERR_MANY_FROM:
        return "dkim: more than one From field or address";
    case DKIM_ERR_BAD_FROM:
        return "dkim: From address without a usable domain";
    case DKIM_ERR_TOO_MANY:
        return "dkim: too many header fields to sign";
    case DKIM_ERR_BAD_FIELD:
        return "dkim: a header line that is no field";
    case DKIM_ERR_BAD_KEY:
        return "dkim: the key cannot be read";
    case DKIM_ERR_CRYPTO:
        return "dkim: the crypto library failed";
    case DKIM_ERR_NO_MEMORY:
        return "dkim: out of memory";
    case DKIM_ERR_BAD_ARGUMENT:
        return "dkim: argument out of range";
    default:
        return "dkim: not a dkim code";
    }
}

const char *dkim_reason(int code)
{
    switch (code) {
    case DKIM_ERR_NO_FROM:
        return "no-from";
    case DKIM_ERR_MANY_FROM:
        return "many-from";
    case DKIM_ERR_BAD_FROM:
        return "bad-from";
    case DKIM_ERR_TOO_MANY:
        return "too-many-fields";
    case DKIM_ERR_BAD_FIELD:
        return "bad-header";
    case DKIM_ERR_BAD_KEY:
        return "bad-key";
    case DKIM_ERR_CRYPTO:
        return "crypto-failure";
    case DKIM_ERR_NO_MEMORY:
        return "no-memory";
    default:
        return "internal-error";
    }
}

const char *dkim_alg_name(enum dkim_alg alg)
{
    return alg == DKIM_RSA ? "rsa" : "ed25519";
}

int dkim_alg_parse(const char *name, enum dkim_alg *out)
{
    if (strcmp(name, "ed25519") == 0)
        *out = DKIM_ED25519;
    else if (strcmp(name, "rsa") == 0)
        *out = DKIM_RSA;
    else
        return -1;
    return 0;
}

static bool is_wsp(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* ---------------------------------------------------------------- header canonicalisation */

int dkim_canon_header(const char *field, size_t len, bool crlf, char *out, size_t cap)
{
    const char *colon = memchr(field, ':', len);
    if (colon == NULL)
        return DKIM_ERR_BAD_FIELD;
    if (cap < len + 2)
        return DKIM_ERR_BAD_ARGUMENT;
    size_t name_len = (size_t)(colon - field);
    while (name_len > 0 && is_wsp((unsigned char)field[name_len - 1]))
        name_len--;
    size_t n = 0;
    for (size_t i = 0; i < name_len; i++) {
        unsigned char c = (unsigned char)field[i];
        out[n++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    out[n++] = ':';
    /* The value: CRLF pairs vanish (unfolding), so a fold's CR LF SP is a lone SP and joins the
     * white space around it; white space is written only when content follows it, which drops
     * it at both ends. */
    bool wsp = false, started = false;
    for (size_t i = (size_t)(colon - field) + 1; i < len; i++) {
        unsigned char c = (unsigned char)field[i];
        if (c == '\r' && i + 1 < len && field[i + 1] == '\n') {
            i++;
            continue;
        }
        if (is_wsp(c)) {
            wsp = true;
            continue;
        }
        if (wsp && started)
            out[n++] = ' ';
        wsp = false;
        started = true;
        out[n++] = (char)c;
    }
    if (crlf) {
        out[n++] = '\r';
        out[n++] = '\n';
    }
    return (int)n;
}

/* ---------------------------------------------------------------- body canonicalisation */

static void body_flush(struct dkim_body *b)
{
    crypto_hash_sha256_update(&b->sha, b->out, b->n);
    b->n = 0;
}

static void body_put(struct dkim_body *b, unsigned char c)
{
    if (b->n == sizeof(b->out))
        body_flush(b);
    b->out[b->n++] = c;
}

/* An octet that is neither white space nor a line end: the empty lines before it were not at
 * the end of the body after all, and a white space run before it is inside the line. */
static void body_content(struct dkim_body *b, unsigned char c)
{
    for (; b->blank_lines > 0; b->blank_lines--) {
        body_put(b, '\r');
        body_put(b, '\n');
    }
    if (b->wsp)
        body_put(b, ' ');
    b->wsp = false;
    b->content = true;
    body_put(b, c);
}

void dkim_body_init(struct dkim_body *b)
{
    memset(b, 0, sizeof(*b));
    crypto_hash_sha256_init(&b->sha);
}

void dkim_body_update(struct dkim_body *b, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        /* Inside a line with nothing pending, a run of octets that are neither white space
         * nor CR is hashed as it is, without the octet-by-octet staging. */
        if (!b->cr && !b->wsp && b->blank_lines == 0) {
            size_t j = i;
            while (j < len && p[j] != ' ' && p[j] != '\t' && p[j] != '\r')
                j++;
            if (j - i >= 32) {
                body_flush(b);
                crypto_hash_sha256_update(&b->sha, p + i, j - i);
                b->content = true;
                i = j - 1;
                continue;
            }
        }
        if (b->cr) {
            b->cr = false;
            if (c == '\n') {
                /* White space at the line end is dropped with b->wsp; an empty line waits. */
                if (b->content) {
                    body_put(b, '\r');
                    body_put(b, '\n');
                } else {
                    b->blank_lines++;
                }
                b->content = false;
                b->wsp = false;
                continue;
            }
            body_content(b, '\r');
        }
        if (c == '\r')
            b->cr = true;
        else if (is_wsp(c))
            b->wsp = true;
        else
            body_content(b, c);
    }
}

void dkim_body_final(struct dkim_body *b, uint8_t hash_out[DKIM_HASH_BYTES])
{
    if (b->cr)
        body_content(b, '\r');
    if (b->content) {
        body_put(b, '\r');
        body_put(b, '\n');
    }
    body_flush(b);
    crypto_hash_sha256_final(&b->sha, hash_out);
    sodium_memzero(b, sizeof(*b));
}

/* ---------------------------------------------------------------- the header section */

bool dkim_next_field(const char *hdr, size_t hdr_len, size_t *pos, size_t *start, size_t *len)
{
    size_t p = *pos;
    /* Continuation lines with no field above them belong to nothing. */
    while (p < hdr_len && is_wsp((unsigned char)hdr[p])) {
        const char *lf = memchr(hdr + p, '\n', hdr_len - p);
        p = lf == NULL ? hdr_len : (size_t)(lf - hdr) + 1;
    }
    if (p >= hdr_len) {
        *pos = hdr_len;
        return false;
    }
    size_t s = p;
    for (;;) {
        const char *lf = memchr(hdr + p, '\n', hdr_len - p);
        p = lf == NULL ? hdr_len : (size_t)(lf - hdr) + 1;
        if (p >= hdr_len || !is_wsp((unsigned char)hdr[p]))
            break;
    }
    *start = s;
    *len = p - s;
    *pos = p;
    return true;
}

bool dkim_field_is(const char *field, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(field, name, n) != 0)
        return false;
    for (size_t i = n; i < len; i++) {
        if (field[i] == ':')
            return true;
        if (!is_wsp((unsigned char)field[i]))
            return false;
    }
    return false;
}

int dkim_from_domain(const char *hdr, size_t hdr_len, char *out, size_t cap)
{
    size_t pos = 0, s, n, from_start = 0, from_len = 0, count = 0;
    while (dkim_next_field(hdr, hdr_len, &pos, &s, &n)) {
        if (dkim_field_is(hdr + s, n, "From")) {
            from_start = s;
            from_len = n;
            count++;
        }
    }
    if (count == 0)
        return DKIM_ERR_NO_FROM;
    if (count > 1)
        return DKIM_ERR_MANY_FROM;
    const char *f = hdr + from_start;
    const char *v = memchr(f, ':', from_len) + 1;
    size_t vlen = from_len - (size_t)(v - f);
    /* The address without display name and comments: the text between the angle brackets
     * when there are any, otherwise the whole value less comments and white space. A
     * comma outside quotes, comments and brackets separates two authors. */
    char addr[ADDRESS_PATH_MAX_BYTES + 1];
    size_t an = 0;
    int depth = 0;
    bool quoted = false, angle = false, had_angle = false, overflow = false;
    for (size_t i = 0; i < vlen; i++) {
        char c = v[i];
        bool keep = false;
        if (quoted) {
            if (c == '\\' && i + 1 < vlen)
                i++;
            else if (c == '"')
                quoted = false;
            keep = !had_angle || angle;
        } else if (depth > 0) {
            if (c == '\\' && i + 1 < vlen)
                i++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
            continue;
        } else if (c == '(') {
            depth++;
            continue;
        } else if (c == '"') {
            quoted = true;
            keep = !had_angle || angle;
        } else if (c == '<') {
            if (had_angle)
                return DKIM_ERR_MANY_FROM;
            angle = had_angle = true;
            an = 0; /* what came before was the display name */
            continue;
        } else if (c == '>') {
            angle = false;
            continue;
        } else if (c == ',' && !angle) {
            return DKIM_ERR_MANY_FROM;
        } else if (c == ':' || c == ';') {
            return DKIM_ERR_BAD_FROM; /* group syntax: nobody in particular */
        } else {
            keep = (!had_angle || angle) && c != ' ' && c != '\t' && c != '\r' && c != '\n';
        }
        if (keep) {
            if (an + 1 >= sizeof(addr))
                overflow = true;
            else
                addr[an++] = c;
        }
    }
    if (overflow || an == 0)
        return DKIM_ERR_BAD_FROM;
    addr[an] = '\0';
    char *at = strrchr(addr, '@');
    const char *why = NULL;
    if (at == NULL || at == addr || cap < ADDRESS_DOMAIN_MAX_BYTES + 1 ||
        domain_normalize(at + 1, out, cap, &why) != 0)
        return DKIM_ERR_BAD_FROM;
    return 0;
}

/*
 * RFC 6376 5.4.1's list of the fields a signature SHOULD cover when present, in its order, plus
 * Sender, Message-ID and the MIME fields that say how to read the body, which RFC 4871 5.5 had
 * in the same list: a replay with another Message-ID or another Content-Type should not pass.
 * Never Received, Return-Path or anything a relay on the way may add or change.
 */
static const char *const signed_names[] = {
    "from",       "reply-to",     "subject",          "date",
    "to",         "cc",           "resent-date",      "resent-from",
    "resent-to",  "resent-cc",    "in-reply-to",      "references",
    "list-id",    "list-help",    "list-unsubscribe", "list-subscribe",
    "list-post",  "list-owner",   "list-archive",     "sender",
    "message-id", "mime-version", "content-type",     "content-transfer-encoding",
};
#define SIGNED_NAMES (sizeof(signed_names) / sizeof(signed_names[0]))

int dkim_choose_headers(const char *hdr, size_t hdr_len, char *out, size_t cap)
{
    size_t counts[SIGNED_NAMES] = {0};
    size_t pos = 0, s, n, total = 0;
    while (dkim_next_field(hdr, hdr_len, &pos, &s, &n)) {
        for (size_t i = 0; i < SIGNED_NAMES; i++) {
            if (dkim_field_is(hdr + s, n, signed_names[i])) {
                counts[i]++;
                total++;
                break;
            }
        }
    }
    if (counts[0] == 0)
        return DKIM_ERR_NO_FROM;
    counts[0]++; /* over-signing: a From added on the way finds its name already used */
    if (++total > DKIM_SIGNED_FIELDS_MAX)
        return DKIM_ERR_TOO_MANY;
    size_t len = 0;
    for (size_t i = 0; i < SIGNED_NAMES; i++) {
        for (size_t k = 0; k < counts[i]; k++) {
            int w = snprintf(out + len, cap - len, "%s%s", len > 0 ? ":" : "", signed_names[i]);
            if (w < 0 || (size_t)w >= cap - len)
                return DKIM_ERR_BAD_ARGUMENT;
            len += (size_t)w;
        }
    }
    return (int)len;
}

/* ---------------------------------------------------------------- the header hash */

struct name_ref {
    const char *p;
    size_t len;
};

/* Splits h_list at ':' into names without surrounding white space (folds included). */
static int split_names(const char *h_list, struct name_ref *names, size_t max, size_t *n_out)
{
    size_t n = 0;
    const char *p = h_list;
    for (;;) {
        const char *end = strchr(p, ':');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *q = p;
        while (len > 0 && (is_wsp((unsigned char)*q) || *q == '\r' || *q == '\n')) {
            q++;
            len--;
        }
        while (len > 0 &&
               (is_wsp((unsigned char)q[len - 1]) || q[len - 1] == '\r' || q[len - 1] == '\n'))
            len--;
        if (len == 0 || len > 100 || n == max)
            return DKIM_ERR_BAD_ARGUMENT;
        names[n].p = q;
        names[n].len = len;
        n++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    *n_out = n;
    return 0;
}

static bool field_named(const char *field, size_t len, const struct name_ref *name)
{
    char tmp[101];
    memcpy(tmp, name->p, name->len);
    tmp[name->len] = '\0';
    return dkim_field_is(field, len, tmp);
}

/* Canonicalises one field into the growing scratch buffer and hashes it. */
static int hash_field(crypto_hash_sha256_state *sha, const char *f, size_t len, bool crlf,
                      char **scratch, size_t *scratch_cap)
{
    if (*scratch_cap < len + 2) {
        char *p = realloc(*scratch, len + 2);
        if (p == NULL)
            return DKIM_ERR_NO_MEMORY;
        *scratch = p;
        *scratch_cap = len + 2;
    }
    int n = dkim_canon_header(f, len, crlf, *scratch, *scratch_cap);
    if (n < 0)
        return n;
    crypto_hash_sha256_update(sha, (const unsigned char *)*scratch, (size_t)n);
    return 0;
}

int dkim_header_hash(const char *hdr, size_t hdr_len, const char *h_list, const char *sig_field,
                     size_t sig_len, uint8_t hash_out[DKIM_HASH_BYTES])
{
    struct name_ref names[DKIM_SIGNED_FIELDS_MAX * 2];
    size_t n_names = 0;
    int rc = split_names(h_list, names, sizeof(names) / sizeof(names[0]), &n_names);
    if (rc != 0)
        return rc;
    crypto_hash_sha256_state sha;
    crypto_hash_sha256_init(&sha);
    char *scratch = NULL;
    size_t scratch_cap = 0;
    for (size_t i = 0; i < n_names && rc == 0; i++) {
        /* This is the used-th listing of the name: it takes the used-th instance from the
         * bottom (RFC 6376 5.4.2), so instances are counted first. */
        size_t used = 0, have = 0, pos = 0, s, n;
        for (size_t k = 0; k < i; k++) {
            if (names[k].len == names[i].len &&
                strncasecmp(names[k].p, names[i].p, names[i].len) == 0)
                used++;
        }
        while (dkim_next_field(hdr, hdr_len, &pos, &s, &n))
            have += field_named(hdr + s, n, &names[i]);
        if (used >= have)
            continue;
        size_t want = have - 1 - used, seen = 0;
        pos = 0;
        while (dkim_next_field(hdr, hdr_len, &pos, &s, &n)) {
            if (field_named(hdr + s, n, &names[i]) && seen++ == want) {
                rc = hash_field(&sha, hdr + s, n, true, &scratch, &scratch_cap);
                break;
            }
        }
    }
    if (rc == 0)
        rc = hash_field(&sha, sig_field, sig_len, false, &scratch, &scratch_cap);
    free(scratch);
    if (rc == 0)
        crypto_hash_sha256_final(&sha, hash_out);
    return rc;
}

/* ---------------------------------------------------------------- the signature field */

/* A field being folded: tokens are added whole where they fit, after a fold where not. */
struct fold {
    char *buf; /* owned */
    size_t len, cap, col;
    bool oom;
};

static void fold_raw(struct fold *f, const char *s, size_t n)
{
    if (f->oom)
        return;
    if (f->len + n + 1 > f->cap) {
        size_t cap = (f->len + n + 1) * 2;
        char *p = realloc(f->buf, cap);
        if (p == NULL) {
            f->oom = true;
            return;
        }
        f->buf = p;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, s, n);
    f->len += n;
    f->buf[f->len] = '\0';
}

/* Adds token, after one SP when space is set; folds first (CRLF HTAB) when the line would pass
 * DKIM_FOLD_COLUMNS and already holds something. */
static void fold_add(struct fold *f, bool space, const char *token)
{
    size_t n = strlen(token);
    if (f->col + (space ? 1 : 0) + n > DKIM_FOLD_COLUMNS && f->col > 1) {
        fold_raw(f, "\r\n\t", 3);
        f->col = 1;
    } else if (space) {
        fold_raw(f, " ", 1);
        f->col++;
    }
    fold_raw(f, token, n);
    f->col += n;
}

static bool is_dns_label_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

int dkim_sign(const struct dkim_key *k, const char *domain, const char *selector, int64_t time_s,
              const char *hdr, size_t hdr_len, const uint8_t body_hash[DKIM_HASH_BYTES],
              char **field_out)
{
    *field_out = NULL;
    /* Checked here too: both end up inside a header field, where a ';' or a CRLF would let
     * them add tags or fields. */
    if (!is_dns_label_text(domain, ADDRESS_DOMAIN_MAX_BYTES) ||
        !is_dns_label_text(selector, DKIM_SELECTOR_MAX_BYTES) || time_s < 0)
        return DKIM_ERR_BAD_ARGUMENT;
    char h_list[DKIM_SIGNED_FIELDS_MAX * 28];
    int rc = dkim_choose_headers(hdr, hdr_len, h_list, sizeof(h_list));
    if (rc < 0)
        return rc;
    char tok[ADDRESS_DOMAIN_MAX_BYTES + 16];
    struct fold f = {0};
    fold_raw(&f, "DKIM-Signature:", 15);
    f.col = 15;
    fold_add(&f, true, "v=1;");
    fold_add(&f, true, dkim_key_alg(k) == DKIM_RSA ? "a=rsa-sha256;" : "a=ed25519-sha256;");
    fold_add(&f, true, "c=relaxed/relaxed;");
    snprintf(tok, sizeof(tok), "d=%s;", domain);
    fold_add(&f, true, tok);
    snprintf(tok, sizeof(tok), "s=%s;", selector);
    fold_add(&f, true, tok);
    snprintf(tok, sizeof(tok), "t=%lld;", (long long)time_s);
    fold_add(&f, true, tok);
    /* h= folds only before a ':' (RFC 6376 3.5 allows FWS there), so no name is ever cut. The
     * names are cut out of a copy: h_list itself is what the header hash reads. */
    char h_copy[sizeof(h_list)];
    memcpy(h_copy, h_list, (size_t)rc + 1);
    for (char *name = h_copy, *next; name != NULL; name = next) {
        next = strchr(name, ':');
        if (next != NULL)
            *next++ = '\0';
        snprintf(tok, sizeof(tok), "%s%.40s%s", name == h_copy ? "h=" : ":", name,
                 next == NULL ? ";" : "");
        fold_add(&f, name == h_copy, tok);
    }
    char b64[sodium_base64_ENCODED_LEN(DKIM_HASH_BYTES, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof(b64), body_hash, DKIM_HASH_BYTES, sodium_base64_VARIANT_ORIGINAL);
    snprintf(tok, sizeof(tok), "bh=%s;", b64);
    fold_add(&f, true, tok);
    fold_add(&f, true, "b=");
    if (f.oom) {
        free(f.buf);
        return DKIM_ERR_NO_MEMORY;
    }
    uint8_t hh[DKIM_HASH_BYTES];
    char sig[1024];
    rc = dkim_header_hash(hdr, hdr_len, h_list, f.buf, f.len, hh);
    if (rc == 0)
        rc = dkim_sign_hash(k, hh, sig, sizeof(sig));
    if (rc != 0) {
        free(f.buf);
        return rc;
    }
    /* The b= value fills each line to the limit: verifiers drop white space inside it. */
    for (size_t off = 0, left = strlen(sig); left > 0;) {
        size_t room = f.col < DKIM_FOLD_COLUMNS ? DKIM_FOLD_COLUMNS - f.col : 0;
        if (room == 0) {
            fold_raw(&f, "\r\n\t", 3);
            f.col = 1;
            continue;
        }
        size_t take = room < left ? room : left;
        fold_raw(&f, sig + off, take);
        f.col += take;
        off += take;
        left -= take;
    }
    fold_raw(&f, "\r\n", 2);
    if (f.oom) {
        free(f.buf);
        return DKIM_ERR_NO_MEMORY;
    }
    *field_out = f.buf;
    return 0;
}
