/* permits.c - permit (quota + route + token) and report, and their calls. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define HASH_NONFATAL_OOM 1     /* a failed add leaves hh.tbl NULL */
#include <uthash.h>

#include "buckets.h"
#include "clock.h"
#include "daily.h"
#include "decisions.h"
#include "feedback.h"
#include "gquota.h"
#include "health.h"
#include "log.h"
#include "parking.h"
#include "permits.h"
#include "persist.h"
#include "quota.h"
#include "ratehdr.h"
#include "request.h"
#include "router.h"
#include "server.h"
#include "telemetry.h"
#include "trace.h"

#define CALL_ID_MAX PERMITS_CALL_ID_MAX
#define CALL_TRIED_MAX 8        /* deployments a call remembers trying */

/* The daily limits one attempt counts on: its provider's (and, where
 * models have them, its model's: see attempt_limits()). */
#define PERMITS_DAILY_PER_ATTEMPT 2

/* One count of an attempt on a daily limit. */
struct daily_count {
    char name[PERMITS_DAILY_NAME_MAX];  /* "provider/<name>" */
    int64_t slot;                       /* the handle to reconcile */
};

struct permits {
    struct permits_deps d;
    struct router *router;          /* index i is buckets_at(i) */
    struct router *models;          /* the deployments: index i is model
                                       bucket i and cfg->models[i] */
    struct permit *table;           /* granted, unreported: uthash by id */
    uint64_t next_id;
    int slot;                       /* connection slot: struct conn_permits */
    struct log_throttle refusals[PROTO_E__COUNT];   /* by error code */
    struct log_throttle malformed;  /* providers' unreadable headers */
};

struct quota_wait;

/* A connection's unreported permits and open calls, in its slot. */
struct conn_permits {
    TAILQ_HEAD(, permit) permits;
    TAILQ_HEAD(, quota_wait) quota_waits;   /* for the fleet's quota */
    struct call *calls;             /* uthash by call_id */
    struct permits *owner;
};

/* One logical call: every attempt that carried the same call_id. */
struct call {
    UT_hash_handle hh;              /* in conn_permits.calls by id */
    char id[CALL_ID_MAX + 1];       /* "" for a call without a call_id */
    struct conn_permits *cp;        /* its connection's */
    struct permits *owner;
    unsigned attempts;              /* permits granted */
    /* Attempts live: from their permit request until their report, their
     * refusal or their connection's end, waits included (for a token,
     * parked, for the fleet's quota script).  The call ends only when
     * none is, so a refused attempt never ends it under a waiting one. */
    unsigned live;
    bool started;                   /* call_start ran: its first permit */
    bool over;                      /* a report said final: the call ends
                                       with its last live attempt */
    bool rate_limited;
    bool success;
    /* What its span says (llmguardd(8), "Traces"). */
    char workflow[QUOTA_ID_MAX + 1], tenant[QUOTA_ID_MAX + 1];
    char routed_to[CONFIG_NAME_MAX];    /* the last attempt's provider */
    char model[CONFIG_MODEL_MAX];       /* and its model id, "" for none */
    /* The deployments its attempts went to (by alias): a model permit of
     * the call is not routed to them again. */
    char tried[CALL_TRIED_MAX][CONFIG_NAME_MAX];
    unsigned ntried;
    uint64_t tokens_estimate;
    double wait_ms;                 /* waited for tokens, all attempts */
    bool quota_allowed, has_remaining;
    uint64_t quota_remaining;
    uint8_t trace_id[16], span_id[8], parent_span_id[8];
    bool has_parent;
    int64_t start_unix_ns;
};

/* A granted attempt, until its report (or its connection's end). */
struct permit {
    UT_hash_handle hh;              /* in permits.table by id */
    TAILQ_ENTRY(permit) conn_entry;
    uint64_t id;
    struct conn *conn;
    struct conn_permits *cp;
    struct call *call;
    int provider;                   /* index, valid until the loop turns */
    char provider_name[CONFIG_NAME_MAX];    /* what a reload keeps */
    char model_alias[CONFIG_NAME_MAX];  /* its deployment, "" for none */
    char model_name[CONFIG_MODEL_MAX];  /* the provider's model id */
    char workflow[QUOTA_ID_MAX + 1], tenant[QUOTA_ID_MAX + 1];
    bool charged;                   /* a quota reservation to reconcile */
    int64_t reservation;
    uint64_t estimate;
    uint64_t llm_taken;             /* from the LLM-token bucket, granted */
    double started_s;               /* monotonic, when routed */
    uint64_t decision;              /* its seq in the decisions; 0: none */
    bool daily_charged;             /* its daily counts are taken: */
    uint8_t ndaily;                 /* how many: daily[0..ndaily-1] */
    struct daily_count daily[PERMITS_DAILY_PER_ATTEMPT];
    struct feedback_mark mark;      /* the grants of the bucket its
                                       headers speak of, its own in */
};

/* A permit on its way: what the grant needs to finish it, while it is
 * checked, routed, and maybe waits for a token. */
struct pending {
    struct permit pm;               /* filled but for id */
    struct permits *owner;
    double wait_start_s;
    bool quota_allowed, has_remaining, all_degraded;
    uint64_t quota_remaining;
    bool daily_out[CONFIG_MAX_PROVIDERS];   /* left by their daily limit */
    double parked_ms;               /* parked so far: all in cooldown */
    struct decision_draft dr;       /* what explain will say of it */
    /* A permit naming a model takes its deployment's tokens first; while
     * it waits for the provider's, they are held, and given back if those
     * never come. */
    bool holds_model;
    uint64_t model_llm;             /* the LLM tokens held */
    double deadline_s;              /* of the whole wait (monotonic) */
};

static const char *
or_null(const char *id)
{
    return id[0] != '\0' ? id : NULL;
}

/* ---- calls ------------------------------------------------------------- */

static void
call_free(struct call *call)
{
    if (call->id[0] != '\0' && call->cp != NULL)
        HASH_DEL(call->cp->calls, call);
    free(call);
}

/* c's permit state, created when new; NULL when out of memory. */
static struct conn_permits *
conn_permits(struct permits *p, struct conn *c)
{
    void **slot = conn_slot(c, p->slot);
    struct conn_permits *cp = *slot;

    if (cp == NULL && (cp = calloc(1, sizeof(*cp))) != NULL) {
        TAILQ_INIT(&cp->permits);
        TAILQ_INIT(&cp->quota_waits);
        cp->owner = p;
        *slot = cp;
    }
    return cp;
}

/* The call named id on cp, created when new; NULL when out of memory. */
static struct call *
call_get(struct conn_permits *cp, const struct proto_str *id, bool has_id)
{
    struct call *call = NULL;

    if (has_id)
        HASH_FIND(hh, cp->calls, id->ptr, id->len, call);
    if (call != NULL)
        return call;
    if ((call = calloc(1, sizeof(*call))) == NULL)
        return NULL;
    call->cp = cp;
    call->owner = cp->owner;
    call->quota_allowed = true;
    call->start_unix_ns = (int64_t)(clock_wall() * 1e9);
    if (has_id) {
        memcpy(call->id, id->ptr, id->len);
        HASH_ADD(hh, cp->calls, id, id->len, call);
        if (call->hh.tbl == NULL) {
            free(call);
            return NULL;
        }
    }
    return call;
}

/* The span of a finished call, to the OTLP exporter (when there is one). */
static void
call_span(struct call *call)
{
    struct trace_attr a[13];
    struct trace_span sp = { 0 };
    size_t n = 0;

    if (!telemetry_tracing(call->owner->d.telemetry))
        return;
#define ATTR_S(k, val) a[n++] = (struct trace_attr){ k, TRACE_STR, { .s = val } }
#define ATTR_I(k, val) a[n++] = (struct trace_attr){ k, TRACE_INT, { .i = val } }
#define ATTR_B(k, val) a[n++] = (struct trace_attr){ k, TRACE_BOOL, { .b = val } }
#define ATTR_D(k, val) a[n++] = (struct trace_attr){ k, TRACE_DOUBLE, { .d = val } }
    ATTR_S("llm.workflow_id", call->workflow);
    ATTR_S("llm.tenant_id", call->tenant);
    ATTR_I("llm.tokens_estimate", (int64_t)call->tokens_estimate);
    ATTR_B("llm.ratelimit_acquired", call->attempts > 0);
    ATTR_S("llm.ratelimit_provider", call->routed_to);
    ATTR_D("llm.ratelimit_wait_ms", call->wait_ms);
    ATTR_B("llm.quota.allowed", call->quota_allowed);
    ATTR_I("llm.quota.remaining", (int64_t)call->quota_remaining);
    ATTR_S("llm.routed_to", call->routed_to);
    ATTR_I("llm.failover_attempts",
           call->attempts > 0 ? (int64_t)call->attempts - 1 : 0);
    ATTR_B("llm.rate_limited", call->rate_limited);
    ATTR_B("llm.success", call->success);
    if (call->model[0] != '\0')
        ATTR_S("llm.model", call->model);
#undef ATTR_S
#undef ATTR_I
#undef ATTR_B
#undef ATTR_D
    memcpy(sp.trace_id, call->trace_id, sizeof(sp.trace_id));
    memcpy(sp.span_id, call->span_id, sizeof(sp.span_id));
    memcpy(sp.parent_span_id, call->parent_span_id, sizeof(sp.parent_span_id));
    sp.has_parent = call->has_parent;
    sp.name = "llm.call";
    sp.start_unix_ns = call->start_unix_ns;
    sp.end_unix_ns = (int64_t)(clock_wall() * 1e9);
    sp.error = !call->success;
    sp.status_message = call->success ? NULL : call->attempts == 0 ?
                        "no attempt was permitted" : "the call failed";
    sp.attrs = a;
    sp.nattrs = n;
    telemetry_span(call->owner->d.telemetry, &sp);
}

/* The call is over: nothing more will be reported for it. */
static void
call_end(struct call *call)
{
    call_span(call);
    log_debug("call '%s' ended after %u attempt(s): %s%s", call->id,
              call->attempts, call->success ? "success" : "failure",
              call->rate_limited ? ", rate limited" : "");
    call_free(call);
}

/* The first permit of a call: its subjects, estimate and trace context. */
static void
call_start(struct call *call, const char *workflow, const char *tenant,
           const struct proto_permit_req *r)
{
    call->started = true;
    memcpy(call->workflow, workflow, sizeof(call->workflow));
    memcpy(call->tenant, tenant, sizeof(call->tenant));
    call->tokens_estimate = r->tokens_estimate;
    /* No exporter, no span: its ids are not needed. */
    if (!telemetry_tracing(call->owner->d.telemetry))
        return;
    if (PROTO_HAS(r, PROTO_PERMIT_REQ_TRACEPARENT) &&
        trace_parse_traceparent(r->traceparent.ptr, r->traceparent.len,
                                call->trace_id, call->parent_span_id) == 0)
        call->has_parent = true;
    else
        trace_random_id(call->trace_id, sizeof(call->trace_id));
    trace_random_id(call->span_id, sizeof(call->span_id));
}

/* ---- routing ----------------------------------------------------------- */

/* A router over confs with cfg's policy and cooldown; NULL (logged). */
static struct router *
router_make(const struct router_provider_conf *confs, size_t n,
            const struct config *cfg)
{
    struct router *r = router_new(confs, n,
                                  (enum router_policy)cfg->routing_policy,
                                  cfg->provider_cooldown_s);

    if (r == NULL)
        log_error("router: out of memory");
    return r;
}

