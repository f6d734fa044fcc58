/*
 * test_store.c - storage/store.c and the table files: open and migrations (an older database is
 * migrated in order and keeps its data, a newer one is refused, two openers of a fresh file
 * migrate it once), and the behaviour of domains, users, networks, windows and the queue that
 * the admin CLI and the relay decision rely on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/pure/cidr.h"
#include "storage/faults.h"
#include "storage/sql.h"
#include "storage/store.h"
#include "tests/unit/store_fixture.h"

struct fixture {
    char dir[64];
    char path[1024];
    struct store *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/postern-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    store_test_db_new(f->path, sizeof(f->path), f->dir, "t.db");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(&f->s);
    store_test_db_drop();
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* One integer through a connection of its own: what is committed. */
#define query_int store_test_query_i64

static void test_fresh_database_has_current_schema(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
    assert_true(store_created(f->s));
    if (store_test_on_pg) {
        assert_int_equal(query_int(f->path, "SELECT value FROM meta WHERE key = 'schema_version'"),
                         STORE_SCHEMA_VERSION);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM information_schema.tables WHERE"
                                            " table_schema = current_schema() AND table_name IN"
                                            " ('domains','users','networks','pop_logins',"
                                            "'windows','messages','mailbox','queue')"),
                         8);
    } else {
        assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type='table'"
                                            " AND name IN ('domains','users','networks',"
                                            "'pop_logins','windows','messages','mailbox','queue')"),
                         8);
    }
    /* Reopening changes nothing. */
    store_close(&f->s);
    f->s = open_ok(f->path);
    assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
    assert_false(store_created(f->s));
}

static void test_older_database_is_migrated_in_order(void **state)
{
    STORE_TEST_SQLITE_ONLY("PostgreSQL databases start at version 11 (pg_schema.c)");
    struct fixture *f = *state;
    char err[512];
    for (int from = 1; from < STORE_SCHEMA_VERSION; from++) {
        unlink(f->path);
        struct store *old = NULL;
        assert_int_equal(store_open_at_version(f->path, from, &old, err, sizeof(err)), STORE_OK);
        assert_int_equal(store_schema_version(old), from);
        /* What later versions add does not exist yet. */
        if (from < 4)
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE "
                                                "name = 'meta'"),
                             0);
        if (from < 5)
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE "
                                                "name = 'users_domain_address'"),
                             0);
        if (from < 6)
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE "
                                                "name = 'message_facts'"),
                             0);
        if (from < 7)
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE "
                                                "name = 'dkim_keys'"),
                             0);
        if (from < 8)
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE "
                                                "name = 'faults'"),
                             0);
        if (from >= 6 && from < 9)
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info("
                                                "'message_facts') WHERE name = 'smtputf8'"),
                             0);
        if (from < 10)
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info("
                                                "'messages') WHERE name = 'quarantine'"),
                             0);
        /* 11: DSN (RFC 3461) per message and per queue row. */
        if (from < 11)
            assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info('queue')"
                                                " WHERE name IN ('dsn_notify', 'dsn_orcpt',"
                                                " 'delay_notified')"),
                             0);
        /* 12: nodes on one database. */
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE"
                                            " name IN ('nodes', 'pop3_locks')"),
                         0);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info('queue')"
                                            " WHERE name = 'claimed_by'"),
                         0);
        assert_int_equal(store_domain_add(old, "old.test"), STORE_OK);
        store_close(&old);

        f->s = open_ok(f->path);
        assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info('queue')"
                                            " WHERE name IN ('dsn_notify', 'dsn_orcpt',"
                                            " 'delay_notified')"),
                         3);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE"
                                            " name IN ('nodes', 'pop3_locks')"),
                         2);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info('queue')"
                                            " WHERE name = 'claimed_by'"),
                         1);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info('messages')"
                                            " WHERE name IN ('dsn_envid', 'dsn_ret')"),
                         2);
        bool local = false;
        assert_int_equal(store_domain_is_local(f->s, "old.test", &local), STORE_OK);
        assert_true(local);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE "
                                            "name IN ('meta', 'message_facts', 'faults')"),
                         3);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info('messages') "
                                            "WHERE name = 'quarantine'"),
                         1);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE "
                                            "name IN ('users_domain_address', 'users_domain')"),
                         1);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE "
                                            "name = 'dkim_keys'"),
                         1);
        assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_table_info("
                                            "'message_facts') WHERE name = 'smtputf8'"),
                         1);
        store_close(&f->s);
        unlink(f->path);
        char side[1100];
        snprintf(side, sizeof(side), "%s-wal", f->path);
        unlink(side);
        snprintf(side, sizeof(side), "%s-shm", f->path);
        unlink(side);
    }
}

