/*
 * conninfo.h - telling a PostgreSQL connection string from a SQLite file path, and hiding the
 * password of one before it is printed. Pure: no I/O, no libpq (which parses the string itself
 * when connecting); the configuration (`[server] database`), `config check` and the store
 * (store_is_postgres) share these, so that the rule is written once.
 *
 * The rule: a database names PostgreSQL when it starts with "postgresql://" or "postgres://"
 * (a libpq URI), or when it starts, after optional blanks, with a keyword of lowercase letters
 * and underscores followed by optional blanks and "=" (libpq's key=value form, such as
 * "host=db1 dbname=mail"). Anything else is a SQLite file path; a file whose name looks like
 * key=value is written "./name".
 */
#ifndef POSTERN_CONNINFO_H
#define POSTERN_CONNINFO_H

#include <stdbool.h>
#include <stddef.h>

bool conninfo_is_postgres(const char *database);

/* Copies database into out (cut to len) with the password replaced by "***": in a URI the part
 * after "user:" in front of "@" and a password= query parameter, in key=value form the value of
 * the password keyword, and everything from where a key=value string stops parsing (libpq will
 * refuse it anyway). Anything not a connection string is copied as it is. */
void conninfo_mask(const char *database, char *out, size_t len);

#endif
