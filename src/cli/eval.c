/* netgpt eval — perplexity of a model on a text file, and optionally how far its predictions
 * are from another model's (a quantized model against its f32 original); and, with --pairs,
 * the edge completion model's comprehensive prompts for evaluation records. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "edge/complete.h"
#include "edge/score.h"
#include "model/lora.h"
#include "sample/sampler.h"

static const char HELP[] =
    "usage: netgpt eval -m MODEL [--lora ADAPTER] -f TEXT_FILE [--ctx N] [--ref OTHER_MODEL] [--json]\n"
    "       netgpt eval -m EDGE_MODEL [--lora ADAPTER] --pairs RECORDS.jsonl -o PRED.jsonl\n"
    "                  [--facts FACTS.jsonl [--vocab VOCAB.json]] [--limit N] [--json]\n"
    "       netgpt eval --score PRED.jsonl --facts FACTS.jsonl [--vocab VOCAB.json] [--limit N] [--json]\n"
    "\n"
    "Perplexity of MODEL on the text: the text is tokenized (with BOS where the tokenizer adds\n"
    "one) and cut into windows of N tokens, each run from an empty context; every token after a\n"
    "window's first is predicted from the tokens before it in its window. PPL = exp(mean NLL).\n"
    "\n"
    "  -f, --file PATH  the text\n"
    "  --ctx N          window length in tokens (default min(512, the model's context))\n"
    "  --lora PATH[:SCALE]  MODEL with this adapter (repeatable; --ref runs without it)\n"
    "  --ref MODEL      also run MODEL (same vocabulary) on the same tokens and report the mean\n"
    "                   and max |logit difference| and the KL divergence KL(ref || model),\n"
    "                   averaged over the predicted positions, and the reference's perplexity\n"
    "  -t, --threads N  threads (default: all cores)\n"
    "  --json           print the results as one JSON object on stdout\n"
    "\n"
    "With --pairs, the edge completion: for each record {\"instruction\": CONTEXT_BLOCK, ...} of\n"
    "RECORDS.jsonl (tools/data/pairs' format) the model writes the comprehensive prompt exactly as\n"
    "`netgpt edge` does (Alpaca prompt, beam search among the tokens that keep references\n"
    "fillable, each once, repeat no phrase and end only when every reference is written;\n"
    "references such as {place} or {poi1} filled from the record's context block), one line\n"
    "{\"output\": TEXT} per record into PRED.jsonl (\"\" where the record does not fit the\n"
    "context). With --facts, each prompt is checked against its record's facts (the same line of\n"
    "FACTS.jsonl, tools/data/pairs' test_facts.jsonl): facts stated (a point of interest with its\n"
    "distance; other facts by value), mentions invented (distances, clock times, weekdays,\n"
    "languages, brand and city names of VOCAB.json that are not in the context), records leaking\n"
    "a private value, requests stated (one of the record's request sentences or its concise\n"
    "prompt); the same counts as tools/data/pairs/eval_pairs.js. --score checks prompts\n"
    "written before (e.g. the template baseline, test_baseline.jsonl) the same way, without a model.\n"
    "\n"
    "  --pairs FILE         the records\n"
    "  -o, --out FILE       where the predictions go\n"
    "  --lora PATH[:SCALE]  the completion adapter\n"
    "  --facts FILE         the records' facts, to score the prompts\n"
    "  --vocab FILE         brand and city names for the invented-fact check (default: vocab.json\n"
    "                       beside FACTS)\n"
    "  --limit N            the first N records only\n"
    "  -n, --n-predict N    most tokens per prompt (default 128, as netgpt edge)\n"
    "  --beams N            beam width, 1 (greedy) to 8 (default 4, as netgpt edge)\n";

/* The next non-blank line of f into *line (getline's buffer), 0 at the end of the file. */
static int next_line(FILE *f, char **line, size_t *cap) {
    while (getline(line, cap, f) >= 0)
        if ((*line)[strspn(*line, " \t\r\n")]) return 1;
    return 0;
}

