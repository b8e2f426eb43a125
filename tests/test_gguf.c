/* test_gguf — GGUF reader and writer: full round trip of every value type and several tensor
 * types, a byte-exact layout check against hand-computed bytes, every truncation of a small
 * file, one corrupted file per validation rule (the message must name the file and the field),
 * custom alignment, and writer misuse. Temporary files go to build/tmp/. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/gguf.h"
#include "files.h"
#include "test.h"

/* ---------------------------------------------------------------- helpers */

static char *tmp_path(const char *tag) { return test_tmp_path("test_gguf", tag, ".gguf"); }

/* Byte builder for hand-made files. */
typedef struct {
    uint8_t p[4096];
    size_t n;
} bb;

static void bb_put(bb *b, const void *s, size_t n) {
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void bb_u32(bb *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bb *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(bb *b, const char *s) {
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}
static void bb_pad(bb *b, size_t a) {
    while (b->n % a) b->p[b->n++] = 0;
}
static void bb_header(bb *b, uint64_t n_t, uint64_t n_kv) {
    bb_put(b, "GGUF", 4);
    bb_u32(b, 3);
    bb_u64(b, n_t);
    bb_u64(b, n_kv);
}
static void bb_kv_u32(bb *b, const char *k, uint32_t v) {
    bb_str(b, k);
    bb_u32(b, GGUF_U32);
    bb_u32(b, v);
}
/* Field positions in the baseline file, for corruption tests. */
typedef struct {
    size_t version, n_t, n_kv, name_len, name_type, align_val, arr_type, arr_n, bool_val, toks_n, t0_name_len,
        t0_ndims, t0_ne0, t0_ne1, t0_type, t0_off, t1_off, t1_name;
} base_pos;

/* A small valid file: 5 keys, two f32 tensors of 32 bytes each (so no trailing padding, and
 * every truncation cuts something the reader needs). */
static void build_base(bb *b, base_pos *pp) {
    base_pos p;
    b->n = 0;
    bb_put(b, "GGUF", 4);
    p.version = b->n;
    bb_u32(b, 3);
    p.n_t = b->n;
    bb_u64(b, 2);
    p.n_kv = b->n;
    bb_u64(b, 5);
    p.name_len = b->n;
    bb_str(b, "general.name");
    p.name_type = b->n;
    bb_u32(b, GGUF_STR);
    bb_str(b, "tiny");
    bb_str(b, "general.alignment");
    bb_u32(b, GGUF_U32);
    p.align_val = b->n;
    bb_u32(b, 32);
    bb_str(b, "arr");
    bb_u32(b, GGUF_ARR);
    p.arr_type = b->n;
    bb_u32(b, GGUF_U32);
    p.arr_n = b->n;
    bb_u64(b, 3);
    bb_u32(b, 1), bb_u32(b, 2), bb_u32(b, 3);
    bb_str(b, "flag");
    bb_u32(b, GGUF_BOOL);
    p.bool_val = b->n;
    b->p[b->n++] = 1;
    bb_str(b, "toks");
    bb_u32(b, GGUF_ARR);
    bb_u32(b, GGUF_STR);
    p.toks_n = b->n;
    bb_u64(b, 2);
    bb_str(b, "a");
    bb_str(b, "bc");
    p.t0_name_len = b->n;
    bb_str(b, "w");
    p.t0_ndims = b->n;
    bb_u32(b, 2);
    p.t0_ne0 = b->n;
    bb_u64(b, 4);
    p.t0_ne1 = b->n;
    bb_u64(b, 2);
    p.t0_type = b->n;
    bb_u32(b, NG_F32);
    p.t0_off = b->n;
    bb_u64(b, 0);
    p.t1_name = b->n + 8;
    bb_str(b, "b");
    bb_u32(b, 1);
    bb_u64(b, 8);
    bb_u32(b, NG_F32);
    p.t1_off = b->n;
    bb_u64(b, 32);
    bb_pad(b, 32);
    for (int i = 0; i < 16; i++) {
        float v = (float)i;
        bb_put(b, &v, 4);
    }
    if (pp) *pp = p;
}

static void patch_u32(bb *b, size_t at, uint32_t v) { memcpy(b->p + at, &v, 4); }
static void patch_u64(bb *b, size_t at, uint64_t v) { memcpy(b->p + at, &v, 8); }

/* Writes b to a file, opens it, and checks it is rejected with a message naming the file
 * and containing each of want1, want2 (when not NULL). Also parses an exact-size heap copy
 * so that ASan sees any read past the end. */
static void expect_reject(const bb *b, const char *tag, const char *want1, const char *want2) {
    const char *path = tmp_path(tag);
    ng_error err = {{0}};
    CHECK(write_bytes(path, b->p, b->n) == 0, "write %s", path);
    gguf_ctx *g = gguf_open(path, &err);
    CHECK(g == NULL, "%s: accepted", tag);
    gguf_close(g);
    if (getenv("T_VERBOSE")) fprintf(stderr, "%-10s %s\n", tag, err.msg);
    CHECK(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", tag, err.msg);
    CHECK(!want1 || strstr(err.msg, want1), "%s: message lacks '%s': %s", tag, want1, err.msg);
    CHECK(!want2 || strstr(err.msg, want2), "%s: message lacks '%s': %s", tag, want2, err.msg);
    uint8_t *copy = malloc(b->n ? b->n : 1);
    memcpy(copy, b->p, b->n);
    ng_error err2 = {{0}};
    g = gguf_open_mem(copy, b->n, "mem", &err2);
    CHECK(g == NULL && err2.msg[0], "%s: accepted from memory", tag);
    gguf_close(g);
    free(copy);
    unlink(path);
}

/* ---------------------------------------------------------------- cases */

static void test_roundtrip_all_types(void) {
    const char *path = tmp_path("rt"), *path2 = tmp_path("rt2");
    ng_error err = {{0}};
    gguf_writer *w = gguf_writer_new();
    uint8_t u8 = 250;
    int8_t i8 = -120;
    uint16_t u16 = 65000;
    int16_t i16 = -32000;
    uint64_t u64 = 0xfedcba9876543210ull;
    int64_t i64 = -1234567890123456789ll;
    double f64 = 3.141592653589793;
    gguf_set_scalar(w, "s.u8", GGUF_U8, &u8);
    gguf_set_scalar(w, "s.i8", GGUF_I8, &i8);
    gguf_set_scalar(w, "s.u16", GGUF_U16, &u16);
    gguf_set_scalar(w, "s.i16", GGUF_I16, &i16);
    gguf_set_u32(w, "s.u32", 4000000000u);
    gguf_set_i32(w, "s.i32", -2000000000);
    gguf_set_f32(w, "s.f32", 0.5f);
    gguf_set_bool(w, "s.bool", 1);
    gguf_set_str(w, "s.str", "héllo wörld");
    gguf_set_str(w, "s.empty", "");
    gguf_set_scalar(w, "s.u64", GGUF_U64, &u64);
    gguf_set_scalar(w, "s.i64", GGUF_I64, &i64);
    gguf_set_scalar(w, "s.f64", GGUF_F64, &f64);
    gguf_set_u32(w, "s.replaced", 1);
    gguf_set_str(w, "s.replaced", "now a string"); /* replaces in place, keeps position */
    ng_str toks[4] = {{"hello", 5}, {"", 0}, {"a\0b", 3}, {"\xe2\x96\x81the", 6}};
    gguf_set_arr_str(w, "a.str", toks, 4);
    gguf_set_arr_str(w, "a.str_empty", NULL, 0);
    /* a numeric array of every numeric type */
    static const gguf_vtype nt[] = {GGUF_U8,  GGUF_I8,   GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32,
                                    GGUF_F32, GGUF_BOOL, GGUF_U64, GGUF_I64, GGUF_F64};
    static const size_t nsz[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 8, 8};
    uint8_t raw[11][5 * 8];
    for (int k = 0; k < 11; k++) {
        for (int j = 0; j < 5 * 8; j++) raw[k][j] = (uint8_t)(k * 31 + j * 7 + 1);
        if (nt[k] == GGUF_BOOL)
            for (int j = 0; j < 5; j++) raw[k][j] = (uint8_t)(j & 1);
        if (nt[k] == GGUF_F32 || nt[k] == GGUF_F64)
            for (int j = 0; j < 5; j++) {
                float f = (float)j * 1.25f - 2;
                double d = (double)j / 3;
                if (nt[k] == GGUF_F32)
                    memcpy(raw[k] + 4 * j, &f, 4);
                else
                    memcpy(raw[k] + 8 * j, &d, 8);
            }
        char key[32];
        snprintf(key, sizeof key, "a.num%d", k);
        gguf_set_arr_data(w, key, nt[k], raw[k], 5);
    }
    /* tensors: f32 1-d of odd length (padding), f16 2-d, bf16 3-d, q8_0 2-d, f32 4-d */
    float d0[7], d4[24];
    uint16_t d1[15], d2[24];
    uint8_t d3[2 * 3 * 34];
    for (int i = 0; i < 7; i++) d0[i] = (float)i * 0.5f - 1;
    for (int i = 0; i < 15; i++) d1[i] = ng_f32_to_f16((float)i / 8);
    for (int i = 0; i < 24; i++) d2[i] = ng_f32_to_bf16((float)i * 3);
    for (size_t i = 0; i < sizeof d3; i++) d3[i] = (uint8_t)(i * 13 + 5);
    for (int i = 0; i < 24; i++) d4[i] = (float)(i * i);
    struct {
        const char *name;
        ng_type type;
        int nd;
        int64_t ne[4];
        const void *data;
        size_t nbytes;
    } T[] = {{"t.f32", NG_F32, 1, {7}, d0, sizeof d0},
             {"t.f16", NG_F16, 2, {5, 3}, d1, sizeof d1},
             {"t.bf16", NG_BF16, 3, {4, 3, 2}, d2, sizeof d2},
             {"t.q8_0", NG_Q8_0, 2, {64, 3}, d3, sizeof d3},
             {"t.f32_4d", NG_F32, 4, {2, 3, 2, 2}, d4, sizeof d4}};
    int nT = (int)(sizeof T / sizeof T[0]);
    for (int i = 0; i < nT; i++) gguf_add_tensor(w, T[i].name, T[i].type, T[i].nd, T[i].ne, T[i].data);
    REQUIRE(gguf_write(w, path, &err) == NG_OK, "write: %s", err.msg);
    gguf_writer_free(w);

    keep_copy(path);
    gguf_ctx *g = gguf_open(path, &err);
    REQUIRE(g, "open: %s", err.msg);
    CHECK(gguf_version(g) == 3, "version %u", gguf_version(g));
    CHECK(gguf_alignment(g) == 32, "alignment %zu", gguf_alignment(g));
    CHECK(gguf_n_kv(g) == 14 + 2 + 11, "n_kv %d", gguf_n_kv(g));
    CHECK(strcmp(gguf_key(g, 0), "s.u8") == 0 && strcmp(gguf_key(g, 13), "s.replaced") == 0, "key order");
    gguf_vtype ty;
    const void *v;
#define SCALAR_IS(key, T_, type_, want)                                                                      \
    do {                                                                                                     \
        v = gguf_get_scalar(g, key, &ty);                                                                    \
        T_ got_;                                                                                             \
        CHECK(v &&ty == type_, "%s: type", key);                                                             \
        if (v) {                                                                                             \
            memcpy(&got_, v, sizeof got_);                                                                   \
            CHECK(got_ == (want), "%s: value", key);                                                         \
        }                                                                                                    \
    } while (0)
    SCALAR_IS("s.u8", uint8_t, GGUF_U8, u8);
    SCALAR_IS("s.i8", int8_t, GGUF_I8, i8);
    SCALAR_IS("s.u16", uint16_t, GGUF_U16, u16);
    SCALAR_IS("s.i16", int16_t, GGUF_I16, i16);
    SCALAR_IS("s.u32", uint32_t, GGUF_U32, 4000000000u);
    SCALAR_IS("s.i32", int32_t, GGUF_I32, -2000000000);
    SCALAR_IS("s.f32", float, GGUF_F32, 0.5f);
    SCALAR_IS("s.bool", uint8_t, GGUF_BOOL, 1);
    SCALAR_IS("s.u64", uint64_t, GGUF_U64, u64);
    SCALAR_IS("s.i64", int64_t, GGUF_I64, i64);
    SCALAR_IS("s.f64", double, GGUF_F64, f64);
    uint32_t u32;
    int64_t iv;
    float fv;
    int bv;
    CHECK(gguf_get_u32(g, "s.u32", &u32, &err) == NG_OK && u32 == 4000000000u, "get_u32");
    CHECK(gguf_get_u32(g, "s.u8", &u32, &err) == NG_OK && u32 == 250, "get_u32 from u8");
    CHECK(gguf_get_i64(g, "s.i32", &iv, &err) == NG_OK && iv == -2000000000, "get_i64 from i32");
    CHECK(gguf_get_i64(g, "s.i8", &iv, &err) == NG_OK && iv == -120, "get_i64 from i8");
    CHECK(gguf_get_i64(g, "s.i16", &iv, &err) == NG_OK && iv == -32000, "get_i64 from i16");
    CHECK(gguf_get_u32(g, "s.u16", &u32, &err) == NG_OK && u32 == 65000, "get_u32 from u16");
    CHECK(gguf_get_i64(g, "s.u64", &iv, &err) == NG_ERR && strstr(err.msg, "'s.u64'"), "u64 above i64");
    CHECK(gguf_get_u32(g, "s.i8", &u32, &err) == NG_ERR && strstr(err.msg, "-120"), "u32 from negative i8");
    CHECK(gguf_get_i64(g, "s.i64", &iv, &err) == NG_OK && iv == i64, "get_i64");
    CHECK(gguf_get_f32(g, "s.f32", &fv, &err) == NG_OK && fv == 0.5f, "get_f32");
    CHECK(gguf_get_f32(g, "s.f64", &fv, &err) == NG_OK && fv == (float)f64, "get_f32 from f64");
    CHECK(gguf_get_bool(g, "s.bool", &bv, &err) == NG_OK && bv == 1, "get_bool");
    CHECK(gguf_get_str(g, "s.str") && strcmp(gguf_get_str(g, "s.str"), "héllo wörld") == 0, "str");
    CHECK(gguf_get_str(g, "s.empty") && gguf_get_str(g, "s.empty")[0] == 0, "empty str");
    CHECK(gguf_get_str(g, "s.replaced") && strcmp(gguf_get_str(g, "s.replaced"), "now a string") == 0,
          "replaced");
    uint64_t n = 0;
    const ng_str *s = gguf_get_arr_str(g, "a.str", &n);
    REQUIRE(s && n == 4, "string array");
    for (int i = 0; i < 4; i++)
        CHECK(s[i].n == toks[i].n && memcmp(s[i].s, toks[i].s, s[i].n) == 0 && s[i].s[s[i].n] == 0,
              "token %d", i);
    s = gguf_get_arr_str(g, "a.str_empty", &n);
    CHECK(s && n == 0, "empty string array");
    int ki = gguf_find_key(g, "a.str");
    CHECK(ki >= 0 && gguf_kv_type(g, ki) == GGUF_ARR && gguf_arr_type(g, ki) == GGUF_STR &&
              gguf_arr_n(g, ki) == 4,
          "arr info");
    for (int k = 0; k < 11; k++) {
        char key[32];
        snprintf(key, sizeof key, "a.num%d", k);
        const void *d = gguf_get_arr_data(g, key, &ty, &n);
        CHECK(d && ty == nt[k] && n == 5 && memcmp(d, raw[k], 5 * nsz[k]) == 0, "%s", key);
    }
    CHECK(gguf_get_arr_data(g, "a.str", &ty, &n) == NULL, "string array is not numeric");
    CHECK(gguf_get_str(g, "s.u8") == NULL && gguf_get_arr_str(g, "s.str", &n) == NULL, "wrong-type getters");
    CHECK(gguf_find_key(g, "nope") == -1, "absent key");

    REQUIRE(gguf_n_tensors(g) == nT, "n_tensors %d", gguf_n_tensors(g));
    for (int i = 0; i < nT; i++) {
        int ti = gguf_find_tensor(g, T[i].name);
        CHECK(ti == i, "find %s", T[i].name);
        const ng_tensor *t = gguf_tensor(g, i);
        CHECK(strcmp(t->name, T[i].name) == 0 && t->type == T[i].type && t->n_dims == T[i].nd, "%s header",
              T[i].name);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == (d < T[i].nd ? T[i].ne[d] : 1), "%s ne[%d]", T[i].name, d);
        CHECK(t->nbytes == T[i].nbytes, "%s nbytes %zu", T[i].name, t->nbytes);
        CHECK(memcmp(t->data, T[i].data, T[i].nbytes) == 0, "%s data", T[i].name);
        CHECK((uintptr_t)t->data % 32 == 0, "%s data not aligned", T[i].name);
    }
    CHECK(gguf_find_tensor(g, "nope") == -1, "absent tensor");

    /* copying every key and tensor gives a byte-identical file */
    w = gguf_writer_new();
    gguf_copy_kv(w, g, NULL);
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const ng_tensor *t = gguf_tensor(g, i);
        gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    CHECK(gguf_write(w, path2, &err) == NG_OK, "rewrite: %s", err.msg);
    gguf_writer_free(w);
    size_t n1 = 0, n2 = 0;
    uint8_t *b1 = read_bytes(path, &n1), *b2 = read_bytes(path2, &n2);
    CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0, "copy is not byte-identical (%zu vs %zu bytes)",
          n1, n2);
    CHECK(n1 % 32 == 0, "file size %zu not padded to the alignment", n1);
    free(b1);
    free(b2);

    /* copy with a skipped prefix */
    w = gguf_writer_new();
    gguf_copy_kv(w, g, "a.");
    gguf_write(w, path2, &err);
    gguf_writer_free(w);
    gguf_close(g);
    g = gguf_open(path2, &err);
    CHECK(g && gguf_n_kv(g) == 14 && gguf_find_key(g, "a.str") < 0, "skip_prefix");
    gguf_close(g);
    unlink(path);
    unlink(path2);
}

/* Hand-computed bytes for one key and one 3-element f32 tensor. */
static void test_layout_exact(void) {
    const char *path = tmp_path("layout");
    ng_error err = {{0}};
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "a", 7);
    float d[3] = {1, 2, 3};
    gguf_add_tensor(w, "t", NG_F32, 1, (int64_t[]){3}, d);
    REQUIRE(gguf_write(w, path, &err) == NG_OK, "write: %s", err.msg);
    gguf_writer_free(w);
    uint8_t want[128] = {0};
    static const uint8_t head[] = {
        'G', 'G', 'U', 'F', 3, 0, 0, 0,      /* magic, version 3 */
        1,   0,   0,   0,   0, 0, 0, 0,      /* n_tensors */
        1,   0,   0,   0,   0, 0, 0, 0,      /* n_kv */
        1,   0,   0,   0,   0, 0, 0, 0, 'a', /* key "a" (byte 24) */
        4,   0,   0,   0,                    /* u32 */
        7,   0,   0,   0,                    /* value (byte 37) */
        1,   0,   0,   0,   0, 0, 0, 0, 't', /* tensor "t" (byte 41) */
        1,   0,   0,   0,                    /* n_dims */
        3,   0,   0,   0,   0, 0, 0, 0,      /* ne[0] */
        0,   0,   0,   0,                    /* f32 */
        0,   0,   0,   0,   0, 0, 0, 0,      /* offset 0; header ends at 74 */
    };
    memcpy(want, head, sizeof head);
    memcpy(want + 96, d, sizeof d); /* data section at 74 padded to 96; 12 bytes padded to 32 */
    size_t n = 0;
    uint8_t *got = read_bytes(path, &n);
    CHECK(sizeof head == 74, "test table");
    CHECK(got && n == sizeof want, "size %zu, want %zu", n, sizeof want);
    if (got && n == sizeof want)
        for (size_t i = 0; i < n; i++) CHECK(got[i] == want[i], "byte %zu: %u, want %u", i, got[i], want[i]);
    free(got);
    unlink(path);
}

