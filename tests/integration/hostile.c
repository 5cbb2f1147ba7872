/*
 * hostile - try hard to break llmguardd over its socket, then check that
 * it still serves.  hostile SOCKET PROVIDER
 *
 *  1. every field of every op with a value of the wrong type: each must get
 *     bad_request naming the field, on a connection that stays open;
 *  2. huge strings, ids with control characters, unknown ops;
 *  3. random bytes, truncated frames and hang-ups on many connections.
 * Prints "ok - ..." / "not ok - ..." lines; exits 1 on any failure.
 */
#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"

static const char *sock_path, *provider;
static int failures;

static int
dial(void)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        perror("connect");
        exit(2);
    }
    return fd;
}

/* Send a frame body (prefix added) and read one reply: 1 when one came,
 * 0 when the daemon closed the connection. */
static int
roundtrip(int fd, const char *body, size_t len, struct proto_rep *rep,
          msgpack_zone *zone, unsigned char *buf, size_t cap)
{
    unsigned char hdr[4] = { (unsigned char)(len >> 24),
                             (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len };
    struct proto_reader rd;
    const unsigned char *frame;
    uint32_t flen;
    struct proto_error e;

    if (send(fd, hdr, 4, MSG_NOSIGNAL) != 4 ||
        send(fd, body, len, MSG_NOSIGNAL) != (ssize_t)len)
        return 0;
    proto_reader_init(&rd);
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 5000) <= 0)
            break;
        ssize_t n = recv(fd, buf, cap, 0);
        if (n <= 0)
            break;
        proto_reader_feed(&rd, buf, (size_t)n);
        if (proto_reader_next(&rd, &frame, &flen, &e) == 1) {
            memmove(buf, frame, flen);
            proto_reader_free(&rd);
            msgpack_zone_clear(zone);
            return proto_decode_reply(buf, flen, PROTO_OP_PING, zone, rep,
                                      &e) == 0;
        }
    }
    proto_reader_free(&rd);
    return 0;
}

