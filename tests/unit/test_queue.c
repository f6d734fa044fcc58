/*
 * test_queue.c - storage/queue.c (the runner's side of the outbound queue) against a real
 * database file in a temporary directory:
 *   - the backoff schedule and the max_age rule (tables);
 *   - claims: only due entries, grouped by domain then message, never handed out twice while the
 *     lease holds, handed out again once it ran out, a limit that cuts and the rest coming with
 *     the next claims (every entry exactly once), domains skipped on request, a claim whose
 *     transaction is rolled back (a retried writer job) leaving nothing and claiming the same
 * again;
 *   - a crash: claim, close the store without recording anything, reopen, release_stale: the
 *     entries are due again with the interrupted attempt counted, and can be claimed;
 *   - release without counting; defer following the schedule over many attempts, cutting
 *     last_error, reporting expiry and then keeping the claim; delivered removing the entries and
 *     the body with the last one;
 *   - fail with a bounce, in the caller's savepoint: to a local sender's mailbox (null sender,
 *     Return-Path: <>, the DSN fields, the original's headers but not its body), as a queue row
 *     for a remote sender, never for a null-sender original (so a bounce is never bounced), nowhere
 *     for an unknown local user; refused for entries of two messages; undone whole by the
 *     enclosing savepoint's rollback;
 *   - several nodes: a node's start releases its own claims only; the claim of a node whose
 *     lease ran out or that has no row is taken over at once (counted as an interrupted
 *     attempt), a live node's and a nameless one only by the claim's lease; the late result of
 *     a node whose claim was taken over leaves the new claim alone (but a 250 still deletes);
 *   - flush making everything unclaimed due; next_due; the queued-body reader.
 * Checks of what is in the database go through a connection of their own. Loops are bounded. The
 * tests run on SQLite, then on PostgreSQL when there is a server (store_fixture.h).
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

#include "common/pure/dsn.h"
#include "storage/mailbox.h"
#include "storage/queue.h"
#include "storage/store.h"
#include "tests/unit/store_fixture.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MIN_MS       (60 * 1000LL)
#define T0           1717502400000LL /* 2024-06-04 12:00:00 UTC */
#define MAX_AGE_MS   (5 * 24 * 60 * MIN_MS)
/* Long past every time the tests use: a node alive through all of them. */
#define FOREVER_MS (T0 + 100 * (int64_t)STORE_QUEUE_LEASE_MS)

struct fixture {
    char dir[64];
    char path[1024];
    struct store *s;
    int64_t alice; /* user id of alice@example.test */
};

/* ---- helpers ---- */

