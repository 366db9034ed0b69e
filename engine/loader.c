/*
 * loader.c - model_load(): a Hugging Face directory (config.json +
 * safetensors + tokenizer.json) or a GGUF file into a Model whose tensors
 * point into read-only mappings. See model.h.
 *
 * Both formats end in the same Config, checked for sane values, and the
 * same tensor table, each tensor checked against the shape the Config
 * implies. The one difference the forward pass must know is rope_layout:
 * llama.cpp's converter permutes the rows of Wq and Wk inside each head
 * (HF row j*(hd/2)+i becomes GGUF row 2i+j) so that a head's rotation
 * pairs are adjacent (ROPE_INTERLEAVED); HF keeps the pairs hd/2 apart
 * (ROPE_HALF). Both give the same attention scores. The converter
 * permutes only for the llama architecture: qwen2 GGUFs keep HF's row
 * order and llama.cpp runs them with its NEOX (= ROPE_HALF) rotation.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "json.h"
#include "mapguard.h"
#include "model.h"
#include "safetensors.h"
#include "tokenizer.h"

/* Sanity caps: a file claiming more is corrupt, not a model. */
#define MAX_DIM (1 << 17)        /* hidden / intermediate width */
#define MAX_LAYERS 1024          /* transformer blocks */
#define MAX_HEADS 1024           /* attention heads */
#define MAX_HEAD_DIM 1024        /* per-head width */
#define MAX_VOCAB (1 << 22)      /* vocabulary */
#define MAX_CTX (1 << 24)        /* trained context */
#define MAX_TEMPLATE (1u << 20)  /* chat template bytes */

/* What m->priv holds. */
typedef struct LoadPriv {
	gguf_file *g;   /* GGUF mapping (GGUF models) */
	st_file *st;    /* safetensors mappings (HF models) */
	void **bufs;    /* malloc'd float copies (non-F32 biases) */
	int n_bufs;
	int cap_bufs;
} LoadPriv;

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	(void)n;
}

/* ---- overrides ---- */

static int parse_num(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v))
		return 0;
	*out = v;
	return 1;
}

int config_override(Config *c, const char *spec, char *err, size_t errlen)
{
	const char *eq = strchr(spec, '=');
	const char *colon = eq ? strchr(eq + 1, ':') : NULL;
	if (!eq || !colon) {
		seterr(err, errlen, "override '%s': expected KEY=TYPE:VALUE",
		       spec);
		return -1;
	}
	size_t klen = (size_t)(eq - spec), tlen = (size_t)(colon - eq - 1);
	char key[128], type[16];
	if (klen == 0 || klen >= sizeof key || tlen >= sizeof type) {
		seterr(err, errlen, "override '%s': bad key or type", spec);
		return -1;
	}
	memcpy(key, spec, klen);
	key[klen] = 0;
	memcpy(type, eq + 1, tlen);
	type[tlen] = 0;
	const char *val = colon + 1;
	const char *k = key;
	size_t alen = strlen(c->arch);
	if (alen && !strncmp(k, c->arch, alen) && k[alen] == '.')
		k += alen + 1;
	else if (!strncmp(k, "llama.", 6))
		k += 6;
	int is_str = !strcmp(type, "str");
	if (!is_str && strcmp(type, "float") && strcmp(type, "int")) {
		seterr(err, errlen,
		       "override '%s': type must be int, float or str", spec);
		return -1;
	}
	if (is_str) {
		if (strcmp(k, "rope.scaling.type")) {
			seterr(err, errlen, "override '%s': unknown str key",
			       spec);
			return -1;
		}
		if (!strcmp(val, "none"))
			c->rope_scaling = ROPE_SCALE_NONE;
		else if (!strcmp(val, "linear"))
			c->rope_scaling = ROPE_SCALE_LINEAR;
		else if (!strcmp(val, "llama3"))
			c->rope_scaling = ROPE_SCALE_LLAMA3;
		else {
			seterr(err, errlen,
			       "override '%s': scaling type is none, linear "
			       "or llama3",
			       spec);
			return -1;
		}
		return 0;
	}
	double v;
	if (!parse_num(val, &v)) {
		seterr(err, errlen, "override '%s': bad number", spec);
		return -1;
	}
	if (!strcmp(type, "int") && v != floor(v)) {
		seterr(err, errlen, "override '%s': not an integer", spec);
		return -1;
	}
	if (!strcmp(k, "rope.freq_base") && v > 0)
		c->rope_theta = (float)v;
	else if (!strcmp(k, "rope.scaling.factor") && v > 0)
		c->rope_factor = (float)v;
	else if (!strcmp(k, "rope.scaling.low_freq_factor") && v > 0)
		c->rope_low_freq_factor = (float)v;
	else if (!strcmp(k, "rope.scaling.high_freq_factor") && v > 0)
		c->rope_high_freq_factor = (float)v;
	else if (!strcmp(k, "rope.scaling.original_context_length") &&
		 v >= 1 && v <= MAX_CTX)
		c->rope_orig_ctx = (int)v;
	else if (!strcmp(k, "context_length") && v >= 1 && v <= MAX_CTX)
		c->max_seq_len = (int)v;
	else if (!strcmp(k, "attention.layer_norm_rms_epsilon") && v > 0)
		c->norm_eps = (float)v;
	else {
		seterr(err, errlen,
		       "override '%s': unknown key or value out of range",
		       spec);
		return -1;
	}
	return 0;
}

