/* test_train — the training core against float64 PyTorch autograd (tests/testdata/grads, made by
 * tools/reference/make_grad_fixtures.py), each op's backward against central differences,
 * AdamW against a hand computation, checkpoint resume, recomputation, and a small model that
 * learns a task and then decodes it with the inference forward. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kernels.h"
#include "model/model.h"
#include "test.h"
#include "train/train.h"
#include "train/train_ops.h"

/* ---- fixtures ---------------------------------------------------------------------------------- */

typedef struct {
    cJSON *ref;
    float *grads, *lora, *mask;
    int *tokens, *targets;
    size_t n_grads, n_lora;
    train_batch batch;
} fixture;

static void *load_bin(const char *dir, const char *name, size_t *n, size_t elem) {
    char path[256];
    size_t len;
    ng_error err = {{0}};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *d = ng_read_file(path, &len, &err);
    if (!d) return NULL;
    if (n) *n = len / elem;
    return d;
}

static int fixture_load(fixture *fx, const char *name) {
    char dir[128];
    memset(fx, 0, sizeof *fx);
    snprintf(dir, sizeof dir, TESTDATA("grads/%s"), name);
    char *js = load_bin(dir, "ref.json", NULL, 1);
    if (!js) return -1;
    fx->ref = cJSON_Parse(js);
    free(js);
    fx->grads = load_bin(dir, "grads.f32", &fx->n_grads, 4);
    fx->lora = load_bin(dir, "lora.f32", &fx->n_lora, 4);
    fx->tokens = load_bin(dir, "tokens.i32", NULL, 4);
    fx->targets = load_bin(dir, "targets.i32", NULL, 4);
    fx->mask = load_bin(dir, "mask.f32", NULL, 4);
    if (!fx->ref || !fx->grads || !fx->lora || !fx->tokens || !fx->targets || !fx->mask) return -1;
    fx->batch = (train_batch){cJSON_GetObjectItem(fx->ref, "B")->valueint, cJSON_GetObjectItem(fx->ref, "T")->valueint,
                              fx->tokens, fx->targets, fx->mask};
    return 0;
}

static void fixture_free(fixture *fx) {
    cJSON_Delete(fx->ref);
    free(fx->grads), free(fx->lora), free(fx->tokens), free(fx->targets), free(fx->mask);
}

static int shape_size(const cJSON *e, int *ne1) {
    const cJSON *sh = cJSON_GetObjectItem(e, "shape");
    int n = 1, k = cJSON_GetArraySize(sh);
    for (int i = 0; i < k; i++) n *= cJSON_GetArrayItem(sh, i)->valueint;
    if (ne1) *ne1 = k > 1 ? cJSON_GetArrayItem(sh, 0)->valueint : 1;
    return n;
}

/* max |got - ref| / max |ref| over n values; rows (NULL: all) selects rows of width w of got. */
static double rel_err(const float *got, const float *ref, int n_rows, int w, const cJSON *rows) {
    double mx = 0, md = 0;
    for (int r = 0; r < n_rows; r++) {
        int gr = rows ? cJSON_GetArrayItem(rows, r)->valueint : r;
        for (int i = 0; i < w; i++) {
            double a = got[(size_t)gr * w + i], b = ref[(size_t)r * w + i];
            if (fabs(b) > mx) mx = fabs(b);
            double d = fabs(a - b);
            if (d > md || d != d) md = d != d ? INFINITY : d;
        }
    }
    return mx > 0 ? md / mx : md;
}

/* The fixture of model `name` and the model itself (tests/testdata/NAME); NULL (with a failed
 * check) when either is missing. */
static ng_model *fixture_model(fixture *fx, const char *name) {
    char mdir[128];
    if (fixture_load(fx, name) != 0) {
        CHECK(0, "%s: fixture missing (make -C tools/reference grads)", name);
        return NULL;
    }
    snprintf(mdir, sizeof mdir, TESTDATA("%s"), name);
    ng_error err = {{0}};
    ng_model *m = ng_model_load(mdir, &err);
    CHECK(m, "%s", err.msg);
    if (!m) fixture_free(fx);
    return m;
}

static train_config cfg_full(int B, int T) { return (train_config){.max_B = B, .max_T = T, .seed = 1}; }

/* Every parameter and residual-stream gradient of full fine-tuning against the reference.
 * With pad > 0 the batch's rows get pad more positions that the loss does not count (tokens
 * and targets of their own); the trainer drops them, and every result stays the reference's. */
