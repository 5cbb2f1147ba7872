/*
 * async.c - libllmguard's non-blocking flavour: permits and reports for a
 * one-thread event loop (libllmguard(3), "Event loops").
 *
 * One connection carries every request of a context, pipelined: they are
 * queued in an output buffer, written at once when the socket takes them
 * (else when it is writable again), and each reply is matched to its
 * request by id (the daemon answers a
 * waiting permit after later requests).  Nothing here blocks: the
 * socket is non-blocking and the caller's loop says when it is ready.
 * A lost connection, a reply that cannot be trusted or a request that
 * ran out of time ends the connection and fails every pending request
 * once; the next submit connects anew.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client_internal.h"
#include "headers_internal.h"

/* A submitted request whose callback has not run yet. */
struct areq {
    TAILQ_ENTRY(areq) entry;
    uint64_t id;
    enum proto_op op;
    double deadline_ms;             /* monotonic; 0: no bound */
    double bound_ms;                /* the bound it was given */
    llmguard_permit_cb permit_cb;
    llmguard_report_cb report_cb;
    void *arg;
    struct llmguard_report report;  /* what try_again is decided from */
    char call_id[129];
};
TAILQ_HEAD(areq_list, areq);

struct llmguard_async {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int fd;                         /* -1 while not connected */
    bool connecting;                /* connect(2) still in progress */
    uint64_t next_id;
    struct proto_reader rd;
    msgpack_sbuffer out;            /* frames not yet written */
    size_t out_off;                 /* of which out_off bytes are */
    msgpack_zone zone;
    struct areq_list pending;       /* in submission order */
    unsigned npending;
    double timeout_ms;              /* beyond a request's wait; 0: none */
    char bad_timeout[160];
    char err[CLIENT_ERRMSG_MAX];
    int depth;                      /* callbacks running */
    bool closing;                   /* llmguard_async_close() was called */
};

static void
set_error(llmguard_async_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_error(llmguard_async_t *a, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->err, sizeof(a->err), fmt, ap);
    va_end(ap);
}

llmguard_async_t *
llmguard_async_open(const char *socket_path)
{
    llmguard_async_t *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    if (client_socket_path(a->path, sizeof(a->path), socket_path) < 0 ||
        !msgpack_zone_init(&a->zone, 2048)) {
        free(a);
        return NULL;
    }
    a->fd = -1;
    a->next_id = 1;
    a->timeout_ms = client_timeout_env(a->bad_timeout,
                                       sizeof(a->bad_timeout));
    proto_reader_init(&a->rd);
    msgpack_sbuffer_init(&a->out);
    TAILQ_INIT(&a->pending);
    return a;
}

int
llmguard_async_set_timeout(llmguard_async_t *a, double timeout_s)
{
    if (client_timeout_check(timeout_s, a->err, sizeof(a->err)) < 0)
        return LLMGUARD_EINVAL;
    a->timeout_ms = timeout_s * 1e3;
    a->bad_timeout[0] = '\0';
    return 0;
}

static void
disconnect(llmguard_async_t *a)
{
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
    a->connecting = false;
    proto_reader_free(&a->rd);
    proto_reader_init(&a->rd);
    a->out.size = 0;
    a->out_off = 0;
}

/* Run q's callback with status (and what the daemon said, on success),
 * then free q, which is off the pending list already. */
static void
complete(llmguard_async_t *a, struct areq *q, int status,
         const struct proto_rep *rep)
{
    a->depth++;
    if (status == 0)
        a->err[0] = '\0';
    if (q->op == PROTO_OP_PERMIT) {
        struct llmguard_permit p = { .quota_allowed = 1 };

        memcpy(p.call_id, q->call_id, sizeof(p.call_id));
        if (status == 0)
            client_permit_copy(&p, &rep->u.permit);
        else if (status == LLMGUARD_EQUOTA)
            p.quota_allowed = 0;
        q->permit_cb(a, status, &p, q->arg);
    } else if (q->report_cb != NULL) {
        struct llmguard_report_reply r;

        client_report_reply(&q->report, status == 0 ? &rep->u.report : NULL,
                            &r);
        q->report_cb(a, status, &r, q->arg);
    }
    a->depth--;
    free(q);
}

