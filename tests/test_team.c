/* test_team — the kernels' worker threads (core/team.h): every share runs once with its own
 * index, barriers separate phases, a job inside a job runs on its caller, two threads may run
 * jobs at once, and the team grows when more threads are asked for. */
#include "core/kernels.h"
#include "core/team.h"

#include "test.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define MAXT 8

typedef struct {
    _Atomic int ran[MAXT];
    _Atomic int seen_nt[MAXT];
    int round;
    int slot[MAXT];
    _Atomic int bad;
} job_state;

static void mark(void *ctx, int t, int nt) {
    job_state *s = ctx;
    if (t < 0 || t >= MAXT) {
        atomic_fetch_add(&s->bad, 1);
        return;
    }
    atomic_fetch_add(&s->ran[t], 1);
    atomic_store(&s->seen_nt[t], nt);
}

/* Every index 0..nt-1 runs exactly once and is told nt, for several thread counts, many times
 * over (the workers go through many generations, and sleep between some of them). */
static void test_each_share_once(void) {
    for (int nt = 1; nt <= 4; nt++) {
        ng_set_threads(nt);
        for (int rep = 0; rep < 2000; rep++) {
            job_state s = {0};
            ng_team_run(nt, mark, &s);
            REQUIRE(atomic_load(&s.bad) == 0, "share index out of range");
            for (int t = 0; t < MAXT; t++) {
                int want = t < nt ? 1 : 0;
                REQUIRE(atomic_load(&s.ran[t]) == want, "nt %d rep %d: share %d ran %d times", nt, rep, t,
                        atomic_load(&s.ran[t]));
                if (want) REQUIRE(atomic_load(&s.seen_nt[t]) == nt, "share %d saw nt %d", t, s.seen_nt[t]);
            }
            if (rep == 1000) usleep(2000); /* long enough for idle workers to fall asleep */
        }
    }
    ng_set_threads(0);
}

/* Rounds separated by barriers: in round r every share writes r into its slot, meets the
 * others, then checks that every slot holds r (none is behind, none ahead). */
static void rounds(void *ctx, int t, int nt) {
    job_state *s = ctx;
    for (int r = 1; r <= 300; r++) {
        s->slot[t] = r;
        ng_team_barrier();
        for (int u = 0; u < nt; u++)
            if (s->slot[u] != r) atomic_fetch_add(&s->bad, 1);
        ng_team_barrier();
    }
}

static void test_barrier(void) {
    for (int nt = 1; nt <= 3; nt++) {
        ng_set_threads(nt);
        job_state s = {0};
        ng_team_run(nt, rounds, &s);
        CHECK(atomic_load(&s.bad) == 0, "nt %d: %d slots seen out of step", nt, atomic_load(&s.bad));
    }
    ng_set_threads(0);
}

/* A job run from inside a job runs on its caller alone (nt 1), and its barrier returns. */
static void inner(void *ctx, int t, int nt) {
    job_state *s = ctx;
    ng_team_barrier();
    if (t != 0 || nt != 1) atomic_fetch_add(&s->bad, 1);
}

static void outer(void *ctx, int t, int nt) {
    job_state *s = ctx;
    (void)nt;
    job_state in = {0};
    ng_team_run(2, inner, &in);
    atomic_fetch_add(&s->bad, atomic_load(&in.bad));
    atomic_fetch_add(&s->ran[t], 1);
}

static void test_nested(void) {
    ng_set_threads(2);
    job_state s = {0};
    ng_team_run(2, outer, &s);
    CHECK(atomic_load(&s.bad) == 0, "inner job ran with more than one thread");
    CHECK(atomic_load(&s.ran[0]) == 1 && atomic_load(&s.ran[1]) == 1, "outer shares ran %d, %d", s.ran[0],
          s.ran[1]);
    ng_set_threads(0);
}

/* Two threads running jobs at once (one gets the team, the other an OpenMP team): both get
 * every share once and their barriers hold. */
