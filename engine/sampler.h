/*
 * sampler.h - choose the next token from logits.
 *
 * Order of operations (as llama.cpp's default chain and HF's logits
 * processors agree on): penalties over the recent tokens (repetition as
 * in HF / CTRL: divide positive logits, multiply negative ones; frequency
 * and presence as in OpenAI), then temperature 0 = greedy (argmax, lowest
 * id on ties), else top-k, softmax with temperature, top-p, min-p, and a
 * draw from a seeded PRNG. Same seed and inputs, same tokens.
 */
#ifndef INFERD_SAMPLER_H
#define INFERD_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct SamplerParams {
	float temperature;    /* 0 = greedy */
	int top_k;            /* <= 0 = off */
	float top_p;          /* >= 1 = off */
	float min_p;          /* <= 0 = off */
	float repeat_penalty; /* 1 = off */
	float freq_penalty;   /* 0 = off */
	float presence_penalty; /* 0 = off */
	int penalty_last_n;   /* window of recent tokens for penalties */
	uint64_t seed;        /* PRNG seed */
} SamplerParams;

void sampler_params_default(SamplerParams *p);

/* One candidate token during sampling. */
typedef struct SamplerCand {
	float logit;  /* its logit, then its probability */
	int32_t id;   /* token id */
} SamplerCand;

/* Preallocated sampler: no allocation per token. */
typedef struct Sampler {
	SamplerParams p;      /* parameters in force */
	int n_vocab;          /* logits length */
	uint64_t rng[4];      /* xoshiro256** state */
	SamplerCand *cand;    /* [n_vocab] scratch */
	int32_t *recent;      /* ring of the last penalty_last_n tokens */
	int n_recent;         /* filled entries */
	int recent_head;      /* next write index */
	uint16_t *counts;     /* [n_vocab] occurrences within the window */
} Sampler;

int sampler_init(Sampler *s, const SamplerParams *p, int n_vocab);
void sampler_free(Sampler *s);
/* Record a token (prompt or generated) for the penalties. */
void sampler_accept(Sampler *s, int32_t id);
/* 1 when p's repetition, frequency or presence penalty changes logits
 * (a repetition penalty of 1 or <= 0 is off). */
int sampler_penalties_on(const SamplerParams *p);
/* Pick a token; logits may be modified. */
int32_t sampler_sample(Sampler *s, float *logits);
/* top_k when a draw depends on the top_k best logits alone (temperature
 * > 0, top-k on, no penalties), else 0: such a draw can be made from the
 * candidates a GPU selected (BackendOps.topk_rows), logits left there. */
int sampler_takes_topk(const Sampler *s);
/* sampler_sample from those: vals/ids hold at least sampler_takes_topk()
 * candidates, best first (larger logit, lower id on ties), as the logits'
 * top-k; the same token and the same random stream as sampler_sample. */
int32_t sampler_sample_topk(Sampler *s, const float *vals, const int32_t *ids);
/* 1 when a draw depends on the best logits and the softmax normaliser
 * alone: temperature > 0, no penalties, top-k off, and top-p or min-p on
 * (without top-k the host would need every logit for the normaliser). */
int sampler_takes_top(const Sampler *s);
/* That draw from the k best candidates (as topk_rows gives them, best
 * first) and sum = the sum over all logits l of exp((l - max) / T) in
 * f64 (BackendOps.expsum_rows): the token sampler_sample would pick, or
 * -1 when the candidates do not hold every token the draw could keep (a
 * flat distribution); then call sampler_sample on the logits: the PRNG
 * has not moved. The host sums in id order and a GPU in its own, so the
 * two normalisers may differ in the last bits (~1e-16). */
int32_t sampler_sample_top(Sampler *s, const float *vals, const int32_t *ids,
			   int k, double sum);
/* The distribution sampler_sample() would draw from: applies the penalties
 * and filters to logits (modified) and writes up to cap kept ids and their
 * probabilities (renormalised, best first, lower id first on ties).
 * Returns how many are kept (1 with probability 1 when greedy). Does not
 * advance the PRNG. For tests and diagnostics. */
int sampler_probs(Sampler *s, float *logits, int32_t *ids, float *probs,
		  int cap);

#endif
