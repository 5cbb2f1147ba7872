/*
 * test_quota.c — unit tests of daemon/quota.c with a fake wall clock.
 *
 * Most tests use a 7200 s window, so slot_s = 10 s and slot k covers
 * [10k, 10k + 10); a slot counts until its end + 7200 s.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "quota.h"

#define W_S 7200.0
#define MAX_EVENTS 16

/* A sink that records what the store would be told. */
struct rec {
    char ev[MAX_EVENTS][96];
    int n;         /* events seen, even past MAX_EVENTS */
    int fail_slot; /* fail the on_slot call with this number */
    int slots;
    bool fail_commit;
};

static void rec_add(struct rec *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void rec_add(struct rec *r, const char *fmt, ...)
{
    va_list ap;

    if (r->n < MAX_EVENTS) {
        va_start(ap, fmt);
        vsnprintf(r->ev[r->n], sizeof(r->ev[0]), fmt, ap);
        va_end(ap);
    }
    r->n++;
}

static int rec_begin(void *arg)
{
    rec_add(arg, "begin");
    return 0;
}

static int rec_reset(void *arg, const char *subject)
{
    rec_add(arg, "reset %s", subject);
    return 0;
}

static int rec_limit(void *arg, const char *subject, bool has_limit,
                     int64_t limit)
{
    rec_add(arg, "limit %s %d %lld", subject, has_limit, (long long)limit);
    return 0;
}

static int rec_slot(void *arg, const char *subject, int64_t slot_start_ms,
                    int64_t tokens)
{
    struct rec *r = arg;

    if (++r->slots == r->fail_slot)
        return -1;
    rec_add(r, "slot %s %lld %lld", subject, (long long)slot_start_ms,
            (long long)tokens);
    return 0;
}

static int rec_commit(void *arg)
{
    struct rec *r = arg;

    rec_add(r, "commit");
    return r->fail_commit ? -1 : 0;
}

static void rec_rollback(void *arg)
{
    rec_add(arg, "rollback");
}

static const struct quota_sink rec_sink = {
    .begin = rec_begin,
    .on_reset = rec_reset,
    .on_limit = rec_limit,
    .on_slot = rec_slot,
    .commit = rec_commit,
    .rollback = rec_rollback,
};

/* Flushes q into a fresh recorder; returns quota_flush()'s result. */
static int flush(struct quota *q, struct rec *r)
{
    int fail_slot = r->fail_slot;
    bool fail_commit = r->fail_commit;

    memset(r, 0, sizeof(*r));
    r->fail_slot = fail_slot;
    r->fail_commit = fail_commit;
    return quota_flush(q, &rec_sink, r);
}

/* Asserts the recorded events are exactly the NULL-terminated list. */
static void assert_events(const struct rec *r, const char *const *want)
{
    int n = 0;

    while (want[n] != NULL)
        n++;
    assert_int_equal(r->n, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(r->ev[i], want[i]);
}

#define EVENTS(...) ((const char *const[]){__VA_ARGS__, NULL})

static int64_t used(const struct quota *q, enum quota_kind kind, const char *id,
                    double now_s)
{
    struct quota_status st;

    assert_int_equal(quota_status(q, kind, id, now_s, &st), 0);
    return st.tokens_used;
}

static struct quota_decision reserve(struct quota *q, const char *wf,
                                     const char *tenant, int64_t tokens,
                                     double now_s)
{
    struct quota_decision d;

    assert_int_equal(quota_reserve(q, wf, tenant, tokens, now_s, &d), 0);
    return d;
}

static void test_id_validation(void **state)
{
    char id[QUOTA_ID_MAX + 2], buf[QUOTA_SUBJECT_MAX];
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_decision d;
    struct quota_status st;

    (void)state;
    assert_int_equal(quota_id_valid(NULL), -1);
    assert_int_equal(quota_id_valid(""), -1);
    assert_int_equal(quota_id_valid("a"), 0);
    assert_int_equal(quota_id_valid("wf-1 two/3:x"), 0);
    assert_int_equal(quota_id_valid("a\nb"), -1);
    assert_int_equal(quota_id_valid("a\tb"), -1);
    assert_int_equal(quota_id_valid("a\x7f"), -1);
    assert_int_equal(quota_id_valid("caf\xc3\xa9"), 0);
    assert_int_equal(quota_id_valid("x\xc2\x85"), -1); /* U+0085 */
    assert_int_equal(quota_id_valid("x\xc2\xa0"), 0);  /* U+00A0 */
    memset(id, 'a', QUOTA_ID_MAX);
    id[QUOTA_ID_MAX] = '\0';
    assert_int_equal(quota_id_valid(id), 0);
    assert_int_equal(quota_subject(buf, sizeof(buf), QUOTA_WORKFLOW, id),
                     9 + QUOTA_ID_MAX);
    id[QUOTA_ID_MAX] = 'a';
    id[QUOTA_ID_MAX + 1] = '\0';
    assert_int_equal(quota_id_valid(id), -1);

    assert_int_equal(quota_subject(buf, sizeof(buf), QUOTA_WORKFLOW, "wf"), 11);
    assert_string_equal(buf, "workflow:wf");
    assert_int_equal(quota_subject(buf, sizeof(buf), QUOTA_TENANT, "t"), 8);
    assert_string_equal(buf, "tenant:t");
    assert_int_equal(quota_subject(buf, sizeof(buf), QUOTA_TENANT, ""), -1);
    assert_int_equal(quota_subject(buf, 8, QUOTA_TENANT, "t"), -1);

    assert_int_equal(quota_reserve(q, "a\n", NULL, 1, 10, &d), -1);
    assert_int_equal(quota_reserve(q, "w", "", 1, 10, &d), -1);
    assert_int_equal(quota_reserve(q, NULL, NULL, 1, 10, &d), -1);
    assert_int_equal(quota_reserve(q, "w", NULL, -1, 10, &d), -1);
    assert_int_equal(quota_reserve(q, "w", NULL, 1, NAN, &d), -1);
    assert_int_equal(quota_status(q, QUOTA_TENANT, "", 10, &st), -1);
    assert_int_equal(quota_set(q, QUOTA_TENANT, "t", -1), -1);
    assert_int_equal(quota_commit(q, "w", NULL, 0, -1, 0, 10), -1);
    assert_int_equal(quota_load_slot(q, "user:x", 0, 1, 10), -1);
    assert_int_equal(quota_load_slot(q, "workflow:", 0, 1, 10), -1);
    assert_int_equal(quota_load_limit(q, "tenant:a\x01", 1), -1);
    assert_int_equal(quota_count(q), 0);
    quota_free(q);

    assert_null(quota_new(0, 1000, false));
    assert_null(quota_new(-1, 1000, false));
    assert_null(quota_new(INFINITY, 1000, false));
    assert_null(quota_new(W_S, -1, false));
}

/* quota_top: most used first, ties by subject, one kind, at most n. */
static void test_top(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_decision d;
    struct quota_entry top[3];
    size_t count, total;
    static const struct { const char *wf; int64_t tokens; } use[] = {
        { "c", 30 }, { "a", 50 }, { "e", 5 }, { "b", 50 }, { "d", 40 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(use) / sizeof(use[0]); i++)
        assert_int_equal(quota_reserve(q, use[i].wf, "t1", use[i].tokens, 10,
                                       &d), 0);
    assert_int_equal(quota_set(q, QUOTA_WORKFLOW, "z", 7), 0);
    assert_int_equal(quota_top(q, QUOTA_WORKFLOW, 10, top, 3, &count, &total),
                     0);
    assert_int_equal(count, 3);
    assert_int_equal(total, 6);     /* a..e and z (an override, no use) */
    assert_string_equal(top[0].subject, "workflow:a");  /* 50, tie by name */
    assert_string_equal(top[1].subject, "workflow:b");
    assert_string_equal(top[2].subject, "workflow:d");  /* 40 */
    assert_int_equal(top[0].st.tokens_used, 50);
    assert_int_equal(top[0].st.tokens_remaining, 950);
    assert_true(top[0].st.known);
    assert_int_equal(quota_top(q, QUOTA_TENANT, 10, top, 3, &count, &total),
                     0);
    assert_int_equal(count, 1);
    assert_int_equal(total, 1);
    assert_string_equal(top[0].subject, "tenant:t1");
    assert_int_equal(top[0].st.tokens_used, 175);
    assert_int_equal(quota_top(q, QUOTA_WORKFLOW, 10, top, 0, &count, &total),
                     0);
    assert_int_equal(count, 0);
    assert_int_equal(total, 6);
    assert_int_equal(quota_top(q, QUOTA_WORKFLOW, NAN, top, 3, &count,
                               &total), -1);
    quota_free(q);
}

static void test_soft_mode(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_decision d;
    struct quota_status st;

    (void)state;
    d = reserve(q, "w", NULL, 600, 1005);
    assert_true(d.allowed);
    assert_false(d.over_quota);
    assert_string_equal(d.subject, "workflow:w");
    assert_int_equal(d.used, 600);
    assert_int_equal(d.limit, 1000);
    assert_int_equal(d.remaining, 400);
    assert_true(d.has_reset_at);
    assert_true(d.reset_at_s == 1010 + W_S);
    assert_int_equal(d.slot_start_ms, 1000000);

    d = reserve(q, "w", NULL, 600, 1006);
    assert_true(d.allowed);
    assert_true(d.over_quota);
    assert_string_equal(d.subject, "workflow:w");
    assert_int_equal(d.used, 1200);
    assert_int_equal(d.remaining, 0);

    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 1006, &st), 0);
    assert_int_equal(st.tokens_used, 1200);
    assert_int_equal(st.tokens_remaining, 0);
    assert_int_equal(st.tokens_limit, 1000);
    assert_false(st.has_override);
    assert_true(st.window_start_s == 1006 - W_S);
    assert_true(st.window_end_s == 1006);
    assert_true(st.has_reset_at);
    assert_true(st.reset_at_s == 1010 + W_S);

    /* an unseen subject: default limit, nothing used, nothing created */
    assert_int_equal(quota_status(q, QUOTA_TENANT, "new", 1006, &st), 0);
    assert_int_equal(st.tokens_used, 0);
    assert_int_equal(st.tokens_remaining, 1000);
    assert_false(st.has_reset_at);
    assert_true(st.reset_at_s == -1);
    assert_int_equal(quota_count(q), 1);
    quota_free(q);
}

static void test_hard_mode(void **state)
{
    struct quota *q = quota_new(W_S, 1000, true);
    struct quota_decision d;

    (void)state;
    d = reserve(q, "w", NULL, 600, 1005);
    assert_true(d.allowed);

    d = reserve(q, "w", NULL, 600, 1015);
    assert_false(d.allowed);
    assert_true(d.over_quota);
    assert_string_equal(d.subject, "workflow:w");
    assert_int_equal(d.used, 600);
    assert_int_equal(d.limit, 1000);
    assert_int_equal(d.remaining, 400);
    assert_true(d.has_reset_at);
    assert_true(d.reset_at_s == 1010 + W_S);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1015), 600);

    d = reserve(q, "w", NULL, 400, 1016); /* exactly to the limit */
    assert_true(d.allowed);
    assert_false(d.over_quota);
    assert_int_equal(d.remaining, 0);
    d = reserve(q, "w", NULL, 1, 1017);
    assert_false(d.allowed);
    d = reserve(q, "w", NULL, 0, 1017);
    assert_true(d.allowed);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1017), 1000);

    /* larger than the whole limit: rejected, and no reset will help */
    d = reserve(q, "big", NULL, 1001, 1017);
    assert_false(d.allowed);
    assert_int_equal(d.used, 0);
    assert_false(d.has_reset_at);
    assert_int_equal(quota_count(q), 1);
    quota_free(q);
}

