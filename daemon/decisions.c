/*
 * decisions.c - the ring of the last permit decisions.
 * The contract is in decisions.h.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "decisions.h"

struct decisions {
    struct decision **ring;     /* capacity slots; oldest at head */
    size_t capacity;
    size_t head;                /* the oldest's slot */
    size_t count;
    uint64_t next_seq;          /* the seq of the next decision added */
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *const verdict_names[] = {
    [DECISION_QUOTA_OK] = "ok",
    [DECISION_QUOTA_OVER] = "over",
    [DECISION_QUOTA_REFUSED] = "refused",
};

static const char *const why_names[] = {
    [DECISION_CHOSEN] = "chosen",
    [DECISION_EXCLUDED] = "excluded",
    [DECISION_COOLDOWN] = "cooldown",
    [DECISION_NO_TOKEN] = "no_token",
    [DECISION_NOT_CHOSEN] = "not_chosen",
    [DECISION_DAILY_LIMIT] = "daily_limit",
};

static const char *const outcome_names[] = {
    [DECISION_PENDING] = "pending",
    [DECISION_OK] = "ok",
    [DECISION_RATE_LIMITED] = "rate_limited",
    [DECISION_SERVER_ERROR] = "server_error",
    [DECISION_TIMEOUT] = "timeout",
    [DECISION_CLIENT_ERROR] = "client_error",
    [DECISION_UNREPORTED] = "unreported",
    [DECISION_REFUSED] = "refused",
};

struct decisions *
decisions_new(size_t capacity)
{
    struct decisions *d = calloc(1, sizeof(*d));

    if (d == NULL)
        return NULL;
    if (capacity > 0 &&
        (d->ring = calloc(capacity, sizeof(d->ring[0]))) == NULL) {
        free(d);
        return NULL;
    }
    d->capacity = capacity;
    d->next_seq = 1;
    return d;
}

void
decisions_free(struct decisions *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->count; i++)
        free(d->ring[(d->head + i) % d->capacity]);
    free(d->ring);
    free(d);
}

size_t
decisions_capacity(const struct decisions *d)
{
    return d->capacity;
}

size_t
decisions_count(const struct decisions *d)
{
    return d->count;
}

/* Copy s (with its NUL) to *pool and advance it; the copy. */
static const char *
put_str(char **pool, const char *s)
{
    size_t n = strlen(s) + 1;
    char *out = *pool;

    memcpy(out, s, n);
    *pool += n;
    return out;
}

/* The draft as one allocation: the struct, its providers, its strings. */
static struct decision *
decision_build(const struct decision_draft *dr, const char *call_id,
               const char *workflow, const char *tenant)
{
    size_t head = sizeof(struct decision) +
                  dr->nproviders * sizeof(struct decision_provider);
    size_t text = strlen(call_id) + strlen(workflow) + strlen(tenant) +
                  strlen(dr->error) + strlen(dr->model) +
                  strlen(dr->deployment) + strlen(dr->model_id) + 7;
    struct decision *dc;
    char *pool;

    for (size_t i = 0; i < dr->nproviders; i++)
        text += strlen(dr->providers[i].name) + 1;
    if ((dc = malloc(head + text)) == NULL)
        return NULL;
    memset(dc, 0, sizeof(*dc));
    pool = (char *)dc + head;
    dc->permit_id = dr->permit_id;
    dc->time = dr->time;
    dc->call_id = put_str(&pool, call_id);
    dc->workflow = put_str(&pool, workflow);
    dc->tenant = put_str(&pool, tenant);
    dc->error = put_str(&pool, dr->error);
    dc->model = put_str(&pool, dr->model);
    dc->deployment = put_str(&pool, dr->deployment);
    dc->model_id = put_str(&pool, dr->model_id);
    dc->tokens_estimate = dr->tokens_estimate;
    dc->wait_ms = dr->wait_ms;
    dc->parked_ms = dr->parked_ms;
    dc->error_code = dr->error_code;
    dc->outcome = dr->error_code != 0 ? DECISION_REFUSED : DECISION_PENDING;
    dc->all_degraded = dr->all_degraded;
    dc->routed = dr->routed;
    dc->nquota = dr->nquota;
    memcpy(dc->quota, dr->quota, sizeof(dc->quota));
    dc->nproviders = dr->nproviders;
    for (size_t i = 0; i < dr->nproviders; i++) {
        dc->providers[i] = dr->providers[i].p;
        dc->providers[i].name = put_str(&pool, dr->providers[i].name);
    }
    dc->tokens_used = -1;
    dc->latency_ms = -1;
    return dc;
}

