/*
 * redis.h - a Redis connection on the event loop (llmguardd(8), "Several
 * hosts").
 *
 * The I/O is a libevent bufferevent: a TCP or Unix socket, with an OpenSSL
 * filter on top for rediss://, so plain and TLS connections take one path
 * (hiredis 0.14 has no TLS of its own).  hiredis formats the commands
 * (redisFormatCommandArgv) and parses the replies (redisReader).
 *
 * Commands are pipelined: each gets its callback, called once, in the
 * order sent.  Every exchange is bounded by the timeout: when the oldest
 * command has no reply by then (or a connection attempt has not finished),
 * Redis is unreachable: the connection is dropped, every pending callback
 * is called once with an error, and the connection is tried again after a
 * backoff that doubles from 50 ms up to 1 s.  A connection is up once its
 * handshake has answered: AUTH (password, or user and password), SELECT,
 * and SCRIPT LOAD of every registered script.  Commands given while it is
 * not up are refused at once (the caller falls back; nothing waits).
 *
 * Scripts run by EVALSHA (the SHA1 computed here); a NOSCRIPT reply (a
 * flushed script cache, a restarted or failed-over Redis) loads the script
 * again and retries once, transparently.
 */
#ifndef LLMGUARD_REDIS_H
#define LLMGUARD_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

struct redis;

struct redis_opts {
    const char *url;            /* REDIS_URL (redisurl.h) */
    const char *ca_file;        /* TLS: "" for the system's CAs */
    const char *cert_file;      /* TLS client certificate, "" for none */
    const char *key_file;
    double timeout_s;           /* one exchange */
};

/* The connection came up (up), or went down or failed to come up (why
 * says what happened): called at every attempt that fails. */
typedef void (*redis_state_fn)(bool up, const char *why, void *arg);

/*
 * A reply: r is the reply (an error reply is r->type REDIS_REPLY_ERROR),
 * or NULL with err saying why there is none (timeout, connection lost).
 * r is freed after the call.
 */
typedef void (*redis_reply_fn)(const redisReply *r, const char *err,
                               void *arg);

/*
 * Set up the connection to opts->url and start connecting (it never
 * blocks).  NULL with the reason in err when the URL or the TLS files are
 * wrong.
 */
struct redis *redis_new(struct event_base *base, const struct redis_opts *o,
                        redis_state_fn on_state, void *arg, char *err,
                        size_t errlen);
/* Close; pending callbacks are called with an error first. */
void redis_free(struct redis *r);

/* Register a Lua script (before redis_new's connection is up, or later:
 * it is loaded at the next connection).  Returns its index, or -1. */
int redis_script(struct redis *r, const char *body);

/*
 * Send a command (argv[0] is its name).  Returns 0 and calls fn once
 * later, or -1 at once (not up, out of memory): fn is then never called.
 */
int redis_command(struct redis *r, int argc, const char **argv,
                  const size_t *lens, redis_reply_fn fn, void *arg);
/* EVALSHA of script with nkeys keys among argv[0..argc-1]; as
 * redis_command. */
int redis_eval(struct redis *r, int script, int nkeys, int argc,
               const char **argv, const size_t *lens, redis_reply_fn fn,
               void *arg);

/* An argument vector for redis_command() and redis_eval(), built one
 * formatted string at a time.  Zero it to start.  Once an add fails (out
 * of memory) every later one fails too: check oom, or the last add, before
 * sending it. */
struct redis_args {
    char **v;
    size_t *len;
    size_t n, cap;
    bool oom;
};
int redis_args_addf(struct redis_args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Replace argument i (< n) by a formatted string, as redis_args_addf. */
int redis_args_setf(struct redis_args *a, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void redis_args_free(struct redis_args *a);

bool redis_up(const struct redis *r);
/* The last error seen ("" when none): a refused AUTH, a timeout... */
const char *redis_last_error(const struct redis *r);
/* Errors so far: failed connections, timeouts, error replies. */
uint64_t redis_errors(const struct redis *r);

/* nbytes random bytes (getrandom(2)) as lower-case hex in out, which
 * holds 2 * nbytes + 1: an instance's id among the fleet's.  Exits when
 * the kernel gives none. */
void redis_random_hex(char *out, size_t nbytes);

#endif
