/*
 * mapguard.c - the SIGBUS handler and the table of guarded mappings (see
 * mapguard.h).
 *
 * The handler reads the table without a lock (it may interrupt a thread
 * that holds one): an entry is published by storing its start last and
 * withdrawn by clearing its start first, both atomically; writers
 * serialise on a mutex among themselves. Everything the handler calls
 * (mmap, sigaction, raise, atomics) is a plain system call or lock-free.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mapguard.h"

typedef struct Guard {
	_Atomic uintptr_t start; /* mapping address; 0 = free entry */
	_Atomic size_t len;      /* mapped bytes (the file's size then) */
	atomic_uint faults;      /* SIGBUS absorbed in it */
	_Atomic(const void *) owner; /* groups a model's mappings */
	char *path;              /* the file (malloc'd) */
	struct stat st;          /* its fstat when mapped */
} Guard;

static Guard tab[MAPGUARD_MAX];
static pthread_mutex_t tab_mu = PTHREAD_MUTEX_INITIALIZER; /* writers */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct sigaction prev;   /* SIGBUS disposition before ours */
static uintptr_t page_size;     /* sysconf is not async-signal-safe */
static int installed;           /* the handler is in place */

/* Someone else's SIGBUS: give it the disposition it had before us. */
static void pass_on(int sig, siginfo_t *si, void *uc)
{
	if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction) {
		prev.sa_sigaction(sig, si, uc);
		return;
	}
	if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
		prev.sa_handler(sig);
		return;
	}
	/* default: restore it; a fault re-runs on return and kills, a
	 * signal sent by kill is raised again (pending until we return) */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigaction(SIGBUS, &dfl, NULL);
	if (si->si_code <= 0)
		raise(SIGBUS);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	uintptr_t a = (uintptr_t)si->si_addr;
	if (si->si_code > 0) /* from the kernel: a failed page read */
		for (int i = 0; i < MAPGUARD_MAX; i++) {
			uintptr_t s = atomic_load_explicit(&tab[i].start,
							   memory_order_acquire);
			size_t n = atomic_load_explicit(&tab[i].len,
							memory_order_relaxed);
			if (!s || a < s || a - s >= n)
				continue;
			/* from the faulting page to the mapping's end: all
			 * of it is past the file's end now */
			uintptr_t pg = a & ~(page_size - 1);
			uintptr_t end = (s + n + page_size - 1) & ~(page_size - 1);
			void *z = mmap((void *)pg, end - pg, PROT_READ,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
				       -1, 0);
			if (z == MAP_FAILED)
				break;
			atomic_fetch_add(&tab[i].faults, 1);
			errno = saved;
			return;
		}
	pass_on(sig, si, uc);
	errno = saved;
}

static void install(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	page_size = ps > 0 ? (uintptr_t)ps : 4096;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &prev) == 0)
		installed = 1;
}

int mapguard_add(const void *addr, size_t len, const char *path,
		 const struct stat *st, const void *owner)
{
	pthread_once(&once, install);
	if (!installed || !addr || !len)
		return -1;
	char *p = strdup(path);
	if (!p)
		return -1;
	pthread_mutex_lock(&tab_mu);
	for (int i = 0; i < MAPGUARD_MAX; i++) {
		Guard *g = &tab[i];
		if (atomic_load(&g->start))
			continue;
		free(g->path);
		g->path = p;
		atomic_store(&g->owner, owner);
		g->st = *st;
		atomic_store(&g->faults, 0);
		atomic_store(&g->len, len);
		atomic_store_explicit(&g->start, (uintptr_t)addr,
				      memory_order_release);
		pthread_mutex_unlock(&tab_mu);
		return 0;
	}
	pthread_mutex_unlock(&tab_mu);
	free(p);
	return -1;
}

void mapguard_remove(const void *addr)
{
	if (!addr)
		return;
	pthread_mutex_lock(&tab_mu);
	for (int i = 0; i < MAPGUARD_MAX; i++)
		if (atomic_load(&tab[i].start) == (uintptr_t)addr) {
			atomic_store(&tab[i].start, 0);
			/* path stays until the entry is reused: a racing
			 * mapguard_faulted() may still read it */
			atomic_store(&tab[i].owner, NULL);
			break;
		}
	pthread_mutex_unlock(&tab_mu);
}

int mapguard_faulted(const void *owner, char *why, size_t whylen)
{
	for (int i = 0; i < MAPGUARD_MAX; i++) {
		Guard *g = &tab[i];
		if (!atomic_load_explicit(&g->start, memory_order_acquire) ||
		    atomic_load(&g->owner) != owner ||
		    !atomic_load(&g->faults))
			continue;
		if (why && whylen)
			snprintf(why, whylen, "model file %s changed or was "
				 "truncated while loaded; reload it", g->path);
		return 1;
	}
	return 0;
}

int mapguard_changed(const void *owner, char *why, size_t whylen)
{
	char tmp[1];
	if (!why || !whylen) {
		why = tmp;
		whylen = sizeof tmp;
	}
	pthread_mutex_lock(&tab_mu); /* paths and stats stay put */
	int changed = 0;
	for (int i = 0; i < MAPGUARD_MAX && !changed; i++) {
		Guard *g = &tab[i];
		if (!atomic_load(&g->start) || atomic_load(&g->owner) != owner)
			continue;
		struct stat now;
		changed = 1;
		if (stat(g->path, &now) < 0)
			snprintf(why, whylen, "model file %s is gone since it "
				 "was loaded (%s)", g->path, strerror(errno));
		else if (now.st_dev != g->st.st_dev || now.st_ino != g->st.st_ino)
			snprintf(why, whylen, "model file %s was replaced since "
				 "it was loaded", g->path);
		else if (now.st_size != g->st.st_size)
			snprintf(why, whylen, "model file %s changed size since "
				 "it was loaded (%lld -> %lld bytes)", g->path,
				 (long long)g->st.st_size, (long long)now.st_size);
		else if (now.st_mtim.tv_sec != g->st.st_mtim.tv_sec ||
			 now.st_mtim.tv_nsec != g->st.st_mtim.tv_nsec)
			snprintf(why, whylen, "model file %s was modified since "
				 "it was loaded", g->path);
		else
			changed = 0;
	}
	pthread_mutex_unlock(&tab_mu);
	if (!changed)
		changed = mapguard_faulted(owner, why == tmp ? NULL : why, whylen);
	return changed;
}
