/*
 * attempts - llmguard_permit() and llmguard_report(), the attempt's pieces,
 * against a real daemon:
 *
 *   attempts SOCKET
 *
 * The daemon has providers a (priority 1, TOKENS_PER_MIN 6000) and b
 * (priority 2), and model deployment mb (model id "mb") on b.  Prints one "ok"/"not ok" line per check; exits 1 if any
 * failed.
 */
#include <stdio.h>
#include <string.h>

#include "llmguard.h"

static int fails;

static void
check(int ok, const char *what, const char *detail)
{
    printf("%s - %s%s%s\n", ok ? "ok" : "not ok", what, detail[0] ? ": " : "",
           detail);
    fails += !ok;
}

/* A permit, a 429 that says try again, a second permit elsewhere in the
 * same call, and its report. */
static void
failover(llmguard_t *g)
{
    struct llmguard_request req = { .workflow_id = "wf", .tokens_estimate = 500,
                                    .timeout_s = 1 };
    struct llmguard_permit p1, p2;
    struct llmguard_report r = { .outcome = LLMGUARD_OUTCOME_RATE_LIMITED,
                                 .latency_ms = 12, .retry_after_s = 1 };
    struct llmguard_report_reply rr;
    const char *tried[1];

    check(llmguard_permit(g, &req, NULL, 0, &p1) == 0, "a permit",
          llmguard_last_error(g));
    check(strcmp(p1.provider, "a") == 0 && p1.permit_id > 0 &&
          p1.call_id[0] != '\0' && p1.quota_allowed &&
          p1.has_quota_remaining, "it names provider a, an id and a call id",
          p1.provider);
    r.permit_id = p1.permit_id;
    check(llmguard_report(g, &r, &rr) == 0, "the 429 reported",
          llmguard_last_error(g));
    check(rr.try_again && rr.degraded && rr.cooldown_remaining_s > 0,
          "the report says: try again; a is degraded", "");
    tried[0] = p1.provider;
    req.call_id = p1.call_id;
    check(llmguard_permit(g, &req, tried, 1, &p2) == 0 &&
          strcmp(p2.provider, "b") == 0 &&
          strcmp(p2.call_id, p1.call_id) == 0,
          "the next attempt of the call goes to b", p2.provider);
    r = (struct llmguard_report){ .permit_id = p2.permit_id,
                                  .outcome = LLMGUARD_OUTCOME_OK,
                                  .tokens_used = 42, .latency_ms = -1,
                                  .final = 1 };
    check(llmguard_report(g, &r, &rr) == 0 && !rr.try_again && !rr.degraded,
          "its success ends the call", llmguard_last_error(g));
    check(llmguard_report(g, &r, &rr) == LLMGUARD_EINVAL &&
          strstr(llmguard_last_error(g), "unknown permit_id") != NULL,
          "a second report of it is refused", llmguard_last_error(g));
    /* The next permit into the one its call id and exclusion point into. */
    req.call_id = p2.call_id;
    tried[0] = p2.provider;
    check(llmguard_permit(g, &req, tried, 1, &p2) == 0 &&
          strcmp(p2.provider, "a") == 0 && p2.all_degraded &&
          strcmp(p2.call_id, p1.call_id) == 0,
          "a permit may be written over the one it names", p2.call_id);
    r = (struct llmguard_report){ .permit_id = p2.permit_id,
                                  .outcome = LLMGUARD_OUTCOME_CLIENT_ERROR,
                                  .latency_ms = 1, .final = 1 };
    check(llmguard_report(g, &r, &rr) == 0 && !rr.try_again,
          "a client error: no other attempt", llmguard_last_error(g));
}

/*
 * The stream's way: a permit now, the report when the usage is known.  a
 * is in cooldown, so b; with b excluded, a all the same (all degraded),
 * reported with 3000 tokens used against an estimate of 1000 (t_attempts.sh
 * reads a's LLM-token bucket afterwards).
 */
static void
charged(llmguard_t *g)
{
    struct llmguard_request req = { .tokens_estimate = 1000 };
    struct llmguard_permit p;
    struct llmguard_report r = { .outcome = LLMGUARD_OUTCOME_OK,
                                 .latency_ms = 5, .final = 1 };
    const char *not_b[] = { "b" };

    check(llmguard_permit(g, &req, NULL, 0, &p) == 0 &&
          strcmp(p.provider, "b") == 0, "a is in cooldown: b", p.provider);
    r.permit_id = p.permit_id;
    check(llmguard_report(g, &r, NULL) == 0, "b's success reported",
          llmguard_last_error(g));
    check(llmguard_permit(g, &req, not_b, 1, &p) == 0 &&
          strcmp(p.provider, "a") == 0 && p.all_degraded,
          "with b excluded, a, degraded", p.provider);
    r.permit_id = p.permit_id;
    r.tokens_used = 3000;
    check(llmguard_report(g, &r, NULL) == 0, "a's 3000 tokens reported",
          llmguard_last_error(g));
}

