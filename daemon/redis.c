/*
 * redis.c - a pipelined Redis connection on bufferevents; see redis.h.
 *
 * Why bufferevents and hiredis' reader rather than hiredis' own async
 * context: hiredis 0.14 cannot speak TLS, and libevent's OpenSSL
 * bufferevent can, so one code path serves redis://, rediss:// and
 * unix://; hiredis still does what it is good at, RESP in and out.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "log.h"
#include "redis.h"
#include "redisurl.h"

#define BACKOFF_MIN_S 0.05
#define BACKOFF_MAX_S 1.0
#define MAX_SCRIPTS 16

enum state { DOWN, CONNECTING, HANDSHAKE, UP };

struct pending {
    TAILQ_ENTRY(pending) entry;
    redis_reply_fn fn;          /* NULL: a handshake step */
    void *arg;
    double sent_s;
    int script;                 /* an EVALSHA of it, else -1 */
    bool retried;               /* after a NOSCRIPT */
    bool last_step;             /* the handshake's last reply */
    char *cmd;                  /* kept for the NOSCRIPT retry */
    size_t len;
};

struct script {
    char *body;
    char sha[41];
};

struct redis {
    struct event_base *base;
    struct evdns_base *dns;
    struct redisurl url;
    SSL_CTX *ssl_ctx;           /* rediss:// */
    double timeout_s;
    redis_state_fn on_state;
    void *arg;
    enum state state;
    struct bufferevent *bev;
    redisReader *reader;
    TAILQ_HEAD(pendq, pending) pending;
    struct event *timer;        /* the exchange timeout */
    struct event *retry;        /* the next connection attempt */
    double backoff_s;
    double connect_s;
    struct script scripts[MAX_SCRIPTS];
    int nscripts;
    char last_error[256];
    uint64_t errors;
};

static void start_connect(struct redis *r);

static void
sha1_hex(const char *s, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    EVP_Digest(s, strlen(s), md, &n, EVP_sha1(), NULL);
    for (unsigned int i = 0; i < n && i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Arm the exchange timer for the oldest pending command (or the
 * connection attempt); disarm it when nothing is outstanding. */
static void
arm(struct redis *r)
{
    struct pending *p = TAILQ_FIRST(&r->pending);
    double since, left;
    struct timeval tv;

    if (p == NULL && r->state != CONNECTING) {
        evtimer_del(r->timer);
        return;
    }
    since = p != NULL ? p->sent_s : r->connect_s;
    left = fmax(0, since + r->timeout_s - clock_mono());
    tv.tv_sec = (time_t)left;
    tv.tv_usec = (suseconds_t)((left - (double)tv.tv_sec) * 1e6) + 1;
    evtimer_add(r->timer, &tv);
}

/* Drop the connection: every pending callback hears why, once; the next
 * attempt comes after the backoff. */
static void
drop(struct redis *r, const char *why)
{
    struct pending *p;
    struct timeval tv;

    snprintf(r->last_error, sizeof(r->last_error), "%s", why);
    r->errors++;
    if (r->bev != NULL)
        bufferevent_free(r->bev);
    r->bev = NULL;
    if (r->reader != NULL)
        redisReaderFree(r->reader);
    r->reader = NULL;
    r->state = DOWN;
    evtimer_del(r->timer);
    while ((p = TAILQ_FIRST(&r->pending)) != NULL) {
        TAILQ_REMOVE(&r->pending, p, entry);
        if (p->fn != NULL)
            p->fn(NULL, why, p->arg);
        free(p->cmd);
        free(p);
    }
    if (r->on_state != NULL)
        r->on_state(false, why, r->arg);
    tv.tv_sec = (time_t)r->backoff_s;
    tv.tv_usec = (suseconds_t)((r->backoff_s - (double)tv.tv_sec) * 1e6);
    evtimer_add(r->retry, &tv);
    r->backoff_s = fmin(BACKOFF_MAX_S, r->backoff_s * 2);
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct redis *r = arg;
    char why[96];

    snprintf(why, sizeof(why), "no answer within %.0f ms",
             r->timeout_s * 1e3);
    drop(r, why);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    start_connect(arg);
}

/* Queue cmd (malloc'ed, owned from now on) and write it. */
static int
send_cmd(struct redis *r, char *cmd, size_t len, redis_reply_fn fn,
         void *arg, int script)
{
    struct pending *p = calloc(1, sizeof(*p));
    bool was_empty = TAILQ_EMPTY(&r->pending);

    if (p == NULL || bufferevent_write(r->bev, cmd, len) < 0) {
        free(p);
        free(cmd);
        return -1;
    }
    p->fn = fn;
    p->arg = arg;
    p->sent_s = clock_mono();
    p->script = script;
    if (script >= 0) {
        p->cmd = cmd;
        p->len = len;
    } else {
        free(cmd);
    }
    TAILQ_INSERT_TAIL(&r->pending, p, entry);
    if (was_empty)
        arm(r);
    return 0;
}

/* Format and send argv; a handshake step when fn is NULL. */
static int
send_argv(struct redis *r, int argc, const char **argv, const size_t *lens,
          redis_reply_fn fn, void *arg, int script)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);

    if (len < 0)
        return -1;
    return send_cmd(r, cmd, (size_t)len, fn, arg, script);
}