static void test_newer_database_is_refused(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    assert_int_equal(store_test_exec(f->s, store_test_on_pg ? "UPDATE meta SET value = '99' WHERE"
                                                              " key = 'schema_version'"
                                                            : "PRAGMA user_version = 99"),
                     STORE_OK);
    store_close(&f->s);
    char err[512] = "";
    struct store *s = NULL;
    assert_int_equal(store_open(f->path, &s, err, sizeof(err)), STORE_TOO_NEW);
    assert_null(s);
    assert_non_null(strstr(err, "newer than this postern"));
    /* The file is named; a connection string is not (it may hold a password). */
    if (store_test_on_pg)
        assert_non_null(strstr(err, "postgresql: "));
    else
        assert_non_null(strstr(err, f->path));
}

static void test_unopenable_path_names_the_file(void **state)
{
    STORE_TEST_SQLITE_ONLY("a file path");
    (void)state;
    char err[512] = "";
    struct store *s = NULL;
    assert_int_equal(store_open("/nonexistent-dir/x/y.db", &s, err, sizeof(err)), STORE_ERR);
    assert_null(s);
    assert_non_null(strstr(err, "/nonexistent-dir/x/y.db"));
}

/* A PostgreSQL server that cannot be reached: the error says why without the connection string,
 * whose password must not reach a log. No server is needed, so it runs in both groups. */
static void test_unreachable_server_hides_the_password(void **state)
{
    (void)state;
    char err[512] = "";
    struct store *s = NULL;
    assert_int_equal(store_open("host=/nonexistent-postern-dir port=1 password=sekret dbname=x", &s,
                                err, sizeof(err)),
                     STORE_ERR);
    assert_null(s);
    assert_non_null(strstr(err, "postgresql: "));
    assert_null(strstr(err, "sekret"));
    assert_int_equal(store_open("postgresql://u:sekret@/x?host=/nonexistent-postern-dir&port=1", &s,
                                err, sizeof(err)),
                     STORE_ERR);
    assert_null(strstr(err, "sekret"));
}

static void *open_in_thread(void *arg)
{
    const char *path = arg;
    char err[512];
    struct store *s = NULL;
    intptr_t rc = store_open(path, &s, err, sizeof(err));
    if (rc != STORE_OK)
        print_message("store_open: %s\n", err);
    store_close(&s);
    return (void *)rc;
}

static void test_concurrent_first_open_migrates_once(void **state)
{
    struct fixture *f = *state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, open_in_thread, f->path), 0);
    for (int i = 0; i < 4; i++) {
        void *rc = NULL;
        assert_int_equal(pthread_join(t[i], &rc), 0);
        assert_int_equal((intptr_t)rc, STORE_OK);
    }
    assert_int_equal(query_int(f->path, store_test_on_pg ? "SELECT value FROM meta WHERE key ="
                                                           " 'schema_version'"
                                                         : "PRAGMA user_version"),
                     STORE_SCHEMA_VERSION);
}

static void test_pragmas(void **state)
{
    STORE_TEST_SQLITE_ONLY("SQLite's pragmas");
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    /* WAL is persistent in the file; the others are per connection, checked through errors:
     * a foreign key violation must be refused. */
    assert_int_equal(query_int(f->path, "PRAGMA journal_mode = WAL") >= 0, 1);
    assert_int_equal(store_test_exec(f->s, "INSERT INTO users(address, domain_id, "
                                           "password_hash, created_ms) VALUES "
                                           "('a@x.test', 12345, 'h', 0)"),
                     STORE_ERR);
    assert_non_null(strstr(store_errmsg(f->s), "FOREIGN KEY"));
}

static int count_domains(void *ctx, const struct store_domain *d)
{
    (void)d;
    (*(int *)ctx)++;
    return 0;
}

