/*
 * test_router.c — unit tests for daemon/router.c with a fake clock.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "router.h"

#define COOLDOWN_S 60.0

#define assert_near(a, b)                                               \
    do {                                                                \
        double a_ = (a), b_ = (b);                                      \
        if (!(fabs(a_ - b_) <= 1e-9)) {                                 \
            print_error("%.17g != %.17g\n", a_, b_);                    \
            fail();                                                     \
        }                                                               \
    } while (0)

/* Providers a, b, c (in that order) with the given costs; c only if n=3. */
static struct router *
make(enum router_policy policy, size_t n, double cost_a, double cost_b,
     double cost_c)
{
    const struct router_provider_conf confs[] = {
        { "c", 100, cost_c },
        { "b", 100, cost_b },
        { "a", 100, cost_a },
    };
    struct router *r = router_new(&confs[3 - n], n, policy, COOLDOWN_S);

    assert_non_null(r);
    return r;
}

static int
idx(const struct router *r, const char *name)
{
    int i = router_find(r, name, strlen(name));

    assert_true(i >= 0);
    return i;
}

/* Select k times at now_s; the first letters of the chosen names. */
static const char *
sequence(struct router *r, int k, const bool *excluded, double now_s)
{
    static char buf[64];
    int i;

    assert_true(k < (int)sizeof(buf));
    for (i = 0; i < k; i++) {
        bool all_degraded = true;
        int j = router_select(r, -1, excluded, now_s, &all_degraded);

        assert_true(j >= 0);
        assert_false(all_degraded);
        buf[i] = router_name(r, j)[0];
    }
    buf[k] = '\0';
    return buf;
}

static void
fault(struct router *r, const char *name, double now_s)
{
    router_report(r, idx(r, name), ROUTER_OUTCOME_SERVER_ERROR, 5, 0, now_s,
                  now_s);
}

static void
ok(struct router *r, const char *name, double latency_ms, double now_s)
{
    router_report(r, idx(r, name), ROUTER_OUTCOME_OK, latency_ms, 0, now_s,
                  now_s);
}

static double
cooldown_left(const struct router *r, const char *name, double now_s)
{
    struct router_status st;

    router_status(r, idx(r, name), now_s, &st);
    assert_true(st.healthy == (st.cooldown_remaining_s == 0));
    return st.cooldown_remaining_s;
}

static void
test_sorted_and_find(void **state)
{
    const struct router_provider_conf confs[] = {
        { "zeta", 10, 1 }, { "openai", 100, 1 }, { "anthropic", 100, 2 },
    };
    const struct router_provider_conf dup[] = { { "x", 1, 1 }, { "x", 2, 1 } };
    const struct router_provider_conf zero[] = { { "x", 1, 0 } };
    const struct router_provider_conf empty[] = { { "", 1, 1 } };
    struct router *r = router_new(confs, 3, ROUTER_POLICY_PRIMARY, 60);

    (void)state;
    assert_non_null(r);
    assert_int_equal(router_count(r), 3);
    assert_string_equal(router_name(r, 0), "zeta");
    assert_string_equal(router_name(r, 1), "anthropic");
    assert_string_equal(router_name(r, 2), "openai");
    assert_int_equal(router_find(r, "openai-extra", 6), 2);
    assert_int_equal(router_find(r, "openai-extra", 7), -1);
    assert_int_equal(router_find(r, "open", 4), -1);
    assert_int_equal(router_find(r, "", 0), -1);
    router_free(r);

    assert_null(router_new(dup, 2, ROUTER_POLICY_PRIMARY, 60));
    assert_null(router_new(zero, 1, ROUTER_POLICY_PRIMARY, 60));
    assert_null(router_new(empty, 1, ROUTER_POLICY_PRIMARY, 60));
    assert_null(router_new(confs, 3, ROUTER_POLICY_PRIMARY, -1));
}

