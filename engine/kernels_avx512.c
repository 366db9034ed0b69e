/*
 * kernels_avx512.c - the x86 kernels built for AVX-512 F/BW/VL/DQ + VNNI:
 * 512-bit float dots and VNNI byte dot products (see kernels_x86.inc).
 * kernels.c calls in here only after checking the CPU supports them.
 */
#define KSET_NAME "avx512"
#define KSET_FN kernels_avx512
#include "kernels_x86.inc"
