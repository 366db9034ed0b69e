/*
 * check_engine.c - the generate loop and infer-run: streaming text equals
 * the tokenizer's decode, stop strings across token boundaries are never
 * emitted, max tokens, end-of-generation, cancel, a full context, and the
 * infer-run subcommands' output and exit codes (run with popen). Expected
 * ids come from golden.json (HF transformers).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "engine.h"
#include "json.h"
#include "testutil.h"

#define LLAMA2 "models/tiny-llama2"

/* Allocation counting: this binary's malloc family forwards to glibc's
 * and counts calls while counting is set, so a test can pin "no
 * allocation per decoded token". Left out under ASan, which must own
 * malloc itself. */
#ifndef __SANITIZE_ADDRESS__
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static volatile int counting;
static volatile long n_allocs;

void *malloc(size_t n)
{
	if (counting)
		__atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
	return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	if (counting)
		__atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
	return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	if (counting)
		__atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
	return __libc_realloc(p, n);
}

void free(void *p)
{
	__libc_free(p);
}
#endif

static Engine *open_engine(int ctx)
{
	char err[512];
	EngineOptions o = {.backend = "cpu", .threads = 2, .ctx = ctx,
			   .quiet = 1};
	Engine *e;
	ck_assert_msg(engine_open(test_data(LLAMA2), &o, &e, err,
				  sizeof err) == 0,
		      "%s", err);
	return e;
}

