/*
 * writer.h - the quota store's writes, on a thread of their own
 * (llmguardd(8), "Persistence").
 *
 * The event loop never waits for a sync of the disk.  It builds a batch,
 * an immutable list of changes (what quota_flush() tells its sink), and
 * hands it to the writer, which writes it on the store it owns (its own
 * SQLite connection) and hands it back with the outcome.  The loop may
 * hand over more batches while one is being written: the writer then
 * writes all that are waiting as one transaction (group commit), without
 * waiting for the loop in between, and hands them back in order.  When a transaction fails, the
 * batches waiting at that moment come back failed too, unwritten, so no
 * later change is written before an earlier one that failed.  Between
 * transactions the writer deletes expired rows, a bounded step at a time.
 * The writer announces batches that are back by making a descriptor
 * readable (writer_fd), for the loop to watch.  It alone checkpoints the
 * WAL (the only writes that sync the disk), between transactions.
 *
 * Threads: every function here is called from one thread, the loop's; the
 * writer's own thread touches only the store and the batch in its hands,
 * except in writer_write_now(), where the loop writes a batch on the store
 * while the thread waits with nothing in its hands.
 * A batch belongs to the loop until writer_submit() and again from the
 * writer_collect() that returns it.  Nothing here logs: failures come back
 * as messages.
 */
#ifndef LLMGUARD_WRITER_H
#define LLMGUARD_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Rows deleted by one prune step: a few milliseconds of the writer's. */
#define WRITER_PRUNE_ROWS 2000
#define WRITER_ERR_MAX 1024

struct store;
struct writer;
struct writer_batch;

/* One change: the store call it becomes. */
enum writer_kind {
    WRITER_RESET,       /* store_reset_subject */
    WRITER_LIMIT,       /* store_put_limit(has_limit, value) */
    WRITER_SLOT,        /* store_put_usage(slot_start_ms, value) */
    WRITER_DAILY_RESET, /* store_reset_daily(subject: the name, unit) */
    WRITER_DAILY_SLOT,  /* store_put_daily(name, unit, slot_start_ms,
                           value) */
    WRITER_DAILY_PRUNE, /* store_prune_daily(slot_start_ms); no name */
};

struct writer_change {
    enum writer_kind kind;
    const char *subject;        /* DAILY_*: the limit's name ("" to prune) */
    int64_t slot_start_ms;      /* SLOT; DAILY_PRUNE: the horizon */
    int64_t value;              /* SLOT: tokens; LIMIT: the limit */
    bool has_limit;             /* LIMIT */
    const char *unit;           /* DAILY_RESET, _SLOT: "requests" or
                                   "tokens", a string constant (not copied) */
};

/* An empty batch; NULL when out of memory. */
struct writer_batch *writer_batch_new(void);
void writer_batch_free(struct writer_batch *b);
/* Empty b for its next use. */
void writer_batch_clear(struct writer_batch *b);
/* Append a copy of c (its subject copied too); -1 when out of memory,
 * and b is then as it was. */
int writer_batch_add(struct writer_batch *b, const struct writer_change *c);
size_t writer_batch_count(const struct writer_batch *b);
/* Change i (< count); its subject is valid until b is cleared or freed. */
void writer_batch_get(const struct writer_batch *b, size_t i,
                      struct writer_change *c);

/* A batch back from the writer. */
struct writer_result {
    struct writer_batch *batch;
    bool ok;                    /* committed; else not written, and why: */
    bool first;                 /* the first batch of its transaction (a
                                 * failure to count) */
    char err[WRITER_ERR_MAX];
};

/*
 * Start the writer thread on st, an open store it now owns, or on NULL for
 * a database that cannot be opened for writing yet: then every batch first
 * tries store_open(path) again.  NULL, with the reason in err, when the
 * thread cannot be started (st is then closed).
 */
struct writer *writer_start(const char *path, struct store *st, char *err,
                            size_t errlen);
/* Stop the thread once the batches in its hands are written, close the
 * store, free w and every batch not collected. */
void writer_stop(struct writer *w);

/* Readable when a batch is back: then call writer_collect() until 0. */
int writer_fd(const struct writer *w);
/* Batches in the writer's hands: submitted, not collected. */
size_t writer_pending(struct writer *w);
/* Hand b over to be written, after those handed over before. */
void writer_submit(struct writer *w, struct writer_batch *b);
/*
 * Write b at once on the calling thread (the loop's), when the writer
 * holds no batch, is not pruning or checkpointing, and b has at most
 * WRITER_NOW_MAX changes: 1, with the outcome in r (r->batch is b, which
 * is the loop's again).  0 otherwise, b untouched: submit it.  Also 0 when
 * another connection holds the write lock: this never waits for a lock,
 * nor syncs the disk (the checkpoint it may make due is the thread's).
 * For flush 0, where a reply waits for its commit: a commit of a few rows
 * costs less than the two thread hand-offs around it.
 */
#define WRITER_NOW_MAX 64
int writer_write_now(struct writer *w, struct writer_batch *b,
                     struct writer_result *r);
/* The oldest batch back, in r: 1; 0 when none is back yet. */
int writer_collect(struct writer *w, struct writer_result *r);
/* The same, waiting for it: 1, or 0 when none is in the writer's hands
 * (shutdown). */
int writer_wait(struct writer *w, struct writer_result *r);

/*
 * Delete the usage rows with slot_start_ms < before_ms, WRITER_PRUNE_ROWS
 * at a time whenever no batch is waiting; a later call moves the bound.
 * writer_prune_report() says how many went since it was last asked, and
 * the last failure (a failed step ends the run; the next call starts
 * another), "" when none.
 */
void writer_prune(struct writer *w, int64_t before_ms);
uint64_t writer_prune_report(struct writer *w, char *err, size_t errlen);

#endif
