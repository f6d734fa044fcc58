/*
 * fuzz_smtp_session.c - libFuzzer target for a whole SMTP session: server/smtp/smtp_session.c and
 * smtp_tx.c over the real connection layer, store, writer thread and auth service, fed the
 * client's byte stream over loopback TCP (tests/fuzz/session_harness.h: the option byte, the
 * chunking, the account). Port 25 (MX) or submission, from a trusted or an untrusted address.
 *
 * Checks: nothing crashes, leaks or misbehaves under ASan/UBSan; every connection ends with its
 * handles closed and its session freed; everything the server sent is whole reply lines (RFC
 * 5321 4.2): CRLF-terminated, no CR or LF inside, each starting with a three-digit code followed
 * by a space, a hyphen or the end of the line. Violations abort with the output.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "server/smtp/smtp_session.h"
#include "session_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_digit(unsigned char ch)
{
    return ch >= '0' && ch <= '9';
}

static void check_replies(const unsigned char *out, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        const unsigned char *lf = memchr(out + pos, '\n', len - pos);
        harness_require(lf != NULL, "reply without CRLF at the end", out, len);
        size_t end = (size_t)(lf - out);
        harness_require(end > pos && out[end - 1] == '\r', "bare LF in a reply", out, len);
        const unsigned char *line = out + pos;
        size_t n = end - 1 - pos;
        harness_require(memchr(line, '\r', n) == NULL, "bare CR in a reply", out, len);
        harness_require(n >= 3 && is_digit(line[0]) && is_digit(line[1]) && is_digit(line[2]) &&
                            (n == 3 || line[3] == ' ' || line[3] == '-'),
                        "reply line without a three-digit code", out, len);
        harness_require(line[0] >= '2' && line[0] <= '5', "reply code outside 2xx-5xx", out, len);
        pos = end + 1;
    }
}

static const struct harness_target target = {
    .handler = &smtp_session_handler,
    .services = {CONN_SERVICE_SMTP_MX, CONN_SERVICE_SMTP_SUBMISSION},
    .check = check_replies,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    harness_run(&target, data, size);
    return 0;
}
