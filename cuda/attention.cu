/*
 * attention.cu - causal grouped-query attention over the f32 KV cache.
 *
 * Prefill (many query rows): flash attention, keeping a running max and
 * sum per row (online softmax), so the score matrix never exists in
 * memory; key tiles wholly after a block's last position are skipped. On
 * the tensor cores for head_dim 64/128 (flash_prefill_tc_kernel, also the
 * attention_chunk op of batching, K/V through a block table); an f32 SIMT
 * kernel for other sizes: 32 query rows a block, 4 a warp, a lane a key
 * in the score step and head_dim/32 output dims in the P.V step.
 *
 * Decode (few rows): flash-decoding (decode_kernel, also attention_paged
 * through block tables). The context is split into chunks so that even
 * one query row fills the GPU; each block scores its chunk and writes an
 * unnormalised partial output with its max and sum, and the last block of
 * each (row, head) merges the chunks with the usual rescaling (a merge
 * kernel when INFERD_CUDA_FUSE=0).
 */
#include <math.h>

#include "attention.cuh"
#include "graph.cuh"

#define FA_BR 32          /* query rows per block (warps x rows each) */
#define FA_BC 32          /* keys per tile */
#define FA_RPW 4          /* query rows per warp: 7B F16 prefill 14,042
			   * tok/s with 8, 14,491 with 4, 14,234 with 2
			   * (cuda-layer-bench, one H200 call) */
#define DECODE_MAX_N 4    /* up to this many rows use flash-decoding */

__device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

template <int DMAX>
__global__ void __launch_bounds__(32 * (FA_BR / FA_RPW))
	flash_prefill_kernel(float *__restrict__ out,
			     const float *__restrict__ q,
			     const float *__restrict__ kc,
			     const float *__restrict__ vc, int n, int pos0,
			     int n_heads, int group, int D, int kv_dim,
			     float scale)
{
	pdl_enter();
	constexpr int DPL = DMAX / 32; /* output dims per lane */
	constexpr int KP = DMAX + 4;   /* K row pitch: 16-byte rows whose
					* float4 reads by 8 lanes hit
					* distinct banks */
	extern __shared__ float smem[];
	float *Qs = smem;                       /* [FA_BR][DMAX] */
	float *Ks = Qs + FA_BR * DMAX;          /* [FA_BC][KP] */
	float *Vs = Ks + FA_BC * KP;            /* [FA_BC][DMAX] */
	float *Ps = Vs + FA_BC * DMAX;          /* [warps][FA_RPW][FA_BC] */

	int qi0 = blockIdx.x * FA_BR, h = blockIdx.y, kvh = h / group;
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int qdim = n_heads * D;
	int D4 = (D + 3) & ~3; /* dims rounded to float4; the pad is zero */

	for (int e = threadIdx.x; e < FA_BR * D4; e += blockDim.x) {
		int r = e / D4, d = e % D4;
		Qs[r * DMAX + d] = qi0 + r < n && d < D
			? q[(size_t)(qi0 + r) * qdim + (size_t)h * D + d] * scale
			: 0.0f;
	}

	float m[FA_RPW], l[FA_RPW], o[FA_RPW][DPL];
#pragma unroll
	for (int r = 0; r < FA_RPW; r++) {
		m[r] = -INFINITY;
		l[r] = 0.0f;
#pragma unroll
		for (int i = 0; i < DPL; i++)
			o[r][i] = 0.0f;
	}
	int last_row = min(qi0 + FA_BR, n) - 1;
	int kend = pos0 + last_row + 1; /* keys this block needs */
	int rbase = warp * FA_RPW;
	float *P = Ps + warp * FA_RPW * FA_BC;

	for (int kt = 0; kt < kend; kt += FA_BC) {
		__syncthreads(); /* previous tile fully consumed */
		for (int e = threadIdx.x; e < FA_BC * D4; e += blockDim.x) {
			int j = e / D4, d = e % D4;
			bool ok = kt + j < kend && d < D;
			size_t off = (size_t)(kt + j) * kv_dim +
				     (size_t)kvh * D + d;
			Ks[j * KP + d] = ok ? kc[off] : 0.0f;
			Vs[j * DMAX + d] = ok ? vc[off] : 0.0f;
		}
		__syncthreads();

		/* scores: lane = key; 4 dims per shared-memory load */
		float s[FA_RPW];
#pragma unroll
		for (int r = 0; r < FA_RPW; r++)
			s[r] = 0.0f;
		const float4 *kr = (const float4 *)(Ks + lane * KP);
		for (int d4 = 0; d4 < D4 / 4; d4++) {
			float4 kv = kr[d4];
#pragma unroll
			for (int r = 0; r < FA_RPW; r++) {
				float4 qv = ((const float4 *)(Qs + (rbase + r) *
								   DMAX))[d4];
				s[r] += qv.x * kv.x + qv.y * kv.y +
					qv.z * kv.z + qv.w * kv.w;
			}
		}
		int key = kt + lane;
#pragma unroll
		for (int r = 0; r < FA_RPW; r++) {
			int pos = pos0 + qi0 + rbase + r;
			if (key > pos || key >= kend)
				s[r] = -INFINITY;
			float mx = warp_max(s[r]);
			float mn = fmaxf(m[r], mx);
			float p = mn == -INFINITY ? 0.0f : __expf(s[r] - mn);
			float alpha = m[r] == -INFINITY ? 0.0f
							: __expf(m[r] - mn);
			l[r] = l[r] * alpha + warp_sum(p);
			m[r] = mn;
			P[r * FA_BC + lane] = p;
#pragma unroll
			for (int i = 0; i < DPL; i++)
				o[r][i] *= alpha;
		}
		__syncwarp();
		/* O += P V, four keys per step (keys past kend have p = 0
		 * and zero V rows) */
		int jmax = (min(FA_BC, kend - kt) + 3) & ~3;
		for (int j = 0; j < jmax; j += 4) {
			float v[4][DPL];
#pragma unroll
			for (int t = 0; t < 4; t++)
#pragma unroll
				for (int i = 0; i < DPL; i++)
					v[t][i] = Vs[(j + t) * DMAX + lane + 32 * i];
#pragma unroll
			for (int r = 0; r < FA_RPW; r++) {
				float4 p = *(const float4 *)(P + r * FA_BC + j);
#pragma unroll
				for (int i = 0; i < DPL; i++)
					o[r][i] += p.x * v[0][i] + p.y * v[1][i] +
						   p.z * v[2][i] + p.w * v[3][i];
			}
		}
		__syncwarp();
	}
#pragma unroll
	for (int r = 0; r < FA_RPW; r++) {
		int row = qi0 + rbase + r;
		if (row >= n)
			continue;
		float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
		float *orow = out + (size_t)row * qdim + (size_t)h * D;
#pragma unroll
		for (int i = 0; i < DPL; i++) {
			int d = lane + 32 * i;
			if (d < D)
				orow[d] = o[r][i] * inv;
		}
	}
}

