/*
 * test_metrics.c — unit tests of the metrics registry (daemon/metrics.c).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

#define L(...) ((const char *[]){ __VA_ARGS__ })
#define FFFD "\xef\xbf\xbd"          /* U+FFFD in UTF-8 */

/* What find_series() looks for and what it found. */
struct lookup {
    enum metric_id                    id;
    const char *const                *labels;
    struct metrics_series_info        si;
    int                               found;
};

static int
lookup_series(void *arg, const struct metrics_family_info *fi,
    const struct metrics_series_info *si)
{
    struct lookup *lk = arg;
    size_t i;

    if (fi->id != lk->id)
        return 0;
    for (i = 0; i < fi->n_labels; i++)
        if (strcmp(si->label_values[i], lk->labels[i]) != 0)
            return 0;
    lk->si = *si;
    lk->found++;
    return 0;
}

/* The series of id with exactly these label values; fails if absent. */
static struct metrics_series_info
find_series(struct metrics *m, enum metric_id id, const char *const *labels)
{
    struct lookup lk = { id, labels, { 0 }, 0 };
    const struct metrics_visitor v = { NULL, lookup_series, &lk };

    assert_int_equal(metrics_foreach(m, &v), 0);
    assert_int_equal(lk.found, 1);
    return lk.si;
}

/* Whether the series of id with these label values exists. */
static int
has_series(struct metrics *m, enum metric_id id, const char *const *labels)
{
    struct lookup lk = { id, labels, { 0 }, 0 };
    const struct metrics_visitor v = { NULL, lookup_series, &lk };

    metrics_foreach(m, &v);
    return lk.found;
}

static double
value_of(struct metrics *m, enum metric_id id, const char *const *labels)
{
    return find_series(m, id, labels).value;
}

struct count {
    enum metric_id id;
    size_t         n;
    double         total;
};

static int
count_series(void *arg, const struct metrics_family_info *fi,
    const struct metrics_series_info *si)
{
    struct count *c = arg;

    if (fi->id == c->id) {
        c->n++;
        c->total += si->value;
    }
    return 0;
}

/* Number of series of id; *total gets the sum of their values. */
static size_t
n_series(struct metrics *m, enum metric_id id, double *total)
{
    struct count c = { id, 0, 0 };
    const struct metrics_visitor v = { NULL, count_series, &c };

    metrics_foreach(m, &v);
    if (total != NULL)
        *total = c.total;
    return c.n;
}

/* The Prometheus rendering of m, malloc'd. */
static char *
render(struct metrics *m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    assert_int_equal(metrics_write_prometheus(m, f), 0);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void
test_new_rejects_zero_cap(void **state)
{
    (void)state;
    assert_null(metrics_new(0));
}

static void
test_counter_exact(void **state)
{
    struct metrics *m = metrics_new(METRICS_DEFAULT_MAX_SERIES);
    int i;

    (void)state;
    for (i = 0; i < 1000; i++)
        assert_int_equal(metrics_inc(m, METRIC_REQUESTS_TOTAL,
            L("groq", "wf1", "ok", ""), 1), 0);
    assert_int_equal(metrics_inc(m, METRIC_REQUESTS_TOTAL,
        L("groq", "wf1", "ok", ""), 2.5), 0);
    assert_int_equal(metrics_inc(m, METRIC_REQUESTS_TOTAL,
        L("openai", "wf1", "ok", ""), 1), 0);
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL,
        L("groq", ""), 1), 0);
    assert_int_equal(metrics_inc(m, METRIC_STORE_WRITE_ERRORS_TOTAL,
        NULL, 3), 0);

    /* invalid increments change nothing */
    assert_int_equal(metrics_inc(m, METRIC_REQUESTS_TOTAL,
        L("groq", "wf1", "ok", ""), -1), -1);
    assert_int_equal(metrics_inc(m, METRIC_REQUESTS_TOTAL,
        L("groq", "wf1", "ok", ""), NAN), -1);
    assert_int_equal(metrics_inc(m, METRIC_REQUESTS_TOTAL,
        L("groq", "wf1", "ok", ""), INFINITY), -1);
    assert_int_equal(metrics_inc(m, METRIC_REQUESTS_TOTAL,
        L("never", "seen", "ok", ""), -1), -1);

    assert_true(value_of(m, METRIC_REQUESTS_TOTAL,
        L("groq", "wf1", "ok", "")) == 1002.5);
    assert_true(value_of(m, METRIC_REQUESTS_TOTAL,
        L("openai", "wf1", "ok", "")) == 1);
    assert_true(value_of(m, METRIC_RATE_LIMITED_TOTAL, L("groq", "")) == 1);
    assert_true(value_of(m, METRIC_STORE_WRITE_ERRORS_TOTAL, NULL) == 3);
    assert_true(value_of(m, METRIC_TRACE_SPANS_DROPPED_TOTAL, NULL) == 0);
    assert_int_equal(n_series(m, METRIC_REQUESTS_TOTAL, NULL), 2);
    assert_false(has_series(m, METRIC_REQUESTS_TOTAL,
        L("never", "seen", "ok", "")));
    metrics_free(m);
}

