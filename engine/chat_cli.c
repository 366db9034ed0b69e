/*
 * chat_cli.c - `infer-run chat` (see chat_cli.h): argument parsing, the
 * conversation history, and one engine_generate() per turn.
 */
#include "chat_cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "engine.h"

#define MAX_OVERRIDES 32 /* --override-kv flags kept */

const char chat_cli_usage[] =
	"usage: infer-run chat MODEL [options]\n"
	"  -p, --prompt TEXT       ask one question, print the answer, exit\n"
	"                          (without it: interactive, one message per line;\n"
	"                          /reset forgets the conversation, /exit or EOF quits)\n"
	"  --system TEXT           system message (\"\" = an empty one; without it\n"
	"                          the template's default, if any, applies)\n"
	"  --chat-template NAME    chatml, llama2, llama3, mistral, zephyr, gemma,\n"
	"                          phi3, or a .jinja file; default: the model's own\n"
	"  --show-prompt           print each rendered prompt on stderr\n"
	"  -n, --max-tokens N      reply length limit (default 512)\n"
	"  --temp T  --top-k K  --top-p P  --min-p P  --seed S\n"
	"  --repeat-penalty X  --freq-penalty X  --presence-penalty X\n"
	"  --ctx N  --batch N  --threads N  --backend auto|cpu|cuda  --device N\n"
	"  --override-kv KEY=TYPE:VALUE   (repeatable)\n"
	"  -q, --quiet             no timings or notices on stderr\n";

typedef struct Args {
	const char *model;       /* path */
	const char *prompt;      /* -p: one-shot question, NULL = interactive */
	const char *system;      /* --system, NULL = none */
	const char *tmpl;        /* --chat-template */
	int show_prompt;         /* --show-prompt */
	int quiet;               /* -q */
	GenParams gen;           /* sampling and limits */
	EngineOptions eo;        /* backend, threads, ctx */
	const char *ov[MAX_OVERRIDES]; /* --override-kv specs */
	int n_ov;                /* how many */
} Args;

