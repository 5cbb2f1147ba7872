/* telemetry.c - metrics hooks and the paged metrics op. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "quota.h"
#include "server.h"
#include "telemetry.h"
#include "trace.h"

/* A metrics reply page stays well under PROTO_MAX_FRAME. */
#define PAGE_BUDGET_BYTES 48000

struct telemetry {
    struct event_base *base;
    const struct config *cfg;
    telemetry_refresh_fn refresh;   /* sets the gauges that are read */
    void *refresh_arg;
    struct metrics *metrics;
    struct trace_exporter *tracer;  /* OTLP, when an endpoint is set */
    uint64_t spans_dropped_seen;
};

struct telemetry *
telemetry_new(struct event_base *base, const struct config *cfg)
{
    struct telemetry *t = calloc(1, sizeof(*t));

    if (t == NULL ||
        (t->metrics = metrics_new((size_t)cfg->metrics_max_series)) == NULL)
        fatalx(1, "cannot create the metrics registry");
    t->base = base;
    t->cfg = cfg;
    return t;
}

void
telemetry_on_refresh(struct telemetry *t, telemetry_refresh_fn fn, void *arg)
{
    t->refresh = fn;
    t->refresh_arg = arg;
}

void
telemetry_provider(struct telemetry *t, const char *provider,
                   double available, double available_llm, bool degraded)
{
    const char *labels[] = { provider };

    metrics_set(t->metrics, METRIC_PROVIDER_AVAILABLE_TOKENS, labels,
                available);
    metrics_set(t->metrics, METRIC_PROVIDER_DEGRADED, labels, degraded);
    if (!isnan(available_llm))
        metrics_set(t->metrics, METRIC_PROVIDER_AVAILABLE_LLM_TOKENS, labels,
                    available_llm);
}

void
telemetry_daily(struct telemetry *t, const char *limit, const char *unit,
                int64_t remaining)
{
    const char *labels[] = { limit, unit };

    metrics_set(t->metrics, METRIC_DAILY_LIMIT_REMAINING, labels,
                (double)remaining);
}

void
telemetry_provider_limit(struct telemetry *t, const char *provider,
                         const char *limit, const char *source,
                         double per_min)
{
    const char *labels[] = { provider, limit, source };

    metrics_set(t->metrics, METRIC_PROVIDER_LIMIT, labels, per_min);
}

void
telemetry_headers_malformed(struct telemetry *t, const char *provider,
                            unsigned n)
{
    const char *labels[] = { provider };

    metrics_inc(t->metrics, METRIC_PROVIDER_HEADERS_MALFORMED_TOTAL, labels,
                n);
}

void
telemetry_redis(struct telemetry *t, bool up, uint64_t new_errors)
{
    metrics_set(t->metrics, METRIC_REDIS_UP, NULL, up);
    metrics_inc(t->metrics, METRIC_REDIS_ERRORS_TOTAL, NULL,
                (double)new_errors);
}

void
telemetry_fallback_grants(struct telemetry *t, const char *provider,
                          double new_grants)
{
    const char *labels[] = { provider };

    metrics_inc(t->metrics, METRIC_FALLBACK_GRANTS_TOTAL, labels,
                new_grants);
}

void
telemetry_start_tracing(struct telemetry *t)
{
    const struct config *cfg = t->cfg;
    struct trace_options opt;
    char url[CONFIG_STR_MAX + 16];

    if (cfg->otlp_traces_endpoint[0] != '\0') {
        snprintf(url, sizeof(url), "%s", cfg->otlp_traces_endpoint);
    } else if (cfg->otlp_endpoint[0] != '\0') {
        /* The base URL, without its trailing slashes, + /v1/traces. */
        int n = (int)strlen(cfg->otlp_endpoint);
        while (n > 0 && cfg->otlp_endpoint[n - 1] == '/')
            n--;
        snprintf(url, sizeof(url), "%.*s/v1/traces", n, cfg->otlp_endpoint);
    } else {
        return;
    }
    trace_options_init(&opt);
    opt.service_version = PACKAGE_VERSION;
    t->tracer = trace_exporter_new(t->base, url, cfg->service_name, &opt);
    if (t->tracer == NULL)
        fatalx(CONFIG_EXIT, "cannot export traces to %s", url);
    log_info("exporting spans to %s as service %s", url, cfg->service_name);
}

