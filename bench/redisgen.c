/*
 * redisgen.c - the same workload as loadgen, against a token bucket kept
 * in Redis by a Lua script (the usual "production" rate limiter).
 *
 *   redisgen MODE -s REDIS_SOCKET [OPTIONS]   (redisgen --help)
 *
 * The parent loads the script once (SCRIPT LOAD) and deletes the bucket's
 * key, so every run starts from a full bucket.  P worker processes, each
 * with its own hiredis connection over the Unix socket, start together
 * (harness.c) and call EVALSHA one at a time.  Latency is the whole call
 * as an application sees it: format, write, the script, read, parse.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#include "harness.h"

#define PROG "redisgen"

/*
 * The token bucket, as a Redis hash {tokens, ts} (ts in microseconds of
 * the server's clock).  KEYS[1] the bucket; ARGV: rate per second, burst,
 * tokens wanted.  A missing bucket is full.  Refill is continuous at rate
 * up to burst; the take is all or nothing.  Returns {1, 0} when granted,
 * else {0, microseconds until enough tokens}.  bench/README.md shows it.
 */
static const char bucket_lua[] =
"local rate = tonumber(ARGV[1])\n"
"local burst = tonumber(ARGV[2])\n"
"local want = tonumber(ARGV[3])\n"
"local t = redis.call('TIME')\n"
"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
"local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')\n"
"local tokens = tonumber(b[1])\n"
"local ts = tonumber(b[2])\n"
"if tokens == nil or ts == nil then\n"
"  tokens = burst\n"
"  ts = now\n"
"end\n"
"if now > ts then\n"
"  tokens = math.min(burst, tokens + (now - ts) * rate / 1000000)\n"
"  ts = now\n"
"end\n"
"local granted, wait = 0, 0\n"
"if tokens >= want then\n"
"  tokens = tokens - want\n"
"  granted = 1\n"
"else\n"
"  wait = math.ceil((want - tokens) * 1000000 / rate)\n"
"end\n"
"redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),\n"
"           'ts', string.format('%.0f', ts))\n"
"return {granted, wait}\n";

enum mode { M_THROUGHPUT, M_ACCURACY, M_PING, M_SCRIPT };

