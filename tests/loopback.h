/* loopback — helpers for tests that run netgpt's servers as child processes on loopback: start
 * one on a port it picks itself (read from its "listening on" line, then GET /health 200), stop
 * and reap it, and read fields of JSON answers by a dotted path. Every child a test starts must
 * be stopped by it. */
#ifndef NG_LOOPBACK_H
#define NG_LOOPBACK_H

#include <cjson/cJSON.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"
#include "serve/client.h"

#define LOOPBACK_HOST "127.0.0.1"

typedef struct {
    pid_t pid;
    int port;
    char log[128];
} child_server;

/* Starts `BIN ARGS --host 127.0.0.1 --port 0 -t THREADS` (stderr to build/tmp/TAG-PID-N.err)
 * and waits up to timeout_s for it to answer /health with 200. pid 0 (and its log printed) on
 * failure. */
static child_server child_start(const char *bin, const char *args, const char *tag, int threads, double timeout_s) {
    static int n;
    child_server s = {0};
    snprintf(s.log, sizeof s.log, "build/tmp/%s-%d-%d.err", tag, (int)getpid(), n++);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s %s --host " LOOPBACK_HOST " --port 0 -t %d 2>%s", bin, args, threads, s.log);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    s.pid = pid;
    const char *mark = "listening on http://" LOOPBACK_HOST ":";
    double end = ng_time() + timeout_s;
    while (ng_time() < end) {
        usleep(20000);
        if (waitpid(pid, NULL, WNOHANG) == pid) break;
        size_t len;
        ng_error e;
        char *log = ng_read_file(s.log, &len, &e);
        const char *p = log ? strstr(log, mark) : NULL;
        if (p && !s.port) s.port = atoi(p + strlen(mark));
        free(log);
        if (!s.port) continue;
        http_resp r;
        int ok = http_request(LOOPBACK_HOST, s.port, "GET", "/health", NULL, NULL, &r, 5) == NG_OK && r.status == 200;
        http_resp_free(&r);
        if (ok) return s;
    }
    fprintf(stderr, "'%s %s' did not start; its log:\n", bin, args);
    snprintf(cmd, sizeof cmd, "cat %s >&2", s.log);
    if (system(cmd)) {}
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    s.pid = 0;
    return s;
}

/* Sends sig and reaps the child (SIGKILL after 30 s: then -1). Its exit status, 128 + the signal
 * when a signal ended it; after SIGTERM a non-zero status prints the end of its log. */
static int child_stop(child_server *s, int sig) {
    if (!s->pid) return -1;
    kill(s->pid, sig);
    int st = 0;
    double end = ng_time() + 30;
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
        if (ng_time() > end) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            s->pid = 0;
            return -1;
        }
        usleep(10000);
    }
    s->pid = 0;
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (sig == SIGTERM && rc) {
        char c[300];
        snprintf(c, sizeof c, "tail -n 40 %s >&2", s->log);
        if (system(c)) {}
    }
    return rc;
}

/* A JSON value by a path of keys and indices, e.g. get(j, "choices.0.text"); NULL when absent. */
static const cJSON *get(const cJSON *j, const char *path) {
    char key[64];
    while (j && *path) {
        size_t n = strcspn(path, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, path);
        j = (key[0] >= '0' && key[0] <= '9') ? cJSON_GetArrayItem(j, atoi(key)) : cJSON_GetObjectItemCaseSensitive(j, key);
        path += n + (path[n] == '.');
    }
    return j;
}

static const char *get_str(const cJSON *j, const char *path) {
    const cJSON *v = get(j, path);
    return cJSON_IsString(v) ? v->valuestring : "";
}

#endif
