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
 * At that flush it compares the recording with the graph it built last
 * time: same kernels in the same order means one cudaGraphExec update per
 * changed launch and a single cudaGraphLaunch; otherwise it builds a new
 * graph (a chain of kernel nodes). Anything that cannot sit in a graph
 * (cuBLAS) flushes first and ends the recording for that step.
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
};

/* The recorder and the cached graph; lives in CudaBackend. */
struct GraphState {
	int enabled;                  /* INFERD_CUDA_GRAPHS != 0 */
	int on;                       /* recording the current step */
	std::vector<LaunchRec> rec;   /* this step's launches */
	std::vector<LaunchRec> built; /* what the cached graph holds */
	std::vector<cudaGraphNode_t> nodes; /* its nodes, in order */
	cudaGraph_t graph;            /* cached graph, or NULL */
	cudaGraphExec_t exec;         /* its executable, or NULL */
	long launches, rebuilds;      /* statistics */
};

/* Issue what was recorded (graph launch) and stop recording. */
void cuda_flush(CudaBackend *c);
/* Start recording a decode step (called by embed of one token). */
void cuda_graph_begin(CudaBackend *c);
void cuda_graph_destroy(CudaBackend *c);

/* Launch kernel now, or record it while a step is being recorded. */
template <typename... KArgs, typename... Args>
static void cuda_launch(CudaBackend *c, void (*kernel)(KArgs...), dim3 grid,
			dim3 block, size_t smem, const char *what,
			Args... args)
{
	static_assert(sizeof...(KArgs) == sizeof...(Args),
		      "argument count");
	if (!c->graph->on) {
		kernel<<<grid, block, smem, c->stream>>>(args...);
		CUDA_LAUNCHED(c, what);
		return;
	}
	c->graph->rec.emplace_back();
	LaunchRec &r = c->graph->rec.back();
	r.func = (const void *)kernel;
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
