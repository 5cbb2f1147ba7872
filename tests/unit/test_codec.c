/* test_codec.c - request and reply encoding/decoding through the tables. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

struct fixture {
    msgpack_sbuffer sb;
    msgpack_zone zone;
};

static int
setup(void **state)
{
    static struct fixture fx;

    msgpack_sbuffer_init(&fx.sb);
    msgpack_zone_init(&fx.zone, 1024);
    *state = &fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;

    msgpack_sbuffer_destroy(&fx->sb);
    msgpack_zone_destroy(&fx->zone);
    return 0;
}

/* Pack a raw map with the given packer calls into fx->sb (no prefix). */
#define RAW(fx) \
    msgpack_packer pk; \
    (fx)->sb.size = 0; \
    msgpack_packer_init(&pk, &(fx)->sb, msgpack_sbuffer_write)

static void
pstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static enum proto_decode_result
decode_raw(struct fixture *fx, struct proto_req *req, struct proto_error *e)
{
    msgpack_zone_clear(&fx->zone);
    return proto_decode_request((const unsigned char *)fx->sb.data,
                                (uint32_t)fx->sb.size, &fx->zone, req, e);
}

static void
test_hello_roundtrip(void **state)
{
    struct fixture *fx = *state;
    struct proto_hello_req hello = { 0 };
    struct proto_req req;
    struct proto_error e;

    hello.version = PROTO_VERSION;
    hello.client.ptr = "unit";
    hello.client.len = 4;
    PROTO_SET(&hello, PROTO_HELLO_REQ_CLIENT);
    fx->sb.size = 0;
    assert_int_equal(proto_encode_request(&fx->sb, PROTO_OP_HELLO, 42,
                                          &hello), 0);
    assert_int_equal(fx->sb.size, 4 + (size_t)((unsigned char)fx->sb.data[3]));
    assert_int_equal(proto_decode_request((unsigned char *)fx->sb.data + 4,
                                          (uint32_t)fx->sb.size - 4,
                                          &fx->zone, &req, &e),
                     PROTO_DECODE_OK);
    assert_int_equal(req.op, PROTO_OP_HELLO);
    assert_int_equal(req.id, 42);
    assert_int_equal(req.u.hello.version, PROTO_VERSION);
    assert_true(PROTO_HAS(&req.u.hello, PROTO_HELLO_REQ_CLIENT));
    assert_int_equal(req.u.hello.client.len, 4);
    assert_memory_equal(req.u.hello.client.ptr, "unit", 4);
}

static void
test_ping_reply_roundtrip(void **state)
{
    struct fixture *fx = *state;
    struct proto_ping_rep ping = { 0 };
    struct proto_rep rep;
    struct proto_error e;
    uint64_t id = 0;

    ping.uptime_s = 12.5;
    PROTO_SET(&ping, PROTO_PING_REP_UPTIME_S);
    fx->sb.size = 0;
    assert_int_equal(proto_encode_reply(&fx->sb, PROTO_OP_PING, 7, &ping), 0);
    assert_int_equal(proto_reply_id((unsigned char *)fx->sb.data + 4,
                                    (uint32_t)fx->sb.size - 4, &id), 0);
    assert_int_equal(id, 7);
    assert_int_equal(proto_decode_reply((unsigned char *)fx->sb.data + 4,
                                        (uint32_t)fx->sb.size - 4,
                                        PROTO_OP_PING, &fx->zone, &rep, &e),
                     0);
    assert_true(rep.ok);
    assert_int_equal(rep.id, 7);
    assert_true(rep.u.ping.uptime_s == 12.5);
}

/* explain: a reply of decisions, each with arrays of its own, and a
 * request that names a call. */
