/* trace.c - OTLP/HTTP JSON span export on the event loop (llmguardd(8), "Traces"). */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "log.h"
#include "trace.h"

#define SPAN_KIND_INTERNAL 1
#define STATUS_CODE_OK 1
#define STATUS_CODE_ERROR 2

/* A queued span: one allocation, its attributes and strings packed after. */
struct qspan {
    TAILQ_ENTRY(qspan) entry;
    struct trace_span span;         /* pointers into this allocation */
    struct trace_attr attrs[];
};

/* A socket libcurl asked us to watch. */
struct sock {
    TAILQ_ENTRY(sock) entry;
    struct trace_exporter *t;
    struct event *ev;
};

enum state {
    IDLE,           /* no body; wake, when armed, takes the next batch */
    SENDING,        /* body in flight, easy in multi */
    BACKOFF,        /* body failed; wake, armed, sends it again */
};

struct trace_exporter {
    struct event_base *base;
    struct trace_options opt;
    char *url, *service_name, *service_version;
    bool curl_inited;
    CURLM *multi;
    CURL *easy;                     /* the one request, reused */
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
    struct event *curl_timer;       /* libcurl's timeout */
    struct event *wake;             /* batch delay, send now or backoff */
    TAILQ_HEAD(, qspan) queue;
    size_t nqueued;
    TAILQ_HEAD(, sock) socks;
    enum state state;
    char *body;                     /* NULL when IDLE */
    size_t body_len, body_spans;
    unsigned attempt;               /* retries of body so far */
    bool failing;                   /* a failure logged at warn */
    bool dropping;                  /* "queue full" logged */
    struct trace_stats st;
};

void
trace_options_init(struct trace_options *opt)
{
    *opt = (struct trace_options){
        .max_queue = TRACE_DEFAULT_MAX_QUEUE,
        .max_batch = TRACE_DEFAULT_MAX_BATCH,
        .batch_delay_ms = TRACE_DEFAULT_BATCH_DELAY_MS,
        .request_timeout_ms = TRACE_DEFAULT_REQUEST_TIMEOUT_MS,
        .max_retries = TRACE_DEFAULT_MAX_RETRIES,
        .initial_backoff_ms = TRACE_DEFAULT_INITIAL_BACKOFF_MS,
        .shutdown_timeout_ms = TRACE_DEFAULT_SHUTDOWN_TIMEOUT_MS,
        .service_version = NULL,
    };
}

/* ---- ids and traceparent ---------------------------------------------- */

static bool
all_zero(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != 0)
            return false;
    return true;
}

/* Fill buf from getrandom(2), or /dev/urandom before the pool is ready. */
static void
fill_random(uint8_t *buf, size_t len)
{
    size_t got = 0;
    ssize_t n;
    int fd;

    while (got < len) {
        n = getrandom(buf + got, len - got, GRND_NONBLOCK);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno != EINTR)
            break;
    }
    if (got == len)
        return;
    if ((fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)) != -1) {
        while (got < len) {
            n = read(fd, buf + got, len - got);
            if (n > 0)
                got += (size_t)n;
            else if (n == 0 || errno != EINTR)
                break;
        }
        close(fd);
    }
    if (got < len) {
        /* No kernel randomness at all: ids must still differ. */
        struct timespec ts;
        uint64_t x;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = ((uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec) *
            0x9e3779b97f4a7c15u ^ (uintptr_t)buf;
        for (; got < len; got++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[got] = (uint8_t)x;
        }
    }
}

/*
 * xoshiro256** (Blackman and Vigna), seeded once per thread from the
 * kernel: two getrandom(2) calls per call cost as much as the rest of a
 * permit.  Trace and span ids want to be unique and unpredictable enough
 * to spread, not secret.
 */
