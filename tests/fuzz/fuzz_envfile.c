/*
 * fuzz_envfile.c - libFuzzer harness for llmguardd's env-file parser and
 * validation (config_load(), daemon/config.c).
 *
 * Input: the text of an env file.  It is written to /tmp/fuzz-envfile-<pid>
 * and loaded as --env-file with an empty environment and no flags.  Checked:
 *   - config_load() returns 0 or -1, and on -1 the message is one
 *     non-empty, terminated line (llmguardd prints it and exits 78);
 *   - on 0 the configuration holds only values its table allows: enums in
 *     range (config_print() indexes arrays with them), numbers within their
 *     bounds, terminated strings, paths that fit a socket address, at most
 *     CONFIG_MAX_PROVIDERS providers with lower-case names, sorted by
 *     priority then name and found by config_provider();
 *   - what config_print() writes (--check-config) loads again, to the same
 *     configuration (numbers to 14 significant digits: it prints %.15g).
 *
 * crashes/fuzz_envfile/ holds the two bugs this harness found, fixed in
 * cd3213a: a value ending in \v or \f printed bare (reading it back
 * stripped it), and DEFAULT_DAILY_QUOTA_TOKENS=2^53 + 1 taken although the
 * bound is 2^53 (integer bounds were compared as doubles).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "redisurl.h"
#include "fuzz_msg.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Lines are kept in a list searched per key: keep the runs fast. */
#define ENVFILE_MAX 16384

static char path[64];       /* the input */
static char path2[64];      /* what config_print() wrote */

static void
remove_files(void)
{
    unlink(path);
    unlink(path2);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(path, sizeof(path), "/tmp/fuzz-envfile-%ld", (long)getpid());
    snprintf(path2, sizeof(path2), "/tmp/fuzz-envfile-%ld.print",
             (long)getpid());
    atexit(remove_files);
    /* Unknown keys are warnings: thousands a second are only noise. */
    log_set_level(LOG_LVL_ERROR);
    return 0;
}

static void
write_file(const char *p, const void *data, size_t size)
{
    FILE *fp = fopen(p, "w");

    FUZZ_CHECK(fp != NULL);
    FUZZ_CHECK(fwrite(data, 1, size, fp) == size);
    FUZZ_CHECK(fclose(fp) == 0);
}

static bool
terminated(const char *buf, size_t size)
{
    return memchr(buf, '\0', size) != NULL;
}

static bool
in_range(double d, double lo, double hi)
{
    return isfinite(d) && d >= lo && d <= hi;
}

#define STR_OK(s) terminated((s), sizeof(s))

/* Every model deployment on a declared provider, sorted as routed, its
 * texts and limits in range, groups and model ids in one namespace. */
static void
check_models(const struct config *cfg)
{
    FUZZ_CHECK(cfg->nmodels <= CONFIG_MAX_MODELS);
    for (size_t i = 0; i < cfg->nmodels; i++) {
        const struct model_config *m = &cfg->models[i];
        const struct provider_config *pc =
            config_provider(cfg, m->provider, strlen(m->provider));

        FUZZ_CHECK(STR_OK(m->alias) && STR_OK(m->name) && STR_OK(m->group));
        FUZZ_CHECK(m->alias[0] != '\0' && m->name[0] != '\0' &&
                   m->group[0] != '\0');
        FUZZ_CHECK(pc != NULL && pc->priority == m->priority);
        FUZZ_CHECK(config_model(cfg, m->alias, strlen(m->alias)) == m);
        FUZZ_CHECK(in_range(m->rpm, 0, 1e9) && in_range(m->tpm, 0, 1e12));
        FUZZ_CHECK(m->requests_per_day >= 0 &&
                   m->requests_per_day <= (int64_t)1e15 &&
                   m->tokens_per_day >= 0 &&
                   m->tokens_per_day <= (int64_t)1e15);
        if (i > 0) {
            const struct model_config *q = &cfg->models[i - 1];
            FUZZ_CHECK(q->priority < m->priority ||
                       (q->priority == m->priority &&
                        strcmp(q->alias, m->alias) < 0));
        }
        for (size_t j = 0; j < cfg->nmodels; j++)
            FUZZ_CHECK(strcmp(cfg->models[j].name, m->group) != 0 ||
                       strcmp(cfg->models[j].group, m->group) == 0);
    }
}

