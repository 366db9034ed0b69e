/*
 * backend.cu - the CUDA backend's life cycle and memory: create/destroy,
 * describe, memory accounting, buffers, weight upload, copies and sync,
 * and the ops table the engine receives through dlopen.
 *
 * All work goes on one stream, so ops run in call order without events.
 * Every CUDA call is checked; the first failure is kept until sync().
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <new>

#include "attention.cuh"
#include "common.cuh"
#include "elementwise.cuh"
#include "graph.cuh"
#include "matmul.cuh"
#include "norm.cuh"
#include "paged.cuh"
#include "rope.cuh"

/* Errors after which the context cannot be used again (CUDA docs: "the
 * process must be terminated and relaunched"). */
static int is_sticky(cudaError_t e)
{
	switch (e) {
	case cudaErrorIllegalAddress:
	case cudaErrorLaunchFailure:
	case cudaErrorHardwareStackError:
	case cudaErrorIllegalInstruction:
	case cudaErrorMisalignedAddress:
	case cudaErrorInvalidAddressSpace:
	case cudaErrorInvalidPc:
	case cudaErrorECCUncorrectable:
	case cudaErrorAssert:
	case cudaErrorLaunchTimeout:
	case cudaErrorUnknown:
		return 1;
	default:
		return 0;
	}
}

int cuda_fail(CudaBackend *c, cudaError_t e, const char *what)
{
	if (e == cudaSuccess)
		return 0;
	if (is_sticky(e))
		c->fatal = 1;
	if (!c->has_err) {
		snprintf(c->err, sizeof c->err, "cuda: %s: %s%s", what,
			 cudaGetErrorString(e),
			 is_sticky(e) ? " (fatal: context lost)" : "");
		c->has_err = 1;
	}
	return 1;
}

void cuda_fail_msg(CudaBackend *c, const char *fmt, ...)
{
	if (c->has_err)
		return;
	va_list ap;
	va_start(ap, fmt);
	int k = snprintf(c->err, sizeof c->err, "cuda: ");
	vsnprintf(c->err + k, sizeof c->err - (size_t)k, fmt, ap);
	va_end(ap);
	c->has_err = 1;
}

int cuda_grow(CudaBackend *c, void **p, size_t *cap, size_t bytes,
	      const char *what)
{
	if (*cap >= bytes)
		return 0;
	if (*p) {
		/* cudaFree waits for queued work that may still use it. */
		if (cuda_fail(c, cudaFree(*p), what))
			return -1;
		*p = NULL;
		*cap = 0;
	}
	size_t want = bytes + bytes / 4; /* headroom: sizes creep up */
	c->buf_gen++;
	cudaError_t e = cudaMalloc(p, want);
	if (e != cudaSuccess) {
		*p = NULL;
		cudaGetLastError(); /* out of memory is not sticky */
		size_t fr = 0, tot = 0;
		cudaMemGetInfo(&fr, &tot);
		cuda_fail_msg(c,
			      "%s: out of device memory (%.1f MiB wanted, "
			      "%.1f MiB free)",
			      what, want / 1048576.0, fr / 1048576.0);
		return -1;
	}
	*cap = want;
	return 0;
}

static void c_destroy(Backend *b)
{
	CudaBackend *c = cb(b);
	if (!c)
		return;
	cudaSetDevice(c->device);
	if (c->graph) {
		cuda_flush(c);
		if (c->stream)
			cudaStreamSynchronize(c->stream);
		cuda_graph_destroy(c);
		cuda_steps_destroy(c);
		delete c->graph;
	}
	if (c->stream)
		cudaStreamSynchronize(c->stream);
	if (c->graph_done)
		cudaEventDestroy(c->graph_done);
	if (c->ids_host)
		cudaFreeHost(c->ids_host);
	cudaFree(c->scratch);
	cudaFree(c->part);
	cudaFree(c->dec_done);
	cudaFree(c->xq);
	cudaFree(c->xh);
	cudaFree(c->ids);
	cudaFree(c->result);
	if (c->result_host)
		cudaFreeHost(c->result_host);
	if (c->cublas)
		cublasDestroy(c->cublas);
	if (c->stream)
		cudaStreamDestroy(c->stream);
	free(c);
}

static const char *c_describe(Backend *b)
{
	return cb(b)->desc;
}

static void c_memory(Backend *b, uint64_t *total, uint64_t *free_bytes)
{
	(void)b;
	size_t fr = 0, tot = 0;
	if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
		cudaGetLastError();
		fr = tot = 0;
	}
	if (total)
		*total = tot;
	if (free_bytes)
		*free_bytes = fr;
}

