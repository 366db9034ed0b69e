/*
 * check_safetensors.c - the safetensors reader: the test models' files
 * (written by HF transformers) open with the shapes and dtypes their
 * headers list, a sharded set written here opens through its index, and a
 * table of corrupt headers and indexes is refused with the right message.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "testutil.h"

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof dir, "/tmp/check_st_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void rm_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static const char *path_in(const char *name)
{
	static char p[4][128];
	static int slot;
	char *b = p[slot++ & 3];
	snprintf(b, sizeof p[0], "%s/%s", dir, name);
	return b;
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(p, 1, n, fp), n);
	fclose(fp);
}

/* A safetensors file: header text, then data_len bytes 0,1,2,... */
static void write_st(const char *path, const char *header, size_t data_len)
{
	size_t hl = strlen(header);
	uint8_t *p = malloc(8 + hl + data_len + 1);
	uint64_t n = hl;
	memcpy(p, &n, 8);
	memcpy(p + 8, header, hl);
	for (size_t i = 0; i < data_len; i++)
		p[8 + hl + i] = (uint8_t)i;
	write_file(path, p, 8 + hl + data_len);
	free(p);
}

START_TEST(real_llama2)
{
	char err[256];
	st_file *f = st_open(test_data("models/tiny-llama2/model.safetensors"),
			     err, sizeof err);
	ck_assert_msg(f, "%s", err);
	ck_assert_int_eq(st_shard_count(f), 1);
	/* embed, lm_head, final norm + 9 per layer x 2 */
	ck_assert_int_eq(st_tensor_count(f), 21);
	Tensor t;
	ck_assert(st_tensor(f, "lm_head.weight", &t));
	ck_assert_int_eq(t.type, DT_BF16);
	ck_assert(t.rows == 32000 && t.cols == 64 && t.nbytes == 4096000);
	ck_assert(st_tensor(f, "model.layers.1.self_attn.k_proj.weight", &t));
	ck_assert(t.rows == 32 && t.cols == 64 && t.nbytes == 32 * 64 * 2);
	ck_assert(st_tensor(f, "model.layers.0.input_layernorm.weight", &t));
	ck_assert(t.rows == 1 && t.cols == 64);
	int64_t shape[ST_MAX_DIMS];
	ck_assert_int_eq(st_shape(f, st_find(f, "model.norm.weight"), shape),
			 1);
	ck_assert_int_eq(shape[0], 64);
	ck_assert(!st_tensor(f, "__metadata__", &t));
	ck_assert_int_eq(st_find(f, "model.layers.2.mlp.up_proj.weight"), -1);
	st_close(f);
}
END_TEST

START_TEST(real_llama3)
{
	char err[256];
	st_file *f = st_open(test_data("models/tiny-llama3/model.safetensors"),
			     err, sizeof err);
	ck_assert_msg(f, "%s", err);
	Tensor t;
	ck_assert(!st_tensor(f, "lm_head.weight", &t)); /* tied */
	ck_assert(st_tensor(f, "model.embed_tokens.weight", &t));
	ck_assert(t.type == DT_F16 && t.rows == 50257 && t.cols == 96);
	ck_assert(st_tensor(f, "model.layers.2.mlp.down_proj.weight", &t));
	ck_assert(t.rows == 96 && t.cols == 256);
	st_close(f);
}
END_TEST

