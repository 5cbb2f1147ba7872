/*
 * test_async.c - libllmguard's non-blocking context against a fake daemon:
 * a real Unix socket in a temporary directory whose far end is this test,
 * which reads the requests and writes the replies it chooses.  Both ends
 * run in this one thread, which is only possible because the context
 * never blocks.  Covers pipelined replies out of order, a reply that does
 * not decode, an error of id 0, the daemon closing mid-flight, a request
 * that runs out of time, no daemon at all, and closing the context with
 * requests pending (also from inside a callback).
 */
#include <errno.h>
#include <poll.h>
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

#include "llmguard.h"
#include "proto.h"

#define MAXREQ 16

/* The fake daemon: its listening socket, the accepted peer, and the
 * requests read from it. */
static struct {
    char dir[64], path[96];
    int lfd, cfd;
    struct proto_reader rd;
    msgpack_zone zone;
    uint64_t ids[MAXREQ];
    enum proto_op ops[MAXREQ];
    size_t n;
} srv;

/* What the callbacks saw, per request (arg is the index). */
static struct {
    int calls[MAXREQ];
    int status[MAXREQ];
    char provider[MAXREQ][64];
    char msg[MAXREQ][128];
    int try_again[MAXREQ];
    bool close_in_callback;
    llmguard_async_t *reopened;     /* a permit submitted from a callback */
} seen;

static int
setup(void **state)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    (void)state;
    memset(&seen, 0, sizeof(seen));
    memset(&srv, 0, sizeof(srv));
    snprintf(srv.dir, sizeof(srv.dir), "/tmp/test_async.XXXXXX");
    assert_non_null(mkdtemp(srv.dir));
    snprintf(srv.path, sizeof(srv.path), "%s/sock", srv.dir);
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", srv.path);
    srv.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(srv.lfd >= 0);
    assert_int_equal(bind(srv.lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    assert_int_equal(listen(srv.lfd, 8), 0);
    srv.cfd = -1;
    proto_reader_init(&srv.rd);
    assert_true(msgpack_zone_init(&srv.zone, 2048));
    unsetenv("LLMGUARD_CLIENT_TIMEOUT_MS");
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    if (srv.cfd >= 0)
        close(srv.cfd);
    close(srv.lfd);
    proto_reader_free(&srv.rd);
    msgpack_zone_destroy(&srv.zone);
    unlink(srv.path);
    rmdir(srv.dir);
    return 0;
}

/* Let the context write what it has queued (the socket takes it all). */
static void
drive(llmguard_async_t *a)
{
    llmguard_async_handle(a, llmguard_async_events(a));
}

/* The server side: accept, if need be, and read until n requests came. */
static void
server_read(size_t n)
{
    const unsigned char *frame;
    struct proto_error e;
    struct proto_req req;
    uint32_t len;

    if (srv.cfd < 0) {
        srv.cfd = accept(srv.lfd, NULL, NULL);
        assert_true(srv.cfd >= 0);
        proto_reader_free(&srv.rd);
        proto_reader_init(&srv.rd);
        srv.n = 0;
    }
    while (srv.n < n) {
        int r = proto_reader_next(&srv.rd, &frame, &len, &e);
        assert_true(r >= 0);
        if (r == 1) {
            msgpack_zone_clear(&srv.zone);
            assert_int_equal(proto_decode_request(frame, len, &srv.zone, &req,
                                                  &e), PROTO_DECODE_OK);
            srv.ids[srv.n] = req.id;
            srv.ops[srv.n++] = req.op;
            continue;
        }
        size_t avail;
        unsigned char *p = proto_reader_space(&srv.rd, 4096, &avail);
        ssize_t got = recv(srv.cfd, p, avail, 0);
        assert_true(got > 0);
        proto_reader_commit(&srv.rd, (size_t)got);
    }
}

static void
server_send(const msgpack_sbuffer *sb)
{
    assert_int_equal(send(srv.cfd, sb->data, sb->size, 0), (ssize_t)sb->size);
}

/* Grant request i a permit on provider. */
static void
server_grant(size_t i, const char *provider)
{
    struct proto_permit_rep rep = { 0 };
    msgpack_sbuffer sb;

    msgpack_sbuffer_init(&sb);
    rep.permit_id = 100 + i;
    rep.provider.ptr = provider;
    rep.provider.len = (uint32_t)strlen(provider);
    rep.quota_allowed = true;
    assert_int_equal(proto_encode_reply(&sb, PROTO_OP_PERMIT, srv.ids[i],
                                        &rep), 0);
    server_send(&sb);
    msgpack_sbuffer_destroy(&sb);
}

static void
on_permit(llmguard_async_t *a, int status, const struct llmguard_permit *p,
          void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;

    assert_non_null(p);
    assert_true(p->call_id[0] != '\0');
    seen.calls[i]++;
    seen.status[i] = status;
    snprintf(seen.provider[i], sizeof(seen.provider[i]), "%s", p->provider);
    snprintf(seen.msg[i], sizeof(seen.msg[i]), "%s",
             llmguard_async_last_error(a));
    if (seen.close_in_callback) {
        seen.close_in_callback = false;
        llmguard_async_close(a);
    }
}

static void
on_report(llmguard_async_t *a, int status,
          const struct llmguard_report_reply *r, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;

    (void)a;
    seen.calls[i]++;
    seen.status[i] = status;
    seen.try_again[i] = r->try_again;
}

static void
submit_permits(llmguard_async_t *a, size_t n, double timeout_s)
{
    struct llmguard_request req = { .tokens_estimate = 10,
                                    .timeout_s = timeout_s };

    for (size_t i = 0; i < n; i++)
        assert_int_equal(llmguard_async_permit(a, &req, NULL, 0, on_permit,
                                               (void *)(uintptr_t)i), 0);
    assert_int_equal(llmguard_async_pending(a), n);
}

/* Three permits in flight on one connection, answered in reverse order:
 * each reply reaches the callback of its own request, once. */
static void
test_pipelined_out_of_order(void **state)
{
    llmguard_async_t *a = llmguard_async_open(srv.path);

    (void)state;
    submit_permits(a, 3, 5);
    assert_true(llmguard_async_fd(a) >= 0);
    /* Sent at once, outside a callback: nothing is left to write. */
    assert_int_equal(llmguard_async_events(a), LLMGUARD_READABLE);
    server_read(3);
    server_grant(2, "two");
    server_grant(0, "zero");
    server_grant(1, "one");
    drive(a);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(seen.calls[i], 1);
        assert_int_equal(seen.status[i], 0);
    }
    assert_string_equal(seen.provider[0], "zero");
    assert_string_equal(seen.provider[1], "one");
    assert_string_equal(seen.provider[2], "two");
    assert_int_equal(llmguard_async_pending(a), 0);
    assert_int_equal(llmguard_async_timeout_ms(a), -1);
    llmguard_async_close(a);
}

