/*
 * common.cuh - what every file of the CUDA backend shares: the backend's
 * private state (CudaBackend), error recording, launch checking and the
 * device-side readers of every weight element type.
 *
 * Error model (backend.h): an op never returns an error; the first CUDA
 * error since the last sync() is recorded here and sync() reports it. A
 * sticky error (illegal address, launch failure...) poisons the context:
 * it is recorded as fatal so the daemon exits and a supervisor restarts it.
 */
#ifndef INFERD_CUDA_COMMON_CUH
#define INFERD_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
}

struct GraphState; /* graph.cuh: decode-step recorder */

/* The backend instance; Backend must stay the first member. */
/* The last rope launch recorded (rope.cu pairs q's with k's). */
typedef struct RopeRec {
	size_t idx;            /* its index in the recording, or (size_t)-1 */
	float *x;              /* its rows ... */
	int n, stride, n_heads, head_dim, pos0; /* ... and shape */
	const float *inv_freq; /* angle table */
	int layout;            /* ROPE_* */
} RopeRec;

typedef struct CudaBackend {
	Backend base;          /* ops table header shared with the engine */
	BackendOps ops;        /* base.ops points here (a per-instance copy:
				* INFERD_CUDA_PAGED=0 clears the batch ops) */
	int device;            /* CUDA device index */
	int sm_count;          /* multiprocessors, to size split-K grids */
	cudaStream_t stream;   /* every op is queued here, in call order */
	cublasHandle_t cublas; /* bound to stream */
	char desc[256];        /* describe(): "NVIDIA H200, 139.8 GiB" */
	char err[512];         /* first error since the last sync() */
	int has_err;           /* err holds a message */
	int fatal;             /* the context is unusable (sticky error) */
	void *scratch;         /* GEMM staging: f16 activations + weights */
	size_t scratch_bytes;  /* capacity of scratch */
	float *part;           /* flash-decoding partial results */
	size_t part_bytes;     /* capacity of part */
	int *dec_done;         /* per (row, head): chunks of the running
				* flash-decode done; zero between launches */
	size_t dec_done_bytes; /* capacity of dec_done */
	int32_t *ids;          /* device copy of embed()'s token ids */
	size_t ids_cap;        /* capacity of ids, in ids */
	int32_t *result;       /* argmax() result slot (device) */
	int32_t *result_host;  /* pinned host slot argmax() reads back */
	int gemm_split;        /* prefill GEMM with hi+lo f16 activations */
	int mv_rows;           /* weight rows per warp in the mat-vec, 0 =
				* the measured default of each kernel */
	int mv_old;            /* INFERD_CUDA_MV=old: first mat-vec kernels */
	int mv_warp;           /* INFERD_CUDA_MV=warp: float mat-vecs a row
				* per warp, not the streaming kernel */
	int att_simt;          /* INFERD_CUDA_ATT=simt: f32 prefill attention
				* for every head size, no tensor cores */
	void *xq;              /* int8 x + scales for the integer mat-vec */
	size_t xq_bytes;       /* capacity of xq */
	const float *xq_src;   /* the x that xq holds, [xq_n][xq_cols] ... */
	int xq_n, xq_cols;
	int xq_ok;             /* ... valid: only its mat-vec launched since
				* (q/k/v and gate/up share one rounding) */
	__half *xh;            /* f16 x (split mode: hi, then lo) for GEMMs */
	size_t xh_bytes;       /* capacity of xh */
	const float *xh_src;   /* the x that xh holds ... */
	size_t xh_count;       /* ... as this many values (n x cols) ... */
	int xh_split;          /* ... in this gemm_split mode */
	int xh_ok;             /* ... valid: only GEMMs ran since its
				* producer (cuda_xh_reserve) */
	struct GraphState *graph; /* decode-step CUDA graph (graph.cuh) */
	RopeRec rope_last;     /* the rope a second one may join (rope.cu) */
	int32_t *ids_host;     /* pinned token ids a recorded embed reads */
	cudaEvent_t graph_done; /* after the last graph launch */
	unsigned long buf_gen; /* bumped when cuda_grow moves a buffer: a
				* recorded step holds the old addresses */
} CudaBackend;