static void print_score(const edge_score *sc, int json) {
    double stated = sc->facts ? (double)sc->stated / (double)sc->facts : 0,
           inv = sc->mentions ? (double)sc->invented / (double)sc->mentions : 0,
           rinv = sc->records ? (double)sc->records_with_invented / (double)sc->records : 0,
           leak = sc->records ? (double)sc->leaks / (double)sc->records : 0,
           req = sc->requests ? (double)sc->requests_stated / (double)sc->requests : 0;
    if (json)
        printf("{\"records\":%ld,\"facts\":%ld,\"facts_stated\":%.4f,\"invented_share\":%.4f,"
               "\"records_with_invented\":%.4f,\"private_leaks\":%.4f,\"requests_stated\":%.4f,\"stated\":%ld,"
               "\"mentions\":%ld,\"invented\":%ld,\"requests\":%ld}\n",
               sc->records, sc->facts, stated, inv, rinv, leak, req, sc->stated, sc->mentions, sc->invented,
               sc->requests);
    else
        printf("facts stated %.2f%% (%ld of %ld), invented mentions %.2f%% (%ld of %ld), records with an invented "
               "mention %.2f%%, records leaking private data %.2f%%, requests stated %.2f%% (%ld of %ld)\n",
               100 * stated, sc->stated, sc->facts, 100 * inv, sc->invented, sc->mentions, 100 * rinv, 100 * leak,
               100 * req, sc->requests_stated, sc->requests);
}

/* The fact check of --pairs and --score: the facts file read in step with the prompts. */
typedef struct {
    const char *facts;
    edge_scorer *scorer;
    FILE *f;
    char *line;
    size_t cap;
    edge_score acc;
} fact_check;

/* vocab defaults to vocab.json in the folder of facts. Exits on error. */
static void check_open(fact_check *c, const char *facts, const char *vocab) {
    char buf[4096];
    if (!vocab) {
        const char *slash = strrchr(facts, '/');
        snprintf(buf, sizeof buf, "%.*svocab.json", slash ? (int)(slash - facts + 1) : 0, facts);
        vocab = buf;
    }
    ng_error err;
    *c = (fact_check){.facts = facts};
    if (!(c->scorer = edge_scorer_load(vocab, &err))) ng_die("eval: %s", err.msg);
    if (!(c->f = fopen(facts, "rb"))) ng_die("eval: %s: cannot open", facts);
}

/* Scores text, the prompt of record n (from 1) of what, against the next line of facts. */
static void check_add(fact_check *c, const char *text, const char *what, long n) {
    ng_error err;
    if (!next_line(c->f, &c->line, &c->cap)) ng_die("eval: %s has fewer records than %s", c->facts, what);
    if (edge_score_add(c->scorer, c->line, text, &c->acc, &err))
        ng_die("eval: %s, record %ld: %s", c->facts, n, err.msg);
}

static void check_close(fact_check *c, int json) {
    print_score(&c->acc, json);
    edge_scorer_free(c->scorer);
    fclose(c->f);
    free(c->line);
}

/* --score: the prompts of pred ({"output": ...} lines) against the facts, no model. */
static int eval_score(const char *pred, const char *facts, const char *vocab, long limit, int json) {
    if (!facts) ng_die("eval: --score needs --facts FACTS.jsonl");
    fact_check fc;
    check_open(&fc, facts, vocab);
    FILE *fp = fopen(pred, "rb");
    if (!fp) ng_die("eval: %s: cannot open", pred);
    char *line = NULL;
    size_t cap = 0;
    for (long n = 0; (limit <= 0 || n < limit) && next_line(fp, &line, &cap); n++) {
        cJSON *js = cJSON_Parse(line);
        if (!js) ng_die("eval: %s, record %ld: invalid JSON", pred, n + 1);
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(js, "output");
        /* a record without a string "output" wrote nothing (as eval_pairs.js counts it) */
        check_add(&fc, cJSON_IsString(o) ? o->valuestring : "", pred, n + 1);
        cJSON_Delete(js);
    }
    free(line);
    fclose(fp);
    check_close(&fc, json);
    return 0;
}

/* --pairs: the comprehensive prompts for the records of pairs, one JSON line each into out,
 * scored against facts when given. */
