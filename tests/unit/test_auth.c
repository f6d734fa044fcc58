/*
 * test_auth.c - server/auth/auth.c: the verifier against a real libuv loop and a temporary
 * database: right, wrong and unknown users, name normalisation, results only ever through done on
 * the loop, the cache (hits skip the threadpool, a password change or the TTL invalidates),
 * cancellation in every place a request can be, throttle delays, the per-client refusal and its
 * expiry, IPv6 /64 grouping, database failures, 200 concurrent requests, closing with work in
 * flight, the log line, and two loops sharing the cache and the throttle (failures from one client
 * on two loops, even at the same time from two threads, add up). The user lookup goes through a
 * reader (storage/reader.h): inline for every test, and again on reader threads for those whose
 * counts do not depend on the lookup finishing inside auth_verify, plus cancelling and freeing
 * while a lookup is out.
 *
 * Every loop run is bounded by an unreferenced watchdog timer. Hashes use the cheap test limits
 * (POSTERN_TEST_FAST_HASH=1, set here as well as by ctest).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "common/pure/cidr.h"
#include "common/password.h"
#include "server/auth/auth.h"
#include "storage/reader.h"
#include "storage/store.h"

#define WATCHDOG_MS 60000

/* ======================================================================== verification */

struct fixture {
    char dir[64];
    char path[128];
    uv_loop_t loop;
    uv_timer_t watchdog;
    bool timed_out;
    struct store *reads;
    struct reader *reader; /* inline on reads, or on reader_threads threads */
    struct auth *a;
    bool in_verify; /* set around auth_verify(): done must never run then */
    int sync_calls; /* done calls that happened inside auth_verify() */
    int64_t alice_id;
};

struct outcome {
    struct fixture *fx;
    int calls;
    struct auth_result res;
    /* optional: done starts another request */
    struct outcome *then;
    const char *then_pw;
    bool then_free; /* done calls auth_free() */
};

/* Reader threads for the next fixture: 0 (inline) unless a test is registered with
 * setup_threaded. */
static unsigned reader_threads;

static void watchdog_cb(uv_timer_t *t)
{
    struct fixture *fx = t->data;
    fx->timed_out = true;
    uv_stop(&fx->loop);
}

/* Runs the loop until nothing but the (unreferenced) watchdog is left. */
static void run_loop(struct fixture *fx)
{
    assert_int_equal(uv_timer_start(&fx->watchdog, watchdog_cb, WATCHDOG_MS, 0), 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_timer_stop(&fx->watchdog), 0);
    assert_false(fx->timed_out);
}

static struct ip_addr ip_of(const char *text)
{
    struct ip_addr ip;
    assert_int_equal(ip_parse(text, &ip), 0);
    return ip;
}

static void add_user(struct fixture *fx, const char *address, const char *pw)
{
    char h[PASSWORD_HASH_BYTES];
    assert_int_equal(password_hash(pw, strlen(pw), h), 0);
    assert_int_equal(store_user_add(fx->reads, address, "example.test", h), STORE_OK);
}

static void set_password(struct fixture *fx, const char *address, const char *pw)
{
    char h[PASSWORD_HASH_BYTES];
    assert_int_equal(password_hash(pw, strlen(pw), h), 0);
    assert_int_equal(store_user_set_password(fx->reads, address, h), STORE_OK);
}

static int setup(void **state)
{
    assert_int_equal(setenv("POSTERN_TEST_FAST_HASH", "1", 1), 0);
    assert_int_equal(password_init(), 0);
    struct fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/postern-auth-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/t.db", fx->dir);
    char err[512] = "";
    if (store_open(fx->path, &fx->reads, err, sizeof(err)) != STORE_OK)
        fail_msg("store_open: %s", err);
    assert_int_equal(store_domain_add(fx->reads, "example.test"), STORE_OK);
    add_user(fx, "alice@example.test", "s3cret");
    add_user(fx, "bob@example.test", "hunter2");
    char h[PASSWORD_HASH_BYTES];
    assert_int_equal(store_user_get(fx->reads, "alice@example.test", &fx->alice_id, h, sizeof(h)),
                     STORE_OK);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(uv_timer_init(&fx->loop, &fx->watchdog), 0);
    fx->watchdog.data = fx;
    uv_unref((uv_handle_t *)&fx->watchdog);
    if (reader_start(&fx->loop, fx->path, reader_threads, fx->reads, &fx->reader, err,
                     sizeof(err)) != 0)
        fail_msg("reader_start: %s", err);
    assert_int_equal(auth_new(&fx->loop, &fx->a), 0);
    assert_non_null(fx->a);
    *state = fx;
    return 0;
}

