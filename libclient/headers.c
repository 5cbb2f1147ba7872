/*
 * headers.c - the provider's rate-limit headers of the current attempt,
 * passed on by the caller's call function with llmguard_provider_header()
 * and sent with the attempt's report (libllmguard(3)).
 *
 * Kept per thread, like the Retry-After: a call function runs on the
 * thread that called llmguard_execute_with_failover, so nothing is shared
 * and nothing is locked.  Only the names the daemon reads are kept
 * (ratehdr.h), lower-cased, at most HEADERS_MAX of them; a name given
 * twice keeps its last value.
 */
#include <ctype.h>
#include <string.h>

#include "headers_internal.h"
#include "llmguard.h"
#include "ratehdr.h"

#define NAME_MAX_LEN 64         /* the longest known name is 43 bytes */
#define VALUE_MAX_LEN 256       /* longer: cut, still too long to read */

static __thread struct {
    char name[HEADERS_MAX][NAME_MAX_LEN];
    char value[HEADERS_MAX][VALUE_MAX_LEN];
    struct proto_str key_str[HEADERS_MAX], value_str[HEADERS_MAX];
    unsigned n;
} hdrs;

void
llmguard_provider_header(const char *name, const char *value)
{
    size_t len, vlen;
    unsigned i;
    char lower[NAME_MAX_LEN];

    if (name == NULL || value == NULL || (len = strlen(name)) == 0 ||
        len >= NAME_MAX_LEN || !ratehdr_known(name, len))
        return;
    for (size_t j = 0; j <= len; j++)
        lower[j] = (char)tolower((unsigned char)name[j]);
    for (i = 0; i < hdrs.n; i++)
        if (strcmp(hdrs.name[i], lower) == 0)
            break;
    if (i == HEADERS_MAX)
        return;                 /* full: the first ones are kept */
    if (i == hdrs.n)
        memcpy(hdrs.name[hdrs.n++], lower, len + 1);
    vlen = strlen(value);
    if (vlen >= VALUE_MAX_LEN)
        vlen = VALUE_MAX_LEN - 1;
    memcpy(hdrs.value[i], value, vlen);
    hdrs.value[i][vlen] = '\0';
}

void
headers_clear(void)
{
    hdrs.n = 0;
}

void
headers_fill(struct proto_strmap *m)
{
    for (unsigned i = 0; i < hdrs.n; i++) {
        hdrs.key_str[i].ptr = hdrs.name[i];
        hdrs.key_str[i].len = (uint32_t)strlen(hdrs.name[i]);
        hdrs.value_str[i].ptr = hdrs.value[i];
        hdrs.value_str[i].len = (uint32_t)strlen(hdrs.value[i]);
    }
    m->key = hdrs.key_str;
    m->value = hdrs.value_str;
    m->n = hdrs.n;
}