static void test_domains_and_users(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    assert_int_equal(store_domain_add(f->s, "example.test"), STORE_OK);
    assert_int_equal(store_domain_add(f->s, "example.test"), STORE_EXISTS);
    assert_int_equal(store_user_add(f->s, "a@example.test", "example.test", "$h1"), STORE_OK);
    assert_int_equal(store_user_add(f->s, "a@example.test", "example.test", "$h1"), STORE_EXISTS);
    assert_int_equal(store_user_add(f->s, "b@nowhere.test", "nowhere.test", "$h"), STORE_NO_DOMAIN);
    assert_int_equal(store_domain_del(f->s, "example.test"), STORE_IN_USE);
    assert_int_equal(store_domain_del(f->s, "nowhere.test"), STORE_NOT_FOUND);

    int64_t id = 0;
    char hash[128];
    assert_int_equal(store_user_get(f->s, "a@example.test", &id, hash, sizeof(hash)), STORE_OK);
    assert_string_equal(hash, "$h1");
    assert_true(id > 0);
    assert_int_equal(store_user_set_password(f->s, "a@example.test", "$h2"), STORE_OK);
    assert_int_equal(store_user_get(f->s, "a@example.test", &id, hash, sizeof(hash)), STORE_OK);
    assert_string_equal(hash, "$h2");
    assert_int_equal(store_user_set_password(f->s, "z@example.test", "$h2"), STORE_NOT_FOUND);
    assert_int_equal(store_user_get(f->s, "z@example.test", &id, hash, sizeof(hash)),
                     STORE_NOT_FOUND);

    assert_int_equal(store_user_del(f->s, "a@example.test"), STORE_OK);
    assert_int_equal(store_user_del(f->s, "a@example.test"), STORE_NOT_FOUND);
    assert_int_equal(store_domain_del(f->s, "example.test"), STORE_OK);
    int n = 0;
    assert_int_equal(store_domain_list(f->s, count_domains, &n), STORE_OK);
    assert_int_equal(n, 0);
}

/* store_user_list's first row, as postmaster routing used it before store_user_first. */
struct first_listed {
    bool found;
    int64_t id;
};

static int first_listed_cb(void *ctx, const struct store_user *u)
{
    struct first_listed *f = ctx;
    f->found = true;
    f->id = u->id;
    return 1;
}

static int first_listed(struct store *s, const char *domain, int64_t *id_out)
{
    struct first_listed f = {0};
    int st = store_user_list(s, domain, first_listed_cb, &f);
    if (st != STORE_OK)
        return st;
    if (!f.found)
        return STORE_NOT_FOUND;
    *id_out = f.id;
    return STORE_OK;
}

/* Every "SCAN" or "TEMP B-TREE" step of the query plan of sql, counted (0: index lookups). */
static int plan_scans(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    char q[512];
    snprintf(q, sizeof(q), "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    int scans = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(st, 3);
        if (strstr(detail, "TEMP B-TREE") != NULL ||
            (strncmp(detail, "SCAN", 4) == 0 && strstr(detail, "USING") == NULL))
            scans++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return scans;
}

static void test_user_first_is_the_first_listed(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    int64_t a = 0, b = 0;
    assert_int_equal(store_user_first(f->s, NULL, &a), STORE_NOT_FOUND);
    assert_int_equal(store_domain_add(f->s, "b.test"), STORE_OK);
    assert_int_equal(store_domain_add(f->s, "a.test"), STORE_OK);
    assert_int_equal(store_domain_add(f->s, "empty.test"), STORE_OK);
    /* Added out of order, with mail, so the listing has sums to compute. */
    const char *users[][2] = {{"zed@b.test", "b.test"},
                              {"amy@b.test", "b.test"},
                              {"postmaster@b.test", "b.test"},
                              {"yan@a.test", "a.test"},
                              {"bob@a.test", "a.test"}};
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
        assert_int_equal(store_user_add(f->s, users[i][0], users[i][1], "$h"), STORE_OK);
    assert_int_equal(store_test_exec(f->s, "INSERT INTO messages(id, sender, size, received_ms,"
                                           " body) VALUES (1, 's@x', 1, 0, x'41');"
                                           "INSERT INTO mailbox(user_id, message_id, uidl, size,"
                                           " added_ms) SELECT id, 1, 'u-' || id, 1, 0 FROM users;"),
                     STORE_OK);
    const char *domains[] = {"a.test", "b.test", "empty.test", "nowhere.test", NULL};
    for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
        int want = first_listed(f->s, domains[i], &a);
        assert_int_equal(store_user_first(f->s, domains[i], &b), want);
        if (want == STORE_OK)
            assert_int_equal(a, b);
    }
    assert_int_equal(store_user_first(f->s, "b.test", &b), STORE_OK);
    assert_int_equal(b, query_int(f->path, "SELECT id FROM users WHERE address = 'amy@b.test'"));
    assert_int_equal(store_user_first(f->s, NULL, &b), STORE_OK);
    assert_int_equal(b, query_int(f->path, "SELECT id FROM users WHERE address = 'bob@a.test'"));
    /* Index lookups only, no scan of users or of the mailbox table (SQLite's plan). */
    if (store_test_on_pg)
        return;
    assert_int_equal(plan_scans(f->path, "SELECT u.id FROM domains d JOIN users u ON u.domain_id"
                                         " = d.id WHERE d.name = 'b.test' ORDER BY u.address"
                                         " LIMIT 1"),
                     0);
    assert_int_equal(plan_scans(f->path, "SELECT first FROM (SELECT d.name AS name, (SELECT u.id"
                                         " FROM users u WHERE u.domain_id = d.id ORDER BY"
                                         " u.address LIMIT 1) AS first FROM domains d) AS f"
                                         " WHERE first IS NOT NULL ORDER BY name LIMIT 1"),
                     0);
}