/* r replaces *slot, keeping the health of what stays; its entries are
 * b's buckets, in the same order. */
static void
router_swap(struct router **slot, struct router *r, struct buckets *b)
{
    if (*slot != NULL)
        router_copy_state(r, *slot);
    router_free(*slot);
    *slot = r;
    assert(router_count(r) == buckets_count(b));
    for (size_t i = 0; i < router_count(r); i++)
        assert(strcmp(router_name(r, (int)i),
                      buckets_at(b, i)->name) == 0);
}

struct router *
permits_router_new(const struct config *cfg)
{
    struct router_provider_conf confs[CONFIG_MAX_PROVIDERS];

    for (size_t i = 0; i < cfg->nproviders; i++) {
        confs[i].name = cfg->providers[i].name;
        confs[i].priority = (int)cfg->providers[i].priority;
        confs[i].cost_per_1k_tokens = cfg->providers[i].cost_per_1k_tokens;
    }
    return router_make(confs, cfg->nproviders, cfg);
}

void
permits_reconfigure(struct permits *p, struct router *r)
{
    router_swap(&p->router, r, p->d.buckets);
}

const struct router *
permits_router(const struct permits *p)
{
    return p->router;
}

struct router *
permits_router_rw(struct permits *p)
{
    return p->router;
}

struct router *
permits_model_router_rw(struct permits *p)
{
    return p->models;
}

size_t
permits_open(const struct permits *p)
{
    return HASH_COUNT(p->table);
}

/* The name of provider idx. */
static const char *
provider_name(struct permits *p, int idx)
{
    return buckets_at(p->d.buckets, (size_t)idx)->name;
}

/* Resolve names[] to flags of the providers; -1 (e filled) for a name
 * that is not clean UTF-8 or not configured. */
static int
exclusion(struct permits *p, const struct proto_strarr *names, bool *flags,
          struct proto_error *e)
{
    memset(flags, 0, router_count(p->router) * sizeof(*flags));
    for (uint32_t i = 0; i < names->n; i++) {
        int idx;
        if (request_text(&names->v[i], "exclude", e) < 0)
            return -1;
        idx = router_find(p->router, names->v[i].ptr, names->v[i].len);
        if (idx < 0)
            return proto_error_set(e, PROTO_E_UNKNOWN_PROVIDER,
                                   "exclude: unknown provider '%.*s'",
                                   (int)(names->v[i].len > 64 ? 64 :
                                         names->v[i].len), names->v[i].ptr);
        flags[idx] = true;
    }
    return 0;
}

/* The preferred provider's index, -1 for none, -2 (e filled) for a bad
 * or unknown one. */
static int
preferred_index(struct permits *p, const struct proto_str *name, bool has,
                struct proto_error *e)
{
    int idx;

    if (!has || name->len == 0)
        return -1;
    if (request_text(name, "preferred", e) < 0)
        return -2;
    if ((idx = router_find(p->router, name->ptr, name->len)) < 0)
        return proto_error_set(e, PROTO_E_UNKNOWN_PROVIDER,
                               "preferred: unknown provider '%.*s'",
                               (int)(name->len > 64 ? 64 : name->len),
                               name->ptr) - 1;
    return idx;
}

static int
no_provider(struct permits *p, struct proto_error *e)
{
    return proto_error_set(e, PROTO_E_NO_PROVIDER, router_count(p->router) ?
                           "every provider is excluded" :
                           "no provider is configured");
}

int
permits_select_provider(struct permits *p, struct conn *c,
                        struct proto_req *req, struct proto_error *e)
{
    const struct proto_select_provider_req *r = &req->u.select_provider;
    struct proto_select_provider_rep rep = { 0 };
    bool excluded[CONFIG_MAX_PROVIDERS];
    int pref, idx;

    pref = preferred_index(p, &r->preferred,
                           PROTO_HAS(r, PROTO_SELECT_PROVIDER_REQ_PREFERRED), e);
    if (pref < -1)
        return -1;
    if (exclusion(p, &r->exclude, excluded, e) < 0)
        return -1;
    idx = router_select(p->router, pref, excluded, clock_mono(),
                        &rep.all_degraded);
    if (idx < 0)
        return no_provider(p, e);
    rep.provider = request_str(provider_name(p, idx));
    conn_reply(c, PROTO_OP_SELECT_PROVIDER, req->id, &rep);
    return 0;
}

/* ---- permit ------------------------------------------------------------ */

static void daily_undo(struct permits *p, struct permit *pm);

/* Return an unused reservation: the attempt never happened. */
static void
unreserve(struct permits *p, struct permit *pm)
{
    daily_undo(p, pm);
    if (!pm->charged)
        return;
    quota_commit(p->d.quota, or_null(pm->workflow), or_null(pm->tenant),
                 pm->reservation, (int64_t)pm->estimate, 0, clock_wall());
    persist_changed(p->d.persist);
}

/* An attempt of call is refused, or lost before its permit: the call
 * ends unless another attempt of it is still live (waiting, or granted
 * and not reported). */
static void
call_refused(struct call *call)
{
    assert(call->live > 0);
    if (--call->live == 0)
        call_end(call);
}

/* An attempt of call whose connection closed: a call without call_id
 * ends with it, a named one with its connection (permits_drop_conn). */
static void
call_lost(struct call *call)
{
    assert(call->live > 0);
    call->live--;
    if (call->id[0] == '\0')
        call_end(call);
}

/* ---- daily limits (PROVIDER_<NAME>_RPD, _TPD) -------------------------- */

void
permits_daily_name(char *buf, size_t len, const char *provider)
{
    snprintf(buf, len, "provider/%s", provider);
}

int
permits_set_daily(struct daily *dl, const struct config *cfg)
{
    char name[PERMITS_DAILY_NAME_MAX];

    daily_clear_limits(dl);
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct provider_config *pc = &cfg->providers[i];
        if (pc->requests_per_day == 0 && pc->tokens_per_day == 0)
            continue;
        permits_daily_name(name, sizeof(name), pc->name);
        if (daily_set_limit(dl, name, pc->requests_per_day,
                            pc->tokens_per_day) < 0) {
            log_error("%s: out of memory", __func__);
            return -1;
        }
    }
    for (size_t i = 0; i < cfg->nmodels; i++) {
        const struct model_config *m = &cfg->models[i];
        if (m->requests_per_day == 0 && m->tokens_per_day == 0)
            continue;
        snprintf(name, sizeof(name), "model/%s", m->alias);
        if (daily_set_limit(dl, name, m->requests_per_day,
                            m->tokens_per_day) < 0) {
            log_error("%s: out of memory", __func__);
            return -1;
        }
    }
    return 0;
}

/*
 * The refusal of a daily limit: a timeout (nothing was taken, and the
 * caller may try again later) whose message starts "daily_limit", with
 * the limit's name as subject and, when it is known, when it frees
 * (reset_at) and in how many seconds (retry_after_s).
 */
static int
daily_refusal(const char *name, const struct daily_verdict *v, double wall,
              const char *lead, struct proto_error *e)
{
    const char *unit = daily_unit_name(v->unit);

    if (v->has_frees_at)
        proto_error_set(e, PROTO_E_TIMEOUT, "daily_limit: %s; %s has used "
                        "%lld of its %lld %s a day, the first frees in %.0f "
                        "s", lead, name, (long long)v->used,
                        (long long)v->limit, unit,
                        fmax(0, v->frees_at_s - wall));
    else
        proto_error_set(e, PROTO_E_TIMEOUT, "daily_limit: %s; %s takes %lld "
                        "%s a day, fewer than this asks", lead, name,
                        (long long)v->limit, unit);
    snprintf(e->subject, sizeof(e->subject), "%s", name);
    e->detail.subject = request_str(e->subject);
    PROTO_SET(&e->detail, PROTO_ERR_SUBJECT);
    if (v->has_frees_at) {
        e->detail.reset_at = v->frees_at_s;
        e->detail.retry_after_s = fmax(0, v->frees_at_s - wall);
        PROTO_SET(&e->detail, PROTO_ERR_RESET_AT);
        PROTO_SET(&e->detail, PROTO_ERR_RETRY_AFTER_S);
    }
    return -1;
}

int
permits_daily_gate(struct daily *dl, const char *provider, uint64_t llm,
                   double wall, struct proto_error *e)
{
    char name[PERMITS_DAILY_NAME_MAX];
    struct daily_verdict v;

    permits_daily_name(name, sizeof(name), provider);
    if (llm > INT64_MAX || daily_check(dl, name, 1, (int64_t)llm, wall,
                                       &v) < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "llm_tokens too "
                               "large");
    if (v.allowed)
        return 0;
    return daily_refusal(name, &v, wall, "the provider is at its daily "
                         "limit", e);
}

/* The provider that is out of its daily limit and frees first. */
struct daily_first {
    int idx;                        /* -1: none is out */
    char name[PERMITS_DAILY_NAME_MAX];  /* its limit that is out */
    struct daily_verdict v;
};

/*
 * The names of the daily limits an attempt on provider idx counts on,
 * into names[]: its provider's, and its deployment's when it goes to
 * model deployment alias (NULL or "": none); how many.
 */
static size_t
attempt_limits(struct permits *p, int idx, const char *alias,
               char names[PERMITS_DAILY_PER_ATTEMPT][PERMITS_DAILY_NAME_MAX])
{
    permits_daily_name(names[0], PERMITS_DAILY_NAME_MAX,
                       provider_name(p, idx));
    if (alias == NULL || alias[0] == '\0')
        return 1;
    snprintf(names[1], PERMITS_DAILY_NAME_MAX, "model/%s", alias);
    return 2;
}

/* Whether some daily limit of an attempt on idx cannot take one more
 * request of estimate tokens at wall: true, the limit in *name and *v. */
static bool
attempt_out(struct permits *p, int idx, const char *alias, uint64_t estimate,
            double wall, char *name, struct daily_verdict *v)
{
    char names[PERMITS_DAILY_PER_ATTEMPT][PERMITS_DAILY_NAME_MAX];
    size_t n = attempt_limits(p, idx, alias, names);

    for (size_t k = 0; k < n; k++) {
        if (daily_check(p->d.daily, names[k], 1, (int64_t)estimate, wall,
                        v) < 0 || v->allowed)
            continue;
        memcpy(name, names[k], PERMITS_DAILY_NAME_MAX);
        return true;
    }
    return false;
}

/* first keeps the limit that frees first: candidate i's, out at *v. */
static void
daily_first_note(struct daily_first *first, int i, const char *name,
                 const struct daily_verdict *v)
{
    if (first->idx >= 0 && (!v->has_frees_at || (first->v.has_frees_at &&
                            first->v.frees_at_s <= v->frees_at_s)))
        return;
    first->idx = i;
    first->v = *v;
    snprintf(first->name, sizeof(first->name), "%s", name);
}

/*
 * Flag in out[] each provider not excluded whose daily limits cannot take
 * one more request of estimate tokens at wall; returns how many, the one
 * that frees first in *first.
 */
static size_t
daily_out(struct permits *p, const bool *excluded, uint64_t estimate,
          double wall, bool *out, struct daily_first *first)
{
    char name[PERMITS_DAILY_NAME_MAX];
    struct daily_verdict v;
    size_t n = 0;

    first->idx = -1;
    for (size_t i = 0; i < router_count(p->router); i++) {
        out[i] = false;
        if (excluded[i] ||
            !attempt_out(p, (int)i, NULL, estimate, wall, name, &v))
            continue;
        out[i] = true;
        n++;
        daily_first_note(first, (int)i, name, &v);
    }
    return n;
}

