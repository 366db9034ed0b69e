/*
 * norm.cuh - RMSNorm over rows; see BackendOps.rmsnorm.
 */
#ifndef INFERD_CUDA_NORM_CUH
#define INFERD_CUDA_NORM_CUH

#include "common.cuh"

void cuda_rmsnorm(Backend *b, float *out, const float *x, const Tensor *w,
		  int n, int dim, float eps);
#endif