static int setup_threaded(void **state)
{
    reader_threads = 2;
    int rc = setup(state);
    reader_threads = 0;
    return rc;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    auth_free(&fx->a);
    reader_stop(&fx->reader); /* delivers lookups still out: auth frees what they carry */
    uv_close((uv_handle_t *)&fx->watchdog, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    store_close(&fx->reads);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(fx->sync_calls, 0);
    free(fx);
    return 0;
}

static struct auth_request *start(struct fixture *fx, const char *ip, const char *user,
                                  const char *pw, struct outcome *o);

static void done_cb(void *ctx, const struct auth_result *r)
{
    struct outcome *o = ctx;
    if (o->fx->in_verify)
        o->fx->sync_calls++;
    o->calls++;
    o->res = *r;
    if (o->then != NULL)
        assert_non_null(start(o->fx, "192.0.2.99", "alice@example.test", o->then_pw, o->then));
    if (o->then_free)
        auth_free(&o->fx->a);
}

static struct auth_request *start(struct fixture *fx, const char *ip, const char *user,
                                  const char *pw, struct outcome *o)
{
    struct ip_addr addr = ip_of(ip);
    o->fx = fx;
    fx->in_verify = true;
    struct auth_request *r =
        auth_verify(fx->a, fx->reader, &addr, user, pw, strlen(pw), done_cb, o);
    fx->in_verify = false;
    assert_int_equal(o->calls, 0);
    return r;
}

/* Starts one request, runs the loop, checks done ran exactly once; returns the result. */
static struct auth_result verify_once(struct fixture *fx, const char *ip, const char *user,
                                      const char *pw)
{
    struct outcome o = {0};
    assert_non_null(start(fx, ip, user, pw, &o));
    run_loop(fx);
    assert_int_equal(o.calls, 1);
    return o.res;
}

static struct auth_stats stats_of(struct fixture *fx)
{
    struct auth_stats s;
    auth_stats(fx->a, &s);
    return s;
}

static void test_verify_results(void **state)
{
    struct fixture *fx = *state;
    struct {
        const char *ip, *user, *pw;
        bool ok;
        const char *want_user;
    } cases[] = {
        {"192.0.2.1", "alice@example.test", "s3cret", true, "alice@example.test"},
        {"192.0.2.2", "Alice@Example.TEST", "s3cret", true, "alice@example.test"},
        {"192.0.2.3", "alice@example.test.", "s3cret", true, "alice@example.test"},
        {"192.0.2.4", "alice@example.test", "s3creT", false, "alice@example.test"},
        {"192.0.2.5", "alice@example.test", "", false, "alice@example.test"},
        {"192.0.2.6", "bob@example.test", "s3cret", false, "bob@example.test"},
        {"192.0.2.7", "carol@example.test", "s3cret", false, "carol@example.test"},
        {"192.0.2.8", "not an address", "s3cret", false, ""},
        {"192.0.2.9", "alice", "s3cret", false, ""},
        {"2001:db8::1", "bob@example.test", "hunter2", true, "bob@example.test"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t hashes = stats_of(fx).hashes;
        /* Fresh state: no cache entries (a known password must take argon2id) and no failure
         * counts (each failure is a first one). */
        auth_advance_clock_for_tests(fx->a, AUTH_THROTTLE_WINDOW_MS);
        struct auth_result r = verify_once(fx, cases[i].ip, cases[i].user, cases[i].pw);
        if (r.ok != cases[i].ok)
            fail_msg("case %zu (%s): ok=%d", i, cases[i].user, r.ok);
        assert_string_equal(r.user, cases[i].want_user);
        assert_false(r.temporary);
        assert_false(r.cached);
        assert_false(r.too_many);
        /* Unknown users and invalid names cost an argon2id check like everybody else. */
        assert_int_equal(stats_of(fx).hashes, hashes + 1);
        if (r.ok) {
            assert_int_equal(r.delay_ms, 0);
            assert_true(r.user_id > 0);
        } else {
            assert_int_equal(r.user_id, 0);
            assert_int_equal(r.delay_ms, AUTH_DELAY_FIRST_MS);
        }
    }
    assert_int_equal(verify_once(fx, "192.0.2.1", "alice@example.test", "s3cret").user_id,
                     fx->alice_id);
    struct auth_stats s = stats_of(fx);
    assert_int_equal(s.succeeded, 5);
    assert_int_equal(s.failed, 6);
    assert_int_equal(s.requests, 11);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.waiting, 0);
}

static void test_password_too_long_and_bad_args(void **state)
{
    struct fixture *fx = *state;
    static char big[PASSWORD_MAX_BYTES + 2];
    memset(big, 'x', PASSWORD_MAX_BYTES + 1);
    struct auth_result r = verify_once(fx, "192.0.2.1", "alice@example.test", big);
    assert_false(r.ok);
    assert_int_equal(r.delay_ms, AUTH_DELAY_FIRST_MS);
    assert_int_equal(stats_of(fx).hashes, 0); /* refused without argon2id, still async */
    assert_int_equal(stats_of(fx).failed, 1);

    struct ip_addr ip = ip_of("192.0.2.1");
    struct outcome o = {.fx = fx};
    assert_null(auth_verify(NULL, fx->reader, &ip, "a@example.test", "x", 1, done_cb, &o));
    assert_null(auth_verify(fx->a, NULL, &ip, "a@example.test", "x", 1, done_cb, &o));
    assert_null(auth_verify(fx->a, fx->reader, NULL, "a@example.test", "x", 1, done_cb, &o));
    assert_null(auth_verify(fx->a, fx->reader, &ip, NULL, "x", 1, done_cb, &o));
    assert_null(auth_verify(fx->a, fx->reader, &ip, "a@example.test", NULL, 1, done_cb, &o));
    assert_null(auth_verify(fx->a, fx->reader, &ip, "a@example.test", "x", 1, NULL, &o));
    run_loop(fx);
    assert_int_equal(o.calls, 0);
    auth_cancel(NULL);
    auth_free(NULL);
}

static void test_cache(void **state)
{
    struct fixture *fx = *state;
    struct auth_result r = verify_once(fx, "192.0.2.1", "alice@example.test", "s3cret");
    assert_true(r.ok);
    assert_false(r.cached);
    assert_int_equal(stats_of(fx).hashes, 1);

    /* Same user and password: no threadpool, still delivered on the loop. */
    r = verify_once(fx, "192.0.2.2", "Alice@Example.Test", "s3cret");
    assert_true(r.ok);
    assert_true(r.cached);
    assert_int_equal(r.user_id, fx->alice_id);
    assert_string_equal(r.user, "alice@example.test");
    assert_int_equal(stats_of(fx).hashes, 1);
    assert_int_equal(stats_of(fx).cache_hits, 1);

    /* A different password, or another user with the same password, is not a hit. */
    r = verify_once(fx, "192.0.2.3", "alice@example.test", "s3cret2");
    assert_false(r.ok);
    assert_int_equal(stats_of(fx).hashes, 2);
    r = verify_once(fx, "192.0.2.3", "bob@example.test", "s3cret");
    assert_false(r.ok);
    assert_int_equal(stats_of(fx).hashes, 3);
    /* A prefix of the password is not a hit either. */
    r = verify_once(fx, "192.0.2.3", "alice@example.test", "s3cre");
    assert_false(r.ok);
    assert_int_equal(stats_of(fx).hashes, 4);

    /* Still cached a little before the TTL, not after it (and a hit does not renew it). */
    auth_advance_clock_for_tests(fx->a, AUTH_CACHE_TTL_MS - 1000);
    assert_true(verify_once(fx, "192.0.2.4", "alice@example.test", "s3cret").cached);
    assert_int_equal(stats_of(fx).hashes, 4);
    auth_advance_clock_for_tests(fx->a, 1000);
    r = verify_once(fx, "192.0.2.4", "alice@example.test", "s3cret");
    assert_true(r.ok);
    assert_false(r.cached);
    assert_int_equal(stats_of(fx).hashes, 5);
    assert_true(verify_once(fx, "192.0.2.4", "alice@example.test", "s3cret").cached);
}

static void test_cache_invalidated_by_password_change(void **state)
{
    struct fixture *fx = *state;
    assert_true(verify_once(fx, "192.0.2.1", "alice@example.test", "s3cret").ok);
    assert_true(verify_once(fx, "192.0.2.1", "alice@example.test", "s3cret").cached);
    assert_int_equal(stats_of(fx).hashes, 1);

    set_password(fx, "alice@example.test", "n3w");
    struct auth_result r = verify_once(fx, "192.0.2.1", "alice@example.test", "s3cret");
    assert_false(r.ok);
    assert_int_equal(stats_of(fx).hashes, 2);
    r = verify_once(fx, "192.0.2.1", "alice@example.test", "n3w");
    assert_true(r.ok);
    assert_false(r.cached);
    assert_int_equal(stats_of(fx).hashes, 3);
    assert_true(verify_once(fx, "192.0.2.1", "alice@example.test", "n3w").cached);

    /* Setting the same password again gives a new salt, so a new hash: re-verified. */
    set_password(fx, "alice@example.test", "n3w");
    r = verify_once(fx, "192.0.2.1", "alice@example.test", "n3w");
    assert_true(r.ok);
    assert_false(r.cached);
    assert_int_equal(stats_of(fx).hashes, 4);

    /* A deleted user is unknown at once. */
    assert_int_equal(store_user_del(fx->reads, "alice@example.test"), STORE_OK);
    r = verify_once(fx, "192.0.2.1", "alice@example.test", "n3w");
    assert_false(r.ok);
    assert_int_equal(stats_of(fx).hashes, 5);
}

static void test_cancel(void **state)
{
    struct fixture *fx = *state;
    uint64_t limit = stats_of(fx).in_flight_limit;
    assert_true(limit >= 1);

    /* Fill the threadpool slots, then one more waits in the FIFO. */
    struct outcome running[64] = {0}, waiting = {0};
    assert_true(limit < 64);
    struct auth_request *rr[64];
    for (uint64_t i = 0; i < limit; i++)
        rr[i] = start(fx, "192.0.2.1", "alice@example.test", "wrong", &running[i]);
    struct auth_request *w = start(fx, "192.0.2.2", "bob@example.test", "hunter2", &waiting);
    assert_int_equal(stats_of(fx).in_flight, limit);
    assert_int_equal(stats_of(fx).waiting, 1);

    /* Cancelled while waiting: dropped, never hashed. Cancelled while running: not called, but
     * the failure still counts. */
    auth_cancel(w);
    assert_int_equal(stats_of(fx).waiting, 0);
    for (uint64_t i = 0; i < limit; i++)
        auth_cancel(rr[i]);
    run_loop(fx);
    for (uint64_t i = 0; i < limit; i++)
        assert_int_equal(running[i].calls, 0);
    assert_int_equal(waiting.calls, 0);
    struct auth_stats s = stats_of(fx);
    assert_int_equal(s.hashes, limit);
    assert_int_equal(s.failed, limit);
    assert_int_equal(s.cancelled, limit + 1);
    assert_int_equal(s.in_flight, 0);
    /* The counted failures show in the next delay from that client. */
    struct auth_result r = verify_once(fx, "192.0.2.1", "carol@example.test", "x");
    uint64_t want = (uint64_t)AUTH_DELAY_FIRST_MS << limit;
    assert_int_equal(r.delay_ms, want < AUTH_DELAY_MAX_MS ? want : AUTH_DELAY_MAX_MS);

    /* Cancelled on the ready list (a cache hit): not called. */
    assert_true(verify_once(fx, "192.0.2.3", "bob@example.test", "hunter2").ok);
    struct outcome hit = {0};
    struct auth_request *h = start(fx, "192.0.2.3", "bob@example.test", "hunter2", &hit);
    assert_non_null(h);
    auth_cancel(h);
    run_loop(fx);
    assert_int_equal(hit.calls, 0);
    assert_int_equal(stats_of(fx).cache_hits, 1);
}

static void test_throttle_per_client(void **state)
{
    struct fixture *fx = *state;
    /* Different unknown names from one client: only the client's count grows. */
    const uint64_t want[AUTH_IP_MAX_FAILURES] = {250,  500,  1000, 2000, 4000,
                                                 8000, 8000, 8000, 8000, 8000};
    for (int i = 0; i < AUTH_IP_MAX_FAILURES; i++) {
        char user[64];
        snprintf(user, sizeof(user), "nobody%d@example.test", i);
        struct auth_result r = verify_once(fx, "198.51.100.7", user, "guess");
        assert_false(r.ok);
        if (r.delay_ms != want[i])
            fail_msg("failure %d: delay %llu, want %llu", i + 1, (unsigned long long)r.delay_ms,
                     (unsigned long long)want[i]);
        assert_int_equal(r.too_many, i + 1 >= AUTH_IP_MAX_FAILURES);
    }
    assert_int_equal(stats_of(fx).hashes, AUTH_IP_MAX_FAILURES);

    /* Now refused outright, even with the right password: no argon2id, no cache. */
    struct auth_result r = verify_once(fx, "198.51.100.7", "alice@example.test", "s3cret");
    assert_false(r.ok);
    assert_true(r.too_many);
    assert_false(r.temporary);
    assert_int_equal(r.delay_ms, AUTH_DELAY_MAX_MS);
    assert_int_equal(stats_of(fx).hashes, AUTH_IP_MAX_FAILURES);
    assert_int_equal(stats_of(fx).refused, 1);

    /* Another client is not affected, and is not slowed by the first one's count. */
    r = verify_once(fx, "198.51.100.8", "alice@example.test", "s3cret");
    assert_true(r.ok);
    r = verify_once(fx, "198.51.100.8", "somebody@example.test", "x");
    assert_int_equal(r.delay_ms, AUTH_DELAY_FIRST_MS);

    /* Refused attempts do not extend the block: it ends a window after the last failure. */
    auth_advance_clock_for_tests(fx->a, AUTH_THROTTLE_WINDOW_MS - 1000);
    r = verify_once(fx, "198.51.100.7", "alice@example.test", "s3cret");
    assert_false(r.ok);
    assert_true(r.too_many);
    auth_advance_clock_for_tests(fx->a, 1000);
    r = verify_once(fx, "198.51.100.7", "alice@example.test", "s3cret");
    assert_true(r.ok);
    assert_false(r.too_many);
    r = verify_once(fx, "198.51.100.7", "nobody99@example.test", "guess");
    assert_int_equal(r.delay_ms, AUTH_DELAY_FIRST_MS); /* counting starts again */
}

/* The test hook the session fuzz targets use: delays are capped, counting and blocking are not. */
static void test_delay_cap_for_tests(void **state)
{
    struct fixture *fx = *state;
    auth_cap_delay_for_tests(fx->a, 1);
    for (int i = 0; i < AUTH_IP_MAX_FAILURES; i++) {
        struct auth_result r = verify_once(fx, "198.51.100.9", "nobody@example.test", "guess");
        assert_false(r.ok);
        assert_int_equal(r.delay_ms, 1);
        assert_int_equal(r.too_many, i + 1 >= AUTH_IP_MAX_FAILURES);
    }
    struct auth_result r = verify_once(fx, "198.51.100.9", "alice@example.test", "s3cret");
    assert_true(r.too_many);
    assert_int_equal(r.delay_ms, 1);
    assert_true(verify_once(fx, "198.51.100.10", "alice@example.test", "s3cret").ok);
    auth_cap_delay_for_tests(fx->a, 0);
    r = verify_once(fx, "198.51.100.10", "nobody@example.test", "guess");
    assert_int_equal(r.delay_ms, AUTH_DELAY_MAX_MS); /* the user's count went on */
}

static void test_throttle_per_user_and_reset(void **state)
{
    struct fixture *fx = *state;
    /* One user from different clients: the user's count grows. */
    assert_int_equal(verify_once(fx, "203.0.113.1", "alice@example.test", "a").delay_ms, 250);
    assert_int_equal(verify_once(fx, "203.0.113.2", "ALICE@example.test", "b").delay_ms, 500);
    assert_int_equal(verify_once(fx, "203.0.113.3", "alice@example.test", "c").delay_ms, 1000);
    /* A user name is never blocked, only delayed. */
    for (int i = 0; i < AUTH_IP_MAX_FAILURES + 2; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "203.0.113.%d", 10 + i);
        struct auth_result r = verify_once(fx, ip, "alice@example.test", "nope");
        assert_false(r.too_many);
        assert_int_equal(r.delay_ms, i < 2 ? 2000u << i : AUTH_DELAY_MAX_MS);
    }
    assert_true(verify_once(fx, "203.0.113.4", "alice@example.test", "s3cret").ok);
    /* Success cleared the user's count. */
    assert_int_equal(verify_once(fx, "203.0.113.5", "alice@example.test", "d").delay_ms, 250);

    /* Success does not clear the client's count: fail, succeed, fail again from one client
     * with fresh names each time. */
    assert_int_equal(verify_once(fx, "203.0.113.50", "x1@example.test", "p").delay_ms, 250);
    assert_true(verify_once(fx, "203.0.113.50", "bob@example.test", "hunter2").ok);
    assert_int_equal(verify_once(fx, "203.0.113.50", "x2@example.test", "p").delay_ms, 500);

    /* Invalid names are counted by what was sent. */
    assert_int_equal(verify_once(fx, "203.0.113.60", "junk name", "p").delay_ms, 250);
    assert_int_equal(verify_once(fx, "203.0.113.61", "junk name", "p").delay_ms, 500);

    /* Counts are forgotten a window after the last failure. */
    auth_advance_clock_for_tests(fx->a, AUTH_THROTTLE_WINDOW_MS);
    assert_int_equal(verify_once(fx, "203.0.113.61", "junk name", "p").delay_ms, 250);
}

