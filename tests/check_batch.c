/*
 * check_batch.c - continuous batching over the paged KV cache (batch.h):
 * the tokens of every request in a batch of 16 mixed requests (prompt
 * lengths, greedy and seeded sampling, seeds, lengths, joining at
 * different steps) equal those of the same request run alone through
 * engine_generate (the contiguous-cache path), on the CPU, with the tiny
 * Llama 2 and Llama 3 models; the same with a pool too small for all of
 * them (preemption and resume); prefix sharing; cancel and the pool
 * accounting.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "engine.h"
#include "testutil.h"

#define NREQ 16

static const char *backend = "cpu"; /* the cuda test switches it */

static Engine *open_path(const char *path)
{
	char err[512];
	EngineOptions o = {.backend = backend, .threads = 2, .ctx = 256,
			   .quiet = 1, .no_prefix_reuse = 1};
	Engine *e;
	ck_assert_msg(engine_open(path, &o, &e, err, sizeof err) == 0, "%s",
		      err);
	return e;
}

static Engine *open_engine(const char *model)
{
	char err[512];
	if (model[0] == '/') /* a model outside the test data */
		return open_path(model);
	EngineOptions o = {.backend = backend, .threads = 2, .ctx = 256,
			   .quiet = 1, .no_prefix_reuse = 1};
	Engine *e;
	ck_assert_msg(engine_open(test_data(model), &o, &e, err,
				  sizeof err) == 0, "%s", err);
	return e;
}

/* One request: its prompt and parameters. */
typedef struct {
	int32_t ids[200]; /* prompt */
	int n;            /* prompt length */
	GenParams p;      /* sampling etc. */
} Req;

/* 16 requests: prompt lengths 1..~190, half greedy, half sampled with
 * different seeds and filters, different max_tokens, some past EOS. */
static void make_reqs(Req *r, int vocab)
{
	uint64_t x = 12345;
	for (int i = 0; i < NREQ; i++) {
		r[i].n = 1 + (i * 37) % 190;
		r[i].ids[0] = 1;
		for (int j = 1; j < r[i].n; j++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			r[i].ids[j] = (int32_t)(3 + (x >> 33) % (uint64_t)(vocab - 3));
		}
		gen_params_default(&r[i].p);
		r[i].p.max_tokens = 8 + (i * 7) % 40;
		r[i].p.ignore_eos = i % 3 == 0;
		if (i % 2) {
			r[i].p.sampling.temperature = 0.7f + 0.1f * (i % 4);
			r[i].p.sampling.top_k = i % 4 == 1 ? 40 : 0;
			r[i].p.sampling.top_p = i % 4 == 3 ? 0.9f : 1.0f;
			r[i].p.sampling.seed = 1000 + (uint64_t)i * 17;
		} else {
			r[i].p.sampling.temperature = 0;
		}
	}
}

/* Counts the text callbacks: tokens and released bytes. */
typedef struct {
	int calls;
	size_t bytes;
} Sink;

static int sink(void *ud, int32_t token, const char *text, size_t len)
{
	Sink *s = ud;
	s->calls++;
	s->bytes += len;
	return 0;
}

/* Run reqs alone, then batched with opts; assert equal tokens. Returns
 * how many preemptions the batch saw. */
