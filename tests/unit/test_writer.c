/*
 * test_writer.c - unit tests of daemon/writer.c (with daemon/store.c): the
 * writer thread writes batches on its own store while this thread, as the
 * event loop would, builds the next ones and waits on writer_fd().  Run
 * under ThreadSanitizer by ./configure --enable-tsan.
 */
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "store.h"
#include "writer.h"

static char dir[64];

static void
path_of(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

static struct store *
open_ok(const char *path)
{
    char err[256] = "";
    struct store *st = store_open(path, err, sizeof(err));

    if (st == NULL)
        fail_msg("store_open(%s): %s", path, err);
    return st;
}

static struct writer *
start_ok(const char *path, struct store *st)
{
    char err[256] = "";
    struct writer *w = writer_start(path, st, err, sizeof(err));

    if (w == NULL)
        fail_msg("writer_start: %s", err);
    return w;
}

/* One integer from a plain SQLite connection of our own (a reader beside
 * the writer, as WAL allows). */
static int64_t
raw_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 1000);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void
add(struct writer_batch *b, enum writer_kind kind, const char *subject,
    int64_t slot_start_ms, int64_t value, bool has_limit)
{
    struct writer_change c = { kind, subject, slot_start_ms, value,
                               has_limit, NULL };

    assert_int_equal(writer_batch_add(b, &c), 0);
}

/* Wait (poll writer_fd, as the loop does) for the batch to come back. */
static void
collect(struct writer *w, struct writer_result *r)
{
    struct pollfd pfd = { writer_fd(w), POLLIN, 0 };

    for (int i = 0; i < 1000; i++) {
        if (writer_collect(w, r) == 1)
            return;
        assert_true(poll(&pfd, 1, 10) >= 0 || errno == EINTR);
    }
    fail_msg("the writer did not answer in 10 s");
}

/* The batch keeps each change, and a subject's name once in a row. */
static void
test_batch(void **state)
{
    struct writer_batch *b = writer_batch_new();
    struct writer_change c;

    (void)state;
    assert_non_null(b);
    add(b, WRITER_RESET, "workflow:a", 0, 0, false);
    add(b, WRITER_SLOT, "workflow:a", 1000, 5, false);
    add(b, WRITER_LIMIT, "tenant:t", 0, 70, true);
    for (int i = 0; i < 5000; i++)
        add(b, WRITER_SLOT, i % 2 ? "workflow:odd" : "workflow:even",
            i * 1000, i + 1, false);
    assert_int_equal(writer_batch_count(b), 5003);
    writer_batch_get(b, 1, &c);
    assert_int_equal(c.kind, WRITER_SLOT);
    assert_string_equal(c.subject, "workflow:a");
    assert_int_equal(c.slot_start_ms, 1000);
    assert_int_equal(c.value, 5);
    writer_batch_get(b, 2, &c);
    assert_int_equal(c.kind, WRITER_LIMIT);
    assert_string_equal(c.subject, "tenant:t");
    assert_true(c.has_limit);
    assert_int_equal(c.value, 70);
    writer_batch_get(b, 5002, &c);
    assert_string_equal(c.subject, "workflow:odd");
    assert_int_equal(c.value, 5000);
    writer_batch_clear(b);
    assert_int_equal(writer_batch_count(b), 0);
    writer_batch_free(b);
}

/*
 * Batch after batch, handed over while the ones before are being written
 * (the writer takes all that wait at once), collected as they come back,
 * in order: the last value of every row is in the database, read by
 * another connection.
 */
