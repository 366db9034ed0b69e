/*
 * cpu.c - the CPU backend. See cpu.h and backend.h for the op contracts.
 */
#include "cpu.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels.h"
#include "threadpool.h"

#define ALIGN 64               /* cache line; also AVX-512 friendly */
#define BIG_ALLOC (1u << 20)   /* from here on alloc uses mmap (lazy zero) */
#define MAX_HEAD_DIM 1024      /* attention/rope keep a head on the stack */
#define ATT_BLOCK 64           /* keys scored per online-softmax step */
#define ATT_HEADS 4            /* query heads of one KV head per task */
#define XTILE 4                /* activation rows per weight row (dot4) */
#define ELT_CHUNK 16384        /* elements per task for swiglu/add */
#define L2_BLOCK (256u << 10)  /* weight bytes per prefill task (in L2) */
#define MM_FUSE 4              /* matmuls on one x run as one job */
#define PAR_MIN_WORK 262144.0 /* multiply-adds below which an op runs on
				* the calling thread: waking workers costs
				* more (tiny models, busy machines) */

/* matmul, one task per block of rb weight rows (x16: rb row groups). */
typedef struct {
	float *out;           /* [n][rows] */
	const uint8_t *w;     /* weight rows */
	size_t wrb;           /* bytes per weight row */
	const uint8_t *xa;    /* prepared activation rows */
	size_t xab;           /* bytes per prepared row */
	const float *x;       /* raw activations (for prepare) */
	int64_t cols, rows;   /* weight shape */
	int n;                /* activation rows */
	int rb;               /* weight rows per task */
	dtype type;           /* weight type */
	kdot_fn dot;          /* kernel */
	kdot4_fn dot4;        /* 4-row kernel or NULL */
	kdotw4_fn dotw4;      /* 4 weight rows x 1 activation row, or NULL */
	void (*quant)(const float *, void *, int64_t); /* SIMD prepare or NULL */
	const float *bias;    /* [rows] or NULL */
	const uint8_t *wx;    /* x16-repacked weights or NULL */
	size_t wxb;           /* bytes per x16 row group */
	kx16_fn x16;          /* kernel for wx */
	int gemm;             /* 1: float prefill through k->gemm */
	const KernelSet *k;   /* for gemm */
} MatJob;

typedef struct CpuBackend {
	Backend base;            /* ops + threads */
	ThreadPool *tp;          /* workers */
	const KernelSet *k;      /* SIMD level in use */
	char desc[96];           /* describe() text */
	int failed;              /* an op failed since the last sync */
	char err[256];           /* its message */
	void *act;               /* prepared activation rows (matmul) */
	size_t act_cap;          /* bytes in act */
	float *vec;              /* f32 copy of a norm weight (rmsnorm) */
	size_t vec_cap;          /* floats in vec */
	double par_min_work;     /* ops smaller than this run inline */
	MatJob mm[MM_FUSE];      /* queued matmuls sharing one x (cpu_matmul) */
	int mm_count;            /* how many are queued */
	int mm_first[MM_FUSE + 1]; /* first task of each in the joint job */
	float *bias_buf[MM_FUSE]; /* f32 copy of each one's bias */
	size_t bias_cap[MM_FUSE]; /* floats in bias_buf[i] */
} CpuBackend;

/* Header stored in front of every alloc() block, so free knows how. */
typedef struct {
	size_t bytes;  /* mapping length incl. header, 0 = posix_memalign */
	char pad[ALIGN - sizeof(size_t)];
} AllocHdr;

static void fail(CpuBackend *c, const char *fmt, ...)
{
	if (c->failed)
		return;
	c->failed = 1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
}

static void *grow(void *old, size_t *cap, size_t need)
{
	if (need <= *cap)
		return old;
	void *p = NULL;
	if (posix_memalign(&p, ALIGN, need))
		return NULL;
	free(old);
	*cap = need;
	return p;
}

/* Run tasks 0..n-1 on the pool, or inline when the op is too small
 * (work: its multiply-adds, roughly) to pay for the hand-off. */
static void run(CpuBackend *c, int n, tp_fn fn, void *arg, double work)
{
	if (work < c->par_min_work) {
		for (int t = 0; t < n; t++)
			fn(arg, t, 0);
		return;
	}
	tp_run(c->tp, n, fn, arg);
}

static void mm_flush(CpuBackend *c);

/* ---- housekeeping ops ---- */

static void cpu_destroy(Backend *b)
{
	CpuBackend *c = (CpuBackend *)b;
	if (!c)
		return;
	mm_flush(c);
	tp_destroy(c->tp);
	free(c->act);
	free(c->vec);
	for (int i = 0; i < MM_FUSE; i++)
		free(c->bias_buf[i]);
	free(c);
}

static const char *cpu_describe(Backend *b)
{
	return ((CpuBackend *)b)->desc;
}

