/*
 * worker.c - one thread per model: it owns the model's Engine and runs the
 * model's jobs (load, unload, generate, tokenize, detokenize) one at a
 * time, in arrival order. Replies go back to the loop as ready frames
 * through daemon_post(); token events are posted as the engine produces
 * them, and the request's cancel flag (set by the loop on cancel or
 * disconnect) stops a generation at the next token.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "chat.h"
#include "daemon.h"
#include "frame.h"
#include "protocol.h"
#include "scheduler.h"

/* Configuration the workers need; set by server.c before they start. */
extern const DaemonConfig *daemon_cfg;
extern Db *daemon_db;

double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Tell r's client why its first token takes a while: the model loads. */
static void post_loading(Slot *m, Request *r)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;
	frame_reply(&sb, &pk, r->id, "loading", 1);
	frame_str(&pk, "model");
	frame_str(&pk, m->name);
	uint8_t *f = frame_end(&sb, &len);
	if (f)
		daemon_post(m->d, r, f, len, 0);
}

/* End r with an error (also stored for the log). */
static void job_error(Slot *m, Request *r, const char *code, const char *msg)
{
	size_t len = 0;
	snprintf(r->error, sizeof r->error, "%s", msg);
	uint8_t *f = r->internal ? NULL : frame_error(r->id, code, msg, -1, &len);
	daemon_post(m->d, r, f, len, 1);
}

/* End r with {id, type:"ok"} plus nothing else (load / unload). */
static void job_ok(Slot *m, Request *r)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len = 0;
	uint8_t *f = NULL;
	if (!r->internal) {
		frame_reply(&sb, &pk, r->id, "ok", r->op == OP_LOAD ? 2 : 1);
		frame_str(&pk, "model");
		frame_str(&pk, m->name);
		if (r->op == OP_LOAD) {
			frame_str(&pk, "load_ms");
			msgpack_pack_double(&pk, m->load_ms);
		}
		f = frame_end(&sb, &len);
	}
	daemon_post(m->d, r, f, len, 1);
}

/* Sample the backend's description and memory for status (worker only:
 * the backend is not shared with the loop). */
static void sample_device(Slot *m)
{
	Backend *be = m->eng ? engine_backend(m->eng) : NULL;
	uint64_t total = 0, free_b = 0;
	if (be && be->ops->memory)
		be->ops->memory(be, &total, &free_b);
	const char *desc = be && be->ops->describe ? be->ops->describe(be) : "";
	pthread_mutex_lock(&m->mu);
	snprintf(m->device, sizeof m->device, "%s", desc ? desc : "");
	m->dev_total = total;
	m->dev_free = free_b;
	pthread_mutex_unlock(&m->mu);
}

static void model_db(Slot *m, int loaded, int used)
{
	DbModel dm = { m->name, m->path, m->format, m->arch, m->quant,
		       m->params, m->est_bytes, loaded, used };
	if (daemon_db)
		db_log_model(daemon_db, &dm);
}

/* Open the engine if it is not open. Returns 0 or -1 with err. */
static int ensure_loaded(Slot *m, char *err, size_t errlen)
{
	if (m->eng)
		return 0;
	pthread_mutex_lock(&m->mu);
	m->state = MS_LOADING;
	pthread_mutex_unlock(&m->mu);
	double t0 = mono_now();
	Engine *e = NULL;
	int rc = slot_confined(m, err, errlen);
	if (rc == 0)
		rc = engine_open(m->path, &daemon_cfg->eng, &e, err, errlen);
	if (rc < 0 && !strstr(err, m->path)) {
		/* name the file: it may have changed since the last load */
		char why[512];
		snprintf(why, sizeof why, "%s", err);
		if (snprintf(err, errlen, "cannot load %s: %s", m->path, why) < 0)
			err[0] = 0;
	}
	pthread_mutex_lock(&m->mu);
	if (rc < 0) {
		m->state = MS_UNLOADED;
		pthread_mutex_unlock(&m->mu);
		return -1;
	}
	m->eng = e;
	m->state = MS_LOADED;
	m->load_ms = (mono_now() - t0) * 1e3;
	const Model *em = engine_model(e);
	snprintf(m->arch, sizeof m->arch, "%s", em->cfg.arch);
	snprintf(m->quant, sizeof m->quant, "%s", em->quant);
	m->params = em->n_params;
	m->ctx = engine_ctx(e);
	pthread_mutex_unlock(&m->mu);
	sample_device(m);
	fprintf(stderr, "inferd: loaded %s (%s, %s) on %s in %.0f ms\n", m->name,
		m->arch, m->quant, m->device, m->load_ms);
	model_db(m, 1, 0);
	return 0;
}

