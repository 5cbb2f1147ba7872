/*
 * gquota.c - quotas shared by the fleet through Redis; see gquota.h, and
 * proto/REDIS.md ("Quotas") for the keys and the scripts.
 *
 * Why absolute values: Redis holds each host's contribution per slot and
 * the fleet's total per slot, and a write sets this host's field to what
 * it holds, adding the difference to the total in the same script.  A
 * write that timed out but ran, one sent twice, every write again after
 * Redis came back empty: each leaves Redis where one write would, so no
 * write needs to be acknowledged exactly once and nothing is ever counted
 * twice.  The local SQLite database stays the journal: what a crash
 * keeps there is written again at the next start.
 *
 * One batch is in flight at a time, at most BATCH_SUBJECTS subjects (a
 * million-id fill goes as many small scripts, one after the other, and
 * the loop serves requests between them).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "global.h"
#include "gquota.h"
#include "log.h"
#include "persist.h"
#include "redis.h"
#include "server.h"
#include "store.h"

#define BATCH_SUBJECTS 100
#define BATCH_ARGS 4000
#define POLL_S 1.0
#define POLL_MAX "1000"
#define RETRY_S 1.0
#define DOWN_RETRY_S 0.1
#define KEY_MAX (2 * (CONFIG_NAME_MAX + QUOTA_SUBJECT_MAX) + 64)
#define EPOCH_HEX 8             /* bytes: 16 hex digits */
/* How long after Redis lost the quota data every host keeps hard mode to
 * its share: each live host learns of it within a poll and writes all it
 * holds with its next batch. */
#define REBUILD_MS "3000"

/*
 * The batch write.  KEYS epoch, slot size, then used and by of each
 * subject; ARGV host, epoch known, candidate, slot_ms, horizon_ms,
 * ttl_ms, seq, and the load time and host of the configuration the
 * window is from, then per subject its count of slots, whether they are
 * all of it (1: this host's fields of the subject are replaced, 0:
 * patched), and the (slot, tokens) pairs.  The by hash keeps the host's
 * last seq (field seq@<host>): a write older than it (sent on a
 * connection since dropped, run late) changes nothing.
 *
 * The slot size key is "<slot_ms> <loaded_at_ms> <host> <changed_ms>":
 * the window of the newest configuration written with, and when (Redis'
 * clock) the size last changed.  For WINDOW_GUARD_MS after a change a
 * host with another size from an older configuration is refused (it has
 * not followed the newer one yet, and its horizon would trim the fleet's
 * usage to its window); later it is the only one writing with that size
 * and takes it over.
 */
#define WINDOW_GUARD_MS "10000"
static const char write_lua[] = GQUOTA_PARTS_LUA
    "local status, ep = epoch(KEYS[1], KEYS[1] .. ':rebuilding', ARGV[2],\n"
    "                         ARGV[3], " REBUILD_MS ")\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local w = redis.call('GET', KEYS[2])\n"
    "local ws, wat, wh, wch = string.match(w or '',\n"
    "                                      '^(%d+) (%d+) (%S+) (%d+)$')\n"
    "if not ws then ws, wat, wh, wch = w, '0', '', '0' end\n"
    "local at, from = tonumber(ARGV[8]), ARGV[9]\n"
    "local newer = not w or at > tonumber(wat) or\n"
    "              (at == tonumber(wat) and from > wh)\n"
    "if ws ~= ARGV[4] then\n"
    "  if not newer and now - tonumber(wch) < " WINDOW_GUARD_MS " then\n"
    "    return {'window', ws} end\n"
    "  redis.call('SET', KEYS[2],\n"
    "             ARGV[4] .. ' ' .. ARGV[8] .. ' ' .. from .. ' ' .. now)\n"
    "elseif newer then\n"
    "  redis.call('SET', KEYS[2],\n"
    "             ARGV[4] .. ' ' .. ARGV[8] .. ' ' .. from .. ' ' .. wch)\n"
    "end\n"
    "local host, horizon = ARGV[1], tonumber(ARGV[5])\n"
    "local tail = '@' .. host\n"
    "local out, a, sf = {status, ep}, 10, 'seq@' .. ARGV[1]\n"
    "for k = 3, #KEYS, 2 do\n"
    "  local used, by = KEYS[k], KEYS[k + 1]\n"
    "  local n, whole = tonumber(ARGV[a]), ARGV[a + 1] == '1'\n"
    "  local last = tonumber(redis.call('HGET', by, sf) or '0')\n"
    "  if tonumber(ARGV[7]) < last then n, whole = 0, false\n"
    "  else redis.call('HSET', by, sf, ARGV[7]) end\n"
    "  if whole then\n"
    "    local b = redis.call('HGETALL', by)\n"
    "    for i = 1, #b, 2 do\n"
    "      local slot = string.sub(b[i], 1, #b[i] - #tail)\n"
    "      if string.sub(b[i], -#tail) == tail and\n"
    "         string.match(slot, '^-?%d+$') then\n"
    "        redis.call('HDEL', by, b[i])\n"
    "        if redis.call('HINCRBY', used, slot, -tonumber(b[i + 1])) <= 0\n"
    "        then redis.call('HDEL', used, slot) end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for i = 1, n do\n"
    "    local slot, v = ARGV[a + 2 * i], tonumber(ARGV[a + 1 + 2 * i])\n"
    "    set_part(used, by, host, slot, v)\n"
    "  end\n"
    "  a = a + 2 + 2 * tonumber(ARGV[a])\n"
    "  local sum = live_sum(used, by, horizon)\n"
    "  redis.call('PEXPIRE', used, ARGV[6])\n"
    "  redis.call('PEXPIRE', by, ARGV[6])\n"
    "  table.insert(out, tostring(sum))\n"
    "end\n"
    "return out\n";

/* One subject's usage: KEYS used, by; ARGV horizon_ms, host.  Returns
 * the fleet's usage in the window and this host's part of it. */
static const char read_lua[] =
    "local horizon, sum, own = tonumber(ARGV[1]), 0, 0\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #all, 2 do\n"
    "  if tonumber(all[i]) >= horizon then sum = sum + tonumber(all[i + 1])\n"
    "  end\n"
    "end\n"
    "local by = redis.call('HGETALL', KEYS[2])\n"
    "local tail = '@' .. ARGV[2]\n"
    "for i = 1, #by, 2 do\n"
    "  local s = tonumber(string.match(by[i], '^(-?%d+)@'))\n"
    "  if s and s >= horizon and string.sub(by[i], -#tail) == tail and\n"
    "     string.sub(by[i], 1, #by[i] - #tail) == tostring(s) then\n"
    "    own = own + tonumber(by[i + 1]) end\n"
    "end\n"
    "return {tostring(sum), tostring(own)}\n";

