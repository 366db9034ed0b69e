/*
 * check_activation.c - inferd under systemd's own socket-activation
 * helper (systemd-socket-activate, from the systemd package): it binds
 * the socket, waits for the first client, then execs inferd with
 * LISTEN_FDS=1 on fd 3. The client's generate must be served (golden
 * tokens) and --exit-idle must end the daemon once it leaves. Skipped
 * where the helper is missing; check_daemon covers the same path with
 * LISTEN_FDS set by the test itself.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_util.h"
#include "infer.h"

#define PROMPT "Once upon a time"

static const char *helper(void)
{
	static const char *const paths[] = { "/usr/bin/systemd-socket-activate",
		"/lib/systemd/systemd-socket-activate", "/usr/lib/systemd/systemd-socket-activate" };
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

/* Token ids collected by the callback. */
typedef struct Ids {
	int32_t v[64]; /* ids */
	int n;         /* how many */
} Ids;

static int on_tok(void *ud, int32_t tok, const char *text, size_t len)
{
	Ids *ids = ud;
	if (ids->n < 64)
		ids->v[ids->n++] = tok;
	return 0;
}

START_TEST(test_systemd_socket_activate)
{
	const char *h = helper();
	if (!h)
		TEST_SKIP("no systemd-socket-activate");
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char m[4200];
	snprintf(m, sizeof m, "l2=%s", test_data("models/tiny-llama2"));
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(d.log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0)
			dup2(fd, 2);
		execl(h, h, "-l", d.sock, test_build("inferd"), "--no-config",
		      "--exit-idle", "1", "--db", d.db, "--model", m, "--threads", "1",
		      (char *)NULL);
		_exit(127);
	}
	ck_assert(pid > 0);
	/* the helper binds the socket; inferd starts only on the connect */
	double end = t_now() + 10;
	while (access(d.sock, F_OK) != 0 && t_now() < end)
		usleep(10000);
	ck_assert_msg(access(d.sock, F_OK) == 0, "helper made no socket");
	infer_client *c = NULL;
	char err[256];
	ck_assert_msg(infer_connect(&c, d.sock, err, sizeof err) == 0, "%s", err);
	infer_gen_params p;
	infer_gen_params_init(&p);
	p.model = "l2";
	p.prompt = PROMPT;
	p.temperature = 0;
	p.max_tokens = 8;
	p.ignore_eos = 1;
	static Ids ids;
	ck_assert_int_eq(infer_generate(c, &p, on_tok, &ids, NULL), 0);
	/* tiny-llama2 golden.json greedy continuation (HF transformers) */
	static const int32_t gold[8] = { 18619, 20653, 2343, 21835, 8638, 25648, 9697, 13610 };
	ck_assert_int_eq(ids.n, 8);
	ck_assert(!memcmp(ids.v, gold, sizeof gold));
	double t0 = t_now();
	infer_close(c);
	int st = 0;
	while (waitpid(pid, &st, WNOHANG) == 0 && t_now() - t0 < 10)
		usleep(20000);
	double dt = t_now() - t0;
	ck_assert_msg(dt < 5, "no idle exit after %.1f s", dt);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	char log[8192];
	FILE *f = fopen(d.log, "r");
	size_t n = f ? fread(log, 1, sizeof log - 1, f) : 0;
	log[n] = 0;
	if (f)
		fclose(f);
	ck_assert_msg(strstr(log, "passed by systemd") && strstr(log, "idle: draining"),
		      "%s", log);
	t_cleanup(&d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("activation");
	TCase *tc = tcase_create("activation");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_systemd_socket_activate);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