static void unload(Slot *m)
{
	if (!m->eng)
		return;
	batcher_free(m->batch); /* nothing runs: callers make sure */
	m->batch = NULL;
	pthread_mutex_lock(&m->mu);
	m->batching = 0;
	m->est_bytes -= m->pool_bytes;
	m->pool_bytes = 0;
	pthread_mutex_unlock(&m->mu);
	engine_close(m->eng);
	pthread_mutex_lock(&m->mu); /* the loop reads eng under mu */
	m->eng = NULL;
	m->state = MS_UNLOADED;
	m->device[0] = 0;
	pthread_mutex_unlock(&m->mu);
	fprintf(stderr, "inferd: unloaded %s\n", m->name);
}

/* Before a job on a loaded model that runs nothing now: if its files
 * changed since the load (truncated under the mapping, replaced, resized
 * or modified: engine_files_changed), unload it so the job loads the file
 * as it is now instead of running on a mix of old and new weights. While
 * generates run, the change waits for them to end (a truncation fails
 * them on its own). */
static void drop_stale(Slot *m)
{
	char why[PATH_MAX + 128];
	if (!m->eng || m->n_run > 0 || !engine_files_changed(m->eng, why,
							     sizeof why))
		return;
	fprintf(stderr, "inferd: %s: %s; unloading it\n", m->name, why);
	unload(m);
}

/* Per-generation context for the token callback. */
typedef struct GenCtx {
	Slot *m;        /* the model */
	Request *r;      /* the request */
	double t_first;  /* monotonic time of the first piece, 0 before */
} GenCtx;

static int on_text(void *ud, int32_t token, const char *text, size_t len)
{
	GenCtx *g = ud;
	Request *r = g->r;
	if (atomic_load(&r->cancel) || atomic_load(&g->m->abort))
		return 1;
	/* one event per generated token, also while its text is held back
	 * (len 0: stop-string prefix or an incomplete UTF-8 sequence), so
	 * clients can count tokens; text released at the end has token -1 */
	if (len == 0 && token < 0)
		return 0;
	if (!g->t_first)
		g->t_first = mono_now();
	if (token >= 0)
		atomic_fetch_add(&r->live_gen, 1);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t flen;
	frame_reply(&sb, &pk, r->id, "token", 2);
	frame_str(&pk, "token");
	msgpack_pack_int32(&pk, token);
	frame_str(&pk, "text");
	msgpack_pack_bin(&pk, len);
	msgpack_pack_bin_body(&pk, text, len);
	uint8_t *f = frame_end(&sb, &flen);
	if (f)
		daemon_post(g->m->d, r, f, flen, 0);
	return atomic_load(&r->cancel) || atomic_load(&g->m->abort);
}

/* The prompt ids of a generate: the raw prompt as infer-run encodes it
 * (BOS when the tokenizer adds one, special tokens parsed), or the chat
 * messages rendered with the model's own template, whose end-of-turn text
 * becomes a stop string as in `infer-run chat`. A system prompt given with
 * a plain prompt makes it a two-message chat. */