/*
 * Hard mode's check and reserve: KEYS limits, then used and by of each
 * subject (one or two); ARGV host, horizon_ms, slot, tokens, ttl_ms, seq
 * (of this host's last batch), then each subject and its limit here (used
 * when the fleet has no override for it).  A batch built after it (one
 * with a later seq) ran first only if this one runs late on a dropped
 * connection: that batch holds what this host made of it, so it adds
 * nothing then.  Refuses, changing nothing, when a subject's fleet usage with
 * the tokens would exceed its limit; else adds them to this host's field
 * and the slot's total.  An increment, not an absolute value: a batch
 * this host sent before it holds its own value without these tokens, one
 * sent after it holds them (they are charged here when it is sent).
 */
static const char reserve_lua[] =
    "if redis.call('EXISTS', string.gsub(KEYS[1], 'limits$', 'epoch') ..\n"
    "              ':rebuilding') == 1 then return {'rebuilding'} end\n"
    "local horizon, tokens = tonumber(ARGV[2]), tonumber(ARGV[4])\n"
    "local f, after, limit = ARGV[3] .. '@' .. ARGV[1], {}, {}\n"
    "for k = 1, (#KEYS - 1) / 2 do\n"
    "  local sum = 0\n"
    "  local all = redis.call('HGETALL', KEYS[2 * k])\n"
    "  for i = 1, #all, 2 do\n"
    "    if tonumber(all[i]) >= horizon then\n"
    "      sum = sum + tonumber(all[i + 1]) end\n"
    "  end\n"
    "  limit[k] = tonumber(redis.call('HGET', KEYS[1], ARGV[5 + 2 * k]) or\n"
    "                      ARGV[6 + 2 * k])\n"
    "  after[k] = sum + tokens\n"
    "  if tokens > 0 and after[k] > limit[k] then\n"
    "    return {'over', tostring(k), tostring(sum), tostring(limit[k])} end\n"
    "end\n"
    "for k = 1, (#KEYS - 1) / 2 do\n"
    "  local last = tonumber(redis.call('HGET', KEYS[2 * k + 1],\n"
    "                                   'seq@' .. ARGV[1]) or '0')\n"
    "  if tokens > 0 and tonumber(ARGV[6]) >= last then\n"
    "    redis.call('HINCRBY', KEYS[2 * k + 1], f, tokens)\n"
    "    redis.call('HINCRBY', KEYS[2 * k], ARGV[3], tokens)\n"
    "  end\n"
    "  redis.call('PEXPIRE', KEYS[2 * k], ARGV[5])\n"
    "  redis.call('PEXPIRE', KEYS[2 * k + 1], ARGV[5])\n"
    "end\n"
    "return {'ok', tostring(after[1]), tostring(after[2] or 0),\n"
    "        tostring(limit[1]), tostring(limit[2] or 0)}\n";

/*
 * An admin change: KEYS limits, log, ops, seq, used, by; ARGV op (set,
 * unset, reset), subject, limit, host, instance, window_ms.  The change
 * gets a time that only grows (Redis' clock, or one more than the last),
 * goes to the log under "<subject> limit" or "<subject> reset", and the
 * log forgets what is older than the window.
 */
static const char admin_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ms = math.max(now, (tonumber(redis.call('GET', KEYS[4])) or 0)\n"
    "                         + 1)\n"
    "redis.call('SET', KEYS[4], ms)\n"
    "local what = 'limit'\n"
    "if ARGV[1] == 'set' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])\n"
    "elseif ARGV[1] == 'unset' then redis.call('HDEL', KEYS[1], ARGV[2])\n"
    "else redis.call('DEL', KEYS[5], KEYS[6]); what = 'reset' end\n"
    "local m = ARGV[2] .. ' ' .. what\n"
    "redis.call('ZADD', KEYS[2], ms, m)\n"
    "redis.call('HSET', KEYS[3], m, ms .. ' ' .. ARGV[1] .. ' ' .. ARGV[3] ..\n"
    "           ' ' .. ARGV[5] .. ' ' .. ARGV[4])\n"
    "local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf',\n"
    "                        '(' .. (ms - tonumber(ARGV[6])))\n"
    "for i = 1, #gone do redis.call('HDEL', KEYS[3], gone[i]) end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf',\n"
    "           '(' .. (ms - tonumber(ARGV[6])))\n"
    "return tostring(ms)\n";

/*
 * The admin log since a cursor: KEYS limits, log, ops, epoch, rebuilding;
 * ARGV cursor, max, candidate epoch.  Returns the new cursor, the epoch
 * (made from the candidate when missing: Redis lost the quota data, and
 * the fleet is rebuilding for REBUILD_MS), then per change its member,
 * its entry ("<ms> <op> <limit> <instance> <host>") and the subject's
 * override now ("" for none); with cursor 0 (a host new to this Redis)
 * also every override.  So a host with nothing to write learns of a new
 * epoch within a second too.
 */
static const char poll_lua[] =
    "local ep = redis.call('GET', KEYS[4])\n"
    "if not ep then\n"
    "  ep = ARGV[3]\n"
    "  redis.call('SET', KEYS[4], ep)\n"
    "  redis.call('SET', KEYS[5], '1', 'PX', " REBUILD_MS ")\n"
    "end\n"
    "local out, cur, seen = {ARGV[1], ep}, ARGV[1], {}\n"
    "local ms = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. cur, '+inf',\n"
    "                      'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))\n"
    "for i = 1, #ms, 2 do\n"
    "  local subj = string.match(ms[i], '^(.*) %a+$')\n"
    "  seen[subj] = true\n"
    "  table.insert(out, ms[i])\n"
    "  table.insert(out, redis.call('HGET', KEYS[3], ms[i]) or '')\n"
    "  table.insert(out, redis.call('HGET', KEYS[1], subj) or '')\n"
    "  out[1] = ms[i + 1]\n"
    "end\n"
    "if cur == '0' then\n"
    "  local all = redis.call('HGETALL', KEYS[1])\n"
    "  for i = 1, #all, 2 do\n"
    "    if not seen[all[i]] then\n"
    "      table.insert(out, all[i] .. ' limit')\n"
    "      table.insert(out, '0 set ' .. all[i + 1] .. ' - -')\n"
    "      table.insert(out, all[i + 1])\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* A request waiting for Redis. */
struct gcall {
    struct gquota *gq;
    struct conn *c;             /* NULL once it closed */
    struct gconn *gc;
    TAILQ_ENTRY(gcall) link;
    TAILQ_ENTRY(gcall) held_link;       /* in gquota.held, while held */
    struct gquota_req r;
};
TAILQ_HEAD(gcall_list, gcall);

/* A connection's requests in flight (its slot). */
struct gconn {
    struct gcall_list calls;
};

struct batch {
    struct gquota *gq;
    struct redis_args keys, args;
    size_t nsub;
    size_t count_at;            /* the open subject's count in args */
    int64_t count;
    bool drained;               /* it took all that was owed */
    uint64_t seq;               /* gquota.bseq when it was built */
    char subject[BATCH_SUBJECTS][QUOTA_SUBJECT_MAX];
    int64_t own[BATCH_SUBJECTS];
};

struct gquota {
    struct event_base *base;
    const struct config *cfg;
    struct global *g;
    struct redis *redis;
    struct quota *q;
    struct persist *persist;
    gquota_done_fn done;
    void *arg;
    int slot;
    int s_write, s_read, s_reserve, s_admin, s_poll;
    struct event *flush_ev, *poll_ev;
    struct event *held_ev;      /* the longest the held ones wait */
    struct batch *inflight;
    bool polling, refused, was_up;
    bool window_refused;        /* logged: the fleet's slots are a newer
                                   configuration's */
    /* The quota settings in force: the fleet's newest configuration's
     * (global_fleet_quota), applied to q as a reload would. */
    struct global_quota in_force;
    bool behind;                /* usage Redis may lack: hard mode keeps
                                   to its share until it is written */
    uint64_t bseq;              /* times it fell behind */
    struct gcall_list held;     /* reservations that wait, while behind
                                   and Redis is reachable, for the batch
                                   that catches up */
    uint64_t wseq;              /* the last batch's seq: only grows, also
                                   across restarts (it starts at the
                                   wall clock in us) */
    char epoch[2 * EPOCH_HEX + 1];      /* the one last written into */
    char candidate[2 * EPOCH_HEX + 1];  /* if Redis has none */
    char instance[2 * EPOCH_HEX + 1];
    char cursor[32];                    /* the admin log's, "0": none */
    bool cursor_dirty;
    unsigned pending;
    bool dead;
    char key_epoch[KEY_MAX], key_window[KEY_MAX], key_limits[KEY_MAX];
    char key_log[KEY_MAX], key_ops[KEY_MAX], key_seq[KEY_MAX];
    char key_rebuilding[KEY_MAX];
};

/* ---- small helpers ------------------------------------------------------ */

static void
key_of(const struct gquota *gq, char *buf, const char *what,
       const char *subject)
{
    snprintf(buf, KEY_MAX, "%s{quota}:%s:%s", gq->cfg->redis_prefix, what,
             subject);
}

static int64_t
slot_ms(const struct gquota *gq)
{
    return quota_slot_ms(gq->q);
}

/* The window in force, in ms. */
static int64_t
window_ms(const struct gquota *gq)
{
    return llround(quota_window_s(gq->q) * 1e3);
}

/* How long a usage key outlives its last write: the window and a slot. */
static int64_t
ttl_ms(const struct gquota *gq)
{
    return window_ms(gq) + 2 * slot_ms(gq);
}

/* Whether Redis is reachable now. */
static bool
gquota_connected(const struct gquota *gq)
{
    struct global_status st;

    if (gq == NULL)
        return false;
    global_status(gq->g, &st);
    return st.connected;
}

bool
gquota_active(const struct gquota *gq)
{
    return gq != NULL;
}

/* An exchange answered or failed: false when gq is gone meanwhile. */
static bool
done_one(struct gquota *gq)
{
    gq->pending--;
    if (!gq->dead)
        return true;
    if (gq->pending == 0)
        free(gq);
    return false;
}

static bool
reply_strings(const redisReply *r, size_t min)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < min)
        return false;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return false;
    return true;
}

