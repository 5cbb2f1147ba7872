/*
 * ratelimit_demo - one OpenAI-compatible chat completion through llmguard.
 *
 *   ratelimit_demo [-s SOCKET] [-w WORKFLOW] [-t TENANT] [-p PROVIDER]
 *                  [-e TOKENS_ESTIMATE] [-a MAX_ATTEMPTS] [-T TIMEOUT_S]
 *                  [-m MODEL] [--traceparent TP] PROMPT
 *
 * llmguardd chooses the provider, waits for its token and checks the
 * quota; this program makes the HTTP call with libcurl and reports back.
 * For provider <name> it reads PROVIDER_<NAME>_BASE_URL (e.g.
 * https://api.groq.com/openai/v1), PROVIDER_<NAME>_API_KEY and
 * PROVIDER_<NAME>_MODEL from the environment; LLMGUARD_DEMO_HTTP_TIMEOUT_MS
 * bounds each HTTP request (default 30000).  With -m, llmguardd chooses a
 * deployment of that model group (or model id) and the request asks for
 * the model id it names (llmguard_model()).
 *
 * It prints one line "provider=... success=... failover_attempts=...
 * rate_limited=... quota_allowed=... quota_remaining=... wait_ms=...
 * guarded=... tokens=...", with -m a line "model=..." (the model id
 * called), and then the answer.  Exit 0 on success, 1 when
 * the call failed, 3 over a hard quota, 69 without a daemon (fail-closed).
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "llmguard.h"

struct call_ctx {
    const char *prompt;
    long http_timeout_ms;
    char answer[4096];
    uint64_t tokens;
};

/* "PROVIDER_<NAME>_<what>" into key. */
static const char *
provider_key(const char *provider, const char *what, char *key, size_t len)
{
    size_t n = (size_t)snprintf(key, len, "PROVIDER_");

    for (const char *p = provider; *p && n < len - 1; p++)
        key[n++] = (char)toupper((unsigned char)*p);
    snprintf(key + n, len - n, "_%s", what);
    return key;
}

static const char *
provider_env(const char *provider, const char *what)
{
    char key[256];

    return getenv(provider_key(provider, what, key, sizeof(key)));
}

struct buf {
    char *data;
    size_t len;
};

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    char *nd = realloc(b->data, b->len + size * n + 1);

    if (nd == NULL)
        return 0;
    memcpy(nd + b->len, p, size * n);
    b->data = nd;
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

/*
 * Each response header to llmguard: Retry-After as the provider's wish,
 * and every "name: value" line to llmguard_provider_header(), which keeps
 * the rate-limit headers (the daemon fits its buckets to them) and drops
 * the rest.
 */
static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
    size_t len = size * n, nlen, vlen;
    char name[128], value[256];
    const char *colon = memchr(p, ':', len), *v;

    if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
        llmguard_retry_after(atof(p + 12));
    if (colon == NULL || (nlen = (size_t)(colon - p)) >= sizeof(name))
        return len;
    for (v = colon + 1; v < p + len && (*v == ' ' || *v == '\t'); v++)
        ;
    vlen = (size_t)(p + len - v);
    while (vlen > 0 && isspace((unsigned char)v[vlen - 1]))
        vlen--;
    if (vlen >= sizeof(value))
        return len;
    memcpy(name, p, nlen);
    name[nlen] = '\0';
    memcpy(value, v, vlen);
    value[vlen] = '\0';
    llmguard_provider_header(name, value);
    return len;
}