/*
 * The deployments not excluded whose daily limits (their provider's or
 * their own) cannot take one more request of estimate tokens leave
 * excluded[]; returns how many, the one that frees first in *first.
 */
static size_t
model_daily_out(struct permits *p, uint64_t estimate, bool *excluded,
                struct daily_first *first)
{
    char name[PERMITS_DAILY_NAME_MAX];
    struct daily_verdict v;
    double wall = clock_wall();
    size_t n = 0;

    first->idx = -1;
    if (!p->d.cfg->rate_limit_enabled)
        return 0;
    for (size_t i = 0; i < p->d.cfg->nmodels; i++) {
        const struct model_config *m = &p->d.cfg->models[i];
        int pi = router_find(p->router, m->provider, strlen(m->provider));
        if (excluded[i] || pi < 0 ||
            !attempt_out(p, pi, m->alias, estimate, wall, name, &v))
            continue;
        excluded[i] = true;
        n++;
        daily_first_note(first, (int)i, name, &v);
    }
    return n;
}

/* Count the attempt pm on the daily limits of its provider, once. */
static void
daily_charge_pm(struct permits *p, struct permit *pm)
{
    char names[PERMITS_DAILY_PER_ATTEMPT][PERMITS_DAILY_NAME_MAX];
    size_t n;
    double wall = clock_wall();

    if (pm->daily_charged || !p->d.cfg->rate_limit_enabled)
        return;
    n = attempt_limits(p, pm->provider, pm->model_alias, names);
    pm->ndaily = 0;
    for (size_t k = 0; k < n; k++) {
        struct daily_count *dc = &pm->daily[pm->ndaily];
        if (!daily_limited(p->d.daily, names[k]))
            continue;
        if (daily_charge(p->d.daily, names[k], 1, (int64_t)pm->estimate,
                         wall, &dc->slot) < 0) {
            log_error("%s: out of memory: %s not counted", __func__,
                      names[k]);
            continue;
        }
        memcpy(dc->name, names[k], sizeof(dc->name));
        pm->ndaily++;
    }
    pm->daily_charged = true;
    if (pm->ndaily > 0)
        persist_changed(p->d.persist);
}

/* Give back pm's daily counts: the attempt never happened. */
static void
daily_undo(struct permits *p, struct permit *pm)
{
    double wall = clock_wall();

    if (!pm->daily_charged)
        return;
    for (size_t k = 0; k < pm->ndaily; k++) {
        const struct daily_count *dc = &pm->daily[k];
        daily_reconcile(p->d.daily, dc->name, DAILY_REQUESTS, dc->slot, 1, 0,
                        wall);
        daily_reconcile(p->d.daily, dc->name, DAILY_TOKENS, dc->slot,
                        (int64_t)pm->estimate, 0, wall);
    }
    if (pm->ndaily > 0)
        persist_changed(p->d.persist);
    pm->daily_charged = false;
    pm->ndaily = 0;
}

/* The report's tokens replace the estimate on the daily counts; whether
 * that changed one. */
static bool
daily_report(struct permits *p, const struct permit *pm,
             const struct proto_report_req *r)
{
    if (pm->ndaily == 0 || !PROTO_HAS(r, PROTO_REPORT_REQ_TOKENS_USED) ||
        r->tokens_used == pm->estimate)
        return false;
    for (size_t k = 0; k < pm->ndaily; k++)
        if (daily_reconcile(p->d.daily, pm->daily[k].name, DAILY_TOKENS,
                            pm->daily[k].slot, (int64_t)pm->estimate,
                            (int64_t)r->tokens_used, clock_wall()) < 0)
            log_error("%s: out of memory: %s not reconciled", __func__,
                      pm->daily[k].name);
    persist_changed(p->d.persist);
    return true;
}

/* ---- decisions (llmguardctl explain) ----------------------------------- */

_Static_assert(DECISION_CLIENT_ERROR - DECISION_OK ==
               (int)ROUTER_OUTCOME_CLIENT_ERROR,
               "decision outcomes follow the router's");

/* The decision outcome of a router outcome. */
static enum decision_outcome
decision_outcome(enum router_outcome o)
{
    return (enum decision_outcome)(DECISION_OK + (int)o);
}

/* Whether decisions are kept: drafts are filled only then. */
static bool
recording(const struct permits *p)
{
    return decisions_capacity(p->d.decisions) > 0;
}

/* The quota of each subject of pd into its draft, after the gate d at
 * now_s (wall clock); refused: the gate said quota_exceeded.  The subject
 * d names is as d found it (in multi-host mode, the fleet's usage and
 * limit), the other one as this host holds it. */
static void
draft_quota(struct permits *p, struct pending *pd,
            const struct quota_decision *d, bool refused, double now_s)
{
    const char *ids[2] = { pd->pm.workflow, pd->pm.tenant };
    struct decision_draft *dr = &pd->dr;
    char subject[QUOTA_SUBJECT_MAX];
    struct quota_status st;

    if (!recording(p))
        return;
    for (int k = 0; k < 2; k++) {
        enum quota_kind kind = k ? QUOTA_TENANT : QUOTA_WORKFLOW;
        if (ids[k][0] == '\0' ||
            quota_status(p->d.quota, kind, ids[k], now_s, &st) < 0)
            continue;
        if (quota_subject(subject, sizeof(subject), kind, ids[k]) == 0 &&
            strcmp(subject, d->subject) == 0) {
            st.tokens_used = d->used;
            st.tokens_limit = d->limit;
        }
        struct decision_quota *q = &dr->quota[dr->nquota++];
        q->tenant = k == 1;
        q->used = st.tokens_used;
        q->limit = st.tokens_limit;
        if (refused)
            q->verdict = st.tokens_used + (int64_t)pd->pm.estimate >
                         st.tokens_limit ? DECISION_QUOTA_REFUSED :
                         DECISION_QUOTA_OK;
        else
            q->verdict = st.tokens_used > st.tokens_limit ?
                         DECISION_QUOTA_OVER : DECISION_QUOTA_OK;
    }
}

/*
 * Every provider into pd's draft at now (monotonic): chosen (-1: none),
 * and why each other one was left: excluded, no token (no_token[i], may
 * be NULL), in its cooldown, or passed over by the policy.
 */
static void
draft_route(struct permits *p, struct pending *pd, const bool *excluded,
            int chosen, const bool *no_token, double now)
{
    struct decision_draft *dr = &pd->dr;
    size_t n = router_count(p->router);
    double wall = clock_wall();
    struct router_status rs;

    if (!recording(p))
        return;
    dr->routed = true;
    dr->all_degraded = pd->all_degraded;
    dr->nproviders = (uint8_t)(n < DECISIONS_MAX_PROVIDERS ? n :
                               DECISIONS_MAX_PROVIDERS);
    for (int i = 0; i < dr->nproviders; i++) {
        struct decision_provider *dp = &dr->providers[i].p;
        router_status(p->router, i, now, &rs);
        snprintf(dr->providers[i].name, sizeof(dr->providers[i].name), "%s",
                 router_name(p->router, i));
        memset(dp, 0, sizeof(*dp));
        dp->degraded = !rs.healthy;
        if (dp->degraded) {
            dp->cooldown_until = wall + rs.cooldown_remaining_s;
            dp->cause = (uint8_t)decision_outcome(rs.cause);
            dp->retry_after_s = rs.retry_after_s;
        }
        dp->why = i == chosen ? DECISION_CHOSEN :
                  excluded[i] ? DECISION_EXCLUDED :
                  pd->daily_out[i] ? DECISION_DAILY_LIMIT :
                  no_token != NULL && no_token[i] ? DECISION_NO_TOKEN :
                  dp->degraded ? DECISION_COOLDOWN : DECISION_NOT_CHOSEN;
    }
}

/* A refusal to the log, at most one line a second per error code. */
static void
log_refusal(struct permits *p, const struct pending *pd,
            const struct proto_error *e)
{
    const struct call *call = pd->pm.call;

    if (e->code != PROTO_E_QUOTA_EXCEEDED && e->code != PROTO_E_TIMEOUT &&
        e->code != PROTO_E_NO_PROVIDER)
        return;
    log_throttled(&p->refusals[e->code], clock_mono(), LOG_LVL_WARN,
                  "permit refused (%s): %s [call '%s', workflow '%s', "
                  "tenant '%s']", proto_errcode_name(e->code), e->msg,
                  call != NULL ? call->id : "", pd->pm.workflow,
                  pd->pm.tenant);
}

/* pd's decision into the ring, refused by e unless e is NULL; its seq (0:
 * not kept).  A refusal is logged. */
static uint64_t
decide(struct permits *p, struct pending *pd, const struct proto_error *e)
{
    const struct call *call = pd->pm.call;

    if (e != NULL) {
        log_refusal(p, pd, e);
        pd->dr.error_code = (int)e->code;
        snprintf(pd->dr.error, sizeof(pd->dr.error), "%s", e->msg);
    }
    if (!recording(p))
        return 0;
    return decisions_add(p->d.decisions, &pd->dr,
                         call != NULL ? call->id : "", pd->pm.workflow,
                         pd->pm.tenant);
}

/* The bucket a permit's provider headers speak of: its model deployment's
 * when it named a model, else its provider's. */
static struct provider *
feedback_bucket(struct permits *p, const struct permit *pm)
{
    if (pm->model_alias[0] != '\0')
        return buckets_find(p->d.models, pm->model_alias,
                            strlen(pm->model_alias));
    return buckets_at(p->d.buckets, (size_t)pm->provider);
}

/* Whether an attempt of call went to the deployment alias. */
static bool
call_tried(const struct call *call, const char *alias)
{
    for (unsigned i = 0; i < call->ntried; i++)
        if (strcmp(call->tried[i], alias) == 0)
            return true;
    return false;
}

/* Record the granted attempt pd on provider pd->pm.provider. */
static struct permit *
permit_add(struct permits *p, struct conn *c, struct pending *pd,
           double wait_ms, bool rate_limited)
{
    struct provider *fb;
    struct permit *pm = malloc(sizeof(*pm));
    struct call *call = pd->pm.call;

    if (pm == NULL)
        return NULL;
    *pm = pd->pm;
    pm->id = ++p->next_id;
    pm->conn = c;
    HASH_ADD(hh, p->table, id, sizeof(pm->id), pm);
    if (pm->hh.tbl == NULL) {
        free(pm);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&pm->cp->permits, pm, conn_entry);
    memcpy(pm->provider_name, provider_name(p, pm->provider),
           sizeof(pm->provider_name));
    if ((fb = feedback_bucket(p, pm)) != NULL)
        buckets_mark(fb, &pm->mark);
    /* What its grant took from the LLM-token buckets (llm_tokens()). */
    pm->llm_taken = pm->estimate;
    if (call->routed_to[0] != '\0' &&
        strcmp(call->routed_to, pm->provider_name) != 0) {
        log_debug("call '%s' fails over from %s to %s", call->id,
                  call->routed_to, pm->provider_name);
        telemetry_failover(p->d.telemetry, call->routed_to,
                           pm->provider_name);
    }
    call->attempts++;
    call->rate_limited |= rate_limited;
    call->wait_ms += wait_ms;
    memcpy(call->routed_to, pm->provider_name, sizeof(call->routed_to));
    memcpy(call->model, pm->model_name, sizeof(call->model));
    if (pm->model_alias[0] != '\0' && call->id[0] != '\0' &&
        !call_tried(call, pm->model_alias) && call->ntried < CALL_TRIED_MAX)
        memcpy(call->tried[call->ntried++], pm->model_alias,
               sizeof(call->tried[0]));
    return pm;
}

