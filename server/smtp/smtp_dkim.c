/*
 * smtp_dkim.c - see smtp_dkim.h. The header section is collected as content arrives, the body
 * hashed (common/pure/dkim.c); at end of data, on the loop, the missing Message-ID and Date are
 * added and the keys of the From domain taken from the cache (server/smtp/dkim_cache.h); then,
 * in the threadpool, each key signs the header section as it will be stored.
 */
#include "server/smtp/smtp_dkim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/date.h"
#include "storage/store.h"

void smtp_dkim_start(struct smtp_dkim *d)
{
    smtp_dkim_clear(d);
    d->on = true;
    d->line_start = true;
    dkim_body_init(&d->body);
}

static void hdr_put(struct smtp_dkim *d, const unsigned char *p, size_t n)
{
    if (d->too_big)
        return;
    if (d->hdr_len + n > SMTP_DKIM_HEADER_MAX_BYTES) {
        d->too_big = true;
        return;
    }
    if (d->hdr_len + n > d->hdr_cap) {
        size_t cap = d->hdr_cap ? d->hdr_cap * 2 : 4096;
        while (cap < d->hdr_len + n)
            cap *= 2;
        char *q = realloc(d->hdr, cap);
        if (q == NULL) {
            d->too_big = true; /* unsigned, with a reason, rather than undelivered */
            return;
        }
        d->hdr = q;
        d->hdr_cap = cap;
    }
    memcpy(d->hdr + d->hdr_len, p, n);
    d->hdr_len += n;
}

void smtp_dkim_feed(struct smtp_dkim *d, const unsigned char *p, size_t n)
{
    if (!d->on)
        return;
    size_t i = 0;
    /* The header section ends at the first empty line (RFC 5322 2.1); its CRLF belongs to
     * neither part. A CR at a line start is held back until the next octet says which it is. */
    while (i < n && !d->in_body) {
        unsigned char c = p[i++];
        if (d->blank_cr) {
            d->blank_cr = false;
            if (c == '\n') {
                d->in_body = true;
                break;
            }
            hdr_put(d, (const unsigned char *)"\r", 1);
            d->line_start = false;
        }
        if (d->line_start && c == '\r') {
            d->blank_cr = true;
            continue;
        }
        hdr_put(d, &c, 1);
        d->line_start = c == '\n';
    }
    if (i < n)
        dkim_body_update(&d->body, p + i, n - i);
}

void smtp_dkim_end(struct smtp_dkim *d)
{
    if (!d->on)
        return;
    if (!d->in_body && d->blank_cr)
        hdr_put(d, (const unsigned char *)"\r", 1);
    dkim_body_final(&d->body, d->body_hash);
    d->from_rc = d->too_big
                     ? 0
                     : dkim_from_domain(d->hdr, d->hdr_len, d->from_domain, sizeof(d->from_domain));
}

/* Whether the header section has a field of this name. */
static bool has_field(const struct smtp_dkim *d, const char *name)
{
    size_t pos = 0, s, n;
    while (dkim_next_field(d->hdr, d->hdr_len, &pos, &s, &n)) {
        if (dkim_field_is(d->hdr + s, n, name))
            return true;
    }
    return false;
}

/* Appends text to the owned buffer *buf (length *len); false when out of memory. */
static bool append(char **buf, size_t *len, const char *text, size_t n)
{
    char *q = realloc(*buf, *len + n + 1);
    if (q == NULL)
        return false;
    memcpy(q + *len, text, n);
    q[*len + n] = '\0';
    *buf = q;
    *len += n;
    return true;
}

/* The reason a message goes out unsigned, or "" to try the keys. */
static const char *unsigned_reason(const struct smtp_dkim *d, struct store *st)
{
    if (d->too_big)
        return "header-too-big";
    if (d->from_rc != 0)
        return dkim_reason(d->from_rc);
    bool local = false;
    if (st == NULL || store_domain_is_local(st, d->from_domain, &local) != STORE_OK)
        return "store-error";
    return local ? "" : "from-not-local";
}

/* RFC 6409 8.3 and 8.2: a submission server may add a missing Message-ID and Date. The random
 * part keeps ids unique across restarts, which the queue id alone is not. */
static int fix_ups(struct smtp_dkim *d, const char *hostname, const char *id, int64_t now_ms)
{
    char line[DKIM_MESSAGE_ID_MAX_BYTES + 64];
    if (d->too_big)
        return 0;
    if (!has_field(d, "Message-ID")) {
        unsigned char rnd[8];
        randombytes_buf(rnd, sizeof(rnd));
        char hex[17];
        sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
        int n =
            snprintf(line, sizeof(line), "Message-ID: <%.40s.%s@%.100s>\r\n", id, hex, hostname);
        if (n < 0 || !append(&d->added, &d->added_len, line, (size_t)n))
            return DKIM_ERR_NO_MEMORY;
    }
    if (!has_field(d, "Date")) {
        char date[DATE_RFC5322_BYTES];
        int n =
            snprintf(line, sizeof(line), "Date: %s\r\n", date_rfc5322(now_ms, date, sizeof(date)));
        if (n < 0 || !append(&d->added, &d->added_len, line, (size_t)n))
            return DKIM_ERR_NO_MEMORY;
    }
    return 0;
}

