/*
 * cpu.h - the CPU backend: BackendOps over host memory, run on a
 * persistent thread pool with the SIMD kernels of kernels.h.
 *
 * Matmul never expands quantised weights: the activation rows are
 * quantised once per call (kernels.h) and every weight row is dotted in its
 * stored block form. Work is split over blocks of up to 64 output rows (the
 * block stays in L2 while all n activation rows pass over it, so a prefill
 * reads the weights from memory once); inside a block, register tiles of
 * 1 weight row x 4 activation rows (2 x 4 for float weights) unpack each
 * weight block once per 4 rows.
 * Scratch (quantised activations, converted norm weights) lives in the
 * backend and only grows, so the decode loop allocates nothing.
 */
#ifndef INFERD_CPU_H
#define INFERD_CPU_H

#include "backend.h"

/* cpu_backend_create() is declared in backend.h. */

/* Force a kernel level ("scalar", "avx2", "avx512") on a CPU backend, for
 * tests and benchmarks. 0, or -1 when the CPU lacks it. */
int cpu_backend_set_simd(Backend *b, const char *level);

/* Ops with fewer multiply-adds than work run on the calling thread alone
 * (default 262144); 0 = always use the pool. For tests and benchmarks. */
void cpu_backend_set_par_min(Backend *b, double work);

#endif
