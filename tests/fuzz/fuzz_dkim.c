/*
 * fuzz_dkim.c - libFuzzer target for the DKIM canonicalisers and header walkers,
 * common/pure/dkim.c, fed what a client sends: any octets as a header section and as a body.
 *
 * Input layout: byte 0 is the chunk size the body is fed in (0 means whole), the rest is split at
 * the first NUL into a header section and a body (no NUL: all header, empty body).
 *
 * Checked: every field dkim_next_field gives lies inside the section and the fields tile it from
 * the first field on; a canonicalised field is no longer than its input plus CRLF, has a lower
 * case name with no white space before the colon and none after it, no CR or LF before its final
 * CRLF, no two spaces in a row and no space at the end; the body hash is the same whatever the
 * chunk size; dkim_from_domain, dkim_choose_headers and dkim_header_hash return a known code.
 * Violations trap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/dkim.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_canon(const char *f, size_t len)
{
    char *out = malloc(len + 2);
    CHECK(out != NULL);
    int n = dkim_canon_header(f, len, true, out, len + 2);
    if (memchr(f, ':', len) == NULL) {
        CHECK(n == DKIM_ERR_BAD_FIELD);
        free(out);
        return;
    }
    CHECK(n >= 3 && (size_t)n <= len + 2);
    CHECK(out[n - 2] == '\r' && out[n - 1] == '\n');
    const char *colon = memchr(out, ':', (size_t)n);
    CHECK(colon != NULL);
    for (const char *p = out; p < colon; p++)
        CHECK(!(*p >= 'A' && *p <= 'Z'));
    if (colon > out)
        CHECK(colon[-1] != ' ' && colon[-1] != '\t');
    const char *v = colon + 1, *end = out + n - 2;
    if (v < end)
        CHECK(*v != ' ' && end[-1] != ' ');
    for (const char *p = v; p < end; p++) {
        CHECK(*p != '\t');
        if (p > v)
            CHECK(!(p[0] == ' ' && p[-1] == ' '));
    }
    /* A CR or LF may stay in the value only when it was no CRLF pair in the input. */
    for (const char *p = v; p + 1 < end; p++)
        CHECK(!(p[0] == '\r' && p[1] == '\n'));
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 64 * 1024)
        return 0;
    size_t cut = data[0];
    const char *rest = (const char *)data + 1;
    size_t rest_len = size - 1;
    const char *nul = memchr(rest, '\0', rest_len);
    size_t hdr_len = nul != NULL ? (size_t)(nul - rest) : rest_len;
    const char *body = nul != NULL ? nul + 1 : rest + rest_len;
    size_t body_len = nul != NULL ? rest_len - hdr_len - 1 : 0;
    /* Heap copies of exactly their length, so a read past either end is seen. */
    char *hdr = malloc(hdr_len + 1);
    CHECK(hdr != NULL);
    memcpy(hdr, rest, hdr_len);

    size_t pos = 0, s, n, last_end = 0;
    bool first = true;
    while (dkim_next_field(hdr, hdr_len, &pos, &s, &n)) {
        CHECK(s + n <= hdr_len && n > 0 && pos == s + n);
        if (!first)
            CHECK(s == last_end);
        first = false;
        last_end = s + n;
        check_canon(hdr + s, n);
    }
    CHECK(pos == hdr_len);

    struct dkim_body a, b;
    uint8_t ha[DKIM_HASH_BYTES], hb[DKIM_HASH_BYTES];
    dkim_body_init(&a);
    dkim_body_update(&a, body, body_len);
    dkim_body_final(&a, ha);
    dkim_body_init(&b);
    for (size_t off = 0; off < body_len;) {
        size_t k = cut == 0 || body_len - off < cut ? body_len - off : cut;
        dkim_body_update(&b, body + off, k);
        off += k;
    }
    dkim_body_final(&b, hb);
    CHECK(memcmp(ha, hb, sizeof(ha)) == 0);

    char dom[256], h[DKIM_SIGNED_FIELDS_MAX * 28];
    int rc = dkim_from_domain(hdr, hdr_len, dom, sizeof(dom));
    CHECK(rc == 0 || rc == DKIM_ERR_NO_FROM || rc == DKIM_ERR_MANY_FROM || rc == DKIM_ERR_BAD_FROM);
    if (rc == 0)
        CHECK(strlen(dom) > 0 && strlen(dom) < sizeof(dom));
    rc = dkim_choose_headers(hdr, hdr_len, h, sizeof(h));
    CHECK(rc > 0 || rc == DKIM_ERR_NO_FROM || rc == DKIM_ERR_TOO_MANY);
    if (rc > 0) {
        uint8_t hh[DKIM_HASH_BYTES];
        rc = dkim_header_hash(hdr, hdr_len, h, "DKIM-Signature: b=", 18, hh);
        CHECK(rc == 0 || rc == DKIM_ERR_BAD_FIELD);
    }
    free(hdr);
    return 0;
}
