/* codec.c - table-driven msgpack encoding and decoding of every message. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"

static const char *const errcode_names[PROTO_E__COUNT] = {
    [PROTO_OK] = "ok",
    [PROTO_E_BAD_REQUEST] = "bad_request",
    [PROTO_E_UNKNOWN_OP] = "unknown_op",
    [PROTO_E_FRAME_TOO_LARGE] = "frame_too_large",
    [PROTO_E_UNKNOWN_PROVIDER] = "unknown_provider",
    [PROTO_E_TIMEOUT] = "timeout",
    [PROTO_E_QUOTA_EXCEEDED] = "quota_exceeded",
    [PROTO_E_NO_PROVIDER] = "no_provider",
    [PROTO_E_PERMISSION_DENIED] = "permission_denied",
    [PROTO_E_BUSY] = "busy",
    [PROTO_E_INTERNAL] = "internal",
    [PROTO_E_VERSION] = "version",
};

const char *
proto_errcode_name(enum proto_errcode code)
{
    if ((unsigned)code >= PROTO_E__COUNT)
        return "internal";
    return errcode_names[code];
}

enum proto_errcode
proto_errcode_from_name(const char *name, size_t len)
{
    for (int i = 1; i < PROTO_E__COUNT; i++)
        if (strlen(errcode_names[i]) == len &&
            memcmp(errcode_names[i], name, len) == 0)
            return (enum proto_errcode)i;
    return PROTO_E__COUNT;
}

int
proto_error_set(struct proto_error *e, enum proto_errcode code,
                const char *fmt, ...)
{
    va_list ap;

    e->code = code;
    memset(&e->detail, 0, sizeof(e->detail));
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- field tables ------------------------------------------------------ */

/* A row's type column as designators: its type and, for PF_OBJARR(msg),
 * the element's table. */
#define FTYPE_PF_STR            .type = PF_STR
#define FTYPE_PF_UINT           .type = PF_UINT
#define FTYPE_PF_INT            .type = PF_INT
#define FTYPE_PF_DOUBLE         .type = PF_DOUBLE
#define FTYPE_PF_BOOL           .type = PF_BOOL
#define FTYPE_PF_STRARR         .type = PF_STRARR
#define FTYPE_PF_DBLARR         .type = PF_DBLARR
#define FTYPE_PF_STRMAP         .type = PF_STRMAP
#define FTYPE_PF_OBJARR(msg)    .type = PF_OBJARR, .sub = &msg##_def
#define FTYPE_PF_OBJ(msg)       .type = PF_OBJ, .sub = &msg##_def

