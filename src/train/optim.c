/* optim — AdamW (decoupled weight decay, bias-corrected moments), global-norm gradient
 * clipping, the warmup + cosine learning-rate schedule, and one optimizer step over
 * accumulated micro-batches (see train.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"

adamw_config adamw_defaults(int total_steps) {
    return (adamw_config){.lr = 1e-3f, .min_lr = 0, .warmup_steps = 0, .total_steps = total_steps, .beta1 = 0.9f,
                          .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f, .grad_clip = 1.0f};
}

adamw *adamw_new(const adamw_config *c, size_t n) {
    adamw *o = xcalloc(1, sizeof *o);
    o->c = *c;
    o->n = n;
    o->m = xcalloc(n ? n : 1, sizeof(float));
    o->v = xcalloc(n ? n : 1, sizeof(float));
    return o;
}

void adamw_free(adamw *o) {
    if (!o) return;
    free(o->m);
    free(o->v);
    free(o);
}

float adamw_lr(const adamw_config *c, int64_t step) {
    if (step < c->warmup_steps) return c->lr * (float)(step + 1) / (float)c->warmup_steps;
    int64_t span = c->total_steps - c->warmup_steps;
    if (span <= 0) return c->lr;
    double t = (double)(step - c->warmup_steps) / (double)span;
    if (t > 1) t = 1;
    return c->min_lr + (float)(0.5 * (1.0 + cos(M_PI * t))) * (c->lr - c->min_lr);
}

void adamw_update(adamw *o, const float *base, train_param *tab, int n_tab, float lr, int64_t t) {
    const adamw_config *c = &o->c;
    float bc1 = 1.0f - powf(c->beta1, (float)t), bc2 = 1.0f - powf(c->beta2, (float)t);
    for (int e = 0; e < n_tab; e++) {
        train_param *p = &tab[e];
        size_t off = (size_t)(p->data - base), n = (size_t)(p->ne0 * p->ne1);
        float *m = o->m + off, *v = o->v + off, *w = p->data;
        const float *g = p->grad;
        float wd = p->decay ? c->weight_decay : 0.0f;
        for (size_t i = 0; i < n; i++) {
            m[i] = c->beta1 * m[i] + (1.0f - c->beta1) * g[i];
            v[i] = c->beta2 * v[i] + (1.0f - c->beta2) * g[i] * g[i];
            float mh = m[i] / bc1, vh = v[i] / bc2;
            /* decoupled decay (PyTorch AdamW): w *= 1 - lr wd, then the Adam step */
            w[i] -= lr * wd * w[i];
            w[i] -= lr * mh / (sqrtf(vh) + c->eps);
        }
    }
}

float train_clip_grad(train_model *tm, float max_norm) {
    double ss = 0;
    for (size_t i = 0; i < tm->n_params; i++) ss += (double)tm->grads[i] * tm->grads[i];
    float norm = (float)sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        float k = max_norm / (norm + 1e-6f); /* as torch.nn.utils.clip_grad_norm_ */
        for (size_t i = 0; i < tm->n_params; i++) tm->grads[i] *= k;
    }
    return norm;
}

float train_step(train_model *tm, adamw *o, const train_batch *micro, int n_micro, ng_error *err) {
    if (n_micro <= 0) {
        ng_error_set(err, "train: a step needs at least one micro-batch");
        return NAN;
    }
    train_zero_grad(tm);
    double loss = 0;
    for (int i = 0; i < n_micro; i++) {
        float l = train_forward(tm, &micro[i], err);
        if (isnan(l)) return NAN;
        train_backward(tm, 1.0f / (float)n_micro);
        loss += l;
    }
    train_clip_grad(tm, o->c.grad_clip);
    adamw_update(o, tm->params, tm->tab, tm->n_tab, adamw_lr(&o->c, tm->step), tm->step + 1);
    tm->step++;
    return (float)(loss / n_micro);
}
