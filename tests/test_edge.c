/* netgpt edge end to end, over loopback with real processes: the sanitizer build's `netgpt serve`
 * as the cloud and `netgpt edge` in front of it, plus a fake cloud (a thread here) that records
 * every byte the edge sends up. Personalized requests in the three modes with their telemetry;
 * no private byte in the uplink; a cloud stream cut (by the fake cloud, and by killing the real
 * cloud mid-answer) finished by the edge; a failing cloud and a dead port -> fallback and the
 * circuit breaker; bad requests get serve's error bodies. Every child is stopped and reaped. */
#include "test.h"
#include "loopback.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "edge/store.h"
#include "model/model.h"
#include "serve/client.h"

#define BIN "build/san/netgpt"
#define HOST "127.0.0.1"
#define TMP "build/tmp/"
#define MODEL TMP "edge-test-gpt2.gguf"
#define DB TMP "edge-test.db"
#define USER "user-7731"
/* near the centre of Tokyo in the place fixture: POIs within 3 km */
#define LAT "35.69012"
#define LON "139.70034"

/* ---- fixtures: a model with the real GPT-2 vocabulary, the context store ---------------------- */

static int make_model(void) {
    ng_hparams hp = {.arch = NG_ARCH_GPT2, .n_vocab = 50257, .n_ctx = 1024, .n_embd = 32, .n_head = 2,
                     .n_head_kv = 2, .n_layer = 1, .n_ff = 64, .norm_eps = 1e-5f};
    ng_model *m = ng_model_random(&hp, NG_F32, 11);
    ng_error err;
    m->tok = tok_load(TESTDATA("gpt2"), &err);
    int rc = m->tok ? ng_model_save_gguf(m, MODEL, NG_F16, &err) : NG_ERR;
    if (rc) fprintf(stderr, "model: %s\n", err.msg);
    ng_model_free(m);
    return rc;
}

static int make_db(void) {
    remove(DB);
    ng_error err;
    edge_store *st = store_open(DB, 1, &err);
    if (!st) return fprintf(stderr, "db: %s\n", err.msg), NG_ERR;
    store_user u = {.id = USER, .language = "en", .preferences = "vegetarian, travels on foot"};
    store_query q = {.lat = atof(LAT), .lon = atof(LON), .radius_m = 3000, .kind = STORE_POI, .category = "fast_food",
                     .limit = 1};
    store_place p;
    int n = 0;
    int rc = store_import_places(st, TESTDATA("places/cities.tsv"), TESTDATA("places/brands.tsv"), 1, 0, &err);
    if (!rc) rc = store_add_user(st, &u, &err);
    if (!rc) rc = store_nearest(st, &q, &p, &n, &err);
    if (!rc && n) rc = store_add_visit(st, USER, p.id, (int64_t)time(NULL) - 2 * 86400, &err);
    if (!rc) rc = store_add_cell(st, "JP-TYO-17", atof(LAT), atof(LON), 1500, &err);
    if (rc) fprintf(stderr, "db: %s\n", err.msg);
    store_close(st);
    return rc;
}

/* ---- child processes ---------------------------------------------------------------------------- */

typedef child_server proc;

/* `netgpt ARGS` on a free loopback port, answering /health. */
static proc start(const char *args) { return child_start(BIN, args, "edge", 1, 60); }

static int stop(proc *s, int sig) { return child_stop(s, sig); }

/* ---- the fake cloud: records every byte it receives ----------------------------------------- */

typedef struct {
    int fd, port;
    const char *mode; /* ok | cut | 500 */
    atomic_int stop, conns;
    pthread_mutex_t mu;
    char *rec; /* everything received, all connections */
    size_t n;
    pthread_t th;
} fake_cloud;

static const char *CHUNKS[] = {
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\", edge\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
    "data: [DONE]\n\n"};

