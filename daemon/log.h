/* log.h - leveled logging to stderr, one line per event. */
#ifndef LLMGUARD_LOG_H
#define LLMGUARD_LOG_H

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level level);
/* Parse "error", "warn", "info" or "debug"; -1 for anything else. */
int log_level_parse(const char *s);
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * A throttle for a line that may repeat without end (a refusal): at most
 * one line a second; the next one that gets through says how many were
 * left out.  Zero it to start; now_s is the caller's monotonic clock.
 */
struct log_throttle {
    double next_s;                  /* the next line may go from then */
    unsigned long suppressed;       /* left out since the last line */
};
void log_throttled(struct log_throttle *t, double now_s, enum log_level level,
                   const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Log at error level and exit with status; for start-up failures only. */
void fatalx(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

#endif
