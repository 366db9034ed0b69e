/*
 * check_backend.c - backend_open() (cpu, cuda without the shared object,
 * auto fallback notice), the CPU backend's non-matmul ops against direct
 * double-precision formulas (RoPE both layouts, causal GQA attention vs a
 * naive softmax, rmsnorm, swiglu, add, embed, argmax) and the thread pool.
 */
#include <check.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu.h"
#include "threadpool.h"
#include "testutil.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(float lo, float hi)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return lo + (hi - lo) * (float)((rng >> 20) & 0xFFFFFF) / (float)0x1000000;
}

static Backend *cpu(int threads)
{
	char err[256];
	BackendOptions o = {.name = "cpu", .threads = threads};
	Backend *b = backend_open(&o, err, sizeof err);
	ck_assert_msg(b, "%s", err);
	cpu_backend_set_par_min(b, 0); /* small shapes, still on the pool */
	return b;
}

START_TEST(open_cpu)
{
	Backend *b = cpu(2);
	const BackendOps *o = b->ops;
	ck_assert_str_eq(o->name, "cpu");
	ck_assert_int_eq(b->threads, 2);
	ck_assert_msg(!strncmp(o->describe(b), "CPU, 2 threads, ", 16), "%s",
		      o->describe(b));
	uint64_t total = 0, avail = 0;
	o->memory(b, &total, &avail);
	ck_assert(total > (64u << 20) && avail > 0 && avail <= total);
	/* alloc is zero-filled, small and large (mmap) alike */
	size_t sizes[2] = {1000, 3u << 20};
	for (int k = 0; k < 2; k++) {
		unsigned char *p = o->alloc(b, sizes[k]);
		ck_assert_ptr_nonnull(p);
		ck_assert_int_eq((uintptr_t)p % 64, 0);
		for (size_t i = 0; i < sizes[k]; i += 97)
			ck_assert_int_eq(p[i], 0);
		p[sizes[k] - 1] = 1;
		o->free(b, p);
	}
	char err[128];
	ck_assert_int_eq(o->sync(b, NULL, err, sizeof err), 0);
	o->destroy(b);
}
END_TEST

START_TEST(open_cuda_missing)
{
	char err[512];
	setenv("INFERD_CUDA_LIB", "/nonexistent/libinferd-cuda.so", 1);
	BackendOptions o = {.name = "cuda"};
	Backend *b = backend_open(&o, err, sizeof err);
	ck_assert_ptr_null(b);
	ck_assert_msg(strstr(err, "CUDA backend unavailable") &&
			      strstr(err, "/nonexistent/libinferd-cuda.so"),
		      "%s", err);
	/* a loadable library without the entry point */
	setenv("INFERD_CUDA_LIB", "libm.so.6", 1);
	o.name = "cuda";
	ck_assert_ptr_null(backend_open(&o, err, sizeof err));
	ck_assert_msg(strstr(err, "does not export inferd_cuda_backend_create"),
		      "%s", err);
	o.name = "tpu";
	ck_assert_ptr_null(backend_open(&o, err, sizeof err));
	ck_assert_msg(strstr(err, "unknown backend 'tpu'"), "%s", err);
	unsetenv("INFERD_CUDA_LIB");
}
END_TEST

/* Without $INFERD_CUDA_LIB the library is looked for beside the
 * executable (build/tests/ has none) and on the search path. */
START_TEST(open_cuda_not_found)
{
	unsetenv("INFERD_CUDA_LIB");
	void *h = dlopen("libinferd-cuda.so", RTLD_NOW | RTLD_LOCAL);
	if (h) {
		dlclose(h);
		TEST_SKIP("libinferd-cuda.so is on the library path here");
	}
	char err[512];
	BackendOptions o = {.name = "cuda"};
	ck_assert_ptr_null(backend_open(&o, err, sizeof err));
	ck_assert_msg(strstr(err, "libinferd-cuda.so not found"), "%s", err);
}
END_TEST