static __thread uint64_t rng_state[4];
static __thread bool rng_seeded;

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
rng_next(void)
{
    uint64_t *s = rng_state, result, t;

    if (!rng_seeded) {
        do
            fill_random((uint8_t *)rng_state, sizeof(rng_state));
        while (all_zero((const uint8_t *)rng_state, sizeof(rng_state)));
        rng_seeded = true;
    }
    result = rotl(s[1] * 5, 7) * 9;
    t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void
trace_random_id(uint8_t *buf, size_t len)
{
    assert(len > 0);
    do {
        for (size_t i = 0; i < len; i += 8) {
            uint64_t x = rng_next();
            memcpy(buf + i, &x, len - i < 8 ? len - i : 8);
        }
    } while (all_zero(buf, len));
}

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;      /* W3C trace context: lowercase only */
}

/* Decode 2 * len lowercase hex digits at s into out; -1 on a bad digit. */
static int
hex_decode(const char *s, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int
trace_parse_traceparent(const char *s, size_t len, uint8_t trace_id[16],
                        uint8_t parent_span_id[8])
{
    uint8_t version, flags;

    if (len < TRACE_TRACEPARENT_LEN)
        return -1;
    if (hex_decode(s, &version, 1) != 0 || version == 0xff)
        return -1;
    if (version == 0 && len != TRACE_TRACEPARENT_LEN)
        return -1;
    if (len > TRACE_TRACEPARENT_LEN && s[TRACE_TRACEPARENT_LEN] != '-')
        return -1;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -1;
    if (hex_decode(s + 3, trace_id, 16) != 0 ||
        hex_decode(s + 36, parent_span_id, 8) != 0 ||
        hex_decode(s + 53, &flags, 1) != 0)
        return -1;
    if (all_zero(trace_id, 16) || all_zero(parent_span_id, 8))
        return -1;
    return 0;
}

/* ---- the queue ---------------------------------------------------------- */

/* Copy s, NUL included, to *p and advance *p; NULL stays NULL. */
static const char *
pack_str(char **p, const char *s)
{
    char *dst = *p;
    size_t n;

    if (s == NULL)
        return NULL;
    n = strlen(s) + 1;
    memcpy(dst, s, n);
    *p += n;
    return dst;
}

static size_t
str_size(const char *s)
{
    return s == NULL ? 0 : strlen(s) + 1;
}

/* A deep copy of sp in one allocation; NULL when out of memory. */
static struct qspan *
span_copy(const struct trace_span *sp)
{
    size_t strings = str_size(sp->name) + str_size(sp->status_message);
    struct qspan *q;
    char *p;

    for (size_t i = 0; i < sp->nattrs; i++) {
        strings += str_size(sp->attrs[i].key);
        if (sp->attrs[i].type == TRACE_STR)
            strings += str_size(sp->attrs[i].v.s);
    }
    q = malloc(sizeof(*q) + sp->nattrs * sizeof(q->attrs[0]) + strings);
    if (q == NULL)
        return NULL;
    p = (char *)(q->attrs + sp->nattrs);
    q->span = *sp;
    q->span.name = pack_str(&p, sp->name);
    q->span.status_message = pack_str(&p, sp->status_message);
    q->span.attrs = q->attrs;
    for (size_t i = 0; i < sp->nattrs; i++) {
        q->attrs[i] = sp->attrs[i];
        q->attrs[i].key = pack_str(&p, sp->attrs[i].key);
        if (sp->attrs[i].type == TRACE_STR)
            q->attrs[i].v.s = pack_str(&p, sp->attrs[i].v.s);
    }
    return q;
}

/* ---- OTLP JSON -------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
    uint32_t cp, min;
    size_t len;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2, cp = p[0] & 0x1f, min = 0x80;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, cp = p[0] & 0x0f, min = 0x800;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, cp = p[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string of s, each byte that is not valid UTF-8 as U+FFFD. */
static json_t *
json_text(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i, k, out = 0;
    char *buf;
    json_t *j;

    for (i = 0; i < n && (k = utf8_len(u + i, n - i)) != 0; i += k)
        ;
    if (i == n)
        return json_stringn(s, n);
    if ((buf = malloc(3 * n)) == NULL)
        return NULL;
    for (i = 0; i < n; i += k) {
        if ((k = utf8_len(u + i, n - i)) == 0) {
            memcpy(buf + out, "\xef\xbf\xbd", 3);
            out += 3;
            k = 1;
        } else {
            memcpy(buf + out, s + i, k);
            out += k;
        }
    }
    j = json_stringn(buf, out);
    free(buf);
    return j;
}

/* Lowercase hex of len bytes. */
static json_t *
json_hex(const uint8_t *id, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char buf[2 * 16];

    assert(len <= 16);
    for (size_t i = 0; i < len; i++) {
        buf[2 * i] = digits[id[i] >> 4];
        buf[2 * i + 1] = digits[id[i] & 0xf];
    }
    return json_stringn(buf, 2 * len);
}

/* A fixed64 time as protobuf's JSON mapping has it: a decimal string. */
static json_t *
json_time(int64_t unix_ns)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRIu64,
             unix_ns < 0 ? (uint64_t)0 : (uint64_t)unix_ns);
    return json_string(buf);
}