/* Every value of a loaded configuration is one its table allows. */
static void
check_config(const struct config *cfg, const char *env_file)
{
    FUZZ_CHECK(cfg->quota_enforcement == ENFORCE_SOFT ||
               cfg->quota_enforcement == ENFORCE_HARD);
    FUZZ_CHECK(cfg->routing_policy >= POLICY_PRIMARY &&
               cfg->routing_policy <= POLICY_LATENCY_WEIGHTED);
    FUZZ_CHECK(cfg->fail_mode == FAIL_OPEN || cfg->fail_mode == FAIL_CLOSED);
    FUZZ_CHECK(cfg->log_level >= LOG_LVL_ERROR &&
               cfg->log_level <= LOG_LVL_DEBUG);
    FUZZ_CHECK(in_range(cfg->quota_window_days, 0, 36500) &&
               cfg->quota_window_days > 0);
    FUZZ_CHECK(cfg->default_quota_tokens >= 0 &&
               cfg->default_quota_tokens <= (int64_t)1 << 53);
    FUZZ_CHECK(in_range(cfg->provider_cooldown_s, 0, 86400 * 365.0));
    FUZZ_CHECK(cfg->quota_flush_ms >= 0 && cfg->quota_flush_ms <= 60000);
    FUZZ_CHECK(cfg->metrics_max_series >= 1 &&
               cfg->metrics_max_series <= 10000000);
    FUZZ_CHECK(cfg->socket_mode >= 0 && cfg->socket_mode <= 0777);

    FUZZ_CHECK(STR_OK(cfg->socket_path) && STR_OK(cfg->db_path) &&
               STR_OK(cfg->metrics_listen) && STR_OK(cfg->otlp_endpoint) &&
               STR_OK(cfg->otlp_traces_endpoint) &&
               STR_OK(cfg->service_name) && STR_OK(cfg->socket_group) &&
               STR_OK(cfg->redis_url) && STR_OK(cfg->env_file));
    FUZZ_CHECK(cfg->socket_path[0] != '\0' &&
               strlen(cfg->socket_path) <
                   sizeof(((struct sockaddr_un *)0)->sun_path));
    FUZZ_CHECK(cfg->db_path[0] != '\0');
    FUZZ_CHECK(cfg->service_name[0] != '\0');
    if (cfg->redis_url[0] != '\0') {   /* only a URL that parses is taken */
        struct redisurl u;
        char why[256];
        FUZZ_CHECK(redisurl_parse(cfg->redis_url, &u, why, sizeof(why)) == 0);
    }
    FUZZ_CHECK(strcmp(cfg->env_file, env_file) == 0);
    FUZZ_CHECK(config_policy_name(cfg->routing_policy) != NULL);
    FUZZ_CHECK(config_enforcement_name(cfg->quota_enforcement) != NULL);

    FUZZ_CHECK(cfg->nproviders <= CONFIG_MAX_PROVIDERS);
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct provider_config *p = &cfg->providers[i];
        size_t len;

        FUZZ_CHECK(STR_OK(p->name));
        len = strlen(p->name);
        FUZZ_CHECK(len > 0);
        FUZZ_CHECK(strspn(p->name, "abcdefghijklmnopqrstuvwxyz0123456789_") ==
                   len);
        /* declared by its RATE_PER_SEC or its RPM (rows 0 and 5) */
        FUZZ_CHECK(p->set & (1u | 1u << 5));
        FUZZ_CHECK((p->set & 1u) == 0 || (p->set & 1u << 5) == 0);
        FUZZ_CHECK(in_range(p->rate_per_sec, 0, 1e9) && p->rate_per_sec > 0);
        FUZZ_CHECK(in_range(p->burst, 1, 1e9));
        FUZZ_CHECK(p->priority >= -1000000000 && p->priority <= 1000000000);
        FUZZ_CHECK(in_range(p->cost_per_1k_tokens, 0, 1e9) &&
                   p->cost_per_1k_tokens > 0);
        FUZZ_CHECK(in_range(p->tokens_per_min, 0, 1e12));
        FUZZ_CHECK(p->requests_per_day >= 0 &&
                   p->requests_per_day <= (int64_t)1e15 &&
                   p->tokens_per_day >= 0 &&
                   p->tokens_per_day <= (int64_t)1e15);
        FUZZ_CHECK(config_provider(cfg, p->name, len) == p);
        if (i > 0) {
            const struct provider_config *q = &cfg->providers[i - 1];
            FUZZ_CHECK(q->priority < p->priority ||
                       (q->priority == p->priority &&
                        strcmp(q->name, p->name) < 0));
        }
    }
    check_models(cfg);
}

/* Equal to 14 significant digits (%.15g keeps 15). */
static bool
close_to(double a, double b)
{
    return a == b || fabs(a - b) <= 1e-14 * fmax(fabs(a), fabs(b));
}