static void
test_primary(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 3, 1, 1, 1);
    bool excluded[3] = { false, false, false };
    bool all_degraded = true;

    (void)state;
    assert_string_equal(sequence(r, 4, NULL, 0), "aaaa");
    assert_int_equal(router_select(r, idx(r, "c"), NULL, 0, &all_degraded),
                     idx(r, "c"));
    assert_false(all_degraded);

    /* Preferred but degraded, or excluded: first by priority instead. */
    fault(r, "c", 0);
    assert_int_equal(router_select(r, idx(r, "c"), NULL, 1, NULL),
                     idx(r, "a"));
    excluded[idx(r, "b")] = true;
    assert_int_equal(router_select(r, idx(r, "b"), excluded, 1, NULL),
                     idx(r, "a"));
    excluded[idx(r, "a")] = true;
    assert_int_equal(router_select(r, -1, excluded, 1, &all_degraded),
                     idx(r, "c"));
    assert_true(all_degraded);
    router_free(r);
}

static void
test_cost_weighted_smooth_3_to_1(void **state)
{
    struct router *r = make(ROUTER_POLICY_COST_WEIGHTED, 2, 1, 3, 0);

    (void)state;
    assert_string_equal(sequence(r, 12, NULL, 0), "aabaaabaaaba");
    /* The preferred provider is ignored by weighted policies. */
    assert_int_equal(router_select(r, idx(r, "b"), NULL, 0, NULL),
                     idx(r, "a"));
    router_free(r);
}

static void
test_cost_weighted_nginx_5_1_1(void **state)
{
    struct router *r = make(ROUTER_POLICY_COST_WEIGHTED, 3, 1, 5, 5);

    (void)state;
    assert_string_equal(sequence(r, 14, NULL, 0), "aabacaaaabacaa");
    router_free(r);
}

static void
test_latency_weighted(void **state)
{
    struct router *r = make(ROUTER_POLICY_LATENCY_WEIGHTED, 2, 1, 1, 0);
    struct router_status st;

    (void)state;
    /* No samples at all: equal weights. */
    assert_string_equal(sequence(r, 4, NULL, 0), "abab");

    /* b has no sample yet: it weighs as the mean of the known, a's 100. */
    ok(r, "a", 100, 1);
    assert_string_equal(sequence(r, 4, NULL, 1), "abab");

    ok(r, "b", 300, 2);
    assert_string_equal(sequence(r, 8, NULL, 2), "aabaaaba");

    /* a slows down: EWMA 100 + 0.2 * (600 - 100) = 200; 1/200 : 1/300. */
    ok(r, "a", 600, 3);
    router_status(r, idx(r, "a"), 3, &st);
    assert_near(st.latency_ewma_ms, 200);
    assert_int_equal(st.latency_samples, 2);
    assert_string_equal(sequence(r, 10, NULL, 3), "ababaababa");
    router_free(r);
}

static void
test_latency_ewma(void **state)
{
    struct router *r = make(ROUTER_POLICY_LATENCY_WEIGHTED, 1, 1, 0, 0);
    struct router_status st;
    int a = idx(r, "a");

    (void)state;
    router_status(r, a, 0, &st);
    assert_int_equal(st.latency_samples, 0);
    assert_near(st.latency_ewma_ms, 0);

    ok(r, "a", 1000, 1);
    ok(r, "a", 0, 2);                               /* 1000 * 0.8 */
    ok(r, "a", -1, 3);                              /* not measured */
    ok(r, "a", NAN, 3);
    router_report(r, a, ROUTER_OUTCOME_TIMEOUT, 30000, 0, 4, 4);
    router_report(r, a, ROUTER_OUTCOME_CLIENT_ERROR, 5, 0, 5, 5);
    router_status(r, a, 5, &st);
    assert_int_equal(st.latency_samples, 2);
    assert_near(st.latency_ewma_ms, 800);
    router_free(r);
}

