/* data — JSONL / text training data: parse, tokenize, pack into rows, batch (see data.h). */
#include "train/data.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t z) { /* splitmix64 */
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int data_format_parse(const char *s) {
    static const char *names[] = {"auto", "alpaca", "chat", "text"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

const char *data_format_name(data_format f) {
    static const char *names[] = {"auto", "alpaca", "chat", "text"};
    return names[f];
}

/* ---- building a data_set ------------------------------------------------------------------ */

typedef struct {
    data_set *d;
    const ng_tokenizer *tok;
    const data_options *o;
    int64_t cap_tok;
    int cap_ex;
    int n_reports, max_reports;
} builder;

static void push_tok(builder *b, int id, int counts) {
    data_set *d = b->d;
    if (d->n_tokens == b->cap_tok) {
        b->cap_tok = b->cap_tok ? 2 * b->cap_tok : 4096;
        d->ids = xrealloc(d->ids, (size_t)b->cap_tok * sizeof *d->ids);
        d->counts = xrealloc(d->counts, (size_t)b->cap_tok);
    }
    d->ids[d->n_tokens] = id;
    d->counts[d->n_tokens++] = (uint8_t)counts;
}

/* Closes the example that started at start[n_ex] (the tokens pushed since). */
static void end_example(builder *b) {
    data_set *d = b->d;
    if (d->n_ex + 2 > b->cap_ex) {
        b->cap_ex = b->cap_ex ? 2 * b->cap_ex : 1024;
        d->start = xrealloc(d->start, (size_t)b->cap_ex * sizeof *d->start);
    }
    d->start[++d->n_ex] = d->n_tokens;
}

static void report(builder *b, int64_t line, const char *what) {
    if (b->n_reports++ < b->max_reports) fprintf(stderr, "%s:%lld: %s\n", b->d->path, (long long)line, what);
    else if (b->n_reports == b->max_reports + 1) fprintf(stderr, "%s: (further problems not shown)\n", b->d->path);
}

/* Adds one instruction/chat example: [BOS] ids EOS? with counts; dropped when longer than a
 * row. Returns 0 when added. */
static int add_example(builder *b, int64_t line, const int *ids, const uint8_t *cnt, int n, int add_eos) {
    int bos = tok_add_bos(b->tok), eos = tok_eos(b->tok);
    int total = bos + n + add_eos;
    if (total > b->o->T + 1) {
        char msg[160];
        snprintf(msg, sizeof msg, "example of %d tokens does not fit a row of --ctx %d + 1; dropped", total, b->o->T);
        report(b, line, msg);
        b->d->n_too_long++;
        return -1;
    }
    if (bos) push_tok(b, tok_bos(b->tok), 0);
    for (int i = 0; i < n; i++) push_tok(b, ids[i], cnt[i]);
    if (add_eos) push_tok(b, eos, 1);
    end_example(b);
    return 0;
}

static const char *str_field(const cJSON *obj, const char *key, int required, const char **why) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    static char msg[96];
    if (!v || cJSON_IsNull(v)) {
        if (required) snprintf(msg, sizeof msg, "missing field \"%s\"", key), *why = msg;
        return NULL;
    }
    if (!cJSON_IsString(v)) {
        snprintf(msg, sizeof msg, "field \"%s\" must be a string", key);
        *why = msg;
        return NULL;
    }
    return v->valuestring;
}

/* Alpaca: NULL when added, else why the line is bad. */
static const char *parse_alpaca(builder *b, const cJSON *js, int64_t line) {
    const char *why = NULL;
    const char *ins = str_field(js, "instruction", 1, &why);
    if (why) return why;
    const char *in = str_field(js, "input", 0, &why);
    if (why) return why;
    const char *out = str_field(js, "output", 1, &why);
    if (why) return why;
    if (!out[0]) return "field \"output\" is empty";
    char *prompt = chat_alpaca_prompt(ins, in);
    size_t pl = strlen(prompt), ol = strlen(out);
    char *full = xmalloc(pl + ol + 1);
    memcpy(full, prompt, pl);
    memcpy(full + pl, out, ol + 1);
    int n_p, n;
    int *p = tok_encode(b->tok, prompt, pl, &n_p), *ids = tok_encode(b->tok, full, pl + ol, &n);
    /* the response starts where the whole text's tokens stop agreeing with the prompt's own */
    int k = 0;
    while (k < n_p && k < n && p[k] == ids[k]) k++;
    uint8_t *cnt = xmalloc((size_t)n + 1);
    for (int i = 0; i < n; i++) cnt[i] = i >= k;
    add_example(b, line, ids, cnt, n, 1);
    free(cnt), free(ids), free(p), free(full), free(prompt);
    return NULL;
}

static int n_tokens_of(builder *b, ng_chat_template t, const ng_chat_msg *m, int n, int gen) {
    char *s = chat_apply(t, m, n, gen);
    int k = 0;
    free(tok_encode_special(b->tok, s, strlen(s), &k));
    free(s);
    return k;
}

/* Chat: NULL when added, else why the line is bad. */
static const char *parse_chat(builder *b, const cJSON *js, int64_t line) {
    static char msg[96];
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(js, "messages");
    if (!arr) return "missing field \"messages\"";
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) return "field \"messages\" must be a non-empty array";
    int n = cJSON_GetArraySize(arr), n_asst = 0;
    ng_chat_msg *m = xcalloc((size_t)n, sizeof *m);
    const char *why = NULL;
    for (int i = 0; i < n && !why; i++) {
        const cJSON *it = cJSON_GetArrayItem(arr, i);
        const char *w = NULL;
        if (!cJSON_IsObject(it)) {
            snprintf(msg, sizeof msg, "messages[%d] must be an object", i);
            why = msg;
            break;
        }
        m[i].role = str_field(it, "role", 1, &w);
        if (!w) m[i].content = str_field(it, "content", 1, &w);
        if (w) {
            snprintf(msg, sizeof msg, "messages[%d]: %s", i, w);
            why = msg;
        } else if (strcmp(m[i].role, "system") && strcmp(m[i].role, "user") && strcmp(m[i].role, "assistant")) {
            snprintf(msg, sizeof msg, "messages[%d]: role must be system, user or assistant", i);
            why = msg;
        } else if (!strcmp(m[i].role, "assistant")) {
            n_asst++;
        }
    }
    if (!why && !n_asst) why = "no assistant message to learn from";
    if (why) {
        free(m);
        return why;
    }
    ng_chat_template t = b->o->chat == CHAT_NONE ? CHAT_CHATML : b->o->chat;
    char *text = chat_apply(t, m, n, 0);
    int n_ids;
    int *ids = tok_encode_special(b->tok, text, strlen(text), &n_ids);
    uint8_t *cnt = xcalloc((size_t)n_ids + 1, 1);
    for (int i = 0; i < n; i++) {
        if (strcmp(m[i].role, "assistant")) continue;
        /* the turn is what rendering it adds after the template opened it */
        int from = n_tokens_of(b, t, m, i, 1), to = n_tokens_of(b, t, m, i + 1, 0);
        for (int j = from; j < to && j < n_ids; j++) cnt[j] = 1;
    }
    int eos = tok_eos(b->tok);
    add_example(b, line, ids, cnt, n_ids, n_ids == 0 || ids[n_ids - 1] != eos);
    free(cnt), free(ids), free(text), free(m);
    return NULL;
}

