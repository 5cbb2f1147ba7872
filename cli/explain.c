/* explain.c - llmguardctl explain: the daemon's decisions, rendered. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "explain.h"

#define PERMIT_PREFIX "permit:"
#define CALL_PREFIX "call:"

/* s[0..len-1] is a whole number that fits: 1 and *out, else 0. */
static int
number(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long n;

    if (!isdigit((unsigned char)s[0]))
        return 0;
    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return 0;
    *out = n;
    return 1;
}

int
explain_parse(const char *arg, struct explain_query *q)
{
    memset(q, 0, sizeof(*q));
    if (strncmp(arg, PERMIT_PREFIX, strlen(PERMIT_PREFIX)) == 0) {
        q->permit = true;
        if (number(arg + strlen(PERMIT_PREFIX), &q->permit_id))
            return 0;
        fprintf(stderr, "llmguardctl: explain %s: a permit id is a whole "
                "number\n", arg);
        return -1;
    }
    if (strncmp(arg, CALL_PREFIX, strlen(CALL_PREFIX)) == 0) {
        q->call = true;
        q->call_id = arg + strlen(CALL_PREFIX);
    } else {
        q->permit = number(arg, &q->permit_id);
        q->call = true;
        q->call_id = arg;
    }
    if (q->call_id[0] == '\0') {
        fprintf(stderr, "llmguardctl: explain: the call id is empty\n");
        return -1;
    }
    return 0;
}

void
explain_request(const struct explain_query *q, bool permit,
                struct proto_explain_req *req)
{
    memset(req, 0, sizeof(*req));
    if (permit) {
        req->permit_id = q->permit_id;
        PROTO_SET(req, PROTO_EXPLAIN_REQ_PERMIT_ID);
    } else {
        req->call_id.ptr = q->call_id;
        req->call_id.len = (uint32_t)strlen(q->call_id);
        PROTO_SET(req, PROTO_EXPLAIN_REQ_CALL_ID);
    }
}

/* ISO-8601 UTC with milliseconds, into buf. */
static const char *
when(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;
    char day[32];

    gmtime_r(&s, &tm);
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", day, (int)((t - (double)s) * 1e3));
    return buf;
}

static bool
eq(struct proto_str s, const char *word)
{
    return s.len == strlen(word) && memcmp(s.ptr, word, s.len) == 0;
}

/* The words for why a provider was chosen or left, by its wire name. */
static const struct {
    const char *why, *text;
} why_text[] = {
    { "chosen", "chosen" },
    { "excluded", "excluded (already tried by this call)" },
    { "cooldown", "skipped: in its cooldown" },
    { "no_token", "no token (its bucket was empty: moved to another)" },
    { "not_chosen", "not chosen by the policy" },
    { "daily_limit", "at its daily limit (RPD or TPD)" },
};

/* One provider's line. */
static void
provider_text(FILE *fp, const struct proto_decision *dc,
              const struct proto_decision_provider *pv)
{
    const char *text = "?";
    char t[40];

    for (size_t i = 0; i < sizeof(why_text) / sizeof(why_text[0]); i++)
        if (eq(pv->why, why_text[i].why))
            text = why_text[i].text;
    if (eq(pv->why, "no_token") && eq(dc->outcome, "refused"))
        text = "no token (its bucket was empty)";
    fprintf(fp, "  provider  %.*s: %s", (int)pv->name.len, pv->name.ptr,
            text);
    if (eq(pv->why, "chosen") && dc->all_degraded)
        fprintf(fp, " (every provider degraded: its cooldown ends first)");
    if (PROTO_HAS(pv, PROTO_DECISION_PROVIDER_COOLDOWN_UNTIL)) {
        fprintf(fp, "%s until %s, cause %.*s",
                eq(pv->why, "cooldown") ? "" : "; in its cooldown",
                when(pv->cooldown_until, t, sizeof(t)),
                (int)pv->cooldown_cause.len, pv->cooldown_cause.ptr);
        if (PROTO_HAS(pv, PROTO_DECISION_PROVIDER_RETRY_AFTER_S))
            fprintf(fp, ", Retry-After %g s", pv->retry_after_s);
    }
    fputc('\n', fp);
}

