/* redisurl.c - REDIS_URL: parsing, and printing with the password masked. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redisurl.h"

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n-1] into out (size len).  Returns -1 on a bad
 * escape, a NUL byte or an overflow. */
static int
decode(const char *s, size_t n, char *out, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -1;
            hi = hexval((unsigned char)s[i + 1]);
            lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == 0 || o + 1 >= len)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* A number from 0 to max in s[0..n-1]; -1 when it is not one. */
static long
number(const char *s, size_t n, long max)
{
    long v = 0;

    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

/* Split userinfo "user:pass" (or "pass"-less) out of *p, up to the last
 * '@' before end.  Returns -1 with err set when it does not decode. */
static int
userinfo(const char **p, const char *end, struct redisurl *u, char *err,
         size_t errlen)
{
    const char *at = NULL, *colon;

    for (const char *q = *p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at == NULL)
        return 0;
    colon = memchr(*p, ':', (size_t)(at - *p));
    if (colon == NULL)
        colon = at;
    if (decode(*p, (size_t)(colon - *p), u->user, sizeof(u->user)) < 0 ||
        (colon < at && decode(colon + 1, (size_t)(at - colon - 1), u->pass,
                              sizeof(u->pass)) < 0)) {
        snprintf(err, errlen, "its user or password is not well "
                 "percent-encoded (or too long)");
        return -1;
    }
    u->has_pass = colon < at;
    if (!u->has_pass) {
        /* "redis://secret@host": a lone word is the password (as redis-cli
         * -u reads it). */
        memcpy(u->pass, u->user, sizeof(u->pass));
        u->user[0] = '\0';
        u->has_pass = u->pass[0] != '\0';
    }
    *p = at + 1;
    return 0;
}

/* host[:port][/db] of a TCP URL, in s (to its end). */
static int
tcp_part(const char *s, struct redisurl *u, char *err, size_t errlen)
{
    const char *slash = strchr(s, '/'), *hend, *colon;
    const char *end = slash ? slash : s + strlen(s);
    long v;

    if (*s == '[') {
        const char *rb = memchr(s, ']', (size_t)(end - s));
        if (rb == NULL) {
            snprintf(err, errlen, "an IPv6 host needs its closing ']'");
            return -1;
        }
        hend = rb;
        s++;
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
        if (rb + 1 < end && colon == NULL) {
            snprintf(err, errlen, "expected ':port' after the ']'");
            return -1;
        }
    } else {
        colon = memchr(s, ':', (size_t)(end - s));
        hend = colon ? colon : end;
    }
    if (hend == s || (size_t)(hend - s) >= sizeof(u->host)) {
        snprintf(err, errlen, "expected a host name or address");
        return -1;
    }
    memcpy(u->host, s, (size_t)(hend - s));
    u->host[hend - s] = '\0';
    u->port = 6379;
    if (colon != NULL) {
        if ((v = number(colon + 1, (size_t)(end - colon - 1), 65535)) < 1) {
            snprintf(err, errlen, "expected a port from 1 to 65535");
            return -1;
        }
        u->port = (int)v;
    }
    if (slash != NULL && slash[1] != '\0') {
        if ((v = number(slash + 1, strlen(slash + 1), 1000000)) < 0) {
            snprintf(err, errlen, "expected a database number after '/'");
            return -1;
        }
        u->db = (int)v;
    }
    return 0;
}

/* /path[?db=N] of a unix URL. */
static int
unix_part(const char *s, struct redisurl *u, char *err, size_t errlen)
{
    const char *q = strchr(s, '?');
    size_t n = q ? (size_t)(q - s) : strlen(s);
    long v;

    if (n < 2 || s[0] != '/' || n >= sizeof(u->path)) {
        snprintf(err, errlen, "expected an absolute socket path of at most "
                 "%zu bytes", sizeof(u->path) - 1);
        return -1;
    }
    memcpy(u->path, s, n);
    u->path[n] = '\0';
    if (q != NULL) {
        if (strncmp(q, "?db=", 4) != 0 ||
            (v = number(q + 4, strlen(q + 4), 1000000)) < 0) {
            snprintf(err, errlen, "expected '?db=N' after the path");
            return -1;
        }
        u->db = (int)v;
    }
    return 0;
}

/*
 * Just past the '@' that ends the userinfo of the rest of a URL p, or p
 * when there is none: TCP, the last '@' before the first '/'; unix, the
 * '@' just before the path's first '/' (a path may hold '@' itself).
 */
static const char *
userinfo_end(enum redisurl_scheme scheme, const char *p)
{
    const char *at = NULL, *end;

    if (scheme == REDISURL_UNIX) {
        if (*p == '/' || (at = strstr(p, "@/")) == NULL)
            return p;
        return at + 1;
    }
    end = strchr(p, '/');
    if (end == NULL)
        end = p + strlen(p);
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    return at ? at + 1 : p;
}

int
redisurl_parse(const char *url, struct redisurl *u, char *err, size_t errlen)
{
    const char *p, *end;

    memset(u, 0, sizeof(*u));
    if (strncmp(url, "redis://", 8) == 0) {
        u->scheme = REDISURL_TCP;
        p = url + 8;
    } else if (strncmp(url, "rediss://", 9) == 0) {
        u->scheme = REDISURL_TLS;
        p = url + 9;
    } else if (strncmp(url, "unix://", 7) == 0) {
        u->scheme = REDISURL_UNIX;
        p = url + 7;
    } else {
        snprintf(err, errlen, "expected redis://, rediss:// or unix://");
        return -1;
    }
    end = userinfo_end(u->scheme, p);
    if (userinfo(&p, end, u, err, errlen) < 0)
        return -1;
    return u->scheme == REDISURL_UNIX ? unix_part(p, u, err, errlen)
                                      : tcp_part(p, u, err, errlen);
}

const char *
redisurl_mask(const char *url, char *buf, size_t len)
{
    const char *sep = strstr(url, "://"), *end, *colon;
    enum redisurl_scheme scheme = strncmp(url, "unix://", 7) == 0
                                  ? REDISURL_UNIX : REDISURL_TCP;

    snprintf(buf, len, "%s", url);
    if (sep == NULL)
        return buf;
    sep += 3;
    if ((end = userinfo_end(scheme, sep)) == sep)
        return buf;
    colon = memchr(sep, ':', (size_t)(end - sep));
    /* A lone word before '@' is the password too. */
    snprintf(buf, len, "%.*s***%s", (int)((colon ? colon + 1 : sep) - url),
             url, end - 1);
    return buf;
}
