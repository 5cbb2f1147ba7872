/*
 * pingpong.c - the raw floor: a Unix-socket echo server and P clients
 * exchanging frames of the size of an acquire request and its reply.
 *
 *   pingpong serve -s PATH            run the server until SIGTERM/SIGINT
 *   pingpong throughput -s PATH [-P N -d D -w W --json ...]
 *   pingpong ping -s PATH             wait until the server answers
 *   pingpong sizes                    print the frame sizes it uses
 *
 * The server does what any single-threaded event-loop daemon must do per
 * request and nothing else: epoll_wait, read, find the frames (the same
 * 4-byte big-endian length prefix as llmguardd's), write a reply frame.  It
 * decodes nothing and keeps no state.  A client writes a request frame and
 * reads the reply, one at a time, like libllmguard.  The sizes are those
 * the real codec (proto/) produces for `acquire {provider "bench", tokens
 * 1, timeout_ms 0}` and its reply, so round trips/s here bound what
 * llmguardd can reach on the same machine with the same clients.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "proto.h"

#define PROG "pingpong"
#define MAX_EVENTS 64
#define IN_CAP 65536
/* A client id of this size is what most calls of a run carry (5 bytes as
 * msgpack uint32), so the sizes are those of a typical call. */
#define TYPICAL_ID 100000

enum mode { M_SERVE, M_THROUGHPUT, M_PING, M_SIZES };