/* Grant: the attempt has its token on pd->pm.provider; record it and
 * answer. */
static void
grant(struct permits *p, struct conn *c, uint64_t req_id, struct pending *pd,
      double wait_ms, bool rate_limited)
{
    struct proto_permit_rep rep = { 0 };
    struct proto_error e;
    struct permit *pm;

    daily_charge_pm(p, &pd->pm);
    pm = permit_add(p, c, pd, wait_ms, rate_limited);

    if (pm == NULL) {
        unreserve(p, &pd->pm);
        proto_error_set(&e, PROTO_E_INTERNAL, "out of memory");
        decide(p, pd, &e);
        call_refused(pd->pm.call);
        conn_error(c, req_id, &e);
        return;
    }
    wait_ms += pd->parked_ms;
    pd->dr.permit_id = pm->id;
    pd->dr.wait_ms = wait_ms;
    pd->dr.parked_ms = pd->parked_ms;
    pm->decision = decide(p, pd, NULL);
    rep.permit_id = pm->id;
    rep.provider = request_str(provider_name(p, pm->provider));
    rep.wait_ms = wait_ms;
    rep.quota_allowed = pd->quota_allowed;
    rep.quota_remaining = pd->quota_remaining;
    if (pd->has_remaining)
        PROTO_SET(&rep, PROTO_PERMIT_REP_QUOTA_REMAINING);
    rep.rate_limited = rate_limited;
    rep.all_degraded = pd->all_degraded;
    if (pm->model_alias[0] != '\0') {
        rep.model = request_str(pm->model_name);
        PROTO_SET(&rep, PROTO_PERMIT_REP_MODEL);
    }
    persist_reply(p->d.persist, c, PROTO_OP_PERMIT, req_id, &rep,
                  (pm->charged && pm->estimate > 0) || pm->ndaily > 0);
}

/* Give a waiting permit's model tokens back: its provider's never came. */
static void
model_give_back(struct permits *p, struct pending *pd, double now_s)
{
    struct provider *mb;

    if (!pd->holds_model)
        return;
    pd->holds_model = false;
    mb = buckets_find(p->d.models, pd->pm.model_alias,
                      strlen(pd->pm.model_alias));
    if (mb == NULL)             /* a reload removed the deployment */
        return;
    limiter_release(&mb->bucket, 1, pd->model_llm, now_s);
    buckets_kick(mb);
}

/* A waiting permit lost its connection: nothing granted (call_lost). */
static void
wait_lost(struct permits *p, struct pending *pd, double now_s)
{
    struct call *call = pd->pm.call;

    model_give_back(p, pd, now_s);
    unreserve(p, &pd->pm);
    pd->dr.wait_ms = (now_s - pd->wait_start_s) * 1e3 + pd->parked_ms;
    pd->dr.parked_ms = pd->parked_ms;
    decisions_report(p->d.decisions, decide(p, pd, NULL),
                     DECISION_UNREPORTED, -1, -1, 0);
    call_lost(call);
}

/* A waiting permit timed out on the bucket of what (provider: whose
 * rate-limit counter counts it). */
static void
wait_timeout(struct permits *p, struct conn *c, uint64_t req_id,
             struct pending *pd, double now_s, const char *provider,
             const char *what)
{
    struct proto_error e;

    model_give_back(p, pd, now_s);
    unreserve(p, &pd->pm);
    telemetry_model_rate_limited(p->d.telemetry, provider, pd->pm.model_name);
    pd->pm.call->rate_limited = true;
    proto_error_set(&e, PROTO_E_TIMEOUT, "no token from %s within the "
                    "timeout", what);
    pd->dr.wait_ms = (now_s - pd->wait_start_s) * 1e3 + pd->parked_ms;
    pd->dr.parked_ms = pd->parked_ms;
    for (int i = 0; i < pd->dr.nproviders; i++)
        if (pd->dr.providers[i].p.why == DECISION_CHOSEN)
            pd->dr.providers[i].p.why = DECISION_NO_TOKEN;
    decide(p, pd, &e);
    conn_error(c, req_id, &e);
    conn_flush(c);
    call_refused(pd->pm.call);
}

/* A waiting permit got its token, timed out, or lost its connection. */
static void
permit_wait_done(struct waiter *w, bool granted, double now_s)
{
    struct pending *pd = w->arg;
    struct permits *p = pd->owner;

    if (w->conn == NULL) {
        wait_lost(p, pd, now_s);
    } else if (granted) {
        /* The bucket may have moved in a reload: its index now. */
        pd->pm.provider = (int)buckets_index(p->d.buckets, w->prov);
        telemetry_model_rate_limited(p->d.telemetry, w->prov->name,
                                     pd->pm.model_name);
        grant(p, w->conn, w->id, pd, (now_s - pd->wait_start_s) * 1e3, true);
        conn_flush(w->conn);
    } else {
        wait_timeout(p, w->conn, w->id, pd, now_s, w->prov->name,
                     w->prov->name);
    }
    free(pd);
}

/* The LLM tokens an attempt takes from provider prov's TOKENS_PER_MIN
 * bucket: its estimate, also without one (the limiter ignores them then,
 * but counts them, for a TPM learned later). */
static uint64_t
llm_tokens(const struct provider *prov, uint64_t estimate)
{
    (void)prov;
    return estimate;
}

/*
 * The chosen provider has no token now: another healthy, not excluded
 * provider that has one takes the attempt (a rate-limit failover).
 * Returns its index, or -1; no_token[] flags those found without one.
 */
static int
failover_now(struct permits *p, int chosen, const bool *excluded,
             uint64_t estimate, double now, bool *no_token)
{
    bool moved[CONFIG_MAX_PROVIDERS], degraded;

    memcpy(moved, excluded, sizeof(moved));
    moved[chosen] = true;
    no_token[chosen] = true;
    for (;;) {
        int idx = router_select(p->router, -1, moved, now, &degraded);
        if (idx < 0 || degraded)
            return -1;
        struct provider *prov = buckets_at(p->d.buckets, (size_t)idx);
        if (limiter_try_acquire(&prov->bucket, 1, llm_tokens(prov, estimate),
                                now) == LIMITER_GRANTED) {
            log_debug("rate-limit failover from %s to %s",
                      provider_name(p, chosen), prov->name);
            telemetry_rate_limited(p->d.telemetry, provider_name(p, chosen));
            telemetry_failover(p->d.telemetry, provider_name(p, chosen),
                               prov->name);
            return idx;
        }
        moved[idx] = true;
        no_token[idx] = true;
    }
}

/* Multi-host mode with Redis unreachable and LLMGUARD_REDIS_FALLBACK
 * closed: nothing is granted, and the reply says why (not a timeout). */
static int
closed_busy(const struct provider *prov, struct proto_error *e)
{
    return proto_error_set(e, PROTO_E_BUSY, "%s: Redis is unreachable and "
                           "LLMGUARD_REDIS_FALLBACK is closed", prov->name);
}

/* Where a permit may go: the preferred provider (-1: none) and those
 * excluded. */
struct route_args {
    int pref;
    bool excluded[CONFIG_MAX_PROVIDERS];
    bool has_model;                     /* the permit named a model */
    bool in_model[CONFIG_MAX_MODELS];   /* the deployments it names */
    char model[CONFIG_MODEL_MAX];       /* as named */
};

static int model_resolve(struct permits *p, const struct proto_str *name,
                         struct route_args *ra, struct proto_error *e);
static int model_deployments(struct permits *p, struct route_args *ra,
                             struct proto_error *e);

/*
 * What a permit that waits to be routed (parked, or for the fleet's quota
 * script) keeps of its route_args by name: the indices are the router's
 * of the moment, and a reload may reorder the providers (they are in
 * priority order), add or remove some, before it is routed again.
 */
struct route_names {
    char pref[CONFIG_NAME_MAX];         /* "": none */
    unsigned nexcluded;
    char excluded[CONFIG_MAX_PROVIDERS][CONFIG_NAME_MAX];
};

/* ra's providers into rn, by name. */
static void
route_keep(struct permits *p, const struct route_args *ra,
           struct route_names *rn)
{
    rn->pref[0] = '\0';
    if (ra->pref >= 0)
        snprintf(rn->pref, sizeof(rn->pref), "%s",
                 router_name(p->router, ra->pref));
    rn->nexcluded = 0;
    for (size_t i = 0; i < router_count(p->router); i++)
        if (ra->excluded[i])
            snprintf(rn->excluded[rn->nexcluded++], sizeof(rn->excluded[0]),
                     "%s", router_name(p->router, (int)i));
}

/*
 * ra again for the router of now, from rn: a provider a reload removed
 * is neither preferred nor excluded any more; a model's deployments are
 * found again by its name.  -1 (e filled) when the model is gone.
 */
static int
route_again(struct permits *p, const struct route_names *rn,
            struct route_args *ra, struct proto_error *e)
{
    memset(ra->excluded, 0, sizeof(ra->excluded));
    ra->pref = rn->pref[0] != '\0' ?
               router_find(p->router, rn->pref, strlen(rn->pref)) : -1;
    for (unsigned i = 0; i < rn->nexcluded; i++) {
        int idx = router_find(p->router, rn->excluded[i],
                              strlen(rn->excluded[i]));
        if (idx >= 0)
            ra->excluded[idx] = true;
    }
    return ra->has_model ? model_deployments(p, ra, e) : 0;
}

/*
 * Step 2: the provider for pd: the policy's choice among those not
 * excluded and not out of their daily limit (skip[] gets both).  -1 with
 * e filled when none is left: the daily refusal when some were left by
 * their limit.
 */
static int
route_pick(struct permits *p, struct pending *pd, const struct route_args *ra,
           double now, bool *skip, struct proto_error *e)
{
    size_t n = router_count(p->router), nout = 0;
    struct daily_first first = { .idx = -1 };
    double wall = clock_wall();
    int idx;

    if (p->d.cfg->rate_limit_enabled)
        nout = daily_out(p, ra->excluded, pd->pm.estimate, wall,
                         pd->daily_out, &first);
    for (size_t i = 0; i < n; i++)
        skip[i] = ra->excluded[i] || pd->daily_out[i];
    idx = router_select(p->router, ra->pref, skip, now, &pd->all_degraded);
    draft_route(p, pd, ra->excluded, idx, NULL, now);
    if (idx >= 0)
        return idx;
    if (nout == 0)
        return no_provider(p, e);
    return daily_refusal(first.name, &first.v, wall, "every provider left "
                         "is at its daily limit", e);
}

/* Step 0: check the request's fields into pd and ra; the call it belongs
 * to. */
static int
permit_args(struct permits *p, struct conn *c, const struct proto_permit_req *r,
            struct pending *pd, struct route_args *ra, struct proto_error *e)
{
    struct permit *pm = &pd->pm;