static void
test_gauge_set(void **state)
{
    struct metrics *m = metrics_new(METRICS_DEFAULT_MAX_SERIES);

    (void)state;
    assert_int_equal(metrics_set(m, METRIC_PROVIDER_AVAILABLE_TOKENS,
        L("groq"), 10), 0);
    assert_int_equal(metrics_set(m, METRIC_PROVIDER_AVAILABLE_TOKENS,
        L("groq"), 3.5), 0);
    assert_int_equal(metrics_set(m, METRIC_PROVIDER_AVAILABLE_TOKENS,
        L("groq"), NAN), -1);
    assert_int_equal(metrics_set(m, METRIC_WORKFLOW_QUOTA_REMAINING_TOKENS,
        L("wf1"), -2), 0);
    assert_true(value_of(m, METRIC_PROVIDER_AVAILABLE_TOKENS, L("groq")) ==
        3.5);
    assert_true(value_of(m, METRIC_WORKFLOW_QUOTA_REMAINING_TOKENS,
        L("wf1")) == -2);
    metrics_free(m);
}

static void
test_histogram(void **state)
{
    struct metrics *m = metrics_new(METRICS_DEFAULT_MAX_SERIES);
    const struct metrics_family_info *fi =
        metrics_family(METRIC_REQUEST_LATENCY_MS);
    static const double obs[] = { 3, 5, 7.5, 250, 60000, 70000 };
    /* le:                5  10 25 50 100 250 500 1k 2.5k 5k 10k 30k 60k */
    static const uint64_t want[] = { 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5 };
    struct metrics_series_info si;
    size_t i;

    (void)state;
    assert_int_equal(fi->n_buckets, sizeof(want) / sizeof(want[0]));
    assert_true(fi->bucket_bounds[0] == 5);
    assert_true(fi->bucket_bounds[fi->n_buckets - 1] == 60000);
    for (i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        assert_int_equal(metrics_observe(m, METRIC_REQUEST_LATENCY_MS,
            L("groq"), obs[i]), 0);
    assert_int_equal(metrics_observe(m, METRIC_REQUEST_LATENCY_MS,
        L("groq"), INFINITY), -1);

    si = find_series(m, METRIC_REQUEST_LATENCY_MS, L("groq"));
    assert_int_equal(si.count, 6);
    assert_true(si.sum == 130265.5);
    for (i = 0; i < fi->n_buckets; i++)
        assert_int_equal(si.bucket_counts[i], want[i]);
    metrics_free(m);
}

static void
test_label_escaping(void **state)
{
    struct metrics *m = metrics_new(METRICS_DEFAULT_MAX_SERIES);
    char *out;

    (void)state;
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL,
        L("a\"b\\c\nd\te", ""), 1), 0);
    /* invalid UTF-8 (a lone 0xff, a surrogate, a truncated sequence)
     * becomes U+FFFD per byte; valid multibyte text is kept */
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL,
        L("x\xffy\xed\xa0\x80z\xc3", ""), 1), 0);
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL,
        L("caf\xc3\xa9 \xf0\x9f\x98\x80", ""), 1), 0);
    /* NULL is the empty string */
    assert_int_equal(metrics_inc(m, METRIC_QUOTA_EXCEEDED_TOTAL,
        L("wf", NULL), 1), 0);

    out = render(m);
    assert_non_null(strstr(out,
        "llm_rate_limited_total{provider=\"a\\\"b\\\\c\\nd\te\","
        "model=\"\"} 1\n"));
    assert_non_null(strstr(out, "llm_rate_limited_total{provider=\"x"
        FFFD "y" FFFD FFFD FFFD "z" FFFD "\",model=\"\"} 1\n"));
    assert_non_null(strstr(out, "llm_rate_limited_total{provider=\"caf"
        "\xc3\xa9 \xf0\x9f\x98\x80\",model=\"\"} 1\n"));
    assert_non_null(strstr(out,
        "llm_quota_exceeded_total{workflow_id=\"wf\",tenant_id=\"\"} 1\n"));
    free(out);
    metrics_free(m);
}

