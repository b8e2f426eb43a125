/* http — libmicrohttpd glue for `netgpt serve`: routing, auth, body limits, OpenAI errors, and
 * the handlers that turn a validated request into a scheduler request and its output into a
 * response or an SSE stream. See serve.h for the threading model. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/kernels.h"
#include "model/lora.h"
#include "model/model.h"
#include "serve/metrics.h"
#include "serve/body.h"
#include "serve/openai.h"
#include "serve/sched.h"
#include "serve/serve.h"
#include "tokenizer/chat.h"

struct serve_server {
    serve_config cfg;
    struct MHD_Daemon *d;
    int port;
    atomic_int ready, draining, stopping;
    atomic_int active; /* HTTP requests in progress */
    atomic_ulong next_id;
    ng_model *m;
    sched *sch;
    ng_chat_template tmpl;
    serve_metrics metrics;
};

void serve_config_defaults(serve_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8080;
    c->parallel = 8;
    c->max_queue = 64;
    c->n_batch = 128;
    c->max_body = 1 << 20;
    c->max_connections = 256;
}

/* Per request (MHD's con_cls): the body as it arrives. */
typedef http_body conn_ctx;

/* ---- replies -------------------------------------------------------------------------------- */

static enum MHD_Result reply(serve_server *s, struct MHD_Connection *c, int status, const char *body,
                             const char *ctype, int retry_after) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    metrics_request(&s->metrics, status);
    return ok;
}

static enum MHD_Result reply_json(serve_server *s, struct MHD_Connection *c, int status, char *json) {
    enum MHD_Result ok = reply(s, c, status, json, "application/json", 0);
    free(json);
    return ok;
}

