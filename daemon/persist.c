/*
 * persist.c - quota changes to SQLite through the writer thread: group
 * commit, replies held for their commit, pruning, and the start-up load.
 *
 * The loop never waits on the disk.  A flush takes the pending changes out
 * of the quota table into a batch (they count as clean from then on) and
 * hands it to the writer, also while the writer is still writing the ones
 * before (it writes all that wait as one transaction); the loop goes on
 * serving.  Batches come back in order; one that failed is queued again
 * change by change (quota_requeue), so a later batch writes it with
 * whatever came since.  A reply held for a commit carries the number of
 * the batch that holds its change.
 */
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/buffer.h>

#include <sys/queue.h>

#include "clock.h"
#include "daily.h"
#include "log.h"
#include "persist.h"
#include "quota.h"
#include "server.h"
#include "store.h"
#include "telemetry.h"
#include "writer.h"

/* Subjects the in-memory prune sweeps per turn of the loop (~0.1 ms). */
#define PRUNE_STEP_SUBJECTS 5000

/* A reply held until the commit that makes its change durable. */
struct held {
    TAILQ_ENTRY(held) all_entry;
    TAILQ_ENTRY(held) conn_entry;
    struct conn *conn;
    struct conn_held *owner;
    uint64_t id;
    uint64_t batch;                 /* the batch that holds its change */
    size_t len;
    char data[];
};
TAILQ_HEAD(held_list, held);

/* A connection's held replies, in its slot. */
struct conn_held {
    struct held_list list;
    struct persist *p;
};

struct persist {
    const struct config *cfg;
    struct quota *quota;            /* usage in memory: authoritative */
    struct daily *daily;            /* the daily limits' counters, too */
    struct telemetry *telemetry;
    struct writer *writer;          /* owns the store */
    struct writer_batch *spare;     /* for the next batch */
    struct event *flush_ev;         /* group commit; the retry */
    struct event *answer_ev;        /* the writer is back */
    struct event *prune_ev;
    uint64_t batches;               /* handed to the writer so far */
    uint64_t batches_back;          /* and back from it */
    struct held_list held;          /* replies waiting for a commit */
    int slot;                       /* connection slot: struct conn_held */
    bool failing;                   /* the last write failed */
    char error[WRITER_ERR_MAX];     /* and why */
    double last_flush_s;            /* wall time of the last good write */
    void (*watch)(void *);          /* persist_watch() */
    void *watch_arg;
};

/* ---- the quota -> batch sink ------------------------------------------- */

static int
sink_reset(void *arg, const char *subject)
{
    struct writer_change c = { WRITER_RESET, subject, 0, 0, false, NULL };

    return writer_batch_add(arg, &c);
}

static int
sink_limit(void *arg, const char *subject, bool has_limit, int64_t limit)
{
    struct writer_change c = { WRITER_LIMIT, subject, 0, limit, has_limit,
                               NULL };

    return writer_batch_add(arg, &c);
}

static int
sink_slot(void *arg, const char *subject, int64_t slot_start_ms,
          int64_t tokens)
{
    struct writer_change c = { WRITER_SLOT, subject, slot_start_ms, tokens,
                               false, NULL };

    return writer_batch_add(arg, &c);
}

/* No begin or commit: the changes count as delivered once in the batch. */
static const struct quota_sink sink = {
    NULL, sink_reset, sink_limit, sink_slot, NULL, NULL,
};

/* ---- the daily counters -> batch sink ---------------------------------- */

static int
daily_reset(void *arg, const char *name, enum daily_unit unit)
{
    struct writer_change c = { WRITER_DAILY_RESET, name, 0, 0, false,
                               daily_unit_name(unit) };

    return writer_batch_add(arg, &c);
}

static int
daily_slot(void *arg, const char *name, enum daily_unit unit,
           int64_t slot_start_ms, int64_t count)
{
    struct writer_change c = { WRITER_DAILY_SLOT, name, slot_start_ms, count,
                               false, daily_unit_name(unit) };

    return writer_batch_add(arg, &c);
}

static const struct daily_sink dsink = { daily_reset, daily_slot };

/*
 * The daily counters' changes into b, and the deletion of their expired
 * rows with them (a day of slots per counter: one statement).  A failure
 * leaves them pending, to go with the next batch (the rows already in b
 * are absolute values: writing them twice is harmless).
 */