static void
test_batches_in_turn(void **state)
{
    enum { ROUNDS = 300 };
    char path[128], subject[32];
    struct writer_batch *b[ROUNDS];
    struct writer_result r;
    struct writer *w;
    int back = 0;

    (void)state;
    path_of("turns.db", path, sizeof(path));
    w = start_ok(path, open_ok(path));
    for (int round = 0; round < ROUNDS; round++) {
        assert_non_null(b[round] = writer_batch_new());
        for (int k = 0; k < 10; k++) {
            snprintf(subject, sizeof(subject), "workflow:w%d", k);
            add(b[round], WRITER_SLOT, subject, k, round + 1, false);
        }
        writer_submit(w, b[round]);
        while (writer_collect(w, &r) == 1) {
            assert_ptr_equal(r.batch, b[back]);
            assert_true(r.ok);
            assert_string_equal(r.err, "");
            writer_batch_free(r.batch);
            back++;
        }
        assert_int_equal(writer_pending(w), (size_t)(round + 1 - back));
    }
    while (back < ROUNDS) {
        collect(w, &r);
        assert_ptr_equal(r.batch, b[back]);
        assert_true(r.ok);
        writer_batch_free(r.batch);
        back++;
    }
    assert_int_equal(writer_pending(w), 0);
    assert_int_equal(writer_wait(w, &r), 0);
    assert_int_equal(raw_int(path, "SELECT sum(tokens) FROM quota_usage"),
                     10 * ROUNDS);
    writer_stop(w);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"), 10);
}

/* The daily counters' rows: the unit kept with each change, a table of
 * their own, and the prune of their expired rows in the same batch. */
static void
test_daily_changes(void **state)
{
    char path[128];
    struct writer_batch *b = writer_batch_new();
    struct writer_change c;
    struct writer_result r;
    struct writer *w;

    (void)state;
    path_of("daily.db", path, sizeof(path));
    w = start_ok(path, open_ok(path));
    c = (struct writer_change){ WRITER_DAILY_SLOT, "provider/groq", 1000, 3,
                                false, "requests" };
    assert_int_equal(writer_batch_add(b, &c), 0);
    c.unit = "tokens";
    c.value = 300;
    assert_int_equal(writer_batch_add(b, &c), 0);
    c.slot_start_ms = 5000;
    c.value = 70;
    assert_int_equal(writer_batch_add(b, &c), 0);
    c = (struct writer_change){ WRITER_DAILY_PRUNE, "", 2000, 0, false, NULL };
    assert_int_equal(writer_batch_add(b, &c), 0);
    writer_batch_get(b, 1, &c);
    assert_string_equal(c.unit, "tokens");
    assert_string_equal(c.subject, "provider/groq");
    writer_submit(w, b);
    collect(w, &r);
    assert_true(r.ok);
    writer_batch_clear(b);
    c = (struct writer_change){ WRITER_DAILY_RESET, "provider/groq", 0, 0,
                                false, "requests" };
    assert_int_equal(writer_batch_add(b, &c), 0);
    writer_submit(w, b);
    collect(w, &r);
    assert_true(r.ok);
    writer_stop(w);
    writer_batch_free(b);
    /* Pruned: the rows of slot 1000; reset: none of requests was left. */
    assert_int_equal(raw_int(path, "SELECT count(*) FROM daily_usage"), 1);
    assert_int_equal(raw_int(path, "SELECT count FROM daily_usage WHERE "
                                   "unit = 'tokens'"), 70);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"), 0);
}

/*
 * A database that cannot be opened yet: the batch comes back failed with
 * the reason; once the directory is there, the same batch goes in.
 */
static void
test_open_later(void **state)
{
    char sub[128], path[160];
    struct writer_batch *b = writer_batch_new();
    struct writer_result r;
    struct writer *w;

    (void)state;
    path_of("later", sub, sizeof(sub));
    snprintf(path, sizeof(path), "%s/q.db", sub);
    w = start_ok(path, NULL);
    add(b, WRITER_LIMIT, "tenant:t", 0, 9, true);
    writer_submit(w, b);
    collect(w, &r);
    assert_false(r.ok);
    assert_ptr_equal(r.batch, b);
    assert_non_null(strstr(r.err, path));
    assert_int_equal(mkdir(sub, 0700), 0);
    writer_submit(w, b);
    assert_int_equal(writer_wait(w, &r), 1);
    assert_true(r.ok);
    assert_true(r.first);
    assert_int_equal(writer_wait(w, &r), 0);
    writer_stop(w);
    writer_batch_free(b);
    assert_int_equal(raw_int(path, "SELECT limit_tokens FROM quota_limit"),
                     9);
}

/*
 * A batch that fails half way is rolled back whole, and says why; the
 * ones handed over behind it come back failed too, in order, and none of
 * it is in the database.
 */