/* ---- config validation ---- */

static int in_range(int v, int lo, int hi)
{
	return v >= lo && v <= hi;
}

static int check_config(const Config *c, const char *src, char *err,
			size_t errlen)
{
	const char *bad = NULL;
	if (!in_range(c->dim, 1, MAX_DIM))
		bad = "hidden size (embedding_length)";
	else if (!in_range(c->hidden_dim, 1, MAX_DIM))
		bad = "intermediate size (feed_forward_length)";
	else if (!in_range(c->n_layers, 1, MAX_LAYERS))
		bad = "layer count (block_count)";
	else if (!in_range(c->n_heads, 1, MAX_HEADS))
		bad = "head count";
	else if (!in_range(c->n_kv_heads, 1, c->n_heads) ||
		 c->n_heads % c->n_kv_heads)
		bad = "key/value head count (must divide the head count)";
	else if (!in_range(c->head_dim, 2, MAX_HEAD_DIM) || c->head_dim % 2)
		bad = "head dim (key_length; must be even)";
	else if ((int64_t)c->n_heads * c->head_dim > 4 * MAX_DIM)
		bad = "heads x head dim";
	else if (!in_range(c->vocab_size, 1, MAX_VOCAB))
		bad = "vocab size";
	else if (!in_range(c->max_seq_len, 1, MAX_CTX))
		bad = "context length";
	else if (!(c->norm_eps > 0 && c->norm_eps < 1))
		bad = "RMSNorm epsilon";
	else if (!(c->rope_theta > 0 && isfinite(c->rope_theta)))
		bad = "rope theta (freq_base)";
	else if (c->rope_scaling == ROPE_SCALE_LINEAR &&
		 !(c->rope_factor > 0 && isfinite(c->rope_factor)))
		bad = "linear rope scaling factor";
	else if (c->rope_scaling == ROPE_SCALE_LLAMA3 &&
		 (!(c->rope_factor >= 1 && isfinite(c->rope_factor)) ||
		  c->rope_orig_ctx < 1 || !(c->rope_low_freq_factor > 0) ||
		  !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
		  !isfinite(c->rope_high_freq_factor)))
		bad = "llama3 rope scaling (needs factor >= 1, "
		      "original_context_length, 0 < low_freq_factor < "
		      "high_freq_factor)";
	if (bad) {
		seterr(err, errlen, "%s: invalid or missing %s", src, bad);
		return -1;
	}
	return 0;
}

/* ---- tensor table ---- */

enum { S_ONE, S_DIM, S_HID, S_QD, S_KVD, S_VOCAB, S_HALF };

static int64_t extent(const Config *c, int kind)
{
	switch (kind) {
	case S_DIM:
		return c->dim;
	case S_HID:
		return c->hidden_dim;
	case S_QD:
		return (int64_t)c->n_heads * c->head_dim;
	case S_KVD:
		return (int64_t)c->n_kv_heads * c->head_dim;
	case S_VOCAB:
		return c->vocab_size;
	case S_HALF:
		return c->head_dim / 2;
	default:
		return 1;
	}
}

/* Per-layer tensors: HF and GGUF names (after "model.layers.N." /
 * "blk.N."), where they go, and their shape. */
static const struct {
	const char *hf, *gg;
	size_t off;     /* offset in LayerWeights */
	int rows, cols; /* S_*; rows S_ONE = a 1-D vector */
	int bias;       /* optional, converted to F32 */
} layer_tensors[] = {
	{"input_layernorm.weight", "attn_norm.weight",
	 offsetof(LayerWeights, attn_norm), S_ONE, S_DIM, 0},
	{"self_attn.q_proj.weight", "attn_q.weight",
	 offsetof(LayerWeights, wq), S_QD, S_DIM, 0},
	{"self_attn.k_proj.weight", "attn_k.weight",
	 offsetof(LayerWeights, wk), S_KVD, S_DIM, 0},
	{"self_attn.v_proj.weight", "attn_v.weight",
	 offsetof(LayerWeights, wv), S_KVD, S_DIM, 0},
	{"self_attn.o_proj.weight", "attn_output.weight",
	 offsetof(LayerWeights, wo), S_DIM, S_QD, 0},
	{"self_attn.q_proj.bias", "attn_q.bias", offsetof(LayerWeights, bq),
	 S_ONE, S_QD, 1},
	{"self_attn.k_proj.bias", "attn_k.bias", offsetof(LayerWeights, bk),
	 S_ONE, S_KVD, 1},
	{"self_attn.v_proj.bias", "attn_v.bias", offsetof(LayerWeights, bv),
	 S_ONE, S_KVD, 1},
	{"post_attention_layernorm.weight", "ffn_norm.weight",
	 offsetof(LayerWeights, ffn_norm), S_ONE, S_DIM, 0},
	{"mlp.gate_proj.weight", "ffn_gate.weight",
	 offsetof(LayerWeights, w_gate), S_HID, S_DIM, 0},
	{"mlp.up_proj.weight", "ffn_up.weight", offsetof(LayerWeights, w_up),
	 S_HID, S_DIM, 0},
	{"mlp.down_proj.weight", "ffn_down.weight",
	 offsetof(LayerWeights, w_down), S_DIM, S_HID, 0},
};