static void test_user_delete_frees_unshared_bodies(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    assert_int_equal(store_domain_add(f->s, "example.test"), STORE_OK);
    assert_int_equal(store_user_add(f->s, "a@example.test", "example.test", "$h"), STORE_OK);
    assert_int_equal(store_user_add(f->s, "b@example.test", "example.test", "$h"), STORE_OK);
    /* Message 1 is shared by a and b, message 2 only a's. */
    assert_int_equal(
        store_test_exec(f->s,
                        "INSERT INTO messages(id, sender, size, received_ms, body) VALUES"
                        " (1, 's@x', 1, 0, x'41'), (2, 's@x', 1, 0, x'42');"
                        "INSERT INTO mailbox(user_id, message_id, uidl, size, added_ms)"
                        " SELECT id, 1, 'u1-' || id, 1, 0 FROM users;"
                        "INSERT INTO mailbox(user_id, message_id, uidl, size, added_ms)"
                        " SELECT id, 2, 'u2', 1, 0 FROM users WHERE address = 'a@example.test';"),
        STORE_OK);
    assert_int_equal(store_user_del(f->s, "a@example.test"), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 1);
    assert_int_equal(query_int(f->path, "SELECT id FROM messages"), 1);
    assert_int_equal(store_user_del(f->s, "b@example.test"), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 0);
}

/* Revocation: deleting a user or changing its password closes its windows in the same
 * transaction, leaves other users' windows alone, and makes store_user_unchanged say so. */
static void test_revocation_closes_windows(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    int64_t now = store_now_ms(), a_id = 0, b_id = 0, exp = 0, rel = 0;
    char hash[128], user[256];
    assert_int_equal(store_domain_add(f->s, "example.test"), STORE_OK);
    assert_int_equal(store_user_add(f->s, "a@example.test", "example.test", "$h1"), STORE_OK);
    assert_int_equal(store_user_add(f->s, "b@example.test", "example.test", "$h1"), STORE_OK);
    assert_int_equal(store_user_get(f->s, "a@example.test", &a_id, hash, sizeof(hash)), STORE_OK);
    assert_int_equal(store_user_get(f->s, "b@example.test", &b_id, hash, sizeof(hash)), STORE_OK);
    assert_int_equal(store_window_open(f->s, "192.0.2.1", "a@example.test", now, 60000), STORE_OK);
    assert_int_equal(store_window_open(f->s, "192.0.2.2", "b@example.test", now, 60000), STORE_OK);
    assert_int_equal(store_user_unchanged(f->s, a_id, "$h1"), STORE_OK);

    assert_int_equal(store_user_set_password(f->s, "a@example.test", "$h2"), STORE_OK);
    assert_int_equal(store_window_lookup(f->s, "192.0.2.1", now, user, sizeof(user), &exp, &rel),
                     STORE_NOT_FOUND);
    assert_int_equal(store_window_lookup(f->s, "192.0.2.2", now, user, sizeof(user), &exp, &rel),
                     STORE_OK);
    assert_int_equal(store_user_unchanged(f->s, a_id, "$h1"), STORE_NOT_FOUND);
    assert_int_equal(store_user_unchanged(f->s, a_id, "$h2"), STORE_OK);

    /* Inside a caller's transaction it nests, and rolls back with it. */
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_user_del(f->s, "b@example.test"), STORE_OK);
    assert_int_equal(store_rollback(f->s), STORE_OK);
    assert_int_equal(store_user_unchanged(f->s, b_id, "$h1"), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM windows"), 1);

    assert_int_equal(store_user_del(f->s, "b@example.test"), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM windows"), 0);
    assert_int_equal(store_user_unchanged(f->s, b_id, "$h1"), STORE_NOT_FOUND);
    assert_int_equal(store_user_del(f->s, "b@example.test"), STORE_NOT_FOUND);
    /* Nothing half-done is left behind: the connection is out of any transaction. */
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_rollback(f->s), STORE_OK);
}

