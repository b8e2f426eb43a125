#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

int ng_verbose = 1;

int ng_error_set(ng_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return NG_ERR;
}

void ng_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("netgpt: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *ng_malloc_check(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (!p) ng_die("%s:%d: out of memory allocating %zu bytes", file, line, size);
    return p;
}

void *ng_calloc_check(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ng_die("%s:%d: out of memory allocating %zu x %zu bytes", file, line, n, size);
    return p;
}

void *ng_realloc_check(void *p, size_t size, const char *file, int line) {
    void *q = realloc(p, size ? size : 1);
    if (!q) ng_die("%s:%d: out of memory reallocating to %zu bytes", file, line, size);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

/* Blocks of at least HUGE_MIN bytes (weights, KV caches, activations, training state) are
 * aligned to 2 MiB and advised to use transparent huge pages: streaming weights through 4 KiB
 * pages costs a TLB miss every 4 KiB (on one Zen 5 machine a 70 MB q8_0 GEMV from memory took
 * 0.84 ms on 4 KiB pages, 0.73 on huge pages; whole decode steps vary more than that from run
 * to run there). Where huge pages are off, the advice is ignored. */
#define HUGE_MIN ((size_t)4 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)

void *ng_huge_alloc(size_t size) {
    void *p = NULL;
    size = size ? (size + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1) : HUGE_ALIGN;
    if (posix_memalign(&p, HUGE_ALIGN, size) != 0)
        ng_die("out of memory allocating %zu bytes of huge pages", size);
#ifdef MADV_HUGEPAGE
    madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

void *ng_aligned_alloc(size_t size) {
    void *p = NULL;
    size = (size + 63) & ~(size_t)63;
    size_t align = size >= HUGE_MIN ? HUGE_ALIGN : 64;
    if (posix_memalign(&p, align, size ? size : 64) != 0)
        ng_die("out of memory allocating %zu aligned bytes", size);
#ifdef MADV_HUGEPAGE
    if (align == HUGE_ALIGN) madvise(p, (size + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1), MADV_HUGEPAGE);
#endif
    return p;
}

void ng_buf_init(ng_buf *b) {
    b->cap = 256;
    b->s = xmalloc(b->cap);
    b->s[0] = 0;
    b->n = 0;
}

void ng_buf_add(ng_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) b->s = xrealloc(b->s, b->cap = 2 * (b->n + n + 1));
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void ng_buf_puts(ng_buf *b, const char *s) { ng_buf_add(b, s, strlen(s)); }

void ng_buf_printf(ng_buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        b->s = xrealloc(b->s, b->cap = 2 * b->cap + (size_t)(k > 0 ? k : 0));
    }
}

void ng_log(const char *fmt, ...) {
    if (ng_verbose < 1) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

void ng_debug(const char *fmt, ...) {
    if (ng_verbose < 2) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

double ng_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void ng_sort_doubles(double *x, size_t n) { qsort(x, n, sizeof *x, cmp_double); }

char *ng_read_file(const char *path, size_t *len, ng_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ng_error_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n + 1 < cap) {
            if (ferror(f)) {
                ng_error_set(err, "%s: read error: %s", path, strerror(errno));
                fclose(f);
                free(buf);
                return NULL;
            }
            break;
        }
        cap *= 2;
        buf = xrealloc(buf, cap);
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

size_t ng_peak_rss(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}