static void test_base_valid(void) {
    bb b;
    build_base(&b, NULL);
    const char *path = tmp_path("base");
    REQUIRE(write_bytes(path, b.p, b.n) == 0, "write");
    ng_error err = {{0}};
    keep_copy(path);
    gguf_ctx *g = gguf_open(path, &err);
    REQUIRE(g, "base file rejected: %s", err.msg);
    CHECK(strcmp(gguf_path(g), path) == 0, "path");
    CHECK(gguf_n_kv(g) == 5 && gguf_n_tensors(g) == 2, "counts");
    const ng_tensor *t = gguf_tensor(g, gguf_find_tensor(g, "w"));
    CHECK(t && t->ne[0] == 4 && t->ne[1] == 2 && ((const float *)t->data)[5] == 5.0f, "tensor w");
    gguf_close(g);
    unlink(path);
}

/* Every prefix of the base file is rejected, from the file and from an exact-size buffer. */
static void test_truncation_every_length(void) {
    bb b;
    build_base(&b, NULL);
    const char *path = tmp_path("trunc");
    for (size_t len = 0; len < b.n; len++) {
        ng_error err = {{0}};
        REQUIRE(write_bytes(path, b.p, len) == 0, "write");
        gguf_ctx *g = gguf_open(path, &err);
        CHECK(g == NULL, "truncated to %zu bytes: accepted", len);
        gguf_close(g);
        CHECK(strstr(err.msg, path) && (strstr(err.msg, "truncated") || strstr(err.msg, "past the end") ||
                                        strstr(err.msg, "cannot fit") || strstr(err.msg, "does not fit")),
              "truncated to %zu: unclear message: %s", len, err.msg);
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, b.p, len);
        g = gguf_open_mem(copy, len, "mem", &err);
        CHECK(g == NULL, "mem truncated to %zu: accepted", len);
        gguf_close(g);
        free(copy);
    }
    unlink(path);
}

