/*
 * sampler.c - next-token choice from logits. See sampler.h for the order of
 * the filters. Everything the per-token path touches is allocated in
 * sampler_init(), so sampling a token never calls malloc (the library
 * qsort() may allocate, which is why the sort below is our own).
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef SamplerCand Cand;

void sampler_params_default(SamplerParams *p)
{
	p->temperature = 0.8f;
	p->top_k = 40;
	p->top_p = 0.95f;
	p->min_p = 0.05f;
	p->repeat_penalty = 1.0f;
	p->freq_penalty = 0.0f;
	p->presence_penalty = 0.0f;
	p->penalty_last_n = 64;
	p->seed = 0x5eed;
}

/* splitmix64: spreads one 64-bit seed over the xoshiro state, as its
 * authors recommend (an all-zero state would be a fixed point). */
static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman & Vigna). */
static uint64_t xoshiro_next(uint64_t s[4])
{
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

/* Uniform double in [0, 1) from the top 53 bits. */
static double uniform01(uint64_t s[4])
{
	return (double)(xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

int sampler_init(Sampler *s, const SamplerParams *p, int n_vocab)
{
	memset(s, 0, sizeof *s);
	if (n_vocab <= 0)
		return -1;
	s->p = *p;
	if (s->p.penalty_last_n < 0)
		s->p.penalty_last_n = 0;
	if (s->p.penalty_last_n > 32767) /* counts are uint16, top bit a mark */
		s->p.penalty_last_n = 32767;
	s->n_vocab = n_vocab;
	s->cand = calloc((size_t)n_vocab, sizeof *s->cand);
	s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
	s->recent = calloc((size_t)s->p.penalty_last_n + 1, sizeof *s->recent);
	if (!s->cand || !s->counts || !s->recent) {
		sampler_free(s);
		return -1;
	}
	uint64_t x = p->seed;
	for (int i = 0; i < 4; i++)
		s->rng[i] = splitmix64(&x);
	return 0;
}

void sampler_free(Sampler *s)
{
	free(s->cand);
	free(s->counts);
	free(s->recent);
	s->cand = NULL;
	s->counts = NULL;
	s->recent = NULL;
}

void sampler_accept(Sampler *s, int32_t id)
{
	int n = s->p.penalty_last_n;
	if (n <= 0 || id < 0 || id >= s->n_vocab)
		return;
	if (s->n_recent == n) { /* ring full: the oldest leaves the window */
		int32_t old = s->recent[s->recent_head];
		s->counts[old]--;
	} else {
		s->n_recent++;
	}
	s->recent[s->recent_head] = id;
	s->counts[id]++;
	s->recent_head = (s->recent_head + 1) % n;
}

/* Candidate order: larger logit first, lower id on ties (deterministic). */
static int before(const Cand *a, const Cand *b)
{
	return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void swap(Cand *a, Cand *b)
{
	Cand t = *a;
	*a = *b;
	*b = t;
}

/* Hoare-style partition around a median-of-three pivot; returns the split:
 * c[0..r] come before or tie with the pivot, c[r+1..] after or tie. */
static int partition(Cand *c, int n)
{
	int mid = n / 2;
	if (before(&c[mid], &c[0]))
		swap(&c[mid], &c[0]);
	if (before(&c[n - 1], &c[0]))
		swap(&c[n - 1], &c[0]);
	if (before(&c[n - 1], &c[mid]))
		swap(&c[n - 1], &c[mid]);
	Cand pv = c[mid];
	int i = -1, j = n;
	for (;;) {
		do
			i++;
		while (before(&c[i], &pv));
		do
			j--;
		while (before(&pv, &c[j]));
		if (i >= j)
			return j;
		swap(&c[i], &c[j]);
	}
}

static void insertion_sort(Cand *c, int n)
{
	for (int i = 1; i < n; i++) {
		Cand v = c[i];
		int j = i - 1;
		while (j >= 0 && before(&v, &c[j])) {
			c[j + 1] = c[j];
			j--;
		}
		c[j + 1] = v;
	}
}

/* Sort c[0..n) into candidate order. Recursion only on the smaller side,
 * so the stack stays O(log n). */
static void sort_cands(Cand *c, int n)
{
	while (n > 16) {
		int r = partition(c, n) + 1;
		if (r < n - r) {
			sort_cands(c, r);
			c += r;
			n -= r;
		} else {
			sort_cands(c + r, n - r);
			n = r;
		}
	}
	insertion_sort(c, n);
}

/* Move the k best candidates to c[0..k) (any order): quickselect. */
static void select_top(Cand *c, int n, int k)
{
	while (n > 16 && k > 0 && k < n) {
		int r = partition(c, n) + 1;
		if (k < r) {
			n = r;
		} else {
			c += r;
			n -= r;
			k -= r;
		}
	}
	if (k > 0 && k < n)
		insertion_sort(c, n);
}

/* Top-p over c[0..n) holding normalised probabilities: sorts the best
 * candidates to the front and returns how many reach top_p together.
 * Nuclei are usually small, so it sorts the best 64, then 256, ... (one
 * quickselect each) instead of the whole vocabulary. */
static int nucleus(Cand *c, int n, float top_p)
{
	int k = n < 64 ? n : 64;
	for (;;) {
		select_top(c, n, k);
		sort_cands(c, k);
		double cum = 0.0;
		for (int i = 0; i < k; i++) {
			cum += c[i].logit;
			if (cum >= top_p)
				return i + 1;
		}
		if (k == n)
			return n; /* rounding kept the sum below top_p */
		k = k <= n / 4 ? k * 4 : n;
	}
}

int sampler_penalties_on(const SamplerParams *p)
{
	return (p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f) ||
	       p->freq_penalty != 0.0f || p->presence_penalty != 0.0f;
}

static void apply_penalties(Sampler *s, float *logits)
{
	const SamplerParams *p = &s->p;
	if (s->n_recent == 0 || !sampler_penalties_on(p))
		return;
	/* Visit each distinct recent token once: the top bit of its count
	 * marks it done (the window is at most 32767), a second pass clears
	 * the marks. The ring is small, the vocabulary is not. */
	for (int i = 0; i < s->n_recent; i++) {
		int32_t id = s->recent[i];
		if (s->counts[id] & 0x8000)
			continue;
		float l = logits[id];
		if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f)
			l = l > 0.0f ? l / p->repeat_penalty
				     : l * p->repeat_penalty;
		l -= (float)s->counts[id] * p->freq_penalty +
		     p->presence_penalty;
		logits[id] = l;
		s->counts[id] |= 0x8000;
	}
	for (int i = 0; i < s->n_recent; i++)
		s->counts[s->recent[i]] &= 0x7fff;
}

/* Index of the largest of x[0..n), the lowest on ties. Two passes: the
 * maximum with 8 independent lanes (no loop-carried index, so the compiler
 * can keep them in registers), then the first index holding it. NaNs never
 * win (every comparison with them is false). */
static int32_t argmax_lowest(const float *x, int n)
{
	float m[8];
	int i = 0;
	for (int k = 0; k < 8; k++)
		m[k] = -INFINITY;
	for (; i + 8 <= n; i += 8)
		for (int k = 0; k < 8; k++)
			m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
	for (; i < n; i++)
		m[0] = x[i] > m[0] ? x[i] : m[0];
	float best = m[0];
	for (int k = 1; k < 8; k++)
		best = m[k] > best ? m[k] : best;
	for (i = 0; i < n; i++)
		if (x[i] == best)
			return i;
	return 0; /* all NaN or -inf */
}

/* cand[0..n): the survivors of top-k (sorted when top_k_cut), still
 * with their logits: softmax with temperature, min-p, top-p,
 * normalisation. */
static int probs(Sampler *s, int n, int top_k_cut, int need_order)
{
	const SamplerParams *p = &s->p;
	Cand *c = s->cand;
	/* Softmax with temperature over the top-k survivors. */
	float mx = c[0].logit;
	for (int i = 1; i < n; i++)
		if (c[i].logit > mx)
			mx = c[i].logit;
	double sum = 0.0;
	for (int i = 0; i < n; i++)
		sum += exp(((double)c[i].logit - mx) / p->temperature);
	/* min-p keeps p_i >= min_p * p_max, i.e. exp((l_i - max)/T) >=
	 * min_p. It can only shorten the prefix top-p keeps, and top-p uses
	 * probabilities normalised over all survivors of top-k (sum above),
	 * so dropping min-p's losers before sorting changes nothing but the
	 * sort's cost. */
	double floor_w = p->min_p > 0.0f ? (double)p->min_p : 0.0;
	int m = 0;
	for (int i = 0; i < n; i++) {
		double w = exp(((double)c[i].logit - mx) / p->temperature);
		if (w >= floor_w) {
			c[m].id = c[i].id;
			c[m].logit = (float)(w / sum);
			/* keep the original logit order: w is monotone in
			 * the logit, so sorting by probability is the same */
			m++;
		}
	}
	n = m;
	if (p->top_p < 1.0f)
		n = nucleus(c, n, p->top_p);
	else if (need_order && !top_k_cut) /* min-p kept top-k's order */
		sort_cands(c, n); /* a draw needs no order, only a stable one */
	double kept = 0.0;
	for (int i = 0; i < n; i++)
		kept += c[i].logit;
	for (int i = 0; i < n; i++)
		c[i].logit = (float)(c[i].logit / kept);
	return n;
}

/* Penalties, then the filters; leaves the kept candidates in cand[0..n)
 * with their probabilities (normalised over the kept set) in .logit, in
 * candidate order when need_order or top-p asked for it (otherwise in an
 * order fixed by the inputs). Returns n (1 for greedy). */
static int prepare(Sampler *s, float *logits, int need_order)
{
	const SamplerParams *p = &s->p;
	Cand *c = s->cand;
	int n = s->n_vocab;

	apply_penalties(s, logits);
	if (!(p->temperature > 0.0f)) {
		c[0].id = argmax_lowest(logits, n);
		c[0].logit = 1.0f;
		return 1;
	}
	for (int i = 0; i < n; i++) {
		c[i].logit = logits[i];
		c[i].id = i;
	}
	int top_k_cut = p->top_k > 0 && p->top_k < n;
	if (top_k_cut) {
		/* Quickselect leaves the survivors in an order that depends
		 * on every logit, so noise far below any probability that
		 * matters (a GPU batch against the same request alone) would
		 * change the sums below and send the same draw to another
		 * token. Sorted, the order follows the logits alone (without
		 * top-k the candidates stay in id order, also stable). */
		select_top(c, n, p->top_k);
		n = p->top_k;
		sort_cands(c, n);
	}
	return probs(s, n, top_k_cut, need_order);
}

static int32_t draw(Sampler *s, int n)
{
	Cand *c = s->cand;
	if (n == 1)
		return c[0].id;
	double r = uniform01(s->rng), cum = 0.0;
	for (int i = 0; i < n; i++) {
		cum += c[i].logit;
		if (r < cum)
			return c[i].id;
	}
	return c[n - 1].id; /* rounding left r just above the sum */
}

int32_t sampler_sample(Sampler *s, float *logits)
{
	return draw(s, prepare(s, logits, 0));
}

int sampler_takes_topk(const Sampler *s)
{
	const SamplerParams *p = &s->p;
	if (!(p->temperature > 0.0f) || sampler_penalties_on(p) ||
	    p->top_k <= 0 || p->top_k >= s->n_vocab)
		return 0;
	return p->top_k;
}

int32_t sampler_sample_topk(Sampler *s, const float *vals, const int32_t *ids)
{
	int n = s->p.top_k;
	for (int i = 0; i < n; i++) {
		s->cand[i].logit = vals[i];
		s->cand[i].id = ids[i];
	}
	return draw(s, probs(s, n, 1, 0));
}

int sampler_takes_top(const Sampler *s)
{
	const SamplerParams *p = &s->p;
	return p->temperature > 0.0f && !sampler_penalties_on(p) &&
	       (p->top_k <= 0 || p->top_k >= s->n_vocab) &&
	       (p->top_p < 1.0f || p->min_p > 0.0f);
}

/* Candidate order by id alone (min-p without top-p draws in id order). */
static void sort_ids(Cand *c, int n)
{
	for (int i = 1; i < n; i++) {
		Cand v = c[i];
		int j = i - 1;
		while (j >= 0 && c[j].id > v.id) {
			c[j + 1] = c[j];
			j--;
		}
		c[j + 1] = v;
	}
}

int32_t sampler_sample_top(Sampler *s, const float *vals, const int32_t *ids,
			   int k, double sum)
{
	const SamplerParams *p = &s->p;
	Cand *c = s->cand;
	if (k <= 0 || !(sum > 0.0) || !isfinite(sum))
		return -1; /* NaN or inf logits: the full path decides */
	/* probs() without top-k: w = exp((l - max) / T) against the sum over
	 * all logits, min-p's floor, then top-p's nucleus, in the order
	 * nucleus() sorts (probability, then id). The candidates are the
	 * best k logits, so the tokens min-p keeps are all among them once
	 * one candidate falls below the floor (w grows with the logit). */
	float mx = vals[0];
	double floor_w = p->min_p > 0.0f ? (double)p->min_p : 0.0;
	int m = 0, complete = 0;
	for (int i = 0; i < k; i++) {
		double w = exp(((double)vals[i] - mx) / p->temperature);
		if (!(w >= floor_w)) {
			complete = 1;
			break;
		}
		c[m].id = ids[i];
		c[m].logit = (float)(w / sum);
		m++;
	}
	int n = m;
	if (p->top_p < 1.0f) {
		sort_cands(c, m);
		double cum = 0.0;
		int cut = 0;
		for (int i = 0; i < m && !cut; i++) {
			cum += c[i].logit;
			if (cum >= p->top_p)
				cut = i + 1;
		}
		/* Without the whole min-p set in hand the nucleus is exact
		 * only if it ends before the candidates do, and not inside a
		 * run of equal probabilities that may go on past them (a
		 * token beyond with the same probability and a lower id
		 * would come first). */
		if (!complete &&
		    (!cut || c[cut - 1].logit == c[m - 1].logit))
			return -1;
		n = cut ? cut : m;
	} else {
		if (!complete)
			return -1;
		sort_ids(c, m);
	}
	double kept = 0.0;
	for (int i = 0; i < n; i++)
		kept += c[i].logit;
	for (int i = 0; i < n; i++)
		c[i].logit = (float)(c[i].logit / kept);
	return draw(s, n);
}

int sampler_probs(Sampler *s, float *logits, int32_t *ids, float *probs,
		  int cap)
{
	int n = prepare(s, logits, 1);
	Cand *c = s->cand;
	for (int i = 0; i < n && i < cap; i++) {
		ids[i] = c[i].id;
		probs[i] = c[i].logit;
	}
	return n;
}
