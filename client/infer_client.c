/*
 * infer_client.c - infer-client, the command line face of inferd, built
 * only on libinfer's public API (infer.h).
 *
 * Exit status: 0 done, 1 the request failed, 2 usage error, 3 the daemon
 * is unreachable (the message names the socket path tried).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "infer.h"
#include "json.h"

#define EXIT_FAILED 1      /* the request failed */
#define EXIT_USAGE 2       /* bad command line */
#define EXIT_UNREACHABLE 3 /* cannot talk to inferd */
#define MAX_HISTORY 256    /* chat messages kept */

/* Options shared by every command. */
typedef struct Global {
	const char *socket; /* --socket, NULL = default */
	int json;           /* --json: JSON lines on stdout */
	int verbose;        /* -v: statistics on stderr */
} Global;

static const char top_usage[] =
"usage: infer-client [--socket PATH] [--json] [-v] COMMAND [ARGS]\n"
"Talk to inferd, the local inference daemon.\n"
"  ping                        check the daemon answers (prints round trip)\n"
"  status                      daemon, memory, loaded models, queues\n"
"  ps                          status, then each generate in flight: model,\n"
"                              uid, running or its queue position\n"
"  models                      models the daemon knows\n"
"  load MODEL [--keep-alive S] load a model now\n"
"  unload MODEL                unload a model\n"
"  generate MODEL [PROMPT]     generate (PROMPT or stdin); streams to stdout\n"
"  chat MODEL                  interactive chat on stdin\n"
"  tokenize MODEL TEXT         print token ids\n"
"  detokenize MODEL ID...      print the text of ids\n"
"  log [--limit N] [--all]     recent requests (yours; --all: everyone's)\n"
"  metrics [--prometheus]      counters, histograms, queues (--prometheus:\n"
"                              the text exposition format, with HELP/TYPE)\n"
"  shutdown                    stop the daemon (its user or root)\n"
"COMMAND --help shows a command's options.\n"
"Exit status: 0 ok, 1 request failed, 2 usage, 3 daemon unreachable.\n";

static const char gen_usage[] =
"usage: infer-client generate MODEL [PROMPT] [options]\n"
"       infer-client chat MODEL [QUESTION] [options]  (stdin: one message a line)\n"
"Generate from PROMPT (or stdin when absent); text streams to stdout.\n"
"  -p, --prompt TEXT      prompt (instead of the positional one)\n"
"  --chat                 send PROMPT as a user message (chat template)\n"
"  --system TEXT          system prompt (implies a chat)\n"
"  --chat-template NAME   chatml, llama2, llama3, ... or NAME.jinja, a file\n"
"                         in the daemon's --models-dir\n"
"  -n, --max-tokens N     new tokens at most\n"
"  --temp T               temperature, 0 = greedy\n"
"  --top-k K              top-k, 0 = off\n"
"  --top-p P              top-p, 1 = off\n"
"  --min-p P              min-p, 0 = off\n"
"  --repeat-penalty X     repetition penalty, 1 = off\n"
"  --freq-penalty X       frequency penalty\n"
"  --presence-penalty X   presence penalty\n"
"  --repeat-last-n N      penalty window in tokens\n"
"  --seed S               PRNG seed\n"
"  --stop STR             stop string (repeatable, 8)\n"
"  --ignore-eos           keep going past end-of-generation\n"
"  --keep-alive S         keep the model loaded S seconds after (-1 forever)\n"
"  --priority N           -10..10 (default 0; above 0: root / the daemon's\n"
"                         user only): higher starts first\n"
"Unset options take the daemon's defaults (those of infer-run).\n";

static int usage_err(const char *fmt, const char *arg)
{
	fprintf(stderr, "infer-client: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see infer-client --help)\n");
	return EXIT_USAGE;
}

static int connect_or_die(const Global *g, infer_client **c)
{
	char err[512];
	int rc = infer_connect(c, g->socket, err, sizeof err);
	if (rc == 0)
		return 0;
	fprintf(stderr, "infer-client: %s\n", err);
	if (rc == INFER_ECONNECT) {
		char def[256];
		if (!g->socket && infer_default_socket(def, sizeof def) == 0)
			fprintf(stderr, "(is inferd running? it listens on %s by "
				"default)\n", def);
		return EXIT_UNREACHABLE;
	}
	return rc == INFER_EVERSION ? EXIT_FAILED : EXIT_UNREACHABLE;
}

