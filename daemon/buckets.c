/* buckets.c - token buckets on the event loop: timers, waiters, cancels. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "buckets.h"
#include "clock.h"
#include "log.h"
#include "server.h"

struct buckets {
    struct event_base *base;
    struct provider *providers;     /* in config order */
    size_t n;
    int slot;                       /* connection slot: struct conn_waiters */
    bool models;                    /* the model deployments' buckets */
    buckets_hook_fn hook;           /* after every kick */
    void *hook_arg;
    buckets_feedback_fn fb_hook;    /* after a clamp by headers */
    void *fb_arg;
};

/* What one bucket is set up with: a provider's (pc, whose limits not
 * configured may be learned) or a model deployment's (pc NULL). */
struct bucket_spec {
    const char *name;
    const struct provider_config *pc;
    struct limiter_config lc;
};

/* A connection's waiters, in its slot. */
struct conn_waiters {
    TAILQ_HEAD(, waiter) list;
};

static void
limiter_config(const struct config *cfg, const struct provider_config *pc,
               struct limiter_config *lc)
{
    /* A rate not configured and not learned yet: as good as none, but
     * still a bucket, so that its grants are counted for the first
     * answer's clamp. */
    lc->rate_per_sec = pc->rate_per_sec > 0 ? pc->rate_per_sec
                                            : BUCKETS_UNLIMITED;
    lc->burst = pc->rate_per_sec > 0 || config_provider_given(pc, "BURST") ?
                pc->burst : BUCKETS_UNLIMITED;
    lc->tokens_per_min = pc->tokens_per_min;
    lc->enabled = cfg->rate_limit_enabled;
    lc->leased = false;     /* multi-host mode leases it (global.c) */
}

/*
 * A model deployment's bucket: RPM as rate RPM / 60 and burst RPM, TPM
 * as its LLM-token bucket.  Without an RPM its requests are not limited
 * here (the provider's bucket still is): a rate and burst no permit
 * exhausts.
 */
static void
model_limiter_config(const struct config *cfg, const struct model_config *mc,
                     struct limiter_config *lc)
{
    lc->rate_per_sec = mc->rpm > 0 ? mc->rpm / 60.0 : BUCKETS_UNLIMITED;
    lc->burst = mc->rpm > 0 ? fmax(1, mc->rpm) : BUCKETS_UNLIMITED;
    lc->tokens_per_min = mc->tpm;
    lc->enabled = cfg->rate_limit_enabled;
    lc->leased = false;     /* a deployment's bucket is this host's own */
}

/* The buckets cfg asks b for, into v (CONFIG_MAX_PROVIDERS or
 * CONFIG_MAX_MODELS of them); how many. */
static size_t
bucket_specs(const struct buckets *b, const struct config *cfg,
             struct bucket_spec *v)
{
    if (b->models) {
        for (size_t i = 0; i < cfg->nmodels; i++) {
            v[i].name = cfg->models[i].alias;
            v[i].pc = NULL;
            model_limiter_config(cfg, &cfg->models[i], &v[i].lc);
        }
        return cfg->nmodels;
    }
    for (size_t i = 0; i < cfg->nproviders; i++) {
        v[i].name = cfg->providers[i].name;
        v[i].pc = &cfg->providers[i];
        limiter_config(cfg, &cfg->providers[i], &v[i].lc);
    }
    return cfg->nproviders;
}

/* What prov's bucket runs on: its configuration, with what was learned
 * where nothing is configured. */
static void
effective_config(const struct provider *prov, struct limiter_config *lc)
{
    *lc = prov->configured;
    if (prov->learn_rate && prov->learned_rpm > 0) {
        lc->rate_per_sec = prov->learned_rpm / 60.0;
        if (!prov->burst_given)
            lc->burst = prov->learned_rpm;
    }
    if (prov->learn_tpm && prov->learned_tpm > 0)
        lc->tokens_per_min = prov->learned_tpm;
}

/* Take the configuration of pc into p (a new provider, or one a reload
 * moved here from old, whose learned limits carry over). */
