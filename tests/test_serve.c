/* netgpt serve end to end: the sanitizer build started as a child on a loopback port chosen at
 * run time, spoken to over real HTTP. Greedy outputs are checked against ng_forward run here on
 * the same model; concurrent requests (different adapters) against each run alone; every error
 * case of the API; client disconnects; SIGTERM draining. Every child is stopped and reaped. */
#include "test.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"
#include "model/lora.h"
#include "model/model.h"
#include "sample/sampler.h"
#include "serve/body.h"
#include "serve/client.h"
#include "loopback.h"

#define BIN "build/san/netgpt"
#define MODEL TESTDATA("gpt2-tiny-a/llamacpp-f16.gguf")
#define LORA TESTDATA("lora/gpt2-tiny-a")
#define SLOW "build/tmp/serve-slow.gguf"
#define HOST "127.0.0.1"

typedef child_server server;

static server start_server(const char *args) {
    char full[1024];
    snprintf(full, sizeof full, "serve %s", args);
    return child_start(BIN, full, "serve", 2, 30);
}

static int stop_server(server *s) { return child_stop(s, SIGTERM); }

static int post(const server *s, const char *path, const char *body, const char *headers, http_resp *r) {
    return http_request(HOST, s->port, "POST", path, headers, body, r, 60);
}

/* Greedy ids ng_forward gives for prompt text (no BOS: GPT-2), stopping at EOS, with an adapter. */
static int reference_ids(const char *model, const char *adapter, float scale, const char *prompt, int n, int *out) {
    ng_error err;
    ng_model *m = ng_model_load(model, &err);
    if (!m) return -1;
    ng_lora *l = adapter ? ng_lora_load(m, adapter, scale, &err) : NULL;
    int np;
    int *ids = tok_encode(m->tok, prompt, strlen(prompt), &np);
    ng_state *st = ng_state_new(m, 0, np);
    st->lora = l;
    float *logits = xmalloc((size_t)m->hp.n_vocab * sizeof *logits);
    int k = 0, rc = ng_forward(m, st, ids, np, logits, 0, &err);
    while (!rc && k < n) {
        int t = ng_argmax(logits, m->hp.n_vocab);
        if (t == tok_eos(m->tok)) break;
        out[k++] = t;
        rc = ng_forward(m, st, &t, 1, logits, 0, &err);
    }
    free(logits);
    free(ids);
    ng_state_free(st);
    ng_lora_free(l);
    ng_model_free(m);
    return rc ? -1 : k;
}

/* choices[0].token_ids of a response body into out; -1 when absent. */
static int response_ids(const char *body, int *out, int cap) {
    cJSON *j = cJSON_Parse(body);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(c, "token_ids"), *v;
    int n = -1;
    if (cJSON_IsArray(ids)) {
        n = 0;
        cJSON_ArrayForEach(v, ids) if (n < cap) out[n++] = v->valueint;
    }
    cJSON_Delete(j);
    return n;
}

/* The SSE events of a streamed body: their texts concatenated into text (chat delta.content or
 * text), the last finish_reason, the usage chunk's completion_tokens (-1 when none); 1 when the
 * stream ends with data: [DONE] and every event parses. */
static int parse_sse(const char *body, char *text, size_t cap, char *finish, int *usage_tokens) {
    text[0] = finish[0] = 0;
    *usage_tokens = -1;
    int done = 0, ok = 1;
    for (const char *p = body; (p = strstr(p, "data: ")); p += 6) {
        const char *end = strstr(p, "\n\n");
        if (!end) return 0;
        if (!strncmp(p + 6, "[DONE]", 6)) {
            done = 1;
            continue;
        }
        cJSON *j = cJSON_ParseWithLength(p + 6, (size_t)(end - p - 6));
        if (!j) ok = 0;
        const char *t = get_str(j, "choices.0.delta.content");
        if (!t[0]) t = get_str(j, "choices.0.text");
        strncat(text, t, cap - strlen(text) - 1);
        const char *f = get_str(j, "choices.0.finish_reason");
        if (f[0]) snprintf(finish, 32, "%s", f);
        const cJSON *u = get(j, "usage.completion_tokens");
        if (cJSON_IsNumber(u)) *usage_tokens = u->valueint;
        cJSON_Delete(j);
    }
    return ok && done;
}

