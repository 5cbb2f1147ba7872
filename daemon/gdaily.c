/*
 * gdaily.c - the daily limits counted by the fleet; see gdaily.h, and
 * proto/REDIS.md ("Daily limits") for the keys and the script.
 *
 * A module of its own beside gquota.c, not more subjects of the quota's
 * scripts: the keys are under a hash tag of their own ({daily}), which no
 * client id can name; the window is always a day of 120 s slots, whatever
 * QUOTA_WINDOW_DAYS the fleet has; there is no admin log and no hard mode
 * script; and every exchange must also read the counters that did not
 * change (other hosts' use of them is what a check needs), which the
 * quota batches never do.  So one small script, once a second: write the
 * owed slots, read every limited counter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "daily.h"
#include "gdaily.h"
#include "global.h"
#include "gquota.h"
#include "log.h"
#include "quota.h"
#include "redis.h"

#define TICK_S 1.0
/* How soon a check keeps to the share once Redis went away. */
#define WATCH_US 100000
#define BATCH_OWED 64           /* owed counters per exchange */
#define KEY_MAX (CONFIG_NAME_MAX + QUOTA_ID_MAX + 64)
#define EPOCH_HEX 8
/* How long after Redis lost the counters every host keeps to its share:
 * each live host learns of it within a tick and writes all it holds with
 * its next one. */
#define REBUILD_MS "3000"
/* How long a counter's keys outlive its last write: the day and two of
 * its 120 s slots. */
#define TTL_MS (86400000LL + 2 * 120000LL)

/*
 * KEYS epoch, rebuilding, then used and by of each counter; ARGV host,
 * epoch known, candidate, horizon_ms, ttl_ms, seq, then per counter its
 * count of slots and the (slot, count) pairs this host holds (absolute).
 * The by hash keeps the host's last seq (seq@<host>): an older write (on a
 * connection since dropped, run late) changes nothing.  Returns the
 * status ("ok", or "rebuild": the epoch is not the one known), the epoch,
 * whether the fleet is rebuilding ("1"/"0"), then each counter's fleet
 * usage in the window.
 */
static const char sync_lua[] = GQUOTA_PARTS_LUA
    "local status, ep = epoch(KEYS[1], KEYS[2], ARGV[2], ARGV[3], "
    REBUILD_MS ")\n"
    "local host, horizon, seq = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[6])\n"
    "local out = {status, ep, tostring(redis.call('EXISTS', KEYS[2]))}\n"
    "local a, sf = 7, 'seq@' .. host\n"
    "for k = 3, #KEYS, 2 do\n"
    "  local used, by = KEYS[k], KEYS[k + 1]\n"
    "  local n = tonumber(ARGV[a])\n"
    "  if n > 0 then\n"
    "    if seq < tonumber(redis.call('HGET', by, sf) or '0') then n = 0\n"
    "    else redis.call('HSET', by, sf, ARGV[6]) end\n"
    "  end\n"
    "  for i = 1, n do\n"
    "    local slot, v = ARGV[a + 2 * i - 1], tonumber(ARGV[a + 2 * i])\n"
    "    set_part(used, by, host, slot, v)\n"
    "  end\n"
    "  if tonumber(ARGV[a]) > 0 then\n"
    "    redis.call('PEXPIRE', used, ARGV[5])\n"
    "    redis.call('PEXPIRE', by, ARGV[5])\n"
    "  end\n"
    "  a = a + 1 + 2 * tonumber(ARGV[a])\n"
    "  table.insert(out, tostring(live_sum(used, by, horizon)))\n"
    "end\n"
    "return out\n";

/* A counter in an exchange: this host's own usage when it was built. */
struct counter {
    char name[QUOTA_ID_MAX + 1];
    enum daily_unit unit;
    int64_t own;
    bool owed;                  /* it carried slots */
};

struct batch {
    struct gdaily *gd;
    struct redis_args keys, args;
    struct counter *c;
    size_t nc, cap;
    size_t count_at;            /* the open counter's count in args */
    int64_t count;
};

