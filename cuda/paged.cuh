/*
 * paged.cuh - the paged KV cache ops (BackendOps.kv_store,
 * attention_paged, rope_rows) for continuous batching (engine/batch.c).
 * INFERD_CUDA_PAGED=0 withholds them, so that inferd runs one generate at
 * a time on CUDA (for comparison).
 */
#ifndef INFERD_CUDA_PAGED_CUH
#define INFERD_CUDA_PAGED_CUH

#include "common.cuh"

void cuda_kv_store(Backend *b, float *kc, float *vc, const float *k,
		   const float *v, const int32_t *slots, int n, int kv_dim);
void cuda_attention_paged(Backend *b, float *out, const float *q,
			  const float *kc, const float *vc, const int32_t *pos,
			  const int32_t *tab, const int32_t *tables,
			  int block_size, int n, int n_heads, int n_kv_heads,
			  int head_dim);
#endif
