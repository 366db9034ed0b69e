/*
 * cuda_layer_bench.c - times the Llama forward pass on the CUDA backend
 * through the BackendOps table alone, with random weights of a named shape
 * (no model file, no engine): the same op sequence model.c's forward()
 * issues, so it measures the backend's kernels and launch overhead.
 * Prints prefill (one call of n tokens) and decode (128 single-token
 * steps with argmax, from position 0, as llama-bench's tg128) tokens/s.
 *
 * usage: cuda-layer-bench SHAPE TYPE [prefill_n] [decode_n]
 *   SHAPE tinyllama-1.1b | llama2-7b;  TYPE f16 | q4_0 | q8_0 | q4_k | bf16
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

#include "backend.h"
#include "tensor.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 32);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static Backend *be;

static void die(const char *what, const char *err)
{
	fprintf(stderr, "cuda-layer-bench: %s: %s\n", what, err);
	exit(1);
}

/* Random weights of type t: values of magnitude 2^-8..2^-3 for the
 * float types (bits drawn directly, no conversion), random blocks with
 * sane f16 scales for quantised ones. Host bytes are made once per shape
 * and uploaded into a separate device copy for every layer, so no layer
 * reads another's cached bytes. */
static Tensor tensor(dtype t, int64_t rows, int64_t cols)
{
	static struct {
		int64_t rows, cols;
		uint8_t *h;
	} cache[8];
	Tensor w = {0};
	w.name = "w";
	w.type = t;
	w.rows = rows;
	w.cols = cols;
	w.nbytes = (size_t)rows * dtype_row_bytes(t, cols);
	uint8_t *h = NULL;
	int slot = 0;
	for (; slot < 8 && cache[slot].h; slot++)
		if (cache[slot].rows == rows && cache[slot].cols == cols)
			h = cache[slot].h;
	if (!h) {
		if (!(h = malloc(w.nbytes)))
			die("malloc", "out of memory");
		uint32_t *h32 = (uint32_t *)h;
		for (size_t i = 0; i < w.nbytes / 4; i++)
			h32[i] = next();
		if (t == DT_F32) {
			for (size_t i = 0; i < w.nbytes / 4; i++)
				h32[i] = (h32[i] & 0x807FFFFFu) |
					 ((119u + h32[i] % 6u) << 23);
		} else if (t == DT_F16 || t == DT_BF16) {
			uint16_t *f = (uint16_t *)h;
			for (size_t i = 0; i < w.nbytes / 2; i++) {
				uint32_t r = f[i];
				f[i] = t == DT_F16
					? (uint16_t)((r & 0x83FF) |
						     ((7 + (r >> 10) % 6) << 10))
					: (uint16_t)((r & 0x807F) |
						     ((119 + (r >> 7) % 6) << 7));
			}
		} else {
			size_t bb = dtype_block_bytes(t);
			uint16_t sc = f32_to_fp16(0.002f);
			for (size_t b = 0; b < w.nbytes / bb; b++) {
				uint8_t *p = h + b * bb;
				memcpy(p + (t == DT_Q6_K ? 208 : 0), &sc, 2);
				if (t == DT_Q4_1 || t == DT_Q4_K ||
				    t == DT_Q5_K)
					memcpy(p + 2, &sc, 2);
			}
		}
		if (slot < 8) {
			cache[slot].rows = rows;
			cache[slot].cols = cols;
			cache[slot].h = h;
		}
	}
	w.data = h;
	char err[256];
	if (be->ops->upload(be, &w, err, sizeof err))
		die("upload", err);
	w.data = NULL;
	return w;
}

