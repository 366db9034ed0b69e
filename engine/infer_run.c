/*
 * infer_run.c - `infer-run`, the engine on the command line without the
 * daemon: generate, tokenize, detokenize, bench, info. Subcommands are rows
 * of one table (name, handler, usage), so adding one is adding a row.
 *
 * Exit codes: 0 success, 1 runtime error (model, backend), 2 usage error,
 * 130 when Ctrl-C stopped a generation (its statistics are still printed).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat_cli.h"
#include "engine.h"

#define EXIT_RUNTIME 1 /* model or backend failed */
#define EXIT_USAGE 2   /* bad command line */
#define EXIT_INTERRUPTED 130 /* Ctrl-C during generate (128 + SIGINT) */
#define MAX_OVERRIDES 32 /* most --override-kv options */

typedef struct Command {
	const char *name;  /* subcommand word */
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand */
	const char *usage; /* full help text */
	const char *summary; /* one line for the top-level help */
} Command;

static const Command *find_command(const char *name);

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "infer-run %s: ", cmd);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see infer-run %s --help)\n", cmd);
	return EXIT_USAGE;
}

static int help_wanted(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	return 0;
}

static int print_help(const char *cmd)
{
	fputs(find_command(cmd)->usage, stdout);
	return 0;
}

/* Strict number parsers: the whole argument, in range. */
static int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || *end || errno || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int parse_float(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*s == '-')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || *end || errno)
		return -1;
	*out = v;
	return 0;
}

/* ---- generate ---------------------------------------------------------- */

#define MAX_PROMPT_FILE (64u << 20) /* largest prompt file read */

/* Read a whole file ("-" = stdin) into a malloc'd, NUL-terminated buffer
 * (*len excludes the NUL). */
