/*
 * test_trace.c — unit tests of the OTLP span exporter (daemon/trace.c),
 * against a real HTTP collector on 127.0.0.1 (libevent's evhttp).
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "log.h"
#include "trace.h"

#define MAX_REQUESTS 32
#define HANG 1                  /* script entry: never answer */
#define WAIT_MS 5000            /* the longest any condition may take */

/* A fake OTLP collector: answers from a script, keeps what it got. */
struct collector {
    struct evhttp *http;
    uint16_t port;
    int script[8];              /* statuses of the first requests, then 200 */
    size_t nscript;
    json_t *bodies[MAX_REQUESTS];   /* parsed; NULL when not JSON */
    size_t nreq;
    char content_type[64];
    char uri[64];
};

/* Per test: a loop that wakes every 5 ms, a collector, an exporter URL. */
struct fixture {
    struct event_base *base;
    struct event *tick;
    struct collector c;
    char url[64];
};

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run f's loop until cond holds, WAIT_MS at most; fail if it never does. */
#define RUN_UNTIL(f, cond)                                              \
    do {                                                                \
        int64_t end_ = now_ms() + WAIT_MS;                              \
        while (!(cond) && now_ms() < end_)                              \
            event_base_loop((f)->base, EVLOOP_ONCE);                    \
        assert_true(cond);                                              \
    } while (0)

static void
run_for(struct fixture *f, int ms)
{
    int64_t end = now_ms() + ms;

    while (now_ms() < end)
        event_base_loop(f->base, EVLOOP_ONCE);
}

static void
collector_cb(struct evhttp_request *req, void *arg)
{
    struct collector *c = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req), *out;
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
                                        "Content-Type");
    size_t len = evbuffer_get_length(in);
    int status = c->nreq < c->nscript ? c->script[c->nreq] : 200;

    if (c->nreq == MAX_REQUESTS)    /* no cmocka assert: maybe a thread */
        return;
    c->bodies[c->nreq++] = json_loadb((const char *)evbuffer_pullup(in, -1),
                                      len, 0, NULL);
    snprintf(c->content_type, sizeof(c->content_type), "%s", ct ? ct : "");
    snprintf(c->uri, sizeof(c->uri), "%s", evhttp_request_get_uri(req));
    if (status == HANG)
        return;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    out = evbuffer_new();
    evbuffer_add_printf(out, "{}");
    evhttp_send_reply(req, status, "Scripted", out);
    evbuffer_free(out);
}

/* Listen on 127.0.0.1:port (0: any free port), recorded in c->port. */
static void
collector_start(struct collector *c, struct event_base *base, uint16_t port)
{
    struct evhttp_bound_socket *bs;
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);

    c->http = evhttp_new(base);
    assert_non_null(c->http);
    evhttp_set_gencb(c->http, collector_cb, c);
    bs = evhttp_bind_socket_with_handle(c->http, "127.0.0.1", port);
    assert_non_null(bs);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs),
                                 (struct sockaddr *)&sin, &slen), 0);
    c->port = ntohs(sin.sin_port);
}

/* Close the port: from now on connections are refused. */
static void
collector_stop(struct collector *c)
{
    evhttp_free(c->http);
    c->http = NULL;
}

static void
collector_clear(struct collector *c)
{
    if (c->http != NULL)
        collector_stop(c);
    for (size_t i = 0; i < c->nreq; i++)
        json_decref(c->bodies[i]);
}