START_TEST(synthetic_valid)
{
	char err[256];
	make_dir();
	/* 3-D tensor flattened; scalar; empty tensor; space padding */
	write_st(path_in("a.safetensors"),
		 "{\"__metadata__\":{\"format\":\"pt\"},"
		 "\"x\":{\"dtype\":\"F32\",\"shape\":[2,3,4],"
		 "\"data_offsets\":[0,96]},"
		 "\"s\":{\"dtype\":\"BF16\",\"shape\":[],"
		 "\"data_offsets\":[96,98]},"
		 "\"e\":{\"dtype\":\"F16\",\"shape\":[0,5],"
		 "\"data_offsets\":[98,98]}}    ",
		 98);
	st_file *f = st_open(path_in("a.safetensors"), err, sizeof err);
	ck_assert_msg(f, "%s", err);
	ck_assert_int_eq(st_tensor_count(f), 3);
	Tensor t;
	ck_assert(st_tensor(f, "x", &t));
	ck_assert(t.type == DT_F32 && t.rows == 6 && t.cols == 4);
	ck_assert_int_eq(((const uint8_t *)t.data)[7], 7);
	ck_assert(st_tensor(f, "s", &t));
	ck_assert(t.rows == 1 && t.cols == 1 && t.nbytes == 2);
	ck_assert_int_eq(((const uint8_t *)t.data)[0], 96);
	ck_assert(st_tensor(f, "e", &t));
	ck_assert(t.rows == 0 && t.nbytes == 0);
	st_close(f);
	rm_dir();
}
END_TEST

/* Bad headers; data is 64 bytes. */
static const struct {
	const char *header;
	const char *msg;
} bad[] = {
	{"[1,2]", "not a JSON object"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}",
	 "header"},
	{"{\"x\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}",
	 "not supported"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4]}}", "data_offsets"},
	{"{\"x\":{\"shape\":[4],\"data_offsets\":[0,16]}}", "dtype"},
	{"{\"x\":[1]}", "dtype"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}",
	 "data_offsets"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}",
	 "begin <= end"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-16,0]}}",
	 "begin <= end"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1.5]}}",
	 "begin <= end"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],"
	 "\"data_offsets\":[0,1e300]}}",
	 "begin <= end"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[32],\"data_offsets\":[0,128]}}",
	 "outside"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],"
	 "\"data_offsets\":[60,76]}}",
	 "outside"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,16]}}",
	 "need 20"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}",
	 "dimension 0"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[\"4\"],"
	 "\"data_offsets\":[0,16]}}",
	 "dimension 0"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],"
	 "\"data_offsets\":[0,16]}}",
	 "dimensions"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[9007199254740992,"
	 "9007199254740992],\"data_offsets\":[0,16]}}",
	 "overflow"},
	/* fuzz_safetensors: outer dims overflow int64, a zero dim after them */
	{"{\"x\":{\"dtype\":\"BF16\",\"shape\":[4294967295,4294967296,0],"
	 "\"data_offsets\":[0,0]}}",
	 "element count overflows"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
	 "\"data_offsets\":[0,16]}}",
	 "dimension 0"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[2251799813685248,2048],"
	 "\"data_offsets\":[0,16]}}",
	 "byte size overflows"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
	 "\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
	 "overlap"},
	{"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
	 "\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}",
	 "duplicate"},
	{"{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[4],"
	 "\"data_offsets\":[0,16]}}",
	 "NUL"},
	{"{\"\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
	 "empty"},
};

START_TEST(bad_headers)
{
	char err[256] = "";
	make_dir();
	const char *p = path_in("bad.safetensors");
	write_st(p, bad[_i].header, 64);
	st_file *f = st_open(p, err, sizeof err);
	ck_assert_msg(!f, "header %d accepted", _i);
	ck_assert_msg(strstr(err, bad[_i].msg), "header %d: \"%s\" lacks \"%s\"",
		      _i, err, bad[_i].msg);
	rm_dir();
}
END_TEST

/* Header lengths that do not fit, and every truncation of a valid file. */
START_TEST(bad_lengths)
{
	char err[256];
	make_dir();
	const char *p = path_in("t.safetensors");
	const char *h = "{\"x\":{\"dtype\":\"F16\",\"shape\":[4],"
			"\"data_offsets\":[0,8]}}";
	write_st(p, h, 8);
	FILE *fp = fopen(p, "rb");
	uint8_t buf[256];
	size_t n = fread(buf, 1, sizeof buf, fp);
	fclose(fp);
	st_file *f = st_open(p, err, sizeof err);
	ck_assert_msg(f, "%s", err);
	st_close(f);
	for (size_t k = 0; k < n; k++) {
		write_file(p, buf, k);
		f = st_open(p, err, sizeof err);
		ck_assert_msg(!f, "prefix %zu accepted", k);
	}
	uint64_t lens[] = {UINT64_MAX, 1ull << 63, (uint64_t)n,
			   (uint64_t)ST_MAX_HEADER + 1};
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		memcpy(buf, &lens[i], 8);
		write_file(p, buf, n);
		f = st_open(p, err, sizeof err);
		ck_assert(!f);
		ck_assert_msg(strstr(err, "header length"), "%s", err);
	}
	ck_assert(!st_open(path_in("missing.safetensors"), err, sizeof err));
	rm_dir();
}
END_TEST

