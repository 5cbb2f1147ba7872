/*
 * daily.h - per-day limits: requests and LLM tokens over any rolling 24
 * hours, per named limit (llmguardd(8), "Daily limits").
 *
 * A pure module: no I/O, no clock reads, no globals.  Wall-clock time is
 * passed in as now_s (unix seconds, as for quota.h).  Not thread-safe: one
 * struct daily belongs to the event loop.
 *
 * A limit is named by a string of 1..QUOTA_ID_MAX bytes without control
 * characters; the daemon uses "provider/<name>" for PROVIDER_<NAME>_RPD
 * and _TPD.  Each name has two counters, requests and tokens, each with
 * its own limit (0: none).  The counters are the quota module's rolling
 * window (slots of max(1 s, window / 720): 120 s for a day), in a quota
 * table of their own, so their window math, persistence queue and pruning
 * are the quota's; their rows are stored apart from the quota subjects'.
 *
 * Using it for another kind of limit (a model's MODEL_<ALIAS>_RPD/_TPD):
 *
 *     daily_set_limit(dl, "model/llama", rpd, tpd);     at (re)configure
 *     daily_check(dl, "model/llama", 1, estimate, now, &v);  before routing
 *     daily_charge(dl, "model/llama", 1, estimate, now, &slot);  at grant
 *     daily_reconcile(dl, "model/llama", DAILY_TOKENS, slot, estimate,
 *                     actual, now);                      at the report
 *
 * and, for an attempt that never happened, daily_reconcile() of both
 * units to 0.  In the daemon, permits.c does all of that for every name
 * attempt_limits() gives for an attempt, and permits_set_daily() sets the
 * limits from the configuration: a model's limit is a name added in each.
 * Names are never confused with one another, nor with quota subjects:
 * they are rows of another table.
 */
#ifndef LLMGUARD_DAILY_H
#define LLMGUARD_DAILY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DAILY_WINDOW_S 86400.0

enum daily_unit { DAILY_REQUESTS, DAILY_TOKENS };
#define DAILY_UNITS 2

struct daily;

/* An empty set of limits over a window of window_s (> 0; the daemon's is
 * DAILY_WINDOW_S), or NULL when out of memory or for a bad window. */
struct daily *daily_new(double window_s);
void daily_free(struct daily *dl);

/*
 * Limits.  daily_set_limit() gives name its limits (each >= 0; 0: none
 * for that unit); usage is kept whatever the limits do.  A reload calls
 * daily_clear_limits() (every limit 0) and then sets each configured
 * limit again.  -1 for a bad name or value, or out of memory.
 */
int daily_set_limit(struct daily *dl, const char *name, int64_t requests,
                    int64_t tokens);
void daily_clear_limits(struct daily *dl);
/* Whether name has a limit for some unit. */
bool daily_limited(const struct daily *dl, const char *name);

/* What daily_check() found. */
struct daily_verdict {
    bool allowed;
    enum daily_unit unit;   /* when !allowed: the counter that is out */
    int64_t used, limit;    /* that counter's */
    bool has_frees_at;
    double frees_at_s;      /* when its usage next decreases */
};

/*
 * Whether name can take requests and tokens more at now_s: used + n <=
 * limit for each unit that has a limit (requests first).  A name without
 * limits is always allowed.  Nothing is counted.  0 with *v filled, -1
 * for bad arguments.
 */
int daily_check(const struct daily *dl, const char *name, int64_t requests,
                int64_t tokens, double now_s, struct daily_verdict *v);

/*
 * Count requests and tokens (>= 0) for name in the slot of now_s, which
 * goes to *slot_start_ms (the handle for daily_reconcile()), whether or
 * not that goes over the limit: the caller checked first.  A name without
 * limits counts nothing (*slot_start_ms is still set).  0, or -1 for bad
 * arguments or out of memory (nothing counted).
 */
int daily_charge(struct daily *dl, const char *name, int64_t requests,
                 int64_t tokens, double now_s, int64_t *slot_start_ms);

/*
 * Replace estimate by actual (both >= 0) in the slot a charge went to, as
 * quota_commit() does: while that slot counts; once it has left the window
 * more is charged now and less is dropped.  To undo a charge, reconcile
 * each unit to 0.  0, or -1 for bad arguments or out of memory.
 */
