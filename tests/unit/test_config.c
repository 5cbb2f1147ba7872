/* test_config.c - env-file parsing, precedence and validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

static char envfile[] = "/tmp/llmguard-test-config-XXXXXX";

static int
setup(void **state)
{
    int fd = mkstemp(envfile);

    if (fd < 0)
        return -1;
    close(fd);
    /* Keep the developer's own variables out of the test. */
    unsetenv("XDG_RUNTIME_DIR");
    unsetenv("XDG_STATE_HOME");
    return 0;
}

static int
teardown(void **state)
{
    unlink(envfile);
    return 0;
}

static void
write_env(const char *text)
{
    FILE *fp = fopen(envfile, "w");

    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int
load(struct config *cfg, const char *file_text, char *const *envp, char *err)
{
    struct config_args args = { .envp = envp };

    if (file_text != NULL) {
        write_env(file_text);
        args.env_file = envfile;
    } else {
        args.env_file = "/dev/null";
    }
    err[0] = '\0';
    return config_load(cfg, &args, err, 512);
}

static void
test_defaults(void **state)
{
    struct config cfg;
    char err[512];

    assert_int_equal(load(&cfg, NULL, NULL, err), 0);
    assert_true(cfg.rate_limit_enabled);
    assert_true(cfg.quota_window_days == 30);
    assert_int_equal(cfg.default_quota_tokens, 100000);
    assert_int_equal(cfg.quota_enforcement, ENFORCE_SOFT);
    assert_int_equal(cfg.routing_policy, POLICY_PRIMARY);
    assert_true(cfg.provider_cooldown_s == 60);
    assert_int_equal(cfg.quota_flush_ms, 50);
    assert_int_equal(cfg.metrics_max_series, 10000);
    assert_int_equal(cfg.socket_mode, 0600);
    assert_string_equal(cfg.service_name, "llmguardd");
    assert_int_equal(cfg.nproviders, 0);
    assert_true(cfg.socket_is_default);
    char want[128];
    snprintf(want, sizeof(want), "/tmp/llmguard-%u/llmguardd.sock",
             (unsigned)getuid());
    assert_string_equal(cfg.socket_path, want);
    assert_true(cfg.db_is_default);
    assert_non_null(strstr(cfg.db_path, "/.local/state/llmguard/llmguard.db"));
}

/* The seed's .env example, verbatim. */
static void
test_seed_example(void **state)
{
    struct config cfg;
    char err[512];
    const char *seed =
        "# Enable/disable rate limiting\n"
        "RATE_LIMIT_ENABLED=true\n"
        "\n"
        "# Provider rate limits (requests per second)\n"
        "PROVIDER_GROQ_RATE_PER_SEC=50\n"
        "PROVIDER_OPENAI_RATE_PER_SEC=20\n"
        "\n"
        "# Quota settings\n"
        "QUOTA_WINDOW_DAYS=30\n"
        "DEFAULT_DAILY_QUOTA_TOKENS=100000\n"
        "QUOTA_ENFORCEMENT=soft  # soft|hard\n"
        "\n"
        "# Routing policy\n"
        "ROUTING_POLICY=primary  # primary|cost_weighted|latency_weighted\n"
        "\n"
        "# Provider cooldown after errors (seconds)\n"
        "PROVIDER_COOLDOWN_SEC=60\n"
        "\n"
        "# Optional: Redis for multi-process mode\n"
        "# REDIS_URL=redis://localhost:6379\n";

    assert_int_equal(load(&cfg, seed, NULL, err), 0);
    assert_int_equal(cfg.quota_enforcement, ENFORCE_SOFT);
    assert_int_equal(cfg.routing_policy, POLICY_PRIMARY);
    assert_int_equal(cfg.nproviders, 2);
    /* Equal priority: by name. */
    assert_string_equal(cfg.providers[0].name, "groq");
    assert_true(cfg.providers[0].rate_per_sec == 50);
    assert_true(cfg.providers[0].burst == 50);
    assert_int_equal(cfg.providers[0].priority, 100);
    assert_true(cfg.providers[0].cost_per_1k_tokens == 1.0);
    assert_true(cfg.providers[0].tokens_per_min == 0);
    assert_string_equal(cfg.providers[1].name, "openai");
    assert_true(cfg.providers[1].rate_per_sec == 20);
}

static void
test_syntax(void **state)
{
    struct config cfg;
    char err[512];

    assert_int_equal(load(&cfg,
        "  export QUOTA_ENFORCEMENT = \"hard\"   # quoted\n"
        "OTEL_SERVICE_NAME='my # service'\n"
        "LLMGUARD_METRICS_LISTEN=127.0.0.1:9464 # trailing\n"
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://x/#frag\n"
        "PROVIDER_SLOW_RATE_PER_SEC=0.5\n"
        "PROVIDER_SLOW_PRIORITY=1\n"
        "PROVIDER_FAST_RATE_PER_SEC=10\r\n"
        "PROVIDER_FAST_BURST=3\n"
        "PROVIDER_FAST_TOKENS_PER_MIN=60000\n"
        "PROVIDER_FAST_COST_PER_1K_TOKENS=0.25\n"
        "PROVIDER_FAST_API_KEY=sk-secret\n",
        NULL, err), 0);
    assert_int_equal(cfg.quota_enforcement, ENFORCE_HARD);
    assert_string_equal(cfg.service_name, "my # service");
    assert_string_equal(cfg.metrics_listen, "127.0.0.1:9464");
    assert_string_equal(cfg.otlp_endpoint, "http://x/#frag");
    assert_int_equal(cfg.nproviders, 2);
    assert_string_equal(cfg.providers[0].name, "slow");   /* priority 1 */
    assert_true(cfg.providers[0].burst == 1);             /* max(1, 0.5) */
    assert_string_equal(cfg.providers[1].name, "fast");
    assert_true(cfg.providers[1].burst == 3);
    assert_true(cfg.providers[1].tokens_per_min == 60000);
    assert_true(cfg.providers[1].cost_per_1k_tokens == 0.25);

    /* A comment after nothing is an empty value; '#' right after '=' is
     * part of the value. */
    assert_int_equal(load(&cfg, "OTEL_EXPORTER_OTLP_ENDPOINT= # none\n"
                                "LLMGUARD_SOCKET_GROUP=  \n"
                                "OTEL_SERVICE_NAME=#1\n", NULL, err), 0);
    assert_string_equal(cfg.otlp_endpoint, "");
    assert_string_equal(cfg.service_name, "#1");

    assert_int_equal(load(&cfg, "QUOTA_ENFORCEMENT\n", NULL, err), -1);
    assert_non_null(strstr(err, ":1: expected KEY=VALUE"));
    assert_int_equal(load(&cfg, "\n\nA=\"open\n", NULL, err), -1);
    assert_non_null(strstr(err, ":3: unterminated quote"));
}

/* load() with stderr caught: the warnings it logged into log (len bytes). */
static int
load_logged(struct config *cfg, const char *file_text, char *const *envp,
            char *err, char *log, size_t len)
{
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO), rc;
    size_t n;

    assert_non_null(tmp);
    assert_true(saved >= 0);
    fflush(stderr);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    rc = load(cfg, file_text, envp, err);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    n = fread(log, 1, len - 1, tmp);
    log[n] = '\0';
    fclose(tmp);
    return rc;
}