static void
test_failed_batch_rolls_back(void **state)
{
    char path[128], subject[48];
    struct writer_batch *b[3];
    struct writer_result r;
    struct store *st;
    struct writer *w;

    (void)state;
    path_of("full.db", path, sizeof(path));
    st = open_ok(path);
    assert_true(store_set_max_pages(st, 8) > 0);
    w = start_ok(path, st);
    for (int k = 0; k < 3; k++) {
        assert_non_null(b[k] = writer_batch_new());
        add(b[k], WRITER_SLOT, "workflow:first", 0, k + 1, false);
        for (int i = 0; i < 20000; i++) {
            snprintf(subject, sizeof(subject), "workflow:long-name-%d", i);
            add(b[k], WRITER_SLOT, subject, k, 1, false);
        }
        writer_submit(w, b[k]);
    }
    for (int k = 0; k < 3; k++) {
        collect(w, &r);
        assert_ptr_equal(r.batch, b[k]);
        assert_false(r.ok);
        assert_true(k > 0 || r.first);
        assert_non_null(strstr(r.err, "full"));
        writer_batch_free(r.batch);
    }
    writer_stop(w);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"), 0);
}

/* Pruning goes in steps between batches, and is reported. */
static void
test_prune(void **state)
{
    enum { OLD = 2 * WRITER_PRUNE_ROWS + 123 };
    char path[128], subject[32], err[256];
    struct writer_batch *b = writer_batch_new();
    struct writer_result r;
    struct writer *w;
    uint64_t pruned = 0;

    (void)state;
    path_of("prune.db", path, sizeof(path));
    w = start_ok(path, open_ok(path));
    for (int i = 0; i < OLD; i++) {
        snprintf(subject, sizeof(subject), "workflow:old%d", i);
        add(b, WRITER_SLOT, subject, 1000, 1, false);
    }
    add(b, WRITER_SLOT, "workflow:live", 9000, 3, false);
    writer_submit(w, b);
    collect(w, &r);
    assert_true(r.ok);
    writer_prune(w, 5000);
    /* A batch meanwhile, then wait for the rows to go. */
    writer_batch_clear(b);
    add(b, WRITER_SLOT, "workflow:new", 9000, 4, false);
    writer_submit(w, b);
    collect(w, &r);
    assert_true(r.ok);
    for (int i = 0; i < 1000 && pruned < OLD; i++) {
        pruned += writer_prune_report(w, err, sizeof(err));
        assert_string_equal(err, "");
        usleep(10000);
    }
    assert_int_equal(pruned, OLD);
    writer_stop(w);
    writer_batch_free(b);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"), 2);
}

/* Stopping with a batch in the writer's hands writes it first. */
static void
test_stop_finishes_the_batch(void **state)
{
    char path[128];
    struct writer_batch *b = writer_batch_new();
    struct writer *w;

    (void)state;
    path_of("stop.db", path, sizeof(path));
    w = start_ok(path, open_ok(path));
    add(b, WRITER_SLOT, "workflow:s", 0, 42, false);
    writer_submit(w, b);
    writer_stop(w);     /* frees b, not collected */
    assert_int_equal(raw_int(path, "SELECT tokens FROM quota_usage"), 42);
}

/* writer_write_now until the thread is idle (it may still be starting, or
 * checkpointing): the outcome in r. */
static void
now_ok(struct writer *w, struct writer_batch *b, struct writer_result *r)
{
    for (int i = 0; i < 10000; i++) {
        if (writer_write_now(w, b, r) == 1)
            return;
        usleep(1000);
    }
    fail_msg("the writer was not idle in 10 s");
}

/*
 * A small batch is written on the calling thread, at once: it is in the
 * database before the call returns, and nothing comes back on the
 * descriptor.  Not while a batch submitted earlier is in the writer's
 * hands (it would be written before it), not for a batch of more than
 * WRITER_NOW_MAX changes, and not while another connection holds the
 * write lock: those return 0 and leave the batch to be submitted.
 */
