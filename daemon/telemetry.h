/*
 * telemetry.h - what llmguardd counts (DESIGN.md §9): the event hooks that
 * feed the metrics registry, and the metrics op.
 */
#ifndef LLMGUARD_TELEMETRY_H
#define LLMGUARD_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>

#include "proto.h"

struct conn;
struct server;

/* Create the registry (exits when out of memory). */
void telemetry_init(struct server *srv);
/* Start the OTLP exporter when an endpoint is configured. */
void telemetry_start_tracing(struct server *srv);
/* Stop exporting (a last, bounded export) and free the registry. */
void telemetry_free(struct server *srv);

/* One attempt reported on provider (latency_ms < 0: not measured). */
void telemetry_request(struct server *srv, const char *provider,
                       const char *workflow, double latency_ms);
/* A call met a rate limit on provider. */
void telemetry_rate_limited(struct server *srv, const char *provider);
/* A call moved from one provider to another. */
void telemetry_failover(struct server *srv, const char *from, const char *to);
/* A reservation went over a quota (hard: refused; soft: flagged). */
void telemetry_quota_exceeded(struct server *srv, const char *workflow,
                              const char *tenant);
/* The workflow's remaining tokens after a change. */
void telemetry_quota_remaining(struct server *srv, const char *workflow);
/* A write of quotas to the database failed. */
void telemetry_store_error(struct server *srv);
/* Spans dropped by the exporter since the last call. */
void telemetry_spans_dropped(struct server *srv, double n);

/*
 * The registry in the Prometheus text format into a malloc'd buffer
 * (*text, *len); 0, or -1 when out of memory.  Gauges are brought up to
 * date first.
 */
int telemetry_prometheus(struct server *srv, char **text, size_t *len);

int telemetry_op_metrics(struct conn *c, struct proto_req *req,
                         struct proto_error *e);

#endif
