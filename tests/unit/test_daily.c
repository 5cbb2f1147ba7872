/*
 * test_daily.c - unit tests of daemon/daily.c (over daemon/quota.c) with a
 * fake wall clock.  The window is a day: slots of 120 s, and a slot counts
 * until its end + 86400 s.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "daily.h"

#define T0 1700000000.0         /* a slot start: 1700000000 % 120 == 80 */
#define DAY DAILY_WINDOW_S

static struct daily *
fresh(void)
{
    struct daily *dl = daily_new(DAY);

    assert_non_null(dl);
    return dl;
}

/* Check and charge one request of tokens, as a grant does; 1 granted. */
static int
grant(struct daily *dl, const char *name, int64_t tokens, double now,
      int64_t *slot)
{
    struct daily_verdict v;
    int64_t s;

    assert_int_equal(daily_check(dl, name, 1, tokens, now, &v), 0);
    if (!v.allowed)
        return 0;
    assert_int_equal(daily_charge(dl, name, 1, tokens, now,
                                  slot != NULL ? slot : &s), 0);
    return 1;
}

static void
test_rpd_refuses_after_n(void **state)
{
    struct daily *dl = fresh();
    struct daily_verdict v;
    double t = T0;

    (void)state;
    assert_int_equal(daily_set_limit(dl, "provider/groq", 3, 0), 0);
    assert_true(daily_limited(dl, "provider/groq"));
    assert_false(daily_limited(dl, "provider/other"));
    for (int i = 0; i < 3; i++)
        assert_int_equal(grant(dl, "provider/groq", 100, t + i * 1000, NULL),
                         1);
    assert_int_equal(grant(dl, "provider/groq", 0, t + 5000, NULL), 0);
    assert_int_equal(daily_check(dl, "provider/groq", 1, 0, t + 5000, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.unit, DAILY_REQUESTS);
    assert_int_equal(v.used, 3);
    assert_int_equal(v.limit, 3);
    assert_true(v.has_frees_at);
    /* The first grant's slot [T0 - 80, T0 + 40) leaves 24 h after its end. */
    assert_true(v.frees_at_s > t + DAY && v.frees_at_s <= t + DAY + 120);
    /* Still refused just before, one frees then. */
    assert_int_equal(grant(dl, "provider/groq", 0, v.frees_at_s - 1, NULL), 0);
    assert_int_equal(grant(dl, "provider/groq", 0, v.frees_at_s, NULL), 1);
    assert_int_equal(grant(dl, "provider/groq", 0, v.frees_at_s, NULL), 0);
    /* Unlimited names are always allowed and count nothing. */
    assert_int_equal(grant(dl, "provider/other", 5, t, NULL), 1);
    daily_free(dl);
}

static void
test_tpd_and_reconcile(void **state)
{
    struct daily *dl = fresh();
    struct daily_status st[4];
    struct daily_verdict v;
    int64_t slot;

    (void)state;
    assert_int_equal(daily_set_limit(dl, "provider/a", 0, 1000), 0);
    assert_int_equal(grant(dl, "provider/a", 600, T0, &slot), 1);
    /* 600 + 600 > 1000: refused on tokens. */
    assert_int_equal(daily_check(dl, "provider/a", 1, 600, T0, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.unit, DAILY_TOKENS);
    assert_int_equal(v.used, 600);
    /* The report says 100 were used: 900 left. */
    assert_int_equal(daily_reconcile(dl, "provider/a", DAILY_TOKENS, slot,
                                     600, 100, T0 + 10), 0);
    assert_int_equal(grant(dl, "provider/a", 600, T0 + 20, NULL), 1);
    assert_int_equal(daily_list(dl, T0 + 20, st, 4), 1);
    assert_string_equal(st[0].name, "provider/a");
    assert_int_equal(st[0].unit, DAILY_TOKENS);
    assert_int_equal(st[0].used, 700);
    assert_int_equal(st[0].remaining, 300);
    /* Used up exactly: even 0 more is refused. */
    assert_int_equal(daily_reconcile(dl, "provider/a", DAILY_TOKENS, slot,
                                     100, 400, T0 + 30), 0);
    assert_int_equal(daily_check(dl, "provider/a", 1, 0, T0 + 30, &v), 0);
    assert_false(v.allowed);
    /* An undone charge gives both counters back. */
    assert_int_equal(daily_set_limit(dl, "provider/b", 2, 0), 0);
    assert_int_equal(grant(dl, "provider/b", 7, T0, &slot), 1);
    assert_int_equal(daily_reconcile(dl, "provider/b", DAILY_REQUESTS, slot,
                                     1, 0, T0), 0);
    assert_int_equal(daily_reconcile(dl, "provider/b", DAILY_TOKENS, slot,
                                     7, 0, T0), 0);
    assert_int_equal(daily_list(dl, T0, st, 4), 2);
    assert_string_equal(st[1].name, "provider/b");
    assert_int_equal(st[1].used, 0);
    assert_false(st[1].has_frees_at);
    daily_free(dl);
}

static void
test_rolling_window(void **state)
{
    struct daily *dl = fresh();

    (void)state;
    assert_int_equal(daily_set_limit(dl, "n", 2, 0), 0);
    assert_int_equal(grant(dl, "n", 0, T0, NULL), 1);
    assert_int_equal(grant(dl, "n", 0, T0 + 12 * 3600, NULL), 1);
    /* Never more than 2 in any 24 h: not at T0 + 24 h - 1 s ... */
    assert_int_equal(grant(dl, "n", 0, T0 + DAY - 1, NULL), 0);
    /* ... one at T0 + 24 h + a slot, the next only 12 h later. */
    assert_int_equal(grant(dl, "n", 0, T0 + DAY + 120, NULL), 1);
    assert_int_equal(grant(dl, "n", 0, T0 + DAY + 121, NULL), 0);
    assert_int_equal(grant(dl, "n", 0, T0 + DAY + 12 * 3600 + 120, NULL), 1);
    daily_free(dl);
}

static void
test_limits_change_usage_stays(void **state)
{
    struct daily *dl = fresh();
    struct daily_status st[2];

    (void)state;
    assert_int_equal(daily_set_limit(dl, "n", 10, 0), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(grant(dl, "n", 50, T0, NULL), 1);
    /* A reload: all limits go, the configured ones come back. */
    daily_clear_limits(dl);
    assert_false(daily_limited(dl, "n"));
    assert_int_equal(daily_list(dl, T0, st, 2), 0);
    assert_int_equal(daily_set_limit(dl, "n", 4, 300), 0);
    assert_int_equal(daily_list(dl, T0, st, 2), 2);
    assert_int_equal(st[0].unit, DAILY_REQUESTS);
    assert_int_equal(st[0].used, 4);
    assert_int_equal(st[0].remaining, 0);
    /* Tokens were counted while no TPD was set. */
    assert_int_equal(st[1].unit, DAILY_TOKENS);
    assert_int_equal(st[1].used, 200);
    assert_int_equal(grant(dl, "n", 0, T0, NULL), 0);
    daily_free(dl);
}

static void
test_bad_arguments(void **state)
{
    struct daily *dl = fresh();
    struct daily_verdict v;
    int64_t slot;
    enum daily_unit u;

    (void)state;
    assert_null(daily_new(0));
    assert_int_equal(daily_set_limit(dl, "", 1, 1), -1);
    assert_int_equal(daily_set_limit(dl, "a\nb", 1, 1), -1);
    assert_int_equal(daily_set_limit(dl, "n", -1, 1), -1);
    assert_int_equal(daily_set_limit(dl, "n", 1, 1), 0);
    assert_int_equal(daily_check(dl, "n", -1, 0, T0, &v), -1);
    assert_int_equal(daily_check(dl, "n", 1, 0, 1e300, &v), -1);
    assert_int_equal(daily_charge(dl, "n", 1, -5, T0, &slot), -1);
    assert_int_equal(daily_reconcile(dl, "n", (enum daily_unit)7, 0, 1, 0, T0),
                     -1);
    assert_int_equal(daily_unit_parse("tokens", &u), 0);
    assert_int_equal(u, DAILY_TOKENS);
    assert_int_equal(daily_unit_parse("Tokens", &u), -1);
    assert_string_equal(daily_unit_name(DAILY_REQUESTS), "requests");
    daily_free(dl);
}

/* A sink that records the rows, and a second table loaded from them. */
struct rows {
    char name[8][64];
    enum daily_unit unit[8];
    int64_t slot[8], count[8];
    int n;
    bool fail;
};

static int
rec_reset(void *arg, const char *name, enum daily_unit unit)
{
    (void)arg, (void)name, (void)unit;
    fail_msg("no reset expected");
    return -1;
}

static int
rec_slot(void *arg, const char *name, enum daily_unit unit, int64_t slot,
         int64_t count)
{
    struct rows *r = arg;

    if (r->fail)
        return -1;
    assert_true(r->n < 8);
    snprintf(r->name[r->n], sizeof(r->name[0]), "%s", name);
    r->unit[r->n] = unit;
    r->slot[r->n] = slot;
    r->count[r->n++] = count;
    return 0;
}

static void
test_flush_requeue_load(void **state)
{
    static const struct daily_sink sink = { rec_reset, rec_slot };
    struct daily *dl = fresh(), *back = fresh();
    struct rows r = { .fail = true };
    struct daily_verdict v;
    int64_t slot;

    (void)state;
    assert_int_equal(daily_set_limit(dl, "provider/groq", 2, 0), 0);
    assert_int_equal(grant(dl, "provider/groq", 30, T0, &slot), 1);
    assert_int_equal(grant(dl, "provider/groq", 12, T0 + 1, NULL), 1);
    assert_true(daily_flush_pending(dl));
    /* A failing sink keeps everything pending. */
    assert_int_equal(daily_flush(dl, &sink, &r), -1);
    r.fail = false;
    assert_int_equal(daily_flush(dl, &sink, &r), 2);
    assert_false(daily_flush_pending(dl));
    assert_string_equal(r.name[0], "provider/groq");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r.slot[i], slot);
        assert_int_equal(r.count[i], r.unit[i] == DAILY_REQUESTS ? 2 : 42);
    }
    /* The write was lost after all: queued again, as it is now. */
    assert_int_equal(daily_requeue(dl, false, "provider/groq", DAILY_TOKENS,
                                   slot), 0);
    r.n = 0;
    assert_int_equal(daily_flush(dl, &sink, &r), 1);
    assert_int_equal(r.unit[0], DAILY_TOKENS);
    assert_int_equal(r.count[0], 42);
    /* A restart: the rows loaded into a new table still refuse. */
    assert_int_equal(daily_set_limit(back, "provider/groq", 2, 0), 0);
    assert_int_equal(daily_load_slot(back, "provider/groq", DAILY_REQUESTS,
                                     slot, 2, T0 + 60), 0);
    assert_int_equal(daily_check(back, "provider/groq", 1, 0, T0 + 60, &v), 0);
    assert_false(v.allowed);
    assert_false(daily_flush_pending(back));
    /* Rows from before the horizon do not count. */
    assert_true(daily_horizon_ms(back, T0 + DAY + 120) > slot);
    assert_int_equal(daily_prune(back, T0 + DAY + 120), 1);
    assert_int_equal(daily_check(back, "provider/groq", 1, 0, T0 + DAY + 120,
                                 &v), 0);
    assert_true(v.allowed);
    daily_free(dl);
    daily_free(back);
}

/* What daily_owed_take() handed over of the requests counters: how
 * many, their own usage added up, their slots and the last slot's count. */
struct taken {
    bool requests;              /* the counter being handed over */
    int counters, slots;
    int64_t own, last_count;
};

static int
take_counter(void *arg, const char *name, enum daily_unit unit, int64_t own)
{
    struct taken *t = arg;

    (void)name;
    t->requests = unit == DAILY_REQUESTS;
    if (t->requests) {
        t->counters++;
        t->own += own;
    }
    return 0;
}

static int
take_slot(void *arg, int64_t slot_start_ms, int64_t count)
{
    struct taken *t = arg;

    (void)slot_start_ms;
    if (t->requests) {
        t->slots++;
        t->last_count = count;
    }
    return 0;
}

/* Multi-host mode: the others' usage counts in checks and status; owed
 * slots are handed over as absolute counts; the share caps a check. */
static void
test_fleet_others_owed_share(void **state)
{
    static const struct daily_owed_sink sink = { take_counter, take_slot };
    struct daily *dl = fresh();
    struct daily_status st[2];
    struct daily_verdict v;
    struct taken tk = { 0 };
    double t = T0;

    (void)state;
    assert_int_equal(daily_set_limit(dl, "provider/groq", 300, 0), 0);
    daily_track_owed(dl);
    for (int i = 0; i < 10; i++)
        assert_int_equal(grant(dl, "provider/groq", 0, t, NULL), 1);
    assert_true(daily_owed_pending(dl));
    assert_true(daily_owed_take(dl, t, 10, &sink, &tk) >= 1);
    assert_int_equal(tk.counters, 1);
    assert_int_equal(tk.own, 10);
    assert_int_equal(tk.slots, 1);
    assert_int_equal(tk.last_count, 10);
    assert_false(daily_owed_pending(dl));
    /* The fleet has used 250: 240 by the others. */
    assert_int_equal(daily_set_others(dl, "provider/groq", DAILY_REQUESTS,
                                      240, 10), 0);
    assert_int_equal(daily_list(dl, t, st, 2), 1);
    assert_int_equal(st[0].used, 250);
    assert_int_equal(st[0].own, 10);
    assert_int_equal(st[0].remaining, 50);
    /* Fleet view: 50 more fit. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(grant(dl, "provider/groq", 0, t, NULL), 1);
    assert_int_equal(grant(dl, "provider/groq", 0, t, NULL), 0);
    assert_int_equal(daily_list(dl, t, st, 2), 1);
    assert_int_equal(st[0].used, 300);
    assert_int_equal(st[0].own, 60);
    assert_int_equal(st[0].remaining, 0);
    /* Read again at 300 used; the limit goes to 600 by a reload; Redis
     * away with 3 hosts: this host may take (600 - 300) / 3 = 100. */
    assert_int_equal(daily_set_others(dl, "provider/groq", DAILY_REQUESTS,
                                      240, 60), 0);
    assert_int_equal(daily_set_limit(dl, "provider/groq", 600, 0), 0);
    daily_set_share(dl, 3);
    for (int i = 0; i < 100; i++)
        assert_int_equal(grant(dl, "provider/groq", 0, t, NULL), 1);
    assert_int_equal(daily_check(dl, "provider/groq", 1, 0, t, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.used, 400);
    assert_int_equal(v.limit, 600);
    /* Back to the fleet's view: 200 more fit. */
    daily_set_share(dl, 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(grant(dl, "provider/groq", 0, t, NULL), 1);
    assert_int_equal(grant(dl, "provider/groq", 0, t, NULL), 0);
    /* A counter never read: limit / hosts of its own. */
    assert_int_equal(daily_set_limit(dl, "provider/new", 10, 0), 0);
    daily_set_share(dl, 4);
    for (int i = 0; i < 2; i++)
        assert_int_equal(grant(dl, "provider/new", 0, t, NULL), 1);
    assert_int_equal(grant(dl, "provider/new", 0, t, NULL), 0);
    /* A reload keeps what was read; a name without limits keeps nothing. */
    daily_clear_limits(dl);
    assert_false(daily_limited(dl, "provider/groq"));
    assert_int_equal(daily_set_limit(dl, "provider/groq", 600, 0), 0);
    assert_int_equal(daily_list(dl, t, st, 2), 1);
    assert_int_equal(st[0].used, 600);
    assert_int_equal(daily_set_others(dl, "provider/none", DAILY_REQUESTS,
                                      5, 0), 0);
    assert_int_equal(daily_set_others(dl, "provider/groq", DAILY_TOKENS,
                                      -1, 0), -1);
    /* Owed again: every slot handed over once more, absolute. */
    tk = (struct taken){ 0 };
    assert_true(daily_owed_take(dl, t, 10, &sink, &tk) >= 2);
    assert_int_equal(tk.counters, 2);
    assert_int_equal(tk.own, 362);
    assert_false(daily_owed_pending(dl));
    daily_owe_all(dl);
    tk = (struct taken){ 0 };
    assert_true(daily_owed_take(dl, t, 10, &sink, &tk) >= 2);
    assert_int_equal(tk.counters, 2);
    assert_int_equal(tk.own, 362);
    daily_free(dl);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpd_refuses_after_n),
        cmocka_unit_test(test_tpd_and_reconcile),
        cmocka_unit_test(test_rolling_window),
        cmocka_unit_test(test_limits_change_usage_stays),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_flush_requeue_load),
        cmocka_unit_test(test_fleet_others_owed_share),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