/* A new database is 0600 whatever the umask; SQLite gives -wal and -shm the same mode. */
static void test_created_private(void **state)
{
    STORE_TEST_SQLITE_ONLY("the database's files and their modes");
    struct fixture *f = *state;
    mode_t old = umask(022);
    f->s = open_ok(f->path);
    umask(old);
    assert_true(store_created(f->s));
    assert_int_equal(store_domain_add(f->s, "example.test"), STORE_OK);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[1100];
        struct stat st;
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    struct store_exposure_report r;
    char err[256], line[2600];
    assert_int_equal(store_file_exposure(f->path, &r, err, sizeof(err)), STORE_OK);
    assert_int_equal(r.exposure, STORE_PRIVATE);
    struct store *again = open_ok(f->path);
    assert_false(store_created(again));
    store_close(&again);

    char wal[1100];
    snprintf(wal, sizeof(wal), "%s-wal", f->path);
    assert_int_equal(chmod(f->path, 0640), 0);
    assert_int_equal(store_file_exposure(f->path, &r, err, sizeof(err)), STORE_OK);
    assert_int_equal(r.exposure, STORE_EXPOSED_GROUP);
    assert_int_equal(chmod(wal, 0604), 0);
    assert_int_equal(store_file_exposure(f->path, &r, err, sizeof(err)), STORE_OK);
    assert_int_equal(r.exposure, STORE_EXPOSED_OTHERS);
    assert_string_equal(r.file, wal);
    assert_int_equal(r.mode, 0604);
    store_exposure_format(&r, line, sizeof(line));
    char want[2400];
    snprintf(want, sizeof(want),
             "database file %s is readable by others (mode 0604); fix with: chmod 600 %s", wal,
             wal);
    assert_string_equal(line, want);
}

struct net_case {
    const char *net;
    const char *ip;
    bool trusted;
    const char *match;
};

static void test_networks_match(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    const char *nets[] = {"192.0.2.0/24", "192.0.2.128/25", "2001:db8::/32", "198.51.100.7"};
    for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++) {
        struct cidr c;
        assert_int_equal(cidr_parse(nets[i], &c, NULL), 0);
        assert_int_equal(store_network_add(f->s, &c), STORE_OK);
        assert_int_equal(store_network_add(f->s, &c), STORE_EXISTS);
    }
    static const struct net_case cases[] = {
        {"192.0.2.1", "192.0.2.1", true, "192.0.2.0/24"},
        {"most specific first", "192.0.2.200", true, "192.0.2.128/25"},
        {"::ffff:192.0.2.5", "::ffff:192.0.2.5", true, "192.0.2.0/24"},
        {"192.0.3.0", "192.0.3.0", false, ""},
        {"2001:db8:ffff::1", "2001:db8:ffff::1", true, "2001:db8::/32"},
        {"2001:db9::1", "2001:db9::1", false, ""},
        {"198.51.100.7", "198.51.100.7", true, "198.51.100.7/32"},
        {"198.51.100.8", "198.51.100.8", false, ""},
        {"127.0.0.1", "127.0.0.1", false, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ip_addr ip;
        assert_int_equal(ip_parse(cases[i].ip, &ip), 0);
        bool trusted = !cases[i].trusted;
        char match[64];
        assert_int_equal(store_network_match(f->s, &ip, &trusted, match, sizeof(match)), STORE_OK);
        if (trusted != cases[i].trusted || strcmp(match, cases[i].match) != 0)
            fail_msg("%s: got %d %s, want %d %s", cases[i].net, trusted, match, cases[i].trusted,
                     cases[i].match);
    }
    struct cidr c;
    assert_int_equal(cidr_parse("192.0.2.0/24", &c, NULL), 0);
    assert_int_equal(store_network_del(f->s, &c), STORE_OK);
    assert_int_equal(store_network_del(f->s, &c), STORE_NOT_FOUND);
}