/* ---- cases ---------------------------------------------------------------------------------- */

static server g_srv; /* the shared server: MODEL with --lora adapters a (scale 1) and b (scale 2) */

static void test_completion_greedy(void) {
    REQUIRE(g_srv.pid, "no server");
    int want[16], got[16];
    int n = reference_ids(MODEL, NULL, 1, "Hello world", 12, want);
    REQUIRE(n > 0, "reference failed");
    http_resp r;
    REQUIRE(post(&g_srv, "/v1/completions",
                 "{\"prompt\":\"Hello world\",\"max_tokens\":12,\"temperature\":0,\"return_token_ids\":true}", NULL,
                 &r) == NG_OK && r.status == 200,
            "status %d: %s", r.status, r.body ? r.body : "");
    int k = response_ids(r.body, got, 16);
    CHECK(k == n && !memcmp(got, want, (size_t)n * sizeof *got), "server ids differ from ng_forward (%d vs %d)", k, n);
    cJSON *j = cJSON_Parse(r.body);
    CHECK(!strcmp(get_str(j, "object"), "text_completion"), "object");
    CHECK(!strcmp(get_str(j, "choices.0.finish_reason"), n == 12 ? "length" : "stop"), "finish_reason");
    CHECK(get(j, "usage.prompt_tokens") && get(j, "usage.prompt_tokens")->valueint == 10, "prompt_tokens");
    CHECK(get(j, "usage.completion_tokens") && get(j, "usage.completion_tokens")->valueint == n, "completion_tokens");
    cJSON_Delete(j);
    http_resp_free(&r);
}

static void test_stream_matches_whole(void) {
    REQUIRE(g_srv.pid, "no server");
    const char *eps[2] = {"/v1/completions", "/v1/chat/completions"};
    const char *bodies[2] = {"{\"prompt\":\"The cat\",\"max_tokens\":20,\"temperature\":0%s}",
                             "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]}],"
                             "\"max_tokens\":20,\"temperature\":0%s}"};
    for (int e = 0; e < 2; e++) {
        char b1[512], b2[512];
        snprintf(b1, sizeof b1, bodies[e], "");
        snprintf(b2, sizeof b2, bodies[e], ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
        http_resp w, s;
        REQUIRE(post(&g_srv, eps[e], b1, NULL, &w) == NG_OK && w.status == 200, "%s: %d", eps[e], w.status);
        REQUIRE(post(&g_srv, eps[e], b2, NULL, &s) == NG_OK && s.status == 200, "%s stream: %d", eps[e], s.status);
        CHECK(strstr(s.head, "text/event-stream") != NULL, "content type");
        cJSON *j = cJSON_Parse(w.body);
        const char *whole = e ? get_str(j, "choices.0.message.content") : get_str(j, "choices.0.text");
        char text[4096], finish[32];
        int usage;
        CHECK(parse_sse(s.body, text, sizeof text, finish, &usage), "%s: malformed stream: %s", eps[e], s.body);
        CHECK(!strcmp(text, whole), "%s: stream '%s' != whole '%s'", eps[e], text, whole);
        CHECK(!strcmp(finish, get_str(j, "choices.0.finish_reason")), "finish %s", finish);
        CHECK(usage == get(j, "usage.completion_tokens")->valueint, "usage chunk %d", usage);
        if (e) {
            CHECK(!strcmp(get_str(j, "object"), "chat.completion"), "object");
            CHECK(strstr(s.body, "\"object\":\"chat.completion.chunk\"") && strstr(s.body, "\"role\":\"assistant\""),
                  "chunk shape");
        }
        cJSON_Delete(j);
        http_resp_free(&w);
        http_resp_free(&s);
    }
}

typedef struct {
    const char *model;
    const char *prompt;
    int ids[64], n, status;
} conc_job;

static void *conc_run(void *arg) {
    conc_job *j = arg;
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":24,\"temperature\":0,\"return_token_ids\":true,"
             "\"stream\":false}",
             j->model, j->prompt);
    http_resp r;
    j->n = -1;
    if (post(&g_srv, "/v1/completions", body, NULL, &r) == NG_OK && (j->status = r.status) == 200)
        j->n = response_ids(r.body, j->ids, 64);
    http_resp_free(&r);
    return NULL;
}

