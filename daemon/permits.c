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
#include "decisions.h"
#include "health.h"
#include "log.h"
#include "permits.h"
#include "persist.h"
#include "quota.h"
#include "request.h"
#include "router.h"
#include "server.h"
#include "telemetry.h"
#include "trace.h"

#define CALL_ID_MAX PERMITS_CALL_ID_MAX

struct permits {
    struct permits_deps d;
    struct router *router;          /* index i is buckets_at(i) */
    struct permit *table;           /* granted, unreported: uthash by id */
    uint64_t next_id;
    int slot;                       /* connection slot: struct conn_permits */
    struct log_throttle refusals[PROTO_E__COUNT];   /* by error code */
};

/* A connection's unreported permits and open calls, in its slot. */
struct conn_permits {
    TAILQ_HEAD(, permit) permits;
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
    unsigned open_permits;          /* granted, not yet reported */
    bool rate_limited;
    bool success;
    /* What its span says (llmguardd(8), "Traces"). */
    char workflow[QUOTA_ID_MAX + 1], tenant[QUOTA_ID_MAX + 1];
    char routed_to[CONFIG_NAME_MAX];    /* the last attempt's provider */
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
    char workflow[QUOTA_ID_MAX + 1], tenant[QUOTA_ID_MAX + 1];
    bool charged;                   /* a quota reservation to reconcile */
    int64_t reservation;
    uint64_t estimate;
    double started_s;               /* monotonic, when routed */
    uint64_t decision;              /* its seq in the decisions; 0: none */
};

/* A permit on its way: what the grant needs to finish it, while it is
 * checked, routed, and maybe waits for a token. */
