/*
 * check_tokenizer.c - tokenizer against reference implementations:
 * golden.json (HF transformers / tokenizers encode + decode of the tiny
 * models), llama.cpp's vocab test vectors (ids from HF tokenizers) through
 * both tokenizer.json and the vocab-only GGUFs, streaming decode ==
 * full decode, malformed tokenizer.json.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "json.h"
#include "tokenizer.h"
#include "tokenizer_int.h"
#include "unicode.h"
#include "testutil.h"

const char *tokenizer_id_text(const Tokenizer *t, int32_t id);

static Tokenizer *load_hf(const char *model)
{
	char err[512], rel[256];
	snprintf(rel, sizeof rel, "models/%s", model);
	Tokenizer *t = NULL;
	int rc = tokenizer_load_hf(test_data(rel), &t, err, sizeof err);
	ck_assert_msg(rc == 0 && t, "load %s: %s", model, err);
	return t;
}

static Tokenizer *load_gguf(const char *rel, gguf_file **gout)
{
	char err[512];
	gguf_file *g = gguf_open(test_data(rel), err, sizeof err);
	ck_assert_msg(g, "open %s: %s", rel, err);
	Tokenizer *t = NULL;
	int rc = tokenizer_load_gguf(g, &t, err, sizeof err);
	ck_assert_msg(rc == 0 && t, "load %s: %s", rel, err);
	*gout = g;
	return t;
}

/* ids of a JSON array into a malloc'd vector */
static int32_t *json_ids(const json_value *a, int *n)
{
	*n = (int)json_count(a);
	int32_t *v = malloc(((size_t)*n + 1) * sizeof *v);
	ck_assert_ptr_nonnull(v);
	for (int i = 0; i < *n; i++) {
		int64_t x;
		ck_assert(json_int(json_at(a, (size_t)i), 0, INT32_MAX, &x));
		v[i] = (int32_t)x;
	}
	return v;
}

static void check_ids(const char *what, const char *text, const int32_t *got,
		      int ngot, const int32_t *want, int nwant)
{
	int same = ngot == nwant;
	for (int i = 0; same && i < ngot; i++)
		same = got[i] == want[i];
	if (!same) {
		char g[2048] = "", w[2048] = "";
		size_t o = 0;
		for (int i = 0; i < ngot && o + 16 < sizeof g; i++)
			o += (size_t)snprintf(g + o, sizeof g - o, " %d", got[i]);
		o = 0;
		for (int i = 0; i < nwant && o + 16 < sizeof w; i++)
			o += (size_t)snprintf(w + o, sizeof w - o, " %d", want[i]);
		ck_abort_msg("%s: \"%s\": got [%s] want [%s]", what, text, g, w);
	}
}

/* golden.json tokenize[] (ids without specials + decoded) and prompts[]
 * (ids with BOS as the tokenizer adds it). */
static void golden(Tokenizer *t, const char *model)
{
	char err[512], rel[256];
	snprintf(rel, sizeof rel, "models/%s/golden.json", model);
	json_doc *d = json_parse_file(test_data(rel), 0, err, sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *tk = json_get(json_root(d), "tokenize");
	ck_assert_uint_gt(json_count(tk), 10);
	for (size_t k = 0; k < json_count(tk); k++) {
		const json_value *e = json_at(tk, k);
		const json_value *tx = json_get(e, "text");
		int nwant;
		int32_t *want = json_ids(json_get(e, "ids"), &nwant);
		int32_t *ids;
		int n = tokenizer_encode(t, tx->u.str.s, tx->u.str.len, 0, 1,
					 &ids, err, sizeof err);
		ck_assert_msg(n >= 0, "%s", err);
		check_ids(model, tx->u.str.s, ids, n, want, nwant);
		size_t len;
		char *s = tokenizer_decode(t, want, nwant, &len, err, sizeof err);
		ck_assert_msg(s, "%s", err);
		ck_assert_str_eq(s, json_str(json_get(e, "decoded"), ""));
		free(s);
		free(ids);
		free(want);
	}
	const json_value *pr = json_get(json_root(d), "prompts");
	ck_assert_uint_gt(json_count(pr), 3);
	for (size_t k = 0; k < json_count(pr); k++) {
		const json_value *e = json_get(json_at(pr, k), "text");
		int nwant;
		int32_t *want = json_ids(json_get(json_at(pr, k), "ids"), &nwant);
		int32_t *ids;
		int n = tokenizer_encode(t, e->u.str.s, e->u.str.len, 1, 1, &ids,
					 err, sizeof err);
		ck_assert_msg(n >= 0, "%s", err);
		/* the reference feeds BOS alone for an empty prompt even
		 * when the tokenizer adds none (a model needs one token) */
		if (n == 0 && e->u.str.len == 0 && tokenizer_bos(t) >= 0) {
			ids[0] = tokenizer_bos(t);
			n = 1;
		}
		check_ids(model, e->u.str.s, ids, n, want, nwant);
		free(ids);
		free(want);
	}
	json_free(d);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f, "%s: %s", path, strerror(errno));
	char *buf = NULL;
	size_t cap = 0, n = 0;
	for (;;) {
		if (n + 4096 > cap) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap + 1);
			ck_assert_ptr_nonnull(buf);
		}
		size_t r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	buf[n] = 0;
	*len = n;
	return buf;
}

/* llama.cpp vectors: .inp strings each end with "\n__ggml_vocab_test__\n";
 * .out has one line of space-separated ids per string (no BOS). Returns the
 * number of vectors that matched; all must. */
