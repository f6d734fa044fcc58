/*
 * test_conninfo.c - common/pure/conninfo.c: which [server] database values name PostgreSQL (a
 * table of both kinds, including the paths that only look like a connection string), and the
 * password masking of `config check` for URIs and key=value strings (quoted values, escapes, a
 * password at the start and the end, a cut output buffer).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/pure/conninfo.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void test_is_postgres(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool want;
    } cases[] = {
        {"postgresql://postern@db1/mail", true},
        {"postgres://db1", true},
        {"postgresql://", true},
        {"host=db1 dbname=mail", true},
        {"dbname=mail", true},
        {"  host = /run/postgresql dbname=mail", true},
        {"application_name=x", true},
        {"postern.db", false},
        {"/var/lib/postern/postern.db", false},
        {"./host=x", false},
        {"data/host=x", false},
        {"Host=db1", false}, /* libpq's keywords are lower case */
        {"=x", false},
        {"", false},
        {"postgresql:/x", false},
        {"mysql://db1", false},
    };
    for (size_t i = 0; i < COUNT(cases); i++)
        if (conninfo_is_postgres(cases[i].in) != cases[i].want)
            fail_msg("%s: got %d, want %d", cases[i].in, !cases[i].want, cases[i].want);
    assert_false(conninfo_is_postgres(NULL));
}

static void test_mask(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"host=db1 password=sekret dbname=mail", "host=db1 password=*** dbname=mail"},
        {"password=sekret", "password=***"},
        {"host=db1 password='se cret\\' x' dbname=mail", "host=db1 password=*** dbname=mail"},
        {"host=db1 password=se\\ cret dbname=mail", "host=db1 password=*** dbname=mail"},
        {"host=db1 passwordx=kept", "host=db1 passwordx=kept"},
        {"host=db1 dbname=mail", "host=db1 dbname=mail"},
        {"postgresql://u:sekret@db1:5432/mail", "postgresql://u:***@db1:5432/mail"},
        {"postgresql://u:se@cret@db1/mail", "postgresql://u:***@db1/mail"},
        {"postgresql://u@db1/mail", "postgresql://u@db1/mail"},
        {"postgresql://db1/mail?user=u&password=sekret",
         "postgresql://db1/mail?user=u&password=***"},
        {"postgresql://db1:5432", "postgresql://db1:5432"},
        {"/var/lib/postern/p.db", "/var/lib/postern/p.db"},
        {"host=db1 broken password=sekret", "host=db1 ***"},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        char out[256];
        conninfo_mask(cases[i].in, out, sizeof(out));
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].in, out, cases[i].want);
        assert_null(strstr(out, "sekret"));
        assert_null(strstr(out, "cret"));
    }
    /* A short buffer cuts, and is still a string. */
    char small[12];
    conninfo_mask("password=sekret host=db1", small, sizeof(small));
    assert_string_equal(small, "password=**");
    conninfo_mask(NULL, small, sizeof(small));
    assert_string_equal(small, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_postgres),
        cmocka_unit_test(test_mask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
