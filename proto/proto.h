/*
 * proto.h - the llmguard wire codec, shared by llmguardd, libllmguard and
 * llmguardctl.
 *
 * Framing: a 4-byte big-endian length (1..PROTO_MAX_FRAME) followed by one
 * msgpack map.  Requests carry "op" and "id"; replies carry "id", "ok" and
 * either the result fields or "err": {code, msg, ...}.  See PROTOCOL.md.
 *
 * Like hiredis' reader, nothing here does I/O: bytes go in, messages come
 * out.  Every message is one X-macro list of its fields, PROTO_<MSG>_FIELDS
 * (MSG is the struct's name after "proto_", upper-cased), and that one list
 * makes the struct, the names of its presence bits and, in codec.c, the
 * field table that drives both its encoder and its decoder: adding a field
 * is adding a row.
 *
 * Field bits: every message struct begins with "uint32_t has", whose bit
 * PROTO_<MSG>_<FIELD> (FIELD the member's name, upper-cased) says the field
 * is present, and PROTO_<MSG>__COUNT is its number of fields (32 at most,
 * checked at compile time); so
 * PROTO_HAS(&req, PROTO_PERMIT_REQ_CALL_ID) tests struct proto_permit_req's
 * call_id, PROTO_SET(&rep, PROTO_QUOTA_STATUS_REP_RESET_AT) marks struct
 * proto_quota_status_rep's reset_at present, and PROTO_ERR_SUBJECT is the
 * subject of struct proto_err.
 *
 * Bump PROTO_VERSION if the meaning of an existing field changes.
 */
#ifndef LLMGUARD_PROTO_H
#define LLMGUARD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define PROTO_VERSION 1
#define PROTO_MAX_FRAME 65536
#define PROTO_ERRMSG_MAX 256

/* Error codes of the "err" object; names in proto_errcode_name(). */
enum proto_errcode {
    PROTO_OK = 0,
    PROTO_E_BAD_REQUEST,
    PROTO_E_UNKNOWN_OP,
    PROTO_E_FRAME_TOO_LARGE,
    PROTO_E_UNKNOWN_PROVIDER,
    PROTO_E_TIMEOUT,
    PROTO_E_QUOTA_EXCEEDED,
    PROTO_E_NO_PROVIDER,
    PROTO_E_PERMISSION_DENIED,
    PROTO_E_BUSY,
    PROTO_E_INTERNAL,
    PROTO_E_VERSION,
    PROTO_E__COUNT
};

const char *proto_errcode_name(enum proto_errcode code);
/* Code for a wire name; PROTO_E__COUNT for a name it does not know. */
enum proto_errcode proto_errcode_from_name(const char *name, size_t len);

/* Operations.  Names in proto_op_name(); order is not on the wire. */
enum proto_op {
    PROTO_OP_HELLO,
    PROTO_OP_PING,
    PROTO_OP_ACQUIRE,
    PROTO_OP_RELEASE,
    PROTO_OP_LIMITER_STATUS,
    PROTO_OP_STATUS,
    PROTO_OP_QUOTA_RESERVE,
    PROTO_OP_QUOTA_COMMIT,
    PROTO_OP_QUOTA_STATUS,
    PROTO_OP_QUOTA_SET,
    PROTO_OP_QUOTA_RESET,
    PROTO_OP_SELECT_PROVIDER,
    PROTO_OP_PERMIT,
    PROTO_OP_REPORT,
    PROTO_OP_METRICS,
    PROTO_OP_RELOAD,
    PROTO_OP_QUOTA_UNSET,
    PROTO_OP_QUOTA_LIST,
    PROTO_OP_EXPLAIN,
    PROTO_OP__COUNT
};

const char *proto_op_name(enum proto_op op);

/* A string that points into a decoded message or a caller's buffer. */
struct proto_str {
    const char *ptr;
    uint32_t len;
};

/* Field types of the message tables. */
enum proto_ftype {
    PF_STR,     /* struct proto_str */
    PF_UINT,    /* uint64_t, non-negative integer on the wire */
    PF_INT,     /* int64_t */
    PF_DOUBLE,  /* double; an integer on the wire is accepted */
    PF_BOOL,    /* bool */
    PF_STRARR,  /* struct proto_strarr */
    PF_OBJARR,  /* struct proto_objarr of sub-messages */
    PF_DBLARR,  /* struct proto_dblarr */
    PF_STRMAP,  /* struct proto_strmap: a map of string to string */
    PF_OBJ,     /* a pointer to one sub-message (NULL: absent) */
};

struct proto_strarr {
    struct proto_str *v;
    uint32_t n;
};

struct proto_dblarr {
    double *v;
    uint32_t n;
};

/* A map's pairs in wire order: key[i] -> value[i]; keys are not checked
 * for repeats. */
struct proto_strmap {
    struct proto_str *key;
    struct proto_str *value;
    uint32_t n;
};

struct proto_objarr {
    void *v;            /* n elements of the sub-message's size */
    uint32_t n;
};

#define PF_REQUIRED 0x1 /* a decoder rejects a message without it */
#define PF_NULLABLE 0x2 /* absent is encoded as nil, nil decodes as absent */

struct proto_msgdef;

/*
 * One field of a message, the row of its list: bit i of "has" says field i
 * of the table is present; a required field is always encoded.
 */
struct proto_field {
    const char *name;
    uint8_t name_len;   /* strlen(name): looked at for every key */
    uint8_t type;
    uint8_t flags;
    uint16_t offset;
    const struct proto_msgdef *sub; /* PF_OBJARR element type */
};

struct proto_msgdef {
    const char *name;
    const struct proto_field *fields;
    uint8_t nfields;
    uint16_t size;      /* sizeof the struct, for PF_OBJARR elements */
};

/*
 * Bits of "has", by the names PROTO_<MSG>_<FIELD> of the field lists below:
 * is the field present, mark it present, its mask (for "has = a | b").
 */