static void
test_cooldown_start_and_expiry(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 2, 1, 1, 0);

    (void)state;
    assert_near(cooldown_left(r, "a", 100), 0);
    fault(r, "a", 100);
    assert_false(router_is_healthy(r, idx(r, "a"), 100));
    assert_near(cooldown_left(r, "a", 100), 60);
    assert_near(cooldown_left(r, "a", 130), 30);
    assert_string_equal(sequence(r, 2, NULL, 159.5), "bb");
    assert_true(router_is_healthy(r, idx(r, "a"), 160));
    assert_near(cooldown_left(r, "a", 160), 0);
    assert_string_equal(sequence(r, 2, NULL, 160), "aa");
    router_free(r);
}

static void
test_cooldown_extension(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 1, 1, 0, 0);
    int a = idx(r, "a");

    (void)state;
    fault(r, "a", 100);
    router_report(r, a, ROUTER_OUTCOME_TIMEOUT, -1, 0, 130, 130);
    assert_near(cooldown_left(r, "a", 130), 60);        /* until 190 */
    router_report(r, a, ROUTER_OUTCOME_RATE_LIMITED, -1, 300, 140, 140);
    assert_near(cooldown_left(r, "a", 140), 300);       /* until 440 */
    fault(r, "a", 150);                                 /* 210 < 440 */
    assert_near(cooldown_left(r, "a", 150), 290);
    assert_false(router_is_healthy(r, a, 439.9));
    assert_true(router_is_healthy(r, a, 440));
    router_free(r);
}

static void
test_retry_after(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 3, 1, 1, 1);

    (void)state;
    router_report(r, idx(r, "a"), ROUTER_OUTCOME_RATE_LIMITED, 5, 120, 0, 0);
    router_report(r, idx(r, "b"), ROUTER_OUTCOME_RATE_LIMITED, 5, 5, 0, 0);
    router_report(r, idx(r, "c"), ROUTER_OUTCOME_RATE_LIMITED, 5, INFINITY,
                  0, 0);
    assert_near(cooldown_left(r, "a", 0), 120);
    assert_near(cooldown_left(r, "b", 0), 60);
    assert_near(cooldown_left(r, "c", 0), 60);
    router_free(r);
}

/* Status says which fault last extended a cooldown, when, and its
 * Retry-After; a reload carries them over. */
static void
test_cooldown_cause(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 2, 1, 1, 0), *next;
    struct router_status st;

    (void)state;
    router_report(r, idx(r, "a"), ROUTER_OUTCOME_RATE_LIMITED, 5, 90, 0, 10);
    router_report(r, idx(r, "a"), ROUTER_OUTCOME_SERVER_ERROR, 5, 0, 0, 12);
    router_status(r, idx(r, "a"), 13, &st);
    assert_false(st.healthy);
    assert_int_equal(st.cause, ROUTER_OUTCOME_SERVER_ERROR);
    assert_near(st.fault_s, 12);
    assert_near(st.retry_after_s, 0);
    router_report(r, idx(r, "b"), ROUTER_OUTCOME_TIMEOUT, 5, 30, 0, 20);
    next = make(ROUTER_POLICY_PRIMARY, 2, 1, 1, 0);
    router_copy_state(next, r);
    router_status(next, idx(next, "b"), 21, &st);
    assert_int_equal(st.cause, ROUTER_OUTCOME_TIMEOUT);
    assert_near(st.fault_s, 20);
    assert_near(st.retry_after_s, 30);
    router_free(next);
    router_free(r);
}

static void
test_exclusion_keeps_weights(void **state)
{
    struct router *r = make(ROUTER_POLICY_COST_WEIGHTED, 2, 1, 3, 0);
    bool excluded[2] = { false, false };

    (void)state;
    assert_string_equal(sequence(r, 2, NULL, 0), "aa");
    excluded[idx(r, "a")] = true;
    assert_string_equal(sequence(r, 3, excluded, 0), "bbb");
    /* Excluded or not, the cycle resumes where it stopped. */
    assert_string_equal(sequence(r, 6, NULL, 0), "baaaba");
    router_free(r);
}