/* Open "auto" with stderr sent to a file; return what it printed. */
static Backend *open_auto_capture(int quiet, char *out, size_t outlen)
{
	char path[] = "/tmp/check_backend_XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	fflush(stderr);
	int saved = dup(2);
	dup2(fd, 2);
	char err[256];
	BackendOptions o = {.name = "auto", .threads = 1, .quiet = quiet};
	Backend *b = backend_open(&o, err, sizeof err);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	ssize_t n = read(fd, out, outlen - 1);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	ck_assert_msg(b, "%s", err);
	return b;
}

START_TEST(open_auto_fallback)
{
	setenv("INFERD_CUDA_LIB", "/nonexistent/libinferd-cuda.so", 1);
	char text[1024];
	Backend *b = open_auto_capture(0, text, sizeof text);
	ck_assert_str_eq(b->ops->name, "cpu");
	ck_assert_msg(strstr(text, "CUDA backend unavailable") &&
			      strstr(text, "/nonexistent") &&
			      strstr(text, "using the CPU"),
		      "notice: '%s'", text);
	ck_assert_int_eq((int)(strchr(text, '\n') - text),
			 (int)strlen(text) - 1); /* one line */
	b->ops->destroy(b);
	b = open_auto_capture(1, text, sizeof text);
	ck_assert_str_eq(text, "");
	b->ops->destroy(b);
	unsetenv("INFERD_CUDA_LIB");
}
END_TEST

/* RoPE: compare both layouts with the rotation written out directly. */
START_TEST(rope_layouts)
{
	Backend *b = cpu(2);
	enum { N = 3, H = 2, D = 8, STRIDE = 20 };
	float inv[D / 2];
	for (int k = 0; k < D / 2; k++)
		inv[k] = (float)pow(10000.0, -2.0 * k / D);
	for (int layout = 0; layout < 2; layout++) {
		float x[N * STRIDE], x0[N * STRIDE];
		for (int i = 0; i < N * STRIDE; i++)
			x[i] = x0[i] = frand(-1, 1);
		int pos0 = 5;
		b->ops->rope(b, x, N, STRIDE, H, D, pos0, inv, layout);
		for (int i = 0; i < N; i++) {
			for (int h = 0; h < H; h++)
				for (int k = 0; k < D / 2; k++) {
					int a = i * STRIDE + h * D +
						(layout == ROPE_HALF ? k : 2 * k);
					int c = layout == ROPE_HALF ? a + D / 2 : a + 1;
					double th = (double)(pos0 + i) * inv[k];
					double wa = x0[a] * cos(th) - x0[c] * sin(th);
					double wc = x0[a] * sin(th) + x0[c] * cos(th);
					ck_assert_msg(fabs(x[a] - wa) < 1e-4 &&
							      fabs(x[c] - wc) < 1e-4,
						      "layout %d row %d head %d k %d",
						      layout, i, h, k);
				}
			/* floats past the heads (cache row padding) untouched */
			for (int e = H * D; e < STRIDE; e++)
				ck_assert(x[i * STRIDE + e] == x0[i * STRIDE + e]);
		}
	}
	char err[128];
	ck_assert_int_eq(b->ops->sync(b, NULL, err, sizeof err), 0);
	b->ops->destroy(b);
}
END_TEST

/* Attention against softmax written out in double, GQA 6 query heads over
 * 2 KV heads, n = 4 new rows after 70 cached ones (crosses the 64-key
 * block of the online softmax). */