static void
test_write_now(void **state)
{
    char path[128], subject[32];
    struct writer_batch *b = writer_batch_new(), *big = writer_batch_new();
    struct writer_result r;
    struct writer *w;
    sqlite3 *db;

    (void)state;
    path_of("now.db", path, sizeof(path));
    w = start_ok(path, open_ok(path));
    add(b, WRITER_SLOT, "workflow:n", 0, 7, false);
    now_ok(w, b, &r);
    assert_ptr_equal(r.batch, b);
    assert_true(r.ok);
    assert_true(r.first);
    assert_string_equal(r.err, "");
    assert_int_equal(raw_int(path, "SELECT tokens FROM quota_usage"), 7);
    assert_int_equal(writer_pending(w), 0);
    assert_int_equal(writer_collect(w, &r), 0);

    /* Behind a submitted batch: 0, and the order kept. */
    writer_batch_clear(b);
    add(b, WRITER_SLOT, "workflow:n", 0, 8, false);
    writer_submit(w, b);
    assert_non_null(big);
    add(big, WRITER_SLOT, "workflow:n", 0, 9, false);
    assert_int_equal(writer_write_now(w, big, &r), 0);
    collect(w, &r);
    assert_ptr_equal(r.batch, b);
    now_ok(w, big, &r);
    assert_int_equal(raw_int(path, "SELECT tokens FROM quota_usage"), 9);

    /* Too large. */
    writer_batch_clear(big);
    for (int i = 0; i <= WRITER_NOW_MAX; i++) {
        snprintf(subject, sizeof(subject), "workflow:big%d", i);
        add(big, WRITER_SLOT, subject, 0, 1, false);
    }
    assert_int_equal(writer_write_now(w, big, &r), 0);
    writer_submit(w, big);
    collect(w, &r);
    assert_true(r.ok);

    /* Another connection writes: 0 without waiting for it, nothing
     * written; then written once it is done. */
    writer_batch_clear(b);
    add(b, WRITER_SLOT, "workflow:n", 0, 10, false);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(writer_write_now(w, b, &r), 0);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(raw_int(path, "SELECT tokens FROM quota_usage WHERE "
                             "subject = 'workflow:n'"), 9);
    now_ok(w, b, &r);
    assert_true(r.ok);
    assert_int_equal(raw_int(path, "SELECT tokens FROM quota_usage WHERE "
                             "subject = 'workflow:n'"), 10);
    writer_stop(w);
    writer_batch_free(b);
    writer_batch_free(big);
}

/*
 * The writer's store never checkpoints inside a commit; the thread does,
 * once the WAL is past STORE_CHECKPOINT_PAGES, for commits made by
 * writer_write_now as for its own.  So the WAL stays near that size while
 * far more than it is written (without a checkpoint it would hold every
 * page of every commit: several times the bound below).
 */
static void
test_checkpoints(void **state)
{
    enum { ROUNDS = 600, ROWS = 60 };
    char path[128], wal[160], subject[64];
    struct writer_batch *b = writer_batch_new();
    struct writer_result r;
    struct writer *w;
    struct stat sb;
    uint64_t x = 88172645463325252ULL;

    (void)state;
    path_of("ckpt.db", path, sizeof(path));
    snprintf(wal, sizeof(wal), "%s-wal", path);
    w = start_ok(path, open_ok(path));
    for (int round = 0; round < ROUNDS; round++) {
        writer_batch_clear(b);
        for (int k = 0; k < ROWS; k++) {
            /* Scattered subjects: each commit dirties many pages. */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            snprintf(subject, sizeof(subject), "workflow:%016llx",
                     (unsigned long long)x);
            add(b, WRITER_SLOT, subject, 0, 1, false);
        }
        if (round % 2 == 0) {
            now_ok(w, b, &r);
        } else {
            writer_submit(w, b);
            collect(w, &r);
        }
        assert_true(r.ok);
    }
    assert_int_equal(stat(wal, &sb), 0);
    assert_true(sb.st_size < 3 * STORE_CHECKPOINT_PAGES * 4096 + 1);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM quota_usage"),
                     ROUNDS * ROWS);
    writer_stop(w);
    writer_batch_free(b);
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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_batches_in_turn),
        cmocka_unit_test(test_open_later),
        cmocka_unit_test(test_daily_changes),
        cmocka_unit_test(test_failed_batch_rolls_back),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_stop_finishes_the_batch),
        cmocka_unit_test(test_write_now),
        cmocka_unit_test(test_checkpoints),
    };
    int rc;

    snprintf(dir, sizeof(dir), "/tmp/test_writer.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    return rc;
}
