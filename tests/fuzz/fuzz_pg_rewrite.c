/*
 * fuzz_pg_rewrite.c - libFuzzer target for the pure parsers of storage/postgres/pg_stmt.c and
 * pg_conn.c: pg_sql_rewrite (SQLite ?N parameters to PostgreSQL's $N, outside quotes and
 * comments), pg_parse_i64 (a result's text as an integer) and pg_conninfo_is_pg.
 *
 * Each gets a NUL-terminated copy of the input in a buffer of exactly that size, so ASan reports
 * a read past the end. The contract checked on success: the rewrite keeps the text's length and
 * changes nothing but '?' into '$', its count is 1 .. PG_MAX_PARAMS or 0, and rewriting its output
 * again succeeds with no parameters and the same text (every ?N it left is inside a quote or a
 * comment, and it leaves no bare "?" outside them). On failure there is no output and a reason.
 * An integer parsed prints back to a text that parses to the same value. Any broken property
 * aborts, which libFuzzer reports as a crash.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/postgres/pg_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rewrite(const char *sql, size_t len)
{
    char *out = NULL;
    int n = -1;
    char why[160] = "";
    int rc = pg_sql_rewrite(sql, &out, &n, why, sizeof(why));
    if (rc != STORE_OK) {
        if (rc != STORE_ERR || out != NULL || why[0] == '\0')
            abort();
        return;
    }
    if (out == NULL || strlen(out) != len || n < 0 || n > PG_MAX_PARAMS)
        abort();
    for (size_t i = 0; i < len; i++)
        if (out[i] != sql[i] && !(sql[i] == '?' && out[i] == '$'))
            abort();
    char *again = NULL;
    int n2 = -1;
    if (pg_sql_rewrite(out, &again, &n2, why, sizeof(why)) != STORE_OK || n2 != 0 ||
        strcmp(again, out) != 0)
        abort();
    free(again);
    free(out);
}

static void check_i64(const char *text)
{
    int64_t v = 0;
    if (pg_parse_i64(text, &v) != STORE_OK) {
        if (v != 0)
            abort();
        return;
    }
    char back[32];
    snprintf(back, sizeof(back), "%" PRId64, v);
    int64_t w = 1;
    if (pg_parse_i64(back, &w) != STORE_OK || w != v)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Statements are string literals of C: they end at the first NUL. */
    size_t len = strnlen((const char *)data, size);
    char *s = malloc(len + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, len);
    s[len] = '\0';
    check_rewrite(s, len);
    check_i64(s);
    (void)pg_conninfo_is_pg(s);
    free(s);
    return 0;
}