static int read_all(const char *path, char **out, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f) {
		fprintf(stderr, "infer-run: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t cap = 0, n = 0;
	char *buf = NULL;
	const char *why = NULL;
	for (;;) {
		if (n + 1 >= cap) { /* room for the terminating NUL */
			if (cap >= MAX_PROMPT_FILE) {
				why = "file too large";
				break;
			}
			char *nb = realloc(buf, cap ? cap * 2 : 4096);
			if (!nb) {
				why = "out of memory";
				break;
			}
			buf = nb;
			cap = cap ? cap * 2 : 4096;
		}
		size_t got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
		if (got == 0) {
			if (ferror(f))
				why = "read error";
			break;
		}
	}
	if (f != stdin)
		fclose(f);
	if (why) {
		fprintf(stderr, "infer-run: %s: %s\n", path, why);
		free(buf);
		return -1;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

typedef struct {
	int ids;      /* --ids: print ids instead of text */
	int n_out;    /* ids printed so far */
} GenOut;

/* Set by the first SIGINT: generate stops at the next token, prints its
 * statistics and exits; a second SIGINT kills as usual. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	interrupted = 1;
	signal(sig, SIG_DFL);
}

static int on_text(void *ud, int32_t token, const char *text, size_t len)
{
	GenOut *o = ud;
	if (o->ids) {
		if (token >= 0)
			printf(o->n_out++ ? " %d" : "%d", token);
	} else if (len) {
		fwrite(text, 1, len, stdout);
	}
	fflush(stdout);
	return interrupted != 0;
}

static const char generate_usage[] =
	"usage: infer-run generate MODEL (-p TEXT | -f FILE) [options]\n"
	"Generate a continuation of TEXT; the text streams to stdout, the\n"
	"statistics go to stderr. MODEL is a GGUF file or an HF directory.\n"
	"  -p, --prompt TEXT      prompt (special tokens in it are parsed)\n"
	"  -f, --file FILE        read the prompt from FILE (- = stdin)\n"
	"  -n, --max-tokens N     new tokens at most (default 128; 0 = to ctx)\n"
	"  --temp T               temperature, 0 = greedy (default 0.8)\n"
	"  --top-k K              top-k, 0 = off (default 40)\n"
	"  --top-p P              top-p, 1 = off (default 0.95)\n"
	"  --min-p P              min-p, 0 = off (default 0.05)\n"
	"  --repeat-penalty X     repetition penalty, 1 = off (default 1)\n"
	"  --freq-penalty X       frequency penalty (default 0)\n"
	"  --presence-penalty X   presence penalty (default 0)\n"
	"  --repeat-last-n N      penalty window in tokens (default 64)\n"
	"  --seed S               PRNG seed (default: from the clock)\n"
	"  --stop STR             stop string, not printed (repeatable, 8)\n"
	"  --ignore-eos           keep going past end-of-generation tokens\n"
	"  --ids                  print generated token ids, not text\n"
	"  --no-bos               do not prepend the BOS token\n"
	"  --ctx N                KV cache size (default min(model, 4096))\n"
	"  --batch N              prefill chunk (default 512)\n"
	"  -t, --threads N        CPU threads (default: all cores)\n"
	"  --backend B            auto, cpu or cuda (default auto)\n"
	"  --device N             CUDA device index (default 0)\n"
	"  --override-kv K=T:V    override model metadata, T int|float|str,\n"
	"                         e.g. llama.rope.freq_base=float:500000\n";

/* Options every model-running subcommand shares; returns 1 when argv[*i]
 * was one of them, 0 when not, -1 on a bad value. */
typedef struct {
	EngineOptions eo;
	const char *ov[MAX_OVERRIDES]; /* --override-kv values */
} RunOpts;

static int engine_opt(const char *cmd, RunOpts *ro, int argc, char **argv,
		      int *i)
{
	const char *a = argv[*i];
	long v;
	int takes = !strcmp(a, "-t") || !strcmp(a, "--threads") ||
		    !strcmp(a, "--backend") || !strcmp(a, "--ctx") ||
		    !strcmp(a, "--batch") || !strcmp(a, "--override-kv") ||
		    !strcmp(a, "--device");
	if (!takes)
		return 0;
	if (*i + 1 >= argc) {
		usage_error(cmd, "%s needs a value", a);
		return -1;
	}
	const char *val = argv[++*i];
	if (!strcmp(a, "--backend")) {
		if (strcmp(val, "auto") && strcmp(val, "cpu") &&
		    strcmp(val, "cuda")) {
			usage_error(cmd, "unknown backend '%s'", val);
			return -1;
		}
		ro->eo.backend = val;
	} else if (!strcmp(a, "--override-kv")) {
		if (ro->eo.n_overrides >= MAX_OVERRIDES) {
			usage_error(cmd, "too many %s", a);
			return -1;
		}
		const char *eq = strchr(val, '=');
		if (!eq || eq == val || !strchr(eq, ':')) {
			usage_error(cmd, "--override-kv wants KEY=TYPE:VALUE, "
				    "not '%s'", val);
			return -1;
		}
		ro->ov[ro->eo.n_overrides++] = val;
		ro->eo.overrides = ro->ov;
	} else {
		if (parse_int(val, !strcmp(a, "--device") ? 0 : 1, 1 << 24,
			      &v)) {
			usage_error(cmd, "bad number '%s'", val);
			return -1;
		}
		if (!strcmp(a, "--ctx"))
			ro->eo.ctx = (int)v;
		else if (!strcmp(a, "--batch"))
			ro->eo.max_batch = (int)v;
		else if (!strcmp(a, "--device"))
			ro->eo.device = (int)v;
		else
			ro->eo.threads = (int)v;
	}
	return 1;
}

static int cmd_generate(int argc, char **argv)
{
	const char *cmd = "generate";
	if (help_wanted(argc, argv))
		return print_help(cmd);
	RunOpts ro = {0};
	ro.eo.backend = "auto";
	GenParams gp;
	gen_params_default(&gp);
	gp.max_tokens = 128;
	const char *model = NULL, *prompt = NULL, *pfile = NULL;
	int no_bos = 0, seeded = 0;
	GenOut out = {0};

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int r = engine_opt(cmd, &ro, argc, argv, &i);
		if (r < 0)
			return EXIT_USAGE;
		if (r)
			continue;
		if (!strcmp(a, "--ids")) {
			out.ids = 1;
			continue;
		} else if (!strcmp(a, "--no-bos")) {
			no_bos = 1;
			continue;
		} else if (!strcmp(a, "--ignore-eos")) {
			gp.ignore_eos = 1;
			continue;
		} else if (a[0] != '-' || !a[1]) {
			if (model)
				return usage_error(cmd, "unexpected argument "
						   "'%s'", a);
			model = a;
			continue;
		}
		if (i + 1 >= argc)
			return usage_error(cmd, "%s needs a value", a);
		const char *val = argv[++i];
		long n;
		double f;
		SamplerParams *sp = &gp.sampling;
		if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
			prompt = val;
		} else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
			pfile = val;
		} else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
			if (parse_int(val, 0, INT_MAX, &n))
				return usage_error(cmd, "bad -n '%s'", val);
			gp.max_tokens = (int)n;
		} else if (!strcmp(a, "--temp")) {
			if (parse_float(val, 0, 100, &f))
				return usage_error(cmd, "bad --temp '%s'", val);
			sp->temperature = (float)f;
		} else if (!strcmp(a, "--top-k")) {
			if (parse_int(val, 0, INT_MAX, &n))
				return usage_error(cmd, "bad --top-k '%s'", val);
			sp->top_k = (int)n;
		} else if (!strcmp(a, "--top-p")) {
			if (parse_float(val, 0, 1, &f))
				return usage_error(cmd, "bad --top-p '%s'", val);
			sp->top_p = (float)f;
		} else if (!strcmp(a, "--min-p")) {
			if (parse_float(val, 0, 1, &f))
				return usage_error(cmd, "bad --min-p '%s'", val);
			sp->min_p = (float)f;
		} else if (!strcmp(a, "--repeat-penalty")) {
			if (parse_float(val, 0.01, 100, &f))
				return usage_error(cmd, "bad --repeat-penalty "
						   "'%s'", val);
			sp->repeat_penalty = (float)f;
		} else if (!strcmp(a, "--freq-penalty")) {
			if (parse_float(val, -100, 100, &f))
				return usage_error(cmd, "bad --freq-penalty "
						   "'%s'", val);
			sp->freq_penalty = (float)f;
		} else if (!strcmp(a, "--presence-penalty")) {
			if (parse_float(val, -100, 100, &f))
				return usage_error(cmd, "bad --presence-penalty "
						   "'%s'", val);
			sp->presence_penalty = (float)f;
		} else if (!strcmp(a, "--repeat-last-n")) {
			if (parse_int(val, 0, 32767, &n))
				return usage_error(cmd, "bad --repeat-last-n "
						   "'%s'", val);
			sp->penalty_last_n = (int)n;
		} else if (!strcmp(a, "--seed")) {
			if (parse_u64(val, &sp->seed))
				return usage_error(cmd, "bad --seed '%s'", val);
			seeded = 1;
		} else if (!strcmp(a, "--stop")) {
			if (gp.n_stop >= ENGINE_MAX_STOP)
				return usage_error(cmd, "more than 8 %s", a);
			if (!*val)
				return usage_error(cmd, "empty stop string%s",
						   "");
			gp.stop[gp.n_stop++] = val;
		} else {
			return usage_error(cmd, "unknown option '%s'", a);
		}
	}
	if (!model)
		return usage_error(cmd, "missing MODEL%s", "");
	if (!prompt == !pfile)
		return usage_error(cmd, "give one of -p TEXT and -f FILE%s", "");
	char *ptext = NULL;
	size_t plen = 0;
	if (pfile) {
		if (read_all(pfile, &ptext, &plen) != 0)
			return EXIT_RUNTIME;
	} else {
		plen = strlen(prompt);
	}
	if (!seeded) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		gp.sampling.seed = (uint64_t)ts.tv_sec * 1000000007ull ^
				   (uint64_t)ts.tv_nsec ^
				   ((uint64_t)getpid() << 32);
	}

	char err[512];
	Engine *e;
	if (engine_open(model, &ro.eo, &e, err, sizeof err) != 0) {
		fprintf(stderr, "infer-run: %s\n", err);
		free(ptext);
		return EXIT_RUNTIME;
	}
	const Tokenizer *tok = engine_tokenizer(e);
	int32_t *ids = NULL;
	int n = tokenizer_encode(tok, ptext ? ptext : prompt, plen,
				 !no_bos && tokenizer_adds_bos(tok), 1, &ids,
				 err, sizeof err);
	free(ptext);
	if (n < 0) {
		fprintf(stderr, "infer-run: %s\n", err);
		engine_close(e);
		return EXIT_RUNTIME;
	}
	GenResult res;
	struct sigaction sa = {0};
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	int rc = engine_generate(e, ids, n, &gp, on_text, &out, &res, err,
				 sizeof err);
	signal(SIGINT, SIG_DFL);
	printf("\n");
	fflush(stdout);
	if (rc != 0)
		fprintf(stderr, "infer-run: %s\n", err);
	else
		fprintf(stderr,
			"prompt %d tokens, generated %d tokens (finish: %s, "
			"seed %llu)\n"
			"prefill %.1f tok/s (%.3f s), decode %.1f tok/s "
			"(%.3f s), ttft %.3f s\n",
			res.n_prompt, res.n_gen, finish_reason_name(res.finish),
			(unsigned long long)gp.sampling.seed,
			res.t_prefill > 0 ? res.n_prompt / res.t_prefill : 0.0,
			res.t_prefill,
			res.t_decode > 0 && res.n_gen > 1
				? (res.n_gen - 1) / res.t_decode
				: 0.0,
			res.t_decode, res.ttft);
	free(res.ids);
	free(ids);
	engine_close(e);
	if (rc)
		return EXIT_RUNTIME;
	return res.finish == FINISH_CANCEL ? EXIT_INTERRUPTED : 0;
}

