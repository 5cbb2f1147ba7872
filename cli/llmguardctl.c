/* llmguardctl - the operator's control tool for llmguardd. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "client_internal.h"
#include "top.h"
#include "explain.h"

#define EXIT_DAEMON_ERROR 1
#define EXIT_USAGE 2
#define EXIT_UNAVAILABLE 69     /* EX_UNAVAILABLE */
#define EXIT_NOPERM 77          /* EX_NOPERM */

#define MAX_FLAGS 4

/* A command's own option: name (its long form), alias, and whether it
 * takes a value. */
struct flag {
    const char *name, *alias;
    bool has_arg;
};

struct command;

struct ctx {
    llmguard_t *g;
    bool json;
    const struct command *cmd;
    bool given[MAX_FLAGS];          /* by index in cmd->flags */
    const char *value[MAX_FLAGS];
};

/*
 * A command: exec gets the words after its name (its own flags and the
 * global options taken out, "--" honoured) and finds its flags with
 * flag_given().  min_args and max_args bound the words; an admin command
 * runs only by its full name.
 */
struct command {
    const char *name;
    const char *args;       /* usage after the name */
    int min_args, max_args;
    int (*exec)(struct ctx *ctx, int argc, char **argv);
    const char *help;
    const struct flag *flags;   /* NULL-name terminated, or NULL */
    bool admin;
};

/* Was the command's flag name given?  Its value into *value when asked. */
static bool
flag_given(const struct ctx *ctx, const char *name, const char **value)
{
    const struct flag *f = ctx->cmd->flags;

    for (int i = 0; f != NULL && f[i].name != NULL; i++)
        if (strcmp(f[i].name, name) == 0 && ctx->given[i]) {
            if (value != NULL)
                *value = ctx->value[i];
            return true;
        }
    return false;
}

/* The length of the valid UTF-8 character at p (n bytes left), or 0. */
static size_t
utf8_char(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80 ? 1 : p[0] >= 0xc2 && p[0] <= 0xdf ? 2 :
                 p[0] >= 0xe0 && p[0] <= 0xef ? 3 :
                 p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : 0;

    if (len == 0 || len > n)
        return 0;
    for (size_t k = 1; k < len; k++)
        if ((p[k] & 0xc0) != 0x80)
            return 0;
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
        return 0;   /* overlong, surrogate, above U+10FFFF */
    return len;
}

/* A JSON string for len bytes at ptr, never NULL: a byte that is not
 * UTF-8 becomes U+FFFD. */
static json_t *
json_text(const char *ptr, size_t len)
{
    json_t *j = json_stringn(ptr ? ptr : "", ptr ? len : 0);
    char *buf;
    size_t o = 0;

    if (j != NULL || (buf = malloc(len * 3 + 1)) == NULL)
        return j != NULL ? j : json_string("");
    for (size_t i = 0; i < len;) {
        size_t n = utf8_char((const unsigned char *)ptr + i, len - i);
        if (n == 0) {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(buf + o, ptr + i, n);
            o += n;
            i += n;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j != NULL ? j : json_string("");
}

/*
 * Say what went wrong and return status: with --json as one object
 * {"error": {"code", "message"}} on standard output, else as a line on
 * standard error.
 */
static int
fail_with(const struct ctx *ctx, int status, const char *code,
          const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int
fail_with(const struct ctx *ctx, int status, const char *code,
          const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!ctx->json) {
        fprintf(stderr, "%s%s\n", strncmp(msg, "usage: ", 7) == 0 ? "" :
                "llmguardctl: ", msg);
        return status;
    }
    json_t *o = json_pack("{s:{s:s, s:o}}", "error", "code", code,
                          "message", json_text(msg, strlen(msg)));
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(o);
    return status;
}

/* The JSON error code of a library error: the daemon's code when it sent
 * one (its message is "code: text"), else a name for rc. */
static const char *
error_code(int rc, const char *msg, char *buf, size_t len)
{
    static const struct { int rc; const char *code; } names[] = {
        { LLMGUARD_EUNAVAIL, "unavailable" },
        { LLMGUARD_ETIMEDOUT, "timeout" },
        { LLMGUARD_EQUOTA, "quota_exceeded" },
        { LLMGUARD_ENOPROVIDER, "no_provider" },
        { LLMGUARD_EPERM, "permission_denied" },
        { LLMGUARD_EINVAL, "bad_request" },
        { LLMGUARD_EPROTO, "protocol_error" },
        { LLMGUARD_ENOMEM, "out_of_memory" },
        { LLMGUARD_EBUSY, "busy" },
        { LLMGUARD_EINTERNAL, "internal" },
    };
    const char *colon = strchr(msg, ':');

    if (colon != NULL &&
        proto_errcode_from_name(msg, (size_t)(colon - msg)) < PROTO_E__COUNT) {
        snprintf(buf, len, "%.*s", (int)(colon - msg), msg);
        return buf;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].rc == rc)
            return names[i].code;
    return "error";
}

/* The exit status for a library error, after saying what went wrong. */
static int
fail_call(struct ctx *ctx, int rc)
{
    const char *msg = llmguard_last_error(ctx->g);
    char code[32];
    int status = rc == LLMGUARD_EUNAVAIL ? EXIT_UNAVAILABLE :
                 rc == LLMGUARD_EPERM ? EXIT_NOPERM : EXIT_DAEMON_ERROR;

    if (msg[0] == '\0')
        msg = llmguard_strerror(rc);
    return fail_with(ctx, status, error_code(rc, msg, code, sizeof(code)),
                     "%s", msg);
}

/* Print obj (NULL: it could not be made) as one line of JSON and release
 * it; an error object when it cannot be written, never an empty line. */
static int
print_json(struct ctx *ctx, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(15))
                     : NULL;

    json_decref(obj);
    if (text == NULL)
        return fail_with(ctx, EXIT_DAEMON_ERROR, "internal", "the reply "
                         "could not be written as JSON");
    puts(text);
    free(text);
    return 0;
}

static int
cmd_ping(struct ctx *ctx, int argc, char **argv)
{
    struct proto_rep rep;
    int rc = client_call(ctx->g, PROTO_OP_PING, NULL, &rep);

    if (rc < 0)
        return fail_call(ctx, rc);
    if (ctx->json)
        return print_json(ctx, json_pack("{s:b, s:s, s:f}", "ok", 1, "socket",
                                    llmguard_socket_path(ctx->g), "uptime_s",
                                    rep.u.ping.uptime_s));
    printf("llmguardd on %s is alive (up %.0f s)\n",
           llmguard_socket_path(ctx->g), rep.u.ping.uptime_s);
    return 0;
}

static json_t *
jstr(struct proto_str s)
{
    return json_text(s.ptr, s.len);
}

