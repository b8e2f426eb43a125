/* spm — LLaMA's SentencePiece BPE, written to give exactly the ids of the `llama-tokenizer-js`
 * npm package (tests/testdata/llama_spm_cases.txt) and of SentencePiece / llama.cpp with the
 * real LLaMA scores. Owner: tokenizer.
 *
 * spm_encode:
 *   1. prepend " " when asked (add_dummy_prefix), write every " " as "▁" (U+2581);
 *   2. cut the text into characters: each valid UTF-8 sequence is one symbol, and so is each
 *      byte that does not start one (see "Invalid UTF-8"); group them into parts that no
 *      merge can cross (see spm_build_bigrams), so that the heap of 3. stays small;
 *   3. merge: a binary heap holds every adjacent pair whose concatenation is a mergeable piece
 *      (type normal or user-defined), keyed by that piece's score, highest first, leftmost on
 *      ties. The best pair is merged and the pairs it forms with its neighbours are pushed;
 *      entries made stale by an earlier merge are recognised and dropped when popped (a symbol
 *      only ever grows, so a pair is current iff both sides still have the lengths it was
 *      pushed with). A text of n characters costs O(n log n);
 *   4. each final symbol is its piece's id, or, when it is not a piece (only single characters
 *      can be that), its bytes' <0xNN> pieces (byte fallback), or <unk> for a vocabulary
 *      without all 256 byte pieces.
 *
 * Invalid UTF-8: a byte that does not start a valid, shortest-form UTF-8 sequence of a
 * non-surrogate code point <= U+10FFFF is a one-byte symbol. Pieces are UTF-8 (in any real
 * vocabulary), so it goes out as its <0xNN> piece, and decode gives the byte back: with byte
 * fallback, decode(encode(x)) == x for every byte string without "▁" (U+2581 shares its piece
 * with the space, so it decodes as a space, in the package and in SentencePiece alike).
 * Nothing is ever rejected, and no input can crash or overflow it (tests/fuzz/fuzz_spm.c).
 *
 * Differences from llama-tokenizer-js, where it has no defined answer or is out of scope: an
 * empty text gives [BOS] here when add_bos is set (the package returns []), invalid UTF-8
 * (a JS string cannot hold it), and decode, which is byte-exact here (the package's
 * TextDecoder replaces broken UTF-8 with U+FFFD). The package ranks a pair by its place in
 * Hugging Face's merge list rather than by a piece score; tools/reference/llama_vocab_to_gguf.js
 * turns that list into scores, and the fixture shows both rankings give the same ids. */
#include "tokenizer/spm.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum {
    SPM_TYPE_UNDEFINED = 0,
    SPM_TYPE_NORMAL = 1,
    SPM_TYPE_UNKNOWN = 2,
    SPM_TYPE_CONTROL = 3,
    SPM_TYPE_USER = 4,
    SPM_TYPE_UNUSED = 5,
    SPM_TYPE_BYTE = 6,
};

/* Bounds the number of pieces and their total bytes (LLaMA: 32,000 and 190 kB). */
#define SPM_MAX_PIECES (1 << 28)

/* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's stand-in for a space. */
#define SPM_SPACE "\xe2\x96\x81"
#define SPM_SPACE_LEN 3
/* What <unk> decodes to: SentencePiece's default unk_surface " ⁇ ". */
#define SPM_UNK_SURFACE " \xe2\x81\x87 "

struct spm {
    int n;
    char *text;         /* pieces as given (SentencePiece form, "▁the"), concatenated */
    uint32_t *text_off; /* n + 1 offsets into text */
    char *raw;          /* the bytes each piece decodes to, concatenated, NUL-terminated */
    uint32_t *raw_off;  /* n + 1 offsets into raw */
    float *scores;
    int32_t *types;
    int32_t *slot; /* open addressing: piece -> id (first of duplicates), -1 empty */
    uint32_t mask;
    uint32_t max_merge_len; /* longest mergeable piece in bytes: longer pairs are not looked up */
    /* open addressing: a << 32 | b for each pair of code points "ab" inside a mergeable piece
     * (SPM_NO_BIGRAM when empty); no merge crosses a boundary between characters not in here */
    uint64_t *bigram;
    uint32_t bigram_mask;
    bool byte_fallback; /* all 256 <0xNN> pieces exist */
    int byte_id[256];
    int bos, eos, unk;
};