/* ---- tokenize / detokenize / info: the model without a backend -------- */

static int open_model(const char *path, Model *m, const char *const *ov,
		      int nov)
{
	char err[512];
	ModelLoadOptions lo = {.overrides = ov, .n_overrides = nov};
	if (model_load_ex(path, &lo, m, err, sizeof err) != 0) {
		fprintf(stderr, "infer-run: %s\n", err);
		return -1;
	}
	return 0;
}

static const char tokenize_usage[] =
	"usage: infer-run tokenize MODEL [TEXT] [--bos] [--no-special]\n"
	"Print the token ids of TEXT (or of standard input, byte for byte, when\n"
	"TEXT is absent), space separated, on one line.\n"
	"  --bos         prepend BOS when the model has one (default: none)\n"
	"  --no-special  encode special-token text as plain text\n";

static int cmd_tokenize(int argc, char **argv)
{
	const char *cmd = "tokenize";
	if (help_wanted(argc, argv))
		return print_help(cmd);
	const char *pos[2];
	int npos = 0, bos = 0, no_special = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--bos"))
			bos = 1;
		else if (!strcmp(argv[i], "--no-bos"))
			bos = 0;
		else if (!strcmp(argv[i], "--no-special"))
			no_special = 1;
		else if (argv[i][0] == '-' && argv[i][1] && npos < 1)
			return usage_error(cmd, "unknown option '%s'", argv[i]);
		else if (npos < 2)
			pos[npos++] = argv[i];
		else
			return usage_error(cmd, "unexpected argument '%s'",
					   argv[i]);
	}
	if (npos < 1)
		return usage_error(cmd, "need MODEL%s", "");
	char *stdin_text = NULL;
	size_t len = 0;
	if (npos == 2) {
		len = strlen(pos[1]);
	} else if (read_all("-", &stdin_text, &len) != 0) {
		return EXIT_RUNTIME;
	}
	const char *text = stdin_text ? stdin_text : pos[1];
	Model m;
	if (open_model(pos[0], &m, NULL, 0)) {
		free(stdin_text);
		return EXIT_RUNTIME;
	}
	char err[512];
	int32_t *ids = NULL;
	int n = tokenizer_encode(m.tok, text, len, bos, !no_special, &ids, err,
				 sizeof err);
	free(stdin_text);
	if (n < 0) {
		fprintf(stderr, "infer-run: %s\n", err);
		model_free(&m);
		return EXIT_RUNTIME;
	}
	for (int i = 0; i < n; i++)
		printf(i ? " %d" : "%d", ids[i]);
	printf("\n");
	free(ids);
	model_free(&m);
	return 0;
}

