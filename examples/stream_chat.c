/*
 * stream_chat - many streaming chat completions at once from one thread,
 * through llmguard's non-blocking API and libcurl's multi interface.
 *
 *   stream_chat [-s SOCKET] [-n STREAMS] [-w WORKFLOW] [-p PROVIDER]
 *               [-e TOKENS_ESTIMATE] [-a MAX_ATTEMPTS] [-T TIMEOUT_S] PROMPT
 *
 * Each stream asks llmguardd for a permit (llmguard_async_permit), sends
 * an OpenAI-compatible request with "stream": true to the provider it was
 * given, reads the server-sent events as they come, and when the stream
 * ends reports the usage of its last chunk (llmguard_async_report), so
 * the provider's LLM-token bucket and the quotas are charged what the
 * stream really used, not the estimate.  A 429, a 5xx or a transport
 * error is tried again on another provider, as llmguard's report says.
 * One loop waits for everything: curl_multi_poll() with llmguard's
 * descriptor among its extra descriptors.
 *
 * For provider <name> it reads PROVIDER_<NAME>_BASE_URL, _API_KEY and
 * _MODEL from the environment, like ratelimit_demo.  It prints a line per
 * stream as it ends, "stream=I provider=P attempts=A outcome=O tokens=T
 * chunks=C", then "streams=N ok=K failed=F tokens=SUM".  Exit 0 when
 * every stream succeeded, 1 when one failed, 2 on a usage error, 69 when
 * no daemon answers (it does not call providers unguarded).
 */
#include <ctype.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "llmguard.h"

#define MAX_ATTEMPTS 8

struct app;

/* One streamed completion, through its attempts. */
struct stream {
    struct app *app;
    int index;
    unsigned attempts;
    char tried[MAX_ATTEMPTS][64];
    const char *exclude[MAX_ATTEMPTS];
    struct llmguard_permit permit;
    CURL *easy;
    struct curl_slist *hdrs;
    char *payload;
    char *line;                 /* the event-stream line being read */
    size_t line_len;
    uint64_t usage;             /* total_tokens of the usage chunk */
    int chunks;                 /* chunks with content */
    int saw_done;               /* data: [DONE] came */
    double retry_after_s;
    double t0_ms;
};

struct app {
    llmguard_async_t *lg;
    CURLM *multi;
    struct stream *streams;
    int n, finished, ok;
    uint64_t tokens;
    const char *prompt, *workflow, *preferred;
    uint64_t estimate;
    unsigned max_attempts;
    double timeout_s;
    int unavailable;            /* no daemon: exit 69 */
};

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *
provider_env(const char *provider, const char *what)
{
    char key[256];
    size_t n = (size_t)snprintf(key, sizeof(key), "PROVIDER_");

    for (const char *p = provider; *p && n < sizeof(key) - 1; p++)
        key[n++] = (char)toupper((unsigned char)*p);
    snprintf(key + n, sizeof(key) - n, "_%s", what);
    return getenv(key);
}

/* The stream is over, well or not. */
static void
finish(struct stream *st, const char *outcome)
{
    struct app *app = st->app;

    app->finished++;
    if (strcmp(outcome, "ok") == 0) {
        app->ok++;
        app->tokens += st->usage;
    }
    printf("stream=%d provider=%s attempts=%u outcome=%s tokens=%llu "
           "chunks=%d\n", st->index, st->permit.provider, st->attempts,
           outcome, (unsigned long long)st->usage, st->chunks);
    fflush(stdout);
}

/* One line of the event stream: the content chunks are counted, the
 * usage chunk kept, [DONE] noted. */
