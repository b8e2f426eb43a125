#include "serve/openai.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

static int fail(openai_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(openai_error *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return NG_ERR;
}

/* Keeps a copy of s in r (freed with r). */
static char *keep(openai_req *r, const char *s) {
    r->strs = xrealloc(r->strs, (size_t)(r->n_strs + 1) * sizeof *r->strs);
    return r->strs[r->n_strs++] = xstrdup(s);
}

/* A JSON number that is an integer in [lo, hi]. */
static int get_int(const cJSON *v, double lo, double hi, long long *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != floor(d)) return 0;
    *out = (long long)d;
    return 1;
}

static int is_role(const char *s) {
    return !strcmp(s, "system") || !strcmp(s, "user") || !strcmp(s, "assistant") || !strcmp(s, "developer");
}

/* content: a string, null (an assistant turn with no text), or an array of {"type":"text",
 * "text":...} parts, which are joined. */
static int parse_content(openai_req *r, const cJSON *c, int i, const char **out, openai_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (cJSON_IsString(c)) return *out = keep(r, c->valuestring), NG_OK;
    if (!c || cJSON_IsNull(c)) return *out = keep(r, ""), NG_OK;
    if (!cJSON_IsArray(c)) return fail(e, 400, param, "%s must be a string or an array of text parts", param);
    size_t len = 0, cap = 64;
    char *text = xmalloc(cap);
    text[0] = 0;
    const cJSON *part;
    int k = 0;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(t)) {
            free(text);
            return fail(e, 400, param, "%s[%d] must be {\"type\":\"text\",\"text\":STRING} (only text is supported)",
                        param, k);
        }
        size_t n = strlen(t->valuestring);
        if (len + n + 1 > cap) text = xrealloc(text, cap = (len + n + 1) * 2);
        memcpy(text + len, t->valuestring, n + 1);
        len += n;
        k++;
    }
    *out = keep(r, text);
    free(text);
    return NG_OK;
}

static int parse_messages(openai_req *r, const cJSON *msgs, openai_error *e) {
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return fail(e, 400, "messages", "'messages' must be a non-empty array");
    int n = cJSON_GetArraySize(msgs);
    r->msgs = xcalloc((size_t)n, sizeof *r->msgs);
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, msgs) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsObject(m)) return fail(e, 400, param, "messages[%d] must be an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role) || !is_role(role->valuestring))
            return fail(e, 400, param, "%s must be \"system\", \"user\" or \"assistant\"", param);
        /* "developer" is OpenAI's newer name for the system turn */
        r->msgs[i].role = keep(r, strcmp(role->valuestring, "developer") ? role->valuestring : "system");
        if (parse_content(r, cJSON_GetObjectItemCaseSensitive(m, "content"), i, &r->msgs[i].content, e)) return NG_ERR;
        r->n_msgs = ++i;
    }
    return NG_OK;
}