/* A UTF-8 byte order mark opens the file without harm; elsewhere it is
 * text like any other. */
static void
test_bom(void **state)
{
    struct config cfg;
    char err[512], log[4096];

    assert_int_equal(load_logged(&cfg, "\xef\xbb\xbfQUOTA_ENFORCEMENT=hard\n"
                                 "PROVIDER_A_RATE_PER_SEC=1\n", NULL, err,
                                 log, sizeof(log)), 0);
    assert_int_equal(cfg.quota_enforcement, ENFORCE_HARD);
    assert_string_equal(log, "");
    /* A BOM before a comment line is fine too. */
    assert_int_equal(load(&cfg, "\xef\xbb\xbf# comment\n"
                                "PROVIDER_A_RATE_PER_SEC=1\n", NULL, err), 0);
    assert_int_equal(cfg.nproviders, 1);
    assert_int_equal(load(&cfg, "PROVIDER_A_RATE_PER_SEC=1\n"
                                "\xef\xbb\xbfQUOTA_ENFORCEMENT=hard\n", NULL,
                          err), -1);
    assert_non_null(strstr(err, ":2: expected KEY=VALUE"));
}

/* A key set twice in the file: the later wins, and both lines are named;
 * the environment overriding the file is no duplicate. */
static void
test_duplicate_key(void **state)
{
    struct config cfg;
    char err[512], log[4096], want[256];
    char *env[] = { "QUOTA_WINDOW_DAYS=7", NULL };

    assert_int_equal(load_logged(&cfg, "QUOTA_ENFORCEMENT=soft\n"
                                 "PROVIDER_A_RATE_PER_SEC=1\n"
                                 "QUOTA_WINDOW_DAYS=3\n"
                                 "export QUOTA_ENFORCEMENT=hard\n", env, err,
                                 log, sizeof(log)), 0);
    assert_int_equal(cfg.quota_enforcement, ENFORCE_HARD);
    assert_true(cfg.quota_window_days == 7);
    snprintf(want, sizeof(want), "warn: QUOTA_ENFORCEMENT is set twice, at "
             "%s:1 and at %s:4: the later wins\n", envfile, envfile);
    assert_non_null(strstr(log, want));
    assert_null(strstr(log, "QUOTA_WINDOW_DAYS"));
    assert_null(strstr(strstr(log, want) + strlen(want), "set twice"));
}

