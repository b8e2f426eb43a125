/* gguf — GGUF v2/v3 reader and v3 writer (byte layout in gguf.h).
 *
 * The reader walks the mapped bytes with a bounds-checked cursor: every read first checks
 * that the bytes exist, every count is checked against the bytes left before anything is
 * allocated for it, and tables grow only as entries are actually parsed, so a forged count
 * costs nothing. Errors name the file, the field and the byte offset.
 *
 * The writer produces the layout llama.cpp expects: tensors in insertion order, each at the
 * next multiple of the alignment after the previous one, every tensor (the last included)
 * zero-padded to the alignment, so that llama.cpp's check "offset == sum of padded sizes"
 * holds and its reader can load the whole padded data blob. */
#include "formats/gguf.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "formats/fmt_common.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_ARR_MAX_DEPTH 8 /* nested arrays: the spec allows them; nobody needs deeper */
#define GGUF_NAME_MAX 64     /* llama.cpp's GGML_MAX_NAME, including the NUL */

/* One metadata entry, used by both reader and writer; everything is an owned copy. */
typedef struct {
    char *key;
    gguf_vtype type;
    gguf_vtype arr_type;        /* element type when type == GGUF_ARR */
    uint64_t n;                 /* array length */
    _Alignas(8) uint8_t val[8]; /* scalar value, little-endian; aligned for gguf_get_scalar */
    char *str;                  /* GGUF_STR: NUL-terminated copy */
    size_t str_len;
    ng_str *strs; /* string array: n entries into strbuf, each NUL-terminated */
    char *strbuf;
    void *data; /* numeric array: n elements, heap-aligned */
} gguf_kv;

struct gguf_ctx {
    char *path;
    const uint8_t *base;
    size_t size;
    int mapped; /* 1 when base is our mapping, 0 for a caller's buffer */
    uint32_t version;
    size_t alignment;
    size_t data_start;
    gguf_kv *kv;
    int n_kv, cap_kv;
    fmt_name *kv_index;
    ng_tensor *t;
    int n_t, cap_t;
    fmt_name *t_index;
    void **t_copy; /* per tensor: aligned copy when the data in the file is misaligned */
};

