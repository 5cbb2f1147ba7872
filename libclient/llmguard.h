/*
 * llmguard.h - libllmguard, the client of llmguardd.
 *
 * A handle is opaque.  Calls on it are synchronous and return 0 or a
 * negative LLMGUARD_E* code; llmguard_strerror() names a code and
 * llmguard_last_error() gives the message of the calling thread's last
 * failed call.  A handle may be shared by threads: calls on it are
 * serialised by a mutex.  A non-blocking context (llmguard_async_*, at the
 * end) serves one-thread event loops instead.  The library never raises
 * SIGPIPE in its host.
 */
#ifndef LLMGUARD_H
#define LLMGUARD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LLMGUARD_VERSION_MAJOR 0
#define LLMGUARD_VERSION_MINOR 1
#define LLMGUARD_VERSION_PATCH 0
#define LLMGUARD_PROTOCOL_VERSION 1

#define LLMGUARD_OK           0
#define LLMGUARD_EUNAVAIL    -1     /* no daemon answers on the socket */
#define LLMGUARD_ETIMEDOUT   -2     /* the wait ended before a grant */
#define LLMGUARD_EQUOTA      -3     /* a hard quota would be exceeded */
#define LLMGUARD_ENOPROVIDER -4     /* unknown provider, or none left */
#define LLMGUARD_EPERM       -5     /* refused: admin op, or socket EACCES */
#define LLMGUARD_EINVAL      -6     /* the daemon called the request bad */
#define LLMGUARD_EPROTO      -7     /* a malformed or unexpected reply */
#define LLMGUARD_ENOMEM      -8     /* out of memory */
#define LLMGUARD_EBUSY       -9     /* the daemon is overloaded */
#define LLMGUARD_EINTERNAL   -10    /* the daemon failed internally */
#define LLMGUARD_ECALL       -11    /* the provider call itself failed */

typedef struct llmguard llmguard_t;

/*
 * A handle for the daemon at socket_path; NULL means $LLMGUARD_SOCKET, else
 * the default per-user path.  It never fails for want of a daemon: it
 * connects on the first call and reconnects after a restart.  NULL only
 * when out of memory or when the path does not fit a socket address.
 */
llmguard_t *llmguard_open(const char *socket_path);
void llmguard_close(llmguard_t *g);

/* A short English description of an LLMGUARD_E* code. */
const char *llmguard_strerror(int err);
/*
 * The message of the calling thread's last call on g, when that call
 * failed: the daemon's error as "code: message", or the library's own; ""
 * when it succeeded or the thread has made none.  Each thread has its own,
 * so threads that share g need no lock around it; the string stays valid
 * until the same thread's next call on g, or llmguard_close().
 */
const char *llmguard_last_error(llmguard_t *g);
/* The socket path the handle uses. */
const char *llmguard_socket_path(llmguard_t *g);
/*
 * Bound every exchange on g to timeout_s beyond the wait the request
 * itself asks for (the timeout of an acquire or a permit); 0: no bound.
 * The default is $LLMGUARD_CLIENT_TIMEOUT_MS milliseconds, else 2 s.  An
 * exchange that runs out closes the connection (the next call opens a new
 * one) and returns LLMGUARD_EUNAVAIL, so a stopped or wedged daemon never
 * hangs the caller.  0, or LLMGUARD_EINVAL for a negative or NaN value or
 * one over a day.
 */
int llmguard_set_timeout(llmguard_t *g, double timeout_s);

/* Round trip to the daemon.  0, or LLMGUARD_EUNAVAIL and friends. */
int llmguard_ping(llmguard_t *g);

/*
 * Take `tokens` request tokens from provider's bucket, waiting inside the
 * daemon up to timeout_s (0: try once, no wait).  Waiters are served in
 * arrival order.  0 when granted (*waited_ms, if not NULL, says how long it
 * waited), LLMGUARD_ETIMEDOUT when not (nothing was consumed),
 * LLMGUARD_ENOPROVIDER for an unknown provider, LLMGUARD_EINVAL for tokens
 * of 0 or above the provider's burst.  The call blocks the handle while it
 * waits: give each thread that acquires its own handle.
 */
int llmguard_acquire(llmguard_t *g, const char *provider, uint32_t tokens,
                     double timeout_s, double *waited_ms);

/* Give tokens back to provider's bucket (capped at its burst). */
int llmguard_release(llmguard_t *g, const char *provider, uint32_t tokens);

