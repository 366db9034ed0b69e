/*
 * model.c - run state and the forward pass of a Llama-family transformer.
 * See model.h for the math; forward() below follows it line by line, every
 * step an op of the backend table, so the same code drives the CPU and the
 * CUDA backends. Loading the weights (model_load) lives in loader.c.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rope_inv_freq(const Config *cfg, float *out)
{
	int half = cfg->head_dim / 2;
	double base = cfg->rope_theta > 0.0f ? cfg->rope_theta : 10000.0;
	for (int i = 0; i < half; i++) {
		/* HF: 1 / base^(2i/d), computed in float32 there; double
		 * here and rounded once. */
		double f = 1.0 / pow(base, (double)(2 * i) / cfg->head_dim);
		double factor = cfg->rope_factor > 0.0f ? cfg->rope_factor : 1.0;
		if (cfg->rope_scaling == ROPE_SCALE_LINEAR) {
			f /= factor;
		} else if (cfg->rope_scaling == ROPE_SCALE_LLAMA3) {
			/* HF _compute_llama3_parameters: long wavelengths
			 * are slowed by factor, short ones kept, the band in
			 * between blended linearly in orig_ctx/wavelen. */
			double lo = cfg->rope_low_freq_factor;
			double hi = cfg->rope_high_freq_factor;
			double octx = cfg->rope_orig_ctx;
			double lo_wavelen = octx / lo, hi_wavelen = octx / hi;
			double wavelen = 2.0 * M_PI / f;
			if (wavelen > lo_wavelen) {
				f /= factor;
			} else if (!(wavelen < hi_wavelen) && hi != lo) {
				double smooth = (octx / wavelen - lo) / (hi - lo);
				f = (1.0 - smooth) * f / factor + smooth * f;
			}
		}
		out[i] = (float)f;
	}
}

/* Weights the forward pass reads, in one list for upload and release. */
static int for_each_tensor(Model *m, int (*fn)(Model *, State *, Tensor *,
					       char *, size_t),
			   State *s, char *err, size_t errlen)
{
	Weights *w = &m->w;
	if (fn(m, s, &w->tok_embd, err, errlen))
		return -1;
	for (int l = 0; l < m->cfg.n_layers; l++) {
		LayerWeights *L = &w->layers[l];
		Tensor *ts[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv,
				&L->wo, &L->bq, &L->bk, &L->bv,
				&L->ffn_norm, &L->w_gate, &L->w_up,
				&L->w_down};
		for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
			if (fn(m, s, ts[i], err, errlen))
				return -1;
	}
	if (fn(m, s, &w->out_norm, err, errlen))
		return -1;
	return fn(m, s, &w->output, err, errlen);
}

/* A tied head is a struct copy of the embedding: share its device copy
 * instead of uploading the same bytes twice. */
static int shares_embedding(const Model *m, const Tensor *t)
{
	return t == &m->w.output && m->w.output.data == m->w.tok_embd.data;
}

static int upload_one(Model *m, State *s, Tensor *t, char *err,
		      size_t errlen)
{
	if (!t->data || t->dev)
		return 0;
	if (shares_embedding(m, t)) {
		t->dev = m->w.tok_embd.dev;
		return 0;
	}
	char e[256];
	if (s->be->ops->upload(s->be, t, e, sizeof e) != 0) {
		snprintf(err, errlen, "uploading %s: %s",
			 t->name ? t->name : "tensor", e);
		return -1;
	}
	return 0;
}

static int release_one(Model *m, State *s, Tensor *t, char *err,
		       size_t errlen)
{
	if (shares_embedding(m, t)) {
		t->dev = NULL;
		return 0;
	}
	if (t->data && t->dev)
		s->be->ops->release(s->be, t);
	return 0;
}

/* bytes = a * b * c * sizeof(float), or 0 on overflow. */
static size_t fbytes(size_t a, size_t b, size_t c)
{
	size_t r;
	if (__builtin_mul_overflow(a, b, &r) ||
	    __builtin_mul_overflow(r, c, &r) ||
	    __builtin_mul_overflow(r, sizeof(float), &r))
		return 0;
	return r;
}