static void
script(struct collector *c, size_t n, const int *statuses)
{
    assert_true(n <= sizeof(c->script) / sizeof(c->script[0]));
    memcpy(c->script, statuses, n * sizeof(*statuses));
    c->nscript = n;
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

static struct event *
tick_new(struct event_base *base)
{
    struct timeval tv = { 0, 5000 };
    struct event *ev = event_new(base, -1, EV_PERSIST, tick_cb, NULL);

    assert_non_null(ev);
    assert_int_equal(event_add(ev, &tv), 0);
    return ev;
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->tick = tick_new(f->base);
    collector_start(&f->c, f->base, 0);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u/v1/traces",
             (unsigned)f->c.port);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    collector_clear(&f->c);
    event_free(f->tick);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* Options for tests: quick timers, small bounds. */
static struct trace_options
test_options(void)
{
    struct trace_options o;

    trace_options_init(&o);
    o.batch_delay_ms = 10;
    o.initial_backoff_ms = 10;
    o.request_timeout_ms = 2000;
    o.shutdown_timeout_ms = 300;
    return o;
}

static struct trace_stats
stats(const struct trace_exporter *t)
{
    struct trace_stats st;

    trace_exporter_stats(t, &st);
    return st;
}

/* A span named name with fixed ids and times and no attributes. */
static struct trace_span
plain_span(const char *name)
{
    struct trace_span sp = { .name = name, .start_unix_ns = 1000,
                             .end_unix_ns = 2000 };

    memset(sp.trace_id, 0x11, sizeof(sp.trace_id));
    memset(sp.span_id, 0x22, sizeof(sp.span_id));
    return sp;
}

static void
submit_named(struct trace_exporter *t, const char *prefix, int i)
{
    char name[32];
    struct trace_span sp;

    snprintf(name, sizeof(name), "%s%d", prefix, i);
    sp = plain_span(name);
    assert_int_equal(trace_exporter_submit(t, &sp), 0);
}

/* The spans array of an ExportTraceServiceRequest. */
static json_t *
body_spans(json_t *body)
{
    json_t *spans = NULL;

    assert_non_null(body);
    assert_int_equal(json_unpack(body, "{s:[{s:[{s:o}]}]}", "resourceSpans",
                                 "scopeSpans", "spans", &spans), 0);
    assert_true(json_is_array(spans));
    return spans;
}

/* The names of the spans of body, comma-separated, into buf. */
static const char *
span_names(json_t *body, char *buf, size_t len)
{
    json_t *spans = body_spans(body), *sp;
    size_t i, off = 0;

    buf[0] = '\0';
    json_array_foreach(spans, i, sp) {
        const char *name = json_string_value(json_object_get(sp, "name"));

        assert_non_null(name);
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "",
                                name);
        assert_true(off < len);
    }
    return buf;
}

/* ---- the payload ------------------------------------------------------ */

static const char expected_body[] =
    "{\"resourceSpans\": [{"
    "  \"resource\": {\"attributes\": ["
    "    {\"key\": \"service.name\","
    "     \"value\": {\"stringValue\": \"svc-test\"}},"
    "    {\"key\": \"service.version\","
    "     \"value\": {\"stringValue\": \"1.2.3\"}}"
    "  ]},"
    "  \"scopeSpans\": [{"
    "    \"scope\": {\"name\": \"llmguardd\", \"version\": \"1.2.3\"},"
    "    \"spans\": ["
    "      {\"traceId\": \"4bf92f3577b34da6a3ce929d0e0e4736\","
    "       \"spanId\": \"00f067aa0ba902b7\","
    "       \"parentSpanId\": \"a1b2c3d4e5f60718\","
    "       \"name\": \"llm.call\", \"kind\": 1,"
    "       \"startTimeUnixNano\": \"1700000000123456789\","
    "       \"endTimeUnixNano\": \"1700000000128456789\","
    "       \"attributes\": ["
    "         {\"key\": \"llm.workflow_id\","
    "          \"value\": {\"stringValue\": \"wf-\\u00e9-\\ufffd\"}},"
    "         {\"key\": \"llm.tokens_estimate\","
    "          \"value\": {\"intValue\": \"-9007199254740993\"}},"
    "         {\"key\": \"llm.success\", \"value\": {\"boolValue\": true}},"
    "         {\"key\": \"llm.ratelimit_wait_ms\","
    "          \"value\": {\"doubleValue\": 12.5}},"
    "         {\"key\": \"llm.nan\", \"value\": {\"doubleValue\": \"NaN\"}},"
    "         {\"key\": \"llm.inf\","
    "          \"value\": {\"doubleValue\": \"-Infinity\"}}"
    "       ],"
    "       \"status\": {\"code\": 2, \"message\": \"quota exceeded\"}},"
    "      {\"traceId\": \"ffffffffffffffffffffffffffffffff\","
    "       \"spanId\": \"0000000000000001\","
    "       \"name\": \"second\", \"kind\": 1,"
    "       \"startTimeUnixNano\": \"0\", \"endTimeUnixNano\": \"1\","
    "       \"attributes\": [], \"status\": {\"code\": 1}}"
    "    ]"
    "  }]"
    "}]}";