struct llmguard_limiter_status {
    double available_tokens;
    double rate_per_sec;
    double max_tokens;          /* the burst */
    int enabled;                /* 0 when RATE_LIMIT_ENABLED=false */
    uint64_t waiters;           /* requests queued for a token */
    double tokens_per_min;      /* LLM-token limit, 0 = unlimited */
};

/* The bucket of provider. */
int llmguard_limiter_status(llmguard_t *g, const char *provider,
                            struct llmguard_limiter_status *st);

/* What a quota check decided (libllmguard(3), "Quotas"). */
struct llmguard_quota_decision {
    int allowed;                /* 0 only in hard mode: nothing reserved */
    int over_quota;             /* soft mode: allowed, but over the limit */
    char subject[272];          /* "workflow:<id>" or "tenant:<id>" */
    uint64_t tokens_used;       /* of subject, after the decision */
    uint64_t tokens_limit;
    uint64_t tokens_remaining;  /* min over the subjects, never below 0 */
    int has_reset_at;
    double reset_at;            /* unix seconds; when usage next drops */
    int64_t reservation;        /* for llmguard_quota_commit() */
};

/*
 * Check and reserve `tokens` against the workflow's and the tenant's quota
 * (either may be NULL, not both) in one atomic step.  0 when allowed (in
 * soft mode also when over, with over_quota set); LLMGUARD_EQUOTA in hard
 * mode when a subject would exceed, with d filled and nothing reserved.
 */
int llmguard_quota_check_and_reserve(llmguard_t *g, const char *workflow_id,
                                     const char *tenant_id, uint64_t tokens,
                                     struct llmguard_quota_decision *d);

/* Reconcile a reservation (d->reservation) with the tokens really used. */
int llmguard_quota_commit(llmguard_t *g, const char *workflow_id,
                          const char *tenant_id, int64_t reservation,
                          uint64_t estimate, uint64_t actual);

struct llmguard_quota_status {
    uint64_t tokens_used;
    uint64_t tokens_remaining;
    uint64_t tokens_limit;
    double window_start;        /* unix seconds: now - window */
    double window_end;          /* now */
    int has_reset_at;           /* 0: nothing used */
    double reset_at;            /* when the oldest counted usage leaves */
};

/* The quota of a workflow or of a tenant: give exactly one of the two. */
int llmguard_quota_status(llmguard_t *g, const char *workflow_id,
                          const char *tenant_id,
                          struct llmguard_quota_status *st);

/*
 * The provider `select_provider` would route a call of workflow_id to now
 * (preferred may be NULL), into buf.  Takes no token.
 */
int llmguard_select_provider(llmguard_t *g, const char *workflow_id,
                             const char *preferred, char *buf, size_t len);

/* What a provider call came to. */
typedef enum {
    LLMGUARD_OUTCOME_OK,
    LLMGUARD_OUTCOME_RATE_LIMITED,      /* HTTP 429 */
    LLMGUARD_OUTCOME_SERVER_ERROR,      /* HTTP 5xx */
    LLMGUARD_OUTCOME_TIMEOUT,
    LLMGUARD_OUTCOME_CLIENT_ERROR,      /* any other 4xx: no failover */
} llmguard_outcome;

/*
 * The caller's provider call: make the request to `provider`, set
 * *tokens_used to the tokens it really used (left 0 when unknown: the
 * estimate is charged), return the outcome.  A rate-limited answer may
 * pass its Retry-After on with llmguard_retry_after().
 */
typedef llmguard_outcome (*llmguard_call_fn)(const char *provider, void *arg,
                                             uint64_t *tokens_used);

/* From inside a llmguard_call_fn: the provider asked to wait this long. */
void llmguard_retry_after(double seconds);

/*
 * From inside a llmguard_call_fn: the provider's model id this attempt
 * must call, when the request named a model (the daemon chose the
 * deployment), else NULL.  Valid until the call function returns.  When
 * fail-open calls the function unguarded, the model as the request named
 * it.
 */
const char *llmguard_model(void);

/*
 * From inside a llmguard_call_fn, once per response header: the provider's
 * rate-limit headers (x-ratelimit-*, anthropic-ratelimit-*, retry-after,
 * retry-after-ms; any case) go with the attempt's report, at most 32;
 * other names are ignored.  The daemon fits its buckets to them.
 */
void llmguard_provider_header(const char *name, const char *value);