static int
flush_daily(struct persist *p, struct writer_batch *b)
{
    struct writer_change prune = { WRITER_DAILY_PRUNE, "", 0, 0, false,
                                   NULL };
    int n = daily_flush(p->daily, &dsink, b);

    if (n <= 0)
        return n;
    prune.slot_start_ms = daily_horizon_ms(p->daily, clock_wall());
    return writer_batch_add(b, &prune);
}

/* ---- start-up ---------------------------------------------------------- */

struct load_ctx {
    struct quota *q;
    struct daily *daily;
    double now_s;
    size_t rows, bad;
    size_t daily_rows;
};

static int
load_usage(const char *subject, int64_t slot_start_ms, uint64_t tokens,
           void *arg)
{
    struct load_ctx *lc = arg;

    lc->rows++;
    if (tokens > INT64_MAX ||
        quota_load_slot(lc->q, subject, slot_start_ms, (int64_t)tokens,
                        lc->now_s) < 0)
        lc->bad++;
    return 0;
}

static int
load_daily(const char *name, const char *unit, int64_t slot_start_ms,
           uint64_t count, void *arg)
{
    struct load_ctx *lc = arg;
    enum daily_unit u;

    lc->daily_rows++;
    if (count > INT64_MAX || daily_unit_parse(unit, &u) < 0 ||
        daily_load_slot(lc->daily, name, u, slot_start_ms, (int64_t)count,
                        lc->now_s) < 0)
        lc->bad++;
    return 0;
}

static int
load_limit(const char *subject, uint64_t limit, void *arg)
{
    struct load_ctx *lc = arg;

    if (limit > INT64_MAX || quota_load_limit(lc->q, subject,
                                              (int64_t)limit) < 0)
        lc->bad++;
    return 0;
}

/* mkdir -p for the default database directory, 0700. */
static void
make_db_dir(const char *db_path)
{
    char buf[CONFIG_PATH_MAX];

    snprintf(buf, sizeof(buf), "%s", db_path);
    char *dir = dirname(buf);
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            fatalx(1, "cannot create %s: %s", dir, strerror(errno));
        *p = '/';
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        fatalx(1, "cannot create %s: %s", dir, strerror(errno));
}

/*
 * Load the live window into p->quota; returns the store opened for
 * writing, or NULL for a database we may read but not write: it is loaded
 * and served from, keeping changes in memory, and the writer tries to open
 * it at every batch.  One we cannot read at all would make the quotas
 * wrong, and stops the daemon.  At start-up, on the loop: nobody is served
 * yet.
 */
static struct store *
load(struct persist *p, double now, size_t *rows)
{
    const struct config *cfg = p->cfg;
    char err[512], err2[512];
    struct load_ctx lc = { p->quota, p->daily, now, 0, 0, 0 };
    struct store_load_cb cb = { load_usage, load_limit, &lc, load_daily,
                                daily_horizon_ms(p->daily, now) };
    int64_t horizon_ms = quota_horizon_ms(p->quota, now);
    struct store *st = store_open(cfg->db_path, err, sizeof(err));

    if (st == NULL) {
        struct store *ro = store_open_readonly(cfg->db_path, err2,
                                               sizeof(err2));
        if (ro == NULL)
            fatalx(1, "%s", err);
        if (store_load(ro, horizon_ms, &cb) < 0)
            fatalx(1, "loading quotas: %s", store_errmsg(ro));
        store_close(ro);
        log_error("%s: serving from memory; quota changes are written when "
                  "the database becomes writable (retried)", err);
        p->failing = true;
        snprintf(p->error, sizeof(p->error), "%s", err);
    } else if (store_load(st, horizon_ms, &cb) < 0) {
        fatalx(1, "loading quotas: %s", store_errmsg(st));
    }
    if (lc.bad > 0)
        log_warn("%zu stored quota rows could not be loaded (bad subject "
                 "or value) and were skipped", lc.bad);
    if (lc.daily_rows > 0)
        log_info("database %s: %zu live daily-limit rows loaded",
                 cfg->db_path, lc.daily_rows);
    *rows = lc.rows;
    return st;
}

/* ---- held replies ------------------------------------------------------ */

static void
held_free(struct held *h)
{
    TAILQ_REMOVE(&h->owner->p->held, h, all_entry);
    TAILQ_REMOVE(&h->owner->list, h, conn_entry);
    free(h);
}

/*
 * Send the held replies whose change is in batch upto or before.  Also
 * when that batch failed: the changes are counted in memory and the write
 * is retried, and holding the replies back would stop every quota-checked
 * call for as long as the disk is unwritable (or answer a granted permit
 * with an error).  The failure is logged and counted.
 */
