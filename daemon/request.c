/* request.c - request ids and subjects, and the quota gate. */
#include <string.h>

#include "log.h"
#include "request.h"
#include "telemetry.h"

struct proto_str
request_str(const char *s)
{
    struct proto_str p = { s, (uint32_t)strlen(s) };

    return p;
}

int
request_id(const struct proto_str *s, const char *field, char *buf,
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

int
request_subjects(const struct proto_str *wf, bool has_wf,
                 const struct proto_str *tn, bool has_tn, struct subjects *s,
                 struct proto_error *e)
{
    s->workflow = s->tenant = NULL;
    if (has_wf) {
        if (request_id(wf, "workflow_id", s->wbuf, e) < 0)
            return -1;
        s->workflow = s->wbuf;
    }
    if (has_tn) {
        if (request_id(tn, "tenant_id", s->tbuf, e) < 0)
            return -1;
        s->tenant = s->tbuf;
    }
    if (s->workflow == NULL && s->tenant == NULL)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "give workflow_id, tenant_id or both");
    return 0;
}

int
request_one_subject(const struct proto_quota_subject_req *r,
                    struct one_subject *o, struct proto_error *e)
{
    if (request_subjects(&r->workflow_id,
                         PROTO_HAS(r, PROTO_QUOTA_SUBJECT_REQ_WORKFLOW_ID),
                         &r->tenant_id,
                         PROTO_HAS(r, PROTO_QUOTA_SUBJECT_REQ_TENANT_ID),
                         &o->s, e) < 0)
        return -1;
    if (o->s.workflow != NULL && o->s.tenant != NULL)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "give workflow_id or tenant_id, not both");
    o->kind = o->s.workflow != NULL ? QUOTA_WORKFLOW : QUOTA_TENANT;
    o->id = o->s.workflow != NULL ? o->s.workflow : o->s.tenant;
    quota_subject(o->subject, sizeof(o->subject), o->kind, o->id);
    return 0;
}

int
request_quota_exceeded(const struct quota_decision *d, struct proto_error *e)
{
    proto_error_set(e, PROTO_E_QUOTA_EXCEEDED, "%s would exceed its quota: "
                    "%lld of %lld tokens used", d->subject,
                    (long long)d->used, (long long)d->limit);
    snprintf(e->subject, sizeof(e->subject), "%s", d->subject);
    e->detail.subject = request_str(e->subject);
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

int
request_quota_gate(struct quota *q, struct telemetry *t, const char *workflow,
                   const char *tenant, int64_t tokens, double now_s,
                   struct quota_decision *d, struct proto_error *e)
{
    if (quota_reserve(q, workflow, tenant, tokens, now_s, d) < 0)
        return proto_error_set(e, PROTO_E_INTERNAL, "quota_reserve failed");
    if (d->over_quota)
        telemetry_quota_exceeded(t, workflow, tenant);
    if (!d->allowed)
        return request_quota_exceeded(d, e);
    telemetry_quota_remaining_is(t, workflow, d->workflow_remaining);
    /* Once: when this reservation took the subject over its limit. */
    if (d->over_quota && d->used - tokens <= d->limit)
        log_warn("%s went over its quota (soft): %lld of %lld tokens used",
                 d->subject, (long long)d->used, (long long)d->limit);
    return 0;
}
