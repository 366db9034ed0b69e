/*
 * attention.cuh - causal grouped-query attention: a flash-style tiled kernel for
 * prefill (no score matrix in memory) and split-K flash-decoding for few
 * query rows over long contexts, over the contiguous cache of forward()
 * (BackendOps.attention) or the paged pool of batching (attention_paged,
 * attention_chunk).
 */
#ifndef INFERD_CUDA_ATTENTION_CUH
#define INFERD_CUDA_ATTENTION_CUH

#include "common.cuh"

void cuda_attention(Backend *b, float *out, const float *q, const float *kc,
		    const float *vc, int n, int pos0, int n_heads,
		    int n_kv_heads, int head_dim);
/* BackendOps.attention_chunk: the prefill kernel (tensor cores for
 * head_dim 64/128) with keys read through one sequence's block table. */
void cuda_attention_chunk(Backend *b, float *out, const float *q,
			  const float *kc, const float *vc,
			  const int32_t *tables, int tab, int block_size,
			  int n, int pos0, int n_heads, int n_kv_heads,
			  int head_dim);
/* Decode attention of n rows of many sequences through their block
 * tables (BackendOps.attention_paged, shapes checked by the caller), each
 * row's keys in up to PAGED_CHUNKS chunks: a single 7B sequence runs 32
 * heads x 8 = 256 blocks where one block a head used 32 of 132 SMs
 * (inferd, one client, ~1,800-token prompt: 94.5 -> 117.9 generated
 * tok/s); 64 rows get one chunk each (8 each: 4,360 -> 3,379 tok/s at 64
 * clients, every block a sliver). */
#define PAGED_CHUNKS 8
void cuda_decode_paged(CudaBackend *c, float *out, const float *q,
		       const float *kc, const float *vc, const int32_t *pos,
		       const int32_t *tab, const int32_t *tables,
		       int block_size, int n, int n_heads, int n_kv_heads,
		       int head_dim);
#endif
