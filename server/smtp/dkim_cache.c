/*
 * dkim_cache.c - see dkim_cache.h. A list of domains, each with the keys the store listed for it
 * at its last check; keys are reference-counted so a reload never frees one a signer holds.
 */
#include "server/smtp/dkim_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store.h"

struct domain_entry {
    struct domain_entry *next;
    char name[256];
    int64_t checked_ms; /* when the store was last asked */
    bool loaded;        /* checked_ms and keys hold a listing */
    size_t n;
    struct dkim_cached_key *keys[DKIM_CACHE_KEYS_PER_DOMAIN]; /* the cache's references */
};

struct dkim_cache {
    pthread_mutex_t lock; /* guards domains and every entry in it */
    struct domain_entry *domains;
};

int dkim_cache_new(struct dkim_cache **out)
{
    *out = NULL;
    struct dkim_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return DKIM_ERR_NO_MEMORY;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return DKIM_ERR_NO_MEMORY;
    }
    *out = c;
    return 0;
}

void dkim_cache_release(struct dkim_cached_key **kp)
{
    struct dkim_cached_key *k = *kp;
    *kp = NULL;
    if (k == NULL || atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    dkim_key_free(&k->key); /* wipes the secret */
    free(k);
}

static void entry_drop_keys(struct domain_entry *e)
{
    for (size_t i = 0; i < e->n; i++)
        dkim_cache_release(&e->keys[i]);
    e->n = 0;
}

void dkim_cache_free(struct dkim_cache **cp)
{
    struct dkim_cache *c = *cp;
    if (c == NULL)
        return;
    struct domain_entry *e = c->domains;
    while (e != NULL) {
        struct domain_entry *next = e->next;
        entry_drop_keys(e);
        free(e);
        e = next;
    }
    (void)pthread_mutex_destroy(&c->lock);
    free(c);
    *cp = NULL;
}

/* What one reload collects: the new key list, reusing the keys that did not change. */
struct reload {
    const struct domain_entry *old;
    size_t n;
    struct dkim_cached_key *keys[DKIM_CACHE_KEYS_PER_DOMAIN];
    int error; /* DKIM_ERR_NO_MEMORY */
};

static int reload_row(void *ctx, const struct store_dkim_key *row)
{
    struct reload *r = ctx;
    enum dkim_alg alg;
    if (r->n == DKIM_CACHE_KEYS_PER_DOMAIN || dkim_alg_parse(row->algorithm, &alg) != 0)
        return 0; /* the schema allows neither; skipped rather than trusted */
    for (size_t i = 0; i < r->old->n; i++) {
        struct dkim_cached_key *k = r->old->keys[i];
        if (k->alg == alg && k->created_ms == row->created_ms &&
            strcmp(k->selector, row->selector) == 0) {
            atomic_fetch_add(&k->refs, 1);
            r->keys[r->n++] = k;
            return 0;
        }
    }
    struct dkim_cached_key *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        r->error = DKIM_ERR_NO_MEMORY;
        return 1;
    }
    k->alg = alg;
    k->created_ms = row->created_ms;
    snprintf(k->selector, sizeof(k->selector), "%s", row->selector);
    k->load_error = dkim_key_load(alg, row->private_key, &k->key);
    atomic_init(&k->refs, 1);
    r->keys[r->n++] = k;
    return 0;
}

/* Asks the store for e's keys and replaces them; on failure e stays as it was. */
static int entry_reload(struct domain_entry *e, struct store *st, int64_t now_ms)
{
    struct reload r = {.old = e};
    int rc = store_dkim_key_list(st, e->name, true, reload_row, &r);
    if (rc == STORE_OK && r.error != 0)
        rc = r.error;
    if (rc != STORE_OK) {
        for (size_t i = 0; i < r.n; i++)
            dkim_cache_release(&r.keys[i]);
        return rc;
    }
    entry_drop_keys(e);
    memcpy(e->keys, r.keys, sizeof(r.keys));
    e->n = r.n;
    e->checked_ms = now_ms;
    e->loaded = true;
    return 0;
}

static struct domain_entry *entry_find(struct dkim_cache *c, const char *domain)
{
    for (struct domain_entry *e = c->domains; e != NULL; e = e->next) {
        if (strcmp(e->name, domain) == 0)
            return e;
    }
    return NULL;
}

int dkim_cache_get(struct dkim_cache *c, struct store *st, const char *domain, int64_t now_ms,
                   struct dkim_cached_key *out[DKIM_CACHE_KEYS_PER_DOMAIN], size_t *n_out)
{
    *n_out = 0;
    if (strlen(domain) >= sizeof(((struct domain_entry *)0)->name))
        return DKIM_ERR_BAD_ARGUMENT;
    int rc = 0;
    (void)pthread_mutex_lock(&c->lock);
    /* Only local domains reach here (smtp_dkim.c checks first), so the list stays as short as
     * the domain table. */
    struct domain_entry *e = entry_find(c, domain);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL) {
            rc = DKIM_ERR_NO_MEMORY;
            goto out;
        }
        snprintf(e->name, sizeof(e->name), "%s", domain);
        e->next = c->domains;
        c->domains = e;
    }
    if (!e->loaded || now_ms - e->checked_ms >= DKIM_CACHE_RECHECK_MS || now_ms < e->checked_ms) {
        rc = entry_reload(e, st, now_ms);
        if (rc != 0)
            goto out;
    }
    for (size_t i = 0; i < e->n; i++) {
        atomic_fetch_add(&e->keys[i]->refs, 1);
        out[i] = e->keys[i];
    }
    *n_out = e->n;
out:
    (void)pthread_mutex_unlock(&c->lock);
    return rc;
}
