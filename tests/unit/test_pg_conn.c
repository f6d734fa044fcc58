/*
 * test_pg_conn.c - storage/postgres/pg_conn.c and pg_stmt.c: the ?N rewrite, the integer parser
 * and the connection-string test without a server; then, on the throwaway server of
 * tests/unit/pg_fixture.h, connecting, a parameterised round trip of every type, the SQLSTATE
 * mapping, savepoints, reconnecting after the backend is terminated, and LISTEN/NOTIFY between
 * two connections.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "pg_fixture.h"
#include "pg_conn_fixture.h"
#include "storage/postgres/pg_conn.h"

/* ---- without a server ---- */

static void test_rewrite(void **state)
{
    static const struct {
        const char *in, *out;
        int nparams;
    } ok[] = {
        {"SELECT 1", "SELECT 1", 0},
        {"SELECT ?1", "SELECT $1", 1},
        {"a = ?2 AND b = ?10 AND c = ?2", "a = $2 AND b = $10 AND c = $2", 10},
        {"x = '?1' AND y = ?1", "x = '?1' AND y = $1", 1},
        {"x = 'it''s ?3' OR ?1", "x = 'it''s ?3' OR $1", 1},
        {"SELECT \"odd?1\" FROM t WHERE k = ?1", "SELECT \"odd?1\" FROM t WHERE k = $1", 1},
        {"-- ?5 not a parameter\n?2", "-- ?5 not a parameter\n$2", 2},
        {"/* ?1 /* ?2 */ ?3 */ ?4", "/* ?1 /* ?2 */ ?3 */ $4", 4},
        {"E'\\'?7' || ?1", "E'\\'?7' || $1", 1},
        {"?32", "$32", 32},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *out = NULL;
        int n = -1;
        char why[160] = "";
        int rc = pg_sql_rewrite(ok[i].in, &out, &n, why, sizeof(why));
        if (rc != STORE_OK)
            fail_msg("%s: got failure %s", ok[i].in, why);
        if (strcmp(out, ok[i].out) != 0 || n != ok[i].nparams)
            fail_msg("%s: got %s (%d), want %s (%d)", ok[i].in, out, n, ok[i].out, ok[i].nparams);
        free(out);
    }
    static const char *const bad[] = {
        "SELECT ?",
        "SELECT ? 1",
        "SELECT ?0",
        "SELECT ?33",
        "SELECT ?99999999999",
        "SELECT 'open",
        "SELECT \"open",
        "SELECT 1 /* open /* */",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *out = NULL;
        int n = 0;
        char why[160] = "";
        if (pg_sql_rewrite(bad[i], &out, &n, why, sizeof(why)) != STORE_ERR)
            fail_msg("%s: accepted as %s", bad[i], out);
        assert_null(out);
        assert_true(why[0] != '\0');
    }
}

