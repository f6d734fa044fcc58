/*
 * pg_schema.h - postern's schema on PostgreSQL: the tables, indexes and trigger of the SQLite
 * schema (storage/sqlite/schema.c) at the same version, with the version kept in the meta table.
 */
#ifndef POSTERN_PG_SCHEMA_H
#define POSTERN_PG_SCHEMA_H

#include "storage/postgres/pg_conn.h"

/* The session-wide key of the transaction-level advisory lock taken around reading the version
 * and creating or migrating the schema, so that nodes starting at once create it once. The
 * number is "pstn" in ASCII, unlikely to be another application's on a shared server. */
#define PG_SCHEMA_LOCK_KEY 0x7073746eLL

/*
 * Creates the schema in an empty database, or migrates an older one, to STORE_SCHEMA_VERSION,
 * all in one transaction under the advisory lock. STORE_OK; STORE_TOO_NEW when the database's
 * version is newer than this postern (nothing is changed); STORE_ERR with the reason in
 * pg_conn_errmsg. Called outside a transaction.
 */
int pg_schema_ensure(struct pg_conn *c);
/* The schema version of the database: 0 when it has no postern schema. */
int pg_schema_version(struct pg_conn *c, int *version_out);

#endif