#define FIELD(msg, fld, FLD, ty, fl)                                    \
    { .name = #fld, .name_len = sizeof(#fld) - 1, FTYPE_##ty,           \
      .flags = (fl),                                                    \
      .offset = (uint16_t)offsetof(struct proto_##msg, fld) },

/*
 * Each message's table <msg>_f, ended by a NULL row (an empty message has
 * one too), and its struct proto_msgdef <msg>_def.  PROTO_MESSAGES lists a
 * PF_OBJARR element before the messages that hold it.
 */
#define TABLE(msg, MSG)                                                 \
    static const struct proto_field msg##_f[] = {                       \
        PROTO_##MSG##_FIELDS(FIELD, msg) { .name = NULL }               \
    };                                                                  \
    static const struct proto_msgdef msg##_def = {                      \
        "struct proto_" #msg, msg##_f, PROTO_##MSG##__COUNT,            \
        (uint16_t)sizeof(struct proto_##msg)                            \
    };
PROTO_MESSAGES(TABLE)

/* quota_status, quota_reset and quota_unset: the fields of quota_set
 * before limit. */
static const struct proto_msgdef quota_subject_def = {
    "struct proto_quota_subject_req", quota_subject_req_f,
    PROTO_QUOTA_SUBJECT_REQ_LIMIT,
    (uint16_t)sizeof(struct proto_quota_subject_req)
};

struct opdef {
    const char *name;
    const struct proto_msgdef *req;
    const struct proto_msgdef *rep;
};

/* One row per op: its wire name, request and reply tables. */
static const struct opdef ops[PROTO_OP__COUNT] = {
    [PROTO_OP_HELLO] = { "hello", &hello_req_def, &hello_rep_def },
    [PROTO_OP_PING] = { "ping", &ping_req_def, &ping_rep_def },
    [PROTO_OP_ACQUIRE] = { "acquire", &acquire_req_def, &acquire_rep_def },
    [PROTO_OP_RELEASE] = { "release", &release_req_def, &release_rep_def },
    [PROTO_OP_LIMITER_STATUS] = { "limiter_status", &limiter_status_req_def,
                                  &limiter_status_rep_def },
    [PROTO_OP_STATUS] = { "status", &status_req_def, &status_rep_def },
    [PROTO_OP_QUOTA_RESERVE] = { "quota_reserve", &quota_reserve_req_def,
                                 &quota_reserve_rep_def },
    [PROTO_OP_QUOTA_COMMIT] = { "quota_commit", &quota_commit_req_def,
                                &quota_commit_rep_def },
    [PROTO_OP_QUOTA_STATUS] = { "quota_status", &quota_subject_def,
                                &quota_status_rep_def },
    [PROTO_OP_QUOTA_SET] = { "quota_set", &quota_subject_req_def,
                             &quota_set_rep_def },
    [PROTO_OP_QUOTA_RESET] = { "quota_reset", &quota_subject_def,
                               &quota_reset_rep_def },
    [PROTO_OP_SELECT_PROVIDER] = { "select_provider", &select_provider_req_def,
                                   &select_provider_rep_def },
    [PROTO_OP_PERMIT] = { "permit", &permit_req_def, &permit_rep_def },
    [PROTO_OP_REPORT] = { "report", &report_req_def, &report_rep_def },
    [PROTO_OP_METRICS] = { "metrics", &metrics_req_def, &metrics_rep_def },
    [PROTO_OP_RELOAD] = { "reload", &reload_req_def, &reload_rep_def },
    [PROTO_OP_QUOTA_UNSET] = { "quota_unset", &quota_subject_def,
                               &quota_unset_rep_def },
    [PROTO_OP_QUOTA_LIST] = { "quota_list", &quota_list_req_def,
                              &quota_list_rep_def },
    [PROTO_OP_EXPLAIN] = { "explain", &explain_req_def, &explain_rep_def },
};

const char *
proto_op_name(enum proto_op op)
{
    return (unsigned)op < PROTO_OP__COUNT ? ops[op].name : "?";
}

const struct proto_msgdef *
proto_request_def(enum proto_op op)
{
    return (unsigned)op < PROTO_OP__COUNT ? ops[op].req : NULL;
}

const struct proto_msgdef *
proto_reply_def(enum proto_op op)
{
    return (unsigned)op < PROTO_OP__COUNT ? ops[op].rep : NULL;
}

/* ---- encoding ---------------------------------------------------------- */

static void
pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

static void pack_msg(msgpack_packer *pk, const struct proto_msgdef *def,
                     const void *msg, size_t extra);

/* Fields of msg that go on the wire: required ones and present ones. */
static size_t
count_fields(const struct proto_msgdef *def, const void *msg)
{
    uint32_t has = *(const uint32_t *)msg;
    size_t n = 0;

    for (size_t i = 0; i < def->nfields; i++)
        if ((def->fields[i].flags & (PF_REQUIRED | PF_NULLABLE)) ||
            (has >> i & 1u))
            n++;
    return n;
}

static void
pack_field(msgpack_packer *pk, const struct proto_field *f, const void *msg,
           bool present)
{
    const char *p = (const char *)msg + f->offset;

    pack_str(pk, f->name, f->name_len);
    if (!present) {
        msgpack_pack_nil(pk);
        return;
    }
    switch (f->type) {
    case PF_STR: {
        const struct proto_str *s = (const struct proto_str *)(const void *)p;
        pack_str(pk, s->ptr ? s->ptr : "", s->len);
        break;
    }
    case PF_UINT:
        msgpack_pack_uint64(pk, *(const uint64_t *)(const void *)p);
        break;
    case PF_INT:
        msgpack_pack_int64(pk, *(const int64_t *)(const void *)p);
        break;
    case PF_DOUBLE:
        msgpack_pack_double(pk, *(const double *)(const void *)p);
        break;
    case PF_BOOL:
        if (*(const bool *)(const void *)p)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case PF_STRARR: {
        const struct proto_strarr *a =
            (const struct proto_strarr *)(const void *)p;
        msgpack_pack_array(pk, a->n);
        for (uint32_t i = 0; i < a->n; i++)
            pack_str(pk, a->v[i].ptr ? a->v[i].ptr : "", a->v[i].len);
        break;
    }
    case PF_DBLARR: {
        const struct proto_dblarr *a =
            (const struct proto_dblarr *)(const void *)p;
        msgpack_pack_array(pk, a->n);
        for (uint32_t i = 0; i < a->n; i++)
            msgpack_pack_double(pk, a->v[i]);
        break;
    }
    case PF_STRMAP: {
        const struct proto_strmap *m =
            (const struct proto_strmap *)(const void *)p;
        msgpack_pack_map(pk, m->n);
        for (uint32_t i = 0; i < m->n; i++) {
            pack_str(pk, m->key[i].ptr ? m->key[i].ptr : "", m->key[i].len);
            pack_str(pk, m->value[i].ptr ? m->value[i].ptr : "",
                     m->value[i].len);
        }
        break;
    }
    case PF_OBJ:
        pack_msg(pk, f->sub, *(const void *const *)(const void *)p, 0);
        break;
    case PF_OBJARR: {
        const struct proto_objarr *a =
            (const struct proto_objarr *)(const void *)p;
        msgpack_pack_array(pk, a->n);
        for (uint32_t i = 0; i < a->n; i++)
            pack_msg(pk, f->sub, (const char *)a->v + (size_t)i * f->sub->size,
                     0);
        break;
    }
    }
}

/* Pack msg as a map, leaving room for `extra` entries packed by the caller. */
static void
pack_msg(msgpack_packer *pk, const struct proto_msgdef *def, const void *msg,
         size_t extra)
{
    uint32_t has = *(const uint32_t *)msg;

    msgpack_pack_map(pk, count_fields(def, msg) + extra);
    for (size_t i = 0; i < def->nfields; i++) {
        const struct proto_field *f = &def->fields[i];
        bool present = (has >> i & 1u) || (f->flags & PF_REQUIRED);
        if (present || (f->flags & PF_NULLABLE))
            pack_field(pk, f, msg, present);
    }
}

/* Reserve the length prefix; frame_end() fills it in. */
static size_t
frame_begin(msgpack_sbuffer *sb)
{
    size_t start = sb->size;
    static const char zero[4];

    msgpack_sbuffer_write(sb, zero, 4);
    return start;
}

static int
frame_end(msgpack_sbuffer *sb, size_t start)
{
    size_t n;

    if (sb->size < start + 4)
        return -1;      /* the write of the prefix failed */
    n = sb->size - start - 4;
    if (n > PROTO_MAX_FRAME) {
        sb->size = start;
        return -1;
    }
    sb->data[start] = (char)(n >> 24);
    sb->data[start + 1] = (char)(n >> 16);
    sb->data[start + 2] = (char)(n >> 8);
    sb->data[start + 3] = (char)n;
    return 0;
}

int
proto_encode_request(msgpack_sbuffer *sb, enum proto_op op, uint64_t id,
                     const void *msg)
{
    msgpack_packer pk;
    size_t start;
    static const struct proto_ping_req none;

    if ((unsigned)op >= PROTO_OP__COUNT ||
        (msg == NULL && ops[op].req->nfields > 0))
        return -1;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    start = frame_begin(sb);
    pack_msg(&pk, ops[op].req, msg ? msg : &none, 2);
    pack_str(&pk, "op", 2);
    pack_str(&pk, ops[op].name, strlen(ops[op].name));
    pack_str(&pk, "id", 2);
    msgpack_pack_uint64(&pk, id);
    return frame_end(sb, start);
}

int
proto_encode_reply(msgpack_sbuffer *sb, enum proto_op op, uint64_t id,
                   const void *msg)
{
    msgpack_packer pk;
    size_t start;
    static const struct proto_ping_rep none;

    if ((unsigned)op >= PROTO_OP__COUNT ||
        (msg == NULL && ops[op].rep->nfields > 0))
        return -1;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    start = frame_begin(sb);
    pack_msg(&pk, ops[op].rep, msg ? msg : &none, 2);
    pack_str(&pk, "id", 2);
    msgpack_pack_uint64(&pk, id);
    pack_str(&pk, "ok", 2);
    msgpack_pack_true(&pk);
    return frame_end(sb, start);
}

int
proto_encode_error(msgpack_sbuffer *sb, uint64_t id,
                   const struct proto_error *e)
{
    msgpack_packer pk;
    struct proto_err err = e->detail;
    const char *code = proto_errcode_name(e->code);
    size_t start;

    err.code.ptr = code;
    err.code.len = (uint32_t)strlen(code);
    err.msg.ptr = e->msg;
    err.msg.len = (uint32_t)strlen(e->msg);
    /* reset_at is only meaningful beside the other quota details. */
    if (!PROTO_HAS(&err, PROTO_ERR_SUBJECT))
        err.has = 0;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    start = frame_begin(sb);
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "id", 2);
    msgpack_pack_uint64(&pk, id);
    pack_str(&pk, "ok", 2);
    msgpack_pack_false(&pk);
    pack_str(&pk, "err", 3);
    if (err.has == 0) {
        msgpack_pack_map(&pk, 2);
        pack_field(&pk, &err_f[PROTO_ERR_CODE], &err, true);
        pack_field(&pk, &err_f[PROTO_ERR_MSG], &err, true);
    } else {
        pack_msg(&pk, &err_def, &err, 0);
    }
    return frame_end(sb, start);
}

