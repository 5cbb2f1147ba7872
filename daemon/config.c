/* config.c - the option table, the env-file parser and validation. */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "proto.h"
#include "redisurl.h"

enum opt_type {
    OPT_BOOL, OPT_INT, OPT_DOUBLE, OPT_ENUM, OPT_STR, OPT_MODE,
    OPT_HOSTPORT, OPT_URL, OPT_PATH, OPT_GROUP, OPT_REDIS,
};

/* Option flags. */
#define OPT_RESTART 0x1     /* a reload keeps the value in force */

struct option_def {
    const char *name;
    enum opt_type type;
    size_t offset;
    size_t size;            /* OPT_STR and friends: the buffer's size */
    const char *defval;     /* parsed like any other value */
    double min, max;        /* OPT_INT, OPT_DOUBLE */
    const char *const *words;   /* OPT_ENUM, NULL-terminated */
    unsigned flags;
    size_t is_default;      /* OPT_PATH: offset of its "defaulted" flag */
};

static const char *const bool_words[] = { "true", "false", NULL };
static const char *const enforce_words[] = { "soft", "hard", NULL };
static const char *const policy_words[] = {
    "primary", "cost_weighted", "latency_weighted", NULL
};
static const char *const fail_words[] = { "open", "closed", NULL };
static const char *const fallback_words[] = {
    "share", "local", "closed", NULL
};
static const char *const level_words[] = {
    "error", "warn", "info", "debug", NULL
};

#define C(f) offsetof(struct config, f)
#define S(f) sizeof(((struct config *)0)->f)
#define NUM(n, t, f, d, lo, hi, fl) \
    { n, t, C(f), 0, d, lo, hi, NULL, fl, 0 }
#define WORD(n, f, d, w) { n, OPT_ENUM, C(f), 0, d, 0, 0, w, 0, 0 }
#define STR(n, t, f, d, fl) { n, t, C(f), S(f), d, 0, 0, NULL, fl, 0 }
#define PATH(n, f, isdef) \
    { n, OPT_PATH, C(f), S(f), "", 0, 0, NULL, OPT_RESTART, C(isdef) }

/*
 * Every daemon variable (llmguard.env(5)), in the order --check-config
 * prints.  OPT_RESTART marks what a reload cannot change: the socket, the
 * database, the HTTP listener and the trace exporter are set up once.
 */
static const struct option_def options[] = {
    { "RATE_LIMIT_ENABLED", OPT_BOOL, C(rate_limit_enabled), 0, "true", 0, 0,
      bool_words, 0, 0 },
    NUM("QUOTA_WINDOW_DAYS", OPT_DOUBLE, quota_window_days, "30", 0, 36500,
        0),
    NUM("DEFAULT_DAILY_QUOTA_TOKENS", OPT_INT, default_quota_tokens, "100000",
        0, 9007199254740992.0, 0),
    WORD("QUOTA_ENFORCEMENT", quota_enforcement, "soft", enforce_words),
    WORD("ROUTING_POLICY", routing_policy, "primary", policy_words),
    NUM("PROVIDER_COOLDOWN_SEC", OPT_DOUBLE, provider_cooldown_s, "60", -1,
        86400 * 365.0, 0),
    PATH("LLMGUARD_SOCKET", socket_path, socket_is_default),
    PATH("LLMGUARD_DB", db_path, db_is_default),
    NUM("LLMGUARD_QUOTA_FLUSH_MS", OPT_INT, quota_flush_ms, "50", 0, 60000, 0),
    STR("LLMGUARD_METRICS_LISTEN", OPT_HOSTPORT, metrics_listen, "",
        OPT_RESTART),
    STR("OTEL_EXPORTER_OTLP_ENDPOINT", OPT_URL, otlp_endpoint, "",
        OPT_RESTART),
    STR("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", OPT_URL, otlp_traces_endpoint,
        "", OPT_RESTART),
    STR("OTEL_SERVICE_NAME", OPT_STR, service_name, "llmguardd", OPT_RESTART),
    NUM("LLMGUARD_METRICS_MAX_SERIES", OPT_INT, metrics_max_series, "10000", 1,
        10000000, OPT_RESTART),
    { "LLMGUARD_SOCKET_MODE", OPT_MODE, C(socket_mode), 0, "0600", 0, 0777,
      NULL, OPT_RESTART, 0 },
    STR("LLMGUARD_SOCKET_GROUP", OPT_GROUP, socket_group, "", OPT_RESTART),
    WORD("LLMGUARD_FAIL_MODE", fail_mode, "open", fail_words),
    NUM("LLMGUARD_CLIENT_TIMEOUT_MS", OPT_DOUBLE, client_timeout_ms, "2000",
        -1, 86400000, 0),
    WORD("LLMGUARD_LOG_LEVEL", log_level, "info", level_words),
    NUM("LLMGUARD_DECISIONS", OPT_INT, decisions, "10000", 0, 10000000,
        OPT_RESTART),
    STR("REDIS_URL", OPT_REDIS, redis_url, "", OPT_RESTART),
    STR("LLMGUARD_REDIS_CA_FILE", OPT_STR, redis_ca_file, "", OPT_RESTART),
    STR("LLMGUARD_REDIS_CERT_FILE", OPT_STR, redis_cert_file, "",
        OPT_RESTART),
    STR("LLMGUARD_REDIS_KEY_FILE", OPT_STR, redis_key_file, "", OPT_RESTART),
    STR("LLMGUARD_REDIS_PREFIX", OPT_STR, redis_prefix, "llmguard:",
        OPT_RESTART),
    NUM("LLMGUARD_REDIS_TIMEOUT_MS", OPT_INT, redis_timeout_ms, "250", 1,
        60000, OPT_RESTART),
    STR("LLMGUARD_HOST_ID", OPT_STR, host_id, "", OPT_RESTART),
    NUM("LLMGUARD_LEASE_MS", OPT_INT, lease_ms, "200", 1, 60000, OPT_RESTART),
    WORD("LLMGUARD_REDIS_FALLBACK", redis_fallback, "share", fallback_words),
    NUM("LLMGUARD_REDIS_FALLBACK_HOSTS", OPT_INT, redis_fallback_hosts, "0",
        0, 1000000, 0),
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

#define P(f) offsetof(struct provider_config, f)

/* The PROVIDER_<NAME>_<SUFFIX> keys; the first declares the provider. */
static const struct option_def provider_options[] = {
    { "RATE_PER_SEC", OPT_DOUBLE, P(rate_per_sec), 0, NULL, 0, 1e9, NULL,
      0, 0 },
    { "BURST", OPT_DOUBLE, P(burst), 0, NULL, 1, 1e9, NULL, 0, 0 },
    { "PRIORITY", OPT_INT, P(priority), 0, "100", -1e9, 1e9, NULL, 0, 0 },
    { "COST_PER_1K_TOKENS", OPT_DOUBLE, P(cost_per_1k_tokens), 0, "1.0", 0,
      1e9, NULL, 0, 0 },
    { "TOKENS_PER_MIN", OPT_DOUBLE, P(tokens_per_min), 0, "0", -1, 1e12,
      NULL, 0, 0 },
    /* The providers' own units: RATE_PER_SEC and TOKENS_PER_MIN per
     * minute (llmguard.env(5), "Provider units"). */
    { "RPM", OPT_DOUBLE, P(rpm), 0, NULL, 0, 1e9, NULL, 0, 0 },
    { "TPM", OPT_DOUBLE, P(tpm), 0, NULL, 0, 1e12, NULL, 0, 0 },
    /* Per-day limits over any rolling 24 hours; 0: none. */
    { "RPD", OPT_INT, P(requests_per_day), 0, "0", 0, 1e15, NULL, 0, 0 },
    { "TPD", OPT_INT, P(tokens_per_day), 0, "0", 0, 1e15, NULL, 0, 0 },
    /* Read by clients (examples/ratelimit_demo), known here so they do not
     * warn; the daemon ignores them. */
    { "BASE_URL", OPT_STR, 0, 0, NULL, 0, 0, NULL, 0, 0 },
    { "API_KEY", OPT_STR, 0, 0, NULL, 0, 0, NULL, 0, 0 },
    { "MODEL", OPT_STR, 0, 0, NULL, 0, 0, NULL, 0, 0 },
};
/* Which PROVIDER_ keys were given: bit i of provider_config.set is row i. */
enum {
    PROVIDER_KEY_RATE, PROVIDER_KEY_BURST, PROVIDER_KEY_PRIORITY,
    PROVIDER_KEY_COST, PROVIDER_KEY_TOKENS_PER_MIN, PROVIDER_KEY_RPM,
    PROVIDER_KEY_TPM, PROVIDER_KEY_RPD, PROVIDER_KEY_TPD,
};
#define NPROVIDER_OPTIONS (sizeof(provider_options) / sizeof(provider_options[0]))
#define PROVIDER_CLIENT_ONLY 9      /* index of the first client-only key */
/* The keys that declare a provider: a rate in either unit. */
#define PROVIDER_DECLARES(idx) \
    ((idx) == PROVIDER_KEY_RATE || (idx) == PROVIDER_KEY_RPM)

#define M(f) offsetof(struct model_config, f)
#define MSTR(n, f) { n, OPT_STR, M(f), sizeof(((struct model_config *)0)->f), \
                     NULL, 0, 0, NULL, 0, 0 }

