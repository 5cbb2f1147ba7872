/*
 * limiter.h — per-provider token buckets with FIFO waiters (llmguardd(8),
 * "Token buckets").
 *
 * A bucket holds request tokens that refill continuously at rate_per_sec up
 * to burst, and optionally a second bucket of LLM tokens (tokens_per_min,
 * refilled at tokens_per_min / 60 per second up to tokens_per_min).  A grant
 * takes n request tokens and llm_tokens LLM tokens together, or nothing.
 *
 * Pure module: no allocation, no I/O, no clock.  Every time is a monotonic
 * `now_s` passed in by the caller, in seconds, never decreasing from one
 * call to the next on the same bucket (an older `now_s` is treated as the
 * newest one seen).  Not thread-safe: one event loop owns a bucket.
 *
 * Fairness: a grant is made at once only when nobody is queued; otherwise
 * the request queues and waiters are served strictly in FIFO order.  An
 * expired or cancelled waiter consumes nothing.
 *
 * Late timers.  A waiter is granted at its instant: the earliest time at
 * which its tokens were there and it was the head of the queue.  A timer
 * that fires late does not move that instant: the grant counts from it,
 * and the bucket refills from it, so the tokens that refilled meanwhile
 * are not lost to the burst cap and a queue is served at the configured
 * rate whatever the burst.  The instant is never more than
 * 1 / rate_per_sec (the refill of one request token) before the now_s at
 * which the grant is made: a timer later than that loses the difference,
 * and a stalled loop cannot release more than one token beyond the burst.
 *
 * Guarantee: over any interval of length T, the tokens granted at instants
 * within it minus the tokens released are at most burst + rate_per_sec * T
 * (plus a rounding slack of 1e-9 of a request).  Counted at the times the
 * grants are made instead, at most burst + 1 + rate_per_sec * T, and
 * burst + rate_per_sec * T over any interval that starts with a full
 * bucket (its first use) or while every timer fires on time.  The LLM
 * bucket alike, with tokens_per_min and tokens_per_min / 60.
 *
 * Caps (limiter_cap: what the provider says remains) only ever take
 * tokens away and holds only put a refill off, so the guarantee above
 * holds as it is with them: a bucket that is capped or held grants no
 * more, over any interval, than one that is not.
 *
 * Event-loop use, one timer per bucket:
 *
 *     r = limiter_try_acquire(b, n, llm, now);
 *     LIMITER_BAD_REQUEST -> reply bad_request
 *     LIMITER_GRANTED     -> reply granted
 *     LIMITER_WAIT        -> timeout 0: reply timeout; else
 *                            limiter_enqueue(b, &req->w, n, llm, deadline)
 *
 *     after any enqueue, cancel, release or reconfigure, and when the timer
 *     fires:
 *         for (;;)
 *             if ((w = limiter_pop_expired(b, now))) reply timeout
 *             else if ((w = limiter_pop_ready(b, now))) reply granted
 *             else break
 *         t = limiter_next_wakeup(b, now);
 *         arm the timer for t (none if t is INFINITY)
 *
 * Popping in that order answers the waiters in the order of their
 * instants: a deadline that comes before the head's instant expires first;
 * a waiter behind the head whose deadline comes after that instant waits
 * until the head has been served.
 */
#ifndef LLMGUARD_LIMITER_H
#define LLMGUARD_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

/* What a bucket is configured with; checked by init and reconfigure. */
struct limiter_config {
    double rate_per_sec;   /* > 0: request-token refill rate */
    double burst;          /* >= 1: capacity ("max_tokens") */
    double tokens_per_min; /* >= 0: LLM-token bucket; 0 = unlimited */
    bool enabled;          /* false: every acquire granted, none consumed */
    bool leased;           /* no refill: tokens come by limiter_add (leases
                              of a global bucket, llmguardd(8)); starts
                              empty */
};

/*
 * One pending acquire.  The caller embeds it in its own request struct,
 * zero-initialised, and owns the memory; it must stay valid while `queued`
 * is true.  The fields are set by limiter_enqueue, read-only to the caller.
 */
struct limiter_waiter {
    TAILQ_ENTRY(limiter_waiter) entry;
    uint32_t n;          /* request tokens wanted */
    uint64_t llm_tokens; /* LLM tokens wanted (ignored without TPM) */
    double deadline_s;   /* given up at this time, on the now_s clock */
    double granted_s;    /* set by limiter_pop_ready: the grant's instant */
    bool queued;         /* in a bucket's queue */
};

TAILQ_HEAD(limiter_waitq, limiter_waiter);

/* A bucket; the caller embeds or allocates it.  Fields are read-only. */
struct limiter_bucket {
    struct limiter_config cfg;
    double tokens;     /* request tokens at last_s (may be a hair < 0) */
    double llm_tokens; /* LLM tokens at last_s (if tokens_per_min > 0) */
    double last_s;     /* time of the last refill */
    double head_s;     /* since when the head waiter has been the head */
    double hold_s;     /* no request-token refill before (limiter_cap) */
    double llm_hold_s; /* no LLM-token refill before */
    uint64_t granted;     /* request tokens granted since init (what a
                             lease's tokens went to, too) */
    uint64_t llm_granted; /* LLM tokens asked by the grants since init
                             (counted with or without a TPM limit) */
    size_t nwaiters;
    struct limiter_waitq waiters;
    double missed;     /* request tokens refused by limiter_try_acquire */
};

/* Result of limiter_try_acquire. */
enum limiter_result {
    LIMITER_BAD_REQUEST = -1, /* n == 0, n > burst, llm_tokens > TPM */
    LIMITER_GRANTED = 0,      /* tokens taken (none when disabled) */
    LIMITER_WAIT = 1,         /* nothing taken: queue or give up */
};