/* ---- decoding ---------------------------------------------------------- */

static bool
key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, name, n) == 0;
}

/* key_is for a field, whose name's length is in the table. */
static bool
key_is_field(const msgpack_object *k, const struct proto_field *f)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == f->name_len &&
           memcmp(k->via.str.ptr, f->name, f->name_len) == 0;
}

static const char *
type_word(uint8_t type)
{
    switch (type) {
    case PF_STR: return "a string";
    case PF_UINT: return "a non-negative integer";
    case PF_INT: return "an integer";
    case PF_DOUBLE: return "a number";
    case PF_BOOL: return "a boolean";
    case PF_STRARR: return "an array of strings";
    case PF_OBJARR: return "an array of maps";
    case PF_OBJ: return "a map";
    case PF_DBLARR: return "an array of numbers";
    case PF_STRMAP: return "a map of strings to strings";
    }
    return "?";
}

static int decode_msg(const msgpack_object *o, const struct proto_msgdef *def,
                      void *msg, msgpack_zone *zone, struct proto_error *e);

/*
 * Room in zone for the elements of array v, elem bytes each; *n is their
 * count.  NULL for an empty array, and when out of memory (with *n > 0 and
 * e filled).
 */
static void *
array_room(const msgpack_object *v, size_t elem, msgpack_zone *zone,
           uint32_t *n, struct proto_error *e)
{
    void *room;

    *n = v->via.array.size;
    if (*n == 0)
        return NULL;
    if ((room = msgpack_zone_malloc(zone, elem * *n)) == NULL)
        proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    return room;
}

