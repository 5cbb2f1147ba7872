/*
 * store — SQLite persistence of quota usage, limit overrides and the daily
 * limits' counters.
 * The only file that includes sqlite3.h.  See store.h for the contract.
 */
#include "store.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

/*
 * Schema migrations, one step per version: step i takes user_version from
 * i to i + 1.  Append a step (never edit a shipped one) and bump
 * STORE_SCHEMA_VERSION.  Needs SQLite >= 3.24 (UPSERT).
 */
static const struct migration {
    int version;        /* user_version once the step has run */
    const char *sql;
} migrations[] = {
    {1,
     "CREATE TABLE quota_usage ("
     " subject TEXT NOT NULL CHECK (typeof(subject) = 'text'),"
     " slot_start_ms INTEGER NOT NULL"
     "  CHECK (typeof(slot_start_ms) = 'integer'),"
     " tokens INTEGER NOT NULL"
     "  CHECK (typeof(tokens) = 'integer' AND tokens > 0),"
     " PRIMARY KEY (subject, slot_start_ms)"
     ") WITHOUT ROWID;"
     "CREATE INDEX quota_usage_by_slot ON quota_usage (slot_start_ms);"
     "CREATE TABLE quota_limit ("
     " subject TEXT NOT NULL PRIMARY KEY CHECK (typeof(subject) = 'text'),"
     " limit_tokens INTEGER NOT NULL"
     "  CHECK (typeof(limit_tokens) = 'integer' AND limit_tokens >= 0)"
     ") WITHOUT ROWID;"},
    /* Daily limits' counters, apart from the quota subjects: no id a
     * client sends can name one of these rows. */
    {2,
     "CREATE TABLE daily_usage ("
     " name TEXT NOT NULL CHECK (typeof(name) = 'text'),"
     " unit TEXT NOT NULL CHECK (unit IN ('requests', 'tokens')),"
     " slot_start_ms INTEGER NOT NULL"
     "  CHECK (typeof(slot_start_ms) = 'integer'),"
     " count INTEGER NOT NULL"
     "  CHECK (typeof(count) = 'integer' AND count > 0),"
     " PRIMARY KEY (name, unit, slot_start_ms)"
     ") WITHOUT ROWID;"},
};
#define N_MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))
_Static_assert(N_MIGRATIONS == STORE_SCHEMA_VERSION,
               "one migration step per schema version");

/* Every statement the store runs more than once, prepared at open. */
enum stmt_id {
    STMT_BEGIN_WRITE,
    STMT_BEGIN_READ,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_PUT_USAGE,
    STMT_DEL_USAGE,
    STMT_PUT_LIMIT,
    STMT_DEL_LIMIT,
    STMT_RESET,
    STMT_PRUNE,
    STMT_PRUNE_STEP,
    STMT_LOAD_USAGE,
    STMT_LOAD_LIMITS,
    STMT_INTEGRITY,
    STMT_PUT_DAILY,
    STMT_DEL_DAILY,
    STMT_RESET_DAILY,
    STMT_PRUNE_DAILY,
    STMT_LOAD_DAILY,
    STMT_COUNT
};