#define PROTO_HAS(msg, bit) (((msg)->has >> (bit)) & 1u)
#define PROTO_SET(msg, bit) ((msg)->has |= 1u << (bit))
#define PROTO_BIT(bit) (1u << (bit))

/* ---- messages ---------------------------------------------------------- */

/*
 * Each message is one list of its fields in wire order, a row each:
 *
 *     X(m, name, NAME, type, flags)
 *
 * name is the member and the wire key, NAME the same upper-cased (for the
 * bit name), type a PF_* type or PF_OBJARR(msg) for an array of struct
 * proto_<msg>, flags 0 (optional), PF_REQUIRED or PF_NULLABLE.  m is the
 * list's second argument, handed to X as it is.
 */

/* hello: the version handshake. */
#define PROTO_HELLO_REQ_FIELDS(X, m)                                          \
    X(m, version, VERSION, PF_UINT, PF_REQUIRED)                              \
    X(m, client,  CLIENT,  PF_STR,  0)            /* the client's name */
#define PROTO_HELLO_REP_FIELDS(X, m)                                          \
    X(m, version, VERSION, PF_UINT, PF_REQUIRED)                              \
    X(m, server,  SERVER,  PF_STR,  PF_REQUIRED)

#define PROTO_PING_REQ_FIELDS(X, m)
#define PROTO_PING_REP_FIELDS(X, m)                                           \
    X(m, uptime_s, UPTIME_S, PF_DOUBLE, 0)

/* acquire: take tokens from a provider's bucket, waiting up to timeout_ms;
 * tokens defaults to 1, llm_tokens (for the TOKENS_PER_MIN bucket) to 0,
 * timeout_ms to 0: try once. */
#define PROTO_ACQUIRE_REQ_FIELDS(X, m)                                        \
    X(m, provider,   PROVIDER,   PF_STR,    PF_REQUIRED)                      \
    X(m, tokens,     TOKENS,     PF_UINT,   0)                                \
    X(m, llm_tokens, LLM_TOKENS, PF_UINT,   0)                                \
    X(m, timeout_ms, TIMEOUT_MS, PF_DOUBLE, 0)
#define PROTO_ACQUIRE_REP_FIELDS(X, m)                                        \
    X(m, waited_ms, WAITED_MS, PF_DOUBLE, PF_REQUIRED)

/* release: return tokens (default 1) to a provider's bucket, capped at its
 * burst. */
#define PROTO_RELEASE_REQ_FIELDS(X, m)                                        \
    X(m, provider,   PROVIDER,   PF_STR,  PF_REQUIRED)                        \
    X(m, tokens,     TOKENS,     PF_UINT, 0)                                  \
    X(m, llm_tokens, LLM_TOKENS, PF_UINT, 0)
#define PROTO_RELEASE_REP_FIELDS(X, m)                                        \
    X(m, available_tokens, AVAILABLE_TOKENS, PF_DOUBLE, PF_REQUIRED)

/* limiter_status: one provider's bucket; tokens_per_min 0 is unlimited,
 * available_llm_tokens comes only with a tokens_per_min. */
#define PROTO_LIMITER_STATUS_REQ_FIELDS(X, m)                                 \
    X(m, provider, PROVIDER, PF_STR, PF_REQUIRED)
#define PROTO_LIMITER_STATUS_REP_FIELDS(X, m)                                 \
    X(m, available_tokens,     AVAILABLE_TOKENS,     PF_DOUBLE, PF_REQUIRED)  \
    X(m, rate_per_sec,         RATE_PER_SEC,         PF_DOUBLE, PF_REQUIRED)  \
    X(m, max_tokens,           MAX_TOKENS,           PF_DOUBLE, PF_REQUIRED)  \
    X(m, enabled,              ENABLED,              PF_BOOL,   PF_REQUIRED)  \
    X(m, waiters,              WAITERS,              PF_UINT,   PF_REQUIRED)  \
    X(m, tokens_per_min,       TOKENS_PER_MIN,       PF_DOUBLE, PF_REQUIRED)  \
    X(m, available_llm_tokens, AVAILABLE_LLM_TOKENS, PF_DOUBLE, 0)

/* status: the daemon and every provider; a provider's state is healthy or
 * degraded, its latency_ewma_ms nil before the first sample; while it is
 * degraded, cooldown_cause (rate_limited, server_error, timeout),
 * cooldown_since (unix seconds) and retry_after_s are the fault's that
 * last extended its cooldown, and cooldown_host the host it was reported
 * on when that was another (multi-host mode).  available_llm_tokens comes
 * with a tokens_per_min.  The daemon's last_flush is the unix time of its
 * last successful write of quotas (nil before the first), store "ok" or
 * "failing" (with store_error). */
#define PROTO_PROVIDER_STATUS_FIELDS(X, m)                                    \
    X(m, name,                 NAME,                 PF_STR,    PF_REQUIRED)  \
    X(m, available_tokens,     AVAILABLE_TOKENS,     PF_DOUBLE, PF_REQUIRED)  \
    X(m, rate_per_sec,         RATE_PER_SEC,         PF_DOUBLE, PF_REQUIRED)  \
    X(m, max_tokens,           MAX_TOKENS,           PF_DOUBLE, PF_REQUIRED)  \
    X(m, waiters,              WAITERS,              PF_UINT,   PF_REQUIRED)  \
    X(m, tokens_per_min,       TOKENS_PER_MIN,       PF_DOUBLE, PF_REQUIRED)  \
    X(m, state,                STATE,                PF_STR,    PF_REQUIRED)  \
    X(m, cooldown_remaining_s, COOLDOWN_REMAINING_S, PF_DOUBLE, PF_REQUIRED)  \
    X(m, latency_ewma_ms,      LATENCY_EWMA_MS,      PF_DOUBLE, PF_NULLABLE)  \
    X(m, cooldown_cause,       COOLDOWN_CAUSE,       PF_STR,    0)            \
    X(m, cooldown_since,       COOLDOWN_SINCE,       PF_DOUBLE, 0)            \
    X(m, retry_after_s,        RETRY_AFTER_S,        PF_DOUBLE, 0)            \
    X(m, available_llm_tokens, AVAILABLE_LLM_TOKENS, PF_DOUBLE, 0)            \
    X(m, rate_source,          RATE_SOURCE,          PF_STR,    0)            \
    X(m, tokens_per_min_source, TOKENS_PER_MIN_SOURCE, PF_STR,  0)          \
    X(m, cooldown_host,        COOLDOWN_HOST,        PF_STR,    0)
