#include "serve/sched.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve/openai.h"

typedef struct {
    ng_state *st; /* KV cache only; st->pos tokens of toks have their KV computed */
    int *toks;    /* (n_ctx) the sequence: prompt then generated tokens */
    int n_toks;
    unsigned long serial; /* adapter the cached KV was computed with (0: base) */
    uint64_t used;        /* when the slot last finished, for least-recently-used choice */
    serve_req *req;       /* NULL: free (its cache stays for reuse) */
    ng_sampler *smp;
    int n_gen;
    char *text; /* everything generated; text[0..released) has gone to the request */
    size_t len, cap, released;
    double t_last;
} slot;

struct sched {
    const ng_model *m;
    const ng_tokenizer *tok;
    sched_config cfg;
    pthread_t thread;
    pthread_mutex_t mu; /* queue, stop, busy */
    pthread_cond_t cv;
    int stop;
    serve_req **queue; /* ring of cfg.max_queue + cfg.parallel */
    int q_head, q_len, q_cap;
    slot *slots;
    atomic_int busy;
    uint64_t clock;
    /* one step's batch */
    ng_state *work;
    float *logits;
    int *tokens, *n_tok, *batch_slot;
    ng_state **seqs;
    int stop_ids[4], n_stop_ids;
    /* adapters */
    pthread_mutex_t ad_mu;
    serve_adapter **ads;
    int n_ads;
    unsigned long serial;
};

/* ---- requests ------------------------------------------------------------------------------- */

serve_req *serve_req_new(void) {
    serve_req *r = xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancelled, 0);
    r->max_tokens = 1;
    r->sp = ng_sampler_defaults();
    r->t_arrive = ng_time();
    return r;
}

void serve_req_unref(serve_req *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    jsonc_free(r->jc);
    serve_adapter_unref(r->adapter);
    free(r->text);
    free(r->ids);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

int serve_req_wait(serve_req *r, size_t seen_text, int seen_done, double timeout_s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ns = ts.tv_nsec + (long)(fmod(timeout_s, 1.0) * 1e9);
    ts.tv_sec += (time_t)timeout_s + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&r->mu);
    int news;
    while (!(news = (seen_text != SIZE_MAX && r->text_len != seen_text) || r->done != seen_done))
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) break;
    pthread_mutex_unlock(&r->mu);
    return news;
}