/* Unknown keys near a known one (edit distance 2 at most, case aside) get
 * a suggestion, whatever their prefix; others of ours just a warning;
 * others not ours, nothing. */
static void
test_typo_suggestions(void **state)
{
    /* key, its suggestion ("" for a plain warning, NULL for none) */
    static const struct { const char *key, *near; } cases[] = {
        { "QUOTA_ENFORCMENT", "QUOTA_ENFORCEMENT" },
        { "ROUTNIG_POLICY", "ROUTING_POLICY" },             /* a swap */
        { "quota_window_days", "QUOTA_WINDOW_DAYS" },       /* case */
        { "LLMGUARD_SOKET", "LLMGUARD_SOCKET" },
        { "PROVIDER_A_BRUST", "PROVIDER_A_BURST" },
        { "PROVIDER_MY_LLM_RATE_PER_SECS", "PROVIDER_MY_LLM_RATE_PER_SEC" },
        { "PROVIDER_COOLDOWN_SECS", "PROVIDER_COOLDOWN_SEC" },
        { "LLMGUARD_FROBNICATE", "" },
        { "QUOTA_ENFRCMNT", NULL },     /* 3 edits away, and not ours */
        { "EDITOR", NULL },
    };
    struct config cfg;
    char err[512], log[4096], text[256], want[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "%s=1\nPROVIDER_A_RATE_PER_SEC=1\n",
                 cases[i].key);
        assert_int_equal(load_logged(&cfg, text, NULL, err, log,
                                     sizeof(log)), 0);
        if (cases[i].near == NULL) {
            assert_string_equal(log, "");
            continue;
        }
        snprintf(want, sizeof(want), "warn: unknown variable %s (%s:1) "
                 "ignored%s%s%s\n", cases[i].key, envfile,
                 cases[i].near[0] ? ": did you mean " : "", cases[i].near,
                 cases[i].near[0] ? "?" : "");
        if (strstr(log, want) == NULL)
            fail_msg("%s: expected '%s' in '%s'", cases[i].key, want, log);
        assert_null(strstr(strstr(log, want) + strlen(want),
                           "unknown variable"));
    }
    /* From the environment too, where other programs' names are silent. */
    char *env[] = { "DEFAULT_DAILY_QUOTA_TOKEN=5", "HOME=/root",
                    "EDITOR=vi", NULL };
    assert_int_equal(load_logged(&cfg, "PROVIDER_A_RATE_PER_SEC=1\n", env,
                                 err, log, sizeof(log)), 0);
    assert_non_null(strstr(log, "warn: unknown variable "
                            "DEFAULT_DAILY_QUOTA_TOKEN (environment) ignored: "
                            "did you mean DEFAULT_DAILY_QUOTA_TOKENS?\n"));
    assert_null(strstr(log, "HOME"));
    assert_null(strstr(log, "EDITOR"));
}

