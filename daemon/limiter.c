/*
 * limiter.c — token buckets with FIFO waiters; see limiter.h for the
 * contract.
 *
 * The fill is stored as of last_s and only written when tokens are taken,
 * released or reconfigured; every other question ("how many at t?", "when
 * is the head servable?") is answered by the same pure function of the
 * stored state, so the wake-up time computed by limiter_next_wakeup is
 * exactly a time at which limiter_pop_ready will serve the head.  A grant
 * made late is taken as of the head's instant (instant_of() below), which
 * is never before last_s, so the stored state only moves forward.
 */
#include <assert.h>
#include <math.h>
#include <stddef.h>

#include "limiter.h"

/*
 * Relative slack when comparing a fill with a need: absorbs rounding error
 * of repeated refills (0.1 s steps are not exact) without giving away any
 * measurable amount (the fill may end a hair below 0, and the debt stays).
 */
#define LIMITER_EPS 1e-9

/* Whether cfg is in range (NaN fails every comparison). */
static bool
config_ok(const struct limiter_config *cfg)
{
    return isfinite(cfg->rate_per_sec) && cfg->rate_per_sec > 0 &&
           isfinite(cfg->burst) && cfg->burst >= 1 &&
           isfinite(cfg->tokens_per_min) && cfg->tokens_per_min >= 0;
}

static bool
has_tpm(const struct limiter_bucket *b)
{
    return b->cfg.tokens_per_min > 0;
}

/* Whether a request for n / llm_tokens could ever be granted by b. */
static bool
fits(const struct limiter_bucket *b, uint32_t n, uint64_t llm_tokens)
{
    if (n == 0 || n > b->cfg.burst)
        return false;
    return !has_tpm(b) || (double)llm_tokens <= b->cfg.tokens_per_min;
}

/* Since when the request tokens refill: the last refill or the hold. */
static double
refill_from(const struct limiter_bucket *b)
{
    return fmax(b->last_s, b->hold_s);
}

static double
llm_refill_from(const struct limiter_bucket *b)
{
    return fmax(b->last_s, b->llm_hold_s);
}

/* Request tokens at time t, from the stored state. */
static double
tokens_at(const struct limiter_bucket *b, double t)
{
    double from = refill_from(b);
    double dt_s = t > from && !b->cfg.leased ? t - from : 0;

    return fmin(b->cfg.burst, b->tokens + b->cfg.rate_per_sec * dt_s);
}

/* LLM tokens at time t, from the stored state (TPM enabled). */
static double
llm_tokens_at(const struct limiter_bucket *b, double t)
{
    double from = llm_refill_from(b);
    double dt_s = t > from && !b->cfg.leased ? t - from : 0;
    double cap = b->cfg.tokens_per_min;

    return fmin(cap, b->llm_tokens + cap / 60.0 * dt_s);
}

/* Whether a fill of `have` covers `need`, up to rounding error. */
static bool
enough(double have, double need)
{
    return need <= 0 || have >= need - LIMITER_EPS * fmax(need, 1.0);
}

/* Whether both buckets would cover n / llm_tokens at time t. */
static bool
can_take_at(const struct limiter_bucket *b, double t, uint32_t n,
            uint64_t llm_tokens)
{
    if (!enough(tokens_at(b, t), n))
        return false;
    return !has_tpm(b) || enough(llm_tokens_at(b, t), (double)llm_tokens);
}

/* Bring the stored state forward to now_s (never backwards). */
static void
refill(struct limiter_bucket *b, double now_s)
{
    if (now_s <= b->last_s)
        return;
    b->tokens = tokens_at(b, now_s);
    if (has_tpm(b))
        b->llm_tokens = llm_tokens_at(b, now_s);
    b->last_s = now_s;
}

/* Refill to now_s and take n / llm_tokens, which can_take_at allowed. */
static void
take(struct limiter_bucket *b, uint32_t n, uint64_t llm_tokens, double now_s)
{
    refill(b, now_s);
    b->tokens -= n;
    if (has_tpm(b))
        b->llm_tokens -= (double)llm_tokens;
    b->granted += n;
    b->llm_granted += llm_tokens;
}

/* Remove w; when it was the head, the next one is the head from since_s
 * on. */
static void
dequeue(struct limiter_bucket *b, struct limiter_waiter *w, double since_s)
{
    assert(w->queued && b->nwaiters > 0);
    if (w == TAILQ_FIRST(&b->waiters))
        b->head_s = fmax(b->head_s, since_s);
    TAILQ_REMOVE(&b->waiters, w, entry);
    w->queued = false;
    b->nwaiters--;
}

static bool
expired(const struct limiter_bucket *b, const struct limiter_waiter *w,
        double now_s)
{
    return w->deadline_s <= now_s || !fits(b, w->n, w->llm_tokens);
}

