/* bpe — GPT-2 byte-level BPE, written to give exactly the ids of the `gpt-3-encoder` npm
 * package (the reference used by tests/testdata/gpt2_bpe_cases.txt). Owner: tokenizer.
 *
 * Pipeline of bpe_encode:
 *   1. split the text into pieces with GPT-2's pattern (bpe_piece_end, a hand-written matcher
 *      with the semantics of the JavaScript /.../gu regex, classes from unicode_tables.h);
 *   2. map each byte of a piece to its single-byte token (GPT-2's byte alphabet);
 *   3. merge adjacent symbols by rank (bpe_merge_piece) and append the ids.
 *
 * Invalid UTF-8: each byte that does not start a valid, shortest-form UTF-8 sequence of a
 * non-surrogate code point <= U+10FFFF is one code point of class "other" (not \s, \p{L},
 * \p{N}). It therefore joins a run of punctuation/symbols, is tokenized byte-level like any
 * other byte, and decodes back to itself, so decode(encode(x)) == x for every byte string.
 *
 * Two quirks of gpt-3-encoder are reproduced on purpose, because the goal is identical ids:
 *   - Its merge table is a JS object keyed by the string "A,B". A pair (X, Y) of the word gets
 *     the rank of the merge whose key equals X + "," + Y, so when a merge's parts contain
 *     commas, other splits of its key at a comma act as that merge too (e.g. the merge
 *     '"' + ',"' also fires for the pair '",' + '"'; both give the same token). Later merges
 *     with the same key win. Such an alias is only kept when X + Y is a token; where it is not,
 *     gpt-3-encoder would emit an undefined id (this never happens with GPT-2's files).
 *   - Each round merges every occurrence, left to right, of ONE pair: the last pair in the word
 *     having the lowest rank. Pairs created in a round wait for the next round.
 * Both can only matter with commas or badly ordered merge files: with GPT-2's files no text is
 * known where they change the ids (every string of up to 5 ASCII punctuation characters was
 * compared with plain BPE). The rounds run on a heap, so a piece of n bytes costs O(n log n).
 *
 * Differences from gpt-3-encoder, where it has no defined answer: invalid UTF-8 (above; a JS
 * string cannot hold it), a merges file without a "#version" first line (its first line is a
 * merge here, not dropped), a piece over 256 MiB (cut), and decode, which is byte-exact here
 * (its TextDecoder drops a leading U+FEFF and replaces broken UTF-8 with U+FFFD). */
#include "tokenizer/bpe.h"

#include "tokenizer/unicode_tables.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Code points of GPT-2's byte alphabet are all below this (256 + 68 remapped bytes). */
#define BPE_ALPHABET_END 0x144

struct bpe {
    int n_vocab;
    char *text;         /* token strings (byte alphabet), concatenated */
    uint32_t *text_off; /* n_vocab + 1 offsets into text */
    char *raw;          /* the bytes each token stands for, concatenated, NUL-terminated */
    uint32_t *raw_off;  /* n_vocab + 1 offsets into raw */
    int32_t *str_slot;  /* open addressing: token string -> id, -1 empty */
    uint32_t str_mask;
    struct bpe_pair *pair_slot; /* open addressing: (left id, right id) -> rank, result */
    int n_merges;
    char *merge_text;     /* the merges as given ("A B"), concatenated, to write them out again */
    uint32_t *merge_off;  /* n_merges + 1 offsets into merge_text */
    uint32_t pair_mask;
    int byte_id[256]; /* id of the one-symbol token of each byte */
};

struct bpe_pair {
    uint64_t key; /* left << 32 | right; BPE_PAIR_EMPTY when free */
    int32_t rank, result;
};
#define BPE_PAIR_EMPTY UINT64_MAX

/* ---- byte alphabet -------------------------------------------------------------------- */

/* GPT-2 maps printable Latin-1 bytes to themselves and the other 68 bytes, in order, to
 * U+0100.. so that every token string is printable and free of spaces. */