    if (PROTO_HAS(r, PROTO_PERMIT_REQ_CALL_ID) && (r->call_id.len == 0 ||
                            r->call_id.len > CALL_ID_MAX))
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "call_id must be 1 "
                               "to %d bytes", CALL_ID_MAX);
    if (PROTO_HAS(r, PROTO_PERMIT_REQ_CALL_ID) &&
        request_text(&r->call_id, "call_id", e) < 0)
        return -1;
    if (r->timeout_ms < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "timeout_ms must not be negative");
    if (r->tokens_estimate > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "tokens_estimate too large");
    ra->pref = preferred_index(p, &r->preferred,
                               PROTO_HAS(r, PROTO_PERMIT_REQ_PREFERRED), e);
    if (ra->pref < -1 || exclusion(p, &r->exclude, ra->excluded, e) < 0)
        return -1;
    ra->has_model = PROTO_HAS(r, PROTO_PERMIT_REQ_MODEL);
    if (ra->has_model && model_resolve(p, &r->model, ra, e) < 0)
        return -1;
    if (PROTO_HAS(r, PROTO_PERMIT_REQ_WORKFLOW_ID) &&
        request_id(&r->workflow_id, "workflow_id", pm->workflow, e) < 0)
        return -1;
    if (PROTO_HAS(r, PROTO_PERMIT_REQ_TENANT_ID) &&
        request_id(&r->tenant_id, "tenant_id", pm->tenant, e) < 0)
        return -1;
    if ((pm->cp = conn_permits(p, c)) == NULL ||
        (pm->call = call_get(pm->cp, &r->call_id,
                             PROTO_HAS(r, PROTO_PERMIT_REQ_CALL_ID))) == NULL)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    /* Its first permit, not one that comes while another waits. */
    if (!pm->call->started)
        call_start(pm->call, pm->workflow, pm->tenant, r);
    pm->call->live++;           /* until its report, refusal or loss */
    pm->estimate = r->tokens_estimate;
    return 0;
}

/* Whether pd's quota stage is the fleet's reserve script: multi-host
 * mode with the fleet's quotas, hard, and a subject to check. */
static bool
quota_by_fleet(const struct permits *p, const struct pending *pd)
{
    return gquota_active(p->d.gquota) && p->d.cfg->rate_limit_enabled &&
           quota_hard(p->d.quota) &&
           (pd->pm.workflow[0] != '\0' || pd->pm.tenant[0] != '\0');
}

/* The gate here: multi-host mode's hard quotas, when the script could not
 * be sent (Redis unreachable, or this host owes it usage), keep to this
 * host's share of the headroom last seen, as quota_reserve does. */
static int
permit_quota_gate(struct permits *p, const struct permit *pm, double now_s,
                  struct quota_decision *d, struct proto_error *e)
{
    const char *wf = or_null(pm->workflow), *tn = or_null(pm->tenant);

    if (!gquota_active(p->d.gquota) || !quota_hard(p->d.quota))
        return request_quota_gate(p->d.quota, p->d.telemetry, wf, tn,
                                  (int64_t)pm->estimate, now_s, d, e);
    if (gquota_reserve_share(p->d.gquota, wf, tn, (int64_t)pm->estimate,
                             now_s, true, d) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_reserve failed");
    return request_quota_decided(p->d.telemetry, wf, tn,
                                 (int64_t)pm->estimate, d, e);
}

/* Step 1's outcome: the gate's decision d (rc < 0: refused, e filled)
 * into pd, its call and its draft. */
static int
quota_outcome(struct permits *p, struct pending *pd,
              const struct quota_decision *d, int rc, double now_s,
              struct proto_error *e)
{
    struct permit *pm = &pd->pm;

    if (rc < 0) {
        if (e->code == PROTO_E_QUOTA_EXCEEDED) {
            pm->call->quota_allowed = false;
            pm->call->quota_remaining = (uint64_t)d->remaining;
            draft_quota(p, pd, d, true, now_s);
        }
        return -1;
    }
    draft_quota(p, pd, d, false, now_s);
    pm->call->quota_allowed = !d->over_quota;
    pm->call->quota_remaining = (uint64_t)d->remaining;
    pm->charged = true;
    pm->reservation = d->slot_start_ms;
    pd->quota_allowed = !d->over_quota;
    pd->quota_remaining = (uint64_t)d->remaining;
    pd->has_remaining = true;
    return 0;
}

/* Step 1: reserve the estimate for the call's workflow and tenant. */
static int
permit_quota(struct permits *p, struct pending *pd, struct proto_error *e)
{
    struct permit *pm = &pd->pm;
    struct quota_decision d;
    double now_s = clock_wall();

    if (!p->d.cfg->rate_limit_enabled || (!pm->workflow[0] && !pm->tenant[0]))
        return 0;
    return quota_outcome(p, pd, &d, permit_quota_gate(p, pm, now_s, &d, e),
                         now_s, e);
}

/* Queue a copy of pd on bucket b for one request and llm LLM tokens
 * until pd->deadline_s, done called with it.  0, or -1 with e filled. */
static int
wait_on(struct permits *p, struct conn *c, uint64_t req_id, struct pending *pd,
        struct provider *b, uint64_t llm, waiter_done_fn done, double now,
        struct proto_error *e)
{
    struct waiter *w = calloc(1, sizeof(*w));
    struct pending *keep = malloc(sizeof(*keep));

    if (w == NULL || keep == NULL) {
        free(w);
        free(keep);
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    }
    /* Counted while it waits, so no one else takes its place in the day;
     * given back if it is not granted (once: the count is the pm's). */
    daily_charge_pm(p, &pd->pm);
    *keep = *pd;
    w->conn = c;
    w->id = req_id;
    w->started_s = now;
    w->done = done;
    w->arg = keep;
    if (buckets_wait(b, w, 1, llm, pd->deadline_s) < 0) {
        daily_undo(p, &pd->pm);
        free(w);
        free(keep);
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    }
    return 0;
}

/* Step 4: wait for the chosen provider's token up to timeout_ms. */
static int
permit_wait(struct permits *p, struct conn *c, uint64_t req_id,
            struct pending *pd, uint64_t llm, double timeout_ms, double now,
            struct proto_error *e)
{
    pd->wait_start_s = now;
    pd->deadline_s = now + timeout_ms / 1e3;
    return wait_on(p, c, req_id, pd,
                   buckets_at(p->d.buckets, (size_t)pd->pm.provider), llm,
                   permit_wait_done, now, e);
}

/* ---- routing by model ------------------------------------------------- */

struct router *
permits_model_router_new(const struct config *cfg)
{
    struct router_provider_conf confs[CONFIG_MAX_MODELS];

    for (size_t i = 0; i < cfg->nmodels; i++) {
        const struct model_config *m = &cfg->models[i];
        const struct provider_config *pc =
            config_provider(cfg, m->provider, strlen(m->provider));
        confs[i].name = m->alias;
        confs[i].priority = (int)m->priority;
        confs[i].cost_per_1k_tokens = pc != NULL ? pc->cost_per_1k_tokens : 1;
    }
    return router_make(confs, cfg->nmodels, cfg);
}

void
permits_reconfigure_models(struct permits *p, struct router *r)
{
    router_swap(&p->models, r, p->d.models);
}

const struct router *
permits_model_router(const struct permits *p)
{
    return p->models;
}

/* The deployments ra->model names into ra->in_model: those of the group
 * of that name, else those with that model id.  -1 (e filled) for none. */
static int
model_deployments(struct permits *p, struct route_args *ra,
                  struct proto_error *e)
{
    const struct config *cfg = p->d.cfg;
    bool found = false;

    memset(ra->in_model, 0, sizeof(ra->in_model));
    for (int by_id = 0; by_id < 2 && !found; by_id++)
        for (size_t i = 0; i < cfg->nmodels; i++) {
            const struct model_config *m = &cfg->models[i];
            ra->in_model[i] = strcmp(by_id ? m->name : m->group,
                                     ra->model) == 0;
            found |= ra->in_model[i];
        }
    if (!found)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "unknown model '%.64s'"
                               " (neither a model group nor a model id)",
                               ra->model);
    return 0;
}

/* A permit's model, checked, and its deployments into ra. */
static int
model_resolve(struct permits *p, const struct proto_str *name,
              struct route_args *ra, struct proto_error *e)
{
    if (request_text(name, "model", e) < 0)
        return -1;
    if (name->len == 0 || name->len >= sizeof(ra->model))
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "model must be 1 to "
                               "%zu bytes", sizeof(ra->model) - 1);
    memcpy(ra->model, name->ptr, name->len);
    ra->model[name->len] = '\0';
    return model_deployments(p, ra, e);
}

/* The provider index of deployment i, -1 when it has none. */
static int
model_provider(const struct permits *p, int i)
{
    const char *name = p->d.cfg->models[i].provider;

    return router_find(p->router, name, strlen(name));
}

/*
 * The deployments a model permit of call may not use (not named, on an
 * excluded provider, or tried by the call already) into excluded, and
 * until when each is held by its provider's cooldown into held.
 */
static void
model_candidates(struct permits *p, const struct route_args *ra,
                 const struct call *call, double now, bool *excluded,
                 double *held)
{
    struct router_status rs;

    for (size_t i = 0; i < p->d.cfg->nmodels; i++) {
        int pi = model_provider(p, (int)i);
        excluded[i] = !ra->in_model[i] || pi < 0 || ra->excluded[pi] ||
                      call_tried(call, p->d.cfg->models[i].alias);
        held[i] = -INFINITY;
        if (pi >= 0) {
            router_status(p->router, pi, now, &rs);
            if (!rs.healthy)
                held[i] = now + rs.cooldown_remaining_s;
        }
    }
}

/* The first named deployment on the preferred provider, or -1. */
static int
model_preferred(const struct permits *p, const struct route_args *ra)
{
    if (ra->pref < 0)
        return -1;
    for (size_t i = 0; i < p->d.cfg->nmodels; i++)
        if (ra->in_model[i] && model_provider(p, (int)i) == ra->pref)
            return (int)i;
    return -1;
}

/* pd goes to deployment d: its provider, alias and model id (and so its
 * draft says). */
static void
model_set(struct permits *p, struct pending *pd, int d)
{
    const struct model_config *m = &p->d.cfg->models[d];

    snprintf(pd->dr.deployment, sizeof(pd->dr.deployment), "%s", m->alias);
    snprintf(pd->dr.model_id, sizeof(pd->dr.model_id), "%s", m->name);

    pd->pm.provider = model_provider(p, d);
    snprintf(pd->pm.provider_name, sizeof(pd->pm.provider_name), "%s",
             m->provider);
    snprintf(pd->pm.model_alias, sizeof(pd->pm.model_alias), "%s", m->alias);
    snprintf(pd->pm.model_name, sizeof(pd->pm.model_name), "%s", m->name);
}

/*
 * Take a request token (and the estimate's LLM tokens where there is a
 * TPM) from deployment d's bucket and from its provider's, both or none.
 */
static enum limiter_result
take_both(struct permits *p, int d, uint64_t estimate, double now)
{
    struct provider *mb = buckets_at(p->d.models, (size_t)d);
    struct provider *pb = buckets_at(p->d.buckets,
                                     (size_t)model_provider(p, d));
    uint64_t ml = llm_tokens(mb, estimate);
    enum limiter_result r = limiter_try_acquire(&mb->bucket, 1, ml, now);

    if (r != LIMITER_GRANTED)
        return r;
    r = limiter_try_acquire(&pb->bucket, 1, llm_tokens(pb, estimate), now);
    if (r != LIMITER_GRANTED)   /* nobody queued: exactly as it was */
        limiter_release(&mb->bucket, 1, ml, now);
    return r;
}