static void cpu_memory(Backend *b, uint64_t *total, uint64_t *free_bytes)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t t = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
	uint64_t f = 0;
	FILE *fp = fopen("/proc/meminfo", "r");
	if (fp) {
		char line[256];
		unsigned long long kb;
		while (fgets(line, sizeof line, fp))
			if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
				f = (uint64_t)kb * 1024;
				break;
			}
		fclose(fp);
	}
	if (!f) {
		long av = sysconf(_SC_AVPHYS_PAGES);
		f = av > 0 && psz > 0 ? (uint64_t)av * (uint64_t)psz : 0;
	}
	if (total)
		*total = t;
	if (free_bytes)
		*free_bytes = f;
}

static void *cpu_alloc(Backend *b, size_t bytes)
{
	if (bytes > SIZE_MAX - 2 * sizeof(AllocHdr))
		return NULL;
	size_t len = bytes + sizeof(AllocHdr);
	AllocHdr *h;
	if (len >= BIG_ALLOC) {
		void *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			return NULL;
		h = m;
		h->bytes = len;
	} else {
		void *m = NULL;
		if (posix_memalign(&m, ALIGN, len))
			return NULL;
		memset(m, 0, len);
		h = m;
		h->bytes = 0;
	}
	return h + 1;
}

static void cpu_free(Backend *b, void *p)
{
	mm_flush((CpuBackend *)b);
	if (!p)
		return;
	AllocHdr *h = (AllocHdr *)p - 1;
	if (h->bytes)
		munmap(h, h->bytes);
	else
		free(h);
}

/* Float weight matrices of at least one huge page are copied out of the
 * mmap into 2 MiB-aligned memory marked for transparent huge pages, and
 * the mat-vecs read the copy (t->dev): decode of an F16 1.1B model,
 * 2 threads on this project's VM, read 10.9-12.5 tok/s from the page
 * cache and 14.4-15.2 from the copy in the same minutes (llama.cpp, which
 * also copies them, 11.5-13.4). Smaller matrices stay in the mmap (no huge
 * page to gain), as does everything when the copy would leave less than
 * three quarters of the available memory, or INFERD_CPU_MMAP_WEIGHTS=1.
 * The cost: the copy is private memory the kernel cannot drop, where the
 * mapping's page cache could be shared and reclaimed. */
#define COPY_MIN_BYTES ((size_t)2 << 20)

static void *copy_float_weight(CpuBackend *c, const Tensor *t)
{
	if (t->type != DT_F32 && t->type != DT_F16 && t->type != DT_BF16)
		return NULL;
	size_t nb = (size_t)t->rows * dtype_row_bytes(t->type, t->cols);
	const char *e = getenv("INFERD_CPU_MMAP_WEIGHTS");
	if (t->rows < 2 || nb < COPY_MIN_BYTES || (e && !strcmp(e, "1")))
		return NULL;
	uint64_t avail = 0;
	cpu_memory(&c->base, NULL, &avail);
	if (nb > avail / 4)
		return NULL;
	void *p = NULL;
	if (posix_memalign(&p, COPY_MIN_BYTES, nb))
		return NULL; /* the mmap serves */
	madvise(p, nb, MADV_HUGEPAGE); /* a hint: without it, still a copy */
	memcpy(p, t->data, nb);
	return p;
}

/* The rows a mat-vec reads: the copy of a float matrix, or the mmap (a
 * quantised weight's t->dev is its x16 repack, read by the x16 path). */
static const uint8_t *float_rows(const Tensor *t)
{
	int fl = t->type == DT_F32 || t->type == DT_F16 || t->type == DT_BF16;
	return fl && t->dev ? t->dev : t->data;
}

/* The math ops read t->data, the mmap, directly, except where t->dev
 * holds a copy: float matrices (copy_float_weight) and weights with an
 * x16 kernel at this SIMD level, repacked (allocated: the mmap stays
 * read-only), the same size as the original for Q4_x. */
static int cpu_upload(Backend *b, Tensor *t, char *err, size_t errlen)
{
	CpuBackend *c = (CpuBackend *)b;
	t->dev = NULL;
	if (t->data && (t->dev = copy_float_weight(c, t)))
		return 0;
	size_t bytes = t->data && t->type < DT_COUNT && c->k->x16[t->type]
			       ? kernel_x16_bytes(t->type, t->rows, t->cols)
			       : 0;
	if (!bytes)
		return 0;
	void *p = NULL;
	if (posix_memalign(&p, ALIGN, bytes)) {
		snprintf(err, errlen, "cpu: out of memory repacking %s (%zu bytes)",
			 t->name ? t->name : "?", bytes);
		return -1;
	}
	if (kernel_x16_pack(t->type, t->data, t->rows, t->cols, p) != 0) {
		free(p); /* a scale x16 cannot hold exactly: keep the original */
		return 0;
	}
	t->dev = p;
	return 0;
}

static void cpu_release(Backend *b, Tensor *t)
{
	mm_flush((CpuBackend *)b);
	free(t->dev);
	t->dev = NULL;
}

static void cpu_copy(Backend *b, void *dst, const void *src, size_t bytes)
{
	mm_flush((CpuBackend *)b);
	if (bytes)
		memmove(dst, src, bytes);
}

