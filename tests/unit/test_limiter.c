/*
 * test_limiter.c — unit tests for daemon/limiter.c with a fake clock: the
 * "clock" is the plain number passed as now_s.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "limiter.h"

/* cmocka's float assertion goes through float; this one keeps doubles. */
#define assert_near(got, want, tol)                                            \
    do {                                                                       \
        double got_ = (got), want_ = (want);                                   \
        if (!(fabs(got_ - want_) <= (tol)))                                    \
            fail_msg("%s = %.17g, want %.17g", #got, got_, want_);             \
    } while (0)

#define TOL 1e-9

static struct limiter_config config(double rate_per_sec, double burst,
                                    double tokens_per_min)
{
    struct limiter_config cfg = {
        .rate_per_sec = rate_per_sec,
        .burst = burst,
        .tokens_per_min = tokens_per_min,
        .enabled = true,
    };
    return cfg;
}

/* A bucket initialised at now_s, asserted to succeed. */
static void setup(struct limiter_bucket *b, double rate_per_sec, double burst,
                  double tokens_per_min, double now_s)
{
    struct limiter_config cfg = config(rate_per_sec, burst, tokens_per_min);

    assert_int_equal(limiter_init(b, &cfg, now_s), 0);
}

/* Deterministic xorshift64, so a failing run can be replayed anywhere. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double rnd_unit(uint64_t *s)
{
    return (double)(rnd(s) >> 11) / 9007199254740992.0;
}

static void test_init_rejects_bad_config(void **state)
{
    struct limiter_bucket b;
    struct limiter_config bad[] = {
        config(0, 10, 0),        config(-1, 10, 0),  config(NAN, 10, 0),
        config(INFINITY, 10, 0), config(1, 0.5, 0),  config(1, NAN, 0),
        config(1, 10, -1),       config(1, 10, NAN), config(1, 10, INFINITY),
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(limiter_init(&b, &bad[i], 0), -1);
    setup(&b, 2, 10, 0, 5);
    assert_near(limiter_available(&b, 5), 10, 0);
    assert_true(isinf(limiter_available_llm(&b, 5)));
    assert_int_equal(limiter_waiters(&b), 0);
    assert_true(isinf(limiter_next_wakeup(&b, 5)));
}

static void test_refill(void **state)
{
    struct limiter_bucket b;

    (void)state;
    setup(&b, 2, 10, 0, 100);
    assert_int_equal(limiter_try_acquire(&b, 10, 0, 100), LIMITER_GRANTED);
    assert_near(limiter_available(&b, 100), 0, TOL);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 100), LIMITER_WAIT);
    assert_near(limiter_available(&b, 100.25), 0.5, TOL);
    assert_near(limiter_available(&b, 101), 2, TOL);
    assert_near(limiter_available(&b, 103), 6, TOL);
    assert_int_equal(limiter_try_acquire(&b, 3, 0, 101.5), LIMITER_GRANTED);
    assert_near(limiter_available(&b, 101.5), 0, TOL);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 101.9), LIMITER_WAIT);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 102), LIMITER_GRANTED);

    /* 0.1 s steps are inexact (100.1 - 100 < 0.1): still one token each. */
    setup(&b, 10, 1, 0, 100);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 100), LIMITER_GRANTED);
    for (int i = 1; i <= 50; i++)
        assert_int_equal(limiter_try_acquire(&b, 1, 0, 100 + i * 0.1),
                         LIMITER_GRANTED);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 105.05), LIMITER_WAIT);
}

static void test_burst_cap(void **state)
{
    struct limiter_bucket b;

    (void)state;
    setup(&b, 3, 7, 0, 0);
    assert_near(limiter_available(&b, 1e6), 7, 0);
    assert_int_equal(limiter_try_acquire(&b, 7, 0, 1e6), LIMITER_GRANTED);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 1e6), LIMITER_WAIT);
    assert_near(limiter_available(&b, 1e6 + 1), 3, 1e-6);
    assert_near(limiter_available(&b, 1e6 + 10), 7, 0);
}

static void test_bad_requests(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w = {0};

    (void)state;
    setup(&b, 1, 10, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 0, 0, 0), LIMITER_BAD_REQUEST);
    assert_int_equal(limiter_try_acquire(&b, 11, 0, 0), LIMITER_BAD_REQUEST);
    assert_int_equal(limiter_enqueue(&b, &w, 0, 0, 10), -1);
    assert_int_equal(limiter_enqueue(&b, &w, 11, 0, 10), -1);
    assert_false(w.queued);
    assert_int_equal(limiter_waiters(&b), 0);
    assert_near(limiter_available(&b, 0), 10, 0);
    /* Without a TPM limit, llm_tokens are not looked at. */
    assert_int_equal(limiter_try_acquire(&b, 10, UINT64_MAX, 0),
                     LIMITER_GRANTED);

    setup(&b, 1, 10, 600, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 601, 0), LIMITER_BAD_REQUEST);
    assert_int_equal(limiter_enqueue(&b, &w, 1, 601, 10), -1);
    assert_near(limiter_available(&b, 0), 10, 0);
    assert_near(limiter_available_llm(&b, 0), 600, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 600, 0), LIMITER_GRANTED);
}

