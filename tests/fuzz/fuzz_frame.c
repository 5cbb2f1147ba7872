/*
 * fuzz_frame.c - libFuzzer harness for the incremental frame reader
 * (proto_reader_feed / space / commit / next, proto/frame.c).
 *
 * Input: 2 bytes that seed the chunking, then the byte stream.  The stream
 * is fed in chunks of pseudo-random sizes (mostly small, so that length
 * prefixes are split at every offset, sometimes large), half of them with
 * proto_reader_feed() and half zero-copy, as llmguardd and libllmguard
 * read(2): proto_reader_space() for at least 1, 4, 4096 or 16384 bytes or
 * the chunk, then proto_reader_commit() of what "arrived" (a short read,
 * or sometimes nothing).  The room must be as large as *avail says (ASan
 * sees the writes) and what is written there past the commit must never
 * show up in a frame.  After each chunk some or all of the available
 * frames are taken.  Every call is checked against a reference parser
 * that walks the whole stream at once:
 *   - next() returns 1 exactly when the reference has a whole frame, with
 *     the same length (1..PROTO_MAX_FRAME) and the same bytes;
 *   - it returns -1 exactly when the reference sees a length of 0
 *     (bad_request) or over PROTO_MAX_FRAME (frame_too_large), and then the
 *     caller stops, as the daemon closes the connection;
 *   - otherwise 0, and proto_reader_pending() always equals the bytes fed
 *     minus the frames taken.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_msg.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* xorshift32: the chunk sizes, reproducible from the input alone. */
static uint32_t
next_rand(uint32_t *s)
{
    uint32_t x = *s;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* The reference: what next() must return with fed bytes of stream held
 * and taken bytes consumed; *n gets the frame length or the bad length. */
static int
expect_next(const unsigned char *stream, size_t fed, size_t taken,
            uint32_t *n)
{
    if (fed - taken < 4)
        return 0;
    *n = fuzz_be32(stream + taken);
    if (*n == 0 || *n > PROTO_MAX_FRAME)
        return -1;
    return fed - taken - 4 < *n ? 0 : 1;
}

/*
 * Hand the chunk bytes at p to the reader as x picks (see the top); returns
 * how many it took.
 */
static size_t
put_chunk(struct proto_reader *r, const unsigned char *p, size_t chunk,
          uint32_t x)
{
    static const size_t mins[] = { 1, 4, 4096, 16384 };
    size_t before = proto_reader_pending(r), min, avail = 0, n;
    unsigned char *room;

    if (x % 2 == 0) {
        FUZZ_CHECK(proto_reader_feed(r, p, chunk) == 0);
        return chunk;
    }
    min = x % 4 == 1 ? chunk : mins[(x >> 2) % 4];
    room = proto_reader_space(r, min, &avail);
    FUZZ_CHECK(room != NULL && avail >= min);
    FUZZ_CHECK(proto_reader_pending(r) == before);
    n = chunk < avail ? chunk : avail;
    memcpy(room, p, n);
    /* Scribble past the data, up to the last byte of the room. */
    if (avail > n) {
        memset(room + n, 0xa5, avail - n < 64 ? avail - n : 64);
        room[avail - 1] = 0x5a;
    }
    if ((x >> 4) % 8 == 0)
        n = 0;                          /* EAGAIN: nothing arrived */
    proto_reader_commit(r, n);
    return n;
}

/* Take up to max frames (all when max is SIZE_MAX); -1 once broken. */
static int
drain(struct proto_reader *r, const unsigned char *stream, size_t fed,
      size_t *taken, size_t max)
{
    for (size_t i = 0; i < max; i++) {
        const unsigned char *frame = NULL;
        uint32_t len = 0, n = 0;
        struct proto_error e;
        int want = expect_next(stream, fed, *taken, &n);
        int rc = proto_reader_next(r, &frame, &len, &e);

        FUZZ_CHECK(rc == want);
        if (rc == 0) {
            FUZZ_CHECK(proto_reader_pending(r) == fed - *taken);
            return 0;
        }
        if (rc < 0) {
            FUZZ_CHECK(e.code == (n == 0 ? PROTO_E_BAD_REQUEST
                                         : PROTO_E_FRAME_TOO_LARGE));
            FUZZ_CHECK(memchr(e.msg, '\0', sizeof(e.msg)) != NULL);
            /* Nothing was consumed; the caller replies and closes. */
            FUZZ_CHECK(proto_reader_pending(r) == fed - *taken);
            return -1;
        }
        FUZZ_CHECK(len == n && len >= 1 && len <= PROTO_MAX_FRAME);
        FUZZ_CHECK(frame != NULL);
        FUZZ_CHECK(memcmp(frame, stream + *taken + 4, len) == 0);
        *taken += 4 + (size_t)len;
        FUZZ_CHECK(proto_reader_pending(r) == fed - *taken);
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proto_reader r;
    const unsigned char *stream;
    size_t len, fed = 0, taken = 0;
    uint32_t seed;

    if (size < 2)
        return 0;
    seed = (uint32_t)data[0] << 8 | data[1];
    seed = seed * 2654435761u | 1;      /* xorshift needs a non-zero state */
    stream = data + 2;
    len = size - 2;

    proto_reader_init(&r);
    FUZZ_CHECK(proto_reader_pending(&r) == 0);
    while (fed < len) {
        uint32_t x = next_rand(&seed);
        size_t left = len - fed, chunk;

        /* 3 in 4 chunks are 1..8 bytes, the rest anything up to the end. */
        if (x % 4 != 0)
            chunk = 1 + (x >> 2) % 8;
        else
            chunk = 1 + (x >> 2) % left;
        if (chunk > left)
            chunk = left;
        fed += put_chunk(&r, stream + fed, chunk, next_rand(&seed));
        FUZZ_CHECK(proto_reader_pending(&r) == fed - taken);

        /* Usually take everything; sometimes one frame or none, so that
         * unread frames pile up and the buffer slides and grows. */
        x = next_rand(&seed);
        if (drain(&r, stream, fed, &taken,
                  x % 8 == 0 ? 0 : x % 8 == 1 ? 1 : SIZE_MAX) < 0)
            goto out;
    }
    /* An empty feed changes nothing. */
    FUZZ_CHECK(proto_reader_feed(&r, stream, 0) == 0);
    (void)drain(&r, stream, fed, &taken, SIZE_MAX);
out:
    proto_reader_free(&r);
    FUZZ_CHECK(proto_reader_pending(&r) == 0);
    return 0;
}