static void check_full(const char *name, int pad) {
    fixture fx = {0};
    ng_model *m = fixture_model(&fx, name);
    if (!m) return;
    ng_error err = {{0}};
    int B = fx.batch.B, T = fx.batch.T, TP = T + pad;
    int *tok = xmalloc((size_t)B * TP * sizeof *tok), *tgt = xmalloc((size_t)B * TP * sizeof *tgt);
    float *msk = xmalloc((size_t)B * TP * sizeof *msk);
    for (int r = 0; r < B; r++)
        for (int t = 0; t < TP; t++) {
            size_t i = (size_t)r * TP + t, j = (size_t)r * T + t;
            tok[i] = t < T ? fx.tokens[j] : (r * 7 + t * 3) % m->hp.n_vocab;
            tgt[i] = t < T ? fx.targets[j] : (r * 5 + t) % m->hp.n_vocab;
            msk[i] = t < T ? fx.mask[j] : 0.0f;
        }
    train_batch batch = {B, TP, tok, tgt, msk};
    train_config cfg = cfg_full(B, TP);
    train_model *tm = train_new(m, &cfg, &err);
    REQUIRE(tm, "%s", err.msg);
    float loss = train_forward(tm, &batch, &err);
    CHECK(tm->T == T, "%s: %d padded positions: the trainer kept %d of %d", name, pad, tm->T, TP);
    double want = cJSON_GetObjectItem(fx.ref, "loss")->valuedouble;
    CHECK(fabs(loss - want) <= 1e-5, "%s: loss %.7f, reference %.7f", name, loss, want);
    train_backward(tm, 1.0f);
    const cJSON *e;
    int n_checked = 0;
    double worst = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(fx.ref, "grads.f32")) {
        const char *pn = cJSON_GetObjectItem(e, "name")->valuestring;
        const float *ref = fx.grads + cJSON_GetObjectItem(e, "offset")->valueint;
        const cJSON *rows = cJSON_GetObjectItem(e, "rows");
        int ne1, n = shape_size(e, &ne1), w = n / ne1;
        double r;
        if (!strncmp(pn, "res.", 4)) {
            r = rel_err(tm->dres[atoi(pn + 4)], ref, ne1, w, NULL);
        } else {
            train_param *p = train_find(tm, pn);
            CHECK(p, "%s: no parameter %s", name, pn);
            if (!p) continue;
            CHECK(p->ne0 == w, "%s: %s width %lld, reference %d", name, pn, (long long)p->ne0, w);
            r = rel_err(p->grad, ref, rows ? cJSON_GetArraySize(rows) : ne1, w, rows);
        }
        CHECK(r <= 1e-3, "%s: gradient of %s off by %.3g (relative to its max)", name, pn, r);
        if (r > worst) worst = r;
        n_checked++;
    }
    CHECK(n_checked == tm->n_tab + tm->hp.n_layer + 1, "%s: checked %d tensors, model has %d parameters", name,
          n_checked, tm->n_tab);
    fprintf(stderr, "%s (+%d padding): loss %.7f (ref %.7f), %d gradients, worst relative error %.2e\n", name, pad,
            loss, want, n_checked, worst);
    free(tok), free(tgt), free(msk);
    train_free(tm);
    ng_model_free(m);
    fixture_free(&fx);
}

static void test_grads_gpt2(void) { check_full("gpt2-tiny-a", 0); }
static void test_grads_llama(void) { check_full("llama-tiny-a", 0); }
/* rows padded past their last counted target (instruction data in rows of --ctx) */
static void test_grads_padded(void) {
    check_full("gpt2-tiny-a", 9);
    check_full("llama-tiny-a", 4);
}

/* LoRA gradients with the fixture's adapters on every target, base frozen. */
static void check_lora(const char *name) {
    fixture fx = {0};
    ng_model *m = fixture_model(&fx, name);
    if (!m) return;
    ng_error err = {{0}};
    const cJSON *lj = cJSON_GetObjectItem(fx.ref, "lora");
    train_config cfg = cfg_full(fx.batch.B, fx.batch.T);
    cfg.lora = 1, cfg.lora_rank = cJSON_GetObjectItem(lj, "rank")->valueint;
    cfg.lora_alpha = (float)cJSON_GetObjectItem(lj, "alpha")->valuedouble, cfg.lora_targets = LORA_ALL;
    train_model *tm = train_new(m, &cfg, &err);
    REQUIRE(tm, "%s", err.msg);
    const cJSON *e;
    int n_in = 0, n_grad = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(fx.ref, "lora.f32")) {
        const char *pn = cJSON_GetObjectItem(e, "name")->valuestring;
        if (strstr(pn, ".grad")) continue;
        train_param *p = train_find(tm, pn);
        CHECK(p && p->ne0 * p->ne1 == shape_size(e, NULL), "%s: adapter %s missing or misshapen", name, pn);
        if (p) memcpy(p->data, fx.lora + cJSON_GetObjectItem(e, "offset")->valueint, (size_t)shape_size(e, NULL) * 4);
        n_in++;
    }
    CHECK(n_in == tm->n_tab, "%s: %d adapters in the fixture, %d in the model", name, n_in, tm->n_tab);
    float loss = train_forward(tm, &fx.batch, &err);
    double want = cJSON_GetObjectItem(lj, "loss")->valuedouble;
    CHECK(fabs(loss - want) <= 1e-5, "%s: LoRA loss %.7f, reference %.7f", name, loss, want);
    train_backward(tm, 1.0f);
    double worst = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(fx.ref, "lora.f32")) {
        char pn[64];
        const char *full = cJSON_GetObjectItem(e, "name")->valuestring;
        if (!strstr(full, ".grad")) continue;
        snprintf(pn, sizeof pn, "%.*s", (int)(strstr(full, ".grad") - full), full);
        train_param *p = train_find(tm, pn);
        if (!p) continue;
        double r = rel_err(p->grad, fx.lora + cJSON_GetObjectItem(e, "offset")->valueint, (int)p->ne1, (int)p->ne0, NULL);
        CHECK(r <= 1e-3, "%s: gradient of %s off by %.3g", name, pn, r);
        if (r > worst) worst = r;
        n_grad++;
    }
    CHECK(n_grad == tm->n_tab, "%s: %d adapter gradients checked of %d", name, n_grad, tm->n_tab);
    fprintf(stderr, "%s LoRA: loss %.7f (ref %.7f), worst relative error %.2e\n", name, loss, want, worst);
    train_free(tm);
    ng_model_free(m);
    fixture_free(&fx);
}

