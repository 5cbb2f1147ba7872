/*
 * test_server.c - the transport alone: server.c with a fake dispatch
 * callback, on a real Unix socket in a temporary directory, driven by the
 * test's own event loop.  Covers framing (whole, split and batched
 * frames, a broken length), the close hooks and their order, and
 * back-pressure on a peer that does not read.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "proto.h"
#include "server.h"

#define BIG_REPLY_BYTES 60000

/* What the fake dispatcher saw and does. */
static struct {
    struct server *srv;
    int slots[3];
    uint64_t ids[512];          /* request ids, in dispatch order */
    size_t n;
    bool big;                   /* answer with BIG_REPLY_BYTES */
    bool fill_slots;            /* give slots 0 and 2 a state */
    int closed[8];              /* slot states dropped, in order */
    size_t nclosed;
} fx;

static char big_text[BIG_REPLY_BYTES];
static int slot_state[3];       /* the states handed out */

static void
dispatch(struct conn *c, struct proto_req *req, void *arg)
{
    struct proto_hello_rep rep = { 0 };

    assert_ptr_equal(arg, &fx);
    if (fx.n < sizeof(fx.ids) / sizeof(fx.ids[0]))
        fx.ids[fx.n] = req->id;
    fx.n++;
    if (fx.fill_slots) {
        *conn_slot(c, fx.slots[0]) = &slot_state[0];
        *conn_slot(c, fx.slots[2]) = &slot_state[2];
    }
    rep.version = PROTO_VERSION;
    rep.server.ptr = fx.big ? big_text : "fake";
    rep.server.len = fx.big ? sizeof(big_text) : 4;
    conn_reply(c, PROTO_OP_HELLO, req->id, &rep);
}

static void
close_hook(void *state)
{
    fx.closed[fx.nclosed++] = (int)((int *)state - slot_state);
}

struct fixture {
    struct event_base *base;
    char dir[64], path[128];
};