static void test_workflow_tenant_atomic(void **state)
{
    struct quota *q = quota_new(W_S, 1000, true);
    struct quota_decision d;
    size_t bytes;

    (void)state;
    assert_int_equal(quota_set(q, QUOTA_TENANT, "t", 100), 0);
    bytes = quota_bytes(q);
    d = reserve(q, "w", "t", 150, 1005);
    assert_false(d.allowed);
    assert_string_equal(d.subject, "tenant:t");
    assert_int_equal(d.used, 0);
    assert_int_equal(d.limit, 100);
    assert_int_equal(d.remaining, 100);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1005), 0);
    assert_int_equal(used(q, QUOTA_TENANT, "t", 1005), 0);
    assert_int_equal(quota_count(q), 1);
    assert_int_equal(quota_bytes(q), bytes);

    d = reserve(q, "w", "t", 60, 1006);
    assert_true(d.allowed);
    assert_false(d.over_quota);
    assert_string_equal(d.subject, "tenant:t"); /* the least remaining */
    assert_int_equal(d.remaining, 40);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1006), 60);
    assert_int_equal(used(q, QUOTA_TENANT, "t", 1006), 60);

    d = reserve(q, "w", "t", 50, 1007);
    assert_false(d.allowed);
    assert_string_equal(d.subject, "tenant:t");
    assert_int_equal(d.used, 60);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1007), 60);

    /* both over: the workflow is reported */
    assert_int_equal(quota_set(q, QUOTA_WORKFLOW, "w", 70), 0);
    d = reserve(q, "w", "t", 50, 1007);
    assert_false(d.allowed);
    assert_string_equal(d.subject, "workflow:w");
    assert_int_equal(d.limit, 70);

    /* soft mode charges both and names the one over */
    assert_int_equal(quota_reconfigure(q, W_S, 1000, false), 0);
    assert_int_equal(quota_unset(q, QUOTA_WORKFLOW, "w"), 0);
    d = reserve(q, "w", "t", 50, 1008);
    assert_true(d.allowed);
    assert_true(d.over_quota);
    assert_string_equal(d.subject, "tenant:t");
    assert_int_equal(d.used, 110);
    assert_int_equal(d.remaining, 0);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1008), 110);
    quota_free(q);
}

