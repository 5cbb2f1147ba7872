/*
 * fleetcfg.c - the fleet's part of a configuration as a canonical text;
 * see fleetcfg.h.
 *
 * The text, one line each, names sorted:
 *
 *   llmguard fleet configuration 1
 *   provider <name> <rate_per_sec> <burst> <tokens_per_min>
 *   model <alias> <rpm> <tpm>
 *   quota <window_days> <default_tokens> soft|hard
 *
 * Numbers are %.17g, so they read back exactly.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fleetcfg.h"

#define HEADER "llmguard fleet configuration 1"

static int
by_provider(const void *a, const void *b)
{
    return strcmp(((const struct fleetcfg_provider *)a)->name,
                  ((const struct fleetcfg_provider *)b)->name);
}

static int
by_model(const void *a, const void *b)
{
    return strcmp(((const struct fleetcfg_model *)a)->alias,
                  ((const struct fleetcfg_model *)b)->alias);
}

void
fleetcfg_of(struct fleetcfg *f, const struct config *cfg)
{
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct provider_config *pc = &cfg->providers[i];
        struct fleetcfg_provider *p = &f->providers[i];

        snprintf(p->name, sizeof(p->name), "%s", pc->name);
        p->rate_per_sec = pc->rate_per_sec;
        p->burst = pc->burst;
        p->tokens_per_min = pc->tokens_per_min;
    }
    f->nproviders = cfg->nproviders;
    for (size_t i = 0; i < cfg->nmodels; i++) {
        struct fleetcfg_model *m = &f->models[i];

        snprintf(m->alias, sizeof(m->alias), "%s", cfg->models[i].alias);
        m->rpm = cfg->models[i].rpm;
        m->tpm = cfg->models[i].tpm;
    }
    f->nmodels = cfg->nmodels;
    qsort(f->providers, f->nproviders, sizeof(f->providers[0]), by_provider);
    qsort(f->models, f->nmodels, sizeof(f->models[0]), by_model);
    f->quota_window_days = cfg->quota_window_days;
    f->default_quota_tokens = cfg->default_quota_tokens;
    f->quota_enforcement = cfg->quota_enforcement;
}

/* Append to buf (of len, holding *at bytes); what does not fit is cut. */
static void append(char *buf, size_t len, size_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
append(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*at >= len)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf + *at, len - *at, fmt, ap);
    va_end(ap);
    if (n > 0)
        *at = *at + (size_t)n < len ? *at + (size_t)n : len - 1;
}

static const char *
enforcement_name(int64_t e)
{
    return e == ENFORCE_HARD ? "hard" : "soft";
}

void
fleetcfg_text(const struct fleetcfg *f, char *buf, size_t len)
{
    size_t at = 0;

    buf[0] = '\0';
    append(buf, len, &at, "%s\n", HEADER);
    for (size_t i = 0; i < f->nproviders; i++)
        append(buf, len, &at, "provider %s %.17g %.17g %.17g\n",
               f->providers[i].name, f->providers[i].rate_per_sec,
               f->providers[i].burst, f->providers[i].tokens_per_min);
    for (size_t i = 0; i < f->nmodels; i++)
        append(buf, len, &at, "model %s %.17g %.17g\n", f->models[i].alias,
               f->models[i].rpm, f->models[i].tpm);
    append(buf, len, &at, "quota %.17g %lld %s\n", f->quota_window_days,
           (long long)f->default_quota_tokens,
           enforcement_name(f->quota_enforcement));
}

void
fleetcfg_hash(const char *text, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(text, strlen(text), md, &n, EVP_sha1(), NULL) != 1)
        n = 0;
    for (unsigned int i = 0; i < n && i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[n >= 20 ? 40 : 2 * n] = '\0';
}

/* One line of a text (NUL-terminated, no newline) into f. */
static int
parse_line(struct fleetcfg *f, const char *line)
{
    char name[CONFIG_NAME_MAX + 1], mode[8];
    double a, b, c;
    long long t;

    if (strncmp(line, "provider ", 9) == 0) {
        struct fleetcfg_provider *p = &f->providers[f->nproviders];
        if (f->nproviders == CONFIG_MAX_PROVIDERS ||
            sscanf(line, "provider %64s %lf %lf %lf", name, &a, &b, &c) != 4 ||
            strlen(name) >= sizeof(p->name))
            return -1;
        snprintf(p->name, sizeof(p->name), "%s", name);
        p->rate_per_sec = a;
        p->burst = b;
        p->tokens_per_min = c;
        f->nproviders++;
    } else if (strncmp(line, "model ", 6) == 0) {
        struct fleetcfg_model *m = &f->models[f->nmodels];
        if (f->nmodels == CONFIG_MAX_MODELS ||
            sscanf(line, "model %64s %lf %lf", name, &a, &b) != 3 ||
            strlen(name) >= sizeof(m->alias))
            return -1;
        snprintf(m->alias, sizeof(m->alias), "%s", name);
        m->rpm = a;
        m->tpm = b;
        f->nmodels++;
    } else if (strncmp(line, "quota ", 6) == 0) {
        if (sscanf(line, "quota %lf %lld %7s", &a, &t, mode) != 3 ||
            (strcmp(mode, "soft") != 0 && strcmp(mode, "hard") != 0))
            return -1;
        f->quota_window_days = a;
        f->default_quota_tokens = t;
        f->quota_enforcement = strcmp(mode, "hard") == 0 ? ENFORCE_HARD
                                                          : ENFORCE_SOFT;
    }
    return 0;
}