static int failed(infer_client *c, int rc)
{
	fprintf(stderr, "infer-client: %s: %s\n", infer_strerror(rc),
		infer_errmsg(c));
	return rc == INFER_EIO || rc == INFER_ECLOSED ? EXIT_UNREACHABLE : EXIT_FAILED;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Write text as a JSON string. */
static void put_json_str(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/* Read all of stdin (for a prompt). */
static char *read_stdin(void)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		return NULL;
	for (;;) {
		if (len + 1 >= cap) {
			char *p = realloc(buf, cap *= 2);
			if (!p) {
				free(buf);
				return NULL;
			}
			buf = p;
		}
		size_t n = fread(buf + len, 1, cap - len - 1, stdin);
		if (n == 0)
			break;
		len += n;
	}
	buf[len] = 0;
	return buf;
}

/* ---- commands ---- */

static int cmd_ping(const Global *g, infer_client *c, int argc, char **argv)
{
	double t0 = now_ms();
	int rc = infer_ping(c);
	if (rc < 0)
		return failed(c, rc);
	double ms = now_ms() - t0;
	if (g->json)
		printf("{\"ok\":true,\"rtt_ms\":%.3f}\n", ms);
	else
		printf("pong from inferd (protocol %d) in %.3f ms\n",
		       infer_daemon_protocol(c), ms);
	return 0;
}

/* "8.0 MiB" style sizes. */
static const char *human(double bytes, char *buf, size_t cap)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int u = 0;
	while (bytes >= 1024 && u < 4) {
		bytes /= 1024;
		u++;
	}
	snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
	return buf;
}

static const char *jstr(const json_value *o, const char *key)
{
	return json_str(json_get(o, key), "");
}

static double jnum(const json_value *o, const char *key)
{
	return json_num(json_get(o, key), 0);
}

/* Human-readable status / models / log (the JSON as is with --json). */
static void print_status(const json_value *r)
{
	char a[32], b[32], c2[32];
	printf("inferd %s, pid %.0f, up %.0f s, backend %s\n", jstr(r, "version"),
	       jnum(r, "pid"), jnum(r, "uptime"), jstr(r, "backend"));
	if (jnum(r, "mem_budget") > 0)
		printf("models in memory: %s of a %s budget\n",
		       human(jnum(r, "mem_used"), a, sizeof a),
		       human(jnum(r, "mem_budget"), b, sizeof b));
	else
		printf("models in memory: %s (no budget)\n",
		       human(jnum(r, "mem_used"), a, sizeof a));
	if (jnum(r, "device_total") > 0)
		printf("device memory: %s free of %s\n",
		       human(jnum(r, "device_free"), b, sizeof b),
		       human(jnum(r, "device_total"), c2, sizeof c2));
	printf("%.0f connection(s), %.0f request(s) in flight\n",
	       jnum(r, "connections"), jnum(r, "inflight"));
	const json_value *ms = json_get(r, "models");
	printf("%-20s %-9s %6s %6s %10s  %-14s %s\n", "MODEL", "STATE", "ACTIVE",
	       "QUEUE", "SIZE", "UNTIL", "DEVICE");
	for (size_t i = 0; i < json_count(ms); i++) {
		const json_value *m = json_at(ms, i);
		/* idle time left before the keep-alive unloads it */
		char until[32];
		double left = json_num(json_get(m, "unload_in"), -2);
		if (left >= 0)
			snprintf(until, sizeof until, "%.0fm%02.0fs from now",
				 floor(left / 60), fmod(floor(left), 60));
		else
			snprintf(until, sizeof until, "%s", left == -1 ? "forever" :
				 !strcmp(jstr(m, "state"), "loaded") ? "busy" : "-");
		printf("%-20s %-9s %6.0f %6.0f %10s  %-14s %s\n", jstr(m, "name"),
		       jstr(m, "state"), jnum(m, "active"), jnum(m, "queue"),
		       human(jnum(m, "bytes"), a, sizeof a), until, jstr(m, "device"));
	}
}

