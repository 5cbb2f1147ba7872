/*
 * harness.c - forked workers on one schedule, samples, CPU, percentiles,
 * output.  See harness.h.
 *
 * A run forks P workers.  Each connects (its own connection), says ready
 * on a pipe and waits for the schedule on another; the parent sends it
 * when all are ready, 20 ms ahead, and each worker spins to the start
 * instant.  A worker keeps its latencies in its own array and writes its
 * report and the array to its own pipe at the end; the parent merges and
 * sorts.  Percentiles are nearest-rank.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

double
hn_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t
hn_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double
hn_proc_cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double
hn_pid_cpu_s(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long utime, stime;
    FILE *fp;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    if ((fp = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    /* Fields after the command name, which may hold spaces: state is the
     * 3rd field, utime the 14th and stime the 15th. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu "
               "%llu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

void
hn_sleep_s(double s)
{
    if (s > 0)
        nanosleep(&(struct timespec){ (time_t)s,
                  (long)((s - floor(s)) * 1e9) }, NULL);
}

void
hn_sleep_until(double t_s)
{
    hn_sleep_s(t_s - hn_now_s());
}

void
hn_die(const char *prog, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

double
hn_parse_num(const char *prog, const char *opt, const char *s, double lo,
             double hi)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo ||
        v > hi) {
        fprintf(stderr, "%s: %s: '%s' is not a number in [%g, %g]\n", prog,
                opt, s, lo, hi);
        exit(2);
    }
    return v;
}

void
hn_samples_add(struct hn_samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        uint64_t *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL) {
            fprintf(stderr, "out of memory for %zu samples\n", cap);
            _exit(3);
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = ns;
}

static void
write_all(int fd, const void *p, size_t len)
{
    const char *c = p;

    while (len > 0) {
        ssize_t n = write(fd, c, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(3);
        c += n;
        len -= (size_t)n;
    }
}

static int
read_all(int fd, void *p, size_t len)
{
    char *c = p;

    while (len > 0) {
        ssize_t n = read(fd, c, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

bool
hn_ready(struct hn_worker *w)
{
    write_all(w->ready_fd, "r", 1);
    close(w->ready_fd);
    if (read_all(w->go_fd, &w->sc, sizeof(w->sc)) < 0)
        _exit(3);
    close(w->go_fd);
    if (w->r.errors)
        return false;
    /* Spin to the start line: everyone leaves within microseconds. */
    while (hn_now_s() < w->sc.go_s)
        ;
    return true;
}

bool
hn_measure(struct hn_worker *w, double start_s)
{
    if (start_s < w->sc.measure_s)
        return false;
    if (!w->measuring) {
        w->measuring = true;
        w->r.cpu_s = -hn_proc_cpu_s();
    }
    return true;
}

void
hn_ok(struct hn_worker *w, uint64_t t0_ns, uint64_t t1_ns)
{
    if (w->r.ok++ == 0)
        w->r.first_s = (double)t0_ns / 1e9;
    w->r.last_s = (double)t1_ns / 1e9;
    hn_samples_add(&w->s, t1_ns - t0_ns);
}

void
hn_fail(struct hn_worker *w, int code, const char *fmt, ...)
{
    va_list ap;

    w->r.errors++;
    w->r.err_code = code;
    va_start(ap, fmt);
    vsnprintf(w->r.err_msg, sizeof(w->r.err_msg), fmt, ap);
    va_end(ap);
}