/* A msgpack number as a double: 0, or -1 when v is not a number. */
static int
number_of(const msgpack_object *v, double *d)
{
    switch (v->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *d = v->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *d = (double)v->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *d = (double)v->via.i64;
        return 0;
    default:
        return -1;
    }
}

/* The elements of array v, for field f, into a. */
static int
decode_strarr(const msgpack_object *v, const struct proto_field *f,
              struct proto_strarr *a, msgpack_zone *zone,
              struct proto_error *e)
{
    if ((a->v = array_room(v, sizeof(*a->v), zone, &a->n, e)) == NULL &&
        a->n > 0)
        return -1;
    for (uint32_t i = 0; i < a->n; i++) {
        const msgpack_object *s = &v->via.array.ptr[i];
        if (s->type != MSGPACK_OBJECT_STR)
            return proto_error_set(e, PROTO_E_BAD_REQUEST,
                "field '%s': expected an array of strings", f->name);
        a->v[i].ptr = s->via.str.ptr;
        a->v[i].len = s->via.str.size;
    }
    return 0;
}

static int
decode_dblarr(const msgpack_object *v, const struct proto_field *f,
              struct proto_dblarr *a, msgpack_zone *zone,
              struct proto_error *e)
{
    if ((a->v = array_room(v, sizeof(*a->v), zone, &a->n, e)) == NULL &&
        a->n > 0)
        return -1;
    for (uint32_t i = 0; i < a->n; i++)
        if (number_of(&v->via.array.ptr[i], &a->v[i]) < 0)
            return proto_error_set(e, PROTO_E_BAD_REQUEST,
                "field '%s': expected an array of numbers", f->name);
    return 0;
}