/* ps: the status, then every generate in flight per model and uid. */
static void print_ps(const json_value *r)
{
	print_status(r);
	const json_value *rs = json_get(r, "requests");
	printf("\n%-20s %6s %7s %5s %-8s %5s %4s %6s %8s\n", "MODEL", "UID",
	       "PID", "ID", "STATE", "POS", "PRIO", "GEN", "AGE_S");
	for (size_t i = 0; i < json_count(rs); i++) {
		const json_value *q = json_at(rs, i);
		int queued = !strcmp(jstr(q, "state"), "queued");
		char pos[16] = "-";
		if (queued)
			snprintf(pos, sizeof pos, "%.0f", jnum(q, "position"));
		printf("%-20s %6.0f %7.0f %5.0f %-8s %5s %4.0f %6.0f %8.1f\n",
		       jstr(q, "model"), jnum(q, "uid"), jnum(q, "pid"),
		       jnum(q, "id"), jstr(q, "state"), pos,
		       jnum(q, "priority"), jnum(q, "gen_tokens"),
		       jnum(q, "age"));
	}
}

static void print_models(const json_value *r)
{
	char a[32];
	const json_value *ms = json_get(r, "models");
	printf("%-20s %-9s %-5s %-6s %6s %10s %10s  %s\n", "MODEL", "STATE",
	       "FMT", "QUANT", "CTX", "PARAMS", "SIZE", "PATH");
	for (size_t i = 0; i < json_count(ms); i++) {
		const json_value *m = json_at(ms, i);
		char params[32] = "-", ctx[16] = "-";
		if (jnum(m, "params") > 0)
			snprintf(params, sizeof params, "%.1fM", jnum(m, "params") / 1e6);
		if (jnum(m, "ctx") > 0)
			snprintf(ctx, sizeof ctx, "%.0f", jnum(m, "ctx"));
		printf("%-20s %-9s %-5s %-6s %6s %10s %10s  %s\n", jstr(m, "name"),
		       jstr(m, "state"), jstr(m, "format"),
		       *jstr(m, "quant") ? jstr(m, "quant") : "-", ctx, params,
		       human(jnum(m, "bytes"), a, sizeof a), jstr(m, "path"));
	}
}

static void print_log(const json_value *r)
{
	const json_value *rows = json_get(r, "rows");
	printf("%-19s %6s %7s %-12s %-10s %6s %6s %8s %8s %-7s %s\n", "TIME", "UID",
	       "PID", "MODEL", "OP", "PROMPT", "GEN", "TTFT_MS", "TOK/S",
	       "FINISH", "STATUS");
	for (size_t i = 0; i < json_count(rows); i++) {
		const json_value *w = json_at(rows, i);
		char ts[32] = "?";
		time_t t = (time_t)jnum(w, "t_start");
		struct tm tm;
		if (localtime_r(&t, &tm))
			strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
		printf("%-19s %6.0f %7.0f %-12s %-10s %6.0f %6.0f %8.1f %8.1f %-7s %s%s%s\n",
		       ts, jnum(w, "uid"), jnum(w, "pid"), jstr(w, "model"),
		       jstr(w, "op"), jnum(w, "prompt_tokens"), jnum(w, "gen_tokens"),
		       jnum(w, "ttft_ms"), jnum(w, "tok_s"),
		       *jstr(w, "finish") ? jstr(w, "finish") : "-", jstr(w, "status"),
		       *jstr(w, "error") ? ": " : "", jstr(w, "error"));
	}
}

/* Print a reply: JSON as is with --json, else through a table printer. */
static int show(const Global *g, char *json, void (*pretty)(const json_value *))
{
	char err[256];
	json_doc *doc = g->json ? NULL : json_parse(json, strlen(json), err, sizeof err);
	if (!doc)
		printf("%s\n", json);
	else
		pretty(json_root(doc));
	json_free(doc);
	free(json);
	return 0;
}