static void test_throttle_ipv6_prefix(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(verify_once(fx, "2001:db8:1:2::1", "n1@example.test", "p").delay_ms, 250);
    assert_int_equal(verify_once(fx, "2001:db8:1:2:ffff::9", "n2@example.test", "p").delay_ms, 500);
    assert_int_equal(verify_once(fx, "2001:db8:1:3::1", "n3@example.test", "p").delay_ms, 250);
    /* An IPv4-mapped client is the IPv4 client. */
    assert_int_equal(verify_once(fx, "192.0.2.77", "n4@example.test", "p").delay_ms, 250);
    assert_int_equal(verify_once(fx, "::ffff:192.0.2.77", "n5@example.test", "p").delay_ms, 500);
    assert_int_equal(verify_once(fx, "192.0.2.78", "n6@example.test", "p").delay_ms, 250);
}

static void test_store_failure_is_temporary(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(store_exec_for_tests(fx->reads, "ALTER TABLE users RENAME TO users_gone"),
                     STORE_OK);
    struct auth_result r = verify_once(fx, "192.0.2.1", "alice@example.test", "s3cret");
    assert_false(r.ok);
    assert_true(r.temporary);
    assert_false(r.too_many);
    assert_int_equal(r.delay_ms, 0);
    struct auth_stats s = stats_of(fx);
    assert_int_equal(s.temporary, 1);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.hashes, 0);
    assert_int_equal(store_exec_for_tests(fx->reads, "ALTER TABLE users_gone RENAME TO users"),
                     STORE_OK);
    /* Not counted as a failure. */
    assert_int_equal(verify_once(fx, "192.0.2.1", "zed@example.test", "x").delay_ms, 250);
}

