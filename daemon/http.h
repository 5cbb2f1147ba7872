/*
 * http.h - the Prometheus endpoint (LLMGUARD_METRICS_LISTEN): GET /metrics
 * and GET /healthz on evhttp, in the daemon's event loop.
 */
#ifndef LLMGUARD_HTTP_H
#define LLMGUARD_HTTP_H

#include <event2/event.h>

struct evhttp;
struct telemetry;

/* Serve t's metrics on listen (LLMGUARD_METRICS_LISTEN, host:port); NULL
 * when it is empty.  Exits with a message when the address cannot be
 * bound. */
struct evhttp *http_start(struct event_base *base, const char *listen,
                          struct telemetry *t);
void http_stop(struct evhttp *http);

#endif