/* A model deployment in status: its alias, model id, provider and group;
 * its own bucket (rate_per_sec 0: no RPM, available_tokens and
 * max_tokens then absent; tokens_per_min 0: no TPM) and its own health,
 * as a provider's. */
#define PROTO_MODEL_STATUS_FIELDS(X, m)                                       \
    X(m, alias,                ALIAS,                PF_STR,    PF_REQUIRED)  \
    X(m, model,                MODEL,                PF_STR,    PF_REQUIRED)  \
    X(m, provider,             PROVIDER,             PF_STR,    PF_REQUIRED)  \
    X(m, group,                GROUP,                PF_STR,    PF_REQUIRED)  \
    X(m, rate_per_sec,         RATE_PER_SEC,         PF_DOUBLE, PF_REQUIRED)  \
    X(m, tokens_per_min,       TOKENS_PER_MIN,       PF_DOUBLE, PF_REQUIRED)  \
    X(m, waiters,              WAITERS,              PF_UINT,   PF_REQUIRED)  \
    X(m, state,                STATE,                PF_STR,    PF_REQUIRED)  \
    X(m, cooldown_remaining_s, COOLDOWN_REMAINING_S, PF_DOUBLE, PF_REQUIRED)  \
    X(m, latency_ewma_ms,      LATENCY_EWMA_MS,      PF_DOUBLE, PF_NULLABLE)  \
    X(m, available_tokens,     AVAILABLE_TOKENS,     PF_DOUBLE, 0)            \
    X(m, max_tokens,           MAX_TOKENS,           PF_DOUBLE, 0)            \
    X(m, available_llm_tokens, AVAILABLE_LLM_TOKENS, PF_DOUBLE, 0)            \
    X(m, cooldown_cause,       COOLDOWN_CAUSE,       PF_STR,    0)            \
    X(m, cooldown_since,       COOLDOWN_SINCE,       PF_DOUBLE, 0)            \
    X(m, retry_after_s,        RETRY_AFTER_S,        PF_DOUBLE, 0)
/* A daily limit's counter (PROVIDER_<NAME>_RPD, _TPD); multi-host mode:
 * used is the fleet's (as last read), own_used this host's part. */
#define PROTO_DAILY_LIMIT_FIELDS(X, m)                                        \
    X(m, name,      NAME,      PF_STR,    PF_REQUIRED)                        \
    X(m, unit,      UNIT,      PF_STR,    PF_REQUIRED)                        \
    X(m, limit,     LIMIT,     PF_UINT,   PF_REQUIRED)                        \
    X(m, used,      USED,      PF_UINT,   PF_REQUIRED)                        \
    X(m, remaining, REMAINING, PF_UINT,   PF_REQUIRED)                        \
    X(m, frees_at,  FREES_AT,  PF_DOUBLE, PF_NULLABLE)                        \
    X(m, own_used,  OWN_USED,  PF_UINT,   0)
/* status, multi-host mode: the fleet's configuration last read (the
 * newest host's): its hash, host and load time (unix seconds), whether
 * this host's file differs, and this host's own hash. */
#define PROTO_REDIS_CONFIG_FIELDS(X, m)                                       \
    X(m, hash,         HASH,         PF_STR,    PF_REQUIRED)                  \
    X(m, host,         HOST,         PF_STR,    PF_REQUIRED)                  \
    X(m, loaded_at,    LOADED_AT,    PF_DOUBLE, PF_REQUIRED)                  \
    X(m, differs,      DIFFERS,      PF_BOOL,   PF_REQUIRED)                  \
    X(m, own_hash,     OWN_HASH,     PF_STR,    PF_REQUIRED)
/* status, multi-host mode (REDIS_URL): the URL with its password masked,
 * connected or unreachable, the live hosts last seen (0: never seen),
 * the last error ("" when none), the fleet's configuration once read. */
#define PROTO_REDIS_STATUS_FIELDS(X, m)                                       \
    X(m, url,          URL,          PF_STR,    PF_REQUIRED)                  \
    X(m, state,        STATE,        PF_STR,    PF_REQUIRED)                  \
    X(m, hosts,        HOSTS,        PF_UINT,   PF_REQUIRED)                  \
    X(m, last_error,   LAST_ERROR,   PF_STR,    PF_REQUIRED)                  \
    X(m, config,       CONFIG,       PF_OBJ(redis_config), 0)
#define PROTO_STATUS_REQ_FIELDS(X, m)
#define PROTO_STATUS_REP_FIELDS(X, m)                                         \
    X(m, enabled,      ENABLED,      PF_BOOL,   PF_REQUIRED)                  \
    X(m, policy,       POLICY,       PF_STR,    PF_REQUIRED)                  \
    X(m, enforcement,  ENFORCEMENT,  PF_STR,    PF_REQUIRED)                  \
    X(m, window_days,  WINDOW_DAYS,  PF_DOUBLE, PF_REQUIRED)                  \
    X(m, default_quota_tokens, DEFAULT_QUOTA_TOKENS, PF_UINT, 0)              \
    X(m, quota_from,   QUOTA_FROM,   PF_STR,    0)                            \
    X(m, providers,    PROVIDERS,    PF_OBJARR(provider_status), PF_REQUIRED) \
    X(m, version,      VERSION,      PF_STR,    0)                            \
    X(m, env_file,     ENV_FILE,     PF_STR,    0)                            \
    X(m, database,     DATABASE,     PF_STR,    0)                            \
    X(m, uptime_s,     UPTIME_S,     PF_DOUBLE, 0)                            \
    X(m, connections,  CONNECTIONS,  PF_UINT,   0)                            \
    X(m, open_permits, OPEN_PERMITS, PF_UINT,   0)                            \
    X(m, last_flush,   LAST_FLUSH,   PF_DOUBLE, PF_NULLABLE)                  \
    X(m, store,        STORE,        PF_STR,    0)                            \
    X(m, store_error,  STORE_ERROR,  PF_STR,    0)                            \
    X(m, models,       MODELS,       PF_OBJARR(model_status), 0)            \
    X(m, daily_limits, DAILY_LIMITS, PF_OBJARR(daily_limit), 0)            \
    X(m, redis,        REDIS,        PF_OBJ(redis_status), 0)