/* Redis answered a script with something else: logged once until a
 * script works again. */
static void
refused(struct gquota *gq, const char *what, const redisReply *r)
{
    if (gq->refused)
        return;
    gq->refused = true;
    log_warn("redis: cannot %s the quotas: %.200s", what,
             r->type == REDIS_REPLY_ERROR ? r->str : "an unexpected reply");
}

/* ---- the local database: the admin log's cursor ------------------------- */

/* The cursor an earlier run kept, "0" when none. */
static void
recall_cursor(struct gquota *gq)
{
    int64_t c = 0;

    store_value_get(gq->cfg->db_path, "redis_quota", "cursor", &c);
    snprintf(gq->cursor, sizeof(gq->cursor), "%lld", (long long)c);
}

/* Keep the cursor (after an admin change applied, so rare): a table of
 * its own, on a connection of its own, as global.c keeps the hosts; busy,
 * it is tried again at the next poll. */
static void
remember_cursor(struct gquota *gq)
{
    char err[256];
    int rc = store_value_put(gq->cfg->db_path, "redis_quota", "cursor",
                             strtoll(gq->cursor, NULL, 10), err, sizeof(err));

    if (rc == 0)
        gq->cursor_dirty = false;
    else if (rc < 0)
        log_warn("redis: cannot keep the quota admin cursor in %s: %s",
                 gq->cfg->db_path, err);
}

/* Redis may lack some of this host's usage (a write failed, a grant went
 * around it, it lost its data). */
static void
fall_behind(struct gquota *gq)
{
    gq->behind = true;
    gq->bseq++;
}

/* ---- batches ------------------------------------------------------------ */

static void schedule(struct gquota *gq, double delay_s);
static void release_held(struct gquota *gq, bool send);

/* Nothing owed and no batch in flight: Redis holds all this host has. */
static void
caught_up(struct gquota *gq)
{
    if (gq->behind && gq->inflight == NULL && !quota_owed_pending(gq->q))
        gq->behind = false;
    if (!gq->behind)
        release_held(gq, true);
}

/* Close the open subject: its count of slots goes in its place. */
static void
batch_close_subject(struct batch *b)
{
    if (b->nsub == 0)
        return;
    (void)redis_args_setf(&b->args, b->count_at, "%lld",
                          (long long)b->count);
}

static int
batch_subject(void *arg, const char *subject, int64_t own, bool whole)
{
    struct batch *b = arg;
    char key[KEY_MAX];

    if (b->nsub == BATCH_SUBJECTS || b->args.n > BATCH_ARGS ||
        b->keys.oom || b->args.oom)
        return -1;
    batch_close_subject(b);
    key_of(b->gq, key, "used", subject);
    redis_args_addf(&b->keys, "%s", key);
    key_of(b->gq, key, "by", subject);
    redis_args_addf(&b->keys, "%s", key);
    b->count_at = b->args.n;
    b->count = 0;
    redis_args_addf(&b->args, "0");
    redis_args_addf(&b->args, "%d", whole ? 1 : 0);
    snprintf(b->subject[b->nsub], QUOTA_SUBJECT_MAX, "%s", subject);
    b->own[b->nsub++] = own;
    return b->keys.oom || b->args.oom ? -1 : 0;
}

static int
batch_slot(void *arg, int64_t start_ms, int64_t tokens)
{
    struct batch *b = arg;

    b->count++;
    redis_args_addf(&b->args, "%lld", (long long)start_ms);
    return redis_args_addf(&b->args, "%lld", (long long)tokens);
}

static void
batch_free(struct batch *b)
{
    if (b == NULL)
        return;
    redis_args_free(&b->keys);
    redis_args_free(&b->args);
    free(b);
}

/* What b carried is owed again (its write failed). */
static void
batch_reowe(struct gquota *gq, struct batch *b)
{
    for (size_t i = 0; i < b->nsub; i++)
        quota_owe_subject(gq->q, b->subject[i]);
}

