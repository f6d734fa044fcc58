/*
 * pg_conn_fixture.h - the two calls the tests of the libpq layer itself (test_pg_conn.c,
 * test_pg_schema.c) make on every connection: open one or fail the test, run a statement or fail
 * the test. Include after <cmocka.h> and "pg_fixture.h" (which gives the test its server).
 */
#ifndef POSTERN_TEST_PG_CONN_FIXTURE_H
#define POSTERN_TEST_PG_CONN_FIXTURE_H

#include "storage/postgres/pg_conn.h"

static inline struct pg_conn *open_ok(const char *conninfo)
{
    char err[512] = "";
    struct pg_conn *c = NULL;
    if (pg_conn_open(conninfo, &c, err, sizeof(err)) != STORE_OK)
        fail_msg("pg_conn_open: %s", err);
    return c;
}

static inline void exec_ok(struct pg_conn *c, const char *sql)
{
    if (pg_exec(c, sql) != STORE_OK)
        fail_msg("%s: %s", sql, pg_conn_errmsg(c));
}

#endif
