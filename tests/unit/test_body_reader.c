/*
 * test_body_reader.c - storage/sqlite/body_reader.c's pool of read-only connections, against a real
 * database file in a temporary directory: readers reuse one pooled connection (and its prepared
 * lookups, for mailbox and queue readers alike); a body that fits in one read gives its connection
 * back in that read; more readers than the pool holds all work, and the pool keeps no more than
 * STORE_READ_POOL_MAX idle afterwards; a message deleted in the middle of a read ends it with
 * STORE_NOT_FOUND, and the connection it gave back reads the next message right; a 3 MiB body
 * read in chunks comes back byte for byte with a snapshot held and without.
 *
 * Two store connections play the writer's (f->s) and the loop's (f->rd); the pool under test is
 * f->rd's. The byte-level reading cases (every chunk size, 20 MiB, deletions at every point of
 * the snapshot) are in test_mailbox.c and test_queue.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/mailbox.h"
#include "storage/queue.h"
#include "storage/store.h"
#include "tests/unit/store_fixture.h"

#define SMALL_BYTES 4096u
#define LARGE_BYTES (3u * 1024 * 1024)
#define CHUNK_BYTES (64u * 1024)
#define HOLD_LONG   60000 /* ms: a snapshot is never dropped for age during a test */

struct fixture {
    char dir[64];
    char path[1024];
    struct store *s;  /* the writer's connection */
    struct store *rd; /* the loop's read connection: its pool is under test */
    int64_t uid;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    store_test_place_new(f->dir, sizeof(f->dir), "reader", f->path, sizeof(f->path));
    f->s = open_ok(f->path);
    f->rd = open_ok(f->path);
    f->uid = store_test_user(f->s, "a@example.test");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    /* Closing the store closes its idle pooled connections (the sanitizer sees any leak). */
    store_close(&f->rd);
    store_close(&f->s);
    store_test_place_free(f->dir, f->path);
    free(f);
    return 0;
}

/* Deterministic 8-bit bytes, different for each seed. */
static unsigned char *make_body(size_t len, uint64_t seed)
{
    unsigned char *b = malloc(len);
    assert_non_null(b);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)(x >> 24);
    }
    return b;
}

/* Delivers body to the fixture's user (and to a remote recipient when remote); returns the
 * mailbox entry id, and the message id in *mid_out. */
static int64_t deliver(struct fixture *f, const unsigned char *body, size_t len, bool remote,
                       int64_t *mid_out)
{
    const char *const remotes[] = {"far@remote.example"};
    struct store_delivery d = {
        .sender = "sender@far.example",
        .body = body,
        .body_len = len,
        .local_user_ids = &f->uid,
        .n_local = 1,
        .remote_rcpts = remotes,
        .n_remote = remote ? 1 : 0,
        .received_ms = 1000,
    };
    if (store_deliver(f->s, &d) != STORE_OK)
        fail_msg("store_deliver: %s", store_errmsg(f->s));
    struct store_mail_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(store_mailbox_snapshot(f->rd, f->uid, &e, &n), STORE_OK);
    int64_t entry = 0;
    for (size_t i = 0; i < n; i++)
        if (e[i].message_id == d.message_id_out)
            entry = e[i].id;
    free(e);
    assert_true(entry > 0);
    if (mid_out != NULL)
        *mid_out = d.message_id_out;
    return entry;
}

/* On PostgreSQL a reader reads on the store's own connection: no pool to check there, the rest of
 * each test (what the readers read) runs on both. */
static void pool_is(struct fixture *f, size_t idle, uint64_t opened)
{
    if (store_test_on_pg)
        return;
    size_t got_idle = 0;
    uint64_t got_opened = 0;
    store_read_pool_stats(f->rd, &got_idle, &got_opened);
    if (got_idle != idle || got_opened != opened)
        fail_msg("pool: %zu idle, %llu opened; want %zu idle, %llu opened", got_idle,
                 (unsigned long long)got_opened, idle, (unsigned long long)opened);
}

/* Reads what is left of r in chunk-sized reads and compares it with want[off..len). */
static void read_rest(struct fixture *f, struct store_body_reader *r, const unsigned char *want,
                      size_t off, size_t len, size_t chunk)
{
    unsigned char *buf = malloc(chunk);
    assert_non_null(buf);
    for (size_t iter = 0; iter <= len / chunk + 1; iter++) {
        size_t n = 0;
        if (store_body_read(r, buf, chunk, &n) != STORE_OK)
            fail_msg("read at %zu: %s", off, store_errmsg(f->rd));
        assert_int_equal(n, len - off < chunk ? len - off : chunk);
        assert_memory_equal(buf, want + off, n);
        off += n;
        if (n == 0)
            break;
    }
    assert_int_equal(off, len);
    free(buf);
}