static enum MHD_Result reply_error(serve_server *s, struct MHD_Connection *c, int status, const char *param,
                                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static enum MHD_Result reply_error(serve_server *s, struct MHD_Connection *c, int status, const char *param,
                                   const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *json = openai_error_json(status, msg, param);
    enum MHD_Result ok = reply(s, c, status, json, "application/json", status == 429 || status == 503 ? 1 : 0);
    free(json);
    return ok;
}

/* The peer closed its end (or the socket failed): the request's work should stop. */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 1;
    char b;
    ssize_t k = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Compares in time that depends only on the lengths, not on where the first difference is. */
static int key_matches(const char *given, const char *key) {
    size_t n = strlen(key), g = strlen(given);
    unsigned d = (unsigned)(n != g);
    for (size_t i = 0; i < n; i++) d |= (unsigned char)key[i] ^ (unsigned char)(i < g ? given[i] : 0);
    return d == 0;
}

static int authorized(serve_server *s, struct MHD_Connection *c) {
    if (!s->cfg.api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ') h++;
    return key_matches(h, s->cfg.api_key);
}

/* ---- completions ---------------------------------------------------------------------------- */

/* Everything a response needs besides the scheduler's output. */
typedef struct {
    char id[48], model[128];
    openai_meta meta;
    int n_prompt, return_ids, include_usage;
} resp_info;

static int *prompt_tokens(serve_server *s, const openai_req *q, int *n, openai_error *e) {
    const ng_tokenizer *tok = s->m->tok;
    int *ids = NULL, k = 0;
    if (q->prompt_ids) {
        for (int i = 0; i < q->n_prompt_ids; i++)
            if (q->prompt_ids[i] >= s->m->hp.n_vocab) {
                e->status = 400;
                snprintf(e->param, sizeof e->param, "prompt");
                snprintf(e->message, sizeof e->message, "prompt token %d (at %d) is outside the vocabulary of %d",
                         q->prompt_ids[i], i, s->m->hp.n_vocab);
                return NULL;
            }
        ids = xmalloc((size_t)q->n_prompt_ids * sizeof *ids);
        memcpy(ids, q->prompt_ids, (size_t)q->n_prompt_ids * sizeof *ids);
        *n = q->n_prompt_ids;
        return ids;
    }
    char *text = q->chat ? chat_apply(s->tmpl, q->msgs, q->n_msgs, 1) : NULL;
    if (q->chat && !text) {
        e->status = 400;
        snprintf(e->param, sizeof e->param, "messages");
        snprintf(e->message, sizeof e->message, "the messages cannot be rendered with the %s chat template",
                 chat_template_name(s->tmpl));
        return NULL;
    }
    const char *src = q->chat ? text : q->prompt;
    /* a chat template writes its control tokens as text; a plain prompt's text is only text */
    int *body = q->chat ? tok_encode_special(tok, src, strlen(src), &k) : tok_encode(tok, src, strlen(src), &k);
    free(text);
    int bos = tok_add_bos(tok) && tok_bos(tok) >= 0;
    /* an empty prompt starts a document, as `netgpt generate` does */
    int start = k == 0 && !bos ? (tok_bos(tok) >= 0 ? tok_bos(tok) : tok_eos(tok)) : -1;
    ids = xmalloc((size_t)(k + 2) * sizeof *ids);
    int j = 0;
    if (bos) ids[j++] = tok_bos(tok);
    else if (start >= 0) ids[j++] = start;
    if (k) memcpy(ids + j, body, (size_t)k * sizeof *ids);
    free(body);
    *n = j + k;
    return ids;
}

typedef struct {
    serve_server *srv;
    struct MHD_Connection *conn;
    serve_req *r;
    resp_info info;
    char *pending; /* SSE bytes not yet handed to MHD */
    size_t plen, poff;
    size_t seen; /* bytes of r->text already sent */
    int finished;
} stream_ctx;

static void stream_append(stream_ctx *sc, char *ev) {
    size_t n = strlen(ev);
    if (sc->poff == sc->plen) sc->poff = sc->plen = 0;
    sc->pending = xrealloc(sc->pending, sc->plen + n + 1);
    memcpy(sc->pending + sc->plen, ev, n + 1);
    sc->plen += n;
    free(ev);
}

static openai_usage usage_of(serve_req *r, int n_prompt) {
    return (openai_usage){n_prompt, r->n_ids, r->n_cached};
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_ctx *sc = cls;
    serve_req *r = sc->r;
    for (;;) {
        if (sc->poff < sc->plen) {
            size_t n = sc->plen - sc->poff < max ? sc->plen - sc->poff : max;
            memcpy(buf, sc->pending + sc->poff, n);
            sc->poff += n;
            return (ssize_t)n;
        }
        if (sc->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        if (atomic_load(&sc->srv->stopping)) return MHD_CONTENT_READER_END_WITH_ERROR;
        pthread_mutex_lock(&r->mu);
        size_t len = r->text_len;
        int done = r->done;
        char *text = len > sc->seen ? xmalloc(len - sc->seen) : NULL;
        if (text) memcpy(text, r->text + sc->seen, len - sc->seen);
        openai_usage u = usage_of(r, sc->info.n_prompt);
        const char *finish = r->finish;
        char error[256];
        memcpy(error, r->error, sizeof error);
        pthread_mutex_unlock(&r->mu);
        if (text) {
            stream_append(sc, openai_chunk_sse(&sc->info.meta, text, len - sc->seen, 0, NULL, NULL));
            free(text);
            sc->seen = len;
        }
        if (done) {
            if (!strcmp(finish, "stop") || !strcmp(finish, "length")) {
                stream_append(sc, openai_chunk_sse(&sc->info.meta, "", 0, 0, finish, NULL));
                if (sc->info.include_usage) stream_append(sc, openai_chunk_sse(&sc->info.meta, "", 0, 0, NULL, &u));
            } else {
                char *json = openai_error_json(500, error[0] ? error : "the request was cancelled", NULL);
                size_t n = strlen(json);
                char *ev = xmalloc(n + 9);
                snprintf(ev, n + 9, "data: %s\n\n", json);
                free(json);
                stream_append(sc, ev);
            }
            stream_append(sc, xstrdup("data: [DONE]\n\n"));
            sc->finished = 1;
            continue;
        }
        if (sc->poff < sc->plen) continue;
        if (!serve_req_wait(r, sc->seen, 0, 0.1) && client_gone(sc->conn)) {
            sched_cancel(sc->srv->sch, r);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) {
    stream_ctx *sc = cls;
    /* a stream that ends before its request (a write error, the server stopping) frees the slot */
    sched_cancel(sc->srv->sch, sc->r);
    serve_req_unref(sc->r);
    free(sc->pending);
    free(sc);
}

static enum MHD_Result start_stream(serve_server *s, struct MHD_Connection *c, serve_req *r, const resp_info *info) {
    stream_ctx *sc = xcalloc(1, sizeof *sc);
    sc->srv = s;
    sc->conn = c;
    sc->r = r;
    sc->info = *info;
    sc->info.meta.id = sc->info.id;
    sc->info.meta.model = sc->info.model;
    /* the first chat chunk carries the role, as OpenAI's does */
    if (info->meta.chat) stream_append(sc, openai_chunk_sse(&sc->info.meta, "", 0, 1, NULL, NULL));
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, sc, stream_free);
    if (!resp) {
        stream_free(sc);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    metrics_request(&s->metrics, 200);
    return ok;
}

static enum MHD_Result wait_whole(serve_server *s, struct MHD_Connection *c, serve_req *r, const resp_info *info) {
    while (!serve_req_wait(r, SIZE_MAX, 0, 0.1)) {
        if (client_gone(c) || atomic_load(&s->stopping)) {
            sched_cancel(s->sch, r);
            serve_req_unref(r);
            return MHD_NO; /* closes the connection */
        }
    }
    pthread_mutex_lock(&r->mu);
    enum MHD_Result ok;
    if (!strcmp(r->finish, "stop") || !strcmp(r->finish, "length")) {
        openai_usage u = usage_of(r, info->n_prompt);
        char *json = openai_response_json(&info->meta, r->text ? r->text : "", r->text_len, r->finish, &u,
                                          info->return_ids ? r->prompt : NULL, r->n_prompt,
                                          info->return_ids ? (r->ids ? r->ids : (int[1]){0}) : NULL, r->n_ids);
        pthread_mutex_unlock(&r->mu);
        ok = reply_json(s, c, 200, json);
    } else {
        char error[256];
        snprintf(error, sizeof error, "%s", r->error[0] ? r->error : "the request was cancelled");
        pthread_mutex_unlock(&r->mu);
        ok = reply_error(s, c, 500, NULL, "%s", error);
    }
    serve_req_unref(r);
    return ok;
}

/* The model a request names: the base (NULL adapter) or a loaded adapter (a new reference). */
static int resolve_model(serve_server *s, const char *name, serve_adapter **a) {
    *a = NULL;
    if (!name || !name[0] || !strcmp(name, s->m->name)) return 1;
    *a = sched_adapter_get(s->sch, name);
    return *a != NULL;
}

static enum MHD_Result handle_completion(serve_server *s, struct MHD_Connection *c, conn_ctx *cc, int chat) {
    openai_req q;
    openai_error e;
    if (openai_parse(cc->body ? cc->body : "", cc->len, chat, &q, &e))
        return reply_error(s, c, e.status, e.param, "%s", e.message);
    serve_req *r = NULL;
    serve_adapter *ad = NULL;
    enum MHD_Result ok;
    if (!resolve_model(s, q.model, &ad)) {
        ok = reply_error(s, c, 404, "model", "the model '%s' does not exist (GET /v1/models lists them)", q.model);
        goto done;
    }
    int n_prompt = 0;
    int *prompt = prompt_tokens(s, &q, &n_prompt, &e);
    if (!prompt) {
        ok = reply_error(s, c, e.status, e.param, "%s", e.message);
        goto done;
    }
    int n_ctx = s->cfg.n_ctx, max_tokens = q.max_tokens;
    if (max_tokens < 0) max_tokens = n_ctx - n_prompt; /* absent: up to the context */
    if (n_prompt >= n_ctx || n_prompt + max_tokens > n_ctx) {
        free(prompt);
        ok = reply_error(s, c, 400, q.max_tokens < 0 ? (chat ? "messages" : "prompt") : "max_tokens",
                         "This model's maximum context length is %d tokens. However, you requested %d tokens "
                         "(%d in the prompt, %d for max_tokens).",
                         n_ctx, n_prompt + (max_tokens > 0 ? max_tokens : 1), n_prompt, max_tokens > 0 ? max_tokens : 1);
        goto done;
    }
    r = serve_req_new();
    r->prompt = prompt;
    r->n_prompt = n_prompt;
    r->max_tokens = max_tokens;
    r->adapter = ad;
    ad = NULL;
    r->sp.temp = q.temperature;
    r->sp.top_p = q.top_p;
    r->sp.top_k = 0;
    r->sp.min_p = 0;
    r->sp.repeat_penalty = 1;
    unsigned long id = atomic_fetch_add(&s->next_id, 1);
    r->sp.seed = q.has_seed ? q.seed : ((uint64_t)time(NULL) << 20) ^ (id * 0x9E3779B97F4A7C15ull);
    if (q.n_stop) {
        r->stop = xmalloc((size_t)q.n_stop * sizeof *r->stop);
        for (int i = 0; i < q.n_stop; i++) r->stop[i] = xstrdup(q.stop[i]);
        r->n_stop = q.n_stop;
    }
    if (q.format != OPENAI_FMT_TEXT) {
        ng_error err;
        r->jc = jsonc_new(q.format == OPENAI_FMT_JSON_SCHEMA ? q.schema : NULL, &err);
        if (!r->jc) {
            ok = reply_error(s, c, 400, "response_format", "unsupported JSON schema: %s", err.msg);
            goto done;
        }
    }
    resp_info info = {.n_prompt = n_prompt, .return_ids = q.return_token_ids, .include_usage = q.include_usage};
    snprintf(info.id, sizeof info.id, "%s-%lx%06lx", chat ? "chatcmpl" : "cmpl", (unsigned long)time(NULL), id);
    snprintf(info.model, sizeof info.model, "%s", q.model && q.model[0] ? q.model : s->m->name);
    info.meta = (openai_meta){info.id, info.model, (long)time(NULL), chat};
    int rc = sched_submit(s->sch, r);
    if (rc == SCHED_FULL) {
        ok = reply_error(s, c, 429, NULL, "the server's queue is full (%d waiting); retry later", s->cfg.max_queue);
        goto done;
    }
    if (rc != SCHED_OK) {
        ok = reply_error(s, c, 503, NULL, "the server is shutting down");
        goto done;
    }
    if (q.stream) ok = start_stream(s, c, r, &info);
    else ok = wait_whole(s, c, r, &info);
    r = NULL; /* the response path owns the caller's reference now */
done:
    serve_adapter_unref(ad);
    serve_req_unref(r);
    openai_req_free(&q);
    return ok;
}

/* ---- models, adapters, health, metrics ------------------------------------------------------ */

static enum MHD_Result handle_models(serve_server *s, struct MHD_Connection *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    int n;
    char **names = sched_adapter_names(s->sch, &n);
    for (int i = -1; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", i < 0 ? s->m->name : names[i]);
        cJSON_AddStringToObject(o, "object", "model");
        cJSON_AddNumberToObject(o, "created", 0);
        cJSON_AddStringToObject(o, "owned_by", "netgpt");
        if (i >= 0) cJSON_AddStringToObject(o, "parent", s->m->name);
        cJSON_AddItemToArray(data, o);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return reply_error(s, c, 500, NULL, "out of memory");
    enum MHD_Result ok = reply(s, c, 200, json, "application/json", 0);
    cJSON_free(json);
    return ok;
}

static int valid_adapter_name(const char *n) {
    size_t len = strlen(n);
    if (len == 0 || len > 64) return 0;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9') ||
              strchr("._-", n[i])))
            return 0;
    return 1;
}

static enum MHD_Result handle_adapter_add(serve_server *s, struct MHD_Connection *c, conn_ctx *cc) {
    cJSON *root = cJSON_ParseWithLength(cc->body ? cc->body : "", cc->len);
    if (!root) return reply_error(s, c, 400, NULL, "the request body is not valid JSON");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(root, "path");
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(root, "scale");
    enum MHD_Result ok;
    ng_error err;
    if (!cJSON_IsString(name) || !valid_adapter_name(name->valuestring) || !strcmp(name->valuestring, s->m->name))
        ok = reply_error(s, c, 400, "name", "'name' must be 1-64 of [A-Za-z0-9._-] and not the base model's name");
    else if (!cJSON_IsString(path) || !path->valuestring[0])
        ok = reply_error(s, c, 400, "path", "'path' must be the adapter's file or folder on the server");
    else if (scale && !(cJSON_IsNumber(scale) && scale->valuedouble >= -100 && scale->valuedouble <= 100))
        ok = reply_error(s, c, 400, "scale", "'scale' must be a number in [-100, 100]");
    else if (sched_adapter_add(s->sch, name->valuestring, path->valuestring,
                               scale ? (float)scale->valuedouble : 1.0f, &err))
        ok = reply_error(s, c, strstr(err.msg, "already loaded") ? 409 : 400, "path", "%s", err.msg);
    else {
        char *json = xmalloc(strlen(name->valuestring) + 64);
        sprintf(json, "{\"id\":\"%s\",\"object\":\"model\",\"loaded\":true}", name->valuestring);
        ok = reply_json(s, c, 200, json);
    }
    cJSON_Delete(root);
    return ok;
}

static enum MHD_Result handle_adapter_delete(serve_server *s, struct MHD_Connection *c, const char *name) {
    if (!valid_adapter_name(name) || sched_adapter_remove(s->sch, name))
        return reply_error(s, c, 404, "model", "no adapter named '%s' is loaded", name);
    char *json = xmalloc(strlen(name) + 64);
    sprintf(json, "{\"id\":\"%s\",\"object\":\"model\",\"deleted\":true}", name);
    return reply_json(s, c, 200, json);
}

static enum MHD_Result handle_metrics(serve_server *s, struct MHD_Connection *c) {
    metrics_gauges g = {0};
    if (atomic_load(&s->ready)) sched_gauges(s->sch, &g);
    char *text = metrics_render(&s->metrics, &g);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) return free(text), MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---- routing -------------------------------------------------------------------------------- */

static enum MHD_Result route(serve_server *s, struct MHD_Connection *c, const char *url, const char *method,
                             conn_ctx *cc) {
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST"), del = !strcmp(method, "DELETE");
    if (!strcmp(url, "/health")) {
        if (!get) return reply_error(s, c, 405, NULL, "use GET on %s", url);
        if (atomic_load(&s->draining)) return reply(s, c, 503, "{\"status\":\"draining\"}", "application/json", 1);
        if (!atomic_load(&s->ready)) return reply(s, c, 503, "{\"status\":\"loading\"}", "application/json", 1);
        return reply(s, c, 200, "{\"status\":\"ok\"}", "application/json", 0);
    }
    if (!strcmp(url, "/metrics")) return get ? handle_metrics(s, c) : reply_error(s, c, 405, NULL, "use GET on %s", url);
    if (strncmp(url, "/v1/", 4)) return reply_error(s, c, 404, NULL, "no such endpoint: %s %s", method, url);
    if (!authorized(s, c))
        return reply_error(s, c, 401, NULL, "missing or invalid API key (send 'Authorization: Bearer KEY')");
    if (atomic_load(&s->draining)) return reply_error(s, c, 503, NULL, "the server is shutting down");
    if (!atomic_load(&s->ready)) return reply_error(s, c, 503, NULL, "the model is still loading");
    if (cc->too_big)
        return reply_error(s, c, 413, NULL, "the request body exceeds the limit of %zu bytes", s->cfg.max_body);
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/v1/completions")) {
        if (!post) return reply_error(s, c, 405, NULL, "use POST on %s", url);
        return handle_completion(s, c, cc, url[4] == 'c' && url[5] == 'h');
    }
    if (!strcmp(url, "/v1/models")) return get ? handle_models(s, c) : reply_error(s, c, 405, NULL, "use GET on %s", url);
    if (!strcmp(url, "/v1/adapters")) {
        if (post) return handle_adapter_add(s, c, cc);
        if (get) return handle_models(s, c);
        return reply_error(s, c, 405, NULL, "use POST (load) or GET on %s", url);
    }
    if (!strncmp(url, "/v1/adapters/", 13)) {
        if (!del) return reply_error(s, c, 405, NULL, "use DELETE on %s", url);
        return handle_adapter_delete(s, c, url + 13);
    }
    return reply_error(s, c, 404, NULL, "no such endpoint: %s %s", method, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    serve_server *s = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) {
        cc = *con_cls = xcalloc(1, sizeof *cc);
        atomic_fetch_add(&s->active, 1);
        /* a declared length over the limit is refused before the body is read */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body) {
            cc->too_big = 1;
            return reply_error(s, c, 413, NULL, "the request body exceeds the limit of %zu bytes", s->cfg.max_body);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        http_body_add(cc, upload, *upload_size, s->cfg.max_body);
        *upload_size = 0;
        return MHD_YES;
    }
    return route(s, c, url, method, cc);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    serve_server *s = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) return;
    free(cc->body);
    free(cc);
    *con_cls = NULL;
    atomic_fetch_sub(&s->active, 1);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

serve_server *serve_start(const serve_config *cfg, ng_error *err) {
    struct sockaddr_storage ss;
    unsigned flags;
    if (http_listen_addr(cfg->host, cfg->port, &ss, &flags, err)) return NULL;
    serve_server *s = xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    metrics_init(&s->metrics);
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                            MHD_OPTION_END);
    if (!s->d) {
        ng_error_set(err, "cannot listen on %s port %d: %s", cfg->host, cfg->port, strerror(errno));
        metrics_free(&s->metrics);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    return s;
}

int serve_port(const serve_server *s) { return s->port; }

int serve_load(serve_server *s, ng_error *err) {
    ng_set_threads(s->cfg.threads);
    s->m = ng_model_load(s->cfg.model_path, err);
    if (!s->m) return NG_ERR;
    if (!s->m->tok) return ng_error_set(err, "%s has no tokenizer: the server needs one", s->cfg.model_path);
    if (s->cfg.n_ctx <= 0 || s->cfg.n_ctx > s->m->hp.n_ctx) s->cfg.n_ctx = s->m->hp.n_ctx;
    const char *jinja = s->m->gguf ? gguf_get_str(s->m->gguf, "tokenizer.chat_template") : NULL;
    s->tmpl = s->cfg.chat_template ? chat_template_by_name(s->cfg.chat_template)
                                   : chat_template_for(jinja, strcmp(tok_kind(s->m->tok), "gpt2") != 0);
    if (s->cfg.chat_template && s->tmpl == CHAT_NONE)
        return ng_error_set(err, "--chat-template '%s' is not llama2, chatml or zephyr", s->cfg.chat_template);
    sched_config sc = {s->cfg.parallel, s->cfg.n_ctx, s->cfg.max_queue, s->cfg.n_batch, &s->metrics};
    s->sch = sched_new(s->m, &sc, err);
    if (!s->sch) return NG_ERR;
    for (int i = 0; i < s->cfg.n_lora; i++) {
        char *path = NULL;
        float scale = 1;
        if (ng_lora_parse_arg(s->cfg.lora_arg[i], &path, &scale, err)) return NG_ERR;
        int rc = !valid_adapter_name(s->cfg.lora_name[i]) || !strcmp(s->cfg.lora_name[i], s->m->name)
                     ? ng_error_set(err, "--lora name '%s' must be 1-64 of [A-Za-z0-9._-], not the model's name",
                                    s->cfg.lora_name[i])
                     : sched_adapter_add(s->sch, s->cfg.lora_name[i], path, scale, err);
        free(path);
        if (rc) return NG_ERR;
    }
    atomic_store(&s->ready, 1);
    return NG_OK;
}

void serve_drain(serve_server *s, double timeout_s) {
    atomic_store(&s->draining, 1);
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    double end = ng_time() + timeout_s;
    while (ng_time() < end && (atomic_load(&s->active) > 0 || (s->sch && !sched_idle(s->sch)))) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void serve_stop(serve_server *s) {
    if (!s) return;
    atomic_store(&s->stopping, 1);
    MHD_stop_daemon(s->d);
    sched_free(s->sch);
    ng_model_free(s->m);
    metrics_free(&s->metrics);
    free(s);
}
