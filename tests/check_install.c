/*
 * check_install.c - make install / uninstall into a DESTDIR, the example
 * built from the installed pkg-config file and run against the installed
 * daemon, man pages against --help, bash completion (tests/install.sh
 * does the work; this runs it as a Check test).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#ifndef INFERD_SRCDIR
#define INFERD_SRCDIR "." /* the Makefile passes the source tree */
#endif

/* 1 when prog is on PATH. */
static int have(const char *prog)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

START_TEST(test_install_destdir)
{
	if (!have("make") || !have("pkg-config") || !have("cc") || !have("readelf"))
		TEST_SKIP("needs make, pkg-config, cc and readelf");
	if (access(test_build("inferd"), X_OK) != 0)
		TEST_SKIP("inferd not built");
	char cmd[8192];
	snprintf(cmd, sizeof cmd, "sh '%s/tests/install.sh' '%s' '%s' '%s' 2>&1",
		 INFERD_SRCDIR, INFERD_SRCDIR, test_build(""), test_data(""));
	FILE *p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	static char out[1 << 16];
	size_t n = fread(out, 1, sizeof out - 1, p);
	out[n] = 0;
	int st = pclose(p);
	fputs(out, stdout);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "install.sh: %s", out);
	ck_assert_msg(strstr(out, "install test ok") != NULL, "%s", out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("install");
	TCase *tc = tcase_create("install");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_install_destdir);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
