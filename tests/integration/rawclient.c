/*
 * rawclient - send hand-made bytes to llmguardd and print what comes back.
 *
 *   rawclient [-n N] SOCKET ITEM...
 *
 * ITEM is raw:HEX (bytes as they are), req:OP:ID (a frame with only op and
 * id), req:OP:ID:K=V,K=V... (with fields: digits are an unsigned integer,
 * -digits a negative one, a number with a dot a double, true/false a
 * boolean, hex:HEX a string of those bytes, [A|B...] an array of such
 * values, anything else a string), ping:ID, or wait:MS (send what is
 * there so far, then pause MS milliseconds before the rest).  After sending, it prints one line per reply frame,
 * "ok ID" or "err ID CODE MSG", then "closed" if the daemon closed the
 * connection or "open" if it was still open after a second of silence.
 * With -n N it exits after the Nth reply instead, printing neither: for a
 * test that reads only the replies, not that second of silence.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"

static int add_hex(msgpack_sbuffer *sb, const char *hex);
static void pack_value(msgpack_packer *pk, const char *v);

/* "[a|b|c]": an array of values. */
static void
pack_array(msgpack_packer *pk, const char *v)
{
    char buf[4096], *rest = buf, *item;
    size_t n = 0;

    snprintf(buf, sizeof(buf), "%.*s", (int)(strlen(v) - 2), v + 1);
    for (const char *p = buf; *p; p++)
        n += *p == '|';
    msgpack_pack_array(pk, buf[0] ? n + 1 : 0);
    while (buf[0] && (item = strsep(&rest, "|")) != NULL)
        pack_value(pk, item);
}

static void
pack_value(msgpack_packer *pk, const char *v)
{
    char *end;
    size_t len = strlen(v);

    if (strncmp(v, "hex:", 4) == 0) {
        msgpack_sbuffer bytes;
        msgpack_sbuffer_init(&bytes);
        if (add_hex(&bytes, v + 4) < 0) {
            fprintf(stderr, "bad hex: %s\n", v);
            exit(2);
        }
        msgpack_pack_str_with_body(pk, bytes.data ? bytes.data : "",
                                   bytes.size);
        msgpack_sbuffer_destroy(&bytes);
    } else if (len >= 2 && v[0] == '[' && v[len - 1] == ']') {
        pack_array(pk, v);
    } else if (strcmp(v, "true") == 0) {
        msgpack_pack_true(pk);
    } else if (strcmp(v, "false") == 0) {
        msgpack_pack_false(pk);
    } else if (v[0] != '\0' && v[strspn(v, "0123456789")] == '\0') {
        msgpack_pack_uint64(pk, strtoull(v, NULL, 10));
    } else if (v[0] == '-' && v[1] != '\0' &&
               v[1 + strspn(v + 1, "0123456789")] == '\0') {
        msgpack_pack_int64(pk, strtoll(v, NULL, 10));
    } else if (strchr(v, '.') != NULL && (strtod(v, &end), *end == '\0')) {
        msgpack_pack_double(pk, strtod(v, NULL));
    } else {
        msgpack_pack_str_with_body(pk, v, strlen(v));
    }
}

static void
add_request(msgpack_sbuffer *sb, const char *op, uint64_t id, char *fields)
{
    msgpack_packer pk;
    size_t start = sb->size;
    static const char zero[4];
    size_t nf = 0;
    char *save, *kv;

    for (const char *p = fields; p && *p; p++)
        nf += *p == ',';
    if (fields != NULL && *fields != '\0')
        nf++;
    msgpack_sbuffer_write(sb, zero, 4);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2 + nf);
    for (kv = fields ? strtok_r(fields, ",", &save) : NULL; kv != NULL;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (eq == NULL)
            eq = kv + strlen(kv);
        msgpack_pack_str_with_body(&pk, kv, (size_t)(eq - kv));
        pack_value(&pk, *eq ? eq + 1 : "");
    }
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, op, strlen(op));
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint64(&pk, id);
    size_t n = sb->size - start - 4;
    sb->data[start + 1] = (char)(n >> 16);
    sb->data[start + 2] = (char)(n >> 8);
    sb->data[start + 3] = (char)n;
}