/* The llmguard_call_fn: one HTTP request to provider. */
static llmguard_outcome
chat(const char *provider, void *arg, uint64_t *tokens_used)
{
    struct call_ctx *ctx = arg;
    const char *base = provider_env(provider, "BASE_URL");
    const char *key = provider_env(provider, "API_KEY");
    const char *model = llmguard_model() != NULL ? llmguard_model() :
                        provider_env(provider, "MODEL");
    struct buf body = { NULL, 0 };
    struct curl_slist *hdrs = NULL;
    char url[1024], auth[1024], key_buf[256];
    long status = 0;
    CURLcode cc;
    CURL *curl;

    if (base == NULL) {
        fprintf(stderr, "ratelimit_demo: no %s in the environment\n",
                provider_key(provider, "BASE_URL", key_buf, sizeof(key_buf)));
        return LLMGUARD_OUTCOME_CLIENT_ERROR;
    }
    json_t *req = json_pack("{s:s, s:[{s:s, s:s}]}", "model",
                            model ? model : "default", "messages", "role",
                            "user", "content", ctx->prompt);
    char *payload = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    snprintf(url, sizeof(url), "%s/chat/completions", base);
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    if (key != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, ctx->http_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(hdrs);
    free(payload);

    llmguard_outcome out;
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        out = LLMGUARD_OUTCOME_TIMEOUT;
    } else if (cc != CURLE_OK || status >= 500) {
        out = LLMGUARD_OUTCOME_SERVER_ERROR;   /* unreachable counts too */
    } else if (status == 429) {
        out = LLMGUARD_OUTCOME_RATE_LIMITED;
    } else if (status >= 400) {
        out = LLMGUARD_OUTCOME_CLIENT_ERROR;
    } else {
        json_t *doc = json_loads(body.data ? body.data : "", 0, NULL);
        json_int_t total = 0;
        const char *text = "";
        json_unpack(doc, "{s?:{s?:I}}", "usage", "total_tokens", &total);
        json_unpack(doc, "{s?:[{s?:{s?:s}}]}", "choices", "message",
                    "content", &text);
        snprintf(ctx->answer, sizeof(ctx->answer), "%s", text);
        ctx->tokens = (uint64_t)total;
        *tokens_used = (uint64_t)total;
        json_decref(doc);
        out = LLMGUARD_OUTCOME_OK;
    }
    fprintf(stderr, "ratelimit_demo: %s answered %ld%s%s\n", provider, status,
            cc != CURLE_OK ? ": " : "", cc != CURLE_OK ?
            curl_easy_strerror(cc) : "");
    free(body.data);
    return out;
}

static void
usage(FILE *fp)
{
    fprintf(fp,
        "usage: ratelimit_demo [-s SOCKET] [-w WORKFLOW] [-t TENANT] "
        "[-p PROVIDER]\n"
        "                      [-e TOKENS_ESTIMATE] [-a MAX_ATTEMPTS] "
        "[-T TIMEOUT_S]\n"
        "                      [-m MODEL] [--traceparent TP] PROMPT\n"
        "\n"
        "One chat completion through llmguard_execute_with_failover.\n"
        "  -s, --socket PATH     llmguardd's socket (default: "
        "$LLMGUARD_SOCKET)\n"
        "  -w, --workflow ID     the workflow whose quota is charged\n"
        "  -t, --tenant ID       the tenant whose quota is charged\n"
        "  -p, --provider NAME   the preferred provider (and the one to fail "
        "open to)\n"
        "  -e, --estimate N      LLM tokens expected (default 100)\n"
        "  -a, --attempts N      attempts at most, up to 1000 (default and 0: "
        "3)\n"
        "  -T, --timeout S       seconds to wait for a token (default 5)\n"
        "  -m, --model MODEL     a model group or id: llmguardd chooses the "
        "deployment\n"
        "  -P, --traceparent TP  the caller's W3C trace context\n"
        "  -h, --help            this text\n"
        "Reads PROVIDER_<NAME>_BASE_URL, _API_KEY, _MODEL and "
        "LLMGUARD_DEMO_HTTP_TIMEOUT_MS.\n"
        "Exit: 0 done, 1 the call failed, 2 usage, 3 over a hard quota, "
        "69 no daemon.\n");
}

/* A usage error: what was wrong, then the usage; exit status 2. */
static int
usage_error(const char *what, const char *arg)
{
    if (what != NULL)
        fprintf(stderr, "ratelimit_demo: %s%s%s\n", what, arg ? ": " : "",
                arg ? arg : "");
    usage(stderr);
    return 2;
}

/* A whole number from min to max in arg, into *out; -1 if it is not. */
static int
whole(const char *arg, unsigned long long min, unsigned long long max,
      unsigned long long *out)
{
    char *end;

    errno = 0;
    *out = strtoull(arg, &end, 10);
    return errno != 0 || end == arg || *end != '\0' || arg[0] == '-' ||
           *out < min || *out > max ? -1 : 0;
}

