/*
 * password_input.h - reading a new password for `postern user add|passwd` and hashing it: the
 * first line of a file or pipe, or asked twice on a terminal with echo off. It prints nothing
 * but the prompts; the caller reports the reason it gets back.
 */
#ifndef POSTERN_PASSWORD_INPUT_H
#define POSTERN_PASSWORD_INPUT_H

#include <stddef.h>
#include <stdio.h>

#include "common/password.h"

/* Room for the longest reason password_input_hash gives. */
#define PASSWORD_INPUT_WHY_BYTES 100

/*
 * Reads the password from in (a terminal: prompted on stderr, twice, without echo; anything
 * else: its first line, without the CR LF or LF) and hashes it into hash_out. Returns 0, or -1
 * with the reason in why (no line, too long, the two answers differ, empty, hashing failed). The
 * plaintext is wiped before returning. password_init must have run.
 */
int password_input_hash(FILE *in, char hash_out[PASSWORD_HASH_BYTES], char *why, size_t why_len);

#endif