static int
load_script(struct redis *r, int i)
{
    const char *argv[] = { "SCRIPT", "LOAD", r->scripts[i].body };

    return send_argv(r, 3, argv, NULL, NULL, NULL, -1);
}

/* The connection is open: AUTH, SELECT, the scripts and a PING whose
 * answer says it is up, all pipelined. */
static void
handshake(struct redis *r)
{
    char db[16];
    int rc = 0;

    r->state = HANDSHAKE;
    if (r->url.has_pass && r->url.user[0] != '\0') {
        const char *argv[] = { "AUTH", r->url.user, r->url.pass };
        rc |= send_argv(r, 3, argv, NULL, NULL, NULL, -1);
    } else if (r->url.has_pass) {
        const char *argv[] = { "AUTH", r->url.pass };
        rc |= send_argv(r, 2, argv, NULL, NULL, NULL, -1);
    }
    if (r->url.db != 0) {
        const char *argv[] = { "SELECT", db };
        snprintf(db, sizeof(db), "%d", r->url.db);
        rc |= send_argv(r, 2, argv, NULL, NULL, NULL, -1);
    }
    for (int i = 0; i < r->nscripts; i++)
        rc |= load_script(r, i);
    const char *ping[] = { "PING" };
    rc |= send_argv(r, 1, ping, NULL, NULL, NULL, -1);
    if (rc != 0) {
        drop(r, "out of memory");
        return;
    }
    TAILQ_LAST(&r->pending, pendq)->last_step = true;
}

/* A handshake reply: an error ends the attempt (a wrong password is a
 * log line and last_error, not a crash); the last one brings it up. */
static void
handshake_reply(struct redis *r, const redisReply *rep, bool last)
{
    char why[256];

    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "%.200s", rep->str);
        drop(r, why);
        return;
    }
    if (!last)
        return;
    r->state = UP;
    r->backoff_s = BACKOFF_MIN_S;
    r->last_error[0] = '\0';
    if (r->on_state != NULL)
        r->on_state(true, "", r->arg);
}

/* NOSCRIPT: load the script again and resend the command, once. */
static bool
retry_noscript(struct redis *r, struct pending *p, const redisReply *rep)
{
    if (p->script < 0 || p->retried || rep->type != REDIS_REPLY_ERROR ||
        strncmp(rep->str, "NOSCRIPT", 8) != 0)
        return false;
    if (load_script(r, p->script) < 0)
        return false;
    /* The new pending owns the command from now on, even on failure. */
    if (send_cmd(r, p->cmd, p->len, p->fn, p->arg, p->script) < 0) {
        p->cmd = NULL;
        return false;
    }
    p->cmd = NULL;
    TAILQ_LAST(&r->pending, pendq)->retried = true;
    return true;
}

/* Hand one reply to the oldest pending command. */
static void
dispatch(struct redis *r, redisReply *rep)
{
    struct pending *p = TAILQ_FIRST(&r->pending);

    if (p == NULL) {
        freeReplyObject(rep);
        drop(r, "a reply to no command");
        return;
    }
    TAILQ_REMOVE(&r->pending, p, entry);
    if (rep->type == REDIS_REPLY_ERROR)
        r->errors++;
    if (p->fn == NULL)
        handshake_reply(r, rep, p->last_step);
    else if (!retry_noscript(r, p, rep))
        p->fn(rep, NULL, p->arg);
    freeReplyObject(rep);
    free(p->cmd);
    free(p);
    if (r->state != DOWN)
        arm(r);
}

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct redis *r = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    void *rep;

    if (redisReaderFeed(r->reader, (const char *)evbuffer_pullup(in, -1),
                        n) != REDIS_OK) {
        drop(r, "out of memory");
        return;
    }
    evbuffer_drain(in, n);
    while (r->state != DOWN) {
        if (redisReaderGetReply(r->reader, &rep) != REDIS_OK) {
            drop(r, "a reply that is not RESP");
            return;
        }
        if (rep == NULL)
            break;
        dispatch(r, rep);
    }
}