/* The options into req and *sock, the prompt into ctx: 0, 1 for --help,
 * or 2 (said) for a usage error. */
static int
parse_options(int argc, char **argv, struct llmguard_request *req,
              const char **sock, struct call_ctx *ctx)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "workflow", required_argument, NULL, 'w' },
        { "tenant", required_argument, NULL, 't' },
        { "provider", required_argument, NULL, 'p' },
        { "estimate", required_argument, NULL, 'e' },
        { "attempts", required_argument, NULL, 'a' },
        { "timeout", required_argument, NULL, 'T' },
        { "traceparent", required_argument, NULL, 'P' },
        { "model", required_argument, NULL, 'm' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    unsigned long long n;
    char *end, opt[64];
    int ch;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":s:w:t:p:e:a:T:P:m:h", opts,
                             NULL)) != -1) {
        switch (ch) {
        case 's': *sock = optarg; break;
        case 'w': req->workflow_id = optarg; break;
        case 't': req->tenant_id = optarg; break;
        case 'p': req->preferred_provider = optarg; break;
        case 'P': req->traceparent = optarg; break;
        case 'm': req->model = optarg; break;
        case 'h': return 1;
        case 'e':
            if (whole(optarg, 0, INT64_MAX, &n) < 0)
                return usage_error("-e: expected a whole number", optarg);
            req->tokens_estimate = n;
            break;
        case 'a':
            if (whole(optarg, 0, 1000, &n) < 0)
                return usage_error("-a: expected 0 (3) to 1000", optarg);
            req->max_attempts = (unsigned)n;
            break;
        case 'T':
            req->timeout_s = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(req->timeout_s >= 0))
                return usage_error("-T: expected seconds, 0 or more", optarg);
            break;
        case ':':
        default:
            if (optopt != 0)
                snprintf(opt, sizeof(opt), "-%c", optopt);
            else
                snprintf(opt, sizeof(opt), "%s", argv[optind - 1]);
            return usage_error(ch == ':' ? "an option needs a value" :
                               "unknown option", opt);
        }
    }
    if (optind != argc - 1)
        return usage_error(optind == argc ? "no PROMPT" : "one PROMPT only",
                           NULL);
    ctx->prompt = argv[optind];
    return 0;
}

int
main(int argc, char **argv)
{
    struct llmguard_request req = { .tokens_estimate = 100, .timeout_s = 5 };
    struct llmguard_result res;
    struct call_ctx ctx = { .http_timeout_ms = 30000 };
    const char *sock = NULL, *t = getenv("LLMGUARD_DEMO_HTTP_TIMEOUT_MS");
    int rc;

    if ((rc = parse_options(argc, argv, &req, &sock, &ctx)) == 1) {
        usage(stdout);
        return 0;
    }
    if (rc != 0)
        return rc;
    if (t != NULL)
        ctx.http_timeout_ms = atol(t);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    llmguard_t *g = llmguard_open(sock);
    rc = llmguard_execute_with_failover(g, &req, chat, &ctx, &res);
    printf("provider=%s success=%d failover_attempts=%u rate_limited=%d "
           "quota_allowed=%d quota_remaining=%llu wait_ms=%.1f guarded=%d "
           "tokens=%llu call_id=%s permit_id=%llu\n", res.provider,
           res.success, res.failover_attempts, res.rate_limited,
           res.quota_allowed, (unsigned long long)res.quota_remaining,
           res.ratelimit_wait_ms, res.guarded, (unsigned long long)ctx.tokens,
           res.call_id, (unsigned long long)res.permit_id);
    if (req.model != NULL)
        printf("model=%s\n", res.model);
    if (rc == 0)
        printf("%s\n", ctx.answer);
    else
        fprintf(stderr, "ratelimit_demo: %s: %s\n", llmguard_strerror(rc),
                llmguard_last_error(g));
    llmguard_close(g);
    curl_global_cleanup();
    return rc == 0 ? 0 : rc == LLMGUARD_EQUOTA ? 3 :
           rc == LLMGUARD_EUNAVAIL ? 69 : 1;
}