START_TEST(attention_gqa)
{
	Backend *b = cpu(2);
	enum { NH = 6, NKV = 2, HD = 16, N = 4, POS0 = 70 };
	int ctx = POS0 + N, qd = NH * HD, kvd = NKV * HD;
	float *q = malloc(sizeof(float) * N * qd);
	float *kc = malloc(sizeof(float) * ctx * kvd);
	float *vc = malloc(sizeof(float) * ctx * kvd);
	float *out = malloc(sizeof(float) * N * qd);
	for (int i = 0; i < N * qd; i++)
		q[i] = frand(-2, 2);
	for (int i = 0; i < ctx * kvd; i++) {
		kc[i] = frand(-2, 2);
		vc[i] = frand(-1, 1);
	}
	b->ops->attention(b, out, q, kc, vc, N, POS0, NH, NKV, HD);
	char err[128];
	ck_assert_int_eq(b->ops->sync(b, NULL, err, sizeof err), 0);
	for (int i = 0; i < N; i++)
		for (int h = 0; h < NH; h++) {
			int kvh = h / (NH / NKV), len = POS0 + i + 1;
			double *s = malloc(sizeof(double) * len), mx = -1e300, sum = 0;
			for (int p = 0; p < len; p++) {
				double d = 0;
				for (int e = 0; e < HD; e++)
					d += (double)q[i * qd + h * HD + e] *
					     kc[p * kvd + kvh * HD + e];
				s[p] = d / sqrt(HD);
				mx = fmax(mx, s[p]);
			}
			for (int p = 0; p < len; p++)
				sum += s[p] = exp(s[p] - mx);
			for (int e = 0; e < HD; e++) {
				double want = 0;
				for (int p = 0; p < len; p++)
					want += s[p] / sum * vc[p * kvd + kvh * HD + e];
				ck_assert_msg(fabs(out[i * qd + h * HD + e] - want) < 1e-5,
					      "row %d head %d e %d: %g vs %g", i, h, e,
					      out[i * qd + h * HD + e], want);
			}
			free(s);
		}
	free(q);
	free(kc);
	free(vc);
	free(out);
	b->ops->destroy(b);
}
END_TEST

START_TEST(rmsnorm_swiglu_add)
{
	Backend *b = cpu(2);
	enum { N = 5, DIM = 48 };
	float x[N * DIM], out[N * DIM];
	uint16_t wb[DIM]; /* bf16 weight, as HF checkpoints store norms */
	for (int i = 0; i < N * DIM; i++)
		x[i] = frand(-3, 3);
	for (int e = 0; e < DIM; e++) {
		float f = frand(0.5f, 1.5f);
		uint32_t u;
		memcpy(&u, &f, 4);
		wb[e] = (uint16_t)(u >> 16);
	}
	Tensor w = {.name = "norm", .type = DT_BF16, .rows = 1, .cols = DIM,
		    .data = wb, .nbytes = sizeof wb};
	b->ops->rmsnorm(b, out, x, &w, N, DIM, 1e-5f);
	for (int i = 0; i < N; i++) {
		double ss = 0;
		for (int e = 0; e < DIM; e++)
			ss += (double)x[i * DIM + e] * x[i * DIM + e];
		double r = 1.0 / sqrt(ss / DIM + 1e-5);
		for (int e = 0; e < DIM; e++)
			ck_assert(fabs(out[i * DIM + e] -
				       x[i * DIM + e] * r * bf16_to_f32(wb[e])) < 1e-5);
	}
	/* in place */
	float y[N * DIM];
	memcpy(y, x, sizeof x);
	b->ops->rmsnorm(b, y, y, &w, N, DIM, 1e-5f);
	ck_assert(!memcmp(y, out, sizeof y));

	/* swiglu and add over more than one parallel chunk */
	size_t cnt = 40000;
	float *g = malloc(cnt * 4), *u = malloc(cnt * 4), *g0 = malloc(cnt * 4);
	for (size_t i = 0; i < cnt; i++) {
		g[i] = g0[i] = frand(-6, 6);
		u[i] = frand(-2, 2);
	}
	b->ops->swiglu(b, g, u, cnt);
	for (size_t i = 0; i < cnt; i++) {
		double want = g0[i] / (1 + exp(-(double)g0[i])) * u[i];
		ck_assert(fabs(g[i] - want) < 1e-5 * (1 + fabs(want)));
	}
	memcpy(g, g0, cnt * 4);
	b->ops->add(b, g, u, cnt);
	for (size_t i = 0; i < cnt; i++)
		ck_assert(g[i] == g0[i] + u[i]);
	g[12345] = 99.f;
	ck_assert_int_eq(b->ops->argmax(b, g, (int)cnt), 12345);
	free(g);
	free(u);
	free(g0);
	char err[128];
	ck_assert_int_eq(b->ops->sync(b, NULL, err, sizeof err), 0);
	b->ops->destroy(b);
}
END_TEST

