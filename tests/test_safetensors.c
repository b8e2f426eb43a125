/* test_safetensors — safetensors writer and reader: round trip with metadata, the writer's
 * layout (8-byte header padding, widest dtype first), one hand-built header per defect (the
 * message must name the file and the tensor or field), a two-shard index round trip, missing
 * and wrong shards, and every truncation of a small file. Temporary files go to build/tmp/. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "files.h"
#include "test.h"

static char *tmp_path(const char *tag) { return test_tmp_path("test_st", tag, ""); }

/* A file from a JSON header (padded with nothing) and n_data bytes of data 0, 1, 2, ... */
static size_t make_file(uint8_t *out, const char *json, size_t n_data) {
    uint64_t hl = strlen(json);
    memcpy(out, &hl, 8);
    memcpy(out + 8, json, hl);
    for (size_t i = 0; i < n_data; i++) out[8 + hl + i] = (uint8_t)i;
    return 8 + hl + n_data;
}

static void expect_reject_bytes(const uint8_t *p, size_t n, const char *tag, const char *want1,
                                const char *want2) {
    const char *path = tmp_path(tag);
    ng_error err = {{0}};
    CHECK(write_bytes(path, p, n) == 0, "write");
    st_file *f = st_open(path, &err);
    CHECK(f == NULL, "%s: accepted", tag);
    st_close(f);
    if (getenv("T_VERBOSE")) fprintf(stderr, "%-10s %s\n", tag, err.msg);
    CHECK(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", tag, err.msg);
    CHECK(!want1 || strstr(err.msg, want1), "%s: message lacks '%s': %s", tag, want1, err.msg);
    CHECK(!want2 || strstr(err.msg, want2), "%s: message lacks '%s': %s", tag, want2, err.msg);
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    f = st_open_mem(copy, n, "mem", &err);
    CHECK(f == NULL, "%s: accepted from memory", tag);
    st_close(f);
    free(copy);
    unlink(path);
}

static void expect_reject(const char *json, size_t n_data, const char *tag, const char *want1,
                          const char *want2) {
    static uint8_t buf[8192];
    expect_reject_bytes(buf, make_file(buf, json, n_data), tag, want1, want2);
}

static void test_roundtrip(void) {
    const char *path = tmp_path("rt.safetensors");
    ng_error err = {{0}};
    float a[6] = {1, -2, 3.5f, 4, 5, 6};
    uint16_t h[3], bf[8];
    int32_t iv[2] = {-7, 1 << 30};
    for (int i = 0; i < 3; i++) h[i] = ng_f32_to_f16((float)i + 0.25f);
    for (int i = 0; i < 8; i++) bf[i] = ng_f32_to_bf16((float)i * -1.5f);
    /* f16 of odd size first: the writer must still keep the f32 tensors 4-byte aligned */
    ng_tensor t[] = {
        {.name = "h", .type = NG_F16, .n_dims = 1, .ne = {3, 1, 1, 1}, .data = h, .nbytes = sizeof h},
        {.name = "model.a \"q\"\\",
         .type = NG_F32,
         .n_dims = 2,
         .ne = {3, 2, 1, 1},
         .data = a,
         .nbytes = sizeof a},
        {.name = "bf", .type = NG_BF16, .n_dims = 3, .ne = {2, 2, 2, 1}, .data = bf, .nbytes = sizeof bf},
        {.name = "i", .type = NG_I32, .n_dims = 1, .ne = {2, 1, 1, 1}, .data = iv, .nbytes = sizeof iv},
        {.name = "empty", .type = NG_F32, .n_dims = 2, .ne = {0, 4, 1, 1}, .data = NULL, .nbytes = 0},
    };
    int n = (int)(sizeof t / sizeof t[0]);
    const char *meta[] = {"format", "pt", "note", "line\nbreak \"quoted\""};
    REQUIRE(st_write(path, t, n, meta, 2, &err) == NG_OK, "write: %s", err.msg);

    keep_copy(path);
    size_t fsz = 0;
    uint8_t *bytes = read_bytes(path, &fsz);
    REQUIRE(bytes && fsz > 8, "read back");
    uint64_t hl;
    memcpy(&hl, bytes, 8);
    CHECK(hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
    CHECK(fsz == 8 + hl + sizeof h + sizeof a + sizeof bf + sizeof iv, "file size %zu", fsz);
    CHECK(bytes[8] == '{', "header starts with '{'");
    free(bytes);

    st_file *f = st_open(path, &err);
    REQUIRE(f, "open: %s", err.msg);
    CHECK(st_n_tensors(f) == n, "n_tensors %d", st_n_tensors(f));
    for (int i = 0; i < n; i++) {
        int k = st_find(f, t[i].name);
        REQUIRE(k >= 0, "find %s", t[i].name);
        const ng_tensor *r = st_tensor(f, k);
        CHECK(strcmp(r->name, t[i].name) == 0 && r->type == t[i].type && r->n_dims == t[i].n_dims,
              "%s header", t[i].name);
        for (int d = 0; d < 4; d++)
            CHECK(r->ne[d] == t[i].ne[d], "%s ne[%d] %lld", t[i].name, d, (long long)r->ne[d]);
        CHECK(r->nbytes == t[i].nbytes, "%s nbytes", t[i].name);
        CHECK(r->nbytes == 0 || memcmp(r->data, t[i].data, r->nbytes) == 0, "%s data", t[i].name);
        CHECK((uintptr_t)r->data % (r->type == NG_F32 || r->type == NG_I32 ? 4 : 2) == 0, "%s alignment",
              t[i].name);
    }
    CHECK(st_find(f, "nope") == -1, "absent");
    CHECK(st_metadata(f, "format") && strcmp(st_metadata(f, "format"), "pt") == 0, "metadata format");
    CHECK(st_metadata(f, "note") && strcmp(st_metadata(f, "note"), meta[3]) == 0, "metadata escapes");
    CHECK(st_metadata(f, "nope") == NULL, "absent metadata");
    st_close(f);
    unlink(path);
}

/* Shapes in the file are PyTorch order; ne is reversed. Also a scalar and a U8-free file
 * written by hand the way other tools do (no header padding, tensors in any order). */
static void test_hand_written(void) {
    static uint8_t buf[1024];
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[4,28]},"
                       "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                       "\"c\":{\"dtype\":\"I8\",\"shape\":[1,1,1,3],\"data_offsets\":[28,31]}}  ";
    size_t n = make_file(buf, json, 31);
    const char *path = tmp_path("hand.safetensors");
    REQUIRE(write_bytes(path, buf, n) == 0, "write");
    keep_copy(path);
    ng_error err = {{0}};
    st_file *f = st_open(path, &err);
    REQUIRE(f, "open: %s", err.msg);
    const ng_tensor *b = st_tensor(f, st_find(f, "b")), *s = st_tensor(f, st_find(f, "s")),
                    *c = st_tensor(f, st_find(f, "c"));
    REQUIRE(b && s && c, "tensors");
    CHECK(b->n_dims == 2 && b->ne[0] == 3 && b->ne[1] == 2 && b->nbytes == 24, "b shape");
    CHECK(s->n_dims == 1 && s->ne[0] == 1 && s->nbytes == 4, "scalar");
    CHECK(c->n_dims == 4 && c->ne[0] == 3 && c->ne[3] == 1 && c->type == NG_I8, "c");
    /* the header is 271 bytes long, so b's data is misaligned in the file: a copy is handed out */
    CHECK((uintptr_t)b->data % 4 == 0, "b aligned");
    uint8_t want[24];
    for (int i = 0; i < 24; i++) want[i] = (uint8_t)(4 + i);
    CHECK(memcmp(b->data, want, 24) == 0, "b data");
    st_close(f);
    unlink(path);
}

static void test_defects(void) {
    static uint8_t raw[64];
    /* header length */
    expect_reject_bytes(raw, 0, "empty", "header length", "truncated");
    uint64_t big = 1ull << 40;
    memcpy(raw, &big, 8);
    memcpy(raw + 8, "{}", 2);
    expect_reject_bytes(raw, 10, "hlbig", "header length", "past the end");
    expect_reject("", 0, "hl0", "invalid JSON", NULL);
    expect_reject("{\"a\":", 0, "badjson", "invalid JSON", NULL);
    expect_reject("{} x", 0, "trailing", "after the JSON", NULL);
    expect_reject("[1,2]", 0, "notobj", "not a JSON object", NULL);
    expect_reject("{\"t\":5}", 0, "entry", "tensor 't'", "not a JSON object");
    expect_reject("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "nodtype", "tensor 't'", "dtype");
    expect_reject("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "u8", "tensor 't'",
                  "dtype 'U8'");
    expect_reject("{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "f8",
                  "tensor 't'", "F8_E4M3");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "noshape", "tensor 't'", "shape");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "rank5",
                  "tensor 't'", "5 dimensions");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "negdim",
                  "tensor 't'", "shape[0]");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "fracdim",
                  "tensor 't'", "shape[0]");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "strdim",
                  "tensor 't'", "shape[0]");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                  "dimovf", "tensor 't'", "64 bits");
    expect_reject("{\"t\":{\"dtype\":\"F64\",\"shape\":[9007199254740992,512],\"data_offsets\":[0,4]}}", 4,
                  "bytesovf", "tensor 't'", "overflows");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[18014398509481984],\"data_offsets\":[0,4]}}", 4,
                  "dimbig", "tensor 't'", "shape[0]");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "nooffs", "tensor 't'", "data_offsets");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "offs1", "tensor 't'",
                  "data_offsets");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4, "offsneg",
                  "tensor 't'", "data_offsets");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "offsrev",
                  "tensor 't'", "outside");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 4, "offsend",
                  "tensor 't'", "outside");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "size", "tensor 't'",
                  "need 8");
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  8, "overlap", "overlaps", NULL);
    expect_reject("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  8, "dup", "tensor 't'", "duplicate");
    expect_reject("{\"__metadata__\":{\"a\":1}}", 0, "metanum", "__metadata__", "'a'");
    expect_reject("{\"__metadata__\":[]}", 0, "metaarr", "__metadata__", NULL);
}