static void test_windows_expire_by_lookup_not_purge(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    const int64_t t0 = 1700000000000;
    char user[256];
    int64_t expires = 0, relayed = -1;
    assert_int_equal(store_window_open(f->s, "192.0.2.7", "a@x.test", t0, 60000), STORE_OK);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.7", t0 + 59999, user, sizeof(user), &expires, &relayed),
        STORE_OK);
    assert_string_equal(user, "a@x.test");
    assert_int_equal(expires, t0 + 60000);
    assert_int_equal(relayed, 0);
    /* At the expiry instant the window is closed, though the row is still there. */
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.7", t0 + 60000, user, sizeof(user), &expires, &relayed),
        STORE_NOT_FOUND);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM windows"), 1);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.8", t0, user, sizeof(user), &expires, &relayed),
        STORE_NOT_FOUND);

    /* A renewal keeps the count, whoever logs in: it belongs to the address. */
    assert_int_equal(store_test_exec(f->s, "UPDATE windows SET relayed = 5"), STORE_OK);
    assert_int_equal(store_window_open(f->s, "192.0.2.7", "a@x.test", t0 + 1000, 60000), STORE_OK);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.7", t0 + 2000, user, sizeof(user), &expires, &relayed),
        STORE_OK);
    assert_int_equal(relayed, 5);
    assert_int_equal(expires, t0 + 61000);
    assert_int_equal(store_window_open(f->s, "192.0.2.7", "b@x.test", t0 + 3000, 60000), STORE_OK);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.7", t0 + 4000, user, sizeof(user), &expires, &relayed),
        STORE_OK);
    assert_string_equal(user, "b@x.test");
    assert_int_equal(relayed, 5);
    /* Opening and renewing windows is not a login: only store_pop_login_record writes history. */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM pop_logins"), 0);
    assert_int_equal(store_pop_login_record(f->s, "192.0.2.7", "b@x.test", t0 + 3000), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM pop_logins WHERE ip_key = "
                                        "'192.0.2.7' AND \"user\" = 'b@x.test' AND at_ms = "
                                        "1700000003000"),
                     1);

    assert_int_equal(store_window_purge(f->s, t0 + 63000), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM windows"), 0);
    assert_int_equal(store_window_close(f->s, "192.0.2.7"), STORE_NOT_FOUND);
}

static void test_window_take_relay(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    const int64_t t0 = 1700000000000;
    char user[256];
    int64_t expires = 0, relayed = -1;
    assert_int_equal(store_window_open(f->s, "192.0.2.7", "a@x.test", t0, 60000), STORE_OK);
    /* Up to the limit, then no more: the check and the count are one statement. */
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.7", t0 + 1, 3), STORE_OK);
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.7", t0 + 1, 3), STORE_OK);
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.7", t0 + 1, 3), STORE_OK);
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.7", t0 + 1, 3), STORE_NOT_FOUND);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.7", t0 + 1, user, sizeof(user), &expires, &relayed),
        STORE_OK);
    assert_int_equal(relayed, 3);
    /* Another window is not touched; no window at all is STORE_NOT_FOUND. */
    assert_int_equal(store_window_open(f->s, "192.0.2.8", "b@x.test", t0, 60000), STORE_OK);
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.9", t0 + 1, 3), STORE_NOT_FOUND);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.8", t0 + 1, user, sizeof(user), &expires, &relayed),
        STORE_OK);
    assert_int_equal(relayed, 0);
    /* A login by another user from the same address renews the window but keeps the count, so
     * two accounts taking turns never get past the limit. */
    assert_int_equal(store_window_open(f->s, "192.0.2.7", "b@x.test", t0 + 10, 60000), STORE_OK);
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.7", t0 + 20, 3), STORE_NOT_FOUND);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.7", t0 + 20, user, sizeof(user), &expires, &relayed),
        STORE_OK);
    assert_int_equal(relayed, 3);
    assert_int_equal(expires, t0 + 60010);
    /* An expired window counts nothing; a login after the expiry starts again from 0. */
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.8", t0 + 60000, 3), STORE_NOT_FOUND);
    assert_int_equal(store_window_open(f->s, "192.0.2.7", "a@x.test", t0 + 60010, 60000), STORE_OK);
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.7", t0 + 60011, 3), STORE_OK);
    assert_int_equal(
        store_window_lookup(f->s, "192.0.2.7", t0 + 60011, user, sizeof(user), &expires, &relayed),
        STORE_OK);
    assert_int_equal(relayed, 1);
    /* A negative count (no count postern wrote) is spent, as relay_decide treats it. */
    assert_int_equal(store_test_exec(f->s, "UPDATE windows SET relayed = -5"), STORE_OK);
    assert_int_equal(store_window_take_relay(f->s, "192.0.2.7", t0 + 60011, 3), STORE_NOT_FOUND);
}