static int vocab_vectors(Tokenizer *t, const char *name)
{
	char rel[256], err[512];
	snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.inp", name);
	size_t ilen, olen;
	char *inp = slurp(test_data(rel), &ilen);
	snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.out", name);
	char *out = slurp(test_data(rel), &olen);
	static const char sep[] = "\n__ggml_vocab_test__\n";
	char *p = inp, *q = out;
	int nvec = 0, good = 0;
	for (;;) {
		char *e = strstr(p, sep);
		if (!e)
			break;
		char *oe = strchr(q, '\n');
		ck_assert_msg(oe, "%s: .out has fewer lines than .inp", name);
		*oe = 0;
		int32_t want[1024];
		int nwant = 0;
		for (char *s = q; *s;) {
			char *end;
			long v = strtol(s, &end, 10);
			if (end == s)
				break;
			ck_assert_int_lt(nwant, 1024);
			want[nwant++] = (int32_t)v;
			s = end;
		}
		int32_t *ids;
		int n = tokenizer_encode(t, p, (size_t)(e - p), 0, 0, &ids, err,
					 sizeof err);
		ck_assert_msg(n >= 0, "%s", err);
		*e = 0;
		check_ids(name, p, ids, n, want, nwant);
		good++;
		/* decoding the reference ids gives the text back (these
		 * strings round-trip in both tokenizers, as in llama.cpp) */
		char *s = tokenizer_decode(t, want, nwant, NULL, err, sizeof err);
		ck_assert_msg(s, "%s", err);
		free(s);
		free(ids);
		nvec++;
		p = e + sizeof sep - 1;
		q = oe + 1;
	}
	ck_assert_int_eq(*p, 0);
	free(inp);
	free(out);
	return good;
}

START_TEST(golden_llama2_json)
{
	Tokenizer *t = load_hf("tiny-llama2");
	ck_assert_int_eq(tokenizer_n_vocab(t), 32000);
	ck_assert_int_eq(tokenizer_bos(t), 1);
	ck_assert_int_eq(tokenizer_eos(t), 2);
	ck_assert_int_eq(tokenizer_adds_bos(t), 1);
	ck_assert(tokenizer_is_eog(t, 2));
	ck_assert(!tokenizer_is_eog(t, 1));
	ck_assert_int_eq(tokenizer_find(t, "</s>"), 2);
	ck_assert_str_eq(tokenizer_id_text(t, 15043), "\xe2\x96\x81Hello");
	size_t pl;
	const unsigned char *pc = tokenizer_piece(t, 15043, &pl);
	ck_assert(pl == 6 && !memcmp(pc, " Hello", 6));
	pc = tokenizer_piece(t, 3 + 0xF0, &pl); /* <0xF0> */
	ck_assert(pl == 1 && pc[0] == 0xF0);
	ck_assert_ptr_null(tokenizer_piece(t, 32000, &pl));
	ck_assert(tokenizer_is_special(t, 1) && !tokenizer_is_special(t, 15043));
	/* continuation streaming keeps the space decode() strips */
	TokenStream ts;
	char buf[TOKSTREAM_MAX_PIECE];
	tokstream_init(&ts, t);
	ck_assert_int_eq(tokstream_push(&ts, 15043, buf, sizeof buf), 5);
	tokstream_init(&ts, t);
	ts.first = 0;
	ck_assert_int_eq(tokstream_push(&ts, 15043, buf, sizeof buf), 6);
	golden(t, "tiny-llama2");
	tokenizer_free(t);
}
END_TEST

START_TEST(golden_llama3_json)
{
	Tokenizer *t = load_hf("tiny-llama3");
	ck_assert_int_eq(tokenizer_n_vocab(t), 50257);
	ck_assert_int_eq(tokenizer_bos(t), 50256);
	ck_assert_int_eq(tokenizer_eos(t), 50256);
	ck_assert_int_eq(tokenizer_adds_bos(t), 0);
	ck_assert(tokenizer_is_eog(t, 50256));
	golden(t, "tiny-llama3");
	tokenizer_free(t);
}
END_TEST

START_TEST(vectors_spm_json)
{
	Tokenizer *t = load_hf("tiny-llama2");
	ck_assert_int_eq(vocab_vectors(t, "llama-spm"), 46);
	tokenizer_free(t);
}
END_TEST

START_TEST(vectors_gpt2_json)
{
	Tokenizer *t = load_hf("tiny-llama3");
	ck_assert_int_eq(vocab_vectors(t, "gpt-2"), 46);
	tokenizer_free(t);
}
END_TEST

START_TEST(vectors_spm_gguf)
{
	gguf_file *g;
	Tokenizer *t = load_gguf("vocab/ggml-vocab-llama-spm.gguf", &g);
	ck_assert_int_eq(gguf_tensor_count(g), 0); /* vocab-only file */
	ck_assert_int_eq(tokenizer_n_vocab(t), 32000);
	ck_assert_int_eq(tokenizer_bos(t), 1);
	ck_assert_int_eq(tokenizer_eos(t), 2);
	ck_assert(tokenizer_is_eog(t, 2));
	ck_assert_int_eq(vocab_vectors(t, "llama-spm"), 46);
	/* <unk> (type unknown) is matched like the control tokens, as HF
	 * matches it as an added token */
	Tokenizer *h = load_hf("tiny-llama2");
	static const char txt[] = "<unk>x<s></s> <unk>";
	int32_t *a, *b;
	char err[256];
	int na = tokenizer_encode(t, txt, sizeof txt - 1, 1, 1, &a, err,
				  sizeof err);
	int nb = tokenizer_encode(h, txt, sizeof txt - 1, 1, 1, &b, err,
				  sizeof err);
	/* HF tokenizers 0.23.3 on tiny-llama2's tokenizer.json */
	static const int32_t want[] = {1, 0, 921, 1, 2, 259, 0};
	check_ids("unk gguf", txt, a, na, want, 7);
	check_ids("unk json", txt, b, nb, want, 7);
	free(a);
	free(b);
	tokenizer_free(h);
	tokenizer_free(t);
	gguf_close(g);
}
END_TEST

