/*
 * fuzz_dsn.c - libFuzzer target for the notice builder, common/pure/dsn.c, fed what comes from
 * outside: remote replies, host names, addresses, ENVID and ORCPT, and the original message.
 *
 * Input layout: byte 0 holds flags (bit 0 return_path, bit 1 expired, bit 2 a reply code of
 * 550 instead of 0, bit 3 a caller's status, bit 4 dates set, bits 5-6 the action, bit 7 ENVID,
 * ORCPT and RET=FULL), byte 1 the recipient count (1..4), then NUL-separated strings: the
 * hostname, the sender, the ENVID (bit 7), and per recipient its address, remote MTA, reply,
 * status and ORCPT (bit 7); whatever follows the last string is the original message (any
 * octets, NULs included), copied to a heap buffer of exactly its length.
 *
 * Checked for every bounce: dsn_build succeeds whenever the required fields are there; the
 * message is printable ASCII, TAB and CRLF line ends only (no bare CR or LF, no other control
 * octet, nothing above 0x7E), no line is over 998 octets, its header section is well-formed
 * field lines and folds, and every Status field of a failure is a class-5 RFC 3463 code.
 * dsn_header_length stays within the input and its cap and ends at a line end. Violations trap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/dsn.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_RCPTS 4
/* A bounce is built per input; much larger originals only slow the fuzzer down. */
#define INPUT_MAX_BYTES (256 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The next NUL-ended string at *p, or "" when the input has run out. */
static const char *take(const uint8_t **p, size_t *left)
{
    const uint8_t *nul = memchr(*p, '\0', *left);
    if (nul == NULL)
        return "";
    const char *s = (const char *)*p;
    *left -= (size_t)(nul - *p) + 1;
    *p = nul + 1;
    return s;
}

static bool is_class5_code(const char *s)
{
    if (s[0] != '5' || s[1] != '.')
        return false;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t digits = 0;
        while (s[i] >= '0' && s[i] <= '9') {
            i++;
            digits++;
        }
        if (digits == 0 || digits > 3)
            return false;
        if (part == 0) {
            if (s[i] != '.')
                return false;
            i++;
        }
    }
    return s[i] == '\0';
}

static void check_message(const unsigned char *m, size_t len)
{
    CHECK(len >= 2 && m[len - 2] == '\r' && m[len - 1] == '\n');
    size_t line_start = 0;
    bool in_header = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = m[i];
        CHECK(c == '\t' || c == '\r' || c == '\n' || (c >= 0x20 && c <= 0x7e));
        if (c == '\r') {
            CHECK(i + 1 < len && m[i + 1] == '\n');
            continue;
        }
        if (c != '\n')
            continue;
        CHECK(i > 0 && m[i - 1] == '\r');
        size_t n = i - 1 - line_start; /* without CRLF */
        CHECK(n <= MESSAGE_LINE_MAX_BYTES);
        if (in_header) {
            const unsigned char *l = m + line_start;
            if (n == 0) {
                in_header = false;
            } else if (l[0] != ' ' && l[0] != '\t') {
                /* A field: a name of printable octets but ':', then ':' (RFC 5322 2.2). */
                size_t k = 0;
                while (k < n && l[k] > 0x20 && l[k] < 0x7f && l[k] != ':')
                    k++;
                CHECK(k > 0 && k < n && l[k] == ':');
            } else {
                CHECK(line_start > 0); /* a fold continues a field */
            }
        }
        line_start = i + 1;
    }
    CHECK(!in_header);
}

/* Where needle first occurs in hay[from..len), or len. */
static size_t find(const unsigned char *hay, size_t len, size_t from, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = from; i + n <= len; i++) {
        if (memcmp(hay + i, needle, n) == 0)
            return i;
    }
    return len;
}

/*
 * Every "Status: " line of the delivery-status part holds a class-5 code. The part runs from
 * its Content-Type to the next boundary line; no line of the text part before it can start with
 * "Content-Type" (its lines start with "<" or with spaces), and the original headers after it
 * may say anything.
 */
