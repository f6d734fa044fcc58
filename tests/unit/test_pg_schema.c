/*
 * test_pg_schema.c - storage/postgres/pg_schema.c on the throwaway server of
 * tests/unit/pg_fixture.h: creating the schema and creating it again, the tables and indexes
 * SQLite has, refusing a newer version, a database that is not postern's, the message release
 * trigger (also when two nodes remove the last two references at once), a body written whole and
 * read in chunks, and the advisory lock that makes a second node wait for the first one's creation.
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
#include "pg_conn_fixture.h"
#include "storage/postgres/pg_schema.h"

static void ensure_ok(struct pg_conn *c)
{
    int rc = pg_schema_ensure(c);
    if (rc != STORE_OK)
        fail_msg("pg_schema_ensure: %d %s", rc, pg_conn_errmsg(c));
}

/* The first column of the one row sql returns; text into buf when buf is given. */
static int64_t scalar(struct pg_conn *c, const char *sql, char *buf, size_t cap)
{
    struct pg_stmt *st = pg_prepare(c, sql);
    if (st == NULL)
        fail_msg("prepare %s: %s", sql, pg_conn_errmsg(c));
    int rc = pg_step(st);
    if (rc != PG_ROW)
        fail_msg("%s: step %d: %s", sql, rc, pg_conn_errmsg(c));
    int64_t v = 0;
    if (buf != NULL)
        snprintf(buf, cap, "%s", pg_col_text(st, 0) ? pg_col_text(st, 0) : "(null)");
    else if (pg_col_i64_checked(st, 0, &v) != STORE_OK)
        fail_msg("%s: %s", sql, pg_conn_errmsg(c));
    pg_reset(st);
    return v;
}

static void test_create_twice(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "schema");
    struct pg_conn *c = open_ok(db.conninfo);
    int v = -1;
    assert_int_equal(pg_schema_version(c, &v), STORE_OK);
    assert_int_equal(v, 0);
    ensure_ok(c);
    assert_false(pg_conn_in_transaction(c));
    assert_int_equal(pg_schema_version(c, &v), STORE_OK);
    assert_int_equal(v, STORE_SCHEMA_VERSION);

    /* Every table of the SQLite schema, and its named indexes. */
    assert_int_equal(scalar(c,
                            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                            " AND tablename IN ('domains', 'users', 'networks', 'pop_logins',"
                            " 'windows', 'messages', 'mailbox', 'queue', 'meta', 'message_facts',"
                            " 'dkim_keys', 'faults')",
                            NULL, 0),
                     12);
    assert_int_equal(scalar(c,
                            "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema()"
                            " AND indexname IN ('users_domain_address', 'pop_logins_at',"
                            " 'mailbox_user', 'mailbox_message', 'queue_due', 'queue_message')",
                            NULL, 0),
                     6);
    /* Times are 64-bit. */
    assert_int_equal(scalar(c,
                            "SELECT count(*) FROM information_schema.columns WHERE"
                            " table_schema = current_schema() AND column_name LIKE '%\\_ms'"
                            " AND data_type <> 'bigint'",
                            NULL, 0),
                     0);
    char tag[64];
    scalar(c, "SELECT value FROM meta WHERE key = 'uidl_tag'", tag, sizeof(tag));
    assert_int_equal(strlen(tag), 16);
    assert_int_equal(strspn(tag, "0123456789abcdef"), 16);

    /* A second open changes nothing. */
    ensure_ok(c);
    char again[64];
    scalar(c, "SELECT value FROM meta WHERE key = 'uidl_tag'", again, sizeof(again));
    assert_string_equal(tag, again);
    assert_int_equal(scalar(c, "SELECT count(*) FROM meta", NULL, 0), 2);

    /* Another database gets another tag. */
    struct pg_test_db db2;
    pg_test_db_new(&db2, "schema");
    struct pg_conn *c2 = open_ok(db2.conninfo);
    ensure_ok(c2);
    scalar(c2, "SELECT value FROM meta WHERE key = 'uidl_tag'", again, sizeof(again));
    assert_string_not_equal(tag, again);
    pg_conn_close(&c2);
    pg_test_db_drop(&db2);

    pg_conn_close(&c);
    pg_test_db_drop(&db);
}