/* As failover_now, among the deployments of the permit's model. */
static int
model_failover_now(struct permits *p, int chosen, const bool *excluded,
                   const double *held, uint64_t estimate, double now)
{
    bool moved[CONFIG_MAX_MODELS], degraded;

    memcpy(moved, excluded, sizeof(moved));
    moved[chosen] = true;
    for (;;) {
        int d = router_select_held(p->models, -1, moved, held, now,
                                   &degraded);
        if (d < 0 || degraded)
            return -1;
        if (take_both(p, d, estimate, now) == LIMITER_GRANTED) {
            const char *from = p->d.cfg->models[chosen].provider;
            const char *to = p->d.cfg->models[d].provider;
            log_debug("rate-limit failover from model %s to %s",
                      router_name(p->models, chosen),
                      router_name(p->models, d));
            telemetry_model_rate_limited(p->d.telemetry, from,
                                         p->d.cfg->models[chosen].name);
            if (strcmp(from, to) != 0)
                telemetry_failover(p->d.telemetry, from, to);
            return d;
        }
        moved[d] = true;
    }
}

/* The model stage of a wait is over: granted, take the provider's token
 * now or wait for it, holding the model's. */
static void
model_wait_done(struct waiter *w, bool granted, double now_s)
{
    struct pending *pd = w->arg;
    struct permits *p = pd->owner;
    const struct model_config *m;
    struct proto_error e;
    struct provider *pb;

    if (w->conn == NULL || !granted) {
        if (w->conn == NULL)
            wait_lost(p, pd, now_s);
        else
            wait_timeout(p, w->conn, w->id, pd, now_s, pd->pm.provider_name,
                         pd->pm.model_alias);
        free(pd);
        return;
    }
    pd->holds_model = true;
    pd->model_llm = w->lw.llm_tokens;
    m = config_model(p->d.cfg, pd->pm.model_alias,
                     strlen(pd->pm.model_alias));
    pb = m != NULL ? buckets_find(p->d.buckets, m->provider,
                                  strlen(m->provider)) : NULL;
    if (pb == NULL) {           /* a reload took it away */
        wait_timeout(p, w->conn, w->id, pd, now_s, pd->pm.provider_name,
                     pd->pm.provider_name);
    } else if (limiter_try_acquire(&pb->bucket, 1,
                                   llm_tokens(pb, pd->pm.estimate),
                                   now_s) == LIMITER_GRANTED) {
        pd->pm.provider = (int)buckets_index(p->d.buckets, pb);
        pd->holds_model = false;
        telemetry_model_rate_limited(p->d.telemetry, pb->name,
                                     pd->pm.model_name);
        grant(p, w->conn, w->id, pd, (now_s - pd->wait_start_s) * 1e3, true);
        conn_flush(w->conn);
    } else if (wait_on(p, w->conn, w->id, pd, pb,
                       llm_tokens(pb, pd->pm.estimate), permit_wait_done,
                       now_s, &e) < 0) {
        model_give_back(p, pd, now_s);
        unreserve(p, &pd->pm);
        decide(p, pd, &e);
        conn_error(w->conn, w->id, &e);
        conn_flush(w->conn);
        call_refused(pd->pm.call);
    }
    free(pd);
}

/* Step 4 with a model: wait for the deployment's token, then for its
 * provider's; or, when the deployment has one now, hold it and wait for
 * the provider's. */
static int
model_wait(struct permits *p, struct conn *c, uint64_t req_id,
           struct pending *pd, int d, double timeout_ms, double now,
           struct proto_error *e)
{
    struct provider *mb = buckets_at(p->d.models, (size_t)d);
    struct provider *pb = buckets_at(p->d.buckets, (size_t)pd->pm.provider);
    uint64_t ml = llm_tokens(mb, pd->pm.estimate);

    /* Multi-host fallback closed: no lease will come for either. */
    if (mb->closed || pb->closed)
        return closed_busy(mb->closed ? mb : pb, e);
    pd->wait_start_s = now;
    pd->deadline_s = now + timeout_ms / 1e3;
    if (limiter_try_acquire(&mb->bucket, 1, ml, now) != LIMITER_GRANTED)
        return wait_on(p, c, req_id, pd, mb, ml, model_wait_done, now, e);
    pd->holds_model = true;
    pd->model_llm = ml;
    if (wait_on(p, c, req_id, pd, pb, llm_tokens(pb, pd->pm.estimate),
                permit_wait_done, now, e) < 0) {
        model_give_back(p, pd, now);
        return -1;
    }
    return 0;
}

static int park(struct permits *p, struct conn *c, uint64_t req_id,
                double timeout_ms, struct pending *pd,
                const struct route_args *ra, double remaining_s,
                const char *what);

/* The cooldown left to deployment d at now, its own or its provider's
 * (held[d]), whichever ends later, in seconds. */
static double
deployment_cooldown(struct permits *p, int d, const double *held, double now)
{
    struct router_status rs;

    router_status(p->models, d, now, &rs);
    return fmax(rs.cooldown_remaining_s, held[d] - now);
}

/*
 * Steps 2 to 4 for a permit that names a model: route among its
 * deployments (each healthy and its provider too), take both tokens, or
 * move to a deployment that has them, else wait for both.
 */
static int
permit_route_model(struct permits *p, struct conn *c, uint64_t req_id,
                   double timeout_ms, struct pending *pd,
                   const struct route_args *ra, struct proto_error *e)
{
    double now = pd->pm.started_s, held[CONFIG_MAX_MODELS];
    bool excluded[CONFIG_MAX_MODELS];
    struct daily_first first;
    size_t nout;
    int d, alt;

    snprintf(pd->dr.model, sizeof(pd->dr.model), "%s", ra->model);
    model_candidates(p, ra, pd->pm.call, now, excluded, held);
    nout = model_daily_out(p, pd->pm.estimate, excluded, &first);
    d = router_select_held(p->models, model_preferred(p, ra), excluded, held,
                           now, &pd->all_degraded);
    if (d >= 0)
        model_set(p, pd, d);
    draft_route(p, pd, ra->excluded, d >= 0 ? pd->pm.provider : -1, NULL,
                now);
    if (d < 0 && nout > 0)
        return daily_refusal(first.name, &first.v, clock_wall(), "every "
                             "deployment of the model left is at its daily "
                             "limit", e);
    if (d < 0)
        return proto_error_set(e, PROTO_E_NO_PROVIDER, "every deployment of "
                               "model '%.64s' is excluded", ra->model);
    if (pd->all_degraded &&
        (alt = park(p, c, req_id, timeout_ms, pd, ra,
                    deployment_cooldown(p, d, held, now),
                    pd->pm.model_alias)) != 0)
        return alt > 0 ? 0 : proto_error_set(e, PROTO_E_INTERNAL,
                                             "out of memory");
    if (pd->all_degraded)
        log_warn("every deployment of model %s is degraded: routing to %s, "
                 "whose cooldown ends first", ra->model, pd->pm.model_alias);
    switch (take_both(p, d, pd->pm.estimate, now)) {
    case LIMITER_BAD_REQUEST:
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens_estimate %llu "
                               "exceeds the tokens_per_min of model %s or of "
                               "provider %s",
                               (unsigned long long)pd->pm.estimate,
                               pd->pm.model_alias, pd->pm.provider_name);
    case LIMITER_GRANTED:
        grant(p, c, req_id, pd, 0, false);
        return 0;
    case LIMITER_WAIT:
        break;
    }
    if (!pd->all_degraded &&
        (alt = model_failover_now(p, d, excluded, held, pd->pm.estimate,
                                  now)) >= 0) {
        model_set(p, pd, alt);
        draft_route(p, pd, ra->excluded, pd->pm.provider, NULL, now);
        grant(p, c, req_id, pd, 0, true);
        return 0;
    }
    if (timeout_ms == 0) {
        telemetry_model_rate_limited(p->d.telemetry, pd->pm.provider_name,
                                     pd->pm.model_name);
        pd->pm.call->rate_limited = true;
        return proto_error_set(e, PROTO_E_TIMEOUT, "no token from model %s "
                               "(provider %s) now", pd->pm.model_alias,
                               pd->pm.provider_name);
    }
    return model_wait(p, c, req_id, pd, d, timeout_ms, now, e);
}

/* ---- parking: every provider in its cooldown ---------------------------- */

/* A permit parked until the first cooldown ends (or a success ends one). */
struct park {
    struct parked pk;               /* first: parking gives it back */
    struct pending pd;
    struct route_args ra;
    struct route_names rn;          /* ra's providers, by name */
    uint64_t req_id;
    double deadline_s;              /* monotonic: the end of its timeout */
};

static int permit_route(struct permits *p, struct conn *c, uint64_t req_id,
                        double timeout_ms, struct pending *pd,
                        const struct route_args *ra, struct proto_error *e);

/*
 * A permit that waited (parked, or for the fleet's quota script) goes on
 * with steps 2 to 4 at now_s (monotonic), with what is left of its
 * timeout until deadline_s, its providers (rn) as the router has them
 * now; its quota is given back when they fail.
 */
static int
route_rest(struct permits *p, struct conn *c, uint64_t req_id,
           double deadline_s, double now_s, struct pending *pd,
           struct route_args *ra, const struct route_names *rn,
           struct proto_error *e)
{
    pd->pm.started_s = now_s;
    if (route_again(p, rn, ra, e) == 0 &&
        permit_route(p, c, req_id, fmax(0, (deadline_s - now_s) * 1e3), pd,
                     ra, e) == 0)
        return 0;
    unreserve(p, &pd->pm);
    return -1;
}

/* A permit that waited is refused with e. */
static void
refused_late(struct permits *p, struct conn *c, uint64_t req_id,
             struct pending *pd, const struct proto_error *e)
{
    decide(p, pd, e);
    conn_error(c, req_id, e);
    call_refused(pd->pm.call);
}

/* A permit whose connection closed while it waited: nothing granted, its
 * decision recorded as unreported, its call ended unless named. */
static void
waiter_lost(struct permits *p, struct pending *pd)
{
    decisions_report(p->d.decisions, decide(p, pd, NULL),
                     DECISION_UNREPORTED, -1, -1, 0);
    call_lost(pd->pm.call);
}

/*
 * Woken: routed again, with what is left of its timeout; or its
 * connection closed while it was parked: it consumed nothing.
 */
static void
park_done(struct parked *pkd, double now_s)
{
    struct park *pk = (struct park *)pkd;
    struct permits *p = pkd->arg;
    struct pending *pd = &pk->pd;
    struct conn *c = pkd->conn;
    struct proto_error e;

    pd->parked_ms += (now_s - pkd->parked_s) * 1e3;
    if (c == NULL) {
        unreserve(p, &pd->pm);
        pd->dr.wait_ms = pd->dr.parked_ms = pd->parked_ms;
        waiter_lost(p, pd);
        free(pk);
        return;
    }
    pd->all_degraded = false;
    if (route_rest(p, c, pk->req_id, pk->deadline_s, now_s, pd, &pk->ra,
                   &pk->rn, &e) < 0)
        refused_late(p, c, pk->req_id, pd, &e);
    conn_flush(c);
    free(pk);
}

/*
 * Every candidate is in its cooldown and what's (a provider's, or a model
 * deployment's) ends first, in remaining_s: when that is within the
 * permit's timeout, park it until then instead of calling a degraded
 * provider.  1 parked, 0 not (the all-degraded rule applies), -1 out of
 * memory.
 */
