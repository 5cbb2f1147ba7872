/*
 * mockprovider - an OpenAI-compatible chat-completion endpoint on loopback
 * that answers as it is told, for the failover tests.
 *
 *   mockprovider --name NAME --port-file FILE [--mode MODE] [--port N]
 *                [--traces-file FILE]
 *
 * It listens on 127.0.0.1 on port N (default: a free one) and writes the
 * port to FILE.  As an OTLP collector, POST /v1/traces appends each body
 * as one line to the traces file.
 *   POST /v1/chat/completions   answered by the current mode:
 *       ok[:TOKENS]   200 with usage.total_tokens TOKENS (default 42)
 *       429[:SECS]    429 with Retry-After SECS (default 1)
 *       500           500
 *       400           400
 *       hang          never answered
 *   POST /control?mode=MODE     sets the mode
 *   GET  /stats                 {"name", "mode", "requests", "auth",
 *                                "model", "rate_limited", "ok"}
 *                               (model: that of the last chat request)
 *
 * With --rpm N and/or --tpm N it also enforces limits of its own, as the
 * real providers do, per model (the request's "model"): token buckets of
 * N requests and N tokens (the answer's total_tokens) per --window
 * seconds (default 60), full at first, refilled continuously.  A request
 * that finds either short is answered 429 with a Retry-After of the
 * time until it would fit; every answer in ok mode carries the rate-limit
 * headers of --style openai (x-ratelimit-*, resets as "6m0s", "1s",
 * "20ms") or anthropic (anthropic-ratelimit-*, resets as RFC 3339 times):
 * limit, remaining, and the time until the bucket is full again.
 *
 *   GET  /streams               {"streams", "completed", "tokens",
 *                                "most_open"}
 *
 * In mode ok, a request whose body has "stream": true is answered as
 * OpenAI streams: text/event-stream chunks `data: {...}` of one token
 * each, every STREAM_CHUNK_MS, then a chunk with no choices and the
 * usage, then `data: [DONE]`.  Its usage differs from stream to stream
 * (prompt_tokens from the body's length, 4 to 8 completion tokens);
 * /streams adds up the total_tokens of the usage chunks sent, and says
 * how many streams were open at once at the most.  Streams are not held
 * to --rpm and --tpm.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

static char name[64] = "mock";
static char mode[64] = "ok";
static long requests;
static char last_auth[256];
static char last_model[256];
static const char *traces_file;

static void reply_json(struct evhttp_request *req, int code,
                       const char *reason, json_t *obj);

/* ---- limits of its own (--rpm, --tpm) ---------------------------------- */

#define MODELS_MAX 64

static struct {
    double rpm, tpm;            /* per window; 0: none */
    double window_s;
    bool anthropic;             /* header style */
    long rate_limited, ok;      /* answers, for /stats */
    struct model_bucket {
        char model[128];
        double requests, tokens;    /* left at last_s */
        double last_s;
    } m[MODELS_MAX];
    size_t n;
} lim = { 0, 0, 60, false, 0, 0, { { "", 0, 0, 0 } }, 0 };

static double
mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The bucket of model, refilled to now; NULL when there are too many. */
static struct model_bucket *
model_bucket(const char *model, double now)
{
    struct model_bucket *b = NULL;

    for (size_t i = 0; i < lim.n && b == NULL; i++)
        if (strcmp(lim.m[i].model, model) == 0)
            b = &lim.m[i];
    if (b == NULL) {
        if (lim.n == MODELS_MAX)
            return NULL;
        b = &lim.m[lim.n++];
        snprintf(b->model, sizeof(b->model), "%s", model);
        b->requests = lim.rpm;
        b->tokens = lim.tpm;
        b->last_s = now;
    }
    b->requests = fmin(lim.rpm, b->requests +
                       lim.rpm / lim.window_s * (now - b->last_s));
    b->tokens = fmin(lim.tpm, b->tokens +
                     lim.tpm / lim.window_s * (now - b->last_s));
    b->last_s = now;
    return b;
}

/* A duration as OpenAI writes it: "20ms", "1s", "1.5s", "6m0s". */
static void
openai_duration(double s, char *buf, size_t len)
{
    long ms = lround(s * 1e3);

    if (ms < 1000)
        snprintf(buf, len, "%ldms", ms);
    else if (ms < 60000)
        snprintf(buf, len, "%gs", ms / 1e3);
    else
        snprintf(buf, len, "%ldm%gs", ms / 60000, (ms % 60000) / 1e3);
}

