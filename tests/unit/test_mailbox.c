/*
 * test_mailbox.c - storage/mailbox.c against a real database file in a temporary directory:
 * a delivery stores the body once with one entry per local user and one queue row per remote
 * recipient; bodies read back byte for byte at every chunk size (small message) and in 64 KiB
 * chunks (20 MiB message with 8-bit bytes and NULs), with SQLite's memory high water measured
 * while storing and reading it; snapshot order and sizes; UIDL charset, length, uniqueness over
 * 1,000 deliveries and no reuse after deletions or in a recreated database; deletions limited to
 * the user's own entries; bodies freed with their last reference; failed deliveries leave
 * nothing; a reader whose entry is deleted meanwhile fails cleanly; deliveries through the real
 * writer thread are visible to another connection in the done callback; a 10,000-entry snapshot.
 *
 * Two store connections play the writer's (f->s) and the loop's (f->rd); checks of what is on
 * disk go through a third connection of their own. Every loop is bounded. The tests run on SQLite,
 * then on PostgreSQL when there is a server (store_fixture.h).
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
#include <time.h>
#include <unistd.h>

#include <sqlite3.h> /* memory statistics */
#include <uv.h>

#include "common/util.h"
#include "storage/mailbox.h"
#include "storage/spool.h"
#include "storage/store.h"
#include "tests/unit/store_fixture.h"
#include "storage/writer.h"

#define N_USERS     4
#define BIG_BYTES   (20u * 1024 * 1024)
#define BIG_CHUNK   (64u * 1024)
#define SMALL_BYTES 5000u
#define WATCHDOG_MS 60000
#define MiB         (1024 * 1024)

static const char *const user_names[N_USERS] = {"a@example.test", "b@example.test",
                                                "c@example.test", "d@example.test"};

struct fixture {
    char dir[64];
    char path[1024];
    struct store *s;  /* the writer's connection */
    struct store *rd; /* the loop's read connection */
    int64_t uid[N_USERS];
};

/* ---- database helpers ---- */

static void add_users(struct fixture *f)
{
    assert_int_equal(store_domain_add(f->s, "example.test"), STORE_OK);
    for (int i = 0; i < N_USERS; i++) {
        assert_int_equal(store_user_add(f->s, user_names[i], "example.test", "not-a-real-hash"),
                         STORE_OK);
        char hash[128];
        assert_int_equal(store_user_get(f->s, user_names[i], &f->uid[i], hash, sizeof(hash)),
                         STORE_OK);
    }
}

/* Removes the database (a PostgreSQL one is made empty again) and the writer's spool directory
 * (storage/spool.h), when a writer ran. */
static void remove_db_files(const char *path)
{
    if (store_test_on_pg)
        store_test_db_recreate();
    else
        store_test_db_remove_files(path);
    char spool[1100];
    assert_int_equal(spool_dir_path(path, spool, sizeof(spool)), 0);
    if (rmdir(spool) != 0)
        assert_int_equal(errno, ENOENT);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/postern-mailbox-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    store_test_db_new(f->path, sizeof(f->path), f->dir, "t.db");
    f->s = open_ok(f->path);
    f->rd = open_ok(f->path);
    add_users(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(&f->rd);
    store_close(&f->s);
    remove_db_files(f->path);
    store_test_db_drop();
    assert_int_equal(rmdir(f->dir), 0);
    free(f);
    return 0;
}

/* One integer through a separate plain connection: what is on disk. */
__attribute__((format(printf, 2, 3))) static long long query_int(const char *path, const char *fmt,
                                                                 ...)
{
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return store_test_query_i64(path, sql);
}

/* Deterministic bytes with every value, NULs and bare CR/LF among them. */
static unsigned char *make_body(size_t len, uint64_t seed)
{
    unsigned char *b = malloc(len > 0 ? len : 1);
    assert_non_null(b);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (i % 97 == 0) ? 0 : (unsigned char)(x >> 24);
    }
    return b;
}

static int64_t deliver_ok(struct store *s, const unsigned char *body, size_t len,
                          const int64_t *locals, size_t n_local, const char *const *remotes,
                          size_t n_remote, int64_t received_ms)
{
    struct store_delivery d = {
        .sender = "sender@far.example",
        .body = body,
        .body_len = len,
        .local_user_ids = locals,
        .n_local = n_local,
        .remote_rcpts = remotes,
        .n_remote = n_remote,
        .received_ms = received_ms,
    };
    int rc = store_deliver(s, &d);
    if (rc != STORE_OK)
        fail_msg("store_deliver: %d %s", rc, store_errmsg(s));
    assert_true(d.message_id_out > 0);
    return d.message_id_out;
}

static struct store_mail_entry *snapshot_ok(struct store *s, int64_t user_id, size_t *count_out)
{
    struct store_mail_entry *e = NULL;
    int rc = store_mailbox_snapshot(s, user_id, &e, count_out);
    if (rc != STORE_OK)
        fail_msg("snapshot: %s", store_errmsg(s));
    return e;
}

