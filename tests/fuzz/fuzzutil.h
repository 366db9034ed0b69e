/*
 * fuzzutil.h - helpers for the libFuzzer targets in tests/fuzz/.
 *
 * The engine's loaders read files by path (they mmap them), so targets that
 * fuzz a file format write the input to a private scratch folder under
 * /dev/shm (memory, no disk wear) and open it from there. Test data (the
 * tiny models' tokenizers) is found through $INFERD_TEST_DATA, which
 * `make fuzz` sets to the build's unpacked tests/data.
 */
#ifndef INFERD_FUZZUTIL_H
#define INFERD_FUZZUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* This process's scratch folder, made on first use. */
static inline const char *fuzz_dir(void)
{
	static char dir[128];
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "/dev/shm/inferd-fuzz-%d", (int)getpid());
		if (mkdir(dir, 0700) != 0 && access(dir, W_OK) != 0) {
			perror(dir);
			abort();
		}
	}
	return dir;
}

/* Write data to <scratch>/name and return its path (static buffer). */
static inline const char *fuzz_file(const char *name, const uint8_t *data,
				    size_t size)
{
	static char path[256];
	snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
	FILE *f = fopen(path, "wb");
	if (!f) {
		perror(path);
		abort();
	}
	if (size && fwrite(data, 1, size, f) != size) {
		perror(path);
		abort();
	}
	if (fclose(f) != 0) {
		perror(path);
		abort();
	}
	return path;
}

/* A test data file: $INFERD_TEST_DATA/rel (static buffer). */
static inline const char *fuzz_data(const char *rel)
{
	static char path[4096];
	const char *root = getenv("INFERD_TEST_DATA");
	snprintf(path, sizeof path, "%s/%s", root ? root : "build/testdata", rel);
	return path;
}

#endif
