/* team — the kernels' worker threads: runs a function on nt threads and waits for them.
 *
 * A decode step is some sixty small parallel loops (a matmul of a few hundred KB each, the
 * attention heads), so what it costs to start and join one matters: an OpenMP parallel region
 * takes about 3 us here, a tenth of a 768 x 768 q4_0 matmul. The team's workers wait for the
 * next job spinning on one shared word (then, after TEAM_SPIN_US without work, asleep on a
 * futex), so a job starts and joins in a fraction of a microsecond.
 *
 * Every parallel loop of inference and training runs on it, as do making random models and the
 * bandwidth and peak measurements: OpenMP's threads spin after their regions as these do after
 * their jobs, and the two kinds taking turns on the cores made a training step 5-35% slower
 * here, and the matrix products run right after a measurement 2-3x slower for milliseconds.
 *
 * The calling thread is thread 0 and runs its share; workers are created on first use, as many
 * as ng_threads() - 1. A job run from inside a job runs on its caller alone; a second thread
 * calling while the team is busy gets an OpenMP team instead (both give the same results:
 * work is split by thread index, never by who comes first). OMP_WAIT_POLICY=passive makes
 * idle workers sleep at once, for machines shared with other work. */
#ifndef NG_TEAM_H
#define NG_TEAM_H

#include <stdatomic.h>

/* A job: thread t of nt runs its share. */
typedef void (*ng_team_fn)(void *ctx, int t, int nt);

/* Runs fn(ctx, t, nt) for t = 0..nt-1 on nt threads (the caller is t = 0) and returns when all
 * are done. nt <= 1 runs fn(ctx, 0, 1) on the caller. */
void ng_team_run(int nt, ng_team_fn fn, void *ctx);

/* Inside a job: waits until all nt threads of the job reach it (memory is then shared). */
void ng_team_barrier(void);

/* Step i (from 0) of a wait for another thread of a job: a pause for the first 4096 steps, then
 * a yield, since the thread waited for may need this core (more threads than cores). */
void ng_team_wait_step(int i);

/* For jobs whose threads take over what is left of each other's shares (the GEMVs' rows,
 * attention's heads): one counter per share, the next of its steps not yet taken, each on a
 * cache line of its own so that a thread claiming steps of its share does not move another's. */
typedef struct {
    _Alignas(64) _Atomic int next;
} ng_team_ctr;

#endif