/* A double as protobuf's JSON mapping has it: a number, or NaN/Infinity. */
static json_t *
json_double(double d)
{
    if (isnan(d))
        return json_string("NaN");
    if (isinf(d))
        return json_string(d > 0 ? "Infinity" : "-Infinity");
    return json_real(d);
}

/* An OTLP KeyValue. */
static json_t *
attr_json(const struct trace_attr *a)
{
    char buf[24];
    json_t *v = NULL;

    switch (a->type) {
    case TRACE_STR:
        v = json_pack("{s:o}", "stringValue",
                      json_text(a->v.s == NULL ? "" : a->v.s));
        break;
    case TRACE_INT:
        snprintf(buf, sizeof(buf), "%" PRId64, a->v.i);
        v = json_pack("{s:s}", "intValue", buf);
        break;
    case TRACE_BOOL:
        v = json_pack("{s:b}", "boolValue", a->v.b);
        break;
    case TRACE_DOUBLE:
        v = json_pack("{s:o}", "doubleValue", json_double(a->v.d));
        break;
    }
    return json_pack("{s:o, s:o}", "key", json_text(a->key), "value", v);
}

/* An OTLP Span. */
static json_t *
span_json(const struct trace_span *sp)
{
    json_t *attrs, *status, *o;

    if ((attrs = json_array()) == NULL)
        return NULL;
    for (size_t i = 0; i < sp->nattrs; i++) {
        if (json_array_append_new(attrs, attr_json(&sp->attrs[i])) != 0) {
            json_decref(attrs);
            return NULL;
        }
    }
    if (!sp->error)
        status = json_pack("{s:i}", "code", STATUS_CODE_OK);
    else if (sp->status_message == NULL)
        status = json_pack("{s:i}", "code", STATUS_CODE_ERROR);
    else
        status = json_pack("{s:i, s:o}", "code", STATUS_CODE_ERROR,
                           "message", json_text(sp->status_message));
    o = json_pack("{s:o, s:o, s:o, s:i, s:o, s:o, s:o, s:o}",
                  "traceId", json_hex(sp->trace_id, 16),
                  "spanId", json_hex(sp->span_id, 8),
                  "name", json_text(sp->name),
                  "kind", SPAN_KIND_INTERNAL,
                  "startTimeUnixNano", json_time(sp->start_unix_ns),
                  "endTimeUnixNano", json_time(sp->end_unix_ns),
                  "attributes", attrs,
                  "status", status);
    if (o != NULL && sp->has_parent &&
        json_object_set_new(o, "parentSpanId",
                            json_hex(sp->parent_span_id, 8)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* An ExportTraceServiceRequest around spans (stolen). */
static json_t *
request_json(const struct trace_exporter *t, json_t *spans)
{
    json_t *res_attrs, *version = NULL;

    res_attrs = json_pack("[{s:s, s:{s:o}}]", "key", "service.name", "value",
                          "stringValue", json_text(t->service_name));
    if (res_attrs != NULL && t->service_version != NULL) {
        version = json_text(t->service_version);
        if (json_array_append_new(res_attrs,
                json_pack("{s:s, s:{s:O}}", "key", "service.version",
                          "value", "stringValue", version)) != 0) {
            json_decref(res_attrs);
            res_attrs = NULL;
        }
    }
    return json_pack("{s:[{s:{s:o}, s:[{s:{s:s, s:o*}, s:o}]}]}",
                     "resourceSpans",
                     "resource", "attributes", res_attrs,
                     "scopeSpans",
                     "scope", "name", TRACE_SCOPE_NAME, "version", version,
                     "spans", spans);
}

/*
 * Move the next batch out of the queue into t->body.  0, or -1 when it
 * could not be serialised: its spans are then dropped and counted.
 */
static int
batch_take(struct trace_exporter *t)
{
    size_t n = t->nqueued < t->opt.max_batch ? t->nqueued : t->opt.max_batch;
    json_t *spans = json_array(), *req;
    struct qspan *q;
    bool ok = spans != NULL;

    assert(t->state == IDLE && t->body == NULL && n > 0);
    for (size_t i = 0; i < n; i++) {
        q = TAILQ_FIRST(&t->queue);
        TAILQ_REMOVE(&t->queue, q, entry);
        t->nqueued--;
        if (ok && json_array_append_new(spans, span_json(&q->span)) != 0)
            ok = false;
        free(q);
    }
    t->dropping = false;
    if (ok) {
        req = request_json(t, spans);
        t->body = req == NULL ? NULL : json_dumps(req, JSON_COMPACT);
        json_decref(req);
    } else {
        json_decref(spans);
    }
    if (t->body == NULL) {
        log_error("%s: cannot serialise %zu spans, dropped", __func__, n);
        t->st.dropped += n;
        return -1;
    }
    t->body_len = strlen(t->body);
    t->body_spans = n;
    t->attempt = 0;
    return 0;
}

/* ---- the request state machine ------------------------------------------ */

static void
wake_in(struct trace_exporter *t, uint64_t ms)
{
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000),
                          .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

    evtimer_add(t->wake, &tv);
}

/* When IDLE: arm wake for what the queue holds (full batch: at once). */
static void
schedule(struct trace_exporter *t)
{
    assert(t->state == IDLE);
    if (t->nqueued >= t->opt.max_batch)
        wake_in(t, 0);
    else if (t->nqueued > 0)
        wake_in(t, t->opt.batch_delay_ms);
}

static void
body_free(struct trace_exporter *t)
{
    free(t->body);
    t->body = NULL;
    t->body_len = t->body_spans = 0;
    t->state = IDLE;
}

/* Log a failure at warn the first time since the last success. */
static void
log_failure(struct trace_exporter *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
log_failure(struct trace_exporter *t, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (t->failing) {
        log_debug("trace export: %s", msg);
    } else {
        log_warn("trace export: %s", msg);
        t->failing = true;
    }
}

/* Post t->body; a request that cannot start drops the batch. */
static void
send_body(struct trace_exporter *t)
{
    CURLMcode rc;

    assert(t->body != NULL && t->state != SENDING);
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)t->body_len);
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body);
    if ((rc = curl_multi_add_handle(t->multi, t->easy)) != CURLM_OK) {
        log_error("%s: %s; %zu spans dropped", __func__,
                  curl_multi_strerror(rc), t->body_spans);
        t->st.dropped += t->body_spans;
        body_free(t);
        schedule(t);
        return;
    }
    t->state = SENDING;
}

