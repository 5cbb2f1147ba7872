/*
 * explain.h - `llmguardctl explain`: what it asks the daemon, and the
 * decisions it answers in text and in JSON (llmguardctl(1), "explain").
 */
#ifndef LLMGUARD_CLI_EXPLAIN_H
#define LLMGUARD_CLI_EXPLAIN_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include "proto.h"

/* What the operator named: a permit id, a call id, or a number that may
 * be either (tried as a permit id first). */
struct explain_query {
    bool permit, call;          /* which lookups to try, in that order */
    uint64_t permit_id;
    const char *call_id;
};

/*
 * Read arg: "permit:<n>", "call:<id>", a whole number (both, permit
 * first), anything else a call id.  0, or -1 (said on stderr) for a
 * permit: that is not a number or an empty id.
 */
int explain_parse(const char *arg, struct explain_query *q);
/* The request of the lookup by permit id (permit) or by call id. */
void explain_request(const struct explain_query *q, bool permit,
                     struct proto_explain_req *req);
/* The decisions of r, for a person, into fp; what names the query. */
void explain_text(FILE *fp, const struct proto_explain_rep *r,
                  const char *what);
/* The same as one JSON object (a new reference). */
json_t *explain_json(const struct proto_explain_rep *r);

#endif