static void test_window_rotation(void **state)
{
    struct quota *q = quota_new(W_S, 175, true);
    struct quota_decision d;
    struct quota_status st;
    struct rec r = {0};

    (void)state;
    assert_int_equal(quota_slot_ms(q), 10000);
    reserve(q, "w", NULL, 100, 1005); /* slot [1000, 1010) */
    reserve(q, "w", NULL, 50, 1013);  /* slot [1010, 1020) */
    reserve(q, "w", NULL, 25, 1019.5);

    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 1020, &st), 0);
    assert_int_equal(st.tokens_used, 175);
    assert_true(st.reset_at_s == 1010 + W_S);
    d = reserve(q, "w", NULL, 1, 8000);
    assert_false(d.allowed);
    assert_true(d.reset_at_s == 1010 + W_S);

    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", nextafter(8210, 0)), 175);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 8210, &st), 0);
    assert_int_equal(st.tokens_used, 75);
    assert_true(st.reset_at_s == 1020 + W_S);
    assert_int_equal(quota_horizon_ms(q, 8210), 1010000);
    assert_int_equal(quota_horizon_ms(q, nextafter(8210, 0)), 1000000);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 8219.5), 75);

    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 8220, &st), 0);
    assert_int_equal(st.tokens_used, 0);
    assert_int_equal(st.tokens_remaining, 175);
    assert_false(st.has_reset_at);

    /* a queued subject survives pruning until its flush */
    assert_int_equal(quota_prune(q, 8210), 1);
    assert_int_equal(quota_prune(q, 8220), 1);
    assert_int_equal(quota_count(q), 1);
    assert_int_equal(flush(q, &r), 0);
    assert_events(&r, EVENTS("begin", "commit"));
    assert_int_equal(quota_count(q), 0);
    quota_free(q);
}

static void test_reconcile(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_decision d;
    struct quota_status st;

    (void)state;
    d = reserve(q, "w", "t", 100, 1005);
    assert_int_equal(d.slot_start_ms, 1000000);
    assert_int_equal(quota_commit(q, "w", "t", d.slot_start_ms, 100, 250, 1100),
                     0);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1100), 250);
    assert_int_equal(used(q, QUOTA_TENANT, "t", 1100), 250);

    d = reserve(q, "w", NULL, 100, 1100);
    assert_int_equal(d.slot_start_ms, 1100000);
    assert_int_equal(quota_commit(q, "w", NULL, 1100000, 100, 20, 1105), 0);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1105), 270);
    /* down by more than the slot holds: the slot stops at 0 */
    assert_int_equal(quota_commit(q, "w", NULL, 1100000, 500, 0, 1106), 0);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 1106, &st), 0);
    assert_int_equal(st.tokens_used, 250);
    assert_true(st.reset_at_s == 1010 + W_S);
    assert_int_equal(used(q, QUOTA_TENANT, "t", 1106), 250);

    /* cancelling a reservation is committing 0 */
    d = reserve(q, "w", NULL, 40, 1200);
    assert_int_equal(quota_commit(q, "w", NULL, d.slot_start_ms, 40, 0, 1201),
                     0);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 1201), 250);

    /* the slot of 1000 left at 8210: a refund is dropped, extra tokens go
     * to the slot of now */
    assert_int_equal(quota_commit(q, "w", NULL, 1000000, 100, 0, 8300), 0);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 8300), 0);
    assert_int_equal(quota_commit(q, "w", NULL, 1000000, 100, 130, 8300), 0);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 8300, &st), 0);
    assert_int_equal(st.tokens_used, 30);
    assert_true(st.reset_at_s == 8310 + W_S);
    quota_free(q);
}