static int cpu_sync(Backend *b, int *fatal, char *err, size_t errlen)
{
	CpuBackend *c = (CpuBackend *)b;
	mm_flush(c);
	if (fatal)
		*fatal = 0;
	if (!c->failed)
		return 0;
	snprintf(err, errlen, "%s", c->err);
	c->failed = 0;
	return -1;
}

/* f32 view of a vector tensor of count elements (norm weight, bias):
 * the data itself when F32, else converted into *buf. NULL on error. */
static const float *vec_f32(CpuBackend *c, const Tensor *t, int64_t count,
			    float **buf, size_t *cap)
{
	if (!t || !t->data) {
		fail(c, "cpu: missing vector tensor");
		return NULL;
	}
	if (t->rows * t->cols != count || dtype_row_bytes(t->type, count) == 0) {
		fail(c, "cpu: tensor %s has %lld elements of %s, want %lld",
		     t->name ? t->name : "?", (long long)(t->rows * t->cols),
		     dtype_name(t->type), (long long)count);
		return NULL;
	}
	if (t->type == DT_F32 && ((uintptr_t)t->data & 3) == 0)
		return t->data;
	float *p = grow(*buf, cap, (size_t)count * sizeof(float));
	if (!p) {
		fail(c, "cpu: out of memory for scratch");
		return NULL;
	}
	*buf = p;
	dequantize_row(t->type, t->data, p, count);
	return p;
}

/* ---- embed, rmsnorm ---- */

static void cpu_embed(Backend *b, float *out, const Tensor *table,
		      const int32_t *ids, int n)
{
	CpuBackend *c = (CpuBackend *)b;
	mm_flush(c);
	size_t rb = dtype_row_bytes(table->type, table->cols);
	if (!table->data || !rb) {
		fail(c, "cpu: embed: bad table %s", table->name ? table->name : "?");
		return;
	}
	for (int i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= table->rows) {
			fail(c, "cpu: embed: token id %d out of range 0..%lld",
			     (int)ids[i], (long long)table->rows - 1);
			return;
		}
		dequantize_row(table->type,
			       (const uint8_t *)table->data + (size_t)ids[i] * rb,
			       out + (size_t)i * (size_t)table->cols, table->cols);
	}
}

/* rmsnorm over rows, one task per row. */
typedef struct {
	float *out;         /* [n][dim] */
	const float *x;     /* [n][dim], may equal out */
	const float *w;     /* [dim] f32 weight */
	int dim;            /* row width */
	float eps;          /* added to the mean square */
	const KernelSet *k; /* for the sum of squares */
} NormJob;

static void norm_task(void *arg, int i, int thread)
{
	NormJob *j = arg;
	const float *x = j->x + (size_t)i * j->dim;
	float *o = j->out + (size_t)i * j->dim;
	float ss = j->k->dot_f32(j->dim, x, x);
	float s = 1.0f / sqrtf(ss / (float)j->dim + j->eps);
	for (int e = 0; e < j->dim; e++)
		o[e] = x[e] * s * j->w[e];
}

static void cpu_rmsnorm(Backend *b, float *out, const float *x,
			const Tensor *w, int n, int dim, float eps)
{
	CpuBackend *c = (CpuBackend *)b;
	mm_flush(c);
	const float *wf = vec_f32(c, w, dim, &c->vec, &c->vec_cap);
	if (!wf)
		return;
	NormJob j = {out, x, wf, dim, eps, c->k};
	run(c, n, norm_task, &j, 4.0 * n * dim);
}

/* ---- matmul ---- */


static void prep_task(void *arg, int i, int thread)
{
	MatJob *j = arg;
	const float *x = j->x + (size_t)i * (size_t)j->cols;
	void *o = (void *)(j->xa + (size_t)i * j->xab);
	if (j->quant)
		j->quant(x, o, j->cols);
	else
		kernel_prepare_act(j->type, x, o, j->cols);
}

/* Float prefill: the task's weight rows through the GEMM tile against all
 * activation rows; rows left over from a tile through dot4/dot, which give
 * the same numbers. */
static void mat_gemm(const MatJob *j, int64_t r0, int64_t r1)
{
	const KernelSet *k = j->k;
	size_t ld = (size_t)j->rows;
	size_t xs = j->xab / sizeof(float);
	const float *x = (const float *)j->xa;
	int gw = k->gemm_w, gx = k->gemm_x;
	for (int i0 = 0; i0 < j->n; i0 += gx) {
		int nx = j->n - i0 < gx ? j->n - i0 : gx;
		const float *xi = x + (size_t)i0 * xs;
		float *o = j->out + (size_t)i0 * ld;
		int64_t r = r0;
		for (; r + gw <= r1; r += gw)
			k->gemm[j->type](j->cols, j->w + (size_t)r * j->wrb, j->wrb,
					 xi, xs, nx, o + r, ld);
		for (; r < r1; r++) {
			const uint8_t *wr = j->w + (size_t)r * j->wrb;
			int i = 0;
			for (; i + 4 <= nx; i += 4) {
				float v[4];
				j->dot4(j->cols, wr, xi + (size_t)i * xs, j->xab, v);
				for (int q = 0; q < 4; q++)
					o[(size_t)(i + q) * ld + r] = v[q];
			}
			for (; i < nx; i++)
				o[(size_t)i * ld + r] =
					j->dot(j->cols, wr, xi + (size_t)i * xs);
		}
	}
	if (j->bias)
		for (int i = 0; i < j->n; i++)
			for (int64_t r = r0; r < r1; r++)
				j->out[(size_t)i * ld + r] += j->bias[r];
}

