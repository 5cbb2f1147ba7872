/*
 * fuzz_reply.c - libFuzzer harness for proto_decode_reply (proto/codec.c),
 * the client side of the codec (libllmguard, llmguardctl).
 *
 * Input: one byte choosing the op the client sent (byte % PROTO_OP__COUNT),
 * then one frame body of at most PROTO_MAX_FRAME bytes.  Checked:
 *   - proto_reply_id() agrees with the decoder on the id;
 *   - a decode failure fills e with a real code and a terminated message;
 *   - a successful reply round-trips: proto_encode_reply() of the decoded
 *     fields decodes again to the same id and fields (compared through the
 *     op's reply table, sub-messages included);
 *   - a failed reply round-trips through proto_encode_error(): the same id,
 *     code (when the code is one we know), message (cut to what
 *     struct proto_error holds) and, beside a subject, the quota details;
 *     without a subject the details are dropped.
 * Re-encoding may fail only for a frame too large to send: numbers grow
 * to 9 bytes (a 1-byte integer in a double array is the worst case).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_msg.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether an encoder may refuse a re-encoding of an in_len-byte frame. */
static bool
may_not_fit(uint32_t in_len)
{
    return (size_t)in_len * 9 + 256 > PROTO_MAX_FRAME;
}

static bool
str_is(const struct proto_str *s, const char *c, size_t len)
{
    return s->len == len && memcmp(s->ptr, c, len) == 0;
}

/* Check a just-encoded frame in sb and decode it as a reply to op. */
static void
decode_again(msgpack_sbuffer *sb, enum proto_op op, msgpack_zone *zone,
             struct proto_rep *rep)
{
    struct proto_error e;
    uint64_t id;
    uint32_t len;

    FUZZ_CHECK(sb->size > 4);
    len = fuzz_be32((unsigned char *)sb->data);
    FUZZ_CHECK(len == sb->size - 4 && len <= PROTO_MAX_FRAME);
    FUZZ_CHECK(proto_decode_reply((unsigned char *)sb->data + 4, len, op, zone,
                                  rep, &e) == 0);
    FUZZ_CHECK(proto_reply_id((unsigned char *)sb->data + 4, len, &id) == 0);
    FUZZ_CHECK(id == rep->id);
}

static void
check_ok_round_trip(enum proto_op op, msgpack_zone *zone,
                    const struct proto_rep *rep, uint32_t in_len)
{
    msgpack_sbuffer sb;
    struct proto_rep rep2;

    msgpack_sbuffer_init(&sb);
    if (proto_encode_reply(&sb, op, rep->id, &rep->u) < 0) {
        FUZZ_CHECK(may_not_fit(in_len) && sb.size == 0);
    } else {
        decode_again(&sb, op, zone, &rep2);
        FUZZ_CHECK(rep2.ok && rep2.id == rep->id);
        FUZZ_CHECK(fuzz_msg_equal(proto_reply_def(op), &rep->u, &rep2.u));
    }
    msgpack_sbuffer_destroy(&sb);
}

static void
check_err_round_trip(enum proto_op op, msgpack_zone *zone,
                     const struct proto_rep *rep, uint32_t in_len)
{
    const struct proto_err *d = &rep->err;
    const struct proto_err *d2;
    enum proto_errcode code = proto_errcode_from_name(d->code.ptr, d->code.len);
    msgpack_sbuffer sb;
    struct proto_error pe;
    struct proto_rep rep2;
    const char *name;

    memset(&pe, 0, sizeof(pe));
    pe.code = code == PROTO_E__COUNT ? PROTO_E_INTERNAL : code;
    snprintf(pe.msg, sizeof(pe.msg), "%.*s", (int)d->msg.len, d->msg.ptr);
    pe.detail = *d;
    msgpack_sbuffer_init(&sb);
    if (proto_encode_error(&sb, rep->id, &pe) < 0) {
        FUZZ_CHECK(may_not_fit(in_len) && sb.size == 0);
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    decode_again(&sb, op, zone, &rep2);
    d2 = &rep2.err;
    name = proto_errcode_name(pe.code);
    FUZZ_CHECK(!rep2.ok && rep2.id == rep->id);
    FUZZ_CHECK(str_is(&d2->code, name, strlen(name)));
    if (code != PROTO_E__COUNT)
        FUZZ_CHECK(str_is(&d2->code, d->code.ptr, d->code.len));
    FUZZ_CHECK(str_is(&d2->msg, pe.msg, strlen(pe.msg)));
    if (PROTO_HAS(d, PROTO_ERR_SUBJECT)) {
        /* Code and message are replaced; the details go through as is. */
        FUZZ_CHECK(d2->has == d->has);
        FUZZ_CHECK(str_is(&d2->subject, d->subject.ptr, d->subject.len));
        if (PROTO_HAS(d, PROTO_ERR_TOKENS_USED))
            FUZZ_CHECK(d2->tokens_used == d->tokens_used);
        if (PROTO_HAS(d, PROTO_ERR_TOKENS_LIMIT))
            FUZZ_CHECK(d2->tokens_limit == d->tokens_limit);
        if (PROTO_HAS(d, PROTO_ERR_RESET_AT))
            FUZZ_CHECK(memcmp(&d2->reset_at, &d->reset_at,
                              sizeof(double)) == 0);
    } else {
        FUZZ_CHECK(d2->has ==
                   (PROTO_BIT(PROTO_ERR_CODE) | PROTO_BIT(PROTO_ERR_MSG)));
    }
    msgpack_sbuffer_destroy(&sb);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_zone zone;
    struct proto_rep rep;
    struct proto_error e;
    enum proto_op op;
    const unsigned char *frame;
    uint32_t len;
    uint64_t id;
    int id_rc;

    if (size < 1 || size - 1 > PROTO_MAX_FRAME)
        return 0;
    op = (enum proto_op)(data[0] % PROTO_OP__COUNT);
    frame = data + 1;
    len = (uint32_t)(size - 1);
    if (!msgpack_zone_init(&zone, 2048))
        return 0;
    id_rc = proto_reply_id(frame, len, &id);
    FUZZ_CHECK(id_rc == 0 || id_rc == -1);
    if (proto_decode_reply(frame, len, op, &zone, &rep, &e) < 0) {
        FUZZ_CHECK(e.code > PROTO_OK && e.code < PROTO_E__COUNT);
        FUZZ_CHECK(memchr(e.msg, '\0', sizeof(e.msg)) != NULL);
    } else {
        /* Both take the last "id" that is a non-negative integer. */
        FUZZ_CHECK(id_rc == 0 ? id == rep.id : rep.id == 0);
        if (rep.ok)
            check_ok_round_trip(op, &zone, &rep, len);
        else
            check_err_round_trip(op, &zone, &rep, len);
    }
    msgpack_zone_destroy(&zone);
    return 0;
}
