/*
 * check_config.c - inferd's options file: options from it, command-line
 * flags overriding it, the default lookup through $XDG_CONFIG_HOME,
 * errors naming file and line, and every option of --help being
 * accepted from a file.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_util.h"
#include "infer.h"

#define PROMPT "Once upon a time"

/* Run inferd with argv (NULL-terminated, argv[0] omitted) and env
 * XDG_CONFIG_HOME=xdg (NULL: unset), stderr to d->log. */
static pid_t spawn(TDaemon *d, const char *xdg, const char *const *args)
{
	const char *argv[32];
	int n = 0;
	argv[n++] = test_build("inferd");
	for (int i = 0; args[i] && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0)
			dup2(fd, 2);
		if (xdg)
			setenv("XDG_CONFIG_HOME", xdg, 1);
		else
			unsetenv("XDG_CONFIG_HOME");
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	return pid;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

/* A config with socket, db, one model c2 and max-tokens 7. */
static void base_config(const TDaemon *d, const char *path, const char *extra)
{
	char text[8192];
	snprintf(text, sizeof text,
		 "# test config\n\n  socket = %s\ndb=%s\n"
		 "model = c2=%s\t\nthreads = 1\nmax-tokens = 7\nlog-prompts = true\n%s",
		 d->sock, d->db, test_data("models/tiny-llama2"), extra);
	write_file(path, text);
}

/* Greedy generate with the daemon's default max_tokens: tokens made. */
static int default_len(const TDaemon *d, const char *model)
{
	infer_client *c = NULL;
	ck_assert_int_eq(infer_connect(&c, d->sock, NULL, 0), 0);
	infer_gen_params p;
	infer_gen_params_init(&p);
	p.model = model;
	p.prompt = PROMPT;
	p.temperature = 0;
	p.ignore_eos = 1;
	infer_gen_result res;
	int rc = infer_generate(c, &p, NULL, NULL, &res);
	infer_close(c);
	return rc < 0 ? rc : res.gen_tokens;
}

static int has_model(const TDaemon *d, const char *name)
{
	infer_client *c = NULL;
	ck_assert_int_eq(infer_connect(&c, d->sock, NULL, 0), 0);
	char *json;
	ck_assert_int_eq(infer_models(c, &json), 0);
	char key[128];
	snprintf(key, sizeof key, "\"name\":\"%s\"", name);
	int yes = strstr(json, key) != NULL;
	free(json);
	infer_close(c);
	return yes;
}

static int start(TDaemon *d, const char *xdg, const char *const *args)
{
	d->pid = spawn(d, xdg, args);
	if (d->pid < 0 || t_wait_ready(d->sock, d->pid, 20) < 0) {
		d->pid = 0;
		return -1;
	}
	return 0;
}

START_TEST(test_config_file_and_overrides)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char conf[160];
	snprintf(conf, sizeof conf, "%s/inferd.conf", d.dir);
	base_config(&d, conf, "");
	/* everything from the file */
	const char *a1[] = { "--config", conf, NULL };
	ck_assert_int_eq(start(&d, NULL, a1), 0);
	ck_assert(has_model(&d, "c2"));
	ck_assert_int_eq(default_len(&d, "c2"), 7);
	ck_assert_int_eq(t_stop(&d), 0);
	/* a flag overrides the file; --model replaces the file's models */
	char m[4200];
	snprintf(m, sizeof m, "l3=%s", test_data("models/tiny-llama3"));
	const char *a2[] = { "--config", conf, "--max-tokens", "3", "--model", m, NULL };
	ck_assert_int_eq(start(&d, NULL, a2), 0);
	ck_assert(has_model(&d, "l3"));
	ck_assert(!has_model(&d, "c2"));
	ck_assert_int_eq(default_len(&d, "l3"), 3);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_config_default_path)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char dir[160], conf[200];
	snprintf(dir, sizeof dir, "%s/xdg/inferd", d.dir);
	char cmd[256];
	snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(conf, sizeof conf, "%s/inferd.conf", dir);
	base_config(&d, conf, "max-tokens = 5\n"); /* the later line wins */
	char xdg[160];
	snprintf(xdg, sizeof xdg, "%s/xdg", d.dir);
	const char *a1[] = { NULL };
	ck_assert_int_eq(start(&d, xdg, a1), 0);
	ck_assert_int_eq(default_len(&d, "c2"), 5);
	ck_assert_int_eq(t_stop(&d), 0);
	/* --no-config ignores it: no socket option, so it would not come up
	 * on d.sock; give the socket on the command line */
	char m[4200];
	snprintf(m, sizeof m, "c2=%s", test_data("models/tiny-llama2"));
	const char *a2[] = { "--no-config", "--socket", d.sock, "--db", d.db,
			     "--model", m, "--threads", "1", NULL };
	ck_assert_int_eq(start(&d, xdg, a2), 0);
	ck_assert_int_eq(default_len(&d, "c2"), 256); /* the built-in default */
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* Exit status and stderr of inferd with a config of text. */
static int run_bad(TDaemon *d, const char *text, char *log, size_t cap)
{
	char conf[160];
	snprintf(conf, sizeof conf, "%s/bad.conf", d->dir);
	write_file(conf, text);
	const char *a[] = { "--config", conf, NULL };
	pid_t pid = spawn(d, NULL, a);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	FILE *f = fopen(d->log, "r");
	size_t n = f ? fread(log, 1, cap - 1, f) : 0;
	log[n] = 0;
	if (f)
		fclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_config_errors)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char log[4096];
	ck_assert_int_eq(run_bad(&d, "# ok\nthreads = 1\nbogus = 3\n", log, sizeof log), 2);
	ck_assert_msg(strstr(log, "bad.conf:3") && strstr(log, "bogus"), "%s", log);
	ck_assert_int_eq(run_bad(&d, "max-tokens = many\n", log, sizeof log), 2);
	ck_assert_msg(strstr(log, "--max-tokens wants an integer") && strstr(log, "bad.conf:1"), "%s", log);
	ck_assert_int_eq(run_bad(&d, "\nthreads\n", log, sizeof log), 2);
	ck_assert_msg(strstr(log, "bad.conf:2: want 'name = value'"), "%s", log);
	ck_assert_int_eq(run_bad(&d, "log-prompts = maybe\n", log, sizeof log), 2);
	ck_assert_msg(strstr(log, "log-prompts wants true or false"), "%s", log);
	ck_assert_int_eq(run_bad(&d, "config = /x\n", log, sizeof log), 2);
	ck_assert_msg(strstr(log, "is for the command line"), "%s", log);
	/* an explicit --config that does not exist is an error */
	const char *a[] = { "--config", "/nonexistent/inferd.conf", NULL };
	pid_t pid = spawn(&d, NULL, a);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
	t_cleanup(&d);
}
END_TEST

