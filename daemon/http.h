/*
 * http.h - the Prometheus endpoint (LLMGUARD_METRICS_LISTEN): GET /metrics
 * and GET /healthz on evhttp, in the daemon's event loop.
 */
#ifndef LLMGUARD_HTTP_H
#define LLMGUARD_HTTP_H

#include <event2/event.h>

struct http;
struct persist;
struct telemetry;

/* Serve t's metrics, and p's health, on listen (LLMGUARD_METRICS_LISTEN,
 * host:port); NULL when it is empty.  Exits with a message when the
 * address cannot be bound. */
struct http *http_start(struct event_base *base, const char *listen,
                        struct telemetry *t, struct persist *p);
void http_stop(struct http *hc);

#endif
