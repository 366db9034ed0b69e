/*
 * check_gguf.c - the GGUF reader: the real test GGUFs (written by llama.cpp's
 * convert_hf_to_gguf.py) open with the shapes, types and metadata that
 * tools/gguf-dump of the same files shows, and a table of corrupt files,
 * built here by mutating a small valid file field by field, is refused with
 * the right message and never crashes.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "testutil.h"

/* ---- a tiny GGUF writer with recorded field offsets ---- */

typedef struct buf {
	uint8_t *p;
	size_t n, cap;
} buf;

static size_t put(buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		ck_assert_ptr_nonnull(b->p);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	return b->n - n;
}
static size_t put32(buf *b, uint32_t v) { return put(b, &v, 4); }
static size_t put64(buf *b, uint64_t v) { return put(b, &v, 8); }
static size_t putf(buf *b, float v) { return put(b, &v, 4); }
static size_t putstr(buf *b, const char *s)
{
	size_t at = put64(b, strlen(s));
	put(b, s, strlen(s));
	return at;
}
static void pad(buf *b, size_t a)
{
	while (b->n % a)
		put(b, "", 1);
}

/* Offsets of fields in the synthetic file, for the mutation table. */
static struct {
	size_t magic, version, nt, nkv;
	size_t key0_len;       /* length of "general.architecture" */
	size_t kv0_type;       /* its value type */
	size_t align_val;      /* general.alignment value */
	size_t align_type;
	size_t arr_etype, arr_n;  /* tok.list string array */
	size_t arr1_len;       /* length of its 2nd string */
	size_t u64arr_n;       /* u64 array count */
	size_t k_two;          /* first byte of key "k.b" */
	size_t a_ndims, a_dim0, a_dim1, a_type, a_off;
	size_t b_name, b_off, b_dim0;
	size_t data;           /* data section start */
} O;

/* kv: general.architecture="llama", general.alignment=32,
 * tok.list=["a","bc",""], k.a=1.5f, k.b=u64[3]{7,8,9};
 * tensors: "a" q8_0 {32,2} at 0 (68 bytes), "b" f32 {4} at 96 (16 bytes) */
static buf make_valid(void)
{
	buf b = {0};
	O.magic = put(&b, "GGUF", 4);
	O.version = put32(&b, 3);
	O.nt = put64(&b, 2);
	O.nkv = put64(&b, 5);
	O.key0_len = putstr(&b, "general.architecture");
	O.kv0_type = put32(&b, GGUF_T_STRING);
	putstr(&b, "llama");
	putstr(&b, "general.alignment");
	O.align_type = put32(&b, GGUF_T_UINT32);
	O.align_val = put32(&b, 32);
	putstr(&b, "tok.list");
	put32(&b, GGUF_T_ARRAY);
	O.arr_etype = put32(&b, GGUF_T_STRING);
	O.arr_n = put64(&b, 3);
	putstr(&b, "a");
	O.arr1_len = putstr(&b, "bc");
	putstr(&b, "");
	putstr(&b, "k.a");
	put32(&b, GGUF_T_FLOAT32);
	putf(&b, 1.5f);
	O.k_two = putstr(&b, "k.b") + 8;
	put32(&b, GGUF_T_ARRAY);
	put32(&b, GGUF_T_UINT64);
	O.u64arr_n = put64(&b, 3);
	put64(&b, 7);
	put64(&b, 8);
	put64(&b, 9);
	putstr(&b, "a");
	O.a_ndims = put32(&b, 2);
	O.a_dim0 = put64(&b, 32);
	O.a_dim1 = put64(&b, 2);
	O.a_type = put32(&b, 8); /* Q8_0 */
	O.a_off = put64(&b, 0);
	O.b_name = putstr(&b, "b") + 8;
	put32(&b, 1);
	O.b_dim0 = put64(&b, 4);
	put32(&b, 0); /* F32 */
	O.b_off = put64(&b, 96);
	pad(&b, 32);
	O.data = b.n;
	for (int i = 0; i < 96; i++) { /* a's 68 bytes + padding */
		uint8_t v = (uint8_t)i;
		put(&b, &v, 1);
	}
	float f[4] = {1, 2, 3, 4};
	put(&b, f, sizeof f);
	return b;
}

static char tmpl[64];

static const char *write_tmp(const void *p, size_t n)
{
	snprintf(tmpl, sizeof tmpl, "/tmp/check_gguf_XXXXXX");
	int fd = mkstemp(tmpl);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
	close(fd);
	return tmpl;
}

