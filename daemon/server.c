/* server.c - the control socket: listen, accept, frame, dispatch, close. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/listener.h>

#include "log.h"
#include "server.h"

#define EXIT_CONFIG 78      /* EX_CONFIG, as config.h's CONFIG_EXIT */
#define PATH_MAX_BYTES 4096

/* A peer that stops reading may queue this much before we stop reading it;
 * one that then reads nothing for WRITE_TIMEOUT_S is dropped. */
#define OUTPUT_HIGH_BYTES (1024 * 1024)
#define OUTPUT_LOW_BYTES (256 * 1024)
#define WRITE_TIMEOUT_S 10

struct server {
    struct event_base *base;
    struct evconnlistener *listener;
    bool accept_paused;         /* out of descriptors: see accept_error_cb */
    server_dispatch_fn dispatch;
    void *dispatch_arg;
    server_close_fn close[SERVER_MAX_SLOTS];
    int nslots;
    char socket_path[PATH_MAX_BYTES];
    bool socket_bound;          /* ours to unlink at exit */
    TAILQ_HEAD(, conn) conns;
    size_t nconns;
};

struct conn {
    TAILQ_ENTRY(conn) entry;
    struct server *srv;
    int fd;
    struct event *ev_read;      /* persistent, off while throttled */
    struct event *ev_write;     /* only while output is pending */
    struct proto_reader in;     /* bytes read, not yet whole frames */
    struct evbuffer *pending;   /* replies the socket did not take yet */
    uid_t uid;                  /* SO_PEERCRED */
    pid_t pid;
    msgpack_zone zone;          /* decoded requests; cleared per request */
    msgpack_sbuffer out;        /* replies encoded during one read */
    bool closing;               /* flush what is queued, then close */
    bool throttled;             /* reading paused: the peer does not read */
    void *slot[SERVER_MAX_SLOTS];   /* the subsystems' state for it */
};

/* ---- connections ------------------------------------------------------- */

static void resume_accept(evutil_socket_t fd, short what, void *arg);

/*
 * Connections do their own I/O on plain events rather than bufferevents:
 * one read(2) per readiness straight into the frame reader, replies
 * written at once with send(2), and write readiness asked for only when
 * the socket is full.  A request then costs one epoll_wait, one read and
 * one write (a bufferevent added an ioctl and two epoll_ctl per reply).
 */
static void
conn_free(struct conn *c)
{
    struct server *srv = c->srv;

    c->closing = true;
    for (int i = 0; i < srv->nslots; i++)
        if (c->slot[i] != NULL)
            srv->close[i](c->slot[i]);
    TAILQ_REMOVE(&srv->conns, c, entry);
    srv->nconns--;
    event_free(c->ev_read);
    event_free(c->ev_write);
    evbuffer_free(c->pending);
    close(c->fd);
    proto_reader_free(&c->in);
    msgpack_zone_destroy(&c->zone);
    msgpack_sbuffer_destroy(&c->out);
    log_debug("connection from uid %u pid %d closed", (unsigned)c->uid,
              (int)c->pid);
    free(c);
    resume_accept(-1, 0, srv);      /* a descriptor is free again */
}

void
conn_reply(struct conn *c, enum proto_op op, uint64_t id, const void *msg)
{
    if (proto_encode_reply(&c->out, op, id, msg) < 0) {
        struct proto_error e;
        proto_error_set(&e, PROTO_E_INTERNAL, "reply to %s does not fit "
                        "in a frame", proto_op_name(op));
        conn_error(c, id, &e);
    }
}

void
conn_error(struct conn *c, uint64_t id, const struct proto_error *e)
{
    if (proto_encode_error(&c->out, id, e) < 0)
        log_error("%s: cannot encode an error reply", __func__);
}