static void bpe_byte_alphabet(uint32_t byte_cp[256], int cp_byte[BPE_ALPHABET_END]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    for (int c = 0; c < BPE_ALPHABET_END; c++) cp_byte[c] = -1;
    for (int b = 0; b < 256; b++) cp_byte[byte_cp[b]] = b;
}

/* ---- UTF-8 and character classes ---------------------------------------------------- */

enum { BPE_OTHER, BPE_LETTER, BPE_NUMBER, BPE_SPACE };
#define BPE_INVALID_CP UINT32_MAX

/* Decodes the code point at s[0..n) (n >= 1) into *cp and returns its length; a byte that
 * does not start a valid shortest-form sequence gives BPE_INVALID_CP and length 1. */
static int bpe_utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = BPE_INVALID_CP;
        return 1;
    }
    if ((size_t)len > n) {
        *cp = BPE_INVALID_CP;
        return 1;
    }
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = BPE_INVALID_CP;
            return 1;
        }
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = BPE_INVALID_CP;
        return 1;
    }
    *cp = v;
    return len;
}

static bool bpe_in_ranges(const ng_cp_range *r, int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid - 1;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

#define BPE_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int bpe_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return BPE_LETTER;
        if (cp >= '0' && cp <= '9') return BPE_NUMBER;
        if (cp == ' ' || (cp >= '\t' && cp <= '\r')) return BPE_SPACE;
        return BPE_OTHER;
    }
    if (cp == BPE_INVALID_CP) return BPE_OTHER;
    if (bpe_in_ranges(ng_unicode_letter, BPE_COUNT(ng_unicode_letter), cp)) return BPE_LETTER;
    if (bpe_in_ranges(ng_unicode_number, BPE_COUNT(ng_unicode_number), cp)) return BPE_NUMBER;
    if (bpe_in_ranges(ng_unicode_space, BPE_COUNT(ng_unicode_space), cp)) return BPE_SPACE;
    return BPE_OTHER;
}

/* Class of the code point at byte i; *len gets its length in bytes. */
static int bpe_class_at(const unsigned char *s, size_t n, size_t i, int *len) {
    uint32_t cp;
    *len = bpe_utf8_next(s + i, n - i, &cp);
    return bpe_class(cp);
}

/* End of the run of class k that starts at byte i. */
static size_t bpe_run_end(const unsigned char *s, size_t n, size_t i, int k) {
    while (i < n) {
        int len;
        if (bpe_class_at(s, n, i, &len) != k) break;
        i += (size_t)len;
    }
    return i;
}

/* End of the piece that starts at byte i < n: the match a JavaScript /gu regex finds for
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * at i. Alternatives are tried in order and the first that matches wins (not the longest). */
static size_t bpe_piece_end(const unsigned char *s, size_t n, size_t i) {
    if (s[i] == '\'' && i + 1 < n) {
        unsigned char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    int len;
    /* " ?X+": the optional space is taken when a non-space follows it. */
    if (s[i] == ' ' && i + 1 < n) {
        int k = bpe_class_at(s, n, i + 1, &len);
        if (k != BPE_SPACE) return bpe_run_end(s, n, i + 1, k);
    }
    int k = bpe_class_at(s, n, i, &len);
    if (k != BPE_SPACE) return bpe_run_end(s, n, i, k);
    /* Whitespace. "\s+(?!\S)" backtracks one code point so that the last space before a
     * non-space stays for the next piece (" word"); a single space before a non-space is
     * matched by the plain "\s+". */
    size_t last = i, end = i + (size_t)len;
    int count = 1;
    while (end < n && bpe_class_at(s, n, end, &len) == BPE_SPACE) {
        last = end;
        end += (size_t)len;
        count++;
    }
    if (end < n && count >= 2) return last;
    return end;
}

/* ---- hash tables ---------------------------------------------------------------------- */

static uint32_t bpe_hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t bpe_hash_pair(uint64_t key) { return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32); }

