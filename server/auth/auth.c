/*
 * auth.c - see auth.h. The verifier: requests, the FIFO in front of the threadpool, the cache, the
 * throttle tables, and the close path.
 *
 * A request is in exactly one place at a time: the user's lookup (a reader job, out only with
 * reader threads: inline it runs inside auth_verify), the FIFO (waiting for a threadpool slot),
 * the threadpool (running argon2id), or the ready list (its result is known already: cache hit,
 * refusal, store error, over-long password; delivered from a 0 ms uv timer so that done never
 * runs inside auth_verify()). Failure counting and cache insertion happen when the result is
 * known, before and whatever the delivery, so a cancelled request still counts.
 */
#include "server/auth/auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "common/pure/cidr.h"
#include "common/log.h"
#include "common/util.h"
#include "storage/reader.h"
#include "storage/store.h"

/* ======================================================================== verification */

#define CACHE_WAYS       4
#define CACHE_SETS       (AUTH_CACHE_ENTRIES / CACHE_WAYS)
#define THROTTLE_WAYS    8
#define THROTTLE_SETS    (AUTH_THROTTLE_ENTRIES / THROTTLE_WAYS)
#define CACHE_KEY_BYTES  32
#define THROTTLE_KEY_LEN 16
/* libuv's own default and cap for UV_THREADPOOL_SIZE (src/threadpool.c). */
#define UV_POOL_DEFAULT 4
#define UV_POOL_MAX     1024

_Static_assert(CACHE_SETS *CACHE_WAYS == AUTH_CACHE_ENTRIES, "cache sets");
_Static_assert(THROTTLE_SETS *THROTTLE_WAYS == AUTH_THROTTLE_ENTRIES, "throttle sets");

struct cache_entry {
    uint8_t key[CACHE_KEY_BYTES]; /* keyed hash of user, stored hash, password */
    int64_t expires_ms;           /* 0: unused */
};

struct throttle_entry {
    uint8_t key[THROTTLE_KEY_LEN]; /* keyed hash of the client or the name */
    uint32_t failures;             /* 0: unused */
    int64_t last_ms;               /* time of the last counted failure */
};

struct throttle {
    struct throttle_entry e[AUTH_THROTTLE_ENTRIES];
};

enum request_place {
    REQ_LOOKUP = 1, /* the user's row is being read (reader threads) */
    REQ_WAITING,    /* in a->waiting */
    REQ_RUNNING,    /* in the threadpool */
    REQ_READY,      /* in a->ready */
};

enum fail_reason {
    FAIL_NONE = 0,
    FAIL_PASSWORD,     /* wrong password for an existing user */
    FAIL_UNKNOWN_USER, /* no such user (checked against the dummy hash) */
    FAIL_BAD_NAME,     /* not a valid address (checked against the dummy hash) */
    FAIL_TOO_LONG,     /* password over PASSWORD_MAX_BYTES */
    FAIL_THROTTLED,    /* client over its limit: not checked */
    FAIL_STORE,        /* database failure: temporary */
};

struct auth_request {
    struct auth *a;                   /* borrowed: the owner */
    auth_done_fn done;                /* borrowed */
    void *ctx;                        /* borrowed */
    struct auth_request *prev, *next; /* in a->waiting or a->ready */
    enum request_place place;
    bool cancelled;
    bool known;    /* the user exists: hash is theirs, not the dummy */
    bool verified; /* set by the worker */
    enum fail_reason reason;
    uv_work_t work;
    struct reader_job lookup; /* the user's row: store_user_get */
    int64_t now_ms;           /* when auth_verify was called: the throttles' and cache's time */
    struct ip_addr ip;
    uint8_t ip_key[THROTTLE_KEY_LEN];
    uint8_t user_key[THROTTLE_KEY_LEN];
    uint8_t cache_key[CACHE_KEY_BYTES];
    struct auth_result result;
    char log_user[96]; /* escaped name as given, for the log line when it is not valid */
    char hash[PASSWORD_HASH_BYTES];
    size_t password_len;
    char password[PASSWORD_MAX_BYTES + 1]; /* wiped after verifying and at free */
};

struct request_list {
    struct auth_request *head, *tail;
    size_t count;
};