static int
park(struct permits *p, struct conn *c, uint64_t req_id, double timeout_ms,
     struct pending *pd, const struct route_args *ra, double remaining_s,
     const char *what)
{
    double now = pd->pm.started_s;
    struct park *pk;

    if (timeout_ms <= 0 || remaining_s * 1e3 > timeout_ms)
        return 0;
    if ((pk = malloc(sizeof(*pk))) == NULL)
        return -1;
    pk->pd = *pd;
    pk->ra = *ra;
    route_keep(p, ra, &pk->rn);
    pk->req_id = req_id;
    pk->deadline_s = now + timeout_ms / 1e3;
    pk->pk.conn = c;
    pk->pk.done = park_done;
    pk->pk.arg = p;
    if (parking_add(p->d.parking, &pk->pk, now, now + remaining_s) < 0) {
        free(pk);
        return -1;
    }
    log_debug("every candidate is degraded: parked for %.3f s, until the "
              "cooldown of %s ends", remaining_s, what);
    return 1;
}

/* The cooldown left to provider idx at now, in seconds. */
static double
provider_cooldown(struct permits *p, int idx, double now)
{
    struct router_status rs;

    router_status(p->router, idx, now, &rs);
    return rs.cooldown_remaining_s;
}

/*
 * Steps 2 to 4: route, take the token (or move to a provider that has
 * one), else wait.  Returns 0 when granted or queued, -1 with e filled
 * (the caller returns the reservation).  Each way out says in pd's draft
 * where the attempt went and why.
 */
static int
permit_route(struct permits *p, struct conn *c, uint64_t req_id,
             double timeout_ms, struct pending *pd,
             const struct route_args *ra, struct proto_error *e)
{
    double now = pd->pm.started_s;
    bool no_token[CONFIG_MAX_PROVIDERS] = { false };
    bool skip[CONFIG_MAX_PROVIDERS];
    struct provider *prov;
    uint64_t llm;
    int idx, alt;

    if (ra->has_model)
        return permit_route_model(p, c, req_id, timeout_ms, pd, ra, e);
    /* 2. route, or park until the first cooldown ends */
    if ((idx = route_pick(p, pd, ra, now, skip, e)) < 0)
        return -1;
    if (pd->all_degraded &&
        (alt = park(p, c, req_id, timeout_ms, pd, ra,
                    provider_cooldown(p, idx, now), provider_name(p, idx))) != 0)
        return alt > 0 ? 0 : proto_error_set(e, PROTO_E_INTERNAL,
                                             "out of memory");
    prov = buckets_at(p->d.buckets, (size_t)idx);
    if (pd->all_degraded)
        log_warn("every provider is degraded: routing to %s, whose cooldown "
                 "ends first", prov->name);
    pd->pm.provider = idx;

    /* 3. token */
    if (prov->closed)
        return closed_busy(prov, e);
    llm = llm_tokens(prov, pd->pm.estimate);
    switch (limiter_try_acquire(&prov->bucket, 1, llm, now)) {
    case LIMITER_BAD_REQUEST:
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens_estimate %llu "
                               "exceeds the tokens_per_min of %s",
                               (unsigned long long)pd->pm.estimate,
                               prov->name);
    case LIMITER_GRANTED:
        grant(p, c, req_id, pd, 0, false);
        return 0;
    case LIMITER_WAIT:
        break;
    }
    if (!pd->all_degraded &&
        (alt = failover_now(p, idx, skip, pd->pm.estimate, now,
                            no_token)) >= 0) {
        pd->pm.provider = alt;
        draft_route(p, pd, ra->excluded, alt, no_token, now);
        grant(p, c, req_id, pd, 0, true);
        return 0;
    }
    no_token[idx] = true;
    if (timeout_ms <= 0) {
        buckets_kick(prov);     /* multi-host mode: a miss is demand */
        draft_route(p, pd, ra->excluded, -1, no_token, now);
        telemetry_rate_limited(p->d.telemetry, prov->name);
        pd->pm.call->rate_limited = true;
        return proto_error_set(e, PROTO_E_TIMEOUT, "no token from %s now",
                               prov->name);
    }

    /* 4. wait for the chosen provider's token */
    no_token[idx] = false;
    draft_route(p, pd, ra->excluded, idx, no_token, now);
    return permit_wait(p, c, req_id, pd, llm, timeout_ms, now, e);
}

/* ---- hard quotas shared by the fleet: a permit waits for Redis -------- */

/*
 * A permit whose quota the fleet's reserve script decides (one atomic
 * check over workflow and tenant, so hosts never together overshoot a
 * hard limit): kept, in its connection's list, until Redis answers.
 * When the connection closes first, permits_drop_conn frees it and
 * gquota, whose slot closes after the permits', gives the reservation
 * back when the answer comes.
 */
struct quota_wait {
    TAILQ_ENTRY(quota_wait) entry;      /* in conn_permits.quota_waits */
    struct pending pd;
    struct route_args ra;
    struct route_names rn;              /* ra's providers, by name */
    uint64_t req_id;
    double deadline_s;                  /* monotonic: its timeout's end */
};

/* Redis answered pd's reservation, or did not (then the share decides,
 * as for quota_reserve); r->d is the fleet's decision. */
static int
quota_answered(struct permits *p, struct pending *pd, struct gquota_req *r,
               struct proto_error *e)
{
    const char *wf = r->has_wf ? r->wf : NULL, *tn = r->has_tn ? r->tn : NULL;
    double now_s = clock_wall();
    int rc;

    if (!r->answered &&
        gquota_reserve_share(p->d.gquota, wf, tn, r->tokens, now_s, true,
                             &r->d) < 0)
        rc = proto_error_set(e, PROTO_E_INTERNAL, "quota_reserve failed");
    else
        rc = request_quota_decided(p->d.telemetry, wf, tn, r->tokens, &r->d,
                                   e);
    return quota_outcome(p, pd, &r->d, rc, now_s, e);
}

/* gquota's done for a permit: steps 2 to 4 go on as for any permit, with
 * what is left of its timeout; or it is refused. c is live. */
static void
quota_done(struct conn *c, struct gquota_req *r, void *arg)
{
    struct quota_wait *qw = arg;
    struct pending *pd = &qw->pd;
    struct permits *p = pd->owner;
    struct proto_error e;
    double now = clock_mono();
    int rc;

    TAILQ_REMOVE(&pd->pm.cp->quota_waits, qw, entry);
    if ((rc = quota_answered(p, pd, r, &e)) == 0)
        rc = route_rest(p, c, qw->req_id, qw->deadline_s, now, pd, &qw->ra,
                        &qw->rn, &e);
    if (rc < 0)
        refused_late(p, c, qw->req_id, pd, &e);
    conn_flush(c);
    free(qw);
}

/* Send pd's reservation to the fleet's script, pd kept until it answers;
 * false when it was not sent (Redis unreachable, this host owes it usage,
 * out of memory): this host decides now, on its share. */
static bool
quota_send(struct permits *p, struct conn *c, uint64_t req_id,
           double timeout_ms, const struct pending *pd,
           const struct route_args *ra)
{
    struct gquota_req r = { .op = GQ_RESERVE, .id = req_id,
                            .tokens = (int64_t)pd->pm.estimate,
                            .done = quota_done };
    struct quota_wait *qw = malloc(sizeof(*qw));

    if (qw == NULL)
        return false;
    r.has_wf = pd->pm.workflow[0] != '\0';
    r.has_tn = pd->pm.tenant[0] != '\0';
    memcpy(r.wf, pd->pm.workflow, sizeof(r.wf));
    memcpy(r.tn, pd->pm.tenant, sizeof(r.tn));
    r.done_arg = qw;
    qw->pd = *pd;
    qw->ra = *ra;
    route_keep(p, ra, &qw->rn);
    qw->req_id = req_id;
    qw->deadline_s = pd->pm.started_s + timeout_ms / 1e3;
    if (gquota_submit(p->d.gquota, c, &r) < 0) {
        free(qw);
        return false;
    }
    TAILQ_INSERT_TAIL(&pd->pm.cp->quota_waits, qw, entry);
    return true;
}

/* The connection closed while Redis had qw's reservation: nothing was
 * granted (gquota gives the reservation back). */
static void
quota_wait_lost(struct permits *p, struct quota_wait *qw)
{
    TAILQ_REMOVE(&qw->pd.pm.cp->quota_waits, qw, entry);
    waiter_lost(p, &qw->pd);
    free(qw);
}

/* permit: 0. the request, 1. quota, 2. route, 3. token, 4. wait. */
int
permits_permit(struct permits *p, struct conn *c, struct proto_req *req,
               struct proto_error *e)
{
    struct pending pd = { .owner = p, .quota_allowed = true };
    struct route_args ra;

    pd.pm.started_s = clock_mono();
    pd.dr.time = clock_wall();
    if (permit_args(p, c, &req->u.permit, &pd, &ra, e) < 0) {
        /* Only ids that passed their checks are kept. */
        if (pd.pm.call == NULL)
            pd.pm.workflow[0] = pd.pm.tenant[0] = '\0';
        decide(p, &pd, e);
        return -1;
    }
    pd.dr.tokens_estimate = pd.pm.estimate;
    if (quota_by_fleet(p, &pd) &&
        quota_send(p, c, req->id, req->u.permit.timeout_ms, &pd, &ra))
        return 0;               /* quota_done goes on */
    if (permit_quota(p, &pd, e) < 0) {
        decide(p, &pd, e);
        call_refused(pd.pm.call);
        return -1;
    }
    if (permit_route(p, c, req->id, req->u.permit.timeout_ms, &pd, &ra,
                     e) < 0) {
        unreserve(p, &pd.pm);
        decide(p, &pd, e);
        call_refused(pd.pm.call);
        return -1;
    }
    return 0;
}

/* ---- report ------------------------------------------------------------ */

static void
permit_free(struct permits *p, struct permit *pm)
{
    HASH_DEL(p->table, pm);
    TAILQ_REMOVE(&pm->cp->permits, pm, conn_entry);
    free(pm);
}

/* The report's fields, checked; the permit it closes. */
static int
report_args(struct permits *p, struct conn *c, const struct proto_report_req *r,
            struct permit **pmp, enum router_outcome *outcome,
            struct proto_error *e)
{
    struct permit *pm = NULL;

    HASH_FIND(hh, p->table, &r->permit_id, sizeof(r->permit_id), pm);
    if (pm == NULL || pm->conn != c)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "unknown permit_id "
                               "%llu (already reported, or another "
                               "connection's)",
                               (unsigned long long)r->permit_id);
    if (router_outcome_parse(r->outcome.ptr, r->outcome.len, outcome) < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "outcome '%.*s': "
                               "expected ok, rate_limited, server_error, "
                               "timeout or client_error",
                               (int)(r->outcome.len > 32 ? 32 :
                                     r->outcome.len), r->outcome.ptr);
    if (PROTO_HAS(r, PROTO_REPORT_REQ_LATENCY_MS) && r->latency_ms < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "latency_ms must not be negative");
    if (PROTO_HAS(r, PROTO_REPORT_REQ_TOKENS_USED) &&
        r->tokens_used > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens_used too large");
    if (PROTO_HAS(r, PROTO_REPORT_REQ_HEADERS) &&
        r->headers.n > PERMITS_HEADERS_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "headers: %u of them, "
                               "at most %d", r->headers.n,
                               PERMITS_HEADERS_MAX);
    *pmp = pm;
    return 0;
}

/*
 * The outcome of a permit that named a model: to its deployment, whose
 * cooldown is its own (the provider's other models stay usable), and the
 * metrics; the deployment's index in the models' router, or -1.
 */