static const char *const stmt_sql[STMT_COUNT] = {
    [STMT_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [STMT_BEGIN_READ] = "BEGIN DEFERRED",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_PUT_USAGE] =
        "INSERT INTO quota_usage (subject, slot_start_ms, tokens)"
        " VALUES (?1, ?2, ?3) ON CONFLICT (subject, slot_start_ms)"
        " DO UPDATE SET tokens = excluded.tokens",
    [STMT_DEL_USAGE] =
        "DELETE FROM quota_usage WHERE subject = ?1 AND slot_start_ms = ?2",
    [STMT_PUT_LIMIT] =
        "INSERT INTO quota_limit (subject, limit_tokens) VALUES (?1, ?2)"
        " ON CONFLICT (subject) DO UPDATE SET limit_tokens = excluded.limit_tokens",
    [STMT_DEL_LIMIT] = "DELETE FROM quota_limit WHERE subject = ?1",
    [STMT_RESET] = "DELETE FROM quota_usage WHERE subject = ?1",
    [STMT_PRUNE] = "DELETE FROM quota_usage WHERE slot_start_ms < ?1",
    [STMT_PRUNE_STEP] =
        "DELETE FROM quota_usage WHERE (subject, slot_start_ms) IN"
        " (SELECT subject, slot_start_ms FROM quota_usage"
        " WHERE slot_start_ms < ?1 LIMIT ?2)",
    [STMT_LOAD_USAGE] =
        "SELECT subject, slot_start_ms, tokens FROM quota_usage"
        " WHERE slot_start_ms >= ?1",
    [STMT_LOAD_LIMITS] = "SELECT subject, limit_tokens FROM quota_limit",
    [STMT_INTEGRITY] = "PRAGMA integrity_check",
    [STMT_PUT_DAILY] =
        "INSERT INTO daily_usage (name, unit, slot_start_ms, count)"
        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name, unit, slot_start_ms)"
        " DO UPDATE SET count = excluded.count",
    [STMT_DEL_DAILY] =
        "DELETE FROM daily_usage WHERE name = ?1 AND unit = ?2"
        " AND slot_start_ms = ?3",
    [STMT_RESET_DAILY] =
        "DELETE FROM daily_usage WHERE name = ?1 AND unit = ?2",
    [STMT_PRUNE_DAILY] = "DELETE FROM daily_usage WHERE slot_start_ms < ?1",
    [STMT_LOAD_DAILY] =
        "SELECT name, unit, slot_start_ms, count FROM daily_usage"
        " WHERE slot_start_ms >= ?1",
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[STMT_COUNT];
    char *path;
    bool in_batch;          /* store_begin succeeded, not yet ended */
    bool batch_failed;      /* a call of the open batch failed */
    int last_rc;            /* SQLite's code of the last failure */
    int wal_pages;          /* the WAL's size after the last commit, with
                             * store_manual_checkpoints() */
    char err[1024];
};

__attribute__((format(printf, 2, 3)))
static void
set_err(struct store *st, const char *fmt, ...)
{
    va_list ap;
    int n;

    n = snprintf(st->err, sizeof(st->err), "database %s: ", st->path);
    if (n < 0 || (size_t)n >= sizeof(st->err))
        return;
    va_start(ap, fmt);
    vsnprintf(st->err + n, sizeof(st->err) - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Record SQLite's reason for rc, with the OS error for I/O failures. */
static void
set_db_err(struct store *st, const char *op, int rc)
{
    int prim = rc & 0xff;
    int sys = sqlite3_system_errno(st->db);

    st->last_rc = rc;
    if ((prim == SQLITE_CANTOPEN || prim == SQLITE_IOERR) && sys != 0)
        set_err(st, "%s: %s (%s)", op, sqlite3_errmsg(st->db), strerror(sys));
    else
        set_err(st, "%s: %s", op, sqlite3_errmsg(st->db));
}

/* Step a statement that returns no rows, then reset it for its next use. */
static int
run(struct store *st, sqlite3_stmt *s, const char *op)
{
    int rc = sqlite3_step(s);

    if (rc != SQLITE_DONE)
        set_db_err(st, op, rc);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Fail a statement whose parameters could not be bound. */
static int
bind_failed(struct store *st, sqlite3_stmt *s, const char *op, int rc)
{
    set_db_err(st, op, rc);
    sqlite3_clear_bindings(s);
    return -1;
}

/* Run a no-row statement on a one-shot SQL string (open-time setup). */
static int
exec_sql(struct store *st, const char *sql, const char *op)
{
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK) {
        set_db_err(st, op, rc);
        return -1;
    }
    return 0;
}

/* Run a one-shot statement returning one row, whose first column is read. */
static int
query_row(struct store *st, const char *sql, const char *op,
          int64_t *as_int, char *as_text, size_t textlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        set_db_err(st, op, rc);
        sqlite3_finalize(s);
        return -1;
    }
    if (as_int != NULL)
        *as_int = sqlite3_column_int64(s, 0);
    if (as_text != NULL) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        snprintf(as_text, textlen, "%s", t != NULL ? (const char *)t : "");
    }
    sqlite3_finalize(s);
    return 0;
}

/* Roll back whatever transaction is open on the connection, if any. */
static int
rollback_txn(struct store *st)
{
    if (sqlite3_get_autocommit(st->db))
        return 0;   /* none open, or SQLite already rolled it back */
    return run(st, st->stmt[STMT_ROLLBACK], "rollback");
}

