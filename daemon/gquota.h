/*
 * gquota.h - multi-host mode: quotas shared by the fleet through Redis
 * (llmguardd(8), "Several hosts"; proto/REDIS.md, "Quotas").
 *
 * The quota table keeps this host's own contributions, journalled in its
 * SQLite database as in single-host mode.  Redis holds, per subject, the
 * fleet's usage per slot and each host's contribution per slot; a host
 * writes its contributions as absolute values, so a write sent twice, a
 * rebuild or a restart that writes everything again counts nothing twice.
 *
 * Soft mode: decisions stay local, against the own usage plus the
 * fleet's others as of the last read; what changed is written in batches
 * every LLMGUARD_QUOTA_FLUSH_MS, and each batch's reply refreshes the
 * others of the subjects it carried.  Hard mode: quota_reserve and a
 * permit's quota stage are one Redis script per call (check and reserve
 * over workflow and tenant; the permit is called back through the
 * request's own done); while Redis is unreachable a host may use its
 * share of the headroom last seen: (limit - usage at the last read) /
 * hosts.
 *
 * The window, the default limit and the enforcement are the fleet's
 * newest configuration's (global_fleet_quota), applied to the table as a
 * reload applies a file's; a new window moves this host's slots, and it
 * writes them all again, replacing its part in Redis.  For a few seconds
 * after the window changed Redis refuses the writes of a host still on
 * an older configuration's (their horizon would trim the fleet's usage):
 * they are owed until it follows.
 *
 * quota_set, quota_unset and quota_reset go through one script each
 * (refused with busy while Redis is unreachable); the other hosts read
 * the admin log every second and apply them.  quota_status reads the
 * fleet's usage from Redis (the local view while it is unreachable).
 */
#ifndef LLMGUARD_GQUOTA_H
#define LLMGUARD_GQUOTA_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "quota.h"

struct conn;
struct global;
struct gquota;
struct persist;

enum gquota_op { GQ_STATUS, GQ_SET, GQ_UNSET, GQ_RESET, GQ_RESERVE };

struct gquota_req;

/* The op handler's end of a request that waited: r->answered says
 * whether Redis took it.  c is live.  arg as given to gquota_start, or
 * the request's own done_arg. */
typedef void (*gquota_done_fn)(struct conn *c, struct gquota_req *r,
                               void *arg);

/* A request that waits for Redis: what the op handler needs to finish it
 * (copied; ids are C strings). */
struct gquota_req {
    enum gquota_op op;
    uint64_t id;                        /* the request's, echoed */
    enum quota_kind kind;               /* GQ_STATUS, SET, UNSET, RESET */
    char ident[QUOTA_ID_MAX + 1];
    char subject[QUOTA_SUBJECT_MAX];
    int64_t limit;                      /* GQ_SET */
    bool has_wf, has_tn;                /* GQ_RESERVE */
    char wf[QUOTA_ID_MAX + 1], tn[QUOTA_ID_MAX + 1];
    int64_t tokens;
    /* Who finishes it: done(c, r, done_arg) when set (a permit's quota
     * stage), else the handler gquota_start was given. */
    gquota_done_fn done;
    void *done_arg;
    /* The outcome, for done(): */
    bool answered;                      /* false: Redis did not answer */
    struct quota_decision d;            /* GQ_RESERVE */
};

/*
 * Global quotas over g's connection for q (its SQLite rows loaded: all of
 * them are written once, the daemon may have died between a commit and
 * a write).  NULL when g is NULL.  persist is told of changes applied
 * from other hosts; requests that wait are kept in conn_slot.
 */
struct gquota *gquota_start(struct event_base *base, const struct config *cfg,
                            struct global *g, struct quota *q,
                            struct persist *persist, int conn_slot,
                            gquota_done_fn done, void *arg);
/* Stop; before g is freed. */
void gquota_free(struct gquota *gq);
/* Close hook for conn_slot: its requests in flight are forgotten. */
void gquota_drop_conn(void *state);

/* The quota table changed: a batch is due (persist's watch hook). */
void gquota_changed(void *arg);

