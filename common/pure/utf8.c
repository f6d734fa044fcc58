/*
 * utf8.c - see utf8.h. A table-free decoder: the lead octet gives the length and the smallest
 * code point that length may carry, so overlongs are caught by comparing the decoded value.
 */
#include "common/pure/utf8.h"

#include <stdint.h>

/* Code points that bound the strict subset (RFC 3629 3 and 4). */
#define UTF8_C1_LAST        0x9Fu
#define UTF8_SURROGATE_LOW  0xD800u
#define UTF8_SURROGATE_HIGH 0xDFFFu
#define UTF8_MAX_CODE_POINT 0x10FFFFu

size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned char lead = s[0];
    size_t len;
    uint32_t cp, min;
    if (lead >= 0xC0 && lead <= 0xDF) {
        len = 2;
        cp = lead & 0x1Fu;
        min = 0x80u;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        len = 3;
        cp = lead & 0x0Fu;
        min = 0x800u;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        len = 4;
        cp = lead & 0x07u;
        min = 0x10000u;
    } else {
        /* ASCII, a continuation octet, or a lead that could only start a too-large value. */
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0u) != 0x80u)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > UTF8_MAX_CODE_POINT ||
        (cp >= UTF8_SURROGATE_LOW && cp <= UTF8_SURROGATE_HIGH) || cp <= UTF8_C1_LAST)
        return 0;
    return len;
}

bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = utf8_sequence_len(u + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

bool utf8_has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}
