/*
 * store_fixture.h - what the unit tests of the store's modules share: the database of one test on
 * either backend, opening it and failing the test with the store's own message when that does not
 * work, a plain query beside the store ("what is in the database"), and running a file's tests on
 * both backends. Include after <cmocka.h> and "storage/store.h".
 *
 * STORE_TEST_RUN(tests) runs the group on SQLite, then, when POSTERN_TEST_PG names a server
 * (tests/unit/pg_fixture.h; CMake gives it to every test that includes this file), the same
 * functions again on PostgreSQL, each test on a fresh database of its own made by
 * store_test_db_new and dropped by store_test_db_drop. A test of something only SQLite has (its
 * files, pragmas, migrations from old SQLite versions, the read pool) starts with
 * STORE_TEST_SQLITE_ONLY, which skips it on the PostgreSQL run and says why.
 */
#ifndef POSTERN_TEST_STORE_FIXTURE_H
#define POSTERN_TEST_STORE_FIXTURE_H

#include <ctype.h>
#include <errno.h>
#include <sqlite3.h>

#include "pg_fixture.h"

/* The group now running is the PostgreSQL one. */
static bool store_test_on_pg;
/* The PostgreSQL database of the running test; name "" when none. */
static struct pg_test_db store_test_pgdb;

/* Opens (creating and migrating) the database at path, or fails the running test. */
static inline struct store *open_ok(const char *path)
{
    char err[512] = "";
    struct store *s = NULL;
    if (store_open(path, &s, err, sizeof(err)) != STORE_OK)
        fail_msg("store_open: %s", err);
    return s;
}

/* The database of the running test into path: the file name in dir on SQLite, a new empty
 * PostgreSQL database (its connection string) on the PostgreSQL run. */
static inline void store_test_db_new(char *path, size_t len, const char *dir, const char *file)
{
    if (!store_test_on_pg) {
        if ((size_t)snprintf(path, len, "%s/%s", dir, file) >= len)
            fail_msg("database path too long");
        return;
    }
    pg_test_db_new(&store_test_pgdb, "store");
    if ((size_t)snprintf(path, len, "%s", store_test_pgdb.conninfo) >= len)
        fail_msg("connection string too long for the fixture's path");
}

/* Drops the running test's PostgreSQL database (closing what is still connected to it). */
static inline void store_test_db_drop(void)
{
    if (store_test_on_pg && store_test_pgdb.name[0] != '\0') {
        pg_test_db_drop(&store_test_pgdb);
        store_test_pgdb.name[0] = '\0';
    }
}

/* Makes the running test's PostgreSQL database empty again: dropped and created under its name,
 * as removing a SQLite file and opening it again does. */
static inline void store_test_db_recreate(void)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", store_test_pgdb.name);
    pg_test_admin(sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", store_test_pgdb.name);
    pg_test_admin(sql);
}

/* Removes a SQLite database's files (nothing on PostgreSQL: store_test_db_drop does that). */
static inline void store_test_db_remove_files(const char *path)
{
    if (store_test_on_pg)
        return;
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char p[1100];
        snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
        if (unlink(p) != 0 && errno != ENOENT)
            fail_msg("unlink %s: %s", p, strerror(errno));
    }
}

