/*
 * Unit tests for daemon/store.c on real SQLite files in a private mkdtemp
 * directory, removed by the group teardown whatever the tests did.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

struct fixture {
    char dir[64];
};

/* What store_load handed back. */
struct row {
    char subject[64];
    int64_t slot_ms;
    uint64_t tokens;
};

struct loaded {
    struct row usage[512];
    size_t n_usage;
    struct row limits[16];
    size_t n_limits;
    size_t stop_at;     /* non-zero: on_usage fails at this row count */
};

static int
on_usage(const char *subject, int64_t slot_ms, uint64_t tokens, void *arg)
{
    struct loaded *l = arg;
    struct row *r;

    if (l->stop_at != 0 && l->n_usage + 1 == l->stop_at)
        return -1;
    assert_true(l->n_usage < sizeof(l->usage) / sizeof(l->usage[0]));
    r = &l->usage[l->n_usage++];
    snprintf(r->subject, sizeof(r->subject), "%s", subject);
    r->slot_ms = slot_ms;
    r->tokens = tokens;
    return 0;
}

static int
on_limit(const char *subject, uint64_t limit_tokens, void *arg)
{
    struct loaded *l = arg;
    struct row *r;

    assert_true(l->n_limits < sizeof(l->limits) / sizeof(l->limits[0]));
    r = &l->limits[l->n_limits++];
    snprintf(r->subject, sizeof(r->subject), "%s", subject);
    r->tokens = limit_tokens;
    return 0;
}

static void
load(struct store *st, int64_t since_ms, struct loaded *l)
{
    struct store_load_cb cb = { .on_usage = on_usage, .on_limit = on_limit,
                               .arg = l };

    memset(l, 0, sizeof(*l));
    assert_int_equal(store_load(st, since_ms, &cb), 0);
}

/* Tokens of one usage row, 0 when the row is absent (0 is never stored). */
static uint64_t
usage_of(const struct loaded *l, const char *subject, int64_t slot_ms)
{
    for (size_t i = 0; i < l->n_usage; i++)
        if (strcmp(l->usage[i].subject, subject) == 0 &&
            l->usage[i].slot_ms == slot_ms)
            return l->usage[i].tokens;
    return 0;
}

/* Limit override of subject, -1 when there is none. */
static int64_t
limit_of(const struct loaded *l, const char *subject)
{
    for (size_t i = 0; i < l->n_limits; i++)
        if (strcmp(l->limits[i].subject, subject) == 0)
            return (int64_t)l->limits[i].tokens;
    return -1;
}

static void
db_path(void **state, const char *name, char *buf, size_t len)
{
    struct fixture *f = *state;

    snprintf(buf, len, "%s/%s", f->dir, name);
}

static struct store *
open_ok(const char *path)
{
    char err[256] = "";
    struct store *st = store_open(path, err, sizeof(err));

    if (st == NULL)
        fail_msg("store_open(%s): %s", path, err);
    assert_string_equal(store_errmsg(st), "");
    return st;
}

/* One integer from a plain SQLite connection, bypassing the store. */
static int64_t
raw_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void
raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static int
group_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int
make_writable(const char *path, const struct stat *sb, int type,
              struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (type == FTW_D || type == FTW_DNR)
        chmod(path, 0700);
    return 0;
}

static int
remove_entry(const char *path, const struct stat *sb, int type,
             struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static int
group_teardown(void **state)
{
    struct fixture *f = *state;
    int rc;

    /* A failed read-only test may have left a directory 0555. */
    nftw(f->dir, make_writable, 8, FTW_PHYS);
    rc = nftw(f->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

static void
test_schema_version_and_wal(void **state)
{
    char path[128];
    struct store *st;

    db_path(state, "schema.db", path, sizeof(path));
    st = open_ok(path);
    store_close(st);
    assert_int_equal(raw_int(path, "PRAGMA user_version"),
                     STORE_SCHEMA_VERSION);
    assert_int_equal(STORE_SCHEMA_VERSION, 2);
    assert_int_equal(raw_int(path, "SELECT journal_mode = 'wal' FROM "
                                   "pragma_journal_mode"), 1);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_schema WHERE"
                                   " name IN ('quota_usage','quota_limit',"
                                   "'daily_usage')"),
                     3);
    /* A second open finds the schema current and changes nothing. */
    st = open_ok(path);
    assert_int_equal(store_integrity_check(st), 0);
    store_close(st);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 2);
}