bool smtp_dkim_prepare(struct smtp_dkim *d, struct store *reads, struct dkim_cache *cache,
                       const char *hostname, const char *id, int64_t now_ms)
{
    if (!d->on || d->prepared)
        return d->n_keys > 0;
    d->prepared = true;
    d->time_s = now_ms / 1000;
    if (fix_ups(d, hostname, id, now_ms) != 0) {
        free(d->added);
        d->added = NULL;
        d->added_len = 0;
        snprintf(d->outcome, sizeof(d->outcome), "none reason=no-memory");
        return false;
    }
    const char *reason = unsigned_reason(d, reads);
    if (reason[0] == '\0' && cache == NULL)
        reason = "no-key";
    if (reason[0] == '\0') {
        int rc = dkim_cache_get(cache, reads, d->from_domain, now_ms, d->keys, &d->n_keys);
        if (rc != 0)
            reason = rc == DKIM_ERR_NO_MEMORY ? "no-memory" : "store-error";
        else if (d->n_keys == 0)
            reason = "no-key";
    }
    if (reason[0] != '\0')
        snprintf(d->outcome, sizeof(d->outcome), "none reason=%s", reason);
    return d->n_keys > 0;
}

bool smtp_dkim_is_cheap(const struct smtp_dkim *d)
{
    for (size_t i = 0; i < d->n_keys; i++) {
        if (d->keys[i]->key != NULL && d->keys[i]->alg == DKIM_RSA)
            return false;
    }
    return true;
}

/* Signs the header section with one key; the field into *field. */
static int sign_one(const struct smtp_dkim *d, const struct dkim_cached_key *k, const char *header,
                    size_t header_len, char **field)
{
    if (k->key == NULL)
        return k->load_error != 0 ? k->load_error : DKIM_ERR_BAD_KEY;
    return dkim_sign(k->key, d->from_domain, k->selector, d->time_s, header, header_len,
                     d->body_hash, field);
}

void smtp_dkim_sign(struct smtp_dkim *d)
{
    if (d->n_keys == 0)
        return;
    char *sigs = NULL, *header = NULL;
    size_t sigs_len = 0, header_len = 0;
    char selectors[2 * (DKIM_SELECTOR_MAX_BYTES + 1)] = "";
    int first_error = 0;
    /* Signed as it will be stored: the added fields, then the client's header section. */
    if ((d->added_len > 0 && !append(&header, &header_len, d->added, d->added_len)) ||
        (d->hdr_len > 0 && !append(&header, &header_len, d->hdr, d->hdr_len)))
        first_error = DKIM_ERR_NO_MEMORY;
    for (size_t i = 0; i < d->n_keys && first_error != DKIM_ERR_NO_MEMORY; i++) {
        char *field = NULL;
        int rc = sign_one(d, d->keys[i], header != NULL ? header : "", header_len, &field);
        if (rc == 0 && !append(&sigs, &sigs_len, field, strlen(field)))
            rc = DKIM_ERR_NO_MEMORY;
        free(field);
        if (rc != 0) {
            if (first_error == 0)
                first_error = rc;
            continue; /* the other key may still sign */
        }
        size_t used = strlen(selectors);
        snprintf(selectors + used, sizeof(selectors) - used, "%s%s", used > 0 ? "," : "",
                 d->keys[i]->selector);
    }
    free(header);
    for (size_t i = 0; i < d->n_keys; i++)
        dkim_cache_release(&d->keys[i]);
    d->n_keys = 0;
    /* The signatures go first: RFC 6376 5.6 prepends them to the header section. */
    if (sigs_len > 0 && d->added_len > 0 && !append(&sigs, &sigs_len, d->added, d->added_len)) {
        free(sigs);
        sigs = NULL;
        sigs_len = 0;
        first_error = DKIM_ERR_NO_MEMORY;
    }
    if (sigs_len > 0) {
        snprintf(d->outcome, sizeof(d->outcome), "signed d=%s s=%s", d->from_domain, selectors);
        free(d->added);
        d->added = sigs;
        d->added_len = sigs_len;
    } else {
        snprintf(d->outcome, sizeof(d->outcome), "none reason=%s",
                 first_error != 0 ? dkim_reason(first_error) : "no-key");
    }
}

void smtp_dkim_clear(struct smtp_dkim *d)
{
    for (size_t i = 0; i < d->n_keys; i++)
        dkim_cache_release(&d->keys[i]);
    free(d->hdr);
    free(d->added);
    memset(d, 0, sizeof(*d));
}