static void mat_task(void *arg, int t, int thread)
{
	MatJob *j = arg;
	int64_t r0 = (int64_t)t * j->rb, r1 = r0 + j->rb;
	if (r1 > j->rows)
		r1 = j->rows;
	if (j->gemm) {
		mat_gemm(j, r0, r1);
		return;
	}
	size_t ld = (size_t)j->rows;
	for (int i0 = 0; i0 < j->n; i0 += XTILE) {
		int i1 = i0 + XTILE < j->n ? i0 + XTILE : j->n;
		const uint8_t *xa = j->xa + (size_t)i0 * j->xab;
		for (int64_t r = r0; r < r1; r++) {
			const uint8_t *w = j->w + (size_t)r * j->wrb;
			float *o = j->out + (size_t)i0 * ld + (size_t)r;
			if (i1 - i0 == 1 && j->dotw4 && r + 3 < r1) {
				float v[4];
				j->dotw4(j->cols, w, j->wrb, xa, v);
				for (int k = 0; k < 4; k++) {
					o[k] = v[k];
					if (j->bias)
						o[k] += j->bias[r + k];
				}
				r += 3;
				continue;
			}
			if (i1 - i0 == 4 && j->dot4) {
				float v[4];
				j->dot4(j->cols, w, xa, j->xab, v);
				for (int i = 0; i < 4; i++)
					o[i * ld] = v[i];
			} else {
				for (int i = 0; i < i1 - i0; i++)
					o[i * ld] = j->dot(j->cols, w, xa + (size_t)i * j->xab);
			}
			if (j->bias)
				for (int i = 0; i < i1 - i0; i++)
					o[i * ld] += j->bias[r];
		}
	}
}

/* x16 path: task t covers row groups [t*rb, t*rb + rb). */
static void mat_x16_task(void *arg, int t, int thread)
{
	MatJob *j = arg;
	int64_t g0 = (int64_t)t * j->rb, g1 = g0 + j->rb;
	int64_t ng = (j->rows + KX16_ROWS - 1) / KX16_ROWS;
	if (g1 > ng)
		g1 = ng;
	size_t ld = (size_t)j->rows;
	for (int i0 = 0; i0 < j->n; i0 += KX16_MAXR) {
		int nr = j->n - i0 < KX16_MAXR ? j->n - i0 : KX16_MAXR;
		const uint8_t *xa = j->xa + (size_t)i0 * j->xab;
		for (int64_t g = g0; g < g1; g++) {
			int64_t r0 = g * KX16_ROWS;
			int nc = j->rows - r0 < KX16_ROWS ? (int)(j->rows - r0)
							  : KX16_ROWS;
			float *o = j->out + (size_t)i0 * ld + (size_t)r0;
			j->x16(j->cols, j->wx + (size_t)g * j->wxb, xa, j->xab,
			       nr, o, ld, nc);
			if (j->bias)
				for (int i = 0; i < nr; i++)
					for (int c = 0; c < nc; c++)
						o[i * ld + c] += j->bias[r0 + c];
		}
	}
}

/* One job of the matmuls in c->mm, back to back in one task space: task
 * t belongs to the member whose [first, first + tasks) holds it. */
static void group_task(void *arg, int t, int thread)
{
	CpuBackend *c = arg;
	int m = 0;
	while (t >= c->mm_first[m + 1])
		m++;
	MatJob *j = &c->mm[m];
	if (j->x16)
		mat_x16_task(j, t - c->mm_first[m], thread);
	else
		mat_task(j, t - c->mm_first[m], thread);
}

/* Task split of one matmul: j->rb and the number of tasks. */
static int mm_plan(CpuBackend *c, MatJob *j, const Tensor *w)
{
	int th = tp_threads(c->tp);
	if (w->dev && c->k->x16[w->type]) {
		int64_t ng = (w->rows + KX16_ROWS - 1) / KX16_ROWS;
		int64_t gb = ng / ((int64_t)th * 4);
		if (gb < 1)
			gb = 1;
		j->wx = w->dev;
		j->wxb = kernel_x16_bytes(w->type, KX16_ROWS, w->cols);
		j->x16 = c->k->x16[w->type];
		j->rb = (int)gb;
		return (int)((ng + gb - 1) / gb);
	}
	/* Enough tasks to balance threads, few enough that each weight row
	 * block is worth a dispatch. Decode takes longer runs of rows: each
	 * task starts its weight stream cold (dotw4 prefetches within the
	 * task's own rows), and TinyLlama F16 decode went 11.9-12.5 -> 13.0-13.2
	 * tok/s with 256 rather than 64 (2 threads). */
	int64_t rb = w->rows / ((int64_t)th * 8);
	if (rb < 1)
		rb = 1;
	if (rb > (j->n == 1 ? 256 : 64))
		rb = j->n == 1 ? 256 : 64;
	/* Prefill: keep a task's weight rows within L2 while every
	 * activation row passes over them. */
	int64_t fit = (int64_t)(L2_BLOCK / j->wrb);
	if (j->n > XTILE && rb > fit)
		rb = fit < 4 ? 4 : fit;
	if (c->k->gemm[w->type] && j->n >= c->k->gemm_x) {
		int64_t gw = c->k->gemm_w; /* whole tiles of rows per task */
		if (rb >= gw)
			rb = rb / gw * gw;
		j->gemm = 1;
		j->k = c->k;
	}
	j->rb = (int)rb;
	return (int)((w->rows + rb - 1) / rb);
}

