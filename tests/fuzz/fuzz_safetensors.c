/*
 * fuzz_safetensors.c - st_open() on an arbitrary .safetensors file, then
 * every tensor read back through the accessors. Invariants (checked here
 * beyond ASan's): each accepted tensor's bytes lie inside the file.
 */
#include <stdint.h>
#include <stdlib.h>

#include "fuzzutil.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	const char *path = fuzz_file("model.safetensors", data, size);
	st_file *f = st_open(path, err, sizeof err);
	if (!f)
		return 0;
	int64_t n = st_tensor_count(f);
	for (int64_t i = 0; i < n; i++) {
		Tensor t;
		int64_t shape[ST_MAX_DIMS];
		if (st_tensor_at(f, i, &t) != 0)
			continue;
		if (st_shape(f, i, shape) < 0)
			abort();
		/* touch the first and last byte: must be mapped */
		size_t bytes = t.nbytes;
		if (bytes) {
			volatile uint8_t x = ((const uint8_t *)t.data)[0];
			x ^= ((const uint8_t *)t.data)[bytes - 1];
			(void)x;
		}
	}
	(void)st_find(f, "model.embed_tokens.weight");
	st_close(f);
	return 0;
}