/* Gives node name a nodes row (storage/nodes.c) whose lease ends at expires_ms: alive before. */
static void node_alive_until(struct store *s, const char *name, int64_t expires_ms)
{
    struct store_node_holder h;
    if (store_node_claim(s, name, "test-host", 1, T0, expires_ms - T0, true, &h) != STORE_OK)
        fail_msg("node %s: %s", name, store_errmsg(s));
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    store_test_place_new(f->dir, sizeof(f->dir), "queue", f->path, sizeof(f->path));
    f->s = open_ok(f->path);
    f->alice = store_test_user(f->s, "alice@example.test");
    /* The nodes the tests claim for are alive, as a serving node is: only the claim's lease
     * frees their claims (a node without a row would lose them at once). */
    node_alive_until(f->s, "n1", FOREVER_MS);
    node_alive_until(f->s, "n2", FOREVER_MS);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(&f->s);
    store_test_place_free(f->dir, f->path);
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

/* One text or blob value, malloc'd and NUL-terminated, through a separate connection. */
__attribute__((format(printf, 3, 4))) static char *query_text(const char *path, size_t *len_out,
                                                              const char *fmt, ...)
{
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return store_test_query_blob(path, sql, len_out);
}

static const char body_text[] = "Received: from client by mail.example.test; Tue, 4 Jun 2024\r\n"
                                "From: Alice <alice@example.test>\r\n"
                                "Subject: the original\r\n"
                                "\r\n"
                                "ORIGINAL-BODY-TEXT\r\n";

static int64_t deliver_ok(struct fixture *f, const char *sender, const char *const *remotes,
                          size_t n_remote, int64_t received_ms)
{
    struct store_delivery d = {
        .sender = sender,
        .body = (const unsigned char *)body_text,
        .body_len = sizeof(body_text) - 1,
        .remote_rcpts = remotes,
        .n_remote = n_remote,
        .received_ms = received_ms,
    };
    int rc = store_deliver(f->s, &d);
    if (rc != STORE_OK)
        fail_msg("store_deliver: %d %s", rc, store_errmsg(f->s));
    return d.message_id_out;
}

static int64_t entry_id(struct fixture *f, int64_t message_id, const char *rcpt)
{
    long long id = query_int(f->path,
                             "SELECT coalesce((SELECT id FROM queue WHERE message_id = %lld"
                             " AND recipient = '%s'), 0)",
                             (long long)message_id, rcpt);
    assert_true(id > 0);
    return id;
}

static void claim_ok(struct fixture *f, int64_t now_ms, size_t limit, struct store_queue_claims *c)
{
    int rc = store_queue_claim_due(f->s, "n1", now_ms, STORE_QUEUE_LEASE_MS, limit, NULL, 0, c);
    if (rc != STORE_OK)
        fail_msg("claim: %s", store_errmsg(f->s));
}

/* ---- the schedule ---- */

static void test_backoff_and_expiry(void **state)
{
    (void)state;
    static const struct {
        int64_t attempts, want_ms;
    } sched[] = {
        {-1, 1 * MIN_MS},  {0, 1 * MIN_MS},   {1, 1 * MIN_MS},     {2, 5 * MIN_MS},
        {3, 15 * MIN_MS},  {4, 30 * MIN_MS},  {5, 60 * MIN_MS},    {6, 120 * MIN_MS},
        {7, 240 * MIN_MS}, {8, 240 * MIN_MS}, {100, 240 * MIN_MS}, {INT64_MAX, 240 * MIN_MS},
    };
    for (size_t i = 0; i < ARRAY_LEN(sched); i++)
        assert_int_equal(store_queue_backoff_ms(sched[i].attempts), sched[i].want_ms);

    static const struct {
        int64_t created, now, max_age;
        bool want;
    } exp[] = {
        {T0, T0, MAX_AGE_MS, false},
        {T0, T0 + MAX_AGE_MS - 1, MAX_AGE_MS, false},
        {T0, T0 + MAX_AGE_MS, MAX_AGE_MS, true}, /* created + max_age <= now */
        {T0, T0 + MAX_AGE_MS + 1, MAX_AGE_MS, true},
        {T0, T0 - 1000, MAX_AGE_MS, false}, /* clock went back */
        {T0, T0, 0, true},                  /* max_age 0: the first failure bounces */
        {INT64_MIN, INT64_MAX, MAX_AGE_MS, true},
        {T0, INT64_MAX, INT64_MAX, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(exp); i++) {
        if (store_queue_is_expired(exp[i].created, exp[i].now, exp[i].max_age) != exp[i].want)
            fail_msg("expiry case %zu", i);
    }
}

/* ---- claims ---- */

static void test_claim_groups_and_lease(void **state)
{
    struct fixture *f = *state;
    const char *r1[] = {"r1@a.test", "r2@b.test", "r3@a.test"};
    const char *r2[] = {"r4@a.test"};
    const char *r3[] = {"r5@c.test"};
    const char *r4[] = {"later@a.test"};
    int64_t m1 = deliver_ok(f, "alice@example.test", r1, 3, T0);
    int64_t m2 = deliver_ok(f, "alice@example.test", r2, 1, T0 + 10);
    int64_t m3 = deliver_ok(f, "", r3, 1, T0 + 20);
    int64_t m4 = deliver_ok(f, "alice@example.test", r4, 1, T0 + 60000); /* not due yet */

    struct store_queue_claims c = {0};
    claim_ok(f, T0 + 1000, 100, &c);
    static const struct {
        const char *rcpt, *domain;
        int which;
    } want[] = {
        {"r1@a.test", "a.test", 1}, {"r3@a.test", "a.test", 1}, {"r4@a.test", "a.test", 2},
        {"r2@b.test", "b.test", 1}, {"r5@c.test", "c.test", 3},
    };
    int64_t mids[] = {0, m1, m2, m3};
    assert_int_equal(c.n, ARRAY_LEN(want));
    for (size_t i = 0; i < c.n; i++) {
        assert_string_equal(c.v[i].recipient, want[i].rcpt);
        assert_string_equal(c.v[i].domain, want[i].domain);
        assert_int_equal(c.v[i].message_id, mids[want[i].which]);
        assert_int_equal(c.v[i].id, entry_id(f, mids[want[i].which], want[i].rcpt));
        assert_string_equal(c.v[i].sender, want[i].which == 3 ? "" : "alice@example.test");
        assert_int_equal(c.v[i].created_ms, want[i].which == 1   ? T0
                                            : want[i].which == 2 ? T0 + 10
                                                                 : T0 + 20);
        assert_int_equal(c.v[i].attempts, 0);
        assert_int_equal(query_int(f->path, "SELECT claimed_ms FROM queue WHERE id = %lld",
                                   (long long)c.v[i].id),
                         T0 + 1000);
    }
    assert_int_equal(query_int(f->path,
                               "SELECT claimed_ms IS NULL FROM queue WHERE message_id ="
                               " %lld",
                               (long long)m4),
                     1);

    /* While the lease holds nothing comes twice, even once the later entry is due. */
    claim_ok(f, T0 + 2000, 100, &c);
    assert_int_equal(c.n, 0);
    claim_ok(f, T0 + 1000 + STORE_QUEUE_LEASE_MS - 1, 100, &c);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].recipient, "later@a.test");
    /* Once it ran out, the first five are handed out again. */
    claim_ok(f, T0 + 1000 + STORE_QUEUE_LEASE_MS, 100, &c);
    assert_int_equal(c.n, 5);
    /* A group of which one entry is given back and one still held: only the free one comes. */
    assert_int_equal(c.v[0].recipient[1], '1');
    assert_int_equal(store_queue_release(f->s, "n1", &c.v[0].id, 1), STORE_OK);
    claim_ok(f, T0 + 1001 + STORE_QUEUE_LEASE_MS, 100, &c);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].recipient, "r1@a.test");
    store_queue_claims_free(&c);
    assert_null(c.v);
    assert_int_equal(c.n, 0);
}

static void test_claim_limit_hands_out_each_once(void **state)
{
    struct fixture *f = *state;
    /* 12 messages, each to 1-3 recipients spread over 4 domains: 24 entries. */
    static const char *const domains[] = {"d1.test", "d2.test", "d3.test", "d4.test"};
    size_t total = 0;
    for (int m = 0; m < 12; m++) {
        char addrs[3][64];
        const char *rc[3];
        size_t n = (size_t)(m % 3) + 1;
        for (size_t k = 0; k < n; k++) {
            snprintf(addrs[k], sizeof(addrs[k]), "u%d.%zu@%s", m, k, domains[(m + k) % 4]);
            rc[k] = addrs[k];
        }
        deliver_ok(f, "alice@example.test", rc, n, T0 + m);
        total += n;
    }
    assert_int_equal(total, 24);
    static const size_t limits[] = {1, 2, 5};
    for (size_t li = 0; li < ARRAY_LEN(limits); li++) {
        assert_int_equal(store_test_exec(f->s, "UPDATE queue SET claimed_ms = NULL"), STORE_OK);
        int64_t seen[64] = {0};
        size_t n_seen = 0;
        for (int round = 0; round < 100 && n_seen < total; round++) {
            struct store_queue_claims c = {0};
            claim_ok(f, T0 + 1000 + round, limits[li], &c);
            assert_true(c.n >= 1 && c.n <= limits[li]);
            for (size_t i = 0; i < c.n; i++) {
                for (size_t j = 0; j < n_seen; j++)
                    assert_true(seen[j] != c.v[i].id);
                /* Sorted by domain, message, id within one claim. */
                if (i > 0) {
                    int d = strcmp(c.v[i - 1].domain, c.v[i].domain);
                    assert_true(d < 0 || (d == 0 && (c.v[i - 1].message_id < c.v[i].message_id ||
                                                     (c.v[i - 1].message_id == c.v[i].message_id &&
                                                      c.v[i - 1].id < c.v[i].id))));
                }
                seen[n_seen++] = c.v[i].id;
            }
            store_queue_claims_free(&c);
        }
        assert_int_equal(n_seen, total);
        struct store_queue_claims c = {0};
        claim_ok(f, T0 + 5000, 100, &c);
        assert_int_equal(c.n, 0);
    }
}