static void *caller(void *arg) {
    _Atomic int *bad = arg;
    for (int rep = 0; rep < 300; rep++) {
        job_state s = {0};
        ng_team_run(2, mark, &s);
        if (atomic_load(&s.ran[0]) != 1 || atomic_load(&s.ran[1]) != 1) atomic_fetch_add(bad, 1);
        job_state r = {0};
        if (rep % 50 == 0) {
            ng_team_run(2, rounds, &r);
            atomic_fetch_add(bad, atomic_load(&r.bad));
        }
    }
    return NULL;
}

static void test_concurrent_callers(void) {
    ng_set_threads(2);
    _Atomic int bad = 0;
    pthread_t th[2];
    for (int i = 0; i < 2; i++) REQUIRE(pthread_create(&th[i], NULL, caller, &bad) == 0, "pthread_create");
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK(atomic_load(&bad) == 0, "%d jobs went wrong with two callers", atomic_load(&bad));
    ng_set_threads(0);
}

/* The matmul on the team gives the same bits as on one thread, before and after the team grew
 * past the thread count in use. */
static void test_matmul_after_growth(void) {
    enum { B = 1, N = 640, K = 512 };
    static float x[B * K], w[N * K], y1[B * N], y2[B * N], y3[B * N];
    for (int i = 0; i < B * K; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (int i = 0; i < N * K; i++) w[i] = (float)((i * 91) % 211) / 105.0f - 1.0f;
    ng_set_threads(1);
    ng_matmul(y1, x, w, NG_F32, NULL, B, N, K);
    ng_set_threads(2);
    ng_matmul(y2, x, w, NG_F32, NULL, B, N, K);
    ng_set_threads(4);
    ng_matmul(y3, x, w, NG_F32, NULL, B, N, K);
    ng_set_threads(2);
    ng_matmul(y2, x, w, NG_F32, NULL, B, N, K);
    CHECK(memcmp(y1, y2, sizeof y1) == 0, "2 threads differ from 1");
    CHECK(memcmp(y1, y3, sizeof y1) == 0, "4 threads differ from 1");
    ng_set_threads(0);
}

/* Workers asleep or falling asleep when a job is published (idle workers sleep at once under
 * OMP_WAIT_POLICY=passive): the owner must wake them, or it waits for them at the barrier or
 * at the job's end forever. Many short jobs, every other pair with a barrier, on 2 and 3
 * threads, under a watchdog that fails the test if one hangs. */
static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL test_sleeping_workers: a job hung (a sleeping worker was never woken)\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void one_barrier(void *ctx, int t, int nt) {
    job_state *s = ctx;
    s->slot[t] = s->round;
    ng_team_barrier();
    for (int u = 0; u < nt; u++)
        if (s->slot[u] != s->round) atomic_fetch_add(&s->bad, 1);
}

static void test_sleeping_workers(void) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    ng_set_threads(MAXT);
    job_state s = {0};
    ng_team_run(MAXT, mark, &s); /* grows the team, which reads OMP_WAIT_POLICY again */
    signal(SIGALRM, on_alarm);
    alarm(120);
    int bad = 0;
    for (int rep = 0; rep < 4000; rep++) {
        int nt = 2 + rep % 2;
        job_state j = {.round = rep + 1};
        ng_team_run(nt, rep % 4 < 2 ? one_barrier : mark, &j);
        bad += atomic_load(&j.bad);
    }
    alarm(0);
    unsetenv("OMP_WAIT_POLICY");
    ng_set_threads(0);
    CHECK(bad == 0, "%d slots seen out of step", bad);
}

int main(void) {
    RUN(test_each_share_once);
    RUN(test_barrier);
    RUN(test_nested);
    RUN(test_concurrent_callers);
    RUN(test_matmul_after_growth);
    RUN(test_sleeping_workers); /* last: it leaves the workers sleeping when idle */
    TEST_EXIT();
}