static int eval_pairs(const cli_opts *o, const char *pairs, const char *out, long limit, int beams,
                      const char *facts, const char *vocab) {
    if (!out) ng_die("eval: --pairs needs -o PRED.jsonl");
    if (vocab && !facts) ng_die("eval: --vocab goes with --facts");
    fact_check fc;
    if (facts) check_open(&fc, facts, vocab);
    ng_model *m = cli_load_model(o);
    if (!m->tok) ng_die("eval: %s has no tokenizer", o->model);
    ng_lora *lora = cli_load_lora(o, m);
    FILE *in = fopen(pairs, "rb");
    if (!in) ng_die("eval: %s: cannot open", pairs);
    FILE *f = fopen(out, "wb");
    if (!f) ng_die("eval: %s: cannot write", out);
    int max_tokens = o->n_predict > 0 ? o->n_predict : 128;
    char *line = NULL;
    size_t cap = 0;
    long n = 0, failed = 0, lineno = 0;
    ng_error err;
    double t0 = ng_time();
    while (getline(&line, &cap, in) >= 0 && (limit <= 0 || n < limit)) {
        lineno++;
        if (line[strspn(line, " \t\r\n")] == 0) continue;
        cJSON *js = cJSON_Parse(line);
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(js, "instruction");
        if (!cJSON_IsString(ins)) ng_die("eval: %s:%ld: a record needs a string \"instruction\"", pairs, lineno);
        char *text = edge_complete_search(m, lora, ins->valuestring, max_tokens, beams, &err);
        if (!text) {
            if (failed++ < 5) ng_log("eval: %s:%ld: %s\n", pairs, lineno, err.msg);
        }
        if (facts) check_add(&fc, text ? text : "", pairs, n + 1);
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddStringToObject(rec, "output", text ? text : "");
        char *s = cJSON_PrintUnformatted(rec);
        fprintf(f, "%s\n", s);
        free(s), free(text);
        cJSON_Delete(rec), cJSON_Delete(js);
        n++;
        if (n % 10 == 0) {
            double dt = ng_time() - t0;
            ng_log("[%ld%s%ld] %.2f s per record\n", n, limit > 0 ? "/" : "", limit > 0 ? limit : 0L, dt / (double)n);
        }
    }
    free(line);
    fclose(in);
    if (fclose(f)) ng_die("eval: %s: write failed", out);
    if (!o->json || !facts)
        printf("%s: %ld records (%ld did not fit the context) in %.1f s -> %s\n", pairs, n, failed, ng_time() - t0,
               out);
    if (facts) check_close(&fc, o->json);
    ng_lora_free(lora);
    ng_model_free(m);
    return 0;
}

typedef struct {
    double nll, ref_nll, kl, dsum, dmax;
    long long n, ncmp;
} eval_acc;

/* log-softmax of row (n floats) into lp, in double. */
static void log_softmax(const float *row, int n, double *lp) {
    double lse = ng_log_sum_exp(row, n);
    for (int i = 0; i < n; i++) lp[i] = row[i] - lse;
}