static const char *h1 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
			"\"data_offsets\":[0,8]}}";
static const char *h2 = "{\"b\":{\"dtype\":\"F32\",\"shape\":[1,2],"
			"\"data_offsets\":[0,8]},"
			"\"c\":{\"dtype\":\"F16\",\"shape\":[4],"
			"\"data_offsets\":[8,16]}}";

START_TEST(sharded)
{
	char err[256];
	make_dir();
	write_st(path_in("m-1.safetensors"), h1, 8);
	write_st(path_in("m-2.safetensors"), h2, 16);
	const char *idx = "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
			  "\"a\":\"m-1.safetensors\",\"b\":\"m-2.safetensors\","
			  "\"c\":\"m-2.safetensors\"}}";
	write_file(path_in("index.json"), idx, strlen(idx));
	st_file *f = st_open(path_in("index.json"), err, sizeof err);
	ck_assert_msg(f, "%s", err);
	ck_assert_int_eq(st_shard_count(f), 2);
	ck_assert_int_eq(st_tensor_count(f), 3);
	Tensor t;
	ck_assert(st_tensor(f, "c", &t));
	ck_assert(t.type == DT_F16 && t.cols == 4);
	ck_assert_int_eq(((const uint8_t *)t.data)[0], 8);
	ck_assert(st_tensor(f, "a", &t));
	ck_assert_int_eq(((const uint8_t *)t.data)[1], 1);
	st_close(f);

	static const struct {
		const char *idx, *msg;
	} bad_idx[] = {
		{"{\"weight_map\":{\"a\":\"../m-1.safetensors\"}}", "plain"},
		{"{\"weight_map\":{\"a\":\"/etc/passwd\"}}", "plain"},
		{"{\"weight_map\":{\"a\":\"..\"}}", "plain"},
		{"{\"weight_map\":{\"a\":1}}", "plain"},
		{"{\"weight_map\":[]}", "weight_map"},
		{"{\"weight_map\":{\"a\":\"nope.safetensors\"}}", "No such"},
		{"{\"weight_map\":{\"b\":\"m-1.safetensors\"}}",
		 "does not hold"},
		{"{\"weight_map\":{\"a\":\"m-1.safetensors\","
		 "\"z\":\"m-3.safetensors\"}}",
		 "duplicate"},
		{"{\"weight_map\":", "index"},
	};
	/* m-3 repeats tensor a of m-1 */
	write_st(path_in("m-3.safetensors"), h1, 8);
	for (size_t i = 0; i < sizeof bad_idx / sizeof bad_idx[0]; i++) {
		write_file(path_in("index.json"), bad_idx[i].idx,
			   strlen(bad_idx[i].idx));
		f = st_open(path_in("index.json"), err, sizeof err);
		ck_assert_msg(!f, "index %zu accepted", i);
		ck_assert_msg(strstr(err, bad_idx[i].msg),
			      "index %zu: \"%s\" lacks \"%s\"", i, err,
			      bad_idx[i].msg);
	}
	rm_dir();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("safetensors");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, real_llama2);
	tcase_add_test(tc, real_llama3);
	tcase_add_test(tc, synthetic_valid);
	tcase_add_loop_test(tc, bad_headers, 0,
			    (int)(sizeof bad / sizeof bad[0]));
	tcase_add_test(tc, bad_lengths);
	tcase_add_test(tc, sharded);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
