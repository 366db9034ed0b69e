/*
 * rope.cu - rotary position embedding in place, one thread per rotated
 * pair; rows at pos0 + i, or each at its own position (rope_rows, for a
 * batch of sequences). Angles are pos * inv_freq[i] in f32 with the
 * accurate sincosf (positions reach 1e5 and more, where the fast
 * intrinsic is off).
 */
#include "graph.cuh"
#include "rope.cuh"

/* Rotate pair i of the head at v by position p (both kernels below). */
__device__ __forceinline__ void rope_pair(float *v, int i, int half, int p,
					  const float *inv_freq, int layout)
{
	float s, co;
	sincosf((float)p * inv_freq[i], &s, &co);
	int a = layout == ROPE_INTERLEAVED ? 2 * i : i;
	int bb = layout == ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
	float x0 = v[a], x1 = v[bb];
	v[a] = x0 * co - x1 * s;
	v[bb] = x0 * s + x1 * co;
}

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
		rope_pair(v, i, half, pos ? pos[r] : pos0 + r, inv_freq, layout);
	}
}

/* q and k of a recorded decode step in one launch: rope_kernel's
 * arithmetic for each pair, over heads1 heads of x1 and then heads2 of
 * x2 (one launch of ~2 us instead of two, 32 a step at 7B). */
__global__ void rope2_kernel(float *x1, int stride1, int heads1, float *x2,
			     int stride2, int heads2, int n, int head_dim,
			     int pos0, const float *inv_freq, int layout)
{
	pdl_enter();
	int half = head_dim / 2, nh = heads1 + heads2;
	int64_t total = (int64_t)n * nh * half;
	for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
	     t < total; t += (int64_t)gridDim.x * blockDim.x) {
		int i = (int)(t % half);
		int h = (int)((t / half) % nh);
		int r = (int)(t / ((int64_t)half * nh));
		float *v = h < heads1
			? x1 + (size_t)r * stride1 + (size_t)h * head_dim
			: x2 + (size_t)r * stride2 + (size_t)(h - heads1) * head_dim;
		rope_pair(v, i, half, pos0 + r, inv_freq, layout);
	}
}

static void rope(CudaBackend *c, float *x, int n, int stride, int n_heads,
		 int head_dim, int pos0, const int32_t *pos,
		 const float *inv_freq, int layout)
{
	if (n <= 0 || n_heads <= 0 || head_dim < 2)
		return;
	GraphState *g = c->graph;
	RopeRec &last = c->rope_last;
	/* The rope just recorded (q) and this one (k) alike but for the
	 * rows: replace the first launch by one for both. */
	if (g->on && g->fuse && !pos && !g->mv.n && !g->rec.empty() &&
	    last.idx == g->rec.size() - 1 &&
	    g->rec.back().func == (const void *)rope_kernel &&
	    last.n == n && last.pos0 == pos0 && last.head_dim == head_dim &&
	    last.inv_freq == inv_freq && last.layout == layout &&
	    last.x != x) {
		g->rec.pop_back();
		last.idx = (size_t)-1;
		int64_t total = (int64_t)n * (last.n_heads + n_heads) *
				(head_dim / 2);
		int64_t gr = (total + 255) / 256;
		if (gr > 65535)
			gr = 65535;
		cuda_launch(c, rope2_kernel, dim3((unsigned)gr), dim3(256), 0,
			    "rope", last.x, last.stride, last.n_heads, x,
			    stride, n_heads, n, head_dim, pos0, inv_freq,
			    layout);
		return;
	}
	int64_t total = (int64_t)n * n_heads * (head_dim / 2);
	int64_t gr = (total + 255) / 256;
	if (gr > 65535)
		gr = 65535;
	cuda_launch(c, rope_kernel, dim3((unsigned)gr), dim3(256), 0, "rope",
		    x, n, stride, n_heads, head_dim, pos0, pos, inv_freq,
		    layout);
	if (g->on && !pos) {
		last.idx = g->rec.size() - 1;
		last.x = x;
		last.n = n;
		last.stride = stride;
		last.n_heads = n_heads;
		last.head_dim = head_dim;
		last.pos0 = pos0;
		last.inv_freq = inv_freq;
		last.layout = layout;
	}
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
