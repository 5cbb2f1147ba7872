/*
 * permits.h - permits and reports: one round trip per attempt of a call,
 * and the routing they go through (proto/PROTOCOL.md, "Routing, permits
 * and calls").
 *
 * A permit reserves quota, routes and takes a token as one step; a report
 * feeds the outcome back to the router, reconciles the quota and closes the
 * attempt.  Attempts that share a call_id form one logical call, which ends
 * when no attempt of it is live (waiting, or granted and unreported) after
 * a report marked final or a refusal, or when its connection closes.
 * This module owns the router: provider i of the router is provider i of
 * the buckets (both in config order), and a second router of the model
 * deployments, whose health is their own: a fault reported for a permit
 * that named a model cools that deployment down, not its provider.
 */
#ifndef LLMGUARD_PERMITS_H
#define LLMGUARD_PERMITS_H

#include "config.h"
#include "proto.h"

/* The most rate-limit headers a report takes. */
#define PERMITS_HEADERS_MAX 32

/* The longest call_id a permit takes. */
#define PERMITS_CALL_ID_MAX 128

struct buckets;
struct conn;
struct daily;
struct decisions;
struct parking;
struct gquota;
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
    struct buckets *models;         /* a bucket per model deployment */
    struct daily *daily;            /* the providers' RPD and TPD */
    struct parking *parking;        /* permits waiting out a cooldown */
    struct health *health;          /* multi-host mode, else NULL */
    struct gquota *gquota;          /* multi-host mode, else NULL */
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
/* The same for the model deployments: their router (index i is model
 * bucket i and cfg->models[i]), taken once the model buckets follow cfg. */
struct router *permits_model_router_new(const struct config *cfg);
void permits_reconfigure_models(struct permits *p, struct router *r);
/* For status: the router, index i being buckets_at(i); how many permits
 * are granted and not yet reported. */
const struct router *permits_router(const struct permits *p);
/* The deployments' router, index i being model bucket i. */
const struct router *permits_model_router(const struct permits *p);
/* The router, to apply the fleet's health to (health.h). */
struct router *permits_router_rw(struct permits *p);
/* The deployments' router, likewise. */
struct router *permits_model_router_rw(struct permits *p);
size_t permits_open(const struct permits *p);

/*
 * The daily limits of cfg's providers into dl, as "provider/<name>"
 * (PROVIDER_<NAME>_RPD, _TPD); the usage stays.  -1 (logged) when out of
 * memory.
 */
int permits_set_daily(struct daily *dl, const struct config *cfg);
/* The daily limit name of a provider, into buf. */
#define PERMITS_DAILY_NAME_MAX (CONFIG_NAME_MAX + sizeof("provider/"))
void permits_daily_name(char *buf, size_t len, const char *provider);
/* Whether provider's daily limit takes one more request of llm tokens at
 * wall: 0, or -1 with e filled (the daily_limit refusal, see
 * proto/PROTOCOL.md). */
int permits_daily_gate(struct daily *dl, const char *provider, uint64_t llm,
                       double wall, struct proto_error *e);

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