static int cmd_json(const Global *g, infer_client *c, int (*fn)(infer_client *, char **),
		    void (*pretty)(const json_value *))
{
	char *json;
	int rc = fn(c, &json);
	if (rc < 0)
		return failed(c, rc);
	return show(g, json, pretty);
}

static int cmd_log(const Global *g, infer_client *c, int argc, char **argv)
{
	int limit = 0, all = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--all"))
			all = 1;
		else if (!strcmp(argv[i], "--limit") && i + 1 < argc)
			limit = atoi(argv[++i]);
		else
			return usage_err("log: unexpected '%s'", argv[i]);
	}
	char *json;
	int rc = infer_log(c, limit, all, &json);
	if (rc < 0)
		return failed(c, rc);
	return show(g, json, print_log);
}

/* metrics: the daemon's Prometheus text as is (--prometheus), as one
 * JSON string (--json), or just its samples (no HELP/TYPE lines). */
static int cmd_metrics(const Global *g, infer_client *c, int argc, char **argv)
{
	int prom = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--prometheus"))
			prom = 1;
		else
			return usage_err("metrics: unexpected '%s'", argv[i]);
	}
	char *text;
	int rc = infer_metrics(c, &text);
	if (rc < 0)
		return failed(c, rc);
	if (prom) {
		fputs(text, stdout);
	} else if (g->json) {
		fputs("{\"prometheus\":\"", stdout);
		for (const char *p = text; *p; p++) {
			if (*p == '"' || *p == '\\')
				printf("\\%c", *p);
			else if (*p == '\n')
				fputs("\\n", stdout);
			else if ((unsigned char)*p < 0x20)
				printf("\\u%04x", (unsigned char)*p);
			else
				putchar(*p);
		}
		puts("\"}");
	} else {
		for (char *line = text, *nl; *line; line = nl) {
			nl = strchr(line, '\n');
			nl = nl ? nl + 1 : line + strlen(line);
			if (*line != '#')
				fwrite(line, 1, (size_t)(nl - line), stdout);
		}
	}
	free(text);
	return 0;
}

static int cmd_load(const Global *g, infer_client *c, int argc, char **argv,
		    int unload)
{
	const char *model = NULL;
	int keep = INFER_KEEP_DEFAULT;
	for (int i = 1; i < argc; i++) {
		if (!unload && !strcmp(argv[i], "--keep-alive") && i + 1 < argc)
			keep = atoi(argv[++i]);
		else if (!model && argv[i][0] != '-')
			model = argv[i];
		else
			return usage_err("unexpected '%s'", argv[i]);
	}
	if (!model)
		return usage_err("%s needs a MODEL", argv[0]);
	if (!unload && !g->json)
		fprintf(stderr, "loading %s...\n", model);
	double t0 = now_ms();
	int rc = unload ? infer_unload(c, model) : infer_load(c, model, keep);
	if (rc < 0)
		return failed(c, rc);
	if (g->json)
		printf("{\"ok\":true,\"model\":\"%s\",\"ms\":%.1f}\n", model, now_ms() - t0);
	else
		printf("%s %s (%.0f ms)\n", unload ? "unloaded" : "loaded", model,
		       now_ms() - t0);
	return 0;
}

static int cmd_tokenize(const Global *g, infer_client *c, int argc, char **argv)
{
	const char *pos[2];
	int npos = 0, bos = 1, special = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-bos"))
			bos = 0;
		else if (!strcmp(argv[i], "--no-special"))
			special = 0;
		else if (npos < 2)
			pos[npos++] = argv[i];
		else
			return usage_err("tokenize: unexpected '%s'", argv[i]);
	}
	if (npos != 2)
		return usage_err("usage: tokenize MODEL TEXT%s", "");
	int32_t *ids;
	int n = infer_tokenize(c, pos[0], pos[1], bos, special, &ids);
	if (n < 0)
		return failed(c, n);
	if (g->json)
		fputs("{\"tokens\":[", stdout);
	for (int i = 0; i < n; i++)
		printf(g->json ? "%s%d" : "%s%d", i ? (g->json ? "," : " ") : "", ids[i]);
	puts(g->json ? "]}" : "");
	free(ids);
	return 0;
}