/* The MODEL_<ALIAS>_<SUFFIX> keys; the first declares the deployment. */
static const struct option_def model_options[] = {
    MSTR("PROVIDER", provider),
    MSTR("NAME", name),
    MSTR("GROUP", group),
    { "RPM", OPT_DOUBLE, M(rpm), 0, NULL, 0, 1e9, NULL, 0, 0 },
    { "TPM", OPT_DOUBLE, M(tpm), 0, NULL, 0, 1e12, NULL, 0, 0 },
    { "RPD", OPT_INT, M(requests_per_day), 0, NULL, 0, 1e15, NULL, 0, 0 },
    { "TPD", OPT_INT, M(tokens_per_day), 0, NULL, 0, 1e15, NULL, 0, 0 },
};
enum { MODEL_KEY_PROVIDER, MODEL_KEY_NAME, MODEL_KEY_GROUP, MODEL_KEY_RPM };
#define NMODEL_OPTIONS (sizeof(model_options) / sizeof(model_options[0]))

/* One KEY=VALUE setting and where it came from. */
struct setting {
    char *key;
    char *value;
    char origin[CONFIG_PATH_MAX + 16];
};

struct settings {
    struct setting *v;
    size_t n, cap;
};

static int
fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warn_unknown(const char *key, const char *origin, bool ours);

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static void
settings_free(struct settings *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].key);
        free(s->v[i].value);
    }
    free(s->v);
}

/* The setting of key (keylen bytes), or NULL. */
static struct setting *
settings_find(struct settings *s, const char *key, size_t keylen)
{
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->v[i].key) == keylen &&
            memcmp(s->v[i].key, key, keylen) == 0)
            return &s->v[i];
    return NULL;
}

/* Record key=value; a later setting of the same key replaces the earlier. */
static int
settings_put(struct settings *s, const char *key, size_t keylen,
             const char *value, const char *origin)
{
    struct setting *st = settings_find(s, key, keylen);

    if (st == NULL) {
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 32;
            struct setting *nv = realloc(s->v, cap * sizeof(*nv));
            if (nv == NULL)
                return -1;
            s->v = nv;
            s->cap = cap;
        }
        st = &s->v[s->n++];
        st->key = strndup(key, keylen);
        st->value = NULL;
        if (st->key == NULL)
            return -1;
    }
    free(st->value);
    st->value = strdup(value);
    snprintf(st->origin, sizeof(st->origin), "%s", origin);
    return st->value == NULL ? -1 : 0;
}

static bool
is_key_start(int c)
{
    return isalpha(c) || c == '_';
}

static bool
is_key_char(int c)
{
    return isalnum(c) || c == '_';
}

/*
 * Parse one env-file line into key and value (both within line, which is
 * modified).  Returns 1 for a setting, 0 for a blank or comment line, -1 for
 * a malformed one with *why set.
 */
