/* client.c - libllmguard: a blocking request/reply client over the socket. */
#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "headers_internal.h"

#define ERRMSG_MAX CLIENT_ERRMSG_MAX
#define TIMEOUT_MS_DEFAULT 2000.0
#define TIMEOUT_MS_MAX 86400000.0   /* a day */

/*
 * The message of one thread's last call on a handle, while that call is
 * one that failed.  Only its thread writes it, so llmguard_last_error()
 * hands it out as it is: it stays until the thread's next call on the
 * handle, whatever the others do.  A thread that ends on a failed call
 * leaves its entry to llmguard_close().
 */
struct thread_error {
    uint64_t thread;            /* thread_serial() of its thread */
    struct thread_error *next;
    char msg[ERRMSG_MAX];
};

struct llmguard {
    pthread_mutex_t mu;         /* the connection, one exchange at a time */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int fd;                     /* -1 while not connected */
    uint64_t next_id;
    struct proto_reader rd;
    msgpack_sbuffer sb;
    msgpack_zone zone;
    pthread_mutex_t errors_mu;  /* the list of errors, never held long */
    struct thread_error *errors;
    double timeout_ms;          /* an exchange's bound beyond its wait; 0:
                                   none (LLMGUARD_CLIENT_TIMEOUT_MS) */
    double rcvtimeo_ms;         /* SO_RCVTIMEO on fd now */
    char bad_timeout[160];      /* a bad LLMGUARD_CLIENT_TIMEOUT_MS */
};

static const struct {
    int code;
    const char *text;
} errtab[] = {
    { LLMGUARD_OK, "success" },
    { LLMGUARD_EUNAVAIL, "llmguardd is unreachable" },
    { LLMGUARD_ETIMEDOUT, "timed out" },
    { LLMGUARD_EQUOTA, "quota exceeded" },
    { LLMGUARD_ENOPROVIDER, "no such provider, or none available" },
    { LLMGUARD_EPERM, "permission denied" },
    { LLMGUARD_EINVAL, "invalid request" },
    { LLMGUARD_EPROTO, "protocol error" },
    { LLMGUARD_ENOMEM, "out of memory" },
    { LLMGUARD_EBUSY, "llmguardd is busy" },
    { LLMGUARD_EINTERNAL, "llmguardd internal error" },
    { LLMGUARD_ECALL, "the provider call failed" },
};

const char *
llmguard_strerror(int err)
{
    for (size_t i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
        if (errtab[i].code == err)
            return errtab[i].text;
    return "unknown error";
}

/* A number for the calling thread that no other thread ever gets. */
static uint64_t
thread_serial(void)
{
    static uint64_t next;
    static __thread uint64_t serial;

    if (serial == 0)
        serial = __atomic_add_fetch(&next, 1, __ATOMIC_RELAXED);
    return serial;
}

/*
 * The calling thread's error on g: NULL when it has none, unless create,
 * then a new one (NULL only when out of memory).
 */
static struct thread_error *
thread_error(llmguard_t *g, bool create)
{
    uint64_t self = thread_serial();
    struct thread_error *t;

    pthread_mutex_lock(&g->errors_mu);
    for (t = g->errors; t != NULL && t->thread != self; t = t->next)
        continue;
    if (t == NULL && create && (t = malloc(sizeof(*t))) != NULL) {
        t->thread = self;
        t->msg[0] = '\0';
        t->next = g->errors;
        g->errors = t;
    }
    pthread_mutex_unlock(&g->errors_mu);
    return t;
}

/* The calling thread's call on g succeeded: it has no error any more. */
static void
clear_error(llmguard_t *g)
{
    uint64_t self = thread_serial();

    pthread_mutex_lock(&g->errors_mu);
    for (struct thread_error **p = &g->errors; *p != NULL; p = &(*p)->next) {
        if ((*p)->thread == self) {
            struct thread_error *t = *p;
            *p = t->next;
            free(t);
            break;
        }
    }
    pthread_mutex_unlock(&g->errors_mu);
}

/* Keep the message of the calling thread's failed call; returns code. */
static int
seterr(llmguard_t *g, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
seterr(llmguard_t *g, int code, const char *fmt, ...)
{
    struct thread_error *t = thread_error(g, true);
    va_list ap;

    if (t == NULL)
        return code;    /* no room: llmguard_last_error() gives "" */
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof(t->msg), fmt, ap);
    va_end(ap);
    return code;
}

/* Parse a timeout in ms: 0 (none) up to a day; -1 for anything else. */
static double
parse_timeout_ms(const char *s)
{
    char *end;
    double ms;

    errno = 0;
    ms = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(ms >= 0) ||
        ms > TIMEOUT_MS_MAX)
        return -1;
    return ms;
}

double
client_timeout_env(char *bad, size_t len)
{
    const char *env = getenv("LLMGUARD_CLIENT_TIMEOUT_MS");
    double ms;

    if (env == NULL || env[0] == '\0')
        return TIMEOUT_MS_DEFAULT;
    if ((ms = parse_timeout_ms(env)) < 0)
        snprintf(bad, len, "LLMGUARD_CLIENT_TIMEOUT_MS=%.32s: expected "
                 "milliseconds from 0 (no bound) to %.0f", env,
                 TIMEOUT_MS_MAX);
    return ms;
}