static void test_refuses_newer(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "newer");
    struct pg_conn *c = open_ok(db.conninfo);
    ensure_ok(c);
    char sql[96];
    snprintf(sql, sizeof(sql), "UPDATE meta SET value = '%d' WHERE key = 'schema_version'",
             STORE_SCHEMA_VERSION + 1);
    exec_ok(c, sql);
    assert_int_equal(pg_schema_ensure(c), STORE_TOO_NEW);
    assert_non_null(strstr(pg_conn_errmsg(c), "newer"));
    assert_false(pg_conn_in_transaction(c));
    int v = 0;
    assert_int_equal(pg_schema_version(c, &v), STORE_OK);
    assert_int_equal(v, STORE_SCHEMA_VERSION + 1);
    pg_conn_close(&c);
    pg_test_db_drop(&db);
}

static void test_not_postern(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "other");
    struct pg_conn *c = open_ok(db.conninfo);
    /* Someone else's table named meta: refused, and left alone. */
    exec_ok(c, "CREATE TABLE meta (key TEXT, value TEXT)");
    assert_int_equal(pg_schema_ensure(c), STORE_ERR);
    assert_non_null(strstr(pg_conn_errmsg(c), "not a postern database"));
    assert_int_equal(scalar(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'users'", NULL, 0),
                     0);
    pg_conn_close(&c);
    pg_test_db_drop(&db);
}

static void test_release_trigger(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "release");
    struct pg_conn *c = open_ok(db.conninfo);
    ensure_ok(c);
    exec_ok(c, "INSERT INTO domains (name, created_ms) VALUES ('example.org', 1);"
               " INSERT INTO users (address, domain_id, password_hash, created_ms)"
               "   SELECT 'a@example.org', id, 'h', 1 FROM domains;"
               " INSERT INTO messages (sender, size, received_ms, body)"
               "   VALUES ('s@example.net', 3, 1, '\\x000102');"
               " INSERT INTO message_facts (message_id, eightbit, return_path_bytes)"
               "   SELECT id, 0, 0 FROM messages;"
               " INSERT INTO mailbox (user_id, message_id, uidl, size, added_ms)"
               "   SELECT u.id, m.id, 'u1', 3, 1 FROM users u, messages m;"
               " INSERT INTO queue (message_id, sender, recipient, domain, created_ms,"
               "   next_attempt_ms) SELECT id, 's', 'r@example.com', 'example.com', 1, 1"
               "   FROM messages");
    /* A user is kept while it has a domain, a domain while it has users. */
    assert_int_equal(pg_exec(c, "DELETE FROM domains"), STORE_IN_USE);
    /* The message stays while the queue refers to it, and goes with its last reference, its
     * facts with it. */
    exec_ok(c, "DELETE FROM mailbox");
    assert_int_equal(scalar(c, "SELECT count(*) FROM messages", NULL, 0), 1);
    exec_ok(c, "DELETE FROM queue");
    assert_int_equal(scalar(c, "SELECT count(*) FROM messages", NULL, 0), 0);
    assert_int_equal(scalar(c, "SELECT count(*) FROM message_facts", NULL, 0), 0);
    /* Ids are never handed out twice. */
    exec_ok(c, "INSERT INTO messages (sender, size, received_ms, body) VALUES ('s', 0, 1, '')");
    assert_int_equal(scalar(c, "SELECT max(id) FROM messages", NULL, 0), 2);
    pg_conn_close(&c);
    pg_test_db_drop(&db);
}

struct deleter {
    struct pg_conn *c;
    int rc;
};

static void *delete_queue_thread(void *arg)
{
    struct deleter *d = arg;
    d->rc = pg_exec(d->c, "DELETE FROM queue");
    return NULL;
}

