/* lease.c - leases of a global bucket: accounting and sizing; see lease.h. */
#include <math.h>
#include <string.h>

#include "lease.h"

#define DEMAND_TAU_S 1.0
/* Demand that returns after a pause this long starts afresh: every lease
 * of the default length has lapsed, and the count has decayed by a fifth
 * at least. */
#define DEMAND_GAP_S 0.25
/* A start seen in fewer calls than this is not yet a rate (one request of
 * 500 LLM tokens is no 500 a second to lease ahead of). */
#define DEMAND_MIN_CALLS 8

void
lease_init(struct lease *l, double now_s)
{
    memset(l, 0, sizeof(*l));
    l->last_s = now_s;
}

/* Take used (> 0) out of the oldest slots, *field by *field. */
static void
charge(struct lease *l, double used, size_t off)
{
    for (size_t i = 0; i < l->n && used > 0; i++) {
        double *v = (double *)(void *)((char *)&l->slot[i] + off);
        double d = fmin(*v, used);
        *v -= d;
        used -= d;
    }
}

/* Forget the oldest leases once used up: they hold nothing to lapse. */
static void
drop_spent(struct lease *l)
{
    size_t k = 0;

    while (k < l->n && l->slot[k].tokens <= 1e-9 && l->slot[k].llm <= 1e-9)
        k++;
    memmove(l->slot, l->slot + k, (l->n - k) * sizeof(l->slot[0]));
    l->n -= k;
}

void
lease_sync(struct lease *l, double avail, double avail_llm, double taken,
           double missed, double now_s)
{
    double used = l->held - avail, used_llm = l->held_llm - avail_llm;
    double dt = fmax(0, now_s - l->last_s), decay = exp(-dt / DEMAND_TAU_S);
    /* A request that queues is refused first and granted later: count it
     * once. */
    double asked = fmax(taken - l->seen_taken, missed - l->seen_missed);

    /* Demand starting afresh (a load begins, or returns after a pause):
     * the count holds a fraction of it, see lease_rates(). */
    if (asked > 0 && now_s - l->asked_s >= DEMAND_GAP_S) {
        l->since_s = now_s;
        l->rate0 = l->rate * decay;
        l->rate0_llm = l->rate_llm * decay;
        l->calls = 0;
    }
    if (asked > 0) {
        l->asked_s = fmax(l->asked_s, now_s);
        l->calls++;
    }
    if (used > 0)
        charge(l, used, offsetof(struct lease_slot, tokens));
    else if (used < 0 && l->n > 0)
        l->slot[l->n - 1].tokens -= used;   /* a release: the newest */
    if (!isinf(avail_llm) && used_llm > 0)
        charge(l, used_llm, offsetof(struct lease_slot, llm));
    else if (!isinf(avail_llm) && used_llm < 0 && l->n > 0)
        l->slot[l->n - 1].llm -= used_llm;
    drop_spent(l);
    l->held = l->n > 0 ? avail : 0;
    l->held_llm = l->n > 0 && !isinf(avail_llm) ? avail_llm : 0;
    /* A decaying count over tau is a rate: sum of e^(-age/tau) / tau. */
    l->rate = l->rate * decay + fmax(0, asked) / DEMAND_TAU_S;
    l->rate_llm = l->rate_llm * decay +
                  fmax(0, used_llm) / DEMAND_TAU_S;
    l->seen_taken = taken;
    l->seen_missed = missed;
    l->last_s = fmax(l->last_s, now_s);
}

int
lease_add(struct lease *l, double tokens, double llm, double ends_s)
{
    if (l->n == LEASE_SLOTS)
        return -1;
    l->slot[l->n].tokens = tokens;
    l->slot[l->n].llm = llm;
    l->slot[l->n].ends_s = ends_s;
    l->n++;
    l->held += tokens;
    l->held_llm += llm;
    return 0;
}

void
lease_expire(struct lease *l, double now_s, double *tokens, double *llm)
{
    size_t k = 0;

    *tokens = 0;
    *llm = 0;
    while (k < l->n && l->slot[k].ends_s <= now_s) {
        *tokens += l->slot[k].tokens;
        *llm += l->slot[k].llm;
        k++;
    }
    memmove(l->slot, l->slot + k, (l->n - k) * sizeof(l->slot[0]));
    l->n -= k;
    l->held = l->n > 0 ? fmax(0, l->held - *tokens) : 0;
    l->held_llm = l->n > 0 ? fmax(0, l->held_llm - *llm) : 0;
}

double
lease_next_end(const struct lease *l)
{
    return l->n > 0 ? l->slot[0].ends_s : INFINITY;
}

void
lease_rates(const struct lease *l, double lease_s, double *rate,
            double *rate_llm)
{
    /* The count of a rate R that began age ago holds R tau (1 -
     * e^(-age/tau)) beside what is left of the demand before it: divide
     * that factor out of the new part.  Over less than a quarter lease, or
     * fewer than a few calls, the count is noise: take a quarter lease at
     * least, and the count as it is until those calls were seen. */
    double age = fmax(0, l->last_s - l->since_s);
    double left = exp(-age / DEMAND_TAU_S);
    double g = l->calls < DEMAND_MIN_CALLS
               ? 1 : 1 / -expm1(-fmax(age, lease_s / 4) / DEMAND_TAU_S);

    *rate = l->rate0 * left + g * fmax(0, l->rate - l->rate0 * left);
    *rate_llm = l->rate0_llm * left +
                g * fmax(0, l->rate_llm - l->rate0_llm * left);
}

void
lease_want(const struct lease *l, double queued, double queued_llm,
           double lease_s, double burst, double tpm, double *want,
           double *want_llm)
{
    double r, rl, w, wl;

    lease_rates(l, lease_s, &r, &rl);
    w = queued + r * lease_s - l->held;
    wl = queued_llm + rl * lease_s - l->held_llm;

    *want = 0;
    *want_llm = 0;
    if (l->n == LEASE_SLOTS || (queued <= 0 && w < 1))
        return;
    *want = fmax(0, fmin(w, burst - l->held));
    if (tpm > 0)
        *want_llm = fmax(0, fmin(wl, tpm - l->held_llm));
}