/*
 * What every verifier of the process shares, one per process whatever the number of loops: the
 * key, the cache and the throttle tables, so a client's failures add up and a cached success is
 * found whichever loop its connections land on. The tables are touched under mu, briefly (a
 * lookup or an update of one set, never while hashing a password or calling back).
 */
struct auth_shared {
    pthread_mutex_t mu;
    atomic_uint refs;                         /* verifiers holding it; the last one frees it */
    atomic_uint verifiers;                    /* verifiers made, for sharing the threadpool slots */
    _Atomic int64_t clock_skew_ms;            /* tests only */
    uint8_t key[crypto_generichash_KEYBYTES]; /* random per process, read-only; wiped at free */
    /* Guarded by mu. */
    struct cache_entry cache[AUTH_CACHE_ENTRIES];
    struct throttle by_ip;
    struct throttle by_user;
};

/* One loop's verifier: its requests, FIFO, timer and counters are the loop's own. */
struct auth {
    uv_loop_t *loop;        /* borrowed */
    uv_timer_t ready_timer; /* delivers a->ready; 0 ms, armed while the list is not empty */
    bool closing;
    bool timer_closed;
    struct auth_shared *sh; /* one reference */
    uint64_t delay_cap_ms;  /* tests only: 0, or the longest delay_ms */
    uint64_t pool_share;    /* threadpool slots all verifiers together may hold */
    struct request_list waiting;
    struct request_list ready;
    struct auth_stats stats;
    size_t lookups_out; /* requests whose user lookup is with the reader threads */
};

/* The loops' clocks are all uv_hrtime based (CLOCK_MONOTONIC), so their uv_now values agree up
 * to a loop turn: good enough for a 5 minute TTL and a 10 minute window. */
static int64_t auth_now_ms(const struct auth *a)
{
    return (int64_t)uv_now(a->loop) + atomic_load(&a->sh->clock_skew_ms);
}

void auth_advance_clock_for_tests(struct auth *a, int64_t ms)
{
    atomic_fetch_add(&a->sh->clock_skew_ms, ms);
}

/* A mutex that fails with default attributes means a programming error: nothing sane to do. */
static void shared_lock(struct auth_shared *sh)
{
    int rc = pthread_mutex_lock(&sh->mu);
    if (rc != 0) {
        log_error("auth", 0, "event=pthread-failed call=pthread_mutex_lock errno=%d", rc);
        abort();
    }
}

static void shared_unlock(struct auth_shared *sh)
{
    int rc = pthread_mutex_unlock(&sh->mu);
    if (rc != 0) {
        log_error("auth", 0, "event=pthread-failed call=pthread_mutex_unlock errno=%d", rc);
        abort();
    }
}

static void shared_unref(struct auth_shared **shp)
{
    struct auth_shared *sh = *shp;
    *shp = NULL;
    if (sh == NULL || atomic_fetch_sub(&sh->refs, 1) != 1)
        return;
    (void)pthread_mutex_destroy(&sh->mu); /* nobody holds it: the last reference is ours */
    sodium_memzero(sh, sizeof(*sh));
    free(sh);
}

void auth_cap_delay_for_tests(struct auth *a, uint64_t max_ms)
{
    a->delay_cap_ms = max_ms;
}

void auth_stats(const struct auth *a, struct auth_stats *out)
{
    *out = a->stats;
}

/* ---- lists ---- */

static void list_push(struct request_list *l, struct auth_request *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->count++;
}

static void list_remove(struct request_list *l, struct auth_request *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->count--;
}

static void request_free(struct auth_request *r)
{
    sodium_memzero(r, sizeof(*r));
    free(r);
}

/* ---- keyed hashes ---- */

/* Hashes tag and parts, each part prefixed with its length so that no two different inputs
 * give the same stream. */
static void keyed_hash(const struct auth *a, uint8_t *out, size_t outlen, uint8_t tag,
                       const void *p1, size_t n1, const void *p2, size_t n2, const void *p3,
                       size_t n3)
{
    crypto_generichash_state st;
    const void *parts[3] = {p1, p2, p3};
    size_t lens[3] = {n1, n2, n3};
    crypto_generichash_init(&st, a->sh->key, sizeof(a->sh->key), outlen);
    crypto_generichash_update(&st, &tag, 1);
    for (size_t i = 0; i < 3; i++) {
        uint8_t len_le[8];
        for (size_t b = 0; b < 8; b++)
            len_le[b] = (uint8_t)((uint64_t)lens[i] >> (8 * b));
        crypto_generichash_update(&st, len_le, sizeof(len_le));
        if (lens[i] > 0)
            crypto_generichash_update(&st, parts[i], lens[i]);
    }
    crypto_generichash_final(&st, out, outlen);
    sodium_memzero(&st, sizeof(st));
}