#define CONCURRENT 200

static void test_concurrent(void **state)
{
    struct fixture *fx = *state;
    static struct outcome o[CONCURRENT];
    memset(o, 0, sizeof(o));
    bool want_ok[CONCURRENT];
    for (int i = 0; i < CONCURRENT; i++) {
        char ip[32], user[64];
        snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 100, i % 100);
        const char *pw = "s3cret";
        switch (i % 4) {
        case 0:
            snprintf(user, sizeof(user), "alice@example.test");
            want_ok[i] = true;
            break;
        case 1:
            snprintf(user, sizeof(user), "bob@example.test");
            pw = "hunter2";
            want_ok[i] = true;
            break;
        case 2:
            snprintf(user, sizeof(user), "alice@example.test");
            pw = "wrong";
            want_ok[i] = false;
            break;
        default:
            snprintf(user, sizeof(user), "ghost%d@example.test", i);
            want_ok[i] = false;
            break;
        }
        assert_non_null(start(fx, ip, user, pw, &o[i]));
    }
    struct auth_stats s = stats_of(fx);
    assert_int_equal(s.in_flight, s.in_flight_limit);
    assert_int_equal(s.waiting, CONCURRENT - s.in_flight_limit);
    run_loop(fx);
    for (int i = 0; i < CONCURRENT; i++) {
        if (o[i].calls != 1)
            fail_msg("request %d: done called %d times", i, o[i].calls);
        assert_int_equal(o[i].res.ok, want_ok[i]);
    }
    s = stats_of(fx);
    assert_int_equal(s.requests, CONCURRENT);
    assert_int_equal(s.succeeded, CONCURRENT / 2);
    assert_int_equal(s.failed, CONCURRENT / 2);
    assert_int_equal(s.hashes, CONCURRENT); /* all looked up before any finished: no hits */
    assert_int_equal(s.in_flight_max, s.in_flight_limit);
    assert_int_equal(s.waiting_max, CONCURRENT - s.in_flight_limit);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.waiting, 0);
}