/* The entry of user_id for message_id, from a snapshot. */
static int64_t entry_of(struct store *s, int64_t user_id, int64_t message_id)
{
    size_t n = 0;
    struct store_mail_entry *e = snapshot_ok(s, user_id, &n);
    int64_t id = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].message_id == message_id)
            id = e[i].id;
    }
    free(e);
    assert_true(id > 0);
    return id;
}

static bool uidl_is_valid(const char *u)
{
    size_t len = strlen(u);
    if (len < 1 || len > 70)
        return false;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)u[i] < 0x21 || (unsigned char)u[i] > 0x7e)
            return false;
    }
    return true;
}

/* Reads the whole body of an entry in chunks of `chunk` bytes, asserting each chunk is exactly
 * min(chunk, what is left) and equal to want. */
static void read_and_compare(struct store *s, int64_t user_id, int64_t entry_id, int64_t hold_ms,
                             size_t chunk, const unsigned char *want, size_t len)
{
    struct store_body_reader *r = NULL;
    int64_t size = -1;
    int rc = store_message_open(s, user_id, entry_id, hold_ms, &r, &size);
    if (rc != STORE_OK)
        fail_msg("store_message_open: %d %s", rc, store_errmsg(s));
    assert_int_equal(size, (int64_t)len);
    unsigned char *buf = malloc(chunk);
    assert_non_null(buf);
    size_t off = 0;
    for (size_t iter = 0; iter <= len / chunk + 1; iter++) {
        size_t n = 12345678;
        rc = store_body_read(r, buf, chunk, &n);
        if (rc != STORE_OK)
            fail_msg("read at %zu chunk %zu: %s", off, chunk, store_errmsg(s));
        size_t expect = len - off < chunk ? len - off : chunk;
        if (n != expect)
            fail_msg("chunk %zu at offset %zu: got %zu bytes, want %zu", chunk, off, n, expect);
        if (n == 0)
            break;
        if (memcmp(buf, want + off, n) != 0)
            fail_msg("chunk %zu at offset %zu: bytes differ", chunk, off);
        off += n;
    }
    assert_int_equal(off, len);
    size_t n = 1;
    assert_int_equal(store_body_read(r, buf, chunk, &n), STORE_OK);
    assert_int_equal(n, 0);
    free(buf);
    store_body_close(&r);
    assert_null(r);
}

/* ---- delivery ---- */

static void test_deliver_stores_body_once(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(SMALL_BYTES, 1);
    int64_t locals[3] = {f->uid[0], f->uid[1], f->uid[2]};
    /* A quoted local part may hold an '@': the domain is what follows the last one. */
    const char *remotes[2] = {"x@remote.example", "\"odd@local\"@Far.Example.ORG"};
    int64_t mid = deliver_ok(f->s, body, SMALL_BYTES, locals, 3, remotes, 2, 1700000000123);

    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 1);
    assert_int_equal(query_int(f->path, "SELECT id FROM messages"), mid);
    assert_int_equal(query_int(f->path,
                               "SELECT count(*) FROM messages WHERE size = %u AND"
                               " length(body) = %u AND received_ms = 1700000000123 AND"
                               " sender = 'sender@far.example'",
                               SMALL_BYTES, SMALL_BYTES),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 3);
    assert_int_equal(query_int(f->path,
                               "SELECT count(DISTINCT user_id) FROM mailbox WHERE"
                               " message_id = %lld AND size = %u AND added_ms = 1700000000123"
                               " AND user_id IN (%lld, %lld, %lld)",
                               (long long)mid, SMALL_BYTES, (long long)f->uid[0],
                               (long long)f->uid[1], (long long)f->uid[2]),
                     3);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 2);
    assert_int_equal(query_int(f->path,
                               "SELECT count(*) FROM queue WHERE message_id = %lld AND"
                               " recipient = 'x@remote.example' AND domain = 'remote.example'"
                               " AND sender = 'sender@far.example' AND attempts = 0 AND"
                               " next_attempt_ms = 1700000000123",
                               (long long)mid),
                     1);
    assert_int_equal(query_int(f->path,
                               "SELECT count(*) FROM queue WHERE message_id = %lld AND"
                               " recipient = '\"odd@local\"@Far.Example.ORG' AND"
                               " domain = 'Far.Example.ORG'",
                               (long long)mid),
                     1);
    /* The user not addressed got nothing. */
    size_t n = 99;
    struct store_mail_entry *e = snapshot_ok(f->rd, f->uid[3], &n);
    assert_null(e);
    assert_int_equal(n, 0);
    free(body);
}

static void test_deliver_dedupes_recipients(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(100, 2);
    int64_t locals[4] = {f->uid[1], f->uid[1], f->uid[2], f->uid[1]};
    const char *remotes[3] = {"x@remote.example", "y@remote.example", "x@remote.example"};
    int64_t mid = deliver_ok(f->s, body, 100, locals, 4, remotes, 3, 5);
    assert_int_equal(
        query_int(f->path, "SELECT count(*) FROM mailbox WHERE message_id = %lld", (long long)mid),
        2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox WHERE user_id = %lld",
                               (long long)f->uid[1]),
                     1);
    assert_int_equal(
        query_int(f->path, "SELECT count(*) FROM queue WHERE message_id = %lld", (long long)mid),
        2);
    /* A remote-only delivery and the null sender. */
    struct store_delivery d = {.sender = "",
                               .body = body,
                               .body_len = 100,
                               .remote_rcpts = remotes,
                               .n_remote = 1,
                               .received_ms = 6};
    assert_int_equal(store_deliver(f->s, &d), STORE_OK);
    assert_int_equal(query_int(f->path,
                               "SELECT count(*) FROM queue WHERE message_id = %lld AND"
                               " sender = ''",
                               (long long)d.message_id_out),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 2);
    free(body);
}