/* A configuration without a provider loads, with a warning. */
static void
test_no_provider(void **state)
{
    struct config cfg;
    char err[512], log[4096];

    assert_int_equal(load_logged(&cfg, "QUOTA_ENFORCEMENT=hard\n", NULL, err,
                                 log, sizeof(log)), 0);
    assert_int_equal(cfg.nproviders, 0);
    assert_non_null(strstr(log, "warn: no provider is configured (set "
                            "PROVIDER_<NAME>_RATE_PER_SEC)"));
    assert_int_equal(load_logged(&cfg, "PROVIDER_X_RATE_PER_SEC=2\n", NULL,
                                 err, log, sizeof(log)), 0);
    assert_string_equal(log, "");
    /* A failed load says why, and nothing about providers. */
    assert_int_equal(load_logged(&cfg, "QUOTA_ENFORCEMENT=medium\n", NULL,
                                 err, log, sizeof(log)), -1);
    assert_null(strstr(log, "no provider"));
}

/* RATE_PER_SEC=learn declares a provider with no configured rate; it
 * prints back as learn, and which keys were given is known. */
static void
test_learned_rate(void **state)
{
    struct config cfg;
    char err[512], *text = NULL;
    size_t len = 0;
    FILE *fp;

    (void)state;
    assert_int_equal(load(&cfg, "PROVIDER_GROQ_RATE_PER_SEC=learn\n"
                                "PROVIDER_GROQ_PRIORITY=3\n"
                                "PROVIDER_OAI_RATE_PER_SEC=5\n"
                                "PROVIDER_OAI_TOKENS_PER_MIN=0\n", NULL, err),
                     0);
    assert_int_equal(cfg.nproviders, 2);
    assert_string_equal(cfg.providers[0].name, "groq");
    assert_true(cfg.providers[0].rate_per_sec == 0);
    assert_true(cfg.providers[0].burst == 1);
    assert_false(config_provider_given(&cfg.providers[0], "BURST"));
    assert_false(config_provider_given(&cfg.providers[0], "TOKENS_PER_MIN"));
    assert_true(config_provider_given(&cfg.providers[1], "TOKENS_PER_MIN"));
    assert_false(config_provider_given(&cfg.providers[1], "NO_SUCH_KEY"));
    fp = open_memstream(&text, &len);
    config_print(&cfg, fp);
    fclose(fp);
    assert_non_null(strstr(text, "\nPROVIDER_GROQ_RATE_PER_SEC=learn\n"));
    assert_non_null(strstr(text, "\nPROVIDER_OAI_RATE_PER_SEC=5\n"));
    free(text);
    /* Only the word: anything else is still a bad rate. */
    assert_int_equal(load(&cfg, "PROVIDER_GROQ_RATE_PER_SEC=learned\n", NULL,
                          err), -1);
    assert_int_equal(load(&cfg, "PROVIDER_GROQ_RATE_PER_SEC=0\n", NULL, err),
                     -1);
}

/* defaults < env file < environment < flags */
static void
test_precedence(void **state)
{
    struct config cfg;
    char err[512];
    char *env[] = { "QUOTA_WINDOW_DAYS=7", "LLMGUARD_DB=/env.db",
                    "PATH=/bin", "PROVIDER_GROQ_BURST=5", NULL };
    struct config_args args = { .envp = env, .env_file = envfile,
                                .db = "/flag.db" };

    write_env("QUOTA_WINDOW_DAYS=1\nDEFAULT_DAILY_QUOTA_TOKENS=5\n"
              "LLMGUARD_DB=/file.db\nPROVIDER_GROQ_RATE_PER_SEC=2\n"
              "PROVIDER_GROQ_BURST=9\n");
    assert_int_equal(config_load(&cfg, &args, err, sizeof(err)), 0);
    assert_true(cfg.quota_window_days == 7);        /* environment wins */
    assert_int_equal(cfg.default_quota_tokens, 5);  /* file beats default */
    assert_string_equal(cfg.db_path, "/flag.db");   /* flag wins */
    assert_false(cfg.db_is_default);
    assert_true(cfg.providers[0].burst == 5);

    /* A bad value in the file that the environment overrides is fine. */
    char *env2[] = { "QUOTA_ENFORCEMENT=hard", NULL };
    assert_int_equal(load(&cfg, "QUOTA_ENFORCEMENT=medium\n", env2, err), 0);
    assert_int_equal(cfg.quota_enforcement, ENFORCE_HARD);
}