/* Trainable tokens: with every adapter at its zero start the LoRA model is the base model, so
 * the gradient of a token's row delta is the base's gradient of that row, which the fixture
 * has from float64 autograd: for GPT-2 the tied matrix's (embedding and head uses summed),
 * for LLaMA the embedding's (token_embd.delta) and the head's (output.delta), each checked
 * with the rows the fixture stores as the trainable tokens. */
static void check_tokens(const char *name, const char *pname, const char *delta) {
    fixture fx = {0};
    ng_model *m = fixture_model(&fx, name);
    if (!m) return;
    ng_error err = {{0}};
    const cJSON *e, *ent = NULL;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(fx.ref, "grads.f32"))
        if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, pname)) ent = e;
    REQUIRE(ent, "%s: no %s in the fixture", name, pname);
    const cJSON *rows = cJSON_GetObjectItem(ent, "rows");
    int n = cJSON_GetArraySize(rows), *ids = xmalloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = cJSON_GetArrayItem(rows, i)->valueint;
    train_config cfg = cfg_full(fx.batch.B, fx.batch.T);
    cfg.lora = 1, cfg.lora_rank = 2, cfg.lora_alpha = 4, cfg.lora_targets = LORA_Q | LORA_V;
    cfg.tok_ids = ids, cfg.n_tok_ids = n;
    train_model *tm = train_new(m, &cfg, &err);
    REQUIRE(tm, "%s", err.msg);
    float loss = train_forward(tm, &fx.batch, &err);
    double want = cJSON_GetObjectItem(fx.ref, "loss")->valuedouble;
    CHECK(fabs(loss - want) <= 1e-5, "%s: loss %.7f with zero deltas, reference %.7f", name, loss, want);
    train_backward(tm, 1.0f);
    train_param *p = train_find(tm, delta);
    REQUIRE(p && p->ne1 == n, "%s: no %s of %d rows", name, delta, n);
    double r = rel_err(p->grad, fx.grads + cJSON_GetObjectItem(ent, "offset")->valueint, n, (int)p->ne0, NULL);
    CHECK(r <= 1e-3, "%s: gradient of %s off by %.3g", name, delta, r);
    fprintf(stderr, "%s %s: %d rows, worst relative error %.2e\n", name, delta, n, r);
    train_free(tm);
    free(ids);
    ng_model_free(m);
    fixture_free(&fx);
}

static void test_token_grads(void) {
    check_tokens("gpt2-tiny-a", "token_embd.weight", "token_embd.delta");
    check_tokens("llama-tiny-a", "token_embd.weight", "token_embd.delta");
    check_tokens("llama-tiny-a", "output.weight", "output.delta");
}

static void test_lora_grads_gpt2(void) { check_lora("gpt2-tiny-a"); }
static void test_lora_grads_llama(void) { check_lora("llama-tiny-a"); }

/* ---- finite differences ------------------------------------------------------------------------- */

static uint64_t t_rng = 12345;
static float urand(void) { /* uniform in [-1, 1) */
    t_rng = t_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(t_rng >> 40) / (float)(1 << 23) - 1.0f;
}
static void fill(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = s * urand();
}
static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* The loss L = sum(dy * f(x)) of an op; fd_check compares analytic dL/dx with central
 * differences (evaluated in double from the f32 op) at every element of x. */
typedef void (*op_fn)(void *ctx, float *y, const float *x);

static double fd_check(op_fn f, void *ctx, float *x, size_t nx, const float *dy, size_t ny, const float *dx,
                       float h) {
    float *y = malloc(ny * sizeof *y);
    double worst = 0, mx = 0;
    for (size_t i = 0; i < nx; i++)
        if (fabs(dx[i]) > mx) mx = fabs(dx[i]);
    for (size_t i = 0; i < nx; i++) {
        float x0 = x[i];
        x[i] = x0 + h;
        f(ctx, y, x);
        double lp = dotd(dy, y, ny);
        x[i] = x0 - h;
        f(ctx, y, x);
        double lm = dotd(dy, y, ny);
        x[i] = x0;
        double num = (lp - lm) / (2.0 * h), d = fabs(num - dx[i]) / (mx > 0 ? mx : 1);
        if (d > worst) worst = d;
    }
    free(y);
    return worst;
}

typedef struct {
    int N, C, T, H, Hkv, hd, B, which;
    const float *w, *b, *g, *u, *q, *k, *v;
    float *mu, *rs, *att;
} op_ctx;