/* Bad deliveries, each tried inside the caller's savepoint (as the writer runs a job) and on its
 * own in autocommit mode: neither leaves any row behind. */
struct bad_delivery {
    const char *name;
    bool bad_user;   /* a user id that does not exist, between two good ones */
    bool bad_remote; /* a remote recipient without a domain */
    bool no_rcpts;
    int want;
};

static const struct bad_delivery bad_deliveries[] = {
    {"unknown user in the middle", true, false, false, STORE_NOT_FOUND},
    {"remote without a domain", false, true, false, STORE_ERR},
    {"no recipients", false, false, true, STORE_ERR},
};

static void test_failed_delivery_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(300000, 3); /* several overflow pages already written */
    int64_t good_locals[1] = {f->uid[0]};
    const char *good_remote[1] = {"ok@remote.example"};
    for (size_t c = 0; c < sizeof(bad_deliveries) / sizeof(bad_deliveries[0]); c++) {
        const struct bad_delivery *b = &bad_deliveries[c];
        for (int in_txn = 0; in_txn < 2; in_txn++) {
            long long before_msg = query_int(f->path, "SELECT count(*) FROM messages");
            long long before_mbx = query_int(f->path, "SELECT count(*) FROM mailbox");
            long long before_q = query_int(f->path, "SELECT count(*) FROM queue");
            int64_t locals[3] = {f->uid[1], b->bad_user ? 987654 : f->uid[2], f->uid[3]};
            const char *remotes[2] = {"r@remote.example",
                                      b->bad_remote ? "nodomain@" : "s@remote.example"};
            struct store_delivery d = {
                .sender = "x@far.example",
                .body = body,
                .body_len = 300000,
                .local_user_ids = locals,
                .n_local = b->no_rcpts ? 0 : 3,
                .remote_rcpts = remotes,
                .n_remote = b->no_rcpts ? 0 : 2,
                .received_ms = 7,
            };
            if (in_txn) {
                /* One good job, then the bad one, in one batch transaction. */
                assert_int_equal(store_begin(f->s), STORE_OK);
                assert_int_equal(store_savepoint(f->s), STORE_OK);
                deliver_ok(f->s, body, 10, good_locals, 1, good_remote, 1, 8);
                assert_int_equal(store_savepoint_release(f->s), STORE_OK);
                assert_int_equal(store_savepoint(f->s), STORE_OK);
            }
            int rc = store_deliver(f->s, &d);
            if (rc != b->want)
                fail_msg("%s (in_txn %d): got %d, want %d", b->name, in_txn, rc, b->want);
            assert_true(strlen(store_errmsg(f->s)) > 0);
            assert_int_equal(d.message_id_out, 0);
            if (in_txn) {
                assert_int_equal(store_savepoint_rollback(f->s), STORE_OK);
                assert_int_equal(store_commit(f->s), STORE_OK);
            }
            /* Only the good job of the batch is there. */
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"),
                             before_msg + in_txn);
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"),
                             before_mbx + in_txn);
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), before_q + in_txn);
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages WHERE size <> 10"),
                             0);
        }
    }
    /* The connection is usable afterwards. */
    deliver_ok(f->s, body, 300000, good_locals, 1, NULL, 0, 9);
    free(body);
}

/* ---- reading ---- */

static void test_read_small_every_chunk_size(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(SMALL_BYTES, 4);
    int64_t locals[1] = {f->uid[0]};
    int64_t mid = deliver_ok(f->s, body, SMALL_BYTES, locals, 1, NULL, 0, 10);
    int64_t entry = entry_of(f->rd, f->uid[0], mid);
    const int64_t holds[2] = {STORE_MESSAGE_HOLD_MS, 0};
    for (size_t h = 0; h < 2; h++) {
        for (size_t chunk = 1; chunk <= 4096; chunk++)
            read_and_compare(f->rd, f->uid[0], entry, holds[h], chunk, body, SMALL_BYTES);
    }
    /* An empty body and a one-byte body. */
    for (size_t len = 0; len < 2; len++) {
        mid = deliver_ok(f->s, body, len, locals, 1, NULL, 0, 11);
        read_and_compare(f->rd, f->uid[0], entry_of(f->rd, f->uid[0], mid), 0, 7, body, len);
    }
    free(body);
}

