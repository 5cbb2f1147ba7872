/*
 * daily.c - per-day limits over the quota module's rolling window.
 *
 * The counters live in a quota table of their own (soft mode, so a charge
 * always counts: the check is done before, by the caller): the requests of
 * a name are its subject "workflow:<name>", its tokens "tenant:<name>".
 * That mapping never leaves this file: the sink, the loader and the status
 * speak of (name, unit).  The limits are kept here, in a hash by name, and
 * not as quota overrides, so that a reload changes them without a write.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HASH_NONFATAL_OOM 1     /* a failed add leaves hh.tbl NULL */
#include <uthash.h>

#include "daily.h"
#include "quota.h"

struct limit {
    UT_hash_handle hh;
    int64_t max[DAILY_UNITS];       /* 0: none */
    /* Multi-host mode: the fleet's usage minus this host's, and this
     * host's own, at the last read (read: there was one). */
    int64_t others[DAILY_UNITS], own_read[DAILY_UNITS];
    bool read[DAILY_UNITS];
    char name[];
};

struct daily {
    struct quota *q;
    struct limit *limits;           /* uthash by name */
    int64_t share_hosts;            /* > 0: checks keep to a share */
};

static const enum quota_kind unit_kind[DAILY_UNITS] = {
    [DAILY_REQUESTS] = QUOTA_WORKFLOW,
    [DAILY_TOKENS] = QUOTA_TENANT,
};

static const char *const unit_names[DAILY_UNITS] = {
    [DAILY_REQUESTS] = "requests",
    [DAILY_TOKENS] = "tokens",
};

/* Arguments that would go to the counter of unit: workflow or tenant. */
#define WF(unit, name) ((unit) == DAILY_REQUESTS ? (name) : NULL)
#define TN(unit, name) ((unit) == DAILY_TOKENS ? (name) : NULL)

struct daily *
daily_new(double window_s)
{
    struct daily *dl = calloc(1, sizeof(*dl));

    if (dl == NULL || (dl->q = quota_new(window_s, 0, false)) == NULL) {
        free(dl);
        return NULL;
    }
    return dl;
}

static void
clear(struct daily *dl)
{
    struct limit *l, *tmp;

    HASH_ITER(hh, dl->limits, l, tmp) {
        HASH_DEL(dl->limits, l);
        free(l);
    }
}

void
daily_free(struct daily *dl)
{
    if (dl == NULL)
        return;
    clear(dl);
    quota_free(dl->q);
    free(dl);
}

static const struct limit *
find(const struct daily *dl, const char *name)
{
    struct limit *l = NULL;

    HASH_FIND_STR(dl->limits, name, l);
    return l;
}

int
daily_set_limit(struct daily *dl, const char *name, int64_t requests,
                int64_t tokens)
{
    struct limit *l = (struct limit *)(uintptr_t)find(dl, name);
    size_t len;

    if (quota_id_valid(name) < 0 || requests < 0 || tokens < 0)
        return -1;
    if (l == NULL) {
        len = strlen(name);
        if ((l = calloc(1, sizeof(*l) + len + 1)) == NULL)
            return -1;
        memcpy(l->name, name, len + 1);
        HASH_ADD_KEYPTR(hh, dl->limits, l->name, len, l);
        if (l->hh.tbl == NULL) {
            free(l);
            return -1;
        }
    }
    l->max[DAILY_REQUESTS] = requests;
    l->max[DAILY_TOKENS] = tokens;
    return 0;
}

/* The entries stay, limits 0: what the fleet was last read to use must
 * outlive a reload while Redis is unreachable. */
void
daily_clear_limits(struct daily *dl)
{
    struct limit *l;

    for (l = dl->limits; l != NULL; l = l->hh.next)
        l->max[DAILY_REQUESTS] = l->max[DAILY_TOKENS] = 0;
}

bool
daily_limited(const struct daily *dl, const char *name)
{
    const struct limit *l = find(dl, name);

    return l != NULL && (l->max[DAILY_REQUESTS] > 0 ||
                         l->max[DAILY_TOKENS] > 0);
}

static bool
time_ok(double t)
{
    return isfinite(t) && fabs(t) < 1e12;
}

/* The fleet's usage of counter u of l, own being this host's. */
static int64_t
fleet_used(const struct limit *l, int u, int64_t own)
{
    return l->read[u] ? own + l->others[u] : own;
}

/*
 * Whether n more fit in counter u of l, this host's own usage own: in the
 * fleet's usage as last read, or (share_hosts > 0) in this host's share
 * of the headroom last seen (daily.h).
 */
static bool
fits(const struct daily *dl, const struct limit *l, int u, int64_t own,
     int64_t n)
{
    int64_t used = fleet_used(l, u, own), limit = l->max[u], head;

    if (dl->share_hosts > 0 && !l->read[u]) {
        used = own;
        limit /= dl->share_hosts;
    } else if (dl->share_hosts > 0) {
        head = limit - l->others[u] - l->own_read[u];
        used = own - l->own_read[u];
        used = used < 0 ? 0 : used;
        limit = (head < 0 ? 0 : head) / dl->share_hosts;
    }
    /* Out when nothing is left, or when n does not fit. */
    return used < limit && n <= limit - used;
}