static void test_claim_oldest_first_and_skip_domains(void **state)
{
    struct fixture *f = *state;
    const char *a[] = {"x@a.test", "y@b.test"};
    const char *b[] = {"z@b.test"};
    int64_t m1 = deliver_ok(f, "alice@example.test", a, 2, T0);
    int64_t m2 = deliver_ok(f, "alice@example.test", b, 1, T0 - 5000); /* due earlier */

    /* limit 1: the earliest due entry's group. */
    struct store_queue_claims c = {0};
    claim_ok(f, T0 + 1, 1, &c);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.v[0].message_id, m2);
    assert_int_equal(store_queue_release(f->s, "n1", &c.v[0].id, 1), STORE_OK);

    /* b.test at its limit: only a.test comes; and the skip list is data, not SQL. */
    static const char *const skip[] = {"b.test", "it's\"a\\test"};
    assert_int_equal(
        store_queue_claim_due(f->s, "n1", T0 + 1, STORE_QUEUE_LEASE_MS, 10, skip, 2, &c), STORE_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].recipient, "x@a.test");
    assert_int_equal(c.v[0].message_id, m1);
    /* Nothing left outside b.test; b.test's two entries come when it is not skipped. */
    assert_int_equal(
        store_queue_claim_due(f->s, "n1", T0 + 2, STORE_QUEUE_LEASE_MS, 10, skip, 1, &c), STORE_OK);
    assert_int_equal(c.n, 0);
    claim_ok(f, T0 + 3, 10, &c);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[0].domain, "b.test");
    assert_string_equal(c.v[1].domain, "b.test");
    /* limit 0 claims nothing. */
    claim_ok(f, T0 + STORE_QUEUE_LEASE_MS * 2, 0, &c);
    assert_int_equal(c.n, 0);
    store_queue_claims_free(&c);
}

/* A writer job's run may be repeated after a failed COMMIT: the first run's changes are rolled
 * back and the second must hand out the same entries. */
static void test_claim_rolled_back_is_repeatable(void **state)
{
    struct fixture *f = *state;
    const char *r[] = {"a@a.test", "b@a.test"};
    deliver_ok(f, "alice@example.test", r, 2, T0);
    struct store_queue_claims c = {0};
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_savepoint(f->s), STORE_OK);
    claim_ok(f, T0 + 1, 10, &c);
    assert_int_equal(c.n, 2);
    int64_t first = c.v[0].id;
    assert_int_equal(store_savepoint_release(f->s), STORE_OK);
    assert_int_equal(store_rollback(f->s), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue WHERE claimed_ms IS NOT NULL"),
                     0);
    claim_ok(f, T0 + 2, 10, &c); /* the same struct: emptied first */
    assert_int_equal(c.n, 2);
    assert_int_equal(c.v[0].id, first);
    store_queue_claims_free(&c);
}

/* ---- crash safety ---- */

static void test_crash_then_release_stale(void **state)
{
    struct fixture *f = *state;
    const char *r[] = {"a@a.test", "b@b.test", "c@c.test"};
    deliver_ok(f, "alice@example.test", r, 3, T0);
    struct store_queue_claims c = {0};
    claim_ok(f, T0 + 100, 2, &c);
    assert_int_equal(c.n, 2);
    int64_t claimed[2] = {c.v[0].id, c.v[1].id};
    store_queue_claims_free(&c);

    /* The process dies mid-attempt: nothing recorded, the connection just goes. */
    store_close(&f->s);
    f->s = open_ok(f->path);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue WHERE claimed_ms IS NOT NULL"),
                     2);
    /* Without the release they would wait for the lease. */
    claim_ok(f, T0 + 200, 10, &c);
    assert_int_equal(c.n, 1);
    assert_int_equal(store_queue_release(f->s, "n1", &c.v[0].id, 1), STORE_OK);

    size_t released = 0;
    assert_int_equal(store_queue_release_stale(f->s, "n1", T0 + 60000, &released), STORE_OK);
    assert_int_equal(released, 2);
    for (size_t i = 0; i < 2; i++) {
        long long id = (long long)claimed[i];
        assert_int_equal(query_int(f->path, "SELECT attempts FROM queue WHERE id = %lld", id), 1);
        assert_int_equal(
            query_int(f->path, "SELECT claimed_ms IS NULL FROM queue WHERE id = %lld", id), 1);
        assert_true(query_int(f->path, "SELECT next_attempt_ms FROM queue WHERE id = %lld", id) <=
                    T0 + 60000);
        assert_int_equal(query_int(f->path,
                                   "SELECT last_error LIKE '%%interrupted%%' FROM queue"
                                   " WHERE id = %lld",
                                   id),
                         1);
    }
    /* The released entry was not counted. */
    assert_int_equal(query_int(f->path, "SELECT sum(attempts) FROM queue"), 2);
    claim_ok(f, T0 + 60000, 10, &c);
    assert_int_equal(c.n, 3); /* all due again: delivered at least once, never lost */
    store_queue_claims_free(&c);
    /* Claims made after the given time are not stale. */
    assert_int_equal(store_queue_release_stale(f->s, "n1", T0 + 59999, &released), STORE_OK);
    assert_int_equal(released, 0);
}

/* Two nodes on one database: each releases only its own claims at its start; claims made before
 * claims named a node count as the starting node's; another node's expired lease is claimable. */
