/* ops.c - the dispatch table: one row per op, its handler and admin flag. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "permits.h"
#include "persist.h"
#include "router.h"
#include "quota.h"
#include "server.h"
#include "telemetry.h"

/*
 * A handler answers with conn_reply() and returns 0, or fills e and returns
 * -1 for the dispatcher to send the error.
 */
typedef int (*op_handler)(struct conn *c, struct proto_req *req,
                          struct proto_error *e);

static int
op_hello(struct conn *c, struct proto_req *req, struct proto_error *e)
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
op_ping(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    struct proto_ping_rep rep = { 0 };

    rep.uptime_s = server_now_mono() - c->srv->started_mono_s;
    PROTO_SET(&rep, 0);
    conn_reply(c, PROTO_OP_PING, req->id, &rep);
    return 0;
}

/* The provider a request names, or NULL with unknown_provider in e. */
static struct provider *
find_provider(struct conn *c, const struct proto_str *name,
              struct proto_error *e)
{
    struct server *srv = c->srv;
    struct provider *p = buckets_find(srv, name->ptr, name->len);
    char known[256] = "";
    size_t off = 0;

    if (p != NULL)
        return p;
    for (size_t i = 0; i < srv->nproviders && off < sizeof(known); i++)
        off += (size_t)snprintf(known + off, sizeof(known) - off, "%s%s",
                                i ? ", " : "", srv->providers[i].name);
    proto_error_set(e, PROTO_E_UNKNOWN_PROVIDER,
                    "unknown provider '%.*s' (configured: %s)",
                    (int)(name->len > 64 ? 64 : name->len), name->ptr,
                    srv->nproviders ? known : "none");
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

static void
acquire_done(struct waiter *w, bool granted, double now_s)
{
    struct proto_acquire_rep rep = { 0 };
    struct proto_error e;

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
op_acquire(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    const struct proto_acquire_req *a = &req->u.acquire;
    struct provider *p = find_provider(c, &a->provider, e);
    uint64_t n = PROTO_HAS(a, 1) ? a->tokens : 1;
    double now = server_now_mono();
    struct proto_acquire_rep rep = { 0 };
    struct waiter *w;

    if (p == NULL)
        return -1;
    if (a->timeout_ms < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "timeout_ms must not be negative");
    if (n > UINT32_MAX)
        return bad_amount(p, n, a->llm_tokens, e);
    switch (limiter_try_acquire(&p->bucket, (uint32_t)n, a->llm_tokens, now)) {
    case LIMITER_BAD_REQUEST:
        return bad_amount(p, n, a->llm_tokens, e);
    case LIMITER_GRANTED:
        conn_reply(c, PROTO_OP_ACQUIRE, req->id, &rep);
        return 0;
    case LIMITER_WAIT:
        break;
    }
    if (a->timeout_ms == 0)
        return proto_error_set(e, PROTO_E_TIMEOUT, "no token from %s now",
                               p->name);
    if ((w = calloc(1, sizeof(*w))) == NULL)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    w->conn = c;
    w->id = req->id;
    w->started_s = now;
    w->done = acquire_done;
    buckets_wait(p, w, (uint32_t)n, a->llm_tokens, now + a->timeout_ms / 1e3);
    return 0;
}

static int
op_release(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    const struct proto_release_req *r = &req->u.release;
    struct provider *p = find_provider(c, &r->provider, e);
    uint64_t n = PROTO_HAS(r, 1) ? r->tokens : 1;
    struct proto_release_rep rep = { 0 };
    double now = server_now_mono();

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
op_limiter_status(struct conn *c, struct proto_req *req,
                  struct proto_error *e)
{
    struct provider *p = find_provider(c, &req->u.limiter_status.provider, e);
    struct proto_limiter_status_rep rep = { 0 };
    double now = server_now_mono();

    if (p == NULL)
        return -1;
    rep.available_tokens = limiter_available(&p->bucket, now);
    rep.rate_per_sec = p->bucket.cfg.rate_per_sec;
    rep.max_tokens = p->bucket.cfg.burst;
    rep.enabled = p->bucket.cfg.enabled;
    rep.waiters = limiter_waiters(&p->bucket);
    rep.tokens_per_min = p->bucket.cfg.tokens_per_min;
    if (rep.tokens_per_min > 0) {
        rep.available_llm_tokens = limiter_available_llm(&p->bucket, now);
        PROTO_SET(&rep, 6);
    }
    conn_reply(c, PROTO_OP_LIMITER_STATUS, req->id, &rep);
    return 0;
}

static int
op_status(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    struct server *srv = c->srv;
    struct proto_status_rep rep = { 0 };
    struct proto_provider_status *ps = NULL;
    double now = server_now_mono();

    rep.enabled = srv->cfg.rate_limit_enabled;
    rep.policy.ptr = config_policy_name(srv->cfg.routing_policy);
    rep.policy.len = (uint32_t)strlen(rep.policy.ptr);
    rep.enforcement.ptr = config_enforcement_name(srv->cfg.quota_enforcement);
    rep.enforcement.len = (uint32_t)strlen(rep.enforcement.ptr);
    rep.window_days = srv->cfg.quota_window_days;
    if (srv->nproviders > 0) {
        ps = msgpack_zone_malloc(&c->zone, sizeof(*ps) * srv->nproviders);
        if (ps == NULL)
            return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
        memset(ps, 0, sizeof(*ps) * srv->nproviders);
    }
    for (size_t i = 0; i < srv->nproviders; i++) {
        struct provider *p = &srv->providers[i];
        ps[i].name.ptr = p->name;
        ps[i].name.len = (uint32_t)strlen(p->name);
        ps[i].available_tokens = limiter_available(&p->bucket, now);
        ps[i].rate_per_sec = p->bucket.cfg.rate_per_sec;
        ps[i].max_tokens = p->bucket.cfg.burst;
        ps[i].waiters = limiter_waiters(&p->bucket);
        ps[i].tokens_per_min = p->bucket.cfg.tokens_per_min;
        struct router_status rs;
        router_status(srv->router, (int)i, now, &rs);
        ps[i].state.ptr = rs.healthy ? "healthy" : "degraded";
        ps[i].state.len = (uint32_t)strlen(ps[i].state.ptr);
        ps[i].cooldown_remaining_s = rs.cooldown_remaining_s;
        ps[i].latency_ewma_ms = rs.latency_ewma_ms;
        if (rs.latency_samples > 0)
            PROTO_SET(&ps[i], 8);
    }
    rep.providers.v = ps;
    rep.providers.n = (uint32_t)srv->nproviders;
    conn_reply(c, PROTO_OP_STATUS, req->id, &rep);
    return 0;
}

/* ---- quotas ------------------------------------------------------------ */

/*
 * Copy the wire id s of field into buf (QUOTA_ID_MAX + 1 bytes) as a C
 * string; -1 with bad_request when it is empty, too long or holds a NUL or
 * a control character.
 */
int
ops_id_arg(const struct proto_str *s, const char *field, char *buf,
       struct proto_error *e)
{
    if (s->len == 0 || s->len > QUOTA_ID_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "%s must be 1 to %d "
                               "bytes, not %u", field, QUOTA_ID_MAX, s->len);
    if (memchr(s->ptr, '\0', s->len) != NULL)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "%s holds a NUL byte",
                               field);
    memcpy(buf, s->ptr, s->len);
    buf[s->len] = '\0';
    if (quota_id_valid(buf) < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "%s holds a control "
                               "character", field);
    return 0;
}

/* The workflow and/or tenant of a request: NULL when absent. */
struct subjects {
    char wbuf[QUOTA_ID_MAX + 1], tbuf[QUOTA_ID_MAX + 1];
    const char *workflow, *tenant;
};

static int
subjects_arg(const struct proto_str *wf, bool has_wf, const struct proto_str *tn,
             bool has_tn, struct subjects *s, struct proto_error *e)
{
    s->workflow = s->tenant = NULL;
    if (has_wf) {
        if (ops_id_arg(wf, "workflow_id", s->wbuf, e) < 0)
            return -1;
        s->workflow = s->wbuf;
    }
    if (has_tn) {
        if (ops_id_arg(tn, "tenant_id", s->tbuf, e) < 0)
            return -1;
        s->tenant = s->tbuf;
    }
    if (s->workflow == NULL && s->tenant == NULL)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "give workflow_id, tenant_id or both");
    return 0;
}

/* Exactly one subject: for quota_status, quota_set and quota_reset. */
struct one_subject {
    struct subjects s;
    enum quota_kind kind;
    const char *id;                     /* s.workflow or s.tenant */
    char subject[QUOTA_SUBJECT_MAX];    /* "workflow:<id>", "tenant:<id>" */
};

static int
one_subject_arg(const struct proto_quota_subject_req *r, struct one_subject *o,
                struct proto_error *e)
{
    if (subjects_arg(&r->workflow_id, PROTO_HAS(r, 0), &r->tenant_id,
                     PROTO_HAS(r, 1), &o->s, e) < 0)
        return -1;
    if (o->s.workflow != NULL && o->s.tenant != NULL)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "give workflow_id or tenant_id, not both");
    o->kind = o->s.workflow != NULL ? QUOTA_WORKFLOW : QUOTA_TENANT;
    o->id = o->s.workflow != NULL ? o->s.workflow : o->s.tenant;
    quota_subject(o->subject, sizeof(o->subject), o->kind, o->id);
    return 0;
}

