/* ops.c - the dispatch table: one row per op, its handler and admin flag. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "buckets.h"
#include "clock.h"
#include "daemon.h"
#include "daily.h"
#include "explain.h"
#include "global.h"
#include "gquota.h"
#include "health.h"
#include "log.h"
#include "permits.h"
#include "persist.h"
#include "quota.h"
#include "request.h"
#include "router.h"
#include "server.h"
#include "telemetry.h"

/*
 * A handler answers with conn_reply() and returns 0, or fills e and returns
 * -1 for the dispatcher to send the error.
 */
typedef int (*op_handler)(struct daemon *d, struct conn *c,
                          struct proto_req *req, struct proto_error *e);

static int
op_hello(struct daemon *d, struct conn *c, struct proto_req *req,
         struct proto_error *e)
{
    struct proto_hello_rep rep = { 0 };
    static const char server[] = "llmguardd " PACKAGE_VERSION;

    if (req->u.hello.version != PROTO_VERSION)
        return proto_error_set(e, PROTO_E_VERSION,
                               "client speaks protocol %llu, this daemon %d",
                               (unsigned long long)req->u.hello.version,
                               PROTO_VERSION);
    rep.version = PROTO_VERSION;
    rep.server.ptr = server;
    rep.server.len = sizeof(server) - 1;
    conn_reply(c, PROTO_OP_HELLO, req->id, &rep);
    return 0;
}

static int
op_ping(struct daemon *d, struct conn *c, struct proto_req *req,
        struct proto_error *e)
{
    struct proto_ping_rep rep = { 0 };

    rep.uptime_s = clock_mono() - d->started_mono_s;
    PROTO_SET(&rep, PROTO_PING_REP_UPTIME_S);
    conn_reply(c, PROTO_OP_PING, req->id, &rep);
    return 0;
}

/* The provider a request names, or NULL with bad_request (not UTF-8, a
 * control character) or unknown_provider in e. */
static struct provider *
find_provider(struct daemon *d, const struct proto_str *name,
              struct proto_error *e)
{
    struct provider *p;
    size_t n = buckets_count(d->buckets), off = 0;
    char known[256] = "";

    if (request_text(name, "provider", e) < 0)
        return NULL;
    if ((p = buckets_find(d->buckets, name->ptr, name->len)) != NULL)
        return p;
    for (size_t i = 0; i < n && off < sizeof(known); i++)
        off += (size_t)snprintf(known + off, sizeof(known) - off, "%s%s",
                                i ? ", " : "", buckets_at(d->buckets, i)->name);
    proto_error_set(e, PROTO_E_UNKNOWN_PROVIDER,
                    "unknown provider '%.*s' (configured: %s)",
                    (int)(name->len > 64 ? 64 : name->len), name->ptr,
                    n ? known : "none");
    return NULL;
}

/* Why a bucket refused n request tokens and llm LLM tokens. */
static int
bad_amount(struct provider *p, uint64_t n, uint64_t llm, struct proto_error *e)
{
    const struct limiter_config *lc = &p->bucket.cfg;

    if (n == 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "tokens must be at least 1");
    if ((double)n > lc->burst)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "tokens %llu exceed the burst of %s (%g): it "
                               "could never be granted", (unsigned long long)n,
                               p->name, lc->burst);
    return proto_error_set(e, PROTO_E_BAD_REQUEST,
                           "llm_tokens %llu exceed the tokens_per_min of %s "
                           "(%g)", (unsigned long long)llm, p->name,
                           lc->tokens_per_min);
}

/* An acquire's count on its provider's daily limit, while it waits. */
struct acquire_count {
    struct daily *daily;
    struct persist *persist;
    char name[PERMITS_DAILY_NAME_MAX];
    int64_t slot;
    int64_t llm;
};

/*
 * Count an acquire of llm tokens on p's daily limit, when it has one: the
 * daily_limit refusal (-1, e filled) when it cannot take it, else 0 and
 * *out the count (NULL: none kept), to give back with acquire_undo().
 */
static int
acquire_count(struct daemon *d, struct provider *p, uint64_t llm,
              struct acquire_count **out, struct proto_error *e)
{
    struct acquire_count *ac;
    double wall = clock_wall();

    *out = NULL;
    if (!d->cfg.rate_limit_enabled)
        return 0;
    if (permits_daily_gate(d->daily, p->name, llm, wall, e) < 0)
        return -1;
    if ((ac = calloc(1, sizeof(*ac))) == NULL)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    ac->daily = d->daily;
    ac->persist = d->persist;
    ac->llm = (int64_t)llm;
    permits_daily_name(ac->name, sizeof(ac->name), p->name);
    if (!daily_limited(d->daily, ac->name) ||
        daily_charge(d->daily, ac->name, 1, ac->llm, wall, &ac->slot) < 0) {
        free(ac);
        return 0;
    }
    persist_changed(d->persist);
    *out = ac;
    return 0;
}

/* The acquire was not granted: its daily count goes back. */
static void
acquire_undo(struct acquire_count *ac)
{
    double wall = clock_wall();

    if (ac == NULL)
        return;
    daily_reconcile(ac->daily, ac->name, DAILY_REQUESTS, ac->slot, 1, 0,
                    wall);
    daily_reconcile(ac->daily, ac->name, DAILY_TOKENS, ac->slot, ac->llm, 0,
                    wall);
    persist_changed(ac->persist);
}

static void
acquire_done(struct waiter *w, bool granted, double now_s)
{
    struct proto_acquire_rep rep = { 0 };
    struct proto_error e;

    if (!granted)
        acquire_undo(w->arg);
    free(w->arg);
    if (w->conn == NULL)
        return;
    if (granted) {
        rep.waited_ms = (now_s - w->started_s) * 1e3;
        conn_reply(w->conn, PROTO_OP_ACQUIRE, w->id, &rep);
    } else {
        proto_error_set(&e, PROTO_E_TIMEOUT, "no token from %s within the "
                        "timeout", w->prov->name);
        conn_error(w->conn, w->id, &e);
    }
    conn_flush(w->conn);
}