static void
test_reopen_keeps_data(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "reopen.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:abc", 60000, 120), 0);
    assert_int_equal(store_put_usage(st, "tenant:x", 60000, 7), 0);
    assert_int_equal(store_put_limit(st, "tenant:x", true, 5000), 0);
    assert_int_equal(store_commit(st), 0);
    /* A batch still open at close is rolled back, not committed. */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:abc", 120000, 99), 0);
    store_close(st);

    st = open_ok(path);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 2);
    assert_int_equal(usage_of(&l, "workflow:abc", 60000), 120);
    assert_int_equal(usage_of(&l, "tenant:x", 60000), 7);
    assert_int_equal(l.n_limits, 1);
    assert_int_equal(limit_of(&l, "tenant:x"), 5000);
    store_close(st);
}

static void
test_upsert_overwrites(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "upsert.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1000, 10), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1000, 15), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 2000, 3), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1000, 25), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 2);
    assert_int_equal(usage_of(&l, "workflow:a", 1000), 25);
    assert_int_equal(usage_of(&l, "workflow:a", 2000), 3);
    /* The largest count the store accepts comes back exactly. */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 2000,
                                     STORE_TOKENS_MAX), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_true(usage_of(&l, "workflow:a", 2000) == STORE_TOKENS_MAX);
    store_close(st);
}

static void
test_zero_deletes(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "zero.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1000, 10), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 2000, 20), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1000, 0), 0);
    assert_int_equal(store_put_usage(st, "workflow:never", 1000, 0), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 1);
    assert_int_equal(usage_of(&l, "workflow:a", 2000), 20);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"), 1);
    store_close(st);
}

static void
test_limits_put_and_delete(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "limits.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_limit(st, "tenant:x", true, 500), 0);
    assert_int_equal(store_put_limit(st, "tenant:x", true, 700), 0);
    assert_int_equal(store_put_limit(st, "workflow:zero", true, 0), 0);
    assert_int_equal(store_put_limit(st, "workflow:gone", true, 9), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_limit(st, "workflow:gone", false, 0), 0);
    assert_int_equal(store_put_limit(st, "workflow:never", false, 0), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 0);
    assert_int_equal(l.n_limits, 2);
    assert_int_equal(limit_of(&l, "tenant:x"), 700);
    assert_int_equal(limit_of(&l, "workflow:zero"), 0);
    assert_int_equal(limit_of(&l, "workflow:gone"), -1);
    store_close(st);
}

static void
test_reset_subject(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "reset.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1000, 1), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 2000, 2), 0);
    assert_int_equal(store_put_usage(st, "workflow:ab", 1000, 4), 0);
    assert_int_equal(store_put_usage(st, "tenant:a", 1000, 8), 0);
    assert_int_equal(store_put_limit(st, "workflow:a", true, 50), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_reset_subject(st, "workflow:a"), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 2);
    assert_int_equal(usage_of(&l, "workflow:ab", 1000), 4);
    assert_int_equal(usage_of(&l, "tenant:a", 1000), 8);
    assert_int_equal(limit_of(&l, "workflow:a"), 50);
    store_close(st);
}

static void
test_load_since_filter(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "since.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 9999, 1), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 10000, 2), 0);
    assert_int_equal(store_put_usage(st, "tenant:b", 10001, 3), 0);
    assert_int_equal(store_put_usage(st, "tenant:b", -5, 4), 0);
    assert_int_equal(store_put_limit(st, "tenant:b", true, 11), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 10000, &l);
    assert_int_equal(l.n_usage, 2);
    assert_int_equal(usage_of(&l, "workflow:a", 10000), 2);
    assert_int_equal(usage_of(&l, "tenant:b", 10001), 3);
    assert_int_equal(l.n_limits, 1);    /* limits ignore since_ms */
    assert_int_equal(limit_of(&l, "tenant:b"), 11);
    load(st, -10, &l);
    assert_int_equal(l.n_usage, 4);
    assert_int_equal(usage_of(&l, "tenant:b", -5), 4);
    load(st, 10002, &l);
    assert_int_equal(l.n_usage, 0);
    store_close(st);
}

static void
test_load_stopped_by_callback(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;
    struct store_load_cb cb = { .on_usage = on_usage, .on_limit = on_limit,
                               .arg = &l };

    db_path(state, "stop.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_put_usage(st, "workflow:a", i, 1), 0);
    assert_int_equal(store_commit(st), 0);
    memset(&l, 0, sizeof(l));
    l.stop_at = 3;
    assert_int_equal(store_load(st, 0, &cb), -1);
    assert_int_equal(l.n_usage, 2);
    assert_non_null(strstr(store_errmsg(st), "stopped by the caller"));
    /* No read transaction is left behind: writes and loads still work. */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 9, 9), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 6);
    store_close(st);
}

