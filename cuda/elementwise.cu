/*
 * elementwise.cu - embedding lookup, SwiGLU, residual add and argmax.
 * All memory-bound one-pass kernels over f32 activations.
 */
#include <math.h>

#include "elementwise.cuh"
#include "graph.cuh"

/* Grid for count elements at threads per block, capped: the kernels
 * below loop grid-stride over the rest. */
static unsigned grid_for(size_t count, int threads)
{
	size_t g = (count + (size_t)threads - 1) / (size_t)threads;
	if (g > 65535u * 16u)
		g = 65535u * 16u;
	return g ? (unsigned)g : 1u;
}

__global__ void embed_kernel(float *out, const uint8_t *table, int type,
			     size_t row_bytes, int64_t cols, int64_t rows,
			     const int32_t *ids, int n)
{
	pdl_enter();
	int i = blockIdx.y;
	int32_t id = ids[i];
	float *o = out + (size_t)i * (size_t)cols;
	if (id < 0 || id >= rows) { /* the engine validates; never read */
		for (int64_t k = blockIdx.x * blockDim.x + threadIdx.x;
		     k < cols; k += (int64_t)gridDim.x * blockDim.x)
			o[k] = 0.0f;
		return;
	}
	const uint8_t *row = table + (size_t)id * row_bytes;
	for (int64_t k = blockIdx.x * blockDim.x + threadIdx.x; k < cols;
	     k += (int64_t)gridDim.x * blockDim.x)
		o[k] = dq_elem(type, row, k);
}

void cuda_embed(Backend *b, float *out, const Tensor *table,
		const int32_t *ids, int n)
{
	CudaBackend *c = cb(b);
	if (n <= 0)
		return;
	if (!table->dev) {
		cuda_fail_msg(c, "embed: %s not uploaded",
			      table->name ? table->name : "table");
		return;
	}
	const int32_t *dids;
	if (n == 1 && c->graph->enabled) {
		/* One token starts a decode step: record it (graph.cuh). The
		 * id goes through pinned memory the kernel reads directly,
		 * once the previous graph is done with it. */
		cuda_graph_begin(c);
		if (cuda_fail(c, cudaEventSynchronize(c->graph_done),
			      "embed"))
			return;
		c->ids_host[0] = ids[0];
		dids = c->ids_host;
	} else {
		cuda_flush(c);
		if (cuda_grow(c, (void **)&c->ids, &c->ids_cap,
			      (size_t)n * sizeof(int32_t), "embed ids"))
			return;
		if (cuda_fail(c,
			      cudaMemcpyAsync(c->ids, ids,
					      (size_t)n * sizeof(int32_t),
					      cudaMemcpyHostToDevice,
					      c->stream),
			      "embed ids"))
			return;
		dids = c->ids;
	}
	size_t row_bytes = dtype_row_bytes(table->type, table->cols);
	unsigned gx = (unsigned)((table->cols + 255) / 256);
	if (gx > 64)
		gx = 64;
	cuda_launch(c, embed_kernel, dim3(gx, (unsigned)n), dim3(256), 0,
		    "embed", out, (const uint8_t *)table->dev,
		    (int)table->type, row_bytes, (int64_t)table->cols,
		    (int64_t)table->rows, dids, n);
}

__device__ __forceinline__ float silu_mul(float g, float u)
{
	return g / (1.0f + expf(-g)) * u;
}

/* xh: the f16 operand of the result for the down GEMM, or NULL. With
 * vec (count % 4 == 0, 16-byte aligned) a thread takes a float4. */