static void test_no_overtaking(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w = {0};

    (void)state;
    setup(&b, 1, 10, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 10, 0, 0), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &w, 5, 0, 100), 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 3), LIMITER_WAIT);
    assert_near(limiter_available(&b, 3), 3, TOL);
    assert_ptr_equal(limiter_pop_ready(&b, 5), &w);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 6), LIMITER_GRANTED);
}

static void test_fifo_mixed_sizes(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter big = {0}, small = {0}, mid = {0};
    double t;

    (void)state;
    setup(&b, 1, 10, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 10, 0, 0), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &big, 8, 0, 1000), 0);
    assert_int_equal(limiter_enqueue(&b, &small, 1, 0, 1000), 0);
    assert_int_equal(limiter_enqueue(&b, &mid, 2, 0, 1000), 0);
    assert_int_equal(limiter_waiters(&b), 3);

    /* One token is there, but the big head blocks the small one. */
    assert_null(limiter_pop_expired(&b, 1));
    assert_null(limiter_pop_ready(&b, 1));
    assert_null(limiter_pop_ready(&b, 7.5));

    t = limiter_next_wakeup(&b, 7.5);
    assert_near(t, 8, TOL);
    assert_ptr_equal(limiter_pop_ready(&b, t), &big);
    assert_null(limiter_pop_ready(&b, t));
    t = limiter_next_wakeup(&b, t);
    assert_near(t, 9, TOL);
    assert_ptr_equal(limiter_pop_ready(&b, t), &small);
    t = limiter_next_wakeup(&b, t);
    assert_near(t, 11, TOL);
    assert_null(limiter_pop_ready(&b, 10.99));
    assert_ptr_equal(limiter_pop_ready(&b, t), &mid);
    assert_int_equal(limiter_waiters(&b), 0);
    assert_false(big.queued || small.queued || mid.queued);
    assert_near(limiter_available(&b, t), 0, TOL);
    assert_true(isinf(limiter_next_wakeup(&b, t)));
}

static void test_deadline_expiry(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter big = {0}, small = {0}, mid = {0};

    (void)state;
    setup(&b, 1, 10, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 10, 0, 0), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &big, 8, 0, 3), 0);
    assert_int_equal(limiter_enqueue(&b, &small, 1, 0, 100), 0);
    assert_int_equal(limiter_enqueue(&b, &mid, 2, 0, 2), 0);

    /* The earliest deadline is behind the head; it still sets the timer. */
    assert_near(limiter_next_wakeup(&b, 0), 2, 0);
    assert_null(limiter_pop_expired(&b, 1.999));
    assert_ptr_equal(limiter_pop_expired(&b, 2), &mid);
    assert_null(limiter_pop_expired(&b, 2));
    assert_null(limiter_pop_ready(&b, 2));
    assert_near(limiter_available(&b, 2), 2, TOL);

    /* The expired head consumes nothing and unblocks the small one. */
    assert_near(limiter_next_wakeup(&b, 2), 3, 0);
    assert_ptr_equal(limiter_pop_expired(&b, 3), &big);
    assert_false(big.queued);
    assert_near(limiter_available(&b, 3), 3, TOL);
    assert_ptr_equal(limiter_pop_ready(&b, 3), &small);
    assert_near(limiter_available(&b, 3), 2, TOL);
    assert_int_equal(limiter_waiters(&b), 0);

    /* A deadline already past at enqueue expires at once. */
    assert_int_equal(limiter_enqueue(&b, &big, 8, 0, 3), 0);
    assert_near(limiter_next_wakeup(&b, 4), 4, 0);
    assert_ptr_equal(limiter_pop_expired(&b, 4), &big);
}

static void test_cancel(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w1 = {0}, w2 = {0}, w3 = {0};

    (void)state;
    setup(&b, 1, 10, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 10, 0, 0), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &w1, 9, 0, 100), 0);
    assert_int_equal(limiter_enqueue(&b, &w2, 5, 0, 100), 0);
    assert_int_equal(limiter_enqueue(&b, &w3, 2, 0, 100), 0);

    limiter_cancel(&b, &w2, 0.5);
    assert_false(w2.queued);
    assert_int_equal(limiter_waiters(&b), 2);
    limiter_cancel(&b, &w2, 0.5);
    assert_int_equal(limiter_waiters(&b), 2);
    limiter_cancel(&b, &w1, 1);
    assert_int_equal(limiter_waiters(&b), 1);
    assert_near(limiter_available(&b, 1), 1, TOL);
    assert_near(limiter_next_wakeup(&b, 1), 2, TOL);
    assert_ptr_equal(limiter_pop_ready(&b, 2), &w3);

    /* A cancelled waiter may be queued again; drain empties a queue. */
    assert_int_equal(limiter_enqueue(&b, &w1, 9, 0, 100), 0);
    assert_int_equal(limiter_enqueue(&b, &w2, 9, 0, 100), 0);
    assert_ptr_equal(limiter_drain(&b), &w1);
    assert_ptr_equal(limiter_drain(&b), &w2);
    assert_null(limiter_drain(&b));
    assert_near(limiter_available(&b, 2), 0, TOL);
}