static void test_done_may_start_and_free(void **state)
{
    struct fixture *fx = *state;
    /* done starts a second request (a cache hit): delivered later, on the loop. */
    struct outcome second = {0};
    struct outcome first = {.then = &second, .then_pw = "s3cret"};
    assert_non_null(start(fx, "192.0.2.1", "alice@example.test", "s3cret", &first));
    run_loop(fx);
    assert_int_equal(first.calls, 1);
    assert_int_equal(second.calls, 1);
    assert_true(second.res.cached);

    /* done frees the auth while other requests are waiting and running: no more calls. */
    struct outcome hit = {.then_free = true}, others[8] = {0};
    assert_non_null(start(fx, "192.0.2.2", "alice@example.test", "s3cret", &hit));
    for (int i = 0; i < 8; i++)
        assert_non_null(start(fx, "192.0.2.3", "bob@example.test", "hunter2", &others[i]));
    run_loop(fx);
    assert_null(fx->a);
    assert_int_equal(hit.calls, 1);
    for (int i = 0; i < 8; i++)
        assert_int_equal(others[i].calls, 0);
}

static void test_free_with_work_in_flight(void **state)
{
    struct fixture *fx = *state;
    struct outcome o[6] = {0};
    for (int i = 0; i < 6; i++)
        assert_non_null(start(fx, "192.0.2.1", "alice@example.test", "s3cret", &o[i]));
    auth_free(&fx->a);
    assert_null(fx->a);
    run_loop(fx); /* lets the threadpool items finish; ASan checks everything is freed */
    for (int i = 0; i < 6; i++)
        assert_int_equal(o[i].calls, 0);
}