/* Waits (at most 10 s) until a backend of the test's database waits for a lock. A row lock is
 * waited for as the holder's transaction id, which pg_locks shows without a database: the
 * backend's database says whose it is. */
static bool someone_waits(struct pg_conn *watch)
{
    static const char *const sql = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a"
                                   " ON a.pid = l.pid WHERE NOT l.granted"
                                   " AND a.datname = current_database()";
    for (int i = 0; i < 200; i++) {
        if (scalar(watch, sql, NULL, 0) > 0)
            return true;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Two nodes remove a message's last two references at once: the second waits for the first and
 * then removes the message, where without the row lock each would leave it to the other. */
static void test_release_race(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "race");
    struct pg_conn *a = open_ok(db.conninfo);
    struct pg_conn *b = open_ok(db.conninfo);
    struct pg_conn *watch = open_ok(db.conninfo);
    ensure_ok(a);
    exec_ok(a, "INSERT INTO domains (name, created_ms) VALUES ('example.org', 1);"
               " INSERT INTO users (address, domain_id, password_hash, created_ms)"
               "   SELECT 'a@example.org', id, 'h', 1 FROM domains;"
               " INSERT INTO messages (sender, size, received_ms, body)"
               "   VALUES ('s@example.net', 1, 1, '\\x00');"
               " INSERT INTO mailbox (user_id, message_id, uidl, size, added_ms)"
               "   SELECT u.id, m.id, 'u1', 1, 1 FROM users u, messages m;"
               " INSERT INTO queue (message_id, sender, recipient, domain, created_ms,"
               "   next_attempt_ms) SELECT id, 's', 'r@example.com', 'example.com', 1, 1"
               "   FROM messages");
    exec_ok(a, "BEGIN");
    exec_ok(a, "DELETE FROM mailbox"); /* the queue still refers to the message: it stays */
    exec_ok(b, "BEGIN");
    struct deleter d = {.c = b, .rc = 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, delete_queue_thread, &d), 0);
    bool waited = someone_waits(watch);
    exec_ok(a, "COMMIT");
    assert_int_equal(pthread_join(t, NULL), 0);
    if (d.rc != STORE_OK)
        fail_msg("delete from queue: %s", pg_conn_errmsg(b));
    exec_ok(b, "COMMIT");
    assert_true(waited);
    assert_int_equal(scalar(watch, "SELECT count(*) FROM messages", NULL, 0), 0);
    pg_conn_close(&a);
    pg_conn_close(&b);
    pg_conn_close(&watch);
    pg_test_db_drop(&db);
}

/* A body goes in as one binary parameter and comes back in chunks, as a body reader will read
 * it; it is stored uncompressed, so a chunk costs only its own pages. */
static void test_body_in_chunks(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "body");
    struct pg_conn *c = open_ok(db.conninfo);
    ensure_ok(c);
    char storage[8];
    scalar(c,
           "SELECT attstorage FROM pg_attribute WHERE attrelid = 'messages'::regclass"
           " AND attname = 'body'",
           storage, sizeof(storage));
    assert_string_equal(storage, "e");

    enum { BODY_BYTES = 1 << 20, CHUNK_BYTES = 65536 };
    unsigned char *body = malloc(BODY_BYTES);
    assert_non_null(body);
    uint32_t x = 2463534242u; /* xorshift32: every octet value, no pattern to compress */
    for (size_t i = 0; i < BODY_BYTES; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        body[i] = (unsigned char)x;
    }
    static const char *const ins = "INSERT INTO messages (sender, size, received_ms, body)"
                                   " VALUES (?1, ?2, ?3, ?4) RETURNING id";
    struct pg_stmt *st = pg_prepare(c, ins);
    pg_bind_text(st, 1, "s@example.net", -1);
    pg_bind_i64(st, 2, BODY_BYTES);
    pg_bind_i64(st, 3, 1700000000000);
    pg_bind_blob(st, 4, body, BODY_BYTES);
    int rc = pg_step(st);
    if (rc != PG_ROW)
        fail_msg("insert: %d %s", rc, pg_conn_errmsg(c));
    int64_t id = pg_col_i64(st, 0);
    pg_reset(st);

    static const char *const chunk = "SELECT substring(body FROM ?2 FOR ?3) FROM messages"
                                     " WHERE id = ?1";
    size_t at = 0;
    while (at < BODY_BYTES) {
        st = pg_prepare(c, chunk);
        pg_bind_i64(st, 1, id);
        pg_bind_i64(st, 2, (int64_t)at + 1); /* SQL counts from 1 */
        pg_bind_i64(st, 3, CHUNK_BYTES);
        rc = pg_step(st);
        if (rc != PG_ROW)
            fail_msg("chunk at %zu: %d %s", at, rc, pg_conn_errmsg(c));
        size_t len = 0;
        const void *p = pg_col_blob(st, 0, &len);
        assert_int_equal(len, CHUNK_BYTES);
        assert_memory_equal(p, body + at, len);
        at += len;
        pg_reset(st);
    }
    free(body);
    pg_conn_close(&c);
    pg_test_db_drop(&db);
}

