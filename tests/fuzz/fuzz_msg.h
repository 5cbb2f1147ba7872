/*
 * fuzz_msg.h - helpers shared by the codec fuzzers (tests/fuzz).
 */
#ifndef LLMGUARD_FUZZ_MSG_H
#define LLMGUARD_FUZZ_MSG_H

#include <stdbool.h>

#include "proto.h"

/*
 * Whether two decoded messages of def hold the same fields with the same
 * values: the same "has" bits, and for each present field equal strings,
 * numbers (bit for bit), booleans and arrays, sub-messages compared by
 * their own table.  Absent fields are not looked at.
 */
bool fuzz_msg_equal(const struct proto_msgdef *def, const void *a,
                    const void *b);

/* The 4-byte big-endian length prefix at p. */
uint32_t fuzz_be32(const unsigned char *p);

/* Abort with a message when cond is false (assert() is compiled out by
 * -DNDEBUG; a fuzzer must never lose its checks). */
#define FUZZ_CHECK(cond) \
    ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond))

void fuzz_fail(const char *file, int line, const char *what)
    __attribute__((noreturn));

#endif
