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
 *
 * Header feedback: when a provider's headers cap a leased bucket
 * (buckets_feedback), its fleet's bucket is capped and held in Redis the
 * same way (proto/REDIS.md, script "cap"): at most what the provider said
 * remains, less what the fleet leased since this host's last lease before
 * the permit and what this host holds; other hosts' leases lapse within
 * LLMGUARD_LEASE_MS.  While Redis is unreachable the cap is this host's.
 *
 * Configuration: the rates, bursts, tokens per minute, deployments' RPM
 * and TPM and the quota window, default limit and enforcement are the
 * fleet's.  Each daemon publishes its own (a canonical text, fleetcfg.h)
 * with its load time by its wall clock; the newest load wins, and every
 * daemon reads it with each heartbeat and leases with its settings, for
 * the buckets it has (one the fleet's lacks keeps this host's).  While
 * Redis is unreachable each daemon keeps the newest it knows of: the
 * fleet's last read, or its own file when it loaded it since (or never
 * read the fleet's); the share fallback divides that.
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
    bool have_config;       /* the fleet's configuration was read: */
    char config_hash[41];   /* its hash, */
    char config_host[CONFIG_NAME_MAX];  /* the host that loaded it, */
    double config_loaded_at;    /* when (unix s, that host's clock), */
    bool config_differs;    /* this host's file differs from it */
    char own_hash[41];      /* this host's */
};
void global_status(const struct global *g, struct global_status *st);

/* For the counters (each call gives what came since the one before):
 * Redis errors, and request tokens provider granted in fallback. */
uint64_t global_take_errors(struct global *g);

/* The configuration in force was reloaded (cfg given to global_start
 * holds the new one): publish it when its fleet-relevant part changed. */
void global_reconfigure(struct global *g);

/* The fleet's quota settings (multi-host mode: g is not NULL): those of
 * the newest configuration this daemon knows of, as the buckets' (see
 * above), else this host's file's; and whose they are. */
struct global_quota {
    double window_days;         /* QUOTA_WINDOW_DAYS */
    int64_t default_tokens;     /* DEFAULT_DAILY_QUOTA_TOKENS */
    int64_t enforcement;        /* QUOTA_ENFORCEMENT, enum
                                   config_enforcement */
    char host[CONFIG_NAME_MAX]; /* the host that loaded them */
    int64_t loaded_at_ms;       /* when, by its wall clock (the load time
                                   the newest is chosen by) */
};
void global_fleet_quota(const struct global *g, struct global_quota *q);

/* fn(arg) after each change that may have changed what
 * global_fleet_quota() gives: a new configuration of the fleet's read, a
 * reload, Redis reached or lost.  One hook; NULL removes it. */
void global_on_config(struct global *g, void (*fn)(void *arg), void *arg);

/* The connection, for health.c's scripts beside these. */
struct redis *global_redis(struct global *g);
double global_take_fallback_grants(struct global *g, const char *provider);

#endif
