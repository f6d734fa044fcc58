/*
 * fuzz_pop3_parse.c - libFuzzer target for common/pure/pop3_parse.c: the command-line splitter and
 * the message-number reader, fed what a client can send (one NUL-terminated line without CR/LF,
 * as conn.c hands it over).
 *
 * Checks: nothing crashes or reads past the string (ASan); a parsed verb lies inside the line and
 * is at most POP3_VERB_MAX_BYTES; the argument pointer lies inside the line; numbers read are
 * within the count asked for and equal the digit runs they came from. Violations trap.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/pop3_parse.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

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

    struct pop3_cmdline cmd;
    if (pop3_parse_line(line, &cmd) == 0) {
        CHECK(cmd.verb >= line && cmd.verb + cmd.verb_len <= line + n);
        CHECK(cmd.verb_len > 0 && cmd.verb_len <= POP3_VERB_MAX_BYTES);
        CHECK(cmd.args != NULL && cmd.args >= line && cmd.args <= line + n);
        for (unsigned min = 0; min <= POP3_ARGS_MAX; min++) {
            for (unsigned max = min; max <= POP3_ARGS_MAX; max++) {
                uint64_t v[POP3_ARGS_MAX];
                unsigned count = 0;
                if (pop3_parse_numbers(cmd.args, min, max, v, &count) != 0)
                    continue;
                CHECK(count >= min && count <= max);
                /* Each number is the value of its own run of digits ("01" is 1). */
                const char *p = cmd.args;
                for (unsigned k = 0; k < count; k++) {
                    while (*p == ' ')
                        p++;
                    char *end = NULL;
                    CHECK(strtoull(p, &end, 10) == v[k] && end > p);
                    p = end;
                }
            }
        }
    }
    free(line);
    return 0;
}