static void test_release_capping(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w = {0};

    (void)state;
    setup(&b, 1, 10, 600, 0);
    assert_int_equal(limiter_try_acquire(&b, 4, 500, 0), LIMITER_GRANTED);
    assert_near(limiter_available(&b, 0), 6, 0);
    assert_near(limiter_available_llm(&b, 0), 100, 0);
    limiter_release(&b, 3, 200, 0);
    assert_near(limiter_available(&b, 0), 9, 0);
    assert_near(limiter_available_llm(&b, 0), 300, 0);
    limiter_release(&b, 5, 1000, 0);
    assert_near(limiter_available(&b, 0), 10, 0);
    assert_near(limiter_available_llm(&b, 0), 600, 0);
    limiter_release(&b, 5, 5, 100);
    assert_near(limiter_available(&b, 100), 10, 0);

    /* A release can make the head servable at once. */
    assert_int_equal(limiter_try_acquire(&b, 10, 0, 100), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &w, 5, 0, 200), 0);
    assert_null(limiter_pop_ready(&b, 100));
    limiter_release(&b, 5, 0, 100);
    assert_near(limiter_next_wakeup(&b, 100), 100, 0);
    assert_ptr_equal(limiter_pop_ready(&b, 100), &w);
    assert_near(limiter_available(&b, 100), 0, 0);
}

static void test_tpm_both_limit(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w = {0};

    (void)state;
    setup(&b, 100, 100, 600, 0); /* TPM refills 10 LLM tokens/s */
    assert_int_equal(limiter_try_acquire(&b, 1, 600, 0), LIMITER_GRANTED);

    /* Plenty of request tokens, no LLM tokens: nothing taken from either. */
    assert_int_equal(limiter_try_acquire(&b, 1, 60, 0), LIMITER_WAIT);
    assert_near(limiter_available(&b, 0), 99, 0);
    assert_near(limiter_available_llm(&b, 0), 0, 0);
    assert_int_equal(limiter_enqueue(&b, &w, 1, 60, 100), 0);
    assert_near(limiter_next_wakeup(&b, 0), 6, TOL);
    assert_null(limiter_pop_ready(&b, 5.9));
    assert_ptr_equal(limiter_pop_ready(&b, limiter_next_wakeup(&b, 5.9)), &w);
    assert_near(limiter_available(&b, 6), 99, TOL);
    assert_near(limiter_available_llm(&b, 6), 0, TOL);

    /* Plenty of LLM tokens, too few request tokens: waits just the same. */
    assert_int_equal(limiter_try_acquire(&b, 100, 10, 100), LIMITER_GRANTED);
    assert_int_equal(limiter_try_acquire(&b, 1, 10, 100), LIMITER_WAIT);
    assert_near(limiter_available(&b, 100), 0, 0);
    assert_near(limiter_available_llm(&b, 100), 590, 0);
    assert_int_equal(limiter_enqueue(&b, &w, 2, 10, 200), 0);
    assert_near(limiter_next_wakeup(&b, 100), 100.02, TOL);
    assert_null(limiter_pop_ready(&b, 100.019));
    assert_ptr_equal(limiter_pop_ready(&b, 100.02), &w);
    assert_near(limiter_available(&b, 100.02), 0, TOL);
    assert_near(limiter_available_llm(&b, 100.02), 580.2, TOL);
}

/* A report's real usage replaces the estimate its grant took: more is
 * charged (down to a minute's debt, which later grants wait out), less is
 * given back (up to the capacity, serving a waiter); nothing without TPM. */
static void test_charge_llm(void **state)
{
    struct limiter_bucket b, plain;
    struct limiter_waiter w = {0};

    (void)state;
    setup(&b, 100, 100, 600, 0); /* TPM refills 10 LLM tokens/s */
    assert_int_equal(limiter_try_acquire(&b, 1, 100, 0), LIMITER_GRANTED);
    limiter_charge_llm(&b, 250, 0);             /* used 350, not 100 */
    assert_near(limiter_available_llm(&b, 0), 250, 0);
    limiter_charge_llm(&b, -50, 1);             /* another used 50 less */
    assert_near(limiter_available_llm(&b, 1), 310, TOL);
    limiter_charge_llm(&b, -1000, 1);           /* capped */
    assert_near(limiter_available_llm(&b, 1), 600, 0);
    limiter_charge_llm(&b, 5000, 1);            /* a debt of one minute */
    assert_near(b.llm_tokens, -600, 0);
    assert_near(limiter_available_llm(&b, 1), 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 10, 1), LIMITER_WAIT);
    assert_int_equal(limiter_enqueue(&b, &w, 1, 10, 1000), 0);
    assert_near(limiter_next_wakeup(&b, 1), 62, TOL);
    limiter_charge_llm(&b, -610, 1);            /* refunds make it ready */
    assert_ptr_equal(limiter_pop_ready(&b, 1), &w);

    setup(&plain, 100, 100, 0, 0);
    limiter_charge_llm(&plain, 500, 0);
    assert_true(isinf(limiter_available_llm(&plain, 0)));
}

