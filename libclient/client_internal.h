/*
 * client_internal.h - what llmguardctl uses of libllmguard beyond the
 * public API: a raw request/reply call for the operator ops.  Not
 * installed, not exported from the shared library.
 */
#ifndef LLMGUARD_CLIENT_INTERNAL_H
#define LLMGUARD_CLIENT_INTERNAL_H

#include "llmguard.h"
#include "proto.h"

/*
 * Send req as op and decode the reply into rep.  Returns 0 or an
 * LLMGUARD_E* code (the daemon's message in llmguard_last_error()).  rep's
 * strings stay valid until the next call on g: single-threaded use only.
 */
int client_call(llmguard_t *g, enum proto_op op, const void *req,
                struct proto_rep *rep);

/*
 * What the blocking and the non-blocking calls share (client.c): the
 * requests of llmguard_permit() and llmguard_report() built and their
 * replies read in one place, whichever way they travel.
 */
#define CLIENT_ERRMSG_MAX (PROTO_ERRMSG_MAX + 64)
#define CLIENT_MAX_EXCLUDE 64

/* The socket path of a handle for socket_path (NULL: $LLMGUARD_SOCKET,
 * else the default) into buf; -1 when it does not fit. */
int client_socket_path(char *buf, size_t len, const char *socket_path);
/* $LLMGUARD_CLIENT_TIMEOUT_MS, else the default, in ms; -1 with bad
 * holding the message when it is malformed. */
double client_timeout_env(char *bad, size_t len);
/* 0 when timeout_s is a valid client timeout, else -1 with msg set. */
int client_timeout_check(double timeout_s, char *msg, size_t len);
double client_mono_ms(void);

/*
 * The permit request of req into pr, its strings pointing into req,
 * exclude, tried[CLIENT_MAX_EXCLUDE] and call_id[call_id_len], which gets
 * req->call_id or a new one.  0, or LLMGUARD_EINVAL with msg set.
 */
int client_permit_prepare(const struct llmguard_request *req,
                          const char *const *exclude, unsigned n_exclude,
                          struct proto_str *tried, char *call_id,
                          size_t call_id_len, struct proto_permit_req *pr,
                          char *msg, size_t msg_len);
/* A permit reply into p (whose call_id is already set). */
void client_permit_copy(struct llmguard_permit *p,
                        const struct proto_permit_rep *r);
/* The report request of r into rr.  0, or LLMGUARD_EINVAL with msg set. */
int client_report_prepare(const struct llmguard_report *r,
                          struct proto_report_req *rr, char *msg,
                          size_t msg_len);
/* What a report of r says back; rep is the daemon's reply, or NULL when
 * there is none (try_again is set all the same). */
void client_report_reply(const struct llmguard_report *r,
                         const struct proto_report_rep *rep,
                         struct llmguard_report_reply *out);
/* The LLMGUARD_E* code of a wire error. */
int client_wire_code(const struct proto_err *err);

#endif
