/*
 * global.c - multi-host mode: the fleet's heartbeat and the leases of the
 * global buckets, glued to the local buckets through their hook; see
 * global.h, and proto/REDIS.md for the keys and the scripts.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


#include "clock.h"
#include "fleetcfg.h"
#include "global.h"
#include "lease.h"
#include "log.h"
#include "redis.h"
#include "redisurl.h"
#include "store.h"

#define SCHEMA "1"
#define HEARTBEAT_S 1.0
#define HOST_TTL_MS 3000
#define CLAIM_WAIT_S 3.0
#define CLAIM_RETRY_S 0.25
#define KEY_MAX (CONFIG_NAME_MAX * 2 + 32)
#define QUEUE_COUNTED 1024

/* The heartbeat: KEYS hosts, schema; ARGV host, nonce, ttl_ms, schema. */
static const char beat_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local v = redis.call('GET', KEYS[2])\n"
    "if v and v ~= ARGV[4] then return {'schema', v} end\n"
    "if not v then redis.call('SET', KEYS[2], ARGV[4]) end\n"
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if cur then\n"
    "  local nonce, exp = string.match(cur, '^(%S+) (%d+)$')\n"
    "  if nonce ~= ARGV[2] and tonumber(exp) > now then\n"
    "    return {'taken', tostring(tonumber(exp) - now)}\n"
    "  end\n"
    "end\n"
    "if tonumber(ARGV[3]) == 0 then\n"
    "  redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "  return {'left', '0'}\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1],\n"
    "           ARGV[2] .. ' ' .. (now + tonumber(ARGV[3])))\n"
    "local live = 0\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #all, 2 do\n"
    "  local exp = tonumber(string.match(all[i + 1], ' (%d+)$'))\n"
    "  if exp and exp > now then live = live + 1\n"
    "  else redis.call('HDEL', KEYS[1], all[i]) end\n"
    "end\n"
    "return {'ok', tostring(live)}\n";

/*
 * A bucket's state, shared by the take and cap scripts: load() reads it
 * and refills it to now by Redis' clock, from ts but not before its
 * holds (hold, lhold: what the provider's headers said, cap_lua); the
 * fill may be a debt (below 0), refilled first.  n and nl count the
 * request and LLM tokens leased from it since the key was made (the
 * "since" of a cap).  save() writes it back; the key expires once the
 * bucket would be full again, holds and debts included (a missing bucket
 * is a full one).
 */
#define BUCKET_LUA \
    "local function load(key, now, rate, burst, tpm)\n" \
    "  local b = redis.call('HMGET', key, 'tokens', 'llm', 'ts', 'hold',\n" \
    "                       'lhold', 'n', 'nl')\n" \
    "  local s = {tokens = tonumber(b[1]) or burst,\n" \
    "             llm = tonumber(b[2]) or tpm, hold = tonumber(b[4]) or 0,\n" \
    "             lhold = tonumber(b[5]) or 0, n = tonumber(b[6]) or 0,\n" \
    "             nl = tonumber(b[7]) or 0}\n" \
    "  local ts = tonumber(b[3]) or now\n" \
    "  local dt = math.max(0, now - math.max(ts, s.hold)) / 1000\n" \
    "  s.tokens = math.min(burst, s.tokens + rate * dt)\n" \
    "  if tpm > 0 then\n" \
    "    dt = math.max(0, now - math.max(ts, s.lhold)) / 1000\n" \
    "    s.llm = math.min(tpm, s.llm + tpm / 60 * dt)\n" \
    "  else s.llm = 0 end\n" \
    "  return s\n" \
    "end\n" \
    "local function save(key, s, now, rate, burst, tpm)\n" \
    "  redis.call('HSET', key, 'tokens', s.tokens, 'llm', s.llm, 'ts', now,\n" \
    "             'hold', s.hold, 'lhold', s.lhold, 'n', s.n, 'nl', s.nl)\n" \
    "  local full = (burst - math.min(0, s.tokens)) / rate\n" \
    "  if tpm > 0 then\n" \
    "    full = math.max(full, (tpm - math.min(0, s.llm)) * 60 / tpm) end\n" \
    "  full = full + math.max(0, s.hold - now, s.lhold - now) / 1000\n" \
    "  redis.call('PEXPIRE', key, math.ceil(full * 1000) + 1000)\n" \
    "end\n"

/*
 * A lease: KEYS bucket, demand; ARGV rate, burst, tpm, host, want,
 * want_llm, fresh_ms, need, need_llm, weight.  Refills by Redis' clock,
 * notes this host's demand, and grants this host's share of what is there
 * in proportion to its weight (its queue) among the fresh demand of all
 * hosts.  A share smaller than need
 * (what this host's head waiter lacks) is worthless - it would lapse
 * unused, and a large request would never see the bucket fill up for it -
 * so then the host gets need if it is there and the host is first in
 * line, else nothing.  The line is stride scheduling: each host's pass
 * grows by what it was granted over what it wanted, the lowest pass is
 * first, so hosts are served in proportion to their weights.  The
 * settings are the fleet's configuration's (the newest), so every host
 * asks with the same ones.  Returns the grants, the bucket's counts of
 * leased tokens after them, and "held" while a hold (cap_lua) runs.
 */
static const char take_lua[] =
    BUCKET_LUA
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local tpm, me = tonumber(ARGV[3]), ARGV[4]\n"
    "local want, wantl = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local fresh = tonumber(ARGV[7])\n"
    "local need, needl = tonumber(ARGV[8]), tonumber(ARGV[9])\n"
    "local wt = tonumber(ARGV[10])\n"
    "local s = load(KEYS[1], now, rate, burst, tpm)\n"
    "local tokens, llm = math.max(0, s.tokens), math.max(0, s.llm)\n"
    "local total, totalw, totall = want, wt, wantl\n"
    "local minpass, mypass = nil, nil\n"
    "local all = redis.call('HGETALL', KEYS[2])\n"
    "for i = 1, #all, 2 do\n"
    "  local w, ww, wl, at, pass =\n"
    "    string.match(all[i + 1], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')\n"
    "  if not pass or tonumber(at) + fresh < now then\n"
    "    redis.call('HDEL', KEYS[2], all[i])\n"
    "  elseif all[i] == me then mypass = tonumber(pass)\n"
    "  else\n"
    "    total, totall = total + tonumber(w), totall + tonumber(wl)\n"
    "    totalw = totalw + tonumber(ww)\n"
    "    if not minpass or tonumber(pass) < minpass then\n"
    "      minpass = tonumber(pass) end\n"
    "  end\n"
    "end\n"
    "mypass = mypass or minpass or 0\n"
    "if minpass and mypass < minpass - 1 then mypass = minpass - 1 end\n"
    "local g = math.min(want, tokens)\n"
    "if total > tokens and totalw > 0 then\n"
    "  g = math.min(want, tokens * wt / totalw) end\n"
    "local gl = math.min(wantl, llm)\n"
    "if totall > llm and totall > 0 then\n"
    "  gl = math.min(wantl, llm * wantl / totall) end\n"
    "local first, ok = not minpass or mypass <= minpass, true\n"
    "if g < need then\n"
    "  if first and tokens >= need then g = need else ok = false end end\n"
    "if tpm > 0 and gl < needl then\n"
    "  if first and llm >= needl then gl = needl else ok = false end end\n"
    "if not ok then g, gl = 0, 0 end\n"
    "mypass = mypass + math.max(g / math.max(wt, 1e-9),\n"
    "                           gl / math.max(wantl, 1e-9))\n"
    "redis.call('HSET', KEYS[2], me,\n"
    "           want .. ' ' .. wt .. ' ' .. wantl .. ' ' .. now .. ' ' ..\n"
    "           mypass)\n"
    "s.tokens, s.llm = s.tokens - g, s.llm - gl\n"
    "s.n, s.nl = s.n + g, s.nl + gl\n"
    "save(KEYS[1], s, now, rate, burst, tpm)\n"
    "redis.call('PEXPIRE', KEYS[2], math.ceil(fresh) + 1000)\n"
    "return {tostring(g), tostring(gl), string.format('%.17g', s.n),\n"
    "        string.format('%.17g', s.nl),\n"
    "        (now < s.hold or now < s.lhold) and 'held' or ''}\n";