static void test_disabled(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w[3];
    struct limiter_config cfg = config(1, 5, 60);

    (void)state;
    memset(w, 0, sizeof(w));
    cfg.enabled = false;
    assert_int_equal(limiter_init(&b, &cfg, 0), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(limiter_try_acquire(&b, 5, 60, 0), LIMITER_GRANTED);
    assert_near(limiter_available(&b, 0), 5, 0);
    assert_near(limiter_available_llm(&b, 0), 60, 0);
    assert_int_equal(limiter_try_acquire(&b, 0, 0, 0), LIMITER_BAD_REQUEST);
    assert_int_equal(limiter_try_acquire(&b, 6, 0, 0), LIMITER_BAD_REQUEST);
    assert_int_equal(limiter_try_acquire(&b, 1, 61, 0), LIMITER_BAD_REQUEST);

    /* Turning the limiter off (reload) lets every waiter through at once. */
    cfg.enabled = true;
    assert_int_equal(limiter_reconfigure(&b, &cfg, 0), 0);
    assert_int_equal(limiter_try_acquire(&b, 5, 0, 0), LIMITER_GRANTED);
    for (int i = 0; i < 3; i++)
        assert_int_equal(limiter_enqueue(&b, &w[i], 5, 0, 100), 0);
    cfg.enabled = false;
    assert_int_equal(limiter_reconfigure(&b, &cfg, 0.5), 0);
    assert_near(limiter_next_wakeup(&b, 0.5), 0.5, 0);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(limiter_pop_ready(&b, 0.5), &w[i]);
    assert_null(limiter_pop_ready(&b, 0.5));
    assert_near(limiter_available(&b, 0.5), 0.5, TOL);
}

static void test_reconfigure_clamps(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w = {0};
    struct limiter_config cfg = config(1, 4, 0), bad = config(0, 4, 0);

    (void)state;
    setup(&b, 1, 10, 0, 0);
    assert_int_equal(limiter_reconfigure(&b, &cfg, 0), 0);
    assert_near(limiter_available(&b, 0), 4, 0);

    /* Growing keeps the fill; refill up to now_s uses the old rate. */
    assert_int_equal(limiter_try_acquire(&b, 4, 0, 0), LIMITER_GRANTED);
    cfg = config(2, 20, 0);
    assert_int_equal(limiter_reconfigure(&b, &cfg, 1), 0);
    assert_near(limiter_available(&b, 1), 1, TOL);
    assert_near(limiter_available(&b, 3), 5, TOL);
    assert_near(limiter_available(&b, 100), 20, 0);

    /* A bad config changes nothing. */
    assert_int_equal(limiter_reconfigure(&b, &bad, 3), -1);
    assert_near(b.cfg.rate_per_sec, 2, 0);
    assert_near(limiter_available(&b, 3), 5, TOL);

    /* A TPM bucket that appears starts full; one that shrinks is clamped. */
    cfg = config(2, 20, 600);
    assert_int_equal(limiter_reconfigure(&b, &cfg, 3), 0);
    assert_near(limiter_available_llm(&b, 3), 600, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 100, 3), LIMITER_GRANTED);
    cfg = config(2, 20, 300);
    assert_int_equal(limiter_reconfigure(&b, &cfg, 3), 0);
    assert_near(limiter_available_llm(&b, 3), 300, 0);
    assert_near(limiter_available(&b, 3), 4, TOL);

    /* A waiter that no longer fits is expired at once. */
    assert_int_equal(limiter_enqueue(&b, &w, 15, 0, 100), 0);
    cfg = config(2, 10, 300);
    assert_int_equal(limiter_reconfigure(&b, &cfg, 3), 0);
    assert_near(limiter_next_wakeup(&b, 3), 3, 0);
    assert_null(limiter_pop_ready(&b, 50));
    assert_ptr_equal(limiter_pop_expired(&b, 3), &w);
    assert_near(limiter_available(&b, 3), 4, TOL);
}

/*
 * Random rates, sizes and clock offsets: the wake-up time is the ideal one
 * (deficit / rate) and limiter_pop_ready serves the head at exactly that
 * time, after any history of grants.
 */