static size_t vtype_size(uint32_t t) {
    static const size_t sz[] = {
        [GGUF_U8] = 1,  [GGUF_I8] = 1,  [GGUF_U16] = 2,  [GGUF_I16] = 2, [GGUF_U32] = 4,
        [GGUF_I32] = 4, [GGUF_F32] = 4, [GGUF_BOOL] = 1, [GGUF_STR] = 0, [GGUF_ARR] = 0,
        [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8};
    return t <= GGUF_F64 ? sz[t] : 0;
}

static const char *vtype_name(uint32_t t) {
    static const char *nm[] = {"u8",   "i8",  "u16", "i16", "u32", "i32", "f32",
                               "bool", "str", "arr", "u64", "i64", "f64"};
    return t <= GGUF_F64 ? nm[t] : "?";
}

/* ---------------------------------------------------------------- reading */

/* Bounds-checked cursor over the file bytes. `what` names the field being read, for errors. */
typedef struct {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
    ng_error *err;
} rd;

static int rd_need(rd *r, uint64_t n, const char *what) {
    if (n > r->size - r->pos)
        return ng_error_set(r->err, "%s: %s at byte %zu: truncated (needs %" PRIu64 " bytes, %zu left)",
                            r->path, what, r->pos, n, r->size - r->pos);
    return NG_OK;
}

static int rd_bytes(rd *r, void *dst, size_t n, const char *what) {
    if (rd_need(r, n, what)) return NG_ERR;
    memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return NG_OK;
}

static int rd_u32(rd *r, uint32_t *v, const char *what) { return rd_bytes(r, v, 4, what); }
static int rd_u64(rd *r, uint64_t *v, const char *what) { return rd_bytes(r, v, 8, what); }

/* A string: u64 length then the bytes, which stay in the mapping (s points into it). */
static int rd_str(rd *r, ng_str *s, const char *what) {
    uint64_t n;
    char w[160];
    snprintf(w, sizeof w, "%s (length)", what);
    if (rd_u64(r, &n, w)) return NG_ERR;
    size_t at = r->pos;
    if (n > r->size - r->pos)
        return ng_error_set(r->err,
                            "%s: %s at byte %zu: string length %" PRIu64
                            " runs past the end of the file (%zu bytes left)",
                            r->path, what, at, n, r->size - r->pos);
    s->s = (const char *)r->p + r->pos;
    s->n = (size_t)n;
    r->pos += (size_t)n;
    return NG_OK;
}

/* A NUL-terminated copy of a name (key or tensor name); names with NUL bytes are rejected
 * because every lookup compares C strings. */
static char *name_dup(rd *r, ng_str s, const char *what) {
    if (memchr(s.s, 0, s.n)) {
        char b[80];
        ng_error_set(r->err, "%s: %s '%s' contains a NUL byte", r->path, what, fmt_shown(s.s, s.n, b));
        return NULL;
    }
    char *c = xmalloc(s.n + 1);
    if (s.n) memcpy(c, s.s, s.n);
    c[s.n] = 0;
    return c;
}

static int check_bool(rd *r, uint8_t b, const char *what) {
    if (b > 1)
        return ng_error_set(r->err, "%s: %s at byte %zu: bool value %u is neither 0 nor 1", r->path, what,
                            r->pos - 1, b);
    return NG_OK;
}

/* Walks (validates and skips) one value of type t; used for nested arrays and for the first
 * pass over string arrays. */
static int skip_value(rd *r, uint32_t t, int depth, const char *what) {
    if (t > GGUF_F64)
        return ng_error_set(r->err, "%s: %s at byte %zu: unknown value type %u", r->path, what, r->pos, t);
    if (t == GGUF_STR) {
        ng_str s;
        return rd_str(r, &s, what);
    }
    if (t == GGUF_BOOL) {
        uint8_t b;
        return rd_bytes(r, &b, 1, what) || check_bool(r, b, what) ? NG_ERR : NG_OK;
    }
    if (t != GGUF_ARR) {
        if (rd_need(r, vtype_size(t), what)) return NG_ERR;
        r->pos += vtype_size(t);
        return NG_OK;
    }
    if (depth >= GGUF_ARR_MAX_DEPTH)
        return ng_error_set(r->err, "%s: %s at byte %zu: arrays nested deeper than %d", r->path, what, r->pos,
                            GGUF_ARR_MAX_DEPTH);
    uint32_t et;
    uint64_t n;
    char w[200];
    snprintf(w, sizeof w, "%s (array element type)", what);
    if (rd_u32(r, &et, w)) return NG_ERR;
    if (et > GGUF_F64)
        return ng_error_set(r->err, "%s: %s at byte %zu: unknown array element type %u", r->path, what,
                            r->pos - 4, et);
    snprintf(w, sizeof w, "%s (array length)", what);
    if (rd_u64(r, &n, w)) return NG_ERR;
    /* every element takes at least one byte (8 for strings, 12 for arrays): this bounds the
     * loop by the file size whatever n says */
    size_t min = et == GGUF_STR ? 8 : et == GGUF_ARR ? 12 : vtype_size(et);
    if (n > (r->size - r->pos) / min)
        return ng_error_set(
            r->err, "%s: %s at byte %zu: array of %" PRIu64 " %s elements does not fit in the %zu bytes left",
            r->path, what, r->pos - 8, n, vtype_name(et), r->size - r->pos);
    if (et != GGUF_STR && et != GGUF_ARR && et != GGUF_BOOL) {
        r->pos += (size_t)n * min;
        return NG_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        /* vocabularies hold 10^5 strings: check the common cases without formatting a name */
        uint64_t len;
        if (et == GGUF_STR && r->size - r->pos >= 8 &&
            (memcpy(&len, r->p + r->pos, 8), len <= r->size - r->pos - 8)) {
            r->pos += 8 + (size_t)len;
            continue;
        }
        if (et == GGUF_BOOL && r->pos < r->size && r->p[r->pos] <= 1) {
            r->pos++;
            continue;
        }
        snprintf(w, sizeof w, "%s element %" PRIu64, what, i);
        if (skip_value(r, et, depth + 1, w)) return NG_ERR;
    }
    return NG_OK;
}

/* Reads the value of e (type already set) into owned copies. */
static int read_value(rd *r, gguf_kv *e, const char *what) {
    uint32_t t = e->type;
    if (t == GGUF_STR) {
        ng_str s;
        if (rd_str(r, &s, what)) return NG_ERR;
        e->str = xmalloc(s.n + 1);
        if (s.n) memcpy(e->str, s.s, s.n);
        e->str[s.n] = 0;
        e->str_len = s.n;
        return NG_OK;
    }
    if (t != GGUF_ARR) {
        if (rd_bytes(r, e->val, vtype_size(t), what)) return NG_ERR;
        return t == GGUF_BOOL ? check_bool(r, e->val[0], what) : NG_OK;
    }
    /* arrays: walk once to validate and find the extent, then copy */
    size_t start = r->pos;
    if (skip_value(r, GGUF_ARR, 0, what)) return NG_ERR;
    size_t end = r->pos;
    uint32_t et;
    memcpy(&et, r->p + start, 4);
    memcpy(&e->n, r->p + start + 4, 8);
    e->arr_type = et;
    const uint8_t *body = r->p + start + 12;
    if (et == GGUF_STR) {
        /* the strings' bytes plus one NUL each fit in the region, since each had an 8-byte length */
        e->strs = xcalloc(e->n ? e->n : 1, sizeof *e->strs);
        e->strbuf = xmalloc(end - start);
        size_t at = 0, out = 0;
        for (uint64_t i = 0; i < e->n; i++) {
            uint64_t len;
            memcpy(&len, body + at, 8);
            at += 8;
            memcpy(e->strbuf + out, body + at, (size_t)len);
            e->strs[i].s = e->strbuf + out;
            e->strs[i].n = (size_t)len;
            e->strbuf[out + len] = 0;
            at += (size_t)len;
            out += (size_t)len + 1;
        }
    } else if (et != GGUF_ARR) {
        size_t nb = (size_t)e->n * vtype_size(et);
        e->data = xmalloc(nb ? nb : 1);
        if (nb) memcpy(e->data, body, nb);
    } /* nested arrays are validated and skipped: no getter returns them */
    return NG_OK;
}

static void kv_free(gguf_kv *e) {
    free(e->key);
    free(e->str);
    free(e->strs);
    free(e->strbuf);
    free(e->data);
}

static const gguf_kv *kv_get(const gguf_ctx *g, const char *key) {
    int i = gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

static int parse_header(gguf_ctx *g, rd *r, uint64_t *n_t, uint64_t *n_kv) {
    uint8_t magic[4];
    if (rd_bytes(r, magic, 4, "magic")) return NG_ERR;
    if (memcmp(magic, "GGUF", 4) != 0) {
        char b[80];
        return ng_error_set(r->err, "%s: magic at byte 0: bad magic '%s' (expected 'GGUF'): not a GGUF file",
                            g->path, fmt_shown((const char *)magic, 4, b));
    }
    if (rd_u32(r, &g->version, "version")) return NG_ERR;
    if (g->version == 1)
        return ng_error_set(r->err,
                            "%s: version at byte 4: GGUF v1 (32-bit counts) is not supported; convert it "
                            "with a newer llama.cpp",
                            g->path);
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0)
            return ng_error_set(r->err,
                                "%s: version at byte 4: version %" PRIu32
                                " looks byte-swapped (a big-endian GGUF?); only little-endian is supported",
                                g->path, g->version);
        return ng_error_set(r->err,
                            "%s: version at byte 4: unknown GGUF version %" PRIu32 " (supported: 2, 3)",
                            g->path, g->version);
    }
    if (rd_u64(r, n_t, "n_tensors") || rd_u64(r, n_kv, "n_kv")) return NG_ERR;
    /* smallest entries: key = 8-byte length + type + 1-byte value; tensor info = name length +
     * n_dims + one ne + type + offset */
    size_t left = r->size - r->pos;
    if (*n_kv > INT_MAX || *n_kv > left / 13)
        return ng_error_set(r->err,
                            "%s: n_kv at byte 16: %" PRIu64 " keys cannot fit in the %zu bytes that follow",
                            g->path, *n_kv, left);
    if (*n_t > INT_MAX || *n_t > left / 32)
        return ng_error_set(
            r->err, "%s: n_tensors at byte 8: %" PRIu64 " tensors cannot fit in the %zu bytes that follow",
            g->path, *n_t, left);
    return NG_OK;
}

