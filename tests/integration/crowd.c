/*
 * crowd - many clients at once against llmguardd.
 *
 *   crowd waiters SOCKET PROVIDER N DAEMON_PID
 *       opens N connections, each with an acquire waiting for PROVIDER's
 *       token (queued one after another, so arrival order is known), prints
 *       the daemon's memory per connection, then waits for every grant and
 *       prints "served S of N, inversions I" where an inversion is a reply
 *       that arrived more than 20 ms before the reply of an earlier waiter.
 *   crowd hold SOCKET N SECONDS
 *       opens N connections (the kernel queues those not yet accepted),
 *       holds them for SECONDS, closes them; prints "held N"
 *   crowd flood SOCKET N
 *       writes N pipelined pings without reading a byte, then waits; prints
 *       "dropped after T s" when the daemon closes the connection.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

static const char *sock_path;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
dial(void)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        perror("connect");
        exit(2);
    }
    return fd;
}

/* One request frame of op with one string field and one number field. */
static void
frame(msgpack_sbuffer *sb, const char *op, uint64_t id, const char *skey,
      const char *sval, const char *nkey, double nval)
{
    msgpack_packer pk;

    sb->size = 4;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2 + (skey != NULL) + (nkey != NULL));
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, op, strlen(op));
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint64(&pk, id);
    if (skey != NULL) {
        msgpack_pack_str_with_body(&pk, skey, strlen(skey));
        msgpack_pack_str_with_body(&pk, sval, strlen(sval));
    }
    if (nkey != NULL) {
        msgpack_pack_str_with_body(&pk, nkey, strlen(nkey));
        msgpack_pack_double(&pk, nval);
    }
    size_t n = sb->size - 4;
    sb->data[0] = (char)(n >> 24);
    sb->data[1] = (char)(n >> 16);
    sb->data[2] = (char)(n >> 8);
    sb->data[3] = (char)n;
}

/* Queued waiters of provider, asked on the control connection. */
static uint64_t
waiters(int ctl, msgpack_sbuffer *sb, const char *provider)
{
    static unsigned char buf[65536];
    struct proto_reader rd;
    const unsigned char *f;
    uint32_t len;
    struct proto_error e;
    struct proto_rep rep;
    msgpack_zone zone;
    uint64_t w = 0;

    frame(sb, "limiter_status", 1, "provider", provider, NULL, 0);
    send(ctl, sb->data, sb->size, MSG_NOSIGNAL);
    proto_reader_init(&rd);
    msgpack_zone_init(&zone, 1024);
    for (;;) {
        ssize_t n = recv(ctl, buf, sizeof(buf), 0);
        if (n <= 0)
            exit(3);
        proto_reader_feed(&rd, buf, (size_t)n);
        if (proto_reader_next(&rd, &f, &len, &e) == 1) {
            if (proto_decode_reply(f, len, PROTO_OP_LIMITER_STATUS, &zone,
                                   &rep, &e) == 0 && rep.ok)
                w = rep.u.limiter_status.waiters;
            break;
        }
    }
    proto_reader_free(&rd);
    msgpack_zone_destroy(&zone);
    return w;
}

static long
rss_kib(const char *pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *fp;

    snprintf(path, sizeof(path), "/proc/%s/status", pid);
    if ((fp = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), fp))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(fp);
    return kib;
}