static int cmd_detokenize(const Global *g, infer_client *c, int argc, char **argv)
{
	if (argc < 2)
		return usage_err("usage: detokenize MODEL ID...%s", "");
	int n = argc - 2;
	int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
	if (!ids)
		return EXIT_FAILED;
	for (int i = 0; i < n; i++) {
		char *end;
		long v = strtol(argv[2 + i], &end, 10);
		if (*end || end == argv[2 + i] || v < 0 || v > INT32_MAX) {
			free(ids);
			return usage_err("not a token id: '%s'", argv[2 + i]);
		}
		ids[i] = (int32_t)v;
	}
	char *text;
	int rc = infer_detokenize(c, argv[1], ids, (size_t)n, &text);
	free(ids);
	if (rc < 0)
		return failed(c, rc);
	if (g->json) {
		fputs("{\"text\":", stdout);
		put_json_str(stdout, text, strlen(text));
		puts("}");
	} else {
		puts(text);
	}
	free(text);
	return 0;
}

/* Streaming output for generate / chat. */
typedef struct Out {
	const Global *g;  /* --json */
	char *reply;      /* accumulated text (chat history) */
	size_t len, cap;  /* its length / allocation */
} Out;

static int on_token(void *ud, int32_t token, const char *text, size_t len)
{
	Out *o = ud;
	if (o->g->json) {
		printf("{\"token\":%d,\"text\":", token);
		put_json_str(stdout, text, len);
		puts("}");
	} else {
		fwrite(text, 1, len, stdout);
	}
	fflush(stdout);
	if (o->len + len + 1 > o->cap) {
		size_t cap = (o->cap ? o->cap * 2 : 256) + len;
		char *p = realloc(o->reply, cap);
		if (!p)
			return 0;
		o->reply = p;
		o->cap = cap;
	}
	memcpy(o->reply + o->len, text, len);
	o->len += len;
	o->reply[o->len] = 0;
	return 0;
}

static void on_queued(void *ud, int position)
{
	Out *o = ud;
	if (o->g->json)
		return;
	if (position < 0)
		fprintf(stderr, "(loading the model...)\n");
	else
		fprintf(stderr, "(queued: %d ahead)\n", position);
}

static int report(const Global *g, const infer_gen_result *r)
{
	if (g->json)
		printf("{\"done\":true,\"finish\":\"%s\",\"prompt_tokens\":%d,"
		       "\"gen_tokens\":%d,\"ttft_ms\":%.2f,\"total_ms\":%.2f,"
		       "\"tok_s\":%.2f}\n", r->finish, r->prompt_tokens,
		       r->gen_tokens, r->ttft_ms, r->total_ms, r->tok_s);
	else if (g->verbose)
		fprintf(stderr, "\n[%s] prompt %d tokens, generated %d, first "
			"token %.1f ms, %.2f tok/s, total %.1f ms\n", r->finish,
			r->prompt_tokens, r->gen_tokens, r->ttft_ms, r->tok_s,
			r->total_ms);
	return 0;
}

