/*
 * headers_internal.h - the rate-limit headers a call function passed on
 * with llmguard_provider_header(), for the attempt's report.  Per thread;
 * not installed.
 */
#ifndef LLMGUARD_HEADERS_INTERNAL_H
#define LLMGUARD_HEADERS_INTERNAL_H

#include "proto.h"

/* At most this many headers go with a report (the daemon takes no more). */
#define HEADERS_MAX 32

/* Forget the headers kept on this thread: a new attempt begins. */
void headers_clear(void);
/* Point m at this thread's headers (valid until the next call on this
 * thread); m->n is 0 when there are none. */
void headers_fill(struct proto_strmap *m);

#endif