/* The quota, provider and wait lines of one decision. */
static void
route_text(FILE *fp, const struct proto_decision *dc)
{
    const struct proto_decision_quota *q = dc->quota.v;
    const struct proto_decision_provider *pv = dc->providers.v;

    if (dc->quota.n == 0)
        fprintf(fp, "  quota     none checked (no workflow or tenant, or "
                "rate limiting off)\n");
    for (uint32_t i = 0; i < dc->quota.n; i++) {
        fprintf(fp, "  quota     %.*s: %llu of %llu tokens used",
                (int)q[i].subject.len, q[i].subject.ptr,
                (unsigned long long)q[i].tokens_used,
                (unsigned long long)q[i].tokens_limit);
        if (eq(q[i].verdict, "refused"))
            fprintf(fp, ", %llu more asked", (unsigned long long)
                    dc->tokens_estimate);
        fprintf(fp, ": %.*s%s\n", (int)q[i].verdict.len, q[i].verdict.ptr,
                eq(q[i].verdict, "over") ? " (soft: allowed)" :
                eq(q[i].verdict, "refused") ? " (hard quota)" : "");
    }
    if (PROTO_HAS(dc, PROTO_DECISION_MODEL)) {
        fprintf(fp, "  model     %.*s", (int)dc->model.len, dc->model.ptr);
        if (PROTO_HAS(dc, PROTO_DECISION_DEPLOYMENT))
            fprintf(fp, ": deployment %.*s, model id %.*s",
                    (int)dc->deployment.len, dc->deployment.ptr,
                    (int)dc->model_id.len, dc->model_id.ptr);
        fputc('\n', fp);
    }
    if (!dc->routed)
        fprintf(fp, "  provider  none considered: refused before routing\n");
    for (uint32_t i = 0; i < dc->providers.n; i++)
        provider_text(fp, dc, &pv[i]);
    fprintf(fp, "  wait      %.1f ms", dc->wait_ms);
    if (PROTO_HAS(dc, PROTO_DECISION_PARKED_MS))
        fprintf(fp, " (%.1f ms parked: every provider in its cooldown)",
                dc->parked_ms);
    fprintf(fp, "\n");
}

/* The outcome line of one decision. */
static void
outcome_text(FILE *fp, const struct proto_decision *dc)
{
    fprintf(fp, "  outcome   %.*s", (int)dc->outcome.len, dc->outcome.ptr);
    if (PROTO_HAS(dc, PROTO_DECISION_ERROR_CODE))
        fprintf(fp, ": %.*s: %.*s", (int)dc->error_code.len,
                dc->error_code.ptr, (int)dc->error_msg.len,
                dc->error_msg.ptr);
    if (eq(dc->outcome, "pending"))
        fprintf(fp, " (not reported yet)");
    if (eq(dc->outcome, "unreported"))
        fprintf(fp, " (its connection closed before a report)");
    if (PROTO_HAS(dc, PROTO_DECISION_RETRY_AFTER_S))
        fprintf(fp, ", Retry-After %g s", dc->retry_after_s);
    if (PROTO_HAS(dc, PROTO_DECISION_TOKENS_USED))
        fprintf(fp, ", %llu tokens used",
                (unsigned long long)dc->tokens_used);
    if (PROTO_HAS(dc, PROTO_DECISION_LATENCY_MS))
        fprintf(fp, ", %.1f ms", dc->latency_ms);
    fputc('\n', fp);
}

void
explain_text(FILE *fp, const struct proto_explain_rep *r, const char *what)
{
    const struct proto_decision *v = r->decisions.v;
    char t[40];

    fprintf(fp, "%s: %llu decision(s)", what, (unsigned long long)r->total);
    if (r->total > r->decisions.n)
        fprintf(fp, ", the newest %u shown", r->decisions.n);
    fputc('\n', fp);
    for (uint32_t i = 0; i < r->decisions.n; i++) {
        const struct proto_decision *dc = &v[i];
        if (dc->permit_id != 0)
            fprintf(fp, "attempt %u: permit %llu", i + 1,
                    (unsigned long long)dc->permit_id);
        else
            fprintf(fp, "attempt %u: refused, no permit", i + 1);
        fprintf(fp, " at %s (decision %llu)\n", when(dc->time, t, sizeof(t)),
                (unsigned long long)dc->seq);
        fprintf(fp, "  call      %.*s, workflow %.*s, tenant %.*s, "
                "estimate %llu tokens\n",
                dc->call_id.len ? (int)dc->call_id.len : 1,
                dc->call_id.len ? dc->call_id.ptr : "-",
                dc->workflow_id.len ? (int)dc->workflow_id.len : 1,
                dc->workflow_id.len ? dc->workflow_id.ptr : "-",
                dc->tenant_id.len ? (int)dc->tenant_id.len : 1,
                dc->tenant_id.len ? dc->tenant_id.ptr : "-",
                (unsigned long long)dc->tokens_estimate);
        route_text(fp, dc);
        outcome_text(fp, dc);
    }
}

static json_t *
jstr(struct proto_str s)
{
    return json_stringn(s.ptr, s.len);
}

