/*
 * test_queue_notice.c - storage/queue_notice.c (delivery status notifications, RFC 3461) and the
 * DSN columns store_deliver writes, against a real database file in a temporary directory:
 *   - store_deliver keeps ENVID and RET per message, NOTIFY and ORCPT per queue row; claims and
 *     the message facts give them back for the outbound client;
 *   - a failure bounces only the entries whose NOTIFY asks for it (FAILURE, or no NOTIFY), with
 *     ENVID and ORCPT echoed and RET=HDRS returning the headers; NOTIFY=NEVER alone removes the
 *     entry with no bounce (route not-asked);
 *   - a delay notice goes once, only when the entry is old enough, asked for DELAY or gave no
 *     NOTIFY, and its sender is not the null sender;
 *   - a local NOTIFY=SUCCESS recipient's "delivered" notice is stored with the delivery, never
 *     for the null sender.
 * Checks of what is in the database go through a connection of their own. The tests run on
 * SQLite, then on PostgreSQL when there is a server (store_fixture.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/pure/dsn.h"
#include "storage/mailbox.h"
#include "storage/queue.h"
#include "storage/store.h"
#include "tests/unit/store_fixture.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define T0           1717502400000LL /* 2024-06-04 12:00:00 UTC */

struct fixture {
    char dir[64];
    char path[1024];
    struct store *s;
    int64_t alice;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    store_test_place_new(f->dir, sizeof(f->dir), "notice", f->path, sizeof(f->path));
    f->s = open_ok(f->path);
    f->alice = store_test_user(f->s, "alice@example.test");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(&f->s);
    store_test_place_free(f->dir, f->path);
    free(f);
    return 0;
}

/* The first column of the first row of sql as text (NULL: ""), malloc'd, through a separate
 * connection: what is on disk. */
__attribute__((format(printf, 2, 3))) static char *query(const char *path, const char *fmt, ...)
{
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return store_test_query_blob(path, sql, NULL);
}

static long long query_int(const char *path, const char *sql)
{
    char *t = query(path, "%s", sql);
    long long v = atoll(t);
    free(t);
    return v;
}

static const char body_text[] = "From: Alice <alice@example.test>\r\n"
                                "Subject: the original\r\n"
                                "\r\n"
                                "ORIGINAL-BODY-TEXT\r\n";

/* Four remote recipients, each with its NOTIFY (and the first two with an ORCPT). */
static const char *const remotes[] = {"never@r.test", "failure@r.test", "none@r.test",
                                      "success@r.test"};
static const unsigned notify[] = {SMTP_NOTIFY_NEVER, SMTP_NOTIFY_FAILURE, 0, SMTP_NOTIFY_SUCCESS};
static const char *const orcpt[] = {"rfc822;n@r.test", "rfc822;old+2Bf@r.test", NULL, NULL};

static int64_t deliver(struct fixture *f, const char *sender, size_t n_remote)
{
    struct store_delivery d = {
        .sender = sender,
        .body = (const unsigned char *)body_text,
        .body_len = sizeof(body_text) - 1,
        .remote_rcpts = remotes,
        .n_remote = n_remote,
        .received_ms = T0,
        .dsn_envid = "QQ314159",
        .dsn_ret = SMTP_DSN_RET_HDRS,
        .remote_notify = notify,
        .remote_orcpt = orcpt,
    };
    int rc = store_deliver(f->s, &d);
    if (rc != STORE_OK)
        fail_msg("store_deliver: %d %s", rc, store_errmsg(f->s));
    return d.message_id_out;
}

static int64_t entry(struct fixture *f, const char *rcpt)
{
    char *t = query(f->path, "SELECT id FROM queue WHERE recipient = '%s'", rcpt);
    int64_t id = atoll(t);
    free(t);
    return id;
}