/*
 * What a provider's rate-limit headers say, for the fleet's bucket
 * (llmguardd(8), "Header feedback"): KEYS bucket; ARGV rate, burst, tpm,
 * then for the request and the LLM-token bucket each: has (1: the
 * headers spoke of it), remaining, limit (0: no header), reset_ms, mark
 * (the bucket's n or nl as of the reporting host's last lease before the
 * permit's grant; -1: unknown), held (what the reporting host still
 * holds), age_ms (since the answer came).  The bucket holds at most
 * remaining less what was leased since the mark and what that host
 * holds; with less than one left its refill waits, as a host's own
 * bucket's does (feedback.h), until the provider's next token, by Redis'
 * clock.  Returns the fill and how long each refill is held (ms).
 */
static const char cap_lua[] =
    BUCKET_LUA
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local function cap(fill, cnt, hold, a, rate)\n"
    "  if ARGV[a] ~= '1' then return fill, hold end\n"
    "  local rem, lim = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])\n"
    "  local reset, mark = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])\n"
    "  local held, at = tonumber(ARGV[a + 5]), now - tonumber(ARGV[a + 6])\n"
    "  local since = 0\n"
    "  if mark >= 0 and cnt >= mark * (1 - 1e-9) then\n"
    "    since = math.max(0, cnt - mark)\n"
    "  elseif mark >= 0 then since = cnt end\n"
    "  local most = rem - since - held\n"
    "  if most < 1 then\n"
    "    local nxt = at + reset\n"
    "    if lim > rem and reset > 0 then\n"
    "      nxt = math.min(nxt, at + (1 - most) * reset / (lim - rem)) end\n"
    "    local f = math.min(most, math.max(0, fill))\n"
    "    local h = nxt - (1 - f) / rate * 1000\n"
    "    if h > now then hold = math.max(hold, h) end\n"
    "  end\n"
    "  return math.min(fill, most), hold\n"
    "end\n"
    "local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local tpm = tonumber(ARGV[3])\n"
    "local s = load(KEYS[1], now, rate, burst, tpm)\n"
    "s.tokens, s.hold = cap(s.tokens, s.n, s.hold, 4, rate)\n"
    "if tpm > 0 then\n"
    "  s.llm, s.lhold = cap(s.llm, s.nl, s.lhold, 11, tpm / 60) end\n"
    "save(KEYS[1], s, now, rate, burst, tpm)\n"
    "return {tostring(s.tokens), tostring(math.max(0, s.hold - now)),\n"
    "        tostring(math.max(0, s.lhold - now))}\n";

/*
 * The fleet's configuration: KEYS config; ARGV hash, host, loaded_at_ms,
 * text, known (the hash the caller holds, "" for none).  Keeps the newest
 * load (the later host id on a tie); a configuration equal to the one
 * there changes nothing, so a reload that changes nothing fleet-relevant
 * publishes nothing new.  Returns {hash, host, loaded_at_ms, text}, the
 * text "" when it is the one the caller knows.
 */
static const char config_lua[] =
    "local c = redis.call('HMGET', KEYS[1], 'hash', 'host', 'loaded_at',\n"
    "                     'text')\n"
    "local at, cat = tonumber(ARGV[3]), tonumber(c[3])\n"
    "if not c[1] or not c[2] or not c[4] or not cat or\n"
    "   (c[1] ~= ARGV[1] and (at > cat or (at == cat and ARGV[2] > c[2])))\n"
    "then\n"
    "  redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'host', ARGV[2],\n"
    "             'loaded_at', ARGV[3], 'text', ARGV[4])\n"
    "  c = {ARGV[1], ARGV[2], ARGV[3], ARGV[4]}\n"
    "end\n"
    "if c[1] == ARGV[5] then c[4] = '' end\n"
    "return c\n";

enum gstate { G_CLAIMING, G_CONNECTED, G_UNREACHABLE };

/* A cap of one of a global bucket's two kinds, owed to Redis (cap_lua). */
struct gcap {
    bool has;
    double remaining, limit;    /* limit 0: no header */
    double reset_s;
    double mark;                /* the fleet's leased count; NAN */
    double at_s;                /* when the answer came */
};
enum mode { M_LEASED, M_SHARE, M_LOCAL, M_CLOSED };

struct gprov {
    char name[CONFIG_NAME_MAX];
    bool model;                 /* a deployment's bucket, not a provider's */
    struct global *g;
    struct lease lease;
    struct event *timer;
    bool inflight;
    double asked_s;             /* when the lease in flight was asked */
    double asked_want;          /* and how many tokens */
    double missed_asked;        /* the bucket's missed at that ask */
    double next_poll_s;
    double fb_grants;           /* request tokens granted in fallback */
    double fb_seen;             /* the bucket's taken, last counted */
    double fb_taken;            /* fb_grants, last given to the metrics */
    bool closed;
    double leased, leased_llm;  /* the fleet bucket's n, nl, last seen */
    struct gcap cap[2];         /* owed: requests, LLM tokens */
    bool cap_inflight;
    bool cap_refused;           /* an error reply, logged */
    char key_bucket[KEY_MAX], key_demand[KEY_MAX];
};