static int count_queue(void *ctx, const struct store_queue_entry *q)
{
    (void)q;
    (*(int *)ctx)++;
    return 0;
}

static int count_rule(void *ctx, int64_t id, const struct fault_spec *spec)
{
    assert_string_equal(spec->point, "smtp.rcpt");
    assert_string_equal(spec->reply, "451 4.3.0 x");
    assert_int_equal(spec->message, 0);
    (*(int64_t *)ctx)++;
    return 0;
}

/* The faults table: every add and every delete changes its version (max id, count), even a
 * delete followed by an add, since ids are never reused. */
static void test_faults_version(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    int64_t max_id = -1, count = -1, id1 = 0, id2 = 0, rows = 0;
    assert_int_equal(store_fault_version(f->s, &max_id, &count), STORE_OK);
    assert_int_equal(max_id, 0);
    assert_int_equal(count, 0);
    struct fault_spec spec = {
        .point = "smtp.rcpt", .action = "reply", .reply = "451 4.3.0 x", .ppm = FAULT_PPM_ALWAYS};
    assert_int_equal(store_fault_add(f->s, &spec, 1, &id1), STORE_OK);
    assert_int_equal(store_fault_add(f->s, &spec, 2, &id2), STORE_OK);
    assert_int_equal(store_fault_version(f->s, &max_id, &count), STORE_OK);
    assert_int_equal(max_id, id2);
    assert_int_equal(count, 2);
    assert_int_equal(store_fault_del(f->s, id2), STORE_OK);
    assert_int_equal(store_fault_del(f->s, id2), STORE_NOT_FOUND);
    int64_t id3 = 0;
    assert_int_equal(store_fault_add(f->s, &spec, 3, &id3), STORE_OK);
    assert_true(id3 > id2);
    assert_int_equal(store_fault_version(f->s, &max_id, &count), STORE_OK);
    assert_int_equal(max_id, id3);
    assert_int_equal(count, 2);
    assert_int_equal(store_fault_list(f->s, count_rule, &rows), STORE_OK);
    assert_int_equal(rows, 2);
}

static void test_queue_drop(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    assert_int_equal(
        store_test_exec(f->s,
                        "INSERT INTO messages(id, sender, size, received_ms, body) VALUES"
                        " (7, 's@x', 1, 0, x'41');"
                        "INSERT INTO queue(id, message_id, sender, recipient, domain,"
                        " created_ms, next_attempt_ms) VALUES (1, 7, 's@x', 'r@y', 'y', 0, 0),"
                        " (2, 7, 's@x', 'q@y', 'y', 0, 0);"),
        STORE_OK);
    int n = 0;
    assert_int_equal(store_queue_list(f->s, count_queue, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(store_queue_drop(f->s, 1), STORE_OK);
    assert_int_equal(store_queue_drop(f->s, 1), STORE_NOT_FOUND);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 1);
    assert_int_equal(store_queue_drop(f->s, 2), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM messages"), 0);
}

static void test_transactions_and_savepoints(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_domain_add(f->s, "kept.test"), STORE_OK);
    assert_int_equal(store_savepoint(f->s), STORE_OK);
    assert_int_equal(store_domain_add(f->s, "undone.test"), STORE_OK);
    assert_int_equal(store_savepoint_rollback(f->s), STORE_OK);
    assert_int_equal(store_commit(f->s), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM domains WHERE name='kept.test'"), 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM domains WHERE name='undone.test'"),
                     0);
    /* Rollback with no transaction open is harmless. */
    assert_int_equal(store_rollback(f->s), STORE_OK);
}

/* Undoing a savepoint after a failure keeps the failure's text: the caller reports why it failed,
 * not how the cleanup went. With no transaction left there is nothing to undo, and it says so. */
static void test_savepoint_undo_keeps_the_cause(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    assert_int_equal(store_domain_add(f->s, "dup.test"), STORE_OK);
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_savepoint(f->s), STORE_OK);
    assert_int_equal(store_domain_add(f->s, "new.test"), STORE_OK);
    assert_int_equal(store_domain_add(f->s, "dup.test"), STORE_EXISTS);
    char cause[512];
    snprintf(cause, sizeof(cause), "%s", store_errmsg(f->s));
    assert_non_null(strstr(cause, "add domain"));
    assert_int_equal(store_savepoint_rollback(f->s), STORE_OK);
    assert_string_equal(store_errmsg(f->s), cause);
    assert_int_equal(store_commit(f->s), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM domains WHERE name='new.test'"), 0);
    /* Outside any transaction no savepoint can be left to roll back to. */
    assert_int_not_equal(store_savepoint_rollback(f->s), STORE_OK);
}