/* Parse generate's options into p; returns 0, or an exit code. */
static int gen_options(int argc, char **argv, int first, infer_gen_params *p,
		       const char **prompt, int *chat, const char **stops)
{
	for (int i = first; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(gen_usage, stdout);
			return -1;
		} else if (!strcmp(a, "--chat")) {
			*chat = 1;
			continue;
		} else if (!strcmp(a, "--ignore-eos")) {
			p->ignore_eos = 1;
			continue;
		} else if (a[0] != '-' || !a[1]) {
			if (*prompt)
				return usage_err("unexpected argument '%s'", a);
			*prompt = a;
			continue;
		}
		if (!v)
			return usage_err("%s needs a value", a);
		i++;
		errno = 0;
		if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
			*prompt = v;
		else if (!strcmp(a, "--system"))
			p->system = v;
		else if (!strcmp(a, "--chat-template"))
			p->chat_template = v;
		else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens"))
			p->max_tokens = (int)strtol(v, &end, 10);
		else if (!strcmp(a, "--temp"))
			p->temperature = strtof(v, &end);
		else if (!strcmp(a, "--top-k"))
			p->top_k = (int)strtol(v, &end, 10);
		else if (!strcmp(a, "--top-p"))
			p->top_p = strtof(v, &end);
		else if (!strcmp(a, "--min-p"))
			p->min_p = strtof(v, &end);
		else if (!strcmp(a, "--repeat-penalty"))
			p->repeat_penalty = strtof(v, &end);
		else if (!strcmp(a, "--freq-penalty"))
			p->freq_penalty = strtof(v, &end);
		else if (!strcmp(a, "--presence-penalty"))
			p->presence_penalty = strtof(v, &end);
		else if (!strcmp(a, "--repeat-last-n"))
			p->penalty_last_n = (int)strtol(v, &end, 10);
		else if (!strcmp(a, "--seed"))
			p->seed = strtoll(v, &end, 10);
		else if (!strcmp(a, "--keep-alive"))
			p->keep_alive = (int)strtol(v, &end, 10);
		else if (!strcmp(a, "--priority"))
			p->priority = (int)strtol(v, &end, 10);
		else if (!strcmp(a, "--stop")) {
			if (p->n_stop == 8)
				return usage_err("at most 8 --stop%s", "");
			stops[p->n_stop++] = v;
		} else
			return usage_err("unknown option '%s'", a);
		if (end && (*end || errno))
			return usage_err("bad number '%s'", v);
	}
	p->stop = stops;
	return 0;
}