struct global {
    struct event_base *base;
    const struct config *cfg;
    struct buckets *b;
    struct buckets *models;     /* the deployments' */
    struct redis *redis;
    int s_take, s_beat, s_config, s_cap;
    enum gstate state;
    double claim_since_s;       /* first told the id is taken; NAN */
    char nonce[33];
    char url[1024];             /* masked */
    char last_error[256];
    int64_t hosts;              /* live hosts last seen (0: never) */
    int64_t saved_hosts;        /* in the local database */
    int64_t peak_hosts;         /* the most seen within one host expiry */
    double peak_s;
    bool save_failed;           /* logged */
    struct event *beat;
    struct gprov gp[CONFIG_MAX_PROVIDERS + CONFIG_MAX_MODELS];
    size_t ngp;
    char key_hosts[KEY_MAX], key_schema[KEY_MAX], key_config[KEY_MAX];
    bool conflict_logged;
    /* The fleet's configuration: this host's, published with its load
     * time (the wall clock), and the newest one's, read every second. */
    struct fleetcfg own, fleet;
    char own_text[FLEETCFG_TEXT_MAX];
    char own_hash[41];
    double own_loaded_at;           /* wall, s */
    bool have_fleet;
    char fleet_hash[41];
    char fleet_host[CONFIG_NAME_MAX];
    double fleet_loaded_at;         /* wall, s */
    bool config_inflight, config_owed;
    char config_logged[84];         /* fleet's and own hash, last logged */
    bool config_error_logged;
    void (*on_config)(void *arg);   /* global_on_config's hook */
    void *on_config_arg;
    uint64_t errors_taken;      /* given to the metrics */
};

static void beat_now(struct global *g);

/* ---- the local database: the hosts last seen, for a start without Redis */

/* The fleet size remembered by an earlier run, 0 when none (the database
 * may not exist yet: it is never created here). */
static int64_t
recall_hosts(const struct global *g)
{
    int64_t n = 0;

    store_value_get(g->cfg->db_path, "redis_fleet", "hosts", &n);
    return n;
}

/* Remember n live hosts (a change, so rare): a table of its own beside the
 * quota tables, written on a connection of its own.  On the loop, so it
 * waits at most 5 ms for the writer thread's lock; busy, it is tried
 * again at the next heartbeat. */
static void
remember_hosts(struct global *g, int64_t n)
{
    char err[256];
    int rc = store_value_put(g->cfg->db_path, "redis_fleet", "hosts", n, err,
                             sizeof(err));

    if (rc == 0)
        g->saved_hosts = n;
    else if (rc < 0 && !g->save_failed) {
        log_warn("redis: cannot remember %lld live host(s) in %s: %s",
                 (long long)n, g->cfg->db_path, err);
        g->save_failed = true;
    }
}

/* ---- modes ------------------------------------------------------------ */

static const char *const fallback_names[] = { "share", "local", "closed" };

/* The hosts the share fallback divides by. */
static int64_t
share_hosts(const struct global *g)
{
    if (g->cfg->redis_fallback_hosts > 0)
        return g->cfg->redis_fallback_hosts;
    return g->peak_hosts > 0 ? g->peak_hosts : 1;
}

static enum mode
mode_of(const struct global *g, const struct gprov *gp)
{
    if (g->state == G_CONNECTED || gp->lease.n > 0)
        return M_LEASED;
    switch (g->cfg->redis_fallback) {
    case FALLBACK_LOCAL:
        return M_LOCAL;
    case FALLBACK_CLOSED:
        return M_CLOSED;
    default:
        return M_SHARE;
    }
}

/* The limits of a global bucket, as configured. */
struct glimits {
    double rate_per_sec, burst, tokens_per_min;
};

/*
 * The fleet's configuration, when it is in force: connected, the newest
 * as Redis keeps it; unreachable, still the newest this host knows of -
 * the fleet's last read, unless this host loaded its own since (which it
 * publishes when Redis answers).  NULL: this host's own file (the fleet's
 * never read since the start).
 */
static const struct fleetcfg *
fleet_in_force(const struct global *g)
{
    if (!g->have_fleet)
        return NULL;
    if (g->state == G_CONNECTED ||
        g->fleet_loaded_at >= floor(g->own_loaded_at * 1e3) / 1e3)
        return &g->fleet;
    return NULL;
}

/*
 * The limits of gp's bucket into *gl: the fleet's configuration's when it
 * has the bucket, else this host's: a provider's, or a deployment's (RPM
 * as rate RPM / 60 and burst RPM, as buckets.c sets them up; no RPM:
 * requests not limited).  Returns -1 when this host's configuration has
 * it no more, 0 for a deployment with neither RPM nor TPM (nothing to
 * share: its bucket stays this host's own), 1 otherwise.
 */
static int
gprov_limits(const struct global *g, const struct gprov *gp,
             struct glimits *gl)
{
    const struct fleetcfg *f = fleet_in_force(g);
    const struct fleetcfg_provider *fp;
    const struct fleetcfg_model *fm;
    const struct provider_config *pc;
    const struct model_config *mc;
    double rpm, tpm;

    if (gp->model) {
        if ((mc = config_model(g->cfg, gp->name, strlen(gp->name))) == NULL)
            return -1;
        fm = f != NULL ? fleetcfg_model(f, gp->name) : NULL;
        rpm = fm != NULL ? fm->rpm : mc->rpm;
        tpm = fm != NULL ? fm->tpm : mc->tpm;
        gl->rate_per_sec = rpm > 0 ? rpm / 60.0 : BUCKETS_UNLIMITED;
        gl->burst = rpm > 0 ? fmax(1, rpm) : BUCKETS_UNLIMITED;
        gl->tokens_per_min = tpm;
        return rpm > 0 || tpm > 0;
    }
    if ((pc = config_provider(g->cfg, gp->name, strlen(gp->name))) == NULL)
        return -1;
    fp = f != NULL ? fleetcfg_provider(f, gp->name) : NULL;
    gl->rate_per_sec = fp != NULL ? fp->rate_per_sec : pc->rate_per_sec;
    gl->burst = fp != NULL ? fp->burst : pc->burst;
    gl->tokens_per_min = fp != NULL ? fp->tokens_per_min
                                    : pc->tokens_per_min;
    return 1;
}

/* The limiter settings of mode for limits gl. */
static void
mode_config(const struct global *g, const struct glimits *gl,
            enum mode m, struct limiter_config *lc)
{
    double k = m == M_SHARE ? (double)share_hosts(g) : 1.0;

    lc->rate_per_sec = gl->rate_per_sec / k;
    lc->burst = fmax(1, gl->burst / k);
    lc->tokens_per_min = gl->tokens_per_min / k;
    lc->enabled = g->cfg->rate_limit_enabled;
    lc->leased = m == M_LEASED || m == M_CLOSED;
}

static bool
same_config(const struct limiter_config *a, const struct limiter_config *b)
{
    return a->rate_per_sec == b->rate_per_sec && a->burst == b->burst &&
           a->tokens_per_min == b->tokens_per_min &&
           a->enabled == b->enabled && a->leased == b->leased;
}

/* Put prov's bucket in the mode it should be in.  Returns true when that
 * changed it (the caller kicks it again). */
static bool
apply_mode(struct global *g, struct gprov *gp, struct provider *prov,
           double now)
{
    struct limiter_bucket *b = &prov->bucket;
    struct limiter_config lc;
    struct glimits gl;
    enum mode m;
    bool was_leased = b->cfg.leased;
    int global = gprov_limits(g, gp, &gl);

    if (global < 0)
        return false;
    m = global ? mode_of(g, gp) : M_LOCAL;
    gp->closed = m == M_CLOSED;
    prov->closed = gp->closed;
    mode_config(g, &gl, m, &lc);
    if (same_config(&b->cfg, &lc) || limiter_reconfigure(b, &lc, now) < 0)
        return false;
    if (lc.leased && !was_leased) {
        /* What the fallback refilled is not leased: out with it. */
        limiter_take_back(b, INFINITY, INFINITY, now);
        lease_init(&gp->lease, now);
        gp->lease.seen_taken = (double)b->granted;
        gp->lease.seen_missed = b->missed;
    }
    gp->fb_seen = (double)b->granted;
    return true;
}

