/*
 * log.h - one line per event on stderr, key=value fields.
 *
 * Every line is "TIME level=LEVEL sub=SUBSYSTEM [sid=HEX] event=NAME k=v ...": the caller
 * writes everything from "event=" on with printf-style formatting; log.c adds the time, the
 * level, the subsystem and the connection id (omitted when sid is 0). A line is assembled in a
 * local buffer and written with one write(2), so lines from the writer thread and the loop
 * thread never interleave. Client-supplied text must go through log_escape() first.
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
};

/* Longest line written; longer ones are cut and end in "...". */
#define LOG_LINE_MAX_BYTES 2048

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
bool log_enabled(enum log_level level);

/* 0 and *out set when s is debug|info|warn|error, -1 otherwise. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);

void log_emit(enum log_level level, const char *sub, uint64_t sid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_debug(sub, sid, ...)                                                                   \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_emit(LOG_LEVEL_DEBUG, sub, sid, __VA_ARGS__);                                      \
    } while (0)
#define log_info(sub, sid, ...)  log_emit(LOG_LEVEL_INFO, sub, sid, __VA_ARGS__)
#define log_warn(sub, sid, ...)  log_emit(LOG_LEVEL_WARN, sub, sid, __VA_ARGS__)
#define log_error(sub, sid, ...) log_emit(LOG_LEVEL_ERROR, sub, sid, __VA_ARGS__)

/*
 * Makes src (srclen bytes, may hold any octet) safe as one field value: printable ASCII is kept,
 * '"' and '\\' are backslash-escaped, every other octet becomes \xNN, and the result is wrapped
 * in double quotes when it is empty or holds a space, '=' or '"'. At most dstlen-1 bytes are
 * written (dstlen must be at least 8); a cut value ends in "...". Returns dst.
 */
char *log_escape(char *dst, size_t dstlen, const char *src, size_t srclen);

#endif