/* The set a key falls in: its first bytes, which are uniform because the hash is keyed. */
static size_t key_set(const uint8_t *key, size_t sets)
{
    uint32_t v =
        (uint32_t)key[0] | (uint32_t)key[1] << 8 | (uint32_t)key[2] << 16 | (uint32_t)key[3] << 24;
    return v % sets;
}

/* ---- cache ---- */

/* The cache and throttle functions below run with a->sh->mu held. */

static bool cache_has(struct auth *a, const uint8_t *key, int64_t now)
{
    struct cache_entry *set = &a->sh->cache[key_set(key, CACHE_SETS) * CACHE_WAYS];
    for (size_t i = 0; i < CACHE_WAYS; i++) {
        if (set[i].expires_ms > now && sodium_memcmp(set[i].key, key, CACHE_KEY_BYTES) == 0)
            return true;
    }
    return false;
}

static void cache_put(struct auth *a, const uint8_t *key, int64_t now)
{
    struct cache_entry *set = &a->sh->cache[key_set(key, CACHE_SETS) * CACHE_WAYS];
    struct cache_entry *victim = &set[0];
    for (size_t i = 0; i < CACHE_WAYS; i++) {
        if (set[i].expires_ms > 0 && sodium_memcmp(set[i].key, key, CACHE_KEY_BYTES) == 0) {
            victim = &set[i];
            break;
        }
        if (set[i].expires_ms < victim->expires_ms)
            victim = &set[i]; /* unused (0) or expired entries sort first */
    }
    memcpy(victim->key, key, CACHE_KEY_BYTES);
    victim->expires_ms = now + AUTH_CACHE_TTL_MS;
}

/* ---- throttle ---- */

static bool throttle_live(const struct throttle_entry *e, int64_t now)
{
    return e->failures > 0 && now - e->last_ms < AUTH_THROTTLE_WINDOW_MS;
}

static struct throttle_entry *throttle_find(struct throttle *t, const uint8_t *key, int64_t now)
{
    struct throttle_entry *set = &t->e[key_set(key, THROTTLE_SETS) * THROTTLE_WAYS];
    for (size_t i = 0; i < THROTTLE_WAYS; i++) {
        if (throttle_live(&set[i], now) && memcmp(set[i].key, key, THROTTLE_KEY_LEN) == 0)
            return &set[i];
    }
    return NULL;
}

static uint32_t throttle_count(struct throttle *t, const uint8_t *key, int64_t now)
{
    struct throttle_entry *e = throttle_find(t, key, now);
    return e != NULL ? e->failures : 0;
}

/* Counts a failure; returns the count including it. */
static uint32_t throttle_fail(struct throttle *t, const uint8_t *key, int64_t now)
{
    struct throttle_entry *e = throttle_find(t, key, now);
    if (e == NULL) {
        struct throttle_entry *set = &t->e[key_set(key, THROTTLE_SETS) * THROTTLE_WAYS];
        e = &set[0];
        for (size_t i = 0; i < THROTTLE_WAYS; i++) {
            struct throttle_entry *c = &set[i];
            if (!throttle_live(c, now)) {
                e = c;
                break;
            }
            if (c->failures < e->failures ||
                (c->failures == e->failures && c->last_ms < e->last_ms))
                e = c;
        }
        memcpy(e->key, key, THROTTLE_KEY_LEN);
        e->failures = 0;
    }
    if (e->failures < UINT32_MAX)
        e->failures++;
    e->last_ms = now;
    return e->failures;
}

static void throttle_clear(struct throttle *t, const uint8_t *key, int64_t now)
{
    struct throttle_entry *e = throttle_find(t, key, now);
    if (e != NULL)
        memset(e, 0, sizeof(*e));
}

static uint64_t delay_for(uint32_t failures)
{
    if (failures == 0)
        return 0;
    uint64_t d = AUTH_DELAY_FIRST_MS;
    for (uint32_t i = 1; i < failures && d < AUTH_DELAY_MAX_MS; i++)
        d *= 2;
    return d < AUTH_DELAY_MAX_MS ? d : AUTH_DELAY_MAX_MS;
}