static void test_overrides_and_reset(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_decision d;
    struct quota_status st;
    struct rec r = {0};

    (void)state;
    assert_int_equal(quota_set(q, QUOTA_WORKFLOW, "w", 500), 0);
    d = reserve(q, "w", NULL, 200, 1005);
    assert_int_equal(d.limit, 500);
    assert_int_equal(d.remaining, 300);

    assert_int_equal(quota_reset(q, QUOTA_WORKFLOW, "w"), 0);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 1006, &st), 0);
    assert_int_equal(st.tokens_used, 0);
    assert_int_equal(st.tokens_limit, 500);
    assert_true(st.has_override);
    assert_false(st.has_reset_at);

    assert_int_equal(quota_unset(q, QUOTA_WORKFLOW, "w"), 0);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 1006, &st), 0);
    assert_int_equal(st.tokens_limit, 1000);
    assert_false(st.has_override);

    assert_int_equal(flush(q, &r), 2);
    assert_events(&r, EVENTS("begin", "reset workflow:w",
                             "limit workflow:w 0 0", "commit"));
    assert_int_equal(quota_count(q), 0);

    /* unknown subjects: nothing to do, nothing created */
    assert_int_equal(quota_reset(q, QUOTA_TENANT, "nobody"), 0);
    assert_int_equal(quota_unset(q, QUOTA_TENANT, "nobody"), 0);
    assert_int_equal(quota_count(q), 0);
    assert_int_equal(flush(q, &r), 0);
    assert_int_equal(r.n, 0);

    /* usage charged after a reset follows it in the flush */
    assert_int_equal(quota_set(q, QUOTA_TENANT, "t", 0), 0);
    reserve(q, NULL, "t", 5, 1005);
    assert_int_equal(quota_reset(q, QUOTA_TENANT, "t"), 0);
    reserve(q, NULL, "t", 7, 1015);
    assert_int_equal(flush(q, &r), 3);
    assert_events(&r, EVENTS("begin", "reset tenant:t", "limit tenant:t 1 0",
                             "slot tenant:t 1010000 7", "commit"));
    assert_int_equal(used(q, QUOTA_TENANT, "t", 1015), 7);
    quota_free(q);
}

static void test_dirty_flush(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct rec r = {0};

    (void)state;
    reserve(q, "a", "t", 10, 1005);
    reserve(q, "a", NULL, 5, 1015);
    assert_int_equal(quota_set(q, QUOTA_TENANT, "t", 99), 0);
    assert_int_equal(flush(q, &r), 4);
    assert_events(&r, EVENTS("begin", "slot workflow:a 1000000 10",
                             "slot workflow:a 1010000 5", "limit tenant:t 1 99",
                             "slot tenant:t 1000000 10", "commit"));
    assert_int_equal(flush(q, &r), 0);
    assert_int_equal(r.n, 0);

    /* a slot is sent with its total, once */
    reserve(q, "a", NULL, 7, 1016);
    reserve(q, "a", NULL, 1, 1017);
    assert_int_equal(flush(q, &r), 1);
    assert_events(&r, EVENTS("begin", "slot workflow:a 1010000 13", "commit"));

    /* a failed commit or callback keeps everything pending */
    reserve(q, "a", "t", 2, 1018);
    r.fail_commit = true;
    assert_int_equal(flush(q, &r), -1);
    assert_events(&r, EVENTS("begin", "slot workflow:a 1010000 15",
                             "slot tenant:t 1010000 2", "commit", "rollback"));
    r.fail_commit = false;
    r.fail_slot = 2;
    assert_int_equal(flush(q, &r), -1);
    assert_events(&r,
                  EVENTS("begin", "slot workflow:a 1010000 15", "rollback"));
    r.fail_slot = 0;
    assert_int_equal(flush(q, &r), 2);
    assert_events(&r, EVENTS("begin", "slot workflow:a 1010000 15",
                             "slot tenant:t 1010000 2", "commit"));
    quota_free(q);
}

static void test_load_and_prune(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_status st;
    struct rec r = {0};

    (void)state;
    assert_int_equal(quota_horizon_ms(q, 8000), 800000);
    assert_int_equal(quota_load_slot(q, "workflow:a", 1000000, 100, 8000), 0);
    assert_int_equal(quota_load_slot(q, "workflow:a", 500000, 50, 8000), 0);
    assert_int_equal(quota_load_slot(q, "workflow:z", 700000, 50, 8000), 0);
    assert_int_equal(quota_load_slot(q, "tenant:t", 1010000, 7, 8000), 0);
    assert_int_equal(quota_load_limit(q, "tenant:t", 300), 0);
    assert_int_equal(quota_load_slot(q, "tenant:t", 1010000, -1, 8000), -1);
    assert_int_equal(quota_count(q), 2); /* a and t; z was too old */

    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "a", 8000, &st), 0);
    assert_int_equal(st.tokens_used, 100);
    assert_true(st.reset_at_s == 1010 + W_S);
    assert_int_equal(quota_status(q, QUOTA_TENANT, "t", 8000, &st), 0);
    assert_int_equal(st.tokens_used, 7);
    assert_int_equal(st.tokens_limit, 300);
    assert_int_equal(flush(q, &r), 0); /* loading is not a change */

    /* rows of another slot size are re-bucketed and rewritten */
    assert_int_equal(quota_load_slot(q, "workflow:b", 1003000, 5, 8000), 0);
    assert_int_equal(quota_load_slot(q, "workflow:b", 1007000, 6, 8000), 0);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "b", 8000), 11);
    assert_int_equal(flush(q, &r), 2);
    assert_events(&r, EVENTS("begin", "reset workflow:b",
                             "slot workflow:b 1000000 11", "commit"));

    assert_int_equal(quota_prune(q, 8209), 0);
    assert_int_equal(quota_prune(q, 8210), 2);
    assert_int_equal(quota_count(q), 1); /* t: its slot and limit */
    assert_int_equal(quota_prune(q, 8220), 1);
    assert_int_equal(quota_count(q), 1); /* t: its limit */
    assert_int_equal(used(q, QUOTA_TENANT, "t", 8220), 0);
    quota_free(q);

    /* slots are floored, also before 1970 */
    q = quota_new(W_S, 1000, false);
    assert_int_equal(quota_horizon_ms(q, 100), -7100000);
    assert_int_equal(quota_load_slot(q, "workflow:n", -5000, 3, 100), 0);
    assert_int_equal(flush(q, &r), 2);
    assert_events(&r, EVENTS("begin", "reset workflow:n",
                             "slot workflow:n -10000 3", "commit"));
    quota_free(q);
}

/* A sink that loads what it is given into another table, as a restart
 * from the store would. */
struct copy {
    struct quota *to;
    double now_s;
};

