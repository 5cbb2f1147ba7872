/*
 * decisions.h - the last LLMGUARD_DECISIONS permit decisions, for
 * `llmguardctl explain` (proto/PROTOCOL.md, "explain").
 *
 * Pure module: no I/O, no clock reads, no globals.  Times are unix seconds
 * handed in by the caller.  Not thread-safe: one ring belongs to the event
 * loop.
 *
 * A decision is what one permit request came to: its ids, the quota of
 * each subject, every provider considered and why it was chosen or left,
 * the wait, and the attempt's outcome (filled in by its report) or the
 * error that refused it.  The ring keeps the newest `capacity` of them and
 * evicts the oldest; each decision is one allocation, sized to its ids.
 * Decisions are numbered 1, 2, ... (their seq) in the order they were
 * added: a caller that keeps a seq, never a pointer, can update a decision
 * later and is told when it is gone.
 */
#ifndef LLMGUARD_DECISIONS_H
#define LLMGUARD_DECISIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DECISIONS_MAX_PROVIDERS 64
#define DECISIONS_NAME_MAX 64           /* a provider's name, with its NUL */
#define DECISIONS_ERROR_MAX 256
#define DECISIONS_MODEL_MAX 128         /* a model group or id, with NUL */

/* A quota subject's verdict. */
enum decision_verdict {
    DECISION_QUOTA_OK,                  /* within its limit */
    DECISION_QUOTA_OVER,                /* over it, allowed (soft mode) */
    DECISION_QUOTA_REFUSED,             /* over it, refused (hard mode) */
};

/* Why a provider was chosen or left. */
enum decision_why {
    DECISION_CHOSEN,                    /* the attempt went (or waited) here */
    DECISION_EXCLUDED,                  /* the call had already tried it */
    DECISION_COOLDOWN,                  /* degraded: in its cooldown */
    DECISION_NO_TOKEN,                  /* its bucket was empty */
    DECISION_NOT_CHOSEN,                /* a candidate the policy passed over */
    DECISION_DAILY_LIMIT,               /* its RPD or TPD could not take it */
};

/* What the attempt came to; "pending" until its report. */
enum decision_outcome {
    DECISION_PENDING,                   /* granted, not reported yet */
    DECISION_OK,                        /* the report's outcomes, */
    DECISION_RATE_LIMITED,              /* in the order of enum */
    DECISION_SERVER_ERROR,              /* router_outcome */
    DECISION_TIMEOUT,
    DECISION_CLIENT_ERROR,
    DECISION_UNREPORTED,                /* its connection closed first */
    DECISION_REFUSED,                   /* no permit: see error */
};

/* The quota of one subject, as the permit found it. */
struct decision_quota {
    bool tenant;                        /* tenant:<id>, else workflow:<id> */
    uint8_t verdict;                    /* enum decision_verdict */
    int64_t used;                       /* with this request when allowed */
    int64_t limit;
};

/* One provider considered. */
struct decision_provider {
    const char *name;                   /* in the decision's allocation */
    uint8_t why;                        /* enum decision_why */
    bool degraded;                      /* in its cooldown (of any why) */
    uint8_t cause;                      /* enum decision_outcome of the fault */
    double cooldown_until;              /* unix seconds, when degraded */
    double retry_after_s;               /* the fault's Retry-After; 0: none */
};

/* A decision in the ring: one allocation, strings after the providers. */
struct decision {
    uint64_t seq;
    uint64_t permit_id;                 /* 0: refused before a permit */
    double time;                        /* unix seconds of the request */
    const char *call_id;                /* "" for a call without one */
    const char *workflow, *tenant;      /* "" when absent */
    const char *error;                  /* "" unless refused */
    /* A permit that named a model: as named, the deployment chosen (its
     * alias) and that deployment's model id; "" otherwise. */
    const char *model, *deployment, *model_id;
    uint64_t tokens_estimate;
    double wait_ms;
    double parked_ms;                   /* of wait_ms, parked: every provider
                                           in its cooldown; 0: not parked */
    int error_code;                     /* enum proto_errcode; 0: none */
    uint8_t outcome;                    /* enum decision_outcome */
    bool all_degraded;                  /* routed by the all-degraded rule */
    bool routed;                        /* providers were considered */
    uint8_t nquota;
    uint8_t nproviders;
    int64_t tokens_used;                /* from the report; -1: not said */
    double latency_ms;                  /* from the report; -1: not said */
    double retry_after_s;               /* from the report; 0: none */
    struct decision_quota quota[2];
    struct decision_provider providers[];
};

/*
 * A decision being made, filled step by step while the permit is checked,
 * routed and maybe waits; a plain value (it is copied with its permit).
 */
struct decision_draft {
    double time;
    uint64_t permit_id;
    uint64_t tokens_estimate;
    double wait_ms;
    double parked_ms;
    int error_code;
    char error[DECISIONS_ERROR_MAX];
    char model[DECISIONS_MODEL_MAX];        /* as in struct decision */
    char deployment[DECISIONS_NAME_MAX];
    char model_id[DECISIONS_MODEL_MAX];
    bool all_degraded, routed;
    uint8_t nquota, nproviders;
    struct decision_quota quota[2];
    struct {
        char name[DECISIONS_NAME_MAX];
        struct decision_provider p;     /* p.name unused */
    } providers[DECISIONS_MAX_PROVIDERS];
};

struct decisions;

/* A ring of at most capacity decisions (0: nothing is kept); NULL when
 * out of memory. */
struct decisions *decisions_new(size_t capacity);
void decisions_free(struct decisions *d);
size_t decisions_capacity(const struct decisions *d);
/* How many it holds now. */
size_t decisions_count(const struct decisions *d);

/*
 * Add the draft with its ids (NULL counts as ""), evicting the oldest when
 * full.  Returns the new decision's seq, or 0 when nothing was kept (a
 * capacity of 0, or out of memory).
 */
uint64_t decisions_add(struct decisions *d, const struct decision_draft *dr,
                       const char *call_id, const char *workflow,
                       const char *tenant);

/* The decision numbered seq, or NULL when it was never added or evicted. */
struct decision *decisions_get(struct decisions *d, uint64_t seq);

/*
 * Fill in the report of decision seq: its outcome, the tokens it used
 * (-1: not said), its latency (-1) and Retry-After (0).  Nothing happens
 * when it is gone.
 */
void decisions_report(struct decisions *d, uint64_t seq,
                      enum decision_outcome outcome, int64_t tokens_used,
                      double latency_ms, double retry_after_s);

/*
 * The held decisions of permit_id, or of call_id (an exact match; "" is
 * never one): the newest max of them into out, oldest first.  *total is
 * how many are held; the return value how many were written.  A linear
 * scan of the ring (it serves an operator's command).
 */
size_t decisions_find_permit(const struct decisions *d, uint64_t permit_id,
                             const struct decision **out, size_t max,
                             size_t *total);
size_t decisions_find_call(const struct decisions *d, const char *call_id,
                           const struct decision **out, size_t max,
                           size_t *total);

/* Names on the wire: "ok", "over", "refused"; "chosen", "excluded",
 * "cooldown", "no_token", "not_chosen", "daily_limit"; "pending", "ok",
 * "rate_limited", "server_error", "timeout", "client_error", "unreported",
 * "refused". */
const char *decisions_verdict_name(enum decision_verdict v);
const char *decisions_why_name(enum decision_why w);
const char *decisions_outcome_name(enum decision_outcome o);

#endif