static int
op_acquire(struct daemon *d, struct conn *c, struct proto_req *req,
           struct proto_error *e)
{
    const struct proto_acquire_req *a = &req->u.acquire;
    struct provider *p = find_provider(d, &a->provider, e);
    uint64_t n = PROTO_HAS(a, PROTO_ACQUIRE_REQ_TOKENS) ? a->tokens : 1;
    double now = clock_mono();
    struct proto_acquire_rep rep = { 0 };
    struct acquire_count *ac;
    struct waiter *w;

    if (p == NULL)
        return -1;
    if (a->timeout_ms < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "timeout_ms must not be negative");
    if (p->closed)      /* multi-host mode, fallback closed */
        return proto_error_set(e, PROTO_E_BUSY, "%s: Redis is unreachable "
                               "and LLMGUARD_REDIS_FALLBACK is closed",
                               p->name);
    if (n > UINT32_MAX)
        return bad_amount(p, n, a->llm_tokens, e);
    if (acquire_count(d, p, a->llm_tokens, &ac, e) < 0)
        return -1;
    switch (limiter_try_acquire(&p->bucket, (uint32_t)n, a->llm_tokens, now)) {
    case LIMITER_BAD_REQUEST:
        acquire_undo(ac);
        free(ac);
        return bad_amount(p, n, a->llm_tokens, e);
    case LIMITER_GRANTED:
        /* Counted: with a flush interval of 0, answered once on disk. */
        persist_reply(d->persist, c, PROTO_OP_ACQUIRE, req->id, &rep,
                      ac != NULL);
        free(ac);
        return 0;
    case LIMITER_WAIT:
        break;
    }
    if (a->timeout_ms == 0) {
        acquire_undo(ac);
        free(ac);
        buckets_kick(p);    /* multi-host mode: a miss is demand */
        return proto_error_set(e, PROTO_E_TIMEOUT, "no token from %s now",
                               p->name);
    }
    if ((w = calloc(1, sizeof(*w))) == NULL) {
        acquire_undo(ac);
        free(ac);
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    }
    w->conn = c;
    w->id = req->id;
    w->started_s = now;
    w->done = acquire_done;
    w->arg = ac;
    if (buckets_wait(p, w, (uint32_t)n, a->llm_tokens,
                     now + a->timeout_ms / 1e3) < 0) {
        acquire_undo(ac);
        free(ac);
        free(w);
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    }
    return 0;
}

static int
op_release(struct daemon *d, struct conn *c, struct proto_req *req,
           struct proto_error *e)
{
    const struct proto_release_req *r = &req->u.release;
    struct provider *p = find_provider(d, &r->provider, e);
    uint64_t n = PROTO_HAS(r, PROTO_RELEASE_REQ_TOKENS) ? r->tokens : 1;
    struct proto_release_rep rep = { 0 };
    double now = clock_mono();

    if (p == NULL)
        return -1;
    if (n > UINT32_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens too large");
    limiter_release(&p->bucket, (uint32_t)n, r->llm_tokens, now);
    rep.available_tokens = limiter_available(&p->bucket, now);
    conn_reply(c, PROTO_OP_RELEASE, req->id, &rep);
    buckets_kick(p);    /* the returned tokens may serve a waiter */
    return 0;
}

static int
op_limiter_status(struct daemon *d, struct conn *c, struct proto_req *req,
                  struct proto_error *e)
{
    struct provider *p = find_provider(d, &req->u.limiter_status.provider, e);
    struct proto_limiter_status_rep rep = { 0 };
    double now = clock_mono();

    if (p == NULL)
        return -1;
    rep.available_tokens = limiter_available(&p->bucket, now);
    rep.rate_per_sec = p->bucket.cfg.rate_per_sec;
    rep.max_tokens = p->bucket.cfg.burst;
    if (buckets_rate_source(p) == LIMIT_NONE) {  /* as status shows it */
        rep.rate_per_sec = 0;
        if (!p->burst_given)
            rep.max_tokens = 0;
    }
    rep.enabled = p->bucket.cfg.enabled;
    rep.waiters = limiter_waiters(&p->bucket);
    rep.tokens_per_min = p->bucket.cfg.tokens_per_min;
    if (rep.tokens_per_min > 0) {
        rep.available_llm_tokens = limiter_available_llm(&p->bucket, now);
        PROTO_SET(&rep, PROTO_LIMITER_STATUS_REP_AVAILABLE_LLM_TOKENS);
    }
    conn_reply(c, PROTO_OP_LIMITER_STATUS, req->id, &rep);
    return 0;
}

/* Where p's limits come from; a rate neither configured nor learned yet
 * is shown as none (0), not as the bucket that stands in for it. */
static void
limit_sources(const struct provider *p, struct proto_provider_status *ps)
{
    enum limit_source rate = buckets_rate_source(p);

    ps->rate_source = request_str(buckets_source_name(rate));
    ps->tokens_per_min_source =
        request_str(buckets_source_name(buckets_tpm_source(p)));
    ps->has |= PROTO_BIT(PROTO_PROVIDER_STATUS_RATE_SOURCE) |
               PROTO_BIT(PROTO_PROVIDER_STATUS_TOKENS_PER_MIN_SOURCE);
    if (rate == LIMIT_NONE) {
        ps->rate_per_sec = 0;
        if (!p->burst_given)
            ps->max_tokens = 0;
    }
}

/* Provider i as status shows it; now is monotonic, wall the same instant
 * on the wall clock. */
static void
provider_status(struct daemon *d, size_t i, double now, double wall,
                struct proto_provider_status *ps)
{
    struct provider *p = buckets_at(d->buckets, i);
    struct router_status rs;