static int
parse_env_line(char *line, char **key, size_t *keylen, char **value,
               const char **why)
{
    char *p = line, *v, *out;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    if (strncmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
        p += 6;
        while (*p == ' ' || *p == '\t')
            p++;
    }
    if (!is_key_start((unsigned char)*p)) {
        *why = "expected KEY=VALUE";
        return -1;
    }
    *key = p;
    while (is_key_char((unsigned char)*p))
        p++;
    *keylen = (size_t)(p - *key);
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '=') {
        *why = "expected KEY=VALUE";
        return -1;
    }
    v = ++p;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '#' && p > v) {   /* KEY= # comment: an empty value */
        *value = p;
        *p = '\0';
        return 1;
    }
    v = out = p;
    if (*p == '"' || *p == '\'') {
        char q = *p++;
        /* Quoted: backslash escapes \" and \\ inside double quotes only. */
        while (*p != q) {
            if (*p == '\0' || *p == '\n') {
                *why = "unterminated quote";
                return -1;
            }
            if (q == '"' && *p == '\\' && (p[1] == '"' || p[1] == '\\'))
                p++;
            *out++ = *p++;
        }
        p++;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p != '\0' && *p != '#') {
            *why = "text after the closing quote";
            return -1;
        }
        *out = '\0';
    } else {
        /* Unquoted: a '#' after white space starts a comment. */
        char *end = p;
        while (*p != '\0' && *p != '\n') {
            if (*p == '#' && p > v && (p[-1] == ' ' || p[-1] == '\t'))
                break;
            p++;
        }
        end = p;
        while (end > v && isspace((unsigned char)end[-1]))
            end--;
        *end = '\0';
    }
    *value = v;
    return 1;
}

/* Read an env file into s.  Returns 0 or -1 with err set. */
static int
read_env_file(const char *path, struct settings *s, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL, origin[CONFIG_PATH_MAX + 16], text[128];
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = 0;

    if (fp == NULL)
        return fail(err, errlen, "env file %s: %s", path, strerror(errno));
    while (getline(&line, &cap, fp) != -1) {
        char *key, *value;
        size_t keylen;
        const char *why = NULL;
        const struct setting *dup;
        int r;

        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        /* A UTF-8 byte order mark, as some editors write, is not text. */
        if (lineno == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0)
            memmove(line, line + 3, strlen(line + 3) + 1);
        snprintf(text, sizeof(text), "%s", line);
        r = parse_env_line(line, &key, &keylen, &value, &why);
        if (r < 0) {
            rc = fail(err, errlen, "%s:%u: %s: %s", path, lineno, why, text);
            break;
        }
        if (r == 0)
            continue;
        snprintf(origin, sizeof(origin), "%s:%u", path, lineno);
        /* The file is read first: an earlier setting is this file's. */
        if ((dup = settings_find(s, key, keylen)) != NULL)
            log_warn("%.*s is set twice, at %s and at %s: the later wins",
                     (int)keylen, key, dup->origin, origin);
        if (settings_put(s, key, keylen, value, origin) < 0) {
            rc = fail(err, errlen, "out of memory");
            break;
        }
    }
    if (rc == 0 && ferror(fp))
        rc = fail(err, errlen, "env file %s: %s", path, strerror(errno));
    free(line);
    fclose(fp);
    return rc;
}

static bool
parse_word(const char *value, const char *const *words, int64_t *out)
{
    for (int64_t i = 0; words[i] != NULL; i++)
        if (strcasecmp(value, words[i]) == 0) {
            *out = i;
            return true;
        }
    return false;
}

static bool
parse_bool(const char *value, bool *out)
{
    static const char *const yes[] = { "true", "1", "yes", "on", NULL };
    static const char *const no[] = { "false", "0", "no", "off", NULL };
    int64_t i;

    if (parse_word(value, yes, &i))
        *out = true;
    else if (parse_word(value, no, &i))
        *out = false;
    else
        return false;
    return true;
}

/* Write "expected ..." for def into buf. */
static void
expectation(const struct option_def *def, char *buf, size_t len)
{
    switch (def->type) {
    case OPT_BOOL:
        snprintf(buf, len, "true or false");
        break;
    case OPT_INT:
        snprintf(buf, len, "an integer from %.0f to %.0f", def->min, def->max);
        break;
    case OPT_DOUBLE:
        if (def->min < 0)
            snprintf(buf, len, "a number from 0 to %.15g", def->max);
        else if (def->min == 0)
            snprintf(buf, len, "a number greater than 0, at most %.15g",
                     def->max);
        else
            snprintf(buf, len, "a number from %.15g to %.15g", def->min,
                     def->max);
        break;
    case OPT_ENUM: {
        size_t off = 0;
        for (int i = 0; def->words[i] != NULL; i++)
            off += (size_t)snprintf(buf + off, len > off ? len - off : 0,
                                    "%s%s", i == 0 ? "" :
                                    def->words[i + 1] ? ", " : " or ",
                                    def->words[i]);
        break;
    }
    case OPT_STR:
        snprintf(buf, len, "a non-empty string of at most %zu bytes",
                 def->size ? def->size - 1 : (size_t)CONFIG_STR_MAX - 1);
        break;
    case OPT_MODE:
        snprintf(buf, len, "an octal file mode from 0 to 0777, e.g. 0660");
        break;
    case OPT_HOSTPORT:
        snprintf(buf, len, "host:port with a port from 1 to 65535");
        break;
    case OPT_URL:
        snprintf(buf, len, "an http:// or https:// URL");
        break;
    case OPT_PATH:
        snprintf(buf, len, "a non-empty path");
        break;
    case OPT_GROUP:
        snprintf(buf, len, "an existing group name or gid");
        break;
    case OPT_REDIS:
        snprintf(buf, len, "redis://[user:pass@]host[:port][/db], "
                 "rediss://... or unix://[user:pass@]/path[?db=N]");
        break;
    }
}

static bool
valid_hostport(const char *v)
{
    const char *colon = strrchr(v, ':');
    char *end;
    long port;

    if (colon == NULL)
        return false;
    if (v[0] == '[' && colon[-1] != ']')
        return false;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    return errno == 0 && *end == '\0' && end != colon + 1 && port >= 1 &&
           port <= 65535;
}

/*
 * Parse value by def into the struct at base.  Returns true on success.
 */