/* The body of alice's newest mailbox entry, or "" when she has none. */
static char *alice_newest(struct fixture *f)
{
    return query(f->path,
                 "SELECT coalesce((SELECT m.body FROM mailbox b JOIN messages m"
                 " ON m.id = b.message_id WHERE b.user_id = %lld ORDER BY b.id DESC LIMIT 1),"
                 " '')",
                 (long long)f->alice);
}

static void test_stored_and_claimed(void **state)
{
    struct fixture *f = *state;
    int64_t mid = deliver(f, "alice@example.test", 4);
    struct store_queue_claims c = {0};
    assert_int_equal(store_queue_claim_due(f->s, "n1", T0, STORE_QUEUE_LEASE_MS, 10, NULL, 0, &c),
                     STORE_OK);
    assert_int_equal(c.n, 4);
    for (size_t i = 0; i < c.n; i++) {
        size_t k = 0;
        while (k < ARRAY_LEN(remotes) && strcmp(remotes[k], c.v[i].recipient) != 0)
            k++;
        assert_true(k < ARRAY_LEN(remotes));
        assert_int_equal(c.v[i].notify, notify[k]);
        assert_string_equal(c.v[i].orcpt, orcpt[k] != NULL ? orcpt[k] : "");
    }
    store_queue_claims_free(&c);
    struct store_message_facts facts;
    assert_int_equal(store_queue_message_facts(f->s, mid, &facts), STORE_OK);
    assert_string_equal(facts.dsn_envid, "QQ314159");
    assert_int_equal(facts.dsn_ret, SMTP_DSN_RET_HDRS);
}

static void test_fail_bounces_only_who_asked(void **state)
{
    struct fixture *f = *state;
    deliver(f, "alice@example.test", 4);
    int64_t ids[4];
    struct dsn_recipient why[4];
    for (size_t i = 0; i < 4; i++) {
        ids[i] = entry(f, remotes[i]);
        why[i] = (struct dsn_recipient){
            .address = remotes[i], .reply_code = 550, .reply = "550 5.1.1 unknown"};
    }
    struct store_queue_failure fl = {.hostname = "mail.example.test",
                                     .node = "n1",
                                     .now_ms = T0 + 1000,
                                     .ids = ids,
                                     .rcpts = why,
                                     .n = 4};
    assert_int_equal(store_queue_fail(f->s, &fl), STORE_OK);
    assert_int_equal(fl.route_out, STORE_BOUNCE_LOCAL);
    assert_int_equal(fl.removed_out, 4);
    char *b = alice_newest(f);
    assert_non_null(strstr(b, "\r\nOriginal-Envelope-Id: QQ314159\r\n"));
    assert_non_null(strstr(b, "\r\nOriginal-Recipient: rfc822; old+f@r.test\r\n"));
    assert_non_null(strstr(b, "Final-Recipient: rfc822; failure@r.test"));
    assert_non_null(strstr(b, "Final-Recipient: rfc822; none@r.test"));
    assert_null(strstr(b, "never@r.test"));
    assert_null(strstr(b, "success@r.test"));
    assert_non_null(strstr(b, "Subject: the original")); /* RET=HDRS: the headers */
    assert_null(strstr(b, "ORIGINAL-BODY-TEXT"));
    free(b);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue"), 0);
}

static void test_fail_not_asked_removes_without_bounce(void **state)
{
    struct fixture *f = *state;
    deliver(f, "alice@example.test", 1); /* never@r.test alone */
    int64_t id = entry(f, "never@r.test");
    struct dsn_recipient why = {.address = "never@r.test", .reply = "no"};
    struct store_queue_failure fl = {.hostname = "mail.example.test",
                                     .node = "n1",
                                     .now_ms = T0 + 1000,
                                     .ids = &id,
                                     .rcpts = &why,
                                     .n = 1};
    assert_int_equal(store_queue_fail(f->s, &fl), STORE_OK);
    assert_int_equal(fl.route_out, STORE_BOUNCE_NOT_ASKED);
    assert_int_equal(fl.bounce_message_id_out, 0);
    assert_int_equal(fl.removed_out, 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 0);
}

