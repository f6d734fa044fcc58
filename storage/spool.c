/*
 * spool.c - spool files for the part of an incoming message beyond the transaction's in-memory
 * part; see spool.h for why, where, and the "no name while in use" rule.
 *
 * It owns nothing but what each call opens and closes itself; the descriptor spool_file_open
 * returns belongs to the caller. No SQLite, no libuv, no logging: errors go back as codes or as
 * one line of text.
 */
#include "storage/spool.h"

#include "storage/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Spool file names: the prefix spool_dir_prepare removes, and mkstemp's template after it. */
#define SPOOL_FILE_PREFIX   "tx-"
#define SPOOL_FILE_TEMPLATE SPOOL_FILE_PREFIX "XXXXXX"

/* FNV-1a, 64 bits: a short stable name for a connection string, which may not appear in a path
 * (it has blanks and slashes, and may hold a password). */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

int spool_dir_path(const char *db_path, char *out, size_t len)
{
    int n;
    if (store_is_postgres(db_path)) {
        const char *tmp = getenv("TMPDIR");
        n = snprintf(out, len, "%s/postern-spool-%ld-%016llx",
                     tmp != NULL && tmp[0] == '/' ? tmp : SPOOL_PG_BASE_DIR, (long)getuid(),
                     (unsigned long long)fnv1a64(db_path));
    } else {
        n = snprintf(out, len, "%s%s", db_path, SPOOL_DIR_SUFFIX);
    }
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

/* Removes the leftover spool files of dir (a crash between create and unlink). */
static int remove_leftovers(const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot open spool directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, SPOOL_FILE_PREFIX, strlen(SPOOL_FILE_PREFIX)) != 0)
            continue;
        /* unlinkat on the directory's own descriptor: no path to rebuild, no race on dir. */
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove spool file %s/%s: %s", dir, e->d_name,
                     strerror(errno));
            rc = -1;
            break;
        }
        errno = 0;
    }
    if (rc == 0 && errno != 0) {
        snprintf(err, errlen, "cannot read spool directory %s: %s", dir, strerror(errno));
        rc = -1;
    }
    if (closedir(d) != 0 && rc == 0) {
        snprintf(err, errlen, "cannot close spool directory %s: %s", dir, strerror(errno));
        rc = -1;
    }
    return rc;
}

int spool_dir_prepare(const char *db_path, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    if (spool_dir_path(db_path, dir, sizeof(dir)) != 0) {
        snprintf(err, errlen, "spool directory path too long for database %s", db_path);
        return -1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create spool directory %s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (lstat(dir, &sb) != 0) {
        snprintf(err, errlen, "cannot stat spool directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "spool directory %s is not a directory", dir);
        return -1;
    }
    /* Another user's directory could be read or filled by that user: refuse it. Root may use
     * the service user's (the privilege drop chowns it, server/serve.c). */
    if (sb.st_uid != geteuid() && geteuid() != 0) {
        snprintf(err, errlen, "spool directory %s belongs to uid %ld, not to us", dir,
                 (long)sb.st_uid);
        return -1;
    }
    if ((sb.st_mode & 07777) != 0700 && chmod(dir, 0700) != 0) {
        snprintf(err, errlen, "cannot chmod 0700 spool directory %s: %s", dir, strerror(errno));
        return -1;
    }
    return remove_leftovers(dir, err, errlen);
}

int spool_file_open(const char *db_path)
{
    char path[PATH_MAX];
    if (spool_dir_path(db_path, path, sizeof(path)) != 0 ||
        strlen(path) + 1 + sizeof(SPOOL_FILE_TEMPLATE) > sizeof(path))
        return -ENAMETOOLONG;
    strcat(path, "/" SPOOL_FILE_TEMPLATE);
    /* mkstemp creates it 0600 (O_EXCL): nobody else can have it open. */
    int fd = mkstemp(path);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (unlink(path) != 0)
        rc = -errno;
    int flags = rc == 0 ? fcntl(fd, F_GETFD) : -1;
    if (rc == 0 && (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0))
        rc = -errno;
    if (rc != 0) {
        (void)close(fd); /* nothing was written: nothing to lose */
        return rc;
    }
    return fd;
}

int spool_file_append(int fd, const void *p, size_t n)
{
    const unsigned char *q = p;
    while (n > 0) {
        ssize_t k = write(fd, q, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO;
        q += k;
        n -= (size_t)k;
    }
    return 0;
}

int spool_file_read_at(int fd, void *buf, size_t n, uint64_t off)
{
    unsigned char *q = buf;
    while (n > 0) {
        if (off > (uint64_t)INT64_MAX)
            return -EOVERFLOW;
        ssize_t k = pread(fd, q, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO; /* shorter than the caller was told: never store a truncated message */
        q += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}
