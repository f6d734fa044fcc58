/*
 * utf8.h - strict UTF-8 (RFC 3629) as internationalised mail needs it (RFC 6532 3.1: UTF8-non-ascii
 * in addresses and headers). Pure: no I/O, no allocation, no state.
 *
 * Strict means: the shortest form only (no overlong encodings such as C0 AF for '/'), no UTF-16
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF, and no C1 controls (U+0080..U+009F), which
 * RFC 6530 10.1 warns about in addresses just as it does about C0 controls. ASCII octets are not
 * this module's business: the callers judge them by their own grammars.
 */
#ifndef POSTERN_UTF8_H
#define POSTERN_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The length (2..4) of the strictly valid non-ASCII sequence at s[0..n), n > 0 and s[0] >= 0x80;
 * 0 when the octets there are not one (a stray continuation octet, a truncated, overlong or
 * surrogate sequence, a code point above U+10FFFF, or a C1 control).
 */
size_t utf8_sequence_len(const unsigned char *s, size_t n);

/* Whether s[0..n) is strictly valid UTF-8 (ASCII octets all allowed, including controls). */
bool utf8_valid(const char *s, size_t n);

/* Whether s[0..n) has an octet above 127. */
bool utf8_has_8bit(const char *s, size_t n);

#endif