/* A group of reads sees one snapshot on SQLite: a domain another connection adds meanwhile shows
 * only after the group ends. On PostgreSQL grouping does nothing, so each read sees it at once. */
static void test_read_group_is_one_snapshot(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    struct store *other = open_ok(f->path);
    bool local = true;
    assert_int_equal(store_read_group_begin(f->s), STORE_OK);
    assert_int_equal(store_domain_is_local(f->s, "late.test", &local), STORE_OK);
    assert_false(local);
    assert_int_equal(store_domain_add(other, "late.test"), STORE_OK);
    assert_int_equal(store_domain_is_local(f->s, "late.test", &local), STORE_OK);
    assert_true(local == store_test_on_pg);
    assert_int_equal(store_read_group_end(f->s), STORE_OK);
    assert_int_equal(store_domain_is_local(f->s, "late.test", &local), STORE_OK);
    assert_true(local);
    /* Ending with no group open, or twice, is harmless. */
    assert_int_equal(store_read_group_end(f->s), STORE_OK);
    store_close(&other);
}

/* Savepoints (store_exec_kept) keep working past the number of statements kept by their text:
 * names beyond it are run unkept, and every savepoint still does what it says. */
static void test_many_savepoint_names(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    static const char *const names[] = {
        "n_a", "n_b", "n_c", "n_d", "n_e", "n_f", "n_g", "n_h", "n_i", "n_j", "n_k", "n_l", "n_m",
        "n_n", "n_o", "n_p", "n_q", "n_r", "n_s", "n_t", "n_u", "n_v", "n_w", "n_x", "n_y", "n_z"};
    enum { N = sizeof(names) / sizeof(names[0]) };
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            char domain[32];
            snprintf(domain, sizeof(domain), "%s-%d.test", names[i], round);
            assert_int_equal(store_sp_begin(f->s, names[i]), STORE_OK);
            assert_int_equal(store_domain_add(f->s, domain), STORE_OK);
            if (i % 2 == 0)
                assert_int_equal(store_sp_undo(f->s, names[i]), STORE_OK);
            else
                assert_int_equal(store_sp_release(f->s, names[i]), STORE_OK);
        }
    }
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM domains"), N); /* the odd ones */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM domains WHERE name = 'n_b-1.test'"),
                     1);
}

/* Ends every other connection to the test's PostgreSQL database, as a server restart would, and
 * waits (bounded) until they are gone. */
static void end_other_connections(const char *path)
{
    (void)store_test_query_i64(path,
                               "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    for (int i = 0; i < 500; i++) {
        if (store_test_query_i64(path, "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                                       " current_database() AND pid <> pg_backend_pid()") == 0)
            return;
        usleep(10 * 1000);
    }
    fail_msg("the other connections did not end within 5 s");
}

/* On PostgreSQL a read whose connection the server ended while it was idle runs again on a new
 * connection and succeeds; a write is never run twice: it fails, and the next call reconnects.
 * SQLite has no connection to lose. */
static void test_read_retried_after_lost_connection(void **state)
{
    struct fixture *f = *state;
    f->s = open_ok(f->path);
    assert_int_equal(store_domain_add(f->s, "a.test"), STORE_OK);
    if (!store_test_on_pg)
        return;
    bool local = false;
    end_other_connections(f->path);
    assert_int_equal(store_domain_is_local(f->s, "a.test", &local), STORE_OK);
    assert_true(local);
    end_other_connections(f->path);
    assert_int_equal(store_domain_add(f->s, "b.test"), STORE_ERR);
    assert_int_equal(store_domain_add(f->s, "b.test"), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM domains WHERE name = 'b.test'"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh_database_has_current_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_older_database_is_migrated_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_database_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unopenable_path_names_the_file, setup, teardown),
        cmocka_unit_test(test_unreachable_server_hides_the_password),
        cmocka_unit_test_setup_teardown(test_concurrent_first_open_migrates_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domains_and_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_first_is_the_first_listed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_delete_frees_unshared_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_closes_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_created_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_networks_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_windows_expire_by_lookup_not_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_take_relay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_faults_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions_and_savepoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_savepoint_undo_keeps_the_cause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_group_is_one_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_savepoint_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_retried_after_lost_connection, setup, teardown),
    };
    return STORE_TEST_RUN(tests);
}