/* quota_reserve: atomic check-and-reserve on a workflow and/or a tenant.
 * The reply's subject is the tightest one, over_quota says allowed but
 * over (soft mode), tokens_remaining is the least over the subjects (never
 * below 0), reset_at is in unix seconds, reservation is for quota_commit. */
#define PROTO_QUOTA_RESERVE_REQ_FIELDS(X, m)                                  \
    X(m, workflow_id, WORKFLOW_ID, PF_STR,  0)                                \
    X(m, tenant_id,   TENANT_ID,   PF_STR,  0)                                \
    X(m, tokens,      TOKENS,      PF_UINT, PF_REQUIRED)
#define PROTO_QUOTA_RESERVE_REP_FIELDS(X, m)                                  \
    X(m, allowed,          ALLOWED,          PF_BOOL,   PF_REQUIRED)          \
    X(m, over_quota,       OVER_QUOTA,       PF_BOOL,   PF_REQUIRED)          \
    X(m, subject,          SUBJECT,          PF_STR,    PF_REQUIRED)          \
    X(m, tokens_used,      TOKENS_USED,      PF_UINT,   PF_REQUIRED)          \
    X(m, tokens_limit,     TOKENS_LIMIT,     PF_UINT,   PF_REQUIRED)          \
    X(m, tokens_remaining, TOKENS_REMAINING, PF_UINT,   PF_REQUIRED)          \
    X(m, reset_at,         RESET_AT,         PF_DOUBLE, PF_NULLABLE)          \
    X(m, reservation,      RESERVATION,      PF_INT,    PF_REQUIRED)

/* quota_commit: reconcile a reservation with the tokens really used. */
#define PROTO_QUOTA_COMMIT_REQ_FIELDS(X, m)                                   \
    X(m, workflow_id, WORKFLOW_ID, PF_STR,  0)                                \
    X(m, tenant_id,   TENANT_ID,   PF_STR,  0)                                \
    X(m, reservation, RESERVATION, PF_INT,  PF_REQUIRED)                      \
    X(m, estimate,    ESTIMATE,    PF_UINT, PF_REQUIRED)                      \
    X(m, actual,      ACTUAL,      PF_UINT, PF_REQUIRED)
#define PROTO_QUOTA_COMMIT_REP_FIELDS(X, m)

/* quota_status, quota_set, quota_reset: one subject, by workflow_id or
 * tenant_id (exactly one).  One struct for the three requests: limit is
 * quota_set's (and required there); quota_status and quota_reset have the
 * fields before it.  Windows are in unix seconds. */
#define PROTO_QUOTA_SUBJECT_REQ_FIELDS(X, m)                                  \
    X(m, workflow_id, WORKFLOW_ID, PF_STR,  0)                                \
    X(m, tenant_id,   TENANT_ID,   PF_STR,  0)                                \
    X(m, limit,       LIMIT,       PF_UINT, PF_REQUIRED)
#define PROTO_QUOTA_STATUS_REP_FIELDS(X, m)                                   \
    X(m, subject,          SUBJECT,          PF_STR,    PF_REQUIRED)          \
    X(m, tokens_used,      TOKENS_USED,      PF_UINT,   PF_REQUIRED)          \
    X(m, tokens_remaining, TOKENS_REMAINING, PF_UINT,   PF_REQUIRED)          \
    X(m, tokens_limit,     TOKENS_LIMIT,     PF_UINT,   PF_REQUIRED)          \
    X(m, window_start,     WINDOW_START,     PF_DOUBLE, PF_REQUIRED)          \
    X(m, window_end,       WINDOW_END,       PF_DOUBLE, PF_REQUIRED)          \
    X(m, reset_at,         RESET_AT,         PF_DOUBLE, PF_NULLABLE)          \
    X(m, known,            KNOWN,            PF_BOOL,   0)  /* ever seen */
#define PROTO_QUOTA_SET_REP_FIELDS(X, m)                                      \
    X(m, subject,      SUBJECT,      PF_STR,  PF_REQUIRED)                    \
    X(m, tokens_limit, TOKENS_LIMIT, PF_UINT, PF_REQUIRED)
#define PROTO_QUOTA_RESET_REP_FIELDS(X, m)                                    \
    X(m, subject, SUBJECT, PF_STR, PF_REQUIRED)
/* quota_unset: the override is gone; tokens_limit is the default the
 * subject falls back to. */
#define PROTO_QUOTA_UNSET_REP_FIELDS(X, m)                                    \
    X(m, subject,      SUBJECT,      PF_STR,  PF_REQUIRED)                    \
    X(m, tokens_limit, TOKENS_LIMIT, PF_UINT, PF_REQUIRED)

/* quota_list: the workflows (or, with tenant, the tenants) using the most,
 * at most top of them (default 20, 1 to 100), most first; total is how
 * many the daemon holds. */
#define PROTO_QUOTA_LIST_REQ_FIELDS(X, m)                                     \
    X(m, tenant, TENANT, PF_BOOL, 0)                                          \
    X(m, top,    TOP,    PF_UINT, 0)
#define PROTO_QUOTA_ENTRY_FIELDS(X, m)                                        \
    X(m, subject,          SUBJECT,          PF_STR,  PF_REQUIRED)            \
    X(m, tokens_used,      TOKENS_USED,      PF_UINT, PF_REQUIRED)            \
    X(m, tokens_limit,     TOKENS_LIMIT,     PF_UINT, PF_REQUIRED)            \
    X(m, tokens_remaining, TOKENS_REMAINING, PF_UINT, PF_REQUIRED)            \
    X(m, override,         OVERRIDE,         PF_BOOL, PF_REQUIRED)
