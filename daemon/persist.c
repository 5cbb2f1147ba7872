/* persist.c - group commit of quota changes to SQLite, and start-up load. */
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/buffer.h>

#include <sys/queue.h>

#include "clock.h"
#include "log.h"
#include "persist.h"
#include "quota.h"
#include "server.h"
#include "store.h"
#include "telemetry.h"

/* A reply held until the commit that makes its change durable. */
struct held {
    TAILQ_ENTRY(held) all_entry;
    TAILQ_ENTRY(held) conn_entry;
    struct conn *conn;
    struct conn_held *owner;
    uint64_t id;
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
    struct store *store;            /* SQLite; NULL while read-only */
    struct telemetry *telemetry;
    struct event *flush_ev;         /* group commit */
    struct event *prune_ev;
    struct held_list held;          /* replies waiting for a commit */
    int slot;                       /* connection slot: struct conn_held */
    bool failing;                   /* the last write failed */
    char error[512];                /* and why */
    double last_flush_s;            /* wall time of the last good write */
};

/* ---- the quota -> store sink ------------------------------------------- */

static int
sink_begin(void *arg)
{
    return store_begin(arg);
}

static int
sink_reset(void *arg, const char *subject)
{
    return store_reset_subject(arg, subject);
}

static int
sink_limit(void *arg, const char *subject, bool has_limit, int64_t limit)
{
    return store_put_limit(arg, subject, has_limit, (uint64_t)limit);
}

static int
sink_slot(void *arg, const char *subject, int64_t slot_start_ms,
          int64_t tokens)
{
    return store_put_usage(arg, subject, slot_start_ms, (uint64_t)tokens);
}

static int
sink_commit(void *arg)
{
    return store_commit(arg);
}

static void
sink_rollback(void *arg)
{
    store_rollback(arg);
}

static const struct quota_sink sink = {
    sink_begin, sink_reset, sink_limit, sink_slot, sink_commit, sink_rollback,
};

/* ---- start-up ---------------------------------------------------------- */

struct load_ctx {
    struct quota *q;
    double now_s;
    size_t rows, bad;
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

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
    persist_flush(arg);
}

static double
prune_interval_s(const struct persist *p)
{
    double slot_s = (double)quota_slot_ms(p->quota) / 1e3;

    return slot_s < 10 ? 10 : slot_s > 3600 ? 3600 : slot_s;
}

/* Rows that left the window, from the store (the table prunes itself):
 * how many. */
static uint64_t
prune_store(struct persist *p, double now)
{
    uint64_t pruned = 0;

    if (p->store != NULL &&
        store_prune(p->store, quota_horizon_ms(p->quota, now), &pruned) < 0)
        log_warn("pruning old quota rows: %s", store_errmsg(p->store));
    return pruned;
}

static void
prune_cb(evutil_socket_t fd, short what, void *arg)
{
    struct persist *p = arg;
    double now = clock_wall();
    struct timeval tv = { (time_t)prune_interval_s(p), 0 };
    uint64_t pruned;

    quota_prune(p->quota, now);
    if ((pruned = prune_store(p, now)) > 0)
        log_debug("pruned %llu expired quota rows",
                  (unsigned long long)pruned);
    evtimer_add(p->prune_ev, &tv);
}

/*
 * Load the live window into p->quota.  A database we may read but not
 * write is loaded and served from, keeping changes in memory and trying to
 * open it for writing at every flush; one we cannot read at all would make
 * the quotas wrong, and stops the daemon.
 */
static size_t
load(struct persist *p, double now)
{
    const struct config *cfg = p->cfg;
    char err[512], err2[512];
    struct load_ctx lc = { p->quota, now, 0, 0 };
    struct store_load_cb cb = { load_usage, load_limit, &lc };
    int64_t horizon_ms = quota_horizon_ms(p->quota, now);

    p->store = store_open(cfg->db_path, err, sizeof(err));
    if (p->store == NULL) {
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
    } else if (store_load(p->store, horizon_ms, &cb) < 0) {
        fatalx(1, "loading quotas: %s", store_errmsg(p->store));
    }
    if (lc.bad > 0)
        log_warn("%zu stored quota rows could not be loaded (bad subject "
                 "or value) and were skipped", lc.bad);
    return lc.rows;
}

