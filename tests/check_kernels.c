/*
 * check_kernels.c - dequantize_row on hand-built blocks with known values,
 * and every weight type's dot product and CPU matmul (n = 1 and n = 7,
 * odd row counts) at every SIMD level this CPU has, against a double
 * precision reference computed from dequantize_row.
 *
 * Tolerance: the quantised kernels round the activation to 8 bits per
 * block (x ~= d*q with d = absmax/127), so each element is off by at most
 * d/2 and the dot by at most sum_i |w_i| * d_block(i) / 2; the test checks
 * that bound for the activation rounding, then compares the kernel with
 * the double-precision dot over the rounded activation, where only f32
 * summation error remains (1e-5 of sum |w x|). A kernel that mis-indexes a
 * block, a scale or a min is far outside that.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu.h"
#include "kernels.h"
#include "testutil.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}
static float frand(float lo, float hi)
{
	return lo + (hi - lo) * (float)(rnd() & 0xFFFFFF) / (float)0x1000000;
}
static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* ---- dequantize_row on known blocks ---- */

START_TEST(deq_float_types)
{
	uint8_t h[6], bf[4];
	put16(h, 0x3C00);     /* 1.0 */
	put16(h + 2, 0xC000); /* -2.0 */
	put16(h + 4, 0x0001); /* smallest subnormal 2^-24 */
	float o[3];
	dequantize_row(DT_F16, h, o, 3);
	ck_assert(o[0] == 1.0f && o[1] == -2.0f && o[2] == ldexpf(1, -24));
	put16(bf, 0x3F80);     /* 1.0 */
	put16(bf + 2, 0x4049); /* 3.140625 */
	dequantize_row(DT_BF16, bf, o, 2);
	ck_assert(o[0] == 1.0f && o[1] == 3.140625f);
}
END_TEST

START_TEST(deq_q8_0_q4)
{
	uint8_t b[34];
	put16(b, 0x3800); /* 0.5 */
	for (int i = 0; i < 32; i++)
		b[2 + i] = (uint8_t)(int8_t)(i - 16);
	float o[32];
	dequantize_row(DT_Q8_0, b, o, 32);
	for (int i = 0; i < 32; i++)
		ck_assert(o[i] == 0.5f * (i - 16));

	uint8_t q4[18];
	put16(q4, 0x4000); /* 2.0 */
	for (int j = 0; j < 16; j++)
		q4[2 + j] = (uint8_t)(j | ((15 - j) << 4));
	dequantize_row(DT_Q4_0, q4, o, 32);
	ck_assert(o[0] == -16.0f && o[15] == 14.0f); /* 2*(0-8), 2*(15-8) */
	ck_assert(o[16] == 14.0f && o[31] == -16.0f);

	uint8_t q41[20];
	put16(q41, 0x3800);     /* d 0.5 */
	put16(q41 + 2, 0xBC00); /* m -1 */
	for (int j = 0; j < 16; j++)
		q41[4 + j] = (uint8_t)(j | ((15 - j) << 4));
	dequantize_row(DT_Q4_1, q41, o, 32);
	ck_assert(o[0] == -1.0f && o[15] == 6.5f && o[16] == 6.5f);
	ck_assert(o[31] == -1.0f && o[3] == 0.5f);
}
END_TEST

