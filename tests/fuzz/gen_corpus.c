/*
 * gen_corpus.c - write the binary seed corpora of the codec fuzzers with the
 * real encoder (proto_encode_request/reply/error).
 *
 *   gen_corpus DIR     writes DIR/fuzz_request/, DIR/fuzz_reply/ and
 *                      DIR/fuzz_frame/ (the directories must exist)
 *
 * fuzz_request gets frame bodies (no length prefix): every op, with only
 * its required fields and with all of them.  fuzz_reply gets the op index
 * byte, then a body: a success reply of every op, and error replies of
 * every code.  fuzz_frame gets 2 chunking bytes, then streams of whole
 * frames (length prefixes included), as a client or the daemon writes them.
 * Two seeds are built by hand beside the encoder's: frames just under the
 * limit that grow past it when encoded again (numbers sent as 1-byte
 * integers come back as doubles), for the "too large" paths.
 *
 * The output is deterministic; tests/fuzz/corpus/ holds it (README.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* A struct proto_str of a literal: SI() in initializers, S() elsewhere. */
#define SI(lit) { (lit), (uint32_t)sizeof(lit) - 1 }
#define S(lit) ((struct proto_str)SI(lit))
/* "has" with every field of the message whose list is PROTO_<MSG>_FIELDS. */
#define ALL(MSG) ((uint32_t)((1ull << PROTO_##MSG##__COUNT) - 1))

static const char *outdir;
static msgpack_sbuffer stream;      /* every request frame, for fuzz_frame */
static msgpack_sbuffer replies;     /* every reply frame, for fuzz_frame */