static void f_layernorm(void *c, float *y, const float *x) {
    op_ctx *o = c;
    train_layernorm_fwd(y, o->mu, o->rs, x, o->w, o->b, o->N, o->C, 1e-5f);
}
static void f_rmsnorm(void *c, float *y, const float *x) {
    op_ctx *o = c;
    train_rmsnorm_fwd(y, o->rs, x, o->w, o->N, o->C, 1e-5f);
}
static void f_gelu(void *c, float *y, const float *x) { train_gelu_fwd(y, x, (size_t)((op_ctx *)c)->N); }
static void f_swiglu_g(void *c, float *y, const float *x) {
    op_ctx *o = c;
    train_swiglu_fwd(y, x, o->u, (size_t)o->N);
}
static void f_swiglu_u(void *c, float *y, const float *x) {
    op_ctx *o = c;
    train_swiglu_fwd(y, o->g, x, (size_t)o->N);
}
static void f_rope(void *c, float *y, const float *x) {
    op_ctx *o = c;
    memcpy(y, x, (size_t)o->N * o->C * sizeof *y);
    train_rope(y, o->N, o->T, o->H, o->hd, 10000.0f, 0.5f, 1);
}
/* attention output as a function of q (which 0), k (1) or v (2) */
static void f_attn(void *c, float *y, const float *x) {
    op_ctx *o = c;
    train_attention_fwd(y, o->att, o->which == 0 ? x : o->q, o->which == 1 ? x : o->k, o->which == 2 ? x : o->v, o->B,
                        o->T, o->H, o->Hkv, o->hd);
}