/* ---- prefill on the tensor cores (head_dim 64 or 128) --------------

 * The same flash attention with mma.sync m16n8k16 (f16 in, f32 sums): a
 * block of 4 warps takes 64 query rows of one head, a warp 16 of them,
 * and walks the keys in tiles of 32. Tiles come in by cp.async as f32
 * into a double buffer, the next tile's copy in flight while the current
 * one is used, and are rounded to f16 as each fragment is built (the
 * cache stays f32; a separate conversion pass would cost a launch and a
 * copy a layer). Scores stay in the mma accumulators: each lane holds
 * rows lane/4 and lane/4 + 8 of its warp's 16, and the accumulator
 * layout of S is already the A-operand layout of P for P.V. Rounding q,
 * k, v and p to f16 costs ~1e-3 relative (llama.cpp's flash attention
 * rounds the same way); the SIMT kernel above keeps f32 for other head
 * sizes and with INFERD_CUDA_ATT=simt. The output is also written as the
 * o GEMM's f16 operand (cuda_xh_reserve). The first version staged whole
 * 64-key f16 tiles with plain loads and no overlap: 153 us a layer at 7B
 * (512 tokens), ~14 TFLOP/s. */
#define TC_BM 64 /* query rows a block */
#define TC_BN 32 /* keys a tile */

__device__ __forceinline__ uint32_t pack_h2(float a, float b)
{
	__half2 h = __floats2half2_rn(a, b);
	return *(uint32_t *)&h;
}

__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4],
					 uint32_t b0, uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
		     "{%0,%1,%2,%3};"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
		       "r"(b1));
}

/* 16 bytes global -> shared without registers; zero-filled when !valid
 * (keys past the end must be 0, not stale: p = 0 times a stale NaN is
 * NaN). */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem,
					   bool valid)
{
	unsigned s = (unsigned)__cvta_generic_to_shared(smem);
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s),
		     "l"(gmem), "r"(valid ? 16 : 0)
		     : "memory");
}

__device__ __forceinline__ void cp_async_commit(void)
{
	asm volatile("cp.async.commit_group;" ::: "memory");
}

__device__ __forceinline__ void cp_async_wait_prev(void)
{
	asm volatile("cp.async.wait_group 1;" ::: "memory");
}

/* Shared-memory pitches in floats. K fragments are 8-byte loads at
 * key*KP + 2*lane%4: KP = 8 mod 32 keeps each half warp on 32 banks. V
 * fragments are 4-byte loads at (2*lane%4)*VP + lane/4: VP = 4 mod 32
 * puts the 32 lanes on 32 banks. */
template <int D> struct TcPitch {
	static constexpr int KP = D + 8;
	static constexpr int VP = D + 4;
	static constexpr int STAGE = TC_BN * (KP + VP); /* floats a buffer */
};

/* PAGED: key j lives in slot tables[j / bs] * bs + j % bs (one sequence's
 * block table, attention_chunk), else in row j of the cache. */