/* Golden prompt 0 of tiny-llama2 ("Once upon a time"). */
static int golden(int32_t *ids, int32_t *greedy)
{
	char err[256];
	json_doc *d = json_parse_file(test_data(LLAMA2 "/golden.json"), 0, err,
				      sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *p = json_at(json_get(json_root(d), "prompts"), 0);
	const json_value *a = json_get(p, "ids"), *g = json_get(p, "greedy");
	int n = (int)json_count(a);
	for (int i = 0; i < n; i++)
		ids[i] = (int32_t)json_num(json_at(a, i), -1);
	for (size_t i = 0; i < json_count(g); i++)
		greedy[i] = (int32_t)json_num(json_at(g, i), -1);
	json_free(d);
	return n;
}

/* Collects the streamed text and the calls. */
typedef struct {
	char text[8192];
	size_t len;
	int calls;          /* callback invocations */
	int cancel_at;      /* return 1 on this call (1-based), 0 = never */
	int tail_calls;     /* calls with token -1 */
	size_t piece_end[64]; /* text length after call i */
} Sink;

static int sink(void *ud, int32_t token, const char *text, size_t len)
{
	Sink *s = ud;
	ck_assert(s->len + len < sizeof s->text);
	memcpy(s->text + s->len, text, len);
	s->len += len;
	s->text[s->len] = 0;
	if (s->calls < 64)
		s->piece_end[s->calls] = s->len;
	s->calls++;
	if (token < 0)
		s->tail_calls++;
	return s->cancel_at && s->calls == s->cancel_at;
}

static GenParams greedy_params(int max_tokens)
{
	GenParams p;
	gen_params_default(&p);
	p.sampling.temperature = 0;
	p.max_tokens = max_tokens;
	return p;
}

START_TEST(greedy_stream_matches_golden)
{
	Engine *e = open_engine(0);
	int32_t ids[64], want[64];
	int n = golden(ids, want);
	GenParams p = greedy_params(24);
	Sink s = {0};
	GenResult r;
	char err[512];
	ck_assert_msg(engine_generate(e, ids, n, &p, sink, &s, &r, err,
				      sizeof err) == 0,
		      "%s", err);
	ck_assert_int_eq(r.finish, FINISH_LENGTH);
	ck_assert_int_eq(r.n_prompt, n);
	ck_assert_int_eq(r.n_gen, 24);
	ck_assert_mem_eq(r.ids, want, sizeof(int32_t) * 24);
	size_t dl;
	char *dec = tokenizer_decode(engine_tokenizer(e), r.ids, r.n_gen, &dl,
				     err, sizeof err);
	ck_assert_msg(dec, "%s", err);
	ck_assert_uint_eq(dl, s.len);
	ck_assert_mem_eq(dec, s.text, dl);
	ck_assert(r.t_prefill > 0 && r.t_decode > 0 && r.ttft > 0);
	ck_assert(r.ttft >= r.t_prefill);
	/* the same again: the cache is reset, the result identical */
	GenResult r2;
	Sink s2 = {0};
	ck_assert(engine_generate(e, ids, n, &p, sink, &s2, &r2, err,
				  sizeof err) == 0);
	ck_assert_mem_eq(r2.ids, r.ids, sizeof(int32_t) * 24);
	ck_assert_int_eq(r.n_reused, 0);
	ck_assert_int_eq(r2.n_reused, n - 1); /* all but the last */
	/* a follow-up that extends prompt + answer reuses all of it */
	int32_t more[64];
	memcpy(more, ids, sizeof(int32_t) * (size_t)n);
	memcpy(more + n, r.ids, sizeof(int32_t) * 23);
	GenResult r3;
	GenParams p3 = greedy_params(1);
	ck_assert(engine_generate(e, more, n + 23, &p3, NULL, NULL, &r3, err,
				  sizeof err) == 0);
	ck_assert_int_eq(r3.n_reused, n + 22);
	ck_assert_int_eq(r3.ids[0], want[23]);
	free(r3.ids);
	free(dec);
	free(r.ids);
	free(r2.ids);
	engine_close(e);
}
END_TEST

#ifdef COUNT_ALLOCS
/* Starts counting at the first token: everything after it is the decode
 * loop (sampling, streaming, forward) and the end of the generation. */
static int count_from_first(void *ud, int32_t token, const char *text,
			    size_t len)
{
	(void)ud;
	(void)token;
	(void)text;
	(void)len;
	counting = 1;
	return 0;
}
#endif

START_TEST(no_allocation_while_decoding)
{
#ifndef COUNT_ALLOCS
	TEST_SKIP("allocation counting is off under ASan");
#else
	Engine *e = open_engine(0);
	int32_t ids[64], want[64];
	int n = golden(ids, want);
	GenParams p = greedy_params(24);
	p.stop[0] = "zzzz-never";
	p.n_stop = 1;
	GenResult r;
	char err[512];
	n_allocs = 0;
	int rc = engine_generate(e, ids, n, &p, count_from_first, NULL, &r,
				 err, sizeof err);
	counting = 0;
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(r.n_gen, 24);
	ck_assert_msg(n_allocs == 0, "%ld allocations while decoding 23 "
		      "tokens", n_allocs);
	/* sampling with top-k/top-p/min-p and penalties, likewise */
	sampler_params_default(&p.sampling);
	p.sampling.repeat_penalty = 1.1f;
	p.sampling.freq_penalty = 0.1f;
	p.sampling.seed = 3;
	free(r.ids);
	n_allocs = 0;
	rc = engine_generate(e, ids, n, &p, count_from_first, NULL, &r, err,
			     sizeof err);
	counting = 0;
	ck_assert_int_eq(rc, 0);
	ck_assert_msg(n_allocs == 0, "%ld allocations while sampling",
		      n_allocs);
	free(r.ids);
	engine_close(e);
#endif
}
END_TEST

START_TEST(stop_across_tokens)
{
	Engine *e = open_engine(0);
	int32_t ids[64], want[64];
	int n = golden(ids, want);
	GenParams p = greedy_params(24);
	Sink s = {0};
	GenResult r;
	char err[512];
	ck_assert(engine_generate(e, ids, n, &p, sink, &s, &r, err,
				  sizeof err) == 0);
	/* A boundary between two tokens with text on both sides. */
	int k = -1;
	for (int i = 1; i + 1 < s.calls && i < 24; i++) {
		size_t a = s.piece_end[i] - s.piece_end[i - 1];
		size_t b = s.piece_end[i + 1] - s.piece_end[i];
		if (a >= 2 && b >= 2) {
			k = i;
			break;
		}
	}
	ck_assert_int_ge(k, 0);
	size_t cut = s.piece_end[k]; /* end of token k's text */
	char stop[8] = {s.text[cut - 2], s.text[cut - 1], s.text[cut],
			s.text[cut + 1], 0};
	char *first = strstr(s.text, stop);
	ck_assert_ptr_nonnull(first);
	size_t expect = (size_t)(first - s.text);

	GenParams ps = p;
	ps.stop[0] = "never-appears-in-this-text";
	ps.stop[1] = stop;
	ps.n_stop = 2;
	Sink t = {0};
	GenResult rs;
	ck_assert(engine_generate(e, ids, n, &ps, sink, &t, &rs, err,
				  sizeof err) == 0);
	ck_assert_int_eq(rs.finish, FINISH_STOP);
	ck_assert_uint_eq(t.len, expect);
	ck_assert_mem_eq(t.text, s.text, expect);
	/* the stop string's first half was held back, never sent */
	ck_assert(strstr(t.text, stop) == NULL);
	ck_assert_int_eq(t.tail_calls, 0);
	ck_assert_int_le(rs.n_gen, k + 2);

	/* A partial match that fails is released in full. */
	free(rs.ids);
	char nearly[4] = {s.text[cut - 1], '\x01', 0};
	ps.stop[1] = nearly;
	Sink u = {0};
	ck_assert(engine_generate(e, ids, n, &ps, sink, &u, &rs, err,
				  sizeof err) == 0);
	ck_assert_int_eq(rs.finish, FINISH_LENGTH);
	ck_assert_uint_eq(u.len, s.len);
	ck_assert_mem_eq(u.text, s.text, s.len);
	free(r.ids);
	free(rs.ids);
	engine_close(e);
}
END_TEST

START_TEST(max_tokens_and_cancel)
{
	Engine *e = open_engine(0);
	int32_t ids[64], want[64];
	int n = golden(ids, want);
	GenParams p = greedy_params(5);
	GenResult r;
	char err[512];
	ck_assert(engine_generate(e, ids, n, &p, NULL, NULL, &r, err,
				  sizeof err) == 0);
	ck_assert_int_eq(r.finish, FINISH_LENGTH);
	ck_assert_int_eq(r.n_gen, 5);
	ck_assert_mem_eq(r.ids, want, sizeof(int32_t) * 5);
	free(r.ids);

	p.max_tokens = 20;
	Sink s = {.cancel_at = 3};
	ck_assert(engine_generate(e, ids, n, &p, sink, &s, &r, err,
				  sizeof err) == 0);
	ck_assert_int_eq(r.finish, FINISH_CANCEL);
	ck_assert_int_eq(r.n_gen, 3);
	ck_assert_int_eq(s.calls, 3);
	free(r.ids);
	engine_close(e);
}
END_TEST

START_TEST(eos)
{
	Engine *e = open_engine(0);
	int32_t ids[64], want[64];
	int n = golden(ids, want);
	const Tokenizer *tok = engine_tokenizer(e);
	int32_t eos = tokenizer_eos(tok);
	ck_assert_int_ge(eos, 0);
	ck_assert(tokenizer_is_eog(tok, eos));
	GenParams p = greedy_params(10);
	p.logit_bias[0].id = eos;
	p.logit_bias[0].bias = 1000.0f;
	p.n_logit_bias = 1;
	Sink s = {0};
	GenResult r;
	char err[512];
	ck_assert(engine_generate(e, ids, n, &p, sink, &s, &r, err,
				  sizeof err) == 0);
	ck_assert_int_eq(r.finish, FINISH_EOS);
	ck_assert_int_eq(r.n_gen, 0);
	ck_assert_uint_eq(s.len, 0);
	free(r.ids);

	p.ignore_eos = 1;
	p.max_tokens = 3;
	ck_assert(engine_generate(e, ids, n, &p, NULL, NULL, &r, err,
				  sizeof err) == 0);
	ck_assert_int_eq(r.finish, FINISH_LENGTH);
	ck_assert_int_eq(r.n_gen, 3);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(r.ids[i], eos);
	free(r.ids);
	engine_close(e);
}
END_TEST

START_TEST(context_full)
{
	Engine *e = open_engine(16);
	ck_assert_int_eq(engine_ctx(e), 16);
	int32_t ids[64], want[64];
	int n = golden(ids, want);
	GenParams p = greedy_params(0); /* until the context is full */
	GenResult r;
	char err[512];
	ck_assert(engine_generate(e, ids, n, &p, NULL, NULL, &r, err,
				  sizeof err) == 0);
	ck_assert_int_eq(r.finish, FINISH_CONTEXT);
	/* every cache row used, plus the token sampled from the last one */
	ck_assert_int_eq(r.n_gen, 16 - n + 1);
	ck_assert_mem_eq(r.ids, want, sizeof(int32_t) * (size_t)r.n_gen);
	free(r.ids);
	p.max_tokens = 100;
	ck_assert(engine_generate(e, ids, n, &p, NULL, NULL, &r, err,
				  sizeof err) == 0);
	ck_assert_int_eq(r.finish, FINISH_CONTEXT);
	free(r.ids);

	int32_t big[17];
	for (int i = 0; i < 17; i++)
		big[i] = ids[i % n];
	ck_assert_int_eq(engine_generate(e, big, 16, &p, NULL, NULL, &r, err,
					 sizeof err), 0);
	ck_assert_int_eq(r.n_gen, 1);
	ck_assert_int_eq(r.finish, FINISH_CONTEXT);
	free(r.ids);
	ck_assert_int_eq(engine_generate(e, big, 17, &p, NULL, NULL, &r, err,
					 sizeof err), -1);
	ck_assert(strstr(err, "context") != NULL);
	free(r.ids);
	engine_close(e);
}
END_TEST

/* ---- infer-run ---------------------------------------------------------- */

/* Run a shell command; its stdout in out, exit status returned. */
static int run(const char *cmd, char *out, size_t cap)
{
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = fread(out, 1, cap - 1, f);
	out[n] = 0;
	int st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char cmd[8192], out[65536];

#define RUN(...)                                                          \
	(snprintf(cmd, sizeof cmd, __VA_ARGS__), run(cmd, out, sizeof out))

START_TEST(cli_generate_ids)
{
	int32_t ids[64], want[64];
	golden(ids, want);
	const char *bin = test_build("infer-run");
	ck_assert_int_eq(RUN("%s generate %s -p 'Once upon a time' -n 24 "
			     "--temp 0 --ids -t 2 --backend cpu 2>/dev/null",
			     bin, test_data(LLAMA2)),
			 0);
	char expect[1024] = "";
	size_t el = 0;
	for (int i = 0; i < 24; i++)
		el += (size_t)snprintf(expect + el, sizeof expect - el,
				       i ? " %d" : "%d", want[i]);
	ck_assert_str_eq(out, strcat(expect, "\n"));
	/* the same prompt from stdin */
	ck_assert_int_eq(RUN("printf 'Once upon a time' | %s generate %s -f - "
			     "-n 24 --temp 0 --ids -t 2 --backend cpu "
			     "2>/dev/null",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_str_eq(out, expect);
	/* stats on stderr */
	ck_assert_int_eq(RUN("%s generate %s -p 'Once upon a time' -n 4 "
			     "--temp 0 -t 2 --backend cpu 2>&1 >/dev/null",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_msg(strstr(out, "generated 4 tokens") &&
			      strstr(out, "tok/s") && strstr(out, "ttft"),
		      "%s", out);
}
END_TEST

/* GGUF without rope metadata + --override-kv = golden (tiny-llama3). */
START_TEST(cli_override_kv)
{
	char err[256];
	json_doc *d = json_parse_file(
		test_data("models/tiny-llama3/golden.json"), 0, err, sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *p = json_at(json_get(json_root(d), "prompts"), 0);
	ck_assert_str_eq(json_str(json_get(p, "text"), ""), "Once upon a time");
	char expect[1024] = "";
	size_t el = 0;
	const json_value *g = json_get(p, "greedy");
	for (size_t i = 0; i < json_count(g); i++)
		el += (size_t)snprintf(expect + el, sizeof expect - el,
				       i ? " %d" : "%d",
				       (int)json_num(json_at(g, i), -1));
	json_free(d);
	const char *ov = "--override-kv llama.rope.freq_base=float:500000 "
			 "--override-kv llama.rope.scaling.type=str:llama3 "
			 "--override-kv llama.rope.scaling.factor=float:8 "
			 "--override-kv "
			 "llama.rope.scaling.original_context_length=int:64 "
			 "--override-kv "
			 "llama.rope.scaling.low_freq_factor=float:1 "
			 "--override-kv "
			 "llama.rope.scaling.high_freq_factor=float:4";
	ck_assert_int_eq(RUN("%s generate %s -p 'Once upon a time' -n 24 "
			     "--temp 0 --ids -t 2 --backend cpu %s "
			     "2>/dev/null",
			     test_build("infer-run"),
			     test_data("models/tiny-llama3-f16.gguf"), ov),
			 0);
	ck_assert_str_eq(out, strcat(expect, "\n"));
	/* without them the plain-rope model diverges from HF */
	ck_assert_int_eq(RUN("%s generate %s -p 'Once upon a time' -n 24 "
			     "--temp 0 --ids -t 2 --backend cpu 2>/dev/null",
			     test_build("infer-run"),
			     test_data("models/tiny-llama3-f16.gguf")),
			 0);
	ck_assert_str_ne(out, expect);
}
END_TEST

START_TEST(cli_generate_text_and_stop)
{
	const char *bin = test_build("infer-run");
	/* text mode prints exactly the decode of the golden ids (+ \n) */
	int32_t ids[64], want[64];
	golden(ids, want);
	Engine *e = open_engine(0);
	char err[256];
	size_t dl;
	char *dec = tokenizer_decode(engine_tokenizer(e), want, 8, &dl, err,
				     sizeof err);
	ck_assert_msg(dec, "%s", err);
	engine_close(e);
	ck_assert_int_eq(RUN("%s generate %s -p 'Once upon a time' -n 8 "
			     "--temp 0 -t 2 --backend cpu 2>/dev/null",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_uint_eq(strlen(out), dl + 1);
	ck_assert_mem_eq(out, dec, dl);
	/* golden text "prest defeat headitaine ...": stop at " head" */
	char *at = strstr(dec, " head");
	ck_assert_ptr_nonnull(at);
	*at = 0;
	ck_assert_int_eq(RUN("%s generate %s -p 'Once upon a time' -n 8 "
			     "--temp 0 --stop ' head' -t 2 --backend cpu "
			     "2>/dev/null",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_str_eq(out, strcat(dec, "\n"));
	free(dec);
	/* sampling with a seed is reproducible */
	char a[4096];
	ck_assert_int_eq(RUN("%s generate %s -p 'Hello' -n 12 --temp 1.5 "
			     "--top-k 50 --seed 7 --ids -t 2 --backend cpu "
			     "2>/dev/null",
			     bin, test_data(LLAMA2)),
			 0);
	snprintf(a, sizeof a, "%s", out);
	ck_assert_int_eq(RUN("%s generate %s -p 'Hello' -n 12 --temp 1.5 "
			     "--top-k 50 --seed 7 --ids -t 2 --backend cpu "
			     "2>/dev/null",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_str_eq(out, a);
}
END_TEST

START_TEST(cli_tokenize_detokenize_info_bench)
{
	const char *bin = test_build("infer-run");
	ck_assert_int_eq(RUN("%s tokenize %s 'Once upon a time' --bos", bin,
			     test_data(LLAMA2)),
			 0);
	ck_assert_str_eq(out, "1 9038 2501 263 931\n");
	ck_assert_int_eq(RUN("%s tokenize %s 'Once upon a time'",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_str_eq(out, "9038 2501 263 931\n");
	/* the scripted form: text on stdin, byte for byte */
	ck_assert_int_eq(RUN("printf 'Once upon a time' | %s tokenize %s",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_str_eq(out, "9038 2501 263 931\n");
	ck_assert_int_eq(RUN("%s detokenize %s 9038 2501 263 931", bin,
			     test_data(LLAMA2)),
			 0);
	ck_assert_str_eq(out, "Once upon a time\n");
	ck_assert_int_eq(RUN("echo '9038 2501\n263 931' | %s detokenize %s",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_str_eq(out, "Once upon a time\n");
	ck_assert_int_eq(RUN("%s info %s", bin,
			     test_data("models/tiny-llama3-q8_0.gguf")),
			 0);
	ck_assert_msg(strstr(out, "dim            96\n") &&
			      strstr(out, "n_layers       3\n") &&
			      strstr(out, "format         gguf\n") &&
			      strstr(out, "quant          q8_0\n"),
		      "%s", out);
	ck_assert_int_eq(RUN("%s bench %s -p 16 -n 4 -r 2 -t 2 --backend "
			     "cpu",
			     bin, test_data(LLAMA2)),
			 0);
	ck_assert_msg(strstr(out, "run 2: prefill 16 tokens") &&
			      strstr(out, "mean: prefill"),
		      "%s", out);
}
END_TEST

/* Ctrl-C stops the generation at the next token; stats still printed.
 * The signal is sent once ids stream out (the handler is in place). */
START_TEST(cli_sigint)
{
	const char *f = test_build("sigint-test");
	ck_assert_int_eq(RUN("rm -f %s.out; %s generate %s -p 'Once upon a time' "
			     "-n 0 --ctx 100000 --ignore-eos --temp 0 --ids "
			     "-t 2 --backend cpu >%s.out 2>%s.err & pid=$!; "
			     "i=0; while [ ! -s %s.out ] && [ $i -lt 600 ]; "
			     "do sleep 0.1; i=$((i+1)); done; "
			     "kill -INT $pid; wait $pid; echo $?; "
			     "grep -c 'finish: cancel' %s.err; "
			     "rm -f %s.out %s.err",
			     f, test_build("infer-run"), test_data(LLAMA2), f,
			     f, f, f, f, f),
			 0);
	ck_assert_str_eq(out, "130\n1\n");
}
END_TEST

START_TEST(cli_exit_codes)
{
	const char *bin = test_build("infer-run");
	const char *m = test_data(LLAMA2);
	ck_assert_int_eq(RUN("%s 2>/dev/null", bin), 2);
	ck_assert_int_eq(RUN("%s nosuch 2>/dev/null", bin), 2);
	ck_assert_int_eq(RUN("%s --help", bin), 0);
	ck_assert(strstr(out, "generate") && strstr(out, "bench"));
	ck_assert_int_eq(RUN("%s generate --help", bin), 0);
	ck_assert(strstr(out, "--top-p") != NULL);
	ck_assert_int_eq(RUN("%s generate %s 2>/dev/null", bin, m), 2);
	ck_assert_int_eq(RUN("%s generate %s -p x --bogus 2>/dev/null", bin,
			     m),
			 2);
	ck_assert_int_eq(RUN("%s generate %s -p x --temp abc 2>/dev/null",
			     bin, m),
			 2);
	ck_assert_int_eq(RUN("%s generate %s -p x -n 2>/dev/null", bin, m),
			 2);
	ck_assert_int_eq(RUN("%s generate /nonexistent/model -p x --backend "
			     "cpu 2>/dev/null",
			     bin),
			 1);
	ck_assert_int_eq(RUN("%s tokenize 2>/dev/null", bin), 2);
	ck_assert_int_eq(RUN("%s detokenize %s 99999999 2>/dev/null", bin, m),
			 1);
	ck_assert_int_eq(RUN("%s detokenize %s abc 2>/dev/null", bin, m), 2);
	ck_assert_int_eq(RUN("%s bench %s -p 0 2>/dev/null", bin, m), 2);
	ck_assert_int_eq(RUN("%s info 2>/dev/null", bin), 2);
	ck_assert_int_eq(RUN("%s generate %s -p x --override-kv nonsense "
			     "--backend cpu 2>/dev/null",
			     bin, m),
			 2);
	ck_assert_int_eq(RUN("%s generate %s -p x --override-kv "
			     "llama.nosuch=int:1 --backend cpu 2>/dev/null",
			     bin, m),
			 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("engine");
	TCase *tc = tcase_create("engine");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, greedy_stream_matches_golden);
	tcase_add_test(tc, stop_across_tokens);
	tcase_add_test(tc, no_allocation_while_decoding);
	tcase_add_test(tc, max_tokens_and_cancel);
	tcase_add_test(tc, eos);
	tcase_add_test(tc, context_full);
	tcase_add_test(tc, cli_generate_ids);
	tcase_add_test(tc, cli_generate_text_and_stop);
	tcase_add_test(tc, cli_override_kv);
	tcase_add_test(tc, cli_tokenize_detokenize_info_bench);
	tcase_add_test(tc, cli_exit_codes);
	tcase_add_test(tc, cli_sigint);
	suite_add_tcase(s, tc);
	SRunner *r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
