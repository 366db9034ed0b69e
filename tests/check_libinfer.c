/*
 * check_libinfer.c - libinfer's public API against a real inferd: the
 * non-blocking mode (infer_fd / infer_want_write / infer_process driving a
 * poll loop over several clients and requests), cancellation, errors and
 * version macros.
 */
#include <check.h>

#include "daemon_util.h"
#include "infer.h"

static const char *const PROMPT = "Once upon a time";

/* One asynchronous request's state. */
typedef struct Async {
	int32_t ids[8192];     /* tokens received */
	int n;                 /* how many */
	int done;              /* on_done ran */
	int status;            /* its status */
	infer_gen_result res;  /* its result */
	int stop_after;        /* > 0: ask to cancel from on_token */
} Async;

static int on_token(void *ud, int32_t token, const char *text, size_t len)
{
	Async *a = ud;
	if (a->n < 8192)
		a->ids[a->n++] = token;
	return a->stop_after > 0 && a->n >= a->stop_after;
}

static void on_done(void *ud, int status, const infer_gen_result *res)
{
	Async *a = ud;
	a->done = 1;
	a->status = status;
	a->res = *res;
}

/* Poll loop over clients until every Async is done (or timeout). */
static void drive(infer_client **cs, int nc, Async **as, int na, double secs)
{
	double end = t_now() + secs;
	for (;;) {
		int all = 1;
		for (int i = 0; i < na; i++)
			all &= as[i]->done;
		if (all || t_now() > end)
			return;
		struct pollfd pfd[8];
		for (int i = 0; i < nc; i++) {
			pfd[i].fd = infer_fd(cs[i]);
			pfd[i].events = POLLIN | (infer_want_write(cs[i]) ? POLLOUT : 0);
			pfd[i].revents = 0;
		}
		int n = poll(pfd, (nfds_t)nc, 1000);
		ck_assert_int_ge(n, 0);
		for (int i = 0; i < nc; i++)
			if (pfd[i].revents)
				ck_assert_int_ge(infer_process(cs[i]), 0);
	}
}