static void test_corrupt_header(void) {
    bb b;
    base_pos p;
    build_base(&b, &p);
    memcpy(b.p, "GGUG", 4);
    expect_reject(&b, "magic", "magic", "GGUF");
    build_base(&b, &p);
    patch_u32(&b, p.version, 1);
    expect_reject(&b, "v1", "version", "v1");
    patch_u32(&b, p.version, 4);
    expect_reject(&b, "v4", "version", "4");
    patch_u32(&b, p.version, 0x03000000);
    expect_reject(&b, "vswap", "version", "byte-swapped");
    build_base(&b, &p);
    patch_u64(&b, p.n_kv, 1ull << 60);
    expect_reject(&b, "nkv", "n_kv", NULL);
    build_base(&b, &p);
    patch_u64(&b, p.n_t, 1ull << 60);
    expect_reject(&b, "nt", "n_tensors", NULL);
    build_base(&b, &p);
    patch_u64(&b, p.n_kv, 6); /* one key more than there is: parses tensor info as a key */
    expect_reject(&b, "nkv6", NULL, NULL);
    build_base(&b, &p);
    expect_reject(&(bb){.n = 0}, "empty", "truncated", NULL);
}

static void test_corrupt_kv(void) {
    bb b;
    base_pos p;
    build_base(&b, &p);
    patch_u64(&b, p.name_len, 1ull << 62);
    expect_reject(&b, "keylen", "key #0 name", "string length");
    build_base(&b, &p);
    patch_u32(&b, p.name_type, 13);
    expect_reject(&b, "vtype", "general.name", "unknown value type 13");
    build_base(&b, &p);
    patch_u32(&b, p.arr_type, 77);
    expect_reject(&b, "arrtype", "'arr'", "unknown array element type 77");
    build_base(&b, &p);
    patch_u64(&b, p.arr_n, 1ull << 61);
    expect_reject(&b, "arrn", "'arr'", "does not fit");
    build_base(&b, &p);
    patch_u64(&b, p.toks_n, 0xffffffffffffffffull);
    expect_reject(&b, "toksn", "'toks'", "does not fit");
    build_base(&b, &p);
    b.p[p.bool_val] = 2;
    expect_reject(&b, "bool", "'flag'", "bool");
    build_base(&b, &p);
    patch_u32(&b, p.align_val, 48);
    expect_reject(&b, "align48", "general.alignment", "power of two");
    patch_u32(&b, p.align_val, 0);
    expect_reject(&b, "align0", "general.alignment", "power of two");

    /* hand-built files for structural defects */
    b.n = 0;
    bb_header(&b, 0, 2);
    bb_kv_u32(&b, "dup.key", 1);
    bb_kv_u32(&b, "dup.key", 2);
    expect_reject(&b, "dupkey", "dup.key", "duplicate key");

    b.n = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_STR);
    bb_str(&b, "32");
    expect_reject(&b, "alignstr", "general.alignment", "u32");

    b.n = 0;
    bb_header(&b, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, GGUF_U8);
    b.p[b.n++] = 0;
    expect_reject(&b, "keynul", "key #0 name", "NUL");

    b.n = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "s");
    bb_u32(&b, GGUF_STR);
    bb_u64(&b, 100); /* string value longer than the file */
    bb_put(&b, "abc", 3);
    expect_reject(&b, "strlen", "key 's'", "string length");

    /* arrays nested deeper than the reader allows */
    b.n = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "deep");
    bb_u32(&b, GGUF_ARR);
    for (int i = 0; i < 12; i++) {
        bb_u32(&b, GGUF_ARR);
        bb_u64(&b, 1);
    }
    bb_u32(&b, GGUF_U8);
    bb_u64(&b, 0);
    expect_reject(&b, "deep", "'deep'", "nested");
}