static uint32_t bpe_table_size(size_t n) {
    uint32_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

int bpe_token_id(const bpe *t, const char *s, size_t n) {
    for (uint32_t h = bpe_hash_bytes(s, n) & t->str_mask;; h = (h + 1) & t->str_mask) {
        int32_t id = t->str_slot[h];
        if (id < 0) return -1;
        uint32_t off = t->text_off[id];
        if (t->text_off[id + 1] - off == n && (n == 0 || memcmp(t->text + off, s, n) == 0)) return id;
    }
}

/* Later calls with the same pair overwrite, as later keys do in gpt-3-encoder's table. */
static void bpe_pair_put(bpe *t, int left, int right, int rank, int result) {
    uint64_t key = (uint64_t)left << 32 | (uint32_t)right;
    uint32_t h = bpe_hash_pair(key) & t->pair_mask;
    while (t->pair_slot[h].key != BPE_PAIR_EMPTY && t->pair_slot[h].key != key) h = (h + 1) & t->pair_mask;
    t->pair_slot[h] = (struct bpe_pair){key, rank, result};
}

static const struct bpe_pair *bpe_pair_get(const bpe *t, int left, int right) {
    uint64_t key = (uint64_t)left << 32 | (uint32_t)right;
    for (uint32_t h = bpe_hash_pair(key) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
        const struct bpe_pair *p = &t->pair_slot[h];
        if (p->key == key) return p;
        if (p->key == BPE_PAIR_EMPTY) return NULL;
    }
}

/* ---- construction --------------------------------------------------------------------- */

void bpe_free(bpe *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->raw);
    free(t->raw_off);
    free(t->str_slot);
    free(t->pair_slot);
    free(t->merge_text);
    free(t->merge_off);
    free(t);
}

/* Raw bytes of a token string: alphabet code points back to their byte; any other text (an
 * added token written in plain UTF-8, or invalid UTF-8) is kept as it is. Writes at most n
 * bytes to out and returns the count. */
static size_t bpe_unmap(const char *s, size_t n, const int cp_byte[BPE_ALPHABET_END], char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = bpe_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (cp < BPE_ALPHABET_END && cp_byte[cp] >= 0) {
            out[o++] = (char)cp_byte[cp];
        } else {
            memcpy(out + o, s + i, (size_t)len);
            o += (size_t)len;
        }
        i += (size_t)len;
    }
    return o;
}

/* Splits a merge "A B" (spaces/tabs around and between) into its two parts. */
static bool bpe_split_merge(ng_str m, ng_str *a, ng_str *b) {
    ng_str part[3];
    int k = 0;
    for (size_t i = 0; i < m.n;) {
        while (i < m.n && (m.s[i] == ' ' || m.s[i] == '\t' || m.s[i] == '\r')) i++;
        if (i == m.n) break;
        size_t j = i;
        while (j < m.n && m.s[j] != ' ' && m.s[j] != '\t' && m.s[j] != '\r') j++;
        if (k == 3) return false;
        part[k++] = (ng_str){m.s + i, j - i};
        i = j;
    }
    if (k != 2) return false;
    *a = part[0], *b = part[1];
    return true;
}

/* Builds the tokenizer. Errors name the vocabulary vocab_name and merge i "merges_name:line",
 * line = lines[i] (or i + 1 when lines is NULL). */
