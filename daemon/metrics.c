/*
 * metrics.c - request counters and histograms (see metrics.h).
 *
 * Series live in fixed arrays searched linearly: a daemon sees a handful
 * of models, operations and users, and the metrics op is rare, so this
 * stays simpler than a hash and bounded in memory whatever clients do.
 */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

/* Histogram upper bounds (the +Inf bucket is implicit). */
static const double ttft_le[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
				  1, 2.5, 5, 10, 30 };
static const double toks_le[] = { 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000,
				  2500, 5000 };
#define NT (sizeof ttft_le / sizeof ttft_le[0])
#define NS (sizeof toks_le / sizeof toks_le[0])

#define UID_OTHER ((uid_t)-1) /* the series table was full */

typedef struct Series {
	char model[METRICS_NAME]; /* model label */
	char op[16];              /* operation */
	uid_t uid;                /* client user, or UID_OTHER */
	int ok;                   /* outcome: 1 ok, 0 error */
	unsigned long long requests;      /* finished requests */
	unsigned long long prompt_tokens; /* tokens of their prompts */
	unsigned long long gen_tokens;    /* tokens they generated */
} Series;

typedef struct Hist {
	char model[METRICS_NAME];      /* model label */
	unsigned long long ttft[NT];   /* non-cumulative bucket counts */
	unsigned long long ttft_inf;   /* over the last bound */
	unsigned long long ttft_n;     /* observations */
	double ttft_sum;               /* seconds */
	unsigned long long toks[NS];   /* decode tokens/s buckets */
	unsigned long long toks_inf;   /* over the last bound */
	unsigned long long toks_n;     /* observations */
	double toks_sum;               /* tokens/s summed */
} Hist;

struct Metrics {
	Series series[METRICS_MAX_SERIES]; /* counters */
	int nseries;                       /* used */
	Hist hist[METRICS_MAX_MODELS];     /* per-model histograms */
	int nhist;                         /* used */
};

Metrics *metrics_new(void)
{
	return calloc(1, sizeof(Metrics));
}

void metrics_free(Metrics *m)
{
	free(m);
}

static void copy(char *dst, size_t cap, const char *s)
{
	size_t n = strnlen(s ? s : "", cap - 1);
	memcpy(dst, s ? s : "", n);
	dst[n] = 0;
}

static Series *series_for(Metrics *m, const char *model, const char *op,
			  uid_t uid, int ok)
{
	char mb[METRICS_NAME], ob[16];
	copy(mb, sizeof mb, model);
	copy(ob, sizeof ob, op);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < m->nseries; i++) {
			Series *s = &m->series[i];
			if (s->uid == uid && s->ok == ok && !strcmp(s->model, mb) &&
			    !strcmp(s->op, ob))
				return s;
		}
		/* one slot stays free for the first "other" series */
		if (m->nseries < METRICS_MAX_SERIES - (uid != UID_OTHER)) {
			Series *s = &m->series[m->nseries++];
			memcpy(s->model, mb, sizeof mb);
			memcpy(s->op, ob, sizeof ob);
			s->uid = uid;
			s->ok = ok;
			return s;
		}
		if (uid == UID_OTHER)
			return NULL;
		uid = UID_OTHER;
	}
	return NULL;
}

static Hist *hist_for(Metrics *m, const char *model)
{
	char mb[METRICS_NAME];
	copy(mb, sizeof mb, model);
	for (int i = 0; i < m->nhist; i++)
		if (!strcmp(m->hist[i].model, mb))
			return &m->hist[i];
	if (m->nhist == METRICS_MAX_MODELS)
		return NULL;
	Hist *h = &m->hist[m->nhist++];
	memcpy(h->model, mb, sizeof mb);
	return h;
}

static void observe(const double *le, size_t n, unsigned long long *b,
		    unsigned long long *inf, double v)
{
	for (size_t i = 0; i < n; i++)
		if (v <= le[i]) {
			b[i]++;
			return;
		}
	(*inf)++;
}

void metrics_request(Metrics *m, const char *model, const char *op, uid_t uid,
		     int ok, int prompt_tokens, int gen_tokens, double ttft,
		     double tok_s)
{
	if (!m)
		return;
	Series *s = series_for(m, model, op, uid, ok ? 1 : 0);
	if (s) {
		s->requests++;
		s->prompt_tokens += prompt_tokens > 0 ? (unsigned)prompt_tokens : 0;
		s->gen_tokens += gen_tokens > 0 ? (unsigned)gen_tokens : 0;
	}
	if (ttft < 0 && tok_s <= 0)
		return;
	Hist *h = hist_for(m, model);
	if (!h)
		return;
	if (ttft >= 0) {
		observe(ttft_le, NT, h->ttft, &h->ttft_inf, ttft);
		h->ttft_n++;
		h->ttft_sum += ttft;
	}
	if (tok_s > 0) {
		observe(toks_le, NS, h->toks, &h->toks_inf, tok_s);
		h->toks_n++;
		h->toks_sum += tok_s;
	}
}