static bool
apply_value(const struct option_def *def, void *base, const char *value)
{
    char *p = (char *)base + def->offset, *end;

    switch (def->type) {
    case OPT_BOOL:
        return parse_bool(value, (bool *)(void *)p);
    case OPT_ENUM:
        return parse_word(value, def->words, (int64_t *)(void *)p);
    case OPT_INT: {
        long long n;
        errno = 0;
        n = strtoll(value, &end, 10);
        /* Bounds compared as integers: 2^53 + 1 is not 2^53. */
        if (errno != 0 || end == value || *end != '\0' ||
            n < (long long)def->min || n > (long long)def->max)
            return false;
        *(int64_t *)(void *)p = n;
        return true;
    }
    case OPT_DOUBLE: {
        double d;
        errno = 0;
        d = strtod(value, &end);
        if (errno != 0 || end == value || *end != '\0' || !isfinite(d) ||
            d > def->max)
            return false;
        /* min < 0 means "zero allowed", min == 0 "strictly positive". */
        if (def->min < 0 ? d < 0 : def->min == 0 ? d <= 0 : d < def->min)
            return false;
        *(double *)(void *)p = d;
        return true;
    }
    case OPT_MODE: {
        long m;
        errno = 0;
        m = strtol(value, &end, 8);
        if (errno != 0 || end == value || *end != '\0' || m < 0 || m > 0777)
            return false;
        *(int64_t *)(void *)p = m;
        return true;
    }
    case OPT_REDIS: {
        struct redisurl u;
        char why[128];
        if (strlen(value) >= def->size ||
            (value[0] != '\0' && redisurl_parse(value, &u, why,
                                                sizeof(why)) < 0))
            return false;
        memcpy(p, value, strlen(value) + 1);
        return true;
    }
    case OPT_HOSTPORT:
    case OPT_URL:
    case OPT_PATH:
    case OPT_GROUP:
    case OPT_STR:
        if (def->size == 0)     /* a client-only key */
            return true;
        if (strlen(value) >= def->size)
            return false;
        if (value[0] != '\0') {
            if (def->type == OPT_HOSTPORT && !valid_hostport(value))
                return false;
            if (def->type == OPT_URL && strncmp(value, "http://", 7) != 0 &&
                strncmp(value, "https://", 8) != 0)
                return false;
            if (def->type == OPT_GROUP && getgrnam(value) == NULL) {
                long gid = strtol(value, &end, 10);
                if (*end != '\0' || gid < 0 || getgrgid((gid_t)gid) == NULL)
                    return false;
            }
        } else if (def->type == OPT_STR && def->defval != NULL &&
                   def->defval[0] != '\0') {
            return false;   /* a string with a default may not be empty */
        }
        memcpy(p, value, strlen(value) + 1);
        return true;
    }
    return false;
}

static int
bad_value(const struct option_def *def, const char *key,
          const struct setting *st, char *err, size_t errlen)
{
    char want[256], masked[CONFIG_STR_MAX];
    const char *v = st->value;

    expectation(def, want, sizeof(want));
    if (def->type == OPT_REDIS) {
        struct redisurl u;
        char why[128];
        /* The password is never printed; say what is wrong instead. */
        v = redisurl_mask(st->value, masked, sizeof(masked));
        if (redisurl_parse(st->value, &u, why, sizeof(why)) < 0)
            return fail(err, errlen, "%s=%s (%s): %s; expected %s", key, v,
                        st->origin, why, want);
    }
    return fail(err, errlen, "%s=%s (%s): expected %s", key, v,
                st->origin, want);
}

/* Find the suffix table entry that PROVIDER_<NAME>_ key ends with. */
static const struct option_def *
provider_suffix(const char *key, size_t *namelen)
{
    size_t keylen = strlen(key), pre = strlen("PROVIDER_");

    for (size_t i = 0; i < NPROVIDER_OPTIONS; i++) {
        size_t sl = strlen(provider_options[i].name);
        if (keylen > pre + sl + 1 &&
            strcmp(key + keylen - sl, provider_options[i].name) == 0 &&
            key[keylen - sl - 1] == '_') {
            *namelen = keylen - sl - 1 - pre;
            return &provider_options[i];
        }
    }
    return NULL;
}

static struct provider_config *
provider_get(struct config *cfg, const char *name, size_t len, bool create)
{
    struct provider_config *p;

    for (size_t i = 0; i < cfg->nproviders; i++)
        if (strlen(cfg->providers[i].name) == len &&
            strncmp(cfg->providers[i].name, name, len) == 0)
            return &cfg->providers[i];
    if (!create || cfg->nproviders == CONFIG_MAX_PROVIDERS)
        return NULL;
    p = &cfg->providers[cfg->nproviders++];
    memset(p, 0, sizeof(*p));
    memcpy(p->name, name, len);
    p->name[len] = '\0';
    for (size_t i = 0; i < NPROVIDER_OPTIONS; i++)
        if (provider_options[i].defval != NULL)
            apply_value(&provider_options[i], p, provider_options[i].defval);
    return p;
}

static int
provider_cmp(const void *a, const void *b)
{
    const struct provider_config *x = a, *y = b;

    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* PROVIDER_<NAME>_RATE_PER_SEC=learn: no configured rate, the provider's
 * headers give it (llmguard.env(5)); stored as a rate of 0. */
static bool
rate_learned(size_t idx, const char *value)
{
    return idx == PROVIDER_KEY_RATE && strcmp(value, "learn") == 0;
}

bool
config_provider_given(const struct provider_config *p, const char *suffix)
{
    for (size_t i = 0; i < NPROVIDER_OPTIONS; i++)
        if (strcmp(provider_options[i].name, suffix) == 0)
            return (p->set >> i & 1u) != 0;
    return false;
}

/*
 * Apply PROVIDER_<NAME>_<SUFFIX>.  Declaring keys (RATE_PER_SEC) run first,
 * so a rate-less provider's other keys can be caught as likely typos.
 */
static int
apply_provider(struct config *cfg, const struct setting *st, bool declare,
               char *err, size_t errlen)
{
    size_t namelen, idx;
    const struct option_def *def = provider_suffix(st->key, &namelen);
    const char *name = st->key + strlen("PROVIDER_");
    char lower[CONFIG_NAME_MAX];
    struct provider_config *p;

    if (def == NULL) {
        if (declare)    /* warn once: this runs in both passes */
            warn_unknown(st->key, st->origin, true);
        return 0;
    }
    idx = (size_t)(def - provider_options);
    if (declare != PROVIDER_DECLARES(idx) || idx >= PROVIDER_CLIENT_ONLY)
        return 0;
    if (namelen >= CONFIG_NAME_MAX)
        return fail(err, errlen, "%s (%s): provider name longer than %d bytes",
                    st->key, st->origin, CONFIG_NAME_MAX - 1);
    for (size_t i = 0; i < namelen; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '_')
            return fail(err, errlen, "%s (%s): a provider name is letters, "
                        "digits and _", st->key, st->origin);
        lower[i] = (char)tolower(c);
    }
    p = provider_get(cfg, lower, namelen, declare);
    if (p == NULL && declare)
        return fail(err, errlen, "%s (%s): more than %d providers", st->key,
                    st->origin, CONFIG_MAX_PROVIDERS);
    if (p == NULL)
        return fail(err, errlen, "%s (%s): provider '%.*s' has no "
                    "PROVIDER_%.*s_RATE_PER_SEC or _RPM", st->key, st->origin,
                    (int)namelen, lower, (int)namelen, name);
    if (rate_learned(idx, st->value))
        p->rate_per_sec = 0;
    else if (!apply_value(def, p, st->value))
        return bad_value(def, st->key, st, err, errlen);
    p->set |= 1u << idx;
    return 0;
}