/* Text: appends a document's tokens to the stream, cutting it into chunks of T+1 tokens that
 * overlap by one (the next chunk starts with the previous one's last token, as an input). */
static void push_stream(builder *b, int id) {
    data_set *d = b->d;
    int64_t len = d->n_tokens - d->start[d->n_ex];
    if (len == b->o->T + 1) {
        int last = d->ids[d->n_tokens - 1];
        end_example(b);
        push_tok(b, last, 0);
    }
    push_tok(b, id, 1);
}

static void add_text(builder *b, const char *s, size_t n, int doc_start, int doc_end) {
    if (doc_start && tok_add_bos(b->tok)) push_stream(b, tok_bos(b->tok));
    int k = 0;
    int *ids = n ? tok_encode(b->tok, s, n, &k) : NULL;
    for (int i = 0; i < k; i++) push_stream(b, ids[i]);
    free(ids);
    if (doc_end) push_stream(b, tok_eos(b->tok));
}

static int is_blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

static data_format detect(const char *path, FILE *f) {
    const char *dot = strrchr(path, '.');
    if (!dot || (strcmp(dot, ".jsonl") && strcmp(dot, ".json"))) return DATA_TEXT;
    char *line = NULL;
    size_t cap = 0;
    data_format fmt = DATA_ALPACA;
    while (getline(&line, &cap, f) > 0) {
        if (is_blank(line)) continue;
        cJSON *js = cJSON_Parse(line);
        if (cJSON_GetObjectItemCaseSensitive(js, "messages")) fmt = DATA_CHAT;
        cJSON_Delete(js);
        break;
    }
    free(line);
    rewind(f);
    return fmt;
}