static void
release_held(struct persist *p, uint64_t upto)
{
    struct held *h;

    while ((h = TAILQ_FIRST(&p->held)) != NULL && h->batch <= upto) {
        struct conn *c = h->conn;
        conn_send_raw(c, h->data, h->len);
        held_free(h);
        conn_flush(c);
    }
}

/* Move the reply queued on c since mark into a held reply; -1 when out of
 * memory (it then goes out before the commit). */
static int
hold(struct persist *p, struct conn *c, uint64_t id, size_t mark)
{
    void **slot = conn_slot(c, p->slot);
    struct conn_held *ch = *slot;
    const void *data;
    struct held *h;
    size_t len;

    if (ch == NULL) {
        if ((ch = malloc(sizeof(*ch))) == NULL)
            return -1;
        TAILQ_INIT(&ch->list);
        ch->p = p;
        *slot = ch;
    }
    data = conn_out_since(c, mark, &len);
    if ((h = malloc(sizeof(*h) + len)) == NULL)
        return -1;
    h->conn = c;
    h->owner = ch;
    h->id = id;
    h->batch = p->batches + 1;      /* the next one handed over */
    h->len = len;
    memcpy(h->data, data, len);
    conn_out_cut(c, mark);
    TAILQ_INSERT_TAIL(&p->held, h, all_entry);
    TAILQ_INSERT_TAIL(&ch->list, h, conn_entry);
    return 0;
}

/* ---- group commit ------------------------------------------------------ */

void
persist_watch(struct persist *p, void (*fn)(void *arg), void *arg)
{
    p->watch = fn;
    p->watch_arg = arg;
}

void
persist_changed(struct persist *p)
{
    int64_t ms = p->cfg->quota_flush_ms;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

    if (p->watch != NULL)
        p->watch(p->watch_arg);

    if (evtimer_pending(p->flush_ev, NULL))
        return;
    /* After a failure, retry no faster than once a second. */
    if (p->failing && ms < 1000)
        tv = (struct timeval){ 1, 0 };
    evtimer_add(p->flush_ev, &tv);
}

/* The write failed: log it once per reason, count it, retry later. */
static void
write_failed(struct persist *p, const char *why)
{
    telemetry_store_error(p->telemetry);
    if (!p->failing || strcmp(why, p->error) != 0)
        log_error("writing quotas to %s failed, will retry: %s",
                  p->cfg->db_path, why);
    snprintf(p->error, sizeof(p->error), "%s", why);
    p->failing = true;
}

/* Queue again, in the quota table, what a failed batch held. */
static void
requeue(struct persist *p, const struct writer_batch *b)
{
    static const enum quota_change what[] = {
        [WRITER_RESET] = QUOTA_CHANGE_RESET,
        [WRITER_LIMIT] = QUOTA_CHANGE_LIMIT,
        [WRITER_SLOT] = QUOTA_CHANGE_SLOT,
    };
    size_t lost = 0;

    for (size_t i = 0; i < writer_batch_count(b); i++) {
        struct writer_change c;

        writer_batch_get(b, i, &c);
        if (c.kind == WRITER_DAILY_PRUNE)
            continue;       /* the next batch with daily rows prunes */
        if (c.kind == WRITER_DAILY_RESET || c.kind == WRITER_DAILY_SLOT) {
            enum daily_unit u;
            if (daily_unit_parse(c.unit, &u) < 0 ||
                daily_requeue(p->daily, c.kind == WRITER_DAILY_RESET,
                              c.subject, u, c.slot_start_ms) < 0)
                lost++;
            continue;
        }
        if (quota_requeue(p->quota, what[c.kind], c.subject,
                          c.slot_start_ms) < 0)
            lost++;
    }
    if (lost > 0)
        log_error("%s: out of memory: %zu quota changes will not be "
                  "written", __func__, lost);
}

/* A batch for the writer, from the spare one if there is; NULL when out
 * of memory. */
static struct writer_batch *
take_batch(struct persist *p)
{
    struct writer_batch *b = p->spare;

    p->spare = NULL;
    if (b == NULL)
        b = writer_batch_new();
    else
        writer_batch_clear(b);
    return b;
}

/* Keep b (back from the writer, or not sent) for the next batch. */
static void
keep_batch(struct persist *p, struct writer_batch *b)
{
    writer_batch_free(p->spare);
    p->spare = b;
}