/*
 * The connection is lost or no longer trusted: close it and fail every
 * request pending on it, once each, with status and the message already
 * in a->err.  Requests that their callbacks submit go to a new connection.
 */
static void
fail_all(llmguard_async_t *a, int status)
{
    struct areq_list gone = TAILQ_HEAD_INITIALIZER(gone);
    struct areq *q;
    char msg[sizeof(a->err)];

    disconnect(a);
    TAILQ_CONCAT(&gone, &a->pending, entry);
    a->npending = 0;
    memcpy(msg, a->err, sizeof(msg));
    while ((q = TAILQ_FIRST(&gone)) != NULL) {
        TAILQ_REMOVE(&gone, q, entry);
        memcpy(a->err, msg, sizeof(a->err));
        complete(a, q, status, NULL);
    }
}

static void
destroy(llmguard_async_t *a)
{
    set_error(a, "the llmguard context was closed");
    fail_all(a, LLMGUARD_EUNAVAIL);
    proto_reader_free(&a->rd);
    msgpack_sbuffer_destroy(&a->out);
    msgpack_zone_destroy(&a->zone);
    free(a);
}

void
llmguard_async_close(llmguard_async_t *a)
{
    if (a == NULL || a->closing)
        return;
    a->closing = true;
    if (a->depth == 0)
        destroy(a);
}

/* A non-blocking connection to the daemon, unless there is one. */
static int
ensure_connected(llmguard_async_t *a)
{
    struct sockaddr_un sun;
    int fd, err;

    if (a->fd >= 0)
        return 0;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, a->path, strlen(a->path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        set_error(a, "socket: %s", strerror(errno));
        return LLMGUARD_EUNAVAIL;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 ||
        errno == EINPROGRESS) {
        a->fd = fd;
        a->connecting = errno == EINPROGRESS;
        return 0;
    }
    err = errno;
    close(fd);
    if (err == EACCES || err == EPERM) {
        set_error(a, "connect %s: %s", a->path, strerror(err));
        return LLMGUARD_EPERM;
    }
    if (err == EAGAIN)          /* its backlog is full: waiting would block */
        set_error(a, "llmguardd on %s accepts no connection now", a->path);
    else
        set_error(a, "no llmguardd on %s: %s", a->path, strerror(err));
    return LLMGUARD_EUNAVAIL;
}

static int send_some(llmguard_async_t *a);

/* Queue q, whose request req of op may wait wait_ms in the daemon. */
static int
submit(llmguard_async_t *a, struct areq *q, enum proto_op op,
       const void *req, double wait_ms)
{
    int rc;

    if (a->closing || a->bad_timeout[0] != '\0') {
        set_error(a, "%s", a->closing ? "the llmguard context is closing"
                                      : a->bad_timeout);
        rc = a->closing ? LLMGUARD_EUNAVAIL : LLMGUARD_EINVAL;
    } else if ((rc = ensure_connected(a)) == 0) {
        q->id = a->next_id++;
        q->op = op;
        if (proto_encode_request(&a->out, op, q->id, req) < 0) {
            set_error(a, "request does not fit in a frame");
            rc = LLMGUARD_EINVAL;
        }
    }
    if (rc < 0) {
        free(q);
        return rc;
    }
    q->bound_ms = a->timeout_ms > 0 ? a->timeout_ms + wait_ms : 0;
    q->deadline_ms = q->bound_ms > 0 ? client_mono_ms() + q->bound_ms : 0;
    TAILQ_INSERT_TAIL(&a->pending, q, entry);
    a->npending++;
    a->err[0] = '\0';
    /* Outside the callbacks, send at once: no turn of the caller's loop
     * just to learn that the socket is writable.  A failure waits for
     * llmguard_async_handle(), which tells the callbacks (inside it,
     * what they submit goes out in one write when they are done). */
    if (a->depth == 0)
        (void)send_some(a);
    return 0;
}