int cmd_eval(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    const char *file = NULL, *ref_path = NULL, *pairs = NULL, *out = NULL, *facts = NULL, *vocab = NULL, *score = NULL;
    long limit = 0, beams = EDGE_BEAMS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (!strcmp(a, "-f") || !strcmp(a, "--file")) file = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--ref")) ref_path = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--pairs")) pairs = cli_value(argc, argv, &i);
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--score")) score = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--facts")) facts = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--vocab")) vocab = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--limit")) limit = cli_long("--limit", cli_value(argc, argv, &i), 1, 1L << 30);
        else if (!strcmp(a, "--beams")) beams = cli_long("--beams", cli_value(argc, argv, &i), 1, EDGE_MAX_BEAMS);
        else cli_positional(&o, a, "eval");
    }
    if (score && !o.model && !pairs && !file && o.n_pos == 0) return eval_score(score, facts, vocab, limit, o.json);
    if (o.model && pairs && !file && o.n_pos == 0) return eval_pairs(&o, pairs, out, limit, (int)beams, facts, vocab);
    if (!o.model || !file || o.n_pos > 0) {
        fputs(HELP, stderr);
        return 2;
    }
    ng_model *m = cli_load_model(&o);
    if (!m->tok) ng_die("eval: %s has no tokenizer", o.model);
    ng_model *r = NULL;
    ng_error err;
    if (ref_path) {
        if (!(r = ng_model_load(ref_path, &err))) ng_die("%s", err.msg);
        if (r->hp.n_vocab != m->hp.n_vocab)
            ng_die("eval: --ref %s has %d tokens in its vocabulary, %s has %d", ref_path, r->hp.n_vocab, o.model,
                   m->hp.n_vocab);
    }
    size_t len;
    char *text = ng_read_file(file, &len, &err);
    if (!text) ng_die("%s", err.msg);
    int n_text;
    int *ids = tok_encode(m->tok, text, len, &n_text);
    free(text);
    int bos = tok_add_bos(m->tok) ? tok_bos(m->tok) : -1, n = n_text + (bos >= 0);
    int *toks = xmalloc(((size_t)n + 1) * sizeof *toks);
    if (bos >= 0) toks[0] = bos;
    memcpy(toks + (bos >= 0), ids, (size_t)n_text * sizeof *ids);
    free(ids);
    int max_ctx = r && r->hp.n_ctx < m->hp.n_ctx ? r->hp.n_ctx : m->hp.n_ctx;
    int ctx = o.ctx ? o.ctx : (max_ctx < 512 ? max_ctx : 512);
    if (ctx < 2 || ctx > max_ctx) ng_die("eval: --ctx %d is outside [2, %d] (the model's context)", ctx, max_ctx);
    if (n < 2) ng_die("eval: %s gives %d token(s); at least 2 are needed", file, n);
    int V = m->hp.n_vocab, nwin = (n + ctx - 1) / ctx;
    if (n - (nwin - 1) * ctx < 2) nwin--; /* a last window of one token predicts nothing */
    ng_state *s = ng_state_new(m, ctx, ctx), *rs = r ? ng_state_new(r, ctx, ctx) : NULL;
    ng_lora *lora = cli_load_lora(&o, m); /* the model's perplexity with its adapters */
    s->lora = lora;
    float *lg = xmalloc((size_t)ctx * V * sizeof *lg), *rlg = r ? xmalloc((size_t)ctx * V * sizeof *rlg) : NULL;
    double *lp = xmalloc((size_t)V * sizeof *lp), *rlp = xmalloc((size_t)V * sizeof *rlp);
    eval_acc acc = {0};
    double t0 = ng_time();
    for (int w = 0; w < nwin; w++) {
        int p0 = w * ctx, wn = n - p0 < ctx ? n - p0 : ctx;
        ng_state_reset(s);
        if (ng_forward(m, s, toks + p0, wn, lg, 1, &err)) ng_die("eval: %s", err.msg);
        if (r) {
            ng_state_reset(rs);
            if (ng_forward(r, rs, toks + p0, wn, rlg, 1, &err)) ng_die("eval: %s", err.msg);
        }
        for (int i = 0; i + 1 < wn; i++) { /* logits at i predict token i + 1 */
            const float *row = lg + (size_t)i * V;
            log_softmax(row, V, lp);
            acc.nll -= lp[toks[p0 + i + 1]];
            acc.n++;
            if (!r) continue;
            const float *rrow = rlg + (size_t)i * V;
            log_softmax(rrow, V, rlp);
            acc.ref_nll -= rlp[toks[p0 + i + 1]];
            double kl = 0;
            for (int v = 0; v < V; v++) {
                double d = fabs((double)row[v] - rrow[v]);
                acc.dsum += d;
                acc.dmax = d > acc.dmax ? d : acc.dmax;
                kl += exp(rlp[v]) * (rlp[v] - lp[v]);
            }
            acc.kl += kl;
            acc.ncmp += V;
        }
        if (!o.json || ng_verbose > 1)
            ng_log("[%d/%d] %lld tokens, PPL %.4f (%.1f tok/s)\n", w + 1, nwin, acc.n, exp(acc.nll / (double)acc.n),
                   (double)(p0 + wn) / (ng_time() - t0));
    }
    double ppl = exp(acc.nll / (double)acc.n);
    if (o.json) {
        printf("{\"model\":\"%s\",\"tokens\":%d,\"predicted\":%lld,\"ctx\":%d,\"windows\":%d,\"nll\":%.6f,\"ppl\":%.6f",
               m->name, n, acc.n, ctx, nwin, acc.nll / (double)acc.n, ppl);
        if (r)
            printf(",\"ref_ppl\":%.6f,\"mean_abs_logit_diff\":%.6g,\"max_abs_logit_diff\":%.6g,\"kl\":%.6g",
                   exp(acc.ref_nll / (double)acc.n), acc.dsum / (double)acc.ncmp, acc.dmax, acc.kl / (double)acc.n);
        printf("}\n");
    } else {
        printf("%s: %lld predicted tokens in %d window(s) of up to %d: PPL %.4f\n", o.model, acc.n, nwin, ctx, ppl);
        if (r)
            printf("vs %s (PPL %.4f): |logit diff| mean %.4g max %.4g, KL(ref || model) %.4g per token\n", ref_path,
                   exp(acc.ref_nll / (double)acc.n), acc.dsum / (double)acc.ncmp, acc.dmax, acc.kl / (double)acc.n);
    }
    free(lg), free(rlg), free(lp), free(rlp), free(toks);
    ng_state_free(s);
    ng_lora_free(lora);
    if (rs) ng_state_free(rs);
    if (r) ng_model_free(r);
    ng_model_free(m);
    return 0;
}
