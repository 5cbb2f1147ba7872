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

/*
 * The first bad character of p (len bytes): NULL when it is all valid UTF-8
 * (shortest forms, no surrogates, at most U+10FFFF) and holds no control
 * character (C0, DEL, C1); else "a NUL byte", "a control character" or
 * "invalid UTF-8", with its offset in *at.
 */
static const char *
text_problem(const unsigned char *p, size_t len, size_t *at)
{
    size_t i = 0;

    while (i < len) {
        uint32_t cp = p[i];
        size_t n = cp < 0x80 ? 1 : cp >= 0xc2 && cp <= 0xdf ? 2 :
                   cp >= 0xe0 && cp <= 0xef ? 3 :
                   cp >= 0xf0 && cp <= 0xf4 ? 4 : 0;

        *at = i;
        if (n == 0 || i + n > len)
            return "invalid UTF-8";
        cp = n == 1 ? cp : cp & (0x7fu >> n);
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return "invalid UTF-8";
            cp = cp << 6 | (p[i + k] & 0x3fu);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return "invalid UTF-8";
        if (cp == 0)
            return "a NUL byte";
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return "a control character";
        i += n;
    }
    return NULL;
}

int
request_text(const struct proto_str *s, const char *field,
             struct proto_error *e)
{
    size_t at;
    const char *why = text_problem((const unsigned char *)s->ptr, s->len,
                                   &at);

    if (why == NULL)
        return 0;
    if (why[0] == 'i')
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "%s is not valid "
                               "UTF-8 (at byte %zu)", field, at);
    return proto_error_set(e, PROTO_E_BAD_REQUEST, "%s holds %s (at byte "
                           "%zu)", field, why, at);
}

int
request_id(const struct proto_str *s, const char *field, char *buf,
           struct proto_error *e)
{
    if (s->len == 0 || s->len > QUOTA_ID_MAX)
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "%s must be 1 to %d "
                               "bytes, not %u", field, QUOTA_ID_MAX, s->len);
    if (request_text(s, field, e) < 0)
        return -1;
    memcpy(buf, s->ptr, s->len);
    buf[s->len] = '\0';
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
    return request_quota_decided(t, workflow, tenant, tokens, d, e);
}

int
request_quota_decided(struct telemetry *t, const char *workflow,
                      const char *tenant, int64_t tokens,
                      const struct quota_decision *d, struct proto_error *e)
{
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