#define PROTO_QUOTA_LIST_REP_FIELDS(X, m)                                     \
    X(m, subjects, SUBJECTS, PF_OBJARR(quota_entry), PF_REQUIRED)             \
    X(m, total,    TOTAL,    PF_UINT,                PF_REQUIRED)

/* select_provider: what the router would choose now (no token taken). */
#define PROTO_SELECT_PROVIDER_REQ_FIELDS(X, m)                                \
    X(m, workflow_id, WORKFLOW_ID, PF_STR,    0)                              \
    X(m, preferred,   PREFERRED,   PF_STR,    0)                              \
    X(m, exclude,     EXCLUDE,     PF_STRARR, 0)
#define PROTO_SELECT_PROVIDER_REP_FIELDS(X, m)                                \
    X(m, provider,     PROVIDER,     PF_STR,  PF_REQUIRED)                    \
    X(m, all_degraded, ALL_DEGRADED, PF_BOOL, PF_REQUIRED)

/* permit: quota reserve + route + acquire, one attempt of a call.  exclude
 * names the providers already tried, timeout_ms defaults to 0 (no waiting),
 * call_id ties the attempts of one call, traceparent is W3C trace context,
 * model a model group or id to route among its deployments.  The reply's
 * quota_remaining is nil without a workflow or tenant; its model is the
 * provider's model id to call, present when the permit named a model. */
#define PROTO_PERMIT_REQ_FIELDS(X, m)                                         \
    X(m, workflow_id,     WORKFLOW_ID,     PF_STR,    0)                      \
    X(m, tenant_id,       TENANT_ID,       PF_STR,    0)                      \
    X(m, tokens_estimate, TOKENS_ESTIMATE, PF_UINT,   0)                      \
    X(m, preferred,       PREFERRED,       PF_STR,    0)                      \
    X(m, exclude,         EXCLUDE,         PF_STRARR, 0)                      \
    X(m, timeout_ms,      TIMEOUT_MS,      PF_DOUBLE, 0)                      \
    X(m, call_id,         CALL_ID,         PF_STR,    0)                      \
    X(m, traceparent,     TRACEPARENT,     PF_STR,    0)                      \
    X(m, model,           MODEL,           PF_STR,    0)
#define PROTO_PERMIT_REP_FIELDS(X, m)                                         \
    X(m, permit_id,       PERMIT_ID,       PF_UINT,   PF_REQUIRED)            \
    X(m, provider,        PROVIDER,        PF_STR,    PF_REQUIRED)            \
    X(m, wait_ms,         WAIT_MS,         PF_DOUBLE, PF_REQUIRED)            \
    X(m, quota_allowed,   QUOTA_ALLOWED,   PF_BOOL,   PF_REQUIRED)            \
    X(m, quota_remaining, QUOTA_REMAINING, PF_UINT,   PF_NULLABLE)            \
    X(m, rate_limited,    RATE_LIMITED,    PF_BOOL,   PF_REQUIRED)            \
    X(m, all_degraded,    ALL_DEGRADED,    PF_BOOL,   PF_REQUIRED)            \
    X(m, model,           MODEL,           PF_STR,    0)

/* report: the outcome (ok, rate_limited, ...) of a permitted attempt;
 * tokens_used is what it really used (else the estimate is charged), final
 * says the logical call is over, headers are the provider's rate-limit
 * headers (lower-cased name -> value).  The reply is the provider's state
 * (healthy, degraded). */
#define PROTO_REPORT_REQ_FIELDS(X, m)                                         \
    X(m, permit_id,     PERMIT_ID,     PF_UINT,   PF_REQUIRED)                \
    X(m, outcome,       OUTCOME,       PF_STR,    PF_REQUIRED)                \
    X(m, latency_ms,    LATENCY_MS,    PF_DOUBLE, 0)                          \
    X(m, tokens_used,   TOKENS_USED,   PF_UINT,   0)                          \
    X(m, retry_after_s, RETRY_AFTER_S, PF_DOUBLE, 0)                          \
    X(m, final,         FINAL,         PF_BOOL,   0)                          \
    X(m, headers,       HEADERS,       PF_STRMAP, 0)
#define PROTO_REPORT_REP_FIELDS(X, m)                                         \
    X(m, state,                STATE,                PF_STR,    PF_REQUIRED)  \
    X(m, cooldown_remaining_s, COOLDOWN_REMAINING_S, PF_DOUBLE, PF_REQUIRED)

/* metrics: the registry, a page at a time (a reply is one frame).  A
 * series has its label values in its family's label order, a value
 * (counter, gauge) or a count, sum and cumulative buckets, one per bound
 * (histogram; +Inf implied).  format is "structured" (the default, in
 * families) or "prometheus" (in text); cursor is the previous reply's
 * next_cursor, absent on the last page. */
#define PROTO_METRIC_SERIES_FIELDS(X, m)                                      \
    X(m, labels,  LABELS,  PF_STRARR, PF_REQUIRED)                            \
    X(m, value,   VALUE,   PF_DOUBLE, 0)                                      \
    X(m, count,   COUNT,   PF_UINT,   0)                                      \
    X(m, sum,     SUM,     PF_DOUBLE, 0)                                      \
    X(m, buckets, BUCKETS, PF_DBLARR, 0)
#define PROTO_METRIC_FAMILY_FIELDS(X, m)                                      \
    X(m, name,        NAME,        PF_STR,    PF_REQUIRED)                    \
    X(m, type,        TYPE,        PF_STR,    PF_REQUIRED)                    \
    X(m, help,        HELP,        PF_STR,    PF_REQUIRED)                    \
    X(m, label_names, LABEL_NAMES, PF_STRARR, PF_REQUIRED)                    \
    X(m, bounds,      BOUNDS,      PF_DBLARR, 0)                              \
    X(m, series,      SERIES,      PF_OBJARR(metric_series), PF_REQUIRED)
