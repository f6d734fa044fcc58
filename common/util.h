/*
 * util.h - small language helpers every layer may use: macros only, no functions, no state.
 * Anything with behaviour of its own (a clock, a parser) gets its own module instead.
 */
#ifndef POSTERN_UTIL_H
#define POSTERN_UTIL_H

#include <stddef.h>

/*
 * The struct that embeds member, given a pointer to that member. libuv handles, threadpool work
 * items and writer jobs are embedded in their owner and come back to a callback as the bare
 * member; this recovers the owner without a separate back-pointer. ptr must really point at
 * member inside a live type, or the result is garbage.
 */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