static void test_nested_array_ok(void) {
    /* an array of two arrays of u16: allowed by the spec; skipped by the getters */
    bb b = {.n = 0};
    bb_header(&b, 0, 2);
    bb_str(&b, "nest");
    bb_u32(&b, GGUF_ARR);
    bb_u32(&b, GGUF_ARR);
    bb_u64(&b, 2);
    for (int i = 0; i < 2; i++) {
        bb_u32(&b, GGUF_U16);
        bb_u64(&b, 2);
        bb_u32(&b, 0x00020001);
    }
    bb_kv_u32(&b, "after", 9);
    const char *path = tmp_path("nest");
    REQUIRE(write_bytes(path, b.p, b.n) == 0, "write");
    ng_error err = {{0}};
    keep_copy(path);
    gguf_ctx *g = gguf_open(path, &err);
    REQUIRE(g, "nested array rejected: %s", err.msg);
    int i = gguf_find_key(g, "nest");
    gguf_vtype ty;
    uint64_t n;
    uint32_t v = 0;
    CHECK(i == 0 && gguf_arr_type(g, i) == GGUF_ARR && gguf_arr_n(g, i) == 2, "nested info");
    CHECK(gguf_get_arr_data(g, "nest", &ty, &n) == NULL, "nested data getter");
    CHECK(gguf_get_u32(g, "after", &v, &err) == NG_OK && v == 9, "key after nested array");
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kv(w, g, NULL); /* nested arrays are not copied; the rest is */
    CHECK(gguf_write(w, path, &err) == NG_OK, "write copy: %s", err.msg);
    gguf_writer_free(w);
    gguf_close(g);
    g = gguf_open(path, &err);
    CHECK(g && gguf_n_kv(g) == 1 && gguf_find_key(g, "after") == 0, "copy without nested");
    gguf_close(g);
    unlink(path);
}