static const struct option_def *
find_option(const char *key)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].name, key) == 0)
            return &options[i];
    return NULL;
}

/*
 * The optimal string alignment distance of a and b without regard to case:
 * insertions, deletions, substitutions and swaps of neighbours count one
 * each.  Anything above 2 is reported as 3.
 */
static int
edit_distance(const char *a, const char *b)
{
    enum { MAXLEN = 128 };
    size_t la = strlen(a), lb = strlen(b);
    int rows[3][MAXLEN + 1];
    int *prev2 = rows[0], *prev = rows[1], *cur = rows[2];

    if (la > MAXLEN || lb > MAXLEN || (la > lb ? la - lb : lb - la) > 2)
        return 3;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int ca = toupper((unsigned char)a[i - 1]);
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cb = toupper((unsigned char)b[j - 1]);
            int d = prev[j - 1] + (ca != cb);
            if (prev[j] + 1 < d)
                d = prev[j] + 1;
            if (cur[j - 1] + 1 < d)
                d = cur[j - 1] + 1;
            if (i > 1 && j > 1 && ca == toupper((unsigned char)b[j - 2]) &&
                cb == toupper((unsigned char)a[i - 2]) &&
                prev2[j - 2] + 1 < d)
                d = prev2[j - 2] + 1;
            cur[j] = d;
        }
        int *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb] > 2 ? 3 : prev[lb];
}

/*
 * The known name nearest to key, within an edit distance of 2, into buf
 * (upper case); "" when there is none.  A PROVIDER_<NAME>_<SUFFIX> key is
 * also measured by its suffix against the provider keys.
 */
static void
suggest(const char *key, char *buf, size_t len)
{
    int best = 3;

    buf[0] = '\0';
    for (size_t i = 0; i < NOPTIONS; i++) {
        int d = edit_distance(key, options[i].name);
        if (d < best) {
            best = d;
            snprintf(buf, len, "%s", options[i].name);
        }
    }
    if (strncasecmp(key, "PROVIDER_", 9) != 0 || strlen(key) < 11)
        return;
    for (const char *u = strchr(key + 10, '_'); u != NULL;
         u = strchr(u + 1, '_'))
        for (size_t i = 0; i < NPROVIDER_OPTIONS; i++) {
            int d = edit_distance(u + 1, provider_options[i].name);
            if (d < best) {
                best = d;
                snprintf(buf, len, "%.*s_%s", (int)(u - key), key,
                         provider_options[i].name);
            }
        }
    for (char *p = buf; *p != '\0'; p++)
        *p = (char)toupper((unsigned char)*p);
}

/*
 * Warn that key (from origin) is ignored: always when ours (it has one of
 * our prefixes), else only when it is near a known name, a likely typo.
 */
static void
warn_unknown(const char *key, const char *origin, bool ours)
{
    char near[300];

    suggest(key, near, sizeof(near));
    if (near[0] != '\0')
        log_warn("unknown variable %s (%s) ignored: did you mean %s?", key,
                 origin, near);
    else if (ours)
        log_warn("unknown variable %s (%s) ignored", key, origin);
}

/* Is key one of ours: a table variable, an LLMGUARD_ or PROVIDER_ key, or
 * a MODEL_<ALIAS>_<KEY> (a bare MODEL_NAME is some other program's)? */
static bool
is_our_key(const char *key)
{
    return find_option(key) != NULL || strncmp(key, "LLMGUARD_", 9) == 0 ||
           strncmp(key, "PROVIDER_", 9) == 0 ||
           (strncmp(key, "MODEL_", 6) == 0 && strchr(key + 6, '_') != NULL);
}

