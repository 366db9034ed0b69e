/*
 * matmul.cu - out[n][rows] = x[n][cols] . W^T (+ bias).
 *
 * Decode (n <= MATVEC_MAX_N): a mat-vec that reads every weight byte once,
 * straight from its storage type. One warp owns R consecutive rows; its
 * lanes walk the row in "units" (16 bytes of F16/BF16, a float4 of F32,
 * one 32-element block of Q8_0/Q4_0/Q4_1, a 64-element quarter of a
 * Q4_K/Q5_K/Q6_K super-block), so a warp's loads are contiguous, and each
 * x value loaded is used for all of the warp's rows. Partial sums stay in
 * f32 and meet through shuffles. Three kernels (notes/cuda.md has the
 * measurements behind the choices):
 *   - F32/F16/BF16: matvec_float_kernel, 1 row per warp, each lane issuing
 *     8 16-byte loads before using them (latency, not bandwidth, is what
 *     a small decode mat-vec runs out of);
 *   - Q8_0/Q4_0/Q4_1: matvec_q8x_kernel on x rounded to int8 per block of
 *     32 (llama.cpp's q8_1 scheme) with dp4a, 2 rows per warp;
 *   - K-quants: matvec_kernel on f32 x, 4 rows per warp.
 *
 * Prefill (larger n): cuBLAS GEMM on the tensor cores. Activations are
 * converted to f16 (in split mode, the default, as an f16 pair hi + lo
 * whose two products are summed, so they keep f32-grade activations: the
 * tiny golden models amplify f16 rounding of activations past the golden
 * tolerance; INFERD_CUDA_GEMM=f16 selects the single-GEMM mode llama.cpp
 * uses), once for GEMMs that share an x; F16 weights are used in place,
 * BF16 and quantised weights are expanded to f16 in scratch first (so the
 * stored copy stays compact); F32 weights go through plain SGEMM.
 */
#include "elementwise.cuh"
#include "graph.cuh"
#include "matmul.cuh"

#define MATVEC_MAX_N 2 /* up to this many rows use the mat-vec */
#define MV_WARPS 4     /* warps per block */

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ uint32_t ld_u16(const uint8_t *p)
{
	return *(const unsigned short *)p;
}

__device__ __forceinline__ uint32_t ld_u32(const uint8_t *p)
{
	return *(const uint32_t *)p;
}

/* The row's result v, with the epilogue a recorded step gave this
 * launch (graph.cuh: EPI_*); aux and out are only touched at row. */
__device__ __forceinline__ void mv_store(float *out, int row, float v,
					 int epi, float *aux)
{
	if (epi == EPI_SWIGLU_UP) {
		out[row] = v / (1.0f + expf(-v)) * aux[row];
		return;
	}
	out[row] = v;
	if (epi == EPI_ADD) {
		aux[row] += v;
	} else if (epi == EPI_SWIGLU_GATE) {
		float g = aux[row];
		aux[row] = g / (1.0f + expf(-g)) * v;
	}
}

/* Units per row and the elements each unit covers, by type. */
__host__ __device__ static inline int unit_elems(int t)
{
	switch (t) {
	case DT_F32:
		return 4;
	case DT_F16:
	case DT_BF16:
		return 8;
	case DT_Q8_0:
	case DT_Q4_0:
	case DT_Q4_1:
		return 32;
	default:
		return 64; /* K-quants: a quarter super-block */
	}
}

