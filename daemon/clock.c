/* clock.c - the monotonic and the wall clock. */
#include <math.h>
#include <sys/timerfd.h>
#include <time.h>

#include "clock.h"

static double
read_clock(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double
clock_mono(void)
{
    return read_clock(CLOCK_MONOTONIC);
}

double
clock_wall(void)
{
    return read_clock(CLOCK_REALTIME);
}

int
clock_arm_timerfd(int fd, double *armed_s, double at_s)
{
    struct itimerspec its = { { 0, 0 }, { 0, 0 } };

    if (at_s == *armed_s || (isinf(at_s) && isnan(*armed_s)))
        return 0;
    if (!isinf(at_s)) {
        double sec = floor(at_s);
        long nsec = (long)ceil((at_s - sec) * 1e9);

        its.it_value.tv_sec = (time_t)sec + nsec / 1000000000;
        its.it_value.tv_nsec = nsec % 1000000000;
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;   /* all zero would disarm it */
    }
    if (timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        return -1;
    *armed_s = isinf(at_s) ? NAN : at_s;
    return 0;
}
