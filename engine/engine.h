/*
 * engine.h - the engine as infer-run and inferd use it: open a model on a
 * backend, tokenize, and generate with sampling, stop strings and
 * streaming. Everything below this header (model, tokenizer, backends) is
 * reached through it.
 *
 * Threading: an Engine runs one generation at a time (it owns one KV
 * cache); callers serialise engine_generate() per Engine. Different Engines
 * may run on different threads. Tokenize/detokenize are thread-safe.
 */
#ifndef INFERD_ENGINE_H
#define INFERD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

typedef struct Engine Engine;

typedef struct EngineOptions {
	const char *backend; /* "auto" (default), "cpu", "cuda" */
	int threads;         /* CPU threads, <= 0 = all cores */
	int ctx;             /* KV cache tokens; <= 0 = min(model, 4096) */
	int max_batch;       /* prefill chunk; <= 0 = 512 */
	int quiet;           /* 1: no notices on stderr */
	int device;          /* CUDA device index */
	int no_prefix_reuse; /* 1: never reuse cached K/V of a common prompt
			      * prefix (bit-identical reruns) */
	const char *const *overrides; /* "KEY=TYPE:VALUE" (ModelLoadOptions) */
	int n_overrides;     /* entries in overrides */
} EngineOptions;

/* Load the model at path (HF directory or GGUF file) on the chosen backend.
 * Returns 0, or -1 with a one-line message. Caller owns *out. */
int engine_open(const char *path, const EngineOptions *opt, Engine **out,
		char *err, size_t errlen);
void engine_close(Engine *e);

const Model *engine_model(const Engine *e);
const Tokenizer *engine_tokenizer(const Engine *e);
Backend *engine_backend(Engine *e);
int engine_ctx(const Engine *e); /* KV capacity in tokens */
State *engine_state(Engine *e);  /* the run state (tests, benchmarks) */
/* 1 after a backend error it cannot recover from (e.g. a CUDA illegal
 * address) or a read of a model file truncated under its mapping
 * (mapguard.h): every later generate fails; the owner should reopen. */
int engine_fatal(const Engine *e);
/* 1 when the model's files changed since engine_open (truncated under the
 * mapping, replaced, resized, modified or removed: model_files_changed),
 * with a message naming the file: the owner should reopen it rather than
 * run on a mix of old and new weights. Makes one stat() per file. */
int engine_files_changed(const Engine *e, char *why, size_t whylen);


/* Why a generation ended. */
typedef enum {
	FINISH_NONE = 0,  /* still running */
	FINISH_LENGTH,    /* max_tokens reached */
	FINISH_EOS,       /* end-of-generation token */
	FINISH_STOP,      /* a stop string matched (it is not emitted) */
	FINISH_CANCEL,    /* the callback asked to stop */
	FINISH_CONTEXT,   /* the KV cache is full */
	FINISH_ERROR,     /* backend error */
} finish_reason;

const char *finish_reason_name(finish_reason r); /* "length", "eos", ... */

#define ENGINE_MAX_STOP 8 /* most stop strings per request */
#define ENGINE_MAX_BIAS 16 /* most logit_bias entries per request */

/* A constant added to one token's logit before sampling (OpenAI
 * logit_bias; -INFINITY bans the token). */
typedef struct LogitBias {
	int32_t id;  /* token id */
	float bias;  /* added to its logit */
} LogitBias;

typedef struct GenParams {
	int max_tokens;          /* new tokens at most; <= 0 = until ctx */
	SamplerParams sampling;  /* temperature, top-k/p, penalties, seed */
	const char *stop[ENGINE_MAX_STOP]; /* stop strings (not owned) */
	int n_stop;              /* how many in stop[] */
	int ignore_eos;          /* 1: keep going past end-of-generation */
	LogitBias logit_bias[ENGINE_MAX_BIAS]; /* per-token logit offsets */
	int n_logit_bias;        /* entries in logit_bias */
} GenParams;

void gen_params_default(GenParams *p);

/* Called with each piece of text as soon as it is final (stop strings
 * can hold text back until they no longer match). token is the id that
 * completed the piece (-1 for text released at the end). It is called once
 * for every generated token, with len 0 while that token's text is held
 * back, so cancellation is checked every token. Return nonzero to cancel
 * the generation. */
typedef int (*engine_text_fn)(void *ud, int32_t token, const char *text,
			      size_t len);