static const char detokenize_usage[] =
	"usage: infer-run detokenize MODEL [ID...]\n"
	"Print the text of the token ids (as HF decode does), then a newline.\n"
	"Without ID arguments the ids are read from standard input, separated\n"
	"by spaces or newlines.\n";

/* Append id text v to *ids (growing it); 0, or -1 after a message. */
static int push_id(const char *cmd, const char *v, int32_t **ids, int *n,
		   int *cap)
{
	long x;
	if (parse_int(v, 0, INT32_MAX, &x))
		return usage_error(cmd, "bad id '%s'", v), -1;
	if (*n == *cap) {
		int nc = *cap ? *cap * 2 : 64;
		int32_t *ni = realloc(*ids, sizeof(int32_t) * (size_t)nc);
		if (!ni) {
			fprintf(stderr, "infer-run: out of memory\n");
			return -1;
		}
		*ids = ni;
		*cap = nc;
	}
	(*ids)[(*n)++] = (int32_t)x;
	return 0;
}

static int cmd_detokenize(int argc, char **argv)
{
	const char *cmd = "detokenize";
	if (help_wanted(argc, argv))
		return print_help(cmd);
	if (argc < 2)
		return usage_error(cmd, "need MODEL%s", "");
	int32_t *ids = NULL;
	int n = 0, cap = 0, bad = 0;
	if (argc > 2) {
		for (int i = 2; i < argc && !bad; i++)
			bad = push_id(cmd, argv[i], &ids, &n, &cap) != 0;
	} else {
		char *in = NULL;
		size_t len = 0;
		if (read_all("-", &in, &len) != 0)
			return EXIT_RUNTIME;
		char *save = NULL;
		for (char *t = strtok_r(in, " \t\r\n", &save); t && !bad;
		     t = strtok_r(NULL, " \t\r\n", &save))
			bad = push_id(cmd, t, &ids, &n, &cap) != 0;
		free(in);
	}
	if (bad) {
		free(ids);
		return EXIT_USAGE;
	}
	Model m;
	if (open_model(argv[1], &m, NULL, 0)) {
		free(ids);
		return EXIT_RUNTIME;
	}
	char err[512];
	size_t len = 0;
	char *text = tokenizer_decode(m.tok, ids, n, &len, err, sizeof err);
	int rc = 0;
	if (!text) {
		fprintf(stderr, "infer-run: %s\n", err);
		rc = EXIT_RUNTIME;
	} else {
		fwrite(text, 1, len, stdout);
		printf("\n");
	}
	free(text);
	free(ids);
	model_free(&m);
	return rc;
}

