/* safetensors — reader (single file or sharded index) and writer (layout in safetensors.h).
 *
 * The JSON header is copied out of the mapping and parsed with cJSON; every entry is then
 * checked against the file: known dtype, rank <= 4, integral non-negative dims whose product
 * fits, data_offsets inside the data area and exactly shape * element size long, no two
 * tensors overlapping, no name twice (also across the shards of an index).
 *
 * The writer follows the reference implementation's conventions so its files load anywhere:
 * the header is padded with spaces to a multiple of 8 bytes, and tensors are laid out
 * contiguously, widest element type first, so every tensor starts aligned to its element. */
#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "formats/fmt_common.h"

#define ST_HEADER_MAX (100u << 20)      /* the reference implementation's limit */
#define ST_MAX_EXACT 9007199254740992.0 /* 2^53: JSON numbers beyond this lose integers */

typedef struct {
    char *path;
    const uint8_t *base;
    size_t size;
    int mapped;
} st_shard;

struct st_file {
    char *path;
    st_shard *shards;
    int n_shards;
    ng_tensor *t;
    int *t_shard;    /* shard of each tensor */
    void **t_copy;   /* aligned copy of a tensor whose bytes are misaligned in the file */
    uint64_t *t_off; /* data_offsets begin, for the overlap check */
    int n_t, cap_t;
    fmt_name *index;
    char **meta; /* key, value pairs */
    int n_meta, cap_meta;
};

static const struct {
    const char *name;
    ng_type type;
} DTYPES[] = {{"F64", NG_F64}, {"F32", NG_F32}, {"F16", NG_F16}, {"BF16", NG_BF16},
              {"I8", NG_I8},   {"I16", NG_I16}, {"I32", NG_I32}, {"I64", NG_I64}};

static int dtype_parse(const char *s) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (strcmp(DTYPES[i].name, s) == 0) return (int)DTYPES[i].type;
    return -1;
}

static const char *dtype_name(ng_type t) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].type == t) return DTYPES[i].name;
    return NULL;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_u64(const cJSON *x, uint64_t *out) {
    if (!cJSON_IsNumber(x)) return NG_ERR;
    double v = x->valuedouble;
    if (!(v >= 0 && v <= ST_MAX_EXACT) || v != (double)(uint64_t)v) return NG_ERR;
    *out = (uint64_t)v;
    return NG_OK;
}

static void add_meta(st_file *f, const char *k, const char *v) {
    if (st_metadata(f, k)) return; /* first shard wins */
    if (f->n_meta == f->cap_meta) {
        f->cap_meta = f->cap_meta ? 2 * f->cap_meta : 8;
        f->meta = xrealloc(f->meta, (size_t)f->cap_meta * 2 * sizeof *f->meta);
    }
    f->meta[2 * f->n_meta] = xstrdup(k);
    f->meta[2 * f->n_meta + 1] = xstrdup(v);
    f->n_meta++;
}

