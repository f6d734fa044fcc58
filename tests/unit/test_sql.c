/*
 * test_sql.c - storage/sql.h, the statement seam, on the backend store_open picks (SQLite): what
 * the table files rely on whatever the backend. A new row's id from `RETURNING id` (and no row
 * when an INSERT ... SELECT inserts nothing, right after one that did), error codes from
 * sql_step (unique key, a referenced row, a failed bind), changed-row counts, NULL and blob
 * columns, the statement cache (one statement per SQL address, bindings cleared at prepare), and
 * a savepoint undo keeping the failure's text. Each test runs on a scratch table of its own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "storage/sql.h"
#include "storage/store.h"
#include "tests/unit/store_fixture.h"

struct fixture {
    char dir[64];
    char path[128];
    struct store *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/postern-sql-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    f->s = open_ok(f->path);
    assert_int_equal(store_exec_for_tests(f->s,
                                          "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                          " k TEXT NOT NULL UNIQUE, n INTEGER, b BLOB);"
                                          "CREATE TABLE r (id INTEGER PRIMARY KEY,"
                                          " t_id INTEGER NOT NULL REFERENCES t(id)"
                                          " ON DELETE RESTRICT);"),
                     STORE_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(&f->s);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char p[160];
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        (void)unlink(p);
    }
    assert_int_equal(rmdir(f->dir), 0);
    free(f);
    return 0;
}

static const char insert_sql[] = "INSERT INTO t(k, n) VALUES (?1, ?2) RETURNING id";
static const char insert_if_absent_sql[] =
    "INSERT INTO t(k, n) SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM t WHERE n = ?2)"
    " RETURNING id";
static const char get_sql[] = "SELECT id, k, n, b FROM t WHERE k = ?1";

static int insert(struct store *s, const char *sql, const char *k, int64_t n, int64_t *id_out)
{
    struct sql_stmt *st = sql_prepare(s, sql);
    assert_non_null(st);
    sql_bind_text(st, 1, k);
    sql_bind_i64(st, 2, n);
    return store_step_id(s, st, "insert", id_out);
}

static int64_t id_of(struct store *s, const char *k)
{
    struct sql_stmt *st = sql_prepare(s, get_sql);
    assert_non_null(st);
    sql_bind_text(st, 1, k);
    assert_int_equal(sql_step(st), SQL_ROW);
    int64_t id = sql_col_i64(st, 0);
    assert_int_equal(sql_step(st), SQL_DONE);
    sql_reset(st);
    return id;
}

static void test_returning_id_is_the_new_row(void **state)
{
    struct fixture *f = *state;
    const char *keys[] = {"a", "b", "c"};
    int64_t prev = 0;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        int64_t id = -1;
        assert_int_equal(insert(f->s, insert_sql, keys[i], (int64_t)i, &id), STORE_OK);
        assert_true(id > prev);
        assert_int_equal(id, id_of(f->s, keys[i]));
        prev = id;
    }
    /* Stepped by hand: one row, then the end, then (after a reset) the same again. */
    struct sql_stmt *st = sql_prepare(f->s, insert_sql);
    sql_bind_text(st, 1, "d");
    sql_bind_i64(st, 2, 10);
    assert_int_equal(sql_step(st), SQL_ROW);
    assert_int_equal(sql_col_i64(st, 0), prev + 1);
    assert_int_equal(sql_step(st), SQL_DONE);
    sql_reset(st);
    assert_int_equal(id_of(f->s, "d"), prev + 1);
}

static void test_returning_nothing_inserted(void **state)
{
    struct fixture *f = *state;
    int64_t id = 0;
    assert_int_equal(insert(f->s, insert_if_absent_sql, "a", 1, &id), STORE_OK);
    int64_t first = id;
    /* Right after an insert that did insert: no row now, not the earlier row's id. */
    id = -7;
    assert_int_equal(insert(f->s, insert_if_absent_sql, "b", 1, &id), STORE_NOT_FOUND);
    assert_int_equal(id, -7);
    struct sql_stmt *st = sql_prepare(f->s, insert_if_absent_sql);
    sql_bind_text(st, 1, "c");
    sql_bind_i64(st, 2, 1);
    assert_int_equal(sql_step(st), SQL_DONE);
    sql_reset(st);
    assert_int_equal(insert(f->s, insert_if_absent_sql, "d", 2, &id), STORE_OK);
    assert_int_equal(id, first + 1);
}

/* What sql_step and the helpers answer for each kind of failure. */
struct failure_case {
    const char *name;
    const char *setup_sql; /* run first; NULL for none */
    const char *sql;       /* one parameter-free statement, stepped by store_step_done */
    int want;
};

static const struct failure_case failure_cases[] = {
    {"unique key", "INSERT INTO t(k) VALUES ('x')", "INSERT INTO t(k) VALUES ('x')", STORE_EXISTS},
    {"primary key", "INSERT INTO t(id, k) VALUES (5, 'y')", "INSERT INTO t(id, k) VALUES (5, 'z')",
     STORE_EXISTS},
    {"referenced row", "INSERT INTO t(id, k) VALUES (6, 'w'); INSERT INTO r(t_id) VALUES (6)",
     "DELETE FROM t WHERE id = 6", STORE_IN_USE},
    {"no such parent", NULL, "INSERT INTO r(t_id) VALUES (999)", STORE_IN_USE},
    {"not null", NULL, "INSERT INTO t(k) VALUES (NULL)", STORE_ERR},
};

