/*
 * test_lease.c - the pure parts of multi-host mode: REDIS_URL parsing and
 * masking (daemon/redisurl.c), lease accounting and sizing
 * (daemon/lease.c), and a leased limiter bucket (daemon/limiter.c).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "lease.h"
#include "limiter.h"
#include "redisurl.h"

#define assert_near(got, want, tol)                                            \
    do {                                                                       \
        double got_ = (got), want_ = (want);                                   \
        if (!(fabs(got_ - want_) <= (tol)))                                    \
            fail_msg("%s = %.17g, want %.17g", #got, got_, want_);             \
    } while (0)

static void
test_url_tcp(void **state)
{
    struct redisurl u;
    char err[128];

    assert_int_equal(redisurl_parse("redis://cache.internal", &u, err,
                                    sizeof(err)), 0);
    assert_int_equal(u.scheme, REDISURL_TCP);
    assert_string_equal(u.host, "cache.internal");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_false(u.has_pass);

    assert_int_equal(redisurl_parse("rediss://app:p%40ss%3Aw0rd@10.0.0.7:6380/3",
                                    &u, err, sizeof(err)), 0);
    assert_int_equal(u.scheme, REDISURL_TLS);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.pass, "p@ss:w0rd");
    assert_true(u.has_pass);
    assert_string_equal(u.host, "10.0.0.7");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);

    /* A password alone, before or after a colon. */
    assert_int_equal(redisurl_parse("redis://:secret@h", &u, err,
                                    sizeof(err)), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "secret");
    assert_int_equal(redisurl_parse("redis://secret@h:1/", &u, err,
                                    sizeof(err)), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "secret");
    assert_int_equal(u.port, 1);

    assert_int_equal(redisurl_parse("redis://[::1]:7000", &u, err,
                                    sizeof(err)), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
}

static void
test_url_unix(void **state)
{
    struct redisurl u;
    char err[128];

    assert_int_equal(redisurl_parse("unix:///run/redis/redis.sock", &u, err,
                                    sizeof(err)), 0);
    assert_int_equal(u.scheme, REDISURL_UNIX);
    assert_string_equal(u.path, "/run/redis/redis.sock");
    assert_int_equal(u.db, 0);
    assert_int_equal(redisurl_parse("unix://bob:pw@/tmp/r@1.sock?db=2", &u,
                                    err, sizeof(err)), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.pass, "pw");
    assert_string_equal(u.path, "/tmp/r@1.sock");
    assert_int_equal(u.db, 2);
}