#define PROTO_METRICS_REQ_FIELDS(X, m)                                        \
    X(m, format, FORMAT, PF_STR,  0)                                          \
    X(m, cursor, CURSOR, PF_UINT, 0)
#define PROTO_METRICS_REP_FIELDS(X, m)                                        \
    X(m, families,    FAMILIES,    PF_OBJARR(metric_family), 0)               \
    X(m, text,        TEXT,        PF_STR,                   0)               \
    X(m, next_cursor, NEXT_CURSOR, PF_UINT,                  0)

/* reload: re-read the env file (admin); the reply counts the providers
 * configured after it and names the file read ("" when none). */
#define PROTO_RELOAD_REQ_FIELDS(X, m)
#define PROTO_RELOAD_REP_FIELDS(X, m)                                         \
    X(m, providers, PROVIDERS, PF_UINT, PF_REQUIRED)                          \
    X(m, env_file,  ENV_FILE,  PF_STR,  PF_REQUIRED)

/* explain: the decisions the daemon still holds for one permit_id or one
 * call_id (exactly one), oldest first, at most the newest that fit a
 * frame; total is how many it holds, held and capacity its ring's fill
 * and LLMGUARD_DECISIONS.  A quota's verdict is ok, over (soft) or
 * refused; a provider's why is chosen, excluded, cooldown, no_token or
 * not_chosen, its cooldown (unix seconds), cause and Retry-After there
 * while it was degraded; outcome is pending, ok, rate_limited,
 * server_error, timeout, client_error, unreported or refused (with
 * error_code and error_msg).  A permit that named a model also has that
 * model, the deployment chosen (its alias) and its model id.  Times are
 * unix seconds. */
#define PROTO_EXPLAIN_REQ_FIELDS(X, m)                                        \
    X(m, permit_id, PERMIT_ID, PF_UINT, 0)                                    \
    X(m, call_id,   CALL_ID,   PF_STR,  0)
#define PROTO_DECISION_QUOTA_FIELDS(X, m)                                     \
    X(m, subject,      SUBJECT,      PF_STR,  PF_REQUIRED)                    \
    X(m, tokens_used,  TOKENS_USED,  PF_UINT, PF_REQUIRED)                    \
    X(m, tokens_limit, TOKENS_LIMIT, PF_UINT, PF_REQUIRED)                    \
    X(m, verdict,      VERDICT,      PF_STR,  PF_REQUIRED)
#define PROTO_DECISION_PROVIDER_FIELDS(X, m)                                  \
    X(m, name,           NAME,           PF_STR,    PF_REQUIRED)              \
    X(m, why,            WHY,            PF_STR,    PF_REQUIRED)              \
    X(m, cooldown_until, COOLDOWN_UNTIL, PF_DOUBLE, 0)                        \
    X(m, cooldown_cause, COOLDOWN_CAUSE, PF_STR,    0)                        \
    X(m, retry_after_s,  RETRY_AFTER_S,  PF_DOUBLE, 0)
#define PROTO_DECISION_FIELDS(X, m)                                           \
    X(m, seq,             SEQ,             PF_UINT,   PF_REQUIRED)            \
    X(m, permit_id,       PERMIT_ID,       PF_UINT,   PF_REQUIRED)            \
    X(m, call_id,         CALL_ID,         PF_STR,    PF_REQUIRED)            \
    X(m, workflow_id,     WORKFLOW_ID,     PF_STR,    0)                      \
    X(m, tenant_id,       TENANT_ID,       PF_STR,    0)                      \
    X(m, time,            TIME,            PF_DOUBLE, PF_REQUIRED)            \
    X(m, tokens_estimate, TOKENS_ESTIMATE, PF_UINT,   PF_REQUIRED)            \
    X(m, quota,           QUOTA,           PF_OBJARR(decision_quota),         \
      PF_REQUIRED)                                                            \
    X(m, routed,          ROUTED,          PF_BOOL,   PF_REQUIRED)            \
    X(m, providers,       PROVIDERS,       PF_OBJARR(decision_provider),      \
      PF_REQUIRED)                                                            \
    X(m, all_degraded,    ALL_DEGRADED,    PF_BOOL,   PF_REQUIRED)            \
    X(m, wait_ms,         WAIT_MS,         PF_DOUBLE, PF_REQUIRED)            \
    X(m, parked_ms,       PARKED_MS,       PF_DOUBLE, 0)                      \
    X(m, outcome,         OUTCOME,         PF_STR,    PF_REQUIRED)            \
    X(m, tokens_used,     TOKENS_USED,     PF_UINT,   0)                      \
    X(m, latency_ms,      LATENCY_MS,      PF_DOUBLE, 0)                      \
    X(m, retry_after_s,   RETRY_AFTER_S,   PF_DOUBLE, 0)                      \
    X(m, error_code,      ERROR_CODE,      PF_STR,    0)                      \
    X(m, error_msg,       ERROR_MSG,       PF_STR,    0)                      \
    X(m, model,           MODEL,           PF_STR,    0)                      \
    X(m, deployment,      DEPLOYMENT,      PF_STR,    0)                      \
    X(m, model_id,        MODEL_ID,        PF_STR,    0)
#define PROTO_EXPLAIN_REP_FIELDS(X, m)                                        \
    X(m, decisions, DECISIONS, PF_OBJARR(decision), PF_REQUIRED)              \
    X(m, total,     TOTAL,     PF_UINT,             PF_REQUIRED)              \
    X(m, held,      HELD,      PF_UINT,             PF_REQUIRED)              \
    X(m, capacity,  CAPACITY,  PF_UINT,             PF_REQUIRED)

/* The "err" object of a failed reply; the fields after msg come with
 * quota_exceeded (reset_at in unix seconds). */