static int prompt_ids(Slot *m, Request *r, int32_t **ids, char *err,
		      size_t errlen)
{
	const Tokenizer *t = engine_tokenizer(m->eng);
	if (!r->n_msgs && !r->system)
		return tokenizer_encode(t, r->text, r->text_len,
					tokenizer_adds_bos(t), 1, ids, err,
					errlen);
	ChatTemplate tmpl;
	if (chat_template_for_model(engine_model(m->eng), r->tmpl, &tmpl, err,
				    errlen) < 0)
		return -1;
	int n = (r->n_msgs ? r->n_msgs : 1) + (r->system != NULL);
	ChatMessage *msgs = calloc((size_t)n, sizeof *msgs);
	if (!msgs) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int k = 0;
	if (r->system)
		msgs[k++] = (ChatMessage){ "system", r->system };
	if (r->n_msgs)
		for (int i = 0; i < r->n_msgs; i++)
			msgs[k++] = (ChatMessage){ r->roles[i], r->contents[i] };
	else
		msgs[k++] = (ChatMessage){ "user", r->text };
	size_t len;
	char *text = chat_render(&tmpl, msgs, k, 1, NULL, &len, err, errlen);
	free(msgs);
	if (!text)
		return -1;
	int nids = tokenizer_encode(t, text, len,
				    chat_add_bos(&tmpl, tokenizer_adds_bos(t)),
				    1, ids, err, errlen);
	free(text);
	const char *eot = chat_end_of_turn(&tmpl);
	if (nids >= 0 && eot[0] && r->gp.n_stop < ENGINE_MAX_STOP &&
	    (r->stop[r->gp.n_stop] = strdup(eot)))
		r->gp.stop[r->gp.n_stop] = r->stop[r->gp.n_stop], r->gp.n_stop++;
	return nids;
}

static void post_done(Slot *m, Request *r);

static void run_generate(Slot *m, Request *r)
{
	char err[256];
	int32_t *ids = NULL;
	int n = prompt_ids(m, r, &ids, err, sizeof err);
	if (n < 0) {
		job_error(m, r, PROTO_E_BAD, err);
		return;
	}
	if (n == 0) {
		free(ids);
		job_error(m, r, PROTO_E_BAD, "the prompt has no tokens");
		return;
	}
	GenCtx g = { m, r, 0 };
	GenResult res = { 0 };
	double t0 = mono_now();
	int rc = engine_generate(m->eng, ids, n, &r->gp, on_text, &g, &res,
				 err, sizeof err);
	free(ids);
	free(res.ids);
	double t1 = mono_now();
	r->n_prompt = n;
	if (rc < 0) {
		job_error(m, r, PROTO_E_ENGINE, err);
		return;
	}
	r->n_gen = res.n_gen;
	r->ttft = (t0 - r->t_start) + res.ttft;
	r->t_total = t1 - r->t_start;
	r->tok_s = res.t_decode > 0 && res.n_gen > 1 ?
		   (res.n_gen - 1) / res.t_decode : 0;
	snprintf(r->finish, sizeof r->finish, "%s",
		 finish_reason_name(res.finish));
	if (res.finish == FINISH_ERROR) {
		job_error(m, r, PROTO_E_ENGINE, "backend error during generation");
		return;
	}
	post_done(m, r);
}

/* End a generate with its "done" event (finish, counts, times). */
static void post_done(Slot *m, Request *r)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;
	frame_reply(&sb, &pk, r->id, "done", 6);
	frame_str(&pk, "finish");
	frame_str(&pk, r->finish);
	frame_str(&pk, "prompt_tokens");
	msgpack_pack_int(&pk, r->n_prompt);
	frame_str(&pk, "gen_tokens");
	msgpack_pack_int(&pk, r->n_gen);
	frame_str(&pk, "ttft_ms");
	msgpack_pack_double(&pk, r->ttft * 1e3);
	frame_str(&pk, "total_ms");
	msgpack_pack_double(&pk, r->t_total * 1e3);
	frame_str(&pk, "tok_s");
	msgpack_pack_double(&pk, r->tok_s);
	uint8_t *f = frame_end(&sb, &len);
	daemon_post(m->d, r, f, len, 1);
}

static void run_tokenize(Slot *m, Request *r)
{
	char err[256];
	int32_t *ids = NULL;
	const Tokenizer *t = engine_tokenizer(m->eng);
	int n = tokenizer_encode(t, r->text, r->text_len, r->add_bos,
				 r->special, &ids, err, sizeof err);
	if (n < 0) {
		job_error(m, r, PROTO_E_BAD, err);
		return;
	}
	r->n_prompt = n;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;
	frame_reply(&sb, &pk, r->id, "ok", 1);
	frame_str(&pk, "tokens");
	msgpack_pack_array(&pk, (size_t)n);
	for (int i = 0; i < n; i++)
		msgpack_pack_int32(&pk, ids[i]);
	free(ids);
	uint8_t *f = frame_end(&sb, &len);
	daemon_post(m->d, r, f, len, 1);
}

