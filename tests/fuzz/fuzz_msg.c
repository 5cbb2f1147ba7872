/* fuzz_msg.c - deep comparison of decoded messages, for the round trips. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_msg.h"

void
fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    abort();
}

uint32_t
fuzz_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static bool
str_equal(const struct proto_str *a, const struct proto_str *b)
{
    return a->len == b->len &&
           (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

/* One present field of type f->type at the same offset in a and b. */
static bool
field_equal(const struct proto_field *f, const char *a, const char *b)
{
    switch (f->type) {
    case PF_STR:
        return str_equal((const void *)a, (const void *)b);
    case PF_UINT:
    case PF_INT:
        return memcmp(a, b, sizeof(uint64_t)) == 0;
    case PF_DOUBLE:
        /* Bit for bit: the codec must not round, and -0.0 stays -0.0. */
        return memcmp(a, b, sizeof(double)) == 0;
    case PF_BOOL:
        return *(const bool *)a == *(const bool *)b;
    case PF_STRARR: {
        const struct proto_strarr *x = (const void *)a, *y = (const void *)b;
        if (x->n != y->n)
            return false;
        for (uint32_t i = 0; i < x->n; i++)
            if (!str_equal(&x->v[i], &y->v[i]))
                return false;
        return true;
    }
    case PF_DBLARR: {
        const struct proto_dblarr *x = (const void *)a, *y = (const void *)b;
        return x->n == y->n &&
               (x->n == 0 ||
                memcmp(x->v, y->v, sizeof(double) * x->n) == 0);
    }
    case PF_STRMAP: {
        const struct proto_strmap *x = (const void *)a, *y = (const void *)b;
        if (x->n != y->n)
            return false;
        for (uint32_t i = 0; i < x->n; i++)
            if (!str_equal(&x->key[i], &y->key[i]) ||
                !str_equal(&x->value[i], &y->value[i]))
                return false;
        return true;
    }
    case PF_OBJARR: {
        const struct proto_objarr *x = (const void *)a, *y = (const void *)b;
        if (x->n != y->n)
            return false;
        for (uint32_t i = 0; i < x->n; i++) {
            size_t off = (size_t)i * f->sub->size;
            if (!fuzz_msg_equal(f->sub, (const char *)x->v + off,
                                (const char *)y->v + off))
                return false;
        }
        return true;
    }
    }
    return false;
}

bool
fuzz_msg_equal(const struct proto_msgdef *def, const void *a, const void *b)
{
    uint32_t has = *(const uint32_t *)a;

    if (has != *(const uint32_t *)b)
        return false;
    for (uint8_t i = 0; i < def->nfields; i++) {
        const struct proto_field *f = &def->fields[i];
        if ((has >> i & 1u) &&
            !field_equal(f, (const char *)a + f->offset,
                         (const char *)b + f->offset))
            return false;
    }
    return true;
}
