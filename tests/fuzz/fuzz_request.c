/*
 * fuzz_request.c - libFuzzer harness for proto_decode_request (proto/codec.c).
 *
 * Input: one frame body, as proto_reader_next() hands it over (so at most
 * PROTO_MAX_FRAME bytes).  The codec is table-driven, so this one entry
 * point reaches the decoder of every request.  Checked:
 *   - the result is OK, BAD or FATAL; on BAD/FATAL the error has a real
 *     code and a terminated message, and the error reply the daemon would
 *     send for it encodes and decodes back with the same id and code;
 *   - on OK the round trip: proto_encode_request() of the decoded request
 *     decodes again, to the same op, id and fields (compared through the
 *     op's field table).  Re-encoding may only fail when the input is
 *     within a few bytes of the frame limit (a number sent as a 1-byte
 *     integer comes back as an 8-byte double).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_msg.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* At most 3 doubles per request grow by 8 bytes each; keep a margin. */
#define REQUEST_GROWTH_MAX 64

/* The error reply of a rejected request must survive the wire. */
static void
check_error_reply(msgpack_zone *zone, uint64_t id, const struct proto_error *e)
{
    msgpack_sbuffer sb;
    struct proto_rep rep;
    struct proto_error e2;
    const char *code = proto_errcode_name(e->code);

    FUZZ_CHECK(e->code > PROTO_OK && e->code < PROTO_E__COUNT);
    FUZZ_CHECK(memchr(e->msg, '\0', sizeof(e->msg)) != NULL);
    msgpack_sbuffer_init(&sb);
    FUZZ_CHECK(proto_encode_error(&sb, id, e) == 0);
    FUZZ_CHECK(sb.size > 4 && fuzz_be32((unsigned char *)sb.data) ==
                                  sb.size - 4);
    FUZZ_CHECK(proto_decode_reply((unsigned char *)sb.data + 4,
                                  (uint32_t)(sb.size - 4), PROTO_OP_PING, zone,
                                  &rep, &e2) == 0);
    FUZZ_CHECK(!rep.ok && rep.id == id);
    FUZZ_CHECK(rep.err.code.len == strlen(code) &&
               memcmp(rep.err.code.ptr, code, rep.err.code.len) == 0);
    FUZZ_CHECK(rep.err.msg.len == strlen(e->msg) &&
               memcmp(rep.err.msg.ptr, e->msg, rep.err.msg.len) == 0);
    msgpack_sbuffer_destroy(&sb);
}

/* Encode req again and decode the result: the same request must come out. */
static void
check_round_trip(msgpack_zone *zone, const struct proto_req *req,
                 uint32_t in_len)
{
    msgpack_sbuffer sb;
    struct proto_req req2;
    struct proto_error e2;
    uint32_t len;

    msgpack_sbuffer_init(&sb);
    if (proto_encode_request(&sb, req->op, req->id, &req->u) < 0) {
        /* Only "too large", and then nothing was left in sb. */
        FUZZ_CHECK(in_len > PROTO_MAX_FRAME - REQUEST_GROWTH_MAX);
        FUZZ_CHECK(sb.size == 0);
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    FUZZ_CHECK(sb.size > 4);
    len = fuzz_be32((unsigned char *)sb.data);
    FUZZ_CHECK(len == sb.size - 4 && len <= PROTO_MAX_FRAME);
    FUZZ_CHECK(proto_decode_request((unsigned char *)sb.data + 4, len, zone,
                                    &req2, &e2) == PROTO_DECODE_OK);
    FUZZ_CHECK(req2.op == req->op);
    FUZZ_CHECK(req2.id == req->id);
    FUZZ_CHECK(fuzz_msg_equal(proto_request_def(req->op), &req->u, &req2.u));
    msgpack_sbuffer_destroy(&sb);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_zone zone;
    struct proto_req req;
    struct proto_error e;

    if (size > PROTO_MAX_FRAME)     /* the reader never hands that over */
        return 0;
    if (!msgpack_zone_init(&zone, 2048))
        return 0;
    switch (proto_decode_request(data, (uint32_t)size, &zone, &req, &e)) {
    case PROTO_DECODE_OK:
        FUZZ_CHECK((unsigned)req.op < PROTO_OP__COUNT);
        check_round_trip(&zone, &req, (uint32_t)size);
        break;
    case PROTO_DECODE_BAD:
        check_error_reply(&zone, req.id, &e);
        break;
    case PROTO_DECODE_FATAL:
        FUZZ_CHECK(req.id == 0);
        check_error_reply(&zone, 0, &e);
        break;
    default:
        FUZZ_CHECK(!"proto_decode_request: unknown result");
    }
    msgpack_zone_destroy(&zone);
    return 0;
}
