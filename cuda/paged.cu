/*
 * paged.cu - K/V rows into their pool slots, and attention of rows of many
 * sequences through their block tables (see backend.h).
 *
 * Attention: the decode kernel of attention.cu with keys found through
 * the block tables, every row in PAGED_CHUNKS chunks (cuda_decode_paged).
 * It was a kernel of its own with one block a (row, head): a single 7B
 * sequence ran 32 blocks on 132 SMs.
 */
#include <math.h>

#include "attention.cuh"
#include "graph.cuh"
#include "paged.cuh"

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
	cuda_decode_paged(c, out, q, kc, vc, pos, tab, tables, block_size, n,
			  n_heads, n_kv_heads, head_dim);
}