/* The handle's client timeout from the environment. */
static void
timeout_from_env(llmguard_t *g)
{
    g->timeout_ms = client_timeout_env(g->bad_timeout,
                                       sizeof(g->bad_timeout));
}

int
client_timeout_check(double timeout_s, char *msg, size_t len)
{
    if (!(timeout_s >= 0) || timeout_s * 1e3 > TIMEOUT_MS_MAX) {
        snprintf(msg, len, "timeout_s must be from 0 (no bound) to %.0f",
                 TIMEOUT_MS_MAX / 1e3);
        return -1;
    }
    return 0;
}

int
llmguard_set_timeout(llmguard_t *g, double timeout_s)
{
    char msg[96];

    if (client_timeout_check(timeout_s, msg, sizeof(msg)) < 0)
        return seterr(g, LLMGUARD_EINVAL, "%s", msg);
    pthread_mutex_lock(&g->mu);
    g->timeout_ms = timeout_s * 1e3;
    g->bad_timeout[0] = '\0';
    pthread_mutex_unlock(&g->mu);
    return 0;
}

int
client_socket_path(char *buf, size_t len, const char *socket_path)
{
    const char *env = getenv("LLMGUARD_SOCKET");

    if (socket_path == NULL && env != NULL && env[0] != '\0')
        socket_path = env;
    if (socket_path != NULL)
        return snprintf(buf, len, "%s", socket_path) < (int)len ? 0 : -1;
    return proto_default_socket_path(buf, len);
}

llmguard_t *
llmguard_open(const char *socket_path)
{
    llmguard_t *g = calloc(1, sizeof(*g));

    if (g == NULL)
        return NULL;
    if (client_socket_path(g->path, sizeof(g->path), socket_path) < 0 ||
        !msgpack_zone_init(&g->zone, 2048)) {
        free(g);
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->errors_mu, NULL);
    g->fd = -1;
    g->next_id = 1;
    timeout_from_env(g);
    proto_reader_init(&g->rd);
    msgpack_sbuffer_init(&g->sb);
    return g;
}

static void
disconnect(llmguard_t *g)
{
    if (g->fd >= 0)
        close(g->fd);
    g->fd = -1;
    proto_reader_free(&g->rd);
}