struct llmguard_request {
    const char *workflow_id;        /* may be NULL */
    const char *tenant_id;          /* may be NULL */
    const char *preferred_provider; /* may be NULL; required for fail-open */
    uint64_t tokens_estimate;       /* reserved, then reconciled */
    unsigned max_attempts;          /* 0 means 3 */
    double timeout_s;               /* wait for a token at most this long */
    const char *traceparent;        /* W3C trace context, or NULL */
    const char *call_id;            /* 1 to 128 bytes, or NULL: made up */
    /* Added in 0.1, libtool current 2: at the end. */
    const char *model;              /* a model group or id, or NULL */
};

struct llmguard_result {
    char provider[64];              /* the provider of the last attempt */
    unsigned failover_attempts;     /* attempts after the first */
    int rate_limited;               /* waited, moved, or met a 429 */
    int success;
    int quota_allowed;              /* 0: over quota (soft) or refused */
    uint64_t quota_remaining;
    double ratelimit_wait_ms;       /* waited for tokens, all attempts */
    int guarded;                    /* 0: fail-open called fn unguarded */
    /* What to ask `llmguardctl explain` about (added in 0.1: at the end). */
    char call_id[129];              /* the call's id, also when refused */
    uint64_t permit_id;             /* the last attempt's permit; 0: none */
    /* Added in 0.1, libtool current 2: at the end. */
    char model[128];                /* the last attempt's model id; "" when
                                       the request named no model */
};

/*
 * Permit, call fn, report; on a 429, 5xx or timeout again on another
 * provider, until success, a client error, or max_attempts.  Returns 0 on
 * success; LLMGUARD_ECALL when the call failed (res says how);
 * LLMGUARD_EQUOTA (hard quota) before any call; LLMGUARD_ETIMEDOUT when no
 * token came within timeout_s; LLMGUARD_ENOPROVIDER when none is left.
 * With the daemon unreachable, LLMGUARD_FAIL_MODE=open (the default) calls
 * fn once on preferred_provider, unguarded (res->guarded = 0); closed
 * returns LLMGUARD_EUNAVAIL.  res->call_id (req->call_id, or one the
 * library made) and res->permit_id name the call and its last permit
 * for `llmguardctl explain`; LLMGUARD_EINVAL for a req->call_id that is
 * empty or over 128 bytes.  With req->model, each attempt goes to one of
 * that model's deployments (res->model says which model id, and so does
 * llmguard_model() inside fn); LLMGUARD_EINVAL for an unknown model.
 */
int llmguard_execute_with_failover(llmguard_t *g,
                                   const struct llmguard_request *req,
                                   llmguard_call_fn fn, void *arg,
                                   struct llmguard_result *res);

/* ---- One attempt at a time (libllmguard(3), "Attempts") ---------------- */

/* What the daemon granted one attempt. */
struct llmguard_permit {
    uint64_t permit_id;             /* for llmguard_report() */
    char provider[64];              /* the provider to call */
    char model[128];                /* the model id to call when req->model
                                       was set, else "" */
    char call_id[129];              /* req->call_id, or the one made up */
    double wait_ms;                 /* waited for the token */
    int rate_limited;               /* waited, or moved off a provider */
    int all_degraded;               /* every candidate was in cooldown */
    int quota_allowed;              /* 0: over quota (soft) or refused */
    int has_quota_remaining;        /* 0: no quota was checked */
    uint64_t quota_remaining;
};

/*
 * The permit of one attempt of the call req (its max_attempts is not
 * used): quota reserved, provider chosen, token taken, waiting up to
 * req->timeout_s.  exclude names the n_exclude (at most 64) providers the
 * call has already tried.  Attempts of one call pass the same call_id: the
 * first permit's p->call_id when req->call_id was NULL (req and exclude may
 * point into p, which is written when the reply is in).  0 with p filled;
 * else LLMGUARD_EQUOTA (p->quota_allowed 0), LLMGUARD_ETIMEDOUT,
 * LLMGUARD_ENOPROVIDER, LLMGUARD_EUNAVAIL, ...  A permit is the
 * connection's: report it on the same handle, before it reconnects.
 */
int llmguard_permit(llmguard_t *g, const struct llmguard_request *req,
                    const char *const *exclude, unsigned n_exclude,
                    struct llmguard_permit *p);

/* How an attempt went, for llmguard_report(). */
struct llmguard_report {
    uint64_t permit_id;
    llmguard_outcome outcome;
    uint64_t tokens_used;           /* really used; 0: not known (an ok
                                       attempt is charged its estimate,
                                       a failed one nothing) */
    double latency_ms;              /* < 0: not known */
    double retry_after_s;           /* the provider's Retry-After; 0: none */
    int final;                      /* no further attempt of the call */
    /* The provider's response headers, nheaders name/value pairs:
     * headers[2 * i] the name, headers[2 * i + 1] the value; only the
     * rate-limit names the daemon reads are sent (as with
     * llmguard_provider_header()).  NULL and 0: the headers this thread
     * passed with llmguard_provider_header() since its last report. */
    const char *const *headers;
    unsigned nheaders;
};

