/*
 * disk_reserve.c - see disk_reserve.h. One statvfs per DISK_RESERVE_CACHE_MS at most; the state
 * and its changes are logged here, the refusal is the SMTP session's.
 */
#include "server/disk_reserve.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "common/log.h"

void disk_reserve_init(struct disk_reserve *r, const char *database_path, uint64_t min_free_bytes)
{
    const char *slash = strrchr(database_path, '/');
    if (slash == NULL)
        snprintf(r->dir, sizeof(r->dir), ".");
    else if (slash == database_path)
        snprintf(r->dir, sizeof(r->dir), "/");
    else
        snprintf(r->dir, sizeof(r->dir), "%.*s", (int)(slash - database_path), database_path);
    r->min_free_bytes = min_free_bytes;
    atomic_init(&r->checked_ms, 0);
    atomic_init(&r->low, false);
    atomic_init(&r->failed, false);
}

int64_t disk_reserve_free_bytes(const struct disk_reserve *r)
{
    struct statvfs v;
    if (statvfs(r->dir, &v) != 0)
        return -errno;
    uint64_t unit = v.f_frsize != 0 ? v.f_frsize : v.f_bsize;
    uint64_t blocks = v.f_bavail;
    if (unit != 0 && blocks > (uint64_t)INT64_MAX / unit)
        return INT64_MAX;
    return (int64_t)(blocks * unit);
}

bool disk_reserve_is_low(struct disk_reserve *r, int64_t now_ms)
{
    if (r == NULL || r->min_free_bytes == 0)
        return false;
    int64_t last = atomic_load(&r->checked_ms);
    if (last != 0 && now_ms - last < DISK_RESERVE_CACHE_MS && now_ms >= last)
        return atomic_load(&r->low);
    atomic_store(&r->checked_ms, now_ms != 0 ? now_ms : 1);
    char esc[PATH_MAX + 8];
    int64_t free_bytes = disk_reserve_free_bytes(r);
    if (free_bytes < 0) {
        if (!atomic_exchange(&r->failed, true))
            log_warn("serve", 0, "event=disk-check-failed dir=%s error=\"%s\"",
                     log_escape(esc, sizeof(esc), r->dir, strlen(r->dir)),
                     strerror((int)-free_bytes));
        atomic_store(&r->low, false);
        return false;
    }
    atomic_store(&r->failed, false);
    bool low = (uint64_t)free_bytes < r->min_free_bytes;
    bool was = atomic_exchange(&r->low, low);
    if (low && !was)
        log_warn("serve", 0,
                 "event=disk-low dir=%s free=%" PRId64 " reserve=%" PRIu64
                 " text=\"new mail is refused with 452 until space is freed\"",
                 log_escape(esc, sizeof(esc), r->dir, strlen(r->dir)), free_bytes,
                 r->min_free_bytes);
    else if (!low && was)
        log_info("serve", 0, "event=disk-ok dir=%s free=%" PRId64 " reserve=%" PRIu64,
                 log_escape(esc, sizeof(esc), r->dir, strlen(r->dir)), free_bytes,
                 r->min_free_bytes);
    return low;
}
