/*
 * router.h — provider routing: policies, health, cooldown (llmguardd(8),
 * "Routing and failover").
 *
 * Pure module: no I/O, no clock reads, no globals.  Every time is a
 * monotonic `now_s` in seconds passed by the caller; it must not go
 * backwards between calls on one router.  Not thread-safe: one router is
 * used by one thread (the event loop).
 *
 * Providers.  A router owns a fixed array of providers sorted by priority
 * (lower first), then by name (strcmp).  They are addressed by index
 * 0..router_count()-1 in that order; an index is valid for the life of the
 * router.  A reload builds a new router and calls router_copy_state().
 *
 * Health.  A provider is healthy while now_s >= its degraded-until time.
 *   rate_limited, server_error, timeout: degraded until
 *     max(current end, now_s + max(cooldown_s, retry_after_s)) — a further
 *     fault extends the cooldown, never shortens it.
 *   client_error: no change to health or latency (the request was bad, not
 *     the provider).
 *   ok: samples the latency; and if the attempt started at or after the
 *     provider's last fault (started_s >= time of that fault's report), the
 *     provider is healthy again at once: a success on a degraded provider,
 *     routed there by the all-degraded fallback, proves it recovered.  An ok
 *     from an attempt already in flight when the fault was reported keeps
 *     the cooldown, so concurrent calls cannot cancel a fresh 429.
 *
 * Latency.  An EWMA in ms with alpha ROUTER_LATENCY_ALPHA (0.2); the first
 * sample sets it.  Only ok outcomes with a finite latency_ms >= 0 are
 * sampled: a fast 5xx would make a failing provider look fast, and a
 * timeout is already a fault.
 *
 * Policies choose among the candidates: providers healthy and not excluded.
 *   primary: `preferred` if it is a candidate, else the first candidate.
 *   cost_weighted, latency_weighted: nginx smooth weighted round-robin with
 *     double weights 1/cost_per_1k_tokens or 1/latency_ewma_ms (the EWMA is
 *     floored at 1 ms).  A provider without latency samples weighs as the
 *     mean EWMA of the providers that have some (as 1 ms when none has),
 *     so it still gets traffic.  Only candidates take part in a round; the
 *     others keep their current weight.  Current weights within 1e-9 of the
 *     round's total weight are equal and the lower index wins, so a 1:3
 *     ratio gives exactly the integer nginx sequence.  `preferred` is
 *     ignored: the operator asked for balancing, not for a favourite.
 * All degraded: when no provider is a candidate but some are not excluded,
 * the one whose cooldown ends first (ties: lower index) is chosen and
 * *all_degraded is set.  When every provider is excluded the result is -1.
 */
#ifndef LLMGUARD_ROUTER_H
#define LLMGUARD_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ROUTER_LATENCY_ALPHA 0.2

enum router_policy {
    ROUTER_POLICY_PRIMARY,
    ROUTER_POLICY_COST_WEIGHTED,
    ROUTER_POLICY_LATENCY_WEIGHTED,
};

/* Same order as llmguard_outcome in llmguard.h. */
enum router_outcome {
    ROUTER_OUTCOME_OK,
    ROUTER_OUTCOME_RATE_LIMITED,        /* 429 */
    ROUTER_OUTCOME_SERVER_ERROR,        /* 5xx */
    ROUTER_OUTCOME_TIMEOUT,
    ROUTER_OUTCOME_CLIENT_ERROR,        /* any other 4xx */
};

struct router;

/* One provider as configured; router_new() copies it. */
struct router_provider_conf {
    const char *name;                   /* non-empty, NUL-terminated */
    int         priority;               /* lower is preferred */
    double      cost_per_1k_tokens;     /* finite, > 0 */
};

/* A provider's state as the status command shows it. */
struct router_status {
    const char *name;                   /* owned by the router */
    int         priority;
    double      cost_per_1k_tokens;
    bool        healthy;
    double      cooldown_remaining_s;   /* 0 when healthy */
    double      latency_ewma_ms;        /* 0 when latency_samples is 0 */
    uint64_t    latency_samples;
    /* While degraded: the fault that last extended the cooldown. */
    enum router_outcome cause;          /* rate_limited, server_error or
                                           timeout */
    double      fault_s;                /* when it was reported */
    double      retry_after_s;          /* its Retry-After; 0: none */
    bool        remote;                 /* that fault was another host's
                                           (router_remote_cooldown) */
};

