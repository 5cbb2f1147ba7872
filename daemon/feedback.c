/* feedback.c - providers' rate-limit headers applied to a bucket; see
 * feedback.h. */
#include <math.h>

#include "feedback.h"

void
feedback_mark(const struct limiter_bucket *b, struct feedback_mark *m)
{
    m->granted = b->granted;
    m->llm_granted = b->llm_granted;
    m->fleet = m->fleet_llm = NAN;
}

bool
feedback_per_minute(const struct ratehdr_limit *l)
{
    return l->has_reset && l->reset_s <= 60;
}

/*
 * The cap and hold of one bucket (feedback.h): at most remaining - since;
 * with less than one left, its next token no sooner than the provider's.
 * rate is the bucket's refill per second.
 */
static void
clamp_one(struct limiter_bucket *b, bool llm, const struct ratehdr_limit *l,
          uint64_t since, double rate, double now_s)
{
    double most = l->remaining - (double)since;
    double fill = fmin(most, llm ? limiter_available_llm(b, now_s) :
                                   limiter_available(b, now_s));
    double next_s, hold = -INFINITY;

    if (most < 1) {
        /* The provider refills from remaining to its limit by the reset:
         * its next token then; without a limit, at the reset. */
        next_s = now_s + l->reset_s;
        if (l->has_limit && l->limit > l->remaining && l->reset_s > 0)
            next_s = fmin(next_s, now_s + (1 - most) * l->reset_s /
                                  (l->limit - l->remaining));
        hold = next_s - (1 - fill) / rate;
    }
    limiter_cap(b, llm, most, hold > now_s ? hold : -INFINITY, now_s);
}

/* Grants since a mark; 0 for a mark of another bucket's life (a provider
 * removed and configured again). */
static uint64_t
since(uint64_t now_count, uint64_t mark)
{
    return now_count >= mark ? now_count - mark : 0;
}

unsigned
feedback_clamp(struct limiter_bucket *b, const struct ratehdr *h,
               const struct feedback_mark *m, double now_s)
{
    const struct ratehdr_limit *rq = &h->kind[RATEHDR_REQUESTS];
    const struct ratehdr_limit *tk = &h->kind[RATEHDR_TOKENS];
    unsigned did = 0;

    if (!b->cfg.enabled)
        return 0;
    if (rq->has_remaining && rq->has_reset) {
        clamp_one(b, false, rq, since(b->granted, m->granted),
                  b->cfg.rate_per_sec, now_s);
        did |= FEEDBACK_CAPPED;
    }
    if (tk->has_remaining && tk->has_reset && b->cfg.tokens_per_min > 0) {
        clamp_one(b, true, tk, since(b->llm_granted, m->llm_granted),
                  b->cfg.tokens_per_min / 60.0, now_s);
        did |= FEEDBACK_LLM_CAPPED;
    }
    return did;
}

int
feedback_learned(const struct ratehdr *h, double *rpm, double *tpm)
{
    const struct ratehdr_limit *rq = &h->kind[RATEHDR_REQUESTS];
    const struct ratehdr_limit *tk = &h->kind[RATEHDR_TOKENS];
    int n = 0;

    /* A limit of 0 would stop the provider for good: not learned. */
    if (rq->has_limit && rq->limit >= 1 && feedback_per_minute(rq)) {
        *rpm = rq->limit;
        n++;
    }
    if (tk->has_limit && tk->limit >= 1 && feedback_per_minute(tk)) {
        *tpm = tk->limit;
        n++;
    }
    return n;
}
