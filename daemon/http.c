/* http.c - GET /metrics (Prometheus text 0.0.4) and GET /healthz. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "persist.h"
#include "telemetry.h"

/* The endpoint, and what it serves from. */
struct http {
    struct evhttp *evh;
    struct telemetry *telemetry;
    struct persist *persist;
};

static void
free_text(const void *data, size_t len, void *arg)
{
    free((void *)(uintptr_t)data);
}

/*
 * /healthz: the store's state as one JSON object; 200 while the daemon
 * can write its quotas, 503 while it cannot.
 */
static int
health(const struct http *hc, struct evbuffer *body)
{
    struct persist_state ps;
    json_t *doc;
    char *text;

    persist_state(hc->persist, &ps);
    doc = json_pack("{s:s, s:{s:s, s:o}}",
                    "status", ps.failing ? "failing" : "ok",
                    "store", "state", ps.failing ? "failing" : "ok",
                    "last_flush", ps.last_flush_s > 0 ?
                    json_real(ps.last_flush_s) : json_null());
    if (doc != NULL && ps.failing)
        json_object_set_new(json_object_get(doc, "store"), "error",
                            json_string(ps.error));
    if (doc == NULL || (text = json_dumps(doc, JSON_COMPACT)) == NULL) {
        json_decref(doc);
        evbuffer_add_printf(body, "{\"status\":\"failing\"}\n");
        return 503;
    }
    evbuffer_add_printf(body, "%s\n", text);
    free(text);
    json_decref(doc);
    return ps.failing ? 503 : HTTP_OK;
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct http *hc = arg;
    struct telemetry *t = hc->telemetry;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq *hdrs = evhttp_request_get_output_headers(req);
    struct evbuffer *body;
    char *text;
    size_t len;

    if (path == NULL || (strcmp(path, "/metrics") != 0 &&
                         strcmp(path, "/healthz") != 0)) {
        evhttp_send_error(req, HTTP_NOTFOUND, "only /metrics and /healthz");
        return;
    }
    if ((body = evbuffer_new()) == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
        evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        /* evhttp_send_error() would drop the Allow header. */
        evhttp_add_header(hdrs, "Allow", "GET, HEAD");
        evhttp_add_header(hdrs, "Content-Type", "text/plain");
        evbuffer_add_printf(body, "only GET and HEAD\n");
        evhttp_send_reply(req, 405, "Method Not Allowed", body);
        evbuffer_free(body);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        int code = health(hc, body);
        evhttp_add_header(hdrs, "Content-Type", "application/json");
        evhttp_send_reply(req, code, code == HTTP_OK ? "OK" :
                          "Service Unavailable", body);
        evbuffer_free(body);
        return;
    } else if (telemetry_prometheus(t, &text, &len) == 0) {
        evhttp_add_header(hdrs, "Content-Type",
                          "text/plain; version=0.0.4; charset=utf-8");
        evbuffer_add_reference(body, text, len, free_text, NULL);
    } else {
        evbuffer_free(body);
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
}

struct http *
http_start(struct event_base *base, const char *listen, struct telemetry *t,
           struct persist *p)
{
    const char *colon = strrchr(listen, ':');
    char host[CONFIG_STR_MAX];
    struct http *hc;
    struct evhttp *http;
    int port;

    if (listen[0] == '\0')
        return NULL;
    /* config_load checked host:port; "[v6]" loses its brackets here.  No
     * host (":9464") means loopback: anything wider is named explicitly. */
    snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    if (host[0] == '\0')
        snprintf(host, sizeof(host), "127.0.0.1");
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
    }
    port = atoi(colon + 1);
    if ((hc = calloc(1, sizeof(*hc))) == NULL ||
        (http = evhttp_new(base)) == NULL)
        fatalx(1, "cannot create the HTTP server");
    /* Every method reaches on_request, which answers 405 to all but GET
     * and HEAD (evhttp itself would say 501). */
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
                               EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                               EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                               EVHTTP_REQ_PATCH);
    hc->evh = http;
    hc->telemetry = t;
    hc->persist = p;
    evhttp_set_gencb(http, on_request, hc);
    evhttp_set_timeout(http, 10);
    if (evhttp_bind_socket(http, host, (ev_uint16_t)port) < 0)
        fatalx(CONFIG_EXIT, "LLMGUARD_METRICS_LISTEN=%s: cannot bind %s "
               "port %d", listen, host, port);
    log_info("metrics on http://%s%s/metrics", listen[0] == ':' ?
             "127.0.0.1" : "", listen);
    return hc;
}

void
http_stop(struct http *hc)
{
    if (hc == NULL)
        return;
    evhttp_free(hc->evh);
    free(hc);
}