static void test_parse_i64(void **state)
{
    static const struct {
        const char *text;
        int rc;
        int64_t v;
    } cases[] = {
        {"0", STORE_OK, 0},
        {"42", STORE_OK, 42},
        {"+5", STORE_OK, 5},
        {"-9223372036854775808", STORE_OK, INT64_MIN},
        {"9223372036854775807", STORE_OK, INT64_MAX},
        {"9223372036854775808", STORE_ERR, 0},
        {"-9223372036854775809", STORE_ERR, 0},
        {"12.50", STORE_OK, 12},
        {"-3.9", STORE_OK, -3},
        {"t", STORE_ERR, 0}, /* booleans are told by their column's type */
        {"f", STORE_ERR, 0},
        {"", STORE_ERR, 0},
        {" 1", STORE_ERR, 0},
        {"1 ", STORE_ERR, 0},
        {"1x", STORE_ERR, 0},
        {"-", STORE_ERR, 0},
        {"true", STORE_ERR, 0},
        {"\\x00", STORE_ERR, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = 99;
        int rc = pg_parse_i64(cases[i].text, &v);
        if (rc != cases[i].rc || v != cases[i].v)
            fail_msg("\"%s\": got %d %lld, want %d %lld", cases[i].text, rc, (long long)v,
                     cases[i].rc, (long long)cases[i].v);
    }
    int64_t v = 1;
    assert_int_equal(pg_parse_i64(NULL, &v), STORE_ERR);
}

static void test_conninfo_is_pg(void **state)
{
    static const struct {
        const char *s;
        bool pg;
    } cases[] = {
        {"postgresql://postern@db1/mail", true},
        {"postgres://db1", true},
        {"postgresql:///mail?host=/run/postgresql", true},
        {"host=db1 dbname=mail", true},
        {"dbname = mail", true},
        {"  service=mail", true},
        {"/var/lib/postern/postern.db", false},
        {"postern.db", false},
        {"./host=x.db", false},
        {"data/postern.db", false},
        {"", false},
        {"=x", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (pg_conninfo_is_pg(cases[i].s) != cases[i].pg)
            fail_msg("\"%s\": want %s", cases[i].s, cases[i].pg ? "PostgreSQL" : "SQLite");
    assert_false(pg_conninfo_is_pg(NULL));
}

/* ---- on the server ---- */

/* The first column of the one row sql returns, as an integer. */
static int64_t scalar(struct pg_conn *c, const char *sql)
{
    struct pg_stmt *st = pg_prepare(c, sql);
    if (st == NULL)
        fail_msg("prepare %s: %s", sql, pg_conn_errmsg(c));
    int rc = pg_step(st);
    if (rc != PG_ROW)
        fail_msg("%s: step %d: %s", sql, rc, pg_conn_errmsg(c));
    int64_t v = 0;
    if (pg_col_i64_checked(st, 0, &v) != STORE_OK)
        fail_msg("%s: %s", sql, pg_conn_errmsg(c));
    pg_reset(st);
    return v;
}

static void test_connect(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "conn");
    struct pg_conn *c = open_ok(db.conninfo);
    assert_true(pg_conn_server_version(c) >= PG_MIN_SERVER_VERSION);
    assert_false(pg_conn_is_lost(c));
    assert_false(pg_conn_in_transaction(c));
    assert_true(pg_conn_backend_pid(c) > 0);
    /* The session is set up as pg_conn.h promises. */
    assert_int_equal(scalar(c, "SELECT current_setting('synchronous_commit') = 'on'"), 1);
    assert_int_equal(scalar(c, "SELECT current_setting('application_name') = 'postern'"), 1);
    assert_int_equal(scalar(c, "SELECT current_setting('statement_timeout')::interval"
                               " = interval '60000 milliseconds'"),
                     1);
    assert_int_equal(scalar(c, "SELECT current_setting('client_encoding') = 'UTF8'"), 1);
    assert_int_equal(scalar(c, "SELECT current_database() LIKE 'postern_conn_%'"), 1);
    pg_conn_close(&c);
    assert_null(c);

    /* The same server through a URI with the socket folder as a query parameter. */
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(db.conninfo, &err);
    assert_non_null(opts);
    const char *host = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
    if (host != NULL && host[0] == '/') {
        char uri[1200];
        snprintf(uri, sizeof(uri), "postgresql://postgres@/%s?host=%s", db.name, host);
        assert_true(pg_conninfo_is_pg(uri));
        c = open_ok(uri);
        assert_int_equal(scalar(c, "SELECT current_database() LIKE 'postern_conn_%'"), 1);
        pg_conn_close(&c);
    }
    PQconninfoFree(opts);

    /* No server there: a failure with a reason, and nothing to close. */
    char why[512] = "";
    c = (struct pg_conn *)&why;
    assert_int_equal(
        pg_conn_open("host=/nonexistent/postern-test port=5432 dbname=x", &c, why, sizeof(why)),
        STORE_ERR);
    assert_null(c);
    assert_non_null(strstr(why, "cannot connect"));
    pg_test_db_drop(&db);
}

static void test_round_trip(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "trip");
    struct pg_conn *c = open_ok(db.conninfo);
    exec_ok(c, "CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
               " i BIGINT, s TEXT, b BYTEA, n INTEGER)");

    unsigned char blob[300];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (unsigned char)(i * 7); /* every octet value, NUL and 0xff included */
    static const char utf8[] = "h\xc3\xa9llo \xe2\x9c\x89 'quoted' \\ back";
    static const char *const ins = "INSERT INTO t (i, s, b, n) VALUES (?1, ?2, ?3, ?4)";
    struct {
        bool i_null, s_null, b_null;
        int64_t i;
        const char *s;
        const void *b;
        size_t blen;
    } rows[] = {
        {false, false, false, INT64_MIN, utf8, blob, sizeof(blob)},
        {false, false, false, INT64_MAX, "", "", 0},
        {true, true, true, 0, NULL, NULL, 0},
        {false, false, false, -1, "x", "\0", 1},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        struct pg_stmt *st = pg_prepare(c, ins);
        assert_non_null(st);
        assert_int_equal(rows[r].i_null ? pg_bind_null(st, 1) : pg_bind_i64(st, 1, rows[r].i),
                         STORE_OK);
        assert_int_equal(pg_bind_text(st, 2, rows[r].s, -1), STORE_OK);
        assert_int_equal(rows[r].b_null ? pg_bind_null(st, 3)
                                        : pg_bind_blob(st, 3, rows[r].b, rows[r].blen),
                         STORE_OK);
        /* ?4 never bound: NULL. */
        int rc = pg_step(st);
        if (rc != PG_DONE)
            fail_msg("insert row %zu: %d %s", r, rc, pg_conn_errmsg(c));
        assert_int_equal(pg_conn_changes(c), 1);
        pg_reset(st);
    }
    /* Text given by length is cut there; text with a NUL is refused before it is sent. */
    struct pg_stmt *st = pg_prepare(c, ins);
    assert_int_equal(pg_bind_i64(st, 1, 7), STORE_OK);
    assert_int_equal(pg_bind_text(st, 2, "abcdef", 3), STORE_OK);
    assert_int_equal(pg_step(st), PG_DONE);
    pg_reset(st);
    st = pg_prepare(c, ins);
    assert_int_equal(pg_bind_text(st, 2, "ab\0cd", 5), STORE_ERR);
    assert_int_equal(pg_bind_i64(st, 5, 1), STORE_ERR); /* no ?5 */
    assert_int_equal(pg_bind_i64(st, 0, 1), STORE_ERR);

    static const char *const sel = "SELECT i, s, b, n, i IS NULL FROM t ORDER BY id";
    st = pg_prepare(c, sel);
    assert_non_null(st);
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        int rc = pg_step(st);
        if (rc != PG_ROW)
            fail_msg("select row %zu: %d %s", r, rc, pg_conn_errmsg(c));
        assert_int_equal(pg_col_count(st), 5);
        assert_int_equal(pg_col_is_null(st, 0), rows[r].i_null);
        assert_true(pg_col_i64(st, 0) == rows[r].i);
        assert_int_equal(pg_col_i64(st, 4), rows[r].i_null); /* a boolean */
        if (rows[r].s_null)
            assert_null(pg_col_text(st, 1));
        else
            assert_string_equal(pg_col_text(st, 1), rows[r].s);
        size_t len = 99;
        const void *b = pg_col_blob(st, 2, &len);
        if (rows[r].b_null) {
            assert_null(b);
            assert_true(pg_col_is_null(st, 2));
        } else {
            assert_non_null(b);
            assert_false(pg_col_is_null(st, 2));
            assert_int_equal(len, rows[r].blen);
            if (len > 0)
                assert_memory_equal(b, rows[r].b, len);
        }
        assert_true(pg_col_is_null(st, 3));
        /* While this statement's rows are being read, another statement runs. */
        assert_int_equal(scalar(c, "SELECT count(*) FROM t"), 5);
    }
    assert_int_equal(pg_step(st), PG_ROW); /* the row bound by length */
    assert_string_equal(pg_col_text(st, 1), "abc");
    /* A text is not an integer: 0, and the checked read says so. */
    int64_t v = 5;
    assert_int_equal(pg_col_i64_checked(st, 1, &v), STORE_ERR);
    assert_int_equal(v, 0);
    assert_int_equal(pg_step(st), PG_DONE);
    assert_int_equal(pg_step(st), PG_DONE);
    pg_reset(st);

    /* An UPDATE's count of changed rows; a SELECT leaves it alone. */
    assert_int_equal(pg_exec(c, "UPDATE t SET n = 1 WHERE i < 0"), STORE_OK);
    assert_int_equal(pg_conn_changes(c), 2);
    scalar(c, "SELECT count(*) FROM t");
    assert_int_equal(pg_conn_changes(c), 2);

    /* A statement first run with a text, then with a blob holding NUL bytes: octet_length has
     * text and bytea variants, and the blob is only read right once the statement is prepared
     * again with the parameter declared bytea. */
    static const char *const len_sql = "SELECT octet_length(?1)";
    st = pg_prepare(c, len_sql);
    assert_int_equal(pg_bind_text(st, 1, "abc", -1), STORE_OK);
    assert_int_equal(pg_step(st), PG_ROW);
    assert_int_equal(pg_col_i64(st, 0), 3);
    st = pg_prepare(c, len_sql);
    assert_int_equal(pg_bind_blob(st, 1, "\0\xff\0\x80\0", 5), STORE_OK);
    int rc = pg_step(st);
    if (rc != PG_ROW)
        fail_msg("octet_length of a blob: %d %s", rc, pg_conn_errmsg(c));
    assert_int_equal(pg_col_i64(st, 0), 5);
    pg_reset(st);

    /* A syntax error is a failure with the server's reason and SQLSTATE. */
    st = pg_prepare(c, "SELEC ?1");
    assert_non_null(st);
    assert_int_equal(pg_step(st), STORE_ERR);
    assert_string_equal(pg_conn_sqlstate(c), "42601");
    assert_non_null(strstr(pg_conn_errmsg(c), "syntax"));
    assert_null(pg_prepare(c, "SELECT ?"));

    pg_conn_close(&c);
    pg_test_db_drop(&db);
}