uint64_t
decisions_add(struct decisions *d, const struct decision_draft *dr,
              const char *call_id, const char *workflow, const char *tenant)
{
    struct decision *dc;

    assert(dr->nquota <= NELEM(dr->quota));
    assert(dr->nproviders <= DECISIONS_MAX_PROVIDERS);
    if (d->capacity == 0)
        return 0;
    dc = decision_build(dr, call_id ? call_id : "", workflow ? workflow : "",
                        tenant ? tenant : "");
    if (dc == NULL)
        return 0;
    dc->seq = d->next_seq++;
    if (d->count == d->capacity) {          /* evict the oldest */
        free(d->ring[d->head]);
        d->ring[d->head] = NULL;
        d->head = (d->head + 1) % d->capacity;
        d->count--;
    }
    d->ring[(d->head + d->count) % d->capacity] = dc;
    d->count++;
    return dc->seq;
}

struct decision *
decisions_get(struct decisions *d, uint64_t seq)
{
    uint64_t oldest;

    if (d->count == 0 || seq == 0)
        return NULL;
    /* Seqs are consecutive from the oldest held to the newest. */
    oldest = d->ring[d->head]->seq;
    if (seq < oldest || seq - oldest >= d->count)
        return NULL;
    return d->ring[(d->head + (size_t)(seq - oldest)) % d->capacity];
}

void
decisions_report(struct decisions *d, uint64_t seq,
                 enum decision_outcome outcome, int64_t tokens_used,
                 double latency_ms, double retry_after_s)
{
    struct decision *dc = decisions_get(d, seq);

    if (dc == NULL)
        return;
    dc->outcome = (uint8_t)outcome;
    dc->tokens_used = tokens_used;
    dc->latency_ms = latency_ms;
    dc->retry_after_s = retry_after_s;
}

/* The search of the find functions: by permit id, or by call id. */
struct match {
    uint64_t permit_id;
    const char *call_id;        /* NULL: by permit id */
};

static bool
matches(const struct decision *dc, const struct match *m)
{
    if (m->call_id != NULL)
        return m->call_id[0] != '\0' && strcmp(dc->call_id, m->call_id) == 0;
    return m->permit_id != 0 && dc->permit_id == m->permit_id;
}

/* Newest first into out (at most max), then turned oldest first. */
static size_t
find(const struct decisions *d, const struct match *m,
     const struct decision **out, size_t max, size_t *total)
{
    size_t n = 0;

    *total = 0;
    for (size_t i = d->count; i-- > 0;) {
        const struct decision *dc = d->ring[(d->head + i) % d->capacity];
        if (!matches(dc, m))
            continue;
        if (n < max)
            out[n++] = dc;
        (*total)++;
    }
    for (size_t i = 0; i < n / 2; i++) {
        const struct decision *t = out[i];
        out[i] = out[n - 1 - i];
        out[n - 1 - i] = t;
    }
    return n;
}

size_t
decisions_find_permit(const struct decisions *d, uint64_t permit_id,
                      const struct decision **out, size_t max, size_t *total)
{
    struct match m = { permit_id, NULL };

    return find(d, &m, out, max, total);
}

size_t
decisions_find_call(const struct decisions *d, const char *call_id,
                    const struct decision **out, size_t max, size_t *total)
{
    struct match m = { 0, call_id };

    return find(d, &m, out, max, total);
}

const char *
decisions_verdict_name(enum decision_verdict v)
{
    return (unsigned)v < NELEM(verdict_names) ? verdict_names[v] : "?";
}

const char *
decisions_why_name(enum decision_why w)
{
    return (unsigned)w < NELEM(why_names) ? why_names[w] : "?";
}

const char *
decisions_outcome_name(enum decision_outcome o)
{
    return (unsigned)o < NELEM(outcome_names) ? outcome_names[o] : "?";
}
