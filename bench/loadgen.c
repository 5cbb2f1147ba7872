/*
 * loadgen.c - load generator for llmguardd, through libllmguard.
 *
 *   loadgen MODE [OPTIONS]      (loadgen --help for the list)
 *
 * It starts no daemon: it talks to the one on --socket (or, given several
 * times, to several: worker w uses socket w mod n).  A run forks
 * --procs worker processes, each with its own handle (one connection),
 * lines them up on a barrier (every worker has connected and answered a
 * ping), then lets them go at one instant of CLOCK_MONOTONIC (harness.c).
 * Latencies are whole calls as the application sees them: encode, send,
 * the daemon's work, the reply, decode.
 *
 * One mode talks to no daemon at all: `local` runs the per-process
 * limiter people use without llmguard (a token bucket in each process's
 * memory), to show what it grants against the bound it was meant to keep.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "llmguard.h"

#define ID_MAX 256
#define MAX_SOCKETS 16
#define PROG "loadgen"

enum mode { M_THROUGHPUT, M_ACCURACY, M_QUOTA, M_FILL, M_PERMIT, M_PIPELINE,
            M_LOCAL, M_PING };

/* How the quota, fill and permit modes pick workflow ids. */
enum ids { IDS_SHARED, IDS_PROC, IDS_CALL, IDS_NONE };

