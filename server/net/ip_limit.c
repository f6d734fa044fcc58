/*
 * ip_limit.c - see ip_limit.h. Every function keys its address with ip_client_key() first, so
 * the table never holds a full IPv6 address and a caller cannot count one wrongly.
 */
#include "server/net/ip_limit.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IP_LIMIT_FIRST_BUCKETS 64

struct ip_limit_entry {
    struct ip_limit_entry *next;
    struct ip_addr key; /* ip_client_key() of the peers counted here */
    unsigned count;
};

void ip_limit_init(struct ip_limit *t)
{
    memset(t, 0, sizeof(*t));
    randombytes_buf(t->hash_key, sizeof(t->hash_key));
}

static size_t bucket_of(const struct ip_limit *t, const struct ip_addr *key)
{
    unsigned char in[17], out[crypto_shorthash_BYTES];
    in[0] = (unsigned char)key->family;
    memcpy(in + 1, key->bytes, 16);
    crypto_shorthash(out, in, sizeof(in), t->hash_key);
    uint64_t h;
    memcpy(&h, out, sizeof(h));
    return (size_t)(h & (t->nbuckets - 1));
}

static struct ip_limit_entry *find(const struct ip_limit *t, const struct ip_addr *key)
{
    if (t->nbuckets == 0)
        return NULL;
    for (struct ip_limit_entry *e = t->buckets[bucket_of(t, key)]; e != NULL; e = e->next)
        if (ip_equal(&e->key, key))
            return e;
    return NULL;
}

/* Doubles the table when it holds more entries than buckets; a failure just keeps it as is. */
static void grow(struct ip_limit *t)
{
    size_t n = t->nbuckets == 0 ? IP_LIMIT_FIRST_BUCKETS : t->nbuckets * 2;
    struct ip_limit_entry **nb = calloc(n, sizeof(*nb));
    if (nb == NULL)
        return;
    struct ip_limit_entry **old = t->buckets;
    size_t oldn = t->nbuckets;
    t->buckets = nb;
    t->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        struct ip_limit_entry *e = old[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            size_t b = bucket_of(t, &e->key);
            e->next = nb[b];
            nb[b] = e;
        }
    }
    free(old);
}

unsigned ip_limit_count(const struct ip_limit *t, const struct ip_addr *ip)
{
    struct ip_addr key = ip_client_key(ip);
    const struct ip_limit_entry *e = find(t, &key);
    return e != NULL ? e->count : 0;
}

int ip_limit_inc(struct ip_limit *t, const struct ip_addr *ip)
{
    struct ip_addr key = ip_client_key(ip);
    struct ip_limit_entry *e = find(t, &key);
    if (e != NULL) {
        e->count++;
        return 0;
    }
    if (t->entries >= t->nbuckets)
        grow(t);
    if (t->nbuckets == 0)
        return -ENOMEM;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->key = key;
    e->count = 1;
    size_t b = bucket_of(t, &key);
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->entries++;
    return 0;
}

void ip_limit_dec(struct ip_limit *t, const struct ip_addr *ip)
{
    if (t->nbuckets == 0)
        return;
    struct ip_addr key = ip_client_key(ip);
    struct ip_limit_entry **pp = &t->buckets[bucket_of(t, &key)];
    for (; *pp != NULL; pp = &(*pp)->next) {
        struct ip_limit_entry *e = *pp;
        if (!ip_equal(&e->key, &key))
            continue;
        if (--e->count == 0) {
            *pp = e->next;
            free(e);
            t->entries--;
        }
        return;
    }
}

void ip_limit_clear(struct ip_limit *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct ip_limit_entry *e = t->buckets[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->entries = 0;
}

size_t ip_limit_entries(const struct ip_limit *t)
{
    return t->entries;
}
