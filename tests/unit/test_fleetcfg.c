/*
 * test_fleetcfg.c - the fleet's part of a configuration (daemon/fleetcfg.c):
 * its canonical text and hash whatever the order of the file, read back
 * exactly, bad texts refused, and the differences between two hosts'.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fleetcfg.h"

static struct config cfg_a, cfg_b;

static void
add_provider(struct config *c, const char *name, double rate, double burst,
             double tpm)
{
    struct provider_config *p = &c->providers[c->nproviders++];

    snprintf(p->name, sizeof(p->name), "%s", name);
    p->rate_per_sec = rate;
    p->burst = burst;
    p->tokens_per_min = tpm;
}

static void
add_model(struct config *c, const char *alias, double rpm, double tpm)
{
    struct model_config *m = &c->models[c->nmodels++];

    snprintf(m->alias, sizeof(m->alias), "%s", alias);
    m->rpm = rpm;
    m->tpm = tpm;
}

/* Two configurations with the same shared settings, in other orders and
 * with other settings of their own. */
static int
setup(void **state)
{
    memset(&cfg_a, 0, sizeof(cfg_a));
    memset(&cfg_b, 0, sizeof(cfg_b));
    add_provider(&cfg_a, "openai", 0.1, 5, 600);
    add_provider(&cfg_a, "anthropic", 20, 10, 0);
    add_model(&cfg_a, "gpt", 600, 0);
    cfg_a.quota_window_days = 1;
    cfg_a.default_quota_tokens = 1000000;
    cfg_a.quota_enforcement = ENFORCE_SOFT;
    cfg_a.routing_policy = 0;
    add_provider(&cfg_b, "anthropic", 20, 10, 0);
    add_provider(&cfg_b, "openai", 0.1, 5, 600);
    add_model(&cfg_b, "gpt", 600, 0);
    cfg_b.quota_window_days = 1;
    cfg_b.default_quota_tokens = 1000000;
    cfg_b.quota_enforcement = ENFORCE_SOFT;
    cfg_b.routing_policy = 1;   /* each host's own: not in the text */
    return 0;
}

static void
test_text(void **state)
{
    struct fleetcfg a, b;
    char ta[FLEETCFG_TEXT_MAX], tb[FLEETCFG_TEXT_MAX], ha[41], hb[41];

    fleetcfg_of(&a, &cfg_a);
    fleetcfg_of(&b, &cfg_b);
    fleetcfg_text(&a, ta, sizeof(ta));
    fleetcfg_text(&b, tb, sizeof(tb));
    assert_string_equal(ta, "llmguard fleet configuration 1\n"
                        "provider anthropic 20 10 0\n"
                        "provider openai 0.10000000000000001 5 600\n"
                        "model gpt 600 0\n"
                        "quota 1 1000000 soft\n");
    assert_string_equal(ta, tb);
    fleetcfg_hash(ta, ha);
    fleetcfg_hash(tb, hb);
    assert_int_equal(strlen(ha), 40);
    assert_string_equal(ha, hb);
    cfg_b.providers[1].burst = 6;
    fleetcfg_of(&b, &cfg_b);
    fleetcfg_text(&b, tb, sizeof(tb));
    fleetcfg_hash(tb, hb);
    assert_string_not_equal(ha, hb);
}

static void
test_parse(void **state)
{
    struct fleetcfg a, back;
    char ta[FLEETCFG_TEXT_MAX], tback[FLEETCFG_TEXT_MAX], err[128];

    cfg_a.quota_enforcement = ENFORCE_HARD;
    fleetcfg_of(&a, &cfg_a);
    fleetcfg_text(&a, ta, sizeof(ta));
    assert_int_equal(fleetcfg_parse(&back, ta, err, sizeof(err)), 0);
    fleetcfg_text(&back, tback, sizeof(tback));
    assert_string_equal(ta, tback);
    assert_true(fleetcfg_provider(&back, "openai")->rate_per_sec == 0.1);
    assert_true(fleetcfg_model(&back, "gpt")->rpm == 600);
    assert_null(fleetcfg_provider(&back, "groq"));
    assert_int_equal(back.quota_enforcement, ENFORCE_HARD);
    /* A later version's kind of line is skipped. */
    assert_int_equal(fleetcfg_parse(&back, "llmguard fleet configuration 1\n"
                                    "provider x 1 2 3\nfuture y 1\n", err,
                                    sizeof(err)), 0);
    assert_int_equal(back.nproviders, 1);
}

static void
test_parse_bad(void **state)
{
    struct fleetcfg f;
    char err[128];

    assert_int_equal(fleetcfg_parse(&f, "", err, sizeof(err)), -1);
    assert_int_equal(fleetcfg_parse(&f, "something else\n", err,
                                    sizeof(err)), -1);
    assert_string_equal(err, "line 1 is not one of a fleet configuration");
    assert_int_equal(fleetcfg_parse(&f, "llmguard fleet configuration 1\n"
                                    "provider x 1 2\n", err, sizeof(err)),
                     -1);
    assert_string_equal(err, "line 2 cannot be read: provider x 1 2");
    assert_int_equal(fleetcfg_parse(&f, "llmguard fleet configuration 1\n"
                                    "quota 1 2 medium\n", err, sizeof(err)),
                     -1);
}

static void
test_diff(void **state)
{
    struct fleetcfg mine, fleet;
    char buf[1024];

    fleetcfg_of(&mine, &cfg_a);
    fleetcfg_of(&fleet, &cfg_a);
    assert_int_equal(fleetcfg_diff(&mine, &fleet, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    cfg_b.providers[1].rate_per_sec = 2;
    cfg_b.models[0].tpm = 9000;
    cfg_b.quota_window_days = 7;
    cfg_b.quota_enforcement = ENFORCE_HARD;
    add_provider(&cfg_b, "groq", 1, 1, 0);
    add_provider(&cfg_a, "local", 3, 1, 0);
    fleetcfg_of(&mine, &cfg_a);
    fleetcfg_of(&fleet, &cfg_b);
    assert_int_equal(fleetcfg_diff(&mine, &fleet, buf, sizeof(buf)), 6);
    assert_string_equal(buf, "provider local not in the fleet's (its own "
                        "settings kept), provider openai rate_per_sec 2 "
                        "(here 0.1), provider groq only in "
                        "the fleet's (not configured here), model gpt tpm "
                        "9000 (here 0), QUOTA_WINDOW_DAYS 7 (here 1), "
                        "QUOTA_ENFORCEMENT hard (here soft)");
    /* Too small a buffer cuts, never overruns. */
    assert_int_equal(fleetcfg_diff(&mine, &fleet, buf, 10), 6);
    assert_string_equal(buf, "provider ");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_text, setup),
        cmocka_unit_test_setup(test_parse, setup),
        cmocka_unit_test_setup(test_parse_bad, setup),
        cmocka_unit_test_setup(test_diff, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