static void fake_answer(fake_cloud *f, int c) {
    char req[65536];
    size_t n = 0;
    long want = -1;
    double end = ng_time() + 10;
    while (n < sizeof req - 1 && ng_time() < end) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t got = read(c, req + n, sizeof req - 1 - n);
        if (got <= 0) break;
        n += (size_t)got;
        req[n] = 0;
        char *hend = strstr(req, "\r\n\r\n");
        if (hend && want < 0) {
            char *cl = strcasestr(req, "Content-Length:");
            want = (long)(hend + 4 - req) + (cl ? atol(cl + 15) : 0);
        }
        if (want >= 0 && (long)n >= want) break;
    }
    pthread_mutex_lock(&f->mu);
    f->rec = xrealloc(f->rec, f->n + n + 1);
    memcpy(f->rec + f->n, req, n);
    f->n += n;
    f->rec[f->n] = 0;
    pthread_mutex_unlock(&f->mu);
    char out[4096] = "";
    if (!strcmp(f->mode, "500")) {
        snprintf(out, sizeof out, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"error\":\"overload\"}");
    } else {
        strcat(out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
        int last = !strcmp(f->mode, "cut") ? 3 : 6;
        for (int i = 0; i < last; i++) strcat(out, CHUNKS[i]);
    }
    if (write(c, out, strlen(out)) < 0) {}
}

static void *fake_loop(void *arg) {
    fake_cloud *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {f->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept(f->fd, NULL, NULL);
        if (c < 0) continue;
        atomic_fetch_add(&f->conns, 1);
        fake_answer(f, c);
        close(c);
    }
    return NULL;
}

static void fake_start(fake_cloud *f, const char *mode) {
    memset(f, 0, sizeof *f);
    f->mode = mode;
    pthread_mutex_init(&f->mu, NULL);
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(f->fd, (struct sockaddr *)&a, sizeof a) || getsockname(f->fd, (struct sockaddr *)&a, &len) ||
        listen(f->fd, 16))
        perror("fake cloud");
    f->port = ntohs(a.sin_port);
    pthread_create(&f->th, NULL, fake_loop, f);
}

static void fake_stop(fake_cloud *f) {
    atomic_store(&f->stop, 1);
    pthread_join(f->th, NULL);
    close(f->fd);
    free(f->rec);
    pthread_mutex_destroy(&f->mu);
}

/* ---- requests ---------------------------------------------------------------------------------- */

static double get_num(const cJSON *j, const char *path) {
    const cJSON *v = get(j, path);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int post(const proc *s, const char *body, const char *headers, http_resp *r) {
    return http_request(HOST, s->port, "POST", "/v1/chat/completions", headers, body, r, 60);
}

/* The SSE events of a streamed body: the answer text, the first event's and the finishing
 * event's "netgpt" objects (copies), finish_reason; 1 when every event parses and [DONE] ends it. */
typedef struct {
    char text[8192], finish[32];
    cJSON *first, *last;
} sse;

static int parse_sse(const char *body, sse *out) {
    memset(out, 0, sizeof *out);
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
        strncat(out->text, get_str(j, "choices.0.delta.content"), sizeof out->text - strlen(out->text) - 1);
        const char *f = get_str(j, "choices.0.finish_reason");
        const cJSON *ext = get(j, "netgpt");
        if (ext && !out->first) out->first = cJSON_Duplicate(ext, 1);
        if (f[0]) {
            snprintf(out->finish, sizeof out->finish, "%s", f);
            if (ext) out->last = cJSON_Duplicate(ext, 1);
        }
        cJSON_Delete(j);
    }
    return ok && done;
}

static void sse_free(sse *s) {
    cJSON_Delete(s->first);
    cJSON_Delete(s->last);
}

static char body_buf[8192];

/* A chat body with one user message and a "netgpt" object. */
static const char *chat_body(const char *content, const char *netgpt, int stream, int max_tokens) {
    snprintf(body_buf, sizeof body_buf,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":%d,\"stream\":%s,"
             "\"temperature\":0%s%s}",
             content, max_tokens, stream ? "true" : "false", netgpt ? ",\"netgpt\":" : "", netgpt ? netgpt : "");
    return body_buf;
}

static proc g_cloud, g_edge;

/* ---- cases ------------------------------------------------------------------------------------ */