/* Every attribute type, both statuses, parent or not: the exact OTLP JSON. */
static void
test_otlp_json(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    char name[] = "llm.call", key[] = "llm.workflow_id";
    char value[] = "wf-\xc3\xa9-\xff", msg[] = "quota exceeded";
    struct trace_attr attrs[] = {
        { key, TRACE_STR, { .s = value } },
        { "llm.tokens_estimate", TRACE_INT, { .i = -9007199254740993LL } },
        { "llm.success", TRACE_BOOL, { .b = true } },
        { "llm.ratelimit_wait_ms", TRACE_DOUBLE, { .d = 12.5 } },
        { "llm.nan", TRACE_DOUBLE, { .d = NAN } },
        { "llm.inf", TRACE_DOUBLE, { .d = -INFINITY } },
    };
    struct trace_span sp = {
        .trace_id = { 0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                      0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36 },
        .span_id = { 0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7 },
        .parent_span_id = { 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18 },
        .has_parent = true,
        .name = name,
        .start_unix_ns = 1700000000123456789LL,
        .end_unix_ns = 1700000000128456789LL,
        .error = true,
        .status_message = msg,
        .attrs = attrs,
        .nattrs = sizeof(attrs) / sizeof(attrs[0]),
    };
    struct trace_span sp2 = {
        .span_id = { 0, 0, 0, 0, 0, 0, 0, 1 },
        .name = "second",
        .start_unix_ns = -5,            /* before 1970: sent as 0 */
        .end_unix_ns = 1,
        .status_message = "ignored without error",
    };
    json_t *expected;

    memset(sp2.trace_id, 0xff, sizeof(sp2.trace_id));
    o.service_version = "1.2.3";
    t = trace_exporter_new(f->base, f->url, "svc-test", &o);
    assert_non_null(t);
    assert_int_equal(trace_exporter_submit(t, &sp), 0);
    assert_int_equal(trace_exporter_submit(t, &sp2), 0);
    /* A deep copy: the caller's strings may change at once. */
    memset(name, 'X', sizeof(name) - 1);
    memset(key, 'X', sizeof(key) - 1);
    memset(value, 'X', sizeof(value) - 1);
    memset(msg, 'X', sizeof(msg) - 1);
    assert_int_equal(f->c.nreq, 0);         /* submit does no I/O */

    RUN_UNTIL(f, stats(t).exported == 2);
    assert_int_equal(f->c.nreq, 1);
    assert_string_equal(f->c.content_type, "application/json");
    assert_string_equal(f->c.uri, "/v1/traces");
    expected = json_loads(expected_body, 0, NULL);
    assert_non_null(expected);
    assert_non_null(f->c.bodies[0]);
    if (!json_equal(f->c.bodies[0], expected)) {
        char *got = json_dumps(f->c.bodies[0], JSON_INDENT(1));

        print_error("body:\n%s\n", got);
        free(got);
        fail();
    }
    json_decref(expected);
    assert_int_equal(stats(t).queued, 2);
    assert_int_equal(stats(t).dropped, 0);
    assert_int_equal(stats(t).failed_requests, 0);
    trace_exporter_free(t);
}

/* ---- batching --------------------------------------------------------- */

/* max_batch spans go at once; fewer wait for the delay. */
static void
test_batch_by_size(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    char names[128];

    o.max_batch = 3;
    o.batch_delay_ms = 60000;
    t = trace_exporter_new(f->base, f->url, "svc", &o);
    assert_non_null(t);
    submit_named(t, "s", 0);
    submit_named(t, "s", 1);
    run_for(f, 50);
    assert_int_equal(f->c.nreq, 0);
    for (int i = 2; i < 6; i++)
        submit_named(t, "s", i);
    RUN_UNTIL(f, stats(t).exported == 6);
    assert_int_equal(f->c.nreq, 2);
    assert_string_equal(span_names(f->c.bodies[0], names, sizeof(names)),
                        "s0,s1,s2");
    assert_string_equal(span_names(f->c.bodies[1], names, sizeof(names)),
                        "s3,s4,s5");
    trace_exporter_free(t);
}