/* ---- pieces ------------------------------------------------------------------------------ */

static uint32_t spm_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int spm_piece_id(const spm *t, const char *s, size_t n) {
    for (uint32_t h = spm_hash(s, n) & t->mask;; h = (h + 1) & t->mask) {
        int32_t id = t->slot[h];
        if (id < 0) return -1;
        uint32_t off = t->text_off[id];
        if (t->text_off[id + 1] - off == n && memcmp(t->text + off, s, n) == 0) return id;
    }
}

static bool spm_mergeable(int32_t type) { return type == SPM_TYPE_NORMAL || type == SPM_TYPE_USER; }

/* Id of a piece that text can become (normal or user-defined), or -1. */
static int spm_text_id(const spm *t, const char *s, size_t n) {
    int id = spm_piece_id(t, s, n);
    return id >= 0 && spm_mergeable(t->types[id]) ? id : -1;
}

/* 0..255 when s is "<0xNN>" (upper-case hex, as SentencePiece writes byte pieces), else -1. */
static int spm_byte_piece(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | d;
    }
    return v;
}

static bool spm_is(const ng_str *p, const char *lit) {
    return p->n == strlen(lit) && memcmp(p->s, lit, p->n) == 0;
}

static int32_t spm_type_by_text(const ng_str *p) {
    if (spm_is(p, "<unk>")) return SPM_TYPE_UNKNOWN;
    if (spm_is(p, "<s>") || spm_is(p, "</s>")) return SPM_TYPE_CONTROL;
    if (spm_byte_piece(p->s, p->n) >= 0) return SPM_TYPE_BYTE;
    return SPM_TYPE_NORMAL;
}

/* Writes the bytes piece p of type type decodes to into out (NULL: only counts); returns n. */
static size_t spm_raw_bytes(const ng_str *p, int32_t type, char *out) {
    if (type == SPM_TYPE_CONTROL) return 0;
    if (type == SPM_TYPE_UNKNOWN) {
        if (out) memcpy(out, SPM_UNK_SURFACE, strlen(SPM_UNK_SURFACE));
        return strlen(SPM_UNK_SURFACE);
    }
    int b = type == SPM_TYPE_BYTE ? spm_byte_piece(p->s, p->n) : -1;
    if (b >= 0) {
        if (out) out[0] = (char)b;
        return 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < p->n;) {
        if (p->n - i >= SPM_SPACE_LEN && memcmp(p->s + i, SPM_SPACE, SPM_SPACE_LEN) == 0) {
            if (out) out[n] = ' ';
            i += SPM_SPACE_LEN;
        } else {
            if (out) out[n] = p->s[i];
            i++;
        }
        n++;
    }
    return n;
}

/* Length of the character at s[0..n) (n >= 1) and its code point in *cp: a valid, shortest-form
 * UTF-8 sequence of a non-surrogate code point <= U+10FFFF, or else the one byte at s, with
 * *cp = SPM_BAD_BYTE + that byte (no piece holds such a character). */
#define SPM_BAD_BYTE 0x110000u
static uint32_t spm_next_char(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    *cp = c;
    if (c < 0x80) return 1;
    *cp = SPM_BAD_BYTE + c;
    uint32_t len, v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 1;
    }
    if (len > n) return 1;
    for (uint32_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 1;
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 1;
    *cp = v;
    return len;
}

/* ---- character bigrams ------------------------------------------------------------------- */

/* Merging is local: a merge joins two adjacent symbols into a piece, so it can only cross the
 * boundary between characters a and b when some piece holds "ab". Cutting the text at every
 * other boundary and merging each part on its own gives the same result (no candidate pair
 * ever spans a cut, and within a part the order by score, then position, is unchanged), and
 * keeps each heap small: for English a part is about a word. */
#define SPM_NO_BIGRAM UINT64_MAX

static uint32_t spm_hash_u64(uint64_t k) { return (uint32_t)((k * 0x9E3779B97F4A7C15ull) >> 32); }