/* ISO-8601 UTC for a unix time, into buf. */
static const char *
iso8601(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;

    gmtime_r(&s, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* The fleet's configuration: whose, loaded when, and whether this host's
 * file is the same. */
static void
fleet_config_text(const struct proto_redis_config *c)
{
    char when[32];
    int h = c->hash.len < 12 ? (int)c->hash.len : 12;
    int own = c->own_hash.len < 12 ? (int)c->own_hash.len : 12;

    printf("fleet_config host %.*s's, loaded %s, hash %.*s; this host's "
           "file %s", (int)c->host.len, c->host.ptr,
           iso8601(c->loaded_at, when, sizeof(when)), h, c->hash.ptr,
           c->differs ? "differs" : "is the same");
    if (c->differs)
        printf(" (hash %.*s)", own, c->own_hash.ptr);
    printf("\n");
}

/* The optional fields of a provider, set into o when present. */
static void
provider_json_extra(json_t *o, const struct proto_provider_status *p)
{
    if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_COOLDOWN_CAUSE))
        json_object_set_new(o, "cooldown_cause", jstr(p->cooldown_cause));
    if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_COOLDOWN_SINCE))
        json_object_set_new(o, "cooldown_since", json_real(p->cooldown_since));
    if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_RETRY_AFTER_S))
        json_object_set_new(o, "retry_after_s", json_real(p->retry_after_s));
    if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_AVAILABLE_LLM_TOKENS))
        json_object_set_new(o, "available_llm_tokens",
                            json_real(p->available_llm_tokens));
    if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_RATE_SOURCE))
        json_object_set_new(o, "rate_source", jstr(p->rate_source));
    if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_TOKENS_PER_MIN_SOURCE))
        json_object_set_new(o, "tokens_per_min_source",
                            jstr(p->tokens_per_min_source));
    if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_COOLDOWN_HOST))
        json_object_set_new(o, "cooldown_host", jstr(p->cooldown_host));
}

/* The redis block of status, with the fleet's configuration once the
 * daemon has read it. */
static json_t *
redis_json(const struct proto_redis_status *r)
{
    json_t *o = json_pack("{s:o, s:o, s:I, s:o}", "url", jstr(r->url),
                          "state", jstr(r->state),
                          "hosts", (json_int_t)r->hosts,
                          "last_error", jstr(r->last_error));

    if (o != NULL && PROTO_HAS(r, PROTO_REDIS_STATUS_CONFIG))
        json_object_set_new(o, "config", json_pack(
            "{s:o, s:o, s:f, s:b, s:o}", "hash", jstr(r->config->hash),
            "host", jstr(r->config->host),
            "loaded_at", r->config->loaded_at,
            "differs", r->config->differs,
            "own_hash", jstr(r->config->own_hash)));
    return o;
}

/* The daemon's own fields, when it sent them (an older one does not). */
static void
daemon_json(json_t *o, const struct proto_status_rep *st)
{
    if (!PROTO_HAS(st, PROTO_STATUS_REP_VERSION))
        return;
    json_object_set_new(o, "version", jstr(st->version));
    json_object_set_new(o, "env_file", jstr(st->env_file));
    json_object_set_new(o, "database", jstr(st->database));
    json_object_set_new(o, "uptime_s", json_real(st->uptime_s));
    json_object_set_new(o, "connections", json_integer(
        (json_int_t)st->connections));
    json_object_set_new(o, "open_permits", json_integer(
        (json_int_t)st->open_permits));
    json_object_set_new(o, "last_flush",
                        PROTO_HAS(st, PROTO_STATUS_REP_LAST_FLUSH) ?
                        json_real(st->last_flush) : json_null());
    json_object_set_new(o, "store", jstr(st->store));
    if (PROTO_HAS(st, PROTO_STATUS_REP_STORE_ERROR))
        json_object_set_new(o, "store_error", jstr(st->store_error));
    if (PROTO_HAS(st, PROTO_STATUS_REP_REDIS))
        json_object_set_new(o, "redis", redis_json(st->redis));
}

/* The models of status as a JSON array. */
static json_t *
models_json(const struct proto_status_rep *st)
{
    const struct proto_model_status *ms = st->models.v;
    json_t *a = json_array();

    for (uint32_t i = 0; i < st->models.n; i++) {
        const struct proto_model_status *m = &ms[i];
        json_t *o = json_pack(
            "{s:o, s:o, s:o, s:o, s:f, s:f, s:I, s:o, s:f, s:o}",
            "alias", jstr(m->alias), "model", jstr(m->model),
            "provider", jstr(m->provider), "group", jstr(m->group),
            "rate_per_sec", m->rate_per_sec,
            "tokens_per_min", m->tokens_per_min,
            "waiters", (json_int_t)m->waiters, "state", jstr(m->state),
            "cooldown_remaining_s", m->cooldown_remaining_s,
            "latency_ewma_ms",
            PROTO_HAS(m, PROTO_MODEL_STATUS_LATENCY_EWMA_MS) ?
                json_real(m->latency_ewma_ms) : json_null());
        if (PROTO_HAS(m, PROTO_MODEL_STATUS_AVAILABLE_TOKENS))
            json_object_set_new(o, "available_tokens",
                                json_real(m->available_tokens));
        if (PROTO_HAS(m, PROTO_MODEL_STATUS_MAX_TOKENS))
            json_object_set_new(o, "max_tokens", json_real(m->max_tokens));
        if (PROTO_HAS(m, PROTO_MODEL_STATUS_AVAILABLE_LLM_TOKENS))
            json_object_set_new(o, "available_llm_tokens",
                                json_real(m->available_llm_tokens));
        if (PROTO_HAS(m, PROTO_MODEL_STATUS_COOLDOWN_CAUSE))
            json_object_set_new(o, "cooldown_cause", jstr(m->cooldown_cause));
        if (PROTO_HAS(m, PROTO_MODEL_STATUS_COOLDOWN_SINCE))
            json_object_set_new(o, "cooldown_since",
                                json_real(m->cooldown_since));
        if (PROTO_HAS(m, PROTO_MODEL_STATUS_RETRY_AFTER_S))
            json_object_set_new(o, "retry_after_s", json_real(m->retry_after_s));
        json_array_append_new(a, o);
    }
    return a;
}

/* The daily limits' counters, when the daemon has any. */
static void
daily_json(json_t *o, const struct proto_status_rep *st)
{
    const struct proto_daily_limit *dl = st->daily_limits.v;
    json_t *arr;

    if (!PROTO_HAS(st, PROTO_STATUS_REP_DAILY_LIMITS))
        return;
    arr = json_array();
    for (uint32_t i = 0; i < st->daily_limits.n; i++) {
        json_t *d = json_pack(
            "{s:o, s:o, s:I, s:I, s:I, s:o}", "name", jstr(dl[i].name),
            "unit", jstr(dl[i].unit), "limit", (json_int_t)dl[i].limit,
            "used", (json_int_t)dl[i].used,
            "remaining", (json_int_t)dl[i].remaining, "frees_at",
            PROTO_HAS(&dl[i], PROTO_DAILY_LIMIT_FREES_AT) ?
                json_real(dl[i].frees_at) : json_null());
        /* Multi-host mode: used is the fleet's; this host's part. */
        if (PROTO_HAS(&dl[i], PROTO_DAILY_LIMIT_OWN_USED))
            json_object_set_new(d, "own_used",
                                json_integer((json_int_t)dl[i].own_used));
        json_array_append_new(arr, d);
    }
    json_object_set_new(o, "daily_limits", arr);
}