/*
 * Set up `b` full (burst request tokens, tokens_per_min LLM tokens) with an
 * empty queue at now_s.  Returns -1, leaving `b` untouched, if `cfg` is out
 * of range (see struct limiter_config); 0 otherwise.
 */
int limiter_init(struct limiter_bucket *b, const struct limiter_config *cfg,
                 double now_s);

/*
 * Apply a new config (reload): the fill is kept, refilled up to now_s at
 * the old rate, then clamped to the new capacities; an LLM bucket that
 * appears starts full.  Queued waiters that no longer fit (n > burst or
 * llm_tokens > tokens_per_min) are expired: limiter_pop_expired returns
 * them at once (the caller may answer them bad_request instead of timeout).
 * Returns -1, leaving `b` untouched, if `cfg` is out of range; 0 otherwise.
 */
int limiter_reconfigure(struct limiter_bucket *b,
                        const struct limiter_config *cfg, double now_s);

/*
 * Take n request tokens and llm_tokens LLM tokens now if both suffice and
 * nobody is queued (no overtaking).  When disabled, grant without taking
 * anything.  Bad requests are rejected in both modes.  A refused or bad
 * request changes nothing.
 */
enum limiter_result limiter_try_acquire(struct limiter_bucket *b, uint32_t n,
                                        uint64_t llm_tokens, double now_s);

/*
 * Queue `w` at the tail for n / llm_tokens until deadline_s.  `w` must not
 * be queued already.  Returns -1 (nothing queued) for a bad request, as in
 * limiter_try_acquire; 0 otherwise.  Call limiter_pop_* afterwards.
 */
int limiter_enqueue(struct limiter_bucket *b, struct limiter_waiter *w,
                    uint32_t n, uint64_t llm_tokens, double deadline_s);

/* Remove `w` at now_s (its connection closed); nothing consumed.  No-op if
 * unqueued. */
void limiter_cancel(struct limiter_bucket *b, struct limiter_waiter *w,
                    double now_s);

/*
 * Remove and return a waiter that no longer fits the config, or whose
 * deadline has come (deadline_s <= now_s) no later than the head's
 * instant, wherever it is in the queue; nothing consumed.  NULL when there
 * is none.  Call it before limiter_pop_ready (see above), so that an
 * expired head never blocks those behind it; a waiter that could be served
 * at exactly its deadline times out.
 */
struct limiter_waiter *limiter_pop_expired(struct limiter_bucket *b,
                                           double now_s);

/*
 * If the head waiter's instant has come (it is <= now_s) and is before its
 * deadline, take its tokens as of that instant, set its granted_s to it,
 * remove it and return it; else NULL.  Called again it serves the next one:
 * waiters are served in strict FIFO order, and one whose deadline came
 * first is left to limiter_pop_expired.  Disabled, the head is granted at
 * now_s.
 */
struct limiter_waiter *limiter_pop_ready(struct limiter_bucket *b,
                                         double now_s);

/* Remove and return the head without granting it, or NULL (teardown). */
struct limiter_waiter *limiter_drain(struct limiter_bucket *b);

/*
 * The earliest time >= now_s at which limiter_pop_ready or
 * limiter_pop_expired can return a waiter: the head's instant or the
 * earliest deadline, whichever is first; INFINITY with no waiters.
 * Exact: limiter_pop_ready at the returned time serves the head (unless
 * its deadline is that time), provided the bucket was not changed in
 * between.
 */
double limiter_next_wakeup(const struct limiter_bucket *b, double now_s);

/*
 * Charge delta more LLM tokens (negative: give back) once an attempt says
 * what it really used instead of what its grant took.  The fill is capped
 * at tokens_per_min and may go below 0, to at most -tokens_per_min: the
 * provider counted those tokens, so later grants wait until they have
 * refilled, but one wild report cannot close the bucket for long.  A
 * refund may make the head servable.  Nothing without an LLM bucket, or
 * while disabled (grants took nothing then).
 */
void limiter_charge_llm(struct limiter_bucket *b, double delta, double now_s);

/*
 * Give back n request tokens and llm_tokens LLM tokens (an unused permit),
 * each capped at its capacity.  May make the head servable.
 */
void limiter_release(struct limiter_bucket *b, uint32_t n, uint64_t llm_tokens,
                     double now_s);

/*
 * What the provider says remains: the request bucket (llm false) or the
 * LLM-token bucket (llm true, ignored without a TPM limit) holds at most
 * `most` tokens from now_s on (it may go below 0: a debt that refills
 * first), and does not refill before hold_until_s (a hold already set
 * that ends later stays).  Only takes away: never adds a token, never
 * brings a refill forward.  NaN arguments change nothing.  Call
 * limiter_pop_* and limiter_next_wakeup afterwards, as after any change.
 */
void limiter_cap(struct limiter_bucket *b, bool llm, double most,
                 double hold_until_s, double now_s);

/*
 * Add tokens and llm LLM tokens (a lease), each capped at its capacity;
 * limiter_take_back takes up to that many away (a lease that lapsed).
 * Both may make the head servable or not: kick the bucket afterwards.
 */
void limiter_add(struct limiter_bucket *b, double tokens, double llm,
                 double now_s);
void limiter_take_back(struct limiter_bucket *b, double tokens, double llm,
                       double now_s);

/* Request tokens available at now_s (refilled, >= 0); b is not changed. */
double limiter_available(const struct limiter_bucket *b, double now_s);

/* LLM tokens available at now_s; INFINITY without a TPM limit. */
double limiter_available_llm(const struct limiter_bucket *b, double now_s);

/* Number of queued waiters. */
size_t limiter_waiters(const struct limiter_bucket *b);

#endif /* LLMGUARD_LIMITER_H */
