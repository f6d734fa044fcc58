/*
 * pop3_parse.c - keyword and argument parsing for POP3 command lines (see pop3_parse.h).
 *
 * RFC 1939 3 says keywords and arguments are separated by a single space and that arguments are
 * printable ASCII; this parser is strict about numbers (where a sloppy reading such as "1x" = 1
 * would make DELE delete a message the client did not name) and leaves text arguments (USER,
 * PASS, AUTH) to the session as they are.
 */
#include "common/pure/pop3_parse.h"

#include <string.h>

int pop3_parse_line(const char *line, struct pop3_cmdline *out)
{
    size_t n = strcspn(line, " ");
    if (n == 0 || n > POP3_VERB_MAX_BYTES)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return -1;
    }
    out->verb = line;
    out->verb_len = n;
    out->args = line[n] == ' ' ? line + n + 1 : line + n;
    return 0;
}

/* One number at *p, ended by ' ' or NUL; advances *p past it. */
static int parse_number(const char **p, uint64_t *out)
{
    const char *s = *p;
    size_t digits = 0;
    uint64_t v = 0;
    while (s[digits] >= '0' && s[digits] <= '9') {
        if (digits == POP3_NUMBER_MAX_DIGITS)
            return -1;
        v = v * 10 + (uint64_t)(s[digits] - '0');
        digits++;
    }
    if (digits == 0 || (s[digits] != ' ' && s[digits] != '\0'))
        return -1;
    *out = v;
    *p = s + digits;
    return 0;
}

int pop3_parse_numbers(const char *args, unsigned min_args, unsigned max_args,
                       uint64_t values_out[POP3_ARGS_MAX], unsigned *count_out)
{
    if (max_args > POP3_ARGS_MAX || min_args > max_args)
        return -1;
    unsigned count = 0;
    const char *p = args;
    while (*p != '\0') {
        if (count == max_args)
            return -1;
        if (count > 0) {
            if (*p != ' ')
                return -1;
            p++;
        }
        if (parse_number(&p, &values_out[count]) != 0)
            return -1;
        count++;
    }
    if (count < min_args)
        return -1;
    *count_out = count;
    return 0;
}