struct gdaily {
    const struct config *cfg;
    struct global *g;
    struct redis *redis;
    struct daily *dl;
    int s_sync;
    struct event *tick_ev, *now_ev, *watch_ev;
    struct batch *inflight;
    bool dead;
    bool share;                 /* checks keep to the share */
    uint64_t seq;               /* only grows, also across restarts */
    char epoch[2 * EPOCH_HEX + 1];      /* the one last written into */
    char candidate[2 * EPOCH_HEX + 1];  /* if Redis has none */
    char key_epoch[KEY_MAX], key_rebuilding[KEY_MAX];
};

/* ---- the exchange -------------------------------------------------------- */

static void
batch_free(struct batch *b)
{
    if (b == NULL)
        return;
    redis_args_free(&b->keys);
    redis_args_free(&b->args);
    free(b->c);
    free(b);
}

/* Close the open counter: its count of slots goes in its place. */
static void
close_counter(struct batch *b)
{
    if (b->nc == 0)
        return;
    (void)redis_args_setf(&b->args, b->count_at, "%lld",
                          (long long)b->count);
}

static bool
in_batch(const struct batch *b, const char *name, enum daily_unit unit)
{
    for (size_t i = 0; i < b->nc; i++)
        if (b->c[i].unit == unit && strcmp(b->c[i].name, name) == 0)
            return true;
    return false;
}

/* Open a counter: its keys, its place for the count of slots. */
static int
add_counter(void *arg, const char *name, enum daily_unit unit, int64_t own)
{
    struct batch *b = arg;
    const char *p = b->gd->cfg->redis_prefix, *u = daily_unit_name(unit);

    if (b->nc == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 16;
        struct counter *c = realloc(b->c, cap * sizeof(*c));
        if (c == NULL)
            return -1;
        b->c = c;
        b->cap = cap;
    }
    close_counter(b);
    redis_args_addf(&b->keys, "%s{daily}:used:%s:%s", p, u, name);
    redis_args_addf(&b->keys, "%s{daily}:by:%s:%s", p, u, name);
    b->count_at = b->args.n;
    b->count = 0;
    redis_args_addf(&b->args, "0");
    struct counter *c = &b->c[b->nc++];
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->unit = unit;
    c->own = own;
    c->owed = false;
    return b->keys.oom || b->args.oom ? -1 : 0;
}

static int
add_slot(void *arg, int64_t slot_start_ms, int64_t count)
{
    struct batch *b = arg;

    b->count++;
    b->c[b->nc - 1].owed = true;
    redis_args_addf(&b->args, "%lld", (long long)slot_start_ms);
    return redis_args_addf(&b->args, "%lld", (long long)count);
}

/* Every limited counter not in b yet, to read the fleet's usage of. */
static int
add_limited(struct batch *b, double now)
{
    size_t n = daily_list(b->gd->dl, now, NULL, 0);
    struct daily_status *ds = calloc(n ? n : 1, sizeof(*ds));
    int rc = 0;

    if (ds == NULL)
        return -1;
    n = daily_list(b->gd->dl, now, ds, n);
    for (size_t i = 0; i < n && rc == 0; i++)
        if (!in_batch(b, ds[i].name, ds[i].unit))
            rc = add_counter(b, ds[i].name, ds[i].unit, ds[i].own);
    free(ds);
    return rc;
}

/* What b carried is owed again (its write may not have run). */
static void
reowe(struct gdaily *gd, const struct batch *b)
{
    for (size_t i = 0; i < b->nc; i++)
        if (b->c[i].owed)
            daily_owe(gd->dl, b->c[i].name, b->c[i].unit);
}

/* The share of the hosts last seen alive (or LLMGUARD_REDIS_FALLBACK_HOSTS),
 * or none. */
