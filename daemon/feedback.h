/*
 * feedback.h - what a provider's rate-limit headers do to a token bucket
 * (llmguardd(8), "Header feedback").
 *
 * Pure module: no I/O, no clock, no allocation; it works on a struct
 * limiter_bucket, whoever owns it (a provider's, or any other bucket the
 * same answer speaks of).
 *
 * Which limit a header speaks of: requests headers the request bucket,
 * tokens headers the LLM-token bucket (Anthropic's input- and
 * output-tokens headers are read but not applied: the bucket counts all
 * tokens).  A reset of 60 s or less speaks of a per-minute limit, the
 * kind a bucket is; a longer one of a longer window (Groq's requests
 * headers are per day).  Whatever its window, what the provider says is
 * left is all the bucket may grant before its reset, so feedback_clamp()
 * applies both; only a per-minute limit is learned as a bucket's
 * (feedback_per_minute()).  A remainder without a reset says nothing
 * of when it ends: it is not applied.
 *
 * The clamp: the provider says that `remaining` were left when it
 * answered, and that its limit is whole again `reset` seconds later.  The
 * grants made from the bucket after the answered permit's were not seen by
 * the provider, so the bucket holds at most remaining - (granted since)
 * (a debt when that is below 0).  And when that is less than one, the
 * bucket's next token comes no sooner than the provider's: the provider
 * refills from remaining to its limit by the reset, so its next token
 * comes at reset * (1 - left) / (limit - remaining), or at the reset
 * itself without a `limit` header; until then the bucket does not refill
 * (limiter_cap's hold), less the time its own refill takes to that token.
 * A provider that refills as the bucket does so costs no hold at all; one
 * that refills slower, or says nothing remains until a reset, holds it.
 *
 * Several hosts: a bucket leased from the fleet's (global.h) is capped
 * here as any other; the fleet's bucket in Redis is capped the same way
 * by global.c, with the fleet's leases since the mark (struct
 * feedback_mark's fleet) for the grants since.
 *
 * Learning: a limit that is not configured is taken from the `limit`
 * header of a per-minute limit: limit / 60 s a second, a burst of the limit
 * (unless a burst is configured).
 */
#ifndef LLMGUARD_FEEDBACK_H
#define LLMGUARD_FEEDBACK_H

#include <stdbool.h>
#include <stdint.h>

#include "limiter.h"
#include "ratehdr.h"

/* What a permit records of its bucket when it is granted. */
struct feedback_mark {
    uint64_t granted;           /* the bucket's request grants, its own in */
    uint64_t llm_granted;
    /* Multi-host mode: the request and LLM tokens the fleet's bucket in
     * Redis had leased, as of the last lease this host got before the
     * grant (buckets_mark, global.c); NAN for a bucket not leased. */
    double fleet, fleet_llm;
};

/* The mark of a grant from b, now; fleet and fleet_llm NAN. */
void feedback_mark(const struct limiter_bucket *b, struct feedback_mark *m);

/* Whether l speaks of a per-minute limit: a reset of 60 s or less, the
 * only kind learned as a bucket's rate. */
bool feedback_per_minute(const struct ratehdr_limit *l);

/* What feedback_clamp did, as bits. */
#define FEEDBACK_CAPPED     0x1     /* the request bucket was capped */
#define FEEDBACK_LLM_CAPPED 0x2     /* the LLM-token bucket was */

/*
 * Fit b to what h says of the limits, for the permit granted at
 * mark m, at now_s (the answer's arrival, on b's clock).  Returns the
 * FEEDBACK_* bits of what it capped (the LLM bucket only with a TPM
 * limit).  Call limiter_pop_* / limiter_next_wakeup afterwards.
 */
unsigned feedback_clamp(struct limiter_bucket *b, const struct ratehdr *h,
                        const struct feedback_mark *m, double now_s);

/*
 * The limits learned from h: *rpm and *tpm set (per minute) from each
 * per-minute limit whose `limit` header came, left untouched otherwise.
 * Returns how many were set.
 */
int feedback_learned(const struct ratehdr *h, double *rpm, double *tpm);

#endif