/*
 * Earliest time >= now_s at which waiter w can be served: the time the
 * deficit takes to refill, then stepped up ulp by ulp until can_take_at
 * agrees, so rounding never leaves the head short at that time.
 */
static double
ready_time(const struct limiter_bucket *b, const struct limiter_waiter *w,
           double now_s)
{
    double t = fmax(now_s, b->last_s);
    double deficit;

    if (can_take_at(b, t, w->n, w->llm_tokens))
        return t;
    if (b->cfg.leased)
        return INFINITY;    /* until a lease adds tokens */
    deficit = w->n - b->tokens;
    t = fmax(t, refill_from(b) + deficit / b->cfg.rate_per_sec);
    if (has_tpm(b)) {
        deficit = (double)w->llm_tokens - b->llm_tokens;
        t = fmax(t, llm_refill_from(b) +
                    deficit / (b->cfg.tokens_per_min / 60.0));
    }
    /* The fill is monotone in t and reaches the need, so this ends. */
    while (!can_take_at(b, t, w->n, w->llm_tokens))
        t = nextafter(t, INFINITY);
    return t;
}

/*
 * The instant of the head waiter w, as seen at now_s (limiter.h, "Late
 * timers"): the earliest time its tokens were there while it was the head,
 * but not more than one request token's refill before now_s.  Later than
 * now_s when it is not servable yet.  Never before last_s.
 */
static double
instant_of(const struct limiter_bucket *b, const struct limiter_waiter *w,
           double now_s)
{
    double t = ready_time(b, w, b->head_s);

    return fmax(t, now_s - 1.0 / b->cfg.rate_per_sec);
}

/* Set up a full bucket with an empty queue. */
int
limiter_init(struct limiter_bucket *b, const struct limiter_config *cfg,
             double now_s)
{
    if (!config_ok(cfg))
        return -1;
    b->cfg = *cfg;
    b->tokens = cfg->leased ? 0 : cfg->burst;
    b->llm_tokens = cfg->leased ? 0 : cfg->tokens_per_min;
    b->missed = 0;
    b->last_s = now_s;
    b->head_s = now_s;
    b->hold_s = b->llm_hold_s = -INFINITY;
    b->granted = b->llm_granted = 0;
    b->nwaiters = 0;
    TAILQ_INIT(&b->waiters);
    return 0;
}

/* Apply a reloaded config, keeping the fill clamped to the new sizes. */
int
limiter_reconfigure(struct limiter_bucket *b, const struct limiter_config *cfg,
                    double now_s)
{
    bool had_tpm = has_tpm(b);

    if (!config_ok(cfg))
        return -1;
    refill(b, now_s);
    b->cfg = *cfg;
    b->tokens = fmin(b->tokens, cfg->burst);
    if (has_tpm(b))
        b->llm_tokens = had_tpm ? fmin(b->llm_tokens, cfg->tokens_per_min)
                                : cfg->tokens_per_min;
    return 0;
}

/* Grant at once if both buckets suffice and nobody is queued. */
enum limiter_result
limiter_try_acquire(struct limiter_bucket *b, uint32_t n, uint64_t llm_tokens,
                    double now_s)
{
    if (!fits(b, n, llm_tokens))
        return LIMITER_BAD_REQUEST;
    if (!b->cfg.enabled)
        return LIMITER_GRANTED;
    if (!TAILQ_EMPTY(&b->waiters) || !can_take_at(b, now_s, n, llm_tokens)) {
        b->missed += n;
        return LIMITER_WAIT;
    }
    take(b, n, llm_tokens, now_s);
    return LIMITER_GRANTED;
}

/* Queue a waiter at the tail. */
int
limiter_enqueue(struct limiter_bucket *b, struct limiter_waiter *w, uint32_t n,
                uint64_t llm_tokens, double deadline_s)
{
    assert(!w->queued);
    assert(!isnan(deadline_s));
    if (!fits(b, n, llm_tokens))
        return -1;
    w->n = n;
    w->llm_tokens = llm_tokens;
    w->deadline_s = deadline_s;
    w->granted_s = NAN;
    w->queued = true;
    if (TAILQ_EMPTY(&b->waiters))
        b->head_s = b->last_s;
    TAILQ_INSERT_TAIL(&b->waiters, w, entry);
    b->nwaiters++;
    return 0;
}

/* Drop a waiter whose requester went away. */
void
limiter_cancel(struct limiter_bucket *b, struct limiter_waiter *w,
               double now_s)
{
    if (w->queued)
        dequeue(b, w, now_s);
}

/* Remove the first waiter, in queue order, that expired before the head's
 * instant. */