static void test_errors_and_savepoints(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "sp");
    struct pg_conn *c = open_ok(db.conninfo);
    exec_ok(c, "CREATE TABLE p (k TEXT PRIMARY KEY);"
               " CREATE TABLE ch (k TEXT REFERENCES p(k) ON DELETE RESTRICT)");
    static const char *const ins = "INSERT INTO p (k) VALUES (?1)";
    struct pg_stmt *st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "a", -1);
    assert_int_equal(pg_step(st), PG_DONE);
    /* The same key again: STORE_EXISTS, and outside a transaction the connection goes on. */
    st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "a", -1);
    assert_int_equal(pg_step(st), STORE_EXISTS);
    assert_string_equal(pg_conn_sqlstate(c), "23505");
    assert_false(pg_conn_is_lost(c));
    /* A foreign key violation reads as SQLite's RESTRICT does: STORE_IN_USE. */
    assert_int_equal(pg_exec(c, "INSERT INTO ch VALUES ('nope')"), STORE_IN_USE);
    exec_ok(c, "INSERT INTO ch VALUES ('a')");
    assert_int_equal(pg_exec(c, "DELETE FROM p WHERE k = 'a'"), STORE_IN_USE);

    /* A job's failure undone to its savepoint leaves the batch's other work to commit. */
    exec_ok(c, "BEGIN");
    assert_true(pg_conn_in_transaction(c));
    st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "b", -1);
    assert_int_equal(pg_step(st), PG_DONE);
    exec_ok(c, "SAVEPOINT job");
    st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "c", -1);
    assert_int_equal(pg_step(st), PG_DONE);
    st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "a", -1);
    assert_int_equal(pg_step(st), STORE_EXISTS);
    /* The failed transaction takes nothing until it is rolled back to the savepoint. */
    assert_int_equal(pg_exec(c, "SELECT 1"), STORE_ERR);
    assert_string_equal(pg_conn_sqlstate(c), "25P02");
    exec_ok(c, "ROLLBACK TO job");
    exec_ok(c, "RELEASE job");
    st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "d", -1);
    assert_int_equal(pg_step(st), PG_DONE);
    exec_ok(c, "COMMIT");
    assert_false(pg_conn_in_transaction(c));
    /* b and d committed; c went with the savepoint. */
    assert_int_equal(scalar(c, "SELECT count(*) FROM p WHERE k IN ('b', 'd')"), 2);
    assert_int_equal(scalar(c, "SELECT count(*) FROM p WHERE k = 'c'"), 0);
    assert_int_equal(scalar(c, "SELECT count(*) FROM p"), 3);

    /* A statement cancelled by the server (as the statement timeout does) is a failure, not a
     * lost connection. */
    exec_ok(c, "SET statement_timeout = 50");
    assert_int_equal(pg_exec(c, "SELECT pg_sleep(5)"), STORE_ERR);
    assert_string_equal(pg_conn_sqlstate(c), "57014");
    assert_false(pg_conn_is_lost(c));
    pg_conn_close(&c);
    pg_test_db_drop(&db);
}

