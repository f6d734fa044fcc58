/*
 * test_command.c - unit tests for common/pure/command.c: finding a verb in a command table whose
 * rows embed a struct command (any case, exact length), the state mask, and the AUTH argument
 * split into mechanism and optional initial response.
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

#include "common/pure/command.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A session-like row: the struct command first, then something of the session's own. */
struct row {
    struct command cmd;
    int handler_id;
};

static const struct row table[] = {
    {{"STAT", 1u << 1, 0}, 1},
    {{"TOP", 1u << 1, 0}, 2},
    {{"STARTTLS", COMMAND_ANY_STATE, 0x1u}, 3},
    {{"QUIT", (1u << 0) | (1u << 1), 0x1u}, 4},
};

struct find_case {
    const char *verb;
    size_t len; /* of verb to look at */
    int want;   /* handler_id, or 0 for not found */
};

static const struct find_case find_cases[] = {
    {"STAT", 4, 1},     {"stat", 4, 1},      {"sTaT", 4, 1},
    {"TOP", 3, 2},      {"TOP 1 2", 3, 2},   /* only the first verb_len octets count */
    {"STARTTLS", 8, 3}, {"STARTTLSX", 9, 0}, /* longer than any verb */
    {"STA", 3, 0},                           /* a prefix is not a match */
    {"STATS", 5, 0},    {"", 0, 0},          {"QUIT", 4, 4},
    {"QUI\0T", 5, 0}, /* a NUL inside never matches */
};

static void test_find(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(find_cases); i++) {
        const struct find_case *tc = &find_cases[i];
        const struct command *c =
            command_find(table, COUNT(table), sizeof(table[0]), tc->verb, tc->len);
        int got = c == NULL ? 0 : ((const struct row *)(const void *)c)->handler_id;
        if (got != tc->want)
            fail_msg("command_find(\"%.*s\"): got %d, want %d", (int)tc->len, tc->verb, got,
                     tc->want);
    }
    assert_null(command_find(table, 0, sizeof(table[0]), "STAT", 4));
}

static void test_allowed(void **state)
{
    (void)state;
    assert_false(command_is_allowed(&table[0].cmd, 0));
    assert_true(command_is_allowed(&table[0].cmd, 1));
    assert_false(command_is_allowed(&table[0].cmd, 2));
    assert_true(command_is_allowed(&table[2].cmd, 0));
    assert_true(command_is_allowed(&table[2].cmd, 31));
    assert_false(command_is_allowed(&table[2].cmd, 32)); /* beyond the mask */
    assert_true(command_is_allowed(&table[3].cmd, 0));
    assert_false(command_is_allowed(&table[3].cmd, 2));
}

struct auth_case {
    const char *args;
    const char *mech;    /* expected mechanism text */
    const char *initial; /* expected initial response, or NULL for none */
};

static const struct auth_case auth_cases[] = {
    {"PLAIN", "PLAIN", NULL},
    {"PLAIN AGFsaWNlAHNlY3JldA==", "PLAIN", "AGFsaWNlAHNlY3JldA=="},
    {"LOGIN =", "LOGIN", "="},
    {"PLAIN ", "PLAIN", ""},       /* a space and nothing: an empty response, not none */
    {"PLAIN a b", "PLAIN", "a b"}, /* the rest goes to SASL as it is */
    {"PLAIN  x", "PLAIN", " x"},
    {"", "", NULL},
    {" x", "", "x"},
};

static void test_split_auth(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(auth_cases); i++) {
        const struct auth_case *tc = &auth_cases[i];
        struct command_auth_args a;
        memset(&a, 0xa5, sizeof(a));
        command_split_auth(tc->args, &a);
        if (a.mech != tc->args || a.mech_len != strlen(tc->mech) ||
            memcmp(a.mech, tc->mech, a.mech_len) != 0)
            fail_msg("command_split_auth(\"%s\"): mech \"%.*s\", want \"%s\"", tc->args,
                     (int)a.mech_len, a.mech, tc->mech);
        if (tc->initial == NULL) {
            if (a.initial != NULL || a.initial_len != 0)
                fail_msg("command_split_auth(\"%s\"): got an initial response, want none",
                         tc->args);
            continue;
        }
        if (a.initial == NULL || a.initial_len != strlen(tc->initial) ||
            memcmp(a.initial, tc->initial, a.initial_len) != 0)
            fail_msg("command_split_auth(\"%s\"): initial \"%s\", want \"%s\"", tc->args,
                     a.initial != NULL ? a.initial : "(none)", tc->initial);
    }
}

/* The transcript's mask: a line and what of it the log may show. */
struct visible_case {
    const char *line;
    bool outgoing;
    const char *shown;
};

static const struct visible_case visible_cases[] = {
    {"AUTH PLAIN AGFsaWNlAHNlY3JldA==", false, "AUTH PLAIN"},
    {"auth login YWxpY2U=", false, "auth login"}, /* verbs match in any case */
    {"AUTH LOGIN", false, "AUTH LOGIN"},          /* no initial response: nothing hidden */
    {"AUTH  PLAIN  x", false, "AUTH  PLAIN"},
    {"PASS secret", false, "PASS"},
    {"PASS two words", false, "PASS"}, /* RFC 1939 7: spaces belong to the password */
    {"USER alice", false, "USER alice"},
    {"PASSWORD x", false, "PASSWORD x"},
    {"AUTH", false, "AUTH"},
    {"", false, ""},
    {"AUTH PLAIN x", true, "AUTH PLAIN x"}, /* a reply we send is never masked */
};

static void test_transcript_visible(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(visible_cases); i++) {
        const struct visible_case *tc = &visible_cases[i];
        size_t n = command_transcript_visible(tc->line, strlen(tc->line), tc->outgoing);
        if (n != strlen(tc->shown) || strncmp(tc->line, tc->shown, n) != 0)
            fail_msg("command_transcript_visible(\"%s\", %d): shows \"%.*s\", want \"%s\"",
                     tc->line, (int)tc->outgoing, (int)n, tc->line, tc->shown);
    }
}

static void test_http_request(void **state)
{
    static const struct {
        const char *line;
        bool want;
    } cases[] = {
        {"GET / HTTP/1.1", true},
        {"post /x HTTP/1.0", true},
        {"CONNECT example.org:25 HTTP/1.1", true},
        {"GET / http/1.1", true},
        {"GET /", false}, /* no HTTP/ version */
        {"GET", false},   /* no space */
        {"MAIL FROM:<a@b> HTTP/1.1", false},
        {"GETS / HTTP/1.1", false}, /* a method is matched whole */
        {"HELO HTTP/", false},      /* not a method */
        {"PUT HTTP/2", true},
        {"TOP 1 10", false}, /* POP3 verbs are no methods */
        {"DELE 1", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got = command_is_http_request(cases[i].line, strlen(cases[i].line));
        if (got != cases[i].want)
            fail_msg("command_is_http_request(\"%s\"): got %d, want %d", cases[i].line, got,
                     cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),         cmocka_unit_test(test_allowed),
        cmocka_unit_test(test_split_auth),   cmocka_unit_test(test_transcript_visible),
        cmocka_unit_test(test_http_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