/* Under the table: each daily limit, what it used (multi-host mode: the
 * fleet, and this host's part) and when it frees. */
static void
daily_text(const struct proto_status_rep *st)
{
    const struct proto_daily_limit *dl = st->daily_limits.v;
    char when[32], own[64];

    for (uint32_t i = 0; i < st->daily_limits.n; i++) {
        own[0] = '\0';
        if (PROTO_HAS(&dl[i], PROTO_DAILY_LIMIT_OWN_USED))
            snprintf(own, sizeof(own), " by the fleet (this host %llu)",
                     (unsigned long long)dl[i].own_used);
        printf("%.*s: %llu of %llu %.*s a day used%s, frees %s\n",
               (int)dl[i].name.len, dl[i].name.ptr,
               (unsigned long long)dl[i].used,
               (unsigned long long)dl[i].limit, (int)dl[i].unit.len,
               dl[i].unit.ptr, own,
               PROTO_HAS(&dl[i], PROTO_DAILY_LIMIT_FREES_AT) ?
               iso8601(dl[i].frees_at, when, sizeof(when)) : "-");
    }
}

/* The default quota limit in force and, in multi-host mode, the host
 * whose configuration the quota settings are. */
static void
quota_settings_json(json_t *o, const struct proto_status_rep *st)
{
    if (PROTO_HAS(st, PROTO_STATUS_REP_DEFAULT_QUOTA_TOKENS))
        json_object_set_new(o, "default_quota_tokens", json_integer(
                                (json_int_t)st->default_quota_tokens));
    if (PROTO_HAS(st, PROTO_STATUS_REP_QUOTA_FROM))
        json_object_set_new(o, "quota_from", jstr(st->quota_from));
}

static void
quota_settings_text(const struct proto_status_rep *st)
{
    if (PROTO_HAS(st, PROTO_STATUS_REP_DEFAULT_QUOTA_TOKENS))
        printf("quota_limit  %llu by default\n",
               (unsigned long long)st->default_quota_tokens);
    if (PROTO_HAS(st, PROTO_STATUS_REP_QUOTA_FROM))
        printf("quota_from   host %.*s's configuration\n",
               (int)st->quota_from.len, st->quota_from.ptr);
}

static int
status_json(struct ctx *ctx, const struct proto_status_rep *st)
{
    const struct proto_provider_status *ps = st->providers.v;
    json_t *provs = json_array(), *doc;

    for (uint32_t i = 0; i < st->providers.n; i++) {
        json_t *o = json_pack(
            "{s:o, s:f, s:f, s:f, s:o, s:f, s:o, s:I, s:f}",
            "name", jstr(ps[i].name),
            "available_tokens", ps[i].available_tokens,
            "rate_per_sec", ps[i].rate_per_sec,
            "max_tokens", ps[i].max_tokens,
            "state", jstr(ps[i].state),
            "cooldown_remaining_s", ps[i].cooldown_remaining_s,
            "latency_ewma_ms",
            PROTO_HAS(&ps[i], PROTO_PROVIDER_STATUS_LATENCY_EWMA_MS) ?
                json_real(ps[i].latency_ewma_ms) : json_null(),
            "waiters", (json_int_t)ps[i].waiters,
            "tokens_per_min", ps[i].tokens_per_min);
        provider_json_extra(o, &ps[i]);
        json_array_append_new(provs, o);
    }
    doc = json_pack("{s:b, s:o, s:o, s:f, s:o}", "enabled", st->enabled,
                    "policy", jstr(st->policy),
                    "enforcement", jstr(st->enforcement),
                    "window_days", st->window_days, "providers", provs);
    quota_settings_json(doc, st);
    if (PROTO_HAS(st, PROTO_STATUS_REP_MODELS))
        json_object_set_new(doc, "models", models_json(st));
    daemon_json(doc, st);
    daily_json(doc, st);
    return print_json(ctx, doc);
}

/* The daemon's own lines of the text status. */
static void
daemon_text(const struct proto_status_rep *st)
{
    char when[32];

    if (!PROTO_HAS(st, PROTO_STATUS_REP_VERSION))
        return;
    printf("version      %.*s\n", (int)st->version.len, st->version.ptr);
    printf("env_file     %.*s\n", st->env_file.len ? (int)st->env_file.len :
           4, st->env_file.len ? st->env_file.ptr : "none");
    printf("database     %.*s\n", (int)st->database.len, st->database.ptr);
    printf("uptime       %.0f s\n", st->uptime_s);
    printf("connections  %llu\n", (unsigned long long)st->connections);
    printf("permits      %llu open\n", (unsigned long long)st->open_permits);
    printf("last_flush   %s\n", PROTO_HAS(st, PROTO_STATUS_REP_LAST_FLUSH) ?
           iso8601(st->last_flush, when, sizeof(when)) : "-");
    printf("store        %.*s%s%.*s\n", (int)st->store.len, st->store.ptr,
           PROTO_HAS(st, PROTO_STATUS_REP_STORE_ERROR) ? ": " : "",
           (int)st->store_error.len, st->store_error.ptr);
    if (PROTO_HAS(st, PROTO_STATUS_REP_REDIS)) {
        const struct proto_redis_status *r = st->redis;
        printf("redis        %.*s %.*s, %llu host(s)%s%.*s\n",
               (int)r->url.len, r->url.ptr, (int)r->state.len, r->state.ptr,
               (unsigned long long)r->hosts, r->last_error.len ? ": " : "",
               (int)r->last_error.len, r->last_error.ptr);
        if (PROTO_HAS(r, PROTO_REDIS_STATUS_CONFIG))
            fleet_config_text(r->config);
    }
}

/* Where a provider's limits come from: configured, learned from its
 * headers, or none (yet). */
static void
limit_sources_text(const struct proto_provider_status *p)
{
    if (!PROTO_HAS(p, PROTO_PROVIDER_STATUS_RATE_SOURCE) ||
        !PROTO_HAS(p, PROTO_PROVIDER_STATUS_TOKENS_PER_MIN_SOURCE))
        return;
    printf("%.*s: rate %.*s, tokens_per_min %.*s\n", (int)p->name.len,
           p->name.ptr, (int)p->rate_source.len, p->rate_source.ptr,
           (int)p->tokens_per_min_source.len, p->tokens_per_min_source.ptr);
}

/* Under the table: why each degraded provider is, the LLM tokens of each
 * TOKENS_PER_MIN bucket, and where the limits come from. */
static void
provider_notes(const struct proto_status_rep *st)
{
    const struct proto_provider_status *ps = st->providers.v;
    char when[32];

    for (uint32_t i = 0; i < st->providers.n; i++) {
        const struct proto_provider_status *p = &ps[i];
        if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_COOLDOWN_CAUSE)) {
            printf("%.*s: degraded by %.*s since %s", (int)p->name.len,
                   p->name.ptr, (int)p->cooldown_cause.len,
                   p->cooldown_cause.ptr,
                   iso8601(p->cooldown_since, when, sizeof(when)));
            if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_RETRY_AFTER_S))
                printf(", Retry-After %g s", p->retry_after_s);
            if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_COOLDOWN_HOST))
                printf(", from host %.*s", (int)p->cooldown_host.len,
                       p->cooldown_host.ptr);
            printf("\n");
        }
        if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_AVAILABLE_LLM_TOKENS))
            printf("%.*s: %.0f of %.0f LLM tokens available\n",
                   (int)p->name.len, p->name.ptr, p->available_llm_tokens,
                   p->tokens_per_min);
        limit_sources_text(p);
    }
}

