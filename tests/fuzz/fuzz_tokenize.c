/*
 * fuzz_tokenize.c - tokenizer_encode() on arbitrary bytes with the four
 * tokenizers of the test data (SPM and GPT-2 BPE from tokenizer.json,
 * llama.cpp's SPM and GPT-2 vocab GGUFs), with and without special-token
 * parsing. Each result must decode (every id valid), and streaming the ids
 * through a TokenStream must give exactly tokenizer_decode()'s text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "gguf.h"
#include "tokenizer.h"

static Tokenizer *toks[4];
static int ntoks;
static gguf_file *ggs[2]; /* kept open: the tokenizers may point into them */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256];
	const char *hf[] = {"models/tiny-llama2", "models/tiny-llama3"};
	const char *gg[] = {"vocab/ggml-vocab-llama-spm.gguf",
			    "vocab/ggml-vocab-gpt-2.gguf"};
	for (int i = 0; i < 2; i++)
		if (tokenizer_load_hf(fuzz_data(hf[i]), &toks[ntoks], err,
				      sizeof err) == 0)
			ntoks++;
		else
			fprintf(stderr, "fuzz_tokenize: %s: %s\n", hf[i], err);
	for (int i = 0; i < 2; i++) {
		gguf_file *g = ggs[i] = gguf_open(fuzz_data(gg[i]), err, sizeof err);
		if (g && tokenizer_load_gguf(g, &toks[ntoks], err, sizeof err) == 0)
			ntoks++;
		else
			fprintf(stderr, "fuzz_tokenize: %s: %s\n", gg[i], err);
	}
	if (ntoks != 4) {
		fprintf(stderr, "fuzz_tokenize: set INFERD_TEST_DATA\n");
		exit(1);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	static char piece[TOKSTREAM_MAX_PIECE];
	if (size > 4096) /* the BPE merge loop is quadratic in a word */
		return 0;
	for (int k = 0; k < ntoks; k++)
		for (int special = 0; special < 2; special++) {
			int32_t *ids = NULL;
			int n = tokenizer_encode(toks[k], (const char *)data,
						 size, special, special, &ids,
						 err, sizeof err);
			if (n < 0)
				abort(); /* arbitrary bytes are never an error */
			size_t len = 0;
			char *text = tokenizer_decode(toks[k], ids, n, &len, err,
						      sizeof err);
			if (!text)
				abort();
			TokenStream ts;
			tokstream_init(&ts, toks[k]);
			char *cat = malloc(len + TOKSTREAM_MAX_PIECE + 1);
			size_t clen = 0;
			for (int i = 0; i < n; i++) {
				int w = tokstream_push(&ts, ids[i], piece,
						       sizeof piece);
				if (w < 0 || clen + (size_t)w > len)
					abort();
				memcpy(cat + clen, piece, (size_t)w);
				clen += (size_t)w;
			}
			int w = tokstream_flush(&ts, piece, sizeof piece);
			if (w < 0 || clen + (size_t)w != len)
				abort();
			memcpy(cat + clen, piece, (size_t)w);
			if (memcmp(cat, text, len) != 0)
				abort();
			free(cat);
			free(text);
			free(ids);
		}
	return 0;
}
