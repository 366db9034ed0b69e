/*
 * kernels.h - the CPU backend's inner loops: dot products of one weight row
 * (any dtype, read in its stored block form) with one activation row, and a
 * few f32 vector helpers, in three flavours chosen at run time: portable C
 * (kernels.c, the reference), AVX2 (kernels_avx2.c) and AVX-512
 * (kernels_avx512.c).
 *
 * Like ggml, quantised weights are never expanded to f32: the activation
 * row is quantised once per matmul to 8 bits (KQ8 for the 32-element block
 * types, KQ8K for the 256-element K-quants) and the dot products run on
 * integers, with the block scales applied per block. F32/F16/BF16 weights
 * take the activation as f32 and convert the weight on the fly.
 *
 * Selection: kernels_get() returns the best set the CPU supports, or the
 * one named by the environment variable INFERD_SIMD (scalar|avx2|avx512)
 * when the CPU supports it, so tests and benchmarks can force a level.
 */
#ifndef INFERD_KERNELS_H
#define INFERD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* Activation block for Q8_0, Q4_0 and Q4_1 weights: 32 elements. */
typedef struct KQ8 {
	float d;       /* scale: x ~= d * qs[i] */
	float s;       /* d * sum(qs), the Q4_1 min term needs it */
	int8_t qs[32]; /* quantised values, round-to-nearest of x / d */
} KQ8;

/* Activation block for the K-quants: 256 elements. */
typedef struct KQ8K {
	float d;           /* scale: x ~= d * qs[i] */
	int16_t bsums[16]; /* sum of each 16 consecutive qs (mins, offsets) */
	int8_t qs[256];    /* quantised values */
} KQ8K;

/* How a weight type wants its activation row. */
typedef enum {
	KACT_F32 = 0, /* plain floats (F32, F16, BF16 weights) */
	KACT_Q8 = 1,  /* KQ8 blocks */
	KACT_Q8K = 2, /* KQ8K blocks */
} kact;

kact kernel_act(dtype t);
/* Bytes of one prepared activation row of n elements for weight type t. */
size_t kernel_act_bytes(dtype t, int64_t n);
/* Prepare (quantise or copy) one activation row of n elements. */
void kernel_prepare_act(dtype t, const float *x, void *out, int64_t n);

/* sum_i w[i] * x[i] over n elements: w is one stored weight row of the
 * dtype, x one row made by kernel_prepare_act() for that dtype. */
typedef float (*kdot_fn)(int64_t n, const void *w, const void *x);
/* The same for 4 activation rows at once, row r at x + r*xstride bytes,
 * into out[0..3]: the weight row is unpacked once for all four. */
typedef void (*kdot4_fn)(int64_t n, const void *w, const void *x,
			 size_t xstride, float *out);

/* 2 weight rows (the second at w + wstride bytes) by 4 activation rows:
 * out[k*4 + r] = dot(weight row k, activation row r). */
typedef void (*kdot2x4_fn)(int64_t n, const void *w, size_t wstride,
			   const void *x, size_t xstride, float *out);

/* 4 weight rows (row k at w + k*wstride bytes) by 1 activation row, the
 * decode mat-vec: out[k] = dot(weight row k, x), bit-identical to dot. */
typedef void (*kdotw4_fn)(int64_t n, const void *w, size_t wstride,
			  const void *x, float *out);

/* Repacked ("x16") weights for the prefill GEMM and the decode mat-vec of
 * the 32-element block types Q4_0, Q4_1 and Q8_0: 16 weight rows are
 * interleaved so that one 64-byte vector holds 4 consecutive elements of
 * each of the 16 rows, and VNNI (vpdpbusd) multiplies it by 4 bytes of one
 * activation row broadcast to every lane: 16 output columns at once, with
 * no horizontal sums. Every weight is stored unsigned (u = q, q + 8 for
 * Q4_0 as 0..15 nibbles, q + 128 for Q8_0) with a per-row block scale d
 * and offset m, value = d*u + m, so one kernel serves all three types:
 * the m term is m * (dx * sum(qx)), the KQ8 's' field.
 *
 * Layout: row groups of KX16_ROWS rows one after the other (the last one
 * padded with zero rows), each a run of n/32 blocks of
 *   4-bit: 4 x 64 bytes, vector j lane c = bytes 4j..4j+3 of row c's
 *          nibbles (low nibbles elements 4j.., high nibbles 16+4j..),
 *   8-bit: 8 x 64 bytes, vector g lane c = elements 4g..4g+3 of row c,
 *   then f16 d[16] and f16 m[16].
 * Same size as the original for Q4_x (320 bytes per 16 x 32), +6% for
 * Q8_0 (576 for 544). */