/* The fleet's usage of b's subjects, from a write's reply. */
static void
batch_apply(struct gquota *gq, struct batch *b, const redisReply *r)
{
    for (size_t i = 0; i < b->nsub && 2 + i < r->elements; i++) {
        int64_t sum = strtoll(r->element[2 + i]->str, NULL, 10);
        int64_t others = sum - b->own[i];

        quota_set_others(gq->q, b->subject[i], others < 0 ? 0 : others,
                         b->own[i]);
    }
}

/* The epoch the write found: a new one means Redis lost what this host
 * wrote before (restarted empty, flushed, a replica without it). */
static void
epoch_seen(struct gquota *gq, const char *ep, bool rebuild)
{
    if (rebuild && gq->epoch[0] != '\0') {
        log_warn("redis: the fleet's quota data is new (epoch %s, was %s): "
                 "writing this host's usage again", ep, gq->epoch);
        quota_owe_all(gq->q);
        fall_behind(gq);
    }
    snprintf(gq->epoch, sizeof(gq->epoch), "%s", ep);
    if (strcmp(ep, gq->candidate) == 0)
        redis_random_hex(gq->candidate, EPOCH_HEX);
}

static void
batch_epoch(struct gquota *gq, const redisReply *r)
{
    epoch_seen(gq, r->element[1]->str,
               strcmp(r->element[0]->str, "rebuild") == 0);
}

static void
write_reply(const redisReply *r, const char *err, void *arg)
{
    struct batch *b = arg;
    struct gquota *gq = b->gq;

    if (!done_one(gq)) {
        batch_free(b);
        return;
    }
    gq->inflight = NULL;
    if (r == NULL || !reply_strings(r, 2)) {
        fall_behind(gq);
        batch_reowe(gq, b);
        if (r != NULL)
            refused(gq, "write", r);
        batch_free(b);
        release_held(gq, false);
        schedule(gq, RETRY_S);  /* or at once when Redis is back */
        return;
    }
    if (strcmp(r->element[0]->str, "window") == 0) {
        /* A newer configuration's window, written by a host that already
         * follows it: this one follows it within a heartbeat, then
         * writes all it holds in the new slots.  Meanwhile its usage is
         * owed, and hard mode keeps to its share. */
        if (!gq->window_refused)
            log_info("redis: the fleet's quota slots are %s ms, a newer "
                     "configuration's than this host's (%lld ms): writing "
                     "once it follows it", r->element[1]->str,
                     (long long)slot_ms(gq));
        gq->window_refused = true;
        fall_behind(gq);
        batch_reowe(gq, b);
        batch_free(b);
        release_held(gq, false);
        schedule(gq, RETRY_S);
        return;
    }
    gq->refused = false;
    gq->window_refused = false;
    /* Redis holds all this host had when b was built, and nothing went
     * around it since. */
    bool more = !b->drained;
    if (b->drained && b->seq == gq->bseq)
        gq->behind = false;
    batch_epoch(gq, r);
    batch_apply(gq, b, r);
    batch_free(b);
    caught_up(gq);
    if (quota_owed_pending(gq->q))
        schedule(gq, more || gq->behind ? 0 :
                     gq->cfg->quota_flush_ms / 1e3);
}

/* The header of a write: keys epoch, slot size; the fixed ARGV. */
static void
batch_header(struct gquota *gq, struct batch *b, double now)
{
    redis_args_addf(&b->keys, "%s", gq->key_epoch);
    redis_args_addf(&b->keys, "%s", gq->key_window);
    redis_args_addf(&b->args, "%s", gq->cfg->host_id);
    redis_args_addf(&b->args, "%s", gq->epoch);
    redis_args_addf(&b->args, "%s", gq->candidate);
    redis_args_addf(&b->args, "%lld", (long long)slot_ms(gq));
    redis_args_addf(&b->args, "%lld", (long long)quota_horizon_ms(gq->q, now));
    redis_args_addf(&b->args, "%lld", (long long)ttl_ms(gq));
    redis_args_addf(&b->args, "%llu", (unsigned long long)++gq->wseq);
    redis_args_addf(&b->args, "%lld", (long long)gq->in_force.loaded_at_ms);
    redis_args_addf(&b->args, "%s", gq->in_force.host);
}

/* Send one batch of what is owed, if Redis is up and none is in flight. */
static void
write_batch(struct gquota *gq)
{
    static const struct quota_owed_sink sink = { batch_subject, batch_slot };
    double now = clock_wall();
    struct batch *b;
    const char **argv;
    size_t n;

    if (gq->inflight != NULL || !quota_owed_pending(gq->q))
        return;
    if (!gquota_connected(gq)) {
        /* Looked at again soon: written as soon as Redis is back. */
        release_held(gq, false);
        schedule(gq, DOWN_RETRY_S);
        return;
    }
    if ((b = calloc(1, sizeof(*b))) == NULL)
        goto oom;
    b->gq = gq;
    batch_header(gq, b, now);
    if (quota_owed_take(gq->q, now, BATCH_SUBJECTS, &sink, b) < 0 ||
        (batch_close_subject(b), b->keys.oom || b->args.oom))
        goto oom;
    b->drained = !quota_owed_pending(gq->q);
    b->seq = gq->bseq;
    n = b->keys.n + b->args.n;
    if ((argv = malloc(n * sizeof(*argv))) == NULL)
        goto oom;
    size_t *lens = malloc(n * sizeof(*lens));
    for (size_t i = 0; lens != NULL && i < n; i++) {
        bool k = i < b->keys.n;
        argv[i] = k ? b->keys.v[i] : b->args.v[i - b->keys.n];
        lens[i] = k ? b->keys.len[i] : b->args.len[i - b->keys.n];
    }
    int rc = lens == NULL ? -1 :
             redis_eval(gq->redis, gq->s_write, (int)b->keys.n, (int)n, argv,
                        lens, write_reply, b);
    free(argv);
    free(lens);
    if (rc == 0) {
        gq->pending++;
        gq->inflight = b;
        return;
    }
    batch_reowe(gq, b);     /* Redis went away meanwhile */
    batch_free(b);
    return;
oom:
    if (b != NULL)
        batch_reowe(gq, b);
    batch_free(b);
    log_error("%s: out of memory: the quotas go to Redis later", __func__);
    schedule(gq, RETRY_S);
}

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    write_batch(arg);
}

static void
schedule(struct gquota *gq, double delay_s)
{
    struct timeval tv = { (time_t)delay_s,
                          (suseconds_t)((delay_s - floor(delay_s)) * 1e6) };

    if (!evtimer_pending(gq->flush_ev, NULL))
        evtimer_add(gq->flush_ev, &tv);
}

void
gquota_changed(void *arg)
{
    struct gquota *gq = arg;

    if (gq != NULL && gq->inflight == NULL && quota_owed_pending(gq->q))
        schedule(gq, gq->cfg->quota_flush_ms / 1e3);
}

