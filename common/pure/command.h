/*
 * command.h - what the SMTP and POP3 sessions share in reading a command: finding its verb in the
 * session's command table, checking the table's state mask, splitting the arguments of AUTH
 * into the mechanism and the optional initial response (RFC 4954 4, RFC 5034 4), and telling
 * an HTTP request line from a command.
 *
 * Pure: no I/O, no allocation, no state, no reply text. Each session keeps its own table (rows
 * that start with a struct command, followed by its typed handler), decides what the state bits
 * mean, and turns "unknown" or "not now" into its own protocol's reply. Tested by
 * tests/unit/test_command.c and fuzzed by tests/fuzz/fuzz_command.c.
 */
#ifndef POSTERN_COMMAND_H
#define POSTERN_COMMAND_H

#include <stdbool.h>
#include <stddef.h>

/* A row's state mask that allows the verb in every state (the handler checks for itself). */
#define COMMAND_ANY_STATE (~0u)

/*
 * The first member of every row of a session's command table. states: bit n set when the verb
 * is valid in the session's state n. flags: the session's own bits (e.g. SMTP's "ends a
 * pipelined group"), carried and never read here.
 */
struct command {
    const char *verb; /* upper case; matched without regard to case */
    unsigned states;
    unsigned flags;
};

/*
 * Finds verb[0..verb_len) (no NUL needed, any case) in a table of n_rows rows of row_bytes each,
 * every row starting with a struct command. Returns that member of the matching row, which the
 * session may cast back to its row type, or NULL when the verb is not in the table.
 */
const struct command *command_find(const void *table, size_t n_rows, size_t row_bytes,
                                   const char *verb, size_t verb_len);

/* True when cmd is valid in state (0 to 31); false for a state beyond the mask. */
bool command_is_allowed(const struct command *cmd, unsigned state);

/* AUTH's arguments split at the first space: "mechanism [initial-response]". */
struct command_auth_args {
    const char *mech; /* borrowed from args */
    size_t mech_len;
    const char *initial; /* borrowed from args; NULL when no initial response was given */
    size_t initial_len;
};

/*
 * Splits args (NUL-terminated, after "AUTH "). Everything after the first space is the initial
 * response, spaces included, so the SASL decoder (not this split) refuses a malformed one.
 */
void command_split_auth(const char *args, struct command_auth_args *out);

/*
 * The transcript's mask for both sessions (struct conn_handler's transcript_visible): how many
 * leading octets of line the log may show. "AUTH mechanism initial-response" (RFC 4954 4, RFC
 * 5034 4) keeps the verb and the mechanism; "PASS password" (RFC 1939 7) keeps the verb, on the
 * SMTP port too, so a POP3 client pointed there by mistake leaves no password in the log. A line
 * we send (outgoing, a reply) holds no secret. len when nothing is masked.
 */
size_t command_transcript_visible(const char *line, size_t len, bool outgoing);

/*
 * True for "GET / HTTP/1.1" and friends (an HTTP method, a space, ..., a last word starting
 * "HTTP/"): a browser or a proxy-abuse probe, never a mail client. Answering would only help
 * cross-protocol tricks, so both sessions drop the connection (Postfix does the same for SMTP).
 * line is NUL-terminated with no NUL inside; len is its length.
 */
bool command_is_http_request(const char *line, size_t len);

#endif