static const char *scaling_name(int s)
{
	return s == ROPE_SCALE_LINEAR  ? "linear"
	       : s == ROPE_SCALE_LLAMA3 ? "llama3"
					: "none";
}

static const char info_usage[] =
	"usage: infer-run info MODEL [--override-kv K=T:V]...\n"
	"Print the model's configuration, weight type and size.\n";

static int cmd_info(int argc, char **argv)
{
	const char *cmd = "info";
	if (help_wanted(argc, argv))
		return print_help(cmd);
	const char *path = NULL;
	const char *ov[MAX_OVERRIDES];
	int nov = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--override-kv")) {
			if (i + 1 >= argc || nov >= MAX_OVERRIDES)
				return usage_error(cmd, "bad %s", argv[i]);
			ov[nov++] = argv[++i];
		} else if (argv[i][0] == '-') {
			return usage_error(cmd, "unknown option '%s'", argv[i]);
		} else if (!path) {
			path = argv[i];
		} else {
			return usage_error(cmd, "unexpected argument '%s'",
					   argv[i]);
		}
	}
	if (!path)
		return usage_error(cmd, "need MODEL%s", "");
	Model m;
	if (open_model(path, &m, ov, nov))
		return EXIT_RUNTIME;
	const Config *c = &m.cfg;
	printf("path           %s\n", m.path ? m.path : path);
	printf("format         %s\n",
	       m.format == MODEL_FMT_GGUF ? "gguf" : "hf");
	printf("arch           %s\n", c->arch);
	printf("quant          %s\n", m.quant);
	printf("params         %llu (%.1f M)\n",
	       (unsigned long long)m.n_params, m.n_params / 1e6);
	printf("tensor bytes   %llu (%.1f MiB)\n",
	       (unsigned long long)m.file_bytes, m.file_bytes / 1048576.0);
	printf("dim            %d\n", c->dim);
	printf("hidden_dim     %d\n", c->hidden_dim);
	printf("n_layers       %d\n", c->n_layers);
	printf("n_heads        %d\n", c->n_heads);
	printf("n_kv_heads     %d\n", c->n_kv_heads);
	printf("head_dim       %d\n", c->head_dim);
	printf("vocab_size     %d\n", c->vocab_size);
	printf("max_seq_len    %d\n", c->max_seq_len);
	printf("norm_eps       %g\n", c->norm_eps);
	printf("rope_theta     %g\n", c->rope_theta);
	printf("rope_scaling   %s", scaling_name(c->rope_scaling));
	if (c->rope_scaling == ROPE_SCALE_LINEAR)
		printf(" (factor %g)", c->rope_factor);
	else if (c->rope_scaling == ROPE_SCALE_LLAMA3)
		printf(" (factor %g, low %g, high %g, original ctx %d)",
		       c->rope_factor, c->rope_low_freq_factor,
		       c->rope_high_freq_factor, c->rope_orig_ctx);
	printf("\n");
	printf("rope_layout    %s\n",
	       c->rope_layout == ROPE_INTERLEAVED ? "interleaved" : "half");
	printf("tied_embed     %s\n", c->tied_embeddings ? "yes" : "no");
	printf("qkv_bias       %s\n", c->has_qkv_bias ? "yes" : "no");
	if (m.tok) {
		printf("tokenizer      %d tokens, bos %d, eos %d, adds bos %s\n",
		       tokenizer_n_vocab(m.tok), tokenizer_bos(m.tok),
		       tokenizer_eos(m.tok),
		       tokenizer_adds_bos(m.tok) ? "yes" : "no");
	}
	printf("chat_template  %s\n", m.chat_template ? "yes" : "no");
	model_free(&m);
	return 0;
}