static void test_read_not_owner_or_unknown(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(50, 5);
    int64_t locals[1] = {f->uid[0]};
    int64_t mid = deliver_ok(f->s, body, 50, locals, 1, NULL, 0, 12);
    int64_t entry = entry_of(f->rd, f->uid[0], mid);
    struct store_body_reader *r = NULL;
    int64_t size = -1;
    assert_int_equal(store_message_open(f->rd, f->uid[1], entry, 0, &r, &size), STORE_NOT_FOUND);
    assert_null(r);
    assert_int_equal(size, -1);
    assert_int_equal(store_message_open(f->rd, f->uid[0], entry + 1000, 0, &r, &size),
                     STORE_NOT_FOUND);
    assert_null(r);
    free(body);
}

static void test_read_20mib(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(BIG_BYTES, 6);
    int64_t locals[2] = {f->uid[0], f->uid[1]};
    /* SQLite's own allocations while storing: the body must not be copied into SQLite. */
    /* memory statistics are on in this build */
    assert_true(store_test_on_pg || sqlite3_memory_used() > 0);
    int64_t before = sqlite3_memory_used();
    sqlite3_memory_highwater(1);
    int64_t mid = deliver_ok(f->s, body, BIG_BYTES, locals, 2, NULL, 0, 13);
    int64_t store_peak = sqlite3_memory_highwater(0) - before;
    print_message("storing 20 MiB for 2 users: SQLite memory high water +%lld KiB\n",
                  (long long)(store_peak / 1024));
    assert_true(store_test_on_pg || store_peak < 8 * MiB); /* SQLite's figure */
    assert_int_equal(
        query_int(f->path, "SELECT count(*) FROM messages WHERE length(body) = %u", BIG_BYTES), 1);

    int64_t entry = entry_of(f->rd, f->uid[1], mid);
    const int64_t holds[2] = {STORE_MESSAGE_HOLD_MS, 0};
    for (size_t h = 0; h < 2; h++) {
        before = sqlite3_memory_used();
        sqlite3_memory_highwater(1);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        read_and_compare(f->rd, f->uid[1], entry, holds[h], BIG_CHUNK, body, BIG_BYTES);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        int64_t read_peak = sqlite3_memory_highwater(0) - before;
        print_message(
            "reading 20 MiB in 64 KiB chunks, hold %lld ms: SQLite memory high water "
            "+%lld KiB, %lld ms\n",
            (long long)holds[h], (long long)(read_peak / 1024),
            (long long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
        assert_true(store_test_on_pg || read_peak < 2 * MiB);
    }
    free(body);
}

/* A reader whose entry goes away: within its snapshot it still reads the right bytes, and the
 * next snapshot fails with STORE_NOT_FOUND, never other bytes. */
struct vanish_case {
    const char *name;
    int64_t hold_ms;
    bool delete_user;           /* the admin deletes the user instead of a POP3 deletion */
    size_t same_snapshot_reads; /* chunks still read after the deletion */
};

static const struct vanish_case vanish_cases[] = {
    {"reopen per read, entry deleted", 0, false, 0},
    {"reopen per read, user deleted", 0, true, 0},
    {"held snapshot, entry deleted", STORE_MESSAGE_HOLD_MS, false, 3},
    {"held snapshot, user deleted", STORE_MESSAGE_HOLD_MS, true, 3},
    {"held snapshot expires", 1, false, 0},
};

static void test_read_entry_deleted_meanwhile(void **state)
{
    struct fixture *f = *state;
    const size_t len = 400000, chunk = 10000;
    unsigned char *body = make_body(len, 7);
    unsigned char *buf = malloc(chunk);
    assert_non_null(buf);
    for (size_t c = 0; c < sizeof(vanish_cases) / sizeof(vanish_cases[0]); c++) {
        const struct vanish_case *v = &vanish_cases[c];
        if (v->delete_user) {
            /* A fresh user each time, so the fixture's users stay. */
            char addr[64];
            snprintf(addr, sizeof(addr), "gone%zu@example.test", c);
            assert_int_equal(store_user_add(f->s, addr, "example.test", "h"), STORE_OK);
        }
        int64_t victim = f->uid[2];
        char hash[128];
        char addr[64];
        snprintf(addr, sizeof(addr), "gone%zu@example.test", c);
        if (v->delete_user)
            assert_int_equal(store_user_get(f->s, addr, &victim, hash, sizeof(hash)), STORE_OK);
        int64_t mid = deliver_ok(f->s, body, len, &victim, 1, NULL, 0, 14);
        int64_t entry = entry_of(f->rd, victim, mid);

        struct store_body_reader *r = NULL;
        int64_t size = 0;
        assert_int_equal(store_message_open(f->rd, victim, entry, v->hold_ms, &r, &size), STORE_OK);
        size_t n = 0;
        assert_int_equal(store_body_read(r, buf, chunk, &n), STORE_OK);
        assert_int_equal(n, chunk);
        assert_memory_equal(buf, body, chunk);

        if (v->delete_user) {
            assert_int_equal(store_user_del(f->s, addr), STORE_OK);
        } else {
            size_t deleted = 0;
            assert_int_equal(store_mailbox_delete(f->s, victim, &entry, 1, &deleted), STORE_OK);
            assert_int_equal(deleted, 1);
        }
        assert_int_equal(
            query_int(f->path, "SELECT count(*) FROM messages WHERE id = %lld", (long long)mid), 0);

        size_t off = chunk;
        for (size_t i = 0; i < v->same_snapshot_reads; i++) {
            assert_int_equal(store_body_read(r, buf, chunk, &n), STORE_OK);
            assert_int_equal(n, chunk);
            assert_memory_equal(buf, body + off, chunk);
            off += chunk;
        }
        if (v->hold_ms > 0 && v->hold_ms < 100)
            usleep((useconds_t)(v->hold_ms + 20) * 1000);
        if (v->hold_ms < 100) {
            n = 99;
            int rc = store_body_read(r, buf, chunk, &n);
            if (rc != STORE_NOT_FOUND)
                fail_msg("%s: got %d, want STORE_NOT_FOUND", v->name, rc);
            assert_int_equal(n, 0);
            assert_non_null(strstr(store_errmsg(f->rd), "gone"));
            /* The reader stays failed. */
            assert_int_equal(store_body_read(r, buf, chunk, &n), STORE_ERR);
            assert_int_equal(n, 0);
        }
        store_body_close(&r);
        /* Opening it now fails cleanly too. */
        assert_int_equal(store_message_open(f->rd, victim, entry, v->hold_ms, &r, &size),
                         STORE_NOT_FOUND);
        assert_null(r);
    }
    free(buf);
    free(body);
}

/* ---- snapshot and UIDL ---- */

static void test_snapshot_order_and_sizes(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(4000, 8);
    int64_t mids[6];
    for (int i = 0; i < 6; i++) {
        /* Alternate users a and a+b, sizes 100, 700, 1300, ... */
        int64_t locals[2] = {f->uid[0], f->uid[1]};
        mids[i] = deliver_ok(f->s, body, (size_t)(100 + 600 * i), locals, i % 2 ? 2 : 1, NULL, 0,
                             1000 + i);
    }
    size_t n = 0;
    struct store_mail_entry *e = snapshot_ok(f->rd, f->uid[0], &n);
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(e[i].message_id, mids[i]);
        assert_int_equal(e[i].size, 100 + 600 * (int64_t)i);
        assert_true(uidl_is_valid(e[i].uidl));
        if (i > 0)
            assert_true(e[i].id > e[i - 1].id);
    }
    size_t nb = 0;
    struct store_mail_entry *eb = snapshot_ok(f->rd, f->uid[1], &nb);
    assert_int_equal(nb, 3);
    for (size_t i = 0; i < nb; i++) {
        assert_int_equal(eb[i].message_id, mids[2 * i + 1]);
        assert_int_equal(eb[i].size, 100 + 600 * (int64_t)(2 * i + 1));
        for (size_t j = 0; j < n; j++) {
            assert_int_not_equal(eb[i].id, e[j].id);
            assert_string_not_equal(eb[i].uidl, e[j].uidl);
        }
    }
    free(eb);
    free(e);
    free(body);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The meta tag as stored. */
static void read_tag(const char *path, char *tag_out, size_t len)
{
    char *tag = store_test_query_blob(path, "SELECT value FROM meta WHERE key = 'uidl_tag'", NULL);
    snprintf(tag_out, len, "%s", tag);
    free(tag);
}

#define UIDL_DELIVERIES 1000

static void test_uidl_unique_and_never_reused(void **state)
{
    struct fixture *f = *state;
    unsigned char body[32];
    memset(body, 'x', sizeof(body));
    int64_t locals[2] = {f->uid[0], f->uid[1]};
    assert_int_equal(store_begin(f->s), STORE_OK);
    for (int i = 0; i < UIDL_DELIVERIES; i++)
        deliver_ok(f->s, body, sizeof(body), locals, 2, NULL, 0, 1700000000000 + i / 10);
    assert_int_equal(store_commit(f->s), STORE_OK);

    char tag[64];
    read_tag(f->path, tag, sizeof(tag));
    assert_int_equal(strlen(tag), 16);
    assert_int_equal(strspn(tag, "0123456789abcdef"), 16);

    /* Every UIDL ever seen, across both maildrops and the redeliveries below. */
    size_t cap = 2 * UIDL_DELIVERIES + 8, seen = 0;
    char **all = calloc(cap, sizeof(*all));
    assert_non_null(all);
    for (int u = 0; u < 2; u++) {
        size_t n = 0;
        struct store_mail_entry *e = snapshot_ok(f->rd, f->uid[u], &n);
        assert_int_equal(n, UIDL_DELIVERIES);
        for (size_t i = 0; i < n; i++) {
            assert_true(uidl_is_valid(e[i].uidl));
            char want[128];
            snprintf(want, sizeof(want), "%s.%lld.%lld", tag, (long long)e[i].id,
                     (long long)(1700000000000 + (int64_t)i / 10));
            assert_string_equal(e[i].uidl, want);
            all[seen] = strdup(e[i].uidl);
            assert_non_null(all[seen]);
            seen++;
        }
        free(e);
    }

    /* Delete the newest entry (twice), deliver again: the new UIDL is one never seen. */
    for (int round = 0; round < 2; round++) {
        size_t n = 0;
        struct store_mail_entry *e = snapshot_ok(f->rd, f->uid[0], &n);
        int64_t newest = e[n - 1].id;
        free(e);
        size_t deleted = 0;
        assert_int_equal(store_mailbox_delete(f->s, f->uid[0], &newest, 1, &deleted), STORE_OK);
        assert_int_equal(deleted, 1);
        /* The same received time as the deleted one: only the id tells them apart. */
        int64_t mid = deliver_ok(f->s, body, sizeof(body), locals, 1, NULL, 0,
                                 1700000000000 + (UIDL_DELIVERIES - 1) / 10);
        e = snapshot_ok(f->rd, f->uid[0], &n);
        assert_int_equal(e[n - 1].message_id, mid);
        assert_true(e[n - 1].id > newest);
        for (size_t i = 0; i < seen; i++)
            assert_string_not_equal(e[n - 1].uidl, all[i]);
        all[seen] = strdup(e[n - 1].uidl);
        assert_non_null(all[seen]);
        seen++;
        free(e);
    }

    qsort(all, seen, sizeof(*all), cmp_str);
    for (size_t i = 1; i < seen; i++)
        assert_string_not_equal(all[i - 1], all[i]);
    for (size_t i = 0; i < seen; i++)
        free(all[i]);
    free(all);
}

/* On SQLite a new entry's id is the larger of the AUTOINCREMENT counter and the largest id
 * present, plus one: with the counter's row gone, a delivery still gets a free id (not 1 again,
 * which the first entry holds) and a UIDL that names it. PostgreSQL takes its sequence's next. */
static void test_entry_id_survives_a_missing_counter(void **state)
{
    struct fixture *f = *state;
    unsigned char body[16];
    memset(body, 'y', sizeof(body));
    int64_t local = f->uid[0];
    deliver_ok(f->s, body, sizeof(body), &local, 1, NULL, 0, 1700000000000);
    deliver_ok(f->s, body, sizeof(body), &local, 1, NULL, 0, 1700000000001);
    if (!store_test_on_pg)
        assert_int_equal(
            store_test_exec(f->s, "DELETE FROM sqlite_sequence WHERE name = 'mailbox'"), STORE_OK);
    deliver_ok(f->s, body, sizeof(body), &local, 1, NULL, 0, 1700000000002);
    size_t n = 0;
    struct store_mail_entry *e = snapshot_ok(f->rd, f->uid[0], &n);
    assert_int_equal(n, 3);
    assert_true(e[2].id > e[1].id);
    char tag[64], want[128];
    read_tag(f->path, tag, sizeof(tag));
    snprintf(want, sizeof(want), "%s.%lld.1700000000002", tag, (long long)e[2].id);
    assert_string_equal(e[2].uidl, want);
    free(e);
}

/* A database recreated from scratch numbers entries from 1 again, with the same received time
 * even: the UIDL still differs, through the per-database tag. */
static void test_uidl_differs_in_recreated_database(void **state)
{
    struct fixture *f = *state;
    unsigned char body[8] = "abcdefg";
    char first[POP3_UIDL_MAX_BYTES + 1] = "";
    int64_t first_id = 0;
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            store_close(&f->rd);
            store_close(&f->s);
            remove_db_files(f->path);
            f->s = open_ok(f->path);
            f->rd = open_ok(f->path);
            add_users(f);
        }
        int64_t locals[1] = {f->uid[0]};
        deliver_ok(f->s, body, sizeof(body), locals, 1, NULL, 0, 42);
        size_t n = 0;
        struct store_mail_entry *e = snapshot_ok(f->rd, f->uid[0], &n);
        assert_int_equal(n, 1);
        if (round == 0) {
            snprintf(first, sizeof(first), "%s", e[0].uidl);
            first_id = e[0].id;
        } else {
            assert_int_equal(e[0].id, first_id);
            assert_string_not_equal(e[0].uidl, first);
        }
        free(e);
    }
}