static int cmd_generate(const Global *g, infer_client *c, int argc, char **argv)
{
	if (argc < 2 || argv[1][0] == '-') {
		fputs(gen_usage, argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
		return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : EXIT_USAGE;
	}
	infer_gen_params p;
	infer_gen_params_init(&p);
	p.model = argv[1];
	const char *prompt = NULL, *stops[8];
	int chat = 0;
	int rc = gen_options(argc, argv, 2, &p, &prompt, &chat, stops);
	if (rc)
		return rc < 0 ? 0 : rc;
	char *in = NULL;
	if (!prompt) {
		if (!(in = read_stdin()))
			return EXIT_FAILED;
		prompt = in;
	}
	infer_message msg = { "user", prompt };
	if (chat) {
		p.messages = &msg;
		p.n_messages = 1;
	} else {
		p.prompt = prompt;
	}
	infer_on_queued(c, on_queued);
	Out o = { g, NULL, 0, 0 };
	infer_gen_result res;
	rc = infer_generate(c, &p, on_token, &o, &res);
	free(in);
	free(o.reply);
	if (rc < 0) {
		if (!g->json)
			fputc('\n', stdout);
		return failed(c, rc);
	}
	if (!g->json)
		fputc('\n', stdout);
	return report(g, &res);
}

static int cmd_chat(const Global *g, infer_client *c, int argc, char **argv)
{
	if (argc < 2 || argv[1][0] == '-') {
		fputs("usage: infer-client chat MODEL [QUESTION] [generate options]\n"
		      "With QUESTION: one answer. Else one user message per line "
		      "on stdin;\nreplies stream to stdout. Ctrl-D ends.\n", stderr);
		return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : EXIT_USAGE;
	}
	infer_gen_params p;
	infer_gen_params_init(&p);
	p.model = argv[1];
	const char *prompt = NULL, *stops[8];
	int chat = 1;
	int rc = gen_options(argc, argv, 2, &p, &prompt, &chat, stops);
	if (rc)
		return rc < 0 ? 0 : rc;
	infer_on_queued(c, on_queued);
	if (prompt) { /* one question, one answer */
		infer_message one = { "user", prompt };
		p.messages = &one;
		p.n_messages = 1;
		Out o = { g, NULL, 0, 0 };
		infer_gen_result res;
		rc = infer_generate(c, &p, on_token, &o, &res);
		free(o.reply);
		fputc('\n', stdout);
		return rc < 0 ? failed(c, rc) : report(g, &res);
	}
	infer_message hist[MAX_HISTORY];
	char *owned[MAX_HISTORY];
	int n = 0;
	char line[8192];
	int tty = isatty(0);
	for (;;) {
		if (tty)
			fputs("> ", stderr);
		if (!fgets(line, sizeof line, stdin))
			break;
		line[strcspn(line, "\n")] = 0;
		if (!line[0])
			continue;
		if (n + 2 > MAX_HISTORY) { /* drop the oldest exchange */
			free(owned[0]);
			free(owned[1]);
			memmove(hist, hist + 2, (size_t)(n - 2) * sizeof *hist);
			memmove(owned, owned + 2, (size_t)(n - 2) * sizeof *owned);
			n -= 2;
		}
		owned[n] = strdup(line);
		if (!owned[n])
			break;
		hist[n] = (infer_message){ "user", owned[n] };
		n++;
		p.messages = hist;
		p.n_messages = (size_t)n;
		Out o = { g, NULL, 0, 0 };
		infer_gen_result res;
		rc = infer_generate(c, &p, on_token, &o, &res);
		fputc('\n', stdout);
		if (rc < 0) {
			free(o.reply);
			rc = failed(c, rc);
			break;
		}
		report(g, &res);
		owned[n] = o.reply ? o.reply : strdup("");
		hist[n] = (infer_message){ "assistant", owned[n] };
		n++;
		rc = 0;
	}
	for (int i = 0; i < n; i++)
		free(owned[i]);
	return rc;
}

int main(int argc, char **argv)
{
	Global g = { 0 };
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			g.socket = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			g.json = 1;
		else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
			g.verbose = 1;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(top_usage, stdout);
			return 0;
		} else if (!strcmp(argv[i], "--version")) {
			printf("infer-client (libinfer %s)\n", infer_version());
			return 0;
		} else
			return usage_err("unknown option '%s'", argv[i]);
	}
	if (i == argc) {
		fputs(top_usage, stderr);
		return EXIT_USAGE;
	}
	char **av = argv + i;
	int ac = argc - i;
	const char *cmd = av[0];
	static const char *const known[] = { "ping", "status", "ps", "models",
		"load", "unload", "generate", "chat", "tokenize", "detokenize",
		"log", "shutdown", "metrics" };
	int ok = 0;
	for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
		ok |= !strcmp(cmd, known[k]);
	if (!ok)
		return usage_err("unknown command '%s'", cmd);
	for (int k = 1; k < ac; k++) /* help needs no daemon */
		if (!strcmp(av[k], "--help") || !strcmp(av[k], "-h")) {
			fputs(!strcmp(cmd, "generate") || !strcmp(cmd, "chat") ?
			      gen_usage : top_usage, stdout);
			return 0;
		}
	infer_client *c;
	int rc = connect_or_die(&g, &c);
	if (rc)
		return rc;
	if (!strcmp(cmd, "ping"))
		rc = cmd_ping(&g, c, ac, av);
	else if (!strcmp(cmd, "status"))
		rc = cmd_json(&g, c, infer_status, print_status);
	else if (!strcmp(cmd, "ps"))
		rc = cmd_json(&g, c, infer_status, print_ps);
	else if (!strcmp(cmd, "models"))
		rc = cmd_json(&g, c, infer_models, print_models);
	else if (!strcmp(cmd, "load"))
		rc = cmd_load(&g, c, ac, av, 0);
	else if (!strcmp(cmd, "unload"))
		rc = cmd_load(&g, c, ac, av, 1);
	else if (!strcmp(cmd, "generate"))
		rc = cmd_generate(&g, c, ac, av);
	else if (!strcmp(cmd, "chat"))
		rc = cmd_chat(&g, c, ac, av);
	else if (!strcmp(cmd, "tokenize"))
		rc = cmd_tokenize(&g, c, ac, av);
	else if (!strcmp(cmd, "detokenize"))
		rc = cmd_detokenize(&g, c, ac, av);
	else if (!strcmp(cmd, "log"))
		rc = cmd_log(&g, c, ac, av);
	else if (!strcmp(cmd, "metrics"))
		rc = cmd_metrics(&g, c, ac, av);
	else if (!strcmp(cmd, "shutdown")) {
		rc = infer_shutdown(c);
		rc = rc < 0 ? failed(c, rc) : 0;
		if (!rc)
			puts(g.json ? "{\"ok\":true}" : "inferd is shutting down");
	}
	infer_close(c);
	return rc;
}