static bpe *bpe_create(const ng_str *tokens, int n_tokens, const ng_str *merges, int n_merges,
                       const char *vocab_name, const char *merges_name, const int *lines, ng_error *err) {
    if (n_tokens <= 0 || n_merges < 0 || n_merges > INT_MAX / 2) {
        ng_error_set(err, "%s: %d tokens and %d merges: need at least one token", vocab_name, n_tokens,
                     n_merges);
        return NULL;
    }
    bpe *t = xcalloc(1, sizeof *t);
    t->n_vocab = n_tokens;
    uint32_t byte_cp[256];
    int cp_byte[BPE_ALPHABET_END];
    bpe_byte_alphabet(byte_cp, cp_byte);

    size_t total = 0;
    for (int i = 0; i < n_tokens; i++) {
        total += tokens[i].n;
        if (total >= UINT32_MAX / 2) {
            ng_error_set(err, "%s: the vocabulary's text is over 2 GiB", vocab_name);
            goto fail;
        }
    }
    t->text = xmalloc(total + 1);
    t->text_off = xmalloc(((size_t)n_tokens + 1) * sizeof *t->text_off);
    t->raw = xmalloc(total + 1); /* unmapping never lengthens a token */
    t->raw_off = xmalloc(((size_t)n_tokens + 1) * sizeof *t->raw_off);
    t->str_mask = bpe_table_size((size_t)n_tokens) - 1;
    t->str_slot = xmalloc(((size_t)t->str_mask + 1) * sizeof *t->str_slot);
    memset(t->str_slot, 0xFF, ((size_t)t->str_mask + 1) * sizeof *t->str_slot);
    size_t off = 0, roff = 0;
    for (int i = 0; i < n_tokens; i++) {
        if (tokens[i].n) memcpy(t->text + off, tokens[i].s, tokens[i].n);
        t->text_off[i] = (uint32_t)off;
        t->raw_off[i] = (uint32_t)roff;
        roff += bpe_unmap(tokens[i].s, tokens[i].n, cp_byte, t->raw + roff);
        off += tokens[i].n;
        t->text_off[i + 1] = (uint32_t)off;
        /* A repeated string keeps its first id: it is what bpe_token_id and merges see. */
        if (bpe_token_id(t, tokens[i].s, tokens[i].n) >= 0) continue;
        uint32_t h = bpe_hash_bytes(tokens[i].s, tokens[i].n) & t->str_mask;
        while (t->str_slot[h] >= 0) h = (h + 1) & t->str_mask;
        t->str_slot[h] = i;
    }
    t->raw_off[n_tokens] = (uint32_t)roff;
    t->raw[roff] = 0;

    for (int b = 0; b < 256; b++) {
        char utf8[2] = {(char)(0xC0 | byte_cp[b] >> 6), (char)(0x80 | (byte_cp[b] & 0x3F))};
        bool one = byte_cp[b] < 0x80;
        char c = (char)b;
        t->byte_id[b] = bpe_token_id(t, one ? &c : utf8, one ? 1 : 2);
        if (t->byte_id[b] < 0) {
            ng_error_set(err, "%s: no token for byte 0x%02X", vocab_name, b);
            goto fail;
        }
    }

    size_t merge_total = 0;
    for (int r = 0; r < n_merges; r++) merge_total += merges[r].n;
    if (merge_total >= UINT32_MAX / 2) {
        ng_error_set(err, "%s: the merges' text is over 2 GiB", merges_name);
        goto fail;
    }
    t->n_merges = n_merges;
    t->merge_text = xmalloc(merge_total + 1);
    t->merge_off = xmalloc(((size_t)n_merges + 1) * sizeof *t->merge_off);
    t->merge_off[0] = 0;
    for (int r = 0; r < n_merges; r++) {
        if (merges[r].n) memcpy(t->merge_text + t->merge_off[r], merges[r].s, merges[r].n);
        t->merge_off[r + 1] = t->merge_off[r] + (uint32_t)merges[r].n;
    }

    t->pair_mask = bpe_table_size((size_t)n_merges + 1) - 1;
    t->pair_slot = xmalloc(((size_t)t->pair_mask + 1) * sizeof *t->pair_slot);
    for (uint32_t i = 0; i <= t->pair_mask; i++) t->pair_slot[i].key = BPE_PAIR_EMPTY;
    /* key holds "a,b" as gpt-3-encoder spells it; joined holds one split of it without the comma. */
    char *key = NULL, *joined = NULL;
    size_t key_cap = 0;
    for (int r = 0; r < n_merges; r++) {
        int line = lines ? lines[r] : r + 1;
        ng_str a, b;
        if (!bpe_split_merge(merges[r], &a, &b)) {
            ng_error_set(err, "%s:%d: merge \"%.*s\": expected two tokens separated by a space", merges_name,
                         line, (int)(merges[r].n > 64 ? 64 : merges[r].n), merges[r].s);
            goto fail_merge;
        }
        size_t n = a.n + 1 + b.n;
        if (n > key_cap) {
            key_cap = 2 * n;
            key = xrealloc(key, key_cap);
            joined = xrealloc(joined, key_cap);
        }
        memcpy(key, a.s, a.n);
        key[a.n] = ',';
        memcpy(key + a.n + 1, b.s, b.n);
        /* Every split of the key at a comma is a pair gpt-3-encoder gives rank r; the split
         * at a.n is the merge itself, whose parts and result must be tokens. */
        for (size_t p = 1; p + 1 < n; p++) {
            if (key[p] != ',') continue;
            memcpy(joined, key, p);
            memcpy(joined + p, key + p + 1, n - p - 1);
            int ix = bpe_token_id(t, key, p), iy = bpe_token_id(t, key + p + 1, n - p - 1);
            int ixy = bpe_token_id(t, joined, n - 1);
            if (p == a.n && (ix < 0 || iy < 0 || ixy < 0)) {
                ng_str bad = ix < 0 ? a : iy < 0 ? b : (ng_str){joined, n - 1};
                ng_error_set(err, "%s:%d: merge \"%.*s %.*s\": \"%.*s\" is not a token", merges_name, line,
                             (int)a.n, a.s, (int)b.n, b.s, (int)bad.n, bad.s);
                goto fail_merge;
            }
            if (ix >= 0 && iy >= 0 && ixy >= 0) bpe_pair_put(t, ix, iy, r, ixy);
        }
    }
    free(key);
    free(joined);
    return t;
fail_merge:
    free(key);
    free(joined);
fail:
    bpe_free(t);
    return NULL;
}