/* The time s seconds from now, as Anthropic writes it (RFC 3339, UTC). */
static void
rfc3339_in(double s, char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    time_t t;

    clock_gettime(CLOCK_REALTIME, &ts);
    t = ts.tv_sec + (time_t)ceil(s + ts.tv_nsec / 1e9);
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One limit's three headers: what, the limit, what is left, until full. */
static void
limit_headers(struct evkeyvalq *h, const char *what, double limit,
              double left)
{
    char key[96], v[64];
    double until_full = (limit - left) / (limit / lim.window_s);

    snprintf(v, sizeof(v), "%.0f", limit);
    snprintf(key, sizeof(key), lim.anthropic ? "anthropic-ratelimit-%s-limit"
             : "x-ratelimit-limit-%s", what);
    evhttp_add_header(h, key, v);
    snprintf(v, sizeof(v), "%.0f", floor(fmax(0, left)));
    snprintf(key, sizeof(key), lim.anthropic ?
             "anthropic-ratelimit-%s-remaining" : "x-ratelimit-remaining-%s",
             what);
    evhttp_add_header(h, key, v);
    if (lim.anthropic)
        rfc3339_in(fmax(0, until_full), v, sizeof(v));
    else
        openai_duration(fmax(0, until_full), v, sizeof(v));
    snprintf(key, sizeof(key), lim.anthropic ? "anthropic-ratelimit-%s-reset"
             : "x-ratelimit-reset-%s", what);
    evhttp_add_header(h, key, v);
}

/* The model a request names ("default" when it names none). */
static void
request_model(struct evhttp_request *req, char *buf, size_t len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    json_t *doc = json_loadb((const char *)evbuffer_pullup(in, (ev_ssize_t)n),
                             n, 0, NULL);
    const char *model = "default";

    json_unpack(doc, "{s?:s}", "model", &model);
    snprintf(buf, len, "%s", model);
    json_decref(doc);
}

/*
 * Enforce the limits on one request that will use `tokens`: true when it
 * may go on (its share taken, the headers added), false when it was
 * answered 429 here.
 */
static bool
limits_admit(struct evhttp_request *req, long tokens)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char model[128], secs[32];
    double now = mono_now(), wait_s = 0;
    struct model_bucket *b;

    if (lim.rpm <= 0 && lim.tpm <= 0)
        return true;
    request_model(req, model, sizeof(model));
    if ((b = model_bucket(model, now)) == NULL)
        return true;
    if (lim.rpm > 0 && b->requests < 1)
        wait_s = (1 - b->requests) / (lim.rpm / lim.window_s);
    if (lim.tpm > 0 && b->tokens < tokens)
        wait_s = fmax(wait_s, (tokens - b->tokens) / (lim.tpm / lim.window_s));
    if (wait_s == 0) {
        b->requests -= 1;
        b->tokens -= (double)tokens;
    }
    if (lim.rpm > 0)
        limit_headers(h, "requests", lim.rpm, b->requests);
    if (lim.tpm > 0)
        limit_headers(h, "tokens", lim.tpm, b->tokens);
    if (wait_s == 0)
        return true;
    lim.rate_limited++;
    snprintf(secs, sizeof(secs), "%.0f", ceil(wait_s));
    evhttp_add_header(h, "Retry-After", secs);
    reply_json(req, 429, "Too Many Requests", json_pack(
        "{s:{s:s, s:s}}", "error", "message", "rate limit reached for model",
        "type", "rate_limit_exceeded"));
    return false;
}

#define STREAM_CHUNK_MS 10

/* A streamed answer on its way. */
struct stream {
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *timer;
    int sent, chunks;
    int prompt_tokens;
};
static long streams, streams_completed, stream_tokens;
static long streams_open, streams_most_open;
static struct event_base *base;

static void
reply_json(struct evhttp_request *req, int code, const char *reason,
           json_t *obj)
{
    struct evbuffer *buf = evbuffer_new();
    char *text = json_dumps(obj, JSON_COMPACT);

    evbuffer_add_printf(buf, "%s", text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, code, reason, buf);
    evbuffer_free(buf);
    free(text);
    json_decref(obj);
}

static void
on_traces(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    FILE *fp = traces_file ? fopen(traces_file, "a") : NULL;

    if (fp == NULL) {
        evhttp_send_error(req, 500, "no traces file");
        return;
    }
    fwrite(evbuffer_pullup(in, (ev_ssize_t)len), 1, len, fp);
    fputc('\n', fp);
    fclose(fp);
    reply_json(req, 200, "OK", json_object());
}

/* The "model" of a chat request's JSON body into last_model ("" when it
 * names none), so that a test can see which model id a client called. */
static void
note_model(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_t *doc = json_loadb((const char *)evbuffer_pullup(in, (ev_ssize_t)len),
                             len, 0, NULL);
    const char *m = "";

    json_unpack(doc, "{s?:s}", "model", &m);
    snprintf(last_model, sizeof(last_model), "%s", m);
    json_decref(doc);
}