int
daily_check(const struct daily *dl, const char *name, int64_t requests,
            int64_t tokens, double now_s, struct daily_verdict *v)
{
    const int64_t n[DAILY_UNITS] = { requests, tokens };
    const struct limit *l = find(dl, name);
    struct quota_status st;

    memset(v, 0, sizeof(*v));
    v->allowed = true;
    if (requests < 0 || tokens < 0 || !time_ok(now_s))
        return -1;
    if (l == NULL)
        return 0;
    for (int u = 0; u < DAILY_UNITS; u++) {
        if (l->max[u] == 0)
            continue;
        if (quota_status(dl->q, unit_kind[u], name, now_s, &st) < 0)
            return -1;
        if (fits(dl, l, u, st.tokens_used, n[u]))
            continue;
        v->allowed = false;
        v->unit = (enum daily_unit)u;
        v->used = fleet_used(l, u, st.tokens_used);
        v->limit = l->max[u];
        v->has_frees_at = st.has_reset_at;
        v->frees_at_s = st.reset_at_s;
        return 0;
    }
    return 0;
}

int
daily_charge(struct daily *dl, const char *name, int64_t requests,
             int64_t tokens, double now_s, int64_t *slot_start_ms)
{
    struct quota_decision d;

    if (requests < 0 || tokens < 0 || !time_ok(now_s) ||
        quota_id_valid(name) < 0)
        return -1;
    *slot_start_ms = (int64_t)floor(now_s * 1000 / (double)quota_slot_ms(
                                        dl->q)) * quota_slot_ms(dl->q);
    if (!daily_limited(dl, name))
        return 0;
    /* Both counters, so a limit added by a reload sees the real usage. */
    if (quota_reserve(dl->q, name, NULL, requests, now_s, &d) < 0)
        return -1;
    *slot_start_ms = d.slot_start_ms;
    if (quota_reserve(dl->q, NULL, name, tokens, now_s, &d) < 0) {
        quota_commit(dl->q, name, NULL, *slot_start_ms, requests, 0, now_s);
        return -1;
    }
    return 0;
}

int
daily_reconcile(struct daily *dl, const char *name, enum daily_unit unit,
                int64_t slot_start_ms, int64_t estimate, int64_t actual,
                double now_s)
{
    if ((unsigned)unit >= DAILY_UNITS)
        return -1;
    if (estimate == actual)
        return 0;
    return quota_commit(dl->q, WF(unit, name), TN(unit, name), slot_start_ms,
                        estimate, actual, now_s);
}

static int
by_name(const struct limit *a, const struct limit *b)
{
    return strcmp(a->name, b->name);
}

size_t
daily_list(struct daily *dl, double now_s, struct daily_status *out,
           size_t max)
{
    const struct limit *l;
    struct quota_status st;
    size_t n = 0;

    HASH_SORT(dl->limits, by_name);
    for (l = dl->limits; l != NULL; l = l->hh.next) {
        for (int u = 0; u < DAILY_UNITS; u++) {
            if (l->max[u] == 0)
                continue;
            if (n < max &&
                quota_status(dl->q, unit_kind[u], l->name, now_s, &st) == 0) {
                struct daily_status *ds = &out[n];
                ds->name = l->name;
                ds->unit = (enum daily_unit)u;
                ds->limit = l->max[u];
                ds->used = fleet_used(l, u, st.tokens_used);
                ds->own = st.tokens_used;
                ds->remaining = ds->used < l->max[u] ?
                                l->max[u] - ds->used : 0;
                ds->has_frees_at = st.has_reset_at;
                ds->frees_at_s = st.reset_at_s;
            }
            n++;
        }
    }
    return n;
}

/* ---- persistence ------------------------------------------------------- */

/* The unit and name of a subject of dl->q; -1 for one that is not ours. */
static int
split(const char *subject, enum daily_unit *unit, const char **name)
{
    static const char *const prefix[DAILY_UNITS] = {
        [DAILY_REQUESTS] = "workflow:",
        [DAILY_TOKENS] = "tenant:",
    };

    for (int u = 0; u < DAILY_UNITS; u++) {
        size_t len = strlen(prefix[u]);
        if (strncmp(subject, prefix[u], len) == 0) {
            *unit = (enum daily_unit)u;
            *name = subject + len;
            return 0;
        }
    }
    return -1;
}

struct relay {
    const struct daily_sink *sink;
    void *arg;
};

static int
relay_reset(void *arg, const char *subject)
{
    struct relay *r = arg;
    enum daily_unit unit;
    const char *name;

    if (split(subject, &unit, &name) < 0)
        return -1;
    return r->sink->on_reset(r->arg, name, unit);
}

/* Limits are not stored: the configuration says them. */
static int
relay_limit(void *arg, const char *subject, bool has_limit, int64_t limit)
{
    (void)arg, (void)subject, (void)has_limit, (void)limit;
    return 0;
}

