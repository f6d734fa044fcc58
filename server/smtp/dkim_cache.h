/*
 * dkim_cache.h - the parsed DKIM signing keys of the local domains, kept per process so that a
 * message is not signed with a key read and parsed from the database for it alone (an RSA PEM
 * takes longer to parse than to sign with).
 *
 * A domain's keys are looked up in the store at most once every DKIM_CACHE_RECHECK_MS: the
 * listing (storage/dkim_keys.c) is compared with what is held, key by key on (selector,
 * algorithm, created_ms), and only a key that is new or changed is parsed; one that is gone is
 * dropped. `postern dkim keygen` and `dkim del` run in another process and leave no other trace
 * this process could watch cheaply (PRAGMA data_version moves with every commit the writer
 * makes, that is with every message), so the recheck interval is how long a change takes to be
 * seen.
 *
 * Thread-safety: every call is safe from any thread; one mutex guards the table, so several event
 * loops may look up at once. A looked-up key is handed out as a reference (atomically counted)
 * that stays valid after the cache has dropped the key, until dkim_cache_release: the signer
 * runs in the libuv threadpool while a loop may reload the domain. The parsed secret (EVP_PKEY or
 * the ed25519 secret key) is wiped when the last reference goes (dkim_key_free).
 *
 * It does not sign (server/smtp/smtp_dkim.c does), log, or decide whether a message is signed.
 */
#ifndef POSTERN_DKIM_CACHE_H
#define POSTERN_DKIM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/pure/dkim.h"

struct store;
struct dkim_cache;

/* How long a domain's keys are used without asking the store again. */
#define DKIM_CACHE_RECHECK_MS 1000
/* A domain holds at most one key per algorithm (storage/sqlite/schema.c): ed25519 and RSA. */
#define DKIM_CACHE_KEYS_PER_DOMAIN 2

/* One key of a domain, shared by the cache and whoever signs with it. Immutable once made,
 * but for the count. */
struct dkim_cached_key {
    struct dkim_key *key; /* owned; NULL when the stored key could not be read (load_error) */
    int load_error;       /* 0, or dkim_key_load's code */
    enum dkim_alg alg;
    int64_t created_ms;
    char selector[DKIM_SELECTOR_MAX_BYTES + 1];
    _Atomic unsigned refs; /* the cache's own and the signers'; freed at 0 */
};

int dkim_cache_new(struct dkim_cache **out);
/* Drops the cache's references (keys still out stay valid until released) and sets *c NULL. */
void dkim_cache_free(struct dkim_cache **c);

/*
 * The keys of domain (lower case) into out (references the caller releases) and their number
 * into *n_out, ed25519 first; st is a read connection of the calling thread, asked when the
 * domain's entry is older than DKIM_CACHE_RECHECK_MS at now_ms (a monotonic or wall clock, as
 * long as the caller keeps to one). 0, a STORE_* code (nothing handed out; the entry stays as it
 * was), or DKIM_ERR_NO_MEMORY.
 */
int dkim_cache_get(struct dkim_cache *c, struct store *st, const char *domain, int64_t now_ms,
                   struct dkim_cached_key *out[DKIM_CACHE_KEYS_PER_DOMAIN], size_t *n_out);
/* Gives back a reference from dkim_cache_get and sets *k NULL; NULL is fine. Any thread. */
void dkim_cache_release(struct dkim_cached_key **k);

#endif