/* A batch is back from the writer: done, or queued again for the retry. */
static void
batch_back(struct persist *p, struct writer_result *r)
{
    bool was_failing = p->failing;

    p->batches_back++;
    if (r->ok) {
        if (was_failing) {
            log_info("writing quotas to %s works again", p->cfg->db_path);
            p->failing = false;
        }
        p->last_flush_s = clock_wall();
        release_held(p, p->batches_back);
    } else {
        requeue(p, r->batch);
        /* Once per transaction; the batches after it were not tried. */
        if (r->first)
            write_failed(p, r->err);
        /* None is held until a write works again (persist_reply). */
        release_held(p, UINT64_MAX);
    }
    keep_batch(p, r->batch);
    /* The retry interval from the first failure on, the normal one from
     * the first success; after a failure a retry is always coming. */
    if (was_failing != p->failing)
        evtimer_del(p->flush_ev);
    if (p->failing || quota_flush_pending(p->quota) ||
        daily_flush_pending(p->daily))
        persist_changed(p);
}

/*
 * Hand what is pending to the writer.  Nothing pending: the held replies
 * whose changes needed no write go now.  While writes fail an empty batch
 * still goes, to try the database.
 */
static void
start_batch(struct persist *p)
{
    struct writer_batch *b;

    if ((b = take_batch(p)) == NULL ||
        quota_flush(p->quota, &sink, b) < 0) {
        if (b != NULL)
            keep_batch(p, b);
        write_failed(p, "out of memory building a batch");
        release_held(p, UINT64_MAX);
        persist_changed(p);
        return;
    }
    if (flush_daily(p, b) < 0) {
        log_error("%s: out of memory: the daily counters go with the next "
                  "batch", __func__);
        persist_changed(p);
    }
    if (writer_batch_count(b) == 0 && !p->failing) {
        struct held *h;

        keep_batch(p, b);
        if (p->batches_back == p->batches) {
            /* Everything is on disk as of now. */
            p->last_flush_s = clock_wall();
            release_held(p, UINT64_MAX);
        }
        /* Those waiting for this batch go with the last one. */
        TAILQ_FOREACH_REVERSE(h, &p->held, held_list, all_entry) {
            if (h->batch <= p->batches)
                break;
            h->batch = p->batches;
        }
        return;
    }
    p->batches++;
    /* With flush 0 a reply waits for this commit: a small one is written
     * here, sooner than the writer's thread would wake for it. */
    if (p->cfg->quota_flush_ms == 0) {
        struct writer_result r;

        if (writer_write_now(p->writer, b, &r) == 1) {
            batch_back(p, &r);
            return;
        }
    }
    writer_submit(p->writer, b);
}

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
    start_batch(arg);
}

static void
answer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct persist *p = arg;
    struct writer_result r;

    while (writer_collect(p->writer, &r) == 1)
        batch_back(p, &r);
}

/* ---- pruning ----------------------------------------------------------- */

static double
prune_interval_s(const struct persist *p)
{
    double slot_s = (double)quota_slot_ms(p->quota) / 1e3;

    return slot_s < 10 ? 10 : slot_s > 3600 ? 3600 : slot_s;
}

/*
 * Every prune interval: drop the expired slots from memory, a bounded step
 * per turn of the loop, then have the writer delete their rows (it does so
 * in steps too, between batches).
 */
static void
prune_cb(evutil_socket_t fd, short what, void *arg)
{
    struct persist *p = arg;
    double now = clock_wall();
    struct timeval next = { (time_t)prune_interval_s(p), 0 };
    char err[WRITER_ERR_MAX];
    uint64_t pruned;
    bool done;

    quota_prune_step(p->quota, now, PRUNE_STEP_SUBJECTS, &done);
    daily_prune(p->daily, now);     /* a few counters: at once */
    if (!done) {
        struct timeval now_tv = { 0, 0 };

        evtimer_add(p->prune_ev, &now_tv);
        return;
    }
    if ((pruned = writer_prune_report(p->writer, err, sizeof(err))) > 0)
        log_debug("pruned %llu expired quota rows",
                  (unsigned long long)pruned);
    if (err[0] != '\0')
        log_warn("pruning old quota rows: %s", err);
    writer_prune(p->writer, quota_horizon_ms(p->quota, now));
    evtimer_add(p->prune_ev, &next);
}

/* ---- life cycle -------------------------------------------------------- */