/* ---- results ---- */

static const char *reason_name(enum fail_reason r)
{
    switch (r) {
    case FAIL_NONE:
        return "none";
    case FAIL_PASSWORD:
        return "password";
    case FAIL_UNKNOWN_USER:
        return "unknown-user";
    case FAIL_BAD_NAME:
        return "invalid-name";
    case FAIL_TOO_LONG:
        return "password-too-long";
    case FAIL_THROTTLED:
        return "throttled";
    case FAIL_STORE:
        return "store";
    }
    return "?";
}

static void log_result(const struct auth_request *r)
{
    char ip[INET6_ADDRSTRLEN];
    ip_format(&r->ip, ip, sizeof(ip));
    char escaped[96];
    const char *user = r->log_user;
    if (r->result.user[0] != '\0')
        user = log_escape(escaped, sizeof(escaped), r->result.user, strlen(r->result.user));
    const char *cached = r->result.cached ? "yes" : "no";
    if (r->result.ok)
        log_info("auth", 0, "event=auth result=ok user=%s ip=%s cached=%s", user, ip, cached);
    else if (r->result.temporary)
        log_warn("auth", 0, "event=auth result=error user=%s ip=%s cached=no reason=store", user,
                 ip);
    else
        log_info("auth", 0,
                 "event=auth result=fail user=%s ip=%s cached=no reason=%s delay_ms=%llu%s", user,
                 ip, reason_name(r->reason), (unsigned long long)r->result.delay_ms,
                 r->result.too_many ? " too_many=yes" : "");
}

/*
 * The outcome is known: count it, fill the result, log it. Runs once per request, on the loop,
 * whether or not the request was cancelled.
 */
static void settle(struct auth *a, struct auth_request *r, bool ok)
{
    int64_t now = auth_now_ms(a);
    struct auth_result *res = &r->result;
    res->ok = ok;
    if (ok) {
        a->stats.succeeded++;
        shared_lock(a->sh);
        throttle_clear(&a->sh->by_user, r->user_key, now);
        if (!res->cached)
            cache_put(a, r->cache_key, now);
        shared_unlock(a->sh);
        memcpy(res->hash, r->hash, sizeof(res->hash));
    } else if (r->reason == FAIL_STORE) {
        a->stats.temporary++;
        res->temporary = true;
        res->user_id = 0;
    } else if (r->reason == FAIL_THROTTLED) {
        a->stats.refused++;
        res->user_id = 0;
        res->delay_ms = AUTH_DELAY_MAX_MS;
        res->too_many = true;
    } else {
        a->stats.failed++;
        res->user_id = 0;
        shared_lock(a->sh);
        uint32_t by_ip = throttle_fail(&a->sh->by_ip, r->ip_key, now);
        uint32_t by_user = throttle_fail(&a->sh->by_user, r->user_key, now);
        shared_unlock(a->sh);
        res->delay_ms = delay_for(by_ip > by_user ? by_ip : by_user);
        res->too_many = by_ip >= AUTH_IP_MAX_FAILURES;
    }
    if (a->delay_cap_ms > 0 && res->delay_ms > a->delay_cap_ms)
        res->delay_ms = a->delay_cap_ms;
    log_result(r);
}

static void deliver(struct auth_request *r)
{
    struct auth_result res = r->result;
    auth_done_fn done = r->done;
    void *ctx = r->ctx;
    request_free(r);
    done(ctx, &res);
}

static void maybe_free_auth(struct auth *a)
{
    if (a->closing && a->timer_closed && a->stats.in_flight == 0 && a->lookups_out == 0) {
        shared_unref(&a->sh);
        sodium_memzero(a, sizeof(*a));
        free(a);
    }
}

static void ready_cb(uv_timer_t *t)
{
    struct auth *a = container_of(t, struct auth, ready_timer);
    /* Only the ones ready now: a done that starts another request gets it delivered on a later
     * turn. auth_free() from a done empties the list, which ends this loop. */
    size_t n = a->ready.count;
    while (n-- > 0 && a->ready.head != NULL && !a->closing) {
        struct auth_request *r = a->ready.head;
        list_remove(&a->ready, r);
        deliver(r);
    }
    if (!a->closing && a->ready.count > 0)
        uv_timer_start(&a->ready_timer, ready_cb, 0, 0);
}

