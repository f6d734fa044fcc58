/*
 * pop3_parse.h - the pure half of the POP3 command reader: splitting a command line into its
 * keyword and arguments, and reading message numbers and line counts (RFC 1939 3, RFC 2449 3).
 *
 * No I/O, no allocation, no state: the session (server/pop3/pop3_session.c) decides what a command
 * means in which state; this module only says whether the text is well formed. It is unit-tested
 * on its own (tests/unit/test_pop3_parse.c).
 */
#ifndef POSTERN_POP3_PARSE_H
#define POSTERN_POP3_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"

/* Arguments a command may have: TOP has the most (msg and n). */
#define POP3_ARGS_MAX 2
/* RFC 1939 3: "each argument may be up to 40 characters long"; a message number or a line count
 * beyond this many digits is refused rather than overflowed. */
#define POP3_NUMBER_MAX_DIGITS 19

/* A command line split at its first space: verb[0..verb_len) and args (NUL-terminated, borrowed
 * from the line; "" when there are none). */
struct pop3_cmdline {
    const char *verb;
    size_t verb_len;
    const char *args;
};

/*
 * Splits line (NUL-terminated, without CRLF). RFC 1939 3: the keyword is followed by one space
 * and the arguments. 0, or -1 when the keyword is empty, longer than POP3_VERB_MAX_BYTES or holds
 * a character that is not printable ASCII.
 */
int pop3_parse_line(const char *line, struct pop3_cmdline *out);

/*
 * Reads between min_args and max_args (<= POP3_ARGS_MAX) numbers separated by single spaces from
 * args, each plain decimal digits (no sign, no space, at most POP3_NUMBER_MAX_DIGITS). Sets
 * *count_out and values_out[0..count). 0, or -1 for anything else (too few or too many, empty,
 * a double space, a trailing space, junk).
 */
int pop3_parse_numbers(const char *args, unsigned min_args, unsigned max_args,
                       uint64_t values_out[POP3_ARGS_MAX], unsigned *count_out);

#endif