int
llmguard_async_permit(llmguard_async_t *a, const struct llmguard_request *req,
                      const char *const *exclude, unsigned n_exclude,
                      llmguard_permit_cb cb, void *arg)
{
    struct proto_str tried[CLIENT_MAX_EXCLUDE];
    struct proto_permit_req pr;
    struct areq *q;
    int rc;

    if (cb == NULL) {
        set_error(a, "a permit callback is required");
        return LLMGUARD_EINVAL;
    }
    if ((q = calloc(1, sizeof(*q))) == NULL) {
        set_error(a, "out of memory");
        return LLMGUARD_ENOMEM;
    }
    rc = client_permit_prepare(req, exclude, n_exclude, tried, q->call_id,
                               sizeof(q->call_id), &pr, a->err,
                               sizeof(a->err));
    if (rc < 0) {
        free(q);
        return rc;
    }
    q->permit_cb = cb;
    q->arg = arg;
    return submit(a, q, PROTO_OP_PERMIT, &pr, pr.timeout_ms);
}

int
llmguard_async_report(llmguard_async_t *a, const struct llmguard_report *r,
                      llmguard_report_cb cb, void *arg)
{
    struct proto_report_req rr;
    struct areq *q;
    int rc;

    if ((rc = client_report_prepare(r, &rr, a->err, sizeof(a->err))) < 0)
        return rc;
    if ((q = calloc(1, sizeof(*q))) == NULL) {
        set_error(a, "out of memory");
        return LLMGUARD_ENOMEM;
    }
    q->report = *r;
    q->report_cb = cb;
    q->arg = arg;
    rc = submit(a, q, PROTO_OP_REPORT, &rr, 0);
    headers_clear();            /* encoded: the next report starts afresh */
    return rc;
}

int
llmguard_async_fd(const llmguard_async_t *a)
{
    return a->fd;
}

int
llmguard_async_events(const llmguard_async_t *a)
{
    if (a->fd < 0)
        return 0;
    if (a->connecting)
        return LLMGUARD_WRITABLE;
    /* Always readable: a daemon that goes away is seen at once. */
    return LLMGUARD_READABLE |
           (a->out_off < a->out.size ? LLMGUARD_WRITABLE : 0);
}

int
llmguard_async_timeout_ms(const llmguard_async_t *a)
{
    double first = INFINITY, now = client_mono_ms();
    const struct areq *q;

    TAILQ_FOREACH(q, &a->pending, entry)
        if (q->deadline_ms > 0 && q->deadline_ms < first)
            first = q->deadline_ms;
    if (first == INFINITY)
        return -1;
    if (first <= now)
        return 0;
    return first - now > 86400e3 ? 86400000 : (int)ceil(first - now);
}

unsigned
llmguard_async_pending(const llmguard_async_t *a)
{
    return a->npending;
}

const char *
llmguard_async_last_error(const llmguard_async_t *a)
{
    return a->err;
}

/* The connect(2) in progress ended: 0 when it succeeded. */
static int
finish_connect(llmguard_async_t *a)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        set_error(a, "no llmguardd on %s: %s", a->path, strerror(err));
        fail_all(a, LLMGUARD_EUNAVAIL);
        return -1;
    }
    a->connecting = false;
    return 0;
}

/* Write what the socket takes now: 0, or -1 with errno on a failure,
 * which is left to flush_out() to tell. */
static int
send_some(llmguard_async_t *a)
{
    while (a->fd >= 0 && !a->connecting && a->out_off < a->out.size) {
        ssize_t n = send(a->fd, a->out.data + a->out_off,
                         a->out.size - a->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0)
            return -1;
        a->out_off += (size_t)n;
    }
    if (a->out_off == a->out.size) {
        a->out.size = 0;
        a->out_off = 0;
    }
    return 0;
}

static void
flush_out(llmguard_async_t *a)
{
    if (send_some(a) < 0) {
        set_error(a, "send to llmguardd: %s", strerror(errno));
        fail_all(a, LLMGUARD_EUNAVAIL);
    }
}

static struct areq *
find_pending(llmguard_async_t *a, uint64_t id)
{
    struct areq *q;

    TAILQ_FOREACH(q, &a->pending, entry)
        if (q->id == id)
            return q;
    return NULL;
}