/* Wait for write readiness, with the drop timeout running. */
static void
want_write(struct conn *c)
{
    struct timeval tv = { WRITE_TIMEOUT_S, 0 };

    if (!event_pending(c->ev_write, EV_WRITE, NULL))
        event_add(c->ev_write, &tv);
}

void
conn_send_raw(struct conn *c, const void *data, size_t len)
{
    if (msgpack_sbuffer_write(&c->out, data, len) < 0)
        log_error("%s: out of memory", __func__);
}

/* Write the replies encoded so far: at once if the socket takes them, the
 * rest when it can. */
void
conn_flush(struct conn *c)
{
    size_t off = 0;

    if (c->out.size == 0)
        return;
    if (evbuffer_get_length(c->pending) == 0) {
        ssize_t n = send(c->fd, c->out.data, c->out.size,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            off = (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                 errno != EINTR)
            log_debug("send to uid %u: %s", (unsigned)c->uid,
                      strerror(errno));  /* the read side will see it */
    }
    if (off < c->out.size) {
        if (evbuffer_add(c->pending, c->out.data + off, c->out.size - off) < 0)
            log_error("%s: out of memory queueing %zu bytes", __func__,
                      c->out.size - off);
        want_write(c);
    }
    c->out.size = 0;
    if (!c->throttled && evbuffer_get_length(c->pending) > OUTPUT_HIGH_BYTES) {
        /* Backpressure: the peer does not read its replies. */
        c->throttled = true;
        event_del(c->ev_read);
    }
}

/* Send e, then close once it is written (now, when the socket took it:
 * c is then freed). */
static void
conn_fail(struct conn *c, uint64_t id, const struct proto_error *e)
{
    log_warn("closing connection of uid %u pid %d: %s", (unsigned)c->uid,
             (int)c->pid, e->msg);
    conn_error(c, id, e);
    conn_flush(c);
    c->closing = true;
    event_del(c->ev_read);
    if (evbuffer_get_length(c->pending) == 0)
        conn_free(c);
}

/* Decode and run every whole frame held.  Returns -1 when c was freed. */
static int
conn_process(struct conn *c)
{
    const unsigned char *frame;
    uint32_t len;
    struct proto_error e;
    struct proto_req req;
    int r;

    while (!c->closing && !c->throttled &&
           (r = proto_reader_next(&c->in, &frame, &len, &e)) != 0) {
        if (r < 0) {
            conn_fail(c, 0, &e);        /* may free c */
            return -1;
        }
        switch (proto_decode_request(frame, len, &c->zone, &req, &e)) {
        case PROTO_DECODE_OK:
            c->srv->dispatch(c, &req, c->srv->dispatch_arg);
            break;
        case PROTO_DECODE_BAD:
            log_debug("bad request from uid %u: %s", (unsigned)c->uid, e.msg);
            conn_error(c, req.id, &e);
            break;
        case PROTO_DECODE_FATAL:
            msgpack_zone_clear(&c->zone);
            conn_fail(c, 0, &e);        /* may free c */
            return -1;
        }
        msgpack_zone_clear(&c->zone);
    }
    conn_flush(c);
    return 0;
}

static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    unsigned char *p;
    size_t avail;
    ssize_t n;

    if ((p = proto_reader_space(&c->in, 16384, &avail)) == NULL) {
        log_error("%s: out of memory: dropping uid %u", __func__,
                  (unsigned)c->uid);
        conn_free(c);
        return;
    }
    n = read(fd, p, avail);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        if (n < 0)
            log_debug("read from uid %u: %s", (unsigned)c->uid,
                      strerror(errno));
        conn_free(c);
        return;
    }
    proto_reader_commit(&c->in, (size_t)n);
    conn_process(c);
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (what & EV_TIMEOUT) {
        log_warn("dropping the connection of uid %u pid %d: it read none of "
                 "its %zu bytes of replies for %d s", (unsigned)c->uid,
                 (int)c->pid, evbuffer_get_length(c->pending),
                 WRITE_TIMEOUT_S);
        conn_free(c);
        return;
    }
    if (evbuffer_write(c->pending, fd) < 0 && errno != EAGAIN &&
        errno != EWOULDBLOCK && errno != EINTR) {
        conn_free(c);
        return;
    }
    if (evbuffer_get_length(c->pending) > 0) {
        event_del(c->ev_write);     /* progress: restart the timeout */
        want_write(c);
        return;
    }
    event_del(c->ev_write);
    if (c->closing) {
        conn_free(c);
        return;
    }
    if (c->throttled) {
        c->throttled = false;
        event_add(c->ev_read, NULL);
        conn_process(c);            /* frames may be waiting already */
    }
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd,
          struct sockaddr *sa, int salen, void *arg)
{
    struct server *srv = arg;
    struct conn *c = calloc(1, sizeof(*c));
    struct ucred cred;
    socklen_t credlen = sizeof(cred);

