/* fmt_common — helpers shared by the model-file readers (gguf.c, safetensors.c): mapping a
 * file read-only, and small sorted indexes.
 *
 * Readers must reject duplicate names and overlapping data ranges, and callers look tensors up
 * by name many times; sorting once makes all three O(n log n) even for files with tens of
 * thousands of tensors. Header-only (static functions) so the readers stay self-contained.
 * The arrays are owned by the caller; names are borrowed. */
#ifndef NG_FMT_COMMON_H
#define NG_FMT_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/util.h"

typedef struct {
    const char *name;
    int idx; /* position of the named item in the caller's array */
} fmt_name;

typedef struct {
    uint64_t begin, end; /* byte range [begin, end) */
    int idx;
} fmt_span;

static inline int fmt_name_cmp(const void *a, const void *b) {
    const fmt_name *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sorts names; returns the position i of the first duplicate (names[i-1] has the same name,
 * and the lower idx), or -1 when all names are distinct. */
static inline int fmt_names_sort(fmt_name *names, int n) {
    if (n > 1) qsort(names, (size_t)n, sizeof *names, fmt_name_cmp);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1].name, names[i].name) == 0) return i;
    return -1;
}

/* idx of name in a sorted, duplicate-free index, or -1. */
static inline int fmt_names_find(const fmt_name *names, int n, const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(names[mid].name, name);
        if (c == 0) return names[mid].idx;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static inline int fmt_span_cmp(const void *a, const void *b) {
    const fmt_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sorts spans by start; returns the position i of the first span that overlaps spans[i-1], or
 * -1. Empty spans overlap nothing, so callers may leave them in. */
static inline int fmt_spans_sort(fmt_span *spans, int n) {
    if (n > 1) qsort(spans, (size_t)n, sizeof *spans, fmt_span_cmp);
    uint64_t reach = 0; /* furthest end seen so far, so containment is caught too */
    int reach_i = -1;
    for (int i = 0; i < n; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (reach_i >= 0 && spans[i].begin < reach) {
            /* report against the span that reaches furthest: put it just before i */
            fmt_span t = spans[reach_i];
            spans[reach_i] = spans[i - 1];
            spans[i - 1] = t;
            return i;
        }
        if (spans[i].end > reach) {
            reach = spans[i].end;
            reach_i = i;
        }
    }
    return -1;
}

/* Copies s (n bytes) for an error message: at most 64 characters, non-printables as '?'. */
static inline const char *fmt_shown(const char *s, size_t n, char out[80]) {
    size_t k = n < 64 ? n : 64, j = 0;
    for (size_t i = 0; i < k; i++) out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (n > k) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = 0;
    return out;
}

/* Maps path read-only (MAP_PRIVATE: nothing we do can reach the file). An empty file gives
 * *base = NULL, *size = 0, so that parsers report it as truncated. Unmap with fmt_unmap. */
static inline int fmt_map(const char *path, const uint8_t **base, size_t *size, ng_error *err) {
    *base = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ng_error_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ng_error_set(err, "%s: cannot stat: %s", path, strerror(errno));
        goto err;
    }
    if (!S_ISREG(st.st_mode)) {
        ng_error_set(err, "%s: not a regular file", path);
        goto err;
    }
    if (st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            ng_error_set(err, "%s: cannot map %lld bytes: %s", path, (long long)st.st_size, strerror(errno));
            goto err;
        }
        *base = m;
        *size = (size_t)st.st_size;
    }
    close(fd);
    return NG_OK;
err:
    close(fd);
    return NG_ERR;
}

static inline void fmt_unmap(const uint8_t *base, size_t size) {
    if (base && size) munmap((void *)base, size);
}

/* Alignment a tensor's data needs so that kernels may read it through typed pointers: the
 * element size for plain types; for block-quantized types the widest scalar that starts a
 * block (an f16 or f32 scale), which divides the block size. */
static inline size_t fmt_type_align(ng_type t) {
    size_t s = ng_type_size(t);
    if (ng_type_block(t) == 1) return s ? s : 1;
    return s % 4 == 0 ? 4 : 2;
}

/* Writers create "PATH.tmp.XXXXXX" beside path and rename it into place only once every byte
 * is written and flushed, so a failed or interrupted write never leaves a half-written model
 * under the real name. fmt_tmp_open returns the stream and *tmp (owned by the caller). */
static inline FILE *fmt_tmp_open(const char *path, char **tmp, ng_error *err) {
    size_t n = strlen(path) + 16;
    *tmp = xmalloc(n);
    snprintf(*tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(*tmp);
    if (fd < 0) {
        ng_error_set(err, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        return NULL;
    }
    fchmod(fd, 0644); /* mkstemp's 0600 would surprise whoever shares the model */
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        ng_error_set(err, "%s: %s", *tmp, strerror(errno));
        close(fd);
        unlink(*tmp);
    }
    return f;
}

static inline void fmt_tmp_abort(FILE *f, const char *tmp) {
    fclose(f);
    unlink(tmp);
}

/* Flushes, closes and renames; on any write error removes the temporary file. Closes f. */
static inline int fmt_tmp_commit(FILE *f, const char *tmp, const char *path, ng_error *err) {
    int bad = ferror(f) || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        return ng_error_set(err, "%s: write failed: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return ng_error_set(err, "%s: cannot rename the temporary file into place: %s", path, strerror(e));
    }
    return NG_OK;
}

#endif