/*
 * Build a router over confs[0..n-1] (n may be 0), all healthy and without
 * latency samples.  cooldown_s must be finite and >= 0.  Returns NULL when
 * out of memory or when a conf is invalid (empty name, duplicate name, cost
 * not finite or <= 0); the caller validates config beforehand to say why.
 */
struct router *router_new(const struct router_provider_conf *confs, size_t n,
                          enum router_policy policy, double cooldown_s);
void router_free(struct router *r);

/*
 * Carry health (cooldown, last fault) and latency EWMA from src to dst for
 * every provider name present in both; dst providers not in src stay fresh.
 * Round-robin weights are not carried: new costs start a new cycle.
 */
void router_copy_state(struct router *dst, const struct router *src);

size_t router_count(const struct router *r);
enum router_policy router_get_policy(const struct router *r);
double router_get_cooldown_s(const struct router *r);

/* Name of provider idx (0 <= idx < count); owned by the router. */
const char *router_name(const struct router *r, int idx);

/* Index of the provider named by name[0..len-1] (need not be NUL-
 * terminated; exact, case-sensitive match), or -1. */
int router_find(const struct router *r, const char *name, size_t len);

/*
 * Choose a provider for one attempt of a logical call.  preferred is an
 * index or -1 (used by primary only).  excluded is NULL (nothing excluded)
 * or an array of router_count() flags: the providers already tried for this
 * call.  Returns the index, or -1 when every provider is excluded (or there
 * are none).  *all_degraded (if all_degraded is not NULL) is set to whether
 * the choice is a degraded provider taken by the all-degraded fallback.
 * Weighted policies advance their round-robin state, except in the
 * fallback.
 */
int router_select(struct router *r, int preferred, const bool *excluded,
                  double now_s, bool *all_degraded);

/*
 * router_select with held_until: NULL, or router_count() monotonic times
 * before which provider i is not a candidate either, whatever its own
 * health (a model deployment is held by its provider's cooldown).  The
 * all-degraded fallback takes the one whose later end comes first.
 */
int router_select_held(struct router *r, int preferred, const bool *excluded,
                       const double *held_until, double now_s,
                       bool *all_degraded);

/*
 * Record the outcome of an attempt on provider idx, reported at now_s.
 * latency_ms: the call's latency, or negative when not measured.
 * retry_after_s: the provider's Retry-After, or <= 0 when none.  Non-finite
 * values count as absent.  started_s: when the attempt was routed (the
 * permit time); pass now_s when unknown, which lets an ok clear a cooldown.
 */
void router_report(struct router *r, int idx, enum router_outcome outcome,
                   double latency_ms, double retry_after_s, double started_s,
                   double now_s);

/*
 * Health learned from another host (multi-host mode).  A remote cooldown
 * of provider idx until until_s, for a fault reported at fault_s (both on
 * this router's clock): the cooldown becomes the later of its own end and
 * until_s (a host never shortens a cooldown it has); when until_s is the
 * later, cause and retry_after_s become the status' and it is marked
 * remote; a local fault whose cooldown ends no later leaves them so.  The last fault's time becomes the later of the two either way,
 * so an ok already in flight does not cancel the other host's fresh
 * fault.  Returns whether the cooldown was extended.  A cause that is not
 * a fault (ok, client_error), or non-finite times, change nothing.
 */
bool router_remote_cooldown(struct router *r, int idx, double until_s,
                            enum router_outcome cause, double retry_after_s,
                            double fault_s, double now_s);
/*
 * A success on another host, for an attempt started at started_s, cleared
 * the provider's cooldown: it is healthy again at once, by the rule of an
 * ok outcome (only when started_s >= the last fault known here, so a
 * fault reported since keeps its cooldown).  No latency sample.  Returns
 * whether a cooldown was cleared.
 */
bool router_remote_clear(struct router *r, int idx, double started_s,
                         double now_s);

bool router_is_healthy(const struct router *r, int idx, double now_s);
void router_status(const struct router *r, int idx, double now_s,
                   struct router_status *st);

/* Names ("primary", "cost_weighted", "latency_weighted"; "ok",
 * "rate_limited", "server_error", "timeout", "client_error") and their
 * exact, case-sensitive parse of s[0..len-1]: 0 and *out set, or -1. */
const char *router_policy_name(enum router_policy policy);
int router_policy_parse(const char *s, size_t len, enum router_policy *out);
const char *router_outcome_name(enum router_outcome outcome);
int router_outcome_parse(const char *s, size_t len, enum router_outcome *out);

#endif /* LLMGUARD_ROUTER_H */