static void
set_share(struct gdaily *gd, bool on)
{
    struct global_status st;
    int64_t hosts = 0;

    if (on) {
        global_status(gd->g, &st);
        hosts = gd->cfg->redis_fallback_hosts > 0 ?
                gd->cfg->redis_fallback_hosts : st.hosts > 0 ? st.hosts : 1;
    }
    if (on != gd->share)
        log_info("redis: the daily limits %s", on ?
                 "keep to this host's share of the headroom last seen" :
                 "count the fleet's usage");
    gd->share = on;
    daily_set_share(gd->dl, hosts);
}

static bool
reply_ok(const redisReply *r, size_t n)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3 + n)
        return false;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return false;
    return true;
}

/* The epoch the script found: a new one means Redis lost the counters
 * (restarted empty, flushed): all this host holds goes again at once. */
static void
epoch_seen(struct gdaily *gd, const char *ep, bool rebuild)
{
    if (rebuild && gd->epoch[0] != '\0') {
        log_warn("redis: the fleet's daily counters are new (epoch %s, was "
                 "%s): writing this host's usage again", ep, gd->epoch);
        daily_owe_all(gd->dl);
        event_active(gd->now_ev, EV_TIMEOUT, 0);
    }
    snprintf(gd->epoch, sizeof(gd->epoch), "%s", ep);
    if (strcmp(ep, gd->candidate) == 0)
        redis_random_hex(gd->candidate, EPOCH_HEX);
}

static void
sync_reply(const redisReply *r, const char *err, void *arg)
{
    struct batch *b = arg;
    struct gdaily *gd = b->gd;

    (void)err;
    if (gd->dead) {
        batch_free(b);
        free(gd);
        return;
    }
    gd->inflight = NULL;
    if (!reply_ok(r, b->nc)) {
        if (r != NULL)
            log_warn("redis: cannot count the daily limits: %.200s",
                     r->type == REDIS_REPLY_ERROR ? r->str :
                     "an unexpected reply");
        reowe(gd, b);
        set_share(gd, true);
        batch_free(b);
        return;
    }
    epoch_seen(gd, r->element[1]->str, strcmp(r->element[0]->str,
                                              "rebuild") == 0);
    /* While the fleet rebuilds, its sums lack what some hosts have not
     * written again yet: the last read stands, and the share. */
    bool rebuilding = strcmp(r->element[2]->str, "1") == 0;
    for (size_t i = 0; !rebuilding && i < b->nc; i++) {
        int64_t sum = strtoll(r->element[3 + i]->str, NULL, 10);
        int64_t own = b->c[i].own;

        daily_set_others(gd->dl, b->c[i].name, b->c[i].unit,
                         sum > own ? sum - own : 0, own);
    }
    set_share(gd, rebuilding);
    batch_free(b);
}

/* The header: keys epoch, rebuilding; the fixed ARGV. */
static void
header(struct gdaily *gd, struct batch *b, double now)
{
    redis_args_addf(&b->keys, "%s", gd->key_epoch);
    redis_args_addf(&b->keys, "%s", gd->key_rebuilding);
    redis_args_addf(&b->args, "%s", gd->cfg->host_id);
    redis_args_addf(&b->args, "%s", gd->epoch);
    redis_args_addf(&b->args, "%s", gd->candidate);
    redis_args_addf(&b->args, "%lld", (long long)daily_horizon_ms(gd->dl, now));
    redis_args_addf(&b->args, "%lld", TTL_MS);
    redis_args_addf(&b->args, "%llu", (unsigned long long)++gd->seq);
}

/* Send b; 0, or -1 (nothing sent). */
static int
send_batch(struct gdaily *gd, struct batch *b)
{
    size_t n = b->keys.n + b->args.n;
    const char **argv = malloc(n * sizeof(*argv));
    size_t *lens = malloc(n * sizeof(*lens));
    int rc = -1;

    for (size_t i = 0; argv != NULL && lens != NULL && i < n; i++) {
        bool k = i < b->keys.n;
        argv[i] = k ? b->keys.v[i] : b->args.v[i - b->keys.n];
        lens[i] = k ? b->keys.len[i] : b->args.len[i - b->keys.n];
    }
    if (argv != NULL && lens != NULL)
        rc = redis_eval(gd->redis, gd->s_sync, (int)b->keys.n, (int)n, argv,
                        lens, sync_reply, b);
    free(argv);
    free(lens);
    return rc;
}