template <int D, bool PAGED>
__global__ void __launch_bounds__(128)
	flash_prefill_tc_kernel(float *__restrict__ out,
				const float *__restrict__ q,
				const float *__restrict__ kc,
				const float *__restrict__ vc, int n, int pos0,
				int n_heads, int group, int kv_dim, float scale,
				__half *xh, int split,
				const int32_t *__restrict__ tables, int bs)
{
	pdl_enter();
	typedef TcPitch<D> P;
	constexpr int KS = D / 16; /* k-steps over the head dims */
	constexpr int NT = D / 8;  /* output n-tiles */
	constexpr int C4 = D / 4;  /* 16-byte chunks a row */
	extern __shared__ float tsf[]; /* [2][TC_BN][KP] K, then [2][..][VP] V */
	/* the longest (last) query tiles first: they start while the GPU
	 * is empty and the short ones fill in behind them */
	int qi0 = (gridDim.x - 1 - blockIdx.x) * TC_BM, h = blockIdx.y;
	int kvh = h / group;
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int g = lane / 4, t = lane % 4; /* fragment row group, thread */
	int qdim = n_heads * D, wr = warp * 16;
	int last_row = min(qi0 + TC_BM, n) - 1;
	int kend = pos0 + last_row + 1;
	int ntiles = (kend + TC_BN - 1) / TC_BN;
	const float *kb = kc + (size_t)kvh * D, *vb = vc + (size_t)kvh * D;

	/* tile it -> buffer it & 1, K and V rows of TC_BN keys */
	auto issue = [&](int it) {
		float *Ks = tsf + (it & 1) * TC_BN * P::KP;
		float *Vs = tsf + 2 * TC_BN * P::KP + (it & 1) * TC_BN * P::VP;
		int kt = it * TC_BN;
		for (int e = threadIdx.x; e < TC_BN * C4; e += blockDim.x) {
			int j = e / C4, d = 4 * (e % C4), key = kt + j;
			bool ok = key < kend;
			size_t row = !ok ? 0
				: PAGED ? (size_t)tables[key / bs] * bs + key % bs
					: (size_t)key;
			size_t off = ok ? row * kv_dim + d : 0;
			cp_async16(Ks + j * P::KP + d, kb + off, ok);
			cp_async16(Vs + j * P::VP + d, vb + off, ok);
		}
		cp_async_commit();
	};
	issue(0);

	/* this warp's Q fragments, all head dims, scaled before rounding */
	uint32_t qa[KS][4];
	int r0 = qi0 + wr + g, r1 = r0 + 8;
#pragma unroll
	for (int k = 0; k < KS; k++) {
		float2 a0 = make_float2(0.0f, 0.0f), a1 = a0, a2 = a0, a3 = a0;
		const float *s0 = q + (size_t)r0 * qdim + (size_t)h * D +
				  k * 16 + 2 * t;
		const float *s1 = s0 + (size_t)8 * qdim;
		if (r0 < n) {
			a0 = *(const float2 *)s0;
			a2 = *(const float2 *)(s0 + 8);
		}
		if (r1 < n) {
			a1 = *(const float2 *)s1;
			a3 = *(const float2 *)(s1 + 8);
		}
		qa[k][0] = pack_h2(a0.x * scale, a0.y * scale);
		qa[k][1] = pack_h2(a1.x * scale, a1.y * scale);
		qa[k][2] = pack_h2(a2.x * scale, a2.y * scale);
		qa[k][3] = pack_h2(a3.x * scale, a3.y * scale);
	}
	float o[NT][4];
#pragma unroll
	for (int j = 0; j < NT; j++)
		o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
	float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
	int p0 = pos0 + r0, p1 = p0 + 8; /* this lane's positions */

	for (int it = 0; it < ntiles; it++) {
		if (it + 1 < ntiles)
			issue(it + 1);
		else
			cp_async_commit(); /* an empty group: wait_prev stays exact */
		cp_async_wait_prev();
		__syncthreads(); /* tile it landed for every thread's copies */
		int kt = it * TC_BN;
		const float *Ks = tsf + (it & 1) * TC_BN * P::KP;
		const float *Vs =
			tsf + 2 * TC_BN * P::KP + (it & 1) * TC_BN * P::VP;
		if (kt <= pos0 + qi0 + wr + 15) { /* else all keys after ours */
			float sc[TC_BN / 8][4];
#pragma unroll
			for (int j = 0; j < TC_BN / 8; j++) {
				sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
				const float *kr = Ks + (j * 8 + g) * P::KP + 2 * t;
#pragma unroll
				for (int k = 0; k < KS; k++) {
					float2 b0 = *(const float2 *)(kr + k * 16);
					float2 b1 =
						*(const float2 *)(kr + k * 16 + 8);
					mma16816(sc[j], qa[k], pack_h2(b0.x, b0.y),
						 pack_h2(b1.x, b1.y));
				}
			}
			/* causal mask and the running max of rows g, g + 8 */
			float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
			for (int j = 0; j < TC_BN / 8; j++) {
				int key = kt + j * 8 + 2 * t;
#pragma unroll
				for (int c = 0; c < 2; c++) {
					if (key + c > p0 || key + c >= kend)
						sc[j][c] = -INFINITY;
					if (key + c > p1 || key + c >= kend)
						sc[j][2 + c] = -INFINITY;
					mx0 = fmaxf(mx0, sc[j][c]);
					mx1 = fmaxf(mx1, sc[j][2 + c]);
				}
			}
#pragma unroll
			for (int sh = 1; sh < 4; sh <<= 1) {
				mx0 = fmaxf(mx0,
					    __shfl_xor_sync(0xffffffffu, mx0, sh));
				mx1 = fmaxf(mx1,
					    __shfl_xor_sync(0xffffffffu, mx1, sh));
			}
			float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
			float a0 = m0 == -INFINITY ? 0.0f : __expf(m0 - n0);
			float a1 = m1 == -INFINITY ? 0.0f : __expf(m1 - n1);
			float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
			for (int j = 0; j < TC_BN / 8; j++) {
#pragma unroll
				for (int c = 0; c < 2; c++) {
					float e0 = n0 == -INFINITY ? 0.0f
						: __expf(sc[j][c] - n0);
					float e1 = n1 == -INFINITY ? 0.0f
						: __expf(sc[j][2 + c] - n1);
					sc[j][c] = e0;
					sc[j][2 + c] = e1;
					s0 += e0;
					s1 += e1;
				}
			}
#pragma unroll
			for (int sh = 1; sh < 4; sh <<= 1) {
				s0 += __shfl_xor_sync(0xffffffffu, s0, sh);
				s1 += __shfl_xor_sync(0xffffffffu, s1, sh);
			}
			l0 = l0 * a0 + s0;
			l1 = l1 * a1 + s1;
			m0 = n0;
			m1 = n1;
#pragma unroll
			for (int j = 0; j < NT; j++) {
				o[j][0] *= a0;
				o[j][1] *= a0;
				o[j][2] *= a1;
				o[j][3] *= a1;
			}
			/* O += P V: S's accumulators of key tiles 2kk, 2kk + 1
			 * are P's A fragment for keys 16kk .. 16kk + 15 */
#pragma unroll
			for (int kk = 0; kk < TC_BN / 16; kk++) {
				uint32_t pa[4] = {
					pack_h2(sc[2 * kk][0], sc[2 * kk][1]),
					pack_h2(sc[2 * kk][2], sc[2 * kk][3]),
					pack_h2(sc[2 * kk + 1][0],
						sc[2 * kk + 1][1]),
					pack_h2(sc[2 * kk + 1][2],
						sc[2 * kk + 1][3])};
				const float *vr =
					Vs + (kk * 16 + 2 * t) * P::VP + g;
#pragma unroll
				for (int j = 0; j < NT; j++) {
					const float *v = vr + j * 8;
					mma16816(o[j], pa,
						 pack_h2(v[0], v[P::VP]),
						 pack_h2(v[8 * P::VP],
							 v[9 * P::VP]));
				}
			}
		}
		__syncthreads(); /* buffer it & 1 is refilled next iteration */
	}
	float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f;
	float i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
	size_t count = (size_t)n * qdim; /* xh: the o GEMM's f16 operand */
#pragma unroll
	for (int j = 0; j < NT; j++) {
		size_t e0 = (size_t)r0 * qdim + (size_t)h * D + j * 8 + 2 * t;
		size_t e1 = e0 + (size_t)8 * qdim;
		float2 v0 = make_float2(o[j][0] * i0, o[j][1] * i0);
		float2 v1 = make_float2(o[j][2] * i1, o[j][3] * i1);
		if (r0 < n) {
			*(float2 *)(out + e0) = v0;
			if (xh)
				xh_store2(xh, count, e0, v0, split);
		}
		if (r1 < n) {
			*(float2 *)(out + e1) = v1;
			if (xh)
				xh_store2(xh, count, e1, v1, split);
		}
	}
}

