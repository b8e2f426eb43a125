/* netgpt generate — run a model on a prompt and stream the text as it is made. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/kernels.h"
#include "model/lora.h"
#include "tokenizer/chat.h"

static const char HELP[] =
    "usage: netgpt generate -m MODEL -p PROMPT [-n N] [options]\n"
    "\n"
    "Streams the continuation of PROMPT to stdout; timings go to stderr.\n"
    "\n"
    "  -m, --model PATH       GGUF file or Hugging Face model folder\n"
    "  -p, --prompt TEXT      the prompt (LLaMA models get BOS first; an empty GPT-2 prompt\n"
    "                         starts from the end-of-text token)\n"
    "      --prompt-ids IDS   the prompt as token ids (\"1 2 3\"), e.g. for models without a tokenizer\n"
    "  -n, --n-predict N      tokens to generate (default 128, or what the context leaves)\n"
    "      --ids              print generated token ids (space separated) instead of text\n"
    "      --ignore-eos       keep generating after the end-of-text token\n"
    "      --chat             treat PROMPT as a user message in the model's chat template\n"
    "      --system TEXT      with --chat: a system message first\n"
    "      --chat-template T  llama2 | chatml | zephyr (default: from the model's\n"
    "                         tokenizer.chat_template, else llama2 for SentencePiece,\n"
    "                         chatml for GPT-2 vocabularies)\n"
    "      --temp T           temperature; 0 = greedy (default 0.8)\n"
    "      --top-k K          keep the K most likely tokens; 0 = off (default 40)\n"
    "      --top-p P          nucleus sampling mass; 1 = off (default 0.95)\n"
    "      --min-p P          drop tokens below P x the best one's probability (default 0.05)\n"
    "      --repeat-penalty R penalty for recent tokens; 1 = off (default 1)\n"
    "      --repeat-last-n N  how many recent tokens it looks at (default 64)\n"
    "      --seed S           random seed; the same seed gives the same output (default: random)\n"
    "      --ctx N            context length (default: the model's)\n"
    "      --lora PATH[:SCALE] apply a LoRA adapter (PEFT folder or GGUF LoRA); repeatable\n"
    "      --no-mmap          copy the weights into memory of its own (huge pages) instead of\n"
    "                         reading them through the file's mapping (fewer TLB misses)\n"
    "      --kv-type T        f32 (default) or f16: the type of the cached keys and values (f16:\n"
    "                         half the memory, and half the bytes attention reads per token)\n"
    "      --no-bf16-dot      bf16 weights: keep the prompt's activations f32 (default: rounded\n"
    "                         to bf16 for AVX512-BF16's products where the CPU has them, 1.7x\n"
    "                         the prompt's speed)\n"
    "      --bf16-attention   quantized weights: a prompt's attention in bf16 with AVX512-BF16\n"
    "                         (default f32; faster, less exact: see README)\n"
    "      --kernels P        avx512, avx2 or portable: run that path's kernels (default: the\n"
    "                         best this CPU has)\n"
    "      --no-avx-vnni      AVX2 path: integer dot products without AVX-VNNI\n"
    "  -t, --threads N        threads (default: all cores)\n"
    "      --json             print one JSON object with text, ids and timings at the end\n"
    "  -q, --quiet            no timings on stderr\n";

static int *parse_ids(const char *s, int *n) {
    int cap = 64, k = 0;
    int *ids = xmalloc((size_t)cap * sizeof *ids);
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 0x7fffffff) {
            fprintf(stderr, "netgpt: --prompt-ids: '%s' is not a list of token ids\n", s);
            exit(2);
        }
        if (k == cap) ids = xrealloc(ids, (size_t)(cap *= 2) * sizeof *ids);
        ids[k++] = (int)v;
        p = end;
    }
    *n = k;
    return ids;
}

static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

int cmd_generate(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    const char *prompt_ids = NULL, *system = NULL, *template_name = NULL;
    int print_ids = 0, ignore_eos = 0, chat = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (!strcmp(a, "--prompt-ids")) prompt_ids = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--ids")) print_ids = 1;
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else if (!strcmp(a, "--chat")) chat = 1;
        else if (!strcmp(a, "--system")) system = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--chat-template")) template_name = cli_value(argc, argv, &i);
        else cli_positional(&o, a, "generate");
    }
    if (o.n_pos) {
        fprintf(stderr, "netgpt generate: unexpected argument '%s' (the prompt goes after -p)\n", o.pos[0]);
        return 2;
    }
    if (!o.seed_set) o.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    ng_model *m = cli_load_model(&o);
    const ng_tokenizer *tok = m->tok;
    if (!tok && (!prompt_ids || !print_ids)) {
        fprintf(stderr, "netgpt generate: %s has no tokenizer: give --prompt-ids and --ids\n", o.model);
        ng_model_free(m);
        return 2;
    }

    int n_prompt = 0, end_turn = -1;
    int *prompt;
    if (prompt_ids) {
        prompt = parse_ids(prompt_ids, &n_prompt);
    } else {
        const char *p = o.prompt ? o.prompt : "";
        int n_text;
        int *text_ids;
        if (chat) {
            const char *jinja = m->gguf ? gguf_get_str(m->gguf, "tokenizer.chat_template") : NULL;
            ng_chat_template t = template_name ? chat_template_by_name(template_name)
                                               : chat_template_for(jinja, strcmp(tok_kind(tok), "gpt2") != 0);
            if (t == CHAT_NONE) ng_die("--chat-template '%s' is not one of llama2, chatml, zephyr", template_name);
            ng_chat_msg msgs[2] = {{"system", system ? system : ""}, {"user", p}};
            char *text = chat_apply(t, system ? msgs : msgs + 1, system ? 2 : 1, 1);
            text_ids = tok_encode_special(tok, text, strlen(text), &n_text);
            end_turn = tok_special_id(tok, t == CHAT_CHATML ? "<|im_end|>" : "</s>");
            free(text);
        } else {
            text_ids = tok_encode(tok, p, strlen(p), &n_text);
        }
        int bos = tok_add_bos(tok);
        prompt = xmalloc((size_t)(n_text + 1) * sizeof *prompt);
        if (bos) prompt[0] = tok_bos(tok);
        memcpy(prompt + bos, text_ids, (size_t)n_text * sizeof *prompt);
        n_prompt = n_text + bos;
        free(text_ids);
    }
    if (n_prompt == 0) { /* an empty prompt starts a document */
        int start = tok ? (tok_bos(tok) >= 0 ? tok_bos(tok) : tok_eos(tok)) : -1;
        if (start < 0) {
            fprintf(stderr, "netgpt generate: empty prompt and the model has no start token\n");
            free(prompt);
            ng_model_free(m);
            return 2;
        }
        prompt = xrealloc(prompt, sizeof *prompt);
        prompt[0] = start;
        n_prompt = 1;
    }
    int n_ctx = o.ctx ? o.ctx : m->hp.n_ctx;
    if (n_ctx > m->hp.n_ctx) ng_die("--ctx %d exceeds the model's context of %d", n_ctx, m->hp.n_ctx);
    if (o.n_predict < 0) /* not given: 128, or what the context leaves */
        o.n_predict = n_ctx - n_prompt < 128 ? (n_ctx - n_prompt > 0 ? n_ctx - n_prompt : 0) : 128;
    if (n_prompt + o.n_predict > n_ctx)
        ng_die("the prompt (%d tokens) + -n %d exceed the context of %d tokens", n_prompt, o.n_predict, n_ctx);

    ng_lora *lora = cli_load_lora(&o, m);
    /* a cache for this run's tokens, not the whole context: it is committed when made */
    ng_state *s = ng_state_new(m, n_prompt + o.n_predict, n_prompt < 512 ? n_prompt : 512);
    s->lora = lora;
    ng_sampler *smp = ng_sampler_new(&o.sp, m->hp.n_vocab);
    float *logits = xmalloc((size_t)m->hp.n_vocab * sizeof *logits);
    int *hist = xmalloc((size_t)(n_prompt + o.n_predict) * sizeof *hist);
    memcpy(hist, prompt, (size_t)n_prompt * sizeof *hist);
    int n_hist = n_prompt, n_gen = 0;
    ng_error err;
    size_t text_cap = 256, text_len = 0;
    char *text = xmalloc(text_cap);

    double t0 = ng_time();
    if (ng_forward(m, s, prompt, n_prompt, logits, 0, &err)) ng_die("%s", err.msg);
    double t1 = ng_time();
    const char *stop = "length";
    while (n_gen < o.n_predict) {
        int next = ng_sampler_sample(smp, logits, hist, n_hist);
        if (tok && (next == tok_eos(tok) || next == end_turn) && !ignore_eos) {
            stop = "eos";
            break;
        }
        hist[n_hist++] = next;
        n_gen++;
        size_t len = 0;
        const char *piece = tok ? tok_piece(tok, next, &len) : NULL;
        if (piece) {
            if (text_len + len + 1 > text_cap) text = xrealloc(text, text_cap = 2 * (text_len + len + 1));
            memcpy(text + text_len, piece, len);
            text_len += len;
        }
        if (!o.json) {
            if (print_ids) printf("%s%d", n_gen > 1 ? " " : "", next);
            else if (piece) fwrite(piece, 1, len, stdout);
            fflush(stdout);
        }
        if (n_gen == o.n_predict) break;
        if (ng_forward(m, s, &next, 1, logits, 0, &err)) ng_die("%s", err.msg);
    }
    double t2 = ng_time();
    double pp_tps = n_prompt / (t1 - t0), tg_tps = n_gen > 1 ? (n_gen - 1) / (t2 - t1) : 0;
    if (o.json) {
        printf("{\"text\":");
        json_string(stdout, text, text_len);
        printf(",\"ids\":[");
        for (int i = 0; i < n_gen; i++) printf("%s%d", i ? "," : "", hist[n_prompt + i]);
        printf("],\"prompt_tokens\":%d,\"generated_tokens\":%d,\"finish_reason\":\"%s\",\"seed\":%llu,"
               "\"prompt_tok_per_s\":%.2f,\"gen_tok_per_s\":%.2f}\n",
               n_prompt, n_gen, stop, (unsigned long long)o.sp.seed, pp_tps, tg_tps);
    } else {
        putchar('\n');
    }
    ng_log("\nprompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s | seed %llu | %d threads\n",
           n_prompt, pp_tps, n_gen, tg_tps, (unsigned long long)o.sp.seed, ng_threads());
    free(text);
    free(hist);
    free(logits);
    free(prompt);
    ng_sampler_free(smp);
    ng_state_free(s);
    ng_lora_free(lora);
    ng_model_free(m);
    return 0;
}