/* Rows of p whose k is key, seen from another connection: what is committed. */
static int64_t committed(struct pg_conn *other, const char *key)
{
    static const char *const sql = "SELECT count(*) FROM p WHERE k = ?1";
    struct pg_stmt *st = pg_prepare(other, sql);
    pg_bind_text(st, 1, key, -1);
    assert_int_equal(pg_step(st), PG_ROW);
    int64_t n = pg_col_i64(st, 0);
    pg_reset(st);
    return n;
}

static void insert_p(struct pg_conn *c, const char *key, int want)
{
    static const char *const ins = "INSERT INTO p (k) VALUES (?1)";
    struct pg_stmt *st = pg_prepare(c, ins);
    pg_bind_text(st, 1, key, -1);
    int rc = pg_step(st);
    if (rc != want)
        fail_msg("insert %s: got %d, want %d (%s)", key, rc, want, pg_conn_errmsg(c));
    pg_reset(st);
}

static void test_savepoints_as_sqlite(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "spsql");
    struct pg_conn *c = open_ok(db.conninfo);
    struct pg_conn *other = open_ok(db.conninfo);
    exec_ok(c, "CREATE TABLE p (k TEXT PRIMARY KEY)");

    /* Outside a transaction a savepoint opens one, and its release commits it. */
    assert_int_equal(pg_sp_begin(c, "mailbox"), STORE_OK);
    assert_true(pg_conn_in_transaction(c));
    insert_p(c, "a", PG_DONE);
    assert_int_equal(committed(other, "a"), 0);
    assert_int_equal(pg_sp_release(c, "mailbox"), STORE_OK);
    assert_false(pg_conn_in_transaction(c));
    assert_int_equal(committed(other, "a"), 1);

    /* Undone, it rolls that transaction back, keeping the failure's reason. */
    assert_int_equal(pg_sp_begin(c, "mailbox"), STORE_OK);
    insert_p(c, "b", PG_DONE);
    insert_p(c, "a", STORE_EXISTS);
    char why[PG_ERRMSG_BYTES];
    snprintf(why, sizeof(why), "%s", pg_conn_errmsg(c));
    assert_int_equal(pg_sp_undo(c, "mailbox"), STORE_OK);
    assert_string_equal(pg_conn_errmsg(c), why);
    assert_false(pg_conn_in_transaction(c));
    assert_int_equal(committed(other, "b"), 0);

    /* Inside the caller's transaction (the writer's batch and job), an inner savepoint undone
     * leaves the rest, and nothing commits before the caller's COMMIT. */
    exec_ok(c, "BEGIN");
    assert_int_equal(pg_sp_begin(c, "job"), STORE_OK);
    insert_p(c, "c", PG_DONE);
    assert_int_equal(pg_sp_begin(c, "queue"), STORE_OK);
    insert_p(c, "d", PG_DONE);
    insert_p(c, "a", STORE_EXISTS);
    assert_int_equal(pg_sp_undo(c, "queue"), STORE_OK);
    assert_int_equal(pg_sp_release(c, "job"), STORE_OK);
    assert_true(pg_conn_in_transaction(c));
    assert_int_equal(committed(other, "c"), 0);
    exec_ok(c, "COMMIT");
    assert_int_equal(committed(other, "c"), 1);
    assert_int_equal(committed(other, "d"), 0);
    assert_int_equal(pg_sp_release(c, "job"), STORE_ERR); /* gone with its transaction */

    /* A COMMIT of a transaction in which a statement failed rolled back: a failure. */
    exec_ok(c, "BEGIN");
    insert_p(c, "e", PG_DONE);
    insert_p(c, "a", STORE_EXISTS);
    assert_int_equal(pg_exec(c, "COMMIT"), STORE_ERR);
    assert_non_null(strstr(pg_conn_errmsg(c), "rolled it back"));
    assert_false(pg_conn_in_transaction(c));
    assert_int_equal(committed(other, "e"), 0);
    exec_ok(c, "BEGIN");
    exec_ok(c, "ROLLBACK");

    /* With the connection gone there is nothing to undo to. */
    assert_int_equal(pg_sp_begin(c, "job"), STORE_OK);
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d, 10000)", pg_conn_backend_pid(c));
    exec_ok(other, sql);
    insert_p(c, "f", STORE_ERR);
    assert_true(pg_conn_is_lost(c));
    assert_int_equal(pg_sp_undo(c, "job"), STORE_ERR);
    assert_int_equal(pg_conn_reconnect(c), STORE_OK);
    assert_false(pg_conn_in_transaction(c));
    assert_int_equal(committed(other, "f"), 0);

    pg_conn_close(&c);
    pg_conn_close(&other);
    pg_test_db_drop(&db);
}