/* The TLS layer over the connected socket. */
static int
start_tls(struct redis *r)
{
    SSL *ssl = SSL_new(r->ssl_ctx);
    struct bufferevent *tls;
    X509_VERIFY_PARAM *vp;

    if (ssl == NULL)
        return -1;
    SSL_set_tlsext_host_name(ssl, r->url.host);
    vp = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_ip_asc(vp, r->url.host) != 1)
        X509_VERIFY_PARAM_set1_host(vp, r->url.host, 0);
    tls = bufferevent_openssl_filter_new(r->base, r->bev, ssl,
                                         BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (tls == NULL) {
        SSL_free(ssl);
        return -1;
    }
    r->bev = tls;
    return 0;
}

static void on_event(struct bufferevent *bev, short what, void *arg);

/* Why a connection attempt or a connection failed, into buf. */
static const char *
failure(struct redis *r, short what, char *buf, size_t len)
{
    unsigned long e = bufferevent_get_openssl_error(r->bev);
    int dns = bufferevent_socket_get_dns_error(r->bev);

    if (e != 0)
        snprintf(buf, len, "TLS: %s", ERR_reason_error_string(e));
    else if (dns != 0)
        snprintf(buf, len, "%.100s: %s", r->url.host,
                 evutil_gai_strerror(dns));
    else if (what & BEV_EVENT_EOF)
        snprintf(buf, len, "connection closed by Redis");
    else
        snprintf(buf, len, "%s", evutil_socket_error_to_string(
                     EVUTIL_SOCKET_ERROR()));
    return buf;
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct redis *r = arg;
    char why[256];

    if (what & BEV_EVENT_CONNECTED) {
        if (r->url.scheme == REDISURL_TLS && r->ssl_ctx != NULL &&
            bufferevent_get_underlying(r->bev) == NULL) {
            if (start_tls(r) < 0) {
                drop(r, "TLS: cannot set up");
                return;
            }
            bufferevent_setcb(r->bev, on_read, NULL, on_event, r);
            bufferevent_enable(r->bev, EV_READ | EV_WRITE);
            return;     /* connected again once the TLS handshake is done */
        }
        handshake(r);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))
        drop(r, failure(r, what, why, sizeof(why)));
}

static int
connect_unix(struct redis *r)
{
    struct sockaddr_un sun;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, r->url.path, strlen(r->url.path) + 1);
    return bufferevent_socket_connect(r->bev, (struct sockaddr *)&sun,
                                      sizeof(sun));
}

static void
start_connect(struct redis *r)
{
    int rc;

    r->bev = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
    r->reader = redisReaderCreate();
    if (r->bev == NULL || r->reader == NULL) {
        drop(r, "out of memory");
        return;
    }
    bufferevent_setcb(r->bev, on_read, NULL, on_event, r);
    bufferevent_enable(r->bev, EV_READ | EV_WRITE);
    r->state = CONNECTING;
    r->connect_s = clock_mono();
    arm(r);
    if (r->url.scheme == REDISURL_UNIX)
        rc = connect_unix(r);
    else
        rc = bufferevent_socket_connect_hostname(r->bev, r->dns, AF_UNSPEC,
                                                 r->url.host, r->url.port);
    if (rc < 0 && r->state == CONNECTING) {
        char why[256];
        drop(r, failure(r, BEV_EVENT_ERROR, why, sizeof(why)));
    }
}

/* The TLS context: the CA to verify with, the client's own pair. */
static int
tls_context(struct redis *r, const struct redis_opts *o, char *err,
            size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    const char *what = "cannot create a TLS context";

    if (ctx == NULL)
        goto fail;
    r->ssl_ctx = ctx;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    what = "LLMGUARD_REDIS_CA_FILE: cannot load it";
    if (o->ca_file[0] != '\0'
        ? SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1
        : SSL_CTX_set_default_verify_paths(ctx) != 1)
        goto fail;
    what = "LLMGUARD_REDIS_CERT_FILE: cannot load it";
    if (o->cert_file[0] != '\0' &&
        SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1)
        goto fail;
    what = "LLMGUARD_REDIS_KEY_FILE: cannot load it (or it does not match "
           "the certificate)";
    if (o->key_file[0] != '\0' &&
        (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1
         || SSL_CTX_check_private_key(ctx) != 1))
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "%s: %s", what,
             ERR_reason_error_string(ERR_peek_last_error()) ?
             ERR_reason_error_string(ERR_peek_last_error()) : "error");
    return -1;
}

