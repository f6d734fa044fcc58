/*
 * test_nodes.c - storage/nodes.c: a node's name (taken, refused while another process's lease
 * runs, forced, renewed, given up) and the POP3 maildrop lock (take, refuse, renew, expire,
 * takeover by the same node, release by its session only, drop a node's locks at its start), and
 * the login's window written beside the lock (storage/windows.c, store_window_login).
 * Only the store's API is used, so the file runs on any backend store_open accepts: the
 * multi-node contract is the same on each.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/store.h"
#include "tests/unit/store_fixture.h"

#define T0    1700000000000LL
#define LEASE 90000

struct fixture {
    char dir[64];
    char path[128];
    struct store *s;
    int64_t alice, bob;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/postern-nodes-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    f->s = open_ok(f->path);
    assert_int_equal(store_domain_add(f->s, "example.test"), STORE_OK);
    assert_int_equal(store_user_add(f->s, "alice@example.test", "example.test", "h"), STORE_OK);
    assert_int_equal(store_user_add(f->s, "bob@example.test", "example.test", "h"), STORE_OK);
    char hash[256];
    assert_int_equal(store_user_get(f->s, "alice@example.test", &f->alice, hash, sizeof(hash)),
                     STORE_OK);
    assert_int_equal(store_user_get(f->s, "bob@example.test", &f->bob, hash, sizeof(hash)),
                     STORE_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(&f->s);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void holder_is(struct fixture *f, int64_t user, const char *node, int64_t session,
                      int64_t expires)
{
    char n[64];
    int64_t sess = 0, exp = 0;
    assert_int_equal(store_pop3_lock_holder(f->s, user, n, sizeof(n), &sess, &exp), STORE_OK);
    assert_string_equal(n, node);
    assert_int_equal(sess, session);
    assert_int_equal(exp, expires);
}

static void test_lock_take_refuse_release(void **state)
{
    struct fixture *f = *state;
    char n[64];
    int64_t sess, exp;
    assert_int_equal(store_pop3_lock_holder(f->s, f->alice, n, sizeof(n), &sess, &exp),
                     STORE_NOT_FOUND);
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "a", 11, T0, LEASE), STORE_OK);
    holder_is(f, f->alice, "a", 11, T0 + LEASE);
    /* Another node, lease running: refused, nothing changed. */
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "b", 22, T0 + 1000, LEASE), STORE_IN_USE);
    holder_is(f, f->alice, "a", 11, T0 + LEASE);
    /* Another user is independent. */
    assert_int_equal(store_pop3_lock_take(f->s, f->bob, "b", 22, T0 + 1000, LEASE), STORE_OK);
    /* Release by another session of the holder's node, or by another node: no effect. */
    assert_int_equal(store_pop3_lock_release(f->s, f->alice, "a", 12), STORE_OK);
    assert_int_equal(store_pop3_lock_release(f->s, f->alice, "b", 11), STORE_OK);
    holder_is(f, f->alice, "a", 11, T0 + LEASE);
    /* Released by its session: free for the other node at once. */
    assert_int_equal(store_pop3_lock_release(f->s, f->alice, "a", 11), STORE_OK);
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "b", 23, T0 + 2000, LEASE), STORE_OK);
    holder_is(f, f->alice, "b", 23, T0 + 2000 + LEASE);
}

static void test_lock_renew_and_expire(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "a", 11, T0, LEASE), STORE_OK);
    /* Renewed before it ran out: still refused after the first lease's end. */
    assert_int_equal(store_pop3_lock_renew(f->s, f->alice, "a", 11, T0 + 30000, LEASE), STORE_OK);
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "b", 22, T0 + LEASE + 1, LEASE),
                     STORE_IN_USE);
    /* A renewal by a session that does not hold it changes nothing. */
    assert_int_equal(store_pop3_lock_renew(f->s, f->alice, "a", 99, T0 + 60000, LEASE),
                     STORE_NOT_FOUND);
    holder_is(f, f->alice, "a", 11, T0 + 30000 + LEASE);
    /* Node a dies: once its lease ran out, b takes the maildrop over. */
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "b", 22, T0 + 30000 + LEASE - 1, LEASE),
                     STORE_IN_USE);
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "b", 22, T0 + 30000 + LEASE, LEASE),
                     STORE_OK);
    holder_is(f, f->alice, "b", 22, T0 + 30000 + 2 * LEASE);
    /* a comes back: its renewal finds the lock lost. */
    assert_int_equal(store_pop3_lock_renew(f->s, f->alice, "a", 11, T0 + 130000, LEASE),
                     STORE_NOT_FOUND);
}

static void test_lock_same_node_takeover_and_drop(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "a", 11, T0, LEASE), STORE_OK);
    assert_int_equal(store_pop3_lock_take(f->s, f->bob, "a", 12, T0, LEASE), STORE_OK);
    /* The same node asks again (its own set says no session there holds it: a leftover). */
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "a", 13, T0 + 10, LEASE), STORE_OK);
    holder_is(f, f->alice, "a", 13, T0 + 10 + LEASE);
    /* The old session's late release does not free the new holder's lock. */
    assert_int_equal(store_pop3_lock_release(f->s, f->alice, "a", 11), STORE_OK);
    holder_is(f, f->alice, "a", 13, T0 + 10 + LEASE);
    /* b's lock, and a's start dropping its leftovers: a's two go, b's stays. */
    assert_int_equal(store_pop3_lock_release(f->s, f->bob, "a", 12), STORE_OK);
    assert_int_equal(store_pop3_lock_take(f->s, f->bob, "b", 21, T0 + 20, LEASE), STORE_OK);
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "a", 14, T0 + 30, LEASE), STORE_OK);
    size_t dropped = 0;
    assert_int_equal(store_pop3_lock_drop_node(f->s, "a", &dropped), STORE_OK);
    assert_int_equal(dropped, 1);
    char n[64];
    int64_t sess, exp;
    assert_int_equal(store_pop3_lock_holder(f->s, f->alice, n, sizeof(n), &sess, &exp),
                     STORE_NOT_FOUND);
    holder_is(f, f->bob, "b", 21, T0 + 20 + LEASE);
}

