/*
 * explain.h - the explain op: the decisions the daemon holds for a permit
 * or a call, as their wire messages (proto/PROTOCOL.md, "explain").
 */
#ifndef LLMGUARD_EXPLAIN_H
#define LLMGUARD_EXPLAIN_H

#include "proto.h"

struct conn;
struct decisions;

/* Answer req (an explain) from d, or fill e and return -1. */
int explain_op(const struct decisions *d, struct conn *c,
               struct proto_req *req, struct proto_error *e);

#endif