static void
test_cap_small(void **state)
{
    struct metrics *m = metrics_new(3);
    double total;

    (void)state;
    /* a user's own "__other__" is the overflow series: no slot taken */
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL,
        L(METRICS_OTHER, METRICS_OTHER), 1), 0);
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL, L("a", ""),
        1), 0);
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL, L("b", ""),
        1), 0);
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL, L("c", ""),
        1), 0);
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL, L("d", ""),
        1), 0);
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL, L("e", ""),
        1), 0);
    assert_int_equal(metrics_inc(m, METRIC_RATE_LIMITED_TOTAL, L("a", ""),
        1), 0);

    assert_true(value_of(m, METRIC_RATE_LIMITED_TOTAL, L("a", "")) == 2);
    assert_true(value_of(m, METRIC_RATE_LIMITED_TOTAL, L("c", "")) == 1);
    assert_true(value_of(m, METRIC_RATE_LIMITED_TOTAL,
        L(METRICS_OTHER, METRICS_OTHER)) == 3);
    assert_false(has_series(m, METRIC_RATE_LIMITED_TOTAL, L("d", "")));
    assert_int_equal(n_series(m, METRIC_RATE_LIMITED_TOTAL, &total), 4);
    assert_true(total == 7);

    /* two labels: the whole label set becomes __other__, even when one
     * value is already known */
    assert_int_equal(metrics_inc(m, METRIC_FAILOVERS_TOTAL, L("a", "b"), 1),
        0);
    assert_int_equal(metrics_inc(m, METRIC_FAILOVERS_TOTAL, L("a", "c"), 1),
        0);
    assert_int_equal(metrics_inc(m, METRIC_FAILOVERS_TOTAL, L("b", "c"), 1),
        0);
    assert_int_equal(metrics_inc(m, METRIC_FAILOVERS_TOTAL, L("a", "d"), 1),
        0);
    assert_true(value_of(m, METRIC_FAILOVERS_TOTAL,
        L(METRICS_OTHER, METRICS_OTHER)) == 1);
    assert_int_equal(n_series(m, METRIC_FAILOVERS_TOTAL, NULL), 4);

    /* gauges and histograms are capped the same way, per family */
    assert_int_equal(metrics_set(m, METRIC_PROVIDER_AVAILABLE_TOKENS,
        L("a"), 1), 0);
    assert_int_equal(metrics_observe(m, METRIC_REQUEST_LATENCY_MS,
        L("p1"), 1), 0);
    assert_int_equal(metrics_observe(m, METRIC_REQUEST_LATENCY_MS,
        L("p2"), 1), 0);
    assert_int_equal(metrics_observe(m, METRIC_REQUEST_LATENCY_MS,
        L("p3"), 1), 0);
    assert_int_equal(metrics_observe(m, METRIC_REQUEST_LATENCY_MS,
        L("p4"), 20), 0);
    assert_int_equal(find_series(m, METRIC_REQUEST_LATENCY_MS,
        L(METRICS_OTHER)).count, 1);
    assert_int_equal(n_series(m, METRIC_PROVIDER_AVAILABLE_TOKENS, NULL), 1);
    metrics_free(m);
}

