/* The edge's cloud client against a fake cloud on loopback (a thread in this test): a good
 * stream, a stream cut before [DONE], an error status, a silent cloud (timeout), a closed port,
 * a client that stops reading; exact byte counts; and the circuit breaker. */
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"
#include "edge/cloud.h"

typedef struct {
    int listen_fd, port;
    const char *mode; /* ok | cut | 500 | silent */
    char request[8192];
    size_t request_n, response_n;
} fake_cloud;

static const char *CHUNKS[] = {
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\", edge\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
    "data: [DONE]\n\n"};

static void *serve_one(void *arg) {
    fake_cloud *f = arg;
    int c = accept(f->listen_fd, NULL, NULL);
    if (c < 0) return NULL;
    /* read headers and the Content-Length body */
    size_t n = 0;
    long want = -1;
    while (n < sizeof f->request - 1) {
        ssize_t got = read(c, f->request + n, sizeof f->request - 1 - n);
        if (got <= 0) break;
        n += (size_t)got;
        f->request[n] = 0;
        char *end = strstr(f->request, "\r\n\r\n");
        if (end) {
            char *cl = strcasestr(f->request, "Content-Length:");
            want = (long)(end + 4 - f->request) + (cl ? atol(cl + 15) : 0);
            if ((long)n >= want) break;
        }
    }
    f->request_n = n;
    char out[4096] = "";
    if (!strcmp(f->mode, "500")) {
        snprintf(out, sizeof out, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"error\":\"overload\"}");
    } else if (!strcmp(f->mode, "silent")) {
        sleep(3);
    } else {
        strcat(out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
        int last = !strcmp(f->mode, "cut") ? 3 : 6;
        for (int i = 0; i < last; i++) strcat(out, CHUNKS[i]);
    }
    f->response_n = strlen(out);
    if (write(c, out, strlen(out)) < 0) f->response_n = 0;
    close(c);
    return NULL;
}

static void start(fake_cloud *f, const char *mode, pthread_t *th) {
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(f->listen_fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(f->listen_fd, (struct sockaddr *)&a, &len);
    f->port = ntohs(a.sin_port);
    listen(f->listen_fd, 4);
    pthread_create(th, NULL, serve_one, f);
}

typedef struct {
    char text[256];
    int stop_after;
    int calls;
} sink;

static int collect(void *ud, const char *t, size_t n) {
    sink *s = ud;
    strncat(s->text, t, n);
    return s->stop_after && ++s->calls >= s->stop_after;
}

static const char BODY[] = "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static cloud_status call(const char *mode, sink *s, cloud_result *r, fake_cloud *f, double idle) {
    pthread_t th;
    start(f, mode, &th);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", f->port);
    cloud_cfg c = {url, "k3y", 2, idle, 10};
    cloud_status st = cloud_chat_stream(&c, BODY, collect, s, r);
    pthread_join(th, NULL);
    close(f->listen_fd);
    return st;
}

static void test_ok_stream(void) {
    fake_cloud f;
    sink s = {0};
    cloud_result r;
    CHECK(call("ok", &s, &r, &f, 5) == CLOUD_OK, "status %s: %s", cloud_status_name(r.status), r.error);
    CHECK(!strcmp(s.text, "Hello, edge"), "text '%s'", s.text);
    CHECK(r.prompt_tokens == 7 && r.completion_tokens == 2 && !strcmp(r.finish_reason, "stop"), "usage");
    CHECK(r.uplink_bytes == f.request_n, "uplink %zu vs %zu bytes received by the cloud", r.uplink_bytes, f.request_n);
    CHECK(r.downlink_bytes == f.response_n, "downlink %zu vs %zu sent", r.downlink_bytes, f.response_n);
    CHECK(strstr(f.request, "Authorization: Bearer k3y") && strstr(f.request, BODY), "request as sent");
    CHECK(r.ttft_s > 0 && r.ttft_s <= r.total_s, "ttft %g total %g", r.ttft_s, r.total_s);
}

static void test_faults(void) {
    fake_cloud f;
    sink s = {0};
    cloud_result r;
    CHECK(call("cut", &s, &r, &f, 5) == CLOUD_CUT && !strcmp(s.text, "Hello, edge"), "cut: %s '%s'",
          cloud_status_name(r.status), s.text);
    memset(&s, 0, sizeof s);
    CHECK(call("500", &s, &r, &f, 5) == CLOUD_HTTP_ERROR && r.http_status == 500 && strstr(r.error, "overload"),
          "500: %s %s", cloud_status_name(r.status), r.error);
    memset(&s, 0, sizeof s);
    CHECK(call("silent", &s, &r, &f, 1) == CLOUD_TIMEOUT, "silent: %s %s", cloud_status_name(r.status), r.error);
    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    CHECK(call("ok", &s, &r, &f, 5) == CLOUD_ABORTED && !strcmp(s.text, "Hello"), "abort: %s '%s'",
          cloud_status_name(r.status), s.text);
    /* a closed port */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    cloud_cfg c = {url, NULL, 1, 1, 2};
    CHECK(cloud_chat_stream(&c, BODY, collect, &s, &r) == CLOUD_UNREACHABLE, "refused: %s %s",
          cloud_status_name(r.status), r.error);
}

static void test_breaker(void) {
    cloud_breaker b;
    cloud_breaker_init(&b, 2, 10);
    CHECK(cloud_breaker_allow(&b, 0), "closed at start");
    cloud_breaker_report(&b, 0, 0);
    CHECK(cloud_breaker_allow(&b, 1), "one failure keeps it closed");
    cloud_breaker_report(&b, 0, 1);
    CHECK(!cloud_breaker_allow(&b, 2) && cloud_breaker_open(&b, 2), "open after two failures");
    CHECK(cloud_breaker_allow(&b, 11.5), "a probe after the cooldown");
    CHECK(!cloud_breaker_allow(&b, 11.6), "only one probe at a time");
    cloud_breaker_report(&b, 1, 12);
    CHECK(cloud_breaker_allow(&b, 12.1) && !cloud_breaker_open(&b, 12.1), "closed after a success");
}

int main(void) {
    cloud_global_init();
    RUN(test_ok_stream);
    RUN(test_faults);
    RUN(test_breaker);
    TEST_EXIT();
}