static void
test_explain_roundtrip(void **state)
{
    struct fixture *fx = *state;
    struct proto_decision_quota q = { 0 };
    struct proto_decision_provider pv[2];
    struct proto_decision dc = { 0 };
    struct proto_explain_rep ex = { 0 };
    struct proto_explain_req er = { 0 };
    const struct proto_decision *got;
    struct proto_rep rep;
    struct proto_req req;
    struct proto_error e;

    q.subject = (struct proto_str){ "workflow:wf", 11 };
    q.tokens_used = 100;
    q.tokens_limit = 1000;
    q.verdict = (struct proto_str){ "ok", 2 };
    memset(pv, 0, sizeof(pv));
    pv[0].name = (struct proto_str){ "groq", 4 };
    pv[0].why = (struct proto_str){ "excluded", 8 };
    pv[0].cooldown_until = 1800000000.5;
    pv[0].cooldown_cause = (struct proto_str){ "rate_limited", 12 };
    PROTO_SET(&pv[0], PROTO_DECISION_PROVIDER_COOLDOWN_UNTIL);
    PROTO_SET(&pv[0], PROTO_DECISION_PROVIDER_COOLDOWN_CAUSE);
    pv[1].name = (struct proto_str){ "openai", 6 };
    pv[1].why = (struct proto_str){ "chosen", 6 };
    dc.seq = 2;
    dc.permit_id = 9;
    dc.call_id = (struct proto_str){ "c-1", 3 };
    dc.time = 1800000000.25;
    dc.quota = (struct proto_objarr){ &q, 1 };
    dc.routed = true;
    dc.providers = (struct proto_objarr){ pv, 2 };
    dc.outcome = (struct proto_str){ "ok", 2 };
    ex.decisions = (struct proto_objarr){ &dc, 1 };
    ex.total = 1;
    ex.held = 5;
    ex.capacity = 10000;
    fx->sb.size = 0;
    assert_int_equal(proto_encode_reply(&fx->sb, PROTO_OP_EXPLAIN, 3, &ex), 0);
    assert_int_equal(proto_decode_reply((unsigned char *)fx->sb.data + 4,
                                        (uint32_t)fx->sb.size - 4,
                                        PROTO_OP_EXPLAIN, &fx->zone, &rep, &e),
                     0);
    assert_int_equal(rep.u.explain.decisions.n, 1);
    assert_int_equal(rep.u.explain.capacity, 10000);
    got = rep.u.explain.decisions.v;
    assert_int_equal(got->permit_id, 9);
    assert_false(PROTO_HAS(got, PROTO_DECISION_WORKFLOW_ID));
    assert_int_equal(got->quota.n, 1);
    assert_int_equal(((const struct proto_decision_quota *)got->quota.v)
                     ->tokens_limit, 1000);
    assert_int_equal(got->providers.n, 2);
    const struct proto_decision_provider *gp = got->providers.v;
    assert_memory_equal(gp[0].why.ptr, "excluded", 8);
    assert_true(PROTO_HAS(&gp[0], PROTO_DECISION_PROVIDER_COOLDOWN_UNTIL));
    assert_true(gp[0].cooldown_until == 1800000000.5);
    assert_false(PROTO_HAS(&gp[1], PROTO_DECISION_PROVIDER_COOLDOWN_UNTIL));
    assert_memory_equal(gp[1].name.ptr, "openai", 6);

    er.call_id = (struct proto_str){ "c-1", 3 };
    PROTO_SET(&er, PROTO_EXPLAIN_REQ_CALL_ID);
    fx->sb.size = 0;
    assert_int_equal(proto_encode_request(&fx->sb, PROTO_OP_EXPLAIN, 4, &er),
                     0);
    assert_int_equal(proto_decode_request((unsigned char *)fx->sb.data + 4,
                                          (uint32_t)fx->sb.size - 4,
                                          &fx->zone, &req, &e),
                     PROTO_DECODE_OK);
    assert_int_equal(req.op, PROTO_OP_EXPLAIN);
    assert_true(PROTO_HAS(&req.u.explain, PROTO_EXPLAIN_REQ_CALL_ID));
    assert_false(PROTO_HAS(&req.u.explain, PROTO_EXPLAIN_REQ_PERMIT_ID));
}

