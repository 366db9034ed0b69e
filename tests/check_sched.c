/*
 * check_sched.c - sharing a model between users (issue 6): the fair-share
 * policy (daemon/scheduler.c) on its own, then inferd with continuous
 * batching: uid A (root) submits 32 requests, uid B (nobody, a forked
 * child that setuid()s) one; B's time to first token stays within 2x of
 * its time on an idle daemon; `infer-client ps` and the status JSON show
 * the running and queued requests per uid and model, and waiting clients
 * get their queue positions as events; priorities, bounded per uid.
 */
#include <check.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon_util.h"
#include "infer.h"
#include "scheduler.h"
#include "testutil.h"

/* Requests of uids u[] at priority 0. */
static void reqs(SchedReq *r, const uid_t *u, int n)
{
	for (int i = 0; i < n; i++)
		r[i] = (SchedReq){ u[i], 0 };
}

START_TEST(policy)
{
	/* running: uid 1 x3, uid 2 x1; waiting in arrival order */
	SchedReq run[4], wait[5];
	reqs(run, (uid_t[]){1, 1, 1, 2}, 4);
	reqs(wait, (uid_t[]){1, 1, 2, 3, 2}, 5);
	/* uid 3 runs nothing: it goes first, though it came fourth */
	ck_assert_int_eq(sched_pick(wait, 5, run, 4), 3);
	int pos[5];
	sched_positions(wait, 5, run, 4, pos);
	/* 3 (0 running), then 2 (1), then 2 again vs 1: 2 has 2 running,
	 * 1 has 3 -> 2's second; then 1, 1 in arrival order */
	ck_assert_int_eq(pos[3], 0);
	ck_assert_int_eq(pos[2], 1);
	ck_assert_int_eq(pos[4], 2);
	ck_assert_int_eq(pos[0], 3);
	ck_assert_int_eq(pos[1], 4);
	/* ties between users: the one whose request came first */
	SchedReq w2[2];
	reqs(w2, (uid_t[]){5, 4}, 2);
	ck_assert_int_eq(sched_pick(w2, 2, NULL, 0), 0);
	ck_assert_int_eq(sched_pick(w2, 0, NULL, 0), -1);
	/* a full batch of 4, all uid 1; uid 2 waits: 1's youngest gives way */
	SchedReq full[4], w3[2], even[4], w4[1];
	reqs(full, (uid_t[]){1, 1, 1, 1}, 4);
	reqs(w3, (uid_t[]){1, 2}, 2);
	ck_assert_int_eq(sched_victim(w3, 2, full, 4, 4), 3);
	/* at an even share nobody gives up anything */
	reqs(even, (uid_t[]){1, 1, 2, 2}, 4);
	ck_assert_int_eq(sched_victim(w3, 2, even, 4, 4), -1);
	/* only uid 1 waits: it does not take from itself */
	reqs(w4, (uid_t[]){1}, 1);
	ck_assert_int_eq(sched_victim(w4, 1, full, 4, 4), -1);
	/* priority first: uid 1's priority-5 request goes before uid 3 */
	wait[1].prio = 5;
	ck_assert_int_eq(sched_pick(wait, 5, run, 4), 1);
	/* and takes the place of the youngest lowest-priority one */
	even[1].prio = -2;
	even[3].prio = -2;
	w4[0].prio = 1;
	ck_assert_int_eq(sched_victim(w4, 1, even, 4, 4), 3);
	/* a user over its share keeps a request of higher priority */
	full[3].prio = 3;
	ck_assert_int_eq(sched_victim(w3, 2, full, 4, 4), 2);
}
END_TEST

/* Send a generate of prompt (max_tokens new tokens) on fd as request id. */
static void send_gen(int fd, int id, const char *prompt, int max_tokens)
{
	uint8_t b[8192];
	char ids[16], mt[16], pr[4200];
	snprintf(ids, sizeof ids, "i:%d", id);
	snprintf(mt, sizeof mt, "i:%d", max_tokens);
	snprintf(pr, sizeof pr, "s:%s", prompt);
	size_t n = t_pack(b, sizeof b, 6, "op", "s:generate", "id", ids,
			  "model", "s:l2", "prompt", pr, "max_tokens", mt,
			  "ignore_eos", "b:true");
	ck_assert(n > 0);
	ck_assert_int_eq(t_send(fd, b, n), 0);
}

/* B's long prompt: its prefill dominates its time to first token. */
static char long_prompt[6144]; /* 144 x 36 bytes, NUL */

static void make_prompt(void)
{
	long_prompt[0] = 0;
	for (int i = 0; i < 144; i++) /* ~1300 tokens: within --ctx 2048 */
		strcat(long_prompt, "Once upon a time there was a little ");
}

/* Seconds from sending a one-token generate to its token event, over a
 * fresh connection; -1 on error. */
static int serial; /* numbers the prompts; forked children inherit it */