/* acc[r] += dot(unit u of row r, x), for the warp's R rows at rowp[r]. */
template <int T, int R>
__device__ __forceinline__ void unit_dot(const uint8_t *const *rowp, int u,
					 const float *__restrict__ x,
					 float *acc)
{
	if constexpr (T == DT_F32) {
		float4 xv = *(const float4 *)(x + 4 * u);
#pragma unroll
		for (int r = 0; r < R; r++) {
			float4 w = *(const float4 *)(rowp[r] + 16 * u);
			acc[r] += w.x * xv.x + w.y * xv.y + w.z * xv.z +
				  w.w * xv.w;
		}
	} else if constexpr (T == DT_F16 || T == DT_BF16) {
		float4 x0 = *(const float4 *)(x + 8 * u);
		float4 x1 = *(const float4 *)(x + 8 * u + 4);
		float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
		uint4 wv[R];
#pragma unroll
		for (int r = 0; r < R; r++)
			wv[r] = *(const uint4 *)(rowp[r] + 16 * u);
#pragma unroll
		for (int r = 0; r < R; r++) {
			uint32_t ws[4] = {wv[r].x, wv[r].y, wv[r].z, wv[r].w};
			float s = 0.0f;
#pragma unroll
			for (int k = 0; k < 4; k++) {
				float2 f;
				if constexpr (T == DT_F16) {
					f = __half22float2(
						*(const __half2 *)&ws[k]);
				} else {
					f = __bfloat1622float2(
						*(const __nv_bfloat162 *)&ws[k]);
				}
				s += f.x * xs[2 * k] + f.y * xs[2 * k + 1];
			}
			acc[r] += s;
		}
	} else if constexpr (T == DT_Q8_0) {
		const float *xb = x + 32 * u;
#pragma unroll
		for (int r = 0; r < R; r++) {
			const uint8_t *b = rowp[r] + 34 * u;
			float d = ld_half(b);
			float s = 0.0f;
#pragma unroll
			for (int k = 0; k < 16; k++) {
				uint32_t v = ld_u16(b + 2 + 2 * k);
				s += (float)(int8_t)(v & 0xFF) * xb[2 * k] +
				     (float)(int8_t)(v >> 8) * xb[2 * k + 1];
			}
			acc[r] += d * s;
		}
	} else if constexpr (T == DT_Q4_0 || T == DT_Q4_1) {
		const float *xb = x + 32 * u;
		float xs[32];
#pragma unroll
		for (int k = 0; k < 8; k++) {
			float4 v = *(const float4 *)(xb + 4 * k);
			xs[4 * k] = v.x;
			xs[4 * k + 1] = v.y;
			xs[4 * k + 2] = v.z;
			xs[4 * k + 3] = v.w;
		}
		float xsum = 0.0f; /* folds the -8 offset / the min */
#pragma unroll
		for (int k = 0; k < 32; k++)
			xsum += xs[k];
#pragma unroll
		for (int r = 0; r < R; r++) {
			const uint8_t *b =
				rowp[r] + (T == DT_Q4_0 ? 18 : 20) * u;
			const uint8_t *qs = b + (T == DT_Q4_0 ? 2 : 4);
			float s = 0.0f;
#pragma unroll
			for (int k = 0; k < 8; k++) {
				uint32_t v = ld_u16(qs + 2 * k);
				s += (float)(v & 0xF) * xs[2 * k] +
				     (float)((v >> 8) & 0xF) * xs[2 * k + 1] +
				     (float)((v >> 4) & 0xF) * xs[16 + 2 * k] +
				     (float)(v >> 12) * xs[16 + 2 * k + 1];
			}
			if constexpr (T == DT_Q4_0) {
				/* sum d*(q-8)*x = d*(sum q*x - 8*sum x) */
				acc[r] += ld_half(b) * (s - 8.0f * xsum);
			} else {
				acc[r] += ld_half(b) * s +
					  ld_half(b + 2) * xsum;
			}
		}
	} else if constexpr (T == DT_Q4_K || T == DT_Q5_K) {
		int sb = u >> 2, c = u & 3; /* super-block, 64-chunk */
		const float *xb = x + 256 * sb + 64 * c;
#pragma unroll
		for (int r = 0; r < R; r++) {
			const uint8_t *b =
				rowp[r] + (T == DT_Q4_K ? 144 : 176) * sb;
			float d = ld_half(b), dmin = ld_half(b + 2);
			float sc0, m0, sc1, m1;
			kq_scale_min(b + 4, 2 * c, &sc0, &m0);
			kq_scale_min(b + 4, 2 * c + 1, &sc1, &m1);
			const uint8_t *qs =
				b + (T == DT_Q4_K ? 16 : 48) + 32 * c;
			float s0 = 0.0f, s1 = 0.0f, x0 = 0.0f, x1 = 0.0f;
#pragma unroll
			for (int k = 0; k < 8; k++) {
				uint32_t q = ld_u32(qs + 4 * k);
				uint32_t h = 0;
				if constexpr (T == DT_Q5_K)
					h = ld_u32(b + 16 + 4 * k) >> (2 * c);
				float4 xa = *(const float4 *)(xb + 4 * k);
				float4 xc = *(const float4 *)(xb + 32 + 4 * k);
				float xa_[4] = {xa.x, xa.y, xa.z, xa.w};
				float xc_[4] = {xc.x, xc.y, xc.z, xc.w};
#pragma unroll
				for (int e = 0; e < 4; e++) {
					uint32_t byte = (q >> (8 * e)) & 0xFF;
					uint32_t lo = byte & 0xF, hi = byte >> 4;
					if constexpr (T == DT_Q5_K) {
						uint32_t hb = h >> (8 * e);
						lo += (hb & 1) << 4;
						hi += ((hb >> 1) & 1) << 4;
					}
					s0 += (float)lo * xa_[e];
					s1 += (float)hi * xc_[e];
					x0 += xa_[e];
					x1 += xc_[e];
				}
			}
			acc[r] += d * (sc0 * s0 + sc1 * s1) -
				  dmin * (m0 * x0 + m1 * x1);
		}
	} else if constexpr (T == DT_Q6_K) {
		int sb = u >> 2, n = (u >> 1) & 1, k = u & 1;
		const float *xb = x + 256 * sb + 128 * n + 16 * k;
#pragma unroll
		for (int r = 0; r < R; r++) {
			const uint8_t *b = rowp[r] + 210 * sb;
			const uint8_t *ql = b + 64 * n + 16 * k;
			const uint8_t *qh = b + 128 + 32 * n + 16 * k;
			const int8_t *sc = (const int8_t *)(b + 192) + 8 * n + k;
			float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
			for (int l = 0; l < 16; l += 2) {
				uint32_t a = ld_u16(ql + l);
				uint32_t a2 = ld_u16(ql + 32 + l);
				uint32_t h = ld_u16(qh + l);
#pragma unroll
				for (int e = 0; e < 2; e++) {
					uint32_t A = (a >> (8 * e)) & 0xFF;
					uint32_t A2 = (a2 >> (8 * e)) & 0xFF;
					uint32_t H = (h >> (8 * e)) & 0xFF;
					int q1 = (int)((A & 0xF) | ((H & 3) << 4)) - 32;
					int q2 = (int)((A2 & 0xF) | (((H >> 2) & 3) << 4)) - 32;
					int q3 = (int)((A >> 4) | (((H >> 4) & 3) << 4)) - 32;
					int q4 = (int)((A2 >> 4) | (((H >> 6) & 3) << 4)) - 32;
					int j = l + e;
					s[0] += (float)q1 * xb[j];
					s[1] += (float)q2 * xb[32 + j];
					s[2] += (float)q3 * xb[64 + j];
					s[3] += (float)q4 * xb[96 + j];
				}
			}
			acc[r] += ld_half(b + 208) *
				  ((float)sc[0] * s[0] + (float)sc[2] * s[1] +
				   (float)sc[4] * s[2] + (float)sc[6] * s[3]);
		}
	}
}