static int
cmd_waiters(const char *provider, int n, const char *pid)
{
    struct rlimit rl = { (rlim_t)n + 64, (rlim_t)n + 64 };
    msgpack_sbuffer sb;
    int *fds = calloc((size_t)n, sizeof(int));
    double *got = calloc((size_t)n, sizeof(double));
    struct pollfd *pf = calloc((size_t)n, sizeof(*pf));
    int ctl, served = 0, inversions = 0;
    long before, after;

    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("setrlimit");
        return 2;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_write(&sb, "\0\0\0\0", 4);
    ctl = dial();
    before = rss_kib(pid);
    for (int i = 0; i < n; i++) {
        fds[i] = dial();
        frame(&sb, "acquire", (uint64_t)i, "provider", provider, "timeout_ms",
              300000);
        send(fds[i], sb.data, sb.size, MSG_NOSIGNAL);
        /* Queued before the next one comes: arrival order is i. */
        while (waiters(ctl, &sb, provider) + (uint64_t)served < (uint64_t)i + 1) {
            struct pollfd p = { fds[i], POLLIN, 0 };
            if (poll(&p, 1, 0) == 1)    /* granted already: counted below */
                break;
        }
    }
    after = rss_kib(pid);
    printf("queued %d; daemon RSS %ld KiB -> %ld KiB: %.0f bytes per waiting "
           "connection\n", n, before, after,
           (double)(after - before) * 1024.0 / n);
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        pf[i].fd = fds[i];
        pf[i].events = POLLIN;
        got[i] = -1;
    }
    double deadline = now_s() + 120;
    while (served < n && now_s() < deadline) {
        if (poll(pf, (nfds_t)n, 1000) <= 0)
            continue;
        double t = now_s();
        for (int i = 0; i < n; i++) {
            char buf[256];
            if (!(pf[i].revents & (POLLIN | POLLHUP)))
                continue;
            if (recv(fds[i], buf, sizeof(buf), 0) > 0 && got[i] < 0) {
                got[i] = t;
                served++;
            }
            pf[i].fd = -1;
        }
    }
    for (int i = 1; i < n; i++)
        for (int j = i - 1; j >= 0 && j >= i - 50; j--)
            if (got[i] >= 0 && got[j] >= 0 && got[i] + 0.020 < got[j])
                inversions++;
    printf("served %d of %d, inversions %d\n", served, n, inversions);
    fflush(stdout);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    close(ctl);
    free(fds);
    free(got);
    free(pf);
    msgpack_sbuffer_destroy(&sb);
    return served == n && inversions == 0 ? 0 : 1;
}

static int
cmd_flood(int n)
{
    msgpack_sbuffer sb;
    int fd = dial();
    double t0;

    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_write(&sb, "\0\0\0\0", 4);
    /* All the pings in one buffer, written without blocking until the
     * daemon stops reading (no progress for 2 s). */
    msgpack_sbuffer all;
    msgpack_sbuffer_init(&all);
    for (int i = 0; i < n; i++) {
        frame(&sb, "ping", (uint64_t)i, NULL, NULL, NULL, 0);
        msgpack_sbuffer_write(&all, sb.data, sb.size);
    }
    size_t off = 0;
    double last = now_s();
    while (off < all.size && now_s() - last < 2) {
        struct pollfd p = { fd, POLLOUT, 0 };
        if (poll(&p, 1, 200) != 1)
            continue;
        ssize_t w = send(fd, all.data + off, all.size - off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
            last = now_s();
        }
    }
    printf("wrote %zu of %zu bytes (%zu pings) before the daemon stopped "
           "reading\n", off, all.size, off / (all.size / (size_t)n));
    fflush(stdout);
    t0 = now_s();
    /* Read nothing; wait for the daemon to hang up (up to 60 s). */
    for (;;) {
        struct pollfd p = { fd, POLLRDHUP, 0 };
        poll(&p, 1, 500);
        if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
            break;
        if (now_s() - t0 > 60)
            break;
    }
    int dropped = now_s() - t0 <= 60;
    if (dropped)
        printf("dropped after %.0f s\n", now_s() - t0);
    else
        printf("not dropped\n");
    fflush(stdout);
    close(fd);
    msgpack_sbuffer_destroy(&all);
    msgpack_sbuffer_destroy(&sb);
    return dropped ? 0 : 1;
}

static int
cmd_hold(int n, double seconds)
{
    struct rlimit rl = { (rlim_t)n + 64, (rlim_t)n + 64 };
    int *fds = calloc((size_t)n, sizeof(int));

    if (fds == NULL || setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 2;
    for (int i = 0; i < n; i++)
        fds[i] = dial();
    printf("held %d\n", n);
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "hold") == 0) {
        sock_path = argv[2];
        return cmd_hold(atoi(argv[3]), atof(argv[4]));
    }
    if (argc == 6 && strcmp(argv[1], "waiters") == 0) {
        sock_path = argv[2];
        return cmd_waiters(argv[3], atoi(argv[4]), argv[5]);
    }
    if (argc == 4 && strcmp(argv[1], "flood") == 0) {
        sock_path = argv[2];
        return cmd_flood(atoi(argv[3]));
    }
    fprintf(stderr, "usage: see the comment at the top of crowd.c\n");
    return 2;
}
