/*
 * clock.h - the daemon's two clocks, in seconds as doubles.
 *
 * The monotonic clock measures waits, timeouts, cooldowns and uptime; the
 * wall clock dates quota slots and spans.  Only the event-loop glue reads
 * them: the pure modules (limiter, quota, router) are handed `now`.
 */
#ifndef LLMGUARD_CLOCK_H
#define LLMGUARD_CLOCK_H

/* CLOCK_MONOTONIC: never jumps, meaningless across hosts and boots. */
double clock_mono(void);
/* CLOCK_REALTIME: Unix seconds. */
double clock_wall(void);

#endif
