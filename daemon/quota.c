/*
 * quota.c — rolling-window token quotas (llmguardd(8), "Quotas").
 *
 * See quota.h for the window math. A subject's slots are kept sorted by
 * index; a slot's expiry grows with its index, so the slots that no longer
 * count are always a prefix of the array. Everything the store has not seen
 * yet (dirty slots, a changed override, a reset) puts the subject on one
 * queue, which quota_flush() walks; a queued subject is never freed.
 *
 * Subjects are found through a hash table of chains that grows by
 * doubling, rehashed incrementally: while a rehash runs there are two
 * tables, and every lookup that may add a subject moves a few chains from
 * the old one to the new, so no single request pays for rehashing a
 * million subjects (uthash did that in one go: 120 ms at 930,000).  They
 * are also on one list, which pruning walks a step at a time.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "quota.h"

#define TIME_MAX_S 1e12                       /* |times| below this */
#define TIME_MAX_MS INT64_C(1000000000000000) /* the same in ms */

#define HTAB_MIN_SIZE 16    /* chains of a new table (a power of 2) */
#define HTAB_MAX_LOAD 2     /* subjects per chain before doubling */
#define HTAB_STEP_CHAINS 4  /* chains moved per lookup while rehashing */
#define HTAB_NOT_REHASHING SIZE_MAX

struct slot {
    int64_t idx;
    int64_t tokens;
    bool dirty; /* changed since the last flush */
    bool owed;  /* changed since the last write to the fleet (Redis) */
};

struct subject {
    struct subject *chain;  /* next in its hash chain */
    uint32_t hash;
    uint32_t keylen;
    TAILQ_ENTRY(subject) all_link;
    TAILQ_ENTRY(subject) queue_link;
    struct slot *slots; /* sorted by idx, unique */
    uint32_t n_slots;
    uint32_t cap_slots;
    int64_t limit; /* the override, when has_limit */
    bool has_limit;
    bool limit_dirty;   /* override changed since flush */
    bool reset_pending; /* stored rows void; slots dirty */
    bool queued;        /* on quota.queue */
    struct fleet *fleet; /* multi-host mode only, else NULL */
    char key[];         /* the subject string */
};

TAILQ_HEAD(subject_queue, subject);

/* A subject's multi-host state, apart so that single-host mode pays one
 * pointer for it. */
struct fleet {
    TAILQ_ENTRY(fleet) owed_link;
    struct subject *s;
    int64_t others;     /* the fleet's usage minus this host's, last read */
    int64_t own_read;   /* this host's own usage at that read */
    bool read;          /* others was read at least once */
    bool owed_queued;   /* on quota.owed */
    bool owed_whole;    /* owed all its slots: the fleet's copy of this
                           host's part is to be replaced, not patched */
};
TAILQ_HEAD(fleet_queue, fleet);

/* One table of chains; size is 0 or a power of 2. */
struct htab {
    struct subject **chains;
    size_t size;
};

struct quota {
    double window_s;
    int64_t slot_ms;
    int64_t prev_slot_ms;       /* before the last change of slot_ms */
    int64_t default_limit;
    bool hard;
    struct htab ht[2];          /* ht[1] only while rehashing into it */
    size_t rehash_next;         /* next chain of ht[0] to move */
    size_t count;               /* subjects */
    struct subject_queue all;   /* every subject, oldest first */
    struct subject *prune_next; /* where the prune sweep goes on */
    bool prune_running;
    struct subject_queue queue; /* subjects with pending changes */
    struct fleet_queue owed;    /* and with slots the fleet has not seen */
    bool track_owed;            /* multi-host mode: keep quota.owed */
    size_t bytes;               /* subjects and slot arrays */
};

/* A subject's standing at some instant. */
struct usage {
    int64_t used;
    int64_t limit;
    bool has_reset_at;
    double reset_at_s;
};

static const char *const kind_prefix[] = {
    [QUOTA_WORKFLOW] = "workflow:",
    [QUOTA_TENANT] = "tenant:",
};

/* a + b clamped to [0, INT64_MAX], for a >= 0. */
static int64_t
add_clamped(int64_t a, int64_t b)
{
    int64_t r;

    assert(a >= 0);
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : 0;
    return r < 0 ? 0 : r;
}

static bool
time_ok(double t)
{
    return isfinite(t) && fabs(t) < TIME_MAX_S;
}

static bool
ms_ok(int64_t t_ms)
{
    return t_ms > -TIME_MAX_MS && t_ms < TIME_MAX_MS;
}

static bool
config_ok(double window_s, int64_t default_limit)
{
    return time_ok(window_s) && window_s > 0 && default_limit >= 0;
}

/* max(1 s, window / 720), in whole milliseconds. */
static int64_t
slot_size_ms(double window_s)
{
    return llround(fmax(QUOTA_SLOT_MIN_S, window_s / QUOTA_SLOTS_PER_WINDOW) *
                   1000);
}

static int64_t
floor_div(int64_t a, int64_t b)
{
    assert(b > 0);
    return a / b - (a % b < 0);
}

static double
slot_start_s(const struct quota *q, int64_t idx)
{
    return (double)(idx * q->slot_ms) / 1000;
}

/* The slot holding t: slot_start_s(k) <= t < slot_start_s(k + 1). */
static int64_t
slot_of(const struct quota *q, double t)
{
    int64_t idx = (int64_t)floor(t * 1000 / (double)q->slot_ms);

    if (slot_start_s(q, idx + 1) <= t)
        idx++;
    else if (slot_start_s(q, idx) > t)
        idx--;
    return idx;
}

