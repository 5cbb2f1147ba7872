/*
 * writer.c - the store's writer thread; see writer.h for the contract.
 *
 * The loop and the thread share the fields under mu.  A batch goes from
 * todo (writer_submit) to the thread's hands, where every batch taken
 * together is written as one transaction, then to done (the eventfd
 * counts it) until writer_collect takes it.  The thread writes batches
 * before it prunes, and finishes them before it stops.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "writer.h"

struct batch_change {
    enum writer_kind kind;
    bool has_limit;
    uint32_t subject_off;       /* into text */
    int64_t slot_start_ms;
    int64_t value;
    const char *unit;           /* a constant: DAILY_RESET, _SLOT */
};

struct writer_batch {
    TAILQ_ENTRY(writer_batch) link;     /* on todo, in hand or done */
    struct batch_change *v;
    size_t n, cap;
    char *text;                 /* the subjects, NUL-terminated */
    size_t text_len, text_cap;
    size_t last_subject;        /* offset of the last one added */
    bool ok, first;             /* once written: writer_result */
    char err[WRITER_ERR_MAX];
};
TAILQ_HEAD(batch_list, writer_batch);

struct writer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* the thread waits for work */
    pthread_cond_t back_cv;     /* the loop waits for a batch back
                                 * (writer_wait, at shutdown) */
    int efd;                    /* eventfd: readable while batches are
                                 * back */
    /* Under mu: */
    struct batch_list todo;     /* submitted, not taken yet */
    struct batch_list done;     /* back, not collected yet */
    size_t pending;             /* submitted, not collected */
    bool thread_waiting;        /* on cv: a submit must wake it */
    bool loop_waiting;          /* on back_cv */
    bool prune_pending;
    bool checkpoint_pending;    /* the WAL is past STORE_CHECKPOINT_PAGES */
    int64_t prune_before_ms;
    uint64_t pruned;            /* since the last report */
    char prune_err[WRITER_ERR_MAX];
    bool stop;
    /* The thread's alone (the loop's before start and after join): */
    struct store *st;
    char *path;
};

/* ---- batches ----------------------------------------------------------- */

struct writer_batch *
writer_batch_new(void)
{
    return calloc(1, sizeof(struct writer_batch));
}

void
writer_batch_free(struct writer_batch *b)
{
    if (b == NULL)
        return;
    free(b->v);
    free(b->text);
    free(b);
}

void
writer_batch_clear(struct writer_batch *b)
{
    b->n = 0;
    b->text_len = 0;
}

/* Room for one more change and need bytes of text; -1 when out of
 * memory. */
static int
batch_grow(struct writer_batch *b, size_t need)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        struct batch_change *v = realloc(b->v, cap * sizeof(*v));

        if (v == NULL)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    if (b->text_len + need > b->text_cap) {
        size_t cap = b->text_cap ? 2 * b->text_cap : 4096;
        char *t;

        while (cap < b->text_len + need)
            cap *= 2;
        if (cap > UINT32_MAX || (t = realloc(b->text, cap)) == NULL)
            return -1;
        b->text = t;
        b->text_cap = cap;
    }
    return 0;
}

int
writer_batch_add(struct writer_batch *b, const struct writer_change *c)
{
    size_t len = strlen(c->subject) + 1;
    bool same = b->n > 0 &&
                strcmp(b->text + b->last_subject, c->subject) == 0;
    struct batch_change *bc;

    /* quota_flush gives a subject's changes one after the other: its
     * name is kept once. */
    if (batch_grow(b, same ? 0 : len) < 0)
        return -1;
    if (!same) {
        memcpy(b->text + b->text_len, c->subject, len);
        b->last_subject = b->text_len;
        b->text_len += len;
    }
    bc = &b->v[b->n++];
    bc->kind = c->kind;
    bc->has_limit = c->has_limit;
    bc->subject_off = (uint32_t)b->last_subject;
    bc->slot_start_ms = c->slot_start_ms;
    bc->value = c->value;
    bc->unit = c->unit;
    return 0;
}

size_t
writer_batch_count(const struct writer_batch *b)
{
    return b->n;
}

void
writer_batch_get(const struct writer_batch *b, size_t i,
                 struct writer_change *c)
{
    const struct batch_change *bc = &b->v[i];

