/*
 * test_feedback.c - daemon/feedback.c: real header sets of each provider
 * read by ratehdr and applied to a limiter bucket on a fake clock.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "feedback.h"

#define NOW_WALL 1796119200.0   /* 2026-12-01T10:00:00Z */

#define assert_near(got, want, tol)                                            \
    do {                                                                       \
        double got_ = (got), want_ = (want);                                   \
        if (!(fabs(got_ - want_) <= (tol)))                                    \
            fail_msg("%s = %.17g, want %.17g", #got, got_, want_);             \
    } while (0)

static void
bucket(struct limiter_bucket *b, double rate, double burst, double tpm,
       double now_s)
{
    struct limiter_config cfg = { rate, burst, tpm, true, false };

    assert_int_equal(limiter_init(b, &cfg, now_s), 0);
}

/* Headers "name: value" lines (NULL-ended) into h, as received now. */
static void
read_headers(struct ratehdr *h, const char *const *lines)
{
    ratehdr_init(h);
    for (; *lines != NULL; lines++) {
        const char *colon = strchr(*lines, ':');
        ratehdr_feed(h, *lines, (size_t)(colon - *lines), colon + 1,
                     strlen(colon + 1), NOW_WALL);
    }
}

/* remaining 0, reset 2s, no limit: no token for 2 s, then as configured. */
static void
test_remaining_zero_holds_until_reset(void **state)
{
    static const char *const lines[] = {
        "x-ratelimit-remaining-requests: 0",
        "x-ratelimit-reset-requests: 2s", NULL,
    };
    struct limiter_bucket b;
    struct feedback_mark m;
    struct ratehdr h;

    (void)state;
    bucket(&b, 50, 50, 0, 100);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 100), LIMITER_GRANTED);
    feedback_mark(&b, &m);
    read_headers(&h, lines);
    assert_int_equal(feedback_clamp(&b, &h, &m, 100.1), FEEDBACK_CAPPED);
    assert_near(limiter_available(&b, 100.1), 0, 1e-9);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 101.5), LIMITER_WAIT);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 102.05), LIMITER_WAIT);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 102.1), LIMITER_GRANTED);
    /* Then at the configured rate. */
    assert_near(limiter_available(&b, 102.2), 5, 1e-6);
}

/* The grants made since the answered permit are taken off what remains. */
static void
test_grants_since_are_discounted(void **state)
{
    static const char *const lines[] = {
        "x-ratelimit-limit-requests: 60",
        "x-ratelimit-remaining-requests: 10",
        "x-ratelimit-reset-requests: 50s", NULL,
    };
    struct limiter_bucket b;
    struct feedback_mark m;
    struct ratehdr h;

    (void)state;
    bucket(&b, 1, 60, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 0), LIMITER_GRANTED);
    feedback_mark(&b, &m);
    for (int i = 0; i < 4; i++)
        assert_int_equal(limiter_try_acquire(&b, 1, 0, 0), LIMITER_GRANTED);
    read_headers(&h, lines);
    feedback_clamp(&b, &h, &m, 0);
    assert_near(limiter_available(&b, 0), 6, 1e-9);
    /* A provider that refills as the bucket does: no hold. */
    assert_near(limiter_available(&b, 2), 8, 1e-9);
}

/* Saying more than the bucket holds adds nothing. */
static void
test_more_remaining_adds_nothing(void **state)
{
    static const char *const lines[] = {
        "x-ratelimit-limit-requests: 60",
        "x-ratelimit-remaining-requests: 59",
        "x-ratelimit-reset-requests: 1s", NULL,
    };
    struct limiter_bucket b;
    struct feedback_mark m;
    struct ratehdr h;

    (void)state;
    bucket(&b, 1, 5, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 0), LIMITER_GRANTED);
    feedback_mark(&b, &m);
    read_headers(&h, lines);
    feedback_clamp(&b, &h, &m, 0);
    assert_near(limiter_available(&b, 0), 4, 1e-9);
}

/* A debt: more granted since than the provider had left. */
static void
test_debt(void **state)
{
    static const char *const lines[] = {
        "x-ratelimit-limit-requests: 60",
        "x-ratelimit-remaining-requests: 0",
        "x-ratelimit-reset-requests: 1m0s", NULL,
    };
    struct limiter_bucket b;
    struct feedback_mark m;
    struct ratehdr h;

    (void)state;
    bucket(&b, 1, 60, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 0), LIMITER_GRANTED);
    feedback_mark(&b, &m);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 0), LIMITER_GRANTED);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 0), LIMITER_GRANTED);
    read_headers(&h, lines);
    feedback_clamp(&b, &h, &m, 0);
    /* -2 now: the provider refills at 1/s as the bucket does; the first
     * token after the debt comes at 3 s. */
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 2.9), LIMITER_WAIT);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 3.0), LIMITER_GRANTED);
}