/* A database made by an older postern (schema 3) gets its tag when migrated, keeps its data,
 * and takes deliveries. */
static void test_migrated_database_gets_tag(void **state)
{
    STORE_TEST_SQLITE_ONLY("PostgreSQL databases start at version 11 (pg_schema.c)");
    struct fixture *f = *state;
    store_close(&f->rd);
    store_close(&f->s);
    remove_db_files(f->path);
    char err[512];
    struct store *old = NULL;
    assert_int_equal(store_open_at_version(f->path, 3, &old, err, sizeof(err)), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name = 'meta'"),
                     0);
    assert_int_equal(store_domain_add(old, "example.test"), STORE_OK);
    assert_int_equal(store_user_add(old, "old@example.test", "example.test", "h"), STORE_OK);
    store_close(&old);

    f->s = open_ok(f->path);
    f->rd = open_ok(f->path);
    assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
    char tag[64];
    read_tag(f->path, tag, sizeof(tag));
    assert_int_equal(strlen(tag), 16);
    int64_t uid = 0;
    char hash[128];
    assert_int_equal(store_user_get(f->s, "old@example.test", &uid, hash, sizeof(hash)), STORE_OK);
    unsigned char body[4] = "abc";
    deliver_ok(f->s, body, 3, &uid, 1, NULL, 0, 77);
    size_t n = 0;
    struct store_mail_entry *e = snapshot_ok(f->rd, uid, &n);
    assert_int_equal(n, 1);
    char want[80];
    snprintf(want, sizeof(want), "%s.%lld.77", tag, (long long)e[0].id);
    assert_string_equal(e[0].uidl, want);
    free(e);
}

