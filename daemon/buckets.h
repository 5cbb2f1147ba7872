/*
 * buckets.h - the event-loop glue of the limiter: one token bucket and one
 * timer per provider, and the requests waiting in their queues.
 *
 * A bucket's timer is a timerfd of its own (CLOCK_MONOTONIC, armed for the
 * absolute wake-up time the limiter gives, to the nanosecond), watched by
 * the event loop: it fires on time whatever the loop's own timers do, and
 * it costs a system call only when the wake-up time changes.
 *
 * A waiting request is a struct waiter: the limiter's intrusive waiter,
 * the connection it answers, and a callback run once, when it is granted
 * or given up.  A waiter whose connection closes leaves its queue at once
 * and consumes nothing: buckets_drop_conn() is the close hook of the
 * connection slot given to buckets_new().
 */
#ifndef LLMGUARD_BUCKETS_H
#define LLMGUARD_BUCKETS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "config.h"
#include "feedback.h"
#include "limiter.h"
#include "ratehdr.h"

struct buckets;
struct conn;
struct waiter;

/* Where a limit of a provider comes from (status: "source"). */
enum limit_source {
    LIMIT_NONE,                 /* neither configured nor learned: none */
    LIMIT_CONFIGURED,
    LIMIT_LEARNED,              /* from the provider's headers */
};

struct provider {
    char name[CONFIG_NAME_MAX];
    struct limiter_bucket bucket;
    struct limiter_config configured;   /* what the configuration says */
    bool learn_rate;            /* RATE_PER_SEC=learn */
    bool learn_tpm;             /* no TOKENS_PER_MIN given */
    bool burst_given;           /* a BURST given stays the burst */
    double learned_rpm;         /* per minute; 0: not learned (yet) */
    double learned_tpm;
    int timer_fd;               /* timerfd: the head's instant, a deadline */
    struct event *timer;        /* read event on timer_fd */
    double armed_s;             /* what timer_fd is armed for; NAN: not */
    bool closed;                /* multi-host fallback "closed": busy */
    /* Multi-host mode, a leased bucket: the request and LLM tokens the
     * fleet's bucket had leased as of this host's last lease (global.c
     * keeps them; a grant's mark records them); NAN while unknown. */
    double fleet_leased, fleet_leased_llm;
    struct buckets *owner;
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

/* The providers of cfg, their waiters kept in connection slot conn_slot;
 * NULL (logged) on failure. */
struct buckets *buckets_new(struct event_base *base, const struct config *cfg,
                            int conn_slot);
/* The same for cfg's model deployments, one bucket each, named by alias
 * (the waiters may share the providers' slot). */
struct buckets *buckets_new_models(struct event_base *base,
                                   const struct config *cfg, int conn_slot);
/* The rate and burst of a model bucket without an RPM. */
#define BUCKETS_UNLIMITED 1e15
/*
 * Apply a new configuration: providers that stay keep their fill (clamped)
 * and their waiters; new ones start full; removed ones answer their waiters
 * with "not granted".  Returns -1 (logged) on failure, leaving the old set.
 * Providers are in cfg's order (priority, then name), as the router's;
 * model buckets alike, in cfg's order of models.
 */
int buckets_reconfigure(struct buckets *b, const struct config *cfg);
/* Answer every waiter "not granted", free everything. */
void buckets_free(struct buckets *b);

size_t buckets_count(const struct buckets *b);
/* Provider i (0 <= i < buckets_count()), valid until the next reconfigure. */
struct provider *buckets_at(struct buckets *b, size_t i);
/* The index of p in the current set. */
size_t buckets_index(const struct buckets *b, const struct provider *p);
/* The provider named name[0..len-1], or NULL. */
struct provider *buckets_find(struct buckets *b, const char *name, size_t len);

/*
 * Queue w (w->conn set; its lw.n/llm_tokens set through the arguments) on
 * prov until deadline_s.  The caller has checked that it cannot be granted
 * now.  Returns 0, or -1 when out of memory (w untouched).
 */
int buckets_wait(struct provider *prov, struct waiter *w, uint32_t n,
                 uint64_t llm_tokens, double deadline_s);

/*
 * Limits learned from prov's headers, per minute (0: none this time): each
 * taken where prov has no configured one, the bucket reconfigured (its
 * fill kept, clamped).  Returns whether anything changed.  Learned limits
 * survive a reload while the provider still has none configured.
 */
bool buckets_learn(struct provider *prov, double rpm, double tpm);

/* Where prov's request rate and its TPM limit come from. */
enum limit_source buckets_rate_source(const struct provider *prov);
enum limit_source buckets_tpm_source(const struct provider *prov);
/* "none", "configured", "learned". */
const char *buckets_source_name(enum limit_source s);

/* Grant what can be granted, expire what is due, re-arm the timer. */
void buckets_kick(struct provider *prov);

/*
 * Called at the end of every buckets_kick(), with the provider kicked:
 * the multi-host layer (global.c) follows the demand and feeds the bucket
 * its leases from there.  One hook; NULL to remove it.
 */
typedef void (*buckets_hook_fn)(struct provider *prov, void *arg);
void buckets_set_hook(struct buckets *b, buckets_hook_fn fn, void *arg);

/* The mark of a grant just made from prov (feedback.h): with the fleet's
 * count of leased tokens while prov is leased. */
void buckets_mark(const struct provider *prov, struct feedback_mark *m);

/*
 * A provider's rate-limit headers h, of the permit granted at mark m,
 * arrived at now_s: fit prov's bucket to them (feedback_clamp), tell the
 * feedback hook what it capped (FEEDBACK_* bits; the multi-host layer
 * caps the fleet's bucket in Redis too), and kick it.  Returns the bits.
 */
unsigned buckets_feedback(struct provider *prov, const struct ratehdr *h,
                          const struct feedback_mark *m, double now_s);

/* Called by buckets_feedback() when it capped prov's bucket, before the
 * kick.  One hook; NULL to remove it. */
typedef void (*buckets_feedback_fn)(struct provider *prov, unsigned capped,
                                    const struct ratehdr *h,
                                    const struct feedback_mark *m,
                                    double now_s, void *arg);
void buckets_set_feedback_hook(struct buckets *b, buckets_feedback_fn fn,
                               void *arg);

/* Close hook: every waiter of the connection leaves its queue, is
 * answered "not granted" with no connection, and is freed. */
void buckets_drop_conn(void *state);

#endif