/* A prefill kernel with smem bytes of dynamic shared memory, outside any
 * recorded step. The limit is set on every launch: it is per device, and
 * costs a microsecond against a prefill's milliseconds. */
template <typename... KArgs, typename... Args>
static void launch_prefill_smem(CudaBackend *c, void (*kernel)(KArgs...),
				dim3 grid, unsigned threads, size_t smem,
				Args... args)
{
	if (c->graph->step_mode == STEP_REPLAY)
		return; /* a replayed step's graph holds it (batch.c keeps
			 * prompt rows out of replayable steps today) */
	if (cuda_fail(c,
		      cudaFuncSetAttribute(
			      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
			      (int)smem),
		      "attention smem"))
		return;
	cuda_flush(c); /* prefill is never part of a recorded step */
	cuda_x_stale(c);
	kernel<<<grid, threads, smem, c->stream>>>(args...);
	CUDA_LAUNCHED(c, "attention prefill");
}

template <int D>
static void launch_prefill_tc(CudaBackend *c, float *out, const float *q,
			      const float *kc, const float *vc, int n,
			      int pos0, int n_heads, int group, int kv_dim,
			      float scale, const int32_t *tables, int bs)
{
	size_t smem = sizeof(float) * 2 * TcPitch<D>::STAGE;
	size_t count = (size_t)n * n_heads * D;
	__half *xh = cuda_xh_reserve(c, count);
	dim3 grid((unsigned)((n + TC_BM - 1) / TC_BM), (unsigned)n_heads);
	if (tables)
		launch_prefill_smem(c, flash_prefill_tc_kernel<D, true>, grid,
				    128, smem, out, q, kc, vc, n, pos0, n_heads,
				    group, kv_dim, scale, xh, c->gemm_split,
				    tables, bs);
	else
		launch_prefill_smem(c, flash_prefill_tc_kernel<D, false>, grid,
				    128, smem, out, q, kc, vc, n, pos0, n_heads,
				    group, kv_dim, scale, xh, c->gemm_split,
				    tables, bs);
	if (xh)
		cuda_xh_made(c, out, count);
}

