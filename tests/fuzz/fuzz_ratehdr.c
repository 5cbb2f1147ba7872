/*
 * fuzz_ratehdr.c - libFuzzer harness for the reader of providers'
 * rate-limit headers (daemon/ratehdr.c).
 *
 * Input: header lines "name: value", separated by newlines, as a provider
 * could send them (any bytes in either part).  Each is fed to one struct
 * ratehdr at a fixed now; every value is also given to each reader alone.
 * Checked: ratehdr_feed() answers -1, 0 or 1; 0 exactly for names it does
 * not know; every value it sets is finite and not negative; `malformed`
 * counts its -1s; the readers give finite values, a duration never below
 * 0.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_msg.h"
#include "ratehdr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW 1725043223.0

static void
check_limit(const struct ratehdr_limit *l)
{
    FUZZ_CHECK(!l->has_limit || (isfinite(l->limit) && l->limit >= 0));
    FUZZ_CHECK(!l->has_remaining ||
               (isfinite(l->remaining) && l->remaining >= 0));
    FUZZ_CHECK(!l->has_reset || (isfinite(l->reset_s) && l->reset_s >= 0));
}

/* The readers alone on value. */
static void
readers(const char *v, size_t len)
{
    double d;

    if (ratehdr_duration(v, len, &d) == 0)
        FUZZ_CHECK(isfinite(d) && d >= 0);
    if (ratehdr_rfc3339(v, len, &d) == 0)
        FUZZ_CHECK(isfinite(d));
    if (ratehdr_http_date(v, len, &d) == 0)
        FUZZ_CHECK(isfinite(d) && d >= 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    struct ratehdr h;
    unsigned bad = 0;

    ratehdr_init(&h);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL) {
            const char *v = colon + 1;
            size_t vlen = (size_t)(line_end - v);
            int r = ratehdr_feed(&h, p, (size_t)(colon - p), v, vlen, NOW);
            FUZZ_CHECK(r >= -1 && r <= 1);
            bad += r < 0;
            readers(v, vlen);
        }
        p = nl ? nl + 1 : end;
    }
    for (int k = 0; k < RATEHDR__KINDS; k++)
        check_limit(&h.kind[k]);
    FUZZ_CHECK(!h.has_retry_after ||
               (isfinite(h.retry_after_s) && h.retry_after_s >= 0));
    FUZZ_CHECK(h.malformed == bad);
    return 0;
}