/* An optional string: its value, or null. */
static json_t *
jopt(bool has, struct proto_str s)
{
    return has ? jstr(s) : json_null();
}

/* The quota and providers of one decision into o. */
static void
route_json(json_t *o, const struct proto_decision *dc)
{
    const struct proto_decision_quota *q = dc->quota.v;
    const struct proto_decision_provider *pv = dc->providers.v;
    json_t *quota = json_array(), *provs = json_array();

    for (uint32_t i = 0; i < dc->quota.n; i++)
        json_array_append_new(quota, json_pack(
            "{s:o, s:I, s:I, s:o}", "subject", jstr(q[i].subject),
            "tokens_used", (json_int_t)q[i].tokens_used,
            "tokens_limit", (json_int_t)q[i].tokens_limit,
            "verdict", jstr(q[i].verdict)));
    for (uint32_t i = 0; i < dc->providers.n; i++) {
        json_t *p = json_pack("{s:o, s:o}", "name", jstr(pv[i].name), "why",
                              jstr(pv[i].why));
        if (PROTO_HAS(&pv[i], PROTO_DECISION_PROVIDER_COOLDOWN_UNTIL)) {
            json_object_set_new(p, "cooldown_until",
                                json_real(pv[i].cooldown_until));
            json_object_set_new(p, "cooldown_cause",
                                jstr(pv[i].cooldown_cause));
        }
        if (PROTO_HAS(&pv[i], PROTO_DECISION_PROVIDER_RETRY_AFTER_S))
            json_object_set_new(p, "retry_after_s",
                                json_real(pv[i].retry_after_s));
        json_array_append_new(provs, p);
    }
    json_object_set_new(o, "quota", quota);
    if (PROTO_HAS(dc, PROTO_DECISION_MODEL))
        json_object_set_new(o, "model", jstr(dc->model));
    if (PROTO_HAS(dc, PROTO_DECISION_DEPLOYMENT)) {
        json_object_set_new(o, "deployment", jstr(dc->deployment));
        json_object_set_new(o, "model_id", jstr(dc->model_id));
    }
    json_object_set_new(o, "routed", json_boolean(dc->routed));
    json_object_set_new(o, "providers", provs);
}

/* The outcome of one decision into o. */
static void
outcome_json(json_t *o, const struct proto_decision *dc)
{
    json_object_set_new(o, "outcome", jstr(dc->outcome));
    if (PROTO_HAS(dc, PROTO_DECISION_TOKENS_USED))
        json_object_set_new(o, "tokens_used",
                            json_integer((json_int_t)dc->tokens_used));
    if (PROTO_HAS(dc, PROTO_DECISION_LATENCY_MS))
        json_object_set_new(o, "latency_ms", json_real(dc->latency_ms));
    if (PROTO_HAS(dc, PROTO_DECISION_RETRY_AFTER_S))
        json_object_set_new(o, "retry_after_s", json_real(dc->retry_after_s));
    if (PROTO_HAS(dc, PROTO_DECISION_ERROR_CODE))
        json_object_set_new(o, "error", json_pack(
            "{s:o, s:o}", "code", jstr(dc->error_code), "msg",
            jstr(dc->error_msg)));
}

json_t *
explain_json(const struct proto_explain_rep *r)
{
    const struct proto_decision *v = r->decisions.v;
    json_t *list = json_array();

    for (uint32_t i = 0; i < r->decisions.n; i++) {
        const struct proto_decision *dc = &v[i];
        json_t *o = json_pack(
            "{s:I, s:I, s:o, s:o, s:o, s:f, s:I, s:b, s:f}",
            "seq", (json_int_t)dc->seq,
            "permit_id", (json_int_t)dc->permit_id,
            "call_id", jstr(dc->call_id),
            "workflow_id", jopt(PROTO_HAS(dc, PROTO_DECISION_WORKFLOW_ID),
                                dc->workflow_id),
            "tenant_id", jopt(PROTO_HAS(dc, PROTO_DECISION_TENANT_ID),
                              dc->tenant_id),
            "time", dc->time,
            "tokens_estimate", (json_int_t)dc->tokens_estimate,
            "all_degraded", dc->all_degraded,
            "wait_ms", dc->wait_ms);
        if (PROTO_HAS(dc, PROTO_DECISION_PARKED_MS))
            json_object_set_new(o, "parked_ms", json_real(dc->parked_ms));
        route_json(o, dc);
        outcome_json(o, dc);
        json_array_append_new(list, o);
    }
    return json_pack("{s:o, s:I, s:I, s:I}", "decisions", list,
                     "total", (json_int_t)r->total,
                     "held", (json_int_t)r->held,
                     "capacity", (json_int_t)r->capacity);
}