/* Whether the body of req asks for a stream ("stream": true). */
static int
wants_stream(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_t *body = json_loadb((const char *)evbuffer_pullup(in, (ev_ssize_t)len),
                              len, 0, NULL);
    int yes = json_is_true(json_object_get(body, "stream"));

    json_decref(body);
    return yes;
}

static void
stream_free(struct stream *st)
{
    evhttp_connection_set_closecb(st->evcon, NULL, NULL);
    event_free(st->timer);
    streams_open--;
    free(st);
}

/* The client left before the end: the request is libevent's to free. */
static void
on_stream_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    stream_free(arg);
}

/* One event-stream chunk holding obj, which it takes. */
static void
stream_send(struct stream *st, json_t *obj)
{
    struct evbuffer *buf = evbuffer_new();
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

    evbuffer_add_printf(buf, "data: %s\n\n", text ? text : "[DONE]");
    evhttp_send_reply_chunk(st->req, buf);
    evbuffer_free(buf);
    free(text);
    json_decref(obj);
}

/* The next chunk: a token, else the usage and the end. */
static void
on_stream_tick(evutil_socket_t fd, short what, void *arg)
{
    static const struct timeval every = { 0, STREAM_CHUNK_MS * 1000 };
    struct stream *st = arg;
    int total = st->prompt_tokens + st->chunks;

    (void)fd, (void)what;
    if (st->sent++ < st->chunks) {
        stream_send(st, json_pack("{s:s, s:s, s:[{s:i, s:{s:s}, s:n}]}",
            "id", "chatcmpl-mock", "object", "chat.completion.chunk",
            "choices", "index", 0, "delta", "content", "word ",
            "finish_reason"));
        evtimer_add(st->timer, &every);
        return;
    }
    stream_send(st, json_pack("{s:s, s:s, s:[], s:{s:i, s:i, s:i}}",
        "id", "chatcmpl-mock", "object", "chat.completion.chunk", "choices",
        "usage", "prompt_tokens", st->prompt_tokens, "completion_tokens",
        st->chunks, "total_tokens", total));
    stream_send(st, NULL);
    evhttp_send_reply_end(st->req);
    streams_completed++;
    stream_tokens += total;
    stream_free(st);
}

/* Answer req as a stream (mode ok, "stream": true). */
static void
stream_start(struct evhttp_request *req)
{
    struct stream *st = calloc(1, sizeof(*st));
    size_t body = evbuffer_get_length(evhttp_request_get_input_buffer(req));

    if (st == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    st->req = req;
    st->evcon = evhttp_request_get_connection(req);
    st->chunks = 4 + (int)(streams++ % 5);
    st->prompt_tokens = 1 + (int)(body / 4);
    st->timer = evtimer_new(base, on_stream_tick, st);
    if (++streams_open > streams_most_open)
        streams_most_open = streams_open;
    evhttp_connection_set_closecb(st->evcon, on_stream_closed, st);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/event-stream");
    evhttp_send_reply_start(req, 200, "OK");
    on_stream_tick(-1, 0, st);
}

static void
on_streams(struct evhttp_request *req, void *arg)
{
    (void)arg;
    reply_json(req, 200, "OK", json_pack("{s:i, s:i, s:i, s:i}", "streams",
                                         (int)streams, "completed",
                                         (int)streams_completed, "tokens",
                                         (int)stream_tokens, "most_open",
                                         (int)streams_most_open));
}

static void
on_chat(struct evhttp_request *req, void *arg)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req),
                                          "Authorization");
    char *colon = strchr(mode, ':');
    long n = colon ? atol(colon + 1) : -1;

    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_send_error(req, 405, "POST only");
        return;
    }
    requests++;
    snprintf(last_auth, sizeof(last_auth), "%s", auth ? auth : "");
    note_model(req);
    if (strncmp(mode, "ok", 2) == 0 && wants_stream(req)) {
        stream_start(req);
    } else if (strncmp(mode, "ok", 2) == 0) {
        if (!limits_admit(req, n >= 0 ? n : 42))
            return;
        lim.ok++;
        reply_json(req, 200, "OK", json_pack(
            "{s:s, s:s, s:[{s:i, s:{s:s, s:s}, s:s}], s:{s:i, s:i, s:i}}",
            "id", "chatcmpl-mock", "object", "chat.completion",
            "choices", "index", 0, "message", "role", "assistant", "content",
            name, "finish_reason", "stop",
            "usage", "prompt_tokens", 2, "completion_tokens",
            (int)(n >= 0 ? n : 42) - 2, "total_tokens", (int)(n >= 0 ? n : 42)));
    } else if (strncmp(mode, "429", 3) == 0) {
        char secs[32];
        snprintf(secs, sizeof(secs), "%ld", n >= 0 ? n : 1);
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "Retry-After", secs);
        reply_json(req, 429, "Too Many Requests", json_pack(
            "{s:{s:s}}", "error", "message", "rate limit reached"));
    } else if (strcmp(mode, "500") == 0) {
        reply_json(req, 500, "Internal Server Error", json_pack(
            "{s:{s:s}}", "error", "message", "server error"));
    } else if (strcmp(mode, "400") == 0) {
        reply_json(req, 400, "Bad Request", json_pack(
            "{s:{s:s}}", "error", "message", "bad request"));
    }
    /* hang: no reply; libevent frees the request when the peer leaves. */
}