/* ---- the quota settings: the fleet's ----------------------------------- */

/* The settings s as "QUOTA_WINDOW_DAYS 2 (here 1), ...", added to out:
 * with here, only those that differ from this host's file, and nothing
 * when none does. */
static void
settings_text(const struct gquota *gq, const struct global_quota *s,
              bool here, struct evbuffer *out)
{
    const struct config *c = gq->cfg;

    if (!here || s->window_days != c->quota_window_days)
        evbuffer_add_printf(out, "QUOTA_WINDOW_DAYS %.15g", s->window_days);
    if (here && s->window_days != c->quota_window_days)
        evbuffer_add_printf(out, " (here %.15g)", c->quota_window_days);
    if (!here || s->default_tokens != c->default_quota_tokens)
        evbuffer_add_printf(out, "%sDEFAULT_DAILY_QUOTA_TOKENS %lld",
                            evbuffer_get_length(out) > 0 ? ", " : "",
                            (long long)s->default_tokens);
    if (here && s->default_tokens != c->default_quota_tokens)
        evbuffer_add_printf(out, " (here %lld)",
                            (long long)c->default_quota_tokens);
    if (!here || s->enforcement != c->quota_enforcement)
        evbuffer_add_printf(out, "%sQUOTA_ENFORCEMENT %s",
                            evbuffer_get_length(out) > 0 ? ", " : "",
                            config_enforcement_name(s->enforcement));
    if (here && s->enforcement != c->quota_enforcement)
        evbuffer_add_printf(out, " (here %s)",
                            config_enforcement_name(c->quota_enforcement));
}

/* Say once per change whose quota settings apply now. */
static void
report_settings(const struct gquota *gq, const struct global_quota *s)
{
    struct evbuffer *all = evbuffer_new(), *diff = evbuffer_new();

    if (all == NULL || diff == NULL) {
        log_error("%s: out of memory", __func__);
        goto done;
    }
    settings_text(gq, s, false, all);
    settings_text(gq, s, true, diff);
    if (evbuffer_get_length(diff) > 0)
        log_warn("redis: quotas follow host %s's configuration: %.*s",
                 s->host, (int)evbuffer_get_length(diff),
                 (const char *)evbuffer_pullup(diff, -1));
    else if (strcmp(s->host, gq->cfg->host_id) == 0)
        log_info("redis: quotas by this host's configuration: %.*s",
                 (int)evbuffer_get_length(all),
                 (const char *)evbuffer_pullup(all, -1));
    else
        log_info("redis: quotas by host %s's configuration, the same as "
                 "this host's file: %.*s", s->host,
                 (int)evbuffer_get_length(all),
                 (const char *)evbuffer_pullup(all, -1));
done:
    if (all != NULL)
        evbuffer_free(all);
    if (diff != NULL)
        evbuffer_free(diff);
}

/*
 * global.c's hook: the newest configuration may have changed.  Its quota
 * window, default limit and enforcement are applied to the table as a
 * reload applies a file's (reload.c: quota_reconfigure, then the store
 * is told, as a new window moves the slots).  A new slot size owes every
 * subject to the fleet as a whole, in the new slots; until that is
 * written (and what soft mode had not written yet, when it turns hard)
 * hard mode waits for it, or keeps to its share, as after a start.
 */
static void
follow(void *arg)
{
    struct gquota *gq = arg;
    struct global_quota s;
    int64_t old_slot = slot_ms(gq);
    bool was_hard = quota_hard(gq->q);

    global_fleet_quota(gq->g, &s);
    gq->in_force = s;
    if (quota_window_s(gq->q) == s.window_days * 86400.0 &&
        quota_default_limit(gq->q) == s.default_tokens &&
        quota_hard(gq->q) == (s.enforcement == ENFORCE_HARD))
        return;
    if (quota_reconfigure(gq->q, s.window_days * 86400.0, s.default_tokens,
                          s.enforcement == ENFORCE_HARD) < 0) {
        log_error("redis: host %s's quota settings cannot apply "
                  "(QUOTA_WINDOW_DAYS %g, DEFAULT_DAILY_QUOTA_TOKENS %lld): "
                  "the ones in force stay", s.host, s.window_days,
                  (long long)s.default_tokens);
        return;
    }
    report_settings(gq, &s);
    /* Hard mode's scripts check against Redis: first all this host has
     * acknowledged, in the slots it has now. */
    if (slot_ms(gq) != old_slot || (quota_hard(gq->q) && !was_hard))
        fall_behind(gq);
    persist_changed(gq->persist);
    gquota_changed(gq);
}

/* ---- the admin log ------------------------------------------------------ */

/* One change another host made: "<ms> <op> <limit> <instance> <host>",
 * and the subject's override now ("" for none). */
static bool
apply_admin(struct gquota *gq, const char *member, const char *entry,
            const char *limit_now)
{
    char subject[QUOTA_SUBJECT_MAX], op[8], inst[sizeof(gq->instance)];
    char host[CONFIG_NAME_MAX];
    const char *sp = strrchr(member, ' ');
    long long ms, limit;
    size_t len = sp != NULL ? (size_t)(sp - member) : 0;

    if (len == 0 || len >= sizeof(subject) ||
        sscanf(entry, "%lld %7s %lld %16s %63s", &ms, op, &limit, inst,
               host) != 5 || strcmp(inst, gq->instance) == 0)
        return false;       /* not one of ours to read, or our own */
    memcpy(subject, member, len);
    subject[len] = '\0';
    const char *colon = strchr(subject, ':');
    enum quota_kind kind = strncmp(subject, "tenant:", 7) == 0 ?
                           QUOTA_TENANT : QUOTA_WORKFLOW;
    if (colon == NULL)
        return false;
    if (strcmp(sp + 1, "reset") == 0) {
        if (quota_reset(gq->q, kind, colon + 1) < 0)
            return false;
        log_info("host %s reset the usage of %s", host, subject);
        return true;
    }
    if (limit_now[0] != '\0') {
        if (quota_set(gq->q, kind, colon + 1, strtoll(limit_now, NULL, 10))
            < 0)
            return false;
        log_info("host %s set the quota of %s to %s tokens",
                 strcmp(host, "-") == 0 ? "(the fleet)" : host, subject,
                 limit_now);
    } else {
        if (quota_unset(gq->q, kind, colon + 1) < 0)
            return false;
        log_info("host %s dropped the quota override of %s", host, subject);
    }
    return true;
}