static int parse_kvs(gguf_ctx *g, rd *r, uint64_t n_kv) {
    char w[200], b[80];
    for (uint64_t i = 0; i < n_kv; i++) {
        if (g->n_kv == g->cap_kv) {
            g->cap_kv = g->cap_kv ? 2 * g->cap_kv : 16;
            g->kv = xrealloc(g->kv, (size_t)g->cap_kv * sizeof *g->kv);
        }
        gguf_kv *e = &g->kv[g->n_kv];
        memset(e, 0, sizeof *e);
        snprintf(w, sizeof w, "key #%" PRIu64 " name", i);
        ng_str k;
        if (rd_str(r, &k, w)) return NG_ERR;
        if (!(e->key = name_dup(r, k, w))) return NG_ERR;
        g->n_kv++;
        const char *ks = fmt_shown(e->key, k.n, b);
        uint32_t t;
        snprintf(w, sizeof w, "key '%s' (value type)", ks);
        if (rd_u32(r, &t, w)) return NG_ERR;
        if (t > GGUF_F64)
            return ng_error_set(r->err, "%s: key '%s' at byte %zu: unknown value type %" PRIu32, g->path, ks,
                                r->pos - 4, t);
        e->type = t;
        snprintf(w, sizeof w, "key '%s' (value)", ks);
        if (read_value(r, e, w)) return NG_ERR;
    }
    g->kv_index = xmalloc((size_t)(g->n_kv ? g->n_kv : 1) * sizeof *g->kv_index);
    for (int i = 0; i < g->n_kv; i++) g->kv_index[i] = (fmt_name){g->kv[i].key, i};
    int d = fmt_names_sort(g->kv_index, g->n_kv);
    if (d >= 0)
        return ng_error_set(r->err, "%s: key '%s': duplicate key (entries #%d and #%d)", g->path,
                            fmt_shown(g->kv_index[d].name, strlen(g->kv_index[d].name), b),
                            g->kv_index[d - 1].idx, g->kv_index[d].idx);
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *a = kv_get(g, "general.alignment");
    if (a) {
        uint32_t v;
        memcpy(&v, a->val, 4);
        if (a->type != GGUF_U32)
            return ng_error_set(r->err, "%s: key 'general.alignment': must be u32, not %s", g->path,
                                vtype_name(a->type));
        if (v == 0 || (v & (v - 1)) != 0)
            return ng_error_set(r->err, "%s: key 'general.alignment': %" PRIu32 " is not a power of two",
                                g->path, v);
        g->alignment = v;
    }
    return NG_OK;
}

