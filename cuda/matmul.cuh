/*
 * matmul.cuh - decode mat-vec (weights streamed once, quantised blocks read in
 * place) and prefill GEMM through cuBLAS; see BackendOps.matmul.
 */
#ifndef INFERD_CUDA_MATMUL_CUH
#define INFERD_CUDA_MATMUL_CUH

#include "common.cuh"

void cuda_matmul(Backend *b, float *out, const float *x, const Tensor *w,
		 const Tensor *bias, int n);
void cuda_matmul_add(Backend *b, float *x, float *tmp, const float *in,
		     const Tensor *w, int n);
#endif
