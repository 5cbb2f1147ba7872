/*
 * acquirer - drive llmguardd's token buckets through libllmguard.
 *
 *   acquirer once SOCKET PROVIDER TOKENS TIMEOUT_S
 *       one acquire; prints "granted WAITED_MS" or "error CODE TEXT"
 *   acquirer race SOCKET PROVIDER PROCS SECONDS
 *       PROCS processes acquire one token at a time for SECONDS; prints
 *       "grants N elapsed_s T" (T: from the start to the last grant)
 *   acquirer span SOCKET PROVIDER PROCS SECONDS
 *       as race; prints "grants N first F last L", the monotonic times of
 *       the first and the last grant (several daemons: one interval)
 *   (race and span: PROVIDER "model:ALIAS" takes permits naming model
 *   ALIAS instead, each reported a success at once)
 *   acquirer status SOCKET PROVIDER
 *       prints "available A rate R max M enabled E waiters W"
 *   acquirer reserve SOCKET WORKFLOW TENANT TOKENS   ("-": no such id)
 *       one quota check-and-reserve; prints "allowed over O subject S used U
 *       limit L remaining R reservation X" or "error CODE TEXT subject S used
 *       U limit L reset_at T"
 *   acquirer calls SOCKET N [TRACEPARENT]
 *       N calls through llmguard_execute_with_failover whose call function
 *       answers ok at once; prints "calls N ok K"
 *   acquirer named SOCKET CALL_ID
 *       one call through llmguard_execute_with_failover with the caller's
 *       call_id; prints "rc RC call_id ID permit_id N"
 *   acquirer qload SOCKET WORKFLOW PROCS TOKENS SECONDS
 *       PROCS processes reserve TOKENS for SECONDS or until the daemon goes
 *       away; prints "acked T" (tokens of acknowledged reservations)
 *   acquirer reconnect SOCKET SECONDS
 *       one handle pings every 50 ms for SECONDS, and on while its last
 *       ping failed, for SECONDS more at most; prints "ok N failed M last
 *       ok|failed" (a daemon restart in between: the same handle recovers
 *       by itself)
 *   acquirer tcp-idle HOST PORT N SECONDS
 *       holds N TCP connections to HOST:PORT, each with half a request
 *   acquirer fill SOCKET PREFIX N
 *       reserves 1 token for each of N workflows PREFIX0 .. PREFIX<N-1>
 *   acquirer qrace SOCKET WORKFLOW PROCS TOKENS TRIES
 *       PROCS processes each try TRIES reservations of TOKENS; prints
 *       "allowed N refused M"
 *   acquirer waits SOCKET PROVIDER N
 *       one acquire, then N more one after the other, each waiting up to
 *       1 s: on a bucket of burst 1 each waits for the token after the one
 *       before (less the round trip between them); prints "waited min A
 *       median M max X" (waited_ms as the daemon reports it)
 *   acquirer reserves SOCKET WORKFLOW N TOKENS
 *       N reservations back to back on one connection; prints "reserved N
 *       max_ms M total_ms T" (each call timed by the client)
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmguard.h"

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmd_once(const char *sock, const char *prov, uint32_t tokens, double timeout)
{
    llmguard_t *g = llmguard_open(sock);
    double waited = -1;
    int rc = llmguard_acquire(g, prov, tokens, timeout, &waited);

    if (rc == 0)
        printf("granted %.1f\n", waited);
    else
        printf("error %d %s\n", rc, llmguard_last_error(g));
    fflush(stdout);
    llmguard_close(g);
    return rc == 0 ? 0 : 1;
}

/* One token of prov within timeout_s; prov "model:ALIAS": one permit
 * naming that model (its deployment's bucket and its provider's), reported
 * a success at once. */
static int
take_one(llmguard_t *g, const char *prov, double timeout_s)
{
    struct llmguard_request req = { .timeout_s = timeout_s };
    struct llmguard_permit p;
    struct llmguard_report r = { .outcome = LLMGUARD_OUTCOME_OK,
                                 .latency_ms = -1, .final = 1 };
    int rc;

    if (strncmp(prov, "model:", 6) != 0)
        return llmguard_acquire(g, prov, 1, timeout_s, NULL);
    req.model = prov + 6;
    if ((rc = llmguard_permit(g, &req, NULL, 0, &p)) != 0)
        return rc;
    r.permit_id = p.permit_id;
    return llmguard_report(g, &r, NULL);
}

