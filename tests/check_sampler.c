/*
 * check_sampler.c - the sampler against hand-computed distributions:
 * greedy ties, temperature, top-k, top-p, min-p, the penalties and their
 * window, seeding, and a chi-square test of the draws.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "testutil.h"

static SamplerParams plain(float temp)
{
	SamplerParams p;
	sampler_params_default(&p);
	p.temperature = temp;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	return p;
}

/* The distribution the sampler would draw from, n kept. */
static int probs(const SamplerParams *p, const float *logits, int nv,
		 int32_t *ids, float *pr)
{
	Sampler s;
	float l[64];
	memcpy(l, logits, sizeof(float) * (size_t)nv);
	ck_assert_int_eq(sampler_init(&s, p, nv), 0);
	int n = sampler_probs(&s, l, ids, pr, 64);
	sampler_free(&s);
	return n;
}

START_TEST(greedy_ties_lowest_id)
{
	SamplerParams p = plain(0.0f);
	Sampler s;
	float l[5] = {1.0f, 3.0f, -2.0f, 3.0f, 2.9f};
	ck_assert_int_eq(sampler_init(&s, &p, 5), 0);
	ck_assert_int_eq(sampler_sample(&s, l), 1);
	sampler_free(&s);
	float m[3] = {-INFINITY, -1.0f, -1.0f};
	ck_assert_int_eq(sampler_init(&s, &p, 3), 0);
	ck_assert_int_eq(sampler_sample(&s, m), 1);
	sampler_free(&s);
}
END_TEST

START_TEST(temperature_softmax)
{
	/* T = 2 over logits {0, 1, 2, 3}: p_i = e^(l_i/2) / sum */
	SamplerParams p = plain(2.0f);
	float l[4] = {0, 1, 2, 3};
	int32_t ids[64];
	float pr[64];
	int n = probs(&p, l, 4, ids, pr);
	ck_assert_int_eq(n, 4);
	double z = 1 + exp(0.5) + exp(1.0) + exp(1.5);
	double want[4] = {exp(1.5) / z, exp(1.0) / z, exp(0.5) / z, 1 / z};
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(ids[i], 3 - i);
		ck_assert_double_eq_tol(pr[i], want[i], 1e-6);
	}
}
END_TEST

START_TEST(top_k)
{
	SamplerParams p = plain(1.0f);
	p.top_k = 2;
	float l[6] = {0.5f, 3.0f, -1.0f, 2.0f, 1.0f, 2.0f};
	int32_t ids[64];
	float pr[64];
	int n = probs(&p, l, 6, ids, pr);
	/* 3.0 (id 1), then the tie 2.0 at ids 3 and 5: lower id wins */
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(ids[0], 1);
	ck_assert_int_eq(ids[1], 3);
	ck_assert_double_eq_tol(pr[0], exp(1.0) / (exp(1.0) + 1), 1e-6);
	ck_assert_double_eq_tol(pr[1], 1 / (exp(1.0) + 1), 1e-6);
}
END_TEST