typedef struct GenResult {
	finish_reason finish; /* why it ended */
	int n_prompt;         /* prompt tokens */
	int n_reused;         /* of which K/V came from the previous request */
	int n_gen;            /* generated tokens */
	double t_prefill;     /* seconds for the prompt */
	double t_decode;      /* seconds for the rest */
	double ttft;          /* seconds to the first generated token */
	int32_t *ids;         /* generated ids (malloc'd, caller frees) */
} GenResult;

/* Generate from prompt ids (which already carry BOS if wanted). The KV
 * cache rows of the longest common prefix with the previous request's
 * tokens (prompt and generated) are reused, the rest is recomputed. Returns 0 (res filled, also when cancelled) or -1 with
 * a message (prompt longer than the context, backend error). */
int engine_generate(Engine *e, const int32_t *prompt, int n_prompt,
		    const GenParams *p, engine_text_fn cb, void *ud,
		    GenResult *res, char *err, size_t errlen);

/* One generation's sampling and text streaming, apart from the forward
 * passes that feed it: engine_generate() drives one with forward(), the
 * batcher (batch.h) many at once with forward_batch(). Same inputs, same
 * tokens, whichever drives it. */
typedef struct GenRun {
	const GenParams *p;   /* parameters (not owned) */
	GenResult *res;       /* filled as tokens come */
	engine_text_fn cb;    /* text callback or NULL */
	void *ud;             /* its argument */
	const Tokenizer *tok; /* for the text and end-of-generation ids */
	Sampler smp;          /* seeded sampler with the penalty window */
	int smp_ok;           /* smp initialised */
	TokenStream ts;       /* ids -> UTF-8 pieces */
	char *piece;          /* [TOKSTREAM_MAX_PIECE] scratch */
	char *hbuf;           /* text held back (may start a stop string) */
	size_t hlen, hcap;    /* held bytes, capacity */
	int max_gen;          /* tokens at most (max_tokens, context) */
	double t0;            /* start (monotonic seconds), for ttft */
} GenRun;

/* Validate p, allocate, feed the prompt to the penalty window. ctx: the
 * sequence's KV capacity in tokens. Returns 0, or -1 with a message (and
 * nothing to free). res->ids is malloc'd for the caller. */
int genrun_init(GenRun *g, const Tokenizer *tok, int n_vocab, int ctx,
		const int32_t *prompt, int n_prompt, const GenParams *p,
		engine_text_fn cb, void *ud, GenResult *res, char *err,
		size_t errlen);
/* Given the logits after the last fed token (modified): sample, stream
 * its text. FINISH_NONE: feed *next and call again; anything else: the
 * generation is over (call genrun_end with it). */
finish_reason genrun_step(GenRun *g, float *logits, int32_t *next);
/* 1 when the next token is the plain argmax of the logits (greedy, no
 * penalties, no logit bias), so that it can be picked where the logits
 * are (argmax_rows) and given to genrun_step_id. */
int genrun_plain_greedy(const GenRun *g);
/* genrun_step with the token already chosen. */
finish_reason genrun_step_id(GenRun *g, int32_t id, int32_t *next);
/* k (1..TOPK_MAX) when the next token depends on the k best logits alone
 * (sampler_takes_topk, no logit bias), else 0; then genrun_step_topk takes
 * the candidates a backend's topk_rows picked (vals/ids, best first). */
int genrun_topk(const GenRun *g);
finish_reason genrun_step_topk(GenRun *g, const float *vals,
			       const int32_t *ids, int32_t *next);
/* 1 when the next token depends on the TOPK_MAX best logits and the
 * softmax normaliser alone, or on all logits in rare flat cases
 * (sampler_takes_top: top-p or min-p without top-k, no logit bias); then
 * genrun_pick_top picks it from topk_rows' candidates and expsum_rows'
 * sum: the token for genrun_step_id, or -1: genrun_step on the logits. */
int genrun_top(const GenRun *g);
int32_t genrun_pick_top(GenRun *g, const float *vals, const int32_t *ids,
			double sum);
/* Release held text as the finish reason allows and set res->finish. */
void genrun_end(GenRun *g, finish_reason fin);
void genrun_free(GenRun *g);

/* Benchmark: prefill n_prompt fixed tokens (in chunks of max_batch), then
 * decode n_gen tokens one by one (greedy), from an empty cache. Stores
 * tokens per second of each phase. Returns 0 or -1 with a message. */
int engine_bench(Engine *e, int n_prompt, int n_gen, double *prefill_tps,
		 double *decode_tps, char *err, size_t errlen);

#endif