static int num_d(const char *flag, const char *s, double lo, double hi,
		 double *out)
{
	char *end;
	errno = 0;
	double v = s ? strtod(s, &end) : 0;
	if (!s || end == s || *end || errno || !isfinite(v) || v < lo || v > hi) {
		fprintf(stderr, "infer-run chat: %s needs a number in [%g, %g]\n",
			flag, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

static int num_i(const char *flag, const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = s ? strtol(s, &end, 10) : 0;
	if (!s || end == s || *end || errno || v < lo || v > hi) {
		fprintf(stderr, "infer-run chat: %s needs an integer in [%ld, %ld]\n",
			flag, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

/* Returns 0, 1 for --help, -1 on a usage error (message printed). */
static int parse_args(int argc, char **argv, Args *a)
{
	memset(a, 0, sizeof *a);
	gen_params_default(&a->gen);
	a->gen.max_tokens = 512;
	a->eo.backend = "auto";
	for (int i = 1; i < argc; i++) {
		const char *f = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		double d;
		long l;
#define TAKE (i++, v)
		if (!strcmp(f, "-h") || !strcmp(f, "--help"))
			return 1;
		else if (!strcmp(f, "-p") || !strcmp(f, "--prompt")) {
			if (!v) goto missing;
			a->prompt = TAKE;
		} else if (!strcmp(f, "--system")) {
			if (!v) goto missing;
			a->system = TAKE;
		} else if (!strcmp(f, "--chat-template")) {
			if (!v) goto missing;
			a->tmpl = TAKE;
		} else if (!strcmp(f, "--show-prompt"))
			a->show_prompt = 1;
		else if (!strcmp(f, "-q") || !strcmp(f, "--quiet"))
			a->quiet = 1;
		else if (!strcmp(f, "-n") || !strcmp(f, "--max-tokens")) {
			if (num_i(f, TAKE, 1, INT_MAX, &l)) return -1;
			a->gen.max_tokens = (int)l;
		} else if (!strcmp(f, "--temp")) {
			if (num_d(f, TAKE, 0, 100, &d)) return -1;
			a->gen.sampling.temperature = (float)d;
		} else if (!strcmp(f, "--top-k")) {
			if (num_i(f, TAKE, 0, INT_MAX, &l)) return -1;
			a->gen.sampling.top_k = (int)l;
		} else if (!strcmp(f, "--top-p")) {
			if (num_d(f, TAKE, 0, 1, &d)) return -1;
			a->gen.sampling.top_p = (float)d;
		} else if (!strcmp(f, "--min-p")) {
			if (num_d(f, TAKE, 0, 1, &d)) return -1;
			a->gen.sampling.min_p = (float)d;
		} else if (!strcmp(f, "--repeat-penalty")) {
			if (num_d(f, TAKE, 0, 100, &d)) return -1;
			a->gen.sampling.repeat_penalty = (float)d;
		} else if (!strcmp(f, "--freq-penalty")) {
			if (num_d(f, TAKE, -100, 100, &d)) return -1;
			a->gen.sampling.freq_penalty = (float)d;
		} else if (!strcmp(f, "--presence-penalty")) {
			if (num_d(f, TAKE, -100, 100, &d)) return -1;
			a->gen.sampling.presence_penalty = (float)d;
		} else if (!strcmp(f, "--seed")) {
			char *end;
			const char *s = TAKE;
			errno = 0;
			unsigned long long u = s ? strtoull(s, &end, 10) : 0;
			if (!s || end == s || *end || errno) {
				fprintf(stderr, "infer-run chat: --seed needs an unsigned integer\n");
				return -1;
			}
			a->gen.sampling.seed = u;
		} else if (!strcmp(f, "--ctx")) {
			if (num_i(f, TAKE, 1, INT_MAX, &l)) return -1;
			a->eo.ctx = (int)l;
		} else if (!strcmp(f, "--batch")) {
			if (num_i(f, TAKE, 1, 1 << 20, &l)) return -1;
			a->eo.max_batch = (int)l;
		} else if (!strcmp(f, "--threads")) {
			if (num_i(f, TAKE, 1, 1024, &l)) return -1;
			a->eo.threads = (int)l;
		} else if (!strcmp(f, "--device")) {
			if (num_i(f, TAKE, 0, 1024, &l)) return -1;
			a->eo.device = (int)l;
		} else if (!strcmp(f, "--backend")) {
			if (!v) goto missing;
			a->eo.backend = TAKE;
		} else if (!strcmp(f, "--override-kv")) {
			if (!v) goto missing;
			if (a->n_ov == MAX_OVERRIDES) {
				fprintf(stderr, "infer-run chat: at most %d --override-kv\n",
					MAX_OVERRIDES);
				return -1;
			}
			a->ov[a->n_ov++] = TAKE;
		} else if (f[0] == '-' && f[1]) {
			fprintf(stderr, "infer-run chat: unknown option %s\n", f);
			return -1;
		} else if (!a->model)
			a->model = f;
		else {
			fprintf(stderr, "infer-run chat: unexpected argument %s\n", f);
			return -1;
		}
		continue;
missing:
		fprintf(stderr, "infer-run chat: %s needs a value\n", f);
		return -1;
#undef TAKE
	}
	if (!a->model) {
		fprintf(stderr, "infer-run chat: no MODEL given\n");
		return -1;
	}
	a->eo.quiet = a->quiet;
	a->eo.overrides = a->ov;
	a->eo.n_overrides = a->n_ov;
	return 0;
}

/* The conversation: owned copies of every message. */
typedef struct History {
	ChatMessage *m; /* messages, role strings static, content malloc'd */
	int n;          /* messages */
	int cap;        /* allocated */
	int keep;       /* leading messages never dropped (the system one) */
} History;

static int hist_add(History *h, const char *role, const char *content,
		    size_t len)
{
	if (h->n == h->cap) {
		int cap = h->cap ? h->cap * 2 : 16;
		ChatMessage *m = realloc(h->m, (size_t)cap * sizeof *m);
		if (!m)
			return -1;
		h->m = m;
		h->cap = cap;
	}
	char *c = malloc(len + 1);
	if (!c)
		return -1;
	memcpy(c, content, len);
	c[len] = 0;
	h->m[h->n].role = role;
	h->m[h->n].content = c;
	h->n++;
	return 0;
}

/* Drop the oldest user/assistant exchange after the kept prefix. */
static int hist_drop_oldest(History *h)
{
	int from = h->keep, k = 0;
	while (from + k < h->n - 1 && k < 2)
		k++;
	if (k == 0)
		return -1;
	for (int i = from; i < from + k; i++)
		free((char *)h->m[i].content);
	memmove(h->m + from, h->m + from + k,
		(size_t)(h->n - from - k) * sizeof *h->m);
	h->n -= k;
	return 0;
}

static void hist_reset(History *h)
{
	while (h->n > h->keep)
		free((char *)h->m[--h->n].content);
}

static void hist_free(History *h)
{
	for (int i = 0; i < h->n; i++)
		free((char *)h->m[i].content);
	free(h->m);
}

/* Streams the reply to stdout and keeps a copy for the history. */
typedef struct Reply {
	char *p;     /* text so far */
	size_t len;  /* bytes */
	size_t cap;  /* allocated */
	int oom;     /* a copy failed (the reply is still printed) */
} Reply;

static int on_text(void *ud, int32_t token, const char *text, size_t len)
{
	Reply *r = ud;
	(void)token;
	if (len == 0)
		return 0;
	fwrite(text, 1, len, stdout);
	fflush(stdout);
	if (r->oom)
		return 0;
	if (r->len + len + 1 > r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 1024;
		while (cap < r->len + len + 1)
			cap *= 2;
		char *p = realloc(r->p, cap);
		if (!p) {
			r->oom = 1;
			return 0;
		}
		r->p = p;
		r->cap = cap;
	}
	memcpy(r->p + r->len, text, len);
	r->len += len;
	r->p[r->len] = 0;
	return 0;
}

/* Render the history, encode it, and make it fit: drop old exchanges while
 * prompt + reply room exceeds the context. Returns the count with *ids set,
 * or -1 with a message. */
static int build_prompt(Engine *e, const ChatTemplate *t, History *h,
			const Args *a, int32_t **ids, char *err, size_t errlen)
{
	const Tokenizer *tok = engine_tokenizer(e);
	int ctx = engine_ctx(e);
	int room = a->gen.max_tokens < ctx / 2 ? a->gen.max_tokens : ctx / 2;
	for (;;) {
		size_t len;
		char *text = chat_render(t, h->m, h->n, 1, NULL, &len, err, errlen);
		if (!text)
			return -1;
		if (a->show_prompt)
			fprintf(stderr, "--- prompt ---\n%s\n--------------\n", text);
		int n = tokenizer_encode(tok, text, len,
					 chat_add_bos(t, tokenizer_adds_bos(tok)),
					 1, ids, err, errlen);
		free(text);
		if (n < 0)
			return -1;
		if (n + room <= ctx)
			return n;
		free(*ids);
		*ids = NULL;
		if (hist_drop_oldest(h)) {
			snprintf(err, errlen,
				 "the message (%d tokens) does not fit the "
				 "context of %d tokens", n, ctx);
			return -1;
		}
		if (!a->quiet)
			fprintf(stderr, "(dropped the oldest exchange to fit the context)\n");
	}
}

/* One turn: the last history message is the user's. Prints the reply and
 * appends it to the history. Returns 0 or -1 with a message. */
static int turn(Engine *e, const ChatTemplate *t, History *h, const Args *a,
		char *err, size_t errlen)
{
	int32_t *ids = NULL;
	int n = build_prompt(e, t, h, a, &ids, err, errlen);
	if (n < 0)
		return -1;
	GenParams p = a->gen;
	/* The end-of-turn token is normally an end-of-generation id; the stop
	 * string also catches models whose tokenizer does not mark it so. */
	const char *eot = chat_end_of_turn(t);
	if (eot[0] && p.n_stop < ENGINE_MAX_STOP)
		p.stop[p.n_stop++] = eot;
	Reply r = {0};
	GenResult res;
	memset(&res, 0, sizeof res);
	int rc = engine_generate(e, ids, n, &p, on_text, &r, &res, err, errlen);
	free(ids);
	fputc('\n', stdout);
	fflush(stdout);
	if (rc == 0) {
		free(res.ids);
		if (!a->quiet)
			fprintf(stderr,
				"[%d prompt tokens (%d reused from the last turn), "
				"%d generated, %s; prefill %.1f tok/s, decode %.1f tok/s]\n",
				res.n_prompt, res.n_reused, res.n_gen,
				finish_reason_name(res.finish),
				res.t_prefill > 0 ? res.n_prompt / res.t_prefill : 0.0,
				res.t_decode > 0 && res.n_gen > 1
					? (res.n_gen - 1) / res.t_decode : 0.0);
		if (res.finish == FINISH_ERROR) {
			snprintf(err, errlen, "generation failed");
			rc = -1;
		} else if (r.oom || hist_add(h, "assistant", r.p ? r.p : "", r.len)) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
		}
	}
	free(r.p);
	return rc;
}

int chat_cli_main(int argc, char **argv)
{
	Args a;
	int pr = parse_args(argc, argv, &a);
	if (pr) {
		fputs(chat_cli_usage, pr > 0 ? stdout : stderr);
		return pr > 0 ? 0 : 2;
	}
	char err[512];
	Engine *e = NULL;
	if (engine_open(a.model, &a.eo, &e, err, sizeof err)) {
		fprintf(stderr, "infer-run chat: %s\n", err);
		return 1;
	}
	ChatTemplate t;
	if (chat_template_for_model(engine_model(e), a.tmpl, &t, err, sizeof err)) {
		fprintf(stderr, "infer-run chat: %s\n", err);
		engine_close(e);
		return 1;
	}
	if (!a.quiet)
		fprintf(stderr, "chat template: %s%s%s\n", chat_family_name(t.family),
			t.default_system[0] && !a.system ? ", default system prompt: " : "",
			t.default_system[0] && !a.system ? t.default_system : "");
	History h = {0};
	int status = 0;
	if (a.system) {
		if (hist_add(&h, "system", a.system, strlen(a.system)))
			goto oom;
		h.keep = 1;
	}
	if (a.prompt) {
		if (hist_add(&h, "user", a.prompt, strlen(a.prompt)))
			goto oom;
		if (turn(e, &t, &h, &a, err, sizeof err)) {
			fprintf(stderr, "infer-run chat: %s\n", err);
			status = 1;
		}
		goto out;
	}
	int tty = isatty(STDIN_FILENO);
	char *line = NULL;
	size_t lcap = 0;
	for (;;) {
		if (tty) {
			fputs("> ", stdout);
			fflush(stdout);
		}
		ssize_t n = getline(&line, &lcap, stdin);
		if (n < 0)
			break;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = 0;
		if (n == 0)
			continue;
		if (!strcmp(line, "/exit") || !strcmp(line, "/quit"))
			break;
		if (!strcmp(line, "/reset")) {
			hist_reset(&h);
			continue;
		}
		if (hist_add(&h, "user", line, (size_t)n)) {
			free(line);
			goto oom;
		}
		if (turn(e, &t, &h, &a, err, sizeof err)) {
			fprintf(stderr, "infer-run chat: %s\n", err);
			/* Forget the failed question, keep talking. */
			free((char *)h.m[--h.n].content);
			status = 1;
		} else {
			status = 0;
		}
	}
	free(line);
	goto out;
oom:
	fprintf(stderr, "infer-run chat: out of memory\n");
	status = 1;
out:
	hist_free(&h);
	engine_close(e);
	return status;
}
