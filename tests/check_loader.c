/*
 * check_loader.c - model_load: the tiny models as HF directories and as
 * GGUF files (converted by llama.cpp's convert_hf_to_gguf.py) give the same
 * Config, the numbers their config.json holds; the f16 GGUF's tensors equal
 * the safetensors ones once llama.cpp's Q/K row permutation is undone
 * (which pins our understanding of ROPE_INTERLEAVED); broken configs and
 * files fail with messages that name the problem.
 */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "model.h"
#include "testutil.h"
#include "tokenizer.h"

static const char *llama3_ovr[] = {
	"llama.rope.freq_base=float:500000",
	"llama.rope.scaling.type=str:llama3",
	"llama.rope.scaling.factor=float:8",
	"llama.rope.scaling.original_context_length=int:64",
	"llama.rope.scaling.low_freq_factor=float:1",
	"llama.rope.scaling.high_freq_factor=float:4",
};

static void load_ok(const char *rel, const ModelLoadOptions *o, Model *m)
{
	char err[512];
	int rc = model_load_ex(test_data(rel), o, m, err, sizeof err);
	ck_assert_msg(rc == 0, "%s: %s", rel, err);
}

/* Config fields from config.json (tiny-llama2). */
static void check_llama2_cfg(const Config *c)
{
	ck_assert_str_eq(c->arch, "llama");
	ck_assert_int_eq(c->dim, 64);
	ck_assert_int_eq(c->hidden_dim, 192);
	ck_assert_int_eq(c->n_layers, 2);
	ck_assert_int_eq(c->n_heads, 4);
	ck_assert_int_eq(c->n_kv_heads, 2);
	ck_assert_int_eq(c->head_dim, 16);
	ck_assert_int_eq(c->vocab_size, 32000);
	ck_assert_int_eq(c->max_seq_len, 512);
	ck_assert(c->norm_eps == 1e-5f);
	ck_assert(c->rope_theta == 10000.0f);
	ck_assert_int_eq(c->rope_scaling, ROPE_SCALE_NONE);
	ck_assert_int_eq(c->tied_embeddings, 0);
	ck_assert_int_eq(c->has_qkv_bias, 0);
}

static void check_llama3_cfg(const Config *c)
{
	ck_assert_str_eq(c->arch, "llama");
	ck_assert_int_eq(c->dim, 96);
	ck_assert_int_eq(c->hidden_dim, 256);
	ck_assert_int_eq(c->n_layers, 3);
	ck_assert_int_eq(c->n_heads, 6);
	ck_assert_int_eq(c->n_kv_heads, 2);
	ck_assert_int_eq(c->head_dim, 16);
	ck_assert_int_eq(c->vocab_size, 50257);
	ck_assert_int_eq(c->max_seq_len, 512);
	ck_assert(c->norm_eps == 1e-5f);
	ck_assert(c->rope_theta == 500000.0f);
	ck_assert_int_eq(c->rope_scaling, ROPE_SCALE_LLAMA3);
	ck_assert(c->rope_factor == 8.0f);
	ck_assert(c->rope_low_freq_factor == 1.0f);
	ck_assert(c->rope_high_freq_factor == 4.0f);
	ck_assert_int_eq(c->rope_orig_ctx, 64);
	ck_assert_int_eq(c->tied_embeddings, 1);
	ck_assert_int_eq(c->has_qkv_bias, 0);
}

/* Same Config apart from the RoPE layout. */
static void same_cfg(const Config *a, const Config *b)
{
	Config x = *a, y = *b;
	ck_assert_int_eq(x.rope_layout, ROPE_HALF);
	ck_assert_int_eq(y.rope_layout, ROPE_INTERLEAVED);
	x.rope_layout = y.rope_layout = 0;
	ck_assert(memcmp(&x, &y, sizeof x) == 0);
}

START_TEST(llama2_configs)
{
	Model hf, f16, q8;
	load_ok("models/tiny-llama2", NULL, &hf);
	load_ok("models/tiny-llama2-f16.gguf", NULL, &f16);
	load_ok("models/tiny-llama2-q8_0.gguf", NULL, &q8);
	check_llama2_cfg(&hf.cfg);
	same_cfg(&hf.cfg, &f16.cfg);
	same_cfg(&hf.cfg, &q8.cfg);
	ck_assert_int_eq(hf.format, MODEL_FMT_HF);
	ck_assert_int_eq(f16.format, MODEL_FMT_GGUF);
	ck_assert_str_eq(hf.quant, "bf16");
	ck_assert_str_eq(f16.quant, "f16");
	ck_assert_str_eq(q8.quant, "q8_0");
	/* embed + head 2*32000*64, per layer 2 norms 64, q/o 64x64,
	 * k/v 32x64, gate/up/down 192x64; final norm 64 */
	uint64_t want = 2ull * 32000 * 64 +
			2 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 +
			     3 * 192 * 64) + 64;
	ck_assert_uint_eq(hf.n_params, want);
	ck_assert_uint_eq(f16.n_params, want);
	ck_assert_uint_eq(hf.file_bytes, want * 2);
	ck_assert_ptr_nonnull(hf.w.output.data);
	ck_assert_ptr_ne(hf.w.output.data, hf.w.tok_embd.data);
	ck_assert_ptr_null(hf.w.layers[0].bq.data);
	ck_assert_ptr_null(f16.w.rope_freqs.data);
	ck_assert_ptr_null(hf.chat_template);
	ck_assert_ptr_nonnull(hf.tok);
	ck_assert_ptr_nonnull(f16.tok);
	ck_assert_int_eq(tokenizer_n_vocab(hf.tok), 32000);
	ck_assert_int_eq(tokenizer_n_vocab(f16.tok), 32000);
	ck_assert_int_eq(tokenizer_bos(hf.tok), 1); /* config bos_token_id */
	ck_assert_int_eq(tokenizer_bos(q8.tok), 1);
	ck_assert(strstr(hf.path, "tiny-llama2"));
	/* a file inside the directory stands for it */
	Model via;
	load_ok("models/tiny-llama2/config.json", NULL, &via);
	ck_assert_int_eq(via.format, MODEL_FMT_HF);
	ck_assert_str_eq(via.path, test_data("models/tiny-llama2"));
	same_cfg(&via.cfg, &f16.cfg);
	model_free(&via);
	model_free(&hf);
	model_free(&f16);
	model_free(&q8);
}
END_TEST

