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
	cuda_graph_cut(c); /* a layer's start: launch the step so far */
	int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
	cuda_launch(c, rmsnorm_kernel, dim3((unsigned)n), dim3(threads), 0,
		    "rmsnorm", out, x, (const uint8_t *)w->dev, (int)w->type,
		    dim, eps);
}