static void
test_prune(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;
    uint64_t pruned = 99;

    db_path(state, "prune.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 100, 1), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 200, 2), 0);
    assert_int_equal(store_put_usage(st, "tenant:b", 150, 3), 0);
    assert_int_equal(store_put_usage(st, "tenant:b", 300, 4), 0);
    assert_int_equal(store_put_limit(st, "tenant:b", true, 10), 0);
    assert_int_equal(store_commit(st), 0);

    /* Inside a batch the prune is undone with it. */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_prune(st, 1000, &pruned), 0);
    assert_int_equal(pruned, 4);
    assert_int_equal(store_rollback(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 4);

    /* Alone, it commits itself; the bound is exclusive. */
    assert_int_equal(store_prune(st, 200, &pruned), 0);
    assert_int_equal(pruned, 2);
    assert_int_equal(store_prune(st, 200, NULL), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 2);
    assert_int_equal(usage_of(&l, "workflow:a", 200), 2);
    assert_int_equal(usage_of(&l, "tenant:b", 300), 4);
    assert_int_equal(limit_of(&l, "tenant:b"), 10);
    store_close(st);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"), 2);
}

/* Pruning in steps of a bounded number of rows. */
static void
test_prune_steps(void **state)
{
    char path[128], subject[32];
    struct store *st;
    struct loaded l;
    uint64_t pruned = 99;

    db_path(state, "prune_steps.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    for (int i = 0; i < 25; i++) {
        snprintf(subject, sizeof(subject), "workflow:old%d", i);
        assert_int_equal(store_put_usage(st, subject, 100 + i, 1), 0);
    }
    assert_int_equal(store_put_usage(st, "workflow:live", 500, 7), 0);
    assert_int_equal(store_put_usage(st, "workflow:old0", 1000, 8), 0);
    assert_int_equal(store_commit(st), 0);

    assert_int_equal(store_prune_step(st, 500, 10, &pruned), 0);
    assert_int_equal(pruned, 10);
    assert_int_equal(store_prune_step(st, 500, 10, &pruned), 0);
    assert_int_equal(pruned, 10);
    assert_int_equal(store_prune_step(st, 500, 10, &pruned), 0);
    assert_int_equal(pruned, 5);
    assert_int_equal(store_prune_step(st, 500, 10, &pruned), 0);
    assert_int_equal(pruned, 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 2);
    assert_int_equal(usage_of(&l, "workflow:live", 500), 7);
    assert_int_equal(usage_of(&l, "workflow:old0", 1000), 8);
    store_close(st);
}

static void
test_rollback_discards_batch(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "rollback.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_rollback(st), 0);  /* no batch: a no-op */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1, 1), 0);
    assert_int_equal(store_put_limit(st, "workflow:a", true, 1), 0);
    assert_int_equal(store_rollback(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 0);
    assert_int_equal(l.n_limits, 0);
    store_close(st);
}


/* Daily rows: a table apart, loaded from their own horizon. */
struct daily_rows {
    char key[8][96];
    uint64_t count[8];
    size_t n;
};

static int
on_daily(const char *name, const char *unit, int64_t slot_ms, uint64_t count,
         void *arg)
{
    struct daily_rows *d = arg;

    assert_true(d->n < 8);
    snprintf(d->key[d->n], sizeof(d->key[0]), "%s %s %lld", name, unit,
             (long long)slot_ms);
    d->count[d->n++] = count;
    return 0;
}

static void
test_daily_rows(void **state)
{
    char path[128];
    struct store *st;
    struct daily_rows d = { .n = 0 };
    struct store_load_cb cb = { NULL, NULL, &d, on_daily, 2000 };

    db_path(state, "daily.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_daily(st, "provider/groq", "requests", 1000,
                                     3), 0);
    assert_int_equal(store_put_daily(st, "provider/groq", "requests", 2000,
                                     4), 0);
    assert_int_equal(store_put_daily(st, "provider/groq", "tokens", 2000, 70),
                     0);
    assert_int_equal(store_put_daily(st, "provider/groq", "tokens", 2000, 90),
                     0);
    /* A quota subject of the same name is another row altogether. */
    assert_int_equal(store_put_usage(st, "provider/groq", 2000, 5), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_load(st, 0, &cb), 0);
    assert_int_equal(d.n, 2);
    for (size_t i = 0; i < d.n; i++)
        assert_int_equal(d.count[i],
                         strstr(d.key[i], "tokens") != NULL ? 90 : 4);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM daily_usage"), 3);
    /* Reset of one counter, a 0 count, pruning. */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_reset_daily(st, "provider/groq", "tokens"), 0);
    assert_int_equal(store_put_daily(st, "provider/groq", "requests", 2000,
                                     0), 0);
    assert_int_equal(store_prune_daily(st, 1500), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM daily_usage"), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"), 1);
    /* A unit the table does not know is refused by its CHECK. */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_daily(st, "x", "minutes", 1, 1), -1);
    assert_int_equal(store_commit(st), -1);
    assert_non_null(strstr(store_errmsg(st), "put daily"));
    store_close(st);
}