/* The pairs of map v, for field f, into m: every key and value a string. */
static int
decode_strmap(const msgpack_object *v, const struct proto_field *f,
              struct proto_strmap *m, msgpack_zone *zone,
              struct proto_error *e)
{
    m->n = v->via.map.size;
    m->key = m->value = NULL;
    if (m->n == 0)
        return 0;
    m->key = msgpack_zone_malloc(zone, sizeof(*m->key) * m->n);
    m->value = msgpack_zone_malloc(zone, sizeof(*m->value) * m->n);
    if (m->key == NULL || m->value == NULL)
        return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < m->n; i++) {
        const msgpack_object_kv *kv = &v->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR ||
            kv->val.type != MSGPACK_OBJECT_STR)
            return proto_error_set(e, PROTO_E_BAD_REQUEST,
                "field '%s': expected a map of strings to strings", f->name);
        m->key[i].ptr = kv->key.via.str.ptr;
        m->key[i].len = kv->key.via.str.size;
        m->value[i].ptr = kv->val.via.str.ptr;
        m->value[i].len = kv->val.via.str.size;
    }
    return 0;
}

/* Each element of array v a map decoded by f's element table into a. */
static int
decode_objarr(const msgpack_object *v, const struct proto_field *f,
              struct proto_objarr *a, msgpack_zone *zone,
              struct proto_error *e)
{
    const struct proto_msgdef *sub = f->sub;

    if ((a->v = array_room(v, sub->size, zone, &a->n, e)) == NULL &&
        a->n > 0)
        return -1;
    if (a->n > 0)
        memset(a->v, 0, (size_t)sub->size * a->n);
    for (uint32_t i = 0; i < a->n; i++)
        if (decode_msg(&v->via.array.ptr[i], sub,
                       (char *)a->v + (size_t)i * sub->size, zone, e) < 0)
            return -1;
    return 0;
}

/*
 * Value v into field f of msg.  Returns 0, or -1 with e filled: v is not
 * of f's type, a number is not finite, an element is not of the array's
 * type, or the zone is out of memory.
 */