__global__ void swiglu_kernel(float *gate, const float *up, size_t count,
			      __half *xh, int split, int vec)
{
	pdl_enter();
	size_t step = (size_t)gridDim.x * blockDim.x;
	size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	if (vec) {
		for (; 4 * i < count; i += step) {
			float4 g = ((const float4 *)gate)[i];
			float4 u = ((const float4 *)up)[i];
			float4 r = make_float4(silu_mul(g.x, u.x),
					       silu_mul(g.y, u.y),
					       silu_mul(g.z, u.z),
					       silu_mul(g.w, u.w));
			((float4 *)gate)[i] = r;
			if (xh)
				xh_store4(xh, count, 4 * i, r, split);
		}
		return;
	}
	for (; i < count; i += step) {
		float r = silu_mul(gate[i], up[i]);
		gate[i] = r;
		if (xh)
			xh_store(xh, count, i, r, split);
	}
}

void cuda_swiglu(Backend *b, float *gate, const float *up, size_t count)
{
	CudaBackend *c = cb(b);
	if (!count)
		return;
	/* into one launch with the gate and up mat-vecs still waiting, or
	 * else into the epilogue of the up (or gate) one just recorded */
	if (cuda_mv_pair_swiglu(c, gate, up, count) ||
	    cuda_fuse_last(c, up, count, EPI_SWIGLU_GATE, gate) ||
	    cuda_fuse_last(c, gate, count, EPI_SWIGLU_UP, (float *)up))
		return;
	__half *xh = cuda_xh_reserve(c, count);
	int vec = count % 4 == 0 && (uintptr_t)gate % 16 == 0 &&
		  (uintptr_t)up % 16 == 0;
	cuda_launch(c, swiglu_kernel,
		    dim3(grid_for(vec ? count / 4 : count, 256)), dim3(256), 0,
		    "swiglu", gate, up, count, xh, c->gemm_split, vec);
	if (xh)
		cuda_xh_made(c, gate, count);
}

__global__ void add_kernel(float *x, const float *y, size_t count)
{
	pdl_enter();
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	     i < count; i += (size_t)gridDim.x * blockDim.x)
		x[i] += y[i];
}

void cuda_add(Backend *b, float *x, const float *y, size_t count)
{
	CudaBackend *c = cb(b);
	if (!count)
		return;
	/* into the epilogue of the mat-vec that just produced y */
	if (cuda_fuse_last(c, y, count, EPI_ADD, x))
		return;
	cuda_launch(c, add_kernel, dim3(grid_for(count, 256)), dim3(256), 0,
		    "add", x, y, count);
}

/* One block: each thread keeps its best (value, lowest index), then a
 * shared-memory tree picks the overall best; ties go to the lower index
 * like the CPU backend. NaN never wins. */
__global__ void argmax_kernel(const float *x, int n, int32_t *result,
			      size_t stride)
{
	pdl_enter();
	x += blockIdx.x * stride; /* argmax_rows: a block per row */
	result += blockIdx.x;
	__shared__ float sv[1024];
	__shared__ int si[1024];
	float best = -INFINITY;
	int bi = -1;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float v = x[i];
		if (v > best || (bi < 0 && !isnan(v))) {
			best = v;
			bi = i;
		}
	}
	sv[threadIdx.x] = best;
	si[threadIdx.x] = bi;
	__syncthreads();
	for (int s = blockDim.x / 2; s > 0; s >>= 1) {
		if ((int)threadIdx.x < s) {
			float v = sv[threadIdx.x + s];
			int j = si[threadIdx.x + s];
			int k = si[threadIdx.x];
			if (j >= 0 &&
			    (k < 0 || v > sv[threadIdx.x] ||
			     (v == sv[threadIdx.x] && j < k))) {
				sv[threadIdx.x] = v;
				si[threadIdx.x] = j;
			}
		}
		__syncthreads();
	}
	if (threadIdx.x == 0)
		*result = si[0] < 0 ? 0 : si[0];
}

int32_t cuda_argmax(Backend *b, const float *x, int n)
{
	CudaBackend *c = cb(b);
	if (n <= 0)
		return 0;
	cuda_launch(c, argmax_kernel, dim3(1), dim3(1024), 0, "argmax", x, n,
		    c->result, (size_t)0);
	cuda_flush(c);
	if (c->has_err)
		return 0;
	if (cuda_fail(c,
		      cudaMemcpyAsync(c->result_host, c->result,
				      sizeof(int32_t), cudaMemcpyDeviceToHost,
				      c->stream),
		      "argmax"))
		return 0;
	if (cuda_fail(c, cudaStreamSynchronize(c->stream), "argmax"))
		return 0;
	return *c->result_host;
}

