/*
 * fuzz_pop3_session.c - libFuzzer target for a whole POP3 session: server/pop3/pop3_session.c,
 * pop3_maildrop.c and pop3_window.c over the real connection layer, store, writer thread and auth
 * service, fed the client's byte stream over loopback TCP (tests/fuzz/session_harness.h: the
 * option byte, the chunking, the account). Before every input the maildrop holds the three
 * messages below again, so DELE and QUIT in one input do not change the next.
 *
 * Checks: nothing crashes, leaks or misbehaves under ASan/UBSan; every connection ends with its
 * handles closed and its session freed; everything the server sent is CRLF-terminated lines
 * without CR or LF inside, the first one "+OK", and every line that starts with "+" or "-" is a
 * status line ("+OK", "-ERR") or a SASL continuation ("+ ", "+"): no line of the seeded
 * messages starts with either, so a message line can never be mistaken for one. Violations abort
 * with the output.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "server/pop3/pop3_session.h"
#include "session_harness.h"
#include "storage/mailbox.h"
#include "storage/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const messages[] = {
    "From: bob@example.net\r\nTo: alice@example.test\r\nSubject: one\r\n\r\nhello\r\n",
    ("From: carol@example.net\r\nSubject: dots\r\n\r\n.a line that starts with a dot\r\n"
     ".\r\nmore\r\n"),
    "Subject: three\r\n\r\nline 1\r\nline 2\r\nline 3\r\nline 4\r\n",
};

static int seed(struct store *st, int64_t user_id)
{
    for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
        struct store_delivery d = {
            .sender = "bob@example.net",
            .body = (const unsigned char *)messages[i],
            .body_len = strlen(messages[i]),
            .local_user_ids = &user_id,
            .n_local = 1,
            .received_ms = store_now_ms(),
        };
        int rc = store_deliver(st, &d);
        if (rc != STORE_OK)
            return rc;
    }
    return 0;
}

static bool starts(const unsigned char *line, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && memcmp(line, prefix, k) == 0;
}

static void check_replies(const unsigned char *out, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        const unsigned char *lf = memchr(out + pos, '\n', len - pos);
        harness_require(lf != NULL, "line without CRLF at the end", out, len);
        size_t end = (size_t)(lf - out);
        harness_require(end > pos && out[end - 1] == '\r', "bare LF in the output", out, len);
        const unsigned char *line = out + pos;
        size_t n = end - 1 - pos;
        harness_require(memchr(line, '\r', n) == NULL, "bare CR in the output", out, len);
        if (pos == 0)
            harness_require(starts(line, n, "+OK"), "the greeting is not +OK", out, len);
        if (n > 0 && line[0] == '+')
            harness_require(starts(line, n, "+OK") || starts(line, n, "+ ") || n == 1,
                            "a line starting with + that is neither +OK nor a continuation", out,
                            len);
        if (n > 0 && line[0] == '-')
            harness_require(starts(line, n, "-ERR"), "a line starting with - that is not -ERR", out,
                            len);
        pos = end + 1;
    }
}

static const struct harness_target target = {
    .handler = &pop3_session_handler,
    .services = {CONN_SERVICE_POP3, CONN_SERVICE_POP3},
    .seed = seed,
    .check = check_replies,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    harness_run(&target, data, size);
    return 0;
}
