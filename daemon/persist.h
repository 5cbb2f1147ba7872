/*
 * persist.h - quotas on disk: the glue between the quota table (memory,
 * authoritative) and the SQLite store (DESIGN.md §5).
 *
 * Changes are written by one transaction every LLMGUARD_QUOTA_FLUSH_MS
 * (group commit) and at shutdown.  With a flush interval of 0 a reply that
 * changed a quota is held until the transaction holding the change has
 * committed; every change made in one turn of the event loop shares it.
 * A failing write is logged, counted and retried; it never stops the
 * daemon.
 */
#ifndef LLMGUARD_PERSIST_H
#define LLMGUARD_PERSIST_H

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"

struct conn;
struct server;

/* Open the store, load the live window into a new quota table.  Exits the
 * daemon with a message when the database cannot be used at all. */
void persist_open(struct server *srv);
/* A quota changed: make sure a flush is coming. */
void persist_changed(struct server *srv);
/* Write what is pending now; 0, or -1 (logged and counted). */
int persist_flush(struct server *srv);
/* Final flush, then close the store. */
void persist_close(struct server *srv);

/*
 * Reply to a request that may have changed a quota (changed): at once with
 * a flush interval, else after the commit that makes the change durable.
 * When that commit fails the reply goes out all the same (the change is
 * counted in memory, the write retried, the failure logged and counted).
 */
void persist_reply(struct conn *c, enum proto_op op, uint64_t id,
                   const void *msg, bool changed);
/* The connection closes: drop its held replies. */
void persist_drop_conn(struct conn *c);

#endif