static void test_bind_errors_and_changes(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "bind");
    struct pg_conn *c = open_ok(db.conninfo);
    exec_ok(c, "CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, s TEXT)");
    static const char *const ins = "INSERT INTO t (s) VALUES (?1) RETURNING id";
    /* A bind that failed makes the step fail too, with the bind's reason, even when the caller
     * did not look at what the bind returned. */
    struct pg_stmt *st = pg_prepare(c, ins);
    (void)pg_bind_text(st, 2, "x", -1);
    assert_int_equal(pg_step(st), STORE_ERR);
    assert_non_null(strstr(pg_conn_errmsg(c), "no parameter ?2"));
    st = pg_prepare(c, ins);
    (void)pg_bind_text(st, 1, "a\0b", 3);
    assert_int_equal(pg_step(st), STORE_ERR);
    assert_non_null(strstr(pg_conn_errmsg(c), "NUL"));
    assert_int_equal(scalar(c, "SELECT count(*) FROM t"), 0);
    /* pg_prepare starts over. An INSERT ... RETURNING gives the new id as a row. */
    st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "a", -1);
    assert_int_equal(pg_step(st), PG_ROW);
    assert_int_equal(pg_col_i64(st, 0), 1);
    assert_int_equal(pg_step(st), PG_DONE);
    assert_int_equal(pg_changes(st), 1);
    st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "b", -1);
    assert_int_equal(pg_step(st), PG_ROW);
    assert_int_equal(pg_col_i64(st, 0), 2);
    pg_reset(st);

    static const char *const upd = "UPDATE t SET s = s || ?1";
    st = pg_prepare(c, upd);
    pg_bind_text(st, 1, "!", -1);
    assert_int_equal(pg_step(st), PG_DONE);
    assert_int_equal(pg_changes(st), 2);
    static const char *const sel = "SELECT s FROM t ORDER BY id";
    struct pg_stmt *q = pg_prepare(c, sel);
    assert_int_equal(pg_step(q), PG_ROW);
    assert_string_equal(pg_col_text(q, 0), "a!");
    assert_int_equal(pg_changes(q), 0);
    /* Each statement keeps its own count. */
    assert_int_equal(pg_changes(st), 2);
    pg_reset(q);
    pg_reset(st);
    pg_conn_close(&c);
    pg_test_db_drop(&db);
}