static void test_corrupt_tensors(void) {
    bb b;
    base_pos p;
    build_base(&b, &p);
    patch_u32(&b, p.t0_type, 99);
    expect_reject(&b, "ttype", "tensor 'w'", "unknown tensor type 99");
    patch_u32(&b, p.t0_type, 4); /* q4_2: removed from ggml long ago */
    expect_reject(&b, "ttype4", "tensor 'w'", "unknown tensor type 4");
    build_base(&b, &p);
    patch_u32(&b, p.t0_ndims, 0);
    expect_reject(&b, "ndims0", "tensor 'w'", "n_dims");
    patch_u32(&b, p.t0_ndims, 5);
    expect_reject(&b, "ndims5", "tensor 'w'", "n_dims");
    build_base(&b, &p);
    patch_u64(&b, p.t0_ne0, 1ull << 40);
    patch_u64(&b, p.t0_ne1, 1ull << 40);
    expect_reject(&b, "neovf", "tensor 'w'", "64 bits");
    build_base(&b, &p);
    patch_u64(&b, p.t0_ne0, 1ull << 61);
    expect_reject(&b, "bytesovf", "tensor 'w'", "overflows");
    build_base(&b, &p);
    patch_u64(&b, p.t0_ne0, 0x8000000000000000ull);
    expect_reject(&b, "neneg", "tensor 'w'", "ne[0]");
    build_base(&b, &p);
    patch_u32(&b, p.t0_type, NG_Q8_0); /* ne[0] = 4 is not a multiple of 32 */
    expect_reject(&b, "block", "tensor 'w'", "block size");
    build_base(&b, &p);
    patch_u64(&b, p.t0_ne1, 3); /* 48 bytes: runs into tensor b */
    expect_reject(&b, "overlap", "overlaps", "'b'");
    build_base(&b, &p);
    patch_u64(&b, p.t1_off, 0); /* b on top of w */
    expect_reject(&b, "overlap0", "overlaps", NULL);
    build_base(&b, &p);
    patch_u64(&b, p.t1_off, 64); /* past the end */
    expect_reject(&b, "offend", "tensor 'b'", "past the end");
    patch_u64(&b, p.t1_off, 0xffffffffffffffe0ull); /* offset + size wraps */
    expect_reject(&b, "offwrap", "tensor 'b'", "past the end");
    build_base(&b, &p);
    patch_u64(&b, p.t1_off, 16); /* not a multiple of 32 */
    expect_reject(&b, "misalign", "tensor 'b'", "alignment");
    build_base(&b, &p);
    b.p[p.t1_name] = 'w';
    expect_reject(&b, "duptensor", "tensor 'w'", "duplicate tensor name");
    build_base(&b, &p);
    patch_u64(&b, p.t0_name_len, 1ull << 50);
    expect_reject(&b, "tnamelen", "tensor #0 name", "string length");
}

