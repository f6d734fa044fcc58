/*
 * pg_fixture.h - what the unit tests that need a PostgreSQL server share. CMake gives every test
 * that includes this file the server of the ctest fixture pg.start (scripts/pg) in
 * POSTERN_TEST_PG, a libpq connection string to its maintenance database. Each test makes a
 * database of its own there (pg_test_db_new), so test files can run in parallel, and drops it at
 * the end. Without POSTERN_TEST_PG a test skips, saying why. Include after <cmocka.h>.
 */
#ifndef POSTERN_TEST_PG_FIXTURE_H
#define POSTERN_TEST_PG_FIXTURE_H

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pg_test_db {
    char name[64];
    char conninfo[1024]; /* the server's connection string, with dbname this database */
};

/* Skips the running test when no server was given. */
#define PG_SKIP_UNLESS_SERVER()                                                                    \
    do {                                                                                           \
        if (getenv("POSTERN_TEST_PG") == NULL || getenv("POSTERN_TEST_PG")[0] == '\0') {           \
            print_message("[  SKIPPED ] POSTERN_TEST_PG unset: no PostgreSQL server for this "     \
                          "test (install postgresql-15 with scripts/bootstrap and re-run cmake, "  \
                          "or run under scripts/pg run --)\n");                                    \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* Runs sql on conninfo's database, or fails the test; the result (PQclear it). */
static inline PGresult *pg_test_exec(const char *conninfo, const char *sql)
{
    PGconn *pq = PQconnectdb(conninfo);
    if (PQstatus(pq) != CONNECTION_OK) {
        char why[512];
        snprintf(why, sizeof(why), "%s", PQerrorMessage(pq));
        PQfinish(pq);
        fail_msg("connect: %s", why);
    }
    PGresult *res = PQexec(pq, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        char why[512];
        snprintf(why, sizeof(why), "%s", PQerrorMessage(pq));
        PQclear(res);
        PQfinish(pq);
        fail_msg("%s: %s", sql, why);
    }
    PQfinish(pq); /* a result outlives its connection */
    return res;
}

/* Runs sql on the maintenance database, or fails the test. */
static inline void pg_test_admin(const char *sql)
{
    PQclear(pg_test_exec(getenv("POSTERN_TEST_PG"), sql));
}

/* The first column of the one row sql returns on conninfo's database, as an integer. */
static inline long long pg_test_query_int(const char *conninfo, const char *sql)
{
    PGresult *res = pg_test_exec(conninfo, sql);
    if (PQntuples(res) != 1) {
        int n = PQntuples(res);
        PQclear(res);
        fail_msg("%s: %d rows, want 1", sql, n);
    }
    long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* Appends key='value' to buf, quoted as libpq's key=value syntax wants. */
static inline void pg_test_append(char *buf, size_t cap, const char *key, const char *value)
{
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s='", n ? " " : "", key);
    for (const char *p = value; *p != '\0' && n + 3 < cap; p++) {
        if (*p == '\'' || *p == '\\')
            buf[n++] = '\\';
        buf[n++] = *p;
    }
    if (n + 2 > cap)
        fail_msg("connection string too long");
    buf[n++] = '\'';
    buf[n] = '\0';
}

/* Creates an empty database named after tag, this process and a counter, and the connection
 * string that reaches it. */
static inline void pg_test_db_new(struct pg_test_db *db, const char *tag)
{
    static int counter;
    snprintf(db->name, sizeof(db->name), "postern_%s_%ld_%d", tag, (long)getpid(), ++counter);
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", db->name);
    pg_test_admin(sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db->name);
    pg_test_admin(sql);
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(getenv("POSTERN_TEST_PG"), &err);
    if (opts == NULL) {
        fail_msg("POSTERN_TEST_PG: %s", err ? err : "out of memory");
    }
    db->conninfo[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (o->val != NULL && strcmp(o->keyword, "dbname") != 0)
            pg_test_append(db->conninfo, sizeof(db->conninfo), o->keyword, o->val);
    pg_test_append(db->conninfo, sizeof(db->conninfo), "dbname", db->name);
    PQconninfoFree(opts);
}

/* Drops the database, closing whatever connections are still on it. */
static inline void pg_test_db_drop(struct pg_test_db *db)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db->name);
    pg_test_admin(sql);
}

#endif