static void
provider_configure(struct provider *p, const struct config *cfg,
                   const struct provider_config *pc, const struct provider *old)
{
    limiter_config(cfg, pc, &p->configured);
    p->learn_rate = !(pc->rate_per_sec > 0);
    p->learn_tpm = !config_provider_given(pc, "TOKENS_PER_MIN") &&
                   !config_provider_given(pc, "TPM");
    p->burst_given = config_provider_given(pc, "BURST");
    p->learned_rpm = old != NULL ? old->learned_rpm : 0;
    p->learned_tpm = old != NULL ? old->learned_tpm : 0;
}

bool
buckets_learn(struct provider *prov, double rpm, double tpm)
{
    struct limiter_config lc;
    bool changed = false;

    if (prov->learn_rate && rpm > 0 && rpm != prov->learned_rpm) {
        prov->learned_rpm = rpm;
        changed = true;
    }
    if (prov->learn_tpm && tpm > 0 && tpm != prov->learned_tpm) {
        prov->learned_tpm = tpm;
        changed = true;
    }
    if (!changed)
        return false;
    effective_config(prov, &lc);
    if (limiter_reconfigure(&prov->bucket, &lc, clock_mono()) < 0)
        return false;       /* out of the limiter's range: not taken */
    log_info("provider %s: learned %.0f requests and %.0f tokens a minute "
             "from its headers", prov->name,
             prov->learn_rate ? prov->learned_rpm : lc.rate_per_sec * 60,
             lc.tokens_per_min);
    buckets_kick(prov);
    return true;
}

enum limit_source
buckets_rate_source(const struct provider *prov)
{
    if (!prov->learn_rate)
        return LIMIT_CONFIGURED;
    return prov->learned_rpm > 0 ? LIMIT_LEARNED : LIMIT_NONE;
}

enum limit_source
buckets_tpm_source(const struct provider *prov)
{
    if (!prov->learn_tpm)
        return LIMIT_CONFIGURED;
    return prov->learned_tpm > 0 ? LIMIT_LEARNED : LIMIT_NONE;
}

const char *
buckets_source_name(enum limit_source s)
{
    static const char *const names[] = {
        [LIMIT_NONE] = "none", [LIMIT_CONFIGURED] = "configured",
        [LIMIT_LEARNED] = "learned",
    };
    return names[s];
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct provider *prov = arg;
    uint64_t expirations;

    /* Read the expiry count, or the descriptor stays readable. */
    if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        log_error("%s: reading the timer of %s: %s", __func__, prov->name,
                  strerror(errno));
    prov->armed_s = NAN;
    buckets_kick(prov);
}

/* Arm prov's timer for the monotonic time at_s (INFINITY: disarm), with a
 * system call only when that changes. */
static void
arm_timer(struct provider *prov, double at_s)
{
    /* Rounded up: a waiter is never served before its instant. */
    if (clock_arm_timerfd(prov->timer_fd, &prov->armed_s, at_s) < 0)
        log_error("%s: timer of %s: %s", __func__, prov->name,
                  strerror(errno));
}

/* The waiters list of w's connection. */
static struct conn_waiters *
waiters_of(const struct waiter *w)
{
    return *conn_slot(w->conn, w->prov->owner->slot);
}

/* Finish one waiter: tell its owner, then free it. */
static void
finish(struct waiter *w, bool granted, double now_s)
{
    if (w->conn != NULL)
        TAILQ_REMOVE(&waiters_of(w)->list, w, conn_entry);
    w->done(w, granted, now_s);
    free(w);
}

void
buckets_kick(struct provider *prov)
{
    struct limiter_bucket *b = &prov->bucket;
    struct limiter_waiter *lw;
    double now = clock_mono(), next;

    /* In the order of their instants (limiter.h). */
    for (;;) {
        if ((lw = limiter_pop_expired(b, now)) != NULL)
            finish((struct waiter *)lw, false, now);
        else if ((lw = limiter_pop_ready(b, now)) != NULL)
            finish((struct waiter *)lw, true, now);
        else
            break;
    }
    next = limiter_next_wakeup(b, now);
    arm_timer(prov, next);
    if (prov->owner->hook != NULL)
        prov->owner->hook(prov, prov->owner->hook_arg);
}