static void test_delay_notice_once_when_due_and_asked(void **state)
{
    struct fixture *f = *state;
    deliver(f, "alice@example.test", 4);
    struct dsn_recipient why = {.reply_code = 451, .reply = "451 4.3.0 later"};
    const int64_t delay = 4 * 3600 * 1000LL;
    bool sent = true;
    /* Too young. */
    assert_int_equal(store_queue_delay_notice(f->s, entry(f, "none@r.test"), T0 + delay - 1, delay,
                                              "mail.example.test", &why, &sent),
                     STORE_OK);
    assert_false(sent);
    /* delay 0 is never. */
    assert_int_equal(store_queue_delay_notice(f->s, entry(f, "none@r.test"), T0 + delay, 0,
                                              "mail.example.test", &why, &sent),
                     STORE_OK);
    assert_false(sent);
    /* Old enough: no NOTIFY counts as FAILURE,DELAY. Once. */
    for (int round = 0; round < 2; round++) {
        assert_int_equal(store_queue_delay_notice(f->s, entry(f, "none@r.test"), T0 + delay, delay,
                                                  "mail.example.test", &why, &sent),
                         STORE_OK);
        assert_int_equal(sent, round == 0);
    }
    char *b = alice_newest(f);
    assert_non_null(strstr(b, "Action: delayed"));
    assert_non_null(strstr(b, "Status: 4.3.0"));
    assert_non_null(strstr(b, "Final-Recipient: rfc822; none@r.test"));
    free(b);
    /* NOTIFY without DELAY: none. */
    for (size_t i = 0; i < 4; i++) {
        if (notify[i] == 0)
            continue;
        assert_int_equal(store_queue_delay_notice(f->s, entry(f, remotes[i]), T0 + delay, delay,
                                                  "mail.example.test", &why, &sent),
                         STORE_OK);
        assert_false(sent);
    }
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM mailbox"), 1);
    /* Still queued: a delay notice removes nothing. */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM queue WHERE sender <> ''"), 4);
}

static void test_delivered_notice_with_the_delivery(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_user_add(f->s, "bob@example.test", "example.test", "x"), STORE_OK);
    char hash[128];
    int64_t bob = 0;
    assert_int_equal(store_user_get(f->s, "bob@example.test", &bob, hash, sizeof(hash)), STORE_OK);
    struct dsn_recipient ok = {.address = "bob@example.test", .orcpt = "rfc822;b+2B1@example.test"};
    const char *senders[] = {"", "alice@example.test"};
    for (size_t i = 0; i < ARRAY_LEN(senders); i++) {
        struct store_delivery d = {
            .sender = senders[i],
            .body = (const unsigned char *)body_text,
            .body_len = sizeof(body_text) - 1,
            .local_user_ids = &bob,
            .n_local = 1,
            .received_ms = T0,
            .dsn_envid = "E1",
            .delivered = &ok,
            .n_delivered = 1,
            .hostname = "mail.example.test",
        };
        assert_int_equal(store_deliver(f->s, &d), STORE_OK);
        /* The null sender never gets one. */
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM mailbox WHERE user_id = %lld",
                 (long long)f->alice);
        assert_int_equal(query_int(f->path, sql), (long long)i);
    }
    char *b = alice_newest(f);
    assert_non_null(strstr(b, "Return-Path: <>\r\n"));
    assert_non_null(strstr(b, "Action: delivered"));
    assert_non_null(strstr(b, "Status: 2.0.0"));
    assert_non_null(strstr(b, "Original-Envelope-Id: E1"));
    assert_non_null(strstr(b, "Original-Recipient: rfc822; b+1@example.test"));
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stored_and_claimed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_bounces_only_who_asked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_not_asked_removes_without_bounce, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_delay_notice_once_when_due_and_asked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivered_notice_with_the_delivery, setup, teardown),
    };
    return STORE_TEST_RUN(tests);
}