static void make_ready(struct auth *a, struct auth_request *r)
{
    sodium_memzero(r->password, sizeof(r->password)); /* the result is known: no more use */
    if (r->cancelled) {
        request_free(r); /* cancelled during its lookup: settled (counted), never answered */
        return;
    }
    r->place = REQ_READY;
    list_push(&a->ready, r);
    if (!uv_is_active((uv_handle_t *)&a->ready_timer)) {
        /* Starting a valid timer cannot fail (libuv returns UV_EINVAL only for a closing one,
         * and a closing auth takes no requests). */
        (void)uv_timer_start(&a->ready_timer, ready_cb, 0, 0);
    }
}

/* ---- the threadpool ---- */

/* On a worker thread: touches only the request's own fields. */
static void verify_work(uv_work_t *w)
{
    struct auth_request *r = container_of(w, struct auth_request, work);
    r->verified = password_verify(r->hash, r->password, r->password_len);
    sodium_memzero(r->password, sizeof(r->password));
}

static void pump(struct auth *a);

static void verify_after(uv_work_t *w, int status)
{
    struct auth_request *r = container_of(w, struct auth_request, work);
    struct auth *a = r->a;
    a->stats.in_flight--;
    if (a->closing) {
        request_free(r);
        maybe_free_auth(a);
        return;
    }
    /* status is UV_ECANCELED only after uv_cancel(), which is never called; the dummy hash
     * never verifies as a success, whatever the password. */
    bool ok = status == 0 && r->verified && r->known;
    if (!ok && r->reason == FAIL_NONE)
        r->reason = FAIL_PASSWORD;
    settle(a, r, ok);
    pump(a);
    if (r->cancelled)
        request_free(r);
    else
        deliver(r);
}

/* Moves requests from the FIFO into the threadpool while there is room. */
static void pump(struct auth *a)
{
    /* The threadpool is the process's, shared by every loop: the verifiers split the slots. */
    unsigned n = atomic_load(&a->sh->verifiers);
    uint64_t limit = a->pool_share / (n > 0 ? n : 1);
    a->stats.in_flight_limit = limit > 0 ? limit : 1;
    while (!a->closing && a->waiting.head != NULL &&
           a->stats.in_flight < a->stats.in_flight_limit) {
        struct auth_request *r = a->waiting.head;
        list_remove(&a->waiting, r);
        a->stats.waiting--;
        int rc = uv_queue_work(a->loop, &r->work, verify_work, verify_after);
        if (rc != 0) {
            /* Cannot happen with a valid loop and callbacks; answer "try later" rather than
             * "wrong password". */
            log_error("auth", 0, "event=queue-work-failed error=%s", uv_strerror(rc));
            sodium_memzero(r->password, sizeof(r->password));
            r->reason = FAIL_STORE;
            settle(a, r, false);
            make_ready(a, r);
            continue;
        }
        r->place = REQ_RUNNING;
        a->stats.hashes++;
        a->stats.in_flight++;
        if (a->stats.in_flight > a->stats.in_flight_max)
            a->stats.in_flight_max = a->stats.in_flight;
    }
}

/* ---- public ---- */

static uint64_t threadpool_size(void)
{
    /* Read the way libuv reads it (src/threadpool.c init_threads). */
    const char *v = getenv("UV_THREADPOOL_SIZE");
    long n = UV_POOL_DEFAULT;
    if (v != NULL) {
        char *end = NULL;
        n = strtol(v, &end, 10);
        if (end == v)
            n = 0;
    }
    if (n <= 0)
        n = 1;
    if (n > UV_POOL_MAX)
        n = UV_POOL_MAX;
    return (uint64_t)n;
}

/* A verifier on loop using sh (a reference is taken on success). */
static int verifier_new(uv_loop_t *loop, struct auth_shared *sh, struct auth **out)
{
    struct auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    a->loop = loop;
    uint64_t pool = threadpool_size();
    a->pool_share = pool / 2 > 0 ? pool / 2 : 1;
    int rc = uv_timer_init(loop, &a->ready_timer);
    if (rc != 0) {
        free(a);
        return rc;
    }
    atomic_fetch_add(&sh->refs, 1);
    atomic_fetch_add(&sh->verifiers, 1);
    a->sh = sh;
    unsigned n = atomic_load(&sh->verifiers);
    a->stats.in_flight_limit = a->pool_share / n > 0 ? a->pool_share / n : 1;
    *out = a;
    return 0;
}