    if (c == NULL || !msgpack_zone_init(&c->zone, 2048)) {
        log_error("%s: out of memory", __func__);
        free(c);
        close(fd);
        return;
    }
    msgpack_sbuffer_init(&c->out);
    proto_reader_init(&c->in);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) < 0) {
        log_error("%s: SO_PEERCRED: %s", __func__, strerror(errno));
        cred.uid = (uid_t)-1;   /* unknown: never admin */
        cred.pid = 0;
    }
    c->uid = cred.uid;
    c->pid = cred.pid;
    c->srv = srv;
    c->fd = fd;
    evutil_make_socket_nonblocking(fd);
    c->ev_read = event_new(srv->base, fd, EV_READ | EV_PERSIST, conn_read_cb,
                           c);
    c->ev_write = event_new(srv->base, fd, EV_WRITE | EV_PERSIST,
                            conn_write_cb, c);
    c->pending = evbuffer_new();
    if (c->ev_read == NULL || c->ev_write == NULL || c->pending == NULL ||
        event_add(c->ev_read, NULL) < 0) {
        log_error("%s: cannot set up the connection", __func__);
        if (c->ev_read)
            event_free(c->ev_read);
        if (c->ev_write)
            event_free(c->ev_write);
        if (c->pending)
            evbuffer_free(c->pending);
        msgpack_zone_destroy(&c->zone);
        msgpack_sbuffer_destroy(&c->out);
        free(c);
        close(fd);
        return;
    }
    TAILQ_INSERT_TAIL(&srv->conns, c, entry);
    srv->nconns++;
    log_debug("connection from uid %u pid %d", (unsigned)c->uid, (int)c->pid);
}

static void
resume_accept(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    if (srv->listener != NULL && srv->accept_paused) {
        srv->accept_paused = false;
        evconnlistener_enable(srv->listener);
    }
}

/*
 * Out of file descriptors: stop accepting (a level-triggered listener
 * would spin) until a connection closes or a second has passed.
 */
static void
accept_error_cb(struct evconnlistener *lis, void *arg)
{
    struct server *srv = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = { 1, 0 };

    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        log_error("accept: %s", strerror(err));
        return;
    }
    if (!srv->accept_paused)
        log_warn("accept: %s with %zu connections: pausing new connections",
                 strerror(err), srv->nconns);
    srv->accept_paused = true;
    evconnlistener_disable(lis);
    event_base_once(srv->base, -1, EV_TIMEOUT, resume_accept, srv, &tv);
}

/* ---- socket set-up (llmguardd(8), "The socket") ----------------------- */

/*
 * The per-user default directory: create it 0700, and refuse one that is
 * not a directory, that someone else owns, or that others can write.
 */
