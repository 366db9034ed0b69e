/*
 * norm.cu - RMSNorm: one block per row, the sum of squares reduced in
 * f32 through warp shuffles, then one pass scaling by the weight.
 */
#include "graph.cuh"
#include "norm.cuh"

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__global__ void rmsnorm_kernel(float *out, const float *x,
			       const uint8_t *w, int wtype, int dim, float eps)
{
	pdl_enter();
	__shared__ float part[32];
	const float *xr = x + (size_t)blockIdx.x * dim;
	float *orow = out + (size_t)blockIdx.x * dim;
	float ss = 0.0f;
	for (int i = threadIdx.x; i < dim; i += blockDim.x)
		ss += xr[i] * xr[i];
	ss = warp_sum(ss);
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	if (lane == 0)
		part[warp] = ss;
	__syncthreads();
	if (warp == 0) {
		int nw = blockDim.x / 32;
		ss = lane < nw ? part[lane] : 0.0f;
		ss = warp_sum(ss);
		if (lane == 0)
			part[0] = ss;
	}
	__syncthreads();
	float inv = rsqrtf(part[0] / (float)dim + eps);
	for (int i = threadIdx.x; i < dim; i += blockDim.x)
		orow[i] = xr[i] * inv * dq_elem(wtype, w, i);
}

static void launch_norm(CudaBackend *c, float *out, const float *x,
			const uint8_t *w, int wtype, int n, int dim, float eps)
{
	int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
	cuda_launch(c, rmsnorm_kernel, dim3((unsigned)n), dim3(threads), 0,
		    "rmsnorm", out, x, w, wtype, dim, eps);
}

void cuda_rmsnorm(Backend *b, float *out, const float *x, const Tensor *w,
		  int n, int dim, float eps)
{
	CudaBackend *c = cb(b);
	if (n <= 0)
		return;
	if (!w->dev || w->rows * w->cols < dim || dtype_is_quant(w->type)) {
		cuda_fail_msg(c, "rmsnorm: weight %s not uploaded or unusable",
			      w->name ? w->name : "?");
		return;
	}
	GraphState *g = c->graph;
	if (g->mv.n && !g->mv_emitting)
		cuda_mv_emit(c); /* recorded before this */
	if (g->norm.on && !g->norm_emitting)
		cuda_norm_emit(c);
	/* One row of a recorded step, narrow enough for a block's shared
	 * memory: wait for the mat-vecs that read it (graph.cuh). */
	if (g->on && g->fuse && n == 1 && dim <= NORM_FUSE_MAX_DIM &&
	    (uintptr_t)x % 16 == 0 && (uintptr_t)out % 16 == 0) {
		g->norm = NormPending{1, out, x, (const uint8_t *)w->dev,
				      (int)w->type, dim, eps};
		return;
	}
	launch_norm(c, out, x, (const uint8_t *)w->dev, (int)w->type, n, dim,
		    eps);
}

void cuda_norm_emit(CudaBackend *c)
{
	GraphState *g = c->graph;
	NormPending p = g->norm;
	g->norm.on = 0;
	g->norm_emitting = 1;
	launch_norm(c, p.out, p.x, p.w, p.wtype, 1, p.dim, p.eps);
	g->norm_emitting = 0;
}