    memset(ps, 0, sizeof(*ps));
    ps->name = request_str(p->name);
    ps->available_tokens = limiter_available(&p->bucket, now);
    ps->rate_per_sec = p->bucket.cfg.rate_per_sec;
    ps->max_tokens = p->bucket.cfg.burst;
    ps->waiters = limiter_waiters(&p->bucket);
    ps->tokens_per_min = p->bucket.cfg.tokens_per_min;
    router_status(permits_router(d->permits), (int)i, now, &rs);
    ps->state = request_str(rs.healthy ? "healthy" : "degraded");
    ps->cooldown_remaining_s = rs.cooldown_remaining_s;
    ps->latency_ewma_ms = rs.latency_ewma_ms;
    if (rs.latency_samples > 0)
        PROTO_SET(ps, PROTO_PROVIDER_STATUS_LATENCY_EWMA_MS);
    if (!rs.healthy) {
        ps->cooldown_cause = request_str(router_outcome_name(rs.cause));
        ps->cooldown_since = wall - (now - rs.fault_s);
        ps->has |= PROTO_BIT(PROTO_PROVIDER_STATUS_COOLDOWN_CAUSE) |
                   PROTO_BIT(PROTO_PROVIDER_STATUS_COOLDOWN_SINCE);
        if (rs.retry_after_s > 0) {
            ps->retry_after_s = rs.retry_after_s;
            PROTO_SET(ps, PROTO_PROVIDER_STATUS_RETRY_AFTER_S);
        }
        if (rs.remote && d->health != NULL) {
            ps->cooldown_host = request_str(health_origin(d->health,
                                                          p->name));
            PROTO_SET(ps, PROTO_PROVIDER_STATUS_COOLDOWN_HOST);
        }
    }
    if (p->bucket.cfg.tokens_per_min > 0) {
        ps->available_llm_tokens = limiter_available_llm(&p->bucket, now);
        PROTO_SET(ps, PROTO_PROVIDER_STATUS_AVAILABLE_LLM_TOKENS);
    }
    limit_sources(p, ps);
}

/* Model deployment i as status shows it (now and wall as above). */
static void
model_status(struct daemon *d, size_t i, double now, double wall,
             struct proto_model_status *ms)
{
    const struct model_config *mc = &d->cfg.models[i];
    struct provider *b = buckets_at(d->models, i);
    struct router_status rs;

    memset(ms, 0, sizeof(*ms));
    ms->alias = request_str(mc->alias);
    ms->model = request_str(mc->name);
    ms->provider = request_str(mc->provider);
    ms->group = request_str(mc->group);
    ms->rate_per_sec = mc->rpm > 0 ? b->bucket.cfg.rate_per_sec : 0;
    ms->tokens_per_min = b->bucket.cfg.tokens_per_min;
    ms->waiters = limiter_waiters(&b->bucket);
    if (mc->rpm > 0) {
        ms->available_tokens = limiter_available(&b->bucket, now);
        ms->max_tokens = b->bucket.cfg.burst;
        ms->has |= PROTO_BIT(PROTO_MODEL_STATUS_AVAILABLE_TOKENS) |
                   PROTO_BIT(PROTO_MODEL_STATUS_MAX_TOKENS);
    }
    if (b->bucket.cfg.tokens_per_min > 0) {
        ms->available_llm_tokens = limiter_available_llm(&b->bucket, now);
        PROTO_SET(ms, PROTO_MODEL_STATUS_AVAILABLE_LLM_TOKENS);
    }
    router_status(permits_model_router(d->permits), (int)i, now, &rs);
    ms->state = request_str(rs.healthy ? "healthy" : "degraded");
    ms->cooldown_remaining_s = rs.cooldown_remaining_s;
    ms->latency_ewma_ms = rs.latency_ewma_ms;
    if (rs.latency_samples > 0)
        PROTO_SET(ms, PROTO_MODEL_STATUS_LATENCY_EWMA_MS);
    if (!rs.healthy) {
        ms->cooldown_cause = request_str(router_outcome_name(rs.cause));
        ms->cooldown_since = wall - (now - rs.fault_s);
        ms->has |= PROTO_BIT(PROTO_MODEL_STATUS_COOLDOWN_CAUSE) |
                   PROTO_BIT(PROTO_MODEL_STATUS_COOLDOWN_SINCE);
        if (rs.retry_after_s > 0) {
            ms->retry_after_s = rs.retry_after_s;
            PROTO_SET(ms, PROTO_MODEL_STATUS_RETRY_AFTER_S);
        }
    }
}

/* The models of status, in the reply's zone; -1 when out of memory. */
static int
models_status(struct daemon *d, struct conn *c, double now, double wall,
              struct proto_status_rep *rep)
{
    size_t n = buckets_count(d->models);
    struct proto_model_status *ms = NULL;