void metrics_label(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', out);
		if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
	}
}

static void series_labels(FILE *out, const Series *s, int with_op)
{
	fputs("{model=\"", out);
	metrics_label(out, s->model);
	if (with_op) {
		fputs("\",op=\"", out);
		metrics_label(out, s->op);
	}
	if (s->uid == UID_OTHER)
		fputs("\",uid=\"other", out);
	else
		fprintf(out, "\",uid=\"%u", (unsigned)s->uid);
	if (with_op)
		fprintf(out, "\",status=\"%s", s->ok ? "ok" : "error");
	fputs("\"}", out);
}

/* Token counters are per model and uid: sum the op/status series. */
static void token_counter(FILE *out, const Metrics *m, const char *name,
			  const char *help, int prompt)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (int i = 0; i < m->nseries; i++) {
		const Series *a = &m->series[i];
		int seen = 0;
		for (int j = 0; j < i && !seen; j++)
			seen = m->series[j].uid == a->uid &&
			       !strcmp(m->series[j].model, a->model);
		if (seen)
			continue;
		unsigned long long sum = 0;
		for (int j = i; j < m->nseries; j++)
			if (m->series[j].uid == a->uid &&
			    !strcmp(m->series[j].model, a->model))
				sum += prompt ? m->series[j].prompt_tokens :
						m->series[j].gen_tokens;
		fputs(name, out);
		series_labels(out, a, 0);
		fprintf(out, " %llu\n", sum);
	}
}

static void histogram(FILE *out, const char *model, const char *name,
		      const double *le, size_t n, const unsigned long long *b,
		      unsigned long long inf, unsigned long long count, double sum)
{
	unsigned long long cum = 0;
	for (size_t i = 0; i <= n; i++) {
		cum += i < n ? b[i] : inf;
		fprintf(out, "%s_bucket{model=\"", name);
		metrics_label(out, model);
		if (i < n)
			fprintf(out, "\",le=\"%g\"} %llu\n", le[i], cum);
		else
			fprintf(out, "\",le=\"+Inf\"} %llu\n", cum);
	}
	fprintf(out, "%s_sum{model=\"", name);
	metrics_label(out, model);
	fprintf(out, "\"} %.9g\n%s_count{model=\"", sum, name);
	metrics_label(out, model);
	fprintf(out, "\"} %llu\n", count);
}

void metrics_render(const Metrics *m, FILE *out)
{
	fputs("# HELP inferd_requests_total Requests finished, by model, "
	      "operation, user and outcome.\n"
	      "# TYPE inferd_requests_total counter\n", out);
	for (int i = 0; i < m->nseries; i++) {
		fputs("inferd_requests_total", out);
		series_labels(out, &m->series[i], 1);
		fprintf(out, " %llu\n", m->series[i].requests);
	}
	token_counter(out, m, "inferd_prompt_tokens_total",
		      "Prompt tokens of finished requests, by model and user.", 1);
	token_counter(out, m, "inferd_generated_tokens_total",
		      "Tokens generated, by model and user.", 0);
	fputs("# HELP inferd_time_to_first_token_seconds Request arrival to "
	      "its first generated token.\n"
	      "# TYPE inferd_time_to_first_token_seconds histogram\n", out);
	for (int i = 0; i < m->nhist; i++) {
		const Hist *h = &m->hist[i];
		if (h->ttft_n)
			histogram(out, h->model, "inferd_time_to_first_token_seconds",
				  ttft_le, NT, h->ttft, h->ttft_inf, h->ttft_n,
				  h->ttft_sum);
	}
	fputs("# HELP inferd_decode_tokens_per_second Decode speed of each "
	      "generate.\n"
	      "# TYPE inferd_decode_tokens_per_second histogram\n", out);
	for (int i = 0; i < m->nhist; i++) {
		const Hist *h = &m->hist[i];
		if (h->toks_n)
			histogram(out, h->model, "inferd_decode_tokens_per_second",
				  toks_le, NS, h->toks, h->toks_inf, h->toks_n,
				  h->toks_sum);
	}
}