static int
check_default_dir(const char *sockpath, uid_t uid)
{
    char buf[PATH_MAX_BYTES], *dir;
    struct stat sb;

    snprintf(buf, sizeof(buf), "%s", sockpath);
    dir = dirname(buf);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        log_error("cannot create socket directory %s: %s", dir,
                  strerror(errno));
        return -1;
    }
    if (lstat(dir, &sb) < 0) {
        log_error("socket directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        log_error("socket directory %s is not a directory", dir);
        return -1;
    }
    if (sb.st_uid != uid) {
        log_error("socket directory %s is owned by uid %u, not by us (uid "
                  "%u): refusing to use it", dir, (unsigned)sb.st_uid,
                  (unsigned)uid);
        return -1;
    }
    if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
        log_error("socket directory %s is writable by others (mode %04o): "
                  "refusing to use it", dir, (unsigned)(sb.st_mode & 07777));
        return -1;
    }
    return 0;
}

/*
 * A socket file already at path: 1 when a daemon answers on it, 0 when it
 * was stale and has been removed (or there was none), -1 on error.
 */
static int
probe_existing(const char *path, const struct sockaddr_un *sun)
{
    struct stat sb;
    int fd, rc;

    if (lstat(path, &sb) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(sb.st_mode)) {
        log_error("%s exists and is not a socket: refusing to replace it",
                  path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
    close(fd);
    if (rc == 0)
        return 1;
    if (errno != ECONNREFUSED) {
        log_error("probing %s: %s", path, strerror(errno));
        return -1;
    }
    log_info("removing stale socket %s (nobody answers on it)", path);
    if (unlink(path) < 0 && errno != ENOENT) {
        log_error("cannot remove stale socket %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The socket we bound, removed by an exit before server_shutdown. */
static char bound_path[PATH_MAX_BYTES];

static void
unlink_at_exit(void)
{
    if (bound_path[0] != '\0')
        unlink(bound_path);
}

/* Socket address for path; -1 when it is too long. */
static int
socket_address(const char *path, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path))
        return -1;
    memcpy(sun->sun_path, path, strlen(path) + 1);
    return 0;
}

/* Bind path with the socket's mode and group; the socket, or -1 with the
 * exit status in *status. */
static int
bind_socket(const struct server_socket *sock, const struct sockaddr_un *sun,
            int *status)
{
    mode_t old_umask;
    int fd, err;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("socket: %s", strerror(errno));
        *status = 1;
        return -1;
    }
    old_umask = umask(0177);
    if (bind(fd, (const struct sockaddr *)sun, sizeof(*sun)) < 0) {
        err = errno;
        umask(old_umask);
        close(fd);
        if (err == EADDRINUSE) {
            log_error("another llmguardd is already running on %s",
                      sock->path);
            *status = 1;
        } else {
            log_error("cannot bind %s: %s", sock->path, strerror(err));
            *status = EXIT_CONFIG;
        }
        return -1;
    }
    umask(old_umask);
    if (chmod(sock->path, (mode_t)sock->mode) < 0)
        log_error("chmod %s: %s", sock->path, strerror(errno));
    if (sock->group[0] != '\0') {
        struct group *gr = getgrnam(sock->group);
        gid_t gid = gr ? gr->gr_gid : (gid_t)strtoul(sock->group, NULL, 10);
        if (chown(sock->path, (uid_t)-1, gid) < 0)
            log_error("chown %s to group %s: %s", sock->path, sock->group,
                      strerror(errno));
    }
    return fd;
}

/* Accept on the listening socket fd (ours to close). */
static int
start_accepting(struct server *srv, int fd)
{
    srv->listener = evconnlistener_new(srv->base, accept_cb, srv,
                                       LEV_OPT_CLOSE_ON_FREE |
                                       LEV_OPT_CLOSE_ON_EXEC, 128, fd);
    if (srv->listener == NULL) {
        log_error("cannot listen on %s", srv->socket_path);
        close(fd);
        return 1;
    }
    evconnlistener_set_error_cb(srv->listener, accept_error_cb);
    return 0;
}

int
server_listen_fd(struct server *srv, int fd)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);

    memset(&sun, 0, sizeof(sun));
    if (getsockname(fd, (struct sockaddr *)&sun, &len) == 0 &&
        sun.sun_family == AF_UNIX && sun.sun_path[0] != '\0')
        snprintf(srv->socket_path, sizeof(srv->socket_path), "%s",
                 sun.sun_path);
    else
        snprintf(srv->socket_path, sizeof(srv->socket_path), "descriptor %d",
                 fd);
    evutil_make_socket_nonblocking(fd);
    evutil_make_socket_closeonexec(fd);
    if (start_accepting(srv, fd) != 0)
        return 1;
    log_info("listening on %s (passed by the service manager)",
             srv->socket_path);
    return 0;
}

