/*
 * lease.h - the tokens a daemon holds from a global bucket (llmguardd(8),
 * "Several hosts").
 *
 * Tokens come from Redis in leases, each good for LLMGUARD_LEASE_MS from
 * the moment it was asked for; the daemon's local bucket (limiter.h,
 * leased) holds their sum and serves its FIFO waiters from it.  What the
 * bucket used is charged to the oldest lease first; what a lease still
 * holds when it ends lapses (is taken out of the bucket), so no token is
 * used later than one lease after Redis handed it out.  Hence, across
 * daemons, grants in any interval T <= burst + rate x (T + lease).
 *
 * Demand: a decaying count (time constant 1 s) of the tokens taken and
 * refused at the bucket, the recent rate; a daemon asks for what its queue
 * waits for plus that rate over one lease, less what it holds, within the
 * bucket's capacity.  While demand climbs from nothing (a load begins, or
 * returns after a pause of 0.25 s or more) the count holds only part of
 * the rate, and a lease sized to it runs dry before the next one arrives:
 * the new part of the rate is scaled up by what the count's age leaves out
 * (lease_rates), so from its first quarter lease (and 8 calls) a new load
 * is leased its whole rate.
 *
 * Pure module: no I/O, no clock (times are monotonic seconds passed in).
 */
#ifndef LLMGUARD_LEASE_H
#define LLMGUARD_LEASE_H

#include <stddef.h>

#define LEASE_SLOTS 32

struct lease_slot {
    double tokens;      /* request tokens left of this lease */
    double llm;         /* LLM tokens left */
    double ends_s;
};

struct lease {
    struct lease_slot slot[LEASE_SLOTS];    /* oldest first */
    size_t n;
    double held, held_llm;      /* the sums of the slots */
    double rate, rate_llm;      /* recent use, per second */
    double seen_taken, seen_missed;     /* the bucket's counters, last seen */
    double last_s;
    double since_s;     /* when demand last started afresh */
    double rate0, rate0_llm;    /* the rates then, of the demand before */
    double asked_s;     /* when demand was last seen */
    unsigned calls;     /* syncs that saw demand since since_s */
};

void lease_init(struct lease *l, double now_s);

/*
 * The bucket now holds avail request tokens and avail_llm LLM tokens, and
 * has taken / refused taken and missed request tokens so far (struct
 * limiter_bucket): charge what was used to the oldest leases (what came
 * back, a release, to the newest), and update the demand.
 */
void lease_sync(struct lease *l, double avail, double avail_llm,
                double taken, double missed, double now_s);

/* A lease from Redis: tokens and llm, good until ends_s.  Returns -1 (the
 * caller does not ask while full) when every slot is in use. */
int lease_add(struct lease *l, double tokens, double llm, double ends_s);

/* End the leases due at now_s: *tokens and *llm are what they still held,
 * to be taken out of the bucket. */
void lease_expire(struct lease *l, double now_s, double *tokens,
                  double *llm);

/* When the oldest lease ends; INFINITY when none is held. */
double lease_next_end(const struct lease *l);

/*
 * The rates a lease is sized to (request and LLM tokens per second): what
 * is left of the demand before l->since_s, plus the count since then over
 * 1 - e^(-age/tau) (age: since l->since_s, a quarter of lease_s at least),
 * the share of a steady rate the count holds after that age; the count as
 * it is until demand was seen in 8 syncs (calls) since l->since_s.
 */
void lease_rates(const struct lease *l, double lease_s, double *rate,
                 double *rate_llm);

/*
 * What to ask for: queued request tokens (and queued_llm LLM tokens) plus
 * the rate of lease_rates() over lease_s, less what is held, within burst
 * (and tpm; 0: no LLM bucket).  0 when that is less than one token and
 * nothing is queued, or when every slot is in use.
 */
void lease_want(const struct lease *l, double queued, double queued_llm,
                double lease_s, double burst, double tpm, double *want,
                double *want_llm);

#endif
