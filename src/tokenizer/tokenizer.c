/* tokenizer — builds the model's tokenizer from GGUF keys, Hugging Face files or a llama2.c
 * tokenizer.bin, and forwards to the implementation of its kind (GPT-2 byte-level BPE or
 * LLaMA SentencePiece). */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/bpe.h"
#include "tokenizer/spm.h"

struct ng_tokenizer {
    bpe *bpe; /* exactly one of bpe, spm */
    spm *spm;
    int bos, eos;
    int32_t *types;   /* BPE: GGUF token types (1 normal, 3 control), n_vocab entries */
    int *special;     /* ids of control / user-defined tokens, longest text first */
    int n_special;
};

static const char *token_text(const ng_tokenizer *t, int id, size_t *len) {
    return t->bpe ? bpe_token_str(t->bpe, id, len) : spm_piece(t->spm, id, len);
}

static size_t special_len(const ng_tokenizer *t, int id) {
    size_t n;
    token_text(t, id, &n);
    return n;
}

/* Collects the tokens that text may name by their exact spelling (chat-template markers). */
static ng_tokenizer *with_specials(ng_tokenizer *t) {
    int n = tok_n_vocab(t);
    t->special = xmalloc((size_t)n * sizeof *t->special);
    for (int i = 0; i < n; i++) {
        int32_t ty = t->bpe ? t->types[i] : spm_type(t->spm, i);
        if ((ty == 3 || ty == 4) && special_len(t, i) > 0) t->special[t->n_special++] = i;
    }
    for (int i = 1; i < t->n_special; i++) /* insertion sort by length, longest first: few entries */
        for (int j = i; j > 0 && special_len(t, t->special[j]) > special_len(t, t->special[j - 1]); j--) {
            int tmp = t->special[j];
            t->special[j] = t->special[j - 1];
            t->special[j - 1] = tmp;
        }
    return t;
}

static int32_t *types_for(const bpe *b, int eos) {
    int n = bpe_n_vocab(b);
    int32_t *t = xmalloc((size_t)n * sizeof *t);
    for (int i = 0; i < n; i++) t[i] = i == eos ? 3 : 1;
    return t;
}

static ng_tokenizer *wrap_spm(spm *s) {
    ng_tokenizer *t = xcalloc(1, sizeof *t);
    t->spm = s;
    t->bos = spm_bos(s);
    t->eos = spm_eos(s);
    return with_specials(t);
}

static ng_tokenizer *bpe_from_gguf(const gguf_ctx *g, ng_error *err) {
    uint64_t n_tok = 0, n_merge = 0;
    const ng_str *tokens = gguf_get_arr_str(g, "tokenizer.ggml.tokens", &n_tok);
    const ng_str *merges = gguf_get_arr_str(g, "tokenizer.ggml.merges", &n_merge);
    if (!tokens || !merges) {
        ng_error_set(err, "%s: tokenizer.ggml.%s is missing or not a string array", gguf_path(g),
                     tokens ? "merges" : "tokens");
        return NULL;
    }
    if (n_tok > (1u << 22) || n_merge > (1u << 22)) {
        ng_error_set(err, "%s: tokenizer has too many entries", gguf_path(g));
        return NULL;
    }
    ng_error e;
    bpe *b = bpe_new(tokens, (int)n_tok, merges, (int)n_merge, &e);
    if (!b) {
        ng_error_set(err, "%s: %s", gguf_path(g), e.msg);
        return NULL;
    }
    ng_tokenizer *t = xcalloc(1, sizeof *t);
    t->bpe = b;
    uint32_t id;
    ng_error ignore;
    t->eos = gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id, &ignore) == NG_OK && id < n_tok ? (int)id : -1;
    t->bos = gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id, &ignore) == NG_OK && id < n_tok ? (int)id : -1;
    gguf_vtype vt;
    uint64_t n_types;
    const void *types = gguf_get_arr_data(g, "tokenizer.ggml.token_type", &vt, &n_types);
    t->types = types_for(b, t->eos);
    if (types && vt == GGUF_I32 && n_types == n_tok) memcpy(t->types, types, n_tok * sizeof *t->types);
    return with_specials(t);
}

ng_tokenizer *tok_from_gguf(const gguf_ctx *g, ng_error *err) {
    err->msg[0] = 0;
    const char *model = gguf_get_str(g, "tokenizer.ggml.model");
    if (!model) return NULL;
    if (!strcmp(model, "gpt2")) return bpe_from_gguf(g, err);
    if (!strcmp(model, "llama")) {
        spm *s = spm_from_gguf(g, err);
        return s ? wrap_spm(s) : NULL;
    }
    ng_error_set(err, "%s: tokenizer.ggml.model '%s' is not supported by this build (supported: gpt2, llama)",
                 gguf_path(g), model);
    return NULL;
}

ng_tokenizer *tok_from_llama2c(const char *path, int n_vocab, ng_error *err) {
    spm *s = spm_load_llama2c(path, n_vocab, err);
    return s ? wrap_spm(s) : NULL;
}

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

ng_tokenizer *tok_from_hf_dir(const char *dir, ng_error *err) {
    err->msg[0] = 0;
    char vocab[4096], merges[4096];
    snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
    if (!exists(vocab)) snprintf(vocab, sizeof vocab, "%s/encoder.json", dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    if (!exists(merges)) snprintf(merges, sizeof merges, "%s/vocab.bpe", dir);
    if (!exists(vocab) && !exists(merges)) return NULL;
    bpe *b = bpe_load_files(vocab, merges, err);
    if (!b) return NULL;
    ng_tokenizer *t = xcalloc(1, sizeof *t);
    t->bpe = b;
    t->eos = bpe_token_id(b, "<|endoftext|>", 13);
    t->bos = t->eos;
    t->types = types_for(b, t->eos);
    return with_specials(t);
}

ng_tokenizer *tok_load(const char *path, ng_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        ng_error_set(err, "%s: cannot open", path);
        return NULL;
    }
    ng_tokenizer *t;
    if (S_ISDIR(sb.st_mode)) {
        t = tok_from_hf_dir(path, err);
    } else {
        gguf_ctx *g = gguf_open(path, err);
        if (!g) return NULL;
        t = tok_from_gguf(g, err);
        gguf_close(g);
    }
    if (!t && !err->msg[0]) ng_error_set(err, "%s: has no tokenizer", path);
    return t;
}

