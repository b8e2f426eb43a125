/* util — fail-fast helpers for start-up and CLI code, a status type for request paths,
 * logging to stderr, and a monotonic clock.
 *
 * Two error tiers (STYLE.md): code that runs at start-up or in a CLI tool may call the
 * *_check helpers and ng_die, which print file:line and exit; code reachable from outside
 * input on a long-running path returns NG_ERR and fills an ng_error instead. */
#ifndef NG_UTIL_H
#define NG_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A byte string that is not NUL-terminated (e.g. pointing into a mapped file). */
typedef struct {
    const char *s;
    size_t n;
} ng_str;

/* A message for the caller: "what and where". Filled by ng_error_set; empty when ok. */
typedef struct {
    char msg[512];
} ng_error;

enum { NG_OK = 0, NG_ERR = -1 };

/* Formats msg into err (if err is not NULL) and returns NG_ERR, so that callers can write
 * `return ng_error_set(err, "%s: bad magic", path);`. */
int ng_error_set(ng_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "netgpt: error: MSG" and exits with status 1. */
void ng_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

void *ng_malloc_check(size_t size, const char *file, int line);
void *ng_calloc_check(size_t n, size_t size, const char *file, int line);
void *ng_realloc_check(void *p, size_t size, const char *file, int line);
#define xmalloc(n) ng_malloc_check((n), __FILE__, __LINE__)
#define xcalloc(n, s) ng_calloc_check((n), (s), __FILE__, __LINE__)
#define xrealloc(p, n) ng_realloc_check((p), (n), __FILE__, __LINE__)
char *xstrdup(const char *s);

/* Allocates size bytes aligned to 64 bytes (cache line, one AVX-512 vector); free with free().
 * From 4 MiB, aligned to 2 MiB and advised to be huge pages (see util.c). */
void *ng_aligned_alloc(size_t size);
/* Allocates size bytes in whole 2 MiB pages, advised to be transparent huge pages (where they
 * are off, 4 KiB pages as usual); free with free(). */
void *ng_huge_alloc(size_t size);

/* A growing NUL-terminated string: s is malloc'd (hand it over or free it). A zeroed ng_buf is
 * valid and empty (s NULL until the first append); ng_buf_init allocates at once. */
typedef struct {
    char *s;
    size_t n, cap;
} ng_buf;
void ng_buf_init(ng_buf *b);
void ng_buf_add(ng_buf *b, const char *s, size_t n); /* n bytes, NULs allowed */
void ng_buf_puts(ng_buf *b, const char *s);
void ng_buf_printf(ng_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logging to stderr. ng_verbose: 0 quiet, 1 normal (default), 2 debug. */
extern int ng_verbose;
void ng_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ng_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Seconds on a monotonic clock. */
double ng_time(void);

/* Sorts x[0..n) ascending (timings, latencies). */
void ng_sort_doubles(double *x, size_t n);

/* Reads a whole file into a NUL-terminated heap buffer; *len gets its size. NULL + err on failure. */
char *ng_read_file(const char *path, size_t *len, ng_error *err);

/* Peak resident set size of this process in bytes (from getrusage). */
size_t ng_peak_rss(void);

#endif
