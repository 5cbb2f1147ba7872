/*
 * test_provider_header.c - libclient/headers.c: what a call function
 * passes with llmguard_provider_header() and what the report carries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "headers_internal.h"
#include "llmguard.h"

static void
assert_pair(const struct proto_strmap *m, uint32_t i, const char *k,
            const char *v)
{
    assert_true(i < m->n);
    assert_int_equal(m->key[i].len, strlen(k));
    assert_memory_equal(m->key[i].ptr, k, strlen(k));
    assert_int_equal(m->value[i].len, strlen(v));
    assert_memory_equal(m->value[i].ptr, v, strlen(v));
}

/* Known names kept, lower-cased, the last value of a repeated one; the
 * others dropped; cleared for the next attempt. */
static void
test_kept_and_dropped(void **state)
{
    struct proto_strmap m;

    (void)state;
    headers_clear();
    llmguard_provider_header("X-RateLimit-Remaining-Requests", "3");
    llmguard_provider_header("Content-Type", "application/json");
    llmguard_provider_header("anthropic-ratelimit-tokens-reset",
                             "2026-12-01T10:00:30Z");
    llmguard_provider_header("x-ratelimit-remaining-requests", "2");
    llmguard_provider_header("Retry-After", "7");
    llmguard_provider_header(NULL, "1");
    llmguard_provider_header("retry-after-ms", NULL);
    llmguard_provider_header("", "1");
    headers_fill(&m);
    assert_int_equal(m.n, 3);
    assert_pair(&m, 0, "x-ratelimit-remaining-requests", "2");
    assert_pair(&m, 1, "anthropic-ratelimit-tokens-reset",
                "2026-12-01T10:00:30Z");
    assert_pair(&m, 2, "retry-after", "7");
    headers_clear();
    headers_fill(&m);
    assert_int_equal(m.n, 0);
}

/* Every known name at once fits; a value too long is cut, still too long
 * for the daemon to read (it counts it as malformed). */
static void
test_every_name_and_long_values(void **state)
{
    static const char *const kinds[] = {
        "requests", "tokens", "input-tokens", "output-tokens",
    };
    static const char *const parts[] = { "limit", "remaining", "reset" };
    char name[96], big[1000];
    struct proto_strmap m;

    (void)state;
    headers_clear();
    for (int k = 0; k < 2; k++)
        for (int p = 0; p < 3; p++) {
            snprintf(name, sizeof(name), "x-ratelimit-%s-%s", parts[p],
                     kinds[k]);
            llmguard_provider_header(name, "1");
        }
    for (int k = 0; k < 4; k++)
        for (int p = 0; p < 3; p++) {
            snprintf(name, sizeof(name), "anthropic-ratelimit-%s-%s",
                     kinds[k], parts[p]);
            llmguard_provider_header(name, "1");
        }
    llmguard_provider_header("retry-after", "1");
    memset(big, '9', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    llmguard_provider_header("retry-after-ms", big);
    headers_fill(&m);
    assert_int_equal(m.n, 20);
    assert_int_equal(m.value[19].len, 255);
    headers_clear();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kept_and_dropped),
        cmocka_unit_test(test_every_name_and_long_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
