/* log.c - leveled logging to stderr (systemd and containers collect it). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static enum log_level cur_level = LOG_LVL_INFO;
static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_set_level(enum log_level level)
{
    cur_level = level;
}

int
log_level_parse(const char *s)
{
    for (int i = 0; i <= LOG_LVL_DEBUG; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

static void vlog(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
vlog(enum log_level level, const char *fmt, va_list ap)
{
    struct timespec ts;
    struct tm tm;
    char when[32];

    if (level > cur_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    flockfile(stderr);
    fprintf(stderr, "%s.%03ldZ llmguardd %s: ", when, ts.tv_nsec / 1000000,
            level_names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
}

static void log_at(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
log_at(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

#define DEFINE_LOG(fn, lvl)                 \
    void fn(const char *fmt, ...)           \
    {                                       \
        va_list ap;                         \
        va_start(ap, fmt);                  \
        vlog(lvl, fmt, ap);                 \
        va_end(ap);                         \
    }

DEFINE_LOG(log_error, LOG_LVL_ERROR)
DEFINE_LOG(log_warn, LOG_LVL_WARN)
DEFINE_LOG(log_info, LOG_LVL_INFO)
DEFINE_LOG(log_debug, LOG_LVL_DEBUG)

void
log_throttled(struct log_throttle *t, double now_s, enum log_level level,
              const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (now_s < t->next_s) {
        t->suppressed++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (t->suppressed > 0)
        log_at(level, "%s (and %lu more since the last such line, not "
               "logged)", line, t->suppressed);
    else
        log_at(level, "%s", line);
    t->suppressed = 0;
    t->next_s = now_s + 1.0;
}

void
fatalx(int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(LOG_LVL_ERROR, fmt, ap);
    va_end(ap);
    exit(status);
}