static void test_failures(void **state)
{
    struct fixture *f = *state;
    for (size_t i = 0; i < sizeof(failure_cases) / sizeof(failure_cases[0]); i++) {
        const struct failure_case *c = &failure_cases[i];
        if (c->setup_sql != NULL)
            assert_int_equal(store_exec_for_tests(f->s, c->setup_sql), STORE_OK);
        struct sql_stmt *st = sql_prepare(f->s, c->sql);
        assert_non_null(st);
        int got = store_step_done(f->s, st, "case");
        if (got != c->want)
            fail_msg("%s: got %d (%s), want %d", c->name, got, store_errmsg(f->s), c->want);
        /* The text names the context word and carries the database's reason. */
        assert_true(strncmp(store_errmsg(f->s), "case: ", 6) == 0);
        assert_true(strlen(store_errmsg(f->s)) > 6);
    }
}

static void test_failed_bind_is_not_run(void **state)
{
    struct fixture *f = *state;
    struct sql_stmt *st = sql_prepare(f->s, "INSERT INTO t(k, n) VALUES (?1, 1)");
    assert_non_null(st);
    sql_bind_text(st, 1, "bound");
    sql_bind_i64(st, 2, 2); /* no ?2 in the text */
    assert_int_equal(store_step_done(f->s, st, "bad bind"), STORE_ERR);
    assert_non_null(strstr(store_errmsg(f->s), "bad bind: "));
    /* Nothing was inserted, and the next prepare starts clean. */
    st = sql_prepare(f->s, "SELECT count(*) FROM t");
    assert_int_equal(sql_step(st), SQL_ROW);
    assert_int_equal(sql_col_i64(st, 0), 0);
    sql_reset(st);
    int64_t id = 0;
    assert_int_equal(insert(f->s, insert_sql, "after", 1, &id), STORE_OK);
}

static void test_changes_and_columns(void **state)
{
    struct fixture *f = *state;
    int64_t id = 0;
    assert_int_equal(insert(f->s, insert_sql, "a", 1, &id), STORE_OK);
    assert_int_equal(insert(f->s, insert_sql, "b", 1, &id), STORE_OK);
    struct sql_stmt *st = sql_prepare(f->s, "UPDATE t SET b = ?2 WHERE n = ?1");
    const unsigned char blob[] = {0, 1, 2, 0xff};
    sql_bind_i64(st, 1, 1);
    sql_bind_blob(st, 2, blob, sizeof(blob));
    assert_int_equal(store_step_done(f->s, st, "update"), STORE_OK);
    assert_int_equal(sql_changes(st), 2);
    /* A reset keeps the bindings: rebinding ?1 alone runs it again. */
    sql_bind_i64(st, 1, 99);
    assert_int_equal(store_step_changed(f->s, st, "update"), STORE_NOT_FOUND);

    st = sql_prepare(f->s, get_sql);
    sql_bind_text(st, 1, "a");
    assert_int_equal(sql_step(st), SQL_ROW);
    assert_string_equal(sql_col_text(st, 1), "a");
    assert_int_equal(sql_col_i64(st, 2), 1);
    assert_false(sql_col_null(st, 2));
    size_t len = 0;
    const unsigned char *p = sql_col_blob(st, 3, &len);
    assert_int_equal(len, sizeof(blob));
    assert_memory_equal(p, blob, sizeof(blob));
    sql_reset(st);

    st = sql_prepare(f->s, "SELECT NULL, NULL");
    assert_int_equal(sql_step(st), SQL_ROW);
    assert_true(sql_col_null(st, 0));
    assert_null(sql_col_text(st, 1));
    sql_reset(st);
}

static void test_statement_cache(void **state)
{
    struct fixture *f = *state;
    /* One statement per SQL address, and sql_prepare clears what the last user bound. */
    struct sql_stmt *a = sql_prepare(f->s, get_sql);
    sql_bind_text(a, 1, "zzz");
    struct sql_stmt *b = sql_prepare(f->s, get_sql);
    assert_ptr_equal(a, b);
    assert_int_equal(sql_step(b), SQL_DONE); /* ?1 is NULL now: no row */
    sql_reset(b);
    /* Another address, even with the same text, is another statement. */
    static const char other[] = "SELECT id, k, n, b FROM t WHERE k = ?1";
    assert_ptr_not_equal(sql_prepare(f->s, other), a);
    /* A statement that does not parse is refused with the reason. */
    assert_null(sql_prepare(f->s, "SELEC nothing"));
    assert_non_null(strstr(store_errmsg(f->s), "prepare: "));
}

static void test_savepoint_undo_keeps_the_failure(void **state)
{
    struct fixture *f = *state;
    int64_t id = 0;
    assert_int_equal(store_sp_begin(f->s, "outer_test"), STORE_OK);
    assert_int_equal(insert(f->s, insert_sql, "kept", 1, &id), STORE_OK);
    assert_int_equal(store_sp_begin(f->s, "inner_test"), STORE_OK);
    assert_int_equal(insert(f->s, insert_sql, "dropped", 2, &id), STORE_OK);
    assert_int_equal(insert(f->s, insert_sql, "kept", 3, &id), STORE_EXISTS);
    char why[512];
    snprintf(why, sizeof(why), "%s", store_errmsg(f->s));
    assert_int_equal(store_sp_undo(f->s, "inner_test"), STORE_OK);
    assert_string_equal(store_errmsg(f->s), why);
    assert_int_equal(store_sp_release(f->s, "outer_test"), STORE_OK);
    struct sql_stmt *st = sql_prepare(f->s, "SELECT count(*) FROM t");
    assert_int_equal(sql_step(st), SQL_ROW);
    assert_int_equal(sql_col_i64(st, 0), 1);
    sql_reset(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_returning_id_is_the_new_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_returning_nothing_inserted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_bind_is_not_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_and_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_savepoint_undo_keeps_the_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
