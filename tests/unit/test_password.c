/*
 * test_password.c - common/password.c: argon2id hashes that verify, refuse wrong passwords, and
 * use the cheap limits only under POSTERN_TEST_FAST_HASH=1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/password.h"

static void test_hash_and_verify(void **state)
{
    (void)state;
    assert_int_equal(setenv("POSTERN_TEST_FAST_HASH", "1", 1), 0);
    assert_int_equal(password_init(), 0);
    char h[PASSWORD_HASH_BYTES];
    assert_int_equal(password_hash("s3cret", 6, h), 0);
    assert_memory_equal(h, "$argon2id$", 10);
    assert_true(password_verify(h, "s3cret", 6));
    assert_false(password_verify(h, "s3creT", 6));
    assert_false(password_verify(h, "s3cret", 5));
    assert_false(password_verify(h, "", 0));
    /* Binary-safe: the length counts, not a NUL. */
    assert_int_equal(password_hash("a\0b", 3, h), 0);
    assert_true(password_verify(h, "a\0b", 3));
    assert_false(password_verify(h, "a", 1));
    /* The same password hashes differently each time (random salt). */
    char h2[PASSWORD_HASH_BYTES];
    assert_int_equal(password_hash("s3cret", 6, h), 0);
    assert_int_equal(password_hash("s3cret", 6, h2), 0);
    assert_string_not_equal(h, h2);
}

static void test_cost_switch(void **state)
{
    (void)state;
    char h[PASSWORD_HASH_BYTES];
    assert_int_equal(setenv("POSTERN_TEST_FAST_HASH", "1", 1), 0);
    assert_true(password_fast_for_tests());
    assert_int_equal(password_hash("x", 1, h), 0);
    assert_non_null(strstr(h, "$m=8,")); /* crypto_pwhash_MEMLIMIT_MIN: 8 KiB */
    assert_int_equal(setenv("POSTERN_TEST_FAST_HASH", "yes", 1), 0);
    assert_false(password_fast_for_tests()); /* only exactly "1" */
    assert_int_equal(unsetenv("POSTERN_TEST_FAST_HASH"), 0);
    assert_false(password_fast_for_tests());
    assert_int_equal(password_hash("x", 1, h), 0);
    assert_non_null(strstr(h, "$m=65536,")); /* production: 64 MiB */
    assert_true(password_verify(h, "x", 1));
    assert_int_equal(setenv("POSTERN_TEST_FAST_HASH", "1", 1), 0);
}

static void test_limits_and_dummy(void **state)
{
    (void)state;
    static char big[PASSWORD_MAX_BYTES + 1];
    memset(big, 'a', sizeof(big));
    char h[PASSWORD_HASH_BYTES];
    assert_int_equal(password_hash(big, sizeof(big), h), -1);
    assert_int_equal(password_hash(big, PASSWORD_MAX_BYTES, h), 0);
    assert_true(password_verify(h, big, PASSWORD_MAX_BYTES));
    assert_false(password_verify(h, big, sizeof(big)));
    const char *d = password_dummy_hash();
    assert_memory_equal(d, "$argon2id$", 10);
    assert_ptr_equal(d, password_dummy_hash());
    assert_false(password_verify(d, "", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_and_verify),
        cmocka_unit_test(test_cost_switch),
        cmocka_unit_test(test_limits_and_dummy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