static void
on_event_line(struct stream *st, const char *line)
{
    json_t *obj, *usage, *choices;

    if (strncmp(line, "data: ", 6) != 0)
        return;
    if (strcmp(line + 6, "[DONE]") == 0) {
        st->saw_done = 1;
        return;
    }
    if ((obj = json_loads(line + 6, 0, NULL)) == NULL)
        return;
    usage = json_object_get(obj, "usage");
    if (json_is_object(usage))
        st->usage = (uint64_t)json_integer_value(
            json_object_get(usage, "total_tokens"));
    choices = json_object_get(obj, "choices");
    if (json_array_size(choices) > 0 &&
        json_is_string(json_object_get(json_object_get(
            json_array_get(choices, 0), "delta"), "content")))
        st->chunks++;
    json_decref(obj);
}

/* Body bytes as they come: split into lines. */
static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
    struct stream *st = arg;
    size_t len = size * n;

    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n') {
            if (st->line_len > 0 && st->line[st->line_len - 1] == '\r')
                st->line_len--;
            if (st->line != NULL) {
                st->line[st->line_len] = '\0';
                on_event_line(st, st->line);
            }
            st->line_len = 0;
            continue;
        }
        char *nl = realloc(st->line, st->line_len + 2);
        if (nl == NULL)
            return 0;
        st->line = nl;
        st->line[st->line_len++] = p[i];
    }
    return len;
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
    struct stream *st = arg;
    size_t len = size * n;

    if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
        st->retry_after_s = atof(p + 12);
    return len;
}