/* 8 requests at once over the base model and two adapters equal each run alone and ng_forward. */
static void test_concurrent_adapters(void) {
    REQUIRE(g_srv.pid, "no server");
    const char *models[3] = {"gpt2-tiny-a", "a", "b"};
    const float scales[3] = {0, 1, 2};
    const char *prompts[4] = {"Hello world", "The cat sat", "a b c d e f g", "Once upon a time"};
    conc_job jobs[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (conc_job){.model = models[i % 3], .prompt = prompts[i % 4]};
        pthread_create(&th[i], NULL, conc_run, &jobs[i]);
    }
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    int differ = 0;
    for (int i = 0; i < 8; i++) {
        int want[64];
        int n = reference_ids(MODEL, i % 3 ? LORA : NULL, scales[i % 3], jobs[i].prompt, 24, want);
        CHECK(jobs[i].n == n && n > 0 && !memcmp(jobs[i].ids, want, (size_t)n * sizeof(int)),
              "request %d (%s, '%s'): status %d, %d ids vs %d alone", i, jobs[i].model, jobs[i].prompt, jobs[i].status,
              jobs[i].n, n);
        if (i % 3 && memcmp(jobs[i].ids, jobs[i - i % 3].ids, 24 * sizeof(int))) differ = 1;
    }
    CHECK(differ, "the adapters changed no output: they were not applied");
}

static void expect_error(const server *s, const char *method, const char *path, const char *body,
                         const char *headers, int status, const char *needle) {
    http_resp r;
    int rc = http_request(HOST, s->port, method, path, headers, body, &r, 30);
    CHECK(rc == NG_OK && r.status == status, "%s %s %.60s: status %d, want %d: %s", method, path, body ? body : "",
          r.status, status, r.body ? r.body : "");
    if (rc == NG_OK && status >= 400) {
        cJSON *j = cJSON_Parse(r.body);
        CHECK(cJSON_IsString(get(j, "error.message")) && cJSON_IsString(get(j, "error.type")),
              "not an OpenAI error: %s", r.body);
        if (needle) CHECK(strstr(get_str(j, "error.message"), needle), "'%s' not in '%s'", needle, r.body);
        cJSON_Delete(j);
    }
    http_resp_free(&r);
}

static void test_errors(void) {
    REQUIRE(g_srv.pid, "no server");
    const char *C = "/v1/completions", *CH = "/v1/chat/completions";
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"hi\",", NULL, 400, "not valid JSON");
    expect_error(&g_srv, "POST", C, "[1,2]", NULL, 400, "object");
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"hi\",\"max_tokens\":\"many\"}", NULL, 400, "max_tokens");
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"hi\",\"max_tokens\":2.5}", NULL, 400, "max_tokens");
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"hi\",\"temperature\":\"hot\"}", NULL, 400, "temperature");
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"hi\",\"n\":2}", NULL, 400, "'n'");
    expect_error(&g_srv, "POST", C, "{\"prompt\":[1,99999]}", NULL, 400, "vocabulary");
    expect_error(&g_srv, "POST", C, "{\"max_tokens\":3}", NULL, 400, "prompt");
    expect_error(&g_srv, "POST", CH, "{\"messages\":[]}", NULL, 400, "messages");
    expect_error(&g_srv, "POST", CH, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", NULL, 400, "role");
    expect_error(&g_srv, "POST", CH, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", NULL, 400, "content");
    /* unknown fields are ignored */
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"hi\",\"max_tokens\":2,\"frobnicate\":{\"x\":[1]}}", NULL, 200, NULL);
    expect_error(&g_srv, "POST", C, "{\"model\":\"gpt-17\",\"prompt\":\"hi\"}", NULL, 404, "gpt-17");
    /* the context is 96 tokens: 10 + 90 is over; never truncated silently */
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"Hello world\",\"max_tokens\":90}", NULL, 400, "10 in the prompt, 90");
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"Hello world\",\"max_tokens\":86,\"return_token_ids\":true}", NULL,
                 200, NULL);
    expect_error(&g_srv, "GET", "/v1/nothing", NULL, NULL, 404, NULL);
    expect_error(&g_srv, "GET", C, NULL, NULL, 405, NULL);
    expect_error(&g_srv, "DELETE", "/v1/adapters/never-loaded", NULL, NULL, 404, "never-loaded");
    /* over the 1 MiB default body limit */
    size_t big = (1 << 20) + 100;
    char *body = xmalloc(big + 1);
    memset(body, ' ', big);
    body[big] = 0;
    memcpy(body, "{\"prompt\":\"", 11);
    body[big - 2] = '"', body[big - 1] = '}';
    expect_error(&g_srv, "POST", C, body, NULL, 413, "limit");
    free(body);
    /* and the server is still well */
    expect_error(&g_srv, "POST", C, "{\"prompt\":\"hi\",\"max_tokens\":2}", NULL, 200, NULL);
}

