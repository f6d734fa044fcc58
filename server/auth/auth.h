/*
 * auth.h - logging in: password verification off the event loop with a short cache of
 * successes, and throttling of failures. Shared by the SMTP session (AUTH, RFC 4954) and the POP3
 * session (AUTH, RFC 5034; USER/PASS, RFC 1939 7). Decoding the SASL exchange that yields the
 * user and password is common/pure/sasl.h's job.
 *
 *   - struct auth: one per server. auth_verify() normalises the name (address_normalize), looks
 *     the stored argon2id hash up through the caller's reader (storage/reader.h: one indexed
 *     row, inline on the loop's connection or on a reader thread), checks the cache, and otherwise
 * verifies in the libuv threadpool (uv_queue_work), never on the loop (argon2id takes tens of
 * milliseconds). The result always arrives through done on the loop thread, never from inside
 * auth_verify(). It never blocks and never sleeps: a failure comes back with delay_ms, and the
 * session arms its own uv timer before answering.
 *
 * Equal time: an unknown user, or a name that is not a valid address, is verified against
 * password_dummy_hash(), so neither the answer nor its timing reveals whether an account exists
 * (popa3d's AUTH_DUMMY_SALT does the same). Only a cache hit is faster, and a hit needs the right
 * password.
 *
 * The cache remembers successful verifications for AUTH_CACHE_TTL_MS, keyed by a keyed BLAKE2b
 * hash (random key per process) of the normalised user, the stored hash string and the password:
 * never the password itself. The stored hash changes whenever the password does (new salt), so a
 * password change invalidates the entry at the next attempt without anybody telling the cache.
 * The TTL is not renewed by a hit, so each password is re-verified with argon2id at least once
 * per TTL.
 *
 * Throttling (failures = wrong password, unknown user, invalid name, over-long password):
 *   - Failures are counted per client and per user name in two bounded tables. A client is its
 *     IPv4 address, or its IPv6 /64 (one host usually owns a whole /64 and can pick any address
 *     inside it). A user name is the normalised address, existing or not (the raw name when it
 *     is not a valid address). A count is forgotten AUTH_THROTTLE_WINDOW_MS after its last
 *     failure.
 *   - Every failure carries delay_ms = AUTH_DELAY_FIRST_MS << (n - 1), capped at
 *     AUTH_DELAY_MAX_MS, where n counts this failure and is the larger of the client's and the
 *     user's count: 250, 500, 1000, 2000, 4000, 8000, 8000 ... ms. RFC 4954 4 lets a server
 *     delay a failed AUTH; the first failure is delayed too (as OpenSMTPD does), which a typo
 *     hardly notices.
 *   - A client with AUTH_IP_MAX_FAILURES counted failures is refused outright: no store lookup,
 *     no argon2id, no cache (a hit would confirm a guess cheaply), failure with AUTH_DELAY_MAX_MS
 *     and too_many, until its count is forgotten. Refused attempts do not count, so the block
 *     ends AUTH_THROTTLE_WINDOW_MS after the last real failure.
 *   - A user name is never blocked, only delayed: blocking it would let anybody lock a victim
 *     out by failing on purpose from many addresses.
 *   - Success clears the user's count, not the client's: otherwise an attacker holding one valid
 *     account could log into it between guesses at other accounts and never be blocked.
 *   - A request cancelled while argon2id runs still counts its failure: closing the connection
 *     right after sending a guess must not escape the count.
 *   - Counting failures per connection and disconnecting after a few is the session's business.
 *
 * Concurrency: at most stats.in_flight_limit verifications run in the threadpool at once (half
 * of UV_THREADPOOL_SIZE, at least 1); the rest wait in a FIFO. argon2id takes 64 MiB and tens of
 * milliseconds each, so a flood of AUTH attempts can neither starve the threadpool's other users
 * nor take unbounded memory. The FIFO itself is bounded by the connection limits, since a session
 * has at most one request outstanding.
 *
 * Logging: one line per completed request, sub=auth, "event=auth result=ok|fail|error user=...
 * ip=... cached=yes|no" and reason= for failures. Never the password.
 *
 * Ownership: the struct auth owns its requests. A request handle is valid from auth_verify()
 * until done has been called (done is its last use) or until auth_cancel(). Passwords are copied
 * into the request and wiped (sodium_memzero) right after use and again when it is freed.
 *
 * Several loops: auth_new makes the first verifier, auth_new_peer one more for another loop. A
 * verifier's requests, FIFO and counters belong to its loop; the key, the cache and both throttle
 * tables are shared by every verifier made from the first (under a mutex), so failures from one
 * client add up and a cached success is found whichever loop its connections land on. The
 * threadpool slots (half the pool) are split evenly between the verifiers.
 *
 * Threading: every function here runs on its verifier's loop thread; only the argon2id step runs
 * elsewhere, and the shared tables are locked for each lookup or update.
 */
#ifndef POSTERN_AUTH_H
#define POSTERN_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/pure/address.h"
#include "common/pure/sasl.h"
#include "common/password.h"

struct ip_addr;
struct reader;

/* ---- verification ---- */

/* Successful verifications are remembered this long (not renewed by hits). */
#define AUTH_CACHE_TTL_MS (5 * 60 * 1000)
/* Cache size in entries; when a set is full the entry closest to expiry goes. */
#define AUTH_CACHE_ENTRIES 4096
/* Entries per throttle table (clients, user names); when a set is full an expired entry goes,
 * else the one with the fewest failures, so a flood of new names cannot push out the counts
 * that matter. */