static void test_snapshot_10000(void **state)
{
    struct fixture *f = *state;
    unsigned char body[256];
    memset(body, 'm', sizeof(body));
    int64_t a[1] = {f->uid[0]}, b[1] = {f->uid[1]};
    assert_int_equal(store_begin(f->s), STORE_OK);
    for (int i = 0; i < 10000; i++) {
        deliver_ok(f->s, body, (size_t)(1 + i % 256), a, 1, NULL, 0, i);
        if (i % 100 == 0)
            deliver_ok(f->s, body, 3, b, 1, NULL, 0, i);
    }
    assert_int_equal(store_commit(f->s), STORE_OK);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t n = 0;
    struct store_mail_entry *e = snapshot_ok(f->rd, f->uid[0], &n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    print_message(
        "snapshot of 10000 entries: %lld us\n",
        (long long)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000));
    assert_int_equal(n, 10000);
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(e[i].size, 1 + (int64_t)i % 256);
        assert_true(uidl_is_valid(e[i].uidl));
        if (i > 0) {
            assert_true(e[i].id > e[i - 1].id);
            assert_true(e[i].message_id > e[i - 1].message_id);
        }
        total += e[i].size;
    }
    assert_int_equal(total, query_int(f->path, "SELECT sum(size) FROM mailbox WHERE user_id = %lld",
                                      (long long)f->uid[0]));
    free(e);
    e = snapshot_ok(f->rd, f->uid[1], &n);
    assert_int_equal(n, 100);
    free(e);
}