/* Waits (at most 10 s) for a notification on c. */
static void wait_notification(struct pg_conn *c, struct pg_notification *n)
{
    for (int i = 0; i < 100; i++) {
        int rc = pg_notify_take(c, n);
        if (rc == 1)
            return;
        if (rc != 0)
            fail_msg("pg_notify_take: %s", pg_conn_errmsg(c));
        struct pollfd pfd = {.fd = pg_conn_socket(c), .events = POLLIN};
        assert_true(pfd.fd >= 0);
        if (poll(&pfd, 1, 100) < 0)
            fail_msg("poll: %s", strerror(errno));
    }
    fail_msg("no notification within 10 s");
}

static void test_listen_notify(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "notify");
    struct pg_conn *a = open_ok(db.conninfo);
    struct pg_conn *b = open_ok(db.conninfo);
    struct pg_notification n;
    assert_int_equal(pg_listen(a, "queue_flush"), STORE_OK);
    assert_int_equal(pg_listen(a, "queue_flush"), STORE_OK); /* once is remembered */
    assert_int_equal(pg_notify_take(a, &n), 0);
    assert_int_equal(pg_notify(b, "queue_flush", "node-b all"), STORE_OK);
    wait_notification(a, &n);
    assert_string_equal(n.channel, "queue_flush");
    assert_string_equal(n.payload, "node-b all");
    assert_int_equal(n.sender_pid, pg_conn_backend_pid(b));
    assert_int_equal(pg_notify_take(a, &n), 0);

    /* A notification sent in a transaction arrives with its COMMIT. */
    exec_ok(b, "BEGIN");
    assert_int_equal(pg_notify(b, "queue_flush", "after commit"), STORE_OK);
    exec_ok(b, "COMMIT");
    wait_notification(a, &n);
    assert_string_equal(n.payload, "after commit");

    /* Channel names are identifiers, quoted as such. */
    assert_int_equal(pg_listen(a, "Mixed \"Case\""), STORE_OK);
    assert_int_equal(pg_notify(b, "Mixed \"Case\"", ""), STORE_OK);
    wait_notification(a, &n);
    assert_string_equal(n.channel, "Mixed \"Case\"");
    assert_string_equal(n.payload, "");
    char long_name[80];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(pg_listen(a, long_name), STORE_ERR);

    pg_conn_close(&a);
    pg_conn_close(&b);
    pg_test_db_drop(&db);
}

