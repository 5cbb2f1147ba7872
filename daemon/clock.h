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

/*
 * Arm the CLOCK_MONOTONIC timerfd fd for the monotonic instant at_s,
 * rounded up to the nanosecond so that it never fires early (INFINITY:
 * disarm), with a system call only when that differs from *armed_s (NAN:
 * disarmed), which it then becomes.  0, or -1 with errno (*armed_s kept).
 */
int clock_arm_timerfd(int fd, double *armed_s, double at_s);

#endif