int daily_reconcile(struct daily *dl, const char *name, enum daily_unit unit,
                    int64_t slot_start_ms, int64_t estimate, int64_t actual,
                    double now_s);

/* One counter with a limit, as status shows it. */
struct daily_status {
    const char *name;       /* valid until dl's limits change */
    enum daily_unit unit;
    int64_t limit, used;
    int64_t own;            /* this host's part of used (multi-host) */
    int64_t remaining;      /* max(0, limit - used) */
    bool has_frees_at;
    double frees_at_s;      /* when used next decreases; none: unused */
};

/*
 * Every counter that has a limit, by name then unit, into out[0..max-1];
 * returns how many there are (may be more than max).  Sorts the limits
 * (hence not const).
 */
size_t daily_list(struct daily *dl, double now_s,
                  struct daily_status *out, size_t max);

/* Persistence: what the store is told, as quota_sink is (quota.h). */
struct daily_sink {
    int (*on_reset)(void *arg, const char *name, enum daily_unit unit);
    int (*on_slot)(void *arg, const char *name, enum daily_unit unit,
                   int64_t slot_start_ms, int64_t count);
};

/* Deliver the pending changes (quota_flush()); -1 when a callback failed
 * (all stays pending), else the number of calls made. */
int daily_flush(struct daily *dl, const struct daily_sink *sink, void *arg);
bool daily_flush_pending(const struct daily *dl);
/* A delivered change did not reach the store: queue it again
 * (quota_requeue(); reset: the counter's rows, else one slot). */
int daily_requeue(struct daily *dl, bool reset, const char *name,
                  enum daily_unit unit, int64_t slot_start_ms);
/* Start-up: a stored row (quota_load_slot()). */
int daily_load_slot(struct daily *dl, const char *name, enum daily_unit unit,
                    int64_t slot_start_ms, int64_t count, double now_s);
/* Rows before this no longer count at now_s. */
int64_t daily_horizon_ms(const struct daily *dl, double now_s);
/* Drop the slots that left the window; how many. */
size_t daily_prune(struct daily *dl, double now_s);

/*
 * Multi-host mode (gdaily.h): the counters hold this host's own usage;
 * the rest of the fleet's as last read (daily_set_others()) is kept with
 * the limits, and daily_check() and daily_list() add it.
 * Once daily_track_owed() is called every slot a charge or a reconcile
 * changes is owed to the fleet too, as quota_track_owed() does, and
 * daily_owed_take() hands it over (absolute counts: handing one over
 * twice is harmless).
 *
 * daily_set_share(dl, hosts) with hosts > 0 (Redis unreachable, or the
 * fleet rebuilding its counters) makes daily_check() keep each counter to
 * this host's share of the headroom last seen:
 *     own - own_read + n <= (limit - others - own_read) / hosts
 * (a counter never read: own + n <= limit / hosts), so hosts that each
 * keep to theirs cannot together go over the limit; 0 goes back to the
 * fleet's usage as last read.
 */
void daily_track_owed(struct daily *dl);
bool daily_owed_pending(const struct daily *dl);
struct daily_owed_sink {
    int (*on_counter)(void *arg, const char *name, enum daily_unit unit,
                      int64_t own_used);
    int (*on_slot)(void *arg, int64_t slot_start_ms, int64_t count);
};
/* Up to max counters owed, oldest first (quota_owed_take()); how many,
 * or -1 for a bad time. */
int daily_owed_take(struct daily *dl, double now_s, size_t max,
                    const struct daily_owed_sink *sink, void *arg);
/* Owe one counter's slots again (its write failed), or every counter's
 * (the fleet lost them).  -1 for a bad name. */
int daily_owe(struct daily *dl, const char *name, enum daily_unit unit);
void daily_owe_all(struct daily *dl);
/* The fleet's usage of a counter minus this host's (>= 0), read when this
 * host's own was own_read; kept with the name's limits (a name without
 * any is not checked: nothing kept), across reloads too. */
int daily_set_others(struct daily *dl, const char *name, enum daily_unit unit,
                     int64_t others, int64_t own_read);
void daily_set_share(struct daily *dl, int64_t hosts);

/* "requests", "tokens"; and the exact parse: 0 and *unit, or -1. */
const char *daily_unit_name(enum daily_unit unit);
int daily_unit_parse(const char *s, enum daily_unit *unit);

#endif /* LLMGUARD_DAILY_H */
