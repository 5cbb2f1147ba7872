/*
 * server.h - the daemon's state, its control socket and its connections.
 *
 * server.c owns sockets, connections and framing; ops.c owns the dispatch
 * table and the op handlers.  A handler runs on one decoded request and
 * either answers at once or keeps the request for later (a waiting acquire).
 */
#ifndef LLMGUARD_SERVER_H
#define LLMGUARD_SERVER_H

#include <stdbool.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/listener.h>
#include <msgpack.h>

#include "buckets.h"
#include "config.h"
#include "proto.h"

struct call;
struct held;
struct metrics;
struct permit;
struct quota;
struct quota_decision;
struct router;
struct store;

struct server {
    struct event_base *base;
    struct evconnlistener *listener;
    bool accept_paused;         /* out of descriptors: see accept_error_cb */
    struct event *sig_term, *sig_int, *sig_hup;
    struct config cfg;
    struct config_args args;    /* to read the configuration again */
    char socket_path[CONFIG_PATH_MAX];
    bool socket_bound;          /* ours to unlink at exit */
    uid_t uid;                  /* the daemon's own uid (admin) */
    double started_mono_s;
    TAILQ_HEAD(, conn) conns;
    size_t nconns;
    struct provider *providers; /* in config order: priority, then name */
    size_t nproviders;
    struct quota *quota;        /* usage in memory: authoritative */
    struct store *store;        /* SQLite */
    struct event *flush_ev;     /* group commit */
    struct event *prune_ev;
    TAILQ_HEAD(, held) held;    /* replies waiting for a commit (flush 0) */
    bool store_failing;         /* the last write failed */
    char store_error[512];      /* and why */
    uint64_t store_write_errors;
    struct router *router;      /* index i is providers[i] */
    struct permit *permits;     /* granted, unreported: uthash by id */
    uint64_t next_permit_id;
    struct metrics *metrics;
    struct evhttp *http;        /* LLMGUARD_METRICS_LISTEN */
    struct trace_exporter *tracer;  /* OTLP, when an endpoint is set */
    uint64_t spans_dropped_seen;
};

struct conn {
    TAILQ_ENTRY(conn) entry;
    struct server *srv;
    int fd;
    struct event *ev_read;      /* persistent, off while throttled */
    struct event *ev_write;     /* only while output is pending */
    struct proto_reader in;     /* bytes read, not yet whole frames */
    struct evbuffer *pending;   /* replies the socket did not take yet */
    uid_t uid;                  /* SO_PEERCRED */
    pid_t pid;
    msgpack_zone zone;          /* decoded requests; cleared per request */
    msgpack_sbuffer out;        /* replies encoded during one read */
    bool closing;               /* flush what is queued, then close */
    bool throttled;             /* reading paused: the peer does not read */
    struct waiter_list waiters; /* its requests waiting for tokens */
    TAILQ_HEAD(, held) held;    /* its replies waiting for a commit */
    TAILQ_HEAD(, permit) permits;   /* its unreported permits */
    struct call *calls;         /* its open calls: uthash by call_id */
};

/* Monotonic and wall-clock seconds; only the event-loop glue reads clocks. */
double server_now_mono(void);
double server_now_wall(void);

/*
 * Set up the socket of DESIGN.md §6 and start accepting.  Exits 1 with a
 * message when another daemon answers on it, 78 for a path it may not use.
 */
int server_listen(struct server *srv);
/* Stop accepting, close every connection, remove the socket file. */
void server_shutdown(struct server *srv);

/* Queue an encoded reply or error on c (sent when the read pass ends). */
void conn_reply(struct conn *c, enum proto_op op, uint64_t id,
                const void *msg);
void conn_error(struct conn *c, uint64_t id, const struct proto_error *e);
/* Hand what conn_reply/conn_error queued to the socket (for replies sent
 * outside a read pass, e.g. a granted waiter). */
void conn_flush(struct conn *c);
/* Queue an already encoded frame (a held reply). */
void conn_send_raw(struct conn *c, const void *data, size_t len);

/*
 * Read the configuration again (SIGHUP, the reload op) and apply it:
 * buckets keep their fill (clamped), quota usage is kept, provider health
 * carries over.  Returns 0, or -1 with the reason in err and the old
 * configuration still in force.
 */
int server_reload(struct server *srv, char *err, size_t errlen);

/* ops.c: run one request; it is answered now or later. */
void ops_dispatch(struct conn *c, struct proto_req *req);
/* Copy a wire workflow/tenant id into buf (QUOTA_ID_MAX + 1 bytes) as a C
 * string; -1 with bad_request in e when it is not a valid id. */
int ops_id_arg(const struct proto_str *s, const char *field, char *buf,
               struct proto_error *e);
/* Fill e with quota_exceeded and its details for the rejection d; -1. */
int ops_quota_exceeded(const struct quota_decision *d, struct proto_error *e);

#endif