bpe *bpe_new(const ng_str *tokens, int n_tokens, const ng_str *merges, int n_merges, ng_error *err) {
    return bpe_create(tokens, n_tokens, merges, n_merges, "bpe tokens", "bpe merges", NULL, err);
}

/* Line number (1-based) of byte offset off in text. */
static int bpe_line_of(const char *text, size_t off) {
    int line = 1;
    for (size_t i = 0; i < off; i++) line += text[i] == '\n';
    return line;
}

bpe *bpe_load_files(const char *vocab_json_path, const char *merges_path, ng_error *err) {
    bpe *t = NULL;
    cJSON *root = NULL;
    ng_str *tokens = NULL, *merges = NULL;
    int *lines = NULL;
    size_t vlen, mlen;
    char *vtext = ng_read_file(vocab_json_path, &vlen, err);
    char *mtext = vtext ? ng_read_file(merges_path, &mlen, err) : NULL;
    if (!mtext) goto done;

    root = cJSON_ParseWithLength(vtext, vlen);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= vtext && at <= vtext + vlen ? (size_t)(at - vtext) : 0;
        ng_error_set(err, "%s:%d: invalid JSON (near byte %zu)", vocab_json_path, bpe_line_of(vtext, off),
                     off);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        ng_error_set(err, "%s: expected a JSON object {\"token\": id, ...}", vocab_json_path);
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    if (n <= 0) {
        ng_error_set(err, "%s: the vocabulary is empty", vocab_json_path);
        goto done;
    }
    tokens = xcalloc((size_t)n, sizeof *tokens);
    int entry = 0;
    for (cJSON *it = root->child; it; it = it->next, entry++) {
        double v = it->valuedouble;
        if (!cJSON_IsNumber(it) || !(v >= 0 && v < n) || v != (double)(int)v) {
            ng_error_set(err, "%s: entry %d \"%.64s\": id must be an integer in [0, %d) (ids are dense)",
                         vocab_json_path, entry + 1, it->string, n);
            goto done;
        }
        int id = (int)v;
        if (tokens[id].s) {
            ng_error_set(err, "%s: entry %d \"%.64s\": id %d is also given to \"%.64s\"", vocab_json_path,
                         entry + 1, it->string, id, tokens[id].s);
            goto done;
        }
        tokens[id] = (ng_str){it->string, strlen(it->string)};
    }

    /* Merges: one "A B" per line; a first line "#version..." and blank lines are skipped. */
    int cap = 1024, nm = 0, line = 0;
    merges = xmalloc((size_t)cap * sizeof *merges);
    lines = xmalloc((size_t)cap * sizeof *lines);
    for (size_t i = 0; i < mlen;) {
        size_t j = i;
        while (j < mlen && mtext[j] != '\n') j++;
        line++;
        ng_str s = {mtext + i, j - i};
        i = j + 1;
        if (line == 1 && s.n >= 8 && memcmp(s.s, "#version", 8) == 0) continue;
        size_t k = 0;
        while (k < s.n && (s.s[k] == ' ' || s.s[k] == '\t' || s.s[k] == '\r')) k++;
        if (k == s.n) continue;
        if (nm == INT_MAX / 2) {
            ng_error_set(err, "%s:%d: too many merges", merges_path, line);
            goto done;
        }
        if (nm == cap) {
            cap *= 2;
            merges = xrealloc(merges, (size_t)cap * sizeof *merges);
            lines = xrealloc(lines, (size_t)cap * sizeof *lines);
        }
        merges[nm] = s;
        lines[nm++] = line;
    }
    t = bpe_create(tokens, n, merges, nm, vocab_json_path, merges_path, lines, err);
done:
    cJSON_Delete(root);
    free(tokens);
    free(merges);
    free(lines);
    free(vtext);
    free(mtext);
    return t;
}

