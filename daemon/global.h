/*
 * global.h - multi-host mode (REDIS_URL): the fleet and its global buckets
 * (llmguardd(8), "Several hosts"; proto/REDIS.md).
 *
 * Fleet: this daemon registers LLMGUARD_HOST_ID with a random instance
 * nonce and renews it every second; an entry lapses 3 s after its last
 * heartbeat.  The count of live hosts is kept (and remembered in the local
 * database) for the share fallback.
 *
 * Buckets: each provider's request and LLM-token buckets live in Redis,
 * and so do those of each model deployment with an RPM or a TPM,
 * refilled by Redis' own clock; this daemon's local buckets run leased
 * (limiter.h) and are fed by leases (lease.h) through the buckets' hook.
 * While Redis is unreachable, once the leases have lapsed, each local
 * bucket applies LLMGUARD_REDIS_FALLBACK: share (rate and burst divided by
 * the hosts last seen alive), local (the configured rate) or closed
 * (nothing granted: acquire and permit answer busy).
 */
#ifndef LLMGUARD_GLOBAL_H
#define LLMGUARD_GLOBAL_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "buckets.h"
#include "config.h"

struct global;

/*
 * Multi-host mode for cfg (kept: it is the daemon's configuration in
 * force, reloads included) over the providers' buckets b and the
 * deployments' buckets models.  Connects and claims the host
 * id before it returns: waits up to 3 s for a live holder of the same id
 * to lapse, else exits 78.  A Redis that cannot be reached is no reason
 * not to start: the daemon starts in fallback and says so.  Exits 78 (the
 * reason on stderr) when the URL or the TLS files are wrong.
 */
struct global *global_start(struct event_base *base, const struct config *cfg,
                            struct buckets *b, struct buckets *models);
/* Leave the fleet (a bounded last exchange) and free. */
void global_free(struct global *g);

struct global_status {
    char url[1024];         /* masked */
    bool connected;
    int64_t hosts;          /* live hosts last seen; 0: never seen */
    char last_error[256];   /* "" when none */
    uint64_t errors;        /* llmguard_redis_errors_total */
};
void global_status(const struct global *g, struct global_status *st);

/* For the counters (each call gives what came since the one before):
 * Redis errors, and request tokens provider granted in fallback. */
uint64_t global_take_errors(struct global *g);

/* The connection, for health.c's scripts beside these. */
struct redis *global_redis(struct global *g);
double global_take_fallback_grants(struct global *g, const char *provider);

#endif