static void test_models_and_adapters(void) {
    REQUIRE(g_srv.pid, "no server");
    http_resp r;
    REQUIRE(http_request(HOST, g_srv.port, "GET", "/v1/models", NULL, NULL, &r, 10) == NG_OK && r.status == 200, "models");
    CHECK(strstr(r.body, "\"id\":\"gpt2-tiny-a\"") && strstr(r.body, "\"id\":\"a\"") && strstr(r.body, "\"id\":\"b\""),
          "models: %s", r.body);
    http_resp_free(&r);
    expect_error(&g_srv, "POST", "/v1/adapters", "{\"name\":\"c\",\"path\":\"" LORA "\",\"scale\":0.5}", NULL, 200, NULL);
    expect_error(&g_srv, "POST", "/v1/adapters", "{\"name\":\"c\",\"path\":\"" LORA "\"}", NULL, 409, "already");
    expect_error(&g_srv, "POST", "/v1/adapters", "{\"name\":\"d\",\"path\":\"tests/testdata/nothing-here\"}", NULL, 400,
                 NULL);
    expect_error(&g_srv, "POST", "/v1/adapters", "{\"name\":\"bad name!\",\"path\":\"x\"}", NULL, 400, NULL);
    int want[24], got[24];
    int n = reference_ids(MODEL, LORA, 0.5f, "Hello", 8, want);
    REQUIRE(post(&g_srv, "/v1/completions",
                 "{\"model\":\"c\",\"prompt\":\"Hello\",\"max_tokens\":8,\"temperature\":0,\"return_token_ids\":true}",
                 NULL, &r) == NG_OK && r.status == 200, "adapter c: %d", r.status);
    int k = response_ids(r.body, got, 24);
    CHECK(k == n && !memcmp(got, want, (size_t)n * sizeof *got), "adapter c loaded at run time: wrong ids");
    http_resp_free(&r);
    expect_error(&g_srv, "DELETE", "/v1/adapters/c", NULL, NULL, 200, NULL);
    expect_error(&g_srv, "POST", "/v1/completions", "{\"model\":\"c\",\"prompt\":\"Hello\"}", NULL, 404, NULL);
}