/* The delay before retry number t->attempt + 1, jittered, in ms. */
static uint64_t
backoff_ms(const struct trace_exporter *t, curl_off_t retry_after_s)
{
    uint64_t ms = t->opt.initial_backoff_ms;
    uint32_t r;

    for (unsigned i = 0; i < t->attempt && ms < TRACE_MAX_BACKOFF_MS; i++)
        ms *= 2;
    if (ms > TRACE_MAX_BACKOFF_MS)
        ms = TRACE_MAX_BACKOFF_MS;
    trace_random_id((uint8_t *)&r, sizeof(r));
    ms -= r % (ms / 2 + 1);
    if (retry_after_s > 0) {
        uint64_t ra_ms = retry_after_s >= TRACE_MAX_BACKOFF_MS / 1000
                             ? TRACE_MAX_BACKOFF_MS
                             : (uint64_t)retry_after_s * 1000;
        if (ra_ms > ms)
            ms = ra_ms;
    }
    return ms;
}

/* Worth another try: a transport failure or a status the spec lists. */
static bool
retryable(CURLcode res, long status)
{
    if (res == CURLE_URL_MALFORMAT || res == CURLE_UNSUPPORTED_PROTOCOL)
        return false;
    return res != CURLE_OK || status == 429 || status == 502 ||
           status == 503 || status == 504;
}

