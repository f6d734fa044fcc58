/*
 * test_log.c - common/log.c: level parsing and escaping of client text into one field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "common/log.h"

struct esc_case {
    const char *in;
    size_t len;
    size_t cap;
    const char *want;
};

static void test_escape(void **state)
{
    (void)state;
    static const struct esc_case cases[] = {
        {"plain", 5, 64, "plain"},
        {"", 0, 64, "\"\""},
        {"two words", 9, 64, "\"two words\""},
        {"k=v", 3, 64, "\"k=v\""},
        {"say \"hi\"", 8, 64, "\"say \\\"hi\\\"\""},
        {"back\\slash", 10, 64, "back\\\\slash"},
        {"cr\r\nlf", 6, 64, "cr\\x0d\\x0alf"},
        {"nul\0x", 5, 64, "nul\\x00x"},
        {"\xff\x80", 2, 64, "\\xff\\x80"},
        {"abcdefghijklmnop", 16, 12, "abcdefgh..."},
        {"a b c d e f g h", 15, 12, "\"a b c ...\""},
        {"\x01\x02\x03\x04", 4, 12, "\\x01\\x02..."},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        memset(out, 'Z', sizeof(out));
        log_escape(out, cases[i].cap, cases[i].in, cases[i].len);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: got [%s], want [%s]", i, out, cases[i].want);
        assert_true(strlen(out) < cases[i].cap);
    }
}

static void test_levels(void **state)
{
    (void)state;
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        enum log_level l;
        assert_int_equal(log_level_parse(names[i], &l), 0);
        assert_int_equal(l, i);
        assert_string_equal(log_level_name(l), names[i]);
    }
    enum log_level l = LOG_LEVEL_INFO;
    assert_int_equal(log_level_parse("verbose", &l), -1);
    assert_int_equal(log_level_parse("INFO", &l), -1);
    log_set_level(LOG_LEVEL_WARN);
    assert_false(log_enabled(LOG_LEVEL_INFO));
    assert_true(log_enabled(LOG_LEVEL_ERROR));
    log_set_level(LOG_LEVEL_INFO);
    assert_true(log_enabled(LOG_LEVEL_INFO));
    assert_false(log_enabled(LOG_LEVEL_DEBUG));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