void
buckets_set_hook(struct buckets *b, buckets_hook_fn fn, void *arg)
{
    b->hook = fn;
    b->hook_arg = arg;
}

void
buckets_set_feedback_hook(struct buckets *b, buckets_feedback_fn fn,
                          void *arg)
{
    b->fb_hook = fn;
    b->fb_arg = arg;
}

void
buckets_mark(const struct provider *prov, struct feedback_mark *m)
{
    feedback_mark(&prov->bucket, m);
    if (prov->bucket.cfg.leased) {
        m->fleet = prov->fleet_leased;
        m->fleet_llm = prov->fleet_leased_llm;
    }
}

unsigned
buckets_feedback(struct provider *prov, const struct ratehdr *h,
                 const struct feedback_mark *m, double now_s)
{
    unsigned did = feedback_clamp(&prov->bucket, h, m, now_s);

    if (did == 0)
        return 0;
    /* Before the kick: its next lease is asked after the fleet's cap. */
    if (prov->owner->fb_hook != NULL)
        prov->owner->fb_hook(prov, did, h, m, now_s, prov->owner->fb_arg);
    buckets_kick(prov);
    return did;
}

int
buckets_wait(struct provider *prov, struct waiter *w, uint32_t n,
             uint64_t llm_tokens, double deadline_s)
{
    void **slot = conn_slot(w->conn, prov->owner->slot);
    struct conn_waiters *cw = *slot;

    if (cw == NULL) {
        if ((cw = malloc(sizeof(*cw))) == NULL)
            return -1;
        TAILQ_INIT(&cw->list);
        *slot = cw;
    }
    w->prov = prov;
    limiter_enqueue(&prov->bucket, &w->lw, n, llm_tokens, deadline_s);
    TAILQ_INSERT_TAIL(&cw->list, w, conn_entry);
    buckets_kick(prov);
    return 0;
}

void
buckets_drop_conn(void *state)
{
    struct conn_waiters *cw = state;
    struct waiter *w;
    double now = clock_mono();

    while ((w = TAILQ_FIRST(&cw->list)) != NULL) {
        struct provider *prov = w->prov;
        TAILQ_REMOVE(&cw->list, w, conn_entry);
        w->conn = NULL;
        limiter_cancel(&prov->bucket, &w->lw, now);
        w->done(w, false, now);
        free(w);
        /* The head may have changed: those behind may go now. */
        buckets_kick(prov);
    }
    free(cw);
}

size_t
buckets_count(const struct buckets *b)
{
    return b->n;
}

struct provider *
buckets_at(struct buckets *b, size_t i)
{
    return &b->providers[i];
}

size_t
buckets_index(const struct buckets *b, const struct provider *p)
{
    return (size_t)(p - b->providers);
}

struct provider *
buckets_find(struct buckets *b, const char *name, size_t len)
{
    for (size_t i = 0; i < b->n; i++)
        if (strlen(b->providers[i].name) == len &&
            memcmp(b->providers[i].name, name, len) == 0)
            return &b->providers[i];
    return NULL;
}

/* The buckets of cfg's providers, or of its models. */
static struct buckets *
buckets_create(struct event_base *base, const struct config *cfg,
               int conn_slot, bool models)
{
    struct buckets *b = calloc(1, sizeof(*b));

    if (b == NULL) {
        log_error("%s: out of memory", __func__);
        return NULL;
    }
    b->base = base;
    b->slot = conn_slot;
    b->models = models;
    if (buckets_reconfigure(b, cfg) < 0) {
        free(b);
        return NULL;
    }
    return b;
}

struct buckets *
buckets_new(struct event_base *base, const struct config *cfg, int conn_slot)
{
    return buckets_create(base, cfg, conn_slot, false);
}

struct buckets *
buckets_new_models(struct event_base *base, const struct config *cfg,
                   int conn_slot)
{
    return buckets_create(base, cfg, conn_slot, true);
}

/* Take over old's bucket: fill, clock, queue (a TAILQ head cannot be
 * copied by assignment) and the fleet's count its grants are marked with. */