/* One exchange, unless one is in flight or Redis is unreachable. */
static void
sync_now(struct gdaily *gd)
{
    static const struct daily_owed_sink sink = { add_counter, add_slot };
    struct global_status st;
    double now = clock_wall();
    struct batch *b;

    global_status(gd->g, &st);
    if (!st.connected) {
        set_share(gd, true);
        return;
    }
    if (gd->inflight != NULL)
        return;
    if ((b = calloc(1, sizeof(*b))) == NULL)
        goto oom;
    b->gd = gd;
    header(gd, b, now);
    if (daily_owed_take(gd->dl, now, BATCH_OWED, &sink, b) < 0 ||
        (close_counter(b), add_limited(b, now) < 0) ||
        (close_counter(b), b->keys.oom || b->args.oom))
        goto oom;
    if (b->nc == 0) {
        batch_free(b);
        return;
    }
    if (send_batch(gd, b) == 0) {
        gd->inflight = b;
        return;
    }
    reowe(gd, b);       /* Redis went away meanwhile */
    set_share(gd, true);
    batch_free(b);
    return;
oom:
    if (b != NULL)
        reowe(gd, b);
    batch_free(b);
    log_error("%s: out of memory: the daily counters go to Redis later",
              __func__);
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sync_now(arg);
}

/* Redis went away: the share at once, not at the next exchange. */
static void
watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gdaily *gd = arg;
    struct global_status st;

    (void)fd;
    (void)what;
    if (gd->share)
        return;
    global_status(gd->g, &st);
    if (!st.connected)
        set_share(gd, true);
}

/* ---- start, stop --------------------------------------------------------- */

struct gdaily *
gdaily_start(struct event_base *base, const struct config *cfg,
             struct global *g, struct daily *dl)
{
    struct timeval tv = { (time_t)TICK_S, 0 }, wv = { 0, WATCH_US };
    struct gdaily *gd;

    if (g == NULL)
        return NULL;
    if ((gd = calloc(1, sizeof(*gd))) == NULL)
        fatalx(1, "out of memory");
    gd->cfg = cfg;
    gd->g = g;
    gd->redis = global_redis(g);
    gd->dl = dl;
    snprintf(gd->key_epoch, KEY_MAX, "%s{daily}:epoch", cfg->redis_prefix);
    snprintf(gd->key_rebuilding, KEY_MAX, "%s{daily}:epoch:rebuilding",
             cfg->redis_prefix);
    redis_random_hex(gd->candidate, EPOCH_HEX);
    gd->seq = (uint64_t)(clock_wall() * 1e6);
    /* All of it once: this daemon may have died between its commit and
     * its write to Redis.  Until the first exchange, the share. */
    daily_track_owed(dl);
    gd->share = true;
    set_share(gd, true);
    if ((gd->s_sync = redis_script(gd->redis, sync_lua)) < 0 ||
        (gd->tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, gd)) == NULL ||
        (gd->now_ev = event_new(base, -1, 0, tick_cb, gd)) == NULL ||
        (gd->watch_ev = event_new(base, -1, EV_PERSIST, watch_cb,
                                  gd)) == NULL ||
        event_add(gd->tick_ev, &tv) < 0 || event_add(gd->watch_ev, &wv) < 0)
        fatalx(1, "out of memory");
    return gd;
}

void
gdaily_free(struct gdaily *gd)
{
    if (gd == NULL)
        return;
    event_free(gd->tick_ev);
    event_free(gd->now_ev);
    event_free(gd->watch_ev);
    daily_set_share(gd->dl, 0);
    if (gd->inflight != NULL)
        gd->dead = true;        /* its reply frees gd */
    else
        free(gd);
}