/* Reader threads: cancelled while the user's row is being read, the request never answers but
 * still goes to its verdict, which counts (a guess cannot escape the throttle by leaving); freed
 * with lookups out, the auth goes once they are back. */
static void test_cancel_and_free_during_lookup(void **state)
{
    struct fixture *fx = *state;
    struct outcome kept = {0}, dropped[4] = {0};
    struct auth_request *d[4];
    for (int i = 0; i < 4; i++)
        d[i] = start(fx, "192.0.2.1", "alice@example.test", "s3cret", &dropped[i]);
    assert_non_null(start(fx, "192.0.2.2", "bob@example.test", "hunter2", &kept));
    /* Nothing was hashed yet: every request is still at its lookup. */
    assert_int_equal(stats_of(fx).in_flight + stats_of(fx).waiting, 0);
    for (int i = 0; i < 4; i++)
        auth_cancel(d[i]);
    run_loop(fx);
    for (int i = 0; i < 4; i++)
        assert_int_equal(dropped[i].calls, 0);
    assert_int_equal(kept.calls, 1);
    assert_true(kept.res.ok);
    struct auth_stats s = stats_of(fx);
    assert_int_equal(s.cancelled, 4);
    /* The cancelled ones were verified all the same (by argon2id, or by the cache once the
     * first of them was through). */
    assert_int_equal(s.hashes + s.cache_hits, 5);
    assert_int_equal(s.succeeded, 5);

    /* A wrong guess cancelled at its lookup still counts: the next failure waits longer. */
    struct outcome guess = {0};
    struct auth_request *g = start(fx, "198.51.100.4", "alice@example.test", "wrong", &guess);
    auth_cancel(g);
    run_loop(fx);
    assert_int_equal(guess.calls, 0);
    assert_int_equal(stats_of(fx).failed, 1);
    struct auth_result again = verify_once(fx, "198.51.100.4", "bob@example.test", "wrong");
    assert_int_equal(again.delay_ms, 2 * AUTH_DELAY_FIRST_MS);

    struct outcome late[3] = {0};
    for (int i = 0; i < 3; i++)
        assert_non_null(start(fx, "192.0.2.3", "bob@example.test", "hunter2", &late[i]));
    auth_free(&fx->a);
    run_loop(fx); /* the lookups come back to a closed auth: ASan sees anything leaked */
    for (int i = 0; i < 3; i++)
        assert_int_equal(late[i].calls, 0);
}