/* ---- deletions ---- */

static void test_delete_only_own(void **state)
{
    struct fixture *f = *state;
    unsigned char body[10] = "123456789";
    int64_t a[1] = {f->uid[0]}, b[1] = {f->uid[1]};
    int64_t ea[3], eb[2];
    for (int i = 0; i < 3; i++)
        ea[i] = entry_of(f->rd, f->uid[0], deliver_ok(f->s, body, 10, a, 1, NULL, 0, i));
    for (int i = 0; i < 2; i++)
        eb[i] = entry_of(f->rd, f->uid[1], deliver_ok(f->s, body, 10, b, 1, NULL, 0, i));

    /* a asks for its 1st and 3rd, b's 1st, an unknown id and a repeat. */
    int64_t ids[5] = {ea[0], eb[0], ea[2], 999999, ea[0]};
    size_t deleted = 99;
    assert_int_equal(store_mailbox_delete(f->s, f->uid[0], ids, 5, &deleted), STORE_OK);
    assert_int_equal(deleted, 2);

    size_t n = 0;
    struct store_mail_entry *e = snapshot_ok(f->rd, f->uid[0], &n);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].id, ea[1]);
    free(e);
    e = snapshot_ok(f->rd, f->uid[1], &n);
    assert_int_equal(n, 2);
    assert_int_equal(e[0].id, eb[0]);
    assert_int_equal(e[1].id, eb[1]);
    free(e);
    /* Bodies: a's two deleted messages went, the other three stay. */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 3);

    /* Nothing to delete is fine, and b cannot delete a's last one either. */
    assert_int_equal(store_mailbox_delete(f->s, f->uid[0], NULL, 0, &deleted), STORE_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(store_mailbox_delete(f->s, f->uid[1], &ea[1], 1, &deleted), STORE_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 3);
}

/* The body goes with its last reference, whatever the order the references go in. */
enum ref { REF_A, REF_B, REF_QUEUE };

static const enum ref ref_orders[][3] = {
    {REF_A, REF_B, REF_QUEUE},
    {REF_QUEUE, REF_A, REF_B},
    {REF_B, REF_QUEUE, REF_A},
};

static void test_body_freed_with_last_reference(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(70000, 9);
    int64_t c[1] = {f->uid[2]};
    /* An unrelated message that must survive everything. */
    int64_t keep = deliver_ok(f->s, body, 100, c, 1, NULL, 0, 1);
    for (size_t o = 0; o < sizeof(ref_orders) / sizeof(ref_orders[0]); o++) {
        int64_t locals[2] = {f->uid[0], f->uid[1]};
        const char *remotes[1] = {"far@remote.example"};
        int64_t mid = deliver_ok(f->s, body, 70000, locals, 2, remotes, 1, 2);
        int64_t ea = entry_of(f->rd, f->uid[0], mid), eb = entry_of(f->rd, f->uid[1], mid);
        for (int step = 0; step < 3; step++) {
            size_t deleted = 0;
            switch (ref_orders[o][step]) {
            case REF_A:
                assert_int_equal(store_mailbox_delete(f->s, f->uid[0], &ea, 1, &deleted), STORE_OK);
                assert_int_equal(deleted, 1);
                break;
            case REF_B:
                assert_int_equal(store_mailbox_delete(f->s, f->uid[1], &eb, 1, &deleted), STORE_OK);
                assert_int_equal(deleted, 1);
                break;
            case REF_QUEUE: {
                long long qid = query_int(f->path, "SELECT id FROM queue WHERE message_id = %lld",
                                          (long long)mid);
                assert_int_equal(store_queue_drop(f->s, qid), STORE_OK);
                break;
            }
            }
            assert_int_equal(
                query_int(f->path, "SELECT count(*) FROM messages WHERE id = %lld", (long long)mid),
                step < 2 ? 1 : 0);
        }
        assert_int_equal(
            query_int(f->path, "SELECT count(*) FROM messages WHERE id = %lld", (long long)keep),
            1);
    }
    free(body);
}

