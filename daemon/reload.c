/* reload.c - read the configuration again and apply it (llmguardd(8),
 * "Reload"). */
#include <stdio.h>
#include <stdlib.h>

#include "buckets.h"
#include "daemon.h"
#include "global.h"
#include "log.h"
#include "permits.h"
#include "persist.h"
#include "quota.h"
#include "router.h"

/*
 * Apply next to every subsystem.  Only allocation can fail here
 * (config_load validated every value): the new router is built first, so
 * that a failure leaves buckets and routing as they were.
 */
static int
apply(struct daemon *d, const struct config *next)
{
    struct router *r = permits_router_new(next);
    struct router *mr = r != NULL ? permits_model_router_new(next) : NULL;

    if (mr == NULL)
        goto fail;
    if (buckets_reconfigure(d->models, next) < 0)
        goto fail;
    if (buckets_reconfigure(d->buckets, next) < 0) {
        /* Back to the deployments the old routers match. */
        if (buckets_reconfigure(d->models, &d->cfg) < 0)
            log_error("reload: the model buckets could not be restored");
        goto fail;
    }
    permits_reconfigure_models(d->permits, mr);
    permits_reconfigure(d->permits, r);
    /* Daily usage stays; only the limits follow the new file. */
    if (permits_set_daily(d->daily, next) < 0)
        return -1;
    /* Multi-host mode: the quota settings are the fleet's newest
     * configuration's, applied by gquota.c the same way once
     * global_reconfigure() has published this one (the newest, unless
     * the file changed nothing the fleet shares). */
    if (d->gquota != NULL)
        return 0;
    return quota_reconfigure(d->quota, next->quota_window_days * 86400.0,
                             next->default_quota_tokens,
                             next->quota_enforcement == ENFORCE_HARD);
fail:
    router_free(r);
    router_free(mr);
    return -1;
}

int
reload_apply(struct daemon *d, char *err, size_t errlen)
{
    struct config *next = malloc(sizeof(*next));

    if (next == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (config_load(next, &d->args, err, errlen) < 0) {
        log_error("reload refused, the old configuration stays: %s", err);
        free(next);
        return -1;
    }
    config_keep_restart(next, &d->cfg);
    if (apply(d, next) < 0) {
        snprintf(err, errlen, "could not apply the new configuration");
        free(next);
        return -1;
    }
    d->cfg = *next;
    free(next);
    log_set_level((enum log_level)d->cfg.log_level);
    if (d->global != NULL)
        global_reconfigure(d->global);   /* the fleet's, when it changed */
    persist_changed(d->persist);    /* a new window may move slots */
    log_info("configuration reloaded from %s: %zu provider(s), policy %s, "
             "enforcement %s", d->cfg.env_file[0] ? d->cfg.env_file : "the "
             "environment", d->cfg.nproviders,
             config_policy_name(d->cfg.routing_policy),
             quota_hard(d->quota) ? "hard" : "soft");
    return 0;
}