/* Validates one header entry and appends its tensor; data_len bytes of data start at data. */
static int parse_entry(st_file *f, int shard, const cJSON *e, const uint8_t *data, uint64_t data_len,
                       ng_error *err) {
    const char *path = f->shards[shard].path;
    char b[80];
    const char *nm = fmt_shown(e->string, strlen(e->string), b);
    if (!cJSON_IsObject(e)) return ng_error_set(err, "%s: tensor '%s': entry is not a JSON object", path, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return ng_error_set(err, "%s: tensor '%s': dtype missing or not a string", path, nm);
    int type = dtype_parse(dt->valuestring);
    if (type < 0) {
        char b2[80];
        return ng_error_set(
            err, "%s: tensor '%s': dtype '%s' is not supported (F64, F32, F16, BF16, I8, I16, I32, I64 are)",
            path, nm, fmt_shown(dt->valuestring, strlen(dt->valuestring), b2));
    }
    if (!cJSON_IsArray(shape))
        return ng_error_set(err, "%s: tensor '%s': shape missing or not an array", path, nm);
    int rank = cJSON_GetArraySize(shape);
    if (rank > NG_MAX_DIMS)
        return ng_error_set(err, "%s: tensor '%s': shape has %d dimensions (at most %d supported)", path, nm,
                            rank, NG_MAX_DIMS);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return ng_error_set(err, "%s: tensor '%s': data_offsets missing or not [begin, end]", path, nm);

    if (f->n_t == f->cap_t) {
        f->cap_t = f->cap_t ? 2 * f->cap_t : 64;
        f->t = xrealloc(f->t, (size_t)f->cap_t * sizeof *f->t);
        f->t_shard = xrealloc(f->t_shard, (size_t)f->cap_t * sizeof *f->t_shard);
        f->t_copy = xrealloc(f->t_copy, (size_t)f->cap_t * sizeof *f->t_copy);
        f->t_off = xrealloc(f->t_off, (size_t)f->cap_t * sizeof *f->t_off);
    }
    ng_tensor *t = &f->t[f->n_t];
    memset(t, 0, sizeof *t);
    f->t_shard[f->n_t] = shard;
    f->t_copy[f->n_t] = NULL;
    t->name = xstrdup(e->string);
    f->n_t++;
    t->type = (ng_type)type;
    t->n_dims = rank ? rank : 1; /* a scalar is a 1-element vector */
    for (int d = 0; d < NG_MAX_DIMS; d++) t->ne[d] = 1;
    uint64_t nel = 1;
    int d = 0;
    for (const cJSON *x = shape->child; x; x = x->next, d++) {
        uint64_t v;
        if (json_u64(x, &v))
            return ng_error_set(err, "%s: tensor '%s': shape[%d] is not an integer in [0, 2^53]", path, nm,
                                d);
        t->ne[rank - 1 - d] = (int64_t)v; /* PyTorch order is outermost first */
        if (__builtin_mul_overflow(nel, v, &nel) || nel > INT64_MAX)
            return ng_error_set(err, "%s: tensor '%s': shape has more elements than fit in 64 bits", path,
                                nm);
    }
    uint64_t nb;
    if (__builtin_mul_overflow(nel, (uint64_t)ng_type_size(t->type), &nb) || nb > SIZE_MAX)
        return ng_error_set(err, "%s: tensor '%s': byte size overflows", path, nm);
    t->nbytes = (size_t)nb;
    uint64_t begin, end;
    if (json_u64(offs->child, &begin) || json_u64(offs->child->next, &end))
        return ng_error_set(err, "%s: tensor '%s': data_offsets are not integers in [0, 2^53]", path, nm);
    if (begin > end || end > data_len)
        return ng_error_set(err,
                            "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                            "] outside the data area of %" PRIu64 " bytes",
                            path, nm, begin, end, data_len);
    if (end - begin != nb)
        return ng_error_set(err,
                            "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                            " bytes but shape and dtype %s need %" PRIu64,
                            path, nm, begin, end, end - begin, dt->valuestring, nb);
    t->data = (void *)(data + begin);
    f->t_off[f->n_t - 1] = begin;
    /* kernels read through typed pointers: copy a tensor the file leaves misaligned */
    if (nb && (uintptr_t)t->data % fmt_type_align(t->type) != 0) {
        f->t_copy[f->n_t - 1] = ng_aligned_alloc(t->nbytes);
        memcpy(f->t_copy[f->n_t - 1], t->data, t->nbytes);
        t->data = f->t_copy[f->n_t - 1];
    }
    return NG_OK;
}

