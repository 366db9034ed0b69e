/*
 * check_python.c - runs the Python package's tests
 * (contrib/python/tests/test_inferd.py, python3 -m unittest) against an
 * inferd with the tiny models; skipped when python3 is missing.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "daemon_util.h"

#ifndef INFERD_SRCDIR
#define INFERD_SRCDIR "." /* the Makefile passes the source tree */
#endif

START_TEST(test_python_package)
{
	if (system("command -v python3 >/dev/null 2>&1") != 0)
		TEST_SKIP("no python3");
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	char cmd[8192];
	/* a SANITIZE=1 libinfer.so needs its runtimes preloaded into python
	 * (and python's own allocations are not ours to leak-check) */
	snprintf(cmd, sizeof cmd,
		 "L='%s'; if ldd \"$L\" | grep -q libasan; then "
		 "export LD_PRELOAD=\"$(ldd \"$L\" | awk '/libasan|libubsan/{print $3}' | tr '\\n' ' ')\" "
		 "ASAN_OPTIONS=detect_leaks=0; fi; "
		 "cd '%s/contrib/python' && PYTHONDONTWRITEBYTECODE=1 "
		 "PYTHONPATH=.:tests INFERD_SOCKET='%s' INFERD_TEST_DATA='%s' "
		 "INFER_LIB=\"$L\" python3 -m unittest -v test_inferd 2>&1",
		 test_build("libinfer.so"), INFERD_SRCDIR, d.sock, test_data(""));
	FILE *p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	static char out[1 << 16];
	size_t n = fread(out, 1, sizeof out - 1, p);
	out[n] = 0;
	int st = pclose(p);
	fputs(out, stdout);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "python tests:\n%s", out);
	ck_assert_msg(strstr(out, "\nOK") != NULL, "%s", out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("python");
	TCase *tc = tcase_create("python");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_python_package);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
