/*
 * health.h - multi-host mode: provider health shared through Redis
 * (llmguardd(8), "Several hosts"; proto/REDIS.md, "Provider health"), and
 * the health of model deployments alike (each its own, as in one daemon:
 * field model/<alias>, applied to the deployments' router).
 *
 * A fault that puts a provider in cooldown here is written to the fleet's
 * health hash in Redis by a script that keeps the later cooldown end (in
 * Redis' own clock); a success that clears a cooldown here clears it
 * there, unless a fault came after the attempt started.  Every daemon
 * reads the hash every HEALTH_POLL_S and applies what another host wrote
 * to its router: the later cooldown wins (router_remote_cooldown), a
 * clear clears (router_remote_clear).  So a cooldown reaches every host
 * within HEALTH_POLL_S plus one exchange.
 *
 * While Redis is unreachable health stays local: what changed here is
 * owed, and written once Redis answers again (a cooldown that ended in
 * the meantime is not).
 */
#ifndef LLMGUARD_HEALTH_H
#define LLMGUARD_HEALTH_H

#include <stdbool.h>

#include <event2/event.h>

#include "config.h"
#include "router.h"

#define HEALTH_POLL_S 0.5

struct global;
struct health;

/* The router in force (a reload replaces it): the providers', or with
 * models the deployments'; arg as given. */
typedef struct router *(*health_router_fn)(void *arg, bool models);

/*
 * Shared health over g's Redis connection for the providers of cfg (the
 * configuration in force, kept).  NULL when g is NULL (single-host mode).
 * router_fn gives the router to apply the fleet's health to; it is first
 * called once the loop runs.
 */
struct health *health_start(struct event_base *base, const struct config *cfg,
                            struct global *g, health_router_fn router_fn,
                            void *arg);
/* Stop; before g is freed (exchanges in flight finish harmlessly). */
void health_free(struct health *h);

/*
 * After router_report() of outcome on provider idx of r at now (h may be
 * NULL): a fault is written to the fleet, and so is a success that
 * cleared a cooldown (started_s: when its attempt was routed).
 */
void health_reported(struct health *h, const struct router *r, int idx,
                     enum router_outcome outcome, double retry_after_s,
                     double started_s, double now);
/* The same for deployment idx of the deployments' router r. */
void health_reported_model(struct health *h, const struct router *r, int idx,
                           enum router_outcome outcome, double retry_after_s,
                           double started_s, double now);

/* The host whose cooldown of provider is the one in force here, as last
 * learned ("" when none); for status, while the router says remote. */
const char *health_origin(const struct health *h, const char *provider);

#endif