/* The tensor-core prefill where it applies (head_dim 64 or 128, K/V rows
 * 16-byte aligned, not INFERD_CUDA_ATT=simt); 0 when it did not launch.
 * tables: one sequence's block table (attention_chunk), or NULL. */
static int prefill_tc(CudaBackend *c, float *out, const float *q,
		      const float *kc, const float *vc, int n, int pos0,
		      int n_heads, int group, int D, int kv_dim, float scale,
		      const int32_t *tables, int bs)
{
	if (c->att_simt || kv_dim % 4 || (uintptr_t)kc % 16 ||
	    (uintptr_t)vc % 16)
		return 0;
	if (D == 128)
		launch_prefill_tc<128>(c, out, q, kc, vc, n, pos0, n_heads,
				       group, kv_dim, scale, tables, bs);
	else if (D == 64)
		launch_prefill_tc<64>(c, out, q, kc, vc, n, pos0, n_heads,
				      group, kv_dim, scale, tables, bs);
	else
		return 0;
	return 1;
}

/* Merge the chunks of row i, head h (the block's threads share D): the
 * softmax of all chunks from each chunk's max and sum. Reads through L2:
 * other blocks wrote the partials. */
__device__ __forceinline__ void decode_merge(float *__restrict__ out,
					     const float *part, int n_heads,
					     int D, int nchunks, int h, int i)
{
	const float *pp = part + ((size_t)i * n_heads + h) * nchunks * (D + 2);
	float M = -INFINITY;
	for (int c = 0; c < nchunks; c++)
		M = fmaxf(M, __ldcg(pp + c * (D + 2) + D));
	float L = 0.0f;
	for (int c = 0; c < nchunks; c++) {
		float mc = __ldcg(pp + c * (D + 2) + D);
		if (mc != -INFINITY)
			L += __ldcg(pp + c * (D + 2) + D + 1) * expf(mc - M);
	}
	float inv = L > 0.0f ? 1.0f / L : 0.0f;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		float acc = 0.0f;
		for (int c = 0; c < nchunks; c++) {
			float mc = __ldcg(pp + c * (D + 2) + D);
			if (mc != -INFINITY)
				acc += __ldcg(pp + c * (D + 2) + d) *
				       expf(mc - M);
		}
		out[(size_t)i * n_heads * D + (size_t)h * D + d] = acc * inv;
	}
}

/* The merge without a kernel of its own: each chunk's block counts itself
 * done for its (row, head), and the last one merges (then rezeroes the
 * counter for the next step). A separate merge launch cost ~3 us a layer
 * at 7B, more than the merge itself. */
__device__ __forceinline__ void decode_merge_last(float *__restrict__ out,
						  const float *part,
						  int *done, int n_heads,
						  int D, int nchunks, int h,
						  int i)
{
	__shared__ int last;
	__threadfence(); /* this block's partials before its count */
	__syncthreads();
	if (threadIdx.x == 0) {
		int *cnt = done + (size_t)i * n_heads + h;
		last = atomicAdd(cnt, 1) == nchunks - 1;
		if (last)
			*cnt = 0;
	}
	__syncthreads();
	if (!last)
		return;
	__threadfence(); /* the other blocks' partials after their counts */
	decode_merge(out, part, n_heads, D, nchunks, h, i);
}

/* part layout: [n][n_heads][nchunks][D + 2]: D unnormalised outputs, then
 * the chunk's max and sum of exponentials.
 *
 * Grid (head, chunk, row). Row i's keys 0 .. len-1 are cut into gridDim.y
 * chunks [len*c/Z, len*(c+1)/Z), a block of DEC_WARPS warps each. A warp
 * scores U keys at a time with all its lanes (lane owns dims lane + 32e,
 * so every load instruction of the warp reads 128 contiguous bytes, and
 * the U keys' K and V rows are in flight together), keeps its own
 * online-softmax state and slice of the output, and the warps merge
 * through shared memory; the chunks then merge in chunk order in the
 * last block to finish (decode_merge_last), or one chunk writes the
 * output itself.
 *
 * The first kernel gave a key to a thread (a 512-byte row walked by one
 * lane) and reached ~1 TB/s over a 576-key cache at 7B: 232 tok/s decoding
 * from an empty cache, 204 after a 512-token prompt; this one 252 and 234
 * (one H200 call). */