/* A personalized request through both tiers, in each mode, whole and streamed. */
static void test_personalized_modes(void) {
    REQUIRE(g_cloud.pid && g_edge.pid, "no servers");
    const char *who = "{\"user\":\"" USER "\",\"lat\":" LAT ",\"lon\":" LON "}";
    http_resp r;
    REQUIRE(post(&g_edge, chat_body("find me a coffee", who, 0, 8), NULL, &r) == NG_OK && r.status == 200,
            "status %d: %s", r.status, r.body);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *x = get(j, "netgpt");
    const char *comp = get_str(x, "comprehensive_prompt");
    CHECK(!strcmp(get_str(x, "mode"), "edge-cloud") && cJSON_IsFalse(get(x, "fallback")), "mode %s fallback %s",
          get_str(x, "mode"), get_str(x, "fallback_reason"));
    CHECK(strstr(comp, "find me a coffee") && strstr(comp, "Tokyo, Japan") && strstr(comp, "cafe") &&
              strstr(comp, "vegetarian"),
          "comprehensive prompt '%s'", comp);
    CHECK(!strcmp(get_str(x, "place"), "Tokyo, Japan") && !strcmp(get_str(x, "cell"), "JP-TYO-17"), "place %s cell %s",
          get_str(x, "place"), get_str(x, "cell"));
    double up_edge = get_num(x, "telemetry.uplink_bytes"), ttft = get_num(x, "telemetry.cloud_ttft_ms");
    CHECK(up_edge > 200 && get_num(x, "telemetry.downlink_bytes") > 100, "bytes up %g down %g", up_edge,
          get_num(x, "telemetry.downlink_bytes"));
    CHECK(ttft > 0 && ttft <= get_num(x, "telemetry.total_ms") && get_num(x, "telemetry.edge_completion_ms") >= 0,
          "ttft %g total %g", ttft, get_num(x, "telemetry.total_ms"));
    CHECK(get_num(x, "telemetry.cloud_completion_tokens") == get_num(j, "usage.completion_tokens") &&
              get_num(j, "usage.completion_tokens") > 0,
          "tokens");
    CHECK(get_str(j, "choices.0.message.content")[0] && !strcmp(get_str(j, "object"), "chat.completion"), "answer");
    CHECK(strcasestr(r.head, "X-Netgpt-Mode: edge-cloud") && strcasestr(r.head, "X-Netgpt-Uplink-Bytes: ") &&
              strcasestr(r.head, "X-Netgpt-Comprehensive-Prompt: find%20me%20a%20coffee"),
          "headers:\n%s", r.head);
    cJSON_Delete(j);
    http_resp_free(&r);

    /* cloud-only: the concise prompt goes up as it is, smaller */
    const char *who_c = "{\"user\":\"" USER "\",\"lat\":" LAT ",\"lon\":" LON ",\"mode\":\"cloud-only\"}";
    REQUIRE(post(&g_edge, chat_body("find me a coffee", who_c, 0, 8), NULL, &r) == NG_OK && r.status == 200, "%s",
            r.body);
    j = cJSON_Parse(r.body);
    x = get(j, "netgpt");
    CHECK(!strcmp(get_str(x, "mode"), "cloud-only") && !strcmp(get_str(x, "comprehensive_prompt"), "find me a coffee") &&
              !strcmp(get_str(x, "completion"), "none"),
          "cloud-only: %s", r.body);
    double up_cloud = get_num(x, "telemetry.uplink_bytes");
    CHECK(up_cloud > 0 && up_cloud < up_edge && get_num(x, "telemetry.cloud_ttft_ms") > 0, "uplink %g vs %g", up_cloud,
          up_edge);
    fprintf(stderr, "uplink bytes: edge-cloud %.0f, cloud-only %.0f\n", up_edge, up_cloud);
    cJSON_Delete(j);
    http_resp_free(&r);

    /* edge-only, by header: nothing goes up */
    REQUIRE(post(&g_edge, chat_body("find me a coffee", "{\"user\":\"" USER "\"}", 0, 6),
                 "X-Netgpt-Mode: edge-only\r\nX-Netgpt-Lat: " LAT "\r\nX-Netgpt-Lon: " LON "\r\n", &r) == NG_OK &&
                r.status == 200,
            "%s", r.body);
    j = cJSON_Parse(r.body);
    x = get(j, "netgpt");
    CHECK(!strcmp(get_str(x, "mode"), "edge-only") && cJSON_IsFalse(get(x, "fallback")) &&
              get_num(x, "telemetry.uplink_bytes") == 0 && cJSON_IsNull(get(x, "telemetry.cloud_ttft_ms")) &&
              get_num(x, "telemetry.edge_answer_tokens") > 0 && strstr(get_str(x, "comprehensive_prompt"), "Tokyo"),
          "edge-only: %s", r.body);
    cJSON_Delete(j);
    http_resp_free(&r);

    /* streamed: the first event has the comprehensive prompt, the last the telemetry */
    REQUIRE(post(&g_edge, chat_body("find me a coffee", who, 1, 8), NULL, &r) == NG_OK && r.status == 200, "%s", r.body);
    sse s;
    CHECK(parse_sse(r.body, &s), "bad stream:\n%s", r.body);
    CHECK(s.first && strstr(get_str(s.first, "comprehensive_prompt"), "Tokyo, Japan"), "first event");
    CHECK(s.last && !strcmp(get_str(s.last, "mode"), "edge-cloud") && get_num(s.last, "telemetry.cloud_ttft_ms") > 0 &&
              get_num(s.last, "telemetry.uplink_bytes") > 200,
          "last event");
    CHECK(s.text[0] && s.finish[0], "text '%s' finish '%s'", s.text, s.finish);
    CHECK(strcasestr(r.head, "text/event-stream") && strcasestr(r.head, "X-Netgpt-Place: Tokyo,%20Japan"), "%s", r.head);
    sse_free(&s);
    http_resp_free(&r);

    /* the web UI is the committed page, byte for byte */
    size_t len;
    ng_error e;
    char *page = ng_read_file("src/edge/webui.html", &len, &e);
    REQUIRE(http_request(HOST, g_edge.port, "GET", "/", NULL, NULL, &r, 10) == NG_OK && r.status == 200, "GET /");
    CHECK(page && r.body_len == len && !memcmp(r.body, page, len), "GET / is not src/edge/webui.html (run tools/webui_h.sh)");
    free(page);
    http_resp_free(&r);
}

