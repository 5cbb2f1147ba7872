/*
 * permits.h - permits and reports: one round trip per attempt of a call,
 * and the routing they go through (proto/PROTOCOL.md, "Routing, permits
 * and calls").
 *
 * A permit reserves quota, routes and takes a token as one step; a report
 * feeds the outcome back to the router, reconciles the quota and closes the
 * attempt.  Attempts that share a call_id form one logical call, which ends
 * at a report marked final or when its connection closes.  This module
 * owns the router: provider i of the router is provider i of the buckets
 * (both in config order).
 */
#ifndef LLMGUARD_PERMITS_H
#define LLMGUARD_PERMITS_H

#include "config.h"
#include "proto.h"

/* The longest call_id a permit takes. */
#define PERMITS_CALL_ID_MAX 128

struct buckets;
struct conn;
struct decisions;
struct health;
struct permits;
struct persist;
struct quota;
struct router;
struct telemetry;

/* What permits work with; all outlive the permits. */
struct permits_deps {
    const struct config *cfg;       /* read at every request (reload) */
    struct buckets *buckets;
    struct quota *quota;
    struct persist *persist;
    struct telemetry *telemetry;
    struct decisions *decisions;    /* each permit's, for explain */
    struct health *health;          /* multi-host mode, else NULL */
};

/* Permits over deps, with the router of deps->cfg; their per-connection
 * state in connection slot conn_slot.  NULL (logged) on failure. */
struct permits *permits_new(const struct permits_deps *deps, int conn_slot);
/* Shutdown, after every connection closed: free p and the router. */
void permits_free(struct permits *p);

/*
 * A reload in two steps: build the router of cfg (NULL, logged, when out
 * of memory; nothing changed), then, once the buckets follow cfg too,
 * take it: health and latency carry over by name, the old router is freed.
 */
struct router *permits_router_new(const struct config *cfg);
void permits_reconfigure(struct permits *p, struct router *r);
/* For status: the router, index i being buckets_at(i); how many permits
 * are granted and not yet reported. */
const struct router *permits_router(const struct permits *p);
/* The router, to apply the fleet's health to (health.h). */
struct router *permits_router_rw(struct permits *p);
size_t permits_open(const struct permits *p);

/* The ops; each answers now or later, or fills e and returns -1. */
int permits_select_provider(struct permits *p, struct conn *c,
                            struct proto_req *req, struct proto_error *e);
int permits_permit(struct permits *p, struct conn *c, struct proto_req *req,
                   struct proto_error *e);
int permits_report(struct permits *p, struct conn *c, struct proto_req *req,
                   struct proto_error *e);

/* Close hook: the connection's unreported permits stay charged at their
 * estimate, its calls end. */
void permits_drop_conn(void *state);

#endif