static bool spm_has_bigram(const spm *t, uint32_t a, uint32_t b) {
    uint64_t k = (uint64_t)a << 32 | b;
    for (uint32_t h = spm_hash_u64(k) & t->bigram_mask;; h = (h + 1) & t->bigram_mask) {
        if (t->bigram[h] == k) return true;
        if (t->bigram[h] == SPM_NO_BIGRAM) return false;
    }
}

/* Records the character bigrams of every mergeable piece. */
static void spm_build_bigrams(spm *t) {
    size_t bound = 0; /* bigrams counted with repeats: at most characters minus pieces */
    for (int id = 0; id < t->n; id++) {
        if (!spm_mergeable(t->types[id])) continue;
        const unsigned char *p = (const unsigned char *)t->text + t->text_off[id];
        size_t n = t->text_off[id + 1] - t->text_off[id];
        uint32_t cp;
        for (size_t i = n ? spm_next_char(p, n, &cp) : n; i < n; bound++)
            i += spm_next_char(p + i, n - i, &cp);
    }
    uint32_t cap = 16;
    while (cap < 2 * bound) cap *= 2;
    t->bigram = xmalloc(cap * sizeof *t->bigram);
    t->bigram_mask = cap - 1;
    memset(t->bigram, 0xFF, cap * sizeof *t->bigram);
    for (int id = 0; id < t->n; id++) {
        if (!spm_mergeable(t->types[id])) continue;
        const unsigned char *p = (const unsigned char *)t->text + t->text_off[id];
        size_t n = t->text_off[id + 1] - t->text_off[id];
        if (n == 0) continue;
        uint32_t prev, cp;
        for (size_t i = spm_next_char(p, n, &prev); i < n; prev = cp) {
            i += spm_next_char(p + i, n - i, &cp);
            uint64_t k = (uint64_t)prev << 32 | cp;
            uint32_t h = spm_hash_u64(k) & t->bigram_mask;
            while (t->bigram[h] != SPM_NO_BIGRAM && t->bigram[h] != k) h = (h + 1) & t->bigram_mask;
            t->bigram[h] = k;
        }
    }
}

/* ---- creation ---------------------------------------------------------------------------- */

void spm_free(spm *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->raw);
    free(t->raw_off);
    free(t->scores);
    free(t->types);
    free(t->slot);
    free(t->bigram);
    free(t);
}

