/*
 * test_spool.c - storage/spool.c: the spool directory (created 0700, an existing one made 0700,
 * leftover spool files removed and nothing else, a file in its place refused) and spool files
 * (no name while open, append then read back exactly, a short file is an error, not a short read),
 * and store_deliver's three parts (storage/mailbox.h): trace prefix, spool file and in-memory tail
 * stored byte for byte, the facts it records (8-bit octets, a Return-Path line, also when that
 * line or the 8-bit octet lies in another part), and a spool file shorter than announced storing
 * nothing at all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "storage/mailbox.h"
#include "storage/queue.h"
#include "storage/spool.h"
#include "storage/store.h"

struct fixture {
    char dir[64];
    char db[128];
    char spool[160];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/postern-spool-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/t.db", f->dir);
    snprintf(f->spool, sizeof(f->spool), "%s/t.db-spool", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Entries of dir other than "." and "..". */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void touch(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
}

static void test_dir_path(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(spool_dir_path("a.db", out, sizeof(out)), 0);
    assert_string_equal(out, "a.db-spool");
    assert_int_equal(spool_dir_path("/a/rather/long/path.db", out, sizeof(out)), -ENAMETOOLONG);
}

static void test_prepare_creates_private_dir(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    assert_int_equal(spool_dir_prepare(f->db, err, sizeof(err)), 0);
    struct stat sb;
    assert_int_equal(lstat(f->spool, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0700);
    /* An existing directory that is too open is made private again. */
    assert_int_equal(chmod(f->spool, 0755), 0);
    assert_int_equal(spool_dir_prepare(f->db, err, sizeof(err)), 0);
    assert_int_equal(lstat(f->spool, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);
}

static void test_prepare_removes_leftovers_only(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    assert_int_equal(spool_dir_prepare(f->db, err, sizeof(err)), 0);
    touch(f->spool, "tx-abc123");
    touch(f->spool, "tx-zzzzzz");
    touch(f->spool, "keep-me");
    assert_int_equal(count_entries(f->spool), 3);
    assert_int_equal(spool_dir_prepare(f->db, err, sizeof(err)), 0);
    assert_int_equal(count_entries(f->spool), 1);
    char path[256];
    snprintf(path, sizeof(path), "%s/keep-me", f->spool);
    assert_int_equal(access(path, F_OK), 0);
}

static void test_prepare_refuses_a_file(void **state)
{
    struct fixture *f = *state;
    touch(f->dir, "t.db-spool");
    char err[256] = "";
    assert_int_equal(spool_dir_prepare(f->db, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a directory"));
}

static void test_file_has_no_name_and_reads_back(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    assert_int_equal(spool_dir_prepare(f->db, err, sizeof(err)), 0);
    int fd = spool_file_open(f->db);
    assert_true(fd >= 0);
    assert_int_equal(count_entries(f->spool), 0); /* unlinked at once */
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    unsigned char big[100000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 7);
    assert_int_equal(spool_file_append(fd, "hello ", 6), 0);
    assert_int_equal(spool_file_append(fd, big, sizeof(big)), 0);
    unsigned char back[sizeof(big)];
    char head[6];
    assert_int_equal(spool_file_read_at(fd, head, 6, 0), 0);
    assert_memory_equal(head, "hello ", 6);
    assert_int_equal(spool_file_read_at(fd, back, sizeof(back), 6), 0);
    assert_memory_equal(back, big, sizeof(big));
    /* Past the end is an error, never a short read. */
    assert_int_equal(spool_file_read_at(fd, back, 10, 6 + sizeof(big) - 5), -EIO);
    assert_int_equal(close(fd), 0);
}

static void test_open_without_dir_fails(void **state)
{
    struct fixture *f = *state;
    int fd = spool_file_open(f->db); /* no spool directory yet */
    assert_int_equal(fd, -ENOENT);
}

/* ---- store_deliver with a spool part ---- */

/* Delivers prefix + spool (written from sp) + tail to one remote recipient; returns the status. */
static int deliver_parts(struct store *st, const struct fixture *f, const char *prefix,
                         const unsigned char *sp, size_t sp_len, uint64_t announce,
                         const char *tail, int64_t *id_out)
{
    int fd = spool_file_open(f->db);
    assert_true(fd >= 0);
    assert_int_equal(spool_file_append(fd, sp, sp_len), 0);
    static const char *const rcpts[] = {"far@remote.example"};
    struct store_delivery d = {
        .sender = "s@x.example",
        .prefix = (const unsigned char *)prefix,
        .prefix_len = strlen(prefix),
        .spool_fd = fd,
        .spool_len = announce,
        .body = (const unsigned char *)tail,
        .body_len = strlen(tail),
        .remote_rcpts = rcpts,
        .n_remote = 1,
        .received_ms = 1,
    };
    int rc = store_deliver(st, &d);
    *id_out = d.message_id_out;
    assert_int_equal(close(fd), 0);
    return rc;
}

static void read_body(const struct fixture *f, int64_t id, unsigned char **out, size_t *len)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT body, size FROM messages WHERE id = ?1", -1, &q, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(q, 1, id);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    *len = (size_t)sqlite3_column_bytes(q, 0);
    assert_int_equal(sqlite3_column_int64(q, 1), (int64_t)*len);
    *out = malloc(*len + 1);
    assert_non_null(*out);
    if (*len > 0)
        memcpy(*out, sqlite3_column_blob(q, 0), *len);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void test_deliver_three_parts(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    assert_int_equal(spool_dir_prepare(f->db, err, sizeof(err)), 0);
    struct store *st = NULL;
    assert_int_equal(store_open(f->db, &st, err, sizeof(err)), STORE_OK);

    /* More than one spool chunk, 7-bit only, so the 8-bit fact comes from the tail. */
    size_t sp_len = MAILBOX_SPOOL_CHUNK_BYTES * 2 + 123;
    unsigned char *sp = malloc(sp_len);
    assert_non_null(sp);
    for (size_t i = 0; i < sp_len; i++)
        sp[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : (unsigned char)('a' + i % 26);
    const char *prefix = "Return-Path: <s@x.example>\r\nReceived: from x\r\n";
    const char *tail = "caf\xc3\xa9\r\n";
    int64_t id = 0;
    assert_int_equal(deliver_parts(st, f, prefix, sp, sp_len, sp_len, tail, &id), STORE_OK);
    unsigned char *body;
    size_t len;
    read_body(f, id, &body, &len);
    size_t plen = strlen(prefix), tlen = strlen(tail);
    assert_int_equal(len, plen + sp_len + tlen);
    assert_memory_equal(body, prefix, plen);
    assert_memory_equal(body + plen, sp, sp_len);
    assert_memory_equal(body + plen + sp_len, tail, tlen);
    free(body);
    struct store_message_facts facts;
    assert_int_equal(store_queue_message_facts(st, id, &facts), STORE_OK);
    assert_true(facts.known);
    assert_true(facts.eightbit);
    assert_int_equal(facts.return_path_bytes, strlen("Return-Path: <s@x.example>\r\n"));
    assert_int_equal(facts.size_bytes, (int64_t)len);

    /* The Return-Path line runs from the prefix into the spool part; no 8-bit octet at all. */
    const unsigned char rest[] = "Path: <a@b>\r\nSubject: x\r\n\r\nbody\r\n";
    assert_int_equal(
        deliver_parts(st, f, "RETURN-", rest, sizeof(rest) - 1, sizeof(rest) - 1, "", &id),
        STORE_OK);
    assert_int_equal(store_queue_message_facts(st, id, &facts), STORE_OK);
    assert_false(facts.eightbit);
    assert_int_equal(facts.return_path_bytes, strlen("RETURN-Path: <a@b>\r\n"));

    /* No Return-Path; the 8-bit octet is in the spool part. */
    const unsigned char eight[] = "Subject: \xff\r\n";
    assert_int_equal(deliver_parts(st, f, "Received: x\r\n", eight, sizeof(eight) - 1,
                                   sizeof(eight) - 1, "", &id),
                     STORE_OK);
    assert_int_equal(store_queue_message_facts(st, id, &facts), STORE_OK);
    assert_true(facts.eightbit);
    assert_int_equal(facts.return_path_bytes, 0);

    /* A message without recorded facts (stored before schema version 5) says so. */
    char sql[96];
    snprintf(sql, sizeof(sql), "DELETE FROM message_facts WHERE message_id = %lld", (long long)id);
    assert_int_equal(store_exec_for_tests(st, sql), STORE_OK);
    assert_int_equal(store_queue_message_facts(st, id, &facts), STORE_OK);
    assert_false(facts.known);
    /* Facts go with their message (ON DELETE CASCADE through the queue_release trigger). */
    assert_int_equal(store_exec_for_tests(st, "DELETE FROM queue"), STORE_OK);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM message_facts) +"
                                        " (SELECT count(*) FROM messages)",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    free(sp);
    store_close(&st);
}

static void test_deliver_short_spool_stores_nothing(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    assert_int_equal(spool_dir_prepare(f->db, err, sizeof(err)), 0);
    struct store *st = NULL;
    assert_int_equal(store_open(f->db, &st, err, sizeof(err)), STORE_OK);
    const unsigned char sp[] = "only this\r\n";
    int64_t id = 0;
    /* Announced longer than what the file holds: the delivery fails whole. */
    assert_int_equal(deliver_parts(st, f, "Received: x\r\n", sp, sizeof(sp) - 1, sizeof(sp) + 100,
                                   "tail\r\n", &id),
                     STORE_ERR);
    assert_non_null(strstr(store_errmsg(st), "spool"));
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM messages) +"
                                        " (SELECT count(*) FROM queue) +"
                                        " (SELECT count(*) FROM message_facts)",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    store_close(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dir_path),
        cmocka_unit_test_setup_teardown(test_prepare_creates_private_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_removes_leftovers_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refuses_a_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_has_no_name_and_reads_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_without_dir_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_three_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_short_spool_stores_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
