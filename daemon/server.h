/*
 * server.h - the control socket: listen, accept, peer credentials,
 * framing, write buffering, back-pressure and close.
 *
 * The transport knows no op.  It is given a dispatch callback, run once per
 * decoded request, and a list of per-connection slots, each with a close
 * hook: a subsystem keeps what it holds for a connection (waiters, permits,
 * held replies) in its slot, and the hook drops it when the connection
 * ends, in the order the slots were added.  Peers are opaque: struct conn
 * is private to server.c.
 *
 * A dispatch callback answers with conn_reply()/conn_error() (sent when
 * the read pass ends), or keeps what it needs to answer later and then
 * calls conn_flush() itself.
 */
#ifndef LLMGUARD_SERVER_H
#define LLMGUARD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <event2/event.h>
#include <msgpack.h>

#include "proto.h"

#define SERVER_MAX_SLOTS 5

struct conn;
struct server;

typedef void (*server_dispatch_fn)(struct conn *c, struct proto_req *req,
                                   void *arg);
/* A connection ends: drop state (what its slot holds, never NULL).  The
 * connection can no longer be written to. */
typedef void (*server_close_fn)(void *state);

struct server_socket {
    const char *path;
    bool is_default;        /* the per-user directory: create and check it */
    unsigned mode;          /* LLMGUARD_SOCKET_MODE */
    const char *group;      /* LLMGUARD_SOCKET_GROUP, "" for none */
};

/* A transport on base that hands each request to dispatch(c, req, arg);
 * NULL when out of memory. */
struct server *server_new(struct event_base *base, server_dispatch_fn dispatch,
                          void *arg);
/*
 * Add a per-connection slot whose state close() drops when a connection
 * ends; returns the slot's number for conn_slot().  Slots are closed in
 * the order they were added.  Call before server_listen().
 */
int server_add_slot(struct server *srv, server_close_fn close);
/*
 * Bind the socket (llmguardd(8), "The socket"), start accepting.  Returns
 * 0, or the exit status after logging why: 1 when another daemon answers
 * on it, 78 (EX_CONFIG) for a path it may not use.
 */
int server_listen(struct server *srv, const struct server_socket *sock);
/*
 * Listen on fd instead: a bound, listening Unix stream socket handed over
 * by the service manager (socket activation).  It stays the manager's: the
 * socket file is not removed at exit.  Returns 0, or 1 after logging.
 */
int server_listen_fd(struct server *srv, int fd);
/* Stop accepting, close every connection (running the close hooks),
 * remove the socket file, free srv. */
void server_free(struct server *srv);
size_t server_nconns(const struct server *srv);

/* The peer's credentials (SO_PEERCRED); uid (uid_t)-1 when unknown. */
uid_t conn_uid(const struct conn *c);
pid_t conn_pid(const struct conn *c);
/* Memory for a reply built while the request is handled (cleared after). */
msgpack_zone *conn_zone(struct conn *c);
/* A subsystem's state for this connection: NULL until it stores one. */
void **conn_slot(struct conn *c, int slot);

/* Queue an encoded reply or error on c (sent when the read pass ends). */
void conn_reply(struct conn *c, enum proto_op op, uint64_t id,
                const void *msg);
void conn_error(struct conn *c, uint64_t id, const struct proto_error *e);
/* Hand what was queued to the socket (for replies sent outside a read
 * pass, e.g. a granted waiter). */
void conn_flush(struct conn *c);
/* Queue an already encoded frame (a held reply). */
void conn_send_raw(struct conn *c, const void *data, size_t len);

/*
 * Holding a reply back: conn_out_mark() before queueing it, then
 * conn_out_since() gives the bytes queued since, and conn_out_cut() takes
 * them out of the queue again.
 */
size_t conn_out_mark(const struct conn *c);
const void *conn_out_since(const struct conn *c, size_t mark, size_t *len);
void conn_out_cut(struct conn *c, size_t mark);

#endif