static void run_detokenize(Slot *m, Request *r)
{
	char err[256];
	size_t tl = 0;
	const Tokenizer *t = engine_tokenizer(m->eng);
	int nv = tokenizer_n_vocab(t);
	for (int i = 0; i < r->n_ids; i++)
		if (r->ids[i] < 0 || r->ids[i] >= nv) {
			snprintf(err, sizeof err, "token %d is outside the "
				 "vocabulary (0..%d)", r->ids[i], nv - 1);
			job_error(m, r, PROTO_E_BAD, err);
			return;
		}
	char *text = tokenizer_decode(t, r->ids, r->n_ids, &tl, err, sizeof err);
	if (!text) {
		job_error(m, r, PROTO_E_BAD, err);
		return;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;
	frame_reply(&sb, &pk, r->id, "ok", 1);
	frame_str(&pk, "text");
	msgpack_pack_bin(&pk, tl);
	msgpack_pack_bin_body(&pk, text, tl);
	free(text);
	uint8_t *f = frame_end(&sb, &len);
	daemon_post(m->d, r, f, len, 1);
}

static void run_job(Slot *m, Request *r)
{
	char err[512];
	if (atomic_load(&r->cancel)) {
		pthread_mutex_lock(&m->mu);
		if (!m->eng && m->state == MS_LOADING)
			m->state = MS_UNLOADED; /* drop the admission's reservation */
		pthread_mutex_unlock(&m->mu);
		snprintf(r->finish, sizeof r->finish, "cancel");
		if (r->op == OP_GENERATE) { /* a generate ends as cancelled */
			r->t_total = mono_now() - r->t_start;
			post_done(m, r);
		} else {
			job_error(m, r, PROTO_E_BAD, "cancelled before it started");
		}
		return;
	}
	if (r->op == OP_UNLOAD) {
		if (r->internal) {
			/* idle unload: only if still idle and nothing waits */
			pthread_mutex_lock(&m->mu);
			int idle = m->qlen == 0 && m->keep_alive >= 0 &&
				   mono_now() - m->last_used >= m->keep_alive;
			pthread_mutex_unlock(&m->mu);
			if (idle && m->eng) {
				fprintf(stderr, "inferd: %s idle for %d s\n",
					m->name, m->keep_alive);
				unload(m);
			}
		} else {
			unload(m);
		}
		job_ok(m, r);
		return;
	}
	drop_stale(m);
	if (!m->eng && r->op == OP_GENERATE)
		post_loading(m, r);
	if (ensure_loaded(m, err, sizeof err) < 0) {
		job_error(m, r, PROTO_E_LOAD, err);
		return;
	}
	if (r->keep_alive != -2) {
		pthread_mutex_lock(&m->mu);
		m->keep_alive = r->keep_alive;
		pthread_mutex_unlock(&m->mu);
	}
	switch (r->op) {
	case OP_LOAD: job_ok(m, r); break;
	case OP_GENERATE: run_generate(m, r); break;
	case OP_TOKENIZE: run_tokenize(m, r); break;
	case OP_DETOKENIZE: run_detokenize(m, r); break;
	default: job_error(m, r, PROTO_E_INTERNAL, "job of unknown kind");
	}
	sample_device(m);
	model_db(m, 0, 1);
}

/* ---- the batch: many generates of this model in one forward pass ----
 *
 * Generates leave the shared queue for the worker's own wait list at once
 * (in arrival order), so the worker alone decides who starts and tells
 * waiting clients their positions; the loop only sets their cancel flag.
 * The wait list holds new requests and (as Running entries with suspended
 * set) requests the fairness policy took out of a full batch. Other jobs
 * (load, tokenize, detokenize) run between two steps; an unload waits for
 * an empty batch and holds back what queued behind it.
 * A backend without the paged-cache ops runs the same policy with a batch
 * of one, each generate to its end through engine_generate. */

/* A generate that started. */
typedef struct Running {
	GenCtx g;        /* token callback context: the sequence's ud */
	BatchSeq *s;     /* its sequence in m->batch */
	double t0;       /* when it started (monotonic) */
	int suspended;   /* taken out of the batch for a fairer share */
	int keep0;       /* keep_alive 0: unload once idle */
} Running;

/* sequences per step (--max-batch) */
#define BATCH_SEQS (daemon_cfg->max_batch > 0 ? daemon_cfg->max_batch : 1)
/* started generates, suspended included */
#define RUN_CAP (2 * BATCH_SEQS)
#define RUN_MAX (2 * DAEMON_MAX_BATCH) /* RUN_CAP at most */

/* Tell a waiting client its position when it changed. */
static void tell_position(Slot *m, Request *r, int pos)
{
	atomic_store(&r->sched_pos, pos);
	if (r->qpos_told == pos + 1)
		return;
	r->qpos_told = pos + 1;
	size_t len;
	uint8_t *f = frame_queued(r->id, pos, &len);
	if (f)
		daemon_post(m->d, r, f, len, 0);
}

static void publish(Slot *m)
{
	int active = 0;
	for (int i = 0; i < m->n_run; i++)
		active += !m->run[i]->suspended;
	pthread_mutex_lock(&m->mu);
	m->n_active = active;
	m->running = m->n_run > 0 ? m->run[0]->g.r : NULL;
	pthread_mutex_unlock(&m->mu);
}

/* Remove wait[i] (it starts or ends); the queue count drops with it. */
static Request *take_wait(Slot *m, int i)
{
	Request *r = m->wait[i];
	/* under mu: the loop reads wait[] for metrics */
	pthread_mutex_lock(&m->mu);
	memmove(m->wait + i, m->wait + i + 1,
		sizeof *m->wait * (size_t)(m->n_wait - i - 1));
	m->n_wait--;
	m->qlen--;
	pthread_mutex_unlock(&m->mu);
	return r;
}

/* Before a generate starts: load the model (telling the client), apply
 * its keep_alive, make the batcher. 0, or -1 with r ended. */
static int ready(Slot *m, Request *r)
{
	char err[512];
	drop_stale(m);
	if (!m->eng) {
		post_loading(m, r);
		if (ensure_loaded(m, err, sizeof err) < 0) {
			job_error(m, r, PROTO_E_LOAD, err);
			return -1;
		}
	}
	if (r->keep_alive != -2) {
		pthread_mutex_lock(&m->mu);
		m->keep_alive = r->keep_alive;
		pthread_mutex_unlock(&m->mu);
	}
	if (!m->batch && !getenv("INFERD_NO_BATCH") &&
	    batcher_supported(m->eng)) {
		/* INFERD_NO_BATCH: the one-at-a-time path, for comparison */
		BatchOptions bo = {.max_seqs = BATCH_SEQS,
				   .token_budget = daemon_cfg->batch_tokens};
		if (daemon_cfg->mem_budget) { /* the pool gets what is left */
			uint64_t used = daemon_mem_used(m->d);
			bo.max_pool_bytes = daemon_cfg->mem_budget > used
					    ? daemon_cfg->mem_budget - used
					    : 1; /* one context */
		}
		if (batcher_create(m->eng, &bo, &m->batch, err, sizeof err) < 0)
			fprintf(stderr, "inferd: %s: no batching (%s)\n",
				m->name, err);
		else if (!m->run && !(m->run = calloc(RUN_CAP,
						      sizeof *m->run))) {
			batcher_free(m->batch);
			m->batch = NULL;
		}
		pthread_mutex_lock(&m->mu);
		m->batching = m->batch != NULL;
		if (m->batch) {
			m->pool_bytes = batcher_pool_bytes(m->batch);
			m->est_bytes += m->pool_bytes;
		}
		pthread_mutex_unlock(&m->mu);
	}
	return 0;
}

/* End a started generate from its sequence's result. */
static void end_run(Slot *m, Running *x, const char *err)
{
	Request *r = x->g.r;
	const GenResult *res = batchseq_result(x->s);
	double t1 = mono_now();
	r->n_gen = res->n_gen;
	r->ttft = x->g.t_first ? x->g.t_first - r->t_start : 0;
	r->t_total = t1 - r->t_start;
	r->tok_s = res->t_decode > 0 && res->n_gen > 1 ?
		   (res->n_gen - 1) / res->t_decode : 0;
	snprintf(r->finish, sizeof r->finish, "%s",
		 finish_reason_name(res->finish));
	if (res->finish == FINISH_ERROR)
		job_error(m, r, PROTO_E_ENGINE, err && err[0] ? err :
			  "backend error during generation");
	else
		post_done(m, r);
	batchseq_free(x->s);
	sample_device(m);
	model_db(m, 0, 1);
	for (int i = 0; i < m->n_run; i++)
		if (m->run[i] == x) {
			memmove(m->run + i, m->run + i + 1,
				sizeof *m->run * (size_t)(m->n_run - i - 1));
			m->n_run--;
			break;
		}
	free(x);
	pthread_mutex_lock(&m->mu);
	m->last_used = t1;
	pthread_mutex_unlock(&m->mu);
}

/* Start r in the batch. */
static void start_batched(Slot *m, Request *r)
{
	char err[256];
	int32_t *ids = NULL;
	int n = prompt_ids(m, r, &ids, err, sizeof err);
	if (n <= 0) {
		free(ids);
		job_error(m, r, PROTO_E_BAD, n < 0 ? err :
			  "the prompt has no tokens");
		return;
	}
	r->n_prompt = n;
	Running *x = calloc(1, sizeof *x);
	if (!x) {
		free(ids);
		job_error(m, r, PROTO_E_INTERNAL, "out of memory");
		return;
	}
	x->g = (GenCtx){ m, r, 0 };
	x->t0 = mono_now();
	x->keep0 = r->keep_alive == 0;
	x->s = batcher_add(m->batch, ids, n, &r->gp, on_text, &x->g, err,
			   sizeof err);
	free(ids);
	if (!x->s) {
		free(x);
		job_error(m, r, PROTO_E_BAD, err);
		return;
	}
	atomic_store(&r->sched_state, REQ_RUNNING);
	m->run[m->n_run++] = x;
}

/* A waiting candidate: a new request (wait[i]) or a suspended run. */
typedef struct Cand {
	Request *r;   /* the request */
	Running *x;   /* its Running when suspended, else NULL */
} Cand;

/* Fill c with the waiting requests in arrival order; returns how many. */
static int candidates(Slot *m, Cand *c, int cap)
{
	int n = 0;
	for (int i = 0; i < m->n_run && n < cap; i++)
		if (m->run[i]->suspended)
			c[n++] = (Cand){ m->run[i]->g.r, m->run[i] };
	for (int i = 0; i < m->n_wait && n < cap; i++)
		c[n++] = (Cand){ m->wait[i], NULL };
	/* insertion sort by arrival */
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && c[j].r->t_start < c[j - 1].r->t_start;
		     j--) {
			Cand t = c[j];
			c[j] = c[j - 1];
			c[j - 1] = t;
		}
	return n;
}

