/* test_ratehdr.c - providers' rate-limit headers: real samples, every
 * format, and malformed values. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ratehdr.h"

#define NOW 1725043223.0        /* 2024-08-30T18:40:23Z */

#define assert_near(a, b) assert_true(fabs((double)(a) - (double)(b)) < 1e-6)

static int
feed(struct ratehdr *h, const char *name, const char *value)
{
    return ratehdr_feed(h, name, strlen(name), value, strlen(value), NOW);
}

/* OpenAI's documented example. */
static void
test_openai(void **state)
{
    struct ratehdr h;
    const struct ratehdr_limit *r = &h.kind[RATEHDR_REQUESTS];
    const struct ratehdr_limit *t = &h.kind[RATEHDR_TOKENS];

    (void)state;
    ratehdr_init(&h);
    assert_int_equal(feed(&h, "x-ratelimit-limit-requests", "60"), 1);
    assert_int_equal(feed(&h, "x-ratelimit-limit-tokens", "150000"), 1);
    assert_int_equal(feed(&h, "x-ratelimit-remaining-requests", "59"), 1);
    assert_int_equal(feed(&h, "x-ratelimit-remaining-tokens", "149984"), 1);
    assert_int_equal(feed(&h, "x-ratelimit-reset-requests", "1s"), 1);
    assert_int_equal(feed(&h, "x-ratelimit-reset-tokens", "6m0s"), 1);
    assert_true(r->has_limit && r->has_remaining && r->has_reset);
    assert_near(r->limit, 60);
    assert_near(r->remaining, 59);
    assert_near(r->reset_s, 1);
    assert_near(t->limit, 150000);
    assert_near(t->remaining, 149984);
    assert_near(t->reset_s, 360);
    assert_false(h.has_retry_after);
    assert_int_equal(h.malformed, 0);
}

/* Groq's headers on a 429, names in another case. */
static void
test_groq(void **state)
{
    struct ratehdr h;

    (void)state;
    ratehdr_init(&h);
    assert_int_equal(feed(&h, "Retry-After", "2"), 1);
    assert_int_equal(feed(&h, "X-RateLimit-Limit-Requests", "14400"), 1);
    assert_int_equal(feed(&h, "x-ratelimit-remaining-requests", "0"), 1);
    assert_int_equal(feed(&h, "x-ratelimit-reset-requests", "2m59.56s"), 1);
    assert_int_equal(feed(&h, "x-ratelimit-reset-tokens", "7.66s"), 1);
    assert_true(h.has_retry_after);
    assert_near(h.retry_after_s, 2);
    assert_near(h.kind[RATEHDR_REQUESTS].remaining, 0);
    assert_near(h.kind[RATEHDR_REQUESTS].reset_s, 179.56);
    assert_near(h.kind[RATEHDR_TOKENS].reset_s, 7.66);
    assert_false(h.kind[RATEHDR_TOKENS].has_limit);
}

/* Anthropic's: RFC 3339 resets, four kinds. */
static void
test_anthropic(void **state)
{
    struct ratehdr h;

    (void)state;
    ratehdr_init(&h);
    assert_int_equal(feed(&h, "anthropic-ratelimit-requests-limit", "50"), 1);
    assert_int_equal(feed(&h, "anthropic-ratelimit-requests-remaining", "49"),
                     1);
    assert_int_equal(feed(&h, "anthropic-ratelimit-requests-reset",
                          "2024-08-30T18:40:53Z"), 1);
    assert_int_equal(feed(&h, "anthropic-ratelimit-tokens-reset",
                          "2024-08-30T20:40:24.5+02:00"), 1);
    assert_int_equal(feed(&h, "anthropic-ratelimit-input-tokens-limit",
                          "40000"), 1);
    assert_int_equal(feed(&h, "anthropic-ratelimit-output-tokens-remaining",
                          "7999"), 1);
    assert_int_equal(feed(&h, "anthropic-ratelimit-output-tokens-reset",
                          "2024-08-30T18:40:00Z"), 1);  /* past: 0 */
    assert_near(h.kind[RATEHDR_REQUESTS].reset_s, 30);
    assert_near(h.kind[RATEHDR_TOKENS].reset_s, 1.5);
    assert_near(h.kind[RATEHDR_INPUT_TOKENS].limit, 40000);
    assert_near(h.kind[RATEHDR_OUTPUT_TOKENS].remaining, 7999);
    assert_near(h.kind[RATEHDR_OUTPUT_TOKENS].reset_s, 0);
    assert_int_equal(h.malformed, 0);
}

static void
test_retry_after(void **state)
{
    struct ratehdr h;

    (void)state;
    ratehdr_init(&h);
    /* an HTTP date, 30 s after NOW, in each of RFC 9110's three forms */
    assert_int_equal(feed(&h, "retry-after", "Fri, 30 Aug 2024 18:40:53 GMT"),
                     1);
    assert_near(h.retry_after_s, 30);
    ratehdr_init(&h);
    assert_int_equal(feed(&h, "retry-after", "Friday, 30-Aug-24 18:40:53 GMT"),
                     1);
    assert_near(h.retry_after_s, 30);
    ratehdr_init(&h);
    assert_int_equal(feed(&h, "retry-after", "Fri Aug 30 18:40:53 2024"), 1);
    assert_near(h.retry_after_s, 30);
    /* retry-after-ms is finer: it wins, in either order */
    ratehdr_init(&h);
    assert_int_equal(feed(&h, "retry-after-ms", "1500"), 1);
    assert_int_equal(feed(&h, "retry-after", "2"), 1);
    assert_near(h.retry_after_s, 1.5);
    ratehdr_init(&h);
    assert_int_equal(feed(&h, "retry-after", "2"), 1);
    assert_int_equal(feed(&h, "retry-after-ms", "250.5"), 1);
    assert_near(h.retry_after_s, 0.2505);
}