static void test_release_stale_by_node(void **state)
{
    struct fixture *f = *state;
    const char *r[] = {"a@a.test", "b@b.test", "c@c.test"};
    deliver_ok(f, "alice@example.test", r, 3, T0);
    struct store_queue_claims c = {0};
    assert_int_equal(
        store_queue_claim_due(f->s, "n1", T0 + 100, STORE_QUEUE_LEASE_MS, 1, NULL, 0, &c),
        STORE_OK);
    assert_int_equal(c.n, 1);
    long long a = (long long)c.v[0].id;
    assert_int_equal(
        store_queue_claim_due(f->s, "n2", T0 + 100, STORE_QUEUE_LEASE_MS, 1, NULL, 0, &c),
        STORE_OK);
    assert_int_equal(c.n, 1);
    long long b = (long long)c.v[0].id;
    assert_true(a != b);
    assert_int_equal(query_int(f->path, "SELECT claimed_by = 'n1' FROM queue WHERE id = %lld", a),
                     1);
    assert_int_equal(query_int(f->path, "SELECT claimed_by = 'n2' FROM queue WHERE id = %lld", b),
                     1);
    /* The third as claimed before schema 12: no node. */
    assert_int_equal(
        store_queue_claim_due(f->s, "n1", T0 + 100, STORE_QUEUE_LEASE_MS, 1, NULL, 0, &c),
        STORE_OK);
    assert_int_equal(c.n, 1);
    long long old = (long long)c.v[0].id;
    store_queue_claims_free(&c);
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE queue SET claimed_by = NULL WHERE id = %lld", old);
    assert_int_equal(store_exec_for_tests(f->s, sql), STORE_OK);

    /* n1 restarts: its claim and the nameless one go, n2's stays. */
    size_t released = 0;
    assert_int_equal(store_queue_release_stale(f->s, "n1", T0 + 200, &released), STORE_OK);
    assert_int_equal(released, 2);
    assert_int_equal(
        query_int(f->path, "SELECT claimed_ms IS NOT NULL FROM queue WHERE id = %lld", b), 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue WHERE claimed_ms IS NULL"), 2);
    /* n1 does not take n2's entry while its lease runs... */
    claim_ok(f, T0 + 300, 10, &c);
    assert_int_equal(c.n, 2);
    for (size_t i = 0; i < c.n; i++)
        assert_true(c.v[i].id != b);
    store_queue_claims_free(&c);
    /* ...and does once it ran out (n2 died and did not come back). */
    claim_ok(f, T0 + 100 + STORE_QUEUE_LEASE_MS, 10, &c);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.v[0].id, b);
    store_queue_claims_free(&c);
    assert_int_equal(query_int(f->path, "SELECT claimed_by = 'n1' FROM queue WHERE id = %lld", b),
                     1);
}

/* ---- results ---- */

static void test_defer_follows_schedule_then_expires(void **state)
{
    struct fixture *f = *state;
    const char *r[] = {"a@a.test"};
    int64_t mid = deliver_ok(f, "alice@example.test", r, 1, T0);
    int64_t id = entry_id(f, mid, "a@a.test");
    int64_t now = T0;
    for (int64_t attempt = 1; attempt <= 9; attempt++) {
        struct store_queue_claims c = {0};
        claim_ok(f, now, 10, &c);
        assert_int_equal(c.n, 1);
        assert_int_equal(c.v[0].attempts, attempt - 1);
        store_queue_claims_free(&c);
        bool expired = true;
        char err[64];
        snprintf(err, sizeof(err), "mx.a.test: 451 4.3.0 try later (%lld)", (long long)attempt);
        assert_int_equal(store_queue_defer(f->s, "n1", id, now, MAX_AGE_MS, err, &expired),
                         STORE_OK);
        assert_false(expired);
        int64_t next = now + store_queue_backoff_ms(attempt);
        assert_int_equal(
            query_int(f->path, "SELECT attempts FROM queue WHERE id = %lld", (long long)id),
            attempt);
        assert_int_equal(
            query_int(f->path, "SELECT next_attempt_ms FROM queue WHERE id = %lld", (long long)id),
            next);
        assert_int_equal(query_int(f->path, "SELECT claimed_ms IS NULL FROM queue WHERE id = %lld",
                                   (long long)id),
                         1);
        char *le = query_text(f->path, NULL, "SELECT last_error FROM queue WHERE id = %lld",
                              (long long)id);
        assert_string_equal(le, err);
        free(le);
        /* Not due a millisecond early. */
        claim_ok(f, next - 1, 10, &c);
        assert_int_equal(c.n, 0);
        now = next;
    }
    /* 1+5+15+30+60+120+240+240+240 minutes: well inside max_age. Now past it. */
    assert_int_equal(now, T0 + (1 + 5 + 15 + 30 + 60 + 120 + 240 * 3) * MIN_MS);
    now = T0 + MAX_AGE_MS;
    struct store_queue_claims c = {0};
    claim_ok(f, now, 10, &c);
    assert_int_equal(c.n, 1);
    store_queue_claims_free(&c);
    static char long_err[3000];
    memset(long_err, 'e', sizeof(long_err) - 1);
    bool expired = false;
    assert_int_equal(store_queue_defer(f->s, "n1", id, now, MAX_AGE_MS, long_err, &expired),
                     STORE_OK);
    assert_true(expired);
    /* Expired: the claim is kept for the bounce, so no other claim takes it meanwhile. */
    assert_int_equal(
        query_int(f->path, "SELECT claimed_ms FROM queue WHERE id = %lld", (long long)id), now);
    assert_int_equal(
        query_int(f->path, "SELECT attempts FROM queue WHERE id = %lld", (long long)id), 10);
    assert_int_equal(
        query_int(f->path, "SELECT length(last_error) FROM queue WHERE id = %lld", (long long)id),
        STORE_QUEUE_ERROR_MAX_BYTES);
    assert_int_equal(store_queue_defer(f->s, "n1", id + 1000, now, MAX_AGE_MS, "x", &expired),
                     STORE_NOT_FOUND);
    assert_false(expired);
}

static void test_delivered_removes_entries_and_body(void **state)
{
    struct fixture *f = *state;
    const char *r[] = {"a@a.test", "b@a.test", "c@b.test"};
    int64_t mid = deliver_ok(f, "alice@example.test", r, 3, T0);
    int64_t ids[3];
    for (size_t i = 0; i < 3; i++)
        ids[i] = entry_id(f, mid, r[i]);
    size_t deleted = 99;
    assert_int_equal(store_queue_delivered(f->s, ids, 2, &deleted), STORE_OK);
    assert_int_equal(deleted, 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 1);
    /* Again (a repeated job): nothing more goes. */
    assert_int_equal(store_queue_delivered(f->s, ids, 2, &deleted), STORE_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(store_queue_delivered(f->s, ids + 2, 1, &deleted), STORE_OK);
    assert_int_equal(deleted, 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 0);
}

/* ---- permanent failure and bounces ---- */

static struct dsn_recipient rcpt_550(const char *addr)
{
    return (struct dsn_recipient){
        .address = addr,
        .remote_mta = "mx.a.test",
        .reply_code = 550,
        .reply = "550 5.1.1 <user unknown>",
        .last_attempt_ms = T0 + 500,
    };
}

/* Runs store_queue_fail the way a writer job does: in a transaction, in a savepoint. */
static int fail_in_job(struct fixture *f, struct store_queue_failure *fl)
{
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_savepoint(f->s), STORE_OK);
    int rc = store_queue_fail(f->s, fl);
    if (rc == STORE_OK)
        assert_int_equal(store_savepoint_release(f->s), STORE_OK);
    else
        assert_int_equal(store_savepoint_rollback(f->s), STORE_OK);
    assert_int_equal(store_commit(f->s), STORE_OK);
    return rc;
}