static void
test_error_roundtrip(void **state)
{
    struct fixture *fx = *state;
    struct proto_error err, e;
    struct proto_rep rep;

    proto_error_set(&err, PROTO_E_QUOTA_EXCEEDED, "over by %d", 5);
    err.detail.subject.ptr = "workflow:w";
    err.detail.subject.len = 10;
    err.detail.tokens_used = 100;
    err.detail.tokens_limit = 100;
    PROTO_SET(&err.detail, PROTO_ERR_SUBJECT);
    PROTO_SET(&err.detail, PROTO_ERR_TOKENS_USED);
    PROTO_SET(&err.detail, PROTO_ERR_TOKENS_LIMIT);
    fx->sb.size = 0;
    assert_int_equal(proto_encode_error(&fx->sb, 9, &err), 0);
    assert_int_equal(proto_decode_reply((unsigned char *)fx->sb.data + 4,
                                        (uint32_t)fx->sb.size - 4,
                                        PROTO_OP_PING, &fx->zone, &rep, &e),
                     0);
    assert_false(rep.ok);
    assert_int_equal(rep.id, 9);
    assert_int_equal(proto_errcode_from_name(rep.err.code.ptr,
                                             rep.err.code.len),
                     PROTO_E_QUOTA_EXCEEDED);
    assert_int_equal(rep.err.msg.len, strlen("over by 5"));
    assert_true(PROTO_HAS(&rep.err, PROTO_ERR_SUBJECT));
    assert_int_equal(rep.err.tokens_used, 100);
    /* reset_at was absent: encoded as nil, decoded as absent. */
    assert_false(PROTO_HAS(&rep.err, PROTO_ERR_RESET_AT));
}

static void
test_not_msgpack(void **state)
{
    struct fixture *fx = *state;
    struct proto_req req;
    struct proto_error e;

    fx->sb.size = 0;
    msgpack_sbuffer_write(&fx->sb, "\xc1\xc1\xc1", 3);  /* 0xc1: never used */
    assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_FATAL);
    fx->sb.size = 0;
    msgpack_sbuffer_write(&fx->sb, "\x82\xa2op", 4);     /* truncated map */
    assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_FATAL);
    /* Headers that declare more elements than the frame has bytes: msgpack-c
     * would reserve their room up front (about 100 GiB here). */
    static const char *const bombs[] = {
        "\xdd\xff\xff\xff\xff", "\xdf\x7f\xff\xff\xff", "\xdd\xd6\x06\x00\x00",
        "\x91\xdc\xff\xff\x01", "\x81\xa1k\xdd\x00\x01\x00\x00",
    };
    static const size_t bomb_len[] = { 5, 5, 5, 5, 8 };
    for (size_t i = 0; i < 5; i++) {
        fx->sb.size = 0;
        msgpack_sbuffer_write(&fx->sb, bombs[i], bomb_len[i]);
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_FATAL);
        assert_int_equal(e.code, PROTO_E_BAD_REQUEST);
    }
    /* Two values in one frame. */
    fx->sb.size = 0;
    msgpack_sbuffer_write(&fx->sb, "\x80\x80", 2);
    assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_FATAL);
}

static void
test_missing_op_and_id(void **state)
{
    struct fixture *fx = *state;
    struct proto_req req;
    struct proto_error e;

    {
        RAW(fx);
        msgpack_pack_map(&pk, 1);
        pstr(&pk, "id");
        msgpack_pack_uint64(&pk, 5);
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_BAD);
        assert_int_equal(e.code, PROTO_E_BAD_REQUEST);
        assert_string_equal(e.msg, "missing field 'op'");
        assert_int_equal(req.id, 5);    /* echoed in the error reply */
    }
    {
        RAW(fx);
        msgpack_pack_map(&pk, 1);
        pstr(&pk, "op");
        pstr(&pk, "ping");
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_BAD);
        assert_string_equal(e.msg, "missing field 'id'");
    }
    {
        RAW(fx);
        msgpack_pack_array(&pk, 0);
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_BAD);
    }
}

