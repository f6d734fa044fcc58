/*
 * ip_limit.h - the per-client connection counts behind max_connections_per_ip.
 *
 * A small chained hash table from client key to the number of open connections. The key is
 * ip_client_key() of the peer address: an IPv4 address itself, an IPv6 address's /64, so a
 * client rotating addresses inside its /64 is still one client. An entry exists only while its
 * key has connections. The table is keyed with SipHash (libsodium's crypto_shorthash) under a
 * random per-table key, so a client choosing its addresses cannot make every insertion collide.
 *
 * It does not decide anything: the listener compares the count with the configured limit. It
 * is not thread-safe; its owner (one listener set) uses it from one thread.
 */
#ifndef POSTERN_IP_LIMIT_H
#define POSTERN_IP_LIMIT_H

#include <stddef.h>

#include <sodium.h>

#include "common/pure/cidr.h"

struct ip_limit_entry;

/* Embedded in its owner; the fields are private to ip_limit.c. */
struct ip_limit {
    struct ip_limit_entry **buckets; /* owned */
    size_t nbuckets;
    size_t entries;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
};

/* An empty table with a fresh random key; nothing is allocated yet. sodium_init() must have
 * succeeded. */
void ip_limit_init(struct ip_limit *t);
/* Frees every entry; the table is empty and usable again afterwards. */
void ip_limit_clear(struct ip_limit *t);
/* Open connections counted for the client of address ip (keyed by ip_client_key). */
unsigned ip_limit_count(const struct ip_limit *t, const struct ip_addr *ip);
/* Counts one more connection for ip's client. Returns 0 or -ENOMEM (nothing counted). */
int ip_limit_inc(struct ip_limit *t, const struct ip_addr *ip);
/* Counts one connection fewer; a client without an entry is a no-op, so a failed
 * ip_limit_inc followed by its ip_limit_dec leaves the counts right. */
void ip_limit_dec(struct ip_limit *t, const struct ip_addr *ip);
/* Clients with at least one connection. */
size_t ip_limit_entries(const struct ip_limit *t);

#endif