int auth_new_peer(uv_loop_t *loop, struct auth *peer, struct auth **out)
{
    *out = NULL;
    if (loop == NULL || peer == NULL || peer->closing)
        return -EINVAL;
    return verifier_new(loop, peer->sh, out);
}

int auth_new(uv_loop_t *loop, struct auth **out)
{
    *out = NULL;
    if (loop == NULL)
        return -EINVAL;
    if (password_init() != 0)
        return -1;
    struct auth_shared *sh = calloc(1, sizeof(*sh));
    if (sh == NULL)
        return -ENOMEM;
    int rc = pthread_mutex_init(&sh->mu, NULL);
    if (rc != 0) {
        free(sh);
        return -rc;
    }
    randombytes_buf(sh->key, sizeof(sh->key));
    struct auth *a = NULL;
    atomic_store(&sh->refs, 1); /* ours, until the verifier holds its own */
    rc = verifier_new(loop, sh, &a);
    shared_unref(&sh);
    if (rc != 0)
        return rc;
    /* Hashing the dummy takes as long as a real verification: pay it at startup, not on the
     * loop during the first unknown user's login. */
    (void)password_dummy_hash();
    *out = a;
    return 0;
}

static void timer_closed_cb(uv_handle_t *h)
{
    struct auth *a = container_of((uv_timer_t *)h, struct auth, ready_timer);
    a->timer_closed = true;
    maybe_free_auth(a);
}

void auth_free(struct auth **ap)
{
    if (ap == NULL || *ap == NULL)
        return;
    struct auth *a = *ap;
    *ap = NULL;
    a->closing = true;
    struct auth_request *r;
    while ((r = a->waiting.head) != NULL) {
        list_remove(&a->waiting, r);
        a->stats.waiting--;
        a->stats.cancelled++;
        request_free(r);
    }
    while ((r = a->ready.head) != NULL) {
        list_remove(&a->ready, r);
        a->stats.cancelled++;
        request_free(r);
    }
    /* Running requests are freed by verify_after, which sees a->closing. */
    uv_close((uv_handle_t *)&a->ready_timer, timer_closed_cb);
}

void auth_cancel(struct auth_request *r)
{
    if (r == NULL)
        return;
    struct auth *a = r->a;
    if (r->cancelled || a->closing)
        return;
    a->stats.cancelled++;
    switch (r->place) {
    case REQ_WAITING:
        list_remove(&a->waiting, r);
        a->stats.waiting--;
        request_free(r);
        break;
    case REQ_READY:
        list_remove(&a->ready, r);
        request_free(r);
        break;
    case REQ_RUNNING:
        /* argon2id cannot be stopped; verify_after counts the result and frees. */
        r->cancelled = true;
        break;
    case REQ_LOOKUP:
        /* The reader has the job: the request goes on to its verdict, unanswered. */
        r->cancelled = true;
        break;
    }
}

static void after_lookup(struct auth *a, struct auth_request *r, int st);

/* On a reader thread, or inline on the loop: the request's own fields only. */
static int lookup_run(struct store *st, struct reader_job *job)
{
    struct auth_request *r = container_of(job, struct auth_request, lookup);
    int rc = store_user_get(st, r->result.user, &r->result.user_id, r->hash, sizeof(r->hash));
    if (rc != STORE_OK && rc != STORE_NOT_FOUND)
        log_error("auth", 0, "event=store-failed error=\"%s\"", store_errmsg(st));
    return rc;
}

/* A lookup that was out is back, on the loop. */
static void lookup_done(struct reader_job *job, int st)
{
    struct auth_request *r = container_of(job, struct auth_request, lookup);
    struct auth *a = r->a;
    a->lookups_out--;
    if (a->closing) {
        request_free(r);
        maybe_free_auth(a);
        return;
    }
    /* Cancelled or not, it goes on to its verdict: a client that leaves right after a guess
     * must not escape the count (auth.h). A cancelled one is freed, unanswered, once settled. */
    after_lookup(a, r, st);
}