static void test_fail_bounces_to_local_sender(void **state)
{
    struct fixture *f = *state;
    const char *r[] = {"a@a.test", "b@a.test", "c@b.test"};
    int64_t mid = deliver_ok(f, "alice@example.test", r, 3, T0);
    int64_t ids[2] = {entry_id(f, mid, "a@a.test"), entry_id(f, mid, "b@a.test")};
    struct dsn_recipient why[2] = {rcpt_550("a@a.test"), rcpt_550("b@a.test")};
    struct store_queue_failure fl = {
        .hostname = "mail.example.test",
        .node = "n1",
        .now_ms = T0 + 1000,
        .ids = ids,
        .rcpts = why,
        .n = 2,
    };
    assert_int_equal(fail_in_job(f, &fl), STORE_OK);
    assert_int_equal(fl.route_out, STORE_BOUNCE_LOCAL);
    assert_int_equal(fl.removed_out, 2);
    assert_true(fl.bounce_message_id_out > mid);
    long long bid = (long long)fl.bounce_message_id_out;

    /* The failed entries went; the third stays, and so does the original's body. */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 1);
    assert_int_equal(
        query_int(f->path, "SELECT count(*) FROM messages WHERE id = %lld", (long long)mid), 1);
    /* One bounce, in alice's mailbox, from the null sender, not queued anywhere. */
    assert_int_equal(query_int(f->path,
                               "SELECT count(*) FROM mailbox WHERE user_id = %lld"
                               " AND message_id = %lld",
                               (long long)f->alice, bid),
                     1);
    assert_int_equal(query_int(f->path, "SELECT sender = '' FROM messages WHERE id = %lld", bid),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue WHERE message_id = %lld", bid),
                     0);
    size_t len = 0;
    char *b = query_text(f->path, &len, "SELECT body FROM messages WHERE id = %lld", bid);
    assert_int_equal(query_int(f->path, "SELECT size FROM messages WHERE id = %lld", bid),
                     (long long)len);
    assert_memory_equal(b, "Return-Path: <>\r\n", 17);
    assert_non_null(strstr(b, "\r\nTo: <alice@example.test>\r\n"));
    assert_non_null(strstr(b, "report-type=delivery-status"));
    assert_non_null(strstr(b, "\r\nFinal-Recipient: rfc822; a@a.test\r\n"));
    assert_non_null(strstr(b, "\r\nFinal-Recipient: rfc822; b@a.test\r\n"));
    assert_null(strstr(b, "c@b.test"));
    assert_non_null(strstr(b, "\r\nStatus: 5.1.1\r\n"));
    assert_non_null(strstr(b, "\r\nArrival-Date: Tue, 04 Jun 2024 12:00:00 +0000\r\n"));
    assert_non_null(strstr(b, "\r\nSubject: the original\r\n")); /* the original's headers */
    assert_null(strstr(b, "ORIGINAL-BODY-TEXT"));                /* but not its body */
    free(b);

    /* The last entry fails too: the original's body goes with it. */
    int64_t last = entry_id(f, mid, "c@b.test");
    struct dsn_recipient why3 = rcpt_550("c@b.test");
    fl.ids = &last;
    fl.rcpts = &why3;
    fl.n = 1;
    assert_int_equal(fail_in_job(f, &fl), STORE_OK);
    assert_int_equal(fl.route_out, STORE_BOUNCE_LOCAL);
    assert_int_equal(
        query_int(f->path, "SELECT count(*) FROM messages WHERE id = %lld", (long long)mid), 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 2);
    /* Already gone: nothing to do, nothing bounced. */
    assert_int_equal(fail_in_job(f, &fl), STORE_NOT_FOUND);
    assert_int_equal(fl.route_out, STORE_BOUNCE_NONE);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 2);
}

static void test_fail_routes(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *sender;
        enum store_bounce_route route;
        int new_queue_rows; /* the bounce's */
        int new_mailbox_entries;
    } cases[] = {
        {"bob@remote.test", STORE_BOUNCE_QUEUED, 1, 0},
        {"", STORE_BOUNCE_NULL_SENDER, 0, 0},
        {"nobody@example.test", STORE_BOUNCE_NO_MAILBOX, 0, 0},
        {"alice@example.test", STORE_BOUNCE_LOCAL, 0, 1},
        {"Alice@Example.TEST", STORE_BOUNCE_LOCAL, 0, 1}, /* users are keyed in lower case */
        {"\"alice\"@example.test", STORE_BOUNCE_NO_MAILBOX, 0, 0}, /* quoted: never a user */
        {"nodomain", STORE_BOUNCE_BAD_SENDER, 0, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const char *r[] = {"x@a.test"};
        int64_t mid = deliver_ok(f, cases[i].sender, r, 1, T0);
        int64_t id = entry_id(f, mid, "x@a.test");
        long long messages = query_int(f->path, "SELECT count(*) FROM messages");
        long long mailbox = query_int(f->path, "SELECT count(*) FROM mailbox");
        struct dsn_recipient why = rcpt_550("x@a.test");
        struct store_queue_failure fl = {.hostname = "mail.example.test",
                                         .node = "n1",
                                         .now_ms = T0 + 1,
                                         .ids = &id,
                                         .rcpts = &why,
                                         .n = 1};
        assert_int_equal(fail_in_job(f, &fl), STORE_OK);
        assert_int_equal(fl.route_out, cases[i].route);
        assert_int_equal(fl.removed_out, 1);
        bool stored = cases[i].new_queue_rows + cases[i].new_mailbox_entries > 0;
        assert_int_equal(fl.bounce_message_id_out != 0, stored);
        /* The original went (its only entry); a bounce came or did not. */
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"),
                         messages - 1 + (stored ? 1 : 0));
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"),
                         mailbox + cases[i].new_mailbox_entries);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), cases[i].new_queue_rows);
        if (cases[i].new_queue_rows > 0) {
            long long bid = (long long)fl.bounce_message_id_out;
            assert_int_equal(query_int(f->path,
                                       "SELECT count(*) FROM queue WHERE message_id = %lld"
                                       " AND sender = '' AND recipient = 'bob@remote.test'"
                                       " AND domain = 'remote.test'",
                                       bid),
                             1);
            size_t len = 0;
            char *b = query_text(f->path, &len, "SELECT body FROM messages WHERE id = %lld", bid);
            assert_null(strstr(b, "Return-Path:")); /* the final MTA adds it */
            assert_non_null(strstr(b, "\r\nTo: <bob@remote.test>\r\n"));
            free(b);

            /* The bounce fails in turn: it has the null sender, so it is dropped, not bounced. */
            int64_t bounce_entry = entry_id(f, fl.bounce_message_id_out, "bob@remote.test");
            struct dsn_recipient why2 = rcpt_550("bob@remote.test");
            struct store_queue_failure fl2 = {.hostname = "mail.example.test",
                                              .node = "n1",
                                              .now_ms = T0 + 2,
                                              .ids = &bounce_entry,
                                              .rcpts = &why2,
                                              .n = 1};
            assert_int_equal(fail_in_job(f, &fl2), STORE_OK);
            assert_int_equal(fl2.route_out, STORE_BOUNCE_NULL_SENDER);
            assert_int_equal(fl2.bounce_message_id_out, 0);
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 0);
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), messages - 1);
        }
    }
}