static struct proto_str
cstr(const char *s)
{
    struct proto_str p = { s, (uint32_t)strlen(s) };
    return p;
}

/* Fill quota_exceeded for a hard rejection by d. */
int
ops_quota_exceeded(const struct quota_decision *d, struct proto_error *e)
{
    proto_error_set(e, PROTO_E_QUOTA_EXCEEDED, "%s would exceed its quota: "
                    "%lld of %lld tokens used", d->subject,
                    (long long)d->used, (long long)d->limit);
    snprintf(e->subject, sizeof(e->subject), "%s", d->subject);
    e->detail.subject = cstr(e->subject);
    e->detail.tokens_used = (uint64_t)d->used;
    e->detail.tokens_limit = (uint64_t)d->limit;
    e->detail.reset_at = d->reset_at_s;
    PROTO_SET(&e->detail, PROTO_ERR_SUBJECT);
    PROTO_SET(&e->detail, PROTO_ERR_TOKENS_USED);
    PROTO_SET(&e->detail, PROTO_ERR_TOKENS_LIMIT);
    if (d->has_reset_at)
        PROTO_SET(&e->detail, PROTO_ERR_RESET_AT);
    return -1;
}

static int
op_quota_reserve(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    const struct proto_quota_reserve_req *r = &req->u.quota_reserve;
    struct proto_quota_reserve_rep rep = { 0 };
    struct quota_decision d;
    struct subjects s;

    if (subjects_arg(&r->workflow_id, PROTO_HAS(r, 0), &r->tenant_id,
                     PROTO_HAS(r, 1), &s, e) < 0)
        return -1;
    if (r->tokens > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens too large");
    /* Disabled: the numbers as they are, nothing charged, always allowed
     * (reserving 0 only looks). */
    bool enabled = c->srv->cfg.rate_limit_enabled;
    if (quota_reserve(c->srv->quota, s.workflow, s.tenant,
                      enabled ? (int64_t)r->tokens : 0, server_now_wall(),
                      &d) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_reserve failed");
    if (!enabled) {
        d.allowed = true;
        d.over_quota = false;
    }
    if (d.over_quota)
        telemetry_quota_exceeded(c->srv, s.workflow, s.tenant);
    if (!d.allowed)
        return ops_quota_exceeded(&d, e);
    telemetry_quota_remaining(c->srv, s.workflow);
    if (d.over_quota && d.used - (int64_t)r->tokens <= d.limit)
        log_warn("%s went over its quota (soft): %lld of %lld tokens used",
                 d.subject, (long long)d.used, (long long)d.limit);
    rep.allowed = true;
    rep.over_quota = d.over_quota;
    rep.subject = cstr(d.subject);
    rep.tokens_used = (uint64_t)d.used;
    rep.tokens_limit = (uint64_t)d.limit;
    rep.tokens_remaining = (uint64_t)d.remaining;
    rep.reset_at = d.reset_at_s;
    if (d.has_reset_at)
        PROTO_SET(&rep, 6);
    rep.reservation = d.slot_start_ms;
    persist_reply(c, PROTO_OP_QUOTA_RESERVE, req->id, &rep,
                  enabled && r->tokens > 0);
    return 0;
}

static int
op_quota_commit(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    const struct proto_quota_commit_req *r = &req->u.quota_commit;
    struct proto_quota_commit_rep rep = { 0 };
    struct subjects s;

    if (subjects_arg(&r->workflow_id, PROTO_HAS(r, 0), &r->tenant_id,
                     PROTO_HAS(r, 1), &s, e) < 0)
        return -1;
    if (r->estimate > INT64_MAX || r->actual > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "tokens too large");
    /* A reservation is the start of a slot that has been: never later
     * than the current slot (it would never leave the window). */
    double now = server_now_wall();
    if (r->reservation > (int64_t)(now * 1e3) ||
        r->reservation % quota_slot_ms(c->srv->quota) != 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "reservation %lld is "
                               "not one quota_reserve gave",
                               (long long)r->reservation);
    if (c->srv->cfg.rate_limit_enabled &&
        quota_commit(c->srv->quota, s.workflow, s.tenant, r->reservation,
                     (int64_t)r->estimate, (int64_t)r->actual, now) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_commit failed");
    persist_reply(c, PROTO_OP_QUOTA_COMMIT, req->id, &rep,
                  c->srv->cfg.rate_limit_enabled && r->estimate != r->actual);
    return 0;
}

static int
op_quota_status(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    struct proto_quota_status_rep rep = { 0 };
    struct quota_status st;
    struct one_subject o;

    if (one_subject_arg(&req->u.quota_subject, &o, e) < 0)
        return -1;
    if (quota_status(c->srv->quota, o.kind, o.id, server_now_wall(), &st) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_status failed");
    rep.subject = cstr(o.subject);
    rep.tokens_used = (uint64_t)st.tokens_used;
    rep.tokens_remaining = (uint64_t)st.tokens_remaining;
    rep.tokens_limit = (uint64_t)st.tokens_limit;
    rep.window_start = st.window_start_s;
    rep.window_end = st.window_end_s;
    rep.reset_at = st.reset_at_s;
    if (st.has_reset_at)
        PROTO_SET(&rep, 6);
    conn_reply(c, PROTO_OP_QUOTA_STATUS, req->id, &rep);
    return 0;
}

static int
op_quota_set(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    const struct proto_quota_subject_req *r = &req->u.quota_subject;
    struct proto_quota_set_rep rep = { 0 };
    struct one_subject o;

    if (one_subject_arg(r, &o, e) < 0)
        return -1;
    if (r->limit > INT64_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "limit too large");
    if (quota_set(c->srv->quota, o.kind, o.id, (int64_t)r->limit) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_set failed");
    log_info("uid %u set the quota of %s to %llu tokens", (unsigned)c->uid,
             o.subject, (unsigned long long)r->limit);
    rep.subject = cstr(o.subject);
    rep.tokens_limit = r->limit;
    persist_reply(c, PROTO_OP_QUOTA_SET, req->id, &rep, true);
    return 0;
}

static int
op_quota_reset(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    struct proto_quota_reset_rep rep = { 0 };
    struct one_subject o;

    if (one_subject_arg(&req->u.quota_subject, &o, e) < 0)
        return -1;
    if (quota_reset(c->srv->quota, o.kind, o.id) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_reset failed");
    log_info("uid %u reset the usage of %s", (unsigned)c->uid, o.subject);
    rep.subject = cstr(o.subject);
    persist_reply(c, PROTO_OP_QUOTA_RESET, req->id, &rep, true);
    return 0;
}

static int
op_reload(struct conn *c, struct proto_req *req, struct proto_error *e)
{
    struct proto_reload_rep rep = { 0 };
    char err[PROTO_ERRMSG_MAX];

    log_info("uid %u asked for a reload", (unsigned)c->uid);
    if (server_reload(c->srv, err, sizeof(err)) < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "reload refused, the "
                               "old configuration stays: %s", err);
    rep.providers = c->srv->nproviders;
    rep.env_file = cstr(c->srv->cfg.env_file);
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
    [PROTO_OP_SELECT_PROVIDER] = { permits_op_select_provider, false },
    [PROTO_OP_PERMIT] = { permits_op_permit, false },
    [PROTO_OP_REPORT] = { permits_op_report, false },
    [PROTO_OP_METRICS] = { telemetry_op_metrics, false },
    [PROTO_OP_RELOAD] = { op_reload, true },
};

void
ops_dispatch(struct conn *c, struct proto_req *req)
{
    struct proto_error e;

    if (op_table[req->op].admin && c->uid != 0 && c->uid != c->srv->uid) {
        proto_error_set(&e, PROTO_E_PERMISSION_DENIED,
                        "%s is an admin op: uid %u may not use it",
                        proto_op_name(req->op), (unsigned)c->uid);
        conn_error(c, req->id, &e);
        return;
    }
    if (op_table[req->op].fn == NULL) {     /* a codec row without a handler */
        proto_error_set(&e, PROTO_E_UNKNOWN_OP, "op %s is not served",
                        proto_op_name(req->op));
        conn_error(c, req->id, &e);
        return;
    }
    if (op_table[req->op].fn(c, req, &e) < 0)
        conn_error(c, req->id, &e);
}