static void test_alignment_64(void) {
    const char *path = tmp_path("align64");
    ng_error err = {{0}};
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "general.alignment", 64);
    gguf_set_str(w, "general.name", "x");
    float a[5] = {1, 2, 3, 4, 5}, c[17];
    for (int i = 0; i < 17; i++) c[i] = (float)-i;
    gguf_add_tensor(w, "a", NG_F32, 1, (int64_t[]){5}, a);
    gguf_add_tensor(w, "c", NG_F32, 1, (int64_t[]){17}, c);
    REQUIRE(gguf_write(w, path, &err) == NG_OK, "write: %s", err.msg);
    gguf_writer_free(w);
    keep_copy(path);
    size_t n = 0;
    uint8_t *bytes = read_bytes(path, &n);
    CHECK(n % 64 == 0, "size %zu", n);
    free(bytes);
    gguf_ctx *g = gguf_open(path, &err);
    REQUIRE(g, "open: %s", err.msg);
    CHECK(gguf_alignment(g) == 64, "alignment %zu", gguf_alignment(g));
    const ng_tensor *ta = gguf_tensor(g, 0), *tc = gguf_tensor(g, 1);
    CHECK((uintptr_t)ta->data % 64 == 0 && (uintptr_t)tc->data % 64 == 0, "data alignment");
    CHECK((const uint8_t *)tc->data - (const uint8_t *)ta->data == 64, "second tensor at offset 64");
    CHECK(memcmp(ta->data, a, sizeof a) == 0 && memcmp(tc->data, c, sizeof c) == 0, "data");
    gguf_close(g);
    unlink(path);
}

