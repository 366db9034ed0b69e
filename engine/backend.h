/*
 * backend.h - the seam between the model's math and the hardware.
 *
 * forward() in model.c is written once against this small table of
 * operations; the CPU backend (cpu.c) implements it in portable C plus SIMD
 * kernels, and the CUDA backend (cuda/, a separately built shared object
 * loaded with dlopen) implements it with cuBLAS and its own kernels.
 *
 * Memory model: every float pointer passed to an op is "device memory" of
 * that backend, obtained from ops->alloc (plain host memory on the CPU, GPU
 * memory on CUDA). Pointer arithmetic inside such a buffer is allowed, so
 * forward() may write K/V straight into a row of the cache. Weights are
 * Tensors whose ->data is the host mmap and ->dev what upload() made.
 * Only the explicit copy ops move data between host and device.
 *
 * Ordering: ops may be asynchronous (queued on one stream); they execute in
 * call order. sync() waits for all of them and reports the first error.
 * An op never fails silently: a backend records its first error and sync()
 * returns it, so the caller checks once per forward pass.
 *
 * Shapes: activations are row-major [n][width] f32, one row per token.
 */
#ifndef INFERD_BACKEND_H
#define INFERD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

#define BACKEND_ABI_VERSION 6 /* bump when BackendOps changes layout */

typedef struct Backend Backend;

/* RoPE pair layouts: which two elements of a head rotate together. */
enum {
	ROPE_HALF = 0,        /* HF rotate-half: (i, i + head_dim/2) */
	ROPE_INTERLEAVED = 1, /* GGUF / Meta original: (2i, 2i + 1) */
};

