/*
 * router.c — provider routing: policies, health, cooldown.
 * The contract is in router.h.
 */
#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

#define LATENCY_FLOOR_MS 1.0
#define TIE_EPSILON      1e-9   /* relative to a round's total weight */

struct provider {
    char     *name;
    size_t    name_len;
    int       priority;
    double    cost_per_1k_tokens;
    double    degraded_until_s;     /* healthy when now_s >= this */
    double    last_fault_s;         /* report time of the latest fault */
    enum router_outcome last_fault; /* and its outcome */
    double    last_retry_after_s;   /* and its Retry-After, 0 for none */
    bool      remote;               /* that fault was another host's */
    double    latency_ewma_ms;
    uint64_t  latency_samples;
    double    current_weight;       /* smooth weighted round-robin */
};

struct router {
    enum router_policy  policy;
    double              cooldown_s;
    size_t              n;
    struct provider     p[];
};

static const char *const policy_names[] = {
    [ROUTER_POLICY_PRIMARY] = "primary",
    [ROUTER_POLICY_COST_WEIGHTED] = "cost_weighted",
    [ROUTER_POLICY_LATENCY_WEIGHTED] = "latency_weighted",
};

static const char *const outcome_names[] = {
    [ROUTER_OUTCOME_OK] = "ok",
    [ROUTER_OUTCOME_RATE_LIMITED] = "rate_limited",
    [ROUTER_OUTCOME_SERVER_ERROR] = "server_error",
    [ROUTER_OUTCOME_TIMEOUT] = "timeout",
    [ROUTER_OUTCOME_CLIENT_ERROR] = "client_error",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Order providers by priority, then by name. */
static int
provider_cmp(const void *a, const void *b)
{
    const struct provider *pa = a, *pb = b;

    if (pa->priority != pb->priority)
        return pa->priority < pb->priority ? -1 : 1;
    return strcmp(pa->name, pb->name);
}

static const struct provider *
provider_at(const struct router *r, int idx)
{
    assert(idx >= 0 && (size_t)idx < r->n);
    return &r->p[idx];
}

struct router *
router_new(const struct router_provider_conf *confs, size_t n,
           enum router_policy policy, double cooldown_s)
{
    struct router *r;
    size_t i;

    assert(confs != NULL || n == 0);
    assert((size_t)policy < NELEM(policy_names));
    if (!isfinite(cooldown_s) || cooldown_s < 0 || n > INT_MAX)
        return NULL;
    r = calloc(1, sizeof(*r) + n * sizeof(r->p[0]));
    if (r == NULL)
        return NULL;
    r->policy = policy;
    r->cooldown_s = cooldown_s;
    for (i = 0; i < n; i++) {
        const struct router_provider_conf *c = &confs[i];
        struct provider *p = &r->p[i];

        if (c->name == NULL || c->name[0] == '\0' ||
            !isfinite(c->cost_per_1k_tokens) || c->cost_per_1k_tokens <= 0)
            goto fail;
        if (router_find(r, c->name, strlen(c->name)) != -1)
            goto fail;
        if ((p->name = strdup(c->name)) == NULL)
            goto fail;
        p->name_len = strlen(c->name);
        p->priority = c->priority;
        p->cost_per_1k_tokens = c->cost_per_1k_tokens;
        p->degraded_until_s = -HUGE_VAL;
        p->last_fault_s = -HUGE_VAL;
        r->n++;
    }
    qsort(r->p, r->n, sizeof(r->p[0]), provider_cmp);
    return r;

fail:
    router_free(r);
    return NULL;
}

void
router_free(struct router *r)
{
    size_t i;

    if (r == NULL)
        return;
    for (i = 0; i < r->n; i++)
        free(r->p[i].name);
    free(r);
}

void
router_copy_state(struct router *dst, const struct router *src)
{
    size_t i;

    for (i = 0; i < dst->n; i++) {
        struct provider *d = &dst->p[i];
        int j = router_find(src, d->name, d->name_len);

        if (j < 0)
            continue;
        d->degraded_until_s = src->p[j].degraded_until_s;
        d->last_fault_s = src->p[j].last_fault_s;
        d->last_fault = src->p[j].last_fault;
        d->last_retry_after_s = src->p[j].last_retry_after_s;
        d->remote = src->p[j].remote;
        d->latency_ewma_ms = src->p[j].latency_ewma_ms;
        d->latency_samples = src->p[j].latency_samples;
    }
}

size_t
router_count(const struct router *r)
{
    return r->n;
}

enum router_policy
router_get_policy(const struct router *r)
{
    return r->policy;
}

double
router_get_cooldown_s(const struct router *r)
{
    return r->cooldown_s;
}

const char *
router_name(const struct router *r, int idx)
{
    return provider_at(r, idx)->name;
}

int
router_find(const struct router *r, const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < r->n; i++)
        if (r->p[i].name_len == len && memcmp(r->p[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

bool
router_is_healthy(const struct router *r, int idx, double now_s)
{
    return now_s >= provider_at(r, idx)->degraded_until_s;
}

static bool
is_excluded(const bool *excluded, size_t i)
{
    return excluded != NULL && excluded[i];
}

/* When provider i is healthy again: its own cooldown, or the later end
 * its holder (held, may be NULL) gives. */
static double
until_of(const struct router *r, const double *held, size_t i)
{
    return held != NULL ? fmax(r->p[i].degraded_until_s, held[i]) :
           r->p[i].degraded_until_s;
}

static bool
is_candidate(const struct router *r, const bool *excluded, const double *held,
             size_t i, double now_s)
{
    return !is_excluded(excluded, i) && now_s >= until_of(r, held, i);
}

/* The EWMA a provider without samples is weighed with: the known mean. */
static double
latency_prior_ms(const struct router *r)
{
    double sum = 0;
    size_t i, known = 0;

    for (i = 0; i < r->n; i++) {
        if (r->p[i].latency_samples > 0) {
            sum += r->p[i].latency_ewma_ms;
            known++;
        }
    }
    return known > 0 ? sum / (double)known : LATENCY_FLOOR_MS;
}

/* A provider's weight under the router's weighted policy. */
static double
weight_of(const struct router *r, size_t i, double prior_ms)
{
    const struct provider *p = &r->p[i];
    double ms;

    if (r->policy == ROUTER_POLICY_COST_WEIGHTED)
        return 1.0 / p->cost_per_1k_tokens;
    ms = p->latency_samples > 0 ? p->latency_ewma_ms : prior_ms;
    return 1.0 / fmax(ms, LATENCY_FLOOR_MS);
}

/* One round of nginx smooth weighted round-robin among the candidates. */
static int
select_weighted(struct router *r, const bool *excluded, const double *held,
                double now_s)
{
    double prior_ms = latency_prior_ms(r), total = 0, eps;
    size_t i;
    int best = -1;

    for (i = 0; i < r->n; i++) {
        if (is_candidate(r, excluded, held, i, now_s)) {
            double w = weight_of(r, i, prior_ms);

            r->p[i].current_weight += w;
            total += w;
        }
    }
    eps = total * TIE_EPSILON;
    for (i = 0; i < r->n; i++) {
        if (is_candidate(r, excluded, held, i, now_s) &&
            (best < 0 ||
             r->p[i].current_weight > r->p[best].current_weight + eps))
            best = (int)i;
    }
    if (best >= 0)
        r->p[best].current_weight -= total;
    return best;
}

/* The preferred candidate, else the first candidate by priority. */
static int
select_primary(const struct router *r, int preferred, const bool *excluded,
               const double *held, double now_s)
{
    size_t i;

    if (preferred >= 0 &&
        is_candidate(r, excluded, held, (size_t)preferred, now_s))
        return preferred;
    for (i = 0; i < r->n; i++)
        if (is_candidate(r, excluded, held, i, now_s))
            return (int)i;
    return -1;
}

/* The non-excluded provider whose cooldown ends first, or -1. */
static int
select_earliest_recovery(const struct router *r, const bool *excluded,
                         const double *held)
{
    size_t i;
    int best = -1;

    for (i = 0; i < r->n; i++) {
        if (!is_excluded(excluded, i) &&
            (best < 0 || until_of(r, held, i) < until_of(r, held,
                                                          (size_t)best)))
            best = (int)i;
    }
    return best;
}

int
router_select(struct router *r, int preferred, const bool *excluded,
              double now_s, bool *all_degraded)
{
    return router_select_held(r, preferred, excluded, NULL, now_s,
                              all_degraded);
}

int
router_select_held(struct router *r, int preferred, const bool *excluded,
                   const double *held_until, double now_s, bool *all_degraded)
{
    const double *held = held_until;
    int idx;

    assert(preferred >= -1 && (preferred < 0 || (size_t)preferred < r->n));
    if (r->policy == ROUTER_POLICY_PRIMARY)
        idx = select_primary(r, preferred, excluded, held, now_s);
    else
        idx = select_weighted(r, excluded, held, now_s);
    if (all_degraded != NULL)
        *all_degraded = false;
    if (idx >= 0)
        return idx;
    idx = select_earliest_recovery(r, excluded, held);
    if (idx >= 0 && all_degraded != NULL)
        *all_degraded = true;
    return idx;
}

void
router_report(struct router *r, int idx, enum router_outcome outcome,
              double latency_ms, double retry_after_s, double started_s,
              double now_s)
{
    struct provider *p;
    double until;

    assert(idx >= 0 && (size_t)idx < r->n);
    assert((size_t)outcome < NELEM(outcome_names));
    p = &r->p[idx];
    switch (outcome) {
    case ROUTER_OUTCOME_OK:
        if (isfinite(latency_ms) && latency_ms >= 0) {
            if (p->latency_samples++ == 0)
                p->latency_ewma_ms = latency_ms;
            else
                p->latency_ewma_ms += ROUTER_LATENCY_ALPHA *
                                      (latency_ms - p->latency_ewma_ms);
        }
        if (started_s >= p->last_fault_s && p->degraded_until_s > now_s) {
            p->degraded_until_s = now_s;
            p->remote = false;
        }
        break;
    case ROUTER_OUTCOME_RATE_LIMITED:
    case ROUTER_OUTCOME_SERVER_ERROR:
    case ROUTER_OUTCOME_TIMEOUT:
        if (!isfinite(retry_after_s))
            retry_after_s = 0;
        until = now_s + fmax(r->cooldown_s, retry_after_s);
        p->last_fault_s = now_s;
        /* Another host's longer cooldown stays the one in force, and the
         * status keeps saying whose it is. */
        if (p->remote && until <= p->degraded_until_s)
            break;
        p->degraded_until_s = fmax(p->degraded_until_s, until);
        p->last_fault = outcome;
        p->last_retry_after_s = fmax(retry_after_s, 0);
        p->remote = false;
        break;
    case ROUTER_OUTCOME_CLIENT_ERROR:
        break;
    }
}

static bool
is_fault(enum router_outcome o)
{
    return o == ROUTER_OUTCOME_RATE_LIMITED ||
           o == ROUTER_OUTCOME_SERVER_ERROR || o == ROUTER_OUTCOME_TIMEOUT;
}

bool
router_remote_cooldown(struct router *r, int idx, double until_s,
                       enum router_outcome cause, double retry_after_s,
                       double fault_s, double now_s)
{
    struct provider *p;

    assert(idx >= 0 && (size_t)idx < r->n);
    p = &r->p[idx];
    if (!is_fault(cause) || !isfinite(until_s) || !isfinite(fault_s))
        return false;
    /* Never in the future: the two clocks are only as close as the trip. */
    fault_s = fmin(fault_s, now_s);
    p->last_fault_s = fmax(p->last_fault_s, fault_s);
    if (until_s <= now_s || until_s <= p->degraded_until_s)
        return false;
    p->degraded_until_s = until_s;
    p->last_fault = cause;
    p->last_retry_after_s = isfinite(retry_after_s) ?
                            fmax(retry_after_s, 0) : 0;
    p->remote = true;
    return true;
}

bool
router_remote_clear(struct router *r, int idx, double started_s,
                    double now_s)
{
    struct provider *p;

    assert(idx >= 0 && (size_t)idx < r->n);
    p = &r->p[idx];
    if (!isfinite(started_s) || started_s < p->last_fault_s ||
        p->degraded_until_s <= now_s)
        return false;
    p->degraded_until_s = now_s;
    p->remote = false;
    return true;
}

void
router_status(const struct router *r, int idx, double now_s,
              struct router_status *st)
{
    const struct provider *p = provider_at(r, idx);

    st->name = p->name;
    st->priority = p->priority;
    st->cost_per_1k_tokens = p->cost_per_1k_tokens;
    st->healthy = now_s >= p->degraded_until_s;
    st->cooldown_remaining_s = st->healthy ? 0 : p->degraded_until_s - now_s;
    st->latency_ewma_ms = p->latency_samples > 0 ? p->latency_ewma_ms : 0;
    st->latency_samples = p->latency_samples;
    st->cause = p->last_fault;
    st->fault_s = p->last_fault_s;
    st->retry_after_s = p->last_retry_after_s;
    st->remote = p->remote;
}

/* Index of s[0..len-1] in a table of names, or -1. */
static int
name_lookup(const char *const *names, size_t n, const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return (int)i;
    return -1;
}

const char *
router_policy_name(enum router_policy policy)
{
    assert((size_t)policy < NELEM(policy_names));
    return policy_names[policy];
}

int
router_policy_parse(const char *s, size_t len, enum router_policy *out)
{
    int i = name_lookup(policy_names, NELEM(policy_names), s, len);

    if (i < 0)
        return -1;
    *out = (enum router_policy)i;
    return 0;
}

const char *
router_outcome_name(enum router_outcome outcome)
{
    assert((size_t)outcome < NELEM(outcome_names));
    return outcome_names[outcome];
}

int
router_outcome_parse(const char *s, size_t len, enum router_outcome *out)
{
    int i = name_lookup(outcome_names, NELEM(outcome_names), s, len);

    if (i < 0)
        return -1;
    *out = (enum router_outcome)i;
    return 0;
}