typedef struct Loader {
	Model *m;
	LoadPriv *p;
	char *err;
	size_t errlen;
} Loader;

/* Look a tensor up in whichever file is open; n_dims as in the file. */
static int find_tensor(Loader *L, const char *name, Tensor *t, int *ndims)
{
	if (L->p->g) {
		int64_t i = gguf_tensor_find(L->p->g, name);
		int64_t ne[4];
		if (i < 0 || !gguf_tensor_at(L->p->g, i, t))
			return 0;
		*ndims = gguf_tensor_dims(L->p->g, i, ne);
		return 1;
	}
	int64_t i = st_find(L->p->st, name);
	int64_t shape[ST_MAX_DIMS];
	if (i < 0 || !st_tensor_at(L->p->st, i, t))
		return 0;
	*ndims = st_shape(L->p->st, i, shape);
	return 1;
}

static int keep_buf(LoadPriv *p, void *b)
{
	if (p->n_bufs == p->cap_bufs) {
		int cap = p->cap_bufs ? p->cap_bufs * 2 : 16;
		void **nb = realloc(p->bufs, (size_t)cap * sizeof *nb);
		if (!nb)
			return 0;
		p->bufs = nb;
		p->cap_bufs = cap;
	}
	p->bufs[p->n_bufs++] = b;
	return 1;
}

/* Fetch name into *out, checking its shape. optional: absence is fine
 * (out->data stays NULL). to_f32: convert a float vector to F32. */
static int get_tensor(Loader *L, const char *name, int rows, int cols,
		      int optional, int to_f32, Tensor *out)
{
	const Config *c = &L->m->cfg;
	Tensor t;
	int nd;
	memset(out, 0, sizeof *out);
	if (!find_tensor(L, name, &t, &nd)) {
		if (optional)
			return 0;
		seterr(L->err, L->errlen, "%s: tensor %s is missing",
		       L->m->path, name);
		return -1;
	}
	int64_t er = extent(c, rows), ec = extent(c, cols);
	int want_nd = rows == S_ONE ? 1 : 2;
	if (t.rows != er || t.cols != ec || nd != want_nd) {
		if (want_nd == 1)
			seterr(L->err, L->errlen,
			       "%s: expected a vector of %lld, file has %dD "
			       "%lldx%lld",
			       name, (long long)ec, nd, (long long)t.rows,
			       (long long)t.cols);
		else
			seterr(L->err, L->errlen,
			       "%s: expected %lldx%lld, file has %lldx%lld "
			       "(%dD; rows x cols)",
			       name, (long long)er, (long long)ec,
			       (long long)t.rows, (long long)t.cols, nd);
		return -1;
	}
	if (to_f32 && t.type == DT_F32 && (uintptr_t)t.data % sizeof(float)) {
		/* general.alignment < 4 leaves F32 data unaligned */
		float *f = malloc((size_t)ec * sizeof *f);
		if (!f || !keep_buf(L->p, f)) {
			free(f);
			seterr(L->err, L->errlen, "out of memory");
			return -1;
		}
		memcpy(f, t.data, (size_t)ec * sizeof *f);
		t.data = f;
	} else if (to_f32 && t.type != DT_F32) {
		if (dtype_is_quant(t.type)) {
			seterr(L->err, L->errlen,
			       "%s: a quantised (%s) vector is not supported",
			       name, dtype_name(t.type));
			return -1;
		}
		float *f = malloc((size_t)ec * sizeof *f);
		if (!f || !keep_buf(L->p, f)) {
			free(f);
			seterr(L->err, L->errlen, "out of memory");
			return -1;
		}
		const uint16_t *h = t.data;
		for (int64_t i = 0; i < ec; i++) {
			uint16_t v;
			memcpy(&v, h + i, 2);
			f[i] = t.type == DT_F16 ? fp16_to_f32(v)
						: bf16_to_f32(v);
		}
		t.type = DT_F32;
		t.data = f;
		t.nbytes = (size_t)ec * sizeof *f;
	}
	*out = t;
	return 0;
}