/* Run the pending matmuls (they share x): its rows are prepared once for
 * all of them, then one pool job computes every output. */
static void mm_flush(CpuBackend *c)
{
	int cnt = c->mm_count;
	if (!cnt)
		return;
	c->mm_count = 0;
	MatJob *j0 = &c->mm[0];
	if (kernel_act(j0->type) != KACT_F32) {
		MatJob *j = j0;
		j->xab = kernel_act_bytes(j->type, j->cols);
		j->xab = (j->xab + ALIGN - 1) & ~(size_t)(ALIGN - 1);
		if ((size_t)j->n > SIZE_MAX / j->xab) {
			fail(c, "cpu: matmul: n %d too large", j->n);
			return;
		}
		void *a = grow(c->act, &c->act_cap, (size_t)j->n * j->xab);
		if (!a) {
			fail(c, "cpu: matmul: out of memory for %d activation rows",
			     j->n);
			return;
		}
		c->act = a;
		j->xa = a;
		run(c, j->n, prep_task, j, 8.0 * j->n * (double)j->cols);
		for (int m = 1; m < cnt; m++) {
			c->mm[m].xa = j->xa;
			c->mm[m].xab = j->xab;
		}
	}
	double work = 0;
	for (int m = 0; m < cnt; m++)
		work += (double)c->mm[m].n * (double)c->mm[m].rows *
			(double)c->mm[m].cols;
	run(c, c->mm_first[cnt], group_task, c, work);
}

/* Matmuls are queued while they read the same x (q, k and v; gate and
 * up) and run as one job at the next op that is not such a matmul: one
 * hand-off to the workers instead of three, the activation quantised once,
 * and the small k/v products no longer run alone on one thread. Every
 * other op and sync() flushes first, so call order is kept. */
static void cpu_matmul(Backend *b, float *out, const float *x, const Tensor *w,
		       const Tensor *bias, int n)
{
	CpuBackend *c = (CpuBackend *)b;
	size_t wrb = dtype_row_bytes(w->type, w->cols);
	if (!w->data || !wrb || w->rows <= 0 || n <= 0 ||
	    w->rows > INT32_MAX) {
		mm_flush(c);
		fail(c, "cpu: matmul: bad weight %s (%s, %lld x %lld) or n %d",
		     w->name ? w->name : "?", dtype_name(w->type),
		     (long long)w->rows, (long long)w->cols, n);
		return;
	}
	/* joins the queue only when it reads the same x the same way and
	 * does not write what a queued one reads or writes */
	if (c->mm_count) {
		const MatJob *p = &c->mm[0];
		int ok = c->mm_count < MM_FUSE && p->x == x && p->n == n &&
			 p->cols == w->cols &&
			 kernel_act(p->type) == kernel_act(w->type);
		const char *o0 = (const char *)out;
		const char *o1 = o0 + (size_t)n * (size_t)w->rows * sizeof(float);
		const char *x0 = (const char *)x;
		const char *x1 = x0 + (size_t)n * (size_t)w->cols * sizeof(float);
		if (ok && o0 < x1 && x0 < o1)
			ok = 0;
		for (int m = 0; ok && m < c->mm_count; m++) {
			const char *q0 = (const char *)c->mm[m].out;
			const char *q1 = q0 + (size_t)n * (size_t)c->mm[m].rows *
						      sizeof(float);
			if (o0 < q1 && q0 < o1)
				ok = 0;
		}
		if (!ok)
			mm_flush(c);
	}
	const float *bf = NULL;
	if (bias && bias->data) {
		/* each queued matmul keeps its own f32 bias copy */
		int m = c->mm_count;
		if (!(bf = vec_f32(c, bias, w->rows, &c->bias_buf[m],
				   &c->bias_cap[m])))
			return;
	}
	int m = c->mm_count;
	MatJob *j = &c->mm[m];
	*j = (MatJob){
		.out = out, .w = float_rows(w),
		.wrb = wrb, .x = x,
		.cols = w->cols,
		.rows = w->rows, .n = n, .type = w->type,
		.dot = c->k->dot[w->type], .dot4 = c->k->dot4[w->type],
		.dotw4 = c->k->dotw4[w->type],
		.bias = bf,
		.quant = kernel_act(w->type) == KACT_Q8 ? c->k->quant_q8 : c->k->quant_q8k,
	};
	if (kernel_act(w->type) == KACT_F32) {
		/* float weights take the activations as they are */
		j->xa = (const uint8_t *)x;
		j->xab = (size_t)w->cols * sizeof(float);
	}
	int tasks = mm_plan(c, j, w);
	if (c->mm_first[m] > INT32_MAX - tasks) {
		mm_flush(c);
		fail(c, "cpu: matmul: too many tasks");
		return;
	}
	c->mm_first[m + 1] = c->mm_first[m] + tasks;
	c->mm_count = m + 1;
}