static void
die(const char *what)
{
    fprintf(stderr, "gen_corpus: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Write prefix (plen bytes) then data to DIR/target/name. */
static void
put(const char *target, const char *name, const void *prefix, size_t plen,
    const void *data, size_t len)
{
    char path[4096];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
    fp = fopen(path, "wb");
    if (fp == NULL)
        die(path);
    if ((plen > 0 && fwrite(prefix, 1, plen, fp) != plen) ||
        (len > 0 && fwrite(data, 1, len, fp) != len) || fclose(fp) != 0)
        die(path);
}

/* One request: its body to fuzz_request, its frame to fuzz_frame. */
static void
request(const char *name, enum proto_op op, uint64_t id, const void *msg)
{
    msgpack_sbuffer sb;
    unsigned char seed[2] = { (unsigned char)op, (unsigned char)id };

    msgpack_sbuffer_init(&sb);
    if (proto_encode_request(&sb, op, id, msg) < 0)
        die(name);
    put("fuzz_request", name, NULL, 0, sb.data + 4, sb.size - 4);
    put("fuzz_frame", name, seed, 2, sb.data, sb.size);
    msgpack_sbuffer_write(&stream, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* A reply frame in sb to op: to fuzz_reply with the op byte. */
static void
reply_out(const char *name, enum proto_op op, msgpack_sbuffer *sb)
{
    unsigned char opbyte = (unsigned char)op;

    put("fuzz_reply", name, &opbyte, 1, sb->data + 4, sb->size - 4);
    msgpack_sbuffer_write(&replies, sb->data, sb->size);
    msgpack_sbuffer_destroy(sb);
}

static void
reply(const char *name, enum proto_op op, uint64_t id, const void *msg)
{
    msgpack_sbuffer sb;

    msgpack_sbuffer_init(&sb);
    if (proto_encode_reply(&sb, op, id, msg) < 0)
        die(name);
    reply_out(name, op, &sb);
}

static void
error_reply(const char *name, enum proto_op op, uint64_t id,
            const struct proto_error *e)
{
    msgpack_sbuffer sb;

    msgpack_sbuffer_init(&sb);
    if (proto_encode_error(&sb, id, e) < 0)
        die(name);
    reply_out(name, op, &sb);
}

static void
requests(void)
{
    static struct proto_str exclude[] = { SI("groq"), SI("mistral") };
    struct proto_hello_req hello = { .version = PROTO_VERSION };
    struct proto_acquire_req acq = { .provider = S("groq") };
    struct proto_release_req rel = { .provider = S("groq") };
    struct proto_limiter_status_req ls = { .provider = S("openai") };
    struct proto_quota_reserve_req qr = { .workflow_id = S("wf"),
                                          .tokens = 200 };
    struct proto_quota_commit_req qc = {
        .workflow_id = S("wf"), .reservation = 1732800000000, .estimate = 200,
        .actual = 150,
    };
    struct proto_quota_subject_req qs = { .tenant_id = S("acme") };
    struct proto_select_provider_req sp = { 0 };
    struct proto_permit_req pm = { 0 };
    struct proto_report_req rp = { .permit_id = 42, .outcome = S("ok") };
    struct proto_metrics_req mt = { 0 };

    PROTO_SET(&hello, PROTO_HELLO_REQ_VERSION);
    request("hello-min", PROTO_OP_HELLO, 1, &hello);
    hello.client = S("demo");
    PROTO_SET(&hello, PROTO_HELLO_REQ_CLIENT);
    request("hello-full", PROTO_OP_HELLO, 2, &hello);
    request("ping", PROTO_OP_PING, 3, NULL);

    PROTO_SET(&acq, PROTO_ACQUIRE_REQ_PROVIDER);
    request("acquire-min", PROTO_OP_ACQUIRE, 4, &acq);
    acq.tokens = 3;
    acq.llm_tokens = 1500;
    acq.timeout_ms = 1000;
    acq.has = ALL(ACQUIRE_REQ);
    request("acquire-full", PROTO_OP_ACQUIRE, 5, &acq);

    PROTO_SET(&rel, PROTO_RELEASE_REQ_PROVIDER);
    request("release-min", PROTO_OP_RELEASE, 6, &rel);
    rel.tokens = 2;
    rel.llm_tokens = 300;
    rel.has = ALL(RELEASE_REQ);
    request("release-full", PROTO_OP_RELEASE, 7, &rel);

    PROTO_SET(&ls, PROTO_LIMITER_STATUS_REQ_PROVIDER);
    request("limiter_status", PROTO_OP_LIMITER_STATUS, 8, &ls);
    request("status", PROTO_OP_STATUS, 9, NULL);

    qr.has = PROTO_BIT(PROTO_QUOTA_RESERVE_REQ_WORKFLOW_ID) |
             PROTO_BIT(PROTO_QUOTA_RESERVE_REQ_TOKENS);
    request("quota_reserve-min", PROTO_OP_QUOTA_RESERVE, 10, &qr);
    qr.tenant_id = S("acme");
    qr.has = ALL(QUOTA_RESERVE_REQ);
    request("quota_reserve-full", PROTO_OP_QUOTA_RESERVE, 11, &qr);

    qc.has = ALL(QUOTA_COMMIT_REQ) &
             ~PROTO_BIT(PROTO_QUOTA_COMMIT_REQ_TENANT_ID);
    request("quota_commit-min", PROTO_OP_QUOTA_COMMIT, 12, &qc);
    qc.tenant_id = S("acme");
    qc.reservation = -86400000;     /* an int on the wire: negative too */
    qc.has = ALL(QUOTA_COMMIT_REQ);
    request("quota_commit-full", PROTO_OP_QUOTA_COMMIT, 13, &qc);

    PROTO_SET(&qs, PROTO_QUOTA_SUBJECT_REQ_TENANT_ID);
    request("quota_status-tenant", PROTO_OP_QUOTA_STATUS, 14, &qs);
    request("quota_reset-tenant", PROTO_OP_QUOTA_RESET, 15, &qs);
    qs.workflow_id = S("wf");
    qs.has = PROTO_BIT(PROTO_QUOTA_SUBJECT_REQ_WORKFLOW_ID);
    request("quota_status-workflow", PROTO_OP_QUOTA_STATUS, 16, &qs);
    request("quota_reset-workflow", PROTO_OP_QUOTA_RESET, 17, &qs);
    qs.limit = 5000;
    PROTO_SET(&qs, PROTO_QUOTA_SUBJECT_REQ_LIMIT);
    request("quota_set", PROTO_OP_QUOTA_SET, 18, &qs);

    request("select_provider-min", PROTO_OP_SELECT_PROVIDER, 19, &sp);
    sp.workflow_id = S("wf");
    sp.preferred = S("openai");
    sp.exclude.v = exclude;
    sp.exclude.n = 2;
    sp.has = ALL(SELECT_PROVIDER_REQ);
    request("select_provider-full", PROTO_OP_SELECT_PROVIDER, 20, &sp);

    request("permit-min", PROTO_OP_PERMIT, 21, &pm);
    pm.workflow_id = S("wf");
    pm.tenant_id = S("acme");
    pm.tokens_estimate = 800;
    pm.preferred = S("openai");
    pm.exclude.v = exclude;
    pm.exclude.n = 1;
    pm.timeout_ms = 250.5;
    pm.call_id = S("call-7f3a");
    pm.traceparent =
        S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    pm.has = ALL(PERMIT_REQ);
    request("permit-full", PROTO_OP_PERMIT, 22, &pm);

    PROTO_SET(&rp, PROTO_REPORT_REQ_PERMIT_ID);
    PROTO_SET(&rp, PROTO_REPORT_REQ_OUTCOME);
    request("report-min", PROTO_OP_REPORT, 23, &rp);
    rp.outcome = S("rate_limited");
    rp.latency_ms = 812.25;
    rp.tokens_used = 760;
    rp.retry_after_s = 2;
    rp.final = true;
    {
        struct proto_str hk[] = {
            SI("x-ratelimit-remaining-requests"),
            SI("x-ratelimit-reset-tokens"),
            SI("anthropic-ratelimit-tokens-reset"), SI("retry-after"),
        };
        struct proto_str hv[] = {
            SI("0"), SI("6m0s"), SI("2026-12-01T10:00:30Z"),
            SI("Tue, 01 Dec 2026 10:00:30 GMT"),
        };
        rp.headers.key = hk;
        rp.headers.value = hv;
        rp.headers.n = 4;
        rp.has = ALL(REPORT_REQ);
        request("report-full", PROTO_OP_REPORT, 24, &rp);
    }

    request("metrics-min", PROTO_OP_METRICS, 25, &mt);
    mt.format = S("prometheus");
    mt.cursor = 3;
    mt.has = ALL(METRICS_REQ);
    request("metrics-full", PROTO_OP_METRICS, 26, &mt);
    request("reload", PROTO_OP_RELOAD, 27, NULL);
    request("id-max", PROTO_OP_PING, UINT64_MAX, NULL);
}

static void
ok_replies(void)
{
    struct proto_hello_rep hello = { ALL(HELLO_REP), 1, S("llmguardd 0.1.0") };
    struct proto_ping_rep ping = { ALL(PING_REP), 7.96982863300002 };
    struct proto_acquire_rep acq = { ALL(ACQUIRE_REP), 0 };
    struct proto_release_rep rel = { ALL(RELEASE_REP), 3 };
    struct proto_limiter_status_rep ls = {
        ALL(LIMITER_STATUS_REP), 2.5, 20, 20, true, 1, 60000, 58500.5,
    };
    struct proto_provider_status prov[2] = {
        { ALL(PROVIDER_STATUS), S("groq"), 0.5, 0.5, 4, 0, 60000,
          S("healthy"), 0, 180.25 },
        { ALL(PROVIDER_STATUS) &
              ~PROTO_BIT(PROTO_PROVIDER_STATUS_LATENCY_EWMA_MS),
          S("openai"), 20, 20, 20, 2, 0, S("degraded"), 41.5, 0 },
    };
    struct proto_status_rep st = {
        ALL(STATUS_REP), true, S("primary"), S("soft"), 30, { prov, 2 },
    };
    struct proto_quota_reserve_rep qr = {
        ALL(QUOTA_RESERVE_REP), true, false, S("workflow:wf"), 200, 100000,
        99800,
        1732800000.5, 1732800000000,
    };
    struct proto_quota_status_rep qs = {
        ALL(QUOTA_STATUS_REP), S("tenant:acme"), 200, 99800, 100000,
        1730208000,
        1732800000, 1732800000.5,
    };
    struct proto_quota_set_rep qset = { ALL(QUOTA_SET_REP), S("tenant:acme"),
                                        5000 };
    struct proto_quota_reset_rep qreset = { ALL(QUOTA_RESET_REP),
                                            S("workflow:wf") };
    struct proto_select_provider_rep sp = { ALL(SELECT_PROVIDER_REP),
                                            S("openai"), false };
    struct proto_permit_rep pm = {
        ALL(PERMIT_REP), 42, S("groq"), 12.75, true, 99200, true, false,
    };
    struct proto_report_rep rp = { ALL(REPORT_REP), S("degraded"), 60 };
    static struct proto_str labels[] = { SI("groq"), SI("ok") };
    static double bounds[] = { 0.005, 0.05, 0.5, 5 };
    static double buckets[] = { 1, 4, 9, 10 };
    struct proto_metric_series series[2] = {
        { PROTO_BIT(PROTO_METRIC_SERIES_LABELS) |
              PROTO_BIT(PROTO_METRIC_SERIES_VALUE),
          { labels, 2 }, 17, 0, 0, { NULL, 0 } },
        { ALL(METRIC_SERIES) & ~PROTO_BIT(PROTO_METRIC_SERIES_VALUE),
          { labels, 1 }, 0, 10, 3.25, { buckets, 4 } },
    };
    struct proto_metric_family fam[2] = {
        { ALL(METRIC_FAMILY) & ~PROTO_BIT(PROTO_METRIC_FAMILY_BOUNDS),
          S("llmguard_requests_total"), S("counter"),
          S("Requests by provider and outcome."), { labels, 2 },
          { NULL, 0 }, { series, 1 } },
        { ALL(METRIC_FAMILY), S("llmguard_wait_seconds"), S("histogram"),
          S("Time waited for a token."), { labels, 1 }, { bounds, 4 },
          { series + 1, 1 } },
    };
    struct proto_metrics_rep mt = {
        PROTO_BIT(PROTO_METRICS_REP_FAMILIES), { fam, 2 }, { NULL, 0 }, 0,
    };
    struct proto_reload_rep rl = { ALL(RELOAD_REP), 2,
                                    S("/etc/llmguard/llmguard.env") };

    reply("hello", PROTO_OP_HELLO, 2, &hello);
    reply("ping", PROTO_OP_PING, 1, &ping);
    reply("acquire", PROTO_OP_ACQUIRE, 7, &acq);
    reply("release", PROTO_OP_RELEASE, 6, &rel);
    reply("limiter_status", PROTO_OP_LIMITER_STATUS, 8, &ls);
    ls.has &= ~PROTO_BIT(PROTO_LIMITER_STATUS_REP_AVAILABLE_LLM_TOKENS);
    ls.tokens_per_min = 0;
    reply("limiter_status-no-tpm", PROTO_OP_LIMITER_STATUS, 8, &ls);
    reply("status", PROTO_OP_STATUS, 9, &st);
    st.providers.n = 0;
    reply("status-no-providers", PROTO_OP_STATUS, 9, &st);
    reply("quota_reserve", PROTO_OP_QUOTA_RESERVE, 10, &qr);
    qr.has &= ~PROTO_BIT(PROTO_QUOTA_RESERVE_REP_RESET_AT);     /* nil */
    qr.over_quota = true;
    reply("quota_reserve-nil", PROTO_OP_QUOTA_RESERVE, 10, &qr);
    reply("quota_commit", PROTO_OP_QUOTA_COMMIT, 12, NULL);
    reply("quota_status", PROTO_OP_QUOTA_STATUS, 14, &qs);
    qs.has &= ~PROTO_BIT(PROTO_QUOTA_STATUS_REP_RESET_AT);
    reply("quota_status-nil", PROTO_OP_QUOTA_STATUS, 14, &qs);
    reply("quota_set", PROTO_OP_QUOTA_SET, 18, &qset);
    reply("quota_reset", PROTO_OP_QUOTA_RESET, 17, &qreset);
    reply("select_provider", PROTO_OP_SELECT_PROVIDER, 19, &sp);
    reply("permit", PROTO_OP_PERMIT, 22, &pm);
    pm.has &= ~PROTO_BIT(PROTO_PERMIT_REP_QUOTA_REMAINING);     /* nil */
    reply("permit-nil", PROTO_OP_PERMIT, 21, &pm);
    reply("report", PROTO_OP_REPORT, 24, &rp);
    reply("metrics", PROTO_OP_METRICS, 25, &mt);
    mt.has = ALL(METRICS_REP) & ~PROTO_BIT(PROTO_METRICS_REP_FAMILIES);
    mt.text = S("# HELP llmguard_up Whether llmguardd is up.\n"
                "# TYPE llmguard_up gauge\nllmguard_up 1\n");
    mt.next_cursor = 4;
    reply("metrics-prometheus", PROTO_OP_METRICS, 26, &mt);
    reply("reload", PROTO_OP_RELOAD, 27, &rl);
}

static void
err_replies(void)
{
    /* Each code with the op that sends it (any op for the generic ones). */
    static const enum proto_op op_of[PROTO_E__COUNT] = {
        [PROTO_E_BAD_REQUEST] = PROTO_OP_ACQUIRE,
        [PROTO_E_UNKNOWN_OP] = PROTO_OP_PING,
        [PROTO_E_FRAME_TOO_LARGE] = PROTO_OP_STATUS,
        [PROTO_E_UNKNOWN_PROVIDER] = PROTO_OP_LIMITER_STATUS,
        [PROTO_E_TIMEOUT] = PROTO_OP_ACQUIRE,
        [PROTO_E_QUOTA_EXCEEDED] = PROTO_OP_QUOTA_RESERVE,
        [PROTO_E_NO_PROVIDER] = PROTO_OP_PERMIT,
        [PROTO_E_PERMISSION_DENIED] = PROTO_OP_QUOTA_SET,
        [PROTO_E_BUSY] = PROTO_OP_PERMIT,
        [PROTO_E_INTERNAL] = PROTO_OP_METRICS,
        [PROTO_E_VERSION] = PROTO_OP_HELLO,
    };
    struct proto_error e;
    char name[64];

    for (int c = PROTO_E_BAD_REQUEST; c < PROTO_E__COUNT; c++) {
        proto_error_set(&e, (enum proto_errcode)c, "%s: a seed message",
                        proto_errcode_name((enum proto_errcode)c));
        snprintf(name, sizeof(name), "err-%s",
                 proto_errcode_name((enum proto_errcode)c));
        error_reply(name, op_of[c], (uint64_t)c, &e);
    }
    proto_error_set(&e, PROTO_E_BAD_REQUEST,
                    "frame length 0: a frame holds one msgpack map");
    error_reply("err-id0", PROTO_OP_PING, 0, &e);

    /* quota_exceeded with its details, as quota_reserve sends it. */
    proto_error_set(&e, PROTO_E_QUOTA_EXCEEDED, "workflow:wf would exceed "
                    "its quota: 0 of 100 tokens used");
    snprintf(e.subject, sizeof(e.subject), "workflow:wf");
    e.detail.subject.ptr = e.subject;
    e.detail.subject.len = (uint32_t)strlen(e.subject);
    e.detail.tokens_used = 0;
    e.detail.tokens_limit = 100;
    e.detail.has = PROTO_BIT(PROTO_ERR_SUBJECT) |
                   PROTO_BIT(PROTO_ERR_TOKENS_USED) |
                   PROTO_BIT(PROTO_ERR_TOKENS_LIMIT);
    error_reply("err-quota_exceeded-nil", PROTO_OP_QUOTA_RESERVE, 9, &e);
    e.detail.tokens_used = 120;
    e.detail.reset_at = 1732800000.25;
    PROTO_SET(&e.detail, PROTO_ERR_RESET_AT);
    error_reply("err-quota_exceeded-reset", PROTO_OP_QUOTA_RESERVE, 9, &e);
}

/*
 * Frames just under PROTO_MAX_FRAME whose numbers are 1-byte integers: the
 * decoders take them, and encoding the result again is over the limit.
 */
/* An acquire whose provider name of pad bytes fills the frame. */
static void
pack_big_acquire(msgpack_packer *pk, const char *big, size_t pad)
{
    msgpack_pack_map(pk, 4);
    msgpack_pack_str_with_body(pk, "provider", 8);
    msgpack_pack_str_with_body(pk, big, pad);
    msgpack_pack_str_with_body(pk, "timeout_ms", 10);
    msgpack_pack_uint8(pk, 5);                  /* comes back as 9 bytes */
    msgpack_pack_str_with_body(pk, "op", 2);
    msgpack_pack_str_with_body(pk, "acquire", 7);
    msgpack_pack_str_with_body(pk, "id", 2);
    msgpack_pack_uint8(pk, 1);
}

/*
 * Frames at or under PROTO_MAX_FRAME whose numbers are 1-byte integers: the
 * decoders take them, and encoding the result again is over the limit.
 */
static void
too_large_again(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t pad = PROTO_MAX_FRAME - 64, n = 7300;
    char *big = malloc(PROTO_MAX_FRAME);
    unsigned char opbyte = PROTO_OP_METRICS;

    if (big == NULL)
        die("malloc");
    memset(big, 'g', PROTO_MAX_FRAME);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* Measure, then fill the frame to exactly PROTO_MAX_FRAME bytes. */
    pack_big_acquire(&pk, big, pad);
    pad += PROTO_MAX_FRAME - sb.size;
    msgpack_sbuffer_clear(&sb);
    pack_big_acquire(&pk, big, pad);
    if (sb.size != PROTO_MAX_FRAME)
        die("acquire-near-limit");
    put("fuzz_request", "acquire-near-limit", NULL, 0, sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);

    /* A metrics page of one histogram with n bounds of 1 byte each. */
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "families", 8);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "name", 4);
    msgpack_pack_str_with_body(&pk, "h", 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "histogram", 9);
    msgpack_pack_str_with_body(&pk, "help", 4);
    msgpack_pack_str_with_body(&pk, "", 0);
    msgpack_pack_str_with_body(&pk, "label_names", 11);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_str_with_body(&pk, "bounds", 6);
    msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        msgpack_pack_uint8(&pk, (uint8_t)(i % 128));
    msgpack_pack_str_with_body(&pk, "series", 6);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint8(&pk, 25);
    msgpack_pack_str_with_body(&pk, "ok", 2);
    msgpack_pack_true(&pk);
    put("fuzz_reply", "metrics-near-limit", &opbyte, 1, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    free(big);
}

/* Streams for the frame reader: pipelines and the two broken lengths. */
static void
streams(void)
{
    static const unsigned char zero_len[] = { 0, 0, 0, 0, 0x80 };
    static const unsigned char too_large[] = { 0, 1, 0, 1 };
    static const unsigned char http[] = "GET /metrics HTTP/1.1\r\n\r\n";
    unsigned char seed[2] = { 0x5a, 0xc3 };
    msgpack_sbuffer sb;

    put("fuzz_frame", "pipeline-requests", seed, 2, stream.data,
        stream.size);
    seed[1] = 0x01;
    put("fuzz_frame", "pipeline-replies", seed, 2, replies.data,
        replies.size);

    /* A good frame, then a length of 0; then one over the limit. */
    msgpack_sbuffer_init(&sb);
    if (proto_encode_request(&sb, PROTO_OP_PING, 1, NULL) < 0)
        die("ping");
    msgpack_sbuffer_write(&sb, (const char *)zero_len, sizeof(zero_len));
    put("fuzz_frame", "ping-then-length-0", seed, 2, sb.data, sb.size);
    sb.size -= sizeof(zero_len);
    msgpack_sbuffer_write(&sb, (const char *)too_large, sizeof(too_large));
    put("fuzz_frame", "ping-then-too-large", seed, 2, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    put("fuzz_frame", "http-request", seed, 2, http, sizeof(http) - 1);
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR\n");
        return 2;
    }
    outdir = argv[1];
    msgpack_sbuffer_init(&stream);
    msgpack_sbuffer_init(&replies);
    requests();
    ok_replies();
    err_replies();
    too_large_again();
    streams();
    msgpack_sbuffer_destroy(&stream);
    msgpack_sbuffer_destroy(&replies);
    return 0;
}