typedef struct {
	Tensor an, wq, wk, wv, wo, fn, wg, wu, wd;
} Layer;

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s SHAPE TYPE [prefill] [decode]\n",
			argv[0]);
		return 2;
	}
	int dim, L, H, KV, F, V = 32000;
	if (!strcmp(argv[1], "tinyllama-1.1b")) {
		dim = 2048; L = 22; H = 32; KV = 4; F = 5632;
	} else if (!strcmp(argv[1], "llama2-7b")) {
		dim = 4096; L = 32; H = 32; KV = 32; F = 11008;
	} else {
		die("shape", argv[1]);
		return 2;
	}
	dtype t = DT_COUNT;
	for (int i = 0; i < DT_COUNT; i++)
		if (!strcmp(argv[2], dtype_name((dtype)i)))
			t = (dtype)i;
	if (t == DT_COUNT)
		die("type", argv[2]);
	int np = argc > 3 ? atoi(argv[3]) : 512;
	int nd = argc > 4 ? atoi(argv[4]) : 128;
	const char *so = getenv("INFERD_CUDA_LIB");
	void *lib = dlopen(so ? so : "build/libinferd-cuda.so", RTLD_NOW);
	if (!lib)
		die("dlopen", dlerror());
	cuda_backend_create_fn fn =
		(cuda_backend_create_fn)dlsym(lib, CUDA_BACKEND_SYMBOL);
	char err[512];
	if (!fn || !(be = fn(BACKEND_ABI_VERSION, 0, err, sizeof err)))
		die("create", fn ? err : "no symbol");
	const BackendOps *o = be->ops;
	int hd = dim / H, kvd = KV * hd, ctx = np + nd + 8;
	double t0 = now();
	Tensor emb = tensor(t, V, dim), out = tensor(t, V, dim);
	Tensor onorm = tensor(DT_F32, 1, dim);
	Layer *ly = calloc(L, sizeof *ly);
	uint64_t wbytes = emb.nbytes + out.nbytes;
	for (int l = 0; l < L; l++) {
		ly[l].an = tensor(DT_F32, 1, dim);
		ly[l].fn = tensor(DT_F32, 1, dim);
		ly[l].wq = tensor(t, H * hd, dim);
		ly[l].wk = tensor(t, kvd, dim);
		ly[l].wv = tensor(t, kvd, dim);
		ly[l].wo = tensor(t, dim, H * hd);
		ly[l].wg = tensor(t, F, dim);
		ly[l].wu = tensor(t, F, dim);
		ly[l].wd = tensor(t, dim, F);
		wbytes += ly[l].wq.nbytes + ly[l].wk.nbytes + ly[l].wv.nbytes +
			  ly[l].wo.nbytes + ly[l].wg.nbytes + ly[l].wu.nbytes +
			  ly[l].wd.nbytes;
	}
	int B = np > 1 ? np : 1;
	float *x = o->alloc(be, sizeof(float) * B * dim);
	float *xb = o->alloc(be, sizeof(float) * B * dim);
	float *q = o->alloc(be, sizeof(float) * B * H * hd);
	float *att = o->alloc(be, sizeof(float) * B * H * hd);
	float *hb = o->alloc(be, sizeof(float) * B * F);
	float *hb2 = o->alloc(be, sizeof(float) * B * F);
	float *logits = o->alloc(be, sizeof(float) * B * V);
	float *kc = o->alloc(be, sizeof(float) * (size_t)L * ctx * kvd);
	float *vc = o->alloc(be, sizeof(float) * (size_t)L * ctx * kvd);
	float *invf = o->alloc(be, sizeof(float) * hd / 2);
	if (!x || !xb || !q || !att || !hb || !hb2 || !logits || !kc || !vc ||
	    !invf)
		die("alloc", "out of device memory");
	float inv[256];
	for (int i = 0; i < hd / 2; i++)
		inv[i] = (float)pow(10000.0, -2.0 * i / hd);
	o->to_dev(be, invf, inv, sizeof(float) * hd / 2);
	int32_t *ids = malloc(sizeof(int32_t) * B);
	for (int i = 0; i < B; i++)
		ids[i] = (int32_t)(next() % V);
	int fatal;
	if (o->sync(be, &fatal, err, sizeof err))
		die("setup", err);
	fprintf(stderr, "%s %s: %.2f GB of weights, set up in %.1f s on %s\n",
		argv[1], argv[2], wbytes / 1e9, now() - t0, o->describe(be));

	/* One forward of n tokens at pos: the sequence model.c issues. */
#define FORWARD(n, pos)                                                        \
	do {                                                                   \
		o->embed(be, x, &emb, ids, (n));                               \
		for (int l = 0; l < L; l++) {                                  \
			float *kl = kc + (size_t)l * ctx * kvd;                \
			float *vl = vc + (size_t)l * ctx * kvd;                \
			o->rmsnorm(be, xb, x, &ly[l].an, (n), dim, 1e-5f);     \
			o->matmul(be, q, xb, &ly[l].wq, NULL, (n));            \
			o->matmul(be, kl + (size_t)(pos) * kvd, xb, &ly[l].wk, \
				  NULL, (n));                                  \
			o->matmul(be, vl + (size_t)(pos) * kvd, xb, &ly[l].wv, \
				  NULL, (n));                                  \
			o->rope(be, q, (n), H * hd, H, hd, (pos), invf, 0);    \
			o->rope(be, kl + (size_t)(pos) * kvd, (n), kvd, KV,    \
				hd, (pos), invf, 0);                           \
			o->attention(be, att, q, kl, vl, (n), (pos), H, KV,    \
				     hd);                                      \
			o->matmul_add(be, x, xb, att, &ly[l].wo, (n));         \
			o->rmsnorm(be, xb, x, &ly[l].fn, (n), dim, 1e-5f);     \
			o->matmul(be, hb, xb, &ly[l].wg, NULL, (n));           \
			o->matmul(be, hb2, xb, &ly[l].wu, NULL, (n));          \
			o->swiglu(be, hb, hb2, (size_t)(n) * F);               \
			o->matmul_add(be, x, xb, hb, &ly[l].wd, (n));          \
		}                                                              \
		o->rmsnorm(be, xb + (size_t)((n) - 1) * dim,                   \
			   x + (size_t)((n) - 1) * dim, &onorm, 1, dim, 1e-5f);\
		o->matmul(be, logits, xb + (size_t)((n) - 1) * dim, &out,      \
			  NULL, 1);                                            \
	} while (0)

	/* warm-up: module load, cuBLAS heuristics, scratch growth */
	FORWARD(np, 0);
	FORWARD(1, 0);
	if (o->sync(be, &fatal, err, sizeof err))
		die("warm-up", err);
	double best_p = 1e30;
	for (int rep = 0; rep < 5; rep++) {
		double a = now();
		FORWARD(np, 0);
		if (o->sync(be, &fatal, err, sizeof err))
			die("prefill", err);
		double d = now() - a;
		if (d < best_p)
			best_p = d;
	}
	double times[3];
	for (int rep = 0; rep < 3; rep++) {
		double a = now();
		for (int i = 0; i < nd; i++) {
			FORWARD(1, i);
			ids[0] = o->argmax(be, logits, V);
		}
		if (o->sync(be, &fatal, err, sizeof err))
			die("decode", err);
		times[rep] = now() - a;
	}
	double td = times[0] < times[1] ? times[0] : times[1];
	td = td < times[2] ? td : times[2];
	printf("%s %s weights %.2f GB  prefill %d: %.0f tok/s (%.2f ms)  "
	       "decode %d: %.1f tok/s (%.3f ms/tok, %.0f GB/s weights)\n",
	       argv[1], argv[2], wbytes / 1e9, np, np / best_p, best_p * 1e3,
	       nd, nd / td, td / nd * 1e3, wbytes / (td / nd) / 1e9);
	o->destroy(be);
	return 0;
}