data_set *data_load(const char *path, const ng_tokenizer *tok, const data_options *o, ng_error *err) {
    if (!tok) {
        ng_error_set(err, "%s: the model has no tokenizer to encode the data with", path);
        return NULL;
    }
    if (o->T < 1) {
        ng_error_set(err, "%s: rows of %d tokens", path, o->T);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        ng_error_set(err, "%s: cannot open", path);
        return NULL;
    }
    data_set *d = xcalloc(1, sizeof *d);
    d->path = xstrdup(path);
    d->T = o->T;
    d->format = o->format == DATA_AUTO ? detect(path, f) : o->format;
    builder b = {.d = d, .tok = tok, .o = o, .max_reports = o->max_reports > 0 ? o->max_reports : 20};
    b.cap_ex = 1024;
    d->start = xcalloc((size_t)b.cap_ex, sizeof *d->start);
    char *line = NULL, *doc = NULL;
    size_t cap = 0, doc_len = 0, doc_cap = 0;
    ssize_t len;
    int doc_open = 0; /* text: a document has started (BOS written) */
    while ((len = getline(&line, &cap, f)) >= 0) {
        d->n_lines++;
        if (d->format == DATA_TEXT) {
            int blank = is_blank(line);
            if (blank && !o->docs_whole_file) { /* a paragraph ends */
                if (doc_len) {
                    while (doc_len && doc[doc_len - 1] == '\n') doc_len--;
                    add_text(&b, doc, doc_len, !doc_open, 1);
                }
                doc_len = 0, doc_open = 0;
                continue;
            }
            if (doc_len + (size_t)len + 1 > doc_cap) doc = xrealloc(doc, doc_cap = 2 * (doc_len + (size_t)len + 1));
            memcpy(doc + doc_len, line, (size_t)len);
            doc_len += (size_t)len;
            if (o->docs_whole_file && doc_len > (1u << 20)) { /* long file: encode in pieces at line ends */
                add_text(&b, doc, doc_len, !doc_open, 0);
                doc_open = 1, doc_len = 0;
            }
            continue;
        }
        if (is_blank(line)) continue;
        const char *why;
        cJSON *js = cJSON_ParseWithLength(line, (size_t)len);
        if (!js) why = "invalid JSON";
        else if (!cJSON_IsObject(js)) why = "a line must be a JSON object";
        else why = d->format == DATA_CHAT ? parse_chat(&b, js, d->n_lines) : parse_alpaca(&b, js, d->n_lines);
        cJSON_Delete(js);
        if (why) {
            d->n_bad++;
            if (o->strict) {
                ng_error_set(err, "%s:%lld: %s (--strict)", path, (long long)d->n_lines, why);
                goto fail;
            }
            char msg[160];
            snprintf(msg, sizeof msg, "%s; line skipped", why);
            report(&b, d->n_lines, msg);
        }
    }
    if (d->format == DATA_TEXT) {
        while (doc_len && doc[doc_len - 1] == '\n') doc_len--;
        if (doc_len || doc_open) add_text(&b, doc, doc_len, !doc_open, 1);
        if (d->n_tokens - d->start[d->n_ex] >= 2) end_example(&b); /* the last, shorter chunk */
        else d->n_tokens = d->start[d->n_ex];
    }
    for (int e = 0; e < d->n_ex; e++)
        for (int64_t i = d->start[e] + 1; i < d->start[e + 1]; i++) d->n_target_tokens += d->counts[i];
    if (d->n_ex == 0 || d->n_target_tokens == 0) {
        ng_error_set(err, "%s: no usable %s examples (%lld lines, %lld bad, %lld too long)", path,
                     data_format_name(d->format), (long long)d->n_lines, (long long)d->n_bad, (long long)d->n_too_long);
        goto fail;
    }
    free(line), free(doc);
    fclose(f);
    return d;
fail:
    free(line), free(doc);
    fclose(f);
    data_free(d);
    return NULL;
}

