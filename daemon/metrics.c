/*
 * metrics.c — the metrics registry and its Prometheus renderer.
 * The contract is in metrics.h.
 */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HASH_NONFATAL_OOM 1 /* a failed add leaves hh.tbl NULL */
#include <uthash.h>

#include "metrics.h"

/* Upper bounds of llm_request_latency_ms, in ms; +Inf is implied. */
static const double latency_bounds_ms[] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
};

#define N_LATENCY_BOUNDS \
    (sizeof(latency_bounds_ms) / sizeof(latency_bounds_ms[0]))

static const struct metrics_family_info families[METRIC__COUNT] = {
    [METRIC_REQUESTS_TOTAL] = {
        METRIC_REQUESTS_TOTAL, "llm_requests_total",
        "LLM request attempts reported, by provider, workflow, outcome and "
        "model (empty when the permit named none).",
        METRIC_COUNTER, 4, { "provider", "workflow_id", "outcome", "model" },
        0, NULL,
    },
    [METRIC_RATE_LIMITED_TOTAL] = {
        METRIC_RATE_LIMITED_TOTAL, "llm_rate_limited_total",
        "LLM requests that met a rate limit: waited for a token, moved "
        "off a provider without one, or answered 429; model is empty "
        "when the permit named none.",
        METRIC_COUNTER, 2, { "provider", "model" }, 0, NULL,
    },
    [METRIC_FAILOVERS_TOTAL] = {
        METRIC_FAILOVERS_TOTAL, "llm_failovers_total",
        "LLM requests moved from one provider to another.",
        METRIC_COUNTER, 2, { "from_provider", "to_provider" }, 0, NULL,
    },
    [METRIC_QUOTA_EXCEEDED_TOTAL] = {
        METRIC_QUOTA_EXCEEDED_TOTAL, "llm_quota_exceeded_total",
        "Quota reservations that found a workflow or tenant over its "
        "quota.",
        METRIC_COUNTER, 2, { "workflow_id", "tenant_id" }, 0, NULL,
    },
    [METRIC_PROVIDER_AVAILABLE_TOKENS] = {
        METRIC_PROVIDER_AVAILABLE_TOKENS, "provider_available_tokens",
        "Tokens now available in the provider's rate-limit bucket.",
        METRIC_GAUGE, 1, { "provider" }, 0, NULL,
    },
    [METRIC_WORKFLOW_QUOTA_REMAINING_TOKENS] = {
        METRIC_WORKFLOW_QUOTA_REMAINING_TOKENS,
        "workflow_quota_remaining_tokens",
        "Quota tokens the workflow has left in the rolling window.",
        METRIC_GAUGE, 1, { "workflow_id" }, 0, NULL,
    },
    [METRIC_REQUEST_LATENCY_MS] = {
        METRIC_REQUEST_LATENCY_MS, "llm_request_latency_ms",
        "LLM request latency reported by clients, in milliseconds.",
        METRIC_HISTOGRAM, 1, { "provider" },
        N_LATENCY_BOUNDS, latency_bounds_ms,
    },
    [METRIC_STORE_WRITE_ERRORS_TOTAL] = {
        METRIC_STORE_WRITE_ERRORS_TOTAL,
        "llmguard_store_write_errors_total",
        "Quota store write transactions that failed.",
        METRIC_COUNTER, 0, { NULL }, 0, NULL,
    },
    [METRIC_TRACE_SPANS_DROPPED_TOTAL] = {
        METRIC_TRACE_SPANS_DROPPED_TOTAL,
        "llmguard_trace_spans_dropped_total",
        "Trace spans dropped: export queue full or export failed.",
        METRIC_COUNTER, 0, { NULL }, 0, NULL,
    },
    [METRIC_PROVIDER_DEGRADED] = {
        METRIC_PROVIDER_DEGRADED, "llmguard_provider_degraded",
        "1 while the provider is degraded (in cooldown after a fault), "
        "else 0.",
        METRIC_GAUGE, 1, { "provider" }, 0, NULL,
    },
    [METRIC_PROVIDER_AVAILABLE_LLM_TOKENS] = {
        METRIC_PROVIDER_AVAILABLE_LLM_TOKENS, "provider_available_llm_tokens",
        "LLM tokens now available in the provider's TOKENS_PER_MIN bucket.",
        METRIC_GAUGE, 1, { "provider" }, 0, NULL,
    },
    [METRIC_DAILY_LIMIT_REMAINING] = {
        METRIC_DAILY_LIMIT_REMAINING, "llmguard_daily_limit_remaining",
        "What a daily limit (RPD, TPD) has left over the last 24 hours.",
        METRIC_GAUGE, 2, { "limit", "unit" }, 0, NULL,
    },
    [METRIC_PROVIDER_LIMIT] = {
        METRIC_PROVIDER_LIMIT, "llmguard_provider_limit",
        "A provider's per-minute limit (requests_per_min, tokens_per_min), "
        "configured or learned from its headers.",
        METRIC_GAUGE, 3, { "provider", "limit", "source" }, 0, NULL,
    },
    [METRIC_PROVIDER_HEADERS_MALFORMED_TOTAL] = {
        METRIC_PROVIDER_HEADERS_MALFORMED_TOTAL,
        "llmguard_provider_headers_malformed_total",
        "Rate-limit headers of a provider reported with a value that could "
        "not be read (ignored).",
        METRIC_COUNTER, 1, { "provider" }, 0, NULL,
    },
    [METRIC_LLM_TOKENS_TOTAL] = {
        METRIC_LLM_TOKENS_TOTAL, "llm_tokens_total",
        "LLM tokens used by the attempts reported on the provider: each "
        "report's tokens_used, else its permit's estimate.",
        METRIC_COUNTER, 1, { "provider" }, 0, NULL,
    },
    [METRIC_REDIS_UP] = {
        METRIC_REDIS_UP, "llmguard_redis_up",
        "Multi-host mode: 1 while Redis is connected (the buckets are "
        "global), else 0.",
        METRIC_GAUGE, 0, { NULL }, 0, NULL,
    },
    [METRIC_REDIS_ERRORS_TOTAL] = {
        METRIC_REDIS_ERRORS_TOTAL, "llmguard_redis_errors_total",
        "Multi-host mode: failed connections, timeouts and error replies "
        "of Redis.",
        METRIC_COUNTER, 0, { NULL }, 0, NULL,
    },
    [METRIC_FALLBACK_GRANTS_TOTAL] = {
        METRIC_FALLBACK_GRANTS_TOTAL, "llmguard_fallback_grants_total",
        "Multi-host mode: request tokens granted by the fallback while "
        "Redis was unreachable.",
        METRIC_COUNTER, 1, { "provider" }, 0, NULL,
    },
};