static int load_tensors(Loader *L, int gguf)
{
	Model *m = L->m;
	Config *c = &m->cfg;
	Weights *w = &m->w;
	char name[160];
	w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
	if (!w->layers) {
		seterr(L->err, L->errlen, "out of memory");
		return -1;
	}
	if (get_tensor(L, gguf ? "token_embd.weight" : "model.embed_tokens.weight",
		       S_VOCAB, S_DIM, 0, 0, &w->tok_embd) ||
	    get_tensor(L, gguf ? "output_norm.weight" : "model.norm.weight",
		       S_ONE, S_DIM, 0, 0, &w->out_norm))
		return -1;
	const char *out_name = gguf ? "output.weight" : "lm_head.weight";
	if (c->tied_embeddings && !gguf) {
		w->output = w->tok_embd; /* HF ties even when lm_head is saved */
	} else {
		int r = get_tensor(L, out_name, S_VOCAB, S_DIM, gguf, 0,
				   &w->output);
		if (r < 0)
			return -1;
		if (!w->output.data) { /* GGUF: no output.weight = tied */
			c->tied_embeddings = 1;
			w->output = w->tok_embd;
		}
	}
	if (gguf) {
		if (get_tensor(L, "rope_freqs.weight", S_ONE, S_HALF, 1, 1,
			       &w->rope_freqs) < 0)
			return -1;
		const float *rf = w->rope_freqs.data;
		for (int i = 0; rf && i < c->head_dim / 2; i++) {
			if (!(rf[i] >= 1 && rf[i] < 1e6f)) { /* llama3: 1..factor */
				seterr(L->err, L->errlen,
				       "rope_freqs.weight[%d] = %g is not a "
				       "frequency divisor >= 1",
				       i, rf[i]);
				return -1;
			}
		}
		if (rf && c->rope_scaling != ROPE_SCALE_NONE) {
			seterr(L->err, L->errlen,
			       "%s: rope_freqs.weight already scales RoPE; "
			       "rope scaling metadata or overrides conflict",
			       m->path);
			return -1;
		}
	}
	for (int l = 0; l < c->n_layers; l++) {
		for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0];
		     i++) {
			int n = snprintf(name, sizeof name, "%s%d.%s",
					 gguf ? "blk." : "model.layers.", l,
					 gguf ? layer_tensors[i].gg
					      : layer_tensors[i].hf);
			if (n < 0 || (size_t)n >= sizeof name)
				return -1;
			Tensor *t = (Tensor *)((char *)&w->layers[l] +
					       layer_tensors[i].off);
			int bias = layer_tensors[i].bias;
			if (get_tensor(L, name, layer_tensors[i].rows,
				       layer_tensors[i].cols,
				       bias && !c->has_qkv_bias, bias, t) < 0)
				return -1;
		}
	}
	return 0;
}

/* quant, n_params, file_bytes from every tensor in the file. */
static void summarize(Loader *L)
{
	Model *m = L->m;
	uint64_t per_type[DT_COUNT] = {0};
	int64_t n = L->p->g ? gguf_tensor_count(L->p->g)
			    : st_tensor_count(L->p->st);
	for (int64_t i = 0; i < n; i++) {
		Tensor t;
		int ok = L->p->g ? gguf_tensor_at(L->p->g, i, &t)
				 : st_tensor_at(L->p->st, i, &t);
		if (!ok)
			continue;
		uint64_t e = (uint64_t)t.rows * (uint64_t)t.cols;
		m->n_params += e;
		m->file_bytes += t.nbytes;
		if (t.rows > 1) /* matrices decide the quant name */
			per_type[t.type] += e;
	}
	int best = 0;
	for (int d = 1; d < DT_COUNT; d++)
		if (per_type[d] > per_type[best])
			best = d;
	snprintf(m->quant, sizeof m->quant, "%s", dtype_name((dtype)best));
}

/* ---- Hugging Face directory ---- */

/* An integer member in [lo, hi]; absent -> def (def < lo: required). */
static int cfg_int(const json_value *o, const char *key, int lo, int hi,
		   int def, int *out, char *err, size_t errlen)
{
	const json_value *v = json_get(o, key);
	int64_t x;
	if (!json_present(v)) {
		if (def >= lo) {
			*out = def;
			return 0;
		}
		seterr(err, errlen, "config.json: %s is missing", key);
		return -1;
	}
	if (!json_int(v, lo, hi, &x)) {
		seterr(err, errlen,
		       "config.json: %s must be an integer in [%d, %d]", key,
		       lo, hi);
		return -1;
	}
	*out = (int)x;
	return 0;
}

static int cfg_float(const json_value *o, const char *key, double def,
		     float *out, char *err, size_t errlen)
{
	const json_value *v = json_get(o, key);
	if (!json_present(v)) {
		*out = (float)def;
		return 0;
	}
	if (v->type != JSON_NUMBER) {
		seterr(err, errlen, "config.json: %s must be a number", key);
		return -1;
	}
	*out = (float)v->u.num;
	return 0;
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);
	if (!p)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

