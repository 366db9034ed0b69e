/*
 * kernels.c - activation quantisation, the portable reference kernels and
 * run-time selection of the SIMD sets. See kernels.h.
 */
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

kact kernel_act(dtype t)
{
	switch (t) {
	case DT_Q8_0:
	case DT_Q4_0:
	case DT_Q4_1:
		return KACT_Q8;
	case DT_Q4_K:
	case DT_Q5_K:
	case DT_Q6_K:
		return KACT_Q8K;
	default:
		return KACT_F32;
	}
}

size_t kernel_act_bytes(dtype t, int64_t n)
{
	switch (kernel_act(t)) {
	case KACT_Q8:
		return (size_t)(n / 32) * sizeof(KQ8);
	case KACT_Q8K:
		return (size_t)(n / 256) * sizeof(KQ8K);
	default:
		return (size_t)n * sizeof(float);
	}
}

/* Round half away from zero. |v| <= 127 up to rounding for finite input;
 * the clamp only keeps a NaN or infinity (a bug upstream) from making the
 * float-to-int conversion undefined. */
static int8_t q8round(float v)
{
	if (!(v > -127.5f && v < 127.5f))
		return v < 0 ? -127 : 127;
	return (int8_t)(int)(v >= 0 ? v + 0.5f : v - 0.5f);
}

static float absmax(const float *x, int n)
{
	float m = 0;
	for (int i = 0; i < n; i++) {
		float a = fabsf(x[i]);
		if (a > m)
			m = a;
	}
	return m;
}

void kernel_prepare_act(dtype t, const float *x, void *out, int64_t n)
{
	switch (kernel_act(t)) {
	case KACT_Q8: {
		KQ8 *b = out;
		for (int64_t i = 0; i < n / 32; i++, b++, x += 32) {
			float d = absmax(x, 32) / 127.f;
			float id = d > 0 ? 1.f / d : 0.f;
			int sum = 0;
			for (int j = 0; j < 32; j++) {
				b->qs[j] = q8round(x[j] * id);
				sum += b->qs[j];
			}
			b->d = d;
			b->s = d * (float)sum;
		}
		return;
	}
	case KACT_Q8K: {
		KQ8K *b = out;
		for (int64_t i = 0; i < n / 256; i++, b++, x += 256) {
			float d = absmax(x, 256) / 127.f;
			float id = d > 0 ? 1.f / d : 0.f;
			for (int j = 0; j < 256; j++)
				b->qs[j] = q8round(x[j] * id);
			for (int g = 0; g < 16; g++) {
				int s = 0;
				for (int j = 0; j < 16; j++)
					s += b->qs[g * 16 + j];
				b->bsums[g] = (int16_t)s;
			}
			b->d = d;
		}
		return;
	}
	default:
		memcpy(out, x, (size_t)n * sizeof(float));
	}
}

/* ---- x16 repacking (layout in kernels.h) ---- */

/* Bytes of one block of KX16_ROWS rows: quants, then d[16], m[16]. */
static size_t x16_block_bytes(dtype t)
{
	switch (t) {
	case DT_Q4_0:
	case DT_Q4_1:
		return 4 * 64 + 2 * 2 * KX16_ROWS;
	case DT_Q8_0:
		return 8 * 64 + 2 * 2 * KX16_ROWS;
	default:
		return 0;
	}
}

size_t kernel_x16_bytes(dtype t, int64_t rows, int64_t n)
{
	size_t bb = x16_block_bytes(t);
	if (!bb || rows <= 0 || n <= 0 || n % 32)
		return 0;
	size_t groups = (size_t)((rows + KX16_ROWS - 1) / KX16_ROWS), r;
	if (__builtin_mul_overflow(groups, (size_t)(n / 32), &r) ||
	    __builtin_mul_overflow(r, bb, &r))
		return 0;
	return r;
}

