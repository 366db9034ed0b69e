/*
 * threadpool.c - see threadpool.h.
 *
 * Protocol: a job is published as one 64-bit ticket, the job number in
 * the high half and the next task index in the low half. Anyone (caller
 * or worker) claims a task with a compare-and-swap that checks the job
 * number too, so a worker that wakes up late can never claim a task of
 * the job after the one it saw. Completion counts tasks, not workers: the
 * caller returns as soon as every task is done, so a worker the kernel
 * has descheduled (a shared, busy machine) delays a job only if it holds
 * a claimed task, not merely by not having looked yet. The job's fn, arg
 * and n stay valid while a claimed task of it is unfinished, which is all
 * a worker reads them for.
 *
 * The task count is kept per job parity: a worker that read job g's
 * ticket may read the count only after the caller, done with g, has begun
 * preparing g + 1. With one shared count it then saw g + 1's, passed its
 * bounds check with job g's exhausted ticket, and its compare-and-swap
 * still succeeded (g + 1's ticket not yet published): a task of g + 1 ran
 * twice and `done` overshot, so the caller could wait forever (seen under
 * ASan: check_backend, a task run twice in ~1 of 10 runs, one CI hang).
 * Job g + 2, the next writer of g's slot, cannot begin before g + 1's
 * ticket replaces g's, after which that compare-and-swap fails.
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
	_Atomic uint64_t ticket; /* job number << 32 | next task index */
	_Atomic uint32_t gen;  /* job number; futex word for idle workers */
	_Atomic uint32_t done; /* tasks of the current job finished */
	_Atomic int stop;      /* 1: workers exit */
	_Atomic int sleepers;  /* workers in futex_wait on gen: wake needed */
	_Atomic int caller_sleeping; /* caller in futex_wait on done */
	_Atomic int ntasks[2]; /* tasks in the job, by job number parity */
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

/* Claim and run tasks of job g until none is left (or the job is over). */
static void run_tasks(ThreadPool *p, uint32_t g, int id)
{
	for (;;) {
		uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
		if ((uint32_t)(t >> 32) != g)
			return;
		int n = atomic_load_explicit(&p->ntasks[g & 1],
					     memory_order_relaxed);
		if ((int64_t)(uint32_t)t >= n)
			return;
		if (!atomic_compare_exchange_weak_explicit(&p->ticket, &t, t + 1,
							   memory_order_acq_rel,
							   memory_order_relaxed))
			continue;
		/* task (uint32_t)t of job g is ours: the job cannot end
		 * before we finish it, so fn and arg are still its own */
		p->fn(p->arg, (int)(uint32_t)t, id);
		if (atomic_fetch_add(&p->done, 1) + 1 == (uint32_t)n &&
		    id != 0 && atomic_load(&p->caller_sleeping))
			futex_wake(&p->done);
	}
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
		run_tasks(p, g, wa.id);
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
	/* the previous job is complete, so no worker reads these now */
	p->fn = fn;
	p->arg = arg;
	uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
	atomic_store_explicit(&p->ntasks[g & 1], n, memory_order_relaxed);
	atomic_store_explicit(&p->done, 0, memory_order_relaxed);
	atomic_store_explicit(&p->ticket, (uint64_t)g << 32, memory_order_release);
	atomic_store_explicit(&p->gen, g, memory_order_release);
	if (atomic_load(&p->sleepers))
		futex_wake(&p->gen);
	run_tasks(p, g, 0);
	uint32_t d;
	int spins = 0;
	while ((d = atomic_load_explicit(&p->done, memory_order_acquire)) != (uint32_t)n) {
		if (++spins < SPIN_ITERS)
			cpu_relax();
		else {
			atomic_store(&p->caller_sleeping, 1);
			/* recheck after announcing, then sleep while unchanged */
			d = atomic_load(&p->done);
			if (d != (uint32_t)n)
				futex_wait(&p->done, d);
			atomic_store(&p->caller_sleeping, 0);
		}
	}
}