static void *c_alloc(Backend *b, size_t bytes)
{
	CudaBackend *c = cb(b);
	void *p = NULL;
	cuda_flush(c);
	cuda_x_stale(c); /* p may reuse the address of a freed x */
	if (bytes == 0)
		bytes = 1;
	if (cudaMalloc(&p, bytes) != cudaSuccess) {
		cudaGetLastError(); /* OOM is the caller's to report */
		return NULL;
	}
	/* Zero-filled per backend.h; queued so it orders with later ops. */
	if (cuda_fail(c, cudaMemsetAsync(p, 0, bytes, c->stream), "alloc")) {
		cudaFree(p);
		return NULL;
	}
	return p;
}

static void c_free(Backend *b, void *p)
{
	cuda_flush(cb(b));
	cuda_x_stale(cb(b));
	if (p)
		cuda_fail(cb(b), cudaFree(p), "free");
}

static int c_upload(Backend *b, Tensor *t, char *err, size_t errlen)
{
	CudaBackend *c = cb(b);
	cuda_flush(c);
	if (t->dev)
		return 0;
	if (!t->data || t->nbytes == 0) {
		snprintf(err, errlen, "cuda: upload of %s: no data",
			 t->name ? t->name : "?");
		return -1;
	}
	void *p = NULL;
	cudaError_t e = cudaMalloc(&p, t->nbytes);
	if (e != cudaSuccess) {
		cudaGetLastError();
		size_t fr = 0, tot = 0;
		cudaMemGetInfo(&fr, &tot);
		snprintf(err, errlen,
			 "cuda: out of device memory uploading %s: needs "
			 "%.1f MiB, %.1f MiB free of %.1f MiB",
			 t->name ? t->name : "?", t->nbytes / 1048576.0,
			 fr / 1048576.0, tot / 1048576.0);
		return -1;
	}
	/* Synchronous from the (pageable) mmap: upload happens once. */
	e = cudaMemcpy(p, t->data, t->nbytes, cudaMemcpyHostToDevice);
	if (e != cudaSuccess) {
		if (is_sticky(e))
			c->fatal = 1;
		snprintf(err, errlen, "cuda: upload of %s: %s",
			 t->name ? t->name : "?", cudaGetErrorString(e));
		cudaFree(p);
		return -1;
	}
	t->dev = p;
	return 0;
}

static void c_release(Backend *b, Tensor *t)
{
	cuda_flush(cb(b));
	cuda_x_stale(cb(b));
	if (t->dev) {
		cuda_fail(cb(b), cudaFree(t->dev), "release");
		t->dev = NULL;
	}
}

static void c_to_host(Backend *b, void *dst, const void *src, size_t bytes)
{
	CudaBackend *c = cb(b);
	cuda_flush(c);
	/* Host memory is pageable, so the copy must finish before the
	 * caller reads dst: make it synchronous with the stream. */
	cuda_fail(c,
		  cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost,
				  c->stream),
		  "copy to host");
	cuda_fail(c, cudaStreamSynchronize(c->stream), "copy to host");
}

static void c_to_dev(Backend *b, void *dst, const void *src, size_t bytes)
{
	CudaBackend *c = cb(b);
	cuda_x_stale(c);
	cuda_flush(c);
	/* From pageable memory the runtime stages the data before
	 * returning, so src may be reused at once. */
	cuda_fail(c,
		  cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice,
				  c->stream),
		  "copy to device");
}

static int c_sync(Backend *b, int *fatal, char *err, size_t errlen)
{
	CudaBackend *c = cb(b);
	cuda_flush(c);
	cuda_fail(c, cudaStreamSynchronize(c->stream), "sync");
	if (fatal)
		*fatal = c->fatal;
	if (!c->has_err)
		return 0;
	snprintf(err, errlen, "%s", c->err);
	c->has_err = 0;
	return -1;
}

static const BackendOps cuda_ops = {
	"cuda",        c_destroy,      c_describe,   c_memory,
	c_alloc,       c_free,         c_upload,     c_release,
	c_to_host,     c_to_dev,       c_sync,       cuda_embed,
	cuda_rmsnorm,  cuda_matmul,    cuda_rope,    cuda_attention,
	cuda_swiglu,   cuda_add,       cuda_argmax,
	cuda_kv_store, cuda_attention_paged, cuda_rope_rows, cuda_step_begin,
	cuda_step_end, cuda_argmax_rows, cuda_topk_rows, cuda_matmul_add,
	cuda_attention_chunk, cuda_expsum_rows,
};