/* A lone span leaves batch_delay_ms after it was queued, with its peers. */
static void
test_batch_by_delay(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    char names[128];
    int64_t start;

    o.batch_delay_ms = 150;
    t = trace_exporter_new(f->base, f->url, "svc", &o);
    assert_non_null(t);
    start = now_ms();
    for (int i = 0; i < 3; i++)
        submit_named(t, "d", i);
    RUN_UNTIL(f, f->c.nreq == 1);
    assert_true(now_ms() - start >= 140);
    RUN_UNTIL(f, stats(t).exported == 3);
    assert_string_equal(span_names(f->c.bodies[0], names, sizeof(names)),
                        "d0,d1,d2");
    trace_exporter_free(t);
}

/* ---- failures --------------------------------------------------------- */

/* 503 and 429 are retried with the same body until a 200. */
static void
test_retry_then_export(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    struct trace_span sp = plain_span("r");
    struct trace_stats st;

    script(&f->c, 2, (const int[]){ 503, 429 });
    t = trace_exporter_new(f->base, f->url, "svc", &o);
    assert_non_null(t);
    assert_int_equal(trace_exporter_submit(t, &sp), 0);
    RUN_UNTIL(f, stats(t).exported == 1);
    st = stats(t);
    assert_int_equal(f->c.nreq, 3);
    assert_true(json_equal(f->c.bodies[0], f->c.bodies[1]));
    assert_true(json_equal(f->c.bodies[0], f->c.bodies[2]));
    assert_int_equal(st.failed_requests, 2);
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.dropped, 0);
    trace_exporter_free(t);
}

/* 500 and 400 must not be retried (OTLP spec): the batch is dropped. */
static void
test_not_retryable_dropped(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    struct trace_stats st;

    script(&f->c, 2, (const int[]){ 500, 400 });
    t = trace_exporter_new(f->base, f->url, "svc", &o);
    assert_non_null(t);
    submit_named(t, "a", 0);
    RUN_UNTIL(f, stats(t).dropped == 1);
    submit_named(t, "a", 1);
    RUN_UNTIL(f, stats(t).dropped == 2);
    submit_named(t, "a", 2);
    RUN_UNTIL(f, stats(t).exported == 1);
    st = stats(t);
    assert_int_equal(f->c.nreq, 3);
    assert_int_equal(st.failed_requests, 2);
    assert_int_equal(st.retries, 0);
    trace_exporter_free(t);
}

/* A collector that never answers: the request times out and is retried. */
static void
test_timeout_retried(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    struct trace_stats st;

    script(&f->c, 1, (const int[]){ HANG });
    o.request_timeout_ms = 200;
    t = trace_exporter_new(f->base, f->url, "svc", &o);
    assert_non_null(t);
    submit_named(t, "h", 0);
    RUN_UNTIL(f, stats(t).exported == 1);
    st = stats(t);
    assert_int_equal(f->c.nreq, 2);
    assert_int_equal(st.failed_requests, 1);
    assert_int_equal(st.retries, 1);
    trace_exporter_free(t);
}

/* Collector down: submit stays immediate, the overflow is counted; then
 * the collector comes up and everything queued goes, in order. */
