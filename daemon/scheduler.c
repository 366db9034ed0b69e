/*
 * scheduler.c - priority, then fair share between users, then FIFO. See
 * scheduler.h (not <sched.h>: hence the name).
 */
#include "scheduler.h"

#include <string.h>

static int count(const SchedReq *a, int n, uid_t u)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		k += a[i].uid == u;
	return k;
}

static int count_uid(const uid_t *a, int n, uid_t u)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		k += a[i] == u;
	return k;
}

/* sched_pick over wait entries not yet taken (taken[i] == 0), counting the
 * uids in extra (n_extra of them) as running too. */
static int pick(const SchedReq *wait, int n_wait, const char *taken,
		const SchedReq *run, int n_run, const uid_t *extra,
		int n_extra)
{
	int best = -1, best_load = 0;
	for (int i = 0; i < n_wait; i++) {
		if (taken && taken[i])
			continue;
		/* the first waiting request of its user at this priority
		 * stands for it: arrival order breaks ties between users */
		int first = 1;
		for (int j = 0; j < i && first; j++)
			if (wait[j].uid == wait[i].uid &&
			    wait[j].prio == wait[i].prio && !(taken && taken[j]))
				first = 0;
		if (!first)
			continue;
		int l = count(run, n_run, wait[i].uid) +
			count_uid(extra, n_extra, wait[i].uid);
		if (best < 0 || wait[i].prio > wait[best].prio ||
		    (wait[i].prio == wait[best].prio && l < best_load)) {
			best = i;
			best_load = l;
		}
	}
	return best;
}

int sched_pick(const SchedReq *wait, int n_wait, const SchedReq *run,
	       int n_run)
{
	return pick(wait, n_wait, NULL, run, n_run, NULL, 0);
}

void sched_positions(const SchedReq *wait, int n_wait, const SchedReq *run,
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
		extra[k] = wait[i].uid;
		pos[i] = k;
	}
}

int sched_victim(const SchedReq *wait, int n_wait, const SchedReq *run,
		 int n_run, int cap)
{
	int i = sched_pick(wait, n_wait, run, n_run);
	if (i < 0 || cap <= 0 || n_run <= 0)
		return -1;
	int prio = wait[i].prio;
	/* a lower priority gives way first: the youngest of the lowest */
	int low = -1;
	for (int k = 0; k < n_run; k++)
		if (run[k].prio < prio &&
		    (low < 0 || run[k].prio <= run[low].prio))
			low = k;
	if (low >= 0)
		return low;
	/* users with work: running or waiting */
	int users = 0;
	for (int k = 0; k < n_run + n_wait; k++) {
		uid_t u = k < n_run ? run[k].uid : wait[k - n_run].uid;
		int seen = 0;
		for (int j = 0; j < k && !seen; j++)
			seen = (j < n_run ? run[j].uid : wait[j - n_run].uid) == u;
		users += !seen;
	}
	int share = cap / users;
	if (share < 1)
		share = 1;
	if (count(run, n_run, wait[i].uid) >= share)
		return -1; /* the waiting user has its share already */
	/* the user furthest over its share gives up its youngest request of
	 * a priority not above the pick's */
	int worst = -1, worst_n = share;
	for (int k = 0; k < n_run; k++) {
		int c = count(run, n_run, run[k].uid);
		if (c > worst_n) {
			worst = k;
			worst_n = c;
		}
	}
	if (worst < 0)
		return -1;
	for (int k = n_run - 1; k >= 0; k--)
		if (run[k].uid == run[worst].uid && run[k].prio <= prio)
			return k;
	return -1;
}
