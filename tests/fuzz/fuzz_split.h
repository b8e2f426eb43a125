/* fuzz_split — the two strings of a harness's input: the bytes before the first 0xff and, when
 * there is one, those after it (else a copy of dflt). Both malloc'd and NUL-terminated. */
#ifndef NG_FUZZ_SPLIT_H
#define NG_FUZZ_SPLIT_H

#include <stdlib.h>
#include <string.h>

static inline void fuzz_split(const unsigned char *data, size_t size, const char *dflt, char **first, char **second) {
    const unsigned char *cut = memchr(data, 0xff, size);
    size_t n1 = cut ? (size_t)(cut - data) : size;
    *first = malloc(n1 + 1);
    memcpy(*first, data, n1);
    (*first)[n1] = 0;
    if (cut) {
        size_t n2 = size - n1 - 1;
        *second = malloc(n2 + 1);
        memcpy(*second, cut + 1, n2);
        (*second)[n2] = 0;
    } else {
        *second = strdup(dflt);
    }
}

#endif