struct racer {
    const char *conninfo;
    int rc;
    char err[512];
};

static void *ensure_thread(void *arg)
{
    struct racer *r = arg;
    struct pg_conn *c = NULL;
    r->rc = pg_conn_open(r->conninfo, &c, r->err, sizeof(r->err));
    if (r->rc == STORE_OK) {
        r->rc = pg_schema_ensure(c);
        snprintf(r->err, sizeof(r->err), "%s", pg_conn_errmsg(c));
        pg_conn_close(&c);
    }
    return NULL;
}

static void test_lock_serialises_creation(void **state)
{
    PG_SKIP_UNLESS_SERVER();
    struct pg_test_db db;
    pg_test_db_new(&db, "lock");
    struct pg_conn *first = open_ok(db.conninfo);
    struct pg_conn *watch = open_ok(db.conninfo);
    /* The first node holds the lock, as pg_schema_ensure does while it creates. */
    exec_ok(first, "BEGIN");
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%lld)", (long long)PG_SCHEMA_LOCK_KEY);
    exec_ok(first, sql);

    struct racer second = {.conninfo = db.conninfo, .rc = 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, ensure_thread, &second), 0);
    /* The second node waits for the advisory lock rather than creating the schema beside the
     * first (at most 10 s). */
    bool waiting = false;
    for (int i = 0; i < 200 && !waiting; i++) {
        waiting = scalar(watch,
                         "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                         " AND NOT granted AND database = (SELECT oid FROM pg_database"
                         " WHERE datname = current_database())",
                         NULL, 0) == 1;
        if (!waiting) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (!waiting) {
        pthread_join(t, NULL);
        fail_msg("the second node never waited for the lock (rc %d: %s)", second.rc, second.err);
    }
    /* Inside the first's transaction the schema is not created: its COMMIT would commit the
     * caller's work. The first lets go; the second creates the schema, and the first, asking
     * again, finds it. */
    assert_int_equal(pg_schema_ensure(first), STORE_ERR);
    assert_non_null(strstr(pg_conn_errmsg(first), "inside a transaction"));
    exec_ok(first, "ROLLBACK");
    assert_int_equal(pthread_join(t, NULL), 0);
    ensure_ok(first);
    if (second.rc != STORE_OK)
        fail_msg("second node: %d %s", second.rc, second.err);
    int v = 0;
    assert_int_equal(pg_schema_version(watch, &v), STORE_OK);
    assert_int_equal(v, STORE_SCHEMA_VERSION);
    pg_conn_close(&first);
    pg_conn_close(&watch);
    pg_test_db_drop(&db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_twice),
        cmocka_unit_test(test_refuses_newer),
        cmocka_unit_test(test_not_postern),
        cmocka_unit_test(test_release_trigger),
        cmocka_unit_test(test_release_race),
        cmocka_unit_test(test_body_in_chunks),
        cmocka_unit_test(test_lock_serialises_creation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