/* The f16 x of the prefill GEMMs, written by the kernel that produces x
 * (rmsnorm, swiglu, prefill attention) as it stores the f32 result, so
 * the GEMM reads it instead of converting x again. cuda_xh_reserve()
 * gives the buffer for count values (NULL: none wanted, or no memory;
 * the kernel then writes f32 only); cuda_xh_made() after the launch says
 * that it holds src. Split mode: hi at [i], lo at [count + i]. */
__half *cuda_xh_reserve(CudaBackend *c, size_t count);
void cuda_xh_made(CudaBackend *c, const float *src, size_t count);

/* v as the f16 GEMM operand (hi and, in split mode, lo). */
__device__ __forceinline__ void xh_store(__half *xh, size_t count, size_t i,
					 float v, int split)
{
	__half h = __float2half_rn(v);
	xh[i] = h;
	if (split)
		xh[count + i] = __float2half_rn(v - __half2float(h));
}

/* Two consecutive values (i even) as one 4-byte store each. */
__device__ __forceinline__ void xh_store2(__half *xh, size_t count, size_t i,
					  float2 v, int split)
{
	__half2 h = __floats2half2_rn(v.x, v.y);
	*(__half2 *)(xh + i) = h;
	if (split) {
		float2 a = __half22float2(h);
		*(__half2 *)(xh + count + i) =
			__floats2half2_rn(v.x - a.x, v.y - a.y);
	}
}

/* Four consecutive values (i % 4 == 0): one 8-byte store for hi and one
 * for lo instead of eight 2-byte ones. */
__device__ __forceinline__ void xh_store4(__half *xh, size_t count, size_t i,
					  float4 v, int split)
{
	__half2 h0 = __floats2half2_rn(v.x, v.y), h1 = __floats2half2_rn(v.z, v.w);
	uint2 u;
	u.x = *(uint32_t *)&h0;
	u.y = *(uint32_t *)&h1;
	*(uint2 *)(xh + i) = u;
	if (!split)
		return;
	float2 a = __half22float2(h0), b = __half22float2(h1);
	h0 = __floats2half2_rn(v.x - a.x, v.y - a.y);
	h1 = __floats2half2_rn(v.z - b.x, v.w - b.y);
	u.x = *(uint32_t *)&h0;
	u.y = *(uint32_t *)&h1;
	*(uint2 *)(xh + count + i) = u;
}

/* Something may have written device memory that xq or xh were made from:
 * every kernel launch, copy, allocation, free and step boundary says so. */
static inline void cuda_x_stale(CudaBackend *c)
{
	c->xq_ok = 0;
	c->xh_ok = 0;
}

static inline CudaBackend *cb(Backend *b)
{
	return (CudaBackend *)b;
}

/* Record e (when not cudaSuccess) as the backend's error, with what was
 * being done. Returns 1 when e is an error. Defined in backend.cu. */