static int
decode_field(const msgpack_object *v, const struct proto_field *f, void *msg,
             msgpack_zone *zone, struct proto_error *e)
{
    void *p = (char *)msg + f->offset;
    bool array = v->type == MSGPACK_OBJECT_ARRAY;
    double d;

    switch (f->type) {
    case PF_STR:
        if (v->type != MSGPACK_OBJECT_STR)
            break;
        ((struct proto_str *)p)->ptr = v->via.str.ptr;
        ((struct proto_str *)p)->len = v->via.str.size;
        return 0;
    case PF_UINT:
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            break;
        *(uint64_t *)p = v->via.u64;
        return 0;
    case PF_INT:
        if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
            v->via.u64 <= INT64_MAX)
            *(int64_t *)p = (int64_t)v->via.u64;
        else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            *(int64_t *)p = v->via.i64;
        else
            break;
        return 0;
    case PF_DOUBLE:
        if (number_of(v, &d) < 0)
            break;
        if (!isfinite(d))
            return proto_error_set(e, PROTO_E_BAD_REQUEST,
                                   "field '%s': expected a finite number",
                                   f->name);
        *(double *)p = d;
        return 0;
    case PF_BOOL:
        if (v->type != MSGPACK_OBJECT_BOOLEAN)
            break;
        *(bool *)p = v->via.boolean;
        return 0;
    case PF_STRARR:
        if (!array)
            break;
        return decode_strarr(v, f, p, zone, e);
    case PF_DBLARR:
        if (!array)
            break;
        return decode_dblarr(v, f, p, zone, e);
    case PF_OBJARR:
        if (!array)
            break;
        return decode_objarr(v, f, p, zone, e);
    case PF_STRMAP:
        if (v->type != MSGPACK_OBJECT_MAP)
            break;
        return decode_strmap(v, f, p, zone, e);
    case PF_OBJ: {
        void *sub;
        if (v->type != MSGPACK_OBJECT_MAP)
            break;
        if ((sub = msgpack_zone_malloc(zone, f->sub->size)) == NULL)
            return proto_error_set(e, PROTO_E_INTERNAL, "out of memory");
        memset(sub, 0, f->sub->size);
        *(void **)p = sub;
        return decode_msg(v, f->sub, sub, zone, e);
    }
    }
    return proto_error_set(e, PROTO_E_BAD_REQUEST, "field '%s': expected %s",
                           f->name, type_word(f->type));
}

/*
 * Fill msg from map o by def.  Unknown keys are ignored (a newer peer may
 * send more); a required field that is missing is an error.
 */
static int
decode_msg(const msgpack_object *o, const struct proto_msgdef *def, void *msg,
           msgpack_zone *zone, struct proto_error *e)
{
    uint32_t *has = msg;

    if (o->type != MSGPACK_OBJECT_MAP)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "%s: expected a map", def->name);
    *has = 0;
    for (uint32_t k = 0; k < o->via.map.size; k++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[k];
        for (uint8_t i = 0; i < def->nfields; i++) {
            const struct proto_field *f = &def->fields[i];
            if (!key_is_field(&kv->key, f))
                continue;
            if (kv->val.type == MSGPACK_OBJECT_NIL &&
                (f->flags & PF_NULLABLE))
                break;
            if (decode_field(&kv->val, f, msg, zone, e) < 0)
                return -1;
            *has |= 1u << i;
            break;
        }
    }
    for (uint8_t i = 0; i < def->nfields; i++)
        if ((def->fields[i].flags & PF_REQUIRED) && !(*has >> i & 1u))
            return proto_error_set(e, PROTO_E_BAD_REQUEST,
                                   "missing field '%s'", def->fields[i].name);
    return 0;
}

/*
 * Walk the msgpack tokens of a frame without building anything and check
 * that the arrays and maps declare no more elements than the frame has
 * bytes.  msgpack-c reserves room for every declared element as soon as it
 * reads a header, so "dd ff ff ff ff" alone would make it ask for 100 GiB
 * (msgpack/msgpack-c#1013); every element takes at least one byte, so a
 * valid frame always passes.  Returns 0, or -1 for a frame to refuse.
 */