/* The request of t->body finished with res (and HTTP status). */
static void
request_done(struct trace_exporter *t, CURLcode res)
{
    long status = 0;
    curl_off_t retry_after_s = 0;
    char why[CURL_ERROR_SIZE + 32];
    uint64_t delay_ms;

    assert(t->state == SENDING);
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry_after_s);
    curl_multi_remove_handle(t->multi, t->easy);
    t->state = IDLE;
    if (res == CURLE_OK && status >= 200 && status <= 299) {
        t->st.exported += t->body_spans;
        if (t->failing)
            log_info("trace export: %s accepts spans again", t->url);
        t->failing = false;
        body_free(t);
        schedule(t);
        return;
    }
    t->st.failed_requests++;
    if (res != CURLE_OK)
        snprintf(why, sizeof(why), "%s",
                 t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror(res));
    else
        snprintf(why, sizeof(why), "HTTP status %ld", status);
    if (retryable(res, status) && t->attempt < t->opt.max_retries) {
        delay_ms = backoff_ms(t, retry_after_s);
        t->attempt++;
        log_failure(t, "POST %s: %s; retry %u of %u in %" PRIu64 " ms",
                    t->url, why, t->attempt, t->opt.max_retries, delay_ms);
        t->state = BACKOFF;
        wake_in(t, delay_ms);
        return;
    }
    log_failure(t, "POST %s: %s; %zu spans dropped%s", t->url, why,
                t->body_spans,
                retryable(res, status) ? " after all retries" : "");
    t->st.dropped += t->body_spans;
    body_free(t);
    schedule(t);
}

/* Batch delay over, full batch, or backoff over. */
static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct trace_exporter *t = arg;

    (void)fd, (void)what;
    switch (t->state) {
    case IDLE:
        if (t->nqueued == 0)
            break;
        if (batch_take(t) == 0)
            send_body(t);
        else
            schedule(t);
        break;
    case BACKOFF:
        t->st.retries++;
        send_body(t);
        break;
    case SENDING:
        break;
    }
}

/* ---- libcurl on libevent (curl's docs/examples/multi-event.c) ---------- */

/* Hand finished transfers to request_done(). */
static void
check_done(struct trace_exporter *t)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(t->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        assert(msg->easy_handle == t->easy);
        request_done(t, msg->data.result);
    }
}