typedef struct BackendOps {
	const char *name; /* "cpu", "cuda" */

	/* Free the backend and everything it allocated. */
	void (*destroy)(Backend *b);

	/* Human description for status output ("CPU, 2 threads, AVX2";
	 * "NVIDIA H100 80GB HBM3, 79.1 GiB"). Owned by the backend. */
	const char *(*describe)(Backend *b);

	/* Device memory: total and currently free bytes (CPU: physical RAM). */
	void (*memory)(Backend *b, uint64_t *total, uint64_t *free_bytes);

	/* Zero-filled device buffer, or NULL when out of memory. */
	void *(*alloc)(Backend *b, size_t bytes);
	void (*free)(Backend *b, void *p);

	/* Make t usable by the math ops (copy to the device; CPU: no-op).
	 * Returns 0 or -1 with a message (e.g. out of device memory). */
	int (*upload)(Backend *b, Tensor *t, char *err, size_t errlen);
	/* Drop what upload() made; t->dev becomes NULL. */
	void (*release)(Backend *b, Tensor *t);

	/* Copies between host and device memory (queued in order). */
	void (*to_host)(Backend *b, void *dst_host, const void *src_dev,
			size_t bytes);
	void (*to_dev)(Backend *b, void *dst_dev, const void *src_host,
		       size_t bytes);

	/* Wait for all queued work. 0, or -1 with the first error since the
	 * last sync (an error a backend cannot recover from, such as a CUDA
	 * illegal address, also sets *fatal when fatal is non-NULL). */
	int (*sync)(Backend *b, int *fatal, char *err, size_t errlen);

	/* out[i][:] = row ids[i] of table, as f32. ids are host memory. */
	void (*embed)(Backend *b, float *out, const Tensor *table,
		      const int32_t *ids, int n);

	/* out[i] = x[i] / rms(x[i]) * w, for n rows of dim; out may be x. */
	void (*rmsnorm)(Backend *b, float *out, const float *x,
			const Tensor *w, int n, int dim, float eps);

	/* out[n][w->rows] = x[n][w->cols] . w^T  (+ bias[w->rows] when bias
	 * is non-NULL; bias is an F32 vector tensor). n = 1 is the decode
	 * mat-vec; n > 1 the prefill mat-mat. out never aliases x. */
	void (*matmul)(Backend *b, float *out, const float *x, const Tensor *w,
		       const Tensor *bias, int n);

	/* Rotate n rows of n_heads heads of head_dim in place; row i is at
	 * position pos0 + i. inv_freq: device buffer of head_dim/2 inverse
	 * frequencies (scaling already applied). stride: floats between rows
	 * (rows may be rows of the KV cache). */
	void (*rope)(Backend *b, float *x, int n, int stride, int n_heads,
		     int head_dim, int pos0, const float *inv_freq, int layout);

	/* Causal grouped-query attention for n query rows at positions
	 * pos0..pos0+n-1 over cache rows 0..pos0+n-1 (already holding this
	 * step's K and V). q: [n][n_heads*head_dim]; kc, vc: [ctx][kv_dim]
	 * with kv_dim = n_kv_heads*head_dim; out: [n][n_heads*head_dim].
	 * Query head h reads KV head h / (n_heads / n_kv_heads). Scale is
	 * 1/sqrt(head_dim). */
	void (*attention)(Backend *b, float *out, const float *q,
			  const float *kc, const float *vc, int n, int pos0,
			  int n_heads, int n_kv_heads, int head_dim);

	/* gate[i] = silu(gate[i]) * up[i] for count elements. */
	void (*swiglu)(Backend *b, float *gate, const float *up, size_t count);

	/* x[i] += y[i] for count elements. */
	void (*add)(Backend *b, float *x, const float *y, size_t count);

	/* Optional (NULL when absent): index of the largest of n device
	 * floats, returned to the host (waits for the queue). */
	int32_t (*argmax)(Backend *b, const float *x, int n);

	/* ---- paged KV cache (batch.c). Optional: a backend without them
	 * runs one sequence at a time through the ops above (CUDA withholds
	 * them with INFERD_CUDA_PAGED=0). ----
	 * A pool holds KV rows ("slots") of many sequences: kc, vc are
	 * [n_slots][kv_dim] for one layer. A sequence's positions map to
	 * slots through its block table: position p lives in slot
	 * table[p / block_size] * block_size + p % block_size. */

	/* kc[slots[i]][:] = k[i][:] and vc[slots[i]][:] = v[i][:] for n rows
	 * of kv_dim floats. slots: device int32 [n]. */
	void (*kv_store)(Backend *b, float *kc, float *vc, const float *k,
			 const float *v, const int32_t *slots, int n,
			 int kv_dim);

	/* Causal GQA attention (as attention above) for n query rows that
	 * may belong to different sequences: row i sits at position pos[i]
	 * and attends to its sequence's positions 0..pos[i], whose block
	 * table starts at tables + tab[i]. pos, tab, tables: device int32.
	 * On the CPU the arithmetic per row and head equals attention()'s,
	 * so a sequence gets the same numbers batched or alone. */
	void (*attention_paged)(Backend *b, float *out, const float *q,
				const float *kc, const float *vc,
				const int32_t *pos, const int32_t *tab,
				const int32_t *tables, int block_size, int n,
				int n_heads, int n_kv_heads, int head_dim);

	/* rope() for n rows of different sequences: row i sits at position
	 * pos[i] (device int32 [n]), with rope()'s arithmetic per row. One
	 * call per layer instead of one per sequence: a batch of 64 decode
	 * rows would otherwise cost 128 launches a layer on a GPU. */
	void (*rope_rows)(Backend *b, float *x, int n, int stride,
			  int n_heads, int head_dim, const int32_t *pos,
			  const float *inv_freq, int layout);

	/* Optional (NULL when absent): the ops between step_begin and
	 * step_end are one batched step whose launches depend on rows
	 * alone - the same device buffers and shapes whenever rows is the
	 * same, no host memory read in between - so a backend may record
	 * them once and replay the recording (CUDA: a graph per row count,
	 * cuBLAS included, instead of ~700 launches a step). */
	void (*step_begin)(Backend *b, int rows);
	void (*step_end)(Backend *b);

	/* Optional: out[i] = argmax() of row i of x [n][cols] for n rows
	 * (lowest index on ties, NaN never wins), into device int32 [n]:
	 * greedy rows of a batch then need 4 bytes back, not a row of
	 * logits each. */
	void (*argmax_rows)(Backend *b, int32_t *out, const float *x, int n,
			    int cols);

	/* Optional: the k (<= TOPK_MAX) largest of each row of x [n][cols],
	 * best first in the sampler's candidate order (larger value, lower
	 * index on ties; NaN last), into device vals [n][k] and ids [n][k]:
	 * a sampled row then needs k pairs back, not its logits. */
	void (*topk_rows)(Backend *b, float *vals, int32_t *ids,
			  const float *x, int n, int cols, int k);

	/* Optional (NULL: matmul into tmp, then add): the residual step
	 * x[n][w->rows] += in[n][w->cols] . w^T, after the attention
	 * output and the FFN down projections. tmp [n][w->rows] is scratch
	 * the backend may use; its contents are undefined after. A GPU folds
	 * the add into the GEMM (beta = 1) instead of a pass over x and tmp. */
	void (*matmul_add)(Backend *b, float *x, float *tmp, const float *in,
			   const Tensor *w, int n);

	/* Optional (NULL: attention_paged serves these rows too): causal
	 * GQA attention for n rows of one sequence at the consecutive
	 * positions pos0 .. pos0+n-1, over its positions 0 .. pos0+n-1
	 * (K/V already stored) through its block table at tables + tab.
	 * batch.c sends the rows of prompt tokens here and those of
	 * generated tokens to attention_paged, so that a row takes the same
	 * path whatever else shares its step. CUDA runs it as forward()'s
	 * prefill (tensor cores, q/k/v/p rounded to f16); before it, a
	 * 1,786-token prompt through inferd prefilled at ~4k tok/s. */
	void (*attention_chunk)(Backend *b, float *out, const float *q,
				const float *kc, const float *vc,
				const int32_t *tables, int tab, int block_size,
				int n, int pos0, int n_heads, int n_kv_heads,
				int head_dim);

	/* Optional: sums[i] = the sum over j of exp((x[i][j] - max_i) /
	 * t[i]) in f64 for n rows of x [n][cols] (max_i the row's largest;
	 * t: device [n] temperatures; sums: device [n]). With topk_rows'
	 * candidates it is what a top-p or min-p draw without top-k needs
	 * (sampler_sample_top), so those logits stay on the device too. */
	void (*expsum_rows)(Backend *b, double *sums, const float *x,
			    const float *t, int n, int cols);
} BackendOps;