/* Publishes text[released..upto) of the slot's output and, when id >= 0, one generated id. */
static void publish(slot *sl, size_t upto, int id) {
    serve_req *r = sl->req;
    pthread_mutex_lock(&r->mu);
    if (upto > sl->released) {
        size_t n = upto - sl->released;
        if (r->text_len + n + 1 > r->text_cap) r->text = xrealloc(r->text, r->text_cap = (r->text_len + n + 1) * 2);
        memcpy(r->text + r->text_len, sl->text + sl->released, n);
        r->text_len += n;
        r->text[r->text_len] = 0;
        sl->released = upto;
    }
    if (id >= 0) {
        r->ids = xrealloc(r->ids, (size_t)(r->n_ids + 1) * sizeof *r->ids);
        r->ids[r->n_ids++] = id;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void req_finish(serve_req *r, const char *reason, const char *error) {
    pthread_mutex_lock(&r->mu);
    r->done = 1;
    r->finish = reason;
    if (error) snprintf(r->error, sizeof r->error, "%s", error);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---- adapters ------------------------------------------------------------------------------- */

void serve_adapter_unref(serve_adapter *a) {
    if (!a || atomic_fetch_sub(&a->refs, 1) != 1) return;
    ng_lora_free(a->lora);
    free(a->name);
    free(a);
}

static serve_adapter *find_adapter(sched *s, const char *name) {
    for (int i = 0; i < s->n_ads; i++)
        if (!strcmp(s->ads[i]->name, name)) return s->ads[i];
    return NULL;
}

int sched_adapter_add(sched *s, const char *name, const char *path, float scale, ng_error *err) {
    pthread_mutex_lock(&s->ad_mu);
    int taken = find_adapter(s, name) != NULL;
    pthread_mutex_unlock(&s->ad_mu);
    if (taken) return ng_error_set(err, "an adapter named '%s' is already loaded", name);
    /* loading reads files and may take a while: done outside the lock, checked again after */
    ng_lora *l = ng_lora_load(s->m, path, scale, err);
    if (!l) return NG_ERR;
    pthread_mutex_lock(&s->ad_mu);
    if (find_adapter(s, name)) {
        pthread_mutex_unlock(&s->ad_mu);
        ng_lora_free(l);
        return ng_error_set(err, "an adapter named '%s' is already loaded", name);
    }
    serve_adapter *a = xcalloc(1, sizeof *a);
    a->name = xstrdup(name);
    a->lora = l;
    a->serial = ++s->serial;
    atomic_init(&a->refs, 1);
    s->ads = xrealloc(s->ads, (size_t)(s->n_ads + 1) * sizeof *s->ads);
    s->ads[s->n_ads++] = a;
    pthread_mutex_unlock(&s->ad_mu);
    return NG_OK;
}

int sched_adapter_remove(sched *s, const char *name) {
    pthread_mutex_lock(&s->ad_mu);
    serve_adapter *a = NULL;
    for (int i = 0; i < s->n_ads; i++)
        if (!strcmp(s->ads[i]->name, name)) {
            a = s->ads[i];
            s->ads[i] = s->ads[--s->n_ads];
            break;
        }
    pthread_mutex_unlock(&s->ad_mu);
    serve_adapter_unref(a);
    return a ? NG_OK : NG_ERR;
}

serve_adapter *sched_adapter_get(sched *s, const char *name) {
    pthread_mutex_lock(&s->ad_mu);
    serve_adapter *a = find_adapter(s, name);
    if (a) atomic_fetch_add(&a->refs, 1);
    pthread_mutex_unlock(&s->ad_mu);
    return a;
}

char **sched_adapter_names(sched *s, int *n) {
    pthread_mutex_lock(&s->ad_mu);
    char **names = xmalloc((size_t)(s->n_ads + 1) * sizeof *names);
    for (int i = 0; i < s->n_ads; i++) names[i] = xstrdup(s->ads[i]->name);
    *n = s->n_ads;
    pthread_mutex_unlock(&s->ad_mu);
    return names;
}

/* ---- slots ---------------------------------------------------------------------------------- */

static unsigned long req_serial(const serve_req *r) { return r->adapter ? r->adapter->serial : 0; }

/* Tokens of the prompt whose KV slot sl already holds (same adapter), at most n_prompt - 1: the
 * last prompt token is always run, for its logits. */
static int cached_prefix(const slot *sl, const serve_req *r) {
    if (sl->serial != req_serial(r)) return 0;
    int n = sl->st->pos < r->n_prompt - 1 ? sl->st->pos : r->n_prompt - 1, k = 0;
    while (k < n && sl->toks[k] == r->prompt[k]) k++;
    return k;
}

/* Puts r into a free slot, reusing the longest cached prefix. Called with a free slot present. */
static void admit(sched *s, serve_req *r) {
    int best_free = -1, best_free_k = -1, src = -1, src_k = 0;
    for (int i = 0; i < s->cfg.parallel; i++) {
        slot *sl = &s->slots[i];
        int k = cached_prefix(sl, r);
        if (!sl->req && (k > best_free_k || (k == best_free_k && sl->used < s->slots[best_free].used)))
            best_free = i, best_free_k = k;
        if (k > src_k) src = i, src_k = k;
    }
    slot *sl = &s->slots[best_free];
    int reuse = best_free_k;
    if (src_k > best_free_k && ng_state_copy_kv(s->m, sl->st, s->slots[src].st, src_k) == NG_OK) reuse = src_k;
    sl->st->pos = reuse;
    sl->st->lora = r->adapter ? r->adapter->lora : NULL;
    sl->serial = req_serial(r);
    memcpy(sl->toks, r->prompt, (size_t)r->n_prompt * sizeof *sl->toks);
    sl->n_toks = r->n_prompt;
    sl->req = r;
    sl->smp = ng_sampler_new(&r->sp, s->m->hp.n_vocab);
    sl->n_gen = 0;
    sl->len = sl->released = 0;
    sl->t_last = ng_time();
    pthread_mutex_lock(&r->mu);
    r->n_cached = reuse;
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_add(&s->busy, 1);
    if (s->cfg.metrics) metrics_tokens(s->cfg.metrics, r->n_prompt, reuse, 0);
}

/* Ends the slot's request: the text not yet released goes out unless a stop string cut it. */
static void slot_finish(sched *s, slot *sl, const char *reason, const char *error) {
    serve_req *r = sl->req;
    if (!strcmp(reason, "length") || !strcmp(reason, "stop")) publish(sl, sl->len, -1);
    req_finish(r, reason, error);
    if (s->cfg.metrics) metrics_tokens(s->cfg.metrics, 0, 0, sl->n_gen);
    ng_sampler_free(sl->smp);
    sl->smp = NULL;
    sl->req = NULL;
    sl->n_toks = sl->st->pos; /* the last sampled token was never run: its KV is not cached */
    sl->used = ++s->clock;
    serve_req_unref(r);
    atomic_fetch_sub(&s->busy, 1);
}

/* After new text: ends the request at the first stop string (1), or releases the text that can
 * no longer be the start of one (nor a cut UTF-8 character) (0). */
static int check_stops(sched *s, slot *sl, size_t old_len, int id) {
    serve_req *r = sl->req;
    size_t cut = SIZE_MAX, hold = openai_utf8_tail(sl->text, sl->len);
    for (int i = 0; i < r->n_stop; i++) {
        size_t n = strlen(r->stop[i]);
        size_t from = old_len >= n - 1 ? old_len - (n - 1) : 0;
        const char *hit = sl->len >= from + n ? memmem(sl->text + from, sl->len - from, r->stop[i], n) : NULL;
        if (hit && (size_t)(hit - sl->text) < cut) cut = (size_t)(hit - sl->text);
        for (size_t k = n - 1 < sl->len ? n - 1 : sl->len; k > hold; k--)
            if (!memcmp(sl->text + sl->len - k, r->stop[i], k)) {
                hold = k;
                break;
            }
    }
    if (cut != SIZE_MAX) {
        sl->len = cut > sl->released ? cut : sl->released;
        publish(sl, sl->len, id);
        slot_finish(s, sl, "stop", NULL);
        return 1;
    }
    publish(sl, sl->len - hold > sl->released ? sl->len - hold : sl->released, id);
    return 0;
}

static int is_stop_id(const sched *s, int id) {
    for (int i = 0; i < s->n_stop_ids; i++)
        if (s->stop_ids[i] == id) return 1;
    return 0;
}

/* Samples the slot's next token from its logits row and publishes it. */
static void slot_sample(sched *s, slot *sl, float *row) {
    serve_req *r = sl->req;
    int n_vocab = s->m->hp.n_vocab, eos = tok_eos(s->tok);
    if (r->jc) jsonc_mask_top(r->jc, s->tok, row, n_vocab, eos, 32);
    int id = ng_sampler_sample(sl->smp, row, sl->toks, sl->n_toks);
    double now = ng_time();
    if (s->cfg.metrics) {
        if (sl->n_gen == 0) metrics_ttft(s->cfg.metrics, now - r->t_arrive);
        else metrics_token_latency(s->cfg.metrics, now - sl->t_last);
    }
    sl->t_last = now;
    if (is_stop_id(s, id)) return slot_finish(s, sl, "stop", NULL);
    size_t n = 0;
    const char *piece = tok_piece(s->tok, id, &n);
    if (!piece) n = 0;
    if (r->jc && jsonc_feed(r->jc, piece ? piece : "", n) != NG_OK)
        return slot_finish(s, sl, "error", "constrained decoding found no token that can follow");
    sl->toks[sl->n_toks++] = id;
    sl->n_gen++;
    size_t old = sl->len;
    if (sl->len + n > sl->cap) sl->text = xrealloc(sl->text, sl->cap = (sl->len + n) * 2 + 64);
    if (n) memcpy(sl->text + sl->len, piece, n);
    sl->len += n;
    if (check_stops(s, sl, old, id)) return;
    if (r->jc && jsonc_complete(r->jc)) return slot_finish(s, sl, "stop", NULL);
    if (sl->n_gen >= r->max_tokens) slot_finish(s, sl, "length", NULL);
}

/* One forward over every active sequence: decode rows first (one token each), then prompt
 * chunks in admission order within the step's token budget. */
static void step(sched *s) {
    int n_seqs = 0, total = 0, budget = s->cfg.n_batch;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < s->cfg.parallel; i++) {
            slot *sl = &s->slots[i];
            if (!sl->req) continue;
            if (pass == 0 && atomic_load(&sl->req->cancelled)) {
                slot_finish(s, sl, "cancelled", NULL);
                continue;
            }
            int decoding = sl->st->pos >= sl->req->n_prompt;
            if (decoding != (pass == 0)) continue;
            int n = sl->n_toks - sl->st->pos;
            if (n > budget - total) n = budget - total;
            if (n <= 0) continue;
            memcpy(s->tokens + total, sl->toks + sl->st->pos, (size_t)n * sizeof *s->tokens);
            s->seqs[n_seqs] = sl->st;
            s->n_tok[n_seqs] = n;
            s->batch_slot[n_seqs++] = i;
            total += n;
        }
    if (n_seqs == 0) return;
    ng_error err;
    if (ng_forward_multi(s->m, s->work, s->seqs, s->n_tok, n_seqs, s->tokens, s->logits, &err)) {
        /* the requests were validated before admission, so this is an engine fault: those
         * requests fail, the server goes on */
        ng_log("serve: forward failed: %s", err.msg);
        for (int i = 0; i < n_seqs; i++) slot_finish(s, &s->slots[s->batch_slot[i]], "error", err.msg);
        return;
    }
    for (int i = 0; i < n_seqs; i++) {
        slot *sl = &s->slots[s->batch_slot[i]];
        if (sl->st->pos == sl->n_toks) slot_sample(s, sl, s->logits + (size_t)i * s->m->hp.n_vocab);
    }
}

static void *sched_main(void *arg) {
    sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && s->q_len == 0 && atomic_load(&s->busy) == 0) pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        /* requests join the batch between steps */
        while (s->q_len > 0 && atomic_load(&s->busy) < s->cfg.parallel) {
            serve_req *r = s->queue[s->q_head];
            s->q_head = (s->q_head + 1) % s->q_cap;
            s->q_len--;
            if (atomic_load(&r->cancelled)) {
                req_finish(r, "cancelled", NULL);
                serve_req_unref(r);
                continue;
            }
            admit(s, r);
        }
        pthread_mutex_unlock(&s->mu);
        step(s);
    }
    return NULL;
}