/* ---- through the writer thread ---- */

struct deliver_job {
    struct writer_job job;
    struct store_delivery d;
    const char *path;
    int *done_count;
    int done_calls;
    int status;
    long long mailbox_rows; /* read in done through another connection */
    long long queue_rows;
    long long body_bytes;
};

static int deliver_run(struct store *st, struct writer_job *job)
{
    struct deliver_job *j = container_of(job, struct deliver_job, job);
    return store_deliver(st, &j->d);
}

static void deliver_done(struct writer_job *job, int status)
{
    struct deliver_job *j = container_of(job, struct deliver_job, job);
    j->done_calls++;
    j->status = status;
    (*j->done_count)++;
    if (status != 0)
        return;
    long long mid = (long long)j->d.message_id_out;
    j->mailbox_rows =
        query_int(j->path, "SELECT count(*) FROM mailbox WHERE message_id = %lld", mid);
    j->queue_rows = query_int(j->path, "SELECT count(*) FROM queue WHERE message_id = %lld", mid);
    j->body_bytes = query_int(
        j->path, "SELECT coalesce(sum(length(body)), -1) FROM messages WHERE id = %lld", mid);
}

static void watchdog_cb(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void test_deliver_through_writer(void **state)
{
    struct fixture *f = *state;
    unsigned char *body = make_body(1 * MiB, 10);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_t watchdog;
    bool timed_out = false;
    assert_int_equal(uv_timer_init(&loop, &watchdog), 0);
    watchdog.data = &timed_out;
    struct writer *w = NULL;
    char err[256];
    assert_int_equal(writer_start(&loop, f->path, &w, err, sizeof(err)), 0);

    int64_t good[3] = {f->uid[0], f->uid[1], f->uid[2]};
    int64_t bad[2] = {f->uid[3], 555555};
    const char *remotes[2] = {"r1@remote.example", "r2@other.example"};
    struct deliver_job jobs[3];
    int done_count = 0;
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < 3; i++) {
        jobs[i].job.run = deliver_run;
        jobs[i].job.done = deliver_done;
        jobs[i].path = f->path;
        jobs[i].done_count = &done_count;
        jobs[i].d = (struct store_delivery){
            .sender = "s@far.example",
            .body = body,
            .body_len = (size_t)(1 * MiB - i),
            .local_user_ids = i == 1 ? bad : good,
            .n_local = i == 1 ? 2 : 3,
            .remote_rcpts = remotes,
            .n_remote = 2,
            .received_ms = 100 + i,
        };
        assert_int_equal(writer_submit(w, &jobs[i].job), 0);
    }
    assert_int_equal(uv_timer_start(&watchdog, watchdog_cb, WATCHDOG_MS, 0), 0);
    while (done_count < 3 && !timed_out)
        uv_run(&loop, UV_RUN_ONCE);
    assert_false(timed_out);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        if (i == 1) {
            assert_int_equal(jobs[i].status, STORE_NOT_FOUND);
            continue;
        }
        assert_int_equal(jobs[i].status, 0);
        assert_int_equal(jobs[i].mailbox_rows, 3);
        assert_int_equal(jobs[i].queue_rows, 2);
        assert_int_equal(jobs[i].body_bytes, 1 * MiB - i);
    }
    /* The failed job left nothing: two messages in all, user d got none. */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox WHERE user_id = %lld",
                               (long long)f->uid[3]),
                     0);
    /* And the loop's read connection sees the bodies. */
    read_and_compare(f->rd, f->uid[2], entry_of(f->rd, f->uid[2], jobs[2].d.message_id_out),
                     STORE_MESSAGE_HOLD_MS, BIG_CHUNK, body, 1 * MiB - 2);

    writer_stop(&w);
    assert_null(w);
    assert_int_equal(uv_timer_stop(&watchdog), 0);
    uv_close((uv_handle_t *)&watchdog, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deliver_stores_body_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_dedupes_recipients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_delivery_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_small_every_chunk_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_not_owner_or_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_20mib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_entry_deleted_meanwhile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_order_and_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uidl_unique_and_never_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_id_survives_a_missing_counter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uidl_differs_in_recreated_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrated_database_gets_tag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_10000, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_only_own, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_freed_with_last_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_through_writer, setup, teardown),
    };
    return STORE_TEST_RUN(tests);
}