int state_init(State *s, Model *m, Backend *be, int ctx, int max_batch,
	       char *err, size_t errlen)
{
	const Config *c = &m->cfg;
	const BackendOps *op = be->ops;
	memset(s, 0, sizeof *s);
	s->be = be;
	if (ctx <= 0 || max_batch <= 0 || c->dim <= 0 || c->n_layers <= 0 ||
	    c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
	    c->head_dim % 2 || c->hidden_dim <= 0 || c->vocab_size <= 0 ||
	    c->n_heads % c->n_kv_heads) {
		snprintf(err, errlen,
			 "invalid state shape (ctx %d, batch %d, dim %d, "
			 "heads %d/%d, head_dim %d)",
			 ctx, max_batch, c->dim, c->n_heads, c->n_kv_heads,
			 c->head_dim);
		return -1;
	}
	if (max_batch > ctx)
		max_batch = ctx;
	s->ctx = ctx;
	s->max_batch = max_batch;

	if (for_each_tensor(m, upload_one, s, err, errlen)) {
		state_free(s, m);
		return -1;
	}

	size_t q_dim = (size_t)c->n_heads * c->head_dim;
	size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim;
	struct {
		float **p;
		size_t bytes;
		const char *what;
	} bufs[] = {
		{&s->x, fbytes(max_batch, c->dim, 1), "residual"},
		{&s->xb, fbytes(max_batch, c->dim, 1), "normed input"},
		{&s->q, fbytes(max_batch, q_dim, 1), "queries"},
		{&s->att, fbytes(max_batch, q_dim, 1), "attention output"},
		{&s->hb, fbytes(max_batch, c->hidden_dim, 1), "ffn gate"},
		{&s->hb2, fbytes(max_batch, c->hidden_dim, 1), "ffn up"},
		{&s->logits_dev, fbytes(c->vocab_size, 1, 1), "logits"},
		{&s->kcache, fbytes(c->n_layers, ctx, kv_dim), "K cache"},
		{&s->vcache, fbytes(c->n_layers, ctx, kv_dim), "V cache"},
		{&s->inv_freq, fbytes(c->head_dim / 2, 1, 1), "rope table"},
	};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
		if (bufs[i].bytes == 0 ||
		    !(*bufs[i].p = op->alloc(be, bufs[i].bytes))) {
			uint64_t total = 0, avail = 0;
			op->memory(be, &total, &avail);
			snprintf(err, errlen,
				 "out of %s memory allocating the %s (%zu "
				 "bytes; %llu of %llu bytes free; ctx %d)",
				 op->name, bufs[i].what, bufs[i].bytes,
				 (unsigned long long)avail,
				 (unsigned long long)total, ctx);
			state_free(s, m);
			return -1;
		}
	}
	s->logits = malloc(sizeof(float) * (size_t)c->vocab_size);
	float *freq = malloc(sizeof(float) * (size_t)(c->head_dim / 2));
	if (!s->logits || !freq) {
		free(freq);
		snprintf(err, errlen, "out of host memory");
		state_free(s, m);
		return -1;
	}
	rope_inv_freq(c, freq);
	if (m->w.rope_freqs.data) {
		/* GGUF Llama 3.x: per-frequency divisors (llama.cpp's
		 * rope_freqs) stand in for the llama3 scaling in config. */
		Config plain = *c;
		plain.rope_scaling = ROPE_SCALE_NONE;
		rope_inv_freq(&plain, freq);
		float *div = s->logits; /* vocab >= head_dim/2 floats, free now */
		if (m->w.rope_freqs.rows * m->w.rope_freqs.cols != c->head_dim / 2 ||
		    c->vocab_size < c->head_dim / 2) {
			free(freq);
			snprintf(err, errlen, "rope_freqs has %lld values, "
				 "want %d", (long long)(m->w.rope_freqs.rows *
							m->w.rope_freqs.cols),
				 c->head_dim / 2);
			state_free(s, m);
			return -1;
		}
		dequantize_row(m->w.rope_freqs.type, m->w.rope_freqs.data, div,
			       c->head_dim / 2);
		for (int i = 0; i < c->head_dim / 2; i++)
			freq[i] /= div[i];
	}
	op->to_dev(be, s->inv_freq, freq, sizeof(float) * (c->head_dim / 2));
	int fatal = 0;
	int rc = op->sync(be, &fatal, err, errlen);
	free(freq);
	if (rc != 0) {
		state_free(s, m);
		return -1;
	}
	return 0;
}

void state_free(State *s, Model *m)
{
	if (!s->be)
		return;
	const BackendOps *op = s->be->ops;
	float **bufs[] = {&s->x, &s->xb, &s->q, &s->att, &s->hb, &s->hb2,
			  &s->logits_dev, &s->kcache, &s->vcache,
			  &s->inv_freq};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
		if (*bufs[i])
			op->free(s->be, *bufs[i]);
		*bufs[i] = NULL;
	}
	free(s->logits);
	s->logits = NULL;
	if (m && m->w.layers)
		for_each_tensor(m, release_one, s, NULL, 0);
	s->be = NULL;
}

/* A bias tensor or NULL when the model has none. */
static const Tensor *bias(const Tensor *t)
{
	return t->data ? t : NULL;
}