/* prompt: a string, an array of one string, or an array of token ids. */
static int parse_prompt(openai_req *r, const cJSON *p, openai_error *e) {
    if (cJSON_IsString(p)) return r->prompt = keep(r, p->valuestring), NG_OK;
    if (!cJSON_IsArray(p)) return fail(e, 400, "prompt", "'prompt' must be a string or an array of token ids");
    int n = cJSON_GetArraySize(p);
    if (n == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        return r->prompt = keep(r, cJSON_GetArrayItem(p, 0)->valuestring), NG_OK;
    if (n == 0) return fail(e, 400, "prompt", "'prompt' is an empty array");
    r->prompt_ids = xmalloc((size_t)n * sizeof *r->prompt_ids);
    const cJSON *v;
    cJSON_ArrayForEach(v, p) {
        long long id;
        if (!get_int(v, 0, 2147483647.0, &id))
            return fail(e, 400, "prompt", "'prompt' must be a string, one string, or an array of token ids (ints >= 0)");
        r->prompt_ids[r->n_prompt_ids++] = (int)id;
    }
    return NG_OK;
}

static int parse_stop(openai_req *r, const cJSON *s, openai_error *e) {
    if (!s || cJSON_IsNull(s)) return NG_OK;
    if (cJSON_IsString(s)) {
        if (s->valuestring[0]) r->stop[r->n_stop++] = keep(r, s->valuestring);
        return NG_OK;
    }
    if (!cJSON_IsArray(s)) return fail(e, 400, "stop", "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(s) > OPENAI_MAX_STOP)
        return fail(e, 400, "stop", "'stop' has more than %d strings", OPENAI_MAX_STOP);
    const cJSON *v;
    cJSON_ArrayForEach(v, s) {
        if (!cJSON_IsString(v)) return fail(e, 400, "stop", "'stop' must be a string or an array of strings");
        if (v->valuestring[0]) r->stop[r->n_stop++] = keep(r, v->valuestring);
    }
    return NG_OK;
}

static int parse_format(openai_req *r, const cJSON *f, openai_error *e) {
    if (!f || cJSON_IsNull(f)) return NG_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(f, "type");
    if (!cJSON_IsObject(f) || !cJSON_IsString(type))
        return fail(e, 400, "response_format", "'response_format' must be an object with a string 'type'");
    if (!strcmp(type->valuestring, "text")) return NG_OK;
    if (!strcmp(type->valuestring, "json_object")) return r->format = OPENAI_FMT_JSON_OBJECT, NG_OK;
    if (strcmp(type->valuestring, "json_schema"))
        return fail(e, 400, "response_format.type",
                    "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(f, "json_schema");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    if (!cJSON_IsObject(js) || !cJSON_IsObject(schema))
        return fail(e, 400, "response_format.json_schema.schema",
                    "'response_format.json_schema.schema' must be an object (a JSON Schema)");
    char *text = cJSON_PrintUnformatted(schema);
    if (!text) return fail(e, 400, "response_format.json_schema.schema", "the schema could not be printed");
    r->schema = keep(r, text);
    cJSON_free(text);
    r->format = OPENAI_FMT_JSON_SCHEMA;
    return NG_OK;
}

static int parse_obj(openai_req *r, const cJSON *root, openai_error *e) {
    if (!cJSON_IsObject(root)) return fail(e, 400, NULL, "the request body must be a JSON object");
    const cJSON *v;
    v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) return fail(e, 400, "model", "'model' must be a string");
        r->model = keep(r, v->valuestring);
    }
    if (r->chat) {
        if (parse_messages(r, cJSON_GetObjectItemCaseSensitive(root, "messages"), e)) return NG_ERR;
    } else {
        v = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (!v) return fail(e, 400, "prompt", "'prompt' is required");
        if (parse_prompt(r, v, e)) return NG_ERR;
    }
    long long iv;
    v = cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens");
    if (!v || cJSON_IsNull(v)) v = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    if (v && !cJSON_IsNull(v)) {
        if (!get_int(v, 1, 1 << 30, &iv)) return fail(e, 400, "max_tokens", "'max_tokens' must be an integer >= 1");
        r->max_tokens = (int)iv;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "temperature");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 2))
            return fail(e, 400, "temperature", "'temperature' must be a number in [0, 2]");
        r->temperature = (float)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "top_p");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1))
            return fail(e, 400, "top_p", "'top_p' must be a number in (0, 1]");
        r->top_p = (float)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "n");
    if (v && !cJSON_IsNull(v) && (!get_int(v, 1, 1, &iv)))
        return fail(e, 400, "n", "only 'n' = 1 is supported");
    v = cJSON_GetObjectItemCaseSensitive(root, "seed");
    if (v && !cJSON_IsNull(v)) {
        /* 2^53: the largest range a JSON number holds exactly */
        if (!get_int(v, -9007199254740992.0, 9007199254740992.0, &iv))
            return fail(e, 400, "seed", "'seed' must be an integer");
        r->has_seed = 1, r->seed = (uint64_t)iv;
    }
    if (parse_stop(r, cJSON_GetObjectItemCaseSensitive(root, "stop"), e)) return NG_ERR;
    v = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) return fail(e, 400, "stream", "'stream' must be a boolean");
        r->stream = cJSON_IsTrue(v);
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (v && !cJSON_IsNull(v)) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(v, "include_usage");
        if (!cJSON_IsObject(v) || (u && !cJSON_IsBool(u)))
            return fail(e, 400, "stream_options", "'stream_options' must be {\"include_usage\": BOOL}");
        r->include_usage = cJSON_IsTrue(u);
    }
    if (parse_format(r, cJSON_GetObjectItemCaseSensitive(root, "response_format"), e)) return NG_ERR;
    v = cJSON_GetObjectItemCaseSensitive(root, "return_token_ids");
    r->return_token_ids = cJSON_IsTrue(v);
    return NG_OK;
}

int openai_parse(const char *body, size_t len, int chat, openai_req *r, openai_error *e) {
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->chat = chat;
    r->max_tokens = -1;
    r->temperature = 1.0f;
    r->top_p = 1.0f;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return fail(e, 400, NULL, "the request body is not valid JSON (error near byte %zu)", at);
    }
    int rc = parse_obj(r, root, e);
    cJSON_Delete(root);
    if (rc) openai_req_free(r);
    return rc;
}