    if (n > 0 &&
        (ms = msgpack_zone_malloc(conn_zone(c), sizeof(*ms) * n)) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        model_status(d, i, now, wall, &ms[i]);
    rep->models.v = ms;
    rep->models.n = (uint32_t)n;
    PROTO_SET(rep, PROTO_STATUS_REP_MODELS);
    return 0;
}

/* The daemon's own fields of status. */
static void
daemon_status(struct daemon *d, double now, struct proto_status_rep *rep)
{
    static const char version[] = PACKAGE_VERSION;
    struct persist_state ps;

    persist_state(d->persist, &ps);
    rep->version = request_str(version);
    rep->env_file = request_str(d->cfg.env_file);
    rep->database = request_str(d->cfg.db_path);
    rep->uptime_s = now - d->started_mono_s;
    rep->connections = server_nconns(d->server);
    rep->open_permits = permits_open(d->permits);
    rep->last_flush = ps.last_flush_s;
    rep->store = request_str(ps.failing ? "failing" : "ok");
    rep->store_error = request_str(ps.error);
    rep->has |= PROTO_BIT(PROTO_STATUS_REP_VERSION) |
                PROTO_BIT(PROTO_STATUS_REP_ENV_FILE) |
                PROTO_BIT(PROTO_STATUS_REP_DATABASE) |
                PROTO_BIT(PROTO_STATUS_REP_UPTIME_S) |
                PROTO_BIT(PROTO_STATUS_REP_CONNECTIONS) |
                PROTO_BIT(PROTO_STATUS_REP_OPEN_PERMITS) |
                PROTO_BIT(PROTO_STATUS_REP_STORE);
    if (ps.last_flush_s > 0)
        PROTO_SET(rep, PROTO_STATUS_REP_LAST_FLUSH);
    if (ps.failing)
        PROTO_SET(rep, PROTO_STATUS_REP_STORE_ERROR);
}

/* The daily limits' counters, for status: in zone z; -1 when out of
 * memory. */
static int
daily_status(struct daemon *d, msgpack_zone *z, struct proto_status_rep *rep)
{
    size_t n = daily_list(d->daily, clock_wall(), NULL, 0);
    struct daily_status *ds;
    struct proto_daily_limit *v;

    if (n == 0)
        return 0;
    if ((ds = msgpack_zone_malloc(z, sizeof(*ds) * n)) == NULL ||
        (v = msgpack_zone_malloc(z, sizeof(*v) * n)) == NULL)
        return -1;
    n = daily_list(d->daily, clock_wall(), ds, n);
    for (size_t i = 0; i < n; i++) {
        memset(&v[i], 0, sizeof(v[i]));
        v[i].name = request_str(ds[i].name);
        v[i].unit = request_str(daily_unit_name(ds[i].unit));
        v[i].limit = (uint64_t)ds[i].limit;
        v[i].used = (uint64_t)ds[i].used;
        v[i].remaining = (uint64_t)ds[i].remaining;
        v[i].frees_at = ds[i].frees_at_s;
        if (ds[i].has_frees_at)
            PROTO_SET(&v[i], PROTO_DAILY_LIMIT_FREES_AT);
        /* Multi-host mode: used is the fleet's, and this host's part. */
        if (d->gdaily != NULL) {
            v[i].own_used = (uint64_t)ds[i].own;
            PROTO_SET(&v[i], PROTO_DAILY_LIMIT_OWN_USED);
        }
    }
    rep->daily_limits.v = v;
    rep->daily_limits.n = (uint32_t)n;
    PROTO_SET(rep, PROTO_STATUS_REP_DAILY_LIMITS);
    return 0;
}

/* The daily limits' gauges: what each counter has left. */
static void
daily_gauges(struct daemon *d, struct telemetry *t)
{
    struct daily_status ds[2 * CONFIG_MAX_PROVIDERS];
    size_t n = daily_list(d->daily, clock_wall(), ds,
                          sizeof(ds) / sizeof(ds[0]));

    for (size_t i = 0; i < n && i < sizeof(ds) / sizeof(ds[0]); i++)
        telemetry_daily(t, ds[i].name, daily_unit_name(ds[i].unit),
                        ds[i].remaining);
}

/* p's per-minute limits that exist, configured or learned. */
static void
limit_gauges(struct telemetry *t, const struct provider *p)
{
    enum limit_source rate = buckets_rate_source(p);
    enum limit_source tpm = buckets_tpm_source(p);

    if (rate != LIMIT_NONE)
        telemetry_provider_limit(t, p->name, "requests_per_min",
                                 buckets_source_name(rate),
                                 p->bucket.cfg.rate_per_sec * 60);
    if (tpm != LIMIT_NONE && p->bucket.cfg.tokens_per_min > 0)
        telemetry_provider_limit(t, p->name, "tokens_per_min",
                                 buckets_source_name(tpm),
                                 p->bucket.cfg.tokens_per_min);
}

/* Multi-host mode: llmguard_redis_up, _errors_total, the fallback's
 * grants. */
static void
redis_gauges(struct daemon *d, struct telemetry *t)
{
    struct global_status gs;

    global_status(d->global, &gs);
    telemetry_redis(t, gs.connected, global_take_errors(d->global));
    for (size_t i = 0; i < buckets_count(d->buckets); i++) {
        const char *name = buckets_at(d->buckets, i)->name;
        telemetry_fallback_grants(t, name,
                                  global_take_fallback_grants(d->global,
                                                              name));
    }
}

void
ops_refresh_gauges(struct telemetry *t, void *arg)
{
    struct daemon *d = arg;
    double now = clock_mono();

    daily_gauges(d, t);
    for (size_t i = 0; i < buckets_count(d->buckets); i++) {
        struct provider *p = buckets_at(d->buckets, i);
        bool llm = p->bucket.cfg.tokens_per_min > 0;
        telemetry_provider(t, p->name, limiter_available(&p->bucket, now),
                           llm ? limiter_available_llm(&p->bucket, now) : NAN,
                           !router_is_healthy(permits_router(d->permits),
                                              (int)i, now));
        limit_gauges(t, p);
    }
    if (d->global != NULL)
        redis_gauges(d, t);
}

/* A copy of s in the reply's zone, NULL when out of memory. */
static char *
zone_strdup(struct conn *c, const char *s)
{
    char *p = msgpack_zone_malloc(conn_zone(c), strlen(s) + 1);

    return p != NULL ? strcpy(p, s) : NULL;
}

/* The fleet's configuration in the redis block, once it has been read. */
static int
redis_config_status(struct conn *c, const struct global_status *gs,
                    struct proto_redis_status *rs)
{
    struct proto_redis_config *rc;
    char *hash, *host, *own;

