/*
 * harness.h - what every bench program shares: P forked workers that
 * start together, per-call latency samples, CPU accounting, percentiles
 * and the one output format (a text line, or one flat JSON object).
 *
 * loadgen (llmguardd), redisgen (Redis EVALSHA) and pingpong (the raw
 * Unix-socket floor) all use it, so their numbers are measured the same
 * way and their output reads the same.
 */
#ifndef BENCH_HARNESS_H
#define BENCH_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define HN_MAX_PROCS 256

/* What a worker sends back, followed by n_lat uint64 latencies in ns. */
struct hn_report {
    uint64_t ok;                /* grants, reservations, round trips */
    uint64_t denied;            /* refused: timeout, quota, empty bucket */
    uint64_t errors;            /* anything else; the worker stops */
    uint64_t n_lat;
    double first_s, last_s;     /* first counted call start, last end */
    double cpu_s;               /* the worker's CPU time while measured */
    int err_code;
    char err_msg[200];
};

/* A growable array of latencies, in nanoseconds. */
struct hn_samples {
    uint64_t *v;
    size_t n, cap;
};

/* The time line every worker shares (CLOCK_MONOTONIC is system-wide). */
struct hn_schedule {
    double go_s;                /* all workers start */
    double measure_s;           /* warm-up over: samples count from here */
    double end_s;               /* no call starts after this */
};

/* One worker's state, handed to its function. */
struct hn_worker {
    int index;                  /* 0 .. procs - 1 */
    struct hn_report r;
    struct hn_samples s;
    struct hn_schedule sc;
    bool measuring;             /* set by hn_measure() */
    int ready_fd, go_fd;
};

/* How to run the workers. */
struct hn_plan {
    int procs;
    double seconds;             /* measured window */
    double warmup_s;            /* run but not counted */
    pid_t server_pid;           /* read its CPU over the window; 0: don't */
    bool cpu_whole_run;         /* server CPU from go to the last report */
};

/* The merged outcome of a run. */
struct hn_result {
    struct hn_report sum;       /* ok, denied, errors, cpu summed */
    struct hn_samples lat;      /* all workers' latencies, sorted */
    uint64_t min_ok, max_ok;    /* per worker, for fairness */
    uint64_t ok_of[HN_MAX_PROCS]; /* each worker's ok, by index */
    double go_s;
    double window_s;            /* the measured window */
    double server_cpu_s;        /* -1: not measured */
};

/*
 * A worker's body.  It connects, then calls hn_ready() exactly once (also
 * when connecting failed: record that in w->r first), then runs its calls
 * until w->sc.end_s.  The harness sends the report when it returns.
 */
typedef void (*hn_worker_fn)(struct hn_worker *w, void *arg);

double hn_now_s(void);
uint64_t hn_now_ns(void);
double hn_proc_cpu_s(void);
/* CPU time (user + system) of pid in seconds, from /proc; -1 on error. */
double hn_pid_cpu_s(pid_t pid);
void hn_sleep_until(double t_s);
void hn_sleep_s(double s);

void hn_die(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
/* A number in [lo, hi] or exit 2 naming the option. */
double hn_parse_num(const char *prog, const char *opt, const char *s,
                    double lo, double hi);

void hn_samples_add(struct hn_samples *s, uint64_t ns);

/*
 * Tell the parent this worker is ready and wait for the common start.
 * Returns false when the worker recorded an error before it (it must then
 * return without running).  On true, w->sc holds the schedule and the
 * start instant has come.
 */
bool hn_ready(struct hn_worker *w);

/*
 * Call at the start of each call with its start time: true when the call
 * falls in the measured window.  The first such call starts the worker's
 * CPU clock.
 */
bool hn_measure(struct hn_worker *w, double start_s);

/* Record a counted success that started at t0 and ended at t1 (ns). */
void hn_ok(struct hn_worker *w, uint64_t t0_ns, uint64_t t1_ns);

/* Record an error that stops the worker. */
void hn_fail(struct hn_worker *w, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fork plan->procs workers running fn, start them together, merge what
 * they send into res (latencies sorted).  -1 when a worker failed. */
int hn_run(const struct hn_plan *plan, hn_worker_fn fn, void *arg,
           struct hn_result *res);

/* The q-quantile (nearest rank) of sorted samples, in microseconds. */
double hn_quantile_us(const struct hn_samples *s, double q);

/* ---- output: "LABEL MODE: P procs, ..." or {"mode":...,...} ------------ */

void hn_print_json_string(FILE *fp, const char *s);
/* Begin the line or object with mode, label and procs. */
void hn_print_head(bool json, const char *mode, const char *label, int procs);
/* p50/p99/p99.9/max of the sorted samples. */
void hn_print_latency(bool json, const struct hn_samples *s);
/* Client CPU and (when measured) server CPU, then end the line. */
void hn_print_cpu_and_end(bool json, const struct hn_result *res);

#endif