int bpe_n_vocab(const bpe *t) { return t->n_vocab; }
int bpe_n_merges(const bpe *t) { return t->n_merges; }

const char *bpe_token_str(const bpe *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    *len = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}

const char *bpe_merge_str(const bpe *t, int i, size_t *len) {
    if (i < 0 || i >= t->n_merges) return NULL;
    *len = t->merge_off[i + 1] - t->merge_off[i];
    return t->merge_text + t->merge_off[i];
}

const char *bpe_token_bytes(const bpe *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    *len = t->raw_off[id + 1] - t->raw_off[id];
    return t->raw + t->raw_off[id];
}

char *bpe_decode(const bpe *t, const int *ids, int n, size_t *len, ng_error *err) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            ng_error_set(err, "bpe_decode: id %d at position %d is not in [0, %d)", ids[i], i, t->n_vocab);
            return NULL;
        }
        total += t->raw_off[ids[i] + 1] - t->raw_off[ids[i]];
    }
    char *out = xmalloc(total + 1);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        size_t k = t->raw_off[ids[i] + 1] - t->raw_off[ids[i]];
        memcpy(out + o, t->raw + t->raw_off[ids[i]], k);
        o += k;
    }
    out[o] = 0;
    if (len) *len = o;
    return out;
}

/* ---- merging ------------------------------------------------------------------------- */

/* A candidate merge of symbol `left` with its right neighbour `right`, valid while both
 * still hold ids l and r and are adjacent. Ordered by rank, then position. */
typedef struct {
    int32_t rank, left, right, l, r, result;
} bpe_cand;

/* Scratch space of one bpe_encode call, reused for every piece. */
typedef struct {
    int32_t *id, *prev, *next;
    bpe_cand *heap, *round;
    size_t cap, heap_cap, n_heap;
} bpe_work;