    c->kind = bc->kind;
    c->subject = b->text + bc->subject_off;
    c->slot_start_ms = bc->slot_start_ms;
    c->value = bc->value;
    c->has_limit = bc->has_limit;
    c->unit = bc->unit;
}

/* ---- the thread -------------------------------------------------------- */

/* One store call for change i of b. */
static int
write_change(struct store *st, const struct writer_batch *b, size_t i)
{
    struct writer_change c;

    writer_batch_get(b, i, &c);
    switch (c.kind) {
    case WRITER_RESET:
        return store_reset_subject(st, c.subject);
    case WRITER_LIMIT:
        return store_put_limit(st, c.subject, c.has_limit,
                               (uint64_t)c.value);
    case WRITER_SLOT:
        return store_put_usage(st, c.subject, c.slot_start_ms,
                               (uint64_t)c.value);
    case WRITER_DAILY_RESET:
        return store_reset_daily(st, c.subject, c.unit);
    case WRITER_DAILY_SLOT:
        return store_put_daily(st, c.subject, c.unit, c.slot_start_ms,
                               (uint64_t)c.value);
    case WRITER_DAILY_PRUNE:
        return store_prune_daily(st, c.slot_start_ms);
    }
    return -1;
}

/* The writer's store, opened again if it is closed; NULL, with the reason
 * in err, when it cannot be.  It checkpoints only when told to
 * (checkpoint_step), never inside a commit. */
static struct store *
own_store(struct writer *w, char *err)
{
    if (w->st == NULL &&
        (w->st = store_open(w->path, err, WRITER_ERR_MAX)) != NULL)
        store_manual_checkpoints(w->st);
    return w->st;
}

static int64_t
mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * On the writer's thread, a long transaction gives way every
 * WRITER_YIELD_US to the threads waiting for its CPU: the loop and the
 * clients it answers would otherwise wait for the scheduler's next tick
 * (4 ms at 250 Hz) while it inserts thousands of rows.  When nothing else
 * waits for the CPU, sched_yield() returns at once.
 */
#define WRITER_YIELD_US 200

static void
give_way(int64_t *since_ns)
{
    int64_t now = mono_ns();

    if (now - *since_ns >= (int64_t)WRITER_YIELD_US * 1000) {
        sched_yield();
        *since_ns = mono_ns();
    }
}

/* Write the batches of list as one transaction; 0, or -1 with the reason
 * in err.  now: on the loop's thread (writer_write_now): never give way,
 * and when another connection holds the write lock, return 1 at once
 * with nothing written. */
static int
write_batches(struct writer *w, const struct batch_list *list, bool now,
              char *err)
{
    const struct writer_batch *b;
    int64_t since_ns = now ? 0 : mono_ns();
    size_t written = 0;
    int rc;

    if (own_store(w, err) == NULL)
        return -1;
    rc = now ? store_try_begin(w->st) : (store_begin(w->st) == 0);
    if (rc == 0)
        return 1;
    if (rc < 0)
        goto fail;
    /* A failure poisons the batch: commit then rolls it back. */
    TAILQ_FOREACH(b, list, link)
        for (size_t i = 0; i < b->n; i++) {
            if (write_change(w->st, b, i) < 0)
                goto end;
            if (!now && ++written % 32 == 0)
                give_way(&since_ns);
        }
end:
    if (store_commit(w->st) < 0)
        goto fail;
    return 0;
fail:
    snprintf(err, WRITER_ERR_MAX, "%s", store_errmsg(w->st));
    return -1;
}

/* After a transaction, with mu held: a checkpoint is due once the WAL is
 * past SQLite's usual threshold. */
static void
want_checkpoint(struct writer *w)
{
    if (w->st != NULL && store_wal_pages(w->st) >= STORE_CHECKPOINT_PAGES)
        w->checkpoint_pending = true;
}

/* Wake the loop: batches are back (the counter only grows, and is read
 * back to 0 by writer_collect). */
