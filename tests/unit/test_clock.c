/*
 * test_clock.c - common/clock.c: the monotonic clock never goes back and the wall clock is the
 * time of day in milliseconds (not seconds, not microseconds).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "common/clock.h"

static void test_monotonic_never_goes_back(void **state)
{
    (void)state;
    int64_t prev = clock_monotonic_ms();
    for (int i = 0; i < 1000; i++) {
        int64_t now = clock_monotonic_ms();
        assert_true(now >= prev);
        prev = now;
    }
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000000L};
    int64_t before = clock_monotonic_ms();
    assert_int_equal(nanosleep(&pause, NULL), 0);
    int64_t slept = clock_monotonic_ms() - before;
    /* At least the pause; an upper bound would only measure how busy the machine is. */
    assert_true(slept >= 19);
}

static void test_wall_is_milliseconds_since_epoch(void **state)
{
    (void)state;
    int64_t ms = clock_wall_ms();
    time_t s = time(NULL);
    assert_true(s != (time_t)-1);
    /* Same second give or take one: catches a unit slip by a factor of 1000. */
    assert_true(ms / 1000 >= (int64_t)s - 1 && ms / 1000 <= (int64_t)s + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monotonic_never_goes_back),
        cmocka_unit_test(test_wall_is_milliseconds_since_epoch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