static void test_next_wakeup_exact(void **state)
{
    static const double rates[] = {0.1, 1.0 / 3, 1, 3, 7, 97.3, 1e4};
    static const double bases[] = {0, 0.1, 1e6 + 0.1, 86400.0 * 365};
    uint64_t seed = 0x9e3779b97f4a7c15ULL;

    (void)state;
    for (int iter = 0; iter < 5000; iter++) {
        struct limiter_bucket b;
        struct limiter_waiter w = {0};
        double rate = rates[rnd(&seed) % 7] * (0.5 + rnd_unit(&seed));
        double burst = 1 + (double)(rnd(&seed) % 50);
        double tpm = rnd(&seed) % 2 ? 0 : 60 + (double)(rnd(&seed) % 5000);
        double now = bases[rnd(&seed) % 4];
        double t, ideal;
        uint32_t n;
        uint64_t llm;

        setup(&b, rate, burst, tpm, now);
        for (int k = (int)(rnd(&seed) % 5); k > 0; k--) {
            now += rnd_unit(&seed) * burst / rate;
            n = 1 + (uint32_t)(rnd(&seed) % (uint64_t)burst);
            llm = tpm > 0 ? rnd(&seed) % (uint64_t)tpm : 0;
            (void)limiter_try_acquire(&b, n, llm, now);
        }
        n = 1 + (uint32_t)(rnd(&seed) % (uint64_t)burst);
        llm = tpm > 0 ? rnd(&seed) % (uint64_t)tpm : 0;
        assert_int_equal(limiter_enqueue(&b, &w, n, llm, INFINITY), 0);

        t = limiter_next_wakeup(&b, now);
        ideal = b.last_s + (n - b.tokens) / rate;
        if (tpm > 0)
            ideal = fmax(ideal, b.last_s + (llm - b.llm_tokens) / (tpm / 60));
        ideal = fmax(ideal, now);
        assert_true(t >= now);
        assert_near(t, ideal, 1e-12 * fabs(ideal) + 1e-9 * n / rate + 1e-9);
        assert_ptr_equal(limiter_pop_ready(&b, t), &w);
    }
}

/* The fake clock can fall on the ulp just below the wake-up: not served. */
static void test_next_wakeup_not_early(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w = {0};
    double t;

    (void)state;
    setup(&b, 3, 1, 0, 1e6 + 0.1);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 1e6 + 0.1), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &w, 1, 0, INFINITY), 0);
    t = limiter_next_wakeup(&b, 1e6 + 0.1);
    assert_near(t, 1e6 + 0.1 + 1.0 / 3, 1e-9);
    assert_null(limiter_pop_ready(&b, t - 1e-6));
    assert_ptr_equal(limiter_pop_ready(&b, t), &w);
}

/* One client of the long-run simulation; w first, so a waiter is a client. */
struct client {
    struct limiter_waiter w;
    double next_s; /* next request, when idle */
};

struct grant_log {
    double *t_s;
    double *n;
    double *llm;
    size_t count, cap;
};

static void log_grant(struct grant_log *g, double t_s, uint32_t n,
                      uint64_t llm_tokens)
{
    if (g->count == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 1024;
        g->t_s = realloc(g->t_s, g->cap * sizeof(*g->t_s));
        g->n = realloc(g->n, g->cap * sizeof(*g->n));
        g->llm = realloc(g->llm, g->cap * sizeof(*g->llm));
        assert_non_null(g->t_s);
        assert_non_null(g->n);
        assert_non_null(g->llm);
    }
    g->t_s[g->count] = t_s;
    g->n[g->count] = n;
    g->llm[g->count] = (double)llm_tokens;
    g->count++;
}

/*
 * Largest amount granted within any interval [t_i, t_j] minus rate times
 * its length (grants are in time order); the guarantee is that this is at
 * most the capacity.  Also returns the total.
 */
static double max_excess(const double *t_s, const double *amount, size_t count,
                         double rate_per_sec, double *total)
{
    double worst = -INFINITY;

    *total = 0;
    for (size_t i = 0; i < count; i++) {
        double sum = 0;

        for (size_t j = i; j < count; j++) {
            sum += amount[j];
            worst = fmax(worst, sum - rate_per_sec * (t_s[j] - t_s[i]));
        }
        *total += amount[i];
    }
    return worst;
}

/*
 * Sixteen clients that always want more than the bucket gives: random
 * sizes, timeouts (0 = try once), think times and cancellations, driven by
 * the bucket's single wake-up time as an event loop would.
 */
static void simulate(struct limiter_bucket *b, double start_s,
                     double duration_s, uint32_t max_n, uint64_t max_llm,
                     struct grant_log *g)
{
    static const double timeouts_s[] = {0, 0.5, 1, 2, 5};
    struct client c[16];
    uint64_t seed = 0x2545f4914f6cdd1dULL;
    double now = start_s, end_s = start_s + duration_s;
    struct limiter_waiter *w;
    size_t expired = 0, cancelled = 0;