int kernel_x16_pack(dtype t, const void *w, int64_t rows, int64_t n,
		    void *out)
{
	size_t bb = x16_block_bytes(t), rb = dtype_row_bytes(t, n);
	size_t sb = dtype_block_bytes(t);
	int64_t nb = n / 32, qbytes = t == DT_Q8_0 ? 512 : 256;
	uint8_t *o = out;
	for (int64_t g0 = 0; g0 < rows; g0 += KX16_ROWS)
		for (int64_t b = 0; b < nb; b++, o += bb) {
			memset(o, 0, bb);
			for (int c = 0; c < KX16_ROWS && g0 + c < rows; c++) {
				const uint8_t *p = (const uint8_t *)w +
						   (size_t)(g0 + c) * rb +
						   (size_t)b * sb;
				uint16_t d = rd16(p), m;
				float df = fp16_to_f32(d);
				if (t == DT_Q4_1) {
					m = rd16(p + 2);
					for (int j = 0; j < 4; j++)
						memcpy(o + 64 * j + 4 * c,
						       p + 4 + 4 * j, 4);
				} else if (t == DT_Q4_0) {
					m = f32_to_fp16(-8.f * df);
					for (int j = 0; j < 4; j++)
						memcpy(o + 64 * j + 4 * c,
						       p + 2 + 4 * j, 4);
				} else {
					m = f32_to_fp16(-128.f * df);
					for (int k = 0; k < 32; k++)
						o[64 * (k / 4) + 4 * c + k % 4] =
							(uint8_t)(p[2 + k] ^ 0x80);
				}
				/* the offset must be exact, or the x16
				 * numbers drift from the original's */
				if (t != DT_Q4_1 &&
				    fp16_to_f32(m) != (t == DT_Q4_0 ? -8.f : -128.f) * df)
					return -1;
				memcpy(o + qbytes + 2 * c, &d, 2);
				memcpy(o + qbytes + 2 * KX16_ROWS + 2 * c, &m, 2);
			}
		}
	return 0;
}

/* ---- portable reference dots ---- */