static void
test_all_degraded_fallback(void **state)
{
    enum router_policy policies[] = {
        ROUTER_POLICY_PRIMARY, ROUTER_POLICY_COST_WEIGHTED,
        ROUTER_POLICY_LATENCY_WEIGHTED,
    };
    size_t i;

    (void)state;
    for (i = 0; i < 3; i++) {
        struct router *r = make(policies[i], 3, 1, 1, 1);
        bool excluded[3] = { false, false, false };
        bool all_degraded = false;

        fault(r, "a", 10);                          /* until 70 */
        fault(r, "b", 0);                           /* until 60 */
        router_report(r, idx(r, "c"), ROUTER_OUTCOME_RATE_LIMITED, -1, 90,
                      5, 5);                        /* until 95 */
        assert_int_equal(router_select(r, idx(r, "a"), NULL, 20,
                                       &all_degraded), idx(r, "b"));
        assert_true(all_degraded);
        excluded[idx(r, "b")] = true;
        assert_int_equal(router_select(r, -1, excluded, 20, &all_degraded),
                         idx(r, "a"));
        assert_true(all_degraded);
        /* Once b recovers it is an ordinary choice again. */
        assert_int_equal(router_select(r, -1, NULL, 60, &all_degraded),
                         idx(r, "b"));
        assert_false(all_degraded);
        router_free(r);
    }
}

static void
test_ok_after_fault_recovers(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 1, 1, 0, 0);
    int a = idx(r, "a");

    (void)state;
    /* An attempt in flight when the fault was reported keeps the cooldown. */
    fault(r, "a", 10);
    router_report(r, a, ROUTER_OUTCOME_OK, 500, 0, 9, 11);
    assert_near(cooldown_left(r, "a", 11), 59);
    /* An attempt routed to it after the fault (the fallback) clears it. */
    router_report(r, a, ROUTER_OUTCOME_OK, 500, 0, 12, 13);
    assert_true(router_is_healthy(r, a, 13));
    fault(r, "a", 14);
    assert_near(cooldown_left(r, "a", 14), 60);
    router_free(r);
}

static void
test_client_error_does_not_degrade(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 2, 1, 1, 0);

    (void)state;
    router_report(r, idx(r, "a"), ROUTER_OUTCOME_CLIENT_ERROR, 5, 100, 0, 0);
    assert_true(router_is_healthy(r, idx(r, "a"), 0));
    assert_string_equal(sequence(r, 2, NULL, 0), "aa");
    router_free(r);
}

static void
test_all_excluded(void **state)
{
    enum router_policy policies[] = {
        ROUTER_POLICY_PRIMARY, ROUTER_POLICY_COST_WEIGHTED,
        ROUTER_POLICY_LATENCY_WEIGHTED,
    };
    bool excluded[2] = { true, true };
    struct router *r;
    size_t i;

    (void)state;
    for (i = 0; i < 3; i++) {
        bool all_degraded = true;

        r = make(policies[i], 2, 1, 1, 0);
        fault(r, "a", 0);
        assert_int_equal(router_select(r, 0, excluded, 1, &all_degraded), -1);
        assert_false(all_degraded);
        router_free(r);
    }
    r = router_new(NULL, 0, ROUTER_POLICY_PRIMARY, COOLDOWN_S);
    assert_non_null(r);
    assert_int_equal(router_select(r, -1, NULL, 0, NULL), -1);
    router_free(r);
}

