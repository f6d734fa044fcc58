/*
 * schema.h - the SQLite SQL of each schema version, for sqlite_store.c.
 */
#ifndef POSTERN_SQLITE_SCHEMA_H
#define POSTERN_SQLITE_SCHEMA_H

#define SCHEMA_VERSION 12

/* The SQL that takes the schema from to_version-1 to to_version; NULL when out of range. */
const char *schema_migration(int to_version);

#endif
