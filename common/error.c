/*
 * error.c - postern_strerror: names a code from any range of the convention in common/error.h.
 *
 * It is the one file in common/ that knows every module with codes of its own: it only asks each
 * module's *_strerror for the name, and asserts at compile time that every module's codes lie in
 * that module's range, far from errno and libuv. It holds no state and does no I/O.
 */
#include "common/error.h"

#include <string.h>

#include <uv.h>

#include "common/pure/dkim.h"
#include "common/pure/dsn.h"
#include "common/pure/smtp_parse.h"
#include "storage/store.h"

#define ASSERT_IN_RANGE(code, base)                                                                \
    _Static_assert(POSTERN_ERR_IN_RANGE(code, base), #code " lies outside its range")

ASSERT_IN_RANGE(STORE_ERR, POSTERN_ERR_STORE_BASE);
ASSERT_IN_RANGE(STORE_EXISTS, POSTERN_ERR_STORE_BASE);
ASSERT_IN_RANGE(STORE_NOT_FOUND, POSTERN_ERR_STORE_BASE);
ASSERT_IN_RANGE(STORE_NO_DOMAIN, POSTERN_ERR_STORE_BASE);
ASSERT_IN_RANGE(STORE_IN_USE, POSTERN_ERR_STORE_BASE);
ASSERT_IN_RANGE(STORE_TOO_NEW, POSTERN_ERR_STORE_BASE);
ASSERT_IN_RANGE(DSN_ERR_INVALID, POSTERN_ERR_DSN_BASE);
ASSERT_IN_RANGE(DSN_ERR_NO_MEMORY, POSTERN_ERR_DSN_BASE);
ASSERT_IN_RANGE(DSN_ERR_RANDOM, POSTERN_ERR_DSN_BASE);
ASSERT_IN_RANGE(SMTP_PARSE_SYNTAX, POSTERN_ERR_SMTP_PARSE_BASE);
ASSERT_IN_RANGE(SMTP_PARSE_BAD_ADDRESS, POSTERN_ERR_SMTP_PARSE_BASE);
ASSERT_IN_RANGE(SMTP_PARSE_BAD_PARAM, POSTERN_ERR_SMTP_PARSE_BASE);
ASSERT_IN_RANGE(SMTP_PARSE_UNKNOWN_PARAM, POSTERN_ERR_SMTP_PARSE_BASE);
ASSERT_IN_RANGE(DKIM_ERR_NO_FROM, POSTERN_ERR_DKIM_BASE);
ASSERT_IN_RANGE(DKIM_ERR_BAD_ARGUMENT, POSTERN_ERR_DKIM_BASE);

/* The ranges keep clear of the system's and of one another. */
_Static_assert(POSTERN_ERR_STORE_BASE < -POSTERN_ERR_SYSTEM_MAX, "store range overlaps errno");
_Static_assert(POSTERN_ERR_DSN_BASE <= POSTERN_ERR_STORE_BASE - POSTERN_ERR_RANGE_SIZE,
               "dsn range overlaps the store range");
_Static_assert(POSTERN_ERR_SMTP_PARSE_BASE <= POSTERN_ERR_DSN_BASE - POSTERN_ERR_RANGE_SIZE,
               "smtp_parse range overlaps the dsn range");
_Static_assert(POSTERN_ERR_DKIM_BASE <= POSTERN_ERR_SMTP_PARSE_BASE - POSTERN_ERR_RANGE_SIZE,
               "dkim range overlaps the smtp_parse range");
/* libuv's own codes (not errno values) at both ends of the system range. */
_Static_assert(UV_EOF >= -POSTERN_ERR_SYSTEM_MAX && UV_EAI_ADDRFAMILY >= -POSTERN_ERR_SYSTEM_MAX,
               "a libuv code lies outside the system range");

bool postern_err_is_system(int code)
{
    return code < 0 && code >= -POSTERN_ERR_SYSTEM_MAX;
}

bool postern_err_is_store(int code)
{
    return POSTERN_ERR_IN_RANGE(code, POSTERN_ERR_STORE_BASE);
}

/* libuv names its own codes with static strings; an errno value it has no name for is left to
 * strerror (uv_strerror would allocate a string for it and never free it). */
static bool is_uv_code(int code)
{
    switch (code) {
#define UV_CODE_CASE(name, _) case UV_##name:
        UV_ERRNO_MAP(UV_CODE_CASE)
#undef UV_CODE_CASE
        return true;
    default:
        return false;
    }
}

const char *postern_strerror(int code)
{
    if (code == 0)
        return "success";
    if (postern_err_is_system(code))
        return is_uv_code(code) ? uv_strerror(code) : strerror(-code);
    if (postern_err_is_store(code))
        return store_strerror(code);
    if (POSTERN_ERR_IN_RANGE(code, POSTERN_ERR_DSN_BASE))
        return dsn_strerror(code);
    if (POSTERN_ERR_IN_RANGE(code, POSTERN_ERR_SMTP_PARSE_BASE))
        return smtp_parse_strerror(code);
    if (POSTERN_ERR_IN_RANGE(code, POSTERN_ERR_DKIM_BASE))
        return dkim_strerror(code);
    return "unknown error code";
}