#define DEC_WARPS 8 /* warps a decode block */

/* Where a decode row's keys live: rows of the contiguous cache (row i at
 * position pos0 + i), or pool slots through block tables (paged.cu). */
struct DecKeys {
	const int32_t *pos;    /* device [n] positions, or NULL: row i at
				* position pos0 + i */
	const int32_t *tab;    /* device [n] block table offsets, or NULL:
				* every row's table starts at tables */
	const int32_t *tables; /* device block tables, or NULL: keys are
				* rows of a contiguous cache */
	int bs;                /* keys per block */
	int pos0;              /* position of row 0 when pos is NULL */
};

template <int DPL, bool PAGED> /* DPL: dims per lane, head_dim <= 32 DPL */
__global__ void __launch_bounds__(32 * DEC_WARPS)
	decode_kernel(float *__restrict__ part, const float *__restrict__ q,
		      const float *__restrict__ kc,
		      const float *__restrict__ vc, DecKeys kk, int n_heads,
		      int group, int D, int kv_dim, float scale,
		      float *__restrict__ fin, int *__restrict__ done)
{
	constexpr int U = DPL <= 2 ? 8 : DPL == 4 ? 4 : 2; /* keys a step */
	pdl_enter();
	__shared__ float sm_m[DEC_WARPS], sm_l[DEC_WARPS];
	extern __shared__ float sm_o[]; /* [DEC_WARPS][D] */
	int h = blockIdx.x, c = blockIdx.y, nchunks = gridDim.y, i = blockIdx.z;
	int kvh = h / group;
	int w = threadIdx.x / 32, lane = threadIdx.x % 32;
	int len = kk.pos ? kk.pos[i] + 1 : kk.pos0 + i + 1;
	int k0 = (int)((long long)len * c / nchunks);
	int k1 = (int)((long long)len * (c + 1) / nchunks);
	const int32_t *tb = PAGED ? kk.tables + (kk.tab ? kk.tab[i] : 0) : NULL;
	/* partials exist unless one fused chunk writes the output itself */
	float *pp = fin && nchunks == 1 ? NULL
		: part + (((size_t)i * n_heads + h) * nchunks + c) * (D + 2);
	if (k0 >= k1) { /* a short row: this chunk is empty */
		for (int d = threadIdx.x; d < D; d += blockDim.x)
			pp[d] = 0.0f;
		if (threadIdx.x == 0) {
			pp[D] = -INFINITY;
			pp[D + 1] = 0.0f;
		}
		if (fin)
			decode_merge_last(fin, part, done, n_heads, D,
					  nchunks, h, i);
		return;
	}
	const float *qr = q + (size_t)i * n_heads * D + (size_t)h * D;
	float qv[DPL], o[DPL];
#pragma unroll
	for (int e = 0; e < DPL; e++) {
		int d = lane + 32 * e;
		qv[e] = d < D ? qr[d] * scale : 0.0f;
		o[e] = 0.0f;
	}
	float m = -INFINITY, l = 0.0f;
	size_t off = (size_t)kvh * D;
	for (int j = k0 + w * U; j < k1; j += DEC_WARPS * U) {
		float a[U][DPL], b[U][DPL], s[U];
#pragma unroll
		for (int u = 0; u < U; u++) {
			/* a key past the chunk reloads the first one: no
			 * branch around the loads, its p is 0 below */
			int key = j + u < k1 ? j + u : j;
			size_t slot = PAGED ? (size_t)tb[key / kk.bs] * kk.bs +
						      (size_t)(key % kk.bs)
					    : (size_t)key;
			const float *kr = kc + slot * kv_dim + off;
			const float *vr = vc + slot * kv_dim + off;
#pragma unroll
			for (int e = 0; e < DPL; e++) {
				int d = lane + 32 * e;
				a[u][e] = d < D ? kr[d] : 0.0f;
				b[u][e] = d < D ? vr[d] : 0.0f;
			}
		}
		float nm = m;
#pragma unroll
		for (int u = 0; u < U; u++) {
			float t = 0.0f;
#pragma unroll
			for (int e = 0; e < DPL; e++)
				t += qv[e] * a[u][e];
			t = warp_sum(t);
			s[u] = j + u < k1 ? t : -INFINITY;
			nm = fmaxf(nm, s[u]);
		}
		/* nm is finite: key j is in the chunk */
		float corr = expf(m - nm); /* 0 on the first step */
		l *= corr;
#pragma unroll
		for (int e = 0; e < DPL; e++)
			o[e] *= corr;
#pragma unroll
		for (int u = 0; u < U; u++) {
			float p = expf(s[u] - nm);
			l += p;
#pragma unroll
			for (int e = 0; e < DPL; e++)
				o[e] += p * b[u][e];
		}
		m = nm;
	}
	if (lane == 0) {
		sm_m[w] = m;
		sm_l[w] = l;
	}
#pragma unroll
	for (int e = 0; e < DPL; e++) {
		int d = lane + 32 * e;
		if (d < D)
			sm_o[w * D + d] = o[e];
	}
	__syncthreads();
	/* a warp that saw no key has m = -inf, l = 0: weight 0 */
	float M = -INFINITY;
	for (int k = 0; k < DEC_WARPS; k++)
		M = fmaxf(M, sm_m[k]);
	float L = 0.0f;
	for (int k = 0; k < DEC_WARPS; k++)
		L += sm_l[k] * expf(sm_m[k] - M);
	int direct = fin && nchunks == 1; /* the whole context: no merge */
	float *orow = direct ? fin + (size_t)i * n_heads * D + (size_t)h * D
			     : NULL;
	float il = 1.0f / L;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		float acc = 0.0f;
		for (int k = 0; k < DEC_WARPS; k++)
			acc += sm_o[k * D + d] * expf(sm_m[k] - M);
		if (direct)
			orow[d] = acc * il;
		else
			pp[d] = acc;
	}
	if (direct)
		return;
	if (threadIdx.x == 0) {
		pp[D] = M;
		pp[D + 1] = L;
	}
	if (fin)
		decode_merge_last(fin, part, done, n_heads, D, nchunks, h, i);
}