/* general.alignment = 1 packs an f32 tensor at an odd address: the reader hands out an
 * aligned copy so kernels can read it through float pointers. */
static void test_alignment_1_copies(void) {
    const char *path = tmp_path("align1");
    ng_error err = {{0}};
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "general.alignment", 1);
    uint16_t h[3] = {1, 2, 3};
    float f[4] = {1.5f, -2, 3, 4};
    gguf_add_tensor(w, "h", NG_F16, 1, (int64_t[]){3}, h);
    gguf_add_tensor(w, "f", NG_F32, 1, (int64_t[]){4}, f);
    REQUIRE(gguf_write(w, path, &err) == NG_OK, "write: %s", err.msg);
    gguf_writer_free(w);
    gguf_ctx *g = gguf_open(path, &err);
    REQUIRE(g, "open: %s", err.msg);
    const ng_tensor *t = gguf_tensor(g, gguf_find_tensor(g, "f"));
    CHECK(t && (uintptr_t)t->data % 4 == 0 && memcmp(t->data, f, sizeof f) == 0, "f32 tensor after 6 bytes");
    t = gguf_tensor(g, gguf_find_tensor(g, "h"));
    CHECK(t && (uintptr_t)t->data % 2 == 0 && memcmp(t->data, h, sizeof h) == 0, "f16 tensor");
    gguf_close(g);
    unlink(path);
}