    memset(c, 0, sizeof(c));
    for (size_t i = 0; i < 16; i++)
        c[i].next_s = start_s + rnd_unit(&seed);
    for (;;) {
        double t = limiter_next_wakeup(b, now);

        for (size_t i = 0; i < 16; i++)
            if (!c[i].w.queued)
                t = fmin(t, c[i].next_s);
        assert_true(t >= now);
        now = t;
        if (now >= end_s)
            break;
        while ((w = limiter_pop_expired(b, now)) != NULL) {
            assert_true(w->deadline_s <= now);
            ((struct client *)w)->next_s = now;
            expired++;
        }
        while ((w = limiter_pop_ready(b, now)) != NULL) {
            log_grant(g, now, w->n, w->llm_tokens);
            ((struct client *)w)->next_s = now + 0.3 * rnd_unit(&seed);
        }
        for (size_t i = 0; i < 16; i++) {
            struct client *cl = &c[i];
            uint32_t n = 1 + (uint32_t)(rnd(&seed) % max_n);
            uint64_t llm = max_llm ? 1 + rnd(&seed) % max_llm : 0;
            double timeout_s = timeouts_s[rnd(&seed) % 5];

            if (cl->w.queued && rnd(&seed) % 1000 == 0) {
                limiter_cancel(b, &cl->w, now);
                cl->next_s = now + 1;
                cancelled++;
            }
            if (cl->w.queued || cl->next_s > now)
                continue;
            switch (limiter_try_acquire(b, n, llm, now)) {
            case LIMITER_GRANTED:
                log_grant(g, now, n, llm);
                cl->next_s = now + 0.3 * rnd_unit(&seed);
                break;
            case LIMITER_WAIT:
                if (timeout_s == 0)
                    cl->next_s = now + 0.3 * rnd_unit(&seed);
                else
                    assert_int_equal(
                        limiter_enqueue(b, &cl->w, n, llm, now + timeout_s), 0);
                break;
            default:
                fail_msg("bad request n=%u llm=%llu", (unsigned)n,
                         (unsigned long long)llm);
            }
        }
    }
    /* The run exercised queueing, expiry and cancellation. */
    assert_true(expired > 100);
    assert_true(cancelled > 0);
    while ((w = limiter_drain(b)) != NULL)
        ;
}

static void free_log(struct grant_log *g)
{
    free(g->t_s);
    free(g->n);
    free(g->llm);
}

static void test_long_run_bound(void **state)
{
    struct limiter_bucket b;
    struct grant_log g = {0};
    double start_s = 86400.5, duration_s = 2000, total, excess;

    (void)state;
    setup(&b, 5, 20, 0, start_s);
    simulate(&b, start_s, duration_s, 5, 0, &g);
    excess = max_excess(g.t_s, g.n, g.count, 5, &total);
    assert_true(excess <= 20 + 1e-6);
    assert_true(total <= 20 + 5 * duration_s + 1e-6);
    assert_true(total >= 0.95 * (20 + 5 * duration_s));
    free_log(&g);
}

static void test_long_run_bound_tpm(void **state)
{
    struct limiter_bucket b;
    struct grant_log g = {0};
    double start_s = 1e6, duration_s = 1000, total, excess;

    (void)state;
    /* 50 requests/s, 6000 LLM tokens/min (100/s): the TPM bucket binds. */
    setup(&b, 50, 50, 6000, start_s);
    simulate(&b, start_s, duration_s, 3, 400, &g);
    excess = max_excess(g.t_s, g.n, g.count, 50, &total);
    assert_true(excess <= 50 + 1e-6);
    excess = max_excess(g.t_s, g.llm, g.count, 100, &total);
    assert_true(excess <= 6000 + 1e-6);
    assert_true(total >= 0.95 * (6000 + 100 * duration_s));
    free_log(&g);
}

/*
 * A queue on a bucket of burst 1 whose timer fires late by a random
 * amount below one token's refill (the fake clock: the grant loop runs at
 * wake-up + lateness): every grant counts from its refill instant, so the
 * queue is served at the full rate; the bound holds at the instants, and
 * with one token of slack at the (late) times the grants are made.
 */
static void test_late_timer_full_rate(void **state)
{
    static const double rates[] = {100, 200, 1000};
    uint64_t seed = 0x853c49e6748fea9bULL;

    (void)state;
    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        double rate = rates[r], start_s = 5000, duration_s = 4;
        double now = start_s, end_s = start_s + duration_s, total, excess;
        struct limiter_waiter w[8], *g;
        struct grant_log at = {0}, made = {0};
        struct limiter_bucket b;

        memset(w, 0, sizeof(w));
        setup(&b, rate, 1, 0, start_s);
        for (size_t i = 0; i < 8; i++)
            assert_int_equal(limiter_enqueue(&b, &w[i], 1, 0, INFINITY), 0);
        for (;;) {
            double t = limiter_next_wakeup(&b, now);

            now = t + rnd_unit(&seed) * 0.8 / rate;
            if (now >= end_s)
                break;
            assert_null(limiter_pop_expired(&b, now));
            while ((g = limiter_pop_ready(&b, now)) != NULL) {
                assert_true(g->granted_s <= now);
                assert_true(g->granted_s >= now - 1 / rate - 1e-12);
                log_grant(&at, g->granted_s, 1, 0);
                log_grant(&made, now, 1, 0);
                assert_int_equal(limiter_enqueue(&b, g, 1, 0, INFINITY), 0);
            }
        }
        /* 1 + rate x 4 s is the most there is; the last grant may be cut
         * off by the end of the run. */
        assert_true((double)at.count >= 0.98 * (1 + rate * duration_s));
        assert_true((double)at.count <= 1 + rate * duration_s + 1e-6);
        excess = max_excess(at.t_s, at.n, at.count, rate, &total);
        assert_true(excess <= 1 + 1e-6);
        excess = max_excess(made.t_s, made.n, made.count, rate, &total);
        assert_true(excess <= 2 + 1e-6);
        free_log(&at);
        free_log(&made);
        while (limiter_drain(&b) != NULL)
            ;
    }
}

