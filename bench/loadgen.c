/*
 * loadgen.c - load generator for llmguardd, through libllmguard.
 *
 *   loadgen MODE [OPTIONS]      (loadgen --help for the list)
 *
 * It starts no daemon: it talks to the one on --socket.  A run forks
 * --procs worker processes, each with its own handle (one connection),
 * lines them up on a barrier (every worker has connected and answered a
 * ping), then lets them go at one instant of CLOCK_MONOTONIC.  A worker
 * records the latency of each call in its own array and sends the array to
 * the parent through a pipe when it is done; the parent merges and sorts.
 * Latencies are whole calls as the application sees them: encode, send,
 * the daemon's work, the reply, decode.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmguard.h"

#define MAX_PROCS 256
#define ID_MAX 256

enum mode { M_THROUGHPUT, M_ACCURACY, M_QUOTA, M_FILL, M_PING };

/* How the quota mode picks workflow ids. */
enum ids { IDS_SHARED, IDS_PROC, IDS_CALL };

static const struct mode_def {
    const char *name;
    enum mode mode;
    const char *help;
} modes[] = {
    { "throughput", M_THROUGHPUT,
      "sequential acquires: permits/s, latency p50/p99/p99.9" },
    { "accuracy", M_ACCURACY,
      "race for a limited bucket: granted vs burst + rate x elapsed" },
    { "quota", M_QUOTA,
      "sequential quota check-and-reserves: reservations/s, p50/p99" },
    { "fill", M_FILL,
      "reserve N distinct workflow ids once each (daemon memory per id)" },
    { "ping", M_PING,
      "wait until the daemon answers (up to --seconds), for scripts" },
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

static const struct ids_def {
    const char *name;
    enum ids ids;
} ids_words[] = {
    { "shared", IDS_SHARED },
    { "per-proc", IDS_PROC },
    { "per-call", IDS_CALL },
};
#define NIDS (sizeof(ids_words) / sizeof(ids_words[0]))

struct opts {
    enum mode mode;
    const char *mode_name;
    const char *socket;         /* NULL: $LLMGUARD_SOCKET, else the default */
    const char *provider;
    const char *label;          /* echoed in the output, for scripts */
    const char *prefix;         /* workflow id prefix (quota, fill) */
    const char *tenant;         /* optional tenant id (quota, fill) */
    enum ids ids;
    int procs;
    double seconds;
    double warmup_s;
    double timeout_s;           /* acquire timeout; < 0: mode's default */
    uint32_t tokens;
    long count;                 /* fill: number of ids */
    pid_t daemon_pid;           /* read its CPU time (and VmRSS); 0: don't */
    double settle_s;            /* fill: pause before the "after" reading */
    bool json;
};

/* What a worker sends back, followed by n_lat uint64 latencies in ns. */
struct report {
    uint64_t ok;                /* grants, reservations */
    uint64_t denied;            /* ETIMEDOUT (acquire), EQUOTA (quota) */
    uint64_t errors;            /* anything else; the worker stops */
    uint64_t n_lat;
    double first_s, last_s;     /* first call start, last grant end */
    double cpu_s;               /* the worker's CPU time while measured */
    int err_code;
    char err_msg[200];
};

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the calling process, in seconds. */
static double
proc_cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
    va_list ap;

    fputs("loadgen: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void
usage(FILE *fp)
{
    fprintf(fp,
"usage: loadgen MODE [OPTIONS]\n"
"\n"
"Drive a running llmguardd through libllmguard and measure it.  P worker\n"
"processes (one connection each) start together; each call is timed with\n"
"CLOCK_MONOTONIC; the parent merges the samples and prints one line.\n"
"\n"
"Modes:\n");
    for (size_t i = 0; i < NMODES; i++)
        fprintf(fp, "  %-11s %s\n", modes[i].name, modes[i].help);
    fprintf(fp,
"\n"
"Options:\n"
"  -s, --socket PATH     daemon socket (default: $LLMGUARD_SOCKET, else the\n"
"                        per-user default)\n"
"  -p, --provider NAME   provider to acquire from (default: bench)\n"
"  -P, --procs N         worker processes (default: 1)\n"
"  -d, --seconds D       measured duration (default: 5); ping: max wait\n"
"  -w, --warmup W        seconds of calls before measuring, not counted\n"
"                        (default: 0.5; accuracy ignores it)\n"
"  -t, --timeout S       acquire timeout in seconds; throughput default 0\n"
"                        (try once), accuracy default: the time left in the\n"
"                        run, so workers queue in the daemon\n"
"  -n, --tokens N        tokens per acquire or reservation (default: 1)\n"
"      --ids WORD        quota: workflow ids shared (one id for all),\n"
"                        per-proc (default) or per-call (a new id per call)\n"
"      --prefix STR      workflow id prefix (default: bench)\n"
"      --tenant ID       also reserve against this tenant (quota, fill)\n"
"  -N, --count N         fill: number of distinct workflow ids\n"
"                        (default: 1000000)\n"
"      --daemon-pid PID  also report the daemon's CPU time (from\n"
"                        /proc/PID/stat) over the measured window; fill:\n"
"                        its VmRSS/VmHWM before and after, bytes per id\n"
"      --settle S        fill: seconds to wait before the after reading\n"
"                        (default: 1, lets a pending flush finish)\n"
"  -l, --label STR       a name echoed in the output\n"
"  -j, --json            print one JSON object instead of the text line\n"
"  -h, --help            this text\n"
"\n"
"Output (text; --json has the same fields):\n"
"  throughput  permits/s, p50/p99/p99.9 latency in microseconds, denied\n"
"  accuracy    granted, bound = burst + rate x elapsed (burst and rate read\n"
"              from the daemon), granted/bound; elapsed runs from the start\n"
"              to the last grant\n"
"  quota       reservations/s, p50/p99/p99.9 in microseconds\n"
"  fill        ids/s; with --daemon-pid, RSS before/after and bytes per id\n"
"  and in every mode the CPU of the workers (and with --daemon-pid of the\n"
"  daemon) in the measured window: %% of one core and microseconds per op\n"
"\n"
"Exit: 0 ok; 1 a call failed (other than a timeout or a quota refusal),\n"
"the daemon did not answer, or (accuracy) granted exceeded the bound;\n"
"2 usage.\n");
}

static double
parse_num(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo ||
        v > hi) {
        fprintf(stderr, "loadgen: %s: '%s' is not a number in [%g, %g]\n",
                opt, s, lo, hi);
        exit(2);
    }
    return v;
}

static void
parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "provider", required_argument, NULL, 'p' },
        { "procs", required_argument, NULL, 'P' },
        { "seconds", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'w' },
        { "timeout", required_argument, NULL, 't' },
        { "tokens", required_argument, NULL, 'n' },
        { "ids", required_argument, NULL, 'I' },
        { "prefix", required_argument, NULL, 'X' },
        { "tenant", required_argument, NULL, 'T' },
        { "count", required_argument, NULL, 'N' },
        { "daemon-pid", required_argument, NULL, 'D' },
        { "settle", required_argument, NULL, 'S' },
        { "label", required_argument, NULL, 'l' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    size_t i;

    memset(o, 0, sizeof(*o));
    o->provider = "bench";
    o->prefix = "bench";
    o->ids = IDS_PROC;
    o->procs = 1;
    o->seconds = 5;
    o->warmup_s = 0.5;
    o->timeout_s = -1;
    o->tokens = 1;
    o->count = 1000000;
    o->settle_s = 1;
    while ((c = getopt_long(argc, argv, "s:p:P:d:w:t:n:N:l:jh", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 's': o->socket = optarg; break;
        case 'p': o->provider = optarg; break;
        case 'P': o->procs = (int)parse_num("--procs", optarg, 1, MAX_PROCS);
            break;
        case 'd': o->seconds = parse_num("--seconds", optarg, 0.01, 86400);
            break;
        case 'w': o->warmup_s = parse_num("--warmup", optarg, 0, 3600); break;
        case 't': o->timeout_s = parse_num("--timeout", optarg, 0, 86400);
            break;
        case 'n': o->tokens = (uint32_t)parse_num("--tokens", optarg, 1,
                                                  UINT32_MAX);
            break;
        case 'N': o->count = (long)parse_num("--count", optarg, 1, 1e9);
            break;
        case 'D': o->daemon_pid = (pid_t)parse_num("--daemon-pid", optarg, 1,
                                                   4194304);
            break;
        case 'S': o->settle_s = parse_num("--settle", optarg, 0, 600); break;
        case 'X': o->prefix = optarg; break;
        case 'T': o->tenant = optarg; break;
        case 'l': o->label = optarg; break;
        case 'j': o->json = true; break;
        case 'I':
            for (i = 0; i < NIDS; i++)
                if (strcmp(optarg, ids_words[i].name) == 0)
                    break;
            if (i == NIDS) {
                fprintf(stderr, "loadgen: --ids: '%s' is not one of shared, "
                        "per-proc, per-call\n", optarg);
                exit(2);
            }
            o->ids = ids_words[i].ids;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "loadgen: %s (loadgen --help)\n", optind >= argc ?
                "a mode is required" : "exactly one mode, please");
        exit(2);
    }
    for (i = 0; i < NMODES; i++)
        if (strcmp(argv[optind], modes[i].name) == 0)
            break;
    if (i == NMODES) {
        fprintf(stderr, "loadgen: unknown mode '%s'; one of:", argv[optind]);
        for (i = 0; i < NMODES; i++)
            fprintf(stderr, " %s", modes[i].name);
        fputc('\n', stderr);
        exit(2);
    }
    o->mode = modes[i].mode;
    o->mode_name = modes[i].name;
    if (strlen(o->prefix) > ID_MAX - 32)
        die("--prefix is too long");
}

/* ---- workers ----------------------------------------------------------- */

/* A growable array of latencies, in nanoseconds. */
struct samples {
    uint64_t *v;
    size_t n, cap;
};

static void
samples_add(struct samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        uint64_t *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL)
            die("out of memory for %zu samples", cap);
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = ns;
}

