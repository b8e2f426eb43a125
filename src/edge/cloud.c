/* cloud — libcurl transfer with an SSE line parser in the write callback. */
#include "edge/cloud.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void cloud_global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

const char *cloud_status_name(cloud_status s) {
    static const char *names[] = {"ok", "unreachable", "timeout", "http_error", "cut", "aborted"};
    return s <= CLOUD_ABORTED ? names[s] : "?";
}

typedef struct {
    cloud_delta_fn fn;
    void *ud;
    cloud_result *res;
    double t0;
    char *line; /* pending partial line */
    size_t n, cap;
    int done, aborted, got_delta, idle_out;
    double last_byte, idle_s;
    char *err_body; /* the body of a non-2xx answer, for the message */
    size_t err_n;
} sse_state;

/* One SSE line: "data: {json}" or "data: [DONE]"; other lines (comments, event:) are ignored. */
static void sse_line(sse_state *s, const char *l, size_t n) {
    if (n >= 5 && !strncmp(l, "data:", 5)) {
        l += 5, n -= 5;
        while (n && *l == ' ') l++, n--;
        if (n == 6 && !strncmp(l, "[DONE]", 6)) {
            s->done = 1;
            return;
        }
        cJSON *j = cJSON_ParseWithLength(l, n);
        if (!j) return;
        const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
        const cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
        if (c0) {
            const cJSON *delta = cJSON_GetObjectItemCaseSensitive(c0, "delta");
            const cJSON *text = delta ? cJSON_GetObjectItemCaseSensitive(delta, "content")
                                      : cJSON_GetObjectItemCaseSensitive(c0, "text");
            if (cJSON_IsString(text) && text->valuestring[0]) {
                if (!s->got_delta) s->res->ttft_s = ng_time() - s->t0, s->got_delta = 1;
                if (s->fn && s->fn(s->ud, text->valuestring, strlen(text->valuestring))) s->aborted = 1;
            }
            const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
            if (cJSON_IsString(fr)) snprintf(s->res->finish_reason, sizeof s->res->finish_reason, "%s", fr->valuestring);
        }
        const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
        if (cJSON_IsObject(usage)) {
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
            if (cJSON_IsNumber(p)) s->res->prompt_tokens = (int)p->valuedouble;
            if (cJSON_IsNumber(c)) s->res->completion_tokens = (int)c->valuedouble;
        }
        cJSON_Delete(j);
    }
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud) {
    sse_state *s = ud;
    size_t n = size * nmemb;
    s->last_byte = ng_time();
    if (s->res->http_status >= 300) { /* an error answer: keep a bounded copy of its body */
        size_t keep = n < 512 - s->err_n ? n : 512 - s->err_n;
        if (!s->err_body) s->err_body = xcalloc(513, 1);
        memcpy(s->err_body + s->err_n, p, keep);
        s->err_n += keep;
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            size_t len = s->n;
            if (len && s->line[len - 1] == '\r') len--;
            sse_line(s, s->line ? s->line : "", len);
            s->n = 0;
            if (s->aborted) return 0; /* stops the transfer */
        } else {
            if (s->n + 1 >= s->cap) s->line = xrealloc(s->line, s->cap = s->cap ? 2 * s->cap : 1024);
            if (s->n < (1u << 24)) s->line[s->n++] = p[i]; /* a line over 16 MiB is cut, not grown */
        }
    }
    return n;
}

/* Learns the status line before the body arrives, so an error body is kept apart. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
    sse_state *s = ud;
    size_t n = size * nmemb;
    int code;
    s->last_byte = ng_time();
    if (n > 9 && !strncmp(p, "HTTP/", 5) && sscanf(p, "HTTP/%*s %d", &code) == 1) s->res->http_status = code;
    return n;
}

/* Ends a transfer on which nothing has arrived for idle_s (libcurl calls this about once a
 * second and whenever data moves). */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    sse_state *s = ud;
    if (ng_time() - s->last_byte > s->idle_s) {
        s->idle_out = 1;
        return 1;
    }
    return 0;
}