static double ttft_once(const char *sock)
{
	int fd = t_connect(sock);
	if (fd < 0)
		return -1;
	TReply r;
	char s[64];
	/* a different first word each time: no prefix to reuse, every run
	 * computes its whole prompt */
	char prompt[sizeof long_prompt + 32];
	snprintf(prompt, sizeof prompt, "%d %s", 1000 + serial++, long_prompt);
	double t0 = t_now(), t1 = -1;
	send_gen(fd, 1, prompt, 1);
	for (;;) {
		if (t_recv(fd, &r, 60) != 0)
			break;
		t_str(&r, "type", s, sizeof s);
		msgpack_zone_destroy(&r.zone);
		if (!strcmp(s, "token") && t1 < 0)
			t1 = t_now() - t0;
		if (!strcmp(s, "done") || !strcmp(s, "error"))
			break;
	}
	close(fd);
	return t1;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* As uid nobody, in a child: the median of n TTFTs. */
static double ttft_as_nobody(const char *sock, int n)
{
	int p[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
	serial += 100; /* this child's prompts differ from the last one's */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(p[0]);
		double v[16], med = -1;
		if (setgroups(0, NULL) == 0 && setgid(65534) == 0 &&
		    setuid(65534) == 0 && getuid() == 65534) {
			int k = 0;
			for (int i = 0; i < n && i < 16; i++)
				if ((v[k] = ttft_once(sock)) >= 0)
					k++;
			if (k == n) {
				qsort(v, (size_t)k, sizeof v[0], cmp_d);
				med = v[k / 2];
			}
		}
		ssize_t w = write(p[1], &med, sizeof med);
		_exit(w == sizeof med ? 0 : 1);
	}
	close(p[1]);
	double med = -1;
	ck_assert_int_eq(t_read_n(p[0], &med, sizeof med, 300), 0);
	close(p[0]);
	int st;
	waitpid(pid, &st, 0);
	return med;
}

/* Count "running"/"queued" entries of uid in the status JSON. */
static void count_reqs(const char *js, int uid, int *run, int *queued)
{
	*run = *queued = 0;
	char pat[64];
	snprintf(pat, sizeof pat, "\"uid\":%d,", uid);
	for (const char *p = strstr(js, pat); p; p = strstr(p + 1, pat)) {
		const char *st = strstr(p, "\"state\":\"");
		if (!st)
			break;
		st += 9;
		*run += !strncmp(st, "running", 7);
		*queued += !strncmp(st, "queued", 6);
	}
}

START_TEST(fair_share_and_ps)
{
	if (getuid() != 0)
		TEST_SKIP("needs root to run a client as another uid");
	make_prompt();
	TDaemon d;
	/* one compute thread: the other core is left to the event loop and
	 * the clients, so B's figures measure the scheduler's order rather
	 * than CPU contention between the worker and the test's own
	 * processes on a 2-core machine */
	const char *args[] = {"--socket-mode", "0666", "--ctx", "2048",
			      "--max-batch", "16", "--threads", "1", NULL};
	ck_assert(t_prepare(&d) == 0);
	ck_assert_int_eq(chmod(d.dir, 0755), 0); /* nobody reaches the socket */
	ck_assert(t_launch(&d, args) == 0);

	/* warm up: load the model, fault in the pages */
	ck_assert(ttft_once(d.sock) > 0);
	double idle = ttft_as_nobody(d.sock, 9);
	ck_assert_msg(idle > 0, "client as nobody failed");

	/* uid A: 32 long generates over 4 connections */
	int fa[4];
	for (int c = 0; c < 4; c++) {
		fa[c] = t_connect(d.sock);
		ck_assert_int_ge(fa[c], 0);
		for (int i = 1; i <= 8; i++)
			send_gen(fa[c], i, "Once upon a time", 400);
	}
	/* wait until A's batch runs and the rest waits */
	infer_client *ic;
	ck_assert_int_eq(infer_connect(&ic, d.sock, NULL, 0), 0);
	int run = 0, queued = 0;
	double end = t_now() + 60;
	char *js = NULL;
	while (t_now() < end) {
		free(js);
		ck_assert_int_eq(infer_status(ic, &js), 0);
		count_reqs(js, 0, &run, &queued);
		/* the positions are told once the worker saw them all */
		if (run == 16 && queued == 16 &&
		    strstr(js, "\"model\":\"l2\",\"state\":\"queued\","
			       "\"position\":1,") &&
		    strstr(js, "\"model\":\"l2\",\"state\":\"queued\","
			       "\"position\":16,"))
			break;
		usleep(20000);
	}
	ck_assert_msg(t_now() < end, "A: %d running, %d queued\n%s", run,
		      queued, js);
	free(js);

	/* infer-client ps: a table of them */
	char cmd[600], line[256];
	snprintf(cmd, sizeof cmd, "%s --socket %s ps", test_build("infer-client"),
		 d.sock);
	FILE *ps = popen(cmd, "r");
	ck_assert_ptr_nonnull(ps);
	int prun = 0, pq = 0, header = 0;
	while (fgets(line, sizeof line, ps)) {
		char model[32], state[16];
		int uid;
		header |= strstr(line, "STATE") && strstr(line, "POS") &&
			  strstr(line, "UID");
		if (sscanf(line, "%31s %d %*d %*d %15s", model, &uid, state) == 3 &&
		    !strcmp(model, "l2") && uid == 0) {
			prun += !strcmp(state, "running");
			pq += !strcmp(state, "queued");
		}
	}
	ck_assert_int_eq(pclose(ps), 0);
	ck_assert(header);
	ck_assert_int_ge(prun, 14); /* a few may finish meanwhile */
	ck_assert_int_ge(pq, 10);

	/* uid B, while A's 32 run and wait */
	double busy = ttft_as_nobody(d.sock, 9);
	printf("fairness: B's time to first token idle %.1f ms, with A's 32 "
	       "requests %.1f ms (%.2fx)\n", idle * 1e3, busy * 1e3,
	       busy / idle);
	ck_assert_msg(busy > 0 && busy <= 2 * idle,
		      "B's TTFT %.1f ms vs %.1f ms idle", busy * 1e3,
		      idle * 1e3);

	/* A's waiting requests were told their positions */
	int told = 0;
	for (int c = 0; c < 4; c++) {
		TReply r;
		char s[32];
		double stop = t_now() + 5;
		while (t_now() < stop && t_recv(fa[c], &r, 5) == 0) {
			t_str(&r, "type", s, sizeof s);
			if (!strcmp(s, "queued") && t_int(&r, "position") >= 1)
				told++;
			msgpack_zone_destroy(&r.zone);
			if (told)
				break;
		}
		close(fa[c]); /* cancels A's requests */
	}
	ck_assert_int_gt(told, 0);
	infer_close(ic);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* Send a generate with a priority on fd. */
static void send_prio(int fd, int id, int max_tokens, int prio)
{
	uint8_t b[512];
	char ids[16], mt[16], pr[16];
	snprintf(ids, sizeof ids, "i:%d", id);
	snprintf(mt, sizeof mt, "i:%d", max_tokens);
	snprintf(pr, sizeof pr, "i:%d", prio);
	size_t n = t_pack(b, sizeof b, 7, "op", "s:generate", "id", ids,
			  "model", "s:l2", "prompt", "s:Once upon a time",
			  "max_tokens", mt, "ignore_eos", "b:true", "priority",
			  pr);
	ck_assert(n > 0);
	ck_assert_int_eq(t_send(fd, b, n), 0);
}

/* With one place in the batch: root's priority-5 request takes the place
 * of a running priority-0 one (which resumes after it); a user who asks
 * for priority 5 gets 0. */
START_TEST(priority)
{
	if (getuid() != 0)
		TEST_SKIP("needs root to run a client as another uid");
	TDaemon d;
	const char *args[] = {"--socket-mode", "0666", "--max-batch", "1",
			      NULL};
	ck_assert(t_prepare(&d) == 0);
	ck_assert_int_eq(chmod(d.dir, 0755), 0);
	ck_assert(t_launch(&d, args) == 0);
	int fd = t_connect(d.sock);
	ck_assert_int_ge(fd, 0);
	send_prio(fd, 1, 400, 0);
	TReply r;
	char s[32];
	ck_assert_int_eq(t_recv_event(fd, &r, 60), 0); /* it runs */
	msgpack_zone_destroy(&r.zone);
	send_prio(fd, 2, 3, 5);
	int done1 = 0, done2 = 0;
	double end = t_now() + 120;
	while (!done2 && t_now() < end) {
		ck_assert_int_eq(t_recv(fd, &r, 60), 0);
		long long id = t_int(&r, "id");
		t_str(&r, "type", s, sizeof s);
		if (!strcmp(s, "done") || !strcmp(s, "error")) {
			ck_assert_str_eq(s, "done");
			done1 |= id == 1;
			done2 |= id == 2;
		}
		msgpack_zone_destroy(&r.zone);
	}
	ck_assert_msg(done2 && !done1, "the priority-5 request did not go "
		      "first");
	/* nobody asks for 5 and gets 0 (status shows it while it runs or
	 * waits behind request 1) */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(1);
		int f = t_connect(d.sock);
		if (f < 0)
			_exit(1);
		send_prio(f, 1, 400, 5);
		sleep(30); /* until the parent has looked */
		_exit(0);
	}
	infer_client *ic;
	ck_assert_int_eq(infer_connect(&ic, d.sock, NULL, 0), 0);
	char *js = NULL;
	const char *hit = NULL;
	end = t_now() + 30;
	while (!hit && t_now() < end) {
		free(js);
		ck_assert_int_eq(infer_status(ic, &js), 0);
		hit = strstr(js, "\"uid\":65534");
		if (!hit)
			usleep(20000);
	}
	ck_assert_msg(hit, "%s", js);
	/* the request's map: ..."priority":P,"uid":65534 */
	const char *pp = hit;
	while (pp > js && strncmp(pp, "\"priority\":", 11))
		pp--;
	ck_assert_int_eq(atoi(pp + 11), 0);
	free(js);
	infer_close(ic);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(fd);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("sched");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, policy);
	tcase_add_test(tc, fair_share_and_ps);
	tcase_add_test(tc, priority);
	suite_add_tcase(s, tc);
	SRunner *r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