/* Open bytes as a file; the file is removed at once (the mapping stays). */
static gguf_file *open_bytes(const void *p, size_t n, char *err,
			     size_t errlen)
{
	const char *path = write_tmp(p, n);
	gguf_file *g = gguf_open(path, err, errlen);
	unlink(path);
	return g;
}

START_TEST(synthetic_valid)
{
	buf b = make_valid();
	char err[256];
	gguf_file *g = open_bytes(b.p, b.n, err, sizeof err);
	ck_assert_msg(g, "%s", err);
	ck_assert_uint_eq(gguf_version(g), 3);
	ck_assert_int_eq(gguf_kv_count(g), 5);
	ck_assert_uint_eq(gguf_data_offset(g), O.data);
	gguf_str s;
	ck_assert(gguf_get_str(g, "general.architecture", &s));
	ck_assert(s.len == 5 && memcmp(s.s, "llama", 5) == 0);
	uint64_t u;
	ck_assert(gguf_get_u64(g, "general.alignment", &u) && u == 32);
	ck_assert(!gguf_get_u64(g, "general.architecture", &u));
	ck_assert(!gguf_get_u64(g, "absent", &u));
	float f;
	ck_assert(gguf_get_f32(g, "k.a", &f) && f == 1.5f);
	gguf_type et;
	uint64_t n;
	ck_assert(gguf_get_arr(g, "tok.list", &et, &n));
	ck_assert(et == GGUF_T_STRING && n == 3);
	ck_assert(gguf_arr_str(g, "tok.list", 1, &s));
	ck_assert(s.len == 2 && memcmp(s.s, "bc", 2) == 0);
	ck_assert(gguf_arr_str(g, "tok.list", 2, &s) && s.len == 0);
	ck_assert(!gguf_arr_str(g, "tok.list", 3, &s));
	int64_t iv;
	ck_assert(gguf_arr_i64(g, "k.b", 2, &iv) && iv == 9);
	ck_assert(gguf_arr_f32(g, "k.b", 0, &f) && f == 7.0f);
	ck_assert(!gguf_arr_i64(g, "k.b", 3, &iv));
	ck_assert(!gguf_arr_str(g, "k.b", 0, &s));

	ck_assert_int_eq(gguf_tensor_count(g), 2);
	Tensor t;
	ck_assert(gguf_tensor(g, "a", &t));
	ck_assert_str_eq(t.name, "a");
	ck_assert_int_eq(t.type, DT_Q8_0);
	ck_assert_int_eq(t.rows, 2);
	ck_assert_int_eq(t.cols, 32);
	ck_assert_uint_eq(t.nbytes, 68);
	ck_assert_int_eq(((const uint8_t *)t.data)[5], 5);
	ck_assert(gguf_tensor(g, "b", &t));
	ck_assert_int_eq(t.type, DT_F32);
	ck_assert(t.rows == 1 && t.cols == 4 && t.nbytes == 16);
	ck_assert(((const float *)t.data)[3] == 4.0f);
	ck_assert(!gguf_tensor(g, "c", &t));
	int64_t ne[4];
	ck_assert_int_eq(gguf_tensor_dims(g, gguf_tensor_find(g, "a"), ne), 2);
	ck_assert(ne[0] == 32 && ne[1] == 2);
	gguf_close(g);
	free(b.p);
}
END_TEST

/* A field mutation and the words the error must contain. */
typedef struct mutation {
	const char *what;
	size_t *field;  /* offset in O */
	size_t delta;   /* added to the field's offset */
	int width;      /* 1, 4 or 8 bytes */
	uint64_t value; /* written there */
	const char *msg; /* expected in the error */
} mutation;