/* The decode kernel over n rows in nchunks chunks a row; out is written
 * by the last chunk's block, or (fused == 0, contiguous rows only) by a
 * merge kernel launched after. */
static void launch_decode(CudaBackend *c, float *out, const float *q,
			  const float *kc, const float *vc, DecKeys kk, int n,
			  int nchunks, int n_heads, int group, int D,
			  int kv_dim, int fused);

/* grid (n_heads, n): merge the chunks of one row and head. */
__global__ void flash_decode_merge_kernel(float *__restrict__ out,
					  const float *__restrict__ part,
					  int n_heads, int D, int nchunks)
{
	pdl_enter();
	decode_merge(out, part, n_heads, D, nchunks, blockIdx.x, blockIdx.y);
}

template <int DMAX>
static void launch_prefill(CudaBackend *c, float *out, const float *q,
			   const float *kc, const float *vc, int n, int pos0,
			   int n_heads, int group, int D, int kv_dim,
			   float scale)
{
	size_t smem = sizeof(float) *
		      (FA_BR * DMAX + FA_BC * (DMAX + 4) + FA_BC * DMAX +
		       FA_BR * FA_BC);
	launch_prefill_smem(c, flash_prefill_kernel<DMAX>,
			    dim3((unsigned)((n + FA_BR - 1) / FA_BR),
				 (unsigned)n_heads),
			    32 * (FA_BR / FA_RPW), smem, out, q, kc, vc, n,
			    pos0, n_heads, group, D, kv_dim, scale);
}

void cuda_attention(Backend *b, float *out, const float *q, const float *kc,
		    const float *vc, int n, int pos0, int n_heads,
		    int n_kv_heads, int head_dim)
{
	CudaBackend *c = cb(b);
	if (n <= 0)
		return;
	if (n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 ||
	    head_dim > 256 || pos0 < 0) {
		cuda_fail_msg(c, "attention: unsupported shape (heads %d/%d, "
			      "head_dim %d)", n_heads, n_kv_heads, head_dim);
		return;
	}
	int group = n_heads / n_kv_heads, D = head_dim;
	int kv_dim = n_kv_heads * D;
	float scale = 1.0f / sqrtf((float)D);
	if (n > DECODE_MAX_N) {
		if (prefill_tc(c, out, q, kc, vc, n, pos0, n_heads, group, D,
			       kv_dim, scale, NULL, 0))
			return;
		if (D <= 64)
			launch_prefill<64>(c, out, q, kc, vc, n, pos0, n_heads,
					   group, D, kv_dim, scale);
		else if (D <= 128)
			launch_prefill<128>(c, out, q, kc, vc, n, pos0,
					    n_heads, group, D, kv_dim, scale);
		else
			launch_prefill<256>(c, out, q, kc, vc, n, pos0,
					    n_heads, group, D, kv_dim, scale);
		return;
	}
	/* Chunks of at least 32 keys (a block's first step covers 32 at
	 * head_dim 128), enough that heads x chunks covers the GPU about
	 * twice (2, 4 or 8 times: the same within 1% at 7B, one H200 call). */
	int maxlen = pos0 + n;
	int want = (2 * c->sm_count + n_heads - 1) / n_heads;
	int chunk = (maxlen + want - 1) / want;
	chunk = chunk < 32 ? 32 : chunk > 2048 ? 2048 : chunk;
	int nchunks = (maxlen + chunk - 1) / chunk;
	DecKeys kk = {NULL, NULL, NULL, 0, pos0};
	launch_decode(c, out, q, kc, vc, kk, n, nchunks, n_heads, group, D,
		      kv_dim, c->graph->fuse);
}