int
server_listen(struct server *srv, const struct server_socket *sock)
{
    struct sockaddr_un sun;
    int fd, status = 0;

    snprintf(srv->socket_path, sizeof(srv->socket_path), "%s", sock->path);
    if (socket_address(srv->socket_path, &sun) < 0) {
        log_error("socket path %s is too long", srv->socket_path);
        return EXIT_CONFIG;
    }
    if (sock->is_default && check_default_dir(srv->socket_path,
                                              geteuid()) < 0)
        return EXIT_CONFIG;
    switch (probe_existing(srv->socket_path, &sun)) {
    case 1:
        log_error("another llmguardd is already running on %s",
                  srv->socket_path);
        return 1;
    case -1:
        return EXIT_CONFIG;
    }
    if ((fd = bind_socket(sock, &sun, &status)) < 0)
        return status;
    srv->socket_bound = true;
    memcpy(bound_path, srv->socket_path, sizeof(bound_path));
    atexit(unlink_at_exit);
    if (start_accepting(srv, fd) != 0)
        return 1;
    log_info("listening on %s", srv->socket_path);
    return 0;
}

struct server *
server_new(struct event_base *base, server_dispatch_fn dispatch, void *arg)
{
    struct server *srv = calloc(1, sizeof(*srv));

    if (srv == NULL)
        return NULL;
    srv->base = base;
    srv->dispatch = dispatch;
    srv->dispatch_arg = arg;
    TAILQ_INIT(&srv->conns);
    return srv;
}

int
server_add_slot(struct server *srv, server_close_fn close_fn)
{
    if (srv->nslots == SERVER_MAX_SLOTS)
        abort();        /* raise SERVER_MAX_SLOTS */
    srv->close[srv->nslots] = close_fn;
    return srv->nslots++;
}

void
server_free(struct server *srv)
{
    struct conn *c;

    if (srv == NULL)
        return;
    if (srv->listener != NULL) {
        evconnlistener_free(srv->listener);
        srv->listener = NULL;
    }
    while ((c = TAILQ_FIRST(&srv->conns)) != NULL)
        conn_free(c);
    if (srv->socket_bound && unlink(srv->socket_path) < 0 && errno != ENOENT)
        log_error("cannot remove %s: %s", srv->socket_path, strerror(errno));
    bound_path[0] = '\0';
    free(srv);
}

size_t
server_nconns(const struct server *srv)
{
    return srv->nconns;
}

/* ---- a connection, as the subsystems see it ---------------------------- */

uid_t
conn_uid(const struct conn *c)
{
    return c->uid;
}

pid_t
conn_pid(const struct conn *c)
{
    return c->pid;
}

msgpack_zone *
conn_zone(struct conn *c)
{
    return &c->zone;
}

void **
conn_slot(struct conn *c, int slot)
{
    return &c->slot[slot];
}

size_t
conn_out_mark(const struct conn *c)
{
    return c->out.size;
}

const void *
conn_out_since(const struct conn *c, size_t mark, size_t *len)
{
    *len = c->out.size - mark;
    return c->out.data + mark;
}

void
conn_out_cut(struct conn *c, size_t mark)
{
    c->out.size = mark;
}