static const mutation muts[] = {
	{"bad magic", &O.magic, 0, 1, 'X', "magic"},
	{"version 1", &O.version, 0, 4, 1, "version 1"},
	{"version 4", &O.version, 0, 4, 4, "version 4"},
	{"big-endian v3", &O.version, 0, 4, 0x03000000u, "big-endian"},
	{"huge tensor count", &O.nt, 0, 8, 1ull << 62, "cannot fit"},
	{"huge kv count", &O.nkv, 0, 8, UINT64_MAX, "cannot fit"},
	{"kv count too high", &O.nkv, 0, 8, 9, "key 6"},
	{"key length past end", &O.key0_len, 0, 8, 1000, "needs"},
	{"key length 2^64-1", &O.key0_len, 0, 8, UINT64_MAX, "limit"},
	{"key length shifts parse", &O.key0_len, 0, 8, 21, "type"},
	{"unknown kv type", &O.kv0_type, 0, 4, 13, "unknown value type"},
	{"string value length huge", &O.kv0_type, 4, 8, UINT64_MAX - 3,
	 "needs"},
	{"alignment not pow2", &O.align_val, 0, 4, 48, "power of two"},
	{"alignment 0", &O.align_val, 0, 4, 0, "power of two"},
	{"alignment wrong type", &O.align_type, 0, 4, GGUF_T_INT32, "uint32"},
	{"array elem type bad", &O.arr_etype, 0, 4, 99, "element type"},
	{"array count huge", &O.arr_n, 0, 8, 1ull << 61, "array count"},
	{"array count 2^64-1", &O.arr_n, 0, 8, UINT64_MAX, "array count"},
	{"array string length huge", &O.arr1_len, 0, 8, 1ull << 63, "needs"},
	{"u64 array overflowing n*8", &O.u64arr_n, 0, 8, 1ull << 61,
	 "array count"},
	{"duplicate key", &O.k_two, 2, 1, 'a', "duplicate key"},
	{"duplicate tensor name", &O.b_name, 0, 1, 'a', "duplicate tensor"},
	{"NUL in tensor name", &O.b_name, 0, 1, 0, "NUL"},
	{"n_dims 0", &O.a_ndims, 0, 4, 0, "dimensions"},
	{"n_dims 5", &O.a_ndims, 0, 4, 5, "dimensions"},
	{"n_dims 2^32-1", &O.a_ndims, 0, 4, UINT32_MAX, "dimensions"},
	{"dim 0", &O.a_dim1, 0, 8, 0, "dimension 1 is 0"},
	{"dim 2^63", &O.a_dim0, 0, 8, 1ull << 63, "dimension 0"},
	{"dims product overflows", &O.a_dim1, 0, 8, 1ull << 62, "overflow"},
	{"bytes overflow", &O.a_dim1, 0, 8, 1ull << 58, "overflow"},
	{"huge but countable dims", &O.a_dim1, 0, 8, 1ull << 40, "outside"},
	{"row not a block multiple", &O.a_dim0, 0, 8, 31, "multiple"},
	{"unknown ggml type", &O.a_type, 0, 4, 99, "not supported"},
	{"unsupported ggml type", &O.a_type, 0, 4, 6, "q5_0"},
	{"f32 type makes a too big", &O.a_type, 0, 4, 0, "outside"},
	{"misaligned offset", &O.a_off, 0, 8, 1, "alignment"},
	{"offset past the end", &O.b_off, 0, 8, 1ull << 40, "outside"},
	{"offset+size wraps", &O.b_off, 0, 8, UINT64_MAX - 31, "outside"},
	{"offset at the end", &O.b_off, 0, 8, 128, "outside"},
	{"overlapping tensors", &O.b_off, 0, 8, 64, "overlap"},
	{"same offset", &O.b_off, 0, 8, 0, "overlap"},
};

START_TEST(mutations)
{
	buf b = make_valid();
	const mutation *m = &muts[_i];
	uint8_t *p = malloc(b.n);
	memcpy(p, b.p, b.n);
	size_t at = *m->field + m->delta;
	ck_assert_uint_le(at + (size_t)m->width, b.n);
	if (m->width == 1)
		p[at] = (uint8_t)m->value;
	else if (m->width == 4) {
		uint32_t v = (uint32_t)m->value;
		memcpy(p + at, &v, 4);
	} else
		memcpy(p + at, &m->value, 8);
	char err[256] = "";
	gguf_file *g = open_bytes(p, b.n, err, sizeof err);
	ck_assert_msg(g == NULL, "%s: accepted", m->what);
	ck_assert_msg(strstr(err, m->msg), "%s: message \"%s\" lacks \"%s\"",
		      m->what, err, m->msg);
	free(p);
	free(b.p);
}
END_TEST

/* Every proper prefix of the valid file (truncation inside each section)
 * is refused; the file's last tensor ends exactly at its end. */
START_TEST(truncations)
{
	buf b = make_valid();
	char err[256];
	for (size_t n = 0; n < b.n; n++) {
		gguf_file *g = open_bytes(b.p, n, err, sizeof err);
		ck_assert_msg(g == NULL, "prefix of %zu bytes accepted", n);
		ck_assert(err[0]);
	}
	free(b.p);
}
END_TEST

/* Random byte changes: open either fails or yields tensors inside the
 * file (checked by touching their last byte). Deterministic seed. */