static void test_log_line(void **state)
{
    struct fixture *fx = *state;
    char logpath[160];
    snprintf(logpath, sizeof(logpath), "%s/log", fx->dir);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);

    assert_true(verify_once(fx, "192.0.2.1", "Alice@Example.TEST", "s3cret").ok);
    assert_true(verify_once(fx, "192.0.2.1", "alice@example.test", "s3cret").ok);
    assert_false(verify_once(fx, "192.0.2.1", "alice@example.test", "Wr0ngPass").ok);
    assert_false(verify_once(fx, "2001:db8::5", "x y@z", "Wr0ngPass").ok);

    fflush(stderr);
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    char buf[4096] = "";
    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "sub=auth event=auth result=ok user=alice@example.test "
                                "ip=192.0.2.1 cached=no"));
    assert_non_null(strstr(buf, "event=auth result=ok user=alice@example.test ip=192.0.2.1 "
                                "cached=yes"));
    assert_non_null(strstr(buf, "event=auth result=fail user=alice@example.test ip=192.0.2.1 "
                                "cached=no reason=password delay_ms=250"));
    assert_non_null(strstr(buf, "event=auth result=fail user=\"x y@z\" ip=2001:db8::5 "
                                "cached=no reason=invalid-name"));
    assert_null(strstr(buf, "s3cret"));
    assert_null(strstr(buf, "Wr0ngPass"));
}

/* ---- two loops ---- */

/* A second loop with its own verifier (auth_new_peer) and its own read connection, as serve.c
 * gives every worker loop. */
struct peer_loop {
    uv_loop_t loop;
    struct store *reads;
    struct reader *reader; /* attached to the fixture's: inline on reads, or its threads */
    struct auth *a;
    const char *ip;
    int failures_wanted;
    int failures_seen;
    int calls;
    struct auth_result last;
};

static void peer_open(struct fixture *fx, struct peer_loop *p)
{
    char err[512] = "";
    assert_int_equal(uv_loop_init(&p->loop), 0);
    if (store_open(fx->path, &p->reads, err, sizeof(err)) != STORE_OK)
        fail_msg("store_open: %s", err);
    if (reader_attach(fx->reader, &p->loop, p->reads, &p->reader, err, sizeof(err)) != 0)
        fail_msg("reader_attach: %s", err);
    assert_int_equal(auth_new_peer(&p->loop, fx->a, &p->a), 0);
}

static void peer_close(struct peer_loop *p)
{
    auth_free(&p->a);
    reader_detach(&p->reader);
    assert_int_equal(uv_run(&p->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&p->loop), 0);
    store_close(&p->reads);
}

static void peer_done(void *ctx, const struct auth_result *r)
{
    struct peer_loop *p = ctx;
    p->calls++;
    p->last = *r;
    if (!r->ok && !r->too_many)
        p->failures_seen++;
}