void
telemetry_free(struct telemetry *t)
{
    if (t == NULL)
        return;
    if (t->tracer != NULL)
        trace_exporter_free(t->tracer);
    metrics_free(t->metrics);
    free(t);
}

bool
telemetry_tracing(const struct telemetry *t)
{
    return t->tracer != NULL;
}

void
telemetry_span(struct telemetry *t, const struct trace_span *sp)
{
    if (t->tracer != NULL)
        trace_exporter_submit(t->tracer, sp);
}

void
telemetry_request(struct telemetry *t, const char *provider,
                  const char *workflow, const char *outcome,
                  double latency_ms)
{
    telemetry_model_request(t, provider, "", workflow, outcome, latency_ms);
}

void
telemetry_model_request(struct telemetry *t, const char *provider,
                        const char *model, const char *workflow,
                        const char *outcome, double latency_ms)
{
    const char *labels[] = { provider, workflow ? workflow : "", outcome,
                             model };

    metrics_inc(t->metrics, METRIC_REQUESTS_TOTAL, labels, 1);
    if (latency_ms >= 0)
        metrics_observe(t->metrics, METRIC_REQUEST_LATENCY_MS, labels,
                        latency_ms);
}

void
telemetry_rate_limited(struct telemetry *t, const char *provider)
{
    telemetry_model_rate_limited(t, provider, "");
}

void
telemetry_model_rate_limited(struct telemetry *t, const char *provider,
                             const char *model)
{
    const char *labels[] = { provider, model };

    metrics_inc(t->metrics, METRIC_RATE_LIMITED_TOTAL, labels, 1);
}

void
telemetry_llm_tokens(struct telemetry *t, const char *provider,
                     uint64_t tokens)
{
    const char *labels[] = { provider };

    metrics_inc(t->metrics, METRIC_LLM_TOKENS_TOTAL, labels, (double)tokens);
}

void
telemetry_failover(struct telemetry *t, const char *from, const char *to)
{
    const char *labels[] = { from, to };

    metrics_inc(t->metrics, METRIC_FAILOVERS_TOTAL, labels, 1);
}

void
telemetry_quota_exceeded(struct telemetry *t, const char *workflow,
                         const char *tenant)
{
    const char *labels[] = { workflow ? workflow : "", tenant ? tenant : "" };

    metrics_inc(t->metrics, METRIC_QUOTA_EXCEEDED_TOTAL, labels, 1);
}

void
telemetry_quota_remaining(struct telemetry *t, struct quota *q,
                          const char *workflow)
{
    struct quota_status st;
    const char *labels[] = { workflow };

    if (workflow == NULL || quota_status(q, QUOTA_WORKFLOW, workflow,
                                         clock_wall(), &st) < 0)
        return;
    metrics_set(t->metrics, METRIC_WORKFLOW_QUOTA_REMAINING_TOKENS, labels,
                (double)st.tokens_remaining);
}

void
telemetry_quota_remaining_is(struct telemetry *t, const char *workflow,
                             int64_t remaining)
{
    const char *labels[] = { workflow };

    if (workflow != NULL)
        metrics_set(t->metrics, METRIC_WORKFLOW_QUOTA_REMAINING_TOKENS,
                    labels, (double)remaining);
}

void
telemetry_store_error(struct telemetry *t)
{
    metrics_inc(t->metrics, METRIC_STORE_WRITE_ERRORS_TOTAL, NULL, 1);
}

/* What is read, not pushed: the exporter's drop count, and the gauges of
 * the refresh hook. */
