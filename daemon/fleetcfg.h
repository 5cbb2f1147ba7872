/*
 * fleetcfg.h - the part of a configuration that is the fleet's, not each
 * host's, in multi-host mode (llmguardd(8), "Several hosts"; the
 * P{fleet}:config key of proto/REDIS.md): each provider's rate, burst and
 * tokens per minute as its global bucket is leased with, each model
 * deployment's RPM and TPM, and the quota window, default limit and
 * enforcement.
 *
 * Pure: a configuration in, a canonical text (the same settings give the
 * same bytes, whatever the order of the env file) and its SHA-1 out, and
 * the text read back.  global.c publishes it and applies the newest one.
 */
#ifndef LLMGUARD_FLEETCFG_H
#define LLMGUARD_FLEETCFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Room for the canonical text of the largest configuration. */
#define FLEETCFG_TEXT_MAX 32768

struct fleetcfg_provider {
    char name[CONFIG_NAME_MAX];
    double rate_per_sec, burst, tokens_per_min;
};

struct fleetcfg_model {
    char alias[CONFIG_NAME_MAX];
    double rpm, tpm;
};

struct fleetcfg {
    struct fleetcfg_provider providers[CONFIG_MAX_PROVIDERS];
    size_t nproviders;              /* sorted by name */
    struct fleetcfg_model models[CONFIG_MAX_MODELS];
    size_t nmodels;                 /* sorted by alias */
    double quota_window_days;
    int64_t default_quota_tokens;
    int64_t quota_enforcement;      /* enum config_enforcement */
};

/* The fleet-relevant part of cfg. */
void fleetcfg_of(struct fleetcfg *f, const struct config *cfg);

/* f as its canonical text, NUL-terminated, into buf (FLEETCFG_TEXT_MAX
 * always suffices); and the text's SHA-1 in lower-case hex. */
void fleetcfg_text(const struct fleetcfg *f, char *buf, size_t len);
void fleetcfg_hash(const char *text, char out[41]);

/* Read a canonical text back into f.  Lines of a kind it does not know
 * are skipped (a later version's).  -1 with the reason in err when the
 * text is not one. */
int fleetcfg_parse(struct fleetcfg *f, const char *text, char *err,
                   size_t errlen);

const struct fleetcfg_provider *fleetcfg_provider(const struct fleetcfg *f,
                                                  const char *name);
const struct fleetcfg_model *fleetcfg_model(const struct fleetcfg *f,
                                            const char *alias);

/* What in mine differs from fleet, as "provider openai rate_per_sec 50
 * (here 100), ..." into buf ("" when nothing does), and the number of
 * differences. */
size_t fleetcfg_diff(const struct fleetcfg *mine, const struct fleetcfg *fleet,
                     char *buf, size_t len);

#endif