static float dot_f32(int64_t n, const void *w, const void *x)
{
	const float *a = w, *b = x;
	float s = 0;
	for (int64_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static float dot_f16(int64_t n, const void *w, const void *x)
{
	const uint8_t *a = w;
	const float *b = x;
	float s = 0;
	for (int64_t i = 0; i < n; i++)
		s += fp16_to_f32(rd16(a + 2 * i)) * b[i];
	return s;
}

static float dot_bf16(int64_t n, const void *w, const void *x)
{
	const uint8_t *a = w;
	const float *b = x;
	float s = 0;
	for (int64_t i = 0; i < n; i++)
		s += bf16_to_f32(rd16(a + 2 * i)) * b[i];
	return s;
}

static float dot_q8_0(int64_t n, const void *w, const void *x)
{
	const uint8_t *p = w;
	const KQ8 *y = x;
	float s = 0;
	for (int64_t i = 0; i < n / 32; i++, p += 34, y++) {
		const int8_t *q = (const int8_t *)(p + 2);
		int acc = 0;
		for (int j = 0; j < 32; j++)
			acc += q[j] * y->qs[j];
		s += fp16_to_f32(rd16(p)) * y->d * (float)acc;
	}
	return s;
}

/* sum (q-8)*y = sum q*y - 8*sum y; the sum of y is s/d in KQ8. */
static float dot_q4_0(int64_t n, const void *w, const void *x)
{
	const uint8_t *p = w;
	const KQ8 *y = x;
	float s = 0;
	for (int64_t i = 0; i < n / 32; i++, p += 18, y++) {
		const uint8_t *q = p + 2;
		int acc = 0;
		for (int j = 0; j < 16; j++)
			acc += ((q[j] & 0xF) - 8) * y->qs[j] +
			       ((q[j] >> 4) - 8) * y->qs[j + 16];
		s += fp16_to_f32(rd16(p)) * y->d * (float)acc;
	}
	return s;
}

static float dot_q4_1(int64_t n, const void *w, const void *x)
{
	const uint8_t *p = w;
	const KQ8 *y = x;
	float s = 0;
	for (int64_t i = 0; i < n / 32; i++, p += 20, y++) {
		const uint8_t *q = p + 4;
		int acc = 0;
		for (int j = 0; j < 16; j++)
			acc += (q[j] & 0xF) * y->qs[j] + (q[j] >> 4) * y->qs[j + 16];
		s += fp16_to_f32(rd16(p)) * y->d * (float)acc +
		     fp16_to_f32(rd16(p + 2)) * y->s;
	}
	return s;
}

/* Q4_K/Q5_K: x = d*sc*q - dmin*m, so the block sum is
 * d*dy*sum_j sc_j*(q.y)_j - dmin*dy*sum_j m_j*(sum y)_j. */
static float dot_q4_k(int64_t n, const void *w, const void *x)
{
	const uint8_t *p = w;
	const KQ8K *y = x;
	float s = 0;
	for (int64_t i = 0; i < n / 256; i++, p += 144, y++) {
		const uint8_t *sc = p + 4, *q = p + 16;
		int isum = 0, msum = 0;
		for (int j = 0; j < 8; j += 2) {
			uint8_t s0, m0, s1, m1;
			k4_scale_min(sc, j, &s0, &m0);
			k4_scale_min(sc, j + 1, &s1, &m1);
			const int8_t *a = y->qs + j * 32;
			int d0 = 0, d1 = 0;
			for (int l = 0; l < 32; l++) {
				d0 += (q[l] & 0xF) * a[l];
				d1 += (q[l] >> 4) * a[l + 32];
			}
			isum += s0 * d0 + s1 * d1;
			msum += m0 * (y->bsums[2 * j] + y->bsums[2 * j + 1]) +
				m1 * (y->bsums[2 * j + 2] + y->bsums[2 * j + 3]);
			q += 32;
		}
		s += y->d * (fp16_to_f32(rd16(p)) * (float)isum -
			     fp16_to_f32(rd16(p + 2)) * (float)msum);
	}
	return s;
}

static float dot_q5_k(int64_t n, const void *w, const void *x)
{
	const uint8_t *p = w;
	const KQ8K *y = x;
	float s = 0;
	for (int64_t i = 0; i < n / 256; i++, p += 176, y++) {
		const uint8_t *sc = p + 4, *qh = p + 16, *q = p + 48;
		int isum = 0, msum = 0;
		for (int j = 0; j < 8; j += 2) {
			uint8_t s0, m0, s1, m1;
			k4_scale_min(sc, j, &s0, &m0);
			k4_scale_min(sc, j + 1, &s1, &m1);
			const int8_t *a = y->qs + j * 32;
			int d0 = 0, d1 = 0;
			for (int l = 0; l < 32; l++) {
				int h0 = (qh[l] >> j) & 1, h1 = (qh[l] >> (j + 1)) & 1;
				d0 += ((q[l] & 0xF) | (h0 << 4)) * a[l];
				d1 += ((q[l] >> 4) | (h1 << 4)) * a[l + 32];
			}
			isum += s0 * d0 + s1 * d1;
			msum += m0 * (y->bsums[2 * j] + y->bsums[2 * j + 1]) +
				m1 * (y->bsums[2 * j + 2] + y->bsums[2 * j + 3]);
			q += 32;
		}
		s += y->d * (fp16_to_f32(rd16(p)) * (float)isum -
			     fp16_to_f32(rd16(p + 2)) * (float)msum);
	}
	return s;
}

static float dot_q6_k(int64_t n, const void *w, const void *x)
{
	const uint8_t *p = w;
	const KQ8K *y = x;
	float s = 0;
	for (int64_t i = 0; i < n / 256; i++, p += 210, y++) {
		const uint8_t *ql = p, *qh = p + 128;
		const int8_t *sc = (const int8_t *)(p + 192);
		const int8_t *a = y->qs;
		int isum = 0;
		for (int h = 0; h < 2; h++) {
			int g[8] = {0};
			for (int l = 0; l < 32; l++) {
				int is = l / 16;
				int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
				int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
				g[is + 0] += q1 * a[l];
				g[is + 2] += q2 * a[l + 32];
				g[is + 4] += q3 * a[l + 64];
				g[is + 6] += q4 * a[l + 96];
			}
			for (int k = 0; k < 8; k++)
				isum += sc[k] * g[k];
			ql += 64;
			qh += 32;
			sc += 8;
			a += 128;
		}
		s += fp16_to_f32(rd16(p + 208)) * y->d * (float)isum;
	}
	return s;
}

static float ref_dot_f32(int n, const float *a, const float *b)
{
	float s = 0;
	for (int i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static void ref_scale_axpy(int n, float c, float a, const float *x, float *y)
{
	for (int i = 0; i < n; i++)
		y[i] = y[i] * c + a * x[i];
}

static void ref_dot_rows(int n, const float *q, const float *const *rows,
			 int cnt, float *s)
{
	for (int p = 0; p < cnt; p++)
		s[p] = ref_dot_f32(n, q, rows[p]);
}

static void ref_axpy_rows(int n, float c, const float *e,
			  const float *const *rows, int cnt, float *y)
{
	for (int i = 0; i < n; i++)
		y[i] *= c;
	for (int p = 0; p < cnt; p++)
		for (int i = 0; i < n; i++)
			y[i] += e[p] * rows[p][i];
}

static void ref_exp_sub(float *s, int n, float m)
{
	for (int i = 0; i < n; i++)
		s[i] = expf(s[i] - m);
}

static void ref_silu_mul(float *g, const float *u, size_t n)
{
	for (size_t i = 0; i < n; i++)
		g[i] = g[i] / (1.f + expf(-g[i])) * u[i];
}

static const KernelSet scalar_set = {
	.name = "scalar",
	.dot = {
		[DT_F32] = dot_f32, [DT_F16] = dot_f16, [DT_BF16] = dot_bf16,
		[DT_Q8_0] = dot_q8_0, [DT_Q4_0] = dot_q4_0,
		[DT_Q4_1] = dot_q4_1, [DT_Q4_K] = dot_q4_k,
		[DT_Q5_K] = dot_q5_k, [DT_Q6_K] = dot_q6_k,
	},
	.dot_f32 = ref_dot_f32,
	.scale_axpy = ref_scale_axpy,
	.dot_rows = ref_dot_rows,
	.axpy_rows = ref_axpy_rows,
	.exp_sub = ref_exp_sub,
	.silu_mul = ref_silu_mul,
};

const KernelSet *kernels_scalar(void)
{
	return &scalar_set;
}

/* ---- run-time selection ---- */

const KernelSet *kernels_by_name(const char *name)
{
	if (!name)
		return NULL;
	if (!strcmp(name, "scalar"))
		return &scalar_set;
	__builtin_cpu_init();
	if (!strcmp(name, "avx2"))
		return __builtin_cpu_supports("avx2") &&
				       __builtin_cpu_supports("fma")
			       ? kernels_avx2()
			       : NULL;
	if (!strcmp(name, "avx512"))
		return __builtin_cpu_supports("avx512f") &&
				       __builtin_cpu_supports("avx512bw") &&
				       __builtin_cpu_supports("avx512vl") &&
				       __builtin_cpu_supports("avx512dq") &&
				       __builtin_cpu_supports("avx512vnni")
			       ? kernels_avx512()
			       : NULL;
	return NULL;
}

static const KernelSet *best(void)
{
	const KernelSet *k = kernels_by_name("avx512");
	if (!k)
		k = kernels_by_name("avx2");
	return k ? k : &scalar_set;
}

const KernelSet *kernels_get(void)
{
	static const KernelSet *cached;
	const KernelSet *k = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
	if (k)
		return k;
	const char *want = getenv("INFERD_SIMD");
	if (want && *want) {
		k = kernels_by_name(want);
		if (!k)
			fprintf(stderr, "inferd: INFERD_SIMD=%s is not supported "
					"on this CPU; using the best level\n",
				want);
	}
	if (!k)
		k = best();
	__atomic_store_n(&cached, k, __ATOMIC_RELEASE);
	return k;
}