/* Reads one tensor info into g->t[g->n_t]; t->data temporarily holds the offset. */
static int parse_tensor_info(gguf_ctx *g, rd *r, uint64_t i, uint64_t *offset) {
    char w[200], b[80];
    if (g->n_t == g->cap_t) {
        g->cap_t = g->cap_t ? 2 * g->cap_t : 16;
        g->t = xrealloc(g->t, (size_t)g->cap_t * sizeof *g->t);
    }
    ng_tensor *t = &g->t[g->n_t];
    memset(t, 0, sizeof *t);
    snprintf(w, sizeof w, "tensor #%" PRIu64 " name", i);
    ng_str nm;
    if (rd_str(r, &nm, w)) return NG_ERR;
    char *name = name_dup(r, nm, w);
    if (!name) return NG_ERR;
    t->name = name;
    g->n_t++;
    const char *ns = fmt_shown(name, nm.n, b);
    uint32_t n_dims, type;
    snprintf(w, sizeof w, "tensor '%s' n_dims", ns);
    if (rd_u32(r, &n_dims, w)) return NG_ERR;
    if (n_dims < 1 || n_dims > NG_MAX_DIMS)
        return ng_error_set(r->err,
                            "%s: tensor '%s' n_dims at byte %zu: %" PRIu32 " dimensions (must be 1..%d)",
                            g->path, ns, r->pos - 4, n_dims, NG_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < NG_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        snprintf(w, sizeof w, "tensor '%s' ne[%" PRIu32 "]", ns, d);
        if (rd_u64(r, &ne, w)) return NG_ERR;
        if (ne > INT64_MAX)
            return ng_error_set(r->err,
                                "%s: tensor '%s' ne[%" PRIu32 "] at byte %zu: %" PRIu64 " is out of range",
                                g->path, ns, d, r->pos - 8, ne);
        t->ne[d] = (int64_t)ne;
    }
    snprintf(w, sizeof w, "tensor '%s' type", ns);
    if (rd_u32(r, &type, w)) return NG_ERR;
    if (!ng_type_in_files((int)type) || type > INT_MAX)
        return ng_error_set(r->err, "%s: tensor '%s' type at byte %zu: unknown tensor type %" PRIu32, g->path,
                            ns, r->pos - 4, type);
    t->type = (ng_type)type;
    snprintf(w, sizeof w, "tensor '%s' offset", ns);
    if (rd_u64(r, offset, w)) return NG_ERR;

    /* element count and byte size, every product checked */
    int64_t nel = 1;
    for (int d = 0; d < NG_MAX_DIMS; d++)
        if (__builtin_mul_overflow(nel, t->ne[d], &nel))
            return ng_error_set(r->err,
                                "%s: tensor '%s': shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                                "] has more elements than fit in 64 bits",
                                g->path, ns, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    int64_t blk = ng_type_block(t->type);
    if (t->ne[0] % blk != 0)
        return ng_error_set(
            r->err, "%s: tensor '%s': ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64,
            g->path, ns, t->ne[0], ng_type_name(t->type), blk);
    uint64_t nb = (uint64_t)(t->ne[0] / blk);
    if (__builtin_mul_overflow(nb, (uint64_t)ng_type_size(t->type), &nb) ||
        __builtin_mul_overflow(nb, (uint64_t)t->ne[1], &nb) ||
        __builtin_mul_overflow(nb, (uint64_t)t->ne[2], &nb) ||
        __builtin_mul_overflow(nb, (uint64_t)t->ne[3], &nb) || nb > SIZE_MAX)
        return ng_error_set(r->err, "%s: tensor '%s': byte size overflows", g->path, ns);
    t->nbytes = (size_t)nb;
    if (*offset % g->alignment != 0)
        return ng_error_set(r->err,
                            "%s: tensor '%s' offset: %" PRIu64 " is not a multiple of the alignment %zu",
                            g->path, ns, *offset, g->alignment);
    return NG_OK;
}

static int parse_tensors(gguf_ctx *g, rd *r, uint64_t n_t) {
    char b[80];
    uint64_t *offs = xmalloc((size_t)(n_t ? n_t : 1) * sizeof *offs);
    fmt_span *spans = NULL;
    int rc = NG_ERR;
    for (uint64_t i = 0; i < n_t; i++)
        if (parse_tensor_info(g, r, i, &offs[i])) goto err;

    /* the data section starts at the end of the header, padded to the alignment */
    uint64_t ds = ((uint64_t)r->pos + g->alignment - 1) / g->alignment * g->alignment;
    g->data_start = (size_t)ds;
    uint64_t data_len = ds <= g->size ? g->size - ds : 0;
    spans = xmalloc((size_t)(n_t ? n_t : 1) * sizeof *spans);
    for (int i = 0; i < g->n_t; i++) {
        ng_tensor *t = &g->t[i];
        if (offs[i] > data_len || t->nbytes > data_len - offs[i]) {
            ng_error_set(r->err,
                         "%s: tensor '%s': %zu bytes at offset %" PRIu64
                         " run past the end of the file (data section at byte %" PRIu64 " holds %" PRIu64
                         " bytes)",
                         g->path, fmt_shown(t->name, strlen(t->name), b), t->nbytes, offs[i], ds, data_len);
            goto err;
        }
        spans[i] = (fmt_span){offs[i], offs[i] + t->nbytes, i};
    }
    int o = fmt_spans_sort(spans, g->n_t);
    if (o >= 0) {
        char b2[80];
        const char *a = g->t[spans[o - 1].idx].name, *c = g->t[spans[o].idx].name;
        ng_error_set(r->err,
                     "%s: tensor '%s': data at offset %" PRIu64 " overlaps tensor '%s' [%" PRIu64 ", %" PRIu64
                     ")",
                     g->path, fmt_shown(c, strlen(c), b), spans[o].begin, fmt_shown(a, strlen(a), b2),
                     spans[o - 1].begin, spans[o - 1].end);
        goto err;
    }
    g->t_index = xmalloc((size_t)(g->n_t ? g->n_t : 1) * sizeof *g->t_index);
    for (int i = 0; i < g->n_t; i++) g->t_index[i] = (fmt_name){g->t[i].name, i};
    int d = fmt_names_sort(g->t_index, g->n_t);
    if (d >= 0) {
        ng_error_set(r->err, "%s: tensor '%s': duplicate tensor name (tensors #%d and #%d)", g->path,
                     fmt_shown(g->t_index[d].name, strlen(g->t_index[d].name), b), g->t_index[d - 1].idx,
                     g->t_index[d].idx);
        goto err;
    }
    /* kernels read tensors through typed pointers: copy the rare misaligned one (a file with
     * general.alignment < 4, or a caller's unaligned buffer) */
    g->t_copy = xcalloc((size_t)(g->n_t ? g->n_t : 1), sizeof *g->t_copy);
    for (int i = 0; i < g->n_t; i++) {
        ng_tensor *t = &g->t[i];
        /* an empty tensor may sit at the very end, where ds can lie past an unpadded file */
        const uint8_t *p = g->base + (t->nbytes ? ds + offs[i] : g->size);
        t->data = (void *)p;
        if (t->nbytes && (uintptr_t)p % fmt_type_align(t->type) != 0) {
            g->t_copy[i] = ng_aligned_alloc(t->nbytes);
            memcpy(g->t_copy[i], p, t->nbytes);
            t->data = g->t_copy[i];
        }
    }
    rc = NG_OK;
err:
    free(offs);
    free(spans);
    return rc;
}