/* b, loaded from what config_print(a) wrote, is the same configuration. */
static void
check_same(const struct config *a, const struct config *b)
{
    FUZZ_CHECK(a->rate_limit_enabled == b->rate_limit_enabled);
    FUZZ_CHECK(close_to(a->quota_window_days, b->quota_window_days));
    FUZZ_CHECK(a->default_quota_tokens == b->default_quota_tokens);
    FUZZ_CHECK(a->quota_enforcement == b->quota_enforcement);
    FUZZ_CHECK(a->routing_policy == b->routing_policy);
    FUZZ_CHECK(close_to(a->provider_cooldown_s, b->provider_cooldown_s));
    FUZZ_CHECK(strcmp(a->socket_path, b->socket_path) == 0);
    FUZZ_CHECK(strcmp(a->db_path, b->db_path) == 0);
    FUZZ_CHECK(a->quota_flush_ms == b->quota_flush_ms);
    FUZZ_CHECK(strcmp(a->metrics_listen, b->metrics_listen) == 0);
    FUZZ_CHECK(strcmp(a->otlp_endpoint, b->otlp_endpoint) == 0);
    FUZZ_CHECK(strcmp(a->otlp_traces_endpoint, b->otlp_traces_endpoint) == 0);
    FUZZ_CHECK(strcmp(a->service_name, b->service_name) == 0);
    FUZZ_CHECK(a->metrics_max_series == b->metrics_max_series);
    FUZZ_CHECK(a->socket_mode == b->socket_mode);
    FUZZ_CHECK(strcmp(a->socket_group, b->socket_group) == 0);
    FUZZ_CHECK(a->fail_mode == b->fail_mode);
    FUZZ_CHECK(a->log_level == b->log_level);
    FUZZ_CHECK(a->nproviders == b->nproviders);
    for (size_t i = 0; i < a->nproviders; i++) {
        const struct provider_config *p = &a->providers[i];
        const struct provider_config *q = &b->providers[i];

        FUZZ_CHECK(strcmp(p->name, q->name) == 0);
        FUZZ_CHECK(close_to(p->rate_per_sec, q->rate_per_sec));
        FUZZ_CHECK(close_to(p->burst, q->burst));
        FUZZ_CHECK(p->priority == q->priority);
        FUZZ_CHECK(close_to(p->cost_per_1k_tokens, q->cost_per_1k_tokens));
        FUZZ_CHECK(close_to(p->tokens_per_min, q->tokens_per_min));
        FUZZ_CHECK(p->requests_per_day == q->requests_per_day &&
                   p->tokens_per_day == q->tokens_per_day);
    }
    FUZZ_CHECK(a->nmodels == b->nmodels);
    for (size_t i = 0; i < a->nmodels; i++) {
        const struct model_config *m = &a->models[i], *n = &b->models[i];

        FUZZ_CHECK(strcmp(m->alias, n->alias) == 0);
        FUZZ_CHECK(strcmp(m->provider, n->provider) == 0);
        FUZZ_CHECK(strcmp(m->name, n->name) == 0);
        FUZZ_CHECK(strcmp(m->group, n->group) == 0);
        FUZZ_CHECK(close_to(m->rpm, n->rpm) && close_to(m->tpm, n->tpm));
        FUZZ_CHECK(m->requests_per_day == n->requests_per_day &&
                   m->tokens_per_day == n->tokens_per_day);
    }
}

/* --check-config's output must be a valid env file for the same config. */
static void
check_print_round_trip(const struct config *cfg)
{
    static struct config again;
    struct config_args args = { .env_file = path2 };
    char *text = NULL, err[512];
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);

    FUZZ_CHECK(fp != NULL);
    config_print(cfg, fp);
    FUZZ_CHECK(fclose(fp) == 0);
    write_file(path2, text, len);
    free(text);
    if (config_load(&again, &args, err, sizeof(err)) != 0) {
        fprintf(stderr, "reloading the printed configuration: %s\n", err);
        FUZZ_CHECK(!"config_print() wrote a file config_load() refuses");
    }
    check_config(&again, path2);
    check_same(cfg, &again);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config cfg;      /* about 24 KiB: not on the stack */
    static char *const no_env[] = { NULL };
    struct config_args args = { .env_file = path, .envp = no_env };
    char err[512];
    int rc;

    if (size > ENVFILE_MAX)
        return 0;
    write_file(path, data, size);
    memset(err, 0x55, sizeof(err));     /* config_load() must terminate it */
    rc = config_load(&cfg, &args, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc < 0) {
        FUZZ_CHECK(terminated(err, sizeof(err)));
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(strchr(err, '\n') == NULL);
        return 0;
    }
    check_config(&cfg, path);
    check_print_round_trip(&cfg);
    return 0;
}