/* Counts the bytes that really cross the wire at the HTTP level. */
static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ud) {
    (void)h, (void)data;
    cloud_result *r = ud;
    if (type == CURLINFO_HEADER_OUT || type == CURLINFO_DATA_OUT) r->uplink_bytes += size;
    if (type == CURLINFO_HEADER_IN || type == CURLINFO_DATA_IN) r->downlink_bytes += size;
    return 0;
}

cloud_status cloud_chat_stream(const cloud_cfg *c, const char *body, cloud_delta_fn fn, void *ud, cloud_result *res) {
    memset(res, 0, sizeof *res);
    sse_state s = {.fn = fn, .ud = ud, .res = res, .t0 = ng_time(), .idle_s = c->idle_timeout_s};
    s.last_byte = s.t0;
    char url[2048], auth[1024];
    snprintf(url, sizeof url, "%s/v1/chat/completions", c->url);
    CURL *h = curl_easy_init();
    if (!h) {
        res->status = CLOUD_UNREACHABLE;
        snprintf(res->error, sizeof res->error, "cannot create a transfer");
        return res->status;
    }
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Accept: text/event-stream");
    if (c->api_key && c->api_key[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->api_key);
        hdr = curl_slist_append(hdr, auth);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &s);
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, res);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L); /* only to feed on_debug: nothing is printed */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "netgpt-edge");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(c->total_timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &s);
    CURLcode rc = curl_easy_perform(h);
    res->total_s = ng_time() - s.t0;
    if (s.n && !s.done && !s.aborted) sse_line(&s, s.line, s.n); /* a last line without newline */
    if (s.aborted) {
        res->status = CLOUD_ABORTED;
        snprintf(res->error, sizeof res->error, "stopped by the edge");
    } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
        res->status = CLOUD_UNREACHABLE;
        snprintf(res->error, sizeof res->error, "%s: %s", c->url, curl_easy_strerror(rc));
    } else if (rc == CURLE_OPERATION_TIMEDOUT || s.idle_out) {
        res->status = CLOUD_TIMEOUT;
        snprintf(res->error, sizeof res->error, "%s: no answer in time (%s)", c->url, curl_easy_strerror(rc));
    } else if (res->http_status >= 300) {
        res->status = CLOUD_HTTP_ERROR;
        snprintf(res->error, sizeof res->error, "%s answered %d: %.200s", c->url, res->http_status,
                 s.err_body ? s.err_body : "");
    } else if (rc != CURLE_OK || !s.done) {
        res->status = CLOUD_CUT;
        snprintf(res->error, sizeof res->error, "%s: the stream ended before [DONE] (%s)", c->url,
                 rc != CURLE_OK ? curl_easy_strerror(rc) : "closed");
    } else {
        res->status = CLOUD_OK;
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    free(s.line);
    free(s.err_body);
    return res->status;
}

void cloud_breaker_init(cloud_breaker *b, int threshold, double cooldown_s) {
    pthread_mutex_init(&b->mu, NULL);
    b->threshold = threshold > 0 ? threshold : 1;
    b->cooldown_s = cooldown_s;
    b->failures = 0;
    b->open_until = 0;
}

int cloud_breaker_allow(cloud_breaker *b, double now) {
    pthread_mutex_lock(&b->mu);
    int ok = now >= b->open_until;
    if (ok && b->failures >= b->threshold) b->open_until = now + b->cooldown_s; /* one probe at a time */
    pthread_mutex_unlock(&b->mu);
    return ok;
}

void cloud_breaker_report(cloud_breaker *b, int ok, double now) {
    pthread_mutex_lock(&b->mu);
    if (ok) {
        b->failures = 0;
        b->open_until = 0;
    } else if (++b->failures >= b->threshold) {
        b->open_until = now + b->cooldown_s;
    }
    pthread_mutex_unlock(&b->mu);
}

int cloud_breaker_open(cloud_breaker *b, double now) {
    pthread_mutex_lock(&b->mu);
    int open = now < b->open_until;
    pthread_mutex_unlock(&b->mu);
    return open;
}
