/*
 * log.c - see log.h. The level is a process-wide atomic so the writer thread reads it safely.
 */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int current_level = LOG_LEVEL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    atomic_store(&current_level, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&current_level);
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&current_level);
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level level)
{
    if ((int)level < 0 || (size_t)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "?";
    return level_names[level];
}

void log_emit(enum log_level level, const char *sub, uint64_t sid, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    int saved_errno = errno;
    char line[LOG_LINE_MAX_BYTES];
    size_t len = 0;

    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL) {
        memset(&tm, 0, sizeof(tm));
        ts.tv_nsec = 0;
    }
    len += strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line + len, sizeof(line) - len, ".%03ldZ level=%s sub=%s ",
                     ts.tv_nsec / 1000000L, log_level_name(level), sub);
    if (n > 0)
        len += (size_t)n;
    if (sid != 0 && len < sizeof(line)) {
        n = snprintf(line + len, sizeof(line) - len, "sid=%016llx ", (unsigned long long)sid);
        if (n > 0)
            len += (size_t)n;
    }
    if (len < sizeof(line)) {
        va_list ap;
        va_start(ap, fmt);
        n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
        va_end(ap);
        if (n > 0)
            len += (size_t)n;
    }
    if (len >= sizeof(line) - 1) {
        /* Cut: mark it, keep room for the newline. */
        len = sizeof(line) - 1;
        memcpy(line + len - 3, "...", 3);
    }
    line[len++] = '\n';

    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* Nowhere left to report a logging failure. */
        off += (size_t)w;
    }
    errno = saved_errno;
}

char *log_escape(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    static const char hex[] = "0123456789abcdef";
    bool quote = srclen == 0;
    for (size_t i = 0; i < srclen && !quote; i++) {
        unsigned char c = (unsigned char)src[i];
        quote = c == ' ' || c == '=' || c == '"';
    }
    size_t out = 0;
    /* Room kept at the end: closing quote, "..." and the NUL. */
    size_t limit = dstlen - (quote ? 5 : 4);
    if (quote)
        dst[out++] = '"';
    size_t i;
    for (i = 0; i < srclen; i++) {
        unsigned char c = (unsigned char)src[i];
        char tmp[4];
        size_t tlen;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tlen = 2;
        } else if (c >= 0x20 && c < 0x7f) {
            tmp[0] = (char)c;
            tlen = 1;
        } else {
            tmp[0] = '\\';
            tmp[1] = 'x';
            tmp[2] = hex[c >> 4];
            tmp[3] = hex[c & 15];
            tlen = 4;
        }
        if (out + tlen > limit)
            break;
        memcpy(dst + out, tmp, tlen);
        out += tlen;
    }
    if (i < srclen) {
        memcpy(dst + out, "...", 3);
        out += 3;
    }
    if (quote)
        dst[out++] = '"';
    dst[out] = '\0';
    return dst;
}
