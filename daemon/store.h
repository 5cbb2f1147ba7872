/*
 * store — SQLite persistence of quota usage and limit overrides (llmguardd(8),
 * "Persistence").
 *
 * The store keeps generic rows and knows nothing about windows or slots:
 *   usage   (subject, slot_start_ms) -> tokens      tokens > 0
 *   limits  subject -> limit_tokens                 a per-subject override
 *   daily   (name, unit, slot_start_ms) -> count    count > 0; the daily
 *           limits' counters, a table apart (unit: "requests", "tokens")
 * Version 1 databases (no daily table) are migrated in place at open.
 * Memory (the quota module) is authoritative; the daemon writes its dirty
 * rows in one batch per flush interval (group commit) and loads the current
 * window at start-up.
 *
 * Contract for every function below:
 * - One thread uses a store at a time; callers never pass NULL for st.
 * - Subjects are NUL-terminated text.  Token counts and limits are at most
 *   STORE_TOKENS_MAX (SQLite integers are signed 64-bit).
 * - A function that fails returns -1 (or NULL) and leaves a message naming
 *   the database path, the operation and the SQLite reason in
 *   store_errmsg(); nothing is logged here.
 * - The store never reads a clock; times are unix milliseconds passed in.
 * - Blocking is bounded: waiting for a lock held by another connection gives
 *   up after STORE_BUSY_TIMEOUT_MS and fails with "database is locked".
 */
#ifndef LLMGUARD_STORE_H
#define LLMGUARD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_SCHEMA_VERSION 2
#define STORE_BUSY_TIMEOUT_MS 200
#define STORE_TOKENS_MAX ((uint64_t)INT64_MAX)

struct store;

/*
 * Open (creating if needed) the database at path, or ":memory:" for an
 * ephemeral one, and bring its schema to STORE_SCHEMA_VERSION.  A file is
 * put in WAL mode.  The parent directory must exist: the caller creates it.
 * Refused, with a message in err: a file that cannot be opened or is not a
 * database, a read-only one, and one whose schema version is newer than
 * this build knows.  err may be NULL when errlen is 0.
 */
struct store *store_open(const char *path, char *err, size_t errlen);
/* Open an existing database of this schema version for store_load() only
 * (a file the daemon may not write); writes through it fail. */
struct store *store_open_readonly(const char *path, char *err, size_t errlen);

/* Close the store; a batch still open is rolled back.  NULL is a no-op. */
void store_close(struct store *st);

/* The message of the last failure ("" when nothing failed yet). */
const char *store_errmsg(const struct store *st);

/*
 * Start-up load, outside any batch.  Calls on_usage for every usage row with
 * slot_start_ms >= since_ms, on_daily for every daily row with
 * slot_start_ms >= daily_since_ms, then on_limit for every override, in no
 * particular order, all from one consistent snapshot.  The string pointers
 * are valid only during the call.  Any callback may be NULL.  A callback
 * returning non-zero stops the load, which then fails.
 */
struct store_load_cb {
    int (*on_usage)(const char *subject, int64_t slot_start_ms,
                    uint64_t tokens, void *arg);
    int (*on_limit)(const char *subject, uint64_t limit_tokens, void *arg);
    void *arg;
    int (*on_daily)(const char *name, const char *unit, int64_t slot_start_ms,
                    uint64_t count, void *arg);
    int64_t daily_since_ms;
};
int store_load(struct store *st, int64_t since_ms,
               const struct store_load_cb *cb);

/*
 * Group commit.  store_begin opens a write batch (it takes the write lock at
 * once, so a busy database fails here and no batch is left open).  Inside a
 * batch, store_put_usage, store_put_limit, store_reset_subject and
 * store_prune join it.  Errors are sticky: after the first failure every
 * later call of the batch returns -1 at once and store_commit rolls the
 * batch back and returns -1, keeping the first message.  Either way, when
 * store_commit or store_rollback returns, no batch is open and the store is
 * usable: the caller keeps its dirty rows and may retry the same batch.
 */
