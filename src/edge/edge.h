/* edge — `netgpt edge`, the edge tier: an OpenAI-compatible HTTP server (libmicrohttpd) that
 * personalizes each request and forwards it to the cloud tier.
 *
 * One request (POST /v1/chat/completions or /v1/completions, same bodies and errors as
 * `netgpt serve`, plus an optional "netgpt" object or X-Netgpt-* headers: user, lat, lon, cell,
 * name, mode):
 *   1. context   the store (SQLite) gives the nearest city (the place, never the coordinates),
 *                its local time, the serving cell, POIs of the categories the concise prompt
 *                asks about, and the user's preferences, language and recent visits;
 *   2. complete  the edge model + completion adapter (or the template) turns the concise prompt
 *                into the comprehensive one (edge_complete / edge_template_fill);
 *   3. privacy   everything bound for the cloud goes through privacy_scrub (user id, profile
 *                names, e-mails, phones, coordinates); the user id and coordinates are never
 *                put in the uplink body in the first place;
 *   4. cloud     the comprehensive prompt goes up over libcurl (cloud_chat_stream) and the SSE
 *                answer is relayed to the client as it arrives;
 *   5. fallback  when the cloud is unreachable, slow, answers 5xx or cuts the stream, the edge
 *                model answers (or finishes the cut answer) itself and the response is marked
 *                fallback; a circuit breaker keeps a failing cloud out for a while.
 * Modes: "edge-cloud" (default: 1-5), "cloud-only" (the scrubbed concise prompt goes up, no
 * context), "edge-only" (1-2, the edge model answers).
 *
 * The response carries a "netgpt" extension object (in the body; in streams, in the first chunk
 * and the chunk with finish_reason) with the mode used, the concise and comprehensive prompts,
 * the place, and telemetry (edge completion ms, cloud time to first token, total ms, uplink and
 * downlink bytes, tokens); the same as X-Netgpt-* response headers (a stream's headers carry
 * what is known before the answer starts).
 *
 * Threads: libmicrohttpd runs one thread per connection. The edge model is one instance used
 * under one mutex (completion and edge answers take turns: an edge node serves few users at a
 * time and this keeps one KV cache's worth of memory per request); the store is one connection
 * under its own mutex. A streamed request runs its cloud/edge answer on a worker thread that
 * hands SSE bytes to the connection's thread; a non-streamed one runs on the connection thread.
 * Nothing reachable from a request exits or aborts.
 *
 * Ownership: edge_start copies nothing from the config's strings (they must outlive the
 * server); edge_stop stops accepting, ends running requests (their streams end at once) and
 * frees everything. */
#ifndef NG_EDGE_H
#define NG_EDGE_H

#include <stddef.h>

#include "core/util.h"

typedef struct {
    const char *cloud_url;   /* base URL of an OpenAI-compatible cloud ("http://127.0.0.1:8080") */
    const char *cloud_key;   /* its API key, or NULL */
    const char *cloud_model; /* "model" sent up, or NULL: the cloud's default */
    const char *model_path;  /* the edge model (GPT-2 family) */
    const char *lora_arg;    /* completion adapter PATH[:SCALE], or NULL */
    const char *completion;  /* "model" | "template" | NULL (model when an adapter is given) */
    const char *db_path;     /* the context store */
    const char *cell;        /* this edge node's cell: used when a request names none, or NULL */
    const char *host;        /* IPv4 or IPv6 address to listen on */
    int port;                /* 0: any free port (edge_port tells which) */
    int threads;
    int completion_tokens;   /* most tokens of a model-written comprehensive prompt */
    int completion_beams;    /* its beam width (edge_complete) */
    int max_tokens;          /* answer tokens when a request gives no max_tokens */
    double connect_timeout_s, idle_timeout_s, total_timeout_s; /* to the cloud */
    int breaker_threshold;   /* consecutive cloud failures that open the breaker */
    double breaker_cooldown_s;
    size_t max_body;
    int max_connections;
} edge_config;

void edge_config_defaults(edge_config *c);

typedef struct edge_server edge_server;

/* Loads the edge model (and adapter), opens the store and listens. NULL + err. */
edge_server *edge_start(const edge_config *cfg, ng_error *err);
int edge_port(const edge_server *s);
/* "model" or "template": who writes the comprehensive prompts. */
const char *edge_completion_kind(const edge_server *s);
void edge_stop(edge_server *s);

/* The English name of an ISO 3166-1 alpha-2 country code ("FR" -> "France"), as the completion
 * adapter's training data writes it; the code itself when unknown. */
const char *edge_country_name(const char *code);

#endif