/* ---- rope ---- */

/* Rotate one row of n_heads heads at position pos (the angle in f32 like
 * HF, positions * inv_freq in float, its cos/sin to full precision). */
static void rope_row(float *row, int n_heads, int head_dim, int pos,
		     const float *inv_freq, int layout)
{
	int half = head_dim / 2;
	float cs[MAX_HEAD_DIM / 2], sn[MAX_HEAD_DIM / 2];
	for (int k = 0; k < half; k++) {
		float a = (float)pos * inv_freq[k];
		cs[k] = (float)cos((double)a);
		sn[k] = (float)sin((double)a);
	}
	for (int h = 0; h < n_heads; h++) {
		float *v = row + (size_t)h * head_dim;
		if (layout == ROPE_HALF) {
			for (int k = 0; k < half; k++) {
				float a0 = v[k], a1 = v[k + half];
				v[k] = a0 * cs[k] - a1 * sn[k];
				v[k + half] = a0 * sn[k] + a1 * cs[k];
			}
		} else {
			for (int k = 0; k < half; k++) {
				float a0 = v[2 * k], a1 = v[2 * k + 1];
				v[2 * k] = a0 * cs[k] - a1 * sn[k];
				v[2 * k + 1] = a0 * sn[k] + a1 * cs[k];
			}
		}
	}
}

static int rope_args_ok(CpuBackend *c, int head_dim, int layout)
{
	if (head_dim <= 0 || head_dim % 2 || head_dim > MAX_HEAD_DIM ||
	    (layout != ROPE_HALF && layout != ROPE_INTERLEAVED)) {
		fail(c, "cpu: rope: bad head_dim %d or layout %d", head_dim,
		     layout);
		return 0;
	}
	return 1;
}

static void cpu_rope(Backend *b, float *x, int n, int stride, int n_heads,
		     int head_dim, int pos0, const float *inv_freq, int layout)
{
	mm_flush((CpuBackend *)b); /* queued matmuls write x */
	if (!rope_args_ok((CpuBackend *)b, head_dim, layout))
		return;
	for (int i = 0; i < n; i++)
		rope_row(x + (size_t)i * (size_t)stride, n_heads, head_dim,
			 pos0 + i, inv_freq, layout);
}

static void cpu_rope_rows(Backend *b, float *x, int n, int stride,
			  int n_heads, int head_dim, const int32_t *pos,
			  const float *inv_freq, int layout)
{
	mm_flush((CpuBackend *)b); /* queued matmuls write x */
	if (!rope_args_ok((CpuBackend *)b, head_dim, layout))
		return;
	for (int i = 0; i < n; i++)
		rope_row(x + (size_t)i * (size_t)stride, n_heads, head_dim,
			 pos[i], inv_freq, layout);
}

/* ---- attention ---- */

/* attention, one task per (query row, KV head, chunk of its query heads). */
typedef struct {
	float *out;               /* [n][n_heads*head_dim] */
	const float *q, *kc, *vc; /* queries, K cache, V cache (backend.h) */
	int n, pos0;              /* query rows, position of the first */
	int n_heads, n_kv_heads, head_dim; /* shape */
	float scale;              /* 1/sqrt(head_dim) */
	const KernelSet *k;       /* dot_rows, exp_sub, axpy_rows */
	const int32_t *pos;       /* paged: [n] positions, NULL = pos0 + i */
	const int32_t *tab;       /* paged: [n] block table offsets */
	const int32_t *tables;    /* paged: the block tables */
	int bs;                   /* paged: tokens per block */
} AttJob;

/* Cache row of position p: itself, or through the block table tb. */
static inline size_t att_row(const int32_t *tb, int bs, int p)
{
	return tb ? (size_t)tb[p / bs] * (size_t)bs + (size_t)(p % bs)
		  : (size_t)p;
}

/* One query row and head: online softmax over blocks of ATT_BLOCK keys
 * (one rescale of the accumulator per block, not per key). The paged and
 * the contiguous cache differ only in where a row is read. */
