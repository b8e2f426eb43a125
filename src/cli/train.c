/* netgpt train — full or LoRA fine-tuning from JSONL / text, with evaluation, checkpoints that
 * resume exactly, Ctrl-C that saves, and outputs as PEFT / GGUF LoRA / merged GGUF. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/kernels.h"
#include "train/adapter.h"
#include "train/data.h"
#include "train/train.h"

static const char HELP[] =
    "usage: netgpt train -m BASE --data FILE -o OUTDIR [options]\n"
    "\n"
    "Fine-tunes BASE (GGUF or Hugging Face folder; f32/f16/bf16, or q8_0/q4_0 for LoRA) on FILE\n"
    "and writes the result into OUTDIR. Progress goes to stderr, the summary to stdout.\n"
    "\n"
    "data:\n"
    "      --data FILE        training data (.jsonl: Alpaca {instruction, input, output} or chat\n"
    "                         {messages: [{role, content}]}; anything else: plain text)\n"
    "      --format F         auto | alpaca | chat | text (default auto: by extension and first line)\n"
    "      --val FILE         validation data (same format)\n"
    "      --val-split F      hold out this fraction of the examples instead (0 < F < 1)\n"
    "      --text-whole-file  text: the whole file is one document (default: blank lines separate\n"
    "                         documents)\n"
    "      --chat-template T  chat: llama2 | chatml | zephyr (default: the model's, else llama2 for\n"
    "                         SentencePiece vocabularies, chatml for GPT-2; as netgpt serve)\n"
    "      --strict           stop at the first bad line (default: report FILE:LINE and skip it)\n"
    "method:\n"
    "      --lora-rank R      LoRA rank (default 8); LoRA is the default method\n"
    "      --lora-alpha A     adapter scale alpha/R (default 2R)\n"
    "      --lora-dropout D   dropout on adapter inputs (default 0)\n"
    "      --lora-targets L   q,k,v,o,gate,up,down or all (default q,v)\n"
    "      --lora-tokens W    also train the embedding (and tied head) rows of these tokens, carried in\n"
    "                         the adapter as PEFT's trainable tokens: none | response (the tokens\n"
    "                         the loss counts in --data) | all (every token of --data) (default none)\n"
    "      --full             full fine-tuning of every weight instead of LoRA\n"
    "schedule:\n"
    "      --steps N          optimizer steps (default: --epochs worth)\n"
    "      --epochs E         passes over the data (default 1)\n"
    "      --batch B          rows per micro-batch (default 4)\n"
    "      --ctx T            tokens per row (default min(256, the model's context))\n"
    "      --grad-accum K     micro-batches per step (default 1)\n"
    "      --lr X             peak learning rate (default 2e-4 LoRA, 5e-5 full)\n"
    "      --min-lr X         the cosine schedule's floor (default lr/10)\n"
    "      --warmup N         linear warmup steps (default 5% of the steps, at most 100)\n"
    "      --weight-decay X   AdamW decoupled weight decay (default 0.01)\n"
    "      --clip X           global gradient-norm clip, 0 = off (default 1)\n"
    "      --recompute        recompute activations in backward (less memory, ~1/3 slower)\n"
    "      --seed S           initialization, shuffling, dropout, validation split (default 42)\n"
    "evaluation and output:\n"
    "      --eval-every N     evaluate on the validation data every N steps (default: 10 times a run)\n"
    "      --save-every N     write a checkpoint every N steps (default: only on Ctrl-C / at the end)\n"
    "      --stop-after N     stop after step N with a checkpoint, as Ctrl-C does (time-boxed jobs)\n"
    "      --resume CKPT      continue from a checkpoint (same data, flags and thread count give the\n"
    "                         same result as a run that never stopped)\n"
    "  -o, --out DIR          output folder (created): LoRA -> adapter_config.json +\n"
    "                         adapter_model.safetensors (peft), adapter.gguf (gguf), model.gguf\n"
    "                         (merged); full -> model.gguf. Checkpoints: DIR/checkpoint.ngt\n"
    "      --save-format F    LoRA output: peft | gguf | both | merged | all (default peft)\n"
    "      --json-log FILE    one JSON object per step (step, loss, lr, tokens_per_s, eval_loss)\n"
    "      --log-every N      without a terminal: one progress line every N steps (default 10)\n"
    "      --json             print the summary as one JSON object\n"
    "  -t, --threads N        threads (default: all cores)\n"
    "\n"
    "Ctrl-C finishes the current step, writes DIR/checkpoint.ngt and exits with status 130;\n"
    "continue with --resume DIR/checkpoint.ngt and the same flags.\n";

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) { interrupted = sig; }

typedef struct {
    const char *data, *val, *format, *out, *save_format, *json_log, *resume, *chat_template, *targets, *lora_tokens;
    double val_split, epochs, lr, min_lr, wd, clip, lora_alpha, lora_dropout;
    int full, lora_rank, steps, batch, accum, warmup, recompute, eval_every, save_every, stop_after, strict,
        whole_file, log_every;
} train_opts;

/* Mean loss over every validation row, weighted by the targets in each batch. Dropout is off
 * and the dropout stream is left where it was, so evaluating never changes training. */