extern "C" __attribute__((visibility("default"))) Backend *
inferd_cuda_backend_create(int abi, int device, char *err, size_t errlen)
{
	if (abi != BACKEND_ABI_VERSION) {
		snprintf(err, errlen,
			 "cuda: backend ABI %d, engine ABI %d: rebuild "
			 "libinferd-cuda.so",
			 BACKEND_ABI_VERSION, abi);
		return NULL;
	}
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess || count == 0) {
		snprintf(err, errlen, "cuda: no usable GPU (%s)",
			 e != cudaSuccess ? cudaGetErrorString(e)
					  : "no device");
		cudaGetLastError();
		return NULL;
	}
	if (device < 0 || device >= count) {
		snprintf(err, errlen, "cuda: device %d out of range (%d found)",
			 device, count);
		return NULL;
	}
	CudaBackend *c = (CudaBackend *)calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "cuda: out of host memory");
		return NULL;
	}
	{
		/* INFERD_CUDA_PAGED=0: the table without the ops batching needs,
		 * so the daemon runs one generate at a time (for comparison) */
		const char *pg = getenv("INFERD_CUDA_PAGED");
		c->ops = cuda_ops;
		if (pg && pg[0] == '0') {
			c->ops.kv_store = NULL;
			c->ops.attention_paged = NULL;
			c->ops.attention_chunk = NULL;
			c->ops.rope_rows = NULL;
			c->ops.step_begin = NULL;
			c->ops.step_end = NULL;
			c->ops.argmax_rows = NULL;
			c->ops.topk_rows = NULL;
			c->ops.expsum_rows = NULL;
		}
		c->base.ops = &c->ops;
	}
	c->device = device;
	c->rope_last.idx = (size_t)-1;
	c->graph = new (std::nothrow) GraphState();
	if (!c->graph) {
		free(c);
		snprintf(err, errlen, "cuda: out of host memory");
		return NULL;
	}
	{
		const char *g = getenv("INFERD_CUDA_GRAPHS");
		c->graph->enabled = !(g && !strcmp(g, "0"));
		g = getenv("INFERD_CUDA_FUSE");
		c->graph->fuse = !(g && !strcmp(g, "0"));
		g = getenv("INFERD_CUDA_STEP_GRAPHS");
		c->graph->step_enabled = !(g && !strcmp(g, "0"));
		g = getenv("INFERD_CUDA_GRAPH_PARTS");
		c->graph->split = !(g && !strcmp(g, "0"));
		g = getenv("INFERD_CUDA_PDL");
		c->graph->pdl = !(g && !strcmp(g, "0"));
	}
	cudaDeviceProp prop;
	const char *step = "cudaSetDevice";
	if ((e = cudaSetDevice(device)) != cudaSuccess)
		goto fail;
	step = "cudaGetDeviceProperties";
	if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
		goto fail;
	if (prop.major < 7) {
		snprintf(err, errlen,
			 "cuda: %s has compute capability %d.%d; need 7.0+",
			 prop.name, prop.major, prop.minor);
		free(c);
		return NULL;
	}
	c->sm_count = prop.multiProcessorCount;
	{
		const char *g = getenv("INFERD_CUDA_GEMM");
		c->gemm_split = !(g && !strcmp(g, "f16"));
		g = getenv("INFERD_CUDA_MV_ROWS");
		c->mv_rows = g ? atoi(g) : 0;
		g = getenv("INFERD_CUDA_MV");
		c->mv_old = g && !strcmp(g, "old");
		c->mv_warp = g && !strcmp(g, "warp");
		g = getenv("INFERD_CUDA_ATT");
		c->att_simt = g && !strcmp(g, "simt");
	}
	snprintf(c->desc, sizeof c->desc, "%.200s, %.1f GiB, sm_%d%d, %d SMs",
		 prop.name, prop.totalGlobalMem / 1073741824.0, prop.major,
		 prop.minor, prop.multiProcessorCount);
	step = "cudaStreamCreate";
	if ((e = cudaStreamCreateWithFlags(&c->stream,
					   cudaStreamNonBlocking)) !=
	    cudaSuccess)
		goto fail;
	step = "cudaMalloc";
	if ((e = cudaMalloc((void **)&c->result, sizeof(int32_t))) !=
	    cudaSuccess)
		goto fail;
	step = "cudaMallocHost";
	if ((e = cudaMallocHost((void **)&c->result_host, sizeof(int32_t))) !=
	    cudaSuccess)
		goto fail;
	if ((e = cudaMallocHost((void **)&c->ids_host, 64 * sizeof(int32_t))) !=
	    cudaSuccess)
		goto fail;
	step = "cudaEventCreate";
	if ((e = cudaEventCreateWithFlags(&c->graph_done,
					  cudaEventDisableTiming)) !=
	    cudaSuccess)
		goto fail;
	{
		cublasStatus_t s = cublasCreate(&c->cublas);
		if (s == CUBLAS_STATUS_SUCCESS)
			s = cublasSetStream(c->cublas, c->stream);
		if (s != CUBLAS_STATUS_SUCCESS) {
			snprintf(err, errlen, "cuda: cuBLAS init failed: %s",
				 cublasGetStatusString(s));
			c_destroy(&c->base);
			return NULL;
		}
	}
	return &c->base;
fail:
	snprintf(err, errlen, "cuda: %s: %s", step, cudaGetErrorString(e));
	cudaGetLastError();
	c_destroy(&c->base);
	return NULL;
}
