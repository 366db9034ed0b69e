/*
 * elementwise.cuh - embedding lookup (every dtype), SwiGLU, residual add and
 * argmax; see BackendOps.
 */
#ifndef INFERD_CUDA_ELEMENTWISE_CUH
#define INFERD_CUDA_ELEMENTWISE_CUH

#include "common.cuh"

void cuda_embed(Backend *b, float *out, const Tensor *table,
		const int32_t *ids, int n);
void cuda_swiglu(Backend *b, float *gate, const float *up, size_t count);
void cuda_add(Backend *b, float *x, const float *y, size_t count);
int32_t cuda_argmax(Backend *b, const float *x, int n);
void cuda_argmax_rows(Backend *b, int32_t *out, const float *x, int n,
		      int cols);
void cuda_topk_rows(Backend *b, float *vals, int32_t *ids, const float *x,
		    int n, int cols, int k);
void cuda_expsum_rows(Backend *b, double *sums, const float *x,
		      const float *t, int n, int cols);
#endif