/* A provider's AVAILABLE column: "-" while its rate is neither configured
 * nor learned (the bucket standing in for it holds 1e15, not a limit). */
static void
available_text(const struct proto_provider_status *p, char *buf, size_t len)
{
    if (PROTO_HAS(p, PROTO_PROVIDER_STATUS_RATE_SOURCE) &&
        p->rate_source.len == 4 && memcmp(p->rate_source.ptr, "none", 4) == 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.2f", p->available_tokens);
}

/* The provider table of the text status. */
static void
provider_table(const struct proto_status_rep *st)
{
    const struct proto_provider_status *ps = st->providers.v;

    printf("\n%-16s %10s %8s %8s %-10s %9s %11s %7s %10s\n", "PROVIDER",
           "AVAILABLE", "RATE/S", "MAX", "STATE", "COOLDOWN", "LATENCY_MS",
           "WAITERS", "TOKENS/MIN");
    for (uint32_t i = 0; i < st->providers.n; i++) {
        char tpm[32], cool[32], lat[32], avail[32];
        if (ps[i].tokens_per_min > 0)
            snprintf(tpm, sizeof(tpm), "%.0f", ps[i].tokens_per_min);
        else
            snprintf(tpm, sizeof(tpm), "-");
        if (ps[i].cooldown_remaining_s > 0)
            snprintf(cool, sizeof(cool), "%.1fs", ps[i].cooldown_remaining_s);
        else
            snprintf(cool, sizeof(cool), "-");
        if (PROTO_HAS(&ps[i], PROTO_PROVIDER_STATUS_LATENCY_EWMA_MS))
            snprintf(lat, sizeof(lat), "%.1f", ps[i].latency_ewma_ms);
        else
            snprintf(lat, sizeof(lat), "-");
        available_text(&ps[i], avail, sizeof(avail));
        printf("%-16.*s %10s %8g %8g %-10.*s %9s %11s %7llu %10s\n",
               (int)ps[i].name.len, ps[i].name.ptr, avail,
               ps[i].rate_per_sec, ps[i].max_tokens, (int)ps[i].state.len,
               ps[i].state.ptr, cool, lat, (unsigned long long)ps[i].waiters,
               tpm);
    }
}

/* The model table of the text status: each deployment's bucket (a dash
 * where it has no RPM or TPM of its own) and health. */
static void
model_table(const struct proto_status_rep *st)
{
    const struct proto_model_status *ms = st->models.v;

    if (st->models.n == 0)
        return;
    printf("\n%-16s %-24s %-12s %-16s %10s %8s %-10s %9s %7s %10s\n",
           "MODEL", "MODEL_ID", "PROVIDER", "GROUP", "AVAILABLE", "RATE/S",
           "STATE", "COOLDOWN", "WAITERS", "TOKENS/MIN");
    for (uint32_t i = 0; i < st->models.n; i++) {
        const struct proto_model_status *m = &ms[i];
        char avail[32], rate[32], cool[32], tpm[32];
        snprintf(avail, sizeof(avail), "-");
        snprintf(rate, sizeof(rate), "-");
        snprintf(cool, sizeof(cool), "-");
        snprintf(tpm, sizeof(tpm), "-");
        if (PROTO_HAS(m, PROTO_MODEL_STATUS_AVAILABLE_TOKENS)) {
            snprintf(avail, sizeof(avail), "%.2f", m->available_tokens);
            snprintf(rate, sizeof(rate), "%g", m->rate_per_sec);
        }
        if (m->cooldown_remaining_s > 0)
            snprintf(cool, sizeof(cool), "%.1fs", m->cooldown_remaining_s);
        if (PROTO_HAS(m, PROTO_MODEL_STATUS_AVAILABLE_LLM_TOKENS))
            snprintf(tpm, sizeof(tpm), "%.0f/%.0f", m->available_llm_tokens,
                     m->tokens_per_min);
        printf("%-16.*s %-24.*s %-12.*s %-16.*s %10s %8s %-10.*s %9s %7llu "
               "%10s\n", (int)m->alias.len, m->alias.ptr, (int)m->model.len,
               m->model.ptr, (int)m->provider.len, m->provider.ptr,
               (int)m->group.len, m->group.ptr, avail, rate,
               (int)m->state.len, m->state.ptr, cool,
               (unsigned long long)m->waiters, tpm);
    }
}

static int
cmd_status(struct ctx *ctx, int argc, char **argv)
{
    struct proto_rep rep;
    const struct proto_status_rep *st = &rep.u.status;
    int rc = client_call(ctx->g, PROTO_OP_STATUS, NULL, &rep);

    if (rc < 0)
        return fail_call(ctx, rc);
    if (ctx->json)
        return status_json(ctx, st);
    printf("enabled      %s\n", st->enabled ? "true" : "false");
    printf("policy       %.*s\n", (int)st->policy.len, st->policy.ptr);
    printf("enforcement  %.*s\n", (int)st->enforcement.len,
           st->enforcement.ptr);
    printf("window_days  %g\n", st->window_days);
    quota_settings_text(st);
    daemon_text(st);
    if (st->providers.n == 0) {
        printf("\nno providers configured "
               "(set PROVIDER_<NAME>_RATE_PER_SEC)\n");
        return 0;
    }
    provider_table(st);
    provider_notes(st);
    model_table(st);
    daily_text(st);
    return 0;
}

/* A quota request naming one workflow, or one tenant. */
static void
subject_req(struct proto_quota_subject_req *req, const char *id, bool tenant)
{
    struct proto_str s = { id, (uint32_t)strlen(id) };

    memset(req, 0, sizeof(*req));
    if (tenant) {
        req->tenant_id = s;
        PROTO_SET(req, PROTO_QUOTA_SUBJECT_REQ_TENANT_ID);
    } else {
        req->workflow_id = s;
        PROTO_SET(req, PROTO_QUOTA_SUBJECT_REQ_WORKFLOW_ID);
    }
}

static int
quota_show(struct ctx *ctx, const char *id, bool tenant)
{
    struct proto_quota_subject_req req;
    struct proto_rep rep;
    const struct proto_quota_status_rep *st = &rep.u.quota_status;
    char b1[32], b2[32], b3[32];
    int rc;

    subject_req(&req, id, tenant);
    if ((rc = client_call(ctx->g, PROTO_OP_QUOTA_STATUS, &req, &rep)) < 0)
        return fail_call(ctx, rc);
    bool unseen = PROTO_HAS(st, PROTO_QUOTA_STATUS_REP_KNOWN) && !st->known;

    if (ctx->json)
        return print_json(ctx, json_pack("{s:o, s:I, s:I, s:I, s:f, s:f, "
                                         "s:o, s:b}",
            "subject", jstr(st->subject),
            "tokens_used", (json_int_t)st->tokens_used,
            "tokens_remaining", (json_int_t)st->tokens_remaining,
            "tokens_limit", (json_int_t)st->tokens_limit,
            "window_start", st->window_start,
            "window_end", st->window_end,
            "reset_at", PROTO_HAS(st, PROTO_QUOTA_STATUS_REP_RESET_AT) ?
                            json_real(st->reset_at) : json_null(),
            "known", !unseen));
    if (unseen)
        fprintf(stderr, "llmguardctl: %.*s: never seen (no usage in the "
                "window, no override): the default applies\n",
                (int)st->subject.len, st->subject.ptr);
    printf("subject           %.*s\n", (int)st->subject.len, st->subject.ptr);
    printf("tokens_used       %llu\n", (unsigned long long)st->tokens_used);
    printf("tokens_remaining  %llu\n",
           (unsigned long long)st->tokens_remaining);
    printf("tokens_limit      %llu\n", (unsigned long long)st->tokens_limit);
    printf("window_start      %s\n", iso8601(st->window_start, b1, sizeof(b1)));
    printf("window_end        %s\n", iso8601(st->window_end, b2, sizeof(b2)));
    printf("reset_at          %s\n",
           PROTO_HAS(st, PROTO_QUOTA_STATUS_REP_RESET_AT) ?
           iso8601(st->reset_at, b3, sizeof(b3)) : "-");
    return 0;
}

/* quota set ID TOKENS, quota reset ID: the admin ops. */
static int
quota_change(struct ctx *ctx, enum proto_op op, const char *id, bool tenant,
             uint64_t limit)
{
    struct proto_quota_subject_req req;
    struct proto_rep rep;
    int rc;

    subject_req(&req, id, tenant);
    req.limit = limit;
    if ((rc = client_call(ctx->g, op, &req, &rep)) < 0)
        return fail_call(ctx, rc);
    if (op == PROTO_OP_QUOTA_SET) {
        const struct proto_quota_set_rep *r = &rep.u.quota_set;
        if (ctx->json)
            return print_json(ctx, json_pack("{s:o, s:I}", "subject",
                                        jstr(r->subject), "tokens_limit",
                                        (json_int_t)r->tokens_limit));
        printf("%.*s: limit set to %llu tokens\n", (int)r->subject.len,
               r->subject.ptr, (unsigned long long)r->tokens_limit);
    } else if (op == PROTO_OP_QUOTA_UNSET) {
        const struct proto_quota_unset_rep *r = &rep.u.quota_unset;
        if (ctx->json)
            return print_json(ctx, json_pack("{s:o, s:I}", "subject",
                                        jstr(r->subject), "tokens_limit",
                                        (json_int_t)r->tokens_limit));
        printf("%.*s: override dropped, the default of %llu tokens "
               "applies\n", (int)r->subject.len, r->subject.ptr,
               (unsigned long long)r->tokens_limit);
    } else {
        const struct proto_quota_reset_rep *r = &rep.u.quota_reset;
        if (ctx->json)
            return print_json(ctx, json_pack("{s:o, s:b}", "subject",
                                        jstr(r->subject), "reset", 1));
        printf("%.*s: usage reset\n", (int)r->subject.len, r->subject.ptr);
    }
    return 0;
}

/* quota list: the subjects using the most, most first. */
static int
quota_list(struct ctx *ctx, bool tenant, uint64_t top)
{
    struct proto_quota_list_req req = { 0 };
    struct proto_rep rep;
    const struct proto_quota_list_rep *r = &rep.u.quota_list;
    const struct proto_quota_entry *v;
    json_t *list;
    int rc;

    req.tenant = tenant;
    req.top = top;
    req.has = PROTO_BIT(PROTO_QUOTA_LIST_REQ_TENANT) |
              PROTO_BIT(PROTO_QUOTA_LIST_REQ_TOP);
    if ((rc = client_call(ctx->g, PROTO_OP_QUOTA_LIST, &req, &rep)) < 0)
        return fail_call(ctx, rc);
    v = r->subjects.v;
    if (ctx->json) {
        list = json_array();
        for (uint32_t i = 0; i < r->subjects.n; i++)
            json_array_append_new(list, json_pack(
                "{s:o, s:I, s:I, s:I, s:b}", "subject", jstr(v[i].subject),
                "tokens_used", (json_int_t)v[i].tokens_used,
                "tokens_limit", (json_int_t)v[i].tokens_limit,
                "tokens_remaining", (json_int_t)v[i].tokens_remaining,
                "override", v[i].override));
        return print_json(ctx, json_pack("{s:o, s:I}", "subjects", list, "total",
                                    (json_int_t)r->total));
    }
    printf("%-40s %12s %12s %12s\n", "SUBJECT", "USED", "LIMIT",
           "REMAINING");
    for (uint32_t i = 0; i < r->subjects.n; i++)
        printf("%-40.*s %12llu %12llu%s %12llu\n", (int)v[i].subject.len,
               v[i].subject.ptr, (unsigned long long)v[i].tokens_used,
               (unsigned long long)v[i].tokens_limit,
               v[i].override ? "*" : " ",
               (unsigned long long)v[i].tokens_remaining);
    printf("%u of %llu %s%s\n", r->subjects.n,
           (unsigned long long)r->total, tenant ? "tenants" : "workflows",
           r->subjects.n < r->total ? " (--top N for more)" : "");
    return 0;
}

/* A whole number from 0 to INT64_MAX, or -1 (said, naming what). */
static int
whole_number(struct ctx *ctx, const char *s, const char *what, uint64_t *out)
{
    char *end;
    unsigned long long n;

    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || !isdigit((unsigned char)s[0]) ||
        n > INT64_MAX) {
        fail_with(ctx, EXIT_USAGE, "usage", "%s must be a whole number, not "
                  "'%s'", what, s);
        return -1;
    }
    *out = n;
    return 0;
}