/* Every byte the edge sends up, in every mode that sends, holds no private datum. */
static void test_uplink_privacy(void) {
    fake_cloud f;
    fake_start(&f, "ok");
    char args[512];
    snprintf(args, sizeof args, "edge --cloud http://" HOST ":%d --cloud-key k3y -m " MODEL " --db " DB, f.port);
    proc edge = start(args);
    REQUIRE(edge.pid, "edge did not start");
    const char *prompt = "Hi, Alice Martin here (alice.martin@example.com, +33 6 12 34 56 78). I am at " LAT ", " LON
                         ". coffee?";
    char body[4096];
    const char *modes[] = {"edge-cloud", "cloud-only"};
    int asked = 0;
    for (int m = 0; m < 2; m++)
        for (int stream = 0; stream < 2; stream++) {
            snprintf(body, sizeof body,
                     "{\"messages\":[{\"role\":\"system\",\"content\":\"The user is Alice Martin, reach her at "
                     "alice.martin@example.com or 0612345678.\"},{\"role\":\"user\",\"content\":\"%s\"}],"
                     "\"stream\":%s,\"max_tokens\":4,\"netgpt\":{\"user\":\"" USER "\",\"lat\":" LAT ",\"lon\":" LON
                     ",\"name\":\"Alice Martin\",\"mode\":\"%s\"}}",
                     prompt, stream ? "true" : "false", modes[m]);
            http_resp r;
            CHECK(post(&edge, body, NULL, &r) == NG_OK && r.status == 200, "%s", r.body);
            sse ev = {0};
            const char *text = r.body;
            if (stream) text = parse_sse(r.body, &ev) ? ev.text : "";
            CHECK(strstr(text, "Hello, edge") && !strstr(r.body, "\"fallback\":true"), "%s: %s", modes[m], r.body);
            sse_free(&ev);
            http_resp_free(&r);
            asked++;
        }
    /* the same by headers */
    http_resp r;
    CHECK(post(&edge, chat_body("coffee? alice.martin@example.com", NULL, 0, 4),
               "X-Netgpt-User: " USER "\r\nX-Netgpt-Lat: " LAT "\r\nX-Netgpt-Lon: " LON "\r\nX-Netgpt-Name: Alice Martin\r\n",
               &r) == NG_OK && r.status == 200,
          "%s", r.body);
    http_resp_free(&r);
    asked++;
    stop(&edge, SIGTERM);
    pthread_mutex_lock(&f.mu);
    const char *up = f.rec ? f.rec : "";
    CHECK(atomic_load(&f.conns) == asked && strstr(up, "Authorization: Bearer k3y") && strstr(up, "Tokyo, Japan") &&
              strstr(up, "[email]"),
          "the fake cloud saw %d requests of %d:\n%s", atomic_load(&f.conns), asked, up);
    /* the user id, the name, the e-mail, the phone and the coordinates at every precision */
    const char *secret[] = {USER, "7731", "Alice", "Martin", "alice.martin", "example.com", "12 34 56", "612345678",
                            "0612345678", "35.7", "35.6", "139.7", "139.70", "35.69", "\"netgpt\"", "X-Netgpt"};
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++)
        CHECK(!strcasestr(up, secret[i]), "'%s' went up to the cloud:\n%s", secret[i], up);
    pthread_mutex_unlock(&f.mu);
    fake_stop(&f);
}

