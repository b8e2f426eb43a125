/* files — scratch files for the tests of the file formats (test_gguf, test_safetensors): a path
 * under build/tmp, whole-file writes and reads, and copies of valid files for the fuzzers. */
#ifndef NG_TEST_FILES_H
#define NG_TEST_FILES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* build/tmp/PREFIX_PID_TAG.EXT (ext may be ""); eight paths live at once. */
static inline char *test_tmp_path(const char *prefix, const char *tag, const char *ext) {
    static char buf[8][256];
    static int k;
    char *p = buf[k++ % 8];
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    snprintf(p, 256, "build/tmp/%s_%d_%s%s", prefix, (int)getpid(), tag, ext);
    return p;
}

static inline int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static inline uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

/* With NG_TEST_KEEP=DIR set, valid files the tests write are also copied there (seeds for the
 * fuzzers in tests/fuzz/). */
static inline void keep_copy(const char *path) {
    const char *dir = getenv("NG_TEST_KEEP");
    if (!dir) return;
    size_t n = 0;
    uint8_t *p = read_bytes(path, &n);
    const char *base = strrchr(path, '/');
    char out[512];
    snprintf(out, sizeof out, "%s/%s", dir, base ? base + 1 : path);
    if (p) write_bytes(out, p, n);
    free(p);
}

#endif
