/*
 * kernels_bench.c - CPU backend matmul throughput per weight type: the
 * decode mat-vec (n = 1) and a 64-row prefill mat-mat, on a random
 * [rows][cols] weight (default 14336 x 4096, a Llama-3-8B FFN matrix).
 * Prints weight GB/s (weight bytes / time: what bounds decode) and
 * GFLOP/s (2*rows*cols*n / time: what bounds prefill).
 *
 *   make build/kernels_bench
 *   build/kernels_bench [-t threads] [-s scalar|avx2|avx512] [-r rows]
 *                       [-c cols] [-n prefill_rows] [type ...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cpu.h"

/* With one thread the clock is the thread's CPU time, so other processes
 * on a shared machine do not count against the kernel (they still share
 * caches and memory bandwidth); otherwise wall time. */
static clockid_t clk = CLOCK_MONOTONIC;

static double now(void)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 24);
}

/* Random bytes with every block's f16 scale fields set to small values. */
static void fill(dtype t, uint8_t *w, size_t bytes)
{
	for (size_t i = 0; i < bytes; i++)
		w[i] = (uint8_t)rnd();
	size_t bb = dtype_block_bytes(t);
	uint16_t h = f32_to_fp16(0.01f);
	for (size_t o = 0; o + bb <= bytes; o += bb) {
		switch (t) {
		case DT_F32: {
			float f = (float)(rnd() % 2000) / 1000.f - 1.f;
			memcpy(w + o, &f, 4);
			break;
		}
		case DT_F16:
		case DT_BF16: /* 0x3C00 / 0x3C00 are harmless finite values */
			w[o] = 0x00;
			w[o + 1] = 0x3C;
			break;
		case DT_Q6_K:
			memcpy(w + o + 208, &h, 2);
			break;
		case DT_Q8_0:
		case DT_Q4_0:
			memcpy(w + o, &h, 2);
			break;
		default: /* Q4_1, Q4_K, Q5_K: d and min/dmin */
			memcpy(w + o, &h, 2);
			memcpy(w + o + 2, &h, 2);
		}
	}
}

int main(int argc, char **argv)
{
	int threads = 0, rows = 14336, cols = 4096, np = 64;
	const char *simd = NULL;
	int first = 1;
	for (; first < argc && argv[first][0] == '-' && first + 1 < argc; first += 2) {
		const char *v = argv[first + 1];
		switch (argv[first][1]) {
		case 't': threads = atoi(v); break;
		case 's': simd = v; break;
		case 'r': rows = atoi(v); break;
		case 'c': cols = atoi(v); break;
		case 'n': np = atoi(v); break;
		default: fprintf(stderr, "unknown option %s\n", argv[first]); return 2;
		}
	}
	if (rows <= 0 || cols <= 0 || cols % 256 || np <= 0) {
		fprintf(stderr, "need rows > 0, cols a multiple of 256, n > 0\n");
		return 2;
	}
	char err[256];
	Backend *b = cpu_backend_create(threads, err, sizeof err);
	if (b && b->threads == 1)
		clk = CLOCK_THREAD_CPUTIME_ID;
	if (!b) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (simd && cpu_backend_set_simd(b, simd)) {
		fprintf(stderr, "SIMD level %s not supported here\n", simd);
		return 1;
	}
	const BackendOps *o = b->ops;
	printf("%s; weight %d x %d; prefill n = %d\n", o->describe(b), rows, cols, np);
	printf("%-6s %9s | %9s %9s | %9s %9s\n", "type", "MiB", "n=1 GB/s",
	       "GFLOP/s", "n=N GB/s", "GFLOP/s");
	float *x = o->alloc(b, sizeof(float) * (size_t)np * cols);
	float *out = o->alloc(b, sizeof(float) * (size_t)np * rows);
	if (!x || !out)
		return 1;
	for (size_t i = 0; i < (size_t)np * cols; i++)
		x[i] = (float)(rnd() % 2000) / 1000.f - 1.f;
	for (int t = 0; t < DT_COUNT; t++) {
		if (first < argc) {
			int want = 0;
			for (int a = first; a < argc; a++)
				want |= !strcmp(argv[a], dtype_name((dtype)t));
			if (!want)
				continue;
		}
		size_t bytes = (size_t)rows * dtype_row_bytes((dtype)t, cols);
		uint8_t *w = malloc(bytes);
		if (!w) {
			fprintf(stderr, "out of memory\n");
			return 1;
		}
		fill((dtype)t, w, bytes);
		Tensor tw = {.name = "w", .type = (dtype)t, .rows = rows, .cols = cols,
			     .data = w, .nbytes = bytes};
		/* the backend's own copy when it makes one (x16 repacking) */
		if (o->upload(b, &tw, err, sizeof err)) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		double res[2][2];
		int ns[2] = {1, np};
		for (int k = 0; k < 2; k++) {
			o->matmul(b, out, x, &tw, NULL, ns[k]); /* warm-up */
			int reps = 0;
			double t0 = now(), el;
			do {
				o->matmul(b, out, x, &tw, NULL, ns[k]);
				o->sync(b, NULL, err, sizeof err); /* runs queued work */
				reps++;
				el = now() - t0;
			} while (el < 0.5 || reps < 2);
			double per = el / reps;
			res[k][0] = bytes / per / 1e9;
			res[k][1] = 2.0 * rows * cols * ns[k] / per / 1e9;
		}
		if (o->sync(b, NULL, err, sizeof err)) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		printf("%-6s %9.1f | %9.2f %9.2f | %9.2f %9.2f\n", dtype_name((dtype)t),
		       bytes / 1048576.0, res[0][0], res[0][1], res[1][0], res[1][1]);
		fflush(stdout);
		o->release(b, &tw);
		free(w);
	}
	o->free(b, x);
	o->free(b, out);
	o->destroy(b);
	return 0;
}