static void test_op_finite_differences(void) {
    enum { N = 6, C = 16 };
    float x[N * C], dy[N * C], dx[N * C], y[N * C], w[C], b[C], mu[N], rs[N], dw[C], db[C];
    fill(x, N * C, 1.0f), fill(dy, N * C, 1.0f), fill(w, C, 1.0f), fill(b, C, 0.5f);
    op_ctx o = {.N = N, .C = C, .w = w, .b = b, .mu = mu, .rs = rs};
    double e;

    train_layernorm_fwd(y, mu, rs, x, w, b, N, C, 1e-5f);
    memset(dx, 0, sizeof dx), memset(dw, 0, sizeof dw), memset(db, 0, sizeof db);
    train_layernorm_bwd(dx, dw, db, dy, x, w, mu, rs, N, C);
    e = fd_check(f_layernorm, &o, x, N * C, dy, N * C, dx, 1e-2f);
    CHECK(e < 2e-3, "layernorm dx: %.3g", e);
    train_rmsnorm_fwd(y, rs, x, w, N, C, 1e-5f);
    memset(dx, 0, sizeof dx), memset(dw, 0, sizeof dw);
    train_rmsnorm_bwd(dx, dw, dy, x, w, rs, N, C);
    e = fd_check(f_rmsnorm, &o, x, N * C, dy, N * C, dx, 1e-2f);
    CHECK(e < 2e-3, "rmsnorm dx: %.3g", e);
    /* norm gains: the op is linear in w, so d/dw of sum(dy*y) = sum_n dy*xhat exactly */
    {
        float dwn[C];
        train_rmsnorm_fwd(y, rs, x, w, N, C, 1e-5f);
        for (int i = 0; i < C; i++) {
            dwn[i] = 0;
            for (int n = 0; n < N; n++) dwn[i] += dy[n * C + i] * x[n * C + i] * rs[n];
        }
        CHECK(t_max_abs_diff(dw, dwn, C) < 1e-5, "rmsnorm dw");
    }

    o.N = N * C;
    train_gelu_bwd(dx, dy, x, N * C);
    e = fd_check(f_gelu, &o, x, N * C, dy, N * C, dx, 1e-2f);
    CHECK(e < 2e-3, "gelu: %.3g", e);
    float g[N * C], u[N * C], dg[N * C], du[N * C];
    fill(g, N * C, 2.0f), fill(u, N * C, 1.0f);
    o.g = g, o.u = u;
    train_swiglu_bwd(dg, du, dy, g, u, N * C);
    e = fd_check(f_swiglu_g, &o, g, N * C, dy, N * C, dg, 1e-2f);
    CHECK(e < 2e-3, "swiglu dg: %.3g", e);
    e = fd_check(f_swiglu_u, &o, u, N * C, dy, N * C, du, 1e-2f);
    CHECK(e < 2e-3, "swiglu du: %.3g", e);

    /* RoPE: 2 heads of 8, sequences of T = 3 */
    o.N = N, o.C = C, o.T = 3, o.H = 2, o.hd = 8;
    memcpy(dx, dy, sizeof dx);
    train_rope(dx, N, 3, 2, 8, 10000.0f, 0.5f, -1);
    e = fd_check(f_rope, &o, x, N * C, dy, N * C, dx, 1e-2f);
    CHECK(e < 2e-3, "rope: %.3g", e);

    /* attention with GQA: B = 2, T = 3, 4 query heads on 2 KV heads of 4 */
    enum { AB = 2, AT = 3, AH = 4, AKV = 2, HD = 4, AE = AH * HD, AK = AKV * HD };
    float q[AB * AT * AE], k[AB * AT * AK], v[AB * AT * AK], att[AB * AH * AT * AT], ao[AB * AT * AE],
        dao[AB * AT * AE], dq[AB * AT * AE], dk[AB * AT * AK], dv[AB * AT * AK], scratch[64 * AT];
    fill(q, sizeof q / 4, 1.0f), fill(k, sizeof k / 4, 1.0f), fill(v, sizeof v / 4, 1.0f);
    fill(dao, sizeof dao / 4, 1.0f);
    train_attention_fwd(ao, att, q, k, v, AB, AT, AH, AKV, HD);
    train_attention_bwd(dq, dk, dv, dao, q, k, v, att, AB, AT, AH, AKV, HD, scratch, 64);
    op_ctx a = {.B = AB, .T = AT, .H = AH, .Hkv = AKV, .hd = HD, .q = q, .k = k, .v = v, .att = att};
    float *ins[3] = {q, k, v}, *grads[3] = {dq, dk, dv};
    size_t sizes[3] = {sizeof q / 4, sizeof k / 4, sizeof v / 4};
    for (int i = 0; i < 3; i++) {
        a.which = i;
        e = fd_check(f_attn, &a, ins[i], sizes[i], dao, sizeof ao / 4, grads[i], 1e-2f);
        CHECK(e < 2e-3, "attention d%c: %.3g", "qkv"[i], e);
    }

    /* dx = dy W and dW += dy^T x against plain loops, W in f16 for dx */
    enum { MN = 5, MO = 7, MI = 9 };
    float W[MO * MI], X[MN * MI], DY[MN * MO], DX[MN * MI], DW[MO * MI];
    float *wt = xmalloc(train_dx_scratch(MN, MO) * sizeof *wt);
    ng_f16 W16[MO * MI];
    fill(W, MO * MI, 1.0f), fill(X, MN * MI, 1.0f), fill(DY, MN * MO, 1.0f);
    ng_from_f32(W16, W, NG_F16, MO * MI);
    ng_to_f32(W, W16, NG_F16, MO * MI);
    train_matmul_dx(DX, DY, W16, NG_F16, MN, MO, MI, wt);
    free(wt);
    memset(DW, 0, sizeof DW);
    train_matmul_dw(DW, DY, MO, X, MN, MO, MI, 2.0f);
    double ex = 0, ew = 0;
    for (int n = 0; n < MN; n++)
        for (int i = 0; i < MI; i++) {
            double s = 0;
            for (int j = 0; j < MO; j++) s += (double)DY[n * MO + j] * W[j * MI + i];
            ex = fmax(ex, fabs(s - DX[n * MI + i]));
        }
    for (int j = 0; j < MO; j++)
        for (int i = 0; i < MI; i++) {
            double s = 0;
            for (int n = 0; n < MN; n++) s += 2.0 * DY[n * MO + j] * X[n * MI + i];
            ew = fmax(ew, fabs(s - DW[j * MI + i]));
        }
    CHECK(ex < 1e-5 && ew < 1e-5, "matmul dx %.3g, dw %.3g", ex, ew);

    /* dW's blocked path: two slices of rows, dy with a row stride wider than out, rows of zeros
     * (masked tokens) dropped, accumulation onto what dW holds */
    enum { BN = 70, BO = 2100, BLD = 2110, BI = 40 };
    float *by = xcalloc((size_t)BN * BLD, sizeof *by), *bx = xmalloc((size_t)BN * BI * sizeof *bx);
    float *bw = xmalloc((size_t)BO * BI * sizeof *bw);
    fill(by, (size_t)BN * BLD, 1.0f), fill(bx, (size_t)BN * BI, 1.0f), fill(bw, (size_t)BO * BI, 1.0f);
    for (int n = 0; n < BN; n += 3) memset(by + (size_t)n * BLD, 0, BLD * sizeof *by);
    double *want = xmalloc((size_t)BO * BI * sizeof *want);
    for (int r = 0; r < BO; r++)
        for (int i = 0; i < BI; i++) {
            double t = bw[(size_t)r * BI + i];
            for (int n = 0; n < BN; n++) t += 0.5 * by[(size_t)n * BLD + r] * bx[(size_t)n * BI + i];
            want[(size_t)r * BI + i] = t;
        }
    train_matmul_dw(bw, by, BLD, bx, BN, BO, BI, 0.5f);
    double eb = 0;
    for (size_t i = 0; i < (size_t)BO * BI; i++) eb = fmax(eb, fabs(want[i] - bw[i]));
    CHECK(eb < 1e-4, "blocked matmul dw %.3g", eb);
    free(by), free(bx), free(bw), free(want);
    train_ops_release();
}

/* ---- small models ------------------------------------------------------------------------------- */

static ng_hparams tiny_hp(ng_arch arch, int vocab) {
    ng_hparams hp = {.arch = arch, .n_vocab = vocab, .n_ctx = 32, .n_embd = 32, .n_head = 4,
                     .n_head_kv = arch == NG_ARCH_LLAMA ? 2 : 4, .n_layer = 2, .n_ff = 64, .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f, .rope_scale = 1.0f};
    return hp;
}

/* The reverse task: [BOS a b c d SEP] -> d c b a, loss on the answer only. Digits 2..vocab-1. */
enum { TASK_LEN = 4, TASK_T = 2 * TASK_LEN + 2, BOS = 0, SEP = 1 };