START_TEST(random_corruption)
{
	buf b = make_valid();
	uint8_t *p = malloc(b.n);
	uint64_t x = 88172645463325252ull;
	char err[256];
	int opened = 0;
	for (int it = 0; it < 3000; it++) {
		memcpy(p, b.p, b.n);
		int nflip = 1 + it % 4;
		for (int k = 0; k < nflip; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			size_t at = (size_t)(x % O.data); /* header bytes */
			p[at] = (uint8_t)(x >> 32);
		}
		gguf_file *g = open_bytes(p, b.n, err, sizeof err);
		if (!g)
			continue;
		opened++;
		for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
			Tensor t;
			ck_assert(gguf_tensor_at(g, i, &t));
			volatile uint8_t last =
				((const uint8_t *)t.data)[t.nbytes - 1];
			(void)last;
		}
		gguf_close(g);
	}
	ck_assert_int_gt(opened, 0); /* some flips hit harmless bytes */
	free(p);
	free(b.p);
}
END_TEST

/* Arrays of arrays deeper than GGUF_MAX_NEST are refused. */
START_TEST(nesting)
{
	char err[256];
	for (int depth = 1; depth <= GGUF_MAX_NEST + 2; depth++) {
		buf b = {0};
		put(&b, "GGUF", 4);
		put32(&b, 3);
		put64(&b, 0);
		put64(&b, 1);
		putstr(&b, "nest");
		put32(&b, GGUF_T_ARRAY);
		for (int d = 1; d < depth; d++) {
			put32(&b, GGUF_T_ARRAY);
			put64(&b, 1);
		}
		put32(&b, GGUF_T_UINT8);
		put64(&b, 1);
		put(&b, "x", 1);
		gguf_file *g = open_bytes(b.p, b.n, err, sizeof err);
		if (depth <= GGUF_MAX_NEST) {
			ck_assert_msg(g, "depth %d: %s", depth, err);
			gguf_close(g);
		} else {
			ck_assert_msg(!g, "depth %d accepted", depth);
			ck_assert(strstr(err, "nested"));
		}
		free(b.p);
	}
	ck_assert_ptr_null(gguf_open("/nonexistent/x.gguf", err, sizeof err));
	ck_assert(strstr(err, "No such file"));
}
END_TEST

/* Values as gguf-dump (gguf-py) prints them for the test files. */
START_TEST(real_llama2_f16)
{
	char err[256];
	gguf_file *g = gguf_open(test_data("models/tiny-llama2-f16.gguf"), err,
				 sizeof err);
	ck_assert_msg(g, "%s", err);
	ck_assert_uint_eq(gguf_version(g), 3);
	ck_assert_int_eq(gguf_kv_count(g), 25);
	ck_assert_int_eq(gguf_tensor_count(g), 21);
	ck_assert_uint_eq(gguf_alignment(g), 32);
	gguf_str s;
	ck_assert(gguf_get_str(g, "general.architecture", &s));
	ck_assert(s.len == 5 && !memcmp(s.s, "llama", 5));
	uint64_t u;
	ck_assert(gguf_get_u64(g, "llama.block_count", &u) && u == 2);
	ck_assert(gguf_get_u64(g, "llama.embedding_length", &u) && u == 64);
	ck_assert(gguf_get_u64(g, "llama.feed_forward_length", &u) && u == 192);
	ck_assert(gguf_get_u64(g, "llama.attention.head_count_kv", &u) &&
		  u == 2);
	float f;
	ck_assert(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon",
			       &f) &&
		  f == 1e-5f);
	gguf_type et;
	uint64_t n;
	ck_assert(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n));
	ck_assert(et == GGUF_T_STRING && n == 32000);
	ck_assert(gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &s));
	ck_assert(s.len == 3 && !memcmp(s.s, "<s>", 3));
	ck_assert(gguf_arr_str(g, "tokenizer.ggml.tokens", 3, &s));
	ck_assert(s.len == 6 && !memcmp(s.s, "<0x00>", 6));
	int64_t iv;
	ck_assert(gguf_arr_i64(g, "tokenizer.ggml.token_type", 0, &iv) &&
		  iv == 2);
	ck_assert(gguf_arr_i64(g, "tokenizer.ggml.token_type", 3, &iv) &&
		  iv == 6);
	ck_assert(gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n));
	ck_assert(et == GGUF_T_FLOAT32 && n == 32000);

	Tensor t;
	ck_assert(gguf_tensor(g, "token_embd.weight", &t));
	ck_assert_int_eq(t.type, DT_F16);
	ck_assert(t.rows == 32000 && t.cols == 64 && t.nbytes == 4096000);
	ck_assert(gguf_tensor(g, "output.weight", &t));
	ck_assert(t.rows == 32000 && t.cols == 64);
	ck_assert(gguf_tensor(g, "blk.1.attn_k.weight", &t));
	ck_assert(t.type == DT_F16 && t.rows == 32 && t.cols == 64);
	ck_assert(gguf_tensor(g, "blk.0.ffn_down.weight", &t));
	ck_assert(t.rows == 64 && t.cols == 192);
	ck_assert(gguf_tensor(g, "blk.0.attn_norm.weight", &t));
	ck_assert(t.type == DT_F32 && t.rows == 1 && t.cols == 64);
	int64_t ne[4];
	ck_assert_int_eq(gguf_tensor_dims(g, gguf_tensor_find(g,
				"blk.0.attn_norm.weight"), ne), 1);
	ck_assert(!gguf_tensor(g, "blk.2.attn_k.weight", &t));
	gguf_close(g);
}
END_TEST