/* The usage of a command, as a usage error (exit 2). */
static int
usage_error(struct ctx *ctx, const char *text)
{
    return fail_with(ctx, EXIT_USAGE, "usage", "usage: %s", text);
}

static const char quota_usage[] =
    "llmguardctl quota [show] ID [--tenant] | quota set ID TOKENS "
    "[--tenant] | quota reset ID [--tenant] | quota unset ID [--tenant] | "
    "quota list [--tenant] [--top N]";

/*
 * quota [show] ID | quota set ID TOKENS | quota reset ID | quota unset ID
 * | quota list [--top N], each with --tenant (-t).  After "quota" these
 * words are commands (an id spelled like one is given as "quota show
 * ID"); one alone, or with too few words, is a usage error; an admin
 * subcommand runs only by its full name.
 */
static int
cmd_quota(struct ctx *ctx, int argc, char **argv)
{
    static const char *const admin[] = { "set", "reset", "unset" };
    bool tenant = flag_given(ctx, "--tenant", NULL);
    const char *w = argv[0], *top;
    uint64_t n = 20;

    if (argc == 1 && strcmp(w, "list") == 0) {
        if (flag_given(ctx, "--top", &top) &&
            whole_number(ctx, top, "quota list --top", &n) < 0)
            return EXIT_USAGE;
        return quota_list(ctx, tenant, n);
    }

    for (size_t i = 0; i < sizeof(admin) / sizeof(admin[0]); i++)
        if (w[0] != '\0' && strcmp(w, admin[i]) != 0 &&
            strncmp(admin[i], w, strlen(w)) == 0 && argc > 1)
            return fail_with(ctx, EXIT_USAGE, "usage", "quota %s: an admin "
                             "command runs only by its full name: quota %s",
                             w, admin[i]);
    if (argc == 1 && strcmp(w, "show") != 0 && strcmp(w, "set") != 0 &&
        strcmp(w, "reset") != 0 && strcmp(w, "unset") != 0)
        return quota_show(ctx, w, tenant);
    if (argc == 2 && strcmp(w, "show") == 0)
        return quota_show(ctx, argv[1], tenant);
    if (argc == 2 && strcmp(w, "reset") == 0)
        return quota_change(ctx, PROTO_OP_QUOTA_RESET, argv[1], tenant, 0);
    if (argc == 2 && strcmp(w, "unset") == 0)
        return quota_change(ctx, PROTO_OP_QUOTA_UNSET, argv[1], tenant, 0);
    if (argc == 3 && strcmp(w, "set") == 0) {
        if (whole_number(ctx, argv[2], "quota set: TOKENS", &n) < 0)
            return EXIT_USAGE;
        return quota_change(ctx, PROTO_OP_QUOTA_SET, argv[1], tenant, n);
    }
    return usage_error(ctx, quota_usage);
}