/* ---- bench ------------------------------------------------------------- */

static const char bench_usage[] =
	"usage: infer-run bench MODEL [-p N] [-n N] [-r REPS] [options]\n"
	"Prefill N fixed tokens, then decode N tokens greedily; print tokens\n"
	"per second of each phase for every repetition and their mean (after\n"
	"one short warm-up run that is not counted).\n"
	"  -p N             prompt tokens (default 512)\n"
	"  -n N             generated tokens (default 128)\n"
	"  -r REPS          repetitions (default 1)\n"
	"  -t, --threads N  CPU threads (default: all cores)\n"
	"  --backend B      auto, cpu or cuda (default auto)\n"
	"  --batch N        prefill chunk (default 512)\n"
	"  --override-kv K=T:V  as for generate\n";

static int cmd_bench(int argc, char **argv)
{
	const char *cmd = "bench";
	if (help_wanted(argc, argv))
		return print_help(cmd);
	RunOpts ro = {0};
	ro.eo.backend = "auto";
	const char *model = NULL;
	long np = 512, ng = 128, reps = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int r = engine_opt(cmd, &ro, argc, argv, &i);
		if (r < 0)
			return EXIT_USAGE;
		if (r)
			continue;
		if (a[0] != '-' || !a[1]) {
			if (model)
				return usage_error(cmd, "unexpected argument "
						   "'%s'", a);
			model = a;
			continue;
		}
		if (i + 1 >= argc)
			return usage_error(cmd, "%s needs a value", a);
		const char *val = argv[++i];
		long *dst = !strcmp(a, "-p")   ? &np
			    : !strcmp(a, "-n") ? &ng
			    : !strcmp(a, "-r") ? &reps
					       : NULL;
		if (!dst)
			return usage_error(cmd, "unknown option '%s'", a);
		if (parse_int(val, dst == &ng ? 0 : 1, 1 << 20, dst))
			return usage_error(cmd, "bad number '%s'", val);
	}
	if (!model)
		return usage_error(cmd, "missing MODEL%s", "");
	if (ro.eo.ctx <= 0)
		ro.eo.ctx = (int)(np + ng);
	char err[512];
	Engine *e;
	if (engine_open(model, &ro.eo, &e, err, sizeof err) != 0) {
		fprintf(stderr, "infer-run: %s\n", err);
		return EXIT_RUNTIME;
	}
	Backend *be = engine_backend(e);
	printf("model %s (%s), backend %s\n", model, engine_model(e)->quant,
	       be->ops->describe(be));
	/* Warm-up, not counted: first touches of the mapped weights and the
	 * scratch buffers' growth would otherwise land in run 1. */
	double wp, wd;
	if (engine_bench(e, np < 32 ? (int)np : 32, ng < 4 ? (int)ng : 4, &wp,
			 &wd, err, sizeof err)) {
		fprintf(stderr, "infer-run: %s\n", err);
		engine_close(e);
		return EXIT_RUNTIME;
	}
	double sp = 0, sd = 0;
	for (long r = 0; r < reps; r++) {
		double p, d;
		if (engine_bench(e, (int)np, (int)ng, &p, &d, err,
				 sizeof err)) {
			fprintf(stderr, "infer-run: %s\n", err);
			engine_close(e);
			return EXIT_RUNTIME;
		}
		printf("run %ld: prefill %ld tokens %.1f tok/s, decode %ld "
		       "tokens %.1f tok/s\n",
		       r + 1, np, p, ng, d);
		sp += p;
		sd += d;
	}
	printf("mean: prefill %.1f tok/s, decode %.1f tok/s\n", sp / reps,
	       sd / reps);
	engine_close(e);
	return 0;
}

/* ---- dispatch ---------------------------------------------------------- */

static const Command commands[] = {
	{"generate", cmd_generate, generate_usage, "generate text from a prompt"},
	{"tokenize", cmd_tokenize, tokenize_usage, "print the ids of a text"},
	{"detokenize", cmd_detokenize, detokenize_usage,
	 "print the text of ids"},
	{"bench", cmd_bench, bench_usage, "prefill/decode tokens per second"},
	{"info", cmd_info, info_usage, "print a model's configuration"},
	{"chat", chat_cli_main, chat_cli_usage,
	 "talk to a chat model (interactive, or one question with -p)"},
};

static const Command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static void top_usage(FILE *f)
{
	fprintf(f, "usage: infer-run COMMAND [ARGS]  (infer-run COMMAND "
		   "--help for details)\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-12s %s\n", commands[i].name,
			commands[i].summary);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		top_usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		top_usage(stdout);
		return 0;
	}
	const Command *c = find_command(argv[1]);
	if (!c) {
		fprintf(stderr, "infer-run: unknown command '%s'\n", argv[1]);
		top_usage(stderr);
		return EXIT_USAGE;
	}
	return c->run(argc - 1, argv + 1);
}