START_TEST(real_llama3_q8_0)
{
	char err[256];
	gguf_file *g = gguf_open(test_data("models/tiny-llama3-q8_0.gguf"), err,
				 sizeof err);
	ck_assert_msg(g, "%s", err);
	ck_assert_int_eq(gguf_tensor_count(g), 29); /* no output.weight: tied */
	Tensor t;
	ck_assert(!gguf_tensor(g, "output.weight", &t));
	ck_assert(gguf_tensor(g, "token_embd.weight", &t));
	ck_assert_int_eq(t.type, DT_Q8_0);
	ck_assert(t.rows == 50257 && t.cols == 96);
	ck_assert_uint_eq(t.nbytes, 50257ull * 3 * 34);
	ck_assert(gguf_tensor(g, "blk.2.attn_q.weight", &t));
	ck_assert(t.type == DT_Q8_0 && t.rows == 96 && t.cols == 96);
	ck_assert_int_eq(gguf_tensor_ggml_type(g, gguf_tensor_find(g,
				"blk.2.attn_q.weight")), 8);
	ck_assert(gguf_tensor(g, "output_norm.weight", &t));
	ck_assert(t.type == DT_F32 && t.cols == 96);
	uint64_t u;
	ck_assert(gguf_get_u64(g, "general.file_type", &u) && u == 7);
	ck_assert(!gguf_get_u64(g, "llama.rope.freq_base", &u)); /* known gap */
	gguf_type et;
	uint64_t n;
	ck_assert(gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n));
	ck_assert(et == GGUF_T_STRING && n == 50000);
	gguf_str s;
	ck_assert(gguf_arr_str(g, "tokenizer.ggml.merges", 0, &s));
	ck_assert(s.len == 4 && !memcmp(s.s, "\xC4\xA0 t", 4));
	gguf_close(g);
}
END_TEST

START_TEST(real_vocab_only)
{
	char err[256];
	gguf_file *g = gguf_open(test_data("vocab/ggml-vocab-llama-spm.gguf"),
				 err, sizeof err);
	ck_assert_msg(g, "%s", err);
	ck_assert_int_eq(gguf_tensor_count(g), 0);
	int b = -1;
	ck_assert(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) && b);
	ck_assert(gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b) && !b);
	gguf_close(g);
}
END_TEST

/* Truncating the real file inside the header, a kv, the tensor infos and
 * the data is refused. */
START_TEST(real_truncated)
{
	const char *path = test_data("models/tiny-llama2-q8_0.gguf");
	FILE *fp = fopen(path, "rb");
	ck_assert_ptr_nonnull(fp);
	fseek(fp, 0, SEEK_END);
	long size = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	uint8_t *p = malloc((size_t)size);
	ck_assert_int_eq(fread(p, 1, (size_t)size, fp), (size_t)size);
	fclose(fp);
	char err[256];
	gguf_file *g = open_bytes(p, (size_t)size, err, sizeof err);
	ck_assert_msg(g, "%s", err);
	size_t data = gguf_data_offset(g);
	gguf_close(g);
	size_t cuts[] = {3, 20, 30, 200, data / 2, data - 40, data - 1,
			 data + 1, (size_t)size - 1};
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		g = open_bytes(p, cuts[i], err, sizeof err);
		ck_assert_msg(!g, "cut at %zu accepted", cuts[i]);
	}
	free(p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gguf");
	TCase *tc = tcase_create("gguf");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, synthetic_valid);
	tcase_add_loop_test(tc, mutations, 0,
			    (int)(sizeof muts / sizeof muts[0]));
	tcase_add_test(tc, truncations);
	tcase_add_test(tc, random_corruption);
	tcase_add_test(tc, nesting);
	tcase_add_test(tc, real_llama2_f16);
	tcase_add_test(tc, real_llama3_q8_0);
	tcase_add_test(tc, real_vocab_only);
	tcase_add_test(tc, real_truncated);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