static int compare(const char *model, const BatchOptions *opts,
		   int stagger)
{
	char err[512];
	Engine *e = open_engine(model);
	Req *r = calloc(NREQ, sizeof *r);
	ck_assert_ptr_nonnull(r);
	make_reqs(r, engine_model(e)->cfg.vocab_size);
	GenResult alone[NREQ];
	Sink sa[NREQ];
	memset(sa, 0, sizeof sa);
	for (int i = 0; i < NREQ; i++)
		ck_assert_msg(engine_generate(e, r[i].ids, r[i].n, &r[i].p,
					      sink, &sa[i], &alone[i], err,
					      sizeof err) == 0, "%s", err);

	Batcher *b;
	ck_assert_msg(batcher_create(e, opts, &b, err, sizeof err) == 0, "%s",
		      err);
	int nb = batcher_n_blocks(b);
	BatchSeq *seq[NREQ];
	Sink sb[NREQ];
	memset(sb, 0, sizeof sb);
	int added = 0, done = 0, steps = 0, preempted = 0, differ = 0;
	char first[256] = "";
	while (done < NREQ) {
		/* join a few at a time while others run */
		int upto = stagger ? added + 4 : NREQ;
		for (; added < NREQ && added < upto; added++) {
			seq[added] = batcher_add(b, r[added].ids, r[added].n,
						 &r[added].p, sink, &sb[added],
						 err, sizeof err);
			ck_assert_msg(seq[added], "%s", err);
		}
		ck_assert_msg(batcher_step(b, err, sizeof err) > 0, "%s", err);
		steps++;
		ck_assert_int_lt(steps, 10000);
		BatchSeq *s;
		while ((s = batcher_done(b))) {
			int i = (int)((Sink *)batchseq_ud(s) - sb);
			ck_assert(i >= 0 && i < NREQ && seq[i] == s);
			const GenResult *g = batchseq_result(s);
			int k = 0;
			while (k < g->n_gen && k < alone[i].n_gen &&
			       g->ids[k] == alone[i].ids[k])
				k++;
			if (k < g->n_gen || k < alone[i].n_gen ||
			    g->finish != alone[i].finish ||
			    sb[i].calls != sa[i].calls ||
			    sb[i].bytes != sa[i].bytes) {
				if (!differ++)
					snprintf(first, sizeof first,
						 "%s req %d (%s): token %d of "
						 "%d/%d: %d batched, %d alone",
						 model, i, r[i].p.sampling.
						 temperature > 0 ? "sampled"
						 : "greedy", k, g->n_gen,
						 alone[i].n_gen,
						 k < g->n_gen ? g->ids[k] : -1,
						 k < alone[i].n_gen ?
						 alone[i].ids[k] : -1);
				printf("%s %s req %d: differs from token %d "
				       "of %d\n", backend, model, i, k,
				       alone[i].n_gen);
			}
			preempted += batchseq_preempted(s);
			batchseq_free(s);
			done++;
		}
	}
	printf("%s %s: %d of %d requests equal alone\n", backend, model,
	       NREQ - differ, NREQ);
	ck_assert_msg(differ == 0, "%d of %d differ; first: %s", differ, NREQ,
		      first);
	ck_assert_int_eq(batcher_active(b), 0);
	ck_assert_int_eq(batcher_free_blocks(b), nb); /* all blocks back */
	/* fewer steps than running them one after another */
	int serial = 0;
	for (int i = 0; i < NREQ; i++)
		serial += alone[i].n_gen + 1;
	ck_assert_int_lt(steps, serial);
	batcher_free(b);
	for (int i = 0; i < NREQ; i++)
		free(alone[i].ids);
	free(r);
	engine_close(e);
	return preempted;
}

START_TEST(batch_equals_alone_llama2)
{
	BatchOptions o = {.token_budget = 64};
	compare("models/tiny-llama2", &o, 0);
	compare("models/tiny-llama2", &o, 1);
}
END_TEST

START_TEST(batch_equals_alone_llama3)
{
	BatchOptions o = {.token_budget = 100, .block_size = 8};
	compare("models/tiny-llama3", &o, 1);
}
END_TEST

/* Quantised weights (Q8_0 activations through dot / dot4 kernels). */
START_TEST(batch_equals_alone_q8_0)
{
	BatchOptions o = {.token_budget = 64};
	compare("models/tiny-llama2-q8_0.gguf", &o, 1);
}
END_TEST

/* Any model, e.g. a real Q4_1 one: $INFERD_TEST_BATCH_MODEL (slow). */
START_TEST(batch_equals_alone_env_model)
{
	const char *m = getenv("INFERD_TEST_BATCH_MODEL");
	if (!m || m[0] != '/')
		TEST_SKIP("set INFERD_TEST_BATCH_MODEL to a model's absolute path");
	BatchOptions o = {.token_budget = 64};
	compare(m, &o, 1);
}
END_TEST

/* A pool of 40 blocks of 16 tokens cannot hold 16 sequences of up to
 * ~230 tokens: sequences are preempted and resumed, tokens unchanged. */
START_TEST(preempt_and_resume)
{
	BatchOptions o = {.token_budget = 128, .n_blocks = 40};
	int n = compare("models/tiny-llama2", &o, 0);
	ck_assert_int_gt(n, 0);
}
END_TEST