/* Set up the events and the writer on st (NULL: not writable yet). */
static void
start_writer(struct persist *p, struct event_base *base, struct store *st)
{
    char err[512];
    struct timeval tv = { (time_t)prune_interval_s(p), 0 };

    if ((p->writer = writer_start(p->cfg->db_path, st, err,
                                  sizeof(err))) == NULL)
        fatalx(1, "%s", err);
    p->flush_ev = evtimer_new(base, flush_cb, p);
    p->prune_ev = evtimer_new(base, prune_cb, p);
    p->answer_ev = event_new(base, writer_fd(p->writer), EV_READ | EV_PERSIST,
                             answer_cb, p);
    if (p->flush_ev == NULL || p->prune_ev == NULL || p->answer_ev == NULL ||
        event_add(p->answer_ev, NULL) < 0)
        fatalx(1, "cannot create the flush events");
    evtimer_add(p->prune_ev, &tv);
}

struct persist *
persist_open(struct event_base *base, const struct config *cfg,
             struct quota *q, struct daily *dl, struct telemetry *t,
             int conn_slot)
{
    struct persist *p = calloc(1, sizeof(*p));
    double now = clock_wall();
    uint64_t pruned = 0;
    struct store *st;
    size_t rows;

    if (p == NULL)
        fatalx(1, "%s: out of memory", __func__);
    p->cfg = cfg;
    p->quota = q;
    p->daily = dl;
    p->telemetry = t;
    p->slot = conn_slot;
    TAILQ_INIT(&p->held);
    if (cfg->db_is_default)
        make_db_dir(cfg->db_path);
    st = load(p, now, &rows);
    /* Rows that left the window (the table prunes itself). */
    if (st != NULL && store_prune(st, quota_horizon_ms(q, now), &pruned) < 0)
        log_warn("pruning old quota rows: %s", store_errmsg(st));
    if (st != NULL && store_prune_daily(st, daily_horizon_ms(dl, now)) < 0)
        log_warn("pruning old daily rows: %s", store_errmsg(st));
    log_info("database %s: %zu live quota rows of %zu subjects loaded, %llu "
             "expired pruned", cfg->db_path, rows, quota_count(q),
             (unsigned long long)pruned);
    start_writer(p, base, st);
    /* Rows moved to new slots (the window changed) are rewritten now. */
    persist_changed(p);
    return p;
}

/*
 * Shutdown: wait for the batches in the writer's hands, then write what is
 * pending and wait for that too.  0, or -1 with the reason in p->error.
 */
static int
write_all(struct persist *p)
{
    struct writer_result r;
    struct writer_batch *b;

    while (writer_wait(p->writer, &r) == 1) {
        if (!r.ok)
            requeue(p, r.batch);
        keep_batch(p, r.batch);
    }
    if ((b = take_batch(p)) == NULL || quota_flush(p->quota, &sink, b) < 0 ||
        flush_daily(p, b) < 0) {
        writer_batch_free(b);
        snprintf(p->error, sizeof(p->error), "out of memory");
        return -1;
    }
    writer_submit(p->writer, b);
    writer_wait(p->writer, &r);
    writer_batch_free(r.batch);
    if (!r.ok)
        snprintf(p->error, sizeof(p->error), "%s", r.err);
    return r.ok ? 0 : -1;
}

void
persist_close(struct persist *p)
{
    if (p == NULL)
        return;
    if (write_all(p) < 0)
        log_error("quota changes since the last successful write are lost: "
                  "%s", p->error);
    else
        log_info("quotas written to %s", p->cfg->db_path);
    writer_stop(p->writer);
    event_free(p->flush_ev);
    event_free(p->prune_ev);
    event_free(p->answer_ev);
    writer_batch_free(p->spare);
    free(p);
}

/* ---- replies ----------------------------------------------------------- */

void
persist_reply(struct persist *p, struct conn *c, enum proto_op op,
              uint64_t id, const void *msg, bool changed)
{
    size_t mark = conn_out_mark(c);

    conn_reply(c, op, id, msg);
    if (!changed)
        return;
    persist_changed(p);
    /* While writes fail, a reply does not wait for the next retry: it
     * would go out after it all the same (release_held). */
    if (p->cfg->quota_flush_ms > 0 || p->failing)
        return;
    if (hold(p, c, id, mark) < 0)
        log_error("%s: out of memory: replying before the commit", __func__);
}

void
persist_drop_conn(void *state)
{
    struct conn_held *ch = state;

    while (!TAILQ_EMPTY(&ch->list))
        held_free(TAILQ_FIRST(&ch->list));
    free(ch);
}

void
persist_state(const struct persist *p, struct persist_state *st)
{
    st->failing = p->failing;
    st->error = p->failing ? p->error : "";
    st->last_flush_s = p->last_flush_s;
}
