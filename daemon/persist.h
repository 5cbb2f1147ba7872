/*
 * persist.h - quotas on disk: the glue between the quota table (memory,
 * authoritative) and the SQLite store (llmguardd(8), "Persistence").
 *
 * Changes are written by one transaction every LLMGUARD_QUOTA_FLUSH_MS
 * (group commit) and at shutdown, on the writer thread (writer.h): the
 * event loop never waits on the disk.  With a flush interval of 0 a reply
 * that changed a quota is held until the transaction holding the change
 * has committed, while other replies go on; every change made while a
 * transaction is being written shares the next one.  A failing write is
 * logged, counted and retried; it never stops the daemon.
 */
#ifndef LLMGUARD_PERSIST_H
#define LLMGUARD_PERSIST_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "proto.h"

struct conn;
struct daily;
struct persist;
struct quota;
struct telemetry;

/*
 * Open the store of cfg and load the live window into q, and the last day
 * into the daily counters dl (written with the quotas, in the same
 * batches); held replies are kept in connection slot conn_slot.  cfg is
 * read again at every flush (a reload may change the interval).  Exits
 * the daemon with a message when the database cannot be used at all.
 */
struct persist *persist_open(struct event_base *base, const struct config *cfg,
                             struct quota *q, struct daily *dl,
                             struct telemetry *t, int conn_slot);
/* A quota changed: make sure a flush is coming. */
void persist_changed(struct persist *p);
/* Multi-host mode: fn(arg) is called at every persist_changed() too, so
 * that the change goes to Redis as well. */
void persist_watch(struct persist *p, void (*fn)(void *arg), void *arg);
/* Final flush, waited for; then stop the writer, close the store and free
 * p (not the quota table). */
void persist_close(struct persist *p);

/*
 * Reply to a request that may have changed a quota (changed): at once with
 * a flush interval, else after the commit that makes the change durable.
 * When that commit fails the reply goes out at once all the same (the
 * change is counted in memory, the write retried, the failure logged and
 * counted), and until a write works again replies are not held.
 */
void persist_reply(struct persist *p, struct conn *c, enum proto_op op,
                   uint64_t id, const void *msg, bool changed);
/* Close hook: the connection's held replies are dropped. */
void persist_drop_conn(void *state);

/* How writing goes, for status and /healthz. */
struct persist_state {
    bool failing;               /* the last write failed (or read-only) */
    const char *error;          /* why, while failing; owned by p */
    double last_flush_s;        /* unix time of the last write that
                                   succeeded; 0 before the first */
};
void persist_state(const struct persist *p, struct persist_state *st);

#endif
