/*
 * graph.cu - recording decode steps into CUDA graphs; see graph.cuh.
 */
#include "graph.cuh"

static void params_of(LaunchRec &r, std::vector<void *> &ptrs,
		      cudaKernelNodeParams *p)
{
	ptrs.resize(r.offs.size());
	for (size_t i = 0; i < r.offs.size(); i++)
		ptrs[i] = r.blob.data() + r.offs[i];
	*p = cudaKernelNodeParams{};
	p->func = (void *)r.func;
	p->gridDim = r.grid;
	p->blockDim = r.block;
	p->sharedMemBytes = (unsigned)r.smem;
	p->kernelParams = ptrs.data();
}

static int same_shape(const LaunchRec &a, const LaunchRec &b)
{
	return a.grid.x == b.grid.x && a.grid.y == b.grid.y &&
	       a.grid.z == b.grid.z && a.block.x == b.block.x &&
	       a.block.y == b.block.y && a.block.z == b.block.z &&
	       a.smem == b.smem;
}

static void part_destroy(GraphPart &p)
{
	if (p.exec)
		cudaGraphExecDestroy(p.exec);
	if (p.graph)
		cudaGraphDestroy(p.graph);
	p.exec = NULL;
	p.graph = NULL;
	p.nodes.clear();
	p.built.clear();
}

void cuda_graph_destroy(CudaBackend *c)
{
	for (GraphPart &p : c->graph->parts)
		part_destroy(p);
	c->graph->parts.clear();
}

/* A fresh chain of kernel nodes for g->rec in part pt. */
static int build(CudaBackend *c, GraphPart &pt)
{
	GraphState *g = c->graph;
	part_destroy(pt);
	if (cuda_fail(c, cudaGraphCreate(&pt.graph, 0), "graph create"))
		return -1;
	std::vector<void *> ptrs;
	cudaGraphNode_t prev = NULL;
	for (LaunchRec &r : g->rec) {
		cudaKernelNodeParams p;
		params_of(r, ptrs, &p);
		cudaGraphNode_t node;
		if (cuda_fail(c,
			      cudaGraphAddKernelNode(&node, pt.graph, NULL, 0,
						     &p),
			      "graph add kernel"))
			return -1;
		if (prev) {
			cudaGraphEdgeData e = {};
			if (g->pdl) {
				e.from_port = cudaGraphKernelNodePortProgrammatic;
				e.type = cudaGraphDependencyTypeProgrammatic;
			}
			if (cuda_fail(c, cudaGraphAddDependencies(pt.graph, &prev,
								  &node, &e, 1),
				      "graph add edge"))
				return -1;
		}
		pt.nodes.push_back(node);
		prev = node;
	}
	if (cuda_fail(c, cudaGraphInstantiate(&pt.exec, pt.graph, 0),
		      "graph instantiate"))
		return -1;
	g->rebuilds++;
	return 0;
}

/* Patch part pt's cached executable to g->rec; -1 when it cannot be. */
static int update(CudaBackend *c, GraphPart &pt)
{
	GraphState *g = c->graph;
	if (!pt.exec || pt.built.size() != g->rec.size())
		return -1;
	for (size_t i = 0; i < g->rec.size(); i++)
		if (g->rec[i].func != pt.built[i].func)
			return -1;
	std::vector<void *> ptrs;
	for (size_t i = 0; i < g->rec.size(); i++) {
		LaunchRec &r = g->rec[i], &b = pt.built[i];
		if (same_shape(r, b) && r.blob == b.blob)
			continue;
		cudaKernelNodeParams p;
		params_of(r, ptrs, &p);
		if (cudaGraphExecKernelNodeSetParams(pt.exec, pt.nodes[i],
						     &p) != cudaSuccess) {
			cudaGetLastError();
			return -1;
		}
	}
	return 0;
}

/* Launch g->rec as part g->part (updated or rebuilt) and clear it. */
static void launch_part(CudaBackend *c)
{
	GraphState *g = c->graph;
	if (g->rec.empty())
		return;
	if (c->has_err) { /* a recorded op failed: run nothing */
		g->rec.clear();
		return;
	}
	if (g->parts.size() <= g->part)
		g->parts.resize(g->part + 1, GraphPart{{}, {}, NULL, NULL});
	GraphPart &pt = g->parts[g->part];
	if (update(c, pt) != 0 && build(c, pt) != 0) {
		g->rec.clear();
		part_destroy(pt);
		return;
	}
	pt.built.swap(g->rec);
	g->rec.clear();
	g->part++;
	g->launches++;
	cuda_fail(c, cudaGraphLaunch(pt.exec, c->stream), "graph launch");
}

void cuda_flush(CudaBackend *c)
{
	GraphState *g = c->graph;
	if (g->mv.n && !g->mv_emitting)
		cuda_mv_emit(c);
	if (!g->on)
		return;
	g->on = 0;
	launch_part(c);
	g->part = 0;
	/* the next step's embed waits for this before it rewrites ids_host */
	cuda_fail(c, cudaEventRecord(c->graph_done, c->stream), "graph launch");
}

void cuda_graph_cut(CudaBackend *c)
{
	GraphState *g = c->graph;
	if (!g->on || !g->split || g->rec.size() < GRAPH_PART_MIN ||
	    (g->mv.n && !g->mv_emitting))
		return;
	launch_part(c);
}