/* ---- leases ------------------------------------------------------------ */

static struct gprov *
gprov_of(struct global *g, bool model, const char *name)
{
    for (size_t i = 0; i < g->ngp; i++)
        if (g->gp[i].model == model && strcmp(g->gp[i].name, name) == 0)
            return &g->gp[i];
    return NULL;
}

/* gp's local bucket, or NULL when it is gone. */
static struct provider *
gprov_bucket(struct global *g, const struct gprov *gp)
{
    return buckets_find(gp->model ? g->models : g->b, gp->name,
                        strlen(gp->name));
}

/* The request and LLM tokens prov's queue waits for, counted over its
 * first QUEUE_COUNTED waiters (a weight; more is not asked for anyway). */
static void
queued_demand(const struct provider *prov, double *n, double *llm)
{
    const struct limiter_waiter *w;
    size_t k = 0;

    *n = 0;
    *llm = 0;
    TAILQ_FOREACH(w, &prov->bucket.waiters, entry) {
        if (k++ == QUEUE_COUNTED)
            break;
        *n += w->n;
        *llm += (double)w->llm_tokens;
    }
}

static void
take_reply(const redisReply *r, const char *err, void *arg)
{
    struct gprov *gp = arg;
    struct global *g = gp->g;
    struct provider *prov;
    double now = clock_mono(), got, got_llm, poll_s;

    gp->inflight = false;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 5 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[2]->type != REDIS_REPLY_STRING ||
        r->element[3]->type != REDIS_REPLY_STRING ||
        r->element[4]->type != REDIS_REPLY_STRING) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            snprintf(g->last_error, sizeof(g->last_error), "%.200s", r->str);
        return;
    }
    got = strtod(r->element[0]->str, NULL);
    got_llm = strtod(r->element[1]->str, NULL);
    /* The grants from here on are marked with these (buckets_mark). */
    gp->leased = strtod(r->element[2]->str, NULL);
    gp->leased_llm = strtod(r->element[3]->str, NULL);
    prov = gprov_bucket(g, gp);
    if (prov == NULL || !prov->bucket.cfg.leased)
        return;     /* gone, or in fallback: these lapse unused */
    prov->fleet_leased = gp->leased;
    prov->fleet_leased_llm = gp->leased_llm;
    /* The fleet's bucket is held (a provider said nothing remains): what
     * this host holds of earlier leases is more than the provider allows,
     * and lapses now rather than at its lease's end. */
    if (strcmp(r->element[4]->str, "held") == 0) {
        double t, l;
        lease_expire(&gp->lease, INFINITY, &t, &l);
        limiter_take_back(&prov->bucket, t, l, now);
    }
    /* From when it was asked: it ends no later than lease ms after Redis
     * handed it out.  (A slot is free: none is asked for without one.) */
    if ((got > 0 || got_llm > 0) &&
        lease_add(&gp->lease, got, got_llm,
                  gp->asked_s + (double)g->cfg->lease_ms / 1e3) == 0)
        limiter_add(&prov->bucket, got, got_llm, now);
    /* Short of what was wanted: the bucket is dry, ask again once about a
     * token has refilled (within a quarter lease). */
    poll_s = fmin(fmax(1.0 / prov->bucket.cfg.rate_per_sec, 0.002),
                  (double)g->cfg->lease_ms / 4e3);
    gp->next_poll_s = got >= 0.9 * gp->asked_want ? now : now + poll_s;
    buckets_kick(prov);
}

/* What the head waiter lacks of what the bucket holds (prefetch, with no
 * waiter: one request token), within want. */
static void
head_need(const struct provider *prov, double now, double want,
          double *need, double *need_llm)
{
    const struct limiter_bucket *b = &prov->bucket;
    const struct limiter_waiter *w = TAILQ_FIRST(&b->waiters);
    double have_llm = limiter_available_llm(b, now);

    *need = fmin(want, w != NULL ? fmax(0, w->n - limiter_available(b, now))
                                 : 1);
    *need_llm = w != NULL && !isinf(have_llm)
                ? fmax(0, (double)w->llm_tokens - have_llm) : 0;
}

/* Ask Redis for a lease when the demand wants one. */
static void
consider(struct global *g, struct gprov *gp, struct provider *prov,
         double now)
{
    const struct limiter_bucket *b = &prov->bucket;
    double q, ql, want, want_llm, lease_s = (double)g->cfg->lease_ms / 1e3;
    double need, need_llm;
    struct glimits gl;
    char a[10][48];
    const char *argv[12];

    if (g->state != G_CONNECTED || gp->inflight || now < gp->next_poll_s)
        return;
    queued_demand(prov, &q, &ql);
    /* What was refused at once since the last ask is wanted too. */
    q += fmax(0, b->missed - gp->missed_asked);
    lease_want(&gp->lease, q, ql, lease_s, b->cfg.burst,
               b->cfg.tokens_per_min, &want, &want_llm);
    if (want <= 0 && want_llm <= 0)
        return;
    head_need(prov, now, want, &need, &need_llm);
    if (gprov_limits(g, gp, &gl) <= 0)
        return;
    snprintf(a[0], sizeof(a[0]), "%.17g", gl.rate_per_sec);
    snprintf(a[1], sizeof(a[1]), "%.17g", gl.burst);
    snprintf(a[2], sizeof(a[2]), "%.17g", gl.tokens_per_min);
    snprintf(a[4], sizeof(a[4]), "%.17g", want);
    snprintf(a[5], sizeof(a[5]), "%.17g", want_llm);
    snprintf(a[6], sizeof(a[6]), "%lld", (long long)g->cfg->lease_ms);
    snprintf(a[7], sizeof(a[7]), "%.17g", need);
    snprintf(a[8], sizeof(a[8]), "%.17g", need_llm);
    /* The weight of this host's demand: its queue, else what it wants. */
    snprintf(a[9], sizeof(a[9]), "%.17g", q > 0 ? q : want);
    argv[0] = gp->key_bucket;
    argv[1] = gp->key_demand;
    argv[2] = a[0];
    argv[3] = a[1];
    argv[4] = a[2];
    argv[5] = g->cfg->host_id;
    argv[6] = a[4];
    argv[7] = a[5];
    argv[8] = a[6];
    argv[9] = a[7];
    argv[10] = a[8];
    argv[11] = a[9];
    if (redis_eval(g->redis, g->s_take, 2, 12, argv, NULL, take_reply,
                   gp) == 0) {
        gp->inflight = true;
        gp->asked_s = now;
        gp->asked_want = want;
        gp->missed_asked = b->missed;
    }
}

/* When prov's timer should fire: the oldest lease's end, the next poll
 * while there is demand, a refresh every half lease while there is use. */
