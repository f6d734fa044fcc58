/*
 * fuzz_duration.c - libFuzzer target for common/pure/duration.c.
 *
 * The input, NUL-terminated, goes to duration_parse() and size_parse(). Whatever parses must
 * format to text that parses back to the same value, and formatting that value again must give
 * the same text (one value, one canonical text). A parser that accepts something its own
 * formatter cannot reproduce, or a formatter whose output the parser refuses, traps.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/duration.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* Durations and sizes are short; longer inputs only slow the fuzzer down. */
#define INPUT_MAX_BYTES 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[INPUT_MAX_BYTES + 1];
    uint64_t v, back;

    if (size > INPUT_MAX_BYTES)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    if (duration_parse(text, &v) == 0) {
        char buf[DURATION_FORMAT_MAX_BYTES], again[DURATION_FORMAT_MAX_BYTES];
        duration_format(v, buf, sizeof(buf));
        CHECK(strlen(buf) < sizeof(buf) - 1); /* never near truncation */
        CHECK(duration_parse(buf, &back) == 0);
        CHECK(back == v);
        duration_format(back, again, sizeof(again));
        CHECK(strcmp(buf, again) == 0);
        /* Shortest: no accepted spelling beats it (a plain number gains an "s"). */
        CHECK(strlen(buf) <= strlen(text) || strspn(text, "0123456789") == strlen(text));
    }
    if (size_parse(text, &v) == 0) {
        char buf[SIZE_FORMAT_MAX_BYTES];
        size_format(v, buf, sizeof(buf));
        CHECK(strlen(buf) < sizeof(buf) - 1);
        CHECK(size_parse(buf, &back) == 0);
        CHECK(back == v);
    }
    return 0;
}