static void
on_control(struct evhttp_request *req, void *arg)
{
    struct evkeyvalq q;
    const char *m;

    evhttp_parse_query_str(evhttp_uri_get_query(
        evhttp_request_get_evhttp_uri(req)) ?: "", &q);
    m = evhttp_find_header(&q, "mode");
    if (m != NULL)
        snprintf(mode, sizeof(mode), "%s", m);
    evhttp_clear_headers(&q);
    reply_json(req, 200, "OK", json_pack("{s:s}", "mode", mode));
}

static void
on_stats(struct evhttp_request *req, void *arg)
{
    reply_json(req, 200, "OK", json_pack("{s:s, s:s, s:i, s:s, s:s, s:i, s:i}",
                                         "name", name, "mode", mode,
                                         "requests", (int)requests,
                                         "auth", last_auth, "model", last_model,
                                         "rate_limited", (int)lim.rate_limited,
                                         "ok", (int)lim.ok));
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopexit(arg, NULL);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "name", required_argument, NULL, 'n' },
        { "port-file", required_argument, NULL, 'p' },
        { "mode", required_argument, NULL, 'm' },
        { "port", required_argument, NULL, 'P' },
        { "traces-file", required_argument, NULL, 't' },
        { "rpm", required_argument, NULL, 'R' },
        { "tpm", required_argument, NULL, 'K' },
        { "window", required_argument, NULL, 'W' },
        { "style", required_argument, NULL, 'S' },
        { NULL, 0, NULL, 0 },
    };
    const char *port_file = NULL;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *sig;
    FILE *fp;
    int ch, port = 0;

    while ((ch = getopt_long(argc, argv, "n:p:m:P:t:R:K:W:S:", opts,
                             NULL)) != -1) {
        if (ch == 'n')
            snprintf(name, sizeof(name), "%s", optarg);
        else if (ch == 'p')
            port_file = optarg;
        else if (ch == 'm')
            snprintf(mode, sizeof(mode), "%s", optarg);
        else if (ch == 'P')
            port = atoi(optarg);
        else if (ch == 't')
            traces_file = optarg;
        else if (ch == 'R')
            lim.rpm = atof(optarg);
        else if (ch == 'K')
            lim.tpm = atof(optarg);
        else if (ch == 'W')
            lim.window_s = atof(optarg);
        else if (ch == 'S')
            lim.anthropic = strcmp(optarg, "anthropic") == 0;
        else
            return 2;
    }
    if (lim.window_s <= 0 || lim.rpm < 0 || lim.tpm < 0) {
        fprintf(stderr, "mockprovider: --window > 0, --rpm and --tpm >= 0\n");
        return 2;
    }
    if (port_file == NULL) {
        fprintf(stderr, "usage: mockprovider --name NAME --port-file FILE\n");
        return 2;
    }
    base = event_base_new();
    http = evhttp_new(base);
    evhttp_set_cb(http, "/v1/chat/completions", on_chat, NULL);
    evhttp_set_cb(http, "/control", on_control, NULL);
    evhttp_set_cb(http, "/stats", on_stats, NULL);
    evhttp_set_cb(http, "/streams", on_streams, NULL);
    evhttp_set_cb(http, "/v1/traces", on_traces, NULL);
    bound = evhttp_bind_socket_with_handle(http, "127.0.0.1",
                                           (ev_uint16_t)port);
    if (bound == NULL) {
        perror("bind");
        return 1;
    }
    struct sockaddr_storage ss;
    ev_socklen_t sl = sizeof(ss);
    getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl);
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
    fp = fopen(tmp, "w");
    fprintf(fp, "%d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
    fclose(fp);
    rename(tmp, port_file);     /* readers never see a partial file */
    sig = evsignal_new(base, SIGTERM, on_signal, base);
    evsignal_add(sig, NULL);
    event_base_dispatch(base);
    event_free(sig);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
