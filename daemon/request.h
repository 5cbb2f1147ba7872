/*
 * request.h - what the op handlers share about a request: its ids and
 * quota subjects, checked; and the quota gate that both quota_reserve and
 * permit pass (proto/PROTOCOL.md, "Quota subjects, windows and
 * reservations").
 */
#ifndef LLMGUARD_REQUEST_H
#define LLMGUARD_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "quota.h"

struct telemetry;

/* A C string as a wire string (not copied). */
struct proto_str request_str(const char *s);

/*
 * Check the wire text s of field (an id, a provider name): 0 when it is
 * valid UTF-8 holding no control character (C0, DEL, C1: U+0000-U+001F,
 * U+007F-U+009F), else -1 with bad_request in e naming field, the fault
 * and its byte offset (proto/PROTOCOL.md, "Names and ids").
 */
int request_text(const struct proto_str *s, const char *field,
                 struct proto_error *e);

/*
 * Copy the wire id s of field into buf (QUOTA_ID_MAX + 1 bytes) as a C
 * string; -1 with bad_request in e when it is empty, too long, or fails
 * request_text().
 */
int request_id(const struct proto_str *s, const char *field, char *buf,
               struct proto_error *e);

/* The workflow and/or tenant of a request: NULL when absent. */
struct subjects {
    char wbuf[QUOTA_ID_MAX + 1], tbuf[QUOTA_ID_MAX + 1];
    const char *workflow, *tenant;
};

/* Both ids, each when present (has_*); at least one must be.  -1 with
 * bad_request in e. */
int request_subjects(const struct proto_str *wf, bool has_wf,
                     const struct proto_str *tn, bool has_tn,
                     struct subjects *s, struct proto_error *e);

/* Exactly one subject: for quota_status, quota_set and quota_reset. */
struct one_subject {
    struct subjects s;
    enum quota_kind kind;
    const char *id;                     /* s.workflow or s.tenant */
    char subject[QUOTA_SUBJECT_MAX];    /* "workflow:<id>", "tenant:<id>" */
};

int request_one_subject(const struct proto_quota_subject_req *r,
                        struct one_subject *o, struct proto_error *e);

/* Fill e with quota_exceeded and its details for the rejection d; -1. */
int request_quota_exceeded(const struct quota_decision *d,
                           struct proto_error *e);

/*
 * The quota gate: reserve tokens for workflow and/or tenant in q at now_s
 * (wall clock) and fill d.  An overrun is counted; in soft mode it is
 * allowed and logged once, when the subject crosses its limit; in hard
 * mode it is refused.  Returns 0 when allowed, or -1 with e filled:
 * quota_exceeded (d filled, nothing reserved) or internal.
 */
int request_quota_gate(struct quota *q, struct telemetry *t,
                       const char *workflow, const char *tenant,
                       int64_t tokens, double now_s, struct quota_decision *d,
                       struct proto_error *e);

/* The end of the gate for a decision d made elsewhere (multi-host mode:
 * by Redis, or on this host's share): counted, logged, refused. */
int request_quota_decided(struct telemetry *t, const char *workflow,
                          const char *tenant, int64_t tokens,
                          const struct quota_decision *d,
                          struct proto_error *e);

#endif