void forward_qkv(Backend *be, const Config *c, const LayerWeights *L,
		 const float *x, float *xb, float *q, float *k, float *v,
		 int rows)
{
	const BackendOps *op = be->ops;

	/* h = rmsnorm(x); q, k, v = h Wq, Wk, Wv (+ bias) */
	op->rmsnorm(be, xb, x, &L->attn_norm, rows, c->dim, c->norm_eps);
	op->matmul(be, q, xb, &L->wq, bias(&L->bq), rows);
	op->matmul(be, k, xb, &L->wk, bias(&L->bk), rows);
	op->matmul(be, v, xb, &L->wv, bias(&L->bv), rows);
}

void residual_matmul(Backend *be, float *x, float *tmp, const float *in,
		     const Tensor *w, int rows)
{
	const BackendOps *op = be->ops;
	if (op->matmul_add) {
		op->matmul_add(be, x, tmp, in, w, rows);
		return;
	}
	op->matmul(be, tmp, in, w, NULL, rows);
	op->add(be, x, tmp, (size_t)rows * w->rows);
}

void forward_ffn(Backend *be, const Config *c, const LayerWeights *L,
		 float *x, float *xb, float *hb, float *hb2, int rows)
{
	const BackendOps *op = be->ops;

	/* h = rmsnorm(x); x += (silu(h Wgate) * (h Wup)) Wdown */
	op->rmsnorm(be, xb, x, &L->ffn_norm, rows, c->dim, c->norm_eps);
	op->matmul(be, hb, xb, &L->w_gate, NULL, rows);
	op->matmul(be, hb2, xb, &L->w_up, NULL, rows);
	op->swiglu(be, hb, hb2, (size_t)rows * c->hidden_dim);
	residual_matmul(be, x, xb, hb, &L->w_down, rows);
}

int forward(Model *m, State *s, const int32_t *tokens, int n, char *err,
	    size_t errlen)
{
	const Config *c = &m->cfg;
	const Weights *w = &m->w;
	Backend *be = s->be;
	const BackendOps *op = be->ops;
	int dim = c->dim, hd = c->head_dim, pos0 = s->pos;
	int q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
	float eps = c->norm_eps;

	if (n <= 0 || n > s->max_batch || pos0 + n > s->ctx) {
		snprintf(err, errlen,
			 "forward: %d tokens at position %d do not fit "
			 "(batch %d, context %d)",
			 n, pos0, s->max_batch, s->ctx);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
			snprintf(err, errlen, "forward: token id %d out of "
				 "range (vocab %d)", tokens[i], c->vocab_size);
			return -1;
		}
	}

	/* x = embed(tokens) */
	op->embed(be, s->x, &w->tok_embd, tokens, n);

	for (int l = 0; l < c->n_layers; l++) {
		const LayerWeights *L = &w->layers[l];
		size_t layer = (size_t)l * s->ctx * kv_dim;
		float *kc = s->kcache + layer, *vc = s->vcache + layer;
		/* this step's K and V go straight into their cache rows */
		float *k = kc + (size_t)pos0 * kv_dim;
		float *v = vc + (size_t)pos0 * kv_dim;

		forward_qkv(be, c, L, s->x, s->xb, s->q, k, v, n);

		/* rope(q, k) at positions pos0 .. pos0+n-1 */
		op->rope(be, s->q, n, q_dim, c->n_heads, hd, pos0, s->inv_freq,
			 c->rope_layout);
		op->rope(be, k, n, kv_dim, c->n_kv_heads, hd, pos0,
			 s->inv_freq, c->rope_layout);

		/* x += attention(q, Kcache, Vcache) Wo */
		op->attention(be, s->att, s->q, kc, vc, n, pos0, c->n_heads,
			      c->n_kv_heads, hd);
		residual_matmul(be, s->x, s->xb, s->att, &L->wo, n);

		forward_ffn(be, c, L, s->x, s->xb, s->hb, s->hb2, n);
	}

	/* logits = rmsnorm(x) Wout, for the last row only */
	op->rmsnorm(be, s->xb, s->x + (size_t)(n - 1) * dim, &w->out_norm, 1,
		    dim, eps);
	op->matmul(be, s->logits_dev, s->xb, &w->output, NULL, 1);
	if (!s->logits_on_device)
		op->to_host(be, s->logits, s->logits_dev,
			    sizeof(float) * (size_t)c->vocab_size);

	int fatal;
	if (backend_sync(be, &fatal, err, errlen) != 0) {
		s->fatal = fatal != 0;
		return -1;
	}
	if (model_files_changed(m, 0, err, errlen)) {
		/* the pass read zeros for a truncated file (mapguard.h):
		 * its logits are garbage, and so is every later pass */
		s->fatal = 1;
		return -1;
	}
	s->pos += n;
	return 0;
}
