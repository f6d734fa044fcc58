/*
 * milter_edit.c - the message as the milters left it: their header changes (add at the end,
 * insert at a position, change or delete the nth header of a name) and a replaced body applied
 * to the message of the last end-of-message step, written out whole into one new buffer. Only
 * when a milter changed the content: a message no milter touched stays where it is (spool file
 * and memory). The new message is at most the old one plus what the milters sent, and the body
 * a milter sends is bounded by the frames it came in.
 *
 * Values come from milters with LF or CRLF line ends between folded lines; they are stored with
 * CRLF. A header is written "Name: value", the space after the colon being what a milter that
 * did not negotiate leading spaces expects.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/milter/milter_internal.h"

/* One header of the edited section: either a slice of the original or a new text. */
struct field {
    const unsigned char *p; /* the whole field, CRLF included */
    size_t len;
    unsigned char *owned; /* p, when the field is new */
};

struct out {
    unsigned char *p;
    size_t len, cap;
    bool ok;
};

static void out_put(struct out *o, const void *p, size_t n)
{
    if (!o->ok || n == 0)
        return;
    if (o->cap - o->len < n) {
        size_t cap = (o->len + n) * 2;
        unsigned char *q = realloc(o->p, cap);
        if (q == NULL) {
            o->ok = false;
            return;
        }
        o->p = q;
        o->cap = cap;
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

/* "Name: value\r\n" with every line end of value made CRLF. */
static int field_new(struct field *f, const char *name, const char *value)
{
    struct out o = {NULL, 0, 0, true};
    out_put(&o, name, strlen(name));
    out_put(&o, ": ", 2);
    for (const char *v = value; *v != '\0'; v++) {
        if (*v == '\r' && v[1] == '\n')
            continue;
        if (*v == '\n' || *v == '\r')
            out_put(&o, "\r\n", 2);
        else
            out_put(&o, v, 1);
    }
    out_put(&o, "\r\n", 2);
    if (!o.ok) {
        free(o.p);
        return -1;
    }
    *f = (struct field){o.p, o.len, o.p};
    return 0;
}

static int fields_insert(struct field **fs, size_t *n, size_t *cap, size_t at, struct field f)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        struct field *p = realloc(*fs, c * sizeof(*p));
        if (p == NULL)
            return -1;
        *fs = p;
        *cap = c;
    }
    if (at > *n)
        at = *n;
    memmove(&(*fs)[at + 1], &(*fs)[at], (*n - at) * sizeof(**fs));
    (*fs)[at] = f;
    (*n)++;
    return 0;
}

/* Whether field f is a header named name. */
static bool field_is(const struct field *f, const char *name)
{
    size_t nl = strlen(name);
    return f->len > nl && f->p[nl] == ':' && strncasecmp((const char *)f->p, name, nl) == 0;
}

int milter_message_edit(struct milter_session *ms, unsigned char **out_p, size_t *out_len)
{
    bool headers = false, body = false;
    for (size_t i = 0; i < ms->n_mods; i++) {
        enum milter_reply_kind k = ms->mods[i].kind;
        headers |= k == MILTER_R_ADDHEADER || k == MILTER_R_INSHEADER || k == MILTER_R_CHGHEADER;
        body |= k == MILTER_R_REPLBODY;
    }
    *out_p = NULL;
    *out_len = 0;
    if (!headers && !body)
        return 0;
    struct field *fs = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;
    /* The original fields: from each header's start to the next one's (folding included). */
    for (size_t i = 0; i < ms->n_hv; i++) {
        size_t start = ms->hv[i].name_off;
        size_t end = ms->hv[i].value_off + ms->hv[i].value_len;
        if (fields_insert(&fs, &n, &cap, n, (struct field){ms->hdrs + start, end - start, NULL}))
            goto done;
    }
    for (size_t i = 0; i < ms->n_mods; i++) {
        const struct milter_mod *md = &ms->mods[i];
        struct field f;
        if (md->kind == MILTER_R_ADDHEADER || md->kind == MILTER_R_INSHEADER) {
            if (field_new(&f, md->name, md->value) != 0 ||
                fields_insert(&fs, &n, &cap, md->kind == MILTER_R_ADDHEADER ? n : md->index, f))
                goto done;
        } else if (md->kind == MILTER_R_CHGHEADER) {
            /* The index counts headers of that name from 1; an empty value deletes it, and a
             * change to a header that is not there adds it (libmilter's smfi_chgheader). */
            size_t seen = 0, at = n;
            for (size_t j = 0; j < n; j++)
                if (field_is(&fs[j], md->name) && ++seen == (md->index ? md->index : 1)) {
                    at = j;
                    break;
                }
            if (at < n) {
                free(fs[at].owned);
                memmove(&fs[at], &fs[at + 1], (n - at - 1) * sizeof(*fs));
                n--;
            }
            if (md->value[0] != '\0' &&
                (field_new(&f, md->name, md->value) != 0 || fields_insert(&fs, &n, &cap, at, f)))
                goto done;
        }
    }
    struct out o = {NULL, 0, 0, true};
    for (size_t i = 0; i < n; i++)
        out_put(&o, fs[i].p, fs[i].len);
    out_put(&o, "\r\n", 2);
    if (body) {
        for (size_t i = 0; i < ms->n_mods; i++)
            if (ms->mods[i].kind == MILTER_R_REPLBODY)
                out_put(&o, ms->mods[i].body, ms->mods[i].body_len);
    } else {
        /* The original body: what followed the header section (and its empty line). */
        uint64_t boff = ms->body_off;
        size_t blen = (size_t)(ms->total - boff);
        if (o.ok && blen > 0 && o.cap - o.len < blen) {
            unsigned char *q = realloc(o.p, o.len + blen);
            if (q == NULL) {
                o.ok = false;
            } else {
                o.p = q;
                o.cap = o.len + blen;
            }
        }
        if (o.ok && blen > 0) {
            if (milter_message_read(&ms->msg, boff, o.p + o.len, blen) != 0)
                o.ok = false;
            else
                o.len += blen;
        }
    }
    if (!o.ok) {
        free(o.p);
        goto done;
    }
    *out_p = o.p;
    *out_len = o.len;
    rc = 1;
done:
    for (size_t i = 0; i < n; i++)
        free(fs[i].owned);
    free(fs);
    return rc;
}
