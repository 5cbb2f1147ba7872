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
 *   GET  /stats                 {"name", "mode", "requests", "auth", "model"}
 *                               (model: that of the last chat request)
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (strncmp(mode, "ok", 2) == 0) {
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
    reply_json(req, 200, "OK", json_pack("{s:s, s:s, s:i, s:s, s:s}", "name",
                                         name, "mode", mode, "requests",
                                         (int)requests, "auth", last_auth,
                                         "model", last_model));
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
        { NULL, 0, NULL, 0 },
    };
    const char *port_file = NULL;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *sig;
    FILE *fp;
    int ch, port = 0;

    while ((ch = getopt_long(argc, argv, "n:p:m:P:t:", opts, NULL)) != -1) {
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
        else
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