/* One page of structured metrics into the JSON document and the table. */
static void
metrics_page(struct ctx *ctx, const struct proto_metrics_rep *r, json_t *doc,
             bool *header)
{
    const struct proto_metric_family *fam = r->families.v;

    for (uint32_t i = 0; i < r->families.n; i++) {
        const struct proto_metric_family *f = &fam[i];
        const struct proto_metric_series *ser = f->series.v;
        char kind[16];
        snprintf(kind, sizeof(kind), "%.*ss", (int)f->type.len, f->type.ptr);
        json_t *group = json_object_get(doc, kind);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)f->name.len, f->name.ptr);
        json_t *list = json_object_get(group, name);
        if (list == NULL) {
            list = json_array();
            json_object_set_new(group, name, list);
        }
        for (uint32_t k = 0; k < f->series.n; k++) {
            const struct proto_metric_series *s = &ser[k];
            json_t *labels = json_object();
            char lab[1024] = "";
            size_t off = 0;
            for (uint32_t l = 0; l < s->labels.n && l < f->label_names.n;
                 l++) {
                char key[64];
                snprintf(key, sizeof(key), "%.*s",
                         (int)f->label_names.v[l].len,
                         f->label_names.v[l].ptr);
                json_object_set_new(labels, key, jstr(s->labels.v[l]));
                off += (size_t)snprintf(lab + off, off < sizeof(lab) ?
                                        sizeof(lab) - off : 0, "%s%s=%.*s",
                                        l ? "," : "", key,
                                        (int)s->labels.v[l].len,
                                        s->labels.v[l].ptr);
            }
            if (f->type.ptr[0] == 'h') {
                json_t *buckets = json_array();
                for (uint32_t b = 0; b < s->buckets.n && b < f->bounds.n; b++)
                    json_array_append_new(buckets, json_pack(
                        "{s:f, s:I}", "le", f->bounds.v[b],
                        "count", (json_int_t)s->buckets.v[b]));
                json_array_append_new(buckets, json_pack(
                    "{s:s, s:I}", "le", "+Inf", "count",
                    (json_int_t)s->count));
                json_array_append_new(list, json_pack(
                    "{s:o, s:I, s:f, s:o}", "labels", labels, "count",
                    (json_int_t)s->count, "sum", s->sum, "buckets", buckets));
            } else {
                json_array_append_new(list, json_pack(
                    "{s:o, s:f}", "labels", labels, "value", s->value));
            }
            if (ctx->json)
                continue;
            if (!*header) {
                printf("%-34s %-58s %s\n", "METRIC", "LABELS", "VALUE");
                *header = true;
            }
            if (f->type.ptr[0] == 'h')
                printf("%-34s %-58s count=%llu sum=%g\n", name,
                       lab[0] ? lab : "-", (unsigned long long)s->count,
                       s->sum);
            else
                printf("%-34s %-58s %g\n", name, lab[0] ? lab : "-",
                       s->value);
        }
    }
}

/* metrics [--prometheus]: every page of the registry. */
static int
cmd_metrics(struct ctx *ctx, int argc, char **argv)
{
    struct proto_metrics_req req = { 0 };
    struct proto_rep rep;
    bool prom = flag_given(ctx, "--prometheus", NULL), header = false;
    json_t *doc;
    int rc;

    if (prom) {
        req.format = (struct proto_str){ "prometheus", 10 };
        PROTO_SET(&req, PROTO_METRICS_REQ_FORMAT);
    }
    doc = json_pack("{s:{}, s:{}, s:{}}", "counters", "gauges", "histograms");
    for (;;) {
        if ((rc = client_call(ctx->g, PROTO_OP_METRICS, &req, &rep)) < 0) {
            json_decref(doc);
            return fail_call(ctx, rc);
        }
        if (prom)
            fwrite(rep.u.metrics.text.ptr, 1, rep.u.metrics.text.len, stdout);
        else
            metrics_page(ctx, &rep.u.metrics, doc, &header);
        if (!PROTO_HAS(&rep.u.metrics, PROTO_METRICS_REP_NEXT_CURSOR))
            break;
        req.cursor = rep.u.metrics.next_cursor;
        PROTO_SET(&req, PROTO_METRICS_REQ_CURSOR);
    }
    if (ctx->json && !prom)
        return print_json(ctx, doc);
    json_decref(doc);
    return 0;
}

static int
cmd_reload(struct ctx *ctx, int argc, char **argv)
{
    struct proto_rep rep;
    const struct proto_reload_rep *r = &rep.u.reload;
    int rc = client_call(ctx->g, PROTO_OP_RELOAD, NULL, &rep);

    if (rc < 0)
        return fail_call(ctx, rc);
    if (ctx->json)
        return print_json(ctx, json_pack("{s:b, s:o, s:I}", "reloaded", 1,
                                    "env_file", jstr(r->env_file),
                                    "providers", (json_int_t)r->providers));
    printf("reloaded %.*s: %llu provider(s)\n",
           r->env_file.len ? (int)r->env_file.len : 15,
           r->env_file.len ? r->env_file.ptr : "the environment",
           (unsigned long long)r->providers);
    return 0;
}