static void
arm_gprov(struct global *g, struct gprov *gp, const struct provider *prov,
          double now)
{
    double at = lease_next_end(&gp->lease), half = g->cfg->lease_ms / 2e3;
    struct timeval tv;

    if (prov->bucket.cfg.leased && !gp->inflight && g->state == G_CONNECTED) {
        if (prov->bucket.nwaiters > 0)
            at = fmin(at, fmax(gp->next_poll_s, now));
        if (gp->lease.rate > 0.05)
            at = fmin(at, now + half);
    }
    if (isinf(at)) {
        evtimer_del(gp->timer);
        return;
    }
    at = fmax(0, at - now);
    tv.tv_sec = (time_t)at;
    tv.tv_usec = (suseconds_t)((at - (double)tv.tv_sec) * 1e6) + 1;
    evtimer_add(gp->timer, &tv);
}

static void
gprov_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gprov *gp = arg;
    struct provider *prov = gprov_bucket(gp->g, gp);

    if (prov != NULL)
        buckets_kick(prov);     /* the hook does the rest */
}

static struct gprov *
gprov_add(struct global *g, bool model, const char *name)
{
    struct gprov *gp;

    if (g->ngp == sizeof(g->gp) / sizeof(g->gp[0]))
        return NULL;
    gp = &g->gp[g->ngp];
    memset(gp, 0, sizeof(*gp));
    snprintf(gp->name, sizeof(gp->name), "%s", name);
    gp->model = model;
    gp->g = g;
    gp->leased = gp->leased_llm = NAN;
    lease_init(&gp->lease, clock_mono());
    if ((gp->timer = evtimer_new(g->base, gprov_timer, gp)) == NULL)
        return NULL;
    /* One hash tag per bucket: a script's two keys share a slot.  A
     * deployment's alias, under model/, cannot meet a provider's name
     * (neither has a '/'). */
    snprintf(gp->key_bucket, sizeof(gp->key_bucket), "%s{bucket:%s%s}:tokens",
             g->cfg->redis_prefix, model ? "model/" : "", name);
    snprintf(gp->key_demand, sizeof(gp->key_demand), "%s{bucket:%s%s}:demand",
             g->cfg->redis_prefix, model ? "model/" : "", name);
    g->ngp++;
    return gp;
}

/* The buckets' hook: after every kick of prov. */
static void
on_kick(struct provider *prov, void *arg)
{
    struct global *g = arg;
    bool model = prov->owner == g->models;
    struct gprov *gp = gprov_of(g, model, prov->name);
    struct limiter_bucket *b = &prov->bucket;
    double now = clock_mono(), t, l;

    if (gp == NULL && (gp = gprov_add(g, model, prov->name)) == NULL)
        return;
    /* A reload made prov anew: what its grants are marked with. */
    prov->fleet_leased = gp->leased;
    prov->fleet_leased_llm = gp->leased_llm;
    if (b->cfg.leased) {
        lease_sync(&gp->lease, limiter_available(b, now),
                   limiter_available_llm(b, now), (double)b->granted, b->missed,
                   now);
        lease_expire(&gp->lease, now, &t, &l);
        /* Tokens released with no lease to hold them lapse at once. */
        if (gp->lease.n == 0)
            t = l = INFINITY;
        if (t > 0 || l > 0)
            limiter_take_back(b, t, l, now);
    } else {
        gp->fb_grants += (double)b->granted - gp->fb_seen;
        gp->fb_seen = (double)b->granted;
    }
    if (apply_mode(g, gp, prov, now)) {
        buckets_kick(prov);     /* this hook again, in the new mode */
        return;
    }
    if (b->cfg.leased)
        consider(g, gp, prov, now);
    arm_gprov(g, gp, prov, now);
}

static void
kick_all(struct global *g)
{
    for (size_t i = 0; i < buckets_count(g->b); i++)
        buckets_kick(buckets_at(g->b, i));
    for (size_t i = 0; i < buckets_count(g->models); i++)
        buckets_kick(buckets_at(g->models, i));
}

/* ---- header feedback: the fleet's bucket held (cap_lua) ---------------- */

/* What the fleet leased since mark, as this host knows it (mark, count
 * NAN: unknown, 0); a count below the mark is a bucket made anew since. */
static double
fleet_since(double mark, double count)
{
    if (isnan(mark) || isnan(count))
        return 0;
    return count >= mark * (1 - 1e-9) ? fmax(0, count - mark) : count;
}

/* Owe l's cap of one kind, at mark with the fleet's count as last seen:
 * of two owed, the one that leaves less (the later on a tie). */
static void
owe_cap(struct gcap *c, const struct ratehdr_limit *l, double mark,
        double count, double now)
{
    double most = l->remaining - fleet_since(mark, count);

    if (c->has && c->remaining - fleet_since(c->mark, count) < most)
        return;
    c->has = true;
    c->remaining = l->remaining;
    c->limit = l->has_limit ? l->limit : 0;
    c->reset_s = l->reset_s;
    c->mark = mark;
    c->at_s = now;
}

/* The seven arguments of one kind into a[0..6]: held is what this host's
 * bucket still holds of it. */
static void
cap_args(const struct gcap *c, double held, double now, char a[][48])
{
    snprintf(a[0], sizeof(a[0]), "%d", c->has ? 1 : 0);
    snprintf(a[1], sizeof(a[1]), "%.17g", c->has ? c->remaining : 0);
    snprintf(a[2], sizeof(a[2]), "%.17g", c->has ? c->limit : 0);
    snprintf(a[3], sizeof(a[3]), "%.17g", c->has ? c->reset_s * 1e3 : 0);
    snprintf(a[4], sizeof(a[4]), "%.17g",
             c->has && !isnan(c->mark) ? c->mark : -1);
    snprintf(a[5], sizeof(a[5]), "%.17g", isinf(held) ? 0 : held);
    snprintf(a[6], sizeof(a[6]), "%.17g",
             c->has ? fmax(0, now - c->at_s) * 1e3 : 0);
}

static void send_cap(struct global *g, struct gprov *gp, double now);

static void
cap_reply(const redisReply *r, const char *err, void *arg)
{
    struct gprov *gp = arg;
    struct global *g = gp->g;

    gp->cap_inflight = false;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        snprintf(g->last_error, sizeof(g->last_error), "%.200s", r->str);
        if (!gp->cap_refused)
            log_warn("redis: cannot hold the fleet's bucket of %s%s by its "
                     "headers: %s (held here only)", gp->model ? "model " : "",
                     gp->name, r->str);
        gp->cap_refused = true;
    } else if (r != NULL && r->type == REDIS_REPLY_ARRAY &&
               r->elements == 3 &&
               r->element[0]->type == REDIS_REPLY_STRING &&
               r->element[1]->type == REDIS_REPLY_STRING) {
        gp->cap_refused = false;
        log_debug("%s%s: the fleet's bucket holds %s, its refill held for "
                  "%s ms, by the provider's headers", gp->model ? "model " :
                  "", gp->name, r->element[0]->str, r->element[1]->str);
    }
    send_cap(g, gp, clock_mono());      /* what came meanwhile */
}