void data_free(data_set *d) {
    if (!d) return;
    free(d->path), free(d->ids), free(d->counts), free(d->start);
    free(d);
}

static void shuffle(int *a, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) a[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(mix64(seed + (uint64_t)i) % (uint64_t)(i + 1));
        int t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

/* A new set of the examples of d where keep[e] == want, in file order. */
static data_set *subset(const data_set *d, const uint8_t *keep, int want) {
    data_set *s = xcalloc(1, sizeof *s);
    s->path = xstrdup(d->path);
    s->format = d->format;
    s->T = d->T;
    int64_t n_tok = 0;
    for (int e = 0; e < d->n_ex; e++)
        if (keep[e] == want) n_tok += d->start[e + 1] - d->start[e], s->n_ex++;
    s->ids = xmalloc((size_t)(n_tok ? n_tok : 1) * sizeof *s->ids);
    s->counts = xmalloc((size_t)(n_tok ? n_tok : 1));
    s->start = xmalloc((size_t)(s->n_ex + 1) * sizeof *s->start);
    s->start[0] = 0;
    int k = 0;
    for (int e = 0; e < d->n_ex; e++) {
        if (keep[e] != want) continue;
        int64_t a = d->start[e], n = d->start[e + 1] - a;
        memcpy(s->ids + s->n_tokens, d->ids + a, (size_t)n * sizeof *s->ids);
        memcpy(s->counts + s->n_tokens, d->counts + a, (size_t)n);
        for (int64_t i = 1; i < n; i++) s->n_target_tokens += d->counts[a + i];
        s->n_tokens += n;
        s->start[++k] = s->n_tokens;
    }
    return s;
}

data_set *data_split(data_set *d, double frac, uint64_t seed) {
    if (d->n_ex < 2 || !(frac > 0 && frac < 1)) return NULL;
    int n_val = (int)(frac * d->n_ex + 0.5);
    if (n_val < 1) n_val = 1;
    if (n_val > d->n_ex - 1) n_val = d->n_ex - 1;
    int *perm = xmalloc((size_t)d->n_ex * sizeof *perm);
    uint8_t *is_val = xcalloc((size_t)d->n_ex, 1);
    shuffle(perm, d->n_ex, mix64(seed ^ 0x76616c6964ull));
    for (int i = 0; i < n_val; i++) is_val[perm[i]] = 1;
    data_set *val = subset(d, is_val, 1), *train = subset(d, is_val, 0);
    /* d becomes the training part; its counters describe the file, so they stay with it */
    free(d->ids), free(d->counts), free(d->start);
    d->ids = train->ids, d->counts = train->counts, d->start = train->start;
    d->n_tokens = train->n_tokens, d->n_ex = train->n_ex, d->n_target_tokens = train->n_target_tokens;
    free(train->path);
    free(train);
    free(perm), free(is_val);
    return val;
}

/* ---- packing and batches ------------------------------------------------------------------ */

static int64_t ex_len(const data_set *d, int e) { return d->start[e + 1] - d->start[e]; }

/* Greedy packing of examples in order into rows of T+1 tokens; fills row_first (may be NULL)
 * and returns the number of rows. */
static int64_t pack(const data_set *d, const int *order, int *row_first) {
    int64_t rows = 0, used = d->T + 1;
    for (int i = 0; i < d->n_ex; i++) {
        int64_t n = ex_len(d, order ? order[i] : i);
        if (used + n > d->T + 1) {
            if (row_first) row_first[rows] = i;
            rows++, used = 0;
        }
        used += n;
    }
    if (row_first) row_first[rows] = d->n_ex;
    return rows;
}

int64_t data_rows(const data_set *d) { return pack(d, NULL, NULL); }

static void repack(data_loader *l) {
    const data_set *d = l->d;
    if (l->shuffled) shuffle(l->order, d->n_ex, mix64(l->seed ^ mix64((uint64_t)l->epoch + 1)));
    else
        for (int i = 0; i < d->n_ex; i++) l->order[i] = i;
    l->rows_per_epoch = pack(d, l->order, l->row_first);
}

data_loader *data_loader_new(const data_set *d, int B, uint64_t seed, int shuffled, int pad) {
    data_loader *l = xcalloc(1, sizeof *l);
    l->d = d, l->B = B, l->T = d->T, l->pad = pad, l->seed = seed, l->shuffled = shuffled;
    l->order = xmalloc((size_t)d->n_ex * sizeof *l->order);
    l->row_first = xmalloc((size_t)(d->n_ex + 1) * sizeof *l->row_first);
    size_t N = (size_t)B * d->T;
    l->tokens = xmalloc(N * sizeof *l->tokens);
    l->targets = xmalloc(N * sizeof *l->targets);
    l->mask = xmalloc(N * sizeof *l->mask);
    repack(l);
    return l;
}

void data_loader_free(data_loader *l) {
    if (!l) return;
    free(l->order), free(l->row_first), free(l->tokens), free(l->targets), free(l->mask);
    free(l);
}

/* Row r of the current packing into batch slot b (r < 0: an empty, fully masked row). */
static int fill_row(data_loader *l, int b, int64_t r) {
    const data_set *d = l->d;
    int T = l->T, n_targets = 0;
    int *tk = l->tokens + (size_t)b * T, *tg = l->targets + (size_t)b * T;
    float *mk = l->mask + (size_t)b * T;
    for (int j = 0; j < T; j++) tk[j] = tg[j] = l->pad, mk[j] = 0;
    if (r < 0) return 0;
    int pos = 0; /* next slot of the row's T+1 tokens */
    for (int i = l->row_first[r]; i < l->row_first[r + 1]; i++) {
        int e = l->order[i];
        for (int64_t k = d->start[e]; k < d->start[e + 1]; k++, pos++) {
            if (pos < T) tk[pos] = d->ids[k];
            if (pos > 0) {
                tg[pos - 1] = d->ids[k];
                mk[pos - 1] = k > d->start[e] && d->counts[k] ? 1.0f : 0.0f;
                n_targets += mk[pos - 1] != 0;
            }
        }
    }
    return n_targets;
}

int data_next(data_loader *l) {
    int n = 0;
    for (int b = 0; b < l->B; b++) {
        if (l->row == l->rows_per_epoch) {
            l->epoch++;
            repack(l);
            l->row = 0;
        }
        n += fill_row(l, b, l->row++);
    }
    return n;
}

int data_batch_at(data_loader *l, int64_t first) {
    int n = 0;
    for (int b = 0; b < l->B; b++) n += fill_row(l, b, first + b < l->rows_per_epoch ? first + b : -1);
    return n;
}

void data_loader_seek(data_loader *l, int64_t n_batches) {
    int64_t skip = n_batches * l->B;
    while (skip > l->rows_per_epoch - l->row) {
        skip -= l->rows_per_epoch - l->row;
        l->epoch++;
        repack(l);
        l->row = 0;
    }
    l->row += skip;
}

int *data_token_set(const data_set *d, int n_vocab, int counted_only, int *n) {
    uint8_t *seen = xcalloc((size_t)n_vocab, 1);
    int k = 0;
    for (int64_t i = 0; i < d->n_tokens; i++) {
        int t = d->ids[i];
        if (t < 0 || t >= n_vocab || (counted_only && !d->counts[i]) || seen[t]) continue;
        seen[t] = 1, k++;
    }
    int *ids = k ? xmalloc((size_t)k * sizeof *ids) : NULL;
    for (int t = 0, j = 0; t < n_vocab && j < k; t++)
        if (seen[t]) ids[j++] = t;
    free(seen);
    *n = k;
    return ids;
}
