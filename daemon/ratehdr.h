/*
 * ratehdr.h - what a provider's response headers say about its rate
 * limits: the reader of the headers the daemon will feed back into its
 * buckets.
 *
 * Pure module: no I/O, no clock, no allocation.  It understands
 *
 *   x-ratelimit-{limit,remaining,reset}-{requests,tokens}
 *       OpenAI and Groq; the reset is a duration: "6m0s", "1s", "20ms",
 *       "2m59.56s", "1h2m3.5s" (also "us"/"µs" and "ns"), or a bare
 *       number of seconds
 *   anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
 *       {limit,remaining,reset}
 *       Anthropic; the reset is an RFC 3339 time, "2026-12-01T10:00:30Z"
 *       (fractions and a numeric offset allowed)
 *   retry-after       seconds (a non-negative number) or an HTTP date in
 *                     any of the three forms of RFC 9110
 *   retry-after-ms    milliseconds
 *
 * in any case of the name.  Limits and remainders are non-negative
 * numbers.  A reset is given as seconds from the moment of the response
 * (an absolute time counts from the now_s it is fed with, and one in the
 * past is 0).  A header it knows with a value it cannot read is counted
 * in `malformed` and otherwise ignored; one it does not know is ignored.
 */
#ifndef LLMGUARD_RATEHDR_H
#define LLMGUARD_RATEHDR_H

#include <stdbool.h>
#include <stddef.h>

/* Which limit a header speaks of. */
enum ratehdr_kind {
    RATEHDR_REQUESTS,
    RATEHDR_TOKENS,
    RATEHDR_INPUT_TOKENS,       /* Anthropic only */
    RATEHDR_OUTPUT_TOKENS,      /* Anthropic only */
    RATEHDR__KINDS
};

struct ratehdr_limit {
    bool has_limit, has_remaining, has_reset;
    double limit;
    double remaining;
    double reset_s;             /* seconds from the response, >= 0 */
};

struct ratehdr {
    struct ratehdr_limit kind[RATEHDR__KINDS];
    bool has_retry_after;
    double retry_after_s;       /* >= 0; retry-after-ms wins */
    unsigned malformed;         /* known names, unreadable values */
};

void ratehdr_init(struct ratehdr *h);

/*
 * One header of a response received at now_s (unix seconds).  Returns 1
 * when it is one of the names above and was read, 0 when it is none of
 * them, -1 when it is one but its value could not be read (counted).
 */
int ratehdr_feed(struct ratehdr *h, const char *name, size_t name_len,
                 const char *value, size_t value_len, double now_s);

/* Whether name (any case) is one of the headers above: what a client
 * passes on in a report. */
bool ratehdr_known(const char *name, size_t name_len);

/* The readers, each 0 with *out set, or -1. */
int ratehdr_duration(const char *s, size_t len, double *out_s);
int ratehdr_rfc3339(const char *s, size_t len, double *out_unix_s);
int ratehdr_http_date(const char *s, size_t len, double *out_unix_s);

/* Name of a kind: "requests", "tokens", "input_tokens", "output_tokens". */
const char *ratehdr_kind_name(enum ratehdr_kind kind);

#endif
