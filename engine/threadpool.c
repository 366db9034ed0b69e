/*
 * threadpool.c - see threadpool.h.
 *
 * Protocol: the caller publishes fn/arg/n, resets the task counter, sets
 * `pending` to the worker count and bumps `gen` (the futex workers wait
 * on). Each worker runs tasks until the counter passes n, then decrements
 * `pending`; the last one wakes the caller if it went to sleep on it.
 */
#include "threadpool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SPIN_ITERS 4000 /* polls (pause each, ~0.1 ms) before sleeping */
#define MAX_THREADS 512  /* sanity bound on the requested size */

struct ThreadPool {
	int n;                 /* threads including the caller */
	pthread_t *th;         /* n - 1 workers */
	_Atomic uint32_t gen;  /* job generation; futex word for workers */
	_Atomic uint32_t pending; /* workers still in the current job */
	_Atomic int next;      /* next task index to hand out */
	_Atomic int stop;      /* 1: workers exit */
	_Atomic int sleepers;  /* workers in futex_wait on gen: wake needed */
	_Atomic int caller_sleeping; /* caller in futex_wait on pending */
	int ntasks;            /* tasks in the current job */
	tp_fn fn;              /* current job */
	void *arg;             /* its argument */
};

typedef struct {
	ThreadPool *p; /* pool */
	int id;        /* thread index, 1..n-1 */
} WorkerArg;

static void futex_wait(_Atomic uint32_t *w, uint32_t val)
{
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void run_tasks(ThreadPool *p, int id)
{
	int t;
	while ((t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed)) <
	       p->ntasks)
		p->fn(p->arg, t, id);
}

static void *worker(void *a)
{
	WorkerArg wa = *(WorkerArg *)a;
	free(a);
	ThreadPool *p = wa.p;
	uint32_t seen = 0;
	for (;;) {
		uint32_t g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (++spins < SPIN_ITERS)
				cpu_relax();
			else {
				atomic_fetch_add(&p->sleepers, 1);
				futex_wait(&p->gen, seen);
				atomic_fetch_sub(&p->sleepers, 1);
			}
		}
		seen = g;
		if (atomic_load(&p->stop))
			return NULL;
		run_tasks(p, wa.id);
		if (atomic_fetch_sub(&p->pending, 1) == 1 &&
		    atomic_load(&p->caller_sleeping))
			futex_wake(&p->pending);
	}
}

ThreadPool *tp_create(int threads, char *err, size_t errlen)
{
	if (threads <= 0) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		threads = c > 0 ? (int)c : 1;
	}
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	ThreadPool *p = calloc(1, sizeof *p);
	if (!p || !(p->th = calloc((size_t)threads, sizeof *p->th))) {
		free(p);
		snprintf(err, errlen, "thread pool: out of memory");
		return NULL;
	}
	p->n = 1;
	for (int i = 1; i < threads; i++) {
		WorkerArg *wa = malloc(sizeof *wa);
		int rc = wa ? 0 : ENOMEM;
		if (wa) {
			wa->p = p;
			wa->id = i;
			rc = pthread_create(&p->th[i - 1], NULL, worker, wa);
			if (rc)
				free(wa);
		}
		if (rc) {
			snprintf(err, errlen, "thread pool: cannot start thread %d: %s",
				 i, strerror(rc));
			tp_destroy(p);
			return NULL;
		}
		p->n++;
	}
	return p;
}

void tp_destroy(ThreadPool *p)
{
	if (!p)
		return;
	atomic_store(&p->stop, 1);
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
	futex_wake(&p->gen);
	for (int i = 0; i < p->n - 1; i++)
		pthread_join(p->th[i], NULL);
	free(p->th);
	free(p);
}

int tp_threads(const ThreadPool *p)
{
	return p->n;
}

void tp_run(ThreadPool *p, int n, tp_fn fn, void *arg)
{
	if (n <= 0)
		return;
	if (p->n == 1 || n == 1) {
		for (int t = 0; t < n; t++)
			fn(arg, t, 0);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	p->ntasks = n;
	atomic_store_explicit(&p->next, 0, memory_order_relaxed);
	atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_relaxed);
	atomic_fetch_add(&p->gen, 1);
	if (atomic_load(&p->sleepers))
		futex_wake(&p->gen);
	run_tasks(p, 0);
	uint32_t left;
	int spins = 0;
	while ((left = atomic_load_explicit(&p->pending, memory_order_acquire)) != 0) {
		if (++spins < SPIN_ITERS)
			cpu_relax();
		else {
			atomic_store(&p->caller_sleeping, 1);
			futex_wait(&p->pending, left);
			atomic_store(&p->caller_sleeping, 0);
		}
	}
}