struct persist *
persist_open(struct event_base *base, const struct config *cfg,
             struct quota *q, struct telemetry *t, int conn_slot)
{
    struct persist *p = calloc(1, sizeof(*p));
    double now = clock_wall();
    size_t rows;

    if (p == NULL)
        fatalx(1, "%s: out of memory", __func__);
    p->cfg = cfg;
    p->quota = q;
    p->telemetry = t;
    p->slot = conn_slot;
    TAILQ_INIT(&p->held);
    if (cfg->db_is_default)
        make_db_dir(cfg->db_path);
    rows = load(p, now);
    log_info("database %s: %zu live quota rows of %zu subjects loaded, %llu "
             "expired pruned", cfg->db_path, rows, quota_count(q),
             (unsigned long long)prune_store(p, now));
    p->flush_ev = evtimer_new(base, flush_cb, p);
    p->prune_ev = evtimer_new(base, prune_cb, p);
    if (p->flush_ev == NULL || p->prune_ev == NULL)
        fatalx(1, "cannot create the flush timers");
    struct timeval tv = { (time_t)prune_interval_s(p), 0 };
    evtimer_add(p->prune_ev, &tv);
    /* Rows moved to new slots (the window changed) are rewritten now. */
    persist_changed(p);
    return p;
}

/* ---- group commit ------------------------------------------------------ */

void
persist_changed(struct persist *p)
{
    int64_t ms = p->cfg->quota_flush_ms;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

    if (evtimer_pending(p->flush_ev, NULL))
        return;
    /* After a failure, retry no faster than once a second. */
    if (p->failing && ms < 1000)
        tv = (struct timeval){ 1, 0 };
    evtimer_add(p->flush_ev, &tv);
}

static void
held_free(struct held *h)
{
    TAILQ_REMOVE(&h->owner->p->held, h, all_entry);
    TAILQ_REMOVE(&h->owner->list, h, conn_entry);
    free(h);
}

/*
 * The commit that held these replies is done: send them.  When it failed
 * they go out all the same: the changes are counted in memory and the
 * write is retried, and holding the replies back would stop every
 * quota-checked call for as long as the disk is unwritable (or answer a
 * granted permit with an error).  The failure is logged and counted.
 */
static void
release_held(struct persist *p)
{
    struct held *h;

    while ((h = TAILQ_FIRST(&p->held)) != NULL) {
        struct conn *c = h->conn;
        conn_send_raw(c, h->data, h->len);
        held_free(h);
        conn_flush(c);
    }
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

int
persist_flush(struct persist *p)
{
    char err[512];
    int rc = -1;

    if (p->store == NULL)       /* read-only at start: try again */
        p->store = store_open(p->cfg->db_path, err, sizeof(err));
    if (p->store != NULL)
        rc = quota_flush(p->quota, &sink, p->store);
    if (rc < 0) {
        write_failed(p, p->store ? store_errmsg(p->store) : err);
        release_held(p);
        persist_changed(p);
        return -1;
    }
    if (p->failing)
        log_info("writing quotas to %s works again", p->cfg->db_path);
    p->failing = false;
    p->last_flush_s = clock_wall();
    release_held(p);
    return 0;
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
    h->len = len;
    memcpy(h->data, data, len);
    conn_out_cut(c, mark);
    TAILQ_INSERT_TAIL(&p->held, h, all_entry);
    TAILQ_INSERT_TAIL(&ch->list, h, conn_entry);
    return 0;
}

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

void
persist_close(struct persist *p)
{
    if (p == NULL)
        return;
    if (persist_flush(p) < 0)
        log_error("quota changes since the last successful write are lost: "
                  "%s", p->store ? store_errmsg(p->store) :
                  "the database is not writable");
    else
        log_info("quotas written to %s", p->cfg->db_path);
    event_free(p->flush_ev);
    event_free(p->prune_ev);
    store_close(p->store);
    free(p);
}
