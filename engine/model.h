/*
 * model.h - a Llama-family transformer: its hyper-parameters (Config), its
 * weights (Weights, mmapped read-only from safetensors or GGUF), the
 * per-sequence run state (State: activations and a preallocated KV cache)
 * and forward(), which computes logits for a batch of new tokens.
 *
 * Architectures: llama (Llama 2/3, SmolLM), mistral, qwen2 (q/k/v biases).
 * forward() follows the HF LlamaForCausalLM math:
 *   x = embed(tokens)
 *   for each layer:
 *     h = rmsnorm(x) ; q,k,v = h Wq,Wk,Wv (+bias) ; rope(q,k)
 *     x += attention(q, Kcache, Vcache) Wo
 *     h = rmsnorm(x) ; x += (silu(h Wgate) * (h Wup)) Wdown
 *   logits = rmsnorm(x) Wout      (last row only)
 */
#ifndef INFERD_MODEL_H
#define INFERD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "tensor.h"

typedef struct Tokenizer Tokenizer;

/* How the RoPE frequencies are scaled for long context. */
enum {
	ROPE_SCALE_NONE = 0,   /* plain theta^(-2i/d) */
	ROPE_SCALE_LINEAR = 1, /* positions divided by factor */
	ROPE_SCALE_LLAMA3 = 2, /* Llama 3.1 wavelength-banded scaling */
};

/* Model file formats. */
enum { MODEL_FMT_HF = 0, MODEL_FMT_GGUF = 1 };

typedef struct Config {
	char arch[32];      /* "llama", "mistral", "qwen2" */
	int dim;            /* hidden size (d_model) */
	int hidden_dim;     /* SwiGLU intermediate size */
	int n_layers;       /* transformer blocks */
	int n_heads;        /* query heads */
	int n_kv_heads;     /* key/value heads (GQA when < n_heads) */
	int head_dim;       /* per-head width (often dim / n_heads) */
	int vocab_size;     /* rows of the embedding and lm_head */
	int max_seq_len;    /* trained context (max_position_embeddings) */
	float norm_eps;     /* RMSNorm epsilon */
	float rope_theta;   /* RoPE base */
	int rope_scaling;   /* ROPE_SCALE_* */
	float rope_factor;  /* scaling factor (linear, llama3) */
	float rope_low_freq_factor;  /* llama3: low_freq_factor */
	float rope_high_freq_factor; /* llama3: high_freq_factor */
	int rope_orig_ctx;  /* llama3: original_max_position_embeddings */
	int rope_layout;    /* ROPE_HALF (HF) or ROPE_INTERLEAVED (GGUF) */
	int tied_embeddings; /* lm_head shares the embedding matrix */
	int has_qkv_bias;   /* q/k/v projections carry biases (qwen2) */
} Config;

typedef struct LayerWeights {
	Tensor attn_norm; /* [dim] */
	Tensor wq;        /* [n_heads*head_dim][dim] */
	Tensor wk;        /* [n_kv_heads*head_dim][dim] */
	Tensor wv;        /* [n_kv_heads*head_dim][dim] */
	Tensor wo;        /* [dim][n_heads*head_dim] */
	Tensor bq;        /* [n_heads*head_dim] F32, data NULL if absent */
	Tensor bk;        /* [n_kv_heads*head_dim], likewise */
	Tensor bv;        /* [n_kv_heads*head_dim], likewise */
	Tensor ffn_norm;  /* [dim] */
	Tensor w_gate;    /* [hidden_dim][dim] */
	Tensor w_up;      /* [hidden_dim][dim] */
	Tensor w_down;    /* [dim][hidden_dim] */
} LayerWeights;

typedef struct Weights {
	Tensor tok_embd;      /* [vocab][dim] */
	LayerWeights *layers; /* n_layers */
	Tensor out_norm;      /* [dim] */
	Tensor output;        /* [vocab][dim]; a copy of tok_embd when tied */
	Tensor rope_freqs;    /* [head_dim/2] F32 divisors of the RoPE
			       * frequencies (GGUF Llama 3.x files carry
			       * their llama3 scaling this way); data NULL
			       * when absent */
} Weights;

/* Everything a loaded model file brings: owned by the Model. */
typedef struct Model {
	Config cfg;         /* hyper-parameters */
	Weights w;          /* tensors pointing into the mappings */
	Tokenizer *tok;     /* tokenizer from the same file/directory */
	int format;         /* MODEL_FMT_* */
	char *path;         /* the path it was loaded from */
	char *chat_template; /* Jinja text from the file, NULL if none */
	char quant[16];     /* dominant weight type, e.g. "q4_1", "bf16" */
	uint64_t n_params;  /* parameters (elements of all tensors) */
	uint64_t file_bytes; /* bytes of tensor data mapped */
	void *priv;         /* loader-private: mappings, names, float buffers */
} Model;

/* Load a model: a directory is read as a Hugging Face model (config.json,
 * model.safetensors or model.safetensors.index.json, tokenizer.json; a
 * path to its config.json or a .safetensors file means the directory), a
 * file as GGUF. Weights are mmapped read-only; nothing is copied. Returns 0,
 * or -1 with a one-line message in err. On success the caller owns *m and
 * releases it with model_free(). */
int model_load(const char *path, Model *m, char *err, size_t errlen);
void model_free(Model *m);

