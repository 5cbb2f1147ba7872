/*
 * health.c - provider health shared through Redis; see health.h, and
 * proto/REDIS.md for the key and the scripts.
 *
 * Why a periodic read rather than PUBLISH/SUBSCRIBE: a subscribed
 * connection can send nothing else, so it would be a second connection
 * with its own handshake, timeouts and reconnection, and a message sent
 * while a host was away is lost to it, which a read every HEALTH_POLL_S
 * would have to repair anyway.  The read alone meets the bound (one
 * poll plus one exchange, under a second), costs one small script per
 * daemon per poll, and a host that comes back or starts learns the
 * fleet's cooldowns at its first read.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "global.h"
#include "health.h"
#include "log.h"
#include "redis.h"

#define KEY_MAX (CONFIG_NAME_MAX + 32)
/* A deployment's field: its alias under this prefix, which no provider's
 * name has (a name has no '/'). */
#define MODEL_PREFIX "model/"
#define FIELD_MAX (CONFIG_NAME_MAX + sizeof(MODEL_PREFIX))
#define VALUE_MAX 256
#define CAUSE_MAX 16

/*
 * KEYS health; ARGV provider, op ("fault" or "clear"), ms, cause,
 * retry_after_s, host, instance.  fault: the cooldown ends ms from now
 * unless it already ends later (the later end wins, and its cause,
 * Retry-After, host and instance with it); the fault's time is now either
 * way.  clear: the attempt started ms ago; it clears a cooldown still
 * running unless a fault came after the attempt started.  A field is
 * "<end_ms> <at_ms> <cause> <retry_after_s> <host> <instance> <seq>",
 * at_ms the last fault's time (a clear's: its attempt's start), seq
 * counting the writes.
 */
static const char publish_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local e, at, cause, ra, host, inst, seq = 0, 0, 'ok', '0', '-', '-', 0\n"
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if cur then\n"
    "  local a, b, c, d, h, i, s = string.match(cur,\n"
    "    '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')\n"
    "  if s then e, at, cause, ra, host, inst, seq =\n"
    "    tonumber(a), tonumber(b), c, d, h, i, tonumber(s) end\n"
    "end\n"
    "local ms = tonumber(ARGV[3])\n"
    "if ARGV[2] == 'fault' then\n"
    "  if now + ms > e then e, cause, ra, host, inst =\n"
    "    now + ms, ARGV[4], ARGV[5], ARGV[6], ARGV[7] end\n"
    "  at = math.max(at, now)\n"
    "else\n"
    "  local started = now - ms\n"
    "  if started < at or e <= now then return {'kept', tostring(seq)} end\n"
    "  e, at, cause, ra, host, inst = now, started, 'ok', '0', ARGV[6],\n"
    "    ARGV[7]\n"
    "end\n"
    "seq = seq + 1\n"
    "redis.call('HSET', KEYS[1], ARGV[1], e .. ' ' .. at .. ' ' .. cause ..\n"
    "           ' ' .. ra .. ' ' .. host .. ' ' .. inst .. ' ' .. seq)\n"
    "redis.call('PEXPIRE', KEYS[1], 86400000)\n"
    "return {'set', tostring(seq)}\n";

/* KEYS health: Redis' time in ms, then the hash's fields and values. */
static const char read_lua[] =
    "local t = redis.call('TIME')\n"
    "local r = redis.call('HGETALL', KEYS[1])\n"
    "table.insert(r, 1, tostring(tonumber(t[1]) * 1000 +\n"
    "                            math.floor(tonumber(t[2]) / 1000)))\n"
    "return r\n";

enum owed { OWED_NONE, OWED_FAULT, OWED_CLEAR };