static const struct mode_def {
    const char *name;
    enum mode mode;
    const char *help;
} modes[] = {
    { "serve", M_SERVE, "run the echo server on --socket until SIGTERM" },
    { "throughput", M_THROUGHPUT,
      "P clients, sequential round trips: round trips/s, p50/p99/p99.9" },
    { "ping", M_PING, "wait until the server answers (up to --seconds)" },
    { "sizes", M_SIZES, "print the request and reply frame sizes and exit" },
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

struct opts {
    const struct mode_def *m;
    const char *socket;
    const char *label;
    int procs;
    double seconds, warmup_s;
    size_t req_bytes, rep_bytes;    /* whole frames, prefix included */
    pid_t server_pid;
    bool json;
};

static void
usage(FILE *fp)
{
    fprintf(fp,
"usage: pingpong MODE [OPTIONS]\n"
"\n"
"The raw Unix-socket floor for llmguardd: an echo server that only reads\n"
"and writes length-prefixed frames, and P clients doing one round trip at\n"
"a time with frames the size of an acquire request and its reply.\n"
"\n"
"Modes:\n");
    for (size_t i = 0; i < NMODES; i++)
        fprintf(fp, "  %-11s %s\n", modes[i].name, modes[i].help);
    fprintf(fp,
"\n"
"Options:\n"
"  -s, --socket PATH      the server's socket (serve, throughput, ping)\n"
"  -P, --procs N          client processes (default: 1)\n"
"  -d, --seconds D        measured duration (default: 5); ping: max wait\n"
"  -w, --warmup W         seconds run before measuring (default: 0.5)\n"
"      --request-bytes N  request frame size, prefix included (default: an\n"
"                         encoded acquire request, see `pingpong sizes`)\n"
"      --reply-bytes N    serve: reply frame size (default: an encoded\n"
"                         acquire reply); throughput: what to expect\n"
"      --daemon-pid PID   also report that process's CPU (the server's)\n"
"  -l, --label STR        a name echoed in the output\n"
"  -j, --json             one JSON object instead of the text line\n"
"  -h, --help             this text\n"
"\n"
"Output: round trips/s (\"permits_per_s\" in JSON, so scripts read it as\n"
"they read loadgen's), latency p50/p99/p99.9/max in microseconds, CPU.\n");
}

/* The frame sizes the codec gives an acquire request and its reply. */
static void
codec_sizes(size_t *req, size_t *rep)
{
    struct proto_acquire_req rq = { 0 };
    struct proto_acquire_rep rp = { 0 };
    msgpack_sbuffer sb;

    rq.provider.ptr = "bench";
    rq.provider.len = 5;
    rq.tokens = 1;
    rq.timeout_ms = 0;
    /* As llmguard_acquire() sends it. */
    rq.has = PROTO_BIT(PROTO_ACQUIRE_REQ_PROVIDER) |
             PROTO_BIT(PROTO_ACQUIRE_REQ_TOKENS) |
             PROTO_BIT(PROTO_ACQUIRE_REQ_TIMEOUT_MS);
    rp.waited_ms = 0;
    rp.has = PROTO_BIT(PROTO_ACQUIRE_REP_WAITED_MS);
    msgpack_sbuffer_init(&sb);
    if (proto_encode_request(&sb, PROTO_OP_ACQUIRE, TYPICAL_ID, &rq) < 0)
        hn_die(PROG, "cannot encode an acquire request");
    *req = sb.size;
    sb.size = 0;
    if (proto_encode_reply(&sb, PROTO_OP_ACQUIRE, TYPICAL_ID, &rp) < 0)
        hn_die(PROG, "cannot encode an acquire reply");
    *rep = sb.size;
    msgpack_sbuffer_destroy(&sb);
}

static void
parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "procs", required_argument, NULL, 'P' },
        { "seconds", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'w' },
        { "request-bytes", required_argument, NULL, 'Q' },
        { "reply-bytes", required_argument, NULL, 'R' },
        { "daemon-pid", required_argument, NULL, 'D' },
        { "label", required_argument, NULL, 'l' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    size_t i;

    memset(o, 0, sizeof(*o));
    o->procs = 1;
    o->seconds = 5;
    o->warmup_s = 0.5;
    codec_sizes(&o->req_bytes, &o->rep_bytes);
    while ((c = getopt_long(argc, argv, "s:P:d:w:l:jh", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 's': o->socket = optarg; break;
        case 'P': o->procs = (int)hn_parse_num(PROG, "--procs", optarg, 1,
                                               HN_MAX_PROCS);
            break;
        case 'd': o->seconds = hn_parse_num(PROG, "--seconds", optarg, 0.01,
                                            86400);
            break;
        case 'w': o->warmup_s = hn_parse_num(PROG, "--warmup", optarg, 0,
                                             3600);
            break;
        case 'Q': o->req_bytes = (size_t)hn_parse_num(PROG, "--request-bytes",
                                                      optarg, 5, 65540);
            break;
        case 'R': o->rep_bytes = (size_t)hn_parse_num(PROG, "--reply-bytes",
                                                      optarg, 5, 65540);
            break;
        case 'D': o->server_pid = (pid_t)hn_parse_num(PROG, "--daemon-pid",
                                                      optarg, 1, 4194304);
            break;
        case 'l': o->label = optarg; break;
        case 'j': o->json = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "pingpong: %s (pingpong --help)\n", optind >= argc ?
                "a mode is required" : "exactly one mode, please");
        exit(2);
    }
    for (i = 0; i < NMODES; i++)
        if (strcmp(argv[optind], modes[i].name) == 0)
            break;
    if (i == NMODES) {
        fprintf(stderr, "pingpong: unknown mode '%s'; one of:", argv[optind]);
        for (i = 0; i < NMODES; i++)
            fprintf(stderr, " %s", modes[i].name);
        fputc('\n', stderr);
        exit(2);
    }
    o->m = &modes[i];
    if (o->m->mode != M_SIZES && o->socket == NULL) {
        fprintf(stderr, "pingpong: %s needs --socket\n", o->m->name);
        exit(2);
    }
}

static int
make_addr(const char *path, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path))
        return -1;
    strcpy(sun->sun_path, path);
    return 0;
}

/* A length-prefixed frame of total size len (prefix included), filler
 * bytes after the prefix. */
static unsigned char *
make_frame(size_t len)
{
    unsigned char *f = malloc(len);
    size_t body = len - 4;

    if (f == NULL)
        hn_die(PROG, "out of memory");
    memset(f, 0xa5, len);
    f[0] = (unsigned char)(body >> 24);
    f[1] = (unsigned char)(body >> 16);
    f[2] = (unsigned char)(body >> 8);
    f[3] = (unsigned char)body;
    return f;
}

/* ---- server ------------------------------------------------------------ */