START_TEST(embed_rows)
{
	Backend *b = cpu(1);
	uint16_t tab[3 * 4];
	for (int i = 0; i < 12; i++)
		tab[i] = f32_to_fp16((float)i * 0.5f);
	Tensor t = {.name = "tok", .type = DT_F16, .rows = 3, .cols = 4,
		    .data = tab, .nbytes = sizeof tab};
	int32_t ids[2] = {2, 0};
	float out[8];
	b->ops->embed(b, out, &t, ids, 2);
	char err[128];
	ck_assert_int_eq(b->ops->sync(b, NULL, err, sizeof err), 0);
	ck_assert(out[0] == 4.0f && out[3] == 5.5f && out[4] == 0.0f &&
		  out[7] == 1.5f);
	ids[1] = 3; /* out of range: reported at sync */
	b->ops->embed(b, out, &t, ids, 2);
	ck_assert_int_eq(b->ops->sync(b, NULL, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "token id 3"), "%s", err);
	b->ops->destroy(b);
}
END_TEST

typedef struct {
	_Atomic int *hits;
	_Atomic int bad_thread;
	int threads;
} PoolArg;

static void pool_task(void *arg, int task, int thread)
{
	PoolArg *a = arg;
	atomic_fetch_add(&a->hits[task], 1);
	if (thread < 0 || thread >= a->threads)
		atomic_store(&a->bad_thread, 1);
}

START_TEST(threadpool_runs_each_task_once)
{
	char err[128];
	ThreadPool *p = tp_create(4, err, sizeof err);
	ck_assert_msg(p, "%s", err);
	ck_assert_int_eq(tp_threads(p), 4);
	enum { T = 1000 };
	_Atomic int *hits = calloc(T, sizeof *hits);
	PoolArg a = {hits, 0, 4};
	/* many short jobs: the spin/sleep hand-off must not lose one */
	for (int rep = 1; rep <= 300; rep++) {
		int n = 1 + rep % 97;
		tp_run(p, n, pool_task, &a);
		for (int i = 0; i < n; i++)
			ck_assert_int_eq(atomic_load(&hits[i]), 1);
		memset(hits, 0, T * sizeof *hits);
		if (rep % 100 == 0)
			usleep(20000); /* let the workers fall asleep */
	}
	/* many tiny jobs, where the caller often finishes every task before
	 * a worker looks: no task may run twice, late, or not at all */
	for (int rep = 0; rep < 20000; rep++) {
		int n = 2 + rep % 3;
		tp_run(p, n, pool_task, &a);
		for (int i = 0; i < n; i++)
			ck_assert_int_eq(atomic_load(&hits[i]), 1);
		for (int i = 0; i < n; i++)
			atomic_store(&hits[i], 0);
	}
	tp_run(p, T, pool_task, &a);
	for (int i = 0; i < T; i++)
		ck_assert_int_eq(atomic_load(&hits[i]), 1);
	ck_assert_int_eq(atomic_load(&a.bad_thread), 0);
	tp_destroy(p);
	free(hits);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("backend");
	TCase *tc = tcase_create("backend");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, open_cpu);
	tcase_add_test(tc, open_cuda_missing);
	tcase_add_test(tc, open_cuda_not_found);
	tcase_add_test(tc, open_auto_fallback);
	tcase_add_test(tc, rope_layouts);
	tcase_add_test(tc, attention_gqa);
	tcase_add_test(tc, rmsnorm_swiglu_add);
	tcase_add_test(tc, embed_rows);
	tcase_add_test(tc, threadpool_runs_each_task_once);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
