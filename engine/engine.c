/*
 * engine.c - the generate loop: prefill the prompt in batches, then decode
 * one token at a time, sampling, streaming text through the tokenizer's
 * TokenStream and holding text back while it may still be the start of a
 * stop string. Every buffer the loop needs is allocated before the first
 * forward(), so decoding a token never calls malloc. See engine.h.
 */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct Engine {
	Model model;  /* weights, config, tokenizer */
	Backend *be;  /* backend the state lives on */
	State st;     /* activations + KV cache */
	int loaded;   /* model_load succeeded (model_free needed) */
	int ctx;      /* KV capacity in tokens */
	int max_batch; /* prefill chunk */
	int32_t *cached; /* [ctx] the tokens whose K/V the cache holds */
	int n_cached;  /* valid entries of cached (a prefix of the cache) */
	int no_reuse;  /* 1: always prefill the whole prompt */
	float *tk_vals;   /* [TOPK_MAX] device: topk_rows of the logits ... */
	int32_t *tk_ids;  /* ... and their ids (made on first use) */
	double *tk_sum;   /* [1] device: expsum_rows of the logits ... */
	float *tk_temp;   /* [1] device: ... at this temperature */
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *finish_reason_name(finish_reason r)
{
	switch (r) {
	case FINISH_NONE: return "none";
	case FINISH_LENGTH: return "length";
	case FINISH_EOS: return "eos";
	case FINISH_STOP: return "stop";
	case FINISH_CANCEL: return "cancel";
	case FINISH_CONTEXT: return "context";
	case FINISH_ERROR: return "error";
	}
	return "?";
}

void gen_params_default(GenParams *p)
{
	memset(p, 0, sizeof *p);
	p->max_tokens = 256;
	sampler_params_default(&p->sampling);
}

int engine_open(const char *path, const EngineOptions *opt, Engine **out,
		char *err, size_t errlen)
{
	EngineOptions def = {0};
	if (!opt)
		opt = &def;
	*out = NULL;
	Engine *e = calloc(1, sizeof *e);
	if (!e) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	BackendOptions bo = {.name = opt->backend, .threads = opt->threads,
			     .device = opt->device, .quiet = opt->quiet};
	e->be = backend_open(&bo, err, errlen);
	if (!e->be)
		goto fail;
	ModelLoadOptions lo = {.overrides = opt->overrides,
			       .n_overrides = opt->n_overrides};
	if (model_load_ex(path, &lo, &e->model, err, errlen) != 0)
		goto fail;
	e->loaded = 1;
	int mctx = e->model.cfg.max_seq_len > 0 ? e->model.cfg.max_seq_len
						: 4096;
	e->ctx = opt->ctx > 0 ? opt->ctx : (mctx < 4096 ? mctx : 4096);
	e->max_batch = opt->max_batch > 0 ? opt->max_batch : 512;
	if (e->max_batch > e->ctx)
		e->max_batch = e->ctx;
	if (state_init(&e->st, &e->model, e->be, e->ctx, e->max_batch, err,
		       errlen) != 0)
		goto fail;
	e->no_reuse = opt->no_prefix_reuse;
	e->cached = malloc(sizeof(int32_t) * (size_t)e->ctx);
	if (!e->cached) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* the file shrank while it was read in (mapguard.h) */
	if (model_files_changed(&e->model, 0, err, errlen))
		goto fail;
	*out = e;
	return 0;
fail:
	engine_close(e);
	return -1;
}

void engine_close(Engine *e)
{
	if (!e)
		return;
	state_free(&e->st, &e->model);
	if (e->tk_vals)
		e->be->ops->free(e->be, e->tk_vals);
	if (e->tk_ids)
		e->be->ops->free(e->be, e->tk_ids);
	if (e->tk_sum)
		e->be->ops->free(e->be, e->tk_sum);
	if (e->tk_temp)
		e->be->ops->free(e->be, e->tk_temp);
	if (e->loaded)
		model_free(&e->model);
	if (e->be)
		e->be->ops->destroy(e->be);
	free(e->cached);
	free(e);
}

const Model *engine_model(const Engine *e)
{
	return &e->model;
}

const Tokenizer *engine_tokenizer(const Engine *e)
{
	return e->model.tok;
}

Backend *engine_backend(Engine *e)
{
	return e->be;
}

int engine_ctx(const Engine *e)
{
	return e->ctx;
}

int engine_fatal(const Engine *e)
{
	return e->st.fatal || model_files_changed(&e->model, 0, NULL, 0);
}

int engine_files_changed(const Engine *e, char *why, size_t whylen)
{
	return model_files_changed(&e->model, 1, why, whylen);
}

State *engine_state(Engine *e)
{
	return &e->st;
}

/* Feed tokens through forward() and record them as cached. */
static int feed(Engine *e, const int32_t *ids, int n, char *err,
		size_t errlen)
{
	int pos = e->st.pos;
	if (forward(&e->model, &e->st, ids, n, err, errlen) != 0) {
		e->n_cached = 0; /* the cache rows are in doubt */
		return -1;
	}
	memcpy(e->cached + pos, ids, sizeof(int32_t) * (size_t)n);
	e->n_cached = pos + n;
	return 0;
}

/* Feed n tokens from the current position in chunks of max_batch. */
static int prefill(Engine *e, const int32_t *ids, int n, char *err,
		   size_t errlen)
{
	for (int i = 0; i < n; i += e->max_batch) {
		int k = n - i < e->max_batch ? n - i : e->max_batch;
		if (feed(e, ids + i, k, err, errlen) != 0)
			return -1;
	}
	return 0;
}

/* Where the earliest complete stop string starts in g's held text, or
 * -1. */
static long find_stop(const GenRun *g)
{
	const GenParams *p = g->p;
	long best = -1;
	for (int i = 0; i < p->n_stop; i++) {
		size_t sl = strlen(p->stop[i]);
		if (sl == 0 || sl > g->hlen)
			continue;
		for (size_t o = 0; o + sl <= g->hlen; o++) {
			if (best >= 0 && (long)o >= best)
				break;
			if (!memcmp(g->hbuf + o, p->stop[i], sl)) {
				best = (long)o;
				break;
			}
		}
	}
	return best;
}

/* Length of the longest suffix of the held text that is a proper prefix
 * of a stop string: that much must be held back. */
static size_t partial_stop(const GenRun *g)
{
	const GenParams *p = g->p;
	size_t keep = 0;
	for (int i = 0; i < p->n_stop; i++) {
		size_t sl = strlen(p->stop[i]);
		size_t maxk = sl - 1 < g->hlen ? sl - 1 : g->hlen;
		for (size_t k = maxk; k > keep; k--) {
			if (!memcmp(g->hbuf + g->hlen - k, p->stop[i], k)) {
				keep = k;
				break;
			}
		}
	}
	return keep;
}

int genrun_init(GenRun *g, const Tokenizer *tok, int n_vocab, int ctx,
		const int32_t *prompt, int n_prompt, const GenParams *p,
		engine_text_fn cb, void *ud, GenResult *res, char *err,
		size_t errlen)
{
	memset(g, 0, sizeof *g);
	memset(res, 0, sizeof *res);
	res->n_prompt = n_prompt;
	if (n_prompt <= 0) {
		snprintf(err, errlen, "empty prompt (no tokens)");
		return -1;
	}
	if (n_prompt > ctx) {
		snprintf(err, errlen, "prompt of %d tokens does not fit the "
			 "context of %d", n_prompt, ctx);
		return -1;
	}
	if (p->n_stop < 0 || p->n_stop > ENGINE_MAX_STOP) {
		snprintf(err, errlen, "at most %d stop strings",
			 ENGINE_MAX_STOP);
		return -1;
	}
	if (p->n_logit_bias < 0 || p->n_logit_bias > ENGINE_MAX_BIAS) {
		snprintf(err, errlen, "at most %d logit biases",
			 ENGINE_MAX_BIAS);
		return -1;
	}
	for (int i = 0; i < p->n_logit_bias; i++) {
		if (p->logit_bias[i].id < 0 ||
		    p->logit_bias[i].id >= n_vocab) {
			snprintf(err, errlen, "logit_bias: token id %d out of "
				 "range", p->logit_bias[i].id);
			return -1;
		}
	}
	/* The last sampled token needs no cache row, hence + 1. */
	int max_gen = ctx - n_prompt + 1;
	if (p->max_tokens > 0 && p->max_tokens < max_gen)
		max_gen = p->max_tokens;
	size_t stop_max = 0;
	for (int i = 0; i < p->n_stop; i++) {
		size_t sl = p->stop[i] ? strlen(p->stop[i]) : 0;
		if (!p->stop[i] || sl > 4096) {
			snprintf(err, errlen, "stop string %d missing or over "
				 "4096 bytes", i);
			return -1;
		}
		if (sl > stop_max)
			stop_max = sl;
	}
	g->p = p;
	g->res = res;
	g->cb = cb;
	g->ud = ud;
	g->tok = tok;
	g->max_gen = max_gen;
	g->hcap = stop_max + 2 * TOKSTREAM_MAX_PIECE;
	g->piece = malloc(TOKSTREAM_MAX_PIECE);
	g->hbuf = malloc(g->hcap);
	res->ids = malloc(sizeof(int32_t) * (size_t)max_gen);
	if (!g->piece || !g->hbuf || !res->ids ||
	    sampler_init(&g->smp, &p->sampling, n_vocab) != 0) {
		free(g->piece);
		free(g->hbuf);
		free(res->ids);
		res->ids = NULL;
		g->piece = g->hbuf = NULL;
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	g->smp_ok = 1;
	for (int i = 0; i < n_prompt; i++)
		sampler_accept(&g->smp, prompt[i]);
	tokstream_init(&g->ts, tok);
	g->t0 = now();
	return 0;
}

finish_reason genrun_step(GenRun *g, float *logits, int32_t *next)
{
	const GenParams *p = g->p;
	for (int i = 0; i < p->n_logit_bias; i++)
		logits[p->logit_bias[i].id] += p->logit_bias[i].bias;
	return genrun_step_id(g, sampler_sample(&g->smp, logits), next);
}

int genrun_plain_greedy(const GenRun *g)
{
	const SamplerParams *s = &g->p->sampling;
	/* the conditions under which sampler_sample is argmax_lowest of the
	 * logits as given (see apply_penalties) */
	return !(s->temperature > 0.0f) && g->p->n_logit_bias == 0 &&
	       !sampler_penalties_on(s);
}

int genrun_topk(const GenRun *g)
{
	int k = sampler_takes_topk(&g->smp);
	return g->p->n_logit_bias == 0 && k <= TOPK_MAX ? k : 0;
}

int genrun_top(const GenRun *g)
{
	return g->p->n_logit_bias == 0 && sampler_takes_top(&g->smp);
}

int32_t genrun_pick_top(GenRun *g, const float *vals, const int32_t *ids,
			double sum)
{
	return sampler_sample_top(&g->smp, vals, ids, TOPK_MAX, sum);
}

finish_reason genrun_step_topk(GenRun *g, const float *vals,
			       const int32_t *ids, int32_t *next)
{
	return genrun_step_id(g, sampler_sample_topk(&g->smp, vals, ids),
			      next);
}

finish_reason genrun_step_id(GenRun *g, int32_t id, int32_t *next)
{
	const GenParams *p = g->p;
	GenResult *res = g->res;
	if (res->n_gen == 0)
		res->ttft = now() - g->t0;
	if (!p->ignore_eos && tokenizer_is_eog(g->tok, id))
		return FINISH_EOS;
	res->ids[res->n_gen++] = id;
	sampler_accept(&g->smp, id);

	/* Text: append the piece, release what can no longer start a stop
	 * string. */
	int np = tokstream_push(&g->ts, id, g->piece, TOKSTREAM_MAX_PIECE);
	if (np < 0)
		np = 0; /* an id the tokenizer lacks: no text */
	memcpy(g->hbuf + g->hlen, g->piece, (size_t)np);
	g->hlen += (size_t)np;
	long at = find_stop(g);
	size_t release = at >= 0 ? (size_t)at : g->hlen - partial_stop(g);
	int cancel = 0;
	if (g->cb)
		cancel = g->cb(g->ud, id, g->hbuf, release);
	memmove(g->hbuf, g->hbuf + release, g->hlen - release);
	g->hlen -= release;
	if (at >= 0)
		return FINISH_STOP;
	if (cancel)
		return FINISH_CANCEL;
	if (res->n_gen >= g->max_gen)
		return p->max_tokens > 0 && res->n_gen >= p->max_tokens
			       ? FINISH_LENGTH
			       : FINISH_CONTEXT;
	*next = id;
	return FINISH_NONE;
}

void genrun_end(GenRun *g, finish_reason fin)
{
	/* Release what was held back (an unfinished stop prefix, an
	 * incomplete UTF-8 sequence) unless the text was cut on purpose. */
	if (fin == FINISH_LENGTH || fin == FINISH_EOS || fin == FINISH_CONTEXT) {
		int nf = tokstream_flush(&g->ts, g->piece, TOKSTREAM_MAX_PIECE);
		if (nf > 0) {
			memcpy(g->hbuf + g->hlen, g->piece, (size_t)nf);
			g->hlen += (size_t)nf;
		}
		/* the flushed bytes may complete a stop string */
		long at = find_stop(g);
		size_t rel = at >= 0 ? (size_t)at : g->hlen;
		if (at >= 0)
			fin = FINISH_STOP;
		if (g->cb && rel > 0)
			g->cb(g->ud, -1, g->hbuf, rel);
	}
	g->res->finish = fin;
}

void genrun_free(GenRun *g)
{
	if (g->smp_ok)
		sampler_free(&g->smp);
	free(g->piece);
	free(g->hbuf);
	g->piece = g->hbuf = NULL;
	g->smp_ok = 0;
}

/* Where the next token is picked: from the host copy of the logits, by
 * the backend's argmax (greedy), from its top-k candidates, or from its
 * TOPK_MAX best and the softmax sum (top-p / min-p without top-k; the
 * logits follow only when those cannot settle the draw). */
enum { PICK_HOST, PICK_ARGMAX, PICK_TOPK, PICK_TOP };

static int device_pick(Engine *e, const GenRun *g)
{
	const BackendOps *op = e->be->ops;
	if (op->argmax && genrun_plain_greedy(g))
		return PICK_ARGMAX;
	int topk = genrun_topk(g) != 0;
	int top = !topk && op->expsum_rows && genrun_top(g);
	if (!op->topk_rows || (!topk && !top) ||
	    e->model.cfg.vocab_size < TOPK_MAX)
		return PICK_HOST;
	if (!e->tk_vals)
		e->tk_vals = op->alloc(e->be, sizeof(float) * TOPK_MAX);
	if (!e->tk_ids)
		e->tk_ids = op->alloc(e->be, sizeof(int32_t) * TOPK_MAX);
	if (!e->tk_vals || !e->tk_ids)
		return PICK_HOST;
	if (topk)
		return PICK_TOPK;
	if (!e->tk_sum)
		e->tk_sum = op->alloc(e->be, sizeof(double));
	if (!e->tk_temp)
		e->tk_temp = op->alloc(e->be, sizeof(float));
	if (!e->tk_sum || !e->tk_temp)
		return PICK_HOST;
	op->to_dev(e->be, e->tk_temp, &g->p->sampling.temperature,
		   sizeof(float));
	return PICK_TOP;
}

/* Wait for the queued work; -1 with the backend's message. */
static int sync_be(Engine *e, char *err, size_t errlen)
{
	int fatal;
	if (backend_sync(e->be, &fatal, err, errlen) == 0)
		return 0;
	e->st.fatal |= fatal != 0;
	return -1;
}

static finish_reason pick_step(Engine *e, GenRun *g, int pick, int32_t *next,
			       char *err, size_t errlen)
{
	if (pick == PICK_HOST)
		return genrun_step(g, e->st.logits, next);
	const BackendOps *op = e->be->ops;
	int vocab = e->model.cfg.vocab_size;
	int32_t id = 0, ids[TOPK_MAX];
	float vals[TOPK_MAX];
	double sum = 0.0;
	if (pick == PICK_ARGMAX) {
		id = op->argmax(e->be, e->st.logits_dev, vocab);
	} else {
		op->topk_rows(e->be, e->tk_vals, e->tk_ids, e->st.logits_dev, 1,
			      vocab, TOPK_MAX);
		op->to_host(e->be, vals, e->tk_vals, sizeof vals);
		op->to_host(e->be, ids, e->tk_ids, sizeof ids);
	}
	if (pick == PICK_TOP) {
		op->expsum_rows(e->be, e->tk_sum, e->st.logits_dev, e->tk_temp,
				1, vocab);
		op->to_host(e->be, &sum, e->tk_sum, sizeof sum);
	}
	if (sync_be(e, err, errlen) != 0)
		return FINISH_ERROR;
	if (pick == PICK_ARGMAX)
		return genrun_step_id(g, id, next);
	if (pick == PICK_TOPK)
		return genrun_step_topk(g, vals, ids, next);
	id = genrun_pick_top(g, vals, ids, sum);
	if (id >= 0)
		return genrun_step_id(g, id, next);
	/* a flat distribution: the draw needs every logit */
	op->to_host(e->be, e->st.logits, e->st.logits_dev,
		    sizeof(float) * (size_t)vocab);
	if (sync_be(e, err, errlen) != 0)
		return FINISH_ERROR;
	return genrun_step(g, e->st.logits, next);
}

int engine_generate(Engine *e, const int32_t *prompt, int n_prompt,
		    const GenParams *p, engine_text_fn cb, void *ud,
		    GenResult *res, char *err, size_t errlen)
{
	if (e->st.fatal) {
		memset(res, 0, sizeof *res);
		res->n_prompt = n_prompt;
		if (!model_files_changed(&e->model, 0, err, errlen))
			snprintf(err, errlen, "backend unusable after an "
				 "earlier fatal error");
		return -1;
	}
	GenRun g;
	if (genrun_init(&g, e->model.tok, e->model.cfg.vocab_size, e->ctx,
			prompt, n_prompt, p, cb, ud, res, err, errlen) != 0)
		return -1;
	/* A token picked where the logits are: they need not cross the bus */
	int pick = device_pick(e, &g);
	e->st.logits_on_device = pick != PICK_HOST;

	int rc = 0;
	double t0 = g.t0;
	/* Reuse the cached K/V of the longest common prefix (a chat that
	 * grows turn by turn), but always run the last prompt token: its
	 * logits are needed. */
	int reuse = 0;
	if (!e->no_reuse)
		while (reuse < e->n_cached && reuse < n_prompt - 1 &&
		       e->cached[reuse] == prompt[reuse])
			reuse++;
	res->n_reused = reuse;
	e->st.pos = reuse;
	e->n_cached = reuse;
	if (prefill(e, prompt + reuse, n_prompt - reuse, err, errlen) != 0) {
		res->finish = FINISH_ERROR;
		rc = -1;
		goto out;
	}
	double t1 = now();
	res->t_prefill = t1 - t0;

	finish_reason fin = FINISH_NONE;
	while (fin == FINISH_NONE) {
		int32_t id;
		fin = pick_step(e, &g, pick, &id, err, errlen);
		if (fin == FINISH_ERROR) {
			rc = -1;
			break;
		}
		if (fin == FINISH_NONE && feed(e, &id, 1, err, errlen) != 0) {
			fin = FINISH_ERROR;
			rc = -1;
		}
	}
	genrun_end(&g, fin);
	res->t_decode = now() - t1;
out:
	e->st.logits_on_device = 0;
	genrun_free(&g);
	return rc;
}

int engine_bench(Engine *e, int n_prompt, int n_gen, double *prefill_tps,
		 double *decode_tps, char *err, size_t errlen)
{
	int n_vocab = e->model.cfg.vocab_size;
	if (n_prompt < 1 || n_gen < 0 || n_prompt + n_gen > e->ctx) {
		snprintf(err, errlen, "bench: %d + %d tokens do not fit the "
			 "context of %d", n_prompt, n_gen, e->ctx);
		return -1;
	}
	int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_prompt);
	if (!ids) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* Arbitrary but fixed tokens: the cost does not depend on them. */
	for (int i = 0; i < n_prompt; i++)
		ids[i] = (int32_t)(((int64_t)i * 7919 + 13) % n_vocab);
	e->st.pos = 0;
	e->n_cached = 0; /* bench tokens are not a prompt worth keeping */
	double t0 = now();
	int rc = prefill(e, ids, n_prompt, err, errlen);
	double t1 = now();
	free(ids);
	if (rc)
		return -1;
	*prefill_tps = n_prompt / (t1 - t0);
	int32_t id = 0;
	const BackendOps *op = e->be->ops;
	/* greedy like a plain generate: argmax where the logits are */
	e->st.logits_on_device = op->argmax != NULL;
	for (int i = 0; i < n_gen; i++) {
		const float *l = e->st.logits;
		id = 0;
		if (op->argmax)
			id = op->argmax(e->be, e->st.logits_dev, n_vocab);
		else
			for (int j = 1; j < n_vocab; j++)
				if (l[j] > l[id])
					id = j;
		if (forward(&e->model, &e->st, &id, 1, err, errlen)) {
			e->st.logits_on_device = 0;
			return -1;
		}
	}
	e->st.logits_on_device = 0;
	double t2 = now();
	*decode_tps = n_gen > 0 ? n_gen / (t2 - t1) : 0.0;
	return 0;
}