struct peer {
    int fd;
    size_t in_len;              /* bytes held in in[] */
    unsigned char in[IN_CAP + 4];
    unsigned char *out;         /* replies not yet written */
    size_t out_len, out_cap;
};

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void
peer_close(int ep, struct peer *p)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    free(p->out);
    free(p);
}

/* Write what is queued; arm EPOLLOUT only when the socket is full.
 * -1 when the peer is gone. */
static int
peer_write(int ep, struct peer *p, bool armed)
{
    size_t off = 0;

    while (off < p->out_len) {
        ssize_t n = send(p->fd, p->out + off, p->out_len - off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return -1;
    }
    memmove(p->out, p->out + off, p->out_len - off);
    p->out_len -= off;
    bool want = p->out_len > 0;
    if (want != armed) {
        struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0),
                                  .data.ptr = p };
        epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
    }
    return 0;
}

/* Read what the peer sent and queue one reply per whole frame.  -1 when
 * the peer is gone or sent a bad frame. */
static int
peer_read(struct peer *p, const unsigned char *reply, size_t reply_len)
{
    ssize_t n;
    size_t off = 0;

    do
        n = read(p->fd, p->in + p->in_len, sizeof(p->in) - p->in_len);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n <= 0)
        return -1;
    p->in_len += (size_t)n;
    while (p->in_len - off >= 4) {
        const unsigned char *h = p->in + off;
        uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 |
                       (uint32_t)h[2] << 8 | h[3];
        if (len == 0 || len > IN_CAP)
            return -1;
        if (p->in_len - off < 4 + (size_t)len)
            break;
        off += 4 + len;
        if (p->out_len + reply_len > p->out_cap) {
            size_t cap = p->out_cap ? p->out_cap * 2 : 4096;
            while (cap < p->out_len + reply_len)
                cap *= 2;
            unsigned char *o = realloc(p->out, cap);
            if (o == NULL)
                return -1;
            p->out = o;
            p->out_cap = cap;
        }
        memcpy(p->out + p->out_len, reply, reply_len);
        p->out_len += reply_len;
    }
    memmove(p->in, p->in + off, p->in_len - off);
    p->in_len -= off;
    return 0;
}

static int
mode_serve(const struct opts *o)
{
    struct epoll_event evs[MAX_EVENTS], ev = { .events = EPOLLIN };
    struct sockaddr_un sun;
    struct sigaction sa;
    unsigned char *reply = make_frame(o->rep_bytes);
    int lfd, ep;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (make_addr(o->socket, &sun) < 0)
        hn_die(PROG, "socket path too long: %s", o->socket);
    unlink(o->socket);
    if ((lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                      0)) < 0 ||
        bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(lfd, 512) < 0)
        hn_die(PROG, "listen on %s: %s", o->socket, strerror(errno));
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        hn_die(PROG, "epoll_create1: %s", strerror(errno));
    ev.data.ptr = NULL;         /* NULL: the listener */
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    while (!stop) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            hn_die(PROG, "epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct peer *p = evs[i].data.ptr;
            if (p == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK |
                                     SOCK_CLOEXEC)) >= 0) {
                    if ((p = calloc(1, sizeof(*p))) == NULL) {
                        close(fd);
                        continue;
                    }
                    p->fd = fd;
                    ev.events = EPOLLIN;
                    ev.data.ptr = p;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            bool armed = p->out_len > 0;
            if (((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
                 peer_read(p, reply, o->rep_bytes) < 0) ||
                peer_write(ep, p, armed) < 0)
                peer_close(ep, p);
        }
    }
    close(lfd);
    unlink(o->socket);
    free(reply);
    return 0;
}

/* ---- clients ----------------------------------------------------------- */