/* A cloud stream cut after "Hello, edge": the edge finishes the answer and marks it. */
static void test_cut_stream(void) {
    fake_cloud f;
    fake_start(&f, "cut");
    char args[512];
    snprintf(args, sizeof args, "edge --cloud http://" HOST ":%d -m " MODEL " --db " DB, f.port);
    proc edge = start(args);
    REQUIRE(edge.pid, "edge did not start");
    for (int stream = 0; stream < 2; stream++) {
        http_resp r;
        REQUIRE(post(&edge, chat_body("coffee?", "{\"user\":\"" USER "\"}", stream, 12), NULL, &r) == NG_OK &&
                    r.status == 200,
                "%s", r.body);
        cJSON *j = NULL;
        const cJSON *x;
        const char *text;
        sse s = {0};
        if (stream) {
            CHECK(parse_sse(r.body, &s), "bad stream:\n%s", r.body);
            x = s.last, text = s.text;
        } else {
            j = cJSON_Parse(r.body);
            x = get(j, "netgpt"), text = get_str(j, "choices.0.message.content");
        }
        CHECK(!strncmp(text, "Hello, edge", 11) && strlen(text) > 11, "answer '%s'", text);
        CHECK(cJSON_IsTrue(get(x, "fallback")) && !strcmp(get_str(x, "fallback_reason"), "cut") &&
                  !strcmp(get_str(x, "mode"), "edge-cloud") && get_num(x, "telemetry.edge_answer_tokens") > 0,
              "%s", r.body);
        cJSON_Delete(j);
        sse_free(&s);
        http_resp_free(&r);
    }
    stop(&edge, SIGTERM);
    fake_stop(&f);
}

/* A cloud answering 500: fallback, the breaker opens, the next request does not try the cloud.
 * A dead port: fallback "unreachable". */
static void test_breaker_and_dead_cloud(void) {
    fake_cloud f;
    fake_start(&f, "500");
    char args[512];
    snprintf(args, sizeof args, "edge --cloud http://" HOST ":%d -m " MODEL " --db " DB " --breaker 1:60", f.port);
    proc edge = start(args);
    REQUIRE(edge.pid, "edge did not start");
    const char *reasons[] = {"http_error", "breaker_open"};
    for (int i = 0; i < 2; i++) {
        http_resp r;
        CHECK(post(&edge, chat_body("coffee?", NULL, i, 4), NULL, &r) == NG_OK && r.status == 200, "%s", r.body);
        CHECK(strstr(r.body, "\"fallback\":true") && strstr(r.body, reasons[i]) && strstr(r.body, "\"mode\":\"edge-only\""),
              "request %d: %s", i, r.body);
        CHECK(atomic_load(&f.conns) == 1, "the cloud saw %d connections after request %d", atomic_load(&f.conns), i);
        http_resp_free(&r);
    }
    http_resp r;
    CHECK(http_request(HOST, edge.port, "GET", "/health", NULL, NULL, &r, 5) == NG_OK && strstr(r.body, "breaker_open"),
          "health %s", r.body);
    http_resp_free(&r);
    stop(&edge, SIGTERM);
    fake_stop(&f);

    /* a port nobody listens on */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) perror("bind");
    close(fd);
    snprintf(args, sizeof args, "edge --cloud http://" HOST ":%d -m " MODEL " --db " DB, ntohs(a.sin_port));
    edge = start(args);
    REQUIRE(edge.pid, "edge did not start");
    CHECK(post(&edge, chat_body("coffee?", NULL, 0, 4), NULL, &r) == NG_OK && r.status == 200 &&
              strstr(r.body, "\"fallback_reason\":\"unreachable\"") && strstr(r.body, "\"mode\":\"edge-only\""),
          "%s", r.body);
    http_resp_free(&r);
    stop(&edge, SIGTERM);
}