/* blockIdx.y selects the activation row (n <= MATVEC_MAX_N). */
template <int T, int R>
__global__ void __launch_bounds__(MV_WARPS * 32)
	matvec_kernel(float *__restrict__ out, const float *__restrict__ x,
		      const uint8_t *__restrict__ w, const float *bias,
		      int rows, int cols, size_t row_bytes, int epi,
		      float *aux)
{
	pdl_enter();
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int row0 = (blockIdx.x * MV_WARPS + warp) * R;
	if (row0 >= rows)
		return;
	x += (size_t)blockIdx.y * cols;
	out += (size_t)blockIdx.y * rows;
	const uint8_t *rowp[R];
#pragma unroll
	for (int r = 0; r < R; r++) /* clamp the tail; results not stored */
		rowp[r] = w + (size_t)min(row0 + r, rows - 1) * row_bytes;
	float acc[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		acc[r] = 0.0f;
	int units = cols / unit_elems(T);
#pragma unroll 4
	for (int u = lane; u < units; u += 32)
		unit_dot<T, R>(rowp, u, x, acc);
#pragma unroll
	for (int r = 0; r < R; r++) {
		float s = warp_sum(acc[r]);
		if (lane == 0 && row0 + r < rows)
			mv_store(out, row0 + r,
				 s + (bias ? bias[row0 + r] : 0.0f), epi, aux);
	}
}

/* Any type, any alignment: element by element (shapes the vector kernel
 * cannot take, such as cols not a multiple of 8 or an unaligned x). */
__global__ void matvec_generic_kernel(float *out, const float *x,
				      const uint8_t *w, int type,
				      const float *bias, int rows, int cols,
				      size_t row_bytes, int epi, float *aux)
{
	pdl_enter();
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int row = blockIdx.x * MV_WARPS + warp;
	if (row >= rows)
		return;
	x += (size_t)blockIdx.y * cols;
	out += (size_t)blockIdx.y * rows;
	const uint8_t *rp = w + (size_t)row * row_bytes;
	float s = 0.0f;
	for (int i = lane; i < cols; i += 32)
		s += dq_elem(type, rp, i) * x[i];
	s = warp_sum(s);
	if (lane == 0)
		mv_store(out, row, s + (bias ? bias[row] : 0.0f), epi, aux);
}

template <int T, int R>
static void launch_matvec_r(CudaBackend *c, float *out, const float *x,
			    const Tensor *w, const float *bias, int n)
{
	int rows = (int)w->rows, cols = (int)w->cols;
	unsigned gx = (unsigned)((rows + MV_WARPS * R - 1) / (MV_WARPS * R));
	cuda_launch(c, matvec_kernel<T, R>, dim3(gx, (unsigned)n),
		    dim3(MV_WARPS * 32), 0, "matvec", out, x,
		    (const uint8_t *)w->dev, bias, rows, cols,
		    dtype_row_bytes(w->type, w->cols), (int)EPI_NONE,
		    (float *)NULL);
}

/* Rows per warp: more rows reuse each x load more often, fewer leave
 * more warps to hide latency (INFERD_CUDA_MV_ROWS=1|2|4 to compare). */
template <int T>
static void launch_matvec(CudaBackend *c, float *out, const float *x,
			  const Tensor *w, const float *bias, int n)
{
	switch (c->mv_rows) {
	case 1: launch_matvec_r<T, 1>(c, out, x, w, bias, n); break;
	case 2: launch_matvec_r<T, 2>(c, out, x, w, bias, n); break;
	default: launch_matvec_r<T, 4>(c, out, x, w, bias, n); break;
	}
}

/* One 16-byte weight unit against its x: a float4 (a) for F32, two (a,
 * b) for F16/BF16. Both float mat-vecs sum through this, in this order,
 * so the per-row and the streaming kernel give the same bits. */
template <int T>
__device__ __forceinline__ float unit_dot(uint4 q, float4 a, float4 b)
{
	if constexpr (T == DT_F32) {
		return __uint_as_float(q.x) * a.x + __uint_as_float(q.y) * a.y +
		       __uint_as_float(q.z) * a.z + __uint_as_float(q.w) * a.w;
	} else {
		uint32_t ws[4] = {q.x, q.y, q.z, q.w};
		float xs[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
		float s = 0.0f;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			float2 f;
			if constexpr (T == DT_F16)
				f = __half22float2(*(const __half2 *)&ws[k]);
			else
				f = __bfloat1622float2(*(const __nv_bfloat162 *)&ws[k]);
			s += f.x * xs[2 * k] + f.y * xs[2 * k + 1];
		}
		return s;
	}
}

/* ---- batched-load mat-vec for F32/F16/BF16 ------------------------- */

/* Each lane issues U 16-byte weight loads per row (and their x) before
 * using any of them, so a warp keeps U*R*512 bytes in flight; weights are
 * read with the streaming hint so they do not evict x from L1/L2. */
template <int T, int R, int U>
__device__ __forceinline__ void
mv_float_block(float *__restrict__ out, const float *__restrict__ x,
	       const uint8_t *__restrict__ w, const float *bias, int rows,
	       int cols, size_t row_bytes, int epi, float *aux, int bx)
{
	constexpr int UE = T == DT_F32 ? 4 : 8; /* elements per 16 bytes */
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int row0 = (bx * MV_WARPS + warp) * R;
	if (row0 >= rows)
		return;
	x += (size_t)blockIdx.y * cols;
	out += (size_t)blockIdx.y * rows;
	const uint4 *wr[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		wr[r] = (const uint4 *)(w + (size_t)min(row0 + r, rows - 1) *
						    row_bytes);
	pdl_wait();
	const float4 *xv = (const float4 *)x;
	int units = cols / UE;
	float acc[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		acc[r] = 0.0f;
	for (int base = lane; base < units; base += 32 * U) {
		uint4 wv[U][R];
		float4 xa[U], xb[U];
#pragma unroll
		for (int i = 0; i < U; i++) {
			int u = base + 32 * i;
			bool ok = u < units;
			const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
			for (int r = 0; r < R; r++)
				wv[i][r] = ok ? __ldcs(wr[r] + u)
					      : make_uint4(0, 0, 0, 0);
			if constexpr (T == DT_F32) {
				xa[i] = ok ? xv[u] : z;
			} else {
				xa[i] = ok ? xv[2 * u] : z;
				xb[i] = ok ? xv[2 * u + 1] : z;
			}
		}
#pragma unroll
		for (int i = 0; i < U; i++) {
#pragma unroll
			for (int r = 0; r < R; r++)
				acc[r] += unit_dot<T>(wv[i][r], xa[i],
						      T == DT_F32 ? xa[i] : xb[i]);
		}
	}
#pragma unroll
	for (int r = 0; r < R; r++) {
		float s = warp_sum(acc[r]);
		if (lane == 0 && row0 + r < rows)
			mv_store(out, row0 + r,
				 s + (bias ? bias[row0 + r] : 0.0f), epi, aux);
	}
}

template <int T, int R, int U>
__global__ void __launch_bounds__(MV_WARPS * 32)
	matvec_float_kernel(float *__restrict__ out,
			    const float *__restrict__ x,
			    const uint8_t *__restrict__ w, const float *bias,
			    int rows, int cols, size_t row_bytes, int epi,
			    float *aux)
{
	pdl_launch_next(); /* mv_float_block waits */
	mv_float_block<T, R, U>(out, x, w, bias, rows, cols, row_bytes, epi,
				aux, blockIdx.x);
}

/* Three one-row mat-vecs of the same x in one launch (graph.cuh,
 * MvPending): blocks [0, end[0]) are the first's, and so on; each row's
 * arithmetic is the single kernel's. */
struct MvSegs {
	float *out[3];
	const uint8_t *w[3];
	const float *bias[3];
	int rows[3];
	int end[3]; /* cumulative blocks */
};

template <int T, int U>
__global__ void __launch_bounds__(MV_WARPS * 32)
	matvec_float3_kernel(MvSegs sg, const float *__restrict__ x, int cols,
			     size_t row_bytes)
{
	pdl_launch_next(); /* mv_float_block waits */
	int bx = blockIdx.x, s = bx < sg.end[0] ? 0 : bx < sg.end[1] ? 1 : 2;
	if (s)
		bx -= sg.end[s - 1];
	mv_float_block<T, 1, U>(sg.out[s], x, sg.w[s], sg.bias[s], sg.rows[s],
				cols, row_bytes, EPI_NONE, NULL, bx);
}

/* ---- streaming mat-vec for F32/F16/BF16 ---------------------------- */

#define MV_STREAM_BLOCKS 8 /* blocks an SM: all resident (<= 64 registers) */
#define MV_STREAM_DEPTH 6  /* warp steps in flight (8 spills at 64) */

/* Up to three matrices of the same width (q, k, v) or one, in one launch:
 * blocks [bend[s-1], bend[s]) stream matrix s (unused entries repeat the
 * last bend). */
struct StreamSegs {
	float *out[3];
	const uint8_t *w[3];
	const float *bias[3];
	int rows[3];
	int bend[3]; /* cumulative blocks */
};
/* The per-row kernels above give each warp one row: 8 KB at 7B, two
 * rounds of loads, then the warp is gone, so every launch is mostly ramp
 * and tail (a 7B decode is ~220 of them). Here each warp owns a
 * contiguous run of rows (one launch covers the GPU with 8 blocks an SM)
 * and streams it as one sequence of 512-byte warp steps with D steps
 * always in flight: the load for step t + D is issued as step t is used,
 * across row ends. Measured on an H200 over a 7B layer set of F16 mat-vecs
 * in a graph (a throwaway microbenchmark, one call): 3,283 GB/s per-row kernel,
 * 3,710 GB/s this one with D = 8 and programmatic launch (D = 16 or more
 * blocks per SM were slower). Here D = 8 spills at the 64 registers that
 * 8 blocks an SM allow, so D = 6: 7B F16 decode (cuda-layer-bench, one
 * call) 182.0 tok/s per-row kernel, 157.6 D = 8, 191.2 D = 6. A lane
 * still sees units lane, lane + 32, ... of each row and sums them in the
 * per-row kernel's order, so the
 * result is bit for bit that kernel's. Needs cols a multiple of 32 units
 * and at least 8 x 32 (F16: 2048); gridDim.y indexes the token row as
 * there. */
template <int T, int D, bool PAIR>
__global__ void __launch_bounds__(MV_WARPS * 32, MV_STREAM_BLOCKS)
	matvec_stream_kernel(StreamSegs sg, const float *__restrict__ x,
			     int cols, int epi, float *aux)
{
	pdl_launch_next();
	constexpr int UE = T == DT_F32 ? 4 : 8; /* elements per 16 bytes */
	int lane = threadIdx.x % 32;
	/* this block's segment, by constant index (a runtime index would
	 * copy the parameter struct to local memory) */
	int bx = blockIdx.x;
	int sgi = bx < sg.bend[0] ? 0 : bx < sg.bend[1] ? 1 : 2;
	int b0 = sgi == 0 ? 0 : sgi == 1 ? sg.bend[0] : sg.bend[1];
	int b1 = sgi == 0 ? sg.bend[0] : sgi == 1 ? sg.bend[1] : sg.bend[2];
	int rows = sgi == 0 ? sg.rows[0] : sgi == 1 ? sg.rows[1] : sg.rows[2];
	const uint8_t *w = sgi == 0 ? sg.w[0] : sgi == 1 ? sg.w[1] : sg.w[2];
	int gw = (int)(((bx - b0) * blockDim.x + threadIdx.x) / 32);
	int nw = (int)((b1 - b0) * blockDim.x / 32);
	int r0 = (int)((long long)rows * gw / nw);
	int r1 = (int)((long long)rows * (gw + 1) / nw);
	int spr = cols / UE / 32; /* warp steps per row */
	size_t row_bytes = (size_t)cols * (T == DT_F32 ? 4 : 2);
	int y = blockIdx.y;
	/* the next step to load: the warp's rows are contiguous, so the
	 * pointer moves 512 bytes a step; PAIR: gate row r, then up row r
	 * (sg.w[1]), then gate row r + 1 ... */
	const uint4 *lp = (const uint4 *)(w + (size_t)r0 * row_bytes) + lane;
	int nsteps = (r1 - r0) * spr * (PAIR ? 2 : 1), issued = 0;
	int lst = 0, lup = 0, lr = r0; /* PAIR: step in row, which, row */
	auto load_next = [&]() {
		uint4 v = issued < nsteps ? __ldcs(lp)
					  : make_uint4(0, 0, 0, 0);
		lp += 32;
		issued++;
		if constexpr (PAIR) {
			if (++lst == spr) {
				lst = 0;
				lup ^= 1;
				lr += lup ? 0 : 1;
				lp = (const uint4 *)((lup ? sg.w[1] : sg.w[0]) +
						     (size_t)lr * row_bytes) +
				     lane;
			}
		}
		return v;
	};
	uint4 q[D];
#pragma unroll
	for (int i = 0; i < D; i++)
		q[i] = load_next();
	pdl_wait(); /* x is the kernel before's output */
	const float4 *xv = (const float4 *)(x + (size_t)y * cols);
	int row = r0, st = 0, up = 0;
	float acc = 0.0f, gv = 0.0f; /* PAIR: the gate row's value */
	while (row < r1) {
		/* spr >= D (launch_stream): at most one row ends in these D
		 * steps, and it is stored after them, so the store and its
		 * epilogue exist once in the code, not D times */
		int done = -1;
		float dv = 0.0f;
#pragma unroll
		for (int i = 0; i < D; i++) { /* past r1: zeros, not stored */
			int u = st * 32 + lane;
			uint4 w4 = q[i];
			q[i] = load_next();
			if constexpr (T == DT_F32)
				acc += unit_dot<T>(w4, xv[u], xv[u]);
			else
				acc += unit_dot<T>(w4, xv[2 * u], xv[2 * u + 1]);
			if (++st == spr) {
				if (PAIR && !up) {
					gv = warp_sum(acc);
					up = 1;
				} else {
					dv = warp_sum(acc);
					done = row;
					row++;
					up = 0;
				}
				acc = 0.0f;
				st = 0;
			}
		}
		if (PAIR && done >= 0 && done < r1 && lane == 0) {
			/* what the up mat-vec with EPI_SWIGLU_GATE stores */
			sg.out[1][done] = dv;
			sg.out[0][done] = gv / (1.0f + expf(-gv)) * dv;
		} else if (done >= 0 && done < r1 && lane == 0) {
			const float *bias = sgi == 0 ? sg.bias[0]
				: sgi == 1 ? sg.bias[1] : sg.bias[2];
			float *o = sgi == 0 ? sg.out[0]
				: sgi == 1 ? sg.out[1] : sg.out[2];
			mv_store(o + (size_t)y * rows, done,
				 dv + (bias ? bias[done] : 0.0f), epi,
				 aux ? aux + (size_t)y * rows : aux);
		}
	}
}

/* ---- integer mat-vec for Q8_0/Q4_0/Q4_1 ----------------------------- */

/* x is first rounded to int8 per 32-element block (scale d = max|x|/127
 * and s = d * sum q, as llama.cpp's q8_1), so a weight block meets its x
 * block in eight dp4a instructions: a quarter of the x bytes and far
 * fewer instructions than unpacking to f32. */
__global__ void quantize_x_kernel(int8_t *__restrict__ xq,
				  float2 *__restrict__ xds,
				  const float *__restrict__ x, size_t blocks)
{
	pdl_enter();
	size_t b = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
	int lane = threadIdx.x % 32;
	if (b >= blocks)
		return;
	float v = x[b * 32 + lane];
	float amax = fabsf(v);
	for (int o = 16; o > 0; o >>= 1)
		amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
	float d = amax / 127.0f;
	int q = d > 0.0f ? __float2int_rn(v / d) : 0;
	xq[b * 32 + lane] = (int8_t)q;
	int sum = q;
	for (int o = 16; o > 0; o >>= 1)
		sum += __shfl_xor_sync(0xffffffffu, sum, o);
	if (lane == 0)
		xds[b] = make_float2(d, d * (float)sum);
}

template <int T, int R, int U>
__global__ void __launch_bounds__(MV_WARPS * 32)
	matvec_q8x_kernel(float *__restrict__ out,
			  const int8_t *__restrict__ xq,
			  const float2 *__restrict__ xds,
			  const uint8_t *__restrict__ w, const float *bias,
			  int rows, int cols, size_t row_bytes, int epi,
			  float *aux)
{
	pdl_launch_next(); /* waits below */
	constexpr int BS = T == DT_Q8_0 ? 34 : T == DT_Q4_0 ? 18 : 20;
	constexpr int NW = T == DT_Q8_0 ? 8 : 4; /* u32 words of quants */
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int row0 = (blockIdx.x * MV_WARPS + warp) * R;
	if (row0 >= rows)
		return;
	int units = cols / 32;
	xq += (size_t)blockIdx.y * cols;
	xds += (size_t)blockIdx.y * units;
	out += (size_t)blockIdx.y * rows;
	const uint8_t *wr[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		wr[r] = w + (size_t)min(row0 + r, rows - 1) * row_bytes;
	pdl_wait(); /* xq and xds are the kernel before's output */
	float acc[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		acc[r] = 0.0f;
	for (int base = lane; base < units; base += 32 * U) {
		uint32_t qv[U][R][NW];
		float dw[U][R], mw[U][R];
		int4 x0[U], x1[U];
		float2 xd[U];
#pragma unroll
		for (int i = 0; i < U; i++) {
			int u = base + 32 * i;
			int uu = u < units ? u : 0; /* in bounds; result unused */
#pragma unroll
			for (int r = 0; r < R; r++) {
				const uint8_t *b = wr[r] + (size_t)BS * uu;
				if constexpr (T == DT_Q4_1) {
					uint32_t dm = *(const uint32_t *)b;
					dw[i][r] = __half2float(__ushort_as_half((unsigned short)(dm & 0xFFFF)));
					mw[i][r] = __half2float(__ushort_as_half((unsigned short)(dm >> 16)));
#pragma unroll
					for (int k = 0; k < NW; k++)
						qv[i][r][k] = *(const uint32_t *)(b + 4 + 4 * k);
				} else {
					dw[i][r] = ld_half(b);
					mw[i][r] = 0.0f;
					const unsigned short *h =
						(const unsigned short *)(b + 2);
#pragma unroll
					for (int k = 0; k < NW; k++)
						qv[i][r][k] = (uint32_t)h[2 * k] |
							      ((uint32_t)h[2 * k + 1] << 16);
				}
			}
			const int4 *xp = (const int4 *)(xq + (size_t)32 * uu);
			x0[i] = xp[0];
			x1[i] = xp[1];
			xd[i] = xds[uu];
		}
#pragma unroll
		for (int i = 0; i < U; i++) {
			if (base + 32 * i >= units)
				break;
			int xi[8] = {x0[i].x, x0[i].y, x0[i].z, x0[i].w,
				     x1[i].x, x1[i].y, x1[i].z, x1[i].w};
#pragma unroll
			for (int r = 0; r < R; r++) {
				int sumi = 0;
				if constexpr (T == DT_Q8_0) {
#pragma unroll
					for (int k = 0; k < 8; k++)
						sumi = __dp4a((int)qv[i][r][k], xi[k], sumi);
					acc[r] += dw[i][r] * xd[i].x * (float)sumi;
				} else {
#pragma unroll
					for (int k = 0; k < 4; k++) {
						uint32_t v = qv[i][r][k];
						sumi = __dp4a((int)(v & 0x0F0F0F0Fu), xi[k], sumi);
						sumi = __dp4a((int)((v >> 4) & 0x0F0F0F0Fu), xi[4 + k], sumi);
					}
					if constexpr (T == DT_Q4_0)
						acc[r] += dw[i][r] * (xd[i].x * (float)sumi - 8.0f * xd[i].y);
					else
						acc[r] += dw[i][r] * xd[i].x * (float)sumi + mw[i][r] * xd[i].y;
				}
			}
		}
	}
#pragma unroll
	for (int r = 0; r < R; r++) {
		float s = warp_sum(acc[r]);
		if (lane == 0 && row0 + r < rows)
			mv_store(out, row0 + r,
				 s + (bias ? bias[row0 + r] : 0.0f), epi, aux);
	}
}

/* Can the streaming kernel take rows of cols elements of T? Whole warp
 * steps, at least 8 a row (one row end per 8 steps). */
template <int T>
static int stream_ok(const CudaBackend *c, int cols)
{
	constexpr int UE = T == DT_F32 ? 4 : 8;
	return !c->mv_warp && cols % (UE * 32) == 0 && cols / (UE * 32) >= 8;
}

/* The streaming launch's blocks, shared out among the nseg matrices by
 * rows (at most a row a warp, at least a block each); fills sg->bend and
 * returns the total. */
static int stream_blocks(const CudaBackend *c, StreamSegs *sg, int nseg)
{
	long long total = 0;
	for (int i = 0; i < nseg; i++)
		total += sg->rows[i];
	long long cap = (long long)MV_STREAM_BLOCKS * c->sm_count, end = 0;
	for (int i = 0; i < 3; i++) {
		if (i < nseg) {
			long long want = (long long)sg->rows[i] * cap / total;
			long long most = (sg->rows[i] + MV_WARPS - 1) / MV_WARPS;
			end += want < 1 ? 1 : want > most ? most : want;
		}
		sg->bend[i] = (int)end;
	}
	return (int)end;
}

/* The streaming kernel when the width allows it (INFERD_CUDA_MV=warp:
 * never); returns 0 when it did not launch. */
template <int T>
static int launch_stream(CudaBackend *c, StreamSegs sg, int nseg,
			 const float *x, int cols, int n)
{
	if (!stream_ok<T>(c, cols))
		return 0;
	int blocks = stream_blocks(c, &sg, nseg);
	cuda_launch(c, matvec_stream_kernel<T, MV_STREAM_DEPTH, false>,
		    dim3((unsigned)blocks, (unsigned)n), dim3(MV_WARPS * 32), 0,
		    "matvec", sg, x, cols, (int)EPI_NONE, (float *)NULL);
	return 1;
}

template <int T, int R, int U>
static void launch_float(CudaBackend *c, float *out, const float *x,
			 const Tensor *w, const float *bias, int n)
{
	StreamSegs sg = {{out, NULL, NULL},
			 {(const uint8_t *)w->dev, NULL, NULL},
			 {bias, NULL, NULL},
			 {(int)w->rows, 0, 0},
			 {0, 0, 0}};
	if (R == 1 && launch_stream<T>(c, sg, 1, x, (int)w->cols, n))
		return;
	int rows = (int)w->rows;
	unsigned gx = (unsigned)((rows + MV_WARPS * R - 1) / (MV_WARPS * R));
	cuda_launch(c, matvec_float_kernel<T, R, U>, dim3(gx, (unsigned)n),
		    dim3(MV_WARPS * 32), 0, "matvec", out, x,
		    (const uint8_t *)w->dev, bias, rows, (int)w->cols,
		    dtype_row_bytes(w->type, w->cols), (int)EPI_NONE,
		    (float *)NULL);
}

template <int T, int R, int U>
static void launch_q8x(CudaBackend *c, float *out, const Tensor *w,
		       const float *bias, int n)
{
	int rows = (int)w->rows, cols = (int)w->cols;
	unsigned gx = (unsigned)((rows + MV_WARPS * R - 1) / (MV_WARPS * R));
	const int8_t *xq = (const int8_t *)c->xq;
	const float2 *xds =
		(const float2 *)((const char *)c->xq + (size_t)n * cols);
	cuda_launch(c, matvec_q8x_kernel<T, R, U>, dim3(gx, (unsigned)n),
		    dim3(MV_WARPS * 32), 0, "matvec", out, xq, xds,
		    (const uint8_t *)w->dev, bias, rows, cols,
		    dtype_row_bytes(w->type, w->cols), (int)EPI_NONE,
		    (float *)NULL);
}

/* F32/F16/BF16 (rows per warp: 1 by default, measured best) */
template <int T>
static void launch_float_any(CudaBackend *c, float *out, const float *x,
			     const Tensor *w, const float *bias, int n)
{
	switch (c->mv_rows) {
	case 2: launch_float<T, 2, 4>(c, out, x, w, bias, n); break;
	case 4: launch_float<T, 4, 2>(c, out, x, w, bias, n); break;
	default: launch_float<T, 1, 8>(c, out, x, w, bias, n); break;
	}
}

/* Quantise x, then the integer kernel (2 rows per warp by default). */
template <int T>
static void launch_q8x_any(CudaBackend *c, float *out, const float *x,
			   const Tensor *w, const float *bias, int n)
{
	int cols = (int)w->cols;
	size_t blocks = (size_t)n * cols / 32;
	size_t need = (size_t)n * cols + blocks * sizeof(float2);
	/* q, k and v (gate and up) read the same x: round it once */
	int reuse = c->xq_ok && c->xq_src == x && c->xq_n == n &&
		    c->xq_cols == cols;
	if (!reuse) {
		if (cuda_grow(c, &c->xq, &c->xq_bytes, need, "matvec x"))
			return;
		/* xds must be 8-byte aligned: n*cols is a multiple of 32 */
		unsigned g = (unsigned)((blocks * 32 + 255) / 256);
		cuda_launch(c, quantize_x_kernel, dim3(g), dim3(256), 0,
			    "matvec x", (int8_t *)c->xq,
			    (float2 *)((char *)c->xq + (size_t)n * cols), x,
			    blocks);
	}
	switch (c->mv_rows) {
	case 1: launch_q8x<T, 1, 4>(c, out, w, bias, n); break;
	case 4: launch_q8x<T, 4, 2>(c, out, w, bias, n); break;
	default: launch_q8x<T, 2, 4>(c, out, w, bias, n); break;
	}
	/* the mat-vec's launch cleared xq_ok: nothing else ran since */
	c->xq_ok = !c->has_err;
	c->xq_src = x;
	c->xq_n = n;
	c->xq_cols = cols;
}

static void matvec_launch(CudaBackend *c, float *out, const float *x,
			  const Tensor *w, const float *bias, int n)
{
	int cols = (int)w->cols;
	int ue = unit_elems(w->type);
	int aligned = ((uintptr_t)x % 16 == 0) && cols % ue == 0 &&
		      ((cols % 4 == 0) || n == 1);
	/* Vector path row alignment: F32/F16/BF16 rows are a multiple of
	 * 16 bytes when cols % unit == 0; block types need 2 or 4 bytes,
	 * which their sizes guarantee. */
	if (!aligned) {
		unsigned gx = (unsigned)((w->rows + MV_WARPS - 1) / MV_WARPS);
		cuda_launch(c, matvec_generic_kernel, dim3(gx, (unsigned)n),
			    dim3(MV_WARPS * 32), 0, "matvec", out, x,
			    (const uint8_t *)w->dev, (int)w->type, bias,
			    (int)w->rows, cols,
			    dtype_row_bytes(w->type, w->cols), (int)EPI_NONE,
			    (float *)NULL);
		return;
	}
	if (c->mv_old) { /* INFERD_CUDA_MV=old: first version, f32 x */
		switch (w->type) {
		case DT_F32: launch_matvec<DT_F32>(c, out, x, w, bias, n); return;
		case DT_F16: launch_matvec<DT_F16>(c, out, x, w, bias, n); return;
		case DT_BF16: launch_matvec<DT_BF16>(c, out, x, w, bias, n); return;
		case DT_Q8_0: launch_matvec<DT_Q8_0>(c, out, x, w, bias, n); return;
		case DT_Q4_0: launch_matvec<DT_Q4_0>(c, out, x, w, bias, n); return;
		case DT_Q4_1: launch_matvec<DT_Q4_1>(c, out, x, w, bias, n); return;
		default: break;
		}
	}
	switch (w->type) {
	case DT_F32: launch_float_any<DT_F32>(c, out, x, w, bias, n); break;
	case DT_F16: launch_float_any<DT_F16>(c, out, x, w, bias, n); break;
	case DT_BF16: launch_float_any<DT_BF16>(c, out, x, w, bias, n); break;
	case DT_Q8_0: launch_q8x_any<DT_Q8_0>(c, out, x, w, bias, n); break;
	case DT_Q4_0: launch_q8x_any<DT_Q4_0>(c, out, x, w, bias, n); break;
	case DT_Q4_1: launch_q8x_any<DT_Q4_1>(c, out, x, w, bias, n); break;
	case DT_Q4_K: launch_matvec<DT_Q4_K>(c, out, x, w, bias, n); break;
	case DT_Q5_K: launch_matvec<DT_Q5_K>(c, out, x, w, bias, n); break;
	case DT_Q6_K: launch_matvec<DT_Q6_K>(c, out, x, w, bias, n); break;
	default: cuda_fail_msg(c, "matmul: type %d", (int)w->type); return;
	}
}

/* While a step is recorded, a one-row mat-vec may absorb the add or
 * swiglu that follows it (graph.cuh): mark its launch for that. */
static void matvec_marked(CudaBackend *c, float *out, const float *x,
			  const Tensor *w, const float *bias, int n)
{
	GraphState *g = c->graph;
	size_t before = g->on ? g->rec.size() : 0;
	matvec_launch(c, out, x, w, bias, n);
	if (g->on && !c->has_err && g->rec.size() > before &&
	    g->rec.back().func != (const void *)quantize_x_kernel)
		cuda_mark_matvec(c, out, (size_t)w->rows, x,
				 (size_t)w->cols);
}

template <int T>
static void launch_float3(CudaBackend *c, const MvPending *p)
{
	StreamSegs ss;
	for (int i = 0; i < 3; i++) {
		ss.out[i] = p->seg[i].out;
		ss.w[i] = p->seg[i].w;
		ss.bias[i] = p->seg[i].bias;
		ss.rows[i] = p->seg[i].rows;
	}
	if (launch_stream<T>(c, ss, 3, p->x, p->cols, 1))
		return;
	MvSegs sg;
	int blocks = 0;
	for (int i = 0; i < 3; i++) {
		sg.out[i] = p->seg[i].out;
		sg.w[i] = p->seg[i].w;
		sg.bias[i] = p->seg[i].bias;
		sg.rows[i] = p->seg[i].rows;
		blocks += (p->seg[i].rows + MV_WARPS - 1) / MV_WARPS;
		sg.end[i] = blocks;
	}
	cuda_launch(c, matvec_float3_kernel<T, 8>, dim3((unsigned)blocks),
		    dim3(MV_WARPS * 32), 0, "matvec", sg, p->x, p->cols,
		    dtype_row_bytes((dtype)T, p->cols));
}

template <int T>
static int launch_pair(CudaBackend *c, const MvPending *p)
{
	if (!stream_ok<T>(c, p->cols))
		return 0;
	StreamSegs sg = {{p->seg[0].out, p->seg[1].out, NULL},
			 {p->seg[0].w, p->seg[1].w, NULL},
			 {NULL, NULL, NULL},
			 {p->seg[0].rows, 0, 0},
			 {0, 0, 0}};
	/* one segment: every block streams gate and up rows in pairs */
	int blocks = stream_blocks(c, &sg, 1);
	cuda_launch(c, matvec_stream_kernel<T, MV_STREAM_DEPTH, true>,
		    dim3((unsigned)blocks), dim3(MV_WARPS * 32), 0, "matvec",
		    sg, p->x, p->cols, (int)EPI_NONE, (float *)NULL);
	return 1;
}

int cuda_mv_pair_swiglu(CudaBackend *c, float *gate, const float *up,
			size_t count)
{
	GraphState *g = c->graph;
	MvPending *p = &g->mv;
	if (!g->on || !g->fuse || p->n != 2 || p->seg[0].out != gate ||
	    p->seg[1].out != up || p->seg[0].rows != p->seg[1].rows ||
	    (size_t)p->seg[0].rows != count || p->seg[0].bias ||
	    p->seg[1].bias || gate == p->x || up == p->x)
		return 0;
	MvPending q = *p;
	p->n = 0;
	g->mv_emitting = 1;
	int done;
	switch (q.type) {
	case DT_F32: done = launch_pair<DT_F32>(c, &q); break;
	case DT_F16: done = launch_pair<DT_F16>(c, &q); break;
	default: done = launch_pair<DT_BF16>(c, &q); break;
	}
	g->mv_emitting = 0;
	if (!done)
		*p = q; /* as before: emitted one by one, swiglu fused after */
	return done;
}

void cuda_mv_emit(CudaBackend *c)
{
	GraphState *g = c->graph;
	MvPending p = g->mv;
	g->mv.n = 0;
	g->mv_emitting = 1;
	if (p.n == 3) {
		switch (p.type) {
		case DT_F32: launch_float3<DT_F32>(c, &p); break;
		case DT_F16: launch_float3<DT_F16>(c, &p); break;
		default: launch_float3<DT_BF16>(c, &p); break;
		}
	} else {
		for (int i = 0; i < p.n; i++) {
			Tensor w;
			memset(&w, 0, sizeof w);
			w.type = (dtype)p.type;
			w.rows = p.seg[i].rows;
			w.cols = p.cols;
			w.dev = (void *)p.seg[i].w;
			matvec_marked(c, p.seg[i].out, p.x, &w, p.seg[i].bias,
				      1);
		}
	}
	g->mv_emitting = 0;
}

/* One-row F32/F16/BF16 mat-vecs of a recorded step wait in g->mv so that
 * q, k and v go out as one launch (graph.cuh, MvPending). */
static void matvec(CudaBackend *c, float *out, const float *x,
		   const Tensor *w, const float *bias, int n)
{
	GraphState *g = c->graph;
	int t = w->type, ue = unit_elems(t);
	int cols = (int)w->cols;
	if (g->on && n == 1 && !c->mv_old && c->mv_rows <= 1 &&
	    (t == DT_F32 || t == DT_F16 || t == DT_BF16) &&
	    (uintptr_t)x % 16 == 0 && cols % ue == 0) {
		MvPending *p = &g->mv;
		if (p->n && (p->x != x || p->type != t || p->cols != cols))
			cuda_mv_emit(c);
		p->seg[p->n].out = out;
		p->seg[p->n].w = (const uint8_t *)w->dev;
		p->seg[p->n].bias = bias;
		p->seg[p->n].rows = (int)w->rows;
		p->x = x;
		p->type = t;
		p->cols = cols;
		if (++p->n == 3)
			cuda_mv_emit(c);
		return;
	}
	if (g->mv.n)
		cuda_mv_emit(c);
	matvec_marked(c, out, x, w, bias, n);
}

/* ---- prefill ------------------------------------------------------- */

/* x -> f16 (hi) and, in split mode, the f16 rounding residue (lo) in the
 * next n*cols halves: hi + lo carries ~21 bits of each activation, so two
 * tensor-core GEMMs give f32-grade products (see cuda_gemm_split). */
__global__ void f32_to_f16_kernel(__half *__restrict__ dst,
				  const float *__restrict__ src, size_t count,
				  int split)
{
	pdl_enter();
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	     i < count; i += (size_t)gridDim.x * blockDim.x)
		xh_store(dst, count, i, src[i], split);
}

/* One thread per 32-element group of one row, the type fixed at compile
 * time so the block header is read once and the 64 output bytes go out
 * as four 16-byte stores. */
template <int T>
__global__ void dequant_f16_kernel(__half *__restrict__ dst,
				   const uint8_t *__restrict__ w, int64_t rows,
				   int64_t cols, size_t row_bytes)
{
	pdl_enter();
	int64_t groups = cols / 32, total = rows * groups;
	for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
	     g < total; g += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = g / groups, k0 = (g % groups) * 32;
		const uint8_t *rp = w + (size_t)r * row_bytes;
		__align__(16) __half v[32];
#pragma unroll
		for (int k = 0; k < 32; k++)
			v[k] = __float2half_rn(dq_elem(T, rp, k0 + k));
		uint4 *o = (uint4 *)(dst + (size_t)r * cols + k0);
#pragma unroll
		for (int k = 0; k < 4; k++)
			o[k] = ((const uint4 *)v)[k];
	}
}

/* out = hi + lo products of a split GEMM ([2][count] in p); with acc,
 * out += them. */
__global__ void sum_halves_kernel(float *__restrict__ out,
				  const float *__restrict__ p, size_t count,
				  int acc)
{
	pdl_enter();
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	     i < count; i += (size_t)gridDim.x * blockDim.x)
		/* the order of the two-GEMM path: (out + hi) + lo */
		out[i] = ((acc ? out[i] : 0.0f) + p[i]) + p[count + i];
}

__global__ void add_bias_kernel(float *out, const float *bias, int rows,
				size_t count)
{
	pdl_enter();
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	     i < count; i += (size_t)gridDim.x * blockDim.x)
		out[i] += bias[i % rows];
}

static unsigned grid_for(size_t count)
{
	size_t g = (count + 255) / 256;
	if (g > 65535u * 8u)
		g = 65535u * 8u;
	return g ? (unsigned)g : 1u;
}

static void dequant_f16(CudaBackend *c, __half *dst, const Tensor *w)
{
	size_t groups = (size_t)w->rows * (w->cols / 32);
	size_t rb = dtype_row_bytes(w->type, w->cols);
	const uint8_t *src = (const uint8_t *)w->dev;
	unsigned g = grid_for(groups);
	switch (w->type) {
#define DQ(T)                                                                 \
	case T:                                                               \
		dequant_f16_kernel<T><<<g, 256, 0, c->stream>>>(              \
			dst, src, w->rows, w->cols, rb);                      \
		break;
	DQ(DT_BF16) DQ(DT_Q8_0) DQ(DT_Q4_0) DQ(DT_Q4_1) DQ(DT_Q4_K)
	DQ(DT_Q5_K) DQ(DT_Q6_K)
#undef DQ
	default:
		cuda_fail_msg(c, "matmul: no f16 expansion for %s",
			      dtype_name(w->type));
		return;
	}
	CUDA_LAUNCHED(c, "matmul dequant");
}

#define SPLIT_TWO_GEMMS_N 128 /* split mode: from this many rows, two GEMMs */

__half *cuda_xh_reserve(CudaBackend *c, size_t count)
{
	/* a decode step being recorded never reaches a GEMM */
	if (c->graph->on || c->graph->step_mode == STEP_REPLAY || c->has_err)
		return NULL;
	c->xh_ok = 0;
	size_t bytes = count * sizeof(__half) * (c->gemm_split ? 2 : 1);
	if (cuda_grow(c, (void **)&c->xh, &c->xh_bytes, bytes, "matmul x"))
		return NULL;
	return c->xh;
}

void cuda_xh_made(CudaBackend *c, const float *src, size_t count)
{
	c->xh_ok = !c->has_err;
	c->xh_src = src;
	c->xh_count = count;
	c->xh_split = c->gemm_split;
}

/* x as f16 (split mode: hi rows, then lo rows) in c->xh, converted only
 * when xh does not already hold this x: its producer wrote it, or an
 * earlier GEMM (q/k/v, gate/up) converted it. NULL on error. */
static const __half *gemm_x(CudaBackend *c, const float *x, size_t nx)
{
	if (c->xh_ok && c->xh_src == x && c->xh_count == nx &&
	    c->xh_split == c->gemm_split)
		return c->xh;
	__half *xh = cuda_xh_reserve(c, nx);
	if (!xh)
		return NULL;
	f32_to_f16_kernel<<<grid_for(nx), 256, 0, c->stream>>>(
		xh, x, nx, c->gemm_split);
	if (CUDA_LAUNCHED(c, "matmul convert"))
		return NULL;
	cuda_xh_made(c, x, nx);
	return xh;
}

/* out = x . W^T (+ bias); with acc (no bias), out += x . W^T. */
static void gemm(CudaBackend *c, float *out, const float *x,
		 const Tensor *w, const float *bias, int n, int acc)
{
	int rows = (int)w->rows, cols = (int)w->cols;
	const float one = 1.0f, zero = 0.0f;
	const float *beta = acc ? &one : &zero;
	cublasStatus_t s;
	c->xq_ok = 0; /* out may be the x that xq was made from */
	cuda_flush(c); /* cuBLAS cannot join a recorded step */
	if (w->type == DT_F32) {
		c->xh_ok = 0;
		s = cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n,
				cols, &one, (const float *)w->dev, cols, x,
				cols, beta, out, rows);
	} else {
		int split = c->gemm_split;
		size_t nx = (size_t)n * cols;
		size_t wb = w->type == DT_F16 ? 0
					     : ((size_t)rows * cols * 2 + 255) &
						       ~(size_t)255;
		/* split mode, few rows: hi and lo rows side by side are one
		 * [2n][cols] operand, so the weights stream once (a batch of
		 * decode rows is bandwidth-bound), and the two halves of the
		 * [2n][rows] product are summed after. Many rows (compute-
		 * bound): out = W hi, then out += W lo, no sum kernel (7B F16
		 * prefill 512, one H200 call: 16,186 -> 17,442 tok/s). */
		int two = split && n >= SPLIT_TWO_GEMMS_N;
		size_t ob = split && !two ? (size_t)2 * n * rows * sizeof(float)
					  : 0;
		if (w->type != DT_F16 && cols % 32) {
			cuda_fail_msg(c, "matmul: %s cols %d not a multiple "
				      "of 32", w->name ? w->name : "?", cols);
			return;
		}
		if (wb + ob && cuda_grow(c, &c->scratch, &c->scratch_bytes,
					 wb + ob, "matmul scratch"))
			return;
		const __half *xh = gemm_x(c, x, nx);
		if (!xh) {
			if (!c->has_err)
				cuda_fail_msg(c, "matmul: no f16 x buffer");
			return;
		}
		const __half *wh = (const __half *)w->dev;
		if (w->type != DT_F16) {
			__half *wd = (__half *)c->scratch;
			dequant_f16(c, wd, w);
			if (c->has_err)
				return;
			wh = wd;
		}
		float *o2 = split && !two ? (float *)((char *)c->scratch + wb)
					  : out;
		s = cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, rows,
				 split && !two ? 2 * n : n, cols, &one, wh,
				 CUDA_R_16F, cols, xh, CUDA_R_16F, cols,
				 o2 == out ? beta : &zero, o2, CUDA_R_32F, rows,
				 CUBLAS_COMPUTE_32F,
				 CUBLAS_GEMM_DEFAULT);
		if (s == CUBLAS_STATUS_SUCCESS && two)
			s = cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N,
					 rows, n, cols, &one, wh, CUDA_R_16F,
					 cols, xh + nx, CUDA_R_16F, cols, &one,
					 out, CUDA_R_32F, rows,
					 CUBLAS_COMPUTE_32F,
					 CUBLAS_GEMM_DEFAULT);
		else if (s == CUBLAS_STATUS_SUCCESS && split) {
			size_t count = (size_t)n * rows;
			sum_halves_kernel<<<grid_for(count), 256, 0,
					    c->stream>>>(out, o2, count, acc);
			if (CUDA_LAUNCHED(c, "matmul sum"))
				return;
		}
		/* xh stays valid for the next GEMM unless out overlapped
		 * the x it was made from */
		const float *xe = x + nx, *oe = out + (size_t)n * rows;
		c->xh_ok = s == CUBLAS_STATUS_SUCCESS && !c->has_err &&
			   (oe <= x || xe <= out);
	}
	if (s != CUBLAS_STATUS_SUCCESS) {
		cuda_fail_msg(c, "cuBLAS GEMM %dx%dx%d: %s", rows, n, cols,
			      cublasGetStatusString(s));
		return;
	}
	if (bias) {
		size_t count = (size_t)n * rows;
		add_bias_kernel<<<grid_for(count), 256, 0, c->stream>>>(
			out, bias, rows, count);
		CUDA_LAUNCHED(c, "matmul bias");
	}
}