/* The HTTP request of the stream's current attempt. */
static int
start_http(struct stream *st)
{
    const char *provider = st->permit.provider;
    const char *base = provider_env(provider, "BASE_URL");
    const char *key = provider_env(provider, "API_KEY");
    const char *model = provider_env(provider, "MODEL");
    char url[1024], auth[1024];
    json_t *req;

    if (base == NULL) {
        fprintf(stderr, "stream_chat: no BASE_URL for %s\n", provider);
        return -1;
    }
    req = json_pack("{s:s, s:b, s:{s:b}, s:[{s:s, s:s}]}", "model",
                    model ? model : "default", "stream", 1, "stream_options",
                    "include_usage", 1, "messages", "role", "user",
                    "content", st->app->prompt);
    st->payload = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    snprintf(url, sizeof(url), "%s/chat/completions", base);
    st->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (key != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        st->hdrs = curl_slist_append(st->hdrs, auth);
    }
    st->easy = curl_easy_init();
    curl_easy_setopt(st->easy, CURLOPT_URL, url);
    curl_easy_setopt(st->easy, CURLOPT_HTTPHEADER, st->hdrs);
    curl_easy_setopt(st->easy, CURLOPT_POSTFIELDS, st->payload);
    curl_easy_setopt(st->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(st->easy, CURLOPT_WRITEDATA, st);
    curl_easy_setopt(st->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(st->easy, CURLOPT_HEADERDATA, st);
    curl_easy_setopt(st->easy, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(st->easy, CURLOPT_PRIVATE, st);
    st->usage = 0;
    st->chunks = st->saw_done = 0;
    st->retry_after_s = 0;
    st->line_len = 0;
    st->t0_ms = now_ms();
    curl_multi_add_handle(st->app->multi, st->easy);
    return 0;
}

static void ask_permit(struct stream *st);

static void
on_permit(llmguard_async_t *lg, int status, const struct llmguard_permit *p,
          void *arg)
{
    struct stream *st = arg;

    if (status != 0) {
        fprintf(stderr, "stream_chat: stream %d: %s\n", st->index,
                llmguard_async_last_error(lg));
        st->app->unavailable |= status == LLMGUARD_EUNAVAIL;
        finish(st, llmguard_strerror(status));
        return;
    }
    st->permit = *p;
    st->attempts++;
    if (start_http(st) < 0)
        finish(st, "client_error");
}

/* A permit for the stream's next attempt, not on a provider it tried. */
static void
ask_permit(struct stream *st)
{
    struct app *app = st->app;
    struct llmguard_request req = {
        .workflow_id = app->workflow,
        .preferred_provider = app->preferred,
        .tokens_estimate = app->estimate,
        .timeout_s = app->timeout_s,
        .call_id = st->attempts > 0 ? st->permit.call_id : NULL,
    };
    int rc = llmguard_async_permit(app->lg, &req, st->exclude, st->attempts,
                                   on_permit, st);

    if (rc != 0) {
        fprintf(stderr, "stream_chat: stream %d: %s\n", st->index,
                llmguard_async_last_error(app->lg));
        app->unavailable |= rc == LLMGUARD_EUNAVAIL;
        finish(st, llmguard_strerror(rc));
    }
}

static void
on_report(llmguard_async_t *lg, int status,
          const struct llmguard_report_reply *r, void *arg)
{
    struct stream *st = arg;

    if (status != 0)    /* lost: the decision is ours all the same */
        fprintf(stderr, "stream_chat: report of stream %d: %s\n",
                st->index, llmguard_async_last_error(lg));
    if (r->try_again) {
        snprintf(st->tried[st->attempts - 1], sizeof(st->tried[0]), "%s",
                 st->permit.provider);
        st->exclude[st->attempts - 1] = st->tried[st->attempts - 1];
        ask_permit(st);
    }
}

/* What an ended HTTP exchange came to. */
static llmguard_outcome
classify(CURLcode cc, long http, int saw_done)
{
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return LLMGUARD_OUTCOME_TIMEOUT;
    if (cc != CURLE_OK || http >= 500 || (http == 200 && !saw_done))
        return LLMGUARD_OUTCOME_SERVER_ERROR;
    if (http == 429)
        return LLMGUARD_OUTCOME_RATE_LIMITED;
    if (http >= 300)
        return LLMGUARD_OUTCOME_CLIENT_ERROR;
    return LLMGUARD_OUTCOME_OK;
}

static const char *const outcome_names[] = {
    "ok", "rate_limited", "server_error", "timeout", "client_error",
};

/* The stream's HTTP exchange ended: report it, with its real usage. */
static void
stream_ended(struct stream *st, CURLcode cc)
{
    struct app *app = st->app;
    struct llmguard_report r = { .permit_id = st->permit.permit_id };
    long http = 0;
    int rc;

    curl_easy_getinfo(st->easy, CURLINFO_RESPONSE_CODE, &http);
    curl_multi_remove_handle(app->multi, st->easy);
    curl_easy_cleanup(st->easy);
    curl_slist_free_all(st->hdrs);
    free(st->payload);
    st->easy = NULL;
    r.outcome = classify(cc, http, st->saw_done);
    r.tokens_used = r.outcome == LLMGUARD_OUTCOME_OK ? st->usage : 0;
    r.latency_ms = now_ms() - st->t0_ms;
    r.retry_after_s = st->retry_after_s;
    r.final = r.outcome == LLMGUARD_OUTCOME_OK ||
              r.outcome == LLMGUARD_OUTCOME_CLIENT_ERROR ||
              st->attempts >= app->max_attempts;
    if (r.final)
        finish(st, outcome_names[r.outcome]);
    rc = llmguard_async_report(app->lg, &r, on_report, st);
    if (rc != 0 && !r.final) {
        fprintf(stderr, "stream_chat: report of stream %d: %s\n",
                st->index, llmguard_async_last_error(app->lg));
        finish(st, outcome_names[r.outcome]);
    }
}

/* One turn of the loop: wait for curl's sockets and llmguard's. */
static void
turn(struct app *app)
{
    struct curl_waitfd wfd = { .fd = llmguard_async_fd(app->lg) };
    int ev = llmguard_async_events(app->lg), running, left, tmo;
    CURLMsg *msg;

    wfd.events = (ev & LLMGUARD_READABLE ? CURL_WAIT_POLLIN : 0) |
                 (ev & LLMGUARD_WRITABLE ? CURL_WAIT_POLLOUT : 0);
    tmo = llmguard_async_timeout_ms(app->lg);
    if (tmo < 0 || tmo > 1000)
        tmo = 1000;
    curl_multi_poll(app->multi, &wfd, wfd.fd >= 0 && ev ? 1 : 0, tmo, NULL);
    llmguard_async_handle(app->lg,
                          (wfd.revents & CURL_WAIT_POLLIN ? LLMGUARD_READABLE
                                                          : 0) |
                          (wfd.revents & CURL_WAIT_POLLOUT ? LLMGUARD_WRITABLE
                                                           : 0));
    curl_multi_perform(app->multi, &running);
    while ((msg = curl_multi_info_read(app->multi, &left)) != NULL) {
        struct stream *st;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&st);
        stream_ended(st, msg->data.result);
    }
}

static void
usage(FILE *fp)
{
    fprintf(fp,
        "usage: stream_chat [-s SOCKET] [-n STREAMS] [-w WORKFLOW] "
        "[-p PROVIDER]\n"
        "                   [-e TOKENS_ESTIMATE] [-a MAX_ATTEMPTS] "
        "[-T TIMEOUT_S] PROMPT\n"
        "STREAMS streaming chat completions at once (default 50), from one "
        "thread.\n"
        "Reads PROVIDER_<NAME>_BASE_URL, _API_KEY and _MODEL.\n"
        "Exit: 0 all done, 1 a stream failed, 2 usage, 69 no daemon.\n");
}

/* Parse a whole number from lo to hi; -1 when it is not one. */
static long
number(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);

    return end != s && *end == '\0' && v >= lo && v <= hi ? v : -1;
}

static int
parse_args(struct app *app, int argc, char **argv, const char **sock)
{
    int ch;
    long v;

    while ((ch = getopt(argc, argv, "hs:n:w:p:e:a:T:")) != -1) {
        switch (ch) {
        case 's': *sock = optarg; break;
        case 'w': app->workflow = optarg; break;
        case 'p': app->preferred = optarg; break;
        case 'n':
            if ((v = number(optarg, 1, 10000)) < 0)
                return -1;
            app->n = (int)v;
            break;
        case 'e':
            if ((v = number(optarg, 0, 1000000000)) < 0)
                return -1;
            app->estimate = (uint64_t)v;
            break;
        case 'a':
            if ((v = number(optarg, 1, MAX_ATTEMPTS)) < 0)
                return -1;
            app->max_attempts = (unsigned)v;
            break;
        case 'T': app->timeout_s = atof(optarg); break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (optind != argc - 1 || !(app->timeout_s >= 0))
        return -1;
    app->prompt = argv[optind];
    return 0;
}

int
main(int argc, char **argv)
{
    struct app app = { .n = 50, .estimate = 100, .max_attempts = 3,
                       .timeout_s = 30 };
    const char *sock = NULL;

    if (parse_args(&app, argc, argv, &sock) < 0) {
        usage(stderr);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    app.multi = curl_multi_init();
    app.lg = llmguard_async_open(sock);
    app.streams = calloc((size_t)app.n, sizeof(*app.streams));
    if (app.multi == NULL || app.lg == NULL || app.streams == NULL) {
        fprintf(stderr, "stream_chat: out of memory\n");
        return 1;
    }
    for (int i = 0; i < app.n; i++) {
        app.streams[i].app = &app;
        app.streams[i].index = i;
        ask_permit(&app.streams[i]);
    }
    while (app.finished < app.n || llmguard_async_pending(app.lg) > 0)
        turn(&app);
    printf("streams=%d ok=%d failed=%d tokens=%llu\n", app.n, app.ok,
           app.n - app.ok, (unsigned long long)app.tokens);
    llmguard_async_close(app.lg);
    curl_multi_cleanup(app.multi);
    for (int i = 0; i < app.n; i++)
        free(app.streams[i].line);
    free(app.streams);
    curl_global_cleanup();
    return app.ok == app.n ? 0 : app.unavailable ? 69 : 1;
}