struct pending {
    struct permit pm;               /* filled but for id */
    struct permits *owner;
    double wait_start_s;
    bool quota_allowed, has_remaining, all_degraded;
    uint64_t quota_remaining;
    struct decision_draft dr;       /* what explain will say of it */
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
    struct trace_attr a[12];
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

struct router *
permits_router_new(const struct config *cfg)
{
    struct router_provider_conf confs[CONFIG_MAX_PROVIDERS];
    struct router *r;

    for (size_t i = 0; i < cfg->nproviders; i++) {
        confs[i].name = cfg->providers[i].name;
        confs[i].priority = (int)cfg->providers[i].priority;
        confs[i].cost_per_1k_tokens = cfg->providers[i].cost_per_1k_tokens;
    }
    r = router_new(confs, cfg->nproviders,
                   (enum router_policy)cfg->routing_policy,
                   cfg->provider_cooldown_s);
    if (r == NULL)
        log_error("%s: out of memory", __func__);
    return r;
}

void
permits_reconfigure(struct permits *p, struct router *r)
{
    if (p->router != NULL)
        router_copy_state(r, p->router);
    router_free(p->router);
    p->router = r;
    assert(router_count(r) == buckets_count(p->d.buckets));
    for (size_t i = 0; i < router_count(r); i++)
        assert(strcmp(router_name(r, (int)i),
                      buckets_at(p->d.buckets, i)->name) == 0);
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

/* Return an unused reservation: the attempt never happened. */
static void
unreserve(struct permits *p, const struct permit *pm)
{
    if (!pm->charged)
        return;
    quota_commit(p->d.quota, or_null(pm->workflow), or_null(pm->tenant),
                 pm->reservation, (int64_t)pm->estimate, 0, clock_wall());
    persist_changed(p->d.persist);
}

/* The call is refused or lost before its permit: end it unless another
 * attempt of it is still open. */
static void
call_refused(struct call *call)
{
    if (call->open_permits == 0)
        call_end(call);
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

/* The quota of each subject of pd into its draft, after the gate at now_s
 * (wall clock); refused: the gate said quota_exceeded. */
static void
draft_quota(struct permits *p, struct pending *pd, bool refused, double now_s)
{
    const char *ids[2] = { pd->pm.workflow, pd->pm.tenant };
    struct decision_draft *dr = &pd->dr;
    struct quota_status st;

    if (!recording(p))
        return;
    for (int k = 0; k < 2; k++) {
        if (ids[k][0] == '\0' ||
            quota_status(p->d.quota, k ? QUOTA_TENANT : QUOTA_WORKFLOW,
                         ids[k], now_s, &st) < 0)
            continue;
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

/* Record the granted attempt pd on provider pd->pm.provider. */
static struct permit *
permit_add(struct permits *p, struct conn *c, struct pending *pd,
           double wait_ms, bool rate_limited)
{
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
    if (call->routed_to[0] != '\0' &&
        strcmp(call->routed_to, pm->provider_name) != 0) {
        log_debug("call '%s' fails over from %s to %s", call->id,
                  call->routed_to, pm->provider_name);
        telemetry_failover(p->d.telemetry, call->routed_to,
                           pm->provider_name);
    }
    call->attempts++;
    call->open_permits++;
    call->rate_limited |= rate_limited;
    call->wait_ms += wait_ms;
    memcpy(call->routed_to, pm->provider_name, sizeof(call->routed_to));
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
    struct permit *pm = permit_add(p, c, pd, wait_ms, rate_limited);

    if (pm == NULL) {
        unreserve(p, &pd->pm);
        proto_error_set(&e, PROTO_E_INTERNAL, "out of memory");
        decide(p, pd, &e);
        call_refused(pd->pm.call);
        conn_error(c, req_id, &e);
        return;
    }
    pd->dr.permit_id = pm->id;
    pd->dr.wait_ms = wait_ms;
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
    persist_reply(p->d.persist, c, PROTO_OP_PERMIT, req_id, &rep,
                  pm->charged && pm->estimate > 0);
}

/* A waiting permit got its token, timed out, or lost its connection. */
static void
permit_wait_done(struct waiter *w, bool granted, double now_s)
{
    struct pending *pd = w->arg;
    struct permits *p = pd->owner;
    struct call *call = pd->pm.call;
    struct proto_error e;

    if (w->conn == NULL) {
        /* Its connection closed: a named call ends with the connection. */
        unreserve(p, &pd->pm);
        pd->dr.wait_ms = (now_s - pd->wait_start_s) * 1e3;
        decisions_report(p->d.decisions, decide(p, pd, NULL),
                         DECISION_UNREPORTED, -1, -1, 0);
        if (call->id[0] == '\0')
            call_end(call);
    } else if (granted) {
        /* The bucket may have moved in a reload: its index now. */
        pd->pm.provider = (int)buckets_index(p->d.buckets, w->prov);
        telemetry_rate_limited(p->d.telemetry, w->prov->name);
        grant(p, w->conn, w->id, pd, (now_s - pd->wait_start_s) * 1e3, true);
        conn_flush(w->conn);
    } else {
        unreserve(p, &pd->pm);
        telemetry_rate_limited(p->d.telemetry, w->prov->name);
        call->rate_limited = true;
        proto_error_set(&e, PROTO_E_TIMEOUT, "no token from %s within the "
                        "timeout", w->prov->name);
        pd->dr.wait_ms = (now_s - pd->wait_start_s) * 1e3;
        for (int i = 0; i < pd->dr.nproviders; i++)
            if (pd->dr.providers[i].p.why == DECISION_CHOSEN)
                pd->dr.providers[i].p.why = DECISION_NO_TOKEN;
        decide(p, pd, &e);
        conn_error(w->conn, w->id, &e);
        conn_flush(w->conn);
        call_refused(call);
    }
    free(pd);
}

/* The LLM tokens an attempt takes from provider prov's TOKENS_PER_MIN
 * bucket. */
static uint64_t
llm_tokens(const struct provider *prov, uint64_t estimate)
{
    return prov->bucket.cfg.tokens_per_min > 0 ? estimate : 0;
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
};

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
    if (pm->call->attempts == 0 && pm->call->workflow[0] == '\0' &&
        pm->call->tenant[0] == '\0')
        call_start(pm->call, pm->workflow, pm->tenant, r);
    pm->estimate = r->tokens_estimate;
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
    if (request_quota_gate(p->d.quota, p->d.telemetry, or_null(pm->workflow),
                           or_null(pm->tenant), (int64_t)pm->estimate,
                           now_s, &d, e) < 0) {
        if (e->code == PROTO_E_QUOTA_EXCEEDED) {
            pm->call->quota_allowed = false;
            pm->call->quota_remaining = (uint64_t)d.remaining;
            draft_quota(p, pd, true, now_s);
        }
        return -1;
    }
    draft_quota(p, pd, false, now_s);
    pm->call->quota_allowed = !d.over_quota;
    pm->call->quota_remaining = (uint64_t)d.remaining;
    pm->charged = true;
    pm->reservation = d.slot_start_ms;
    pd->quota_allowed = !d.over_quota;
    pd->quota_remaining = (uint64_t)d.remaining;
    pd->has_remaining = true;
    return 0;
}

/* Step 4: wait for the chosen provider's token up to timeout_ms. */
static int
permit_wait(struct permits *p, struct conn *c, uint64_t req_id,
            struct pending *pd, uint64_t llm, double timeout_ms, double now,
            struct proto_error *e)
{
    struct waiter *w = calloc(1, sizeof(*w));
    struct pending *keep = malloc(sizeof(*keep));

    if (w == NULL || keep == NULL) {
        free(w);
        free(keep);
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    }
    pd->wait_start_s = now;
    *keep = *pd;
    w->conn = c;
    w->id = req_id;
    w->started_s = now;
    w->done = permit_wait_done;
    w->arg = keep;
    if (buckets_wait(buckets_at(p->d.buckets, (size_t)pd->pm.provider), w, 1,
                     llm, now + timeout_ms / 1e3) < 0) {
        free(w);
        free(keep);
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    }
    return 0;
}

/*
 * Steps 2 to 4: route, take the token (or move to a provider that has
 * one), else wait.  Returns 0 when granted or queued, -1 with e filled
 * (the caller returns the reservation).  Each way out says in pd's draft
 * where the attempt went and why.
 */
static int
permit_route(struct permits *p, struct conn *c, struct proto_req *req,
             struct pending *pd, const struct route_args *ra,
             struct proto_error *e)
{
    const struct proto_permit_req *r = &req->u.permit;
    double now = pd->pm.started_s;
    bool no_token[CONFIG_MAX_PROVIDERS] = { false };
    struct provider *prov;
    uint64_t llm;
    int idx, alt;

    /* 2. route */
    idx = router_select(p->router, ra->pref, ra->excluded, now,
                        &pd->all_degraded);
    draft_route(p, pd, ra->excluded, idx, NULL, now);
    if (idx < 0)
        return no_provider(p, e);
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
        grant(p, c, req->id, pd, 0, false);
        return 0;
    case LIMITER_WAIT:
        break;
    }
    if (!pd->all_degraded &&
        (alt = failover_now(p, idx, ra->excluded, pd->pm.estimate, now,
                            no_token)) >= 0) {
        pd->pm.provider = alt;
        draft_route(p, pd, ra->excluded, alt, no_token, now);
        grant(p, c, req->id, pd, 0, true);
        return 0;
    }
    no_token[idx] = true;
    if (r->timeout_ms == 0) {
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
    return permit_wait(p, c, req->id, pd, llm, r->timeout_ms, now, e);
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
    if (permit_quota(p, &pd, e) < 0) {
        decide(p, &pd, e);
        call_refused(pd.pm.call);
        return -1;
    }
    if (permit_route(p, c, req, &pd, &ra, e) < 0) {
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
    *pmp = pm;
    return 0;
}

/* The outcome to the router (by name: a reload may have moved or removed
 * the provider) and the metrics; the provider's index, or -1. */
static int
report_outcome(struct permits *p, const struct permit *pm,
               const struct proto_report_req *r, enum router_outcome outcome,
               double now)
{
    int idx = router_find(p->router, pm->provider_name,
                          strlen(pm->provider_name));
    double retry_after_s =
        PROTO_HAS(r, PROTO_REPORT_REQ_RETRY_AFTER_S) ? r->retry_after_s : 0;
    double latency_ms =
        PROTO_HAS(r, PROTO_REPORT_REQ_LATENCY_MS) ? r->latency_ms : -1;

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
    if (outcome == ROUTER_OUTCOME_RATE_LIMITED)
        telemetry_rate_limited(p->d.telemetry, pm->provider_name);
    return idx;
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
    double now = clock_mono();
    bool reconciled;
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
    idx = report_outcome(p, pm, r, outcome, now);
    reconciled = report_reconcile(p, pm, r);
    call = pm->call;
    call->open_permits--;
    call->rate_limited |= outcome == ROUTER_OUTCOME_RATE_LIMITED;
    call->success = outcome == ROUTER_OUTCOME_OK;
    permit_free(p, pm);
    if ((r->final || call->id[0] == '\0') && call->open_permits == 0)
        call_end(call);

    if (idx >= 0)
        router_status(p->router, idx, now, &rs);
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
    struct permit *pm;
    struct call *call, *tmp;

    /* Unreported permits stay charged at their estimate. */
    while ((pm = TAILQ_FIRST(&cp->permits)) != NULL) {
        struct call *owner = pm->call;
        decisions_report(cp->owner->d.decisions, pm->decision,
                         DECISION_UNREPORTED, -1, -1, 0);
        owner->open_permits--;
        permit_free(cp->owner, pm);
        if (owner->id[0] == '\0')     /* anonymous: its only permit */
            call_end(owner);
    }
    HASH_ITER(hh, cp->calls, call, tmp)
        call_end(call);
    free(cp);
}

struct permits *
permits_new(const struct permits_deps *deps, int conn_slot)
{
    struct permits *p = calloc(1, sizeof(*p));

    if (p == NULL || (p->router = permits_router_new(deps->cfg)) == NULL) {
        log_error("%s: out of memory", __func__);
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
    free(p);
}