static int
skim(const unsigned char *p, size_t len)
{
    size_t i = 0, declared = 0;

    while (i < len) {
        unsigned char b = p[i++];
        size_t payload = 0, count = 0, hdr = 0;

        if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3 && b != 0xc1))
            continue;                           /* fixint, nil, bool */
        if (b >= 0x80 && b <= 0x8f)
            count = 2u * (b & 0x0f);            /* fixmap */
        else if (b >= 0x90 && b <= 0x9f)
            count = b & 0x0f;                   /* fixarray */
        else if (b >= 0xa0 && b <= 0xbf)
            payload = b & 0x1f;                 /* fixstr */
        else
            switch (b) {
            case 0xc4: case 0xd9: hdr = 1; break;           /* bin8, str8 */
            case 0xc5: case 0xda: hdr = 2; break;
            case 0xc6: case 0xdb: hdr = 4; break;
            case 0xc7: hdr = 1; payload = 1; break;         /* ext8 */
            case 0xc8: hdr = 2; payload = 1; break;
            case 0xc9: hdr = 4; payload = 1; break;
            case 0xca: payload = 4; break;                  /* float32 */
            case 0xcb: payload = 8; break;
            case 0xcc: case 0xd0: payload = 1; break;       /* (u)int8 */
            case 0xcd: case 0xd1: payload = 2; break;
            case 0xce: case 0xd2: payload = 4; break;
            case 0xcf: case 0xd3: payload = 8; break;
            case 0xd4: payload = 2; break;                  /* fixext1 */
            case 0xd5: payload = 3; break;
            case 0xd6: payload = 5; break;
            case 0xd7: payload = 9; break;
            case 0xd8: payload = 17; break;
            case 0xdc: case 0xde: hdr = 2; break;           /* array16, map16 */
            case 0xdd: case 0xdf: hdr = 4; break;
            default: return -1;                             /* 0xc1 */
            }
        if (hdr > 0) {
            size_t n = 0;
            if (len - i < hdr)
                return -1;
            for (size_t k = 0; k < hdr; k++)
                n = n << 8 | p[i + k];
            i += hdr;
            if (b == 0xdc || b == 0xdd)
                count = n;
            else if (b == 0xde || b == 0xdf)
                count = 2 * n;
            else
                payload += n;
        }
        if (len - i < payload)
            return -1;
        i += payload;
        declared += count;
        if (declared > len)
            return -1;
    }
    return 0;
}

/* Unpack exactly one msgpack object filling the whole frame. */
static int
unpack_frame(const unsigned char *frame, uint32_t len, msgpack_zone *zone,
             msgpack_object *obj, struct proto_error *e)
{
    size_t off = 0;

    if (skim(frame, len) < 0)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "frame is not valid msgpack (or nested too "
                               "deeply)");
    switch (msgpack_unpack((const char *)frame, len, &off, zone, obj)) {
    case MSGPACK_UNPACK_SUCCESS:
        return 0;
    case MSGPACK_UNPACK_EXTRA_BYTES:
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
            "frame holds %zu bytes after its msgpack value", len - off);
    case MSGPACK_UNPACK_CONTINUE:
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "frame ends inside a msgpack value");
    default:    /* msgpack-c also says NOMEM for nesting past its stack */
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "frame is not valid msgpack (or nested too "
                               "deeply)");
    }
}

enum proto_decode_result
proto_decode_request(const unsigned char *frame, uint32_t len,
                     msgpack_zone *zone, struct proto_req *req,
                     struct proto_error *e)
{
    msgpack_object obj;
    const msgpack_object *opname = NULL;
    bool have_id = false;