static int copy_slot(void *arg, const char *subject, int64_t slot_start_ms,
                     int64_t tokens)
{
    struct copy *c = arg;

    return quota_load_slot(c->to, subject, slot_start_ms, tokens, c->now_s);
}

static int copy_limit(void *arg, const char *subject, bool has_limit,
                      int64_t limit)
{
    struct copy *c = arg;

    return has_limit ? quota_load_limit(c->to, subject, limit) : 0;
}

static int copy_reset(void *arg, const char *subject)
{
    (void)arg;
    (void)subject;
    return 0;
}

/* Slots of 1.2 s survive a trip through the store exactly: nothing moves,
 * nothing needs a rewrite, and every figure is the same. */
static void test_store_round_trip(void **state)
{
    const struct quota_sink sink = {
        .on_reset = copy_reset,
        .on_limit = copy_limit,
        .on_slot = copy_slot,
    };
    struct quota *a = quota_new(864, 1000, false); /* 0.01 days */
    struct quota *b = quota_new(864, 1000, false);
    struct copy c = {.to = b, .now_s = 1.7e9 + 500};
    struct quota_status sa, sb;
    struct rec r = {0};

    (void)state;
    assert_int_equal(quota_slot_ms(a), 1200);
    for (int i = 0; i < 400; i++)
        reserve(a, "w", i % 2 ? "t" : NULL, i + 1, 1.7e9 + i * 1.25);
    assert_int_equal(quota_set(a, QUOTA_TENANT, "t", 50000), 0);
    /* one slot per reservation, as they are 1.25 s apart */
    assert_int_equal(quota_flush(a, &sink, &c), 1 + 400 + 200);
    assert_int_equal(flush(b, &r), 0);
    for (int i = 0; i < 2; i++) {
        enum quota_kind kind = i ? QUOTA_TENANT : QUOTA_WORKFLOW;
        const char *id = i ? "t" : "w";

        assert_int_equal(quota_status(a, kind, id, c.now_s, &sa), 0);
        assert_int_equal(quota_status(b, kind, id, c.now_s, &sb), 0);
        assert_int_equal(sa.tokens_used, i ? 40200 : 80200);
        assert_int_equal(sa.tokens_used, sb.tokens_used);
        assert_int_equal(sa.tokens_limit, sb.tokens_limit);
        assert_true(sa.reset_at_s == sb.reset_at_s);
    }
    quota_free(a);
    quota_free(b);
}

static void test_tiny_window(void **state)
{
    double w_s = 0.0005 * 86400; /* 43.2 s */
    struct quota *q = quota_new(w_s, 100, true);
    struct quota_decision d;

    (void)state;
    assert_int_equal(quota_slot_ms(q), 1000);
    d = reserve(q, "w", NULL, 60, 100.5); /* slot [100, 101) */
    assert_int_equal(d.slot_start_ms, 100000);
    assert_true(d.reset_at_s == 101 + w_s);
    assert_float_equal(d.reset_at_s, 144.2, 1e-9);
    d = reserve(q, "w", NULL, 50, 120);
    assert_false(d.allowed);
    assert_true(d.reset_at_s == 101 + w_s);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 144.19), 60);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w", 101 + w_s), 0);
    d = reserve(q, "w", NULL, 50, 101 + w_s);
    assert_true(d.allowed);

    /* one slot leaves per second */
    reserve(q, "x", NULL, 10, 200.0);
    reserve(q, "x", NULL, 10, 201.0);
    reserve(q, "x", NULL, 10, 202.9);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "x", 243), 30);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "x", 201 + w_s), 20);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "x", 202 + w_s), 10);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "x", 203 + w_s), 0);
    quota_free(q);
}

static void test_reconfigure(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_status st;
    struct rec r = {0};

    (void)state;
    reserve(q, "w", NULL, 100, 1005);
    reserve(q, "w", NULL, 50, 1015);
    assert_int_equal(flush(q, &r), 2);

    assert_int_equal(quota_reconfigure(q, W_S, 2000, true), 0);
    assert_int_equal(flush(q, &r), 0); /* same slots: nothing moves */
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 1020, &st), 0);
    assert_int_equal(st.tokens_used, 150);
    assert_int_equal(st.tokens_limit, 2000);

    assert_int_equal(quota_reconfigure(q, 2 * W_S, 2000, true), 0);
    assert_int_equal(quota_slot_ms(q), 20000);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 1020, &st), 0);
    assert_int_equal(st.tokens_used, 150);
    assert_true(st.reset_at_s == 1020 + 2 * W_S);
    assert_int_equal(flush(q, &r), 2);
    assert_events(&r, EVENTS("begin", "reset workflow:w",
                             "slot workflow:w 1000000 150", "commit"));

    assert_int_equal(quota_reconfigure(q, 0, 2000, true), -1);
    assert_int_equal(quota_slot_ms(q), 20000);
    quota_free(q);
}

/* 100000 subjects with one slot each stay within 160 bytes a subject, as
 * counted by quota_bytes(); all is freed once the window has passed. */
static void test_memory_100k(void **state)
{
    enum { N = 100000 };
    struct quota *q = quota_new(30 * 86400.0, 1000, false);
    size_t empty = quota_bytes(q);
    struct rec r = {0};
    char id[16];

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "w%06d", i);
        reserve(q, id, NULL, 10, 1e9 + i);
    }
    assert_int_equal(quota_count(q), N);
    print_message("quota: %d subjects, %zu bytes (%.1f a subject)\n", N,
                  quota_bytes(q), (double)quota_bytes(q) / N);
    assert_true(quota_bytes(q) <= (size_t)N * 160);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "w004242", 1e9 + N), 10);

    assert_int_equal(flush(q, &r), N);
    assert_int_equal(quota_prune(q, 1e9 + N + 31 * 86400.0), N);
    assert_int_equal(quota_count(q), 0);
    assert_int_equal(quota_bytes(q), empty);
    quota_free(q);
}

/*
 * A writer that failed after the flush: each change comes back as it now
 * is in memory, and a slot that went meanwhile does not.
 */