/* Slot idx counts while now_s is before this instant. */
static double
slot_expiry(const struct quota *q, int64_t idx)
{
    return slot_start_s(q, idx + 1) + q->window_s;
}

/* 0 when subject is "workflow:<id>" or "tenant:<id>" with a valid id. */
static int
subject_valid(const char *subject)
{
    for (size_t k = 0; k < sizeof(kind_prefix) / sizeof(kind_prefix[0]); k++) {
        size_t plen = strlen(kind_prefix[k]);

        if (strncmp(subject, kind_prefix[k], plen) == 0)
            return quota_id_valid(subject + plen);
    }
    return -1;
}

/* Ids: 1..QUOTA_ID_MAX bytes, none of them a control character. */
int
quota_id_valid(const char *id)
{
    size_t len;

    if (id == NULL)
        return -1;
    len = strnlen(id, QUOTA_ID_MAX + 1);
    if (len == 0 || len > QUOTA_ID_MAX)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        unsigned char next = (unsigned char)id[i + 1];

        if (c < 0x20 || c == 0x7f)
            return -1;
        if (c == 0xc2 && next >= 0x80 && next <= 0x9f)
            return -1; /* C1 control in UTF-8 */
    }
    return 0;
}

/* "workflow:" or "tenant:" followed by a valid id. */
int
quota_subject(char *buf, size_t len, enum quota_kind kind, const char *id)
{
    size_t plen, ilen;

    if ((kind != QUOTA_WORKFLOW && kind != QUOTA_TENANT) ||
        quota_id_valid(id) < 0)
        return -1;
    plen = strlen(kind_prefix[kind]);
    ilen = strlen(id);
    if (plen + ilen >= len)
        return -1;
    /* Not snprintf: this runs for every subject of every reservation. */
    memcpy(buf, kind_prefix[kind], plen);
    memcpy(buf + plen, id, ilen + 1);
    return (int)(plen + ilen);
}

/* FNV-1a over the subject string. */
static uint32_t
key_hash(const char *key, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return h;
}

static bool
rehashing(const struct quota *q)
{
    return q->rehash_next != HTAB_NOT_REHASHING;
}

/* The chain of ht that holds hash, or NULL for an empty table. */
static struct subject **
chain_of(const struct htab *ht, uint32_t hash)
{
    return ht->size ? &ht->chains[hash & (ht->size - 1)] : NULL;
}

/* Moves up to HTAB_STEP_CHAINS chains of ht[0] to ht[1]; ends the rehash
 * when ht[0] is empty. */
static void
rehash_step(struct quota *q)
{
    for (int k = 0; k < HTAB_STEP_CHAINS && rehashing(q); k++) {
        struct subject *s = q->ht[0].chains[q->rehash_next], *next;

        for (; s != NULL; s = next) {
            struct subject **c = chain_of(&q->ht[1], s->hash);

            next = s->chain;
            s->chain = *c;
            *c = s;
        }
        q->ht[0].chains[q->rehash_next] = NULL;
        if (++q->rehash_next == q->ht[0].size) {
            free(q->ht[0].chains);
            q->ht[0] = q->ht[1];
            q->ht[1] = (struct htab){NULL, 0};
            q->rehash_next = HTAB_NOT_REHASHING;
        }
    }
}

/* Starts a rehash into a table twice as big (or the first table); when
 * that cannot be allocated, chains just grow longer. */
static void
htab_grow(struct quota *q)
{
    size_t size = q->ht[0].size ? 2 * q->ht[0].size : HTAB_MIN_SIZE;
    struct subject **chains = calloc(size, sizeof(*chains));

    if (chains == NULL)
        return;
    if (q->ht[0].size == 0) {
        q->ht[0] = (struct htab){chains, size};
        return;
    }
    q->ht[1] = (struct htab){chains, size};
    q->rehash_next = 0;
}

/* Where the subject named key is linked, or the empty end of its chain. */
static struct subject **
subject_link(const struct quota *q, const char *key, size_t len,
             uint32_t hash)
{
    for (int t = 0; t < (rehashing(q) ? 2 : 1); t++) {
        struct subject **p = chain_of(&q->ht[t], hash);

        for (; p != NULL && *p != NULL; p = &(*p)->chain)
            if ((*p)->hash == hash && (*p)->keylen == len &&
                memcmp((*p)->key, key, len) == 0)
                return p;
    }
    return NULL;
}

static struct subject *
subject_find(const struct quota *q, const char *key)
{
    size_t len = strlen(key);
    struct subject **p = subject_link(q, key, len, key_hash(key, len));

    return p != NULL ? *p : NULL;
}

/* The subject named key, created empty if needed; NULL when out of memory. */
static struct subject *
subject_get(struct quota *q, const char *key)
{
    size_t len = strlen(key), size;
    uint32_t hash = key_hash(key, len);
    struct subject **p, *s;

    if (rehashing(q))
        rehash_step(q);
    if ((p = subject_link(q, key, len, hash)) != NULL)
        return *p;
    if (!rehashing(q) && q->count >= HTAB_MAX_LOAD * q->ht[0].size)
        htab_grow(q);
    if (q->ht[0].size == 0)
        return NULL;
    size = sizeof(*s) + len + 1;
    if ((s = calloc(1, size)) == NULL)
        return NULL;
    memcpy(s->key, key, len + 1);
    s->hash = hash;
    s->keylen = (uint32_t)len;
    p = chain_of(&q->ht[rehashing(q) ? 1 : 0], hash);
    s->chain = *p;
    *p = s;
    TAILQ_INSERT_TAIL(&q->all, s, all_link);
    q->count++;
    q->bytes += size;
    return s;
}