/* Parses shard i (already mapped) and appends its tensors and metadata to f. */
static int parse_shard(st_file *f, int i, ng_error *err) {
    const st_shard *s = &f->shards[i];
    uint64_t hl;
    char *hdr = NULL;
    cJSON *root = NULL;
    fmt_span *spans = NULL;
    int first = f->n_t, rc = NG_ERR;
    if (s->size < 8)
        return ng_error_set(err, "%s: header length at byte 0: truncated (file has %zu bytes, needs 8)",
                            s->path, s->size);
    memcpy(&hl, s->base, 8);
    if (hl > s->size - 8)
        return ng_error_set(
            err, "%s: header length at byte 0: %" PRIu64 " runs past the end of the file (%zu bytes)",
            s->path, hl, s->size);
    if (hl > ST_HEADER_MAX)
        return ng_error_set(err, "%s: header length at byte 0: %" PRIu64 " bytes is over the %u-byte limit",
                            s->path, hl, ST_HEADER_MAX);
    /* a NUL-terminated copy: the mapping has no terminator and cJSON should not rely on one */
    hdr = xmalloc((size_t)hl + 1);
    if (hl) memcpy(hdr, s->base + 8, (size_t)hl);
    hdr[hl] = 0;
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hl, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + hl ? (size_t)(end - hdr) : 0;
        ng_error_set(err, "%s: header: invalid JSON near byte %zu", s->path, 8 + at);
        goto err;
    }
    for (const char *p = end; p < hdr + hl; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            ng_error_set(err, "%s: header: unexpected bytes after the JSON object at byte %zu", s->path,
                         8 + (size_t)(p - hdr));
            goto err;
        }
    if (!cJSON_IsObject(root)) {
        ng_error_set(err, "%s: header: not a JSON object", s->path);
        goto err;
    }
    const uint8_t *data = s->base + 8 + hl;
    uint64_t data_len = s->size - 8 - hl;
    int seen_meta = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++ || !cJSON_IsObject(e)) {
                ng_error_set(err, "%s: __metadata__: %s", s->path,
                             seen_meta > 1 ? "appears twice" : "not a JSON object");
                goto err;
            }
            for (const cJSON *m = e->child; m; m = m->next) {
                char b[80];
                if (!cJSON_IsString(m)) {
                    ng_error_set(err, "%s: __metadata__ key '%s': value is not a string", s->path,
                                 fmt_shown(m->string, strlen(m->string), b));
                    goto err;
                }
            }
            for (const cJSON *m = e->child; m; m = m->next) add_meta(f, m->string, m->valuestring);
            continue;
        }
        if (parse_entry(f, i, e, data, data_len, err)) goto err;
    }
    int n = f->n_t - first;
    spans = xmalloc((size_t)(n ? n : 1) * sizeof *spans);
    for (int k = 0; k < n; k++) {
        uint64_t b = f->t_off[first + k];
        spans[k] = (fmt_span){b, b + f->t[first + k].nbytes, first + k};
    }
    int o = fmt_spans_sort(spans, n);
    if (o >= 0) {
        char b1[80], b2[80];
        const char *x = f->t[spans[o].idx].name, *y = f->t[spans[o - 1].idx].name;
        ng_error_set(err,
                     "%s: tensor '%s': data [%" PRIu64 ", %" PRIu64 ") overlaps tensor '%s' [%" PRIu64
                     ", %" PRIu64 ")",
                     s->path, fmt_shown(x, strlen(x), b1), spans[o].begin, spans[o].end,
                     fmt_shown(y, strlen(y), b2), spans[o - 1].begin, spans[o - 1].end);
        goto err;
    }
    rc = NG_OK;
err:
    free(hdr);
    free(spans);
    cJSON_Delete(root);
    return rc;
}

static int add_shard(st_file *f, const char *path, const uint8_t *base, size_t size, int mapped) {
    f->shards = xrealloc(f->shards, (size_t)(f->n_shards + 1) * sizeof *f->shards);
    f->shards[f->n_shards] = (st_shard){xstrdup(path), base, size, mapped};
    return f->n_shards++;
}

/* Builds the name index; a name seen twice (in one header or across shards) is an error. */
static int build_index(st_file *f, ng_error *err) {
    f->index = xmalloc((size_t)(f->n_t ? f->n_t : 1) * sizeof *f->index);
    for (int i = 0; i < f->n_t; i++) f->index[i] = (fmt_name){f->t[i].name, i};
    int d = fmt_names_sort(f->index, f->n_t);
    if (d < 0) return NG_OK;
    char b[80];
    int a = f->index[d - 1].idx, c = f->index[d].idx;
    const char *nm = fmt_shown(f->t[c].name, strlen(f->t[c].name), b);
    if (f->t_shard[a] != f->t_shard[c])
        return ng_error_set(err, "%s: tensor '%s': present in both %s and %s", f->path, nm,
                            f->shards[f->t_shard[a]].path, f->shards[f->t_shard[c]].path);
    return ng_error_set(err, "%s: tensor '%s': duplicate tensor name", f->shards[f->t_shard[c]].path, nm);
}

st_file *st_open_mem(const void *buf, size_t size, const char *name, ng_error *err) {
    st_file *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(name);
    add_shard(f, name, buf, buf ? size : 0, 0);
    if (parse_shard(f, 0, err) || build_index(f, err)) {
        st_close(f);
        return NULL;
    }
    return f;
}

