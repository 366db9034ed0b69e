/*
 * batch.h - continuous batching: many sequences of one model share every
 * forward pass, their K/V in a paged cache.
 *
 * Paged KV cache: a pool of n_blocks blocks of block_size tokens, per
 * layer one K and one V array of [n_blocks*block_size][kv_dim] floats on
 * the backend. A sequence owns a block table (block ids in position
 * order) that grows a block at a time as the sequence grows; nothing is
 * reserved for the whole context up front. Blocks go back to the pool the
 * moment a sequence ends.
 *
 * A step (batcher_step) builds one batch: one decode row for every running
 * sequence, then chunks of prompts, oldest sequence first, while the token
 * budget lasts; forward_batch runs it (the matmuls over all rows at once,
 * attention per row through its sequence's block table); each sequence
 * whose chunk reached its last token gets its logits and samples through
 * its own GenRun (engine.h), so its tokens are those engine_generate would
 * produce alone, up to the rounding of the matmul kernels over a different
 * number of rows.
 *
 * Prefix sharing: a sequence that starts (or restarts) with the same
 * tokens as one already in the batch, or as one of the last few finished
 * ones (whose full blocks stay cached until the pool needs them), takes
 * those full blocks of the common prefix (reference-counted) instead of
 * computing them again: a shared system prompt, a chat's next turn.
 *
 * Pool exhausted while a running sequence needs a block: the most recently
 * admitted other sequence is preempted - its blocks freed, its tokens kept -
 * and resumes later by prefilling its prompt and generated tokens again,
 * sampler and text state intact. A sequence is never failed for lack of
 * blocks; one that could not fit even an empty pool is refused at
 * batcher_add.
 *
 * Threading: a Batcher belongs to one thread (the model's worker), and it
 * uses its Engine's backend and weights, so the owner must not run
 * engine_generate on the same Engine between steps.
 */
#ifndef INFERD_BATCH_H
#define INFERD_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef struct Batcher Batcher;
typedef struct BatchSeq BatchSeq;

typedef struct BatchOptions {
	int block_size;   /* tokens per KV block; <= 0 = 16 */
	int n_blocks;     /* blocks in the pool; <= 0 = max_seqs contexts,
			   * capped at a quarter of free device memory */
	int max_seqs;     /* sequences at once; <= 0 = 16 */
	int token_budget; /* rows of one forward pass; <= 0 = 512 */
	size_t max_pool_bytes; /* with n_blocks <= 0: the pool's bytes at
				* most (0 = no cap), but never less than one
				* context (inferd: what --mem-budget leaves) */
} BatchOptions;

/* 1 when e's backend has the paged-cache ops (kv_store, attention_paged). */
int batcher_supported(Engine *e);

/* A batcher over e (which stays owned by the caller and must outlive it).
 * Returns 0, or -1 with a message (no paged ops, out of memory). */
int batcher_create(Engine *e, const BatchOptions *o, Batcher **out,
		   char *err, size_t errlen);
void batcher_free(Batcher *b);

/* Start a generation (see engine_generate for prompt, p, cb); it joins at
 * the next step. The prompt and *p are copied, but not the stop strings p
 * points to: they must live until the sequence is freed. Returns NULL with
 * a message when the request is invalid or can never fit. */
BatchSeq *batcher_add(Batcher *b, const int32_t *prompt, int n_prompt,
		      const GenParams *p, engine_text_fn cb, void *ud,
		      char *err, size_t errlen);

/* 1 when a new sequence with an n_prompt-token prompt can start now
 * without preempting anyone (a free sequence place, blocks for its
 * prompt beyond what running sequences are about to need). */
int batcher_can_admit(const Batcher *b, int n_prompt);

/* One forward pass over the active sequences; callbacks run from here.
 * Returns the number of rows computed (0: nothing to do), or -1 with a
 * message after a backend error, which ends every sequence of the step
 * with FINISH_ERROR (and all of them when the backend is lost); when only
 * fetching one row's logits failed (a flat top-p draw), that row's
 * sequence alone. */
int batcher_step(Batcher *b, char *err, size_t errlen);

/* End s now with FINISH_CANCEL (a client went away mid-prompt). */
void batcher_cancel(Batcher *b, BatchSeq *s);

/* Take s out of the batch (blocks freed, tokens and sampler kept) so that
 * another can take its place: the fairness policy's lever. Until
 * batcher_resume it belongs to the caller (batcher_cancel or
 * batchseq_free end it). */
void batcher_suspend(Batcher *b, BatchSeq *s);
/* Put a suspended s back; it recomputes its cache and goes on from the
 * same state. 0, or -1 with a message when the batch is full. */
int batcher_resume(Batcher *b, BatchSeq *s, char *err, size_t errlen);

/* Next finished sequence (in the order they finished), or NULL. */
BatchSeq *batcher_done(Batcher *b);

int batcher_active(const Batcher *b);      /* sequences not finished */
/* Blocks free now, counting those only the prefix cache holds. */
int batcher_free_blocks(const Batcher *b);
int batcher_n_blocks(const Batcher *b);    /* blocks in the pool */
size_t batcher_pool_bytes(const Batcher *b); /* device bytes of K and V */
int batcher_block_size(const Batcher *b);  /* tokens per block */
int batcher_seq_ctx(const Batcher *b);     /* most tokens of a sequence */

void *batchseq_ud(const BatchSeq *s);
/* Result (valid once the sequence is done; ids owned by the sequence). */
const GenResult *batchseq_result(const BatchSeq *s);
int batchseq_preempted(const BatchSeq *s); /* times it was preempted */
/* Tokens whose K/V it took from other sequences' blocks (prefix sharing;
 * also in its GenResult's n_reused at the start). */
int batchseq_shared(const BatchSeq *s);
/* Free a finished sequence (from batcher_done). */
void batchseq_free(BatchSeq *s);

#endif