void tok_free(ng_tokenizer *t) {
    if (!t) return;
    if (t->bpe) bpe_free(t->bpe);
    if (t->spm) spm_free(t->spm);
    free(t->types);
    free(t->special);
    free(t);
}

int tok_n_vocab(const ng_tokenizer *t) { return t->bpe ? bpe_n_vocab(t->bpe) : spm_n_vocab(t->spm); }
int tok_bos(const ng_tokenizer *t) { return t->bos; }
int tok_eos(const ng_tokenizer *t) { return t->eos; }
int tok_add_bos(const ng_tokenizer *t) { return t->spm != NULL && t->bos >= 0; }
const char *tok_kind(const ng_tokenizer *t) { return t->bpe ? "gpt2" : "llama"; }

int *tok_encode(const ng_tokenizer *t, const char *text, size_t len, int *n) {
    if (t->bpe) return bpe_encode(t->bpe, text, len, n);
    return spm_encode(t->spm, text, len, 0, 1, n);
}

int tok_special_id(const ng_tokenizer *t, const char *text) {
    size_t n = strlen(text);
    for (int i = 0; i < t->n_special; i++) {
        size_t len;
        const char *s = token_text(t, t->special[i], &len);
        if (len == n && !memcmp(s, text, n)) return t->special[i];
    }
    return -1;
}

int *tok_encode_special(const ng_tokenizer *t, const char *text, size_t len, int *n) {
    int cap = 64, k = 0;
    int *ids = xmalloc((size_t)cap * sizeof *ids);
    size_t seg = 0; /* start of the pending plain-text segment */
    for (size_t i = 0; i <= len; i++) {
        int hit = -1;
        size_t hit_len = 0;
        for (int j = 0; i < len && j < t->n_special && hit < 0; j++) {
            size_t sl;
            const char *s = token_text(t, t->special[j], &sl);
            if (sl <= len - i && !memcmp(text + i, s, sl)) hit = t->special[j], hit_len = sl;
        }
        if (hit < 0 && i < len) continue;
        if (i > seg) { /* plain text before the marker (or the end); SentencePiece's leading space only at the start */
            int m;
            int *part = t->bpe ? bpe_encode(t->bpe, text + seg, i - seg, &m)
                               : spm_encode(t->spm, text + seg, i - seg, 0, seg == 0, &m);
            if (k + m + 1 > cap) ids = xrealloc(ids, (size_t)(cap = 2 * (k + m + 1)) * sizeof *ids);
            memcpy(ids + k, part, (size_t)m * sizeof *ids);
            k += m;
            free(part);
        }
        if (hit >= 0) {
            if (k + 1 > cap) ids = xrealloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            ids[k++] = hit;
            i += hit_len - 1;
            seg = i + 1;
        }
    }
    *n = k;
    return ids;
}

const char *tok_piece(const ng_tokenizer *t, int id, size_t *len) {
    return t->bpe ? bpe_token_bytes(t->bpe, id, len) : spm_token_bytes(t->spm, id, len);
}

static void write_bpe(const ng_tokenizer *t, gguf_writer *w) {
    int n = bpe_n_vocab(t->bpe), nm = bpe_n_merges(t->bpe);
    ng_str *tokens = xmalloc((size_t)n * sizeof *tokens), *merges = xmalloc((size_t)(nm ? nm : 1) * sizeof *merges);
    for (int i = 0; i < n; i++) tokens[i].s = bpe_token_str(t->bpe, i, &tokens[i].n);
    for (int i = 0; i < nm; i++) merges[i].s = bpe_merge_str(t->bpe, i, &merges[i].n);
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n);
    gguf_set_arr_data(w, "tokenizer.ggml.token_type", GGUF_I32, t->types, (uint64_t)n);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, (uint64_t)nm);
    free(tokens);
    free(merges);
}

static void write_spm(const ng_tokenizer *t, gguf_writer *w) {
    int n = spm_n_vocab(t->spm);
    ng_str *pieces = xmalloc((size_t)n * sizeof *pieces);
    float *scores = xmalloc((size_t)n * sizeof *scores);
    int32_t *types = xmalloc((size_t)n * sizeof *types);
    for (int i = 0; i < n; i++) {
        pieces[i].s = spm_piece(t->spm, i, &pieces[i].n);
        scores[i] = spm_score(t->spm, i);
        types[i] = spm_type(t->spm, i);
    }
    gguf_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", pieces, (uint64_t)n);
    gguf_set_arr_data(w, "tokenizer.ggml.scores", GGUF_F32, scores, (uint64_t)n);
    gguf_set_arr_data(w, "tokenizer.ggml.token_type", GGUF_I32, types, (uint64_t)n);
    if (spm_unk(t->spm) >= 0) gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)spm_unk(t->spm));
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
    free(pieces);
    free(scores);
    free(types);
}

void tok_write_gguf(const ng_tokenizer *t, gguf_writer *w) {
    if (t->bpe) write_bpe(t, w);
    else write_spm(t, w);
    if (t->bos >= 0) gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
    if (t->eos >= 0) gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
}