#define PROTO_ERR_FIELDS(X, m)                                                \
    X(m, code,         CODE,         PF_STR,    PF_REQUIRED)                  \
    X(m, msg,          MSG,          PF_STR,    PF_REQUIRED)                  \
    X(m, subject,      SUBJECT,      PF_STR,    0)                            \
    X(m, tokens_used,  TOKENS_USED,  PF_UINT,   0)                            \
    X(m, tokens_limit, TOKENS_LIMIT, PF_UINT,   0)                            \
    X(m, reset_at,     RESET_AT,     PF_DOUBLE, PF_NULLABLE)                  \
    X(m, retry_after_s, RETRY_AFTER_S, PF_DOUBLE, 0)

/* Every message, as (name of its struct after "proto_", NAME of its list);
 * a PF_OBJARR element before the messages that hold it. */
#define PROTO_MESSAGES(X)                                                     \
    X(hello_req, HELLO_REQ)                                                   \
    X(hello_rep, HELLO_REP)                                                   \
    X(ping_req, PING_REQ)                                                     \
    X(ping_rep, PING_REP)                                                     \
    X(acquire_req, ACQUIRE_REQ)                                               \
    X(acquire_rep, ACQUIRE_REP)                                               \
    X(release_req, RELEASE_REQ)                                               \
    X(release_rep, RELEASE_REP)                                               \
    X(limiter_status_req, LIMITER_STATUS_REQ)                                 \
    X(limiter_status_rep, LIMITER_STATUS_REP)                                 \
    X(provider_status, PROVIDER_STATUS)                                       \
    X(model_status, MODEL_STATUS)                                             \
    X(daily_limit, DAILY_LIMIT)                                               \
    X(redis_config, REDIS_CONFIG)                                             \
    X(redis_status, REDIS_STATUS)                                             \
    X(status_req, STATUS_REQ)                                                 \
    X(status_rep, STATUS_REP)                                                 \
    X(quota_reserve_req, QUOTA_RESERVE_REQ)                                   \
    X(quota_reserve_rep, QUOTA_RESERVE_REP)                                   \
    X(quota_commit_req, QUOTA_COMMIT_REQ)                                     \
    X(quota_commit_rep, QUOTA_COMMIT_REP)                                     \
    X(quota_subject_req, QUOTA_SUBJECT_REQ)                                   \
    X(quota_status_rep, QUOTA_STATUS_REP)                                     \
    X(quota_set_rep, QUOTA_SET_REP)                                           \
    X(quota_reset_rep, QUOTA_RESET_REP)                                       \
    X(quota_unset_rep, QUOTA_UNSET_REP)                                       \
    X(quota_list_req, QUOTA_LIST_REQ)                                         \
    X(quota_entry, QUOTA_ENTRY)                                               \
    X(quota_list_rep, QUOTA_LIST_REP)                                         \
    X(select_provider_req, SELECT_PROVIDER_REQ)                               \
    X(select_provider_rep, SELECT_PROVIDER_REP)                               \
    X(permit_req, PERMIT_REQ)                                                 \
    X(permit_rep, PERMIT_REP)                                                 \
    X(report_req, REPORT_REQ)                                                 \
    X(report_rep, REPORT_REP)                                                 \
    X(metric_series, METRIC_SERIES)                                           \
    X(metric_family, METRIC_FAMILY)                                           \
    X(metrics_req, METRICS_REQ)                                               \
    X(metrics_rep, METRICS_REP)                                               \
    X(reload_req, RELOAD_REQ)                                                 \
    X(reload_rep, RELOAD_REP)                                                 \
    X(explain_req, EXPLAIN_REQ)                                               \
    X(decision_quota, DECISION_QUOTA)                                         \
    X(decision_provider, DECISION_PROVIDER)                                   \
    X(decision, DECISION)                                                     \
    X(explain_rep, EXPLAIN_REP)                                               \
    X(err, ERR)

/* The C type of a member, by its type column. */
#define PROTO_CTYPE_PF_STR          struct proto_str
#define PROTO_CTYPE_PF_UINT         uint64_t
#define PROTO_CTYPE_PF_INT          int64_t
#define PROTO_CTYPE_PF_DOUBLE       double
#define PROTO_CTYPE_PF_BOOL         bool
#define PROTO_CTYPE_PF_STRARR       struct proto_strarr
#define PROTO_CTYPE_PF_DBLARR       struct proto_dblarr
#define PROTO_CTYPE_PF_STRMAP       struct proto_strmap
#define PROTO_CTYPE_PF_OBJARR(msg)  struct proto_objarr
#define PROTO_CTYPE_PF_OBJ(msg)     struct proto_##msg *