    memset(req, 0, sizeof(*req));
    if (unpack_frame(frame, len, zone, &obj, e) < 0)
        return PROTO_DECODE_FATAL;
    if (obj.type != MSGPACK_OBJECT_MAP) {
        proto_error_set(e, PROTO_E_BAD_REQUEST,
                        "a request must be a msgpack map");
        return PROTO_DECODE_BAD;
    }
    for (uint32_t k = 0; k < obj.via.map.size; k++) {
        const msgpack_object_kv *kv = &obj.via.map.ptr[k];
        if (key_is(&kv->key, "id")) {
            if (kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                proto_error_set(e, PROTO_E_BAD_REQUEST,
                                "field 'id': expected a non-negative integer");
                return PROTO_DECODE_BAD;
            }
            req->id = kv->val.via.u64;
            have_id = true;
        } else if (key_is(&kv->key, "op")) {
            opname = &kv->val;
        }
    }
    if (opname == NULL || opname->type != MSGPACK_OBJECT_STR) {
        proto_error_set(e, PROTO_E_BAD_REQUEST, opname == NULL ?
                        "missing field 'op'" : "field 'op': expected a string");
        return PROTO_DECODE_BAD;
    }
    if (!have_id) {
        proto_error_set(e, PROTO_E_BAD_REQUEST, "missing field 'id'");
        return PROTO_DECODE_BAD;
    }
    for (int i = 0; i < PROTO_OP__COUNT; i++) {
        /* The first byte before key_is's strlen: most names differ. */
        if (opname->via.str.size == 0 ||
            opname->via.str.ptr[0] != ops[i].name[0] ||
            !key_is(opname, ops[i].name))
            continue;
        req->op = (enum proto_op)i;
        if (decode_msg(&obj, ops[i].req, &req->u, zone, e) < 0)
            return PROTO_DECODE_BAD;
        return PROTO_DECODE_OK;
    }
    proto_error_set(e, PROTO_E_UNKNOWN_OP, "unknown op '%.*s'",
                    (int)(opname->via.str.size > 64 ? 64 :
                          opname->via.str.size), opname->via.str.ptr);
    return PROTO_DECODE_BAD;
}

int
proto_reply_id(const unsigned char *frame, uint32_t len, uint64_t *id)
{
    /* A reply begins with its map header; scan the top-level keys only. */
    msgpack_zone zone;
    msgpack_object obj;
    struct proto_error e;
    int rc = -1;

    if (!msgpack_zone_init(&zone, 1024))
        return -1;
    if (unpack_frame(frame, len, &zone, &obj, &e) == 0 &&
        obj.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t k = 0; k < obj.via.map.size; k++) {
            const msgpack_object_kv *kv = &obj.via.map.ptr[k];
            if (key_is(&kv->key, "id") &&
                kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                *id = kv->val.via.u64;
                rc = 0;
            }
        }
    }
    msgpack_zone_destroy(&zone);
    return rc;
}

int
proto_decode_reply(const unsigned char *frame, uint32_t len, enum proto_op op,
                   msgpack_zone *zone, struct proto_rep *rep,
                   struct proto_error *e)
{
    msgpack_object obj;
    const msgpack_object *err = NULL;
    bool have_ok = false;

    memset(rep, 0, sizeof(*rep));
    if ((unsigned)op >= PROTO_OP__COUNT)
        return proto_error_set(e, PROTO_E_INTERNAL, "unknown op");
    if (unpack_frame(frame, len, zone, &obj, e) < 0)
        return -1;
    if (obj.type != MSGPACK_OBJECT_MAP)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "a reply must be a msgpack map");
    for (uint32_t k = 0; k < obj.via.map.size; k++) {
        const msgpack_object_kv *kv = &obj.via.map.ptr[k];
        if (key_is(&kv->key, "id") &&
            kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            rep->id = kv->val.via.u64;
        } else if (key_is(&kv->key, "ok") &&
                   kv->val.type == MSGPACK_OBJECT_BOOLEAN) {
            rep->ok = kv->val.via.boolean;
            have_ok = true;
        } else if (key_is(&kv->key, "err")) {
            err = &kv->val;
        }
    }
    if (!have_ok)
        return proto_error_set(e, PROTO_E_BAD_REQUEST,
                               "reply without a boolean 'ok'");
    if (!rep->ok) {
        if (err == NULL)
            return proto_error_set(e, PROTO_E_BAD_REQUEST,
                                   "failed reply without 'err'");
        return decode_msg(err, &err_def, &rep->err, zone, e);
    }
    return decode_msg(&obj, ops[op].rep, &rep->u, zone, e);
}

/* ---- socket path ------------------------------------------------------- */

int
proto_default_socket_path(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;

    if (xdg != NULL && xdg[0] == '/')
        n = snprintf(buf, len, "%s/llmguard/llmguardd.sock", xdg);
    else
        n = snprintf(buf, len, "/tmp/llmguard-%u/llmguardd.sock",
                     (unsigned)getuid());
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
