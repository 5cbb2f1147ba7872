/*
 * gdaily.h - multi-host mode: the daily limits (RPD, TPD) counted by the
 * fleet through Redis (llmguardd(8), "Daily limits" and "Several hosts";
 * proto/REDIS.md, "Daily limits").
 *
 * The daily counters keep this host's own usage, journalled in its SQLite
 * database as in single-host mode.  Every second one script writes the
 * counters that changed (this host's part per slot, as absolute values:
 * a write sent twice, a rebuild or a restart counts nothing twice) and
 * reads the fleet's usage of every limited counter; a daily check is
 * against this host's own usage plus the rest of the fleet's as of that
 * read.  While Redis is unreachable, or the fleet rebuilds the counters
 * Redis lost, a check keeps to this host's share of the headroom last
 * seen: (limit - fleet usage at the last read) / hosts (daily.h).
 */
#ifndef LLMGUARD_GDAILY_H
#define LLMGUARD_GDAILY_H

#include <stdbool.h>

#include <event2/event.h>

#include "config.h"

struct daily;
struct global;
struct gdaily;

/* The fleet's daily counters over g's connection for dl (its SQLite rows
 * loaded: all are written once).  NULL when g is NULL (single host). */
struct gdaily *gdaily_start(struct event_base *base, const struct config *cfg,
                            struct global *g, struct daily *dl);
/* Stop; before g is freed. */
void gdaily_free(struct gdaily *gd);

#endif
