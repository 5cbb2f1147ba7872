/*
 * ratelimit_demo - one OpenAI-compatible chat completion through llmguard.
 *
 *   ratelimit_demo [-s SOCKET] [-w WORKFLOW] [-t TENANT] [-p PROVIDER]
 *                  [-e TOKENS_ESTIMATE] [-a MAX_ATTEMPTS] [-T TIMEOUT_S]
 *                  [--traceparent TP] PROMPT
 *
 * llmguardd chooses the provider, waits for its token and checks the
 * quota; this program makes the HTTP call with libcurl and reports back.
 * For provider <name> it reads PROVIDER_<NAME>_BASE_URL (e.g.
 * https://api.groq.com/openai/v1), PROVIDER_<NAME>_API_KEY and
 * PROVIDER_<NAME>_MODEL from the environment; LLMGUARD_DEMO_HTTP_TIMEOUT_MS
 * bounds each HTTP request (default 30000).
 *
 * It prints one line "provider=... success=... failover_attempts=...
 * rate_limited=... quota_allowed=... quota_remaining=... wait_ms=...
 * guarded=... tokens=..." and then the answer.  Exit 0 on success, 1 when
 * the call failed, 3 over a hard quota, 69 without a daemon (fail-closed).
 */
#include <ctype.h>
#include <getopt.h>
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

/* Retry-After: pass the provider's wish on to llmguard. */
static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
    size_t len = size * n;

    if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
        llmguard_retry_after(atof(p + 12));
    return len;
}

/* The llmguard_call_fn: one HTTP request to provider. */
static llmguard_outcome
chat(const char *provider, void *arg, uint64_t *tokens_used)
{
    struct call_ctx *ctx = arg;
    const char *base = provider_env(provider, "BASE_URL");
    const char *key = provider_env(provider, "API_KEY");
    const char *model = provider_env(provider, "MODEL");
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

int
main(int argc, char **argv)
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
        { NULL, 0, NULL, 0 },
    };
    struct llmguard_request req = { .tokens_estimate = 100, .timeout_s = 5 };
    struct llmguard_result res;
    struct call_ctx ctx = { .http_timeout_ms = 30000 };
    const char *sock = NULL, *t = getenv("LLMGUARD_DEMO_HTTP_TIMEOUT_MS");
    int ch, rc;

    while ((ch = getopt_long(argc, argv, "s:w:t:p:e:a:T:P:", opts, NULL)) != -1) {
        switch (ch) {
        case 's': sock = optarg; break;
        case 'w': req.workflow_id = optarg; break;
        case 't': req.tenant_id = optarg; break;
        case 'p': req.preferred_provider = optarg; break;
        case 'e': req.tokens_estimate = strtoull(optarg, NULL, 10); break;
        case 'a': req.max_attempts = (unsigned)atoi(optarg); break;
        case 'T': req.timeout_s = atof(optarg); break;
        case 'P': req.traceparent = optarg; break;
        default:
            fprintf(stderr, "usage: ratelimit_demo [options] PROMPT\n");
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: ratelimit_demo [options] PROMPT\n");
        return 2;
    }
    ctx.prompt = argv[optind];
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