static void check_status_fields(const unsigned char *m, size_t len)
{
    static const char key[] = "\r\nStatus: ";
    size_t klen = sizeof(key) - 1;
    size_t from = find(m, len, 0, "\r\nContent-Type: message/delivery-status\r\n");
    CHECK(from < len);
    len = find(m, len, from, "\r\n--=_postern_");
    for (size_t i = from; i + klen <= len; i++) {
        if (memcmp(m + i, key, klen) != 0)
            continue;
        size_t start = i + klen, end = start;
        while (end < len && m[end] != '\r')
            end++;
        char code[DSN_STATUS_BYTES + 1];
        CHECK(end - start < sizeof(code));
        memcpy(code, m + start, end - start);
        code[end - start] = '\0';
        CHECK(is_class5_code(code));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > INPUT_MAX_BYTES)
        return 0;
    uint8_t flags = data[0];
    size_t n_rcpts = 1 + data[1] % MAX_RCPTS;
    const uint8_t *p = data + 2;
    size_t left = size - 2;

    struct dsn_info info;
    struct dsn_recipient rcpts[MAX_RCPTS];
    memset(&info, 0, sizeof(info));
    memset(rcpts, 0, sizeof(rcpts));
    info.hostname = take(&p, &left);
    info.sender = take(&p, &left);
    info.return_path = flags & 1;
    info.arrival_ms = (flags & 16) ? INT64_C(1700000000000) : 0;
    info.now_ms = INT64_C(1700000100000);
    info.rcpts = rcpts;
    info.n_rcpts = n_rcpts;
    /* Bits 5-6 pick the action; bit 7 adds ENVID, ORCPTs and RET=FULL (any text: the builder
     * must keep the report 7-bit whatever it is given). */
    info.action = (enum dsn_action)((flags >> 5) & 3);
    info.envid = (flags & 128) ? take(&p, &left) : NULL;
    info.return_full = (flags & 128) != 0;
    bool valid = info.sender[0] != '\0';
    for (size_t i = 0; i < n_rcpts; i++) {
        rcpts[i].address = take(&p, &left);
        rcpts[i].remote_mta = take(&p, &left);
        rcpts[i].reply = take(&p, &left);
        const char *status = take(&p, &left);
        rcpts[i].status = (flags & 8) ? status : NULL;
        rcpts[i].reply_code = (flags & 4) ? 550 : 0;
        rcpts[i].expired = (flags & 2) && i == 0;
        rcpts[i].last_attempt_ms = (flags & 16) ? INT64_C(1700000050000) : 0;
        rcpts[i].orcpt = (flags & 128) ? take(&p, &left) : NULL;
        valid = valid && rcpts[i].address[0] != '\0';

        char st[DSN_STATUS_BYTES];
        dsn_status(&rcpts[i], st);
        CHECK(is_class5_code(st));
    }

    unsigned char *orig = malloc(left > 0 ? left : 1);
    if (orig == NULL)
        return 0;
    memcpy(orig, p, left);

    size_t hlen = dsn_header_length(orig, left);
    CHECK(hlen <= left && hlen <= DSN_ORIG_HEADERS_MAX_BYTES);
    CHECK(hlen == 0 || hlen == left || orig[hlen - 1] == '\n');

    unsigned char *out = (unsigned char *)"x";
    size_t out_len = 1;
    int rc = dsn_build(&info, orig, left, &out, &out_len);
    if (!valid) {
        CHECK(rc == DSN_ERR_INVALID && out == NULL && out_len == 0);
    } else {
        CHECK(rc == DSN_OK && out != NULL);
        check_message(out, out_len);
        if (info.action == DSN_ACTION_FAILED)
            check_status_fields(out, out_len);
        free(out);
    }
    free(orig);
    return 0;
}