static void task_example(int *tok, int *tgt, float *mask, int vocab, uint64_t *rng) {
    int seq[TASK_T];
    seq[0] = BOS;
    for (int i = 0; i < TASK_LEN; i++) {
        *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
        seq[1 + i] = 2 + (int)((*rng >> 33) % (uint64_t)(vocab - 2));
    }
    seq[1 + TASK_LEN] = SEP;
    for (int i = 0; i < TASK_LEN; i++) seq[2 + TASK_LEN + i] = seq[TASK_LEN - i];
    for (int t = 0; t < TASK_T - 1; t++) {
        tok[t] = seq[t], tgt[t] = seq[t + 1];
        mask[t] = t >= TASK_LEN + 1 ? 1.0f : 0.0f;
    }
}

typedef struct {
    int B;
    int *tok, *tgt;
    float *mask;
    train_batch b;
} task_batch;

static void task_fill(task_batch *tb, int B, int vocab, uint64_t *rng) {
    int T = TASK_T - 1;
    tb->B = B;
    tb->tok = realloc(tb->tok, (size_t)B * T * sizeof(int));
    tb->tgt = realloc(tb->tgt, (size_t)B * T * sizeof(int));
    tb->mask = realloc(tb->mask, (size_t)B * T * sizeof(float));
    for (int b = 0; b < B; b++) task_example(tb->tok + b * T, tb->tgt + b * T, tb->mask + b * T, vocab, rng);
    tb->b = (train_batch){B, T, tb->tok, tb->tgt, tb->mask};
}

static void task_free(task_batch *tb) { free(tb->tok), free(tb->tgt), free(tb->mask); }

/* Trains n_steps (micro-batches of B, accumulated n_micro at a time); returns the last loss. */
static float run_steps(train_model *tm, adamw *o, int n_steps, int B, int n_micro, uint64_t *rng, float *losses) {
    task_batch tb[2] = {{0}};
    float loss = NAN;
    ng_error err = {{0}};
    for (int s = 0; s < n_steps; s++) {
        for (int i = 0; i < n_micro; i++) task_fill(&tb[i], B, tm->hp.n_vocab, rng);
        train_batch mb[2] = {tb[0].b, tb[1].b};
        loss = train_step(tm, o, mb, n_micro, &err);
        if (losses) losses[s] = loss;
    }
    task_free(&tb[0]), task_free(&tb[1]);
    return loss;
}

/* Checkpoint after 3 steps, resume in a fresh model: the loss curve is bit-identical to an
 * uninterrupted run (LoRA with dropout, so the dropout stream is part of the state). */
static void check_resume(int lora) {
    ng_hparams hp = tiny_hp(NG_ARCH_LLAMA, 12);
    ng_model *m = ng_model_random(&hp, NG_F16, 7);
    train_config cfg = {.lora = lora, .lora_rank = 4, .lora_alpha = 8, .lora_dropout = 0.1f,
                        .lora_targets = LORA_ALL, .max_B = 4, .max_T = TASK_T - 1, .seed = 99};
    static const int tok_ids[4] = {2, 3, 5, 7}; /* LoRA: with trainable tokens, saved and resumed too */
    if (lora) cfg.tok_ids = tok_ids, cfg.n_tok_ids = 4;
    adamw_config oc = adamw_defaults(6);
    oc.lr = 1e-2f, oc.warmup_steps = 2;
    ng_error err = {{0}};
    float a[6], b[6];
    uint64_t rng = 5;
    train_model *tm = train_new(m, &cfg, &err);
    REQUIRE(tm, "%s", err.msg);
    adamw *o = adamw_new(&oc, tm->n_params);
    run_steps(tm, o, 6, 4, 2, &rng, a);
    train_free(tm), adamw_free(o);

    char path[64];
    snprintf(path, sizeof path, "build/test_train_ckpt_%d.bin", (int)getpid());
    rng = 5;
    tm = train_new(m, &cfg, &err);
    o = adamw_new(&oc, tm->n_params);
    run_steps(tm, o, 3, 4, 2, &rng, b);
    CHECK(train_save(tm, o, path, &err) == NG_OK, "%s", err.msg);
    train_free(tm), adamw_free(o);
    tm = train_new(m, &cfg, &err);
    o = adamw_new(&oc, tm->n_params);
    CHECK(train_load(tm, o, path, &err) == NG_OK, "%s", err.msg);
    CHECK(tm->step == 3, "step %lld after resume", (long long)tm->step);
    run_steps(tm, o, 3, 4, 2, &rng, b + 3);
    CHECK(!memcmp(a, b, sizeof a), "resumed loss curve differs: step 5 %.9g vs %.9g", a[5], b[5]);
    CHECK(a[5] < a[0], "loss did not fall: %g -> %g", a[0], a[5]);
    /* a checkpoint of another configuration is refused */
    train_config other = cfg;
    other.lora_rank = 2;
    train_model *t2 = train_new(m, &other, &err);
    adamw *o2 = adamw_new(&oc, t2->n_params);
    CHECK(train_load(t2, o2, path, &err) == NG_ERR, "a mismatched checkpoint loaded");
    train_free(t2), adamw_free(o2);
    if (lora) { /* nor one of another token set */
        other = cfg;
        other.n_tok_ids = 3;
        t2 = train_new(m, &other, &err);
        o2 = adamw_new(&oc, t2->n_params);
        CHECK(train_load(t2, o2, path, &err) == NG_ERR, "a checkpoint with 4 trainable tokens loaded for 3");
        train_free(t2), adamw_free(o2);
    }
    remove(path);
    train_free(tm), adamw_free(o);
    ng_model_free(m);
}