/* Requests with a common 50-token prefix: the later ones take the first
 * one's 3 full blocks (48 tokens) and still produce the tokens they
 * produce alone; then a follow-up turn reuses a finished one's blocks. */
START_TEST(prefix_sharing)
{
	char err[512];
	Engine *e = open_engine("models/tiny-llama2");
	enum { N = 4, PRE = 50 };
	static int32_t ids[N][80];
	int n[N];
	GenParams p[N];
	uint64_t x = 777;
	for (int j = 0; j < PRE; j++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		ids[0][j] = (int32_t)(3 + (x >> 33) % 31000);
	}
	for (int i = 0; i < N; i++) {
		memcpy(ids[i], ids[0], sizeof(int32_t) * PRE);
		n[i] = PRE + 3 + 5 * i;
		for (int j = PRE; j < n[i]; j++)
			ids[i][j] = 100 + 7 * i + j;
		gen_params_default(&p[i]);
		p[i].max_tokens = 20;
		p[i].ignore_eos = 1;
		p[i].sampling.temperature = i % 2 ? 0.8f : 0;
		p[i].sampling.seed = 5 + (uint64_t)i;
	}
	GenResult alone[N];
	for (int i = 0; i < N; i++)
		ck_assert_msg(engine_generate(e, ids[i], n[i], &p[i], NULL, NULL,
					      &alone[i], err, sizeof err) == 0,
			      "%s", err);
	BatchOptions o = {.token_budget = 128};
	Batcher *b;
	ck_assert_msg(batcher_create(e, &o, &b, err, sizeof err) == 0, "%s",
		      err);
	int nb = batcher_n_blocks(b);
	BatchSeq *s[N];
	s[0] = batcher_add(b, ids[0], n[0], &p[0], NULL, NULL, err, sizeof err);
	ck_assert_ptr_nonnull(s[0]);
	ck_assert_int_eq(batchseq_shared(s[0]), 0);
	ck_assert_int_gt(batcher_step(b, err, sizeof err), 0); /* its prompt */
	for (int i = 1; i < N; i++) {
		s[i] = batcher_add(b, ids[i], n[i], &p[i], NULL, NULL, err,
				   sizeof err);
		ck_assert_ptr_nonnull(s[i]);
		ck_assert_int_eq(batchseq_shared(s[i]), 48);
	}
	/* the shared blocks are counted once */
	ck_assert_int_eq(nb - batcher_free_blocks(b), 4);
	int done = 0;
	while (done < N) {
		ck_assert_int_gt(batcher_step(b, err, sizeof err), 0);
		BatchSeq *d;
		while ((d = batcher_done(b))) {
			int i = 0;
			while (s[i] != d)
				i++;
			const GenResult *g = batchseq_result(d);
			ck_assert_int_eq(g->n_gen, alone[i].n_gen);
			for (int k = 0; k < g->n_gen; k++)
				ck_assert_msg(g->ids[k] == alone[i].ids[k],
					      "req %d token %d", i, k);
			ck_assert_int_eq(g->n_reused, i ? 48 : 0);
			batchseq_free(d);
			done++;
		}
	}
	ck_assert_int_eq(batcher_free_blocks(b), nb); /* cache: reclaimable */
	/* a chat's next turn: request 0's prompt, its answer and more; its
	 * K/V up to the last full block came from the finished request */
	static int32_t turn[200];
	int nt = 0;
	memcpy(turn, ids[0], sizeof(int32_t) * (size_t)n[0]);
	nt = n[0];
	memcpy(turn + nt, alone[0].ids, sizeof(int32_t) * (size_t)alone[0].n_gen);
	nt += alone[0].n_gen;
	for (int j = 0; j < 6; j++)
		turn[nt++] = 200 + j;
	GenResult solo;
	ck_assert(engine_generate(e, turn, nt, &p[1], NULL, NULL, &solo, err,
				  sizeof err) == 0);
	BatchSeq *t = batcher_add(b, turn, nt, &p[1], NULL, NULL, err,
				  sizeof err);
	ck_assert_ptr_nonnull(t);
	/* 53 prompt + 19 fed answer tokens = 72 computed: 4 full blocks */
	ck_assert_int_eq(batchseq_shared(t), 64);
	while (batcher_active(b))
		ck_assert_int_gt(batcher_step(b, err, sizeof err), 0);
	ck_assert_ptr_eq(batcher_done(b), t);
	const GenResult *g = batchseq_result(t);
	ck_assert_int_eq(g->n_gen, solo.n_gen);
	for (int k = 0; k < g->n_gen; k++)
		ck_assert_int_eq(g->ids[k], solo.ids[k]);
	batchseq_free(t);
	free(solo.ids);
	batcher_free(b);
	for (int i = 0; i < N; i++)
		free(alone[i].ids);
	engine_close(e);
}
END_TEST