/* Owns nothing of the caller's: pieces, scores and types are copied. */
spm *spm_new(const ng_str *pieces, const float *scores, const int32_t *types, int n, ng_error *err) {
    if (n <= 0 || !pieces || !scores) {
        ng_error_set(err, "spm: empty vocabulary (%d pieces)", n);
        return NULL;
    }
    if (n > SPM_MAX_PIECES) { /* keeps the hash tables' sizes in 32 bits */
        ng_error_set(err, "spm: %d pieces, more than %d", n, SPM_MAX_PIECES);
        return NULL;
    }
    size_t text_len = 0, raw_len = 0;
    for (int i = 0; i < n; i++) {
        int32_t ty = types ? types[i] : spm_type_by_text(&pieces[i]);
        if (ty < SPM_TYPE_UNDEFINED || ty > SPM_TYPE_BYTE) {
            ng_error_set(err, "spm: piece %d: token type %d is not one of 0..6", i, (int)ty);
            return NULL;
        }
        if (isnan(scores[i])) {
            ng_error_set(err, "spm: piece %d: score is NaN", i);
            return NULL;
        }
        if (ty == SPM_TYPE_BYTE && spm_byte_piece(pieces[i].s, pieces[i].n) < 0) {
            ng_error_set(err, "spm: piece %d: a byte piece must read <0xNN>, not \"%.*s\"", i,
                         (int)(pieces[i].n < 40 ? pieces[i].n : 40), pieces[i].s);
            return NULL;
        }
        text_len += pieces[i].n;
        raw_len += spm_raw_bytes(&pieces[i], ty, NULL);
        if (text_len > SPM_MAX_PIECES || raw_len > SPM_MAX_PIECES) {
            ng_error_set(err, "spm: pieces hold more than %d bytes", SPM_MAX_PIECES);
            return NULL;
        }
    }

    spm *t = xcalloc(1, sizeof *t);
    t->n = n;
    t->text = xmalloc(text_len + 1);
    t->text_off = xmalloc(((size_t)n + 1) * sizeof *t->text_off);
    t->raw = xmalloc(raw_len + 1);
    t->raw_off = xmalloc(((size_t)n + 1) * sizeof *t->raw_off);
    t->scores = xmalloc((size_t)n * sizeof *t->scores);
    t->types = xmalloc((size_t)n * sizeof *t->types);
    uint32_t cap = 1;
    while (cap < 2 * (uint32_t)n) cap *= 2;
    t->slot = xmalloc(cap * sizeof *t->slot);
    t->mask = cap - 1;
    memset(t->slot, 0xFF, cap * sizeof *t->slot);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    t->bos = t->eos = t->unk = -1;

    size_t to = 0, ro = 0;
    for (int i = 0; i < n; i++) {
        const ng_str *p = &pieces[i];
        int32_t ty = types ? types[i] : spm_type_by_text(p);
        t->types[i] = ty;
        t->scores[i] = scores[i];
        t->text_off[i] = (uint32_t)to;
        if (p->n) memcpy(t->text + to, p->s, p->n);
        to += p->n;
        t->raw_off[i] = (uint32_t)ro;
        ro += spm_raw_bytes(p, ty, t->raw + ro);
        t->text_off[i + 1] = (uint32_t)to; /* spm_piece_id reads it below */
        /* the first of duplicate pieces keeps the text, as a lookup can give only one id */
        if (spm_piece_id(t, p->s, p->n) < 0) {
            uint32_t h = spm_hash(p->s, p->n) & t->mask;
            while (t->slot[h] >= 0) h = (h + 1) & t->mask;
            t->slot[h] = i;
        }
        if (spm_mergeable(ty) && p->n > t->max_merge_len) t->max_merge_len = (uint32_t)p->n;
        int b = ty == SPM_TYPE_BYTE ? spm_byte_piece(p->s, p->n) : -1;
        if (b >= 0 && t->byte_id[b] < 0) t->byte_id[b] = i;
        if (ty == SPM_TYPE_UNKNOWN && t->unk < 0) t->unk = i;
        if (ty == SPM_TYPE_CONTROL && t->bos < 0 && spm_is(p, "<s>")) t->bos = i;
        if (ty == SPM_TYPE_CONTROL && t->eos < 0 && spm_is(p, "</s>")) t->eos = i;
    }
    t->text[to] = 0;
    t->raw[ro] = 0;
    spm_build_bigrams(t);
    t->raw_off[n] = (uint32_t)ro;
    t->byte_fallback = true;
    for (int b = 0; b < 256; b++) t->byte_fallback &= t->byte_id[b] >= 0;
    if (!t->byte_fallback && t->unk < 0) {
        ng_error_set(err, "spm: the vocabulary has neither all 256 byte pieces <0x00>..<0xFF> nor an <unk> "
                          "piece, so some text could not be encoded");
        spm_free(t);
        return NULL;
    }
    return t;
}

/* Puts the file name in front of a message from spm_new. */
static void spm_prefix_error(ng_error *err, const char *path) {
    if (!err) return;
    char inner[sizeof err->msg];
    snprintf(inner, sizeof inner, "%s", err->msg);
    ng_error_set(err, "%s: %s", path, inner);
}

/* ---- llama2.c tokenizer.bin -------------------------------------------------------------- */

static int32_t spm_rd_i32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}

static float spm_rd_f32(const unsigned char *p) {
    int32_t v = spm_rd_i32(p);
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}

/* llama2.c's export writes pieces decoded: " " for "▁", and "\n<s>\n" / "\n</s>\n" for the
 * control pieces. Puts them back into SentencePiece form (a heap copy in *out). */
static ng_str spm_from_llama2c_piece(const char *s, size_t n, char **out) {
    static const char *const ctrl[][2] = {{"\n<s>\n", "<s>"}, {"\n</s>\n", "</s>"}};
    for (int k = 0; k < 2; k++) {
        if (n == strlen(ctrl[k][0]) && memcmp(s, ctrl[k][0], n) == 0) {
            *out = xstrdup(ctrl[k][1]);
            return (ng_str){*out, strlen(*out)};
        }
    }
    char *d = xmalloc(n * SPM_SPACE_LEN + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(d + m, SPM_SPACE, SPM_SPACE_LEN);
            m += SPM_SPACE_LEN;
        } else {
            d[m++] = s[i];
        }
    }
    *out = d;
    return (ng_str){d, m};
}