static int
relay_slot(void *arg, const char *subject, int64_t slot_start_ms,
           int64_t count)
{
    struct relay *r = arg;
    enum daily_unit unit;
    const char *name;

    if (split(subject, &unit, &name) < 0)
        return -1;
    return r->sink->on_slot(r->arg, name, unit, slot_start_ms, count);
}

int
daily_flush(struct daily *dl, const struct daily_sink *sink, void *arg)
{
    static const struct quota_sink qs = {
        NULL, relay_reset, relay_limit, relay_slot, NULL, NULL,
    };
    struct relay r = { sink, arg };

    return quota_flush(dl->q, &qs, &r);
}

bool
daily_flush_pending(const struct daily *dl)
{
    return quota_flush_pending(dl->q);
}

/* "workflow:<name>" or "tenant:<name>" into buf; -1 for a bad name. */
static int
subject(char *buf, size_t len, enum daily_unit unit, const char *name)
{
    if ((unsigned)unit >= DAILY_UNITS)
        return -1;
    return quota_subject(buf, len, unit_kind[unit], name) < 0 ? -1 : 0;
}

int
daily_requeue(struct daily *dl, bool reset, const char *name,
              enum daily_unit unit, int64_t slot_start_ms)
{
    char s[QUOTA_SUBJECT_MAX];

    if (subject(s, sizeof(s), unit, name) < 0)
        return -1;
    return quota_requeue(dl->q, reset ? QUOTA_CHANGE_RESET : QUOTA_CHANGE_SLOT,
                         s, slot_start_ms);
}

int
daily_load_slot(struct daily *dl, const char *name, enum daily_unit unit,
                int64_t slot_start_ms, int64_t count, double now_s)
{
    char s[QUOTA_SUBJECT_MAX];

    if (subject(s, sizeof(s), unit, name) < 0)
        return -1;
    return quota_load_slot(dl->q, s, slot_start_ms, count, now_s);
}

int64_t
daily_horizon_ms(const struct daily *dl, double now_s)
{
    return quota_horizon_ms(dl->q, now_s);
}

size_t
daily_prune(struct daily *dl, double now_s)
{
    return quota_prune(dl->q, now_s);
}

/* ---- multi-host mode ---------------------------------------------------- */

void
daily_track_owed(struct daily *dl)
{
    quota_track_owed(dl->q);
    quota_owe_all(dl->q);
}

bool
daily_owed_pending(const struct daily *dl)
{
    return quota_owed_pending(dl->q);
}

struct owed_relay {
    const struct daily_owed_sink *sink;
    void *arg;
};

/* whole is not passed on: a daily counter's slots are always 120 s, and
 * every slot this host still holds is written absolute, so what Redis
 * keeps of its older slots lapses with the day, as it would locally. */
static int
owed_counter(void *arg, const char *subj, int64_t own_used, bool whole)
{
    struct owed_relay *r = arg;
    enum daily_unit unit;
    const char *name;

    (void)whole;
    if (split(subj, &unit, &name) < 0)
        return -1;
    return r->sink->on_counter(r->arg, name, unit, own_used);
}

static int
owed_slot(void *arg, int64_t slot_start_ms, int64_t count)
{
    struct owed_relay *r = arg;

    return r->sink->on_slot(r->arg, slot_start_ms, count);
}

int
daily_owed_take(struct daily *dl, double now_s, size_t max,
                const struct daily_owed_sink *sink, void *arg)
{
    static const struct quota_owed_sink qs = { owed_counter, owed_slot };
    struct owed_relay r = { sink, arg };

    return quota_owed_take(dl->q, now_s, max, &qs, &r);
}

int
daily_owe(struct daily *dl, const char *name, enum daily_unit unit)
{
    char s[QUOTA_SUBJECT_MAX];

    if (subject(s, sizeof(s), unit, name) < 0)
        return -1;
    return quota_owe_subject(dl->q, s);
}

void
daily_owe_all(struct daily *dl)
{
    quota_owe_all(dl->q);
}

int
daily_set_others(struct daily *dl, const char *name, enum daily_unit unit,
                 int64_t others, int64_t own_read)
{
    struct limit *l = (struct limit *)(uintptr_t)find(dl, name);

    if ((unsigned)unit >= DAILY_UNITS || others < 0 || own_read < 0)
        return -1;
    if (l == NULL)          /* no limit: nothing to check it against */
        return 0;
    l->others[unit] = others;
    l->own_read[unit] = own_read;
    l->read[unit] = true;
    return 0;
}

void
daily_set_share(struct daily *dl, int64_t hosts)
{
    dl->share_hosts = hosts > 0 ? hosts : 0;
}

const char *
daily_unit_name(enum daily_unit unit)
{
    return (unsigned)unit < DAILY_UNITS ? unit_names[unit] : "?";
}

int
daily_unit_parse(const char *s, enum daily_unit *unit)
{
    for (int u = 0; u < DAILY_UNITS; u++) {
        if (strcmp(s, unit_names[u]) == 0) {
            *unit = (enum daily_unit)u;
            return 0;
        }
    }
    return -1;
}