/* ---- public --------------------------------------------------------------------------------- */

sched *sched_new(const ng_model *m, const sched_config *cfg, ng_error *err) {
    if (!m->tok) return ng_error_set(err, "%s has no tokenizer: the server needs one", m->path), NULL;
    if (cfg->parallel < 1 || cfg->n_ctx < 2 || cfg->n_ctx > m->hp.n_ctx || cfg->max_queue < 0)
        return ng_error_set(err, "bad scheduler settings (parallel %d, ctx %d of the model's %d, queue %d)",
                            cfg->parallel, cfg->n_ctx, m->hp.n_ctx, cfg->max_queue),
               NULL;
    sched *s = xcalloc(1, sizeof *s);
    s->m = m;
    s->tok = m->tok;
    s->cfg = *cfg;
    /* every decoding sequence needs its row in each step */
    if (s->cfg.n_batch < s->cfg.parallel) s->cfg.n_batch = s->cfg.parallel;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->ad_mu, NULL);
    atomic_init(&s->busy, 0);
    s->q_cap = cfg->max_queue + cfg->parallel;
    s->queue = xcalloc((size_t)s->q_cap, sizeof *s->queue);
    s->slots = xcalloc((size_t)cfg->parallel, sizeof *s->slots);
    for (int i = 0; i < cfg->parallel; i++) {
        s->slots[i].st = ng_state_new_flags(m, cfg->n_ctx, 0, NG_STATE_LAZY_KV);
        s->slots[i].toks = xmalloc((size_t)cfg->n_ctx * sizeof(int));
    }
    s->work = ng_state_new_flags(m, cfg->n_ctx, s->cfg.n_batch, NG_STATE_LAZY_KV);
    s->logits = xmalloc((size_t)cfg->parallel * (size_t)m->hp.n_vocab * sizeof *s->logits);
    s->tokens = xmalloc((size_t)s->cfg.n_batch * sizeof *s->tokens);
    s->n_tok = xmalloc((size_t)cfg->parallel * sizeof *s->n_tok);
    s->batch_slot = xmalloc((size_t)cfg->parallel * sizeof *s->batch_slot);
    s->seqs = xmalloc((size_t)cfg->parallel * sizeof *s->seqs);
    /* end-of-turn tokens of the chat formats besides EOS */
    const char *ends[] = {"<|im_end|>", "<|eot_id|>", "<|end|>"};
    s->stop_ids[s->n_stop_ids++] = tok_eos(s->tok);
    for (int i = 0; i < 3; i++) {
        int id = tok_special_id(s->tok, ends[i]);
        if (id >= 0) s->stop_ids[s->n_stop_ids++] = id;
    }
    if (pthread_create(&s->thread, NULL, sched_main, s)) {
        ng_error_set(err, "cannot start the scheduler thread");
        s->thread = 0;
        sched_free(s);
        return NULL;
    }
    return s;
}