static void test_requeue(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct rec r = {0};

    (void)state;
    reserve(q, "a", NULL, 10, 100);
    reserve(q, "a", NULL, 5, 115);
    assert_int_equal(quota_set(q, QUOTA_TENANT, "t", 50), 0);
    assert_int_equal(flush(q, &r), 3);
    assert_int_equal(flush(q, &r), 0);

    /* The writer lost all three; meanwhile slot 110 000 grew. */
    reserve(q, "a", NULL, 1, 116);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_SLOT, "workflow:a", 100000),
                     0);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_SLOT, "workflow:a", 110000),
                     0);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_LIMIT, "tenant:t", 0), 0);
    assert_int_equal(flush(q, &r), 3);
    assert_events(&r, EVENTS("begin", "slot workflow:a 100000 10",
                             "slot workflow:a 110000 6",
                             "limit tenant:t 1 50", "commit"));

    /* A slot that expired since is not written again; one that never
     * existed neither; a bad subject is refused. */
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_SLOT, "workflow:a", 100000),
                     0);
    assert_int_equal(quota_prune(q, 100 + W_S + 15), 1);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_SLOT, "workflow:a", 120000),
                     0);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_SLOT, "workflow:zz", 0), 0);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_SLOT, "bogus", 0), -1);
    assert_int_equal(flush(q, &r), 0);

    /* A reset and an unset whose subjects were freed after the flush come
     * back to carry their deletes; a reset rewrites every slot. */
    assert_int_equal(quota_reset(q, QUOTA_WORKFLOW, "a"), 0);
    assert_int_equal(quota_unset(q, QUOTA_TENANT, "t"), 0);
    assert_int_equal(flush(q, &r), 2);
    assert_int_equal(quota_count(q), 0);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_RESET, "workflow:a", 0), 0);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_LIMIT, "tenant:t", 0), 0);
    assert_int_equal(flush(q, &r), 2);
    assert_events(&r, EVENTS("begin", "reset workflow:a",
                             "limit tenant:t 0 0", "commit"));
    assert_int_equal(quota_count(q), 0);

    reserve(q, "b", NULL, 3, 200);
    reserve(q, "b", NULL, 4, 215);
    assert_int_equal(flush(q, &r), 2);
    assert_int_equal(quota_requeue(q, QUOTA_CHANGE_RESET, "workflow:b", 0), 0);
    assert_int_equal(flush(q, &r), 3);
    assert_events(&r, EVENTS("begin", "reset workflow:b",
                             "slot workflow:b 200000 3",
                             "slot workflow:b 210000 4", "commit"));
    quota_free(q);
}

/*
 * Pruning in steps, with subjects added and freed between them: every
 * expired slot goes, every live subject stays, and each sweep ends.
 */
static void test_prune_steps(void **state)
{
    enum { N = 1000 };
    struct quota *q = quota_new(W_S, 1000, false);
    struct rec r = {0};
    char id[16];
    size_t dropped = 0, steps = 0;
    bool done = false;

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "old%d", i);
        reserve(q, id, NULL, 1, 100);
    }
    assert_int_equal(flush(q, &r), N);
    while (!done) {
        dropped += quota_prune_step(q, 100 + W_S + 20, 7, &done);
        /* A new subject, and an old one freed by its reset, each step. */
        snprintf(id, sizeof(id), "new%zu", steps);
        reserve(q, id, NULL, 1, 100 + W_S + 20);
        snprintf(id, sizeof(id), "old%zu", N - 1 - steps);
        assert_int_equal(quota_reset(q, QUOTA_WORKFLOW, id), 0);
        flush(q, &r);
        steps++;
        assert_true(steps <= N);
    }
    /* Each old subject went: swept (a slot dropped) or reset first. */
    assert_true(steps >= N / 8 && steps <= N / 6);
    assert_true(dropped >= N - steps && dropped <= N);
    assert_int_equal(quota_count(q), steps);
    assert_int_equal(used(q, QUOTA_WORKFLOW, "new0", 100 + W_S + 20), 1);

    /* The next call starts a new sweep, which finds nothing to drop. */
    assert_int_equal(quota_prune_step(q, 100 + W_S + 20, 1000000, &done), 0);
    assert_true(done);
    assert_int_equal(quota_count(q), steps);
    quota_free(q);
}

/* Lookups, adds and frees while the table grows and rehashes. */
static void test_hash_growth(void **state)
{
    enum { N = 20000 };
    static int64_t want[N];
    struct quota *q = quota_new(W_S, 1000000, false);
    struct rec r = {0};
    size_t live = 0;
    char id[16];

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "g%d", i);
        reserve(q, id, NULL, i + 1, 100);
        want[i] = i + 1;
        live++;
        /* Earlier subjects are still found, mid-rehash or not. */
        for (int j = i / 2; j <= i; j += 1 + i / 7) {
            snprintf(id, sizeof(id), "g%d", j);
            assert_int_equal(used(q, QUOTA_WORKFLOW, id, 100), want[j]);
        }
        /* And some are freed (reset, then flushed). */
        if (i % 3 == 0 && want[i / 3] != 0) {
            snprintf(id, sizeof(id), "g%d", i / 3);
            assert_int_equal(quota_reset(q, QUOTA_WORKFLOW, id), 0);
            flush(q, &r);
            want[i / 3] = 0;
            live--;
        }
        assert_int_equal(quota_count(q), live);
    }
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "g%d", i);
        assert_int_equal(used(q, QUOTA_WORKFLOW, id, 100), want[i]);
    }
    quota_free(q);
}


/* ---- multi-host mode: owed slots and the fleet's usage ------------------ */

struct owed_rec {
    char ev[MAX_EVENTS][96];
    int n;
    int max_subjects;   /* refuse the subject past this many */
    int subjects;
};

static int owed_subject_cb(void *arg, const char *subject, int64_t own,
                           bool whole)
{
    struct owed_rec *r = arg;

    if (r->max_subjects > 0 && r->subjects == r->max_subjects)
        return -1;
    r->subjects++;
    if (r->n < MAX_EVENTS)
        snprintf(r->ev[r->n], sizeof(r->ev[0]), "%s own %lld%s", subject,
                 (long long)own, whole ? " whole" : "");
    r->n++;
    return 0;
}