struct redis *
redis_new(struct event_base *base, const struct redis_opts *o,
          redis_state_fn on_state, void *arg, char *err, size_t errlen)
{
    struct redis *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->base = base;
    r->timeout_s = o->timeout_s;
    r->on_state = on_state;
    r->arg = arg;
    r->backoff_s = BACKOFF_MIN_S;
    TAILQ_INIT(&r->pending);
    if (redisurl_parse(o->url, &r->url, err, errlen) < 0 ||
        (r->url.scheme == REDISURL_TLS && tls_context(r, o, err, errlen) < 0))
        goto fail;
    r->timer = evtimer_new(base, on_timeout, r);
    r->retry = evtimer_new(base, on_retry, r);
    if (r->url.scheme != REDISURL_UNIX)
        r->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (r->timer == NULL || r->retry == NULL ||
        (r->url.scheme != REDISURL_UNIX && r->dns == NULL)) {
        snprintf(err, errlen, "cannot set up the connection's events");
        goto fail;
    }
    struct timeval now = { 0, 0 };
    evtimer_add(r->retry, &now);
    return r;
fail:
    redis_free(r);
    return NULL;
}

void
redis_free(struct redis *r)
{
    if (r == NULL)
        return;
    r->on_state = NULL;
    if (r->timer != NULL && r->retry != NULL)
        drop(r, "shutting down");
    if (r->timer != NULL)
        event_free(r->timer);
    if (r->retry != NULL)
        event_free(r->retry);
    if (r->dns != NULL)
        evdns_base_free(r->dns, 0);
    if (r->ssl_ctx != NULL)
        SSL_CTX_free(r->ssl_ctx);
    for (int i = 0; i < r->nscripts; i++)
        free(r->scripts[i].body);
    free(r);
}

int
redis_script(struct redis *r, const char *body)
{
    struct script *s;

    if (r->nscripts == MAX_SCRIPTS)
        return -1;
    s = &r->scripts[r->nscripts];
    if ((s->body = strdup(body)) == NULL)
        return -1;
    sha1_hex(body, s->sha);
    if (r->state == UP && load_script(r, r->nscripts) < 0) {
        free(s->body);
        return -1;
    }
    return r->nscripts++;
}

int
redis_command(struct redis *r, int argc, const char **argv,
              const size_t *lens, redis_reply_fn fn, void *arg)
{
    if (r->state != UP)
        return -1;
    return send_argv(r, argc, argv, lens, fn, arg, -1);
}

int
redis_eval(struct redis *r, int script, int nkeys, int argc,
           const char **argv, const size_t *lens, redis_reply_fn fn,
           void *arg)
{
    const char *sv[32], **v = sv;
    size_t sl[32], *l = sl;
    char nk[16];
    int rc;

    if (r->state != UP || script < 0 || script >= r->nscripts || argc < 0)
        return -1;
    /* A long command (a batch of quotas) on the heap. */
    if (argc + 3 > 32 &&
        ((v = malloc((size_t)(argc + 3) * sizeof(*v))) == NULL ||
         (l = malloc((size_t)(argc + 3) * sizeof(*l))) == NULL)) {
        free(v);
        return -1;
    }
    snprintf(nk, sizeof(nk), "%d", nkeys);
    v[0] = "EVALSHA";
    v[1] = r->scripts[script].sha;
    v[2] = nk;
    l[0] = 7;
    l[1] = 40;
    l[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        v[i + 3] = argv[i];
        l[i + 3] = lens != NULL ? lens[i] : strlen(argv[i]);
    }
    rc = send_argv(r, argc + 3, v, l, fn, arg, script);
    if (v != sv) {
        free(v);
        free(l);
    }
    return rc;
}

bool
redis_up(const struct redis *r)
{
    return r->state == UP;
}

const char *
redis_last_error(const struct redis *r)
{
    return r->last_error;
}

uint64_t
redis_errors(const struct redis *r)
{
    return r->errors;
}

void
redis_random_hex(char *out, size_t nbytes)
{
    unsigned char r[64];

    if (nbytes > sizeof(r) ||
        getrandom(r, nbytes, 0) != (ssize_t)nbytes)
        fatalx(1, "getrandom: cannot make a random instance id");
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* ---- argument vectors --------------------------------------------------- */

int
redis_args_addf(struct redis_args *sv, const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    if (sv->oom)
        return -1;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? 2 * sv->cap : 64;
        char **v = realloc(sv->v, cap * sizeof(*v));
        size_t *len = v ? realloc(sv->len, cap * sizeof(*len)) : NULL;

        if (v != NULL)
            sv->v = v;
        if (len == NULL) {
            sv->oom = true;
            return -1;
        }
        sv->len = len;
        sv->cap = cap;
    }
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sv->oom = true;
        return -1;
    }
    sv->v[sv->n] = s;
    sv->len[sv->n++] = (size_t)n;
    return 0;
}

void
redis_args_free(struct redis_args *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    free(sv->len);
}

int
redis_args_setf(struct redis_args *a, size_t i, const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    if (a->oom)
        return -1;
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        a->oom = true;
        return -1;
    }
    free(a->v[i]);
    a->v[i] = s;
    a->len[i] = (size_t)n;
    return 0;
}