/* A shard name from an index must be a plain file name in the index's folder. */
static int shard_name_ok(const char *s) {
    return s[0] && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int open_index(st_file *f, ng_error *err) {
    size_t len;
    char *text = ng_read_file(f->path, &len, err), *dir = NULL, *sp = NULL;
    cJSON *root = NULL;
    int rc = NG_ERR;
    if (!text) return NG_ERR;
    root = cJSON_ParseWithLength(text, len);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root)) {
        ng_error_set(err, "%s: not a JSON object (invalid JSON?)", f->path);
        goto err;
    }
    if (!cJSON_IsObject(wm)) {
        ng_error_set(err, "%s: weight_map missing or not an object", f->path);
        goto err;
    }
    const char *slash = strrchr(f->path, '/');
    size_t dl = slash ? (size_t)(slash - f->path) + 1 : 0;
    dir = xmalloc(dl + 1);
    memcpy(dir, f->path, dl);
    dir[dl] = 0;
    char b[80], b2[80];
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            ng_error_set(err,
                         "%s: weight_map tensor '%s': value must be a shard file name in the same folder",
                         f->path, fmt_shown(e->string, strlen(e->string), b));
            goto err;
        }
        int known = 0;
        for (int s = 0; s < f->n_shards && !known; s++)
            known = strcmp(f->shards[s].path + dl, e->valuestring) == 0;
        if (known) continue;
        free(sp);
        sp = xmalloc(dl + strlen(e->valuestring) + 1);
        memcpy(sp, dir, dl);
        strcpy(sp + dl, e->valuestring);
        const uint8_t *base;
        size_t size;
        if (fmt_map(sp, &base, &size, err)) {
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            ng_error_set(err, "%s: weight_map tensor '%s': shard: %s", f->path,
                         fmt_shown(e->string, strlen(e->string), b), why);
            goto err;
        }
        int si = add_shard(f, sp, base, size, 1);
        if (parse_shard(f, si, err)) goto err;
    }
    if (build_index(f, err)) goto err;
    for (const cJSON *e = wm->child; e; e = e->next) {
        int ti = st_find(f, e->string);
        if (ti < 0 || strcmp(f->shards[f->t_shard[ti]].path + dl, e->valuestring) != 0) {
            ng_error_set(err, "%s: weight_map tensor '%s': not found in shard '%s'", f->path,
                         fmt_shown(e->string, strlen(e->string), b),
                         fmt_shown(e->valuestring, strlen(e->valuestring), b2));
            goto err;
        }
    }
    rc = NG_OK;
err:
    cJSON_Delete(root);
    free(text);
    free(dir);
    free(sp);
    return rc;
}

st_file *st_open(const char *path, ng_error *err) {
    st_file *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(path);
    size_t pl = strlen(path);
    if (pl >= 5 && strcmp(path + pl - 5, ".json") == 0) {
        if (open_index(f, err)) goto err;
        return f;
    }
    const uint8_t *base;
    size_t size;
    if (fmt_map(path, &base, &size, err)) goto err;
    add_shard(f, path, base, size, 1);
    if (parse_shard(f, 0, err) || build_index(f, err)) goto err;
    return f;
err:
    st_close(f);
    return NULL;
}

void st_close(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_t; i++) {
        free((char *)f->t[i].name);
        free(f->t_copy[i]);
    }
    for (int i = 0; i < f->n_shards; i++) {
        if (f->shards[i].mapped) fmt_unmap(f->shards[i].base, f->shards[i].size);
        free(f->shards[i].path);
    }
    for (int i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    free(f->shards);
    free(f->t);
    free(f->t_shard);
    free(f->t_copy);
    free(f->t_off);
    free(f->index);
    free(f->path);
    free(f);
}

int st_n_tensors(const st_file *f) { return f->n_t; }
int st_find(const st_file *f, const char *name) {
    return f->index ? fmt_names_find(f->index, f->n_t, name) : -1;
}
const ng_tensor *st_tensor(const st_file *f, int i) { return i >= 0 && i < f->n_t ? &f->t[i] : NULL; }

const char *st_metadata(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

/* ---------------------------------------------------------------- writing */

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_fmt(sbuf *b, const char *fmt, uint64_t v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, fmt, v);
    sb_put(b, tmp, (size_t)k);
}

