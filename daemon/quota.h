/*
 * quota.h — rolling-window token quotas (llmguardd(8), "Quotas").
 *
 * A pure module: no I/O, no clock reads, no globals. Wall-clock time is
 * passed in as `now_s` (unix seconds, finite, |now_s| < 1e12); an invalid
 * time is an error (-1). Slots are named by their start in unix ms.
 * Nothing here is thread-safe: one struct quota belongs to one thread.
 *
 * Subjects are "workflow:<id>" and "tenant:<id>". An id is 1..256 bytes with
 * no control character (ASCII 0x00-0x1f, 0x7f, and U+0080-U+009F encoded as
 * UTF-8). Functions that take (kind, id) build and validate the subject.
 *
 * Window math. slot_ms = max(1 s, window_s / 720) in whole milliseconds;
 * slot k covers [k * slot_ms, (k + 1) * slot_ms) ms, and is named by its
 * start, k * slot_ms (an exact integer, the key of a stored row). Slot k
 * counts at now_s while any part of it lies inside the window
 * (now_s - window_s, now_s], that is while
 *
 *     now_s < (k + 1) * slot_ms / 1000 + window_s      (the slot's expiry)
 *
 * so usage is never forgotten before window_s has passed, and at most one
 * slot later. used = sum of the counted slots (slots ahead of now_s, after
 * the wall clock stepped back, count too). reset_at = the expiry of the
 * oldest counted slot holding tokens: the instant used next decreases.
 * Nothing used means no reset_at.
 *
 * Memory: a subject keeps only the slots it was charged in (a sorted array),
 * and is freed as soon as it holds no slot, no override and nothing left to
 * flush. quota_prune() drops expired slots; reserve/commit also trim the
 * subjects they touch.
 */
#ifndef LLMGUARD_QUOTA_H
#define LLMGUARD_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QUOTA_ID_MAX 256
#define QUOTA_SUBJECT_MAX (sizeof("workflow:") + QUOTA_ID_MAX)
#define QUOTA_SLOTS_PER_WINDOW 720
#define QUOTA_SLOT_MIN_S 1.0

enum quota_kind { QUOTA_WORKFLOW, QUOTA_TENANT };

struct quota;

/*
 * Outcome of quota_reserve(). `subject` is the first subject (workflow
 * before tenant) that is over its limit (over_quota), else the subject with
 * the least remaining (workflow on a tie); used, limit and reset_at are that
 * subject's after the decision. remaining = min over the subjects given of
 * max(0, limit - used), after the reservation; always >= 0.
 */
struct quota_decision {
    bool allowed;    /* false only in hard mode: nothing reserved */
    bool over_quota; /* used + tokens > limit for `subject` */
    char subject[QUOTA_SUBJECT_MAX];
    int64_t used;
    int64_t limit;
    bool has_reset_at; /* false: nothing used; reset_at_s is -1 */
    double reset_at_s;
    int64_t remaining;
    int64_t workflow_remaining; /* the workflow's own, when one is given */
    int64_t slot_start_ms; /* reservation handle, for quota_commit() */
};

/* One subject at now_s; an unseen subject is used 0 with the default. */
struct quota_status {
    int64_t tokens_used;
    int64_t tokens_remaining; /* max(0, limit - used) */
    int64_t tokens_limit;
    bool has_override;     /* limit comes from quota_set() */
    bool known;            /* held: usage in the window, an override, or
                              a change not yet flushed */
    double window_start_s; /* now_s - window_s */
    double window_end_s;   /* now_s */
    bool has_reset_at;     /* false: nothing used; reset_at_s is -1 */
    double reset_at_s;
};

/*
 * What the store is told by quota_flush(). Each callback returns 0, or -1 to
 * abort the flush. begin, commit and rollback may be NULL.
 *   on_reset  every stored usage row of `subject` is void: delete them (the
 *             override row stays). Comes before the subject's on_slot calls.
 *   on_limit  the subject's override is now `limit` (has_limit), or gone.
 *   on_slot   the slot starting at slot_start_ms now holds `tokens` in
 *             total (an upsert of an absolute value; 0 may be deleted).
 */
struct quota_sink {
    int (*begin)(void *arg);
    int (*on_reset)(void *arg, const char *subject);
    int (*on_limit)(void *arg, const char *subject, bool has_limit,
                    int64_t limit);
    int (*on_slot)(void *arg, const char *subject, int64_t slot_start_ms,
                   int64_t tokens);
    int (*commit)(void *arg);
    void (*rollback)(void *arg);
};

/* Ids and subjects. */

/* 0 when id is a valid workflow or tenant id, else -1 (also for NULL). */
int quota_id_valid(const char *id);

/* Writes "<kind>:<id>" to buf; returns its length, or -1 for a bad id or
 * a buffer too small (QUOTA_SUBJECT_MAX bytes always suffice). */
int quota_subject(char *buf, size_t len, enum quota_kind kind, const char *id);

/* Life cycle and configuration. window_s > 0, default_limit >= 0. */