static int
report_deployment(struct permits *p, const struct permit *pm,
                  enum router_outcome outcome, double retry_after_s,
                  double latency_ms, double now)
{
    int idx = router_find(p->models, pm->model_alias,
                          strlen(pm->model_alias));

    if (idx >= 0) {
        router_report(p->models, idx, outcome, latency_ms, retry_after_s,
                      pm->started_s, now);
        health_reported_model(p->d.health, p->models, idx, outcome,
                              retry_after_s, pm->started_s, now);
        if (outcome != ROUTER_OUTCOME_OK &&
            outcome != ROUTER_OUTCOME_CLIENT_ERROR)
            log_info("model %s of %s answered %s: degraded for %.1f s",
                     pm->model_alias, pm->provider_name,
                     router_outcome_name(outcome),
                     fmax(p->d.cfg->provider_cooldown_s, retry_after_s));
    }
    telemetry_model_request(p->d.telemetry, pm->provider_name,
                            pm->model_name, pm->workflow,
                            router_outcome_name(outcome), latency_ms);
    if (outcome == ROUTER_OUTCOME_RATE_LIMITED)
        telemetry_model_rate_limited(p->d.telemetry, pm->provider_name,
                                     pm->model_name);
    return idx;
}

/*
 * The provider's rate-limit headers of a report, read (llmguardd(8),
 * "Header feedback"): what they say is learned where the provider has no
 * configured limit, and fits its bucket.  Unreadable values are counted,
 * logged (throttled) and otherwise ignored.  The Retry-After they carry,
 * or 0.
 */
static double
report_headers(struct permits *p, const struct permit *pm,
               const struct proto_report_req *r, double now)
{
    struct ratehdr h;
    struct provider *prov;
    double rpm = 0, tpm = 0, wall = clock_wall();

    if (!PROTO_HAS(r, PROTO_REPORT_REQ_HEADERS) || r->headers.n == 0)
        return 0;
    ratehdr_init(&h);
    for (uint32_t i = 0; i < r->headers.n; i++) {
        const struct proto_str *k = &r->headers.key[i];
        const struct proto_str *v = &r->headers.value[i];
        if (ratehdr_feed(&h, k->ptr, k->len, v->ptr, v->len, wall) < 0)
            log_throttled(&p->malformed, now, LOG_LVL_WARN, "%s: header "
                          "%.*s: cannot read '%.*s', ignored",
                          pm->provider_name, (int)(k->len > 64 ? 64 : k->len),
                          k->ptr, (int)(v->len > 64 ? 64 : v->len), v->ptr);
    }
    if (h.malformed > 0)
        telemetry_headers_malformed(p->d.telemetry, pm->provider_name,
                                    h.malformed);
    /* The headers speak of the permit's model when it named one, else of
     * its provider (only a provider's per-minute limits are learned). */
    prov = pm->model_alias[0] != '\0' ?
           buckets_find(p->d.models, pm->model_alias, strlen(pm->model_alias)) :
           buckets_find(p->d.buckets, pm->provider_name,
                        strlen(pm->provider_name));
    if (prov != NULL) {     /* else a reload removed it */
        if (pm->model_alias[0] == '\0' && feedback_learned(&h, &rpm, &tpm) > 0)
            buckets_learn(prov, rpm, tpm);
        buckets_feedback(prov, &h, &pm->mark, now);
    }
    /* A day at the most, as from the C library. */
    return h.has_retry_after ? fmin(h.retry_after_s, 86400) : 0;
}

/* The outcome to the router (by name: a reload may have moved or removed
 * the provider) and the metrics; the provider's index, or -1.  A
 * Retry-After only in the headers (hdr_retry_after_s) counts as one. */
static int
report_outcome(struct permits *p, const struct permit *pm,
               const struct proto_report_req *r, enum router_outcome outcome,
               double hdr_retry_after_s, double now)
{
    double retry_after_s =
        PROTO_HAS(r, PROTO_REPORT_REQ_RETRY_AFTER_S) ? r->retry_after_s :
        hdr_retry_after_s;
    double latency_ms =
        PROTO_HAS(r, PROTO_REPORT_REQ_LATENCY_MS) ? r->latency_ms : -1;
    int idx;

    if (pm->model_alias[0] != '\0')
        return report_deployment(p, pm, outcome, retry_after_s, latency_ms,
                                 now);
    idx = router_find(p->router, pm->provider_name,
                      strlen(pm->provider_name));
    if (idx >= 0) {
        router_report(p->router, idx, outcome, latency_ms, retry_after_s,
                      pm->started_s, now);
        health_reported(p->d.health, p->router, idx, outcome, retry_after_s,
                        pm->started_s, now);
        if (outcome != ROUTER_OUTCOME_OK &&
            outcome != ROUTER_OUTCOME_CLIENT_ERROR)
            log_info("%s answered %s: degraded for %.1f s",
                     pm->provider_name, router_outcome_name(outcome),
                     fmax(p->d.cfg->provider_cooldown_s, retry_after_s));
    }
    telemetry_request(p->d.telemetry, pm->provider_name, pm->workflow,
                      router_outcome_name(outcome), latency_ms);
    telemetry_llm_tokens(p->d.telemetry, pm->provider_name,
                         PROTO_HAS(r, PROTO_REPORT_REQ_TOKENS_USED) ?
                         r->tokens_used : pm->estimate);
    if (outcome == ROUTER_OUTCOME_RATE_LIMITED)
        telemetry_rate_limited(p->d.telemetry, pm->provider_name);
    return idx;
}

/* Charge b's LLM-token bucket delta tokens more (less when below 0). */
static void
charge_llm(struct provider *b, double delta, double now)
{
    limiter_charge_llm(&b->bucket, delta, now);
    if (delta < 0)
        buckets_kick(b);        /* the refund may serve a waiter */
}

/*
 * The LLM-token buckets of the attempt, its provider's and its model
 * deployment's, charged what it really used instead of what its grant
 * took (by name: a reload may have moved them).
 */
static void
report_bucket(struct permits *p, const struct permit *pm,
              const struct proto_report_req *r, double now)
{
    struct provider *b;
    double delta;

    if (!PROTO_HAS(r, PROTO_REPORT_REQ_TOKENS_USED) ||
        r->tokens_used == pm->llm_taken)
        return;
    delta = (double)r->tokens_used - (double)pm->llm_taken;
    if ((b = buckets_find(p->d.buckets, pm->provider_name,
                          strlen(pm->provider_name))) != NULL)
        charge_llm(b, delta, now);
    if (pm->model_alias[0] != '\0' &&
        (b = buckets_find(p->d.models, pm->model_alias,
                          strlen(pm->model_alias))) != NULL)
        charge_llm(b, delta, now);
}

/* The estimate reconciled with the tokens used; whether a quota changed. */
static bool
report_reconcile(struct permits *p, const struct permit *pm,
                 const struct proto_report_req *r)
{
    uint64_t actual = PROTO_HAS(r, PROTO_REPORT_REQ_TOKENS_USED) ?
                      r->tokens_used : pm->estimate;

    if (!pm->charged || actual == pm->estimate)
        return false;
    quota_commit(p->d.quota, or_null(pm->workflow), or_null(pm->tenant),
                 pm->reservation, (int64_t)pm->estimate, (int64_t)actual,
                 clock_wall());
    telemetry_quota_remaining(p->d.telemetry, p->d.quota,
                              or_null(pm->workflow));
    return true;
}

/* Whether pm's deployment, or its provider when it named no model, is in
 * its cooldown (false when it is gone). */
static bool
degraded(struct permits *p, const struct permit *pm, double now)
{
    bool model = pm->model_alias[0] != '\0';
    struct router *r = model ? p->models : p->router;
    const char *name = model ? pm->model_alias : pm->provider_name;
    int idx = router_find(r, name, strlen(name));

    return idx >= 0 && !router_is_healthy(r, idx, now);
}

int
permits_report(struct permits *p, struct conn *c, struct proto_req *req,
               struct proto_error *e)
{
    const struct proto_report_req *r = &req->u.report;
    struct proto_report_rep rep = { 0 };
    struct router_status rs = { .healthy = false };
    enum router_outcome outcome = ROUTER_OUTCOME_OK;
    struct permit *pm = NULL;
    struct call *call;
    const struct router *rr;
    double now = clock_mono();
    bool reconciled, was_degraded;
    int idx;

    if (report_args(p, c, r, &pm, &outcome, e) < 0)
        return -1;
    decisions_report(p->d.decisions, pm->decision, decision_outcome(outcome),
                     PROTO_HAS(r, PROTO_REPORT_REQ_TOKENS_USED) ?
                     (int64_t)r->tokens_used : -1,
                     PROTO_HAS(r, PROTO_REPORT_REQ_LATENCY_MS) ?
                     r->latency_ms : -1,
                     PROTO_HAS(r, PROTO_REPORT_REQ_RETRY_AFTER_S) ?
                     r->retry_after_s : 0);
    was_degraded = degraded(p, pm, now);
    idx = report_outcome(p, pm, r, outcome, report_headers(p, pm, r, now),
                         now);
    rr = pm->model_alias[0] != '\0' ? p->models : p->router;
    /* A success ended a cooldown (a provider's, or a deployment's): the
     * parked permits need not wait. */
    if (was_degraded && idx >= 0 && router_is_healthy(rr, idx, now))
        parking_wake(p->d.parking);
    report_bucket(p, pm, r, now);
    reconciled = report_reconcile(p, pm, r);
    reconciled |= daily_report(p, pm, r);
    call = pm->call;
    call->rate_limited |= outcome == ROUTER_OUTCOME_RATE_LIMITED;
    call->success = outcome == ROUTER_OUTCOME_OK;
    call->over |= r->final || call->id[0] == '\0';
    permit_free(p, pm);
    assert(call->live > 0);
    if (--call->live == 0 && call->over)
        call_end(call);

    if (idx >= 0)
        router_status(rr, idx, now, &rs);
    rep.state = request_str(idx < 0 ? "removed" : rs.healthy ? "healthy" :
                            "degraded");
    rep.cooldown_remaining_s = rs.cooldown_remaining_s;
    persist_reply(p->d.persist, c, PROTO_OP_REPORT, req->id, &rep, reconciled);
    return 0;
}

/* ---- life cycle -------------------------------------------------------- */

void
permits_drop_conn(void *state)
{
    struct conn_permits *cp = state;
    struct quota_wait *qw;
    struct permit *pm;
    struct call *call, *tmp;

    while ((qw = TAILQ_FIRST(&cp->quota_waits)) != NULL)
        quota_wait_lost(cp->owner, qw);

    /* Unreported permits stay charged at their estimate. */
    while ((pm = TAILQ_FIRST(&cp->permits)) != NULL) {
        struct call *owner = pm->call;
        decisions_report(cp->owner->d.decisions, pm->decision,
                         DECISION_UNREPORTED, -1, -1, 0);
        permit_free(cp->owner, pm);
        call_lost(owner);
    }
    HASH_ITER(hh, cp->calls, call, tmp)
        call_end(call);
    free(cp);
}

struct permits *
permits_new(const struct permits_deps *deps, int conn_slot)
{
    struct permits *p = calloc(1, sizeof(*p));

    if (p == NULL || (p->router = permits_router_new(deps->cfg)) == NULL ||
        (p->models = permits_model_router_new(deps->cfg)) == NULL) {
        log_error("%s: out of memory", __func__);
        if (p != NULL)
            router_free(p->router);
        free(p);
        return NULL;
    }
    p->d = *deps;
    p->slot = conn_slot;
    return p;
}

void
permits_free(struct permits *p)
{
    if (p == NULL)
        return;
    assert(p->table == NULL);       /* every connection closed */
    router_free(p->router);
    router_free(p->models);
    free(p);
}
