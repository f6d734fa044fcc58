/*
 * test_dkim_cache.c - server/smtp/dkim_cache.c: a domain's keys are parsed once and reused; a
 * change made through another connection (as `postern dkim keygen` and `dkim del` make it from
 * another process) is seen once DKIM_CACHE_RECHECK_MS has passed, and not re-read before; a
 * reference handed out stays usable after the cache has dropped its key; several threads may
 * look up at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/smtp/dkim_cache.h"
#include "storage/store.h"
#include "tests/unit/store_fixture.h"

struct fixture {
    char dir[64];
    char path[128];
    struct store *reads; /* the cache's connection, as a loop's read store */
    struct store *admin; /* another connection, as the CLI's */
    struct dkim_cache *cache;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/postern-dkimc-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    f->admin = open_ok(f->path);
    f->reads = open_ok(f->path);
    assert_int_equal(store_domain_add(f->admin, "example.test"), STORE_OK);
    assert_int_equal(dkim_cache_new(&f->cache), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dkim_cache_free(&f->cache);
    assert_null(f->cache);
    store_close(&f->reads);
    store_close(&f->admin);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Makes a key and stores it under selector through the admin connection. The stored creation
 * time is in milliseconds: waiting one keeps two keys made in a row apart. */
static void add_key(struct fixture *f, const char *selector, enum dkim_alg alg)
{
    struct timespec ms = {0, 2 * 1000 * 1000};
    nanosleep(&ms, NULL);
    char *priv = NULL, *pub = NULL;
    assert_int_equal(dkim_keygen(alg, 1024, &priv, &pub), 0);
    assert_int_equal(
        store_dkim_key_add(f->admin, "example.test", selector, dkim_alg_name(alg), priv, pub),
        STORE_OK);
    free(priv);
    free(pub);
}

static size_t get(struct fixture *f, int64_t now_ms, struct dkim_cached_key *out[2])
{
    size_t n = 99;
    out[0] = out[1] = NULL;
    assert_int_equal(dkim_cache_get(f->cache, f->reads, "example.test", now_ms, out, &n), 0);
    return n;
}

static void signs(const struct dkim_cached_key *k)
{
    uint8_t hash[DKIM_HASH_BYTES] = {1, 2, 3};
    char b64[800];
    assert_non_null(k->key);
    assert_int_equal(dkim_sign_hash(k->key, hash, b64, sizeof(b64)), 0);
}

static void test_invalidation(void **state)
{
    struct fixture *f = *state;
    struct dkim_cached_key *a[2], *b[2], *c[2];
    add_key(f, "s1", DKIM_ED25519);

    assert_int_equal(get(f, 10000, a), 1);
    assert_string_equal(a[0]->selector, "s1");
    assert_int_equal(a[0]->alg, DKIM_ED25519);
    signs(a[0]);
    /* Unchanged and within the interval: the same parsed key. */
    assert_int_equal(get(f, 10100, b), 1);
    assert_ptr_equal(a[0], b[0]);
    dkim_cache_release(&b[0]);
    assert_null(b[0]);

    /* Another process replaces the key and adds an RSA one. */
    assert_int_equal(store_dkim_key_del(f->admin, "example.test", "s1"), STORE_OK);
    add_key(f, "s2", DKIM_ED25519);
    add_key(f, "s3", DKIM_RSA);
    /* Not asked again before the interval is over... */
    assert_int_equal(get(f, 10999, b), 1);
    assert_ptr_equal(a[0], b[0]);
    dkim_cache_release(&b[0]);
    /* ...and seen once it is: ed25519 first. */
    assert_int_equal(get(f, 11000, b), 2);
    assert_string_equal(b[0]->selector, "s2");
    assert_int_equal(b[0]->alg, DKIM_ED25519);
    assert_string_equal(b[1]->selector, "s3");
    assert_int_equal(b[1]->alg, DKIM_RSA);
    signs(b[0]);
    signs(b[1]);
    /* The dropped key still signs for the holder of a reference. */
    signs(a[0]);
    dkim_cache_release(&a[0]);

    /* A recheck that finds the same rows keeps the parsed keys. */
    assert_int_equal(get(f, 12500, c), 2);
    assert_ptr_equal(b[0], c[0]);
    assert_ptr_equal(b[1], c[1]);
    dkim_cache_release(&c[0]);
    dkim_cache_release(&c[1]);

    /* The same selector made again is a new key (created_ms differs). */
    assert_int_equal(store_dkim_key_del(f->admin, "example.test", "s2"), STORE_OK);
    add_key(f, "s2", DKIM_ED25519);
    assert_int_equal(get(f, 14000, c), 2);
    assert_ptr_not_equal(b[0], c[0]);
    assert_ptr_equal(b[1], c[1]);
    assert_string_equal(c[0]->selector, "s2");
    for (int i = 0; i < 2; i++) {
        dkim_cache_release(&b[i]);
        dkim_cache_release(&c[i]);
    }

    /* Every key deleted: nothing to sign with once seen. */
    assert_int_equal(store_dkim_key_del(f->admin, "example.test", "s2"), STORE_OK);
    assert_int_equal(store_dkim_key_del(f->admin, "example.test", "s3"), STORE_OK);
    assert_int_equal(get(f, 15000, c), 0);
    /* A clock that went back rechecks rather than trusting the old listing forever. */
    add_key(f, "s4", DKIM_ED25519);
    assert_int_equal(get(f, 5000, c), 1);
    assert_string_equal(c[0]->selector, "s4");
    dkim_cache_release(&c[0]);
    dkim_cache_release(&c[0]); /* NULL now: nothing happens */
}

/* A key the store holds but that cannot be read is handed out with its error, not skipped. */
static void test_bad_key(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(
        store_dkim_key_add(f->admin, "example.test", "bad", "ed25519", "not base64!", "AAAA"),
        STORE_OK);
    struct dkim_cached_key *k[2];
    assert_int_equal(get(f, 1000, k), 1);
    assert_null(k[0]->key);
    assert_int_equal(k[0]->load_error, DKIM_ERR_BAD_KEY);
    dkim_cache_release(&k[0]);
}

struct thread_arg {
    struct fixture *f;
    char path[128];
    int failures;
};

/* Each thread has its own read connection, as each event loop would. */
static void *worker(void *p)
{
    struct thread_arg *t = p;
    struct store *st = open_ok(t->path);
    for (int i = 0; i < 300; i++) {
        struct dkim_cached_key *k[2] = {NULL, NULL};
        size_t n = 0;
        /* Every few rounds past the interval, so reloads race with lookups. */
        if (dkim_cache_get(t->f->cache, st, "example.test", (int64_t)i * 400, k, &n) != 0 ||
            n != 1 || k[0]->key == NULL)
            t->failures++;
        for (size_t j = 0; j < n; j++)
            dkim_cache_release(&k[j]);
    }
    store_close(&st);
    return NULL;
}

static void test_threads(void **state)
{
    struct fixture *f = *state;
    add_key(f, "s1", DKIM_ED25519);
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){.f = f};
        snprintf(args[i].path, sizeof(args[i].path), "%s", f->path);
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_invalidation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