/* A database of schema 1 is migrated in place and keeps its rows. */
static void
test_migrate_v1(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "v1.db", path, sizeof(path));
    raw_exec(path,
             "CREATE TABLE quota_usage (subject TEXT NOT NULL,"
             " slot_start_ms INTEGER NOT NULL, tokens INTEGER NOT NULL,"
             " PRIMARY KEY (subject, slot_start_ms)) WITHOUT ROWID;"
             "CREATE TABLE quota_limit (subject TEXT NOT NULL PRIMARY KEY,"
             " limit_tokens INTEGER NOT NULL) WITHOUT ROWID;"
             "INSERT INTO quota_usage VALUES ('workflow:w', 5000, 42);"
             "INSERT INTO quota_limit VALUES ('workflow:w', 100);"
             "PRAGMA user_version = 1;");
    st = open_ok(path);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 2);
    load(st, 0, &l);
    assert_int_equal(usage_of(&l, "workflow:w", 5000), 42);
    assert_int_equal(limit_of(&l, "workflow:w"), 100);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_daily(st, "provider/a", "requests", 1, 1), 0);
    assert_int_equal(store_commit(st), 0);
    store_close(st);
}

static void
test_newer_schema_refused(void **state)
{
    char path[128], err[256] = "";

    db_path(state, "newer.db", path, sizeof(path));
    store_close(open_ok(path));
    raw_exec(path, "PRAGMA user_version = 3");
    assert_null(store_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "schema version 3 is newer than this "
                                "build supports (2)"));
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 3);
}

static void
test_open_errors_name_the_path(void **state)
{
    char path[128], err[256] = "";
    FILE *fp;

    db_path(state, "no/such/dir/q.db", path, sizeof(path));
    assert_null(store_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "unable to open database file"));
    assert_non_null(strstr(err, "No such file or directory"));

    db_path(state, "garbage.db", path, sizeof(path));
    fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 4096; i++)
        fputc('x', fp);
    fclose(fp);
    err[0] = '\0';
    assert_null(store_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "file is not a database"));
    assert_null(store_open(path, NULL, 0));
}

static void
test_read_only_file_refused(void **state)
{
    char dir[128], path[160], err[256] = "";

    if (geteuid() == 0)
        skip();     /* root writes through any mode bits */
    db_path(state, "ro", dir, sizeof(dir));
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(path, sizeof(path), "%s/q.db", dir);
    store_close(open_ok(path));
    assert_int_equal(chmod(path, 0444), 0);
    assert_int_equal(chmod(dir, 0555), 0);
    assert_null(store_open(path, err, sizeof(err)));
    assert_int_equal(chmod(dir, 0700), 0);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "read-only"));
}

static void
put_batch(struct store *st, int first, int n)
{
    char subject[64];

    for (int i = first; i < first + n; i++) {
        snprintf(subject, sizeof(subject), "workflow:batch-%04d-padding", i);
        if (store_put_usage(st, subject, 60000, (uint64_t)i + 1) < 0)
            return;
    }
}

static void
test_full_then_retry(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;
    int64_t pages;
    char subject[64];

    db_path(state, "full.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "tenant:old", 60000, 5), 0);
    assert_int_equal(store_commit(st), 0);

    /* The file may not grow: a large batch meets a real SQLITE_FULL. */
    pages = store_set_max_pages(st, 1);
    assert_true(pages > 1 && pages < 20);
    assert_int_equal(store_begin(st), 0);
    put_batch(st, 0, 400);
    assert_int_equal(store_put_usage(st, "tenant:late", 1, 1), -1);
    assert_int_equal(store_commit(st), -1);
    assert_non_null(strstr(store_errmsg(st), path));
    assert_non_null(strstr(store_errmsg(st), "put usage: database or disk "
                                             "is full"));
    /* Nothing of the batch landed, the old row is intact. */
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 1);
    assert_int_equal(usage_of(&l, "tenant:old", 60000), 5);
    assert_int_equal(store_integrity_check(st), 0);

    /* Same again ending with an explicit rollback. */
    assert_int_equal(store_begin(st), 0);
    put_batch(st, 0, 400);
    assert_int_equal(store_rollback(st), 0);

    /* Room is made: the same batch now commits whole. */
    assert_true(store_set_max_pages(st, 1000000) == 1000000);
    assert_int_equal(store_begin(st), 0);
    put_batch(st, 0, 400);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 401);
    snprintf(subject, sizeof(subject), "workflow:batch-%04d-padding", 399);
    assert_int_equal(usage_of(&l, subject, 60000), 400);
    store_close(st);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"), 401);
}

