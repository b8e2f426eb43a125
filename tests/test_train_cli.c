/* test_train_cli — `netgpt train` end to end (the sanitizer build): a tiny GPT-2 fine-tuned
 * with LoRA and fully on a synthetic instruction task (tests/testdata/train, made by
 * make_fixtures.sh) must reach a low held-out loss and answer held-out prompts with
 * `netgpt generate --temp 0` (through --lora PEFT, GGUF LoRA and the merged GGUF); `netgpt
 * merge` of the adapter must equal the merged export; bad lines are reported FILE:LINE and
 * skipped (or fail with --strict); a run stopped and resumed ends exactly where an
 * uninterrupted one does; Ctrl-C leaves a checkpoint that resumes. */
#include "test.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/kernels.h"
#include "model/model.h"

#define BIN "build/san/netgpt"
#define TD "tests/testdata/train/"
#define BASE TD "base-a.gguf"
/* the task b data; every held-out prompt is a phrasing of its digit not seen in training */
#define TRAIN_B TD "codes-b-train.jsonl"
#define VAL_B TD "codes-b-val.jsonl"
/* flags every learning run shares */
#define COMMON " --batch 8 --ctx 60 --warmup 3 -t 2 --seed 3 --log-every 20"

static int run(const char *cmd, char **out, char **err) {
    char full[4096];
    snprintf(full, sizeof full, "%s >build/tmp/train-cli.out 2>build/tmp/train-cli.err", cmd);
    int st = system(full);
    size_t n;
    ng_error e;
    char *o = ng_read_file("build/tmp/train-cli.out", &n, &e), *r = ng_read_file("build/tmp/train-cli.err", &n, &e);
    if (out) *out = o;
    else free(o);
    if (err) *err = r;
    else free(r);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* A number after "key": in a one-line JSON summary; NAN when absent. */
static double json_num(const char *s, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = s ? strstr(s, k) : NULL;
    return p ? strtod(p + strlen(k), NULL) : NAN;
}

/* Greedy answers to every held-out prompt of VAL_B (into answers[20], may be NULL); returns
 * how many are right. */
static int held_out_correct(const char *model, const char *lora, int *n_total, char (*answers)[16]) {
    ng_error e;
    char *text = ng_read_file(VAL_B, NULL, &e);
    if (!text) return 0;
    int right = 0, n = 0;
    for (char *line = strtok(text, "\n"); line && n < 20; line = strtok(NULL, "\n")) {
        char ins[128], want[16];
        if (sscanf(line, "{\"instruction\": \"%127[^\"]\", \"output\": \"%15[^\"]\"}", ins, want) != 2) continue;
        /* the Alpaca prompt, its newlines kept literally inside the shell's double quotes */
        char cmd[1024], *out = NULL;
        snprintf(cmd, sizeof cmd, BIN " generate -m %s %s%s --temp 0 -n 4 -q -t 2 -p \"### Instruction:\n%s\n\n### Response:\n\"",
                 model, lora ? "--lora " : "", lora ? lora : "", ins);
        int rc = run(cmd, &out, NULL);
        char got[16] = "";
        if (out) sscanf(out, "%15s", got);
        if (answers) memcpy(answers[n], got, sizeof got);
        if (rc == 0 && !strcmp(got, want)) right++;
        n++;
        free(out);
    }
    free(text);
    *n_total = n;
    return right;
}

/* Trains the base on task b with the shared flags and `flags`, and checks that the held-out
 * loss falls below max_eval. Returns 0 when the run failed (a failed check); *log gets the
 * run's stderr when log is not NULL. */
static int learn_task_b(const char *flags, double max_eval, char **log) {
    char cmd[1024], *out = NULL, *err = NULL;
    snprintf(cmd, sizeof cmd, BIN " train -m " BASE " --data " TRAIN_B " --val " VAL_B COMMON " --json %s", flags);
    int rc = run(cmd, &out, &err);
    CHECK(rc == 0, "train exit %d: %s", rc, err ? err : "");
    double ev = json_num(out, "eval_loss");
    if (rc == 0) CHECK(ev < max_eval, "held-out eval loss %g (threshold %g): %s", ev, max_eval, out);
    free(out);
    if (log) *log = err;
    else free(err);
    return rc == 0;
}

/* LoRA on the frozen base (q,k,v,o,up,down adapters). Task b re-maps every digit the base
 * answers confidently, which low-rank adapters learn far more slowly than full fine-tuning:
 * the loss must fall from ~7 to below 1.6 on held-out prompts, and the three ways to apply
 * the result (PEFT on the base, GGUF LoRA on the base, the merged model) must give the same
 * greedy answers; `netgpt merge` must equal the merged export. */
static void test_lora_learns(void) {
    if (!learn_task_b("--lora-rank 8 --lora-alpha 64 --lora-targets all --lr 1e-2 --steps 150 --save-format all"
                      " -o build/tmp/tr-lora --json-log build/tmp/tr-lora.jsonl",
                      1.6, NULL))
        return;
    char *err = NULL;
    char a[20][16], b[20][16], c[20][16];
    int n1, n2, n3;
    held_out_correct(BASE, "build/tmp/tr-lora", &n1, a);
    held_out_correct(BASE, "build/tmp/tr-lora/adapter.gguf", &n2, b);
    held_out_correct("build/tmp/tr-lora/model.gguf", NULL, &n3, c);
    CHECK(n1 == 20 && n2 == 20 && n3 == 20, "held-out prompts: %d %d %d", n1, n2, n3);
    for (int i = 0; i < 20 && i < n1; i++)
        CHECK(!strcmp(a[i], b[i]) && !strcmp(a[i], c[i]), "prompt %d: PEFT '%s', GGUF LoRA '%s', merged '%s'", i, a[i],
              b[i], c[i]);

    int rc = run(BIN " merge -m " BASE " --lora build/tmp/tr-lora -o build/tmp/tr-merge.gguf --type f32", NULL, &err);
    CHECK(rc == 0, "merge exit %d: %s", rc, err ? err : "");
    free(err);
    ng_error e = {{0}};
    ng_model *ma = ng_model_load("build/tmp/tr-lora/model.gguf", &e), *mb = ng_model_load("build/tmp/tr-merge.gguf", &e);
    REQUIRE(ma && mb, "%s", e.msg);
    int ids[16];
    for (int i = 0; i < 16; i++) ids[i] = (i * 41 + 7) % ma->hp.n_vocab;
    size_t nl = 16 * (size_t)ma->hp.n_vocab;
    float *la = xmalloc(nl * sizeof *la), *lb = xmalloc(nl * sizeof *lb);
    ng_state *sa = ng_state_new(ma, 16, 16), *sb = ng_state_new(mb, 16, 16);
    CHECK(ng_forward(ma, sa, ids, 16, la, 1, &e) == 0 && ng_forward(mb, sb, ids, 16, lb, 1, &e) == 0, "%s", e.msg);
    double d = t_max_abs_diff(la, lb, nl);
    CHECK(d <= 1e-4, "netgpt merge vs merged export: max logit diff %g", d);
    free(la), free(lb);
    ng_state_free(sa), ng_state_free(sb);
    ng_model_free(ma), ng_model_free(mb);
}

/* The same LoRA run with --lora-tokens response: the answer digits' own embedding and head
 * rows are trained too (carried in the adapter), which is what task b needs: the held-out
 * loss must fall below 0.2, as full fine-tuning's does, and PEFT, GGUF LoRA and the merged
 * model must each answer >= 18 of the 20 held-out prompts. Bad uses of the flag are refused. */
static void test_lora_tokens_learns(void) {
    char *out = NULL, *err = NULL;
    if (!learn_task_b("--lora-rank 8 --lora-alpha 64 --lora-targets all --lora-tokens response --lr 1e-2 --steps 150"
                      " --save-format all -o build/tmp/tr-tok",
                      0.2, &err))
        return;
    CHECK(err && strstr(err, "trainable tokens: "), "no trainable-token count in the log: %s", err ? err : "");
    free(err);
    const char *models[3] = {BASE, BASE, "build/tmp/tr-tok/model.gguf"};
    const char *loras[3] = {"build/tmp/tr-tok", "build/tmp/tr-tok/adapter.gguf", NULL};
    for (int i = 0; i < 3; i++) {
        int n, right = held_out_correct(models[i], loras[i], &n, NULL);
        CHECK(n == 20 && right >= 18, "%s: %d of %d held-out prompts answered right", loras[i] ? loras[i] : models[i],
              right, n);
    }
    /* the adapter as q8_0 (B matrices of rank 8 in f16): smaller, and it still answers */
    int rc = run(BIN " quantize build/tmp/tr-tok/adapter.gguf build/tmp/tr-tok-q8.gguf q8_0", &out, &err);
    CHECK(rc == 0 && out && strstr(out, "q8_0 adapter"), "quantize the adapter: exit %d: %s%s", rc, out ? out : "",
          err ? err : "");
    free(out), free(err);
    struct stat sf, sq;
    CHECK(stat("build/tmp/tr-tok/adapter.gguf", &sf) == 0 && stat("build/tmp/tr-tok-q8.gguf", &sq) == 0 &&
              sq.st_size * 2 < sf.st_size,
          "q8_0 adapter is not under half the f32 one's size");
    int nq, right_q = held_out_correct(BASE, "build/tmp/tr-tok-q8.gguf", &nq, NULL);
    CHECK(nq == 20 && right_q >= 18, "q8_0 adapter: %d of %d held-out prompts answered right", right_q, nq);
    rc = run(BIN " train -m " BASE " --data " TRAIN_B " --lora-tokens some -o build/tmp/tr-tok2", NULL, &err);
    CHECK(rc != 0 && err && strstr(err, "--lora-tokens 'some'"), "unknown --lora-tokens: exit %d: %s", rc, err ? err : "");
    free(err);
    rc = run(BIN " train -m " BASE " --data " TRAIN_B " --full --lora-tokens all -o build/tmp/tr-tok2", NULL, &err);
    CHECK(rc != 0 && err && strstr(err, "LoRA option"), "--full with --lora-tokens: exit %d: %s", rc, err ? err : "");
    free(err);
}

/* Full fine-tuning of every weight: a low held-out loss and >= 90% of the held-out prompts
 * answered right by `netgpt generate --temp 0` on the written model (the base answers none). */
static void test_full_learns(void) {
    if (!learn_task_b("--full --lr 1e-2 --steps 100 -o build/tmp/tr-full", 0.2, NULL)) return;
    int n, right = held_out_correct("build/tmp/tr-full/model.gguf", NULL, &n, NULL);
    CHECK(n == 20 && right >= 18, "%d of %d held-out prompts answered right", right, n);
    right = held_out_correct(BASE, NULL, &n, NULL);
    CHECK(right == 0, "the base already answers %d of task b's prompts", right);
}

/* Bad lines: reported as FILE:LINE and skipped; --strict stops with status 1. */
static void test_bad_lines(void) {
    char *out = NULL, *err = NULL;
    int rc = run(BIN " train -m " BASE " --data " TD "bad.jsonl --steps 1 --batch 2 --ctx 60 -t 2 -o build/tmp/tr-bad",
                 &out, &err);
    CHECK(rc == 0, "exit %d: %s", rc, err ? err : "");
    const char *want[] = {TD "bad.jsonl:2: invalid JSON", TD "bad.jsonl:3: missing field \"output\"",
                          TD "bad.jsonl:4: field \"instruction\" must be a string", TD "bad.jsonl:5: field \"output\" is empty",
                          TD "bad.jsonl:7: a line must be a JSON object"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK(err && strstr(err, want[i]), "stderr lacks '%s':\n%s", want[i], err ? err : "");
    CHECK(out && strstr(out, "5 bad lines skipped"), "summary: %s", out ? out : "");
    free(out), free(err);
    rc = run(BIN " train -m " BASE " --data " TD "bad.jsonl --strict --steps 1 --batch 2 --ctx 60 -o build/tmp/tr-bad", NULL,
             &err);
    CHECK(rc == 1 && err && strstr(err, TD "bad.jsonl:2: invalid JSON"), "--strict: exit %d: %s", rc, err ? err : "");
    free(err);
    rc = run(BIN " train -m " BASE " --data " TD "bad.jsonl -o build/tmp/tr-bad --lora-targets q,x", NULL, &err);
    CHECK(rc == 1 && err && strstr(err, "--lora-targets"), "bad targets: exit %d", rc);
    free(err);
    rc = run(BIN " train -m " BASE " --data " TD "bad.jsonl", NULL, &err);
    CHECK(rc == 2 && err && strstr(err, "-o"), "missing -o: exit %d", rc);
    free(err);
    rc = run(BIN " train --help", &out, NULL);
    CHECK(rc == 0 && out && strstr(out, "usage: netgpt train"), "--help");
    free(out);
}

/* The loss of step `step` in a --json-log file, as written (exact text). */
static int log_loss(const char *path, int step, char *buf, size_t n) {
    char *text = ng_read_file(path, NULL, &(ng_error){{0}});
    char key[48];
    snprintf(key, sizeof key, "{\"step\":%d,\"loss\":", step);
    const char *p = text ? strstr(text, key) : NULL;
    int ok = p != NULL;
    if (ok) snprintf(buf, n, "%.*s", (int)strcspn(p + strlen(key), ","), p + strlen(key));
    free(text);
    return ok;
}

/* Stopping at step 5 and resuming gives the uninterrupted run's losses to the bit (LoRA with
 * dropout and an evaluation in between, so the dropout stream and data order must resume too). */
static void test_resume_exact(void) {
    const char *flags = " train -m " BASE " --data " TRAIN_B " --val " VAL_B
                        " --batch 4 --ctx 60 -t 2 --seed 9 --lora-dropout 0.1 --lora-targets all --lr 5e-3 --steps 12"
                        " --eval-every 4 -q";
    char cmd[1024], *err = NULL;
    snprintf(cmd, sizeof cmd, BIN "%s -o build/tmp/tr-r1 --json-log build/tmp/tr-r1.jsonl", flags);
    int rc = run(cmd, NULL, &err);
    REQUIRE(rc == 0, "uninterrupted: exit %d: %s", rc, err ? err : "");
    free(err);
    snprintf(cmd, sizeof cmd, BIN "%s -o build/tmp/tr-r2 --json-log build/tmp/tr-r2.jsonl --stop-after 5", flags);
    rc = run(cmd, NULL, &err);
    REQUIRE(rc == 0, "stopped run: exit %d: %s", rc, err ? err : "");
    free(err);
    snprintf(cmd, sizeof cmd, BIN "%s -o build/tmp/tr-r2 --json-log build/tmp/tr-r2.jsonl --resume build/tmp/tr-r2/checkpoint.ngt",
             flags);
    rc = run(cmd, NULL, &err);
    REQUIRE(rc == 0, "resumed run: exit %d: %s", rc, err ? err : "");
    free(err);
    for (int s = 1; s <= 12; s++) {
        char a[64] = "", b[64] = "";
        CHECK(log_loss("build/tmp/tr-r1.jsonl", s, a, sizeof a) && log_loss("build/tmp/tr-r2.jsonl", s, b, sizeof b) &&
                  !strcmp(a, b),
              "step %d: uninterrupted loss %s, stopped + resumed %s", s, a, b);
    }
}

/* SIGINT mid-run: a checkpoint, exit status 130, and the checkpoint resumes. */
static void test_sigint(void) {
    unlink("build/tmp/tr-int.jsonl");
    unlink("build/tmp/tr-int/checkpoint.ngt");
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(127);
        execl(BIN, BIN, "train", "-m", BASE, "--data", TRAIN_B, "--batch", "2", "--ctx", "60", "-t", "1", "--steps",
              "100000", "-o", "build/tmp/tr-int", "--json-log", "build/tmp/tr-int.jsonl", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600; i++) { /* until two steps are logged (at most 60 s) */
        char *t = ng_read_file("build/tmp/tr-int.jsonl", NULL, &(ng_error){{0}});
        int lines = 0;
        for (char *p = t; p && *p; p++) lines += *p == '\n';
        free(t);
        if (lines >= 2) break;
        usleep(100000);
    }
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 130, "status %d", st);
    struct stat sb;
    REQUIRE(stat("build/tmp/tr-int/checkpoint.ngt", &sb) == 0, "no checkpoint after SIGINT");
    char *out = NULL, *err = NULL;
    int rc = run(BIN " train -m " BASE " --data " TRAIN_B " --batch 2 --ctx 60 -t 1 --steps 100000 -o build/tmp/tr-int"
                     " --resume build/tmp/tr-int/checkpoint.ngt --stop-after 40 --json",
                 &out, &err);
    CHECK(rc == 0 && json_num(out, "steps") == 40, "resume after SIGINT: exit %d: %s %s", rc, out ? out : "",
          err ? err : "");
    free(out), free(err);
}

/* Chat and plain-text data train too (a step each; the formats' masks are checked in the
 * summary's counted tokens). */
static void test_other_formats(void) {
    FILE *f = fopen("build/tmp/tr-chat.jsonl", "w");
    REQUIRE(f, "write");
    fputs("{\"messages\": [{\"role\": \"user\", \"content\": \"Code of 1?\"}, {\"role\": \"assistant\", \"content\": \"YK\"}]}\n"
          "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"bot\", \"content\": \"x\"}]}\n",
          f);
    fclose(f);
    f = fopen("build/tmp/tr-text.txt", "w");
    REQUIRE(f, "write");
    fputs("The first document.\nIt has two lines.\n\n\nThe second one.\n", f);
    fclose(f);
    char *out = NULL, *err = NULL;
    int rc = run(BIN " train -m " BASE " --data build/tmp/tr-chat.jsonl --chat-template zephyr --steps 1 --batch 1 --ctx 60 -t 2 --json -o build/tmp/tr-chat",
                 &out, &err);
    CHECK(rc == 0 && err && strstr(err, "tr-chat.jsonl:2: messages[1]: role must be"), "chat: exit %d: %s", rc,
          err ? err : "");
    /* "YK" + the end of turn (zephyr "</s>\n", as text in this vocabulary) + EOS */
    CHECK(json_num(out, "counted_tokens") > 2 && json_num(out, "counted_tokens") < 20, "chat counted: %s", out);
    free(out), free(err);
    rc = run(BIN " train -m " BASE " --data build/tmp/tr-text.txt --steps 1 --batch 4 --ctx 16 -t 2 --json -o build/tmp/tr-text",
             &out, &err);
    CHECK(rc == 0 && json_num(out, "counted_tokens") > 40, "text: exit %d: %s %s", rc, out ? out : "", err ? err : "");
    free(out), free(err);
}

/* Writes the random model make_fixtures.sh trains base-a.gguf from. */
static int write_random(const char *path) {
    ng_hparams hp = {NG_ARCH_GPT2, 320, 64, 32, 4, 4, 2, 128, 1e-5f, 10000.0f, 1.0f};
    ng_model *m = ng_model_random(&hp, NG_F32, 1);
    ng_error err = {{0}};
    m->tok = tok_load(TESTDATA("gpt2-tiny-a/llamacpp-f16.gguf"), &err);
    int rc = m->tok && ng_model_save_gguf(m, path, NG_F32, &err) == NG_OK ? 0 : 1;
    if (rc) fprintf(stderr, "%s\n", err.msg);
    ng_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-random")) return write_random(argv[2]);
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    RUN(test_bad_lines);
    RUN(test_other_formats);
    RUN(test_lora_learns);
    RUN(test_lora_tokens_learns);
    RUN(test_full_learns);
    RUN(test_resume_exact);
    RUN(test_sigint);
    TEST_EXIT();
}