static const struct mode_def {
    const char *name;
    enum mode mode;
    const char *help;
} modes[] = {
    { "throughput", M_THROUGHPUT,
      "sequential EVALSHA acquires: permits/s, latency p50/p99/p99.9" },
    { "accuracy", M_ACCURACY,
      "P processes race for one bucket (a refused call sleeps the wait the\n"
      "              script returns): granted vs burst + rate x elapsed" },
    { "ping", M_PING, "wait until Redis answers (up to --seconds)" },
    { "script", M_SCRIPT, "print the Lua script and exit" },
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

struct opts {
    const struct mode_def *m;
    const char *socket;
    const char *key;
    const char *label;
    int procs;
    double seconds, warmup_s;
    double rate_per_sec, burst;     /* < 0: the mode's default */
    unsigned tokens;
    pid_t server_pid;
    bool json;
    char sha[64];                   /* of the loaded script */
    char rate_arg[32], burst_arg[32], tokens_arg[16];
};

static void
usage(FILE *fp)
{
    fprintf(fp,
"usage: redisgen MODE -s REDIS_SOCKET [OPTIONS]\n"
"\n"
"The loadgen workload against a token bucket in Redis: a Lua script\n"
"(`redisgen script` prints it) loaded once, called with EVALSHA by P\n"
"worker processes, one connection each, starting together.\n"
"\n"
"Modes:\n");
    for (size_t i = 0; i < NMODES; i++)
        fprintf(fp, "  %-11s %s\n", modes[i].name, modes[i].help);
    fprintf(fp,
"\n"
"Options:\n"
"  -s, --socket PATH     redis-server's Unix socket (required)\n"
"  -k, --key KEY         the bucket's key, deleted before the run\n"
"                        (default: llmguard-bench:bucket)\n"
"  -P, --procs N         worker processes (default: 1)\n"
"  -d, --seconds D       measured duration (default: 5); ping: max wait\n"
"  -w, --warmup W        seconds before measuring (default: 0.5; accuracy\n"
"                        ignores it)\n"
"  -r, --rate R          bucket rate per second (default: throughput 1e8,\n"
"                        accuracy 200)\n"
"  -b, --burst B         bucket size (default: throughput 1e8, accuracy 10)\n"
"  -n, --tokens N        tokens per acquire (default: 1)\n"
"      --daemon-pid PID  also report redis-server's CPU over the window\n"
"  -l, --label STR       a name echoed in the output\n"
"  -j, --json            one JSON object instead of the text line\n"
"  -h, --help            this text\n"
"\n"
"Output: as loadgen's throughput and accuracy modes, field for field.\n");
}

static void
parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "key", required_argument, NULL, 'k' },
        { "procs", required_argument, NULL, 'P' },
        { "seconds", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'w' },
        { "rate", required_argument, NULL, 'r' },
        { "burst", required_argument, NULL, 'b' },
        { "tokens", required_argument, NULL, 'n' },
        { "daemon-pid", required_argument, NULL, 'D' },
        { "label", required_argument, NULL, 'l' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    size_t i;

    memset(o, 0, sizeof(*o));
    o->key = "llmguard-bench:bucket";
    o->procs = 1;
    o->seconds = 5;
    o->warmup_s = 0.5;
    o->rate_per_sec = o->burst = -1;
    o->tokens = 1;
    while ((c = getopt_long(argc, argv, "s:k:P:d:w:r:b:n:l:jh", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 's': o->socket = optarg; break;
        case 'k': o->key = optarg; break;
        case 'P': o->procs = (int)hn_parse_num(PROG, "--procs", optarg, 1,
                                               HN_MAX_PROCS);
            break;
        case 'd': o->seconds = hn_parse_num(PROG, "--seconds", optarg, 0.01,
                                            86400);
            break;
        case 'w': o->warmup_s = hn_parse_num(PROG, "--warmup", optarg, 0,
                                             3600);
            break;
        case 'r': o->rate_per_sec = hn_parse_num(PROG, "--rate", optarg, 1e-6,
                                                 1e12);
            break;
        case 'b': o->burst = hn_parse_num(PROG, "--burst", optarg, 1, 1e12);
            break;
        case 'n': o->tokens = (unsigned)hn_parse_num(PROG, "--tokens", optarg,
                                                     1, 1e9);
            break;
        case 'D': o->server_pid = (pid_t)hn_parse_num(PROG, "--daemon-pid",
                                                      optarg, 1, 4194304);
            break;
        case 'l': o->label = optarg; break;
        case 'j': o->json = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "redisgen: %s (redisgen --help)\n", optind >= argc ?
                "a mode is required" : "exactly one mode, please");
        exit(2);
    }
    for (i = 0; i < NMODES; i++)
        if (strcmp(argv[optind], modes[i].name) == 0)
            break;
    if (i == NMODES) {
        fprintf(stderr, "redisgen: unknown mode '%s'; one of:", argv[optind]);
        for (i = 0; i < NMODES; i++)
            fprintf(stderr, " %s", modes[i].name);
        fputc('\n', stderr);
        exit(2);
    }
    o->m = &modes[i];
    if (o->m->mode != M_SCRIPT && o->socket == NULL) {
        fprintf(stderr, "redisgen: --socket is required\n");
        exit(2);
    }
    if (o->rate_per_sec < 0)
        o->rate_per_sec = o->m->mode == M_ACCURACY ? 200 : 1e8;
    if (o->burst < 0)
        o->burst = o->m->mode == M_ACCURACY ? 10 : 1e8;
    if (o->tokens > o->burst) {
        fprintf(stderr, "redisgen: --tokens above --burst never succeeds\n");
        exit(2);
    }
    snprintf(o->rate_arg, sizeof(o->rate_arg), "%.17g", o->rate_per_sec);
    snprintf(o->burst_arg, sizeof(o->burst_arg), "%.17g", o->burst);
    snprintf(o->tokens_arg, sizeof(o->tokens_arg), "%u", o->tokens);
}

static redisContext *
connect_redis(const char *path, char *err, size_t errlen)
{
    redisContext *rc = redisConnectUnix(path);

    if (rc == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (rc->err) {
        snprintf(err, errlen, "connect to %s: %s", path, rc->errstr);
        redisFree(rc);
        return NULL;
    }
    return rc;
}

/* One EVALSHA.  1 granted, 0 refused (*wait_us set), -1 error (err). */
static int
evalsha(redisContext *rc, const struct opts *o, long long *wait_us,
        char *err, size_t errlen)
{
    const char *argv[] = { "EVALSHA", o->sha, "1", o->key, o->rate_arg,
                           o->burst_arg, o->tokens_arg };
    redisReply *r = redisCommandArgv(rc, 7, argv, NULL);
    int ret = -1;

    if (r == NULL) {
        snprintf(err, errlen, "EVALSHA: %s", rc->errstr);
        return -1;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        ret = r->element[0]->integer == 1;
        *wait_us = r->element[1]->integer;
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "EVALSHA: %s", r->str);
    } else {
        snprintf(err, errlen, "EVALSHA: unexpected reply type %d", r->type);
    }
    freeReplyObject(r);
    return ret;
}

static void
worker(struct hn_worker *w, void *arg)
{
    const struct opts *o = arg;
    char err[256];
    redisContext *rc = connect_redis(o->socket, err, sizeof(err));
    redisReply *r;
    long long wait_us;

    if (rc == NULL) {
        hn_fail(w, -1, "%s", err);
    } else if ((r = redisCommand(rc, "PING")) == NULL) {
        hn_fail(w, -1, "PING: %s", rc->errstr);
    } else {
        freeReplyObject(r);
    }
    if (!hn_ready(w))
        return;
    uint64_t want = hn_now_ns();
    for (;;) {
        uint64_t t0 = hn_now_ns();
        double start = (double)t0 / 1e9;
        if (start >= w->sc.end_s)
            break;
        bool counted = hn_measure(w, start);
        int g = evalsha(rc, o, &wait_us, err, sizeof(err));
        uint64_t t1 = hn_now_ns();
        if (g < 0) {
            hn_fail(w, -1, "%s", err);
            break;
        }
        if (o->m->mode == M_ACCURACY) {
            /* Counted from wanting a token to having it, as loadgen's
             * accuracy counts the wait in the daemon. */
            if (g) {
                hn_ok(w, want, t1);
                want = t1;
            } else {
                w->r.denied++;
                double end = w->sc.end_s - (double)t1 / 1e9;
                hn_sleep_s((double)wait_us / 1e6 < end ?
                           (double)wait_us / 1e6 : end);
            }
            continue;
        }
        if (!g)
            w->r.denied += counted;
        else if (counted)
            hn_ok(w, t0, t1);
    }
    redisFree(rc);
}

/* Load the script (its SHA1 into o->sha) and delete the bucket. */
static void
prepare(struct opts *o)
{
    char err[256];
    redisContext *rc = connect_redis(o->socket, err, sizeof(err));
    redisReply *r;

    if (rc == NULL)
        hn_die(PROG, "%s", err);
    r = redisCommand(rc, "SCRIPT LOAD %s", bucket_lua);
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        hn_die(PROG, "SCRIPT LOAD: %s", r == NULL ? rc->errstr :
               r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    snprintf(o->sha, sizeof(o->sha), "%s", r->str);
    freeReplyObject(r);
    r = redisCommand(rc, "DEL %s", o->key);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        hn_die(PROG, "DEL %s: %s", o->key, r == NULL ? rc->errstr : r->str);
    freeReplyObject(r);
    redisFree(rc);
}

static void
print_head(const struct opts *o)
{
    hn_print_head(o->json, o->m->name, o->label, o->procs);
    if (o->json) {
        printf(",\"backend\":\"redis\",\"provider\":");
        hn_print_json_string(stdout, o->key);
    }
}

static int
mode_throughput(struct opts *o)
{
    struct hn_plan plan = { o->procs, o->seconds, o->warmup_s, o->server_pid,
                            false };
    struct hn_result res;
    int rc;

    prepare(o);
    rc = hn_run(&plan, worker, o, &res);
    double rate = (double)res.sum.ok / o->seconds;
    print_head(o);
    if (o->json)
        printf(",\"seconds\":%.3f,\"permits\":%" PRIu64 ",\"denied\":%"
               PRIu64 ",\"errors\":%" PRIu64 ",\"permits_per_s\":%.1f"
               ",\"per_proc_min\":%" PRIu64 ",\"per_proc_max\":%" PRIu64,
               o->seconds, res.sum.ok, res.sum.denied, res.sum.errors, rate,
               res.min_ok, res.max_ok);
    else
        printf(" (redis EVALSHA), %.1f s: %.0f permits/s (%" PRIu64
               " permits, %" PRIu64 " denied, %" PRIu64 " errors)",
               o->seconds, rate, res.sum.ok, res.sum.denied, res.sum.errors);
    hn_print_latency(o->json, &res.lat);
    hn_print_cpu_and_end(o->json, &res);
    return rc < 0 ? 1 : 0;
}

static int
mode_accuracy(struct opts *o)
{
    struct hn_plan plan = { o->procs, o->seconds, 0, o->server_pid, false };
    struct hn_result res;
    int rc;

    prepare(o);
    rc = hn_run(&plan, worker, o, &res);
    double granted = (double)res.sum.ok * o->tokens;
    double elapsed = (res.sum.last_s > 0 ? res.sum.last_s : res.go_s) -
                     res.go_s;
    double bound = o->burst + o->rate_per_sec * elapsed;
    double ratio = bound > 0 ? granted / bound : 0;
    bool exceeded = granted > bound + 1e-9;

    print_head(o);
    if (o->json)
        printf(",\"rate_per_sec\":%g,\"burst\":%g,\"seconds\":%.3f,"
               "\"elapsed_s\":%.6f,\"granted\":%.0f,\"bound\":%.1f,"
               "\"ratio\":%.5f,\"refusals\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"per_proc_min\":%" PRIu64 ",\"per_proc_max\":%" PRIu64
               ",\"wait_p50_us\":%.1f,\"wait_p99_us\":%.1f", o->rate_per_sec,
               o->burst, o->seconds, elapsed, granted, bound, ratio,
               res.sum.denied, res.sum.errors, res.min_ok, res.max_ok,
               hn_quantile_us(&res.lat, 0.5), hn_quantile_us(&res.lat, 0.99));
    else
        printf(" (redis EVALSHA), rate %g burst %g, %.3f s: granted %.0f, "
               "bound (burst + rate x elapsed) %.1f, granted/bound %.4f%s; "
               "per proc %" PRIu64 "..%" PRIu64 ", %" PRIu64 " refusals, "
               "wait p50 %.0f us, p99 %.0f us", o->rate_per_sec, o->burst,
               elapsed, granted, bound, ratio, exceeded ?
               " EXCEEDS THE BOUND" : "", res.min_ok, res.max_ok,
               res.sum.denied, hn_quantile_us(&res.lat, 0.5),
               hn_quantile_us(&res.lat, 0.99));
    hn_print_cpu_and_end(o->json, &res);
    return rc < 0 || exceeded ? 1 : 0;
}

static int
mode_ping(const struct opts *o)
{
    double end = hn_now_s() + o->seconds;
    char err[256];

    for (;;) {
        redisContext *rc = connect_redis(o->socket, err, sizeof(err));
        redisReply *r = rc ? redisCommand(rc, "PING") : NULL;
        bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
        if (r != NULL)
            freeReplyObject(r);
        if (rc != NULL)
            redisFree(rc);
        if (ok)
            return 0;
        if (hn_now_s() >= end) {
            fprintf(stderr, "redisgen: no answer on %s\n", o->socket);
            return 1;
        }
        hn_sleep_s(0.02);
    }
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
    case M_PING:
        return mode_ping(&o);
    case M_SCRIPT:
        fputs(bucket_lua, stdout);
        return 0;
    }
    return 2;
}
