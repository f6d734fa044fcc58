/*
 * clock.h - the two clocks postern reads, in milliseconds.
 *
 * clock_monotonic_ms measures durations (how long a batch took, how long a blob handle has been
 * held): it never jumps when the administrator or NTP sets the time, and its zero means nothing.
 * clock_wall_ms is the time of day, for what is stored or shown (arrival times, window expiry).
 * The libuv loop keeps its own cached clock (uv_now); code on the loop uses that for timers, and
 * these functions serve code off the loop (the writer thread, storage/) or outside it (the CLI).
 *
 * Both are safe on any thread. They do not fail: clock_gettime cannot fail for these clock ids on
 * any system postern supports, and if it ever did the answer is 0, which callers treat as "long
 * ago" rather than crashing.
 */
#ifndef POSTERN_CLOCK_H
#define POSTERN_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds. */
int64_t clock_monotonic_ms(void);

/* CLOCK_MONOTONIC in nanoseconds, for sub-millisecond durations (commit latency histograms). */
uint64_t clock_monotonic_ns(void);

/* CLOCK_REALTIME in milliseconds since the Unix epoch. */
int64_t clock_wall_ms(void);

#endif
