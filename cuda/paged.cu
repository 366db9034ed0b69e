/*
 * paged.cu - K/V rows into their pool slots, and attention of rows of many
 * sequences through their block tables (see backend.h). Attention: one
 * warp per (query row, head) walks the row's keys 32 at a time, a lane per
 * key for the scores, then every lane owns head_dim/32 output dims for the
 * weighted sum of V, with the usual online-softmax rescaling. Simple
 * rather than fast: decode rows of a batch are the case it serves.
 */
#include <math.h>

#include "graph.cuh"
#include "paged.cuh"

__device__ __forceinline__ float pg_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

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

template <int DPL>
__global__ void paged_att_kernel(float *out, const float *q, const float *kc,
				 const float *vc, const int32_t *pos,
				 const int32_t *tab, const int32_t *tables,
				 int bs, int n, int n_heads, int group, int D,
				 int kv_dim, float scale)
{
	int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (w >= n * n_heads)
		return;
	int i = w / n_heads, h = w % n_heads, kvh = h / group;
	const float *qr = q + (size_t)i * n_heads * D + (size_t)h * D;
	const int32_t *tb = tables + tab[i];
	int len = pos[i] + 1;
	float o[DPL];
#pragma unroll
	for (int e = 0; e < DPL; e++)
		o[e] = 0.0f;
	float m = -INFINITY, l = 0.0f;
	for (int k0 = 0; k0 < len; k0 += 32) {
		int key = k0 + lane;
		float s = -INFINITY;
		if (key < len) {
			const float *kr = kc + pg_slot(tb, bs, key) * kv_dim +
					  (size_t)kvh * D;
			float acc = 0.0f;
			for (int d = 0; d < D; d++)
				acc += qr[d] * kr[d];
			s = acc * scale;
		}
		float nm = fmaxf(m, pg_max(s));
		float p = key < len ? expf(s - nm) : 0.0f;
		float corr = expf(m - nm); /* 0 on the first chunk */
		l = l * corr + pg_sum(p);
#pragma unroll
		for (int e = 0; e < DPL; e++)
			o[e] *= corr;
		int cnt = min(32, len - k0);
		for (int j = 0; j < cnt; j++) {
			float pj = __shfl_sync(0xffffffffu, p, j);
			const float *vr = vc + pg_slot(tb, bs, k0 + j) * kv_dim +
					  (size_t)kvh * D;
#pragma unroll
			for (int e = 0; e < DPL; e++) {
				int d = lane + 32 * e;
				if (d < D)
					o[e] += pj * vr[d];
			}
		}
		m = nm;
	}
	float il = 1.0f / l;
	float *orow = out + (size_t)i * n_heads * D + (size_t)h * D;
#pragma unroll
	for (int e = 0; e < DPL; e++) {
		int d = lane + 32 * e;
		if (d < D)
			orow[d] = o[e] * il;
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
	int warps = n * n_heads;
	dim3 grid((unsigned)((warps + 3) / 4)), block(128);
	int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim;
	float scale = 1.0f / sqrtf((float)head_dim);
	if (head_dim <= 64)
		cuda_launch(c, paged_att_kernel<2>, grid, block, 0,
			    "attention_paged", out, q, kc, vc, pos, tab, tables,
			    block_size, n, n_heads, group, head_dim, kv_dim,
			    scale);
	else if (head_dim <= 128)
		cuda_launch(c, paged_att_kernel<4>, grid, block, 0,
			    "attention_paged", out, q, kc, vc, pos, tab, tables,
			    block_size, n, n_heads, group, head_dim, kv_dim,
			    scale);
	else
		cuda_launch(c, paged_att_kernel<8>, grid, block, 0,
			    "attention_paged", out, q, kc, vc, pos, tab, tables,
			    block_size, n, n_heads, group, head_dim, kv_dim,
			    scale);
}