static bool bpe_cand_less(const bpe_cand *a, const bpe_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void bpe_heap_push(bpe_work *w, bpe_cand c) {
    if (w->n_heap == w->heap_cap) {
        w->heap_cap = w->heap_cap ? 2 * w->heap_cap : 64;
        w->heap = xrealloc(w->heap, w->heap_cap * sizeof *w->heap);
    }
    size_t i = w->n_heap++;
    while (i > 0 && bpe_cand_less(&c, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = c;
}

static bpe_cand bpe_heap_pop(bpe_work *w) {
    bpe_cand top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bpe_cand_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bpe_cand_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void bpe_push_pair(const bpe *t, bpe_work *w, int left) {
    if (left < 0 || w->next[left] < 0) return;
    int right = w->next[left];
    const struct bpe_pair *p = bpe_pair_get(t, w->id[left], w->id[right]);
    if (p) bpe_heap_push(w, (bpe_cand){p->rank, left, right, w->id[left], w->id[right], p->result});
}

static bool bpe_cand_valid(const bpe_work *w, const bpe_cand *c) {
    return w->next[c->left] == c->right && w->id[c->left] == c->l && w->id[c->right] == c->r;
}

/* Merges the n bytes of one piece and appends the ids to out. Symbols are a linked list in
 * w->id/prev/next (a merged-away symbol gets next = -2); see the file comment for rounds. */
static void bpe_merge_piece(const bpe *t, bpe_work *w, const unsigned char *s, size_t n, int **out,
                            size_t *n_out, size_t *cap_out) {
    if (n > w->cap) {
        w->cap = n;
        w->id = xrealloc(w->id, n * sizeof *w->id);
        w->prev = xrealloc(w->prev, n * sizeof *w->prev);
        w->next = xrealloc(w->next, n * sizeof *w->next);
        w->round = xrealloc(w->round, n * sizeof *w->round);
    }
    for (size_t i = 0; i < n; i++) {
        w->id[i] = t->byte_id[s[i]];
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    w->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) bpe_push_pair(t, w, (int)i);

    while (w->n_heap > 0) {
        /* Collect this round: every live candidate of the lowest rank, by position. */
        int rank = w->heap[0].rank;
        size_t n_round = 0;
        while (w->n_heap > 0 && w->heap[0].rank == rank) {
            bpe_cand c = bpe_heap_pop(w);
            if (bpe_cand_valid(w, &c)) w->round[n_round++] = c;
        }
        if (n_round == 0) continue;
        int l = w->round[n_round - 1].l, r = w->round[n_round - 1].r;
        size_t n_other = 0;
        for (size_t k = 0; k < n_round; k++) {
            bpe_cand c = w->round[k];
            if (c.l != l || c.r != r) {
                w->round[n_other++] = c; /* same rank, another pair: a later round */
                continue;
            }
            if (!bpe_cand_valid(w, &c)) continue; /* overlapped an occurrence just merged */
            int after = w->next[c.right];
            w->id[c.left] = c.result;
            w->next[c.left] = after;
            if (after >= 0) w->prev[after] = c.left;
            w->next[c.right] = -2;
            bpe_push_pair(t, w, w->prev[c.left]);
            bpe_push_pair(t, w, c.left);
        }
        for (size_t k = 0; k < n_other; k++) bpe_heap_push(w, w->round[k]);
    }

    for (int i = 0; i >= 0; i = w->next[i]) {
        if (*n_out == *cap_out) {
            *cap_out *= 2;
            *out = xrealloc(*out, *cap_out * sizeof **out);
        }
        (*out)[(*n_out)++] = w->id[i];
    }
}

/* Symbols of a piece are indexed by int32; a longer piece (a 256 MiB word) is cut. */
#define BPE_MAX_PIECE ((size_t)1 << 28)

int *bpe_encode(const bpe *t, const char *text, size_t len, int *n_out) {
    const unsigned char *s = (const unsigned char *)text;
    size_t cap = len / 3 + 16, n = 0;
    int *out = xmalloc(cap * sizeof *out);
    bpe_work w = {0};
    for (size_t i = 0; i < len;) {
        size_t end = bpe_piece_end(s, len, i);
        if (end - i > BPE_MAX_PIECE) end = i + BPE_MAX_PIECE;
        bpe_merge_piece(t, &w, s + i, end - i, &out, &n, &cap);
        i = end;
    }
    free(w.id);
    free(w.prev);
    free(w.next);
    free(w.heap);
    free(w.round);
    *n_out = (int)n;
    return out;
}
