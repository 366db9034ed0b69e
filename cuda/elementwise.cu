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

__global__ void swiglu_kernel(float *gate, const float *up, size_t count)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	     i < count; i += (size_t)gridDim.x * blockDim.x) {
		float g = gate[i];
		gate[i] = g / (1.0f + expf(-g)) * up[i];
	}
}

void cuda_swiglu(Backend *b, float *gate, const float *up, size_t count)
{
	CudaBackend *c = cb(b);
	if (!count)
		return;
	/* into the epilogue of the up (or gate) mat-vec just recorded */
	if (cuda_fuse_last(c, up, count, EPI_SWIGLU_GATE, gate) ||
	    cuda_fuse_last(c, gate, count, EPI_SWIGLU_UP, (float *)up))
		return;
	cuda_launch(c, swiglu_kernel, dim3(grid_for(count, 256)), dim3(256), 0,
		    "swiglu", gate, up, count);
}

__global__ void add_kernel(float *x, const float *y, size_t count)
{
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