/* w (and bias) usable by matvec/gemm; else the error is recorded. */
static int matmul_ok(CudaBackend *c, const Tensor *w, const Tensor *bias)
{
	if (!w->dev || (bias && (!bias->dev || bias->type != DT_F32))) {
		cuda_fail_msg(c, "matmul: %s not uploaded (or bias not f32)",
			      w->name ? w->name : "weight");
		return 0;
	}
	if (w->rows > INT32_MAX || w->cols > INT32_MAX ||
	    dtype_row_bytes(w->type, w->cols) == 0) {
		cuda_fail_msg(c, "matmul: bad shape of %s",
			      w->name ? w->name : "weight");
		return 0;
	}
	return 1;
}

void cuda_matmul(Backend *b, float *out, const float *x, const Tensor *w,
		 const Tensor *bias, int n)
{
	CudaBackend *c = cb(b);
	if (n <= 0 || c->graph->step_mode == STEP_REPLAY)
		return; /* (a replayed step's graph holds it) */
	if (!matmul_ok(c, w, bias))
		return;
	const float *bv = bias ? (const float *)bias->dev : NULL;
	if (n <= MATVEC_MAX_N)
		matvec(c, out, x, w, bv, n);
	else
		gemm(c, out, x, w, bv, n, 0);
}

void cuda_matmul_add(Backend *b, float *x, float *tmp, const float *in,
		     const Tensor *w, int n)
{
	CudaBackend *c = cb(b);
	if (n <= MATVEC_MAX_N) { /* the add joins the mat-vec's epilogue */
		cuda_matmul(b, tmp, in, w, NULL, n);
		cuda_add(b, x, tmp, (size_t)n * w->rows);
		return;
	}
	if (c->graph->step_mode == STEP_REPLAY || !matmul_ok(c, w, NULL))
		return; /* (a replayed step's graph holds it) */
	gemm(c, x, in, w, NULL, n, 1);
}