static void test_resume_lora(void) { check_resume(1); }
static void test_resume_full(void) { check_resume(0); }

/* Recomputing blocks in backward gives the same gradients bit for bit. */
static void check_recompute(ng_arch arch, int lora) {
    ng_hparams hp = tiny_hp(arch, 12);
    ng_model *m = ng_model_random(&hp, NG_F32, 3);
    train_config cfg = {.lora = lora, .lora_rank = 2, .lora_alpha = 4, .lora_dropout = 0.2f,
                        .lora_targets = LORA_ALL, .max_B = 3, .max_T = TASK_T - 1, .seed = 4};
    ng_error err = {{0}};
    train_model *t1 = train_new(m, &cfg, &err);
    cfg.recompute = 1;
    train_model *t2 = train_new(m, &cfg, &err);
    REQUIRE(t1 && t2, "%s", err.msg);
    CHECK(t2->n_mem < t1->n_mem, "recompute uses %zu floats, not fewer than %zu", t2->n_mem, t1->n_mem);
    for (size_t i = 0; lora && i < t1->n_params; i++) t1->params[i] = t2->params[i] = 0.1f * urand();
    uint64_t rng = 9;
    task_batch tb = {0};
    task_fill(&tb, 3, 12, &rng);
    float l1 = train_forward(t1, &tb.b, &err), l2 = train_forward(t2, &tb.b, &err);
    train_backward(t1, 1), train_backward(t2, 1);
    CHECK(l1 == l2, "loss %g vs %g", l1, l2);
    CHECK(!memcmp(t1->grads, t2->grads, t1->n_params * sizeof(float)), "recomputed gradients differ");
    double s = 0;
    for (size_t i = 0; i < t1->n_params; i++) s += fabs(t1->grads[i]);
    CHECK(s > 0, "gradients are all zero");
    task_free(&tb);
    train_free(t1), train_free(t2);
    ng_model_free(m);
}

static void test_recompute(void) {
    check_recompute(NG_ARCH_GPT2, 0);
    check_recompute(NG_ARCH_LLAMA, 0);
    check_recompute(NG_ARCH_LLAMA, 1);
    check_recompute(NG_ARCH_GPT2, 1);
}

/* AdamW, clipping and the schedule against a hand computation. */
static void test_adamw(void) {
    adamw_config c = {.lr = 0.1f, .min_lr = 0.01f, .warmup_steps = 2, .total_steps = 10, .beta1 = 0.9f,
                      .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.5f, .grad_clip = 0};
    CHECK(fabsf(adamw_lr(&c, 0) - 0.05f) < 1e-7f && fabsf(adamw_lr(&c, 1) - 0.1f) < 1e-7f, "warmup");
    CHECK(fabsf(adamw_lr(&c, 2) - 0.1f) < 1e-7f && fabsf(adamw_lr(&c, 10) - 0.01f) < 1e-7f, "cosine ends");
    CHECK(fabsf(adamw_lr(&c, 6) - 0.055f) < 1e-6f, "cosine midpoint %g", adamw_lr(&c, 6));

    float params[3] = {1.0f, -2.0f, 0.5f}, grads[3];
    train_param tab[2] = {{.ne0 = 2, .ne1 = 1, .data = params, .grad = grads, .decay = 1},
                          {.ne0 = 1, .ne1 = 1, .data = params + 2, .grad = grads + 2, .decay = 0}};
    adamw *o = adamw_new(&c, 3);
    double p[3] = {1.0, -2.0, 0.5}, m[3] = {0}, v[3] = {0};
    const float g_seq[2][3] = {{0.5f, -1.0f, 2.0f}, {-0.25f, 0.5f, 1.0f}};
    for (int t = 1; t <= 2; t++) {
        memcpy(grads, g_seq[t - 1], sizeof grads);
        adamw_update(o, params, tab, 2, 0.1f, t);
        for (int i = 0; i < 3; i++) {
            double g = g_seq[t - 1][i], wd = i < 2 ? 0.5 : 0.0;
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.99 * v[i] + 0.01 * g * g;
            double mh = m[i] / (1 - pow(0.9, t)), vh = v[i] / (1 - pow(0.99, t));
            p[i] = p[i] * (1 - 0.1 * wd) - 0.1 * mh / (sqrt(vh) + 1e-8);
        }
    }
    for (int i = 0; i < 3; i++) CHECK(fabs(params[i] - p[i]) < 1e-6, "param %d: %.7f vs %.7f", i, params[i], p[i]);
    adamw_free(o);

    /* clipping: global norm 5 scaled to 1 */
    train_model tm = {0};
    float g2[2] = {3.0f, 4.0f};
    tm.grads = g2, tm.n_params = 2;
    float n = train_clip_grad(&tm, 1.0f);
    CHECK(fabsf(n - 5.0f) < 1e-6f && fabsf(g2[0] - 0.6f) < 1e-6f && fabsf(g2[1] - 0.8f) < 1e-6f, "clip: %g %g %g", n,
          g2[0], g2[1]);
}

