/*
 * telemetry.h - what llmguardd counts and traces (llmguardd(8), "Metrics"
 * and "Traces"): the event hooks that feed the metrics registry, the span
 * exporter, and the metrics op.
 */
#ifndef LLMGUARD_TELEMETRY_H
#define LLMGUARD_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "config.h"
#include "proto.h"

struct conn;
struct quota;
struct telemetry;
struct trace_span;

/* The registry of cfg (exits when out of memory). */
struct telemetry *telemetry_new(struct event_base *base,
                                const struct config *cfg);
/*
 * Gauges that are read, not pushed (the providers'): fn(t, arg) is called
 * whenever the metrics are about to be read, to set them with
 * telemetry_provider().
 */
typedef void (*telemetry_refresh_fn)(struct telemetry *t, void *arg);
void telemetry_on_refresh(struct telemetry *t, telemetry_refresh_fn fn,
                          void *arg);
/* A provider's gauges: its tokens, its LLM tokens (NAN: no TOKENS_PER_MIN
 * bucket), whether it is degraded. */
void telemetry_provider(struct telemetry *t, const char *provider,
                        double available, double available_llm,
                        bool degraded);
/* A daily limit's gauge: what the counter unit ("requests", "tokens") of
 * limit ("provider/<name>") has left. */
void telemetry_daily(struct telemetry *t, const char *limit, const char *unit,
                     int64_t remaining);
/* Multi-host mode: Redis up or not, errors since the last call, and
 * request tokens provider granted in fallback since the last call. */
void telemetry_redis(struct telemetry *t, bool up, uint64_t new_errors);
void telemetry_fallback_grants(struct telemetry *t, const char *provider,
                               double new_grants);
/* Start the OTLP exporter when an endpoint is configured (exits 78 when
 * it cannot be). */
void telemetry_start_tracing(struct telemetry *t);
/* Stop exporting (a last, bounded export) and free the registry. */
void telemetry_free(struct telemetry *t);

/* Whether spans are exported (else telemetry_span() drops them). */
bool telemetry_tracing(const struct telemetry *t);
/* A span to the OTLP exporter, when there is one (copied). */
void telemetry_span(struct telemetry *t, const struct trace_span *sp);

/* One attempt reported on provider, with its outcome (ok, rate_limited,
 * server_error, timeout, client_error; latency_ms < 0: not measured). */
void telemetry_request(struct telemetry *t, const char *provider,
                       const char *workflow, const char *outcome,
                       double latency_ms);
/* A provider's per-minute limit (limit: "requests_per_min" or
 * "tokens_per_min") and its source ("configured", "learned"). */
void telemetry_provider_limit(struct telemetry *t, const char *provider,
                              const char *limit, const char *source,
                              double per_min);
/* n rate-limit headers of provider's answer could not be read. */
void telemetry_headers_malformed(struct telemetry *t, const char *provider,
                                 unsigned n);
/* A call met a rate limit on provider. */
void telemetry_rate_limited(struct telemetry *t, const char *provider);
/* The same for a permit that named a model: model is the model id the
 * deployment calls (the label "model"; "" for none, as above). */
void telemetry_model_request(struct telemetry *t, const char *provider,
                             const char *model, const char *workflow,
                             const char *outcome, double latency_ms);
void telemetry_model_rate_limited(struct telemetry *t, const char *provider,
                                  const char *model);
/* A report: the LLM tokens its attempt used on provider. */
void telemetry_llm_tokens(struct telemetry *t, const char *provider,
                          uint64_t tokens);
/* A call moved from one provider to another. */
void telemetry_failover(struct telemetry *t, const char *from, const char *to);
/* A reservation went over a quota (hard: refused; soft: flagged). */
void telemetry_quota_exceeded(struct telemetry *t, const char *workflow,
                              const char *tenant);
/* The workflow's remaining tokens in q after a change. */
void telemetry_quota_remaining(struct telemetry *t, struct quota *q,
                               const char *workflow);
/* The same when the caller knows them (a reservation's decision). */
void telemetry_quota_remaining_is(struct telemetry *t, const char *workflow,
                                  int64_t remaining);
/* A write of quotas to the database failed. */
void telemetry_store_error(struct telemetry *t);

/*
 * The registry in the Prometheus text format into a malloc'd buffer
 * (*text, *len); 0, or -1 when out of memory.  Gauges are brought up to
 * date first.
 */
int telemetry_prometheus(struct telemetry *t, char **text, size_t *len);

/* The metrics op: a page of the registry, structured or as text. */
int telemetry_op_metrics(struct telemetry *t, struct conn *c,
                         struct proto_req *req, struct proto_error *e);

#endif
