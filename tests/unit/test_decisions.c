/*
 * test_decisions.c - unit tests for daemon/decisions.c: the ring of the
 * last permit decisions (eviction, sequence numbers, lookups, reports).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "decisions.h"

/* A granted decision of permit_id on provider "a" (chosen) and "b" (in
 * cooldown until t + 30). */
static uint64_t
add_granted(struct decisions *d, uint64_t permit_id, const char *call_id,
            double t)
{
    struct decision_draft dr;

    memset(&dr, 0, sizeof(dr));
    dr.time = t;
    dr.permit_id = permit_id;
    dr.tokens_estimate = 100;
    dr.routed = true;
    dr.nquota = 1;
    dr.quota[0] = (struct decision_quota){ false, DECISION_QUOTA_OK, 150,
                                           1000 };
    dr.nproviders = 2;
    snprintf(dr.providers[0].name, sizeof(dr.providers[0].name), "a");
    dr.providers[0].p.why = DECISION_CHOSEN;
    snprintf(dr.providers[1].name, sizeof(dr.providers[1].name), "b");
    dr.providers[1].p.why = DECISION_COOLDOWN;
    dr.providers[1].p.degraded = true;
    dr.providers[1].p.cause = DECISION_RATE_LIMITED;
    dr.providers[1].p.cooldown_until = t + 30;
    dr.providers[1].p.retry_after_s = 30;
    return decisions_add(d, &dr, call_id, "wf", NULL);
}

static void
test_add_and_get(void **state)
{
    struct decisions *d = decisions_new(4);
    struct decision *dc;
    uint64_t seq;

    (void)state;
    assert_non_null(d);
    seq = add_granted(d, 7, "call-1", 1000);
    assert_int_equal(seq, 1);
    assert_int_equal(decisions_count(d), 1);
    dc = decisions_get(d, seq);
    assert_non_null(dc);
    assert_int_equal(dc->seq, 1);
    assert_int_equal(dc->permit_id, 7);
    assert_string_equal(dc->call_id, "call-1");
    assert_string_equal(dc->workflow, "wf");
    assert_string_equal(dc->tenant, "");        /* NULL is "" */
    assert_string_equal(dc->error, "");
    assert_int_equal(dc->outcome, DECISION_PENDING);
    assert_int_equal(dc->nproviders, 2);
    assert_string_equal(dc->providers[0].name, "a");
    assert_int_equal(dc->providers[0].why, DECISION_CHOSEN);
    assert_string_equal(dc->providers[1].name, "b");
    assert_int_equal(dc->providers[1].why, DECISION_COOLDOWN);
    assert_true(dc->providers[1].cooldown_until == 1030);
    assert_int_equal(dc->quota[0].used, 150);
    assert_int_equal(dc->tokens_used, -1);
    assert_null(decisions_get(d, 0));
    assert_null(decisions_get(d, 2));           /* not added yet */
    decisions_free(d);
}

/* The oldest goes when the ring is full; its seq is never reused and a
 * lookup of it says it is gone. */