/* A new, empty quota table, or NULL (bad config, out of memory). */
struct quota *quota_new(double window_s, int64_t default_limit, bool hard);
void quota_free(struct quota *q);

/*
 * Changes the config and keeps all usage and overrides; -1 (and nothing
 * changed) for a bad config. When slot_ms changes, every slot moves to the
 * new slot holding its start (merging), and each subject with usage is queued
 * for a rewrite (on_reset then on_slot for all its slots) and, once
 * quota_track_owed() was called, owed to the fleet as a whole.
 */
int quota_reconfigure(struct quota *q, double window_s, int64_t default_limit,
                      bool hard);
int64_t quota_slot_ms(const struct quota *q);
/* The settings in force. */
double quota_window_s(const struct quota *q);
int64_t quota_default_limit(const struct quota *q);
bool quota_hard(const struct quota *q);
/* Whether slot_start_ms can be a reservation quota_reserve() gave: the
 * start of a slot of the size in force, or of the size before the last
 * change (quota_commit() takes it to the slot that now holds it). */
bool quota_reservation_ok(const struct quota *q, int64_t slot_start_ms);

/*
 * A slot (or stored row) with slot_start_ms >= the horizon counts at now_s,
 * an earlier one does not: the store loads rows from there on and may
 * delete older ones.
 */
int64_t quota_horizon_ms(const struct quota *q, double now_s);

/* Enforcement. */

/*
 * Atomic check-and-reserve of `tokens` (>= 0) against every subject given:
 * workflow_id and/or tenant_id, NULL when absent, at least one. If some
 * subject would exceed (used + tokens > limit): in hard mode nothing is
 * reserved anywhere and d->allowed is false; in soft mode all are charged,
 * d->allowed and d->over_quota are true. Both subjects are charged to the
 * slot of now_s, returned as d->slot_start_ms. Reserving 0 only checks.
 * Returns 0 with *d filled (a rejection is not an error), -1 for bad
 * arguments or out of memory (then nothing was reserved).
 */
int quota_reserve(struct quota *q, const char *workflow_id,
                  const char *tenant_id, int64_t tokens, double now_s,
                  struct quota_decision *d);

/*
 * Reconciles a reservation made with the same ids at slot_start_ms: adds
 * actual - estimate (both >= 0) to each subject's slot at slot_start_ms while
 * that slot still counts at now_s. Once it has left the window, a positive
 * difference goes to the slot of now_s (the tokens were spent) and a
 * negative one is dropped (nothing left to refund). A slot never goes below
 * 0. To cancel a reservation, commit it with actual 0. Returns 0, or -1 for
 * bad arguments or out of memory (then nothing changed).
 */
int quota_commit(struct quota *q, const char *workflow_id,
                 const char *tenant_id, int64_t slot_start_ms, int64_t estimate,
                 int64_t actual, double now_s);

/* Fills *st for one subject; -1 for a bad id or time. */
int quota_status(const struct quota *q, enum quota_kind kind, const char *id,
                 double now_s, struct quota_status *st);

/* A subject and its status, as quota_top() lists them. */
struct quota_entry {
    const char *subject;    /* "workflow:<id>": valid until q changes */
    struct quota_status st;
};

/*
 * The subjects of kind using the most at now_s, most first (ties by
 * subject), at most n of them, into top; *count is how many were written,
 * *total how many of kind are held.  O(held subjects x log n).  Returns 0,
 * or -1 for a bad time.
 */
int quota_top(const struct quota *q, enum quota_kind kind, double now_s,
              struct quota_entry *top, size_t n, size_t *count,
              size_t *total);

/* Administration: each change is queued for the store. */

/* Sets the subject's override to limit (>= 0). */
int quota_set(struct quota *q, enum quota_kind kind, const char *id,
              int64_t limit);
/* Removes the override; the default limit applies again. */
int quota_unset(struct quota *q, enum quota_kind kind, const char *id);
/* Clears the subject's usage; its override, if any, is kept. */
int quota_reset(struct quota *q, enum quota_kind kind, const char *id);

/* Persistence. */

/*
 * Delivers every pending change, subject by subject (on_reset, on_limit,
 * then the changed slots in time order), between begin and commit, and
 * only then marks it clean. Does nothing and returns 0 when nothing is
 * pending. If any callback fails, rollback is called, everything stays
 * pending for the next flush, and -1 is returned; else the number of
 * on_* calls made. The sink must not call back into q.
 */
int quota_flush(struct quota *q, const struct quota_sink *sink, void *arg);
/* Whether quota_flush() has anything to deliver. */
bool quota_flush_pending(const struct quota *q);

/* What quota_requeue() queues again: one of the sink's calls. */
enum quota_change { QUOTA_CHANGE_RESET, QUOTA_CHANGE_LIMIT, QUOTA_CHANGE_SLOT };

