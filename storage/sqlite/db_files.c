/*
 * db_files.c - the database's files on disk: the database itself is created with mode 0600, and
 * the modes of the database and its -wal and -shm files are checked for access by anybody but
 * the owner. The database holds every argon2id hash and every stored message, so nobody else
 * has any business reading it.
 *
 * Why creating the main file is enough: SQLite creates the -wal and -shm files with the mode of
 * the database file (and, running as root, with its owner), so a database created 0600 keeps its
 * companions 0600 whatever the umask. The database is created here, with O_EXCL, before SQLite
 * opens it; SQLite takes an empty file for an empty database.
 *
 * What it does not do: change the mode of an existing file (the operator decides; the caller
 * warns or refuses with the chmod that fixes it), or chown (server/serve.c does that at the
 * privilege drop).
 */
#include "storage/sqlite/sqlite_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int store_file_create_private(const char *path, bool *created_out, char *err, size_t errlen)
{
    *created_out = false;
    /* ":memory:" and "" are SQLite's in-memory and temporary databases: no file of ours. */
    if (path[0] == '\0' || strcmp(path, ":memory:") == 0)
        return STORE_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return STORE_OK;
        snprintf(err, errlen, "cannot create: %s", strerror(errno));
        return STORE_ERR;
    }
    int rc = STORE_OK;
    if (close(fd) != 0) {
        snprintf(err, errlen, "cannot create: %s", strerror(errno));
        rc = STORE_ERR;
    }
    *created_out = rc == STORE_OK;
    return rc;
}

static enum store_exposure exposure_of(mode_t mode)
{
    if (mode & (S_IROTH | S_IWOTH))
        return STORE_EXPOSED_OTHERS;
    if (mode & (S_IRGRP | S_IWGRP))
        return STORE_EXPOSED_GROUP;
    return STORE_PRIVATE;
}

int store_file_exposure(const char *path, struct store_exposure_report *out, char *err,
                        size_t errlen)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    memset(out, 0, sizeof(*out));
    out->exposure = STORE_PRIVATE;
    /* A PostgreSQL database has no file here: who may read it is the server's to say (its roles
     * and pg_hba.conf). */
    if (store_is_postgres(path))
        return STORE_OK;
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char file[sizeof(out->file)];
        int n = snprintf(file, sizeof(file), "%s%s", path, suffixes[i]);
        if (n < 0 || (size_t)n >= sizeof(file)) {
            snprintf(err, errlen, "%s: path too long", path);
            return STORE_ERR;
        }
        struct stat stbuf;
        if (stat(file, &stbuf) != 0) {
            if (errno == ENOENT)
                continue;
            snprintf(err, errlen, "cannot stat %s: %s", file, strerror(errno));
            return STORE_ERR;
        }
        enum store_exposure e = exposure_of(stbuf.st_mode);
        if (e > out->exposure) {
            out->exposure = e;
            out->mode = (unsigned)(stbuf.st_mode & 07777);
            memcpy(out->file, file, (size_t)n + 1);
        }
    }
    return STORE_OK;
}

void store_exposure_format(const struct store_exposure_report *r, char *buf, size_t len)
{
    unsigned m = r->mode;
    const char *who = r->exposure == STORE_EXPOSED_OTHERS ? "others" : "its group";
    unsigned rd = r->exposure == STORE_EXPOSED_OTHERS ? S_IROTH : S_IRGRP;
    unsigned wr = r->exposure == STORE_EXPOSED_OTHERS ? S_IWOTH : S_IWGRP;
    const char *how = (m & rd) && (m & wr) ? "readable and writable"
                      : (m & rd)           ? "readable"
                                           : "writable";
    snprintf(buf, len, "database file %s is %s by %s (mode %04o); fix with: chmod 600 %s", r->file,
             how, who, m, r->file);
}