static void __attribute__((noreturn))
worker_main(int index, int ready_fd, int go_fd, int out_fd, hn_worker_fn fn,
            void *arg)
{
    struct hn_worker w;

    memset(&w, 0, sizeof(w));
    w.index = index;
    w.ready_fd = ready_fd;
    w.go_fd = go_fd;
    fn(&w, arg);
    if (w.measuring)
        w.r.cpu_s += hn_proc_cpu_s();
    w.r.n_lat = w.s.n;
    write_all(out_fd, &w.r, sizeof(w.r));
    if (w.s.n > 0)
        write_all(out_fd, w.s.v, w.s.n * sizeof(w.s.v[0]));
    _exit(w.r.errors ? 1 : 0);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Add worker k's report and samples, read from fd, to res. */
static int
merge_one(int k, int fd, struct hn_result *res)
{
    struct hn_report r;

    if (read_all(fd, &r, sizeof(r)) < 0) {
        fprintf(stderr, "worker %d sent no report\n", k);
        return -1;
    }
    size_t need = res->lat.n + r.n_lat;
    if (need > res->lat.cap) {
        uint64_t *v = realloc(res->lat.v, need * sizeof(*v));
        if (v == NULL) {
            fprintf(stderr, "out of memory merging %zu samples\n", need);
            exit(1);
        }
        res->lat.v = v;
        res->lat.cap = need;
    }
    if (r.n_lat > 0 && read_all(fd, res->lat.v + res->lat.n,
                                r.n_lat * sizeof(uint64_t)) < 0) {
        fprintf(stderr, "worker %d: short sample stream\n", k);
        return -1;
    }
    res->lat.n = need;
    res->sum.ok += r.ok;
    res->sum.denied += r.denied;
    res->sum.errors += r.errors;
    res->sum.cpu_s += r.cpu_s;
    if (r.ok > 0 && (res->sum.first_s == 0 || r.first_s < res->sum.first_s))
        res->sum.first_s = r.first_s;
    if (r.last_s > res->sum.last_s)
        res->sum.last_s = r.last_s;
    res->ok_of[k] = r.ok;
    if (r.ok < res->min_ok)
        res->min_ok = r.ok;
    if (r.ok > res->max_ok)
        res->max_ok = r.ok;
    if (r.errors) {
        fprintf(stderr, "worker %d: %s\n", k, r.err_msg);
        return -1;
    }
    return 0;
}

int
hn_run(const struct hn_plan *plan, hn_worker_fn fn, void *arg,
       struct hn_result *res)
{
    int ready[2], go[2], out[HN_MAX_PROCS];
    pid_t pids[HN_MAX_PROCS];
    struct hn_schedule sc;
    char c;
    int failed = 0;

    memset(res, 0, sizeof(*res));
    res->min_ok = UINT64_MAX;
    res->server_cpu_s = -1;
    if (plan->procs < 1 || plan->procs > HN_MAX_PROCS)
        return -1;
    if (pipe(ready) < 0 || pipe(go) < 0) {
        perror("pipe");
        exit(1);
    }
    fflush(NULL);
    for (int k = 0; k < plan->procs; k++) {
        int fds[2];
        if (pipe(fds) < 0 || (pids[k] = fork()) < 0) {
            perror("pipe/fork");
            exit(1);
        }
        if (pids[k] == 0) {
            close(ready[0]);
            close(go[1]);
            close(fds[0]);
            for (int j = 0; j < k; j++)
                close(out[j]);
            worker_main(k, ready[1], go[0], fds[1], fn, arg);
        }
        close(fds[1]);
        out[k] = fds[0];
    }
    close(ready[1]);
    close(go[0]);
    for (int k = 0; k < plan->procs; k++)
        if (read_all(ready[0], &c, 1) < 0) {
            fprintf(stderr, "a worker died before it was ready\n");
            exit(1);
        }
    close(ready[0]);
    /* 20 ms from now: every worker has read the schedule by then. */
    sc.go_s = hn_now_s() + 0.02;
    sc.measure_s = sc.go_s + plan->warmup_s;
    sc.end_s = sc.measure_s + plan->seconds;
    res->go_s = sc.go_s;
    res->window_s = plan->seconds;
    for (int k = 0; k < plan->procs; k++)
        write_all(go[1], &sc, sizeof(sc));
    close(go[1]);
    if (plan->server_pid > 0) {
        if (!plan->cpu_whole_run)
            hn_sleep_until(sc.measure_s);
        res->server_cpu_s = -hn_pid_cpu_s(plan->server_pid);
        if (!plan->cpu_whole_run) {
            hn_sleep_until(sc.end_s);
            res->server_cpu_s += hn_pid_cpu_s(plan->server_pid);
        }
    }
    for (int k = 0; k < plan->procs; k++) {
        if (merge_one(k, out[k], res) < 0)
            failed = 1;
        close(out[k]);
    }
    if (plan->server_pid > 0 && plan->cpu_whole_run)
        res->server_cpu_s += hn_pid_cpu_s(plan->server_pid);
    for (int k = 0; k < plan->procs; k++) {
        int status;
        if (waitpid(pids[k], &status, 0) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            failed = 1;
    }
    if (res->min_ok == UINT64_MAX)
        res->min_ok = 0;
    qsort(res->lat.v, res->lat.n, sizeof(uint64_t), cmp_u64);
    return failed ? -1 : 0;
}

double
hn_quantile_us(const struct hn_samples *s, double q)
{
    if (s->n == 0)
        return 0;
    size_t k = (size_t)ceil(q * (double)s->n);
    if (k == 0)
        k = 1;
    if (k > s->n)
        k = s->n;
    return (double)s->v[k - 1] / 1e3;
}

void
hn_print_json_string(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(fp, "\\%c", c);
        else if (c < 0x20)
            fprintf(fp, "\\u%04x", c);
        else
            fputc(c, fp);
    }
    fputc('"', fp);
}

void
hn_print_head(bool json, const char *mode, const char *label, int procs)
{
    if (json) {
        printf("{\"mode\":");
        hn_print_json_string(stdout, mode);
        printf(",\"label\":");
        hn_print_json_string(stdout, label ? label : "");
        printf(",\"procs\":%d", procs);
    } else {
        printf("%s%s%s: %d proc%s", label ? label : "", label ? " " : "",
               mode, procs, procs == 1 ? "" : "s");
    }
}

void
hn_print_latency(bool json, const struct hn_samples *s)
{
    if (json)
        printf(",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
               "\"max_us\":%.1f", hn_quantile_us(s, 0.5),
               hn_quantile_us(s, 0.99), hn_quantile_us(s, 0.999),
               hn_quantile_us(s, 1));
    else
        printf(", latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f "
               "us", hn_quantile_us(s, 0.5), hn_quantile_us(s, 0.99),
               hn_quantile_us(s, 0.999), hn_quantile_us(s, 1));
}

/*
 * CPU used in the measured window by the workers and (when measured) by
 * the server, as a percentage of one core and per operation.  The JSON
 * keys say "daemon" for any server (llmguardd, redis-server, the echo
 * server), so one script reads every program's output.
 */
void
hn_print_cpu_and_end(bool json, const struct hn_result *res)
{
    double ops = res->sum.ok > 0 ? (double)res->sum.ok : 1;
    double win = res->window_s > 0 ? res->window_s : 1;
    bool server = res->server_cpu_s >= 0;

    if (json) {
        printf(",\"clients_cpu_pct\":%.1f,\"clients_cpu_us_per_op\":%.2f",
               100 * res->sum.cpu_s / win, 1e6 * res->sum.cpu_s / ops);
        if (server)
            printf(",\"daemon_cpu_pct\":%.1f,\"daemon_cpu_us_per_op\":%.2f",
                   100 * res->server_cpu_s / win,
                   1e6 * res->server_cpu_s / ops);
        printf("}\n");
        return;
    }
    printf("; CPU: clients %.0f%% (%.1f us/op)", 100 * res->sum.cpu_s / win,
           1e6 * res->sum.cpu_s / ops);
    if (server)
        printf(", daemon %.0f%% (%.1f us/op)", 100 * res->server_cpu_s / win,
               1e6 * res->server_cpu_s / ops);
    printf("\n");
}