/*
 * For a store that commits after quota_flush() returned (a writer thread):
 * a change the flush delivered, and marked clean, did not reach the store
 * after all.  Queue it again as it now is in memory: the subject's override
 * (LIMIT), every row of the subject (RESET: on_reset, then all its slots),
 * or the slot starting at slot_start_ms (SLOT; nothing when that slot is
 * gone: it expired, or went with a reset that is queued itself).  Returns
 * 0, or -1 for a bad subject or out of memory.
 */
int quota_requeue(struct quota *q, enum quota_change what, const char *subject,
                  int64_t slot_start_ms);

/*
 * Start-up loading, not queued for the store. A row goes to the current
 * slot holding slot_start_ms (adding up); if that moved it (slot_ms changed),
 * the subject is queued for a rewrite. Slots that no longer count at now_s
 * and 0 tokens are ignored. Returns 0, or -1 for a bad subject, value or
 * time, or out of memory.
 */
int quota_load_slot(struct quota *q, const char *subject, int64_t slot_start_ms,
                    int64_t tokens, double now_s);
int quota_load_limit(struct quota *q, const char *subject, int64_t limit);

/* Drops the slots that no longer count at now_s and frees idle subjects;
 * returns the number of slots dropped. Call it about once a slot. */
size_t quota_prune(struct quota *q, double now_s);

/*
 * The same sweep in bounded steps: each call goes on from where the last
 * one stopped, through at most max_subjects subjects, and sets *done when
 * the sweep has reached the last subject (the next call starts a new one).
 * Subjects added or freed between the steps are fine.
 */
size_t quota_prune_step(struct quota *q, double now_s, size_t max_subjects,
                        bool *done);

/*
 * Multi-host mode (llmguardd(8), "Several hosts").  The table keeps only
 * this host's own contributions (what it acknowledged), plus, per subject,
 * `others`: the fleet's usage in the window minus this host's, as last
 * read from Redis, which decisions and status add to the own usage.  Once
 * quota_track_owed() is called, every slot a reservation, a commit or a
 * reset changes is also owed to the fleet, queued apart from the store's
 * queue, and quota_owed_take() hands it over.  A slot's value is always
 * the absolute total, so handing one over twice is harmless.
 *
 * In this mode quota_reset() zeroes the subject's slots (owed: the fleet
 * learns this host's share is 0) instead of dropping them at once; they
 * leave with the window as any slot.
 */
void quota_track_owed(struct quota *q);
bool quota_owed_pending(const struct quota *q);

/* What quota_owed_take() hands over: a subject with this host's own usage
 * in the window, then each of its owed slots (absolute tokens, 0 too).
 * whole: every slot of the subject follows, and they replace all the
 * fleet holds of this host's part (after quota_owe_subject(),
 * quota_owe_all() or a new slot size), else only the slots that changed.
 * on_subject returning -1 stops before that subject (a full batch). */
struct quota_owed_sink {
    int (*on_subject)(void *arg, const char *subject, int64_t own_used,
                      bool whole);
    int (*on_slot)(void *arg, int64_t slot_start_ms, int64_t tokens);
};

/* Hands over up to max_subjects owed subjects, oldest first, and marks
 * them no longer owed; returns how many, or -1 for a bad time. */
int quota_owed_take(struct quota *q, double now_s, size_t max_subjects,
                    const struct quota_owed_sink *sink, void *arg);
/* Owe every slot of subject again (its write failed), or of every subject
 * (Redis lost them: a rebuild).  -1 for a bad subject. */
int quota_owe_subject(struct quota *q, const char *subject);
void quota_owe_all(struct quota *q);
/* Sets the subject's `others` (>= 0), read when this host's own usage
 * was own_read; the subject is created if needed and freed by pruning
 * once it holds nothing of its own. */
int quota_set_others(struct quota *q, const char *subject, int64_t others,
                     int64_t own_read);
/*
 * Hard mode on a share of the headroom (Redis unreachable, or no script
 * per call): each subject given must keep
 *     own - own_read + tokens <= (limit - others - own_read) / hosts
 * (a subject never read: own + tokens <= limit / hosts), so hosts that
 * each keep to their share cannot together overshoot the limit.  Else as
 * quota_reserve() in hard mode: nothing reserved, d->allowed false.
 */
int quota_reserve_share(struct quota *q, const char *workflow_id,
                        const char *tenant_id, int64_t tokens, int64_t hosts,
                        double now_s, struct quota_decision *d);
/* quota_reserve() as in soft mode whatever the mode: charged even over
 * the limit (hard mode's check is then Redis'). */
int quota_charge(struct quota *q, const char *workflow_id,
                 const char *tenant_id, int64_t tokens, double now_s,
                 struct quota_decision *d);
/* This host's own usage of subject in the window at now_s. */
int64_t quota_own_used(const struct quota *q, const char *subject,
                       double now_s);

/* Subjects held, and approximate heap bytes (the table, subjects, slot
 * arrays and hash chains; allocator overhead not included). */
size_t quota_count(const struct quota *q);
size_t quota_bytes(const struct quota *q);

#endif /* LLMGUARD_QUOTA_H */
