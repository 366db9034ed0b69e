/*
 * paged.cu - K/V rows into their pool slots, and attention of rows of many
 * sequences through their block tables (see backend.h).
 *
 * Attention: one block per (query row, head) of PA_WARPS warps. The warps
 * take the row's keys in turn (warp w: keys w, w + W, ...), two at a time
 * so that four row loads are in flight; a warp scores a key with all its
 * lanes (lane owns dims lane + 32e, so each load instruction of the warp
 * reads 128 contiguous bytes) and a shuffle sum, and keeps its own
 * online-softmax state and slice of the output; the warps' states merge
 * through shared memory at the end. A decode row of a batch is the case it
 * serves: every key and value row is read once per head, coalesced, and a
 * batch of 64 rows x 32 heads is 2048 blocks. With few rows (one
 * sequence: 32 blocks for 132 SMs) blocks get 16 warps, so that a warp's
 * chain of dependent key loads is a quarter as long.
 */
#include <math.h>

#include "graph.cuh"
#include "paged.cuh"

__device__ __forceinline__ float pg_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__global__ void kv_store_kernel(float *kc, float *vc, const float *k,
				const float *v, const int32_t *slots, int n,
				int kv_dim)
{
	pdl_enter();
	int i = blockIdx.y;
	int s = slots[i];
	if (s < 0)
		return; /* batch.c never sends one */
	for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < kv_dim;
	     d += gridDim.x * blockDim.x) {
		kc[(size_t)s * kv_dim + d] = k[(size_t)i * kv_dim + d];
		vc[(size_t)s * kv_dim + d] = v[(size_t)i * kv_dim + d];
	}
}

/* Slot of position p through block table tb. */
__device__ __forceinline__ size_t pg_slot(const int32_t *tb, int bs, int p)
{
	return (size_t)tb[p / bs] * (size_t)bs + (size_t)(p % bs);
}

#define PA_WARPS 4       /* warps per (row, head) block ... */
#define PA_WARPS_FEW 16  /* ... when rows x heads leave most SMs idle */

template <int DPL> /* dims per lane: head_dim <= 32 * DPL */
__global__ void paged_att_kernel(float *out, const float *q, const float *kc,
				 const float *vc, const int32_t *pos,
				 const int32_t *tab, const int32_t *tables,
				 int bs, int n_heads, int group, int D,
				 int kv_dim, float scale)
{
	pdl_enter();
	extern __shared__ float sm[]; /* [W] m, [W] l, [W][D] o */
	int h = blockIdx.x, i = blockIdx.y, kvh = h / group;
	int W = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32;
	const float *qr = q + (size_t)i * n_heads * D + (size_t)h * D;
	const int32_t *tb = tables + tab[i];
	int len = pos[i] + 1;
	float qv[DPL], o[DPL];
#pragma unroll
	for (int e = 0; e < DPL; e++) {
		int d = lane + 32 * e;
		qv[e] = d < D ? qr[d] : 0.0f;
		o[e] = 0.0f;
	}
	float m = -INFINITY, l = 0.0f;
	for (int k0 = w; k0 < len; k0 += 2 * W) {
		int k1 = k0 + W;
		int has1 = k1 < len;
		size_t off = (size_t)kvh * D;
		const float *kr0 = kc + pg_slot(tb, bs, k0) * kv_dim + off;
		const float *vr0 = vc + pg_slot(tb, bs, k0) * kv_dim + off;
		const float *kr1 = has1 ? kc + pg_slot(tb, bs, k1) * kv_dim + off
					: kr0;
		const float *vr1 = has1 ? vc + pg_slot(tb, bs, k1) * kv_dim + off
					: vr0;
		float a0[DPL], a1[DPL], b0[DPL], b1[DPL];
#pragma unroll
		for (int e = 0; e < DPL; e++) {
			int d = lane + 32 * e;
			a0[e] = d < D ? kr0[d] : 0.0f;
			a1[e] = d < D ? kr1[d] : 0.0f;
			b0[e] = d < D ? vr0[d] : 0.0f;
			b1[e] = d < D ? vr1[d] : 0.0f;
		}
		float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
		for (int e = 0; e < DPL; e++) {
			s0 += qv[e] * a0[e];
			s1 += qv[e] * a1[e];
		}
		s0 = pg_sum(s0) * scale;
		s1 = has1 ? pg_sum(s1) * scale : -INFINITY;
		float nm = fmaxf(m, fmaxf(s0, s1));
		float corr = expf(m - nm); /* 0 on the first keys */
		float p0 = expf(s0 - nm), p1 = has1 ? expf(s1 - nm) : 0.0f;
		l = l * corr + p0 + p1;
#pragma unroll
		for (int e = 0; e < DPL; e++)
			o[e] = o[e] * corr + p0 * b0[e] + p1 * b1[e];
		m = nm;
	}
	float *sm_m = sm, *sm_l = sm + W, *sm_o = sm + 2 * W;
	if (lane == 0) {
		sm_m[w] = m;
		sm_l[w] = l;
	}
#pragma unroll
	for (int e = 0; e < DPL; e++) {
		int d = lane + 32 * e;
		if (d < D)
			sm_o[(size_t)w * D + d] = o[e];
	}
	__syncthreads();
	/* merge: a warp that saw no key has m = -inf, l = 0, weight 0 */
	float M = -INFINITY;
	for (int k = 0; k < W; k++)
		M = fmaxf(M, sm_m[k]);
	float L = 0.0f;
	for (int k = 0; k < W; k++)
		L += sm_l[k] * expf(sm_m[k] - M);
	float il = 1.0f / L;
	float *orow = out + (size_t)i * n_heads * D + (size_t)h * D;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		float acc = 0.0f;
		for (int k = 0; k < W; k++)
			acc += sm_o[(size_t)k * D + d] * expf(sm_m[k] - M);
		orow[d] = acc * il;
	}
}