/* A JSON string literal: quotes, backslashes and control characters escaped. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            sb_fmt(b, "\\u%04" PRIx64, c);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

int st_write(const char *path, const ng_tensor *tensors, int n, const char *const *meta_kv, int n_meta,
             ng_error *err) {
    int *order = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    size_t *sizes = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *sizes);
    fmt_name *names = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *names);
    sbuf h = {0};
    char *tmp = NULL;
    FILE *f = NULL;
    int rc = NG_ERR;
    for (int i = 0; i < n; i++) {
        const ng_tensor *t = &tensors[i];
        const char *nm = t->name ? t->name : "";
        if (!t->name || !t->name[0] || strcmp(nm, "__metadata__") == 0) {
            ng_error_set(err, "%s: tensor #%d: invalid name '%s'", path, i, nm);
            goto err;
        }
        if (!dtype_name(t->type)) {
            ng_error_set(err, "%s: tensor '%s': type %s has no safetensors dtype", path, nm,
                         ng_type_name(t->type));
            goto err;
        }
        if (t->n_dims < 1 || t->n_dims > NG_MAX_DIMS) {
            ng_error_set(err, "%s: tensor '%s': %d dimensions (must be 1..%d)", path, nm, t->n_dims,
                         NG_MAX_DIMS);
            goto err;
        }
        uint64_t nb = ng_type_size(t->type);
        for (int d = 0; d < NG_MAX_DIMS; d++)
            if (t->ne[d] < 0 || (d >= t->n_dims && t->ne[d] != 1) ||
                __builtin_mul_overflow(nb, (uint64_t)t->ne[d], &nb) || nb > (uint64_t)ST_MAX_EXACT) {
                ng_error_set(err, "%s: tensor '%s': invalid shape (ne[%d] = %" PRId64 ")", path, nm, d,
                             t->ne[d]);
                goto err;
            }
        if (t->nbytes != nb || (nb && !t->data)) {
            ng_error_set(err,
                         "%s: tensor '%s': nbytes %zu (data %s) does not match its shape (%" PRIu64 " bytes)",
                         path, nm, t->nbytes, t->data ? "set" : "NULL", nb);
            goto err;
        }
        sizes[i] = (size_t)nb;
        names[i] = (fmt_name){nm, i};
        order[i] = i;
    }
    int dup = fmt_names_sort(names, n);
    if (dup >= 0) {
        ng_error_set(err, "%s: tensor '%s': given twice", path, names[dup].name);
        goto err;
    }
    /* widest elements first (stable), so that contiguous data keeps every tensor aligned */
    for (int i = 1; i < n; i++) {
        int k = order[i], j = i;
        while (j > 0 && ng_type_size(tensors[order[j - 1]].type) < ng_type_size(tensors[k].type)) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    sb_put(&h, "{", 1);
    if (n_meta > 0) {
        sb_put(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < n_meta; i++) {
            if (!meta_kv[2 * i] || !meta_kv[2 * i + 1]) {
                ng_error_set(err, "%s: metadata pair #%d has a NULL key or value", path, i);
                goto err;
            }
            if (i) sb_put(&h, ",", 1);
            sb_json_str(&h, meta_kv[2 * i]);
            sb_put(&h, ":", 1);
            sb_json_str(&h, meta_kv[2 * i + 1]);
        }
        sb_put(&h, "}", 1);
    }
    uint64_t off = 0;
    for (int k = 0; k < n; k++) {
        const ng_tensor *t = &tensors[order[k]];
        if (k || n_meta > 0) sb_put(&h, ",", 1);
        sb_json_str(&h, t->name);
        sb_put(&h, ":{\"dtype\":", 10);
        sb_json_str(&h, dtype_name(t->type));
        sb_put(&h, ",\"shape\":[", 10);
        for (int d = t->n_dims - 1; d >= 0; d--)
            sb_fmt(&h, d ? "%" PRIu64 "," : "%" PRIu64, (uint64_t)t->ne[d]);
        sb_fmt(&h, "],\"data_offsets\":[%" PRIu64 ",", off);
        off += sizes[order[k]];
        sb_fmt(&h, "%" PRIu64 "]}", off);
    }
    sb_put(&h, "}", 1);
    while (h.n % 8) sb_put(&h, " ", 1);
    if (!(f = fmt_tmp_open(path, &tmp, err))) goto err;
    uint64_t hl = h.n;
    fwrite(&hl, 8, 1, f);
    fwrite(h.s, 1, h.n, f);
    for (int k = 0; k < n; k++)
        if (sizes[order[k]]) fwrite(tensors[order[k]].data, 1, sizes[order[k]], f);
    rc = fmt_tmp_commit(f, tmp, path, err);
    f = NULL;
err:
    if (f) fmt_tmp_abort(f, tmp);
    free(tmp);
    free(h.s);
    free(order);
    free(sizes);
    free(names);
    return rc;
}