/* Takes s out of the table and the list (the prune sweep steps over it). */
static void
subject_unlink(struct quota *q, struct subject *s)
{
    struct subject **p = subject_link(q, s->key, s->keylen, s->hash);

    assert(p != NULL && *p == s);
    *p = s->chain;
    if (q->prune_next == s)
        q->prune_next = TAILQ_NEXT(s, all_link);
    TAILQ_REMOVE(&q->all, s, all_link);
    if (--q->count == 0) {
        /* The last one: give the tables back, as they may be large. */
        free(q->ht[0].chains);
        free(q->ht[1].chains);
        q->ht[0] = q->ht[1] = (struct htab){NULL, 0};
        q->rehash_next = HTAB_NOT_REHASHING;
    }
}

/* Frees s when it holds nothing: no slot, no override, nothing queued. */
static void
subject_release(struct quota *q, struct subject *s)
{
    if (s->n_slots > 0 || s->has_limit || s->queued ||
        (s->fleet != NULL && s->fleet->owed_queued))
        return;
    assert(!s->limit_dirty && !s->reset_pending);
    subject_unlink(q, s);
    q->bytes -= sizeof(*s) + s->keylen + 1 +
                (size_t)s->cap_slots * sizeof(struct slot);
    if (s->fleet != NULL)
        q->bytes -= sizeof(*s->fleet);
    free(s->fleet);
    free(s->slots);
    free(s);
}

static void
subject_enqueue(struct quota *q, struct subject *s)
{
    if (!s->queued) {
        TAILQ_INSERT_TAIL(&q->queue, s, queue_link);
        s->queued = true;
    }
}

/* s's multi-host state, made if needed; NULL when out of memory. */
static struct fleet *
subject_fleet(struct quota *q, struct subject *s)
{
    if (s->fleet != NULL)
        return s->fleet;
    if ((s->fleet = calloc(1, sizeof(*s->fleet))) != NULL) {
        s->fleet->s = s;
        q->bytes += sizeof(*s->fleet);
    }
    return s->fleet;
}

/* Multi-host mode: the fleet is owed slot sl of s.  Out of memory, the
 * slot goes with the next write of s, or the rebuild of a restart. */
static void
subject_owe(struct quota *q, struct subject *s, struct slot *sl)
{
    struct fleet *f;

    if (!q->track_owed)
        return;
    sl->owed = true;
    if ((f = subject_fleet(q, s)) != NULL && !f->owed_queued) {
        TAILQ_INSERT_TAIL(&q->owed, f, owed_link);
        f->owed_queued = true;
    }
}

/* Owes the fleet every slot of s, as a whole (after a failed write, a
 * rebuild, a new slot size): the write that carries them replaces all
 * that the fleet holds of this host's part, so no slot it no longer has
 * (one of another size) stays behind. */
static void
subject_owe_all(struct quota *q, struct subject *s)
{
    for (uint32_t i = 0; i < s->n_slots; i++)
        subject_owe(q, s, &s->slots[i]);
    if (s->fleet != NULL && s->fleet->owed_queued)
        s->fleet->owed_whole = true;
}

/* The fleet's usage beside s's own (0 in single-host mode). */
static int64_t
subject_others(const struct subject *s)
{
    return s->fleet != NULL ? s->fleet->others : 0;
}

/* Queues every slot of s and the deletion of its stored rows. */
static void
subject_mark_rewrite(struct quota *q, struct subject *s)
{
    for (uint32_t i = 0; i < s->n_slots; i++)
        s->slots[i].dirty = true;
    s->reset_pending = true;
    subject_enqueue(q, s);
}

/* Gives s room for exactly cap slots (cap >= n_slots; 0 frees the array). */
static int
slots_resize(struct quota *q, struct subject *s, uint32_t cap)
{
    struct slot *p = NULL;

    assert(cap >= s->n_slots);
    if (cap == 0)
        free(s->slots);
    else if ((p = realloc(s->slots, cap * sizeof(*p))) == NULL)
        return -1;
    q->bytes -= (size_t)s->cap_slots * sizeof(*p);
    q->bytes += (size_t)cap * sizeof(*p);
    s->slots = p;
    s->cap_slots = cap;
    return 0;
}

/* Makes sure one more slot fits in s without allocating. */
static int
slots_make_room(struct quota *q, struct subject *s)
{
    if (s->n_slots < s->cap_slots)
        return 0;
    return slots_resize(q, s, s->cap_slots ? s->cap_slots * 2 : 1);
}

