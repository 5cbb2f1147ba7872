/* ratehdr.c - providers' rate-limit response headers, read. */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ratehdr.h"

#define VALUE_MAX 128           /* longer values are not ours: malformed */

static const char *const kind_names[RATEHDR__KINDS] = {
    [RATEHDR_REQUESTS] = "requests",
    [RATEHDR_TOKENS] = "tokens",
    [RATEHDR_INPUT_TOKENS] = "input_tokens",
    [RATEHDR_OUTPUT_TOKENS] = "output_tokens",
};

const char *
ratehdr_kind_name(enum ratehdr_kind kind)
{
    return (unsigned)kind < RATEHDR__KINDS ? kind_names[kind] : "?";
}

void
ratehdr_init(struct ratehdr *h)
{
    memset(h, 0, sizeof(*h));
}

/* s[0..len-1] as a C string in buf (VALUE_MAX), trimmed; -1 when too long
 * or holding a NUL. */
static int
cstr(const char *s, size_t len, char *buf)
{
    while (len > 0 && isspace((unsigned char)*s))
        s++, len--;
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0 || len >= VALUE_MAX || memchr(s, '\0', len) != NULL)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return 0;
}

/* A finite number >= 0 filling all of buf (no sign, no hex, no inf). */
static int
number(const char *buf, double *out)
{
    char *end;
    double d;

    if (!isdigit((unsigned char)buf[0]) && buf[0] != '.')
        return -1;
    if (strpbrk(buf, "xXpP") != NULL)
        return -1;
    d = strtod(buf, &end);
    if (end == buf || *end != '\0' || !isfinite(d) || d < 0)
        return -1;
    *out = d;
    return 0;
}

int
ratehdr_duration(const char *s, size_t len, double *out_s)
{
    static const struct { const char *unit; double s; } units[] = {
        { "h", 3600 }, { "ms", 1e-3 }, { "m", 60 }, { "s", 1 },
        { "us", 1e-6 }, { "\xc2\xb5s", 1e-6 }, { "ns", 1e-9 },
    };
    char buf[VALUE_MAX], *p;
    double total = 0;

    if (cstr(s, len, buf) < 0)
        return -1;
    if (number(buf, out_s) == 0)        /* a bare number: seconds */
        return 0;
    for (p = buf; *p != '\0';) {
        char *end;
        double n;
        size_t i;
        if (!isdigit((unsigned char)*p) && *p != '.')
            return -1;
        n = strtod(p, &end);
        if (end == p || !isfinite(n))
            return -1;
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
            if (strncmp(end, units[i].unit, strlen(units[i].unit)) == 0)
                break;
        if (i == sizeof(units) / sizeof(units[0]))
            return -1;
        total += n * units[i].s;
        p = end + strlen(units[i].unit);
    }
    if (!isfinite(total))
        return -1;
    *out_s = total;
    return 0;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian), for timegm without
 * the environment. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool
valid_time(int y, int mo, int d, int h, int mi, int sec)
{
    return y >= 1970 && y <= 9999 && mo >= 1 && mo <= 12 && d >= 1 &&
           d <= 31 && h >= 0 && h <= 23 && mi >= 0 && mi <= 59 && sec >= 0 &&
           sec <= 60;
}

/* n digits at *p into *out, advancing p; -1 when they are not digits. */
static int
digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int
ratehdr_rfc3339(const char *s, size_t len, double *out_unix_s)
{
    char buf[VALUE_MAX];
    const char *p = buf;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    double frac = 0;

    if (cstr(s, len, buf) < 0 || digits(&p, 4, &y) < 0 || *p++ != '-' ||
        digits(&p, 2, &mo) < 0 || *p++ != '-' || digits(&p, 2, &d) < 0 ||
        (*p != 'T' && *p != 't' && *p != ' ') || !*p++ ||
        digits(&p, 2, &h) < 0 || *p++ != ':' || digits(&p, 2, &mi) < 0 ||
        *p++ != ':' || digits(&p, 2, &sec) < 0)
        return -1;
    if (*p == '.') {
        double scale = 0.1;
        if (!isdigit((unsigned char)*++p))
            return -1;
        for (; isdigit((unsigned char)*p); p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '+' ? 1 : -1;
        if (digits(&p, 2, &oh) < 0 || *p++ != ':' || digits(&p, 2, &om) < 0 ||
            oh > 23 || om > 59)
            return -1;
    } else {
        return -1;
    }
    if (*p != '\0' || !valid_time(y, mo, d, h, mi, sec))
        return -1;
    *out_unix_s = (double)(days_from_civil(y, mo, d) * 86400 + h * 3600 +
                           mi * 60 + sec) + frac -
                  sign * (oh * 3600 + om * 60);
    return 0;
}

/* The month named by the three letters at p, 1..12, or -1. */
static int
month(const char *p)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

    for (int i = 0; i < 12; i++)
        if (strncmp(p, names + 3 * i, 3) == 0)
            return i + 1;
    return -1;
}