#define STORE_TEST_SQLITE_ONLY(why)                                                                \
    do {                                                                                           \
        if (store_test_on_pg) {                                                                    \
            print_message("[  SKIPPED ] on PostgreSQL: %s\n", why);                                \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* The first column of the first row of sql (0 when NULL or no row), through a connection of its
 * own: what is committed in the database, apart from the store under test. */
static inline long long store_test_query_i64(const char *path, const char *sql)
{
    long long v = 0;
    if (store_test_on_pg) {
        PGconn *pq = PQconnectdb(path);
        if (PQstatus(pq) != CONNECTION_OK) {
            PQfinish(pq);
            fail_msg("connect: %s", path);
        }
        PGresult *res = PQexec(pq, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            char why[512];
            snprintf(why, sizeof(why), "%s", PQerrorMessage(pq));
            PQclear(res);
            PQfinish(pq);
            fail_msg("%s: %s", sql, why);
        }
        if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
            const char *text = PQgetvalue(res, 0, 0);
            /* A boolean reads as SQLite's comparisons do. */
            v = strcmp(text, "t") == 0 ? 1 : strcmp(text, "f") == 0 ? 0 : strtoll(text, NULL, 10);
        }
        PQclear(res);
        PQfinish(pq);
        return v;
    }
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        fail_msg("open %s", path);
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        char why[512];
        snprintf(why, sizeof(why), "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        fail_msg("%s: %s", sql, why);
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The sequences of the tables a test fills by hand with explicit ids, moved past them. */
static const char store_test_pg_sequences[] =
    "SELECT setval(pg_get_serial_sequence(t, 'id'), n, false) FROM (VALUES"
    " ('messages', (SELECT coalesce(max(id), 0) + 1 FROM messages)),"
    " ('mailbox', (SELECT coalesce(max(id), 0) + 1 FROM mailbox)),"
    " ('queue', (SELECT coalesce(max(id), 0) + 1 FROM queue)),"
    " ('users', (SELECT coalesce(max(id), 0) + 1 FROM users)),"
    " ('domains', (SELECT coalesce(max(id), 0) + 1 FROM domains))) AS v(t, n)";

/*
 * Runs SQL a test writes by hand (store_exec_for_tests) on either backend: on PostgreSQL a blob
 * literal x'4142' becomes the bytea literal '\x4142', and after success the id sequences are
 * moved past the explicit ids the SQL inserted, so that the store's own inserts after it do not
 * collide with them (SQLite takes max(id) + 1 by itself).
 */
static inline int store_test_exec(struct store *s, const char *sql)
{
    if (!store_test_on_pg)
        return store_exec_for_tests(s, sql);
    size_t n = strlen(sql);
    char *pg = malloc(2 * n + 1);
    if (pg == NULL)
        fail_msg("out of memory");
    size_t k = 0;
    bool quoted = false; /* inside a string literal */
    for (size_t i = 0; i < n; i++) {
        bool word_before = i > 0 && (isalnum((unsigned char)sql[i - 1]) || sql[i - 1] == '_');
        if (sql[i] == '\'')
            quoted = !quoted;
        if (!quoted && (sql[i] == 'x' || sql[i] == 'X') && sql[i + 1] == '\'' && !word_before) {
            pg[k++] = '\'';
            pg[k++] = '\\';
            pg[k++] = 'x';
            i++; /* the quote was written, and opens the literal */
            quoted = true;
            continue;
        }
        pg[k++] = sql[i];
    }
    pg[k] = '\0';
    int rc = store_exec_for_tests(s, pg);
    if (rc != STORE_OK)
        print_message("store_test_exec: %s\n", store_errmsg(s));
    free(pg);
    if (rc == STORE_OK && strstr(sql, "INSERT") != NULL &&
        store_exec_for_tests(s, store_test_pg_sequences) != STORE_OK)
        fail_msg("move the sequences: %s", store_errmsg(s));
    return rc;
}

/* The first column of the first row of sql as bytes (a text or a blob), malloc'd with a NUL
 * after them, their count in *len_out (when not NULL); through a connection of its own. */
static inline char *store_test_query_blob(const char *path, const char *sql, size_t *len_out)
{
    char *out = NULL;
    size_t n = 0;
    if (store_test_on_pg) {
        PGconn *pq = PQconnectdb(path);
        if (PQstatus(pq) != CONNECTION_OK) {
            PQfinish(pq);
            fail_msg("connect: %s", path);
        }
        PGresult *res = PQexec(pq, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
            char why[512];
            snprintf(why, sizeof(why), "%s", PQerrorMessage(pq));
            PQclear(res);
            PQfinish(pq);
            fail_msg("%s: no row (%s)", sql, why);
        }
        /* A bytea comes as text in hex; anything else as its text (NULL as ""). */
        const char *v = PQgetvalue(res, 0, 0);
        unsigned char *bytes = NULL;
        if (PQftype(res, 0) == 17 /* bytea */ && !PQgetisnull(res, 0, 0)) {
            bytes = PQunescapeBytea((const unsigned char *)v, &n);
            if (bytes == NULL)
                fail_msg("out of memory");
            v = (const char *)bytes;
        } else {
            n = (size_t)PQgetlength(res, 0, 0);
        }
        out = malloc(n + 1);
        if (out == NULL)
            fail_msg("out of memory");
        memcpy(out, v, n);
        PQfreemem(bytes);
        PQclear(res);
        PQfinish(pq);
    } else {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
            char why[512];
            snprintf(why, sizeof(why), "%s", sqlite3_errmsg(db));
            sqlite3_finalize(st);
            sqlite3_close(db);
            fail_msg("%s: no row (%s)", sql, why);
        }
        n = (size_t)sqlite3_column_bytes(st, 0);
        const void *p = sqlite3_column_blob(st, 0);
        out = malloc(n + 1);
        if (out == NULL)
            fail_msg("out of memory");
        if (n > 0)
            memcpy(out, p, n);
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    out[n] = '\0';
    if (len_out != NULL)
        *len_out = n;
    return out;
}

/* A test's place: a new temporary folder /tmp/postern-TAG-XXXXXX into dir, and the test's
 * database into path (a file in that folder on SQLite, a fresh database on PostgreSQL). */
static inline void store_test_place_new(char *dir, size_t dirlen, const char *tag, char *path,
                                        size_t pathlen)
{
    if ((size_t)snprintf(dir, dirlen, "/tmp/postern-%s-XXXXXX", tag) >= dirlen)
        fail_msg("folder name too long");
    assert_non_null(mkdtemp(dir));
    store_test_db_new(path, pathlen, dir, "t.db");
}

/* Undoes store_test_place_new once every store on path is closed: the database's files or the
 * PostgreSQL database, then the folder. */
static inline void store_test_place_free(const char *dir, const char *path)
{
    store_test_db_remove_files(path);
    store_test_db_drop();
    assert_int_equal(rmdir(dir), 0);
}

/* Adds the local domain example.test and the user address in it (a placeholder hash, never
 * verified here); the user's id. */
static inline int64_t store_test_user(struct store *s, const char *address)
{
    assert_int_equal(store_domain_add(s, "example.test"), STORE_OK);
    assert_int_equal(store_user_add(s, address, "example.test", "not-a-hash"), STORE_OK);
    int64_t id = 0;
    char hash[128];
    assert_int_equal(store_user_get(s, address, &id, hash, sizeof(hash)), STORE_OK);
    return id;
}

/* Runs tests on SQLite, then on PostgreSQL when there is a server; the failures of both. */
static inline int store_test_run(const struct CMUnitTest *tests, size_t n)
{
    store_test_on_pg = false;
    int failed = _cmocka_run_group_tests("sqlite", tests, n, NULL, NULL);
    const char *pg = getenv("POSTERN_TEST_PG");
    if (pg == NULL || pg[0] == '\0') {
        print_message("[  SKIPPED ] the PostgreSQL run: POSTERN_TEST_PG unset (install "
                      "postgresql-15 with scripts/bootstrap and re-run cmake)\n");
        return failed;
    }
    store_test_on_pg = true;
    failed += _cmocka_run_group_tests("postgresql", tests, n, NULL, NULL);
    store_test_on_pg = false;
    return failed;
}
#define STORE_TEST_RUN(tests) store_test_run(tests, sizeof(tests) / sizeof((tests)[0]))

#endif