#define TOPK_MAX 64 /* most candidates topk_rows returns per row */

/* Every backend instance starts with this header; the rest is private. */
struct Backend {
	const BackendOps *ops; /* the table above */
	int threads;           /* CPU worker threads (CPU backend) */
};

/* Options for backend_open(). */
typedef struct BackendOptions {
	const char *name; /* "auto", "cpu" or "cuda"; NULL = "auto" */
	int threads;      /* CPU threads; <= 0 = all online cores */
	int device;       /* CUDA device index */
	int quiet;        /* 1: no notice on stderr when auto falls back */
} BackendOptions;

/* ops->sync with the message a caller passes on: "cuda backend (fatal):
 * ..." in err. 0, or -1 with *fatal set (1: the backend cannot go on). */
int backend_sync(Backend *b, int *fatal, char *err, size_t errlen);

/* Open a backend. "auto" tries CUDA and falls back to the CPU with a
 * one-line notice on stderr saying why; "cuda" fails with that reason.
 * The CUDA backend is the shared object libinferd-cuda.so, looked up in
 * $INFERD_CUDA_LIB, then beside the executable, then through dlopen's
 * search path. Returns NULL with a message in err. Caller owns the result
 * and frees it with ops->destroy. */
Backend *backend_open(const BackendOptions *opt, char *err, size_t errlen);

/* The CPU backend (always available). */
Backend *cpu_backend_create(int threads, char *err, size_t errlen);

/* Symbol the CUDA shared object exports (looked up with dlsym). abi must
 * equal BACKEND_ABI_VERSION; returns NULL with a message otherwise or when
 * no usable GPU is present. */
typedef Backend *(*cuda_backend_create_fn)(int abi, int device, char *err,
					   size_t errlen);
#define CUDA_BACKEND_SYMBOL "inferd_cuda_backend_create"

#endif
