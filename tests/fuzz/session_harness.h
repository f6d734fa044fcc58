/*
 * session_harness.h - what fuzz_smtp_session.c and fuzz_pop3_session.c share: a whole server
 * (store on a temporary database, writer thread, auth service, connection set, one libuv loop)
 * built once per process, and one TCP connection over 127.0.0.1 per input, driven by the input.
 *
 * Why loopback TCP and not a socketpair: the connection layer takes an accepted TCP socket and
 * asks it for the peer's address (trusted networks, windows, throttling are keyed by it), so the
 * harness accepts a real connection itself and hands it to conn_accept, exactly as listener.c
 * does. No product code is changed for it.
 *
 * An input is one option byte and then the client's byte stream:
 *   bits 0-1  the client's address: 0 and 3: 127.0.0.3 (untrusted); 1: 127.0.0.2 (a trusted
 *             network); 2: 127.0.0.4 (untrusted, but with an open POP-before-SMTP window of the
 *             seeded user);
 *   bit 2     the second service the target offers (SMTP: submission instead of MX);
 *   bits 3-7  chunk size: 0 sends the stream in one write, n in writes of n octets, each sent
 *             only after the server has read the one before (so the split is what the server
 *             sees, every time).
 * After the stream the client half-closes and reads until the server closes; the input ends
 * when the connection is freed, so every handle is closed and every session freed (LeakSanitizer
 * checks it). Replies go to the target's check function.
 *
 * Determinism: timeouts are an hour (they never fire), auth's failure delays are capped at 1 ms
 * (auth_cap_delay_for_tests) and its clock is moved past the throttle window and the cache TTL
 * after every input, and the database is reset before every input (no queue, the seeded
 * mailbox, no window but 127.0.0.4's). What stays is timing between the loop and the writer and
 * argon2id threads.
 *
 * POSTERN_FUZZ_SHOW=1 in the environment prints what the server answered to each input (for
 * writing seeds: run the target on one file with -runs=1).
 *
 * What it does not do: TLS (no certificate is configured: STARTTLS is refused), outbound
 * delivery (no queue runner), DNS.
 */
#ifndef POSTERN_FUZZ_SESSION_HARNESS_H
#define POSTERN_FUZZ_SESSION_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "server/net/conn.h"

struct store;

/* The seeded account: a local domain, a user, its password. */
#define HARNESS_DOMAIN   "example.test"
#define HARNESS_USER     "alice@example.test"
#define HARNESS_PASSWORD "s3cret"

struct harness_target {
    const struct conn_handler *handler;
    enum conn_service services[2]; /* option bit 1 picks one */
    /* Runs in a writer job before every input, after the reset; may be NULL. user_id: the seeded
     * user's. 0 or a negative code. */
    int (*seed)(struct store *st, int64_t user_id);
    /* Everything the server sent, once the connection is gone. Calls abort() on a violation. */
    void (*check)(const unsigned char *out, size_t len);
};

/* Builds the server on the first call; runs one input. */
void harness_run(const struct harness_target *t, const uint8_t *data, size_t size);

/* Aborts with the offending output when cond is false (a finding for libFuzzer). */
void harness_require(int cond, const char *what, const unsigned char *out, size_t len);

#endif
