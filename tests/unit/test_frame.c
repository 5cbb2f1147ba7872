/* test_frame.c - the incremental frame reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

static void
put_len(unsigned char *p, uint32_t n)
{
    p[0] = (unsigned char)(n >> 24);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
}

/* A frame split at every possible byte boundary comes out whole, once. */
static void
test_split(void **state)
{
    unsigned char buf[4 + 5];
    const unsigned char *f;
    uint32_t len;
    struct proto_error e;

    put_len(buf, 5);
    memcpy(buf + 4, "\x81\xa1x\x01\xc0", 5);
    for (size_t cut = 0; cut <= sizeof(buf); cut++) {
        struct proto_reader r;
        proto_reader_init(&r);
        assert_int_equal(proto_reader_feed(&r, buf, cut), 0);
        if (cut < sizeof(buf))
            assert_int_equal(proto_reader_next(&r, &f, &len, &e), 0);
        assert_int_equal(proto_reader_feed(&r, buf + cut, sizeof(buf) - cut),
                         0);
        assert_int_equal(proto_reader_next(&r, &f, &len, &e), 1);
        assert_int_equal(len, 5);
        assert_memory_equal(f, buf + 4, 5);
        assert_int_equal(proto_reader_next(&r, &f, &len, &e), 0);
        assert_int_equal(proto_reader_pending(&r), 0);
        proto_reader_free(&r);
    }
}

/* Several frames in one read come out in order; a partial tail waits. */
static void
test_batched(void **state)
{
    unsigned char buf[64];
    size_t off = 0;
    const unsigned char *f;
    uint32_t len;
    struct proto_error e;
    struct proto_reader r;

    for (int i = 1; i <= 3; i++) {
        put_len(buf + off, (uint32_t)i);
        memset(buf + off + 4, 'a' + i, (size_t)i);
        off += 4 + (size_t)i;
    }
    put_len(buf + off, 10);     /* the start of a fourth frame */
    off += 6;
    proto_reader_init(&r);
    assert_int_equal(proto_reader_feed(&r, buf, off), 0);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(proto_reader_next(&r, &f, &len, &e), 1);
        assert_int_equal(len, (uint32_t)i);
        assert_int_equal(f[0], 'a' + i);
    }
    assert_int_equal(proto_reader_next(&r, &f, &len, &e), 0);
    assert_int_equal(proto_reader_pending(&r), 6);
    proto_reader_free(&r);
}

static void
test_empty_frame(void **state)
{
    unsigned char buf[4] = { 0, 0, 0, 0 };
    const unsigned char *f;
    uint32_t len;
    struct proto_error e;
    struct proto_reader r;

    proto_reader_init(&r);
    proto_reader_feed(&r, buf, 4);
    assert_int_equal(proto_reader_next(&r, &f, &len, &e), -1);
    assert_int_equal(e.code, PROTO_E_BAD_REQUEST);
    proto_reader_free(&r);
}

static void
test_oversize(void **state)
{
    static const uint32_t sizes[] = { PROTO_MAX_FRAME + 1, 0xffffffffu };
    const unsigned char *f;
    uint32_t len;
    struct proto_error e;

    for (size_t i = 0; i < 2; i++) {
        unsigned char buf[4];
        struct proto_reader r;
        put_len(buf, sizes[i]);
        proto_reader_init(&r);
        proto_reader_feed(&r, buf, 4);
        assert_int_equal(proto_reader_next(&r, &f, &len, &e), -1);
        assert_int_equal(e.code, PROTO_E_FRAME_TOO_LARGE);
        assert_non_null(strstr(e.msg, "65536"));
        proto_reader_free(&r);
    }
    /* The largest legal frame is accepted. */
    unsigned char hdr[4];
    put_len(hdr, PROTO_MAX_FRAME);
    assert_int_equal(proto_frame_length(hdr, &len, &e), 1);
    assert_int_equal(len, PROTO_MAX_FRAME);
}

/* A big frame fed in small pieces, across buffer growth and compaction. */
static void
test_large_incremental(void **state)
{
    static unsigned char buf[2 * (4 + PROTO_MAX_FRAME)];
    const unsigned char *f;
    uint32_t len;
    struct proto_error e;
    struct proto_reader r;
    int got = 0;

    for (int k = 0; k < 2; k++) {
        unsigned char *p = buf + (size_t)k * (4 + PROTO_MAX_FRAME);
        put_len(p, PROTO_MAX_FRAME);
        memset(p + 4, 'x' + k, PROTO_MAX_FRAME);
    }
    proto_reader_init(&r);
    for (size_t off = 0; off < sizeof(buf); off += 1000) {
        size_t n = sizeof(buf) - off < 1000 ? sizeof(buf) - off : 1000;
        assert_int_equal(proto_reader_feed(&r, buf + off, n), 0);
        while (proto_reader_next(&r, &f, &len, &e) == 1) {
            assert_int_equal(len, PROTO_MAX_FRAME);
            assert_int_equal(f[0], 'x' + got);
            assert_int_equal(f[PROTO_MAX_FRAME - 1], 'x' + got);
            got++;
        }
    }
    assert_int_equal(got, 2);
    proto_reader_free(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_batched),
        cmocka_unit_test(test_empty_frame),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_large_incremental),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