static int owed_slot_cb(void *arg, int64_t slot_ms, int64_t tokens)
{
    struct owed_rec *r = arg;

    if (r->n < MAX_EVENTS)
        snprintf(r->ev[r->n], sizeof(r->ev[0]), "slot %lld %lld",
                 (long long)slot_ms, (long long)tokens);
    r->n++;
    return 0;
}

static const struct quota_owed_sink owed_sink = { owed_subject_cb,
                                                  owed_slot_cb };

/* Single-host mode owes nothing; multi-host mode owes what changed, as
 * absolute values, once, and again when asked. */
static void test_owed_slots(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_decision d;
    struct owed_rec r = { 0 };

    (void)state;
    assert_int_equal(quota_reserve(q, "w", NULL, 5, 100.0, &d), 0);
    assert_false(quota_owed_pending(q));
    quota_track_owed(q);
    assert_int_equal(quota_reserve(q, "w", "t", 7, 101.0, &d), 0);
    assert_int_equal(quota_reserve(q, "w", NULL, 3, 115.0, &d), 0);
    assert_true(quota_owed_pending(q));
    assert_int_equal(quota_owed_take(q, 116.0, 10, &owed_sink, &r), 2);
    assert_int_equal(r.n, 5);
    assert_string_equal(r.ev[0], "workflow:w own 15");
    assert_string_equal(r.ev[1], "slot 100000 12");  /* absolute: 5 + 7 */
    assert_string_equal(r.ev[2], "slot 110000 3");
    assert_string_equal(r.ev[3], "tenant:t own 7");
    assert_string_equal(r.ev[4], "slot 100000 7");
    assert_false(quota_owed_pending(q));
    assert_int_equal(quota_owed_take(q, 116.0, 10, &owed_sink, &r), 0);

    /* A cancel owes the slot at its new value, 0 included. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(quota_commit(q, NULL, "t", 100000, 7, 0, 117.0), 0);
    assert_int_equal(quota_owed_take(q, 117.0, 10, &owed_sink, &r), 1);
    assert_string_equal(r.ev[0], "tenant:t own 0");
    assert_string_equal(r.ev[1], "slot 100000 0");

    /* A failed write owes the subject's every slot again; a rebuild owes
     * everything. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(quota_owe_subject(q, "workflow:w"), 0);
    assert_int_equal(quota_owe_subject(q, "bogus"), -1);
    assert_int_equal(quota_owed_take(q, 117.0, 10, &owed_sink, &r), 1);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.ev[0], "workflow:w own 15 whole");
    memset(&r, 0, sizeof(r));
    quota_owe_all(q);
    r.max_subjects = 1;     /* a full batch stops before the second */
    assert_int_equal(quota_owed_take(q, 117.0, 10, &owed_sink, &r), 1);
    assert_true(quota_owed_pending(q));
    r.max_subjects = 0;
    assert_int_equal(quota_owed_take(q, 117.0, 10, &owed_sink, &r), 1);
    assert_false(quota_owed_pending(q));
    quota_free(q);
}

/* A new slot size (the fleet's window, or a reload's) moves the slots and
 * owes every subject as a whole: its write replaces what the fleet held
 * of this host's part in the old slots.  A reservation of the old size
 * still commits, into the slot that holds it now. */
static void test_owed_reslot(void **state)
{
    struct quota *q = quota_new(W_S, 1000, false);
    struct quota_decision d;
    struct quota_status st;
    struct owed_rec r = { 0 };

    (void)state;
    quota_track_owed(q);
    assert_int_equal(quota_reserve(q, "w", NULL, 5, 100.0, &d), 0);
    assert_int_equal(quota_reserve(q, "w", NULL, 7, 110.0, &d), 0);
    assert_int_equal(d.slot_start_ms, 110000);
    assert_int_equal(quota_owed_take(q, 111.0, 10, &owed_sink, &r), 1);
    assert_string_equal(r.ev[0], "workflow:w own 12");
    memset(&r, 0, sizeof(r));
    /* The same slot size: nothing moves, nothing is owed. */
    assert_int_equal(quota_reconfigure(q, W_S, 500, true), 0);
    assert_false(quota_owed_pending(q));
    assert_true(quota_hard(q));
    assert_int_equal(quota_default_limit(q), 500);
    /* Twice the window: slots of 20 s, both in the one at 100 s. */
    assert_int_equal(quota_reconfigure(q, 2 * W_S, 500, false), 0);
    assert_true(quota_window_s(q) == 2 * W_S);
    assert_false(quota_hard(q));
    assert_int_equal(quota_owed_take(q, 111.0, 10, &owed_sink, &r), 1);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.ev[0], "workflow:w own 12 whole");
    assert_string_equal(r.ev[1], "slot 100000 12");
    /* The reservation of 10 s slots commits into the 20 s one. */
    assert_true(quota_reservation_ok(q, 110000));
    assert_true(quota_reservation_ok(q, 120000));
    assert_false(quota_reservation_ok(q, 115000));
    assert_int_equal(quota_commit(q, "w", NULL, 110000, 7, 9, 112.0), 0);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 112.0, &st), 0);
    assert_int_equal(st.tokens_used, 14);
    memset(&r, 0, sizeof(r));
    assert_int_equal(quota_owed_take(q, 112.0, 10, &owed_sink, &r), 1);
    assert_string_equal(r.ev[0], "workflow:w own 14");
    assert_string_equal(r.ev[1], "slot 100000 14");
    quota_free(q);
}

/* Decisions and status count the fleet's others beside the own usage;
 * the store and the fleet are told only the own. */
