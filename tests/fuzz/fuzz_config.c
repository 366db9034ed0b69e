/*
 * fuzz_config.c - config.json of a Hugging Face model directory from
 * arbitrary bytes, through model_load(): the JSON reader (engine/json.c),
 * the hyper-parameter parse (rope scaling, architectures, ranges) and
 * check_config(). The directory holds no weights, so a config that passes
 * ends at "no model.safetensors".
 */
#include <stdint.h>
#include <string.h>

#include "fuzzutil.h"
#include "json.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	/* the JSON reader alone, on the bytes as given (not NUL-terminated) */
	json_doc *doc = json_parse((const char *)data, size, err, sizeof err);
	if (doc)
		json_free(doc);
	fuzz_file("config.json", data, size);
	Model m;
	memset(&m, 0, sizeof m);
	if (model_load(fuzz_dir(), &m, err, sizeof err) == 0)
		model_free(&m);
	return 0;
}