/* One racer: acquire until end_s; report grants and the last grant time. */
static void
racer(const char *sock, const char *prov, double end_s, int fd)
{
    llmguard_t *g = llmguard_open(sock);
    long grants = 0;
    double last = 0, first = 0;

    while (now_s() < end_s) {
        double left = end_s - now_s();
        int rc = take_one(g, prov, left > 0 ? left : 0);
        if (rc == 0) {
            grants++;
            last = now_s();
            if (first == 0)
                first = last;
        } else if (rc != LLMGUARD_ETIMEDOUT) {
            fprintf(stderr, "acquire: %s\n", llmguard_last_error(g));
            _exit(1);
        }
    }
    dprintf(fd, "%ld %.9f %.9f\n", grants, last, first);
    llmguard_close(g);
    _exit(0);
}

static int
cmd_race(const char *sock, const char *prov, int procs, double seconds,
         bool span)
{
    int fds[2];
    double start, end, last = 0, first = INFINITY;
    long total = 0;
    FILE *fp;

    if (pipe(fds) < 0)
        return 2;
    start = now_s();
    end = start + seconds;
    for (int i = 0; i < procs; i++)
        if (fork() == 0) {
            close(fds[0]);
            racer(sock, prov, end, fds[1]);
        }
    close(fds[1]);
    fp = fdopen(fds[0], "r");
    for (int i = 0; i < procs; i++) {
        long n;
        double t, f;
        if (fscanf(fp, "%ld %lf %lf", &n, &t, &f) != 3)
            break;
        total += n;
        if (t > last)
            last = t;
        if (n > 0 && f < first)
            first = f;
    }
    fclose(fp);
    int failed = 0;
    for (int i = 0; i < procs; i++) {
        int status;
        wait(&status);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    if (span)
        printf("grants %ld first %.6f last %.6f\n", total,
               isinf(first) ? start : first, last > 0 ? last : end);
    else
        printf("grants %ld elapsed_s %.6f\n", total,
               (last > 0 ? last : end) - start);
    return failed ? 1 : 0;
}

static int
cmd_status(const char *sock, const char *prov)
{
    llmguard_t *g = llmguard_open(sock);
    struct llmguard_limiter_status st;
    int rc = llmguard_limiter_status(g, prov, &st);

    if (rc == 0)
        printf("available %.3f rate %g max %g enabled %d waiters %llu\n",
               st.available_tokens, st.rate_per_sec, st.max_tokens,
               st.enabled, (unsigned long long)st.waiters);
    else
        printf("error %d %s\n", rc, llmguard_last_error(g));
    llmguard_close(g);
    return rc == 0 ? 0 : 1;
}

static const char *
opt_id(const char *s)
{
    return strcmp(s, "-") == 0 ? NULL : s;
}

static int
cmd_reserve(const char *sock, const char *wf, const char *tn, uint64_t tokens)
{
    llmguard_t *g = llmguard_open(sock);
    struct llmguard_quota_decision d;
    int rc = llmguard_quota_check_and_reserve(g, opt_id(wf), opt_id(tn),
                                              tokens, &d);

    if (rc == 0)
        printf("allowed over %d subject %s used %llu limit %llu remaining "
               "%llu reservation %lld\n", d.over_quota, d.subject,
               (unsigned long long)d.tokens_used,
               (unsigned long long)d.tokens_limit,
               (unsigned long long)d.tokens_remaining,
               (long long)d.reservation);
    else if (rc == LLMGUARD_EQUOTA)
        printf("error %d %s subject %s used %llu limit %llu reset_at %.3f\n",
               rc, llmguard_strerror(rc), d.subject,
               (unsigned long long)d.tokens_used,
               (unsigned long long)d.tokens_limit,
               d.has_reset_at ? d.reset_at : -1.0);
    else
        printf("error %d %s\n", rc, llmguard_last_error(g));
    llmguard_close(g);
    return rc == 0 ? 0 : 1;
}

static int
cmd_qrace(const char *sock, const char *wf, int procs, uint64_t tokens,
          int tries)
{
    int fds[2];
    long allowed = 0, refused = 0;
    FILE *fp;

    if (pipe(fds) < 0)
        return 2;
    for (int i = 0; i < procs; i++)
        if (fork() == 0) {
            llmguard_t *g = llmguard_open(sock);
            struct llmguard_quota_decision d;
            long ok = 0, no = 0;
            close(fds[0]);
            for (int k = 0; k < tries; k++) {
                int rc = llmguard_quota_check_and_reserve(g, wf, NULL, tokens,
                                                          &d);
                if (rc == 0)
                    ok++;
                else if (rc == LLMGUARD_EQUOTA)
                    no++;
                else
                    _exit(1);
            }
            dprintf(fds[1], "%ld %ld\n", ok, no);
            llmguard_close(g);
            _exit(0);
        }
    close(fds[1]);
    fp = fdopen(fds[0], "r");
    for (int i = 0; i < procs; i++) {
        long a, r;
        if (fscanf(fp, "%ld %ld", &a, &r) != 2)
            break;
        allowed += a;
        refused += r;
    }
    fclose(fp);
    int failed = 0;
    for (int i = 0; i < procs; i++) {
        int status;
        wait(&status);
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    printf("allowed %ld refused %ld\n", allowed, refused);
    return failed ? 1 : 0;
}

static llmguard_outcome
answer_ok(const char *provider, void *arg, uint64_t *tokens_used)
{
    *tokens_used = 7;
    return LLMGUARD_OUTCOME_OK;
}

static int
cmd_calls(const char *sock, long n, const char *traceparent)
{
    llmguard_t *g = llmguard_open(sock);
    struct llmguard_request req = { .workflow_id = "traced",
                                    .tokens_estimate = 5, .timeout_s = 1,
                                    .traceparent = traceparent };
    struct llmguard_result res;
    long ok = 0;

    for (long i = 0; i < n; i++)
        ok += llmguard_execute_with_failover(g, &req, answer_ok, NULL,
                                             &res) == 0;
    printf("calls %ld ok %ld\n", n, ok);
    llmguard_close(g);
    return ok == n ? 0 : 1;
}

static int
cmd_named(const char *sock, const char *call_id)
{
    llmguard_t *g = llmguard_open(sock);
    struct llmguard_request req = { .workflow_id = "named",
                                    .tokens_estimate = 5, .timeout_s = 1,
                                    .call_id = call_id };
    struct llmguard_result res;
    int rc = llmguard_execute_with_failover(g, &req, answer_ok, NULL, &res);

    printf("rc %d call_id %s permit_id %llu\n", rc, rc == LLMGUARD_EINVAL ?
           "-" : res.call_id, rc == LLMGUARD_EINVAL ? 0ULL :
           (unsigned long long)res.permit_id);
    llmguard_close(g);
    return rc == 0 ? 0 : 1;
}

static int
cmd_qload(const char *sock, const char *wf, int procs, uint64_t tokens,
          double seconds)
{
    int fds[2];
    unsigned long long acked = 0;
    FILE *fp;
    double end = now_s() + seconds;

    if (pipe(fds) < 0)
        return 2;
    for (int i = 0; i < procs; i++)
        if (fork() == 0) {
            llmguard_t *g = llmguard_open(sock);
            struct llmguard_quota_decision d;
            unsigned long long mine = 0;
            close(fds[0]);
            while (now_s() < end &&
                   llmguard_quota_check_and_reserve(g, wf, NULL, tokens,
                                                    &d) == 0)
                mine += tokens;
            dprintf(fds[1], "%llu\n", mine);
            llmguard_close(g);
            _exit(0);
        }
    close(fds[1]);
    fp = fdopen(fds[0], "r");
    for (int i = 0; i < procs; i++) {
        unsigned long long t;
        if (fscanf(fp, "%llu", &t) == 1)
            acked += t;
    }
    fclose(fp);
    while (wait(NULL) > 0)
        ;
    printf("acked %llu\n", acked);
    return 0;
}

static int
cmd_reconnect(const char *sock, double seconds)
{
    llmguard_t *g = llmguard_open(sock);
    double end = now_s() + seconds;
    long ok = 0, failed = 0;
    int last = -1;

    /* For seconds, then (a restart slowed by a loaded machine) while the
     * last ping failed, for as long again at most. */
    while (now_s() < end || (last != 0 && now_s() < end + seconds)) {
        last = llmguard_ping(g);
        if (last == 0)
            ok++;
        else
            failed++;
        usleep(50000);
    }
    printf("ok %ld failed %ld last %s\n", ok, failed, last == 0 ? "ok" :
           "failed");
    llmguard_close(g);
    return 0;
}

static int
cmd_tcp_idle(const char *host, int port, int n, double seconds)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    int *fds = calloc((size_t)n, sizeof(int)), open_ = 0;

    sin.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &sin.sin_addr);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fds[i], (struct sockaddr *)&sin, sizeof(sin)) == 0) {
            open_++;
            send(fds[i], "GET /metrics HTTP/1.1\r\nHo", 26, MSG_NOSIGNAL);
        }
    }
    printf("holding %d connections\n", open_);
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    return 0;
}