int cuda_fail(CudaBackend *c, cudaError_t e, const char *what);
/* Record a message not from the runtime (bad shape, cuBLAS status). */
void cuda_fail_msg(CudaBackend *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Check the last launch (cudaGetLastError). */
#define CUDA_LAUNCHED(c, what) cuda_fail((c), cudaGetLastError(), (what))

/* Grow a scratch buffer to at least bytes (contents are not kept).
 * Returns 0 or -1 with the error recorded. */
int cuda_grow(CudaBackend *c, void **p, size_t *cap, size_t bytes,
	      const char *what);

/* ---- programmatic dependent launch (graph.cu) ----------------------- */

/* In a recorded decode step every kernel node hangs off the one before by
 * a programmatic edge (INFERD_CUDA_PDL=0: plain edges), so the next
 * kernel's blocks start on the multiprocessors the current one leaves
 * as it drains, instead of after a full stop and a fresh launch: at 7B a
 * decode step is ~350 kernels of 2-40 us each. The contract that makes it
 * safe, kept by every kernel of this backend:
 *   - pdl_enter() at the top: let the next kernel launch (it can only run
 *     its own pdl_enter() or weight prefetches meanwhile), then wait until
 *     the previous kernel has completed with its writes visible;
 *   - before that wait a kernel may only read what no kernel writes
 *     (weights): the streaming mat-vec issues its first loads there.
 * Because every kernel waits for its predecessor before it can complete,
 * "previous kernel complete" means "every earlier kernel complete".
 * Outside such a graph both instructions do nothing. */
__device__ __forceinline__ void pdl_launch_next(void)
{
	asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
__device__ __forceinline__ void pdl_wait(void)
{
	asm volatile("griddepcontrol.wait;" ::: "memory");
}
__device__ __forceinline__ void pdl_enter(void)
{
	pdl_launch_next();
	pdl_wait();
}
/* ---- device-side element readers ------------------------------------ */

/* Block layouts as in ggml / gguf.h (sizes in bytes):
 *   Q8_0 34: f16 d, int8 q[32]                       x = d*q
 *   Q4_0 18: f16 d, u8 qs[16]   lo nibbles 0..15, hi 16..31, x = d*(q-8)
 *   Q4_1 20: f16 d, f16 m, u8 qs[16]                 x = d*q + m
 *   Q4_K 144: f16 d, f16 dmin, u8 scales[12], u8 qs[128]
 *   Q5_K 176: f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
 *   Q6_K 210: u8 ql[128], u8 qh[64], int8 scales[16], f16 d
 * Blocks are only 2-byte aligned in a row, so halves are read as u16. */

__device__ __forceinline__ float ld_half(const uint8_t *p)
{
	return __half2float(__ushort_as_half(*(const unsigned short *)p));
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. */
__device__ __forceinline__ void kq_scale_min(const uint8_t *q, int j,
					     float *sc, float *m)
{
	if (j < 4) {
		*sc = (float)(q[j] & 63);
		*m = (float)(q[j + 4] & 63);
	} else {
		*sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
		*m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
	}
}

/* Element i of a row of type t starting at row (any dtype). Slow but
 * general: used by embed() and by the dequantise-for-GEMM kernel. */
__device__ __forceinline__ float dq_elem(int t, const uint8_t *row, int64_t i)
{
	switch (t) {
	case DT_F32:
		return ((const float *)row)[i];
	case DT_F16:
		return __half2float(((const __half *)row)[i]);
	case DT_BF16:
		return __bfloat162float(((const __nv_bfloat16 *)row)[i]);
	case DT_Q8_0: {
		const uint8_t *b = row + (i / 32) * 34;
		return ld_half(b) * (float)(int8_t)b[2 + i % 32];
	}
	case DT_Q4_0: {
		const uint8_t *b = row + (i / 32) * 18;
		int k = (int)(i % 32);
		int q = k < 16 ? (b[2 + k] & 0xF) : (b[2 + k - 16] >> 4);
		return ld_half(b) * (float)(q - 8);
	}
	case DT_Q4_1: {
		const uint8_t *b = row + (i / 32) * 20;
		int k = (int)(i % 32);
		int q = k < 16 ? (b[4 + k] & 0xF) : (b[4 + k - 16] >> 4);
		return ld_half(b) * (float)q + ld_half(b + 2);
	}
	case DT_Q4_K: {
		const uint8_t *b = row + (i / 256) * 144;
		int k = (int)(i % 256), j = k / 32, l = k % 32;
		float sc, m;
		kq_scale_min(b + 4, j, &sc, &m);
		uint8_t byte = b[16 + 32 * (j / 2) + l];
		int q = (j & 1) ? (byte >> 4) : (byte & 0xF);
		return ld_half(b) * sc * (float)q - ld_half(b + 2) * m;
	}
	case DT_Q5_K: {
		const uint8_t *b = row + (i / 256) * 176;
		int k = (int)(i % 256), j = k / 32, l = k % 32;
		float sc, m;
		kq_scale_min(b + 4, j, &sc, &m);
		uint8_t byte = b[48 + 32 * (j / 2) + l];
		int q = (j & 1) ? (byte >> 4) : (byte & 0xF);
		q += ((b[16 + l] >> j) & 1) << 4;
		return ld_half(b) * sc * (float)q - ld_half(b + 2) * m;
	}
	case DT_Q6_K: {
		const uint8_t *b = row + (i / 256) * 210;
		int k = (int)(i % 256), n = k / 128, r = k % 128;
		int quarter = r / 32, l = r % 32;
		const uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
		const int8_t *sc = (const int8_t *)(b + 192) + 8 * n;
		int lo = (quarter & 1) ? ql[l + 32] : ql[l];
		lo = (quarter & 2) ? (lo >> 4) : (lo & 0xF);
		int hi = (qh[l] >> (2 * quarter)) & 3;
		int q = (lo | (hi << 4)) - 32;
		return ld_half(b + 208) * (float)sc[l / 16 + 2 * quarter] *
		       (float)q;
	}
	}
	return 0.0f;
}

#endif