struct hprov {
    char name[FIELD_MAX];       /* the field: a provider, or model/<alias> */
    struct health *h;
    double known_until_s;       /* the latest cooldown end known here */
    enum owed owed;             /* a local change Redis has not taken */
    enum router_outcome cause;  /* OWED_FAULT: the fault */
    double until_s;             /* and its cooldown's end here */
    double retry_after_s;
    double started_s;           /* OWED_CLEAR: the attempt's start */
    unsigned gen, sent_gen;     /* local changes; the one in flight */
    bool inflight;
    char seen[VALUE_MAX];       /* the field's value last applied */
    char origin[CONFIG_NAME_MAX];   /* the host of the remote cooldown */
};

struct health {
    const struct config *cfg;
    struct global *g;
    struct redis *redis;
    health_router_fn router_fn;
    void *arg;
    int s_publish, s_read;
    struct event *poll;
    char key[KEY_MAX];
    char instance[17];          /* random at each start */
    unsigned pending;           /* exchanges in flight */
    bool dead;                  /* freed once they are done */
    bool reading;
    bool refused[2];            /* an error reply to a read [0], a write
                                   [1]: logged */
    struct hprov hp[CONFIG_MAX_PROVIDERS + CONFIG_MAX_MODELS];
    size_t nhp;
};

static struct hprov *
hprov_of(struct health *h, const char *name, bool add)
{
    for (size_t i = 0; i < h->nhp; i++)
        if (strcmp(h->hp[i].name, name) == 0)
            return &h->hp[i];
    if (!add || h->nhp == sizeof(h->hp) / sizeof(h->hp[0]))
        return NULL;
    struct hprov *hp = &h->hp[h->nhp++];
    memset(hp, 0, sizeof(*hp));
    snprintf(hp->name, sizeof(hp->name), "%s", name);
    hp->h = h;
    hp->known_until_s = -HUGE_VAL;
    return hp;
}

static bool
connected(const struct health *h)
{
    struct global_status st;

    global_status(h->g, &st);
    return st.connected;
}

/* An exchange answered or failed: false when h is gone meanwhile. */
static bool
done(struct health *h)
{
    h->pending--;
    if (!h->dead)
        return true;
    if (h->pending == 0)
        free(h);
    return false;
}

static void flush(struct hprov *hp, double now);

/* Redis answered a script with an error (a key of another type, say):
 * logged once until an exchange of the same kind (read, write) succeeds
 * again, each kind on its own, so that one never hides the other. */
static void
refused(struct health *h, bool write, const char *name, const redisReply *r)
{
    const char *what = write ? "write" : "read";

    if (h->refused[write])
        return;
    h->refused[write] = true;
    log_warn("redis: cannot %s the health of %s: %.200s", what, name,
             r->type == REDIS_REPLY_ERROR ? r->str : "an unexpected reply");
}

static void
publish_reply(const redisReply *r, const char *err, void *arg)
{
    struct hprov *hp = arg;

    if (!done(hp->h))
        return;
    hp->inflight = false;
    if (r == NULL)
        return;     /* still owed: written once Redis answers */
    /* An error reply would answer the same again: this one stays local. */
    if (r->type != REDIS_REPLY_ARRAY)
        refused(hp->h, true, hp->name, r);
    else
        hp->h->refused[true] = false;
    if (hp->gen == hp->sent_gen)
        hp->owed = OWED_NONE;
    else
        flush(hp, clock_mono());    /* changed while in flight */
}

/* Write what hp owes Redis, if it is reachable and nothing is in flight. */
static void
flush(struct hprov *hp, double now)
{
    struct health *h = hp->h;
    char ms[32], ra[32];
    const char *op;

    if (hp->owed == OWED_NONE || hp->inflight || !connected(h))
        return;
    if (hp->owed == OWED_FAULT) {
        if (hp->until_s <= now) {       /* ended while Redis was away */
            hp->owed = OWED_NONE;
            return;
        }
        op = "fault";
        snprintf(ms, sizeof(ms), "%.0f", ceil((hp->until_s - now) * 1e3));
    } else {
        op = "clear";
        snprintf(ms, sizeof(ms), "%.0f", fmax(0, (now - hp->started_s) *
                                                  1e3));
    }
    snprintf(ra, sizeof(ra), "%.17g", hp->retry_after_s);
    const char *argv[] = { h->key, hp->name, op, ms,
                           router_outcome_name(hp->cause), ra,
                           h->cfg->host_id, h->instance };
    if (redis_eval(h->redis, h->s_publish, 1, 8, argv, NULL, publish_reply,
                   hp) == 0) {
        h->pending++;
        hp->inflight = true;
        hp->sent_gen = hp->gen;
    }
}