void cuda_argmax_rows(Backend *b, int32_t *out, const float *x, int n,
		      int cols)
{
	CudaBackend *c = cb(b);
	if (n <= 0 || cols <= 0 || n > 65535) {
		cuda_fail_msg(c, "argmax_rows: bad shape %d x %d", n, cols);
		return;
	}
	cuda_launch(c, argmax_kernel, dim3((unsigned)n), dim3(1024), 0,
		    "argmax_rows", x, cols, out, (size_t)cols);
}

/* ---- top-k per row ----
 * A block per row finds the k-th largest value by radix select on
 * order-preserving 32-bit keys (4 passes of 8 bits over the row, a
 * 256-bin histogram each), then gathers the keys above it and, of those
 * equal to it, the lowest indices (threads own contiguous index ranges, so
 * a prefix sum over their tie counts ranks ties by index), and sorts the k
 * pairs in shared memory. */
#define TK_THREADS 1024

__device__ __forceinline__ uint32_t tk_key(float v)
{
	uint32_t u = __float_as_uint(v);
	if (isnan(v))
		return 0; /* below every number */
	if (v == 0.0f)
		return 0x80000000u; /* -0 ties with +0, as float compares */
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(TK_THREADS)
	topk_kernel(float *vals, int32_t *ids, const float *x, int cols, int k)
{
	pdl_enter();
	__shared__ uint32_t hist[256];
	__shared__ uint32_t sel[2];     /* prefix found so far, k left */
	__shared__ int ties[TK_THREADS]; /* per-thread tie counts, then ranks */
	__shared__ float sv[TOPK_MAX];
	__shared__ int si[TOPK_MAX];
	__shared__ int n_above;
	const float *row = x + (size_t)blockIdx.x * cols;
	int t = threadIdx.x;
	if (t == 0) {
		sel[0] = 0;
		sel[1] = (uint32_t)k;
		n_above = 0;
	}
	/* radix select: after pass p the top 8(p+1) bits of the k-th key */
	for (int pass = 0; pass < 4; pass++) {
		int shift = 24 - 8 * pass;
		uint32_t hmask = pass ? 0xffffffffu << (shift + 8) : 0;
		for (int b = t; b < 256; b += blockDim.x)
			hist[b] = 0;
		__syncthreads();
		uint32_t prefix = sel[0];
		for (int i = t; i < cols; i += blockDim.x) {
			uint32_t key = tk_key(row[i]);
			if ((key & hmask) == prefix)
				atomicAdd(&hist[(key >> shift) & 255u], 1u);
		}
		__syncthreads();
		if (t == 0) {
			uint32_t left = sel[1];
			int d = 255;
			for (; d > 0; d--) {
				if (hist[d] >= left)
					break;
				left -= hist[d];
			}
			sel[0] = prefix | ((uint32_t)d << shift);
			sel[1] = left; /* how many equal to the k-th key we take */
		}
		__syncthreads();
	}
	uint32_t kth = sel[0];
	int take_eq = (int)sel[1];
	/* contiguous index ranges per thread, so ties rank by index */
	int per = (cols + blockDim.x - 1) / blockDim.x;
	int i0 = t * per, i1 = min(cols, i0 + per);
	int eq = 0;
	for (int i = i0; i < i1; i++)
		eq += tk_key(row[i]) == kth;
	ties[t] = eq;
	__syncthreads();
	if (t == 0) { /* exclusive prefix sum (1024 entries: cheap) */
		int acc = 0;
		for (int j = 0; j < (int)blockDim.x; j++) {
			int v = ties[j];
			ties[j] = acc;
			acc += v;
		}
	}
	__syncthreads();
	int rank = ties[t];
	for (int i = i0; i < i1; i++) {
		float v = row[i];
		uint32_t key = tk_key(v);
		int slot = -1;
		if (key > kth)
			slot = atomicAdd(&n_above, 1);
		else if (key == kth && rank++ < take_eq)
			slot = k - take_eq + (rank - 1);
		if (slot >= 0 && slot < k) {
			sv[slot] = v;
			si[slot] = i;
		}
	}
	__syncthreads();
	if (t == 0) { /* insertion sort of k <= 64 pairs: candidate order */
		for (int a = 1; a < k; a++) {
			float v = sv[a];
			int id = si[a];
			uint32_t kv = tk_key(v);
			int b = a - 1;
			while (b >= 0 && (tk_key(sv[b]) < kv ||
					  (tk_key(sv[b]) == kv && si[b] > id))) {
				sv[b + 1] = sv[b];
				si[b + 1] = si[b];
				b--;
			}
			sv[b + 1] = v;
			si[b + 1] = id;
		}
	}
	__syncthreads();
	for (int j = t; j < k; j += blockDim.x) {
		vals[(size_t)blockIdx.x * k + j] = sv[j];
		ids[(size_t)blockIdx.x * k + j] = si[j];
	}
}

void cuda_topk_rows(Backend *b, float *vals, int32_t *ids, const float *x,
		    int n, int cols, int k)
{
	CudaBackend *c = cb(b);
	if (n <= 0 || n > 65535 || k <= 0 || k > TOPK_MAX || cols < k) {
		cuda_fail_msg(c, "topk_rows: bad shape %d x %d, k %d", n, cols,
			      k);
		return;
	}
	cuda_launch(c, topk_kernel, dim3((unsigned)n), dim3(TK_THREADS), 0,
		    "topk_rows", vals, ids, x, cols, k);
}

/* sums[i] = sum over j of exp(((double)x[i][j] - max_i) / t[i]), a block
 * per row, in f64 as the host sampler sums (probs() in sampler.c); max_i
 * by fmaxf, so a NaN logit never is the max but still makes the sum NaN
 * (the caller then takes the logits to the host). */
#define ES_THREADS 256
__global__ void expsum_kernel(double *sums, const float *x, const float *t,
			      int cols)
{
	pdl_enter();
	__shared__ float smx[ES_THREADS / 32];
	__shared__ double ssum[ES_THREADS / 32];
	const float *r = x + (size_t)blockIdx.x * cols;
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	float m = -INFINITY;
	for (int j = threadIdx.x; j < cols; j += blockDim.x)
		m = fmaxf(m, r[j]);
	for (int o = 16; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	if (lane == 0)
		smx[warp] = m;
	__syncthreads();
	m = smx[0];
	for (int w = 1; w < ES_THREADS / 32; w++)
		m = fmaxf(m, smx[w]);
	double temp = (double)t[blockIdx.x], s = 0.0;
	for (int j = threadIdx.x; j < cols; j += blockDim.x)
		s += exp(((double)r[j] - (double)m) / temp);
	for (int o = 16; o > 0; o >>= 1)
		s += __shfl_xor_sync(0xffffffffu, s, o);
	if (lane == 0)
		ssum[warp] = s;
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int w = 1; w < ES_THREADS / 32; w++)
			s += ssum[w];
		sums[blockIdx.x] = s;
	}
}

void cuda_expsum_rows(Backend *b, double *sums, const float *x,
		      const float *t, int n, int cols)
{
	CudaBackend *c = cb(b);
	if (n <= 0 || n > 65535 || cols <= 0) {
		cuda_fail_msg(c, "expsum_rows: bad shape %d x %d", n, cols);
		return;
	}
	cuda_launch(c, expsum_kernel, dim3((unsigned)n), dim3(ES_THREADS), 0,
		    "expsum_rows", sums, x, t, cols);
}