/* A loop that stalls: it grants at most one token beyond the burst at
 * once, and the rest of the queue goes on at the rate. */
static void test_late_timer_stall(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w[50], *g;
    int granted = 0;

    (void)state;
    memset(w, 0, sizeof(w));
    setup(&b, 100, 1, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 0), LIMITER_GRANTED);
    for (size_t i = 0; i < 50; i++)
        assert_int_equal(limiter_enqueue(&b, &w[i], 1, 0, INFINITY), 0);
    assert_near(limiter_next_wakeup(&b, 0), 0.01, TOL);
    /* It should have fired at 0.01, and fires at 1.5. */
    while ((g = limiter_pop_ready(&b, 1.5)) != NULL) {
        assert_ptr_equal(g, &w[granted]);
        granted++;
    }
    assert_int_equal(granted, 2);
    assert_near(w[0].granted_s, 1.49, TOL);
    assert_near(w[1].granted_s, 1.5, TOL);
    assert_near(limiter_next_wakeup(&b, 1.5), 1.51, TOL);
}

/* Deadlines against late timers: a head whose tokens were there before
 * its deadline is granted, one whose credit ran out expires, and a waiter
 * behind the head expires only once the head has been served. */
static void test_late_timer_deadlines(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter a = {0}, c = {0};

    (void)state;
    setup(&b, 1, 1, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 0), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &a, 1, 0, 1.5), 0);
    assert_near(limiter_next_wakeup(&b, 0), 1, TOL);
    /* Fires at 1.8, past the deadline: the tokens were there at 1. */
    assert_null(limiter_pop_expired(&b, 1.8));
    assert_ptr_equal(limiter_pop_ready(&b, 1.8), &a);
    assert_near(a.granted_s, 1, TOL);

    /* Ready at 2, deadline 2.5, fired at 3.6: the instant is 2.6. */
    assert_int_equal(limiter_enqueue(&b, &a, 1, 0, 2.5), 0);
    assert_null(limiter_pop_ready(&b, 3.6));
    assert_ptr_equal(limiter_pop_expired(&b, 3.6), &a);
    assert_near(limiter_available(&b, 3.6), 1, 0);

    /* A ready at 11; C behind it would be at 12, after its deadline. */
    setup(&b, 1, 1, 0, 10);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 10), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &a, 1, 0, 100), 0);
    assert_int_equal(limiter_enqueue(&b, &c, 1, 0, 11.5), 0);
    assert_near(limiter_next_wakeup(&b, 10), 11, TOL);
    assert_null(limiter_pop_expired(&b, 11.6));
    assert_ptr_equal(limiter_pop_ready(&b, 11.6), &a);
    assert_near(a.granted_s, 11, TOL);
    assert_null(limiter_pop_ready(&b, 11.6));
    assert_ptr_equal(limiter_pop_expired(&b, 11.6), &c);
    assert_int_equal(limiter_waiters(&b), 0);
    assert_near(limiter_available(&b, 11.6), 0.6, TOL);
}

/* A head that became the head late (the one before it was cancelled or
 * expired) counts from then, not from when its tokens were there. */
static void test_late_timer_head_since(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter big = {0}, small = {0};

    (void)state;
    setup(&b, 1, 10, 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 10, 0, 0), LIMITER_GRANTED);
    assert_int_equal(limiter_enqueue(&b, &big, 10, 0, 100), 0);
    assert_int_equal(limiter_enqueue(&b, &small, 1, 0, 100), 0);
    limiter_cancel(&b, &big, 5.5);
    assert_near(limiter_next_wakeup(&b, 5.5), 5.5, 0);
    assert_ptr_equal(limiter_pop_ready(&b, 5.7), &small);
    assert_near(small.granted_s, 5.5, TOL);
    assert_near(limiter_available(&b, 5.7), 4.7, TOL);
}

/* Grants are counted, request and LLM tokens, with or without a TPM. */
static void test_grant_counters(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w = {0};

    (void)state;
    setup(&b, 1, 2, 0, 10);
    assert_int_equal(limiter_try_acquire(&b, 1, 300, 10), LIMITER_GRANTED);
    assert_int_equal(limiter_try_acquire(&b, 1, 200, 10), LIMITER_GRANTED);
    assert_int_equal(limiter_try_acquire(&b, 1, 5, 10), LIMITER_WAIT);
    assert_int_equal(b.granted, 2);
    assert_int_equal(b.llm_granted, 500);
    assert_int_equal(limiter_enqueue(&b, &w, 1, 7, INFINITY), 0);
    assert_ptr_equal(limiter_pop_ready(&b, 11), &w);
    assert_int_equal(b.granted, 3);
    assert_int_equal(b.llm_granted, 507);
}

/* A cap takes the fill down, never up; a hold puts the refill off until
 * its time, and the wake-up time of a waiter follows it exactly. */