/* Bring the schema to STORE_SCHEMA_VERSION, refusing newer databases. */
static int
migrate(struct store *st)
{
    int64_t version;
    char sql[64];
    size_t i;

    /* IMMEDIATE: two daemons starting at once cannot both migrate. */
    if (exec_sql(st, "BEGIN IMMEDIATE", "begin migration") < 0)
        return -1;
    if (query_row(st, "PRAGMA user_version", "read schema version",
                  &version, NULL, 0) < 0)
        goto fail;
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        set_err(st, "schema version %" PRId64 " is newer than this build "
                "supports (%d); refusing to open it", version,
                STORE_SCHEMA_VERSION);
        goto fail;
    }
    for (i = (size_t)version; i < N_MIGRATIONS; i++) {
        assert(migrations[i].version == (int)i + 1);
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d",
                 migrations[i].version);
        if (exec_sql(st, migrations[i].sql, "migrate schema") < 0 ||
            exec_sql(st, sql, "set schema version") < 0)
            goto fail;
    }
    if (exec_sql(st, "COMMIT", "commit migration") < 0)
        goto fail;
    return 0;
fail:
    if (!sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* Journal and durability settings of a file database. */
static int
set_wal(struct store *st)
{
    char mode[16];

    if (query_row(st, "PRAGMA journal_mode = WAL", "enable WAL", NULL,
                  mode, sizeof(mode)) < 0)
        return -1;
    if (strcasecmp(mode, "wal") != 0) {
        set_err(st, "enable WAL: journal_mode stays '%s'", mode);
        return -1;
    }
    /*
     * In WAL mode, synchronous=NORMAL syncs the WAL at checkpoints instead
     * of at every commit.  A process crash loses nothing committed; a power
     * loss or OS crash may lose the last few commits, but the checksummed
     * WAL is replayed only up to its last complete commit, so the database
     * is never corrupt.  That keeps the promise of llmguardd(8),
     * "Persistence", without an fsync per group commit.
     */
    return exec_sql(st, "PRAGMA synchronous = NORMAL", "set synchronous");
}

/* Check, read-only, that the schema is the one this build writes. */
static int
check_version(struct store *st)
{
    int64_t version;

    if (query_row(st, "PRAGMA user_version", "read schema version",
                  &version, NULL, 0) < 0)
        return -1;
    if (version != STORE_SCHEMA_VERSION) {
        set_err(st, "schema version %" PRId64 " is not %d, and a read-only "
                "database cannot be migrated", version, STORE_SCHEMA_VERSION);
        return -1;
    }
    return 0;
}

static struct store *
open_store(const char *path, bool readonly, char *err, size_t errlen)
{
    struct store *st;
    int rc, i;

    assert(path != NULL);
    st = calloc(1, sizeof(*st));
    if (st == NULL || (st->path = strdup(path)) == NULL) {
        free(st);
        if (errlen > 0)
            snprintf(err, errlen, "database %s: out of memory", path);
        return NULL;
    }
    rc = sqlite3_open_v2(path, &st->db, readonly ? SQLITE_OPEN_READONLY :
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (st->db == NULL) {
        set_err(st, "open: out of memory");
        goto fail;
    }
    if (rc != SQLITE_OK) {
        set_db_err(st, "open", rc);
        goto fail;
    }
    /* A file we may not write is opened read-only by SQLite: refuse it. */
    if (!readonly && sqlite3_db_readonly(st->db, "main") == 1) {
        set_err(st, "open: the file is read-only");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
    if (readonly) {
        if (check_version(st) < 0)
            goto fail;
    } else if ((strcmp(path, ":memory:") != 0 && set_wal(st) < 0) ||
               migrate(st) < 0) {
        goto fail;
    }
    for (i = 0; i < STMT_COUNT; i++) {
        rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1,
                                SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            set_db_err(st, "prepare", rc);
            goto fail;
        }
    }
    st->err[0] = '\0';
    return st;
fail:
    if (errlen > 0)
        snprintf(err, errlen, "%s", st->err);
    store_close(st);
    return NULL;
}

struct store *
store_open(const char *path, char *err, size_t errlen)
{
    return open_store(path, false, err, errlen);
}

struct store *
store_open_readonly(const char *path, char *err, size_t errlen)
{
    return open_store(path, true, err, errlen);
}

void
store_close(struct store *st)
{
    int i;

    if (st == NULL)
        return;
    if (st->db != NULL) {
        if (st->in_batch && st->stmt[STMT_ROLLBACK] != NULL)
            rollback_txn(st);
        for (i = 0; i < STMT_COUNT; i++)
            sqlite3_finalize(st->stmt[i]);
        sqlite3_close_v2(st->db);
    }
    free(st->path);
    free(st);
}

const char *
store_errmsg(const struct store *st)
{
    return st->err;
}

/* Step a row query to its end, handing each row to fn; 0 when all done. */
static int
load_rows(struct store *st, sqlite3_stmt *s, const char *op,
          int (*fn)(sqlite3_stmt *, const struct store_load_cb *),
          const struct store_load_cb *cb)
{
    int rc;

    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (sqlite3_column_type(s, 0) != SQLITE_TEXT ||
            sqlite3_column_int64(s, sqlite3_column_count(s) - 1) < 0) {
            set_err(st, "%s: malformed row", op);
            goto fail;
        }
        if (fn(s, cb) != 0) {
            set_err(st, "%s: stopped by the caller", op);
            goto fail;
        }
    }
    if (rc != SQLITE_DONE) {
        set_db_err(st, op, rc);
        goto fail;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return 0;
fail:
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return -1;
}

static int
usage_row(sqlite3_stmt *s, const struct store_load_cb *cb)
{
    return cb->on_usage((const char *)sqlite3_column_text(s, 0),
                        sqlite3_column_int64(s, 1),
                        (uint64_t)sqlite3_column_int64(s, 2), cb->arg);
}

static int
limit_row(sqlite3_stmt *s, const struct store_load_cb *cb)
{
    return cb->on_limit((const char *)sqlite3_column_text(s, 0),
                        (uint64_t)sqlite3_column_int64(s, 1), cb->arg);
}

static int
daily_row(sqlite3_stmt *s, const struct store_load_cb *cb)
{
    return cb->on_daily((const char *)sqlite3_column_text(s, 0),
                        (const char *)sqlite3_column_text(s, 1),
                        sqlite3_column_int64(s, 2),
                        (uint64_t)sqlite3_column_int64(s, 3), cb->arg);
}

/* The rows of s (a query of slot_start_ms >= ?1) from since_ms on. */
static int
load_since(struct store *st, enum stmt_id id, int64_t since_ms, const char *op,
           int (*fn)(sqlite3_stmt *, const struct store_load_cb *),
           const struct store_load_cb *cb)
{
    sqlite3_stmt *s = st->stmt[id];
    int rc = sqlite3_bind_int64(s, 1, since_ms);

    if (rc != SQLITE_OK)
        return bind_failed(st, s, op, rc);
    return load_rows(st, s, op, fn, cb);
}

int
store_load(struct store *st, int64_t since_ms, const struct store_load_cb *cb)
{
    assert(!st->in_batch);
    assert(cb != NULL);
    /* One read transaction: the tables come from the same snapshot. */
    if (run(st, st->stmt[STMT_BEGIN_READ], "load: begin") < 0)
        return -1;
    if (cb->on_usage != NULL &&
        load_since(st, STMT_LOAD_USAGE, since_ms, "load usage", usage_row,
                   cb) < 0)
        goto fail;
    if (cb->on_daily != NULL &&
        load_since(st, STMT_LOAD_DAILY, cb->daily_since_ms, "load daily",
                   daily_row, cb) < 0)
        goto fail;
    if (cb->on_limit != NULL &&
        load_rows(st, st->stmt[STMT_LOAD_LIMITS], "load limits", limit_row,
                  cb) < 0)
        goto fail;
    if (run(st, st->stmt[STMT_COMMIT], "load: end") < 0)
        goto fail;
    return 0;
fail:
    rollback_txn(st);
    return -1;
}

int
store_begin(struct store *st)
{
    assert(!st->in_batch);
    if (run(st, st->stmt[STMT_BEGIN_WRITE], "begin") < 0)
        return -1;
    st->in_batch = true;
    st->batch_failed = false;
    return 0;
}

int
store_try_begin(struct store *st)
{
    int rc;

    sqlite3_busy_timeout(st->db, 0);
    rc = store_begin(st);
    sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
    if (rc == 0)
        return 1;
    return (st->last_rc & 0xff) == SQLITE_BUSY ? 0 : -1;
}

int
store_commit(struct store *st)
{
    int rc = 0;

    assert(st->in_batch);
    if (st->batch_failed ||
        run(st, st->stmt[STMT_COMMIT], "commit") < 0) {
        /* Keep the first failure's message over any from the rollback. */
        char first[sizeof(st->err)];

        memcpy(first, st->err, sizeof(first));
        rollback_txn(st);
        memcpy(st->err, first, sizeof(first));
        rc = -1;
    }
    st->in_batch = false;
    st->batch_failed = false;
    return rc;
}

/* The WAL hook: SQLite calls it after each commit, with the WAL's size.
 * Installing it turns the automatic checkpoint off. */
static int
count_wal(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct store *st = arg;

    (void)db;
    (void)name;
    st->wal_pages = pages;
    return SQLITE_OK;
}

void
store_manual_checkpoints(struct store *st)
{
    sqlite3_wal_hook(st->db, count_wal, st);
}

int
store_wal_pages(const struct store *st)
{
    return st->wal_pages;
}

int
store_checkpoint(struct store *st)
{
    int rc;

    assert(!st->in_batch);
    rc = sqlite3_wal_checkpoint_v2(st->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                   NULL, NULL);
    st->wal_pages = 0;
    if (rc != SQLITE_OK) {
        set_db_err(st, "checkpoint", rc);
        return -1;
    }
    return 0;
}

int
store_rollback(struct store *st)
{
    int rc;

    if (!st->in_batch)
        return 0;
    rc = rollback_txn(st);
    st->in_batch = false;
    st->batch_failed = false;
    return rc;
}

/* Step a write of the open batch; a failure poisons the batch. */
static int
batch_run(struct store *st, sqlite3_stmt *s, const char *op)
{
    if (run(st, s, op) < 0) {
        st->batch_failed = true;
        return -1;
    }
    return 0;
}

/* s, bound (rc: how the binds went), run in the batch; a failed bind
 * fails the batch. */
static int
batch_bound(struct store *st, sqlite3_stmt *s, const char *what, int rc)
{
    if (rc != SQLITE_OK) {
        st->batch_failed = true;
        return bind_failed(st, s, what, rc);
    }
    return batch_run(st, s, what);
}

int
store_put_usage(struct store *st, const char *subject, int64_t slot_start_ms,
                uint64_t tokens)
{
    sqlite3_stmt *s;
    int rc;

    assert(st->in_batch);
    assert(subject != NULL);
    assert(tokens <= STORE_TOKENS_MAX);
    if (st->batch_failed)
        return -1;
    s = st->stmt[tokens > 0 ? STMT_PUT_USAGE : STMT_DEL_USAGE];
    rc = sqlite3_bind_text(s, 1, subject, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, slot_start_ms);
    if (rc == SQLITE_OK && tokens > 0)
        rc = sqlite3_bind_int64(s, 3, (int64_t)tokens);
    return batch_bound(st, s, "put usage", rc);
}

int
store_put_limit(struct store *st, const char *subject, bool has_limit,
                uint64_t limit_tokens)
{
    sqlite3_stmt *s;
    int rc;

    assert(st->in_batch);
    assert(subject != NULL);
    assert(limit_tokens <= STORE_TOKENS_MAX);
    if (st->batch_failed)
        return -1;
    s = st->stmt[has_limit ? STMT_PUT_LIMIT : STMT_DEL_LIMIT];
    rc = sqlite3_bind_text(s, 1, subject, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && has_limit)
        rc = sqlite3_bind_int64(s, 2, (int64_t)limit_tokens);
    return batch_bound(st, s, "put limit", rc);
}

int
store_reset_subject(struct store *st, const char *subject)
{
    sqlite3_stmt *s = st->stmt[STMT_RESET];
    int rc;

    assert(st->in_batch);
    assert(subject != NULL);
    if (st->batch_failed)
        return -1;
    rc = sqlite3_bind_text(s, 1, subject, -1, SQLITE_STATIC);
    return batch_bound(st, s, "reset subject", rc);
}

int
store_put_daily(struct store *st, const char *name, const char *unit,
                int64_t slot_start_ms, uint64_t count)
{
    sqlite3_stmt *s;
    int rc;

    assert(st->in_batch);
    assert(name != NULL && unit != NULL);
    assert(count <= STORE_TOKENS_MAX);
    if (st->batch_failed)
        return -1;
    s = st->stmt[count > 0 ? STMT_PUT_DAILY : STMT_DEL_DAILY];
    rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, unit, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, slot_start_ms);
    if (rc == SQLITE_OK && count > 0)
        rc = sqlite3_bind_int64(s, 4, (int64_t)count);
    return batch_bound(st, s, "put daily", rc);
}

int
store_reset_daily(struct store *st, const char *name, const char *unit)
{
    sqlite3_stmt *s = st->stmt[STMT_RESET_DAILY];
    int rc;

    assert(st->in_batch);
    assert(name != NULL && unit != NULL);
    if (st->batch_failed)
        return -1;
    rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, unit, -1, SQLITE_STATIC);
    return batch_bound(st, s, "reset daily", rc);
}