/* Anthropic: RFC 3339 resets; tokens headers cap the LLM bucket. */
static void
test_anthropic_tokens(void **state)
{
    static const char *const lines[] = {
        "anthropic-ratelimit-requests-limit: 50",
        "anthropic-ratelimit-requests-remaining: 49",
        "anthropic-ratelimit-requests-reset: 2026-12-01T10:00:01Z",
        "anthropic-ratelimit-tokens-limit: 6000",
        "anthropic-ratelimit-tokens-remaining: 0",
        "anthropic-ratelimit-tokens-reset: 2026-12-01T10:00:30Z",
        "anthropic-ratelimit-input-tokens-remaining: 0", NULL,
    };
    struct limiter_bucket b;
    struct feedback_mark m;
    struct ratehdr h;

    (void)state;
    bucket(&b, 10, 10, 6000, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 100, 0), LIMITER_GRANTED);
    feedback_mark(&b, &m);
    read_headers(&h, lines);
    assert_int_equal(feedback_clamp(&b, &h, &m, 0),
                     FEEDBACK_CAPPED | FEEDBACK_LLM_CAPPED);
    assert_near(limiter_available(&b, 0), 9, 1e-9);
    assert_near(limiter_available_llm(&b, 0), 0, 1e-9);
    /* 6000 in 30 s: the provider's next token in 5 ms, sooner than the
     * bucket's own (10 ms at 100/s): no hold. */
    assert_near(limiter_available_llm(&b, 1), 100, 1e-6);
}

/* Resets over 60 s speak of a longer window (a per-day limit): applied
 * all the same, never learned. */
static void
test_per_day_applied(void **state)
{
    static const char *const lines[] = {
        "x-ratelimit-limit-requests: 1000",
        "x-ratelimit-remaining-requests: 0",
        "x-ratelimit-reset-requests: 6h0m0s", NULL,
    };
    struct limiter_bucket b;
    struct feedback_mark m;
    struct ratehdr h;
    double rpm = 0, tpm = 0;

    (void)state;
    bucket(&b, 1, 5, 0, 0);
    feedback_mark(&b, &m);
    read_headers(&h, lines);
    assert_false(feedback_per_minute(&h.kind[RATEHDR_REQUESTS]));
    assert_int_equal(feedback_clamp(&b, &h, &m, 0), FEEDBACK_CAPPED);
    /* Nothing left: the provider's next token is 6 h / 1000 = 21.6 s on,
     * and the bucket's own refill (1 s a token) ends there. */
    assert_near(limiter_available(&b, 0), 0, 1e-9);
    assert_near(limiter_available(&b, 20.5), 0, 1e-9);
    assert_near(limiter_available(&b, 21.6), 1, 1e-6);
    assert_int_equal(feedback_learned(&h, &rpm, &tpm), 0);
}

/* Learning: the limit of a per-minute limit; none without a reset. */
static void
test_learned(void **state)
{
    static const char *const groq[] = {
        "x-ratelimit-limit-requests: 30",
        "x-ratelimit-remaining-requests: 29",
        "x-ratelimit-reset-requests: 2s",
        "x-ratelimit-limit-tokens: 12000",
        "x-ratelimit-remaining-tokens: 11900",
        "x-ratelimit-reset-tokens: 500ms", NULL,
    };
    static const char *const bare[] = {
        "x-ratelimit-limit-requests: 30", NULL,
    };
    struct ratehdr h;
    double rpm = 0, tpm = 0;

    (void)state;
    read_headers(&h, groq);
    assert_int_equal(feedback_learned(&h, &rpm, &tpm), 2);
    assert_near(rpm, 30, 0);
    assert_near(tpm, 12000, 0);
    rpm = tpm = 0;
    read_headers(&h, bare);
    assert_int_equal(feedback_learned(&h, &rpm, &tpm), 0);
}

/* Malformed values are counted by ratehdr and change nothing here. */
static void
test_malformed_ignored(void **state)
{
    static const char *const lines[] = {
        "x-ratelimit-remaining-requests: lots",
        "x-ratelimit-reset-requests: soon", NULL,
    };
    struct limiter_bucket b;
    struct feedback_mark m;
    struct ratehdr h;

    (void)state;
    bucket(&b, 1, 5, 0, 0);
    feedback_mark(&b, &m);
    read_headers(&h, lines);
    assert_int_equal(h.malformed, 2);
    assert_int_equal(feedback_clamp(&b, &h, &m, 0), 0);
    assert_near(limiter_available(&b, 0), 5, 1e-9);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_remaining_zero_holds_until_reset),
        cmocka_unit_test(test_grants_since_are_discounted),
        cmocka_unit_test(test_more_remaining_adds_nothing),
        cmocka_unit_test(test_debt),
        cmocka_unit_test(test_anthropic_tokens),
        cmocka_unit_test(test_per_day_applied),
        cmocka_unit_test(test_learned),
        cmocka_unit_test(test_malformed_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
