/*
 * scheduler.c - fair share between users, then FIFO. See scheduler.h (not <sched.h>: hence the name).
 */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

static int count(const uid_t *a, int n, uid_t u)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		k += a[i] == u;
	return k;
}

/* Running count of u: the running requests plus those already chosen
 * (extra, a list of uids of length n_extra). */
static int load_of(uid_t u, const uid_t *run, int n_run, const uid_t *extra,
		   int n_extra)
{
	return count(run, n_run, u) + count(extra, n_extra, u);
}

/* sched_pick over wait entries not yet taken (taken[i] == 0), counting the
 * uids in extra as running too. */
static int pick(const uid_t *wait, int n_wait, const char *taken,
		const uid_t *run, int n_run, const uid_t *extra, int n_extra)
{
	int best = -1, best_load = 0;
	for (int i = 0; i < n_wait; i++) {
		if (taken && taken[i])
			continue;
		/* the first waiting request of its user stands for it:
		 * arrival order breaks ties between users */
		int first = 1;
		for (int j = 0; j < i && first; j++)
			if (wait[j] == wait[i] && !(taken && taken[j]))
				first = 0;
		if (!first)
			continue;
		int l = load_of(wait[i], run, n_run, extra, n_extra);
		if (best < 0 || l < best_load) {
			best = i;
			best_load = l;
		}
	}
	return best;
}

int sched_pick(const uid_t *wait, int n_wait, const uid_t *run, int n_run)
{
	return pick(wait, n_wait, NULL, run, n_run, NULL, 0);
}

void sched_positions(const uid_t *wait, int n_wait, const uid_t *run,
		     int n_run, int *pos)
{
	if (n_wait > SCHED_MAX)
		n_wait = SCHED_MAX;
	char taken[SCHED_MAX];
	uid_t extra[SCHED_MAX];
	memset(taken, 0, (size_t)n_wait);
	for (int k = 0; k < n_wait; k++) {
		int i = pick(wait, n_wait, taken, run, n_run, extra, k);
		if (i < 0)
			break;
		taken[i] = 1;
		extra[k] = wait[i];
		pos[i] = k;
	}
}

uid_t sched_victim(const uid_t *wait, int n_wait, const uid_t *run,
		   int n_run, int cap)
{
	int i = sched_pick(wait, n_wait, run, n_run);
	if (i < 0 || cap <= 0)
		return (uid_t)-1;
	/* users with work: running or waiting */
	int users = 0;
	for (int k = 0; k < n_run + n_wait; k++) {
		uid_t u = k < n_run ? run[k] : wait[k - n_run];
		int seen = 0;
		for (int j = 0; j < k && !seen; j++)
			seen = (j < n_run ? run[j] : wait[j - n_run]) == u;
		users += !seen;
	}
	int share = cap / users;
	if (share < 1)
		share = 1;
	if (count(run, n_run, wait[i]) >= share)
		return (uid_t)-1; /* the waiting user has its share already */
	/* the user furthest over its share gives one up */
	uid_t worst = (uid_t)-1;
	int worst_n = share;
	for (int k = 0; k < n_run; k++) {
		int c = count(run, n_run, run[k]);
		if (c > worst_n) {
			worst = run[k];
			worst_n = c;
		}
	}
	return worst;
}
