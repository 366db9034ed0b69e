/*
 * fuzz_gguf.c - a GGUF file from arbitrary bytes: gguf_open(), every
 * metadata value and tensor read back through the accessors, then the
 * whole model path (model_load: hyper-parameters, tensor table, GGUF
 * tokenizer). The seeds hold the llama.cpp GHSA-vgg9-87g3-85w8 shapes:
 * string lengths, array counts, tensor counts and dims whose products
 * overflow 64 bits.
 */
#include <stdint.h>
#include <stdlib.h>

#include "fuzzutil.h"
#include "gguf.h"
#include "model.h"
#include "tensor.h"

static void touch(const void *p, uint64_t n)
{
	if (!n)
		return;
	volatile uint8_t x = ((const uint8_t *)p)[0];
	x ^= ((const uint8_t *)p)[n - 1];
	(void)x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	const char *path = fuzz_file("model.gguf", data, size);
	gguf_file *g = gguf_open(path, err, sizeof err);
	if (!g)
		return 0;
	int64_t nkv = gguf_kv_count(g);
	for (int64_t i = 0; i < nkv; i++) {
		gguf_str k = gguf_kv_key(g, i);
		touch(k.s, k.len);
		char key[GGUF_MAX_NAME + 1];
		if (k.len > GGUF_MAX_NAME || memchr(k.s, 0, k.len))
			continue;
		memcpy(key, k.s, k.len);
		key[k.len] = 0;
		uint64_t u;
		int64_t s;
		float f;
		int b;
		gguf_str str;
		gguf_type et;
		uint64_t cnt;
		(void)gguf_get_u64(g, key, &u);
		(void)gguf_get_i64(g, key, &s);
		(void)gguf_get_f32(g, key, &f);
		(void)gguf_get_bool(g, key, &b);
		if (gguf_get_str(g, key, &str))
			touch(str.s, str.len);
		if (gguf_get_arr(g, key, &et, &cnt) && cnt) {
			uint64_t idx[2] = {0, cnt - 1};
			for (int j = 0; j < 2; j++) {
				if (gguf_arr_str(g, key, idx[j], &str))
					touch(str.s, str.len);
				(void)gguf_arr_f32(g, key, idx[j], &f);
				(void)gguf_arr_i64(g, key, idx[j], &s);
			}
			/* one past the end must be refused */
			if (gguf_arr_str(g, key, cnt, &str) ||
			    gguf_arr_f32(g, key, cnt, &f) ||
			    gguf_arr_i64(g, key, cnt, &s))
				abort();
		}
	}
	int64_t nt = gguf_tensor_count(g);
	for (int64_t i = 0; i < nt; i++) {
		Tensor t;
		int64_t ne[4];
		if (gguf_tensor_dims(g, i, ne) < 1)
			abort();
		(void)gguf_tensor_ggml_type(g, i);
		if (gguf_tensor_at(g, i, &t) == 1 && t.data)
			touch(t.data, t.nbytes);
	}
	gguf_close(g);

	/* The loader on top: config, tensor table checks, tokenizer. */
	Model m;
	memset(&m, 0, sizeof m);
	if (model_load(path, &m, err, sizeof err) == 0)
		model_free(&m);
	return 0;
}
