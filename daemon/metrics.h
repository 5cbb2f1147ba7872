/*
 * metrics.h — the metrics registry and its Prometheus renderer
 * (llmguardd(8), "Metrics").
 *
 * Pure module: no I/O except writing into a FILE * the caller gives, no
 * clock reads, no globals.  Not thread-safe: one registry is used by one
 * thread (the event loop).
 *
 * Families.  The registry holds the fixed families of enum metric_id, each
 * with a name, help text, type and a fixed list of label names (a table in
 * metrics.c; adding a metric is adding an enum value and a row).  A family
 * holds series keyed by their label values.  A family without labels has
 * its one series from the start, at 0, so it is exported before its first
 * event.
 *
 * Label values.  The caller passes one NUL-terminated value per label name
 * of the family, in the table's order (NULL for a family without labels).
 * A NULL value is the empty string.  Values are arbitrary bytes from users:
 * each byte that does not begin a valid UTF-8 sequence (overlong forms and
 * surrogates are invalid) is stored as U+FFFD, so every renderer
 * (Prometheus, msgpack, JSON) gets valid UTF-8; Prometheus parsers reject a
 * scrape with invalid UTF-8.  The Prometheus renderer escapes backslash,
 * double quote and newline.
 *
 * Cap.  A family holds at most max_series series, not counting its
 * overflow series: the one whose every label value is METRICS_OTHER.  When
 * a family is full, a label set that has no series yet goes to the overflow
 * series; label sets that already have one keep it.  A label set whose
 * every value is METRICS_OTHER always names the overflow series, whether
 * the cap or a user spelled it.
 *
 * Values are doubles.  Counter increments must be finite and >= 0, gauge
 * values and histogram observations finite; anything else returns -1 and
 * changes nothing.  A histogram counts an observation v in every bucket
 * whose upper bound b has v <= b (cumulative counts, as Prometheus has
 * them) and in the implicit +Inf bucket, which is its count.
 *
 * Order.  metrics_foreach() and the renderer visit the families in enum
 * order, and each family's series sorted by label values: the first label
 * compared bytewise (memcmp, shorter prefix first), then the next.
 * Numbers are printed by snprintf/strtod and assume the "C" LC_NUMERIC
 * locale, which the daemon never changes.
 */
#ifndef LLMGUARD_METRICS_H
#define LLMGUARD_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define METRICS_DEFAULT_MAX_SERIES 10000
#define METRICS_OTHER "__other__"
#define METRICS_MAX_LABELS 4

enum metric_type {
    METRIC_COUNTER,
    METRIC_GAUGE,
    METRIC_HISTOGRAM,
};

/* Labels in braces, in the order the caller passes their values. */
enum metric_id {
    METRIC_REQUESTS_TOTAL,      /* {provider, workflow_id, outcome, model} */
    METRIC_RATE_LIMITED_TOTAL,          /* {provider, model} */
    METRIC_FAILOVERS_TOTAL,             /* {from_provider, to_provider} */
    METRIC_QUOTA_EXCEEDED_TOTAL,        /* {workflow_id, tenant_id} */
    METRIC_PROVIDER_AVAILABLE_TOKENS,   /* gauge {provider} */
    METRIC_WORKFLOW_QUOTA_REMAINING_TOKENS, /* gauge {workflow_id} */
    METRIC_REQUEST_LATENCY_MS,          /* histogram {provider} */
    METRIC_STORE_WRITE_ERRORS_TOTAL,    /* no labels */
    METRIC_TRACE_SPANS_DROPPED_TOTAL,   /* no labels */
    METRIC_PROVIDER_DEGRADED,           /* gauge {provider} */
    METRIC_PROVIDER_AVAILABLE_LLM_TOKENS,   /* gauge {provider} */
    METRIC_DAILY_LIMIT_REMAINING,       /* gauge {limit, unit} */
    METRIC_PROVIDER_LIMIT,              /* gauge {provider, limit, source} */
    METRIC_PROVIDER_HEADERS_MALFORMED_TOTAL,    /* {provider} */
    METRIC_LLM_TOKENS_TOTAL,            /* {provider} */
    METRIC_REDIS_UP,                    /* gauge, multi-host mode */
    METRIC_REDIS_ERRORS_TOTAL,          /* no labels, multi-host mode */
    METRIC_FALLBACK_GRANTS_TOTAL,       /* {provider}, multi-host mode */
    METRIC__COUNT
};

struct metrics;

/* A family as the table defines it; static, valid for the program's life. */
struct metrics_family_info {
    enum metric_id   id;
    const char      *name;
    const char      *help;
    enum metric_type type;
    size_t           n_labels;
    const char      *label_names[METRICS_MAX_LABELS];
    size_t           n_buckets;         /* histogram: finite upper bounds */
    const double    *bucket_bounds;     /* ascending; +Inf is implied */
};

/*
 * One series.  The pointers stay valid until the registry is next changed
 * (any inc, set, observe or free).
 */
struct metrics_series_info {
    const char *const *label_values;    /* n_labels entries, valid UTF-8 */
    double             value;           /* counter, gauge */
    uint64_t           count;           /* histogram: observations (+Inf) */
    double             sum;             /* histogram: sum of observations */
    const uint64_t    *bucket_counts;   /* histogram: n_buckets, cumulative */
};

/*
 * Callbacks of metrics_foreach(); either may be NULL.  A callback that
 * returns non-zero stops the walk, and metrics_foreach() returns its value.
 */
struct metrics_visitor {
    int (*family)(void *arg, const struct metrics_family_info *fi);
    int (*series)(void *arg, const struct metrics_family_info *fi,
        const struct metrics_series_info *si);
    void *arg;
};

/* A registry holding every family, max_series >= 1; NULL on error. */
struct metrics *metrics_new(size_t max_series);
void metrics_free(struct metrics *m);

/* The family table row of id. */
const struct metrics_family_info *metrics_family(enum metric_id id);
/* "counter", "gauge" or "histogram". */
const char *metrics_type_name(enum metric_type type);

/*
 * Update the series of id with these label values, created on first use.
 * The family must have the type the function is for (asserted).  Return 0,
 * or -1 for an invalid value or out of memory (nothing changed).
 */
int metrics_inc(struct metrics *m, enum metric_id id,
    const char *const *labels, double delta);
int metrics_set(struct metrics *m, enum metric_id id,
    const char *const *labels, double value);
int metrics_observe(struct metrics *m, enum metric_id id,
    const char *const *labels, double value);

/* Visit every family, then its series, in the order described above. */
int metrics_foreach(struct metrics *m, const struct metrics_visitor *v);

/*
 * Write the registry in the Prometheus text exposition format 0.0.4:
 * # HELP and # TYPE for every family, then its samples.  Return 0, or -1
 * when writing to out failed.
 */
int metrics_write_prometheus(struct metrics *m, FILE *out);

#endif /* LLMGUARD_METRICS_H */