static int
setup(void **state)
{
    static struct fixture f;
    struct server_socket sock = { f.path, false, 0600, "" };

    memset(&fx, 0, sizeof(fx));
    memset(big_text, 'x', sizeof(big_text));
    snprintf(f.dir, sizeof(f.dir), "/tmp/llmguard-test-server.XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    snprintf(f.path, sizeof(f.path), "%s/s.sock", f.dir);
    assert_non_null(f.base = event_base_new());
    assert_non_null(fx.srv = server_new(f.base, dispatch, &fx));
    for (int i = 0; i < 3; i++)
        fx.slots[i] = server_add_slot(fx.srv, close_hook);
    assert_int_equal(server_listen(fx.srv, &sock), 0);
    *state = &f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    server_free(fx.srv);
    event_base_free(f->base);
    unlink(f->path);        /* server_free removed it; in case it did not */
    rmdir(f->dir);
    return 0;
}

/* Run the loop for about ms milliseconds. */
static void
pump(struct fixture *f, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    event_base_loopexit(f->base, &tv);
    event_base_dispatch(f->base);
}

static int
client(struct fixture *f)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memcpy(sun.sun_path, f->path, strlen(f->path) + 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Encoded ping requests with ids first..first+n-1, appended to sb. */
static void
pings(msgpack_sbuffer *sb, uint64_t first, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(proto_encode_request(sb, PROTO_OP_PING, first + i,
                                              NULL), 0);
}

static void
send_all(int fd, const void *p, size_t len)
{
    assert_int_equal(send(fd, p, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Read what the socket holds now into r; bytes read, -1 at EOF. */
static ssize_t
drain(int fd, struct proto_reader *r)
{
    unsigned char buf[65536];
    ssize_t n, total = 0;

    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        assert_int_equal(proto_reader_feed(r, buf, (size_t)n), 0);
        total += n;
    }
    return n == 0 ? -1 : total;
}

/* The replies whole in r: their count, checking ids in order from *next. */
static size_t
replies(struct proto_reader *r, uint64_t *next)
{
    const unsigned char *frame;
    uint32_t len;
    struct proto_error e;
    size_t n = 0;
    uint64_t id;

    while (proto_reader_next(r, &frame, &len, &e) == 1) {
        assert_int_equal(proto_reply_id(frame, len, &id), 0);
        assert_int_equal(id, (*next)++);
        n++;
    }
    return n;
}

/* Frames whole, split across writes and batched in one write are each
 * dispatched once, in order, and answered in order. */
static void
test_framing(void **state)
{
    struct fixture *f = *state;
    msgpack_sbuffer sb;
    struct proto_reader r;
    uint64_t next = 1;
    int fd = client(f);

    msgpack_sbuffer_init(&sb);
    proto_reader_init(&r);
    pings(&sb, 1, 1);
    send_all(fd, sb.data, sb.size);                 /* whole */
    pump(f, 20);
    sb.size = 0;
    pings(&sb, 2, 1);
    send_all(fd, sb.data, 3);                       /* split in the prefix */
    pump(f, 20);
    assert_int_equal(fx.n, 1);
    send_all(fd, sb.data + 3, sb.size - 3);
    pump(f, 20);
    sb.size = 0;
    pings(&sb, 3, 40);
    send_all(fd, sb.data, sb.size);                 /* batched */
    pump(f, 50);
    assert_int_equal(fx.n, 42);
    for (size_t i = 0; i < 42; i++)
        assert_int_equal(fx.ids[i], i + 1);
    drain(fd, &r);
    assert_int_equal(replies(&r, &next), 42);
    close(fd);
    pump(f, 20);
    assert_int_equal(server_nconns(fx.srv), 0);
    msgpack_sbuffer_destroy(&sb);
    proto_reader_free(&r);
}

/* A length of 0 breaks the stream: an error reply, then the connection
 * is closed; other connections are not touched. */
static void
test_broken_length(void **state)
{
    struct fixture *f = *state;
    static const unsigned char zero[4] = { 0, 0, 0, 0 };
    struct proto_reader r;
    const unsigned char *frame;
    uint32_t len;
    struct proto_rep rep;
    struct proto_error e;
    msgpack_zone zone;
    int bad = client(f), good = client(f);
    uint64_t next = 7;
    msgpack_sbuffer sb;

    proto_reader_init(&r);
    msgpack_zone_init(&zone, 1024);
    send_all(bad, zero, sizeof(zero));
    pump(f, 50);
    assert_int_equal(drain(bad, &r), -1);           /* closed after... */
    assert_int_equal(proto_reader_next(&r, &frame, &len, &e), 1);
    assert_int_equal(proto_decode_reply(frame, len, PROTO_OP_PING, &zone,
                                        &rep, &e), 0);
    assert_false(rep.ok);                           /* ...an error reply */
    assert_int_equal(server_nconns(fx.srv), 1);
    msgpack_sbuffer_init(&sb);
    pings(&sb, 7, 1);
    send_all(good, sb.data, sb.size);
    pump(f, 20);
    proto_reader_free(&r);
    proto_reader_init(&r);
    drain(good, &r);
    assert_int_equal(replies(&r, &next), 1);
    close(bad);
    close(good);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_destroy(&zone);
    proto_reader_free(&r);
}

/* The close hooks run once per slot that holds a state, in the order the
 * slots were added; a slot left empty is skipped. */
static void
test_close_hooks(void **state)
{
    struct fixture *f = *state;
    msgpack_sbuffer sb;
    int fd = client(f);

    fx.fill_slots = true;
    msgpack_sbuffer_init(&sb);
    pings(&sb, 1, 1);
    send_all(fd, sb.data, sb.size);
    pump(f, 20);
    assert_int_equal(fx.nclosed, 0);
    close(fd);
    pump(f, 20);
    assert_int_equal(fx.nclosed, 2);
    assert_int_equal(fx.closed[0], 0);
    assert_int_equal(fx.closed[1], 2);
    /* Shutdown closes the rest the same way. */
    fd = client(f);
    send_all(fd, sb.data, sb.size);
    pump(f, 20);
    server_free(fx.srv);
    fx.srv = NULL;
    assert_int_equal(fx.nclosed, 4);
    assert_int_equal(fx.closed[2], 0);
    assert_int_equal(fx.closed[3], 2);
    close(fd);
    msgpack_sbuffer_destroy(&sb);
}

/* A peer that sends but does not read: once more than the high mark of
 * replies is queued the server stops reading it (no more dispatches);
 * when the peer reads, everything is answered. */
static void
test_back_pressure(void **state)
{
    struct fixture *f = *state;
    msgpack_sbuffer sb;
    struct proto_reader r;
    uint64_t next = 1, sent = 0;
    size_t got = 0, stalled;
    int fd = client(f);

    fx.big = true;
    msgpack_sbuffer_init(&sb);
    proto_reader_init(&r);
    for (int batch = 0; batch < 4; batch++) {
        sb.size = 0;
        pings(&sb, sent + 1, 30);
        send_all(fd, sb.data, sb.size);
        sent += 30;
        pump(f, 30);
    }
    stalled = fx.n;
    /* 30 replies of 60 KB are over the 1 MiB mark: reading stopped. */
    assert_true(stalled >= 30);
    assert_true(stalled < sent);
    pump(f, 100);
    assert_int_equal(fx.n, stalled);
    for (int i = 0; i < 2000 && got < sent; i++) {
        drain(fd, &r);
        got += replies(&r, &next);
        pump(f, 5);
    }
    assert_int_equal(fx.n, sent);
    assert_int_equal(got, sent);
    close(fd);
    msgpack_sbuffer_destroy(&sb);
    proto_reader_free(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_hooks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_back_pressure, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