/* The same on the GPU, with the CUDA paged ops. */
START_TEST(batch_equals_alone_cuda)
{
	char err[512];
	setenv("INFERD_CUDA_LIB", test_build("libinferd-cuda.so"), 0);
	BackendOptions bo = {.name = "cuda", .quiet = 1};
	Backend *be = backend_open(&bo, err, sizeof err);
	if (!be)
		TEST_SKIP("no CUDA backend here: %s", err);
	be->ops->destroy(be);
	backend = "cuda";
	/* joining a few at a time into 64-row steps, and all at once */
	BatchOptions o = {.token_budget = 64}, o2 = {.token_budget = 512};
	compare("models/tiny-llama2", &o, 1);
	compare("models/tiny-llama3", &o, 1);
	compare("models/tiny-llama2", &o2, 0);
	compare("models/tiny-llama3", &o2, 0);
}
END_TEST

START_TEST(cancel_and_refuse)
{
	char err[512];
	Engine *e = open_engine("models/tiny-llama2");
	BatchOptions o = {.max_seqs = 2, .n_blocks = 8};
	Batcher *b;
	ck_assert_msg(batcher_create(e, &o, &b, err, sizeof err) == 0, "%s",
		      err);
	ck_assert_int_eq(batcher_seq_ctx(b), 8 * 16); /* capped by the pool */
	int32_t ids[200];
	for (int i = 0; i < 200; i++)
		ids[i] = 5 + i;
	GenParams p;
	gen_params_default(&p);
	p.max_tokens = 50;
	/* longer than the pool: refused, not failed later */
	ck_assert_ptr_null(batcher_add(b, ids, 200, &p, NULL, NULL, err,
				       sizeof err));
	ck_assert(batcher_can_admit(b, 20));
	BatchSeq *s1 = batcher_add(b, ids, 20, &p, NULL, NULL, err, sizeof err);
	BatchSeq *s2 = batcher_add(b, ids, 30, &p, NULL, NULL, err, sizeof err);
	ck_assert(s1 && s2);
	ck_assert(!batcher_can_admit(b, 1)); /* max_seqs */
	ck_assert_ptr_null(batcher_add(b, ids, 5, &p, NULL, NULL, err,
				       sizeof err));
	ck_assert_int_gt(batcher_step(b, err, sizeof err), 0);
	ck_assert_int_lt(batcher_free_blocks(b), 8);
	batcher_cancel(b, s1);
	ck_assert_ptr_eq(batcher_done(b), s1);
	ck_assert_int_eq(batchseq_result(s1)->finish, FINISH_CANCEL);
	ck_assert_int_eq(batcher_active(b), 1);
	batchseq_free(s1);
	while (batcher_active(b))
		ck_assert_int_gt(batcher_step(b, err, sizeof err), 0);
	BatchSeq *d = batcher_done(b);
	ck_assert_ptr_eq(d, s2);
	ck_assert_int_eq(batchseq_result(d)->n_gen, 50);
	ck_assert_int_eq(batchseq_result(d)->finish, FINISH_LENGTH);
	batchseq_free(d);
	ck_assert_int_eq(batcher_free_blocks(b), 8);
	batcher_free(b);
	engine_close(e);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("batch");
	TCase *tc = tcase_create("batch");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, batch_equals_alone_llama2);
	tcase_add_test(tc, batch_equals_alone_llama3);
	tcase_add_test(tc, batch_equals_alone_q8_0);
	tcase_add_test(tc, batch_equals_alone_env_model);
	tcase_add_test(tc, preempt_and_resume);
	tcase_add_test(tc, prefix_sharing);
	tcase_add_test(tc, batch_equals_alone_cuda);
	tcase_add_test(tc, cancel_and_refuse);
	suite_add_tcase(s, tc);
	SRunner *r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
