/* persist.c - group commit of quota changes to SQLite, and start-up load. */
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/buffer.h>

#include "log.h"
#include "persist.h"
#include "quota.h"
#include "server.h"
#include "store.h"
#include "telemetry.h"

/* A reply held until the commit that makes its change durable. */
struct held {
    TAILQ_ENTRY(held) srv_entry;
    TAILQ_ENTRY(held) conn_entry;
    struct conn *conn;
    uint64_t id;
    size_t len;
    char data[];
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
prune_interval_s(const struct server *srv)
{
    double slot_s = (double)quota_slot_ms(srv->quota) / 1e3;

    return slot_s < 10 ? 10 : slot_s > 3600 ? 3600 : slot_s;
}

static void
prune_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    double now = server_now_wall();
    struct timeval tv = { (time_t)prune_interval_s(srv), 0 };
    uint64_t pruned = 0;

    quota_prune(srv->quota, now);
    if (srv->store != NULL &&
        store_prune(srv->store, quota_horizon_ms(srv->quota, now),
                    &pruned) < 0)
        log_warn("pruning old quota rows: %s", store_errmsg(srv->store));
    else if (pruned > 0)
        log_debug("pruned %llu expired quota rows",
                  (unsigned long long)pruned);
    evtimer_add(srv->prune_ev, &tv);
}

void
persist_open(struct server *srv)
{
    const struct config *cfg = &srv->cfg;
    char err[512], err2[512];
    double now = server_now_wall();
    struct load_ctx lc = { 0 };
    struct store_load_cb cb = { load_usage, load_limit, &lc };
    uint64_t pruned = 0;

    srv->quota = quota_new(cfg->quota_window_days * 86400.0,
                           cfg->default_quota_tokens,
                           cfg->quota_enforcement == ENFORCE_HARD);
    if (srv->quota == NULL)
        fatalx(1, "cannot create the quota table");
    if (cfg->db_is_default)
        make_db_dir(cfg->db_path);
    srv->store = store_open(cfg->db_path, err, sizeof(err));
    lc.q = srv->quota;
    lc.now_s = now;
    if (srv->store == NULL) {
        /*
         * A database we may read but not write: load it and serve, keeping
         * changes in memory and trying to open it for writing at every
         * flush.  One we cannot read at all would make the quotas wrong.
         */
        struct store *ro = store_open_readonly(cfg->db_path, err2,
                                               sizeof(err2));
        if (ro == NULL)
            fatalx(1, "%s", err);
        if (store_load(ro, quota_horizon_ms(srv->quota, now), &cb) < 0)
            fatalx(1, "loading quotas: %s", store_errmsg(ro));
        store_close(ro);
        log_error("%s: serving from memory; quota changes are written when "
                  "the database becomes writable (retried)", err);
        srv->store_failing = true;
        snprintf(srv->store_error, sizeof(srv->store_error), "%s", err);
    } else if (store_load(srv->store, quota_horizon_ms(srv->quota, now),
                          &cb) < 0) {
        fatalx(1, "loading quotas: %s", store_errmsg(srv->store));
    }
    if (lc.bad > 0)
        log_warn("%zu stored quota rows could not be loaded (bad subject "
                 "or value) and were skipped", lc.bad);
    if (srv->store != NULL &&
        store_prune(srv->store, quota_horizon_ms(srv->quota, now),
                    &pruned) < 0)
        log_warn("pruning old quota rows: %s", store_errmsg(srv->store));
    log_info("database %s: %zu live quota rows of %zu subjects loaded, %llu "
             "expired pruned", cfg->db_path, lc.rows,
             quota_count(srv->quota), (unsigned long long)pruned);

    TAILQ_INIT(&srv->held);
    srv->flush_ev = evtimer_new(srv->base, flush_cb, srv);
    srv->prune_ev = evtimer_new(srv->base, prune_cb, srv);
    if (srv->flush_ev == NULL || srv->prune_ev == NULL)
        fatalx(1, "cannot create the flush timers");
    struct timeval tv = { (time_t)prune_interval_s(srv), 0 };
    evtimer_add(srv->prune_ev, &tv);
    /* Rows moved to new slots (the window changed) are rewritten now. */
    persist_changed(srv);
}