#define KX16_ROWS 16

/* Bytes of the x16 copy of a [rows][n] weight of type t, or 0 when the
 * type has no x16 form or n is not a whole number of blocks. */
size_t kernel_x16_bytes(dtype t, int64_t rows, int64_t n);
/* Repack w into out (kernel_x16_bytes() of it). -1 when an offset m does
 * not fit an f16 (a Q4_0/Q8_0 scale over 8188/511): keep the original. */
int kernel_x16_pack(dtype t, const void *w, int64_t rows, int64_t n,
		    void *out);

/* nr (1..KX16_MAXR) activation rows (KQ8, row r at x + r*xs bytes) times
 * one row group of x16 weights (n elements per row): out[r*ldo + c] for
 * the first nc (1..16) rows c of the group. A row's result does not depend
 * on nr, so a sequence gets the same numbers batched or alone. */
#define KX16_MAXR 8
typedef void (*kx16_fn)(int64_t n, const void *wp, const void *x, size_t xs,
			int nr, float *out, size_t ldo, int nc);

/* A set of kernels for one instruction-set level. */
typedef struct KernelSet {
	const char *name;     /* "scalar", "avx2", "avx512" */
	kdot_fn dot[DT_COUNT]; /* per weight type */
	kdot4_fn dot4[DT_COUNT]; /* per weight type; NULL: call dot 4 times */
	kdot2x4_fn dot2x4[DT_COUNT]; /* float types; NULL: use dot4 */
	kdotw4_fn dotw4[DT_COUNT]; /* NULL: call dot per weight row */
	kx16_fn x16[DT_COUNT]; /* on x16-repacked weights; NULL: none */
	/* Prefill on float weights: gemm_w weight rows (row k at w + k*ws
	 * bytes) x nx (1..gemm_x) activation rows (row i at x + i*xs
	 * floats): out[i*ldo + k], the numbers dot gives; NULL: none. */
	void (*gemm[DT_COUNT])(int64_t n, const void *w, size_t ws,
			       const float *x, size_t xs, int nx, float *out,
			       size_t ldo);
	int gemm_w, gemm_x; /* its tile */
	/* Fast versions of kernel_prepare_act() for KACT_Q8 / KACT_Q8K rows,
	 * bit-identical to it; NULL: use kernel_prepare_act(). */
	void (*quant_q8)(const float *x, void *out, int64_t n);
	void (*quant_q8k)(const float *x, void *out, int64_t n);
	/* sum a[i]*b[i] (attention scores). */
	float (*dot_f32)(int n, const float *a, const float *b);
	/* y[i] = y[i]*c + a*x[i] (attention: rescale and accumulate V). */
	void (*scale_axpy)(int n, float c, float a, const float *x, float *y);
	/* Attention over a block of cache rows (any addresses, so paged and
	 * contiguous caches alike): s[p] = q . rows[p] over n floats, and
	 * y = y*c, then y += e[p] * rows[p] for p = 0..cnt-1 in order. */
	void (*dot_rows)(int n, const float *q, const float *const *rows,
			 int cnt, float *s);
	void (*axpy_rows)(int n, float c, const float *e,
			  const float *const *rows, int cnt, float *y);
	/* s[i] = exp(s[i] - m) (attention weights of a block of keys). */
	void (*exp_sub)(float *s, int n, float m);
	/* g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i]. */
	void (*silu_mul)(float *g, const float *u, size_t n);
} KernelSet;

const KernelSet *kernels_scalar(void);
const KernelSet *kernels_avx2(void);   /* built with -mavx2 -mfma -mf16c */
const KernelSet *kernels_avx512(void); /* built with AVX-512 F/BW/VL/VNNI */

/* The set for a level name if this CPU supports it, else NULL. */
const KernelSet *kernels_by_name(const char *name);
/* Best supported set, or the one $INFERD_SIMD names (falls back to the
 * best with a notice on stderr when that level is unsupported). Cached. */
const KernelSet *kernels_get(void);

/* Q4_K/Q5_K packed 6-bit scale and min of sub-block j (quant.c). */
void k4_scale_min(const uint8_t *scales, int j, uint8_t *sc, uint8_t *m);

#endif