START_TEST(llama3_configs)
{
	Model hf, f16, q8, raw;
	ModelLoadOptions o = {llama3_ovr, 6, 0};
	load_ok("models/tiny-llama3", NULL, &hf);
	load_ok("models/tiny-llama3-f16.gguf", &o, &f16);
	load_ok("models/tiny-llama3-q8_0.gguf", &o, &q8);
	check_llama3_cfg(&hf.cfg);
	same_cfg(&hf.cfg, &f16.cfg);
	same_cfg(&hf.cfg, &q8.cfg);
	ck_assert_str_eq(hf.quant, "f16");
	ck_assert_ptr_eq(hf.w.output.data, hf.w.tok_embd.data); /* tied */
	ck_assert_ptr_eq(f16.w.output.data, f16.w.tok_embd.data);
	ck_assert_int_eq(tokenizer_n_vocab(hf.tok), 50257);
	ck_assert_int_eq(tokenizer_n_vocab(q8.tok), 50257);
	ck_assert_int_eq(tokenizer_eos(f16.tok), 50256);
	/* the known converter gap: without overrides the GGUF has no rope
	 * metadata, so defaults apply */
	load_ok("models/tiny-llama3-f16.gguf", NULL, &raw);
	ck_assert(raw.cfg.rope_theta == 10000.0f);
	ck_assert_int_eq(raw.cfg.rope_scaling, ROPE_SCALE_NONE);
	model_free(&raw);
	model_free(&hf);
	model_free(&f16);
	model_free(&q8);
}
END_TEST