/* ---- group commit ------------------------------------------------------ */

void
persist_changed(struct server *srv)
{
    int64_t ms = srv->cfg.quota_flush_ms;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

    if (srv->flush_ev == NULL || evtimer_pending(srv->flush_ev, NULL))
        return;
    /* After a failure, retry no faster than once a second. */
    if (srv->store_failing && ms < 1000)
        tv = (struct timeval){ 1, 0 };
    evtimer_add(srv->flush_ev, &tv);
}

/*
 * The commit that held these replies is done: send them.  When it failed
 * they go out all the same: the changes are counted in memory and the
 * write is retried, and holding the replies back would stop every
 * quota-checked call for as long as the disk is unwritable (or answer a
 * granted permit with an error).  The failure is logged and counted.
 */
static void
release_held(struct server *srv)
{
    struct held *h;

    while ((h = TAILQ_FIRST(&srv->held)) != NULL) {
        TAILQ_REMOVE(&srv->held, h, srv_entry);
        TAILQ_REMOVE(&h->conn->held, h, conn_entry);
        conn_send_raw(h->conn, h->data, h->len);
        conn_flush(h->conn);
        free(h);
    }
}

int
persist_flush(struct server *srv)
{
    char err[512];
    int rc = -1;

    if (srv->store == NULL)     /* read-only at start: try again */
        srv->store = store_open(srv->cfg.db_path, err, sizeof(err));
    if (srv->store != NULL)
        rc = quota_flush(srv->quota, &sink, srv->store);
    if (rc < 0) {
        const char *why = srv->store ? store_errmsg(srv->store) : err;
        srv->store_write_errors++;
        telemetry_store_error(srv);
        /* Once per failure, and again when the reason changes. */
        if (!srv->store_failing || strcmp(why, srv->store_error) != 0)
            log_error("writing quotas to %s failed, will retry: %s",
                      srv->cfg.db_path, why);
        snprintf(srv->store_error, sizeof(srv->store_error), "%s", why);
        srv->store_failing = true;
        release_held(srv);
        persist_changed(srv);
        return -1;
    }
    if (srv->store_failing)
        log_info("writing quotas to %s works again", srv->cfg.db_path);
    srv->store_failing = false;
    release_held(srv);
    return 0;
}

void
persist_reply(struct conn *c, enum proto_op op, uint64_t id, const void *msg,
              bool changed)
{
    struct server *srv = c->srv;
    size_t before = c->out.size, len;
    struct held *h;

    conn_reply(c, op, id, msg);
    if (!changed)
        return;
    persist_changed(srv);
    if (srv->cfg.quota_flush_ms > 0)
        return;
    len = c->out.size - before;
    if ((h = malloc(sizeof(*h) + len)) == NULL) {
        log_error("%s: out of memory: replying before the commit", __func__);
        return;
    }
    h->conn = c;
    h->id = id;
    h->len = len;
    memcpy(h->data, c->out.data + before, len);
    c->out.size = before;
    TAILQ_INSERT_TAIL(&srv->held, h, srv_entry);
    TAILQ_INSERT_TAIL(&c->held, h, conn_entry);
}

void
persist_drop_conn(struct conn *c)
{
    struct held *h;

    while ((h = TAILQ_FIRST(&c->held)) != NULL) {
        TAILQ_REMOVE(&c->held, h, conn_entry);
        TAILQ_REMOVE(&c->srv->held, h, srv_entry);
        free(h);
    }
}

void
persist_close(struct server *srv)
{
    if (srv->quota == NULL)
        return;
    if (persist_flush(srv) < 0)
        log_error("quota changes since the last successful write are lost: "
                  "%s", srv->store ? store_errmsg(srv->store) :
                  "the database is not writable");
    else
        log_info("quotas written to %s", srv->cfg.db_path);
    if (srv->flush_ev != NULL)
        event_free(srv->flush_ev);
    if (srv->prune_ev != NULL)
        event_free(srv->prune_ev);
    srv->flush_ev = srv->prune_ev = NULL;
    store_close(srv->store);
    srv->store = NULL;
    quota_free(srv->quota);
    srv->quota = NULL;
}