/* Whether the fleet's quotas are in force (multi-host mode: gq set);
 * false: quotas are this host's own. */
bool gquota_active(const struct gquota *gq);

/*
 * Send r for c to Redis; done() is called later (not when c closes
 * first).  Returns 0, or -1 when Redis is unreachable (nothing sent).  A
 * GQ_RESERVE is charged when it is sent (d filled) and taken back if
 * Redis refuses it; while this host is behind (Redis may lack usage it
 * granted on its share) it is held until the batch that writes that
 * usage lands (done() unanswered if that batch fails or takes longer
 * than LLMGUARD_REDIS_TIMEOUT_MS).
 */
int gquota_submit(struct gquota *gq, struct conn *c, const struct gquota_req *r);

/*
 * Hard mode without a Redis script (quota_reserve or a permit when
 * gquota_submit could not send it, fallback true): reserve on the share
 * of the headroom last seen (see above).  As quota_reserve() in hard mode
 * otherwise.  A fallback grant makes gquota_submit hold reservations
 * until Redis holds it (a script would check against a total without
 * it).
 */
int gquota_reserve_share(struct gquota *gq, const char *workflow,
                         const char *tenant, int64_t tokens, double now_s,
                         bool fallback, struct quota_decision *d);

/*
 * Lua for the scripts that keep, per subject, the fleet's usage per slot
 * (hash `used`) and each host's part of it (hash `by`, field
 * "<slot>@<host>", an absolute value): this module's quota write and
 * gdaily.c's daily sync (proto/REDIS.md, "Quotas: why absolute values").
 * epoch(key, rebuilding, known, candidate, ms): the data's identity in
 * key, made from candidate (and rebuilding set for ms) when missing;
 * returns 'ok', or 'rebuild' when it is not known, and the epoch.
 * set_part(used, by, host, slot, v): this host's part of slot becomes v,
 * the slot's total moves by the difference (a total at 0 is deleted).
 * live_sum(used, by, horizon): the total of the slots from horizon on;
 * the older ones are deleted, totals and parts.
 */
#define GQUOTA_PARTS_LUA \
    "local function epoch(key, rebuilding, known, candidate, ms)\n" \
    "  local ep = redis.call('GET', key)\n" \
    "  if not ep then\n" \
    "    redis.call('SET', key, candidate)\n" \
    "    redis.call('SET', rebuilding, '1', 'PX', ms)\n" \
    "    return 'rebuild', candidate\n" \
    "  end\n" \
    "  if ep ~= known then return 'rebuild', ep end\n" \
    "  return 'ok', ep\n" \
    "end\n" \
    "local function set_part(used, by, host, slot, v)\n" \
    "  local f = slot .. '@' .. host\n" \
    "  local old = tonumber(redis.call('HGET', by, f) or '0')\n" \
    "  if v == old then return end\n" \
    "  if v == 0 then redis.call('HDEL', by, f)\n" \
    "  else redis.call('HSET', by, f, v) end\n" \
    "  if redis.call('HINCRBY', used, slot, v - old) <= 0 then\n" \
    "    redis.call('HDEL', used, slot) end\n" \
    "end\n" \
    "local function live_sum(used, by, horizon)\n" \
    "  local sum, old = 0, false\n" \
    "  local all = redis.call('HGETALL', used)\n" \
    "  for i = 1, #all, 2 do\n" \
    "    if tonumber(all[i]) < horizon then\n" \
    "      redis.call('HDEL', used, all[i]); old = true\n" \
    "    else sum = sum + tonumber(all[i + 1]) end\n" \
    "  end\n" \
    "  if old then\n" \
    "    local b = redis.call('HGETALL', by)\n" \
    "    for i = 1, #b, 2 do\n" \
    "      local s = tonumber(string.match(b[i], '^(-?%d+)@'))\n" \
    "      if s and s < horizon then redis.call('HDEL', by, b[i]) end\n" \
    "    end\n" \
    "  end\n" \
    "  return sum\n" \
    "end\n"

#endif