static void
report(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
report(int ok, const char *fmt, ...)
{
    va_list ap;

    printf("%s - ", ok ? "ok" : "not ok");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    failures += !ok;
}

/* A valid value for a field of type t (the target field gets a bad one). */
static void
pack_valid(msgpack_packer *pk, const struct proto_field *f)
{
    switch (f->type) {
    case PF_STR:
        msgpack_pack_str_with_body(pk, provider, strlen(provider));
        break;
    case PF_UINT: case PF_INT:
        msgpack_pack_uint64(pk, 1);
        break;
    case PF_DOUBLE:
        msgpack_pack_double(pk, 1.0);
        break;
    case PF_BOOL:
        msgpack_pack_true(pk);
        break;
    case PF_STRMAP:
        msgpack_pack_map(pk, 0);
        break;
    default:
        msgpack_pack_array(pk, 0);
        break;
    }
}

/* A value no field of type t accepts. */
static void
pack_wrong(msgpack_packer *pk, const struct proto_field *f)
{
    if (f->type == PF_STR)
        msgpack_pack_uint64(pk, 7);
    else if (f->type == PF_STRARR)
        msgpack_pack_str_with_body(pk, "x", 1);
    else if (f->type == PF_BOOL)
        msgpack_pack_str_with_body(pk, "yes", 3);
    else if (f->type == PF_STRMAP)
        msgpack_pack_array(pk, 0);
    else
        msgpack_pack_map(pk, 0);
}

static void
wrong_types(void)
{
    msgpack_sbuffer sb;
    msgpack_zone zone;
    static unsigned char buf[1 << 17];
    int fd = dial(), checked = 0;

    msgpack_sbuffer_init(&sb);
    msgpack_zone_init(&zone, 4096);
    for (int op = 0; op < PROTO_OP__COUNT; op++) {
        const struct proto_msgdef *def = proto_request_def((enum proto_op)op);
        for (uint8_t t = 0; t < def->nfields; t++) {
            msgpack_packer pk;
            struct proto_rep rep;
            char want[128];
            sb.size = 0;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            msgpack_pack_map(&pk, 2 + def->nfields);
            msgpack_pack_str_with_body(&pk, "op", 2);
            msgpack_pack_str_with_body(&pk, proto_op_name((enum proto_op)op),
                                       strlen(proto_op_name((enum proto_op)op)));
            msgpack_pack_str_with_body(&pk, "id", 2);
            msgpack_pack_uint64(&pk, 1000u + (unsigned)op * 16 + t);
            for (uint8_t k = 0; k < def->nfields; k++) {
                const struct proto_field *f = &def->fields[k];
                msgpack_pack_str_with_body(&pk, f->name, strlen(f->name));
                if (k == t)
                    pack_wrong(&pk, f);
                else
                    pack_valid(&pk, f);
            }
            snprintf(want, sizeof(want), "field '%s': expected",
                     def->fields[t].name);
            int got = roundtrip(fd, sb.data, sb.size, &rep, &zone, buf,
                                sizeof(buf));
            int ok = got && !rep.ok && rep.id == 1000u + (unsigned)op * 16 + t &&
                     rep.err.msg.len >= strlen(want) &&
                     memcmp(rep.err.msg.ptr, want, strlen(want)) == 0;
            if (!ok)
                report(0, "%s.%s with a wrong type: %s%.*s",
                       proto_op_name((enum proto_op)op), def->fields[t].name,
                       got ? "reply " : "no reply (connection closed)",
                       got ? (int)rep.err.msg.len : 0,
                       got ? rep.err.msg.ptr : "");
            checked++;
        }
    }
    report(failures == 0, "%d fields of %d ops, each with a wrong type: "
           "bad_request naming the field, connection kept", checked,
           PROTO_OP__COUNT);
    close(fd);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_destroy(&zone);
}

/* Requests with huge or hostile strings. */
static void
hostile_strings(void)
{
    msgpack_sbuffer sb;
    msgpack_zone zone;
    static unsigned char buf[1 << 17];
    static char big[60000];
    struct proto_rep rep;
    msgpack_packer pk;
    int fd = dial();
    static const struct { const char *op, *key; const char *val;
                          const char *expect; } cases[] = {
        { "acquire", "provider", NULL, "unknown provider '" },
        { "quota_status", "workflow_id", NULL, "workflow_id must be 1 to 256" },
        { "quota_status", "workflow_id", "a\nb", "workflow_id holds a control" },
        { "quota_status", "tenant_id", "x\x01", "tenant_id holds a control" },
        { "quota_status", "tenant_id", "\xc2\x85", "tenant_id holds a control" },
        { "permit", "call_id", NULL, "call_id must be 1 to 128 bytes" },
        { "report", "outcome", NULL, "missing field 'permit_id'" },
    };

    memset(big, 'A', sizeof(big) - 1);
    msgpack_sbuffer_init(&sb);
    msgpack_zone_init(&zone, 4096);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *v = cases[i].val ? cases[i].val : big;
        sb.size = 0;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        msgpack_pack_str_with_body(&pk, "op", 2);
        msgpack_pack_str_with_body(&pk, cases[i].op, strlen(cases[i].op));
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_uint64(&pk, 77);
        msgpack_pack_str_with_body(&pk, cases[i].key, strlen(cases[i].key));
        msgpack_pack_str_with_body(&pk, v, strlen(v));
        int got = roundtrip(fd, sb.data, sb.size, &rep, &zone, buf,
                            sizeof(buf));
        report(got && !rep.ok && rep.err.msg.len < PROTO_ERRMSG_MAX &&
               memmem(rep.err.msg.ptr, rep.err.msg.len, cases[i].expect,
                      strlen(cases[i].expect)) != NULL,
               "%s.%s = %zu hostile bytes: a bounded error (%.*s)",
               cases[i].op, cases[i].key, strlen(v),
               got ? (int)(rep.err.msg.len > 60 ? 60 : rep.err.msg.len) : 0,
               got ? rep.err.msg.ptr : "");
    }
    close(fd);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_destroy(&zone);
}

/* Random bytes, truncated frames, abrupt hang-ups: 300 connections. */
static void
random_garbage(void)
{
    unsigned seed = 12345;
    unsigned char junk[8192];

    for (int c = 0; c < 300; c++) {
        int fd = dial();
        size_t n = 1 + (size_t)(rand_r(&seed) % sizeof(junk));
        for (size_t i = 0; i < n; i++)
            junk[i] = (unsigned char)rand_r(&seed);
        if (c % 3 == 0) {       /* a plausible length, then too little */
            junk[0] = 0;
            junk[1] = 0;
        }
        send(fd, junk, n, MSG_NOSIGNAL);
        if (c % 2)
            shutdown(fd, SHUT_WR);
        close(fd);
    }
    report(1, "300 connections of random bytes and hang-ups sent");
}

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: hostile SOCKET PROVIDER\n");
        return 2;
    }
    sock_path = argv[1];
    provider = argv[2];
    wrong_types();
    hostile_strings();
    random_garbage();
    return failures ? 1 : 0;
}
