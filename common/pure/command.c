/*
 * command.c - command table lookup, the AUTH argument split and the transcript's mask shared by
 * the SMTP and POP3 sessions (command.h). Pure: it reads the table and the line it is given and
 * nothing else.
 */
#include "common/pure/command.h"

#include <string.h>
#include <strings.h>

const struct command *command_find(const void *table, size_t n_rows, size_t row_bytes,
                                   const char *verb, size_t verb_len)
{
    const unsigned char *row = table;
    for (size_t i = 0; i < n_rows; i++, row += row_bytes) {
        /* Every row starts with a struct command (command.h), so this is that first member. */
        const struct command *cmd = (const struct command *)(const void *)row;
        if (strlen(cmd->verb) == verb_len && strncasecmp(cmd->verb, verb, verb_len) == 0)
            return cmd;
    }
    return NULL;
}

bool command_is_allowed(const struct command *cmd, unsigned state)
{
    return state < 32 && (cmd->states & (1u << state)) != 0;
}

void command_split_auth(const char *args, struct command_auth_args *out)
{
    size_t mlen = strcspn(args, " ");
    out->mech = args;
    out->mech_len = mlen;
    out->initial = NULL;
    out->initial_len = 0;
    if (args[mlen] == ' ') {
        out->initial = args + mlen + 1;
        out->initial_len = strlen(out->initial);
    }
}

/* The length of line's first `words` words, the spaces before each counted. */
static size_t words_bytes(const char *line, size_t len, size_t words)
{
    size_t i = 0;
    for (size_t w = 0; w < words && i < len; w++) {
        while (i < len && line[i] == ' ')
            i++;
        while (i < len && line[i] != ' ')
            i++;
    }
    return i;
}

size_t command_transcript_visible(const char *line, size_t len, bool outgoing)
{
    if (outgoing || len < 5)
        return len;
    if (strncasecmp(line, "AUTH ", 5) == 0)
        return words_bytes(line, len, 2);
    if (strncasecmp(line, "PASS ", 5) == 0)
        return words_bytes(line, len, 1);
    return len;
}

bool command_is_http_request(const char *line, size_t len)
{
    static const char *const methods[] = {"GET",     "POST",    "HEAD",  "PUT",  "DELETE",
                                          "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    const char *sp = memchr(line, ' ', len);
    if (sp == NULL)
        return false;
    size_t mlen = (size_t)(sp - line);
    bool method = false;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]) && !method; i++)
        method = strlen(methods[i]) == mlen && strncasecmp(methods[i], line, mlen) == 0;
    if (!method)
        return false;
    const char *last = strrchr(line, ' '); /* NUL-terminated without NUL inside (command.h) */
    return strncasecmp(last + 1, "HTTP/", 5) == 0;
}
