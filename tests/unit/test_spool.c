/*
 * test_spool.c - storage/spool.c: the spool directory (created 0700, an existing one made 0700,
 * leftover spool files removed and nothing else, a file in its place refused) and spool files
 * (no name while open, append then read back exactly, a short file is an error, not a short read).
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

#include "storage/spool.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dir_path),
        cmocka_unit_test_setup_teardown(test_prepare_creates_private_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_removes_leftovers_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refuses_a_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_has_no_name_and_reads_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_without_dir_fails, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