/* After router_report() on idx of r, whose field in the hash is field. */
static void
reported(struct health *h, const char *field, const struct router *r,
         int idx, enum router_outcome outcome, double retry_after_s,
         double started_s, double now)
{
    struct hprov *hp;

    if ((hp = hprov_of(h, field, true)) == NULL)
        return;
    if (outcome == ROUTER_OUTCOME_OK) {
        /* Only a success that cleared a cooldown is news. */
        if (!(now < hp->known_until_s && router_is_healthy(r, idx, now)))
            return;
        hp->owed = OWED_CLEAR;
        hp->started_s = started_s;
        hp->known_until_s = now;
    } else if (outcome != ROUTER_OUTCOME_CLIENT_ERROR) {
        if (!isfinite(retry_after_s) || retry_after_s < 0)
            retry_after_s = 0;
        /* This fault's own end, as router_report computed it. */
        double until = now + fmax(router_get_cooldown_s(r), retry_after_s);
        if (hp->owed != OWED_FAULT || until > hp->until_s) {
            hp->until_s = until;
            hp->cause = outcome;
            hp->retry_after_s = retry_after_s;
        }
        hp->owed = OWED_FAULT;
        hp->known_until_s = fmax(hp->known_until_s, until);
    } else {
        return;
    }
    hp->gen++;
    flush(hp, now);
}

void
health_reported(struct health *h, const struct router *r, int idx,
                enum router_outcome outcome, double retry_after_s,
                double started_s, double now)
{
    if (h != NULL && idx >= 0)
        reported(h, router_name(r, idx), r, idx, outcome, retry_after_s,
                 started_s, now);
}

void
health_reported_model(struct health *h, const struct router *r, int idx,
                      enum router_outcome outcome, double retry_after_s,
                      double started_s, double now)
{
    char field[FIELD_MAX];

    if (h == NULL || idx < 0)
        return;
    snprintf(field, sizeof(field), MODEL_PREFIX "%s", router_name(r, idx));
    reported(h, field, r, idx, outcome, retry_after_s, started_s, now);
}

/* ---- reading the fleet's health ------------------------------------------ */

/* Apply one field (a provider's name, or model/<alias> for router r,
 * the deployments'; its value) read at Redis time rnow_ms, now here. */
static void
apply(struct health *h, struct router *r, const char *name,
      const char *value, double rnow_ms, double now)
{
    double end_ms, at_ms, ra;
    char cause[CAUSE_MAX], host[CONFIG_NAME_MAX], inst[sizeof(h->instance)];
    unsigned long long seq;
    enum router_outcome o;
    struct hprov *hp;
    bool model = strncmp(name, MODEL_PREFIX, strlen(MODEL_PREFIX)) == 0;
    const char *in_r = model ? name + strlen(MODEL_PREFIX) : name;
    int idx = r != NULL ? router_find(r, in_r, strlen(in_r)) : -1;

    if (idx < 0 || strlen(value) >= VALUE_MAX ||
        (hp = hprov_of(h, name, true)) == NULL ||
        strcmp(hp->seen, value) == 0)
        return;
    snprintf(hp->seen, sizeof(hp->seen), "%s", value);
    if (sscanf(value, "%lf %lf %15s %lf %63s %16s %llu", &end_ms, &at_ms,
               cause, &ra, host, inst, &seq) != 7 ||
        strcmp(inst, h->instance) == 0)
        return;     /* not ours to read, or this daemon's own news */
    double until = now + (end_ms - rnow_ms) / 1e3;
    double at = now - (rnow_ms - at_ms) / 1e3;
    bool was_healthy = router_is_healthy(r, idx, now);
    if (strcmp(cause, "ok") == 0) {
        if (router_remote_clear(r, idx, at, now)) {
            hp->known_until_s = now;
            log_info("%s: cooldown cleared by a success on host %s", name,
                     host);
        }
        return;
    }
    if (router_outcome_parse(cause, strlen(cause), &o) < 0 ||
        !router_remote_cooldown(r, idx, until, o, ra, at, now))
        return;
    snprintf(hp->origin, sizeof(hp->origin), "%s", host);
    hp->known_until_s = fmax(hp->known_until_s, until);
    if (was_healthy)
        log_info("%s answered %s on host %s: degraded here too for %.1f s",
                 name, cause, host, until - now);
}