/* The default database path (llmguardd(8), FILES). */
static int
default_db_path(char *buf, size_t len)
{
    const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    int n;

    if (state != NULL && state[0] == '/') {
        n = snprintf(buf, len, "%s/llmguard/llmguard.db", state);
    } else {
        if (home == NULL || home[0] != '/') {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : "/";
        }
        n = snprintf(buf, len, "%s/.local/state/llmguard/llmguard.db", home);
    }
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int
collect(struct settings *s, const struct config_args *args, char *envfile,
        char *err, size_t errlen)
{
    const char *path = args->env_file;
    const struct { const char *key, *value; } flags[] = {
        { "LLMGUARD_SOCKET", args->socket },
        { "LLMGUARD_DB", args->db },
        { "LLMGUARD_LOG_LEVEL", args->log_level },
    };

    envfile[0] = '\0';
    if (path == NULL && access(".env", F_OK) == 0)
        path = ".env";
    if (path != NULL) {
        if (read_env_file(path, s, err, errlen) < 0)
            return -1;
        snprintf(envfile, CONFIG_PATH_MAX, "%s", path);
    }
    for (char *const *e = args->envp; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        char key[256];
        size_t kl = (size_t)(eq - *e);
        if (kl >= sizeof(key))
            continue;
        memcpy(key, *e, kl);
        key[kl] = '\0';
        if (!is_our_key(key))
            warn_unknown(key, "environment", false);
        else if (settings_put(s, key, kl, eq + 1, "environment") < 0)
            return fail(err, errlen, "out of memory");
    }
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        if (flags[i].value != NULL &&
            settings_put(s, flags[i].key, strlen(flags[i].key),
                         flags[i].value, "command line") < 0)
            return fail(err, errlen, "out of memory");
    return 0;
}

/* The upper-case form of a lower-case name, for messages and printing. */
static void
upper_name(const char *name, char *buf, size_t len)
{
    size_t k;

    for (k = 0; name[k] != '\0' && k + 1 < len; k++)
        buf[k] = (char)toupper((unsigned char)name[k]);
    buf[k] = '\0';
}

/* ---- models ------------------------------------------------------------ */

/* Find the model_options entry that MODEL_<ALIAS>_ key ends with. */
static const struct option_def *
model_suffix(const char *key, size_t *aliaslen)
{
    size_t keylen = strlen(key), pre = strlen("MODEL_");

    for (size_t i = 0; i < NMODEL_OPTIONS; i++) {
        size_t sl = strlen(model_options[i].name);
        if (keylen > pre + sl + 1 &&
            strcmp(key + keylen - sl, model_options[i].name) == 0 &&
            key[keylen - sl - 1] == '_') {
            *aliaslen = keylen - sl - 1 - pre;
            return &model_options[i];
        }
    }
    return NULL;
}

static struct model_config *
model_get(struct config *cfg, const char *alias, size_t len, bool create)
{
    struct model_config *m;

    for (size_t i = 0; i < cfg->nmodels; i++)
        if (strlen(cfg->models[i].alias) == len &&
            strncmp(cfg->models[i].alias, alias, len) == 0)
            return &cfg->models[i];
    if (!create || cfg->nmodels == CONFIG_MAX_MODELS)
        return NULL;
    m = &cfg->models[cfg->nmodels++];
    memset(m, 0, sizeof(*m));
    memcpy(m->alias, alias, len);
    m->alias[len] = '\0';
    return m;
}

/*
 * Apply MODEL_<ALIAS>_<SUFFIX>: _PROVIDER declares the deployment (pass
 * 0), the other keys need it (pass 1).
 */
static int
apply_model(struct config *cfg, const struct setting *st, bool declare,
            char *err, size_t errlen)
{
    size_t len, idx;
    const struct option_def *def = model_suffix(st->key, &len);
    const char *alias = st->key + strlen("MODEL_");
    char lower[CONFIG_NAME_MAX];
    struct model_config *m;

    if (def == NULL) {
        if (declare)
            warn_unknown(st->key, st->origin, true);
        return 0;
    }
    idx = (size_t)(def - model_options);
    if (declare != (idx == MODEL_KEY_PROVIDER))
        return 0;
    if (len >= CONFIG_NAME_MAX)
        return fail(err, errlen, "%s (%s): model alias longer than %d bytes",
                    st->key, st->origin, CONFIG_NAME_MAX - 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)alias[i];
        if (!isalnum(c) && c != '_')
            return fail(err, errlen, "%s (%s): a model alias is letters, "
                        "digits and _", st->key, st->origin);
        lower[i] = (char)tolower(c);
    }
    if ((m = model_get(cfg, lower, len, declare)) == NULL)
        return declare ?
               fail(err, errlen, "%s (%s): more than %d models", st->key,
                    st->origin, CONFIG_MAX_MODELS) :
               fail(err, errlen, "%s (%s): model '%.*s' has no "
                    "MODEL_%.*s_PROVIDER", st->key, st->origin, (int)len,
                    lower, (int)len, alias);
    if (!apply_value(def, m, st->value))
        return bad_value(def, st->key, st, err, errlen);
    m->set |= 1u << idx;
    return 0;
}

/* A model id or group name: 1 to CONFIG_MODEL_MAX - 1 bytes of printable
 * ASCII or UTF-8, no white space, no quotes or '#'. */
static bool
valid_model_text(const char *v)
{
    if (v[0] == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++)
        if (*p <= ' ' || *p == 0x7f || strchr("\"'#\\", *p) != NULL)
            return false;
    return true;
}

/* Defaults and checks of one deployment, once every key is in. */
static int
model_finish(const struct config *cfg, struct model_config *m, char *err,
             size_t errlen)
{
    const struct provider_config *pc;
    char upper[CONFIG_NAME_MAX];

    upper_name(m->alias, upper, sizeof(upper));
    for (char *c = m->provider; *c != '\0'; c++)
        *c = (char)tolower((unsigned char)*c);
    if ((pc = config_provider(cfg, m->provider, strlen(m->provider))) == NULL)
        return fail(err, errlen, "MODEL_%s_PROVIDER=%s: expected a declared "
                    "provider (PROVIDER_<NAME>_RATE_PER_SEC or _RPM)", upper,
                    m->provider);
    m->priority = pc->priority;
    if (!(m->set & 1u << MODEL_KEY_NAME))
        snprintf(m->name, sizeof(m->name), "%s", m->alias);
    if (!(m->set & 1u << MODEL_KEY_GROUP))
        snprintf(m->group, sizeof(m->group), "%s", m->name);
    if (!valid_model_text(m->name))
        return fail(err, errlen, "MODEL_%s_NAME=%s: expected a model id, "
                    "without white space, quotes or '#'", upper, m->name);
    if (!valid_model_text(m->group))
        return fail(err, errlen, "MODEL_%s_GROUP=%s: expected a group name, "
                    "without white space, quotes or '#'", upper, m->group);
    return 0;
}

static int
model_cmp(const void *a, const void *b)
{
    const struct model_config *x = a, *y = b;

    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return strcmp(x->alias, y->alias);
}

/*
 * Group names and model ids share one namespace: a permit's model names a
 * group, else the deployments with that id.  So a deployment whose id is
 * another deployment's group must be in that group.
 */