static int file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Read a small text file whole (NUL-terminated); NULL when absent. */
static char *read_text(const char *path, size_t max, int *too_big)
{
	*too_big = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(max + 1);
	size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
	fclose(f);
	if (!buf)
		return NULL;
	if (n > max) {
		*too_big = 1;
		free(buf);
		return NULL;
	}
	buf[n] = 0;
	return buf;
}

static int hf_rope(const json_value *root, Config *c, char *err,
		   size_t errlen)
{
	/* transformers >= 5 spells it rope_parameters (holding rope_theta);
	 * older files have rope_theta at the top and rope_scaling. */
	const json_value *rp = json_get(root, "rope_parameters");
	const json_value *rs = json_present(rp) ? rp
						: json_get(root, "rope_scaling");
	if (cfg_float(root, "rope_theta", 10000.0, &c->rope_theta, err,
		      errlen))
		return -1;
	if (json_present(rp) && json_present(json_get(rp, "rope_theta")) &&
	    cfg_float(rp, "rope_theta", 10000.0, &c->rope_theta, err, errlen))
		return -1;
	c->rope_scaling = ROPE_SCALE_NONE;
	if (!json_present(rs))
		return 0;
	if (rs->type != JSON_OBJECT) {
		seterr(err, errlen,
		       "config.json: rope_scaling/rope_parameters must be an "
		       "object");
		return -1;
	}
	const char *type = json_str(json_get(rs, "rope_type"), NULL);
	if (!type)
		type = json_str(json_get(rs, "type"), "default");
	if (!strcmp(type, "default"))
		return 0;
	if (cfg_float(rs, "factor", 0, &c->rope_factor, err, errlen))
		return -1;
	if (!strcmp(type, "linear")) {
		c->rope_scaling = ROPE_SCALE_LINEAR;
		return 0;
	}
	if (!strcmp(type, "llama3")) {
		c->rope_scaling = ROPE_SCALE_LLAMA3;
		if (cfg_float(rs, "low_freq_factor", 0,
			      &c->rope_low_freq_factor, err, errlen) ||
		    cfg_float(rs, "high_freq_factor", 0,
			      &c->rope_high_freq_factor, err, errlen) ||
		    cfg_int(rs, "original_max_position_embeddings", 1, MAX_CTX,
			    0, &c->rope_orig_ctx, err, errlen))
			return -1;
		return 0;
	}
	seterr(err, errlen, "config.json: rope scaling type \"%.32s\" is not "
	       "supported (default, linear, llama3)", type);
	return -1;
}

static int hf_arch(const json_value *root, Config *c, char *err,
		   size_t errlen)
{
	static const struct {
		const char *model_type, *cls;
	} archs[] = {
		{"llama", "LlamaForCausalLM"},
		{"mistral", "MistralForCausalLM"},
		{"qwen2", "Qwen2ForCausalLM"},
	};
	const char *mt = json_str(json_get(root, "model_type"), NULL);
	const char *cls = json_str(json_at(json_get(root, "architectures"), 0),
				   NULL);
	for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
		if ((mt && !strcmp(mt, archs[i].model_type)) ||
		    (!mt && cls && !strcmp(cls, archs[i].cls))) {
			snprintf(c->arch, sizeof c->arch, "%s",
				 archs[i].model_type);
			return 0;
		}
	}
	seterr(err, errlen,
	       "config.json: model_type \"%.32s\" / architecture \"%.48s\" is "
	       "not supported (llama, mistral, qwen2)",
	       mt ? mt : "", cls ? cls : "");
	return -1;
}

static int hf_config(const char *dir, Config *c, char *err, size_t errlen)
{
	char *path = join(dir, "config.json");
	if (!path) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	char jerr[256];
	json_doc *doc = json_parse_file(path, 16u << 20, jerr, sizeof jerr);
	free(path);
	if (!doc) {
		seterr(err, errlen, "%s", jerr);
		return -1;
	}
	const json_value *r = json_root(doc);
	int rc = -1;
	if (r->type != JSON_OBJECT) {
		seterr(err, errlen, "config.json: not a JSON object");
		goto out;
	}
	if (hf_arch(r, c, err, errlen) ||
	    cfg_int(r, "hidden_size", 1, MAX_DIM, -1, &c->dim, err, errlen) ||
	    cfg_int(r, "intermediate_size", 1, MAX_DIM, -1, &c->hidden_dim,
		    err, errlen) ||
	    cfg_int(r, "num_hidden_layers", 1, MAX_LAYERS, -1, &c->n_layers,
		    err, errlen) ||
	    cfg_int(r, "num_attention_heads", 1, MAX_HEADS, -1, &c->n_heads,
		    err, errlen) ||
	    cfg_int(r, "num_key_value_heads", 1, MAX_HEADS, c->n_heads,
		    &c->n_kv_heads, err, errlen) ||
	    cfg_int(r, "head_dim", 1, MAX_HEAD_DIM, c->dim / c->n_heads,
		    &c->head_dim, err, errlen) ||
	    cfg_int(r, "vocab_size", 1, MAX_VOCAB, -1, &c->vocab_size, err,
		    errlen) ||
	    cfg_int(r, "max_position_embeddings", 1, MAX_CTX, 2048,
		    &c->max_seq_len, err, errlen) ||
	    cfg_float(r, "rms_norm_eps", 1e-6, &c->norm_eps, err, errlen) ||
	    hf_rope(r, c, err, errlen))
		goto out;
	const json_value *tie = json_get(r, "tie_word_embeddings");
	if (json_present(tie) && tie->type != JSON_TRUE &&
	    tie->type != JSON_FALSE) {
		seterr(err, errlen,
		       "config.json: tie_word_embeddings must be a boolean");
		goto out;
	}
	c->tied_embeddings = json_bool(tie, 0);
	c->has_qkv_bias = !strcmp(c->arch, "qwen2") ||
			  json_bool(json_get(r, "attention_bias"), 0);
	c->rope_layout = ROPE_HALF;
	rc = 0;
out:
	json_free(doc);
	return rc;
}