static int
cmd_fill(const char *sock, const char *prefix, long n)
{
    llmguard_t *g = llmguard_open(sock);
    struct llmguard_quota_decision d;
    char id[256];

    for (long i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "%s%ld", prefix, i);
        int rc = llmguard_quota_check_and_reserve(g, id, NULL, 1, &d);
        if (rc != 0) {
            printf("error %d at %ld: %s\n", rc, i, llmguard_last_error(g));
            llmguard_close(g);
            return 1;
        }
    }
    printf("filled %ld\n", n);
    llmguard_close(g);
    return 0;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static int
cmd_waits(const char *sock, const char *prov, int n)
{
    llmguard_t *g = llmguard_open(sock);
    double *w = calloc((size_t)(n > 0 ? n : 1), sizeof(*w));
    int rc = 0;

    rc = llmguard_acquire(g, prov, 1, 1.0, NULL);
    for (int i = 0; i < n && rc == 0; i++)
        rc = llmguard_acquire(g, prov, 1, 1.0, &w[i]);
    if (rc != 0) {
        printf("error %d %s\n", rc, llmguard_last_error(g));
    } else {
        qsort(w, (size_t)n, sizeof(*w), cmp_double);
        printf("waited min %.3f median %.3f max %.3f\n", w[0], w[n / 2],
               w[n - 1]);
    }
    free(w);
    llmguard_close(g);
    return rc == 0 ? 0 : 1;
}

