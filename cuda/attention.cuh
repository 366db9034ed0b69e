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
#endif