static void launch_decode(CudaBackend *c, float *out, const float *q,
			  const float *kc, const float *vc, DecKeys kk, int n,
			  int nchunks, int n_heads, int group, int D,
			  int kv_dim, int fused)
{
	float scale = 1.0f / sqrtf((float)D);
	size_t pbytes = sizeof(float) * (size_t)n * n_heads * nchunks * (D + 2);
	/* one chunk fused writes the output directly: no partials */
	if (!(fused && nchunks == 1) &&
	    cuda_grow(c, (void **)&c->part, &c->part_bytes, pbytes,
		      "attention partials"))
		return;
	/* The last chunk's block merges (decode_merge_last) unless fusing is
	 * off (INFERD_CUDA_FUSE=0): then a merge kernel follows. */
	size_t dbytes = sizeof(int) * (size_t)n * n_heads;
	if (fused && nchunks > 1 && c->dec_done_bytes < dbytes) {
		if (cuda_grow(c, (void **)&c->dec_done, &c->dec_done_bytes,
			      dbytes, "attention counters"))
			return;
		/* queued before any launch that is recorded but not issued */
		if (cuda_fail(c, cudaMemsetAsync(c->dec_done, 0,
						 c->dec_done_bytes, c->stream),
			      "attention counters"))
			return;
	}
	size_t smem = sizeof(float) * DEC_WARPS * (size_t)D;
	dim3 grid((unsigned)n_heads, (unsigned)nchunks, (unsigned)n);
	float *fin = fused ? out : (float *)NULL;
	int *done = fused ? c->dec_done : (int *)NULL;
#define DEC(DPL, P)                                                           \
	cuda_launch(c, decode_kernel<DPL, P>, grid, dim3(32 * DEC_WARPS),     \
		    smem, "attention decode", c->part, q, kc, vc, kk,         \
		    n_heads, group, D, kv_dim, scale, fin, done)
#define DEC_D(P)                                                              \
	do {                                                                  \
		if (D <= 32)                                                  \
			DEC(1, P);                                            \
		else if (D <= 64)                                             \
			DEC(2, P);                                            \
		else if (D <= 128)                                            \
			DEC(4, P);                                            \
		else                                                          \
			DEC(8, P);                                            \
	} while (0)
	if (kk.tables)
		DEC_D(true);
	else
		DEC_D(false);
#undef DEC_D
#undef DEC
	if (fused)
		return;
	int th = D < 32 ? 32 : (D > 256 ? 256 : ((D + 31) / 32) * 32);
	cuda_launch(c, flash_decode_merge_kernel,
		    dim3((unsigned)n_heads, (unsigned)n), dim3(th), 0,
		    "attention merge", out, (const float *)c->part, n_heads, D,
		    nchunks);
}

/* Positions are device data (and a recorded step is replayed at later
 * ones), so a paged launch's chunk count comes from its shape: enough
 * that rows x heads x chunks covers the GPU about twice, at most
 * PAGED_CHUNKS. */
static int paged_chunks(const CudaBackend *c, int n, int n_heads)
{
	long long rh = (long long)n * n_heads;
	long long z = (2LL * c->sm_count + rh - 1) / rh;
	return (int)(z < 1 ? 1 : z > PAGED_CHUNKS ? PAGED_CHUNKS : z);
}

void cuda_decode_paged(CudaBackend *c, float *out, const float *q,
		       const float *kc, const float *vc, const int32_t *pos,
		       const int32_t *tab, const int32_t *tables,
		       int block_size, int n, int n_heads, int n_kv_heads,
		       int head_dim)
{
	DecKeys kk = {pos, tab, tables, block_size, 0};
	launch_decode(c, out, q, kc, vc, kk, n, paged_chunks(c, n, n_heads),
		      n_heads, n_heads / n_kv_heads, head_dim,
		      n_kv_heads * head_dim, 1);
}

void cuda_attention_chunk(Backend *b, float *out, const float *q,
			  const float *kc, const float *vc,
			  const int32_t *tables, int tab, int block_size,
			  int n, int pos0, int n_heads, int n_kv_heads,
			  int head_dim)
{
	CudaBackend *c = cb(b);
	if (n <= 0)
		return;
	if (n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 ||
	    head_dim > 256 || pos0 < 0 || block_size <= 0 || tab < 0 ||
	    n > 65535 || n_heads > 65535) {
		cuda_fail_msg(c, "attention_chunk: bad shape n %d pos0 %d "
			      "heads %d/%d dim %d block %d", n, pos0, n_heads,
			      n_kv_heads, head_dim, block_size);
		return;
	}
	int group = n_heads / n_kv_heads, D = head_dim;
	int kv_dim = n_kv_heads * D;
	float scale = 1.0f / sqrtf((float)D);
	if (prefill_tc(c, out, q, kc, vc, n, pos0, n_heads, group, D, kv_dim,
		       scale, tables + tab, block_size))
		return;
	/* other head sizes: the decode kernel through the one table */
	DecKeys kk = {NULL, NULL, tables + tab, block_size, pos0};
	launch_decode(c, out, q, kc, vc, kk, n, paged_chunks(c, n, n_heads),
		      n_heads, group, D, kv_dim, 1);
}
