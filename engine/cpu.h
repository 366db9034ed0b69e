/*
 * cpu.h - the CPU backend: BackendOps over host memory, run on a
 * persistent thread pool with the SIMD kernels of kernels.h.
 *
 * Matmul never expands quantised weights: the activation rows are
 * quantised once per call (kernels.h) and every weight row is dotted in its
 * stored block form. Work is split over blocks of output rows; within a
 * block, each weight row is dotted with a tile of activation rows while it
 * sits in L1, so a prefill of n rows reads the weights from memory once.
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

#endif
