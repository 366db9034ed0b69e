/*
 * graph.cuh - CUDA graphs for the decode step, without help from the
 * engine.
 *
 * A decode step is hundreds of small kernels whose launch cost, not the
 * weights' bandwidth, bounds small models. forward() issues the same op
 * sequence every step; only a few arguments change (positions, the KV
 * row pointers, chunk counts). So from an embed() of one token until the
 * next op that must touch the host (to_host, sync, argmax, alloc...), the
 * backend records kernel launches instead of issuing them (cuda_launch).
 * At that flush (and at part ends, GraphPart) it compares the recording
 * with the graph it built last time: same kernels in the same order means
 * one cudaGraphExec update per changed launch and a single
 * cudaGraphLaunch; otherwise it builds a new graph (a chain of kernel
 * nodes, linked by programmatic edges so each kernel starts while the one
 * before drains: common.cuh, pdl_enter). Anything that cannot sit in a
 * graph (cuBLAS) flushes first and ends the recording for that step.
 * INFERD_CUDA_GRAPHS=0 turns it off.
 */
#ifndef INFERD_CUDA_GRAPH_CUH
#define INFERD_CUDA_GRAPH_CUH

#include <string.h>

#include <vector>

#include "common.cuh"

/* One recorded kernel launch with its packed arguments. */
struct LaunchRec {
	const void *func;               /* the __global__ function */
	dim3 grid, block;               /* launch shape */
	size_t smem;                    /* dynamic shared memory */
	std::vector<unsigned char> blob; /* arguments, packed and aligned */
	std::vector<size_t> offs;       /* offset of each argument in blob */
	const float *mv_out;            /* one-row mat-vec: its output, else
					 * NULL (see cuda_fuse_last) */
	size_t mv_rows;                 /* and its length */
	const float *mv_in;             /* its input x ... */
	size_t mv_cols;                 /* ... of this many floats */
};

/* Epilogues a recorded one-row mat-vec can take over from the op that
 * follows it (its last two kernel arguments are int epi, float *aux):
 * v is the row's result, out[row] = v always, then */
enum {
	EPI_NONE = 0,        /* nothing else */
	EPI_ADD = 1,         /* aux[row] += v        (add(aux, out)) */
	EPI_SWIGLU_GATE = 2, /* aux[row] = silu(aux[row]) * v (out = up) */
	EPI_SWIGLU_UP = 3,   /* out[row] = silu(v) * aux[row] (out = gate) */
};

/* A captured batched step (BackendOps.step_begin): the first step of a
 * row count runs as usual (buffers reach their size), the second is
 * captured from the stream, cuBLAS included, and later ones replay it:
 * their ops are skipped one by one and the graph launched at step_end. */
struct StepGraph {
	int rows;              /* its key */
	int seen;              /* ran once at this buf_gen */
	unsigned long gen;     /* buf_gen it was run or captured at */
	cudaGraphExec_t exec;  /* the capture, or NULL */
};
enum { STEP_NONE, STEP_CAPTURE, STEP_REPLAY }; /* GraphState.step_mode */
#define STEP_GRAPHS_MAX 256 /* row counts kept */

/* Up to three one-row F32/F16/BF16 mat-vecs of the same x recorded in a
 * row (q, k, v) become one launch (matmul.cu: a k or v of a small model
 * alone is a few microseconds of ramp for 1 MB). They wait here until a
 * third arrives (then: one merged launch) or anything else is launched
 * (then: one launch each, so the last can still take an epilogue). */
struct MvSeg {
	float *out;          /* its output */
	const uint8_t *w;    /* its weight rows */
	const float *bias;   /* or NULL */
	int rows;            /* weight rows */
};
struct MvPending {
	int n;               /* segments waiting */
	int type;            /* their weight type (all the same) */
	int cols;            /* and width */
	const float *x;      /* their shared input */
	MvSeg seg[3];
};

/* One piece of a recorded step and its cached executable graph. */
struct GraphPart {
	std::vector<LaunchRec> built; /* what the cached graph holds */
	std::vector<cudaGraphNode_t> nodes; /* its nodes, in order */
	cudaGraph_t graph;            /* cached graph, or NULL */
	cudaGraphExec_t exec;         /* its executable, or NULL */
};

/* A step is launched in parts of about this many kernels, each as soon as
 * it is recorded, so the GPU runs part k while the host records part
 * k + 1 (a 7B step is ~290 kernels; recorded whole, the GPU idled for all
 * of the recording). Parts end only where cuda_graph_cut() is called, at
 * an rmsnorm, where no fusion reaches back. */
