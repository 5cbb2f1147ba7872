/* permits.c - permit (quota + route + token) and report, and their calls. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "log.h"
#include "permits.h"
#include "persist.h"
#include "quota.h"
#include "router.h"
#include "server.h"
#include "telemetry.h"
#include "trace.h"

#define CALL_ID_MAX 128

/* One logical call: every attempt that carried the same call_id. */
struct call {
    UT_hash_handle hh;              /* in conn->calls by id */
    char id[CALL_ID_MAX + 1];       /* "" for a call without a call_id */
    struct conn *conn;
    struct server *srv;
    unsigned attempts;              /* permits granted */
    unsigned open_permits;          /* granted, not yet reported */
    bool rate_limited;
    bool success;
    /* What its span says (DESIGN.md §9). */
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
    UT_hash_handle hh;              /* in srv->permits by id */
    TAILQ_ENTRY(permit) conn_entry;
    uint64_t id;
    struct conn *conn;
    struct call *call;
    int provider;                   /* index, valid until the loop turns */
    char provider_name[CONFIG_NAME_MAX];    /* what a reload keeps */
    char workflow[QUOTA_ID_MAX + 1], tenant[QUOTA_ID_MAX + 1];
    bool charged;                   /* a quota reservation to reconcile */
    int64_t reservation;
    uint64_t estimate;
    double started_s;               /* monotonic, when routed */
};

/* A permit waiting for a token: what the grant needs to finish it. */
struct pending {
    struct permit pm;               /* filled but for id */
    double wait_start_s;
    bool quota_allowed, has_remaining, all_degraded;
    uint64_t quota_remaining;
};

static void
call_free(struct call *call)
{
    if (call->id[0] != '\0' && call->conn != NULL)
        HASH_DEL(call->conn->calls, call);
    free(call);
}

/* The call named id on c, created when new; NULL when out of memory. */
static struct call *
call_get(struct conn *c, const struct proto_str *id, bool has_id)
{
    struct call *call = NULL;

    if (has_id)
        HASH_FIND(hh, c->calls, id->ptr, id->len, call);
    if (call != NULL)
        return call;
    if ((call = calloc(1, sizeof(*call))) == NULL)
        return NULL;
    call->conn = c;
    call->srv = c->srv;
    call->quota_allowed = true;
    call->start_unix_ns = (int64_t)(server_now_wall() * 1e9);
    if (has_id) {
        memcpy(call->id, id->ptr, id->len);
        HASH_ADD(hh, c->calls, id, id->len, call);
    }
    return call;
}

