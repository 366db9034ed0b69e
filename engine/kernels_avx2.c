/*
 * kernels_avx2.c - the x86 kernels built for AVX2 + FMA + F16C (the
 * Makefile adds those flags to *_avx2.c only; kernels.c calls in here only
 * after checking the CPU supports them). See kernels_x86.inc.
 */
#define KSET_NAME "avx2"
#define KSET_FN kernels_avx2
#include "kernels_x86.inc"
