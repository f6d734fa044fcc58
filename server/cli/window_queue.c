/*
 * window_queue.c - the window and queue commands' check and run functions, named by the table
 * in admin.c: `window list|open|close` (the POP-before-SMTP relay windows: an IPv4 address or
 * an IPv6 block of relay.window_ipv6_prefix bits, opened for --for or relay.window, optionally
 * tied to a user who must exist) and `queue list|flush|drop` (the outbound queue's entries; a
 * flush makes every entry due now and tells the running servers, storage/queue.h "Flush").
 *
 * What it does not do: parse the command line or pick the command (admin.c's dispatcher does,
 * through admin_internal.h), or hold any SQL (storage/store.c and storage/queue.c do).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "common/password.h"
#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "common/pure/date.h"
#include "common/pure/duration.h"
#include "server/cli/admin.h"
#include "server/cli/admin_internal.h"
#include "storage/queue.h"
#include "storage/store.h"

/* A window's key is its IPv4 address or its IPv6 block (relay.window_ipv6_prefix). */
int window_check_ip(const struct args *a, struct input *in)
{
    if (ip_parse(a->pos[0], &in->ip) != 0) {
        admin_say_error("invalid IP address \"%s\"", a->pos[0]);
        return -1;
    }
    ip_window_key(&in->ip, a->cfg->relay.window_ipv6_prefix, in->key, sizeof(in->key));
    return 0;
}

int window_check_open(const struct args *a, struct input *in)
{
    const char *user = a->opt[OPT_USER], *dur = a->opt[OPT_FOR];
    if (window_check_ip(a, in) != 0)
        return -1;
    if (user != NULL) {
        const char *why = NULL;
        /* No longer than user add accepts (struct input's address). */
        if (address_normalize(user, in->user, sizeof(in->address), &why) != 0) {
            admin_say_error("invalid address \"%s\": %s", user, why ? why : "bad syntax");
            return -1;
        }
    }
    in->duration_ms = a->cfg->relay.window_ms;
    if (dur != NULL && duration_parse(dur, &in->duration_ms) != 0) {
        admin_say_error("invalid duration \"%s\" (expected e.g. 90s, 30m, 2h)", dur);
        return -1;
    }
    if (in->duration_ms == 0) {
        admin_say_error("a window needs a duration above 0 (relay.window is 0; give --for)");
        return -1;
    }
    if (in->duration_ms > (uint64_t)INT64_MAX / 2) {
        admin_say_error("duration \"%s\" is too long", dur);
        return -1;
    }
    return 0;
}

int queue_check_id(const struct args *a, struct input *in)
{
    const char *s = a->pos[0];
    char *end = NULL;
    errno = 0;
    in->id = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || in->id <= 0 || s[0] == '+') {
        admin_say_error("invalid queue id \"%s\" (expected a number from queue list)", s);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- window */

static int print_window(void *ctx, const struct store_window *w)
{
    ++*(size_t *)ctx;
    char opened[32], expires[32];
    date_iso8601(w->opened_ms, opened, sizeof(opened));
    date_iso8601(w->expires_ms, expires, sizeof(expires));
    printf("%s user=%s opened=%s expires=%s relayed=%lld\n", w->key, w->user[0] ? w->user : "-",
           opened, expires, (long long)w->relayed);
    return 0;
}

int window_run_list(struct store *s, const struct args *a, const struct input *in)
{
    size_t rows = 0;
    int rc = admin_store_result(s, store_window_list(s, store_now_ms(), print_window, &rows), "");
    admin_say_if_empty(rc, rows, "no open windows");
    return rc;
}

int window_run_close(struct store *s, const struct args *a, const struct input *in)
{
    char msg[600];
    snprintf(msg, sizeof(msg), "no window for %s", in->key);
    int rc = admin_store_result(s, store_window_close(s, in->key), msg);
    if (rc == ADMIN_OK)
        printf("closed window %s\n", in->key);
    return rc;
}

int window_run_open(struct store *s, const struct args *a, const struct input *in)
{
    int64_t now = store_now_ms();
    int64_t duration_ms = (int64_t)in->duration_ms;
    int rc = ADMIN_OK;
    if (in->user[0] != '\0') {
        char msg[600];
        int64_t id;
        char hash[PASSWORD_HASH_BYTES];
        snprintf(msg, sizeof(msg), "no such user: %s", in->user);
        rc = admin_store_result(s, store_user_get(s, in->user, &id, hash, sizeof(hash)), msg);
    }
    if (rc == ADMIN_OK)
        rc = admin_store_result(s, store_window_open(s, in->key, in->user, now, duration_ms), "");
    if (rc == ADMIN_OK) {
        char expires[32], d[32];
        date_iso8601(now + duration_ms, expires, sizeof(expires));
        duration_format(in->duration_ms, d, sizeof(d));
        printf("opened window %s user=%s for=%s expires=%s\n", in->key,
               in->user[0] ? in->user : "-", d, expires);
    }
    return rc;
}

/* ---------------------------------------------------------------- queue */

static int print_queue_entry(void *ctx, const struct store_queue_entry *q)
{
    ++*(size_t *)ctx;
    char next[32];
    char err[300];
    date_iso8601(q->next_attempt_ms, next, sizeof(next));
    log_escape(err, sizeof(err), q->last_error, strlen(q->last_error));
    char quarantine[300] = "";
    if (q->quarantine != NULL) {
        char esc[280];
        snprintf(quarantine, sizeof(quarantine), " quarantine=%s",
                 log_escape(esc, sizeof(esc), q->quarantine, strlen(q->quarantine)));
    }
    printf("%lld %s %s attempts=%lld next=%s error=%s%s\n", (long long)q->id,
           q->sender[0] ? q->sender : "<>", q->recipient, (long long)q->attempts, next, err,
           quarantine);
    return 0;
}

int queue_run_list(struct store *s, const struct args *a, const struct input *in)
{
    size_t rows = 0;
    int rc = admin_store_result(s, store_queue_list(s, print_queue_entry, &rows), "");
    admin_say_if_empty(rc, rows, "queue is empty");
    return rc;
}

int queue_run_flush(struct store *s, const struct args *a, const struct input *in)
{
    /* The database is the only channel between this process and the running servers: on
     * PostgreSQL the flush's NOTIFY makes every node claim at once, on SQLite a server sees it
     * at its next scan (queue.h, Flush). */
    size_t due = 0;
    int rc = admin_store_result(s, store_queue_flush(s, store_now_ms(), &due), "");
    if (rc == ADMIN_OK)
        printf("flushed: %zu queue entries due now\n", due);
    return rc;
}

int queue_run_drop(struct store *s, const struct args *a, const struct input *in)
{
    char msg[100];
    snprintf(msg, sizeof(msg), "no such queue entry: %lld", in->id);
    int rc = admin_store_result(s, store_queue_drop(s, in->id), msg);
    if (rc == ADMIN_OK)
        printf("dropped queue entry %lld\n", in->id);
    return rc;
}
