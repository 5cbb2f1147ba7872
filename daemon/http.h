/*
 * http.h - the Prometheus endpoint (LLMGUARD_METRICS_LISTEN): GET /metrics
 * and GET /healthz on evhttp, in the daemon's event loop.
 */
#ifndef LLMGUARD_HTTP_H
#define LLMGUARD_HTTP_H

struct server;

/* Start listening when LLMGUARD_METRICS_LISTEN is set; exits with a
 * message when the address cannot be bound. */
void http_start(struct server *srv);
void http_stop(struct server *srv);

#endif