    if (!gs->have_config)
        return 0;
    rc = msgpack_zone_malloc(conn_zone(c), sizeof(*rc));
    hash = zone_strdup(c, gs->config_hash);
    host = zone_strdup(c, gs->config_host);
    own = zone_strdup(c, gs->own_hash);
    if (rc == NULL || hash == NULL || host == NULL || own == NULL)
        return -1;
    memset(rc, 0, sizeof(*rc));
    rc->hash = request_str(hash);
    rc->host = request_str(host);
    rc->loaded_at = gs->config_loaded_at;
    rc->differs = gs->config_differs;
    rc->own_hash = request_str(own);
    rs->config = rc;
    PROTO_SET(rs, PROTO_REDIS_STATUS_CONFIG);
    return 0;
}

/* Multi-host mode: the redis block of status, in the reply's zone. */
static int
redis_status(struct daemon *d, struct conn *c, struct proto_status_rep *rep)
{
    struct proto_redis_status *rs;
    struct global_status gs;
    char *url, *last;

    global_status(d->global, &gs);
    rs = msgpack_zone_malloc(conn_zone(c), sizeof(*rs));
    url = msgpack_zone_malloc(conn_zone(c), strlen(gs.url) + 1);
    last = msgpack_zone_malloc(conn_zone(c), strlen(gs.last_error) + 1);
    if (rs == NULL || url == NULL || last == NULL)
        return -1;
    memset(rs, 0, sizeof(*rs));
    rs->url = request_str(strcpy(url, gs.url));
    rs->state = request_str(gs.connected ? "connected" : "unreachable");
    rs->hosts = (uint64_t)gs.hosts;
    rs->last_error = request_str(strcpy(last, gs.last_error));
    if (redis_config_status(c, &gs, rs) < 0)
        return -1;
    rep->redis = rs;
    PROTO_SET(rep, PROTO_STATUS_REP_REDIS);
    return 0;
}

/* The quota settings in force (multi-host mode: the fleet's newest
 * configuration's, and the host whose it is). */
static int
quota_settings_status(struct daemon *d, struct conn *c,
                      struct proto_status_rep *rep)
{
    rep->enforcement = request_str(config_enforcement_name(
        quota_hard(d->quota) ? ENFORCE_HARD : ENFORCE_SOFT));
    rep->window_days = quota_window_s(d->quota) / 86400.0;
    rep->default_quota_tokens = (uint64_t)quota_default_limit(d->quota);
    PROTO_SET(rep, PROTO_STATUS_REP_DEFAULT_QUOTA_TOKENS);
    if (d->global != NULL) {
        struct global_quota gq;
        char *host;

        global_fleet_quota(d->global, &gq);
        if ((host = zone_strdup(c, gq.host)) == NULL)
            return -1;
        rep->quota_from = request_str(host);
        PROTO_SET(rep, PROTO_STATUS_REP_QUOTA_FROM);
    }
    return 0;
}

static int
op_status(struct daemon *d, struct conn *c, struct proto_req *req,
          struct proto_error *e)
{
    struct proto_status_rep rep = { 0 };
    struct proto_provider_status *ps = NULL;
    size_t n = buckets_count(d->buckets);
    double now = clock_mono(), wall = clock_wall();

    rep.enabled = d->cfg.rate_limit_enabled;
    rep.policy = request_str(config_policy_name(d->cfg.routing_policy));
    if (quota_settings_status(d, c, &rep) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    if (n > 0 &&
        (ps = msgpack_zone_malloc(conn_zone(c), sizeof(*ps) * n)) == NULL)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++)
        provider_status(d, i, now, wall, &ps[i]);
    rep.providers.v = ps;
    rep.providers.n = (uint32_t)n;
    if (models_status(d, c, now, wall, &rep) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    daemon_status(d, now, &rep);
    if (daily_status(d, conn_zone(c), &rep) < 0 ||
        (d->global != NULL && redis_status(d, c, &rep) < 0))
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    conn_reply(c, PROTO_OP_STATUS, req->id, &rep);
    return 0;
}

/* ---- quotas ------------------------------------------------------------ */

/* The reply to a quota_reserve decided (qd allowed). */
static void
reserve_reply(struct daemon *d, struct conn *c, uint64_t id,
              const struct quota_decision *qd, bool changed)
{
    struct proto_quota_reserve_rep rep = { 0 };

    rep.allowed = true;
    rep.over_quota = qd->over_quota;
    rep.subject = request_str(qd->subject);
    rep.tokens_used = (uint64_t)qd->used;
    rep.tokens_limit = (uint64_t)qd->limit;
    rep.tokens_remaining = (uint64_t)qd->remaining;
    rep.reset_at = qd->reset_at_s;
    if (qd->has_reset_at)
        PROTO_SET(&rep, PROTO_QUOTA_RESERVE_REP_RESET_AT);
    rep.reservation = qd->slot_start_ms;
    persist_reply(d->persist, c, PROTO_OP_QUOTA_RESERVE, id, &rep, changed);
}

/* Multi-host mode, hard: the check is Redis' (one script per call), or
 * while it is unreachable this host's share of the headroom.  Returns 1
 * when the reply comes later. */
static int
reserve_fleet(struct daemon *d, struct conn *c, uint64_t id,
              const struct subjects *s, int64_t tokens,
              struct quota_decision *qd, struct proto_error *e)
{
    struct gquota_req r = { .op = GQ_RESERVE, .id = id, .tokens = tokens };