static void att_task(void *arg, int t, int thread)
{
	AttJob *j = arg;
	int grp = j->n_heads / j->n_kv_heads; /* query heads per KV head */
	int chunks = (grp + ATT_HEADS - 1) / ATT_HEADS;
	int per_row = j->n_kv_heads * chunks;
	int i = t / per_row, kvh = t % per_row / chunks;
	int h0 = kvh * grp + t % chunks * ATT_HEADS;
	int nh = kvh * grp + grp - h0 < ATT_HEADS ? kvh * grp + grp - h0 : ATT_HEADS;
	int hd = j->head_dim, qdim = j->n_heads * hd;
	int kvdim = j->n_kv_heads * hd;
	const float *q = j->q + (size_t)i * qdim + (size_t)h0 * hd;
	const float *kb = j->kc + (size_t)kvh * hd, *vb = j->vc + (size_t)kvh * hd;
	const int32_t *tb = j->pos ? j->tables + j->tab[i] : NULL;
	int bs = j->bs;
	int len = (j->pos ? j->pos[i] : j->pos0 + i) + 1;
	float acc[ATT_HEADS][MAX_HEAD_DIM], s[ATT_BLOCK];
	const float *kr[ATT_BLOCK], *vr[ATT_BLOCK]; /* this block's cache rows */
	float m[ATT_HEADS], l[ATT_HEADS];
	for (int h = 0; h < nh; h++) {
		m[h] = -INFINITY;
		l[h] = 0;
		for (int e = 0; e < hd; e++)
			acc[h][e] = 0;
	}
	for (int p0 = 0; p0 < len; p0 += ATT_BLOCK) {
		int cnt = len - p0 < ATT_BLOCK ? len - p0 : ATT_BLOCK;
		for (int p = 0; p < cnt; p++) {
			size_t row = att_row(tb, bs, p0 + p) * kvdim;
			kr[p] = kb + row;
			vr[p] = vb + row;
		}
		/* the query heads sharing this KV head in turn, while the
		 * block's K and V rows are in L1 */
		for (int h = 0; h < nh; h++) {
			j->k->dot_rows(hd, q + (size_t)h * hd, kr, cnt, s);
			float bm = -INFINITY;
			for (int p = 0; p < cnt; p++) {
				s[p] *= j->scale;
				if (s[p] > bm)
					bm = s[p];
			}
			float nm = bm > m[h] ? bm : m[h];
			float corr = expf(m[h] - nm); /* 0 on the first block */
			l[h] *= corr;
			j->k->exp_sub(s, cnt, nm);
			for (int p = 0; p < cnt; p++)
				l[h] += s[p];
			j->k->axpy_rows(hd, corr, s, vr, cnt, acc[h]);
			m[h] = nm;
		}
	}
	for (int h = 0; h < nh; h++) {
		float *o = j->out + (size_t)i * qdim + (size_t)(h0 + h) * hd;
		float il = 1.f / l[h];
		for (int e = 0; e < hd; e++)
			o[e] = acc[h][e] * il;
	}
}

/* Tasks of an attention job: per query row, per KV head, per chunk of up
 * to ATT_HEADS of its query heads. */
static int att_tasks(int n, int n_heads, int n_kv_heads)
{
	int grp = n_heads / n_kv_heads;
	return n * n_kv_heads * ((grp + ATT_HEADS - 1) / ATT_HEADS);
}

static int att_shape_ok(CpuBackend *c, int n, int n_heads, int n_kv_heads,
			int head_dim)
{
	if (n <= 0 || n_heads <= 0 || n_kv_heads <= 0 ||
	    n_heads % n_kv_heads || head_dim <= 0 || head_dim > MAX_HEAD_DIM ||
	    (int64_t)n * n_heads > INT32_MAX) {
		fail(c, "cpu: attention: bad shape n %d heads %d/%d dim %d", n,
		     n_heads, n_kv_heads, head_dim);
		return 0;
	}
	return 1;
}

static void cpu_attention(Backend *b, float *out, const float *q,
			  const float *kc, const float *vc, int n, int pos0,
			  int n_heads, int n_kv_heads, int head_dim)
{
	CpuBackend *c = (CpuBackend *)b;
	mm_flush(c);
	if (!att_shape_ok(c, n, n_heads, n_kv_heads, head_dim))
		return;
	if (pos0 < 0) {
		fail(c, "cpu: attention: position %d", pos0);
		return;
	}
	AttJob j = {out, q, kc, vc, n, pos0, n_heads, n_kv_heads, head_dim,
		    1.0f / sqrtf((float)head_dim), c->k, NULL, NULL, NULL, 1};
	/* scores and weighted sum: 2 * head_dim per key, ~pos0 + n/2 keys */
	run(c, att_tasks(n, n_heads, n_kv_heads), att_task, &j,
	    2.0 * n * n_heads * head_dim * ((double)pos0 + n / 2.0 + 1));
}

static void cpu_attention_paged(Backend *b, float *out, const float *q,
				const float *kc, const float *vc,
				const int32_t *pos, const int32_t *tab,
				const int32_t *tables, int block_size, int n,
				int n_heads, int n_kv_heads, int head_dim)
{
	CpuBackend *c = (CpuBackend *)b;
	mm_flush(c);
	if (!att_shape_ok(c, n, n_heads, n_kv_heads, head_dim))
		return;
	double keys = 0;
	for (int i = 0; i < n; i++) {
		if (pos[i] < 0 || tab[i] < 0 || block_size <= 0) {
			fail(c, "cpu: attention_paged: row %d position %d "
			     "table %d block %d", i, pos[i], tab[i],
			     block_size);
			return;
		}
		keys += pos[i] + 1.0;
	}
	AttJob j = {out, q, kc, vc, n, 0, n_heads, n_kv_heads, head_dim,
		    1.0f / sqrtf((float)head_dim), c->k, pos, tab, tables,
		    block_size};
	run(c, att_tasks(n, n_heads, n_kv_heads), att_task, &j, 2.0 * n_heads * head_dim * keys);
}