/* chat_template.jinja, else tokenizer_config.json's chat_template (a
 * string, or a list of {name, template} where "default" wins). */
static int hf_template(const char *dir, Model *m, char *err, size_t errlen)
{
	char *path = join(dir, "chat_template.jinja");
	int big;
	if (!path)
		goto oom;
	m->chat_template = read_text(path, MAX_TEMPLATE, &big);
	free(path);
	if (big) {
		seterr(err, errlen, "chat_template.jinja: over %u bytes",
		       MAX_TEMPLATE);
		return -1;
	}
	if (m->chat_template)
		return 0;
	path = join(dir, "tokenizer_config.json");
	if (!path)
		goto oom;
	if (!file_exists(path)) {
		free(path);
		return 0;
	}
	char jerr[256];
	json_doc *doc = json_parse_file(path, 64u << 20, jerr, sizeof jerr);
	free(path);
	if (!doc) {
		seterr(err, errlen, "%s", jerr);
		return -1;
	}
	const json_value *ct = json_get(json_root(doc), "chat_template");
	const char *s = json_str(ct, NULL);
	if (!s && ct && ct->type == JSON_ARRAY) {
		for (size_t i = 0; i < json_count(ct); i++) {
			const json_value *e = json_at(ct, i);
			const char *nm = json_str(json_get(e, "name"), "");
			const char *tp = json_str(json_get(e, "template"), NULL);
			if (tp && (!s || !strcmp(nm, "default")))
				s = tp;
		}
	}
	if (s) {
		m->chat_template = strdup(s);
		if (!m->chat_template) {
			json_free(doc);
			goto oom;
		}
	}
	json_free(doc);
	return 0;
oom:
	seterr(err, errlen, "out of memory");
	return -1;
}

static int load_hf(Loader *L, const ModelLoadOptions *opt)
{
	Model *m = L->m;
	const char *dir = m->path;
	if (hf_config(dir, &m->cfg, L->err, L->errlen))
		return -1;
	for (int i = 0; i < opt->n_overrides; i++)
		if (config_override(&m->cfg, opt->overrides[i], L->err,
				    L->errlen))
			return -1;
	if (check_config(&m->cfg, "config.json", L->err, L->errlen))
		return -1;
	char *idx = join(dir, "model.safetensors.index.json");
	char *one = join(dir, "model.safetensors");
	if (!idx || !one) {
		free(idx);
		free(one);
		seterr(L->err, L->errlen, "out of memory");
		return -1;
	}
	const char *st_path = file_exists(one) ? one : idx;
	if (!file_exists(st_path)) {
		seterr(L->err, L->errlen,
		       "%s: no model.safetensors or "
		       "model.safetensors.index.json",
		       dir);
		free(idx);
		free(one);
		return -1;
	}
	L->p->st = st_open(st_path, L->err, L->errlen);
	free(idx);
	free(one);
	if (!L->p->st || load_tensors(L, 0))
		return -1;
	if (hf_template(dir, m, L->err, L->errlen))
		return -1;
	if (!opt->no_tokenizer &&
	    tokenizer_load_hf(dir, &m->tok, L->err, L->errlen))
		return -1;
	return 0;
}

/* ---- GGUF ---- */

static int gg_int(const gguf_file *g, const char *arch, const char *key,
		  int lo, int hi, int def, int *out, char *err, size_t errlen)
{
	char k[128];
	snprintf(k, sizeof k, "%s.%s", arch, key);
	uint64_t v;
	if (gguf_find(g, k) < 0) {
		if (def >= lo) {
			*out = def;
			return 0;
		}
		seterr(err, errlen, "gguf: %s is missing", k);
		return -1;
	}
	if (!gguf_get_u64(g, k, &v) || v < (uint64_t)lo || v > (uint64_t)hi) {
		seterr(err, errlen, "gguf: %s must be an integer in [%d, %d]", k,
		       lo, hi);
		return -1;
	}
	*out = (int)v;
	return 0;
}

