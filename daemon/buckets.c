/* buckets.c - token buckets on the event loop: timers, waiters, cancels. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "buckets.h"
#include "log.h"
#include "router.h"
#include "server.h"

void
buckets_limiter_config(const struct config *cfg,
                       const struct provider_config *pc,
                       struct limiter_config *lc)
{
    lc->rate_per_sec = pc->rate_per_sec;
    lc->burst = pc->burst;
    lc->tokens_per_min = pc->tokens_per_min;
    lc->enabled = cfg->rate_limit_enabled;
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    buckets_kick(arg);
}

/* Finish one waiter: tell its owner, then free it. */
static void
finish(struct waiter *w, bool granted, double now_s)
{
    if (w->conn != NULL)
        TAILQ_REMOVE(&w->conn->waiters, w, conn_entry);
    w->done(w, granted, now_s);
    free(w);
}

void
buckets_kick(struct provider *prov)
{
    struct limiter_bucket *b = &prov->bucket;
    struct limiter_waiter *lw;
    double now = server_now_mono(), next;

    while ((lw = limiter_pop_expired(b, now)) != NULL)
        finish((struct waiter *)lw, false, now);
    while ((lw = limiter_pop_ready(b, now)) != NULL)
        finish((struct waiter *)lw, true, now);
    next = limiter_next_wakeup(b, now);
    if (isinf(next)) {
        evtimer_del(prov->timer);
    } else {
        /* Round up to the microsecond: the limiter's time is exact. */
        double d = next - now;
        struct timeval tv;
        if (d < 0)
            d = 0;
        tv.tv_sec = (time_t)d;
        tv.tv_usec = (suseconds_t)ceil((d - (double)tv.tv_sec) * 1e6);
        if (tv.tv_usec >= 1000000) {
            tv.tv_sec++;
            tv.tv_usec -= 1000000;
        }
        evtimer_add(prov->timer, &tv);
    }
}

void
buckets_wait(struct provider *prov, struct waiter *w, uint32_t n,
             uint64_t llm_tokens, double deadline_s)
{
    w->prov = prov;
    limiter_enqueue(&prov->bucket, &w->lw, n, llm_tokens, deadline_s);
    TAILQ_INSERT_TAIL(&w->conn->waiters, w, conn_entry);
    buckets_kick(prov);
}

void
buckets_cancel_conn(struct conn *c)
{
    struct waiter *w;
    double now = server_now_mono();

    while ((w = TAILQ_FIRST(&c->waiters)) != NULL) {
        struct provider *prov = w->prov;
        TAILQ_REMOVE(&c->waiters, w, conn_entry);
        w->conn = NULL;
        limiter_cancel(&prov->bucket, &w->lw);
        w->done(w, false, now);
        free(w);
        /* The head may have changed: those behind may go now. */
        buckets_kick(prov);
    }
}

struct provider *
buckets_find(struct server *srv, const char *name, size_t len)
{
    for (size_t i = 0; i < srv->nproviders; i++)
        if (strlen(srv->providers[i].name) == len &&
            memcmp(srv->providers[i].name, name, len) == 0)
            return &srv->providers[i];
    return NULL;
}

int
buckets_init(struct server *srv)
{
    return buckets_reconfigure(srv, &srv->cfg);
}

/* Take over old's bucket: fill, clock and queue (a TAILQ head cannot be
 * copied by assignment). */
static void
move_bucket(struct provider *to, struct provider *old)
{
    struct limiter_waiter *lw;

    to->bucket = old->bucket;
    TAILQ_INIT(&to->bucket.waiters);
    TAILQ_CONCAT(&to->bucket.waiters, &old->bucket.waiters, entry);
    TAILQ_FOREACH(lw, &to->bucket.waiters, entry)
        ((struct waiter *)lw)->prov = to;
    old->bucket.nwaiters = 0;
}

int
buckets_reconfigure(struct server *srv, const struct config *cfg)
{
    struct provider *provs, *old = srv->providers;
    size_t nold = srv->nproviders;
    double now = server_now_mono();

    struct router_provider_conf confs[CONFIG_MAX_PROVIDERS];
    struct router *router;

    /* First everything that can fail, touching nothing of the old set. */
    for (size_t i = 0; i < cfg->nproviders; i++) {
        confs[i].name = cfg->providers[i].name;
        confs[i].priority = (int)cfg->providers[i].priority;
        confs[i].cost_per_1k_tokens = cfg->providers[i].cost_per_1k_tokens;
    }
    router = router_new(confs, cfg->nproviders,
                        (enum router_policy)cfg->routing_policy,
                        cfg->provider_cooldown_s);
    provs = calloc(cfg->nproviders ? cfg->nproviders : 1, sizeof(*provs));
    if (provs == NULL || router == NULL) {
        log_error("%s: out of memory", __func__);
        free(provs);
        router_free(router);
        return -1;
    }
    for (size_t i = 0; i < cfg->nproviders; i++) {
        provs[i].timer = evtimer_new(srv->base, timer_cb, &provs[i]);
        if (provs[i].timer == NULL) {
            log_error("%s: cannot create a timer", __func__);
            while (i-- > 0)
                event_free(provs[i].timer);
            free(provs);
            router_free(router);
            return -1;
        }
    }
    /* Then the move: config_load validated every limiter setting. */
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct provider_config *pc = &cfg->providers[i];
        struct provider *p = &provs[i];
        struct provider *o = buckets_find(srv, pc->name, strlen(pc->name));
        struct limiter_config lc;

        buckets_limiter_config(cfg, pc, &lc);
        memcpy(p->name, pc->name, sizeof(p->name));
        p->srv = srv;
        if (o != NULL) {
            move_bucket(p, o);
            if (limiter_reconfigure(&p->bucket, &lc, now) < 0)
                log_error("provider %s: limiter settings refused, kept the "
                          "old ones", pc->name);
        } else if (limiter_init(&p->bucket, &lc, now) < 0) {
            abort();    /* config_load let an invalid setting through */
        }
    }
    srv->providers = provs;
    srv->nproviders = cfg->nproviders;
    /* Health and latency carry over by name; router index i is provs[i]
     * (both sorted by priority, then name). */
    if (srv->router != NULL)
        router_copy_state(router, srv->router);
    router_free(srv->router);
    srv->router = router;
    for (size_t i = 0; i < srv->nproviders; i++)
        assert(strcmp(router_name(router, (int)i), provs[i].name) == 0);
    /* Providers that are gone answer their waiters: not granted. */
    for (size_t i = 0; i < nold; i++) {
        struct limiter_waiter *lw;
        while ((lw = limiter_drain(&old[i].bucket)) != NULL)
            finish((struct waiter *)lw, false, now);
        event_free(old[i].timer);
    }
    free(old);
    for (size_t i = 0; i < srv->nproviders; i++)
        buckets_kick(&srv->providers[i]);
    return 0;
}

void
buckets_free(struct server *srv)
{
    double now = server_now_mono();

    for (size_t i = 0; i < srv->nproviders; i++) {
        struct limiter_waiter *lw;
        while ((lw = limiter_drain(&srv->providers[i].bucket)) != NULL)
            finish((struct waiter *)lw, false, now);
        event_free(srv->providers[i].timer);
    }
    free(srv->providers);
    srv->providers = NULL;
    srv->nproviders = 0;
    router_free(srv->router);
    srv->router = NULL;
}