/* Arguments the library refuses before anything is sent. */
static void
refused(llmguard_t *g)
{
    struct llmguard_request req = { .timeout_s = -1 };
    struct llmguard_permit p;
    struct llmguard_report r = { .permit_id = 1, .outcome = 17 };
    struct llmguard_report_reply rr;
    const char *tried[65];
    char long_id[200];

    check(llmguard_permit(g, &req, NULL, 0, &p) == LLMGUARD_EINVAL,
          "a negative timeout", llmguard_last_error(g));
    req.timeout_s = 0;
    check(llmguard_permit(g, NULL, NULL, 0, &p) == LLMGUARD_EINVAL &&
          llmguard_permit(g, &req, NULL, 0, NULL) == LLMGUARD_EINVAL,
          "no request, no permit", "");
    for (int i = 0; i < 65; i++)
        tried[i] = "a";
    check(llmguard_permit(g, &req, tried, 65, &p) == LLMGUARD_EINVAL,
          "65 excluded", llmguard_last_error(g));
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    req.call_id = long_id;
    check(llmguard_permit(g, &req, NULL, 0, &p) == LLMGUARD_EINVAL,
          "a call_id of 199 bytes", llmguard_last_error(g));
    req.call_id = NULL;
    req.preferred_provider = "nope";
    check(llmguard_permit(g, &req, NULL, 0, &p) == LLMGUARD_ENOPROVIDER,
          "an unknown preferred provider", llmguard_last_error(g));
    rr.try_again = -1;
    check(llmguard_report(g, &r, &rr) == LLMGUARD_EINVAL && rr.try_again == 0,
          "an unknown outcome", llmguard_last_error(g));
}

/* A permit that names a model says the model id to call; the report's own
 * headers reach the daemon, which holds that model (not its provider). */
static void
model_headers(llmguard_t *g)
{
    static const char *const hdrs[] = {
        "X-RateLimit-Remaining-Requests", "0",
        "x-ratelimit-reset-requests", "2s",
        "server", "mock",
    };
    struct llmguard_request req = { .model = "mb", .timeout_s = 0 };
    struct llmguard_request plain = { .preferred_provider = "b",
                                      .timeout_s = 0 };
    struct llmguard_permit p;
    struct llmguard_report r = { .outcome = LLMGUARD_OUTCOME_OK,
                                 .latency_ms = -1, .final = 1,
                                 .headers = hdrs, .nheaders = 3 };
    struct llmguard_report_reply rr;

    check(llmguard_permit(g, &req, NULL, 0, &p) == 0 &&
          strcmp(p.provider, "b") == 0 && strcmp(p.model, "mb") == 0,
          "a permit for model mb: provider b, model id mb", p.model);
    r.permit_id = p.permit_id;
    check(llmguard_report(g, &r, &rr) == 0, "its report, with headers",
          llmguard_last_error(g));
    check(llmguard_permit(g, &req, NULL, 0, &p) == LLMGUARD_ETIMEDOUT,
          "remaining 0, reset 2s: no token for mb at once",
          llmguard_last_error(g));
    check(llmguard_permit(g, &plain, NULL, 0, &p) == 0 &&
          strcmp(p.provider, "b") == 0 && p.model[0] == '\0',
          "a permit without a model on b is not held", p.provider);
    r = (struct llmguard_report){ .permit_id = p.permit_id,
                                  .outcome = LLMGUARD_OUTCOME_OK,
                                  .latency_ms = -1, .final = 1 };
    check(llmguard_report(g, &r, &rr) == 0, "and reported",
          llmguard_last_error(g));
}

int
main(int argc, char **argv)
{
    llmguard_t *g;

    if (argc != 2) {
        fprintf(stderr, "usage: attempts SOCKET\n");
        return 2;
    }
    g = llmguard_open(argv[1]);
    failover(g);
    charged(g);
    refused(g);
    model_headers(g);
    llmguard_close(g);
    return fails ? 1 : 0;
}