/* A report's reply says whether to try elsewhere, from the outcome. */
static void
test_report(void **state)
{
    llmguard_async_t *a = llmguard_async_open(srv.path);
    struct llmguard_report r = { .permit_id = 7,
                                 .outcome = LLMGUARD_OUTCOME_RATE_LIMITED,
                                 .latency_ms = -1 };
    struct proto_report_rep rep = { .state = { "degraded", 8 },
                                    .cooldown_remaining_s = 3 };
    msgpack_sbuffer sb;

    (void)state;
    r.outcome = 99;
    assert_int_equal(llmguard_async_report(a, &r, on_report, NULL),
                     LLMGUARD_EINVAL);
    r.outcome = LLMGUARD_OUTCOME_RATE_LIMITED;
    assert_int_equal(llmguard_async_report(a, &r, on_report, (void *)0), 0);
    r.final = 1;
    assert_int_equal(llmguard_async_report(a, &r, on_report, (void *)1), 0);
    drive(a);
    server_read(2);
    assert_int_equal(srv.ops[0], PROTO_OP_REPORT);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(proto_encode_reply(&sb, PROTO_OP_REPORT, srv.ids[0],
                                        &rep), 0);
    assert_int_equal(proto_encode_reply(&sb, PROTO_OP_REPORT, srv.ids[1],
                                        &rep), 0);
    server_send(&sb);
    msgpack_sbuffer_destroy(&sb);
    drive(a);
    assert_int_equal(seen.calls[0], 1);
    assert_int_equal(seen.try_again[0], 1);
    assert_int_equal(seen.calls[1], 1);
    assert_int_equal(seen.try_again[1], 0);     /* final */
    llmguard_async_close(a);
}

/* A reply that does not decode fails every pending request once, with
 * EPROTO; the next request connects anew. */
static void
test_bad_reply(void **state)
{
    llmguard_async_t *a = llmguard_async_open(srv.path);
    static const unsigned char not_a_map[] = { 0, 0, 0, 1, 0x2a };
    msgpack_sbuffer sb = { .size = sizeof(not_a_map),
                           .data = (char *)not_a_map };

    (void)state;
    submit_permits(a, 3, 5);
    drive(a);
    server_read(3);
    server_send(&sb);
    drive(a);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(seen.calls[i], 1);
        assert_int_equal(seen.status[i], LLMGUARD_EPROTO);
        assert_non_null(strstr(seen.msg[i], "malformed reply"));
    }
    assert_int_equal(llmguard_async_pending(a), 0);
    assert_int_equal(llmguard_async_fd(a), -1);
    /* A new connection for the next one. */
    close(srv.cfd);
    srv.cfd = -1;
    memset(&seen, 0, sizeof(seen));
    submit_permits(a, 1, 5);
    drive(a);
    server_read(1);
    server_grant(0, "again");
    drive(a);
    assert_int_equal(seen.status[0], 0);
    assert_string_equal(seen.provider[0], "again");
    llmguard_async_close(a);
}

/* An error of id 0 (the daemon's word on the stream) reaches every
 * pending request with its code. */