/* Each message's struct, the names of its bits, and their count. */
#define PROTO_GEN_MEMBER(m, name, NAME, type, flags) PROTO_CTYPE_##type name;
#define PROTO_GEN_BIT(m, name, NAME, type, flags) PROTO_##m##_##NAME,
#define PROTO_GEN_MESSAGE(msg, MSG)                                           \
    struct proto_##msg {                                                      \
        uint32_t has;                                                         \
        PROTO_##MSG##_FIELDS(PROTO_GEN_MEMBER, MSG)                           \
    };                                                                        \
    enum { PROTO_##MSG##_FIELDS(PROTO_GEN_BIT, MSG) PROTO_##MSG##__COUNT };   \
    _Static_assert(PROTO_##MSG##__COUNT <= 32,                                \
                   "struct proto_" #msg ": more fields than bits in has");
PROTO_MESSAGES(PROTO_GEN_MESSAGE)

/* A decoded request: the op, its id, and its fields. */
struct proto_req {
    enum proto_op op;
    uint64_t id;
    union {
        struct proto_hello_req hello;
        struct proto_ping_req ping;
        struct proto_acquire_req acquire;
        struct proto_release_req release;
        struct proto_limiter_status_req limiter_status;
        struct proto_status_req status;
        struct proto_quota_reserve_req quota_reserve;
        struct proto_quota_commit_req quota_commit;
        struct proto_quota_subject_req quota_subject;   /* status/set/reset/
                                                           unset */
        struct proto_quota_list_req quota_list;
        struct proto_select_provider_req select_provider;
        struct proto_permit_req permit;
        struct proto_report_req report;
        struct proto_metrics_req metrics;
        struct proto_reload_req reload;
        struct proto_explain_req explain;
    } u;
};

/* A decoded reply; on ok == false, err is filled and u is untouched. */
struct proto_rep {
    uint64_t id;
    bool ok;
    struct proto_err err;
    union {
        struct proto_hello_rep hello;
        struct proto_ping_rep ping;
        struct proto_acquire_rep acquire;
        struct proto_release_rep release;
        struct proto_limiter_status_rep limiter_status;
        struct proto_status_rep status;
        struct proto_quota_reserve_rep quota_reserve;
        struct proto_quota_commit_rep quota_commit;
        struct proto_quota_status_rep quota_status;
        struct proto_quota_set_rep quota_set;
        struct proto_quota_reset_rep quota_reset;
        struct proto_quota_unset_rep quota_unset;
        struct proto_quota_list_rep quota_list;
        struct proto_select_provider_rep select_provider;
        struct proto_permit_rep permit;
        struct proto_report_rep report;
        struct proto_metrics_rep metrics;
        struct proto_reload_rep reload;
        struct proto_explain_rep explain;
    } u;
};

/* An error to send: code, message and the optional quota details. */
struct proto_error {
    enum proto_errcode code;
    char msg[PROTO_ERRMSG_MAX];
    struct proto_err detail;    /* only the subject/tokens/reset_at bits */
    char subject[272];          /* detail.subject points here */
};

/* Fill e with code and a printf-style message; returns -1 for chaining. */
int proto_error_set(struct proto_error *e, enum proto_errcode code,
                    const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- framing ----------------------------------------------------------- */

/*
 * An incremental frame reader: feed it bytes as they arrive, take whole
 * frames out.  Frames returned by proto_reader_next() stay valid until the
 * next call to proto_reader_feed() or proto_reader_next().
 */
struct proto_reader {
    unsigned char *buf;
    size_t len;     /* bytes held */
    size_t off;     /* start of the unread part */
    size_t cap;
};

void proto_reader_init(struct proto_reader *r);
void proto_reader_free(struct proto_reader *r);
/* Append bytes; -1 on out of memory. */
int proto_reader_feed(struct proto_reader *r, const void *data, size_t len);
/*
 * Take the next whole frame: 1 with *frame and *len set, 0 when more bytes are
 * needed, -1 when the stream is broken (a length of 0 or over
 * PROTO_MAX_FRAME; e is filled with frame_too_large or bad_request).  After
 * -1 the stream cannot be resynchronised: reply and close.
 */
int proto_reader_next(struct proto_reader *r, const unsigned char **frame,
                      uint32_t *len, struct proto_error *e);
/* Bytes held but not yet returned as frames. */
size_t proto_reader_pending(const struct proto_reader *r);
/*
 * Zero-copy feeding: room for at least min bytes at the end of the buffer
 * (*avail may be more), to be filled by read(2) and then committed with
 * proto_reader_commit().  NULL on out of memory.  Frames returned earlier
 * are invalid after this call.
 */
unsigned char *proto_reader_space(struct proto_reader *r, size_t min,
                                  size_t *avail);
void proto_reader_commit(struct proto_reader *r, size_t n);

/*
 * Check a 4-byte length prefix: 1 and *len when valid, -1 (e filled) when
 * out of range.  For readers that keep their own buffer (the daemon uses
 * its bufferevent's).
 */
int proto_frame_length(const unsigned char hdr[4], uint32_t *len,
                       struct proto_error *e);

/* ---- messages ---------------------------------------------------------- */

/* Outcome of decoding a request frame. */
enum proto_decode_result {
    PROTO_DECODE_OK,
    PROTO_DECODE_BAD,       /* well-formed msgpack, wrong request: reply */
    PROTO_DECODE_FATAL,     /* not msgpack: reply and close */
};

/*
 * Decode one request frame (without its length prefix).  Strings and arrays
 * in req point into the frame or into zone: keep both alive while req is
 * used; clear the zone between messages.  On PROTO_DECODE_BAD req->id holds
 * the id when one could be read (else 0) and e says what was wrong.
 */
enum proto_decode_result proto_decode_request(const unsigned char *frame,
    uint32_t len, msgpack_zone *zone, struct proto_req *req,
    struct proto_error *e);

/*
 * Decode one reply frame for a request of op (the client knows which op it
 * sent under that id).  Returns 0, or -1 with e filled (malformed reply).
 */
int proto_decode_reply(const unsigned char *frame, uint32_t len,
                       enum proto_op op, msgpack_zone *zone,
                       struct proto_rep *rep, struct proto_error *e);

/* Peek at a reply frame's id without decoding the rest; -1 if unreadable. */
int proto_reply_id(const unsigned char *frame, uint32_t len, uint64_t *id);

/*
 * Encoders append one whole frame (length prefix included) to sb; 0 or -1
 * on out of memory.  msg points to the op's request or reply struct.
 */
int proto_encode_request(msgpack_sbuffer *sb, enum proto_op op, uint64_t id,
                         const void *msg);
int proto_encode_reply(msgpack_sbuffer *sb, enum proto_op op, uint64_t id,
                       const void *msg);
int proto_encode_error(msgpack_sbuffer *sb, uint64_t id,
                       const struct proto_error *e);

/* The field table of an op's request or reply (for tests and tools). */
const struct proto_msgdef *proto_request_def(enum proto_op op);
const struct proto_msgdef *proto_reply_def(enum proto_op op);

/* ---- socket path (llmguardd(8), "The socket") -------------------------- */

/*
 * The default socket path into buf: $XDG_RUNTIME_DIR/llmguard/llmguardd.sock,
 * else /tmp/llmguard-<uid>/llmguardd.sock.  Returns 0, or -1 if it does not
 * fit.  LLMGUARD_SOCKET is the caller's business (it is not a default).
 */
int proto_default_socket_path(char *buf, size_t len);

#endif