/* top [-n N] [-d SECONDS]: the live view (top.c). */
static int
cmd_top(struct ctx *ctx, int argc, char **argv)
{
    struct top_options o = { .interval_s = 1, .count = 0 };
    const char *n = NULL, *d = NULL;
    char *end;
    int rc;

    if (ctx->json)
        return fail_with(ctx, EXIT_USAGE, "usage", "top has no --json: use "
                         "status --json and metrics --json");
    if (flag_given(ctx, "-n", &n)) {
        errno = 0;
        o.count = strtol(n, &end, 10);
        if (errno != 0 || end == n || *end != '\0' || o.count < 1)
            return fail_with(ctx, EXIT_USAGE, "usage", "top -n %s: expected "
                             "a number of refreshes, 1 or more", n);
    }
    if (flag_given(ctx, "-d", &d)) {
        o.interval_s = strtod(d, &end);
        if (end == d || *end != '\0' || !(o.interval_s >= 0.1) ||
            o.interval_s > 3600)
            return fail_with(ctx, EXIT_USAGE, "usage", "top -d %s: expected "
                             "seconds from 0.1 to 3600", d);
    }
    if ((rc = top_run(ctx->g, &o)) < 0)
        return fail_call(ctx, rc);
    return 0;
}

static const struct flag top_flags[] = {
    { "-n", "--iterations", true }, { "-d", "--delay", true },
    { NULL, NULL, false },
};
static const struct flag quota_flags[] = {
    { "--tenant", "-t", false }, { "--top", NULL, true },
    { NULL, NULL, false },
};
static const struct flag metrics_flags[] = {
    { "--prometheus", "-p", false }, { NULL, NULL, false },
};

/* explain's lookup that found something (by permit id first when both
 * may), into rep; 1 when found, 0 when not, or a library error. */
static int
explain_lookup(struct ctx *ctx, const struct explain_query *q,
               struct proto_rep *rep)
{
    struct proto_explain_req req;
    int rc;

    for (int permit = 1; permit >= 0; permit--) {
        if (!(permit ? q->permit : q->call))
            continue;
        explain_request(q, permit, &req);
        if ((rc = client_call(ctx->g, PROTO_OP_EXPLAIN, &req, rep)) < 0)
            return rc;
        if (rep->u.explain.decisions.n > 0)
            return 1;
    }
    return 0;
}

/* explain [permit:N | call:ID | ID]: what llmguardd decided. */
static int
cmd_explain(struct ctx *ctx, int argc, char **argv)
{
    const struct proto_explain_rep *r;
    struct explain_query q;
    struct proto_rep rep;
    const char *id = argv[0];
    int rc;

    if (id[0] == '\0' || explain_parse(id, &q) < 0)
        return usage_error(ctx, "llmguardctl explain [permit:]PERMIT-ID | "
                           "[call:]CALL-ID");
    if ((rc = explain_lookup(ctx, &q, &rep)) < 0)
        return fail_call(ctx, rc);
    r = &rep.u.explain;
    if (ctx->json)
        print_json(ctx, explain_json(r));
    else if (rc == 1)
        explain_text(stdout, r, id);
    if (rc == 1)
        return 0;
    if (r->capacity == 0)
        fprintf(stderr, "llmguardctl: explain %s: llmguardd keeps no "
                "decisions (LLMGUARD_DECISIONS=0)\n", id);
    else
        fprintf(stderr, "llmguardctl: explain %s: not among the %llu "
                "decisions llmguardd holds (the last %llu are kept): an "
                "unknown id, or one evicted since\n", id,
                (unsigned long long)r->held, (unsigned long long)r->capacity);
    return EXIT_DAEMON_ERROR;
}

static const struct command commands[] = {
    { "ping", "", 0, 0, cmd_ping, "check that llmguardd answers", NULL,
      false },
    { "reload", "", 0, 0, cmd_reload,
      "re-read the env file (admin); a bad one keeps the old config", NULL,
      true },
    { "status", "", 0, 0, cmd_status,
      "rate limiting state and every provider's bucket", NULL, false },
    { "metrics", "[--prometheus]", 0, 0, cmd_metrics,
      "counters, gauges and histograms (or Prometheus text)", metrics_flags,
      false },
    { "quota", "[show|set|reset|unset|list] [ID] [TOKENS] [--tenant]", 1, 3,
      cmd_quota, "a workflow's (or --tenant's) quota; set, reset or unset "
      "it (admin); list [--top N] the top users", quota_flags, false },
    { "top", "[-n N] [-d SECONDS]", 0, 0, cmd_top,
      "a live view: providers, busiest workflows, permits/s; q quits",
      top_flags, false },
    { "explain", "[permit:|call:]ID", 1, 1, cmd_explain,
      "why a permit or call went where it went, or was refused", NULL,
      false },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
usage(FILE *fp)
{
    fprintf(fp, "usage: llmguardctl [-s SOCKET] [-T SECONDS] [--json] COMMAND "
                "[ARGS] [--] [ID]\n"
                "\noptions (before or after the command):\n"
                "  -s, --socket PATH  llmguardd's socket (default: "
                "$LLMGUARD_SOCKET, else the per-user path)\n"
                "  -T, --timeout S    give up on a daemon that does not "
                "answer within S\n"
                "                     seconds (default: "
                "$LLMGUARD_CLIENT_TIMEOUT_MS, else 2 s)\n"
                "  -j, --json         print one JSON object, errors too\n"
                "  -h, --help         this text\n"
                "  -V, --version      print the version\n"
                "  --                 the words after it are not options\n"
                "\ncommands (a unique prefix will do, but not for reload, "
                "quota set, quota reset, quota unset):\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s%s%s", commands[i].name,
                 commands[i].args[0] ? " " : "", commands[i].args);
        fprintf(fp, "  %-30s %s\n", left, commands[i].help);
    }
}

/*
 * The command named by an exact name or a unique prefix, as tmux does; an
 * admin command by its exact name only.  NULL, said, for anything else.
 */
static const struct command *
find_command(struct ctx *ctx, const char *name)
{
    const struct command *found = NULL;
    size_t len = strlen(name), off = 0;
    int matches = 0;
    char list[256] = "";

    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
        if (len > 0 && strncmp(commands[i].name, name, len) == 0) {
            found = &commands[i];
            matches++;
        }
    }
    if (matches == 1 && !found->admin)
        return found;
    if (matches == 1) {
        fail_with(ctx, EXIT_USAGE, "usage", "%s: an admin command runs only "
                  "by its full name: %s", name, found->name);
        return NULL;
    }
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (matches == 0 ||
            (len > 0 && strncmp(commands[i].name, name, len) == 0))
            off += (size_t)snprintf(list + off, sizeof(list) - off, " %s",
                                    commands[i].name);
    if (matches == 0)
        fail_with(ctx, EXIT_USAGE, "usage", "unknown command: %s; valid "
                  "commands:%s", name, list);
    else
        fail_with(ctx, EXIT_USAGE, "usage", "ambiguous command: %s, could "
                  "be:%s", name, list);
    return NULL;
}