/* Every option --help lists (but the command-line-only ones) is a valid
 * config name: a file setting each to a valid value starts the daemon. */
START_TEST(test_config_every_option)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char conf[160], models[160], logf[160];
	snprintf(conf, sizeof conf, "%s/all.conf", d.dir);
	snprintf(models, sizeof models, "%s/models", d.dir);
	snprintf(logf, sizeof logf, "%s/daemon.log", d.dir);
	ck_assert_int_eq(mkdir(models, 0700), 0);
	char text[16384];
	snprintf(text, sizeof text,
		 "socket = %s\nsocket-mode = 0600\nmodel = c2=%s\nmodels-dir = %s\n"
		 "db = %s\nlog-prompts = false\nlog-file = %s\nmem-budget = 1G\n"
		 "keep-alive = 60\nshutdown-timeout = 5\nexit-idle = 0\nmax-queue = 4\nmax-batch = 4\n"
		 "batch-tokens = 64\n"
		 "max-conn-requests = 4\nmax-uid-requests = 8\nmax-connections = 16\n"
		 "max-tokens = 6\nbackend = cpu\nthreads = 1\nctx = 64\n",
		 d.sock, test_data("models/tiny-llama2"), models, d.db, logf);
	write_file(conf, text);
	/* the names used above are exactly --help's options */
	char cmd[512];
	snprintf(cmd, sizeof cmd, "'%s' --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u",
		 test_build("inferd"));
	FILE *p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	char opt[64];
	while (fgets(opt, sizeof opt, p)) {
		opt[strcspn(opt, "\n")] = 0;
		if (!strcmp(opt, "--help") || !strcmp(opt, "--version") ||
		    !strcmp(opt, "--config") || !strcmp(opt, "--no-config") ||
		    !strcmp(opt, "--socket-group")) /* needs a real group */
			continue;
		char key[80];
		snprintf(key, sizeof key, "\n%s = ", opt + 2);
		ck_assert_msg(strstr(text, key) || !strncmp(text, key + 1, strlen(key) - 1),
			      "option %s not in the test config", opt);
	}
	pclose(p);
	const char *a[] = { "--config", conf, NULL };
	ck_assert_int_eq(start(&d, NULL, a), 0);
	ck_assert_int_eq(default_len(&d, "c2"), 6);
	ck_assert_int_eq(t_stop(&d), 0);
	/* log-file took effect: the daemon wrote there, not to stderr */
	FILE *f = fopen(logf, "r");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	t_cleanup(&d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_config_file_and_overrides);
	tcase_add_test(tc, test_config_default_path);
	tcase_add_test(tc, test_config_errors);
	tcase_add_test(tc, test_config_every_option);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