void cuda_mark_matvec(CudaBackend *c, const float *out, size_t rows,
		      const float *in, size_t cols)
{
	GraphState *g = c->graph;
	if (!g->on || g->rec.empty() || g->rec.back().grid.y != 1)
		return;
	g->rec.back().mv_out = out;
	g->rec.back().mv_rows = rows;
	g->rec.back().mv_in = in;
	g->rec.back().mv_cols = cols;
}

int cuda_fuse_last(CudaBackend *c, const float *written, size_t count,
		   int epi, float *aux)
{
	GraphState *g = c->graph;
	if (g->mv.n && !g->mv_emitting)
		cuda_mv_emit(c);
	if (!g->on || !g->fuse || g->rec.empty())
		return 0;
	LaunchRec &r = g->rec.back();
	if (!r.mv_out || r.mv_out != written || r.mv_rows != count ||
	    r.offs.size() < 2)
		return 0;
	/* aux is written while other warps still read the input */
	if (aux < r.mv_in + r.mv_cols && r.mv_in < aux + count)
		return 0;
	size_t n = r.offs.size();
	int cur;
	memcpy(&cur, r.blob.data() + r.offs[n - 2], sizeof cur);
	if (cur != EPI_NONE)
		return 0;
	cuda_x_stale(c); /* the epilogue writes aux */
	memcpy(r.blob.data() + r.offs[n - 2], &epi, sizeof epi);
	memcpy(r.blob.data() + r.offs[n - 1], &aux, sizeof aux);
	r.mv_out = NULL; /* one epilogue per launch */
	return 1;
}

void cuda_graph_begin(CudaBackend *c)
{
	cuda_flush(c);
	if (c->graph->enabled)
		c->graph->on = 1;
}

/* ---- whole batched steps ---- */

#define STEP_MIN_ROWS 3 /* fewer rows take the mat-vec and the recorder */

void cuda_steps_destroy(CudaBackend *c)
{
	for (StepGraph &e : c->graph->steps)
		if (e.exec)
			cudaGraphExecDestroy(e.exec);
	c->graph->steps.clear();
}

void cuda_step_begin(Backend *b, int rows)
{
	CudaBackend *c = cb(b);
	GraphState *g = c->graph;
	g->step_mode = STEP_NONE;
	/* a recorded step must convert its own x: a replay skips the ops */
	cuda_x_stale(c);
	if (!g->step_enabled || rows < STEP_MIN_ROWS || c->has_err)
		return;
	cuda_flush(c);
	size_t i = 0;
	while (i < g->steps.size() && g->steps[i].rows != rows)
		i++;
	if (i == g->steps.size()) {
		if (i >= STEP_GRAPHS_MAX)
			return;
		g->steps.push_back(StepGraph{rows, 0, 0, NULL});
	}
	StepGraph &e = g->steps[i];
	if (e.exec && e.gen == c->buf_gen) {
		g->step_mode = STEP_REPLAY;
		g->step_cur = i;
		return;
	}
	if (e.exec) { /* a buffer moved since: record again */
		cudaGraphExecDestroy(e.exec);
		e.exec = NULL;
		e.seen = 0;
	}
	if (!e.seen || e.gen != c->buf_gen) { /* run it as usual first */
		e.seen = 1;
		e.gen = c->buf_gen;
		return;
	}
	if (cuda_fail(c, cudaStreamBeginCapture(c->stream,
						cudaStreamCaptureModeThreadLocal),
		      "step graph capture"))
		return;
	g->step_mode = STEP_CAPTURE;
	g->step_cur = i;
}

void cuda_step_end(Backend *b)
{
	CudaBackend *c = cb(b);
	GraphState *g = c->graph;
	int mode = g->step_mode;
	g->step_mode = STEP_NONE;
	cuda_x_stale(c);
	if (mode == STEP_NONE)
		return;
	StepGraph &e = g->steps[g->step_cur];
	if (mode == STEP_REPLAY) {
		if (!cuda_fail(c, cudaGraphLaunch(e.exec, c->stream),
			       "step graph launch"))
			g->step_replays++;
		return;
	}
	cudaGraph_t gr = NULL;
	cudaError_t err = cudaStreamEndCapture(c->stream, &gr);
	if (err != cudaSuccess || !gr || c->has_err || e.gen != c->buf_gen) {
		/* Nothing of this step ran. Its requests get the error, and
		 * later steps run op by op: a capture that failed once would
		 * fail again. */
		cudaGetLastError();
		if (gr)
			cudaGraphDestroy(gr);
		g->step_enabled = 0;
		if (!c->has_err)
			cuda_fail_msg(c, "capturing a batched step failed (%s); "
				      "step graphs are off from now on",
				      err != cudaSuccess ?
				      cudaGetErrorString(err) : "buffers moved");
		return;
	}
	cudaGraphExec_t ex = NULL;
	err = cudaGraphInstantiate(&ex, gr, 0);
	cudaGraphDestroy(gr);
	if (cuda_fail(c, err, "step graph instantiate")) {
		g->step_enabled = 0;
		return;
	}
	e.exec = ex;
	g->step_captures++;
	cuda_fail(c, cudaGraphLaunch(ex, c->stream), "step graph launch");
}