int store_begin(struct store *st);
/* store_begin without waiting for another connection's write lock: 1 when
 * the batch is open, 0 when that lock is held (no batch is open), -1 when
 * it failed. */
int store_try_begin(struct store *st);
int store_commit(struct store *st);
/* Discard the open batch; a no-op returning 0 when none is open. */
int store_rollback(struct store *st);

/* Set the absolute token count of one slot; 0 deletes the row. */
int store_put_usage(struct store *st, const char *subject,
                    int64_t slot_start_ms, uint64_t tokens);
/* Set a subject's limit override, or delete it when has_limit is false. */
int store_put_limit(struct store *st, const char *subject, bool has_limit,
                    uint64_t limit_tokens);
/* Delete every usage row of subject; its limit override is kept. */
int store_reset_subject(struct store *st, const char *subject);

/* A daily counter's slot: its absolute count (0 deletes the row); and
 * every row of one counter deleted.  Inside a batch, as store_put_usage. */
int store_put_daily(struct store *st, const char *name, const char *unit,
                    int64_t slot_start_ms, uint64_t count);
int store_reset_daily(struct store *st, const char *name, const char *unit);
/* Delete the daily rows with slot_start_ms < before_ms, in the open batch
 * or (outside one) as a statement of its own.  The table holds at most a
 * day of slots per counter: one statement is bounded work. */
int store_prune_daily(struct store *st, int64_t before_ms);

/*
 * Delete the usage rows with slot_start_ms < before_ms.  Inside a batch the
 * delete joins it (committed or rolled back with it); outside, it runs as one
 * atomic statement of its own.  When pruned is not NULL it receives the
 * number of rows deleted.
 */
int store_prune(struct store *st, int64_t before_ms, uint64_t *pruned);

/*
 * Outside a batch, delete at most max_rows (> 0) of those rows, as one
 * atomic statement: bounded work, for pruning a large table a step at a
 * time while other batches go in between.  *pruned receives the number
 * deleted; fewer than max_rows means none is left.
 */
int store_prune_step(struct store *st, int64_t before_ms, uint64_t max_rows,
                     uint64_t *pruned);

/*
 * Checkpoints on the caller's schedule.  A file store checkpoints its WAL
 * by itself, inside the commit that takes the WAL past SQLite's threshold
 * (1000 pages), and that checkpoint syncs the disk.  After
 * store_manual_checkpoints() no commit checkpoints: store_wal_pages() says
 * how large the WAL was after the last commit, and store_checkpoint(),
 * outside a batch, copies what it can of the WAL into the database without
 * waiting for other connections (SQLite's passive checkpoint).
 */
#define STORE_CHECKPOINT_PAGES 1000
void store_manual_checkpoints(struct store *st);
int store_wal_pages(const struct store *st);
int store_checkpoint(struct store *st);

/* Run PRAGMA integrity_check outside a batch: 0 when it says "ok". */
int store_integrity_check(struct store *st);

/*
 * Test hook: set PRAGMA max_page_count on the store's connection (SQLite
 * never lowers it below the current size), so that a growing batch meets a
 * real SQLITE_FULL.  Returns the limit now in force, or -1.
 */
int64_t store_set_max_pages(struct store *st, int64_t pages);

/*
 * One number kept in a one-row table of its own (table, with one column)
 * beside the quota tables, on a connection of its own opened and closed
 * here: for what multi-host mode remembers across restarts (rare
 * writes).  store_value_get: 0 and *out set, or -1 when the database,
 * the table or the row is not there (never created here).
 * store_value_put creates the table if needed and waits at most 5 ms for
 * the writer's lock (so it may run on the loop): 0, 1 when the database
 * was busy (try again later), or -1 with SQLite's message in err.
 */
int store_value_get(const char *path, const char *table, const char *column,
                    int64_t *out);
int store_value_put(const char *path, const char *table, const char *column,
                    int64_t value, char *err, size_t errlen);

#endif /* LLMGUARD_STORE_H */