/* Send gp's owed caps, unless one is in flight.  Only while connected
 * and the bucket is leased: else the host's own clamp is all there is. */
static void
send_cap(struct global *g, struct gprov *gp, double now)
{
    struct provider *prov = gprov_bucket(g, gp);
    struct glimits gl;
    char a[17][48];
    const char *argv[18];

    if (gp->cap_inflight || (!gp->cap[0].has && !gp->cap[1].has))
        return;
    if (prov == NULL || !prov->bucket.cfg.leased || g->state != G_CONNECTED ||
        !redis_up(g->redis) || gprov_limits(g, gp, &gl) <= 0) {
        memset(gp->cap, 0, sizeof(gp->cap));
        return;
    }
    snprintf(a[0], sizeof(a[0]), "%.17g", gl.rate_per_sec);
    snprintf(a[1], sizeof(a[1]), "%.17g", gl.burst);
    snprintf(a[2], sizeof(a[2]), "%.17g", gl.tokens_per_min);
    cap_args(&gp->cap[0], limiter_available(&prov->bucket, now), now, a + 3);
    cap_args(&gp->cap[1], limiter_available_llm(&prov->bucket, now), now,
             a + 10);
    argv[0] = gp->key_bucket;
    for (size_t i = 0; i < 17; i++)
        argv[i + 1] = a[i];
    memset(gp->cap, 0, sizeof(gp->cap));
    if (redis_eval(g->redis, g->s_cap, 1, 18, argv, NULL, cap_reply,
                   gp) == 0)
        gp->cap_inflight = true;
}

/* The buckets' feedback hook: prov's bucket was fitted to a provider's
 * headers; a leased bucket's cap is the fleet's too. */
static void
on_feedback(struct provider *prov, unsigned capped, const struct ratehdr *h,
            const struct feedback_mark *m, double now, void *arg)
{
    struct global *g = arg;
    struct gprov *gp = gprov_of(g, prov->owner == g->models, prov->name);

    if (gp == NULL || !prov->bucket.cfg.leased || g->state != G_CONNECTED)
        return;
    if (capped & FEEDBACK_CAPPED)
        owe_cap(&gp->cap[0], &h->kind[RATEHDR_REQUESTS], m->fleet,
                gp->leased, now);
    if (capped & FEEDBACK_LLM_CAPPED)
        owe_cap(&gp->cap[1], &h->kind[RATEHDR_TOKENS], m->fleet_llm,
                gp->leased_llm, now);
    send_cap(g, gp, now);
}

/* ---- the fleet's configuration ---------------------------------------- */

/* What global_fleet_quota() gives may have changed: tell the hook. */
static void
config_changed(struct global *g)
{
    if (g->on_config != NULL)
        g->on_config(g->on_config_arg);
}

/* This host's part of the fleet's configuration, from its file; a new
 * load time when it changed (or at start).  Returns whether it changed. */
static bool
own_config(struct global *g)
{
    char text[FLEETCFG_TEXT_MAX];

    fleetcfg_of(&g->own, g->cfg);
    fleetcfg_text(&g->own, text, sizeof(text));
    if (g->own_loaded_at > 0 && strcmp(text, g->own_text) == 0)
        return false;
    memcpy(g->own_text, text, sizeof(text));
    fleetcfg_hash(g->own_text, g->own_hash);
    g->own_loaded_at = clock_wall();
    return true;
}