static void test_fail_is_atomic(void **state)
{
    struct fixture *f = *state;
    const char *r1[] = {"a@a.test"};
    const char *r2[] = {"b@a.test"};
    int64_t m1 = deliver_ok(f, "alice@example.test", r1, 1, T0);
    int64_t m2 = deliver_ok(f, "alice@example.test", r2, 1, T0);
    int64_t ids[2] = {entry_id(f, m1, "a@a.test"), entry_id(f, m2, "b@a.test")};
    struct dsn_recipient why[2] = {rcpt_550("a@a.test"), rcpt_550("b@a.test")};
    struct store_queue_failure fl = {.hostname = "mail.example.test",
                                     .node = "n1",
                                     .now_ms = T0 + 1,
                                     .ids = ids,
                                     .rcpts = why,
                                     .n = 2};

    /* Entries of two messages are refused, and nothing changes. */
    assert_int_equal(store_queue_fail(f->s, &fl), STORE_ERR);
    assert_non_null(strstr(store_errmsg(f->s), "more than one message"));
    assert_int_equal(fl.route_out, STORE_BOUNCE_NONE);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 0);

    /* The bounce and the deletion are one unit: the job's rollback undoes both. */
    fl.n = 1;
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_savepoint(f->s), STORE_OK);
    assert_int_equal(store_queue_fail(f->s, &fl), STORE_OK);
    assert_int_equal(fl.route_out, STORE_BOUNCE_LOCAL);
    assert_int_equal(store_savepoint_rollback(f->s), STORE_OK);
    assert_int_equal(store_commit(f->s), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 0);

    /* Bad arguments. */
    struct store_queue_failure empty = {
        .hostname = "h", .node = "n1", .ids = ids, .rcpts = why, .n = 0};
    assert_int_equal(store_queue_fail(f->s, &empty), STORE_ERR);
    struct store_queue_failure nohost = {.ids = ids, .rcpts = why, .n = 1};
    assert_int_equal(store_queue_fail(f->s, &nohost), STORE_ERR);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 2);
}

/* ---- several nodes ---- */

/* One claim of node by limit 1 at now_ms: the id of the entry it got. */
static int64_t claim_one_for(struct fixture *f, const char *node, int64_t now_ms)
{
    struct store_queue_claims c = {0};
    if (store_queue_claim_due(f->s, node, now_ms, STORE_QUEUE_LEASE_MS, 1, NULL, 0, &c) != STORE_OK)
        fail_msg("claim for %s: %s", node, store_errmsg(f->s));
    assert_int_equal(c.n, 1);
    int64_t id = c.v[0].id;
    store_queue_claims_free(&c);
    return id;
}

/* Claims for node at now_ms; asserts the entries it got are want (n_want of them, in claim
 * order) and leaves them in *c. */
static void claim_expect(struct fixture *f, const char *node, int64_t now_ms, const int64_t *want,
                         size_t n_want, struct store_queue_claims *c)
{
    if (store_queue_claim_due(f->s, node, now_ms, STORE_QUEUE_LEASE_MS, 10, NULL, 0, c) != STORE_OK)
        fail_msg("claim for %s: %s", node, store_errmsg(f->s));
    assert_int_equal(c->n, n_want);
    for (size_t i = 0; i < n_want; i++)
        assert_int_equal(c->v[i].id, want[i]);
}

/* A claim is taken over when its node is not alive: at once when its nodes row has expired or
 * is missing, by the claim's own lease otherwise (a live node; a claim without a node). The
 * claim that takes over counts the interrupted attempt, and its own lease is the usual one. */
