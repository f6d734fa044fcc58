/*
 * password.h - argon2id password hashes (libsodium crypto_pwhash_str), the only form in which
 * postern keeps a password.
 *
 * Cost: production uses libsodium's INTERACTIVE limits (2 passes, 64 MiB), which takes tens of
 * milliseconds, so verification never runs on the event loop (docs/architecture.md, "Threads").
 * Tests set the environment variable POSTERN_TEST_FAST_HASH=1 to hash with the minimum limits
 * instead; serve logs a warning when it is set. Verification reads the limits from the stored
 * string, so hashes of either cost verify anywhere.
 */
#ifndef POSTERN_PASSWORD_H
#define POSTERN_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

#include <sodium.h>

#include "common/limits.h"

#define PASSWORD_HASH_BYTES crypto_pwhash_STRBYTES
/* PASSWORD_MAX_BYTES, the longest password accepted, is in common/limits.h. */

/* Calls sodium_init(); 0 or -1. Safe to call more than once. */
int password_init(void);
/* True when POSTERN_TEST_FAST_HASH=1 selects the cheap test parameters. */
bool password_fast_for_tests(void);
/* Hashes pw (len bytes) into out (PASSWORD_HASH_BYTES). 0, or -1 (out of memory, too long). */
int password_hash(const char *pw, size_t len, char out[PASSWORD_HASH_BYTES]);
/* True when pw matches the stored hash string. Constant-time in the password (libsodium). */
bool password_verify(const char *hash, const char *pw, size_t len);
/* A valid hash of a random password, computed once, for equal-time checks of unknown users. */
const char *password_dummy_hash(void);

#endif
