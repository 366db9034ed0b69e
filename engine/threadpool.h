/*
 * threadpool.h - a persistent pool of worker threads for the CPU backend's
 * data-parallel loops (matmul rows, attention heads).
 *
 * tp_run() hands out task indices 0..n-1 through one atomic ticket (job
 * number and next index, claimed by compare-and-swap) and returns once all
 * tasks are done, not once every worker has looked; the calling thread
 * works too, so a pool of N threads has N-1 workers. Idle
 * workers spin briefly (decode issues hundreds of small loops per token,
 * and waking a sleeping thread costs microseconds), then sleep on a futex.
 * Nothing is allocated per call. One tp_run() at a time (no nesting).
 */
#ifndef INFERD_THREADPOOL_H
#define INFERD_THREADPOOL_H

#include <stddef.h>

typedef struct ThreadPool ThreadPool;

/* fn(arg, task, thread): thread is 0..tp_threads()-1, unique among the
 * calls running at once, for indexing per-thread scratch. */
typedef void (*tp_fn)(void *arg, int task, int thread);

/* A pool of threads (<= 0: all online cores). NULL with a message. */
ThreadPool *tp_create(int threads, char *err, size_t errlen);
void tp_destroy(ThreadPool *p);
int tp_threads(const ThreadPool *p);

/* Run fn for every task in 0..n-1 and return when all are done. */
void tp_run(ThreadPool *p, int n, tp_fn fn, void *arg);

#endif