/* The real cloud killed while it streams: the client still gets a whole answer, marked. */
static void test_cloud_killed_mid_stream(void) {
    proc cloud = start("serve -m " MODEL);
    REQUIRE(cloud.pid, "cloud did not start");
    char args[512];
    snprintf(args, sizeof args, "edge --cloud http://" HOST ":%d -m " MODEL " --db " DB, cloud.port);
    proc edge = start(args);
    if (!edge.pid) stop(&cloud, SIGKILL);
    REQUIRE(edge.pid, "edge did not start");
    const char *b = chat_body("coffee?", "{\"user\":\"" USER "\"}", 1, 600);
    int fd = http_send(HOST, edge.port, "POST", "/v1/chat/completions", NULL, b, strlen(b));
    size_t cap = 1 << 20, n = 0;
    char *raw = xmalloc(cap + 1);
    raw[0] = 0;
    long k = 0;
    double end = ng_time() + 60;
    /* the first piece of the cloud's answer, then the cloud dies */
    while (fd >= 0 && !strstr(raw, "\"delta\":{\"content\":") && (k = http_read_raw(fd, raw + n, cap - n, end)) > 0) {
        n += (size_t)k;
        raw[n] = 0;
    }
    int killed = strstr(raw, "\"delta\":{\"content\":") != NULL;
    stop(&cloud, SIGKILL);
    while (fd >= 0 && n < cap && (k = http_read_raw(fd, raw + n, cap - n, end)) > 0) n += (size_t)k;
    raw[n] = 0;
    if (fd >= 0) close(fd);
    CHECK(killed, "no answer came before the kill:\n%s", raw);
    char *sep = strstr(raw, "\r\n\r\n");
    long blen = sep ? http_dechunk(sep + 4, n - (size_t)(sep + 4 - raw)) : -1;
    sse s = {0};
    CHECK(blen > 0 && parse_sse(sep + 4, &s), "bad stream:\n%s", raw);
    CHECK(s.last && cJSON_IsTrue(get(s.last, "fallback")) && !strcmp(get_str(s.last, "fallback_reason"), "cut") &&
              s.finish[0] && s.text[0],
          "after the kill: %s", sep ? sep + 4 : raw);
    sse_free(&s);
    free(raw);
    stop(&edge, SIGTERM);
}