/* The span of a finished call, to the OTLP exporter (when there is one). */
static void
call_span(struct call *call)
{
    struct trace_exporter *t = call->srv->tracer;
    struct trace_attr a[12];
    struct trace_span sp = { 0 };
    size_t n = 0;

    if (t == NULL)
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
    sp.end_unix_ns = (int64_t)(server_now_wall() * 1e9);
    sp.error = !call->success;
    sp.status_message = call->success ? NULL : call->attempts == 0 ?
                        "no attempt was permitted" : "the call failed";
    sp.attrs = a;
    sp.nattrs = n;
    trace_exporter_submit(t, &sp);
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

/* Return an unused reservation: the attempt never happened. */
static void
unreserve(struct server *srv, const struct permit *pm)
{
    if (!pm->charged)
        return;
    quota_commit(srv->quota, pm->workflow[0] ? pm->workflow : NULL,
                 pm->tenant[0] ? pm->tenant : NULL, pm->reservation,
                 (int64_t)pm->estimate, 0, server_now_wall());
    persist_changed(srv);
}

/* Resolve names[] to flags of srv->providers; -1 for an unknown name. */
static int
exclusion(struct server *srv, const struct proto_strarr *names, bool *flags,
          struct proto_error *e)
{
    memset(flags, 0, srv->nproviders * sizeof(*flags));
    for (uint32_t i = 0; i < names->n; i++) {
        int idx = router_find(srv->router, names->v[i].ptr, names->v[i].len);
        if (idx < 0)
            return proto_error_set(e, PROTO_E_UNKNOWN_PROVIDER,
                                   "exclude: unknown provider '%.*s'",
                                   (int)(names->v[i].len > 64 ? 64 :
                                         names->v[i].len), names->v[i].ptr);
        flags[idx] = true;
    }
    return 0;
}

static int
preferred_index(struct server *srv, const struct proto_str *name, bool has,
                struct proto_error *e)
{
    int idx;

    if (!has || name->len == 0)
        return -1;
    if ((idx = router_find(srv->router, name->ptr, name->len)) < 0)
        return proto_error_set(e, PROTO_E_UNKNOWN_PROVIDER,
                               "preferred: unknown provider '%.*s'",
                               (int)(name->len > 64 ? 64 : name->len),
                               name->ptr) - 1;
    return idx;
}

int
permits_op_select_provider(struct conn *c, struct proto_req *req,
                           struct proto_error *e)
{
    struct server *srv = c->srv;
    const struct proto_select_provider_req *r = &req->u.select_provider;
    struct proto_select_provider_rep rep = { 0 };
    bool excluded[CONFIG_MAX_PROVIDERS];
    int pref, idx;

    if ((pref = preferred_index(srv, &r->preferred, PROTO_HAS(r, 1), e)) < -1)
        return -1;
    if (exclusion(srv, &r->exclude, excluded, e) < 0)
        return -1;
    idx = router_select(srv->router, pref, excluded, server_now_mono(),
                        &rep.all_degraded);
    if (idx < 0)
        return proto_error_set(e, PROTO_E_NO_PROVIDER, srv->nproviders ?
                               "every provider is excluded" :
                               "no provider is configured");
    rep.provider.ptr = srv->providers[idx].name;
    rep.provider.len = (uint32_t)strlen(rep.provider.ptr);
    conn_reply(c, PROTO_OP_SELECT_PROVIDER, req->id, &rep);
    return 0;
}

/* Grant: the attempt has its token on provider; record it and answer. */
static void
grant(struct conn *c, uint64_t req_id, struct permit *tmpl, struct call *call,
      const struct pending *pd, double wait_ms, bool rate_limited)
{
    struct server *srv = c->srv;
    struct permit *pm = malloc(sizeof(*pm));
    struct proto_permit_rep rep = { 0 };
    struct proto_error e;

    if (pm == NULL) {
        unreserve(srv, tmpl);
        proto_error_set(&e, PROTO_E_INTERNAL, "out of memory");
        conn_error(c, req_id, &e);
        return;
    }
    *pm = *tmpl;
    pm->id = ++srv->next_permit_id;
    pm->conn = c;
    pm->call = call;
    HASH_ADD(hh, srv->permits, id, sizeof(pm->id), pm);
    TAILQ_INSERT_TAIL(&c->permits, pm, conn_entry);
    memcpy(pm->provider_name, srv->providers[pm->provider].name,
           sizeof(pm->provider_name));
    if (call->routed_to[0] != '\0' &&
        strcmp(call->routed_to, pm->provider_name) != 0) {
        log_debug("call '%s' fails over from %s to %s", call->id,
                  call->routed_to, pm->provider_name);
        telemetry_failover(srv, call->routed_to, pm->provider_name);
    }
    call->attempts++;
    call->open_permits++;
    call->rate_limited |= rate_limited;
    call->wait_ms += wait_ms;
    memcpy(call->routed_to, pm->provider_name, sizeof(call->routed_to));

    rep.permit_id = pm->id;
    rep.provider.ptr = srv->providers[pm->provider].name;
    rep.provider.len = (uint32_t)strlen(rep.provider.ptr);
    rep.wait_ms = wait_ms;
    rep.quota_allowed = pd->quota_allowed;
    rep.quota_remaining = pd->quota_remaining;
    if (pd->has_remaining)
        PROTO_SET(&rep, 4);
    rep.rate_limited = rate_limited;
    rep.all_degraded = pd->all_degraded;
    persist_reply(c, PROTO_OP_PERMIT, req_id, &rep,
                  pm->charged && pm->estimate > 0);
}

/* A waiting permit got its token, timed out, or lost its connection. */
static void
permit_wait_done(struct waiter *w, bool granted, double now_s)
{
    struct pending *pd = w->arg;
    struct server *srv = w->prov->srv;
    struct proto_error e;

    if (w->conn == NULL) {
        /* Its connection closed: a named call ends with the connection. */
        unreserve(srv, &pd->pm);
        if (pd->pm.call->id[0] == '\0')
            call_end(pd->pm.call);
    } else if (granted) {
        /* The bucket may have moved in a reload: its index now. */
        pd->pm.provider = (int)(w->prov - srv->providers);
        telemetry_rate_limited(srv, w->prov->name);
        grant(w->conn, w->id, &pd->pm, pd->pm.call, pd,
              (now_s - pd->wait_start_s) * 1e3, true);
        conn_flush(w->conn);
    } else {
        unreserve(srv, &pd->pm);
        telemetry_rate_limited(srv, w->prov->name);
        pd->pm.call->rate_limited = true;
        proto_error_set(&e, PROTO_E_TIMEOUT, "no token from %s within the "
                        "timeout", w->prov->name);
        conn_error(w->conn, w->id, &e);
        conn_flush(w->conn);
        if (pd->pm.call->open_permits == 0)
            call_end(pd->pm.call);
    }
    free(pd);
}

/* The LLM tokens an attempt takes from provider p's TOKENS_PER_MIN bucket. */
static uint64_t
llm_tokens(const struct provider *p, uint64_t estimate)
{
    return p->bucket.cfg.tokens_per_min > 0 ? estimate : 0;
}

/*
 * The chosen provider has no token now: another healthy, not excluded
 * provider that has one takes the attempt (a rate-limit failover).
 * Returns its index, or -1.
 */
static int
failover_now(struct server *srv, int chosen, bool *excluded,
             uint64_t estimate, double now)
{
    bool degraded;

    excluded[chosen] = true;
    for (;;) {
        int idx = router_select(srv->router, -1, excluded, now, &degraded);
        if (idx < 0 || degraded)
            return -1;
        if (limiter_try_acquire(&srv->providers[idx].bucket, 1,
                                llm_tokens(&srv->providers[idx], estimate),
                                now) == LIMITER_GRANTED) {
            log_debug("rate-limit failover from %s to %s",
                      srv->providers[chosen].name, srv->providers[idx].name);
            telemetry_rate_limited(srv, srv->providers[chosen].name);
            telemetry_failover(srv, srv->providers[chosen].name,
                               srv->providers[idx].name);
            return idx;
        }
        excluded[idx] = true;
    }
}

/* The first permit of a call: its subjects, estimate and trace context. */
static void
call_start(struct call *call, const char *workflow, const char *tenant,
           const struct proto_permit_req *r)
{
    memcpy(call->workflow, workflow, sizeof(call->workflow));
    memcpy(call->tenant, tenant, sizeof(call->tenant));
    call->tokens_estimate = r->tokens_estimate;
    if (PROTO_HAS(r, 7) &&
        trace_parse_traceparent(r->traceparent.ptr, r->traceparent.len,
                                call->trace_id, call->parent_span_id) == 0)
        call->has_parent = true;
    else
        trace_random_id(call->trace_id, sizeof(call->trace_id));
    trace_random_id(call->span_id, sizeof(call->span_id));
}

int
permits_op_permit(struct conn *c, struct proto_req *req,
                  struct proto_error *e)
{
    struct server *srv = c->srv;
    const struct proto_permit_req *r = &req->u.permit;
    bool excluded[CONFIG_MAX_PROVIDERS];
    struct pending pd = { .quota_allowed = true };
    struct permit *pm = &pd.pm;
    struct call *call;
    struct quota_decision d;
    double now = server_now_mono();
    uint64_t llm;
    int pref, idx;

    if (PROTO_HAS(r, 6) && (r->call_id.len == 0 ||
                            r->call_id.len > CALL_ID_MAX))
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "call_id must be 1 "
                               "to %d bytes", CALL_ID_MAX);
    if (r->timeout_ms < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "timeout_ms must not be negative");
    if (r->tokens_estimate > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "tokens_estimate too large");
    if ((pref = preferred_index(srv, &r->preferred, PROTO_HAS(r, 3), e)) < -1)
        return -1;
    if (exclusion(srv, &r->exclude, excluded, e) < 0)
        return -1;
    if (PROTO_HAS(r, 0) && ops_id_arg(&r->workflow_id, "workflow_id",
                                      pm->workflow, e) < 0)
        return -1;
    if (PROTO_HAS(r, 1) && ops_id_arg(&r->tenant_id, "tenant_id", pm->tenant,
                                      e) < 0)
        return -1;
    if ((call = call_get(c, &r->call_id, PROTO_HAS(r, 6))) == NULL)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    if (call->attempts == 0 && call->workflow[0] == '\0' &&
        call->tenant[0] == '\0')
        call_start(call, pm->workflow, pm->tenant, r);
    pm->estimate = r->tokens_estimate;
    pm->started_s = now;

    /* 1. quota */
    if (srv->cfg.rate_limit_enabled && (pm->workflow[0] || pm->tenant[0])) {
        if (quota_reserve(srv->quota, pm->workflow[0] ? pm->workflow : NULL,
                          pm->tenant[0] ? pm->tenant : NULL,
                          (int64_t)pm->estimate, server_now_wall(), &d) < 0) {
            proto_error_set(e, PROTO_E_INTERNAL, "quota_reserve failed");
            goto fail;
        }
        if (d.over_quota)
            telemetry_quota_exceeded(srv, pm->workflow[0] ? pm->workflow :
                                     NULL, pm->tenant[0] ? pm->tenant : NULL);
        call->quota_allowed = !d.over_quota;
        call->quota_remaining = (uint64_t)d.remaining;
        if (!d.allowed) {
            ops_quota_exceeded(&d, e);
            goto fail;
        }
        telemetry_quota_remaining(srv, pm->workflow[0] ? pm->workflow : NULL);
        if (d.over_quota && d.used - (int64_t)pm->estimate <= d.limit)
            log_warn("%s went over its quota (soft): %lld of %lld tokens "
                     "used", d.subject, (long long)d.used, (long long)d.limit);
        pm->charged = true;
        pm->reservation = d.slot_start_ms;
        pd.quota_allowed = !d.over_quota;
        pd.quota_remaining = (uint64_t)d.remaining;
        pd.has_remaining = true;
    }

    /* 2. route */
    idx = router_select(srv->router, pref, excluded, now, &pd.all_degraded);
    if (idx < 0) {
        proto_error_set(e, PROTO_E_NO_PROVIDER, srv->nproviders ?
                        "every provider is excluded" :
                        "no provider is configured");
        goto fail_unreserve;
    }
    if (pd.all_degraded)
        log_warn("every provider is degraded: routing to %s, whose cooldown "
                 "ends first", srv->providers[idx].name);

    /* 3. token */
    llm = llm_tokens(&srv->providers[idx], pm->estimate);
    switch (limiter_try_acquire(&srv->providers[idx].bucket, 1, llm, now)) {
    case LIMITER_BAD_REQUEST:
        proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens_estimate %llu "
                        "exceeds the tokens_per_min of %s",
                        (unsigned long long)pm->estimate,
                        srv->providers[idx].name);
        goto fail_unreserve;
    case LIMITER_GRANTED:
        pm->provider = idx;
        grant(c, req->id, pm, call, &pd, 0, false);
        return 0;
    case LIMITER_WAIT:
        break;
    }
    if (!pd.all_degraded) {
        bool moved[CONFIG_MAX_PROVIDERS];
        memcpy(moved, excluded, sizeof(moved));
        int alt = failover_now(srv, idx, moved, pm->estimate, now);
        if (alt >= 0) {
            pm->provider = alt;
            grant(c, req->id, pm, call, &pd, 0, true);
            return 0;
        }
    }
    if (r->timeout_ms == 0) {
        telemetry_rate_limited(srv, srv->providers[idx].name);
        call->rate_limited = true;
        proto_error_set(e, PROTO_E_TIMEOUT, "no token from %s now",
                        srv->providers[idx].name);
        goto fail_unreserve;
    }

    /* 4. wait for the chosen provider's token */
    struct waiter *w = calloc(1, sizeof(*w));
    struct pending *keep = malloc(sizeof(*keep));
    if (w == NULL || keep == NULL) {
        free(w);
        free(keep);
        proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
        goto fail_unreserve;
    }
    pm->provider = idx;
    pm->call = call;
    pd.wait_start_s = now;
    *keep = pd;
    w->conn = c;
    w->id = req->id;
    w->started_s = now;
    w->done = permit_wait_done;
    w->arg = keep;
    buckets_wait(&srv->providers[idx], w, 1, llm, now + r->timeout_ms / 1e3);
    return 0;

