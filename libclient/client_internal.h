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

#endif