void
llmguard_close(llmguard_t *g)
{
    if (g == NULL)
        return;
    disconnect(g);
    msgpack_sbuffer_destroy(&g->sb);
    msgpack_zone_destroy(&g->zone);
    while (g->errors != NULL) {
        struct thread_error *t = g->errors;
        g->errors = t->next;
        free(t);
    }
    pthread_mutex_destroy(&g->errors_mu);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

const char *
llmguard_last_error(llmguard_t *g)
{
    const struct thread_error *t = thread_error(g, false);

    return t != NULL ? t->msg : "";
}

const char *
llmguard_socket_path(llmguard_t *g)
{
    return g->path;
}

/* Bound the blocking sends (SO_SNDTIMEO, also connect's) or receives
 * (SO_RCVTIMEO) on fd to ms; 0 means no bound. */
static int
set_timeo(int fd, int opt, double ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1e3);
    tv.tv_usec = (suseconds_t)ceil(fmod(ms, 1e3) * 1e3);
    if (tv.tv_usec >= 1000000) {
        tv.tv_sec++;
        tv.tv_usec -= 1000000;
    }
    return setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

static int
do_connect(llmguard_t *g)
{
    struct sockaddr_un sun;
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, g->path, strlen(g->path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return seterr(g, LLMGUARD_EUNAVAIL, "socket: %s", strerror(errno));
    if (set_timeo(fd, SO_SNDTIMEO, g->timeout_ms) < 0 ||
        set_timeo(fd, SO_RCVTIMEO, g->timeout_ms) < 0) {
        int err = errno;
        close(fd);
        return seterr(g, LLMGUARD_EUNAVAIL, "setsockopt: %s", strerror(err));
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int err = errno;
        close(fd);
        if (err == EACCES || err == EPERM)
            return seterr(g, LLMGUARD_EPERM, "connect %s: %s", g->path,
                          strerror(err));
        if (err == EAGAIN)      /* its backlog stayed full: SO_SNDTIMEO */
            return seterr(g, LLMGUARD_EUNAVAIL, "llmguardd on %s accepted "
                          "no connection within %.0f ms", g->path,
                          g->timeout_ms);
        return seterr(g, LLMGUARD_EUNAVAIL, "no llmguardd on %s: %s",
                      g->path, strerror(err));
    }
    g->fd = fd;
    g->rcvtimeo_ms = g->timeout_ms;
    proto_reader_init(&g->rd);
    return 0;
}

/* Send all of p; -1 with errno (EAGAIN: SO_SNDTIMEO ran out). */
static int
send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static double
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double
client_mono_ms(void)
{
    return mono_ms();
}

/*
 * Before a recv(2) of an exchange that must end by deadline_ms (0: no
 * bound): 0 with SO_RCVTIMEO set to what is left, in whole ms, or -1 when
 * nothing is left.  The option is set only when it changes: an exchange
 * bounded like the one before costs no system call.
 */
static int
bound_recv(llmguard_t *g, double deadline_ms)
{
    double ms = 0;

    if (deadline_ms > 0 && (ms = ceil(deadline_ms - mono_ms())) <= 0)
        return -1;
    if (ms != g->rcvtimeo_ms) {
        if (set_timeo(g->fd, SO_RCVTIMEO, ms) < 0)
            return -1;
        g->rcvtimeo_ms = ms;
    }
    return 0;
}

/* The exchange found no answer in time: the connection goes (a late reply
 * must not be taken for the next one), the call fails as unreachable. */
static int
timed_out(llmguard_t *g, enum proto_op op, double bound_ms)
{
    disconnect(g);
    return seterr(g, LLMGUARD_EUNAVAIL, "llmguardd on %s did not answer %s "
                  "within %.0f ms (LLMGUARD_CLIENT_TIMEOUT_MS %.0f ms beyond "
                  "the request's own wait)", g->path, proto_op_name(op),
                  bound_ms, g->timeout_ms);
}

/*
 * Read and decode replies until the one answering id arrives (a reply to
 * another id, stale from an earlier exchange, is skipped), waiting at most
 * bound_ms (0: no bound) in all.  Each frame is decoded once, straight
 * from the bytes recv(2) put in the reader.
 */
static int
recv_reply(llmguard_t *g, enum proto_op op, uint64_t id, double bound_ms,
           struct proto_rep *rep)
{
    const unsigned char *frame;
    uint32_t len;
    struct proto_error e;
    double deadline_ms = bound_ms > 0 ? mono_ms() + bound_ms : 0;

    for (;;) {
        int r = proto_reader_next(&g->rd, &frame, &len, &e);
        if (r < 0) {
            disconnect(g);
            return seterr(g, LLMGUARD_EPROTO, "bad frame from llmguardd: %s",
                          e.msg);
        }
        if (r == 1) {
            msgpack_zone_clear(&g->zone);
            if (proto_decode_reply(frame, len, op, &g->zone, rep, &e) < 0) {
                disconnect(g);
                return seterr(g, LLMGUARD_EPROTO, "malformed reply to %s: %s",
                              proto_op_name(op), e.msg);
            }
            if (rep->id == id)
                return 0;
            continue;
        }
        size_t avail;
        unsigned char *p = proto_reader_space(&g->rd, 4096, &avail);
        if (p == NULL) {
            disconnect(g);
            return seterr(g, LLMGUARD_ENOMEM, "out of memory");
        }
        if (bound_recv(g, deadline_ms) < 0)
            return timed_out(g, op, bound_ms);
        ssize_t n = recv(g->fd, p, avail, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return timed_out(g, op, bound_ms);
        if (n <= 0) {
            int err = n < 0 ? errno : 0;
            disconnect(g);
            return seterr(g, LLMGUARD_EUNAVAIL, "llmguardd closed the "
                          "connection%s%s", err ? ": " : "",
                          err ? strerror(err) : "");
        }
        proto_reader_commit(&g->rd, (size_t)n);
    }
}

int
client_wire_code(const struct proto_err *err)
{
    static const int map[PROTO_E__COUNT] = {
        [PROTO_E_BAD_REQUEST] = LLMGUARD_EINVAL,
        [PROTO_E_UNKNOWN_OP] = LLMGUARD_EPROTO,
        [PROTO_E_FRAME_TOO_LARGE] = LLMGUARD_EINVAL,
        [PROTO_E_UNKNOWN_PROVIDER] = LLMGUARD_ENOPROVIDER,
        [PROTO_E_TIMEOUT] = LLMGUARD_ETIMEDOUT,
        [PROTO_E_QUOTA_EXCEEDED] = LLMGUARD_EQUOTA,
        [PROTO_E_NO_PROVIDER] = LLMGUARD_ENOPROVIDER,
        [PROTO_E_PERMISSION_DENIED] = LLMGUARD_EPERM,
        [PROTO_E_BUSY] = LLMGUARD_EBUSY,
        [PROTO_E_INTERNAL] = LLMGUARD_EINTERNAL,
        [PROTO_E_VERSION] = LLMGUARD_EPROTO,
    };
    enum proto_errcode code = proto_errcode_from_name(err->code.ptr,
                                                      err->code.len);

    /* A code this library does not know is a malformed reply to it. */
    return code < PROTO_E__COUNT ? map[code] : LLMGUARD_EPROTO;
}

/* Map a wire error to a library code, keeping the daemon's message. */
static int
wire_error(llmguard_t *g, const struct proto_err *err)
{
    return seterr(g, client_wire_code(err), "%.*s: %.*s",
                  (int)err->code.len, err->code.ptr, (int)err->msg.len,
                  err->msg.ptr);
}

/* How long the daemon may keep req of op waiting, in ms. */
static double
request_wait_ms(enum proto_op op, const void *req)
{
    switch (op) {
    case PROTO_OP_ACQUIRE:
        return ((const struct proto_acquire_req *)req)->timeout_ms;
    case PROTO_OP_PERMIT:
        return ((const struct proto_permit_req *)req)->timeout_ms;
    default:
        return 0;
    }
}

/*
 * One request/reply exchange, with g->mu held, bounded by the client
 * timeout beyond the request's own wait.  The connection is made lazily;
 * a send that fails on an old connection (the daemon restarted) is
 * retried once on a new one, but not one that timed out.  A request that
 * was sent is never resent.
 */
static int
call_locked(llmguard_t *g, enum proto_op op, const void *req,
            struct proto_rep *rep)
{
    uint64_t id = g->next_id++;
    double bound_ms = 0;
    int rc;

    if (g->bad_timeout[0] != '\0')
        return seterr(g, LLMGUARD_EINVAL, "%s", g->bad_timeout);
    if (g->timeout_ms > 0)
        bound_ms = g->timeout_ms + request_wait_ms(op, req);
    g->sb.size = 0;
    if (proto_encode_request(&g->sb, op, id, req) < 0)
        return seterr(g, LLMGUARD_EINVAL, "request does not fit in a frame");
    for (int attempt = 0;; attempt++) {
        bool fresh = g->fd < 0;
        if (fresh && (rc = do_connect(g)) < 0)
            return rc;
        if (send_all(g->fd, g->sb.data, g->sb.size) == 0)
            break;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return timed_out(g, op, g->timeout_ms);
        rc = seterr(g, LLMGUARD_EUNAVAIL, "send to llmguardd: %s",
                    strerror(errno));
        disconnect(g);
        if (fresh || attempt > 0)
            return rc;
    }
    if ((rc = recv_reply(g, op, id, bound_ms, rep)) < 0)
        return rc;
    if (!rep->ok)
        return wire_error(g, &rep->err);
    clear_error(g);
    return 0;
}

int
client_call(llmguard_t *g, enum proto_op op, const void *req,
            struct proto_rep *rep)
{
    int rc;

    pthread_mutex_lock(&g->mu);
    rc = call_locked(g, op, req, rep);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

static struct proto_str
pstr(const char *s)
{
    struct proto_str p = { s ? s : "", s ? (uint32_t)strlen(s) : 0 };
    return p;
}

/*
 * Every public call below: one request, results copied out while the
 * handle's lock is held (the reply's strings live in the handle).
 */
#define CALL(g, op, req, rep, copy_out)                 \
    do {                                                \
        int rc_;                                        \
        pthread_mutex_lock(&(g)->mu);                   \
        rc_ = call_locked((g), (op), (req), (rep));     \
        if (rc_ == 0) {                                 \
            copy_out;                                   \
        }                                               \
        pthread_mutex_unlock(&(g)->mu);                 \
        return rc_;                                     \
    } while (0)

int
llmguard_acquire(llmguard_t *g, const char *provider, uint32_t tokens,
                 double timeout_s, double *waited_ms)
{
    struct proto_acquire_req req = { 0 };
    struct proto_rep rep;

    if (provider == NULL || !(timeout_s >= 0))
        return seterr(g, LLMGUARD_EINVAL, "provider and timeout_s >= 0 "
                      "required");
    req.provider = pstr(provider);
    req.tokens = tokens;
    req.timeout_ms = timeout_s * 1e3;
    req.has = PROTO_BIT(PROTO_ACQUIRE_REQ_TOKENS) |
              PROTO_BIT(PROTO_ACQUIRE_REQ_TIMEOUT_MS);
    CALL(g, PROTO_OP_ACQUIRE, &req, &rep,
         if (waited_ms) *waited_ms = rep.u.acquire.waited_ms);
}

int
llmguard_release(llmguard_t *g, const char *provider, uint32_t tokens)
{
    struct proto_release_req req = { 0 };
    struct proto_rep rep;

    if (provider == NULL)
        return seterr(g, LLMGUARD_EINVAL, "provider required");
    req.provider = pstr(provider);
    req.tokens = tokens;
    req.has = PROTO_BIT(PROTO_RELEASE_REQ_TOKENS);
    CALL(g, PROTO_OP_RELEASE, &req, &rep, (void)0);
}

int
llmguard_limiter_status(llmguard_t *g, const char *provider,
                        struct llmguard_limiter_status *st)
{
    struct proto_limiter_status_req req = { 0 };
    struct proto_rep rep;
    const struct proto_limiter_status_rep *r = &rep.u.limiter_status;

    if (provider == NULL || st == NULL)
        return seterr(g, LLMGUARD_EINVAL, "provider and st required");
    req.provider = pstr(provider);
    CALL(g, PROTO_OP_LIMITER_STATUS, &req, &rep, {
        st->available_tokens = r->available_tokens;
        st->rate_per_sec = r->rate_per_sec;
        st->max_tokens = r->max_tokens;
        st->enabled = r->enabled;
        st->waiters = r->waiters;
        st->tokens_per_min = r->tokens_per_min;
    });
}

/*
 * Set the optional workflow_id and tenant_id of request r, whose field list
 * is PROTO_<MSG>_FIELDS, from wf and tn (either may be NULL).
 */
#define SET_SUBJECTS(r, MSG, wf, tn)                                    \
    do {                                                                \
        if ((wf) != NULL) {                                             \
            (r)->workflow_id = pstr(wf);                                \
            PROTO_SET((r), PROTO_##MSG##_WORKFLOW_ID);                  \
        }                                                               \
        if ((tn) != NULL) {                                             \
            (r)->tenant_id = pstr(tn);                                  \
            PROTO_SET((r), PROTO_##MSG##_TENANT_ID);                    \
        }                                                               \
    } while (0)

static void
copy_str(char *dst, size_t len, struct proto_str s)
{
    size_t n = s.len < len - 1 ? s.len : len - 1;

    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

int
llmguard_quota_check_and_reserve(llmguard_t *g, const char *workflow_id,
                                 const char *tenant_id, uint64_t tokens,
                                 struct llmguard_quota_decision *d)
{
    struct proto_quota_reserve_req req = { 0 };
    struct proto_rep rep;
    const struct proto_quota_reserve_rep *r = &rep.u.quota_reserve;
    int rc;

    if (d == NULL || (workflow_id == NULL && tenant_id == NULL))
        return seterr(g, LLMGUARD_EINVAL, "a workflow or tenant id, and d, "
                      "are required");
    memset(d, 0, sizeof(*d));
    SET_SUBJECTS(&req, QUOTA_RESERVE_REQ, workflow_id, tenant_id);
    req.tokens = tokens;
    pthread_mutex_lock(&g->mu);
    rc = call_locked(g, PROTO_OP_QUOTA_RESERVE, &req, &rep);
    if (rc == 0) {
        d->allowed = r->allowed;
        d->over_quota = r->over_quota;
        copy_str(d->subject, sizeof(d->subject), r->subject);
        d->tokens_used = r->tokens_used;
        d->tokens_limit = r->tokens_limit;
        d->tokens_remaining = r->tokens_remaining;
        d->has_reset_at = PROTO_HAS(r, PROTO_QUOTA_RESERVE_REP_RESET_AT);
        d->reset_at = r->reset_at;
        d->reservation = r->reservation;
    } else if (rc == LLMGUARD_EQUOTA) {
        const struct proto_err *err = &rep.err;
        d->over_quota = 1;
        copy_str(d->subject, sizeof(d->subject), err->subject);
        d->tokens_used = err->tokens_used;
        d->tokens_limit = err->tokens_limit;
        d->tokens_remaining = err->tokens_used < err->tokens_limit ?
                              err->tokens_limit - err->tokens_used : 0;
        d->has_reset_at = PROTO_HAS(err, PROTO_ERR_RESET_AT);
        d->reset_at = err->reset_at;
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

int
llmguard_quota_commit(llmguard_t *g, const char *workflow_id,
                      const char *tenant_id, int64_t reservation,
                      uint64_t estimate, uint64_t actual)
{
    struct proto_quota_commit_req req = { 0 };
    struct proto_rep rep;

    if (workflow_id == NULL && tenant_id == NULL)
        return seterr(g, LLMGUARD_EINVAL, "a workflow or tenant id is "
                      "required");
    SET_SUBJECTS(&req, QUOTA_COMMIT_REQ, workflow_id, tenant_id);
    req.reservation = reservation;
    req.estimate = estimate;
    req.actual = actual;
    CALL(g, PROTO_OP_QUOTA_COMMIT, &req, &rep, (void)0);
}

int
llmguard_quota_status(llmguard_t *g, const char *workflow_id,
                      const char *tenant_id, struct llmguard_quota_status *st)
{
    struct proto_quota_subject_req req = { 0 };
    struct proto_rep rep;
    const struct proto_quota_status_rep *r = &rep.u.quota_status;

    if (st == NULL || (workflow_id == NULL) == (tenant_id == NULL))
        return seterr(g, LLMGUARD_EINVAL, "give a workflow or a tenant id, "
                      "not both");
    SET_SUBJECTS(&req, QUOTA_SUBJECT_REQ, workflow_id, tenant_id);
    CALL(g, PROTO_OP_QUOTA_STATUS, &req, &rep, {
        st->tokens_used = r->tokens_used;
        st->tokens_remaining = r->tokens_remaining;
        st->tokens_limit = r->tokens_limit;
        st->window_start = r->window_start;
        st->window_end = r->window_end;
        st->has_reset_at = PROTO_HAS(r, PROTO_QUOTA_STATUS_REP_RESET_AT);
        st->reset_at = r->reset_at;
    });
}

int
llmguard_select_provider(llmguard_t *g, const char *workflow_id,
                         const char *preferred, char *buf, size_t len)
{
    struct proto_select_provider_req req = { 0 };
    struct proto_rep rep;
    const struct proto_select_provider_rep *r = &rep.u.select_provider;

    if (buf == NULL || len == 0)
        return seterr(g, LLMGUARD_EINVAL, "buf required");
    if (workflow_id != NULL) {
        req.workflow_id = pstr(workflow_id);
        PROTO_SET(&req, PROTO_SELECT_PROVIDER_REQ_WORKFLOW_ID);
    }
    if (preferred != NULL) {
        req.preferred = pstr(preferred);
        PROTO_SET(&req, PROTO_SELECT_PROVIDER_REQ_PREFERRED);
    }
    CALL(g, PROTO_OP_SELECT_PROVIDER, &req, &rep,
         copy_str(buf, len, r->provider));
}

/* Retry-After of the current call, set by the caller's call function. */
static __thread double retry_after_s;

void
llmguard_retry_after(double seconds)
{
    /* A day at the most: the daemon refuses what is not finite. */
    retry_after_s = seconds > 0 ? (seconds < 86400 ? seconds : 86400) : 0;
}

/* The model id of the current attempt, for the caller's call function. */
static __thread const char *attempt_model;

const char *
llmguard_model(void)
{
    return attempt_model;
}

static const char *const outcome_names[] = {
    [LLMGUARD_OUTCOME_OK] = "ok",
    [LLMGUARD_OUTCOME_RATE_LIMITED] = "rate_limited",
    [LLMGUARD_OUTCOME_SERVER_ERROR] = "server_error",
    [LLMGUARD_OUTCOME_TIMEOUT] = "timeout",
    [LLMGUARD_OUTCOME_CLIENT_ERROR] = "client_error",
};

/* Fail-open: the daemon is unreachable; call fn once, unguarded. */
static int
fail_open(llmguard_t *g, const struct llmguard_request *req,
          llmguard_call_fn fn, void *arg, struct llmguard_result *res)
{
    const char *mode = getenv("LLMGUARD_FAIL_MODE");
    char why[ERRMSG_MAX];
    uint64_t used = 0;

    snprintf(why, sizeof(why), "%s", llmguard_last_error(g));
    if (mode != NULL && strcasecmp(mode, "closed") == 0)
        return seterr(g, LLMGUARD_EUNAVAIL, "%s (LLMGUARD_FAIL_MODE=closed)",
                      why);
    if (mode != NULL && mode[0] != '\0' && strcasecmp(mode, "open") != 0)
        return seterr(g, LLMGUARD_EINVAL, "LLMGUARD_FAIL_MODE=%s: expected "
                      "open or closed", mode);
    if (req->preferred_provider == NULL)
        return seterr(g, LLMGUARD_EUNAVAIL, "%s; fail-open needs a "
                      "preferred_provider", why);
    snprintf(res->provider, sizeof(res->provider), "%s",
             req->preferred_provider);
    res->guarded = 0;
    res->quota_allowed = 1;
    if (req->model != NULL)
        snprintf(res->model, sizeof(res->model), "%s", req->model);
    attempt_model = req->model;
    res->success = fn(req->preferred_provider, arg, &used) ==
                   LLMGUARD_OUTCOME_OK;
    attempt_model = NULL;
    if (res->success) {
        clear_error(g);
        return 0;
    }
    return seterr(g, LLMGUARD_ECALL, "%s failed (unguarded: %s)",
                  req->preferred_provider, why);
}

/* A call id the caller did not give: unique enough within the daemon. */
static void
make_call_id(char *buf, size_t len)
{
    static unsigned long counter;

    snprintf(buf, len, "%d-%lu-%lx", (int)getpid(),
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED),
             (unsigned long)mono_ms());
}

/* A refused argument: msg says why; returns LLMGUARD_EINVAL. */
static int
bad(char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
bad(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return LLMGUARD_EINVAL;
}

int
client_permit_prepare(const struct llmguard_request *req,
                      const char *const *exclude, unsigned n_exclude,
                      struct proto_str *tried, char *call_id,
                      size_t call_id_len, struct proto_permit_req *pr,
                      char *msg, size_t msg_len)
{
    memset(pr, 0, sizeof(*pr));
    if (req == NULL || !(req->timeout_s >= 0) || !isfinite(req->timeout_s))
        return bad(msg, msg_len, "req is required, timeout_s >= 0");
    if (req->call_id != NULL && (req->call_id[0] == '\0' ||
                                 strlen(req->call_id) >= call_id_len))
        return bad(msg, msg_len, "call_id must be 1 to %zu bytes",
                   call_id_len - 1);
    if (n_exclude > CLIENT_MAX_EXCLUDE || (n_exclude > 0 && exclude == NULL))
        return bad(msg, msg_len, "exclude: at most %d providers",
                   CLIENT_MAX_EXCLUDE);
    for (unsigned i = 0; i < n_exclude; i++) {
        if (exclude[i] == NULL)
            return bad(msg, msg_len, "exclude[%u] is NULL", i);
        tried[i] = pstr(exclude[i]);
    }
    if (req->call_id != NULL)
        snprintf(call_id, call_id_len, "%s", req->call_id);
    else
        make_call_id(call_id, call_id_len);
    SET_SUBJECTS(pr, PERMIT_REQ, req->workflow_id, req->tenant_id);
    pr->tokens_estimate = req->tokens_estimate;
    /* With a model the daemon keeps the call's tried deployments itself:
     * excluding their providers would also leave their other models. */
    pr->exclude.v = tried;
    pr->exclude.n = req->model != NULL ? 0 : n_exclude;
    pr->timeout_ms = req->timeout_s * 1e3;
    pr->call_id = pstr(call_id);
    pr->has |= PROTO_BIT(PROTO_PERMIT_REQ_TOKENS_ESTIMATE) |
               PROTO_BIT(PROTO_PERMIT_REQ_EXCLUDE) |
               PROTO_BIT(PROTO_PERMIT_REQ_TIMEOUT_MS) |
               PROTO_BIT(PROTO_PERMIT_REQ_CALL_ID);
    if (req->preferred_provider != NULL) {
        pr->preferred = pstr(req->preferred_provider);
        PROTO_SET(pr, PROTO_PERMIT_REQ_PREFERRED);
    }
    if (req->traceparent != NULL) {
        pr->traceparent = pstr(req->traceparent);
        PROTO_SET(pr, PROTO_PERMIT_REQ_TRACEPARENT);
    }
    if (req->model != NULL) {
        pr->model = pstr(req->model);
        PROTO_SET(pr, PROTO_PERMIT_REQ_MODEL);
    }
    return 0;
}

void
client_permit_copy(struct llmguard_permit *p, const struct proto_permit_rep *r)
{
    p->permit_id = r->permit_id;
    copy_str(p->provider, sizeof(p->provider), r->provider);
    p->model[0] = '\0';
    if (PROTO_HAS(r, PROTO_PERMIT_REP_MODEL))
        copy_str(p->model, sizeof(p->model), r->model);
    p->wait_ms = r->wait_ms;
    p->rate_limited = r->rate_limited;
    p->all_degraded = r->all_degraded;
    p->quota_allowed = r->quota_allowed;
    p->has_quota_remaining = PROTO_HAS(r, PROTO_PERMIT_REP_QUOTA_REMAINING);
    p->quota_remaining = r->quota_remaining;
}

int
llmguard_permit(llmguard_t *g, const struct llmguard_request *req,
                const char *const *exclude, unsigned n_exclude,
                struct llmguard_permit *p)
{
    struct proto_str tried[CLIENT_MAX_EXCLUDE];
    struct llmguard_permit out = { .quota_allowed = 1 };
    struct proto_permit_req pr;
    struct proto_rep rep;
    char msg[ERRMSG_MAX];
    int rc;

    /* p is written last: req->call_id and exclude may point into it (the
     * permit of the call's previous attempt). */
    if (p == NULL)
        return seterr(g, LLMGUARD_EINVAL, "p is required");
    rc = client_permit_prepare(req, exclude, n_exclude, tried, out.call_id,
                               sizeof(out.call_id), &pr, msg, sizeof(msg));
    if (rc < 0) {
        memset(p, 0, sizeof(*p));
        return seterr(g, rc, "%s", msg);
    }
    pthread_mutex_lock(&g->mu);
    rc = call_locked(g, PROTO_OP_PERMIT, &pr, &rep);
    if (rc == 0)
        client_permit_copy(&out, &rep.u.permit);
    else if (rc == LLMGUARD_EQUOTA)
        out.quota_allowed = 0;
    pthread_mutex_unlock(&g->mu);
    *p = out;
    return rc;
}

int
client_report_prepare(const struct llmguard_report *r,
                      struct proto_report_req *rr, char *msg, size_t msg_len)
{
    memset(rr, 0, sizeof(*rr));
    if (r == NULL || (unsigned)r->outcome > LLMGUARD_OUTCOME_CLIENT_ERROR)
        return bad(msg, msg_len, "a report with a known outcome is "
                   "required");
    rr->permit_id = r->permit_id;
    rr->outcome = pstr(outcome_names[r->outcome]);
    rr->final = r->final != 0;
    rr->has = PROTO_BIT(PROTO_REPORT_REQ_PERMIT_ID) |
              PROTO_BIT(PROTO_REPORT_REQ_OUTCOME) |
              PROTO_BIT(PROTO_REPORT_REQ_FINAL);
    if (r->latency_ms >= 0 && isfinite(r->latency_ms)) {
        rr->latency_ms = r->latency_ms;
        PROTO_SET(rr, PROTO_REPORT_REQ_LATENCY_MS);
    }
    /* The tokens really used; a failed attempt that does not say used
     * none (a 429 is not charged its estimate), a success that does
     * not say is charged the estimate. */
    if (r->tokens_used > 0 || r->outcome != LLMGUARD_OUTCOME_OK) {
        rr->tokens_used = r->tokens_used;
        PROTO_SET(rr, PROTO_REPORT_REQ_TOKENS_USED);
    }
    /* A day at the most: the daemon refuses what is not finite. */
    if (r->retry_after_s > 0) {
        rr->retry_after_s = r->retry_after_s < 86400 ? r->retry_after_s
                                                     : 86400;
        PROTO_SET(rr, PROTO_REPORT_REQ_RETRY_AFTER_S);
    }
    /* The report's own headers, else those this thread passed on with
     * llmguard_provider_header() since its last report. */
    if (r->nheaders > 0 && r->headers == NULL)
        return bad(msg, msg_len, "nheaders without headers");
    if (r->nheaders > 0) {
        headers_clear();
        for (unsigned i = 0; i < r->nheaders; i++)
            llmguard_provider_header(r->headers[2 * i], r->headers[2 * i + 1]);
    }
    headers_fill(&rr->headers);
    if (rr->headers.n > 0)
        PROTO_SET(rr, PROTO_REPORT_REQ_HEADERS);
    return 0;
}

void
client_report_reply(const struct llmguard_report *r,
                    const struct proto_report_rep *rep,
                    struct llmguard_report_reply *out)
{
    memset(out, 0, sizeof(*out));
    out->try_again = r != NULL && !r->final &&
                     (r->outcome == LLMGUARD_OUTCOME_RATE_LIMITED ||
                      r->outcome == LLMGUARD_OUTCOME_SERVER_ERROR ||
                      r->outcome == LLMGUARD_OUTCOME_TIMEOUT);
    if (rep == NULL)
        return;
    out->degraded = rep->state.len == 8 &&
                    memcmp(rep->state.ptr, "degraded", 8) == 0;
    out->cooldown_remaining_s = rep->cooldown_remaining_s;
}

int
llmguard_report(llmguard_t *g, const struct llmguard_report *r,
                struct llmguard_report_reply *out)
{
    struct llmguard_report_reply ignored;
    struct proto_report_req rr;
    struct proto_rep rep;
    char msg[ERRMSG_MAX];
    int rc;

    if (out == NULL)
        out = &ignored;
    client_report_reply(r, NULL, out);
    if ((rc = client_report_prepare(r, &rr, msg, sizeof(msg))) < 0)
        return seterr(g, rc, "%s", msg);
    pthread_mutex_lock(&g->mu);
    rc = call_locked(g, PROTO_OP_REPORT, &rr, &rep);
    headers_clear();            /* sent: the next report starts afresh */
    if (rc == 0)
        client_report_reply(r, &rep.u.report, out);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* What the permit of attempt n (0: the first) adds to the call's result. */
static void
fold_permit(struct llmguard_result *res, const struct llmguard_permit *p,
            int rc, unsigned n)
{
    if (rc == LLMGUARD_EQUOTA) {
        res->quota_allowed = 0;
        return;
    }
    if (rc < 0)
        return;
    snprintf(res->provider, sizeof(res->provider), "%s", p->provider);
    snprintf(res->model, sizeof(res->model), "%s", p->model);
    res->permit_id = p->permit_id;
    res->rate_limited |= p->rate_limited;
    res->ratelimit_wait_ms += p->wait_ms;
    if (n == 0 || !p->quota_allowed)
        res->quota_allowed = p->quota_allowed;
    res->quota_remaining = p->quota_remaining;
    if (n > 0)
        res->failover_attempts++;
}

/*
 * The caller's call to provider: its outcome (one fn does not know counts
 * as a server error), the tokens it used and how long it took.
 */
static llmguard_outcome
call_provider(llmguard_call_fn fn, void *arg, const char *provider,
              const char *model, uint64_t *used, double *latency_ms)
{
    double t0 = mono_ms();
    llmguard_outcome outcome;

    retry_after_s = 0;
    attempt_model = model[0] != '\0' ? model : NULL;
    headers_clear();
    outcome = fn(provider, arg, used);
    attempt_model = NULL;
    *latency_ms = mono_ms() - t0;
    if ((unsigned)outcome > LLMGUARD_OUTCOME_CLIENT_ERROR)
        outcome = LLMGUARD_OUTCOME_SERVER_ERROR;
    return outcome;
}

/* The checks of llmguard_execute_with_failover() and res made ready. */
static int
call_begin(llmguard_t *g, const struct llmguard_request *req,
           llmguard_call_fn fn, struct llmguard_result *res)
{
    if (req == NULL || fn == NULL || res == NULL || !(req->timeout_s >= 0))
        return seterr(g, LLMGUARD_EINVAL, "req, fn and res are required, "
                      "timeout_s >= 0");
    if (req->call_id != NULL && (req->call_id[0] == '\0' ||
                                 strlen(req->call_id) >= sizeof(res->call_id)))
        return seterr(g, LLMGUARD_EINVAL, "call_id must be 1 to %zu bytes",
                      sizeof(res->call_id) - 1);
    memset(res, 0, sizeof(*res));
    res->guarded = 1;
    if (req->call_id != NULL)
        snprintf(res->call_id, sizeof(res->call_id), "%s", req->call_id);
    else
        make_call_id(res->call_id, sizeof(res->call_id));
    return 0;
}

/*
 * The call loop, made of the attempt's pieces: llmguard_permit(), fn,
 * llmguard_report(), again while the report says to try elsewhere.
 */
int
llmguard_execute_with_failover(llmguard_t *g,
                               const struct llmguard_request *req,
                               llmguard_call_fn fn, void *arg,
                               struct llmguard_result *res)
{
    const char *tried[CLIENT_MAX_EXCLUDE];
    char names[CLIENT_MAX_EXCLUDE][64];
    struct llmguard_request attempt_req;
    unsigned max;
    int rc;
    bool called = false;

    if ((rc = call_begin(g, req, fn, res)) < 0)
        return rc;
    max = req->max_attempts ? req->max_attempts : 3;
    if (max > CLIENT_MAX_EXCLUDE)
        max = CLIENT_MAX_EXCLUDE;
    attempt_req = *req;
    attempt_req.call_id = res->call_id;
    for (unsigned attempt = 0; attempt < max; attempt++) {
        struct llmguard_permit pm;
        struct llmguard_report rp = { 0 };
        struct llmguard_report_reply rr;

        rc = llmguard_permit(g, &attempt_req, tried, attempt, &pm);
        if (rc == LLMGUARD_EUNAVAIL && attempt == 0)
            return fail_open(g, req, fn, arg, res);
        fold_permit(res, &pm, rc, attempt);
        if (rc < 0)
            break;
        rp.outcome = call_provider(fn, arg, res->provider, res->model,
                                   &rp.tokens_used, &rp.latency_ms);
        called = true;
        res->success = rp.outcome == LLMGUARD_OUTCOME_OK;
        res->rate_limited |= rp.outcome == LLMGUARD_OUTCOME_RATE_LIMITED;
        rp.permit_id = pm.permit_id;
        rp.retry_after_s = retry_after_s;
        rp.final = res->success || rp.outcome == LLMGUARD_OUTCOME_CLIENT_ERROR ||
                   attempt + 1 == max;
        llmguard_report(g, &rp, &rr);
        if (!rr.try_again)
            break;
        snprintf(names[attempt], sizeof(names[attempt]), "%s", res->provider);
        tried[attempt] = names[attempt];
    }
    if (res->success)
        return 0;
    if (!called)
        return rc;          /* EQUOTA, ETIMEDOUT, ENOPROVIDER, ... */
    return seterr(g, LLMGUARD_ECALL, "the call to %s failed after %u "
                  "attempt(s)", res->provider, res->failover_attempts + 1);
}

int
llmguard_ping(llmguard_t *g)
{
    struct proto_rep rep;

    CALL(g, PROTO_OP_PING, NULL, &rep, (void)0);
}
