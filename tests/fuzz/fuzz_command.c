/*
 * fuzz_command.c - libFuzzer target for common/pure/command.c: the command-table lookup and the
 * AUTH argument split, fed what a client can send (one NUL-terminated line without CR/LF, as
 * conn.c hands it over), the way the SMTP session uses them (verb up to the first space), the
 * way both sessions split AUTH's arguments, and the HTTP request check both sessions make.
 *
 * Checks: nothing crashes or reads past the string (ASan); a verb found is a row of the table
 * equal to the verb text without regard to case; the mechanism and the initial response lie inside
 * the line, and the response, when there is one, starts right after the first space. Violations
 * trap.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/pure/command.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

struct row {
    struct command cmd;
    int id;
};

static const struct row table[] = {
    {{"EHLO", COMMAND_ANY_STATE, 1}, 1},
    {{"MAIL", 1u << 1, 0}, 2},
    {{"STARTTLS", COMMAND_ANY_STATE, 1}, 3},
    {{"TOP", 1u << 1, 0}, 4},
    {{"AUTH", 1u << 0, 1}, 5},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    if (line == NULL)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] != 0 && data[i] != '\r' && data[i] != '\n')
            line[n++] = (char)data[i];
    }
    line[n] = '\0';

    size_t vlen = strcspn(line, " ");
    const struct command *c =
        command_find(table, sizeof(table) / sizeof(table[0]), sizeof(table[0]), line, vlen);
    if (c != NULL) {
        const struct row *r = (const struct row *)(const void *)c;
        CHECK(r >= table && r < table + sizeof(table) / sizeof(table[0]));
        CHECK(strlen(c->verb) == vlen && strncasecmp(c->verb, line, vlen) == 0);
        (void)command_is_allowed(c, (unsigned)(n % 40));
    }

    struct command_auth_args a;
    command_split_auth(line, &a);
    CHECK(a.mech == line && a.mech_len <= n && memchr(a.mech, ' ', a.mech_len) == NULL);
    if (a.initial != NULL) {
        CHECK(a.initial == line + a.mech_len + 1 && a.initial + a.initial_len == line + n);
    } else {
        CHECK(a.mech_len == n && a.initial_len == 0);
    }
    (void)command_is_http_request(line, n);
    free(line);
    return 0;
}
