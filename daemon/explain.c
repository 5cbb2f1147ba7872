/* explain.c - the explain op: held decisions to their wire messages. */
#include <string.h>

#include "decisions.h"
#include "explain.h"
#include "permits.h"
#include "quota.h"
#include "request.h"
#include "server.h"

#define EXPLAIN_MAX 64              /* decisions in one reply at most */
#define EXPLAIN_BUDGET 56000        /* their bytes, to fit one frame */

/* An upper bound of the bytes decision dc takes on the wire. */
static size_t
wire_size(const struct decision *dc)
{
    size_t n = 400 + strlen(dc->call_id) + strlen(dc->workflow) +
               strlen(dc->tenant) + strlen(dc->error);

    n += dc->nquota * (QUOTA_SUBJECT_MAX + 80);
    for (size_t i = 0; i < dc->nproviders; i++)
        n += strlen(dc->providers[i].name) + 120;
    return n;
}

/* The quota of dc's subjects, in z; -1 when out of memory. */
static int
wire_quota(msgpack_zone *z, const struct decision *dc,
           struct proto_decision *out)
{
    struct proto_decision_quota *q;

    q = msgpack_zone_malloc(z, sizeof(*q) * (dc->nquota ? dc->nquota : 1));
    if (q == NULL)
        return -1;
    for (size_t i = 0; i < dc->nquota; i++) {
        const struct decision_quota *dq = &dc->quota[i];
        char *subject = msgpack_zone_malloc(z, QUOTA_SUBJECT_MAX);
        if (subject == NULL)
            return -1;
        quota_subject(subject, QUOTA_SUBJECT_MAX,
                      dq->tenant ? QUOTA_TENANT : QUOTA_WORKFLOW,
                      dq->tenant ? dc->tenant : dc->workflow);
        memset(&q[i], 0, sizeof(q[i]));
        q[i].subject = request_str(subject);
        q[i].tokens_used = (uint64_t)(dq->used > 0 ? dq->used : 0);
        q[i].tokens_limit = (uint64_t)(dq->limit > 0 ? dq->limit : 0);
        q[i].verdict = request_str(decisions_verdict_name(dq->verdict));
    }
    out->quota.v = q;
    out->quota.n = dc->nquota;
    return 0;
}

/* The providers dc considered, in z; -1 when out of memory. */
static int
wire_providers(msgpack_zone *z, const struct decision *dc,
               struct proto_decision *out)
{
    struct proto_decision_provider *v;
    size_t n = dc->nproviders;

    if ((v = msgpack_zone_malloc(z, sizeof(*v) * (n ? n : 1))) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const struct decision_provider *dp = &dc->providers[i];
        memset(&v[i], 0, sizeof(v[i]));
        v[i].name = request_str(dp->name);
        v[i].why = request_str(decisions_why_name(dp->why));
        if (dp->degraded) {
            v[i].cooldown_until = dp->cooldown_until;
            v[i].cooldown_cause = request_str(decisions_outcome_name(
                dp->cause));
            PROTO_SET(&v[i], PROTO_DECISION_PROVIDER_COOLDOWN_UNTIL);
            PROTO_SET(&v[i], PROTO_DECISION_PROVIDER_COOLDOWN_CAUSE);
            if (dp->retry_after_s > 0) {
                v[i].retry_after_s = dp->retry_after_s;
                PROTO_SET(&v[i], PROTO_DECISION_PROVIDER_RETRY_AFTER_S);
            }
        }
    }
    out->providers.v = v;
    out->providers.n = (uint32_t)n;
    return 0;
}

/* The report's and the refusal's fields of dc. */
static void
wire_outcome(const struct decision *dc, struct proto_decision *out)
{
    out->outcome = request_str(decisions_outcome_name(dc->outcome));
    if (dc->tokens_used >= 0) {
        out->tokens_used = (uint64_t)dc->tokens_used;
        PROTO_SET(out, PROTO_DECISION_TOKENS_USED);
    }
    if (dc->latency_ms >= 0) {
        out->latency_ms = dc->latency_ms;
        PROTO_SET(out, PROTO_DECISION_LATENCY_MS);
    }
    if (dc->retry_after_s > 0) {
        out->retry_after_s = dc->retry_after_s;
        PROTO_SET(out, PROTO_DECISION_RETRY_AFTER_S);
    }
    if (dc->error_code != 0) {
        out->error_code = request_str(proto_errcode_name(
            (enum proto_errcode)dc->error_code));
        out->error_msg = request_str(dc->error);
        PROTO_SET(out, PROTO_DECISION_ERROR_CODE);
        PROTO_SET(out, PROTO_DECISION_ERROR_MSG);
    }
}