static gguf_ctx *gguf_parse(gguf_ctx *g, ng_error *err) {
    rd r = {g->base, g->size, 0, g->path, err};
    uint64_t n_t = 0, n_kv = 0;
    if (parse_header(g, &r, &n_t, &n_kv) || parse_kvs(g, &r, n_kv) || parse_tensors(g, &r, n_t)) {
        gguf_close(g);
        return NULL;
    }
    return g;
}

/* Parses a caller-owned buffer that must outlive the context; name is used in messages.
 * Used by the fuzzers and by callers that already hold the bytes. NULL + err on failure. */
gguf_ctx *gguf_open_mem(const void *buf, size_t size, const char *name, ng_error *err) {
    gguf_ctx *g = xcalloc(1, sizeof *g);
    g->path = xstrdup(name);
    g->base = buf;
    g->size = buf ? size : 0;
    return gguf_parse(g, err);
}

gguf_ctx *gguf_open(const char *path, ng_error *err) {
    const uint8_t *base;
    size_t size;
    if (fmt_map(path, &base, &size, err)) return NULL;
    gguf_ctx *g = xcalloc(1, sizeof *g);
    g->path = xstrdup(path);
    g->base = base;
    g->size = size;
    g->mapped = 1;
    return gguf_parse(g, err);
}

void gguf_close(gguf_ctx *g) {
    if (!g) return;
    for (int i = 0; i < g->n_kv; i++) kv_free(&g->kv[i]);
    for (int i = 0; i < g->n_t; i++) free((char *)g->t[i].name);
    if (g->t_copy)
        for (int i = 0; i < g->n_t; i++) free(g->t_copy[i]);
    free(g->kv);
    free(g->kv_index);
    free(g->t);
    free(g->t_index);
    free(g->t_copy);
    if (g->mapped) fmt_unmap(g->base, g->size);
    free(g->path);
    free(g);
}

int gguf_in_mapping(const gguf_ctx *g, const void *p) {
    const uint8_t *q = p;
    return g && g->mapped && q >= g->base && q < g->base + g->size;
}

const char *gguf_path(const gguf_ctx *g) { return g->path; }
uint32_t gguf_version(const gguf_ctx *g) { return g->version; }
size_t gguf_alignment(const gguf_ctx *g) { return g->alignment; }
int gguf_n_kv(const gguf_ctx *g) { return g->n_kv; }
int gguf_find_key(const gguf_ctx *g, const char *key) { return fmt_names_find(g->kv_index, g->n_kv, key); }
const char *gguf_key(const gguf_ctx *g, int i) { return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL; }
gguf_vtype gguf_kv_type(const gguf_ctx *g, int i) { return i >= 0 && i < g->n_kv ? g->kv[i].type : GGUF_U8; }
gguf_vtype gguf_arr_type(const gguf_ctx *g, int i) {
    return i >= 0 && i < g->n_kv && g->kv[i].type == GGUF_ARR ? g->kv[i].arr_type : GGUF_U8;
}
uint64_t gguf_arr_n(const gguf_ctx *g, int i) {
    return i >= 0 && i < g->n_kv && g->kv[i].type == GGUF_ARR ? g->kv[i].n : 0;
}

/* Integer value of e: *neg set when negative, *mag its magnitude. NG_ERR for non-integers.
 * val holds the value's bytes, zero beyond its size (little-endian host, like the format). */
static int kv_int(const gguf_kv *e, int *neg, uint64_t *mag) {
    int is_signed = e->type == GGUF_I8 || e->type == GGUF_I16 || e->type == GGUF_I32 || e->type == GGUF_I64;
    int is_unsigned = e->type == GGUF_U8 || e->type == GGUF_U16 || e->type == GGUF_U32 || e->type == GGUF_U64;
    if (!is_signed && !is_unsigned) return NG_ERR;
    unsigned bits = 8 * (unsigned)vtype_size(e->type);
    uint64_t u;
    memcpy(&u, e->val, 8);
    if (is_signed && bits < 64 && (u >> (bits - 1)) & 1) u |= ~(uint64_t)0 << bits; /* sign-extend */
    *neg = is_signed && (u >> 63);
    *mag = *neg ? (uint64_t)0 - u : u;
    return NG_OK;
}

static const gguf_kv *kv_require(const gguf_ctx *g, const char *key, ng_error *err) {
    const gguf_kv *e = kv_get(g, key);
    if (!e) ng_error_set(err, "%s: key '%s' is missing", g->path, key);
    return e;
}

