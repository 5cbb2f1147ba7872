/*
 * permits.h - permits and reports: one round trip per attempt of a call
 * (DESIGN.md §3 "Permit").
 *
 * A permit reserves quota, routes and takes a token as one step; a report
 * feeds the outcome back to the router, reconciles the quota and closes the
 * attempt.  Attempts that share a call_id form one logical call, which ends
 * at a report marked final or when its connection closes.
 */
#ifndef LLMGUARD_PERMITS_H
#define LLMGUARD_PERMITS_H

#include "proto.h"

struct conn;
struct server;

int permits_op_select_provider(struct conn *c, struct proto_req *req,
                               struct proto_error *e);
int permits_op_permit(struct conn *c, struct proto_req *req,
                      struct proto_error *e);
int permits_op_report(struct conn *c, struct proto_req *req,
                      struct proto_error *e);

/* The connection closes: its unreported permits stay charged at their
 * estimate, its calls end. */
void permits_drop_conn(struct conn *c);
/* Shutdown: free every permit and call. */
void permits_free(struct server *srv);

#endif
