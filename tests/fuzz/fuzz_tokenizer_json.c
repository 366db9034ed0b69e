/*
 * fuzz_tokenizer_json.c - tokenizer.json (and, when the input holds a NUL
 * byte, tokenizer_config.json after it) from arbitrary bytes, through
 * tokenizer_load_hf(); an accepted tokenizer then encodes and decodes a
 * short fixed text with and without special-token parsing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	const uint8_t *nul = memchr(data, 0, size);
	size_t n1 = nul ? (size_t)(nul - data) : size;
	fuzz_file("tokenizer.json", data, n1);
	if (nul)
		fuzz_file("tokenizer_config.json", nul + 1, size - n1 - 1);
	else
		fuzz_file("tokenizer_config.json", (const uint8_t *)"{}", 2);
	Tokenizer *t = NULL;
	if (tokenizer_load_hf(fuzz_dir(), &t, err, sizeof err) != 0)
		return 0;
	static const char text[] = "Hello <s> world \xe4\xbd\xa0\xe5\xa5\xbd\xff 123";
	for (int special = 0; special < 2; special++) {
		int32_t *ids = NULL;
		int n = tokenizer_encode(t, text, sizeof text - 1, 1, special,
					 &ids, err, sizeof err);
		if (n > 0) {
			char *s = tokenizer_decode(t, ids, n, NULL, err, sizeof err);
			free(s);
		}
		free(ids);
	}
	tokenizer_free(t);
	return 0;
}