/* The time line every worker shares (CLOCK_MONOTONIC is system-wide). */
struct schedule {
    double go_s;                /* all workers start */
    double measure_s;           /* warm-up over: samples count from here */
    double end_s;               /* no call starts after this */
};

static void
fail_call(struct report *r, llmguard_t *g, int rc)
{
    r->errors++;
    r->err_code = rc;
    snprintf(r->err_msg, sizeof(r->err_msg), "%s: %s", llmguard_strerror(rc),
             llmguard_last_error(g));
}

/* Sequential acquires until end_s; latencies of calls after measure_s. */
static void
run_acquire(const struct opts *o, llmguard_t *g, const struct schedule *sc,
            struct report *r, struct samples *s)
{
    double timeout_s = o->timeout_s;
    bool measuring = false;

    for (;;) {
        uint64_t t0 = now_ns();
        double start = (double)t0 / 1e9;
        if (start >= sc->end_s)
            break;
        if (!measuring && (o->mode == M_ACCURACY || start >= sc->measure_s)) {
            measuring = true;
            r->cpu_s = -proc_cpu_s();
        }
        if (o->mode == M_ACCURACY && o->timeout_s < 0)
            timeout_s = sc->end_s - start;
        else if (o->timeout_s < 0)
            timeout_s = 0;
        int rc = llmguard_acquire(g, o->provider, o->tokens, timeout_s, NULL);
        uint64_t t1 = now_ns();
        bool counted = o->mode == M_ACCURACY || start >= sc->measure_s;
        if (rc == LLMGUARD_ETIMEDOUT) {
            r->denied += counted;
            continue;
        }
        if (rc != 0) {
            fail_call(r, g, rc);
            return;
        }
        if (!counted)
            continue;
        if (r->ok++ == 0)
            r->first_s = start;
        r->last_s = (double)t1 / 1e9;
        samples_add(s, t1 - t0);
    }
}