static void test_claim_of_dead_node_taken_over(void **state)
{
    struct fixture *f = *state;
    node_alive_until(f->s, "a", T0 + 1000); /* it dies: no renewal after T0 */
    node_alive_until(f->s, "live", FOREVER_MS);
    node_alive_until(f->s, "b", FOREVER_MS);
    const char *r1[] = {"x@d1.test"}, *r2[] = {"x@d2.test"}, *r3[] = {"x@d3.test"},
               *r4[] = {"x@d4.test"};
    deliver_ok(f, "alice@example.test", r1, 1, T0);
    deliver_ok(f, "alice@example.test", r2, 1, T0 + 1);
    deliver_ok(f, "alice@example.test", r3, 1, T0 + 2);
    deliver_ok(f, "alice@example.test", r4, 1, T0 + 3);
    int64_t of_a = claim_one_for(f, "a", T0 + 10);
    int64_t of_live = claim_one_for(f, "live", T0 + 10);
    int64_t of_none = claim_one_for(f, "n1", T0 + 10);
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE queue SET claimed_by = NULL WHERE id = %lld",
             (long long)of_none); /* as claimed before schema 12 */
    assert_int_equal(store_exec_for_tests(f->s, sql), STORE_OK);
    /* Last: a node with no row, whose claim the next claim would take. */
    int64_t of_gone = claim_one_for(f, "gone", T0 + 10);

    /* a still alive: only the claim of the node without a row is free, at once. */
    struct store_queue_claims c = {0};
    claim_expect(f, "b", T0 + 999, &of_gone, 1, &c);
    assert_true(c.v[0].taken_over);
    assert_string_equal(c.v[0].taken_from, "gone");
    assert_int_equal(c.v[0].attempts, 1);

    /* a's lease ends (expires_ms <= now): its claim goes to b, an hour before the claim's. */
    claim_expect(f, "b", T0 + 1000, &of_a, 1, &c);
    assert_true(c.v[0].taken_over);
    assert_string_equal(c.v[0].taken_from, "a");
    assert_int_equal(c.v[0].attempts, 1);
    long long id = (long long)of_a;
    assert_int_equal(query_int(f->path, "SELECT attempts FROM queue WHERE id = %lld", id), 1);
    assert_int_equal(query_int(f->path, "SELECT claimed_ms FROM queue WHERE id = %lld", id),
                     T0 + 1000);
    assert_int_equal(query_int(f->path, "SELECT claimed_by = 'b' FROM queue WHERE id = %lld", id),
                     1);
    assert_int_equal(query_int(f->path,
                               "SELECT last_error = 'attempt interrupted: node a did not finish"
                               " it; node b took its claim over' FROM queue WHERE id = %lld",
                               id),
                     1);

    /* Up to an hour after them, neither the live node's claim, nor the one without a node,
     * nor b's new ones are taken. */
    claim_expect(f, "n2", T0 + 10 + STORE_QUEUE_LEASE_MS - 1, NULL, 0, &c);
    /* Then the claim's own lease frees the first two (the bound for a live node too). */
    int64_t both[] = {of_live, of_none};
    claim_expect(f, "n2", T0 + 10 + STORE_QUEUE_LEASE_MS, both, 2, &c);
    assert_true(c.v[0].taken_over && c.v[1].taken_over);
    assert_string_equal(c.v[0].taken_from, "live");
    assert_string_equal(c.v[1].taken_from, ""); /* no node to name */
    /* b's claims hold their full lease, as any claim. */
    claim_expect(f, "n2", T0 + 999 + STORE_QUEUE_LEASE_MS - 1, NULL, 0, &c);
    claim_expect(f, "n2", T0 + 999 + STORE_QUEUE_LEASE_MS, &of_gone, 1, &c);
    assert_int_equal(c.v[0].attempts, 2); /* gone's attempt, then b's */
    store_queue_claims_free(&c);
    /* b's claim of a's entry ends by its own lease too; n2's stay n2's. */
    claim_expect(f, "n1", T0 + 1000 + STORE_QUEUE_LEASE_MS, &of_a, 1, &c);
    store_queue_claims_free(&c);
}

/* A node that stalled past its lease comes back with the result of an attempt whose entries
 * another node took over meanwhile: its release, defer and fail leave that node's claim alone;
 * its delivered (a 250) deletes the entry all the same (queue.h, "Several nodes"). */
static void test_late_result_leaves_the_new_claim_alone(void **state)
{
    struct fixture *f = *state;
    node_alive_until(f->s, "a", T0 + 1000);
    node_alive_until(f->s, "b", FOREVER_MS);
    const char *r[] = {"rel@a.test", "def@a.test", "fail@a.test", "sent@a.test"};
    int64_t mid = deliver_ok(f, "alice@example.test", r, 4, T0);
    int64_t ids[4];
    for (size_t i = 0; i < 4; i++)
        ids[i] = entry_id(f, mid, r[i]);
    struct store_queue_claims c = {0};
    claim_expect(f, "a", T0 + 10, ids, 4, &c);
    claim_expect(f, "b", T0 + 1000, ids, 4, &c); /* a's lease ran out */
    store_queue_claims_free(&c);

    /* a's late results. */
    assert_int_equal(store_queue_release(f->s, "a", ids, 1), STORE_OK);
    bool expired = true;
    assert_int_equal(
        store_queue_defer(f->s, "a", ids[1], T0 + 1100, MAX_AGE_MS, "451 late", &expired),
        STORE_NOT_FOUND);
    assert_false(expired);
    struct dsn_recipient why = rcpt_550("fail@a.test");
    struct store_queue_failure fl = {.hostname = "mail.example.test",
                                     .node = "a",
                                     .now_ms = T0 + 1100,
                                     .ids = &ids[2],
                                     .rcpts = &why,
                                     .n = 1};
    assert_int_equal(fail_in_job(f, &fl), STORE_NOT_FOUND);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 0); /* no bounce */
    size_t deleted = 0;
    assert_int_equal(store_queue_delivered(f->s, &ids[3], 1, &deleted), STORE_OK);
    assert_int_equal(deleted, 1);
    /* The first three are b's as b claimed them, the taken-over attempt counted once. */
    assert_int_equal(query_int(f->path,
                               "SELECT count(*) FROM queue WHERE claimed_by = 'b'"
                               " AND claimed_ms = %lld AND attempts = 1"
                               " AND last_error LIKE 'attempt interrupted: node a %%'",
                               T0 + 1000),
                     3);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 3);

    /* b's own results do what they always do; the delivered entry is gone for b too. */
    assert_int_equal(store_queue_release(f->s, "b", ids, 1), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT claimed_ms IS NULL FROM queue WHERE id = %lld",
                               (long long)ids[0]),
                     1);
    assert_int_equal(
        store_queue_defer(f->s, "b", ids[1], T0 + 1100, MAX_AGE_MS, "451 later", &expired),
        STORE_OK);
    assert_int_equal(
        query_int(f->path, "SELECT attempts FROM queue WHERE id = %lld", (long long)ids[1]), 2);
    fl.node = "b";
    assert_int_equal(fail_in_job(f, &fl), STORE_OK);
    assert_int_equal(fl.removed_out, 1);
    assert_int_equal(store_queue_defer(f->s, "b", ids[3], T0 + 1100, MAX_AGE_MS, "451", &expired),
                     STORE_NOT_FOUND);
    /* And a, once the entry is b's and settled, still cannot touch it. */
    assert_int_equal(
        store_queue_defer(f->s, "a", ids[1], T0 + 1200, MAX_AGE_MS, "451 late", &expired),
        STORE_NOT_FOUND);
    assert_int_equal(
        query_int(f->path, "SELECT attempts FROM queue WHERE id = %lld", (long long)ids[1]), 2);
}

/* ---- flush, next due, the body reader ---- */