static void
test_cap_default(void **state)
{
    struct metrics *m = metrics_new(METRICS_DEFAULT_MAX_SERIES);
    char id[32];
    double total;
    int i;

    (void)state;
    for (i = 0; i < 20000; i++) {
        snprintf(id, sizeof(id), "wf-%d", i);
        assert_int_equal(metrics_inc(m, METRIC_REQUESTS_TOTAL,
            L("groq", id, "ok", ""), 1), 0);
    }
    assert_int_equal(n_series(m, METRIC_REQUESTS_TOTAL, &total),
        METRICS_DEFAULT_MAX_SERIES + 1);
    assert_true(total == 20000);
    assert_true(value_of(m, METRIC_REQUESTS_TOTAL,
        L(METRICS_OTHER, METRICS_OTHER, METRICS_OTHER, METRICS_OTHER)) == 10000);
    assert_true(value_of(m, METRIC_REQUESTS_TOTAL,
        L("groq", "wf-9999", "ok", "")) == 1);
    assert_false(has_series(m, METRIC_REQUESTS_TOTAL,
        L("groq", "wf-10000", "ok", "")));
    metrics_free(m);
}

struct walk {
    char   buf[512];
    size_t len;
    int    stop_after;                  /* series; 0: never */
    int    n;
};

static int
walk_family(void *arg, const struct metrics_family_info *fi)
{
    struct walk *w = arg;

    if (fi->id == METRIC_REQUESTS_TOTAL || fi->id == METRIC_FAILOVERS_TOTAL)
        w->len += (size_t)snprintf(w->buf + w->len, sizeof(w->buf) - w->len,
            "%s:", fi->name);
    return 0;
}

static int
walk_series(void *arg, const struct metrics_family_info *fi,
    const struct metrics_series_info *si)
{
    struct walk *w = arg;

    if (fi->id != METRIC_REQUESTS_TOTAL && fi->id != METRIC_FAILOVERS_TOTAL)
        return 0;
    w->len += (size_t)snprintf(w->buf + w->len, sizeof(w->buf) - w->len,
        "(%s,%s)", si->label_values[0], si->label_values[1]);
    if (++w->n == w->stop_after)
        return 42;
    return 0;
}

static void
test_order(void **state)
{
    struct metrics *m = metrics_new(METRICS_DEFAULT_MAX_SERIES);
    struct walk w = { .len = 0 };
    const struct metrics_visitor v = { walk_family, walk_series, &w };
    static const char *const sets[][2] = {
        { "b", "" }, { "a", "z" }, { "ab", "x" }, { "a", "" },
        { "B", "q" }, { "a", "y" }, { METRICS_OTHER, "w" },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
        metrics_inc(m, METRIC_FAILOVERS_TOTAL, sets[i], 1);
    metrics_inc(m, METRIC_REQUESTS_TOTAL, L("p", "w2", "ok", ""), 1);
    metrics_inc(m, METRIC_REQUESTS_TOTAL, L("p", "w1", "ok", ""), 1);

    assert_int_equal(metrics_foreach(m, &v), 0);
    assert_string_equal(w.buf,
        "llm_requests_total:(p,w1)(p,w2)"
        "llm_failovers_total:(B,q)(__other__,w)(a,)(a,y)(a,z)(ab,x)(b,)");

    /* same order again, and a non-zero return stops the walk */
    memset(&w, 0, sizeof(w));
    w.stop_after = 4;
    assert_int_equal(metrics_foreach(m, &v), 42);
    assert_string_equal(w.buf,
        "llm_requests_total:(p,w1)(p,w2)"
        "llm_failovers_total:(B,q)(__other__,w)");
    metrics_free(m);
}

static void
test_number_format(void **state)
{
    struct metrics *m = metrics_new(METRICS_DEFAULT_MAX_SERIES);
    static const struct {
        double      v;
        const char *text;
    } cases[] = {
        { 0.1, "0.1" }, { 2.5, "2.5" }, { -3, "-3" }, { -0.0, "0" },
        { 12345678, "12345678" }, { 9007199254740992.0, "9007199254740992" },
        { 1e20, "1e+20" }, { 1.0 / 3, "0.3333333333333333" },
        { 0.1 + 0.2, "0.30000000000000004" },
        { 1e-7, "1e-07" },
    };
    char line[128], *out;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        metrics_set(m, METRIC_WORKFLOW_QUOTA_REMAINING_TOKENS, L("w"),
            cases[i].v);
        out = render(m);
        snprintf(line, sizeof(line),
            "\nworkflow_quota_remaining_tokens{workflow_id=\"w\"} %s\n",
            cases[i].text);
        assert_non_null(strstr(out, line));
        free(out);
    }
    metrics_free(m);
}