/* Every variable's bad value fails, naming the variable and the value. */
static void
test_bad_values(void **state)
{
    static const struct { const char *line, *expect; } cases[] = {
        { "RATE_LIMIT_ENABLED=maybe", "expected true or false" },
        { "QUOTA_WINDOW_DAYS=0", "expected a number greater than 0" },
        { "QUOTA_WINDOW_DAYS=-1", "expected a number greater than 0" },
        { "QUOTA_WINDOW_DAYS=thirty", "expected a number" },
        { "DEFAULT_DAILY_QUOTA_TOKENS=-5", "expected an integer" },
        { "DEFAULT_DAILY_QUOTA_TOKENS=1.5", "expected an integer" },
        { "DEFAULT_DAILY_QUOTA_TOKENS=9007199254740993", "expected an integer" },
        { "QUOTA_ENFORCEMENT=medium", "expected soft or hard" },
        { "ROUTING_POLICY=random",
          "expected primary, cost_weighted or latency_weighted" },
        { "PROVIDER_COOLDOWN_SEC=-1", "expected a number from 0" },
        { "LLMGUARD_SOCKET=", NULL },        /* empty: the default */
        { "LLMGUARD_QUOTA_FLUSH_MS=-1", "expected an integer from 0 to 60000" },
        { "LLMGUARD_QUOTA_FLUSH_MS=fast", "expected an integer" },
        { "LLMGUARD_METRICS_LISTEN=9464", "expected host:port" },
        { "LLMGUARD_METRICS_LISTEN=localhost:99999", "expected host:port" },
        { "OTEL_EXPORTER_OTLP_ENDPOINT=localhost:4318", "expected an http://" },
        { "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=ftp://x", "expected an http://" },
        { "OTEL_SERVICE_NAME=", "expected a non-empty string" },
        { "LLMGUARD_METRICS_MAX_SERIES=0", "expected an integer from 1" },
        { "LLMGUARD_SOCKET_MODE=0999", "expected an octal file mode" },
        { "LLMGUARD_SOCKET_MODE=1777", "expected an octal file mode" },
        { "LLMGUARD_SOCKET_GROUP=no-such-group-xyz", "existing group" },
        { "LLMGUARD_FAIL_MODE=ajar", "expected open or closed" },
        { "LLMGUARD_CLIENT_TIMEOUT_MS=-1", "expected a number from 0 to" },
        { "LLMGUARD_CLIENT_TIMEOUT_MS=soon", "expected a number from 0 to" },
        { "LLMGUARD_LOG_LEVEL=loud", "expected error, warn, info or debug" },
        { "LLMGUARD_DECISIONS=-1", "expected an integer from 0 to 10000000" },
        { "LLMGUARD_DECISIONS=many", "expected an integer" },
        { "REDIS_URL=memcached://localhost:6379", "expected redis://, "
          "rediss:// or unix://" },
        { "REDIS_URL=redis://u:s3cret@host:0", "expected a port" },
        { "REDIS_URL=unix://relative/path", "expected an absolute socket" },
        { "LLMGUARD_REDIS_TIMEOUT_MS=0", "expected an integer from 1" },
        { "LLMGUARD_LEASE_MS=fast", "expected an integer from 1" },
        { "LLMGUARD_REDIS_FALLBACK=open", "expected share, local or closed" },
        { "LLMGUARD_REDIS_FALLBACK_HOSTS=-1", "expected an integer from 0" },
        { "PROVIDER_GROQ_RATE_PER_SEC=0", "expected a number greater than 0" },
        { "PROVIDER_GROQ_RATE_PER_SEC=fast", "expected a number" },
        { "PROVIDER_GROQ_RATE_PER_SEC=1\nPROVIDER_GROQ_BURST=0.5",
          "expected a number from 1" },
        { "PROVIDER_GROQ_RATE_PER_SEC=1\nPROVIDER_GROQ_PRIORITY=high",
          "expected an integer" },
        { "PROVIDER_GROQ_RATE_PER_SEC=1\nPROVIDER_GROQ_COST_PER_1K_TOKENS=0",
          "expected a number greater than 0" },
        { "PROVIDER_GROQ_RATE_PER_SEC=1\nPROVIDER_GROQ_TOKENS_PER_MIN=-3",
          "expected a number from 0" },
        { "PROVIDER_GROK_BURST=5", "has no PROVIDER_GROK_RATE_PER_SEC" },
        { "PROVIDER_GR-OQ_RATE_PER_SEC=1", "expected KEY=VALUE" },
    };
    struct config cfg;
    char err[512], text[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "%s\n", cases[i].line);
        int rc = load(&cfg, text, NULL, err);
        if (cases[i].expect == NULL) {
            assert_int_equal(rc, 0);
            continue;
        }
        if (rc != -1 || strstr(err, cases[i].expect) == NULL)
            fail_msg("%s: rc %d, err '%s'", cases[i].line, rc, err);
        /* The message names the variable and the value as given. */
        const char *last = strrchr(cases[i].line, '\n');
        last = last ? last + 1 : cases[i].line;
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)strcspn(last, "="), last);
        if (strstr(err, key) == NULL)
            fail_msg("%s: message does not name %s: '%s'", cases[i].line, key,
                     err);
        assert_non_null(strstr(err, envfile));  /* and where it came from */
    }
}