/* What llmguard_report() says back. */
struct llmguard_report_reply {
    int try_again;                  /* 429, 5xx or timeout, not final:
                                       permit again, excluding this
                                       provider */
    int degraded;                   /* the provider is in cooldown now */
    double cooldown_remaining_s;
};

/*
 * Report an attempt: the provider's health, the tokens it used (the
 * LLM-token bucket and the quotas are charged those instead of the
 * estimate), and whether the call ends.  rep (may be NULL) gets try_again
 * whatever the daemon answered: a lost report loses health data, not the
 * caller's decision.  0, or LLMGUARD_EINVAL (unknown permit_id or
 * outcome), LLMGUARD_EUNAVAIL, ...
 */
int llmguard_report(llmguard_t *g, const struct llmguard_report *r,
                    struct llmguard_report_reply *rep);

/* ---- Non-blocking, for one-thread event loops (libllmguard(3), "Event
 * loops") ------------------------------------------------------------------ */

typedef struct llmguard_async llmguard_async_t;

#define LLMGUARD_READABLE 1
#define LLMGUARD_WRITABLE 2

/*
 * A non-blocking context for the daemon at socket_path (NULL as for
 * llmguard_open()).  It connects on the first request and again after
 * the connection was lost.  Not thread-safe: one thread drives it.
 * NULL only when out of memory or the path does not fit.
 */
llmguard_async_t *llmguard_async_open(const char *socket_path);
/*
 * Free the context.  Every request still pending has its callback called
 * once, with LLMGUARD_EUNAVAIL, before it returns; called from inside a
 * callback, that happens when the callback returns.
 */
void llmguard_async_close(llmguard_async_t *a);
/* Bound each request to timeout_s beyond its own wait, as
 * llmguard_set_timeout() does; the same default. */
int llmguard_async_set_timeout(llmguard_async_t *a, double timeout_s);

/*
 * Driving it, before each poll: the descriptor (-1: none, nothing to
 * wait for), the events it waits for (LLMGUARD_READABLE|WRITABLE), and
 * the milliseconds until the next request runs out (-1: none), all of
 * which change from one call to the next.  After the poll (also when it
 * timed out), llmguard_async_handle() with the events that came (0 for
 * none): it reads, writes and expires without ever blocking, and calls
 * the callbacks of the requests that are done.
 */
int llmguard_async_fd(const llmguard_async_t *a);
int llmguard_async_events(const llmguard_async_t *a);
int llmguard_async_timeout_ms(const llmguard_async_t *a);
void llmguard_async_handle(llmguard_async_t *a, int events);
/* Requests submitted whose callback has not run yet. */
unsigned llmguard_async_pending(const llmguard_async_t *a);
/* The message of the failure a callback is told of (valid inside it),
 * or of the submit call that failed last; "" after a success. */
const char *llmguard_async_last_error(const llmguard_async_t *a);

/*
 * Completion callbacks: status is 0 or an LLMGUARD_E* code; p and r are
 * never NULL and live until the callback returns (p->call_id is set
 * also on failure; on LLMGUARD_EQUOTA p->quota_allowed is 0).  A
 * callback may submit requests and may close the context.
 */
typedef void (*llmguard_permit_cb)(llmguard_async_t *a, int status,
                                   const struct llmguard_permit *p,
                                   void *arg);
typedef void (*llmguard_report_cb)(llmguard_async_t *a, int status,
                                   const struct llmguard_report_reply *r,
                                   void *arg);

/*
 * Submit a permit (arguments as for llmguard_permit()) or a report (cb
 * may be NULL) without waiting: the request is queued on the one
 * connection, where any number may be in flight, and cb is called
 * exactly once from llmguard_async_handle() or llmguard_async_close().
 * 0 when queued; else an LLMGUARD_E* code (LLMGUARD_EINVAL, or
 * LLMGUARD_EUNAVAIL when no daemon listens) and cb is never called.
 */
int llmguard_async_permit(llmguard_async_t *a,
                          const struct llmguard_request *req,
                          const char *const *exclude, unsigned n_exclude,
                          llmguard_permit_cb cb, void *arg);
int llmguard_async_report(llmguard_async_t *a, const struct llmguard_report *r,
                          llmguard_report_cb cb, void *arg);

#ifdef __cplusplus
}
#endif

#endif