int gguf_get_u32(const gguf_ctx *g, const char *key, uint32_t *out, ng_error *err) {
    const gguf_kv *e = kv_require(g, key, err);
    int neg;
    uint64_t m;
    if (!e) return NG_ERR;
    if (kv_int(e, &neg, &m))
        return ng_error_set(err, "%s: key '%s': expected an integer, found %s", g->path, key,
                            vtype_name(e->type));
    if (neg || m > UINT32_MAX)
        return ng_error_set(err, "%s: key '%s': value %s%" PRIu64 " does not fit in u32", g->path, key,
                            neg ? "-" : "", m);
    *out = (uint32_t)m;
    return NG_OK;
}

int gguf_get_i64(const gguf_ctx *g, const char *key, int64_t *out, ng_error *err) {
    const gguf_kv *e = kv_require(g, key, err);
    int neg;
    uint64_t m;
    if (!e) return NG_ERR;
    if (kv_int(e, &neg, &m))
        return ng_error_set(err, "%s: key '%s': expected an integer, found %s", g->path, key,
                            vtype_name(e->type));
    if (!neg && m > INT64_MAX)
        return ng_error_set(err, "%s: key '%s': value %" PRIu64 " does not fit in i64", g->path, key, m);
    *out = neg ? (int64_t)(0 - m) : (int64_t)m;
    return NG_OK;
}

int gguf_get_f32(const gguf_ctx *g, const char *key, float *out, ng_error *err) {
    const gguf_kv *e = kv_require(g, key, err);
    if (!e) return NG_ERR;
    if (e->type == GGUF_F32) {
        memcpy(out, e->val, 4);
    } else if (e->type == GGUF_F64) {
        double d;
        memcpy(&d, e->val, 8);
        *out = (float)d;
    } else {
        return ng_error_set(err, "%s: key '%s': expected f32 or f64, found %s", g->path, key,
                            vtype_name(e->type));
    }
    return NG_OK;
}

int gguf_get_bool(const gguf_ctx *g, const char *key, int *out, ng_error *err) {
    const gguf_kv *e = kv_require(g, key, err);
    if (!e) return NG_ERR;
    if (e->type != GGUF_BOOL)
        return ng_error_set(err, "%s: key '%s': expected bool, found %s", g->path, key, vtype_name(e->type));
    *out = e->val[0] != 0;
    return NG_OK;
}

const void *gguf_get_scalar(const gguf_ctx *g, const char *key, gguf_vtype *type) {
    const gguf_kv *e = kv_get(g, key);
    if (!e || e->type == GGUF_STR || e->type == GGUF_ARR) return NULL;
    *type = e->type;
    return e->val;
}

const char *gguf_get_str(const gguf_ctx *g, const char *key) {
    const gguf_kv *e = kv_get(g, key);
    return e && e->type == GGUF_STR ? e->str : NULL;
}

const ng_str *gguf_get_arr_str(const gguf_ctx *g, const char *key, uint64_t *n) {
    const gguf_kv *e = kv_get(g, key);
    if (!e || e->type != GGUF_ARR || e->arr_type != GGUF_STR) return NULL;
    *n = e->n;
    return e->strs;
}

const void *gguf_get_arr_data(const gguf_ctx *g, const char *key, gguf_vtype *type, uint64_t *n) {
    const gguf_kv *e = kv_get(g, key);
    if (!e || e->type != GGUF_ARR || !e->data) return NULL;
    *type = e->arr_type;
    *n = e->n;
    return e->data;
}

int gguf_n_tensors(const gguf_ctx *g) { return g->n_t; }
int gguf_find_tensor(const gguf_ctx *g, const char *name) { return fmt_names_find(g->t_index, g->n_t, name); }
const ng_tensor *gguf_tensor(const gguf_ctx *g, int i) { return i >= 0 && i < g->n_t ? &g->t[i] : NULL; }

/* ---------------------------------------------------------------- writing */

typedef struct {
    char *name;
    ng_type type;
    int n_dims;
    int64_t ne[NG_MAX_DIMS];
    const void *data;
} gguf_wtensor;

struct gguf_writer {
    gguf_kv *kv;
    int n_kv, cap_kv;
    gguf_wtensor *t;
    int n_t, cap_t;
    char bad[256]; /* first misuse of the setters, reported by gguf_write */
};

gguf_writer *gguf_writer_new(void) { return xcalloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_kv; i++) kv_free(&w->kv[i]);
    for (int i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

/* The entry for key, emptied for a new value: replaced in place when present, else appended. */
static gguf_kv *w_slot(gguf_writer *w, const char *key, gguf_vtype type) {
    if (!key) {
        if (!w->bad[0]) snprintf(w->bad, sizeof w->bad, "a metadata key is NULL");
        key = "";
    }
    gguf_kv *e = NULL;
    for (int i = 0; i < w->n_kv && !e; i++)
        if (strcmp(w->kv[i].key, key) == 0) e = &w->kv[i];
    if (e) {
        char *k = e->key;
        e->key = NULL;
        kv_free(e);
        memset(e, 0, sizeof *e);
        e->key = k;
    } else {
        if (w->n_kv == w->cap_kv) {
            w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 16;
            w->kv = xrealloc(w->kv, (size_t)w->cap_kv * sizeof *w->kv);
        }
        e = &w->kv[w->n_kv++];
        memset(e, 0, sizeof *e);
        e->key = xstrdup(key);
    }
    e->type = type;
    return e;
}

void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    memcpy(w_slot(w, key, GGUF_U32)->val, &v, 4);
}
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v) {
    memcpy(w_slot(w, key, GGUF_I32)->val, &v, 4);
}
void gguf_set_f32(gguf_writer *w, const char *key, float v) { memcpy(w_slot(w, key, GGUF_F32)->val, &v, 4); }
void gguf_set_bool(gguf_writer *w, const char *key, int v) { w_slot(w, key, GGUF_BOOL)->val[0] = v != 0; }