static void test_reconnect(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "reconn");
    struct pg_conn *a = open_ok(db.conninfo);
    struct pg_conn *b = open_ok(db.conninfo);
    exec_ok(a, "CREATE TABLE t (k BIGINT PRIMARY KEY)");
    static const char *const ins = "INSERT INTO t (k) VALUES (?1)";
    struct pg_stmt *st = pg_prepare(a, ins);
    pg_bind_i64(st, 1, 1);
    assert_int_equal(pg_step(st), PG_DONE); /* prepared on the server now */
    assert_int_equal(pg_listen(a, "windows"), STORE_OK);
    int old_pid = pg_conn_backend_pid(a);

    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d, 10000)", old_pid);
    assert_int_equal(scalar(b, sql), 1);

    /* The next statement finds the connection gone, says so, and so does every call after it
     * until the caller reconnects. */
    st = pg_prepare(a, ins);
    pg_bind_i64(st, 1, 2);
    assert_int_equal(pg_step(st), STORE_ERR);
    assert_true(pg_conn_is_lost(a));
    assert_non_null(strstr(pg_conn_errmsg(a), "connection lost"));
    assert_int_equal(pg_exec(a, "SELECT 1"), STORE_ERR);
    assert_true(pg_conn_is_lost(a));
    assert_int_equal(pg_conn_socket(a), -1);

    if (pg_conn_reconnect(a) != STORE_OK)
        fail_msg("reconnect: %s", pg_conn_errmsg(a));
    assert_false(pg_conn_is_lost(a));
    assert_true(pg_conn_backend_pid(a) != old_pid);
    assert_int_equal(scalar(a, "SELECT current_setting('synchronous_commit') = 'on'"), 1);
    /* The cached statement is prepared again in the new session. */
    st = pg_prepare(a, ins);
    pg_bind_i64(st, 1, 2);
    int rc = pg_step(st);
    if (rc != PG_DONE)
        fail_msg("insert after reconnect: %d %s", rc, pg_conn_errmsg(a));
    assert_int_equal(scalar(a, "SELECT count(*) FROM t"), 2);
    /* And it listens again. */
    assert_int_equal(pg_notify(b, "windows", "open"), STORE_OK);
    struct pg_notification n;
    wait_notification(a, &n);
    assert_string_equal(n.channel, "windows");

    pg_conn_close(&a);
    pg_conn_close(&b);
    pg_test_db_drop(&db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_parse_i64),
        cmocka_unit_test(test_conninfo_is_pg),
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_errors_and_savepoints),
        cmocka_unit_test(test_savepoints_as_sqlite),
        cmocka_unit_test(test_bind_errors_and_changes),
        cmocka_unit_test(test_listen_notify),
        cmocka_unit_test(test_reconnect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
