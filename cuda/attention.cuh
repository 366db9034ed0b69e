/*
 * attention.cuh - causal grouped-query attention: a flash-style tiled kernel for
 * prefill (no score matrix in memory) and split-K flash-decoding for few
 * query rows over long contexts; see BackendOps.attention.
 */
#ifndef INFERD_CUDA_ATTENTION_CUH
#define INFERD_CUDA_ATTENTION_CUH

#include "common.cuh"

void cuda_attention(Backend *b, float *out, const float *q, const float *kc,
		    const float *vc, int n, int pos0, int n_heads,
		    int n_kv_heads, int head_dim);
/* Decode attention of n rows of many sequences through their block
 * tables (BackendOps.attention_paged, shapes checked by the caller):
 * every row's keys in PAGED_CHUNKS chunks whatever the batch, so a row's
 * result does not depend on the rows beside it. Eight keeps a single
 * 7B sequence at 32 heads x 8 = 256 blocks (the GPU covered about twice)
 * where one block a head used 32 of 132 SMs. */
#define PAGED_CHUNKS 8
void cuda_decode_paged(CudaBackend *c, float *out, const float *q,
		       const float *kc, const float *vc, const int32_t *pos,
		       const int32_t *tab, const int32_t *tables,
		       int block_size, int n, int n_heads, int n_kv_heads,
		       int head_dim);
#endif