void sched_free(sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread) pthread_join(s->thread, NULL);
    for (; s->q_len > 0; s->q_len--, s->q_head = (s->q_head + 1) % s->q_cap) {
        req_finish(s->queue[s->q_head], "cancelled", NULL);
        serve_req_unref(s->queue[s->q_head]);
    }
    for (int i = 0; i < s->cfg.parallel; i++) {
        if (s->slots[i].req) slot_finish(s, &s->slots[i], "cancelled", NULL);
        ng_state_free(s->slots[i].st);
        free(s->slots[i].toks);
        free(s->slots[i].text);
    }
    for (int i = 0; i < s->n_ads; i++) serve_adapter_unref(s->ads[i]);
    free(s->ads);
    free(s->slots);
    free(s->queue);
    ng_state_free(s->work);
    free(s->logits);
    free(s->tokens);
    free(s->n_tok);
    free(s->batch_slot);
    free(s->seqs);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->ad_mu);
    free(s);
}

int sched_submit(sched *s, serve_req *r) {
    pthread_mutex_lock(&s->mu);
    int rc = SCHED_OK;
    /* waiting beyond the slots that are free now is what max_queue bounds */
    int free_slots = s->cfg.parallel - atomic_load(&s->busy);
    if (s->stop) rc = SCHED_CLOSED;
    else if (s->q_len >= s->q_cap || s->q_len - free_slots >= s->cfg.max_queue) rc = SCHED_FULL;
    if (rc == SCHED_OK) {
        atomic_fetch_add(&r->refs, 1);
        s->queue[(s->q_head + s->q_len++) % s->q_cap] = r;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void sched_cancel(sched *s, serve_req *r) {
    atomic_store(&r->cancelled, 1);
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_gauges(sched *s, metrics_gauges *g) {
    pthread_mutex_lock(&s->mu);
    g->queue_depth = s->q_len;
    pthread_mutex_unlock(&s->mu);
    g->busy_slots = atomic_load(&s->busy);
    g->n_slots = s->cfg.parallel;
    pthread_mutex_lock(&s->ad_mu);
    g->adapters = s->n_ads;
    pthread_mutex_unlock(&s->ad_mu);
}

int sched_idle(sched *s) {
    pthread_mutex_lock(&s->mu);
    int idle = s->q_len == 0 && atomic_load(&s->busy) == 0;
    pthread_mutex_unlock(&s->mu);
    return idle;
}