/*
 * One reply frame: to the request of its id.  A reply of id 0, or of no
 * id, is the daemon's word on the stream itself (it closes the
 * connection after it); a reply that does not decode leaves a stream no
 * longer to trust: both fail everything pending.  A reply to no pending
 * request is skipped.
 */
static void
dispatch(llmguard_async_t *a, const unsigned char *frame, uint32_t len)
{
    struct proto_error e;
    struct proto_rep rep;
    struct areq *q = NULL;
    uint64_t id = 0;
    enum proto_op op;

    if (proto_reply_id(frame, len, &id) == 0 && id != 0 &&
        (q = find_pending(a, id)) == NULL)
        return;
    op = q != NULL ? q->op : PROTO_OP_PING;
    msgpack_zone_clear(&a->zone);
    if (proto_decode_reply(frame, len, op, &a->zone, &rep, &e) < 0) {
        set_error(a, "malformed reply to %s: %s", proto_op_name(op), e.msg);
        fail_all(a, LLMGUARD_EPROTO);
        return;
    }
    if (!rep.ok)
        set_error(a, "%.*s: %.*s", (int)rep.err.code.len, rep.err.code.ptr,
                  (int)rep.err.msg.len, rep.err.msg.ptr);
    if (q == NULL) {
        if (rep.ok)
            set_error(a, "a reply from llmguardd without an id");
        fail_all(a, rep.ok ? LLMGUARD_EPROTO : client_wire_code(&rep.err));
        return;
    }
    TAILQ_REMOVE(&a->pending, q, entry);
    a->npending--;
    complete(a, q, rep.ok ? 0 : client_wire_code(&rep.err), &rep);
}

/* Read what has come and answer every whole reply in it. */
static void
read_in(llmguard_async_t *a)
{
    const unsigned char *frame;
    struct proto_error e;
    uint32_t len;

    while (a->fd >= 0 && !a->closing) {
        int r = proto_reader_next(&a->rd, &frame, &len, &e);
        if (r < 0) {
            set_error(a, "bad frame from llmguardd: %s", e.msg);
            fail_all(a, LLMGUARD_EPROTO);
            return;
        }
        if (r == 1) {
            dispatch(a, frame, len);
            continue;
        }
        size_t avail;
        unsigned char *p = proto_reader_space(&a->rd, 4096, &avail);
        if (p == NULL) {
            set_error(a, "out of memory");
            fail_all(a, LLMGUARD_ENOMEM);
            return;
        }
        ssize_t n = recv(a->fd, p, avail, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            set_error(a, "llmguardd closed the connection%s%s",
                      n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
            fail_all(a, LLMGUARD_EUNAVAIL);
            return;
        }
        proto_reader_commit(&a->rd, (size_t)n);
    }
}

/* A request that ran out of time: the daemon is stopped or wedged, and a
 * late reply must not be taken for another, so the connection goes. */
static void
expire(llmguard_async_t *a)
{
    double now = client_mono_ms();
    struct areq *q;

    TAILQ_FOREACH(q, &a->pending, entry) {
        if (q->deadline_ms > 0 && q->deadline_ms <= now) {
            set_error(a, "llmguardd on %s did not answer %s within %.0f ms "
                      "(LLMGUARD_CLIENT_TIMEOUT_MS %.0f ms beyond the "
                      "request's own wait)", a->path, proto_op_name(q->op),
                      q->bound_ms, a->timeout_ms);
            fail_all(a, LLMGUARD_EUNAVAIL);
            return;
        }
    }
}

void
llmguard_async_handle(llmguard_async_t *a, int events)
{
    if (a->closing)
        return;
    a->depth++;
    if (a->fd >= 0 && a->connecting && (events & LLMGUARD_WRITABLE))
        finish_connect(a);
    if (a->fd >= 0 && !a->connecting && (events & LLMGUARD_READABLE))
        read_in(a);
    if (!a->closing)
        flush_out(a);
    if (!a->closing)
        expire(a);
    a->depth--;
    if (a->closing && a->depth == 0)
        destroy(a);
}