void openai_req_free(openai_req *r) {
    for (int i = 0; i < r->n_strs; i++) free(r->strs[i]);
    free(r->strs);
    free(r->msgs);
    free(r->prompt_ids);
    memset(r, 0, sizeof *r);
}

/* ---- responses ------------------------------------------------------------------------------ */

static const char *error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *error_code(int status) {
    switch (status) {
    case 401: return "invalid_api_key";
    case 404: return "model_not_found";
    case 413: return "body_too_large";
    case 429: return "queue_full";
    default: return NULL;
    }
}

/* cJSON_Print* returns NULL only when out of memory; callers of these builders get a valid body
 * in any case, so that a server path never sends an empty reply. */
static char *print_free(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return xstrdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
    char *copy = xstrdup(s);
    cJSON_free(s);
    return copy;
}

char *openai_error_json(int status, const char *message, const char *param) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    char *msg = openai_utf8_clean(message, strlen(message));
    cJSON_AddStringToObject(err, "message", msg);
    free(msg);
    cJSON_AddStringToObject(err, "type", error_type(status));
    if (param && param[0]) cJSON_AddStringToObject(err, "param", param);
    else cJSON_AddNullToObject(err, "param");
    const char *code = error_code(status);
    if (code) cJSON_AddStringToObject(err, "code", code);
    else cJSON_AddNullToObject(err, "code");
    return print_free(root);
}

static cJSON *base_object(const openai_meta *m, int chunk) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "object",
                            m->chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)m->created);
    cJSON_AddStringToObject(o, "model", m->model);
    return o;
}

static void add_usage(cJSON *o, const openai_usage *u) {
    cJSON *us = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(us, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(us, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(us, "total_tokens", u->prompt_tokens + u->completion_tokens);
    cJSON *d = cJSON_AddObjectToObject(us, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", u->cached_tokens);
}

static void add_ids(cJSON *o, const char *key, const int *ids, int n) {
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
}

char *openai_response_json(const openai_meta *m, const char *text, size_t len, const char *finish_reason,
                           const openai_usage *u, const int *prompt_ids, int n_prompt, const int *ids, int n_ids) {
    cJSON *o = base_object(m, 0), *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    char *clean = openai_utf8_clean(text, len);
    if (m->chat) {
        cJSON *msg = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", clean);
    } else {
        cJSON_AddStringToObject(c, "text", clean);
    }
    free(clean);
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddStringToObject(c, "finish_reason", finish_reason);
    if (ids) add_ids(c, "token_ids", ids, n_ids);
    if (prompt_ids) add_ids(o, "prompt_token_ids", prompt_ids, n_prompt);
    add_usage(o, u);
    return print_free(o);
}

char *openai_chunk_sse(const openai_meta *m, const char *text, size_t len, int first_chat_delta,
                       const char *finish_reason, const openai_usage *usage) {
    cJSON *o = base_object(m, 1), *choices = cJSON_AddArrayToObject(o, "choices");
    if (usage) {
        add_usage(o, usage);
    } else {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddItemToArray(choices, c);
        cJSON_AddNumberToObject(c, "index", 0);
        char *clean = openai_utf8_clean(text, len);
        if (m->chat) {
            cJSON *d = cJSON_AddObjectToObject(c, "delta");
            if (first_chat_delta) cJSON_AddStringToObject(d, "role", "assistant");
            if (len || first_chat_delta) cJSON_AddStringToObject(d, "content", clean);
        } else {
            cJSON_AddStringToObject(c, "text", clean);
        }
        free(clean);
        cJSON_AddNullToObject(c, "logprobs");
        if (finish_reason) cJSON_AddStringToObject(c, "finish_reason", finish_reason);
        else cJSON_AddNullToObject(c, "finish_reason");
    }
    char *json = print_free(o);
    size_t n = strlen(json);
    char *ev = xmalloc(n + 9);
    memcpy(ev, "data: ", 6);
    memcpy(ev + 6, json, n);
    memcpy(ev + 6 + n, "\n\n", 3);
    free(json);
    return ev;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 when invalid or cut short. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t need;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, min = 0x10000;
    else return 0;
    if (n < need) return 0;
    unsigned cp = c & (0xFF >> (need + 1));
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return need;
}

char *openai_utf8_clean(const char *s, size_t n) {
    char *out = xmalloc(n * 3 + 1), *o = out; /* each bad byte becomes 3 */
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        /* NUL would end the C string cJSON copies: it is replaced too */
        if (k == 0 || p[i] == 0) {
            memcpy(o, "\xEF\xBF\xBD", 3), o += 3, i++;
        } else {
            memcpy(o, p + i, k), o += k, i += k;
        }
    }
    *o = 0;
    return out;
}

size_t openai_utf8_tail(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned c = p[n - back];
        if ((c & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}