int
ratehdr_http_date(const char *s, size_t len, double *out_unix_s)
{
    char buf[VALUE_MAX], mon[4], wday[16];
    int y, mo, d, h, mi, sec, n = 0;

    if (cstr(s, len, buf) < 0)
        return -1;
    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    if (sscanf(buf, "%3s, %2d %3s %4d %2d:%2d:%2d GMT%n", wday, &d, mon, &y,
               &h, &mi, &sec, &n) == 7 && buf[n] == '\0') {
        /* found */
    /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
    } else if (sscanf(buf, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d GMT%n", wday,
                      &d, mon, &y, &h, &mi, &sec, &n) == 7 && buf[n] == '\0') {
        y += y < 70 ? 2000 : 1900;
    /* asctime: Sun Nov  6 08:49:37 1994 */
    } else if (sscanf(buf, "%3s %3s %2d %2d:%2d:%2d %4d%n", wday, mon, &d, &h,
                      &mi, &sec, &y, &n) == 7 && buf[n] == '\0') {
        /* found */
    } else {
        return -1;
    }
    if ((mo = month(mon)) < 0 || !valid_time(y, mo, d, h, mi, sec))
        return -1;
    *out_unix_s = (double)(days_from_civil(y, mo, d) * 86400 + h * 3600 +
                           mi * 60 + sec);
    return 0;
}

/* What a name says: which kind and which part, or for Retry-After. */
enum part { PART_LIMIT, PART_REMAINING, PART_RESET, PART_RETRY_AFTER,
            PART_RETRY_AFTER_MS };

struct known {
    const char *name;
    enum ratehdr_kind kind;
    enum part part;
    bool rfc3339;               /* the reset is a time, not a duration */
};

static const struct known known[] = {
    { "x-ratelimit-limit-requests", RATEHDR_REQUESTS, PART_LIMIT, false },
    { "x-ratelimit-limit-tokens", RATEHDR_TOKENS, PART_LIMIT, false },
    { "x-ratelimit-remaining-requests", RATEHDR_REQUESTS, PART_REMAINING,
      false },
    { "x-ratelimit-remaining-tokens", RATEHDR_TOKENS, PART_REMAINING, false },
    { "x-ratelimit-reset-requests", RATEHDR_REQUESTS, PART_RESET, false },
    { "x-ratelimit-reset-tokens", RATEHDR_TOKENS, PART_RESET, false },
#define ANTHROPIC(kind, k)                                                    \
    { "anthropic-ratelimit-" kind "-limit", k, PART_LIMIT, true },            \
    { "anthropic-ratelimit-" kind "-remaining", k, PART_REMAINING, true },    \
    { "anthropic-ratelimit-" kind "-reset", k, PART_RESET, true }
    ANTHROPIC("requests", RATEHDR_REQUESTS),
    ANTHROPIC("tokens", RATEHDR_TOKENS),
    ANTHROPIC("input-tokens", RATEHDR_INPUT_TOKENS),
    ANTHROPIC("output-tokens", RATEHDR_OUTPUT_TOKENS),
#undef ANTHROPIC
    { "retry-after", RATEHDR_REQUESTS, PART_RETRY_AFTER, false },
    { "retry-after-ms", RATEHDR_REQUESTS, PART_RETRY_AFTER_MS, false },
};

static const struct known *
lookup(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].name) == len &&
            strncasecmp(known[i].name, name, len) == 0)
            return &known[i];
    return NULL;
}

bool
ratehdr_known(const char *name, size_t name_len)
{
    return lookup(name, name_len) != NULL;
}

/* Seconds from now_s until the time t, never below 0. */
static double
until(double t, double now_s)
{
    return t > now_s ? t - now_s : 0;
}

/* The value of the header k, in seconds or as a number, into *out. */
static int
read_value(const struct known *k, const char *v, size_t vlen, double now_s,
           double *out)
{
    char buf[VALUE_MAX];
    double t;

    switch (k->part) {
    case PART_LIMIT:
    case PART_REMAINING:
        return cstr(v, vlen, buf) < 0 ? -1 : number(buf, out);
    case PART_RESET:
        if (!k->rfc3339)
            return ratehdr_duration(v, vlen, out);
        if (ratehdr_rfc3339(v, vlen, &t) < 0)
            return -1;
        *out = until(t, now_s);
        return 0;
    case PART_RETRY_AFTER:
        if (cstr(v, vlen, buf) == 0 && number(buf, out) == 0)
            return 0;
        if (ratehdr_http_date(v, vlen, &t) < 0)
            return -1;
        *out = until(t, now_s);
        return 0;
    case PART_RETRY_AFTER_MS:
        if (cstr(v, vlen, buf) < 0 || number(buf, out) < 0)
            return -1;
        *out /= 1e3;
        return 0;
    }
    return -1;
}

int
ratehdr_feed(struct ratehdr *h, const char *name, size_t name_len,
             const char *value, size_t value_len, double now_s)
{
    const struct known *k = lookup(name, name_len);
    struct ratehdr_limit *l;
    double v;

    if (k == NULL)
        return 0;
    if (read_value(k, value, value_len, now_s, &v) < 0) {
        h->malformed++;
        return -1;
    }
    l = &h->kind[k->kind];
    switch (k->part) {
    case PART_LIMIT:
        l->has_limit = true;
        l->limit = v;
        break;
    case PART_REMAINING:
        l->has_remaining = true;
        l->remaining = v;
        break;
    case PART_RESET:
        l->has_reset = true;
        l->reset_s = v;
        break;
    case PART_RETRY_AFTER:
        /* retry-after-ms, more precise, wins when both come. */
        if (!h->has_retry_after) {
            h->has_retry_after = true;
            h->retry_after_s = v;
        }
        break;
    case PART_RETRY_AFTER_MS:
        h->has_retry_after = true;
        h->retry_after_s = v;
        break;
    }
    return 1;
}