static void
refresh(struct telemetry *t)
{
    struct trace_stats ts;

    if (t->tracer != NULL) {
        trace_exporter_stats(t->tracer, &ts);
        if (ts.dropped > t->spans_dropped_seen)
            metrics_inc(t->metrics, METRIC_TRACE_SPANS_DROPPED_TOTAL, NULL,
                        (double)(ts.dropped - t->spans_dropped_seen));
        t->spans_dropped_seen = ts.dropped;
    }
    if (t->refresh != NULL)
        t->refresh(t, t->refresh_arg);
}

int
telemetry_prometheus(struct telemetry *t, char **text, size_t *len)
{
    FILE *fp;
    int rc;

    refresh(t);
    *text = NULL;
    if ((fp = open_memstream(text, len)) == NULL)
        return -1;
    rc = metrics_write_prometheus(t->metrics, fp);
    if (fclose(fp) != 0 || rc < 0) {
        free(*text);
        *text = NULL;
        return -1;
    }
    return 0;
}

/* ---- the structured metrics op, a page at a time ------------------------ */

struct page {
    msgpack_zone *zone;
    uint64_t skip;                  /* series before the cursor */
    uint64_t index;                 /* series seen so far */
    size_t bytes;                   /* estimated encoded size */
    bool full;
    struct proto_metric_family fam[METRIC__COUNT];
    uint32_t nfam;
    uint32_t cap[METRIC__COUNT];    /* series slots allocated per family */
};

static struct proto_str
zstr(const char *s)
{
    struct proto_str p = { s, (uint32_t)strlen(s) };

    return p;
}

static int
page_family(void *arg, const struct metrics_family_info *fi)
{
    struct page *pg = arg;
    struct proto_metric_family *f = &pg->fam[pg->nfam++];
    struct proto_str *names;

    memset(f, 0, sizeof(*f));
    f->name = zstr(fi->name);
    f->type = zstr(metrics_type_name(fi->type));
    f->help = zstr(fi->help);
    names = msgpack_zone_malloc(pg->zone, sizeof(*names) * METRICS_MAX_LABELS);
    if (names == NULL)
        return -1;
    for (size_t i = 0; i < fi->n_labels; i++)
        names[i] = zstr(fi->label_names[i]);
    f->label_names.v = names;
    f->label_names.n = (uint32_t)fi->n_labels;
    if (fi->type == METRIC_HISTOGRAM) {
        f->bounds.v = (double *)(uintptr_t)fi->bucket_bounds;
        f->bounds.n = (uint32_t)fi->n_buckets;
        PROTO_SET(f, PROTO_METRIC_FAMILY_BOUNDS);
    }
    pg->bytes += strlen(fi->name) + strlen(fi->help) + 64;
    return 0;
}

static int
page_series(void *arg, const struct metrics_family_info *fi,
            const struct metrics_series_info *si)
{
    struct page *pg = arg;
    struct proto_metric_family *f = &pg->fam[pg->nfam - 1];
    struct proto_metric_series *s;
    size_t need = 24;

    if (pg->index++ < pg->skip)
        return 0;
    for (size_t i = 0; i < fi->n_labels; i++)
        need += strlen(si->label_values[i]) + 6;
    if (fi->type == METRIC_HISTOGRAM)
        need += 9 * fi->n_buckets + 32;
    if (pg->bytes + need > PAGE_BUDGET_BYTES && pg->index - 1 > pg->skip) {
        pg->full = true;
        return 1;       /* stop: the rest goes on the next page */
    }
    pg->bytes += need;
    if (f->series.n == pg->cap[pg->nfam - 1]) {
        uint32_t cap = pg->cap[pg->nfam - 1] ? 2 * pg->cap[pg->nfam - 1] : 16;
        void *nv = msgpack_zone_malloc(pg->zone, sizeof(*s) * cap);
        if (nv == NULL)
            return -1;
        if (f->series.n)
            memcpy(nv, f->series.v, sizeof(*s) * f->series.n);
        f->series.v = nv;
        pg->cap[pg->nfam - 1] = cap;
    }
    s = (struct proto_metric_series *)f->series.v + f->series.n++;
    memset(s, 0, sizeof(*s));
    s->labels.v = msgpack_zone_malloc(pg->zone, sizeof(struct proto_str) *
                                      METRICS_MAX_LABELS);
    if (s->labels.v == NULL)
        return -1;
    for (size_t i = 0; i < fi->n_labels; i++)
        s->labels.v[i] = zstr(si->label_values[i]);
    s->labels.n = (uint32_t)fi->n_labels;
    if (fi->type == METRIC_HISTOGRAM) {
        double *b = msgpack_zone_malloc(pg->zone, sizeof(*b) * fi->n_buckets);
        if (b == NULL)
            return -1;
        for (size_t i = 0; i < fi->n_buckets; i++)
            b[i] = (double)si->bucket_counts[i];
        s->count = si->count;
        s->sum = si->sum;
        s->buckets.v = b;
        s->buckets.n = (uint32_t)fi->n_buckets;
        s->has = PROTO_BIT(PROTO_METRIC_SERIES_COUNT) |
                 PROTO_BIT(PROTO_METRIC_SERIES_SUM) |
                 PROTO_BIT(PROTO_METRIC_SERIES_BUCKETS);
    } else {
        s->value = si->value;
        s->has = PROTO_BIT(PROTO_METRIC_SERIES_VALUE);
    }
    return 0;
}