int
store_prune_daily(struct store *st, int64_t before_ms)
{
    sqlite3_stmt *s = st->stmt[STMT_PRUNE_DAILY];
    int rc;

    if (st->in_batch && st->batch_failed)
        return -1;
    rc = sqlite3_bind_int64(s, 1, before_ms);
    if (rc != SQLITE_OK) {
        st->batch_failed = st->in_batch;
        return bind_failed(st, s, "prune daily", rc);
    }
    return st->in_batch ? batch_run(st, s, "prune daily") :
           run(st, s, "prune daily");
}

int
store_prune(struct store *st, int64_t before_ms, uint64_t *pruned)
{
    sqlite3_stmt *s = st->stmt[STMT_PRUNE];
    int rc;

    if (st->in_batch && st->batch_failed)
        return -1;
    rc = sqlite3_bind_int64(s, 1, before_ms);
    if (rc != SQLITE_OK) {
        st->batch_failed = st->in_batch;
        return bind_failed(st, s, "prune", rc);
    }
    rc = st->in_batch ? batch_run(st, s, "prune") : run(st, s, "prune");
    if (rc < 0)
        return -1;
    if (pruned != NULL)
        *pruned = (uint64_t)sqlite3_changes(st->db);
    return 0;
}

int
store_prune_step(struct store *st, int64_t before_ms, uint64_t max_rows,
                 uint64_t *pruned)
{
    sqlite3_stmt *s = st->stmt[STMT_PRUNE_STEP];
    int rc;

    assert(!st->in_batch);
    assert(max_rows > 0 && max_rows <= INT64_MAX);
    rc = sqlite3_bind_int64(s, 1, before_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, (int64_t)max_rows);
    if (rc != SQLITE_OK)
        return bind_failed(st, s, "prune", rc);
    if (run(st, s, "prune") < 0)
        return -1;
    *pruned = (uint64_t)sqlite3_changes(st->db);
    return 0;
}