static void
test_unknown_op_and_wrong_types(void **state)
{
    struct fixture *fx = *state;
    struct proto_req req;
    struct proto_error e;

    {
        RAW(fx);
        msgpack_pack_map(&pk, 2);
        pstr(&pk, "op");
        pstr(&pk, "frobnicate");
        pstr(&pk, "id");
        msgpack_pack_uint64(&pk, 1);
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_BAD);
        assert_int_equal(e.code, PROTO_E_UNKNOWN_OP);
        assert_string_equal(e.msg, "unknown op 'frobnicate'");
    }
    {
        RAW(fx);
        msgpack_pack_map(&pk, 3);
        pstr(&pk, "op");
        pstr(&pk, "hello");
        pstr(&pk, "id");
        msgpack_pack_uint64(&pk, 1);
        pstr(&pk, "version");
        pstr(&pk, "one");
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_BAD);
        assert_string_equal(e.msg,
                            "field 'version': expected a non-negative integer");
    }
    {
        RAW(fx);
        msgpack_pack_map(&pk, 2);
        pstr(&pk, "op");
        pstr(&pk, "hello");
        pstr(&pk, "id");
        msgpack_pack_uint64(&pk, 1);
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_BAD);
        assert_string_equal(e.msg, "missing field 'version'");
    }
    {
        RAW(fx);
        msgpack_pack_map(&pk, 2);
        pstr(&pk, "op");
        msgpack_pack_int(&pk, 3);
        pstr(&pk, "id");
        msgpack_pack_uint64(&pk, 1);
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_BAD);
        assert_string_equal(e.msg, "field 'op': expected a string");
    }
}

/* A report's headers: a map of strings both ways, in wire order. */
static void
test_strmap_roundtrip(void **state)
{
    struct fixture *fx = *state;
    struct proto_str k[2] = { { "retry-after", 11 },
                              { "x-ratelimit-reset-requests", 26 } };
    struct proto_str v[2] = { { "2", 1 }, { "6m0s", 4 } };
    struct proto_report_req rp = { .permit_id = 7, .outcome = { "ok", 2 } };
    struct proto_req req;
    struct proto_error e;

    rp.headers.key = k;
    rp.headers.value = v;
    rp.headers.n = 2;
    PROTO_SET(&rp, PROTO_REPORT_REQ_HEADERS);
    fx->sb.size = 0;
    assert_int_equal(proto_encode_request(&fx->sb, PROTO_OP_REPORT, 9, &rp),
                     0);
    msgpack_zone_clear(&fx->zone);
    assert_int_equal(proto_decode_request((unsigned char *)fx->sb.data + 4,
                                          (uint32_t)fx->sb.size - 4,
                                          &fx->zone, &req, &e),
                     PROTO_DECODE_OK);
    assert_true(PROTO_HAS(&req.u.report, PROTO_REPORT_REQ_HEADERS));
    assert_int_equal(req.u.report.headers.n, 2);
    assert_memory_equal(req.u.report.headers.key[1].ptr,
                        "x-ratelimit-reset-requests", 26);
    assert_int_equal(req.u.report.headers.value[1].len, 4);
    assert_memory_equal(req.u.report.headers.value[1].ptr, "6m0s", 4);
    assert_memory_equal(req.u.report.headers.value[0].ptr, "2", 1);

    /* An empty map is present and empty. */
    rp.headers.n = 0;
    fx->sb.size = 0;
    assert_int_equal(proto_encode_request(&fx->sb, PROTO_OP_REPORT, 9, &rp),
                     0);
    msgpack_zone_clear(&fx->zone);
    assert_int_equal(proto_decode_request((unsigned char *)fx->sb.data + 4,
                                          (uint32_t)fx->sb.size - 4,
                                          &fx->zone, &req, &e),
                     PROTO_DECODE_OK);
    assert_true(PROTO_HAS(&req.u.report, PROTO_REPORT_REQ_HEADERS));
    assert_int_equal(req.u.report.headers.n, 0);
}

/* A header map with a value, or a key, that is not a string, or a map
 * that is not a map, is a bad request naming the field. */
static void
test_strmap_wrong_types(void **state)
{
    struct fixture *fx = *state;
    struct proto_req req;
    struct proto_error e;

    for (int round = 0; round < 3; round++) {
        RAW(fx);
        msgpack_pack_map(&pk, 5);
        pstr(&pk, "op");
        pstr(&pk, "report");
        pstr(&pk, "id");
        msgpack_pack_uint64(&pk, 1);
        pstr(&pk, "permit_id");
        msgpack_pack_uint64(&pk, 1);
        pstr(&pk, "outcome");
        pstr(&pk, "ok");
        pstr(&pk, "headers");
        if (round == 2) {
            pstr(&pk, "retry-after: 2");
        } else {
            msgpack_pack_map(&pk, 2);
            pstr(&pk, "retry-after");
            pstr(&pk, "2");
            if (round == 0)
                msgpack_pack_int(&pk, 5);
            else
                pstr(&pk, "x-ratelimit-remaining-requests");
            if (round == 0)
                pstr(&pk, "five");
            else
                msgpack_pack_int(&pk, 0);
        }
        assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_BAD);
        assert_int_equal(e.code, PROTO_E_BAD_REQUEST);
        assert_string_equal(e.msg, "field 'headers': expected a map of "
                                   "strings to strings");
    }
}