static SchedReq sreq(const Request *r)
{
	return (SchedReq){ r->uid, r->priority };
}

/* Tell every new waiting request its place in the fair order. */
static void tell_positions(Slot *m)
{
	Cand c[SCHED_MAX];
	SchedReq wu[SCHED_MAX], ru[RUN_MAX];
	int pos[SCHED_MAX];
	int n = candidates(m, c, SCHED_MAX), nr = 0;
	if (n == 0)
		return;
	for (int i = 0; i < m->n_run; i++)
		if (!m->run[i]->suspended)
			ru[nr++] = sreq(m->run[i]->g.r);
	for (int i = 0; i < n; i++)
		wu[i] = sreq(c[i].r);
	sched_positions(wu, n, ru, nr, pos);
	for (int i = 0; i < n; i++)
		if (!c[i].x)
			tell_position(m, c[i].r, pos[i] + 1);
		else /* suspended: ps shows it, the client is not told */
			atomic_store(&c[i].r->sched_pos, pos[i] + 1);
}

/* Start waiting requests while the batch has room, taking a place from a
 * user over their share when one waits under it; then tell the rest
 * their positions. */
static void schedule(Slot *m)
{
	Cand c[SCHED_MAX];
	SchedReq wu[SCHED_MAX], ru[RUN_MAX];
	Running *rx[RUN_MAX];
	/* a cancelled waiting request ends at once */
	for (int i = 0; i < m->n_wait; i++)
		if (atomic_load(&m->wait[i]->cancel)) {
			Request *r = take_wait(m, i--);
			run_job(m, r); /* ends it as cancelled */
		}
	for (int i = 0; i < m->n_run; i++)
		if (m->run[i]->suspended && atomic_load(&m->run[i]->g.r->cancel)) {
			m->run[i]->suspended = 0;
			batcher_cancel(m->batch, m->run[i]->s);
		}
	for (;;) {
		int n = candidates(m, c, SCHED_MAX), nr = 0;
		if (n == 0)
			break;
		if (!m->batch) {
			/* the model is not loaded yet (or cannot batch):
			 * nothing runs, so the pick is by priority, then
			 * arrival (suspended runs exist only with a batch) */
			for (int i = 0; i < n; i++)
				wu[i] = sreq(c[i].r);
			Request *r = c[sched_pick(wu, n, NULL, 0)].r;
			int i = 0;
			while (m->wait[i] != r)
				i++;
			take_wait(m, i);
			if (ready(m, r) < 0)
				continue;
			if (!m->batch) {
				/* one at a time: the pick runs to
				 * its end (ready() already loaded the model) */
				pthread_mutex_lock(&m->mu);
				m->running = r;
				m->n_active = 1;
				pthread_mutex_unlock(&m->mu);
				atomic_store(&r->sched_state, REQ_RUNNING);
				tell_positions(m); /* behind this one */
				int keep0 = r->keep_alive == 0;
				run_job(m, r);
				if (keep0 || (m->eng && engine_fatal(m->eng)))
					unload(m);
				pthread_mutex_lock(&m->mu);
				m->running = NULL;
				m->n_active = 0;
				m->last_used = mono_now();
				pthread_mutex_unlock(&m->mu);
				return;
			}
			start_batched(m, r);
			continue;
		}
		for (int i = 0; i < m->n_run; i++)
			if (!m->run[i]->suspended) {
				rx[nr] = m->run[i];
				ru[nr++] = sreq(m->run[i]->g.r);
			}
		for (int i = 0; i < n; i++)
			wu[i] = sreq(c[i].r);
		if (nr >= BATCH_SEQS) {
			/* full: make room for the pick by suspending one of
			 * lower priority or of a user over their share */
			int v = sched_victim(wu, n, ru, nr, BATCH_SEQS);
			if (v < 0 || m->n_run >= RUN_CAP)
				break;
			batcher_suspend(m->batch, rx[v]->s);
			rx[v]->suspended = 1;
			atomic_store(&rx[v]->g.r->sched_state, REQ_QUEUED);
			continue;
		}
		int k = sched_pick(wu, n, ru, nr);
		if (c[k].x) {
			char err[128];
			if (batcher_resume(m->batch, c[k].x->s, err,
					   sizeof err) < 0)
				break;
			c[k].x->suspended = 0;
			atomic_store(&c[k].r->sched_state, REQ_RUNNING);
			continue;
		}
		if (m->n_run >= RUN_CAP)
			break; /* wait for a place to free */
		if (!batcher_can_admit(m->batch, 1))
			break; /* KV pool nearly full: wait in the queue */
		int i = 0;
		while (m->wait[i] != c[k].r)
			i++;
		take_wait(m, i);
		if (ready(m, c[k].r) == 0)
			start_batched(m, c[k].r);
	}
	tell_positions(m);
	publish(m);
}