static void test_small_bodies_reuse_one_connection(void **state)
{
    struct fixture *f = *state;
    enum { N = 20 };
    unsigned char *bodies[N];
    int64_t entries[N], mids[N];
    for (size_t i = 0; i < N; i++) {
        bodies[i] = make_body(SMALL_BYTES, i + 1);
        entries[i] = deliver(f, bodies[i], SMALL_BYTES, i % 2 == 1, &mids[i]);
    }
    pool_is(f, 0, 0);
    unsigned char buf[2 * SMALL_BYTES];
    for (size_t i = 0; i < N; i++) {
        struct store_body_reader *r = NULL;
        int64_t size = 0;
        /* Every other one through the queue's lookup: a second statement on the same connection. */
        if (i % 2 == 1)
            assert_int_equal(store_queue_body_open(f->rd, mids[i], HOLD_LONG, &r, &size), STORE_OK);
        else
            assert_int_equal(store_message_open(f->rd, f->uid, entries[i], HOLD_LONG, &r, &size),
                             STORE_OK);
        assert_int_equal(size, SMALL_BYTES);
        pool_is(f, 0, 1); /* lent to the reader, which holds its snapshot */
        size_t n = 0;
        assert_int_equal(store_body_read(r, buf, sizeof(buf), &n), STORE_OK);
        assert_int_equal(n, SMALL_BYTES);
        assert_memory_equal(buf, bodies[i], SMALL_BYTES);
        /* The whole body in one read: connection and snapshot are back before the close. */
        pool_is(f, 1, 1);
        assert_int_equal(store_body_read(r, buf, sizeof(buf), &n), STORE_OK);
        assert_int_equal(n, 0);
        store_body_close(&r);
        assert_null(r);
        pool_is(f, 1, 1);
        free(bodies[i]);
    }
}

static void test_more_readers_than_the_pool(void **state)
{
    struct fixture *f = *state;
    enum { N = STORE_READ_POOL_MAX + 2 };
    const size_t len = 8 * CHUNK_BYTES;
    unsigned char *bodies[N];
    struct store_body_reader *r[N];
    unsigned char *buf = malloc(CHUNK_BYTES);
    assert_non_null(buf);
    for (size_t i = 0; i < N; i++) {
        bodies[i] = make_body(len, 100 + i);
        int64_t entry = deliver(f, bodies[i], len, false, NULL);
        assert_int_equal(store_message_open(f->rd, f->uid, entry, HOLD_LONG, &r[i], NULL),
                         STORE_OK);
    }
    /* Each held snapshot has a connection of its own: the pool is empty, none was refused. */
    pool_is(f, 0, N);
    /* Interleaved reads: each reader gets its own bytes. */
    for (size_t off = 0; off < len; off += CHUNK_BYTES) {
        for (size_t i = 0; i < N; i++) {
            size_t n = 0;
            assert_int_equal(store_body_read(r[i], buf, CHUNK_BYTES, &n), STORE_OK);
            assert_int_equal(n, CHUNK_BYTES);
            assert_memory_equal(buf, bodies[i] + off, CHUNK_BYTES);
        }
    }
    /* All at their end: the pool kept what it may, the rest were closed. */
    for (size_t i = 0; i < N; i++)
        store_body_close(&r[i]);
    pool_is(f, STORE_READ_POOL_MAX, N);
    /* And is used again: no connection opened for these. */
    for (size_t i = 0; i < N; i++) {
        struct store_body_reader *again = NULL;
        int64_t entry = deliver(f, bodies[i], 1000, false, NULL);
        assert_int_equal(store_message_open(f->rd, f->uid, entry, HOLD_LONG, &again, NULL),
                         STORE_OK);
        read_rest(f, again, bodies[i], 0, 1000, CHUNK_BYTES);
        store_body_close(&again);
        free(bodies[i]);
    }
    pool_is(f, STORE_READ_POOL_MAX, N);
    free(buf);
}

