/* frame.c - length-prefixed framing, bytes in, frames out. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

void
proto_reader_init(struct proto_reader *r)
{
    memset(r, 0, sizeof(*r));
}

void
proto_reader_free(struct proto_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

unsigned char *
proto_reader_space(struct proto_reader *r, size_t min, size_t *avail)
{
    if (r->off > 0 && r->off == r->len)
        r->off = r->len = 0;
    if (r->len + min > r->cap) {
        /* Slide the unread part to the front before growing. */
        if (r->off > 0) {
            memmove(r->buf, r->buf + r->off, r->len - r->off);
            r->len -= r->off;
            r->off = 0;
        }
        if (r->len + min > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + min)
                cap *= 2;
            unsigned char *nb = realloc(r->buf, cap);
            if (nb == NULL)
                return NULL;
            r->buf = nb;
            r->cap = cap;
        }
    }
    *avail = r->cap - r->len;
    return r->buf + r->len;
}

void
proto_reader_commit(struct proto_reader *r, size_t n)
{
    r->len += n;
}

int
proto_reader_feed(struct proto_reader *r, const void *data, size_t len)
{
    unsigned char *p;
    size_t avail;

    if (len == 0)
        return 0;
    if ((p = proto_reader_space(r, len, &avail)) == NULL)
        return -1;
    memcpy(p, data, len);
    proto_reader_commit(r, len);
    return 0;
}

int
proto_frame_length(const unsigned char hdr[4], uint32_t *len,
                   struct proto_error *e)
{
    uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
                 (uint32_t)hdr[2] << 8 | hdr[3];

    if (n == 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "frame length 0: a frame holds one msgpack map");
    if (n > PROTO_MAX_FRAME)
        return proto_error_set(e, PROTO_E_FRAME_TOO_LARGE,
                               "frame length %u exceeds the limit of %u bytes",
                               n, PROTO_MAX_FRAME);
    *len = n;
    return 1;
}

int
proto_reader_next(struct proto_reader *r, const unsigned char **frame,
                  uint32_t *len, struct proto_error *e)
{
    size_t avail = r->len - r->off;
    uint32_t n;

    if (avail < 4)
        return 0;
    if (proto_frame_length(r->buf + r->off, &n, e) < 0)
        return -1;
    if (avail - 4 < n)
        return 0;
    *frame = r->buf + r->off + 4;
    *len = n;
    r->off += 4 + (size_t)n;
    return 1;
}

size_t
proto_reader_pending(const struct proto_reader *r)
{
    return r->len - r->off;
}