static void
read_reply(const redisReply *r, const char *err, void *arg)
{
    struct health *h = arg;
    struct router *rt, *rm;
    double now = clock_mono(), rnow;

    if (!done(h))
        return;
    h->reading = false;
    if (r == NULL)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 1) {
        refused(h, false, "the fleet", r);
        return;
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return;
    h->refused[false] = false;
    if ((rt = h->router_fn(h->arg, false)) == NULL)
        return;
    rm = h->router_fn(h->arg, true);
    rnow = strtod(r->element[0]->str, NULL);
    for (size_t i = 1; i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str;
        bool model = strncmp(field, MODEL_PREFIX, strlen(MODEL_PREFIX)) == 0;
        apply(h, model ? rm : rt, field, r->element[i + 1]->str, rnow, now);
    }
}

/* Every poll: write what is owed (Redis may be back), read the fleet's. */
static void
poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    double now = clock_mono();
    const char *argv[] = { h->key };

    for (size_t i = 0; i < h->nhp; i++)
        flush(&h->hp[i], now);
    if (!h->reading && connected(h) &&
        redis_eval(h->redis, h->s_read, 1, 1, argv, NULL, read_reply,
                   h) == 0) {
        h->pending++;
        h->reading = true;
    }
}

/* ---- start, stop, status ------------------------------------------------- */

struct health *
health_start(struct event_base *base, const struct config *cfg,
             struct global *g, health_router_fn router_fn, void *arg)
{
    struct timeval tv = { 0, (suseconds_t)(HEALTH_POLL_S * 1e6) };
    struct health *h;

    if (g == NULL)
        return NULL;
    if ((h = calloc(1, sizeof(*h))) == NULL)
        fatalx(1, "out of memory");
    h->cfg = cfg;
    h->g = g;
    h->redis = global_redis(g);
    h->router_fn = router_fn;
    h->arg = arg;
    snprintf(h->key, sizeof(h->key), "%s{fleet}:health", cfg->redis_prefix);
    /* Its own news are skipped by instance, not host id: a daemon
     * restarted on the same host learns back the cooldowns its
     * predecessor wrote. */
    redis_random_hex(h->instance, (sizeof(h->instance) - 1) / 2);
    if ((h->s_publish = redis_script(h->redis, publish_lua)) < 0 ||
        (h->s_read = redis_script(h->redis, read_lua)) < 0 ||
        (h->poll = event_new(base, -1, EV_PERSIST, poll_cb, h)) == NULL ||
        event_add(h->poll, &tv) < 0)
        fatalx(1, "out of memory");
    return h;
}

void
health_free(struct health *h)
{
    if (h == NULL)
        return;
    event_free(h->poll);
    h->dead = true;
    if (h->pending == 0)
        free(h);
}

const char *
health_origin(const struct health *h, const char *provider)
{
    for (size_t i = 0; h != NULL && i < h->nhp; i++)
        if (strcmp(h->hp[i].name, provider) == 0)
            return h->hp[i].origin;
    return "";
}
