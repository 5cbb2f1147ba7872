/*
 * trace.h - the OpenTelemetry span exporter: OTLP/HTTP with the JSON
 * encoding, through libcurl's multi interface on the caller's libevent
 * loop (llmguardd(8), "Traces").
 *
 * Not a pure module: it owns sockets and timers on the event_base it is
 * given, reads the monotonic clock at shutdown, and reads getrandom(2).
 * Not thread-safe: one exporter is used by the thread that runs its base.
 *
 * Queue.  trace_exporter_submit() deep-copies a span into a FIFO and
 * returns; it never does I/O and never waits.  At most max_queue spans
 * wait; a span submitted beyond that is dropped and counted.  A batch of
 * up to max_batch spans leaves the queue when it reaches max_batch spans
 * or batch_delay_ms after the first span arrived in an empty queue,
 * whichever comes first.  The batch is serialised once; the body of the
 * one request in flight (or backing off) is held beside the queue, so
 * memory is bounded by max_queue spans plus one body.
 *
 * Responses (OTLP specification, "OTLP/HTTP Response"): 2xx exports the
 * batch.  429, 502, 503, 504, a timeout or a connection error retry the
 * same body after a backoff of initial_backoff_ms doubling per retry,
 * capped at 30 s, with random jitter (the upper half of the interval);
 * a Retry-After header of 429/503 lengthens it, within the cap.  After
 * max_retries retries the batch is dropped.  Any other status (400, 413,
 * 500, ...) or a malformed URL drops the batch at once: the
 * specification forbids retrying it.  Failures are logged at warn once
 * until the next success, then at debug.  libcurl's proxy variables
 * (http_proxy, no_proxy, ...) apply.
 *
 * Payload: one resourceSpans with service.name (and service.version when
 * given) as resource attributes, one scopeSpans with scope "llmguardd",
 * spans of kind SPAN_KIND_INTERNAL (1).  Ids are lowercase hex, times are
 * decimal strings, enums integers; a non-finite double is "NaN",
 * "Infinity" or "-Infinity"; bytes that are not valid UTF-8 in names,
 * keys and string values become U+FFFD.  status is {code: 1} (OK) or
 * {code: 2, message} (ERROR).
 */
#ifndef LLMGUARD_TRACE_H
#define LLMGUARD_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct trace_exporter;

#define TRACE_SCOPE_NAME "llmguardd"
#define TRACE_TRACEPARENT_LEN 55    /* version 00: "00-" 32 "-" 16 "-" 2 */

enum trace_attr_type { TRACE_STR, TRACE_INT, TRACE_BOOL, TRACE_DOUBLE };

/* One span attribute; key and v.s are NUL-terminated. */
struct trace_attr {
    const char *key;
    enum trace_attr_type type;
    union {
        const char *s;
        int64_t i;
        bool b;
        double d;
    } v;
};

/* A finished span as the caller describes it; submit copies all of it. */
struct trace_span {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_span_id[8];      /* read when has_parent */
    bool has_parent;
    const char *name;
    int64_t start_unix_ns, end_unix_ns;     /* negative is sent as 0 */
    bool error;                     /* status ERROR, else OK */
    const char *status_message;     /* with error; NULL for none */
    const struct trace_attr *attrs;
    size_t nattrs;
};

/* Tunables; start from trace_options_init() and change what you need. */
struct trace_options {
    size_t max_queue;               /* spans waiting; >= 1 */
    size_t max_batch;               /* spans per request; >= 1 */
    unsigned batch_delay_ms;
    unsigned request_timeout_ms;    /* whole request, connect included; >= 1 */
    unsigned max_retries;           /* 0: never retry */
    unsigned initial_backoff_ms;    /* >= 1 */
    unsigned shutdown_timeout_ms;   /* free()'s last export; 0: none */
    const char *service_version;    /* service.version; NULL for none */
};

#define TRACE_DEFAULT_MAX_QUEUE 2048
#define TRACE_DEFAULT_MAX_BATCH 512
#define TRACE_DEFAULT_BATCH_DELAY_MS 1000
#define TRACE_DEFAULT_REQUEST_TIMEOUT_MS 5000
#define TRACE_DEFAULT_MAX_RETRIES 5
#define TRACE_DEFAULT_INITIAL_BACKOFF_MS 500
#define TRACE_DEFAULT_SHUTDOWN_TIMEOUT_MS 2000
#define TRACE_MAX_BACKOFF_MS 30000

/* Counters since trace_exporter_new(); spans unless said otherwise. */
struct trace_stats {
    uint64_t queued;            /* accepted by submit */
    uint64_t exported;          /* acknowledged by a 2xx */
    uint64_t dropped;           /* queue full, rejected or out of retries */
    uint64_t failed_requests;   /* requests without a 2xx */
    uint64_t retries;           /* requests that were retries */
};

/* Fill opt with the TRACE_DEFAULT_* values and no service version. */
void trace_options_init(struct trace_options *opt);

/*
 * An exporter that posts to url (the full traces URL, e.g.
 * http://localhost:4318/v1/traces) from base's loop.  opt NULL means the
 * defaults; url, service_name and opt->service_version are copied.  NULL
 * when an argument is invalid or on a libcurl or allocation failure
 * (logged).  base must outlive the exporter.
 */
struct trace_exporter *trace_exporter_new(struct event_base *base,
                                          const char *url,
                                          const char *service_name,
                                          const struct trace_options *opt);

/*
 * Export what is held (the body in flight or backing off, then queued
 * batches) with blocking requests, bounded together by
 * shutdown_timeout_ms; drop the rest (logged); free everything.  Does
 * not run base's loop.  NULL is a no-op.
 */
void trace_exporter_free(struct trace_exporter *t);

/*
 * Queue a copy of span (span's strings may go away after the call).
 * The caller guarantees name and every attribute key non-NULL and a valid
 * type; a NULL string value is sent as "".  0 when queued; -1 when the
 * span is dropped and counted (queue full, out of memory).  O(size of
 * span), no I/O, never waits.
 */
int trace_exporter_submit(struct trace_exporter *t,
                          const struct trace_span *span);

void trace_exporter_stats(const struct trace_exporter *t,
                          struct trace_stats *st);

/*
 * Parse a W3C traceparent, "vv-<32 hex trace id>-<16 hex parent id>-ff"
 * in lowercase hex, of len bytes (no NUL needed).  Version 00 must be
 * exactly 55 bytes; a later version may go on after a '-' at byte 55.
 * 0 with the ids filled; -1 (ids unspecified) when malformed, when an id
 * is all zero or when the version is ff.
 */
int trace_parse_traceparent(const char *s, size_t len, uint8_t trace_id[16],
                            uint8_t parent_span_id[8]);

/* Fill buf with len random bytes, not all zero (len >= 1), from a
 * generator each thread seeds once from the kernel. */
void trace_random_id(uint8_t *buf, size_t len);

#endif
