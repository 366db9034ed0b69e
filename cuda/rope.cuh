/*
 * rope.cuh - rotary position embedding, rotate-half and interleaved layouts;
 * see BackendOps.rope.
 */
#ifndef INFERD_CUDA_ROPE_CUH
#define INFERD_CUDA_ROPE_CUH

#include "common.cuh"

void cuda_rope(Backend *b, float *x, int n, int stride, int n_heads,
	       int head_dim, int pos0, const float *inv_freq, int layout);
void cuda_rope_rows(Backend *b, float *x, int n, int stride, int n_heads,
		    int head_dim, const int32_t *pos, const float *inv_freq,
		    int layout);
#endif