    r.has_wf = s->workflow != NULL;
    r.has_tn = s->tenant != NULL;
    snprintf(r.wf, sizeof(r.wf), "%s", r.has_wf ? s->workflow : "");
    snprintf(r.tn, sizeof(r.tn), "%s", r.has_tn ? s->tenant : "");
    if (gquota_submit(d->gquota, c, &r) == 0)
        return 1;
    if (gquota_reserve_share(d->gquota, s->workflow, s->tenant, tokens,
                             clock_wall(), true, qd) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_reserve failed");
    return request_quota_decided(d->telemetry, s->workflow, s->tenant,
                                 tokens, qd, e);
}

static int
op_quota_reserve(struct daemon *d, struct conn *c, struct proto_req *req,
                 struct proto_error *e)
{
    const struct proto_quota_reserve_req *r = &req->u.quota_reserve;
    bool enabled = d->cfg.rate_limit_enabled;
    struct quota_decision qd;
    struct subjects s;
    int rc;

    if (request_subjects(&r->workflow_id,
                         PROTO_HAS(r, PROTO_QUOTA_RESERVE_REQ_WORKFLOW_ID),
                         &r->tenant_id,
                         PROTO_HAS(r, PROTO_QUOTA_RESERVE_REQ_TENANT_ID), &s,
                         e) < 0)
        return -1;
    if (r->tokens > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens too large");
    if (enabled && gquota_active(d->gquota) && quota_hard(d->quota)) {
        if ((rc = reserve_fleet(d, c, req->id, &s, (int64_t)r->tokens, &qd,
                                e)) != 0)
            return rc > 0 ? 0 : -1;
    } else if (enabled) {
        if (request_quota_gate(d->quota, d->telemetry, s.workflow, s.tenant,
                               (int64_t)r->tokens, clock_wall(), &qd, e) < 0)
            return -1;
    } else {
        /* Disabled: the numbers as they are, nothing charged, always
         * allowed (reserving 0 only looks). */
        if (quota_reserve(d->quota, s.workflow, s.tenant, 0, clock_wall(),
                          &qd) < 0)
            return proto_error_set(e, PROTO_E_INTERNAL,
                                   "quota_reserve failed");
        qd.allowed = true;
        qd.over_quota = false;
        telemetry_quota_remaining(d->telemetry, d->quota, s.workflow);
    }
    reserve_reply(d, c, req->id, &qd, enabled && r->tokens > 0);
    return 0;
}

static int
op_quota_commit(struct daemon *d, struct conn *c, struct proto_req *req,
                struct proto_error *e)
{
    const struct proto_quota_commit_req *r = &req->u.quota_commit;
    struct proto_quota_commit_rep rep = { 0 };
    bool enabled = d->cfg.rate_limit_enabled;
    double now = clock_wall();
    struct subjects s;

    if (request_subjects(&r->workflow_id,
                         PROTO_HAS(r, PROTO_QUOTA_COMMIT_REQ_WORKFLOW_ID),
                         &r->tenant_id,
                         PROTO_HAS(r, PROTO_QUOTA_COMMIT_REQ_TENANT_ID), &s,
                         e) < 0)
        return -1;
    if (r->estimate > INT64_MAX || r->actual > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens too large");
    /* A reservation is the start of a slot that has been: never later
     * than the current slot (it would never leave the window). */
    if (r->reservation > (int64_t)(now * 1e3) ||
        !quota_reservation_ok(d->quota, r->reservation))
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "reservation %lld is "
                               "not one quota_reserve gave",
                               (long long)r->reservation);
    if (enabled && quota_commit(d->quota, s.workflow, s.tenant,
                                r->reservation, (int64_t)r->estimate,
                                (int64_t)r->actual, now) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_commit failed");
    persist_reply(d->persist, c, PROTO_OP_QUOTA_COMMIT, req->id, &rep,
                  enabled && r->estimate != r->actual);
    return 0;
}

/* The status of one subject as this daemon holds it (multi-host mode:
 * with the fleet's usage last read). */
static int
status_reply(struct daemon *d, struct conn *c, uint64_t id,
             enum quota_kind kind, const char *ident, const char *subject)
{
    struct proto_quota_status_rep rep = { 0 };
    struct quota_status st;

    if (quota_status(d->quota, kind, ident, clock_wall(), &st) < 0)
        return -1;
    rep.subject = request_str(subject);
    rep.tokens_used = (uint64_t)st.tokens_used;
    rep.tokens_remaining = (uint64_t)st.tokens_remaining;
    rep.tokens_limit = (uint64_t)st.tokens_limit;
    rep.window_start = st.window_start_s;
    rep.window_end = st.window_end_s;
    rep.reset_at = st.reset_at_s;
    if (st.has_reset_at)
        PROTO_SET(&rep, PROTO_QUOTA_STATUS_REP_RESET_AT);
    rep.known = st.known;
    PROTO_SET(&rep, PROTO_QUOTA_STATUS_REP_KNOWN);
    conn_reply(c, PROTO_OP_QUOTA_STATUS, id, &rep);
    return 0;
}

/* A request for one subject, to wait for Redis with. */
static void
one_req(struct gquota_req *r, enum gquota_op op, uint64_t id,
        const struct one_subject *o, int64_t limit)
{
    memset(r, 0, sizeof(*r));
    r->op = op;
    r->id = id;
    r->kind = o->kind;
    r->limit = limit;
    snprintf(r->ident, sizeof(r->ident), "%s", o->id);
    snprintf(r->subject, sizeof(r->subject), "%s", o->subject);
}

static int
op_quota_status(struct daemon *d, struct conn *c, struct proto_req *req,
                struct proto_error *e)
{
    struct gquota_req r;
    struct one_subject o;

