/*
 * scheduler.h - who runs next on a model: priority, then fair share
 * between users, then first come, first served.
 *
 * The model worker keeps its waiting requests in arrival order and the
 * requests it runs (in one batch) beside them; these functions only look
 * at their uids and priorities. Policy: the next request to start is one
 * of the highest priority waiting; among those, of the user with the
 * fewest requests running (one user's 50 requests do not starve another's
 * one); among equal users, the one whose oldest waiting request came
 * first; within a user, arrival order. When the batch is full, a waiting
 * request takes the place of a running one (which the worker suspends; it
 * resumes later from the same state) of lower priority, or else of a user
 * running more than an even share of the batch while its own user runs
 * less.
 */
#ifndef INFERD_SCHEDULER_H
#define INFERD_SCHEDULER_H

#include <sys/types.h>

/* What the policy sees of a request. */
typedef struct SchedReq {
	uid_t uid; /* who asked */
	int prio;  /* priority: higher first */
} SchedReq;

/* Index into wait[0..n_wait) (arrival order) of the request to start
 * next, given the running requests; -1 when n_wait is 0. */
int sched_pick(const SchedReq *wait, int n_wait, const SchedReq *run,
	       int n_run);

/* pos[i] = how many waiting requests start before wait[i] if nothing
 * finishes meanwhile (a client is told pos + 1). n_wait at most
 * SCHED_MAX. */
#define SCHED_MAX 1024 /* most waiting requests sched_positions orders */
void sched_positions(const SchedReq *wait, int n_wait, const SchedReq *run,
		     int n_run, int *pos);

/* When the batch is full (cap requests running): the index into run of
 * the request to suspend so that the next pick can start, or -1 when it
 * should wait. Prefers the youngest of the lowest priority below the
 * pick's; else, when the pick's user runs less than an even share (cap
 * divided among the users who run or wait), the youngest request of the
 * user furthest over it, of a priority not above the pick's. */
int sched_victim(const SchedReq *wait, int n_wait, const SchedReq *run,
		 int n_run, int cap);

#endif