static void test_lock_goes_with_user(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "a", 11, T0, LEASE), STORE_OK);
    assert_int_equal(store_user_del(f->s, "alice@example.test"), STORE_OK);
    char n[64];
    int64_t sess, exp;
    assert_int_equal(store_pop3_lock_holder(f->s, f->alice, n, sizeof(n), &sess, &exp),
                     STORE_NOT_FOUND);
}

/* The login's job: a window that cannot be written is undone alone, and the lock taken before it
 * in the same transaction stands (a full disk must not keep a user from the mail). */
static void test_login_window_failure_keeps_the_lock(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_exec_for_tests(f->s, "CREATE TRIGGER no_windows BEFORE INSERT ON windows"
                                                " BEGIN SELECT RAISE(ABORT, 'disk full'); END"),
                     STORE_OK);
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_pop3_lock_take(f->s, f->alice, "a", 11, T0, LEASE), STORE_OK);
    bool failed = false;
    assert_int_equal(
        store_window_login(f->s, "192.0.2.1", "alice@example.test", T0, 60000, &failed), STORE_OK);
    assert_true(failed);
    assert_int_equal(store_commit(f->s), STORE_OK);
    holder_is(f, f->alice, "a", 11, T0 + LEASE);
    char user[256];
    int64_t expires, relayed;
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.1", T0, user, sizeof(user), &expires, &relayed),
        STORE_NOT_FOUND);
    /* Without the trigger the window and the login record are written. */
    assert_int_equal(store_exec_for_tests(f->s, "DROP TRIGGER no_windows"), STORE_OK);
    assert_int_equal(
        store_window_login(f->s, "192.0.2.1", "alice@example.test", T0, 60000, &failed), STORE_OK);
    assert_false(failed);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.1", T0, user, sizeof(user), &expires, &relayed),
        STORE_OK);
    assert_int_equal(expires, T0 + 60000);
}

static void test_node_name(void **state)
{
    struct fixture *f = *state;
    struct store_node_holder h;
    assert_int_equal(store_node_claim(f->s, "a", "host1", 100, T0, LEASE, false, &h), STORE_OK);
    /* The same process again: its own row. */
    assert_int_equal(store_node_claim(f->s, "a", "host1", 100, T0 + 1, LEASE, false, &h), STORE_OK);
    /* Another process, lease running: refused, told who has it. */
    assert_int_equal(store_node_claim(f->s, "a", "host1", 200, T0 + 2, LEASE, false, &h),
                     STORE_IN_USE);
    assert_true(h.found);
    assert_string_equal(h.host, "host1");
    assert_int_equal(h.pid, 100);
    assert_int_equal(h.expires_ms, T0 + 1 + LEASE);
    assert_int_equal(store_node_claim(f->s, "a", "host2", 100, T0 + 2, LEASE, false, &h),
                     STORE_IN_USE);
    /* Renewed by its holder, not by anyone else. */
    assert_int_equal(store_node_renew(f->s, "a", 100, T0 + 30000, LEASE), STORE_OK);
    assert_int_equal(store_node_renew(f->s, "a", 200, T0 + 30000, LEASE), STORE_NOT_FOUND);
    assert_int_equal(store_node_claim(f->s, "a", "host1", 200, T0 + 1 + LEASE, LEASE, false, &h),
                     STORE_IN_USE);
    /* The lease ran out: free. */
    assert_int_equal(
        store_node_claim(f->s, "a", "host1", 200, T0 + 30000 + LEASE, LEASE, false, &h), STORE_OK);
    assert_int_equal(
        store_node_claim(f->s, "a", "host1", 300, T0 + 30001 + LEASE, LEASE, false, &h),
        STORE_IN_USE);
    assert_int_equal(h.pid, 200);
    /* Forced (the caller found the holder dead). */
    assert_int_equal(store_node_claim(f->s, "a", "host1", 300, T0 + 30001 + LEASE, LEASE, true, &h),
                     STORE_OK);
    /* Given up by a process that no longer holds it: no effect; by the holder: free. */
    assert_int_equal(store_node_leave(f->s, "a", "host1", 200), STORE_OK);
    assert_int_equal(
        store_node_claim(f->s, "a", "host1", 400, T0 + 30002 + LEASE, LEASE, false, &h),
        STORE_IN_USE);
    assert_int_equal(store_node_leave(f->s, "a", "host1", 300), STORE_OK);
    assert_int_equal(
        store_node_claim(f->s, "a", "host1", 400, T0 + 30003 + LEASE, LEASE, false, &h), STORE_OK);
    /* Another name is independent. */
    assert_int_equal(store_node_claim(f->s, "b", "host1", 500, T0, LEASE, false, &h), STORE_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lock_take_refuse_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_renew_and_expire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_same_node_takeover_and_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_goes_with_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_window_failure_keeps_the_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_name, setup, teardown),
    };
    return STORE_TEST_RUN(tests);
}