START_TEST(vectors_gpt2_gguf)
{
	gguf_file *g;
	Tokenizer *t = load_gguf("vocab/ggml-vocab-gpt-2.gguf", &g);
	ck_assert_int_eq(gguf_tensor_count(g), 0);
	ck_assert_int_eq(tokenizer_n_vocab(t), 50257);
	ck_assert_int_eq(tokenizer_adds_bos(t), 0);
	ck_assert(tokenizer_is_eog(t, 50256));
	ck_assert_int_eq(vocab_vectors(t, "gpt-2"), 46);
	tokenizer_free(t);
	gguf_close(g);
}
END_TEST

START_TEST(golden_llama2_gguf)
{
	gguf_file *g;
	Tokenizer *t = load_gguf("models/tiny-llama2-f16.gguf", &g);
	ck_assert_int_eq(tokenizer_adds_bos(t), 1);
	golden(t, "tiny-llama2");
	tokenizer_free(t);
	gguf_close(g);
}
END_TEST

START_TEST(golden_llama3_gguf)
{
	gguf_file *g;
	Tokenizer *t = load_gguf("models/tiny-llama3-q8_0.gguf", &g);
	ck_assert_int_eq(tokenizer_adds_bos(t), 0);
	golden(t, "tiny-llama3");
	tokenizer_free(t);
	gguf_close(g);
}
END_TEST

/* A long mixed-script text: tokenizer.json and GGUF give the same ids,
 * and encoding is fast (figure printed). */