static void test_getter_errors(void) {
    const char *path = tmp_path("getters");
    ng_error err = {{0}};
    gguf_writer *w = gguf_writer_new();
    gguf_set_i32(w, "neg", -1);
    uint64_t big = 1ull << 63;
    gguf_set_scalar(w, "big", GGUF_U64, &big);
    gguf_set_str(w, "s", "x");
    REQUIRE(gguf_write(w, path, &err) == NG_OK, "write: %s", err.msg);
    gguf_writer_free(w);
    gguf_ctx *g = gguf_open(path, &err);
    REQUIRE(g, "open: %s", err.msg);
    uint32_t u;
    int64_t i;
    float f;
    int bv;
    CHECK(gguf_get_u32(g, "neg", &u, &err) == NG_ERR && strstr(err.msg, "'neg'") && strstr(err.msg, path),
          "u32 from -1: %s", err.msg);
    CHECK(gguf_get_u32(g, "big", &u, &err) == NG_ERR && strstr(err.msg, "'big'"), "u32 from 2^63: %s",
          err.msg);
    CHECK(gguf_get_i64(g, "big", &i, &err) == NG_ERR && strstr(err.msg, "'big'"), "i64 from 2^63: %s",
          err.msg);
    CHECK(gguf_get_i64(g, "neg", &i, &err) == NG_OK && i == -1, "i64 from i32 -1");
    CHECK(gguf_get_f32(g, "s", &f, &err) == NG_ERR && strstr(err.msg, "'s'"), "f32 from str: %s", err.msg);
    CHECK(gguf_get_bool(g, "neg", &bv, &err) == NG_ERR && strstr(err.msg, "'neg'"), "bool from i32: %s",
          err.msg);
    CHECK(gguf_get_u32(g, "missing", &u, &err) == NG_ERR && strstr(err.msg, "'missing'") &&
              strstr(err.msg, "missing"),
          "missing: %s", err.msg);
    gguf_close(g);
    unlink(path);
}


static void test_writer_errors(void) {
    const char *path = tmp_path("werr");
    ng_error err = {{0}};
    float d[32] = {0};
    unlink(path);
    struct {
        const char *name, *want;
    } cases[] = {{"dup", "added twice"},    {"long", "name longer"}, {"align", "general.alignment"},
                 {"block", "block size"},   {"ndims", "dimensions"}, {"null", "data is NULL"},
                 {"arrtype", "non-numeric"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gguf_writer *w = gguf_writer_new();
        const char *k = cases[c].name;
        if (!strcmp(k, "dup")) {
            gguf_add_tensor(w, "x", NG_F32, 1, (int64_t[]){4}, d);
            gguf_add_tensor(w, "x", NG_F32, 1, (int64_t[]){4}, d);
        } else if (!strcmp(k, "long")) {
            char nm[80];
            memset(nm, 'n', 64);
            nm[64] = 0;
            gguf_add_tensor(w, nm, NG_F32, 1, (int64_t[]){4}, d);
        } else if (!strcmp(k, "align")) {
            gguf_set_i32(w, "general.alignment", 32);
        } else if (!strcmp(k, "block")) {
            gguf_add_tensor(w, "q", NG_Q8_0, 1, (int64_t[]){33}, d);
        } else if (!strcmp(k, "ndims")) {
            gguf_add_tensor(w, "z", NG_F32, 0, (int64_t[]){1}, d);
        } else if (!strcmp(k, "null")) {
            gguf_add_tensor(w, "z", NG_F32, 1, (int64_t[]){4}, NULL);
        } else {
            gguf_set_arr_data(w, "a", GGUF_STR, d, 1);
        }
        CHECK(gguf_write(w, path, &err) == NG_ERR, "%s: accepted", k);
        CHECK(strstr(err.msg, cases[c].want) && strstr(err.msg, path), "%s: message: %s", k, err.msg);
        CHECK(!t_exists(path), "%s: file left behind", k);
        gguf_writer_free(w);
    }
    /* a write into a missing folder fails cleanly */
    gguf_writer *w = gguf_writer_new();
    CHECK(gguf_write(w, "build/tmp/no/such/dir/x.gguf", &err) == NG_ERR && strstr(err.msg, "no/such/dir"),
          "bad dir: %s", err.msg);
    gguf_writer_free(w);
    ng_error e2 = {{0}};
    CHECK(gguf_open("build/tmp/does-not-exist.gguf", &e2) == NULL && strstr(e2.msg, "does-not-exist"),
          "missing file: %s", e2.msg);
    CHECK(gguf_open("build/tmp", &e2) == NULL && strstr(e2.msg, "not a regular file"), "directory: %s",
          e2.msg);
}

int main(void) {
    RUN(test_roundtrip_all_types);
    RUN(test_layout_exact);
    RUN(test_base_valid);
    RUN(test_truncation_every_length);
    RUN(test_corrupt_header);
    RUN(test_corrupt_kv);
    RUN(test_nested_array_ok);
    RUN(test_corrupt_tensors);
    RUN(test_alignment_64);
    RUN(test_alignment_1_copies);
    RUN(test_getter_errors);
    RUN(test_writer_errors);
    TEST_EXIT();
}