static void
test_collector_down_then_up(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    struct trace_span sp = plain_span("overflow");
    struct trace_stats st;
    char names[128];
    uint16_t port = f->c.port;
    int64_t start;

    collector_stop(&f->c);
    o.max_queue = 4;
    o.max_batch = 2;
    o.max_retries = 1000;
    t = trace_exporter_new(f->base, f->url, "svc", &o);
    assert_non_null(t);
    for (int i = 0; i < 4; i++)
        submit_named(t, "q", i);
    assert_int_equal(trace_exporter_submit(t, &sp), -1);
    assert_int_equal(stats(t).dropped, 1);

    /* q0,q1 fail and back off; q2,q3 wait; two more fit. */
    RUN_UNTIL(f, stats(t).failed_requests >= 2);
    submit_named(t, "q", 4);
    submit_named(t, "q", 5);
    start = now_ms();
    for (int i = 0; i < 10000; i++)
        assert_int_equal(trace_exporter_submit(t, &sp), -1);
    assert_true(now_ms() - start < 500);
    st = stats(t);
    assert_int_equal(st.dropped, 10001);
    assert_int_equal(st.queued, 6);
    assert_int_equal(st.exported, 0);

    collector_start(&f->c, f->base, port);
    RUN_UNTIL(f, stats(t).exported == 6);
    assert_int_equal(f->c.nreq, 3);
    assert_string_equal(span_names(f->c.bodies[0], names, sizeof(names)),
                        "q0,q1");
    assert_string_equal(span_names(f->c.bodies[1], names, sizeof(names)),
                        "q2,q3");
    assert_string_equal(span_names(f->c.bodies[2], names, sizeof(names)),
                        "q4,q5");
    st = stats(t);
    assert_int_equal(st.dropped, 10001);
    assert_true(st.retries >= 1);
    assert_int_equal(st.retries, st.failed_requests);
    trace_exporter_free(t);
}

/* After max_retries retries the batch is dropped and counted. */
static void
test_retries_exhausted(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    struct trace_stats st;

    collector_stop(&f->c);
    o.max_retries = 2;
    o.max_batch = 3;
    t = trace_exporter_new(f->base, f->url, "svc", &o);
    assert_non_null(t);
    for (int i = 0; i < 3; i++)
        submit_named(t, "x", i);
    RUN_UNTIL(f, stats(t).dropped == 3);
    st = stats(t);
    assert_int_equal(st.failed_requests, 3);
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.exported, 0);
    trace_exporter_free(t);
}

/* ---- shutdown --------------------------------------------------------- */

/* A collector on its own loop in a thread, for blocking exports. */
struct thread_collector {
    struct collector c;
    struct event_base *base;
    struct event *tick;
    atomic_bool stop;
    pthread_t thread;
};

static void *
collector_main(void *arg)
{
    struct thread_collector *tc = arg;

    while (!atomic_load(&tc->stop))
        event_base_loop(tc->base, EVLOOP_ONCE);
    return NULL;
}

static void
thread_collector_start(struct thread_collector *tc, size_t n,
                       const int *statuses)
{
    memset(tc, 0, sizeof(*tc));
    tc->base = event_base_new();
    assert_non_null(tc->base);
    tc->tick = tick_new(tc->base);
    script(&tc->c, n, statuses);
    collector_start(&tc->c, tc->base, 0);
    atomic_init(&tc->stop, false);
    assert_int_equal(pthread_create(&tc->thread, NULL, collector_main, tc),
                     0);
}

static void
thread_collector_join(struct thread_collector *tc)
{
    atomic_store(&tc->stop, true);
    assert_int_equal(pthread_join(tc->thread, NULL), 0);
}

static void
thread_collector_free(struct thread_collector *tc)
{
    collector_clear(&tc->c);
    event_free(tc->tick);
    event_base_free(tc->base);
}

/* free() sends the body backing off, then the queue, then returns. */
static void
test_free_flushes(void **state)
{
    struct fixture *f = *state;
    struct thread_collector tc;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    char url[64], names[128];
    int64_t start;

    thread_collector_start(&tc, 1, (const int[]){ 503 });
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/traces",
             (unsigned)tc.c.port);
    o.max_batch = 2;
    o.initial_backoff_ms = 60000;
    o.batch_delay_ms = 60000;
    o.shutdown_timeout_ms = 3000;
    t = trace_exporter_new(f->base, url, "svc", &o);
    assert_non_null(t);
    submit_named(t, "f", 0);
    submit_named(t, "f", 1);
    RUN_UNTIL(f, stats(t).failed_requests == 1);    /* backing off */
    submit_named(t, "f", 2);
    start = now_ms();
    trace_exporter_free(t);
    assert_true(now_ms() - start < 3000);
    thread_collector_join(&tc);
    assert_int_equal(tc.c.nreq, 3);
    assert_string_equal(span_names(tc.c.bodies[1], names, sizeof(names)),
                        "f0,f1");
    assert_string_equal(span_names(tc.c.bodies[2], names, sizeof(names)),
                        "f2");
    thread_collector_free(&tc);
}