/* The workflow id of call k of worker w. */
static const char *
workflow_id(const struct opts *o, int w, uint64_t k, char *buf, size_t len)
{
    switch (o->ids) {
    case IDS_SHARED:
        snprintf(buf, len, "%s-shared", o->prefix);
        break;
    case IDS_PROC:
        snprintf(buf, len, "%s-p%d", o->prefix, w);
        break;
    case IDS_CALL:
        snprintf(buf, len, "%s-p%d-%" PRIu64, o->prefix, w, k);
        break;
    }
    return buf;
}

/* Sequential check-and-reserves until end_s. */
static void
run_quota(const struct opts *o, int w, llmguard_t *g,
          const struct schedule *sc, struct report *r, struct samples *s)
{
    struct llmguard_quota_decision d;
    char id[ID_MAX + 1];

    bool measuring = false;

    for (uint64_t k = 0;; k++) {
        uint64_t t0 = now_ns();
        double start = (double)t0 / 1e9;
        if (start >= sc->end_s)
            break;
        if (!measuring && start >= sc->measure_s) {
            measuring = true;
            r->cpu_s = -proc_cpu_s();
        }
        int rc = llmguard_quota_check_and_reserve(g,
                     workflow_id(o, w, k, id, sizeof(id)), o->tenant,
                     o->tokens, &d);
        uint64_t t1 = now_ns();
        if (start < sc->measure_s)
            continue;
        if (rc == LLMGUARD_EQUOTA) {
            r->denied++;
            continue;
        }
        if (rc != 0) {
            fail_call(r, g, rc);
            return;
        }
        if (r->ok++ == 0)
            r->first_s = start;
        r->last_s = (double)t1 / 1e9;
        samples_add(s, t1 - t0);
    }
}

