/*
 * disk_reserve.h - the free-space reserve of the database's file system ([smtp] min_free_space),
 * in the manner of Postfix's queue_minfree.
 *
 * A full disk must not lock users out of their mail: POP3 logins, DELE and the admin commands
 * write to the database too, and they are what frees space. So new mail is refused with a 4xx
 * (the SMTP session asks disk_reserve_is_low at MAIL and DATA) while the space left for
 * unprivileged writers (statvfs f_bavail) is below the reserve, which keeps that space for the
 * rest. The answer is cached for DISK_RESERVE_CACHE_MS, so a busy server calls statvfs at most
 * once a second; statvfs itself is a cheap system call that does not wait on the disk.
 *
 * It does not refuse anything itself, and it is a hint, not a guarantee: messages already being
 * received may still fill the disk, and then the writer's own failure answers 451.
 * Thread-safe: the cache is atomic, so loops on several threads may share one reserve.
 */
#ifndef POSTERN_DISK_RESERVE_H
#define POSTERN_DISK_RESERVE_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define DISK_RESERVE_CACHE_MS 1000

struct disk_reserve {
    char dir[PATH_MAX];         /* the folder holding the database */
    uint64_t min_free_bytes;    /* 0: no reserve */
    _Atomic int64_t checked_ms; /* monotonic time of the last statvfs; 0: never */
    atomic_bool low;
    atomic_bool failed; /* the last statvfs failed (logged once per failure run) */
};

/* Watches the file system holding database_path (a file name; its folder is statted). */
void disk_reserve_init(struct disk_reserve *r, const char *database_path, uint64_t min_free_bytes);

/*
 * True while free space is below the reserve; false without a reserve, or when statvfs fails
 * (logged): the check then gets out of the way and the writer's own errors decide. now_ms is a
 * monotonic clock in milliseconds. A change of state is logged (event=disk-low, disk-ok).
 */
bool disk_reserve_is_low(struct disk_reserve *r, int64_t now_ms);

/* statvfs now, ignoring the cache: free bytes for unprivileged writers, or a negative errno. */
int64_t disk_reserve_free_bytes(const struct disk_reserve *r);

#endif