static void
test_eviction(void **state)
{
    struct decisions *d = decisions_new(3);
    const struct decision *out[8];
    size_t total;

    (void)state;
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(add_granted(d, 100 + i, "c", (double)i), i);
    assert_int_equal(decisions_count(d), 3);
    assert_null(decisions_get(d, 1));
    assert_null(decisions_get(d, 2));
    assert_int_equal(decisions_get(d, 3)->permit_id, 103);
    assert_int_equal(decisions_get(d, 5)->permit_id, 105);
    assert_null(decisions_get(d, 6));
    assert_int_equal(decisions_find_permit(d, 101, out, 8, &total), 0);
    assert_int_equal(total, 0);
    /* A report for an evicted decision touches nothing. */
    decisions_report(d, 1, DECISION_OK, 10, 5, 0);
    assert_int_equal(decisions_find_call(d, "c", out, 8, &total), 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(out[i]->outcome, DECISION_PENDING);
    decisions_free(d);
}

/* Lookups: by permit id, by call id, oldest first, the newest max. */
static void
test_lookups(void **state)
{
    struct decisions *d = decisions_new(10);
    const struct decision *out[8];
    struct decision_draft dr;
    size_t total;

    (void)state;
    add_granted(d, 1, "x", 1);
    add_granted(d, 2, "y", 2);
    add_granted(d, 3, "x", 3);
    memset(&dr, 0, sizeof(dr));
    dr.error_code = 6;
    snprintf(dr.error, sizeof(dr.error), "workflow:wf would exceed");
    assert_int_equal(decisions_add(d, &dr, "x", "wf", "acme"), 4);
    add_granted(d, 4, "z", 5);

    assert_int_equal(decisions_find_call(d, "x", out, 8, &total), 3);
    assert_int_equal(total, 3);
    assert_int_equal(out[0]->permit_id, 1);
    assert_int_equal(out[1]->permit_id, 3);
    assert_int_equal(out[2]->permit_id, 0);     /* refused: no permit */
    assert_int_equal(out[2]->outcome, DECISION_REFUSED);
    assert_string_equal(out[2]->error, "workflow:wf would exceed");
    assert_string_equal(out[2]->tenant, "acme");
    assert_int_equal(out[2]->nproviders, 0);
    assert_false(out[2]->routed);

    /* At most max: the newest, still oldest first. */
    assert_int_equal(decisions_find_call(d, "x", out, 2, &total), 2);
    assert_int_equal(total, 3);
    assert_int_equal(out[0]->seq, 3);
    assert_int_equal(out[1]->seq, 4);

    assert_int_equal(decisions_find_permit(d, 4, out, 8, &total), 1);
    assert_string_equal(out[0]->call_id, "z");
    /* Permit id 0 and call id "" name nothing. */
    assert_int_equal(decisions_find_permit(d, 0, out, 8, &total), 0);
    assert_int_equal(decisions_find_call(d, "", out, 8, &total), 0);
    assert_int_equal(decisions_find_call(d, "nope", out, 8, &total), 0);
    decisions_free(d);
}

static void
test_report(void **state)
{
    struct decisions *d = decisions_new(2);
    uint64_t seq = add_granted(d, 9, "r", 1);
    struct decision *dc;

    (void)state;
    decisions_report(d, seq, DECISION_RATE_LIMITED, 0, 12.5, 4);
    dc = decisions_get(d, seq);
    assert_int_equal(dc->outcome, DECISION_RATE_LIMITED);
    assert_int_equal(dc->tokens_used, 0);
    assert_true(dc->latency_ms == 12.5);
    assert_true(dc->retry_after_s == 4);
    decisions_free(d);
}

/* Capacity 0: decisions are off, nothing is kept. */
static void
test_disabled(void **state)
{
    struct decisions *d = decisions_new(0);
    const struct decision *out[1];
    size_t total;

    (void)state;
    assert_non_null(d);
    assert_int_equal(decisions_capacity(d), 0);
    assert_int_equal(add_granted(d, 1, "c", 1), 0);
    assert_int_equal(decisions_count(d), 0);
    assert_null(decisions_get(d, 1));
    assert_int_equal(decisions_find_call(d, "c", out, 1, &total), 0);
    decisions_report(d, 1, DECISION_OK, -1, -1, 0);
    decisions_free(d);
}

/* Many times round a small ring: seqs stay consecutive, lookups exact. */
static void
test_wraparound(void **state)
{
    struct decisions *d = decisions_new(7);
    const struct decision *out[8];
    size_t total;

    (void)state;
    for (uint64_t i = 1; i <= 1000; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%llu", (unsigned long long)(i % 5));
        assert_int_equal(add_granted(d, i, id, (double)i), i);
    }
    assert_int_equal(decisions_count(d), 7);
    for (uint64_t s = 994; s <= 1000; s++)
        assert_int_equal(decisions_get(d, s)->permit_id, s);
    assert_null(decisions_get(d, 993));
    /* c0: 995 and 1000 are held. */
    assert_int_equal(decisions_find_call(d, "c0", out, 8, &total), 2);
    assert_int_equal(out[0]->permit_id, 995);
    assert_int_equal(out[1]->permit_id, 1000);
    decisions_free(d);
}

static void
test_names(void **state)
{
    (void)state;
    assert_string_equal(decisions_verdict_name(DECISION_QUOTA_OVER), "over");
    assert_string_equal(decisions_why_name(DECISION_NO_TOKEN), "no_token");
    assert_string_equal(decisions_why_name(DECISION_NOT_CHOSEN),
                        "not_chosen");
    assert_string_equal(decisions_outcome_name(DECISION_RATE_LIMITED),
                        "rate_limited");
    assert_string_equal(decisions_outcome_name(DECISION_REFUSED), "refused");
    assert_string_equal(decisions_outcome_name((enum decision_outcome)99),
                        "?");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_and_get),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_report),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_wraparound),
        cmocka_unit_test(test_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