/* Position of the first slot of s with index >= idx. */
static uint32_t
slots_search(const struct subject *s, int64_t idx)
{
    uint32_t lo = 0, hi = s->n_slots;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (s->slots[mid].idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct slot *
slot_find(const struct subject *s, int64_t idx)
{
    uint32_t i = slots_search(s, idx);

    return i < s->n_slots && s->slots[i].idx == idx ? &s->slots[i] : NULL;
}

/* Slot idx of s, inserted empty if needed; the caller made room. */
static struct slot *
slot_get(struct subject *s, int64_t idx)
{
    uint32_t i = slots_search(s, idx);

    if (i < s->n_slots && s->slots[i].idx == idx)
        return &s->slots[i];
    assert(s->n_slots < s->cap_slots);
    memmove(&s->slots[i + 1], &s->slots[i],
            (s->n_slots - i) * sizeof(struct slot));
    s->slots[i] = (struct slot){.idx = idx};
    s->n_slots++;
    return &s->slots[i];
}

/* Position of the first slot of s that still counts at now_s. */
static uint32_t
slots_first_counted(const struct quota *q, const struct subject *s,
                    double now_s)
{
    uint32_t lo = 0, hi = s->n_slots;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (now_s < slot_expiry(q, s->slots[mid].idx))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Drops the slots of s that no longer count; returns how many. */
static uint32_t
slots_trim(struct quota *q, struct subject *s, double now_s)
{
    uint32_t k = slots_first_counted(q, s, now_s);

    if (k == 0)
        return 0;
    s->n_slots -= k;
    memmove(s->slots, s->slots + k, s->n_slots * sizeof(struct slot));
    if (s->n_slots <= s->cap_slots / 4)
        (void)slots_resize(q, s, s->n_slots * 2); /* shrinking may fail */
    return k;
}

/* Usage of s (NULL: unseen) at now_s. */
static void
subject_usage(const struct quota *q, const struct subject *s, double now_s,
              struct usage *u)
{
    *u = (struct usage){.limit = q->default_limit, .reset_at_s = -1};
    if (s == NULL)
        return;
    if (s->has_limit)
        u->limit = s->limit;
    u->used = subject_others(s);
    for (uint32_t i = slots_first_counted(q, s, now_s); i < s->n_slots; i++) {
        const struct slot *sl = &s->slots[i];

        if (sl->tokens == 0)
            continue;
        if (!u->has_reset_at) {
            u->has_reset_at = true;
            u->reset_at_s = slot_expiry(q, sl->idx);
        }
        u->used = add_clamped(u->used, sl->tokens);
    }
}

static int64_t
usage_remaining(const struct usage *u)
{
    return u->used < u->limit ? u->limit - u->used : 0;
}

/* Builds the subjects of a request into keys; returns how many, or -1. */
static int
request_keys(const char *workflow_id, const char *tenant_id,
             char keys[2][QUOTA_SUBJECT_MAX])
{
    const char *ids[2] = {workflow_id, tenant_id};
    int n = 0;

    for (int k = 0; k < 2; k++) {
        if (ids[k] == NULL)
            continue;
        if (quota_subject(keys[n], QUOTA_SUBJECT_MAX, (enum quota_kind)k,
                          ids[k]) < 0)
            return -1;
        n++;
    }
    return n > 0 ? n : -1;
}

/*
 * Adds delta to slot idx of each of the n subjects, all or none. For a
 * positive delta every subject is first found or created, trimmed and given
 * room for one more slot, so that nothing can fail once charging starts. A
 * negative delta only lowers slots that exist, never below 0.
 */
static int
charge(struct quota *q, char keys[][QUOTA_SUBJECT_MAX], int n, int64_t idx,
       int64_t delta, double now_s)
{
    struct subject *subj[2] = {NULL, NULL};

    assert(n >= 1 && n <= 2);
    for (int i = 0; i < n; i++) {
        if (delta < 0) {
            subj[i] = subject_find(q, keys[i]);
            continue;
        }
        if ((subj[i] = subject_get(q, keys[i])) != NULL) {
            slots_trim(q, subj[i], now_s);
            if (slots_make_room(q, subj[i]) == 0)
                continue;
        }
        for (int j = 0; j <= i; j++)
            if (subj[j] != NULL)
                subject_release(q, subj[j]);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct slot *sl;

        if (subj[i] == NULL)
            continue;
        sl = delta > 0 ? slot_get(subj[i], idx) : slot_find(subj[i], idx);
        if (sl == NULL || (delta < 0 && sl->tokens == 0))
            continue;
        sl->tokens = add_clamped(sl->tokens, delta);
        sl->dirty = true;
        subject_owe(q, subj[i], sl);
        subject_enqueue(q, subj[i]);
    }
    return 0;
}

/* Fills *d from the usages u[0..n) of the subjects in keys. */
static void
decide(struct quota_decision *d, char keys[][QUOTA_SUBJECT_MAX],
       const struct usage *u, int n, int over, bool allowed,
       int64_t slot_start_ms)
{
    int pick = over;

    if (pick < 0) {
        pick = 0;
        for (int i = 1; i < n; i++)
            if (usage_remaining(&u[i]) < usage_remaining(&u[pick]))
                pick = i;
    }
    *d = (struct quota_decision){
        .allowed = allowed,
        .over_quota = over >= 0,
        .used = u[pick].used,
        .limit = u[pick].limit,
        .has_reset_at = u[pick].has_reset_at,
        .reset_at_s = u[pick].reset_at_s,
        .remaining = usage_remaining(&u[pick]),
        .slot_start_ms = slot_start_ms,
    };
    memcpy(d->subject, keys[pick], strlen(keys[pick]) + 1);
}

/* Checks every subject first, then charges all of them or none. */
int
quota_reserve(struct quota *q, const char *workflow_id, const char *tenant_id,
              int64_t tokens, double now_s, struct quota_decision *d)
{
    char keys[2][QUOTA_SUBJECT_MAX];
    struct usage u[2];
    int n, over = -1;
    int64_t idx;

    if (tokens < 0 || !time_ok(now_s))
        return -1;
    if ((n = request_keys(workflow_id, tenant_id, keys)) < 0)
        return -1;
    idx = slot_of(q, now_s);
    for (int i = 0; i < n; i++) {
        subject_usage(q, subject_find(q, keys[i]), now_s, &u[i]);
        if (over < 0 && tokens > u[i].limit - u[i].used)
            over = i;
    }
    if (over >= 0 && q->hard) {
        decide(d, keys, u, n, over, false, idx * q->slot_ms);
    } else {
        if (tokens > 0) {
            if (charge(q, keys, n, idx, tokens, now_s) < 0)
                return -1;
            for (int i = 0; i < n; i++)
                subject_usage(q, subject_find(q, keys[i]), now_s, &u[i]);
        }
        decide(d, keys, u, n, over, true, idx * q->slot_ms);
    }
    d->workflow_remaining = workflow_id != NULL ? usage_remaining(&u[0]) : 0;
    return 0;
}

/* Whether tokens more fit in s's share of the headroom last seen. */
static bool
share_fits(const struct quota *q, const struct subject *s, int64_t tokens,
           int64_t hosts, double now_s, struct usage *u)
{
    int64_t own, head;

    subject_usage(q, s, now_s, u);
    if (s == NULL)
        return tokens <= u->limit / hosts;
    own = u->used - subject_others(s);
    if (s->fleet == NULL || !s->fleet->read)
        return own + tokens <= u->limit / hosts;
    head = u->limit - s->fleet->others - s->fleet->own_read;
    return own - s->fleet->own_read + tokens <=
           (head < 0 ? 0 : head) / hosts;
}

int
quota_reserve_share(struct quota *q, const char *workflow_id,
                    const char *tenant_id, int64_t tokens, int64_t hosts,
                    double now_s, struct quota_decision *d)
{
    char keys[2][QUOTA_SUBJECT_MAX];
    struct usage u[2];
    int n, over = -1;
    int64_t idx;

    if (tokens < 0 || hosts < 1 || !time_ok(now_s))
        return -1;
    if ((n = request_keys(workflow_id, tenant_id, keys)) < 0)
        return -1;
    idx = slot_of(q, now_s);
    for (int i = 0; i < n; i++)
        if (!share_fits(q, subject_find(q, keys[i]), tokens, hosts, now_s,
                        &u[i]) && over < 0)
            over = i;
    if (over < 0 && tokens > 0) {
        if (charge(q, keys, n, idx, tokens, now_s) < 0)
            return -1;
        for (int i = 0; i < n; i++)
            subject_usage(q, subject_find(q, keys[i]), now_s, &u[i]);
    }
    decide(d, keys, u, n, over, over < 0, idx * q->slot_ms);
    d->workflow_remaining = workflow_id != NULL ? usage_remaining(&u[0]) : 0;
    return 0;
}

int
quota_charge(struct quota *q, const char *workflow_id, const char *tenant_id,
             int64_t tokens, double now_s, struct quota_decision *d)
{
    bool hard = q->hard;
    int rc;

    q->hard = false;
    rc = quota_reserve(q, workflow_id, tenant_id, tokens, now_s, d);
    q->hard = hard;
    return rc;
}

/* Moves a reservation from its estimate to the actual tokens. */
int
quota_commit(struct quota *q, const char *workflow_id, const char *tenant_id,
             int64_t slot_start_ms, int64_t estimate, int64_t actual,
             double now_s)
{
    char keys[2][QUOTA_SUBJECT_MAX];
    int n;
    int64_t idx, delta;

    if (estimate < 0 || actual < 0 || !ms_ok(slot_start_ms) || !time_ok(now_s))
        return -1;
    if ((n = request_keys(workflow_id, tenant_id, keys)) < 0)
        return -1;
    if ((delta = actual - estimate) == 0)
        return 0;
    idx = floor_div(slot_start_ms, q->slot_ms);
    if (!(now_s < slot_expiry(q, idx))) {
        if (delta < 0)
            return 0;
        idx = slot_of(q, now_s);
    }
    return charge(q, keys, n, idx, delta, now_s);
}

/* A read-only view of one subject; expired slots are skipped. */
int
quota_status(const struct quota *q, enum quota_kind kind, const char *id,
             double now_s, struct quota_status *st)
{
    char key[QUOTA_SUBJECT_MAX];
    const struct subject *s;
    struct usage u;

    if (!time_ok(now_s) || quota_subject(key, sizeof(key), kind, id) < 0)
        return -1;
    s = subject_find(q, key);
    subject_usage(q, s, now_s, &u);
    *st = (struct quota_status){
        .tokens_used = u.used,
        .tokens_remaining = usage_remaining(&u),
        .tokens_limit = u.limit,
        .has_override = s != NULL && s->has_limit,
        .known = s != NULL,
        .window_start_s = now_s - q->window_s,
        .window_end_s = now_s,
        .has_reset_at = u.has_reset_at,
        .reset_at_s = u.reset_at_s,
    };
    return 0;
}

/* a uses more than b (ties: the smaller subject first). */
static bool
uses_more(const struct quota_entry *a, const struct quota_entry *b)
{
    if (a->st.tokens_used != b->st.tokens_used)
        return a->st.tokens_used > b->st.tokens_used;
    return strcmp(a->subject, b->subject) < 0;
}

/* Restore the min-heap h[0..n-1] (the least used at the root) from i. */
static void
sift_down(struct quota_entry *h, size_t n, size_t i)
{
    for (;;) {
        size_t least = i, l = 2 * i + 1, r = l + 1;
        if (l < n && uses_more(&h[least], &h[l]))
            least = l;
        if (r < n && uses_more(&h[least], &h[r]))
            least = r;
        if (least == i)
            return;
        struct quota_entry t = h[i];
        h[i] = h[least];
        h[least] = t;
        i = least;
    }
}

static int
entry_cmp(const void *a, const void *b)
{
    return uses_more(a, b) ? -1 : uses_more(b, a) ? 1 : 0;
}

int
quota_top(const struct quota *q, enum quota_kind kind, double now_s,
          struct quota_entry *top, size_t n, size_t *count, size_t *total)
{
    const char *prefix = kind_prefix[kind];
    size_t plen = strlen(prefix), held = 0;
    const struct subject *s;

    *count = *total = 0;
    if (!time_ok(now_s))
        return -1;
    TAILQ_FOREACH(s, &q->all, all_link) {
        struct quota_entry e;
        struct usage u;
        if (strncmp(s->key, prefix, plen) != 0)
            continue;
        (*total)++;
        subject_usage(q, s, now_s, &u);
        e.subject = s->key;
        e.st = (struct quota_status){
            .tokens_used = u.used,
            .tokens_remaining = usage_remaining(&u),
            .tokens_limit = u.limit,
            .has_override = s->has_limit,
            .known = true,
            .window_start_s = now_s - q->window_s,
            .window_end_s = now_s,
            .has_reset_at = u.has_reset_at,
            .reset_at_s = u.reset_at_s,
        };
        if (held < n) {
            top[held++] = e;
            if (held == n)      /* heapify once full */
                for (size_t i = n / 2; i-- > 0;)
                    sift_down(top, n, i);
        } else if (n > 0 && uses_more(&e, &top[0])) {
            top[0] = e;
            sift_down(top, n, 0);
        }
    }
    qsort(top, held, sizeof(*top), entry_cmp);
    *count = held;
    return 0;
}

/* Sets an override, creating the subject if needed. */
int
quota_set(struct quota *q, enum quota_kind kind, const char *id, int64_t limit)
{
    char key[QUOTA_SUBJECT_MAX];
    struct subject *s;

    if (limit < 0 || quota_subject(key, sizeof(key), kind, id) < 0)
        return -1;
    if ((s = subject_get(q, key)) == NULL)
        return -1;
    s->has_limit = true;
    s->limit = limit;
    s->limit_dirty = true;
    subject_enqueue(q, s);
    return 0;
}

/* Drops an override; the subject is freed at the next flush if idle. */
int
quota_unset(struct quota *q, enum quota_kind kind, const char *id)
{
    char key[QUOTA_SUBJECT_MAX];
    struct subject *s;

    if (quota_subject(key, sizeof(key), kind, id) < 0)
        return -1;
    if ((s = subject_find(q, key)) == NULL || !s->has_limit)
        return 0;
    s->has_limit = false;
    s->limit = 0;
    s->limit_dirty = true;
    subject_enqueue(q, s);
    return 0;
}

/* Forgets a subject's usage, keeping it until the store has been told. */
int
quota_reset(struct quota *q, enum quota_kind kind, const char *id)
{
    char key[QUOTA_SUBJECT_MAX];
    struct subject *s;

    if (quota_subject(key, sizeof(key), kind, id) < 0)
        return -1;
    if ((s = subject_find(q, key)) == NULL)
        return 0;
    if (s->fleet != NULL)
        s->fleet->others = s->fleet->own_read = 0;
    if (q->track_owed) {
        /* The fleet is told this host's share is 0 now, slot by slot. */
        for (uint32_t i = 0; i < s->n_slots; i++) {
            s->slots[i].tokens = 0;
            subject_owe(q, s, &s->slots[i]);
        }
        subject_mark_rewrite(q, s);
        return 0;
    }
    s->n_slots = 0;
    (void)slots_resize(q, s, 0);
    s->reset_pending = true;
    subject_enqueue(q, s);
    return 0;
}

/* Hands the pending changes of s to the sink; -1 when a callback fails. */
static int
flush_subject(const struct quota *q, const struct subject *s,
              const struct quota_sink *sink, void *arg, int *calls)
{
    if (s->reset_pending) {
        if (sink->on_reset(arg, s->key) < 0)
            return -1;
        (*calls)++;
    }
    if (s->limit_dirty) {
        if (sink->on_limit(arg, s->key, s->has_limit, s->limit) < 0)
            return -1;
        (*calls)++;
    }
    for (uint32_t i = 0; i < s->n_slots; i++) {
        const struct slot *sl = &s->slots[i];

        assert(sl->dirty || !s->reset_pending);
        if (!sl->dirty)
            continue;
        if (sink->on_slot(arg, s->key, sl->idx * q->slot_ms, sl->tokens) < 0)
            return -1;
        (*calls)++;
    }
    return 0;
}

/* Delivers the queue in one transaction; clears it only once committed. */
int
quota_flush(struct quota *q, const struct quota_sink *sink, void *arg)
{
    struct subject *s;
    int calls = 0;

    if (TAILQ_EMPTY(&q->queue))
        return 0;
    if (sink->begin != NULL && sink->begin(arg) < 0)
        goto fail;
    TAILQ_FOREACH(s, &q->queue, queue_link)
    {
        if (flush_subject(q, s, sink, arg, &calls) < 0)
            goto fail;
    }
    if (sink->commit != NULL && sink->commit(arg) < 0)
        goto fail;

    while ((s = TAILQ_FIRST(&q->queue)) != NULL) {
        TAILQ_REMOVE(&q->queue, s, queue_link);
        s->queued = false;
        s->reset_pending = false;
        s->limit_dirty = false;
        for (uint32_t i = 0; i < s->n_slots; i++)
            s->slots[i].dirty = false;
        subject_release(q, s);
    }
    return calls;

fail:
    if (sink->rollback != NULL)
        sink->rollback(arg);
    return -1;
}

/* Queues again a change that a flush delivered but the store never got. */
int
quota_requeue(struct quota *q, enum quota_change what, const char *subject,
              int64_t slot_start_ms)
{
    struct subject *s;
    struct slot *sl;

    if (subject == NULL || subject_valid(subject) < 0)
        return -1;
    switch (what) {
    case QUOTA_CHANGE_RESET:
    case QUOTA_CHANGE_LIMIT:
        /* A subject freed since (nothing left in memory) comes back to
         * carry the delete. */
        if ((s = subject_get(q, subject)) == NULL)
            return -1;
        if (what == QUOTA_CHANGE_RESET)
            subject_mark_rewrite(q, s);
        else
            s->limit_dirty = true;
        subject_enqueue(q, s);
        return 0;
    case QUOTA_CHANGE_SLOT:
        /* A slot that is gone expired, or went with a reset that is
         * queued itself. */
        if ((s = subject_find(q, subject)) == NULL ||
            floor_div(slot_start_ms, q->slot_ms) * q->slot_ms !=
                slot_start_ms ||
            (sl = slot_find(s, slot_start_ms / q->slot_ms)) == NULL)
            return 0;
        sl->dirty = true;
        subject_enqueue(q, s);
        return 0;
    }
    return -1;
}

bool
quota_flush_pending(const struct quota *q)
{
    return !TAILQ_EMPTY(&q->queue);
}

/* Re-buckets one stored usage row into memory at start-up. */
int
quota_load_slot(struct quota *q, const char *subject, int64_t slot_start_ms,
                int64_t tokens, double now_s)
{
    struct subject *s;
    struct slot *sl;
    int64_t idx;

    if (subject == NULL || subject_valid(subject) < 0 || tokens < 0 ||
        !ms_ok(slot_start_ms) || !time_ok(now_s))
        return -1;
    idx = floor_div(slot_start_ms, q->slot_ms);
    if (tokens == 0 || !(now_s < slot_expiry(q, idx)))
        return 0;
    if ((s = subject_get(q, subject)) == NULL)
        return -1;
    if (slots_make_room(q, s) < 0) {
        subject_release(q, s);
        return -1;
    }
    sl = slot_get(s, idx);
    sl->tokens = add_clamped(sl->tokens, tokens);
    if (idx * q->slot_ms != slot_start_ms)
        subject_mark_rewrite(q, s);
    else if (s->reset_pending)
        sl->dirty = true;
    return 0;
}

/* Restores one stored override at start-up. */
int
quota_load_limit(struct quota *q, const char *subject, int64_t limit)
{
    struct subject *s;

    if (subject == NULL || subject_valid(subject) < 0 || limit < 0)
        return -1;
    if ((s = subject_get(q, subject)) == NULL)
        return -1;
    s->has_limit = true;
    s->limit = limit;
    return 0;
}

/* Goes on with the sweep over every subject: drops expired slots and
 * frees the subjects left idle, max_subjects of them at most. */
size_t
quota_prune_step(struct quota *q, double now_s, size_t max_subjects,
                 bool *done)
{
    size_t dropped = 0;

    *done = false;
    if (!time_ok(now_s))
        return 0;
    if (!q->prune_running) {
        q->prune_running = true;
        q->prune_next = TAILQ_FIRST(&q->all);
    }
    for (size_t k = 0; k < max_subjects && q->prune_next != NULL; k++) {
        struct subject *s = q->prune_next;

        q->prune_next = TAILQ_NEXT(s, all_link);
        dropped += slots_trim(q, s, now_s);
        subject_release(q, s);
    }
    if (q->prune_next == NULL) {
        q->prune_running = false;
        *done = true;
    }
    return dropped;
}

/* The whole sweep at once. */
size_t
quota_prune(struct quota *q, double now_s)
{
    size_t dropped = 0;
    bool done = false;

    q->prune_running = false;
    while (!done)
        dropped += quota_prune_step(q, now_s, SIZE_MAX, &done);
    return dropped;
}

/* Moves each slot of s from old_slot_ms to the current slot size. */
static void
subject_rebucket(struct quota *q, struct subject *s, int64_t old_slot_ms)
{
    uint32_t w = 0;

    if (s->n_slots == 0)
        return;
    for (uint32_t r = 0; r < s->n_slots; r++) {
        struct slot sl = s->slots[r];

        sl.idx = floor_div(sl.idx * old_slot_ms, q->slot_ms);
        if (w > 0 && s->slots[w - 1].idx == sl.idx)
            s->slots[w - 1].tokens =
                add_clamped(s->slots[w - 1].tokens, sl.tokens);
        else
            s->slots[w++] = sl;
    }
    s->n_slots = w;
    subject_mark_rewrite(q, s);
    subject_owe_all(q, s);      /* multi-host mode: the fleet's copy too */
}

/* An empty table for one configuration. */
struct quota *
quota_new(double window_s, int64_t default_limit, bool hard)
{
    struct quota *q;

    if (!config_ok(window_s, default_limit))
        return NULL;
    if ((q = calloc(1, sizeof(*q))) == NULL)
        return NULL;
    q->window_s = window_s;
    q->slot_ms = slot_size_ms(window_s);
    q->default_limit = default_limit;
    q->hard = hard;
    q->rehash_next = HTAB_NOT_REHASHING;
    TAILQ_INIT(&q->all);
    TAILQ_INIT(&q->queue);
    TAILQ_INIT(&q->owed);
    return q;
}

/* ---- multi-host mode: what the fleet is owed ---------------------------- */

void
quota_track_owed(struct quota *q)
{
    q->track_owed = true;
}

bool
quota_owed_pending(const struct quota *q)
{
    return !TAILQ_EMPTY(&q->owed);
}

int
quota_owe_subject(struct quota *q, const char *subject)
{
    struct subject *s;

    if (subject == NULL || subject_valid(subject) < 0)
        return -1;
    if (q->track_owed && (s = subject_find(q, subject)) != NULL)
        subject_owe_all(q, s);
    return 0;
}

void
quota_owe_all(struct quota *q)
{
    struct subject *s;

    if (!q->track_owed)
        return;
    TAILQ_FOREACH(s, &q->all, all_link)
        subject_owe_all(q, s);
}

/* Hands one owed subject to the sink; -1 when a callback refuses. */
static int
owed_subject(struct quota *q, struct subject *s, double now_s,
             const struct quota_owed_sink *sink, void *arg)
{
    struct usage u;
    int64_t own;

    slots_trim(q, s, now_s);
    subject_usage(q, s, now_s, &u);
    own = u.used - subject_others(s);
    if (sink->on_subject(arg, s->key, own < 0 ? 0 : own,
                         s->fleet->owed_whole) < 0)
        return -1;
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].owed &&
            sink->on_slot(arg, s->slots[i].idx * q->slot_ms,
                          s->slots[i].tokens) < 0)
            return -1;
    return 0;
}

int
quota_owed_take(struct quota *q, double now_s, size_t max_subjects,
                const struct quota_owed_sink *sink, void *arg)
{
    struct fleet *f;
    int n = 0;

    if (!time_ok(now_s))
        return -1;
    while ((size_t)n < max_subjects && (f = TAILQ_FIRST(&q->owed)) != NULL) {
        struct subject *s = f->s;

        if (owed_subject(q, s, now_s, sink, arg) < 0)
            return n;
        TAILQ_REMOVE(&q->owed, f, owed_link);
        f->owed_queued = false;
        f->owed_whole = false;
        for (uint32_t i = 0; i < s->n_slots; i++)
            s->slots[i].owed = false;
        subject_release(q, s);
        n++;
    }
    return n;
}

int
quota_set_others(struct quota *q, const char *subject, int64_t others,
                 int64_t own_read)
{
    struct subject *s;

    if (subject == NULL || subject_valid(subject) < 0 || others < 0 ||
        own_read < 0)
        return -1;
    if ((s = subject_find(q, subject)) == NULL) {
        if (others == 0)
            return 0;
        if ((s = subject_get(q, subject)) == NULL)
            return -1;
    }
    if (subject_fleet(q, s) == NULL) {
        subject_release(q, s);
        return -1;
    }
    s->fleet->others = others;
    s->fleet->own_read = own_read;
    s->fleet->read = true;
    return 0;
}

int64_t
quota_own_used(const struct quota *q, const char *subject, double now_s)
{
    const struct subject *s;
    struct usage u;

    if (subject == NULL || !time_ok(now_s) ||
        (s = subject_find(q, subject)) == NULL)
        return 0;
    subject_usage(q, s, now_s, &u);
    return u.used - subject_others(s);
}

void
quota_free(struct quota *q)
{
    struct subject *s;

    if (q == NULL)
        return;
    while ((s = TAILQ_FIRST(&q->all)) != NULL) {
        TAILQ_REMOVE(&q->all, s, all_link);
        free(s->fleet);
        free(s->slots);
        free(s);
    }
    free(q->ht[0].chains);
    free(q->ht[1].chains);
    free(q);
}

/* Applies a new config; usage moves to the new slot size if it changed. */
int
quota_reconfigure(struct quota *q, double window_s, int64_t default_limit,
                  bool hard)
{
    struct subject *s;
    int64_t old_slot_ms = q->slot_ms;

    if (!config_ok(window_s, default_limit))
        return -1;
    q->window_s = window_s;
    q->slot_ms = slot_size_ms(window_s);
    q->default_limit = default_limit;
    q->hard = hard;
    if (q->slot_ms != old_slot_ms) {
        q->prev_slot_ms = old_slot_ms;
        TAILQ_FOREACH(s, &q->all, all_link)
            subject_rebucket(q, s, old_slot_ms);
    }
    return 0;
}

int64_t
quota_slot_ms(const struct quota *q)
{
    return q->slot_ms;
}

bool
quota_reservation_ok(const struct quota *q, int64_t slot_start_ms)
{
    return slot_start_ms % q->slot_ms == 0 ||
           (q->prev_slot_ms > 0 && slot_start_ms % q->prev_slot_ms == 0);
}

double
quota_window_s(const struct quota *q)
{
    return q->window_s;
}

int64_t
quota_default_limit(const struct quota *q)
{
    return q->default_limit;
}

bool
quota_hard(const struct quota *q)
{
    return q->hard;
}

/* Start of the oldest slot that counts at now_s. */
int64_t
quota_horizon_ms(const struct quota *q, double now_s)
{
    int64_t k;

    assert(time_ok(now_s));
    k = slot_of(q, now_s - q->window_s);
    while (!(now_s < slot_expiry(q, k)))
        k++;
    while (now_s < slot_expiry(q, k - 1))
        k--;
    return k * q->slot_ms;
}

size_t
quota_count(const struct quota *q)
{
    return q->count;
}

/* Our allocations: the structure, subjects, slot arrays and tables. */
size_t
quota_bytes(const struct quota *q)
{
    return sizeof(*q) + q->bytes +
           (q->ht[0].size + q->ht[1].size) * sizeof(struct subject *);
}