#define AUTH_THROTTLE_ENTRIES 4096
/* A failure count is forgotten this long after its last failure. */
#define AUTH_THROTTLE_WINDOW_MS (10 * 60 * 1000)
/* Failures after which a client is refused without verifying. */
#define AUTH_IP_MAX_FAILURES 10
#define AUTH_DELAY_FIRST_MS  250
#define AUTH_DELAY_MAX_MS    8000
/* IPv6 clients are counted by this prefix. */
#define AUTH_IPV6_PREFIX 64

struct auth;
struct auth_request;

struct auth_result {
    bool ok;
    /* The database failed (ok is false): answer a temporary failure (RFC 4954 "454 4.7.0",
     * RFC 5034 -ERR [SYS/TEMP]), not "wrong password". Not counted, no delay. */
    bool temporary;
    /* The client is over AUTH_IP_MAX_FAILURES (this failure took it there, or it was refused
     * without checking): answer after delay_ms, then disconnect. */
    bool too_many;
    /* From the cache, without argon2id. */
    bool cached;
    int64_t user_id; /* ok: the user's id; 0 otherwise */
    /* ok: the stored hash string the password matched; "" otherwise. A session that outlives
     * the login keeps it to notice a later deletion or password change
     * (store_user_unchanged). */
    char hash[PASSWORD_HASH_BYTES];
    /* The normalised address ("alice@example.test"); "" when the name is not a valid address. */
    char user[ADDRESS_STRLEN];
    /* How long the caller must wait before answering a failure; 0 for success. */
    uint64_t delay_ms;
};

/* Runs on the loop thread, exactly once per request that was not cancelled. r is valid during
 * the call only. The request handle is already freed when done runs: forget it (never
 * auth_cancel() it). done may call auth_verify() and auth_free(). */
typedef void (*auth_done_fn)(void *ctx, const struct auth_result *r);

struct auth_stats {
    uint64_t requests;   /* auth_verify() calls that returned a request */
    uint64_t hashes;     /* argon2id verifications handed to the threadpool */
    uint64_t cache_hits; /* successes answered from the cache */
    uint64_t refused;    /* refused without checking: client over its limit */
    uint64_t succeeded;  /* ok results, cached or not */
    uint64_t failed;     /* counted failures (refusals not included) */
    uint64_t temporary;  /* database failures */
    uint64_t cancelled;  /* auth_cancel() calls, and requests dropped by auth_free() */
    uint64_t in_flight;  /* in the threadpool now */
    uint64_t in_flight_max;
    uint64_t in_flight_limit;
    uint64_t waiting; /* in the FIFO now */
    uint64_t waiting_max;
};

/*
 * Sets up the tables, a random key for the cache and the throttle, and a uv timer on loop that
 * delivers results not computed in the threadpool; also computes password_dummy_hash() now
 * rather than on the first unknown user. Returns 0, or a negative code (-ENOMEM, libsodium
 * failure -1, a libuv error) with *out NULL.
 */
int auth_new(uv_loop_t *loop, struct auth **out);
/*
 * A verifier for another loop sharing peer's key, cache and throttle tables. Call it before loop
 * runs or on loop's own thread; peer must not be freed yet (the tables live until the last
 * verifier is freed). 0, or a negative code with *out NULL.
 */
int auth_new_peer(uv_loop_t *loop, struct auth *peer, struct auth **out);
/*
 * Starts closing: requests not yet in the threadpool are dropped, the others are left to finish
 * and then dropped; no done is called after this, and no request handle may be used again. The
 * memory is freed once the loop has run the timer's close callback and the last threadpool
 * item, so keep running the loop (as after uv_close). Sets *a to NULL; NULL is a no-op.
 */
void auth_free(struct auth **a);

/*
 * Verifies username / password[0..pwlen) for a client at ip, reading the user through reads
 * (the loop's reader). done(ctx, result) runs later on the loop, never inside this call.
 * Returns the request handle, or NULL (done will never be called) when an argument is NULL, the
 * auth is closing or memory ran out: answer a temporary failure then. The password is copied;
 * the caller should wipe its own copy.
 */
struct auth_request *auth_verify(struct auth *a, struct reader *reads, const struct ip_addr *ip,
                                 const char *username, const char *password, size_t pwlen,
                                 auth_done_fn done, void *ctx);
/* The session is closing: done will not be called for r. Memory is freed now, or when the
 * threadpool item finishes. r must be a request whose done has not run yet. NULL is a no-op. */
void auth_cancel(struct auth_request *r);

/* A copy of the counters. */
void auth_stats(const struct auth *a, struct auth_stats *out);

/* Tests only: moves the clock used for the cache TTL and throttle expiry forward by ms, for
 * every verifier sharing a's tables. */
void auth_advance_clock_for_tests(struct auth *a, int64_t ms);
/* Tests only: failures carry a delay_ms of at most max_ms (0: the real delays). The fuzz targets
 * that drive whole sessions fail thousands of logins a second and cannot wait 250 ms to 8 s for
 * each; the sessions still arm their timers, so the delayed-answer path is exercised. */
void auth_cap_delay_for_tests(struct auth *a, uint64_t max_ms);

#endif