/* One forward pass of the batch; end what finished. */
static void step(Slot *m)
{
	char err[256] = "";
	for (int i = 0; i < m->n_run; i++) {
		Running *x = m->run[i];
		if (!x->suspended && (atomic_load(&x->g.r->cancel) ||
				      atomic_load(&m->abort)))
			batcher_cancel(m->batch, x->s);
	}
	if (batcher_active(m->batch) > 0 &&
	    batcher_step(m->batch, err, sizeof err) < 0)
		fprintf(stderr, "inferd: %s: %s\n", m->name, err);
	int keep0 = 0;
	BatchSeq *s;
	while ((s = batcher_done(m->batch))) {
		Running *x = (Running *)batchseq_ud(s); /* g is first */
		keep0 |= x->keep0;
		end_run(m, x, err);
	}
	if (keep0 || (m->batch && engine_fatal(m->eng))) {
		/* keep_alive 0 (or a lost backend): unload once idle */
		pthread_mutex_lock(&m->mu);
		int idle = m->qhead == NULL;
		pthread_mutex_unlock(&m->mu);
		if (idle && m->n_run == 0 && m->n_wait == 0)
			unload(m);
	}
	publish(m);
}

/* Move the queue's head jobs along: generates to the wait list, other
 * jobs returned to run now. An unload waits for an empty batch and holds
 * back what is behind it. Called with mu held; NULL when nothing runs. */