/* Ids w, w + P, w + 2P ... below count, one reservation each. */
static void
run_fill(const struct opts *o, int w, llmguard_t *g, struct report *r,
         struct samples *s)
{
    struct llmguard_quota_decision d;
    char id[ID_MAX + 1];

    r->first_s = now_s();
    r->cpu_s = -proc_cpu_s();
    for (long i = w; i < o->count; i += o->procs) {
        snprintf(id, sizeof(id), "%s-%ld", o->prefix, i);
        uint64_t t0 = now_ns();
        int rc = llmguard_quota_check_and_reserve(g, id, o->tenant, o->tokens,
                                                  &d);
        uint64_t t1 = now_ns();
        if (rc == LLMGUARD_EQUOTA) {
            r->denied++;
            continue;
        }
        if (rc != 0) {
            fail_call(r, g, rc);
            return;
        }
        r->ok++;
        r->last_s = (double)t1 / 1e9;
        samples_add(s, t1 - t0);
    }
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

/*
 * Worker w: connect, say ready on ready_fd, read the schedule from go_fd,
 * run, write the report and the samples to out_fd, exit.
 */
static void __attribute__((noreturn))
worker(const struct opts *o, int w, int ready_fd, int go_fd, int out_fd)
{
    struct report r;
    struct samples s = { NULL, 0, 0 };
    struct schedule sc;
    llmguard_t *g = llmguard_open(o->socket);
    int rc;

    memset(&r, 0, sizeof(r));
    if (g == NULL) {
        r.errors = 1;
        snprintf(r.err_msg, sizeof(r.err_msg), "llmguard_open failed");
    } else if ((rc = llmguard_ping(g)) != 0) {
        fail_call(&r, g, rc);
    }
    write_all(ready_fd, "r", 1);
    if (read_all(go_fd, &sc, sizeof(sc)) < 0)
        _exit(3);
    if (r.errors == 0) {
        /* Spin to the start line: everyone leaves within microseconds. */
        while (now_s() < sc.go_s)
            ;
        switch (o->mode) {
        case M_THROUGHPUT:
        case M_ACCURACY:
            run_acquire(o, g, &sc, &r, &s);
            break;
        case M_QUOTA:
            run_quota(o, w, g, &sc, &r, &s);
            break;
        case M_FILL:
            run_fill(o, w, g, &r, &s);
            break;
        case M_PING:
            break;
        }
        if (r.cpu_s < 0)
            r.cpu_s += proc_cpu_s();
    }
    r.n_lat = s.n;
    write_all(out_fd, &r, sizeof(r));
    if (s.n > 0)
        write_all(out_fd, s.v, s.n * sizeof(s.v[0]));
    llmguard_close(g);
    _exit(r.errors ? 1 : 0);
}

/* ---- the parent -------------------------------------------------------- */

struct result {
    struct report sum;          /* ok, denied, errors summed; first/last */
    struct samples lat;         /* all workers' latencies, sorted */
    uint64_t min_ok, max_ok;    /* per worker, for fairness */
    double go_s;
    double window_s;            /* the measured window */
    double daemon_cpu_s;        /* -1: not measured (no --daemon-pid) */
};

/* CPU time (user + system, all threads) of pid in seconds; -1 on error. */
static double
daemon_cpu_s(pid_t pid)
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

static void
sleep_until(double t_s)
{
    double left = t_s - now_s();

    if (left > 0)
        nanosleep(&(struct timespec){ (time_t)left,
                  (long)((left - floor(left)) * 1e9) }, NULL);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of the sorted samples, in microseconds. */
static double
quantile_us(const struct samples *s, double q)
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

/* Fork the workers, run them on one schedule, merge what they send. */
static int
run_workers(const struct opts *o, struct result *res)
{
    int ready[2], go[2], out[MAX_PROCS];
    pid_t pids[MAX_PROCS];
    struct schedule sc;
    char c;
    int failed = 0;

    memset(res, 0, sizeof(*res));
    res->min_ok = UINT64_MAX;
    if (pipe(ready) < 0 || pipe(go) < 0)
        die("pipe: %s", strerror(errno));
    fflush(NULL);
    for (int w = 0; w < o->procs; w++) {
        int fds[2];
        if (pipe(fds) < 0)
            die("pipe: %s", strerror(errno));
        pids[w] = fork();
        if (pids[w] < 0)
            die("fork: %s", strerror(errno));
        if (pids[w] == 0) {
            close(ready[0]);
            close(go[1]);
            close(fds[0]);
            for (int k = 0; k < w; k++)
                close(out[k]);
            worker(o, w, ready[1], go[0], fds[1]);
        }
        close(fds[1]);
        out[w] = fds[0];
    }
    close(ready[1]);
    close(go[0]);
    for (int w = 0; w < o->procs; w++)
        if (read_all(ready[0], &c, 1) < 0)
            die("a worker died before it was ready");
    close(ready[0]);
    /* 20 ms from now: every worker has read the schedule by then. */
    sc.go_s = now_s() + 0.02;
    sc.measure_s = sc.go_s + (o->mode == M_ACCURACY ? 0 : o->warmup_s);
    sc.end_s = sc.measure_s + o->seconds;
    res->go_s = sc.go_s;
    res->window_s = o->seconds;
    res->daemon_cpu_s = -1;
    if (o->daemon_pid > 0)
        res->daemon_cpu_s = -daemon_cpu_s(o->daemon_pid);
    for (int w = 0; w < o->procs; w++)
        write_all(go[1], &sc, sizeof(sc));
    close(go[1]);
    if (o->daemon_pid > 0 && o->mode != M_FILL) {
        sleep_until(sc.measure_s);
        res->daemon_cpu_s = -daemon_cpu_s(o->daemon_pid);
        sleep_until(sc.end_s);
        res->daemon_cpu_s += daemon_cpu_s(o->daemon_pid);
    }

    for (int w = 0; w < o->procs; w++) {
        struct report r;
        if (read_all(out[w], &r, sizeof(r)) < 0) {
            fprintf(stderr, "loadgen: worker %d sent no report\n", w);
            failed = 1;
            close(out[w]);
            continue;
        }
        size_t need = res->lat.n + r.n_lat;
        if (need > res->lat.cap) {
            uint64_t *v = realloc(res->lat.v, need * sizeof(*v));
            if (v == NULL)
                die("out of memory merging %zu samples", need);
            res->lat.v = v;
            res->lat.cap = need;
        }
        if (r.n_lat > 0 && read_all(out[w], res->lat.v + res->lat.n,
                                    r.n_lat * sizeof(uint64_t)) < 0)
            die("worker %d: short sample stream", w);
        res->lat.n = need;
        close(out[w]);
        if (r.errors) {
            fprintf(stderr, "loadgen: worker %d: %s\n", w, r.err_msg);
            failed = 1;
        }
        res->sum.ok += r.ok;
        res->sum.denied += r.denied;
        res->sum.errors += r.errors;
        res->sum.cpu_s += r.cpu_s;
        if (r.ok > 0 && (res->sum.first_s == 0 || r.first_s <
                         res->sum.first_s))
            res->sum.first_s = r.first_s;
        if (r.last_s > res->sum.last_s)
            res->sum.last_s = r.last_s;
        if (r.ok < res->min_ok)
            res->min_ok = r.ok;
        if (r.ok > res->max_ok)
            res->max_ok = r.ok;
    }
    if (o->daemon_pid > 0 && o->mode == M_FILL)
        res->daemon_cpu_s += daemon_cpu_s(o->daemon_pid);
    if (o->mode == M_FILL)
        res->window_s = res->sum.last_s - sc.go_s;
    for (int w = 0; w < o->procs; w++) {
        int status;
        if (waitpid(pids[w], &status, 0) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            failed = 1;
    }
    qsort(res->lat.v, res->lat.n, sizeof(uint64_t), cmp_u64);
    return failed ? -1 : 0;
}

/* s as a JSON string, quoted and escaped. */
static void
print_json_string(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* Start a JSON object or a text line with the fields every mode has. */
static void
print_head(const struct opts *o)
{
    if (o->json) {
        printf("{\"mode\":\"%s\",\"label\":", o->mode_name);
        print_json_string(o->label ? o->label : "");
        printf(",\"procs\":%d", o->procs);
        if (o->mode == M_THROUGHPUT || o->mode == M_ACCURACY) {
            printf(",\"provider\":");
            print_json_string(o->provider);
        }
    } else {
        printf("%s%s%s: %d proc%s", o->label ? o->label : "",
               o->label ? " " : "", o->mode_name, o->procs,
               o->procs == 1 ? "" : "s");
    }
}

static void
print_latency(const struct opts *o, const struct samples *s)
{
    if (o->json)
        printf(",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
               "\"max_us\":%.1f", quantile_us(s, 0.5), quantile_us(s, 0.99),
               quantile_us(s, 0.999), quantile_us(s, 1));
    else
        printf(", latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f "
               "us", quantile_us(s, 0.5), quantile_us(s, 0.99),
               quantile_us(s, 0.999), quantile_us(s, 1));
}

/*
 * CPU used in the measured window by the workers and (with --daemon-pid)
 * by the daemon, as a percentage of one core and per operation; then end
 * the line.  Daemon CPU comes from /proc/PID/stat in clock ticks.
 */
static void
print_cpu_and_end(const struct opts *o, const struct result *res)
{
    double ops = res->sum.ok > 0 ? (double)res->sum.ok : 1;
    double win = res->window_s > 0 ? res->window_s : 1;
    bool daemon = res->daemon_cpu_s >= 0;

    if (o->json) {
        printf(",\"clients_cpu_pct\":%.1f,\"clients_cpu_us_per_op\":%.2f",
               100 * res->sum.cpu_s / win, 1e6 * res->sum.cpu_s / ops);
        if (daemon)
            printf(",\"daemon_cpu_pct\":%.1f,\"daemon_cpu_us_per_op\":%.2f",
                   100 * res->daemon_cpu_s / win,
                   1e6 * res->daemon_cpu_s / ops);
        printf("}\n");
        return;
    }
    printf("; CPU: clients %.0f%% (%.1f us/op)", 100 * res->sum.cpu_s / win,
           1e6 * res->sum.cpu_s / ops);
    if (daemon)
        printf(", daemon %.0f%% (%.1f us/op)", 100 * res->daemon_cpu_s / win,
               1e6 * res->daemon_cpu_s / ops);
    printf("\n");
}

static int
mode_throughput(const struct opts *o)
{
    struct result res;
    int rc = run_workers(o, &res);
    double rate = (double)res.sum.ok / o->seconds;

    print_head(o);
    if (o->json)
        printf(",\"seconds\":%.3f,\"permits\":%" PRIu64 ",\"denied\":%"
               PRIu64 ",\"errors\":%" PRIu64 ",\"permits_per_s\":%.1f"
               ",\"per_proc_min\":%" PRIu64 ",\"per_proc_max\":%" PRIu64,
               o->seconds, res.sum.ok, res.sum.denied, res.sum.errors, rate,
               res.min_ok, res.max_ok);
    else
        printf(", %.1f s: %.0f permits/s (%" PRIu64 " permits, %" PRIu64
               " denied, %" PRIu64 " errors)", o->seconds, rate, res.sum.ok,
               res.sum.denied, res.sum.errors);
    print_latency(o, &res.lat);
    print_cpu_and_end(o, &res);
    return rc < 0 ? 1 : 0;
}

static int
mode_accuracy(const struct opts *o)
{
    struct llmguard_limiter_status st;
    llmguard_t *g = llmguard_open(o->socket);
    struct result res;
    int rc;

    if (g == NULL)
        die("llmguard_open failed");
    if ((rc = llmguard_limiter_status(g, o->provider, &st)) != 0)
        die("limiter_status %s: %s", o->provider, llmguard_last_error(g));
    llmguard_close(g);
    if (st.available_tokens < st.max_tokens - 1e-6)
        fprintf(stderr, "loadgen: note: bucket %s holds %.2f of %.0f tokens "
                "at the start; the bound still assumes a full one\n",
                o->provider, st.available_tokens, st.max_tokens);
    rc = run_workers(o, &res);
    /* Tokens, not calls: each grant took o->tokens. */
    double granted = (double)res.sum.ok * o->tokens;
    double elapsed = (res.sum.last_s > 0 ? res.sum.last_s : res.go_s) -
                     res.go_s;
    double bound = st.max_tokens + st.rate_per_sec * elapsed;
    double ratio = bound > 0 ? granted / bound : 0;
    bool exceeded = granted > bound + 1e-9;

    /* A grant's latency is mostly time spent queued in the daemon. */
    print_head(o);
    if (o->json)
        printf(",\"rate_per_sec\":%g,\"burst\":%g,\"seconds\":%.3f,"
               "\"elapsed_s\":%.6f,\"granted\":%.0f,\"bound\":%.1f,"
               "\"ratio\":%.5f,\"timeouts\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"per_proc_min\":%" PRIu64 ",\"per_proc_max\":%" PRIu64
               ",\"wait_p50_us\":%.1f,\"wait_p99_us\":%.1f", st.rate_per_sec,
               st.max_tokens, o->seconds, elapsed, granted, bound, ratio,
               res.sum.denied, res.sum.errors, res.min_ok, res.max_ok,
               quantile_us(&res.lat, 0.5), quantile_us(&res.lat, 0.99));
    else
        printf(", rate %g burst %g, %.3f s: granted %.0f, bound (burst + "
               "rate x elapsed) %.1f, granted/bound %.4f%s; per proc %"
               PRIu64 "..%" PRIu64 ", wait p50 %.0f us, p99 %.0f us",
               st.rate_per_sec, st.max_tokens, elapsed, granted, bound, ratio,
               exceeded ? " EXCEEDS THE BOUND" : "", res.min_ok, res.max_ok,
               quantile_us(&res.lat, 0.5), quantile_us(&res.lat, 0.99));
    print_cpu_and_end(o, &res);
    if (exceeded)
        return 1;
    return rc < 0 ? 1 : 0;
}

static int
mode_quota(const struct opts *o)
{
    struct result res;
    int rc = run_workers(o, &res);
    double rate = (double)res.sum.ok / o->seconds;

    print_head(o);
    if (o->json)
        printf(",\"ids\":\"%s\",\"seconds\":%.3f,\"reservations\":%" PRIu64
               ",\"refused\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"reservations_per_s\":%.1f", ids_words[o->ids].name,
               o->seconds, res.sum.ok, res.sum.denied, res.sum.errors, rate);
    else
        printf(" (ids %s), %.1f s: %.0f reservations/s (%" PRIu64 " ok, %"
               PRIu64 " refused, %" PRIu64 " errors)", ids_words[o->ids].name,
               o->seconds, rate, res.sum.ok, res.sum.denied, res.sum.errors);
    print_latency(o, &res.lat);
    print_cpu_and_end(o, &res);
    return rc < 0 ? 1 : 0;
}

/* VmRSS and VmHWM of pid, in kB; -1 when unreadable. */
static int
read_vm(pid_t pid, long *rss_kb, long *hwm_kb)
{
    char path[64], line[256];
    FILE *fp;

    *rss_kb = *hwm_kb = -1;
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    if ((fp = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), fp) != NULL) {
        sscanf(line, "VmRSS: %ld", rss_kb);
        sscanf(line, "VmHWM: %ld", hwm_kb);
    }
    fclose(fp);
    return *rss_kb < 0 ? -1 : 0;
}

static int
mode_fill(const struct opts *o)
{
    long rss0 = -1, hwm0 = -1, rss1 = -1, hwm1 = -1;
    struct result res;
    int rc;

    if (o->daemon_pid > 0 && read_vm(o->daemon_pid, &rss0, &hwm0) < 0)
        die("cannot read /proc/%ld/status", (long)o->daemon_pid);
    rc = run_workers(o, &res);
    double fill_s = res.sum.last_s - res.go_s;
    if (o->daemon_pid > 0) {
        llmguard_t *g = llmguard_open(o->socket);
        if (g != NULL)
            llmguard_ping(g);   /* the daemon has read everything */
        llmguard_close(g);
        sleep_until(now_s() + o->settle_s);
        if (read_vm(o->daemon_pid, &rss1, &hwm1) < 0)
            die("cannot read /proc/%ld/status", (long)o->daemon_pid);
    }
    double per_id = res.sum.ok > 0 ? (double)(rss1 - rss0) * 1024 /
                    (double)res.sum.ok : 0;

    print_head(o);
    if (o->json) {
        printf(",\"ids\":%ld,\"reserved\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"fill_s\":%.3f,\"ids_per_s\":%.1f", o->count, res.sum.ok,
               res.sum.errors, fill_s, fill_s > 0 ? (double)res.sum.ok /
               fill_s : 0);
        if (o->daemon_pid > 0)
            printf(",\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,"
                   "\"hwm_before_kb\":%ld,\"hwm_after_kb\":%ld,"
                   "\"bytes_per_id\":%.1f", rss0, rss1, hwm0, hwm1, per_id);
    } else {
        printf(", %" PRIu64 " of %ld ids reserved in %.1f s (%.0f ids/s)",
               res.sum.ok, o->count, fill_s, fill_s > 0 ?
               (double)res.sum.ok / fill_s : 0);
        if (o->daemon_pid > 0)
            printf("; daemon RSS %.1f -> %.1f MiB (HWM %.1f -> %.1f MiB), "
                   "%.0f bytes per id", rss0 / 1024.0, rss1 / 1024.0,
                   hwm0 / 1024.0, hwm1 / 1024.0, per_id);
    }
    print_latency(o, &res.lat);
    print_cpu_and_end(o, &res);
    return rc < 0 ? 1 : 0;
}

/* Poll with pings until the daemon answers or --seconds pass. */
static int
mode_ping(const struct opts *o)
{
    llmguard_t *g = llmguard_open(o->socket);
    double end = now_s() + o->seconds;
    int rc;

    if (g == NULL)
        die("llmguard_open failed");
    while ((rc = llmguard_ping(g)) != 0 && now_s() < end)
        nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
    if (rc != 0)
        fprintf(stderr, "loadgen: no answer on %s: %s\n",
                llmguard_socket_path(g), llmguard_last_error(g));
    llmguard_close(g);
    return rc == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    struct opts o;

    parse_args(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    switch (o.mode) {
    case M_THROUGHPUT:
        return mode_throughput(&o);
    case M_ACCURACY:
        return mode_accuracy(&o);
    case M_QUOTA:
        return mode_quota(&o);
    case M_FILL:
        return mode_fill(&o);
    case M_PING:
        return mode_ping(&o);
    }
    return 2;
}