static void test_flush_and_next_due(void **state)
{
    struct fixture *f = *state;
    int64_t due = 0;
    assert_int_equal(store_queue_next_due(f->s, &due), STORE_OK);
    assert_int_equal(due, INT64_MAX);

    const char *r[] = {"a@a.test", "b@b.test", "c@c.test"};
    int64_t mid = deliver_ok(f, "alice@example.test", r, 3, T0);
    int64_t ids[3];
    for (size_t i = 0; i < 3; i++)
        ids[i] = entry_id(f, mid, r[i]);
    /* One in flight, two deferred to different times. */
    struct store_queue_claims c = {0};
    claim_ok(f, T0, 3, &c);
    assert_int_equal(c.n, 3);
    store_queue_claims_free(&c);
    bool expired = true;
    assert_int_equal(store_queue_defer(f->s, "n1", ids[1], T0, MAX_AGE_MS, "451", &expired),
                     STORE_OK);
    assert_int_equal(store_queue_defer(f->s, "n1", ids[2], T0 + 1, MAX_AGE_MS, "451", &expired),
                     STORE_OK);
    assert_int_equal(store_queue_defer(f->s, "n1", ids[2], T0 + 2, MAX_AGE_MS, "451", &expired),
                     STORE_OK);
    assert_int_equal(store_queue_next_due(f->s, &due), STORE_OK);
    assert_int_equal(due, T0 + store_queue_backoff_ms(1));
    claim_ok(f, T0 + 10, 10, &c);
    assert_int_equal(c.n, 0);

    size_t n_due = 99;
    assert_int_equal(store_queue_flush(f->s, T0 + 10, &n_due), STORE_OK);
    assert_int_equal(n_due, 2);
    assert_int_equal(store_queue_next_due(f->s, &due), STORE_OK);
    assert_int_equal(due, T0 + 10);
    /* The entry in flight kept its claim and its time. */
    assert_int_equal(
        query_int(f->path, "SELECT claimed_ms FROM queue WHERE id = %lld", (long long)ids[0]), T0);
    claim_ok(f, T0 + 10, 10, &c);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.v[0].id, ids[1]);
    assert_int_equal(c.v[1].id, ids[2]);
    assert_int_equal(c.v[1].attempts, 2);
    store_queue_claims_free(&c);
    /* Nothing unclaimed: nothing due. */
    assert_int_equal(store_queue_flush(f->s, T0 + 20, &n_due), STORE_OK);
    assert_int_equal(n_due, 0);
    assert_int_equal(store_queue_next_due(f->s, &due), STORE_OK);
    assert_int_equal(due, INT64_MAX);
}

static void test_body_reader(void **state)
{
    struct fixture *f = *state;
    const char *r[] = {"a@a.test", "b@a.test"};
    int64_t mid = deliver_ok(f, "alice@example.test", r, 2, T0);
    static const size_t chunks[] = {1, 7, 64, 4096};
    static const int64_t holds[] = {0, 5000};
    for (size_t ci = 0; ci < ARRAY_LEN(chunks); ci++) {
        for (size_t hi = 0; hi < ARRAY_LEN(holds); hi++) {
            struct store_body_reader *rd = NULL;
            int64_t size = 0;
            assert_int_equal(store_queue_body_open(f->s, mid, holds[hi], &rd, &size), STORE_OK);
            assert_int_equal(size, sizeof(body_text) - 1);
            char got[sizeof(body_text)];
            size_t total = 0;
            for (int i = 0; i < 1000; i++) {
                size_t n = 0;
                assert_int_equal(
                    store_body_read(
                        rd, got + total,
                        chunks[ci] < sizeof(got) - total ? chunks[ci] : sizeof(got) - total, &n),
                    STORE_OK);
                if (n == 0)
                    break;
                total += n;
            }
            assert_int_equal(total, sizeof(body_text) - 1);
            assert_memory_equal(got, body_text, total);
            store_body_close(&rd);
            assert_null(rd);
        }
    }
    /* Every entry dropped while a reader is open: the next reopen fails cleanly. */
    struct store_body_reader *rd = NULL;
    assert_int_equal(store_queue_body_open(f->s, mid, 0, &rd, NULL), STORE_OK);
    char buf[8];
    size_t n = 0;
    assert_int_equal(store_body_read(rd, buf, sizeof(buf), &n), STORE_OK);
    assert_int_equal(n, sizeof(buf));
    int64_t ids[2] = {entry_id(f, mid, "a@a.test"), entry_id(f, mid, "b@a.test")};
    assert_int_equal(store_queue_delivered(f->s, ids, 1, NULL), STORE_OK);
    assert_int_equal(store_body_read(rd, buf, sizeof(buf), &n), STORE_OK); /* one left */
    assert_int_equal(store_queue_delivered(f->s, ids + 1, 1, NULL), STORE_OK);
    assert_int_equal(store_body_read(rd, buf, sizeof(buf), &n), STORE_NOT_FOUND);
    assert_int_equal(n, 0);
    assert_int_equal(store_body_read(rd, buf, sizeof(buf), &n), STORE_ERR);
    store_body_close(&rd);
    assert_int_equal(store_queue_body_open(f->s, mid, 0, &rd, NULL), STORE_NOT_FOUND);
    assert_null(rd);
    /* A message that is only in a mailbox is not the queue's to read. */
    int64_t local_only = 0;
    {
        struct store_delivery d = {.sender = "x@y.test",
                                   .body = (const unsigned char *)"A: b\r\n\r\nc\r\n",
                                   .body_len = 11,
                                   .local_user_ids = &f->alice,
                                   .n_local = 1,
                                   .received_ms = T0};
        assert_int_equal(store_deliver(f->s, &d), STORE_OK);
        local_only = d.message_id_out;
    }
    assert_int_equal(store_queue_body_open(f->s, local_only, 0, &rd, NULL), STORE_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_and_expiry),
        cmocka_unit_test_setup_teardown(test_claim_groups_and_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_limit_hands_out_each_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_oldest_first_and_skip_domains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_rolled_back_is_repeatable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_then_release_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer_follows_schedule_then_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivered_removes_entries_and_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_bounces_to_local_sender, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_is_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_and_next_due, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_stale_by_node, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_of_dead_node_taken_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_result_leaves_the_new_claim_alone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_body_reader, setup, teardown),
    };
    return STORE_TEST_RUN(tests);
}