static void
test_failed_put_rolls_back_open_batch(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;

    db_path(state, "poison.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "tenant:old", 1, 5), 0);
    assert_int_equal(store_commit(st), 0);

    /*
     * A trigger added behind the store's back fails one statement but,
     * unlike SQLITE_FULL, leaves SQLite's transaction open: the store must
     * not commit the rows written before the failure.
     */
    raw_exec(path, "CREATE TRIGGER poison BEFORE INSERT ON quota_usage"
                   " WHEN NEW.subject = 'tenant:poison'"
                   " BEGIN SELECT RAISE(ABORT, 'poisoned row'); END");
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1, 1), 0);
    assert_int_equal(store_put_usage(st, "tenant:poison", 1, 2), -1);
    assert_non_null(strstr(store_errmsg(st), "put usage: poisoned row"));
    assert_int_equal(store_put_usage(st, "workflow:b", 1, 3), -1);
    assert_int_equal(store_put_limit(st, "workflow:b", true, 3), -1);
    assert_int_equal(store_reset_subject(st, "tenant:old"), -1);
    assert_int_equal(store_prune(st, 100, NULL), -1);
    assert_int_equal(store_commit(st), -1);
    assert_non_null(strstr(store_errmsg(st), "put usage: poisoned row"));
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 1);
    assert_int_equal(usage_of(&l, "tenant:old", 1), 5);
    assert_int_equal(l.n_limits, 0);

    /* Once the cause is gone the same batch goes through. */
    raw_exec(path, "DROP TRIGGER poison");
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1, 1), 0);
    assert_int_equal(store_put_usage(st, "tenant:poison", 1, 2), 0);
    assert_int_equal(store_put_usage(st, "workflow:b", 1, 3), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_int_equal(l.n_usage, 4);
    assert_int_equal(usage_of(&l, "tenant:poison", 1), 2);
    store_close(st);
}

static void
test_busy_begin_fails_then_recovers(void **state)
{
    char path[128];
    struct store *st;
    struct loaded l;
    sqlite3 *other;

    db_path(state, "busy.db", path, sizeof(path));
    st = open_ok(path);
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(store_begin(st), -1);
    assert_non_null(strstr(store_errmsg(st), path));
    assert_non_null(strstr(store_errmsg(st), "begin: database is locked"));
    /* A writer elsewhere does not stop reads. */
    load(st, 0, &l);
    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:a", 1, 1), 0);
    assert_int_equal(store_commit(st), 0);
    store_close(st);
}

static void
test_memory_database(void **state)
{
    struct store *st;
    struct loaded l;

    (void)state;
    st = open_ok(":memory:");
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_put_usage(st, "workflow:m", 5, 6), 0);
    assert_int_equal(store_put_limit(st, "workflow:m", true, 7), 0);
    assert_int_equal(store_commit(st), 0);
    load(st, 0, &l);
    assert_int_equal(usage_of(&l, "workflow:m", 5), 6);
    assert_int_equal(limit_of(&l, "workflow:m"), 7);
    assert_int_equal(store_integrity_check(st), 0);
    store_close(st);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_version_and_wal),
        cmocka_unit_test(test_reopen_keeps_data),
        cmocka_unit_test(test_upsert_overwrites),
        cmocka_unit_test(test_zero_deletes),
        cmocka_unit_test(test_limits_put_and_delete),
        cmocka_unit_test(test_reset_subject),
        cmocka_unit_test(test_load_since_filter),
        cmocka_unit_test(test_load_stopped_by_callback),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_prune_steps),
        cmocka_unit_test(test_rollback_discards_batch),
        cmocka_unit_test(test_newer_schema_refused),
        cmocka_unit_test(test_daily_rows),
        cmocka_unit_test(test_migrate_v1),
        cmocka_unit_test(test_open_errors_name_the_path),
        cmocka_unit_test(test_read_only_file_refused),
        cmocka_unit_test(test_full_then_retry),
        cmocka_unit_test(test_failed_put_rolls_back_open_batch),
        cmocka_unit_test(test_busy_begin_fails_then_recovers),
        cmocka_unit_test(test_memory_database),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