START_TEST(test_nonblocking_poll_loop)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	infer_client *c[2];
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(infer_connect(&c[i], d.sock, NULL, 0), 0);
	static Async a[3];
	memset(a, 0, sizeof a);
	infer_gen_params p;
	uint32_t id[3];
	/* client 0: two requests in flight on one connection (l2, l3);
	 * client 1: one on l2 */
	const char *models[3] = { "l2", "l3", "l2" };
	infer_client *owner[3] = { c[0], c[0], c[1] };
	for (int i = 0; i < 3; i++) {
		infer_gen_params_init(&p);
		p.model = models[i];
		p.prompt = PROMPT;
		p.temperature = 0;
		p.max_tokens = 20;
		p.ignore_eos = 1;
		ck_assert_int_eq(infer_generate_async(owner[i], &p, on_token, on_done,
						      &a[i], &id[i]), 0);
	}
	ck_assert(id[0] != id[1]);
	ck_assert_int_eq(infer_pending(c[0]), 2);
	ck_assert_int_eq(infer_pending(c[1]), 1);
	Async *as[3] = { &a[0], &a[1], &a[2] };
	drive(c, 2, as, 3, 120);
	int32_t g2[64], g3[64];
	ck_assert_int_ge(golden_greedy("tiny-llama2", g2, 64), 20);
	ck_assert_int_ge(golden_greedy("tiny-llama3", g3, 64), 20);
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(a[i].done && a[i].status == 0, "request %d: %d", i, a[i].status);
		ck_assert_str_eq(a[i].res.finish, "length");
		ck_assert_int_eq(a[i].res.gen_tokens, 20);
		ck_assert_int_eq(a[i].n, 20);
		const int32_t *gold = i == 1 ? g3 : g2;
		for (int k = 0; k < 20; k++)
			ck_assert_msg(a[i].ids[k] == gold[k], "request %d token %d", i, k);
	}
	ck_assert_int_eq(infer_pending(c[0]), 0);
	for (int i = 0; i < 2; i++)
		infer_close(c[i]);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_cancel)
{
	TDaemon d;
	const char *args[] = { "--ctx", "8192", NULL };
	ck_assert(t_start(&d, args) == 0);
	infer_client *c;
	ck_assert_int_eq(infer_connect(&c, d.sock, NULL, 0), 0);
	infer_gen_params p;
	infer_gen_params_init(&p);
	p.model = "l2";
	p.prompt = PROMPT;
	p.max_tokens = 8000;
	p.ignore_eos = 1;
	/* infer_cancel from the event loop */
	static Async a;
	memset(&a, 0, sizeof a);
	uint32_t id;
	ck_assert_int_eq(infer_generate_async(c, &p, on_token, on_done, &a, &id), 0);
	double end = t_now() + 60 * t_slow();
	while (a.n < 3 && t_now() < end) {
		struct pollfd pfd = { infer_fd(c), POLLIN, 0 };
		poll(&pfd, 1, 1000);
		ck_assert_int_ge(infer_process(c), 0);
	}
	ck_assert_int_ge(a.n, 3);
	/* a second request waits behind the first: cancelled while queued it
	 * ends at once with finish "cancel" and no tokens */
	static Async q;
	memset(&q, 0, sizeof q);
	uint32_t qid;
	ck_assert_int_eq(infer_generate_async(c, &p, on_token, on_done, &q, &qid), 0);
	ck_assert_int_eq(infer_cancel(c, qid), 0);
	ck_assert_int_eq(infer_cancel(c, id), 0);
	Async *as[2] = { &a, &q };
	drive(&c, 1, as, 2, 60);
	ck_assert(q.done);
	ck_assert_int_eq(q.status, 0);
	ck_assert_str_eq(q.res.finish, "cancel");
	ck_assert_int_eq(q.res.gen_tokens, 0);
	ck_assert_int_eq(q.n, 0);
	ck_assert(a.done);
	ck_assert_int_eq(a.status, 0);
	ck_assert_str_eq(a.res.finish, "cancel");
	ck_assert_int_lt(a.res.gen_tokens, 8000);
	/* the token callback asks to stop (blocking call) */
	static Async b;
	memset(&b, 0, sizeof b);
	b.stop_after = 5;
	infer_gen_result res;
	ck_assert_int_eq(infer_generate(c, &p, on_token, &b, &res), 0);
	ck_assert_str_eq(res.finish, "cancel");
	ck_assert_int_lt(res.gen_tokens, 8000);
	ck_assert_int_eq(b.n, 5); /* no tokens after the callback said stop */
	/* the connection goes on */
	ck_assert_int_eq(infer_ping(c), 0);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_errors_and_version)
{
	char v[32];
	snprintf(v, sizeof v, "%d.%d.%d", INFER_VERSION_MAJOR, INFER_VERSION_MINOR,
		 INFER_VERSION_PATCH);
	ck_assert_str_eq(infer_version(), v);
	/* every code has its own text */
	static const int codes[] = {
#define X(name, value, text) name,
		INFER_ERRORS(X)
#undef X
	};
	size_t n = sizeof codes / sizeof codes[0];
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_lt(codes[i], 0);
		ck_assert_str_ne(infer_strerror(codes[i]), "unknown error");
		for (size_t j = 0; j < i; j++)
			ck_assert_str_ne(infer_strerror(codes[i]), infer_strerror(codes[j]));
	}
	ck_assert_str_eq(infer_strerror(12345), "unknown error");
	infer_client *c = (infer_client *)1;
	char err[256];
	ck_assert_int_eq(infer_connect(&c, "/nonexistent/inferd.sock", err, sizeof err),
			 INFER_ECONNECT);
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(err, "/nonexistent/inferd.sock") != NULL, "%s", err);
	/* the default path is resolved as the daemon does */
	setenv("XDG_RUNTIME_DIR", "/nonexistent-run", 1);
	ck_assert_int_eq(infer_connect(&c, NULL, err, sizeof err), INFER_ECONNECT);
	ck_assert_msg(strstr(err, "/nonexistent-run/inferd.sock") != NULL, "%s", err);
	char def[128];
	ck_assert_int_eq(infer_default_socket(def, sizeof def), 0);
	ck_assert_str_eq(def, "/nonexistent-run/inferd.sock");
	/* misuse is refused without touching the daemon */
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	ck_assert_int_eq(infer_connect(&c, d.sock, NULL, 0), 0);
	infer_gen_params p;
	infer_gen_params_init(&p);
	ck_assert_int_eq(infer_generate(c, &p, NULL, NULL, NULL), INFER_EINVAL);
	p.model = "l2";
	ck_assert_int_eq(infer_generate(c, &p, NULL, NULL, NULL), INFER_EINVAL);
	p.prompt = "x";
	p.temperature = 5000; /* over the daemon's range: its message */
	ck_assert_int_eq(infer_generate(c, &p, NULL, NULL, NULL), INFER_EREQUEST);
	ck_assert_msg(strstr(infer_errmsg(c), "temperature") != NULL, "%s", infer_errmsg(c));
	ck_assert_int_eq(infer_unload(c, "missing"), INFER_ENOTFOUND);
	ck_assert_int_eq(infer_ping(c), 0);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("libinfer");
	TCase *tc = tcase_create("api");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_nonblocking_poll_loop);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_errors_and_version);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