int
fleetcfg_parse(struct fleetcfg *f, const char *text, char *err,
               size_t errlen)
{
    const char *p = text, *nl;
    char line[256];
    int n = 0;

    memset(f, 0, sizeof(*f));
    for (; *p != '\0'; p = *nl != '\0' ? nl + 1 : nl, n++) {
        size_t l;

        nl = strchr(p, '\n');
        if (nl == NULL)
            nl = p + strlen(p);
        l = (size_t)(nl - p);
        if (l >= sizeof(line) ||
            (n == 0 && (l != strlen(HEADER) || strncmp(p, HEADER, l) != 0))) {
            snprintf(err, errlen, "line %d is not one of a fleet "
                     "configuration", n + 1);
            return -1;
        }
        memcpy(line, p, l);
        line[l] = '\0';
        if (n > 0 && parse_line(f, line) < 0) {
            snprintf(err, errlen, "line %d cannot be read: %.60s", n + 1,
                     line);
            return -1;
        }
    }
    if (n == 0) {
        snprintf(err, errlen, "empty");
        return -1;
    }
    return 0;
}

const struct fleetcfg_provider *
fleetcfg_provider(const struct fleetcfg *f, const char *name)
{
    for (size_t i = 0; i < f->nproviders; i++)
        if (strcmp(f->providers[i].name, name) == 0)
            return &f->providers[i];
    return NULL;
}

const struct fleetcfg_model *
fleetcfg_model(const struct fleetcfg *f, const char *alias)
{
    for (size_t i = 0; i < f->nmodels; i++)
        if (strcmp(f->models[i].alias, alias) == 0)
            return &f->models[i];
    return NULL;
}

/* A differing value: "<what> <fleet's> (here <mine>)", to 15 digits
 * (the text has all 17; this is for people). */
static void
differ(char *buf, size_t len, size_t *at, size_t *n, const char *what,
       double fleet, double mine)
{
    if (fleet == mine)
        return;
    append(buf, len, at, "%s%s %.15g (here %.15g)", *n ? ", " : "", what,
           fleet, mine);
    (*n)++;
}

static void
diff_providers(const struct fleetcfg *mine, const struct fleetcfg *fleet,
               char *buf, size_t len, size_t *at, size_t *n)
{
    char what[CONFIG_NAME_MAX + 40];

    for (size_t i = 0; i < mine->nproviders; i++) {
        const struct fleetcfg_provider *m = &mine->providers[i];
        const struct fleetcfg_provider *p = fleetcfg_provider(fleet, m->name);

        if (p == NULL) {
            append(buf, len, at, "%sprovider %s not in the fleet's (its own "
                   "settings kept)", *n ? ", " : "", m->name);
            (*n)++;
            continue;
        }
        snprintf(what, sizeof(what), "provider %s rate_per_sec", m->name);
        differ(buf, len, at, n, what, p->rate_per_sec, m->rate_per_sec);
        snprintf(what, sizeof(what), "provider %s burst", m->name);
        differ(buf, len, at, n, what, p->burst, m->burst);
        snprintf(what, sizeof(what), "provider %s tokens_per_min", m->name);
        differ(buf, len, at, n, what, p->tokens_per_min, m->tokens_per_min);
    }
    for (size_t i = 0; i < fleet->nproviders; i++)
        if (fleetcfg_provider(mine, fleet->providers[i].name) == NULL) {
            append(buf, len, at, "%sprovider %s only in the fleet's (not "
                   "configured here)", *n ? ", " : "",
                   fleet->providers[i].name);
            (*n)++;
        }
}

static void
diff_models(const struct fleetcfg *mine, const struct fleetcfg *fleet,
            char *buf, size_t len, size_t *at, size_t *n)
{
    char what[CONFIG_NAME_MAX + 40];

    for (size_t i = 0; i < mine->nmodels; i++) {
        const struct fleetcfg_model *m = &mine->models[i];
        const struct fleetcfg_model *p = fleetcfg_model(fleet, m->alias);

        if (p == NULL) {
            append(buf, len, at, "%smodel %s not in the fleet's (its own "
                   "settings kept)", *n ? ", " : "", m->alias);
            (*n)++;
            continue;
        }
        snprintf(what, sizeof(what), "model %s rpm", m->alias);
        differ(buf, len, at, n, what, p->rpm, m->rpm);
        snprintf(what, sizeof(what), "model %s tpm", m->alias);
        differ(buf, len, at, n, what, p->tpm, m->tpm);
    }
    for (size_t i = 0; i < fleet->nmodels; i++)
        if (fleetcfg_model(mine, fleet->models[i].alias) == NULL) {
            append(buf, len, at, "%smodel %s only in the fleet's (not "
                   "configured here)", *n ? ", " : "",
                   fleet->models[i].alias);
            (*n)++;
        }
}

size_t
fleetcfg_diff(const struct fleetcfg *mine, const struct fleetcfg *fleet,
              char *buf, size_t len)
{
    size_t at = 0, n = 0;

    buf[0] = '\0';
    diff_providers(mine, fleet, buf, len, &at, &n);
    diff_models(mine, fleet, buf, len, &at, &n);
    differ(buf, len, &at, &n, "QUOTA_WINDOW_DAYS", fleet->quota_window_days,
           mine->quota_window_days);
    differ(buf, len, &at, &n, "DEFAULT_DAILY_QUOTA_TOKENS",
           (double)fleet->default_quota_tokens,
           (double)mine->default_quota_tokens);
    if (fleet->quota_enforcement != mine->quota_enforcement) {
        append(buf, len, &at, "%sQUOTA_ENFORCEMENT %s (here %s)",
               n ? ", " : "", enforcement_name(fleet->quota_enforcement),
               enforcement_name(mine->quota_enforcement));
        n++;
    }
    return n;
}