static int
model_namespace(const struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nmodels; i++)
        for (size_t j = 0; j < cfg->nmodels; j++) {
            const struct model_config *g = &cfg->models[i];
            const struct model_config *m = &cfg->models[j];
            char gu[CONFIG_NAME_MAX], mu[CONFIG_NAME_MAX];

            if (strcmp(m->name, g->group) != 0 ||
                strcmp(m->group, g->group) == 0)
                continue;
            upper_name(g->alias, gu, sizeof(gu));
            upper_name(m->alias, mu, sizeof(mu));
            return fail(err, errlen, "MODEL_%s_GROUP=%s: the model id of "
                        "MODEL_%s (in group %s): group names and model ids "
                        "share one namespace", gu, g->group, mu, m->group);
        }
    return 0;
}

/* The MODEL_ settings of s into cfg (after the providers). */
static int
apply_models(struct config *cfg, const struct settings *s, char *err,
             size_t errlen)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < s->n; i++)
            if (strncmp(s->v[i].key, "MODEL_", 6) == 0 &&
                apply_model(cfg, &s->v[i], pass == 0, err, errlen) < 0)
                return -1;
    for (size_t i = 0; i < cfg->nmodels; i++)
        if (model_finish(cfg, &cfg->models[i], err, errlen) < 0)
            return -1;
    qsort(cfg->models, cfg->nmodels, sizeof(cfg->models[0]), model_cmp);
    return model_namespace(cfg, err, errlen);
}

/*
 * A provider's limits in one unit: _RPM is rate_per_sec * 60 (its burst
 * by default the RPM itself, as the providers count a minute), _TPM is
 * _TOKENS_PER_MIN.  Both forms of one limit is an error; else the burst
 * defaults to max(1, rate).
 */
static int
provider_units(struct provider_config *p, char *err, size_t errlen)
{
    static const struct { int given, other; const char *what; } forms[] = {
        { PROVIDER_KEY_RPM, PROVIDER_KEY_RATE, "request rate" },
        { PROVIDER_KEY_TPM, PROVIDER_KEY_TOKENS_PER_MIN, "LLM-token rate" },
    };
    char upper[CONFIG_NAME_MAX];

    upper_name(p->name, upper, sizeof(upper));
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
        if ((p->set & 1u << forms[i].given) && (p->set & 1u << forms[i].other))
            return fail(err, errlen, "PROVIDER_%s_%s and PROVIDER_%s_%s both "
                        "set: give the %s in one form, not both", upper,
                        provider_options[forms[i].given].name, upper,
                        provider_options[forms[i].other].name,
                        forms[i].what);
    if (p->set & 1u << PROVIDER_KEY_RPM)
        p->rate_per_sec = p->rpm / 60.0;
    if (p->set & 1u << PROVIDER_KEY_TPM)
        p->tokens_per_min = p->tpm;
    if (p->set & 1u << PROVIDER_KEY_BURST)
        return 0;
    if (p->set & 1u << PROVIDER_KEY_RPM)
        p->burst = p->rpm > 1 ? p->rpm : 1;
    else
        p->burst = p->rate_per_sec > 1 ? p->rate_per_sec : 1;
    return 0;
}

/* Apply the settings s to cfg: the table's, then the providers'; warn
 * about the keys nobody knows.  0, or -1 with err set. */
static int
apply_settings(struct config *cfg, const struct settings *s, char *err,
               size_t errlen)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct setting *st = &s->v[i];
        const struct option_def *def = find_option(st->key);
        if (def != NULL) {
            if (!apply_value(def, cfg, st->value))
                return bad_value(def, st->key, st, err, errlen);
        } else if (strncmp(st->key, "PROVIDER_", 9) != 0 &&
                   strncmp(st->key, "MODEL_", 6) != 0) {
            warn_unknown(st->key, st->origin,
                         strncmp(st->key, "LLMGUARD_", 9) == 0);
        }
    }
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < s->n; i++)
            if (strncmp(s->v[i].key, "PROVIDER_", 9) == 0 &&
                find_option(s->v[i].key) == NULL &&
                apply_provider(cfg, &s->v[i], pass == 0, err, errlen) < 0)
                return -1;

    for (size_t i = 0; i < cfg->nproviders; i++)
        if (provider_units(&cfg->providers[i], err, errlen) < 0)
            return -1;
    qsort(cfg->providers, cfg->nproviders, sizeof(cfg->providers[0]),
          provider_cmp);
    return apply_models(cfg, s, err, errlen);
}

/* LLMGUARD_HOST_ID: the host name by default; printable, no spaces. */
static int
host_id_default(struct config *cfg, char *err, size_t errlen)
{
    if (cfg->host_id[0] == '\0' &&
        gethostname(cfg->host_id, sizeof(cfg->host_id) - 1) < 0)
        snprintf(cfg->host_id, sizeof(cfg->host_id), "localhost");
    for (const char *p = cfg->host_id; *p != '\0'; p++)
        if (!isgraph((unsigned char)*p))
            return fail(err, errlen, "LLMGUARD_HOST_ID=%s: expected "
                        "printable characters without spaces", cfg->host_id);
    return 0;
}

int
config_load(struct config *cfg, const struct config_args *args, char *err,
            size_t errlen)
{
    struct settings s = { 0 };
    int rc = -1;

    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NOPTIONS; i++)
        if (!apply_value(&options[i], cfg, options[i].defval))
            abort();    /* a bad built-in default is a programming error */
    if (collect(&s, args, cfg->env_file, err, errlen) < 0 ||
        apply_settings(cfg, &s, err, errlen) < 0)
        goto out;

    cfg->socket_is_default = cfg->socket_path[0] == '\0';
    if (cfg->socket_is_default &&
        proto_default_socket_path(cfg->socket_path,
                                  sizeof(cfg->socket_path)) < 0) {
        fail(err, errlen, "default socket path is too long");
        goto out;
    }
    if (strlen(cfg->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fail(err, errlen, "LLMGUARD_SOCKET=%s: expected a path shorter than "
             "%zu bytes (the limit of a Unix socket address)",
             cfg->socket_path, sizeof(((struct sockaddr_un *)0)->sun_path));
        goto out;
    }
    cfg->db_is_default = cfg->db_path[0] == '\0';
    if (cfg->db_is_default &&
        default_db_path(cfg->db_path, sizeof(cfg->db_path)) < 0) {
        fail(err, errlen, "default database path is too long");
        goto out;
    }
    if (host_id_default(cfg, err, errlen) < 0)
        goto out;
    if (cfg->nproviders == 0)
        log_warn("no provider is configured (set PROVIDER_<NAME>_RATE_PER_SEC):"
                 " every acquire and permit will be refused");
    rc = 0;
out:
    settings_free(&s);
    return rc;
}