static void
test_socket_path_too_long(void **state)
{
    struct config cfg;
    char err[512], text[300];

    snprintf(text, sizeof(text), "LLMGUARD_SOCKET=/%0200d\n", 0);
    assert_int_equal(load(&cfg, text, NULL, err), -1);
    assert_non_null(strstr(err, "LLMGUARD_SOCKET="));
}

static void
test_print_roundtrip(void **state)
{
    struct config a, b;
    char err[512], *buf = NULL;
    size_t len = 0;
    FILE *fp;

    assert_int_equal(load(&a, "QUOTA_WINDOW_DAYS=0.0005\n"
                               "PROVIDER_GROQ_RATE_PER_SEC=50\n"
                               "PROVIDER_GROQ_TOKENS_PER_MIN=6000\n"
                               "LLMGUARD_SOCKET_MODE=0660\n"
                               "OTEL_SERVICE_NAME='a \\\"b\" # c\v'\n",
                               NULL, err), 0);
    assert_string_equal(a.service_name, "a \\\"b\" # c\v");
    fp = open_memstream(&buf, &len);
    config_print(&a, fp);
    fclose(fp);
    assert_non_null(strstr(buf, "\nQUOTA_WINDOW_DAYS=0.0005\n"));
    assert_non_null(strstr(buf, "\nLLMGUARD_SOCKET_MODE=0660\n"));
    assert_non_null(strstr(buf, "\nPROVIDER_GROQ_TOKENS_PER_MIN=6000\n"));
    /* What --check-config prints reads back as the same configuration. */
    assert_int_equal(load(&b, buf, NULL, err), 0);
    free(buf);
    assert_true(b.quota_window_days == a.quota_window_days);
    assert_int_equal(b.socket_mode, a.socket_mode);
    assert_string_equal(b.service_name, a.service_name);
    assert_int_equal(b.nproviders, 1);
    assert_true(b.providers[0].tokens_per_min == 6000);
    assert_true(b.providers[0].burst == 50);
}

/* PROVIDER_<NAME>_RPM / _TPM: per-minute units beside the per-second
 * form; both forms of one limit is refused. */
