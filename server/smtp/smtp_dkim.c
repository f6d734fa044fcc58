/*
 * smtp_dkim.c - see smtp_dkim.h. The header section is collected as content arrives, the body
 * hashed (common/pure/dkim.c), and at delivery, in the writer job, the missing Message-ID and
 * Date are added and each key of the From domain signs the header section as it will be stored.
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

/* What one signing pass collects: the fields made so far and who signed. */
struct signing {
    const struct smtp_dkim *d;
    const char *header; /* the added fields followed by the message's header section */
    size_t header_len;
    int64_t time_s;
    char *sigs; /* owned */
    size_t sigs_len;
    char selectors[200];
    int first_error; /* 0, or the first key's failure */
};

static int sign_with(void *ctx, const struct store_dkim_key *k)
{
    struct signing *sg = ctx;
    enum dkim_alg alg;
    struct dkim_key *key = NULL;
    char *field = NULL;
    int rc = dkim_alg_parse(k->algorithm, &alg) == 0 ? 0 : DKIM_ERR_BAD_KEY;
    if (rc == 0)
        rc = dkim_key_load(alg, k->private_key, &key);
    if (rc == 0)
        rc = dkim_sign(key, sg->d->from_domain, k->selector, sg->time_s, sg->header, sg->header_len,
                       sg->d->body_hash, &field);
    dkim_key_free(&key);
    if (rc == 0 && !append(&sg->sigs, &sg->sigs_len, field, strlen(field)))
        rc = DKIM_ERR_NO_MEMORY;
    free(field);
    if (rc != 0) {
        if (sg->first_error == 0)
            sg->first_error = rc;
        return 0; /* the other key may still sign */
    }
    size_t used = strlen(sg->selectors);
    snprintf(sg->selectors + used, sizeof(sg->selectors) - used, "%s%s", used > 0 ? "," : "",
             k->selector);
    return 0;
}

/* The reason a message goes out unsigned, or "" to try the keys. */
static const char *unsigned_reason(const struct smtp_dkim *d, struct store *st, bool *failed)
{
    if (d->too_big)
        return "header-too-big";
    if (d->from_rc != 0)
        return dkim_reason(d->from_rc);
    bool local = false;
    if (store_domain_is_local(st, d->from_domain, &local) != STORE_OK) {
        *failed = true;
        return "store-error";
    }
    return local ? "" : "from-not-local";
}

int smtp_dkim_sign(struct smtp_dkim *d, struct store *st, const char *hostname, const char *id,
                   int64_t now_ms)
{
    if (!d->on || d->signed_once)
        return 0;
    char *added = NULL;
    size_t added_len = 0;
    char line[DKIM_MESSAGE_ID_MAX_BYTES + 64];
    /* RFC 6409 8.3 and 8.2: a submission server may add a missing Message-ID and Date. The
     * random part keeps ids unique across restarts, which the queue id alone is not. */
    if (!d->too_big && !has_field(d, "Message-ID")) {
        unsigned char rnd[8];
        randombytes_buf(rnd, sizeof(rnd));
        char hex[17];
        sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
        int n =
            snprintf(line, sizeof(line), "Message-ID: <%.40s.%s@%.100s>\r\n", id, hex, hostname);
        if (n < 0 || !append(&added, &added_len, line, (size_t)n))
            goto oom;
    }
    if (!d->too_big && !has_field(d, "Date")) {
        char date[DATE_RFC5322_BYTES];
        int n =
            snprintf(line, sizeof(line), "Date: %s\r\n", date_rfc5322(now_ms, date, sizeof(date)));
        if (n < 0 || !append(&added, &added_len, line, (size_t)n))
            goto oom;
    }
    bool failed = false;
    const char *reason = unsigned_reason(d, st, &failed);
    if (reason[0] != '\0') {
        snprintf(d->outcome, sizeof(d->outcome), "none reason=%s", reason);
    } else {
        /* Signed as it will be stored: the added fields, then the client's header section. */
        char *header = NULL;
        size_t header_len = 0;
        if ((added_len > 0 && !append(&header, &header_len, added, added_len)) ||
            (d->hdr_len > 0 && !append(&header, &header_len, d->hdr, d->hdr_len))) {
            free(header);
            goto oom;
        }
        struct signing sg = {
            .d = d,
            .header = header != NULL ? header : "",
            .header_len = header_len,
            .time_s = now_ms / 1000,
        };
        int rc = store_dkim_key_list(st, d->from_domain, true, sign_with, &sg);
        free(header);
        if (sg.sigs_len > 0) {
            snprintf(d->outcome, sizeof(d->outcome), "signed d=%s s=%s", d->from_domain,
                     sg.selectors);
        } else {
            snprintf(d->outcome, sizeof(d->outcome), "none reason=%s",
                     rc != STORE_OK        ? "store-error"
                     : sg.first_error != 0 ? dkim_reason(sg.first_error)
                                           : "no-key");
        }
        /* The signatures go first: RFC 6376 5.6 prepends them to the header section. */
        if (sg.sigs_len > 0 && added_len > 0 && !append(&sg.sigs, &sg.sigs_len, added, added_len)) {
            free(sg.sigs);
            goto oom;
        }
        if (sg.sigs_len > 0) {
            free(added);
            added = sg.sigs;
            added_len = sg.sigs_len;
        }
    }
    d->added = added;
    d->added_len = added_len;
    d->signed_once = true;
    return 0;
oom:
    free(added);
    snprintf(d->outcome, sizeof(d->outcome), "none reason=no-memory");
    return DKIM_ERR_NO_MEMORY;
}

void smtp_dkim_clear(struct smtp_dkim *d)
{
    free(d->hdr);
    free(d->added);
    memset(d, 0, sizeof(*d));
}