void cuda_kv_store(Backend *b, float *kc, float *vc, const float *k,
		   const float *v, const int32_t *slots, int n, int kv_dim)
{
	CudaBackend *c = cb(b);
	if (n <= 0 || kv_dim <= 0 || n > 65535) {
		cuda_fail_msg(c, "kv_store: bad shape n %d kv_dim %d", n,
			      kv_dim);
		return;
	}
	unsigned gx = (unsigned)((kv_dim + 255) / 256);
	cuda_launch(c, kv_store_kernel, dim3(gx, (unsigned)n), dim3(256), 0,
		    "kv_store", kc, vc, k, v, slots, n, kv_dim);
}

void cuda_attention_paged(Backend *b, float *out, const float *q,
			  const float *kc, const float *vc, const int32_t *pos,
			  const int32_t *tab, const int32_t *tables,
			  int block_size, int n, int n_heads, int n_kv_heads,
			  int head_dim)
{
	CudaBackend *c = cb(b);
	if (n <= 0 || n_heads <= 0 || n_kv_heads <= 0 ||
	    n_heads % n_kv_heads || head_dim <= 0 || head_dim > 256 ||
	    block_size <= 0 || (int64_t)n * n_heads > INT32_MAX - 3) {
		cuda_fail_msg(c, "attention_paged: bad shape n %d heads %d/%d "
			      "dim %d block %d", n, n_heads, n_kv_heads,
			      head_dim, block_size);
		return;
	}
	if (n > 65535 || n_heads > 65535) {
		cuda_fail_msg(c, "attention_paged: %d rows x %d heads is more "
			      "than one launch takes", n, n_heads);
		return;
	}
	int warps = (int64_t)n * n_heads < 2 * (int64_t)c->sm_count
			    ? PA_WARPS_FEW : PA_WARPS;
	dim3 grid((unsigned)n_heads, (unsigned)n), block(32 * warps);
	int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim;
	float scale = 1.0f / sqrtf((float)head_dim);
	size_t smem = sizeof(float) * warps * (2 + (size_t)head_dim);
#define PA(DPL)                                                               \
	cuda_launch(c, paged_att_kernel<DPL>, grid, block, smem,              \
		    "attention_paged", out, q, kc, vc, pos, tab, tables,      \
		    block_size, n_heads, group, head_dim, kv_dim, scale)
	if (head_dim <= 32)
		PA(1);
	else if (head_dim <= 64)
		PA(2);
	else if (head_dim <= 128)
		PA(4);
	else
		PA(8);
#undef PA
}
