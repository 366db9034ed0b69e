/*
 * norm.cu - RMSNorm: one block per row. For F32/F16/BF16 weights and
 * dim % 4 == 0 (every model we load) each thread holds up to 8 float4 of
 * its row in registers, so x is read once; the sum of squares is reduced
 * in f32 through warp shuffles and shared memory. Other shapes take the
 * generic kernel. In a prefill the fast kernel also writes the f16 GEMM
 * operand of its output (common.cuh: cuda_xh_reserve).
 */
#include "graph.cuh"
#include "norm.cuh"

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* Sum of v over the block (every thread gets it). */
__device__ __forceinline__ float block_sum(float v)
{
	__shared__ float part[32];
	v = warp_sum(v);
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	if (lane == 0)
		part[warp] = v;
	__syncthreads();
	if (warp == 0) {
		int nw = blockDim.x / 32;
		v = lane < nw ? part[lane] : 0.0f;
		v = warp_sum(v);
		if (lane == 0)
			part[0] = v;
	}
	__syncthreads();
	return part[0];
}

__global__ void rmsnorm_kernel(float *out, const float *x,
			       const uint8_t *w, int wtype, int dim, float eps)
{
	pdl_enter();
	const float *xr = x + (size_t)blockIdx.x * dim;
	float *orow = out + (size_t)blockIdx.x * dim;
	float ss = 0.0f;
	for (int i = threadIdx.x; i < dim; i += blockDim.x)
		ss += xr[i] * xr[i];
	float inv = rsqrtf(block_sum(ss) / (float)dim + eps);
	for (int i = threadIdx.x; i < dim; i += blockDim.x)
		orow[i] = xr[i] * inv * dq_elem(wtype, w, i);
}

/* Weights 4 .. 4i+3 of type T as floats. */
template <int T>
__device__ __forceinline__ float4 load_w4(const uint8_t *w, int i)
{
	if (T == DT_F32)
		return ((const float4 *)w)[i];
	uint2 u = ((const uint2 *)w)[i]; /* 4 halves */
	float2 a, b;
	if (T == DT_F16) {
		a = __half22float2(*(const __half2 *)&u.x);
		b = __half22float2(*(const __half2 *)&u.y);
	} else {
		a = __bfloat1622float2(*(const __nv_bfloat162 *)&u.x);
		b = __bfloat1622float2(*(const __nv_bfloat162 *)&u.y);
	}
	return make_float4(a.x, a.y, b.x, b.y);
}

/* V float4 a thread; xh: the f16 operand of out (count values), or NULL.
 * The old kernel (scalar loads, x read twice, the weight type switched
 * per element) took 6.1 us a 4,096 row in a 7B decode step. */
template <int T, int V>
__global__ void rmsnorm4_kernel(float *out, const float *x,
				const uint8_t *w, int dim, float eps,
				__half *xh, size_t count, int split)
{
	pdl_enter();
	int d4 = dim / 4;
	size_t row = (size_t)blockIdx.x * dim;
	const float4 *xr = (const float4 *)(x + row);
	float4 v[V];
	float ss = 0.0f;
#pragma unroll
	for (int k = 0; k < V; k++) {
		int i = threadIdx.x + k * blockDim.x;
		v[k] = i < d4 ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
		ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z +
		      v[k].w * v[k].w;
	}
	float inv = rsqrtf(block_sum(ss) / (float)dim + eps);
#pragma unroll
	for (int k = 0; k < V; k++) {
		int i = threadIdx.x + k * blockDim.x;
		if (i >= d4)
			break;
		float4 g = load_w4<T>(w, i);
		float4 o = make_float4(v[k].x * inv * g.x, v[k].y * inv * g.y,
				       v[k].z * inv * g.z, v[k].w * inv * g.w);
		((float4 *)(out + row))[i] = o;
		if (xh)
			xh_store4(xh, count, row + 4 * (size_t)i, o, split);
	}
}

template <int T>
static bool launch_norm4(CudaBackend *c, float *out, const float *x,
			 const uint8_t *w, int n, int dim, float eps)
{
	int d4 = dim / 4;
	int threads = d4 >= 1024 ? 1024 : ((d4 + 31) / 32) * 32;
	int v = (d4 + threads - 1) / threads;
	size_t count = (size_t)n * dim;
	/* only a prefill's rows go on to a GEMM */
	__half *xh = n > 2 ? cuda_xh_reserve(c, count) : NULL;
	int split = c->gemm_split;
	dim3 g((unsigned)n), t((unsigned)threads);
#define NORM(V)                                                               \
	cuda_launch(c, rmsnorm4_kernel<T, V>, g, t, 0, "rmsnorm", out, x, w,  \
		    dim, eps, xh, count, split)
	switch (v) {
	case 1: NORM(1); break;
	case 2: NORM(2); break;
	case 3: case 4: NORM(4); break;
	case 5: case 6: case 7: case 8: NORM(8); break;
	default: return false;
	}
#undef NORM
	if (xh)
		cuda_xh_made(c, out, count);
	return true;
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
	const uint8_t *wd = (const uint8_t *)w->dev;
	bool aligned = dim % 4 == 0 && (uintptr_t)x % 16 == 0 &&
		       (uintptr_t)out % 16 == 0 && (uintptr_t)wd % 16 == 0;
	if (aligned && w->type == DT_F32 &&
	    launch_norm4<DT_F32>(c, out, x, wd, n, dim, eps))
		return;
	if (aligned && w->type == DT_F16 &&
	    launch_norm4<DT_F16>(c, out, x, wd, n, dim, eps))
		return;
	if (aligned && w->type == DT_BF16 &&
	    launch_norm4<DT_BF16>(c, out, x, wd, n, dim, eps))
		return;
	int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
	cuda_launch(c, rmsnorm_kernel, dim3((unsigned)n), dim3(threads), 0,
		    "rmsnorm", out, x, wd, (int)w->type, dim, eps);
}
