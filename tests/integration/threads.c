/*
 * threads - one libllmguard handle shared by two threads.
 *
 *   threads SOCKET ROUNDS
 *       Two threads share a handle.  In each round each makes a call that
 *       fails with a message of its own, alternately from the daemon (an
 *       unknown provider named for the thread) and from the library (a
 *       bad argument that only this thread passes), checks that
 *       llmguard_last_error() gives its message while the other thread
 *       goes on calling, pings, and checks that the message is then empty.
 *       Prints "ok ROUNDS", or the first mismatch and exits 1.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmguard.h"

struct worker {
    llmguard_t *g;
    const char *provider;   /* unknown to the daemon, named for the thread */
    long rounds;
    int id;
    char bad[512];          /* the first mismatch */
};

/* A call that the library refuses itself, with a message only id gives. */
static int
bad_argument(llmguard_t *g, int id, const char **expect)
{
    struct llmguard_quota_status st;

    if (id == 0) {
        *expect = "provider and timeout_s";
        return llmguard_acquire(g, NULL, 1, 0, NULL);
    }
    *expect = "give a workflow or a tenant id";
    return llmguard_quota_status(g, NULL, NULL, &st);
}

/* Check that the message of w's last call still contains expect. */
static int
check(struct worker *w, long round, const char *expect)
{
    const char *msg = llmguard_last_error(w->g);

    for (int i = 0; i < 50; i++)
        sched_yield();      /* let the other thread call meanwhile */
    if ((expect[0] == '\0' && msg[0] == '\0') ||
        (expect[0] != '\0' && strstr(msg, expect) != NULL))
        return 0;
    snprintf(w->bad, sizeof(w->bad), "thread %d round %ld: expected "
             "\"%s\", got \"%s\"", w->id, round, expect, msg);
    return -1;
}

static void *
work(void *arg)
{
    struct worker *w = arg;

    for (long i = 0; i < w->rounds; i++) {
        const char *expect = w->provider;
        int rc;

        if (i % 2 == 0)
            rc = llmguard_acquire(w->g, w->provider, 1, 0, NULL);
        else
            rc = bad_argument(w->g, w->id, &expect);
        if (rc == 0) {
            snprintf(w->bad, sizeof(w->bad), "thread %d round %ld: a bad "
                     "call succeeded", w->id, i);
            break;
        }
        if (check(w, i, expect) < 0)
            break;
        if ((rc = llmguard_ping(w->g)) != 0) {
            snprintf(w->bad, sizeof(w->bad), "thread %d round %ld: ping: "
                     "%s", w->id, i, llmguard_strerror(rc));
            break;
        }
        if (check(w, i, "") < 0)
            break;
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    struct worker w[2] = {
        { .provider = "nosuch_thread_a", .id = 0 },
        { .provider = "nosuch_thread_b", .id = 1 },
    };
    pthread_t tid[2];
    llmguard_t *g;
    int rc = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: threads SOCKET ROUNDS\n");
        return 2;
    }
    if ((g = llmguard_open(argv[1])) == NULL) {
        fprintf(stderr, "threads: llmguard_open failed\n");
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        w[i].g = g;
        w[i].rounds = atol(argv[2]);
        if (pthread_create(&tid[i], NULL, work, &w[i]) != 0) {
            fprintf(stderr, "threads: pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(tid[i], NULL);
        if (w[i].bad[0] != '\0') {
            printf("%s\n", w[i].bad);
            rc = 1;
        }
    }
    if (rc == 0)
        printf("ok %s\n", argv[2]);
    llmguard_close(g);
    return rc;
}