static void
test_provider_units(void **state)
{
    struct config cfg;
    char err[512], *buf = NULL;
    size_t len = 0;
    FILE *fp;

    assert_int_equal(load(&cfg, "PROVIDER_GROQ_RPM=30\n"
                                "PROVIDER_GROQ_TPM=12000\n"
                                "PROVIDER_FAST_RPM=600\n"
                                "PROVIDER_FAST_BURST=20\n", NULL, err), 0);
    assert_int_equal(cfg.nproviders, 2);
    const struct provider_config *g = config_provider(&cfg, "groq", 4);
    const struct provider_config *f = config_provider(&cfg, "fast", 4);
    assert_non_null(g);
    assert_non_null(f);
    assert_true(g->rate_per_sec == 0.5);
    assert_true(g->burst == 30);            /* the RPM itself */
    assert_true(g->tokens_per_min == 12000);
    assert_true(f->rate_per_sec == 10);
    assert_true(f->burst == 20);            /* _BURST wins */

    /* Printed in the unit given, and read back as the same. */
    fp = open_memstream(&buf, &len);
    config_print(&cfg, fp);
    fclose(fp);
    assert_non_null(strstr(buf, "\nPROVIDER_GROQ_RPM=30\n"));
    assert_non_null(strstr(buf, "\nPROVIDER_GROQ_TPM=12000\n"));
    assert_null(strstr(buf, "PROVIDER_GROQ_RATE_PER_SEC"));
    assert_null(strstr(buf, "PROVIDER_GROQ_TOKENS_PER_MIN"));
    assert_int_equal(load(&cfg, buf, NULL, err), 0);
    free(buf);
    g = config_provider(&cfg, "groq", 4);
    assert_true(g->rate_per_sec == 0.5 && g->burst == 30 &&
                g->tokens_per_min == 12000);

    assert_int_equal(load(&cfg, "PROVIDER_GROQ_RPM=30\n"
                                "PROVIDER_GROQ_RATE_PER_SEC=1\n", NULL, err),
                     -1);
    assert_non_null(strstr(err, "PROVIDER_GROQ_RPM and "
                                "PROVIDER_GROQ_RATE_PER_SEC both set"));
    assert_int_equal(load(&cfg, "PROVIDER_GROQ_RPM=30\n"
                                "PROVIDER_GROQ_TPM=10\n"
                                "PROVIDER_GROQ_TOKENS_PER_MIN=5\n", NULL, err),
                     -1);
    assert_non_null(strstr(err, "PROVIDER_GROQ_TPM and "
                                "PROVIDER_GROQ_TOKENS_PER_MIN both set"));
    assert_int_equal(load(&cfg, "PROVIDER_GROQ_RPM=0\n", NULL, err), -1);
    assert_non_null(strstr(err, "PROVIDER_GROQ_RPM=0"));
    assert_int_equal(load(&cfg, "PROVIDER_GROQ_TPM=100\n", NULL, err), -1);
    assert_non_null(strstr(err, "has no PROVIDER_GROQ_RATE_PER_SEC or _RPM"));
}

/* MODEL_<ALIAS>_*: deployments, their defaults, their checks. */
static void
test_models(void **state)
{
    struct config cfg;
    char err[512], log[4096], *buf = NULL;
    size_t len = 0;
    FILE *fp;
    const char *text =
        "PROVIDER_GROQ_RPM=300\n"
        "PROVIDER_TOGETHER_RATE_PER_SEC=5\n"
        "MODEL_LLAMA_GROQ_PROVIDER=groq\n"
        "MODEL_LLAMA_GROQ_NAME=llama-3.3-70b-versatile\n"
        "MODEL_LLAMA_GROQ_GROUP=llama\n"
        "MODEL_LLAMA_GROQ_RPM=30\n"
        "MODEL_LLAMA_GROQ_TPM=12000\n"
        "MODEL_LLAMA_GROQ_RPD=1000\n"
        "MODEL_LLAMA_GROQ_TPD=100000\n"
        "MODEL_LLAMA_TOG_PROVIDER=TOGETHER\n"
        "MODEL_LLAMA_TOG_NAME=meta-llama/Llama-3.3-70B-Instruct-Turbo\n"
        "MODEL_LLAMA_TOG_GROUP=llama\n"
        "MODEL_GEMMA_PROVIDER=groq\n"
        "MODEL_GEMMA_RPN=3\n";

    assert_int_equal(load_logged(&cfg, text, NULL, err, log, sizeof(log)), 0);
    assert_non_null(strstr(log, "warn: unknown variable MODEL_GEMMA_RPN"));
    assert_int_equal(cfg.nmodels, 3);
    const struct model_config *m = config_model(&cfg, "llama_groq", 10);
    assert_non_null(m);
    assert_string_equal(m->provider, "groq");
    assert_string_equal(m->name, "llama-3.3-70b-versatile");
    assert_string_equal(m->group, "llama");
    assert_true(m->rpm == 30 && m->tpm == 12000);
    assert_true(m->requests_per_day == 1000 && m->tokens_per_day == 100000);
    m = config_model(&cfg, "llama_tog", 9);
    assert_string_equal(m->provider, "together");
    assert_true(m->rpm == 0 && m->tpm == 0);
    m = config_model(&cfg, "gemma", 5);     /* the defaults */
    assert_string_equal(m->name, "gemma");
    assert_string_equal(m->group, "gemma");

    fp = open_memstream(&buf, &len);
    config_print(&cfg, fp);
    fclose(fp);
    assert_non_null(strstr(buf, "\nMODEL_LLAMA_GROQ_NAME="
                                "llama-3.3-70b-versatile\n"));
    assert_non_null(strstr(buf, "\nMODEL_LLAMA_GROQ_RPD=1000\n"));
    assert_non_null(strstr(buf, "\nMODEL_GEMMA_GROUP=gemma\n"));
    assert_null(strstr(buf, "MODEL_GEMMA_RPM"));
    assert_int_equal(load(&cfg, buf, NULL, err), 0);
    free(buf);
    assert_int_equal(cfg.nmodels, 3);
    assert_true(config_model(&cfg, "llama_groq", 10)->tokens_per_day == 100000);

    /* Another program's MODEL_NAME in the environment is not ours; a
     * MODEL_<ALIAS>_<KEY> there is. */
    char *envp[] = { "MODEL_NAME=gpt-4o", "MODEL_X_PROVIDER=a", NULL };
    assert_int_equal(load_logged(&cfg, "PROVIDER_A_RPM=60\n", envp, err, log,
                                 sizeof(log)), 0);
    assert_string_equal(log, "");
    assert_int_equal(cfg.nmodels, 1);
}

