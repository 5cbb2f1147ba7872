/*
 * buckets.h - the event-loop glue of the limiter: one token bucket and one
 * timer per provider, and the requests waiting in their queues.
 *
 * A waiting request is a struct waiter: the limiter's intrusive waiter,
 * the connection it answers, and a callback run once, when it is granted
 * or given up.  A waiter whose connection closes leaves its queue at once
 * and consumes nothing.
 */
#ifndef LLMGUARD_BUCKETS_H
#define LLMGUARD_BUCKETS_H

#include <stdbool.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "config.h"
#include "limiter.h"

struct conn;
struct server;
struct waiter;

struct provider {
    char name[CONFIG_NAME_MAX];
    struct limiter_bucket bucket;
    struct event *timer;        /* armed for the head waiter, or a deadline */
    struct server *srv;
};

/*
 * Called once per waiter: granted or not, at now_s (monotonic).  w->conn is
 * NULL when its connection closed (nothing to answer).  The waiter is freed
 * after the call: it must have been allocated with malloc/calloc.
 */
typedef void (*waiter_done_fn)(struct waiter *w, bool granted, double now_s);

struct waiter {
    struct limiter_waiter lw;       /* first: limiter gives it back */
    TAILQ_ENTRY(waiter) conn_entry;
    struct conn *conn;
    struct provider *prov;
    uint64_t id;                    /* the request's id */
    double started_s;
    waiter_done_fn done;
    void *arg;                      /* the caller's */
};
TAILQ_HEAD(waiter_list, waiter);

/* The limiter settings of a provider's config. */
void buckets_limiter_config(const struct config *cfg,
                            const struct provider_config *pc,
                            struct limiter_config *lc);
/* Build the providers of cfg; -1 (logged) on failure. */
int buckets_init(struct server *srv);
/*
 * Apply a new configuration: providers that stay keep their fill (clamped)
 * and their waiters; new ones start full; removed ones answer their waiters
 * with "not granted".  Returns -1 (logged) on failure, leaving the old set.
 */
int buckets_reconfigure(struct server *srv, const struct config *cfg);
void buckets_free(struct server *srv);

/* The provider named name[0..len-1], or NULL. */
struct provider *buckets_find(struct server *srv, const char *name,
                              size_t len);

/*
 * Queue w (its lw.n/llm_tokens set through the arguments) on prov until
 * deadline_s.  The caller has checked that it cannot be granted now.
 */
void buckets_wait(struct provider *prov, struct waiter *w, uint32_t n,
                  uint64_t llm_tokens, double deadline_s);

/* Grant what can be granted, expire what is due, re-arm the timer. */
void buckets_kick(struct provider *prov);

/* The connection closes: every waiter of it leaves its queue and is freed. */
void buckets_cancel_conn(struct conn *c);

#endif
