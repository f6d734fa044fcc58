/*
 * test_pg_listener.c - storage/postgres/pg_listener.c through store.h's listener API: SQLite
 * cannot listen; on the throwaway server of tests/unit/pg_fixture.h a listener reports its
 * connection, hears store_announce from another store, reconnects by itself after its backend
 * is terminated (reporting the new connection) and hears what is announced after, and its stop
 * closes its connection and calls nothing after.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "pg_fixture.h"
#include "storage/postgres/pg_conn.h"
#include "storage/store.h"

/* What the listener's thread reported, read by the test's thread. */
struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int connected;
    int heard;
};

static void on_event(void *arg, enum store_listener_event event)
{
    struct seen *s = arg;
    pthread_mutex_lock(&s->mu);
    if (event == STORE_LISTENER_CONNECTED)
        s->connected++;
    else if (event == STORE_LISTENER_HEARD)
        s->heard++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Waits (at most 20 s) until *field reaches want. */
static void wait_count(struct seen *s, const int *field, int want, const char *what)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (*field < want && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->cv, &s->mu, &until);
    int got = *field;
    pthread_mutex_unlock(&s->mu);
    if (got < want)
        fail_msg("%s: %d within 20 s, want %d", what, got, want);
}

static int count_of(struct seen *s, const int *field)
{
    pthread_mutex_lock(&s->mu);
    int n = *field;
    pthread_mutex_unlock(&s->mu);
    return n;
}

#define LISTENERS_SQL                                                                              \
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"                     \
    " AND application_name = '" PG_LISTENER_APPLICATION_NAME "'"

static void test_sqlite_cannot_listen(void **state)
{
    struct seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    assert_false(store_can_listen("/tmp/postern-test.db"));
    assert_true(store_can_listen("postgresql://postern@db1/mail"));
    struct store_listener *l = (struct store_listener *)&seen;
    char err[256] = "";
    assert_int_equal(store_listener_start("/tmp/postern-test.db", STORE_CHANNEL_QUEUE, on_event,
                                          &seen, &l, err, sizeof(err)),
                     STORE_ERR);
    assert_null(l);
    assert_non_null(strstr(err, "SQLite"));
    store_listener_stop(&l); /* NULL: nothing */
}

static void test_hears_announcements_and_reconnects(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "listener");
    char err[512] = "";
    struct store *s = NULL;
    if (store_open(db.conninfo, &s, err, sizeof(err)) != STORE_OK)
        fail_msg("store_open: %s", err);

    struct seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct store_listener *l = NULL;
    if (store_listener_start(db.conninfo, STORE_CHANNEL_QUEUE, on_event, &seen, &l, err,
                             sizeof(err)) != STORE_OK)
        fail_msg("store_listener_start: %s", err);
    assert_non_null(l);
    /* Connected and listening: reported once, before anything was heard. */
    wait_count(&seen, &seen.connected, 1, "connections");
    assert_int_equal(count_of(&seen, &seen.heard), 0);
    assert_int_equal(pg_test_query_int(db.conninfo, LISTENERS_SQL), 1);

    /* What another store announces is heard. */
    assert_int_equal(store_announce(s, STORE_CHANNEL_QUEUE), STORE_OK);
    wait_count(&seen, &seen.heard, 1, "announcements heard");

    /* An announcement inside a transaction is heard with its COMMIT. */
    assert_int_equal(store_begin(s), STORE_OK);
    assert_int_equal(store_announce(s, STORE_CHANNEL_QUEUE), STORE_OK);
    assert_int_equal(store_commit(s), STORE_OK);
    wait_count(&seen, &seen.heard, 2, "announcements heard");

    /* Its backend terminated (a server restart looks the same to it): it reconnects by itself,
     * says so, and hears what is announced after. */
    assert_int_equal(pg_test_query_int(db.conninfo,
                                       "SELECT count(pg_terminate_backend(pid, 10000)) FROM"
                                       " pg_stat_activity WHERE datname = current_database() AND"
                                       " application_name = '" PG_LISTENER_APPLICATION_NAME "'"),
                     1);
    wait_count(&seen, &seen.connected, 2, "connections");
    int heard = count_of(&seen, &seen.heard);
    assert_int_equal(store_announce(s, STORE_CHANNEL_QUEUE), STORE_OK);
    wait_count(&seen, &seen.heard, heard + 1, "announcements heard after the reconnection");

    /* Stopped: its connection is closed and nothing is called any more. */
    store_listener_stop(&l);
    assert_null(l);
    int connected = count_of(&seen, &seen.connected);
    heard = count_of(&seen, &seen.heard);
    assert_int_equal(store_announce(s, STORE_CHANNEL_QUEUE), STORE_OK);
    long long left = 1;
    for (int i = 0; i < 200 && left != 0; i++) {
        left = pg_test_query_int(db.conninfo, LISTENERS_SQL);
        if (left != 0)
            usleep(50 * 1000);
    }
    assert_int_equal(left, 0);
    assert_int_equal(count_of(&seen, &seen.connected), connected);
    assert_int_equal(count_of(&seen, &seen.heard), heard);

    store_close(&s);
    pg_test_db_drop(&db);
}

/* A listener whose server is not there keeps trying, and its stop is prompt all the same. */
static void test_stop_while_the_server_is_away(void **state)
{
    struct seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct store_listener *l = NULL;
    char err[256] = "";
    if (store_listener_start("host=/nonexistent/postern-test port=5432 dbname=x",
                             STORE_CHANNEL_QUEUE, on_event, &seen, &l, err,
                             sizeof(err)) != STORE_OK)
        fail_msg("store_listener_start: %s", err);
    usleep(600 * 1000); /* a few attempts and backoffs */
    store_listener_stop(&l);
    assert_null(l);
    assert_int_equal(count_of(&seen, &seen.connected), 0);
    assert_int_equal(count_of(&seen, &seen.heard), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sqlite_cannot_listen),
        cmocka_unit_test(test_hears_announcements_and_reconnects),
        cmocka_unit_test(test_stop_while_the_server_is_away),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