void gguf_set_scalar(gguf_writer *w, const char *key, gguf_vtype type, const void *v) {
    if ((uint32_t)type > GGUF_F64 || type == GGUF_STR || type == GGUF_ARR) {
        if (!w->bad[0])
            snprintf(w->bad, sizeof w->bad, "key '%s': gguf_set_scalar with non-scalar type %d",
                     key ? key : "", (int)type);
        return;
    }
    gguf_kv *e = w_slot(w, key, type);
    memcpy(e->val, v, vtype_size(type));
    if (type == GGUF_BOOL) e->val[0] = e->val[0] != 0;
}

static void w_set_strn(gguf_writer *w, const char *key, const char *v, size_t n) {
    gguf_kv *e = w_slot(w, key, GGUF_STR);
    e->str = xmalloc(n + 1);
    if (n) memcpy(e->str, v, n);
    e->str[n] = 0;
    e->str_len = n;
}

void gguf_set_str(gguf_writer *w, const char *key, const char *v) {
    if (!v) {
        if (!w->bad[0]) snprintf(w->bad, sizeof w->bad, "key '%s': string value is NULL", key ? key : "");
        v = "";
    }
    w_set_strn(w, key, v, strlen(v));
}

void gguf_set_arr_str(gguf_writer *w, const char *key, const ng_str *v, uint64_t n) {
    gguf_kv *e = w_slot(w, key, GGUF_ARR);
    e->arr_type = GGUF_STR;
    e->n = n;
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) total += v[i].n + 1;
    e->strs = xcalloc(n ? n : 1, sizeof *e->strs);
    e->strbuf = xmalloc(total ? total : 1);
    size_t out = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (v[i].n) memcpy(e->strbuf + out, v[i].s, v[i].n);
        e->strbuf[out + v[i].n] = 0;
        e->strs[i] = (ng_str){e->strbuf + out, v[i].n};
        out += v[i].n + 1;
    }
}

void gguf_set_arr_data(gguf_writer *w, const char *key, gguf_vtype type, const void *v, uint64_t n) {
    gguf_kv *e = w_slot(w, key, GGUF_ARR);
    if ((uint32_t)type > GGUF_F64 || type == GGUF_STR || type == GGUF_ARR) {
        if (!w->bad[0])
            snprintf(w->bad, sizeof w->bad, "key '%s': gguf_set_arr_data with non-numeric element type %d",
                     e->key, (int)type);
        type = GGUF_U8;
        n = 0;
    }
    e->arr_type = type;
    e->n = n;
    size_t nb = (size_t)n * vtype_size(type);
    e->data = xmalloc(nb ? nb : 1);
    if (nb) memcpy(e->data, v, nb);
}

void gguf_copy_kv(gguf_writer *w, const gguf_ctx *g, const char *skip_prefix) {
    size_t sp = skip_prefix ? strlen(skip_prefix) : 0;
    for (int i = 0; i < g->n_kv; i++) {
        const gguf_kv *e = &g->kv[i];
        if (sp && strncmp(e->key, skip_prefix, sp) == 0) continue;
        if (e->type == GGUF_STR) {
            w_set_strn(w, e->key, e->str, e->str_len);
        } else if (e->type == GGUF_ARR && e->arr_type == GGUF_STR) {
            gguf_set_arr_str(w, e->key, e->strs, e->n);
        } else if (e->type == GGUF_ARR && e->arr_type != GGUF_ARR) {
            gguf_set_arr_data(w, e->key, e->arr_type, e->data, e->n);
        } else if (e->type == GGUF_ARR) {
            ng_debug("gguf: %s: key '%s' (nested array) not copied", g->path, e->key);
        } else {
            memcpy(w_slot(w, e->key, e->type)->val, e->val, 8);
        }
    }
}

void gguf_add_tensor(gguf_writer *w, const char *name, ng_type type, int n_dims, const int64_t *ne,
                     const void *data) {
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 16;
        w->t = xrealloc(w->t, (size_t)w->cap_t * sizeof *w->t);
    }
    gguf_wtensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name ? name : "");
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < NG_MAX_DIMS; d++) t->ne[d] = d < n_dims && ne ? ne[d] : 1;
    t->data = data;
    if (!name && !w->bad[0]) snprintf(w->bad, sizeof w->bad, "a tensor name is NULL");
}