/* One request on the peer loop, run to its end (the loop has nothing else). */
static struct auth_result peer_verify(struct peer_loop *p, const char *ip, const char *user,
                                      const char *pw)
{
    struct ip_addr addr = ip_of(ip);
    int before = p->calls;
    assert_non_null(auth_verify(p->a, p->reader, &addr, user, pw, strlen(pw), peer_done, p));
    assert_int_equal(uv_run(&p->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(p->calls, before + 1);
    return p->last;
}

static void test_two_loops_share_throttle_and_cache(void **state)
{
    struct fixture *fx = *state;
    struct peer_loop p = {0};
    peer_open(fx, &p);

    /* Failures alternate between the loops: the delays grow as if one loop saw them all. */
    const uint64_t want[AUTH_IP_MAX_FAILURES] = {250,  500,  1000, 2000, 4000,
                                                 8000, 8000, 8000, 8000, 8000};
    for (int i = 0; i < AUTH_IP_MAX_FAILURES; i++) {
        char user[64];
        snprintf(user, sizeof(user), "nobody%d@example.test", i);
        struct auth_result r = i % 2 == 0 ? verify_once(fx, "198.51.100.7", user, "guess")
                                          : peer_verify(&p, "198.51.100.7", user, "guess");
        assert_false(r.ok);
        assert_int_equal(r.delay_ms, want[i]);
        assert_int_equal(r.too_many, i + 1 >= AUTH_IP_MAX_FAILURES);
    }
    /* Blocked on both loops. */
    assert_true(peer_verify(&p, "198.51.100.7", "alice@example.test", "s3cret").too_many);
    assert_true(verify_once(fx, "198.51.100.7", "alice@example.test", "s3cret").too_many);

    /* A success on one loop is a cache hit on the other. */
    assert_true(verify_once(fx, "192.0.2.1", "alice@example.test", "s3cret").ok);
    struct auth_result r = peer_verify(&p, "192.0.2.1", "alice@example.test", "s3cret");
    assert_true(r.ok);
    assert_true(r.cached);

    /* The clock moves for both: the block ends on the peer too. */
    auth_advance_clock_for_tests(fx->a, AUTH_THROTTLE_WINDOW_MS);
    assert_true(peer_verify(&p, "198.51.100.7", "alice@example.test", "s3cret").ok);
    peer_close(&p);
}

static void *peer_thread(void *arg)
{
    struct peer_loop *p = arg;
    for (int i = 0; i < p->failures_wanted; i++) {
        char user[64];
        snprintf(user, sizeof(user), "t%p-%d@example.test", (void *)p, i);
        struct ip_addr addr = ip_of(p->ip);
        if (auth_verify(p->a, p->reader, &addr, user, "guess", 5, peer_done, p) == NULL)
            return NULL;
        uv_run(&p->loop, UV_RUN_DEFAULT);
    }
    return NULL;
}

static void test_two_threads_failures_add_up(void **state)
{
    struct fixture *fx = *state;
    struct peer_loop p1 = {0}, p2 = {0};
    peer_open(fx, &p1);
    peer_open(fx, &p2);
    p1.ip = p2.ip = "203.0.113.9";
    p1.failures_wanted = p2.failures_wanted = AUTH_IP_MAX_FAILURES / 2;
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, peer_thread, &p1), 0);
    assert_int_equal(pthread_create(&t2, NULL, peer_thread, &p2), 0);
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    assert_int_equal(p1.calls + p2.calls, 2 * (AUTH_IP_MAX_FAILURES / 2));
    /* Ten failures counted across two threads: the client is now refused on the first loop. */
    struct auth_result r = verify_once(fx, "203.0.113.9", "alice@example.test", "s3cret");
    assert_false(r.ok);
    assert_true(r.too_many);
    assert_int_equal(stats_of(fx).refused, 1);
    peer_close(&p1);
    peer_close(&p2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verify_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_too_long_and_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_invalidated_by_password_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_per_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_per_user_and_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_ipv6_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delay_cap_for_tests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_failure_is_temporary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_may_start_and_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_work_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_loops_share_throttle_and_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_threads_failures_add_up, setup, teardown),
        /* Again with the lookup on reader threads; not those that rely on the order in which
         * requests are answered, which threads do not keep. */
        cmocka_unit_test_setup_teardown(test_verify_results, setup_threaded, teardown),
        cmocka_unit_test_setup_teardown(test_cache, setup_threaded, teardown),
        cmocka_unit_test_setup_teardown(test_cache_invalidated_by_password_change, setup_threaded,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_failure_is_temporary, setup_threaded, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_work_in_flight, setup_threaded, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_free_during_lookup, setup_threaded,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_two_loops_share_throttle_and_cache, setup_threaded,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