/* What a model deployment may not be. */
static void
test_model_errors(void **state)
{
    static const struct { const char *text, *expect; } cases[] = {
        { "MODEL_X_PROVIDER=nope\n",
          "MODEL_X_PROVIDER=nope: expected a declared provider" },
        { "MODEL_X_RPM=5\n", "model 'x' has no MODEL_X_PROVIDER" },
        { "MODEL_X_PROVIDER=a\nMODEL_X_RPM=-1\n", "MODEL_X_RPM=-1" },
        { "MODEL_X_PROVIDER=a\nMODEL_X_TPD=zero\n", "MODEL_X_TPD=zero" },
        { "MODEL_X_PROVIDER=a\nMODEL_X_NAME=\n", "MODEL_X_NAME=: expected" },
        { "MODEL_X_PROVIDER=a\nMODEL_X_GROUP='a b'\n", "MODEL_X_GROUP=a b" },
        /* A group named like another deployment's model id. */
        { "MODEL_X_PROVIDER=a\nMODEL_X_GROUP=fast\n"
          "MODEL_Y_PROVIDER=a\nMODEL_Y_NAME=fast\nMODEL_Y_GROUP=slow\n",
          "MODEL_X_GROUP=fast: the model id of MODEL_Y (in group slow)" },
    };
    struct config cfg;
    char err[512], text[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "PROVIDER_A_RPM=60\n%s", cases[i].text);
        if (load(&cfg, text, NULL, err) != -1 ||
            strstr(err, cases[i].expect) == NULL)
            fail_msg("%s: err '%s'", cases[i].text, err);
    }
    /* A model id in its own default group, and one id in two groups
     * that are not ids, are fine. */
    assert_int_equal(load(&cfg, "PROVIDER_A_RPM=60\n"
                                "MODEL_X_PROVIDER=a\nMODEL_X_NAME=m\n"
                                "MODEL_Y_PROVIDER=a\nMODEL_Y_NAME=m\n",
                          NULL, err), 0);
    assert_int_equal(load(&cfg, "PROVIDER_A_RPM=60\n"
                                "MODEL_X_PROVIDER=a\nMODEL_X_NAME=m\n"
                                "MODEL_X_GROUP=g1\n"
                                "MODEL_Y_PROVIDER=a\nMODEL_Y_NAME=m\n"
                                "MODEL_Y_GROUP=g2\n", NULL, err), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_seed_example),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_bom),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_typo_suggestions),
        cmocka_unit_test(test_no_provider),
        cmocka_unit_test(test_learned_rate),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_socket_path_too_long),
        cmocka_unit_test(test_print_roundtrip),
        cmocka_unit_test(test_provider_units),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_model_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