static void
test_durations(void **state)
{
    static const struct { const char *s; double want; } ok[] = {
        { "1s", 1 }, { "20ms", 0.02 }, { "6m0s", 360 }, { "1m30.5s", 90.5 },
        { "1h2m3s", 3723 }, { "1.5us", 1.5e-6 }, { "1.5\xc2\xb5s", 1.5e-6 },
        { "100ns", 1e-7 }, { "7", 7 }, { "0.25", 0.25 }, { " 2s ", 2 },
        { "0s", 0 },
    };
    static const char *const bad[] = {
        "", "s", "soon", "1x", "1h2x", "-1s", "1s-", "inf", "nan", "1e999s",
        "0x10", "1 s", "+1s", "1m 2s",
    };
    double d;

    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(ratehdr_duration(ok[i].s, strlen(ok[i].s), &d), 0);
        assert_near(d, ok[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ratehdr_duration(bad[i], strlen(bad[i]), &d), -1);
}

static void
test_times(void **state)
{
    static const char *const bad3339[] = {
        "2024-08-30T18:40:53", "2024-13-01T00:00:00Z", "2024-08-30T24:00:00Z",
        "2024-08-30T18:40:53+2:00", "2024-8-30T18:40:53Z", "yesterday",
        "2024-08-30T18:40:53.Z", "2024-08-30T18:40:53Zjunk", "1969-12-31T23:59:59Z",
    };
    static const char *const baddate[] = {
        "Fri, 32 Aug 2024 18:40:53 GMT", "Fri, 30 Foo 2024 18:40:53 GMT",
        "Fri, 30 Aug 2024 18:40:53 UTC", "Fri, 30 Aug 2024 25:40:53 GMT",
        "30 Aug 2024", "Fri, 30 Aug 2024 18:40:53 GMT extra",
    };
    double t;

    (void)state;
    assert_int_equal(ratehdr_rfc3339("1970-01-01T00:00:00Z", 20, &t), 0);
    assert_near(t, 0);
    assert_int_equal(ratehdr_rfc3339("2024-08-30t18:40:23z", 20, &t), 0);
    assert_near(t, NOW);
    assert_int_equal(ratehdr_rfc3339("2024-08-30 17:40:23-01:00", 25, &t), 0);
    assert_near(t, NOW + 0);    /* 17:40 at -01:00 is 18:40 UTC */
    assert_int_equal(ratehdr_rfc3339("2000-02-29T00:00:00Z", 20, &t), 0);
    assert_near(t, 951782400);
    for (size_t i = 0; i < sizeof(bad3339) / sizeof(bad3339[0]); i++)
        assert_int_equal(ratehdr_rfc3339(bad3339[i], strlen(bad3339[i]), &t),
                         -1);
    assert_int_equal(ratehdr_http_date("Sun, 06 Nov 1994 08:49:37 GMT", 29,
                                       &t), 0);
    assert_near(t, 784111777);
    for (size_t i = 0; i < sizeof(baddate) / sizeof(baddate[0]); i++)
        assert_int_equal(ratehdr_http_date(baddate[i], strlen(baddate[i]),
                                           &t), -1);
}

/* A known name with a value it cannot read: counted, nothing set; an
 * unknown name: ignored. */
static void
test_malformed(void **state)
{
    struct ratehdr h;
    char nul[] = "5\0" "0";

    (void)state;
    ratehdr_init(&h);
    assert_int_equal(feed(&h, "x-ratelimit-remaining-tokens", "lots"), -1);
    assert_int_equal(feed(&h, "x-ratelimit-limit-requests", "-1"), -1);
    assert_int_equal(feed(&h, "x-ratelimit-reset-tokens", "soon"), -1);
    assert_int_equal(feed(&h, "anthropic-ratelimit-tokens-reset", "30s"), -1);
    assert_int_equal(feed(&h, "retry-after", "later"), -1);
    assert_int_equal(feed(&h, "retry-after-ms", "1e999"), -1);
    assert_int_equal(ratehdr_feed(&h, "retry-after", 11, nul, 3, NOW), -1);
    assert_int_equal(h.malformed, 7);
    assert_false(h.kind[RATEHDR_TOKENS].has_remaining);
    assert_false(h.kind[RATEHDR_TOKENS].has_reset);
    assert_false(h.kind[RATEHDR_REQUESTS].has_limit);
    assert_false(h.has_retry_after);
    assert_int_equal(feed(&h, "content-type", "application/json"), 0);
    assert_int_equal(feed(&h, "x-ratelimit-limit", "5"), 0);
    assert_int_equal(feed(&h, "x-ratelimit-limit-requests-extra", "5"), 0);
    assert_int_equal(h.malformed, 7);
    assert_string_equal(ratehdr_kind_name(RATEHDR_INPUT_TOKENS),
                        "input_tokens");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai),
        cmocka_unit_test(test_groq),
        cmocka_unit_test(test_anthropic),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_malformed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
