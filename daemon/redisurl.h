/*
 * redisurl.h - REDIS_URL, parsed and printed with its password masked
 * (llmguard.env(5), "Several hosts").
 *
 *   redis://[user:pass@]host[:port][/db]      TCP, port 6379
 *   rediss://[user:pass@]host[:port][/db]     TCP with TLS
 *   unix://[user:pass@]/path[?db=N]           a Unix socket
 *
 * The user and the password are percent-decoded; a URL with a password
 * but no user ("redis://:pass@host") authenticates with the password
 * alone.  An IPv6 host is written in brackets.  Pure module: no I/O.
 */
#ifndef LLMGUARD_REDISURL_H
#define LLMGUARD_REDISURL_H

#include <stdbool.h>
#include <stddef.h>

#define REDISURL_MAX 1024

enum redisurl_scheme { REDISURL_TCP, REDISURL_TLS, REDISURL_UNIX };

struct redisurl {
    enum redisurl_scheme scheme;
    char user[256];         /* "" when none */
    char pass[256];         /* "" when none */
    bool has_pass;
    char host[256];         /* TCP: name or address, without brackets */
    int port;               /* TCP */
    char path[108];         /* unix: the socket (sun_path's size) */
    int db;                 /* SELECT db; 0 by default */
};

/*
 * Parse url into u.  Returns 0, or -1 with what is wrong in err (never
 * the password).
 */
int redisurl_parse(const char *url, struct redisurl *u, char *err,
                   size_t errlen);

/*
 * url with the password of its userinfo replaced by "***" (url itself,
 * copied, when it has none or does not parse), into buf.  Returns buf.
 */
const char *redisurl_mask(const char *url, char *buf, size_t len);

#endif