static Request *next_job(Slot *m)
{
	while (m->qhead) {
		Request *r = m->qhead;
		if (r->op == OP_UNLOAD && !r->internal &&
		    (m->n_run > 0 || m->n_wait > 0))
			return NULL; /* barrier */
		m->qhead = r->qnext;
		if (!m->qhead)
			m->qtail = NULL;
		if (r->op == OP_GENERATE) {
			if (m->n_wait == m->cap_wait) {
				int cap = m->cap_wait ? 2 * m->cap_wait : 16;
				Request **w = realloc(m->wait, sizeof *w *
						      (size_t)cap);
				if (!w) { /* put it back; try later */
					r->qnext = m->qhead;
					m->qhead = r;
					if (!m->qtail)
						m->qtail = r;
					return NULL;
				}
				m->wait = w;
				m->cap_wait = cap;
			}
			m->wait[m->n_wait++] = r; /* still counted in qlen */
			atomic_store(&r->sched_state, REQ_QUEUED);
			continue;
		}
		m->qlen--;
		return r;
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	Slot *m = arg;
	pthread_mutex_lock(&m->mu);
	for (;;) {
		if (m->stop)
			break;
		Request *r = next_job(m);
		if (r && r->op == OP_UNLOAD && r->internal &&
		    (m->n_run > 0 || m->n_wait > 0)) {
			/* an idle unload that came while the worker moved
			 * requests along: the model is busy after all */
			pthread_mutex_unlock(&m->mu);
			job_ok(m, r);
			pthread_mutex_lock(&m->mu);
			continue;
		}
		if (r) {
			m->running = r;
			pthread_mutex_unlock(&m->mu);
			run_job(m, r); /* r belongs to the loop after this */
			pthread_mutex_lock(&m->mu);
			m->running = m->n_run > 0 ? m->run[0]->g.r : NULL;
			m->last_used = mono_now();
			continue;
		}
		if (m->n_run == 0 && m->n_wait == 0) {
			pthread_cond_wait(&m->cv, &m->mu);
			continue;
		}
		pthread_mutex_unlock(&m->mu);
		schedule(m);
		if (m->batch && m->n_run > 0)
			step(m);
		pthread_mutex_lock(&m->mu);
	}
	pthread_mutex_unlock(&m->mu);
	/* what runs ends as cancelled (abort is set), what waits with an
	 * error; the loop frees them on their final event */
	while (m->n_run > 0) {
		for (int i = 0; i < m->n_run; i++)
			if (m->run[i]->suspended) {
				m->run[i]->suspended = 0;
				batcher_cancel(m->batch, m->run[i]->s);
			}
		step(m);
	}
	while (m->n_wait > 0)
		job_error(m, take_wait(m, 0), PROTO_E_SHUTDOWN,
			  "inferd is shutting down");
	pthread_mutex_lock(&m->mu);
	while (m->qhead) {
		Request *r = m->qhead;
		m->qhead = r->qnext;
		m->qlen--;
		pthread_mutex_unlock(&m->mu);
		job_error(m, r, PROTO_E_SHUTDOWN, "inferd is shutting down");
		pthread_mutex_lock(&m->mu);
	}
	m->qtail = NULL;
	pthread_mutex_unlock(&m->mu);
	unload(m);
	free(m->run);
	free(m->wait);
	m->run = NULL;
	m->wait = NULL;
	return NULL;
}

int worker_start(Slot *m, char *err, size_t errlen)
{
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	m->last_used = mono_now();
	if (pthread_create(&m->thread, NULL, worker_main, m) != 0) {
		snprintf(err, errlen, "cannot start the worker of %s", m->name);
		return -1;
	}
	return 0;
}

void worker_push(Slot *m, Request *r)
{
	r->model = m;
	r->qnext = NULL;
	pthread_mutex_lock(&m->mu);
	if (m->qtail)
		m->qtail->qnext = r;
	else
		m->qhead = r;
	m->qtail = r;
	m->qlen++;
	pthread_cond_signal(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

void worker_stop(Slot *m)
{
	pthread_mutex_lock(&m->mu);
	m->stop = 1;
	/* not m->running->cancel: the loop may already have freed it (its
	 * final event can be posted before running is cleared) */
	atomic_store(&m->abort, 1);
	pthread_cond_signal(&m->cv);
	pthread_mutex_unlock(&m->mu);
	pthread_join(m->thread, NULL);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
}
