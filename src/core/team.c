/* team — see team.h.
 *
 * Protocol: the owner (the thread holding g.owner) writes a job (fn, ctx) and publishes
 * g.word = (job number << 8) | nt. A worker that sees a new word and whose index is below nt
 * runs its share and adds one to g.done; the owner returns once g.done has grown by the job's
 * nt - 1 workers, so none of them can still be reading the job when the next one is written
 * (workers above nt never read it: nt travels in the word). Workers that found no job
 * for TEAM_SPIN_US sleep on g.word (a futex); the owner wakes them when it publishes a word and
 * some sleep. The barrier counts arrivals (the last one resets the count, so each job finds it
 * at 0) and bumps its own generation. */
#include "core/team.h"

#include "core/kernels.h"
#include "core/util.h"

#include <limits.h>
#include <linux/futex.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* How long an idle worker spins before it sleeps: longer than what a decode loop does between
 * two tokens (sampling over the vocabulary), so that a generating model's workers stay awake. */
#define TEAM_SPIN_US 300
#define TEAM_MAX 255 /* nt fits the word's low 8 bits */

/* Cache lines: the owner's lock and bookkeeping (only owners touch them); the job and the count
 * of shares done (the owner writes the job, the workers read it and add to done: the one line
 * goes back and forth once each way per job); the sleepers; the barrier. done counts every
 * share ever finished and the owner waits for the count it expects, so it never writes done.
 * With all of it on one line, as before, the owner's lock and its reset of done cost extra
 * transfers: an empty 2-thread job took 0.53-0.63 us against 0.50-0.51 now, and GPT-2 124M
 * q4_0 decode was 2% slower (6 of 8 alternating runs, one 2-core Zen 5 VM). */
static struct {
    _Alignas(64) pthread_mutex_t owner;
    int n_workers;
    unsigned jobs, done_seen; /* done_seen: done after the last job */
    _Atomic int spin_us;
    unsigned start_word[TEAM_MAX + 1];
    _Alignas(64) _Atomic unsigned word;
    ng_team_fn fn;
    void *ctx;
    _Atomic unsigned done;
    _Alignas(64) _Atomic int sleepers;
    _Alignas(64) _Atomic unsigned bar_gen;
    _Atomic int bar_count;
} g = {.owner = PTHREAD_MUTEX_INITIALIZER};

/* The calling thread's place: outside any job (0), in a job of the team (1), in an OpenMP
 * fallback team (2); and its job's thread count, for the barrier. */
static _Thread_local int tl_mode, tl_nt = 1;

static void futex_wait(_Atomic unsigned *w, unsigned v) {
    syscall(SYS_futex, (unsigned *)w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic unsigned *w) {
    syscall(SYS_futex, (unsigned *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static void run_share(int t, int nt, ng_team_fn fn, void *ctx, int mode) {
    int mode0 = tl_mode, nt0 = tl_nt;
    tl_mode = mode;
    tl_nt = nt;
    fn(ctx, t, nt);
    tl_mode = mode0;
    tl_nt = nt0;
}

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    unsigned seen = g.start_word[t]; /* the word before the job that created this worker */
    for (;;) {
        unsigned cur = atomic_load_explicit(&g.word, memory_order_acquire);
        if (cur == seen) {
            double t0 = 0;
            int spin = atomic_load_explicit(&g.spin_us, memory_order_relaxed);
            for (int i = 0; spin > 0 && (cur = atomic_load_explicit(&g.word, memory_order_acquire)) == seen;
                 i++) {
                if ((i & 255) == 0) {
                    double t1 = now_us();
                    if (i == 0)
                        t0 = t1;
                    else if (t1 - t0 > spin)
                        break;
                }
                cpu_relax();
            }
            if (cur == seen) {
                atomic_fetch_add(&g.sleepers, 1);
                if (atomic_load(&g.word) == seen) futex_wait(&g.word, seen);
                atomic_fetch_sub(&g.sleepers, 1);
                continue;
            }
        }
        seen = cur;
        int nt = (int)(cur & 255);
        if (t < nt) {
            run_share(t, nt, g.fn, g.ctx, 1);
            atomic_fetch_add_explicit(&g.done, 1, memory_order_release);
        }
    }
    return NULL;
}

/* Adds workers up to want (called by the owner, no job in flight). */
static void grow_team(int want) {
    const char *p = getenv("OMP_WAIT_POLICY");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    /* more threads than cores: a spinning worker would take the time of one that works */
    int spin = (p && !strcasecmp(p, "passive")) || (cores > 0 && want + 1 > cores) ? 0 : TEAM_SPIN_US;
    atomic_store(&g.spin_us, spin);
    while (g.n_workers < want) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        g.start_word[g.n_workers + 1] = atomic_load(&g.word);
        if (pthread_create(&th, &at, worker, (void *)(intptr_t)(g.n_workers + 1)) != 0)
            ng_die("cannot start a worker thread (%d running)", g.n_workers);
        pthread_attr_destroy(&at);
        g.n_workers++;
    }
}

void ng_team_wait_step(int i) {
    if (i < 4096)
        cpu_relax();
    else
        sched_yield();
}

void ng_team_run(int nt, ng_team_fn fn, void *ctx) {
    if (nt > TEAM_MAX) nt = TEAM_MAX;
    if (nt <= 1 || tl_mode != 0) { /* one thread, or a job inside a job */
        run_share(0, 1, fn, ctx, tl_mode ? tl_mode : 1);
        return;
    }
    if (pthread_mutex_trylock(&g.owner) != 0) { /* another thread's job is running */
#pragma omp parallel num_threads(nt)
        run_share(omp_get_thread_num(), omp_get_num_threads(), fn, ctx, 2);
        return;
    }
    if (g.n_workers < nt - 1) grow_team(nt - 1);
    g.fn = fn;
    g.ctx = ctx;
    g.jobs++;
    atomic_store(&g.word, g.jobs << 8 | (unsigned)nt); /* seq_cst: before the sleepers are counted */
    if (atomic_load(&g.sleepers) > 0) futex_wake_all(&g.word);
    run_share(0, nt, fn, ctx, 1);
    unsigned want = g.done_seen + (unsigned)(nt - 1); /* unsigned: wraps around harmlessly */
    for (int i = 0; atomic_load_explicit(&g.done, memory_order_acquire) != want; i++) ng_team_wait_step(i);
    g.done_seen = want;
    pthread_mutex_unlock(&g.owner);
}

void ng_team_barrier(void) {
    if (tl_nt <= 1) return; /* first: a job run alone inside an OpenMP team must not wait for it */
    if (tl_mode == 2) {
#pragma omp barrier
        return;
    }
    unsigned gen = atomic_load_explicit(&g.bar_gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&g.bar_count, 1, memory_order_acq_rel) == tl_nt - 1) {
        atomic_store_explicit(&g.bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&g.bar_gen, 1, memory_order_release);
        return;
    }
    for (int i = 0; atomic_load_explicit(&g.bar_gen, memory_order_acquire) == gen; i++) ng_team_wait_step(i);
}