/* hold_ms 0 (a new snapshot per read) and a held one that is dropped for age. */
static void test_deleted_mid_read(void **state)
{
    struct fixture *f = *state;
    const size_t len = 4 * CHUNK_BYTES;
    const int64_t holds[] = {0, 1};
    unsigned char *victim = make_body(len, 7);
    unsigned char *other = make_body(len, 8);
    unsigned char *buf = malloc(CHUNK_BYTES);
    assert_non_null(buf);
    for (size_t h = 0; h < sizeof(holds) / sizeof(holds[0]); h++) {
        int64_t gone = deliver(f, victim, len, false, NULL);
        int64_t kept = deliver(f, other, len, false, NULL);
        struct store_body_reader *r = NULL;
        assert_int_equal(store_message_open(f->rd, f->uid, gone, holds[h], &r, NULL), STORE_OK);
        size_t n = 0;
        assert_int_equal(store_body_read(r, buf, CHUNK_BYTES, &n), STORE_OK);
        assert_memory_equal(buf, victim, CHUNK_BYTES);
        size_t deleted = 0;
        assert_int_equal(store_mailbox_delete(f->s, f->uid, &gone, 1, &deleted), STORE_OK);
        assert_int_equal(deleted, 1);
        if (holds[h] > 0)
            usleep((useconds_t)(holds[h] + 20) * 1000); /* the snapshot is too old now */
        n = 99;
        assert_int_equal(store_body_read(r, buf, CHUNK_BYTES, &n), STORE_NOT_FOUND);
        assert_int_equal(n, 0);
        assert_non_null(strstr(store_errmsg(f->rd), "gone"));
        store_body_close(&r);
        /* The connection the failed reader gave back reads the next message, and only it. */
        size_t idle = 0;
        uint64_t opened = 0;
        store_read_pool_stats(f->rd, &idle, &opened);
        assert_int_equal(idle, store_test_on_pg ? 0 : 1);
        assert_int_equal(store_message_open(f->rd, f->uid, kept, holds[h], &r, NULL), STORE_OK);
        read_rest(f, r, other, 0, len, CHUNK_BYTES);
        store_body_close(&r);
        pool_is(f, 1, opened);
    }
    free(buf);
    free(victim);
    free(other);
}

static void test_large_body_in_chunks(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(LARGE_BYTES, 9);
    int64_t entry = deliver(f, body, LARGE_BYTES, false, NULL);
    const int64_t holds[] = {HOLD_LONG, 0};
    const size_t chunks[] = {CHUNK_BYTES, 32 * 1024 + 7};
    for (size_t h = 0; h < 2; h++) {
        for (size_t c = 0; c < 2; c++) {
            struct store_body_reader *r = NULL;
            int64_t size = 0;
            assert_int_equal(store_message_open(f->rd, f->uid, entry, holds[h], &r, &size),
                             STORE_OK);
            assert_int_equal(size, LARGE_BYTES);
            read_rest(f, r, body, 0, LARGE_BYTES, chunks[c]);
            store_body_close(&r);
        }
    }
    pool_is(f, 1, 1);
    free(body);
}

/* store_body_rebind: the chunks of one body read through two stores in turn (two reader threads'
 * connections), unbound between them; the connection travels with the reader, is given back to
 * the store bound at the end of the body, and a reader closed unbound closes its own. */
static void test_rebind_between_stores(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(LARGE_BYTES, 11);
    int64_t entry = deliver(f, body, LARGE_BYTES, false, NULL);
    struct store *other = open_ok(f->path);
    struct store *stores[2] = {f->rd, other};
    struct store_body_reader *r = NULL;
    assert_int_equal(store_message_open(f->rd, f->uid, entry, HOLD_LONG, &r, NULL), STORE_OK);
    pool_is(f, 0, 1); /* the reader holds the one connection opened for it */
    store_body_rebind(r, NULL);
    unsigned char *buf = malloc(CHUNK_BYTES);
    assert_non_null(buf);
    size_t off = 0;
    for (unsigned i = 0; off < LARGE_BYTES; i++) {
        store_body_rebind(r, stores[i % 2]);
        size_t n = 0;
        if (store_body_read(r, buf, CHUNK_BYTES, &n) != STORE_OK)
            fail_msg("read at %zu: %s", off, store_errmsg(stores[i % 2]));
        store_body_rebind(r, NULL);
        assert_true(n > 0);
        assert_memory_equal(buf, body + off, n);
        off += n;
    }
    store_body_close(&r);
    /* One connection for the whole body: no store opened another on the way. */
    size_t idle[2];
    uint64_t opened[2];
    store_read_pool_stats(f->rd, &idle[0], &opened[0]);
    store_read_pool_stats(other, &idle[1], &opened[1]);
    if (!store_test_on_pg) { /* PostgreSQL has no pool: each read is on the bound store's own */
        assert_int_equal(opened[0] + opened[1], 1);
        assert_int_equal(idle[0] + idle[1], 1); /* back in the pool of the store bound at the end */
    }

    /* Closed unbound in the middle of a body: its connection is closed, no pool gains one. */
    assert_int_equal(store_message_open(other, f->uid, entry, HOLD_LONG, &r, NULL), STORE_OK);
    size_t n = 0;
    assert_int_equal(store_body_read(r, buf, CHUNK_BYTES, &n), STORE_OK);
    store_body_rebind(r, NULL);
    store_body_close(&r);
    size_t idle_after[2];
    store_read_pool_stats(f->rd, &idle_after[0], &opened[0]);
    store_read_pool_stats(other, &idle_after[1], &opened[1]);
    assert_int_equal(idle_after[1], 0);       /* taken from other's pool, or new: closed */
    assert_int_equal(idle_after[0], idle[0]); /* never given to a store it was not bound to */
    free(buf);
    store_close(&other);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_small_bodies_reuse_one_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_more_readers_than_the_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_mid_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_body_in_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebind_between_stores, setup, teardown),
    };
    return STORE_TEST_RUN(tests);
}