/* --timeout S: seconds, 0 for no bound; -1 (said) when not a number. */
static int
set_timeout(struct ctx *ctx, const char *arg)
{
    char *end;
    double s = strtod(arg, &end);

    if (end == arg || *end != '\0' || llmguard_set_timeout(ctx->g, s) < 0) {
        fail_with(ctx, EXIT_USAGE, "usage", "--timeout %s: expected seconds "
                  "from 0 (no bound) to 86400", arg);
        return -1;
    }
    return 0;
}

/* The global options, wherever they are given. */
struct globals {
    const char *socket, *timeout;
    bool help, version;
};

/*
 * Is argv[*i] a global option?  1 (taken, with its value: *i moves past
 * it), 0 (not one), or -1 (said: its value is missing).
 */
static int
global_option(struct ctx *ctx, int argc, char **argv, int *i,
              struct globals *gl)
{
    static const struct { const char *lng, *shrt; int which; } opts[] = {
        { "--socket", "-s", 's' }, { "--timeout", "-T", 't' },
        { "--json", "-j", 'j' }, { "--help", "-h", 'h' },
        { "--version", "-V", 'V' },
    };
    const char *a = argv[*i], *val = NULL;

    for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
        size_t ll = strlen(opts[k].lng);
        bool takes = opts[k].which == 's' || opts[k].which == 't';
        if (takes && strncmp(a, opts[k].lng, ll) == 0 && a[ll] == '=')
            val = a + ll + 1;
        else if (takes && strncmp(a, opts[k].shrt, 2) == 0 && a[2] != '\0')
            val = a + 2;            /* -sPATH, -T0.5 */
        else if (strcmp(a, opts[k].lng) != 0 && strcmp(a, opts[k].shrt) != 0)
            continue;
        if (takes && val == NULL && (val = *i + 1 < argc ? argv[++*i] :
                                     NULL) == NULL) {
            fail_with(ctx, EXIT_USAGE, "usage", "%s needs a value",
                      opts[k].lng);
            return -1;
        }
        switch (opts[k].which) {
        case 's': gl->socket = val; break;
        case 't': gl->timeout = val; break;
        case 'j': ctx->json = true; break;
        case 'h': gl->help = true; break;
        default: gl->version = true; break;
        }
        return 1;
    }
    return 0;
}

/* Is argv[*i] one of the command's own flags?  As global_option(). */
static int
command_flag(struct ctx *ctx, int argc, char **argv, int *i)
{
    const struct flag *f = ctx->cmd->flags;
    const char *a = argv[*i];

    for (int k = 0; f != NULL && f[k].name != NULL; k++) {
        size_t ll = strlen(f[k].name);
        const char *val = NULL;
        if (f[k].has_arg && strncmp(a, f[k].name, ll) == 0 && a[ll] == '=')
            val = a + ll + 1;
        else if (strcmp(a, f[k].name) != 0 &&
                 (f[k].alias == NULL || strcmp(a, f[k].alias) != 0))
            continue;
        if (f[k].has_arg && val == NULL &&
            (val = *i + 1 < argc ? argv[++*i] : NULL) == NULL) {
            fail_with(ctx, EXIT_USAGE, "usage", "%s %s needs a value",
                      ctx->cmd->name, f[k].name);
            return -1;
        }
        ctx->given[k] = true;
        ctx->value[k] = val;
        return 1;
    }
    return 0;
}

/*
 * Sort argv[first..] into the command's flags, the global options and its
 * words, which are packed into argv from first on; "--" makes every word
 * after it a word.  The number of words, or -1 (said).
 */
static int
command_args(struct ctx *ctx, int argc, char **argv, int first,
             struct globals *gl)
{
    int n = 0;
    bool words_only = false;

    for (int i = first; i < argc; i++) {
        int r = 0;
        if (!words_only && strcmp(argv[i], "--") == 0) {
            words_only = true;
            continue;
        }
        if (!words_only && argv[i][0] == '-' && argv[i][1] != '\0') {
            /* The command's own flag wins: -t after quota is --tenant. */
            if ((r = command_flag(ctx, argc, argv, &i)) == 0)
                r = global_option(ctx, argc, argv, &i, gl);
            if (r < 0)
                return -1;
            if (r == 0) {
                fail_with(ctx, EXIT_USAGE, "usage", "%s: unknown option %s "
                          "(write -- before a word that begins with -)",
                          ctx->cmd->name, argv[i]);
                return -1;
            }
            continue;
        }
        argv[first + n++] = argv[i];
    }
    return n;
}

/* Was --json (-j) given anywhere before a "--"?  So that even an error
 * in the options is answered in JSON. */
static bool
wants_json(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
            return true;
    return false;
}

/* Parse the command line into ctx and gl: the command, its flags and its
 * words (*nwords from argv[*first]).  0, or an exit status (said). */
static int
parse_args(struct ctx *ctx, int argc, char **argv, struct globals *gl,
           int *first, int *nwords)
{
    int i = 1, r;

    ctx->json = wants_json(argc, argv);
    while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0' &&
           strcmp(argv[i], "--") != 0) {
        if ((r = global_option(ctx, argc, argv, &i, gl)) < 0)
            return EXIT_USAGE;
        if (r == 0)
            return fail_with(ctx, EXIT_USAGE, "usage", "unknown option %s; "
                             "see llmguardctl --help", argv[i]);
        i++;
    }
    if (gl->help || gl->version)
        return 0;
    if (i < argc && strcmp(argv[i], "--") == 0)
        i++;
    if (i >= argc)
        return fail_with(ctx, EXIT_USAGE, "usage", "usage: llmguardctl "
                         "[-s SOCKET] [-t SECONDS] [--json] COMMAND [ARGS]; "
                         "see llmguardctl --help");
    if ((ctx->cmd = find_command(ctx, argv[i])) == NULL)
        return EXIT_USAGE;
    *first = i + 1;
    if ((*nwords = command_args(ctx, argc, argv, *first, gl)) < 0)
        return EXIT_USAGE;
    if (gl->help || gl->version)
        return 0;
    if (*nwords < ctx->cmd->min_args || *nwords > ctx->cmd->max_args) {
        char text[256];
        snprintf(text, sizeof(text), "llmguardctl %s%s%s", ctx->cmd->name,
                 ctx->cmd->args[0] ? " " : "", ctx->cmd->args);
        return usage_error(ctx, text);
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct globals gl = { 0 };
    struct ctx ctx = { 0 };
    int rc, first = 0, nwords = 0;

    if ((rc = parse_args(&ctx, argc, argv, &gl, &first, &nwords)) != 0)
        return rc;
    if (gl.help) {
        usage(stdout);
        return 0;
    }
    if (gl.version) {
        printf("llmguardctl %s (protocol %d)\n", PACKAGE_VERSION,
               PROTO_VERSION);
        return 0;
    }
    if ((ctx.g = llmguard_open(gl.socket)) == NULL)
        return fail_with(&ctx, EXIT_USAGE, "usage", "socket path too long "
                         "or out of memory");
    if (gl.timeout != NULL && set_timeout(&ctx, gl.timeout) < 0) {
        llmguard_close(ctx.g);
        return EXIT_USAGE;
    }
    rc = ctx.cmd->exec(&ctx, nwords, argv + first);
    llmguard_close(ctx.g);
    return rc;
}