START_TEST(top_p)
{
	/* probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.75 needs the first
	 * two (0.5 < 0.75 <= 0.8), renormalised to 0.625 / 0.375 */
	SamplerParams p = plain(1.0f);
	p.top_p = 0.75f;
	float l[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
	int32_t ids[64];
	float pr[64];
	int n = probs(&p, l, 4, ids, pr);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(ids[0], 1);
	ck_assert_int_eq(ids[1], 3);
	ck_assert_double_eq_tol(pr[0], 0.625, 1e-6);
	ck_assert_double_eq_tol(pr[1], 0.375, 1e-6);
	/* top-p 0.9 keeps three: 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95 */
	p.top_p = 0.9f;
	n = probs(&p, l, 4, ids, pr);
	ck_assert_int_eq(n, 3);
	ck_assert_double_eq_tol(pr[2], 0.15 / 0.95, 1e-6);
}
END_TEST

START_TEST(min_p)
{
	/* min-p 0.2 of p_max 0.5 = 0.1: drops 0.05 only */
	SamplerParams p = plain(1.0f);
	p.min_p = 0.2f;
	float l[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
	int32_t ids[64];
	float pr[64];
	int n = probs(&p, l, 4, ids, pr);
	ck_assert_int_eq(n, 3);
	ck_assert_int_eq(ids[2], 0);
	ck_assert_double_eq_tol(pr[0], 0.5 / 0.95, 1e-6);
	ck_assert_double_eq_tol(pr[2], 0.15 / 0.95, 1e-6);
	/* min-p 0.7: only 0.5 itself (0.3 < 0.35) */
	p.min_p = 0.7f;
	n = probs(&p, l, 4, ids, pr);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(ids[0], 1);
	ck_assert_double_eq_tol(pr[0], 1.0, 1e-6);
}
END_TEST

START_TEST(chain_order)
{
	/* top-k 3 over 0.4, 0.3, 0.2, 0.1 leaves 4/9, 3/9, 2/9; top-p 0.7
	 * then keeps 4/9 + 3/9 = 0.778 and renormalises to 4/7, 3/7; min-p
	 * 0.5 (of 4/7) keeps both. */
	SamplerParams p = plain(1.0f);
	p.top_k = 3;
	p.top_p = 0.7f;
	p.min_p = 0.5f;
	float l[4] = {logf(0.1f), logf(0.2f), logf(0.3f), logf(0.4f)};
	int32_t ids[64];
	float pr[64];
	int n = probs(&p, l, 4, ids, pr);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(ids[0], 3);
	ck_assert_int_eq(ids[1], 2);
	ck_assert_double_eq_tol(pr[0], 4.0 / 7, 1e-6);
	ck_assert_double_eq_tol(pr[1], 3.0 / 7, 1e-6);
}
END_TEST

START_TEST(penalties)
{
	SamplerParams p = plain(0.0f);
	p.repeat_penalty = 2.0f;
	p.freq_penalty = 0.5f;
	p.presence_penalty = 0.25f;
	p.penalty_last_n = 4;
	Sampler s;
	ck_assert_int_eq(sampler_init(&s, &p, 6), 0);
	/* window of 4: 0 leaves when the fifth arrives */
	int32_t hist[5] = {0, 1, 2, 2, 3};
	for (int i = 0; i < 5; i++)
		sampler_accept(&s, hist[i]);
	float l[6] = {4.0f, 4.0f, 3.0f, -1.0f, 1.0f, 0.5f};
	int32_t ids[1];
	float pr[1];
	sampler_probs(&s, l, ids, pr, 1);
	ck_assert_float_eq_tol(l[0], 4.0f, 1e-6);  /* out of the window */
	ck_assert_float_eq_tol(l[1], 4.0f / 2 - 0.5f - 0.25f, 1e-6);
	ck_assert_float_eq_tol(l[2], 3.0f / 2 - 1.0f - 0.25f, 1e-6);
	ck_assert_float_eq_tol(l[3], -1.0f * 2 - 0.5f - 0.25f, 1e-6);
	ck_assert_float_eq_tol(l[4], 1.0f, 1e-6);
	ck_assert_float_eq_tol(l[5], 0.5f, 1e-6);
	ck_assert_int_eq(ids[0], 0);
	/* HF-style repetition alone flips greedy away from a seen token */
	sampler_free(&s);
	p.freq_penalty = p.presence_penalty = 0.0f;
	ck_assert_int_eq(sampler_init(&s, &p, 3), 0);
	sampler_accept(&s, 0);
	float m[3] = {2.0f, 1.5f, -3.0f};
	ck_assert_int_eq(sampler_sample(&s, m), 1);
	sampler_free(&s);
}
END_TEST

START_TEST(seed_reproducible)
{
	SamplerParams p = plain(1.0f);
	float base[32];
	for (int i = 0; i < 32; i++)
		base[i] = (float)((i * 37) % 11) * 0.3f;
	int32_t a[200], b[200], c[200];
	uint64_t seeds[3] = {42, 42, 43};
	int32_t *outs[3] = {a, b, c};
	for (int k = 0; k < 3; k++) {
		Sampler s;
		p.seed = seeds[k];
		ck_assert_int_eq(sampler_init(&s, &p, 32), 0);
		for (int i = 0; i < 200; i++) {
			float l[32];
			memcpy(l, base, sizeof l);
			outs[k][i] = sampler_sample(&s, l);
		}
		sampler_free(&s);
	}
	ck_assert_mem_eq(a, b, sizeof a);
	ck_assert(memcmp(a, c, sizeof a) != 0);
}
END_TEST

START_TEST(chi_square)
{
	/* 40000 draws from 0.4 / 0.3 / 0.2 / 0.1: chi-square with 3 degrees
	 * of freedom stays under 16.27 (p = 0.001) for a correct sampler. */
	SamplerParams p = plain(1.0f);
	p.seed = 12345;
	Sampler s;
	ck_assert_int_eq(sampler_init(&s, &p, 4), 0);
	double want[4] = {0.4, 0.3, 0.2, 0.1};
	int cnt[4] = {0};
	const int N = 40000;
	for (int i = 0; i < N; i++) {
		float l[4];
		for (int j = 0; j < 4; j++)
			l[j] = logf((float)want[j]);
		int32_t id = sampler_sample(&s, l);
		ck_assert(id >= 0 && id < 4);
		cnt[id]++;
	}
	double chi = 0;
	for (int j = 0; j < 4; j++) {
		double e = N * want[j];
		chi += (cnt[j] - e) * (cnt[j] - e) / e;
	}
	ck_assert_msg(chi < 16.27, "chi-square %.2f (%d %d %d %d)", chi,
		      cnt[0], cnt[1], cnt[2], cnt[3]);
	sampler_free(&s);
}
END_TEST

START_TEST(large_vocab_top_k)
{
	/* quickselect + sort over a real-sized vocabulary agrees with a
	 * direct scan for the top 40 */
	enum { NV = 50257, K = 40 };
	static float l[NV], copy[NV];
	uint64_t x = 7;
	for (int i = 0; i < NV; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		l[i] = (float)((x >> 40) % 1000) / 37.0f; /* many ties */
	}
	memcpy(copy, l, sizeof l);
	SamplerParams p = plain(1.0f);
	p.top_k = K;
	Sampler s;
	ck_assert_int_eq(sampler_init(&s, &p, NV), 0);
	int32_t ids[K];
	float pr[K];
	ck_assert_int_eq(sampler_probs(&s, l, ids, pr, K), K);
	/* expected: repeatedly the max, lowest id on ties */
	for (int k = 0; k < K; k++) {
		int best = -1;
		for (int i = 0; i < NV; i++)
			if (copy[i] > -1 && (best < 0 || copy[i] > copy[best]))
				best = i;
		ck_assert_int_eq(ids[k], best);
		copy[best] = -2;
		if (k)
			ck_assert(pr[k] <= pr[k - 1]);
	}
	sampler_free(&s);
}
END_TEST

static int by_prob(const void *a, const void *b)
{
	const float *x = a, *y = b; /* {prob, id} pairs */
	if (x[0] != y[0])
		return x[0] < y[0] ? 1 : -1;
	return x[1] < y[1] ? -1 : x[1] > y[1];
}

START_TEST(large_vocab_top_p)
{
	/* The nucleus found by partial selection equals the one of a full
	 * sort (qsort here), for nuclei of a few to thousands of tokens. */
	enum { NV = 50257 };
	static float l[NV], pairs[NV][2];
	float tps[4] = {0.1f, 0.5f, 0.9f, 0.999f};
	for (int t = 0; t < 4; t++) {
		uint64_t x = 11 + t;
		for (int i = 0; i < NV; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			l[i] = (float)((x >> 33) % 100000) / 4000.0f;
		}
		double mx = 0, z = 0;
		for (int i = 0; i < NV; i++)
			mx = l[i] > mx ? l[i] : mx;
		for (int i = 0; i < NV; i++)
			z += exp(l[i] - mx);
		for (int i = 0; i < NV; i++) {
			pairs[i][0] = (float)(exp(l[i] - mx) / z);
			pairs[i][1] = (float)i;
		}
		qsort(pairs, NV, sizeof pairs[0], by_prob);
		double cum = 0;
		int want = NV;
		for (int i = 0; i < NV; i++) {
			cum += pairs[i][0];
			if (cum >= tps[t]) {
				want = i + 1;
				break;
			}
		}
		SamplerParams p = plain(1.0f);
		p.top_p = tps[t];
		Sampler s;
		ck_assert_int_eq(sampler_init(&s, &p, NV), 0);
		static int32_t ids[NV];
		static float pr[NV];
		int n = sampler_probs(&s, l, ids, pr, NV);
		ck_assert_msg(n == want, "top-p %.3f: kept %d, full sort %d",
			      tps[t], n, want);
		for (int i = 0; i < n; i++)
			ck_assert_int_eq(ids[i], (int32_t)pairs[i][1]);
		sampler_free(&s);
	}
}
END_TEST

/* Best first: larger logit, lower id on ties (the sampler's order). */
static int cand_cmp(const void *a, const void *b)
{
	const float *la = *(const float *const *)a, *lb = *(const float *const *)b;
	if (*la != *lb)
		return *la > *lb ? -1 : 1;
	return la < lb ? -1 : 1; /* same array: address order = id order */
}

#define BEST_NV_MAX 5000 /* largest vocabulary best_k sorts */

/* vals/ids: the k best of nv logits, best first (larger logit, lower id
 * on ties): what a GPU's topk_rows hands back. */
static void best_k(const float *logits, int nv, int k, float *vals,
		   int32_t *ids)
{
	static const float *order[BEST_NV_MAX];
	ck_assert_int_le(nv, BEST_NV_MAX);
	for (int i = 0; i < nv; i++)
		order[i] = &logits[i];
	qsort(order, (size_t)nv, sizeof order[0], cand_cmp);
	for (int i = 0; i < k; i++) {
		vals[i] = *order[i];
		ids[i] = (int32_t)(order[i] - logits);
	}
}

/* What sampler_takes_topk or sampler_takes_top says for p. */
static int takes(int (*pred)(const Sampler *), const SamplerParams *p,
		 int nv)
{
	Sampler s;
	ck_assert_int_eq(sampler_init(&s, p, nv), 0);
	int r = pred(&s);
	sampler_free(&s);
	return r;
}

/* A draw from the k best candidates (what a GPU's topk_rows hands back)
 * is the same token, from the same random stream, as a draw from all the
 * logits: over many steps, with ties at the k-th place, top-p and min-p. */
START_TEST(topk_candidates_same_draws)
{
	enum { NV = 5000, K = 64 };
	static float logits[NV], work[NV], vals[K];
	int32_t ids[K];
	const int ks[] = {1, 2, 40, 50, 64};
	const float tps[] = {1.0f, 0.9f, 0.5f};
	uint64_t x = 42;
	for (int cfg = 0; cfg < 15; cfg++) {
		SamplerParams p = plain(0.5f + 0.25f * (cfg % 4));
		p.top_k = ks[cfg % 5];
		p.top_p = tps[cfg % 3];
		p.min_p = cfg % 2 ? 0.05f : 0.0f;
		p.seed = 1000 + cfg;
		Sampler a, b;
		ck_assert_int_eq(sampler_init(&a, &p, NV), 0);
		ck_assert_int_eq(sampler_init(&b, &p, NV), 0);
		ck_assert_int_eq(sampler_takes_topk(&b), p.top_k);
		for (int step = 0; step < 200; step++) {
			for (int i = 0; i < NV; i++) {
				x = x * 6364136223846793005ULL + 1442695040888963407ULL;
				/* coarse values: many ties, also at the k-th */
				logits[i] = (float)((x >> 40) % 64) * 0.25f - 8.0f;
			}
			best_k(logits, NV, K, vals, ids);
			memcpy(work, logits, sizeof work);
			int32_t t1 = sampler_sample(&a, work);
			int32_t t2 = sampler_sample_topk(&b, vals, ids);
			ck_assert_msg(t1 == t2, "config %d step %d: %d from the "
				      "logits, %d from the candidates", cfg,
				      step, t1, t2);
			sampler_accept(&a, t1);
			sampler_accept(&b, t2);
		}
		sampler_free(&a);
		sampler_free(&b);
	}
	/* penalties or greedy: not a top-k draw */
	SamplerParams p = plain(0.8f);
	p.top_k = 40;
	p.repeat_penalty = 1.1f;
	ck_assert_int_eq(takes(sampler_takes_topk, &p, NV), 0);
	p = plain(0.0f);
	p.top_k = 40;
	ck_assert_int_eq(takes(sampler_takes_topk, &p, NV), 0);
}
END_TEST

/* Without top-k: a top-p / min-p draw from the 64 best candidates and the
 * softmax normaliser (what topk_rows and expsum_rows hand back) is the
 * same token, from the same random stream, as a draw from all the logits
 * (the normaliser summed here as the sampler does, in id order), or -1
 * when the candidates cannot settle it; then the full draw still agrees.
 * Peaked, coarse (ties at the 64th place) and flat logits. */
START_TEST(top_candidates_same_draws)
{
	enum { NV = 5000, K = 64 };
	static float logits[NV], work[NV], vals[K];
	int32_t ids[K];
	const float tps[] = {0.9f, 0.5f, 1.0f, 0.99f};
	const float mps[] = {0.0f, 0.05f, 0.2f};
	uint64_t x = 7;
	int settled = 0, unsettled = 0;
	for (int cfg = 0; cfg < 24; cfg++) {
		SamplerParams p = plain(0.5f + 0.25f * (cfg % 3));
		p.top_p = tps[cfg % 4];
		p.min_p = mps[(cfg / 4) % 3];
		p.seed = 2000 + cfg;
		int shape = cfg % 3; /* 0 peaked, 1 coarse, 2 flat */
		Sampler a, b;
		ck_assert_int_eq(sampler_init(&a, &p, NV), 0);
		ck_assert_int_eq(sampler_init(&b, &p, NV), 0);
		int want = p.top_p < 1.0f || p.min_p > 0.0f;
		ck_assert_int_eq(sampler_takes_top(&b), want);
		if (!want) {
			sampler_free(&a);
			sampler_free(&b);
			continue;
		}
		for (int step = 0; step < 100; step++) {
			for (int i = 0; i < NV; i++) {
				x = x * 6364136223846793005ULL + 1442695040888963407ULL;
				double u = (double)(x >> 11) / 9007199254740992.0;
				/* peaked: ~12 tokens 8 above a noise floor */
				float bump = (x >> 20) % 400 == 0 ? 8.0f : 0.0f;
				logits[i] = shape == 0 ? (float)(u * 4.0 - 2.0) + bump
					: shape == 1 ? (float)((x >> 40) % 64) * 0.25f - 8.0f
					: (float)(u * 0.01);
			}
			best_k(logits, NV, K, vals, ids);
			float mx = logits[0];
			for (int i = 1; i < NV; i++)
				if (logits[i] > mx)
					mx = logits[i];
			double sum = 0.0;
			for (int i = 0; i < NV; i++)
				sum += exp(((double)logits[i] - mx) / p.temperature);
			memcpy(work, logits, sizeof work);
			int32_t t1 = sampler_sample(&a, work);
			int32_t t2 = sampler_sample_top(&b, vals, ids, K, sum);
			if (t2 < 0) {
				unsettled++;
				memcpy(work, logits, sizeof work);
				t2 = sampler_sample(&b, work);
			} else {
				settled++;
			}
			ck_assert_msg(t1 == t2, "config %d step %d: %d from the "
				      "logits, %d from the candidates", cfg,
				      step, t1, t2);
			sampler_accept(&a, t1);
			sampler_accept(&b, t2);
		}
		sampler_free(&a);
		sampler_free(&b);
	}
	printf("top-p/min-p from 64 candidates: %d draws settled, %d fell "
	       "back to the logits, all equal\n", settled, unsettled);
	ck_assert_int_gt(settled, 600);  /* peaked: the candidates settle it */
	ck_assert_int_gt(unsettled, 100); /* flat: they cannot */
	/* top-k on, penalties, greedy, or neither filter: not this draw */
	SamplerParams q = plain(0.8f);
	q.top_p = 0.9f;
	q.top_k = 40;
	ck_assert_int_eq(takes(sampler_takes_top, &q, NV), 0);
	q.top_k = 0;
	q.presence_penalty = 0.5f;
	ck_assert_int_eq(takes(sampler_takes_top, &q, NV), 0);
	q = plain(0.0f);
	q.top_p = 0.9f;
	ck_assert_int_eq(takes(sampler_takes_top, &q, NV), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sampler");
	TCase *tc = tcase_create("sampler");
	tcase_add_test(tc, greedy_ties_lowest_id);
	tcase_add_test(tc, temperature_softmax);
	tcase_add_test(tc, top_k);
	tcase_add_test(tc, top_p);
	tcase_add_test(tc, min_p);
	tcase_add_test(tc, chain_order);
	tcase_add_test(tc, penalties);
	tcase_add_test(tc, seed_reproducible);
	tcase_add_test(tc, chi_square);
	tcase_add_test(tc, large_vocab_top_k);
	tcase_add_test(tc, large_vocab_top_p);
	tcase_add_test(tc, topk_candidates_same_draws);
	tcase_add_test(tc, top_candidates_same_draws);
	suite_add_tcase(s, tc);
	SRunner *r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