static void
test_error_id_zero(void **state)
{
    llmguard_async_t *a = llmguard_async_open(srv.path);
    struct proto_error e;
    msgpack_sbuffer sb;

    (void)state;
    submit_permits(a, 2, 5);
    drive(a);
    server_read(2);
    proto_error_set(&e, PROTO_E_FRAME_TOO_LARGE, "frame length 70000 "
                    "exceeds the limit of 65536 bytes");
    msgpack_sbuffer_init(&sb);
    assert_int_equal(proto_encode_error(&sb, 0, &e), 0);
    server_send(&sb);
    msgpack_sbuffer_destroy(&sb);
    drive(a);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(seen.calls[i], 1);
        assert_int_equal(seen.status[i], LLMGUARD_EINVAL);
        assert_non_null(strstr(seen.msg[i], "frame_too_large"));
    }
    llmguard_async_close(a);
}

/* The daemon goes away mid-flight: one answered, the others get
 * EUNAVAIL once each. */
static void
test_daemon_closes(void **state)
{
    llmguard_async_t *a = llmguard_async_open(srv.path);

    (void)state;
    submit_permits(a, 4, 5);
    drive(a);
    server_read(4);
    server_grant(1, "one");
    close(srv.cfd);
    srv.cfd = -1;
    drive(a);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(seen.calls[i], 1);
        assert_int_equal(seen.status[i], i == 1 ? 0 : LLMGUARD_EUNAVAIL);
    }
    assert_non_null(strstr(seen.msg[0], "closed the connection"));
    drive(a);                           /* nothing more, nothing twice */
    assert_int_equal(seen.calls[0], 1);
    llmguard_async_close(a);
    assert_int_equal(seen.calls[0], 1);
}

/* A request that gets no answer within the client timeout beyond its
 * own wait fails with EUNAVAIL; the loop is told when to look. */
static void
test_timeout(void **state)
{
    llmguard_async_t *a = llmguard_async_open(srv.path);
    struct pollfd pfd;
    int ms;

    (void)state;
    assert_int_equal(llmguard_async_set_timeout(a, -1), LLMGUARD_EINVAL);
    assert_int_equal(llmguard_async_set_timeout(a, 0.05), 0);
    submit_permits(a, 2, 0.05);
    ms = llmguard_async_timeout_ms(a);
    assert_true(ms > 50 && ms <= 100);
    drive(a);
    server_read(2);                     /* and never answer */
    for (int turns = 0; seen.calls[0] == 0 && turns < 100; turns++) {
        pfd.fd = llmguard_async_fd(a);
        pfd.events = POLLIN;
        poll(&pfd, 1, llmguard_async_timeout_ms(a));
        llmguard_async_handle(a, pfd.revents & POLLIN ? LLMGUARD_READABLE
                                                      : 0);
    }
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(seen.calls[i], 1);
        assert_int_equal(seen.status[i], LLMGUARD_EUNAVAIL);
        assert_non_null(strstr(seen.msg[i], "did not answer permit within "
                               "100 ms"));
    }
    assert_int_equal(llmguard_async_fd(a), -1);
    llmguard_async_close(a);
}

/* Nobody listens: the submit says so, and no callback ever runs. */
static void
test_no_daemon(void **state)
{
    char path[160];
    llmguard_async_t *a;
    struct llmguard_request req = { .timeout_s = 0 };

    (void)state;
    snprintf(path, sizeof(path), "%s/none", srv.dir);
    a = llmguard_async_open(path);
    assert_int_equal(llmguard_async_permit(a, &req, NULL, 0, on_permit, NULL),
                     LLMGUARD_EUNAVAIL);
    assert_non_null(strstr(llmguard_async_last_error(a), "no llmguardd"));
    assert_int_equal(llmguard_async_permit(a, &req, NULL, 0, NULL, NULL),
                     LLMGUARD_EINVAL);
    assert_int_equal(llmguard_async_pending(a), 0);
    assert_int_equal(llmguard_async_events(a), 0);
    llmguard_async_close(a);
    assert_int_equal(seen.calls[0], 0);
}

/* Closing with requests pending calls each callback once; closing from
 * inside a callback waits for it to return. */
static void
test_close_pending(void **state)
{
    llmguard_async_t *a = llmguard_async_open(srv.path);

    (void)state;
    submit_permits(a, 3, 5);
    llmguard_async_close(a);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(seen.calls[i], 1);
        assert_int_equal(seen.status[i], LLMGUARD_EUNAVAIL);
    }
    /* The daemon end of that connection, never used. */
    close(accept(srv.lfd, NULL, NULL));
    memset(&seen, 0, sizeof(seen));
    a = llmguard_async_open(srv.path);
    submit_permits(a, 3, 5);
    drive(a);
    server_read(3);
    seen.close_in_callback = true;
    server_grant(0, "zero");
    drive(a);                           /* frees a after the callback */
    assert_int_equal(seen.status[0], 0);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(seen.calls[i], 1);
    assert_int_equal(seen.status[2], LLMGUARD_EUNAVAIL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pipelined_out_of_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_id_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daemon_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_daemon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_pending, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
