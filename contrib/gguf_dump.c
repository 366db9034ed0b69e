/*
 * gguf_dump.c - print a GGUF file's metadata and tensor table, after the
 * same validation model loading does (engine/gguf.h). For checking what a
 * converter wrote, e.g. whether rope metadata or rope_freqs is present.
 *
 *   make build/gguf_dump && build/gguf_dump model.gguf [-n N]
 *
 * -n N: array elements shown per key (default 4).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

static const char *type_name(gguf_type t)
{
	static const char *names[] = {"u8",   "i8",  "u16", "i16", "u32",
				      "i32",  "f32", "bool", "str", "arr",
				      "u64",  "i64", "f64"};
	return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* Print a string with control bytes escaped, cut at max bytes. */
static void put_str(gguf_str s, size_t max)
{
	putchar('"');
	for (uint64_t i = 0; i < s.len && i < max; i++) {
		unsigned char c = (unsigned char)s.s[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	putchar('"');
	if (s.len > max)
		printf("...(%llu bytes)", (unsigned long long)s.len);
}

static void put_scalar(const gguf_file *g, const char *key, gguf_type t)
{
	uint64_t u;
	int64_t i;
	float f;
	int b;
	gguf_str s;
	if (t == GGUF_T_STRING && gguf_get_str(g, key, &s))
		put_str(s, 120);
	else if (t == GGUF_T_BOOL && gguf_get_bool(g, key, &b))
		printf("%s", b ? "true" : "false");
	else if ((t == GGUF_T_FLOAT32 || t == GGUF_T_FLOAT64) &&
		 gguf_get_f32(g, key, &f))
		printf("%.9g", f);
	else if (gguf_get_u64(g, key, &u))
		printf("%llu", (unsigned long long)u);
	else if (gguf_get_i64(g, key, &i))
		printf("%lld", (long long)i);
	else
		printf("?");
}

static void put_array(const gguf_file *g, const char *key, uint64_t show)
{
	gguf_type et;
	uint64_t n;
	gguf_get_arr(g, key, &et, &n);
	printf("[%s x %llu]", type_name(et), (unsigned long long)n);
	for (uint64_t j = 0; j < n && j < show; j++) {
		gguf_str s;
		float f;
		int64_t v;
		printf(j ? ", " : " ");
		if (et == GGUF_T_STRING && gguf_arr_str(g, key, j, &s))
			put_str(s, 40);
		else if ((et == GGUF_T_FLOAT32 || et == GGUF_T_FLOAT64) &&
			 gguf_arr_f32(g, key, j, &f))
			printf("%.6g", f);
		else if (gguf_arr_i64(g, key, j, &v))
			printf("%lld", (long long)v);
		else
			printf("?");
	}
	if (n > show)
		printf(", ...");
}

int main(int argc, char **argv)
{
	uint64_t show = 4;
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			show = strtoull(argv[++i], NULL, 10);
		else if (!path)
			path = argv[i];
		else
			path = NULL, i = argc;
	}
	if (!path) {
		fprintf(stderr, "usage: gguf_dump FILE.gguf [-n N]\n");
		return 2;
	}
	char err[512];
	gguf_file *g = gguf_open(path, err, sizeof err);
	if (!g) {
		fprintf(stderr, "gguf_dump: %s\n", err);
		return 1;
	}
	printf("GGUF v%u, %lld keys, %lld tensors, alignment %llu, data at "
	       "%llu of %llu bytes\n",
	       gguf_version(g), (long long)gguf_kv_count(g),
	       (long long)gguf_tensor_count(g),
	       (unsigned long long)gguf_alignment(g),
	       (unsigned long long)gguf_data_offset(g),
	       (unsigned long long)gguf_file_size(g));
	for (int64_t i = 0; i < gguf_kv_count(g); i++) {
		gguf_str k = gguf_kv_key(g, i);
		char *key = malloc(k.len + 1);
		if (!key)
			return 1;
		memcpy(key, k.s, k.len);
		key[k.len] = 0;
		gguf_type t = gguf_kv_type(g, i);
		printf("%4lld %-4s %s = ", (long long)i, type_name(t), key);
		if (t == GGUF_T_ARRAY)
			put_array(g, key, show);
		else
			put_scalar(g, key, t);
		putchar('\n');
		free(key);
	}
	for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
		Tensor t;
		int64_t ne[4];
		gguf_tensor_at(g, i, &t);
		int nd = gguf_tensor_dims(g, i, ne);
		printf("%4lld %-6s %-40s {", (long long)i,
		       gguf_ggml_type_name((uint32_t)gguf_tensor_ggml_type(g, i)),
		       t.name);
		for (int d = 0; d < nd; d++)
			printf("%s%lld", d ? ", " : "", (long long)ne[d]);
		printf("} %zu bytes\n", t.nbytes);
	}
	gguf_close(g);
	return 0;
}