    if (request_one_subject(&req->u.quota_subject, &o, e) < 0)
        return -1;
    /* Multi-host mode reads the fleet's usage (the local view while
     * Redis is unreachable). */
    one_req(&r, GQ_STATUS, req->id, &o, 0);
    if (gquota_active(d->gquota) && gquota_submit(d->gquota, c, &r) == 0)
        return 0;
    if (status_reply(d, c, req->id, o.kind, o.id, o.subject) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_status failed");
    return 0;
}

/* quota_set, quota_unset, quota_reset applied here (after Redis took
 * them, in multi-host mode); r holds the subject.  -1 with e filled. */
static int
admin_apply(struct daemon *d, struct conn *c, const struct gquota_req *r,
            struct proto_error *e)
{
    struct proto_quota_set_rep set = { 0 };
    struct proto_quota_unset_rep unset = { 0 };
    struct proto_quota_reset_rep reset = { 0 };
    struct quota_status st;
    uid_t uid = conn_uid(c);

    switch (r->op) {
    case GQ_SET:
        if (quota_set(d->quota, r->kind, r->ident, r->limit) < 0)
            return proto_error_set(e, PROTO_E_INTERNAL, "quota_set failed");
        log_info("uid %u set the quota of %s to %lld tokens", (unsigned)uid,
                 r->subject, (long long)r->limit);
        set.subject = request_str(r->subject);
        set.tokens_limit = (uint64_t)r->limit;
        persist_reply(d->persist, c, PROTO_OP_QUOTA_SET, r->id, &set, true);
        return 0;
    case GQ_RESET:
        if (quota_reset(d->quota, r->kind, r->ident) < 0)
            return proto_error_set(e, PROTO_E_INTERNAL, "quota_reset failed");
        log_info("uid %u reset the usage of %s", (unsigned)uid, r->subject);
        reset.subject = request_str(r->subject);
        persist_reply(d->persist, c, PROTO_OP_QUOTA_RESET, r->id, &reset,
                      true);
        return 0;
    default:
        if (quota_unset(d->quota, r->kind, r->ident) < 0 ||
            quota_status(d->quota, r->kind, r->ident, clock_wall(), &st) < 0)
            return proto_error_set(e, PROTO_E_INTERNAL, "quota_unset failed");
        log_info("uid %u dropped the quota override of %s", (unsigned)uid,
                 r->subject);
        unset.subject = request_str(r->subject);
        unset.tokens_limit = (uint64_t)st.tokens_limit;
        persist_reply(d->persist, c, PROTO_OP_QUOTA_UNSET, r->id, &unset,
                      true);
        return 0;
    }
}

static int
admin_busy(struct proto_error *e)
{
    return proto_error_set(e, PROTO_E_BUSY, "Redis is unreachable: quota "
                           "changes are the fleet's and wait for it "
                           "(nothing changed)");
}

/* An admin op: in multi-host mode through Redis first (busy while it is
 * unreachable), then here. */
static int
admin_op(struct daemon *d, struct conn *c, struct proto_req *req,
         enum gquota_op op, struct proto_error *e)
{
    const struct proto_quota_subject_req *q = &req->u.quota_subject;
    struct gquota_req r;
    struct one_subject o;

    if (request_one_subject(q, &o, e) < 0)
        return -1;
    if (op == GQ_SET && q->limit > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "limit too large");
    one_req(&r, op, req->id, &o, op == GQ_SET ? (int64_t)q->limit : 0);
    if (!gquota_active(d->gquota))
        return admin_apply(d, c, &r, e);
    if (gquota_submit(d->gquota, c, &r) < 0)
        return admin_busy(e);
    return 0;
}

static int
op_quota_set(struct daemon *d, struct conn *c, struct proto_req *req,
             struct proto_error *e)
{
    return admin_op(d, c, req, GQ_SET, e);
}

static int
op_quota_reset(struct daemon *d, struct conn *c, struct proto_req *req,
               struct proto_error *e)
{
    return admin_op(d, c, req, GQ_RESET, e);
}

static int
op_quota_unset(struct daemon *d, struct conn *c, struct proto_req *req,
               struct proto_error *e)
{
    return admin_op(d, c, req, GQ_UNSET, e);
}

void
ops_quota_done(struct conn *c, struct gquota_req *r, void *arg)
{
    struct daemon *d = arg;
    struct proto_error e;
    int rc = 0;

    switch (r->op) {
    case GQ_STATUS:
        if (status_reply(d, c, r->id, r->kind, r->ident, r->subject) < 0)
            rc = proto_error_set(&e, PROTO_E_INTERNAL, "quota_status failed");
        break;
    case GQ_RESERVE:
        if (!r->answered) {     /* Redis did not answer: the share */
            struct subjects s = { .workflow = r->has_wf ? r->wf : NULL,
                                  .tenant = r->has_tn ? r->tn : NULL };
            rc = gquota_reserve_share(d->gquota, s.workflow, s.tenant,
                                      r->tokens, clock_wall(), true, &r->d);
            rc = rc < 0 ? proto_error_set(&e, PROTO_E_INTERNAL,
                                          "quota_reserve failed") :
                 request_quota_decided(d->telemetry, s.workflow, s.tenant,
                                       r->tokens, &r->d, &e);
        } else {
            rc = request_quota_decided(d->telemetry,
                                       r->has_wf ? r->wf : NULL,
                                       r->has_tn ? r->tn : NULL, r->tokens,
                                       &r->d, &e);
        }
        if (rc == 0)
            reserve_reply(d, c, r->id, &r->d, r->tokens > 0);
        break;
    default:
        rc = r->answered ? admin_apply(d, c, r, &e) : admin_busy(&e);
        break;
    }
    if (rc < 0)
        conn_error(c, r->id, &e);
    conn_flush(c);
}

#define QUOTA_LIST_DEFAULT 20
#define QUOTA_LIST_MAX 100      /* 100 ids of 256 bytes fit in a frame */

static int
op_quota_list(struct daemon *d, struct conn *c, struct proto_req *req,
              struct proto_error *e)
{
    const struct proto_quota_list_req *r = &req->u.quota_list;
    struct proto_quota_list_rep rep = { 0 };
    uint64_t n = PROTO_HAS(r, PROTO_QUOTA_LIST_REQ_TOP) ? r->top :
                 QUOTA_LIST_DEFAULT;
    struct proto_quota_entry *out;
    struct quota_entry *top;
    size_t count, total;