spm *spm_load_llama2c(const char *path, int n_vocab, ng_error *err) {
    size_t size;
    char *buf = ng_read_file(path, &size, err);
    if (!buf) return NULL;
    const unsigned char *u = (const unsigned char *)buf;
    spm *t = NULL;
    ng_str *pieces = NULL;
    char **copies = NULL;
    float *scores = NULL;
    int got = 0;
    if (n_vocab <= 0) {
        ng_error_set(err, "%s: vocabulary size %d must be positive", path, n_vocab);
        goto done;
    }
    if (size < 4) {
        ng_error_set(err, "%s: %zu bytes, too short for the int32 max_token_length header", path, size);
        goto done;
    }
    int32_t max_len = spm_rd_i32(u);
    if (max_len <= 0) {
        ng_error_set(err, "%s: max_token_length %d must be positive", path, (int)max_len);
        goto done;
    }
    /* each piece takes at least 8 bytes: refuse before allocating for a huge n_vocab */
    if ((size_t)n_vocab > (size - 4) / 8) {
        ng_error_set(err, "%s: %d pieces asked for, but %zu bytes hold at most %zu", path, n_vocab, size,
                     (size - 4) / 8);
        goto done;
    }
    pieces = xmalloc((size_t)n_vocab * sizeof *pieces);
    copies = xcalloc((size_t)n_vocab, sizeof *copies);
    scores = xmalloc((size_t)n_vocab * sizeof *scores);
    size_t pos = 4;
    for (; got < n_vocab; got++) {
        if (size - pos < 8) {
            ng_error_set(err, "%s: piece %d of %d: truncated at byte %zu (score and length need 8 bytes)",
                         path, got, n_vocab, pos);
            goto done;
        }
        scores[got] = spm_rd_f32(u + pos);
        int32_t len = spm_rd_i32(u + pos + 4);
        pos += 8;
        if (len < 0 || len > max_len) {
            ng_error_set(err, "%s: piece %d of %d at byte %zu: length %d is outside 0..max_token_length %d",
                         path, got, n_vocab, pos - 4, (int)len, (int)max_len);
            goto done;
        }
        if ((size_t)len > size - pos) {
            ng_error_set(err,
                         "%s: piece %d of %d: %d bytes at byte %zu run past the end of the file (%zu bytes)",
                         path, got, n_vocab, (int)len, pos, size);
            goto done;
        }
        if (isnan(scores[got])) {
            ng_error_set(err, "%s: piece %d of %d: score is NaN", path, got, n_vocab);
            goto done;
        }
        pieces[got] = spm_from_llama2c_piece(buf + pos, (size_t)len, &copies[got]);
        pos += (size_t)len;
    }
    t = spm_new(pieces, scores, NULL, n_vocab, err);
    if (!t) spm_prefix_error(err, path);
done:
    for (int i = 0; i < got; i++) free(copies[i]);
    free(copies);
    free(pieces);
    free(scores);
    free(buf);
    return t;
}

/* ---- GGUF -------------------------------------------------------------------------------- */

/* An optional id key: absent leaves *id alone; present must be an integer in 0..n-1. */
static int spm_gguf_id(const gguf_ctx *g, const char *key, int n, int *id, ng_error *err) {
    if (gguf_find_key(g, key) < 0) return NG_OK;
    int64_t v;
    if (gguf_get_i64(g, key, &v, err)) return NG_ERR;
    if (v < 0 || v >= n)
        return ng_error_set(err, "%s: key '%s': id %lld is outside the vocabulary (0..%d)", gguf_path(g), key,
                            (long long)v, n - 1);
    *id = (int)v;
    return NG_OK;
}

