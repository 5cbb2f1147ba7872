/*
 * daemon.h - llmguardd's subsystems, as main.c wires them together.
 *
 * Only the application layer sees this struct: main.c (start, signals,
 * stop), ops.c (the dispatch table) and reload.c.  Each subsystem owns its
 * own state and is handed what it depends on when it is created, so the
 * dependencies run one way, from the top down (tests/check_deps.sh checks
 * that no two files depend on each other in a circle):
 *
 *   main.c  ops.c  reload.c    the application: wiring, ops, reload
 *   explain.c                  the explain op, over the decisions
 *   permits.c                  permit, report, routing (owns the router;
 *                              records each decision)
 *   request.c                  request ids and subjects, the quota gate
 *   persist.c  http.c          quotas to SQLite; the /metrics endpoint
 *   gquota.c                   multi-host mode: quotas shared (persist
 *                              tells it of changes; the quota ops wait
 *                              for its scripts)
 *   gdaily.c                   multi-host mode: daily limits shared
 *   health.c                   multi-host mode: provider health shared
 *                              (permits report to it; it applies the
 *                              fleet's to the router)
 *   global.c                   multi-host mode: the fleet, the leases of
 *                              the global buckets (through buckets' hook)
 *   buckets.c  parking.c       a token bucket and its waiters per provider;
 *                              permits parked while all providers cool
 *   telemetry.c                metrics and spans
 *   server.c  clock.c          the transport; the clocks
 *
 * Beneath them writer.c, the thread that writes the store for persist.c,
 * redis.c (a Redis connection on the loop), the pure modules (limiter,
 * lease, quota, daily, router, metrics, store, trace, decisions, config,
 * redisurl, log, ratehdr, feedback: the providers' rate-limit headers,
 * read and applied to a bucket) and proto/.
 */
#ifndef LLMGUARD_DAEMON_H
#define LLMGUARD_DAEMON_H

#include <sys/types.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "proto.h"

struct conn;
struct daily;
struct parking;
struct telemetry;

struct daemon {
    struct event_base *base;
    struct config cfg;              /* in force; replaced whole by a reload */
    struct config_args args;        /* to read the configuration again */
    uid_t uid;                      /* the daemon's own uid (admin) */
    double started_mono_s;
    struct server *server;          /* the control socket */
    struct buckets *buckets;        /* a token bucket per provider */
    struct buckets *models;         /* and per model deployment */
    struct global *global;          /* REDIS_URL; NULL: single-host */
    struct health *health;          /* REDIS_URL: provider health shared */
    struct gquota *gquota;          /* REDIS_URL: quotas shared */
    struct gdaily *gdaily;          /* REDIS_URL: daily limits shared */
    struct quota *quota;            /* usage in memory: authoritative */
    struct daily *daily;            /* RPD/TPD counters, persisted too */
    struct parking *parking;        /* permits waiting out a cooldown */
    struct persist *persist;        /* quota -> SQLite */
    struct permits *permits;        /* permit, report, routing */
    struct telemetry *telemetry;    /* metrics and spans */
    struct decisions *decisions;    /* the last permits', for explain */
    struct http *http;              /* LLMGUARD_METRICS_LISTEN */
    struct log_throttle denied;     /* the log of admin ops refused */
};

/* ops.c: run one request (the server's dispatch callback; arg is the
 * struct daemon); it is answered now or later. */
void ops_dispatch(struct conn *c, struct proto_req *req, void *arg);
/* ops.c: the providers' gauges (telemetry's refresh hook; arg is the
 * struct daemon). */
void ops_refresh_gauges(struct telemetry *t, void *arg);
/* ops.c: finish a quota op that waited for Redis (gquota's done hook;
 * arg is the struct daemon). */
struct gquota_req;
void ops_quota_done(struct conn *c, struct gquota_req *r, void *arg);

/*
 * reload.c: read the configuration again (SIGHUP, the reload op) and apply
 * it: buckets keep their fill (clamped), quota usage is kept, provider
 * health carries over; settings that need a restart keep their value and
 * the log says so.  Returns 0, or -1 with the reason in err and the old
 * configuration still in force.
 */
int reload_apply(struct daemon *d, char *err, size_t errlen);

#endif