static int
add_hex(msgpack_sbuffer *sb, const char *hex)
{
    size_t n = strlen(hex);

    if (n % 2)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        char b[3] = { hex[i], hex[i + 1], 0 }, *end;
        char c = (char)strtoul(b, &end, 16);
        if (*end != '\0')
            return -1;
        msgpack_sbuffer_write(sb, &c, 1);
    }
    return 0;
}

static void
print_reply(const unsigned char *frame, uint32_t len)
{
    msgpack_zone zone;
    struct proto_rep rep;
    struct proto_error e;

    msgpack_zone_init(&zone, 1024);
    if (proto_decode_reply(frame, len, PROTO_OP_PING, &zone, &rep, &e) < 0)
        printf("malformed %s\n", e.msg);
    else if (rep.ok)
        printf("ok %llu\n", (unsigned long long)rep.id);
    else
        printf("err %llu %.*s %.*s\n", (unsigned long long)rep.id,
               (int)rep.err.code.len, rep.err.code.ptr, (int)rep.err.msg.len,
               rep.err.msg.ptr);
    msgpack_zone_destroy(&zone);
}

int
main(int argc, char **argv)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    msgpack_sbuffer sb;
    struct proto_reader rd;
    int fd;
    long replies = 0, want = -1; /* -1: until closed or silent */

    if (argc > 2 && strcmp(argv[1], "-n") == 0) {
        want = strtol(argv[2], NULL, 10);
        argv += 2;
        argc -= 2;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: rawclient [-n N] SOCKET ITEM...\n");
        return 2;
    }
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", argv[1]);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        perror("connect");
        return 1;
    }
    msgpack_sbuffer_init(&sb);
    for (int i = 2; i < argc; i++) {
        unsigned ms;
        if (sscanf(argv[i], "wait:%u", &ms) == 1) {
            if (sb.size > 0 && send(fd, sb.data, sb.size, MSG_NOSIGNAL) !=
                (ssize_t)sb.size) {
                perror("send");
                return 1;
            }
            sb.size = 0;
            usleep(ms * 1000u);
            continue;
        }
        char op[64], fields[4096];
        unsigned long long id;
        int nconv;
        if (strncmp(argv[i], "raw:", 4) == 0) {
            if (add_hex(&sb, argv[i] + 4) < 0) {
                fprintf(stderr, "bad hex: %s\n", argv[i]);
                return 2;
            }
        } else if ((nconv = sscanf(argv[i], "req:%63[^:]:%llu:%4095s", op,
                                   &id, fields)) >= 2) {
            add_request(&sb, op, id, nconv == 3 ? fields : NULL);
        } else if (sscanf(argv[i], "ping:%llu", &id) == 1) {
            add_request(&sb, "ping", id, NULL);
        } else {
            fprintf(stderr, "bad item: %s\n", argv[i]);
            return 2;
        }
    }
    if (sb.size > 0 &&
        send(fd, sb.data, sb.size, MSG_NOSIGNAL) != (ssize_t)sb.size) {
        perror("send");
        return 1;
    }
    proto_reader_init(&rd);
    while (replies != want) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        unsigned char buf[65536];
        const unsigned char *frame;
        uint32_t len;
        struct proto_error e;

        if (poll(&pfd, 1, 1000) == 0) {
            printf("open\n");
            break;
        }
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            printf("closed\n");
            break;
        }
        proto_reader_feed(&rd, buf, (size_t)n);
        while (replies != want &&
               proto_reader_next(&rd, &frame, &len, &e) == 1) {
            print_reply(frame, len);
            replies++;
        }
    }
    proto_reader_free(&rd);
    msgpack_sbuffer_destroy(&sb);
    close(fd);
    return 0;
}