static const struct mode_def {
    const char *name;
    enum mode mode;
    bool daemon;                /* talks to llmguardd */
    const char *help;
} modes[] = {
    { "throughput", M_THROUGHPUT, true,
      "sequential acquires: permits/s, latency p50/p99/p99.9" },
    { "accuracy", M_ACCURACY, true,
      "race for a limited bucket: granted vs burst + rate x elapsed" },
    { "quota", M_QUOTA, true,
      "sequential quota check-and-reserves: reservations/s, p50/p99" },
    { "fill", M_FILL, true,
      "reserve N distinct workflow ids once each (daemon memory per id)" },
    { "permit", M_PERMIT, true,
      "sequential execute_with_failover calls (one permit + one report\n"
      "              each) with a call that succeeds at once: calls/s, p50/p99" },
    { "pipeline", M_PIPELINE, true,
      "the same permit + report pairs through the non-blocking API,\n"
      "              --depth of them in flight on one connection per process" },
    { "local", M_LOCAL, false,
      "no daemon: a token bucket in each process's memory (the usual\n"
      "              per-process limiter), granted vs burst + rate x elapsed" },
    { "ping", M_PING, true,
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
    { "none", IDS_NONE },
};
#define NIDS (sizeof(ids_words) / sizeof(ids_words[0]))

struct opts {
    const struct mode_def *m;
    const char *socket;         /* NULL: $LLMGUARD_SOCKET, else the default */
    const char *sockets[MAX_SOCKETS]; /* every --socket; workers spread */
    int nsockets;
    const char *provider;
    const char *label;          /* echoed in the output, for scripts */
    const char *prefix;         /* workflow id prefix (quota, fill, permit) */
    const char *tenant;         /* optional tenant id (quota, fill, permit) */
    const char *model;          /* permit: a model group or id, or NULL */
    enum ids ids;
    int procs;
    double seconds;
    double warmup_s;
    double timeout_s;           /* acquire timeout; < 0: mode's default */
    double rate_per_sec;        /* local: each process's bucket */
    double burst;
    double lease_s;             /* accuracy: added to elapsed in the bound */
    uint32_t tokens;
    long count;                 /* fill: number of ids */
    int depth;                  /* pipeline: pairs in flight per process */
    pid_t daemon_pid;           /* read its CPU time (and VmRSS); 0: don't */
    double settle_s;            /* fill: pause before the "after" reading */
    const char *until_file;     /* stop early once this file exists */
    bool json;
};

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
"                        per-user default); given up to %d times, worker w\n"
"                        connects to the (w mod n)th (clients spread over\n"
"                        several daemons); the first answers accuracy's\n"
"                        limiter status, fill and ping\n"
"  -p, --provider NAME   provider to acquire from; permit: the preferred one\n"
"                        (default: bench)\n"
"  -P, --procs N         worker processes (default: 1)\n"
"  -d, --seconds D       measured duration (default: 5); ping: max wait\n"
"  -w, --warmup W        seconds of calls before measuring, not counted\n"
"                        (default: 0.5; accuracy and local ignore it)\n"
"  -t, --timeout S       acquire/permit timeout in seconds; default 0 (try\n"
"                        once), accuracy: the time left in the run, so\n"
"                        workers queue in the daemon\n"
"  -n, --tokens N        tokens per acquire, reservation, permit estimate or\n"
"                        local grant (default: 1)\n"
"  -r, --rate R          local: each process's bucket rate per second\n"
"                        (default: 200)\n"
"  -b, --burst B         local: each process's bucket size (default: 10)\n"
"      --lease-ms L      accuracy: the bound is burst + rate x (elapsed + L ms),\n"
"                        that of daemons sharing a bucket through leases of\n"
"                        L ms (default: 0)\n"
"      --ids WORD        workflow ids: shared (one id for all), per-proc\n"
"                        (default), per-call (a new id per call), or none\n"
"                        (permit: no quota reservation at all)\n"
"      --prefix STR      workflow id prefix (default: bench)\n"
"      --tenant ID       also reserve against this tenant (quota, fill,\n"
"                        permit)\n"
"      --model NAME      permit: name this model group or id (routed among\n"
"                        its deployments)\n"
"      --depth N         pipeline: permit+report pairs in flight on each\n"
"                        process's connection (default: 16)\n"
"  -N, --count N         fill: number of distinct workflow ids\n"
"                        (default: 1000000)\n"
"      --daemon-pid PID  also report the daemon's CPU time (from\n"
"                        /proc/PID/stat) over the measured window; fill:\n"
"                        its VmRSS/VmHWM before and after, bytes per id\n"
"      --settle S        fill: seconds to wait before the after reading\n"
"                        (default: 1, lets a pending flush finish)\n"
"      --until-file PATH throughput, quota, permit: stop once PATH exists\n"
"                        (looked at every 10 ms), at the latest after\n"
"                        --seconds; rates are over the time run (to measure\n"
"                        beside another load for as long as it lasts)\n"
"  -l, --label STR       a name echoed in the output\n"
"  -j, --json            print one JSON object instead of the text line\n"
"  -h, --help            this text\n"
"\n"
"Output (text; --json has the same fields):\n"
"  throughput  permits/s, p50/p99/p99.9 latency in microseconds, denied\n"
"  accuracy    granted, bound = burst + rate x (elapsed + --lease-ms) (burst\n"
"              and rate read from the daemon), granted/bound; elapsed runs\n"
"              from the start to the last grant; with several --socket, the\n"
"              grants through each (per_socket)\n"
"  quota       reservations/s, p50/p99/p99.9 in microseconds\n"
"  fill        ids/s; with --daemon-pid, RSS before/after and bytes per id\n"
"  permit      calls/s (each call is 2 round trips: permit and report),\n"
"              p50/p99/p99.9 of the pair, denied (timeout or quota)\n"
"  pipeline    as permit; a pair's latency runs from its permit's submit\n"
"              to its report's callback\n"
"  local       granted, bound, granted/bound as accuracy; expect about P\n"
"  and in every mode the CPU of the workers (and with --daemon-pid of the\n"
"  daemon) in the measured window: %% of one core and microseconds per op\n"
"\n"
"Exit: 0 ok; 1 a call failed (other than a timeout or a quota refusal),\n"
"the daemon did not answer, or (accuracy) granted exceeded the bound;\n"
"2 usage.\n", MAX_SOCKETS);
}