static void test_prefix_cache(void) {
    REQUIRE(g_srv.pid, "no server");
    const char *body = "{\"prompt\":\"You are a helpful assistant of the network. %s\",\"max_tokens\":6,"
                       "\"temperature\":0,\"return_token_ids\":true}";
    char b[512];
    int ids[2][8], n[2], cached = -1;
    for (int i = 0; i < 2; i++) {
        snprintf(b, sizeof b, body, i ? "Where?" : "Who?");
        http_resp r;
        REQUIRE(post(&g_srv, "/v1/completions", b, NULL, &r) == NG_OK && r.status == 200, "status %d", r.status);
        n[i] = response_ids(r.body, ids[i], 8);
        cJSON *j = cJSON_Parse(r.body);
        if (i) cached = get(j, "usage.prompt_tokens_details.cached_tokens")->valueint;
        cJSON_Delete(j);
        http_resp_free(&r);
    }
    CHECK(cached >= 10, "the shared system prompt was not reused (%d cached tokens)", cached);
    /* the same request again, served from the cache, gives the same tokens */
    snprintf(b, sizeof b, body, "Who?");
    http_resp r;
    REQUIRE(post(&g_srv, "/v1/completions", b, NULL, &r) == NG_OK && r.status == 200, "status %d", r.status);
    int again[8], k = response_ids(r.body, again, 8);
    CHECK(k == n[0] && !memcmp(again, ids[0], (size_t)k * sizeof(int)), "cached prefix changed the output");
    http_resp_free(&r);
}

static void test_json_mode(void) {
    REQUIRE(g_srv.pid, "no server");
    const char *bodies[2] = {
        "{\"prompt\":\"JSON:\",\"max_tokens\":60,\"temperature\":0,\"response_format\":{\"type\":\"json_object\"}}",
        "{\"prompt\":\"JSON:\",\"max_tokens\":60,\"temperature\":0.7,\"seed\":3,\"response_format\":{\"type\":"
        "\"json_schema\",\"json_schema\":{\"name\":\"t\",\"schema\":{\"type\":\"object\",\"properties\":{\"ok\":{"
        "\"type\":\"boolean\"}},\"required\":[\"ok\"],\"additionalProperties\":false}}}}"};
    for (int i = 0; i < 2; i++) {
        http_resp r;
        REQUIRE(post(&g_srv, "/v1/completions", bodies[i], NULL, &r) == NG_OK && r.status == 200, "%d: %s", r.status,
                r.body ? r.body : "");
        cJSON *j = cJSON_Parse(r.body);
        const char *text = get_str(j, "choices.0.text");
        const char *fin = get_str(j, "choices.0.finish_reason");
        const char *p = text;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++; /* JSON white space */
        CHECK(*p == '{', "json mode %d: output does not start an object: '%s'", i, text);
        if (!strcmp(fin, "stop")) {
            cJSON *doc = cJSON_Parse(text);
            CHECK(cJSON_IsObject(doc), "json mode %d: '%s' does not parse", i, text);
            if (i == 1) CHECK(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(doc, "ok")) && cJSON_GetArraySize(doc) == 1,
                              "schema not followed: '%s'", text);
            cJSON_Delete(doc);
        }
        cJSON_Delete(j);
        http_resp_free(&r);
    }
    expect_error(&g_srv, "POST", "/v1/completions",
                 "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{"
                 "\"type\":\"object\",\"patternProperties\":{}}}}}",
                 NULL, 400, NULL);
}

