/*
 * testutil.h - helpers shared by the Check test binaries.
 *
 * Test data is read from $INFERD_TEST_DATA (tests/run.sh points it at
 * build/testdata, the unpacked copy of tests/data); built programs from
 * $INFERD_BUILD. A test that cannot run here (no GPU, no demo model) calls
 * TEST_SKIP(why): it prints "SKIP: <test>: why" and returns, and
 * tests/run.sh counts it as skipped instead of passed.
 */
#ifndef INFERD_TESTUTIL_H
#define INFERD_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>

/* Path of a file under the test data folder, in a static buffer rotated
 * between 8 slots so a few can be live at once. */
static inline const char *test_data(const char *rel)
{
	static char buf[8][4096];
	static int slot;
	const char *root = getenv("INFERD_TEST_DATA");
	char *b = buf[slot++ & 7];
	snprintf(b, sizeof buf[0], "%s/%s", root ? root : "build/testdata", rel);
	return b;
}

/* Path of a built program or library under the build folder. */
static inline const char *test_build(const char *rel)
{
	static char buf[4][4096];
	static int slot;
	const char *root = getenv("INFERD_BUILD");
	char *b = buf[slot++ & 3];
	snprintf(b, sizeof buf[0], "%s/%s", root ? root : "build", rel);
	return b;
}

#define TEST_SKIP(...)                                                   \
	do {                                                             \
		printf("SKIP: %s: ", __func__);                          \
		printf(__VA_ARGS__);                                     \
		printf("\n");                                            \
		fflush(stdout);                                          \
		return;                                                  \
	} while (0)

#endif
