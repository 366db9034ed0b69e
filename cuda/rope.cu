/*
 * rope.cu - rotary position embedding in place, one thread per rotated
 * pair; rows at pos0 + i, or each at its own position (rope_rows, for a
 * batch of sequences). Angles are pos * inv_freq[i] in f32 with the
 * accurate sincosf (positions reach 1e5 and more, where the fast
 * intrinsic is off).
 */
#include "graph.cuh"
#include "rope.cuh"

__global__ void rope_kernel(float *x, int n, int stride, int n_heads,
			    int head_dim, int pos0, const int32_t *pos,
			    const float *inv_freq, int layout)
{
	pdl_enter();
	int half = head_dim / 2;
	int64_t total = (int64_t)n * n_heads * half;
	for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
	     t < total; t += (int64_t)gridDim.x * blockDim.x) {
		int i = (int)(t % half);
		int h = (int)((t / half) % n_heads);
		int r = (int)(t / ((int64_t)half * n_heads));
		float *v = x + (size_t)r * stride + (size_t)h * head_dim;
		float s, co;
		int p = pos ? pos[r] : pos0 + r;
		sincosf((float)p * inv_freq[i], &s, &co);
		int a = layout == ROPE_INTERLEAVED ? 2 * i : i;
		int bb = layout == ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
		float x0 = v[a], x1 = v[bb];
		v[a] = x0 * co - x1 * s;
		v[bb] = x0 * s + x1 * co;
	}
}

static void rope(CudaBackend *c, float *x, int n, int stride, int n_heads,
		 int head_dim, int pos0, const int32_t *pos,
		 const float *inv_freq, int layout)
{
	if (n <= 0 || n_heads <= 0 || head_dim < 2)
		return;
	int64_t total = (int64_t)n * n_heads * (head_dim / 2);
	int64_t g = (total + 255) / 256;
	if (g > 65535)
		g = 65535;
	cuda_launch(c, rope_kernel, dim3((unsigned)g), dim3(256), 0, "rope", x,
		    n, stride, n_heads, head_dim, pos0, pos, inv_freq, layout);
}

void cuda_rope(Backend *b, float *x, int n, int stride, int n_heads,
	       int head_dim, int pos0, const float *inv_freq, int layout)
{
	rope(cb(b), x, n, stride, n_heads, head_dim, pos0, NULL, inv_freq,
	     layout);
}

void cuda_rope_rows(Backend *b, float *x, int n, int stride, int n_heads,
		    int head_dim, const int32_t *pos, const float *inv_freq,
		    int layout)
{
	rope(cb(b), x, n, stride, n_heads, head_dim, 0, pos, inv_freq,
	     layout);
}