static int
connect_to(const char *path)
{
    struct sockaddr_un sun;
    int fd;

    if (make_addr(path, &sun) < 0)
        return -1;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One round trip on fd: write the request, read a whole reply of
 * rep_len bytes.  0 or -1. */
static int
round_trip(int fd, const unsigned char *req, size_t req_len,
           unsigned char *buf, size_t rep_len)
{
    size_t got = 0;

    while (got < req_len) {
        ssize_t n = send(fd, req + got, req_len - got, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    for (got = 0; got < rep_len;) {
        ssize_t n = recv(fd, buf + got, rep_len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static void
worker(struct hn_worker *w, void *arg)
{
    const struct opts *o = arg;
    unsigned char *req = make_frame(o->req_bytes);
    unsigned char *buf = malloc(o->rep_bytes);
    int fd = connect_to(o->socket);

    if (fd < 0 || buf == NULL)
        hn_fail(w, -1, "connect to %s: %s", o->socket, strerror(errno));
    else if (round_trip(fd, req, o->req_bytes, buf, o->rep_bytes) < 0)
        hn_fail(w, -1, "first round trip: %s", strerror(errno));
    if (!hn_ready(w))
        return;
    for (;;) {
        uint64_t t0 = hn_now_ns();
        double start = (double)t0 / 1e9;
        if (start >= w->sc.end_s)
            break;
        bool counted = hn_measure(w, start);
        if (round_trip(fd, req, o->req_bytes, buf, o->rep_bytes) < 0) {
            hn_fail(w, -1, "round trip: %s", errno ? strerror(errno) :
                    "server closed the connection");
            break;
        }
        uint64_t t1 = hn_now_ns();
        if (counted)
            hn_ok(w, t0, t1);
    }
    close(fd);
}

static int
mode_throughput(const struct opts *o)
{
    struct hn_plan plan = { o->procs, o->seconds, o->warmup_s, o->server_pid,
                            false };
    struct hn_result res;
    int rc = hn_run(&plan, worker, (void *)o, &res);
    double rate = (double)res.sum.ok / o->seconds;

    hn_print_head(o->json, "pingpong", o->label, o->procs);
    if (o->json)
        printf(",\"request_bytes\":%zu,\"reply_bytes\":%zu,\"seconds\":%.3f,"
               "\"round_trips\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"permits_per_s\":%.1f,\"per_proc_min\":%" PRIu64
               ",\"per_proc_max\":%" PRIu64, o->req_bytes, o->rep_bytes,
               o->seconds, res.sum.ok, res.sum.errors, rate, res.min_ok,
               res.max_ok);
    else
        printf(" (%zu-byte requests, %zu-byte replies), %.1f s: %.0f round "
               "trips/s (%" PRIu64 ", %" PRIu64 " errors)", o->req_bytes,
               o->rep_bytes, o->seconds, rate, res.sum.ok, res.sum.errors);
    hn_print_latency(o->json, &res.lat);
    hn_print_cpu_and_end(o->json, &res);
    return rc < 0 ? 1 : 0;
}

/* Connect and do one round trip, retrying until --seconds pass. */
static int
mode_ping(const struct opts *o)
{
    unsigned char *req = make_frame(o->req_bytes);
    unsigned char *buf = malloc(o->rep_bytes);
    double end = hn_now_s() + o->seconds;
    int rc;

    for (;;) {
        int fd = connect_to(o->socket);
        rc = fd >= 0 && buf != NULL ?
             round_trip(fd, req, o->req_bytes, buf, o->rep_bytes) : -1;
        if (fd >= 0)
            close(fd);
        if (rc == 0 || hn_now_s() >= end)
            break;
        hn_sleep_s(0.02);
    }
    if (rc != 0)
        fprintf(stderr, "pingpong: no answer on %s\n", o->socket);
    free(req);
    free(buf);
    return rc == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    struct opts o;

    parse_args(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    switch (o.m->mode) {
    case M_SERVE:
        return mode_serve(&o);
    case M_THROUGHPUT:
        return mode_throughput(&o);
    case M_PING:
        return mode_ping(&o);
    case M_SIZES:
        if (o.json)
            printf("{\"request_bytes\":%zu,\"reply_bytes\":%zu}\n",
                   o.req_bytes, o.rep_bytes);
        else
            printf("acquire request frame %zu bytes, reply frame %zu bytes "
                   "(4-byte length prefix included, id %d)\n", o.req_bytes,
                   o.rep_bytes, TYPICAL_ID);
        return 0;
    }
    return 2;
}