struct limiter_waiter *
limiter_pop_expired(struct limiter_bucket *b, double now_s)
{
    struct limiter_waiter *w, *head = TAILQ_FIRST(&b->waiters);
    double by_s = now_s;

    if (head == NULL)
        return NULL;
    if (b->cfg.enabled && fits(b, head->n, head->llm_tokens))
        by_s = fmin(by_s, instant_of(b, head, fmax(now_s, b->last_s)));
    TAILQ_FOREACH(w, &b->waiters, entry)
    {
        if (!fits(b, w->n, w->llm_tokens)) {
            dequeue(b, w, b->last_s);
            return w;
        }
        if (w->deadline_s <= by_s) {
            dequeue(b, w, w->deadline_s);
            return w;
        }
    }
    return NULL;
}

/* Serve the head waiter, as of its instant, if that has come. */
struct limiter_waiter *
limiter_pop_ready(struct limiter_bucket *b, double now_s)
{
    struct limiter_waiter *w = TAILQ_FIRST(&b->waiters);
    double now = fmax(now_s, b->last_s), t = now;

    if (w == NULL)
        return NULL;
    if (b->cfg.enabled) {
        if (!fits(b, w->n, w->llm_tokens))
            return NULL;
        t = instant_of(b, w, now);
        if (t > now || w->deadline_s <= t)
            return NULL;
        take(b, w->n, w->llm_tokens, t);
    }
    w->granted_s = t;
    dequeue(b, w, t);
    return w;
}

/* Remove the head without serving it. */
struct limiter_waiter *
limiter_drain(struct limiter_bucket *b)
{
    struct limiter_waiter *w = TAILQ_FIRST(&b->waiters);

    if (w != NULL)
        dequeue(b, w, b->last_s);
    return w;
}

/* When the single timer of this bucket should next fire. */
double
limiter_next_wakeup(const struct limiter_bucket *b, double now_s)
{
    const struct limiter_waiter *w, *head = TAILQ_FIRST(&b->waiters);
    double t = INFINITY;

    if (head == NULL)
        return INFINITY;
    if (!b->cfg.enabled)
        return now_s;
    TAILQ_FOREACH(w, &b->waiters, entry)
    {
        if (expired(b, w, now_s))
            return now_s;
        t = fmin(t, w->deadline_s);
    }
    return fmin(t, fmax(now_s, instant_of(b, head, now_s)));
}

/* Give tokens back, capped at the capacities. */
void
limiter_release(struct limiter_bucket *b, uint32_t n, uint64_t llm_tokens,
                double now_s)
{
    refill(b, now_s);
    b->tokens = fmin(b->cfg.burst, b->tokens + n);
    if (has_tpm(b))
        b->llm_tokens =
            fmin(b->cfg.tokens_per_min, b->llm_tokens + (double)llm_tokens);
}

/* Cut a fill to `most` and hold its refill until hold_until_s. */
void
limiter_cap(struct limiter_bucket *b, bool llm, double most,
            double hold_until_s, double now_s)
{
    if (isnan(most) || isnan(hold_until_s) || (llm && !has_tpm(b)))
        return;
    refill(b, now_s);
    if (llm) {
        b->llm_tokens = fmin(b->llm_tokens, most);
        b->llm_hold_s = fmax(b->llm_hold_s, hold_until_s);
    } else {
        b->tokens = fmin(b->tokens, most);
        b->hold_s = fmax(b->hold_s, hold_until_s);
    }
}

void
limiter_charge_llm(struct limiter_bucket *b, double delta, double now_s)
{
    double cap = b->cfg.tokens_per_min;

    if (!b->cfg.enabled || !has_tpm(b))
        return;
    refill(b, now_s);
    b->llm_tokens = fmax(-cap, fmin(cap, b->llm_tokens - delta));
}

void
limiter_add(struct limiter_bucket *b, double tokens, double llm, double now_s)
{
    refill(b, now_s);
    b->tokens = fmin(b->cfg.burst, b->tokens + fmax(0, tokens));
    if (has_tpm(b))
        b->llm_tokens = fmin(b->cfg.tokens_per_min,
                             b->llm_tokens + fmax(0, llm));
}

void
limiter_take_back(struct limiter_bucket *b, double tokens, double llm,
                  double now_s)
{
    refill(b, now_s);
    b->tokens -= fmin(fmax(0, b->tokens), fmax(0, tokens));
    if (has_tpm(b))
        b->llm_tokens -= fmin(fmax(0, b->llm_tokens), fmax(0, llm));
}

double
limiter_available(const struct limiter_bucket *b, double now_s)
{
    return fmax(0, tokens_at(b, now_s));
}

double
limiter_available_llm(const struct limiter_bucket *b, double now_s)
{
    return has_tpm(b) ? fmax(0, llm_tokens_at(b, now_s)) : INFINITY;
}

size_t
limiter_waiters(const struct limiter_bucket *b)
{
    return b->nwaiters;
}