    if (n < 1 || n > QUOTA_LIST_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "top must be 1 to %d, "
                               "not %llu", QUOTA_LIST_MAX,
                               (unsigned long long)n);
    top = msgpack_zone_malloc(conn_zone(c), sizeof(*top) * n);
    out = msgpack_zone_malloc(conn_zone(c), sizeof(*out) * n);
    if (top == NULL || out == NULL)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    if (quota_top(d->quota, r->tenant ? QUOTA_TENANT : QUOTA_WORKFLOW,
                  clock_wall(), top, n, &count, &total) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_list failed");
    for (size_t i = 0; i < count; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        out[i].subject = request_str(top[i].subject);
        out[i].tokens_used = (uint64_t)top[i].st.tokens_used;
        out[i].tokens_limit = (uint64_t)top[i].st.tokens_limit;
        out[i].tokens_remaining = (uint64_t)top[i].st.tokens_remaining;
        out[i].override = top[i].st.has_override;
    }
    rep.subjects.v = out;
    rep.subjects.n = (uint32_t)count;
    rep.total = total;
    conn_reply(c, PROTO_OP_QUOTA_LIST, req->id, &rep);
    return 0;
}

/* ---- ops served by a subsystem ----------------------------------------- */

static int
op_select_provider(struct daemon *d, struct conn *c, struct proto_req *req,
                   struct proto_error *e)
{
    return permits_select_provider(d->permits, c, req, e);
}

static int
op_permit(struct daemon *d, struct conn *c, struct proto_req *req,
          struct proto_error *e)
{
    return permits_permit(d->permits, c, req, e);
}

static int
op_report(struct daemon *d, struct conn *c, struct proto_req *req,
          struct proto_error *e)
{
    return permits_report(d->permits, c, req, e);
}

static int
op_explain(struct daemon *d, struct conn *c, struct proto_req *req,
           struct proto_error *e)
{
    return explain_op(d->decisions, c, req, e);
}

static int
op_metrics(struct daemon *d, struct conn *c, struct proto_req *req,
           struct proto_error *e)
{
    return telemetry_op_metrics(d->telemetry, c, req, e);
}

static int
op_reload(struct daemon *d, struct conn *c, struct proto_req *req,
          struct proto_error *e)
{
    struct proto_reload_rep rep = { 0 };
    char err[PROTO_ERRMSG_MAX];

    log_info("uid %u asked for a reload", (unsigned)conn_uid(c));
    if (reload_apply(d, err, sizeof(err)) < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "reload refused, the "
                               "old configuration stays: %s", err);
    rep.providers = buckets_count(d->buckets);
    rep.env_file = request_str(d->cfg.env_file);
    conn_reply(c, PROTO_OP_RELOAD, req->id, &rep);
    return 0;
}

static const struct {
    op_handler fn;
    bool admin;         /* root and the daemon's own uid only */
} op_table[PROTO_OP__COUNT] = {
    [PROTO_OP_HELLO] = { op_hello, false },
    [PROTO_OP_PING] = { op_ping, false },
    [PROTO_OP_ACQUIRE] = { op_acquire, false },
    [PROTO_OP_RELEASE] = { op_release, false },
    [PROTO_OP_LIMITER_STATUS] = { op_limiter_status, false },
    [PROTO_OP_STATUS] = { op_status, false },
    [PROTO_OP_QUOTA_RESERVE] = { op_quota_reserve, false },
    [PROTO_OP_QUOTA_COMMIT] = { op_quota_commit, false },
    [PROTO_OP_QUOTA_STATUS] = { op_quota_status, false },
    [PROTO_OP_QUOTA_SET] = { op_quota_set, true },
    [PROTO_OP_QUOTA_RESET] = { op_quota_reset, true },
    [PROTO_OP_SELECT_PROVIDER] = { op_select_provider, false },
    [PROTO_OP_PERMIT] = { op_permit, false },
    [PROTO_OP_REPORT] = { op_report, false },
    [PROTO_OP_METRICS] = { op_metrics, false },
    [PROTO_OP_RELOAD] = { op_reload, true },
    [PROTO_OP_QUOTA_UNSET] = { op_quota_unset, true },
    [PROTO_OP_QUOTA_LIST] = { op_quota_list, false },
    [PROTO_OP_EXPLAIN] = { op_explain, false },
};

void
ops_dispatch(struct conn *c, struct proto_req *req, void *arg)
{
    struct daemon *d = arg;
    uid_t uid = conn_uid(c);
    struct proto_error e;

    if (op_table[req->op].admin && uid != 0 && uid != d->uid) {
        proto_error_set(&e, PROTO_E_PERMISSION_DENIED,
                        "%s is an admin op: uid %u may not use it",
                        proto_op_name(req->op), (unsigned)uid);
        log_throttled(&d->denied, clock_mono(), LOG_LVL_WARN,
                      "refused (permission_denied): %s", e.msg);
        conn_error(c, req->id, &e);
        return;
    }
    if (op_table[req->op].fn == NULL) {     /* a codec row without a handler */
        proto_error_set(&e, PROTO_E_UNKNOWN_OP, "op %s is not served",
                        proto_op_name(req->op));
        conn_error(c, req->id, &e);
        return;
    }
    if (op_table[req->op].fn(d, c, req, &e) < 0)
        conn_error(c, req->id, &e);
}
