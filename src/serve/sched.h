/* sched — continuous batching for `netgpt serve`: one scheduler thread owns the model's work
 * state and --parallel sequence slots (each a KV-cache-only ng_state) and, every step, advances
 * all active sequences in ONE ng_forward_multi call (the weights are read once for all): one
 * decode row per generating sequence plus chunks of prompt prefill within a token budget, so a
 * long prompt never stalls the other streams. Requests join between steps; each sequence carries
 * its own LoRA adapter (ng_state.lora) in the same batch.
 *
 * Prefix cache: a slot keeps its tokens and KV after its request ends; a new request takes the
 * free slot whose cache shares the longest prefix with its prompt, or copies the KV rows of a
 * longer shared prefix from any slot (a common system prompt), and prefills only the rest.
 *
 * Ownership and threads: a serve_req is reference-counted; the submitter holds one reference,
 * the scheduler another while the request is queued or running. Output (text, ids, done) is
 * published under the request's mutex and signalled on its condvar; the submitter waits on it.
 * sched_cancel (any thread) makes the scheduler free the request's slot at the next step.
 * Adapters are reference-counted too: the registry holds one, each request using one another,
 * so DELETE /v1/adapters never frees an adapter a running sequence still reads. */
#ifndef NG_SERVE_SCHED_H
#define NG_SERVE_SCHED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "model/lora.h"
#include "model/model.h"
#include "sample/jsonc.h"
#include "sample/sampler.h"
#include "serve/metrics.h"

typedef struct sched sched;

typedef struct serve_adapter {
    char *name;
    ng_lora *lora;
    unsigned long serial; /* unique per load: tells a slot's cached KV apart (0: the base model) */
    atomic_int refs;
} serve_adapter;

typedef struct serve_req {
    /* input: set before sched_submit, read-only afterwards */
    int *prompt; /* (n_prompt) owned */
    int n_prompt;
    int max_tokens; /* n_prompt + max_tokens <= the slots' context (checked by the caller) */
    ng_sampler_params sp;
    char **stop; /* (n_stop) owned */
    int n_stop;
    jsonc *jc;              /* constrained decoding state, owned; NULL: free text */
    serve_adapter *adapter; /* a held reference; NULL: the base model */
    double t_arrive;
    /* output, under mu; cv signalled on every change */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text; /* released text (stop strings removed; a partial UTF-8 sequence is held back) */
    size_t text_len, text_cap;
    int *ids; /* generated ids (n_ids) */
    int n_ids;
    int n_cached; /* prompt tokens reused from the prefix cache */
    int done;
    const char *finish; /* "stop" | "length" | "cancelled" | "error" */
    char error[256];    /* set with finish "error" */
    atomic_int cancelled;
    atomic_int refs;
} serve_req;

/* A request with one reference (the caller's); fill its input fields, then sched_submit. */
serve_req *serve_req_new(void);
void serve_req_unref(serve_req *r);

typedef struct {
    int parallel;  /* sequence slots */
    int n_ctx;     /* context per slot */
    int max_queue; /* waiting requests beyond the slots before 429 */
    int n_batch;   /* tokens per forward step (decode rows + prefill chunks) */
    serve_metrics *metrics;
} sched_config;

/* Starts the scheduler thread for m (which must outlive it). NULL + err. */
sched *sched_new(const ng_model *m, const sched_config *cfg, ng_error *err);
/* Stops the thread; requests still queued or running end with finish "cancelled". */
void sched_free(sched *s);

enum { SCHED_OK = 0, SCHED_FULL = -1, SCHED_CLOSED = -2 };
/* Queues r (taking a reference of its own). SCHED_FULL when max_queue requests already wait. */
int sched_submit(sched *s, serve_req *r);
void sched_cancel(sched *s, serve_req *r);
/* Waits up to timeout_s for r to publish something new beyond the given counts (or finish);
 * seen_text SIZE_MAX waits for the end only.
 * Returns 1 when there is news, 0 on timeout. Caller holds no lock. */
int serve_req_wait(serve_req *r, size_t seen_text, int seen_done, double timeout_s);

void sched_gauges(sched *s, metrics_gauges *g);
/* 1 when nothing is queued or running. */
int sched_idle(sched *s);

/* Adapters: name -> LoRA. add: NG_ERR + err when the name is taken or the file does not load. */
int sched_adapter_add(sched *s, const char *name, const char *path, float scale, ng_error *err);
/* NG_ERR when no adapter has that name. Running requests keep theirs until they end. */
int sched_adapter_remove(sched *s, const char *name);
/* A new reference to the adapter called name, or NULL. */
serve_adapter *sched_adapter_get(sched *s, const char *name);
void serve_adapter_unref(serve_adapter *a);
/* Names of every adapter (malloc'd array of malloc'd strings, *n of them). */
char **sched_adapter_names(sched *s, int *n);

#endif