/* 1 when m's files are no longer what was loaded, with a message naming
 * the file in why: a read of a mapping faulted (the file shrank under it;
 * see mapguard.h) or, with restat, a file was removed, replaced, resized
 * or modified since. 0 when unchanged. Without restat no syscall is made
 * (forward() checks after every pass). */
int model_files_changed(const Model *m, int restat, char *why, size_t whylen);

/* Options of model_load_ex. */
typedef struct ModelLoadOptions {
	/* llama.cpp-style "KEY=TYPE:VALUE" hyper-parameter overrides, TYPE
	 * int, float or str, KEY a GGUF metadata key with or without its
	 * "<arch>." prefix: context_length, rope.freq_base,
	 * rope.scaling.type (none, linear, llama3), rope.scaling.factor,
	 * rope.scaling.original_context_length,
	 * rope.scaling.low_freq_factor, rope.scaling.high_freq_factor,
	 * attention.layer_norm_rms_epsilon. Applied to the Config (of either
	 * format) before it is validated; for GGUF files whose metadata lacks
	 * what config.json had. */
	const char *const *overrides;
	int n_overrides;   /* entries in overrides */
	int no_tokenizer;  /* 1: leave m->tok NULL (weight-only tools) */
} ModelLoadOptions;

/* model_load with options (opt may be NULL). */
int model_load_ex(const char *path, const ModelLoadOptions *opt, Model *m,
		  char *err, size_t errlen);
/* Apply one "KEY=TYPE:VALUE" override (see ModelLoadOptions) to cfg.
 * Returns 0, or -1 with a message. Does not re-validate cfg. */
int config_override(Config *cfg, const char *spec, char *err, size_t errlen);

/* Run state of one sequence on one backend: activations and a KV cache
 * preallocated for ctx tokens, plus scratch for up to max_batch tokens per
 * forward() call. All buffers are backend device memory. */
typedef struct State {
	Backend *be;       /* backend that owns the buffers */
	int ctx;           /* KV cache capacity in tokens */
	int max_batch;     /* most tokens per forward() call */
	float *x;          /* [max_batch][dim] residual stream */
	float *xb;         /* [max_batch][dim] normed input */
	float *q;          /* [max_batch][n_heads*head_dim] */
	float *att;        /* [max_batch][n_heads*head_dim] attention out */
	float *hb;         /* [max_batch][hidden_dim] gate, then swiglu */
	float *hb2;        /* [max_batch][hidden_dim] up */
	float *logits_dev; /* [vocab] on the device */
	float *logits;     /* [vocab] host copy of the last row's logits */
	int logits_on_device; /* 1: forward() leaves them in logits_dev only
			       * (the engine picks the token there) */
	float *kcache;     /* [n_layers][ctx][kv_dim] */
	float *vcache;     /* [n_layers][ctx][kv_dim] */
	float *inv_freq;   /* [head_dim/2] RoPE inverse frequencies (device) */
	int pos;           /* tokens already in the cache */
	int fatal;         /* 1 after an error the backend cannot recover */
} State;

/* Upload the weights to the backend (no-op on the CPU) and allocate a
 * State for ctx tokens. Returns 0 or -1 with a message (e.g. the numbers of
 * an out-of-memory). */
int state_init(State *s, Model *m, Backend *be, int ctx, int max_batch,
	       char *err, size_t errlen);
void state_free(State *s, Model *m);

/* Feed n tokens at positions s->pos.. (n <= max_batch, s->pos + n <=
 * ctx). Leaves the logits of the last token in s->logits and advances
 * s->pos. Returns 0 or -1 with the backend's error (s->fatal set when the
 * backend cannot go on, e.g. a CUDA illegal address). */
int forward(Model *m, State *s, const int32_t *tokens, int n, char *err,
	    size_t errlen);

/* One layer's feed-forward block on rows rows of the residual stream x
 * [rows][dim], in place: x += (silu(rmsnorm(x) Wgate) * (rmsnorm(x) Wup))
 * Wdown. xb [rows][dim], hb and hb2 [rows][hidden_dim] are scratch; all
 * are backend memory owned by the caller. Shared by forward() and the
 * batched forward (batch.c) so both issue the same backend ops in the same
 * order, which keeps batched results equal to alone ones bit for bit. */
void forward_ffn(Backend *be, const Config *c, const LayerWeights *L,
		 float *x, float *xb, float *hb, float *hb2, int rows);
/* The layer's attention inputs, likewise shared: xb = rmsnorm(x) [rows]
 * [dim], then q, k and v = xb Wq, Wk, Wv (+ bias) [rows][q_dim or
 * kv_dim], each written where the caller points (forward() hands the KV
 * cache rows for k and v). */
void forward_qkv(Backend *be, const Config *c, const LayerWeights *L,
		 const float *x, float *xb, float *q, float *k, float *v,
		 int rows);

/* The residual step x[rows][w->rows] += in[rows][w->cols] . w^T, through
 * the backend's matmul_add where it has one, else matmul into tmp (same
 * shape as x, left undefined) and add. */
void residual_matmul(Backend *be, float *x, float *tmp, const float *in,
		     const Tensor *w, int rows);

/* Compute the RoPE inverse frequencies (with scaling) for cfg into out
 * [head_dim/2]. */
void rope_inv_freq(const Config *cfg, float *out);

#endif