static void test_metrics_health(void) {
    REQUIRE(g_srv.pid, "no server");
    http_resp r;
    REQUIRE(http_request(HOST, g_srv.port, "GET", "/metrics", NULL, NULL, &r, 10) == NG_OK && r.status == 200, "metrics");
    const char *names[] = {"netgpt_requests_total{status=\"200\"}", "netgpt_requests_total{status=\"400\"}",
                           "netgpt_prompt_tokens_total", "netgpt_generated_tokens_total",
                           "netgpt_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
                           "netgpt_time_per_output_token_seconds_count", "netgpt_queue_depth 0", "netgpt_slots_busy",
                           "netgpt_adapters_loaded 2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) CHECK(strstr(r.body, names[i]), "no %s", names[i]);
    http_resp_free(&r);
}

static void test_auth(void) {
    server s = start_server("-m " MODEL " --api-key s3cret");
    REQUIRE(s.pid, "server did not start");
    const char *b = "{\"prompt\":\"hi\",\"max_tokens\":2}";
    expect_error(&s, "POST", "/v1/completions", b, NULL, 401, "API key");
    expect_error(&s, "POST", "/v1/completions", b, "Authorization: Bearer s3creT\r\n", 401, NULL);
    expect_error(&s, "POST", "/v1/completions", b, "Authorization: Bearer s3cret-and-more\r\n", 401, NULL);
    expect_error(&s, "GET", "/v1/models", NULL, "Authorization: Basic s3cret\r\n", 401, NULL);
    expect_error(&s, "POST", "/v1/completions", b, "Authorization: Bearer s3cret\r\n", 200, NULL);
    expect_error(&s, "GET", "/health", NULL, NULL, 200, NULL);
    CHECK(stop_server(&s) == 0, "server did not exit cleanly");
}

/* A slow model (1024 context, bigger layers) so that a request can be caught while running. */
static int make_slow_model(void) {
    static int made;
    if (made) return 0;
    ng_error err;
    ng_model *t = ng_model_load(MODEL, &err);
    if (!t) return -1;
    ng_hparams hp = {NG_ARCH_GPT2, 320, 1024, 256, 4, 4, 4, 1024, 1e-5f, 10000, 1};
    ng_model *m = ng_model_random(&hp, NG_F32, 7);
    m->tok = t->tok;
    int rc = ng_model_save_gguf(m, SLOW, NG_F32, &err);
    m->tok = NULL;
    ng_model_free(m);
    ng_model_free(t);
    made = rc == 0;
    return rc;
}

static long metric(const server *s, const char *name) {
    http_resp r;
    long v = -1;
    if (http_request(HOST, s->port, "GET", "/metrics", NULL, NULL, &r, 10) == NG_OK) {
        char key[128];
        snprintf(key, sizeof key, "\n%s ", name);
        const char *p = r.body ? strstr(r.body, key) : NULL;
        if (p) v = atol(p + strlen(key));
    }
    http_resp_free(&r);
    return v;
}

/* Reads a stream until its first data event; 1 when it came. */
static int read_first_event(int fd) {
    char buf[4096];
    size_t len = 0;
    double end = ng_time() + 30;
    while (len < sizeof buf - 1) {
        long k = http_read_raw(fd, buf + len, sizeof buf - 1 - len, end);
        if (k <= 0) return 0;
        len += (size_t)k;
        buf[len] = 0;
        if (strstr(buf, "data: ")) return 1;
    }
    return 1;
}

/* Disconnects free the slot at once; with one slot and no queue a second request gets 429. */
static void test_disconnect_and_queue(void) {
    REQUIRE(make_slow_model() == 0, "cannot write " SLOW);
    server s = start_server("-m " SLOW " --parallel 1 --max-queue 0");
    REQUIRE(s.pid, "server did not start");
    const char *b = "{\"prompt\":\"Hello\",\"max_tokens\":1000,\"temperature\":0,\"stream\":true}";
    int fd = http_send(HOST, s.port, "POST", "/v1/completions", NULL, b, strlen(b));
    CHECK(fd >= 0 && read_first_event(fd), "no first event");
    http_resp r;
    CHECK(post(&s, "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2}", NULL, &r) == NG_OK && r.status == 429 &&
              strstr(r.head, "Retry-After"),
          "queue full: status %d", r.status);
    http_resp_free(&r);
    CHECK(metric(&s, "netgpt_slots_busy") == 1, "the stream's slot is not busy");
    close(fd);
    double t0 = ng_time();
    long busy = 1;
    while ((busy = metric(&s, "netgpt_slots_busy")) != 0 && ng_time() - t0 < 5) usleep(20000);
    CHECK(busy == 0, "the slot was not freed after the client left");
    long gen = metric(&s, "netgpt_generated_tokens_total");
    CHECK(gen >= 0 && gen < 1000, "the cancelled request ran to the end (%ld tokens)", gen);
    /* a non-streaming client that leaves frees its slot too */
    const char *nb = "{\"prompt\":\"Hello\",\"max_tokens\":1000,\"temperature\":0}";
    fd = http_send(HOST, s.port, "POST", "/v1/completions", NULL, nb, strlen(nb));
    t0 = ng_time();
    while (metric(&s, "netgpt_slots_busy") != 1 && ng_time() - t0 < 5) usleep(5000);
    close(fd);
    while ((busy = metric(&s, "netgpt_slots_busy")) != 0 && ng_time() - t0 < 5) usleep(20000);
    CHECK(busy == 0, "the non-streaming request's slot was not freed after the client left");
    expect_error(&s, "POST", "/v1/completions", "{\"prompt\":\"hi\",\"max_tokens\":2}", NULL, 200, NULL);
    CHECK(stop_server(&s) == 0, "server did not exit cleanly");
}

/* SIGTERM while a stream runs: the stream finishes with [DONE], then the server exits 0. */
static void test_sigterm_drains(void) {
    REQUIRE(make_slow_model() == 0, "cannot write " SLOW);
    server s = start_server("-m " SLOW);
    REQUIRE(s.pid, "server did not start");
    const char *b = "{\"prompt\":\"Hello\",\"max_tokens\":60,\"temperature\":0,\"stream\":true}";
    int fd = http_send(HOST, s.port, "POST", "/v1/completions", NULL, b, strlen(b));
    REQUIRE(fd >= 0, "connect");
    double t0 = ng_time();
    while (metric(&s, "netgpt_slots_busy") != 1 && ng_time() - t0 < 10) usleep(2000);
    kill(s.pid, SIGTERM);
    http_resp r;
    CHECK(http_read_all(fd, &r, ng_time() + 60) == NG_OK && r.status == 200, "stream status %d", r.status);
    char text[8192], finish[32];
    int usage;
    CHECK(r.body && parse_sse(r.body, text, sizeof text, finish, &usage) && !strcmp(finish, "length"),
          "the stream was cut: %.200s", r.body ? r.body : "");
    http_resp_free(&r);
    CHECK(stop_server(&s) == 0, "server did not exit 0 after draining");
}

/* The address the servers listen on: IPv4 and IPv6 literals (the port in network order, IPv6
 * flagged for libmicrohttpd), and a host name refused with a message naming it. */
static void test_listen_addr(void) {
    struct sockaddr_storage ss;
    unsigned flags = 0;
    ng_error err = {0};
    CHECK(http_listen_addr("127.0.0.1", 8080, &ss, &flags, &err) == NG_OK, "127.0.0.1: %s", err.msg);
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;
    CHECK(a4->sin_family == AF_INET && ntohs(a4->sin_port) == 8080 && ntohl(a4->sin_addr.s_addr) == 0x7f000001 &&
              !(flags & MHD_USE_IPv6),
          "127.0.0.1 read wrong");
    CHECK(http_listen_addr("::1", 9, &ss, &flags, &err) == NG_OK, "::1: %s", err.msg);
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
    CHECK(a6->sin6_family == AF_INET6 && ntohs(a6->sin6_port) == 9 && IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr) &&
              (flags & MHD_USE_IPv6),
          "::1 read wrong");
    CHECK(http_listen_addr("localhost", 80, &ss, &flags, &err) == NG_ERR && strstr(err.msg, "'localhost'") &&
              strstr(err.msg, "--host"),
          "a host name accepted: %s", err.msg);
}

int main(void) {
    RUN(test_listen_addr);
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    signal(SIGPIPE, SIG_IGN);
    g_srv = start_server("-m " MODEL " --lora a=" LORA " --lora b=" LORA ":2 --parallel 4");
    RUN(test_completion_greedy);
    RUN(test_stream_matches_whole);
    RUN(test_concurrent_adapters);
    RUN(test_errors);
    RUN(test_models_and_adapters);
    RUN(test_prefix_cache);
    RUN(test_json_mode);
    RUN(test_metrics_health);
    int rc = stop_server(&g_srv);
    printf("%s shared_server_exit: status %d\n", rc == 0 ? "PASS" : "FAIL", rc);
    if (rc) t_any_failed = 1;
    RUN(test_auth);
    RUN(test_disconnect_and_queue);
    RUN(test_sigterm_drains);
    TEST_EXIT();
}