static const char *const other_values[METRICS_MAX_LABELS] = {
    METRICS_OTHER, METRICS_OTHER, METRICS_OTHER, METRICS_OTHER,
};

/*
 * A series.  Its key is its label values, each followed by a NUL, stored
 * after the bucket counts; values[] point into it.
 */
struct series {
    UT_hash_handle hh;
    const char    *values[METRICS_MAX_LABELS];
    const char    *key;
    size_t         keylen;
    double         value;               /* counter, gauge; histogram sum */
    uint64_t       count;               /* histogram */
    uint64_t       buckets[];           /* histogram, cumulative */
};

struct family {
    struct series *series;              /* uthash head */
    size_t         n_capped;            /* series except the overflow one */
};

struct metrics {
    size_t        max_series;
    struct family fam[METRIC__COUNT];
    char         *key;                  /* scratch key of the last lookup */
    size_t        keylen;
    size_t        keycap;
};

/* Length of the valid UTF-8 sequence at p, or 0 if it is not one. */
static size_t
utf8_len(const unsigned char *p)
{
    size_t n, i;
    unsigned char lo = 0x80, hi = 0xbf;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4;
    else
        return 0;
    if (p[0] == 0xe0)
        lo = 0xa0;                      /* overlong */
    else if (p[0] == 0xed)
        hi = 0x9f;                      /* surrogates */
    else if (p[0] == 0xf0)
        lo = 0x90;                      /* overlong */
    else if (p[0] == 0xf4)
        hi = 0x8f;                      /* above U+10FFFF */
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* Append value, made valid UTF-8, and a NUL to the scratch key. */
static int
key_append(struct metrics *m, const char *value)
{
    const unsigned char *p = (const unsigned char *)(value ? value : "");
    size_t len = strlen((const char *)p), need, n;
    char *key;

    if (len > (SIZE_MAX - m->keylen - 1) / 3)
        return -1;
    need = m->keylen + 3 * len + 1;     /* each invalid byte -> 3 bytes */
    if (need > m->keycap) {
        if (need < 2 * m->keycap)
            need = 2 * m->keycap;
        if ((key = realloc(m->key, need)) == NULL)
            return -1;
        m->key = key;
        m->keycap = need;
    }
    while (*p != '\0') {
        if ((n = utf8_len(p)) == 0) {
            memcpy(m->key + m->keylen, "\xef\xbf\xbd", 3);   /* U+FFFD */
            m->keylen += 3;
            p++;
        } else {
            memcpy(m->key + m->keylen, p, n);
            m->keylen += n;
            p += n;
        }
    }
    m->key[m->keylen++] = '\0';
    return 0;
}

/* Build the scratch key of n label values. */
static int
key_build(struct metrics *m, size_t n, const char *const *values)
{
    size_t i;

    assert(n == 0 || values != NULL);
    m->keylen = 0;
    for (i = 0; i < n; i++)
        if (key_append(m, values[i]) == -1)
            return -1;
    return 0;
}

/* Whether the scratch key is the overflow label set of n labels. */
static bool
key_is_other(const struct metrics *m, size_t n)
{
    size_t i;

    if (m->keylen != n * sizeof(METRICS_OTHER))
        return false;
    for (i = 0; i < n; i++)
        if (memcmp(m->key + i * sizeof(METRICS_OTHER), METRICS_OTHER,
                sizeof(METRICS_OTHER)) != 0)
            return false;
    return true;
}

/* A zeroed series of family fi holding a copy of the scratch key. */
static struct series *
series_new(const struct metrics *m, const struct metrics_family_info *fi)
{
    size_t head = sizeof(struct series) + fi->n_buckets * sizeof(uint64_t);
    struct series *s;
    char *key;
    size_t i;

    if ((s = malloc(head + m->keylen)) == NULL)
        return NULL;
    memset(s, 0, head);
    key = (char *)s + head;
    memcpy(key, m->key, m->keylen);
    s->key = key;
    s->keylen = m->keylen;
    for (i = 0; i < fi->n_labels; i++) {
        s->values[i] = key;
        key += strlen(key) + 1;
    }
    return s;
}

/* The series of id for these label values, created (or capped) if new. */
static struct series *
series_get(struct metrics *m, enum metric_id id, const char *const *values)
{
    const struct metrics_family_info *fi = &families[id];
    struct family *f = &m->fam[id];
    struct series *s;
    bool other;

    if (key_build(m, fi->n_labels, values) == -1)
        return NULL;
    HASH_FIND(hh, f->series, m->key, m->keylen, s);
    if (s != NULL)
        return s;
    other = key_is_other(m, fi->n_labels);
    if (!other && f->n_capped >= m->max_series) {
        if (key_build(m, fi->n_labels, other_values) == -1)
            return NULL;
        HASH_FIND(hh, f->series, m->key, m->keylen, s);
        if (s != NULL)
            return s;
        other = true;
    }
    if ((s = series_new(m, fi)) == NULL)
        return NULL;
    HASH_ADD_KEYPTR(hh, f->series, s->key, s->keylen, s);
    if (s->hh.tbl == NULL) {        /* out of memory: the update is lost */
        free(s);
        return NULL;
    }
    if (!other)
        f->n_capped++;
    return s;
}

struct metrics *
metrics_new(size_t max_series)
{
    struct metrics *m;
    size_t id;

    if (max_series == 0 || (m = calloc(1, sizeof(*m))) == NULL)
        return NULL;
    m->max_series = max_series;
    m->keycap = 64;
    if ((m->key = malloc(m->keycap)) == NULL) {
        free(m);
        return NULL;
    }
    for (id = 0; id < METRIC__COUNT; id++) {
        assert(families[id].id == id && families[id].name != NULL);
        if (families[id].n_labels == 0 &&
            series_get(m, (enum metric_id)id, NULL) == NULL) {
            metrics_free(m);
            return NULL;
        }
    }
    return m;
}

void
metrics_free(struct metrics *m)
{
    struct series *s, *tmp;
    size_t id;

    if (m == NULL)
        return;
    for (id = 0; id < METRIC__COUNT; id++) {
        HASH_ITER(hh, m->fam[id].series, s, tmp) {
            HASH_DEL(m->fam[id].series, s);
            free(s);
        }
    }
    free(m->key);
    free(m);
}

const struct metrics_family_info *
metrics_family(enum metric_id id)
{
    assert(id < METRIC__COUNT);
    return &families[id];
}

const char *
metrics_type_name(enum metric_type type)
{
    switch (type) {
    case METRIC_COUNTER:
        return "counter";
    case METRIC_GAUGE:
        return "gauge";
    case METRIC_HISTOGRAM:
        return "histogram";
    }
    assert(!"bad metric type");
    return "untyped";
}

int
metrics_inc(struct metrics *m, enum metric_id id, const char *const *labels,
    double delta)
{
    struct series *s;

    assert(id < METRIC__COUNT && families[id].type == METRIC_COUNTER);
    if (!isfinite(delta) || delta < 0)
        return -1;
    if ((s = series_get(m, id, labels)) == NULL)
        return -1;
    s->value += delta;
    return 0;
}

int
metrics_set(struct metrics *m, enum metric_id id, const char *const *labels,
    double value)
{
    struct series *s;

    assert(id < METRIC__COUNT && families[id].type == METRIC_GAUGE);
    if (!isfinite(value))
        return -1;
    if ((s = series_get(m, id, labels)) == NULL)
        return -1;
    s->value = value;
    return 0;
}

int
metrics_observe(struct metrics *m, enum metric_id id,
    const char *const *labels, double value)
{
    const struct metrics_family_info *fi = &families[id];
    struct series *s;
    size_t i;

    assert(id < METRIC__COUNT && fi->type == METRIC_HISTOGRAM);
    if (!isfinite(value))
        return -1;
    if ((s = series_get(m, id, labels)) == NULL)
        return -1;
    s->count++;
    s->value += value;
    for (i = 0; i < fi->n_buckets; i++)
        if (value <= fi->bucket_bounds[i])
            s->buckets[i]++;
    return 0;
}

/* Order of series by label values (keys are values joined by NULs). */
static int
series_cmp(const struct series *a, const struct series *b)
{
    size_t n = a->keylen < b->keylen ? a->keylen : b->keylen;
    int c = memcmp(a->key, b->key, n);

    if (c != 0)
        return c;
    return (a->keylen > b->keylen) - (a->keylen < b->keylen);
}

int
metrics_foreach(struct metrics *m, const struct metrics_visitor *v)
{
    const struct metrics_family_info *fi;
    struct metrics_series_info si;
    struct series *s;
    size_t id;
    int rc;

    for (id = 0; id < METRIC__COUNT; id++) {
        fi = &families[id];
        if (v->family != NULL && (rc = v->family(v->arg, fi)) != 0)
            return rc;
        HASH_SRT(hh, m->fam[id].series, series_cmp);
        if (v->series == NULL)
            continue;
        for (s = m->fam[id].series; s != NULL; s = s->hh.next) {
            memset(&si, 0, sizeof(si));
            si.label_values = s->values;
            if (fi->type == METRIC_HISTOGRAM) {
                si.count = s->count;
                si.sum = s->value;
                si.bucket_counts = s->buckets;
            } else {
                si.value = s->value;
            }
            if ((rc = v->series(v->arg, fi, &si)) != 0)
                return rc;
        }
    }
    return 0;
}

/*
 * Format v for Prometheus: integers up to 2^53 without exponent or point,
 * others in the shortest %g form that reads back as v.
 */
static void
format_double(char *buf, size_t size, double v)
{
    int prec;

    if (isnan(v))
        snprintf(buf, size, "NaN");
    else if (isinf(v))
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    else if (v == 0)
        snprintf(buf, size, "0");       /* also -0 */
    else if (v == trunc(v) && fabs(v) <= 9007199254740992.0)
        snprintf(buf, size, "%.0f", v);
    else
        for (prec = 15; prec <= 17; prec++) {
            snprintf(buf, size, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
}

/* Write s escaped: backslash and newline, and double quote if quote. */
static void
write_escaped(FILE *out, const char *s, bool quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            fputs("\\\\", out);
        else if (*s == '\n')
            fputs("\\n", out);
        else if (*s == '"' && quote)
            fputs("\\\"", out);
        else
            putc(*s, out);
    }
}

/* Write one sample line: name+suffix{labels,le="le"} value, braces only
 * when there is a label. */
static void
write_sample(FILE *out, const struct metrics_family_info *fi,
    const char *suffix, const struct metrics_series_info *si, const char *le,
    double value)
{
    char buf[32];
    size_t i;

    fprintf(out, "%s%s", fi->name, suffix);
    if (fi->n_labels > 0 || le != NULL) {
        putc('{', out);
        for (i = 0; i < fi->n_labels; i++) {
            fprintf(out, "%s%s=\"", i > 0 ? "," : "", fi->label_names[i]);
            write_escaped(out, si->label_values[i], true);
            putc('"', out);
        }
        if (le != NULL)
            fprintf(out, "%sle=\"%s\"", fi->n_labels > 0 ? "," : "", le);
        putc('}', out);
    }
    format_double(buf, sizeof(buf), value);
    fprintf(out, " %s\n", buf);
}

/* Visitor: the # HELP and # TYPE lines of a family. */
static int
prom_family(void *arg, const struct metrics_family_info *fi)
{
    FILE *out = arg;

    fprintf(out, "# HELP %s ", fi->name);
    write_escaped(out, fi->help, false);
    fprintf(out, "\n# TYPE %s %s\n", fi->name, metrics_type_name(fi->type));
    return 0;
}

/* Visitor: the sample lines of a series. */
static int
prom_series(void *arg, const struct metrics_family_info *fi,
    const struct metrics_series_info *si)
{
    FILE *out = arg;
    char le[32];
    size_t i;

    if (fi->type != METRIC_HISTOGRAM) {
        write_sample(out, fi, "", si, NULL, si->value);
        return 0;
    }
    for (i = 0; i < fi->n_buckets; i++) {
        format_double(le, sizeof(le), fi->bucket_bounds[i]);
        write_sample(out, fi, "_bucket", si, le, (double)si->bucket_counts[i]);
    }
    write_sample(out, fi, "_bucket", si, "+Inf", (double)si->count);
    write_sample(out, fi, "_sum", si, NULL, si->sum);
    write_sample(out, fi, "_count", si, NULL, (double)si->count);
    return 0;
}

int
metrics_write_prometheus(struct metrics *m, FILE *out)
{
    const struct metrics_visitor v = { prom_family, prom_series, out };

    metrics_foreach(m, &v);
    return ferror(out) ? -1 : 0;
}