struct auth_request *auth_verify(struct auth *a, struct reader *reads, const struct ip_addr *ip,
                                 const char *username, const char *password, size_t pwlen,
                                 auth_done_fn done, void *ctx)
{
    if (a == NULL || reads == NULL || ip == NULL || username == NULL ||
        (password == NULL && pwlen > 0) || done == NULL || a->closing)
        return NULL;
    struct auth_request *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->a = a;
    r->done = done;
    r->ctx = ctx;
    r->ip = *ip;
    a->stats.requests++;

    struct ip_addr counted = *ip;
    if (counted.family == AF_INET6)
        ip_mask(&counted, AUTH_IPV6_PREFIX);
    keyed_hash(a, r->ip_key, sizeof(r->ip_key), 'i', &counted.family, sizeof(counted.family),
               counted.bytes, sizeof(counted.bytes), NULL, 0);

    int64_t now = auth_now_ms(a);
    size_t ulen = strlen(username);
    log_escape(r->log_user, sizeof(r->log_user), username, ulen);

    /* A blocked client gets nothing looked up, verified or cached. */
    shared_lock(a->sh);
    bool blocked = throttle_count(&a->sh->by_ip, r->ip_key, now) >= AUTH_IP_MAX_FAILURES;
    shared_unlock(a->sh);
    if (blocked) {
        r->reason = FAIL_THROTTLED;
        settle(a, r, false);
        make_ready(a, r);
        return r;
    }

    const char *why = NULL;
    bool valid = address_normalize(username, r->result.user, sizeof(r->result.user), &why) == 0;
    if (!valid)
        r->result.user[0] = '\0';
    if (valid)
        keyed_hash(a, r->user_key, sizeof(r->user_key), 'u', r->result.user, strlen(r->result.user),
                   NULL, 0, NULL, 0);
    else
        keyed_hash(a, r->user_key, sizeof(r->user_key), 'u', username, ulen, NULL, 0, NULL, 0);

    if (pwlen > PASSWORD_MAX_BYTES) {
        /* password_verify refuses it anyway; no point spending argon2id. Timing tells only
         * that the password was too long, never whether the user exists. */
        r->reason = FAIL_TOO_LONG;
        settle(a, r, false);
        make_ready(a, r);
        return r;
    }

    /* Copied now: the lookup may complete after the caller has wiped its copy. */
    if (pwlen > 0)
        memcpy(r->password, password, pwlen);
    r->password_len = pwlen;
    r->now_ms = now;
    if (!valid) {
        r->reason = FAIL_BAD_NAME;
        after_lookup(a, r, STORE_NOT_FOUND);
        return r;
    }
    r->lookup.run = lookup_run;
    r->lookup.done = lookup_done;
    int st;
    if (reader_submit(reads, &r->lookup, &st) == READER_PENDING) {
        r->place = REQ_LOOKUP;
        a->lookups_out++;
        return r;
    }
    after_lookup(a, r, st);
    return r;
}

/* The user's row is known (st: STORE_OK, STORE_NOT_FOUND or a failure): a cache hit, a store
 * failure, or a verification queued for the threadpool. */
static void after_lookup(struct auth *a, struct auth_request *r, int st)
{
    if (st == STORE_OK) {
        r->known = true;
    } else if (st != STORE_NOT_FOUND) {
        r->reason = FAIL_STORE;
        settle(a, r, false);
        make_ready(a, r);
        return;
    } else if (r->reason == FAIL_NONE) {
        r->reason = FAIL_UNKNOWN_USER;
    }

    if (r->known) {
        keyed_hash(a, r->cache_key, sizeof(r->cache_key), 'c', r->result.user,
                   strlen(r->result.user), r->hash, strlen(r->hash), r->password, r->password_len);
        shared_lock(a->sh);
        bool hit = cache_has(a, r->cache_key, r->now_ms);
        shared_unlock(a->sh);
        if (hit) {
            a->stats.cache_hits++;
            r->result.cached = true;
            settle(a, r, true);
            make_ready(a, r);
            return;
        }
    } else {
        /* Equal time: the same argon2id work as a real user's check. */
        const char *dummy = password_dummy_hash();
        memcpy(r->hash, dummy, strlen(dummy) + 1);
    }

    r->place = REQ_WAITING;
    list_push(&a->waiting, r);
    a->stats.waiting++;
    pump(a);
    if (a->stats.waiting > a->stats.waiting_max)
        a->stats.waiting_max = a->stats.waiting;
}
