/*
 * test_error.c - common/error.c, the error-code convention: every libuv code (UV_ERRNO_MAP, the
 * errno values and libuv's own) lies in the system range, every module code (STORE_*, DSN_ERR_*,
 * SMTP_PARSE_*) in its own range, no module code equals any system code, and postern_strerror
 * names each code as the layer it came from (table-driven).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/pure/dkim.h"
#include "common/pure/dsn.h"
#include "common/pure/smtp_parse.h"
#include "storage/store.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const int uv_codes[] = {
#define UV_CODE_ITEM(name, _) UV_##name,
    UV_ERRNO_MAP(UV_CODE_ITEM)
#undef UV_CODE_ITEM
};

struct module_code {
    const char *name;
    int code;
    int base;
    const char *prefix; /* how postern_strerror's text starts */
};

static const struct module_code module_codes[] = {
    {"STORE_ERR", STORE_ERR, POSTERN_ERR_STORE_BASE, "store: "},
    {"STORE_EXISTS", STORE_EXISTS, POSTERN_ERR_STORE_BASE, "store: "},
    {"STORE_NOT_FOUND", STORE_NOT_FOUND, POSTERN_ERR_STORE_BASE, "store: "},
    {"STORE_NO_DOMAIN", STORE_NO_DOMAIN, POSTERN_ERR_STORE_BASE, "store: "},
    {"STORE_IN_USE", STORE_IN_USE, POSTERN_ERR_STORE_BASE, "store: "},
    {"STORE_TOO_NEW", STORE_TOO_NEW, POSTERN_ERR_STORE_BASE, "store: "},
    {"DSN_ERR_INVALID", DSN_ERR_INVALID, POSTERN_ERR_DSN_BASE, "bounce: "},
    {"DSN_ERR_NO_MEMORY", DSN_ERR_NO_MEMORY, POSTERN_ERR_DSN_BASE, "bounce: "},
    {"DSN_ERR_RANDOM", DSN_ERR_RANDOM, POSTERN_ERR_DSN_BASE, "bounce: "},
    {"SMTP_PARSE_SYNTAX", SMTP_PARSE_SYNTAX, POSTERN_ERR_SMTP_PARSE_BASE, "smtp argument: "},
    {"SMTP_PARSE_BAD_ADDRESS", SMTP_PARSE_BAD_ADDRESS, POSTERN_ERR_SMTP_PARSE_BASE,
     "smtp argument: "},
    {"SMTP_PARSE_BAD_PARAM", SMTP_PARSE_BAD_PARAM, POSTERN_ERR_SMTP_PARSE_BASE, "smtp argument: "},
    {"SMTP_PARSE_UNKNOWN_PARAM", SMTP_PARSE_UNKNOWN_PARAM, POSTERN_ERR_SMTP_PARSE_BASE,
     "smtp argument: "},
    {"DKIM_ERR_NO_FROM", DKIM_ERR_NO_FROM, POSTERN_ERR_DKIM_BASE, "dkim: "},
    {"DKIM_ERR_BAD_KEY", DKIM_ERR_BAD_KEY, POSTERN_ERR_DKIM_BASE, "dkim: "},
    {"DKIM_ERR_BAD_ARGUMENT", DKIM_ERR_BAD_ARGUMENT, POSTERN_ERR_DKIM_BASE, "dkim: "},
};

static void test_libuv_codes_are_system_codes(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(uv_codes); i++) {
        int c = uv_codes[i];
        if (!postern_err_is_system(c))
            fail_msg("libuv code %s (%d): got outside the system range, want in [-%d, -1]",
                     uv_err_name(c), c, POSTERN_ERR_SYSTEM_MAX);
        if (postern_err_is_store(c))
            fail_msg("libuv code %s (%d) taken for a store code", uv_err_name(c), c);
        if (strcmp(postern_strerror(c), uv_strerror(c)) != 0)
            fail_msg("libuv code %s: got \"%s\", want \"%s\"", uv_err_name(c), postern_strerror(c),
                     uv_strerror(c));
    }
    /* Every errno value, named or not, is a system code. */
    for (int e = 1; e <= POSTERN_ERR_SYSTEM_MAX; e++)
        if (!postern_err_is_system(-e) || postern_err_is_store(-e))
            fail_msg("-errno %d: not a system code", e);
}

static void test_module_codes_are_apart(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(module_codes); i++) {
        const struct module_code *m = &module_codes[i];
        if (postern_err_is_system(m->code))
            fail_msg("%s (%d) lies in the errno/libuv range", m->name, m->code);
        if (!POSTERN_ERR_IN_RANGE(m->code, m->base))
            fail_msg("%s (%d) lies outside its range below %d", m->name, m->code, m->base);
        if (postern_err_is_store(m->code) != (m->base == POSTERN_ERR_STORE_BASE))
            fail_msg("%s: postern_err_is_store got it wrong", m->name);
        for (size_t k = 0; k < ARRAY_LEN(uv_codes); k++)
            if (uv_codes[k] == m->code)
                fail_msg("%s equals libuv's %s", m->name, uv_err_name(uv_codes[k]));
        for (size_t k = 0; k < ARRAY_LEN(module_codes); k++)
            if (k != i && module_codes[k].code == m->code)
                fail_msg("%s equals %s", m->name, module_codes[k].name);
        const char *text = postern_strerror(m->code);
        if (strncmp(text, m->prefix, strlen(m->prefix)) != 0)
            fail_msg("%s: got \"%s\", want it to start with \"%s\"", m->name, text, m->prefix);
    }
}

static void test_strerror_edges(void **state)
{
    (void)state;
    assert_string_equal(postern_strerror(0), "success");
    assert_string_equal(postern_strerror(-ENOMEM), uv_strerror(UV_ENOMEM));
    /* An errno value libuv has no name for (ECHILD is not in UV_ERRNO_MAP). */
    assert_string_equal(postern_strerror(-ECHILD), strerror(ECHILD));
    assert_string_equal(postern_strerror(POSTERN_ERR_STORE_BASE), "unknown error code");
    assert_string_equal(postern_strerror(-5000), "unknown error code");
    assert_string_equal(postern_strerror(42), "unknown error code");
    assert_string_equal(store_strerror(-1), "store: not a store code");
    assert_false(postern_err_is_store(STORE_OK));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libuv_codes_are_system_codes),
        cmocka_unit_test(test_module_codes_are_apart),
        cmocka_unit_test(test_strerror_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