static void
sock_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct trace_exporter *t = ((struct sock *)arg)->t;  /* sock may go */
    int flags = 0, running;

    if (what & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (what & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(t->multi, fd, flags, &running);
    check_done(t);
}

static void
curl_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct trace_exporter *t = arg;
    int running;

    (void)fd, (void)what;
    curl_multi_socket_action(t->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(t);
}

static void
sock_free(struct trace_exporter *t, struct sock *sk)
{
    TAILQ_REMOVE(&t->socks, sk, entry);
    event_free(sk->ev);
    free(sk);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl waits for. */
static int
sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct trace_exporter *t = userp;
    struct sock *sk = socketp;
    short kind = EV_PERSIST;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL)
            sock_free(t, sk);       /* curl forgets fd and sk with it */
        return 0;
    }
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;
    if (sk == NULL) {
        if ((sk = calloc(1, sizeof(*sk))) == NULL)
            return -1;
        sk->t = t;
        if ((sk->ev = event_new(t->base, fd, kind, sock_event_cb, sk)) ==
            NULL) {
            free(sk);
            return -1;
        }
        TAILQ_INSERT_TAIL(&t->socks, sk, entry);
        curl_multi_assign(t->multi, fd, sk);
    } else {
        event_del(sk->ev);
        event_assign(sk->ev, t->base, fd, kind, sock_event_cb, sk);
    }
    return event_add(sk->ev, NULL);
}

/* CURLMOPT_TIMERFUNCTION: call curl back after timeout_ms (-1: never). */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct trace_exporter *t = userp;
    struct timeval tv;

    (void)multi;
    if (timeout_ms < 0)
        return evtimer_del(t->curl_timer);
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    return evtimer_add(t->curl_timer, &tv);
}

static size_t
discard_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    (void)ptr, (void)userdata;
    return size * nmemb;
}

/* ---- life cycle ------------------------------------------------------- */

static int
easy_setup(struct trace_exporter *t)
{
    CURL *e = t->easy;

    if (curl_easy_setopt(e, CURLOPT_URL, t->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, TRACE_SCOPE_NAME) !=
            CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                         (long)t->opt.request_timeout_ms) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb) != CURLE_OK)
        return -1;
    return 0;
}

static void
destroy(struct trace_exporter *t)
{
    struct qspan *q;
    struct sock *sk;

    if (t->easy != NULL) {
        if (t->state == SENDING)
            curl_multi_remove_handle(t->multi, t->easy);
        curl_easy_cleanup(t->easy);
    }
    if (t->multi != NULL)
        curl_multi_cleanup(t->multi);   /* may call sock_cb, timer_cb */
    while ((sk = TAILQ_FIRST(&t->socks)) != NULL)
        sock_free(t, sk);
    if (t->wake != NULL)
        event_free(t->wake);
    if (t->curl_timer != NULL)
        event_free(t->curl_timer);
    curl_slist_free_all(t->headers);
    while ((q = TAILQ_FIRST(&t->queue)) != NULL) {
        TAILQ_REMOVE(&t->queue, q, entry);
        free(q);
    }
    free(t->body);
    free(t->url);
    free(t->service_name);
    free(t->service_version);
    if (t->curl_inited)
        curl_global_cleanup();
    free(t);
}

struct trace_exporter *
trace_exporter_new(struct event_base *base, const char *url,
                   const char *service_name, const struct trace_options *opt)
{
    struct trace_options defaults;
    struct trace_exporter *t;
    struct curl_slist *h;

    if (opt == NULL) {
        trace_options_init(&defaults);
        opt = &defaults;
    }
    if (base == NULL || url == NULL || url[0] == '\0' ||
        service_name == NULL || opt->max_queue == 0 ||
        opt->max_batch == 0 || opt->initial_backoff_ms == 0 ||
        opt->request_timeout_ms == 0) {
        log_error("%s: invalid arguments", __func__);
        return NULL;
    }
    if ((t = calloc(1, sizeof(*t))) == NULL)
        goto fail;
    t->base = base;
    t->opt = *opt;
    t->opt.service_version = NULL;
    if (t->opt.max_batch > t->opt.max_queue)
        t->opt.max_batch = t->opt.max_queue;
    TAILQ_INIT(&t->queue);
    TAILQ_INIT(&t->socks);
    t->state = IDLE;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto fail;
    t->curl_inited = true;
    if ((t->url = strdup(url)) == NULL ||
        (t->service_name = strdup(service_name)) == NULL ||
        (opt->service_version != NULL &&
         (t->service_version = strdup(opt->service_version)) == NULL))
        goto fail;
    if ((t->wake = evtimer_new(base, wake_cb, t)) == NULL ||
        (t->curl_timer = evtimer_new(base, curl_timer_cb, t)) == NULL)
        goto fail;
    if ((h = curl_slist_append(NULL, "Content-Type: application/json")) ==
        NULL)
        goto fail;
    t->headers = h;
    /* No "Expect: 100-continue" round trip for large bodies. */
    if ((h = curl_slist_append(t->headers, "Expect:")) == NULL)
        goto fail;
    t->headers = h;
    if ((t->multi = curl_multi_init()) == NULL ||
        (t->easy = curl_easy_init()) == NULL || easy_setup(t) != 0)
        goto fail;
    if (curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, sock_cb) !=
            CURLM_OK ||
        curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, t) != CURLM_OK ||
        curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, timer_cb) !=
            CURLM_OK ||
        curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, t) != CURLM_OK)
        goto fail;
    return t;