static void
poll_reply(const redisReply *r, const char *err, void *arg)
{
    struct gquota *gq = arg;
    bool changed = false;

    (void)err;
    if (!done_one(gq))
        return;
    gq->polling = false;
    if (r == NULL)
        return;
    if (!reply_strings(r, 2) || (r->elements - 2) % 3 != 0) {
        refused(gq, "read the admin log of", r);
        return;
    }
    if (strcmp(r->element[1]->str, gq->epoch) != 0) {
        epoch_seen(gq, r->element[1]->str, true);
        gquota_changed(gq);
    }
    for (size_t i = 2; i + 2 < r->elements; i += 3)
        changed |= apply_admin(gq, r->element[i]->str,
                               r->element[i + 1]->str,
                               r->element[i + 2]->str);
    if (strcmp(gq->cursor, r->element[0]->str) != 0) {
        snprintf(gq->cursor, sizeof(gq->cursor), "%s", r->element[0]->str);
        gq->cursor_dirty = true;
    }
    if (gq->cursor_dirty)
        remember_cursor(gq);
    if (changed) {
        persist_changed(gq->persist);
        gquota_changed(gq);
    }
}

/* Every second: Redis back? Write what is owed; read the admin log. */
static void
poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gquota *gq = arg;
    bool up = gquota_connected(gq);
    const char *argv[] = { gq->key_limits, gq->key_log, gq->key_ops,
                           gq->key_epoch, gq->key_rebuilding, gq->cursor,
                           POLL_MAX, gq->candidate };

    (void)fd;
    (void)what;
    if (up && !gq->was_up)
        write_batch(gq);
    gq->was_up = up;
    if (!up || gq->polling)
        return;
    if (redis_eval(gq->redis, gq->s_poll, 5, 8, argv, NULL, poll_reply,
                   gq) == 0) {
        gq->pending++;
        gq->polling = true;
    }
}

/* ---- requests that wait for Redis --------------------------------------- */

/* c's list of calls, made if needed. */
static struct gconn *
gconn_of(struct gquota *gq, struct conn *c)
{
    void **slot = conn_slot(c, gq->slot);
    struct gconn *gc = *slot;

    if (gc == NULL && (gc = calloc(1, sizeof(*gc))) != NULL) {
        TAILQ_INIT(&gc->calls);
        *slot = gc;
    }
    return gc;
}

void
gquota_drop_conn(void *state)
{
    struct gconn *gc = state;
    struct gcall *k;

    /* The calls stay until Redis answers them; nobody is told. */
    while ((k = TAILQ_FIRST(&gc->calls)) != NULL) {
        TAILQ_REMOVE(&gc->calls, k, link);
        k->c = NULL;
        k->gc = NULL;
    }
    free(gc);
}

/* Takes k off its connection: the connection it answers, or NULL. */
static struct conn *
call_detach(struct gcall *k)
{
    if (k->gc != NULL)
        TAILQ_REMOVE(&k->gc->calls, k, link);
    return k->c;
}

/* Hand k's outcome to its own done, else the op handler, unless its
 * connection is gone. */
static void
call_finish(struct gcall *k)
{
    struct conn *c = call_detach(k);

    if (c != NULL && k->r.done != NULL)
        k->r.done(c, &k->r, k->r.done_arg);
    else if (c != NULL)
        k->gq->done(c, &k->r, k->gq->arg);
    free(k);
}

/* quota_status: the fleet's usage of one subject, this host's part. */
static void
status_reply(const redisReply *r, const char *err, void *arg)
{
    struct gcall *k = arg;
    struct gquota *gq = k->gq;

    (void)err;
    if (!done_one(gq)) {
        free(k);
        return;
    }
    if (reply_strings(r, 2)) {
        int64_t sum = strtoll(r->element[0]->str, NULL, 10);
        int64_t own = strtoll(r->element[1]->str, NULL, 10);

        quota_set_others(gq->q, k->r.subject, sum > own ? sum - own : 0,
                         own < 0 ? 0 : own);
        k->r.answered = true;
    } else if (r != NULL) {
        refused(gq, "read", r);
    }
    call_finish(k);
}

static int
send_status(struct gquota *gq, struct gcall *k)
{
    char used[KEY_MAX], by[KEY_MAX], horizon[32];

    key_of(gq, used, "used", k->r.subject);
    key_of(gq, by, "by", k->r.subject);
    snprintf(horizon, sizeof(horizon), "%lld",
             (long long)quota_horizon_ms(gq->q, clock_wall()));
    const char *argv[] = { used, by, horizon, gq->cfg->host_id };
    return redis_eval(gq->redis, gq->s_read, 2, 4, argv, NULL, status_reply,
                      k);
}

/* Apply r, an admin change Redis took, to this host's table. */
static void
admin_here(struct gquota *gq, const struct gquota_req *r)
{
    int rc = r->op == GQ_SET ? quota_set(gq->q, r->kind, r->ident, r->limit) :
             r->op == GQ_UNSET ? quota_unset(gq->q, r->kind, r->ident) :
             quota_reset(gq->q, r->kind, r->ident);

    if (rc < 0)
        log_error("%s: out of memory: %s is not changed here", __func__,
                  r->subject);
    persist_changed(gq->persist);
}

/* quota_set, quota_unset, quota_reset: Redis took it (or not). */
static void
admin_reply(const redisReply *r, const char *err, void *arg)
{
    struct gcall *k = arg;

    (void)err;
    if (!done_one(k->gq)) {
        free(k);
        return;
    }
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        k->r.answered = true;
    else if (r != NULL)
        refused(k->gq, "change", r);
    /* The fleet has it: this host too, even when nobody waits for the
     * reply any more (the admin log skips this host's own changes). */
    if (k->r.answered && k->c == NULL)
        admin_here(k->gq, &k->r);
    call_finish(k);
}

static int
send_admin(struct gquota *gq, struct gcall *k)
{
    static const char *const ops[] = { [GQ_SET] = "set", [GQ_UNSET] = "unset",
                                       [GQ_RESET] = "reset" };
    char used[KEY_MAX], by[KEY_MAX], limit[32], window[32];

    key_of(gq, used, "used", k->r.subject);
    key_of(gq, by, "by", k->r.subject);
    snprintf(limit, sizeof(limit), "%lld", (long long)k->r.limit);
    snprintf(window, sizeof(window), "%lld", (long long)window_ms(gq));
    const char *argv[] = { gq->key_limits, gq->key_log, gq->key_ops,
                           gq->key_seq, used, by, ops[k->r.op], k->r.subject,
                           limit, gq->cfg->host_id, gq->instance, window };
    return redis_eval(gq->redis, gq->s_admin, 6, 12, argv, NULL, admin_reply,
                      k);
}

/* ---- hard mode: one script per reservation ------------------------------ */

static int64_t
share_hosts(const struct gquota *gq)
{
    struct global_status st;

    if (gq->cfg->redis_fallback_hosts > 0)
        return gq->cfg->redis_fallback_hosts;
    global_status(gq->g, &st);
    return st.hosts > 0 ? st.hosts : 1;
}

int
gquota_reserve_share(struct gquota *gq, const char *workflow,
                     const char *tenant, int64_t tokens, double now_s,
                     bool fallback, struct quota_decision *d)
{
    int rc = quota_reserve_share(gq->q, workflow, tenant, tokens,
                                 share_hosts(gq), now_s, d);

    /* What it granted reaches Redis with a batch: until then scripts
     * would check against a total without it. */
    if (fallback && rc == 0 && d->allowed && tokens > 0)
        fall_behind(gq);
    return rc;
}