static void json_vs_gguf(const char *model, const char *gguf)
{
	static const char *parts[] = {
		"Hello, world! ", "нещо на Бълг ", "日本語のテキスト ",
		"  spaces\t\ttabs\n\n", "3333333 ", "it's we'Ve ",
		"\xf0\x9f\xa6\x99.cpp ", "Ça va? ", "((x)) => {} ", "\r\n",
	};
	size_t cap = 1 << 20, n = 0;
	char *text = malloc(cap);
	ck_assert_ptr_nonnull(text);
	unsigned seed = 7;
	while (n + 64 < cap) {
		const char *p = parts[rand_r(&seed) % 10];
		memcpy(text + n, p, strlen(p));
		n += strlen(p);
	}
	gguf_file *g;
	Tokenizer *a = load_hf(model), *b = load_gguf(gguf, &g);
	char err[256];
	int32_t *ia, *ib;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int na = tokenizer_encode(a, text, n, 1, 1, &ia, err, sizeof err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_msg(na > 0, "%s", err);
	int nb = tokenizer_encode(b, text, n, 1, 1, &ib, err, sizeof err);
	ck_assert_msg(nb > 0, "%s", err);
	double s = (double)(t1.tv_sec - t0.tv_sec) +
		   (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	printf("%s: encoded %zu bytes -> %d tokens in %.3f s (%.1f MB/s)\n",
	       model, n, na, s, (double)n / s / 1e6);
	ck_assert_int_eq(na, nb);
	for (int i = 0; i < na; i++)
		ck_assert_int_eq(ia[i], ib[i]);
	if (a->spm_word_safe) {
		/* BPE of words apart == BPE of the whole text */
		a->spm_word_safe = 0;
		int32_t *ic;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int nc = tokenizer_encode(a, text, n, 1, 1, &ic, err, sizeof err);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("%s: as one word: %.3f s\n", model,
		       (double)(t1.tv_sec - t0.tv_sec) +
		       (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
		ck_assert_int_eq(nc, na);
		for (int i = 0; i < na; i++)
			ck_assert_int_eq(ia[i], ic[i]);
		free(ic);
		a->spm_word_safe = 1;
	}
	/* decode(encode(text)) == text for valid UTF-8 without specials */
	size_t len;
	char *back = tokenizer_decode(a, ia + tokenizer_adds_bos(a),
				      na - tokenizer_adds_bos(a), &len, err,
				      sizeof err);
	ck_assert_msg(back, "%s", err);
	ck_assert_uint_eq(len, n);
	ck_assert(memcmp(back, text, n) == 0);
	free(back);
	free(ia);
	free(ib);
	free(text);
	tokenizer_free(a);
	tokenizer_free(b);
	gguf_close(g);
}

START_TEST(long_text)
{
	json_vs_gguf("tiny-llama2", "vocab/ggml-vocab-llama-spm.gguf");
	json_vs_gguf("tiny-llama3", "vocab/ggml-vocab-gpt-2.gguf");
}
END_TEST

/* Pre-tokenizer splits against HF tokenizers (gpt-2, llama3, qwen2) and a
 * regex-engine emulation of llama.cpp's staged splits (the other kinds):
 * tests/data/pretok.json from contrib/gen_pretok_vectors.py. */
START_TEST(pretokenizers)
{
	static const struct {
		const char *name;
		int pre;
	} kinds[] = {
		{"gpt-2", PRE_GPT2},         {"llama3", PRE_LLAMA3},
		{"qwen2", PRE_QWEN2},        {"starcoder", PRE_STARCODER},
		{"falcon", PRE_FALCON},      {"default", PRE_DEFAULT},
		{"deepseek-llm", PRE_DEEPSEEK_LLM},
		{"deepseek-coder", PRE_DEEPSEEK_CODER},
	};
	char err[256];
	json_doc *d = json_parse_file(test_data("pretok.json"), 0, err,
				      sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *cases = json_get(json_root(d), "cases");
	ck_assert_uint_gt(json_count(cases), 400);
	int per_kind[8] = {0};
	for (size_t k = 0; k < json_count(cases); k++) {
		const json_value *c = json_at(cases, k);
		const char *name = json_str(json_get(c, "pre"), "");
		int pre = -1, ki = -1;
		for (int i = 0; i < 8; i++)
			if (!strcmp(name, kinds[i].name)) {
				pre = kinds[i].pre;
				ki = i;
			}
		ck_assert_msg(pre >= 0, "kind %s", name);
		const json_value *tx = json_get(c, "text");
		const json_value *want = json_get(c, "pieces");
		size_t *ends = malloc((tx->u.str.len + 1) * sizeof *ends);
		ck_assert_ptr_nonnull(ends);
		long n = tok_pre_split(pre, tx->u.str.s, tx->u.str.len, ends);
		int same = n == (long)json_count(want);
		size_t a = 0;
		for (long i = 0; same && i < n; i++) {
			const json_value *w = json_at(want, (size_t)i);
			same = ends[i] - a == w->u.str.len &&
			       !memcmp(tx->u.str.s + a, w->u.str.s, w->u.str.len);
			a = ends[i];
		}
		if (!same) {
			char got[2048];
			size_t o = 0;
			a = 0;
			for (long i = 0; i < n && o + 64 < sizeof got; i++) {
				o += (size_t)snprintf(got + o, sizeof got - o,
						      "[%.*s]", (int)(ends[i] - a),
						      tx->u.str.s + a);
				a = ends[i];
			}
			ck_abort_msg("%s: \"%s\": got %s (%ld pieces, want %zu)",
				     name, tx->u.str.s, got, n, json_count(want));
		}
		per_kind[ki]++;
		free(ends);
	}
	for (int i = 0; i < 8; i++)
		ck_assert_int_ge(per_kind[i], 50);
	json_free(d);
}
END_TEST

/* NFC against Python's unicodedata.normalize (tests/data/pretok.json). */
START_TEST(nfc)
{
	char err[256];
	json_doc *d = json_parse_file(test_data("pretok.json"), 0, err,
				      sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *cases = json_get(json_root(d), "nfc");
	ck_assert_uint_ge(json_count(cases), 300);
	int changed = 0;
	for (size_t k = 0; k < json_count(cases); k++) {
		const json_value *in = json_at(json_at(cases, k), 0);
		const json_value *want = json_at(json_at(cases, k), 1);
		char *o = NULL;
		size_t on = 0;
		ck_assert_int_eq(unicode_nfc(in->u.str.s, in->u.str.len, &o, &on),
				 0);
		const char *got = o ? o : in->u.str.s;
		size_t gn = o ? on : in->u.str.len;
		ck_assert_msg(gn == want->u.str.len &&
			      !memcmp(got, want->u.str.s, gn),
			      "NFC case %zu: got \"%.*s\" want \"%s\"", k,
			      (int)gn, got, want->u.str.s);
		changed += in->u.str.len != want->u.str.len ||
			   memcmp(in->u.str.s, want->u.str.s, want->u.str.len);
		free(o);
	}
	ck_assert_int_gt(changed, 100);
	/* invalid bytes pass through */
	char *o = NULL;
	size_t on;
	ck_assert_int_eq(unicode_nfc("e\xcc\x81\xff\xcc", 5, &o, &on), 0);
	ck_assert_ptr_nonnull(o);
	ck_assert_uint_eq(on, 4);
	ck_assert(!memcmp(o, "\xc3\xa9\xff\xcc", 4));
	free(o);
	json_free(d);
}
END_TEST

static void write_file(const char *dir, const char *name, const char *text,
		       size_t len)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	ck_assert_msg(f, "%s: %s", path, strerror(errno));
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

/* Write variant v of tok_variants.json into the fresh directory made from
 * the template dir: the stored head spliced with the base model's "model"
 * section (its last key), plus the config files. */
static void make_variant(const json_value *v, char *dir)
{
	char rel[256];
	snprintf(rel, sizeof rel, "models/%s/tokenizer.json",
		 json_str(json_get(v, "base"), ""));
	size_t blen;
	char *base = slurp(test_data(rel), &blen);
	char *model = strstr(base, "\n  \"model\": {");
	ck_assert_ptr_nonnull(model);
	const char *im = "\"ignore_merges\": false";
	char *ig = strstr(model, im);
	ck_assert_ptr_nonnull(ig);
	const json_value *head = json_get(v, "head");
	size_t cap = blen + head->u.str.len + 64, o = 0;
	char *text = malloc(cap);
	ck_assert_ptr_nonnull(text);
	o += (size_t)snprintf(text, cap, "{%s,", head->u.str.s);
	memcpy(text + o, model, (size_t)(ig - model));
	o += (size_t)(ig - model);
	o += (size_t)snprintf(text + o, cap - o, "\"ignore_merges\": %s",
			      json_bool(json_get(v, "ignore_merges"), 0)
			      ? "true" : "false");
	size_t rest = strlen(ig + strlen(im));
	memcpy(text + o, ig + strlen(im), rest);
	o += rest;
	ck_assert_ptr_nonnull(mkdtemp(dir));
	write_file(dir, "tokenizer.json", text, o);
	const json_value *files = json_get(v, "files");
	for (size_t f = 0; f < json_count(files); f++) {
		const json_value *fv = files->u.obj.vals[f];
		write_file(dir, files->u.obj.keys[f]->u.str.s, fv->u.str.s,
			   fv->u.str.len);
	}
	free(text);
	free(base);
}

static void remove_variant(const json_value *v, const char *dir)
{
	const json_value *files = json_get(v, "files");
	char path[512];
	for (size_t f = 0; f < json_count(files); f++) {
		snprintf(path, sizeof path, "%s/%s", dir,
			 files->u.obj.keys[f]->u.str.s);
		unlink(path);
	}
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/vocab.gguf", dir);
	unlink(path);
	rmdir(dir);
}

/* tokenizer.json variants (Llama-3 / Qwen2 style byte-level with added
 * tokens and configs; Metaspace sentencepiece) against HF tokenizers'
 * encode (add_special_tokens) and decode: tests/data/tok_variants.json from
 * contrib/gen_tok_variants.py. The variant file is the stored head spliced
 * with the base model's "model" section (its last key). */
START_TEST(hf_variants)
{
	char err[512];
	json_doc *d = json_parse_file(test_data("tok_variants.json"), 0, err,
				      sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *vs = json_get(json_root(d), "variants");
	ck_assert_uint_eq(json_count(vs), 4);
	for (size_t k = 0; k < json_count(vs); k++) {
		const json_value *v = json_at(vs, k);
		const char *name = json_str(json_get(v, "name"), "");
		char dir[] = "/tmp/check_tokvar_XXXXXX";
		make_variant(v, dir);
		Tokenizer *t = NULL;
		int rc = tokenizer_load_hf(dir, &t, err, sizeof err);
		ck_assert_msg(rc == 0, "%s: %s", name, err);
		int64_t x;
		json_int(json_get(v, "bos"), -1, INT32_MAX, &x);
		ck_assert_int_eq(tokenizer_bos(t), x);
		json_int(json_get(v, "eos"), -1, INT32_MAX, &x);
		ck_assert_int_eq(tokenizer_eos(t), x);
		json_int(json_get(v, "adds_bos"), 0, 1, &x);
		ck_assert_int_eq(tokenizer_adds_bos(t), x);
		const json_value *eog = json_get(v, "eog");
		for (size_t i = 0; i < json_count(eog); i++) {
			json_int(json_at(eog, i), 0, INT32_MAX, &x);
			ck_assert_msg(tokenizer_is_eog(t, (int32_t)x),
				      "%s: %d not eog", name, (int)x);
		}
		eog = json_get(v, "not_eog");
		for (size_t i = 0; i < json_count(eog); i++) {
			json_int(json_at(eog, i), 0, INT32_MAX, &x);
			ck_assert_msg(!tokenizer_is_eog(t, (int32_t)x),
				      "%s: %d eog", name, (int)x);
		}
		const json_value *cases = json_get(v, "cases");
		ck_assert_uint_gt(json_count(cases), 60);
		for (size_t i = 0; i < json_count(cases); i++) {
			const json_value *c = json_at(cases, i);
			const json_value *tx = json_get(c, "text");
			int nwant;
			int32_t *want = json_ids(json_get(c, "ids"), &nwant);
			int32_t *ids;
			int n = tokenizer_encode(t, tx->u.str.s, tx->u.str.len,
						 1, 1, &ids, err, sizeof err);
			ck_assert_msg(n >= 0, "%s", err);
			check_ids(name, tx->u.str.s, ids, n, want, nwant);
			char *s = tokenizer_decode(t, want, nwant, NULL, err,
						   sizeof err);
			ck_assert_msg(s, "%s", err);
			ck_assert_msg(!strcmp(s, json_str(json_get(c, "decoded"),
							 "")),
				      "%s: decode \"%s\" got \"%s\"", name,
				      json_str(json_get(c, "decoded"), ""), s);
			free(s);
			free(ids);
			free(want);
		}
		tokenizer_free(t);
		remove_variant(v, dir);
	}
	json_free(d);
}
END_TEST

/* A minimal GGUF v3 writer for vocab-only files (format in gguf.h). */
typedef struct {
	FILE *f;
	uint64_t nkv; /* kv pairs written */
} GgufW;

static void gw_raw(GgufW *w, const void *p, size_t n)
{
	ck_assert_uint_eq(fwrite(p, 1, n, w->f), n);
}
static void gw_u32(GgufW *w, uint32_t v) { gw_raw(w, &v, 4); }
static void gw_u64(GgufW *w, uint64_t v) { gw_raw(w, &v, 8); }
static void gw_str(GgufW *w, const char *s, size_t n)
{
	gw_u64(w, n);
	gw_raw(w, s, n);
}
static void gw_key(GgufW *w, const char *k, uint32_t type)
{
	gw_str(w, k, strlen(k));
	gw_u32(w, type);
	w->nkv++;
}

/* The llama3 / qwen2 variants as vocab-only GGUFs the way llama.cpp's
 * converter writes them (pre "llama-bpe" / "qwen2", added tokens as
 * control / user-defined, merges "a b"): their encodings must equal HF's
 * except where llama.cpp itself differs (no NFC, no lstrip/rstrip). */
START_TEST(gguf_variants)
{
	char err[512];
	json_doc *d = json_parse_file(test_data("tok_variants.json"), 0, err,
				      sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *vs = json_get(json_root(d), "variants");
	int compared = 0;
	for (size_t k = 0; k < 2; k++) {
		const json_value *v = json_at(vs, k);
		const char *name = json_str(json_get(v, "name"), "");
		const char *pre = !strcmp(name, "llama3") ? "llama-bpe" : "qwen2";
		char dir[] = "/tmp/check_tokvar_XXXXXX";
		make_variant(v, dir);
		Tokenizer *h = NULL;
		ck_assert_msg(tokenizer_load_hf(dir, &h, err, sizeof err) == 0,
			      "%s", err);
		char path[512];
		snprintf(path, sizeof path, "%s/tokenizer.json", dir);
		json_doc *tj = json_parse_file(path, 0, err, sizeof err);
		ck_assert_msg(tj, "%s", err);
		const json_value *merges =
			json_get(json_get(json_root(tj), "model"), "merges");
		snprintf(path, sizeof path, "%s/vocab.gguf", dir);
		GgufW w = {fopen(path, "wb"), 0};
		ck_assert_ptr_nonnull(w.f);
		gw_raw(&w, "GGUF", 4);
		gw_u32(&w, 3);
		gw_u64(&w, 0);
		gw_u64(&w, 0); /* kv count, patched below */
		gw_key(&w, "general.architecture", GGUF_T_STRING);
		gw_str(&w, "llama", 5);
		gw_key(&w, "tokenizer.ggml.model", GGUF_T_STRING);
		gw_str(&w, "gpt2", 4);
		gw_key(&w, "tokenizer.ggml.pre", GGUF_T_STRING);
		gw_str(&w, pre, strlen(pre));
		int nv = tokenizer_n_vocab(h);
		gw_key(&w, "tokenizer.ggml.tokens", GGUF_T_ARRAY);
		gw_u32(&w, GGUF_T_STRING);
		gw_u64(&w, (uint64_t)nv);
		for (int i = 0; i < nv; i++) {
			const char *tx = tokenizer_id_text(h, i);
			gw_str(&w, tx, strlen(tx));
		}
		gw_key(&w, "tokenizer.ggml.token_type", GGUF_T_ARRAY);
		gw_u32(&w, GGUF_T_INT32);
		gw_u64(&w, (uint64_t)nv);
		for (int i = 0; i < nv; i++)
			gw_u32(&w, h->type[i]);
		gw_key(&w, "tokenizer.ggml.merges", GGUF_T_ARRAY);
		gw_u32(&w, GGUF_T_STRING);
		gw_u64(&w, json_count(merges));
		for (size_t i = 0; i < json_count(merges); i++) {
			const json_value *m = json_at(merges, i);
			char buf[1024];
			int n = snprintf(buf, sizeof buf, "%s %s",
					 json_str(json_at(m, 0), ""),
					 json_str(json_at(m, 1), ""));
			gw_str(&w, buf, (size_t)n);
		}
		if (tokenizer_bos(h) >= 0) {
			gw_key(&w, "tokenizer.ggml.bos_token_id", GGUF_T_UINT32);
			gw_u32(&w, (uint32_t)tokenizer_bos(h));
		}
		gw_key(&w, "tokenizer.ggml.eos_token_id", GGUF_T_UINT32);
		gw_u32(&w, (uint32_t)tokenizer_eos(h));
		ck_assert_int_eq(fseek(w.f, 16, SEEK_SET), 0);
		gw_u64(&w, w.nkv);
		ck_assert_int_eq(fclose(w.f), 0);
		json_free(tj);

		gguf_file *g = gguf_open(path, err, sizeof err);
		ck_assert_msg(g, "%s", err);
		Tokenizer *t = NULL;
		ck_assert_msg(tokenizer_load_gguf(g, &t, err, sizeof err) == 0,
			      "%s", err);
		/* llama.cpp defaults: BOS for llama3 pre, none for qwen2 */
		ck_assert_int_eq(tokenizer_adds_bos(t), tokenizer_adds_bos(h));
		ck_assert_int_eq(tokenizer_eos(t), tokenizer_eos(h));
		ck_assert(tokenizer_is_eog(t, tokenizer_eos(h)));
		const json_value *cases = json_get(v, "cases");
		for (size_t i = 0; i < json_count(cases); i++) {
			const json_value *c = json_at(cases, i);
			const json_value *tx = json_get(c, "text");
			char *nfc = NULL;
			size_t nn;
			ck_assert_int_eq(unicode_nfc(tx->u.str.s, tx->u.str.len,
						     &nfc, &nn), 0);
			int differs = nfc && (nn != tx->u.str.len ||
					      memcmp(nfc, tx->u.str.s, nn));
			free(nfc);
			if ((differs && !strcmp(name, "qwen2")) ||
			    strstr(tx->u.str.s, "<mask>") ||
			    strstr(tx->u.str.s, "<|tool|>"))
				continue;
			int nwant;
			int32_t *want = json_ids(json_get(c, "ids"), &nwant);
			int32_t *ids;
			int n = tokenizer_encode(t, tx->u.str.s, tx->u.str.len,
						 1, 1, &ids, err, sizeof err);
			ck_assert_msg(n >= 0, "%s", err);
			check_ids(pre, tx->u.str.s, ids, n, want, nwant);
			compared++;
			free(ids);
			free(want);
		}
		tokenizer_free(t);
		gguf_close(g);
		tokenizer_free(h);
		remove_variant(v, dir);
	}
	ck_assert_int_gt(compared, 120);
	json_free(d);
}
END_TEST

/* A tiny vocab-only GGUF: tokens a b ab, optional pieces per flag. */
static int tiny_gguf(const char *path, const char *model, const char *pre,
		     int ntypes, const char *merge, int64_t bos, char *err,
		     size_t errlen)
{
	static const char *toks[] = {"a", "b", "ab"};
	GgufW w = {fopen(path, "wb"), 0};
	ck_assert_ptr_nonnull(w.f);
	gw_raw(&w, "GGUF", 4);
	gw_u32(&w, 3);
	gw_u64(&w, 0);
	gw_u64(&w, 0);
	gw_key(&w, "tokenizer.ggml.model", GGUF_T_STRING);
	gw_str(&w, model, strlen(model));
	if (pre) {
		gw_key(&w, "tokenizer.ggml.pre", GGUF_T_STRING);
		gw_str(&w, pre, strlen(pre));
	}
	gw_key(&w, "tokenizer.ggml.tokens", GGUF_T_ARRAY);
	gw_u32(&w, GGUF_T_STRING);
	gw_u64(&w, 3);
	for (int i = 0; i < 3; i++)
		gw_str(&w, toks[i], strlen(toks[i]));
	gw_key(&w, "tokenizer.ggml.token_type", GGUF_T_ARRAY);
	gw_u32(&w, GGUF_T_INT32);
	gw_u64(&w, (uint64_t)ntypes);
	for (int i = 0; i < ntypes; i++)
		gw_u32(&w, 1);
	if (merge) {
		gw_key(&w, "tokenizer.ggml.merges", GGUF_T_ARRAY);
		gw_u32(&w, GGUF_T_STRING);
		gw_u64(&w, 1);
		gw_str(&w, merge, strlen(merge));
	}
	gw_key(&w, "tokenizer.ggml.bos_token_id", GGUF_T_INT64);
	gw_u64(&w, (uint64_t)bos);
	ck_assert_int_eq(fseek(w.f, 16, SEEK_SET), 0);
	gw_u64(&w, w.nkv);
	ck_assert_int_eq(fclose(w.f), 0);
	gguf_file *g = gguf_open(path, err, errlen);
	ck_assert_msg(g, "%s", err);
	Tokenizer *t = NULL;
	err[0] = 0;
	int rc = tokenizer_load_gguf(g, &t, err, errlen);
	if (rc == 0) {
		/* the one merge is used; an out-of-range bos is dropped */
		int32_t *ids;
		int n = tokenizer_encode(t, "ab", 2, 1, 0, &ids, err, errlen);
		ck_assert_int_eq(n, 1);
		ck_assert_int_eq(ids[0], 2);
		ck_assert_int_eq(tokenizer_bos(t), bos < 3 ? bos : -1);
		free(ids);
		tokenizer_free(t);
	} else {
		ck_assert_msg(err[0], "no message");
	}
	gguf_close(g);
	unlink(path);
	return rc;
}

START_TEST(malformed_gguf)
{
	char dir[] = "/tmp/check_tokgguf_XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char path[512], err[256];
	snprintf(path, sizeof path, "%s/v.gguf", dir);
	ck_assert_int_eq(tiny_gguf(path, "gpt2", "gpt-2", 3, "a b", 0, err,
				   sizeof err), 0);
	ck_assert_int_eq(tiny_gguf(path, "gpt2", NULL, 3, "a b", 99, err,
				   sizeof err), 0);
	ck_assert_int_eq(tiny_gguf(path, "bert", "gpt-2", 3, "a b", 0, err,
				   sizeof err), -1);
	ck_assert_int_eq(tiny_gguf(path, "gpt2", "nosuch", 3, "a b", 0, err,
				   sizeof err), -1);
	ck_assert_int_eq(tiny_gguf(path, "gpt2", "gpt-2", 2, "a b", 0, err,
				   sizeof err), -1);
	ck_assert_int_eq(tiny_gguf(path, "gpt2", "gpt-2", 3, "a c", 0, err,
				   sizeof err), -1);
	ck_assert_int_eq(tiny_gguf(path, "gpt2", "gpt-2", 3, "ab", 0, err,
				   sizeof err), -1);
	ck_assert_int_eq(tiny_gguf(path, "gpt2", "gpt-2", 3, NULL, 0, err,
				   sizeof err), -1);
	rmdir(dir);
}
END_TEST

/* Random bytes (mostly invalid UTF-8, specials' first bytes, spaces): encode
 * never fails and only yields valid ids; decode gives valid UTF-8. Random
 * valid UTF-8 without added-token texts round-trips exactly. */
static int valid_utf8(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		size_t l = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 :
			   c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
		if (!l || i + l > n)
			return 0;
		for (size_t k = 1; k < l; k++)
			if (((unsigned char)s[i + k] & 0xC0) != 0x80)
				return 0;
		i += l;
	}
	return 1;
}

static void random_text(Tokenizer *t, unsigned seed)
{
	static const char *alpha[] = {"a", "Z", " ", "  ", "\n", "\t", "'s",
				      "9", "\xc3\xa9", "\xe2\x80\x94",
				      "\xf0\x9f\xa6\x99", "\xe6\x97\xa5", ".",
				      "<", "|", "\xd0\xb1", "\r\n", "\xc2\xa0"};
	char err[256], buf[512];
	for (int round = 0; round < 300; round++) {
		size_t n = 0;
		int valid = round & 1;
		while (n < 400) {
			if (valid) {
				const char *a = alpha[rand_r(&seed) % 18];
				memcpy(buf + n, a, strlen(a));
				n += strlen(a);
			} else {
				buf[n++] = (char)(rand_r(&seed) & 0xFF);
			}
		}
		int32_t *ids;
		int k = tokenizer_encode(t, buf, n, round & 2, !valid, &ids, err,
					 sizeof err);
		ck_assert_msg(k >= 0, "%s", err);
		for (int i = 0; i < k; i++)
			ck_assert(ids[i] >= 0 && ids[i] < tokenizer_n_vocab(t));
		int skip = (round & 2) && tokenizer_adds_bos(t);
		size_t len;
		char *s = tokenizer_decode(t, ids + skip, k - skip, &len, err,
					   sizeof err);
		ck_assert_msg(s, "%s", err);
		ck_assert(valid_utf8(s, len));
		if (valid) {
			ck_assert_uint_eq(len, n);
			ck_assert(memcmp(s, buf, n) == 0);
		}
		free(s);
		free(ids);
	}
}

START_TEST(random_input)
{
	Tokenizer *t2 = load_hf("tiny-llama2");
	Tokenizer *t3 = load_hf("tiny-llama3");
	random_text(t2, 11);
	random_text(t3, 12);
	tokenizer_free(t2);
	tokenizer_free(t3);
}
END_TEST

/* Random id sequences (biased to byte tokens and multi-byte pieces so
 * UTF-8 sequences split across tokens): pushes + flush == decode. */
static void stream_equals_decode(Tokenizer *t, unsigned seed)
{
	int nv = tokenizer_n_vocab(t);
	char err[256];
	int32_t ids[64];
	char *piece = malloc(TOKSTREAM_MAX_PIECE);
	ck_assert_ptr_nonnull(piece);
	for (int round = 0; round < 400; round++) {
		int n = 1 + (int)(rand_r(&seed) % 40);
		for (int i = 0; i < n; i++) {
			unsigned r = (unsigned)rand_r(&seed);
			if (r % 3 == 0)
				ids[i] = (int32_t)(3 + r / 3 % 256); /* bytes (SPM) */
			else if (r % 3 == 1)
				ids[i] = (int32_t)(r / 3 % 256); /* BPE byte singles */
			else
				ids[i] = (int32_t)(r / 3 % (unsigned)nv);
		}
		size_t flen;
		char *full = tokenizer_decode(t, ids, n, &flen, err, sizeof err);
		ck_assert_msg(full, "%s", err);
		char *cat = malloc(flen + 1);
		ck_assert_ptr_nonnull(cat);
		size_t o = 0;
		TokenStream s;
		tokstream_init(&s, t);
		for (int i = 0; i < n; i++) {
			int k = tokstream_push(&s, ids[i], piece,
					       TOKSTREAM_MAX_PIECE);
			ck_assert_int_ge(k, 0);
			/* never a partial sequence out */
			if (k > 0) {
				unsigned char last = (unsigned char)piece[k - 1];
				ck_assert(last < 0x80 || (last & 0xC0) == 0x80);
			}
			ck_assert_uint_le(o + (size_t)k, flen);
			memcpy(cat + o, piece, (size_t)k);
			o += (size_t)k;
		}
		int k = tokstream_flush(&s, piece, TOKSTREAM_MAX_PIECE);
		ck_assert_int_ge(k, 0);
		ck_assert_uint_le(o + (size_t)k, flen);
		memcpy(cat + o, piece, (size_t)k);
		o += (size_t)k;
		ck_assert_uint_eq(o, flen);
		ck_assert(memcmp(cat, full, flen) == 0);
		free(cat);
		free(full);
	}
	free(piece);
}

START_TEST(stream_decode)
{
	Tokenizer *t2 = load_hf("tiny-llama2");
	Tokenizer *t3 = load_hf("tiny-llama3");
	stream_equals_decode(t2, 1);
	stream_equals_decode(t3, 2);
	/* a split 4-byte char: U+1F999 = F0 9F A6 99 as SPM byte tokens
	 * <0xF0>=243 ...: nothing comes out until the last byte */
	TokenStream s;
	char out[TOKSTREAM_MAX_PIECE];
	tokstream_init(&s, t2);
	int32_t bytes[4] = {3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99};
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(tokstream_push(&s, bytes[i], out, sizeof out), 0);
	ck_assert_int_eq(tokstream_push(&s, bytes[3], out, sizeof out), 4);
	ck_assert(memcmp(out, "\xF0\x9F\xA6\x99", 4) == 0);
	/* truncated: flush gives U+FFFD */
	tokstream_init(&s, t2);
	ck_assert_int_eq(tokstream_push(&s, bytes[0], out, sizeof out), 0);
	ck_assert_int_eq(tokstream_flush(&s, out, sizeof out), 3);
	ck_assert(memcmp(out, "\xEF\xBF\xBD", 3) == 0);
	ck_assert_int_eq(tokstream_push(&s, -1, out, sizeof out), -1);
	ck_assert_int_eq(tokstream_push(&s, 32000, out, sizeof out), -1);
	tokenizer_free(t2);
	tokenizer_free(t3);
}
END_TEST

/* Write text as dir/tokenizer.json and try to load it. */
static int try_load(const char *dir, const char *text, char *err, size_t n)
{
	char path[512];
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	fwrite(text, 1, strlen(text), f);
	fclose(f);
	Tokenizer *t = NULL;
	int rc = tokenizer_load_hf(dir, &t, err, n);
	if (rc == 0)
		tokenizer_free(t);
	return rc;
}

START_TEST(malformed_json)
{
	char dir[] = "/tmp/check_tokenizer_XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char err[512];
	static const char *bad[] = {
		"",
		"{",
		"[]",
		"{\"model\": 3}",
		"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, "
		"\"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}, "
		"\"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
		"\"merges\": [\"a c\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
		"\"merges\": [\"ab\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
		"\"merges\": [[\"a\", 3]]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
		"\"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
		"\"merges\": []}, \"added_tokens\": [{\"id\": \"x\"}], "
		"\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
		"\"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", "
		"\"pattern\": {\"Regex\": \"x+\"}}}",
		"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
		"\"merges\": []}}",
	};
	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		err[0] = 0;
		ck_assert_msg(try_load(dir, bad[k], err, sizeof err) == -1,
			      "case %zu loaded", k);
		ck_assert_msg(err[0], "case %zu: no message", k);
	}
	/* a truncated real file */
	size_t len;
	char *real = slurp(test_data("models/tiny-llama3/tokenizer.json"), &len);
	for (size_t cut = 1; cut < len; cut += len / 7) {
		char c = real[cut];
		real[cut] = 0;
		ck_assert(try_load(dir, real, err, sizeof err) == -1);
		real[cut] = c;
	}
	free(real);
	/* a minimal valid one loads */
	ck_assert_msg(try_load(dir, "{\"model\": {\"type\": \"BPE\", \"vocab\": "
			       "{\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": "
			       "[\"a b\"]}, \"pre_tokenizer\": {\"type\": "
			       "\"ByteLevel\"}}", err, sizeof err) == 0,
		      "%s", err);
	char path[512];
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	unlink(path);
	rmdir(dir);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("tokenizer");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, golden_llama2_json);
	tcase_add_test(tc, golden_llama3_json);
	tcase_add_test(tc, vectors_spm_json);
	tcase_add_test(tc, vectors_gpt2_json);
	tcase_add_test(tc, vectors_spm_gguf);
	tcase_add_test(tc, vectors_gpt2_gguf);
	tcase_add_test(tc, golden_llama2_gguf);
	tcase_add_test(tc, golden_llama3_gguf);
	tcase_add_test(tc, long_text);
	tcase_add_test(tc, pretokenizers);
	tcase_add_test(tc, nfc);
	tcase_add_test(tc, hf_variants);
	tcase_add_test(tc, gguf_variants);
	tcase_add_test(tc, malformed_gguf);
	tcase_add_test(tc, random_input);
	tcase_add_test(tc, stream_decode);
	tcase_add_test(tc, malformed_json);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