static void test_cap_and_hold(void **state)
{
    struct limiter_bucket b;
    struct limiter_waiter w = {0};

    (void)state;
    setup(&b, 5, 10, 0, 100);
    limiter_cap(&b, false, 20, -INFINITY, 100);     /* more than held */
    assert_near(limiter_available(&b, 100), 10, TOL);
    limiter_cap(&b, false, 0, 102, 100);            /* none until 102 */
    assert_near(limiter_available(&b, 101.5), 0, TOL);
    assert_near(limiter_available(&b, 102), 0, TOL);
    assert_near(limiter_available(&b, 102.4), 2, TOL);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 101), LIMITER_WAIT);
    assert_int_equal(limiter_enqueue(&b, &w, 1, 0, INFINITY), 0);
    /* Not before the hold ends plus one token's refill. */
    assert_near(limiter_next_wakeup(&b, 101), 102.2, 1e-9);
    assert_null(limiter_pop_ready(&b, 102.1));
    assert_ptr_equal(limiter_pop_ready(&b, 102.2), &w);
    /* A shorter hold does not shorten a longer one. */
    limiter_cap(&b, false, 0, 110, 103);
    limiter_cap(&b, false, 5, 104, 103);
    assert_near(limiter_available(&b, 109), 0, TOL);
    assert_near(limiter_available(&b, 111), 5, TOL);
    /* NaN changes nothing. */
    limiter_cap(&b, false, NAN, NAN, 111);
    assert_near(limiter_available(&b, 111), 5, TOL);
}

/* A cap may leave a debt: it is refilled before anything is granted. */
static void test_cap_debt(void **state)
{
    struct limiter_bucket b;

    (void)state;
    setup(&b, 1, 5, 0, 0);
    limiter_cap(&b, false, -2, -INFINITY, 0);
    assert_near(limiter_available(&b, 0), 0, TOL);
    assert_near(limiter_available(&b, 2.5), 0.5, TOL);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 2.5), LIMITER_WAIT);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 3), LIMITER_GRANTED);
}

/* The LLM-token bucket has a cap and a hold of its own; without a TPM
 * limit an LLM cap changes nothing. */
static void test_cap_llm(void **state)
{
    struct limiter_bucket b;

    (void)state;
    setup(&b, 100, 100, 6000, 0);
    limiter_cap(&b, true, 50, 3, 1);
    assert_near(limiter_available_llm(&b, 2), 50, TOL);
    assert_near(limiter_available(&b, 2), 100, TOL);
    assert_near(limiter_available_llm(&b, 4), 150, TOL);   /* 100/s from 3 */
    assert_int_equal(limiter_try_acquire(&b, 1, 200, 2), LIMITER_WAIT);
    setup(&b, 100, 100, 0, 0);
    limiter_cap(&b, true, 0, 100, 0);
    assert_true(isinf(limiter_available_llm(&b, 1)));
    assert_int_equal(limiter_try_acquire(&b, 1, 5000, 1), LIMITER_GRANTED);
}

/* Under caps and holds at random, the bound of any interval holds as
 * without them: burst + rate * T. */
static void test_cap_long_run_bound(void **state)
{
    struct limiter_bucket b;
    struct grant_log g = {0};
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    double now = 0, total, excess;

    (void)state;
    setup(&b, 10, 20, 0, 0);
    while (now < 500) {
        if (rnd(&seed) % 512 == 0)
            limiter_cap(&b, false, rnd_unit(&seed) * 30 - 5,
                        now + rnd_unit(&seed) * 2, now);
        if (limiter_try_acquire(&b, 1, 0, now) == LIMITER_GRANTED)
            log_grant(&g, now, 1, 0);
        now += rnd_unit(&seed) * 0.05;
    }
    excess = max_excess(g.t_s, g.n, g.count, 10, &total);
    assert_true(g.count > 100);
    assert_true(excess <= 20 + 1e-6);
    free_log(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rejects_bad_config),
        cmocka_unit_test(test_refill),
        cmocka_unit_test(test_burst_cap),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_no_overtaking),
        cmocka_unit_test(test_fifo_mixed_sizes),
        cmocka_unit_test(test_deadline_expiry),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_release_capping),
        cmocka_unit_test(test_tpm_both_limit),
        cmocka_unit_test(test_charge_llm),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_reconfigure_clamps),
        cmocka_unit_test(test_next_wakeup_exact),
        cmocka_unit_test(test_next_wakeup_not_early),
        cmocka_unit_test(test_long_run_bound),
        cmocka_unit_test(test_long_run_bound_tpm),
        cmocka_unit_test(test_late_timer_full_rate),
        cmocka_unit_test(test_late_timer_stall),
        cmocka_unit_test(test_late_timer_deadlines),
        cmocka_unit_test(test_late_timer_head_since),
        cmocka_unit_test(test_grant_counters),
        cmocka_unit_test(test_cap_and_hold),
        cmocka_unit_test(test_cap_debt),
        cmocka_unit_test(test_cap_llm),
        cmocka_unit_test(test_cap_long_run_bound),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