static int gg_float(const gguf_file *g, const char *arch, const char *key,
		    float def, float *out, char *err, size_t errlen)
{
	char k[128];
	snprintf(k, sizeof k, "%s.%s", arch, key);
	if (gguf_find(g, k) < 0) {
		*out = def;
		return 0;
	}
	if (!gguf_get_f32(g, k, out)) {
		seterr(err, errlen, "gguf: %s must be a number", k);
		return -1;
	}
	return 0;
}

static int str_is(gguf_str s, const char *lit)
{
	return s.len == strlen(lit) && !memcmp(s.s, lit, s.len);
}

static int gguf_config(const gguf_file *g, Config *c, char *err,
		       size_t errlen)
{
	gguf_str a;
	if (!gguf_get_str(g, "general.architecture", &a)) {
		seterr(err, errlen, "gguf: general.architecture is missing");
		return -1;
	}
	/* Mistral models convert to "llama" */
	if (!str_is(a, "llama") && !str_is(a, "qwen2")) {
		seterr(err, errlen,
		       "gguf: architecture \"%.*s\" is not supported (llama, "
		       "qwen2)",
		       (int)(a.len > 32 ? 32 : a.len), a.s);
		return -1;
	}
	memcpy(c->arch, a.s, a.len);
	c->arch[a.len] = 0;
	const char *ar = c->arch;
	int rope_dims = 0;
	if (gg_int(g, ar, "embedding_length", 1, MAX_DIM, -1, &c->dim, err,
		   errlen) ||
	    gg_int(g, ar, "feed_forward_length", 1, MAX_DIM, -1,
		   &c->hidden_dim, err, errlen) ||
	    gg_int(g, ar, "block_count", 1, MAX_LAYERS, -1, &c->n_layers, err,
		   errlen) ||
	    gg_int(g, ar, "attention.head_count", 1, MAX_HEADS, -1,
		   &c->n_heads, err, errlen) ||
	    gg_int(g, ar, "attention.head_count_kv", 1, MAX_HEADS, c->n_heads,
		   &c->n_kv_heads, err, errlen) ||
	    gg_int(g, ar, "attention.key_length", 1, MAX_HEAD_DIM,
		   c->dim / c->n_heads, &c->head_dim, err, errlen) ||
	    gg_int(g, ar, "attention.value_length", 1, MAX_HEAD_DIM,
		   c->head_dim, &rope_dims, err, errlen))
		return -1;
	if (rope_dims != c->head_dim) {
		seterr(err, errlen, "gguf: value_length %d != key_length %d is "
		       "not supported", rope_dims, c->head_dim);
		return -1;
	}
	if (gg_int(g, ar, "rope.dimension_count", 1, MAX_HEAD_DIM, c->head_dim,
		   &rope_dims, err, errlen))
		return -1;
	if (rope_dims != c->head_dim) {
		seterr(err, errlen, "gguf: partial RoPE (%d of %d dims) is not "
		       "supported", rope_dims, c->head_dim);
		return -1;
	}
	uint64_t nv = 0;
	gguf_type et;
	Tensor emb;
	if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nv) && nv <= MAX_VOCAB)
		c->vocab_size = (int)nv;
	else if (gguf_tensor(g, "token_embd.weight", &emb) &&
		 emb.rows <= MAX_VOCAB)
		c->vocab_size = (int)emb.rows;
	if (gg_int(g, ar, "vocab_size", 1, MAX_VOCAB, c->vocab_size,
		   &c->vocab_size, err, errlen) ||
	    gg_int(g, ar, "context_length", 1, MAX_CTX, 2048, &c->max_seq_len,
		   err, errlen) ||
	    gg_float(g, ar, "attention.layer_norm_rms_epsilon", 1e-5f,
		     &c->norm_eps, err, errlen) ||
	    gg_float(g, ar, "rope.freq_base", 10000.0f, &c->rope_theta, err,
		     errlen))
		return -1;
	char k[128];
	gguf_str st;
	snprintf(k, sizeof k, "%s.rope.scaling.type", ar);
	c->rope_scaling = ROPE_SCALE_NONE;
	if (gguf_get_str(g, k, &st) && !str_is(st, "none")) {
		if (str_is(st, "linear"))
			c->rope_scaling = ROPE_SCALE_LINEAR;
		else if (str_is(st, "llama3"))
			c->rope_scaling = ROPE_SCALE_LLAMA3;
		else {
			seterr(err, errlen, "gguf: %s \"%.*s\" is not supported",
			       k, (int)(st.len > 32 ? 32 : st.len), st.s);
			return -1;
		}
	}
	if (gg_float(g, ar, "rope.scaling.factor", 0, &c->rope_factor, err,
		     errlen) ||
	    gg_int(g, ar, "rope.scaling.original_context_length", 0, MAX_CTX,
		   0, &c->rope_orig_ctx, err, errlen) ||
	    gg_float(g, ar, "rope.scaling.low_freq_factor", 0,
		     &c->rope_low_freq_factor, err, errlen) ||
	    gg_float(g, ar, "rope.scaling.high_freq_factor", 0,
		     &c->rope_high_freq_factor, err, errlen))
		return -1;
	c->has_qkv_bias = gguf_tensor_find(g, "blk.0.attn_q.bias") >= 0;
	c->tied_embeddings = gguf_tensor_find(g, "output.weight") < 0;
	c->rope_layout = str_is(a, "qwen2") ? ROPE_HALF : ROPE_INTERLEAVED;
	return 0;
}