static float elem(const Tensor *t, int64_t r, int64_t c)
{
	const uint8_t *row = (const uint8_t *)t->data +
			     (size_t)r * dtype_row_bytes(t->type, t->cols);
	if (t->type == DT_F32) {
		float f;
		memcpy(&f, row + c * 4, 4);
		return f;
	}
	uint16_t h;
	memcpy(&h, row + c * 2, 2);
	return t->type == DT_F16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

/* HF row of GGUF row r in a Q/K matrix of heads of hd rows. */
static int64_t unpermute(int64_t r, int hd)
{
	int64_t h = r / hd, w = r % hd;
	return h * hd + (w % 2) * (hd / 2) + w / 2;
}

/* Compare every element; perm: undo the Q/K permutation. Returns the
 * number of mismatches (tolerance covers bf16 -> f16 subnormals). */
static int64_t diff(const Tensor *hf, const Tensor *gg, int perm, int hd)
{
	ck_assert_int_eq(hf->rows, gg->rows);
	ck_assert_int_eq(hf->cols, gg->cols);
	int64_t bad = 0;
	for (int64_t r = 0; r < gg->rows; r++) {
		int64_t hr = perm ? unpermute(r, hd) : r;
		for (int64_t c = 0; c < gg->cols; c++) {
			float a = elem(hf, hr, c), b = elem(gg, r, c);
			if (fabsf(a - b) > 1e-7f + 1e-3f * fabsf(a))
				bad++;
		}
	}
	return bad;
}

static void compare_weights(const char *hfdir, const char *gguf,
			    const ModelLoadOptions *o)
{
	Model hf, gg;
	load_ok(hfdir, NULL, &hf);
	load_ok(gguf, o, &gg);
	int hd = hf.cfg.head_dim;
	ck_assert_int_eq(diff(&hf.w.tok_embd, &gg.w.tok_embd, 0, hd), 0);
	ck_assert_int_eq(diff(&hf.w.output, &gg.w.output, 0, hd), 0);
	ck_assert_int_eq(diff(&hf.w.out_norm, &gg.w.out_norm, 0, hd), 0);
	for (int l = 0; l < hf.cfg.n_layers; l++) {
		LayerWeights *a = &hf.w.layers[l], *b = &gg.w.layers[l];
		ck_assert_int_eq(diff(&a->wq, &b->wq, 1, hd), 0);
		ck_assert_int_eq(diff(&a->wk, &b->wk, 1, hd), 0);
		/* and the permutation is real: read straight they differ */
		ck_assert_int_gt(diff(&a->wq, &b->wq, 0, hd), 0);
		ck_assert_int_gt(diff(&a->wk, &b->wk, 0, hd), 0);
		ck_assert_int_eq(diff(&a->wv, &b->wv, 0, hd), 0);
		ck_assert_int_eq(diff(&a->wo, &b->wo, 0, hd), 0);
		ck_assert_int_eq(diff(&a->w_gate, &b->w_gate, 0, hd), 0);
		ck_assert_int_eq(diff(&a->w_up, &b->w_up, 0, hd), 0);
		ck_assert_int_eq(diff(&a->w_down, &b->w_down, 0, hd), 0);
		ck_assert_int_eq(diff(&a->attn_norm, &b->attn_norm, 0, hd), 0);
		ck_assert_int_eq(diff(&a->ffn_norm, &b->ffn_norm, 0, hd), 0);
	}
	model_free(&hf);
	model_free(&gg);
}

/* Q8_0 rows against the HF source: each element within half a
 * quantisation step d = amax/127 of its block, plus the f16 rounding of d
 * times |q| <= 127 (127 * 2^-11 d = 0.062 d): 0.57 d. Returns mismatches. */
static int64_t diff_q8(const Tensor *hf, const Tensor *gg, int perm, int hd)
{
	ck_assert_int_eq(gg->type, DT_Q8_0);
	ck_assert_int_eq(hf->rows, gg->rows);
	ck_assert_int_eq(hf->cols, gg->cols);
	size_t rb = dtype_row_bytes(gg->type, gg->cols);
	float *row = malloc((size_t)gg->cols * sizeof *row);
	int64_t bad = 0;
	for (int64_t r = 0; r < gg->rows; r++) {
		int64_t hr = perm ? unpermute(r, hd) : r;
		dequantize_row(gg->type, (const uint8_t *)gg->data + r * rb,
			       row, gg->cols);
		for (int64_t b = 0; b < gg->cols; b += 32) {
			float amax = 0;
			for (int j = 0; j < 32; j++)
				amax = fmaxf(amax, fabsf(elem(hf, hr, b + j)));
			float tol = amax / 127 * 0.57f + 1e-7f;
			for (int j = 0; j < 32; j++)
				if (fabsf(row[b + j] - elem(hf, hr, b + j)) >
				    tol)
					bad++;
		}
	}
	free(row);
	return bad;
}

static int64_t diff_any(const Tensor *hf, const Tensor *gg, int perm, int hd)
{
	return gg->type == DT_Q8_0 ? diff_q8(hf, gg, perm, hd)
				   : diff(hf, gg, perm, hd);
}

static void compare_q8(const char *hfdir, const char *gguf,
		       const ModelLoadOptions *o)
{
	Model hf, gg;
	load_ok(hfdir, NULL, &hf);
	load_ok(gguf, o, &gg);
	int hd = hf.cfg.head_dim;
	ck_assert_int_eq(gg.w.tok_embd.type, DT_Q8_0);
	ck_assert_int_eq(diff_any(&hf.w.tok_embd, &gg.w.tok_embd, 0, hd), 0);
	ck_assert_int_eq(diff_any(&hf.w.output, &gg.w.output, 0, hd), 0);
	for (int l = 0; l < hf.cfg.n_layers; l++) {
		LayerWeights *a = &hf.w.layers[l], *b = &gg.w.layers[l];
		ck_assert_int_eq(b->wq.type, DT_Q8_0);
		ck_assert_int_eq(diff_any(&a->wq, &b->wq, 1, hd), 0);
		ck_assert_int_eq(diff_any(&a->wk, &b->wk, 1, hd), 0);
		ck_assert_int_gt(diff_any(&a->wk, &b->wk, 0, hd), 0);
		ck_assert_int_eq(diff_any(&a->wv, &b->wv, 0, hd), 0);
		ck_assert_int_eq(diff_any(&a->wo, &b->wo, 0, hd), 0);
		ck_assert_int_eq(diff_any(&a->w_gate, &b->w_gate, 0, hd), 0);
		ck_assert_int_eq(diff_any(&a->w_up, &b->w_up, 0, hd), 0);
		ck_assert_int_eq(diff_any(&a->w_down, &b->w_down, 0, hd), 0);
		ck_assert_int_eq(diff_any(&a->ffn_norm, &b->ffn_norm, 0, hd),
				 0);
	}
	model_free(&hf);
	model_free(&gg);
}

START_TEST(q8_0_tensors_close)
{
	ModelLoadOptions o = {llama3_ovr, 6, 0};
	compare_q8("models/tiny-llama2", "models/tiny-llama2-q8_0.gguf", NULL);
	compare_q8("models/tiny-llama3", "models/tiny-llama3-q8_0.gguf", &o);
}
END_TEST

START_TEST(llama2_tensors_match)
{
	compare_weights("models/tiny-llama2", "models/tiny-llama2-f16.gguf",
			NULL);
}
END_TEST

START_TEST(llama3_tensors_match)
{
	ModelLoadOptions o = {llama3_ovr, 6, 0};
	compare_weights("models/tiny-llama3", "models/tiny-llama3-f16.gguf",
			&o);
}
END_TEST

/* ---- broken inputs ---- */

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof dir, "/tmp/check_loader_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void rm_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void write_in(const char *name, const char *text)
{
	char p[128];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static void link_in(const char *rel, const char *name)
{
	char p[128];
	char *target = realpath(test_data(rel), NULL); /* links need it */
	ck_assert_ptr_nonnull(target);
	snprintf(p, sizeof p, "%s/%s", dir, name);
	ck_assert_int_eq(symlink(target, p), 0);
	free(target);
}

/* A copy of tiny-llama2 with config.json replaced by cfg. */
static void hf_dir_with(const char *cfg)
{
	make_dir();
	link_in("models/tiny-llama2/model.safetensors", "model.safetensors");
	link_in("models/tiny-llama2/tokenizer.json", "tokenizer.json");
	link_in("models/tiny-llama2/tokenizer_config.json",
		"tokenizer_config.json");
	write_in("config.json", cfg);
}

#define CFG_BASE                                                         \
	"{\"model_type\":\"llama\",\"hidden_size\":64,"                  \
	"\"vocab_size\":32000,\"rms_norm_eps\":1e-5,"                    \
	"\"max_position_embeddings\":512,\"head_dim\":16,"
#define CFG_HEAD CFG_BASE "\"intermediate_size\":192,\"num_hidden_layers\":2,"

static const struct {
	const char *cfg, *msg;
} bad_cfgs[] = {
	{CFG_HEAD "\"num_attention_heads\":4,\"num_key_value_heads\":4}",
	 "model.layers.0.self_attn.k_proj.weight: expected 64x64, file has "
	 "32x64"},
	{CFG_BASE "\"num_attention_heads\":4,\"num_key_value_heads\":2,"
		  "\"tie_word_embeddings\":true,\"intermediate_size\":100,"
		  "\"num_hidden_layers\":2}",
	 "model.layers.0.mlp.gate_proj.weight: expected 100x64, file has "
	 "192x64"},
	{CFG_HEAD "\"num_attention_heads\":4,\"num_key_value_heads\":3}",
	 "key/value head count"},
	{"{\"model_type\":\"gpt2\",\"architectures\":[\"GPT2LMHeadModel\"]}",
	 "not supported"},
	{CFG_HEAD "\"num_key_value_heads\":2}", "num_attention_heads is "
						"missing"},
	{CFG_HEAD "\"num_attention_heads\":-4}", "num_attention_heads must"},
	{CFG_HEAD "\"num_attention_heads\":4,\"rope_scaling\":"
		  "{\"rope_type\":\"yarn\",\"factor\":4}}",
	 "yarn"},
	{CFG_HEAD "\"num_attention_heads\":4,\"rope_scaling\":"
		  "{\"rope_type\":\"llama3\",\"factor\":8}}",
	 "original_max_position_embeddings is missing"},
	{CFG_HEAD "\"num_attention_heads\":4,\"rope_scaling\":"
		  "{\"rope_type\":\"llama3\",\"factor\":8,"
		  "\"original_max_position_embeddings\":64,"
		  "\"low_freq_factor\":4,\"high_freq_factor\":1}}",
	 "llama3 rope scaling"},
	{CFG_BASE "\"num_attention_heads\":4,\"num_key_value_heads\":2,"
		  "\"intermediate_size\":192,\"num_hidden_layers\":3}",
	 "tensor model.layers.2.input_layernorm.weight is missing"},
	{CFG_HEAD "\"num_attention_heads\":4,\"tie_word_embeddings\":1}",
	 "tie_word_embeddings must be a boolean"},
	{"[1]", "not a JSON object"},
	{"{", "config.json"},
};

START_TEST(bad_hf_configs)
{
	char err[512] = "";
	Model m;
	hf_dir_with(bad_cfgs[_i].cfg);
	int rc = model_load(dir, &m, err, sizeof err);
	rm_dir();
	ck_assert_msg(rc == -1, "config %d accepted", _i);
	ck_assert_msg(strstr(err, bad_cfgs[_i].msg),
		      "config %d: \"%s\" lacks \"%s\"", _i, err,
		      bad_cfgs[_i].msg);
}
END_TEST

/* A valid variant: tokenizer_config chat_template list, sharded index. */
START_TEST(hf_template_and_index)
{
	char err[512];
	Model m;
	make_dir();
	link_in("models/tiny-llama2/config.json", "config.json");
	link_in("models/tiny-llama2/model.safetensors", "model-1.safetensors");
	link_in("models/tiny-llama2/tokenizer.json", "tokenizer.json");
	write_in("tokenizer_config.json",
		 "{\"chat_template\":[{\"name\":\"tool_use\",\"template\":"
		 "\"T\"},{\"name\":\"default\",\"template\":\"D{{x}}\"}]}");
	write_in("model.safetensors.index.json",
		 "{\"weight_map\":{\"lm_head.weight\":\"model-1.safetensors\"}}");
	ck_assert_msg(model_load(dir, &m, err, sizeof err) == 0, "%s", err);
	ck_assert_str_eq(m.chat_template, "D{{x}}");
	check_llama2_cfg(&m.cfg);
	model_free(&m);
	write_in("chat_template.jinja", "J{{ y }}\n");
	ck_assert_msg(model_load(dir, &m, err, sizeof err) == 0, "%s", err);
	ck_assert_str_eq(m.chat_template, "J{{ y }}\n");
	model_free(&m);
	char p[128];
	snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
	unlink(p);
	ck_assert(model_load(dir, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "no model.safetensors"), "%s", err);
	rm_dir();
	ck_assert(model_load("/nonexistent/model", &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "No such file"), "%s", err);
}
END_TEST


/* A qwen2-style directory: tiny-llama2's weights plus q/k/v biases in a
 * second shard (BF16), listed by an index; biases come out as F32. */
START_TEST(hf_qwen2_biases_sharded)
{
	char err[512];
	Model m;
	make_dir();
	link_in("models/tiny-llama2/model.safetensors", "a.safetensors");
	link_in("models/tiny-llama2/tokenizer.json", "tokenizer.json");
	write_in("config.json",
		 "{\"architectures\":[\"Qwen2ForCausalLM\"],"
		 "\"hidden_size\":64,\"intermediate_size\":192,"
		 "\"num_hidden_layers\":2,\"num_attention_heads\":4,"
		 "\"num_key_value_heads\":2,\"vocab_size\":32000,"
		 "\"max_position_embeddings\":512,\"rms_norm_eps\":1e-6,"
		 "\"rope_theta\":1000000.0,\"tie_word_embeddings\":false}");
	/* 6 bias vectors: q 64, k 32, v 32 per layer; value j of vector b is
	 * (b + 1) * 2^-(j % 8), exact in bf16 */
	char hdr[2048];
	size_t off = 0, len = 0;
	int sizes[3] = {64, 32, 32};
	const char *nm[3] = {"q", "k", "v"};
	len += (size_t)snprintf(hdr + len, sizeof hdr - len, "{");
	for (int l = 0, b = 0; l < 2; l++)
		for (int k = 0; k < 3; k++, b++) {
			len += (size_t)snprintf(
				hdr + len, sizeof hdr - len,
				"%s\"model.layers.%d.self_attn.%s_proj.bias\":"
				"{\"dtype\":\"BF16\",\"shape\":[%d],"
				"\"data_offsets\":[%zu,%zu]}",
				b ? "," : "", l, nm[k], sizes[k], off,
				off + 2 * (size_t)sizes[k]);
			off += 2 * (size_t)sizes[k];
		}
	len += (size_t)snprintf(hdr + len, sizeof hdr - len, "}");
	char p[128];
	snprintf(p, sizeof p, "%s/b.safetensors", dir);
	FILE *f = fopen(p, "wb");
	uint64_t hl = len;
	fwrite(&hl, 8, 1, f);
	fwrite(hdr, 1, len, f);
	for (int l = 0, b = 0; l < 2; l++)
		for (int k = 0; k < 3; k++, b++)
			for (int j = 0; j < sizes[k]; j++) {
				float v = ldexpf((float)(b + 1), -(j % 8));
				uint32_t bits;
				memcpy(&bits, &v, 4);
				uint16_t h = (uint16_t)(bits >> 16);
				fwrite(&h, 2, 1, f);
			}
	fclose(f);
	write_in("model.safetensors.index.json",
		 "{\"metadata\":{},\"weight_map\":{"
		 "\"lm_head.weight\":\"a.safetensors\","
		 "\"model.layers.1.self_attn.v_proj.bias\":\"b.safetensors\"}}");
	ck_assert_msg(model_load(dir, &m, err, sizeof err) == 0, "%s", err);
	ck_assert_str_eq(m.cfg.arch, "qwen2");
	ck_assert_int_eq(m.cfg.has_qkv_bias, 1);
	ck_assert(m.cfg.rope_theta == 1e6f && m.cfg.norm_eps == 1e-6f);
	const Tensor *bv = &m.w.layers[1].bv, *bq = &m.w.layers[0].bq;
	ck_assert_int_eq(bv->type, DT_F32);
	ck_assert(bv->rows == 1 && bv->cols == 32 && bv->nbytes == 128);
	ck_assert(((const float *)bv->data)[31] == 6.0f / 128);
	ck_assert(((const float *)bq->data)[63] == 1.0f / 128);
	ck_assert(((const float *)m.w.layers[0].bk.data)[8] == 2.0f);
	model_free(&m);
	/* qwen2 without its biases is an error naming the tensor */
	write_in("model.safetensors.index.json",
		 "{\"weight_map\":{\"lm_head.weight\":\"a.safetensors\"}}");
	ck_assert(model_load(dir, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "model.layers.0.self_attn.q_proj.bias is "
				  "missing"), "%s", err);
	rm_dir();
}
END_TEST

/* GGUF copy with the u32 value of key patched. */
static const char *gguf_with(const char *rel, const char *key, uint32_t v)
{
	FILE *f = fopen(test_data(rel), "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *p = malloc((size_t)n);
	ck_assert_int_eq(fread(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	size_t kl = strlen(key);
	uint8_t *hit = memmem(p, (size_t)n, key, kl);
	ck_assert_ptr_nonnull(hit);
	uint32_t t;
	memcpy(&t, hit + kl, 4);
	ck_assert_int_eq(t, GGUF_T_UINT32);
	memcpy(hit + kl + 4, &v, 4);
	static char path[160];
	snprintf(path, sizeof path, "%s/m.gguf", dir);
	f = fopen(path, "wb");
	ck_assert_int_eq(fwrite(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	free(p);
	return path;
}

START_TEST(bad_gguf)
{
	char err[512];
	Model m;
	make_dir();
	const char *p = gguf_with("models/tiny-llama2-q8_0.gguf",
				  "llama.attention.head_count_kv", 4);
	ck_assert(model_load(p, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "blk.0.attn_k.weight: expected 64x64, file "
				  "has 32x64"), "%s", err);
	p = gguf_with("models/tiny-llama2-q8_0.gguf", "llama.block_count", 3);
	ck_assert(model_load(p, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "tensor blk.2.attn_norm.weight is missing"),
		      "%s", err);
	p = gguf_with("models/tiny-llama2-q8_0.gguf", "llama.block_count",
		      100000);
	ck_assert(model_load(p, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "llama.block_count must be"), "%s", err);
	p = gguf_with("models/tiny-llama2-q8_0.gguf",
		      "llama.attention.head_count", 0);
	ck_assert(model_load(p, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "head_count must be"), "%s", err);
	p = gguf_with("models/tiny-llama2-q8_0.gguf",
		      "llama.rope.dimension_count", 8);
	ck_assert(model_load(p, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "partial RoPE"), "%s", err);
	p = gguf_with("models/tiny-llama2-q8_0.gguf", "llama.vocab_size",
		      31999);
	ck_assert(model_load(p, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "token_embd.weight: expected 31999x64"),
		      "%s", err);
	rm_dir();
}
END_TEST

START_TEST(overrides)
{
	char err[512];
	Model m;
	static const struct {
		const char *spec, *msg;
	} bad[] = {
		{"llama.rope.freq_base", "expected KEY=TYPE:VALUE"},
		{"llama.rope.freq_base=double:1", "type must be"},
		{"llama.rope.freq_base=float:abc", "bad number"},
		{"llama.rope.freq_base=float:-1", "out of range"},
		{"llama.context_length=int:1.5", "not an integer"},
		{"llama.rope.scaling.type=str:yarn", "none, linear or llama3"},
		{"llama.embedding_length=int:128", "unknown key"},
		{"general.name=str:x", "unknown str key"},
		/* llama3 without its parameters fails validation */
		{"llama.rope.scaling.type=str:llama3", "llama3 rope scaling"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *o[] = {bad[i].spec};
		ModelLoadOptions opt = {o, 1, 0};
		ck_assert(model_load_ex(test_data("models/tiny-llama2-f16.gguf"),
					&opt, &m, err, sizeof err) == -1);
		ck_assert_msg(strstr(err, bad[i].msg), "%s: \"%s\" lacks \"%s\"",
			      bad[i].spec, err, bad[i].msg);
	}
	/* overrides apply to HF directories too, without the arch prefix */
	const char *o[] = {"context_length=int:128",
			   "attention.layer_norm_rms_epsilon=float:1e-6"};
	ModelLoadOptions opt = {o, 2, 1};
	ck_assert_msg(model_load_ex(test_data("models/tiny-llama2"), &opt, &m,
				    err, sizeof err) == 0, "%s", err);
	ck_assert_int_eq(m.cfg.max_seq_len, 128);
	ck_assert(m.cfg.norm_eps == 1e-6f);
	ck_assert_ptr_null(m.tok); /* no_tokenizer */
	model_free(&m);
}
END_TEST


/* ---- a GGUF Llama 3 file with its scaling as rope_freqs.weight ---- */

static uint8_t *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	*n = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *p = malloc(*n);
	ck_assert_int_eq(fread(p, 1, *n, f), *n);
	fclose(f);
	return p;
}

static size_t skip_tinfo(const uint8_t *p, size_t at)
{
	uint64_t len;
	uint32_t nd;
	memcpy(&len, p + at, 8);
	at += 8 + len;
	memcpy(&nd, p + at, 4);
	return at + 4 + 8 * nd + 4 + 8;
}

/* The llama3 divisors as convert_hf_to_gguf.py computes them from
 * config.json's rope_parameters (tiny-llama3: theta 500000, factor 8,
 * low 1, high 4, original context 64, head_dim 16). */
static void llama3_factors(float *out, int half)
{
	const double pi = 3.14159265358979323846;
	double theta = 500000, factor = 8, low = 1, high = 4, orig = 64;
	for (int i = 0; i < half; i++) {
		double freq = 1.0 / pow(theta, 2.0 * i / (2.0 * half));
		double wavelen = 2 * pi / freq;
		if (wavelen < orig / high)
			out[i] = 1;
		else if (wavelen > orig / low)
			out[i] = (float)factor;
		else {
			double sm = (orig / wavelen - low) / (high - low);
			out[i] = (float)(1 / ((1 - sm) / factor + sm));
		}
	}
}

/* tiny-llama3-f16.gguf plus llama.rope.freq_base and rope_freqs.weight,
 * written to dir/rf.gguf. */
static const char *gguf_with_rope_freqs(const float *freqs, int half)
{
	size_t n;
	uint8_t *p = slurp(test_data("models/tiny-llama3-f16.gguf"), &n);
	char err[256];
	gguf_file *g = gguf_open(test_data("models/tiny-llama3-f16.gguf"),
				 err, sizeof err);
	ck_assert_msg(g, "%s", err);
	uint64_t nt = (uint64_t)gguf_tensor_count(g);
	uint64_t nkv = (uint64_t)gguf_kv_count(g);
	size_t data = gguf_data_offset(g);
	/* tensor infos start after the last key's value: find the first
	 * info by its name, then walk them */
	Tensor t0;
	gguf_tensor_at(g, 0, &t0);
	size_t nl = strlen(t0.name);
	uint8_t pat[64];
	uint64_t l64 = nl;
	memcpy(pat, &l64, 8);
	memcpy(pat + 8, t0.name, nl);
	uint8_t *hit = memmem(p, data, pat, 8 + nl);
	ck_assert_ptr_nonnull(hit);
	size_t ti0 = (size_t)(hit - p), ti1 = ti0;
	for (uint64_t i = 0; i < nt; i++)
		ti1 = skip_tinfo(p, ti1);
	gguf_close(g);

	static char path[160];
	snprintf(path, sizeof path, "%s/rf.gguf", dir);
	FILE *f = fopen(path, "wb");
	uint64_t v;
	uint32_t u;
	fwrite(p, 1, 8, f); /* magic, version */
	v = nt + 1;
	fwrite(&v, 8, 1, f);
	v = nkv + 1;
	fwrite(&v, 8, 1, f);
	fwrite(p + 24, 1, ti0 - 24, f);
	const char *key = "llama.rope.freq_base";
	v = strlen(key);
	fwrite(&v, 8, 1, f);
	fwrite(key, 1, v, f);
	u = GGUF_T_FLOAT32;
	fwrite(&u, 4, 1, f);
	float theta = 500000;
	fwrite(&theta, 4, 1, f);
	size_t pos = 24 + (ti0 - 24) + 8 + v + 8;
	fwrite(p + ti0, 1, ti1 - ti0, f);
	pos += ti1 - ti0;
	const char *name = "rope_freqs.weight";
	v = strlen(name);
	fwrite(&v, 8, 1, f);
	fwrite(name, 1, v, f);
	u = 1;
	fwrite(&u, 4, 1, f);
	v = (uint64_t)half;
	fwrite(&v, 8, 1, f);
	u = 0; /* F32 */
	fwrite(&u, 4, 1, f);
	uint64_t old = n - data, off = (old + 31) / 32 * 32;
	fwrite(&off, 8, 1, f);
	pos += 8 + strlen(name) + 4 + 8 + 4 + 8;
	static const uint8_t zero[32];
	fwrite(zero, 1, (32 - pos % 32) % 32, f);
	fwrite(p + data, 1, old, f);
	fwrite(zero, 1, off - old, f);
	fwrite(freqs, sizeof *freqs, (size_t)half, f);
	ck_assert_int_eq(fclose(f), 0);
	free(p);
	return path;
}

START_TEST(gguf_rope_freqs)
{
	char err[512];
	Model m, hf;
	float want[8];
	llama3_factors(want, 8);
	/* the formula gives all three regimes at these sizes */
	ck_assert(want[0] == 1 && want[7] == 8 && want[1] > 1 && want[1] < 8);
	make_dir();
	const char *p = gguf_with_rope_freqs(want, 8);
	ck_assert_msg(model_load(p, &m, err, sizeof err) == 0, "%s", err);
	load_ok("models/tiny-llama3", NULL, &hf);
	const float *rf = m.w.rope_freqs.data;
	ck_assert_ptr_nonnull(rf);
	ck_assert_int_eq(m.w.rope_freqs.type, DT_F32);
	ck_assert(m.w.rope_freqs.rows == 1 && m.w.rope_freqs.cols == 8);
	for (int i = 0; i < 8; i++)
		ck_assert(rf[i] == want[i]);
	ck_assert(m.cfg.rope_theta == 500000.0f);
	ck_assert_int_eq(m.cfg.rope_scaling, ROPE_SCALE_NONE);
	/* the weights are untouched by the rewrite */
	ck_assert_int_eq(diff(&hf.w.layers[2].wk, &m.w.layers[2].wk, 1, 16),
			 0);
	model_free(&m);
	model_free(&hf);
	/* scaling twice is refused */
	const char *o[] = {"llama.rope.scaling.type=str:linear",
			   "llama.rope.scaling.factor=float:2"};
	ModelLoadOptions opt = {o, 2, 1};
	ck_assert(model_load_ex(p, &opt, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "already scales RoPE"), "%s", err);
	/* a divisor below 1 is corrupt */
	want[3] = 0;
	p = gguf_with_rope_freqs(want, 8);
	ck_assert(model_load(p, &m, err, sizeof err) == -1);
	ck_assert_msg(strstr(err, "rope_freqs.weight[3]"), "%s", err);
	rm_dir();
}
END_TEST

/* tiny-llama2-f16.gguf relabelled as qwen2 (every "llama." key prefix and
 * the architecture value rewritten in place, same length): llama.cpp
 * converts qwen2 without the Q/K permutation, so the layout is HALF. */
START_TEST(gguf_qwen2_layout)
{
	char err[512];
	Model m;
	size_t n;
	uint8_t *p = slurp(test_data("models/tiny-llama2-f16.gguf"), &n);
	gguf_file *g = gguf_open(test_data("models/tiny-llama2-f16.gguf"), err,
				 sizeof err);
	ck_assert_msg(g, "%s", err);
	size_t hdr = gguf_data_offset(g);
	gguf_close(g);
	int renamed = 0;
	for (uint8_t *q = p; (q = memmem(q, hdr - (size_t)(q - p), "llama.",
					 6)) != NULL; q += 6, renamed++)
		memcpy(q, "qwen2.", 6);
	ck_assert_int_eq(renamed, 11); /* the llama.* keys gguf_dump lists */
	const char *ak = "general.architecture";
	uint8_t *a = memmem(p, hdr, ak, strlen(ak));
	ck_assert_ptr_nonnull(a);
	memcpy(a + strlen(ak) + 4 + 8, "qwen2", 5);
	make_dir();
	char path[160];
	snprintf(path, sizeof path, "%s/q.gguf", dir);
	FILE *f = fopen(path, "wb");
	ck_assert_int_eq(fwrite(p, 1, n, f), n);
	fclose(f);
	free(p);
	ck_assert_msg(model_load(path, &m, err, sizeof err) == 0, "%s", err);
	ck_assert_str_eq(m.cfg.arch, "qwen2");
	ck_assert_int_eq(m.cfg.rope_layout, ROPE_HALF);
	ck_assert_int_eq(m.cfg.dim, 64);
	ck_assert_int_eq(m.cfg.has_qkv_bias, 0); /* no attn_q.bias in file */
	model_free(&m);
	rm_dir();
}
END_TEST

/* Random byte changes in a real GGUF's header, through the whole load
 * (GGUF reader, config, tensors, tokenizer): each load either succeeds or
 * fails with a message; a crash fails the test. Deterministic seed. */
START_TEST(gguf_header_corruption)
{
	char err[512];
	size_t n;
	uint8_t *p = slurp(test_data("models/tiny-llama2-q8_0.gguf"), &n);
	gguf_file *g = gguf_open(test_data("models/tiny-llama2-q8_0.gguf"), err,
				 sizeof err);
	ck_assert_msg(g, "%s", err);
	size_t hdr = gguf_data_offset(g);
	gguf_close(g);
	make_dir();
	char path[160];
	snprintf(path, sizeof path, "%s/f.gguf", dir);
	FILE *f = fopen(path, "wb");
	ck_assert_int_eq(fwrite(p, 1, n, f), n);
	fclose(f);
	int fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	uint64_t x = 0x9E3779B97F4A7C15ull;
	int loaded = 0, refused = 0;
	for (int it = 0; it < 300; it++) {
		size_t at[4];
		uint8_t nv;
		int k = 1 + it % 4;
		for (int j = 0; j < k; j++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			/* a third of the hits in the first 64 bytes (counts) */
			at[j] = x % 3 ? (x >> 8) % hdr : (x >> 8) % 64;
			nv = x % 5 ? (uint8_t)(x >> 40) : 0xff;
			ck_assert_int_eq(pwrite(fd, &nv, 1, (off_t)at[j]), 1);
		}
		Model m;
		if (model_load(path, &m, err, sizeof err) == 0) {
			loaded++;
			model_free(&m);
		} else {
			ck_assert(err[0]);
			refused++;
		}
		for (int j = 0; j < k; j++) /* restore */
			ck_assert_int_eq(pwrite(fd, p + at[j], 1, (off_t)at[j]),
					 1);
	}
	close(fd);
	free(p);
	rm_dir();
	ck_assert_int_gt(refused, 0);
	ck_assert_int_gt(loaded, 0); /* flips inside token strings load */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("loader");
	TCase *tc = tcase_create("loader");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, llama2_configs);
	tcase_add_test(tc, llama3_configs);
	tcase_add_test(tc, llama2_tensors_match);
	tcase_add_test(tc, llama3_tensors_match);
	tcase_add_test(tc, q8_0_tensors_close);
	tcase_add_loop_test(tc, bad_hf_configs, 0,
			    (int)(sizeof bad_cfgs / sizeof bad_cfgs[0]));
	tcase_add_test(tc, hf_template_and_index);
	tcase_add_test(tc, hf_qwen2_biases_sharded);
	tcase_add_test(tc, bad_gguf);
	tcase_add_test(tc, overrides);
	tcase_add_test(tc, gguf_rope_freqs);
	tcase_add_test(tc, gguf_qwen2_layout);
	tcase_add_test(tc, gguf_header_corruption);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
