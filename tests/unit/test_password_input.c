/*
 * test_password_input.c - server/cli/password_input.c from a file (the terminal path needs a
 * terminal and is covered by tests/e2e/test_admin.py): the first line is the password without
 * its CR LF or LF, the length limit holds to the byte, and no line or an empty one is refused
 * with its reason. Rows name themselves in failure messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/cli/password_input.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

struct input_case {
    const char *in;   /* what the file holds */
    const char *want; /* the password that must verify, or NULL when refused */
    const char *why;  /* a part of the reason when refused */
};

static const struct input_case cases[] = {
    {"secret\n", "secret", NULL},
    {"secret", "secret", NULL}, /* a last line without LF */
    {"first\r\nsecond\n", "first", NULL},
    {"with space \n", "with space ", NULL},
    {"", NULL, "no password on standard input"},
    {"\n", NULL, "empty password refused"},
    {"\r\n", NULL, "empty password refused"},
};

static FILE *file_with(const char *text, size_t len)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    rewind(f);
    return f;
}

static int setup(void **state)
{
    (void)state;
    if (setenv("POSTERN_TEST_FAST_HASH", "1", 1) != 0 || password_init() != 0)
        return -1;
    return 0;
}

static void test_lines(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(cases); i++) {
        const struct input_case *c = &cases[i];
        FILE *f = file_with(c->in, strlen(c->in));
        char hash[PASSWORD_HASH_BYTES], why[PASSWORD_INPUT_WHY_BYTES] = "";
        int rc = password_input_hash(f, hash, why, sizeof(why));
        fclose(f);
        if (c->want != NULL) {
            if (rc != 0 || !password_verify(hash, c->want, strlen(c->want)))
                fail_msg("row %zu: got rc %d (%s), want the password \"%s\"", i, rc, why, c->want);
        } else if (rc != -1 || strstr(why, c->why) == NULL) {
            fail_msg("row %zu: got rc %d (%s), want -1 (%s)", i, rc, why, c->why);
        }
    }
}

/* PASSWORD_MAX_BYTES is the longest accepted; one byte more is refused, not cut. */
static void test_length_limit(void **state)
{
    (void)state;
    static char line[PASSWORD_MAX_BYTES + 3];
    char hash[PASSWORD_HASH_BYTES], why[PASSWORD_INPUT_WHY_BYTES];

    memset(line, 'x', PASSWORD_MAX_BYTES);
    line[PASSWORD_MAX_BYTES] = '\n';
    FILE *f = file_with(line, PASSWORD_MAX_BYTES + 1);
    assert_int_equal(password_input_hash(f, hash, why, sizeof(why)), 0);
    fclose(f);
    assert_true(password_verify(hash, line, PASSWORD_MAX_BYTES));

    memset(line, 'x', PASSWORD_MAX_BYTES + 1);
    line[PASSWORD_MAX_BYTES + 1] = '\n';
    f = file_with(line, PASSWORD_MAX_BYTES + 2);
    assert_int_equal(password_input_hash(f, hash, why, sizeof(why)), -1);
    fclose(f);
    assert_non_null(strstr(why, "at most"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_length_limit),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
