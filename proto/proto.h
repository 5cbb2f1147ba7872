/*
 * proto.h - the llmguard wire codec, shared by llmguardd, libllmguard and
 * llmguardctl.
 *
 * Framing: a 4-byte big-endian length (1..PROTO_MAX_FRAME) followed by one
 * msgpack map.  Requests carry "op" and "id"; replies carry "id", "ok" and
 * either the result fields or "err": {code, msg, ...}.  See PROTOCOL.md.
 *
 * Like hiredis' reader, nothing here does I/O: bytes go in, messages come
 * out.  Every message is described by a field table (name, type, offset)
 * that drives both its encoder and its decoder, so adding a message or a
 * field is adding a row.
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
};

struct proto_strarr {
    struct proto_str *v;
    uint32_t n;
};

struct proto_dblarr {
    double *v;
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
 * One field of a message.  Every message struct begins with "uint32_t has",
 * whose bit i says field i of its table is present; a required field is
 * always encoded.
 */
struct proto_field {
    const char *name;
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

#define PROTO_HAS(msg, bit) (((msg)->has >> (bit)) & 1u)
#define PROTO_SET(msg, bit) ((msg)->has |= 1u << (bit))

/* ---- messages ---------------------------------------------------------- */

struct proto_hello_req {
    uint32_t has;
    uint64_t version;           /* 0: required */
    struct proto_str client;    /* 1: optional client name */
};
struct proto_hello_rep {
    uint32_t has;
    uint64_t version;
    struct proto_str server;
};

struct proto_ping_req {
    uint32_t has;
};
struct proto_ping_rep {
    uint32_t has;
    double uptime_s;
};

/* acquire: take tokens from a provider's bucket, waiting up to timeout_ms. */
struct proto_acquire_req {
    uint32_t has;
    struct proto_str provider;  /* 0: required */
    uint64_t tokens;            /* 1: request tokens, default 1 */
    uint64_t llm_tokens;        /* 2: for the TOKENS_PER_MIN bucket */
    double timeout_ms;          /* 3: default 0: try once */
};
struct proto_acquire_rep {
    uint32_t has;
    double waited_ms;
};

/* release: return tokens to a provider's bucket (capped at its burst). */
struct proto_release_req {
    uint32_t has;
    struct proto_str provider;
    uint64_t tokens;            /* 1: default 1 */
    uint64_t llm_tokens;        /* 2 */
};
struct proto_release_rep {
    uint32_t has;
    double available_tokens;
};

/* limiter_status: one provider's bucket. */
struct proto_limiter_status_req {
    uint32_t has;
    struct proto_str provider;
};
struct proto_limiter_status_rep {
    uint32_t has;
    double available_tokens;
    double rate_per_sec;
    double max_tokens;
    bool enabled;
    uint64_t waiters;
    double tokens_per_min;          /* 0: unlimited */
    double available_llm_tokens;    /* only with tokens_per_min */
};

/* status: the daemon and every provider. */
struct proto_provider_status {
    uint32_t has;
    struct proto_str name;
    double available_tokens;
    double rate_per_sec;
    double max_tokens;
    uint64_t waiters;
    double tokens_per_min;
    struct proto_str state;         /* healthy, degraded */
    double cooldown_remaining_s;
    double latency_ewma_ms;         /* 8: absent before the first sample */
};
struct proto_status_req {
    uint32_t has;
};
struct proto_status_rep {
    uint32_t has;
    bool enabled;
    struct proto_str policy;
    struct proto_str enforcement;
    double window_days;
    struct proto_objarr providers;  /* of struct proto_provider_status */
};

/* quota_reserve: atomic check-and-reserve on a workflow and/or a tenant. */
struct proto_quota_reserve_req {
    uint32_t has;
    struct proto_str workflow_id;   /* 0 */
    struct proto_str tenant_id;     /* 1 */
    uint64_t tokens;                /* 2: required */
};
struct proto_quota_reserve_rep {
    uint32_t has;
    bool allowed;
    bool over_quota;                /* soft mode: allowed but over */
    struct proto_str subject;       /* the tightest subject */
    uint64_t tokens_used;
    uint64_t tokens_limit;
    uint64_t tokens_remaining;      /* min over the subjects, >= 0 */
    double reset_at;                /* 6: unix seconds, nullable */
    int64_t reservation;            /* handle for quota_commit */
};

/* quota_commit: reconcile a reservation with the tokens really used. */
struct proto_quota_commit_req {
    uint32_t has;
    struct proto_str workflow_id;   /* 0 */
    struct proto_str tenant_id;     /* 1 */
    int64_t reservation;            /* 2: required */
    uint64_t estimate;              /* 3: required */
    uint64_t actual;                /* 4: required */
};
struct proto_quota_commit_rep {
    uint32_t has;
};

/* quota_status, quota_set, quota_reset: one subject, by workflow_id or
 * tenant_id (exactly one). */
struct proto_quota_subject_req {
    uint32_t has;
    struct proto_str workflow_id;   /* 0 */
    struct proto_str tenant_id;     /* 1 */
    uint64_t limit;                 /* 2: quota_set only, required there */
};
struct proto_quota_status_rep {
    uint32_t has;
    struct proto_str subject;
    uint64_t tokens_used;
    uint64_t tokens_remaining;
    uint64_t tokens_limit;
    double window_start;            /* unix seconds */
    double window_end;
    double reset_at;                /* 6: nullable */
};
struct proto_quota_set_rep {
    uint32_t has;
    struct proto_str subject;
    uint64_t tokens_limit;
};
struct proto_quota_reset_rep {
    uint32_t has;
    struct proto_str subject;
};

/* select_provider: what the router would choose now (no token taken). */
struct proto_select_provider_req {
    uint32_t has;
    struct proto_str workflow_id;   /* 0 */
    struct proto_str preferred;     /* 1 */
    struct proto_strarr exclude;    /* 2 */
};
struct proto_select_provider_rep {
    uint32_t has;
    struct proto_str provider;
    bool all_degraded;
};

/* permit: quota reserve + route + acquire, one attempt of a call. */
struct proto_permit_req {
    uint32_t has;
    struct proto_str workflow_id;   /* 0 */
    struct proto_str tenant_id;     /* 1 */
    uint64_t tokens_estimate;       /* 2: default 0 */
    struct proto_str preferred;     /* 3 */
    struct proto_strarr exclude;    /* 4: providers already tried */
    double timeout_ms;              /* 5: default 0: no waiting */
    struct proto_str call_id;       /* 6: ties the attempts of one call */
    struct proto_str traceparent;   /* 7: W3C trace context */
};
struct proto_permit_rep {
    uint32_t has;
    uint64_t permit_id;
    struct proto_str provider;
    double wait_ms;
    bool quota_allowed;
    uint64_t quota_remaining;       /* 4: absent without workflow/tenant */
    bool rate_limited;
    bool all_degraded;
};

/* report: the outcome of a permitted attempt. */
struct proto_report_req {
    uint32_t has;
    uint64_t permit_id;             /* 0: required */
    struct proto_str outcome;       /* 1: required: ok, rate_limited, ... */
    double latency_ms;              /* 2 */
    uint64_t tokens_used;           /* 3: actual tokens (else: estimate) */
    double retry_after_s;           /* 4 */
    bool final;                     /* 5: the logical call is over */
};
struct proto_report_rep {
    uint32_t has;
    struct proto_str state;         /* the provider's: healthy, degraded */
    double cooldown_remaining_s;
};

/* metrics: the registry, a page at a time (a reply is one frame). */
struct proto_metric_series {
    uint32_t has;
    struct proto_strarr labels;     /* values, in the family's label order */
    double value;                   /* counter, gauge */
    uint64_t count;                 /* histogram */
    double sum;                     /* histogram */
    struct proto_dblarr buckets;    /* histogram: cumulative, per bound */
};
struct proto_metric_family {
    uint32_t has;
    struct proto_str name;
    struct proto_str type;          /* counter, gauge, histogram */
    struct proto_str help;
    struct proto_strarr label_names;
    struct proto_dblarr bounds;     /* histogram upper bounds; +Inf implied */
    struct proto_objarr series;     /* of struct proto_metric_series */
};
struct proto_metrics_req {
    uint32_t has;
    struct proto_str format;        /* 0: "structured" (default) or
                                       "prometheus" */
    uint64_t cursor;                /* 1: from the previous next_cursor */
};
struct proto_metrics_rep {
    uint32_t has;
    struct proto_objarr families;   /* structured */
    struct proto_str text;          /* prometheus */
    uint64_t next_cursor;           /* 3: absent on the last page */
};

/* reload: re-read the env file (admin). */
struct proto_reload_req {
    uint32_t has;
};
struct proto_reload_rep {
    uint32_t has;
    uint64_t providers;             /* configured after the reload */
    struct proto_str env_file;      /* the file read, "" when none */
};

/* The "err" object of a failed reply. */
struct proto_err {
    uint32_t has;
    struct proto_str code;
    struct proto_str msg;
    struct proto_str subject;   /* quota_exceeded */
    uint64_t tokens_used;       /* quota_exceeded */
    uint64_t tokens_limit;      /* quota_exceeded */
    double reset_at;            /* quota_exceeded, unix seconds, nullable */
};
enum {
    PROTO_ERR_CODE, PROTO_ERR_MSG, PROTO_ERR_SUBJECT, PROTO_ERR_TOKENS_USED,
    PROTO_ERR_TOKENS_LIMIT, PROTO_ERR_RESET_AT
};

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
        struct proto_quota_subject_req quota_subject;   /* status/set/reset */
        struct proto_select_provider_req select_provider;
        struct proto_permit_req permit;
        struct proto_report_req report;
        struct proto_metrics_req metrics;
        struct proto_reload_req reload;
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
        struct proto_select_provider_rep select_provider;
        struct proto_permit_rep permit;
        struct proto_report_rep report;
        struct proto_metrics_rep metrics;
        struct proto_reload_rep reload;
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

/* ---- socket path (DESIGN.md §6) ---------------------------------------- */

/*
 * The default socket path into buf: $XDG_RUNTIME_DIR/llmguard/llmguardd.sock,
 * else /tmp/llmguard-<uid>/llmguardd.sock.  Returns 0, or -1 if it does not
 * fit.  LLMGUARD_SOCKET is the caller's business (it is not a default).
 */
int proto_default_socket_path(char *buf, size_t len);

#endif