spm *spm_from_gguf(const gguf_ctx *g, ng_error *err) {
    const char *path = gguf_path(g);
    const char *model = gguf_get_str(g, "tokenizer.ggml.model");
    if (!model || strcmp(model, "llama") != 0) {
        ng_error_set(err, "%s: key 'tokenizer.ggml.model' is %s%s%s, not \"llama\" (SentencePiece)", path,
                     model ? "\"" : "", model ? model : "absent", model ? "\"" : "");
        return NULL;
    }
    uint64_t n = 0, n_scores = 0, n_types = 0;
    const ng_str *pieces = gguf_get_arr_str(g, "tokenizer.ggml.tokens", &n);
    if (!pieces || n == 0 || n > INT32_MAX) {
        ng_error_set(err, "%s: key 'tokenizer.ggml.tokens' must be a non-empty string array", path);
        return NULL;
    }
    gguf_vtype ty;
    const float *scores = gguf_get_arr_data(g, "tokenizer.ggml.scores", &ty, &n_scores);
    if (!scores || ty != GGUF_F32 || n_scores != n) {
        ng_error_set(err, "%s: key 'tokenizer.ggml.scores' must be an f32 array of %llu elements", path,
                     (unsigned long long)n);
        return NULL;
    }
    const int32_t *types = NULL;
    if (gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        types = gguf_get_arr_data(g, "tokenizer.ggml.token_type", &ty, &n_types);
        if (!types || ty != GGUF_I32 || n_types != n) {
            ng_error_set(err, "%s: key 'tokenizer.ggml.token_type' must be an i32 array of %llu elements",
                         path, (unsigned long long)n);
            return NULL;
        }
    }
    spm *t = spm_new(pieces, scores, types, (int)n, err);
    if (!t) {
        spm_prefix_error(err, path);
        return NULL;
    }
    if (spm_gguf_id(g, "tokenizer.ggml.bos_token_id", t->n, &t->bos, err) ||
        spm_gguf_id(g, "tokenizer.ggml.eos_token_id", t->n, &t->eos, err) ||
        spm_gguf_id(g, "tokenizer.ggml.unknown_token_id", t->n, &t->unk, err)) {
        spm_free(t);
        return NULL;
    }
    return t;
}

/* ---- accessors --------------------------------------------------------------------------- */

int spm_n_vocab(const spm *t) { return t->n; }
int spm_bos(const spm *t) { return t->bos; }
int spm_eos(const spm *t) { return t->eos; }
int spm_unk(const spm *t) { return t->unk; }

const char *spm_piece(const spm *t, int id, size_t *len) {
    if (id < 0 || id >= t->n) return NULL;
    *len = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}

float spm_score(const spm *t, int id) { return id >= 0 && id < t->n ? t->scores[id] : NAN; }
int32_t spm_type(const spm *t, int id) { return id >= 0 && id < t->n ? t->types[id] : -1; }

const char *spm_token_bytes(const spm *t, int id, size_t *len) {
    if (id < 0 || id >= t->n) return NULL;
    *len = t->raw_off[id + 1] - t->raw_off[id];
    return t->raw + t->raw_off[id];
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* A symbol: the bytes buf[start, start + n) of the prepared text; n == 0 once merged away. */
typedef struct {
    uint32_t start, n;
    int32_t prev, next; /* -1 at the ends */
} spm_sym;

/* A candidate merge of symbols left and right (adjacent when pushed); size = their lengths. */
typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
} spm_pair;

typedef struct {
    spm_pair *a;
    size_t n, cap;
} spm_heap;

/* Pops higher scores first; among equal scores the leftmost pair (SentencePiece, llama.cpp). */
static bool spm_before(const spm_pair *x, const spm_pair *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static void spm_heap_push(spm_heap *h, spm_pair p) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 256;
        h->a = xrealloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->n++;
    while (i > 0 && spm_before(&p, &h->a[(i - 1) / 2])) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = p;
}