static double
num(const char *opt, const char *s, double lo, double hi)
{
    return hn_parse_num(PROG, opt, s, lo, hi);
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
        { "rate", required_argument, NULL, 'r' },
        { "burst", required_argument, NULL, 'b' },
        { "lease-ms", required_argument, NULL, 'L' },
        { "ids", required_argument, NULL, 'I' },
        { "prefix", required_argument, NULL, 'X' },
        { "tenant", required_argument, NULL, 'T' },
        { "model", required_argument, NULL, 'M' },
        { "count", required_argument, NULL, 'N' },
        { "depth", required_argument, NULL, 'Q' },
        { "daemon-pid", required_argument, NULL, 'D' },
        { "settle", required_argument, NULL, 'S' },
        { "until-file", required_argument, NULL, 'U' },
        { "label", required_argument, NULL, 'l' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    bool ids_given = false;
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
    o->rate_per_sec = 200;
    o->burst = 10;
    o->tokens = 1;
    o->count = 1000000;
    o->depth = 16;
    o->settle_s = 1;
    while ((c = getopt_long(argc, argv, "s:p:P:d:w:t:n:r:b:N:l:jh", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 's':
            if (o->nsockets == MAX_SOCKETS)
                hn_die(PROG, "--socket: at most %d", MAX_SOCKETS);
            o->sockets[o->nsockets++] = optarg;
            o->socket = o->sockets[0];
            break;
        case 'L': o->lease_s = num("--lease-ms", optarg, 0, 3.6e6) / 1000;
            break;
        case 'p': o->provider = optarg; break;
        case 'P': o->procs = (int)num("--procs", optarg, 1, HN_MAX_PROCS);
            break;
        case 'd': o->seconds = num("--seconds", optarg, 0.01, 86400); break;
        case 'w': o->warmup_s = num("--warmup", optarg, 0, 3600); break;
        case 't': o->timeout_s = num("--timeout", optarg, 0, 86400); break;
        case 'n': o->tokens = (uint32_t)num("--tokens", optarg, 1,
                                            UINT32_MAX);
            break;
        case 'r': o->rate_per_sec = num("--rate", optarg, 1e-6, 1e12); break;
        case 'b': o->burst = num("--burst", optarg, 1, 1e12); break;
        case 'N': o->count = (long)num("--count", optarg, 1, 1e9); break;
        case 'Q': o->depth = (int)num("--depth", optarg, 1, 4096); break;
        case 'D': o->daemon_pid = (pid_t)num("--daemon-pid", optarg, 1,
                                             4194304);
            break;
        case 'S': o->settle_s = num("--settle", optarg, 0, 600); break;
        case 'U': o->until_file = optarg; break;
        case 'X': o->prefix = optarg; break;
        case 'T': o->tenant = optarg; break;
        case 'M': o->model = optarg; break;
        case 'l': o->label = optarg; break;
        case 'j': o->json = true; break;
        case 'I':
            for (i = 0; i < NIDS; i++)
                if (strcmp(optarg, ids_words[i].name) == 0)
                    break;
            if (i == NIDS) {
                fprintf(stderr, "loadgen: --ids: '%s' is not one of shared, "
                        "per-proc, per-call, none\n", optarg);
                exit(2);
            }
            o->ids = ids_words[i].ids;
            ids_given = true;
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
    o->m = &modes[i];
    if (strlen(o->prefix) > ID_MAX - 32)
        hn_die(PROG, "--prefix is too long");
    if (o->ids == IDS_NONE && o->tenant == NULL &&
        (o->m->mode == M_QUOTA || o->m->mode == M_FILL)) {
        fprintf(stderr, "loadgen: --ids none needs --tenant in mode %s\n",
                o->m->name);
        exit(2);
    }
    if (o->m->mode == M_FILL && ids_given && o->ids != IDS_CALL)
        fprintf(stderr, "loadgen: note: fill always uses a new id per call\n");
}

/* ---- workers ----------------------------------------------------------- */

/* The handle of this worker process (each worker is its own process). */
static llmguard_t *handle;

static void
fail_call(struct hn_worker *w, int rc)
{
    hn_fail(w, rc, "%s: %s", llmguard_strerror(rc), llmguard_last_error(handle));
}

/* Open this worker's handle and ping: the connection is made before the
 * start, so connecting is not measured. */
static void
connect_worker(const struct opts *o, struct hn_worker *w)
{
    int rc;

    handle = llmguard_open(o->nsockets > 1 ?
                           o->sockets[w->index % o->nsockets] : o->socket);
    if (handle == NULL)
        hn_fail(w, LLMGUARD_ENOMEM, "llmguard_open failed");
    else if ((rc = llmguard_ping(handle)) != 0)
        fail_call(w, rc);
}

/* Whether --until-file exists; looked at no more than every 10 ms (each
 * worker is a process of its own). */
static bool
told_to_stop(const struct opts *o, double now_s)
{
    static double next_look_s;

    if (o->until_file == NULL || now_s < next_look_s)
        return false;
    next_look_s = now_s + 0.01;
    return access(o->until_file, F_OK) == 0;
}

/* Sequential acquires until end_s; latencies of calls after measure_s. */
static void
run_acquire(const struct opts *o, struct hn_worker *w)
{
    double timeout_s = o->timeout_s;

    for (;;) {
        uint64_t t0 = hn_now_ns();
        double start = (double)t0 / 1e9;
        if (start >= w->sc.end_s || told_to_stop(o, start))
            break;
        bool counted = hn_measure(w, start);
        if (o->m->mode == M_ACCURACY && o->timeout_s < 0)
            timeout_s = w->sc.end_s - start;
        else if (o->timeout_s < 0)
            timeout_s = 0;
        int rc = llmguard_acquire(handle, o->provider, o->tokens, timeout_s,
                                  NULL);
        uint64_t t1 = hn_now_ns();
        if (rc == LLMGUARD_ETIMEDOUT) {
            w->r.denied += counted;
            continue;
        }
        if (rc != 0) {
            fail_call(w, rc);
            return;
        }
        if (counted)
            hn_ok(w, t0, t1);
    }
}

/* The workflow id of call k of worker w; NULL for --ids none. */
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
    case IDS_NONE:
        return NULL;
    }
    return buf;
}

/* Sequential check-and-reserves until end_s. */
static void
run_quota(const struct opts *o, struct hn_worker *w)
{
    struct llmguard_quota_decision d;
    char id[ID_MAX + 1];

    for (uint64_t k = 0;; k++) {
        uint64_t t0 = hn_now_ns();
        double start = (double)t0 / 1e9;
        if (start >= w->sc.end_s || told_to_stop(o, start))
            break;
        bool counted = hn_measure(w, start);
        int rc = llmguard_quota_check_and_reserve(handle,
                     workflow_id(o, w->index, k, id, sizeof(id)), o->tenant,
                     o->tokens, &d);
        uint64_t t1 = hn_now_ns();
        if (rc == LLMGUARD_EQUOTA) {
            w->r.denied += counted;
            continue;
        }
        if (rc != 0) {
            fail_call(w, rc);
            return;
        }
        if (counted)
            hn_ok(w, t0, t1);
    }
}

/* Ids w, w + P, w + 2P ... below count, one reservation each. */
static void
run_fill(const struct opts *o, struct hn_worker *w)
{
    struct llmguard_quota_decision d;
    char id[ID_MAX + 1];

    hn_measure(w, w->sc.go_s);
    for (long i = w->index; i < o->count; i += o->procs) {
        snprintf(id, sizeof(id), "%s-%ld", o->prefix, i);
        uint64_t t0 = hn_now_ns();
        int rc = llmguard_quota_check_and_reserve(handle, id, o->tenant,
                                                  o->tokens, &d);
        uint64_t t1 = hn_now_ns();
        if (rc == LLMGUARD_EQUOTA) {
            w->r.denied++;
            continue;
        }
        if (rc != 0) {
            fail_call(w, rc);
            return;
        }
        hn_ok(w, t0, t1);
    }
}

/* The provider call of the permit mode: done at once, all tokens used. */
static llmguard_outcome
call_ok(const char *provider, void *arg, uint64_t *tokens_used)
{
    *tokens_used = *(const uint32_t *)arg;
    return LLMGUARD_OUTCOME_OK;
}

/* Sequential execute_with_failover calls: permit, call_ok, report. */
static void
run_permit(const struct opts *o, struct hn_worker *w)
{
    struct llmguard_request req = { 0 };
    struct llmguard_result res;
    char id[ID_MAX + 1];

    req.tenant_id = o->tenant;
    req.model = o->model;
    req.preferred_provider = o->provider;
    req.tokens_estimate = o->tokens;
    req.max_attempts = 1;
    req.timeout_s = o->timeout_s < 0 ? 0 : o->timeout_s;
    for (uint64_t k = 0;; k++) {
        uint64_t t0 = hn_now_ns();
        double start = (double)t0 / 1e9;
        if (start >= w->sc.end_s || told_to_stop(o, start))
            break;
        bool counted = hn_measure(w, start);
        req.workflow_id = workflow_id(o, w->index, k, id, sizeof(id));
        int rc = llmguard_execute_with_failover(handle, &req, call_ok,
                                                (void *)&o->tokens, &res);
        uint64_t t1 = hn_now_ns();
        if (rc == LLMGUARD_ETIMEDOUT || rc == LLMGUARD_EQUOTA) {
            w->r.denied += counted;
            continue;
        }
        if (rc != 0) {
            fail_call(w, rc);
            return;
        }
        /* Fail-open ran the call without the daemon; a failed report is
         * swallowed by the library but leaves its message. */
        if (!res.guarded || llmguard_last_error(handle)[0] != '\0') {
            hn_fail(w, LLMGUARD_EUNAVAIL, "%s", res.guarded ?
                    llmguard_last_error(handle) : "unguarded (fail-open)");
            return;
        }
        if (counted)
            hn_ok(w, t0, t1);
    }
}

/* One chain of the pipeline mode: a permit, its report, the next permit. */
struct chain {
    const struct opts *o;
    struct hn_worker *w;
    llmguard_async_t *a;
    uint64_t t0;
    bool counted;
    char id[ID_MAX + 1];
};
static int chains_live;         /* chains of this worker still running */
static uint64_t chain_calls;    /* permits submitted by this worker */

static void chain_next(struct chain *c);

static void
chain_fail(struct chain *c, int rc)
{
    if (c->w->r.errors == 0)
        hn_fail(c->w, rc, "%s: %s", llmguard_strerror(rc),
                llmguard_async_last_error(c->a));
    chains_live--;
}

static void
on_chain_report(llmguard_async_t *a, int status,
                const struct llmguard_report_reply *r, void *arg)
{
    struct chain *c = arg;

    (void)a, (void)r;
    if (status != 0) {
        chain_fail(c, status);
        return;
    }
    if (c->counted)
        hn_ok(c->w, c->t0, hn_now_ns());
    chain_next(c);
}

static void
on_chain_permit(llmguard_async_t *a, int status,
                const struct llmguard_permit *p, void *arg)
{
    struct chain *c = arg;
    struct llmguard_report r = { .permit_id = p->permit_id,
                                 .outcome = LLMGUARD_OUTCOME_OK,
                                 .tokens_used = c->o->tokens,
                                 .latency_ms = 0, .final = 1 };
    int rc;

    if (status == LLMGUARD_ETIMEDOUT || status == LLMGUARD_EQUOTA) {
        c->w->r.denied += c->counted;
        chain_next(c);
    } else if (status != 0) {
        chain_fail(c, status);
    } else if ((rc = llmguard_async_report(a, &r, on_chain_report, c)) != 0) {
        chain_fail(c, rc);
    }
}

/* The chain's next pair, unless the run is over or failed. */
static void
chain_next(struct chain *c)
{
    const struct opts *o = c->o;
    struct llmguard_request req = { 0 };
    uint64_t t0 = hn_now_ns();
    double start = (double)t0 / 1e9;
    int rc;

    if (start >= c->w->sc.end_s || told_to_stop(o, start) ||
        c->w->r.errors > 0) {
        chains_live--;
        return;
    }
    c->t0 = t0;
    c->counted = hn_measure(c->w, start);
    req.workflow_id = workflow_id(o, c->w->index, chain_calls++, c->id,
                                  sizeof(c->id));
    req.tenant_id = o->tenant;
    req.preferred_provider = o->provider;
    req.tokens_estimate = o->tokens;
    req.timeout_s = o->timeout_s < 0 ? 0 : o->timeout_s;
    if ((rc = llmguard_async_permit(c->a, &req, NULL, 0, on_chain_permit,
                                    c)) != 0)
        chain_fail(c, rc);
}

/* --depth chains on one non-blocking context, driven by poll(2). */
static void
run_pipeline(const struct opts *o, struct hn_worker *w)
{
    llmguard_async_t *a = llmguard_async_open(o->socket);
    struct chain *chains = calloc((size_t)o->depth, sizeof(*chains));

    if (a == NULL || chains == NULL) {
        hn_fail(w, LLMGUARD_ENOMEM, "out of memory");
        return;
    }
    chains_live = o->depth;
    for (int i = 0; i < o->depth; i++) {
        chains[i] = (struct chain){ .o = o, .w = w, .a = a };
        chain_next(&chains[i]);
    }
    while (chains_live > 0) {
        int ev = llmguard_async_events(a);
        struct pollfd pfd = { .fd = llmguard_async_fd(a),
                              .events = (ev & LLMGUARD_READABLE ? POLLIN : 0) |
                                        (ev & LLMGUARD_WRITABLE ? POLLOUT : 0) };
        poll(&pfd, pfd.fd >= 0 ? 1 : 0, llmguard_async_timeout_ms(a));
        llmguard_async_handle(a,
            (pfd.revents & (POLLIN | POLLHUP | POLLERR) ? LLMGUARD_READABLE
                                                        : 0) |
            (pfd.revents & POLLOUT ? LLMGUARD_WRITABLE : 0));
    }
    llmguard_async_close(a);
    free(chains);
}

/*
 * The per-process limiter: a token bucket in this process's memory,
 * continuous refill at rate up to burst, full at the start.  A worker
 * takes a token when there is one and otherwise sleeps until the next
 * one is due.  A sample is the time from wanting a token to having it.
 */
static void
run_local(const struct opts *o, struct hn_worker *w)
{
    double tokens = o->burst, last = w->sc.go_s;
    uint64_t want = hn_now_ns();

    hn_measure(w, w->sc.go_s);
    for (;;) {
        uint64_t t = hn_now_ns();
        double now = (double)t / 1e9;
        if (now >= w->sc.end_s)
            break;
        tokens = fmin(o->burst, tokens + (now - last) * o->rate_per_sec);
        last = now;
        if (tokens >= o->tokens) {
            tokens -= o->tokens;
            hn_ok(w, want, t);
            want = t;
            continue;
        }
        hn_sleep_s(fmin((o->tokens - tokens) / o->rate_per_sec,
                        w->sc.end_s - now));
    }
}

static void
worker(struct hn_worker *w, void *arg)
{
    const struct opts *o = arg;

    if (o->m->daemon)
        connect_worker(o, w);
    if (!hn_ready(w))
        return;
    switch (o->m->mode) {
    case M_THROUGHPUT:
    case M_ACCURACY:
        run_acquire(o, w);
        break;
    case M_QUOTA:
        run_quota(o, w);
        break;
    case M_FILL:
        run_fill(o, w);
        break;
    case M_PERMIT:
        run_permit(o, w);
        break;
    case M_PIPELINE:
        run_pipeline(o, w);
        break;
    case M_LOCAL:
        run_local(o, w);
        break;
    case M_PING:
        break;
    }
    llmguard_close(handle);
}

/* ---- the parent -------------------------------------------------------- */

static int
run(const struct opts *o, struct hn_result *res)
{
    struct hn_plan plan = { 0 };
    enum mode m = o->m->mode;
    int rc;

    plan.procs = o->procs;
    plan.seconds = o->seconds;
    /* Accuracy and local count from the start: the bucket starts full. */
    plan.warmup_s = m == M_ACCURACY || m == M_LOCAL || m == M_FILL ? 0 :
                    o->warmup_s;
    plan.server_pid = o->m->daemon ? o->daemon_pid : 0;
    plan.cpu_whole_run = m == M_FILL || o->until_file != NULL;
    rc = hn_run(&plan, worker, (void *)o, res);
    if (o->until_file != NULL && res->sum.last_s > res->go_s + plan.warmup_s)
        res->window_s = fmin(o->seconds,
                             res->sum.last_s - res->go_s - plan.warmup_s);
    return rc;
}

static void
print_head(const struct opts *o)
{
    hn_print_head(o->json, o->m->name, o->label, o->procs);
    if (o->json && (o->m->mode == M_THROUGHPUT || o->m->mode == M_ACCURACY ||
                    o->m->mode == M_PERMIT || o->m->mode == M_PIPELINE)) {
        printf(",\"provider\":");
        hn_print_json_string(stdout, o->provider);
    }
    if (o->m->mode == M_PIPELINE)
        printf(o->json ? ",\"depth\":%d" : " depth %d", o->depth);
}

static int
mode_throughput(const struct opts *o)
{
    struct hn_result res;
    int rc = run(o, &res);
    double rate = (double)res.sum.ok / res.window_s;

    print_head(o);
    if (o->json)
        printf(",\"seconds\":%.3f,\"permits\":%" PRIu64 ",\"denied\":%"
               PRIu64 ",\"errors\":%" PRIu64 ",\"permits_per_s\":%.1f"
               ",\"per_proc_min\":%" PRIu64 ",\"per_proc_max\":%" PRIu64,
               res.window_s, res.sum.ok, res.sum.denied, res.sum.errors, rate,
               res.min_ok, res.max_ok);
    else
        printf(", %.1f s: %.0f permits/s (%" PRIu64 " permits, %" PRIu64
               " denied, %" PRIu64 " errors)", res.window_s, rate, res.sum.ok,
               res.sum.denied, res.sum.errors);
    hn_print_latency(o->json, &res.lat);
    hn_print_cpu_and_end(o->json, &res);
    return rc < 0 ? 1 : 0;
}

/* With several --socket: the grants through each daemon (worker w used
 * socket w mod n), to see that each got its share. */
static void
print_per_socket(const struct opts *o, const struct hn_result *res)
{
    if (o->nsockets < 2)
        return;
    printf(o->json ? ",\"per_socket\":\"" : "; per socket");
    for (int i = 0; i < o->nsockets; i++) {
        uint64_t n = 0;
        for (int w = i; w < o->procs; w += o->nsockets)
            n += res->ok_of[w] * o->tokens;
        printf(o->json && i == 0 ? "%" PRIu64 : " %" PRIu64, n);
    }
    if (o->json)
        putchar('"');
}

/* granted / (burst + rate x elapsed) of an accuracy or local run. */
static int
print_accuracy(const struct opts *o, const struct hn_result *res,
               double rate_per_sec, double burst, bool must_hold)
{
    /* Tokens, not calls: each grant took o->tokens. */
    double granted = (double)res->sum.ok * o->tokens;
    double elapsed = (res->sum.last_s > 0 ? res->sum.last_s : res->go_s) -
                     res->go_s;
    double bound = burst + rate_per_sec * (elapsed + o->lease_s);
    double ratio = bound > 0 ? granted / bound : 0;
    bool exceeded = granted > bound + 1e-9;

    /* A grant's latency is mostly time spent waiting for a token. */
    print_head(o);
    if (o->json)
        printf(",\"rate_per_sec\":%g,\"burst\":%g,\"lease_ms\":%g,"
               "\"seconds\":%.3f,\"elapsed_s\":%.6f,\"granted\":%.0f,\"bound\":%.1f,"
               "\"ratio\":%.5f,\"timeouts\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"per_proc_min\":%" PRIu64 ",\"per_proc_max\":%" PRIu64
               ",\"wait_p50_us\":%.1f,\"wait_p99_us\":%.1f", rate_per_sec,
               burst, o->lease_s * 1000, o->seconds, elapsed, granted, bound, ratio,
               res->sum.denied, res->sum.errors, res->min_ok, res->max_ok,
               hn_quantile_us(&res->lat, 0.5), hn_quantile_us(&res->lat, 0.99));
    else
        printf(", rate %g burst %g, %.3f s: granted %.0f, bound (burst + "
               "rate x (elapsed + %g ms lease)) %.1f, granted/bound %.4f%s; per proc %"
               PRIu64 "..%" PRIu64 ", wait p50 %.0f us, p99 %.0f us",
               rate_per_sec, burst, elapsed, granted, o->lease_s * 1000,
               bound, ratio, exceeded && must_hold ? " EXCEEDS THE BOUND" : "", res->min_ok,
               res->max_ok, hn_quantile_us(&res->lat, 0.5),
               hn_quantile_us(&res->lat, 0.99));
    print_per_socket(o, res);
    hn_print_cpu_and_end(o->json, res);
    return exceeded && must_hold ? 1 : 0;
}

static int
mode_accuracy(const struct opts *o)
{
    struct llmguard_limiter_status st;
    llmguard_t *g = llmguard_open(o->socket);
    struct hn_result res;
    int rc;

    if (g == NULL)
        hn_die(PROG, "llmguard_open failed");
    if ((rc = llmguard_limiter_status(g, o->provider, &st)) != 0)
        hn_die(PROG, "limiter_status %s: %s", o->provider,
               llmguard_last_error(g));
    llmguard_close(g);
    /* With leases (--lease-ms) the daemon holds only its lease: the
     * bucket the bound is about is in Redis, full while untouched. */
    if (o->lease_s == 0 && st.available_tokens < st.max_tokens - 1e-6)
        fprintf(stderr, "loadgen: note: bucket %s holds %.2f of %.0f tokens "
                "at the start; the bound still assumes a full one\n",
                o->provider, st.available_tokens, st.max_tokens);
    rc = run(o, &res);
    if (print_accuracy(o, &res, st.rate_per_sec, st.max_tokens, true))
        return 1;
    return rc < 0 ? 1 : 0;
}

/* P processes, each with its own bucket of the same rate and burst: the
 * bound they were meant to keep together is that of one bucket. */
static int
mode_local(const struct opts *o)
{
    struct hn_result res;
    int rc = run(o, &res);

    print_accuracy(o, &res, o->rate_per_sec, o->burst, false);
    return rc < 0 ? 1 : 0;
}

static int
mode_quota(const struct opts *o)
{
    struct hn_result res;
    int rc = run(o, &res);
    double rate = (double)res.sum.ok / res.window_s;

    print_head(o);
    if (o->json)
        printf(",\"ids\":\"%s\",\"seconds\":%.3f,\"reservations\":%" PRIu64
               ",\"refused\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"reservations_per_s\":%.1f", ids_words[o->ids].name,
               res.window_s, res.sum.ok, res.sum.denied, res.sum.errors, rate);
    else
        printf(" (ids %s), %.1f s: %.0f reservations/s (%" PRIu64 " ok, %"
               PRIu64 " refused, %" PRIu64 " errors)", ids_words[o->ids].name,
               res.window_s, rate, res.sum.ok, res.sum.denied, res.sum.errors);
    hn_print_latency(o->json, &res.lat);
    hn_print_cpu_and_end(o->json, &res);
    return rc < 0 ? 1 : 0;
}

static int
mode_permit(const struct opts *o)
{
    struct hn_result res;
    int rc = run(o, &res);
    double rate = (double)res.sum.ok / res.window_s;

    print_head(o);
    if (o->json)
        printf(",\"ids\":\"%s\",\"seconds\":%.3f,\"calls\":%" PRIu64
               ",\"denied\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"calls_per_s\":%.1f,\"round_trips_per_s\":%.1f",
               ids_words[o->ids].name, res.window_s, res.sum.ok,
               res.sum.denied, res.sum.errors, rate, 2 * rate);
    else
        printf(" (ids %s), %.1f s: %.0f calls/s = permit+report pairs "
               "(%" PRIu64 " calls, %" PRIu64 " denied, %" PRIu64 " errors)",
               ids_words[o->ids].name, res.window_s, rate, res.sum.ok,
               res.sum.denied, res.sum.errors);
    hn_print_latency(o->json, &res.lat);
    hn_print_cpu_and_end(o->json, &res);
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
    struct hn_result res;
    int rc;

    if (o->daemon_pid > 0 && read_vm(o->daemon_pid, &rss0, &hwm0) < 0)
        hn_die(PROG, "cannot read /proc/%ld/status", (long)o->daemon_pid);
    rc = run(o, &res);
    double fill_s = res.sum.last_s - res.go_s;
    res.window_s = fill_s;
    if (o->daemon_pid > 0) {
        llmguard_t *g = llmguard_open(o->socket);
        if (g != NULL)
            llmguard_ping(g);   /* the daemon has read everything */
        llmguard_close(g);
        hn_sleep_s(o->settle_s);
        if (read_vm(o->daemon_pid, &rss1, &hwm1) < 0)
            hn_die(PROG, "cannot read /proc/%ld/status", (long)o->daemon_pid);
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
    hn_print_latency(o->json, &res.lat);
    hn_print_cpu_and_end(o->json, &res);
    return rc < 0 ? 1 : 0;
}

/* Poll with pings until the daemon answers or --seconds pass. */
static int
mode_ping(const struct opts *o)
{
    llmguard_t *g = llmguard_open(o->socket);
    double end = hn_now_s() + o->seconds;
    int rc;

    if (g == NULL)
        hn_die(PROG, "llmguard_open failed");
    while ((rc = llmguard_ping(g)) != 0 && hn_now_s() < end)
        hn_sleep_s(0.02);
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
    switch (o.m->mode) {
    case M_THROUGHPUT:
        return mode_throughput(&o);
    case M_ACCURACY:
        return mode_accuracy(&o);
    case M_QUOTA:
        return mode_quota(&o);
    case M_FILL:
        return mode_fill(&o);
    case M_PERMIT:
    case M_PIPELINE:
        return mode_permit(&o);
    case M_LOCAL:
        return mode_local(&o);
    case M_PING:
        return mode_ping(&o);
    }
    return 2;
}