static void
test_url_bad(void **state)
{
    static const char *const bad[] = {
        "", "http://h", "redis:/h", "redis://", "redis://h:", "redis://h:0",
        "redis://h:65536", "redis://h:80x", "redis://h/x", "redis://[::1",
        "redis://[::1]x", "redis://u:%zz@h", "redis://u:%4@h",
        "redis://u:%00@h", "unix://", "unix://tmp/x", "unix:///tmp/x?db=a",
        "unix:///tmp/x?size=2",
    };
    struct redisurl u;
    char err[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (redisurl_parse(bad[i], &u, err, sizeof(err)) != -1)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
}

static void
test_url_mask(void **state)
{
    static const char *const cases[][2] = {
        { "redis://h:1/2", "redis://h:1/2" },
        { "redis://app:s3cret@h:1/2", "redis://app:***@h:1/2" },
        { "rediss://:s3cret@h", "rediss://:***@h" },
        { "redis://s3cret@h", "redis://***@h" },
        { "unix://u:s3cret@/tmp/a@b.sock?db=1", "unix://u:***@/tmp/a@b.sock?db=1" },
        { "unix:///tmp/x.sock", "unix:///tmp/x.sock" },
        { "redis://u:p@ss@h", "redis://u:***@h" },
    };
    char buf[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(redisurl_mask(cases[i][0], buf, sizeof(buf)),
                            cases[i][1]);
}

/* Use is charged to the oldest lease; what a lease holds at its end
 * lapses; a spent lease is forgotten. */
static void
test_lease_accounting(void **state)
{
    struct lease l;
    double t, llm;

    lease_init(&l, 0);
    assert_int_equal(lease_add(&l, 3, 0, 0.2), 0);
    assert_int_equal(lease_add(&l, 2, 0, 0.3), 0);
    assert_near(l.held, 5, 1e-12);
    assert_near(lease_next_end(&l), 0.2, 1e-12);
    /* 4 used: the first lease is spent, the second holds 1. */
    lease_sync(&l, 1, INFINITY, 4, 0, 0.1);
    assert_int_equal(l.n, 1);
    assert_near(l.slot[0].tokens, 1, 1e-12);
    lease_expire(&l, 0.25, &t, &llm);
    assert_near(t, 0, 1e-12);
    assert_int_equal(l.n, 1);
    lease_expire(&l, 0.3, &t, &llm);
    assert_near(t, 1, 1e-12);
    assert_int_equal(l.n, 0);
    assert_near(l.held, 0, 1e-12);
    assert_true(isinf(lease_next_end(&l)));

    /* A release goes to the newest lease. */
    lease_init(&l, 0);
    lease_add(&l, 1, 0, 1);
    lease_add(&l, 1, 0, 2);
    lease_sync(&l, 3, INFINITY, 0, 0, 0.1);
    assert_near(l.slot[0].tokens, 1, 1e-12);
    assert_near(l.slot[1].tokens, 2, 1e-12);
}

static void
test_lease_full(void **state)
{
    struct lease l;
    double want, wl;

    lease_init(&l, 0);
    for (int i = 0; i < LEASE_SLOTS; i++)
        assert_int_equal(lease_add(&l, 0.5, 0, 1), 0);
    assert_int_equal(lease_add(&l, 1, 0, 1), -1);
    lease_want(&l, 10, 0, 0.2, 100, 0, &want, &wl);
    assert_near(want, 0, 0);
}

/* Sized to the queue plus the recent rate over a lease, less what is
 * held, within the capacity. */
static void
test_lease_want(void **state)
{
    struct lease l;
    double want, wl;

    lease_init(&l, 0);
    lease_want(&l, 0, 0, 0.2, 5, 0, &want, &wl);
    assert_near(want, 0, 0);            /* idle: ask for nothing */
    lease_want(&l, 3, 0, 0.2, 5, 0, &want, &wl);
    assert_near(want, 3, 1e-12);        /* the queue */
    lease_want(&l, 30, 0, 0.2, 5, 0, &want, &wl);
    assert_near(want, 5, 1e-12);        /* at most a burst */
    /* 50 tokens a second for a while: 10 over a lease of 0.2 s. */
    for (int i = 1; i <= 100; i++)
        lease_sync(&l, 0, INFINITY, 5.0 * i, 0, 0.1 * i);
    assert_near(l.rate, 50, 3);     /* sampled every 0.1 s: a bit above */
    lease_want(&l, 0, 0, 0.2, 100, 0, &want, &wl);
    assert_near(want, 10, 0.6);
    lease_add(&l, 4, 0, 11);
    lease_want(&l, 0, 0, 0.2, 100, 0, &want, &wl);
    assert_near(want, 6, 0.6);          /* less what is held */
    /* LLM tokens: the queue's, within TOKENS_PER_MIN. */
    lease_want(&l, 1, 5000, 0.2, 100, 3000, &want, &wl);
    assert_near(wl, 3000, 1e-9);
}

/* A load that begins (or returns after a pause) is leased its whole rate,
 * not the part of it the decaying count holds yet; a steady one its rate. */
static void
test_lease_growth(void **state)
{
    struct lease l;
    double want, wl, r, rl, t = 100;

    lease_init(&l, 0);
    /* 1000 tokens a second from t = 100, synced every millisecond. */
    for (int i = 1; i <= 100; i++)
        lease_sync(&l, 0, INFINITY, i, 0, t + 0.001 * i);
    assert_near(l.rate, 95, 1);     /* the count: a tenth of the rate */
    lease_want(&l, 0, 0, 0.2, 1000, 0, &want, &wl);
    assert_near(want, 200, 4);      /* 1000/s over 0.2 s, not 19 */
    /* One request of 500 LLM tokens is no rate to lease ahead of. */
    lease_init(&l, 0);
    lease_add(&l, 1, 600, 1000);
    lease_sync(&l, 0, 100, 1, 0, t);
    lease_rates(&l, 0.2, &r, &rl);
    assert_near(r, 1, 1e-9);
    assert_near(rl, 500, 1e-9);
    lease_want(&l, 0, 0, 0.2, 5, 600, &want, &wl);
    assert_near(want, 0, 0);
    assert_near(wl, 0, 0);
    /* Before a quarter lease the count is a few tokens: over 0.05 s. */
    lease_init(&l, 0);
    for (int i = 1; i <= 10; i++)
        lease_sync(&l, 0, INFINITY, i, 0, t + 0.001 * i);
    lease_rates(&l, 0.2, &r, &rl);
    assert_near(r, 10 / 0.05, 5);
    /* Steady for 10 s: the count is the rate. */
    lease_init(&l, 0);
    for (int i = 1; i <= 10000; i++)
        lease_sync(&l, 0, INFINITY, i, 0, t + 0.001 * i);
    lease_rates(&l, 0.2, &r, &rl);
    assert_near(r, 1000, 1);
    /* A pause of 2 s, then 100/s: the rate left of before (about 135/s)
     * plus 100/s, not the count (about 145/s). */
    t += 12;
    for (int i = 1; i <= 100; i++)
        lease_sync(&l, 0, INFINITY, 10000 + 0.1 * i, 0, t + 0.001 * i);
    lease_rates(&l, 0.2, &r, &rl);
    assert_near(r, 1000 * exp(-2.1) + 100, 3);
    assert_true(l.rate < 150);
    assert_near(l.since_s, t + 0.001, 1e-9);
    /* A pause of 0.2 s is no new start; one of 0.3 s is. */
    lease_sync(&l, 0, INFINITY, 10020, 0, t + 0.3);
    assert_near(l.since_s, t + 0.001, 1e-9);
    lease_sync(&l, 0, INFINITY, 10020, 0, t + 0.55);    /* no demand */
    lease_sync(&l, 0, INFINITY, 10021, 0, t + 0.6);
    assert_near(l.since_s, t + 0.6, 1e-9);
}

/* A leased bucket never refills by itself; its waiters are served, in
 * order, from what is added. */
static void
test_leased_bucket(void **state)
{
    struct limiter_config cfg = { 100, 5, 0, true, true };
    struct limiter_bucket b;
    struct limiter_waiter w1 = { 0 }, w2 = { 0 };

    assert_int_equal(limiter_init(&b, &cfg, 0), 0);
    assert_near(limiter_available(&b, 10), 0, 0);
    assert_int_equal(limiter_try_acquire(&b, 1, 0, 10), LIMITER_WAIT);
    assert_near(b.missed, 1, 0);
    limiter_enqueue(&b, &w1, 2, 0, 20);
    limiter_enqueue(&b, &w2, 1, 0, 20);
    assert_near(limiter_next_wakeup(&b, 10), 20, 0);    /* deadlines only */
    limiter_add(&b, 1.5, 0, 11);
    assert_null(limiter_pop_ready(&b, 11));
    limiter_add(&b, 1.5, 0, 12);
    assert_ptr_equal(limiter_pop_ready(&b, 12), &w1);
    assert_ptr_equal(limiter_pop_ready(&b, 12), &w2);
    assert_int_equal(b.granted, 3);
    limiter_add(&b, 100, 0, 13);
    assert_near(limiter_available(&b, 13), 5, 1e-12);   /* capped */
    limiter_take_back(&b, 2, 0, 13);
    assert_near(limiter_available(&b, 14), 3, 1e-12);
    limiter_take_back(&b, INFINITY, 0, 14);
    assert_near(limiter_available(&b, 15), 0, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_tcp),
        cmocka_unit_test(test_url_unix),
        cmocka_unit_test(test_url_bad),
        cmocka_unit_test(test_url_mask),
        cmocka_unit_test(test_lease_accounting),
        cmocka_unit_test(test_lease_full),
        cmocka_unit_test(test_lease_want),
        cmocka_unit_test(test_lease_growth),
        cmocka_unit_test(test_leased_bucket),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
