/*
 * test_pop3_parse.c - unit tests for common/pure/pop3_parse.c: splitting POP3 command lines into
 * keyword and arguments, and the strict reading of message numbers and TOP line counts.
 *
 * Table-driven; each row names itself in the failure message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/pure/pop3_parse.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

struct line_case {
    const char *in;
    int rc;
    const char *verb; /* expected verb text (rc == 0) */
    const char *args;
};

static const struct line_case line_cases[] = {
    {"STAT", 0, "STAT", ""},
    {"stat", 0, "stat", ""},
    {"LIST 1", 0, "LIST", "1"},
    {"TOP 1 0", 0, "TOP", "1 0"},
    {"PASS secret with spaces", 0, "PASS", "secret with spaces"},
    {"PASS  lead", 0, "PASS", " lead"},
    {"NOOP ", 0, "NOOP", ""},
    {"AUTH PLAIN AGFsaWNlAHNlY3JldA==", 0, "AUTH", "PLAIN AGFsaWNlAHNlY3JldA=="},
    {"X-VERY-LONG-EXTENSION-KEYWORD-OF-40-CHAR", 0, "X-VERY-LONG-EXTENSION-KEYWORD-OF-40-CHAR", ""},
    {"X-VERY-LONG-EXTENSION-KEYWORD-OF-41-CHARS", -1, NULL, NULL},
    {"", -1, NULL, NULL},
    {" STAT", -1, NULL, NULL},
    {"ST\tAT", -1, NULL, NULL},
    {"ST\x7f"
     "AT",
     -1, NULL, NULL},
    {"\xc3\xa9T", -1, NULL, NULL},
};

static void test_parse_line(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(line_cases); i++) {
        const struct line_case *tc = &line_cases[i];
        struct pop3_cmdline cl;
        memset(&cl, 0, sizeof(cl));
        int rc = pop3_parse_line(tc->in, &cl);
        if (rc != tc->rc)
            fail_msg("pop3_parse_line(\"%s\"): got %d, want %d", tc->in, rc, tc->rc);
        if (rc != 0)
            continue;
        if (cl.verb_len != strlen(tc->verb) || memcmp(cl.verb, tc->verb, cl.verb_len) != 0)
            fail_msg("pop3_parse_line(\"%s\"): verb \"%.*s\", want \"%s\"", tc->in,
                     (int)cl.verb_len, cl.verb, tc->verb);
        if (strcmp(cl.args, tc->args) != 0)
            fail_msg("pop3_parse_line(\"%s\"): args \"%s\", want \"%s\"", tc->in, cl.args,
                     tc->args);
    }
}

struct num_case {
    const char *in;
    unsigned min, max;
    int rc;
    unsigned count;
    uint64_t v0, v1;
};

static const struct num_case num_cases[] = {
    {"1", 1, 1, 0, 1, 1, 0},
    {"42", 1, 1, 0, 1, 42, 0},
    {"0", 1, 1, 0, 1, 0, 0}, /* range is the session's business */
    {"007", 1, 1, 0, 1, 7, 0},
    {"1234567890123456789", 1, 1, 0, 1, 1234567890123456789ull, 0},
    {"12345678901234567890", 1, 1, -1, 0, 0, 0},
    {"", 0, 1, 0, 0, 0, 0},
    {"", 1, 1, -1, 0, 0, 0},
    {"3", 0, 1, 0, 1, 3, 0},
    {"1 0", 2, 2, 0, 2, 1, 0},
    {"5 100", 2, 2, 0, 2, 5, 100},
    {"1", 2, 2, -1, 0, 0, 0},
    {"1 2", 1, 1, -1, 0, 0, 0},
    {"1 2 3", 2, 2, -1, 0, 0, 0},
    {"1  2", 2, 2, -1, 0, 0, 0},
    {"1 ", 1, 2, -1, 0, 0, 0},
    {" 1", 1, 1, -1, 0, 0, 0},
    {"+1", 1, 1, -1, 0, 0, 0},
    {"-1", 1, 1, -1, 0, 0, 0},
    {"1x", 1, 1, -1, 0, 0, 0},
    {"0x10", 1, 1, -1, 0, 0, 0},
    {"1\t", 1, 1, -1, 0, 0, 0},
    {"1", 1, 3, -1, 0, 0, 0}, /* max over POP3_ARGS_MAX */
    {"1", 2, 1, -1, 0, 0, 0}, /* min over max */
};

static void test_parse_numbers(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(num_cases); i++) {
        const struct num_case *tc = &num_cases[i];
        uint64_t v[POP3_ARGS_MAX] = {99, 99};
        unsigned count = 99;
        int rc = pop3_parse_numbers(tc->in, tc->min, tc->max, v, &count);
        if (rc != tc->rc)
            fail_msg("pop3_parse_numbers(\"%s\", %u, %u): got %d, want %d", tc->in, tc->min,
                     tc->max, rc, tc->rc);
        if (rc != 0)
            continue;
        if (count != tc->count)
            fail_msg("pop3_parse_numbers(\"%s\"): count %u, want %u", tc->in, count, tc->count);
        if (count > 0 && v[0] != tc->v0)
            fail_msg("pop3_parse_numbers(\"%s\"): v[0] %llu, want %llu", tc->in,
                     (unsigned long long)v[0], (unsigned long long)tc->v0);
        if (count > 1 && v[1] != tc->v1)
            fail_msg("pop3_parse_numbers(\"%s\"): v[1] %llu, want %llu", tc->in,
                     (unsigned long long)v[1], (unsigned long long)tc->v1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_line),
        cmocka_unit_test(test_parse_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