#define GRAPH_PART_MIN 64

/* The recorder and the cached graphs; lives in CudaBackend. */
struct GraphState {
	int enabled;                  /* INFERD_CUDA_GRAPHS != 0 */
	int on;                       /* recording the current step */
	int fuse;                     /* INFERD_CUDA_FUSE != 0 */
	int pdl;                      /* INFERD_CUDA_PDL != 0: programmatic
				       * edges between the kernel nodes */
	std::vector<LaunchRec> rec;   /* this part's launches */
	std::vector<GraphPart> parts; /* cached graphs, by part index */
	size_t part;                  /* index of the part being recorded */
	int split;                    /* INFERD_CUDA_GRAPH_PARTS != 0 */
	long launches, rebuilds;      /* statistics */
	MvPending mv;                 /* mat-vecs waiting to be merged */
	int mv_emitting;              /* emitting them (no recursion) */
	int step_enabled;             /* INFERD_CUDA_STEP_GRAPHS != 0 */
	int step_mode;                /* STEP_*: what the current step does */
	size_t step_cur;              /* its entry in steps */
	std::vector<StepGraph> steps; /* by row count */
	long step_captures, step_replays; /* statistics */
};

/* While recording: if the last launch is a one-row mat-vec that wrote
 * `written` (count rows), give it epilogue epi with aux and return 1, so
 * the caller launches nothing (INFERD_CUDA_FUSE=0 turns this off). */
int cuda_fuse_last(CudaBackend *c, const float *written, size_t count,
		   int epi, float *aux);
/* Mark the last recorded launch as a fusable one-row mat-vec. */
void cuda_mark_matvec(CudaBackend *c, const float *out, size_t rows,
		      const float *in, size_t cols);

/* Record the waiting mat-vecs (matmul.cu) before anything else. */
void cuda_mv_emit(CudaBackend *c);
/* gate and up waiting as a pair, then swiglu(gate, up): one launch that
 * computes both rows of each pair and stores silu(gate) * up into gate (and
 * up into up). 1 when it took the swiglu, 0 to go on as usual. */
int cuda_mv_pair_swiglu(CudaBackend *c, float *gate, const float *up,
			size_t count);

/* Issue what was recorded (graph launch) and stop recording. */
void cuda_flush(CudaBackend *c);
/* Launch what was recorded so far as one part and record on, when the
 * part has GRAPH_PART_MIN kernels (called by rmsnorm, see GraphPart). */
void cuda_graph_cut(CudaBackend *c);
/* Start recording a decode step (called by embed of one token). */
void cuda_graph_begin(CudaBackend *c);
void cuda_graph_destroy(CudaBackend *c);
/* BackendOps.step_begin / step_end (see StepGraph). */
void cuda_step_begin(Backend *b, int rows);
void cuda_step_end(Backend *b);
/* Destroy every captured step. */
void cuda_steps_destroy(CudaBackend *c);

/* Launch kernel now, or record it while a step is being recorded. */
template <typename... KArgs, typename... Args>
static void cuda_launch(CudaBackend *c, void (*kernel)(KArgs...), dim3 grid,
			dim3 block, size_t smem, const char *what,
			Args... args)
{
	static_assert(sizeof...(KArgs) == sizeof...(Args),
		      "argument count");
	cuda_x_stale(c); /* any kernel may write an x of xq or xh */
	if (c->graph->step_mode == STEP_REPLAY)
		return; /* the step's graph holds it */
	if (c->graph->mv.n && !c->graph->mv_emitting)
		cuda_mv_emit(c); /* recorded launches keep the call order */
	if (!c->graph->on) {
		kernel<<<grid, block, smem, c->stream>>>(args...);
		CUDA_LAUNCHED(c, what);
		return;
	}
	c->graph->rec.emplace_back();
	LaunchRec &r = c->graph->rec.back();
	r.func = (const void *)kernel;
	r.mv_out = NULL;
	r.mv_rows = 0;
	r.grid = grid;
	r.block = block;
	r.smem = smem;
	size_t off = 0;
	auto put = [&](auto v) {
		using T = decltype(v);
		off = (off + alignof(T) - 1) & ~(alignof(T) - 1);
		r.offs.push_back(off);
		r.blob.resize(off + sizeof(T));
		memcpy(r.blob.data() + off, &v, sizeof(T));
		off += sizeof(T);
	};
	(put(static_cast<KArgs>(args)), ...);
}

#endif