/* The subjects of a reservation: 1 or 2, into subj. */
static int
call_subjects(const struct gcall *k, char subj[2][QUOTA_SUBJECT_MAX])
{
    int n = 0;

    if (k->r.has_wf)
        quota_subject(subj[n++], QUOTA_SUBJECT_MAX, QUOTA_WORKFLOW, k->r.wf);
    if (k->r.has_tn)
        quota_subject(subj[n++], QUOTA_SUBJECT_MAX, QUOTA_TENANT, k->r.tn);
    return n;
}

static const char *
or_null(const struct gcall *k, bool wf)
{
    if (wf)
        return k->r.has_wf ? k->r.wf : NULL;
    return k->r.has_tn ? k->r.tn : NULL;
}

/* Give back what k charged when it was sent. */
static void
call_unreserve(struct gcall *k)
{
    quota_commit(k->gq->q, or_null(k, true), or_null(k, false),
                 k->r.d.slot_start_ms, k->r.tokens, 0, clock_wall());
}

/* The decision of an answered reservation: used (after it) and the
 * limit of each subject from Redis (a limit < 0: as known here); over:
 * the subject refused (0-based), else -1. */
static void
call_decide(struct gcall *k, const int64_t used[2], const int64_t lim[2],
            int n, int over)
{
    char subj[2][QUOTA_SUBJECT_MAX];
    struct quota_decision *d = &k->r.d;
    int pick = over;
    int64_t rem[2];

    call_subjects(k, subj);
    for (int i = 0; i < n; i++) {
        struct quota_status st;
        enum quota_kind kind = i == 0 && k->r.has_wf ? QUOTA_WORKFLOW :
                               QUOTA_TENANT;
        quota_status(k->gq->q, kind, kind == QUOTA_WORKFLOW ? k->r.wf :
                     k->r.tn, clock_wall(), &st);
        int64_t limit = lim[i] >= 0 ? lim[i] : st.tokens_limit;
        rem[i] = used[i] < limit ? limit - used[i] : 0;
        if (pick < 0 || (over < 0 && rem[i] < rem[pick]))
            pick = i;
        if (i == pick) {
            d->limit = limit;
            d->has_reset_at = st.has_reset_at;
            d->reset_at_s = st.reset_at_s;
        }
    }
    d->allowed = over < 0;
    d->over_quota = over >= 0;
    snprintf(d->subject, sizeof(d->subject), "%s", subj[pick]);
    d->used = used[pick];
    d->remaining = rem[pick];
    d->workflow_remaining = k->r.has_wf ? rem[0] : 0;
}

/* The fleet's usage a script answered (after the reservation): what
 * this host holds now is its own, the rest the others'. */
static void
call_refresh(struct gcall *k, char subj[2][QUOTA_SUBJECT_MAX],
             const int64_t used[2], int n)
{
    double now = clock_wall();

    for (int i = 0; i < n; i++) {
        int64_t own = quota_own_used(k->gq->q, subj[i], now);

        quota_set_others(k->gq->q, subj[i], used[i] > own ? used[i] - own : 0,
                         own);
    }
}

static void
reserve_reply(const redisReply *r, const char *err, void *arg)
{
    struct gcall *k = arg;
    struct gquota *gq = k->gq;
    char subj[2][QUOTA_SUBJECT_MAX];
    int n = call_subjects(k, subj);
    int64_t used[2] = { 0, 0 };

    (void)err;
    if (!done_one(gq)) {
        free(k);
        return;
    }
    if (reply_strings(r, 5) && strcmp(r->element[0]->str, "ok") == 0) {
        int64_t lim[2];
        for (int i = 0; i < 2; i++) {
            used[i] = strtoll(r->element[1 + i]->str, NULL, 10);
            lim[i] = strtoll(r->element[3 + i]->str, NULL, 10);
        }
        call_decide(k, used, lim, n, -1);
        call_refresh(k, subj, used, n);
        k->r.answered = true;
        if (k->c == NULL) {
            /* Nobody takes it: given back here, and the next batch
             * (which the change brings) corrects Redis. */
            call_unreserve(k);
            persist_changed(gq->persist);
        }
    } else if (reply_strings(r, 4) && strcmp(r->element[0]->str, "over") == 0) {
        int over = (int)strtol(r->element[1]->str, NULL, 10) - 1;
        int64_t lim[2] = { -1, -1 };
        over = over < 0 || over >= n ? 0 : over;
        call_unreserve(k);
        used[over] = strtoll(r->element[2]->str, NULL, 10);
        lim[over] = strtoll(r->element[3]->str, NULL, 10);
        call_decide(k, used, lim, n, over);
        /* What the fleet has used of the subject that refused it, as
         * this host's status and explain say it. */
        call_refresh(k, &subj[over], &used[over], 1);
        k->r.answered = true;
    } else {
        /* Rebuilding (Redis lost the quota data: some hosts may not have
         * written theirs yet), or no answer: done() falls back to the
         * share. */
        if (r != NULL && !(reply_strings(r, 1) &&
                           strcmp(r->element[0]->str, "rebuilding") == 0))
            refused(gq, "reserve", r);
        call_unreserve(k);
    }
    call_finish(k);
}

/* Charge k here, then send its check to Redis. */
static int
send_reserve(struct gquota *gq, struct gcall *k)
{
    char subj[2][QUOTA_SUBJECT_MAX], used[2][KEY_MAX], by[2][KEY_MAX];
    char horizon[32], slot[32], tokens[32], ttl[32], seq[32], lim[2][32];
    int n = call_subjects(k, subj), argc = 0, nk = 0;
    double now = clock_wall();
    const char *argv[1 + 4 + 6 + 4];

    if (quota_charge(gq->q, or_null(k, true), or_null(k, false), k->r.tokens,
                     now, &k->r.d) < 0)
        return -1;
    argv[argc++] = gq->key_limits;
    nk++;
    for (int i = 0; i < n; i++) {
        key_of(gq, used[i], "used", subj[i]);
        key_of(gq, by[i], "by", subj[i]);
        argv[argc++] = used[i];
        argv[argc++] = by[i];
        nk += 2;
    }
    snprintf(horizon, sizeof(horizon), "%lld",
             (long long)quota_horizon_ms(gq->q, now));
    snprintf(slot, sizeof(slot), "%lld", (long long)k->r.d.slot_start_ms);
    snprintf(tokens, sizeof(tokens), "%lld", (long long)k->r.tokens);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms(gq));
    argv[argc++] = gq->cfg->host_id;
    argv[argc++] = horizon;
    argv[argc++] = slot;
    argv[argc++] = tokens;
    argv[argc++] = ttl;
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)gq->wseq);
    argv[argc++] = seq;
    for (int i = 0; i < n; i++) {
        struct quota_status st;
        enum quota_kind kind = i == 0 && k->r.has_wf ? QUOTA_WORKFLOW :
                               QUOTA_TENANT;
        quota_status(gq->q, kind, kind == QUOTA_WORKFLOW ? k->r.wf : k->r.tn,
                     now, &st);
        snprintf(lim[i], sizeof(lim[i]), "%lld", (long long)st.tokens_limit);
        argv[argc++] = subj[i];
        argv[argc++] = lim[i];
    }
    if (redis_eval(gq->redis, gq->s_reserve, nk, argc, argv, NULL,
                   reserve_reply, k) == 0)
        return 0;
    call_unreserve(k);
    return -1;
}

