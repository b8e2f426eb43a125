/* serve — `netgpt serve`, the cloud tier: an OpenAI-compatible HTTP/1.1 server (libmicrohttpd)
 * over the continuous-batching scheduler (sched.h).
 *
 * Endpoints: POST /v1/chat/completions, POST /v1/completions (SSE streaming or not),
 * GET /v1/models, POST /v1/adapters, DELETE /v1/adapters/NAME, GET /health, GET /metrics.
 *
 * Threads: libmicrohttpd runs one thread per connection. A handler parses and validates the
 * request, queues it to the scheduler and then blocks on the request's condvar, writing what
 * the scheduler publishes (SSE chunks, or one body at the end). Blocking per connection keeps
 * the streaming code straight-line; the scheduler, not the handler threads, bounds the work, and
 * the connection limit bounds the threads. While it waits, a handler checks its socket every
 * 100 ms, so a client that disconnects frees its slot at once.
 *
 * Life cycle: serve_start binds and answers at once (/health 503 "loading"); serve_load loads
 * the model and adapters and turns ready; serve_drain stops accepting and lets running
 * requests finish; serve_stop frees everything. The config's strings are borrowed. */
#ifndef NG_SERVE_H
#define NG_SERVE_H

#include <stddef.h>

#include "core/util.h"

#define SERVE_MAX_LORA 16

typedef struct {
    const char *model_path;
    const char *host; /* an IPv4 or IPv6 address (default 127.0.0.1) */
    int port;         /* 0: any free port (serve_port tells which) */
    const char *lora_name[SERVE_MAX_LORA], *lora_arg[SERVE_MAX_LORA]; /* NAME, PATH[:SCALE] */
    int n_lora;
    const char *api_key;       /* NULL: no auth */
    const char *chat_template; /* NULL: the model's, else chatml (GPT-2) / llama2 (SentencePiece) */
    int parallel, n_ctx, max_queue, n_batch, threads;
    size_t max_body;
    int max_connections;
} serve_config;

void serve_config_defaults(serve_config *c);

typedef struct serve_server serve_server;

serve_server *serve_start(const serve_config *cfg, ng_error *err);
int serve_port(const serve_server *s);
/* Loads the model, the --lora adapters and starts the scheduler. NG_ERR + err. */
int serve_load(serve_server *s, ng_error *err);
/* Stops accepting connections, answers new requests on open ones with 503, and waits up to
 * timeout_s for running requests to finish. */
void serve_drain(serve_server *s, double timeout_s);
void serve_stop(serve_server *s);

/* `netgpt bench serve`: the load generator (loadgen.c). */
int serve_bench_main(int argc, char **argv);

#endif
