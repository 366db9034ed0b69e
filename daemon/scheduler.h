/*
 * scheduler.h - who runs next on a model: fair share between users, then
 * first come, first served.
 *
 * The model worker keeps its waiting requests in arrival order and the
 * requests it runs (in one batch) beside them; these functions only look
 * at their uids. Policy: the next request to start belongs to the user
 * with the fewest requests running (one user's 50 requests do not starve
 * another's one); among equals, the user whose oldest waiting request came
 * first; within a user, arrival order. When the batch is full and a user
 * waits while another runs more than an even share of the batch, the
 * worker suspends one of the latter's requests (it resumes later, from
 * the same state) to make room.
 */
#ifndef INFERD_SCHEDULER_H
#define INFERD_SCHEDULER_H

#include <sys/types.h>

/* Index into wait[0..n_wait) (arrival order) of the request to start
 * next, given the uids of the running requests; -1 when n_wait is 0. */
int sched_pick(const uid_t *wait, int n_wait, const uid_t *run, int n_run);

/* pos[i] = how many waiting requests start before wait[i] if nothing
 * finishes meanwhile (the queue position a client is told). n_wait at
 * most SCHED_MAX. */
#define SCHED_MAX 1024 /* most waiting requests sched_positions orders */
void sched_positions(const uid_t *wait, int n_wait, const uid_t *run,
		     int n_run, int *pos);

/* When the batch is full (cap requests running): the uid one of whose
 * running requests should be suspended so that wait[pick] can start, or
 * (uid_t)-1 when nobody runs more than their share. Share: cap divided
 * evenly among the users who run or wait. */
uid_t sched_victim(const uid_t *wait, int n_wait, const uid_t *run,
		   int n_run, int cap);

#endif