static void cpu_kv_store(Backend *b, float *kc, float *vc, const float *k,
			 const float *v, const int32_t *slots, int n,
			 int kv_dim)
{
	CpuBackend *c = (CpuBackend *)b;
	mm_flush(c);
	size_t row = (size_t)kv_dim * sizeof(float);
	for (int i = 0; i < n; i++) {
		if (slots[i] < 0) {
			fail(c, "cpu: kv_store: slot %d", slots[i]);
			return;
		}
		memcpy(kc + (size_t)slots[i] * kv_dim, k + (size_t)i * kv_dim,
		       row);
		memcpy(vc + (size_t)slots[i] * kv_dim, v + (size_t)i * kv_dim,
		       row);
	}
}

/* ---- element-wise ---- */

/* swiglu/add in chunks of ELT_CHUNK elements. */
typedef struct {
	float *x;       /* in/out (gate for swiglu) */
	const float *y; /* second operand (up for swiglu) */
	size_t count;   /* elements */
	int op;         /* 0 swiglu, 1 add */
	const KernelSet *k; /* silu_mul */
} EltJob;

static void elt_task(void *arg, int t, int thread)
{
	EltJob *j = arg;
	size_t a = (size_t)t * ELT_CHUNK, e = a + ELT_CHUNK;
	if (e > j->count)
		e = j->count;
	float *x = j->x;
	const float *y = j->y;
	if (j->op == 0)
		j->k->silu_mul(x + a, y + a, e - a);
	else
		for (size_t i = a; i < e; i++)
			x[i] += y[i];
}

static void elt(CpuBackend *c, float *x, const float *y, size_t count, int op)
{
	mm_flush(c);
	EltJob j = {x, y, count, op, c->k};
	size_t tasks = (count + ELT_CHUNK - 1) / ELT_CHUNK;
	if (tasks > INT32_MAX) {
		fail(c, "cpu: element-wise op over %zu elements", count);
		return;
	}
	run(c, (int)tasks, elt_task, &j, 4.0 * (double)count);
}

static void cpu_swiglu(Backend *b, float *gate, const float *up, size_t count)
{
	elt((CpuBackend *)b, gate, up, count, 0);
}

static void cpu_add(Backend *b, float *x, const float *y, size_t count)
{
	elt((CpuBackend *)b, x, y, count, 1);
}

static int32_t cpu_argmax(Backend *b, const float *x, int n)
{
	mm_flush((CpuBackend *)b);
	int32_t best = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i]))
			best = i;
	return best;
}

static const BackendOps cpu_ops = {
	.name = "cpu",
	.destroy = cpu_destroy,
	.describe = cpu_describe,
	.memory = cpu_memory,
	.alloc = cpu_alloc,
	.free = cpu_free,
	.upload = cpu_upload,
	.release = cpu_release,
	.to_host = cpu_copy,
	.to_dev = cpu_copy,
	.sync = cpu_sync,
	.embed = cpu_embed,
	.rmsnorm = cpu_rmsnorm,
	.matmul = cpu_matmul,
	.rope = cpu_rope,
	.attention = cpu_attention,
	.swiglu = cpu_swiglu,
	.add = cpu_add,
	.argmax = cpu_argmax,
	.kv_store = cpu_kv_store,
	.attention_paged = cpu_attention_paged,
	.rope_rows = cpu_rope_rows,
};

static void set_desc(CpuBackend *c)
{
	const char *lv = !strcmp(c->k->name, "avx512") ? "AVX-512"
			 : !strcmp(c->k->name, "avx2") ? "AVX2"
						       : "no SIMD";
	snprintf(c->desc, sizeof c->desc, "CPU, %d thread%s, %s",
		 c->base.threads, c->base.threads == 1 ? "" : "s", lv);
}

int cpu_backend_set_simd(Backend *b, const char *level)
{
	CpuBackend *c = (CpuBackend *)b;
	const KernelSet *k = kernels_by_name(level);
	if (!k)
		return -1;
	c->k = k;
	set_desc(c);
	return 0;
}

void cpu_backend_set_par_min(Backend *b, double work)
{
	((CpuBackend *)b)->par_min_work = work;
}

Backend *cpu_backend_create(int threads, char *err, size_t errlen)
{
	CpuBackend *c = calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "cpu backend: out of memory");
		return NULL;
	}
	c->tp = tp_create(threads, err, errlen);
	if (!c->tp) {
		free(c);
		return NULL;
	}
	c->base.ops = &cpu_ops;
	c->base.threads = tp_threads(c->tp);

	c->k = kernels_get();
	c->par_min_work = PAR_MIN_WORK;
	set_desc(c);
	return &c->base;
}