static spm_pair spm_heap_pop(spm_heap *h) {
    spm_pair top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && spm_before(&h->a[c + 1], &h->a[c])) c++;
        if (!spm_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

static void spm_try_pair(const spm *t, const char *buf, const spm_sym *sym, int32_t l, int32_t r,
                         spm_heap *h) {
    if (l < 0 || r < 0) return;
    uint32_t size = sym[l].n + sym[r].n;
    if (size > t->max_merge_len) return;
    int id = spm_text_id(t, buf + sym[l].start, size);
    if (id >= 0) spm_heap_push(h, (spm_pair){t->scores[id], l, r, size});
}

/* The ids of one final symbol: its piece, else byte fallback, else <unk>. */
static int spm_emit(const spm *t, const char *s, uint32_t n, int *out) {
    int id = spm_text_id(t, s, n);
    if (id >= 0) {
        out[0] = id;
        return 1;
    }
    if (!t->byte_fallback) {
        out[0] = t->unk;
        return 1;
    }
    for (uint32_t i = 0; i < n; i++) out[i] = t->byte_id[(unsigned char)s[i]];
    return (int)n;
}

int *spm_encode(const spm *t, const char *text, size_t len, int add_bos, int add_space, int *n_out) {
    *n_out = 0;
    if (len > SPM_MAX_TEXT) return NULL;
    bool bos = add_bos && t->bos >= 0;
    if (len == 0) {
        int *out = xmalloc(sizeof *out);
        if (bos) out[0] = t->bos;
        *n_out = bos;
        return out;
    }

    /* 1. the text with the dummy prefix and every space as "▁" */
    char *buf = xmalloc((len + 1) * SPM_SPACE_LEN);
    size_t m = 0;
    if (add_space) {
        memcpy(buf, SPM_SPACE, SPM_SPACE_LEN);
        m = SPM_SPACE_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + m, SPM_SPACE, SPM_SPACE_LEN);
            m += SPM_SPACE_LEN;
        } else {
            buf[m++] = text[i];
        }
    }

    /* output: at most one id per byte of buf (a "▁" that is no piece takes three), and BOS */
    int *out = xmalloc((m + 1) * sizeof *out);
    int n = 0;
    if (bos) out[n++] = t->bos;

    /* 2. one symbol per character, cut into parts that no merge can cross (see
     *    spm_build_bigrams); a part has at most one symbol per byte of text, plus the dummy
     *    space. Each part is merged (3.) and written out (4.) before the next. */
    spm_sym *sym = xmalloc((len + 1) * sizeof *sym);
    spm_heap h = {0};
    uint32_t cp;
    uint32_t cl = spm_next_char((const unsigned char *)buf, m, &cp);
    for (size_t i = 0; i < m;) {
        int32_t n_sym = 0;
        for (;;) {
            sym[n_sym] = (spm_sym){(uint32_t)i, cl, n_sym - 1, n_sym + 1};
            n_sym++;
            i += cl;
            if (i >= m) break;
            uint32_t prev = cp;
            cl = spm_next_char((const unsigned char *)buf + i, m - i, &cp);
            if (!spm_has_bigram(t, prev, cp)) break;
        }
        sym[n_sym - 1].next = -1;

        /* 3. merge the best pair until none is left */
        for (int32_t k = 0; k + 1 < n_sym; k++) spm_try_pair(t, buf, sym, k, k + 1, &h);
        while (h.n) {
            spm_pair p = spm_heap_pop(&h);
            spm_sym *l = &sym[p.left], *r = &sym[p.right];
            if (l->n == 0 || r->n == 0 || l->n + r->n != p.size) continue; /* stale */
            l->n += r->n;
            r->n = 0;
            l->next = r->next;
            if (r->next >= 0) sym[r->next].prev = p.left;
            spm_try_pair(t, buf, sym, l->prev, p.left, &h);
            spm_try_pair(t, buf, sym, p.left, l->next, &h);
        }

        /* 4. ids */
        for (int32_t k = 0; k >= 0; k = sym[k].next) n += spm_emit(t, buf + sym[k].start, sym[k].n, out + n);
    }
    free(h.a);
    free(sym);
    free(buf);
    *n_out = n;
    return out;
}

/* ---- decoding ---------------------------------------------------------------------------- */

char *spm_decode(const spm *t, const int *ids, int n, int strip_space, size_t *len, ng_error *err) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n) {
            ng_error_set(err, "spm: id %d at position %d is outside the vocabulary (0..%d)", ids[i], i,
                         t->n - 1);
            return NULL;
        }
        total += t->raw_off[ids[i] + 1] - t->raw_off[ids[i]];
    }
    char *out = xmalloc(total + 1);
    size_t m = 0;
    for (int i = 0; i < n; i++) {
        size_t k = t->raw_off[ids[i] + 1] - t->raw_off[ids[i]];
        memcpy(out + m, t->raw + t->raw_off[ids[i]], k);
        m += k;
    }
    size_t skip = strip_space && m > 0 && out[0] == ' ';
    memmove(out, out + skip, m - skip);
    m -= skip;
    out[m] = 0;
    *len = m;
    return out;
}