/* Pack 8 six-bit scales and mins the way the Q4_K/Q5_K format defines. */
static void pack_k4(uint8_t s[12], const int sc[8], const int m[8])
{
	for (int j = 0; j < 4; j++) {
		s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
		s[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
		s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
	}
}

static const int ksc[8] = {1, 10, 33, 63, 17, 40, 5, 60};
static const int kmn[8] = {0, 7, 50, 63, 20, 45, 2, 61};

START_TEST(deq_q4_k)
{
	uint8_t b[144];
	put16(b, 0x3C00);     /* d 1.0 */
	put16(b + 2, 0x3800); /* dmin 0.5 */
	pack_k4(b + 4, ksc, kmn);
	for (int l = 0; l < 128; l++)
		b[16 + l] = (uint8_t)((l % 16) | ((15 - l % 16) << 4));
	float o[256];
	dequantize_row(DT_Q4_K, b, o, 256);
	/* element e: sub-block j = e/32, byte 32*(j/2) + e%32, low nibble for
	 * even j, high for odd. */
	for (int e = 0; e < 256; e++) {
		int j = e / 32, l = e % 32;
		int q = (j % 2 == 0) ? l % 16 : 15 - l % 16;
		ck_assert_msg(o[e] == 1.0f * ksc[j] * q - 0.5f * kmn[j],
			      "q4_k element %d: %g", e, o[e]);
	}
	/* Spot values by hand: e=1 -> 1*1*1 - 0; e=32 -> 10*15 - 3.5;
	 * e=255 (j 7, l 31, q 15-15=0) -> -30.5. */
	ck_assert(o[1] == 1.0f && o[32] == 146.5f && o[255] == -30.5f);
}
END_TEST

START_TEST(deq_q5_k)
{
	uint8_t b[176];
	put16(b, 0x3C00);
	put16(b + 2, 0x3800);
	pack_k4(b + 4, ksc, kmn);
	for (int l = 0; l < 32; l++) /* high bit j of qh[l] set when (l+j) odd */
		b[16 + l] = (uint8_t)((l % 2) ? 0x55 : 0xAA);
	for (int l = 0; l < 128; l++)
		b[48 + l] = (uint8_t)((l % 16) | ((15 - l % 16) << 4));
	float o[256];
	dequantize_row(DT_Q5_K, b, o, 256);
	for (int e = 0; e < 256; e++) {
		int j = e / 32, l = e % 32;
		int q = (j % 2 == 0) ? l % 16 : 15 - l % 16;
		if ((l + j) % 2)
			q += 16;
		ck_assert_msg(o[e] == 1.0f * ksc[j] * q - 0.5f * kmn[j],
			      "q5_k element %d: %g", e, o[e]);
	}
	/* e=1: j 0, l 1: q = 1 + 16 -> 17. */
	ck_assert(o[1] == 17.0f);
}
END_TEST

START_TEST(deq_q6_k)
{
	uint8_t b[210];
	/* ql: element e of each 128 half: l = e%32, quarter k = (e%128)/32:
	 * k0 low nibble of ql[l], k1 low of ql[l+32], k2 high of ql[l], k3
	 * high of ql[l+32]; 2 high bits from qh[l] bits 2k..2k+1. */
	for (int i = 0; i < 128; i++)
		b[i] = (uint8_t)((i % 16) | ((i % 7) << 4));
	for (int i = 0; i < 64; i++)
		b[128 + i] = (uint8_t)(i * 37);
	for (int i = 0; i < 16; i++)
		b[192 + i] = (uint8_t)(int8_t)(i * 9 - 70);
	put16(b + 208, 0x3400); /* d 0.25 */
	float o[256];
	dequantize_row(DT_Q6_K, b, o, 256);
	for (int e = 0; e < 256; e++) {
		int half = e / 128, r = e % 128, k = r / 32, l = r % 32;
		const uint8_t *ql = b + 64 * half, *qh = b + 128 + 32 * half;
		int lo = (k == 0) ? ql[l] & 15 : (k == 1) ? ql[l + 32] & 15
			 : (k == 2) ? ql[l] >> 4 : ql[l + 32] >> 4;
		int hi = (qh[l] >> (2 * k)) & 3;
		int sc = (int8_t)b[192 + e / 16];
		float want = 0.25f * sc * ((lo | (hi << 4)) - 32);
		ck_assert_msg(o[e] == want, "q6_k element %d: %g vs %g", e, o[e],
			      want);
	}
	/* e=0: ql 0 -> 0, qh 0 -> 0, q = -32, sc -70: 0.25*-70*-32 = 560. */
	ck_assert(o[0] == 560.0f);
}
END_TEST

/* ---- dots and matmul ---- */

static const dtype all_types[] = {DT_F32, DT_F16, DT_BF16, DT_Q8_0, DT_Q4_0,
				  DT_Q4_1, DT_Q4_K, DT_Q5_K, DT_Q6_K};
#define NTYPES (int)(sizeof all_types / sizeof all_types[0])

/* A random weight matrix of type t with sane (finite, small) scales. */
static uint8_t *rand_weights(dtype t, int rows, int cols)
{
	size_t rb = dtype_row_bytes(t, cols), bb = dtype_block_bytes(t);
	uint8_t *w = malloc(rb * rows);
	for (size_t i = 0; i < rb * rows; i++)
		w[i] = (uint8_t)rnd();
	for (size_t o = 0; o < rb * rows; o += bb) {
		uint8_t *b = w + o;
		switch (t) {
		case DT_F32: {
			float f = frand(-1, 1);
			memcpy(b, &f, 4);
			break;
		}
		case DT_F16:
			put16(b, f32_to_fp16(frand(-1, 1)));
			break;
		case DT_BF16: {
			float f = frand(-1, 1);
			uint32_t u;
			memcpy(&u, &f, 4);
			put16(b, (uint16_t)(u >> 16));
			break;
		}
		case DT_Q8_0:
		case DT_Q4_0:
			put16(b, f32_to_fp16(frand(0.001f, 0.05f)));
			break;
		case DT_Q4_1:
		case DT_Q4_K:
		case DT_Q5_K:
			put16(b, f32_to_fp16(frand(0.001f, 0.05f)));
			put16(b + 2, f32_to_fp16(frand(-0.05f, 0.05f)));
			break;
		case DT_Q6_K:
			put16(b + 208, f32_to_fp16(frand(0.001f, 0.05f)));
			break;
		default:
			break;
		}
	}
	return w;
}

/* The activation row as the kernels see it: d*q per block (or x). */
static void act_values(dtype t, const float *x, float *xh, int cols)
{
	void *xa = malloc(kernel_act_bytes(t, cols));
	kernel_prepare_act(t, x, xa, cols);
	kact a = kernel_act(t);
	for (int i = 0; i < cols; i++) {
		if (a == KACT_Q8) {
			const KQ8 *b = (const KQ8 *)xa + i / 32;
			xh[i] = b->d * b->qs[i % 32];
		} else if (a == KACT_Q8K) {
			const KQ8K *b = (const KQ8K *)xa + i / 256;
			xh[i] = b->d * b->qs[i % 256];
		} else {
			xh[i] = x[i];
		}
	}
	free(xa);
}

/* Reference dot in double over the dequantised weight row and the
 * activation as quantised (want), with f32 summation slack (tol). It also
 * checks that the activation rounding stays within the bound described at
 * the top, against the exact x. */
static void ref_dot(dtype t, const uint8_t *wrow, const float *x, int cols,
		    double *val, double *tol)
{
	float *wf = malloc(sizeof(float) * cols), *xh = malloc(sizeof(float) * cols);
	dequantize_row(t, wrow, wf, cols);
	act_values(t, x, xh, cols);
	kact a = kernel_act(t);
	int blk = a == KACT_Q8 ? 32 : a == KACT_Q8K ? 256 : 1;
	double s = 0, exact = 0, bound = 0, mag = 0;
	for (int b0 = 0; b0 < cols; b0 += blk) {
		double amax = 0;
		for (int i = b0; i < b0 + blk; i++)
			amax = fmax(amax, fabs(x[i]));
		for (int i = b0; i < b0 + blk; i++) {
			s += (double)wf[i] * xh[i];
			exact += (double)wf[i] * x[i];
			mag += fabs((double)wf[i] * xh[i]);
			if (a != KACT_F32)
				bound += fabs(wf[i]) * amax / 127.0 / 2.0;
		}
	}
	ck_assert_msg(fabs(s - exact) <= bound * 1.001 + 1e-9,
		      "%s activation rounding %g beyond bound %g", dtype_name(t),
		      fabs(s - exact), bound);
	free(wf);
	free(xh);
	*val = s;
	*tol = 1e-5 * mag + 1e-6;
}

static int cols_for(dtype t)
{
	kact a = kernel_act(t);
	return a == KACT_Q8 ? 32 * 11 : a == KACT_Q8K ? 256 * 3 : 131;
}

static const char *levels[] = {"scalar", "avx2", "avx512"};

START_TEST(dot_all_levels)
{
	int tested = 0;
	for (int lv = 0; lv < 3; lv++) {
		const KernelSet *k = kernels_by_name(levels[lv]);
		if (!k)
			continue;
		tested++;
		for (int ti = 0; ti < NTYPES; ti++) {
			dtype t = all_types[ti];
			int rows = 5, cols = cols_for(t);
			uint8_t *w = rand_weights(t, rows, cols);
			float *x = malloc(sizeof(float) * cols);
			for (int i = 0; i < cols; i++)
				x[i] = frand(-2, 2) * (i % 17 == 0 ? 4 : 1);
			size_t xab = kernel_act_bytes(t, cols);
			uint8_t *xa = malloc(xab);
			kernel_prepare_act(t, x, xa, cols);
			size_t rb = dtype_row_bytes(t, cols);
			for (int r = 0; r < rows; r++) {
				double want, tol;
				ref_dot(t, w + r * rb, x, cols, &want, &tol);
				float got = k->dot[t](cols, w + r * rb, xa);
				ck_assert_msg(fabs(got - want) <= tol,
					      "%s %s row %d: %g vs %g (tol %g)",
					      levels[lv], dtype_name(t), r, got,
					      want, tol);
			}
			/* 4-row kernel: four different activation rows (the
			 * weight row against x scaled by 1, -0.5, 2, 0.25) */
			if (k->dot4[t]) {
				float sc4[4] = {1, -0.5f, 2, 0.25f};
				float *x4 = malloc(sizeof(float) * cols * 4);
				uint8_t *xa4 = malloc(xab * 4 + 64);
				for (int q = 0; q < 4; q++) {
					for (int i = 0; i < cols; i++)
						x4[q * cols + i] = x[(i + 7 * q) % cols] * sc4[q];
					kernel_prepare_act(t, x4 + q * cols, xa4 + q * (xab + 16), cols);
				}
				for (int r = 0; r < rows; r++) {
					float got[4];
					k->dot4[t](cols, w + r * rb, xa4, xab + 16, got);
					for (int q = 0; q < 4; q++) {
						double want, tol;
						ref_dot(t, w + r * rb, x4 + q * cols, cols, &want, &tol);
						ck_assert_msg(fabs(got[q] - want) <= tol,
							      "%s %s dot4 row %d x %d: %g vs %g",
							      levels[lv], dtype_name(t), r, q,
							      got[q], want);
					}
				}
				free(x4);
				free(xa4);
			} else {
				ck_assert_str_eq(levels[lv], "scalar");
			}
			/* 4 weight rows x 1 activation (decode): bit-identical
			 * to dot, so a row's logits do not depend on whether
			 * it was served 4 at a time; rows 0..3 and 1..4 */
			if (k->dotw4[t])
				for (int r0 = 0; r0 + 4 <= rows; r0++) {
					float got[4];
					k->dotw4[t](cols, w + r0 * rb, rb, xa, got);
					for (int kk = 0; kk < 4; kk++) {
						float one = k->dot[t](cols, w + (r0 + kk) * rb, xa);
						ck_assert_msg(memcmp(&got[kk], &one, sizeof one) == 0,
							      "%s %s dotw4 row %d: %.9g vs dot %.9g",
							      levels[lv], dtype_name(t), r0 + kk,
							      got[kk], one);
					}
				}
			/* 2 x 4 tile (float types): weight rows 1 and 2 */
			if (k->dot2x4[t]) {
				float *x4 = malloc(sizeof(float) * cols * 4);
				for (int i = 0; i < cols * 4; i++)
					x4[i] = frand(-2, 2);
				float got[8];
				k->dot2x4[t](cols, w + rb, rb, x4, sizeof(float) * cols, got);
				for (int kk = 0; kk < 2; kk++)
					for (int q = 0; q < 4; q++) {
						double want, tol;
						ref_dot(t, w + (1 + kk) * rb, x4 + q * cols,
							cols, &want, &tol);
						ck_assert_msg(fabs(got[kk * 4 + q] - want) <= tol,
							      "%s %s dot2x4 [%d][%d]",
							      levels[lv], dtype_name(t), kk, q);
					}
				free(x4);
			}
			free(xa);
			free(x);
			free(w);
		}
		float a[77], b[77], y[77], y0[77];
		double s = 0;
		for (int i = 0; i < 77; i++) {
			a[i] = frand(-1, 1);
			b[i] = frand(-1, 1);
			y[i] = y0[i] = frand(-1, 1);
			s += (double)a[i] * b[i];
		}
		ck_assert(fabs(k->dot_f32(77, a, b) - s) < 1e-4);
		k->scale_axpy(77, 0.5f, 2.0f, a, y);
		for (int i = 0; i < 77; i++)
			ck_assert(fabsf(y[i] - (0.5f * y0[i] + 2.0f * a[i])) < 1e-5f);
	}
	/* every level this CPU has is really exercised */
	__builtin_cpu_init();
	int want = 1 + (__builtin_cpu_supports("avx2") != 0) +
		   (__builtin_cpu_supports("avx512vnni") &&
		    __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512vl"));
	ck_assert_int_eq(tested, want);
}
END_TEST

/* The vector exp behind softmax weights and silu, at every level,
 * against libm in double: a few ulp, and a block length that is not a
 * multiple of the vector width (the masked tail). */
START_TEST(exp_silu_all_levels)
{
	for (int lv = 0; lv < 3; lv++) {
		const KernelSet *k = kernels_by_name(levels[lv]);
		if (!k)
			continue;
		enum { N = 203 };
		float s[N], g[N], u[N], g0[N];
		for (int i = 0; i < N; i++) {
			s[i] = i < 200 ? -(float)i * 0.45f : -200.f;
			g[i] = g0[i] = frand(-30, 30) * (i % 3 ? 1.f : 0.05f);
			u[i] = frand(-2, 2);
		}
		s[5] = 0.37f; /* above the max: exp > 1 */
		float m = 0.25f, s0[N];
		memcpy(s0, s, sizeof s);
		k->exp_sub(s, N, m);
		k->silu_mul(g, u, N);
		for (int i = 0; i < N; i++) {
			double want = exp((double)(s0[i] - m)); /* float difference, as the op */
			ck_assert_msg(fabs(s[i] - want) <= 3e-7 * want + 1e-37,
				      "%s exp_sub[%d] of %g: %.9g vs %.9g",
				      levels[lv], i, s0[i], s[i], want);
			double sw = (double)g0[i] / (1.0 + exp(-(double)g0[i])) * u[i];
			ck_assert_msg(fabs(g[i] - sw) <= 5e-7 * fabs(sw) + 1e-30,
				      "%s silu_mul[%d] of %g: %.9g vs %.9g",
				      levels[lv], i, g0[i], g[i], sw);
		}
	}
}
END_TEST

/* Attention's block kernels at every level against double sums: scores
 * of rows at arbitrary addresses, and the rescaled weighted sum. Head
 * sizes 64 and 72 (a tail past the vector width), 7 rows. */
START_TEST(att_rows_all_levels)
{
	for (int lv = 0; lv < 3; lv++) {
		const KernelSet *k = kernels_by_name(levels[lv]);
		if (!k)
			continue;
		for (int n = 64; n <= 72; n += 8) {
			enum { CNT = 7 };
			float q[72], store[CNT * 80], y[72], y0[72], e[CNT], sc[CNT];
			const float *rows[CNT];
			for (int i = 0; i < CNT * 80; i++)
				store[i] = frand(-1, 1);
			for (int p = 0; p < CNT; p++) {
				rows[p] = store + ((p * 3) % CNT) * 80; /* not in order */
				e[p] = frand(0, 1);
			}
			for (int i = 0; i < n; i++) {
				q[i] = frand(-1, 1);
				y[i] = y0[i] = frand(-1, 1);
			}
			k->dot_rows(n, q, rows, CNT, sc);
			k->axpy_rows(n, 0.75f, e, rows, CNT, y);
			for (int p = 0; p < CNT; p++) {
				double want = 0;
				for (int i = 0; i < n; i++)
					want += (double)q[i] * rows[p][i];
				ck_assert_msg(fabs(sc[p] - want) < 1e-5, "%s dot_rows n %d row %d",
					      levels[lv], n, p);
			}
			for (int i = 0; i < n; i++) {
				double want = 0.75 * y0[i];
				for (int p = 0; p < CNT; p++)
					want += (double)e[p] * rows[p][i];
				ck_assert_msg(fabs(y[i] - want) < 1e-5, "%s axpy_rows n %d [%d]",
					      levels[lv], n, i);
			}
		}
	}
}
END_TEST

START_TEST(matmul_all_levels)
{
	char err[256];
	/* 1 thread: row blocks of 4 (the 2 x 4 tile runs); 3 threads (more
	 * than the cores here, fine): blocks of 1 */
	for (int th = 1; th <= 3; th += 2) {
	Backend *b = cpu_backend_create(th, err, sizeof err);
	ck_assert_msg(b, "%s", err);
	cpu_backend_set_par_min(b, 0); /* small shapes, still on the pool */
	const BackendOps *o = b->ops;
	for (int lv = 0; lv < 3; lv++) {
		if (cpu_backend_set_simd(b, levels[lv]))
			continue;
		for (int ti = 0; ti < NTYPES; ti++) {
			dtype t = all_types[ti];
			int rows = 37, cols = cols_for(t);
			uint8_t *wd = rand_weights(t, rows, cols);
			Tensor w = {.name = "w", .type = t, .rows = rows,
				    .cols = cols, .data = wd,
				    .nbytes = rows * dtype_row_bytes(t, cols)};
			float bias_v[37];
			for (int r = 0; r < rows; r++)
				bias_v[r] = frand(-1, 1);
			Tensor bias = {.name = "b", .type = DT_F32, .rows = 1,
				       .cols = rows, .data = bias_v,
				       .nbytes = sizeof bias_v};
			for (int n = 1; n <= 9; n += n == 1 ? 6 : 2) { /* 1, 7, 9 */
				float *x = o->alloc(b, sizeof(float) * n * cols);
				float *out = o->alloc(b, sizeof(float) * n * rows);
				for (int i = 0; i < n * cols; i++)
					x[i] = frand(-2, 2);
				int use_bias = n > 1;
				o->matmul(b, out, x, &w, use_bias ? &bias : NULL, n);
				ck_assert_int_eq(o->sync(b, NULL, err, sizeof err), 0);
				size_t rb = dtype_row_bytes(t, cols);
				for (int i = 0; i < n; i++)
					for (int r = 0; r < rows; r++) {
						double want, tol;
						ref_dot(t, wd + r * rb, x + i * cols,
							cols, &want, &tol);
						if (use_bias)
							want += bias_v[r];
						float got = out[i * rows + r];
						ck_assert_msg(fabs(got - want) <= tol,
							      "%s %s n %d [%d][%d]: %g vs %g",
							      levels[lv], dtype_name(t),
							      n, i, r, got, want);
					}
				/* each row as alone (n = 1): the same bits,
				 * whichever tile served it in the batch */
				float *one = o->alloc(b, sizeof(float) * rows);
				for (int i = 0; i < n; i++) {
					o->matmul(b, one, x + i * cols, &w,
						  use_bias ? &bias : NULL, 1);
					ck_assert_int_eq(o->sync(b, NULL, err, sizeof err), 0);
					ck_assert_msg(memcmp(one, out + i * rows,
							     sizeof(float) * rows) == 0,
						      "%s %s n %d row %d: batched != alone",
						      levels[lv], dtype_name(t), n, i);
				}
				o->free(b, one);
				o->free(b, x);
				o->free(b, out);
			}
			free(wd);
		}
	}
	o->destroy(b);
	}
}
END_TEST

/* The x16-repacked path (upload() repacks Q4_0/Q4_1/Q8_0 when the level
 * has the kernel): against the double reference, with 37 rows (a padded
 * last row group) and 1, 5 and 9 activation rows; and a row's numbers do
 * not depend on how many rows share the matmul (batched = alone). */
START_TEST(matmul_x16_repacked)
{
	char err[256];
	static const dtype x16_types[] = {DT_Q8_0, DT_Q4_0, DT_Q4_1};
	int ran = 0;
	for (int th = 1; th <= 2; th++) {
		Backend *b = cpu_backend_create(th, err, sizeof err);
		ck_assert_msg(b, "%s", err);
		cpu_backend_set_par_min(b, 0);
		const BackendOps *o = b->ops;
		for (int ti = 0; ti < 3; ti++) {
			dtype t = x16_types[ti];
			int rows = 37, cols = 32 * 11;
			uint8_t *wd = rand_weights(t, rows, cols);
			Tensor w = {.name = "w", .type = t, .rows = rows,
				    .cols = cols, .data = wd,
				    .nbytes = rows * dtype_row_bytes(t, cols)};
			ck_assert_msg(o->upload(b, &w, err, sizeof err) == 0, "%s", err);
			if (!w.dev) { /* no x16 kernel on this CPU */
				free(wd);
				continue;
			}
			ran++;
			int n = 9;
			float *x = o->alloc(b, sizeof(float) * n * cols);
			float *out = o->alloc(b, sizeof(float) * n * rows);
			float *one = o->alloc(b, sizeof(float) * rows);
			for (int i = 0; i < n * cols; i++)
				x[i] = frand(-2, 2);
			o->matmul(b, out, x, &w, NULL, n);
			ck_assert_int_eq(o->sync(b, NULL, err, sizeof err), 0);
			size_t rb = dtype_row_bytes(t, cols);
			for (int i = 0; i < n; i++) {
				for (int r = 0; r < rows; r++) {
					double want, tol;
					ref_dot(t, wd + r * rb, x + i * cols, cols,
						&want, &tol);
					ck_assert_msg(fabs(out[i * rows + r] - want) <= tol,
						      "x16 %s [%d][%d]: %g vs %g",
						      dtype_name(t), i, r,
						      out[i * rows + r], want);
				}
				o->matmul(b, one, x + i * cols, &w, NULL, 1);
				ck_assert_int_eq(o->sync(b, NULL, err, sizeof err), 0);
				ck_assert_msg(memcmp(one, out + i * rows,
						     sizeof(float) * rows) == 0,
					      "x16 %s row %d: alone != batched",
					      dtype_name(t), i);
			}
			/* a forced level without x16 kernels reads the
			 * original and agrees within the tolerance */
			ck_assert_int_eq(cpu_backend_set_simd(b, "scalar"), 0);
			o->matmul(b, one, x, &w, NULL, 1);
			ck_assert_int_eq(o->sync(b, NULL, err, sizeof err), 0);
			for (int r = 0; r < rows; r++) {
				double want, tol;
				ref_dot(t, wd + r * rb, x, cols, &want, &tol);
				ck_assert(fabs(one[r] - want) <= tol);
			}
			ck_assert_int_eq(cpu_backend_set_simd(b, "avx512"), 0);
			o->release(b, &w);
			ck_assert_ptr_null(w.dev);
			o->free(b, x);
			o->free(b, out);
			o->free(b, one);
			free(wd);
		}
		o->destroy(b);
	}
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
		ck_assert_int_eq(ran, 6);
	/* a Q8_0 scale whose -128*d offset overflows an f16 is not packed */
	uint8_t blk[34] = {0};
	put16(blk, f32_to_fp16(1000.f));
	uint8_t out16[576];
	ck_assert_int_eq(kernel_x16_bytes(DT_Q8_0, 1, 32), sizeof out16);
	ck_assert_int_eq(kernel_x16_pack(DT_Q8_0, blk, 1, 32, out16), -1);
	ck_assert_int_eq(kernel_x16_bytes(DT_Q4_K, 16, 256), 0);
}
END_TEST

/* A bad weight is reported through sync(), not silently ignored. */
START_TEST(matmul_error_reported)
{
	char err[256];
	Backend *b = cpu_backend_create(1, err, sizeof err);
	ck_assert_msg(b, "%s", err);
	uint8_t blk[34] = {0};
	Tensor w = {.name = "bad", .type = DT_Q8_0, .rows = 1, .cols = 33,
		    .data = blk, .nbytes = 34};
	float x[33] = {0}, out[1];
	b->ops->matmul(b, out, x, &w, NULL, 1);
	ck_assert_int_eq(b->ops->sync(b, NULL, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "bad"), "%s", err);
	ck_assert_int_eq(b->ops->sync(b, NULL, err, sizeof err), 0);
	b->ops->destroy(b);
}
END_TEST

/* The SIMD activation quantisers give the same bytes as the reference. */
START_TEST(quant_act_identical)
{
	int n = 1024;
	float *x = malloc(sizeof(float) * n);
	for (int i = 0; i < n; i++)
		x[i] = frand(-3, 3) * (i % 50 == 0 ? 10 : 1);
	for (int i = 256; i < 288; i++)
		x[i] = 0; /* an all-zero block: d = 0 */
	for (int i = 512; i < 544; i++)
		x[i] = (i % 2 ? -1.f : 1.f) * (float)(i - 512) / 31.f * 127.f / 2.f;
	for (int lv = 1; lv < 3; lv++) {
		const KernelSet *k = kernels_by_name(levels[lv]);
		if (!k)
			continue;
		ck_assert(k->quant_q8 && k->quant_q8k);
		dtype ts[2] = {DT_Q8_0, DT_Q4_K};
		for (int q = 0; q < 2; q++) {
			size_t nb = kernel_act_bytes(ts[q], n);
			uint8_t *a = calloc(1, nb), *b = calloc(1, nb);
			kernel_prepare_act(ts[q], x, a, n);
			(q ? k->quant_q8k : k->quant_q8)(x, b, n);
			ck_assert_msg(!memcmp(a, b, nb), "%s %s differs", levels[lv],
				      dtype_name(ts[q]));
			free(a);
			free(b);
		}
	}
	free(x);
}
END_TEST

/* INFERD_SIMD picks the level (each Check test runs in a fresh fork, so
 * kernels_get() has not cached a choice yet). */
START_TEST(simd_env_selects_level)
{
	const char *fork = getenv("CK_FORK");
	if (fork && !strcmp(fork, "no"))
		TEST_SKIP("needs CK_FORK (kernels_get caches its choice)");
	setenv("INFERD_SIMD", "scalar", 1);
	ck_assert_str_eq(kernels_get()->name, "scalar");
	char err[128];
	Backend *b = cpu_backend_create(1, err, sizeof err);
	ck_assert_msg(b, "%s", err);
	ck_assert_str_eq(b->ops->describe(b), "CPU, 1 thread, no SIMD");
	if (!cpu_backend_set_simd(b, "avx2"))
		ck_assert_str_eq(b->ops->describe(b), "CPU, 1 thread, AVX2");
	ck_assert_int_eq(cpu_backend_set_simd(b, "sse9"), -1);
	b->ops->destroy(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kernels");
	TCase *tc = tcase_create("kernels");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, deq_float_types);
	tcase_add_test(tc, deq_q8_0_q4);
	tcase_add_test(tc, deq_q4_k);
	tcase_add_test(tc, deq_q5_k);
	tcase_add_test(tc, deq_q6_k);
	tcase_add_test(tc, dot_all_levels);
	tcase_add_test(tc, matmul_all_levels);
	tcase_add_test(tc, exp_silu_all_levels);
	tcase_add_test(tc, att_rows_all_levels);
	tcase_add_test(tc, matmul_x16_repacked);
	tcase_add_test(tc, matmul_error_reported);
	tcase_add_test(tc, simd_env_selects_level);
	tcase_add_test(tc, quant_act_identical);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