/* Would the env-file parser cut, strip or misread p written bare? */
static bool
needs_quotes(const char *p)
{
    for (; *p != '\0'; p++)
        if (isspace((unsigned char)*p) || strchr("#'\"\\", *p) != NULL)
            return true;
    return false;
}

/* The value of def in base as text: a string option's own buffer, else
 * buf (at least 32 bytes; REDIS_URL, masked, needs CONFIG_STR_MAX). */
static const char *
value_text(const struct option_def *def, const void *base, char *buf,
           size_t len)
{
    const char *p = (const char *)base + def->offset;

    switch (def->type) {
    case OPT_BOOL:
        return *(const bool *)(const void *)p ? "true" : "false";
    case OPT_ENUM:
        return def->words[*(const int64_t *)(const void *)p];
    case OPT_INT:
        snprintf(buf, len, "%lld",
                 (long long)*(const int64_t *)(const void *)p);
        return buf;
    case OPT_DOUBLE:
        snprintf(buf, len, "%.15g", *(const double *)(const void *)p);
        return buf;
    case OPT_MODE:
        snprintf(buf, len, "%04llo",
                 (long long)*(const int64_t *)(const void *)p);
        return buf;
    case OPT_REDIS:
        return redisurl_mask(p, buf, len);
    default:
        return p;
    }
}

/* The bytes of def's field. */
static size_t
value_size(const struct option_def *def)
{
    switch (def->type) {
    case OPT_BOOL:
        return sizeof(bool);
    case OPT_DOUBLE:
        return sizeof(double);
    case OPT_INT:
    case OPT_ENUM:
    case OPT_MODE:
        return sizeof(int64_t);
    default:
        return def->size;
    }
}

/* Print one value by its table entry. */
static void
print_value(FILE *fp, const char *key, const struct option_def *def,
            const void *base)
{
    char buf[CONFIG_STR_MAX];
    const char *p = value_text(def, base, buf, sizeof(buf));

    fprintf(fp, "%s=", key);
    if (!needs_quotes(p)) {
        fputs(p, fp);
    } else {
        /* Quote what the env-file syntax would otherwise cut or strip. */
        fputc('"', fp);
        for (; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                fputc('\\', fp);
            fputc(*p, fp);
        }
        fputc('"', fp);
    }
    fputc('\n', fp);
}

void
config_keep_restart(struct config *next, const struct config *cur)
{
    char a[CONFIG_STR_MAX], b[CONFIG_STR_MAX];

    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option_def *def = &options[i];
        const char *was = value_text(def, cur, a, sizeof(a));
        const char *now = value_text(def, next, b, sizeof(b));

        if (!(def->flags & OPT_RESTART))
            continue;
        /* REDIS_URL is shown masked: compare what it really says. */
        if (def->type == OPT_REDIS
            ? strcmp(cur->redis_url, next->redis_url) != 0
            : strcmp(was, now) != 0)
            log_warn("reload: %s changed to '%s': takes effect at the next "
                     "start; still '%s'", def->name, now, was);
        memcpy((char *)next + def->offset,
               (const char *)cur + def->offset, value_size(def));
        if (def->is_default != 0)
            memcpy((char *)next + def->is_default,
                   (const char *)cur + def->is_default, sizeof(bool));
    }
}

/* Whether row j of provider p is printed: a limit in the unit it was
 * given in (the other form, as a comment), so the output reads back. */
static bool
provider_printed(const struct provider_config *p, size_t j)
{
    bool rpm = p->set & 1u << PROVIDER_KEY_RPM;
    bool tpm = p->set & 1u << PROVIDER_KEY_TPM;

    switch (j) {
    case PROVIDER_KEY_RATE:
        return !rpm;
    case PROVIDER_KEY_TOKENS_PER_MIN:
        return !tpm;
    case PROVIDER_KEY_RPM:
        return rpm;
    case PROVIDER_KEY_TPM:
        return tpm;
    default:
        return true;
    }
}

/* Every model deployment, its limits when they were given. */
static void
print_models(const struct config *cfg, FILE *fp)
{
    char key[256], upper[CONFIG_NAME_MAX];

    for (size_t i = 0; i < cfg->nmodels; i++) {
        const struct model_config *m = &cfg->models[i];
        upper_name(m->alias, upper, sizeof(upper));
        for (size_t j = 0; j < NMODEL_OPTIONS; j++) {
            if (j >= MODEL_KEY_RPM && !(m->set & 1u << j))
                continue;
            snprintf(key, sizeof(key), "MODEL_%s_%s", upper,
                     model_options[j].name);
            print_value(fp, key, &model_options[j], m);
        }
    }
}

void
config_print(const struct config *cfg, FILE *fp)
{
    char key[256];

    fprintf(fp, "# effective configuration (env file: %s)\n",
            cfg->env_file[0] ? cfg->env_file : "none");
    for (size_t i = 0; i < NOPTIONS; i++)
        print_value(fp, options[i].name, &options[i], cfg);
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct provider_config *p = &cfg->providers[i];
        char upper[CONFIG_NAME_MAX];
        upper_name(p->name, upper, sizeof(upper));
        for (size_t j = 0; j < PROVIDER_CLIENT_ONLY; j++) {
            if (!provider_printed(p, j))
                continue;
            snprintf(key, sizeof(key), "PROVIDER_%s_%s", upper,
                     provider_options[j].name);
            if (j == PROVIDER_KEY_RATE && p->rate_per_sec == 0)
                fprintf(fp, "%s=learn\n", key);
            else
                print_value(fp, key, &provider_options[j], p);
        }
    }
    print_models(cfg, fp);
}

const struct provider_config *
config_provider(const struct config *cfg, const char *name, size_t len)
{
    return provider_get((struct config *)(uintptr_t)cfg, name, len, false);
}

const struct model_config *
config_model(const struct config *cfg, const char *alias, size_t len)
{
    return model_get((struct config *)(uintptr_t)cfg, alias, len, false);
}

const char *
config_policy_name(int64_t policy)
{
    return policy_words[policy];
}

const char *
config_enforcement_name(int64_t enforcement)
{
    return enforce_words[enforcement];
}