/* Byte size of a writer tensor after validating what llama.cpp will check; 0 + err when bad. */
static int w_tensor_size(const gguf_wtensor *t, const char *path, size_t *out, ng_error *err) {
    if (strlen(t->name) >= GGUF_NAME_MAX)
        return ng_error_set(err, "%s: tensor '%s': name longer than %d bytes (llama.cpp's limit)", path,
                            t->name, GGUF_NAME_MAX - 1);
    if (t->n_dims < 1 || t->n_dims > NG_MAX_DIMS)
        return ng_error_set(err, "%s: tensor '%s': %d dimensions (must be 1..%d)", path, t->name, t->n_dims,
                            NG_MAX_DIMS);
    if (!ng_type_in_files(t->type))
        return ng_error_set(err, "%s: tensor '%s': unknown type %d", path, t->name, (int)t->type);
    uint64_t nb = (uint64_t)ng_type_size(t->type);
    for (int d = 0; d < NG_MAX_DIMS; d++) {
        if (t->ne[d] < 0)
            return ng_error_set(err, "%s: tensor '%s': ne[%d] = %" PRId64 " is negative", path, t->name, d,
                                t->ne[d]);
        uint64_t m = d == 0 ? (uint64_t)(t->ne[0] / ng_type_block(t->type)) : (uint64_t)t->ne[d];
        if (__builtin_mul_overflow(nb, m, &nb) || nb > SIZE_MAX / 2)
            return ng_error_set(err, "%s: tensor '%s': byte size overflows", path, t->name);
    }
    if (t->ne[0] % ng_type_block(t->type) != 0)
        return ng_error_set(err,
                            "%s: tensor '%s': ne[0] = %" PRId64 " is not a multiple of the %s block size %d",
                            path, t->name, t->ne[0], ng_type_name(t->type), ng_type_block(t->type));
    if (nb && !t->data) return ng_error_set(err, "%s: tensor '%s': data is NULL", path, t->name);
    *out = (size_t)nb;
    return NG_OK;
}

static void w_str(FILE *f, const char *s, size_t n) {
    uint64_t len = n;
    fwrite(&len, 8, 1, f);
    if (n) fwrite(s, 1, n, f);
}

static void w_kv(FILE *f, const gguf_kv *e) {
    uint32_t t = e->type;
    w_str(f, e->key, strlen(e->key));
    fwrite(&t, 4, 1, f);
    if (t == GGUF_STR) {
        w_str(f, e->str, e->str_len);
    } else if (t == GGUF_ARR) {
        uint32_t et = e->arr_type;
        fwrite(&et, 4, 1, f);
        fwrite(&e->n, 8, 1, f);
        if (et == GGUF_STR)
            for (uint64_t i = 0; i < e->n; i++) w_str(f, e->strs[i].s, e->strs[i].n);
        else if (e->n)
            fwrite(e->data, vtype_size(et), (size_t)e->n, f);
    } else {
        fwrite(e->val, vtype_size(t), 1, f);
    }
}

static void w_pad(FILE *f, uint64_t pos, size_t align) {
    static const uint8_t zeros[256];
    uint64_t pad = (align - pos % align) % align;
    while (pad > 0) {
        size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        fwrite(zeros, 1, k, f);
        pad -= k;
    }
}

int gguf_write(gguf_writer *w, const char *path, ng_error *err) {
    if (w->bad[0]) return ng_error_set(err, "%s: %s", path, w->bad);
    size_t align = GGUF_DEFAULT_ALIGNMENT;
    for (int i = 0; i < w->n_kv; i++) {
        const gguf_kv *e = &w->kv[i];
        if (strcmp(e->key, "general.alignment") != 0) continue;
        uint32_t v;
        memcpy(&v, e->val, 4);
        if (e->type != GGUF_U32 || v == 0 || (v & (v - 1)) != 0)
            return ng_error_set(err, "%s: key 'general.alignment': must be a u32 power of two", path);
        align = v;
    }
    size_t *sizes = xmalloc((size_t)(w->n_t ? w->n_t : 1) * sizeof *sizes);
    fmt_name *names = xmalloc((size_t)(w->n_t ? w->n_t : 1) * sizeof *names);
    char *tmp = NULL;
    FILE *f = NULL;
    int rc = NG_ERR;
    for (int i = 0; i < w->n_t; i++) {
        if (w_tensor_size(&w->t[i], path, &sizes[i], err)) goto err;
        names[i] = (fmt_name){w->t[i].name, i};
    }
    int d = fmt_names_sort(names, w->n_t);
    if (d >= 0) {
        ng_error_set(err, "%s: tensor '%s': added twice", path, names[d].name);
        goto err;
    }
    if (!(f = fmt_tmp_open(path, &tmp, err))) goto err;

    uint32_t version = 3;
    uint64_t n_t = (uint64_t)w->n_t, n_kv = (uint64_t)w->n_kv;
    fwrite("GGUF", 1, 4, f);
    fwrite(&version, 4, 1, f);
    fwrite(&n_t, 8, 1, f);
    fwrite(&n_kv, 8, 1, f);
    for (int i = 0; i < w->n_kv; i++) w_kv(f, &w->kv[i]);
    uint64_t off = 0;
    for (int i = 0; i < w->n_t; i++) {
        const gguf_wtensor *t = &w->t[i];
        uint32_t nd = (uint32_t)t->n_dims, ty = (uint32_t)t->type;
        w_str(f, t->name, strlen(t->name));
        fwrite(&nd, 4, 1, f);
        for (int k = 0; k < t->n_dims; k++) {
            uint64_t ne = (uint64_t)t->ne[k];
            fwrite(&ne, 8, 1, f);
        }
        fwrite(&ty, 4, 1, f);
        fwrite(&off, 8, 1, f);
        off += (sizes[i] + align - 1) / align * align;
    }
    w_pad(f, (uint64_t)ftello(f), align);
    for (int i = 0; i < w->n_t; i++) {
        if (sizes[i]) fwrite(w->t[i].data, 1, sizes[i], f);
        w_pad(f, sizes[i], align);
    }
    rc = fmt_tmp_commit(f, tmp, path, err);
    f = NULL;
err:
    if (f) fmt_tmp_abort(f, tmp);
    free(tmp);
    free(sizes);
    free(names);
    return rc;
}