/* Unknown keys are ignored, so newer clients can add fields. */
static void
test_unknown_fields_ignored(void **state)
{
    struct fixture *fx = *state;
    struct proto_req req;
    struct proto_error e;
    RAW(fx);

    msgpack_pack_map(&pk, 3);
    pstr(&pk, "op");
    pstr(&pk, "ping");
    pstr(&pk, "id");
    msgpack_pack_uint64(&pk, 3);
    pstr(&pk, "future");
    msgpack_pack_array(&pk, 0);
    assert_int_equal(decode_raw(fx, &req, &e), PROTO_DECODE_OK);
    assert_int_equal(req.op, PROTO_OP_PING);
}

static void
test_errcode_names(void **state)
{
    for (int i = 1; i < PROTO_E__COUNT; i++) {
        const char *n = proto_errcode_name((enum proto_errcode)i);
        assert_int_equal(proto_errcode_from_name(n, strlen(n)), i);
    }
    assert_string_equal(proto_errcode_name(PROTO_E_FRAME_TOO_LARGE),
                        "frame_too_large");
    assert_int_equal(proto_errcode_from_name("nope", 4), PROTO_E__COUNT);
}

/* A row's NAME is its name in capitals, so that bit names can be guessed. */
static void
check_bit_name(const char *name, const char *upper)
{
    size_t n = strlen(name);

    assert_int_equal(strlen(upper), n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(toupper((unsigned char)name[i]), upper[i]);
}

#define CHECK_ROW(m, name, NAME, type, flags) check_bit_name(#name, #NAME);
#define CHECK_MESSAGE(msg, MSG) PROTO_##MSG##_FIELDS(CHECK_ROW, MSG)

static void
test_field_bits(void **state)
{
    const struct proto_msgdef *permit = proto_request_def(PROTO_OP_PERMIT);

    PROTO_MESSAGES(CHECK_MESSAGE)
    /* A bit indexes its message's table. */
    assert_int_equal(permit->nfields, PROTO_PERMIT_REQ__COUNT);
    assert_string_equal(permit->fields[PROTO_PERMIT_REQ_CALL_ID].name,
                        "call_id");
    assert_string_equal(proto_reply_def(PROTO_OP_STATUS)->fields[
                            PROTO_STATUS_REP_PROVIDERS].sub->name,
                        "struct proto_provider_status");
    /* One struct, two tables: quota_set's limit, the others without. */
    assert_int_equal(proto_request_def(PROTO_OP_QUOTA_SET)->nfields,
                     PROTO_QUOTA_SUBJECT_REQ__COUNT);
    assert_int_equal(proto_request_def(PROTO_OP_QUOTA_STATUS)->nfields,
                     PROTO_QUOTA_SUBJECT_REQ_LIMIT);
    assert_int_equal(proto_request_def(PROTO_OP_QUOTA_RESET)->nfields,
                     PROTO_QUOTA_SUBJECT_REQ_LIMIT);
    assert_int_equal(proto_request_def(PROTO_OP_PING)->nfields, 0);
    assert_int_equal(PROTO_BIT(PROTO_ERR_MSG), 1u << 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_roundtrip),
        cmocka_unit_test(test_ping_reply_roundtrip),
        cmocka_unit_test(test_explain_roundtrip),
        cmocka_unit_test(test_error_roundtrip),
        cmocka_unit_test(test_not_msgpack),
        cmocka_unit_test(test_missing_op_and_id),
        cmocka_unit_test(test_unknown_op_and_wrong_types),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_strmap_roundtrip),
        cmocka_unit_test(test_strmap_wrong_types),
        cmocka_unit_test(test_errcode_names),
        cmocka_unit_test(test_field_bits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