static void
iso_utc(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;

    if (gmtime_r(&s, &tm) == NULL ||
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%.3f", t);
}

/* Say which configuration this host follows, once per change of the
 * fleet's or of its own. */
static void
report_config(struct global *g)
{
    char key[sizeof(g->config_logged)], when[32], diff[2048];

    snprintf(key, sizeof(key), "%s %s", g->fleet_hash, g->own_hash);
    if (strcmp(key, g->config_logged) == 0)
        return;
    snprintf(g->config_logged, sizeof(g->config_logged), "%s", key);
    iso_utc(g->fleet_loaded_at, when, sizeof(when));
    if (strcmp(g->fleet_hash, g->own_hash) != 0) {
        fleetcfg_diff(&g->own, &g->fleet, diff, sizeof(diff));
        log_warn("redis: following host %s's configuration (loaded %s, hash "
                 "%.12s): this host's file differs: %s", g->fleet_host, when,
                 g->fleet_hash, diff);
    } else if (strcmp(g->fleet_host, g->cfg->host_id) == 0) {
        log_info("redis: the fleet follows this host's configuration "
                 "(loaded %s, hash %.12s)", when, g->fleet_hash);
    } else {
        log_info("redis: following host %s's configuration (loaded %s, hash "
                 "%.12s), the same as this host's file", g->fleet_host, when,
                 g->fleet_hash);
    }
}

/* The configuration script refused (say, the key holds another type):
 * logged once; this host keeps its own settings meanwhile. */
static void
config_error(struct global *g, const char *why)
{
    snprintf(g->last_error, sizeof(g->last_error), "%.200s", why);
    if (!g->config_error_logged)
        log_warn("redis: cannot read the fleet's configuration: %s", why);
    g->config_error_logged = true;
}

/* The newest configuration read: take it when it is new. */
static void
take_fleet(struct global *g, const redisReply *r)
{
    const char *hash = r->element[0]->str, *text = r->element[3]->str;
    struct fleetcfg *f;
    char err[128];

    if (g->have_fleet && strcmp(hash, g->fleet_hash) == 0) {
        /* The same; after a Redis restarted empty maybe republished by
         * another host, which the status names. */
        snprintf(g->fleet_host, sizeof(g->fleet_host), "%s",
                 r->element[1]->str);
        g->fleet_loaded_at = strtod(r->element[2]->str, NULL) / 1e3;
        return;
    }
    if ((f = malloc(sizeof(*f))) == NULL) {
        config_error(g, "out of memory");
        return;
    }
    if (fleetcfg_parse(f, text, err, sizeof(err)) < 0) {
        char why[200];
        snprintf(why, sizeof(why), "host %.64s's: %.100s",
                 r->element[1]->str, err);
        config_error(g, why);
        free(f);
        return;
    }
    g->fleet = *f;
    free(f);
    snprintf(g->fleet_hash, sizeof(g->fleet_hash), "%s", hash);
    snprintf(g->fleet_host, sizeof(g->fleet_host), "%s", r->element[1]->str);
    g->fleet_loaded_at = strtod(r->element[2]->str, NULL) / 1e3;
    g->have_fleet = true;
    g->config_error_logged = false;
    kick_all(g);    /* every bucket to the fleet's settings */
    config_changed(g);  /* and the quotas */
}

static void publish_config(struct global *g);

static void
config_reply(const redisReply *r, const char *err, void *arg)
{
    struct global *g = arg;

    g->config_inflight = false;
    if (r == NULL)
        return;     /* the connection's state says it */
    if (r->type == REDIS_REPLY_ERROR) {
        config_error(g, r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING ||
               r->element[2]->type != REDIS_REPLY_STRING ||
               r->element[3]->type != REDIS_REPLY_STRING) {
        config_error(g, "the configuration script got an unexpected reply");
    } else {
        take_fleet(g, r);
        if (g->have_fleet)
            report_config(g);
    }
    if (g->config_owed)
        publish_config(g);
}

/* Publish this host's configuration (kept only when it is the newest)
 * and read the fleet's: every heartbeat, and at once after a reload. */
static void
publish_config(struct global *g)
{
    char at[32];
    const char *argv[6];

    if (g->config_inflight) {
        g->config_owed = true;
        return;
    }
    g->config_owed = false;
    snprintf(at, sizeof(at), "%.0f", floor(g->own_loaded_at * 1e3));
    argv[0] = g->key_config;
    argv[1] = g->own_hash;
    argv[2] = g->cfg->host_id;
    argv[3] = at;
    argv[4] = g->own_text;
    argv[5] = g->have_fleet ? g->fleet_hash : "";
    if (redis_up(g->redis) &&
        redis_eval(g->redis, g->s_config, 1, 6, argv, NULL, config_reply,
                   g) == 0)
        g->config_inflight = true;
}

/* ---- the fleet --------------------------------------------------------- */

static void
set_connected(struct global *g)
{
    if (g->state == G_CONNECTED)
        return;
    g->state = G_CONNECTED;
    g->conflict_logged = false;
    g->last_error[0] = '\0';
    log_info("redis: connected to %s as host %s (%lld live host(s)): "
             "buckets are global", g->url, g->cfg->host_id,
             (long long)g->hosts);
    kick_all(g);    /* into leased mode */
    config_changed(g);
}

/* Redis is unreachable (or refuses us): logged once per change. */
static void
set_unreachable(struct global *g, const char *why)
{
    snprintf(g->last_error, sizeof(g->last_error), "%s", why);
    if (g->state == G_UNREACHABLE)
        return;
    if (g->state == G_CLAIMING)
        log_warn("redis: %s unreachable at start (%s): serving in fallback "
                 "%s until it answers", g->url, why,
                 fallback_names[g->cfg->redis_fallback]);
    else
        log_warn("redis: %s unreachable (%s): leases lapse within %lld ms, "
                 "then fallback %s", g->url, why, (long long)g->cfg->lease_ms,
                 fallback_names[g->cfg->redis_fallback]);
    g->state = G_UNREACHABLE;
    kick_all(g);
    config_changed(g);
}

/* A live instance holds our id. */
static void
id_taken(struct global *g, double left_ms)
{
    double now = clock_mono();
    char why[CONFIG_NAME_MAX + 64];

    snprintf(why, sizeof(why), "host id %s is in use", g->cfg->host_id);
    if (g->state != G_CLAIMING) {
        /* Another daemon took it while we were away: we stay out. */
        if (!g->conflict_logged)
            log_error("redis: %s by another live daemon: staying in "
                      "fallback", why);
        g->conflict_logged = true;
        set_unreachable(g, why);
        return;
    }
    if (isnan(g->claim_since_s))
        g->claim_since_s = now;
    if (now - g->claim_since_s >= CLAIM_WAIT_S)
        fatalx(CONFIG_EXIT, "%s (a live daemon renewed it for %.1f s: give "
               "each daemon its own LLMGUARD_HOST_ID)", why, CLAIM_WAIT_S);
    log_info("redis: %s, for %.0f ms more unless renewed: waiting",
             why, left_ms);
}

static void
beat_reply(const redisReply *r, const char *err, void *arg)
{
    struct global *g = arg;
    const char *what;
    int64_t n;

    if (r == NULL)
        return;     /* the connection's state says it */
    if (r->type == REDIS_REPLY_ERROR) {
        set_unreachable(g, r->str);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        set_unreachable(g, "the heartbeat got an unexpected reply");
        return;
    }
    what = r->element[0]->str;
    if (strcmp(what, "taken") == 0) {
        id_taken(g, strtod(r->element[1]->str, NULL));
    } else if (strcmp(what, "schema") == 0) {
        char why[160];
        snprintf(why, sizeof(why), "the keys under %s are of schema %.20s, "
                 "this daemon speaks %s", g->cfg->redis_prefix,
                 r->element[1]->str, SCHEMA);
        set_unreachable(g, why);
    } else if (strcmp(what, "ok") == 0) {
        n = strtoll(r->element[1]->str, NULL, 10);
        if (n != g->hosts && g->state == G_CONNECTED)
            log_info("redis: %lld live host(s), were %lld", (long long)n,
                     (long long)g->hosts);
        g->hosts = n;
        /* A Redis that restarted empty counts the hosts again as their
         * heartbeats come: the share divides by the most seen lately. */
        if (n >= g->peak_hosts ||
            clock_mono() - g->peak_s > HOST_TTL_MS / 1e3) {
            g->peak_hosts = n;
            g->peak_s = clock_mono();
        }
        /* Not while claiming: the database may not exist yet. */
        if (g->peak_hosts != g->saved_hosts && g->state == G_CONNECTED)
            remember_hosts(g, g->peak_hosts);
        set_connected(g);
        publish_config(g);
    }
}

static void
send_beat(struct global *g, const char *ttl_ms, redis_reply_fn fn)
{
    const char *argv[] = { g->key_hosts, g->key_schema, g->cfg->host_id,
                           g->nonce, ttl_ms, SCHEMA };

    redis_eval(g->redis, g->s_beat, 2, 6, argv, NULL, fn, g);
}

static void
beat_cb(evutil_socket_t fd, short what, void *arg)
{
    beat_now(arg);
}

/* A heartbeat now (when connected), the next in a second, or sooner
 * while the id is being claimed. */
static void
beat_now(struct global *g)
{
    char ttl[16];
    double next = g->state == G_CLAIMING ? CLAIM_RETRY_S : HEARTBEAT_S;
    struct timeval tv = { (time_t)next,
                          (suseconds_t)((next - floor(next)) * 1e6) };

    snprintf(ttl, sizeof(ttl), "%d", HOST_TTL_MS);
    if (redis_up(g->redis))
        send_beat(g, ttl, beat_reply);
    evtimer_add(g->beat, &tv);
}

static void
on_state(bool up, const char *why, void *arg)
{
    struct global *g = arg;

    if (up)
        beat_now(g);    /* connected once the heartbeat answers */
    else
        set_unreachable(g, why);
}

/* ---- start, stop, status ------------------------------------------------ */

static struct redis *
connect_redis(struct global *g)
{
    const struct config *cfg = g->cfg;
    struct redis_opts o = { cfg->redis_url, cfg->redis_ca_file,
                            cfg->redis_cert_file, cfg->redis_key_file,
                            (double)cfg->redis_timeout_ms / 1e3 };
    char err[512];
    struct redis *r = redis_new(g->base, &o, on_state, g, err, sizeof(err));

    if (r == NULL)
        fatalx(CONFIG_EXIT, "REDIS_URL=%s: %s", g->url, err);
    if ((g->s_beat = redis_script(r, beat_lua)) < 0 ||
        (g->s_take = redis_script(r, take_lua)) < 0 ||
        (g->s_config = redis_script(r, config_lua)) < 0 ||
        (g->s_cap = redis_script(r, cap_lua)) < 0)
        fatalx(1, "out of memory");
    return r;
}

struct global *
global_start(struct event_base *base, const struct config *cfg,
             struct buckets *b, struct buckets *models)
{
    struct global *g;

    if (cfg->redis_url[0] == '\0')
        return NULL;
    if ((g = calloc(1, sizeof(*g))) == NULL)
        fatalx(1, "out of memory");
    g->base = base;
    g->cfg = cfg;
    g->b = b;
    g->models = models;
    g->state = G_CLAIMING;
    g->claim_since_s = NAN;
    g->hosts = g->saved_hosts = g->peak_hosts = recall_hosts(g);
    g->peak_s = clock_mono();
    redis_random_hex(g->nonce, (sizeof(g->nonce) - 1) / 2);
    redisurl_mask(cfg->redis_url, g->url, sizeof(g->url));
    snprintf(g->key_hosts, sizeof(g->key_hosts), "%s{fleet}:hosts",
             cfg->redis_prefix);
    snprintf(g->key_schema, sizeof(g->key_schema), "%s{fleet}:schema",
             cfg->redis_prefix);
    snprintf(g->key_config, sizeof(g->key_config), "%s{fleet}:config",
             cfg->redis_prefix);
    own_config(g);
    if ((g->beat = evtimer_new(base, beat_cb, g)) == NULL)
        fatalx(1, "out of memory");
    g->redis = connect_redis(g);
    /* Claim the host id before serving: the heartbeat's answer, a timeout
     * or a refused connection ends the wait (id_taken's 3 s at most). */
    while (g->state == G_CLAIMING)
        event_base_loop(base, EVLOOP_ONCE);
    /* And lease with the fleet's settings from the first lease on. */
    while (g->state == G_CONNECTED && g->config_inflight)
        event_base_loop(base, EVLOOP_ONCE);
    buckets_set_hook(b, on_kick, g);
    buckets_set_hook(models, on_kick, g);
    buckets_set_feedback_hook(b, on_feedback, g);
    buckets_set_feedback_hook(models, on_feedback, g);
    kick_all(g);
    return g;
}

static void
left(const redisReply *r, const char *err, void *arg)
{
    *(bool *)arg = true;
}

void
global_free(struct global *g)
{
    bool done = false;

    if (g == NULL)
        return;
    buckets_set_hook(g->b, NULL, NULL);
    buckets_set_hook(g->models, NULL, NULL);
    buckets_set_feedback_hook(g->b, NULL, NULL);
    buckets_set_feedback_hook(g->models, NULL, NULL);
    /* Leave the fleet, so that a restart need not wait for the entry to
     * lapse; bounded by the exchange timeout. */
    if (g->state == G_CONNECTED) {
        const char *argv[] = { g->key_hosts, g->key_schema, g->cfg->host_id,
                               g->nonce, "0", SCHEMA };
        if (redis_eval(g->redis, g->s_beat, 2, 6, argv, NULL, left,
                       &done) == 0)
            while (!done)
                event_base_loop(g->base, EVLOOP_ONCE);
    }
    redis_free(g->redis);
    for (size_t i = 0; i < g->ngp; i++)
        event_free(g->gp[i].timer);
    event_free(g->beat);
    free(g);
}

void
global_status(const struct global *g, struct global_status *st)
{
    memset(st, 0, sizeof(*st));
    snprintf(st->url, sizeof(st->url), "%s", g->url);
    st->connected = g->state == G_CONNECTED;
    st->hosts = g->hosts;
    snprintf(st->last_error, sizeof(st->last_error), "%s", g->last_error);
    st->errors = redis_errors(g->redis);
    st->have_config = g->have_fleet;
    snprintf(st->config_hash, sizeof(st->config_hash), "%s", g->fleet_hash);
    snprintf(st->config_host, sizeof(st->config_host), "%s", g->fleet_host);
    st->config_loaded_at = g->fleet_loaded_at;
    st->config_differs = g->have_fleet &&
                         strcmp(g->fleet_hash, g->own_hash) != 0;
    snprintf(st->own_hash, sizeof(st->own_hash), "%s", g->own_hash);
}

/*
 * This host's new load, another text than the fleet's last read, is
 * newer than it (in the order the configuration script keeps: the later
 * load, then the greater host id): the script takes it, as its reply
 * will say, so the buckets and the quotas need not follow the old one
 * for that exchange.  Not when another host's clock put its load later:
 * the reply then says whose is the newest.
 */
static void
own_is_newest(struct global *g)
{
    double at = floor(g->own_loaded_at * 1e3) / 1e3;

    if (g->have_fleet && (strcmp(g->fleet_hash, g->own_hash) == 0 ||
                          at < g->fleet_loaded_at ||
                          (at == g->fleet_loaded_at &&
                           strcmp(g->cfg->host_id, g->fleet_host) <= 0)))
        return;
    g->fleet = g->own;
    snprintf(g->fleet_hash, sizeof(g->fleet_hash), "%s", g->own_hash);
    snprintf(g->fleet_host, sizeof(g->fleet_host), "%s", g->cfg->host_id);
    g->fleet_loaded_at = at;
    g->have_fleet = true;
}

void
global_reconfigure(struct global *g)
{
    if (own_config(g)) {
        log_info("redis: this host's configuration changed (hash %.12s): "
                 "publishing it as the fleet's", g->own_hash);
        own_is_newest(g);
        publish_config(g);
    }
    /* The buckets were reconfigured before cfg held the new file. */
    kick_all(g);
    config_changed(g);
}

void
global_on_config(struct global *g, void (*fn)(void *arg), void *arg)
{
    g->on_config = fn;
    g->on_config_arg = arg;
}

void
global_fleet_quota(const struct global *g, struct global_quota *q)
{
    const struct fleetcfg *f = fleet_in_force(g);

    q->window_days = f != NULL ? f->quota_window_days
                               : g->cfg->quota_window_days;
    q->default_tokens = f != NULL ? f->default_quota_tokens
                                  : g->cfg->default_quota_tokens;
    q->enforcement = f != NULL ? f->quota_enforcement
                               : g->cfg->quota_enforcement;
    snprintf(q->host, sizeof(q->host), "%s",
             f != NULL ? g->fleet_host : g->cfg->host_id);
    q->loaded_at_ms = llround((f != NULL ? g->fleet_loaded_at
                                         : floor(g->own_loaded_at * 1e3) /
                                           1e3) * 1e3);
}

struct redis *
global_redis(struct global *g)
{
    return g->redis;
}

uint64_t
global_take_errors(struct global *g)
{
    uint64_t n = redis_errors(g->redis), d = n - g->errors_taken;

    g->errors_taken = n;
    return d;
}

double
global_take_fallback_grants(struct global *g, const char *provider)
{
    struct gprov *gp = gprov_of(g, false, provider);
    double d;

    if (gp == NULL)
        return 0;
    d = gp->fb_grants - gp->fb_taken;
    gp->fb_taken = gp->fb_grants;
    return d;
}