static int load_gguf(Loader *L, const ModelLoadOptions *opt)
{
	Model *m = L->m;
	L->p->g = gguf_open(m->path, L->err, L->errlen);
	if (!L->p->g)
		return -1;
	const gguf_file *g = L->p->g;
	if (gguf_config(g, &m->cfg, L->err, L->errlen))
		return -1;
	for (int i = 0; i < opt->n_overrides; i++)
		if (config_override(&m->cfg, opt->overrides[i], L->err,
				    L->errlen))
			return -1;
	if (check_config(&m->cfg, m->path, L->err, L->errlen) ||
	    load_tensors(L, 1))
		return -1;
	gguf_str t;
	if (gguf_get_str(g, "tokenizer.chat_template", &t)) {
		if (t.len > MAX_TEMPLATE) {
			seterr(L->err, L->errlen,
			       "gguf: tokenizer.chat_template over %u bytes",
			       MAX_TEMPLATE);
			return -1;
		}
		m->chat_template = malloc(t.len + 1);
		if (!m->chat_template) {
			seterr(L->err, L->errlen, "out of memory");
			return -1;
		}
		memcpy(m->chat_template, t.s, t.len);
		m->chat_template[t.len] = 0;
	}
	if (!opt->no_tokenizer &&
	    tokenizer_load_gguf(g, &m->tok, L->err, L->errlen))
		return -1;
	return 0;
}

/* ---- entry points ---- */

int model_load_ex(const char *path, const ModelLoadOptions *opt, Model *m,
		  char *err, size_t errlen)
{
	ModelLoadOptions none = {0};
	if (!opt)
		opt = &none;
	memset(m, 0, sizeof *m);
	struct stat st;
	if (stat(path, &st) != 0) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	/* A file of an HF directory (config.json, a .safetensors file or
	 * the index) stands for its directory. */
	int hf = S_ISDIR(st.st_mode);
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t bl = strlen(base);
	if (!hf && (!strcmp(base, "config.json") ||
		    (bl > 12 && !strcmp(base + bl - 12, ".safetensors")) ||
		    (bl > 11 && !strcmp(base + bl - 11, ".index.json")))) {
		hf = 1;
		m->path = base == path ? strdup(".") : strndup(path,
						       (size_t)(base - path - 1));
		if (m->path && !m->path[0]) { /* "/config.json" */
			free(m->path);
			m->path = strdup("/");
		}
	} else {
		m->path = strdup(path);
	}
	LoadPriv *p = calloc(1, sizeof *p);
	if (!p || !m->path) {
		free(p);
		free(m->path);
		m->path = NULL;
		seterr(err, errlen, "out of memory");
		return -1;
	}
	m->priv = p;
	Loader L = {m, p, err, errlen};
	int rc;
	if (hf) {
		m->format = MODEL_FMT_HF;
		rc = load_hf(&L, opt);
	} else {
		m->format = MODEL_FMT_GGUF;
		rc = load_gguf(&L, opt);
	}
	if (rc == 0 && m->tok && tokenizer_n_vocab(m->tok) > m->cfg.vocab_size) {
		seterr(err, errlen,
		       "%s: tokenizer has %d tokens, the embedding only %d rows",
		       path, tokenizer_n_vocab(m->tok), m->cfg.vocab_size);
		rc = -1;
	}
	if (rc) {
		model_free(m);
		return -1;
	}
	summarize(&L);
	return 0;
}

int model_load(const char *path, Model *m, char *err, size_t errlen)
{
	return model_load_ex(path, NULL, m, err, errlen);
}

int model_files_changed(const Model *m, int restat, char *why, size_t whylen)
{
	const LoadPriv *p = m->priv;
	const void *owner = p ? (p->g ? (const void *)p->g : (const void *)p->st)
			      : NULL;
	if (!owner)
		return 0;
	return restat ? mapguard_changed(owner, why, whylen)
		      : mapguard_faulted(owner, why, whylen);
}

void model_free(Model *m)
{
	if (!m)
		return;
	LoadPriv *p = m->priv;
	if (m->tok)
		tokenizer_free(m->tok);
	if (p) {
		gguf_close(p->g);
		st_close(p->st);
		for (int i = 0; i < p->n_bufs; i++)
			free(p->bufs[i]);
		free(p->bufs);
		free(p);
	}
	free(m->w.layers);
	free(m->path);
	free(m->chat_template);
	memset(m, 0, sizeof *m);
}