/* Bad requests: serve's error body for the same mistake; the edge's own fields named. */
static void test_bad_requests(void) {
    REQUIRE(g_cloud.pid && g_edge.pid, "no servers");
    const char *same[] = {"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}", "[1,2]", "{\"messages\":[]}",
                          "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":7}"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        http_resp a, b;
        CHECK(post(&g_edge, same[i], NULL, &a) == NG_OK && post(&g_cloud, same[i], NULL, &b) == NG_OK, "%zu", i);
        CHECK(a.status == 400 && a.status == b.status && !strcmp(a.body, b.body), "'%s':\n edge  %d %s\n serve %d %s",
              same[i], a.status, a.body, b.status, b.body);
        http_resp_free(&a);
        http_resp_free(&b);
    }
    const struct {
        const char *netgpt, *headers, *param;
    } bad[] = {{"{\"lat\":91,\"lon\":0}", NULL, "netgpt.lat"},
               {"{\"lat\":\"35.6\",\"lon\":139.7}", NULL, "netgpt.lat"},
               {"{\"lat\":35.6}", NULL, "netgpt.lon"},
               {"{\"lat\":35.6,\"lon\":-181}", NULL, "netgpt.lon"},
               {"{\"mode\":\"fog\"}", NULL, "netgpt.mode"},
               {"{\"user\":\"a b\"}", NULL, "netgpt.user"},
               {"{\"cell\":7}", NULL, "netgpt.cell"},
               {"\"tokyo\"", NULL, "netgpt"},
               {NULL, "X-Netgpt-Lat: north\r\n", "X-Netgpt-Lat"},
               {NULL, "X-Netgpt-Mode: cloudy\r\n", "X-Netgpt-Mode"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http_resp r;
        CHECK(post(&g_edge, chat_body("hi", bad[i].netgpt, 0, 4), bad[i].headers, &r) == NG_OK, "%zu", i);
        cJSON *j = cJSON_Parse(r.body);
        CHECK(r.status == 400 && !strcmp(get_str(j, "error.param"), bad[i].param) &&
                  !strcmp(get_str(j, "error.type"), "invalid_request_error") && get_str(j, "error.message")[0],
              "%s / %s: %d %s", bad[i].netgpt ? bad[i].netgpt : "", bad[i].headers ? bad[i].headers : "", r.status,
              r.body);
        cJSON_Delete(j);
        http_resp_free(&r);
    }
    http_resp a, b;
    CHECK(http_request(HOST, g_edge.port, "GET", "/v1/nothing", NULL, NULL, &a, 10) == NG_OK &&
              http_request(HOST, g_cloud.port, "GET", "/v1/nothing", NULL, NULL, &b, 10) == NG_OK && a.status == 404 &&
              !strcmp(a.body, b.body),
          "404: %s vs %s", a.body, b.body);
    http_resp_free(&a);
    http_resp_free(&b);
    CHECK(http_request(HOST, g_edge.port, "GET", "/v1/chat/completions", NULL, NULL, &a, 10) == NG_OK &&
              http_request(HOST, g_cloud.port, "GET", "/v1/chat/completions", NULL, NULL, &b, 10) == NG_OK &&
              a.status == 405 && !strcmp(a.body, b.body),
          "405: %s vs %s", a.body, b.body);
    http_resp_free(&a);
    http_resp_free(&b);
}

/* The edge model writes the comprehensive prompt when asked to (random weights: any text). */
static void test_model_completion(void) {
    REQUIRE(g_cloud.pid, "no cloud");
    char args[512];
    snprintf(args, sizeof args, "edge --cloud http://" HOST ":%d -m " MODEL " --db " DB " --completion model "
             "--completion-tokens 16", g_cloud.port);
    proc edge = start(args);
    REQUIRE(edge.pid, "edge did not start");
    http_resp r;
    CHECK(post(&edge, chat_body("coffee?", "{\"user\":\"" USER "\",\"mode\":\"edge-only\"}", 0, 4), NULL, &r) == NG_OK &&
              r.status == 200,
          "%s", r.body);
    cJSON *j = cJSON_Parse(r.body);
    CHECK(!strcmp(get_str(j, "netgpt.completion"), "model") && get_str(j, "netgpt.comprehensive_prompt")[0] &&
              get_num(j, "netgpt.telemetry.edge_completion_tokens") > 0 &&
              get_num(j, "netgpt.telemetry.edge_completion_ms") > 0,
          "%s", r.body);
    cJSON_Delete(j);
    http_resp_free(&r);
    CHECK(stop(&edge, SIGTERM) == 0, "edge exit status");
}

int main(void) {
    mkdir("build", 0755);
    mkdir(TMP, 0755);
    signal(SIGPIPE, SIG_IGN);
    if (make_model() || make_db()) {
        printf("FAIL fixtures\n");
        return 1;
    }
    g_cloud = start("serve -m " MODEL);
    char args[512];
    snprintf(args, sizeof args, "edge --cloud http://" HOST ":%d -m " MODEL " --db " DB, g_cloud.port);
    if (g_cloud.pid) g_edge = start(args);
    RUN(test_personalized_modes);
    RUN(test_bad_requests);
    RUN(test_model_completion);
    RUN(test_uplink_privacy);
    RUN(test_cut_stream);
    RUN(test_breaker_and_dead_cloud);
    RUN(test_cloud_killed_mid_stream);
    if (g_edge.pid && stop(&g_edge, SIGTERM)) printf("FAIL edge exit status\n"), t_any_failed = 1;
    if (g_cloud.pid) stop(&g_cloud, SIGTERM);
    TEST_EXIT();
}