int
telemetry_op_metrics(struct telemetry *t, struct conn *c,
                     struct proto_req *req, struct proto_error *e)
{
    const struct proto_metrics_req *r = &req->u.metrics;
    struct proto_metrics_rep rep = { 0 };
    uint64_t cursor = PROTO_HAS(r, PROTO_METRICS_REQ_CURSOR) ? r->cursor : 0;
    static const char prom[] = "prometheus", structured[] = "structured";
    bool has_format = PROTO_HAS(r, PROTO_METRICS_REQ_FORMAT);

    if (has_format && !(r->format.len == sizeof(prom) - 1 &&
                        memcmp(r->format.ptr, prom, r->format.len) == 0) &&
        !(r->format.len == sizeof(structured) - 1 &&
          memcmp(r->format.ptr, structured, r->format.len) == 0))
        return proto_error_set(e, PROTO_E_BAD_REQUEST, "format: expected "
                               "structured or prometheus");
    if (has_format && r->format.ptr[0] == 'p') {
        /* Text pages end at a line boundary. */
        char *text;
        size_t len, end;
        if (telemetry_prometheus(t, &text, &len) < 0)
            return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
        if (cursor > len)
            cursor = len;
        end = cursor + PAGE_BUDGET_BYTES < len ? cursor + PAGE_BUDGET_BYTES
                                               : len;
        while (end < len && end > cursor && text[end - 1] != '\n')
            end--;
        rep.text.ptr = msgpack_zone_malloc(conn_zone(c), end - cursor + 1);
        if (rep.text.ptr == NULL) {
            free(text);
            return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
        }
        memcpy((char *)(uintptr_t)rep.text.ptr, text + cursor, end - cursor);
        rep.text.len = (uint32_t)(end - cursor);
        PROTO_SET(&rep, PROTO_METRICS_REP_TEXT);
        if (end < len) {
            rep.next_cursor = end;
            PROTO_SET(&rep, PROTO_METRICS_REP_NEXT_CURSOR);
        }
        free(text);
    } else {
        struct page *pg = msgpack_zone_malloc(conn_zone(c), sizeof(*pg));
        struct metrics_visitor v = { page_family, page_series, pg };
        if (pg == NULL)
            return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
        memset(pg, 0, sizeof(*pg));
        pg->zone = conn_zone(c);
        pg->skip = cursor;
        refresh(t);
        if (metrics_foreach(t->metrics, &v) < 0)
            return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
        rep.families.v = pg->fam;
        rep.families.n = pg->nfam;
        PROTO_SET(&rep, PROTO_METRICS_REP_FAMILIES);
        if (pg->full) {
            rep.next_cursor = pg->index - 1;
            PROTO_SET(&rep, PROTO_METRICS_REP_NEXT_CURSOR);
        }
    }
    conn_reply(c, PROTO_OP_METRICS, req->id, &rep);
    return 0;
}