static void
announce(struct writer *w)
{
    uint64_t one = 1;

    while (write(w->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* Move list onto done with its outcome; called with mu held. */
static void
give_back(struct writer *w, struct batch_list *list, bool ok, bool first,
          const char *err)
{
    struct writer_batch *b;

    while ((b = TAILQ_FIRST(list)) != NULL) {
        TAILQ_REMOVE(list, b, link);
        b->ok = ok;
        b->first = first;
        snprintf(b->err, sizeof(b->err), "%s", err);
        first = false;
        TAILQ_INSERT_TAIL(&w->done, b, link);
    }
}

/* Every batch waiting, written as one transaction; called and returning
 * with mu held.  When it fails, those submitted meanwhile come back
 * failed too, not written. */
static void
take_batches(struct writer *w)
{
    struct batch_list list = TAILQ_HEAD_INITIALIZER(list);
    char err[WRITER_ERR_MAX] = "";
    int rc;

    TAILQ_CONCAT(&list, &w->todo, link);
    pthread_mutex_unlock(&w->mu);
    rc = write_batches(w, &list, false, err);
    pthread_mutex_lock(&w->mu);
    want_checkpoint(w);
    give_back(w, &list, rc == 0, true, err);
    if (rc < 0) {
        char after[WRITER_ERR_MAX];

        snprintf(after, sizeof(after), "not written: the transaction "
                 "before failed (%.900s)", err);
        give_back(w, &w->todo, false, false, after);
    }
    if (w->loop_waiting)
        pthread_cond_signal(&w->back_cv);
    announce(w);
}

/* One step of the prune run; called and returning with mu held. */
static void
prune_step(struct writer *w)
{
    int64_t before_ms = w->prune_before_ms;
    char err[WRITER_ERR_MAX] = "";
    uint64_t n = 0;
    int rc = -1;

    pthread_mutex_unlock(&w->mu);
    if (w->st != NULL)
        rc = store_prune_step(w->st, before_ms, WRITER_PRUNE_ROWS, &n);
    if (rc < 0 && w->st != NULL)
        snprintf(err, sizeof(err), "%s", store_errmsg(w->st));
    pthread_mutex_lock(&w->mu);
    want_checkpoint(w);
    w->pruned += n;
    if (err[0] != '\0')
        memcpy(w->prune_err, err, sizeof(w->prune_err));
    /* Done, failed, or nothing to prune on: the run ends, unless the
     * bound moved meanwhile. */
    if ((rc < 0 || n < WRITER_PRUNE_ROWS) &&
        before_ms == w->prune_before_ms)
        w->prune_pending = false;
}

/* A checkpoint, which syncs the disk; called and returning with mu held.
 * A failed one is tried again after the next commit, as SQLite's own
 * would be. */
static void
checkpoint_step(struct writer *w)
{
    w->checkpoint_pending = false;
    pthread_mutex_unlock(&w->mu);
    if (w->st != NULL)
        (void)store_checkpoint(w->st);
    pthread_mutex_lock(&w->mu);
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (TAILQ_EMPTY(&w->todo) && !w->stop && !w->prune_pending &&
               !w->checkpoint_pending) {
            w->thread_waiting = true;
            pthread_cond_wait(&w->cv, &w->mu);
            w->thread_waiting = false;
        }
        /* A checkpoint that is due goes first, or a steady stream of
         * batches would let the WAL grow without end. */
        if (w->checkpoint_pending)
            checkpoint_step(w);
        else if (!TAILQ_EMPTY(&w->todo))
            take_batches(w);
        else if (w->stop)
            break;
        else
            prune_step(w);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- the loop's side --------------------------------------------------- */

struct writer *
writer_start(const char *path, struct store *st, char *err, size_t errlen)
{
    struct writer *w = calloc(1, sizeof(*w));
    int rc;

    if (w == NULL || (w->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "the writer: out of memory");
        goto fail;
    }
    if ((w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        snprintf(err, errlen, "the writer: eventfd: %s", strerror(errno));
        goto fail;
    }
    w->st = st;
    if (st != NULL)
        store_manual_checkpoints(st);
    TAILQ_INIT(&w->todo);
    TAILQ_INIT(&w->done);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_cond_init(&w->back_cv, NULL);
    if ((rc = pthread_create(&w->thread, NULL, writer_main, w)) != 0) {
        snprintf(err, errlen, "the writer: cannot start a thread: %s",
                 strerror(rc));
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        pthread_cond_destroy(&w->back_cv);
        close(w->efd);
        goto fail;
    }
    return w;
fail:
    store_close(st);
    if (w != NULL)
        free(w->path);
    free(w);
    return NULL;
}

void
writer_stop(struct writer *w)
{
    struct writer_batch *b;

    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    while ((b = TAILQ_FIRST(&w->done)) != NULL) {
        TAILQ_REMOVE(&w->done, b, link);
        writer_batch_free(b);
    }
    store_close(w->st);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->back_cv);
    close(w->efd);
    free(w->path);
    free(w);
}

int
writer_fd(const struct writer *w)
{
    return w->efd;
}

size_t
writer_pending(struct writer *w)
{
    size_t n;

    pthread_mutex_lock(&w->mu);
    n = w->pending;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void
writer_submit(struct writer *w, struct writer_batch *b)
{
    pthread_mutex_lock(&w->mu);
    TAILQ_INSERT_TAIL(&w->todo, b, link);
    w->pending++;
    /* No system call when the thread is busy: it looks at todo before it
     * waits again. */
    if (w->thread_waiting)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int
writer_write_now(struct writer *w, struct writer_batch *b,
                 struct writer_result *r)
{
    struct batch_list list = TAILQ_HEAD_INITIALIZER(list);
    int rc;

    pthread_mutex_lock(&w->mu);
    /* The thread waits with nothing in its hands, so the store is free
     * and no earlier change is still to be written. */
    if (w->pending != 0 || !w->thread_waiting || w->st == NULL ||
        b->n > WRITER_NOW_MAX) {
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    TAILQ_INSERT_TAIL(&list, b, link);
    r->err[0] = '\0';
    rc = write_batches(w, &list, true, r->err);
    want_checkpoint(w);
    if (w->checkpoint_pending)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (rc == 1)
        return 0;
    r->batch = b;
    r->ok = rc == 0;
    r->first = true;
    return 1;
}

/* Take the oldest batch back, if any; called with mu held. */
static int
collect_locked(struct writer *w, struct writer_result *r)
{
    struct writer_batch *b = TAILQ_FIRST(&w->done);

    if (b == NULL)
        return 0;
    TAILQ_REMOVE(&w->done, b, link);
    w->pending--;
    r->batch = b;
    r->ok = b->ok;
    r->first = b->first;
    memcpy(r->err, b->err, sizeof(r->err));
    return 1;
}

/* Empty the eventfd when the last batch back was just taken: it is
 * readable again at the next announce.  Called with mu held, so no
 * announce comes in between. */
static void
quiet_fd(struct writer *w, int back)
{
    uint64_t count;

    if (back && TAILQ_EMPTY(&w->done))
        while (read(w->efd, &count, sizeof(count)) < 0 && errno == EINTR)
            ;
}

int
writer_collect(struct writer *w, struct writer_result *r)
{
    int back;

    pthread_mutex_lock(&w->mu);
    back = collect_locked(w, r);
    quiet_fd(w, back);
    pthread_mutex_unlock(&w->mu);
    return back;
}

int
writer_wait(struct writer *w, struct writer_result *r)
{
    int back;

    pthread_mutex_lock(&w->mu);
    while (TAILQ_EMPTY(&w->done) && w->pending > 0) {
        w->loop_waiting = true;
        pthread_cond_wait(&w->back_cv, &w->mu);
        w->loop_waiting = false;
    }
    back = collect_locked(w, r);
    quiet_fd(w, back);
    pthread_mutex_unlock(&w->mu);
    return back;
}

void
writer_prune(struct writer *w, int64_t before_ms)
{
    pthread_mutex_lock(&w->mu);
    w->prune_before_ms = before_ms;
    w->prune_pending = true;
    if (w->thread_waiting)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

uint64_t
writer_prune_report(struct writer *w, char *err, size_t errlen)
{
    uint64_t n;

    pthread_mutex_lock(&w->mu);
    n = w->pruned;
    w->pruned = 0;
    snprintf(err, errlen, "%s", w->prune_err);
    w->prune_err[0] = '\0';
    pthread_mutex_unlock(&w->mu);
    return n;
}