static void
test_copy_state(void **state)
{
    const struct router_provider_conf next[] = {
        { "c", 1, 1 }, { "a", 2, 7 }, { "b", 3, 1 },
    };
    struct router *old = make(ROUTER_POLICY_PRIMARY, 2, 1, 1, 0);
    struct router *r;
    struct router_status st;

    (void)state;
    fault(old, "a", 0);
    ok(old, "b", 250, 0);
    r = router_new(next, 3, ROUTER_POLICY_LATENCY_WEIGHTED, 30);
    assert_non_null(r);
    router_copy_state(r, old);
    router_free(old);

    router_status(r, idx(r, "a"), 10, &st);
    assert_false(st.healthy);
    assert_near(st.cooldown_remaining_s, 50);
    assert_near(st.cost_per_1k_tokens, 7);
    router_status(r, idx(r, "b"), 10, &st);
    assert_true(st.healthy);
    assert_int_equal(st.latency_samples, 1);
    assert_near(st.latency_ewma_ms, 250);
    router_status(r, idx(r, "c"), 10, &st);
    assert_true(st.healthy);
    assert_int_equal(st.latency_samples, 0);
    assert_int_equal(router_get_policy(r), ROUTER_POLICY_LATENCY_WEIGHTED);
    assert_near(router_get_cooldown_s(r), 30);
    router_free(r);
}

/* A cooldown learned from another host: the later end wins, never the
 * shorter; the status says it is remote and why. */
static void
test_remote_cooldown_later_wins(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 2, 1, 1, 0);
    int a = idx(r, "a");
    struct router_status st;

    (void)state;
    assert_true(router_remote_cooldown(r, a, 40, ROUTER_OUTCOME_RATE_LIMITED,
                                       30, 9, 10));
    assert_false(router_is_healthy(r, a, 39));
    assert_int_equal(router_select(r, -1, NULL, 20, NULL), idx(r, "b"));
    router_status(r, a, 20, &st);
    assert_true(st.remote);
    assert_int_equal(st.cause, ROUTER_OUTCOME_RATE_LIMITED);
    assert_near(st.retry_after_s, 30);
    assert_near(st.fault_s, 9);
    /* A shorter remote one changes nothing but the fault's time. */
    assert_false(router_remote_cooldown(r, a, 30, ROUTER_OUTCOME_TIMEOUT, 0,
                                        21, 21));
    assert_near(cooldown_left(r, "a", 21), 19);
    router_status(r, a, 21, &st);
    assert_int_equal(st.cause, ROUTER_OUTCOME_RATE_LIMITED);
    assert_near(st.fault_s, 21);
    /* A local fault that ends later takes over, and is local. */
    fault(r, "a", 22);      /* 22 + 60 = 82: later, and its own */
    router_status(r, a, 22, &st);
    assert_false(st.remote);
    assert_near(st.cooldown_remaining_s, 60);
    /* A remote one shorter than the local one never shortens it. */
    assert_false(router_remote_cooldown(r, a, 50, ROUTER_OUTCOME_RATE_LIMITED,
                                        0, 23, 23));
    assert_near(cooldown_left(r, "a", 23), 59);
    /* Not faults, ends in the past, non-finite times: nothing. */
    assert_false(router_remote_cooldown(r, idx(r, "b"), 90,
                                        ROUTER_OUTCOME_OK, 0, 23, 23));
    assert_false(router_remote_cooldown(r, idx(r, "b"), 90,
                                        ROUTER_OUTCOME_CLIENT_ERROR, 0, 23,
                                        23));
    assert_false(router_remote_cooldown(r, idx(r, "b"), 20,
                                        ROUTER_OUTCOME_TIMEOUT, 0, 19, 23));
    assert_false(router_remote_cooldown(r, idx(r, "b"), NAN,
                                        ROUTER_OUTCOME_TIMEOUT, 0, 19, 23));
    assert_true(router_is_healthy(r, idx(r, "b"), 23));
    router_free(r);
}

/* A local fault whose cooldown ends no later than another host's leaves
 * that one in force, and the status saying so; its time still counts. */