fail:
    log_error("%s: cannot set up the exporter for %s", __func__, url);
    if (t != NULL)
        destroy(t);
    return NULL;
}

static int64_t
monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* At shutdown: post what is held, blocking, until deadline_ms. */
static void
flush_blocking(struct trace_exporter *t, int64_t deadline_ms)
{
    int64_t left_ms;
    long status;
    CURLcode res;
    size_t lost;

    if (t->state == SENDING)
        curl_multi_remove_handle(t->multi, t->easy);
    if (t->body != NULL)
        t->state = IDLE;
    for (;;) {
        if (t->body == NULL &&
            (t->nqueued == 0 || batch_take(t) != 0))
            break;
        if ((left_ms = deadline_ms - monotonic_ms()) <= 0)
            break;
        curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, (long)left_ms);
        curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)t->body_len);
        curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body);
        res = curl_easy_perform(t->easy);
        status = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        if (res != CURLE_OK || status < 200 || status > 299) {
            t->st.failed_requests++;
            log_warn("trace export: POST %s at shutdown: %s", t->url,
                     res != CURLE_OK ? curl_easy_strerror(res) : "HTTP error");
            break;
        }
        t->st.exported += t->body_spans;
        body_free(t);
    }
    lost = t->nqueued + t->body_spans;
    if (lost > 0) {
        t->st.dropped += lost;
        log_warn("trace export: %zu spans dropped at shutdown", lost);
    }
    log_debug("trace export: %" PRIu64 " spans exported, %" PRIu64
              " dropped", t->st.exported, t->st.dropped);
}

void
trace_exporter_free(struct trace_exporter *t)
{
    if (t == NULL)
        return;
    flush_blocking(t, monotonic_ms() + t->opt.shutdown_timeout_ms);
    destroy(t);
}

int
trace_exporter_submit(struct trace_exporter *t, const struct trace_span *span)
{
    struct qspan *q;

    assert(span->name != NULL);
    for (size_t i = 0; i < span->nattrs; i++)
        assert(span->attrs[i].key != NULL &&
               (unsigned)span->attrs[i].type <= TRACE_DOUBLE);
    if (t->nqueued >= t->opt.max_queue || (q = span_copy(span)) == NULL) {
        if (!t->dropping)
            log_warn("trace export: queue full (%zu spans), dropping spans",
                     t->nqueued);
        t->dropping = true;
        t->st.dropped++;
        return -1;
    }
    TAILQ_INSERT_TAIL(&t->queue, q, entry);
    t->nqueued++;
    t->st.queued++;
    if (t->state == IDLE) {
        if (t->nqueued == t->opt.max_batch)
            wake_in(t, 0);
        else if (t->nqueued == 1)
            wake_in(t, t->opt.batch_delay_ms);
    }
    return 0;
}

void
trace_exporter_stats(const struct trace_exporter *t, struct trace_stats *st)
{
    *st = t->st;
}