static void
test_prometheus_exact(void **state)
{
    struct metrics *m = metrics_new(2);
    char *out;

    (void)state;
    metrics_inc(m, METRIC_REQUESTS_TOTAL, L("openai", "wf-2", "ok", ""), 1);
    metrics_inc(m, METRIC_REQUESTS_TOTAL, L("groq", "wf-1", "ok", ""), 2);
    metrics_inc(m, METRIC_REQUESTS_TOTAL, L("groq", "wf-3", "ok", ""), 1);
    metrics_inc(m, METRIC_FAILOVERS_TOTAL, L("groq", "openai"), 1);
    metrics_set(m, METRIC_PROVIDER_AVAILABLE_TOKENS, L("groq"), 7.25);
    metrics_observe(m, METRIC_REQUEST_LATENCY_MS, L("groq"), 42);
    metrics_observe(m, METRIC_REQUEST_LATENCY_MS, L("groq"), 1200.5);
    metrics_inc(m, METRIC_TRACE_SPANS_DROPPED_TOTAL, NULL, 5);

    out = render(m);
    assert_string_equal(out,
        "# HELP llm_requests_total LLM request attempts reported, by "
        "provider, workflow, outcome and model (empty when the permit named "
        "none).\n"
        "# TYPE llm_requests_total counter\n"
        "llm_requests_total{provider=\"__other__\",workflow_id=\"__other__\","
        "outcome=\"__other__\",model=\"__other__\"} 1\n"
        "llm_requests_total{provider=\"groq\",workflow_id=\"wf-1\","
        "outcome=\"ok\",model=\"\"} 2\n"
        "llm_requests_total{provider=\"openai\",workflow_id=\"wf-2\","
        "outcome=\"ok\",model=\"\"} 1\n"
        "# HELP llm_rate_limited_total LLM requests that met a rate limit: "
        "waited for a token, moved off a provider without one, or answered "
        "429; model is empty when the permit named none.\n"
        "# TYPE llm_rate_limited_total counter\n"
        "# HELP llm_failovers_total LLM requests moved from one provider to "
        "another.\n"
        "# TYPE llm_failovers_total counter\n"
        "llm_failovers_total{from_provider=\"groq\",to_provider=\"openai\"}"
        " 1\n"
        "# HELP llm_quota_exceeded_total Quota reservations that found a "
        "workflow or tenant over its quota.\n"
        "# TYPE llm_quota_exceeded_total counter\n"
        "# HELP provider_available_tokens Tokens now available in the "
        "provider's rate-limit bucket.\n"
        "# TYPE provider_available_tokens gauge\n"
        "provider_available_tokens{provider=\"groq\"} 7.25\n"
        "# HELP workflow_quota_remaining_tokens Quota tokens the workflow "
        "has left in the rolling window.\n"
        "# TYPE workflow_quota_remaining_tokens gauge\n"
        "# HELP llm_request_latency_ms LLM request latency reported by "
        "clients, in milliseconds.\n"
        "# TYPE llm_request_latency_ms histogram\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"5\"} 0\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"10\"} 0\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"25\"} 0\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"50\"} 1\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"100\"} 1\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"250\"} 1\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"500\"} 1\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"1000\"} 1\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"2500\"} 2\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"5000\"} 2\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"10000\"} 2\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"30000\"} 2\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"60000\"} 2\n"
        "llm_request_latency_ms_bucket{provider=\"groq\",le=\"+Inf\"} 2\n"
        "llm_request_latency_ms_sum{provider=\"groq\"} 1242.5\n"
        "llm_request_latency_ms_count{provider=\"groq\"} 2\n"
        "# HELP llmguard_store_write_errors_total Quota store write "
        "transactions that failed.\n"
        "# TYPE llmguard_store_write_errors_total counter\n"
        "llmguard_store_write_errors_total 0\n"
        "# HELP llmguard_trace_spans_dropped_total Trace spans dropped: "
        "export queue full or export failed.\n"
        "# TYPE llmguard_trace_spans_dropped_total counter\n"
        "llmguard_trace_spans_dropped_total 5\n"
        "# HELP llmguard_provider_degraded 1 while the provider is degraded "
        "(in cooldown after a fault), else 0.\n"
        "# TYPE llmguard_provider_degraded gauge\n"
        "# HELP provider_available_llm_tokens LLM tokens now available in "
        "the provider's TOKENS_PER_MIN bucket.\n"
        "# TYPE provider_available_llm_tokens gauge\n"
        "# HELP llmguard_daily_limit_remaining What a daily limit (RPD, TPD) "
        "has left over the last 24 hours.\n"
        "# TYPE llmguard_daily_limit_remaining gauge\n"
        "# HELP llmguard_provider_limit A provider's per-minute limit "
        "(requests_per_min, tokens_per_min), configured or learned from its "
        "headers.\n"
        "# TYPE llmguard_provider_limit gauge\n"
        "# HELP llmguard_provider_headers_malformed_total Rate-limit headers "
        "of a provider reported with a value that could not be read "
        "(ignored).\n"
        "# TYPE llmguard_provider_headers_malformed_total counter\n"
        "# HELP llm_tokens_total LLM tokens used by the attempts reported "
        "on the provider: each report's tokens_used, else its permit's "
        "estimate.\n"
        "# TYPE llm_tokens_total counter\n"
        "# HELP llmguard_redis_up Multi-host mode: 1 while Redis is "
        "connected (the buckets are global), else 0.\n"
        "# TYPE llmguard_redis_up gauge\n"
        "llmguard_redis_up 0\n"
        "# HELP llmguard_redis_errors_total Multi-host mode: failed "
        "connections, timeouts and error replies of Redis.\n"
        "# TYPE llmguard_redis_errors_total counter\n"
        "llmguard_redis_errors_total 0\n"
        "# HELP llmguard_fallback_grants_total Multi-host mode: request "
        "tokens granted by the fallback while Redis was unreachable.\n"
        "# TYPE llmguard_fallback_grants_total counter\n");
    free(out);
    metrics_free(m);
}

static void
test_family_table(void **state)
{
    size_t id;

    (void)state;
    for (id = 0; id < METRIC__COUNT; id++) {
        const struct metrics_family_info *fi = metrics_family(id);

        assert_int_equal(fi->id, id);
        assert_non_null(fi->help);
        assert_true((fi->type == METRIC_HISTOGRAM) == (fi->n_buckets > 0));
    }
    assert_string_equal(metrics_family(METRIC_QUOTA_EXCEEDED_TOTAL)->
        label_names[1], "tenant_id");
    assert_string_equal(metrics_type_name(METRIC_HISTOGRAM), "histogram");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_zero_cap),
        cmocka_unit_test(test_counter_exact),
        cmocka_unit_test(test_gauge_set),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_cap_small),
        cmocka_unit_test(test_cap_default),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_number_format),
        cmocka_unit_test(test_prometheus_exact),
        cmocka_unit_test(test_family_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