static void
test_local_fault_under_remote(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 1, 1, 0, 0);
    int a = idx(r, "a");
    struct router_status st;

    (void)state;
    assert_true(router_remote_cooldown(r, a, 200, ROUTER_OUTCOME_RATE_LIMITED,
                                       190, 10, 10));
    fault(r, "a", 20);                  /* 20 + 60 = 80 < 200 */
    router_status(r, a, 20, &st);
    assert_true(st.remote);
    assert_int_equal(st.cause, ROUTER_OUTCOME_RATE_LIMITED);
    assert_near(st.retry_after_s, 190);
    assert_near(st.cooldown_remaining_s, 180);
    /* An ok in flight before the local fault does not clear it. */
    router_report(r, a, ROUTER_OUTCOME_OK, 5, 0, 15, 21);
    assert_false(router_is_healthy(r, a, 21));
    router_report(r, a, ROUTER_OUTCOME_OK, 5, 0, 20, 22);
    assert_true(router_is_healthy(r, a, 22));
    /* A local fault after the remote one ended is local again. */
    fault(r, "a", 23);
    router_status(r, a, 23, &st);
    assert_false(st.remote);
    assert_int_equal(st.cause, ROUTER_OUTCOME_SERVER_ERROR);
    router_free(r);
}

/* A fault time from another host's clock is never taken as later than
 * now: an ok routed here just after still clears. */
static void
test_remote_fault_time_capped(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 1, 1, 0, 0);
    int a = idx(r, "a");

    (void)state;
    assert_true(router_remote_cooldown(r, a, 70, ROUTER_OUTCOME_SERVER_ERROR,
                                       0, 10.5, 10));
    router_report(r, a, ROUTER_OUTCOME_OK, 5, 0, 10.2, 11);
    assert_true(router_is_healthy(r, a, 11));
    router_free(r);
}

/* A success on another host clears the cooldown, unless a fault came after
 * its attempt started; it takes no latency sample. */
static void
test_remote_clear(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 1, 1, 0, 0);
    int a = idx(r, "a");
    struct router_status st;

    (void)state;
    assert_false(router_remote_clear(r, a, 5, 5));      /* healthy */
    fault(r, "a", 10);
    assert_false(router_remote_clear(r, a, 9, 11));     /* in flight */
    assert_near(cooldown_left(r, "a", 11), 59);
    assert_true(router_remote_clear(r, a, 10, 12));
    assert_true(router_is_healthy(r, a, 12));
    router_status(r, a, 12, &st);
    assert_int_equal(st.latency_samples, 0);
    assert_false(st.remote);
    /* A remote cooldown is cleared the same way. */
    assert_true(router_remote_cooldown(r, a, 50, ROUTER_OUTCOME_RATE_LIMITED,
                                       0, 13, 13));
    assert_false(router_remote_clear(r, a, 12.5, 14));
    assert_true(router_remote_clear(r, a, 13.5, 14));
    assert_true(router_is_healthy(r, a, 14));
    assert_false(router_remote_clear(r, a, NAN, 14));
    router_free(r);
}

/* A reload keeps where a cooldown came from. */
static void
test_copy_state_remote(void **state)
{
    struct router *old = make(ROUTER_POLICY_PRIMARY, 1, 1, 0, 0);
    struct router *r = make(ROUTER_POLICY_PRIMARY, 1, 1, 0, 0);
    struct router_status st;

    (void)state;
    router_remote_cooldown(old, 0, 30, ROUTER_OUTCOME_TIMEOUT, 0, 1, 1);
    router_copy_state(r, old);
    router_status(r, 0, 2, &st);
    assert_true(st.remote);
    assert_near(st.cooldown_remaining_s, 28);
    router_free(old);
    router_free(r);
}