int
store_integrity_check(struct store *st)
{
    sqlite3_stmt *s = st->stmt[STMT_INTEGRITY];
    const unsigned char *first;
    int rc;

    assert(!st->in_batch);
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        set_db_err(st, "integrity check", rc);
        sqlite3_reset(s);
        return -1;
    }
    first = sqlite3_column_text(s, 0);
    if (first != NULL && strcmp((const char *)first, "ok") == 0) {
        sqlite3_reset(s);
        return 0;
    }
    set_err(st, "integrity check: %s", first != NULL ?
            (const char *)first : "no answer");
    sqlite3_reset(s);
    return -1;
}

int64_t
store_set_max_pages(struct store *st, int64_t pages)
{
    char sql[64];
    int64_t now_pages;

    assert(pages > 0);
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %" PRId64, pages);
    if (query_row(st, sql, "set max_page_count", &now_pages, NULL, 0) < 0)
        return -1;
    return now_pages;
}

int
store_value_get(const char *path, const char *table, const char *column,
                int64_t *out)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char sql[160];
    int rc = -1;

    snprintf(sql, sizeof(sql), "SELECT %s FROM %s WHERE id = 1", column,
             table);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) ==
        SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = 0;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

int
store_value_put(const char *path, const char *table, const char *column,
                int64_t value, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    char sql[256];
    int rc;

    snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS %s (id INTEGER "
             "PRIMARY KEY, %s INTEGER NOT NULL); INSERT OR REPLACE INTO %s "
             "VALUES (1, %" PRId64 ")", table, column, table, value);
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_busy_timeout(db, 5)) == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : rc == SQLITE_BUSY ? 1 : -1;
}