/* A collector that accepts but never answers cannot hold free() up. */
static void
test_free_bounded(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();
    struct trace_exporter *t;
    int64_t start, took;

    o.batch_delay_ms = 60000;
    o.shutdown_timeout_ms = 300;
    t = trace_exporter_new(f->base, f->url, "svc", &o);
    assert_non_null(t);
    submit_named(t, "b", 0);
    start = now_ms();
    trace_exporter_free(t);     /* f's loop does not run: no answer */
    took = now_ms() - start;
    assert_true(took >= 250);
    assert_true(took < 2000);
}

static void
test_new_rejects(void **state)
{
    struct fixture *f = *state;
    struct trace_options o = test_options();

    assert_null(trace_exporter_new(f->base, "", "svc", NULL));
    assert_null(trace_exporter_new(f->base, f->url, NULL, NULL));
    o.max_queue = 0;
    assert_null(trace_exporter_new(f->base, f->url, "svc", &o));
    o = test_options();
    o.request_timeout_ms = 0;
    assert_null(trace_exporter_new(f->base, f->url, "svc", &o));
    trace_exporter_free(NULL);
}

/* ---- traceparent and ids ------------------------------------------------ */

static int
parse(const char *s, uint8_t trace_id[16], uint8_t parent[8])
{
    return trace_parse_traceparent(s, strlen(s), trace_id, parent);
}

static void
test_traceparent(void **state)
{
    static const uint8_t want_trace[16] = {
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
        0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
    };
    static const uint8_t want_parent[8] = {
        0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7,
    };
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* 54 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", /* 56 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* case */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };
    uint8_t trace_id[16], parent[8];

    (void)state;
    assert_int_equal(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-"
                           "00f067aa0ba902b7-01", trace_id, parent), 0);
    assert_memory_equal(trace_id, want_trace, 16);
    assert_memory_equal(parent, want_parent, 8);
    assert_int_equal(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-"
                           "00f067aa0ba902b7-00", trace_id, parent), 0);
    /* A future version: same prefix, maybe more fields after a dash. */
    memset(trace_id, 0, sizeof(trace_id));
    assert_int_equal(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-"
                           "00f067aa0ba902b7-01", trace_id, parent), 0);
    assert_memory_equal(trace_id, want_trace, 16);
    assert_int_equal(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-"
                           "00f067aa0ba902b7-01-what-the-future-will-be",
                           trace_id, parent), 0);
    assert_memory_equal(parent, want_parent, 8);
    /* len, not the NUL, ends the value. */
    assert_int_equal(trace_parse_traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-garbage",
        TRACE_TRACEPARENT_LEN, trace_id, parent), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], trace_id, parent) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

static void
test_random_id(void **state)
{
    static const uint8_t zero[16];
    uint8_t a[16], b[16], one;
    int ones_nonzero = 0;

    (void)state;
    for (int i = 0; i < 1000; i++) {
        trace_random_id(a, sizeof(a));
        trace_random_id(b, 8);
        assert_memory_not_equal(a, zero, 16);
        assert_memory_not_equal(b, zero, 8);
        assert_memory_not_equal(a, b, 8);
        trace_random_id(&one, 1);
        ones_nonzero += one != 0;
    }
    assert_int_equal(ones_nonzero, 1000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_otlp_json),
        T(test_batch_by_size),
        T(test_batch_by_delay),
        T(test_retry_then_export),
        T(test_not_retryable_dropped),
        T(test_timeout_retried),
        T(test_collector_down_then_up),
        T(test_retries_exhausted),
        T(test_free_flushes),
        T(test_free_bounded),
        T(test_new_rejects),
        cmocka_unit_test(test_traceparent),
        cmocka_unit_test(test_random_id),
#undef T
    };

    signal(SIGPIPE, SIG_IGN);
    unsetenv("http_proxy");     /* the collector is on 127.0.0.1 */
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    if (getenv("TRACE_TEST_VERBOSE") == NULL)
        log_set_level(LOG_LVL_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