static void
test_names(void **state)
{
    enum router_policy p = ROUTER_POLICY_PRIMARY;
    enum router_outcome o = ROUTER_OUTCOME_OK;

    (void)state;
    assert_int_equal(router_policy_parse("cost_weighted!", 13, &p), 0);
    assert_int_equal(p, ROUTER_POLICY_COST_WEIGHTED);
    assert_int_equal(router_policy_parse("Primary", 7, &p), -1);
    assert_string_equal(router_policy_name(ROUTER_POLICY_LATENCY_WEIGHTED),
                        "latency_weighted");
    assert_int_equal(router_outcome_parse("client_error", 12, &o), 0);
    assert_int_equal(o, ROUTER_OUTCOME_CLIENT_ERROR);
    assert_int_equal(router_outcome_parse("time", 4, &o), -1);
    assert_string_equal(router_outcome_name(ROUTER_OUTCOME_RATE_LIMITED),
                        "rate_limited");
}

/* A held provider (its holder in cooldown) is no candidate, and in the
 * all-degraded fallback it counts with the later of both ends. */
static void
test_held(void **state)
{
    struct router *r = make(ROUTER_POLICY_PRIMARY, 3, 1, 1, 1);
    double held[3] = { -INFINITY, -INFINITY, -INFINITY };
    bool deg;

    held[idx(r, "a")] = 30;
    assert_int_equal(router_select_held(r, -1, NULL, held, 0, &deg),
                     idx(r, "b"));
    assert_false(deg);
    /* Its own health is untouched: without the holder, a is first. */
    assert_int_equal(router_select(r, -1, NULL, 0, &deg), idx(r, "a"));
    assert_true(router_is_healthy(r, idx(r, "a"), 0));
    /* The hold ends: a again. */
    assert_int_equal(router_select_held(r, -1, NULL, held, 30, &deg),
                     idx(r, "a"));
    /* Everything held or degraded: the earliest end, counting the hold. */
    router_report(r, idx(r, "a"), ROUTER_OUTCOME_SERVER_ERROR, -1, 0, 0, 0);
    held[idx(r, "b")] = 100;
    held[idx(r, "c")] = 80;
    /* a: own 60, held 30 -> 60; b: 100; c: 80 */
    assert_int_equal(router_select_held(r, -1, NULL, held, 1, &deg),
                     idx(r, "a"));
    assert_true(deg);
    held[idx(r, "a")] = 90;     /* now a ends at 90: c first */
    assert_int_equal(router_select_held(r, -1, NULL, held, 1, &deg),
                     idx(r, "c"));
    assert_true(deg);
    router_free(r);

    /* Weighted policies skip held ones too. */
    r = make(ROUTER_POLICY_COST_WEIGHTED, 2, 1, 1, 0);
    double h2[2] = { -INFINITY, -INFINITY };
    h2[idx(r, "a")] = 10;
    for (int k = 0; k < 4; k++)
        assert_int_equal(router_select_held(r, -1, NULL, h2, 0, &deg),
                         idx(r, "b"));
    router_free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sorted_and_find),
        cmocka_unit_test(test_primary),
        cmocka_unit_test(test_cost_weighted_smooth_3_to_1),
        cmocka_unit_test(test_cost_weighted_nginx_5_1_1),
        cmocka_unit_test(test_latency_weighted),
        cmocka_unit_test(test_latency_ewma),
        cmocka_unit_test(test_cooldown_start_and_expiry),
        cmocka_unit_test(test_cooldown_extension),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_cooldown_cause),
        cmocka_unit_test(test_exclusion_keeps_weights),
        cmocka_unit_test(test_all_degraded_fallback),
        cmocka_unit_test(test_ok_after_fault_recovers),
        cmocka_unit_test(test_client_error_does_not_degrade),
        cmocka_unit_test(test_all_excluded),
        cmocka_unit_test(test_copy_state),
        cmocka_unit_test(test_remote_cooldown_later_wins),
        cmocka_unit_test(test_remote_fault_time_capped),
        cmocka_unit_test(test_local_fault_under_remote),
        cmocka_unit_test(test_remote_clear),
        cmocka_unit_test(test_copy_state_remote),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_held),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