static void test_others(void **state)
{
    struct quota *q = quota_new(W_S, 100, true);
    struct quota_decision d;
    struct quota_status st;
    struct owed_rec r = { 0 };

    (void)state;
    quota_track_owed(q);
    assert_int_equal(quota_reserve(q, "w", NULL, 10, 100.0, &d), 0);
    assert_int_equal(quota_set_others(q, "workflow:w", 80, 10), 0);
    assert_int_equal(quota_set_others(q, "workflow:w", -1, 0), -1);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 101.0, &st), 0);
    assert_int_equal(st.tokens_used, 90);
    assert_int_equal(st.tokens_remaining, 10);
    assert_int_equal(quota_own_used(q, "workflow:w", 101.0), 10);
    /* Hard: 90 + 11 > 100 is refused, 90 + 10 is not. */
    assert_int_equal(quota_reserve(q, "w", NULL, 11, 101.0, &d), 0);
    assert_false(d.allowed);
    assert_int_equal(d.used, 90);
    assert_int_equal(quota_reserve(q, "w", NULL, 10, 101.0, &d), 0);
    assert_true(d.allowed);
    assert_int_equal(d.remaining, 0);
    assert_int_equal(quota_owed_take(q, 101.0, 10, &owed_sink, &r), 1);
    assert_string_equal(r.ev[0], "workflow:w own 20");
    assert_string_equal(r.ev[1], "slot 100000 20");
    /* Others alone: a subject this host never used. */
    assert_int_equal(quota_set_others(q, "tenant:x", 0, 0), 0);
    assert_int_equal(quota_count(q), 1);
    assert_int_equal(quota_set_others(q, "tenant:x", 30, 0), 0);
    assert_int_equal(quota_status(q, QUOTA_TENANT, "x", 101.0, &st), 0);
    assert_int_equal(st.tokens_used, 30);
    assert_int_equal(quota_own_used(q, "tenant:x", 101.0), 0);
    /* Pruning frees it: nothing of its own. */
    quota_prune(q, 101.0);
    assert_int_equal(quota_count(q), 1);
    quota_free(q);
}

/* In multi-host mode a reset zeroes the own slots and owes them: the
 * fleet learns this host's share is 0; the store deletes the rows. */
static void test_owed_reset(void **state)
{
    struct quota *q = quota_new(W_S, 100, false);
    struct quota_decision d;
    struct quota_status st;
    struct owed_rec r = { 0 };
    struct rec sr = { 0 };

    (void)state;
    quota_track_owed(q);
    assert_int_equal(quota_reserve(q, "w", NULL, 10, 100.0, &d), 0);
    assert_int_equal(quota_set_others(q, "workflow:w", 50, 10), 0);
    assert_int_equal(quota_flush(q, &rec_sink, &sr), 1);
    assert_int_equal(quota_owed_take(q, 100.0, 10, &owed_sink, &r), 1);
    memset(&r, 0, sizeof(r));
    memset(&sr, 0, sizeof(sr));
    assert_int_equal(quota_reset(q, QUOTA_WORKFLOW, "w"), 0);
    assert_int_equal(quota_status(q, QUOTA_WORKFLOW, "w", 101.0, &st), 0);
    assert_int_equal(st.tokens_used, 0);
    assert_false(st.has_reset_at);
    assert_int_equal(quota_owed_take(q, 101.0, 10, &owed_sink, &r), 1);
    assert_string_equal(r.ev[0], "workflow:w own 0");
    assert_string_equal(r.ev[1], "slot 100000 0");
    assert_int_equal(quota_flush(q, &rec_sink, &sr), 2);
    assert_string_equal(sr.ev[1], "reset workflow:w");
    quota_free(q);
}

/* The share of the headroom: hosts keeping to theirs cannot overshoot. */
static void test_share(void **state)
{
    struct quota *q = quota_new(W_S, 100, true);
    struct quota_decision d;

    (void)state;
    quota_track_owed(q);
    /* Never read: limit / hosts = 33 of 100. */
    assert_int_equal(quota_reserve_share(q, "w", NULL, 34, 3, 100.0, &d), 0);
    assert_false(d.allowed);
    assert_int_equal(quota_reserve_share(q, "w", NULL, 33, 3, 100.0, &d), 0);
    assert_true(d.allowed);
    assert_int_equal(quota_reserve_share(q, "w", NULL, 1, 3, 100.0, &d), 0);
    assert_false(d.allowed);
    assert_int_equal(quota_reserve_share(q, "w", NULL, 1, 0, 100.0, &d), -1);
    /* Read: others 40 and own 33 then; headroom 27, a third is 9. */
    assert_int_equal(quota_set_others(q, "workflow:w", 40, 33), 0);
    assert_int_equal(quota_reserve_share(q, "w", "t", 9, 3, 101.0, &d), 0);
    assert_true(d.allowed);
    assert_int_equal(quota_reserve_share(q, "w", NULL, 1, 3, 101.0, &d), 0);
    assert_false(d.allowed);
    assert_string_equal(d.subject, "workflow:w");
    assert_int_equal(d.used, 82);
    /* The tenant, never read: 9 of its 33. */
    assert_int_equal(quota_reserve_share(q, NULL, "t", 24, 3, 101.0, &d), 0);
    assert_true(d.allowed);
    assert_int_equal(quota_reserve_share(q, NULL, "t", 1, 3, 101.0, &d), 0);
    assert_false(d.allowed);
    /* Headroom used up elsewhere: nothing. */
    assert_int_equal(quota_set_others(q, "workflow:w", 70, 42), 0);
    assert_int_equal(quota_reserve_share(q, "w", NULL, 1, 1, 101.0, &d), 0);
    assert_false(d.allowed);
    quota_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_validation),
        cmocka_unit_test(test_top),
        cmocka_unit_test(test_soft_mode),
        cmocka_unit_test(test_hard_mode),
        cmocka_unit_test(test_workflow_tenant_atomic),
        cmocka_unit_test(test_window_rotation),
        cmocka_unit_test(test_reconcile),
        cmocka_unit_test(test_overrides_and_reset),
        cmocka_unit_test(test_dirty_flush),
        cmocka_unit_test(test_load_and_prune),
        cmocka_unit_test(test_store_round_trip),
        cmocka_unit_test(test_tiny_window),
        cmocka_unit_test(test_reconfigure),
        cmocka_unit_test(test_memory_100k),
        cmocka_unit_test(test_requeue),
        cmocka_unit_test(test_prune_steps),
        cmocka_unit_test(test_hash_growth),
        cmocka_unit_test(test_owed_slots),
        cmocka_unit_test(test_owed_reslot),
        cmocka_unit_test(test_others),
        cmocka_unit_test(test_owed_reset),
        cmocka_unit_test(test_share),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
