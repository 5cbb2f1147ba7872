/*
 * config.h - llmguardd's configuration: one table of variables drives
 * parsing, validation, printing and reload (llmguard.env(5)).
 *
 * Precedence, lowest first: built-in defaults < env file < process
 * environment < command-line flags.
 */
#ifndef LLMGUARD_CONFIG_H
#define LLMGUARD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_PROVIDERS 64
#define CONFIG_MAX_MODELS 64
#define CONFIG_MODEL_MAX 128        /* a model id or group name, with NUL */
#define CONFIG_NAME_MAX 64
#define CONFIG_PATH_MAX 4096
#define CONFIG_STR_MAX 1024
#define CONFIG_EXIT 78              /* EX_CONFIG */

enum config_enforcement { ENFORCE_SOFT, ENFORCE_HARD };
enum config_policy { POLICY_PRIMARY, POLICY_COST_WEIGHTED, POLICY_LATENCY_WEIGHTED };
enum config_fail_mode { FAIL_OPEN, FAIL_CLOSED };
/* LLMGUARD_REDIS_FALLBACK: what a daemon grants while Redis is away. */
enum config_redis_fallback { FALLBACK_SHARE, FALLBACK_LOCAL, FALLBACK_CLOSED };

struct provider_config {
    char name[CONFIG_NAME_MAX];     /* lower-cased <NAME> */
    double rate_per_sec;            /* 0: RATE_PER_SEC=learn */
    double burst;                   /* max_tokens */
    int64_t priority;
    double cost_per_1k_tokens;
    double tokens_per_min;          /* 0: unlimited */
    double rpm, tpm;                /* as given (_RPM, _TPM); 0: not */
    int64_t requests_per_day;       /* RPD over any 24 h; 0: unlimited */
    int64_t tokens_per_day;         /* TPD over any 24 h; 0: unlimited */
    uint32_t set;                   /* which PROVIDER_ keys were given */
};

/*
 * One model deployment, MODEL_<ALIAS>_*: a model id on a provider, in a
 * group that permits name.  rpm and tpm are its own token buckets (0:
 * none); requests_per_day and tokens_per_day its own daily limits.
 */
struct model_config {
    char alias[CONFIG_NAME_MAX];    /* lower-cased <ALIAS> */
    char provider[CONFIG_NAME_MAX]; /* a declared provider's name */
    char name[CONFIG_MODEL_MAX];    /* the provider's model id */
    char group[CONFIG_MODEL_MAX];   /* default: name */
    double rpm, tpm;                /* per minute; 0: no limit */
    int64_t requests_per_day;       /* RPD over any 24 h; 0: no limit */
    int64_t tokens_per_day;         /* TPD over any 24 h; 0: no limit */
    int64_t priority;               /* its provider's (the sort order) */
    uint32_t set;                   /* which MODEL_ keys were given */
};

/* A whole configuration: a plain value, copied by assignment on reload. */
struct config {
    bool rate_limit_enabled;
    double quota_window_days;
    int64_t default_quota_tokens;
    int64_t quota_enforcement;      /* enum config_enforcement */
    int64_t routing_policy;         /* enum config_policy */
    double provider_cooldown_s;
    char socket_path[CONFIG_PATH_MAX];
    bool socket_is_default;         /* create and check its directory */
    char db_path[CONFIG_PATH_MAX];
    bool db_is_default;
    int64_t quota_flush_ms;
    char metrics_listen[CONFIG_STR_MAX];
    char otlp_endpoint[CONFIG_STR_MAX];
    char otlp_traces_endpoint[CONFIG_STR_MAX];
    char service_name[CONFIG_STR_MAX];
    int64_t metrics_max_series;
    int64_t socket_mode;
    char socket_group[CONFIG_NAME_MAX];
    int64_t fail_mode;              /* enum config_fail_mode */
    double client_timeout_ms;       /* clients': checked, not used */
    char redis_url[CONFIG_STR_MAX]; /* "": single-host mode */
    char redis_ca_file[CONFIG_PATH_MAX];
    char redis_cert_file[CONFIG_PATH_MAX];
    char redis_key_file[CONFIG_PATH_MAX];
    char redis_prefix[CONFIG_NAME_MAX];
    int64_t redis_timeout_ms;
    char host_id[CONFIG_NAME_MAX];  /* default: the host name */
    int64_t lease_ms;
    int64_t redis_fallback;         /* enum config_redis_fallback */
    int64_t redis_fallback_hosts;   /* 0: the hosts last seen alive */
    int64_t log_level;              /* enum log_level */
    int64_t decisions;              /* kept for explain; 0: none */
    char env_file[CONFIG_PATH_MAX]; /* the file read, "" when none */
    struct provider_config providers[CONFIG_MAX_PROVIDERS];
    size_t nproviders;              /* sorted by priority, then name */
    struct model_config models[CONFIG_MAX_MODELS];
    size_t nmodels;                 /* sorted by their provider's
                                       priority, then alias (as routed) */
};

/* Where the values come from besides the built-in defaults. */
struct config_args {
    const char *env_file;   /* --env-file; NULL: ./.env when it exists */
    char *const *envp;      /* the process environment */
    const char *socket;     /* --socket, or NULL */
    const char *db;         /* --db, or NULL */
    const char *log_level;  /* --log-level, or NULL */
};

/*
 * Build cfg from the defaults and args.  Returns 0, or -1 with a one-line
 * message in err naming the variable, its value, where it came from and
 * what was expected; cfg is then unspecified.  Unknown LLMGUARD_*,
 * PROVIDER_*_* and MODEL_*_* keys are logged as warnings.
 */
int config_load(struct config *cfg, const struct config_args *args,
                char *err, size_t errlen);

/*
 * For a reload: the settings that only a restart can change (the socket,
 * the database, the HTTP listener, the trace exporter) keep cur's values
 * in next; each that next would change is logged as such.
 */
void config_keep_restart(struct config *next, const struct config *cur);

/* Print the effective configuration in env-file syntax. */
void config_print(const struct config *cfg, FILE *fp);

/* The provider named name (len bytes, lower case), or NULL. */
const struct provider_config *config_provider(const struct config *cfg,
                                              const char *name, size_t len);

/* The model deployment of alias (len bytes, lower case), or NULL. */
const struct model_config *config_model(const struct config *cfg,
                                        const char *alias, size_t len);
/* Whether PROVIDER_<NAME>_<suffix> was given for p (suffix: "BURST",
 * "TOKENS_PER_MIN", ...): a limit not given may be learned. */
bool config_provider_given(const struct provider_config *p,
                           const char *suffix);

/* Names of the enums, as written in the env file. */
const char *config_policy_name(int64_t policy);
const char *config_enforcement_name(int64_t enforcement);

#endif
