/*
 * stopped - a daemon that stops answering never hangs the library:
 *
 *   stopped SOCKET DAEMON_PID PROVIDER BOUND_S
 *
 * On one handle: a ping works; the daemon is SIGSTOPped; a ping, an
 * acquire that asks to wait 0.5 s and llmguard_execute_with_failover each
 * return within BOUND_S (LLMGUARD_EUNAVAIL; the call is made unguarded in
 * fail-open mode); the daemon gets SIGCONT and the same handle works
 * again.  Prints one "ok"/"not ok" line per check; exits 1 if any failed.
 * The daemon is always continued, also when a check fails.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmguard.h"

static int fails;
static int calls;

static void
check(int ok, const char *what, const char *detail)
{
    printf("%s - %s%s%s\n", ok ? "ok" : "not ok", what, detail[0] ? ": " : "",
           detail);
    fails += !ok;
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static llmguard_outcome
call(const char *provider, void *arg, uint64_t *tokens_used)
{
    calls++;
    *tokens_used = 1;
    return LLMGUARD_OUTCOME_OK;
}

/* rc of a call made while the daemon is stopped, and how long it took. */
static void
check_bounded(int rc, double took_s, double bound_s, const char *what,
              llmguard_t *g)
{
    char detail[512];

    snprintf(detail, sizeof(detail), "rc %d after %.2f s (bound %.2f s): %s",
             rc, took_s, bound_s, llmguard_last_error(g));
    check(rc == LLMGUARD_EUNAVAIL && took_s < bound_s, what, detail);
}

int
main(int argc, char **argv)
{
    struct llmguard_request req = { 0 };
    struct llmguard_result res;
    llmguard_t *g;
    pid_t pid;
    double t0, bound_s;
    int rc;

    if (argc != 5) {
        fprintf(stderr, "usage: stopped SOCKET DAEMON_PID PROVIDER BOUND_S\n");
        return 2;
    }
    pid = (pid_t)atoi(argv[2]);
    bound_s = atof(argv[4]);
    if ((g = llmguard_open(argv[1])) == NULL)
        return 2;
    check(llmguard_ping(g) == 0, "ping while the daemon runs", "");

    kill(pid, SIGSTOP);
    t0 = now_s();
    rc = llmguard_ping(g);
    check_bounded(rc, now_s() - t0, bound_s, "stopped: ping gives up", g);
    t0 = now_s();
    rc = llmguard_acquire(g, argv[3], 1, 0.5, NULL);
    check_bounded(rc, now_s() - t0, bound_s + 0.5,
                  "stopped: an acquire waiting 0.5 s gives up after its "
                  "wait and the timeout", g);
    req.workflow_id = "stopped";
    req.preferred_provider = argv[3];
    t0 = now_s();
    rc = llmguard_execute_with_failover(g, &req, call, NULL, &res);
    {
        char detail[256];
        snprintf(detail, sizeof(detail), "rc %d guarded %d calls %d after "
                 "%.2f s", rc, res.guarded, calls, now_s() - t0);
        check(rc == 0 && res.guarded == 0 && calls == 1 &&
              now_s() - t0 < bound_s, "stopped: fail-open calls the "
              "provider unguarded", detail);
    }
    kill(pid, SIGCONT);

    check(llmguard_ping(g) == 0, "continued: ping works on the same handle",
          llmguard_last_error(g));
    rc = llmguard_execute_with_failover(g, &req, call, NULL, &res);
    check(rc == 0 && res.guarded == 1 && calls == 2,
          "continued: calls are guarded again", llmguard_last_error(g));
    llmguard_close(g);
    return fails ? 1 : 0;
}