static void test_truncation_every_length(void) {
    const char *path = tmp_path("trunc.safetensors");
    ng_error err = {{0}};
    float a[4] = {1, 2, 3, 4};
    ng_tensor t[] = {
        {.name = "a", .type = NG_F32, .n_dims = 1, .ne = {4, 1, 1, 1}, .data = a, .nbytes = sizeof a}};
    REQUIRE(st_write(path, t, 1, NULL, 0, &err) == NG_OK, "write: %s", err.msg);
    size_t n = 0;
    uint8_t *full = read_bytes(path, &n);
    REQUIRE(full, "read");
    for (size_t len = 0; len < n; len++) {
        REQUIRE(write_bytes(path, full, len) == 0, "write");
        st_file *f = st_open(path, &err);
        CHECK(f == NULL, "truncated to %zu: accepted", len);
        st_close(f);
        CHECK(strstr(err.msg, path), "truncated to %zu: message: %s", len, err.msg);
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, full, len);
        f = st_open_mem(copy, len, "mem", &err);
        CHECK(f == NULL, "mem truncated to %zu: accepted", len);
        st_close(f);
        free(copy);
    }
    free(full);
    unlink(path);
}

static void test_sharded(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s", tmp_path("shards"));
    mkdir(dir, 0755);
    char p1[300], p2[300], idx[300];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    ng_error err = {{0}};
    float a[2] = {1, 2}, b[3] = {3, 4, 5}, c[1] = {6};
    ng_tensor s1[] = {
        {.name = "a", .type = NG_F32, .n_dims = 1, .ne = {2, 1, 1, 1}, .data = a, .nbytes = 8},
        {.name = "b", .type = NG_F32, .n_dims = 1, .ne = {3, 1, 1, 1}, .data = b, .nbytes = 12}};
    ng_tensor s2[] = {{.name = "c", .type = NG_F32, .n_dims = 1, .ne = {1, 1, 1, 1}, .data = c, .nbytes = 4}};
    const char *meta[] = {"format", "pt"};
    REQUIRE(st_write(p1, s1, 2, meta, 1, &err) == NG_OK, "shard 1: %s", err.msg);
    REQUIRE(st_write(p2, s2, 1, NULL, 0, &err) == NG_OK, "shard 2: %s", err.msg);
    const char *good =
        "{\"metadata\":{\"total_size\":24},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
        "\"c\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\"}}";
    REQUIRE(write_bytes(idx, good, strlen(good)) == 0, "index");
    st_file *f = st_open(idx, &err);
    REQUIRE(f, "open index: %s", err.msg);
    CHECK(st_n_tensors(f) == 3, "n %d", st_n_tensors(f));
    const ng_tensor *t = st_tensor(f, st_find(f, "c"));
    CHECK(t && t->nbytes == 4 && ((const float *)t->data)[0] == 6, "c from shard 2");
    t = st_tensor(f, st_find(f, "b"));
    CHECK(t && t->ne[0] == 3 && memcmp(t->data, b, 12) == 0, "b from shard 1");
    CHECK(st_metadata(f, "format") && strcmp(st_metadata(f, "format"), "pt") == 0, "shard metadata");
    st_close(f);

    struct {
        const char *json, *tag, *want1, *want2;
    } bad[] = {
        {"{\"weight_map\":{\"a\":\"model-00009-of-00009.safetensors\"}}", "missing", "tensor 'a'",
         "model-00009-of-00009"},
        {"{\"weight_map\":{\"a\":\"../x.safetensors\"}}", "escape", "tensor 'a'", "same folder"},
        {"{\"weight_map\":{\"a\":5}}", "nonstr", "tensor 'a'", "shard file name"},
        {"{\"weight_map\":{\"c\":\"model-00001-of-00002.safetensors\"}}", "wrong", "tensor 'c'", "not found"},
        {"{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"x\":\"model-00001-of-00002."
         "safetensors\"}}",
         "absent", "tensor 'x'", "not found"},
        {"{\"metadata\":{}}", "nomap", "weight_map", NULL},
        {"{\"weight_map\":", "badjson", "JSON", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        REQUIRE(write_bytes(idx, bad[i].json, strlen(bad[i].json)) == 0, "index");
        f = st_open(idx, &err);
        CHECK(f == NULL, "%s: accepted", bad[i].tag);
        st_close(f);
        if (getenv("T_VERBOSE")) fprintf(stderr, "%-10s %s\n", bad[i].tag, err.msg);
        CHECK(strstr(err.msg, idx) && strstr(err.msg, bad[i].want1) &&
                  (!bad[i].want2 || strstr(err.msg, bad[i].want2)),
              "%s: message: %s", bad[i].tag, err.msg);
    }
    /* the same tensor in two shards */
    ng_tensor dupc[] = {
        {.name = "a", .type = NG_F32, .n_dims = 1, .ne = {1, 1, 1, 1}, .data = c, .nbytes = 4}};
    REQUIRE(st_write(p2, dupc, 1, NULL, 0, &err) == NG_OK, "shard 2 again: %s", err.msg);
    const char *dup = "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-"
                      "00002.safetensors\"}}";
    REQUIRE(write_bytes(idx, dup, strlen(dup)) == 0, "index");
    f = st_open(idx, &err);
    CHECK(f == NULL && strstr(err.msg, "tensor 'a'") && strstr(err.msg, "both"),
          "duplicate across shards: %s", err.msg);
    st_close(f);
    unlink(p1);
    unlink(p2);
    unlink(idx);
    rmdir(dir);
}

static void test_write_errors(void) {
    const char *path = tmp_path("werr.safetensors");
    ng_error err = {{0}};
    float a[4] = {0};
    uint8_t q[34] = {0};
    unlink(path);
    ng_tensor quant = {
        .name = "q", .type = NG_Q8_0, .n_dims = 1, .ne = {32, 1, 1, 1}, .data = q, .nbytes = 34};
    CHECK(st_write(path, &quant, 1, NULL, 0, &err) == NG_ERR && strstr(err.msg, "'q'") &&
              strstr(err.msg, "q8_0"),
          "quantized: %s", err.msg);
    ng_tensor wrong = {.name = "w", .type = NG_F32, .n_dims = 1, .ne = {4, 1, 1, 1}, .data = a, .nbytes = 8};
    CHECK(st_write(path, &wrong, 1, NULL, 0, &err) == NG_ERR && strstr(err.msg, "'w'") &&
              strstr(err.msg, "nbytes"),
          "nbytes: %s", err.msg);
    ng_tensor two[] = {
        {.name = "d", .type = NG_F32, .n_dims = 1, .ne = {4, 1, 1, 1}, .data = a, .nbytes = 16},
        {.name = "d", .type = NG_F32, .n_dims = 1, .ne = {4, 1, 1, 1}, .data = a, .nbytes = 16}};
    CHECK(st_write(path, two, 2, NULL, 0, &err) == NG_ERR && strstr(err.msg, "'d'"), "duplicate: %s",
          err.msg);
    ng_tensor meta = {
        .name = "__metadata__", .type = NG_F32, .n_dims = 1, .ne = {4, 1, 1, 1}, .data = a, .nbytes = 16};
    CHECK(st_write(path, &meta, 1, NULL, 0, &err) == NG_ERR && strstr(err.msg, "__metadata__"),
          "reserved name: %s", err.msg);
    CHECK(access(path, F_OK) != 0, "file left behind");
    CHECK(st_open("build/tmp/no-such.safetensors", &err) == NULL && strstr(err.msg, "no-such"), "missing: %s",
          err.msg);
}

int main(void) {
    RUN(test_roundtrip);
    RUN(test_hand_written);
    RUN(test_defects);
    RUN(test_truncation_every_length);
    RUN(test_sharded);
    RUN(test_write_errors);
    TEST_EXIT();
}