static double evaluate(train_model *tm, data_loader *vl) {
    float dropout = tm->cfg.lora_dropout;
    uint64_t n_fwd = tm->n_forward;
    tm->cfg.lora_dropout = 0;
    double sum = 0, n = 0;
    ng_error err;
    for (int64_t r = 0; r < vl->rows_per_epoch; r += vl->B) {
        int k = data_batch_at(vl, r);
        if (!k) continue;
        train_batch b = {vl->B, vl->T, vl->tokens, vl->targets, vl->mask};
        float l = train_forward(tm, &b, &err);
        if (isnan(l)) ng_die("evaluation: %s", err.msg);
        sum += (double)l * k, n += k;
    }
    tm->cfg.lora_dropout = dropout;
    tm->n_forward = n_fwd;
    return n > 0 ? sum / n : NAN;
}

static void save_checkpoint(const train_model *tm, const adamw *opt, const char *dir) {
    char p[4096];
    ng_error err;
    snprintf(p, sizeof p, "%s/checkpoint.ngt", dir);
    if (train_save(tm, opt, p, &err)) ng_die("%s", err.msg);
    ng_log("\ncheckpoint at step %lld: %s\n", (long long)tm->step, p);
}

static void fmt_time(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

/* Writes what --save-format asks for; lists the paths in written. */
static void save_outputs(const train_model *tm, ng_model *base, const train_opts *a, const char *base_name,
                         char *written, size_t n) {
    ng_error err;
    char p[4096];
    const char *f = a->save_format;
    int all = !strcmp(f, "all"), peft = tm->cfg.lora && (all || !strcmp(f, "peft") || !strcmp(f, "both"));
    int gg = tm->cfg.lora && (all || !strcmp(f, "gguf") || !strcmp(f, "both"));
    int merged = !tm->cfg.lora || all || !strcmp(f, "merged");
    written[0] = 0;
    if (peft) {
        if (adapter_save_peft(tm, a->out, base_name, &err)) ng_die("%s", err.msg);
        snprintf(written + strlen(written), n - strlen(written), "%s%s (PEFT)", written[0] ? ", " : "", a->out);
    }
    if (gg) {
        snprintf(p, sizeof p, "%s/adapter.gguf", a->out);
        if (adapter_save_gguf(tm, p, base_name, &err)) ng_die("%s", err.msg);
        snprintf(written + strlen(written), n - strlen(written), "%s%s", written[0] ? ", " : "", p);
    }
    if (merged) {
        ng_model *m = train_export_model(tm);
        m->tok = base->tok; /* borrowed for writing the vocabulary */
        ng_type wt = ng_model_wtype(base);
        if (wt != NG_F32 && wt != NG_F16 && wt != NG_BF16) wt = NG_F16; /* a quantized base: f16 */
        snprintf(p, sizeof p, "%s/model.gguf", a->out);
        int rc = ng_model_save_gguf(m, p, wt, &err);
        m->tok = NULL;
        ng_model_free(m);
        if (rc) ng_die("%s", err.msg);
        snprintf(written + strlen(written), n - strlen(written), "%s%s (%s)", written[0] ? ", " : "", p,
                 ng_type_name(wt));
    }
}

int cmd_train(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    train_opts a = {.format = "auto", .save_format = "peft", .epochs = 0, .lr = -1, .min_lr = -1, .wd = 0.01,
                    .clip = 1.0, .lora_alpha = -1, .lora_rank = 8, .steps = 0, .batch = 4, .accum = 1, .warmup = -1,
                    .log_every = 10, .eval_every = -1};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
#define IS(x) (strcmp(s, x) == 0)
#define VAL() cli_value(argc, argv, &i)
        if (IS("-h") || IS("--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (IS("--data")) a.data = VAL();
        else if (IS("--val")) a.val = VAL();
        else if (IS("--val-split")) a.val_split = cli_double(s, VAL(), 1e-6, 0.999);
        else if (IS("--format")) a.format = VAL();
        else if (IS("--text-whole-file")) a.whole_file = 1;
        else if (IS("--chat-template")) a.chat_template = VAL();
        else if (IS("--strict")) a.strict = 1;
        else if (IS("--lora-rank")) a.lora_rank = (int)cli_long(s, VAL(), 1, 1024);
        else if (IS("--lora-alpha")) a.lora_alpha = cli_double(s, VAL(), 1e-6, 1e6);
        else if (IS("--lora-dropout")) a.lora_dropout = cli_double(s, VAL(), 0, 0.99);
        else if (IS("--lora-targets")) a.targets = VAL();
        else if (IS("--lora-tokens")) a.lora_tokens = VAL();
        else if (IS("--full")) a.full = 1;
        else if (IS("--steps")) a.steps = (int)cli_long(s, VAL(), 1, 1L << 30);
        else if (IS("--epochs")) a.epochs = cli_double(s, VAL(), 1e-6, 1e6);
        else if (IS("--batch")) a.batch = (int)cli_long(s, VAL(), 1, 65536);
        else if (IS("--grad-accum")) a.accum = (int)cli_long(s, VAL(), 1, 65536);
        else if (IS("--lr")) a.lr = cli_double(s, VAL(), 0, 10);
        else if (IS("--min-lr")) a.min_lr = cli_double(s, VAL(), 0, 10);
        else if (IS("--warmup")) a.warmup = (int)cli_long(s, VAL(), 0, 1L << 30);
        else if (IS("--weight-decay")) a.wd = cli_double(s, VAL(), 0, 10);
        else if (IS("--clip")) a.clip = cli_double(s, VAL(), 0, 1e9);
        else if (IS("--recompute")) a.recompute = 1;
        else if (IS("--eval-every")) a.eval_every = (int)cli_long(s, VAL(), 0, 1L << 30);
        else if (IS("--save-every")) a.save_every = (int)cli_long(s, VAL(), 0, 1L << 30);
        else if (IS("--stop-after")) a.stop_after = (int)cli_long(s, VAL(), 1, 1L << 30);
        else if (IS("--resume")) a.resume = VAL();
        else if (IS("-o") || IS("--out")) a.out = VAL();
        else if (IS("--save-format")) a.save_format = VAL();
        else if (IS("--json-log")) a.json_log = VAL();
        else if (IS("--log-every")) a.log_every = (int)cli_long(s, VAL(), 1, 1L << 30);
        else cli_positional(&o, s, "train");
#undef IS
#undef VAL
    }
    if (o.n_pos) {
        fprintf(stderr, "netgpt train: unexpected argument '%s'\n", o.pos[0]);
        return 2;
    }
    if (!o.model || !a.data || !a.out) {
        fprintf(stderr, "netgpt train: -m BASE, --data FILE and -o OUTDIR are required (see --help)\n");
        return 2;
    }
    int fmt = data_format_parse(a.format);
    if (fmt < 0) ng_die("--format '%s' is not one of auto, alpaca, chat, text", a.format);
    static const char *save_fmts[] = {"peft", "gguf", "both", "merged", "all"};
    int sf_ok = 0;
    for (int i = 0; i < 5; i++) sf_ok |= !strcmp(a.save_format, save_fmts[i]);
    if (!sf_ok) ng_die("--save-format '%s' is not one of peft, gguf, both, merged, all", a.save_format);
    if (a.val && a.val_split > 0) ng_die("give --val FILE or --val-split F, not both");
    if (a.steps && a.epochs > 0) ng_die("give --steps or --epochs, not both");
    int targets = lora_parse_targets(a.targets ? a.targets : "q,v");
    if (targets <= 0) ng_die("--lora-targets '%s': use q,k,v,o,gate,up,down or all", a.targets);
    const char *tw = a.lora_tokens ? a.lora_tokens : "none";
    int tok_which = !strcmp(tw, "none") ? 0 : !strcmp(tw, "response") ? 1 : !strcmp(tw, "all") ? 2 : -1;
    if (tok_which < 0) ng_die("--lora-tokens '%s': use none, response or all", tw);
    if (tok_which > 0 && a.full) ng_die("--lora-tokens is a LoRA option (--full trains every row already)");
    ng_chat_template tmpl = CHAT_NONE;
    if (a.chat_template && (tmpl = chat_template_by_name(a.chat_template)) == CHAT_NONE)
        ng_die("--chat-template '%s' is not one of llama2, chatml, zephyr", a.chat_template);
    uint64_t seed = o.seed_set ? o.sp.seed : 42;

    ng_model *m = cli_load_model(&o);
    if (!m->tok) ng_die("%s has no tokenizer to encode the data with", o.model);
    int T = o.ctx ? o.ctx : (m->hp.n_ctx < 256 ? m->hp.n_ctx : 256);
    if (T > m->hp.n_ctx) ng_die("--ctx %d exceeds the model's context of %d", T, m->hp.n_ctx);
    if (tmpl == CHAT_NONE)
        tmpl = chat_template_for(m->gguf ? gguf_get_str(m->gguf, "tokenizer.chat_template") : NULL,
                                 strcmp(tok_kind(m->tok), "gpt2") != 0);
    if (mkdir(a.out, 0755) != 0 && access(a.out, W_OK) != 0) ng_die("%s: cannot create the output folder", a.out);

    ng_error err;
    data_options dopt = {(data_format)fmt, T, a.strict, a.whole_file, tmpl, 20};
    double t_load = ng_time();
    data_set *train = data_load(a.data, m->tok, &dopt, &err), *val = NULL;
    if (!train) ng_die("%s", err.msg);
    if (a.val) {
        dopt.format = train->format;
        if (!(val = data_load(a.val, m->tok, &dopt, &err))) ng_die("%s", err.msg);
    } else if (a.val_split > 0 && !(val = data_split(train, a.val_split, seed))) {
        ng_die("%s: --val-split needs at least two examples", a.data);
    }
    int64_t rows = data_rows(train), rows_per_step = (int64_t)a.batch * a.accum;
    int total = a.steps ? a.steps : (int)ceil((a.epochs > 0 ? a.epochs : 1) * (double)rows / (double)rows_per_step);
    if (total < 1) total = 1;
    ng_log("data: %s (%s), %d examples, %lld tokens (%lld counted), %lld rows of %d; %lld bad lines skipped, "
           "%lld too long dropped; %.1f s\n",
           a.data, data_format_name(train->format), train->n_ex, (long long)train->n_tokens,
           (long long)train->n_target_tokens, (long long)rows, T, (long long)train->n_bad, (long long)train->n_too_long,
           ng_time() - t_load);
    if (val)
        ng_log("validation: %d examples, %lld counted tokens\n", val->n_ex, (long long)val->n_target_tokens);

    int n_tok_ids = 0, *tok_ids = NULL;
    if (!a.full && tok_which > 0) {
        tok_ids = data_token_set(train, m->hp.n_vocab, tok_which == 1, &n_tok_ids);
        ng_log("trainable tokens: %d (%s)\n", n_tok_ids, a.lora_tokens);
    }
    train_config cfg = {.lora = !a.full, .lora_rank = a.lora_rank,
                        .lora_alpha = (float)(a.lora_alpha > 0 ? a.lora_alpha : 2.0 * a.lora_rank),
                        .lora_dropout = (float)a.lora_dropout, .lora_targets = (unsigned)targets,
                        .recompute = a.recompute, .max_B = a.batch, .max_T = T, .seed = seed,
                        .tok_ids = tok_ids, .n_tok_ids = n_tok_ids};
    train_model *tm = train_new(m, &cfg, &err);
    if (!tm) ng_die("%s", err.msg);
    adamw_config oc = adamw_defaults(total);
    oc.lr = (float)(a.lr >= 0 ? a.lr : a.full ? 5e-5 : 2e-4);
    oc.min_lr = (float)(a.min_lr >= 0 ? a.min_lr : oc.lr / 10);
    oc.warmup_steps = a.warmup >= 0 ? a.warmup : (total / 20 < 100 ? total / 20 : 100);
    oc.weight_decay = (float)a.wd;
    oc.grad_clip = (float)a.clip;
    adamw *opt = adamw_new(&oc, tm->n_params);
    if (a.resume) {
        if (train_load(tm, opt, a.resume, &err)) ng_die("%s", err.msg);
        if (tm->step >= total) ng_die("%s: already at step %lld of %d", a.resume, (long long)tm->step, total);
        ng_log("resumed from %s at step %lld\n", a.resume, (long long)tm->step);
    }
    ng_log("%s: %s, %zu trainable values, %d steps of %d x %d x %d tokens, lr %g, %d threads\n", o.model,
           a.full ? "full fine-tuning" : "LoRA", tm->n_params, total, a.accum, a.batch, T, oc.lr, ng_threads());

    data_loader *dl = data_loader_new(train, a.batch * a.accum, seed, 1, tok_eos(m->tok));
    data_loader_seek(dl, tm->step);
    data_loader *vl = val ? data_loader_new(val, a.batch, seed, 0, tok_eos(m->tok)) : NULL;
    int eval_every = a.eval_every >= 0 ? a.eval_every : (total >= 10 ? total / 10 : 1);
    FILE *jl = NULL;
    if (a.json_log && !(jl = fopen(a.json_log, a.resume ? "a" : "w"))) ng_die("%s: cannot create", a.json_log);
    train_batch *micro = xmalloc((size_t)a.accum * sizeof *micro);
    size_t per_micro = (size_t)a.batch * T;
    for (int k = 0; k < a.accum; k++)
        micro[k] = (train_batch){a.batch, T, dl->tokens + k * per_micro, dl->targets + k * per_micro,
                                 dl->mask + k * per_micro};

    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C ends the program at once */
    sigaction(SIGINT, &sa, NULL);

    int tty = isatty(2), stopped = 0;
    double t0 = ng_time(), last_loss = NAN, eval_loss = NAN, loss_sum = 0;
    int64_t start_step = tm->step, n_tok = 0, n_counted = 0;
    int n_loss = 0;
    while (tm->step < total) {
        int counted = data_next(dl);
        double ts = ng_time();
        float lr = adamw_lr(&oc, tm->step);
        float loss = train_step(tm, opt, micro, a.accum, &err);
        if (!isfinite(loss)) ng_die("step %lld: loss is %g%s%s", (long long)tm->step + 1, loss, err.msg[0] ? ": " : "", err.msg);
        double now = ng_time(), step_s = now - ts;
        n_tok += (int64_t)rows_per_step * T, n_counted += counted;
        last_loss = loss;
        loss_sum = n_loss < 10 ? loss_sum + loss : loss_sum * 0.9 + loss; /* smoothed, for display */
        n_loss++;
        double shown = n_loss < 10 ? loss_sum / n_loss : loss_sum / 10.0;
        int did_eval = 0;
        if (vl && ((eval_every && tm->step % eval_every == 0) || tm->step == total)) {
            eval_loss = evaluate(tm, vl);
            did_eval = 1;
        }
        double tps = (double)n_tok / (now - t0);
        if (jl) {
            fprintf(jl, "{\"step\":%lld,\"loss\":%.7g,\"lr\":%.6g,\"tokens_per_s\":%.1f", (long long)tm->step, loss, lr,
                    (double)rows_per_step * T / step_s);
            if (did_eval) fprintf(jl, ",\"eval_loss\":%.7g", eval_loss);
            fputs("}\n", jl);
            fflush(jl);
        }
        if (ng_verbose >= 1 && (tty || tm->step % a.log_every == 0 || tm->step == total || did_eval)) {
            char eta[32], ev[48] = "";
            fmt_time(eta, sizeof eta, (now - t0) / (double)(tm->step - start_step) * (double)(total - tm->step));
            if (!isnan(eval_loss)) snprintf(ev, sizeof ev, " | eval %.4f", eval_loss);
            fprintf(stderr, "%sstep %lld/%d | loss %.4f%s | %.0f tok/s | lr %.3g | ETA %s%s", tty ? "\r\033[K" : "",
                    (long long)tm->step, total, shown, ev, tps, lr, eta, tty ? "" : "\n");
        }
        if (a.save_every && tm->step % a.save_every == 0 && tm->step < total) save_checkpoint(tm, opt, a.out);
        if ((interrupted || (a.stop_after && tm->step == a.stop_after)) && tm->step < total) {
            stopped = 1;
            break;
        }
    }
    if (tty && ng_verbose >= 1) fputc('\n', stderr);
    double elapsed = ng_time() - t0;
    char written[8192] = "";
    if (stopped) {
        save_checkpoint(tm, opt, a.out);
        ng_log("%s at step %lld of %d; continue with: --resume %s/checkpoint.ngt (and the same flags)\n",
               interrupted ? "interrupted" : "stopped", (long long)tm->step, total, a.out);
    } else {
        save_outputs(tm, m, &a, o.model, written, sizeof written);
    }
    if (vl && isnan(eval_loss) && !stopped) eval_loss = evaluate(tm, vl);
    if (o.json) {
        printf("{\"steps\":%lld,\"total_steps\":%d,\"stopped\":%s,\"tokens\":%lld,\"counted_tokens\":%lld,"
               "\"seconds\":%.3f,\"train_loss\":%.6g,\"train_ppl\":%.6g",
               (long long)tm->step, total, stopped ? "true" : "false", (long long)n_tok, (long long)n_counted, elapsed,
               last_loss, exp(last_loss));
        if (!isnan(eval_loss)) printf(",\"eval_loss\":%.6g,\"eval_ppl\":%.6g", eval_loss, exp(eval_loss));
        printf(",\"bad_lines\":%lld,\"too_long\":%lld,\"out\":\"%s\"}\n", (long long)train->n_bad,
               (long long)train->n_too_long, a.out);
    } else {
        printf("trained %lld steps (%lld this run) in %.1f s: %lld tokens, %lld counted in the loss (%.0f tok/s)\n",
               (long long)tm->step, (long long)(tm->step - start_step), elapsed, (long long)n_tok,
               (long long)n_counted, elapsed > 0 ? n_tok / elapsed : 0);
        printf("final train loss %.4f (ppl %.2f)", last_loss, exp(last_loss));
        if (!isnan(eval_loss)) printf(", eval loss %.4f (ppl %.2f)", eval_loss, exp(eval_loss));
        printf("\ndata: %lld bad lines skipped, %lld examples too long dropped\n", (long long)train->n_bad,
               (long long)train->n_too_long);
        if (written[0]) printf("wrote %s\n", written);
    }
    if (jl) fclose(jl);
    free(micro);
    data_loader_free(dl);
    data_loader_free(vl);
    data_free(train);
    data_free(val);
    adamw_free(opt);
    train_free(tm);
    free(tok_ids);
    ng_model_free(m);
    return stopped ? (interrupted ? 130 : 0) : 0;
}