static void
move_bucket(struct provider *to, struct provider *old)
{
    struct limiter_waiter *lw;

    to->bucket = old->bucket;
    to->fleet_leased = old->fleet_leased;
    to->fleet_leased_llm = old->fleet_leased_llm;
    TAILQ_INIT(&to->bucket.waiters);
    TAILQ_CONCAT(&to->bucket.waiters, &old->bucket.waiters, entry);
    TAILQ_FOREACH(lw, &to->bucket.waiters, entry)
        ((struct waiter *)lw)->prov = to;
    old->bucket.nwaiters = 0;
}

/* Answer every waiter of the providers v[0..n-1] "not granted", free them. */
static void
free_providers(struct provider *v, size_t n, double now)
{
    for (size_t i = 0; i < n; i++) {
        struct limiter_waiter *lw;
        while ((lw = limiter_drain(&v[i].bucket)) != NULL)
            finish((struct waiter *)lw, false, now);
        event_free(v[i].timer);
        close(v[i].timer_fd);
    }
    free(v);
}

/* New providers with their timers, touching nothing of b's; NULL (logged)
 * when out of memory. */
static struct provider *
alloc_providers(struct buckets *b, size_t n)
{
    struct provider *provs = calloc(n ? n : 1, sizeof(*provs));

    if (provs == NULL) {
        log_error("%s: out of memory", __func__);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        struct provider *p = &provs[i];

        p->timer_fd = timerfd_create(CLOCK_MONOTONIC,
                                     TFD_NONBLOCK | TFD_CLOEXEC);
        if (p->timer_fd >= 0 &&
            (p->timer = event_new(b->base, p->timer_fd, EV_READ | EV_PERSIST,
                                  timer_cb, p)) != NULL &&
            event_add(p->timer, NULL) == 0) {
            p->armed_s = NAN;
            p->fleet_leased = p->fleet_leased_llm = NAN;
            p->owner = b;
            continue;
        }
        log_error("%s: cannot create a timer: %s", __func__,
                  p->timer_fd < 0 ? strerror(errno) : "out of memory");
        if (p->timer_fd >= 0)
            close(p->timer_fd);
        if (p->timer != NULL)
            event_free(p->timer);
        while (i-- > 0) {
            event_free(provs[i].timer);
            close(provs[i].timer_fd);
        }
        free(provs);
        return NULL;
    }
    return provs;
}

int
buckets_reconfigure(struct buckets *b, const struct config *cfg)
{
    struct bucket_spec specs[CONFIG_MAX_PROVIDERS > CONFIG_MAX_MODELS ?
                             CONFIG_MAX_PROVIDERS : CONFIG_MAX_MODELS];
    struct provider *provs, *old = b->providers;
    size_t nold = b->n, n = bucket_specs(b, cfg, specs);
    double now = clock_mono();

    if ((provs = alloc_providers(b, n)) == NULL)
        return -1;
    /* Then the move: config_load validated every limiter setting. */
    for (size_t i = 0; i < n; i++) {
        const struct bucket_spec *sp = &specs[i];
        struct provider *p = &provs[i];
        struct provider *o = buckets_find(b, sp->name, strlen(sp->name));
        struct limiter_config lc;

        snprintf(p->name, sizeof(p->name), "%s", sp->name);
        if (sp->pc != NULL) {
            provider_configure(p, cfg, sp->pc, o);
        } else {                /* a model's: configured, never learned */
            p->configured = sp->lc;
        }
        effective_config(p, &lc);
        if (o != NULL) {
            move_bucket(p, o);
            if (limiter_reconfigure(&p->bucket, &lc, now) < 0)
                log_error("%s %s: limiter settings refused, kept the old "
                          "ones", b->models ? "model" : "provider", sp->name);
        } else if (limiter_init(&p->bucket, &lc, now) < 0) {
            abort();    /* config_load let an invalid setting through */
        }
    }
    b->providers = provs;
    b->n = n;
    /* Providers that are gone answer their waiters: not granted. */
    free_providers(old, nold, now);
    for (size_t i = 0; i < b->n; i++)
        buckets_kick(&b->providers[i]);
    return 0;
}

void
buckets_free(struct buckets *b)
{
    if (b == NULL)
        return;
    free_providers(b->providers, b->n, clock_mono());
    free(b);
}