/* The model a permit named, and the deployment it went to. */
static void
wire_model(const struct decision *dc, struct proto_decision *out)
{
    if (dc->model[0] == '\0')
        return;
    out->model = request_str(dc->model);
    PROTO_SET(out, PROTO_DECISION_MODEL);
    if (dc->deployment[0] == '\0')
        return;
    out->deployment = request_str(dc->deployment);
    out->model_id = request_str(dc->model_id);
    out->has |= PROTO_BIT(PROTO_DECISION_DEPLOYMENT) |
                PROTO_BIT(PROTO_DECISION_MODEL_ID);
}

/* Decision dc as its wire message, its arrays in z; -1 when out of
 * memory. */
static int
wire_decision(msgpack_zone *z, const struct decision *dc,
              struct proto_decision *out)
{
    memset(out, 0, sizeof(*out));
    out->seq = dc->seq;
    out->permit_id = dc->permit_id;
    out->call_id = request_str(dc->call_id);
    if (dc->workflow[0] != '\0') {
        out->workflow_id = request_str(dc->workflow);
        PROTO_SET(out, PROTO_DECISION_WORKFLOW_ID);
    }
    if (dc->tenant[0] != '\0') {
        out->tenant_id = request_str(dc->tenant);
        PROTO_SET(out, PROTO_DECISION_TENANT_ID);
    }
    out->time = dc->time;
    out->tokens_estimate = dc->tokens_estimate;
    out->routed = dc->routed;
    out->all_degraded = dc->all_degraded;
    out->wait_ms = dc->wait_ms;
    wire_model(dc, out);
    if (dc->parked_ms > 0) {
        out->parked_ms = dc->parked_ms;
        PROTO_SET(out, PROTO_DECISION_PARKED_MS);
    }
    wire_outcome(dc, out);
    if (wire_quota(z, dc, out) < 0 || wire_providers(z, dc, out) < 0)
        return -1;
    return 0;
}

/* The held decisions the request names into found[]; *total how many. */
static int
explain_find(const struct decisions *d, const struct proto_explain_req *r,
             const struct decision **found, size_t *n, size_t *total,
             struct proto_error *e)
{
    char call_id[PERMITS_CALL_ID_MAX + 1];
    bool by_permit = PROTO_HAS(r, PROTO_EXPLAIN_REQ_PERMIT_ID);

    if (by_permit == PROTO_HAS(r, PROTO_EXPLAIN_REQ_CALL_ID))
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "give permit_id or call_id, exactly one");
    if (by_permit) {
        *n = decisions_find_permit(d, r->permit_id, found, EXPLAIN_MAX,
                                   total);
        return 0;
    }
    if (r->call_id.len == 0 || r->call_id.len > PERMITS_CALL_ID_MAX ||
        memchr(r->call_id.ptr, '\0', r->call_id.len) != NULL)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "call_id must be 1 "
                               "to %d bytes, without a NUL",
                               PERMITS_CALL_ID_MAX);
    memcpy(call_id, r->call_id.ptr, r->call_id.len);
    call_id[r->call_id.len] = '\0';
    *n = decisions_find_call(d, call_id, found, EXPLAIN_MAX, total);
    return 0;
}

int
explain_op(const struct decisions *d, struct conn *c, struct proto_req *req,
           struct proto_error *e)
{
    struct proto_explain_rep rep = { 0 };
    const struct decision *found[EXPLAIN_MAX];
    struct proto_decision *out;
    size_t n = 0, total = 0, first = 0, bytes = 0;

    if (explain_find(d, &req->u.explain, found, &n, &total, e) < 0)
        return -1;
    /* The newest that fit one frame. */
    for (size_t i = n; i-- > 0;) {
        bytes += wire_size(found[i]);
        if (bytes > EXPLAIN_BUDGET) {
            first = i + 1;
            break;
        }
    }
    out = msgpack_zone_malloc(conn_zone(c), sizeof(*out) * (n ? n : 1));
    if (out == NULL)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    for (size_t i = first; i < n; i++)
        if (wire_decision(conn_zone(c), found[i], &out[i - first]) < 0)
            return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    rep.decisions.v = out;
    rep.decisions.n = (uint32_t)(n - first);
    rep.total = total;
    rep.held = decisions_count(d);
    rep.capacity = decisions_capacity(d);
    conn_reply(c, PROTO_OP_EXPLAIN, req->id, &rep);
    return 0;
}