/*
 * This host is behind (Redis may lack usage it granted without a script):
 * k waits for the batch that writes it, so that its script checks against
 * all of it (a share decided while Redis is reachable could overshoot by
 * what other hosts took since the last read).  False when there is
 * nothing to wait for.
 */
static bool
hold(struct gquota *gq, struct gcall *k)
{
    caught_up(gq);
    if (!gq->behind)
        return false;
    if (TAILQ_EMPTY(&gq->held)) {
        /* At most one exchange's time: then the share, as while Redis is
         * unreachable (a rebuild of many subjects takes many batches). */
        int64_t ms = gq->cfg->redis_timeout_ms;
        struct timeval tv = { (time_t)(ms / 1000),
                              (suseconds_t)(ms % 1000 * 1000) };
        evtimer_add(gq->held_ev, &tv);
    }
    TAILQ_INSERT_TAIL(&gq->held, k, held_link);
    if (gq->inflight == NULL) {     /* the batch goes now */
        evtimer_del(gq->flush_ev);
        schedule(gq, 0);
    }
    return true;
}

/* The reservations held while this host caught up: sent now (send), else
 * (Redis unreachable) handed back unanswered: done() takes the share. */
static void
release_held(struct gquota *gq, bool send)
{
    struct gcall *k;

    evtimer_del(gq->held_ev);
    while ((k = TAILQ_FIRST(&gq->held)) != NULL) {
        TAILQ_REMOVE(&gq->held, k, held_link);
        if (k->c == NULL)           /* its connection closed: off its list */
            free(k);
        else if (send && send_reserve(gq, k) == 0)
            gq->pending++;
        else
            call_finish(k);
    }
}

/* The held ones waited their longest. */
static void
held_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    release_held(arg, false);
}

int
gquota_submit(struct gquota *gq, struct conn *c, const struct gquota_req *r)
{
    struct gconn *gc;
    struct gcall *k;
    int rc;

    if (!gquota_active(gq) || !gquota_connected(gq) ||
        (gc = gconn_of(gq, c)) == NULL || (k = calloc(1, sizeof(*k))) == NULL)
        return -1;
    k->gq = gq;
    k->c = c;
    k->gc = gc;
    k->r = *r;
    k->r.answered = false;
    if (r->op == GQ_RESERVE && hold(gq, k)) {
        TAILQ_INSERT_TAIL(&gc->calls, k, link);
        return 0;
    }
    switch (r->op) {
    case GQ_STATUS:
        rc = send_status(gq, k);
        break;
    case GQ_RESERVE:
        rc = send_reserve(gq, k);
        break;
    default:
        rc = send_admin(gq, k);
        break;
    }
    if (rc < 0) {
        free(k);
        return -1;
    }
    gq->pending++;
    TAILQ_INSERT_TAIL(&gc->calls, k, link);
    return 0;
}

/* ---- start, stop -------------------------------------------------------- */

static void
keys_init(struct gquota *gq)
{
    const char *p = gq->cfg->redis_prefix;

    snprintf(gq->key_epoch, KEY_MAX, "%s{quota}:epoch", p);
    snprintf(gq->key_rebuilding, KEY_MAX, "%s{quota}:epoch:rebuilding", p);
    snprintf(gq->key_window, KEY_MAX, "%s{quota}:slot_ms", p);
    snprintf(gq->key_limits, KEY_MAX, "%s{quota}:limits", p);
    snprintf(gq->key_log, KEY_MAX, "%s{quota}:admin", p);
    snprintf(gq->key_ops, KEY_MAX, "%s{quota}:admin:ops", p);
    snprintf(gq->key_seq, KEY_MAX, "%s{quota}:admin:seq", p);
}

struct gquota *
gquota_start(struct event_base *base, const struct config *cfg,
             struct global *g, struct quota *q, struct persist *persist,
             int conn_slot, gquota_done_fn done, void *arg)
{
    struct timeval tv = { (time_t)POLL_S, 0 };
    struct gquota *gq;

    if (g == NULL)
        return NULL;
    if ((gq = calloc(1, sizeof(*gq))) == NULL)
        fatalx(1, "out of memory");
    gq->base = base;
    gq->cfg = cfg;
    gq->g = g;
    gq->redis = global_redis(g);
    gq->q = q;
    gq->persist = persist;
    gq->done = done;
    gq->arg = arg;
    gq->slot = conn_slot;
    TAILQ_INIT(&gq->held);
    keys_init(gq);
    redis_random_hex(gq->candidate, EPOCH_HEX);
    redis_random_hex(gq->instance, EPOCH_HEX);
    gq->wseq = (uint64_t)(clock_wall() * 1e6);
    recall_cursor(gq);
    /* All of it once: this daemon may have died between its commit and
     * its write to Redis. */
    quota_track_owed(q);
    quota_owe_all(q);
    fall_behind(gq);
    if ((gq->s_write = redis_script(gq->redis, write_lua)) < 0 ||
        (gq->s_read = redis_script(gq->redis, read_lua)) < 0 ||
        (gq->s_reserve = redis_script(gq->redis, reserve_lua)) < 0 ||
        (gq->s_admin = redis_script(gq->redis, admin_lua)) < 0 ||
        (gq->s_poll = redis_script(gq->redis, poll_lua)) < 0 ||
        (gq->flush_ev = evtimer_new(base, flush_cb, gq)) == NULL ||
        (gq->held_ev = evtimer_new(base, held_cb, gq)) == NULL ||
        (gq->poll_ev = event_new(base, -1, EV_PERSIST, poll_cb, gq)) == NULL ||
        event_add(gq->poll_ev, &tv) < 0)
        fatalx(1, "out of memory");
    /* The fleet's quota settings from the start, and at each change. */
    follow(gq);
    global_on_config(g, follow, gq);
    schedule(gq, 0);
    return gq;
}

void
gquota_free(struct gquota *gq)
{
    struct gcall *k;

    if (gq == NULL)
        return;
    global_on_config(gq->g, NULL, NULL);
    /* Every connection closed first: nobody waits for these. */
    while ((k = TAILQ_FIRST(&gq->held)) != NULL) {
        TAILQ_REMOVE(&gq->held, k, held_link);
        free(k);
    }
    event_free(gq->flush_ev);
    event_free(gq->poll_ev);
    event_free(gq->held_ev);
    gq->dead = true;
    if (gq->pending == 0)
        free(gq);
}