static int
cmd_reserves(const char *sock, const char *wf, long n, uint64_t tokens)
{
    llmguard_t *g = llmguard_open(sock);
    struct llmguard_quota_decision d;
    double start = now_s(), max_s = 0;

    for (long i = 0; i < n; i++) {
        double t0 = now_s();
        int rc = llmguard_quota_check_and_reserve(g, wf, NULL, tokens, &d);
        double t = now_s() - t0;
        if (rc != 0) {
            printf("error %d at %ld: %s\n", rc, i, llmguard_last_error(g));
            llmguard_close(g);
            return 1;
        }
        if (t > max_s)
            max_s = t;
    }
    printf("reserved %ld max_ms %.3f total_ms %.3f\n", n, max_s * 1e3,
           (now_s() - start) * 1e3);
    llmguard_close(g);
    return 0;
}

int
main(int argc, char **argv)
{
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "calls") == 0)
        return cmd_calls(argv[2], atol(argv[3]), argc == 5 ? argv[4] : NULL);
    if (argc == 4 && strcmp(argv[1], "named") == 0)
        return cmd_named(argv[2], argv[3]);
    if (argc == 7 && strcmp(argv[1], "qload") == 0)
        return cmd_qload(argv[2], argv[3], atoi(argv[4]),
                         strtoull(argv[5], NULL, 10), atof(argv[6]));
    if (argc == 4 && strcmp(argv[1], "reconnect") == 0)
        return cmd_reconnect(argv[2], atof(argv[3]));
    if (argc == 6 && strcmp(argv[1], "tcp-idle") == 0)
        return cmd_tcp_idle(argv[2], atoi(argv[3]), atoi(argv[4]),
                            atof(argv[5]));
    if (argc == 5 && strcmp(argv[1], "fill") == 0)
        return cmd_fill(argv[2], argv[3], atol(argv[4]));
    if (argc == 6 && strcmp(argv[1], "reserve") == 0)
        return cmd_reserve(argv[2], argv[3], argv[4],
                           strtoull(argv[5], NULL, 10));
    if (argc == 7 && strcmp(argv[1], "qrace") == 0)
        return cmd_qrace(argv[2], argv[3], atoi(argv[4]),
                         strtoull(argv[5], NULL, 10), atoi(argv[6]));
    if (argc == 6 && strcmp(argv[1], "once") == 0)
        return cmd_once(argv[2], argv[3], (uint32_t)atol(argv[4]),
                        atof(argv[5]));
    if (argc == 6 && strcmp(argv[1], "race") == 0)
        return cmd_race(argv[2], argv[3], atoi(argv[4]), atof(argv[5]),
                        false);
    if (argc == 6 && strcmp(argv[1], "span") == 0)
        return cmd_race(argv[2], argv[3], atoi(argv[4]), atof(argv[5]),
                        true);
    if (argc == 4 && strcmp(argv[1], "status") == 0)
        return cmd_status(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "waits") == 0)
        return cmd_waits(argv[2], argv[3], atoi(argv[4]));
    if (argc == 6 && strcmp(argv[1], "reserves") == 0)
        return cmd_reserves(argv[2], argv[3], atol(argv[4]),
                            strtoull(argv[5], NULL, 10));
    fprintf(stderr, "usage: see the comment at the top of acquirer.c\n");
    return 2;
}