fail_unreserve:
    unreserve(srv, pm);
fail:
    if (call->open_permits == 0)
        call_end(call);
    return -1;
}

static void
permit_free(struct server *srv, struct permit *pm)
{
    HASH_DEL(srv->permits, pm);
    TAILQ_REMOVE(&pm->conn->permits, pm, conn_entry);
    free(pm);
}

int
permits_op_report(struct conn *c, struct proto_req *req,
                  struct proto_error *e)
{
    struct server *srv = c->srv;
    const struct proto_report_req *r = &req->u.report;
    struct proto_report_rep rep = { 0 };
    struct router_status rs;
    enum router_outcome outcome;
    struct permit *pm = NULL;
    double now = server_now_mono();
    uint64_t actual;

    HASH_FIND(hh, srv->permits, &r->permit_id, sizeof(r->permit_id), pm);
    if (pm == NULL || pm->conn != c)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "unknown permit_id "
                               "%llu (already reported, or another "
                               "connection's)",
                               (unsigned long long)r->permit_id);
    if (router_outcome_parse(r->outcome.ptr, r->outcome.len, &outcome) < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "outcome '%.*s': "
                               "expected ok, rate_limited, server_error, "
                               "timeout or client_error",
                               (int)(r->outcome.len > 32 ? 32 :
                                     r->outcome.len), r->outcome.ptr);
    if (PROTO_HAS(r, 2) && r->latency_ms < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "latency_ms must not be negative");
    if (PROTO_HAS(r, 3) && r->tokens_used > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens_used too large");

    /* By name: a reload may have moved or removed the provider. */
    int provider = router_find(srv->router, pm->provider_name,
                               strlen(pm->provider_name));
    if (provider >= 0) {
        router_report(srv->router, provider, outcome,
                      PROTO_HAS(r, 2) ? r->latency_ms : -1,
                      PROTO_HAS(r, 4) ? r->retry_after_s : 0, pm->started_s,
                      now);
        if (outcome != ROUTER_OUTCOME_OK &&
            outcome != ROUTER_OUTCOME_CLIENT_ERROR)
            log_info("%s answered %s: degraded for %.1f s",
                     pm->provider_name, router_outcome_name(outcome),
                     fmax(srv->cfg.provider_cooldown_s,
                          PROTO_HAS(r, 4) ? r->retry_after_s : 0));
    }
    telemetry_request(srv, pm->provider_name, pm->workflow,
                      PROTO_HAS(r, 2) ? r->latency_ms : -1);
    if (outcome == ROUTER_OUTCOME_RATE_LIMITED)
        telemetry_rate_limited(srv, pm->provider_name);
    actual = PROTO_HAS(r, 3) ? r->tokens_used : pm->estimate;
    bool reconciled = pm->charged && actual != pm->estimate;
    if (reconciled) {
        quota_commit(srv->quota, pm->workflow[0] ? pm->workflow : NULL,
                     pm->tenant[0] ? pm->tenant : NULL, pm->reservation,
                     (int64_t)pm->estimate, (int64_t)actual,
                     server_now_wall());
        telemetry_quota_remaining(srv, pm->workflow[0] ? pm->workflow : NULL);
    }

    struct call *call = pm->call;
    call->open_permits--;
    call->rate_limited |= outcome == ROUTER_OUTCOME_RATE_LIMITED;
    call->success = outcome == ROUTER_OUTCOME_OK;
    permit_free(srv, pm);
    if ((r->final || call->id[0] == '\0') && call->open_permits == 0)
        call_end(call);

    if (provider >= 0)
        router_status(srv->router, provider, now, &rs);
    else
        rs = (struct router_status){ .healthy = false };
    rep.state.ptr = provider < 0 ? "removed" : rs.healthy ? "healthy" :
                    "degraded";
    rep.state.len = (uint32_t)strlen(rep.state.ptr);
    rep.cooldown_remaining_s = rs.cooldown_remaining_s;
    persist_reply(c, PROTO_OP_REPORT, req->id, &rep, reconciled);
    return 0;
}

void
permits_drop_conn(struct conn *c)
{
    struct permit *pm;
    struct call *call, *tmp;

    /* Unreported permits stay charged at their estimate. */
    while ((pm = TAILQ_FIRST(&c->permits)) != NULL) {
        struct call *owner = pm->call;
        owner->open_permits--;
        permit_free(c->srv, pm);
        if (owner->id[0] == '\0')     /* anonymous: its only permit */
            call_end(owner);
    }
    HASH_ITER(hh, c->calls, call, tmp)
        call_end(call);
}

void
permits_free(struct server *srv)
{
    struct conn *c;

    TAILQ_FOREACH(c, &srv->conns, entry)
        permits_drop_conn(c);
}