/* Greedy answers of the inference forward on n fresh examples: fraction fully correct. */
static double task_accuracy(const ng_model *m, int n, uint64_t *rng) {
    int tok[TASK_T], tgt[TASK_T], ok = 0;
    float mask[TASK_T], logits[64];
    ng_error err = {{0}};
    ng_state *s = ng_state_new(m, TASK_T, TASK_T);
    for (int e = 0; e < n; e++) {
        task_example(tok, tgt, mask, m->hp.n_vocab, rng);
        ng_state_reset(s);
        int good = 1, cur[TASK_T];
        memcpy(cur, tok, sizeof cur);
        ng_forward(m, s, cur, TASK_LEN + 2, logits, 0, &err);
        for (int i = 0; i < TASK_LEN; i++) {
            int best = 0;
            for (int v = 1; v < m->hp.n_vocab; v++) best = logits[v] > logits[best] ? v : best;
            if (best != tgt[TASK_LEN + 1 + i]) good = 0;
            if (i + 1 < TASK_LEN) ng_forward(m, s, &best, 1, logits, 0, &err);
        }
        ok += good;
    }
    ng_state_free(s);
    return (double)ok / n;
}

/* A random tiny model learns to reverse 4 digits; greedy decoding with ng_forward (on the
 * exported model, adapters merged for LoRA) then answers correctly. */
static void check_learns(ng_arch arch, int lora, int steps, float lr, float max_loss) {
    int vocab = 8;
    ng_hparams hp = tiny_hp(arch, vocab);
    ng_model *m = ng_model_random(&hp, NG_F32, 11);
    train_config cfg = {.lora = lora, .lora_rank = 8, .lora_alpha = 16, .lora_targets = LORA_ALL, .max_B = 32,
                        .max_T = TASK_T - 1, .seed = 1};
    ng_error err = {{0}};
    train_model *tm = train_new(m, &cfg, &err);
    REQUIRE(tm, "%s", err.msg);
    adamw_config oc = adamw_defaults(steps);
    oc.lr = lr, oc.warmup_steps = 10, oc.min_lr = lr / 10, oc.weight_decay = 0;
    adamw *o = adamw_new(&oc, tm->n_params);
    uint64_t rng = 77;
    double t0 = ng_time();
    float loss = run_steps(tm, o, steps, 32, 1, &rng, NULL);
    ng_model *trained = train_export_model(tm);
    double acc = task_accuracy(trained, 50, &rng);
    fprintf(stderr, "%s %s: %d steps, final loss %.4f, greedy accuracy %.0f%%, %.1f s\n",
            arch == NG_ARCH_GPT2 ? "gpt2" : "llama", lora ? "LoRA" : "full", steps, loss, 100 * acc, ng_time() - t0);
    CHECK(loss < max_loss, "loss %g not below %g", loss, max_loss);
    CHECK(acc >= 0.9, "greedy accuracy %.2f", acc);
    ng_model_free(trained);
    train_free(tm), adamw_free(o);
    ng_model_free(m);
}

static void test_learns_full_gpt2(void) { check_learns(NG_ARCH_GPT2, 0, 200, 3e-3f, 0.2f); }
/* The frozen random head (|W| <= 0.05) bounds the logits to about +-1.6, so even perfect
 * answers cost ~1.3 nats with 8 classes (ln 8 = 2.08 at the start): the loss bar is that
 * floor plus a margin, and greedy accuracy is the real check. */
static void test_learns_lora_llama(void) { check_learns(NG_ARCH_LLAMA, 1, 300, 1e-2f, 1.45f); }

static void test_bad_input(void) {
    ng_hparams hp = tiny_hp(NG_ARCH_GPT2, 12);
    ng_model *m = ng_model_random(&hp, NG_F32, 1);
    train_config cfg = cfg_full(2, 8);
    ng_error err = {{0}};
    train_model *tm = train_new(m, &cfg, &err);
    int tok[8] = {0, 1, 2, 3, 4, 5, 6, 99}, tgt[8] = {0};
    train_batch b = {1, 8, tok, tgt, NULL};
    CHECK(isnan(train_forward(tm, &b, &err)) && strstr(err.msg, "invalid"), "token out of range: %s", err.msg);
    b.B = 3;
    CHECK(isnan(train_forward(tm, &b, &err)), "batch too large accepted");
    cfg.max_T = 1000;
    CHECK(!train_new(m, &cfg, &err), "context overflow accepted");
    CHECK(lora_parse_targets("q,v,down") == (LORA_Q | LORA_V | LORA_DOWN) && lora_parse_targets("q,x") == -1,
          "target parsing");
    train_free(tm);
    ng_model_free(m);
}

int main(void) {
    /* the gradient checks run threaded; the small models below run faster on one thread
     * than with OpenMP's synchronisation on a busy machine */
    ng_set_threads(2);
    RUN(test_grads_gpt2);
    RUN(test_grads_llama);
    RUN(test_grads_padded);
    RUN(test_lora_grads_gpt2);
    RUN(test_lora_grads_llama);
    RUN(test_token_grads);
    ng_set_threads(1);
    RUN(test_op_finite_differences);
    RUN(test_adamw);
    RUN(test_recompute);
    RUN(test_resume_lora);
    RUN(test_resume_full);
    RUN(test_bad_input);
    RUN(test_learns_full_gpt2);
    RUN(test_learns_lora_llama);
    TEST_EXIT();
}
